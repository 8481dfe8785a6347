//! Host identity (hostname, /etc/hosts, resolv.conf) and the NIC configuration.

use crate::console;
use crate::dhcp;
use crate::error::{write_err, Error, Result};
use crate::iproute::ip;
use crate::log::info;
use crate::sys::{poll, System};
use n2d_proto::{Addressing, GuestConfig};
use std::time::Duration;

/// How long the boot waits for a first DHCP lease before it goes on without an address (the
/// supervisor keeps asking).
pub const DHCP_AT_BOOT: Duration = Duration::from_secs(20);

pub fn write_identity(sys: &dyn System, config: &GuestConfig) -> Result<()> {
    let name = &config.hostname;
    sys.sethostname(name).map_err(|source| Error::SetHostname { name: name.clone(), source })?;
    let files = [
        ("/etc/hostname", format!("{name}\n")),
        (
            "/etc/hosts",
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{name}\n",
                // A DHCP guest does not know its address yet: Debian's convention.
                config.network.static_address().unwrap_or(std::net::Ipv4Addr::new(127, 0, 1, 1))
            ),
        ),
        ("/etc/resolv.conf", config.network.dns.iter().map(|ip| format!("nameserver {ip}\n")).collect()),
    ];
    for (path, text) in files {
        sys.write_file(path, text.as_bytes(), 0o644).map_err(write_err(path))?;
    }
    Ok(())
}

/// The interface whose MAC address is `mac` (case-insensitive).
pub fn find_interface(sys: &dyn System, mac: &str) -> Option<String> {
    sys.read_dir("/sys/class/net").ok()?.into_iter().find(|ifname| {
        sys.read_file(&format!("/sys/class/net/{ifname}/address"))
            .is_ok_and(|a| String::from_utf8_lossy(&a).trim().eq_ignore_ascii_case(mac.trim()))
    })
}

/// The MAC address of `ifname`, lower-case.
pub fn mac_of(sys: &dyn System, ifname: &str) -> Option<String> {
    let mac = sys.read_file(&format!("/sys/class/net/{ifname}/address")).ok()?;
    Some(String::from_utf8_lossy(&mac).trim().to_ascii_lowercase())
}

/// The first Ethernet NIC by name: ARP type 1 with a device behind it (not lo, not a bridge,
/// veth or tunnel someone made).
pub fn first_ethernet(sys: &dyn System) -> Option<String> {
    sys.read_dir("/sys/class/net").ok()?.into_iter().find(|ifname| {
        sys.read_file(&format!("/sys/class/net/{ifname}/type"))
            .is_ok_and(|t| String::from_utf8_lossy(&t).trim() == "1")
            && sys.exists(&format!("/sys/class/net/{ifname}/device"))
    })
}

/// [`first_ethernet`], waited for (a NIC driver may still be probing).
pub fn wait_first_ethernet(sys: &dyn System) -> Option<String> {
    poll(sys, Duration::from_secs(10), Duration::from_millis(100), || first_ethernet(sys))
}

/// The interface with `mac`, waited for (virtio-net may still be probing).
fn wait_interface(sys: &dyn System, mac: &str) -> Result<String> {
    poll(sys, Duration::from_secs(5), Duration::from_millis(100), || find_interface(sys, mac))
        .ok_or_else(|| Error::NicNotFound { mac: mac.to_string() })
}

/// The configured NIC, and its DHCP client when it leases its address.
#[derive(Debug)]
pub struct Configured {
    pub ifname: String,
    pub dhcp: Option<dhcp::Session>,
}

impl Configured {
    /// The NIC's address now, if it has one.
    pub fn address(&self, config: &GuestConfig) -> Option<std::net::Ipv4Addr> {
        match &self.dhcp {
            Some(session) => session.lease.as_ref().map(|l| l.address),
            None => config.network.static_address(),
        }
    }
}

/// Brings up the machine's NIC (the one with the config's MAC, or the first Ethernet NIC when
/// it names none) with its static address or a DHCP lease, and, under user-mode networking, the
/// uplink that carries the default route and the host's forwards (`n2d_proto::uplink`).
pub fn configure(sys: &dyn System, config: &GuestConfig) -> Result<Configured> {
    let net = &config.network;
    bring_up_loopback(sys)?;
    let ifname = if net.mac.is_empty() {
        wait_first_ethernet(sys).ok_or(Error::NoEthernet)?
    } else {
        wait_interface(sys, &net.mac)?
    };
    ip(sys, &["link", "set", &ifname, "up"])?;
    let Addressing::Static { address, prefix_len, gateway } = net.addressing else {
        return Ok(Configured { dhcp: Some(lease(sys, config, &ifname)), ifname });
    };
    ip(sys, &["addr", "add", &format!("{address}/{prefix_len}"), "dev", &ifname])?;
    info!("network: {ifname} {address}/{prefix_len}");
    console::announce(sys, &format!("{} {address}", n2d_proto::ADDRESS_MARKER));
    let gateway = match &config.uplink {
        Some(uplink) => {
            use n2d_proto::uplink::{GATEWAY, GUEST, PREFIX_LEN};
            let up = wait_interface(sys, &uplink.mac)?;
            // Before the link is up: no moment where the host's loopback is open.
            guard_uplink(sys)?;
            ip(sys, &["link", "set", &up, "up"])?;
            ip(sys, &["addr", "add", &format!("{GUEST}/{PREFIX_LEN}"), "dev", &up])?;
            info!("uplink: {up} {GUEST}/{PREFIX_LEN}");
            Some(GATEWAY)
        }
        None => gateway,
    };
    if let Some(gateway) = gateway {
        ip(sys, &["route", "add", "default", "via", &gateway.to_string()])?;
    }
    Ok(Configured { ifname, dhcp: None })
}

/// `lo` up: all the network a template has (its NICs stay down, without an address, until a
/// clone takes its identity).
pub fn bring_up_loopback(sys: &dyn System) -> Result<()> {
    ip(sys, &["link", "set", "lo", "up"])
}

/// A clone's NICs are its template's, MACs included: each (the NIC, and the uplink if both
/// configs have one) is found by the template's MAC (the template's NIC: the first Ethernet
/// NIC when its config names none), set down and given the clone's MAC, so that [`configure`]
/// then finds it by the clone's. All are found before any is changed.
pub fn assign_clone_macs(sys: &dyn System, template: &GuestConfig, clone: &GuestConfig) -> Result<()> {
    let mut pairs = vec![(template.network.mac.as_str(), clone.network.mac.as_str())];
    if let (Some(old), Some(new)) = (&template.uplink, &clone.uplink) {
        pairs.push((&old.mac, &new.mac));
    }
    let mut nics = Vec::new();
    for (old, new) in pairs {
        let found = if old.is_empty() { first_ethernet(sys) } else { find_interface(sys, old) };
        let ifname = found.ok_or_else(|| Error::NicNotFound { mac: old.to_string() })?;
        nics.push((ifname, new));
    }
    for (ifname, mac) in nics {
        ip(sys, &["link", "set", "dev", &ifname, "down"])?;
        ip(sys, &["link", "set", "dev", &ifname, "address", mac])?;
        info!("network: {ifname} now has MAC {mac}");
    }
    Ok(())
}

/// The iptables chain (raw table) that keeps the guest off the host's loopback.
pub const UPLINK_GUARD_CHAIN: &str = "N2D-UPLINK";

/// The `iptables` argument lists of the uplink's guard, in order. slirp hands every TCP
/// connection and UDP datagram addressed to its network (`n2d_proto::uplink`) to the host's
/// 127.0.0.1 (its DNS address to the host's resolvers), so a guest could reach every service
/// listening on the host's loopback; QEMU does not expose libslirp's `disable_host_loopback`
/// and `restrict=on` also cuts the internet. So the guest drops, before they reach slirp,
/// TCP connection openings (SYN without ACK) and UDP datagrams to that network, except DNS on
/// its DNS address. Stateless (no conntrack): the host's forwards come in to the guest's own
/// address (exempt), their replies (SYN-ACK and after) pass, and so does the internet (not in
/// that network). In the raw table, which
/// dockerd neither flushes nor rewrites; PREROUTING covers containers' routed traffic,
/// OUTPUT the guest's own (and `--network host` containers').
pub fn uplink_guard_rules() -> Vec<Vec<String>> {
    use n2d_proto::uplink::{DNS, GUEST, NETWORK, PREFIX_LEN};
    let chain = UPLINK_GUARD_CHAIN;
    let net = format!("{NETWORK}/{PREFIX_LEN}");
    let dns = format!("{DNS}/32");
    let guest = format!("{GUEST}/32");
    let rules: Vec<Vec<&str>> = vec![
        vec!["-N", chain],
        // The guest's own address: where the host's forwards come in.
        vec!["-A", chain, "-d", &guest, "-j", "RETURN"],
        vec!["-A", chain, "-d", &dns, "-p", "udp", "--dport", "53", "-j", "RETURN"],
        vec!["-A", chain, "-d", &dns, "-p", "tcp", "--dport", "53", "-j", "RETURN"],
        vec!["-A", chain, "-p", "tcp", "--syn", "-j", "DROP"],
        vec!["-A", chain, "-p", "udp", "-j", "DROP"],
        vec!["-I", "OUTPUT", "1", "-d", &net, "-j", chain],
        vec!["-I", "PREROUTING", "1", "-d", &net, "-j", chain],
    ];
    rules
        .into_iter()
        .map(|r| ["-w", "-t", "raw"].into_iter().chain(r).map(str::to_string).collect())
        .collect()
}

/// Installs [`uplink_guard_rules`]; a failure is fatal (the boot stops rather than run a guest
/// that reaches the host's loopback).
fn guard_uplink(sys: &dyn System) -> Result<()> {
    for rule in uplink_guard_rules() {
        let args: Vec<&str> = rule.iter().map(String::as_str).collect();
        let command = format!("iptables {}", rule.join(" "));
        match sys.run("iptables", &args) {
            Ok(exit) if exit.success() => {}
            Ok(exit) => return Err(Error::CommandFailed { command, exit }),
            Err(source) => return Err(Error::RunCommand { command, source }),
        }
    }
    info!("uplink: new connections to {} dropped but DNS", n2d_proto::uplink::NETWORK);
    Ok(())
}

/// The first lease, within [`DHCP_AT_BOOT`]; without one the boot goes on (Docker still serves
/// its local socket) and the session asks again from the supervisor's loop.
fn lease(sys: &dyn System, config: &GuestConfig, ifname: &str) -> dhcp::Session {
    let mac = mac_of(sys, ifname).as_deref().and_then(dhcp::parse_mac).unwrap_or_default();
    let client = dhcp::Client { ifname: ifname.into(), mac, hostname: config.hostname.clone() };
    let fixed_dns = !config.network.dns.is_empty();
    let lease = match dhcp::obtain(sys, &client, DHCP_AT_BOOT) {
        Ok(lease) => match dhcp::apply(sys, ifname, &lease, None, fixed_dns) {
            Ok(()) => {
                info!(
                    "network: {ifname} {}/{} (DHCP from {})",
                    lease.address, lease.prefix_len, lease.server
                );
                dhcp::announce(sys, ifname, &lease);
                Some(lease)
            }
            Err(e) => {
                info!("network: applying the DHCP lease on {ifname}: {}", crate::error::chain(&e));
                None
            }
        },
        Err(e) => {
            info!("network: {e}; going on without an address, asking again every 30 s");
            console::announce(
                sys,
                &format!("n2d: no DHCP lease on {ifname} yet; Docker serves its local socket meanwhile"),
            );
            None
        }
    };
    dhcp::Session::new(client, lease, sys.now(), fixed_dns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_config;
    use crate::sys::fake::FakeSystem;

    fn set_gateway(config: &mut GuestConfig, to: Option<std::net::Ipv4Addr>) {
        let Addressing::Static { gateway, .. } = &mut config.network.addressing else { panic!("static") };
        *gateway = to;
    }

    fn with_nics() -> FakeSystem {
        let sys = FakeSystem::new();
        sys.add_file("/sys/class/net/lo/address", "00:00:00:00:00:00\n");
        sys.add_file("/sys/class/net/eth0/address", "52:54:00:aa:aa:aa\n");
        sys.add_file("/sys/class/net/eth1/address", "52:54:00:12:34:56\n");
        sys
    }

    #[test]
    fn configures_the_nic_with_the_configured_mac() {
        let sys = with_nics();
        assert_eq!(configure(&sys, &sample_config()).unwrap().ifname, "eth1");
        assert_eq!(
            sys.calls(),
            [
                "run ip link set lo up",
                "run ip link set eth1 up",
                "run ip addr add 10.77.0.2/24 dev eth1",
                "run ip route add default via 10.77.0.1",
            ]
        );
    }

    #[test]
    fn no_gateway_means_no_default_route_and_missing_nic_is_fatal() {
        let sys = with_nics();
        let mut config = sample_config();
        set_gateway(&mut config, None);
        configure(&sys, &config).unwrap();
        assert!(!sys.calls().iter().any(|c| c.contains("route")));

        config.network.mac = "52:54:00:ff:ff:ff".into();
        assert!(matches!(configure(&sys, &config), Err(Error::NicNotFound { .. })));
    }

    #[test]
    fn the_uplink_carries_the_default_route() {
        let sys = with_nics();
        let mut config = sample_config();
        config.network.mac = "52:54:00:aa:aa:aa".into();
        set_gateway(&mut config, None);
        config.uplink = Some(n2d_proto::GuestUplink { mac: "52:54:00:12:34:56".into() });
        assert_eq!(configure(&sys, &config).unwrap().ifname, "eth0");
        assert_eq!(
            sys.calls(),
            [
                "run ip link set lo up",
                "run ip link set eth0 up",
                "run ip addr add 10.77.0.2/24 dev eth0",
                "run iptables -w -t raw -N N2D-UPLINK",
                "run iptables -w -t raw -A N2D-UPLINK -d 100.64.77.15/32 -j RETURN",
                "run iptables -w -t raw -A N2D-UPLINK -d 100.64.77.3/32 -p udp --dport 53 -j RETURN",
                "run iptables -w -t raw -A N2D-UPLINK -d 100.64.77.3/32 -p tcp --dport 53 -j RETURN",
                "run iptables -w -t raw -A N2D-UPLINK -p tcp --syn -j DROP",
                "run iptables -w -t raw -A N2D-UPLINK -p udp -j DROP",
                "run iptables -w -t raw -I OUTPUT 1 -d 100.64.77.0/24 -j N2D-UPLINK",
                "run iptables -w -t raw -I PREROUTING 1 -d 100.64.77.0/24 -j N2D-UPLINK",
                "run ip link set eth1 up",
                "run ip addr add 100.64.77.15/24 dev eth1",
                "run ip route add default via 100.64.77.2",
            ]
        );
        config.uplink = Some(n2d_proto::GuestUplink { mac: "52:54:00:ff:ff:ff".into() });
        assert!(matches!(configure(&sys, &config), Err(Error::NicNotFound { .. })));
    }

    #[test]
    fn an_uplink_whose_guard_cannot_be_set_stops_the_boot_before_the_link_is_up() {
        let sys = with_nics();
        sys.state.borrow_mut().run_exits.insert("iptables".into(), crate::sys::Exit::Code(4));
        let mut config = sample_config();
        config.network.mac = "52:54:00:aa:aa:aa".into();
        config.uplink = Some(n2d_proto::GuestUplink { mac: "52:54:00:12:34:56".into() });
        let err = configure(&sys, &config).unwrap_err();
        assert!(
            matches!(&err, Error::CommandFailed { command, .. } if command.contains("N2D-UPLINK")),
            "{err}"
        );
        assert!(!sys.calls().iter().any(|c| c.contains("eth1 up")), "{:?}", sys.calls());
    }

    /// A packet as the guard's rules see it.
    struct Packet {
        dst: std::net::Ipv4Addr,
        proto: &'static str,
        dport: u16,
        /// TCP: SYN without ACK (a connection's opening).
        syn: bool,
    }

    /// What [`uplink_guard_rules`] do with `p` (through OUTPUT or PREROUTING, the same jump):
    /// a small interpreter of exactly the options they use, so the test checks behaviour.
    fn verdict(p: &Packet) -> &'static str {
        let in_net = |cidr: &str, ip: std::net::Ipv4Addr| {
            let (net, len) = cidr.split_once('/').unwrap();
            let (net, len): (std::net::Ipv4Addr, u32) = (net.parse().unwrap(), len.parse().unwrap());
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(ip) & mask == u32::from(net) & mask
        };
        let rules = uplink_guard_rules();
        let matches = |rule: &[String]| {
            let mut i = 0;
            while i < rule.len() {
                let ok = match rule[i].as_str() {
                    "-d" => in_net(&rule[i + 1], p.dst),
                    "-p" => rule[i + 1] == p.proto,
                    "--dport" => rule[i + 1].parse::<u16>().unwrap() == p.dport,
                    "--syn" => p.syn,
                    _ => true,
                };
                if !ok {
                    return false;
                }
                i += if rule[i] == "--syn" { 1 } else { 2 };
            }
            true
        };
        let rule_of = |rule: &Vec<String>, op: &str, chain: &str| {
            let at = rule.iter().position(|a| a == op)?;
            (rule[at + 1] == chain).then(|| rule[at + 2..].to_vec())
        };
        for hook in ["OUTPUT", "PREROUTING"] {
            let jump = rules.iter().find_map(|r| rule_of(r, "-I", hook)).unwrap();
            // `-I CHAIN 1 ...`: the position first.
            if !matches(&jump[1..]) {
                continue;
            }
            for rule in rules.iter().filter_map(|r| rule_of(r, "-A", UPLINK_GUARD_CHAIN)) {
                if matches(&rule) {
                    match rule.last().unwrap().as_str() {
                        "DROP" => return "drop",
                        "RETURN" => break,
                        other => panic!("unexpected target {other}"),
                    }
                }
            }
        }
        "pass"
    }

    #[test]
    fn the_uplink_guard_drops_new_connections_to_the_host_but_not_dns_replies_or_the_internet() {
        let ip = |s: &str| s.parse().unwrap();
        let tcp = |dst: &str, dport: u16, syn: bool| Packet { dst: ip(dst), proto: "tcp", dport, syn };
        let udp = |dst: &str, dport: u16| Packet { dst: ip(dst), proto: "udp", dport, syn: false };
        // Hostile: every address of slirp's network is the host's 127.0.0.1.
        for hostile in [
            tcp("100.64.77.2", 22, true),     // the host's address: its sshd on loopback
            tcp("100.64.77.2", 12376, true),  // another machine's Docker API forward
            tcp("100.64.77.1", 5432, true),   // any other address of the network
            tcp("100.64.77.254", 6379, true), // the top of it
            tcp("100.64.77.0", 80, true),     // its network address
            tcp("100.64.77.3", 8080, true),   // the DNS address, another port: the resolver's host
            udp("100.64.77.2", 53),           // DNS, but to the host's address
            udp("100.64.77.3", 123),          // the DNS address, another UDP port
            udp("100.64.77.255", 161),        // broadcast
            udp("100.64.77.2", 67),           // slirp's own DHCP server
        ] {
            assert_eq!(verdict(&hostile), "drop", "{} {}:{}", hostile.proto, hostile.dst, hostile.dport);
        }
        for fine in [
            udp("100.64.77.3", 53),           // DNS
            tcp("100.64.77.3", 53, true),     // DNS over TCP
            tcp("100.64.77.2", 40000, false), // a forward's reply (SYN-ACK, then ACKs)
            tcp("100.64.77.15", 2376, true),  // a forward's opening, coming in to the guest
            tcp("1.1.1.1", 443, true),        // the internet
            udp("9.9.9.9", 53),               // another resolver
            tcp("10.77.0.3", 2377, true),     // the switch's network: swarm
            tcp("100.64.78.2", 80, true),     // just outside the uplink's network
        ] {
            assert_eq!(verdict(&fine), "pass", "{} {}:{}", fine.proto, fine.dst, fine.dport);
        }
    }

    #[test]
    fn dhcp_on_the_first_ethernet_nic_when_no_mac_is_named() {
        let sys = FakeSystem::new();
        sys.add_file("/sys/class/net/docker0/type", "1\n");
        sys.add_file("/sys/class/net/lo/type", "772\n");
        sys.add_dir("/sys/class/net/lo/device");
        sys.add_file("/sys/class/net/ens3/type", "1\n");
        sys.add_file("/sys/class/net/ens3/address", "52:54:00:AB:CD:EF\n");
        sys.add_dir("/sys/class/net/ens3/device");
        sys.state.borrow_mut().dhcp_server = Some(Box::new(crate::dhcp::tests::server(3600)));
        let mut config = sample_config();
        config.network =
            n2d_proto::GuestNetwork { mac: String::new(), addressing: Addressing::Dhcp, dns: vec![] };
        let net = configure(&sys, &config).unwrap();
        assert_eq!(net.ifname, "ens3");
        let session = net.dhcp.as_ref().unwrap();
        assert_eq!(session.client.mac, crate::dhcp::tests::MAC);
        assert_eq!(net.address(&config), Some("10.9.0.50".parse().unwrap()));
        assert_eq!(
            sys.calls(),
            [
                "run ip link set lo up",
                "run ip link set ens3 up",
                "dhcp socket ens3",
                "run ip addr replace 10.9.0.50/24 dev ens3",
                "run ip route replace default via 10.9.0.1 dev ens3",
                "write /etc/resolv.conf",
            ]
        );
    }

    #[test]
    fn no_lease_is_not_fatal_and_config_dns_wins_over_the_lease() {
        let sys = with_nics();
        sys.state.borrow_mut().dhcp_server = Some(Box::new(|_: &[u8]| vec![]));
        let mut config = sample_config();
        config.network.addressing = Addressing::Dhcp;
        let net = configure(&sys, &config).unwrap();
        assert!(net.dhcp.as_ref().unwrap().lease.is_none());
        assert_eq!(net.address(&config), None);
        assert!(sys.now() >= DHCP_AT_BOOT);

        let sys = with_nics();
        sys.state.borrow_mut().dhcp_server = Some(Box::new(crate::dhcp::tests::server(3600)));
        configure(&sys, &config).unwrap();
        assert!(!sys.calls().iter().any(|c| c.contains("resolv.conf")), "{:?}", sys.calls());
    }

    #[test]
    fn identity_files() {
        let sys = FakeSystem::new();
        let mut config = sample_config();
        write_identity(&sys, &config).unwrap();
        assert_eq!(sys.file_text("/etc/hostname"), "node-1\n");
        assert!(sys.file_text("/etc/hosts").contains("10.77.0.2\tnode-1\n"));
        assert_eq!(sys.file_text("/etc/resolv.conf"), "nameserver 10.77.0.1\nnameserver 1.1.1.1\n");
        config.network.dns.clear();
        write_identity(&sys, &config).unwrap();
        assert_eq!(sys.file_text("/etc/resolv.conf"), "");
    }
}
