//! A lab of several "hosts" on this one machine, for the tests of n2d across hosts: each host is
//! its own network namespace with its own N2D_HOME and its own sshd (Debian's openssh-server,
//! keys made here), joined by veths to a "LAN" bridge in a further namespace. Host `h1` is where
//! the user types (the local n2d); the others are reached over SSH. Nothing is made in the
//! host's own namespace, and everything goes when the lab is dropped, pass or fail.

use super::{n2d_bin, run_ok, timing, Netns};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// The LAN's /24: host hN has 10.99.0.N on its `brlan` bridge.
pub const LAN_PREFIX: &str = "10.99.0";

pub struct LabHost {
    /// `h1`, `h2`...
    pub name: String,
    pub ip: String,
    pub ns: Netns,
}

pub struct Lab {
    pub dir: PathBuf,
    lan: Netns,
    pub hosts: Vec<LabHost>,
    sshds: std::cell::RefCell<Vec<Child>>,
}

/// The sshd variants a host may run besides its own on port 22.
#[derive(Clone, Copy)]
pub enum Sshd {
    /// Port 22: n2d (this build) on the PATH, the host's own home.
    Normal,
    /// No n2d on the PATH.
    NoN2d,
    /// An `n2d` on the PATH that says it is another version.
    OtherVersion,
    /// The lab's client key is not authorised.
    ForeignKey,
}

impl Sshd {
    pub fn port(self) -> u16 {
        match self {
            Sshd::Normal => 22,
            Sshd::NoN2d => 2201,
            Sshd::OtherVersion => 2202,
            Sshd::ForeignKey => 2203,
        }
    }
}

impl Lab {
    /// `count` hosts named `{prefix}1..`, each namespace `{prefix}N`, the LAN `{prefix}lan`.
    pub fn new(prefix: &str, count: usize) -> Lab {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lab-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let keygen = |path: &Path| {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "n2d-lab", "-f"])
                    .arg(path),
            )
        };
        keygen(&dir.join("client"));
        keygen(&dir.join("foreign"));
        std::fs::copy(dir.join("client.pub"), dir.join("authorized_keys")).unwrap();
        std::fs::copy(dir.join("foreign.pub"), dir.join("foreign_keys")).unwrap();
        std::fs::write(
            dir.join("ssh_config"),
            format!(
                "Host *\n  IdentityFile {d}/client\n  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n  GlobalKnownHostsFile /dev/null\n",
                d = dir.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("known_hosts"), "").unwrap();
        // A stand-in n2d of another version.
        let other = dir.join("other-version");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("n2d"), "#!/bin/sh\necho 'n2d 0.0.9'\n").unwrap();
        run_ok(Command::new("chmod").arg("755").arg(other.join("n2d")));

        let lan = Netns::new(&format!("{prefix}lan"), &dir.join("lan-home"));
        run_ok(&mut lan.cmd("ip", &["link", "add", "lan0", "type", "bridge"]));
        run_ok(&mut lan.cmd("ip", &["link", "set", "lan0", "up"]));
        let mut lab = Lab { dir: dir.clone(), lan, hosts: Vec::new(), sshds: Default::default() };
        for n in 1..=count {
            let name = format!("h{n}");
            let home = dir.join(&name).join("home");
            std::fs::create_dir_all(&home).unwrap();
            let ns = Netns::new(&format!("{prefix}{n}"), &home);
            let ip = format!("{LAN_PREFIX}.{n}");
            // hN's `lan` end goes into its namespace, on a bridge `brlan` that holds its address
            // (machines attached to brlan are on the LAN too); the other end joins lan0.
            let outside = format!("{prefix}v{n}");
            run_ok(&mut lab.lan.cmd("ip", &["link", "add", &outside, "type", "veth", "peer", "name", "lan"]));
            run_ok(&mut lab.lan.cmd("ip", &["link", "set", "lan", "netns", &ns.name]));
            run_ok(&mut lab.lan.cmd("ip", &["link", "set", &outside, "master", "lan0", "up"]));
            run_ok(&mut ns.cmd("ip", &["link", "add", "brlan", "type", "bridge"]));
            run_ok(&mut ns.cmd("ip", &["link", "set", "lan", "master", "brlan", "up"]));
            run_ok(&mut ns.cmd("ip", &["addr", "add", &format!("{ip}/24"), "dev", "brlan"]));
            run_ok(&mut ns.cmd("ip", &["link", "set", "brlan", "up"]));
            let host_key = dir.join(&name).join("host_key");
            keygen(&host_key);
            lab.hosts.push(LabHost { name, ip, ns });
        }
        lab
    }

    pub fn host(&self, name: &str) -> &LabHost {
        self.hosts.iter().find(|h| h.name == name).unwrap()
    }

    /// Starts an sshd of that kind on host `name` (in its namespace, on its LAN address).
    pub fn start_sshd(&self, name: &str, kind: Sshd) {
        let host = self.host(name);
        let hdir = self.dir.join(name);
        let bin_dir = Path::new(n2d_bin()).parent().unwrap().display().to_string();
        let path = match kind {
            Sshd::Normal | Sshd::ForeignKey => {
                format!("{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            }
            Sshd::NoN2d => "/usr/sbin:/usr/bin:/sbin:/bin".into(),
            Sshd::OtherVersion => {
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.dir.join("other-version").display())
            }
        };
        let keys = match kind {
            Sshd::ForeignKey => self.dir.join("foreign_keys"),
            _ => self.dir.join("authorized_keys"),
        };
        let port = kind.port();
        let config = hdir.join(format!("sshd_config.{port}"));
        std::fs::write(
            &config,
            format!(
                "ListenAddress {ip}:{port}\nHostKey {hk}\nAuthorizedKeysFile {keys}\nPidFile {hdir}/sshd.{port}.pid\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nSetEnv N2D_HOME={home} PATH={path}\n",
                ip = host.ip,
                hk = hdir.join("host_key").display(),
                keys = keys.display(),
                hdir = hdir.display(),
                home = host.ns.home.display(),
            ),
        )
        .unwrap();
        let log = hdir.join(format!("sshd.{port}.log"));
        // A restarted sshd must not be taken as listening by its predecessor's log line.
        let _ = std::fs::remove_file(&log);
        let child = Command::new("ip")
            .args(["netns", "exec", &host.ns.name, "/usr/sbin/sshd", "-D", "-f"])
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .spawn()
            .unwrap();
        self.sshds.borrow_mut().push(child);
        // Listening once the log says so.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("Server listening") {
            assert!(
                std::time::Instant::now() < deadline,
                "sshd on {name}:{port} did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Gives host `name`'s home the images of `source` (the e2e home, where they were built
    /// once) and their warm templates: hard links of their files (a host's namespace has no
    /// route to Debian's mirror, and each host making its own templates would only repeat the
    /// same boots; a template's record names its files' inodes, which hard links keep).
    pub fn install_images(&self, name: &str, source: &Path) {
        let images = self.host(name).ns.home.join("images");
        for entry in std::fs::read_dir(source.join("images")).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let target = images.join(entry.file_name());
            link_files(&entry.path(), &target);
            let Ok(templates) = std::fs::read_dir(entry.path().join("templates")) else { continue };
            for template in templates.flatten().filter(|t| t.path().is_dir()) {
                link_files(&template.path(), &target.join("templates").join(template.file_name()));
            }
        }
    }

    /// Takes host `name` off the LAN (its veth's far end down): its machines and sshd are cut
    /// from the other hosts, as by a pulled cable.
    pub fn cut_link(&self, name: &str) {
        let n = &name[1..];
        let veth = format!("{}v{n}", self.lan.name.trim_end_matches("lan"));
        run_ok(&mut self.lan.cmd("ip", &["link", "set", &veth, "down"]));
    }

    /// Puts host `name` back on the LAN.
    pub fn restore_link(&self, name: &str) {
        let n = &name[1..];
        let veth = format!("{}v{n}", self.lan.name.trim_end_matches("lan"));
        run_ok(&mut self.lan.cmd("ip", &["link", "set", &veth, "up"]));
    }

    /// Ends every sshd of host `name` (its link to the others is cut for n2d).
    pub fn stop_sshds(&self, name: &str) {
        let ns = self.host(name).ns.name.clone();
        let pids =
            String::from_utf8(Command::new("ip").args(["netns", "pids", &ns]).output().unwrap().stdout)
                .unwrap();
        for child in self.sshds.borrow_mut().iter_mut() {
            if pids.split_whitespace().any(|p| p == child.id().to_string()) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Makes the lab's known_hosts trust host `name`'s real key on these ports.
    pub fn trust(&self, name: &str, ports: &[u16]) {
        let key = std::fs::read_to_string(self.dir.join(name).join("host_key.pub")).unwrap();
        self.add_known(name, ports, &key);
    }

    /// Puts a key that is not host `name`'s in the lab's known_hosts for it (a changed key).
    pub fn trust_wrong_key(&self, name: &str, ports: &[u16]) {
        let key = std::fs::read_to_string(self.dir.join("foreign.pub")).unwrap();
        self.add_known(name, ports, &key);
    }

    fn add_known(&self, name: &str, ports: &[u16], key: &str) {
        let ip = &self.host(name).ip;
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        let path = self.dir.join("known_hosts");
        let mut text = std::fs::read_to_string(&path).unwrap();
        for port in ports {
            let pattern = if *port == 22 { ip.clone() } else { format!("[{ip}]:{port}") };
            // One entry per host and port: a new key replaces the old.
            text = text
                .lines()
                .filter(|l| !l.starts_with(&format!("{pattern} ")))
                .map(|l| format!("{l}\n"))
                .collect();
            text.push_str(&format!("{pattern} {}\n", key.join(" ")));
        }
        std::fs::write(&path, text).unwrap();
    }

    /// `n2d ARGS` as the user on h1 (the local host), with the lab's ssh_config.
    pub fn n2d(&self, args: &[&str]) -> Output {
        let h1 = &self.host("h1").ns;
        let began = std::time::Instant::now();
        let out =
            h1.cmd(n2d_bin(), args).env("N2D_SSH_CONFIG", self.dir.join("ssh_config")).output().unwrap();
        eprintln!(
            "$ n2d {} {}\n{}{}",
            args.join(" "),
            timing(began),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout).trim_end()
        );
        out
    }

    pub fn n2d_ok(&self, args: &[&str]) -> String {
        let out = self.n2d(args);
        assert!(out.status.success(), "n2d {} failed", args.join(" "));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `n2d ARGS` that must fail with `status`, saying `says` on stderr; returns stderr.
    pub fn n2d_fails(&self, args: &[&str], status: i32, says: &str) -> String {
        let out = self.n2d(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(status), "n2d {}: {stderr}", args.join(" "));
        assert!(stderr.contains(says), "n2d {}: expected {says:?} in:\n{stderr}", args.join(" "));
        let errors = stderr.lines().filter(|l| l.starts_with("error: ")).count();
        assert_eq!(errors, 1, "one error line: {stderr}");
        stderr
    }

    /// The names `host ls -q` prints.
    pub fn host_names(&self) -> Vec<String> {
        self.n2d_ok(&["host", "ls", "-q"]).lines().map(str::to_string).collect()
    }
}

/// Hard links of the plain files of `from` (not its sockets or directories) in `to`.
fn link_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in std::fs::read_dir(from).unwrap().flatten() {
        if file.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::hard_link(file.path(), to.join(file.file_name())).unwrap();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Only the sshds this lab started, by their own pids.
        for child in self.sshds.get_mut().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The hosts' namespaces (and their QEMUs) go with their Netns; the LAN's too.
    }
}
