//! Forming a swarm: init on the first manager, join the rest, label, wait
//! until Ready. Safe to re-run: nodes already in the swarm are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use futures_util::future::try_join_all;
use n2d_spec::swarm::NodePlan;

use crate::api::{DockerApi, Endpoint, JoinTokens, LocalSwarmState, NodeInfo, NodeRole};
use crate::error::{Result, SwarmError};
use crate::wait::Backoff;

/// How long a node may take to report Active after its join call returned.
const JOIN_SETTLE: Duration = Duration::from_secs(30);
/// How long a join that dockerd timed out on, and goes on with in the background, may take.
const JOIN_BACKGROUND: Duration = Duration::from_secs(300);

/// A manager n2d talks to for cluster-wide calls.
#[derive(Debug)]
pub struct Manager<'a, M> {
    pub name: &'a str,
    /// Its swarm address (others join to `ip:2377`).
    pub ip: Ipv4Addr,
    pub api: &'a M,
}

// Manual impls: derive would needlessly require `M: Copy`.
impl<M> Clone for Manager<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for Manager<'_, M> {}

/// What happened to a node while forming the swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinAction {
    /// This node created the swarm.
    Initialized,
    Joined,
    /// It was already a member; nothing was done.
    AlreadyMember,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    pub role: NodeRole,
    pub node_id: String,
    pub action: JoinAction,
}

/// Build (or complete) a swarm from `nodes`: the first manager in the list
/// inits it, advertising its own IP; the others join `<that ip>:2377` with
/// the matching token, each advertising its own IP (VMs have several
/// addresses, so auto-detection is not trusted). Then node labels are
/// applied and every node must be Ready within `ready_timeout`.
pub async fn form_swarm<A: DockerApi>(
    nodes: &[(NodePlan, Endpoint, A)],
    ready_timeout: Duration,
    progress: impl Fn(&str),
) -> Result<Vec<NodeStatus>> {
    let Some(first) = nodes.iter().position(|(p, _, _)| p.role == NodeRole::Manager) else {
        return Err(SwarmError::NoManager);
    };
    let (plan, ep, api) = &nodes[first];
    let manager = Manager { name: &plan.name, ip: ep.ip, api };

    let lead = init_or_reuse(manager, &progress).await?;
    let tokens = manager
        .api
        .join_tokens()
        .await
        .map_err(|source| SwarmError::JoinTokens { node: plan.name.clone(), source })?;
    let members = member_ids(manager).await?;

    let mut statuses = BTreeMap::new();
    statuses.insert(first, lead);
    // Managers one at a time: each join changes the raft membership.
    for (i, (p, ep, api)) in nodes.iter().enumerate() {
        if i != first && p.role == NodeRole::Manager {
            let st = join_node(manager, &p.name, p.role, api, Some(ep.ip), &tokens, &members).await?;
            report(&progress, &st);
            statuses.insert(i, st);
        }
    }
    // Workers in parallel.
    let workers = nodes.iter().enumerate().filter(|(_, (p, _, _))| p.role == NodeRole::Worker).map(
        |(i, (p, ep, api))| {
            let (tokens, members, progress) = (&tokens, &members, &progress);
            async move {
                let st = join_node(manager, &p.name, p.role, api, Some(ep.ip), tokens, members).await?;
                report(progress, &st);
                Ok::<_, SwarmError>((i, st))
            }
        },
    );
    statuses.extend(try_join_all(workers).await?);

    // BTreeMap by input index: statuses come back in the caller's order.
    let statuses: Vec<NodeStatus> = statuses.into_values().collect();
    for (st, (p, _, _)) in statuses.iter().zip(nodes) {
        apply_labels(manager, &st.name, &st.node_id, &p.labels).await?;
    }
    progress("waiting for all nodes to be ready");
    let expect: Vec<(&str, &str)> = statuses.iter().map(|s| (s.name.as_str(), s.node_id.as_str())).collect();
    wait_ready(manager, &expect, ready_timeout).await?;
    Ok(statuses)
}

/// Join a host that is not an n2d VM (`n2d swarm add-host`) as a worker.
/// `advertise_addr` should be the host's address on the VMs' bridge; `None`
/// lets Docker guess, which fails on hosts with several addresses.
pub async fn join_external_worker<M: DockerApi, A: DockerApi>(
    manager: Manager<'_, M>,
    name: &str,
    worker: &A,
    advertise_addr: Option<Ipv4Addr>,
    labels: &BTreeMap<String, String>,
    ready_timeout: Duration,
) -> Result<NodeStatus> {
    let tokens = manager
        .api
        .join_tokens()
        .await
        .map_err(|source| SwarmError::JoinTokens { node: manager.name.to_string(), source })?;
    let members = member_ids(manager).await?;
    let st = join_node(manager, name, NodeRole::Worker, worker, advertise_addr, &tokens, &members).await?;
    apply_labels(manager, name, &st.node_id, labels).await?;
    wait_ready(manager, &[(name, &st.node_id)], ready_timeout).await?;
    Ok(st)
}

/// `docker node ls` for `n2d swarm ls`: managers first, then by hostname.
pub async fn swarm_health<M: DockerApi>(manager: Manager<'_, M>) -> Result<Vec<NodeInfo>> {
    let mut nodes = list_nodes(manager).await?;
    nodes.sort_by(|a, b| (a.role, &a.hostname).cmp(&(b.role, &b.hostname)));
    Ok(nodes)
}

fn report(progress: &impl Fn(&str), st: &NodeStatus) {
    let what = match st.action {
        JoinAction::Initialized => "initialized the swarm",
        JoinAction::Joined => "joined",
        JoinAction::AlreadyMember => "already in the swarm",
    };
    progress(&format!("{}: {what} as {}", st.name, st.role));
}

async fn swarm_state<A: DockerApi>(name: &str, api: &A) -> Result<LocalSwarmState> {
    api.swarm_state().await.map_err(|source| SwarmError::SwarmState { node: name.to_string(), source })
}

pub(crate) async fn list_nodes<M: DockerApi>(manager: Manager<'_, M>) -> Result<Vec<NodeInfo>> {
    manager
        .api
        .list_nodes()
        .await
        .map_err(|source| SwarmError::ListNodes { node: manager.name.to_string(), source })
}

async fn member_ids<M: DockerApi>(manager: Manager<'_, M>) -> Result<BTreeSet<String>> {
    Ok(list_nodes(manager).await?.into_iter().map(|n| n.id).collect())
}

fn bad_state(name: &str, state: &LocalSwarmState) -> SwarmError {
    SwarmError::BadLocalState { node: name.to_string(), state: format!("{state:?}") }
}

async fn init_or_reuse<M: DockerApi>(
    manager: Manager<'_, M>,
    progress: &impl Fn(&str),
) -> Result<NodeStatus> {
    let name = manager.name.to_string();
    let (node_id, action) = match swarm_state(&name, manager.api).await? {
        LocalSwarmState::Active { node_id, is_manager: true } => (node_id, JoinAction::AlreadyMember),
        LocalSwarmState::Active { .. } => return Err(SwarmError::NotAManager { node: name }),
        LocalSwarmState::Inactive => {
            progress(&format!("{name}: initializing swarm on {}", manager.ip));
            let id = manager
                .api
                .init_swarm(manager.ip)
                .await
                .map_err(|source| SwarmError::InitSwarm { node: name.clone(), source })?;
            (id, JoinAction::Initialized)
        }
        other => return Err(bad_state(&name, &other)),
    };
    let st = NodeStatus { name, role: NodeRole::Manager, node_id, action };
    report(progress, &st);
    Ok(st)
}

/// Join one node unless it already is a member of this swarm.
async fn join_node<M: DockerApi, A: DockerApi>(
    manager: Manager<'_, M>,
    name: &str,
    role: NodeRole,
    api: &A,
    advertise_addr: Option<Ipv4Addr>,
    tokens: &JoinTokens,
    members: &BTreeSet<String>,
) -> Result<NodeStatus> {
    let status = |node_id, action| NodeStatus { name: name.to_string(), role, node_id, action };
    match swarm_state(name, api).await? {
        LocalSwarmState::Active { node_id, .. } if members.contains(&node_id) => {
            return Ok(status(node_id, JoinAction::AlreadyMember));
        }
        LocalSwarmState::Active { .. } => return Err(SwarmError::ForeignSwarm { node: name.to_string() }),
        LocalSwarmState::Inactive => {}
        other => return Err(bad_state(name, &other)),
    }
    // The join call returns once the node is accepted; its local state may
    // lag a moment behind. A join dockerd timed out on goes on in the
    // background (a busy host): its state tells when it is done.
    let settle = match api.join_swarm(manager.ip, tokens.for_role(role), advertise_addr).await {
        Ok(()) => JOIN_SETTLE,
        Err(e) if e.join_continues_in_background() => JOIN_BACKGROUND,
        Err(source) => return Err(SwarmError::JoinSwarm { node: name.to_string(), source }),
    };
    let mut backoff = Backoff::new(settle);
    loop {
        match swarm_state(name, api).await? {
            LocalSwarmState::Active { node_id, .. } => return Ok(status(node_id, JoinAction::Joined)),
            LocalSwarmState::Pending | LocalSwarmState::Inactive => {}
            other => return Err(bad_state(name, &other)),
        }
        if !backoff.wait().await {
            return Err(bad_state(name, &LocalSwarmState::Pending));
        }
    }
}

async fn apply_labels<M: DockerApi>(
    manager: Manager<'_, M>,
    name: &str,
    node_id: &str,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    manager
        .api
        .set_node_labels(node_id, labels)
        .await
        .map_err(|source| SwarmError::SetLabels { node: name.to_string(), source })
}

/// Poll the manager until every `(name, node id)` is Ready. List errors are
/// retried until the deadline (right after managers join, the raft leader
/// may be briefly unavailable).
pub(crate) async fn wait_ready<M: DockerApi>(
    manager: Manager<'_, M>,
    expect: &[(&str, &str)],
    timeout: Duration,
) -> Result<Vec<NodeInfo>> {
    let mut backoff = Backoff::new(timeout);
    loop {
        let listed = list_nodes(manager).await;
        let not_ready: Vec<String> = match &listed {
            Ok(nodes) => expect
                .iter()
                .filter(|(_, id)| !nodes.iter().any(|n| n.id == *id && n.ready()))
                .map(|(name, _)| name.to_string())
                .collect(),
            Err(_) => expect.iter().map(|(n, _)| n.to_string()).collect(),
        };
        if not_ready.is_empty() {
            return listed;
        }
        if !backoff.wait().await {
            return match listed {
                Err(e) => Err(e),
                Ok(_) => Err(SwarmError::NodesNotReady { nodes: not_ready, waited: timeout }),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Cluster, FakeApi};
    use n2d_spec::swarm::SwarmSpec;

    fn setup(spec: &SwarmSpec) -> (Cluster, Vec<(NodePlan, Endpoint, FakeApi)>) {
        let cluster = Cluster::new();
        let nodes = spec
            .plan()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let ip = Ipv4Addr::new(10, 0, 0, 10 + i as u8);
                let api = cluster.api(&p.name);
                (p.clone(), Endpoint::vm(&p.name, ip, None), api)
            })
            .collect();
        (cluster, nodes)
    }

    async fn form(nodes: &[(NodePlan, Endpoint, FakeApi)]) -> Result<Vec<NodeStatus>> {
        form_swarm(nodes, Duration::from_secs(10), |_| {}).await
    }

    #[tokio::test(start_paused = true)]
    async fn first_manager_inits_others_join_with_right_token_and_address() {
        let spec = SwarmSpec { managers: 3, workers: 2, ..Default::default() };
        let (cluster, nodes) = setup(&spec);
        let st = form(&nodes).await.unwrap();
        assert_eq!(st.len(), 5);
        assert_eq!(st[0].action, JoinAction::Initialized);
        assert!(st[1..].iter().all(|s| s.action == JoinAction::Joined));
        let ev = cluster.events();
        assert_eq!(ev[0], "init n2d-mngr-0 advertise=10.0.0.10");
        let mut joins: Vec<&str> = ev.iter().filter(|e| e.starts_with("join")).map(String::as_str).collect();
        // Managers join in order; workers concurrently.
        assert_eq!(
            joins[..2],
            [
                "join n2d-mngr-1 token=manager remote=10.0.0.10:2377 advertise=10.0.0.11",
                "join n2d-mngr-2 token=manager remote=10.0.0.10:2377 advertise=10.0.0.12",
            ]
        );
        joins[2..].sort();
        assert_eq!(
            joins[2..],
            [
                "join n2d-wrkr-0 token=worker remote=10.0.0.10:2377 advertise=10.0.0.13",
                "join n2d-wrkr-1 token=worker remote=10.0.0.10:2377 advertise=10.0.0.14",
            ]
        );
        let roles: Vec<_> = cluster.nodes().iter().map(|n| (n.hostname.clone(), n.role)).collect();
        assert_eq!(roles.iter().filter(|(_, r)| *r == NodeRole::Manager).count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn labels_land_on_the_right_nodes() {
        let spec = SwarmSpec::from_yaml(
            "workers: 2\nlabels: [tier=db@workers, zone=a@n2d-wrkr-1, ctl=1@managers]\n\
             nodes: { n2d-wrkr-0: { labels: [ssd=true] } }\n",
        )
        .unwrap();
        spec.validate().unwrap();
        let (cluster, nodes) = setup(&spec);
        form(&nodes).await.unwrap();
        let labels = |host: &str| {
            let n = cluster.nodes().into_iter().find(|n| n.hostname == host).unwrap();
            n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
        };
        assert_eq!(labels("n2d-mngr-0"), "ctl=1");
        assert_eq!(labels("n2d-wrkr-0"), "ssd=true,tier=db");
        assert_eq!(labels("n2d-wrkr-1"), "tier=db,zone=a");
    }

    #[tokio::test(start_paused = true)]
    async fn rerun_on_healthy_swarm_changes_nothing() {
        let (cluster, nodes) = setup(&SwarmSpec::default());
        form(&nodes).await.unwrap();
        let before = cluster.events().len();
        let st = form(&nodes).await.unwrap();
        assert!(st.iter().all(|s| s.action == JoinAction::AlreadyMember));
        let new: Vec<String> = cluster.events()[before..].to_vec();
        assert!(new.iter().all(|e| !e.starts_with("init") && !e.starts_with("join")), "{new:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn missing_nodes_are_added_to_existing_swarm() {
        let (cluster, nodes) = setup(&SwarmSpec::default());
        form(&nodes[..2]).await.unwrap();
        let before = cluster.events().len();
        let st = form(&nodes).await.unwrap();
        let actions: Vec<_> = st.iter().map(|s| s.action).collect();
        assert_eq!(
            actions,
            [JoinAction::AlreadyMember, JoinAction::AlreadyMember, JoinAction::Joined, JoinAction::Joined]
        );
        let joins = cluster.events()[before..].iter().filter(|e| e.starts_with("join")).count();
        assert_eq!(joins, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn join_failure_names_the_node() {
        let (cluster, nodes) = setup(&SwarmSpec::default());
        cluster.fail("n2d-wrkr-1", "join");
        let err = form(&nodes).await.unwrap_err();
        assert!(matches!(&err, SwarmError::JoinSwarm { node, .. } if node == "n2d-wrkr-1"), "{err:?}");
        assert_eq!(err.to_string(), "joining n2d-wrkr-1 to the swarm");
    }

    #[tokio::test(start_paused = true)]
    async fn a_join_dockerd_times_out_on_and_finishes_in_the_background_is_a_join() {
        let (cluster, nodes) = setup(&SwarmSpec::default());
        cluster.slow_join("n2d-wrkr-1");
        form(&nodes).await.unwrap();
        assert_eq!(cluster.nodes().len(), 4);
        // Any other join failure still fails the formation.
        let (cluster, nodes) = setup(&SwarmSpec::default());
        cluster.fail("n2d-wrkr-1", "join");
        assert!(form(&nodes).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn node_in_another_swarm_is_refused() {
        let (cluster, nodes) = setup(&SwarmSpec::default());
        cluster.set_foreign("n2d-wrkr-2");
        let err = form(&nodes).await.unwrap_err();
        assert!(matches!(&err, SwarmError::ForeignSwarm { node } if node == "n2d-wrkr-2"));
    }

    #[tokio::test(start_paused = true)]
    async fn not_ready_timeout_names_the_node() {
        let (cluster, nodes) = setup(&SwarmSpec::default());
        cluster.never_ready("n2d-wrkr-2");
        let start = tokio::time::Instant::now();
        let err = form_swarm(&nodes, Duration::from_secs(20), |_| {}).await.unwrap_err();
        match &err {
            SwarmError::NodesNotReady { nodes, .. } => assert_eq!(nodes, &["n2d-wrkr-2"]),
            e => panic!("{e:?}"),
        }
        assert!(err.to_string().contains("n2d-wrkr-2"));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(20) && waited < Duration::from_secs(24));
        // Backoff: 0.5, 1, 2, 3, 3, ... -> about 9 polls in 20 s, not thousands.
        let polls = cluster.count_events("list_nodes");
        assert!(polls < 15, "{polls} polls");
    }

    #[tokio::test(start_paused = true)]
    async fn no_manager_is_an_error() {
        let (_c, nodes) = setup(&SwarmSpec::default());
        let err = form(&nodes[1..]).await.unwrap_err();
        assert!(matches!(err, SwarmError::NoManager));
    }

    #[tokio::test(start_paused = true)]
    async fn external_worker_joins_and_health_lists_it() {
        let (cluster, nodes) = setup(&SwarmSpec::default());
        form(&nodes).await.unwrap();
        let (plan, ep, api) = &nodes[0];
        let manager = Manager { name: &plan.name, ip: ep.ip, api };
        let ext = cluster.api("laptop");
        let labels = BTreeMap::from([("gpu".to_string(), "yes".to_string())]);
        let st = join_external_worker(
            manager,
            "laptop",
            &ext,
            Some(Ipv4Addr::new(10, 0, 0, 1)),
            &labels,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(st.action, JoinAction::Joined);
        assert!(cluster
            .events()
            .contains(&"join laptop token=worker remote=10.0.0.10:2377 advertise=10.0.0.1".into()));
        let health = swarm_health(manager).await.unwrap();
        let names: Vec<_> = health.iter().map(|n| n.hostname.as_str()).collect();
        assert_eq!(names, ["n2d-mngr-0", "laptop", "n2d-wrkr-0", "n2d-wrkr-1", "n2d-wrkr-2"]);
        assert_eq!(health[1].labels.get("gpu").map(String::as_str), Some("yes"));
    }
}
