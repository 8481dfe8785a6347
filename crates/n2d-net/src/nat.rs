//! Forwarding for the VMs of a bridge n2d made, in n2d's own iptables chains, one pair per
//! bridge:
//!
//! * `N2D-FWD-<bridge>` (filter), jumped to from the end of FORWARD. It decides every forwarded
//!   packet to or from the bridge, whatever the FORWARD policy: traffic between the bridge's
//!   ports (which passes FORWARD when `br_netfilter` is loaded, as a host Docker engine does),
//!   new connections to the machines that asked for it (`--expose`), the bridge's subnet out
//!   through its uplink, replies both ways; then DROP of everything else to or from the bridge:
//!   new connections from the LAN or other bridges to the VMs, and the VMs' traffic to any other
//!   interface or network the host routes.
//! * `N2D-NAT-<bridge>` (nat), jumped to from the end of POSTROUTING: masquerading of the
//!   subnet on the uplink.
//!
//! The jumps are appended, never inserted: Docker's `DOCKER-USER` chain and an administrator's
//! own rules come first and win. Rules are written as `iptables -S` prints them. Removing a
//! bridge removes its chains and jumps, and nothing else.

use n2d_exec::{Cmd, ExecError, Runner};
use std::net::Ipv4Addr;

/// The filter chain of `bridge` (at most 23 characters: iptables allows 28).
pub fn forward_chain(bridge: &str) -> String {
    format!("N2D-FWD-{bridge}")
}

/// The nat chain of `bridge`.
pub fn nat_chain(bridge: &str) -> String {
    format!("N2D-NAT-{bridge}")
}

/// `10.77.0.0/24` for gateway 10.77.0.1 and prefix length 24.
pub fn subnet_text(gateway: Ipv4Addr, prefix_len: u8) -> String {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len.clamp(1, 32))).unwrap_or(0);
    format!("{}/{prefix_len}", Ipv4Addr::from(u32::from(gateway) & mask))
}

/// The rule that accepts new connections to an exposed machine (`--expose`).
pub fn expose_rule(bridge: &str, ip: Ipv4Addr) -> Vec<String> {
    ["-d", &format!("{ip}/32"), "-o", bridge, "-j", "ACCEPT"].map(str::to_string).to_vec()
}

/// The last rule of a complete forward chain: its presence tells a complete chain from one flushed
/// or cut short by hand.
pub fn final_rule(bridge: &str) -> Vec<String> {
    ["-i", bridge, "-j", "DROP"].map(str::to_string).to_vec()
}

/// The rules of each chain, as iptables arguments after `-A CHAIN`: the forward chain and the
/// nat chain. `exposed`: the machines that accept new connections from outside the bridge.
pub fn rules(
    bridge: &str,
    subnet: &str,
    uplink: Option<&str>,
    exposed: &[Ipv4Addr],
) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut forward = vec![v(&["-i", bridge, "-o", bridge, "-j", "ACCEPT"])];
    forward.extend(exposed.iter().map(|ip| expose_rule(bridge, *ip)));
    let mut nat = Vec::new();
    if let Some(up) = uplink {
        forward.push(v(&["-s", subnet, "-i", bridge, "-o", up, "-j", "ACCEPT"]));
        nat.push(v(&["-s", subnet, "-o", up, "-j", "MASQUERADE"]));
    }
    for dir in ["-o", "-i"] {
        forward.push(v(&[
            dir,
            bridge,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ]));
    }
    forward.push(v(&["-o", bridge, "-j", "DROP"]));
    forward.push(final_rule(bridge));
    (forward, nat)
}

fn iptables(runner: &dyn Runner, table: &str, args: &[&str]) -> Result<Vec<u8>, ExecError> {
    // -w: wait for the xtables lock rather than fail when Docker or firewalld holds it.
    runner.run(&Cmd::new("iptables", "iptables").args(["-w", "5", "-t", table]).args(args))
}

/// Creates (or refills) the bridge's chains and appends their jumps once.
pub fn install(
    runner: &dyn Runner,
    bridge: &str,
    subnet: &str,
    uplink: Option<&str>,
    exposed: &[Ipv4Addr],
) -> Result<(), ExecError> {
    let (forward, nat) = rules(bridge, subnet, uplink, exposed);
    for (table, parent, chain, rules) in [
        ("filter", "FORWARD", forward_chain(bridge), forward),
        ("nat", "POSTROUTING", nat_chain(bridge), nat),
    ] {
        if rules.is_empty() {
            continue;
        }
        // -N fails when the chain exists (left by a crash): then it is emptied instead.
        if iptables(runner, table, &["-N", &chain]).is_err() {
            iptables(runner, table, &["-F", &chain])?;
        }
        for rule in &rules {
            let args: Vec<&str> =
                ["-A", chain.as_str()].into_iter().chain(rule.iter().map(String::as_str)).collect();
            iptables(runner, table, &args)?;
        }
        if iptables(runner, table, &["-C", parent, "-j", &chain]).is_err() {
            iptables(runner, table, &["-A", parent, "-j", &chain])?;
        }
    }
    Ok(())
}

/// Whether the bridge's forward chain is complete and jumped to (false after a flush by hand or
/// a firewall reload, or when its DROP rules were deleted).
pub fn intact(runner: &dyn Runner, bridge: &str) -> bool {
    let chain = forward_chain(bridge);
    let last = final_rule(bridge);
    let check: Vec<&str> =
        ["-C", chain.as_str()].into_iter().chain(last.iter().map(String::as_str)).collect();
    iptables(runner, "filter", &check).is_ok()
        && iptables(runner, "filter", &["-C", "FORWARD", "-j", &chain]).is_ok()
}

/// Lets new connections from outside the bridge reach `ip` (`--expose`): its rule goes first in
/// the bridge's chain, once.
pub fn expose(runner: &dyn Runner, bridge: &str, ip: Ipv4Addr) -> Result<(), ExecError> {
    let chain = forward_chain(bridge);
    let rule = expose_rule(bridge, ip);
    let with = |op: &'static str, pos: Option<&'static str>| -> Vec<&str> {
        [op, chain.as_str()].into_iter().chain(pos).chain(rule.iter().map(String::as_str)).collect()
    };
    if iptables(runner, "filter", &with("-C", None)).is_err() {
        iptables(runner, "filter", &with("-I", Some("1")))?;
    }
    Ok(())
}

/// Takes back [`expose`] (every copy of the rule; none is fine).
pub fn unexpose(runner: &dyn Runner, bridge: &str, ip: Ipv4Addr) {
    let chain = forward_chain(bridge);
    let rule = expose_rule(bridge, ip);
    let args: Vec<&str> = ["-D", chain.as_str()].into_iter().chain(rule.iter().map(String::as_str)).collect();
    for _ in 0..8 {
        if iptables(runner, "filter", &args).is_err() {
            break;
        }
    }
}

/// Removes the bridge's jumps and chains (whatever of them exists).
pub fn remove(runner: &dyn Runner, bridge: &str) {
    for (table, parent, chain) in
        [("filter", "FORWARD", forward_chain(bridge)), ("nat", "POSTROUTING", nat_chain(bridge))]
    {
        // A jump added twice (by hand, or a crash between -C and -A) is removed twice.
        for _ in 0..8 {
            if iptables(runner, table, &["-D", parent, "-j", &chain]).is_err() {
                break;
            }
        }
        let _ = iptables(runner, table, &["-F", &chain]);
        let _ = iptables(runner, table, &["-X", &chain]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use n2d_exec::RecordingRunner;

    #[test]
    fn chains_are_limited_to_the_subnet_and_uplink_and_appended() {
        let r = RecordingRunner::default();
        r.answer("-C FORWARD", Err("Bad rule"));
        r.answer("-C POSTROUTING", Err("Bad rule"));
        install(&r, "n2d0", "10.77.0.0/24", Some("eth0"), &[]).unwrap();
        let calls = r.calls();
        let want = [
            "iptables -w 5 -t filter -N N2D-FWD-n2d0",
            "iptables -w 5 -t filter -A N2D-FWD-n2d0 -i n2d0 -o n2d0 -j ACCEPT",
            "iptables -w 5 -t filter -A N2D-FWD-n2d0 -s 10.77.0.0/24 -i n2d0 -o eth0 -j ACCEPT",
            "iptables -w 5 -t filter -A N2D-FWD-n2d0 -o n2d0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "iptables -w 5 -t filter -A N2D-FWD-n2d0 -i n2d0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "iptables -w 5 -t filter -A N2D-FWD-n2d0 -o n2d0 -j DROP",
            "iptables -w 5 -t filter -A N2D-FWD-n2d0 -i n2d0 -j DROP",
            "iptables -w 5 -t filter -C FORWARD -j N2D-FWD-n2d0",
            "iptables -w 5 -t filter -A FORWARD -j N2D-FWD-n2d0",
            "iptables -w 5 -t nat -N N2D-NAT-n2d0",
            "iptables -w 5 -t nat -A N2D-NAT-n2d0 -s 10.77.0.0/24 -o eth0 -j MASQUERADE",
            "iptables -w 5 -t nat -C POSTROUTING -j N2D-NAT-n2d0",
            "iptables -w 5 -t nat -A POSTROUTING -j N2D-NAT-n2d0",
        ];
        assert_eq!(calls, want);
        // Nothing is ever inserted ahead of DOCKER-USER or an administrator's rules.
        assert!(calls.iter().all(|c| !c.contains(" -I ")), "{calls:?}");
    }

    #[test]
    fn whatever_the_policy_only_the_bridge_uplink_replies_and_exposed_machines_pass() {
        let (forward, _) = rules("n2d0", "10.77.0.0/24", Some("eth0"), &[Ipv4Addr::new(10, 77, 0, 5)]);
        let forward: Vec<String> = forward.iter().map(|r| r.join(" ")).collect();
        // Every rule names the bridge: other traffic of the host is not n2d's to decide.
        assert!(forward.iter().all(|r| r.contains("n2d0")), "{forward:?}");
        // The exposed machine's rule comes before the drops, which end the chain.
        let pos = |rule: &str| forward.iter().position(|r| r == rule).unwrap_or_else(|| panic!("{rule}"));
        assert!(pos("-d 10.77.0.5/32 -o n2d0 -j ACCEPT") < pos("-o n2d0 -j DROP"));
        assert_eq!(&forward[forward.len() - 2..], ["-o n2d0 -j DROP", "-i n2d0 -j DROP"]);
        // Outbound is the subnet's own addresses through the uplink only (no spoofed source, no
        // other interface): new connections in either other direction meet a DROP.
        let accepts: Vec<&String> = forward.iter().filter(|r| r.ends_with("ACCEPT")).collect();
        assert_eq!(accepts.len(), 5, "{accepts:?}");
        assert!(accepts.iter().all(|r| r.contains("RELATED,ESTABLISHED")
            || r == &"-i n2d0 -o n2d0 -j ACCEPT"
            || r == &"-s 10.77.0.0/24 -i n2d0 -o eth0 -j ACCEPT"
            || r == &"-d 10.77.0.5/32 -o n2d0 -j ACCEPT"));
    }

    #[test]
    fn without_an_uplink_the_vms_reach_only_each_other() {
        let r = RecordingRunner::default();
        r.answer("-C FORWARD", Err("Bad rule"));
        install(&r, "n2d0", "10.77.0.0/24", None, &[]).unwrap();
        let calls = r.calls();
        assert!(calls.iter().all(|c| !c.contains("-t nat")), "{calls:?}");
        assert!(
            calls.contains(&"iptables -w 5 -t filter -A N2D-FWD-n2d0 -i n2d0 -o n2d0 -j ACCEPT".to_string())
        );
        assert!(calls.contains(&"iptables -w 5 -t filter -A N2D-FWD-n2d0 -i n2d0 -j DROP".to_string()));
        assert!(!calls.iter().any(|c| c.contains("-s 10.77.0.0/24")), "{calls:?}");
    }

    #[test]
    fn exposing_inserts_into_n2ds_own_chain_once_and_unexposing_removes_it() {
        let ip = Ipv4Addr::new(10, 77, 0, 5);
        let r = RecordingRunner::default();
        r.answer("-C N2D-FWD-n2d0", Err("Bad rule"));
        expose(&r, "n2d0", ip).unwrap();
        assert_eq!(
            r.calls(),
            [
                "iptables -w 5 -t filter -C N2D-FWD-n2d0 -d 10.77.0.5/32 -o n2d0 -j ACCEPT",
                "iptables -w 5 -t filter -I N2D-FWD-n2d0 1 -d 10.77.0.5/32 -o n2d0 -j ACCEPT",
            ]
        );
        // Already there: nothing added.
        let r = RecordingRunner::default();
        expose(&r, "n2d0", ip).unwrap();
        assert_eq!(r.calls().len(), 1);
        let r = RecordingRunner::default();
        r.answer("-D", Err("Bad rule"));
        unexpose(&r, "n2d0", ip);
        assert_eq!(r.calls(), ["iptables -w 5 -t filter -D N2D-FWD-n2d0 -d 10.77.0.5/32 -o n2d0 -j ACCEPT"]);
    }

    #[test]
    fn a_chain_without_its_drops_or_its_jump_is_not_intact() {
        let r = RecordingRunner::default();
        assert!(intact(&r, "n2d0"));
        assert_eq!(
            r.calls(),
            [
                "iptables -w 5 -t filter -C N2D-FWD-n2d0 -i n2d0 -j DROP",
                "iptables -w 5 -t filter -C FORWARD -j N2D-FWD-n2d0"
            ]
        );
        let r = RecordingRunner::default();
        r.answer("-C N2D-FWD-n2d0", Err("Bad rule"));
        assert!(!intact(&r, "n2d0"));
        let r = RecordingRunner::default();
        r.answer("-C FORWARD", Err("Bad rule"));
        assert!(!intact(&r, "n2d0"));
    }

    #[test]
    fn an_existing_chain_is_refilled_and_an_existing_jump_kept() {
        let r = RecordingRunner::default();
        r.answer("-N N2D", Err("Chain already exists"));
        install(&r, "br1", "10.9.0.0/16", None, &[]).unwrap();
        let calls = r.calls();
        assert!(calls.contains(&"iptables -w 5 -t filter -F N2D-FWD-br1".to_string()), "{calls:?}");
        assert!(!calls.iter().any(|c| c.contains("-A FORWARD")), "{calls:?}");
    }

    #[test]
    fn removal_deletes_jumps_then_chains() {
        let r = RecordingRunner::default();
        r.answer("-D", Err("No chain/target/match by that name"));
        remove(&r, "n2d0");
        assert_eq!(
            r.calls(),
            [
                "iptables -w 5 -t filter -D FORWARD -j N2D-FWD-n2d0",
                "iptables -w 5 -t filter -F N2D-FWD-n2d0",
                "iptables -w 5 -t filter -X N2D-FWD-n2d0",
                "iptables -w 5 -t nat -D POSTROUTING -j N2D-NAT-n2d0",
                "iptables -w 5 -t nat -F N2D-NAT-n2d0",
                "iptables -w 5 -t nat -X N2D-NAT-n2d0",
            ]
        );
    }

    #[test]
    fn subnets_are_written_from_the_gateway() {
        assert_eq!(subnet_text(Ipv4Addr::new(10, 77, 0, 1), 24), "10.77.0.0/24");
        assert_eq!(subnet_text(Ipv4Addr::new(192, 168, 5, 77), 20), "192.168.0.0/20");
        assert!(forward_chain(&"x".repeat(15)).len() <= 28);
    }
}
