//! A hypervisor for unit tests (feature `fakes`): no process, just a set of running machines.
//! It records every call as an event line (`start NAME`, `wait_ready NAME`, `stop NAME`,
//! `kill NAME`) and can be told to fail a start or a boot.

use crate::{
    Accel, BootFailure, Hypervisor, PortForward, StartReport, StopOutcome, VmError, VmHandle, VmLaunch,
    VmState,
};
use n2d_proto::ControlRequest;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How a machine's boot fails in [`FakeHypervisor::fail_boot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFault {
    /// The ready marker never comes: the VM keeps running until killed.
    Timeout,
    /// The guest stops during boot with this failure (the VM is gone).
    Exits(BootFailure),
    /// The wait is interrupted (Ctrl-C); the VM keeps running.
    Interrupted,
}

#[derive(Default)]
struct State {
    running: BTreeSet<String>,
    events: Vec<String>,
    fail_start: BTreeSet<String>,
    /// name -> faults for the next boots, in order (one per wait_ready).
    boot_faults: BTreeMap<String, Vec<BootFault>>,
    /// Host ports whose forwards fail (as when the port is taken).
    fail_forward: BTreeSet<u16>,
    /// name -> the launch of its last start.
    launches: BTreeMap<String, VmLaunch>,
    /// Machines whose control port cannot be reached.
    fail_control: BTreeSet<String>,
    /// What a guest does with a control request (a test's stand-in for n2d-init).
    on_control: Option<ControlHook>,
    /// Machines whose save or restore fails.
    fail_save: BTreeSet<String>,
    fail_restore: BTreeSet<String>,
    /// What [`Hypervisor::build`] says (an upgraded QEMU), when set.
    build: Option<String>,
}

type ControlHook = std::sync::Arc<dyn Fn(&VmHandle, ControlRequest) + Send + Sync>;

/// See the module documentation. Machines are known by name.
#[derive(Default)]
pub struct FakeHypervisor {
    state: Mutex<State>,
}

impl FakeHypervisor {
    pub fn new() -> FakeHypervisor {
        FakeHypervisor::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every start of `name` fails as QEMU refusing its configuration.
    pub fn fail_start(&self, name: &str) {
        self.lock().fail_start.insert(name.into());
    }

    /// The next boot of `name` fails this way (call again to queue more).
    pub fn fail_boot(&self, name: &str, fault: BootFault) {
        self.lock().boot_faults.entry(name.into()).or_default().push(fault);
    }

    /// Forwards of host port `port` fail, as when something else listens there.
    pub fn fail_forward(&self, port: u16) {
        self.lock().fail_forward.insert(port);
    }

    /// QEMU was upgraded: [`Hypervisor::build`] says `build` from now on.
    pub fn set_build(&self, build: &str) {
        self.lock().build = Some(build.into());
    }

    /// Saving `name` fails (its QEMU is gone all the same).
    pub fn fail_save(&self, name: &str) {
        self.lock().fail_save.insert(name.into());
    }

    /// Restoring `name` fails (as with a damaged state file).
    pub fn fail_restore(&self, name: &str) {
        self.lock().fail_restore.insert(name.into());
    }

    /// The control port of `name` cannot be reached.
    pub fn fail_control(&self, name: &str) {
        self.lock().fail_control.insert(name.into());
    }

    /// Runs `f` for every control request a running machine gets (what its guest does).
    pub fn on_control(&self, f: impl Fn(&VmHandle, ControlRequest) + Send + Sync + 'static) {
        self.lock().on_control = Some(std::sync::Arc::new(f));
    }

    /// How `name` was last started.
    pub fn last_launch(&self, name: &str) -> Option<VmLaunch> {
        self.lock().launches.get(name).cloned()
    }

    /// The machine is running, as if started earlier (or by another n2d).
    pub fn set_running(&self, name: &str) {
        self.lock().running.insert(name.into());
    }

    /// The machine's QEMU died (killed by hand, OOM).
    pub fn crash(&self, name: &str) {
        self.lock().running.remove(name);
    }

    pub fn running(&self) -> Vec<String> {
        self.lock().running.iter().cloned().collect()
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.lock().running.contains(name)
    }

    pub fn events(&self) -> Vec<String> {
        self.lock().events.clone()
    }

    /// How many events start with `prefix` (e.g. `"start web-0"`).
    pub fn count(&self, prefix: &str) -> usize {
        self.lock().events.iter().filter(|e| e.starts_with(prefix)).count()
    }
}

impl FakeHypervisor {
    /// The next boot fault of `vm`, if any, as `wait_ready` meets it.
    fn wait(&self, vm: &VmHandle, timeout: Duration) -> Result<(), VmError> {
        let mut s = self.lock();
        let fault = s.boot_faults.get_mut(&vm.name).filter(|f| !f.is_empty()).map(|f| f.remove(0));
        let console_tail = "  | (fake console)".to_string();
        match fault {
            None if s.running.contains(&vm.name) => Ok(()),
            None => Err(VmError::ExitedDuringBoot {
                name: vm.name.clone(),
                console_tail,
                failure: BootFailure::Unknown,
            }),
            Some(BootFault::Timeout) => {
                Err(VmError::ReadyTimeout { name: vm.name.clone(), timeout, console_tail })
            }
            Some(BootFault::Interrupted) => Err(VmError::Interrupted { name: vm.name.clone() }),
            Some(BootFault::Exits(failure)) => {
                s.running.remove(&vm.name);
                Err(VmError::ExitedDuringBoot { name: vm.name.clone(), console_tail, failure })
            }
        }
    }
}

impl Hypervisor for FakeHypervisor {
    fn start(&self, vm: &VmHandle, launch: &VmLaunch) -> Result<StartReport, VmError> {
        let mut s = self.lock();
        s.events.push(format!("start {}", vm.name));
        s.launches.insert(vm.name.clone(), launch.clone());
        if s.fail_start.contains(&vm.name) {
            return Err(VmError::Start { name: vm.name.clone(), stderr: "injected start failure".into() });
        }
        if !s.running.insert(vm.name.clone()) {
            return Err(VmError::AlreadyRunning { name: vm.name.clone() });
        }
        Ok(StartReport { pid: 4242, accel: Accel::Tcg, why_not_kvm: None })
    }

    fn wait_ready_after(&self, vm: &VmHandle, _offset: u64, timeout: Duration) -> Result<(), VmError> {
        self.lock().events.push(format!("wait_ready_after {}", vm.name));
        self.wait(vm, timeout)
    }

    fn wait_ready(&self, vm: &VmHandle, _since: u64, timeout: Duration) -> Result<(), VmError> {
        self.lock().events.push(format!("wait_ready {}", vm.name));
        self.wait(vm, timeout)
    }

    fn state(&self, vm: &VmHandle) -> VmState {
        if self.lock().running.contains(&vm.name) {
            VmState::Running
        } else {
            VmState::Stopped
        }
    }

    fn stop(&self, vm: &VmHandle, _timeout: Duration) -> Result<StopOutcome, VmError> {
        let mut s = self.lock();
        s.events.push(format!("stop {}", vm.name));
        Ok(if s.running.remove(&vm.name) { StopOutcome::Graceful } else { StopOutcome::AlreadyStopped })
    }

    fn kill(&self, vm: &VmHandle) -> Result<(), VmError> {
        let mut s = self.lock();
        s.events.push(format!("kill {}", vm.name));
        s.running.remove(&vm.name);
        Ok(())
    }

    /// What QEMU gives with KVM (2): the fakes' specs spell their vCPUs out anyway.
    fn default_cpus(&self) -> u32 {
        2
    }

    fn add_forward(&self, vm: &VmHandle, forward: PortForward) -> Result<(), VmError> {
        let mut s = self.lock();
        s.events.push(format!("forward {} {}:{}", vm.name, forward.host, forward.guest));
        if !s.running.contains(&vm.name) {
            return Err(VmError::NotRunning { name: vm.name.clone() });
        }
        if s.fail_forward.contains(&forward.host) {
            return Err(VmError::Forward { name: vm.name.clone(), forward, message: "injected".into() });
        }
        Ok(())
    }

    fn remove_forward(&self, vm: &VmHandle, host_port: u16) -> Result<(), VmError> {
        let mut s = self.lock();
        s.events.push(format!("unforward {} {host_port}", vm.name));
        if !s.running.contains(&vm.name) {
            return Err(VmError::NotRunning { name: vm.name.clone() });
        }
        Ok(())
    }

    fn accel(&self) -> Accel {
        Accel::Tcg
    }

    fn build(&self) -> Option<String> {
        Some(self.lock().build.clone().unwrap_or_else(|| "fake QEMU 10.0.2".into()))
    }

    fn set_paused(&self, vm: &VmHandle, paused: bool) -> Result<(), VmError> {
        let mut s = self.lock();
        s.events.push(format!("{} {}", if paused { "pause" } else { "resume" }, vm.name));
        if !s.running.contains(&vm.name) {
            return Err(VmError::NotRunning { name: vm.name.clone() });
        }
        Ok(())
    }

    fn save(&self, vm: &VmHandle, state: &std::path::Path, _timeout: Duration) -> Result<(), VmError> {
        let mut s = self.lock();
        s.events.push(format!("save {}", vm.name));
        if !s.running.remove(&vm.name) {
            return Err(VmError::NotRunning { name: vm.name.clone() });
        }
        if s.fail_save.contains(&vm.name) {
            return Err(VmError::Qmp { command: "migrate".into(), message: "injected save failure".into() });
        }
        std::fs::write(state, format!("saved state of {}", vm.name))
            .map_err(|source| VmError::Io { path: state.to_path_buf(), source })
    }

    fn restore(
        &self,
        vm: &VmHandle,
        launch: &VmLaunch,
        state: &std::path::Path,
        accel: Accel,
        _timeout: Duration,
    ) -> Result<StartReport, VmError> {
        let mut s = self.lock();
        s.events.push(format!("restore {}", vm.name));
        s.launches.insert(vm.name.clone(), launch.clone());
        if s.fail_restore.contains(&vm.name) || !state.exists() {
            return Err(VmError::Qmp {
                command: "migrate-incoming".into(),
                message: "injected restore failure".into(),
            });
        }
        if !s.running.insert(vm.name.clone()) {
            return Err(VmError::AlreadyRunning { name: vm.name.clone() });
        }
        Ok(StartReport { pid: 4243, accel, why_not_kvm: None })
    }

    fn exec_port(&self, vm: &VmHandle) -> Result<crate::exec::ExecPort, VmError> {
        let mut s = self.lock();
        s.events.push(format!("exec {}", vm.name));
        if !s.running.contains(&vm.name) {
            return Err(VmError::NotRunning { name: vm.name.clone() });
        }
        let (host, guest) = std::os::unix::net::UnixStream::pair().map_err(|source| VmError::Socket {
            name: vm.name.clone(),
            what: "exec",
            source,
        })?;
        std::thread::spawn(move || fake_guest_session(guest));
        Ok(crate::exec::ExecPort::over(host))
    }

    fn control(&self, vm: &VmHandle, request: ControlRequest) -> Result<(), VmError> {
        let hook = {
            let mut s = self.lock();
            s.events.push(format!("control {} {}", vm.name, request.as_line().trim()));
            if !s.running.contains(&vm.name) {
                return Err(VmError::NotRunning { name: vm.name.clone() });
            }
            if s.fail_control.contains(&vm.name) {
                let source = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
                return Err(VmError::Socket { name: vm.name.clone(), what: "control", source });
            }
            s.on_control.clone()
        };
        if let Some(hook) = hook {
            hook(vm, request);
        }
        Ok(())
    }
}

/// A launch for tests that never read it.
pub fn sample_launch() -> VmLaunch {
    VmLaunch {
        cpus: 1,
        memory_mib: 512,
        kernel: "k".into(),
        initrd: "i".into(),
        rootfs: "r".into(),
        nic: crate::Nic::Tap { tap: "tap".into(), mac: "52:54:00:00:00:00".into() },
        memory: crate::Memory::Private,
        mounts: Vec::new(),
    }
}

/// A stand-in for n2d-init's exec server: runs the session's command on this host (no
/// terminal), with all its input first, and sends its output and status.
fn fake_guest_session(mut port: std::os::unix::net::UnixStream) {
    use n2d_proto::exec::{Frame, MAX_FRAME};
    use std::io::Write;
    let Ok(Some(Frame::Start(start))) = Frame::read_from(&mut port) else { return };
    let _ = Frame::Started { session: start.session }.write_to(&mut port);
    let mut input = Vec::new();
    while let Ok(Some(frame)) = Frame::read_from(&mut port) {
        match frame {
            Frame::Stdin(data) => input.extend_from_slice(&data),
            Frame::StdinEnd => break,
            _ => {}
        }
    }
    let child = std::process::Command::new(&start.argv[0])
        .args(&start.argv[1..])
        .envs(start.env.iter().filter_map(|p| p.split_once('=')))
        .current_dir(start.workdir.as_deref().unwrap_or("/"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        let _ = Frame::Exit(127).write_to(&mut port);
        return;
    };
    let mut stdin = child.stdin.take().expect("piped");
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let Ok(output) = child.wait_with_output() else { return };
    let _ = feeder.join();
    for chunk in output.stdout.chunks(MAX_FRAME) {
        let _ = Frame::Stdout(chunk.to_vec()).write_to(&mut port);
    }
    for chunk in output.stderr.chunks(MAX_FRAME) {
        let _ = Frame::Stderr(chunk.to_vec()).write_to(&mut port);
    }
    let _ = Frame::Exit(output.status.code().unwrap_or(137)).write_to(&mut port);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sample_launch as launch;

    #[test]
    fn records_calls_and_injects_faults() {
        let h = FakeHypervisor::new();
        let vm = VmHandle::new("a", "/nonexistent/a");
        h.fail_boot("a", BootFault::Exits(BootFailure::EmulationRace));
        h.start(&vm, &launch()).unwrap();
        assert!(matches!(h.wait_ready(&vm, 0, Duration::ZERO), Err(VmError::ExitedDuringBoot { .. })));
        assert_eq!(h.state(&vm), VmState::Stopped);
        h.start(&vm, &launch()).unwrap();
        h.wait_ready(&vm, 0, Duration::ZERO).unwrap();
        assert_eq!(h.stop(&vm, Duration::ZERO).unwrap(), StopOutcome::Graceful);
        h.fail_start("a");
        assert!(matches!(h.start(&vm, &launch()), Err(VmError::Start { .. })));
        assert_eq!(h.events(), ["start a", "wait_ready a", "start a", "wait_ready a", "stop a", "start a"]);
    }
}
