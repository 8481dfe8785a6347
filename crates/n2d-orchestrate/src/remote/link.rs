//! Linking hosts with WireGuard for a swarm across hosts without a shared LAN bridge
//! (`swarm create --on ... --network wireguard`; the mechanics are `n2d_net::wireguard`).
//! This home numbers the hosts (`local` is 1, each other host gets the lowest free index, kept
//! in its record), asks each host for its public key (made there), makes one preshared key per
//! pair of hosts, and sends each host its peers (`n2d host link-up`, hidden, on stdin). A host's
//! link goes with the last machine on its bridge (`swarm rm`: `n2d host link-down`).

use super::RemoteError;
use crate::{Error, Orchestrator, Result};
use n2d_exec::{Cmd, Runner};
use n2d_net::wireguard::{self, Link, LinkConfig, Peer, Unlinked};
use n2d_spec::host::HostName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The index of `local` in this home's numbering.
pub const LOCAL_INDEX: u8 = 1;

/// What `n2d host link-prepare` says: the host's public key, and the two ends of the SSH
/// connection it was asked over (`$SSH_CONNECTION`): the address the other hosts reach it at,
/// and the caller's as this host sees it (the address `local` is reached at).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPrepared {
    pub public_key: String,
    pub ssh_client: Option<String>,
    pub ssh_server: Option<String>,
}

/// `CLIENT CPORT SERVER SPORT` of `$SSH_CONNECTION`: (client, server).
pub fn parse_ssh_connection(value: &str) -> Option<(String, String)> {
    let words: Vec<&str> = value.split_whitespace().collect();
    match words[..] {
        [client, _, server, _] => Some((client.to_string(), server.to_string())),
        _ => None,
    }
}

/// `ADDRESS:PORT` (an IPv6 address in brackets).
fn endpoint(address: &str) -> String {
    if address.contains(':') {
        format!("[{address}]:{}", wireguard::LINK_PORT)
    } else {
        format!("{address}:{}", wireguard::LINK_PORT)
    }
}

/// `local` (always part of a link: this home reaches every node) and `hosts`, each once, in
/// that order.
fn with_local(hosts: &[HostName]) -> Vec<HostName> {
    let mut all = vec![HostName::local()];
    for h in hosts {
        if !all.contains(h) {
            all.push(h.clone());
        }
    }
    all
}

/// One host of a link being made.
struct Member {
    host: HostName,
    index: u8,
    public_key: String,
    endpoint: String,
}

impl<R: Runner, H, C> Orchestrator<R, H, C> {
    /// This host's link: its state beside the host-wide network state, its keys in this home.
    fn link(&self) -> Link<'_> {
        let state = self.net.state_file().with_extension("").display().to_string() + "-link.json";
        Link::new(&self.runner, state.into(), self.home.root().join("wireguard"), &self.search_path)
            .with_ip_forward(self.net.ip_forward())
    }

    /// `n2d host link-prepare`: this host's interface for `index`, its public key, and the
    /// ends of the SSH connection it was asked over (`$SSH_CONNECTION`, the CLI's to read).
    pub fn link_prepare_here(&self, index: u8, ssh_connection: Option<&str>) -> Result<LinkPrepared> {
        n2d_net::require_root()?;
        let public_key = self.link().prepare(index)?;
        let ends = ssh_connection.and_then(parse_ssh_connection);
        Ok(LinkPrepared {
            public_key,
            ssh_client: ends.as_ref().map(|e| e.0.clone()),
            ssh_server: ends.map(|e| e.1),
        })
    }

    /// `n2d host link-up`: this host's peers, routes, bridge and chain.
    pub fn link_up_here(&self, config: &LinkConfig) -> Result<()> {
        n2d_net::require_root()?;
        Ok(self.link().up(config)?)
    }

    /// `n2d host link-down`: this host's link removed unless machines still use its bridge.
    pub fn link_down_here(&self) -> Result<Unlinked> {
        Ok(self.link().down()?)
    }

    /// The link index of `host`: 1 for `local`; a remote host's from its record, the lowest
    /// free one given (and recorded) on first use.
    pub fn link_index(&self, host: &HostName) -> Result<u8> {
        if host.is_local() {
            return Ok(LOCAL_INDEX);
        }
        let mut record = self.remote_host(host)?;
        if let Some(index) = record.link_index {
            return Ok(index);
        }
        let taken: Vec<u8> = self
            .home
            .list_remote_hosts()
            .into_iter()
            .filter_map(|(_, r)| r.ok().and_then(|r| r.link_index))
            .collect();
        let index = (LOCAL_INDEX + 1..=254)
            .find(|i| !taken.contains(i))
            .ok_or_else(|| Error::Usage("every link index (2-254) is taken: remove hosts first".into()))?;
        record.link_index = Some(index);
        self.home.save_remote_host(&record)?;
        Ok(index)
    }

    /// Links `local` and `hosts` with WireGuard, each pair with its own preshared key; returns
    /// each host's index. On failure, what was linked is unlinked again.
    pub fn link_hosts(&self, hosts: &[HostName]) -> Result<BTreeMap<HostName, u8>> {
        let all = with_local(hosts);
        let names: Vec<&str> = all.iter().map(HostName::as_str).collect();
        let step = self.progress.step(&format!("Linking hosts {} with WireGuard", names.join(", ")));
        let result = self.link_members(&all, step.as_ref());
        match result {
            Ok(indices) => {
                step.done(&format!("hosts {} linked", names.join(", ")));
                Ok(indices)
            }
            Err(e) => {
                self.unlink_hosts(&all);
                Err(e)
            }
        }
    }

    fn link_members(
        &self,
        all: &[HostName],
        step: &dyn crate::progress::ProgressStep,
    ) -> Result<BTreeMap<HostName, u8>> {
        let mut members = Vec::new();
        // The address the other hosts reach `local` at: as the first remote host sees it.
        let mut local_address = None;
        for host in all {
            let index = self.link_index(host)?;
            step.set(&format!("preparing {host}"));
            let (public_key, address) = if host.is_local() {
                (self.link_prepare_here(index, None)?.public_key, None)
            } else {
                let record = self.remote_host(host)?;
                let args = ["host", "link-prepare", "--index", &index.to_string()].map(str::to_string);
                let out = self.call_host(host, &record.url, &args, b"")?;
                let prepared: LinkPrepared =
                    serde_json::from_slice(&out).map_err(|e| RemoteError::BadAnswer {
                        name: host.clone(),
                        command: "host link-prepare".into(),
                        reason: e.to_string(),
                    })?;
                if local_address.is_none() {
                    local_address = prepared.ssh_client.clone();
                }
                (prepared.public_key, Some(prepared.ssh_server.unwrap_or(record.url.host.clone())))
            };
            members.push(Member {
                host: host.clone(),
                index,
                public_key,
                endpoint: address.unwrap_or_default(),
            });
        }
        let local_address = local_address.ok_or_else(|| {
            Error::Usage(
                "--network wireguard links this host with others: name at least one other host in --on"
                    .into(),
            )
        })?;
        for m in members.iter_mut().filter(|m| m.host.is_local()) {
            m.endpoint = endpoint(&local_address);
        }
        for m in members.iter_mut().filter(|m| !m.host.is_local()) {
            m.endpoint = endpoint(&m.endpoint);
        }
        // One preshared key per pair, made here.
        let mut psks = BTreeMap::new();
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                let psk = self.runner.run(&Cmd::new("wg", "wireguard-tools").arg("genpsk")).map_err(|e| {
                    n2d_net::NetError::Link { what: "make a preshared key".into(), source: Box::new(e) }
                })?;
                psks.insert((a.index, b.index), String::from_utf8_lossy(&psk).trim().to_string());
            }
        }
        for m in &members {
            step.set(&format!("linking {}", m.host));
            let peers = members
                .iter()
                .filter(|p| p.index != m.index)
                .map(|p| Peer {
                    index: p.index,
                    public_key: p.public_key.clone(),
                    preshared_key: psks[&(m.index.min(p.index), m.index.max(p.index))].clone(),
                    endpoint: p.endpoint.clone(),
                })
                .collect();
            let config = LinkConfig { index: m.index, peers };
            if m.host.is_local() {
                self.link_up_here(&config)?;
            } else {
                let record = self.remote_host(&m.host)?;
                let args = ["host", "link-up"].map(str::to_string);
                let stdin = serde_json::to_vec(&config).expect("a link config serializes");
                self.call_host(&m.host, &record.url, &args, &stdin)?;
            }
        }
        Ok(members.iter().map(|m| (m.host.clone(), m.index)).collect())
    }

    /// Removes the links of `local` and `hosts` whose bridge no machine uses any more; what
    /// fails is said, not returned (the machines are gone already).
    pub fn unlink_hosts(&self, hosts: &[HostName]) {
        for host in &with_local(hosts) {
            let result = if host.is_local() {
                self.link_down_here().map(|u| u == Unlinked::Removed)
            } else {
                self.remote_host(host).and_then(|record| {
                    let said =
                        self.call_host(host, &record.url, &["host".into(), "link-down".into()], b"")?;
                    Ok(String::from_utf8_lossy(&said).trim() == "removed")
                })
            };
            match result {
                Ok(true) => self.progress.say(&format!("removed the WireGuard link of host {host}")),
                Ok(false) => {}
                Err(e) => {
                    self.progress.say(&format!(
                        "warning: could not remove the WireGuard link of host {host}: {}",
                        crate::swarm::chain(&e)
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::fake::FakeSsh;
    use crate::tests::recording_orchestrator;
    use std::sync::Arc;

    type Recording =
        Orchestrator<n2d_exec::RecordingRunner, n2d_vm::fake::FakeHypervisor, n2d_swarm::fake::Cluster>;

    /// An orchestrator whose `ssh` is the returned fake, on a host without a link bridge yet.
    fn linking(dir: &std::path::Path) -> (Recording, Arc<FakeSsh>) {
        let (mut orch, _) = recording_orchestrator(dir);
        let ssh = Arc::new(FakeSsh::default());
        orch.ssh = ssh.clone();
        orch.runner.answer("ip -j -4 addr show dev n2dw0", Err("Device does not exist"));
        orch.runner.answer("ip link show dev n2dw0", Err("Device does not exist"));
        (orch, ssh)
    }

    fn add_host(orch: &Recording, name: &str, ip: &str) {
        let host = n2d_store::RemoteHost {
            name: name.parse().unwrap(),
            url: format!("ssh://root@{ip}").parse().unwrap(),
            version: crate::remote::VERSION.into(),
            network: None,
            ip_range: None,
            link_index: None,
        };
        orch.home.save_remote_host(&host).unwrap();
    }

    #[test]
    fn every_host_gets_the_others_as_peers_each_pair_its_own_preshared_key() {
        if n2d_net::require_root().is_err() {
            eprintln!("skipped: linking needs root (or CAP_NET_ADMIN)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (orch, ssh) = linking(dir.path());
        orch.runner.answer("wg show n2dwg1 public-key", Ok("PUB-LOCAL\n"));
        orch.runner.answer("ip link show dev n2dwg1", Err("Device does not exist"));
        orch.runner.answer("wg genpsk", Ok("PSK\n"));
        for (host, ip, key) in [("h2", "10.0.0.2", "PUB-H2"), ("h3", "10.0.0.3", "PUB-H3")] {
            add_host(&orch, host, ip);
            let said = format!(r#"{{"public_key":"{key}","ssh_client":"10.0.0.1","ssh_server":"{ip}"}}"#);
            ssh.answer(ip, "host link-prepare", 0, &said, "");
            ssh.answer(ip, "host link-up", 0, "", "");
        }
        let hosts: Vec<HostName> = ["h3", "h2"].iter().map(|h| h.parse().unwrap()).collect();
        let indices = orch.link_hosts(&hosts).unwrap();
        // local is 1; the others numbered in the order named, and kept.
        let index = |h: &str| indices[&h.parse::<HostName>().unwrap()];
        assert_eq!((index("local"), index("h3"), index("h2")), (1, 2, 3));
        assert_eq!(orch.remote_host(&"h3".parse().unwrap()).unwrap().link_index, Some(2));
        assert!(ssh.calls().contains(&"10.0.0.3: n2d host link-prepare --index 2".to_string()));
        let config =
            |ip: &str| -> LinkConfig { serde_json::from_slice(&ssh.stdins(ip, "host link-up")[0]).unwrap() };
        let h3 = config("10.0.0.3");
        assert_eq!(h3.index, 2);
        let peers: Vec<(u8, &str, &str)> =
            h3.peers.iter().map(|p| (p.index, p.public_key.as_str(), p.endpoint.as_str())).collect();
        // local is reached at the address h3 saw it come from; h2 at its own.
        assert_eq!(peers, [(1, "PUB-LOCAL", "10.0.0.1:51871"), (3, "PUB-H2", "10.0.0.2:51871")]);
        // Three pairs, three keys made here; each side of a pair gets the same one.
        let psks = orch.runner.calls().iter().filter(|c| c.as_str() == "wg genpsk").count();
        assert_eq!(psks, 3);
        let h2 = config("10.0.0.2");
        let shared =
            |a: &LinkConfig, b: u8| a.peers.iter().find(|p| p.index == b).unwrap().preshared_key.clone();
        assert_eq!(shared(&h3, 3), shared(&h2, 2));
        // This host's own link: its bridge in subnet 1, routes to the others' subnets.
        let calls = orch.runner.calls();
        assert!(calls.contains(&"ip addr add 10.78.1.1/24 dev n2dw0".to_string()), "{calls:#?}");
        assert!(calls.contains(&"ip route replace 10.78.2.0/24 dev n2dwg1 src 10.78.1.1".to_string()));
    }

    #[test]
    fn a_host_that_fails_its_link_unlinks_the_others() {
        if n2d_net::require_root().is_err() {
            eprintln!("skipped: linking needs root (or CAP_NET_ADMIN)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (orch, ssh) = linking(dir.path());
        orch.runner.answer("ip -j link show master n2dw0", Ok("[]"));
        add_host(&orch, "h2", "10.0.0.2");
        ssh.answer(
            "10.0.0.2",
            "host link-prepare",
            0,
            r#"{"public_key":"K","ssh_client":"10.0.0.1","ssh_server":"10.0.0.2"}"#,
            "",
        );
        ssh.answer("10.0.0.2", "host link-up", 1, "", "error: cannot add peer 10.0.0.1:51871 to n2dwg2\n");
        ssh.answer("10.0.0.2", "host link-down", 0, "removed\n", "");
        let err = orch.link_hosts(&["h2".parse().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("host h2") && err.to_string().contains("cannot add peer"), "{err}");
        assert!(ssh.calls().contains(&"10.0.0.2: n2d host link-down".to_string()));
        // This host's link went too: its state file is gone.
        assert!(orch.link().state().unwrap().is_none());
    }

    #[test]
    fn ssh_connection_gives_both_ends() {
        assert_eq!(
            parse_ssh_connection("10.99.0.1 40022 10.99.0.2 22"),
            Some(("10.99.0.1".into(), "10.99.0.2".into()))
        );
        assert_eq!(parse_ssh_connection("garbage"), None);
        assert_eq!(endpoint("10.99.0.2"), "10.99.0.2:51871");
        assert_eq!(endpoint("fd00::2"), "[fd00::2]:51871");
    }
}
