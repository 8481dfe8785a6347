//! The syscall seam: everything boot does to the machine goes through [`System`], so the boot
//! logic can be tested against a recording fake ([`fake::FakeSystem`]) without a VM or root.
//!
//! The trait and the types it speaks are here; the real implementation is [`linux`], the
//! fake (tests only) [`fake`].

#[cfg(test)]
pub mod fake;
pub mod linux;

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

/// A UDP socket on port 68 bound to one interface, broadcasting to port 67 (a DHCP client's).
pub trait DhcpSocket {
    /// Sends one message to the limited broadcast address, port 67.
    fn send(&self, message: &[u8]) -> io::Result<()>;
    /// The next datagram that arrives within `timeout`, if any.
    fn recv(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>>;
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
    /// As [`System::read_head`] on a block device, past the kernel's cache of it (BLKFLSBUF
    /// first): what the host wrote to the disk since it was last read, not the cached blocks.
    fn read_head_uncached(&self, path: &str, max: usize) -> io::Result<Vec<u8>>;
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
    /// Sleeps up to `limit`, less when another thread wakes this one (`Thread::unpark`): the
    /// supervisor's wait between rounds, which a request from the host cuts short.
    fn idle(&self, limit: Duration);
    /// Time since boot.
    fn now(&self) -> Duration;
    fn sync(&self);
    fn power_off(&self);
    /// Makes sure fds 0-2 are the console (needs /dev).
    fn attach_console(&self) {}
    /// Attaches `file` read-only to a free loop device; returns the device (`/dev/loopN`).
    fn loop_attach(&self, file: &str) -> io::Result<String>;
    /// Writes `data` at byte `offset` of `path` (a block device), then flushes it.
    fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Tells the kernel that partition `partno` of `disk` now spans `length` bytes from `start`
    /// (BLKPG_RESIZE_PARTITION: works while other partitions of the disk are mounted).
    fn resize_partition(&self, disk: &str, partno: u32, start: u64, length: u64) -> io::Result<()>;
    /// A DHCP client's socket on `ifname`.
    fn dhcp_socket(&self, ifname: &str) -> io::Result<Box<dyn DhcpSocket + '_>>;
    /// Writes a line to a terminal device that is not PID 1's console (e.g. /dev/tty0).
    fn write_tty(&self, path: &str, line: &str) -> io::Result<()>;
    /// Removes a file; one that is not there is an error of kind `NotFound`.
    fn remove_file(&self, path: &str) -> io::Result<()>;
    /// Mixes `bytes` into the kernel's entropy pool (a write to /dev/urandom) and makes the
    /// kernel's CRNG reseed from it at once (`RNDRESEEDCRNG`).
    fn mix_entropy(&self, bytes: &[u8]) -> io::Result<()>;
    /// Sets the wall clock (CLOCK_REALTIME) to `since_epoch` after 1970-01-01 UTC.
    fn set_wall_clock(&self, since_epoch: Duration) -> io::Result<()>;
    /// Fills `buf` from the kernel's CRNG (getrandom(2)).
    fn random_bytes(&self, buf: &mut [u8]) -> io::Result<()>;
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
