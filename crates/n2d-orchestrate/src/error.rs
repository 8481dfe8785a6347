//! What can fail, named after what failed. Errors of the layers below are passed through
//! unchanged (`transparent`), so the user reads the same message whichever layer reports it.

pub use n2d_store::StoreError;
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
    #[error("I/O error on the saved state {path}")]
    SavedStateIo {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot suspend {name}: {reason}")]
    SuspendFailed { name: String, reason: String },
    #[error("{name} cannot be resumed: {reason}; start it with `n2d start --cold {name}` (it then boots from its disks, and what ran in its memory is lost)")]
    ResumeRefused { name: String, reason: String },
    #[error("no image is built to warm: build one first (`n2d image build`)")]
    NoImageToWarm,
    #[error("a warm template cannot be used: {reason}")]
    TemplateUnusable { reason: String },
    #[error("I/O error on the warm template's {path}")]
    TemplateIo {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    #[error("{from} cannot reach {to} ({ip}) on {port}, which a swarm's nodes need between them: open it between the hosts (firewalls, routes), or place the nodes on bridges that reach each other")]
    NodesCannotReach { from: String, to: String, ip: String, port: String },
    #[error("{0}")]
    UpgradePlan(#[from] crate::upgrade::UpgradePlanError),
    #[error(transparent)]
    UpgradeInterrupted(Box<crate::upgrade::UpgradeInterrupted>),
    #[error(transparent)]
    UpgradeNode(Box<crate::upgrade::UpgradeFailed>),
    #[error("cannot make the fault on {machine}")]
    Fault {
        machine: String,
        #[source]
        source: Box<n2d_exec::ExecError>,
    },
    #[error(transparent)]
    HostSpec(#[from] n2d_spec::host::HostSpecError),
    #[error(transparent)]
    Remote(Box<crate::remote::RemoteError>),
    #[error(transparent)]
    SwarmSpec(#[from] n2d_spec::swarm::SwarmSpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A value in the environment n2d refuses.
    #[error(transparent)]
    Settings(#[from] crate::SettingsError),
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
    #[error(transparent)]
    Exec(#[from] n2d_vm::exec::ExecError),
    #[error("cannot copy to {what}: {message}")]
    CopyFailed { what: String, message: String },
    #[error("{}: {message}", .path.display())]
    CertificateFile { path: PathBuf, message: String },
    #[error("{name}'s config disk has no room for the new certificate while it runs: stop it (`n2d stop {name}`), rotate again and start it")]
    ConfigDiskFull { name: String },
    #[error("{name}'s engine restarted but still presents certificate {presented}, not the new {expected}: restart it (`n2d restart {name}`) to load it from its config disk")]
    CertificateNotReloaded { name: String, presented: String, expected: String },
    /// `n2d env` cannot write a path that is not UTF-8 into an environment line unchanged.
    #[error(
        "the certificates' path {} is not valid UTF-8, so `n2d env` cannot print it exactly: set $N2D_HOME to a path that is valid UTF-8",
        .path.display()
    )]
    CertPathNotUtf8 { path: PathBuf },
    /// A mistake in what the user asked for, said in full (no cause follows).
    #[error("{0}")]
    Usage(String),
    #[error("image {image} is used by {machines}: remove those machines first (n2d rm NAME)")]
    ImageInUse { image: String, machines: String },
    #[error(
        "cannot tell which image machine {name} uses: mend its record or remove it (n2d rm -f {name}) first"
    )]
    ImageUsers {
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("no image to export: build one first with `n2d image build`")]
    NoImageToExport,
    #[error("cannot read the guest init {} (from --init or N2D_INIT)", .path.display())]
    GuestInitUnreadable {
        path: PathBuf,
        #[source]
        source: n2d_store::safe_fs::InputFileError,
    },
    #[error(transparent)]
    Build(#[from] n2d_image::BuildError),
    #[error(transparent)]
    Export(#[from] n2d_export::ExportError),
    #[error(transparent)]
    ExportConfig(#[from] n2d_export::config::ConfigError),
    #[error(transparent)]
    Input(#[from] n2d_store::safe_fs::InputFileError),
    #[error("cannot read {}", .path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `n2d adopt`: a machine of that name is already recorded.
    #[error(
        "a machine named {name} already exists in this home (see `n2d ls`, or remove hosts/{name}.json)"
    )]
    AdoptedExists { name: String },
    #[error("a machine named {name} was recorded meanwhile")]
    RecordedMeanwhile { name: String },
    #[error("this home has no CA, so no export was made for {name} here: adopt it from the home that ran `n2d image export --for {name}`")]
    AdoptWithoutCa { name: String },
    #[error("{name}'s Docker engine does not answer at {host} with a certificate of this home's CA for that address (is it running, and was it exported here with --for {name}? With DHCP, use a name in its certificate: {name}.mshome.net, or {name}.internal in /etc/hosts)")]
    AdoptUnanswered {
        name: String,
        host: String,
        #[source]
        source: n2d_swarm::ApiError,
    },
    #[error("the engine presented no certificate")]
    NoCertificatePresented,
    #[error("the engine at {host} presents a certificate of this home's CA issued for another machine ({names}), not {name}: adopt it under its own name, or check the address")]
    CertificateForAnotherMachine { host: String, names: String, name: String },
    #[error("n2d certs rotate")]
    CertsNotRotated(#[source] NotRotated),
    #[error("{0}")]
    Failed(String),
    /// The host checks before a create failed (see [`crate::preflight`]).
    #[error(transparent)]
    NotReady(#[from] crate::preflight::NotReady),
    /// A flag's value (`--memory`) does not parse.
    #[error("{flag}")]
    Flag {
        flag: &'static str,
        #[source]
        source: n2d_spec::machine::MachineSpecError,
    },
    /// Reading a file, or writing what was asked for to the caller's writer (`n2d logs`).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The machines whose certificates a rotation could not renew.
#[derive(Debug, thiserror::Error)]
#[error("certificates not rotated: {}", .0.join(", "))]
pub struct NotRotated(pub Vec<String>);

/// What an error means for the user, whichever layer it comes from: the CLI maps it to its exit
/// status (and only there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A mistake in what the user asked for (bad input, an unknown machine): exit status 2.
    Usage,
    /// Ctrl-C ended it: exit status 130.
    Interrupted,
    /// The host, a tool or a machine failed: exit status 1.
    Failure,
}

impl ErrorKind {
    /// The kind of `err` and its causes: interrupted if any link was, else usage if any link
    /// is a usage error, else a failure. Knows this crate's [`Error`] and the errors of the
    /// layers below (which may reach a caller wrapped in other errors).
    pub fn of_chain(err: &(dyn std::error::Error + 'static)) -> ErrorKind {
        let chain = || std::iter::successors(Some(err), |e| e.source());
        if chain().any(link_interrupted) {
            ErrorKind::Interrupted
        } else if chain().any(link_usage) {
            ErrorKind::Usage
        } else {
            ErrorKind::Failure
        }
    }
}

/// Whether this one link of a chain (not its causes) says Ctrl-C.
fn link_interrupted(c: &(dyn std::error::Error + 'static)) -> bool {
    c.downcast_ref::<Error>().is_some_and(Error::is_interrupted)
        || matches!(c.downcast_ref(), Some(n2d_vm::VmError::Interrupted { .. }))
        || matches!(c.downcast_ref(), Some(StoreError::LockInterrupted { .. }))
        || c.downcast_ref::<n2d_export::ExportError>().is_some_and(n2d_export::ExportError::is_interrupted)
}

/// Whether this one link of a chain (not its causes) is a usage error.
fn link_usage(c: &(dyn std::error::Error + 'static)) -> bool {
    c.downcast_ref::<Error>().is_some_and(Error::is_usage)
        || c.is::<n2d_spec::machine::MachineSpecError>()
        || c.is::<n2d_spec::swarm::SwarmSpecError>()
        || c.is::<n2d_spec::host::HostSpecError>()
        || c.downcast_ref::<crate::remote::RemoteError>().is_some_and(crate::remote::RemoteError::is_usage)
        || c.downcast_ref::<StoreError>().is_some_and(StoreError::is_usage)
        || c.downcast_ref::<n2d_store::safe_fs::InputFileError>()
            .is_some_and(n2d_store::safe_fs::InputFileError::is_usage)
        || c.downcast_ref::<n2d_image::ImageError>().is_some_and(n2d_image::ImageError::is_usage)
        || c.downcast_ref::<n2d_image::BuildError>().is_some_and(n2d_image::BuildError::is_usage)
        || c.downcast_ref::<n2d_net::NetError>().is_some_and(n2d_net::NetError::is_usage)
}

/// The last console lines of nodes that did not become Ready.
#[derive(Debug, thiserror::Error)]
#[error("last console lines:\n{0}")]
pub struct ConsoleLines(pub String);

impl From<crate::remote::RemoteError> for Error {
    fn from(e: crate::remote::RemoteError) -> Error {
        Error::Remote(Box::new(e))
    }
}

impl Error {
    /// What it means for the user (and the CLI's exit status): see [`ErrorKind::of_chain`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::of_chain(self)
    }

    /// The I/O error it is, if it is one (a write to the caller's writer may be in it).
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }

    /// An error of the export: its usage errors are said in full, without their cause.
    pub(crate) fn export(e: n2d_export::ExportError) -> Error {
        if e.is_usage() {
            Error::Usage(e.to_string())
        } else {
            Error::Export(e)
        }
    }

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
            | Error::HostSpec(_)
            | Error::SwarmSpec(_)
            | Error::NoImageToWarm
            | Error::UpgradePlan(_) => true,
            // A missing machine, a home that is not the caller's.
            Error::Store(e) => e.is_usage(),
            // A bad $N2D_LOCK_TIMEOUT, $N2D_TCG_THREAD...
            Error::Settings(e) => e.is_usage(),
            Error::Net(e) => e.is_usage(),
            Error::Remote(e) => e.is_usage(),
            Error::UserNet(e) => e.is_usage(),
            Error::PortNeedsUserNetwork { .. }
            | Error::PortHeld { .. }
            | Error::PortBusy { .. }
            | Error::NoSuchPort { .. }
            | Error::NoSuchTarget(_)
            | Error::AddHostNeedsBridge { .. }
            | Error::CertPathNotUtf8 { .. } => true,
            Error::Usage(_)
            | Error::ImageInUse { .. }
            | Error::NoImageToExport
            | Error::AdoptedExists { .. }
            | Error::RecordedMeanwhile { .. }
            | Error::AdoptWithoutCa { .. } => true,
            Error::ImageUsers { source, .. } => source.is_usage(),
            Error::GuestInitUnreadable { source, .. } | Error::Input(source) => source.is_usage(),
            Error::Image(e) => e.is_usage(),
            Error::Build(e) => e.is_usage(),
            Error::Export(e) => e.is_usage(),
            Error::ExportConfig(e) => e.is_usage(),
            Error::CreateNode { source, .. } | Error::DockerUnreachable { source, .. } => source.is_usage(),
            _ => false,
        }
    }

    /// Ctrl-C ended a wait (for a VM, or for a lock).
    pub fn is_interrupted(&self) -> bool {
        match self {
            Error::Vm(n2d_vm::VmError::Interrupted { .. })
            | Error::Interrupted { .. }
            | Error::UpgradeInterrupted { .. }
            | Error::Store(StoreError::LockInterrupted { .. }) => true,
            Error::Net(n2d_net::NetError::HostState {
                source: StoreError::LockInterrupted { .. }, ..
            }) => true,
            Error::CreateNode { source, .. } | Error::DockerUnreachable { source, .. } => {
                source.is_interrupted()
            }
            Error::Export(e) => e.is_interrupted(),
            _ => false,
        }
    }
}

/// An error and its causes on one line, `error: cause: cause` (as `{:#}` of an `anyhow::Error`).
pub fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(e), |e| e.source()).map(|e| e.to_string()).collect::<Vec<_>>().join(": ")
}

/// A size flag's value (`--memory 2G`), or the usage error naming the flag.
pub(crate) fn size_flag(flag: &'static str, value: &str) -> Result<n2d_spec::machine::ByteSize> {
    value.parse().map_err(|source| Error::Flag { flag, source })
}
