//! Bridge networking: a Linux bridge is the "virtual switch", one tap per VM attached to it,
//! and a static IP per VM allocated by n2d from the bridge's subnet (kept for the machine's
//! life, so its TLS certificate never goes stale). Links are managed with iproute2's `ip`,
//! through the [`Runner`] seam. Who holds what is host-wide state ([`host`]); outbound access
//! lives in n2d's own iptables chains ([`nat`]).

#![forbid(unsafe_code)]

pub mod faults;
pub mod host;
pub mod ipjson;
pub mod nat;
#[cfg(any(test, feature = "fakes"))]
pub mod testing;
pub mod user;
pub mod wireguard;

use n2d_exec::{Cmd, ExecError, Runner};
use n2d_spec::address::IpRange;
pub use n2d_spec::machine::DEFAULT_BRIDGE;
use n2d_store::StoreError;
use std::net::Ipv4Addr;
use std::path::Path;

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
    #[error("no free address left on bridge {bridge:?} in {range} ({used} in use on the bridge): remove machines, or give a larger --ip-range or a bridge with a larger subnet")]
    SubnetFull { bridge: String, used: usize, range: String },
    #[error("{dev:?} is a {kind} link, not a bridge: --network takes a Linux bridge (e.g. `ip link add br0 type bridge`), or leave it out to use n2d's own bridge n2d0")]
    NotABridge { dev: String, kind: String },
    #[error("n2d did not create bridge {bridge:?} ({subnet}), so it cannot know which of its addresses are free (a router or another host may use them): give the addresses its machines may take with --ip ADDRESS or --ip-range FIRST-LAST (ip_range: in a cluster file)")]
    AdoptedBridgeNeedsRange { bridge: String, subnet: String },
    #[error("the addresses {range} are not all usable on bridge {bridge:?} ({subnet}, gateway {gateway}): give addresses inside its subnet, other than the gateway, network and broadcast addresses")]
    RangeOutsideSubnet { range: String, bridge: String, subnet: String, gateway: Ipv4Addr },
    #[error(
        "address {ip} on bridge {bridge:?} is held by {holder}: choose another (--ip) or remove that machine"
    )]
    AddressTaken { ip: Ipv4Addr, bridge: String, holder: String },
    #[error("cannot tell which network namespace n2d runs in (/proc/self/ns/net)")]
    Namespace(#[source] std::io::Error),
    #[error("cannot use n2d's host-wide network state in {path}")]
    HostState {
        path: std::path::PathBuf,
        #[source]
        source: StoreError,
    },
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
    #[error("{path} is {reason}: n2d keeps the host-wide network state there, so it must be a directory owned by you or root that no one else may write (chown/chmod go-w it, or point $N2D_RUN_DIR elsewhere)")]
    UnsafeRunDir { path: std::path::PathBuf, reason: String },
    #[error("n2d's host-wide state for bridge {bridge} is damaged ({problem}): n2d does not act on it; remove the bridge's entry from the state file in $N2D_RUN_DIR (/run/n2d) if nothing uses it")]
    DamagedState { bridge: String, problem: String },
    #[error("refusing {what}")]
    UnsafeName {
        what: String,
        #[source]
        source: n2d_spec::link::LinkNameError,
    },
    #[error("cannot {what}")]
    Link {
        what: String,
        #[source]
        source: Box<ExecError>,
    },
    #[error("cannot write {path}")]
    LinkKey {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("this host has no WireGuard: the kernel has no wireguard module and wireguard-go is not installed: install wireguard-tools, and wireguard-go where the kernel lacks the module (apt-get install wireguard-tools wireguard-go)")]
    NoWireGuard,
    #[error("wireguard-go did not make {dev}: {said}")]
    UserspaceWireGuard { dev: String, said: String },
    #[error("bridge n2dw0 exists with {found}, not the {want} n2d links this host with: remove it (`ip link del n2dw0`) if nothing uses it")]
    LinkBridgeClash { found: String, want: String },
    #[error("cannot delete tap {tap}")]
    DeleteTap {
        tap: String,
        #[source]
        source: ExecError,
    },
}

impl NetError {
    /// Whether the user's input is at fault (a usage error, exit 2), not the host.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            NetError::NoSuchBridge(_)
                | NetError::NotABridge { .. }
                | NetError::AdoptedBridgeNeedsRange { .. }
                | NetError::RangeOutsideSubnet { .. }
                | NetError::AddressTaken { .. }
        )
    }
}

pub(crate) fn host_range(gateway: Ipv4Addr, prefix_len: u8) -> Option<(u32, u32)> {
    if !(1..=30).contains(&prefix_len) {
        return None;
    }
    let mask = u32::MAX << (32 - prefix_len);
    let network = u32::from(gateway) & mask;
    Some((network + 1, (network | !mask) - 1))
}

/// The addresses a machine may be given in the subnet of `gateway`/`prefix_len`: its hosts less
/// the gateway, within `range` when given. Bridges and the user-mode segment share it.
pub(crate) fn candidates(
    gateway: Ipv4Addr,
    prefix_len: u8,
    range: Option<IpRange>,
) -> impl Iterator<Item = Ipv4Addr> {
    let (first, last) = host_range(gateway, prefix_len).unwrap_or((1, 0));
    (first..=last)
        .map(Ipv4Addr::from)
        .filter(move |ip| *ip != gateway && range.is_none_or(|r| r.contains(*ip)))
}

/// A locally administered MAC (QEMU's 52:54:00 prefix) derived from the home, the machine
/// name and a salt (the next one is tried when a hash clashes with another lease).
pub fn mac_for(home: &Path, name: &str, salt: u32) -> String {
    let h = identity_hash(home, name, salt) >> 32;
    format!("52:54:00:{:02x}:{:02x}:{:02x}", (h >> 16) as u8, (h >> 8) as u8, h as u8)
}

/// A tap name for the machine of a home: at most 15 bytes, as Linux requires.
pub fn tap_for(home: &Path, name: &str, salt: u32) -> String {
    n2d_spec::link::n2d_tap_name(identity_hash(home, name, salt) as u32)
}

fn identity_hash(home: &Path, name: &str, salt: u32) -> u64 {
    let salt = salt.to_le_bytes();
    let bytes = home.as_os_str().as_encoded_bytes().iter().chain(b"\0").chain(name.as_bytes()).chain(&salt);
    bytes.fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
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

    /// What kind of link `dev` is (`bridge`, `tun`, `veth`; `ether` or `loopback` for a plain
    /// device), or `None` when it does not exist.
    pub fn kind_of(&self, dev: &str) -> Option<String> {
        let out = self.ip(&["-j", "-d", "link", "show", "dev", dev]).ok()?;
        Some(ipjson::link_kind(&out))
    }

    /// The first IPv4 address and prefix length on `dev`.
    pub fn ipv4_of(&self, dev: &str) -> Result<Option<(Ipv4Addr, u8)>, ExecError> {
        let out = self.ip(&["-j", "-4", "addr", "show", "dev", dev])?;
        Ok(ipjson::first_ipv4(&out))
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

#[cfg(test)]
mod tests {
    use super::*;
    use n2d_exec::RecordingRunner;

    #[test]
    fn net_admin_must_be_ambient() {
        let status = |eff: &str, amb: &str| format!("Name:\tn2d\nCapEff:\t{eff}\nCapAmb:\t{amb}\n");
        assert!(net_admin_inherited(&status("0000000000001000", "0000000000001000")));
        assert!(!net_admin_inherited(&status("0000000000001000", "0000000000000000")));
        assert!(!net_admin_inherited(&status("000001ffffffffff", "0000000000000400")));
        assert!(!net_admin_inherited(""));
    }

    #[test]
    fn names_fit_linux_and_mac_rules() {
        let home = Path::new("/root/.local/share/n2d");
        let tap = tap_for(home, &"x".repeat(63), 0);
        assert!(tap.len() <= 15, "{tap}");
        assert_ne!(tap_for(home, "a", 0), tap_for(home, "b", 0));
        let mac = mac_for(home, "h1", 0);
        assert!(mac.starts_with("52:54:00:") && mac.len() == 17, "{mac}");
        assert_eq!(mac, mac_for(home, "h1", 0));
        // Two homes' machines of the same name, or another salt, get other names.
        let other = Path::new("/home/ann/.local/share/n2d");
        assert_ne!(tap_for(home, "h1", 0), tap_for(other, "h1", 0));
        assert_ne!(mac, mac_for(other, "h1", 0));
        assert_ne!(tap_for(home, "h1", 0), tap_for(home, "h1", 1));
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
