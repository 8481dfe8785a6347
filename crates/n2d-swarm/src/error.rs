//! Errors of the orchestration, named after the step that failed.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("connecting to Docker on {node}")]
    Connect {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("Docker on {node} does not answer")]
    Ping {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("reading swarm state of {node}")]
    SwarmState {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("{node} is in swarm state {state}; fix it (e.g. `docker swarm leave --force` on it) or recreate the node")]
    BadLocalState { node: String, state: String },
    #[error(
        "{node} already belongs to another swarm; run `docker swarm leave --force` on it or recreate it"
    )]
    ForeignSwarm { node: String },
    #[error("{node} is a swarm worker but must be the first manager; recreate it")]
    NotAManager { node: String },
    #[error("no manager among the nodes given; a swarm needs at least one")]
    NoManager,
    #[error("initializing the swarm on {node}")]
    InitSwarm {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("reading join tokens from {node}")]
    JoinTokens {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("joining {node} to the swarm")]
    JoinSwarm {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("listing swarm nodes on {node}")]
    ListNodes {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("{node} is not in the swarm")]
    NodeMissing { node: String },
    #[error("setting labels on {node}")]
    SetLabels {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("nodes not ready after {waited:?}: {}; check them with `n2d swarm ls` and their logs", nodes.join(", "))]
    NodesNotReady { nodes: Vec<String>, waited: Duration },
    #[error("refusing to remove {node}: it is the manager n2d talks to; remove other nodes first or use another manager")]
    RemoveSelf { node: String },
    #[error("demoting manager {node} to worker")]
    Demote {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("draining {node}")]
    Drain {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("listing tasks on {node}")]
    ListTasks {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("listing the swarm's services on {node}")]
    ListServices {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("{node}'s tasks did not move within {waited:?} (still running there: {tasks}; short of replicas: {services}); see `docker service ps`")]
    TasksNotMoved { node: String, waited: Duration, tasks: usize, services: String },
    #[error("{node} was not Ready in the swarm again within {waited:?}; see `n2d logs {node}` and `docker node ls`")]
    NotReadyAgain { node: String, waited: Duration },
    #[error("making {node} active again")]
    Activate {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("making {node} leave the swarm")]
    LeaveSwarm {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("removing {node} from the swarm")]
    RemoveNode {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("loading image into {node}")]
    LoadImage {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("{}: not a `docker save` archive: {reason}; create one with `docker save -o FILE.tar IMAGE`", path.display())]
    BadArchive { path: PathBuf, reason: String },
    #[error("reading {}", path.display())]
    ArchiveIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = SwarmError> = std::result::Result<T, E>;
