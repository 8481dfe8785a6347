//! Bad input, table-driven, through the real CLI in-process: each case must exit 2 (usage) or
//! 1 (runtime) and leave nothing behind in $N2D_HOME. No VM, no root needed.

use std::ffi::OsString;
use std::sync::Mutex;

/// N2D_HOME is process-wide: the tests of this file take turns.
static ENV: Mutex<()> = Mutex::new(());

fn run(home: &std::path::Path, args: &[&str]) -> i32 {
    let _turn = ENV.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: no other thread reads or writes the environment while `_turn` is held.
    unsafe { std::env::set_var("N2D_HOME", home) };
    let argv: Vec<OsString> =
        std::iter::once("n2d").chain(args.iter().copied()).map(OsString::from).collect();
    n2d::main_with_args(argv)
}

/// Files and directories under `home`, except the lock file and the (empty) directories a
/// read-only command may create.
fn leftovers(home: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "lock") {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn bad_input_is_refused_with_the_right_status_and_nothing_is_created() {
    let home = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], i32)] = &[
        (&["create", ""], 2),
        (&["create", "Web"], 2),
        (&["create", "my host"], 2),
        (&["create", &"x".repeat(64)], 2),
        (&["create", "h1", "--memory", "lots"], 2),
        (&["create", "h1", "--memory", "1M"], 2),
        (&["create", "h1", "--memory", "99T"], 2),
        (&["create", "h1", "--disk", "10"], 2),
        (&["create", "h1", "--cpus", "0"], 2),
        (&["create", "h1", "--cpus", "-1"], 2),
        (&["create", "h1", "--network", "a-very-long-bridge-name"], 2),
        (&["create", "h1", "--label", "=x"], 2),
        (&["create", "h1", "--image", "0000dead"], 1),
        (&["inspect", "nope"], 2),
        (&["ip", "nope"], 2),
        (&["env", "nope"], 2),
        (&["start", "nope"], 2),
        (&["stop", "nope"], 2),
        (&["rm", "nope"], 2),
        (&["stop"], 2),
        (&["no-such-command"], 2),
        (&["swarm", "create", "--managers", "0"], 2),
        (&["swarm", "create", "--workers", "-3"], 2),
        (&["swarm", "create", "--workers", "many"], 2),
        (&["swarm", "create", "--prefix", "Bad Prefix"], 2),
        (&["swarm", "create", "--prefix", &"p".repeat(60)], 2),
        (&["swarm", "create", "--label", "zone=a@n2d-wrkr-7"], 2),
        (&["swarm", "create", "--label", "novalue"], 2),
        (&["swarm", "create", "--memory", "lots"], 2),
        (&["swarm", "create", "-f", "/nonexistent/cluster.yaml"], 1),
        (&["swarm", "env", "nope"], 2),
        (&["swarm", "load", "nope", "/nonexistent.tar"], 2),
    ];
    for (args, want) in cases {
        let got = run(home.path(), args);
        assert_eq!(got, *want, "n2d {args:?} exited {got}, expected {want}");
        assert_eq!(leftovers(home.path()), Vec::<String>::new(), "n2d {args:?} left files behind");
    }
}

#[test]
fn cluster_file_with_unknown_keys_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("cluster.yaml");
    std::fs::write(&file, "prefix: demo\nworkers: 2\nreplicas: 3\n").unwrap();
    let code = run(home.path(), &["swarm", "create", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(!home.path().join("swarms").exists());
}
