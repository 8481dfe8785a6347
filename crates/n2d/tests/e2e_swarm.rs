//! End to end: a bridge swarm (1 manager + 2 workers; the default 1 + 3 is e2e_rootless's) under QEMU, judged by the host's
//! docker CLI: nodes Ready, image loaded without a registry, a stack with an overlay network
//! and a published port answering on every node (routing mesh), hybrid add-host, scale down,
//! tear down. Restarts are tested by e2e_rootless (a manager, with its forwards and swarm
//! state) and e2e_faults (a killed leader, a host reboot). Ignored by default, like e2e_host: run it with `-- --ignored`.

mod common;
use common::*;

#[test]
#[ignore = "boots four VMs: needs root and QEMU; run with --ignored"]
fn default_swarm_runs_a_stack() {
    let home = e2e_home();
    build_image(&home);
    let work = tempfile::tempdir().unwrap();
    let ns = Netns::new("n2d-e2e-swarm", &home);

    // Bad input is refused before any VM starts.
    assert_eq!(ns.n2d(&["swarm", "create", "--managers", "0"]).status.code(), Some(2));
    assert_eq!(ns.n2d(&["swarm", "create", "--label", "zone=a@n2d-wrkr-9"]).status.code(), Some(2));
    assert_eq!(ns.n2d(&["swarm", "create", "--workers", "x"]).status.code(), Some(2));
    assert!(ns.qemu_pids().is_empty());

    let started = std::time::Instant::now();
    ns.n2d_ok(&["swarm", "create", "--workers", "2", "--memory", "1280M", "--label", "zone=a@n2d-wrkr-0"]);
    eprintln!("swarm create took {:.1}s", started.elapsed().as_secs_f64());
    let env = parse_env(&ns.n2d_ok(&["swarm", "env", "n2d"]));

    // The swarm's docker context points at its manager.
    let via_context = ns.docker_ok(&[], &["--context", "n2d", "node", "ls", "--format", "{{.Hostname}}"]);
    let mut hosts: Vec<&str> = via_context.lines().collect();
    hosts.sort();
    assert_eq!(hosts, ["n2d-mngr-0", "n2d-wrkr-0", "n2d-wrkr-1"], "{via_context}");

    let nodes =
        ns.docker_ok(&env, &["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"]);
    let mut lines: Vec<&str> = nodes.lines().collect();
    lines.sort();
    assert_eq!(lines, ["n2d-mngr-0 Ready Leader", "n2d-wrkr-0 Ready ", "n2d-wrkr-1 Ready "], "{nodes}");
    let zone =
        ns.docker_ok(&env, &["node", "inspect", "n2d-wrkr-0", "--format", "{{index .Spec.Labels \"zone\"}}"]);
    assert_eq!(zone.trim(), "a");

    // An image built locally, saved, and loaded onto every node (no registry involved).
    let tar = busybox_rootfs_tar(work.path());
    let mngr_ip = ns.n2d_ok(&["ip", "n2d-mngr-0"]).trim().to_string();
    let mngr_env = parse_env(&ns.n2d_ok(&["env", "n2d-mngr-0"]));
    ns.docker_ok(&mngr_env, &["import", tar.to_str().unwrap(), "n2d-test/web:1"]);
    let saved = work.path().join("web.tar");
    ns.docker_ok(&mngr_env, &["save", "-o", saved.to_str().unwrap(), "n2d-test/web:1"]);
    ns.n2d_ok(&["swarm", "load", "n2d", saved.to_str().unwrap()]);
    let not_an_archive = work.path().join("junk.tar");
    std::fs::write(&not_an_archive, b"not a tar").unwrap();
    assert_eq!(ns.n2d(&["swarm", "load", "n2d", not_an_archive.to_str().unwrap()]).status.code(), Some(2));

    // A stack: 3 replicas behind the routing mesh on 8080, on an overlay network.
    let compose = work.path().join("stack.yml");
    std::fs::write(&compose, web_stack(3)).unwrap();
    ns.docker_ok(&env, &["stack", "deploy", "-c", compose.to_str().unwrap(), "demo"]);
    let ips: Vec<String> = ["n2d-mngr-0", "n2d-wrkr-0", "n2d-wrkr-1"]
        .iter()
        .map(|n| ns.n2d_ok(&["ip", n]).trim().to_string())
        .collect();
    assert!(ips.contains(&mngr_ip));
    for ip in &ips {
        assert!(wait_http(&ns, ip, 8080, 300), "routing mesh: nothing answers on {ip}:8080");
    }

    // Re-running create on the healthy swarm changes nothing; ls reports it healthy.
    ns.n2d_ok(&["swarm", "create", "--workers", "2"]);
    assert_eq!(ns.qemu_pids().len(), 3);
    let ls = ns.n2d_ok(&["swarm", "ls"]);
    assert!(ls.lines().any(|l| l.starts_with("n2d ") && l.contains("3/3")), "{ls}");

    // (A node's restart, and its swarm state across it, is e2e_rootless's and e2e_faults's.)

    // Hybrid: an engine n2d did not make part of this swarm (a lone n2d host) joins as a worker.
    ns.n2d_ok(&["create", "ext1", "--memory", "1280M"]);
    let ext_ip = ns.n2d_ok(&["ip", "ext1"]).trim().to_string();
    let certs = home.join("certs");
    let cert = |f: &str| certs.join(f).to_string_lossy().into_owned();
    ns.n2d_ok(&[
        "swarm",
        "add-host",
        "n2d",
        "--host",
        &format!("tcp://{ext_ip}:2376"),
        "--as",
        "ext1",
        "--tlscacert",
        &cert("ca.pem"),
        "--tlscert",
        &cert("cert.pem"),
        "--tlskey",
        &cert("key.pem"),
        "--label",
        "origin=external",
    ]);
    let origin = ns.docker_ok(
        &env,
        &["node", "inspect", "ext1", "--format", "{{index .Spec.Labels \"origin\"}} {{.Status.State}}"],
    );
    assert_eq!(origin.trim(), "external ready");

    // Scale down: one worker drained and removed; the service keeps answering.
    ns.n2d_ok(&["swarm", "scale", "n2d", "--workers", "1"]);
    let nodes = ns.docker_ok(&env, &["node", "ls", "--format", "{{.Hostname}}"]);
    assert_eq!(nodes.lines().count(), 3, "{nodes}");
    assert!(!nodes.contains("n2d-wrkr-1"));
    assert!(wait_http(&ns, &mngr_ip, 8080, 120), "service lost after scale down");

    ns.n2d_ok(&["swarm", "rm", "n2d"]);
    assert!(
        !ns.docker(&[], &["context", "inspect", "n2d"]).status.success(),
        "swarm rm left the docker context"
    );
    // The external host left the swarm but was not touched otherwise.
    let ext_env = parse_env(&ns.n2d_ok(&["env", "ext1"]));
    let state = ns.docker_ok(&ext_env, &["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert_eq!(state.trim(), "inactive");
    ns.n2d_ok(&["rm", "-f", "ext1"]);
    assert!(ns.qemu_pids().is_empty(), "swarm rm left QEMU running");
    assert_eq!(ns.links(), Vec::<String>::new(), "swarm rm left links behind");
    assert!(ns.n2d_ok(&["ls", "--json"]).trim() == "[]");
}
