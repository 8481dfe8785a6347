//! WireGuard links between hosts (`n2d swarm create --on ... --network wireguard`), for hosts
//! with no bridge on a shared LAN: each host gets its own bridge [`LINK_BRIDGE`] with its own
//! subnet (10.78.K.0/24 for the host's link index K), and a WireGuard interface
//! `n2dwgK` whose peers are the other hosts, each allowed its subnet and routed to through it.
//! Forwarding between the bridge and the interface is allowed in n2d's own chain
//! ([`LINK_CHAIN`], jumped to from the end of FORWARD); nothing is masqueraded, so swarm nodes
//! see each other's real addresses.
//!
//! The interface is the kernel's (`ip link add ... type wireguard`) where the module exists,
//! else `wireguard-go` (the userspace implementation), started in the foreground as n2d's own
//! child and recorded, like virtiofsd. Keys: each host's private key is made on that host
//! (`wg genkey`) and never leaves it; each pair of hosts shares a preshared key made for that
//! link by the home that links them and sent over SSH. The interface name carries the index
//! because wireguard-go's control socket (`/var/run/wireguard/NAME.sock`) is per name, not per
//! network namespace.

use crate::{Links, NetError};
use n2d_exec::{Cmd, ExecError, Runner};
use n2d_spec::address::IpRange;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The bridge linked machines attach to, on every host.
pub const LINK_BRIDGE: &str = "n2dw0";
/// The filter chain that lets the bridge and the WireGuard interface forward to each other.
pub const LINK_CHAIN: &str = "N2D-LINK";
/// The UDP port every host's interface listens on.
pub const LINK_PORT: u16 = 51871;
/// The network name that asks for linked bridges (`--network wireguard`).
pub const WIREGUARD_NETWORK: &str = "wireguard";

/// `n2dwgK`.
pub fn interface_name(index: u8) -> String {
    format!("n2dwg{index}")
}

/// The host's address on its link bridge: its machines' gateway.
pub fn gateway(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, index, 1)
}

/// `10.78.K.0/24`.
pub fn subnet(index: u8) -> String {
    format!("10.78.{index}.0/24")
}

/// The addresses machines on that host's link bridge take.
pub fn machine_range(index: u8) -> IpRange {
    IpRange { first: Ipv4Addr::new(10, 78, index, 2), last: Ipv4Addr::new(10, 78, index, 254) }
}

/// One other host, as a host's interface sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Its link index (its subnet is [`subnet`] of it).
    pub index: u8,
    pub public_key: String,
    /// Made for this pair of hosts only.
    pub preshared_key: String,
    /// `ADDRESS:PORT` where its interface listens.
    pub endpoint: String,
}

/// What one host's link is to be (`n2d host link-up` reads it on stdin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    pub index: u8,
    pub peers: Vec<Peer>,
}

/// What n2d made on a host for its link (`<run dir>/netns-<inode>-link.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub index: u8,
    /// wireguard-go's pid, where the kernel has no WireGuard.
    #[serde(default)]
    pub userspace_pid: Option<u32>,
    /// Whether n2d turned IPv4 forwarding on for the link.
    #[serde(default)]
    pub forwarding_turned_on: bool,
}

/// What `down` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlinked {
    /// The interface, routes, chain and bridge are gone.
    Removed,
    /// Machines still use the bridge (this many taps): everything stays.
    InUse(usize),
    /// This host had no link.
    NotLinked,
}

/// One host's link: its state file, its private key's directory, its tools.
pub struct Link<'a> {
    runner: &'a dyn Runner,
    state_file: PathBuf,
    /// Holds `private.key` and the peers' preshared keys, readable by the user only.
    key_dir: PathBuf,
    /// Where `wireguard-go` is looked for.
    search_path: &'a n2d_exec::SearchPath,
    ip_forward: PathBuf,
}

fn wg(runner: &dyn Runner, args: &[&str]) -> Result<Vec<u8>, ExecError> {
    runner.run(&Cmd::new("wg", "wireguard-tools").args(args))
}

fn iptables(runner: &dyn Runner, args: &[&str]) -> Result<Vec<u8>, ExecError> {
    runner.run(&Cmd::new("iptables", "iptables").args(["-w", "5", "-t", "filter"]).args(args))
}

/// The rules of [`LINK_CHAIN`] for interface `wg`.
pub fn chain_rules(wg: &str) -> Vec<Vec<String>> {
    let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        v(&["-i", LINK_BRIDGE, "-o", LINK_BRIDGE, "-j", "ACCEPT"]),
        v(&["-i", LINK_BRIDGE, "-o", wg, "-j", "ACCEPT"]),
        v(&["-i", wg, "-o", LINK_BRIDGE, "-j", "ACCEPT"]),
    ]
}

fn failed(what: &str, source: ExecError) -> NetError {
    NetError::Link { what: what.to_string(), source: Box::new(source) }
}

impl<'a> Link<'a> {
    pub fn new(
        runner: &'a dyn Runner,
        state_file: PathBuf,
        key_dir: PathBuf,
        search_path: &'a n2d_exec::SearchPath,
    ) -> Self {
        Link { runner, state_file, key_dir, search_path, ip_forward: PathBuf::from(crate::host::IP_FORWARD) }
    }

    /// Tests use a plain file for the forwarding switch.
    pub fn with_ip_forward(mut self, path: impl Into<PathBuf>) -> Self {
        self.ip_forward = path.into();
        self
    }

    pub fn state(&self) -> Result<Option<LinkState>, NetError> {
        n2d_store::read_json_opt(&self.state_file)
            .map_err(|source| NetError::HostState { path: self.state_file.clone(), source })
    }

    fn save(&self, state: &LinkState) -> Result<(), NetError> {
        n2d_store::write_json(&self.state_file, state)
            .map_err(|source| NetError::HostState { path: self.state_file.clone(), source })
    }

    fn key_file(&self, name: &str) -> PathBuf {
        self.key_dir.join(name)
    }

    /// Writes a key file readable by the user only.
    fn write_key(&self, name: &str, key: &str) -> Result<PathBuf, NetError> {
        let path = self.key_file(name);
        let io = |source| NetError::LinkKey { path: path.clone(), source };
        n2d_store::ensure_dir(&self.key_dir)
            .map_err(|source| NetError::HostState { path: self.key_dir.clone(), source })?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        f.write_all(format!("{}\n", key.trim()).as_bytes()).map_err(io)?;
        Ok(path)
    }

    /// Makes sure this host's interface for `index` exists, with its private key (made here
    /// on first use) and port, and up; returns its public key.
    pub fn prepare(&self, index: u8) -> Result<String, NetError> {
        let mut state = match self.state()? {
            // Another index: this host was linked by another home's numbering; start over.
            Some(s) if s.index != index => {
                self.down()?;
                LinkState { index, ..Default::default() }
            }
            Some(s) => s,
            None => LinkState { index, ..Default::default() },
        };
        let key = self.key_file("private.key");
        if !key.exists() {
            let made = wg(self.runner, &["genkey"]).map_err(|e| failed("make a WireGuard key", e))?;
            self.write_key("private.key", &String::from_utf8_lossy(&made))?;
        }
        let dev = interface_name(index);
        let links = Links::new(self.runner);
        if !links.exists(&dev) {
            state.userspace_pid = None;
            if self
                .runner
                .run(&Cmd::new("ip", "iproute2").args(["link", "add", &dev, "type", "wireguard"]))
                .is_err()
            {
                state.userspace_pid = Some(self.start_userspace(&dev)?);
            }
            // Recorded at once: a failure below leaves something `down` must find.
            self.save(&state)?;
        }
        let key_text = key.display().to_string();
        let port = LINK_PORT.to_string();
        wg(self.runner, &["set", &dev, "listen-port", &port, "private-key", &key_text])
            .map_err(|e| failed(&format!("configure {dev}"), e))?;
        self.runner
            .run(&Cmd::new("ip", "iproute2").args(["link", "set", "dev", &dev, "up"]))
            .map_err(|e| failed(&format!("bring up {dev}"), e))?;
        self.save(&state)?;
        let public = wg(self.runner, &["show", &dev, "public-key"])
            .map_err(|e| failed(&format!("read {dev}'s public key"), e))?;
        Ok(String::from_utf8_lossy(&public).trim().to_string())
    }

    /// wireguard-go in the foreground (daemonized, it does not survive in a network namespace),
    /// in its own process group, its output in a log beside the state file; returns its pid
    /// once the interface exists.
    fn start_userspace(&self, dev: &str) -> Result<u32, NetError> {
        let Some(binary) = self.search_path.find("wireguard-go") else {
            return Err(NetError::NoWireGuard);
        };
        let log_path = self.state_file.with_extension("log");
        let io = |source| NetError::LinkKey { path: log_path.clone(), source };
        let log = std::fs::File::create(&log_path).map_err(io)?;
        let err_log = log.try_clone().map_err(io)?;
        let child = std::process::Command::new(&binary)
            .args(["-f", dev])
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .process_group(0)
            .spawn()
            .map_err(|source| NetError::LinkKey { path: binary.clone(), source })?;
        let pid = child.id();
        // Reaped by whoever outlives it (n2d exits long before the link goes).
        drop(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let links = Links::new(self.runner);
        while !links.exists(dev) {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')));
            if !alive || Instant::now() >= deadline {
                stop_userspace(pid, dev);
                let said = std::fs::read(&log_path).unwrap_or_default();
                return Err(NetError::UserspaceWireGuard { dev: dev.into(), said: n2d_exec::tail(&said, 4) });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(pid)
    }

    /// Sets this host's peers (others are removed), routes to their subnets, its link bridge,
    /// forwarding between the two and IPv4 forwarding. [`Self::prepare`] runs first.
    pub fn up(&self, config: &LinkConfig) -> Result<(), NetError> {
        self.prepare(config.index)?;
        let mut state = self.state()?.unwrap_or_default();
        let dev = interface_name(config.index);
        let links = Links::new(self.runner);
        match links.ipv4_of(LINK_BRIDGE) {
            Ok(Some((ip, 24))) if ip == gateway(config.index) => {}
            Ok(Some((ip, len))) => {
                return Err(NetError::LinkBridgeClash {
                    found: format!("{ip}/{len}"),
                    want: format!("{}/24", gateway(config.index)),
                })
            }
            _ if links.exists(LINK_BRIDGE) => {
                return Err(NetError::LinkBridgeClash {
                    found: "no address".into(),
                    want: format!("{}/24", gateway(config.index)),
                })
            }
            _ => links
                .create_bridge(LINK_BRIDGE, gateway(config.index), 24)
                .map_err(|source| NetError::CreateBridge { bridge: LINK_BRIDGE.into(), source })?,
        }
        let listed = wg(self.runner, &["show", &dev, "peers"])
            .map_err(|e| failed(&format!("list {dev}'s peers"), e))?;
        for old in String::from_utf8_lossy(&listed).split_whitespace() {
            if !config.peers.iter().any(|p| p.public_key == old) {
                wg(self.runner, &["set", &dev, "peer", old, "remove"])
                    .map_err(|e| failed(&format!("remove a peer of {dev}"), e))?;
            }
        }
        for peer in &config.peers {
            let psk = self.write_key(&format!("psk-{}", peer.index), &peer.preshared_key)?;
            let (psk, allowed) = (psk.display().to_string(), subnet(peer.index));
            wg(
                self.runner,
                &[
                    "set",
                    &dev,
                    "peer",
                    &peer.public_key,
                    "preshared-key",
                    &psk,
                    "endpoint",
                    &peer.endpoint,
                    "allowed-ips",
                    &allowed,
                    "persistent-keepalive",
                    "25",
                ],
            )
            .map_err(|e| failed(&format!("add peer {} to {dev}", peer.endpoint), e))?;
            // From this host's own link address: a peer accepts only its subnet from it, and
            // replies come back the same way.
            let src = gateway(config.index).to_string();
            self.runner
                .run(
                    &Cmd::new("ip", "iproute2")
                        .args(["route", "replace", &allowed, "dev", &dev, "src", &src]),
                )
                .map_err(|e| failed(&format!("route {allowed} through {dev}"), e))?;
        }
        // The chain, refilled; its jump appended once (after Docker's and the admin's rules).
        if iptables(self.runner, &["-N", LINK_CHAIN]).is_err() {
            iptables(self.runner, &["-F", LINK_CHAIN]).map_err(|e| failed("empty chain N2D-LINK", e))?;
        }
        for rule in chain_rules(&dev) {
            let args: Vec<&str> =
                ["-A", LINK_CHAIN].into_iter().chain(rule.iter().map(String::as_str)).collect();
            iptables(self.runner, &args).map_err(|e| failed("fill chain N2D-LINK", e))?;
        }
        if iptables(self.runner, &["-C", "FORWARD", "-j", LINK_CHAIN]).is_err() {
            iptables(self.runner, &["-A", "FORWARD", "-j", LINK_CHAIN])
                .map_err(|e| failed("jump to N2D-LINK", e))?;
        }
        if std::fs::read_to_string(&self.ip_forward).is_ok_and(|v| v.trim() == "0") {
            std::fs::write(&self.ip_forward, b"1")
                .map_err(|source| NetError::LinkKey { path: self.ip_forward.clone(), source })?;
            state.forwarding_turned_on = true;
        }
        self.save(&state)
    }

    /// Removes this host's link unless machines still use its bridge.
    pub fn down(&self) -> Result<Unlinked, NetError> {
        let Some(state) = self.state()? else { return Ok(Unlinked::NotLinked) };
        let links = Links::new(self.runner);
        let ports = self
            .runner
            .run(&Cmd::new("ip", "iproute2").args(["-j", "link", "show", "master", LINK_BRIDGE]))
            .map(|out| crate::ipjson::count_links(&out))
            .unwrap_or(0);
        if ports > 0 {
            return Ok(Unlinked::InUse(ports));
        }
        let dev = interface_name(state.index);
        if iptables(self.runner, &["-C", "FORWARD", "-j", LINK_CHAIN]).is_ok() {
            let _ = iptables(self.runner, &["-D", "FORWARD", "-j", LINK_CHAIN]);
        }
        let _ = iptables(self.runner, &["-F", LINK_CHAIN]);
        let _ = iptables(self.runner, &["-X", LINK_CHAIN]);
        if let Some(pid) = state.userspace_pid {
            stop_userspace(pid, &dev);
        }
        if links.exists(&dev) {
            links.delete(&dev).map_err(|e| failed(&format!("delete {dev}"), e))?;
        }
        if links.exists(LINK_BRIDGE) {
            links.delete(LINK_BRIDGE).map_err(|e| failed(&format!("delete {LINK_BRIDGE}"), e))?;
        }
        if state.forwarding_turned_on {
            let _ = std::fs::write(&self.ip_forward, b"0");
        }
        let _ = std::fs::remove_file(self.state_file.with_extension("log"));
        std::fs::remove_file(&self.state_file)
            .map_err(|source| NetError::LinkKey { path: self.state_file.clone(), source })?;
        Ok(Unlinked::Removed)
    }
}

/// Ends wireguard-go `pid` if it still is the one serving `dev` (a reused pid is left alone),
/// and waits a little for its interface to go.
fn stop_userspace(pid: u32, dev: &str) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args.first().is_some_and(|a| a.ends_with(b"wireguard-go")) && args.contains(&dev.as_bytes());
    if !ours {
        return;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Path::new(&format!("/proc/{}", pid.as_raw_nonzero())).exists() && Instant::now() < deadline {
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use n2d_exec::RecordingRunner;

    fn link<'a>(runner: &'a RecordingRunner, dir: &Path, search: &'a n2d_exec::SearchPath) -> Link<'a> {
        std::fs::write(dir.join("ip_forward"), "0\n").unwrap();
        Link::new(runner, dir.join("netns-1-link.json"), dir.join("keys"), search)
            .with_ip_forward(dir.join("ip_forward"))
    }

    #[test]
    fn subnets_and_names_follow_the_index() {
        assert_eq!(interface_name(3), "n2dwg3");
        assert_eq!(subnet(3), "10.78.3.0/24");
        assert_eq!(gateway(3), Ipv4Addr::new(10, 78, 3, 1));
        assert_eq!(machine_range(3).to_string(), "10.78.3.2-10.78.3.254");
        // The bridge name is a valid link name (at most 15 bytes) for every index.
        assert!(interface_name(254).len() <= 15);
    }

    #[test]
    fn up_keys_peers_routes_chain_and_forwarding() {
        let dir = tempfile::tempdir().unwrap();
        let runner = RecordingRunner::default();
        runner.answer("wg genkey", Ok("PRIVATE\n"));
        runner.answer("wg show n2dwg2 public-key", Ok("PUB2\n"));
        runner.answer("wg show n2dwg2 peers", Ok("STALE\nPUB1\n"));
        // No n2dwg2 yet (then made by the kernel), no bridge yet.
        runner.answer("ip link show dev n2dwg2", Err("Device does not exist"));
        runner.answer("ip -j -4 addr show dev n2dw0", Err("Device does not exist"));
        runner.answer("ip link show dev n2dw0", Err("Device does not exist"));
        runner.answer("iptables -w 5 -t filter -C FORWARD", Err("no such rule"));
        let search = n2d_exec::SearchPath::new([]);
        let link = link(&runner, dir.path(), &search);
        let config = LinkConfig {
            index: 2,
            peers: vec![Peer {
                index: 1,
                public_key: "PUB1".into(),
                preshared_key: "PSK12".into(),
                endpoint: "10.0.0.1:51871".into(),
            }],
        };
        link.up(&config).unwrap();
        let calls = runner.calls();
        let key = dir.path().join("keys/private.key");
        let psk = dir.path().join("keys/psk-1");
        for expected in [
            "wg genkey".to_string(),
            "ip link add n2dwg2 type wireguard".into(),
            format!("wg set n2dwg2 listen-port 51871 private-key {}", key.display()),
            "ip link add name n2dw0 type bridge".into(),
            "ip addr add 10.78.2.1/24 dev n2dw0".into(),
            "wg set n2dwg2 peer STALE remove".into(),
            format!("wg set n2dwg2 peer PUB1 preshared-key {} endpoint 10.0.0.1:51871 allowed-ips 10.78.1.0/24 persistent-keepalive 25", psk.display()),
            "ip route replace 10.78.1.0/24 dev n2dwg2 src 10.78.2.1".into(),
            "iptables -w 5 -t filter -A N2D-LINK -i n2dw0 -o n2dwg2 -j ACCEPT".into(),
            "iptables -w 5 -t filter -A FORWARD -j N2D-LINK".into(),
        ] {
            assert!(calls.contains(&expected), "{expected} not in {calls:#?}");
        }
        assert!(!calls.iter().any(|c| c.contains("peer PUB1 remove")));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&psk).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "PRIVATE\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("ip_forward")).unwrap(), "1");
        let state = link.state().unwrap().unwrap();
        assert_eq!(state, LinkState { index: 2, userspace_pid: None, forwarding_turned_on: true });
    }

    #[test]
    fn a_bridge_of_another_subnet_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let runner = RecordingRunner::default();
        runner.answer(
            "ip -j -4 addr show dev n2dw0",
            Ok(r#"[{"ifname":"n2dw0","addr_info":[{"family":"inet","local":"192.168.5.1","prefixlen":24}]}]"#),
        );
        let search = n2d_exec::SearchPath::new([]);
        let err = link(&runner, dir.path(), &search).up(&LinkConfig { index: 2, peers: vec![] }).unwrap_err();
        assert!(err.to_string().contains("192.168.5.1/24"), "{err}");
    }

    #[test]
    fn without_the_module_or_wireguard_go_the_error_says_what_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let runner = RecordingRunner::default();
        runner.answer("ip link show dev n2dwg1", Err("Device does not exist"));
        runner.answer("ip link add n2dwg1 type wireguard", Err("Unknown device type"));
        let search = n2d_exec::SearchPath::new([dir.path().to_path_buf()]);
        let err = link(&runner, dir.path(), &search).prepare(1).unwrap_err();
        assert!(matches!(err, NetError::NoWireGuard), "{err}");
        assert!(err.to_string().contains("wireguard-go"), "{err}");
    }

    #[test]
    fn down_leaves_a_bridge_in_use_and_removes_an_idle_one() {
        let dir = tempfile::tempdir().unwrap();
        let runner = RecordingRunner::default();
        let search = n2d_exec::SearchPath::new([]);
        let link = link(&runner, dir.path(), &search);
        assert_eq!(link.down().unwrap(), Unlinked::NotLinked);
        link.save(&LinkState { index: 2, userspace_pid: None, forwarding_turned_on: true }).unwrap();
        runner.answer("ip -j link show master n2dw0", Ok(r#"[{"ifname":"tap1"}]"#));
        assert_eq!(link.down().unwrap(), Unlinked::InUse(1));
        assert!(link.state().unwrap().is_some());
        // First answer wins: an idle bridge is another runner's.
        let runner = RecordingRunner::default();
        runner.answer("ip -j link show master n2dw0", Ok("[]"));
        let link = super::Link { runner: &runner, ..link };
        assert_eq!(link.down().unwrap(), Unlinked::Removed);
        let calls = runner.calls();
        for expected in [
            "iptables -w 5 -t filter -D FORWARD -j N2D-LINK",
            "iptables -w 5 -t filter -X N2D-LINK",
            "ip link del dev n2dwg2",
            "ip link del dev n2dw0",
        ] {
            assert!(calls.iter().any(|c| c == expected), "{expected} not in {calls:#?}");
        }
        assert!(link.state().unwrap().is_none());
        assert_eq!(std::fs::read_to_string(dir.path().join("ip_forward")).unwrap(), "0");
    }
}
