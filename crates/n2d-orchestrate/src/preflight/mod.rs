//! `n2d doctor` and the checks before a create: whether this host has what `create` needs, one
//! finding per check with its fix.
//!
//! A [`HostProbe`] gathers raw facts (tool output, /proc files, free space; the real one is
//! [`SystemProbe`]); [`run_checks`] is a pure function of those facts ([`checks`]), so every
//! finding is unit-tested against a fake host. [`Orchestrator::doctor`] runs them for
//! `n2d doctor` (after `--repair`'s recovery) and returns a [`DoctorReport`];
//! [`Orchestrator::preflight`] runs the same checks before `create` and `swarm create` and
//! stops on a failure. Nothing here prints: the report's notes and checks are the CLI's to show.

pub mod checks;
pub mod probe;
pub mod report;
pub mod system;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

pub use checks::{parse_forward_rules, run_checks, N2dChain, LOW_FREE_BYTES, MIN_FREE_BYTES, TESTED_QEMU};
pub use probe::{parse_proc_net_route, HostProbe, Route, ToolState};
pub use report::{Check, DoctorReport, Status};
pub use system::{GuestInitSource, SystemProbe};

use crate::{Orchestrator, Result};
use n2d_exec::Runner;
use n2d_spec::machine::{DEFAULT_BRIDGE, USER_NETWORK};
use n2d_swarm::Connector;
use n2d_vm::Hypervisor;

/// What `create` is about to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub bridge: String,
    /// An image ID (prefix) given with `--image`; none: the newest image, built if none is.
    pub image: Option<String>,
    /// Host folders are asked for (`--mount`): virtiofsd must be there.
    pub mounts: bool,
}

impl Default for Target {
    fn default() -> Self {
        Target { bridge: DEFAULT_BRIDGE.to_string(), image: None, mounts: false }
    }
}

/// What the user is told when a machine gets user-mode networking because n2d is not root.
pub const USER_NETWORK_NOTE: &str = "note: not running as root: VMs use user-mode networking (a switch in $N2D_HOME, Docker APIs and published ports on 127.0.0.1); run as root for a bridge";

/// What `n2d doctor --repair` says when no change was left half done.
pub const NOTHING_TO_REPAIR: &str = "nothing to repair: no change was left half done";

/// The network a machine gets without `--network` on the host `probe` sees: n2d's bridge as
/// root (or with CAP_NET_ADMIN in the ambient set), user-mode networking otherwise, with
/// [`USER_NETWORK_NOTE`] to say so.
pub fn default_network(probe: &dyn HostProbe) -> (String, Option<&'static str>) {
    network_for(probe.euid() == 0 || n2d_net::net_admin_inherited(&probe.proc_status()))
}

/// The default network of a host where n2d may (`privileged`: root or CAP_NET_ADMIN) or may
/// not make bridges and taps, and the note that goes with user-mode networking.
pub fn network_for(privileged: bool) -> (String, Option<&'static str>) {
    if privileged {
        (DEFAULT_BRIDGE.to_string(), None)
    } else {
        (USER_NETWORK.to_string(), Some(USER_NETWORK_NOTE))
    }
}

/// What `n2d doctor` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoctorRequest {
    /// `--repair`: complete or undo what a killed n2d left half done, first.
    pub repair: bool,
    /// `--network`; none: the default network of this host ([`default_network`]).
    pub network: Option<String>,
}

/// `create` cannot work here: the failing checks, one line each.
#[derive(Debug, thiserror::Error)]
#[error("this host is not ready for n2d machines (`n2d doctor` shows every check):\n{}", .0.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n"))]
pub struct NotReady(pub Vec<Check>);

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// `n2d doctor`: with `repair`, recovers what a killed n2d left (see [`crate::recover`]);
    /// else counts the changes left for recovery. Then every check for the network asked for.
    /// The report's notes come first, in order; the caller decides what a failed check means.
    pub fn doctor(&self, probe: &dyn HostProbe, request: &DoctorRequest) -> Result<DoctorReport> {
        let mut notes = Vec::new();
        if request.repair {
            if self.recover()?.is_empty() {
                notes.push(NOTHING_TO_REPAIR.to_string());
            }
        } else {
            let pending = self.home.intents().iter().filter(|e| !e.live).count();
            if pending > 0 {
                notes.push(format!("note: {pending} change(s) were interrupted (n2d was killed): `n2d doctor --repair` (or any command that changes state) completes or undoes them"));
            }
        }
        let bridge = match &request.network {
            Some(network) => network.clone(),
            None => {
                let (network, note) = default_network(probe);
                notes.extend(note.map(str::to_string));
                network
            }
        };
        let checks = run_checks(probe, &Target { bridge, image: None, mounts: false });
        Ok(DoctorReport { notes, checks })
    }
}

impl<R, H, C> Orchestrator<R, H, C> {
    /// Runs the checks before a create: fails with the failing lines, says the warnings (but
    /// not the KVM one: starting a VM says that itself).
    pub fn preflight(&self, probe: &dyn HostProbe, target: &Target) -> Result<(), NotReady> {
        let checks = run_checks(probe, target);
        let failed: Vec<Check> = checks.iter().filter(|c| c.status == Status::Fail).cloned().collect();
        if !failed.is_empty() {
            return Err(NotReady(failed));
        }
        for c in checks.iter().filter(|c| c.status == Status::Warn && c.name != "kvm") {
            self.progress.say(&format!(
                "warning: {}{}",
                c.finding,
                c.fix.as_ref().map(|f| format!(" (fix: {f})")).unwrap_or_default()
            ));
        }
        Ok(())
    }
}
