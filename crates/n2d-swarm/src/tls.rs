//! n2d's TLS client: the one place its rustls configuration is built.
//!
//! A Docker endpoint is trusted through exactly the CA file its [`TlsPaths`] name (the home's CA
//! for n2d's machines): never the system's root CAs, which bollard's own `connect_with_ssl` adds.
//! The server's certificate must also name the host the endpoint is reached at (an IP SAN for
//! `tcp://10.77.0.2:2376`, a DNS SAN for `tcp://web1.mshome.net:2376`): rustls's usual check.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::api::{ApiError, TlsPaths};

/// The largest certificate or key file read (PEM; n2d's are under 1 KiB).
const MAX_PEM: u64 = 256 * 1024;

fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, ApiError> {
    n2d_store::safe_fs::read_input(path, MAX_PEM, what)
        .map_err(|e| ApiError::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })
}

fn bad_pem(path: &Path, what: &str) -> ApiError {
    ApiError::Other(format!("{}: no valid {what} in it", path.display()))
}

/// The trust anchors of an endpoint: every certificate in its CA file and nothing else.
pub fn root_store(ca: &Path) -> Result<RootCertStore, ApiError> {
    let pem = read_pem(ca, "a CA certificate")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad_pem(ca, "PEM certificate"))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad_pem(ca, "CA certificate"));
    }
    Ok(roots)
}

/// The client configuration for an endpoint: its CA file as the only roots, its client
/// certificate and key.
pub fn client_config(tls: &TlsPaths) -> Result<Arc<ClientConfig>, ApiError> {
    let roots = root_store(&tls.ca)?;
    let cert_pem = read_pem(&tls.cert, "a client certificate")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad_pem(&tls.cert, "PEM certificate"))?;
    let key_pem = read_pem(&tls.key, "a client key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| bad_pem(&tls.key, "private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Other(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| ApiError::Other(format!("{}: {e}", tls.key.display())))?;
    Ok(Arc::new(config))
}

/// `HOST` and `PORT` of `tcp://HOST:PORT` (or `https://`).
pub fn host_and_port(docker_host: &str) -> Result<(String, u16), ApiError> {
    let bad = || ApiError::Other(format!("{docker_host:?} is not tcp://HOST:PORT"));
    let rest = docker_host
        .strip_prefix("tcp://")
        .or_else(|| docker_host.strip_prefix("https://"))
        .ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// The name a server's certificate must carry for `host`: its IP address, or its DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, ApiError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string())
        .map_err(|_| ApiError::Other(format!("{host:?} is not a host name")))
}

/// Completes a TLS handshake with the engine at `docker_host` as n2d's client does (the
/// endpoint's CA only, the certificate checked against the host's name) and returns the
/// certificate it presented (DER). Nothing is sent over the connection.
pub async fn presented_certificate(
    docker_host: &str,
    tls: &TlsPaths,
    timeout: Duration,
) -> Result<Vec<u8>, ApiError> {
    let (host, port) = host_and_port(docker_host)?;
    let name = server_name(&host)?;
    let connector = tokio_rustls::TlsConnector::from(client_config(tls)?);
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| ApiError::Other(format!("cannot connect to {host}:{port}: {e}")))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| ApiError::Other(format!("TLS with {host}:{port}: {e}")))?;
        let (_, conn) = stream.get_ref();
        conn.peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .ok_or_else(|| ApiError::Other(format!("{host}:{port} presented no certificate")))
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ApiError::Other(format!("no TLS handshake with {host}:{port} within {timeout:?}")))?
}

#[cfg(test)]
pub(crate) mod tests {
    //! Against a real TLS server on 127.0.0.1 (tokio-rustls), with certificates of the home's
    //! CA (n2d-pki) and of another CA (rcgen).
    use super::*;
    use crate::testing::serve;
    use crate::{BollardApi, DockerApi, Endpoint};
    use n2d_pki::{Ca, CertInfo};

    pub struct Home {
        pub dir: tempfile::TempDir,
        pub ca: Ca,
    }

    impl Home {
        pub fn new() -> Home {
            let dir = tempfile::tempdir().unwrap();
            let ca = Ca::load_or_create(dir.path()).unwrap();
            Home { dir, ca }
        }

        pub fn tls(&self) -> TlsPaths {
            TlsPaths {
                ca: self.dir.path().join(n2d_pki::CA_CERT),
                cert: self.dir.path().join(n2d_pki::CLIENT_CERT),
                key: self.dir.path().join(n2d_pki::CLIENT_KEY),
            }
        }

        /// A server certificate of this home's CA for machine `name` at `ips`.
        pub fn server(&self, name: &str, ips: &[&str]) -> (String, String) {
            let ips: Vec<IpAddr> = ips.iter().map(|i| i.parse().unwrap()).collect();
            let c = self.ca.issue_server(&name.parse().unwrap(), &ips).unwrap();
            (c.cert_pem, c.key_pem)
        }
    }

    /// A certificate for 127.0.0.1 and `localhost` from a CA of its own (as a public CA or
    /// another n2d home would issue), with that CA's PEM.
    fn foreign() -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    fn endpoint(host: &str, port: u16, tls: TlsPaths) -> Endpoint {
        Endpoint {
            name: "m1".into(),
            ip: std::net::Ipv4Addr::LOCALHOST,
            docker_host: format!("tcp://{host}:{port}"),
            tls: Some(tls),
        }
    }

    #[test]
    fn the_trust_store_is_exactly_the_endpoints_ca_file() {
        let home = Home::new();
        let roots = root_store(&home.tls().ca).unwrap();
        // One anchor, the home's CA: no system root CA is added (bollard's `connect_with_ssl`
        // adds every one the host trusts).
        assert_eq!(roots.len(), 1);
        assert_eq!(roots.roots[0].subject.as_ref(), subject_of(home.ca.cert_pem()));
        // Hostile CA files: empty, not PEM, a key instead of a certificate, a FIFO, a directory.
        let dir = tempfile::tempdir().unwrap();
        let key = std::fs::read(home.tls().key).unwrap();
        for (file, bytes) in [("empty", &b""[..]), ("text", b"not a certificate"), ("key", &key)] {
            std::fs::write(dir.path().join(file), bytes).unwrap();
            assert!(root_store(&dir.path().join(file)).is_err(), "{file}");
        }
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(root_store(&fifo).is_err(), "a FIFO is refused, not waited on");
        assert!(root_store(dir.path()).is_err());
    }

    /// The subject of a PEM certificate (DER), as a trust anchor holds it.
    fn subject_of(pem_text: &str) -> Vec<u8> {
        let der = CertificateDer::from_pem_slice(pem_text.as_bytes()).unwrap();
        webpki::anchor_from_trusted_cert(&der).unwrap().subject.as_ref().to_vec()
    }

    #[tokio::test]
    async fn a_server_of_the_home_ca_answers_and_one_of_another_ca_is_refused() {
        let home = Home::new();
        let (cert, key) = home.server("m1", &["127.0.0.1"]);
        let port = serve(&cert, &key).await;
        let api = BollardApi::connect(&endpoint("127.0.0.1", port, home.tls()), 5).unwrap();
        api.ping().await.unwrap();
        let der = api.server_certificate().await.unwrap().unwrap();
        assert_eq!(CertInfo::from_der(&der).unwrap().serial, CertInfo::from_pem(&cert).unwrap().serial);

        // Another CA's certificate for the very same address and name: refused, by requests
        // and by the certificate check alike.
        let (_, fcert, fkey) = foreign();
        let port = serve(&fcert, &fkey).await;
        for host in ["127.0.0.1", "localhost"] {
            let ep = endpoint(host, port, home.tls());
            let api = BollardApi::connect(&ep, 5).unwrap();
            let err = api.ping().await.unwrap_err();
            assert!(format!("{err:?}").contains("UnknownIssuer"), "{host}: {err:?}");
            let err = presented_certificate(&ep.docker_host, &home.tls(), Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("UnknownIssuer"), "{host}: {err}");
        }
    }

    #[tokio::test]
    async fn a_certificate_of_the_home_ca_for_another_address_or_name_is_refused() {
        let home = Home::new();
        // Issued to another machine (its own address): the CA is right, the name is not.
        let (cert, key) = home.server("other", &["10.77.0.9"]);
        let port = serve(&cert, &key).await;
        for host in ["127.0.0.1", "localhost"] {
            let ep = endpoint(host, port, home.tls());
            let err = BollardApi::connect(&ep, 5).unwrap().ping().await.unwrap_err();
            assert!(format!("{err:?}").contains("NotValidForName"), "{host}: {err:?}");
            let err = presented_certificate(&ep.docker_host, &home.tls(), Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("not valid for name") || err.to_string().contains("NotValidForName"),
                "{host}: {err}"
            );
        }
    }

    #[test]
    fn docker_hosts_split_and_name_the_server() {
        assert_eq!(host_and_port("tcp://10.0.0.2:2376").unwrap(), ("10.0.0.2".into(), 2376));
        assert_eq!(host_and_port("tcp://web1.mshome.net:2376").unwrap().0, "web1.mshome.net");
        for bad in ["10.0.0.2:2376", "tcp://10.0.0.2", "tcp://:2376", "tcp://h:x", "unix:///run/docker.sock"]
        {
            assert!(host_and_port(bad).is_err(), "{bad}");
        }
        assert!(matches!(server_name("10.0.0.2").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("web1.local").unwrap(), ServerName::DnsName(_)));
        assert!(server_name("bad name").is_err());
    }
}
