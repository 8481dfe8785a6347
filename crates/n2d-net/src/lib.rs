//! Bridge networking: a Linux bridge is the "virtual switch", one tap per VM attached to it,
//! and a static IP per VM allocated by n2d from the bridge's subnet (kept for the machine's
//! life, so its TLS certificate never goes stale). Links are managed with iproute2's `ip`,
//! through the [`Runner`] seam.

use n2d_exec::{Cmd, ExecError, Runner};
use n2d_store::{Home, NetworkRecord, StoreError};
use std::net::Ipv4Addr;

/// The subnet n2d gives the default bridge when it creates it.
pub const DEFAULT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const DEFAULT_PREFIX_LEN: u8 = 24;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bridge networking needs root (or CAP_NET_ADMIN as an ambient capability, so that ip and QEMU inherit it) to create bridges and taps: run n2d as root (e.g. with sudo)")]
    NotRoot,
    #[error("bridge {0:?} does not exist: create it, or leave out --network to use n2d's own bridge n2d0")]
    NoSuchBridge(String),
    #[error("bridge {0:?} has no IPv4 address: give it one (e.g. `ip addr add 10.78.0.1/24 dev {0}`), n2d hands out addresses from its subnet")]
    BridgeWithoutAddress(String),
    #[error("no free address left on bridge {bridge:?} ({used} in use in a /{prefix_len}): remove machines or use a bridge with a larger subnet")]
    SubnetFull { bridge: String, used: usize, prefix_len: u8 },
    #[error("cannot create bridge {bridge}")]
    CreateBridge {
        bridge: String,
        #[source]
        source: ExecError,
    },
    #[error("cannot inspect bridge {bridge}")]
    InspectBridge {
        bridge: String,
        #[source]
        source: ExecError,
    },
    #[error("cannot create tap {tap} on bridge {bridge}")]
    CreateTap {
        tap: String,
        bridge: String,
        #[source]
        source: ExecError,
    },
    #[error("cannot delete tap {tap}")]
    DeleteTap {
        tap: String,
        #[source]
        source: ExecError,
    },
    #[error("cannot save the leases of bridge {bridge}")]
    SaveLeases {
        bridge: String,
        #[source]
        source: StoreError,
    },
}

/// The first free host address of the gateway's subnet (not the network or broadcast address,
/// not the gateway, not leased).
pub fn allocate_ip(gateway: Ipv4Addr, prefix_len: u8, leased: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let (first, last) = host_range(gateway, prefix_len)?;
    (first..=last).map(Ipv4Addr::from).find(|ip| *ip != gateway && !leased.contains(ip))
}

/// How many machine addresses a subnet holds (its hosts less the gateway).
pub fn capacity(gateway: Ipv4Addr, prefix_len: u8) -> usize {
    host_range(gateway, prefix_len).map(|(a, b)| (b - a) as usize).unwrap_or(0)
}

fn host_range(gateway: Ipv4Addr, prefix_len: u8) -> Option<(u32, u32)> {
    if !(1..=30).contains(&prefix_len) {
        return None;
    }
    let mask = u32::MAX << (32 - prefix_len);
    let network = u32::from(gateway) & mask;
    Some((network + 1, (network | !mask) - 1))
}

/// A locally administered MAC derived from the machine name (QEMU's 52:54:00 prefix).
pub fn mac_for(name: &str) -> String {
    let h = fnv1a(name.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", (h >> 16) as u8, (h >> 8) as u8, h as u8)
}

/// A tap name for the machine: at most 15 bytes, as Linux requires.
pub fn tap_for(name: &str) -> String {
    format!("n2dt{:08x}", fnv1a(name.as_bytes()) as u32)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

/// Link operations, over `ip`.
pub struct Links<'a> {
    runner: &'a dyn Runner,
}

impl<'a> Links<'a> {
    pub fn new(runner: &'a dyn Runner) -> Self {
        Links { runner }
    }

    fn ip(&self, args: &[&str]) -> Result<Vec<u8>, ExecError> {
        self.runner.run(&Cmd::new("ip", "iproute2").args(args))
    }

    pub fn exists(&self, dev: &str) -> bool {
        self.ip(&["link", "show", "dev", dev]).is_ok()
    }

    /// The first IPv4 address and prefix length on `dev`.
    pub fn ipv4_of(&self, dev: &str) -> Result<Option<(Ipv4Addr, u8)>, ExecError> {
        let out = self.ip(&["-j", "-4", "addr", "show", "dev", dev])?;
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        let addr = json.get(0).and_then(|l| l.get("addr_info")).and_then(|a| a.get(0)).and_then(|a| {
            Some((a.get("local")?.as_str()?.parse().ok()?, a.get("prefixlen")?.as_u64()? as u8))
        });
        Ok(addr)
    }

    pub fn create_bridge(&self, bridge: &str, gateway: Ipv4Addr, prefix_len: u8) -> Result<(), ExecError> {
        self.ip(&["link", "add", "name", bridge, "type", "bridge"])?;
        let cidr = format!("{gateway}/{prefix_len}");
        let rest = self
            .ip(&["addr", "add", &cidr, "dev", bridge])
            .and_then(|_| self.ip(&["link", "set", "dev", bridge, "up"]));
        if rest.is_err() {
            let _ = self.delete(bridge);
        }
        rest.map(drop)
    }

    pub fn create_tap(&self, tap: &str, bridge: &str) -> Result<(), ExecError> {
        self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
        let rest = self.attach(tap, bridge);
        if rest.is_err() {
            let _ = self.delete(tap);
        }
        rest
    }

    /// Puts `dev` on `bridge` and brings it up (again, after the bridge was recreated).
    pub fn attach(&self, dev: &str, bridge: &str) -> Result<(), ExecError> {
        self.ip(&["link", "set", "dev", dev, "master", bridge])?;
        self.ip(&["link", "set", "dev", dev, "up"]).map(drop)
    }

    pub fn delete(&self, dev: &str) -> Result<(), ExecError> {
        self.ip(&["link", "del", "dev", dev]).map(drop)
    }
}

/// Outbound access for the VMs of a bridge n2d made (so `docker pull` works in the guests):
/// IPv4 forwarding, masquerading of the bridge's subnet, and FORWARD rules that let its
/// traffic through a DROP policy (which a host Docker engine sets). Like libvirt's default
/// network. Returns a warning instead of failing when iptables is missing: VMs then still work
/// among themselves and with the host.
pub fn enable_nat(runner: &dyn Runner, bridge: &str, gateway: Ipv4Addr, prefix_len: u8) -> Option<String> {
    if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1") {
        return Some(format!(
            "cannot enable IPv4 forwarding ({e}): VMs on {bridge} will not reach the internet"
        ));
    }
    add_nat_rules(runner, bridge, gateway, prefix_len)
}

fn add_nat_rules(runner: &dyn Runner, bridge: &str, gateway: Ipv4Addr, prefix_len: u8) -> Option<String> {
    for rule in nat_rules(bridge, gateway, prefix_len) {
        let iptables = |op: &str| {
            let (table, chain, spec) = &rule;
            runner.run(&Cmd::new("iptables", "iptables").args(["-t", table, op, chain]).args(spec.iter()))
        };
        // -C first: rules are added once, whatever the number of creates.
        if iptables("-C").is_err() {
            if let Err(e) = iptables("-I") {
                return Some(format!(
                    "cannot set up NAT for {bridge}: VMs will not reach the internet ({e})"
                ));
            }
        }
    }
    None
}

/// Removes what [`enable_nat`] added (forwarding stays on: other software may rely on it).
pub fn disable_nat(runner: &dyn Runner, bridge: &str, gateway: Ipv4Addr, prefix_len: u8) {
    for (table, chain, spec) in nat_rules(bridge, gateway, prefix_len) {
        let _ = runner.run(
            &Cmd::new("iptables", "iptables")
                .args(["-t", table.as_str(), "-D", chain.as_str()])
                .args(spec.iter()),
        );
    }
}

fn nat_rules(bridge: &str, gateway: Ipv4Addr, prefix_len: u8) -> Vec<(String, String, Vec<String>)> {
    let mask = u32::MAX << (32 - prefix_len.clamp(1, 32));
    let subnet = format!("{}/{prefix_len}", Ipv4Addr::from(u32::from(gateway) & mask));
    let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        ("nat".into(), "POSTROUTING".into(), v(&["-s", &subnet, "!", "-o", bridge, "-j", "MASQUERADE"])),
        ("filter".into(), "FORWARD".into(), v(&["-i", bridge, "-j", "ACCEPT"])),
        (
            "filter".into(),
            "FORWARD".into(),
            v(&["-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]),
        ),
    ]
}

/// The host's DNS servers that a guest can use: those of /etc/resolv.conf, or of
/// systemd-resolved's upstream list when /etc/resolv.conf only points at its local stub.
pub fn host_nameservers() -> Vec<Ipv4Addr> {
    let read = |p: &str| parse_nameservers(&std::fs::read_to_string(p).unwrap_or_default());
    let main = read("/etc/resolv.conf");
    if main.is_empty() {
        read("/run/systemd/resolve/resolv.conf")
    } else {
        main
    }
}

/// `nameserver` lines, without loopback addresses (a guest cannot reach the host's).
pub fn parse_nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect()
}

/// The bit of CAP_NET_ADMIN in the capability masks of /proc/PID/status.
const CAP_NET_ADMIN: u32 = 12;

/// Whether a process with this /proc/PID/status may create bridges and taps without being
/// root: n2d does it through child processes (`ip`, QEMU opening its tap), which keep
/// CAP_NET_ADMIN only when it is in the ambient set.
pub fn net_admin_inherited(proc_status: &str) -> bool {
    proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapAmb:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << CAP_NET_ADMIN) != 0)
}

/// Root, or CAP_NET_ADMIN that the tools n2d runs inherit (see [`net_admin_inherited`]).
pub fn require_root() -> Result<(), NetError> {
    let status = || std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if rustix::process::geteuid().is_root() || net_admin_inherited(&status()) {
        Ok(())
    } else {
        Err(NetError::NotRoot)
    }
}

/// Makes sure `bridge` exists and has a record, creating n2d's default bridge when absent.
/// The caller holds the state lock.
pub fn ensure_bridge(
    home: &Home,
    runner: &dyn Runner,
    bridge: &str,
    may_create: bool,
) -> Result<NetworkRecord, NetError> {
    require_root()?;
    let links = Links::new(runner);
    let save = |rec: &NetworkRecord| {
        home.save_network(rec).map_err(|source| NetError::SaveLeases { bridge: bridge.to_string(), source })
    };
    let known =
        home.load_network(bridge).map_err(|source| NetError::SaveLeases { bridge: bridge.into(), source })?;
    if links.exists(bridge) {
        if let Some(rec) = known {
            return Ok(rec);
        }
        let (gateway, prefix_len) = links
            .ipv4_of(bridge)
            .map_err(|source| NetError::InspectBridge { bridge: bridge.into(), source })?
            .ok_or_else(|| NetError::BridgeWithoutAddress(bridge.into()))?;
        let rec = NetworkRecord {
            bridge: bridge.into(),
            gateway,
            prefix_len,
            created_by_n2d: false,
            leases: Default::default(),
        };
        save(&rec)?;
        return Ok(rec);
    }
    if !may_create {
        return Err(NetError::NoSuchBridge(bridge.into()));
    }
    // Recreate with the recorded subnet, so leases stay valid (e.g. after a host reboot).
    let mut rec = known.unwrap_or(NetworkRecord {
        bridge: bridge.into(),
        gateway: DEFAULT_GATEWAY,
        prefix_len: DEFAULT_PREFIX_LEN,
        created_by_n2d: true,
        leases: Default::default(),
    });
    links
        .create_bridge(bridge, rec.gateway, rec.prefix_len)
        .map_err(|source| NetError::CreateBridge { bridge: bridge.into(), source })?;
    if let Some(warning) = enable_nat(runner, bridge, rec.gateway, rec.prefix_len) {
        eprintln!("warning: {warning}");
    }
    rec.created_by_n2d = true;
    save(&rec)?;
    Ok(rec)
}

/// Leases an address on the bridge for `machine` (the same one again if it already has one).
pub fn lease(home: &Home, net: &mut NetworkRecord, machine: &str) -> Result<Ipv4Addr, NetError> {
    if let Some(ip) = net.leases.get(machine) {
        return Ok(*ip);
    }
    let used: Vec<Ipv4Addr> = net.leases.values().copied().collect();
    let ip = allocate_ip(net.gateway, net.prefix_len, &used).ok_or_else(|| NetError::SubnetFull {
        bridge: net.bridge.clone(),
        used: used.len(),
        prefix_len: net.prefix_len,
    })?;
    net.leases.insert(machine.to_string(), ip);
    home.save_network(net).map_err(|source| NetError::SaveLeases { bridge: net.bridge.clone(), source })?;
    Ok(ip)
}

/// Gives `machine`'s address back. The caller holds the state lock.
pub fn release(home: &Home, bridge: &str, machine: &str) -> Result<(), NetError> {
    let err = |source| NetError::SaveLeases { bridge: bridge.to_string(), source };
    if let Some(mut net) = home.load_network(bridge).map_err(err)? {
        if net.leases.remove(machine).is_some() {
            home.save_network(&net).map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use n2d_exec::RecordingRunner;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    #[test]
    fn net_admin_must_be_ambient() {
        let status = |eff: &str, amb: &str| format!("Name:\tn2d\nCapEff:\t{eff}\nCapAmb:\t{amb}\n");
        assert!(net_admin_inherited(&status("0000000000001000", "0000000000001000")));
        assert!(!net_admin_inherited(&status("0000000000001000", "0000000000000000")));
        assert!(!net_admin_inherited(&status("000001ffffffffff", "0000000000000400")));
        assert!(!net_admin_inherited(""));
    }

    #[test]
    fn allocation_skips_gateway_network_broadcast_and_leases() {
        assert_eq!(allocate_ip(GW, 24, &[]), Some(Ipv4Addr::new(10, 77, 0, 2)));
        let used = [Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 4)];
        assert_eq!(allocate_ip(GW, 24, &used), Some(Ipv4Addr::new(10, 77, 0, 3)));
        // A /30 has two hosts: the gateway and one machine.
        assert_eq!(allocate_ip(GW, 30, &[]), Some(Ipv4Addr::new(10, 77, 0, 2)));
        assert_eq!(allocate_ip(GW, 30, &[Ipv4Addr::new(10, 77, 0, 2)]), None);
        // Gateway in the middle of the range.
        let gw = Ipv4Addr::new(192, 168, 5, 77);
        assert_eq!(allocate_ip(gw, 24, &[]), Some(Ipv4Addr::new(192, 168, 5, 1)));
        assert_eq!(capacity(GW, 24), 253);
        assert_eq!(capacity(GW, 30), 1);
        assert_eq!(capacity(GW, 31), 0);
    }

    #[test]
    fn leases_are_stable_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let mut net = NetworkRecord {
            bridge: "n2d0".into(),
            gateway: GW,
            prefix_len: 29,
            created_by_n2d: true,
            leases: Default::default(),
        };
        let a = lease(&home, &mut net, "a").unwrap();
        let b = lease(&home, &mut net, "b").unwrap();
        assert_ne!(a, b);
        assert_eq!(lease(&home, &mut net, "a").unwrap(), a);
        release(&home, "n2d0", "a").unwrap();
        let saved = home.load_network("n2d0").unwrap().unwrap();
        assert_eq!(saved.leases.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn full_subnet_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let mut net = NetworkRecord {
            bridge: "br9".into(),
            gateway: GW,
            prefix_len: 30,
            created_by_n2d: false,
            leases: Default::default(),
        };
        lease(&home, &mut net, "a").unwrap();
        let err = lease(&home, &mut net, "b").unwrap_err();
        assert!(err.to_string().contains("no free address left on bridge \"br9\""), "{err}");
    }

    #[test]
    fn names_fit_linux_and_mac_rules() {
        let tap = tap_for(&"x".repeat(63));
        assert!(tap.len() <= 15, "{tap}");
        assert_ne!(tap_for("a"), tap_for("b"));
        let mac = mac_for("h1");
        assert!(mac.starts_with("52:54:00:") && mac.len() == 17, "{mac}");
        assert_eq!(mac, mac_for("h1"));
    }

    #[test]
    fn tap_creation_rolls_back_when_attaching_fails() {
        let r = RecordingRunner::default();
        r.answer("master", Err("no such bridge"));
        assert!(Links::new(&r).create_tap("n2dt1", "n2d0").is_err());
        assert_eq!(
            r.calls(),
            [
                "ip tuntap add dev n2dt1 mode tap",
                "ip link set dev n2dt1 master n2d0",
                "ip link del dev n2dt1"
            ]
        );
    }

    #[test]
    fn nat_rules_are_added_once_and_removed() {
        let r = RecordingRunner::default();
        // The masquerading rule exists already; the FORWARD rules do not.
        r.answer("-C FORWARD", Err("Bad rule"));
        assert_eq!(add_nat_rules(&r, "n2d0", GW, 24), None);
        let calls = r.calls();
        assert_eq!(calls[0], "iptables -t nat -C POSTROUTING -s 10.77.0.0/24 ! -o n2d0 -j MASQUERADE");
        let inserted: Vec<&String> = calls.iter().filter(|c| c.contains(" -I ")).collect();
        assert_eq!(inserted.len(), 2, "{calls:?}");
        assert!(inserted.iter().all(|c| c.contains("-I FORWARD")));

        let r = RecordingRunner::default();
        disable_nat(&r, "n2d0", GW, 24);
        let calls = r.calls();
        assert_eq!(calls.len(), 3);
        assert!(calls.iter().all(|c| c.starts_with("iptables -t ") && c.contains(" -D ")), "{calls:?}");
    }

    #[test]
    fn missing_iptables_is_a_warning_not_an_error() {
        let r = RecordingRunner::default();
        r.answer("iptables", Err("not installed"));
        let warning = add_nat_rules(&r, "n2d0", GW, 24).unwrap();
        assert!(warning.contains("will not reach the internet"), "{warning}");
    }

    #[test]
    fn guests_get_the_hosts_non_loopback_nameservers() {
        let text =
            "# generated\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nsearch lan\nnameserver ::1\n";
        assert_eq!(parse_nameservers(text), [Ipv4Addr::new(10, 255, 255, 53)]);
    }

    #[test]
    fn bridge_address_is_read_from_ip_json() {
        let r = RecordingRunner::default();
        r.answer(
            "addr show",
            Ok(r#"[{"ifname":"br0","addr_info":[{"family":"inet","local":"10.9.0.1","prefixlen":16}]}]"#),
        );
        assert_eq!(Links::new(&r).ipv4_of("br0").unwrap(), Some((Ipv4Addr::new(10, 9, 0, 1), 16)));
    }
}
