//! End to end: warm starts (issue 20). A template made ahead of time (`n2d image warm`), a swarm
//! of clones and one cold node running a stack behind the routing mesh, the identities two
//! clones took (nothing of one derivable from the other), the swarm suspended and resumed by
//! `start --all` after a simulated reboot, and a damaged template passed over. `n2d exec` and
//! `n2d cp` (issue 21) on a clone, a cold node and a resumed one.
//! Ignored by default (root, QEMU, Debian's mirror): `cargo test --release -p n2d --test
//! e2e_warm -- --ignored`. Everything but the image build happens in a network namespace.

mod common;
use common::*;

const SWARM: &str = "wrm";
const CLONES: [&str; 2] = ["wrm-mngr-0", "wrm-wrkr-0"];
const COLD: &str = "wrm-wrkr-1";

/// What one machine is, as its own engine and guest tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    mac: String,
    address: String,
    hostname: String,
    machine_id: String,
    engine_id: String,
    node_id: String,
    server_key: String,
    urandom: String,
}

fn identity(ns: &Netns, node: &str) -> Identity {
    let env = parse_env(&ns.n2d_ok(&["env", node]));
    let info = |format: &str| ns.docker_ok(&env, &["info", "--format", format]).trim().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "host"];
        all.extend_from_slice(args);
        ns.docker_ok(&env, &all).trim().to_string()
    };
    let image = "n2d-test/web:1";
    Identity {
        mac: run(&[image, "cat", "/sys/class/net/eth0/address"]),
        address: ns.n2d_ok(&["ip", node]).trim().to_string(),
        hostname: info("{{.Name}}"),
        machine_id: run(&["-v", "/etc/machine-id:/mid:ro", image, "cat", "/mid"]),
        engine_id: info("{{.ID}}"),
        node_id: info("{{.Swarm.NodeID}}"),
        server_key: run(&["-v", "/etc/docker/tls:/tls:ro", image, "sha256sum", "/tls/server-key.pem"]),
        urandom: run(&[image, "sh", "-c", "head -c 32 /dev/urandom | od -An -tx1"]),
    }
}

/// `n2d exec` and `n2d cp` as a user runs them: output, input, exit statuses, a terminal, and
/// a file and a directory there and back.
fn exec_and_cp_work_on(ns: &Netns, node: &str, work: &std::path::Path) {
    std::fs::create_dir_all(work).unwrap();
    let exec = |args: &[&str], input: &[u8]| {
        use std::io::Write;
        let mut all = vec!["exec", node];
        all.extend_from_slice(args);
        let mut child = ns
            .cmd(n2d_bin(), &all)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    assert_eq!(exec(&["cat", "/etc/hostname"], b""), (Some(0), format!("{node}\n"), String::new()));
    assert_eq!(
        exec(&["--", "sh", "-c", "cat; echo err >&2; exit 42"], b"piped"),
        (Some(42), "piped".into(), "err\n".into())
    );
    let (status, _, stderr) = exec(&["no-such-command"], b"");
    assert_eq!(status, Some(127), "{stderr}");
    assert!(stderr.contains("no-such-command"), "{stderr}");
    let (status, out, _) = exec(&["-e", "A=b c", "-w", "/etc", "sh", "-c", "echo \"$A\" $(pwd)"], b"");
    assert_eq!((status, out.as_str()), (Some(0), "b c /etc\n"));
    // A terminal when stdin and stdout are one (`script` gives n2d a pty of its own).
    let line = format!("{} exec {node} -- sh -c 'tty; stty size'", n2d_bin());
    let out =
        run_ok(ns.cmd("script", &["-qec", &line, "/dev/null"]).env("COLUMNS", "123").env("LINES", "45"));
    assert!(out.contains("/dev/pts/"), "no terminal in the guest: {out:?}");

    // cp: a file in and out, a directory in and out.
    let file = work.join("in.txt");
    std::fs::write(&file, "through the exec port\n").unwrap();
    let dir = work.join("tree");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/leaf"), vec![7u8; 300_000]).unwrap();
    let target = format!("{node}:/tmp/copied.txt");
    ns.n2d_ok(&["cp", file.to_str().unwrap(), &target]);
    assert_eq!(exec(&["cat", "/tmp/copied.txt"], b"").1, "through the exec port\n");
    ns.n2d_ok(&["cp", dir.to_str().unwrap(), &format!("{node}:/tmp")]);
    assert_eq!(exec(&["stat", "-c", "%s %U", "/tmp/tree/sub/leaf"], b"").1, "300000 root\n");
    let back = work.join("back");
    std::fs::create_dir(&back).unwrap();
    ns.n2d_ok(&["cp", &target, back.join("file.txt").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(back.join("file.txt")).unwrap(), "through the exec port\n");
    ns.n2d_ok(&["cp", &format!("{node}:/tmp/tree"), back.to_str().unwrap()]);
    assert_eq!(std::fs::read(back.join("tree/sub/leaf")).unwrap(), vec![7u8; 300_000]);
    let missing = ns.n2d(&["cp", &format!("{node}:/no/such"), back.to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
}

fn record(ns: &Netns, node: &str) -> serde_json::Value {
    serde_json::from_str(&ns.n2d_ok(&["inspect", node])).unwrap()
}

#[test]
#[ignore = "boots VMs: needs root and QEMU; run with --ignored"]
fn clones_start_from_a_template_and_take_identities_of_their_own() {
    let home = e2e_home();
    build_image(&home);
    let work = tempfile::tempdir().unwrap();
    let tar = busybox_rootfs_tar(work.path());
    let ns = Netns::new("n2d-e2e-warm", &home);

    // A template for the swarm's nodes (1 GiB), made ahead of time; asked again, it is there.
    let started = std::time::Instant::now();
    let made = ns.n2d_ok(&["image", "warm", "--memory", "1G"]);
    eprintln!("image warm took {:.1}s", started.elapsed().as_secs_f64());
    let template = std::path::PathBuf::from(made.trim());
    assert!(template.join("template.json").is_file(), "{made}");
    let again = ns.cmd(n2d_bin(), &["image", "warm", "--memory", "1G"]).output().unwrap();
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), made.trim());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already there"));

    // Two clones, then one node booted cold.
    let started = std::time::Instant::now();
    ns.n2d_ok(&["swarm", "create", "--prefix", SWARM, "--managers", "1", "--workers", "1"]);
    eprintln!("swarm create (2 clones) took {:.1}s", started.elapsed().as_secs_f64());
    let name = template.file_name().unwrap().to_str().unwrap();
    for node in CLONES {
        assert_eq!(record(&ns, node)["warm_from"], name, "{node} was not cloned");
    }
    ns.n2d_ok(&["swarm", "scale", SWARM, "--workers", "2", "--cold"]);
    assert!(record(&ns, COLD).get("warm_from").is_none(), "--cold cloned {COLD}");

    // A stack behind the routing mesh answers on every node, clones and cold alike.
    let manager = parse_env(&ns.n2d_ok(&["env", CLONES[0]]));
    ns.docker_ok(&manager, &["import", tar.to_str().unwrap(), "n2d-test/web:1"]);
    let saved = work.path().join("web.tar");
    ns.docker_ok(&manager, &["save", "-o", saved.to_str().unwrap(), "n2d-test/web:1"]);
    ns.n2d_ok(&["swarm", "load", SWARM, saved.to_str().unwrap()]);
    let swarm = parse_env(&ns.n2d_ok(&["swarm", "env", SWARM]));
    for node in [CLONES[0], CLONES[1], COLD] {
        assert!(wait_ready_node(&ns, &swarm, node, 300), "{node} is not Ready");
    }
    let compose = work.path().join("stack.yml");
    std::fs::write(&compose, web_stack(3)).unwrap();
    ns.docker_ok(&swarm, &["stack", "deploy", "-c", compose.to_str().unwrap(), "demo"]);
    for node in [CLONES[0], CLONES[1], COLD] {
        let ip = ns.n2d_ok(&["ip", node]).trim().to_string();
        assert!(wait_http(&ns, &ip, 8080, 600), "the routing mesh does not answer on {node} ({ip})");
    }

    // exec and cp on a clone and on a cold node.
    exec_and_cp_work_on(&ns, CLONES[1], &work.path().join("clone"));
    exec_and_cp_work_on(&ns, COLD, &work.path().join("cold"));

    // The two clones share nothing that identifies them or that their randomness comes from.
    let (a, b) = (identity(&ns, CLONES[0]), identity(&ns, CLONES[1]));
    eprintln!("{a:#?}\n{b:#?}");
    for (what, x, y) in [
        ("MAC", &a.mac, &b.mac),
        ("address", &a.address, &b.address),
        ("hostname", &a.hostname, &b.hostname),
        ("machine-id", &a.machine_id, &b.machine_id),
        ("engine ID", &a.engine_id, &b.engine_id),
        ("swarm node ID", &a.node_id, &b.node_id),
        ("server key", &a.server_key, &b.server_key),
        ("/dev/urandom", &a.urandom, &b.urandom),
    ] {
        assert!(!x.is_empty(), "{what} is empty");
        assert_ne!(x, y, "the clones share their {what}");
    }
    assert_eq!(a.hostname, CLONES[0]);
    assert_eq!(a.mac, record(&ns, CLONES[0])["mac"].as_str().unwrap());
    assert_eq!(a.machine_id.len(), 32, "{}", a.machine_id);

    // A clone's engine wants the home's client certificate.
    let host = format!("tcp://{}:2376", a.address);
    let plain = ns.docker(&[], &["-H", &host, "info"]);
    assert!(!plain.status.success(), "plain HTTP reached a clone's engine");
    let ca = home.join("certs/ca.pem");
    let no_client_cert =
        ns.docker(&[], &["-H", &host, "--tlsverify", "--tlscacert", ca.to_str().unwrap(), "info"]);
    assert!(!no_client_cert.status.success(), "a client without the home's certificate got in");

    // The swarm suspended whole (its memory freed), then a host reboot: `start --all` resumes
    // every node where it was, Ready, and the stack answers again on each.
    let nodes = [CLONES[0], CLONES[1], COLD];
    let started = std::time::Instant::now();
    ns.n2d_ok(&["swarm", "suspend", SWARM]);
    eprintln!("swarm suspend (3 nodes) took {:.1}s", started.elapsed().as_secs_f64());
    assert!(ns.qemu_pids().is_empty(), "suspend left QEMU running");
    for (node, state) in ns.machine_states() {
        assert_eq!(state, "suspended", "{node}");
    }
    ns.simulate_reboot();
    let started = std::time::Instant::now();
    ns.n2d_ok(&["start", "--all"]);
    eprintln!("start --all (3 nodes resumed) took {:.1}s", started.elapsed().as_secs_f64());
    for node in nodes {
        assert!(wait_ready_node(&ns, &swarm, node, 300), "{node} is not Ready after its resume");
    }
    for node in nodes {
        let ip = ns.n2d_ok(&["ip", node]).trim().to_string();
        assert!(wait_http(&ns, &ip, 8080, 600), "the stack does not answer on {node} after the resume");
        assert!(
            !home.join("machines").join(node).join("suspend.state").exists(),
            "{node} kept its saved state"
        );
    }
    let resumed = ns.n2d_ok(&["exec", CLONES[0], "cat", "/etc/hostname"]);
    assert_eq!(resumed.trim(), CLONES[0], "exec after a resume");

    // A damaged template is passed over with one line naming it; the machine still comes up.
    let state = template.join("state");
    run_ok(std::process::Command::new("chmod").arg("u+w").arg(&state));
    std::fs::write(&state, b"not a saved state").unwrap();
    let out = ns.cmd(n2d_bin(), &["-v", "create", "after", "--memory", "1G"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // -v shows QEMU's command lines: the new template's boot, then the machine's restore.
    let qemu: Vec<&str> = stderr.lines().filter(|l| l.contains(": starting qemu-system-x86_64 ")).collect();
    assert!(
        qemu.iter().any(|l| l.contains(" template-") && l.contains(" -kernel ") && !l.contains("-incoming")),
        "{stderr}"
    );
    assert!(qemu.iter().any(|l| l.contains(" after: ") && l.contains(" -incoming defer")), "{stderr}");
    let passed: Vec<&str> = stderr.lines().filter(|l| l.contains("is not used")).collect();
    assert_eq!(passed.len(), 1, "{stderr}");
    assert!(passed[0].contains(name) && passed[0].contains("its device state was changed"), "{}", passed[0]);
    let info = ns.docker_ok(&[], &["--context", "after", "info", "--format", "{{.Name}}"]);
    assert_eq!(info.trim(), "after");

    ns.n2d_ok(&["rm", "-f", "after"]);

    // A host folder as root: read and written by a container through `docker run -v` at the
    // same path, the guest's owners kept on the host; the machine boots cold (no template has
    // its devices).
    let folder = work.path().join("project");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("in.txt"), "from the host\n").unwrap();
    let f = folder.to_str().unwrap();
    let out = ns.n2d(&["create", "mnt", "--memory", "1G", "--mount", f]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("boots cold"));
    let mnt = parse_env(&ns.n2d_ok(&["env", "mnt"]));
    ns.docker_ok(&mnt, &["load", "-i", saved.to_str().unwrap()]);
    let volume = format!("{f}:/x");
    let script = "cat /x/in.txt; echo from the guest > /x/out.txt; chown 1234 /x/out.txt";
    let out = ns.docker_ok(&mnt, &["run", "--rm", "-v", &volume, "n2d-test/web:1", "sh", "-c", script]);
    assert_eq!(out, "from the host\n");
    assert_eq!(std::fs::read_to_string(folder.join("out.txt")).unwrap(), "from the guest\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(folder.join("out.txt")).unwrap().uid(), 1234, "the guest's owner is kept");
    let seen = ns.n2d_ok(&["exec", "mnt", "cat", &format!("{f}/out.txt")]);
    assert_eq!(seen, "from the guest\n", "exec sees the folder at the host's path");
    ns.n2d_ok(&["rm", "-f", "mnt"]);
    ns.n2d_ok(&["swarm", "rm", SWARM]);
    assert!(ns.qemu_pids().is_empty(), "QEMU left running");
}
