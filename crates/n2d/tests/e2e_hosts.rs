//! End to end: n2d across hosts. Each "host" is a network namespace of its own with its own
//! sshd and its own N2D_HOME, joined by a veth "LAN" (see `common::lab`); the user is on h1.
//! Ignored by default (root, openssh-server): `cargo test --release -p n2d --test e2e_hosts --
//! --ignored`.

mod common;
use common::lab::{Lab, Sshd};

#[test]
#[ignore = "starts sshds in network namespaces: needs root and openssh-server; run with --ignored"]
fn hosts_are_checked_before_they_are_recorded() {
    let lab = Lab::new("n2d-hk", 3);
    lab.start_sshd("h2", Sshd::Normal);
    lab.start_sshd("h3", Sshd::Normal);
    lab.start_sshd("h3", Sshd::NoN2d);
    lab.start_sshd("h3", Sshd::OtherVersion);
    lab.start_sshd("h3", Sshd::ForeignKey);
    lab.trust("h2", &[22]);

    // A host that passes: SSH with the lab's key, this n2d, a doctor without FAIL.
    let h2 = format!("ssh://root@{}", lab.host("h2").ip);
    lab.n2d_ok(&["host", "add", "h2", &h2]);
    let rows: serde_json::Value = serde_json::from_str(&lab.n2d_ok(&["host", "ls", "--json"])).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["name"], "local");
    assert_eq!(rows[1]["name"], "h2");
    assert_eq!(rows[1]["url"], h2.as_str());
    assert_eq!(rows[1]["reachable"], true);
    assert_eq!(rows[1]["version"], env!("CARGO_PKG_VERSION"));
    assert!(rows[1]["memory_available"].as_u64().unwrap() > 0);
    let table = lab.n2d_ok(&["host", "ls"]);
    assert!(table.lines().nth(2).unwrap().contains("reachable"), "{table}");

    // Bad input: one clear line each, the usual exit codes, nothing recorded.
    let h3 = lab.host("h3").ip.clone();
    lab.n2d_fails(&["host", "add", "h2", &h2], 2, "a host named h2 already exists");
    lab.n2d_fails(&["host", "add", "local", &h2], 2, "`local` is this machine");
    lab.n2d_fails(&["host", "add", "x", "lab2"], 2, "does not start with ssh://");
    lab.n2d_fails(&["host", "add", "x", "ssh://-oProxyCommand=sh"], 2, "invalid SSH address");
    lab.n2d_fails(&["host", "rm", "nosuch"], 2, "no host named nosuch");
    lab.n2d_fails(
        &["host", "add", "ghost", &format!("ssh://root@{}.9", common::lab::LAN_PREFIX)],
        1,
        "does not answer",
    );
    lab.n2d_fails(
        &["host", "add", "h3", &format!("ssh://root@{h3}")],
        2,
        "its SSH host key is not known here",
    );
    lab.trust_wrong_key("h3", &[22]);
    lab.n2d_fails(&["host", "add", "h3", &format!("ssh://root@{h3}")], 2, "presents another SSH host key");
    lab.trust("h3", &[22, 2201, 2202, 2203]);
    lab.n2d_fails(&["host", "add", "h3", &format!("ssh://root@{h3}:2201")], 2, "has no n2d on the PATH");
    lab.n2d_fails(&["host", "add", "h3", &format!("ssh://root@{h3}:2202")], 2, "runs n2d 0.0.9");
    lab.n2d_fails(&["host", "add", "h3", &format!("ssh://root@{h3}:2203")], 2, "refused the login");
    assert_eq!(lab.host_names(), ["local", "h2"]);

    // Once its key is known, h3 is added like h2; `host rm` forgets it.
    lab.n2d_ok(&["host", "add", "h3", &format!("ssh://root@{h3}")]);
    assert_eq!(lab.host_names(), ["local", "h2", "h3"]);
    lab.n2d_ok(&["host", "rm", "h3"]);
    assert_eq!(lab.host_names(), ["local", "h2"]);
    // Nothing of the checks is left on the hosts: no machine in their homes.
    for host in ["h2", "h3"] {
        let machines = lab.host(host).ns.home.join("machines");
        assert!(std::fs::read_dir(&machines).map_or(true, |mut d| d.next().is_none()), "{host}");
    }
}

#[test]
#[ignore = "boots a VM on another host: needs root, QEMU and openssh-server; run with --ignored"]
fn a_machine_on_another_host_is_made_there_and_reached_from_here() {
    let home = common::e2e_home();
    common::build_image(&home);
    let lab = Lab::new("n2d-hm", 2);
    lab.start_sshd("h2", Sshd::Normal);
    lab.trust("h2", &[22]);
    lab.install_images("h2", &home);
    let h2 = format!("ssh://root@{}", lab.host("h2").ip);
    let range = format!("{}.110-{}.119", common::lab::LAN_PREFIX, common::lab::LAN_PREFIX);
    lab.n2d_ok(&["host", "add", "h2", &h2, "--network", "brlan", "--ip-range", &range]);

    // Bad input first: an unknown host, flags that make no sense there; nothing made anywhere.
    lab.n2d_fails(&["create", "web", "--on", "nosuch"], 2, "no host named nosuch");
    lab.n2d_fails(&["create", "web", "--on", "h2", "-p", "8080:80"], 2, "not for a machine on another host");
    lab.n2d_fails(&["create", "web", "--on", "h2", "--memory", "lots"], 2, "invalid size");

    let created = lab.n2d_ok(&["create", "web", "--on", "h2", "--memory", "1G"]);
    let ip = created.lines().next().unwrap().trim().to_string();
    assert!(ip.starts_with(&format!("{}.11", common::lab::LAN_PREFIX)), "{created}");
    assert!(created.contains("(on host h2)"), "{created}");
    // The machine lives in h2's home; this home keeps where it is.
    assert!(lab.host("h2").ns.home.join("machines/web").is_dir());
    assert!(!lab.host("h1").ns.home.join("machines/web").exists());

    // The real docker CLI, here, reaches the engine over there with this home's context and
    // client certificate: the server certificate was issued by this home's CA.
    let h1 = &lab.host("h1").ns;
    let info = h1.docker_ok(&[], &["--context", "web", "info", "--format", "{{.Name}}"]);
    assert_eq!(info.trim(), "web");
    let env = common::parse_env(&lab.n2d_ok(&["env", "web"]));
    assert_eq!(env.iter().find(|(k, _)| k == "DOCKER_HOST").unwrap().1, format!("tcp://{ip}:2376"));
    assert_eq!(h1.docker_ok(&env, &["version", "--format", "{{.Server.Os}}"]).trim(), "linux");
    assert_eq!(lab.n2d_ok(&["ip", "web"]).trim(), ip);

    // ls here asks h2; verbs run there.
    let rows: serde_json::Value = serde_json::from_str(&lab.n2d_ok(&["ls", "--json"])).unwrap();
    let web = rows.as_array().unwrap().iter().find(|r| r["name"] == "web").unwrap().clone();
    assert_eq!(web["host"], "h2");
    assert_eq!(web["state"], "running");
    assert_eq!(lab.n2d_ok(&["exec", "web", "--", "hostname"]).trim(), "web");
    let out = lab.n2d(&["exec", "web", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    lab.n2d_fails(&["create", "web", "--on", "h2"], 2, "web");

    // h2 goes away: ls still answers, web is unknown, and says why.
    lab.stop_sshds("h2");
    let out = lab.n2d(&["ls", "--json"]);
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let web = rows.as_array().unwrap().iter().find(|r| r["name"] == "web").unwrap().clone();
    assert_eq!(web["state"], "unknown");
    assert!(web["error"].as_str().unwrap().contains("does not answer"), "{web}");
    lab.n2d_fails(&["rm", "-f", "web"], 1, "does not answer");

    // Back: rm removes it there and here, context too.
    lab.start_sshd("h2", Sshd::Normal);
    lab.n2d_ok(&["rm", "-f", "web"]);
    assert!(!lab.host("h2").ns.home.join("machines/web").exists());
    assert!(lab.n2d_ok(&["ls", "-q"]).trim().is_empty());
    assert!(lab.host("h1").ns.context_host("web").is_empty());
}

#[test]
#[ignore = "boots a swarm over three hosts: needs root, QEMU and openssh-server; run with --ignored"]
fn a_swarm_across_three_hosts_over_a_lan_bridge_survives_losing_one_and_scale_replaces_its_worker() {
    let home = common::e2e_home();
    common::build_image(&home);
    let work = tempfile::tempdir().unwrap();
    let tar = common::busybox_rootfs_tar(work.path());
    let lab = Lab::new("n2d-hs", 3);
    let p = common::lab::LAN_PREFIX;
    for (host, range) in [("h2", format!("{p}.120-{p}.129")), ("h3", format!("{p}.130-{p}.139"))] {
        lab.start_sshd(host, Sshd::Normal);
        lab.trust(host, &[22]);
        lab.install_images(host, &home);
        let url = format!("ssh://root@{}", lab.host(host).ip);
        lab.n2d_ok(&["host", "add", host, &url, "--network", "brlan", "--ip-range", &range]);
    }
    lab.install_images("h1", &home);

    // One manager on each host (local is h1, on the same LAN bridge), h3 named first so it
    // holds the first manager (the leader at init); then a worker, placed on h3 by scale --on.
    let local_range = format!("{p}.110-{p}.119");
    let out = lab.n2d(&[
        "swarm",
        "create",
        "tri",
        "--on",
        "h3,h2,local",
        "--managers",
        "3",
        "--workers",
        "0",
        "--memory",
        "1G",
        "--network",
        "brlan",
        "--ip-range",
        &local_range,
    ]);
    assert!(out.status.success(), "swarm create failed");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Placement: tri-mngr-0 on h3, tri-mngr-1 on h2, tri-mngr-2 on local"), "{said}");
    // Each node reached every other on the swarm's TCP ports before it formed.
    assert!(
        said.contains("Checking that the nodes reach each other on 2377/tcp, 7946/tcp, 7946/udp, 4789/udp"),
        "{said}"
    );
    let out = lab.n2d(&["swarm", "scale", "tri", "--workers", "1", "--on", "h3"]);
    assert!(out.status.success(), "swarm scale failed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Placement: tri-wrkr-0 on h3"));
    assert!(lab.host("h3").ns.home.join("machines/tri-mngr-0").is_dir());
    assert!(lab.host("h2").ns.home.join("machines/tri-mngr-1").is_dir());
    assert!(lab.host("h3").ns.home.join("machines/tri-wrkr-0").is_dir());

    // The docker CLI here drives the whole swarm through its context.
    let h1 = &lab.host("h1").ns;
    let swarm = common::parse_env(&lab.n2d_ok(&["swarm", "env", "tri"]));
    let node_ls = |env: &[(String, String)]| {
        let out = h1.docker(env, &["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"]);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (_, nodes) = node_ls(&swarm);
    assert_eq!(nodes.lines().filter(|l| l.contains(" Ready")).count(), 4, "{nodes}");
    let rows: serde_json::Value = serde_json::from_str(&lab.n2d_ok(&["ls", "--json"])).unwrap();
    let host_of = |rows: &serde_json::Value, n: &str| {
        let row = rows.as_array().unwrap().iter().find(|r| r["name"] == n).unwrap().clone();
        (row["host"].as_str().unwrap().to_string(), row["state"].as_str().unwrap().to_string())
    };
    assert_eq!(host_of(&rows, "tri-mngr-2"), ("local".into(), "running".into()));
    assert_eq!(host_of(&rows, "tri-mngr-0"), ("h3".into(), "running".into()));

    // A stack whose routing mesh answers on every node, whichever host it is on.
    // The image: made on the node here, then `swarm load` sends it to each other host once
    // (h3 holds two nodes).
    let nodes = ["tri-mngr-0", "tri-mngr-1", "tri-mngr-2", "tri-wrkr-0"];
    let here = common::parse_env(&lab.n2d_ok(&["env", "tri-mngr-2"]));
    h1.docker_ok(&here, &["import", tar.to_str().unwrap(), "n2d-test/web:1"]);
    let saved = work.path().join("web-image.tar");
    h1.docker_ok(&here, &["save", "-o", saved.to_str().unwrap(), "n2d-test/web:1"]);
    let out = lab.n2d(&["swarm", "load", "tri", saved.to_str().unwrap()]);
    assert!(out.status.success(), "swarm load failed");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("h3: sending the archive") && said.contains("once for 2"), "{said}");
    for node in nodes {
        assert!(said.contains(&format!("{node}: Loaded image: n2d-test/web:1")), "{node}: {said}");
    }
    let compose = work.path().join("stack.yml");
    std::fs::write(&compose, common::web_stack(4)).unwrap();
    h1.docker_ok(&swarm, &["stack", "deploy", "-c", compose.to_str().unwrap(), "demo"]);
    for node in nodes {
        let ip = lab.n2d_ok(&["ip", node]).trim().to_string();
        assert!(common::wait_http(h1, &ip, 8080, 240), "the routing mesh does not answer on {node} ({ip})");
    }

    // h3's link is cut (with the leader on it): the swarm elects another leader, ls marks h3's
    // machines unknown.
    lab.cut_link("h3");
    lab.stop_sshds("h3");
    let rows: serde_json::Value = serde_json::from_str(&lab.n2d_ok(&["ls", "--json"])).unwrap();
    assert_eq!(host_of(&rows, "tri-wrkr-0"), ("h3".into(), "unknown".into()));
    assert_eq!(host_of(&rows, "tri-mngr-1"), ("h2".into(), "running".into()));
    let swarm = common::parse_env(&lab.n2d_ok(&["swarm", "env", "tri"]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let (ok, text) = node_ls(&swarm);
        if ok && text.contains("Leader") && text.lines().any(|l| l.starts_with("tri-wrkr-0 Down")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no leader with tri-wrkr-0 Down: {text}");
        std::thread::sleep(std::time::Duration::from_secs(3));
    }

    // swarm scale over the hosts left replaces h3's worker; the manager there stays (said).
    let out = lab.n2d(&["swarm", "scale", "tri", "--on", "local,h2"]);
    assert!(out.status.success(), "swarm scale failed");
    let said = String::from_utf8_lossy(&out.stderr);
    // Where the most memory is free: both are namespaces of one machine, so either.
    assert!(
        said.contains("Placement: tri-wrkr-1 on local") || said.contains("Placement: tri-wrkr-1 on h2"),
        "{said}"
    );
    assert!(said.contains("manager tri-mngr-0 is on host h3"), "{said}");
    let (_, text) = node_ls(&swarm);
    assert!(text.lines().any(|l| l.starts_with("tri-wrkr-1 Ready")), "{text}");
    assert!(!text.contains("tri-wrkr-0"), "{text}");
    let names = lab.n2d_ok(&["ls", "-q"]);
    assert!(names.contains("tri-wrkr-1") && !names.contains("tri-wrkr-0"), "{names}");

    // Back, then the swarm goes, from every host.
    lab.restore_link("h3");
    lab.start_sshd("h3", Sshd::Normal);
    lab.n2d_ok(&["swarm", "rm", "tri"]);
    for (host, node) in [
        ("h3", "tri-mngr-0"),
        ("h2", "tri-mngr-1"),
        ("h1", "tri-mngr-2"),
        ("h1", "tri-wrkr-1"),
        ("h2", "tri-wrkr-1"),
    ] {
        assert!(!lab.host(host).ns.home.join("machines").join(node).exists(), "{node} left on {host}");
    }
    // The worker forgotten while h3 was cut is still there (its host was unreachable): n2d
    // said so; removing it there is h3's own n2d's job now.
    assert!(lab.host("h3").ns.home.join("machines/tri-wrkr-0").exists());
    assert!(lab.n2d_ok(&["ls", "-q"]).trim().is_empty());
}

#[test]
#[ignore = "starts sshds and wireguard-go in network namespaces: needs root, openssh-server and wireguard-go; run with --ignored"]
fn a_swarm_across_three_hosts_over_wireguard_links_between_their_own_bridges() {
    let home = common::e2e_home();
    common::build_image(&home);
    let work = tempfile::tempdir().unwrap();
    let tar = common::busybox_rootfs_tar(work.path());
    let lab = Lab::new("n2d-hw", 3);
    // No --network for the hosts: the machines do not go on the LAN; only WireGuard's UDP does.
    for host in ["h2", "h3"] {
        lab.start_sshd(host, Sshd::Normal);
        lab.trust(host, &[22]);
        lab.install_images(host, &home);
        lab.n2d_ok(&["host", "add", host, &format!("ssh://root@{}", lab.host(host).ip)]);
    }
    lab.install_images("h1", &home);

    // Bad input first: wireguard needs other hosts, and the subnets are n2d's.
    lab.n2d_fails(&["swarm", "create", "bad", "--network", "wireguard"], 2, "--on");
    lab.n2d_fails(
        &[
            "swarm",
            "create",
            "bad",
            "--on",
            "h2",
            "--network",
            "wireguard",
            "--ip-range",
            "10.78.1.10-10.78.1.20",
        ],
        2,
        "--ip-range",
    );

    let create = [
        "swarm",
        "create",
        "wg",
        "--on",
        "h3,h2,local",
        "--managers",
        "3",
        "--workers",
        "0",
        "--memory",
        "1G",
        "--network",
        "wireguard",
    ];
    // h2 drops VXLAN (4789/udp) in its forwarding: the pairwise check names the pair and port
    // before the swarm forms, and the create is rolled back on every host, links included.
    let h2 = &lab.host("h2").ns;
    let drop_vxlan = ["-w", "5", "-I", "FORWARD", "-p", "udp", "--dport", "4789", "-j", "DROP"];
    common::run_ok(&mut h2.cmd("iptables", &drop_vxlan));
    let said = lab.n2d_fails(&create, 1, "on 4789/udp");
    assert!(said.contains("wg-mngr-1"), "the node on h2 is named: {said}");
    let undo: Vec<&str> = drop_vxlan.iter().map(|a| if *a == "-I" { "-D" } else { a }).collect();
    common::run_ok(&mut h2.cmd("iptables", &undo));
    for host in ["h1", "h2", "h3"] {
        let ns = &lab.host(host).ns;
        assert!(!common::run_ok(&mut ns.cmd("ip", &["-o", "link", "show"])).contains("n2dw"), "{host}");
        assert!(ns.pids_named("wireguard-go").is_empty(), "{host}: wireguard-go left");
        assert!(ns.qemu_pids().is_empty(), "{host}: a VM left");
    }
    assert!(lab.n2d_ok(&["ls", "-q"]).trim().is_empty());

    let out = lab.n2d(&create);
    assert!(out.status.success(), "swarm create failed");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("hosts local, h3, h2 linked"), "{said}");
    assert!(
        said.contains("Checking that the nodes reach each other on 2377/tcp, 7946/tcp, 7946/udp, 4789/udp"),
        "{said}"
    );
    // Each host's machines are in its own subnet, on its own bridge; local is 1, then the
    // hosts in the order they were first linked.
    for (node, subnet) in [("wg-mngr-0", "10.78.2."), ("wg-mngr-1", "10.78.3."), ("wg-mngr-2", "10.78.1.")] {
        let ip = lab.n2d_ok(&["ip", node]);
        assert!(ip.starts_with(subnet), "{node}: {ip}");
    }
    for (host, dev) in [("h1", "n2dwg1"), ("h3", "n2dwg2"), ("h2", "n2dwg3")] {
        let ns = &lab.host(host).ns;
        let links = common::run_ok(&mut ns.cmd("ip", &["-o", "link", "show"]));
        assert!(links.contains(dev) && links.contains("n2dw0"), "{host}: {links}");
        let peers = common::run_ok(&mut ns.cmd("wg", &["show", dev, "peers"]));
        assert_eq!(peers.lines().count(), 2, "{host}: {peers}");
        let psks = common::run_ok(&mut ns.cmd("wg", &["show", dev, "preshared-keys"]));
        assert!(!psks.contains("(none)"), "{host}: every link has its preshared key: {psks}");
        // Nothing is masqueraded: the nodes see each other's own addresses.
        assert!(ns.iptables("filter").contains(&format!("-A N2D-LINK -i n2dw0 -o {dev} -j ACCEPT")));
    }

    let h1 = &lab.host("h1").ns;
    let swarm = common::parse_env(&lab.n2d_ok(&["swarm", "env", "wg"]));
    let out = h1.docker(&swarm, &["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"]);
    let nodes = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(nodes.lines().filter(|l| l.contains(" Ready")).count(), 3, "{nodes}");

    // The stack's routing mesh (VXLAN over the links) answers on every node.
    let here = common::parse_env(&lab.n2d_ok(&["env", "wg-mngr-2"]));
    h1.docker_ok(&here, &["import", tar.to_str().unwrap(), "n2d-test/web:1"]);
    let saved = work.path().join("web-image.tar");
    h1.docker_ok(&here, &["save", "-o", saved.to_str().unwrap(), "n2d-test/web:1"]);
    lab.n2d_ok(&["swarm", "load", "wg", saved.to_str().unwrap()]);
    let compose = work.path().join("stack.yml");
    std::fs::write(&compose, common::web_stack(3)).unwrap();
    h1.docker_ok(&swarm, &["stack", "deploy", "-c", compose.to_str().unwrap(), "demo"]);
    for node in ["wg-mngr-0", "wg-mngr-1", "wg-mngr-2"] {
        let ip = lab.n2d_ok(&["ip", node]).trim().to_string();
        assert!(common::wait_http(h1, &ip, 8080, 240), "the routing mesh does not answer on {node} ({ip})");
    }

    // swarm rm takes every link down with the last machine on each bridge.
    let out = lab.n2d(&["swarm", "rm", "wg"]);
    assert!(out.status.success(), "swarm rm failed");
    let said = String::from_utf8_lossy(&out.stderr);
    for host in ["local", "h2", "h3"] {
        assert!(said.contains(&format!("removed the WireGuard link of host {host}")), "{host}: {said}");
    }
    for host in ["h1", "h2", "h3"] {
        let ns = &lab.host(host).ns;
        let links = common::run_ok(&mut ns.cmd("ip", &["-o", "link", "show"]));
        assert!(!links.contains("n2dwg") && !links.contains("n2dw0"), "{host}: {links}");
        assert!(!ns.iptables("filter").contains("N2D-LINK"), "{host}");
        assert!(ns.pids_named("wireguard-go").is_empty(), "{host}: wireguard-go left");
    }
    assert!(lab.n2d_ok(&["ls", "-q"]).trim().is_empty());
}
