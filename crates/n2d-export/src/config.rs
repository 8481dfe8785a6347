//! The configuration an export made for one machine carries (`--for NAME`): the same
//! [`GuestConfig`] n2d's own VMs get on their config disk, with a NIC addressed statically
//! (`--ip CIDR --gateway IP [--dns IP]`) or by DHCP, and the home CA's server certificate for
//! `NAME.internal`, `NAME.local`, `NAME.mshome.net` and the static address. Not 127.0.0.1:
//! n2d reaches an export at its own address or name, and a certificate for the loopback address
//! would let this machine's key stand in for any other behind a local forward.

use n2d_pki::{Ca, PkiError};
use n2d_proto::{Addressing, DockerConfig, GuestConfig, GuestNetwork, TlsMaterial};
use n2d_spec::machine::MachineName;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// The Docker engine's TLS port on an exported machine.
pub const DOCKER_TLS_PORT: u16 = 2376;

/// An address with its prefix length, `192.168.1.50/24`: a host's address on its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCidr {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl FromStr for HostCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| {
            format!("{s:?} has no prefix length: give ADDRESS/PREFIX, e.g. 192.168.1.50/24")
        })?;
        let address: Ipv4Addr =
            addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 address (e.g. 192.168.1.50/24)"))?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=30).contains(p))
            .ok_or_else(|| format!("prefix length {prefix:?} must be a number from 1 to 30"))?;
        let host_bits = u32::from(address) & (u32::MAX >> prefix_len);
        if host_bits == 0 || host_bits == u32::MAX >> prefix_len {
            return Err(format!("{s} is the network's own or broadcast address, not a host's"));
        }
        Ok(HostCidr { address, prefix_len })
    }
}

/// How the exported machine's NIC is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportNetwork {
    Dhcp,
    Static { cidr: HostCidr, gateway: Ipv4Addr, dns: Vec<Ipv4Addr> },
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "the gateway {gateway} is not on the network of {address}/{prefix_len}: give a --gateway inside it"
    )]
    GatewayOffNetwork { gateway: Ipv4Addr, address: Ipv4Addr, prefix_len: u8 },
    #[error("cannot issue the machine's certificate")]
    Pki(#[from] PkiError),
}

impl ConfigError {
    /// A mistake in the command line (`--gateway`, an `--ip` the CA cannot vouch for).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ConfigError::GatewayOffNetwork { .. } | ConfigError::Pki(PkiError::AddressNotPermitted { .. })
        )
    }
}

impl ExportNetwork {
    /// Checks that the gateway is on the address's network.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let ExportNetwork::Static { cidr, gateway, .. } = self {
            let mask = u32::MAX << (32 - cidr.prefix_len);
            if u32::from(*gateway) & mask != u32::from(cidr.address) & mask || *gateway == cidr.address {
                return Err(ConfigError::GatewayOffNetwork {
                    gateway: *gateway,
                    address: cidr.address,
                    prefix_len: cidr.prefix_len,
                });
            }
        }
        Ok(())
    }

    pub fn static_address(&self) -> Option<Ipv4Addr> {
        match self {
            ExportNetwork::Static { cidr, .. } => Some(cidr.address),
            ExportNetwork::Dhcp => None,
        }
    }

    fn guest(&self) -> GuestNetwork {
        match self {
            ExportNetwork::Dhcp => {
                GuestNetwork { mac: String::new(), addressing: Addressing::Dhcp, dns: Vec::new() }
            }
            ExportNetwork::Static { cidr, gateway, dns } => GuestNetwork {
                mac: String::new(),
                addressing: Addressing::Static {
                    address: cidr.address,
                    prefix_len: cidr.prefix_len,
                    gateway: Some(*gateway),
                },
                // Without --dns, the gateway (a home router or Hyper-V's NAT answers DNS).
                dns: if dns.is_empty() { vec![*gateway] } else { dns.clone() },
            },
        }
    }
}

/// The guest configuration of machine `name`, with a fresh server certificate from `ca`.
pub fn machine_config(
    ca: &Ca,
    name: &MachineName,
    network: &ExportNetwork,
    labels: BTreeMap<String, String>,
) -> Result<GuestConfig, ConfigError> {
    network.check()?;
    let ips: Vec<IpAddr> = network.static_address().map(IpAddr::from).into_iter().collect();
    let server = ca.issue_export_server(name, &ips)?;
    Ok(GuestConfig {
        hostname: name.to_string(),
        network: network.guest(),
        docker: DockerConfig {
            tls: Some(TlsMaterial {
                ca_pem: ca.cert_pem().to_string(),
                cert_pem: server.cert_pem,
                key_pem: server.key_pem,
            }),
            tcp_port: DOCKER_TLS_PORT,
        },
        labels,
        uplink: None,
        template: false,
        // An export boots many times from the same disk: a seed there would be a constant.
        seed: None,
        mounts: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_cidrs_parse_and_bad_ones_say_why() {
        assert_eq!(
            "192.168.1.50/24".parse::<HostCidr>().unwrap(),
            HostCidr { address: Ipv4Addr::new(192, 168, 1, 50), prefix_len: 24 }
        );
        assert!("192.168.1.50".parse::<HostCidr>().unwrap_err().contains("no prefix length"));
        assert!("192.168.1.0/24".parse::<HostCidr>().unwrap_err().contains("network's own"));
        assert!("192.168.1.255/24".parse::<HostCidr>().unwrap_err().contains("broadcast"));
        assert!("192.168.1.5/33".parse::<HostCidr>().unwrap_err().contains("1 to 30"));
        assert!("web/24".parse::<HostCidr>().unwrap_err().contains("not an IPv4"));
    }

    fn static_net(gw: [u8; 4]) -> ExportNetwork {
        ExportNetwork::Static { cidr: "192.168.1.50/24".parse().unwrap(), gateway: gw.into(), dns: vec![] }
    }

    #[test]
    fn the_gateway_must_be_on_the_network() {
        assert!(static_net([192, 168, 1, 1]).check().is_ok());
        let err = static_net([192, 168, 2, 1]).check().unwrap_err();
        assert!(err.to_string().contains("192.168.2.1 is not on the network of 192.168.1.50/24"));
    }

    #[test]
    fn a_static_config_names_the_address_gateway_and_dns_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let name: MachineName = "web1".parse().unwrap();
        let labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        let config = machine_config(&ca, &name, &static_net([192, 168, 1, 1]), labels).unwrap();
        assert_eq!(config.hostname, "web1");
        assert_eq!(config.network.mac, "");
        assert_eq!(
            config.network.addressing,
            Addressing::Static {
                address: [192, 168, 1, 50].into(),
                prefix_len: 24,
                gateway: Some([192, 168, 1, 1].into())
            }
        );
        assert_eq!(config.network.dns, [Ipv4Addr::new(192, 168, 1, 1)]);
        assert_eq!(config.docker.tcp_port, 2376);
        assert_eq!(config.labels["zone"], "a");
        let disk = n2d_proto::encode_config_disk(&config).unwrap();
        assert_eq!(n2d_proto::decode_config_disk(&disk).unwrap(), config);

        let dhcp = machine_config(&ca, &name, &ExportNetwork::Dhcp, BTreeMap::new()).unwrap();
        assert_eq!(dhcp.network.addressing, Addressing::Dhcp);
        assert!(dhcp.network.dns.is_empty());

        // The certificates name the machine and its static address only: no 127.0.0.1.
        let info =
            |c: &GuestConfig| n2d_pki::CertInfo::from_pem(&c.docker.tls.as_ref().unwrap().cert_pem).unwrap();
        let names = ["web1.internal", "web1.local", "web1.mshome.net"];
        assert_eq!(info(&config).dns_names, names);
        assert_eq!(info(&config).ips, [IpAddr::from([192, 168, 1, 50])]);
        assert_eq!(info(&dhcp).dns_names, names);
        assert!(info(&dhcp).ips.is_empty(), "{:?}", info(&dhcp).ips);
    }
}
