//! `n2d certs`: certificates re-issued and pushed to running machines, and their expiry.
//!
//! A machine's server certificate lives on its config disk, which QEMU holds open read-only.
//! Rotation issues a new one for the same names ([`crate::machine::server_ips`]), writes the
//! config disk again (in place when the machine runs: a file renamed over it would not be seen
//! through QEMU's open descriptor), then asks n2d-init over the control port to reload it
//! (`reload-tls`): the guest re-reads the disk past its cache, rewrites dockerd's TLS files and
//! restarts dockerd. The host waits for the ready marker, pings the engine and checks that it
//! presents the new certificate. A stopped machine gets it on its next start.

use crate::{Error, Orchestrator, Result};
use n2d_exec::Runner;
use n2d_pki::{Ca, CertInfo};
use n2d_proto::{decode_config_disk, encode_config_disk, ControlRequest, MAX_PAYLOAD, PAYLOAD_OFFSET};
use n2d_spec::machine::MachineName;
use n2d_store::write_atomic;
use n2d_swarm::{Connector, DockerApi};
use n2d_vm::argv::CONFIG_DISK_FILE;
use n2d_vm::qemu::console_log_len;
use n2d_vm::{Hypervisor, VmState};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The smallest config disk n2d writes: room for a rotated certificate a few bytes longer
/// than the first, since a running machine's disk cannot grow.
pub const CONFIG_DISK_ROOM: usize = 64 * 1024;

/// Certificates this close to their end are reported (`n2d certs ls`).
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// What a rotation did for one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// The running engine restarted and presents the new certificate (its serial).
    Live { serial: String },
    /// The machine is stopped: the new certificate (its serial) is used from its next start.
    NextStart { serial: String },
    /// An `--insecure-tcp` machine has no certificate.
    NoTls,
}

/// One certificate of the home, for `n2d certs ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    /// `ca`, `client`, or the machine's name.
    pub name: String,
    /// `None`: unreadable (a damaged config disk), with why.
    pub info: Result<CertInfo, String>,
}

impl CertStatus {
    /// Whether it expires within [`EXPIRY_WARNING_DAYS`] of `now` (or has).
    pub fn expiring(&self, now: i64) -> bool {
        self.info.as_ref().is_ok_and(|i| i.days_left(now) < EXPIRY_WARNING_DAYS)
    }
}

/// A machine's config disk: n2d's own file, never through a symlink, a regular file capped as
/// the guest caps it (plus the room n2d leaves).
fn read_config_disk(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let err = |message: String| Error::CertificateFile { path: path.to_path_buf(), message };
    let max = (PAYLOAD_OFFSET + MAX_PAYLOAD).max(CONFIG_DISK_ROOM) as u64;
    let file = n2d_store::safe_fs::open_nofollow(path).map_err(|e| err(e.to_string()))?;
    let meta = file.metadata().map_err(|e| err(e.to_string()))?;
    if !meta.file_type().is_file() || meta.len() > max {
        return Err(err(format!("not a regular file of at most {max} bytes")));
    }
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes).map_err(|e| err(e.to_string()))?;
    Ok(bytes)
}

/// Writes `bytes` over the start of `path`, same file (QEMU keeps its descriptor), then syncs.
fn write_in_place(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |e: std::io::Error| Error::CertificateFile { path: path.to_path_buf(), message: e.to_string() };
    let mut file = n2d_store::safe_fs::open_nofollow_write(path).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// `n2d certs rotate NAME`: a new server certificate for the machine, same names, pushed to
    /// it if it runs (its engine restarts; `timeout` bounds the wait for it).
    pub fn rotate_server_certificate(&self, name: &MachineName, timeout: Duration) -> Result<Rotated> {
        let record = self.load_record(name)?;
        let vm = self.vm_handle(name);
        let path = self.home.machine_dir(name).join(CONFIG_DISK_FILE);
        let (serial, running) = {
            let _lock = self.home.lock()?;
            let Some(tls) = self.server_tls(&record)? else { return Ok(Rotated::NoTls) };
            let serial = CertInfo::from_pem(&tls.cert_pem)?.serial;
            let old = read_config_disk(&path)?;
            // The rest of the configuration stays as the machine booted with it; a disk that no
            // longer decodes is written again from the record.
            let mut config = decode_config_disk(&old).unwrap_or_else(|_| self.guest_config(&record, None));
            config.docker.tls = Some(tls);
            let mut bytes = encode_config_disk(&config)?;
            let running = self.machine_state(name) == VmState::Running;
            if running {
                if bytes.len() > old.len() {
                    return Err(Error::ConfigDiskFull { name: name.to_string() });
                }
                bytes.resize(old.len(), 0);
                write_in_place(&path, &bytes)?;
            } else {
                bytes.resize(bytes.len().max(CONFIG_DISK_ROOM), 0);
                write_atomic(&path, &bytes, 0o600)?;
            }
            (serial, running)
        };
        if !running {
            return Ok(Rotated::NextStart { serial });
        }
        let since = console_log_len(&vm.dir);
        self.hypervisor.control(&vm, ControlRequest::ReloadTls)?;
        self.hypervisor.wait_ready_after(&vm, since, timeout)?;
        self.ping_docker(&record).map_err(|source| Error::DockerUnreachable {
            name: name.to_string(),
            endpoint: record.docker_host(),
            source: Box::new(source),
        })?;
        let api = self.connect(&self.endpoint(&record), 30)?;
        let presented = crate::runtime()?.block_on(api.server_certificate())?;
        if let Some(der) = presented {
            let presented = CertInfo::from_der(&der)?.serial;
            if presented != serial {
                return Err(Error::CertificateNotReloaded {
                    name: name.to_string(),
                    presented,
                    expected: serial,
                });
            }
        }
        Ok(Rotated::Live { serial })
    }

    /// `n2d certs rotate --client`: a new client certificate for the user; returns its serial.
    pub fn rotate_client_certificate(&self) -> Result<String> {
        let _lock = self.home.lock()?;
        let ca = Ca::load_or_create(&self.home.certs_dir())?;
        let client = ca.rotate_client()?;
        Ok(CertInfo::from_pem(&client.cert_pem)?.serial)
    }

    /// The home's CA, the client certificate and each machine's server certificate (from its
    /// config disk), for `n2d certs ls`.
    pub fn certificates(&self) -> Vec<CertStatus> {
        let certs = self.home.certs_dir();
        let read_pem = |path: &Path| -> Result<CertInfo, String> {
            let bytes = n2d_store::safe_fs::read_input(path, 256 * 1024, "a certificate")
                .map_err(|e| e.to_string())?;
            CertInfo::from_pem(&String::from_utf8_lossy(&bytes)).map_err(|e| e.to_string())
        };
        let mut out = Vec::new();
        if !certs.join(n2d_pki::CA_CERT).exists() {
            return out;
        }
        out.push(CertStatus { name: "ca".into(), info: read_pem(&certs.join(n2d_pki::CA_CERT)) });
        out.push(CertStatus { name: "client".into(), info: read_pem(&certs.join(n2d_pki::CLIENT_CERT)) });
        for (name, _) in self.home.list_machines() {
            let Ok(name) = name.parse::<MachineName>() else { continue };
            let path = self.home.machine_dir(&name).join(CONFIG_DISK_FILE);
            let info = read_config_disk(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| decode_config_disk(&bytes).map_err(|e| e.to_string()))
                .and_then(|config| match config.docker.tls {
                    Some(tls) => CertInfo::from_pem(&tls.cert_pem).map_err(|e| e.to_string()),
                    None => Err("no TLS (--insecure-tcp)".into()),
                });
            out.push(CertStatus { name: name.to_string(), info });
        }
        out
    }
}

/// `n2d certs rotate`'s flags.
#[derive(Debug, Clone, Default)]
pub struct RotateRequest {
    pub names: Vec<MachineName>,
    /// Every machine of the home.
    pub all: bool,
    /// The user's client certificate too.
    pub client: bool,
    /// How long each running machine's engine may take to come back.
    pub timeout: Duration,
}

/// What `n2d certs rotate` did.
#[derive(Debug)]
pub struct RotateReport {
    /// The new client certificate's serial (`--client`).
    pub client_serial: Option<String>,
    /// Each machine asked for and what its rotation did (or why it failed).
    pub machines: Vec<(MachineName, Result<Rotated>)>,
    /// The home had no CA: a new one (and a client certificate) was made.
    pub new_ca: bool,
    /// The machines whose docker contexts keep a copy of a client certificate (or CA) that
    /// changed, with how to reach them.
    pub contexts: Vec<(MachineName, n2d_swarm::Endpoint)>,
}

impl RotateReport {
    /// An error naming the machines not rotated, if any.
    pub fn result(&self) -> Result<()> {
        let failed: Vec<String> =
            self.machines.iter().filter(|(_, r)| r.is_err()).map(|(n, _)| n.to_string()).collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::CertsNotRotated(crate::error::NotRotated(failed)))
        }
    }
}

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// `n2d certs rotate [NAME...|--all] [--client]`: every name is checked before anything
    /// is rotated; a machine that fails does not stop the others (see [`RotateReport::result`]).
    pub fn rotate_certificates(&self, req: &RotateRequest) -> Result<RotateReport> {
        if !req.all && req.names.is_empty() && !req.client {
            return Err(Error::Usage(
                "name the machines whose certificates to rotate, or give --all or --client".into(),
            ));
        }
        let ca_cert = self.home.certs_dir().join(n2d_pki::CA_CERT);
        let had_ca = ca_cert.exists();
        if !had_ca && req.client {
            return Err(Error::Usage("this home has no CA yet, so no client certificate to rotate".into()));
        }
        let names: Vec<MachineName> = if req.all {
            self.home.list_machines().into_iter().filter_map(|(n, _)| n.parse().ok()).collect()
        } else {
            req.names.clone()
        };
        for name in &names {
            if !self.home.machine_exists(name) {
                return Err(Error::Usage(format!("no machine named {name} (see `n2d ls`)")));
            }
        }
        let client_serial = if req.client { Some(self.rotate_client_certificate()?) } else { None };
        let machines = names
            .into_iter()
            .map(|name| (name.clone(), self.rotate_server_certificate(&name, req.timeout)))
            .collect();
        let new_ca = !had_ca && ca_cert.exists();
        let mut contexts = Vec::new();
        if req.client || new_ca {
            for (name, record) in self.home.list_machines() {
                if let (Ok(name), Ok(record)) = (name.parse::<MachineName>(), record) {
                    contexts.push((name, self.endpoint(&record)));
                }
            }
        }
        Ok(RotateReport { client_serial, machines, new_ca, contexts })
    }
}

/// Now, in seconds since the epoch (for [`CertStatus::expiring`]).
pub fn unix_now() -> i64 {
    n2d_pki::unix_now()
}
