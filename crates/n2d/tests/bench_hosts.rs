//! Benchmark (not a test; `bench/hosts.sh` runs it): the time to a ready swarm of three
//! managers spread over three hosts (`swarm create --on local,h2,h3`: SSH, remote creates,
//! certificates relayed) against the same swarm on one host, in the same run, as a ratio. The
//! "hosts" are network namespaces of this one machine (see `common::lab`), so they share its
//! CPUs: this measures what going across hosts costs, not what more machines would gain. A
//! third swarm per round goes over WireGuard links between the hosts' own bridges
//! (`--network wireguard`: linking, then the same creates).

mod common;
use common::lab::{Lab, Sshd, LAN_PREFIX};
use std::time::Instant;

#[test]
#[ignore = "a benchmark: bench/hosts.sh runs it"]
fn time_to_a_swarm_across_three_hosts_against_one() {
    let rounds: usize = std::env::var("N2D_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2);
    let home = common::e2e_home();
    common::build_image(&home);
    let lab = Lab::new("n2d-bh", 3);
    let p = LAN_PREFIX;
    for (host, range) in [("h2", format!("{p}.120-{p}.129")), ("h3", format!("{p}.130-{p}.139"))] {
        lab.start_sshd(host, Sshd::Normal);
        lab.trust(host, &[22]);
        lab.install_images(host, &home);
        lab.n2d_ok(&[
            "host",
            "add",
            host,
            &format!("ssh://root@{}", lab.host(host).ip),
            "--network",
            "brlan",
            "--ip-range",
            &range,
        ]);
    }
    lab.install_images("h1", &home);
    let range = format!("{p}.110-{p}.119");
    // `wireguard`: the same swarm over WireGuard links between the hosts' own bridges.
    let swarm = |name: &str, on: Option<&str>, wireguard: bool| -> f64 {
        let mut args = vec!["swarm", "create", name, "--managers", "3", "--workers", "0", "--memory", "1G"];
        if wireguard {
            args.extend(["--network", "wireguard"]);
        } else {
            args.extend(["--network", "brlan", "--ip-range", &range]);
        }
        if let Some(on) = on {
            args.extend(["--on", on]);
        }
        let started = Instant::now();
        lab.n2d_ok(&args);
        let secs = started.elapsed().as_secs_f64();
        lab.n2d_ok(&["swarm", "rm", name]);
        secs
    };
    // Round 0 makes each host's warm template; it is not counted.
    swarm("warm", Some("local,h2,h3"), false);
    let mut lines = Vec::new();
    for round in 1..=rounds {
        let one = swarm("one", None, false);
        let three = swarm("tri", Some("local,h2,h3"), false);
        let linked = swarm("wg", Some("local,h2,h3"), true);
        lines.push(format!(
            "round {round}: one host {one:.1} s, three hosts {three:.1} s, three over WireGuard {linked:.1} s, ratios three/one {:.2}, WireGuard/one {:.2}",
            three / one,
            linked / one
        ));
    }
    println!("time to a ready swarm of 3 managers (1 GiB each, warm templates):");
    for line in lines {
        println!("  {line}");
    }
}
