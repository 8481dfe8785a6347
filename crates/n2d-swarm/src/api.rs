//! The small slice of the Docker Engine API that swarm orchestration needs,
//! as a trait so the orchestration can be tested against an in-memory fake.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use n2d_spec::swarm::{NodeRole, TlsPaths};

/// Docker's TLS port on n2d VMs.
pub const DOCKER_TLS_PORT: u16 = 2376;
/// Swarm's cluster-management port.
pub const SWARM_PORT: u16 = 2377;

/// How to reach one node's Docker engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub ip: Ipv4Addr,
    /// `tcp://IP:2376`
    pub docker_host: String,
    /// `None` means plain HTTP.
    pub tls: Option<TlsPaths>,
}

impl Endpoint {
    /// An n2d VM: Docker with TLS on `ip:2376`.
    pub fn vm(name: impl Into<String>, ip: Ipv4Addr, tls: Option<TlsPaths>) -> Endpoint {
        Endpoint { name: name.into(), ip, docker_host: format!("tcp://{ip}:{DOCKER_TLS_PORT}"), tls }
    }
}

/// A swarm join token. Secret: its `Debug` prints `<redacted>` and it has no
/// `Display`, so it cannot end up in logs or error messages by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl JoinToken {
    pub fn new(token: impl Into<String>) -> JoinToken {
        JoinToken(token.into())
    }

    /// The secret itself; only for handing to the Docker API.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokens {
    pub worker: JoinToken,
    pub manager: JoinToken,
}

impl JoinTokens {
    pub fn for_role(&self, role: NodeRole) -> &JoinToken {
        match role {
            NodeRole::Manager => &self.manager,
            NodeRole::Worker => &self.worker,
        }
    }
}

/// A daemon's own view of its swarm membership (`docker info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalSwarmState {
    Inactive,
    /// Joining is in progress.
    Pending,
    Active {
        node_id: String,
        is_manager: bool,
    },
    /// An autolocked swarm needs `docker swarm unlock`.
    Locked,
    Error(String),
}

/// Node state as the managers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Ready,
    Down,
    Disconnected,
    Unknown,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Ready => "ready",
            NodeState::Down => "down",
            NodeState::Disconnected => "disconnected",
            NodeState::Unknown => "unknown",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        })
    }
}

/// One entry of `docker node ls` (as seen by a manager).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub hostname: String,
    pub role: NodeRole,
    pub state: NodeState,
    pub availability: Availability,
    /// The node's address as the manager sees it.
    pub addr: Option<String>,
    pub leader: bool,
    pub labels: BTreeMap<String, String>,
}

impl NodeInfo {
    pub fn ready(&self) -> bool {
        self.state == NodeState::Ready
    }
}

/// A swarm task assigned to a node that has not finished shutting down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    pub service_id: Option<String>,
    pub state: String,
}

/// Called with the total bytes sent so far.
pub type ByteProgress = Arc<dyn Fn(u64) + Send + Sync>;

/// Errors from one Docker API call. The orchestration wraps these into a
/// [`crate::SwarmError`] naming the node and the step.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Docker(#[from] bollard::errors::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Anything else, e.g. an unexpected response, or a Docker error whose
    /// text had a secret scrubbed out of it.
    #[error("{0}")]
    Other(String),
}

impl ApiError {
    /// A join that dockerd gave up waiting for but goes on with (`503 Timeout was reached before
    /// node joined. The attempt to join the swarm will continue in the background.`): on a busy
    /// host a manager's join can take longer than dockerd's own wait.
    pub fn join_continues_in_background(&self) -> bool {
        self.to_string().contains("will continue in the background")
    }
}

/// What orchestration needs from one Docker engine. Implementations may use
/// `async fn`; the futures must be `Send`.
pub trait DockerApi: Send + Sync {
    fn ping(&self) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// The certificate (DER) the engine presents, checked as every request's is; `None` for
    /// an engine reached without TLS.
    fn server_certificate(&self) -> impl Future<Output = Result<Option<Vec<u8>>, ApiError>> + Send;

    fn swarm_state(&self) -> impl Future<Output = Result<LocalSwarmState, ApiError>> + Send;

    /// `docker swarm init --advertise-addr IP`; returns the new node id.
    fn init_swarm(&self, advertise_addr: Ipv4Addr) -> impl Future<Output = Result<String, ApiError>> + Send;

    /// Manager only.
    fn join_tokens(&self) -> impl Future<Output = Result<JoinTokens, ApiError>> + Send;

    /// Join the swarm managed at `manager_addr:2377`. With
    /// `advertise_addr: None` the daemon picks one itself.
    fn join_swarm(
        &self,
        manager_addr: Ipv4Addr,
        token: &JoinToken,
        advertise_addr: Option<Ipv4Addr>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Manager only.
    fn list_nodes(&self) -> impl Future<Output = Result<Vec<NodeInfo>, ApiError>> + Send;

    /// Manager only. Sets these keys; other labels on the node are kept.
    fn set_node_labels(
        &self,
        node_id: &str,
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Manager only.
    fn set_availability(
        &self,
        node_id: &str,
        availability: Availability,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Manager only: promote/demote.
    fn set_role(&self, node_id: &str, role: NodeRole) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Manager only: tasks on the node that are not yet shut down.
    fn list_tasks_on(&self, node_id: &str) -> impl Future<Output = Result<Vec<TaskInfo>, ApiError>> + Send;

    /// Manager only: the replicated services running fewer tasks than they want (by name).
    fn unsettled_services(&self) -> impl Future<Output = Result<Vec<String>, ApiError>> + Send;

    fn leave_swarm(&self, force: bool) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Manager only: `docker node rm`.
    fn remove_node(&self, node_id: &str, force: bool) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Stream a `docker save` archive from disk into `POST /images/load`.
    /// Returns the daemon's "Loaded image: ..." lines.
    fn load_image(
        &self,
        path: &Path,
        progress: ByteProgress,
    ) -> impl Future<Output = Result<Vec<String>, ApiError>> + Send;
}

/// Gives a client for an engine's endpoint: [`crate::BollardConnector`] for real engines, the
/// fake swarm (feature `fakes`) in tests.
pub trait Connector: Send + Sync {
    type Api: DockerApi;
    /// `timeout_secs` bounds each request.
    fn connect(&self, endpoint: &Endpoint, timeout_secs: u64) -> Result<Self::Api, ApiError>;
}
