//! `n2d adopt NAME --host tcp://…`: records a machine booted elsewhere from an export made
//! with `--for NAME`, after checking that its engine answers the home's client certificate
//! with a certificate of the home's CA that names HOST (an IP or DNS SAN: the TLS client's own
//! check) and was issued for NAME (`NAME.internal`): another machine of the same CA, wherever it
//! answers, is refused.
//!
//! The record is one file written atomically under the state lock: it needs no journal.

use crate::{runtime, Error, Orchestrator, Result};
use n2d_spec::machine::MachineName;
use n2d_store::AdoptedHost;
use n2d_swarm::{Connector, DockerApi, Endpoint, TlsPaths};

/// Checks a `--host` value: `tcp://HOST:PORT`, HOST a name or an IPv4 address (the store's
/// check, which an adopted machine's record passes again whenever it is read).
pub fn check_docker_host(host: &str) -> Result<(String, u16), String> {
    n2d_store::check_docker_host(host)
}

/// The certificate an adopted engine presented must have been issued for `name`.
fn check_presented(name: &MachineName, host: &str, der: Option<&[u8]>) -> Result<()> {
    let der = der.ok_or(Error::NoCertificatePresented)?;
    let info = n2d_pki::CertInfo::from_der(der)?;
    if !info.names_machine(name) {
        return Err(Error::CertificateForAnotherMachine {
            host: host.to_string(),
            names: info.names(),
            name: name.to_string(),
        });
    }
    Ok(())
}

impl<R, H, C> Orchestrator<R, H, C> {
    /// The endpoint of an adopted machine: the home's client certificate, as for its own VMs.
    pub fn adopted_endpoint(&self, host: &AdoptedHost) -> Endpoint {
        let certs = self.home.certs_dir();
        let ip = check_docker_host(&host.docker_host)
            .ok()
            .and_then(|(h, _)| h.parse().ok())
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        Endpoint {
            name: host.name.to_string(),
            ip,
            docker_host: host.docker_host.clone(),
            tls: Some(TlsPaths {
                ca: certs.join(n2d_pki::CA_CERT),
                cert: certs.join(n2d_pki::CLIENT_CERT),
                key: certs.join(n2d_pki::CLIENT_KEY),
            }),
        }
    }

    /// The machine recorded by `n2d adopt` under `name`, if any.
    pub fn adopted(&self, name: &MachineName) -> Result<Option<AdoptedHost>> {
        Ok(self.home.load_adopted(name)?)
    }

    fn name_taken(&self, name: &MachineName) -> Result<bool> {
        Ok(self.home.machine_exists(name) || self.home.load_adopted(name)?.is_some())
    }
}

impl<R, H, C: Connector> Orchestrator<R, H, C> {
    /// `n2d adopt NAME --host HOST`: checks the engine at `host` (see the module docs) and
    /// records it; returns how to reach it.
    pub fn adopt(&self, name: &MachineName, host: &str) -> Result<Endpoint> {
        check_docker_host(host).map_err(Error::Usage)?;
        if self.name_taken(name)? {
            return Err(Error::AdoptedExists { name: name.to_string() });
        }
        if !self.home.certs_dir().join(n2d_pki::CA_CERT).exists() {
            return Err(Error::AdoptWithoutCa { name: name.to_string() });
        }
        let adopted = AdoptedHost { name: name.clone(), docker_host: host.to_string() };
        let ep = self.adopted_endpoint(&adopted);
        let api = self.connect(&ep, 30)?;
        let answered = runtime()?.block_on(async {
            api.ping().await?;
            api.server_certificate().await
        });
        let der = answered.map_err(|source| Error::AdoptUnanswered {
            name: name.to_string(),
            host: host.to_string(),
            source,
        })?;
        check_presented(name, host, der.as_deref())?;
        let _lock = self.home.lock()?;
        if self.name_taken(name)? {
            return Err(Error::RecordedMeanwhile { name: name.to_string() });
        }
        self.home.save_adopted(&adopted)?;
        Ok(ep)
    }

    /// `n2d rm NAME` of an adopted machine: forgets it (its VM, wherever it runs, is not
    /// touched). `Ok(false)`: no adopted machine of that name (or a machine of this home is).
    pub fn forget_adopted(&self, name: &MachineName) -> Result<bool> {
        let _lock = self.home.lock()?;
        if self.home.machine_exists(name) || self.home.load_adopted(name)?.is_none() {
            return Ok(false);
        }
        self.home.remove_adopted(name)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hosts_are_tcp_with_a_port_and_a_plain_host() {
        assert_eq!(check_docker_host("tcp://192.168.1.50:2376").unwrap(), ("192.168.1.50".into(), 2376));
        assert_eq!(check_docker_host("tcp://web1.mshome.net:2376").unwrap().0, "web1.mshome.net");
        assert!(check_docker_host("192.168.1.50:2376").unwrap_err().contains("tcp://HOST:PORT"));
        assert!(check_docker_host("tcp://192.168.1.50").unwrap_err().contains("no port"));
        assert!(check_docker_host("tcp://h:0").is_err());
        assert!(check_docker_host("tcp://a/b:2376").is_err());
        assert!(check_docker_host("tcp://:2376").is_err());
    }
}
