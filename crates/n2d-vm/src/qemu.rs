//! The QEMU driver: lifecycle of one `qemu-system-x86_64` process per machine.

use crate::accel::{detect_accel, Accel};
use crate::argv::{
    qemu_argv, tcg_thread, Begin, Tcg, TcgThread, CONTROL_SOCKET, PID_FILE, QEMU_BINARY, QEMU_PACKAGE,
    QMP_SOCKET, SERIAL_LOG, TCG_TB_SIZE_MIB, UPLINK_NETDEV,
};
use crate::identity::{is_machine_qemu, ProcFacts, QemuExe};
use crate::version::{detect_qemu_build, QemuVersion};
use crate::{Hypervisor, PortForward, VmError, VmHandle, VmLaunch, VmState};
use n2d_exec::SearchPath;
use n2d_proto::ControlRequest;
#[cfg(test)]
use n2d_proto::READY_MARKER;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartReport {
    pub pid: i32,
    pub accel: Accel,
    /// Set when KVM was not used, with the reason (said once to the user).
    pub why_not_kvm: Option<crate::accel::NoKvm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    AlreadyStopped,
    /// The guest shut down cleanly (dockerd stopped, disks unmounted).
    Graceful,
    /// The guest did not shut down in time and QEMU was ended.
    Forced,
}

/// How n2d runs QEMU: what the CLI's settings say (`n2d_orchestrate::Settings`, read from
/// the environment once; nothing here reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// The binary to run (`$N2D_QEMU`, default [`QEMU_BINARY`]).
    pub binary: String,
    /// Forces TCG's threading whatever the QEMU version (`$N2D_TCG_THREAD`).
    pub tcg_thread: Option<TcgThread>,
    /// TCG's translation cache in MiB instead of [`TCG_TB_SIZE_MIB`] (`$N2D_TCG_TB_SIZE`).
    pub tb_size_mib: Option<u32>,
    /// Never use KVM (`$N2D_NO_KVM`).
    pub no_kvm: bool,
    /// Where a bare binary name is found (`$PATH`), to recognise a running QEMU by its
    /// executable.
    pub search_path: SearchPath,
}

impl Default for QemuConfig {
    /// [`QEMU_BINARY`], no overrides, KVM when usable, and an empty search path (a running
    /// QEMU is then recognised by its file name only).
    fn default() -> Self {
        QemuConfig {
            binary: QEMU_BINARY.to_string(),
            tcg_thread: None,
            tb_size_mib: None,
            no_kvm: false,
            search_path: SearchPath::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Qemu {
    pub config: QemuConfig,
    /// Set (e.g. by a SIGINT handler) to abandon waits, so the caller can roll back.
    pub cancel: Arc<AtomicBool>,
    /// Its build (`--version`'s first line), asked once per process; its version is read from it.
    build: Arc<OnceLock<Option<String>>>,
    /// The binary resolved through the search path, to recognise a running QEMU by its
    /// executable.
    exe: Arc<OnceLock<QemuExe>>,
}

impl Default for Qemu {
    fn default() -> Self {
        Qemu::new(QemuConfig::default())
    }
}

impl Qemu {
    pub fn new(config: QemuConfig) -> Qemu {
        Qemu { config, cancel: Arc::default(), build: Arc::default(), exe: Arc::default() }
    }

    /// The binary n2d runs.
    pub fn binary(&self) -> &str {
        &self.config.binary
    }

    /// The installed QEMU's version (`None` when it cannot be told), detected once.
    pub fn version(&self) -> Option<QemuVersion> {
        QemuVersion::parse(self.build.get_or_init(|| detect_qemu_build(&self.config.binary)).as_ref()?)
    }

    /// TCG's threading for this QEMU: `$N2D_TCG_THREAD`, else by version ([`tcg_thread`]).
    pub fn tcg_thread(&self) -> TcgThread {
        let forced = self.config.tcg_thread;
        tcg_thread(forced.is_none().then(|| self.version()).flatten(), forced)
    }

    /// How TCG runs this QEMU's VMs: [`Qemu::tcg_thread`] and the translation cache's size.
    pub fn tcg(&self) -> Tcg {
        Tcg { thread: self.tcg_thread(), tb_size_mib: self.config.tb_size_mib.unwrap_or(TCG_TB_SIZE_MIB) }
    }

    fn launch(&self, vm: &VmHandle, launch: &VmLaunch, accel: Accel, begin: Begin) -> Result<i32, VmError> {
        // Never clear the files of a QEMU that is still running (e.g. two `start`s at once).
        if self.pid(vm).is_some() {
            return Err(VmError::AlreadyRunning { name: vm.name.clone() });
        }
        for stale in
            [PID_FILE, QMP_SOCKET, CONTROL_SOCKET, crate::argv::CONSOLE_SOCKET, crate::exec::EXEC_SOCKET]
        {
            let _ = std::fs::remove_file(vm.dir.join(stale));
        }
        let tcg = if accel == Accel::Tcg {
            self.tcg()
        } else {
            Tcg { thread: TcgThread::Single, tb_size_mib: TCG_TB_SIZE_MIB }
        };
        // Each start begins a fresh log (the previous boot's kept as serial.log.1): what the
        // guest can write to the host's disk through its console is one boot's output.
        crate::serial_log::rotate(&vm.dir).map_err(|e| VmError::Start {
            name: vm.name.clone(),
            stderr: format!("moving {SERIAL_LOG} aside: {e}"),
        })?;
        // With -daemonize the parent exits once the VM is set up: its status and stderr tell
        // whether QEMU accepted the configuration.
        let argv = qemu_argv(vm, launch, accel, tcg, begin);
        crate::virtiofs::start(vm, &launch.mounts, &self.config.search_path)?;
        tracing::info!(
            "{}: starting {} {} (in {})",
            vm.name,
            self.config.binary,
            argv.join(" "),
            vm.dir.display()
        );
        let started = std::time::Instant::now();
        let output = Command::new(&self.config.binary)
            .args(&argv)
            .current_dir(&vm.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| {
                crate::virtiofs::stop(vm);
                if source.kind() == std::io::ErrorKind::NotFound {
                    VmError::QemuMissing(n2d_exec::ExecError::NotInstalled {
                        program: self.config.binary.clone(),
                        package: QEMU_PACKAGE,
                    })
                } else {
                    VmError::Spawn { name: vm.name.clone(), source }
                }
            })?;
        tracing::info!(
            "{}: QEMU's setup {} ({:.2}s)",
            vm.name,
            output.status,
            started.elapsed().as_secs_f64()
        );
        if !output.status.success() {
            crate::virtiofs::stop(vm);
            return Err(VmError::Start { name: vm.name.clone(), stderr: n2d_exec::tail(&output.stderr, 4) });
        }
        read_pid(&vm.dir).ok_or_else(|| VmError::Start {
            name: vm.name.clone(),
            stderr: "QEMU exited without writing its pid file".into(),
        })
    }

    /// The pid of this machine's QEMU, if it is running. The pid file alone is not trusted:
    /// the process must be alive, not a zombie, run by our uid, be the QEMU binary
    /// (/proc/PID/exe), and have this machine's data disk on its command line (QEMU's cwd is
    /// `/` once it daemonizes, so that cannot tell). See [`is_machine_qemu`].
    pub fn pid(&self, vm: &VmHandle) -> Option<i32> {
        let pid = read_pid(&vm.dir)?;
        let facts = ProcFacts::read(pid)?;
        let exe = self.exe.get_or_init(|| QemuExe::resolve(&self.config.binary, &self.config.search_path));
        let uid = nix::unistd::getuid().as_raw();
        is_machine_qemu(&facts, exe, uid, &vm.dir.join(crate::argv::DATA_DISK_FILE)).then_some(pid)
    }

    /// A monitor command for a running machine.
    fn monitor(&self, vm: &VmHandle, command_line: &str) -> Result<String, VmError> {
        if self.pid(vm).is_none() {
            return Err(VmError::NotRunning { name: vm.name.clone() });
        }
        crate::qmp::human(&vm.dir.join(QMP_SOCKET), &vm.name, command_line)
    }

    fn wait_gone(&self, vm: &VmHandle, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.pid(vm).is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.pid(vm).is_none()
    }
}

impl Qemu {
    /// Waits for the ready marker in the console log after byte `offset` (what a boot failure
    /// looks like is recognised on the way).
    fn wait_marker(&self, vm: &VmHandle, mut offset: u64, timeout: Duration) -> Result<(), VmError> {
        let log = vm.dir.join(SERIAL_LOG);
        let deadline = Instant::now() + timeout;
        let mut watch = crate::boot_failure::ConsoleWatch::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Reading the log file is cheap; the guest signals readiness on its console, so
            // nothing here competes with the emulated CPUs for host time. Read in pieces, at
            // most 16 MiB a round: the guest decides how much there is.
            if let Ok(mut f) = std::fs::File::open(&log) {
                if f.seek(SeekFrom::Start(offset)).is_ok() {
                    for _ in 0..256 {
                        let Ok(n @ 1..) = f.read(&mut buf) else { break };
                        offset += n as u64;
                        watch.feed(&buf[..n]);
                    }
                }
            }
            if watch.ready() {
                return Ok(());
            }
            if self.cancel.load(Ordering::Relaxed) {
                return Err(VmError::Interrupted { name: vm.name.clone() });
            }
            if self.pid(vm).is_none() {
                return Err(VmError::ExitedDuringBoot {
                    name: vm.name.clone(),
                    console_tail: console_tail(&vm.dir, 15),
                    failure: watch.failure(),
                });
            }
            if Instant::now() >= deadline {
                return Err(VmError::ReadyTimeout {
                    name: vm.name.clone(),
                    timeout,
                    console_tail: console_tail(&vm.dir, 15),
                });
            }
            // A stat and a read of a small file: cheap enough to notice readiness within 0.1 s.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Hypervisor for Qemu {
    fn start(&self, vm: &VmHandle, launch: &VmLaunch) -> Result<StartReport, VmError> {
        let choice = detect_accel(self.config.no_kvm);
        if choice.accel == Accel::Kvm {
            match self.launch(vm, launch, Accel::Kvm, Begin::Boot) {
                // Some hosts accept KVM at setup and fail at the first vCPU run: give it a moment.
                Ok(pid) => {
                    std::thread::sleep(Duration::from_millis(1500));
                    if self.pid(vm).is_some() {
                        return Ok(StartReport { pid, accel: Accel::Kvm, why_not_kvm: None });
                    }
                }
                Err(VmError::QemuMissing(e)) => return Err(VmError::QemuMissing(e)),
                Err(_) => {}
            }
            let pid = self.launch(vm, launch, Accel::Tcg, Begin::Boot)?;
            return Ok(StartReport {
                pid,
                accel: Accel::Tcg,
                why_not_kvm: Some(crate::accel::NoKvm::StartFailed),
            });
        }
        let pid = self.launch(vm, launch, Accel::Tcg, Begin::Boot)?;
        Ok(StartReport { pid, accel: Accel::Tcg, why_not_kvm: choice.why_not_kvm })
    }

    fn wait_ready(&self, vm: &VmHandle, _since: u64, timeout: Duration) -> Result<(), VmError> {
        // `launch` rotated the log: all of it is this boot's, whatever length it had before.
        self.wait_marker(vm, 0, timeout)
    }

    fn wait_ready_after(&self, vm: &VmHandle, offset: u64, timeout: Duration) -> Result<(), VmError> {
        self.wait_marker(vm, offset, timeout)
    }

    fn state(&self, vm: &VmHandle) -> VmState {
        if self.pid(vm).is_some() {
            VmState::Running
        } else {
            VmState::Stopped
        }
    }

    fn stop(&self, vm: &VmHandle, timeout: Duration) -> Result<StopOutcome, VmError> {
        if self.pid(vm).is_none() {
            return Ok(StopOutcome::AlreadyStopped);
        }
        // Graceful: ask n2d-init to stop dockerd, sync, unmount and power off.
        if let Ok(mut s) = UnixStream::connect(vm.dir.join(CONTROL_SOCKET)) {
            let _ = s.write_all(ControlRequest::PowerOff.as_line().as_bytes());
            if self.wait_gone(vm, timeout) {
                crate::virtiofs::stop(vm);
                return Ok(StopOutcome::Graceful);
            }
        }
        self.kill(vm)?;
        Ok(StopOutcome::Forced)
    }

    fn kill(&self, vm: &VmHandle) -> Result<(), VmError> {
        if self.pid(vm).is_some() {
            let _ = crate::qmp::execute(&vm.dir.join(QMP_SOCKET), &vm.name, "quit");
            if !self.wait_gone(vm, Duration::from_secs(5)) {
                if let Some(pid) = self.pid(vm) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                self.wait_gone(vm, Duration::from_secs(5));
            }
        }
        // Its virtiofsd end when QEMU hangs up; any a failed start left waiting end here.
        crate::virtiofs::stop(vm);
        Ok(())
    }

    fn release(&self, vm: &VmHandle) {
        if self.pid(vm).is_none() {
            crate::virtiofs::stop(vm);
        }
    }

    fn default_cpus(&self) -> u32 {
        let accel = detect_accel(self.config.no_kvm).accel;
        let tcg = if accel == Accel::Tcg { self.tcg_thread() } else { TcgThread::Single };
        crate::argv::default_cpus(accel, tcg)
    }

    fn add_forward(&self, vm: &VmHandle, forward: PortForward) -> Result<(), VmError> {
        let out = self.monitor(vm, &add_forward_command(forward))?;
        added_forward(vm, forward, out)
    }

    fn control(&self, vm: &VmHandle, request: ControlRequest) -> Result<(), VmError> {
        if self.pid(vm).is_none() {
            return Err(VmError::NotRunning { name: vm.name.clone() });
        }
        let socket_err = |source| VmError::Socket { name: vm.name.clone(), what: "control", source };
        let mut s = UnixStream::connect(vm.dir.join(CONTROL_SOCKET)).map_err(socket_err)?;
        s.write_all(request.as_line().as_bytes()).map_err(socket_err)?;
        // QEMU reads the socket only while the guest has the port open (n2d-init reopens it
        // every second), and drops what is left unread when we hang up: keep the connection
        // until QEMU has taken the line (nothing left in our send queue).
        let deadline = Instant::now() + Duration::from_secs(30);
        while unsent_bytes(&s).map_err(socket_err)? > 0 {
            if Instant::now() >= deadline {
                let source = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the guest did not read its control port",
                );
                return Err(socket_err(source));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn accel(&self) -> Accel {
        detect_accel(self.config.no_kvm).accel
    }

    fn build(&self) -> Option<String> {
        let qemu = self.build.get_or_init(|| detect_qemu_build(&self.config.binary)).clone()?;
        Some(format!("{qemu} (n2d devices {})", crate::argv::DEVICE_LAYOUT))
    }

    fn exec_port(&self, vm: &VmHandle) -> Result<crate::exec::ExecPort, VmError> {
        if self.pid(vm).is_none() {
            return Err(VmError::NotRunning { name: vm.name.clone() });
        }
        crate::exec::ExecPort::open(vm)
    }

    fn set_paused(&self, vm: &VmHandle, paused: bool) -> Result<(), VmError> {
        if self.pid(vm).is_none() {
            return Err(VmError::NotRunning { name: vm.name.clone() });
        }
        crate::qmp::execute(&vm.dir.join(QMP_SOCKET), &vm.name, if paused { "stop" } else { "cont" })?;
        Ok(())
    }

    fn save(&self, vm: &VmHandle, state: &Path, timeout: Duration) -> Result<(), VmError> {
        if self.pid(vm).is_none() {
            return Err(VmError::NotRunning { name: vm.name.clone() });
        }
        crate::snapshot::save(&vm.dir.join(QMP_SOCKET), &vm.name, state, timeout)?;
        self.kill(vm)
    }

    fn restore(
        &self,
        vm: &VmHandle,
        launch: &VmLaunch,
        state: &Path,
        accel: Accel,
        timeout: Duration,
    ) -> Result<StartReport, VmError> {
        let pid = self.launch(vm, launch, accel, Begin::Incoming)?;
        if let Err(e) = crate::snapshot::restore(&vm.dir.join(QMP_SOCKET), &vm.name, state, timeout) {
            let _ = self.kill(vm);
            return Err(e);
        }
        Ok(StartReport { pid, accel, why_not_kvm: None })
    }

    fn remove_forward(&self, vm: &VmHandle, host_port: u16) -> Result<(), VmError> {
        let out = self.monitor(vm, &remove_forward_command(host_port))?;
        removed_forward(vm, host_port, out)
    }

    /// Both QMP sessions are open and negotiated before the port is let go: between the two
    /// forwards only one command runs in each QEMU, and no connection is made.
    fn move_forward(&self, from: &VmHandle, to: &VmHandle, forward: PortForward) -> Result<(), VmError> {
        for vm in [from, to] {
            if self.pid(vm).is_none() {
                return Err(VmError::NotRunning { name: vm.name.clone() });
            }
        }
        let mut taker = crate::qmp::Session::open(&to.dir.join(QMP_SOCKET), &to.name)?;
        let mut giver = crate::qmp::Session::open(&from.dir.join(QMP_SOCKET), &from.name)?;
        let add = add_forward_command(forward);
        removed_forward(from, forward.host, giver.human(&remove_forward_command(forward.host))?)?;
        taker.human(&add).and_then(|out| added_forward(to, forward, out)).inspect_err(|_| {
            let _ = giver.human(&add);
        })
    }
}

fn add_forward_command(forward: PortForward) -> String {
    format!("hostfwd_add {UPLINK_NETDEV} {}", crate::argv::hostfwd_rule(forward))
}

/// `hostfwd_add`'s answer: nothing when the forward was set up, else why not.
fn added_forward(vm: &VmHandle, forward: PortForward, out: String) -> Result<(), VmError> {
    if out.is_empty() {
        Ok(())
    } else {
        Err(VmError::Forward { name: vm.name.clone(), forward, message: out })
    }
}

fn remove_forward_command(host_port: u16) -> String {
    format!("hostfwd_remove {UPLINK_NETDEV} tcp:127.0.0.1:{host_port}")
}

/// `hostfwd_remove`'s answer: QEMU says "host forwarding rule for ... removed" when it was there.
fn removed_forward(vm: &VmHandle, host_port: u16, out: String) -> Result<(), VmError> {
    if out.is_empty() || out.contains("removed") {
        Ok(())
    } else {
        Err(VmError::Unforward { name: vm.name.clone(), port: host_port, message: out })
    }
}

fn read_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join(PID_FILE)).ok()?.trim().parse().ok()
}

/// What a Unix stream socket holds that its peer has not read yet (SIOCOUTQ: the memory of the
/// queued messages, zero once all are read).
fn unsent_bytes(s: &UnixStream) -> std::io::Result<i32> {
    use std::os::fd::AsRawFd;
    let mut n: nix::libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int.
    if unsafe { nix::libc::ioctl(s.as_raw_fd(), nix::libc::TIOCOUTQ, &mut n) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n)
}

/// The size of the serial log now: pass it to `wait_ready` to only look at output after it.
pub fn console_log_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(SERIAL_LOG)).map(|m| m.len()).unwrap_or(0)
}

/// The last `lines` lines of the machine's serial console log.
pub fn console_tail(dir: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(dir.join(SERIAL_LOG)) else { return "(no console output)".into() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(dir: &Path) -> VmHandle {
        VmHandle::new("t", dir)
    }

    use crate::fake::sample_launch as launch;

    #[test]
    fn a_pid_file_of_another_process_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        // Our own pid is alive but it is not this machine's QEMU.
        std::fs::write(dir.path().join(PID_FILE), std::process::id().to_string()).unwrap();
        let q = Qemu::default();
        assert_eq!(q.pid(&vm(dir.path())), None);
        assert_eq!(q.state(&vm(dir.path())), VmState::Stopped);
        assert_eq!(q.stop(&vm(dir.path()), Duration::from_secs(1)).unwrap(), StopOutcome::AlreadyStopped);
    }

    #[test]
    fn a_decoy_with_the_data_disk_on_its_command_line_is_neither_running_nor_killed() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let marker = crate::identity::data_disk_marker(&dir.path().join(crate::argv::DATA_DISK_FILE));
        let mut decoy = Command::new("sleep")
            .arg0(format!("qemu-system-x86_64 -drive {marker}"))
            .arg("30")
            .spawn()
            .unwrap();
        let pid = decoy.id() as i32;
        std::fs::write(dir.path().join(PID_FILE), pid.to_string()).unwrap();
        // What the pid file and the command line alone would have accepted (once it has exec'd).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
            .contains(&marker)
        {
            assert!(Instant::now() < deadline, "the decoy did not start");
            std::thread::sleep(Duration::from_millis(10));
        }

        let q = Qemu::default();
        let vm = vm(dir.path());
        assert_eq!(q.pid(&vm), None);
        assert_eq!(q.state(&vm), VmState::Stopped);
        q.kill(&vm).unwrap();
        assert_eq!(q.stop(&vm, Duration::from_secs(1)).unwrap(), StopOutcome::AlreadyStopped);
        assert!(decoy.try_wait().unwrap().is_none(), "the decoy was killed");
        decoy.kill().unwrap();
        decoy.wait().unwrap();
    }

    #[test]
    fn a_cancelled_wait_returns_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let q = Qemu::default();
        q.cancel.store(true, Ordering::Relaxed);
        let err = q.wait_ready(&vm(dir.path()), 0, Duration::from_secs(60)).unwrap_err();
        assert!(matches!(err, VmError::Interrupted { .. }), "{err}");
    }

    #[test]
    fn each_launch_rotates_the_serial_log_and_the_wait_reads_the_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(SERIAL_LOG);
        std::fs::write(&log, "the previous boot\n").unwrap();
        // A "QEMU" that fails at once: the log was moved aside before it ran.
        let q = Qemu::new(QemuConfig { binary: "/bin/false".into(), ..QemuConfig::default() });
        let err = q.launch(&vm(dir.path()), &launch(), Accel::Kvm, Begin::Boot).unwrap_err();
        assert!(matches!(err, VmError::Start { .. }), "{err}");
        assert!(!log.exists());
        let previous = dir.path().join(crate::serial_log::PREVIOUS_SERIAL_LOG);
        assert_eq!(std::fs::read_to_string(&previous).unwrap(), "the previous boot\n");
        // The new boot's log is read from its start, whatever length the old one had.
        std::fs::write(&log, format!("booting\n{READY_MARKER}\n")).unwrap();
        Qemu::default().wait_ready(&vm(dir.path()), 1 << 20, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn a_wait_after_an_offset_ignores_the_ready_marker_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(SERIAL_LOG);
        let boot = format!("booting\n{READY_MARKER}\n");
        std::fs::write(&log, &boot).unwrap();
        let q = Qemu::default();
        // The boot's marker does not count for an engine restarted after it (`reload-tls`):
        // nothing after the offset, and no QEMU here, so the wait ends without it.
        let err = q.wait_ready_after(&vm(dir.path()), boot.len() as u64, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, VmError::ExitedDuringBoot { .. }), "{err}");
        std::fs::write(&log, format!("{boot}n2d-init: tls reload\n{READY_MARKER}\n")).unwrap();
        q.wait_ready_after(&vm(dir.path()), boot.len() as u64, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn unsent_bytes_are_what_the_peer_has_not_read() {
        let (mut a, b) = UnixStream::pair().unwrap();
        assert_eq!(unsent_bytes(&a).unwrap(), 0);
        a.write_all(b"reload-tls\n").unwrap();
        // The socket's memory for it, not the bytes themselves: nonzero until read.
        assert!(unsent_bytes(&a).unwrap() > 0);
        let mut buf = [0u8; 11];
        (&b).read_exact(&mut buf).unwrap();
        assert_eq!(unsent_bytes(&a).unwrap(), 0);
    }

    #[test]
    fn console_tail_shows_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SERIAL_LOG), "a\nb\nc\n").unwrap();
        assert_eq!(console_tail(dir.path(), 2), "  | b\n  | c");
        assert_eq!(console_log_len(dir.path()), 6);
    }

    #[test]
    fn a_tcg_thread_override_wins_over_the_version() {
        let missing = QemuConfig { binary: "n2d-no-such-qemu".into(), ..QemuConfig::default() };
        let forced = Qemu::new(QemuConfig { tcg_thread: Some(TcgThread::Multi), ..missing.clone() });
        assert_eq!(forced.tcg_thread(), TcgThread::Multi);
        let sized = Qemu::new(QemuConfig { tb_size_mib: Some(64), ..missing.clone() });
        assert_eq!(sized.tcg().tb_size_mib, 64);
        // No override and no QEMU to ask: the safe choice.
        let unknown = Qemu::new(missing);
        assert_eq!(unknown.version(), None);
        assert_eq!(unknown.tcg(), Tcg { thread: TcgThread::Single, tb_size_mib: TCG_TB_SIZE_MIB });
    }

    #[test]
    fn missing_qemu_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let q = Qemu::new(QemuConfig { binary: "n2d-no-such-qemu".into(), ..QemuConfig::default() });
        let err = q.launch(&vm(dir.path()), &launch(), Accel::Tcg, Begin::Boot).unwrap_err().to_string();
        assert!(err.contains("apt-get install qemu-system-x86"), "{err}");
    }
}
