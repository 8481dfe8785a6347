//! Taking one node out of service for a restart and back (`n2d swarm upgrade`): drain it, wait
//! until its tasks ended and every replicated service runs all its replicas on other nodes;
//! after the restart, wait until the managers see it Ready and make it active again.

use std::time::Duration;

use crate::api::{Availability, DockerApi, NodeInfo, NodeState};
use crate::error::{Result, SwarmError};
use crate::form::{list_nodes, Manager};
use crate::scale::find_node;
use crate::wait::Backoff;

/// Bounds on the waits of a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartTimeouts {
    /// For the node's tasks to end and their replacements to run elsewhere.
    pub drain: Duration,
    /// For the restarted node to be Ready again.
    pub ready: Duration,
}

impl Default for RestartTimeouts {
    fn default() -> Self {
        RestartTimeouts { drain: Duration::from_secs(300), ready: Duration::from_secs(300) }
    }
}

fn node_named<'a>(nodes: &'a [NodeInfo], name: &str) -> Result<&'a NodeInfo> {
    find_node(nodes, name, None).ok_or_else(|| SwarmError::NodeMissing { node: name.to_string() })
}

/// Drains `name` and waits until nothing runs on it and no replicated service is short of
/// replicas (its tasks run elsewhere). A swarm of one node has nowhere to move them: its tasks
/// only end.
pub async fn drain_for_restart<M: DockerApi>(
    manager: Manager<'_, M>,
    name: &str,
    timeouts: RestartTimeouts,
) -> Result<()> {
    let err_node = || name.to_string();
    let nodes = list_nodes(manager).await?;
    let id = node_named(&nodes, name)?.id.clone();
    let elsewhere = nodes.iter().any(|n| n.id != id && n.ready() && n.availability == Availability::Active);
    manager
        .api
        .set_availability(&id, Availability::Drain)
        .await
        .map_err(|source| SwarmError::Drain { node: err_node(), source })?;
    let mut backoff = Backoff::new(timeouts.drain);
    loop {
        let tasks = manager
            .api
            .list_tasks_on(&id)
            .await
            .map_err(|source| SwarmError::ListTasks { node: err_node(), source })?;
        let short = if elsewhere {
            manager
                .api
                .unsettled_services()
                .await
                .map_err(|source| SwarmError::ListServices { node: manager.name.to_string(), source })?
        } else {
            Vec::new()
        };
        if tasks.is_empty() && short.is_empty() {
            return Ok(());
        }
        if !backoff.wait().await {
            return Err(SwarmError::TasksNotMoved {
                node: err_node(),
                waited: timeouts.drain,
                tasks: tasks.len(),
                services: if short.is_empty() { "none".into() } else { short.join(", ") },
            });
        }
    }
}

/// Waits until the managers see `name` Ready, and no node in the Unknown state a restarted
/// manager gives every node until it hears from it again; then makes `name` active.
pub async fn return_to_service<M: DockerApi>(
    manager: Manager<'_, M>,
    name: &str,
    ready: Duration,
) -> Result<()> {
    let mut backoff = Backoff::new(ready);
    let id = loop {
        // A manager that just restarted may not answer yet: that is waited for too.
        if let Ok(nodes) = list_nodes(manager).await {
            let settled = nodes.iter().all(|n| n.state != NodeState::Unknown);
            if let Some(node) = find_node(&nodes, name, None).filter(|n| n.ready() && settled) {
                break node.id.clone();
            }
        }
        if !backoff.wait().await {
            return Err(SwarmError::NotReadyAgain { node: name.to_string(), waited: ready });
        }
    };
    manager
        .api
        .set_availability(&id, Availability::Active)
        .await
        .map_err(|source| SwarmError::Activate { node: name.to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::tests::swarm;
    use std::net::Ipv4Addr;

    fn quick() -> RestartTimeouts {
        RestartTimeouts { drain: Duration::from_secs(5), ready: Duration::from_secs(5) }
    }

    #[tokio::test(start_paused = true)]
    async fn a_drained_node_waits_for_its_tasks_and_the_replicas_elsewhere_then_comes_back_active() {
        let (cluster, _) = swarm(1, 2).await;
        let api = cluster.api("n2d-mngr-0");
        let manager = Manager { name: "n2d-mngr-0", ip: Ipv4Addr::new(10, 0, 0, 10), api: &api };
        cluster.set_tasks("n2d-wrkr-0", 2);
        cluster.set_unsettled("web", 3);
        drain_for_restart(manager, "n2d-wrkr-0", quick()).await.unwrap();
        assert_eq!(cluster.count_events("services"), 4, "{:?}", cluster.events());
        let node = cluster.nodes().into_iter().find(|n| n.hostname == "n2d-wrkr-0").unwrap();
        assert_eq!(node.availability, Availability::Drain);

        cluster.set_node_state("n2d-wrkr-0", NodeState::Down);
        let err = return_to_service(manager, "n2d-wrkr-0", Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("not Ready in the swarm again"), "{err}");
        // A manager that restarted knows no node's state yet: that is waited out too.
        cluster.set_node_state("n2d-wrkr-0", NodeState::Ready);
        cluster.set_node_state("n2d-wrkr-1", NodeState::Unknown);
        let err = return_to_service(manager, "n2d-wrkr-0", Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("not Ready in the swarm again"), "{err}");
        cluster.set_node_state("n2d-wrkr-1", NodeState::Ready);
        return_to_service(manager, "n2d-wrkr-0", Duration::from_secs(5)).await.unwrap();
        let node = cluster.nodes().into_iter().find(|n| n.hostname == "n2d-wrkr-0").unwrap();
        assert_eq!(node.availability, Availability::Active);
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_that_never_move_and_unknown_nodes_are_errors_naming_them() {
        let (cluster, _) = swarm(1, 2).await;
        let api = cluster.api("n2d-mngr-0");
        let manager = Manager { name: "n2d-mngr-0", ip: Ipv4Addr::new(10, 0, 0, 10), api: &api };
        cluster.set_unsettled("web", 1000);
        let err = drain_for_restart(manager, "n2d-wrkr-1", quick()).await.unwrap_err();
        assert!(err.to_string().contains("short of replicas: web"), "{err}");
        let err = drain_for_restart(manager, "ghost", quick()).await.unwrap_err();
        assert!(err.to_string().contains("ghost is not in the swarm"), "{err}");
    }
}
