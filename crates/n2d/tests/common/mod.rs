//! Shared plumbing of the end-to-end tests: a network namespace per test, the real `n2d`
//! binary, the host's real `docker` CLI, and cleanup of everything made, pass or fail.
#![allow(dead_code)]

pub mod lab;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn n2d_bin() -> &'static str {
    env!("CARGO_BIN_EXE_n2d")
}

/// How long a command took and when it ended in the test's run ("[12.3s, at 75s]"), for the
/// log's `$ n2d ...` lines: where an end-to-end test spends its time.
pub fn timing(began: std::time::Instant) -> String {
    static TEST_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *TEST_START.get_or_init(|| began);
    format!("[{:.1}s, at {:.0}s]", began.elapsed().as_secs_f64(), start.elapsed().as_secs_f64())
}

/// State shared by the e2e tests: the image is built once (in the host's namespace).
pub fn e2e_home() -> PathBuf {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-home");
    std::fs::create_dir_all(&home).unwrap();
    home
}

/// Builds the default image in the host's namespace (it fetches Debian packages).
pub fn build_image(home: &Path) {
    let began = std::time::Instant::now();
    let out = Command::new(n2d_bin())
        .args(["image", "build"])
        .env("N2D_HOME", home)
        // The init built into n2d, not any n2d-init lying next to it: a plain workspace build
        // leaves a glibc-linked one in target/release/ that cannot be a guest's PID 1.
        .env_remove("N2D_INIT")
        .output()
        .unwrap();
    assert!(out.status.success(), "image build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("$ n2d image build {}\n{}", timing(began), String::from_utf8_lossy(&out.stderr).trim());
}

/// A network namespace that exists for the life of the test, with only loopback up.
/// Dropping it kills the QEMU processes of machines in `home` that run in it, then deletes it.
pub struct Netns {
    pub name: String,
    pub home: PathBuf,
}

impl Netns {
    pub fn new(name: &str, home: &Path) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        run_ok(Command::new("ip").args(["netns", "add", name]));
        let ns = Netns { name: name.to_string(), home: home.to_path_buf() };
        // n2d keys its host-wide state by the namespace's inode, and the kernel reuses those: a
        // file already there belongs to a namespace deleted without `n2d rm` (e.g. by hand, or a
        // test killed before its drop), not to this brand-new one.
        let _ = std::fs::remove_file(ns.host_state_file());
        run_ok(Command::new("ip").args(["netns", "exec", name, "ip", "link", "set", "lo", "up"]));
        ns
    }

    /// A command run inside the namespace, with N2D_HOME set, and DOCKER_CONFIG in the test's
    /// home so that the docker contexts n2d registers stay out of the user's ~/.docker.
    pub fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program])
            .args(args)
            .env("N2D_HOME", &self.home)
            .env("DOCKER_CONFIG", self.docker_config())
            .env_remove("DOCKER_CONTEXT");
        c
    }

    /// The docker CLI's configuration directory of the test (its context store).
    pub fn docker_config(&self) -> PathBuf {
        self.home.join("docker-config")
    }

    pub fn n2d(&self, args: &[&str]) -> Output {
        let began = std::time::Instant::now();
        let out = self.cmd(n2d_bin(), args).output().unwrap();
        eprintln!(
            "$ n2d {} {}\n{}",
            args.join(" "),
            timing(began),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        out
    }

    /// `n2d` run in this namespace for another home (its own DOCKER_CONFIG too).
    pub fn n2d_for(&self, home: &Path, args: &[&str]) -> Command {
        let mut c = self.cmd(n2d_bin(), args);
        c.env("N2D_HOME", home).env("DOCKER_CONFIG", home.join("docker-config"));
        c
    }

    /// The namespace's host-wide n2d state file (`/run/n2d/netns-<inode>.json`).
    pub fn host_state_file(&self) -> PathBuf {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(format!("/run/netns/{}", self.name)).unwrap().ino();
        PathBuf::from(format!("/run/n2d/netns-{ino}.json"))
    }

    /// The namespace's iptables rules (`iptables -S`) of one table.
    pub fn iptables(&self, table: &str) -> String {
        run_ok(&mut self.cmd("iptables", &["-w", "5", "-t", table, "-S"]))
    }

    pub fn n2d_ok(&self, args: &[&str]) -> String {
        let out = self.n2d(args);
        assert!(out.status.success(), "n2d {} failed", args.join(" "));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The host's docker CLI inside the namespace, with the given environment.
    pub fn docker(&self, env: &[(String, String)], args: &[&str]) -> Output {
        let mut c = self.cmd("docker", args);
        c.env_remove("DOCKER_HOST").env_remove("DOCKER_TLS_VERIFY").env_remove("DOCKER_CERT_PATH");
        for (k, v) in env {
            c.env(k, v);
        }
        let began = std::time::Instant::now();
        let out = c.output().unwrap();
        // The slow ones only: the tests poll `docker` every few seconds.
        if began.elapsed() >= std::time::Duration::from_secs(2) {
            eprintln!("$ docker {} {}", args.join(" "), timing(began));
        }
        out
    }

    pub fn docker_ok(&self, env: &[(String, String)], args: &[&str]) -> String {
        let out = self.docker(env, args);
        assert!(
            out.status.success(),
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Pids of QEMU processes running in this namespace.
    pub fn qemu_pids(&self) -> Vec<i32> {
        self.pids_named("qemu-system")
    }

    /// The processes of this namespace whose name starts with `prefix`.
    pub fn pids_named(&self, prefix: &str) -> Vec<i32> {
        let out = Command::new("ip").args(["netns", "pids", &self.name]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|pid: &i32| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with(prefix))
            })
            .collect()
    }

    /// The pid of machine `name`'s QEMU, which must be one of this namespace's (never any
    /// other process's: the tests kill it).
    pub fn machine_qemu_pid(&self, name: &str) -> i32 {
        let path = self.home.join("machines").join(name).join("qemu.pid");
        let pid: i32 = std::fs::read_to_string(&path).unwrap().trim().parse().unwrap();
        assert!(self.qemu_pids().contains(&pid), "{name}'s pid {pid} is not a QEMU of this namespace");
        pid
    }

    /// SIGKILLs QEMU processes of this namespace (only those) and waits until they are gone.
    pub fn kill_qemus(&self, pids: &[i32]) {
        let ours = self.qemu_pids();
        for pid in pids {
            assert!(ours.contains(pid), "{pid} is not a QEMU of this namespace");
            run_ok(Command::new("kill").args(["-9", &pid.to_string()]));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while pids.iter().any(|p| self.qemu_pids().contains(p)) {
            assert!(std::time::Instant::now() < deadline, "QEMU {pids:?} did not die");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// What a host reboot does to n2d's world in this namespace: every QEMU gone, taps and
    /// bridges gone, and the host-wide state file in `/run` gone.
    pub fn simulate_reboot(&self) {
        self.kill_qemus(&self.qemu_pids());
        for link in self.links() {
            if link.starts_with("n2d") {
                run_ok(&mut self.cmd("ip", &["link", "del", &link]));
            }
        }
        std::fs::remove_file(self.host_state_file()).unwrap();
    }

    /// `n2d ls --json` as (name, state) pairs.
    pub fn machine_states(&self) -> Vec<(String, String)> {
        let rows: serde_json::Value = serde_json::from_str(&self.n2d_ok(&["ls", "--json"])).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].as_str().unwrap().to_string(), r["state"].as_str().unwrap().to_string()))
            .collect()
    }

    /// The docker host a docker context points at (empty when there is no such context).
    pub fn context_host(&self, context: &str) -> String {
        let out =
            self.docker(&[], &["context", "inspect", context, "--format", "{{.Endpoints.docker.Host}}"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// On failure: the end of every machine's serial console, so CI logs show what the guests saw.
    pub fn dump_consoles(&self) {
        let Ok(dir) = std::fs::read_dir(self.home.join("machines")) else { return };
        for entry in dir.flatten() {
            let log = std::fs::read_to_string(entry.path().join("serial.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- console of {} (last 40 lines) ---", entry.file_name().to_string_lossy());
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("  | {line}");
            }
        }
    }

    /// Links (bridges, taps) in the namespace other than loopback.
    pub fn links(&self) -> Vec<String> {
        let out = self.cmd("ip", &["-o", "link", "show"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string()))
            .filter(|n| n != "lo")
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_consoles();
        }
        // Only the QEMU processes this test started: those living in its namespace.
        for pid in self.qemu_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // And the userspace WireGuard n2d started here for a link (TERM: it removes its socket).
        for pid in self.pids_named("wireguard-go") {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        // And a user-mode switch n2d started here, left by a test that failed before its last
        // machine went.
        for pid in self.pids_named("vde_switch") {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        // n2d's host-wide record of this namespace's bridges goes with it.
        if std::path::Path::new("/run/netns").join(&self.name).exists() {
            let _ = std::fs::remove_file(self.host_state_file());
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        // Machines of this test: their state goes with them.
        let _ = std::fs::remove_dir_all(self.home.join("machines"));
        let _ = std::fs::remove_dir_all(self.home.join("swarms"));
        let _ = std::fs::remove_dir_all(self.docker_config());
    }
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Parses `export K="V"` lines of `n2d env`.
pub fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        // Single-quoted for sh (`'` written as `'\''`).
        .map(|(k, v)| {
            let v = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(v);
            (k.to_string(), v.replace("'\\''", "'"))
        })
        .collect()
}

/// A tiny image made locally (no registry here): a static busybox in a tarball, `docker import`ed.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let root = dir.join("bb-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("install busybox-static");
    for applet in ["sh", "echo", "httpd", "cat", "hostname", "head", "od", "sha256sum"] {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    let tar = dir.join("busybox-rootfs.tar");
    run_ok(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg("."));
    tar
}

/// A stack file: the busybox web image (`busybox_rootfs_tar`, imported as n2d-test/web:1) with
/// `replicas` tasks, published on 8080 behind the routing mesh, on an overlay network. Each task
/// answers `hello-from-<its hostname>` (what `wait_http` looks for).
pub fn web_stack(replicas: u32) -> String {
    format!(
        r#"version: "3.8"
services:
  web:
    image: n2d-test/web:1
    command: ["/bin/sh", "-c", "echo hello-from-$$(hostname) > /index.html && exec /bin/httpd -f -p 80 -h /"]
    ports: ["8080:80"]
    networks: [front]
    deploy:
      replicas: {replicas}
networks:
  front:
    driver: overlay
"#
    )
}

/// Waits until `docker node inspect` shows `node` Ready.
pub fn wait_ready_node(ns: &Netns, env: &[(String, String)], node: &str, secs: u64) -> bool {
    let began = std::time::Instant::now();
    let deadline = began + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        let out = ns.docker(env, &["node", "inspect", node, "--format", "{{.Status.State}}"]);
        if String::from_utf8_lossy(&out.stdout).trim() == "ready" {
            eprintln!("(waited for {node} Ready {})", timing(began));
            return true;
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    false
}

/// Polls http://ip:port/ from inside the namespace (curl), up to `secs` seconds, for a page of
/// the test's web service (`hello-from-...`).
pub fn wait_http(ns: &Netns, ip: &str, port: u16, secs: u64) -> bool {
    let began = std::time::Instant::now();
    let deadline = began + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "curl", "-s", "-m", "5"])
            .arg(format!("http://{ip}:{port}/"))
            .output()
            .unwrap();
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("hello-from-") {
            eprintln!("(waited for http://{ip}:{port}/ {})", timing(began));
            return true;
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    false
}

/// A size-limited tmpfs mounted at a path of the test's (in the host's mount namespace: the
/// `ip netns exec` of every n2d command sees it), unmounted when dropped, pass or fail.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
                .arg(path),
        );
        Tmpfs { path: path.to_path_buf() }
    }

    /// Fills the filesystem with one file until it has no space left; returns the file.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xa5u8; 1 << 20];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", filler.display()),
            }
        }
        // Page by page: not one byte left.
        while f.write(&chunk[..4096]).is_ok_and(|n| n > 0) {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = Command::new("umount").arg(&self.path).status();
        if !umount.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
