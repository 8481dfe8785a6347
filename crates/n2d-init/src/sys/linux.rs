//! The real system: Linux, over nix and std (PID 1 of the guest).

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

    fn read_head_uncached(&self, path: &str, max: usize) -> io::Result<Vec<u8>> {
        // BLKFLSBUF (_IO(0x12, 97)): writes back and drops the device's cached blocks.
        const BLKFLSBUF: nix::libc::c_ulong = 0x1261;
        let file = File::open(path)?;
        // SAFETY: BLKFLSBUF takes no argument.
        if unsafe { nix::libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), BLKFLSBUF as _) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = Vec::new();
        file.take(max as u64).read_to_end(&mut buf)?;
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
                let term =
                    OpenOptions::new().read(true).write(true).custom_flags(nix::libc::O_NOCTTY).open(path)?;
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

    fn idle(&self, limit: Duration) {
        std::thread::park_timeout(limit)
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

    fn loop_attach(&self, file: &str) -> io::Result<String> {
        loopdev::attach_read_only(file)
    }

    fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = OpenOptions::new().write(true).open(path)?;
        file.write_all_at(data, offset)?;
        file.sync_all()
    }

    fn resize_partition(&self, disk: &str, partno: u32, start: u64, length: u64) -> io::Result<()> {
        loopdev::blkpg_resize(disk, partno, start, length)
    }

    fn dhcp_socket(&self, ifname: &str) -> io::Result<Box<dyn DhcpSocket + '_>> {
        Ok(Box::new(udp::Dhcp68::bind(ifname)?))
    }

    fn write_tty(&self, path: &str, line: &str) -> io::Result<()> {
        let mut tty = OpenOptions::new().write(true).custom_flags(nix::libc::O_NOCTTY).open(path)?;
        tty.write_all(format!("{line}\r\n").as_bytes())
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn mix_entropy(&self, bytes: &[u8]) -> io::Result<()> {
        // RNDRESEEDCRNG (_IO('R', 0x07)): the CRNG takes a new key from the input pool now,
        // rather than at its next scheduled reseed.
        const RNDRESEEDCRNG: nix::libc::c_ulong = 0x5207;
        let mut urandom = OpenOptions::new().write(true).open("/dev/urandom")?;
        urandom.write_all(bytes)?;
        // SAFETY: RNDRESEEDCRNG takes no argument.
        if unsafe { nix::libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&urandom), RNDRESEEDCRNG as _) } == 0 {
            return Ok(());
        }
        match io::Error::last_os_error() {
            // The CRNG is not seeded yet: its first seeding takes the pool, these bytes included.
            e if e.raw_os_error() == Some(nix::libc::ENODATA) => Ok(()),
            e => Err(e),
        }
    }

    fn set_wall_clock(&self, since_epoch: Duration) -> io::Result<()> {
        nix::time::clock_settime(ClockId::CLOCK_REALTIME, since_epoch.into()).map_err(io::Error::from)
    }

    fn random_bytes(&self, buf: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            let rest = &mut buf[filled..];
            // SAFETY: getrandom(2) writes at most `rest.len()` bytes into `rest`, a live buffer.
            let n = unsafe { nix::libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            filled += n as usize;
        }
        Ok(())
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

/// Loop devices and partition resizing, by ioctl (the initramfs has no losetup or partx).
mod loopdev {
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::fd::AsRawFd;

    const LOOP_CTL_GET_FREE: nix::libc::c_ulong = 0x4C82;
    const LOOP_CONFIGURE: nix::libc::c_ulong = 0x4C0A;
    const LO_FLAGS_READ_ONLY: u32 = 1;
    const BLKPG: nix::libc::c_ulong = 0x1269;
    const BLKPG_RESIZE_PARTITION: i32 = 3;

    #[repr(C)]
    struct LoopInfo64 {
        lo_device: u64,
        lo_inode: u64,
        lo_rdevice: u64,
        lo_offset: u64,
        lo_sizelimit: u64,
        lo_number: u32,
        lo_encrypt_type: u32,
        lo_encrypt_key_size: u32,
        lo_flags: u32,
        lo_file_name: [u8; 64],
        lo_crypt_name: [u8; 64],
        lo_encrypt_key: [u8; 32],
        lo_init: [u64; 2],
    }

    #[repr(C)]
    struct LoopConfig {
        fd: u32,
        block_size: u32,
        info: LoopInfo64,
        reserved: [u64; 8],
    }

    #[repr(C)]
    struct BlkpgPartition {
        start: i64,
        length: i64,
        pno: i32,
        devname: [u8; 64],
        volname: [u8; 64],
    }

    #[repr(C)]
    struct BlkpgIoctlArg {
        op: i32,
        flags: i32,
        datalen: i32,
        data: *mut nix::libc::c_void,
    }

    fn check(ret: i32) -> io::Result<i32> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    pub fn attach_read_only(file: &str) -> io::Result<String> {
        let backing = File::open(file)?;
        let control = OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = check(unsafe { nix::libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) })?;
        let device = format!("/dev/loop{n}");
        let dev = OpenOptions::new().read(true).open(&device)?;
        let mut config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            // SAFETY: all-zero is a valid loop_info64.
            info: unsafe { std::mem::zeroed() },
            reserved: [0; 8],
        };
        config.info.lo_flags = LO_FLAGS_READ_ONLY;
        let name = file.as_bytes();
        let len = name.len().min(63);
        config.info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: LOOP_CONFIGURE reads a loop_config, which `config` is laid out as.
        check(unsafe { nix::libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &config) })?;
        Ok(device)
    }

    pub fn blkpg_resize(disk: &str, partno: u32, start: u64, length: u64) -> io::Result<()> {
        let dev = File::open(disk)?;
        let mut part = BlkpgPartition {
            start: start as i64,
            length: length as i64,
            pno: partno as i32,
            devname: [0; 64],
            volname: [0; 64],
        };
        let mut arg = BlkpgIoctlArg {
            op: BLKPG_RESIZE_PARTITION,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as i32,
            data: (&mut part as *mut BlkpgPartition).cast(),
        };
        // SAFETY: BLKPG reads a blkpg_ioctl_arg pointing at a blkpg_partition, both alive here.
        check(unsafe { nix::libc::ioctl(dev.as_raw_fd(), BLKPG as _, &mut arg) })?;
        Ok(())
    }
}

/// The DHCP client's UDP socket: 0.0.0.0:68, bound to one interface, allowed to broadcast.
mod udp {
    use crate::sys::DhcpSocket;
    use std::io;
    use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    pub struct Dhcp68(UdpSocket);

    fn setsockopt(fd: i32, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
        // SAFETY: `value` is a live buffer of the given length.
        let ret = unsafe {
            nix::libc::setsockopt(fd, level, name, value.as_ptr().cast(), value.len() as nix::libc::socklen_t)
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    impl Dhcp68 {
        pub fn bind(ifname: &str) -> io::Result<Self> {
            use nix::libc::{
                AF_INET, SOCK_CLOEXEC, SOCK_DGRAM, SOL_SOCKET, SO_BINDTODEVICE, SO_BROADCAST, SO_REUSEADDR,
            };
            // SAFETY: socket(2) with constant arguments; the fd is owned right away.
            let fd = unsafe { nix::libc::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh fd nobody else owns.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let one = 1i32.to_ne_bytes();
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one)?;
            setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one)?;
            setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname.as_bytes())?;
            let socket = UdpSocket::from(owned);
            // bind(2) on 0.0.0.0:68 (std's UdpSocket::bind would not take the options first).
            // SAFETY: all-zero is a valid sockaddr_in.
            let mut addr: nix::libc::sockaddr_in = unsafe { std::mem::zeroed() };
            addr.sin_family = AF_INET as nix::libc::sa_family_t;
            addr.sin_port = 68u16.to_be();
            // SAFETY: `addr` is a sockaddr_in of the length given.
            let ret = unsafe {
                nix::libc::bind(
                    socket.as_raw_fd(),
                    (&addr as *const nix::libc::sockaddr_in).cast(),
                    std::mem::size_of::<nix::libc::sockaddr_in>() as nix::libc::socklen_t,
                )
            };
            if ret < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Dhcp68(socket))
        }
    }

    impl DhcpSocket for Dhcp68 {
        fn send(&self, message: &[u8]) -> io::Result<()> {
            self.0.send_to(message, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67)).map(|_| ())
        }

        fn recv(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
            self.0.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
            let mut buf = vec![0u8; 1500];
            match self.0.recv(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    Ok(Some(buf))
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(None),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_fill_the_whole_buffer_differently_each_time() {
        let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
        RealSystem.random_bytes(&mut a).unwrap();
        RealSystem.random_bytes(&mut b).unwrap();
        assert_ne!(a, b);
        // The end of the buffer was filled too (64 zero bytes from the CRNG: never).
        assert!(a[4032..].iter().any(|&x| x != 0) && b[4032..].iter().any(|&x| x != 0));
    }

    #[test]
    fn idle_ends_when_another_thread_wakes_it() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let (me, woken) = (std::thread::current(), Arc::new(AtomicBool::new(false)));
        let started = std::time::Instant::now();
        let flag = woken.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            flag.store(true, Ordering::SeqCst);
            me.unpark();
        });
        // park_timeout may also return spuriously: idle again until the other thread woke it.
        while !woken.load(Ordering::SeqCst) {
            RealSystem.idle(Duration::from_secs(30));
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
