//! User-mode networking: no bridge, no tap, no root, nothing host-wide.
//!
//! The machines of a home on `--network user` share one L2 segment, a `vde_switch` (Debian's
//! vde2) that n2d runs as the user, with its sockets in the home (`network/switch/`, 0700): the
//! same static addresses (10.77.0.0/24), certificates and swarm advertise addresses as on a
//! bridge. Outbound traffic and the host's way in go through a second NIC on QEMU's own
//! user-mode stack (slirp: `n2d_proto::uplink`), whose forwards on 127.0.0.1 carry each
//! machine's Docker API and its published ports. Since the segment belongs to one home, so do
//! its addresses: they are allocated from the home's own records, under the home's lock.
//!
//! The switch is started with the network's first VM, outlives n2d (it daemonizes), is found
//! again by its pid file (checked against `/proc/PID/cmdline`, so no other process is ever
//! signalled), and is stopped with the last VM.

use crate::{candidates, host_range, DEFAULT_GATEWAY, DEFAULT_PREFIX_LEN};
use n2d_exec::{Cmd, ExecError, Runner};
use n2d_spec::address::IpRange;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const SWITCH_PROGRAM: &str = "vde_switch";
pub const SWITCH_PACKAGE: &str = "vde2";
/// Host ports n2d gives the Docker APIs of user-mode machines, first one free (below Linux's
/// ephemeral range, so an outgoing connection never takes one away between restarts).
pub const API_PORTS: std::ops::RangeInclusive<u16> = 12376..=12999;
/// QEMU's VDE client and the switch put sockets of their own beside `ctl`
/// (`.NNNNN-NNNNN`); Linux allows 107 bytes for a socket's path.
const MAX_SOCKET_DIR: usize = 90;

#[derive(Debug, thiserror::Error)]
pub enum UserNetError {
    #[error(transparent)]
    SwitchMissing(ExecError),
    #[error("cannot start the user-mode network's switch in {dir}")]
    SwitchStart {
        dir: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error("the user-mode network's switch did not open its socket {path} within {waited:?}")]
    SwitchSocket { path: PathBuf, waited: Duration },
    #[error("the path of the user-mode network's sockets, {dir}, is {len} bytes; Linux allows sockets about {MAX_SOCKET_DIR} here: use a shorter $N2D_HOME")]
    PathTooLong { dir: PathBuf, len: usize },
    #[error("cannot stop the user-mode network's switch (pid {pid})")]
    SwitchStop {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no free address left on the user-mode network in {range} ({used} in use): remove machines, or give a larger --ip-range")]
    SubnetFull { range: String, used: usize },
    #[error("the addresses {range} are not all usable on the user-mode network ({subnet}): give addresses inside it, other than {gateway} and the network and broadcast addresses")]
    RangeOutsideSubnet { range: String, subnet: String, gateway: Ipv4Addr },
    #[error("address {ip} on the user-mode network is held by {holder}: choose another (--ip) or remove that machine")]
    AddressTaken { ip: Ipv4Addr, holder: String },
    #[error("no free port on 127.0.0.1 left in {first}-{last} for a Docker API: remove machines, or free ports there")]
    NoFreePort { first: u16, last: u16 },
}

impl UserNetError {
    /// Whether the user's input is at fault (a usage error, exit 2), not the host.
    pub fn is_usage(&self) -> bool {
        matches!(self, UserNetError::RangeOutsideSubnet { .. } | UserNetError::AddressTaken { .. })
    }
}

/// A home's user-mode network: the directory of its switch.
#[derive(Debug, Clone)]
pub struct UserNet {
    dir: PathBuf,
}

impl UserNet {
    pub fn new(dir: impl Into<PathBuf>) -> UserNet {
        UserNet { dir: dir.into() }
    }

    /// The switch's socket directory, which QEMU's `-netdev vde,sock=` names.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("switch")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("switch.pid")
    }

    /// The switch's pid, when the process in the pid file is this network's switch.
    pub fn switch_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()?;
        self.serves(pid).then_some(pid)
    }

    /// Whether process `pid` is a switch serving this network's sockets.
    fn serves(&self, pid: u32) -> bool {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| is_switch_of(&c, &self.socket_dir()))
    }

    /// Every process serving this network's sockets: the pid file's, and any a pid file no longer
    /// names (a switch orphaned by an n2d killed while it started one).
    fn switch_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.switch_pid().into_iter().collect();
        let Ok(entries) = std::fs::read_dir("/proc") else { return pids };
        for pid in entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
            if !pids.contains(&pid) && self.serves(pid) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Starts the switch unless it runs; `Ok(true)` when it was started.
    pub fn ensure_switch(&self, runner: &dyn Runner) -> Result<bool, UserNetError> {
        if self.switch_pid().is_some() {
            return Ok(false);
        }
        let sockets = self.socket_dir();
        let len = sockets.as_os_str().len();
        if len > MAX_SOCKET_DIR {
            return Err(UserNetError::PathTooLong { dir: sockets, len });
        }
        // A switch that is gone (a reboot) leaves its sockets, and vde_switch refuses a directory
        // that exists; one that lost its pid file would serve a segment of its own.
        self.stop_switch()?;
        n2d_store::ensure_dir(&self.dir)
            .map_err(|e| UserNetError::Io { path: self.dir.clone(), source: std::io::Error::other(e) })?;
        let cmd = Cmd::new(SWITCH_PROGRAM, SWITCH_PACKAGE)
            .arg("--sock")
            .arg(&sockets)
            .args(["--dirmode", "0700", "--mode", "0600", "--numports", "256", "--daemon", "--pidfile"])
            .arg(self.pid_file());
        runner.run(&cmd).map_err(|source| match source {
            ExecError::NotInstalled { .. } => UserNetError::SwitchMissing(source),
            source => UserNetError::SwitchStart { dir: sockets.clone(), source },
        })?;
        // Started means both: vde_switch opens its socket before it writes its pid file, and a
        // switch without one would be started again by the next boot.
        let ctl = sockets.join("ctl");
        let waited = Duration::from_secs(5);
        let since = Instant::now();
        while !ctl.exists() || self.switch_pid().is_none() {
            if since.elapsed() > waited {
                return Err(UserNetError::SwitchSocket { path: ctl, waited });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(true)
    }

    /// Stops the switch, and any other process serving its sockets (SIGTERM, then SIGKILL after
    /// two seconds), and removes its sockets; `Ok(false)` when none ran. Returns once they are
    /// gone: vde_switch removes its pid file before it exits, so the wait watches the processes.
    pub fn stop_switch(&self) -> Result<bool, UserNetError> {
        let wait_gone = |pids: &[u32], limit: Duration| {
            let since = Instant::now();
            while pids.iter().any(|p| self.serves(*p)) && since.elapsed() < limit {
                std::thread::sleep(Duration::from_millis(20));
            }
            pids.iter().copied().filter(|p| self.serves(*p)).collect::<Vec<_>>()
        };
        let pids = self.switch_pids();
        for pid in &pids {
            signal(*pid, rustix::process::Signal::TERM)?;
        }
        let stubborn = wait_gone(&pids, Duration::from_secs(2));
        for pid in &stubborn {
            signal(*pid, rustix::process::Signal::KILL)?;
        }
        wait_gone(&stubborn, Duration::from_secs(5));
        remove_path(&self.socket_dir())?;
        remove_path(&self.pid_file())?;
        remove_path(&self.dir)?;
        Ok(!pids.is_empty())
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) -> Result<(), UserNetError> {
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else { return Ok(()) };
    match rustix::process::kill_process(p, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(UserNetError::SwitchStop { pid, source: e.into() }),
    }
}

/// Removes a file, a socket or an empty-or-not directory; a missing one is fine.
fn remove_path(path: &Path) -> Result<(), UserNetError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(UserNetError::Io { path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// Whether a `/proc/PID/cmdline` is `vde_switch` serving `sockets`.
pub fn is_switch_of(cmdline: &[u8], sockets: &Path) -> bool {
    let mut args = cmdline.split(|b| *b == 0);
    let program = args.next().unwrap_or_default();
    let is_switch =
        Path::new(std::ffi::OsStr::from_bytes(program)).file_name().is_some_and(|n| n == SWITCH_PROGRAM);
    is_switch && args.any(|a| a == sockets.as_os_str().as_encoded_bytes())
}

/// The MAC of a machine's uplink NIC: its segment MAC with the fourth byte's neighbour
/// prefix `52:54:01` (still locally administered), so it is as unique as the first.
pub fn uplink_mac(mac: &str) -> String {
    match mac.strip_prefix("52:54:00:") {
        Some(rest) => format!("52:54:01:{rest}"),
        None => format!("52:54:01:{}", mac.get(9..).unwrap_or("00:00:01")),
    }
}

/// The user-mode segment's subnet as text.
pub fn subnet() -> String {
    crate::nat::subnet_text(DEFAULT_GATEWAY, DEFAULT_PREFIX_LEN)
}

/// An address for a new machine: the first of the segment's (within `range` when given) that no
/// machine of the home holds. `held`: each held address with its machine.
pub fn free_address(held: &[(Ipv4Addr, String)], range: Option<IpRange>) -> Result<Ipv4Addr, UserNetError> {
    let (first, last) = host_range(DEFAULT_GATEWAY, DEFAULT_PREFIX_LEN).expect("a /24");
    let usable = |ip: Ipv4Addr| (first..=last).contains(&u32::from(ip)) && ip != DEFAULT_GATEWAY;
    if let Some(r) = range {
        if !r.addresses().all(usable) {
            return Err(UserNetError::RangeOutsideSubnet {
                range: r.to_string(),
                subnet: subnet(),
                gateway: DEFAULT_GATEWAY,
            });
        }
        if r.first == r.last {
            if let Some((ip, holder)) = held.iter().find(|(ip, _)| *ip == r.first) {
                return Err(UserNetError::AddressTaken { ip: *ip, holder: holder.clone() });
            }
        }
    }
    candidates(DEFAULT_GATEWAY, DEFAULT_PREFIX_LEN, range)
        .find(|ip| !held.iter().any(|(h, _)| h == ip))
        .ok_or_else(|| UserNetError::SubnetFull {
            range: range.map_or_else(subnet, |r| r.to_string()),
            used: held.len(),
        })
}

/// How many more machines fit on the segment (within `range` when given).
pub fn capacity(held: &[Ipv4Addr], range: Option<IpRange>) -> usize {
    candidates(DEFAULT_GATEWAY, DEFAULT_PREFIX_LEN, range).filter(|ip| !held.contains(ip)).count()
}

/// Whether nothing listens on `127.0.0.1:port` now.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A host port for a new machine's Docker API: the first of [`API_PORTS`] that no machine of
/// the home holds (`held`, running or not) and that `is_free` (nothing else listens there).
pub fn free_api_port(held: &[u16], is_free: impl Fn(u16) -> bool) -> Result<u16, UserNetError> {
    API_PORTS
        .clone()
        .find(|p| !held.contains(p) && is_free(*p))
        .ok_or(UserNetError::NoFreePort { first: *API_PORTS.start(), last: *API_PORTS.end() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_skip_the_gateway_and_held_ones() {
        let held = vec![(Ipv4Addr::new(10, 77, 0, 2), "a".to_string())];
        assert_eq!(free_address(&held, None).unwrap(), Ipv4Addr::new(10, 77, 0, 3));
        assert_eq!(free_address(&[], None).unwrap(), Ipv4Addr::new(10, 77, 0, 2));
        let one = IpRange::single(Ipv4Addr::new(10, 77, 0, 9));
        assert_eq!(free_address(&held, Some(one)).unwrap(), Ipv4Addr::new(10, 77, 0, 9));
        let taken = IpRange::single(Ipv4Addr::new(10, 77, 0, 2));
        let err = free_address(&held, Some(taken)).unwrap_err();
        assert!(err.is_usage() && err.to_string().contains("held by a"), "{err}");
        let outside = "10.78.0.5".parse().unwrap();
        assert!(free_address(&held, Some(outside)).unwrap_err().is_usage());
        let gateway = "10.77.0.1".parse().unwrap();
        assert!(matches!(free_address(&[], Some(gateway)), Err(UserNetError::RangeOutsideSubnet { .. })));
        let all: Vec<_> = (2..=254).map(|i| (Ipv4Addr::new(10, 77, 0, i), format!("m{i}"))).collect();
        assert!(matches!(free_address(&all, None), Err(UserNetError::SubnetFull { used: 253, .. })));
        assert_eq!(capacity(&[Ipv4Addr::new(10, 77, 0, 2)], None), 252);
    }

    #[test]
    fn api_ports_skip_held_and_busy_ones() {
        assert_eq!(free_api_port(&[12376], |p| p != 12377).unwrap(), 12378);
        assert!(free_api_port(&[], |_| false).unwrap_err().to_string().contains("12376-12999"));
    }

    #[test]
    fn only_this_networks_switch_is_recognised() {
        let sockets = Path::new("/home/u/.local/share/n2d/network/switch");
        let ours = b"/usr/bin/vde_switch\0--sock\0/home/u/.local/share/n2d/network/switch\0--daemon\0";
        assert!(is_switch_of(ours, sockets));
        let other_home = b"vde_switch\0--sock\0/home/v/n2d/network/switch\0";
        assert!(!is_switch_of(other_home, sockets));
        let not_a_switch = b"sleep\0/home/u/.local/share/n2d/network/switch\0";
        assert!(!is_switch_of(not_a_switch, sockets));
    }

    #[test]
    fn a_stale_pid_file_is_not_a_switch_and_stop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let net = UserNet::new(dir.path().join("network"));
        std::fs::create_dir_all(net.socket_dir()).unwrap();
        // Our own pid: alive, but not a switch: never signalled.
        std::fs::write(net.pid_file(), std::process::id().to_string()).unwrap();
        assert_eq!(net.switch_pid(), None);
        assert!(!net.stop_switch().unwrap());
        assert!(!dir.path().join("network").exists());
    }

    /// A stand-in switch of `net` (`sh` named `vde_switch`, serving its socket directory) that
    /// runs `on_term` when sent SIGTERM; its pid is written to the pid file.
    fn stand_in_switch(net: &UserNet, on_term: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(net.socket_dir()).unwrap();
        let script = format!("trap '{on_term}' TERM; echo $$ > \"$1\"; while :; do sleep 0.02; done");
        let child = std::process::Command::new("sh")
            .arg0(SWITCH_PROGRAM)
            .args(["-c", &script, "sh"])
            .arg(net.pid_file())
            .arg("--sock")
            .arg(net.socket_dir())
            .spawn()
            .unwrap();
        let since = Instant::now();
        while net.switch_pid().is_none() {
            assert!(since.elapsed() < Duration::from_secs(10), "the stand-in switch did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    #[test]
    fn stop_waits_for_a_switch_that_drops_its_pid_file_before_exiting() {
        // vde_switch unlinks its pid file first, then tidies its sockets and exits: stop
        // returned in between once (a CI run found the switch still alive after `swarm rm`).
        let dir = tempfile::tempdir().unwrap();
        let net = UserNet::new(dir.path().join("network"));
        let pid_file = net.pid_file();
        let mut child = stand_in_switch(&net, &format!("rm -f {}; sleep 0.5; exit 0", pid_file.display()));
        assert!(net.stop_switch().unwrap());
        assert!(child.try_wait().unwrap().is_some(), "stop returned while the switch still ran");
        assert!(!dir.path().join("network").exists());
    }

    #[test]
    fn a_switch_that_ignores_sigterm_is_killed_and_waited_for() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let net = UserNet::new(dir.path().join("network"));
        let mut child = stand_in_switch(&net, "");
        assert!(net.stop_switch().unwrap());
        let status = child.try_wait().unwrap().expect("stop returned while the switch still ran");
        assert_eq!(status.signal(), Some(9));
    }

    /// Starts a stand-in switch as vde_switch does: it daemonizes, opens its socket, and only
    /// then writes its pid file.
    #[derive(Default)]
    struct DaemonizingSwitch(std::sync::Mutex<Vec<std::process::Child>>);

    impl Runner for DaemonizingSwitch {
        fn run(&self, cmd: &Cmd) -> Result<Vec<u8>, ExecError> {
            use std::os::unix::process::CommandExt;
            let arg = |flag: &str| {
                let i = cmd.args.iter().position(|a| a == flag).unwrap();
                cmd.args[i + 1].clone()
            };
            let script =
                "mkdir -p \"$2\"; : > \"$2/ctl\"; sleep 0.3; echo $$ > \"$3\"; while :; do sleep 0.02; done";
            let child = std::process::Command::new("sh")
                .arg0(SWITCH_PROGRAM)
                .args(["-c", script, "sh", "--sock"])
                .arg(arg("--sock"))
                .arg(arg("--pidfile"))
                .spawn()
                .unwrap();
            self.0.lock().unwrap().push(child);
            Ok(Vec::new())
        }
    }

    impl Drop for DaemonizingSwitch {
        fn drop(&mut self) {
            for mut child in self.0.lock().unwrap().drain(..) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    #[test]
    fn a_started_switch_has_its_pid_file_so_the_next_boot_does_not_start_another() {
        // vde_switch opens its socket before it writes its pid file: a CI run's second boot found
        // no pid file, started a second switch, and the first outlived `swarm rm`.
        let dir = tempfile::tempdir().unwrap();
        let net = UserNet::new(dir.path().join("network"));
        let switch = DaemonizingSwitch::default();
        assert!(net.ensure_switch(&switch).unwrap());
        assert!(net.switch_pid().is_some(), "ensure_switch returned before the pid file was written");
        assert!(!net.ensure_switch(&switch).unwrap());
        assert_eq!(switch.0.lock().unwrap().len(), 1, "a second switch was started");
        assert!(net.stop_switch().unwrap());
        for mut child in switch.0.lock().unwrap().drain(..) {
            assert!(child.try_wait().unwrap().is_some(), "the switch outlived stop");
        }
    }

    #[test]
    fn stop_and_start_end_a_switch_its_pid_file_does_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let net = UserNet::new(dir.path().join("network"));
        let mut orphan = stand_in_switch(&net, "exit 0");
        std::fs::remove_file(net.pid_file()).unwrap();
        assert!(net.stop_switch().unwrap());
        assert!(orphan.try_wait().unwrap().is_some(), "stop left the orphaned switch running");

        let mut orphan = stand_in_switch(&net, "exit 0");
        std::fs::remove_file(net.pid_file()).unwrap();
        let switch = DaemonizingSwitch::default();
        assert!(net.ensure_switch(&switch).unwrap());
        assert!(orphan.try_wait().unwrap().is_some(), "a new switch was started beside an orphan");
        net.stop_switch().unwrap();
    }

    #[test]
    fn a_missing_switch_names_its_package() {
        let dir = tempfile::tempdir().unwrap();
        let net = UserNet::new(dir.path().join("network"));
        let runner = n2d_exec::RecordingRunner::default();
        runner.answer("vde_switch", Err("not installed"));
        let err = net.ensure_switch(&runner).unwrap_err();
        assert!(matches!(err, UserNetError::SwitchStart { .. }), "{err}");
        let long = UserNet::new(dir.path().join("x".repeat(100)));
        assert!(matches!(long.ensure_switch(&runner), Err(UserNetError::PathTooLong { .. })));
    }
}
