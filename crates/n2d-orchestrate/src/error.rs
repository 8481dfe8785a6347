//! What can fail, named after what failed. Errors of the layers below are passed through
//! unchanged (`transparent`), so the user reads the same message whichever layer reports it.

use n2d_store::StoreError;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "a machine named {name:?} already exists: pick another name or remove it with `n2d rm -f {name}`"
    )]
    MachineExists { name: String },
    #[error(
        "the state directory path {} is too long for QEMU's sockets: set N2D_HOME to a shorter path",
        .dir.display()
    )]
    StatePathTooLong { dir: PathBuf },
    #[error("{name} is running: stop it first (`n2d stop {name}`) or use `n2d rm -f {name}`")]
    MachineRunning { name: String },
    #[error("cannot create the data disk")]
    DataDisk(#[source] n2d_exec::ExecError),
    #[error("cannot make the data disk private")]
    DataDiskMode(#[source] std::io::Error),
    #[error("cannot connect to {name} ({endpoint})")]
    Connect {
        name: String,
        endpoint: String,
        #[source]
        source: n2d_swarm::ApiError,
    },
    #[error("{name}'s Docker engine is up but does not answer on {endpoint}")]
    DockerUnreachable {
        name: String,
        endpoint: String,
        #[source]
        source: Box<Error>,
    },
    #[error(transparent)]
    DockerApi(#[from] n2d_swarm::ApiError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// One node of a swarm could not be created.
    #[error("creating {name}")]
    CreateNode {
        name: String,
        #[source]
        source: Box<Error>,
    },
    #[error("no swarm named {0:?} (see `n2d swarm ls`)")]
    NoSuchSwarm(String),
    #[error("a swarm named {0:?} already exists (see `n2d swarm ls`; remove it with `n2d swarm rm {0}`)")]
    SwarmExists(String),
    /// Ctrl-C outside a wait for a VM or the lock (forming a swarm).
    #[error("interrupted while {what}")]
    Interrupted { what: &'static str },
    #[error("node {node} of swarm {swarm}")]
    SwarmNode {
        node: String,
        swarm: String,
        #[source]
        source: StoreError,
    },
    #[error("the VM of node {0} is missing")]
    NodeVmMissing(String),
    #[error("the swarm has no node to copy settings from")]
    NothingToCopy,
    #[error("memory of {node}")]
    NodeMemory {
        node: String,
        #[source]
        source: n2d_spec::machine::MachineSpecError,
    },
    #[error(
        "bridge {bridge} has {free} free addresses in {within} but the swarm needs {needed}: use fewer nodes, a larger --ip-range or a bridge with a larger subnet (--network)"
    )]
    BridgeTooSmall { bridge: String, free: usize, within: String, needed: usize },
    #[error("no manager of swarm {0} answers (are its machines running? see `n2d ls`)")]
    NoManagerAnswers(String),
    #[error(
        "removing the manager n2d talks to ({0}) is not supported yet: scale workers, or remove managers other than the first"
    )]
    RemoveContactManager(String),
    /// The swarm formed but some nodes never became Ready: what their consoles say.
    #[error("{error}")]
    NodesNotReady {
        error: n2d_swarm::SwarmError,
        #[source]
        consoles: ConsoleLines,
    },
    #[error(transparent)]
    Swarm(#[from] n2d_swarm::SwarmError),
    #[error(transparent)]
    Spec(#[from] n2d_spec::machine::MachineSpecError),
    #[error(transparent)]
    SwarmSpec(#[from] n2d_spec::swarm::SwarmSpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Net(#[from] n2d_net::NetError),
    #[error(transparent)]
    UserNet(#[from] n2d_net::user::UserNetError),
    #[error("{name} is on a bridge, where the host reaches its ports at its own address ({ip}): published ports are forwards on 127.0.0.1 for user-mode networking (--network user)")]
    PortNeedsUserNetwork { name: String, ip: std::net::Ipv4Addr },
    #[error("host port {port} is already forwarded to {holder}: pick another host port (HOST:GUEST)")]
    PortHeld { port: u16, holder: String },
    #[error("something else listens on 127.0.0.1:{port}: pick another host port (HOST:GUEST)")]
    PortBusy { port: u16 },
    #[error("{name} publishes nothing on host port {port} (see `n2d port {name}`)")]
    NoSuchPort { name: String, port: u16 },
    #[error("no machine or swarm named {0:?} (see `n2d ls` and `n2d swarm ls`)")]
    NoSuchTarget(String),
    #[error("an engine outside n2d cannot join a user-mode swarm: its managers' addresses ({ip}) exist only on the home's own switch; use a swarm on a bridge (as root) for add-host")]
    AddHostNeedsBridge { ip: std::net::Ipv4Addr },
    #[error(transparent)]
    Image(#[from] n2d_image::ImageError),
    #[error(transparent)]
    Pki(#[from] n2d_pki::PkiError),
    #[error(transparent)]
    ConfigDisk(#[from] n2d_proto::ConfigDiskError),
    #[error(transparent)]
    Vm(#[from] n2d_vm::VmError),
    #[error("{}: {message}", .path.display())]
    CertificateFile { path: PathBuf, message: String },
    #[error("{name}'s config disk has no room for the new certificate while it runs: stop it (`n2d stop {name}`), rotate again and start it")]
    ConfigDiskFull { name: String },
    #[error("{name}'s engine restarted but still presents certificate {presented}, not the new {expected}: restart it (`n2d restart {name}`) to load it from its config disk")]
    CertificateNotReloaded { name: String, presented: String, expected: String },
}

/// The last console lines of nodes that did not become Ready.
#[derive(Debug, thiserror::Error)]
#[error("last console lines:\n{0}")]
pub struct ConsoleLines(pub String);

impl Error {
    /// A mistake in what the user asked for (exit status 2), not a failure of the host.
    pub fn is_usage(&self) -> bool {
        match self {
            Error::MachineExists { .. }
            | Error::StatePathTooLong { .. }
            | Error::MachineRunning { .. }
            | Error::NoSuchSwarm(_)
            | Error::SwarmExists(_)
            | Error::BridgeTooSmall { .. }
            | Error::NodeMemory { .. }
            | Error::Spec(_)
            | Error::SwarmSpec(_) => true,
            // A missing machine, a bad $N2D_LOCK_TIMEOUT, a home that is not the caller's.
            Error::Store(e) => e.is_usage(),
            Error::Net(e) => e.is_usage(),
            Error::UserNet(e) => e.is_usage(),
            Error::PortNeedsUserNetwork { .. }
            | Error::PortHeld { .. }
            | Error::PortBusy { .. }
            | Error::NoSuchPort { .. }
            | Error::NoSuchTarget(_)
            | Error::AddHostNeedsBridge { .. } => true,
            Error::CreateNode { source, .. } | Error::DockerUnreachable { source, .. } => source.is_usage(),
            _ => false,
        }
    }

    /// Ctrl-C ended a wait (for a VM, or for a lock).
    pub fn is_interrupted(&self) -> bool {
        match self {
            Error::Vm(n2d_vm::VmError::Interrupted { .. })
            | Error::Interrupted { .. }
            | Error::Store(StoreError::LockInterrupted { .. }) => true,
            Error::Net(n2d_net::NetError::HostState {
                source: StoreError::LockInterrupted { .. }, ..
            }) => true,
            Error::CreateNode { source, .. } | Error::DockerUnreachable { source, .. } => {
                source.is_interrupted()
            }
            _ => false,
        }
    }
}
