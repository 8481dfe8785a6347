//! n2d's certificates: one CA per `$N2D_HOME`, a server certificate per machine and a client
//! certificate for the user. The CA and client files live in `certs/` with the names the docker
//! CLI expects from `DOCKER_CERT_PATH` (`ca.pem`, `cert.pem`, `key.pem`). Keys are written 0600.
//!
//! The CA is limited to n2d's machines even if a user trusts it system-wide: path length 0 (it
//! signs no other CA) and X.509 name constraints (critical, permitted subtrees only): the
//! private IPv4 ranges in [`PERMITTED_IPV4`] and the DNS names under [`PERMITTED_DNS`]. A
//! server certificate therefore names the machine as `NAME.internal` and `NAME.local` (a bare
//! `NAME` can satisfy no DNS constraint: only labels added on the left match) plus its IPs,
//! and [`Ca::issue_server`] refuses an address outside those ranges, since a certificate
//! for it would fail verification.
//!
//! Lifetimes: the CA lives [`CA_LIFETIME_DAYS`] (10 years), server and client certificates
//! [`LEAF_LIFETIME_DAYS`] (825 days: the longest a TLS server certificate may live for Apple's
//! and the browsers' verifiers, and longer than most machines do; `n2d certs rotate` renews
//! them). Every certificate starts a day in the past, so a guest whose clock lags still accepts
//! it.

#![forbid(unsafe_code)]

use n2d_spec::machine::MachineName;
use n2d_store::{write_atomic, StoreError};
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType,
};
use std::net::{IpAddr, Ipv4Addr};
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
    #[error("cannot read a certificate: {0}")]
    Parse(String),
    #[error("n2d's CA can vouch only for private IPv4 addresses ({ranges}), not {ip}: use a bridge with a private IPv4 subnet (e.g. `ip addr add 10.78.0.1/24 dev BRIDGE`)", ranges = permitted_ipv4_text())]
    AddressNotPermitted { ip: IpAddr },
}

/// How long the CA is valid (10 years): the longest anything n2d made lives. Rotating it means
/// new certificates for every machine (see the README).
pub const CA_LIFETIME_DAYS: i64 = 3650;
/// How long server and client certificates are valid: 825 days.
pub const LEAF_LIFETIME_DAYS: i64 = 825;
/// How far in the past a certificate's validity starts (clock skew between host and guest).
const BACKDATE: time::Duration = time::Duration::days(1);

/// The validity of a certificate issued now for `days`.
fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + time::Duration::days(days);
}

/// The IPv4 ranges the CA may vouch for (its permitted iPAddress subtrees): RFC 1918 private,
/// CGNAT (RFC 6598), link-local and loopback.
pub const PERMITTED_IPV4: [(Ipv4Addr, u8); 6] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
];

/// The DNS subtrees the CA may vouch for: `internal` (ICANN's private-use TLD), `local`
/// (mDNS) and `mshome.net` (the DNS of Hyper-V's default switch).
pub const PERMITTED_DNS: [&str; 3] = ["internal", "local", "mshome.net"];

/// The domains a server certificate names its machine under: `NAME.internal`, `NAME.local`.
const SERVER_DOMAINS: [&str; 2] = ["internal", "local"];

fn permitted_ipv4_text() -> String {
    PERMITTED_IPV4.iter().map(|(net, prefix)| format!("{net}/{prefix}")).collect::<Vec<_>>().join(", ")
}

/// Whether `ip` lies in one of the CA's permitted ranges (IPv6 never does).
fn is_permitted(ip: IpAddr) -> bool {
    let IpAddr::V4(ip) = ip else { return false };
    PERMITTED_IPV4.iter().any(|&(net, prefix)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(net) & mask
    })
}

fn name_constraints() -> NameConstraints {
    let ips = PERMITTED_IPV4
        .iter()
        .map(|&(net, prefix)| GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix(net.octets(), prefix)));
    let dns = PERMITTED_DNS.iter().map(|d| GeneralSubtree::DnsName((*d).to_string()));
    NameConstraints { permitted_subtrees: ips.chain(dns).collect(), excluded_subtrees: Vec::new() }
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
        // Trusted system-wide by mistake, it still vouches only for n2d's private names.
        params.name_constraints = Some(name_constraints());
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_LIFETIME_DAYS);
        let cert = params.self_signed(&key).map_err(PkiError::Generate)?;
        let ca = Ca { dir: dir.to_path_buf(), cert_pem: cert.pem(), key };
        let client = ca.issue_client()?;
        // The CA key is written last: its presence marks a complete certs directory. A write
        // that fails (a full disk) takes back the files written before it, so the next try
        // starts from nothing instead of finding a CA certificate without its key.
        let ca_key = ca.key.serialize_pem();
        let files = [
            (CLIENT_CERT, client.cert_pem.as_str()),
            (CLIENT_KEY, client.key_pem.as_str()),
            (CA_CERT, ca.cert_pem.as_str()),
            (CA_KEY, ca_key.as_str()),
        ];
        for (i, (file, text)) in files.iter().enumerate() {
            if let Err(e) = save(&dir.join(file), text, 0o600) {
                for (written, _) in &files[..i] {
                    let _ = std::fs::remove_file(dir.join(written));
                }
                return Err(e);
            }
        }
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

    /// A server certificate for the Docker engine of machine `machine`, reachable at `ips`.
    /// Its DNS names are `MACHINE.internal` and `MACHINE.local`, which the CA's name
    /// constraints permit; an address outside [`PERMITTED_IPV4`] is refused.
    pub fn issue_server(&self, machine: &MachineName, ips: &[IpAddr]) -> Result<CertAndKey, PkiError> {
        self.issue_server_in(machine, &SERVER_DOMAINS, ips)
    }

    /// A server certificate for an exported disk made for `machine` (`n2d image export --for`):
    /// as [`Ca::issue_server`], plus `MACHINE.mshome.net`, the name Hyper-V's default switch
    /// gives it. The bare machine name is not added: the CA's name constraints permit no name
    /// without one of their domains, and a verifier (Go's, the docker CLI's) refuses the whole
    /// certificate for one such name.
    pub fn issue_export_server(&self, machine: &MachineName, ips: &[IpAddr]) -> Result<CertAndKey, PkiError> {
        self.issue_server_in(machine, &PERMITTED_DNS, ips)
    }

    fn issue_server_in(
        &self,
        machine: &MachineName,
        domains: &[&str],
        ips: &[IpAddr],
    ) -> Result<CertAndKey, PkiError> {
        if let Some(&ip) = ips.iter().find(|ip| !is_permitted(**ip)) {
            return Err(PkiError::AddressNotPermitted { ip });
        }
        let dns: Vec<String> = domains.iter().map(|d| format!("{}.{d}", machine.as_str())).collect();
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(PkiError::Generate)?;
        // A DNS name, not the bare machine name: a verifier that reads the subject's CN checks it
        // against the name constraints too.
        params.distinguished_name = name(&dns[0]);
        for n in &dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(n.as_str().try_into().map_err(PkiError::Generate)?));
        }
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // ECDSA keys sign; they never encipher keys (that usage is RSA's).
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    /// Issues a new client certificate for the user and writes it over `cert.pem`/`key.pem`
    /// (`n2d certs rotate --client`). The old one stays valid until it expires: nothing revokes
    /// it, so a leaked key calls for a new CA (see the README).
    pub fn rotate_client(&self) -> Result<CertAndKey, PkiError> {
        let client = self.issue_client()?;
        // Both files are made in full beside their places first, then renamed: a failure leaves
        // the old pair.
        let suffix = n2d_store::safe_fs::random_suffix();
        let staged = [(CLIENT_KEY, &client.key_pem), (CLIENT_CERT, &client.cert_pem)]
            .map(|(file, text)| (self.dir.join(file), self.dir.join(format!(".{file}.{suffix}")), text));
        let result = staged.iter().try_for_each(|(_, tmp, text)| save(tmp, text, 0o600)).and_then(|()| {
            staged.iter().try_for_each(|(path, tmp, _)| {
                std::fs::rename(tmp, path)
                    .map_err(|source| PkiError::Save(StoreError::Write { path: path.clone(), source }))
            })
        });
        for (_, tmp, _) in &staged {
            let _ = std::fs::remove_file(tmp);
        }
        result.map(|()| client)
    }

    fn issue_client(&self) -> Result<CertAndKey, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(PkiError::Generate)?;
        params.distinguished_name = name("n2d client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<CertAndKey, PkiError> {
        validity(&mut params, LEAF_LIFETIME_DAYS);
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        let issuer = self.issuer().map_err(PkiError::Generate)?;
        let cert = params.signed_by(&key, &issuer).map_err(PkiError::Generate)?;
        Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// What n2d reads back from a certificate: to tell one from another (`serial`), when it
/// expires, and which names it vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number, lower-case hex.
    pub serial: String,
    /// When it stops being valid, in seconds since the Unix epoch.
    pub not_after: i64,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl CertInfo {
    /// The first certificate of a PEM text.
    pub fn from_pem(pem_text: &str) -> Result<CertInfo, PkiError> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
            .map_err(|e| PkiError::Parse(format!("not a PEM certificate: {e}")))?;
        CertInfo::from_der(&pem.contents)
    }

    pub fn from_der(der: &[u8]) -> Result<CertInfo, PkiError> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Parse(e.to_string()))?;
        let serial = cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
        let not_after = cert.validity().not_after.timestamp();
        let (mut dns_names, mut ips) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))),
                        16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Ok(CertInfo { serial, not_after, dns_names, ips })
    }

    /// The UTC day it expires, `YYYY-MM-DD`.
    pub fn expiry_date(&self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.not_after)
            .map(|t| t.date().to_string())
            .unwrap_or_else(|_| "?".into())
    }

    /// Whole days left before it expires at `now` (seconds since the epoch); negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    /// Whether it names `machine` as n2d's server certificates do (`MACHINE.internal`).
    pub fn names_machine(&self, machine: &MachineName) -> bool {
        let own = format!("{}.{}", machine.as_str(), SERVER_DOMAINS[0]);
        self.dns_names.iter().any(|d| d.eq_ignore_ascii_case(&own))
    }

    /// Its names, DNS then IP, for messages.
    pub fn names(&self) -> String {
        let ips = self.ips.iter().map(IpAddr::to_string);
        self.dns_names.iter().cloned().chain(ips).collect::<Vec<_>>().join(", ")
    }
}

/// The DER bytes of the first certificate of a PEM text.
pub fn der_of(pem_text: &str) -> Result<Vec<u8>, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| PkiError::Parse(format!("not a PEM certificate: {e}")))?;
    Ok(pem.contents)
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
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
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn expiry_dates_are_civil_utc() {
        let at = |not_after| CertInfo { serial: String::new(), not_after, dns_names: vec![], ips: vec![] };
        assert_eq!(at(0).expiry_date(), "1970-01-01");
        assert_eq!(at(951_782_400).expiry_date(), "2000-02-29");
        assert_eq!(at(2_208_988_800).expiry_date(), "2040-01-01");
        assert_eq!(at(-86_400).expiry_date(), "1969-12-31");
    }
    use webpki::{anchor_from_trusted_cert, EndEntityCert, KeyUsage};
    use x509_parser::prelude::{parse_x509_pem, GeneralName};

    fn machine(name: &str) -> MachineName {
        name.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn der(pem_text: &str) -> Vec<u8> {
        parse_x509_pem(pem_text.as_bytes()).unwrap().1.contents
    }

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

    /// Verifies `leaf` against `ca` as webpki (rustls) does: chain, usage, name constraints.
    fn verify(ca: &str, leaf: &str, usage: KeyUsage) -> Result<(), webpki::Error> {
        let ca_der = CertificateDer::from(der(ca));
        let anchors = [anchor_from_trusted_cert(&ca_der)?];
        let leaf_der = CertificateDer::from(der(leaf));
        let leaf = EndEntityCert::try_from(&leaf_der)?;
        let algs = [webpki::ring::ECDSA_P256_SHA256];
        leaf.verify_for_usage(&algs, &anchors, &[], UnixTime::now(), usage, None, None).map(|_| ())
    }

    fn verify_server_for(ca: &str, leaf: &str, name: ServerName<'_>) -> Result<(), webpki::Error> {
        verify(ca, leaf, KeyUsage::server_auth())?;
        let leaf_der = CertificateDer::from(der(leaf));
        EndEntityCert::try_from(&leaf_der)?.verify_is_valid_for_subject_name(&name)
    }

    #[test]
    fn server_certificate_names_the_machine_under_internal_and_local_and_is_signed_by_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let server = ca.issue_server(&machine("h1"), &[ip("10.77.0.2"), ip("127.0.0.1")]).unwrap();
        // No bare `h1`: it could satisfy no DNS name constraint.
        assert_eq!(sans(&server.cert_pem), ["h1.internal", "h1.local", "10.77.0.2", "127.0.0.1"]);

        let (_, ca_pem) = parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        let (_, srv_pem) = parse_x509_pem(server.cert_pem.as_bytes()).unwrap();
        let srv = srv_pem.parse_x509().unwrap();
        srv.verify_signature(Some(ca_cert.public_key())).unwrap();
        let cn = srv.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string();
        assert_eq!(cn, "h1.internal");
    }

    #[test]
    fn the_ca_is_name_constrained_to_private_addresses_and_n2d_domains() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let (_, ca_pem) = parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        let ext = ca_cert.name_constraints().unwrap().unwrap();
        assert!(ext.critical, "RFC 5280: name constraints must be critical");
        assert!(ext.value.excluded_subtrees.is_none());
        let permitted: Vec<String> = ext
            .value
            .permitted_subtrees
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| match &t.base {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(b) if b.len() == 8 => {
                    let prefix: u32 = b[4..].iter().map(|m| m.count_ones()).sum();
                    format!("{}/{prefix}", Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                }
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            permitted,
            [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "169.254.0.0/16",
                "127.0.0.0/8",
                "internal",
                "local",
                "mshome.net",
            ]
        );
    }

    #[test]
    fn a_server_certificate_verifies_against_the_ca_under_its_constraints() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let server = ca.issue_server(&machine("n2d-mngr-0"), &[ip("10.77.0.2"), ip("127.0.0.1")]).unwrap();
        for name in [
            ServerName::from(ip("10.77.0.2")),
            ServerName::from(ip("127.0.0.1")),
            ServerName::try_from("n2d-mngr-0.internal").unwrap(),
            ServerName::try_from("n2d-mngr-0.local").unwrap(),
        ] {
            verify_server_for(ca.cert_pem(), &server.cert_pem, name.clone())
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        assert!(
            verify_server_for(ca.cert_pem(), &server.cert_pem, ServerName::from(ip("10.77.0.3"))).is_err()
        );

        // The user's client certificate (no SANs) passes the same CA, for client use.
        let client = std::fs::read_to_string(dir.path().join(CLIENT_CERT)).unwrap();
        verify(ca.cert_pem(), &client, KeyUsage::client_auth()).unwrap();
    }

    #[test]
    fn an_export_certificate_adds_mshome_net_and_verifies_under_the_constraints() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let server =
            ca.issue_export_server(&machine("web1"), &[ip("127.0.0.1"), ip("192.168.1.50")]).unwrap();
        assert_eq!(
            sans(&server.cert_pem),
            ["web1.internal", "web1.local", "web1.mshome.net", "127.0.0.1", "192.168.1.50"]
        );
        for name in [
            ServerName::try_from("web1.mshome.net").unwrap(),
            ServerName::try_from("web1.local").unwrap(),
            ServerName::from(ip("192.168.1.50")),
        ] {
            verify_server_for(ca.cert_pem(), &server.cert_pem, name.clone())
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        assert!(matches!(
            ca.issue_export_server(&machine("web1"), &[ip("8.8.8.8")]),
            Err(PkiError::AddressNotPermitted { .. })
        ));
    }

    #[test]
    fn the_constraints_reject_names_outside_them() {
        // What issue_server refuses, signed anyway, fails verification: the constraints hold.
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let leaf = |san: SanType| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name = name("h1.internal");
            params.subject_alt_names = vec![san];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            ca.sign(params).unwrap().cert_pem
        };
        for (san, what) in [
            (SanType::IpAddress(ip("8.8.8.8")), "a public address"),
            (SanType::IpAddress(ip("::1")), "an IPv6 address"),
            (SanType::DnsName("h1".try_into().unwrap()), "a bare machine name"),
            (SanType::DnsName("example.com".try_into().unwrap()), "a public domain"),
            (SanType::DnsName("internal.example.com".try_into().unwrap()), "a public domain"),
        ] {
            let err = verify(ca.cert_pem(), &leaf(san), KeyUsage::server_auth()).unwrap_err();
            assert!(matches!(err, webpki::Error::NameConstraintViolation), "{what}: {err:?}");
        }
    }

    #[test]
    fn an_address_outside_the_permitted_ranges_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        for bad in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "11.0.0.1", "192.169.0.1", "::1", "fd00::2"] {
            let err = ca.issue_server(&machine("h1"), &[ip("10.77.0.2"), ip(bad)]).unwrap_err();
            assert!(matches!(err, PkiError::AddressNotPermitted { ip: i } if i == ip(bad)), "{bad}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(bad) && msg.contains("bridge with a private IPv4 subnet"), "{msg}");
            assert!(msg.contains("10.0.0.0/8") && msg.contains("100.64.0.0/10"), "{msg}");
        }
        for good in [
            "10.0.0.1",
            "10.255.255.254",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.122.10",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.1.1",
            "127.0.0.1",
        ] {
            ca.issue_server(&machine("h1"), &[ip(good)]).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
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

        let server = ca.issue_server(&machine("h1"), &[ip("10.77.0.2")]).unwrap();
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
    fn a_ca_that_cannot_be_written_whole_leaves_no_part_of_itself() {
        let dir = tempfile::tempdir().unwrap();
        // The last file cannot be written (a directory is in its way), as on a disk that fills up.
        std::fs::create_dir_all(dir.path().join(CA_KEY).join("in-the-way")).unwrap();
        assert!(matches!(Ca::load_or_create(dir.path()), Err(PkiError::Save(_))));
        for file in [CLIENT_CERT, CLIENT_KEY, CA_CERT] {
            assert!(!dir.path().join(file).exists(), "{file} was left behind");
        }
        std::fs::remove_dir_all(dir.path().join(CA_KEY)).unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(Ca::load_or_create(dir.path()).unwrap().cert_pem(), ca.cert_pem());
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

    fn validity_days(pem_text: &str) -> (i64, i64) {
        let (_, pem) = parse_x509_pem(pem_text.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let now = unix_now();
        let v = cert.validity();
        ((now - v.not_before.timestamp()) / 3600, (v.not_after.timestamp() - now + 3600) / 86_400)
    }

    #[test]
    fn the_ca_lives_ten_years_and_leaves_825_days_from_a_day_ago() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        // Not 2040 (some 65 years after rcgen's 1975 start) any more.
        assert_eq!(validity_days(ca.cert_pem()), (24, CA_LIFETIME_DAYS));
        let server = ca.issue_server(&machine("h1"), &[ip("10.77.0.2")]).unwrap();
        assert_eq!(validity_days(&server.cert_pem), (24, LEAF_LIFETIME_DAYS));
        let client = std::fs::read_to_string(dir.path().join(CLIENT_CERT)).unwrap();
        assert_eq!(validity_days(&client), (24, LEAF_LIFETIME_DAYS));
        let info = CertInfo::from_pem(&server.cert_pem).unwrap();
        assert!((LEAF_LIFETIME_DAYS - 1..=LEAF_LIFETIME_DAYS).contains(&info.days_left(unix_now())));
        assert_eq!(info.days_left(info.not_after + 1), -1);
    }

    #[test]
    fn rotating_the_client_certificate_replaces_the_pair_with_one_the_ca_vouches_for() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let old_cert = std::fs::read_to_string(dir.path().join(CLIENT_CERT)).unwrap();
        let old_key = std::fs::read_to_string(dir.path().join(CLIENT_KEY)).unwrap();
        let new = ca.rotate_client().unwrap();
        let cert = std::fs::read_to_string(dir.path().join(CLIENT_CERT)).unwrap();
        let key = std::fs::read_to_string(dir.path().join(CLIENT_KEY)).unwrap();
        assert_eq!((cert.as_str(), key.as_str()), (new.cert_pem.as_str(), new.key_pem.as_str()));
        assert_ne!(cert, old_cert);
        assert_ne!(key, old_key);
        assert_ne!(CertInfo::from_pem(&cert).unwrap().serial, CertInfo::from_pem(&old_cert).unwrap().serial);
        verify(ca.cert_pem(), &cert, KeyUsage::client_auth()).unwrap();
        // The key matches the certificate: rcgen reads the public key back from the pair.
        let pair = KeyPair::from_pem(&key).unwrap();
        let (_, pem) = parse_x509_pem(cert.as_bytes()).unwrap();
        assert_eq!(
            pem.parse_x509().unwrap().public_key().subject_public_key.data.as_ref(),
            pair.public_key_raw()
        );
        for file in [CLIENT_KEY, CLIENT_CERT] {
            let mode = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [CA_KEY, CA_CERT, CLIENT_CERT, CLIENT_KEY], "nothing staged is left");
    }

    #[test]
    fn cert_info_reads_serial_names_and_the_machine_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let a = ca.issue_server(&machine("web1"), &[ip("10.77.0.2")]).unwrap();
        let b = ca.issue_server(&machine("web1"), &[ip("10.77.0.2")]).unwrap();
        let (ia, ib) = (CertInfo::from_pem(&a.cert_pem).unwrap(), CertInfo::from_pem(&b.cert_pem).unwrap());
        assert_eq!(ia.dns_names, ["web1.internal", "web1.local"]);
        assert_eq!(ia.ips, [ip("10.77.0.2")]);
        assert_eq!(ia.names(), "web1.internal, web1.local, 10.77.0.2");
        assert_ne!(ia.serial, ib.serial, "a re-issued certificate has a serial of its own");
        assert!(ia.serial.len() >= 16 && ia.serial.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(ia.names_machine(&machine("web1")));
        assert!(!ia.names_machine(&machine("web2")));
        assert!(!ia.names_machine(&machine("web")), "a prefix of the name is another machine");
        for bad in ["", "garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"] {
            assert!(matches!(CertInfo::from_pem(bad), Err(PkiError::Parse(_))), "{bad:?}");
        }
        assert!(matches!(CertInfo::from_der(&[0x30, 0x03, 1, 2, 3]), Err(PkiError::Parse(_))));
    }

    #[test]
    fn debug_never_shows_keys() {
        let c = CertAndKey { cert_pem: "C".into(), key_pem: "SECRET".into() };
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
