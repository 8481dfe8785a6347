//! `n2d swarm upgrade` (issue 23, part 3; the plan only so far): which nodes move to the new
//! image and in what order. Workers first, then the managers that do not lead, the leader last;
//! one node at a time, so a swarm of 2k+1 managers never has more than one of them away, which
//! is within its quorum. A node already on the image is left alone (a re-run after an
//! interruption continues where it stopped).

/// A node as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeNode {
    pub name: String,
    pub manager: bool,
    pub leader: bool,
    /// The image it runs now.
    pub image: String,
}

/// Why a swarm cannot be upgraded now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradePlanError {
    #[error("only {ready} of {managers} managers are Ready: upgrading one of them would leave the swarm without a quorum; bring them back first (`n2d start`, `n2d swarm scale`)")]
    NoQuorumToSpare { ready: usize, managers: usize },
}

/// The nodes to move to `image`, in order. `ready_managers`: how many managers are Ready now;
/// taking one away must leave a majority of `managers`.
pub fn plan(
    nodes: &[UpgradeNode],
    image: &str,
    ready_managers: usize,
) -> Result<Vec<UpgradeNode>, UpgradePlanError> {
    let stale = |n: &&UpgradeNode| n.image != image;
    let mut order: Vec<UpgradeNode> = nodes.iter().filter(stale).filter(|n| !n.manager).cloned().collect();
    let mut managers: Vec<UpgradeNode> = nodes.iter().filter(stale).filter(|n| n.manager).cloned().collect();
    // Followers first (by name, so a re-run takes them in the same order), the leader last.
    managers.sort_by(|a, b| a.leader.cmp(&b.leader).then(a.name.cmp(&b.name)));
    let total = nodes.iter().filter(|n| n.manager).count();
    if !managers.is_empty() && ready_managers.saturating_sub(1) < total / 2 + 1 && total > 1 {
        return Err(UpgradePlanError::NoQuorumToSpare { ready: ready_managers, managers: total });
    }
    order.extend(managers);
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, manager: bool, leader: bool, image: &str) -> UpgradeNode {
        UpgradeNode { name: name.into(), manager, leader, image: image.into() }
    }

    #[test]
    fn workers_first_then_followers_then_the_leader_and_done_nodes_are_skipped() {
        let nodes = [
            node("s-mngr-0", true, true, "old"),
            node("s-mngr-1", true, false, "old"),
            node("s-mngr-2", true, false, "new"),
            node("s-wrkr-1", false, false, "old"),
            node("s-wrkr-0", false, false, "old"),
        ];
        let order: Vec<String> = plan(&nodes, "new", 3).unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(order, ["s-wrkr-1", "s-wrkr-0", "s-mngr-1", "s-mngr-0"]);
        assert!(plan(
            &nodes.map(|mut n| {
                n.image = "new".into();
                n
            }),
            "new",
            3
        )
        .unwrap()
        .is_empty());
    }

    #[test]
    fn a_manager_is_not_taken_away_when_the_quorum_cannot_spare_it() {
        let nodes =
            [node("m0", true, true, "old"), node("m1", true, false, "old"), node("m2", true, false, "old")];
        let err = plan(&nodes, "new", 2).unwrap_err();
        assert!(err.to_string().contains("only 2 of 3 managers are Ready"), "{err}");
        // One manager alone: it is the swarm; it goes (the swarm is down meanwhile).
        assert_eq!(plan(&[node("m0", true, true, "old")], "new", 1).unwrap().len(), 1);
        // Workers only: no manager leaves, no quorum needed.
        let nodes = [node("m0", true, true, "new"), node("w0", false, false, "old")];
        assert_eq!(plan(&nodes, "new", 0).unwrap().len(), 1);
    }
}
