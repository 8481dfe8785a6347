//! In-memory swarm for tests: one shared [`Cluster`], one [`FakeApi`] per
//! daemon (keyed by hostname). Records every call as a readable event line
//! and can inject failures.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::api::{
    ApiError, Availability, ByteProgress, Connector, DockerApi, Endpoint, JoinToken, JoinTokens,
    LocalSwarmState, NodeInfo, NodeRole, NodeState, TaskInfo,
};

pub const WORKER_TOKEN: &str = "SWMTKN-1-secret-worker";
pub const MANAGER_TOKEN: &str = "SWMTKN-1-secret-manager";

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, NodeInfo>,
    /// hostname -> node id the daemon believes it has.
    local: BTreeMap<String, String>,
    events: Vec<String>,
    fail: BTreeSet<(String, String)>,
    never_ready: BTreeSet<String>,
    /// Hosts whose join dockerd times out on (503) but completes in the background.
    slow_join: BTreeSet<String>,
    /// node id -> tasks still running; drained nodes lose one per poll.
    tasks: BTreeMap<String, usize>,
    /// service name -> polls of `unsettled_services` that still find it short of replicas.
    unsettled: BTreeMap<String, usize>,
    /// hostname -> bytes received by load_image.
    loaded: BTreeMap<String, u64>,
    next_id: u32,
    /// (host, op) -> what to run when that call is made (a test presses Ctrl-C).
    hooks: BTreeMap<(String, String), Hook>,
    /// hostname -> the certificate its engine presents (DER); none set: `None`.
    certificates: BTreeMap<String, Vec<u8>>,
}

type Hook = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone, Default)]
pub struct Cluster(Arc<Mutex<State>>);

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    pub fn api(&self, host: &str) -> FakeApi {
        FakeApi { host: host.to_string(), cluster: self.clone() }
    }

    /// Make `op` (e.g. "join", "leave", "load") fail on `host`.
    pub fn fail(&self, host: &str, op: &str) {
        self.lock().fail.insert((host.into(), op.into()));
    }

    /// Runs `f` whenever `op` is called on `host` (before the call's effect).
    pub fn on_call(&self, host: &str, op: &str, f: impl Fn() + Send + Sync + 'static) {
        self.lock().hooks.insert((host.into(), op.into()), Arc::new(f));
    }

    /// Joins of `host` answer dockerd's 503 "continue in the background", yet the node joins.
    pub fn slow_join(&self, host: &str) {
        self.lock().slow_join.insert(host.into());
    }

    /// The engine on `host` presents this certificate (DER) from now on.
    pub fn present_certificate(&self, host: &str, der: Vec<u8>) {
        self.lock().certificates.insert(host.into(), der);
    }

    pub fn never_ready(&self, host: &str) {
        self.lock().never_ready.insert(host.into());
    }

    /// The daemon on `host` believes it is in some other swarm.
    pub fn set_foreign(&self, host: &str) {
        self.lock().local.insert(host.into(), "foreign-id".into());
    }

    pub fn set_tasks(&self, host: &str, n: usize) {
        let mut s = self.lock();
        let id = s.local[host].clone();
        s.tasks.insert(id, n);
    }

    /// `service` runs short of replicas for the next `polls` looks at the services.
    pub fn set_unsettled(&self, service: &str, polls: usize) {
        self.lock().unsettled.insert(service.into(), polls);
    }

    /// A node's state as the managers see it (a VM that stopped goes Down).
    pub fn set_node_state(&self, host: &str, state: NodeState) {
        let mut s = self.lock();
        if let Some(node) = s.nodes.values_mut().find(|n| n.hostname == host) {
            node.state = state;
        }
    }

    pub fn events(&self) -> Vec<String> {
        self.lock().events.clone()
    }

    pub fn count_events(&self, prefix: &str) -> usize {
        self.lock().events.iter().filter(|e| e.starts_with(prefix)).count()
    }

    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.lock().nodes.values().cloned().collect()
    }

    pub fn loaded(&self, host: &str) -> Option<u64> {
        self.lock().loaded.get(host).copied()
    }
}

/// Engines are known by the endpoint's name (the node's hostname); `fail(host, "connect")`
/// makes connecting to one fail.
impl Connector for Cluster {
    type Api = FakeApi;
    fn connect(&self, endpoint: &Endpoint, _timeout_secs: u64) -> Result<FakeApi, ApiError> {
        if self.lock().fail.contains(&(endpoint.name.clone(), "connect".to_string())) {
            return Err(err(format!("injected connect failure on {}", endpoint.name)));
        }
        Ok(self.api(&endpoint.name))
    }
}

#[derive(Clone)]
pub struct FakeApi {
    host: String,
    cluster: Cluster,
}

fn err(msg: impl Into<String>) -> ApiError {
    ApiError::Other(msg.into())
}

impl FakeApi {
    /// Record the call and apply injected failures.
    fn call(&self, s: &mut State, op: &str, event: String) -> Result<(), ApiError> {
        s.events.push(event);
        if let Some(hook) = s.hooks.get(&(self.host.clone(), op.to_string())) {
            hook();
        }
        if s.fail.contains(&(self.host.clone(), op.to_string())) {
            return Err(err(format!("injected {op} failure on {}", self.host)));
        }
        Ok(())
    }

    fn require_manager(&self, s: &State) -> Result<(), ApiError> {
        let is_manager = s
            .local
            .get(&self.host)
            .and_then(|id| s.nodes.get(id))
            .is_some_and(|n| n.role == NodeRole::Manager);
        if is_manager {
            Ok(())
        } else {
            Err(err("This node is not a swarm manager."))
        }
    }

    fn add_node(&self, s: &mut State, role: NodeRole, addr: String) -> String {
        s.next_id += 1;
        let id = format!("id{}", s.next_id);
        let state = if s.never_ready.contains(&self.host) { NodeState::Unknown } else { NodeState::Ready };
        s.nodes.insert(
            id.clone(),
            NodeInfo {
                id: id.clone(),
                hostname: self.host.clone(),
                role,
                state,
                availability: Availability::Active,
                addr: Some(addr),
                leader: s.nodes.is_empty(),
                labels: BTreeMap::new(),
            },
        );
        s.local.insert(self.host.clone(), id.clone());
        id
    }
}

impl DockerApi for FakeApi {
    async fn ping(&self) -> Result<(), ApiError> {
        let mut s = self.cluster.lock();
        self.call(&mut s, "ping", format!("ping {}", self.host))
    }

    async fn server_certificate(&self) -> Result<Option<Vec<u8>>, ApiError> {
        let mut s = self.cluster.lock();
        self.call(&mut s, "certificate", format!("certificate {}", self.host))?;
        Ok(s.certificates.get(&self.host).cloned())
    }

    async fn swarm_state(&self) -> Result<LocalSwarmState, ApiError> {
        let s = self.cluster.lock();
        // Not recorded (called often); "state" failures model an
        // unreachable daemon.
        if s.fail.contains(&(self.host.clone(), "state".to_string())) {
            return Err(err(format!("{} unreachable", self.host)));
        }
        Ok(match s.local.get(&self.host) {
            None => LocalSwarmState::Inactive,
            Some(id) => LocalSwarmState::Active {
                node_id: id.clone(),
                is_manager: s.nodes.get(id).is_some_and(|n| n.role == NodeRole::Manager),
            },
        })
    }

    async fn init_swarm(&self, advertise_addr: Ipv4Addr) -> Result<String, ApiError> {
        let mut s = self.cluster.lock();
        let ev = format!("init {} advertise={advertise_addr}", self.host);
        self.call(&mut s, "init", ev)?;
        if s.local.contains_key(&self.host) {
            return Err(err("This node is already part of a swarm."));
        }
        Ok(self.add_node(&mut s, NodeRole::Manager, advertise_addr.to_string()))
    }

    async fn join_tokens(&self) -> Result<JoinTokens, ApiError> {
        let s = self.cluster.lock();
        self.require_manager(&s)?;
        Ok(JoinTokens { worker: JoinToken::new(WORKER_TOKEN), manager: JoinToken::new(MANAGER_TOKEN) })
    }

    async fn join_swarm(
        &self,
        manager_addr: Ipv4Addr,
        token: &JoinToken,
        advertise_addr: Option<Ipv4Addr>,
    ) -> Result<(), ApiError> {
        let mut s = self.cluster.lock();
        let (kind, role) = match token.expose() {
            WORKER_TOKEN => ("worker", NodeRole::Worker),
            MANAGER_TOKEN => ("manager", NodeRole::Manager),
            _ => ("invalid", NodeRole::Worker),
        };
        let adv = advertise_addr.map_or("auto".to_string(), |a| a.to_string());
        let ev = format!("join {} token={kind} remote={manager_addr}:2377 advertise={adv}", self.host);
        self.call(&mut s, "join", ev)?;
        if kind == "invalid" {
            return Err(err("invalid join token"));
        }
        let manager_there = s
            .nodes
            .values()
            .any(|n| n.role == NodeRole::Manager && n.addr.as_deref() == Some(&manager_addr.to_string()));
        if !manager_there {
            return Err(err(format!("no manager at {manager_addr}:2377")));
        }
        if s.local.contains_key(&self.host) {
            return Err(err("This node is already part of a swarm."));
        }
        self.add_node(&mut s, role, adv);
        if s.slow_join.contains(&self.host) {
            return Err(err("Docker responded with status code 503: Timeout was reached before node joined. The attempt to join the swarm will continue in the background. Use the \"docker info\" command to see the current swarm status of your node."));
        }
        Ok(())
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, ApiError> {
        let mut s = self.cluster.lock();
        self.call(&mut s, "list_nodes", format!("list_nodes {}", self.host))?;
        self.require_manager(&s)?;
        Ok(s.nodes.values().cloned().collect())
    }

    async fn set_node_labels(
        &self,
        node_id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let mut s = self.cluster.lock();
        self.require_manager(&s)?;
        let node = s.nodes.get_mut(node_id).ok_or_else(|| err("no such node"))?;
        let ev = format!("labels {} {labels:?}", node.hostname);
        node.labels.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.call(&mut s, "labels", ev)
    }

    async fn set_availability(&self, node_id: &str, availability: Availability) -> Result<(), ApiError> {
        let mut s = self.cluster.lock();
        self.require_manager(&s)?;
        let node = s.nodes.get_mut(node_id).ok_or_else(|| err("no such node"))?;
        node.availability = availability;
        let ev = format!("{availability} {}", node.hostname);
        self.call(&mut s, "availability", ev)
    }

    async fn set_role(&self, node_id: &str, role: NodeRole) -> Result<(), ApiError> {
        let mut s = self.cluster.lock();
        self.require_manager(&s)?;
        let node = s.nodes.get_mut(node_id).ok_or_else(|| err("no such node"))?;
        node.role = role;
        let ev = format!("role {} {role}", node.hostname);
        self.call(&mut s, "role", ev)
    }

    async fn list_tasks_on(&self, node_id: &str) -> Result<Vec<TaskInfo>, ApiError> {
        let mut s = self.cluster.lock();
        self.require_manager(&s)?;
        let drained = s.nodes.get(node_id).is_some_and(|n| n.availability == Availability::Drain);
        let n = s.tasks.entry(node_id.to_string()).or_insert(0);
        let tasks = (0..*n)
            .map(|i| TaskInfo { id: format!("t{i}"), service_id: None, state: "running".into() })
            .collect();
        if drained {
            *n = n.saturating_sub(1);
        }
        Ok(tasks)
    }

    async fn unsettled_services(&self) -> Result<Vec<String>, ApiError> {
        let mut s = self.cluster.lock();
        self.call(&mut s, "services", format!("services {}", self.host))?;
        self.require_manager(&s)?;
        let short: Vec<String> =
            s.unsettled.iter().filter(|(_, n)| **n > 0).map(|(k, _)| k.clone()).collect();
        for n in s.unsettled.values_mut() {
            *n = n.saturating_sub(1);
        }
        Ok(short)
    }

    async fn leave_swarm(&self, force: bool) -> Result<(), ApiError> {
        let mut s = self.cluster.lock();
        self.call(&mut s, "leave", format!("leave {} force={force}", self.host))?;
        let id = s.local.get(&self.host).cloned().ok_or_else(|| err("This node is not part of a swarm"))?;
        if let Some(node) = s.nodes.get_mut(&id) {
            if node.role == NodeRole::Manager && !force {
                return Err(err(
                    "You are attempting to leave the swarm on a node that is participating as a manager.",
                ));
            }
            node.state = NodeState::Down;
        }
        s.local.remove(&self.host);
        Ok(())
    }

    async fn remove_node(&self, node_id: &str, force: bool) -> Result<(), ApiError> {
        let mut s = self.cluster.lock();
        self.require_manager(&s)?;
        let node = s.nodes.get(node_id).ok_or_else(|| err("no such node"))?;
        let ev = format!("remove {} force={force}", node.hostname);
        if node.state != NodeState::Down && !force {
            s.events.push(ev);
            return Err(err("node is not down and can't be removed"));
        }
        self.call(&mut s, "remove", ev)?;
        s.nodes.remove(node_id);
        Ok(())
    }

    async fn load_image(&self, path: &Path, progress: ByteProgress) -> Result<Vec<String>, ApiError> {
        {
            let mut s = self.cluster.lock();
            self.call(&mut s, "load", format!("load {}", self.host))?;
        }
        let io = |source| ApiError::Io { path: path.to_path_buf(), source };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mut buf = [0u8; 1024];
        let mut sent = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            sent += n as u64;
            progress(sent);
            tokio::task::yield_now().await;
        }
        self.cluster.lock().loaded.insert(self.host.clone(), sent);
        Ok(vec!["Loaded image: demo:latest".into()])
    }
}
