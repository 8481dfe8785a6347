//! A fake [`System`] for unit tests: a file tree, processes and a DHCP server in memory.

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
    /// Loop devices attached so far.
    pub loops: u32,
    /// The DHCP server on the wire: each message the client sends, and the answers it gets.
    pub dhcp_server: Option<DhcpServer>,
    pub dhcp_inbox: VecDeque<Vec<u8>>,
    /// The next byte `random_bytes` gives: 0, 1, 2 … (deterministic, wrapping).
    pub next_random: u8,
}

/// A scripted DHCP server: the client's message in, the server's replies out.
pub type DhcpServer = Box<dyn FnMut(&[u8]) -> Vec<Vec<u8>>>;

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
        self.add_plain_disk(name, contents);
        self.add_file(&format!("/sys/block/{name}/serial"), serial);
    }

    /// A whole disk without a serial (an exported disk, a CD, a hypervisor's blank disk).
    pub fn add_plain_disk(&self, name: &str, contents: impl AsRef<[u8]>) {
        let contents = contents.as_ref();
        self.add_dir(&format!("/sys/block/{name}"));
        self.add_file(&format!("/sys/block/{name}/size"), format!("{}\n", contents.len() / 512));
        self.add_file(&format!("/sys/class/block/{name}/uevent"), format!("DEVNAME={name}\nDEVTYPE=disk\n"));
        self.add_file(&format!("/dev/{name}"), contents);
    }

    /// Partition `partn` of `disk` named `label` (its GPT name), from sector `start`.
    pub fn add_partition(&self, disk: &str, partn: u32, label: &str, start: u64, contents: impl AsRef<[u8]>) {
        let contents = contents.as_ref();
        let name = if disk.ends_with(|c: char| c.is_ascii_digit()) {
            format!("{disk}p{partn}")
        } else {
            format!("{disk}{partn}")
        };
        self.add_file(
            &format!("/sys/class/block/{name}/uevent"),
            format!("MAJOR=254\nMINOR={partn}\nDEVNAME={name}\nDEVTYPE=partition\nPARTN={partn}\nPARTNAME={label}\n"),
        );
        self.add_file(&format!("/sys/block/{disk}/{name}/partition"), format!("{partn}\n"));
        self.add_file(&format!("/sys/block/{disk}/{name}/start"), format!("{start}\n"));
        self.add_file(&format!("/sys/block/{disk}/{name}/size"), format!("{}\n", contents.len() / 512));
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

    fn read_head_uncached(&self, path: &str, max: usize) -> io::Result<Vec<u8>> {
        self.record(format!("read uncached {path}"));
        self.read_head(path, max)
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
        let exit = self.state.borrow().run_exits.get(program).copied().unwrap_or(Exit::Code(0));
        // As the kernel does: a NIC's new MAC shows in sysfs at once.
        if let ("ip", ["link", "set", "dev", ifname, "address", mac]) = (program, args) {
            let path = format!("/sys/class/net/{ifname}/address");
            if exit.success() && self.exists(&path) {
                self.add_file(&path, format!("{mac}\n"));
            }
        }
        Ok(exit)
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

    fn idle(&self, limit: Duration) {
        self.sleep(limit);
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

    fn loop_attach(&self, file: &str) -> io::Result<String> {
        let data = self.read_file(file)?;
        let mut st = self.state.borrow_mut();
        let device = format!("/dev/loop{}", st.loops);
        st.loops += 1;
        st.calls.push(format!("loop {device} {file}"));
        st.files.insert(device.clone(), (data, 0o600));
        Ok(device)
    }

    fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.calls.push(format!("write_at {path} {offset} {}", data.len()));
        let (file, _) = st.files.get_mut(path).ok_or_else(|| not_found(path))?;
        let end = offset as usize + data.len();
        if file.len() < end {
            return Err(io::Error::other(format!("{path}: write past the end")));
        }
        file[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn resize_partition(&self, disk: &str, partno: u32, start: u64, length: u64) -> io::Result<()> {
        self.record(format!("resize {disk} {partno} {start} {length}"));
        Ok(())
    }

    fn dhcp_socket(&self, ifname: &str) -> io::Result<Box<dyn DhcpSocket + '_>> {
        if self.state.borrow().dhcp_server.is_none() {
            return Err(io::Error::from_raw_os_error(nix::libc::ENODEV));
        }
        self.record(format!("dhcp socket {ifname}"));
        Ok(Box::new(FakeDhcpSocket { sys: self }))
    }

    fn write_tty(&self, path: &str, line: &str) -> io::Result<()> {
        if !self.exists(path) {
            return Err(not_found(path));
        }
        self.record(format!("tty {path} {line}"));
        Ok(())
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        self.record(format!("remove {path}"));
        self.state.borrow_mut().files.remove(path).map(drop).ok_or_else(|| not_found(path))
    }

    /// Records how many bytes were mixed in, never the bytes.
    fn mix_entropy(&self, bytes: &[u8]) -> io::Result<()> {
        self.record(format!("mix-entropy {} bytes", bytes.len()));
        Ok(())
    }

    fn set_wall_clock(&self, since_epoch: Duration) -> io::Result<()> {
        self.record(format!("set wall clock {} ms", since_epoch.as_millis()));
        Ok(())
    }

    fn random_bytes(&self, buf: &mut [u8]) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        for byte in buf {
            *byte = st.next_random;
            st.next_random = st.next_random.wrapping_add(1);
        }
        Ok(())
    }
}

struct FakeDhcpSocket<'a> {
    sys: &'a FakeSystem,
}

impl DhcpSocket for FakeDhcpSocket<'_> {
    fn send(&self, message: &[u8]) -> io::Result<()> {
        let mut server = self.sys.state.borrow_mut().dhcp_server.take().expect("a server");
        let replies = server(message);
        let mut st = self.sys.state.borrow_mut();
        st.dhcp_server = Some(server);
        st.dhcp_inbox.extend(replies);
        Ok(())
    }

    fn recv(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let mut st = self.sys.state.borrow_mut();
        match st.dhcp_inbox.pop_front() {
            Some(reply) => Ok(Some(reply)),
            None => {
                st.now += timeout;
                Ok(None)
            }
        }
    }
}
