//! The Docker engine: TLS files, daemon.json, the containerd/dockerd services, readiness probe.

use crate::error::{mkdir_err, write_err, Error, Result};
use crate::sys::{base_env, ServiceIo, ServiceSpec, System};
use n2d_proto::{GuestConfig, TlsMaterial};
use serde_json::json;

pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub const DOCKER_SOCKET: &str = "/run/docker.sock";
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
pub const CONTAINERD_LOG: &str = "/var/log/containerd.log";
pub const DOCKERD_LOG: &str = "/var/log/dockerd.log";
/// The engine's ID, which dockerd makes at start when it is missing (on the data disk).
pub const ENGINE_ID: &str = "/var/lib/docker/engine-id";

const TLS_DIR: &str = "/etc/docker/tls";
const CA: &str = "/etc/docker/tls/ca.pem";
const CERT: &str = "/etc/docker/tls/server-cert.pem";
const KEY: &str = "/etc/docker/tls/server-key.pem";

pub fn daemon_json(config: &GuestConfig) -> serde_json::Value {
    let labels: Vec<String> = config.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut hosts = vec![format!("unix://{DOCKER_SOCKET}")];
    if config.docker.tcp_port != 0 {
        hosts.push(format!("tcp://0.0.0.0:{}", config.docker.tcp_port));
    }
    let mut doc = json!({
        "hosts": hosts,
        "containerd": CONTAINERD_SOCKET,
        "labels": labels,
    });
    if config.docker.tls.is_some() {
        let obj = doc.as_object_mut().expect("object");
        obj.insert("tls".into(), json!(true));
        obj.insert("tlsverify".into(), json!(true));
        obj.insert("tlscacert".into(), json!(CA));
        obj.insert("tlscert".into(), json!(CERT));
        obj.insert("tlskey".into(), json!(KEY));
    }
    doc
}

/// containerd as dockerd uses it: no Kubernetes CRI (what Docker's own managed containerd also
/// turns off), and none of the snapshotters that can only fail here (aufs would even spawn a
/// modprobe) or tracing: less to start on every boot, less to run while idle.
pub const CONTAINERD_TOML: &str = r#"version = 2
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  "io.containerd.nri.v1.nri",
]

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"
"#;

/// Writes the TLS material (if any), daemon.json and containerd's config.
pub fn write_config(sys: &dyn System, config: &GuestConfig) -> Result<()> {
    sys.mkdir_all("/etc/containerd", 0o755).map_err(mkdir_err("/etc/containerd"))?;
    sys.write_file(CONTAINERD_CONFIG, CONTAINERD_TOML.as_bytes(), 0o644)
        .map_err(write_err(CONTAINERD_CONFIG))?;
    sys.mkdir_all("/etc/docker", 0o755).map_err(mkdir_err("/etc/docker"))?;
    sys.mkdir_all("/var/log", 0o755).map_err(mkdir_err("/var/log"))?;
    if let Some(tls) = &config.docker.tls {
        write_tls(sys, tls)?;
    }
    let mut text = serde_json::to_vec_pretty(&daemon_json(config)).expect("json serialises");
    text.push(b'\n');
    sys.write_file(DAEMON_JSON, &text, 0o644).map_err(write_err(DAEMON_JSON))
}

/// Writes dockerd's CA, certificate and key (the key 0600).
pub fn write_tls(sys: &dyn System, tls: &TlsMaterial) -> Result<()> {
    sys.mkdir_all(TLS_DIR, 0o700).map_err(mkdir_err(TLS_DIR))?;
    for (path, pem, mode) in
        [(CA, &tls.ca_pem, 0o644), (CERT, &tls.cert_pem, 0o644), (KEY, &tls.key_pem, 0o600)]
    {
        sys.write_file(path, pem.as_bytes(), mode).map_err(write_err(path))?;
    }
    Ok(())
}

/// The TLS material of `config` (read from `device`), refused when it is missing or not PEM.
pub fn checked_tls<'a>(config: &'a GuestConfig, device: &str) -> Result<&'a TlsMaterial> {
    let tls = config.docker.tls.as_ref().ok_or_else(|| Error::NoTlsMaterial { device: device.into() })?;
    for (pem, marker, what) in [
        (&tls.ca_pem, "-----BEGIN CERTIFICATE-----", "CA certificate"),
        (&tls.cert_pem, "-----BEGIN CERTIFICATE-----", "server certificate"),
        (&tls.key_pem, "PRIVATE KEY-----", "private key"),
    ] {
        if !pem.contains(marker) {
            return Err(Error::BadTlsMaterial { device: device.into(), what });
        }
    }
    Ok(tls)
}

/// `reload-tls`: dockerd's TLS files rewritten from the config disk the host rewrote. Material
/// that is missing or not PEM changes nothing (the engine keeps serving its old certificate,
/// rather than failing to start on a bad one). The caller restarts dockerd.
pub fn reload_tls(sys: &dyn System) -> Result<()> {
    let (config, device) = crate::config::reread_config(sys)?;
    write_tls(sys, checked_tls(&config, &device)?)
}

/// Removes the engine's ID (dockerd stopped), so that the next dockerd makes a new one: a
/// clone's engine must not share its template's.
pub fn forget_engine_id(sys: &dyn System) -> Result<()> {
    match sys.remove_file(ENGINE_ID) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::RemoveFile { path: ENGINE_ID.into(), source: e })
        }
        _ => Ok(()),
    }
}

pub fn containerd_service() -> ServiceSpec {
    ServiceSpec {
        name: "containerd",
        program: "containerd".into(),
        args: vec![],
        env: base_env(),
        io: ServiceIo::LogFile(CONTAINERD_LOG.into()),
    }
}

pub fn dockerd_service() -> ServiceSpec {
    ServiceSpec {
        name: "dockerd",
        program: "dockerd".into(),
        args: vec!["--config-file".into(), DAEMON_JSON.into()],
        env: base_env(),
        io: ServiceIo::LogFile(DOCKERD_LOG.into()),
    }
}

/// True when dockerd answers `GET /_ping` on its local socket with HTTP 200.
pub fn engine_answers(sys: &dyn System) -> bool {
    let Ok(response) = sys.unix_request(DOCKER_SOCKET, b"GET /_ping HTTP/1.0\r\n\r\n") else {
        return false;
    };
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or("");
    status.starts_with("HTTP/1.") && status.contains(" 200 ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_config;
    use crate::sys::fake::FakeSystem;

    #[test]
    fn daemon_json_with_tls_points_at_written_files_and_carries_labels() {
        let sys = FakeSystem::new();
        write_config(&sys, &sample_config()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&sys.file_text(DAEMON_JSON)).unwrap();
        assert_eq!(doc["hosts"], json!(["unix:///run/docker.sock", "tcp://0.0.0.0:2376"]));
        assert_eq!(doc["tlsverify"], json!(true));
        assert_eq!(doc["containerd"], json!(CONTAINERD_SOCKET));
        assert_eq!(doc["labels"], json!(["role=worker", "zone=a"]));
        for key in ["tlscacert", "tlscert", "tlskey"] {
            let path = doc[key].as_str().unwrap();
            assert!(sys.file(path).is_some(), "{key} -> {path} not written");
        }
        assert_eq!(sys.file(KEY).unwrap(), (b"SECRET-KEY-PEM".to_vec(), 0o600));
        assert_eq!(sys.file(CA).unwrap().1, 0o644);
        assert!(!sys.file_text(DAEMON_JSON).contains("SECRET"));
        assert!(sys.file_text(CONTAINERD_CONFIG).contains("\"io.containerd.grpc.v1.cri\""));
    }

    #[test]
    fn daemon_json_without_tls_has_no_tls_keys_and_writes_no_key() {
        let sys = FakeSystem::new();
        let mut config = sample_config();
        config.docker.tls = None;
        config.docker.tcp_port = 2375;
        write_config(&sys, &config).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&sys.file_text(DAEMON_JSON)).unwrap();
        let keys: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["containerd", "hosts", "labels"]);
        assert_eq!(doc["hosts"][1], json!("tcp://0.0.0.0:2375"));
        assert!(sys.file(KEY).is_none());

        // Port 0: the local socket only.
        config.docker.tcp_port = 0;
        assert_eq!(daemon_json(&config)["hosts"], json!(["unix:///run/docker.sock"]));
    }

    #[test]
    fn readiness_needs_http_200_from_the_socket() {
        let sys = FakeSystem::new();
        assert!(!engine_answers(&sys));
        sys.state.borrow_mut().docker_response = Some(b"HTTP/1.0 503 Service Unavailable\r\n\r\n".to_vec());
        assert!(!engine_answers(&sys));
        sys.state.borrow_mut().docker_response =
            Some(b"HTTP/1.0 200 OK\r\nApi-Version: 1.47\r\n\r\nOK".to_vec());
        assert!(engine_answers(&sys));
    }
}
