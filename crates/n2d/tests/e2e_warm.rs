//! End to end: warm starts (issue 20). A template made ahead of time (`n2d image warm`), a swarm
//! of clones and one cold node running a stack behind the routing mesh, the identities two
//! clones took (nothing of one derivable from the other), the swarm suspended and resumed by
//! `start --all` after a simulated reboot, and a damaged template passed over.
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
    ns.n2d_ok(&["swarm", "rm", SWARM]);
    assert!(ns.qemu_pids().is_empty(), "QEMU left running");
}
