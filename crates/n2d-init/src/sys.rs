//! The syscall seam: everything boot does to the machine goes through [`System`], so the boot
//! logic can be tested against a recording fake ([`fake::FakeSystem`]) without a VM or root.

use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::Signal;
use std::fmt;
use std::io;
use std::time::Duration;

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// Where a service's stdin/stdout/stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceIo {
    /// stdin from /dev/null, stdout and stderr appended to this file.
    LogFile(String),
    /// The terminal becomes stdin/stdout/stderr and the controlling terminal.
    Terminal(String),
}

/// A long-running child process. Every service runs in its own session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: &'static str,
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub io: ServiceIo,
}

pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Environment for every child of PID 1 (the kernel gives PID 1 next to none).
pub fn base_env() -> Vec<(String, String)> {
    vec![("PATH".into(), PATH.into()), ("HOME".into(), "/root".into())]
}

pub trait System {
    fn mount(
        &self,
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount(&self, target: &str, flags: MntFlags) -> io::Result<()>;
    fn chdir(&self, path: &str) -> io::Result<()>;
    fn chroot(&self, path: &str) -> io::Result<()>;
    /// Creates `path` and its missing parents; `mode` applies to the directories created.
    fn mkdir_all(&self, path: &str, mode: u32) -> io::Result<()>;
    /// Replaces `path` (a symlink there is replaced, not followed) with a file of exactly `mode`.
    fn write_file(&self, path: &str, data: &[u8], mode: u32) -> io::Result<()>;
    /// Writes to an existing kernel interface file (sysfs, cgroupfs) without creating it.
    fn write_knob(&self, path: &str, data: &[u8]) -> io::Result<()>;
    fn read_file(&self, path: &str) -> io::Result<Vec<u8>>;
    /// Reads at most `max` bytes from the start of `path` (block devices).
    fn read_head(&self, path: &str, max: usize) -> io::Result<Vec<u8>>;
    /// Entry names of a directory, sorted.
    fn read_dir(&self, path: &str) -> io::Result<Vec<String>>;
    fn exists(&self, path: &str) -> bool;
    fn symlink(&self, target: &str, link: &str) -> io::Result<()>;
    /// finit_module(2); a module that is already loaded counts as success.
    fn load_module(&self, path: &str, compressed: bool) -> io::Result<()>;
    /// Runs a command to completion with the base environment, output to the console.
    fn run(&self, program: &str, args: &[&str]) -> io::Result<Exit>;
    /// Starts a service in its own session; returns its pid.
    fn spawn(&self, spec: &ServiceSpec) -> io::Result<i32>;
    /// kill(2); `pid == -1` signals every process but PID 1.
    fn kill(&self, pid: i32, signal: Signal) -> io::Result<()>;
    /// waitpid(-1, WNOHANG): one exited child, if any.
    fn reap(&self) -> Option<(i32, Exit)>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Sends `request` on a Unix stream socket and returns what comes back until EOF.
    fn unix_request(&self, socket: &str, request: &[u8]) -> io::Result<Vec<u8>>;
    fn sleep(&self, duration: Duration);
    /// Time since boot.
    fn now(&self) -> Duration;
    fn sync(&self);
    fn power_off(&self);
    /// Makes sure fds 0-2 are the console (needs /dev).
    fn attach_console(&self) {}
}

/// Polls `probe` every `every` until it returns `Some` or `timeout` passes.
pub fn poll<T>(
    sys: &dyn System,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = sys.now() + timeout;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if sys.now() >= deadline {
            return None;
        }
        sys.sleep(every);
    }
}

pub mod real {
    use super::*;
    use nix::errno::Errno;
    use nix::kmod::{finit_module, ModuleInitFlags};
    use nix::sys::reboot::{reboot, RebootMode};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::time::{clock_gettime, ClockId};
    use nix::unistd::Pid;
    use std::fs::{self, File, OpenOptions};
    use std::io::{Read, Write};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, Stdio};

    /// The machine itself, over nix and std.
    pub struct RealSystem;

    /// Kernel's MODULE_INIT_COMPRESSED_FILE (not in nix's flag set).
    const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

    pub fn uptime() -> Duration {
        clock_gettime(ClockId::CLOCK_BOOTTIME).map(Duration::from).unwrap_or_default()
    }

    fn exit_of(status: std::process::ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Code(-1),
        }
    }

    impl System for RealSystem {
        fn mount(
            &self,
            source: Option<&str>,
            target: &str,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> io::Result<()> {
            nix::mount::mount(source, target, fstype, flags, data).map_err(io::Error::from)
        }

        fn umount(&self, target: &str, flags: MntFlags) -> io::Result<()> {
            nix::mount::umount2(target, flags).map_err(io::Error::from)
        }

        fn chdir(&self, path: &str) -> io::Result<()> {
            nix::unistd::chdir(path).map_err(io::Error::from)
        }

        fn chroot(&self, path: &str) -> io::Result<()> {
            nix::unistd::chroot(path).map_err(io::Error::from)
        }

        fn mkdir_all(&self, path: &str, mode: u32) -> io::Result<()> {
            fs::DirBuilder::new().recursive(true).mode(mode).create(path)
        }

        fn write_file(&self, path: &str, data: &[u8], mode: u32) -> io::Result<()> {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
            // The umask may have removed bits; set exactly what was asked.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            file.write_all(data)
        }

        fn write_knob(&self, path: &str, data: &[u8]) -> io::Result<()> {
            OpenOptions::new().write(true).open(path)?.write_all(data)
        }

        fn read_file(&self, path: &str) -> io::Result<Vec<u8>> {
            fs::read(path)
        }

        fn read_head(&self, path: &str, max: usize) -> io::Result<Vec<u8>> {
            let mut buf = Vec::new();
            File::open(path)?.take(max as u64).read_to_end(&mut buf)?;
            Ok(buf)
        }

        fn read_dir(&self, path: &str) -> io::Result<Vec<String>> {
            let mut names = fs::read_dir(path)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>();
            names.sort();
            Ok(names)
        }

        fn exists(&self, path: &str) -> bool {
            fs::symlink_metadata(path).is_ok()
        }

        fn symlink(&self, target: &str, link: &str) -> io::Result<()> {
            std::os::unix::fs::symlink(target, link)
        }

        fn load_module(&self, path: &str, compressed: bool) -> io::Result<()> {
            let file = File::open(path)?;
            let flags = if compressed {
                ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
            } else {
                ModuleInitFlags::empty()
            };
            match finit_module(&file, c"", flags) {
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }

        fn run(&self, program: &str, args: &[&str]) -> io::Result<Exit> {
            Command::new(program)
                .args(args)
                .env_clear()
                .envs(base_env())
                .stdin(Stdio::null())
                .status()
                .map(exit_of)
        }

        fn spawn(&self, spec: &ServiceSpec) -> io::Result<i32> {
            let mut cmd = Command::new(&spec.program);
            cmd.args(&spec.args).env_clear().envs(spec.env.iter().cloned());
            let tty = matches!(spec.io, ServiceIo::Terminal(_));
            match &spec.io {
                ServiceIo::LogFile(path) => {
                    let log = OpenOptions::new().create(true).append(true).open(path)?;
                    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
                }
                ServiceIo::Terminal(path) => {
                    // O_NOCTTY: the terminal must become the child's, never PID 1's.
                    let term = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(nix::libc::O_NOCTTY)
                        .open(path)?;
                    cmd.stdin(term.try_clone()?).stdout(term.try_clone()?).stderr(term);
                }
            }
            // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::unistd::setsid()?;
                    if tty && nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 1) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            Ok(cmd.spawn()?.id() as i32)
        }

        fn kill(&self, pid: i32, signal: Signal) -> io::Result<()> {
            nix::sys::signal::kill(Pid::from_raw(pid), signal).map_err(io::Error::from)
        }

        fn reap(&self) -> Option<(i32, Exit)> {
            loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => return Some((pid.as_raw(), Exit::Code(code))),
                    Ok(WaitStatus::Signaled(pid, sig, _)) => {
                        return Some((pid.as_raw(), Exit::Signal(sig as i32)))
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => return None,
                    Ok(_) => continue, // stopped/continued: not an exit
                }
            }
        }

        fn sethostname(&self, name: &str) -> io::Result<()> {
            nix::unistd::sethostname(name).map_err(io::Error::from)
        }

        fn unix_request(&self, socket: &str, request: &[u8]) -> io::Result<Vec<u8>> {
            let mut stream = UnixStream::connect(socket)?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.set_write_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(request)?;
            let mut response = Vec::new();
            stream.take(64 * 1024).read_to_end(&mut response)?;
            Ok(response)
        }

        fn sleep(&self, duration: Duration) {
            std::thread::sleep(duration)
        }

        fn now(&self) -> Duration {
            uptime()
        }

        fn sync(&self) {
            nix::unistd::sync()
        }

        fn power_off(&self) {
            let _ = reboot(RebootMode::RB_POWER_OFF);
            // Only reached if the call failed; PID 1 must not return.
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }

        /// The kernel gives PID 1 the console as fds 0-2 only if the initramfs has
        /// /dev/console; once devtmpfs is mounted, make sure they are there.
        fn attach_console(&self) {
            use nix::fcntl::{fcntl, FcntlArg};
            if fcntl(std::io::stdout(), FcntlArg::F_GETFD).is_ok() {
                return;
            }
            if let Ok(console) = OpenOptions::new().read(true).write(true).open("/dev/console") {
                let _ = nix::unistd::dup2_stdin(&console);
                let _ = nix::unistd::dup2_stdout(&console);
                let _ = nix::unistd::dup2_stderr(&console);
            }
        }
    }
}

#[cfg(test)]
pub mod fake {
    use super::*;
    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    #[derive(Default)]
    pub struct State {
        pub files: BTreeMap<String, (Vec<u8>, u32)>,
        pub dirs: BTreeSet<String>,
        /// Everything that changed the machine, in order, one line each.
        pub calls: Vec<String>,
        pub now: Duration,
        pub next_pid: i32,
        /// pid -> service name, for children still running.
        pub alive: BTreeMap<i32, String>,
        /// Exits the next `reap` calls report.
        pub exits: VecDeque<(i32, Exit)>,
        /// Services that ignore SIGTERM.
        pub stubborn: BTreeSet<String>,
        /// Exit reported by `run` for a program (default: success).
        pub run_exits: BTreeMap<String, Exit>,
        pub docker_response: Option<Vec<u8>>,
        pub failing_modules: BTreeSet<String>,
    }

    /// A recording in-memory machine.
    #[derive(Default)]
    pub struct FakeSystem {
        pub state: RefCell<State>,
    }

    impl FakeSystem {
        pub fn new() -> Self {
            let fake = Self::default();
            fake.state.borrow_mut().next_pid = 100;
            fake
        }

        pub fn add_file(&self, path: &str, data: impl AsRef<[u8]>) {
            let mut st = self.state.borrow_mut();
            st.files.insert(path.into(), (data.as_ref().to_vec(), 0o644));
        }

        pub fn add_dir(&self, path: &str) {
            self.state.borrow_mut().dirs.insert(path.into());
        }

        /// A virtio disk `name` (e.g. "vdb") with a serial and contents.
        pub fn add_disk(&self, name: &str, serial: &str, contents: impl AsRef<[u8]>) {
            self.add_dir(&format!("/sys/block/{name}"));
            self.add_file(&format!("/sys/block/{name}/serial"), serial);
            self.add_file(&format!("/dev/{name}"), contents);
        }

        pub fn calls(&self) -> Vec<String> {
            self.state.borrow().calls.clone()
        }

        pub fn file(&self, path: &str) -> Option<(Vec<u8>, u32)> {
            self.state.borrow().files.get(path).cloned()
        }

        pub fn file_text(&self, path: &str) -> String {
            let (data, _) = self.file(path).unwrap_or_else(|| panic!("no file {path}"));
            String::from_utf8(data).unwrap()
        }

        pub fn pid_of(&self, name: &str) -> Option<i32> {
            let st = self.state.borrow();
            st.alive.iter().find(|(_, n)| *n == name).map(|(p, _)| *p)
        }

        /// Makes a running service exit.
        pub fn exit(&self, name: &str, exit: Exit) {
            let pid = self.pid_of(name).expect("service running");
            let mut st = self.state.borrow_mut();
            st.alive.remove(&pid);
            st.exits.push_back((pid, exit));
        }

        fn record(&self, line: String) {
            self.state.borrow_mut().calls.push(line);
        }
    }

    fn not_found(path: &str) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, path.to_string())
    }

    impl System for FakeSystem {
        fn mount(
            &self,
            source: Option<&str>,
            target: &str,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> io::Result<()> {
            let mut line = format!("mount {} {target}", source.unwrap_or("-"));
            if let Some(t) = fstype {
                line += &format!(" -t {t}");
            }
            if flags.contains(MsFlags::MS_MOVE) {
                line += " move";
            }
            if flags.contains(MsFlags::MS_RDONLY) {
                line += " ro";
            }
            if let Some(d) = data {
                line += &format!(" {d}");
            }
            self.record(line);
            Ok(())
        }

        fn umount(&self, target: &str, flags: MntFlags) -> io::Result<()> {
            let detach = if flags.contains(MntFlags::MNT_DETACH) { " detach" } else { "" };
            self.record(format!("umount {target}{detach}"));
            Ok(())
        }

        fn chdir(&self, path: &str) -> io::Result<()> {
            self.record(format!("chdir {path}"));
            Ok(())
        }

        fn chroot(&self, path: &str) -> io::Result<()> {
            self.record(format!("chroot {path}"));
            Ok(())
        }

        fn mkdir_all(&self, path: &str, _mode: u32) -> io::Result<()> {
            self.add_dir(path);
            Ok(())
        }

        fn write_file(&self, path: &str, data: &[u8], mode: u32) -> io::Result<()> {
            self.record(format!("write {path}"));
            self.state.borrow_mut().files.insert(path.into(), (data.to_vec(), mode));
            Ok(())
        }

        fn write_knob(&self, path: &str, data: &[u8]) -> io::Result<()> {
            self.record(format!("knob {path} {}", String::from_utf8_lossy(data)));
            Ok(())
        }

        fn read_file(&self, path: &str) -> io::Result<Vec<u8>> {
            self.file(path).map(|(d, _)| d).ok_or_else(|| not_found(path))
        }

        fn read_head(&self, path: &str, max: usize) -> io::Result<Vec<u8>> {
            let mut data = self.read_file(path)?;
            data.truncate(max);
            Ok(data)
        }

        fn read_dir(&self, path: &str) -> io::Result<Vec<String>> {
            let st = self.state.borrow();
            let prefix = format!("{}/", path.trim_end_matches('/'));
            let names: BTreeSet<String> = st
                .files
                .keys()
                .chain(st.dirs.iter())
                .filter_map(|p| p.strip_prefix(&prefix))
                .map(|rest| rest.split('/').next().unwrap().to_string())
                .collect();
            if names.is_empty() && !st.dirs.contains(path) {
                return Err(not_found(path));
            }
            Ok(names.into_iter().collect())
        }

        fn exists(&self, path: &str) -> bool {
            let st = self.state.borrow();
            st.files.contains_key(path) || st.dirs.contains(path)
        }

        fn symlink(&self, target: &str, link: &str) -> io::Result<()> {
            self.record(format!("symlink {link} -> {target}"));
            Ok(())
        }

        fn load_module(&self, path: &str, compressed: bool) -> io::Result<()> {
            let xz = if compressed { " (compressed)" } else { "" };
            self.record(format!("load {path}{xz}"));
            if self.state.borrow().failing_modules.contains(path) {
                return Err(io::Error::from_raw_os_error(nix::libc::ENOEXEC));
            }
            Ok(())
        }

        fn run(&self, program: &str, args: &[&str]) -> io::Result<Exit> {
            self.record(format!("run {program} {}", args.join(" ")));
            Ok(self.state.borrow().run_exits.get(program).copied().unwrap_or(Exit::Code(0)))
        }

        fn spawn(&self, spec: &ServiceSpec) -> io::Result<i32> {
            self.record(format!("spawn {}", spec.name));
            let mut st = self.state.borrow_mut();
            let pid = st.next_pid;
            st.next_pid += 1;
            st.alive.insert(pid, spec.name.to_string());
            Ok(pid)
        }

        fn kill(&self, pid: i32, signal: Signal) -> io::Result<()> {
            let mut st = self.state.borrow_mut();
            let name = if pid == -1 {
                "all".to_string()
            } else {
                st.alive.get(&pid).cloned().unwrap_or_else(|| pid.to_string())
            };
            st.calls.push(format!("kill {name} {}", signal.as_str()));
            let dies = signal == Signal::SIGKILL || !st.stubborn.contains(&name);
            let victims: Vec<i32> = if pid == -1 {
                st.alive.keys().copied().collect()
            } else {
                st.alive.contains_key(&pid).then_some(pid).into_iter().collect()
            };
            if dies {
                for victim in victims {
                    st.alive.remove(&victim);
                    st.exits.push_back((victim, Exit::Signal(signal as i32)));
                }
            }
            Ok(())
        }

        fn reap(&self) -> Option<(i32, Exit)> {
            self.state.borrow_mut().exits.pop_front()
        }

        fn sethostname(&self, name: &str) -> io::Result<()> {
            self.record(format!("sethostname {name}"));
            Ok(())
        }

        fn unix_request(&self, socket: &str, _request: &[u8]) -> io::Result<Vec<u8>> {
            self.state.borrow().docker_response.clone().ok_or_else(|| not_found(socket))
        }

        fn sleep(&self, duration: Duration) {
            self.state.borrow_mut().now += duration;
        }

        fn now(&self) -> Duration {
            self.state.borrow().now
        }

        fn sync(&self) {
            self.record("sync".into());
        }

        fn power_off(&self) {
            self.record("power_off".into());
        }
    }
}
