//! Hypervisor driver. `Hypervisor` is a trait only because a second driver (Hyper-V on Windows)
//! is planned; [`Qemu`] is the one there is.
//!
//! * [`argv`]: the QEMU command line, a pure function of [`VmHandle`] and [`VmLaunch`].
//! * [`boot_failure`]: tells the emulator's known boot race (retried) from real faults.
//! * [`accel`]: KVM when the CPU has vmx/svm and KVM really starts, TCG otherwise.
//! * [`qmp`]: a small QMP client (status, quit).
//! * [`qemu`]: lifecycle: start (daemonized), wait for the guest's ready marker, stop
//!   (graceful over the control channel, then QMP quit, then SIGKILL), state.
//! * [`exec`]: run a command in the guest over its exec port (`n2d exec`, `n2d cp`).
//! * [`console`]: attach the user's terminal to the guest's shell.
//! * [`serial_log`]: the serial console's log: rotated at each start, tailed, sanitized.
//! * [`version`]: the installed QEMU's version.

pub mod accel;
pub mod argv;
pub mod boot_failure;
pub mod console;
pub mod exec;
#[cfg(any(test, feature = "fakes"))]
pub mod fake;
pub mod identity;
pub mod qemu;
pub mod qmp;
pub mod serial_log;
pub mod snapshot;
pub mod version;
pub mod virtiofs;

pub use accel::{detect_accel, Accel, AccelChoice, KvmDevice, NoKvm};
pub use argv::{tcg_thread, TcgThread};
pub use boot_failure::{classify_boot_failure, BootFailure};
pub use qemu::{Qemu, QemuConfig, StartReport, StopOutcome};
pub use version::{detect_qemu_build, QemuVersion};

use std::path::PathBuf;
use std::time::Duration;

/// Which machine: all that state, stop and kill need (they find QEMU by its pid file in the
/// directory), so they work even when the machine's record is damaged or its image is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmHandle {
    pub name: String,
    /// The machine directory: QEMU's cwd, where its sockets, pid file and serial log live.
    pub dir: PathBuf,
}

impl VmHandle {
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> VmHandle {
        VmHandle { name: name.into(), dir: dir.into() }
    }
}

/// How to start a machine: its resources, boot files and network cards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmLaunch {
    pub cpus: u32,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
    pub nic: Nic,
    pub memory: Memory,
    /// Host folders shared with the guest (virtio-9p), each under its tag.
    pub mounts: Vec<VmMount>,
}

/// A host folder as QEMU shares it (virtio-fs, served by a virtiofsd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmMount {
    pub tag: String,
    pub host: PathBuf,
    pub read_only: bool,
    /// The guest's owners are the host's (virtiofsd as root, in its own namespaces);
    /// otherwise every owner the guest sets is the user's on the host ([`virtiofs::args`]).
    pub keep_owners: bool,
}

/// Where a VM's RAM lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Memory {
    /// QEMU's own anonymous memory: every cold boot.
    Private,
    /// A warm template being made: its RAM is this file, shared (`share=on`), so the file holds
    /// the RAM once the VM is saved and the saved state leaves it out (`x-ignore-shared`).
    TemplateFile(PathBuf),
    /// A clone of a template: the template's RAM file mapped copy-on-write (`share=off`, opened
    /// read-only): the clone never writes the file, and clones share the pages none of them
    /// wrote through the host's page cache.
    CloneOf(PathBuf),
}

impl Memory {
    /// Whether the RAM is a template's file, which a save or a restore leaves out.
    pub fn is_file(&self) -> bool {
        !matches!(self, Memory::Private)
    }
}

/// A machine's network: a tap on a bridge, or user-mode networking (no root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nic {
    /// One NIC on a tap that n2d-net attached to a bridge.
    Tap { tap: String, mac: String },
    /// Two NICs: `mac` on the home's VDE switch (the segment the machines share; `switch` is
    /// its socket directory), and `uplink_mac` on QEMU's user-mode stack (outbound traffic and
    /// `forwards` from the host's 127.0.0.1; addresses in `n2d_proto::uplink`).
    User { switch: PathBuf, mac: String, uplink_mac: String, forwards: Vec<PortForward> },
    /// The NICs of a warm template: the same cards as the machines cloned from it (one, or two
    /// with `uplink_mac`), each on a hub port that leads nowhere. A template reaches no network,
    /// and its saved state holds no network backend's state (a clone brings its own).
    Unplugged { mac: String, uplink_mac: Option<String> },
}

pub use n2d_spec::ports::PortForward;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    Running,
    Stopped,
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmState::Running => "running",
            VmState::Stopped => "stopped",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    QemuMissing(n2d_exec::ExecError),
    #[error("QEMU refused to start {name}: {stderr}")]
    Start { name: String, stderr: String },
    #[error("cannot run QEMU for {name}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} stopped during boot; last console lines:\n{console_tail}")]
    ExitedDuringBoot { name: String, console_tail: String, failure: BootFailure },
    #[error(
        "{name} did not get its Docker engine up within {timeout:?}; last console lines:\n{console_tail}"
    )]
    ReadyTimeout { name: String, timeout: Duration, console_tail: String },
    #[error("{name} is already running")]
    AlreadyRunning { name: String },
    #[error("interrupted while {name} was booting")]
    Interrupted { name: String },
    #[error("{name} is not running (start it with `n2d start {name}`)")]
    NotRunning { name: String },
    #[error("cannot reach the {what} socket of {name}")]
    Socket {
        name: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP command {command} failed: {message}")]
    Qmp { command: String, message: String },
    #[error("cannot forward {forward} to {name}: {message} (is the host port in use? pick another with HOST:GUEST)")]
    Forward { name: String, forward: PortForward, message: String },
    #[error("cannot remove the forward of 127.0.0.1:{port} from {name}: {message}")]
    Unforward { name: String, port: u16, message: String },
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What n2d needs from a hypervisor.
pub trait Hypervisor: Send + Sync {
    fn start(&self, vm: &VmHandle, launch: &VmLaunch) -> Result<StartReport, VmError>;
    /// Waits for the ready marker on the console. `since`: the log's length before the start;
    /// [`Qemu`] starts each boot on a fresh log (the previous one rotated) and reads it all.
    fn wait_ready(&self, vm: &VmHandle, since: u64, timeout: Duration) -> Result<(), VmError>;
    /// Waits for a running machine's ready marker after byte `offset` of its console log (its
    /// engine restarted, e.g. after a `reload-tls` control request).
    fn wait_ready_after(&self, vm: &VmHandle, offset: u64, timeout: Duration) -> Result<(), VmError>;
    fn state(&self, vm: &VmHandle) -> VmState;
    fn stop(&self, vm: &VmHandle, timeout: Duration) -> Result<StopOutcome, VmError>;
    /// Ends the VM at once (no guest shutdown).
    fn kill(&self, vm: &VmHandle) -> Result<(), VmError>;
    /// Ends what a stopped machine may still have running beside its VM before its directory
    /// goes (a host folder's virtiofsd that a killed start left waiting for QEMU).
    fn release(&self, vm: &VmHandle) {
        let _ = vm;
    }
    /// vCPUs a machine gets when the user does not choose.
    fn default_cpus(&self) -> u32;
    /// Adds a forward from the host's 127.0.0.1 to a running user-mode machine.
    fn add_forward(&self, vm: &VmHandle, forward: PortForward) -> Result<(), VmError>;
    /// Takes the forward of a host port away from a running user-mode machine.
    fn remove_forward(&self, vm: &VmHandle, host_port: u16) -> Result<(), VmError>;
    /// Hands `forward` from running machine `from` to running machine `to`, with as short a
    /// time as can be between `from` letting the host port go and `to` taking it (one socket
    /// can hold it at a time). When `to` cannot take it, `from` has it again and the error says
    /// why.
    fn move_forward(&self, from: &VmHandle, to: &VmHandle, forward: PortForward) -> Result<(), VmError> {
        self.remove_forward(from, forward.host)?;
        self.add_forward(to, forward).inspect_err(|_| {
            let _ = self.add_forward(from, forward);
        })
    }
    /// Hands a request to the running guest's init over its control port, without waiting for
    /// it to act (it says on the console when it has).
    fn control(&self, vm: &VmHandle, request: n2d_proto::ControlRequest) -> Result<(), VmError>;
    /// Connects to the running guest's exec port (waiting for another session on it to end).
    fn exec_port(&self, vm: &VmHandle) -> Result<exec::ExecPort, VmError>;
    /// The accelerator a VM started now would get.
    fn accel(&self) -> Accel;
    /// Which QEMU build runs VMs (the first line of its `--version`), `None` when it cannot be
    /// told: a saved state is loaded only by the build that saved it.
    fn build(&self) -> Option<String>;
    /// Freezes (`running: false`, QMP `stop`) or thaws (`cont`) a running VM's vCPUs: its
    /// QEMU, devices and sockets stay, the guest's clock stands still meanwhile.
    fn set_paused(&self, vm: &VmHandle, paused: bool) -> Result<(), VmError>;
    /// Saves a running VM to `state` (device state; the RAM too unless it is a template's
    /// file) within `timeout`, then ends its QEMU. The disks are flushed and left as they were.
    fn save(&self, vm: &VmHandle, state: &std::path::Path, timeout: Duration) -> Result<(), VmError>;
    /// Starts QEMU with `launch`'s devices waiting for a saved state (`-incoming defer`) under
    /// `accel` (the one the state was saved under), loads `state` within `timeout` and lets the
    /// guest run on from where it was saved. On failure the new QEMU is ended.
    fn restore(
        &self,
        vm: &VmHandle,
        launch: &VmLaunch,
        state: &std::path::Path,
        accel: Accel,
        timeout: Duration,
    ) -> Result<StartReport, VmError>;
}
