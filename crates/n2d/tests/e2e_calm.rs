//! End to end: a swarm that stays calm under load (issue 20). Eight nodes, three of them
//! managers, all on this host under emulation: an 8-replica stack is deployed on the workers
//! (the managers kept for managing, as Docker advises) and then updated rolling, while a poller
//! asks the managers who leads every two seconds. The swarm must keep its leader throughout: no
//! answer without a leader, and one leader, the same, in every answer.
//!
//! Unless the host itself stalled: these machines are shared VMs, and a stall of the whole host
//! (seen by a thread of this test that wakes every 250 ms, with the host's steal time) freezes
//! every VM at once, longer than raft's 10 s election timeout, which Docker 26 does not let n2d
//! raise. A lost leader within a minute after such a stall is printed as excused, with the
//! stall; any other fails the test.
//! Ignored by default (root, QEMU, Debian's mirror): `cargo test --release -p n2d --test
//! e2e_calm -- --ignored`. Everything but the image build happens in a network namespace.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SWARM: &str = "calm";
const NODES: usize = 8;

/// One look at the swarm from the managers' side.
enum Poll {
    /// The leader's hostname, and how many nodes were Ready.
    Leader { leader: String, ready: usize },
    /// No manager leads ("The swarm does not have a leader").
    Leaderless(String),
    /// Any other failure (a manager too busy to answer in time): counted, not judged.
    Failed(String),
}

fn poll(ns: &Netns, swarm: &[(String, String)]) -> Poll {
    let out = ns.docker(swarm, &["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return if stderr.to_lowercase().contains("leader") {
            Poll::Leaderless(stderr)
        } else {
            Poll::Failed(stderr)
        };
    }
    let leaders: Vec<&str> =
        stdout.lines().filter(|l| l.ends_with(" Leader")).filter_map(|l| l.split(' ').next()).collect();
    let ready = stdout.lines().filter(|l| l.split(' ').nth(1) == Some("Ready")).count();
    match leaders.as_slice() {
        [one] => Poll::Leader { leader: one.to_string(), ready },
        _ => Poll::Leaderless(format!("{} leaders in:\n{stdout}", leaders.len())),
    }
}

/// The host's steal time so far (seconds): what the hypervisor under this machine took away.
fn steal_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    // cpu user nice system idle iowait irq softirq steal ...
    cpu.split_whitespace().nth(8).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0
}

/// Host stalls while `done` is not set: (seconds since `started`, how late a 250 ms sleep woke,
/// steal time during it).
fn watch_host(started: Instant, done: &AtomicBool) -> Vec<(f64, f64, f64)> {
    let mut stalls = Vec::new();
    let (mut last, mut steal) = (Instant::now(), steal_secs());
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let (now, steal_now) = (Instant::now(), steal_secs());
        let late = now.duration_since(last).as_secs_f64() - 0.25;
        if late >= 1.0 {
            stalls.push((started.elapsed().as_secs_f64(), late, steal_now - steal));
        }
        (last, steal) = (now, steal_now);
    }
    stalls
}

/// A host stall of at least this long excuses what the swarm did in the minute after it.
const STALL_EXCUSES: f64 = 3.0;

/// Waits until the service runs `want` tasks (`docker service ls` shows `want/want`).
fn wait_replicas(ns: &Netns, swarm: &[(String, String)], service: &str, want: usize, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let full = format!("{want}/{want}");
    while Instant::now() < deadline {
        let out = ns.docker(
            swarm,
            &["service", "ls", "--filter", &format!("name={service}"), "--format", "{{.Replicas}}"],
        );
        if String::from_utf8_lossy(&out.stdout).trim() == full {
            return true;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    false
}

#[test]
#[ignore = "boots VMs: needs root and QEMU; run with --ignored"]
fn an_eight_node_swarm_keeps_its_leader_through_a_deploy_and_a_rolling_update() {
    let home = e2e_home();
    build_image(&home);
    let work = tempfile::tempdir().unwrap();
    let tar = busybox_rootfs_tar(work.path());
    let ns = Netns::new("n2d-e2e-calm", &home);

    let started = Instant::now();
    ns.n2d_ok(&["swarm", "create", SWARM, "--managers", "3", "--workers", "5", "--memory", "1G"]);
    eprintln!("swarm create (3+5) took {:.1}s", started.elapsed().as_secs_f64());
    let managers: Vec<String> = (0..3).map(|i| format!("{SWARM}-mngr-{i}")).collect();

    let first = parse_env(&ns.n2d_ok(&["env", &managers[0]]));
    ns.docker_ok(&first, &["import", tar.to_str().unwrap(), "n2d-test/web:1"]);
    let saved = work.path().join("web.tar");
    ns.docker_ok(&first, &["save", "-o", saved.to_str().unwrap(), "n2d-test/web:1"]);
    ns.n2d_ok(&["swarm", "load", SWARM, saved.to_str().unwrap()]);
    let swarm = parse_env(&ns.n2d_ok(&["swarm", "env", SWARM]));

    let done = AtomicBool::new(false);
    let steal_before = steal_secs();
    let (polls, stalls, outcome) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch_host(started, &done));
        let poller = scope.spawn(|| {
            let mut polls = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let at = started.elapsed().as_secs_f64();
                polls.push((at, poll(&ns, &swarm)));
                std::thread::sleep(Duration::from_secs(2));
            }
            polls
        });

        // Deploy: eight replicas, all at once, on the five workers.
        let compose = work.path().join("stack.yml");
        let stack = web_stack(NODES as u32).replace(
            "    deploy:\n",
            "    deploy:\n      placement: { constraints: [node.role == worker] }\n",
        );
        std::fs::write(&compose, stack).unwrap();
        let t = Instant::now();
        ns.docker_ok(&swarm, &["stack", "deploy", "-c", compose.to_str().unwrap(), "demo"]);
        let deployed = wait_replicas(&ns, &swarm, "demo_web", NODES, 900);
        eprintln!("deploy of {NODES} replicas: {:.1}s", t.elapsed().as_secs_f64());

        // A rolling update of all of them, two at a time; the CLI waits until it converged.
        let t = Instant::now();
        let update = ns.docker(
            &swarm,
            &[
                "service",
                "update",
                "--force",
                "--update-parallelism",
                "2",
                "--detach=false",
                "--quiet",
                "demo_web",
            ],
        );
        eprintln!("rolling update: {:.1}s", t.elapsed().as_secs_f64());
        let updated = update.status.success() && wait_replicas(&ns, &swarm, "demo_web", NODES, 300);
        let ip = ns.n2d_ok(&["ip", &managers[1]]).trim().to_string();
        let answers = wait_http(&ns, &ip, 8080, 120);

        if !(deployed && updated && answers) {
            let tasks = ns.docker(&swarm, &["service", "ps", "--no-trunc", "demo_web"]);
            eprintln!("{}{}", String::from_utf8_lossy(&tasks.stdout), String::from_utf8_lossy(&tasks.stderr));
        }
        done.store(true, Ordering::Relaxed);
        (poller.join().unwrap(), watcher.join().unwrap(), (deployed, updated, answers, update.stderr))
    });
    for (at, late, steal) in &stalls {
        eprintln!("{at:7.1}s the host stalled: a 250 ms sleep woke {late:.1}s late ({steal:.1}s of steal)");
    }
    eprintln!("host steal during the test: {:.1}s", steal_secs() - steal_before);
    // A stall of the host in the minute before `at` (or between two answers) excuses it.
    let stall_near = |from: f64, to: f64| {
        stalls.iter().find(|(at, late, _)| *late >= STALL_EXCUSES && *at >= from - 60.0 && *at <= to)
    };

    // Every poll first, so a failure below shows what the swarm did meanwhile.
    let mut leaderless = Vec::new();
    for (at, p) in &polls {
        match p {
            Poll::Leader { leader, ready } => eprintln!("{at:7.1}s {leader} leads, {ready} Ready"),
            Poll::Leaderless(why) => match stall_near(*at, *at) {
                Some((when, late, _)) => {
                    eprintln!(
                        "{at:7.1}s NO LEADER, excused: the host stalled {late:.1}s at {when:.1}s: {why}"
                    )
                }
                None => {
                    eprintln!("{at:7.1}s NO LEADER: {why}");
                    leaderless.push(format!("at {at:.1}s: {why}"))
                }
            },
            Poll::Failed(why) => eprintln!("{at:7.1}s no answer: {why}"),
        }
    }
    let (deployed, updated, answers, update_stderr) = outcome;
    assert!(deployed, "the {NODES} replicas never all ran");
    assert!(updated, "the rolling update did not converge: {}", String::from_utf8_lossy(&update_stderr));
    assert!(answers, "the updated stack does not answer through the routing mesh");
    assert!(leaderless.is_empty(), "the swarm lost its leader: {leaderless:?}");
    let answers: Vec<(f64, &str, usize)> = polls
        .iter()
        .filter_map(|(at, p)| match p {
            Poll::Leader { leader, ready } => Some((*at, leader.as_str(), *ready)),
            _ => None,
        })
        .collect();
    assert!(answers.len() >= 10, "only {} of {} polls answered", answers.len(), polls.len());
    // Every change of leader between two answers, unless the host stalled around it.
    let mut moves = Vec::new();
    for w in answers.windows(2) {
        if w[0].1 != w[1].1 {
            match stall_near(w[0].0, w[1].0) {
                Some((when, late, _)) => eprintln!(
                    "{:.1}s: the leadership moved {} -> {}, excused: the host stalled {late:.1}s at {when:.1}s",
                    w[1].0, w[0].1, w[1].1
                ),
                None => moves.push(format!("{:.1}s: {} -> {}", w[1].0, w[0].1, w[1].1)),
            }
        }
    }
    assert!(moves.is_empty(), "the leadership moved: {moves:?}");
    let mut leaders: Vec<&str> = answers.iter().map(|a| a.1).collect();
    leaders.dedup();
    // What "calm" looked like, for the record: the longest wait between two answers, and the
    // fewest nodes Ready in one answer (a node whose heartbeat was late shows as Down).
    let longest_gap = answers.windows(2).map(|w| w[1].0 - w[0].0).fold(0.0, f64::max);
    let fewest_ready = answers.iter().map(|a| a.2).min().unwrap_or(0);
    eprintln!(
        "{} of {} polls answered, led by {}; longest gap between answers {longest_gap:.1}s; \
         fewest nodes Ready in one answer: {fewest_ready} of {NODES}",
        answers.len(),
        polls.len(),
        leaders.join(" then ")
    );

    ns.n2d_ok(&["swarm", "rm", SWARM]);
    assert!(ns.qemu_pids().is_empty(), "QEMU left running");
}
