//! End to end, without root: an ordinary user the test creates runs n2d inside a network
//! namespace that has only loopback. The default swarm comes up on user-mode networking (a
//! VDE switch in the user's home, QEMU's user stack), the docker CLI reaches it through
//! 127.0.0.1, a stack's published port answers through a forward to every node (routing mesh),
//! a restart keeps a node's forwards (and moves the swarm's port while its node is down), and
//! `swarm rm` leaves no process, socket or listening port behind.
//! Ignored by default, like the other e2e tests: run it with `-- --ignored`.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const USER: &str = "n2d-e2e-user";

/// An unprivileged user of the test's own, with a directory it owns (home, n2d binary, image).
/// Dropped: its processes (all started by this test) are killed, the user and its files go.
struct User {
    dir: PathBuf,
    uid: u32,
}

impl User {
    fn create() -> User {
        let _ = Command::new("userdel").arg(USER).status();
        run_ok(Command::new("useradd").args(["--no-create-home", "--shell", "/usr/sbin/nologin", USER]));
        let uid: u32 = run_ok(Command::new("id").args(["-u", USER])).trim().parse().unwrap();
        let dir = PathBuf::from(format!("/tmp/n2d-e2e-rootless-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home")).unwrap();
        // The test's target directory may not be readable by others: the user gets its own copy.
        std::fs::copy(n2d_bin(), dir.join("n2d")).unwrap();
        User { dir, uid }
    }

    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// The image the root tests built, given to the user (the build needs the network, which
    /// the user's namespace does not have).
    fn give_image(&self, from: &Path) {
        let images = from.join("images");
        std::fs::create_dir_all(self.home().join("images")).unwrap();
        for entry in std::fs::read_dir(&images).unwrap().flatten() {
            if !entry.file_name().to_string_lossy().starts_with('.') {
                run_ok(Command::new("cp").arg("-a").arg(entry.path()).arg(self.home().join("images")));
            }
        }
        run_ok(Command::new("chown").args(["-R", &format!("{USER}:{USER}")]).arg(&self.dir));
    }

    /// `program args` as the user, inside `ns`, with no capability and the user's own state.
    fn cmd(&self, ns: &str, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "setpriv", "--reuid", USER, "--regid", USER, "--clear-groups"])
            .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
            .arg(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.home())
            .env("N2D_HOME", self.home())
            .env("DOCKER_CONFIG", self.home().join("docker-config"));
        c
    }

    fn n2d(&self, ns: &str, args: &[&str]) -> Output {
        let n2d = self.dir.join("n2d");
        let out = self.cmd(ns, n2d.to_str().unwrap(), args).output().unwrap();
        eprintln!(
            "$ n2d {} (as {USER})\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        out
    }

    fn n2d_ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.n2d(ns, args);
        assert!(out.status.success(), "n2d {} failed", args.join(" "));
        String::from_utf8(out.stdout).unwrap()
    }

    fn docker_ok(&self, ns: &str, args: &[&str]) -> String {
        run_ok(&mut self.cmd(ns, "docker", args))
    }

    /// Pids of the user's processes (every one of them was started by this test).
    fn pids(&self) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == self.uid)
            })
            .collect()
    }

    /// The names of the user's live processes (a zombie, dead and waiting for init to reap
    /// it, is not one).
    fn process_names(&self) -> Vec<String> {
        let live = |p: &u32| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            state.is_some_and(|s| s != "Z" && s != "X")
        };
        self.pids()
            .iter()
            .filter(|p| live(p))
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
            .map(|c| c.trim().to_string())
            .collect()
    }
}

impl Drop for User {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = Command::new("userdel").arg(USER).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the namespace's loopback service answers, and its port (nothing else of the test uses it).
const LOOPBACK_SECRET: &str = "n2d-host-loopback-secret";
const LOOPBACK_PORT: u16 = 18099;

/// A service on the namespace's 127.0.0.1 only, as a user's local database or admin page would
/// be (busybox httpd, run as root by the test): guests must not reach it. Killed by its pid
/// when dropped, pass or fail.
struct LoopbackService(std::process::Child);

impl LoopbackService {
    fn start(ns: &Netns, dir: &Path) -> LoopbackService {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("index.html"), LOOPBACK_SECRET).unwrap();
        let listen = format!("127.0.0.1:{LOOPBACK_PORT}");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "busybox", "httpd", "-f", "-p", &listen, "-h"])
            .arg(dir)
            .spawn()
            .unwrap();
        let service = LoopbackService(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !listening(ns).contains(&listen) {
            assert!(std::time::Instant::now() < deadline, "the loopback service did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        service
    }
}

impl Drop for LoopbackService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// From a container on the swarm's manager (`network`: Docker's default bridge, routed through
/// the guest, or `host`, the guest's own stack), a connection to each of `ips` on
/// [`LOOPBACK_PORT`]; one line per address with what it answered, and how long that took.
fn probe_loopback(user: &User, ns: &str, network: &str, ips: &[&str]) -> String {
    let script = format!(
        "for ip in {}; do r=$(/bin/busybox printf 'GET / HTTP/1.0\\r\\n\\r\\n' \
         | /bin/busybox nc -w 3 $ip {LOOPBACK_PORT} 2>&1 | /bin/busybox tr '\\r\\n' '  '); \
         echo \"$ip: $r\"; done",
        ips.join(" ")
    );
    let started = std::time::Instant::now();
    let mut args: Vec<&str> = "--context n2d run --rm --network".split(' ').collect();
    args.extend([network, "n2d-test/web:1", "/bin/busybox", "sh", "-c", &script]);
    let out = user.docker_ok(ns, &args);
    let took = started.elapsed().as_secs_f64();
    eprintln!("probe of the host's loopback from --network {network} ({took:.1}s):\n{out}");
    assert_eq!(out.lines().count(), ips.len(), "{out}");
    out
}

/// The TCP ports something listens on in the namespace.
fn listening(ns: &Netns) -> Vec<String> {
    let out = run_ok(&mut ns.cmd("ss", &["-Hltn"]));
    out.lines().filter_map(|l| l.split_whitespace().nth(3).map(str::to_string)).collect()
}

#[test]
#[ignore = "boots four VMs as an unprivileged user: needs root (to make the user) and QEMU; run with --ignored"]
fn an_ordinary_user_runs_the_default_swarm_on_user_mode_networking() {
    let root_home = e2e_home();
    build_image(&root_home);
    let work = tempfile::tempdir().unwrap();
    let user = User::create();
    user.give_image(&root_home);
    // The namespace only loopback (Netns kills no QEMU of the user's home: User's drop does).
    let ns = Netns::new("n2d-e2e-rootless", &user.home());
    let n = ns.name.as_str();

    let doctor = user.n2d_ok(n, &["doctor"]);
    assert!(doctor.contains("user-mode networking needs no privileges"), "{doctor}");
    // A published port on a bridge is refused before anything starts.
    assert_eq!(user.n2d(n, &["create", "x", "--network", "n2d0", "-p", "80"]).status.code(), Some(2));

    let started = std::time::Instant::now();
    let out = user.n2d(n, &["swarm", "create", "--publish", "18080:8080"]);
    assert!(out.status.success(), "swarm create failed");
    eprintln!("rootless swarm create took {:.1}s", started.elapsed().as_secs_f64());
    assert!(String::from_utf8_lossy(&out.stderr).contains("user-mode networking"));

    // The docker CLI reaches the manager through 127.0.0.1, with TLS.
    let host = user.docker_ok(n, &["context", "inspect", "n2d", "--format", "{{.Endpoints.docker.Host}}"]);
    assert!(host.trim().starts_with("tcp://127.0.0.1:"), "{host}");
    let nodes =
        user.docker_ok(n, &["--context", "n2d", "node", "ls", "--format", "{{.Hostname}} {{.Status}}"]);
    let mut lines: Vec<&str> = nodes.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["n2d-mngr-0 Ready", "n2d-wrkr-0 Ready", "n2d-wrkr-1 Ready", "n2d-wrkr-2 Ready"],
        "{nodes}"
    );

    // An image made locally, loaded onto every node.
    let tar = busybox_rootfs_tar(work.path());
    let shared = user.dir.join("web-rootfs.tar");
    std::fs::copy(&tar, &shared).unwrap();
    run_ok(Command::new("chown").arg(format!("{USER}:{USER}")).arg(&shared));
    let saved = user.dir.join("web.tar");
    user.docker_ok(n, &["--context", "n2d", "import", shared.to_str().unwrap(), "n2d-test/web:1"]);
    user.docker_ok(n, &["--context", "n2d", "save", "-o", saved.to_str().unwrap(), "n2d-test/web:1"]);
    user.n2d_ok(n, &["swarm", "load", "n2d", saved.to_str().unwrap()]);

    // The host's loopback is closed to guests: slirp would hand a connection to its host address
    // (or any other of its network) to the namespace's 127.0.0.1, but the guest drops it.
    let loopback = LoopbackService::start(&ns, &user.dir.join("loopback-www"));
    let slirp_net = ["100.64.77.2", "100.64.77.1", "100.64.77.3", "100.64.77.4", "100.64.77.254"];
    for network in ["bridge", "host"] {
        let out = probe_loopback(&user, n, network, &slirp_net);
        assert!(!out.contains(LOOPBACK_SECRET), "a guest reached the host's loopback:\n{out}");
    }
    // What the guard is worth against root in the guest: a privileged container can remove it
    // (the limit README states), and then the same probe reaches the service.
    let flush = "--context n2d run --rm --privileged --pid host n2d-test/web:1 \
                 /bin/busybox nsenter -t 1 -m -n /usr/sbin/iptables -w -t raw -F N2D-UPLINK";
    user.docker_ok(n, &flush.split_whitespace().collect::<Vec<_>>());
    let out = probe_loopback(&user, n, "bridge", &["100.64.77.2"]);
    assert!(out.contains(LOOPBACK_SECRET), "without the guard the probe should reach the service:\n{out}");

    // One replica on an overlay network, published on 8080: every node answers (routing mesh).
    let compose = user.dir.join("stack.yml");
    std::fs::write(&compose, web_stack(1)).unwrap();
    run_ok(Command::new("chmod").arg("644").arg(&compose));
    user.docker_ok(n, &["--context", "n2d", "stack", "deploy", "-c", compose.to_str().unwrap(), "demo"]);
    let nodes = ["n2d-mngr-0", "n2d-wrkr-0", "n2d-wrkr-1", "n2d-wrkr-2"];
    for (i, node) in nodes.iter().enumerate() {
        user.n2d_ok(n, &["port", node, &format!("{}:8080", 18081 + i)]);
    }
    for port in 18080..=18084 {
        assert!(wait_http(&ns, "127.0.0.1", port, 300), "routing mesh: nothing answers on 127.0.0.1:{port}");
    }
    let ls: serde_json::Value = serde_json::from_str(&user.n2d_ok(n, &["ls", "--json"])).unwrap();
    let mngr = ls.as_array().unwrap().iter().find(|r| r["name"] == "n2d-mngr-0").unwrap();
    assert_eq!(mngr["ports"], serde_json::json!(["18081:8080"]), "{mngr}");
    assert!(mngr["endpoint"].as_str().unwrap().starts_with("tcp://127.0.0.1:"), "{mngr}");

    // The manager restarts: it keeps its Docker API port and its forward; the swarm's port
    // moves to a running node while it is down, and stays there.
    let env_before = user.n2d_ok(n, &["env", "n2d-mngr-0"]);
    user.n2d_ok(n, &["restart", "n2d-mngr-0"]);
    assert_eq!(user.n2d_ok(n, &["env", "n2d-mngr-0"]), env_before);
    // Its swarm state is on its data disk: it is the leader again.
    let state = user.docker_ok(n, &["--context", "n2d", "info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert_eq!(state.trim(), "active", "the manager lost its swarm state across a restart");
    // Its boot put the guard back.
    let out = probe_loopback(&user, n, "bridge", &["100.64.77.2"]);
    assert!(!out.contains(LOOPBACK_SECRET), "the guard is not back after a restart:\n{out}");
    drop(loopback);
    let ports = user.n2d_ok(n, &["port", "n2d"]);
    assert!(ports.contains("127.0.0.1:18080->8080/tcp (routing mesh, through n2d-wrkr-0)"), "{ports}");
    let rows: serde_json::Value = serde_json::from_str(&user.n2d_ok(n, &["port", "n2d", "--json"])).unwrap();
    let row = serde_json::json!({"host_port": 18080, "guest_port": 8080, "what": "routing-mesh", "through": "n2d-wrkr-0"});
    assert!(rows.as_array().unwrap().contains(&row), "{rows:#}");
    // The workers reconnect to the manager, then the routing mesh comes back on it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let out =
            user.cmd(n, "docker", &["--context", "n2d", "node", "ls", "--format", "{{.Status}}"]).output();
        let ready = out.map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| *l == "Ready").count());
        if ready.is_ok_and(|r| r == 4) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes are not all Ready after the manager's restart"
        );
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    for port in [18080, 18081] {
        assert!(wait_http(&ns, "127.0.0.1", port, 600), "127.0.0.1:{port} lost across the restart");
    }

    // A host folder of the user's, shared with a machine of theirs: a container reads and
    // writes it through `docker run -v`, at the same path; what it writes is the user's.
    let folder = user.dir.join("project");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("in.txt"), "from the host\n").unwrap();
    let readonly = user.dir.join("readonly");
    std::fs::create_dir_all(&readonly).unwrap();
    run_ok(Command::new("chown").args(["-R", &format!("{USER}:{USER}")]).arg(&folder).arg(&readonly));
    let (f, r) = (folder.to_str().unwrap(), readonly.to_str().unwrap());
    user.n2d_ok(n, &["create", "mnt", "--memory", "1G", "--mount", f, "--mount", &format!("{r}:/ro:ro")]);
    user.docker_ok(n, &["--context", "mnt", "load", "-i", saved.to_str().unwrap()]);
    let volume = format!("{f}:/x");
    let out = user.docker_ok(
        n,
        &[
            "--context",
            "mnt",
            "run",
            "--rm",
            "-v",
            &volume,
            "n2d-test/web:1",
            "sh",
            "-c",
            "cat /x/in.txt; echo from the guest > /x/out.txt",
        ],
    );
    assert_eq!(out, "from the host\n");
    assert_eq!(std::fs::read_to_string(folder.join("out.txt")).unwrap(), "from the guest\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(folder.join("out.txt")).unwrap().uid(), user.uid, "not the user's file");
    let denied = user
        .cmd(
            n,
            "docker",
            &["--context", "mnt", "run", "--rm", "-v", "/ro:/r", "n2d-test/web:1", "touch", "/r/x"],
        )
        .output()
        .unwrap();
    assert!(!denied.status.success(), "a read-only folder was written");
    assert!(!readonly.join("x").exists());
    let suspend = user.n2d(n, &["suspend", "mnt"]);
    assert_eq!(suspend.status.code(), Some(2), "suspend of a machine with host folders");
    user.n2d_ok(n, &["rm", "-f", "mnt"]);

    // Everything goes with the swarm: VMs, the switch, its sockets, every forward.
    user.n2d_ok(n, &["swarm", "rm", "n2d"]);
    assert_eq!(user.process_names(), Vec::<String>::new(), "swarm rm left processes");
    assert!(!user.home().join("network").exists(), "swarm rm left the switch's sockets");
    assert_eq!(listening(&ns), Vec::<String>::new(), "swarm rm left ports open");
    assert_eq!(user.n2d_ok(n, &["ls", "--json"]).trim(), "[]");
}
