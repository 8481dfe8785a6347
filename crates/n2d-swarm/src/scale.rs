//! Removing nodes without disturbing services: demote (managers), drain,
//! wait for tasks to move, leave, wait until Down, remove.

use std::time::Duration;

use crate::api::{Availability, DockerApi, LocalSwarmState, NodeInfo, NodeRole, NodeState};
use crate::error::{Result, SwarmError};
use crate::form::{list_nodes, Manager};
use crate::wait::Backoff;

/// Bounds on the waits in [`remove_nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoveTimeouts {
    /// For the node's tasks to move elsewhere after draining. On expiry we
    /// go on: the tasks are rescheduled once the node is gone anyway.
    pub drain: Duration,
    /// For a demoted manager to notice, and for the manager to see the node
    /// Down after it left. On expiry the removal is forced.
    pub down: Duration,
}

impl Default for RemoveTimeouts {
    fn default() -> Self {
        RemoveTimeouts { drain: Duration::from_secs(60), down: Duration::from_secs(30) }
    }
}

/// Remove `nodes` (name, its own Docker API) from the swarm one by one, via
/// `manager`. Managers are demoted first. A node whose daemon cannot be
/// reached, or that has no API (its VM is gone), is drained and
/// force-removed from the manager's side. Nodes not
/// in the swarm are skipped. Returns the names actually removed.
pub async fn remove_nodes<M: DockerApi, A: DockerApi>(
    manager: Manager<'_, M>,
    nodes: &[(String, Option<A>)],
    timeouts: RemoveTimeouts,
    progress: impl Fn(&str),
) -> Result<Vec<String>> {
    let own_id = match manager.api.swarm_state().await {
        Ok(LocalSwarmState::Active { node_id, .. }) => Some(node_id),
        Ok(_) => None,
        Err(source) => return Err(SwarmError::SwarmState { node: manager.name.to_string(), source }),
    };
    let mut removed = Vec::new();
    for (name, api) in nodes {
        let err_node = || name.clone();
        // The node's own view gives its id without relying on hostnames;
        // if it is unreachable, fall back to the manager's list.
        let state = match api {
            Some(api) => Some(api.swarm_state().await),
            None => None,
        };
        let (self_id, reachable) = match state {
            Some(Ok(LocalSwarmState::Active { node_id, .. })) => (Some(node_id), api.as_ref()),
            Some(Ok(_)) => (None, api.as_ref()),
            Some(Err(_)) | None => (None, None),
        };
        let listed = list_nodes(manager).await?;
        let Some(node) = find_node(&listed, name, self_id.as_deref()) else {
            progress(&format!("{name}: not in the swarm, nothing to remove"));
            continue;
        };
        if own_id.as_deref() == Some(node.id.as_str()) {
            return Err(SwarmError::RemoveSelf { node: err_node() });
        }
        let id = node.id.clone();

        if node.role == NodeRole::Manager {
            progress(&format!("{name}: demoting to worker"));
            manager
                .api
                .set_role(&id, NodeRole::Worker)
                .await
                .map_err(|source| SwarmError::Demote { node: err_node(), source })?;
        }

        progress(&format!("{name}: draining"));
        manager
            .api
            .set_availability(&id, Availability::Drain)
            .await
            .map_err(|source| SwarmError::Drain { node: err_node(), source })?;
        // An unreachable node cannot stop its tasks: the manager has rescheduled them already,
        // and waiting for them to end would only wait out the timeout.
        if reachable.is_some() && !wait_drained(manager, name, &id, timeouts.drain).await? {
            progress(&format!("{name}: tasks still running after {:?}; removing anyway", timeouts.drain));
        }

        if let Some(api) = reachable {
            if node.role == NodeRole::Manager {
                wait_demoted(api, timeouts.down).await;
            }
            progress(&format!("{name}: leaving the swarm"));
            api.leave_swarm(false)
                .await
                .map_err(|source| SwarmError::LeaveSwarm { node: err_node(), source })?;
        } else {
            progress(&format!("{name}: unreachable; removing it from the manager side"));
        }

        let down = wait_down(manager, &id, timeouts.down).await?;
        manager
            .api
            .remove_node(&id, !down)
            .await
            .map_err(|source| SwarmError::RemoveNode { node: err_node(), source })?;
        progress(&format!("{name}: removed"));
        removed.push(name.clone());
    }
    Ok(removed)
}

/// By id if known, else by hostname (preferring an entry that is not Down,
/// since a re-created VM leaves a stale Down entry behind).
pub(crate) fn find_node<'a>(nodes: &'a [NodeInfo], name: &str, id: Option<&str>) -> Option<&'a NodeInfo> {
    if let Some(id) = id {
        if let Some(n) = nodes.iter().find(|n| n.id == id) {
            return Some(n);
        }
    }
    let mut same_host: Vec<&NodeInfo> = nodes.iter().filter(|n| n.hostname == name).collect();
    same_host.sort_by_key(|n| n.state == NodeState::Down);
    same_host.first().copied()
}

/// `true` once no tasks remain on the node, `false` on timeout.
async fn wait_drained<M: DockerApi>(
    manager: Manager<'_, M>,
    name: &str,
    id: &str,
    timeout: Duration,
) -> Result<bool> {
    let mut backoff = Backoff::new(timeout);
    loop {
        let tasks = manager
            .api
            .list_tasks_on(id)
            .await
            .map_err(|source| SwarmError::ListTasks { node: name.to_string(), source })?;
        if tasks.is_empty() {
            return Ok(true);
        }
        if !backoff.wait().await {
            return Ok(false);
        }
    }
}

/// Demotion reaches the node asynchronously, and leaving without force
/// fails while it still thinks it is a manager. Best effort, bounded.
async fn wait_demoted<A: DockerApi>(api: &A, timeout: Duration) {
    let mut backoff = Backoff::new(timeout);
    loop {
        if let Ok(LocalSwarmState::Active { is_manager: false, .. }) = api.swarm_state().await {
            return;
        }
        if !backoff.wait().await {
            return;
        }
    }
}

/// `true` once the manager sees the node Down (or gone), `false` on timeout.
async fn wait_down<M: DockerApi>(manager: Manager<'_, M>, id: &str, timeout: Duration) -> Result<bool> {
    let mut backoff = Backoff::new(timeout);
    loop {
        let nodes = list_nodes(manager).await?;
        let down = nodes.iter().find(|n| n.id == id).is_none_or(|n| n.state == NodeState::Down);
        if down {
            return Ok(true);
        }
        if !backoff.wait().await {
            return Ok(false);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::Endpoint;
    use crate::fake::{Cluster, FakeApi};
    use crate::form::form_swarm;
    use n2d_spec::swarm::{NodePlan, SwarmSpec};
    use std::net::Ipv4Addr;

    /// A formed fake swarm of `managers` + `workers` nodes (`n2d-mngr-0`...).
    pub(crate) async fn swarm(managers: u32, workers: u32) -> (Cluster, Vec<(NodePlan, Endpoint, FakeApi)>) {
        let cluster = Cluster::new();
        let spec = SwarmSpec { managers, workers, ..Default::default() };
        let nodes: Vec<_> = spec
            .plan()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let ep = Endpoint::vm(&p.name, Ipv4Addr::new(10, 0, 0, 10 + i as u8), None);
                let api = cluster.api(&p.name);
                (p, ep, api)
            })
            .collect();
        form_swarm(&nodes, Duration::from_secs(5), |_| {}).await.unwrap();
        (cluster, nodes)
    }

    fn manager(nodes: &[(NodePlan, Endpoint, FakeApi)]) -> Manager<'_, FakeApi> {
        Manager { name: &nodes[0].0.name, ip: nodes[0].1.ip, api: &nodes[0].2 }
    }

    fn interesting(cluster: &Cluster, from: usize) -> Vec<String> {
        cluster.events()[from..].iter().filter(|e| !e.starts_with("list_nodes")).cloned().collect()
    }

    #[tokio::test(start_paused = true)]
    async fn drain_then_leave_then_remove() {
        let (cluster, nodes) = swarm(1, 3).await;
        cluster.set_tasks("n2d-wrkr-2", 3);
        let before = cluster.events().len();
        let victims = vec![
            ("n2d-wrkr-2".to_string(), Some(cluster.api("n2d-wrkr-2"))),
            ("n2d-wrkr-1".to_string(), Some(cluster.api("n2d-wrkr-1"))),
        ];
        let removed =
            remove_nodes(manager(&nodes), &victims, RemoveTimeouts::default(), |_| {}).await.unwrap();
        assert_eq!(removed, ["n2d-wrkr-2", "n2d-wrkr-1"]);
        assert_eq!(
            interesting(&cluster, before),
            [
                "drain n2d-wrkr-2",
                "leave n2d-wrkr-2 force=false",
                "remove n2d-wrkr-2 force=false",
                "drain n2d-wrkr-1",
                "leave n2d-wrkr-1 force=false",
                "remove n2d-wrkr-1 force=false",
            ]
        );
        let left: Vec<_> = cluster.nodes().into_iter().map(|n| n.hostname).collect();
        assert_eq!(left, ["n2d-mngr-0", "n2d-wrkr-0"]);
        // Removing again is a no-op.
        let removed =
            remove_nodes(manager(&nodes), &victims, RemoveTimeouts::default(), |_| {}).await.unwrap();
        assert!(removed.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn managers_are_demoted_first() {
        let (cluster, nodes) = swarm(3, 1).await;
        let before = cluster.events().len();
        let victims = vec![("n2d-mngr-2".to_string(), Some(cluster.api("n2d-mngr-2")))];
        remove_nodes(manager(&nodes), &victims, RemoveTimeouts::default(), |_| {}).await.unwrap();
        assert_eq!(
            interesting(&cluster, before),
            [
                "role n2d-mngr-2 worker",
                "drain n2d-mngr-2",
                "leave n2d-mngr-2 force=false",
                "remove n2d-mngr-2 force=false",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_to_remove_the_manager_it_talks_to() {
        let (cluster, nodes) = swarm(1, 1).await;
        let victims = vec![("n2d-mngr-0".to_string(), Some(cluster.api("n2d-mngr-0")))];
        let err =
            remove_nodes(manager(&nodes), &victims, RemoveTimeouts::default(), |_| {}).await.unwrap_err();
        assert!(matches!(err, SwarmError::RemoveSelf { ref node } if node == "n2d-mngr-0"));
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_node_is_force_removed() {
        let (cluster, nodes) = swarm(1, 2).await;
        cluster.fail("n2d-wrkr-1", "state");
        let before = cluster.events().len();
        let victims = vec![("n2d-wrkr-1".to_string(), Some(cluster.api("n2d-wrkr-1")))];
        let timeouts = RemoveTimeouts { drain: Duration::from_secs(2), down: Duration::from_secs(2) };
        remove_nodes(manager(&nodes), &victims, timeouts, |_| {}).await.unwrap();
        assert_eq!(interesting(&cluster, before), ["drain n2d-wrkr-1", "remove n2d-wrkr-1 force=true"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_without_a_vm_is_force_removed() {
        let (cluster, nodes) = swarm(1, 2).await;
        let before = cluster.events().len();
        let victims: Vec<(String, Option<FakeApi>)> = vec![("n2d-wrkr-1".to_string(), None)];
        let timeouts = RemoveTimeouts { drain: Duration::from_secs(2), down: Duration::from_secs(2) };
        remove_nodes(manager(&nodes), &victims, timeouts, |_| {}).await.unwrap();
        assert_eq!(interesting(&cluster, before), ["drain n2d-wrkr-1", "remove n2d-wrkr-1 force=true"]);
        assert!(cluster.nodes().iter().all(|n| n.hostname != "n2d-wrkr-1"));
    }

    #[tokio::test(start_paused = true)]
    async fn leave_failure_names_the_node() {
        let (cluster, nodes) = swarm(1, 2).await;
        cluster.fail("n2d-wrkr-0", "leave");
        let victims = vec![("n2d-wrkr-0".to_string(), Some(cluster.api("n2d-wrkr-0")))];
        let err =
            remove_nodes(manager(&nodes), &victims, RemoveTimeouts::default(), |_| {}).await.unwrap_err();
        assert!(matches!(err, SwarmError::LeaveSwarm { ref node, .. } if node == "n2d-wrkr-0"));
    }
}
