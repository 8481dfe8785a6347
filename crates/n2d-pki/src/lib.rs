//! n2d's certificates: one CA per `$N2D_HOME`, a server certificate per machine (SANs: its IPs,
//! its name, 127.0.0.1) and a client certificate for the user. The CA and client files
//! live in `certs/` with the names the docker CLI expects from `DOCKER_CERT_PATH`
//! (`ca.pem`, `cert.pem`, `key.pem`). Keys are written 0600.

use n2d_store::{write_atomic, StoreError};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate a key or certificate")]
    Generate(#[source] rcgen::Error),
    #[error("the CA in {dir} cannot be loaded: remove the directory to make a new CA (existing machines then need new certificates)")]
    LoadCa {
        dir: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot save certificates")]
    Save(#[source] StoreError),
}

/// The PEM text of a certificate and its private key.
#[derive(Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// The CA of one `$N2D_HOME`, loaded or created in its certs directory.
pub struct Ca {
    dir: PathBuf,
    cert_pem: String,
    key: KeyPair,
}

/// File names in the certs directory; the first three are what DOCKER_CERT_PATH means to the
/// docker CLI.
pub const CA_CERT: &str = "ca.pem";
pub const CLIENT_CERT: &str = "cert.pem";
pub const CLIENT_KEY: &str = "key.pem";
const CA_KEY: &str = "ca-key.pem";

impl Ca {
    /// Loads the CA from `dir`, or creates it (and the user's client certificate) there.
    /// The caller holds the state lock, so two commands never create two CAs.
    pub fn load_or_create(dir: &Path) -> Result<Ca, PkiError> {
        let load_err = |source: Box<dyn std::error::Error + Send + Sync>| PkiError::LoadCa {
            dir: dir.to_path_buf(),
            source,
        };
        if dir.join(CA_CERT).exists() {
            let cert_pem = std::fs::read_to_string(dir.join(CA_CERT)).map_err(|e| load_err(e.into()))?;
            let key_pem = std::fs::read_to_string(dir.join(CA_KEY)).map_err(|e| load_err(e.into()))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| load_err(e.into()))?;
            let ca = Ca { dir: dir.to_path_buf(), cert_pem, key };
            ca.issuer().map_err(|e| load_err(e.into()))?;
            return Ok(ca);
        }
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(PkiError::Generate)?;
        params.distinguished_name = name("n2d CA");
        // Path length 0: the CA signs machine and client certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let cert = params.self_signed(&key).map_err(PkiError::Generate)?;
        let ca = Ca { dir: dir.to_path_buf(), cert_pem: cert.pem(), key };
        let client = ca.issue_client()?;
        // The CA key is written last: its presence marks a complete certs directory.
        save(&dir.join(CLIENT_CERT), &client.cert_pem, 0o600)?;
        save(&dir.join(CLIENT_KEY), &client.key_pem, 0o600)?;
        save(&dir.join(CA_CERT), &ca.cert_pem, 0o600)?;
        save(&dir.join(CA_KEY), &ca.key.serialize_pem(), 0o600)?;
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The directory to use as DOCKER_CERT_PATH.
    pub fn client_dir(&self) -> &Path {
        &self.dir
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, rcgen::Error> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
    }

    /// A server certificate for a Docker engine reachable as `names` and `ips`.
    pub fn issue_server(&self, names: &[&str], ips: &[IpAddr]) -> Result<CertAndKey, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(PkiError::Generate)?;
        params.distinguished_name = name(names.first().copied().unwrap_or("n2d"));
        for n in names {
            params.subject_alt_names.push(SanType::DnsName((*n).try_into().map_err(PkiError::Generate)?));
        }
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // ECDSA keys sign; they never encipher keys (that usage is RSA's).
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    fn issue_client(&self) -> Result<CertAndKey, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(PkiError::Generate)?;
        params.distinguished_name = name("n2d client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<CertAndKey, PkiError> {
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        let issuer = self.issuer().map_err(PkiError::Generate)?;
        let cert = params.signed_by(&key, &issuer).map_err(PkiError::Generate)?;
        Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn save(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    write_atomic(path, text.as_bytes(), mode).map_err(PkiError::Save)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::prelude::*;

    fn sans(pem_text: &str) -> Vec<String> {
        let (_, pem) = parse_x509_pem(pem_text.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let ext = cert.subject_alternative_name().unwrap().unwrap();
        ext.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn server_certificate_holds_name_and_ips_and_is_signed_by_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let ips: Vec<IpAddr> = vec!["10.77.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        let server = ca.issue_server(&["h1"], &ips).unwrap();
        assert_eq!(sans(&server.cert_pem), ["h1", "10.77.0.2", "127.0.0.1"]);

        let (_, ca_pem) = parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        let (_, srv_pem) = parse_x509_pem(server.cert_pem.as_bytes()).unwrap();
        let srv = srv_pem.parse_x509().unwrap();
        srv.verify_signature(Some(ca_cert.public_key())).unwrap();
    }

    #[test]
    fn the_ca_signs_no_other_ca_and_ecdsa_server_keys_only_sign() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let (_, ca_pem) = parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        let bc = ca_cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));

        let server = ca.issue_server(&["h1"], &["10.77.0.2".parse().unwrap()]).unwrap();
        let (_, srv_pem) = parse_x509_pem(server.cert_pem.as_bytes()).unwrap();
        let srv = srv_pem.parse_x509().unwrap();
        let ku = srv.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature());
        assert!(!ku.key_encipherment(), "ECDSA keys cannot encipher");
        assert!(srv.extended_key_usage().unwrap().unwrap().value.server_auth);
    }

    #[test]
    fn ca_is_reused_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = Ca::load_or_create(dir.path()).unwrap().cert_pem().to_string();
        let second = Ca::load_or_create(dir.path()).unwrap().cert_pem().to_string();
        assert_eq!(first, second);
        // Keys and certificates alike: everything n2d writes is private.
        for key in [CA_KEY, CLIENT_KEY, CA_CERT, CLIENT_CERT] {
            let mode = std::fs::metadata(dir.path().join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        assert!(dir.path().join(CLIENT_CERT).exists());
    }

    #[test]
    fn a_damaged_ca_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        Ca::load_or_create(dir.path()).unwrap();
        std::fs::write(dir.path().join(CA_KEY), "garbage").unwrap();
        let err = Ca::load_or_create(dir.path()).err().unwrap();
        assert!(matches!(err, PkiError::LoadCa { .. }));
        assert_eq!(std::fs::read_to_string(dir.path().join(CA_KEY)).unwrap(), "garbage");
    }

    #[test]
    fn debug_never_shows_keys() {
        let c = CertAndKey { cert_pem: "C".into(), key_pem: "SECRET".into() };
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
