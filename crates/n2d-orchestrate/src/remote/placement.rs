//! Where the nodes of a swarm across hosts go (`swarm create --on h1,h2,h3`): managers on
//! distinct hosts first, in the order the hosts were named (with three managers on three
//! hosts, losing any one host keeps quorum); workers each on the host with the most memory
//! free once the nodes placed before it are counted.

use n2d_spec::host::HostName;

/// A host that may take nodes, and its free memory in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    pub host: HostName,
    pub free: u64,
}

/// The host of each node, in the nodes' order; `managers` says which are managers, each node
/// takes `node_memory` bytes. `hosts` must not be empty.
pub fn place(managers: &[bool], hosts: &[Capacity], node_memory: u64) -> Vec<HostName> {
    assert!(!hosts.is_empty(), "placement needs a host");
    let mut free: Vec<u64> = hosts.iter().map(|h| h.free).collect();
    let mut placed = vec![None; managers.len()];
    for (nth, (i, _)) in managers.iter().enumerate().filter(|(_, m)| **m).enumerate() {
        let at = nth % hosts.len();
        free[at] = free[at].saturating_sub(node_memory);
        placed[i] = Some(at);
    }
    for (i, _) in managers.iter().enumerate().filter(|(_, m)| !**m) {
        // The most free memory; the first named on a tie.
        let at = (0..hosts.len()).max_by_key(|&h| (free[h], std::cmp::Reverse(h))).expect("a host");
        free[at] = free[at].saturating_sub(node_memory);
        placed[i] = Some(at);
    }
    placed.into_iter().map(|at| hosts[at.expect("every node placed")].host.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(free_gib: &[u64]) -> Vec<Capacity> {
        free_gib
            .iter()
            .enumerate()
            .map(|(i, g)| Capacity { host: format!("h{}", i + 1).parse().unwrap(), free: g << 30 })
            .collect()
    }

    fn names(placed: &[HostName]) -> Vec<&str> {
        placed.iter().map(HostName::as_str).collect()
    }

    #[test]
    fn managers_spread_over_distinct_hosts_first_then_wrap() {
        let placed = place(&[true, true, true], &hosts(&[1, 8, 8]), 1 << 30);
        assert_eq!(names(&placed), ["h1", "h2", "h3"]);
        let placed = place(&[true, true, true, true, true], &hosts(&[8, 8]), 1 << 30);
        assert_eq!(names(&placed), ["h1", "h2", "h1", "h2", "h1"]);
    }

    #[test]
    fn workers_go_where_the_most_memory_is_free_counting_the_nodes_placed_before() {
        // h1 4 GiB, h2 2 GiB free; one manager each; four 1 GiB workers.
        let placed = place(&[true, true, false, false, false, false], &hosts(&[4, 2]), 1 << 30);
        // After managers: h1 3, h2 1 → h1 (2), h1 (1), then a tie 1/1 → h1 first named, then h2.
        assert_eq!(names(&placed), ["h1", "h2", "h1", "h1", "h1", "h2"]);
        let placed = place(&[false, false, false], &hosts(&[2, 2, 2]), 1 << 30);
        assert_eq!(names(&placed), ["h1", "h2", "h3"]);
    }
}
