//! Network partitions of bridge machines, made from outside the guest (`n2d fault partition`):
//! the bridge's own filter (ebtables, the nf_tables one Debian's iptables package ships) drops
//! IPv4 between a machine's tap and the addresses it is cut from, both directions. Everything
//! lives in n2d's chains: `N2D-FAULT`, jumped to from the end of the bridge table's FORWARD
//! (machines of one bridge), INPUT and OUTPUT (traffic the host routes to and from the bridge:
//! machines of other bridges and hosts); one chain `N2D-F-<tap>` per cut machine, reached from
//! `N2D-FAULT` by its tap. Clearing a machine removes its chain and the jumps to it; the last
//! clear removes `N2D-FAULT` and its jumps.

use n2d_exec::{Cmd, ExecError, Runner};
use std::net::Ipv4Addr;

/// The chain every faulted tap is reached from.
pub const FAULT_CHAIN: &str = "N2D-FAULT";
/// The bridge table's chains that jump to [`FAULT_CHAIN`].
const PARENTS: [&str; 3] = ["FORWARD", "INPUT", "OUTPUT"];

/// The chain of one cut machine (ebtables allows 31 characters; a tap name has at most 15).
pub fn tap_chain(tap: &str) -> String {
    format!("N2D-F-{tap}")
}

fn ebtables(runner: &dyn Runner, args: &[&str]) -> Result<Vec<u8>, ExecError> {
    runner.run(&Cmd::new("ebtables", "iptables").args(args))
}

/// The rules of `tap`'s chain: IPv4 from the machine to each of `peers`, and from each to it,
/// dropped (ARP still passes, so neighbours stay resolved and the cut is the network's, not a
/// missing address).
pub fn partition_rules(peers: &[Ipv4Addr]) -> Vec<Vec<String>> {
    let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    peers
        .iter()
        .flat_map(|peer| {
            let ip = peer.to_string();
            [
                v(&["-p", "IPv4", "--ip-dst", &ip, "-j", "DROP"]),
                v(&["-p", "IPv4", "--ip-src", &ip, "-j", "DROP"]),
            ]
        })
        .collect()
}

/// The jumps from [`FAULT_CHAIN`] to `tap`'s chain: what enters the bridge from the tap, and
/// what leaves through it.
fn jumps(tap: &str) -> [Vec<String>; 2] {
    let chain = tap_chain(tap);
    [
        ["-i", tap, "-j", &chain].map(str::to_string).to_vec(),
        ["-o", tap, "-j", &chain].map(str::to_string).to_vec(),
    ]
}

/// Cuts the machine on `tap` from `peers` (replacing a cut it had).
pub fn partition(runner: &dyn Runner, tap: &str, peers: &[Ipv4Addr]) -> Result<(), ExecError> {
    if ebtables(runner, &["-N", FAULT_CHAIN, "-P", "RETURN"]).is_ok() {
        for parent in PARENTS {
            ebtables(runner, &["-A", parent, "-j", FAULT_CHAIN])?;
        }
    }
    let chain = tap_chain(tap);
    // -N fails when the chain exists (a cut being replaced): then it is emptied.
    if ebtables(runner, &["-N", &chain, "-P", "RETURN"]).is_err() {
        ebtables(runner, &["-F", &chain])?;
    }
    for rule in partition_rules(peers) {
        let args: Vec<&str> =
            ["-A", chain.as_str()].into_iter().chain(rule.iter().map(String::as_str)).collect();
        ebtables(runner, &args)?;
    }
    for jump in jumps(tap) {
        let check: Vec<&str> =
            ["-D", FAULT_CHAIN].into_iter().chain(jump.iter().map(String::as_str)).collect();
        // Deleted first so a replaced cut is jumped to once.
        let _ = ebtables(runner, &check);
        let add: Vec<&str> = ["-A", FAULT_CHAIN].into_iter().chain(jump.iter().map(String::as_str)).collect();
        ebtables(runner, &add)?;
    }
    Ok(())
}

/// Removes `tap`'s cut; with `last`, also [`FAULT_CHAIN`] and its jumps (no machine is cut any
/// more). What is already gone is not an error.
pub fn heal(runner: &dyn Runner, tap: &str, last: bool) {
    for jump in jumps(tap) {
        let args: Vec<&str> =
            ["-D", FAULT_CHAIN].into_iter().chain(jump.iter().map(String::as_str)).collect();
        let _ = ebtables(runner, &args);
    }
    let chain = tap_chain(tap);
    let _ = ebtables(runner, &["-F", &chain]);
    let _ = ebtables(runner, &["-X", &chain]);
    if last {
        for parent in PARENTS {
            let _ = ebtables(runner, &["-D", parent, "-j", FAULT_CHAIN]);
        }
        let _ = ebtables(runner, &["-F", FAULT_CHAIN]);
        let _ = ebtables(runner, &["-X", FAULT_CHAIN]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use n2d_exec::RecordingRunner;

    #[test]
    fn a_cut_drops_both_directions_in_its_own_chain_and_heals_to_nothing() {
        let runner = RecordingRunner::default();
        partition(&runner, "n2dt1234", &[Ipv4Addr::new(10, 77, 0, 3)]).unwrap();
        let calls = runner.calls();
        for expected in [
            "ebtables -N N2D-FAULT -P RETURN",
            "ebtables -A FORWARD -j N2D-FAULT",
            "ebtables -A INPUT -j N2D-FAULT",
            "ebtables -A OUTPUT -j N2D-FAULT",
            "ebtables -N N2D-F-n2dt1234 -P RETURN",
            "ebtables -A N2D-F-n2dt1234 -p IPv4 --ip-dst 10.77.0.3 -j DROP",
            "ebtables -A N2D-F-n2dt1234 -p IPv4 --ip-src 10.77.0.3 -j DROP",
            "ebtables -A N2D-FAULT -i n2dt1234 -j N2D-F-n2dt1234",
            "ebtables -A N2D-FAULT -o n2dt1234 -j N2D-F-n2dt1234",
        ] {
            assert!(calls.iter().any(|c| c == expected), "{expected} not in {calls:#?}");
        }
        let runner = RecordingRunner::default();
        heal(&runner, "n2dt1234", true);
        let calls = runner.calls();
        for expected in [
            "ebtables -D N2D-FAULT -i n2dt1234 -j N2D-F-n2dt1234",
            "ebtables -X N2D-F-n2dt1234",
            "ebtables -D FORWARD -j N2D-FAULT",
            "ebtables -X N2D-FAULT",
        ] {
            assert!(calls.iter().any(|c| c == expected), "{expected} not in {calls:#?}");
        }
    }

    #[test]
    fn a_second_cut_keeps_the_parent_chain_and_refills_its_own() {
        let runner = RecordingRunner::default();
        runner.answer("ebtables -N N2D-FAULT", Err("Chain already exists"));
        runner.answer("ebtables -N N2D-F-n2dt1", Err("Chain already exists"));
        partition(&runner, "n2dt1", &[Ipv4Addr::new(10, 77, 0, 4)]).unwrap();
        let calls = runner.calls();
        assert!(!calls.iter().any(|c| c == "ebtables -A FORWARD -j N2D-FAULT"), "{calls:#?}");
        assert!(calls.iter().any(|c| c == "ebtables -F N2D-F-n2dt1"), "{calls:#?}");
    }
}
