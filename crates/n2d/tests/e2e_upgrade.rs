//! End to end: `n2d swarm upgrade` (issue 23) moves a 1+2 swarm on user-mode networking, with
//! a 2-replica stack behind the routing mesh published on the host's 127.0.0.1, to a new image
//! one node at a time, while a poller requests it every 200 ms: no request fails, every node
//! ends on the new image, Ready and active. Ignored by default (root, QEMU): `cargo test
//! --release -p n2d --test e2e_upgrade -- --ignored`. (Faults on demand are `e2e_faults`'s.)

mod common;
use common::*;

/// `n2d image rm ID` when dropped (after the swarm that booted it is gone): the other tests boot
/// the newest image of the shared home.
struct RemoveImage {
    home: std::path::PathBuf,
    id: String,
}

impl Drop for RemoveImage {
    fn drop(&mut self) {
        // A test that failed leaves its machines, which keep the image in use: they go first
        // (the namespace's drop, after this, kills their QEMUs).
        if let Ok(dirs) = std::fs::read_dir(self.home.join("machines")) {
            for dir in dirs.flatten().filter(|d| d.file_name().to_string_lossy().starts_with("upg-")) {
                let _ = std::fs::remove_dir_all(dir.path());
            }
        }
        let _ = std::process::Command::new(n2d_bin())
            .args(["image", "rm", &self.id])
            .env("N2D_HOME", &self.home)
            .output();
    }
}

/// A poller in the namespace: one new connection to `url` every 200 ms, one line per request
/// (`<unix time> <HTTP status, 000 when it failed> <seconds>`) into `log`. Killed by its pid when
/// dropped.
struct Poller {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Poller {
    fn start(ns: &Netns, url: &str, log: &std::path::Path) -> Poller {
        let script = format!(
            "while :; do t=$(date +%s.%N); r=$(curl -s -o /dev/null -m 5 -w '%{{http_code}} %{{time_total}}' {url}); echo \"$t $r\" >> {}; sleep 0.2; done",
            log.display()
        );
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "sh", "-c", &script])
            .spawn()
            .unwrap();
        Poller { child, log: log.to_path_buf() }
    }

    /// (requests, the failed ones' lines).
    fn results(&self) -> (usize, Vec<String>) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let failed =
            lines.iter().filter(|l| l.split(' ').nth(1) != Some("200")).map(|l| l.to_string()).collect();
        (lines.len(), failed)
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "boots three VMs twice: needs root and QEMU; run with --ignored"]
fn a_rolling_upgrade_moves_every_node_to_the_new_image_without_a_failed_request() {
    let home = e2e_home();
    build_image(&home);
    let work = tempfile::tempdir().unwrap();
    let ns = Netns::new("n2d-e2e-upgrade", &home);
    let old = ns.n2d_ok(&["image", "ls", "-q"]).lines().next().unwrap().trim().to_string();
    // The new image: the same packages and one more named, from the package cache (so a recipe
    // of its own, another ID), built without the network.
    let built = ns.n2d_ok(&["image", "build", "--offline", "--include", "libseccomp2"]);
    let new =
        built.split_whitespace().find(|w| w.len() == 64).unwrap_or_else(|| panic!("{built}")).to_string();
    assert_ne!(new, old);
    let _new_image = RemoveImage { home: home.clone(), id: new.clone() };

    ns.n2d_ok(&[
        "swarm",
        "create",
        "upg",
        "--managers",
        "1",
        "--workers",
        "2",
        "--network",
        "user",
        "--publish",
        "18080:8080",
        "--memory",
        "1G",
        "--image",
        &old,
    ]);
    let swarm = parse_env(&ns.n2d_ok(&["swarm", "env", "upg"]));
    let tar = busybox_rootfs_tar(work.path());
    ns.docker_ok(&swarm, &["import", tar.to_str().unwrap(), "n2d-test/web:1"]);
    let saved = work.path().join("web.tar");
    ns.docker_ok(&swarm, &["save", "-o", saved.to_str().unwrap(), "n2d-test/web:1"]);
    ns.n2d_ok(&["swarm", "load", "upg", saved.to_str().unwrap()]);
    let compose = work.path().join("stack.yml");
    std::fs::write(&compose, web_stack(2)).unwrap();
    ns.docker_ok(&swarm, &["stack", "deploy", "-c", compose.to_str().unwrap(), "demo"]);
    assert!(wait_http(&ns, "127.0.0.1", 18080, 300), "nothing answers on 127.0.0.1:18080");

    // Bad input: one line, exit 2, nothing done.
    let out = ns.n2d(&["swarm", "upgrade", "upg", "--image", "0000dead"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0000dead"));
    let plan = ns.n2d_ok(&["swarm", "upgrade", "upg", "--image", &new, "--dry-run"]);
    let order: Vec<&str> =
        plan.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|w| w.starts_with("upg-")).collect();
    assert_eq!(order, ["upg-wrkr-0", "upg-wrkr-1", "upg-mngr-0"], "{plan}");

    let poller = Poller::start(&ns, "http://127.0.0.1:18080/", &work.path().join("poll.log"));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let started = std::time::Instant::now();
    let started_unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let upgraded = ns.n2d_ok(&["swarm", "upgrade", "upg", "--image", &new]);
    let took = started.elapsed().as_secs_f64();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (requests, failed) = poller.results();
    drop(poller);
    eprintln!("{upgraded}upgrade: {took:.1}s; the poller: {requests} requests, {} failed", failed.len());
    assert!(requests as f64 > took * 2.0, "the poller barely ran: {requests} requests in {took:.0}s");
    // When, in the upgrade's progress above, each failed request was made.
    let when = |line: &String| match line.split(' ').next().and_then(|t| t.parse::<f64>().ok()) {
        Some(t) => format!("{:+.1}s into the upgrade: {line}", t - started_unix),
        None => line.clone(),
    };
    assert!(
        failed.is_empty(),
        "failed requests during the upgrade:\n{}",
        failed.iter().map(when).collect::<Vec<_>>().join("\n")
    );

    let listed: serde_json::Value = serde_json::from_str(&ns.n2d_ok(&["ls", "--json"])).unwrap();
    for m in listed.as_array().unwrap().iter().filter(|m| m["name"].as_str().unwrap().starts_with("upg-")) {
        assert!(new.starts_with(m["image"].as_str().unwrap()), "{m}");
    }
    // `swarm upgrade` returns once the last node is Ready and no node is Unknown to the
    // restarted manager; a heartbeat late on this busy host is given a minute.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let nodes =
            ns.docker_ok(&swarm, &["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Availability}}"]);
        let whole = nodes.lines().filter(|l| l.ends_with(" Ready Active")).count() == 3;
        if whole {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not every node Ready and Active: {nodes}");
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    // A re-run has nothing left to do.
    assert!(ns.n2d_ok(&["swarm", "upgrade", "upg", "--image", &new]).contains("already"));
    ns.n2d_ok(&["swarm", "rm", "upg"]);
}
