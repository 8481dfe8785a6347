//! Suspend and resume: a running machine saved whole (device state and RAM) and its QEMU ended,
//! freeing its memory; `n2d start` (and `start --all`) restores it where it was, its wall clock
//! set again over the control port.
//!
//! The saved state lives in the machine's directory (`suspend.state`, and `suspend.json`
//! written once it is complete). While it is there the machine's disks belong to it: a cold
//! boot would change the disk under the saved RAM, so only `start --cold` (which discards the
//! state first, saying so) boots such a machine. A state that cannot be loaded (missing,
//! truncated, saved by another QEMU build) stops `start` with the way out, and leaves the
//! disks untouched.

use crate::{Error, Orchestrator, Result};
use n2d_exec::Runner;
use n2d_image::find_image;
use n2d_proto::ControlRequest;
use n2d_spec::machine::MachineName;
use n2d_store::{read_json, write_json, MachineRecord};
use n2d_swarm::Connector;
use n2d_vm::{Accel, Hypervisor, StartReport, VmState};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

const STATE_FILE: &str = "suspend.state";
const RECORD_FILE: &str = "suspend.json";
/// How long writing or loading a machine's RAM may take.
const TRANSFER: Duration = Duration::from_secs(300);

/// `suspend.json`: what saved the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suspended {
    /// The QEMU build that saved it: only that one loads it.
    pub qemu: String,
    pub accel: String,
    pub saved_unix_ms: u64,
}

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    fn suspend_paths(&self, name: &MachineName) -> (PathBuf, PathBuf) {
        let dir = self.home.machine_dir(name);
        (dir.join(STATE_FILE), dir.join(RECORD_FILE))
    }

    /// Whether `name` has a complete saved state (`suspend.json` is written last).
    pub(crate) fn has_saved_state(&self, name: &MachineName) -> bool {
        self.suspend_paths(name).1.exists()
    }

    /// Whether `name` is suspended (its saved state is complete and its QEMU is gone).
    pub fn is_suspended(&self, name: &MachineName) -> bool {
        self.has_saved_state(name) && self.machine_state(name) == VmState::Stopped
    }

    /// `n2d suspend NAME`: saves the running machine whole and ends its QEMU. `Ok(false)`: it
    /// was not running (already suspended, or stopped).
    pub fn suspend_machine(&self, name: &MachineName) -> Result<bool> {
        let record = self.load_record(name)?;
        let vm = self.vm_handle(name);
        if self.hypervisor.state(&vm) != VmState::Running {
            return Ok(false);
        }
        if !record.spec.mounts.is_empty() {
            // QEMU refuses to save a guest with a 9p folder mounted.
            return Err(Error::Usage(format!(
                "{name} shares host folders (--mount), which QEMU cannot save: stop it instead (n2d stop {name})"
            )));
        }
        let qemu = self.hypervisor.build().ok_or_else(|| Error::SuspendFailed {
            name: name.to_string(),
            reason: "QEMU's version cannot be told".into(),
        })?;
        let (state, done) = self.suspend_paths(name);
        let _ = std::fs::remove_file(&done);
        let partial = state.with_extension("partial");
        if let Err(e) = self.hypervisor.save(&vm, &partial, TRANSFER) {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
        std::fs::rename(&partial, &state)
            .map_err(|source| Error::SavedStateIo { path: state.clone(), source })?;
        let suspended = Suspended {
            qemu,
            accel: self.hypervisor.accel().to_string(),
            saved_unix_ms: crate::templates::unix_ms(),
        };
        write_json(&done, &suspended)?;
        if record.user_mode() {
            self.after_user_machine_left(&record)?;
        }
        Ok(true)
    }

    /// The boot of `n2d start`: a suspended machine is resumed (or, with `--cold`, its saved
    /// state discarded first and it boots), any other boots.
    pub(crate) fn boot_or_resume(
        &self,
        record: &MachineRecord,
        timeout: Duration,
        step: &dyn crate::ProgressStep,
        journal: &n2d_store::Journal,
    ) -> Result<StartReport> {
        let name = &record.spec.name;
        let (state, done) = self.suspend_paths(name);
        if !done.exists() {
            let _ = std::fs::remove_file(state.with_extension("partial"));
            return self.boot(record, timeout, step, Some(journal));
        }
        if self.cold.load(Ordering::Relaxed) {
            self.progress.say(&format!(
                "{name}: its saved state is discarded (--cold); it boots from its disks, and what ran in its memory is lost"
            ));
            let _ = std::fs::remove_file(&state);
            std::fs::remove_file(&done)
                .map_err(|source| Error::SavedStateIo { path: done.clone(), source })?;
            return self.boot(record, timeout, step, Some(journal));
        }
        let refused = |reason: String| Error::ResumeRefused { name: name.to_string(), reason };
        let suspended: Suspended = read_json(&done)
            .map_err(|e| refused(format!("its record is unreadable ({})", crate::swarm::chain(&e))))?;
        let qemu = self.hypervisor.build().unwrap_or_default();
        if suspended.qemu != qemu {
            return Err(refused(format!("it was saved by {}, and this is {qemu}", suspended.qemu)));
        }
        if !state.is_file() {
            return Err(refused(format!("its saved state {} is missing", state.display())));
        }
        let accel = Accel::from_recorded(&suspended.accel);
        let image = find_image(&self.home, &record.spec.image)?;
        let vm = self.vm_handle(name);
        self.ensure_switch_for(record)?;
        step.set("resuming");
        let launch = self.vm_launch(record, &image);
        let report = self
            .hypervisor
            .restore(&vm, &launch, &state, accel, TRANSFER)
            .map_err(|e| refused(crate::swarm::chain(&e)))?;
        journal.kill_point("after-qemu-start");
        self.hypervisor.control(&vm, ControlRequest::SetClock { unix_ms: crate::templates::unix_ms() })?;
        self.check_api(record, step)?;
        // Running again: the disks have moved on from the saved state, which must never load.
        let _ = std::fs::remove_file(&done);
        let _ = std::fs::remove_file(&state);
        Ok(report)
    }

    /// `n2d swarm suspend NAME`: every running node of the swarm, one after the other; the
    /// names of those suspended.
    pub fn suspend_swarm(&self, swarm: &n2d_spec::swarm::SwarmName) -> Result<Vec<MachineName>> {
        let record = self.load_swarm(swarm)?;
        let mut suspended = Vec::new();
        for node in record.managers.iter().chain(&record.workers) {
            if self.suspend_machine(node)? {
                suspended.push(node.clone());
            }
        }
        Ok(suspended)
    }
}
