//! End to end: two `$N2D_HOME`s on one host create a machine of the same name side by side in
//! one network namespace; both are reachable, and one home's `rm` leaves the other's VM, the
//! shared bridge and its firewall chains working. Ignored by default (root, QEMU): run it with
//! `cargo test --release -p n2d --test e2e_homes -- --ignored`.

mod common;
use common::*;
use std::process::Command;

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

    // An uplink that leads nowhere out of the namespace (a veth whose peer is in it too), so
    // the NAT chains and forwarding are really set up, and taken down again.
    for args in [
        &["link", "add", "up0", "type", "veth", "peer", "name", "up1"][..],
        &["addr", "add", "192.0.2.1/24", "dev", "up0"],
        &["link", "set", "up0", "up"],
        &["link", "set", "up1", "up"],
        &["route", "add", "default", "via", "192.0.2.254", "dev", "up0"],
    ] {
        run_ok(&mut ns.cmd("ip", args));
    }
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

    // Side by side: both creates at once, same machine name.
    let spawn = |home: &std::path::Path| {
        ns.n2d_for(home, &["create", "twin", "--memory", "1G"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(&home_a), spawn(&home_b));
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

    // Home A's rm leaves home B's machine, the bridge and the NAT working.
    let rm = ns.n2d_for(&home_a, &["rm", "-f", "twin"]).output().unwrap();
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    assert_eq!(ns.docker_ok(&env_b, &["info", "--format", "{{.Name}}"]).trim(), "twin");
    assert!(ns.links().contains(&"n2d0".to_string()));
    assert!(ns.iptables("nat").contains("N2D-NAT-n2d0"));
    assert_eq!(forwarding(), "1");

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
