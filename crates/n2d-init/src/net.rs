//! Host identity (hostname, /etc/hosts, resolv.conf) and the NIC configuration.

use crate::error::{write_err, Error, Result};
use crate::log::info;
use crate::sys::{poll, System};
use n2d_proto::{Addressing, GuestConfig};
use std::time::Duration;

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

fn ip(sys: &dyn System, args: &[&str]) -> Result<()> {
    let command = format!("ip {}", args.join(" "));
    match sys.run("ip", args) {
        Ok(exit) if exit.success() => Ok(()),
        Ok(exit) => Err(Error::CommandFailed { command, exit }),
        Err(source) => Err(Error::RunCommand { command, source }),
    }
}

/// The interface with `mac`, waited for (virtio-net may still be probing).
fn wait_interface(sys: &dyn System, mac: &str) -> Result<String> {
    poll(sys, Duration::from_secs(5), Duration::from_millis(100), || find_interface(sys, mac))
        .ok_or_else(|| Error::NicNotFound { mac: mac.to_string() })
}

/// Brings up the machine's NIC (and, under user-mode networking, the uplink that carries the
/// default route and the host's forwards: `n2d_proto::uplink`). Returns the machine's NIC.
pub fn configure(sys: &dyn System, config: &GuestConfig) -> Result<String> {
    let net = &config.network;
    ip(sys, &["link", "set", "lo", "up"])?;
    let ifname = wait_interface(sys, &net.mac)?;
    ip(sys, &["link", "set", &ifname, "up"])?;
    let Addressing::Static { address, prefix_len, gateway } = net.addressing else {
        return Err(Error::DhcpUnsupported);
    };
    ip(sys, &["addr", "add", &format!("{address}/{prefix_len}"), "dev", &ifname])?;
    info!("network: {ifname} {address}/{prefix_len}");
    let gateway = match &config.uplink {
        Some(uplink) => {
            use n2d_proto::uplink::{GATEWAY, GUEST, PREFIX_LEN};
            let up = wait_interface(sys, &uplink.mac)?;
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
    Ok(ifname)
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
        assert_eq!(configure(&sys, &sample_config()).unwrap(), "eth1");
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
        assert_eq!(configure(&sys, &config).unwrap(), "eth0");
        assert_eq!(
            sys.calls(),
            [
                "run ip link set lo up",
                "run ip link set eth0 up",
                "run ip addr add 10.77.0.2/24 dev eth0",
                "run ip link set eth1 up",
                "run ip addr add 100.64.77.15/24 dev eth1",
                "run ip route add default via 100.64.77.2",
            ]
        );
        config.uplink = Some(n2d_proto::GuestUplink { mac: "52:54:00:ff:ff:ff".into() });
        assert!(matches!(configure(&sys, &config), Err(Error::NicNotFound { .. })));
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
