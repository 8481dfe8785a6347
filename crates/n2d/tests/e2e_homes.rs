//! End to end: two `$N2D_HOME`s on one host create a machine of the same name side by side in
//! one network namespace; both are reachable, and one home's `rm` leaves the other's VM, the
//! shared bridge and its firewall chains working. The host's uplink leads to a LAN (a namespace
//! of its own) and a second interface to another routed network (a third namespace): with the
//! FORWARD policy at ACCEPT, only n2d's chain keeps the LAN from opening connections to the VMs
//! (but the one created with `--expose`) and the VMs from reaching the other network, while
//! their outbound traffic through the uplink works. Ignored by default (root, QEMU): run it with
//! `cargo test --release -p n2d --test e2e_homes -- --ignored`.

mod common;
use common::*;
use std::process::{Child, Command};

/// A namespace standing for a network beyond the host (a LAN, another routed network), with
/// the listeners the test started there; dropping it kills those (only those) and deletes it.
struct Side {
    name: String,
    children: Vec<Child>,
    _www: tempfile::TempDir,
}

impl Side {
    /// Namespace `name` holding `peer` (moved from `host_ns`) with `cidr`, a route back to the
    /// VMs' subnet through `via`, and a web server on `listen` answering `page`.
    fn new(name: &str, host_ns: &Netns, peer: &str, cidr: &str, via: &str, listen: &str, page: &str) -> Side {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        run_ok(Command::new("ip").args(["netns", "add", name]));
        let www = tempfile::tempdir().unwrap();
        std::fs::write(www.path().join("index.html"), page).unwrap();
        let mut side = Side { name: name.into(), children: Vec::new(), _www: www };
        run_ok(&mut host_ns.cmd("ip", &["link", "set", peer, "netns", name]));
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", cidr, "dev", peer],
            &["link", "set", peer, "up"],
            &["route", "add", "10.77.0.0/24", "via", via, "dev", peer],
        ] {
            run_ok(&mut side.cmd("ip", args));
        }
        // `ip netns exec` execs the program: the child is the server itself.
        let www = side._www.path().to_str().unwrap().to_string();
        let child = side.cmd("busybox", &["httpd", "-f", "-p", listen, "-h", &www]).spawn().unwrap();
        side.children.push(child);
        side
    }

    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).args(args);
        c
    }

    /// Whether `url` answers `page` from this namespace within a few seconds.
    fn fetches(&self, url: &str, page: &str) -> bool {
        fetches(self.cmd("curl", &["-s", "-m", "5", url]), page)
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn fetches(mut cmd: Command, page: &str) -> bool {
    let out = cmd.output().unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains(page)
}

#[test]
#[ignore = "boots two VMs: needs root and QEMU; run with --ignored"]
fn two_homes_share_a_host() {
    let home_a = e2e_home();
    build_image(&home_a);
    // The second home gets the same image by hard links (no second build).
    let second = tempfile::tempdir().unwrap();
    let home_b = second.path().join("home-b");
    std::fs::create_dir_all(&home_b).unwrap();
    run_ok(Command::new("cp").arg("-al").arg(home_a.join("images")).arg(home_b.join("images")));
    let ns = Netns::new("n2d-e2e-homes", &home_a);

    // An uplink to a LAN that leads nowhere else (a veth whose peer is in a namespace of the
    // test, the LAN host and default gateway 192.0.2.254), and a second interface to another
    // network the host routes (198.51.100.0/24, a third namespace). Both have a route back to
    // the VMs' subnet: only a firewall stops traffic between them and the VMs.
    for args in [
        &["link", "add", "up0", "type", "veth", "peer", "name", "up1"][..],
        &["addr", "add", "192.0.2.1/24", "dev", "up0"],
        &["link", "set", "up0", "up"],
        &["link", "add", "far0", "type", "veth", "peer", "name", "far1"],
        &["addr", "add", "198.51.100.1/24", "dev", "far0"],
        &["link", "set", "far0", "up"],
    ] {
        run_ok(&mut ns.cmd("ip", args));
    }
    let lan =
        Side::new("n2d-e2e-lan", &ns, "up1", "192.0.2.254/24", "192.0.2.1", "192.0.2.254:8081", "lan-ok");
    let far = Side::new(
        "n2d-e2e-far",
        &ns,
        "far1",
        "198.51.100.2/24",
        "198.51.100.1",
        "198.51.100.2:8082",
        "far-ok",
    );
    run_ok(&mut ns.cmd("ip", &["route", "add", "default", "via", "192.0.2.254", "dev", "up0"]));
    let from_host = |url: &str, page: &str| fetches(ns.cmd("curl", &["-s", "-m", "5", url]), page);
    let (lan_url, far_url) = ("http://192.0.2.254:8081/", "http://198.51.100.2:8082/");
    // (busybox's wget crashes with -T: timeouts come from `timeout` and curl's -m.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(from_host(lan_url, "lan-ok") && from_host(far_url, "far-ok")) {
        assert!(std::time::Instant::now() < deadline, "the test's networks do not answer");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(
        from_host(lan_url, "lan-ok") && from_host(far_url, "far-ok"),
        "the test's networks do not answer"
    );
    let forwarding = || run_ok(&mut ns.cmd("cat", &["/proc/sys/net/ipv4/ip_forward"])).trim().to_string();
    assert_eq!(forwarding(), "0");

    // Not a bridge, and a bridge n2d did not make without a range: usage errors, nothing made.
    for bad in [&["create", "x", "--network", "lo"][..], &["create", "x", "--network", "up0"]] {
        assert_eq!(ns.n2d(bad).status.code(), Some(2), "n2d {bad:?}");
    }
    run_ok(&mut ns.cmd("ip", &["link", "add", "br7", "type", "bridge"]));
    run_ok(&mut ns.cmd("ip", &["addr", "add", "10.78.0.1/24", "dev", "br7"]));
    let out = ns.n2d(&["create", "x", "--network", "br7"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ip-range"));
    run_ok(&mut ns.cmd("ip", &["link", "del", "br7"]));
    assert!(!home_a.join("machines/x").exists() && !ns.host_state_file().exists());

    // Side by side: both creates at once, same machine name; home B's open to other networks.
    let spawn = |home: &std::path::Path, more: &[&str]| {
        let args: Vec<&str> = ["create", "twin", "--memory", "1G"].iter().chain(more).copied().collect();
        ns.n2d_for(home, &args).stdout(std::process::Stdio::piped()).spawn().unwrap()
    };
    let (a, b) = (spawn(&home_a, &[]), spawn(&home_b, &["--expose"]));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success(), "a side-by-side create failed");
    let ip =
        |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).lines().next().unwrap().to_string();
    let (ip_a, ip_b) = (ip(&a), ip(&b));
    assert_ne!(ip_a, ip_b, "two homes were given one address");
    let taps: Vec<String> = ns.links().into_iter().filter(|l| l.starts_with("n2dt")).collect();
    assert_eq!(taps.len(), 2, "one tap per home's machine: {taps:?}");
    assert_eq!(forwarding(), "1");
    let nat = ns.iptables("nat");
    assert!(nat.contains("-A N2D-NAT-n2d0 -s 10.77.0.0/24 -o up0 -j MASQUERADE"), "{nat}");
    assert!(ns.iptables("filter").contains("-A FORWARD -j N2D-FWD-n2d0"));

    let env_of = |home: &std::path::Path| {
        let out = ns.n2d_for(home, &["env", "twin"]).output().unwrap();
        parse_env(&String::from_utf8(out.stdout).unwrap())
    };
    let (env_a, env_b) = (env_of(&home_a), env_of(&home_b));
    for (env, ip) in [(&env_a, &ip_a), (&env_b, &ip_b)] {
        let host = &env.iter().find(|(k, _)| k == "DOCKER_HOST").unwrap().1;
        assert_eq!(host, &format!("tcp://{ip}:2376"));
        let name = ns.docker_ok(env, &["info", "--format", "{{.Name}}"]);
        assert_eq!(name.trim(), "twin");
    }
    // Each home's client certificate opens its own machine only.
    let mut crossed = env_a.clone();
    crossed.retain(|(k, _)| k != "DOCKER_HOST");
    crossed.push(("DOCKER_HOST".into(), format!("tcp://{ip_b}:2376")));
    assert!(!ns.docker(&crossed, &["info"]).status.success(), "home A's certificate opened home B's engine");

    // The firewall, with real traffic. The FORWARD policy is ACCEPT: only n2d's chain decides.
    let filter = ns.iptables("filter");
    assert!(filter.contains("-P FORWARD ACCEPT"), "{filter}");
    for rule in [
        format!("-A N2D-FWD-n2d0 -d {ip_b}/32 -o n2d0 -j ACCEPT"),
        "-A N2D-FWD-n2d0 -o n2d0 -j DROP".into(),
        "-A N2D-FWD-n2d0 -i n2d0 -j DROP".into(),
    ] {
        assert!(filter.contains(&rule), "{rule} missing:\n{filter}");
    }
    assert!(!filter.contains(&format!("{ip_a}/32")), "twin of home A was opened:\n{filter}");
    let work = tempfile::tempdir().unwrap();
    let tar = busybox_rootfs_tar(work.path());
    for env in [&env_a, &env_b] {
        ns.docker_ok(env, &["import", tar.to_str().unwrap(), "n2d-test/web:1"]);
        let serve = "echo vm-ok > /index.html && exec /bin/httpd -f -p 8080 -h /";
        ns.docker_ok(env, &["run", "-d", "--network", "host", "n2d-test/web:1", "/bin/sh", "-c", serve]);
    }
    // Under a shell: busybox's `timeout` execs the command in its own process, which would be
    // the container's PID 1, deaf to the signal (a dropped connection then waited for TCP's own
    // ~130 s); `; exit` keeps the shell from exec'ing it in turn.
    let vm_fetches = |env: &[(String, String)], url: &str, page: &str| {
        let fetch = format!("/bin/busybox timeout 8 /bin/busybox wget -q -O- {url}; exit $?");
        let out =
            ns.docker(env, &["run", "--rm", "--network", "host", "n2d-test/web:1", "/bin/sh", "-c", &fetch]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(page)
    };
    let (vm_a, vm_b) = (format!("http://{ip_a}:8080/"), format!("http://{ip_b}:8080/"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !(from_host(&vm_a, "vm-ok") && from_host(&vm_b, "vm-ok")) {
        assert!(std::time::Instant::now() < deadline, "the VMs' web servers do not answer the host");
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    // A new connection from the LAN, or from the other network, to a VM fails; to the exposed
    // one it works.
    assert!(!lan.fetches(&vm_a, "vm-ok"), "a LAN host opened a connection to a VM");
    assert!(!far.fetches(&vm_a, "vm-ok"), "another network opened a connection to a VM");
    assert!(lan.fetches(&vm_b, "vm-ok"), "the LAN cannot reach the machine created with --expose");
    // The VMs' outbound through the uplink works; to the other network it fails.
    for env in [&env_a, &env_b] {
        assert!(vm_fetches(env, lan_url, "lan-ok"), "a VM cannot reach the LAN through the uplink");
        assert!(!vm_fetches(env, far_url, "far-ok"), "a VM reached a network behind another interface");
    }
    // doctor says what n2d added.
    let doctor = String::from_utf8_lossy(&ns.n2d(&["doctor"]).stdout).into_owned();
    assert!(
        doctor.contains("FORWARD policy ACCEPT; n2d's chains: N2D-FWD-n2d0 (outbound through up0"),
        "{doctor}"
    );
    assert!(doctor.contains(&format!("(--expose): {ip_b}")), "{doctor}");

    // A lease naming the uplink (written by hand or by a hostile process) is reported and never
    // acted on: home A's rm of the machine it names leaves the uplink alone.
    let state_file = ns.host_state_file();
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    state["bridges"]["n2d0"]["leases"]["10.77.0.200"] = serde_json::json!({
        "home": std::fs::canonicalize(&home_a).unwrap(), "machine": "twin", "tap": "up0", "mac": "52:54:00:00:00:c8"
    });
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();

    // Home A's rm leaves home B's machine, the bridge and the NAT working.
    let rm = ns.n2d_for(&home_a, &["rm", "-f", "twin"]).output().unwrap();
    let said = String::from_utf8_lossy(&rm.stderr);
    assert!(rm.status.success(), "{said}");
    assert!(said.contains("\"up0\" is not a tap n2d made"), "{said}");
    assert!(ns.links().contains(&"up0".to_string()), "rm deleted the uplink a lease named");
    assert!(
        lan.fetches(&vm_b, "vm-ok") && vm_fetches(&env_b, lan_url, "lan-ok"),
        "the uplink stopped working"
    );
    assert_eq!(ns.docker_ok(&env_b, &["info", "--format", "{{.Name}}"]).trim(), "twin");
    assert!(ns.links().contains(&"n2d0".to_string()));
    assert!(ns.iptables("nat").contains("N2D-NAT-n2d0"));
    assert_eq!(forwarding(), "1");
    // The damaged lease is left for the administrator, who removes it (as the warning says).
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(state["bridges"]["n2d0"]["leases"]["10.77.0.200"]["tap"], "up0");
    state["bridges"]["n2d0"]["leases"].as_object_mut().unwrap().remove("10.77.0.200");
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();

    // The last machine takes the bridge, chains and forwarding with it.
    let rm = ns.n2d_for(&home_b, &["rm", "-f", "twin"]).output().unwrap();
    let said = String::from_utf8_lossy(&rm.stderr);
    assert!(rm.status.success(), "{said}");
    assert!(said.contains("turned IPv4 forwarding back off"), "{said}");
    assert!(ns.qemu_pids().is_empty(), "rm left QEMU running");
    assert!(
        !ns.links().iter().any(|l| l == "n2d0" || l.starts_with("n2dt")),
        "rm left links: {:?}",
        ns.links()
    );
    assert!(
        !ns.iptables("filter").contains("N2D-") && !ns.iptables("nat").contains("N2D-"),
        "rm left chains"
    );
    assert_eq!(forwarding(), "0");
    assert!(!ns.host_state_file().exists(), "rm left host-wide network state");
}
