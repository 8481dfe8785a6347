//! Bad input, table-driven, through the real CLI in-process: each case must exit 2 (usage) or
//! 1 (runtime) and leave nothing behind in $N2D_HOME. No VM, no root needed.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Mutex;

/// The CLI in-process shares this process's state (stdout, signal handlers, the host-wide
/// network state): the tests of this file take turns.
static TURN: Mutex<()> = Mutex::new(());

fn run(home: &std::path::Path, args: &[&str]) -> i32 {
    run_with_vars(home, &[], args)
}

/// `n2d ARGS` with `$N2D_HOME` set to `home` and `vars` set, the rest of the environment as
/// this process's (which is left as it is).
fn run_with_vars(home: &std::path::Path, vars: &[(&str, &str)], args: &[&str]) -> i32 {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let mut set: HashMap<String, OsString> =
        vars.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
    set.insert("N2D_HOME".into(), home.into());
    let argv: Vec<OsString> =
        std::iter::once("n2d").chain(args.iter().copied()).map(OsString::from).collect();
    n2d::main_with(argv, |k| set.get(k).cloned().or_else(|| std::env::var_os(k)))
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
    let this_binary = std::env::current_exe().unwrap().display().to_string();
    let cases: &[(&[&str], i32)] = &[
        (&["create", ""], 2),
        (&["create", "Web"], 2),
        // Other hosts: names and addresses checked, unknown hosts named, before any SSH.
        (&["host", "add", "lab2", "lab2"], 2),
        (&["host", "add", "lab2", "ssh://-oProxyCommand=sh"], 2),
        (&["host", "add", "lab2", "ssh://me@lab2:0"], 2),
        (&["host", "add", "Lab2", "ssh://lab2"], 2),
        (&["host", "add", "local", "ssh://lab2"], 2),
        (&["host", "add", "lab2", "ssh://lab2", "--ip-range", "10.0.0.5-10.0.0.9"], 2),
        (&["host", "add", "lab2", "ssh://lab2", "--network", "-br0"], 2),
        (&["host", "add", "lab2", "ssh://lab2", "--network", "br0", "--ip-range", "10.0.0.9-10.0.0.5"], 2),
        (&["swarm", "scale", "s", "--on", "Bad_Host"], 2),
        (&["host", "rm", "nosuch"], 2),
        (&["host", "rm", "local"], 2),
        (&["create", "h1", "--on", "nosuch"], 2),
        (&["create", "h1", "--on", "Bad_Host"], 2),
        (&["swarm", "create", "s", "--on", "local,nosuch"], 2),
        (&["swarm", "scale", "s", "--on", "nosuch"], 2),
        (&["create", "my host"], 2),
        (&["create", &"x".repeat(64)], 2),
        (&["create", "h1", "--memory", "lots"], 2),
        (&["create", "h1", "--memory", "1M"], 2),
        (&["create", "h1", "--memory", "99T"], 2),
        (&["create", "h1", "--memory", "4"], 2),
        (&["create", "h1", "--disk", "10"], 2),
        (&["create", "h1", "--cpus", "0"], 2),
        (&["create", "h1", "--cpus", "-1"], 2),
        (&["create", "h1", "--network", "a-very-long-bridge-name"], 2),
        (&["create", "h1", "--label", "=x"], 2),
        (&["create", "h1", "--ip", "10.77.0.5", "--ip-range", "10.77.0.5-10.77.0.9"], 2),
        (&["create", "h1", "--ip", "300.1.1.1"], 2),
        (&["create", "h1", "--ip-range", "10.77.0.9-10.77.0.1"], 2),
        (&["create", "h1", "--ip", "10.78.0.5"], 2),
        (&["create", "h1", "--ip", "10.77.0.1"], 2),
        (&["create", "h1", "--network", "lo"], 2),
        (&["create", "h1", "--network", "no-such-br"], 2),
        (&["swarm", "create", "--network", "lo"], 2),
        (&["create", "h1", "--network", "wireguard"], 2),
        (&["fault", "partition"], 2),
        (&["fault", "partition", "ghost"], 2),
        (&["fault", "partition", "ghost", "--duration", "10d"], 2),
        (&["fault", "partition", "ghost", "--duration", "30"], 2),
        (&["fault", "partition", "Bad_Name"], 2),
        (&["fault", "delay", "ghost", "200ms"], 2),
        (&["fault", "delay", "ghost", "200"], 2),
        (&["fault", "delay", "ghost", "200ms", "--loss", "200%"], 2),
        (&["fault", "delay", "ghost", "200ms", "--rate", "10mb"], 2),
        (&["fault", "pause", "ghost"], 2),
        (&["fault", "kill-engine", "ghost"], 2),
        (&["fault", "kill-engine", "ghost", "--no-restart"], 2),
        (&["fault", "kill-engine", "ghost", "--duration", "30s"], 2),
        (&["swarm", "upgrade", "nope"], 2),
        (&["swarm", "upgrade", "nope", "--image", "0000dead"], 2),
        (&["swarm", "upgrade", "nope", "--timeout", "soon"], 2),
        (&["fault", "run", "/nonexistent/scenario.yaml", "--swarm", "lab"], 2),
        (&["fault", "run", "/dev/null", "--swarm", "lab"], 2),
        (&["fault", "run", "/dev/null", "--swarm", "Lab"], 2),
        (&["fault", "fill-disk", "ghost"], 2),
        (&["fault", "fill-disk", "ghost", "--leave", "10"], 2),
        (&["fault", "clock", "ghost", "5m"], 2),
        (&["fault", "clock", "ghost", "+5m"], 2),
        (&["fault", "clock", "ghost", "+1.5s"], 2),
        (&["swarm", "create", "--network", "wireguard"], 2),
        (&["swarm", "create", "--ip-range", "10.77.1.0/28"], 2),
        (&["swarm", "create", "--ip-range", "10.77.0.2-10.77.0.3"], 2),
        (&["create", "h1", "--image", "0000dead"], 1),
        (&["inspect", "nope"], 2),
        (&["ip", "nope"], 2),
        (&["env", "nope"], 2),
        (&["start", "nope"], 2),
        (&["start"], 2),
        (&["start", "--all", "h1"], 2),
        (&["start", "--all", "--timeout", "soon"], 2),
        (&["stop", "nope"], 2),
        (&["rm", "nope"], 2),
        (&["stop"], 2),
        (&["suspend"], 2),
        (&["suspend", "nope"], 2),
        (&["start", "--cold"], 2),
        (&["start", "--cold", "nope"], 2),
        (&["swarm", "suspend", "nope"], 2),
        (&["image", "warm", "0000dead"], 2),
        (&["image", "warm", "--memory", "lots"], 2),
        (&["image", "warm", "--network", "lo"], 2),
        (&["no-such-command"], 2),
        (&["swarm", "create", "--managers", "0"], 2),
        (&["swarm", "create", "--workers", "-3"], 2),
        (&["swarm", "create", "--workers", "many"], 2),
        (&["swarm", "create", "--prefix", "Bad Prefix"], 2),
        (&["swarm", "create", "Bad_Name"], 2),
        (&["swarm", "create", "web", "--prefix", "api"], 2),
        (&["swarm", "create", "-f", "cluster.yaml"], 2),
        (&["image", "export", "-f", "raw"], 2),
        (&["swarm", "create", "--prefix", &"p".repeat(60)], 2),
        (&["swarm", "create", "--label", "zone=a@n2d-wrkr-7"], 2),
        (&["swarm", "create", "--label", "novalue"], 2),
        (&["swarm", "create", "--memory", "lots"], 2),
        (&["swarm", "create", "--file", "/nonexistent/cluster.yaml"], 1),
        (&["swarm", "env", "nope"], 2),
        (&["swarm", "load", "nope", "/nonexistent.tar"], 2),
        (&["port", "nope", "80"], 2),
        (&["port", "nope", "0"], 2),
        (&["port", "nope", "53/udp"], 2),
        (&["port", "nope", "70000:80"], 2),
        (&["port", "nope", "80", "--rm", "80"], 2),
        (&["port", "nope", "80", "--json"], 2),
        (&["swarm", "ls", "--json", "-q"], 2),
        (&["certs", "ls", "--json", "-q"], 2),
        (
            &[
                "image",
                "export",
                "--format",
                "iso",
                "--for",
                "web1",
                "--address",
                "10.0.0.5",
                "--gateway",
                "10.0.0.1",
            ],
            2,
        ),
        (&["exec", "nope", "true"], 2),
        (&["exec", "nope"], 2),
        (&["exec", "nope", "-e", "NOEQUALS", "true"], 2),
        (&["cp", "nope:/etc/hosts", "."], 2),
        (&["cp", "/etc/hosts", "nope:/tmp"], 2),
        (&["cp", "/etc/hosts", "/tmp/x"], 2),
        (&["cp", "a:/x", "b:/x"], 2),
        (&["cp", "/etc/hosts"], 2),
        (&["create", "h1", "--mount", "/nonexistent/dir"], 2),
        (&["create", "h1", "--mount", "/etc/hosts"], 2),
        (&["create", "h1", "--mount", "/tmp:relative"], 2),
        (&["create", "h1", "--mount", "/tmp:/var/lib/docker"], 2),
        (&["create", "h1", "--mount", "/tmp:/a", "--mount", "/var:/a"], 2),
        (&["swarm", "create", "--mount", "/nonexistent/dir"], 2),
        (&["swarm", "create", "--mount", "/tmp:/x:/y"], 2),
        (&["create", "h1", "--network", "n2d0", "-p", "80"], 2),
        (&["create", "h1", "--network", "user", "-p", "80", "-p", "80:81"], 2),
        (&["swarm", "create", "--network", "n2d0", "--publish", "8080"], 2),
        (&["swarm", "create", "--network", "user", "-p", "8080", "-p", "8080:1"], 2),
        (&["doctor", "--network", "../x"], 2),
        (&["doctor", "--network", "a-very-long-bridge-name"], 2),
        (&["doctor", "--network", ""], 2),
        // This test binary is linked against the host's C library: no guest's PID 1.
        (&["image", "build", "--init", &this_binary], 2),
        (&["image", "build", "--init", "/nonexistent/n2d-init"], 1),
        (&["image", "export", "--format", "vdi"], 2),
        (&["image", "export", "--format", "qcow2,"], 2),
        (&["image", "export"], 2),
        (&["image", "export", "--format", "qcow2", "--hyperv"], 2),
        (&["image", "export", "--format", "qcow2", "--output", "/nonexistent/dir"], 2),
        (&["image", "export", "--format", "qcow2", "--output", "/proc/version"], 2),
        (&["image", "export", "--format", "qcow2", "--disk-size", "big"], 2),
        (&["image", "export", "--format", "iso", "--ip", "10.0.0.5/24", "--gateway", "10.0.0.1"], 2),
        (&["image", "export", "--format", "iso", "--for", "web1", "--address", "10.0.0.5/24"], 2),
        (
            &[
                "image",
                "export",
                "--format",
                "iso",
                "--for",
                "web1",
                "--ip",
                "10.0.0.5",
                "--gateway",
                "10.0.0.1",
            ],
            2,
        ),
        (
            &[
                "image",
                "export",
                "--format",
                "iso",
                "--for",
                "web1",
                "--ip",
                "10.0.0.5/24",
                "--gateway",
                "10.0.1.1",
            ],
            2,
        ),
        (
            &[
                "image",
                "export",
                "--format",
                "iso",
                "--for",
                "web1",
                "--dhcp",
                "--ip",
                "10.0.0.5/24",
                "--gateway",
                "10.0.0.1",
            ],
            2,
        ),
        (&["image", "export", "--format", "iso", "--for", "Web_1"], 2),
        (&["image", "export", "--format", "iso", "--label", "a=b"], 2),
        (&["image", "export", "--format", "iso", "--for", "web1", "--label", "=b"], 2),
        (&["image", "export", "--format", "iso", "--dns", "10.0.0.1"], 2),
        (&["adopt", "web1", "--host", "192.0.2.1:2376"], 2),
        (&["adopt", "web1", "--host", "tcp://192.0.2.1"], 2),
        (&["adopt", "web1", "--host", "tcp://192.0.2.1:2376"], 2),
        (&["adopt", "../web1", "--host", "tcp://192.0.2.1:2376"], 2),
        (&["swarm", "add-host", "nope", "--host", "web1"], 2),
        // Build inputs are checked before any work, each naming the input.
        (&["image", "build", "--deb", "/nonexistent/pkg_1_amd64.deb"], 2),
        (&["image", "build", "--deb", &this_binary], 2),
        (&["image", "build", "--docker-archive", &this_binary], 2),
        (&["image", "build", "--docker-archive", "/nonexistent/docker-28.tgz"], 2),
        (&["image", "build", "--mirror", "ftp://deb.example/debian"], 2),
        (&["image", "build", "--mirror", "file:///nonexistent/mirror"], 2),
        (&["image", "build", "--include", "Not A Package"], 2),
        // Devices are no build inputs (they were read without end), and a suite is a suite name.
        (&["image", "build", "--deb", "/dev/zero"], 2),
        (&["image", "build", "--docker-archive", "/dev/zero"], 2),
        (&["image", "build", "--init", "/dev/zero"], 2),
        (&["image", "build", "--suite=-x"], 2),
        (&["image", "build", "--suite", "../../etc"], 2),
        (&["image", "build", "--suite", "trixie main"], 2),
        (&["image", "build", "--suite", "Trixie"], 2),
        (&["image", "export", "", "--format", "raw"], 2),
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
    let code = run(home.path(), &["swarm", "create", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(!home.path().join("swarms").exists());
}

/// Every verb that takes a machine or swarm name, with `NAME` where the name goes.
const MACHINE_VERBS: &[&[&str]] = &[
    &["create", "NAME"],
    &["inspect", "NAME"],
    &["ip", "NAME"],
    &["env", "NAME"],
    &["start", "NAME"],
    &["stop", "NAME"],
    &["restart", "NAME"],
    &["suspend", "NAME"],
    &["start", "--cold", "NAME"],
    &["rm", "NAME"],
    &["rm", "-f", "NAME"],
    &["rm", "ok-name", "NAME"],
    &["logs", "NAME"],
    &["logs", "--tail", "3", "--raw", "NAME"],
    &["certs", "rotate", "NAME"],
    &["console", "NAME"],
    &["adopt", "NAME", "--host", "tcp://192.0.2.1:2376"],
    &["image", "export", "--format", "iso", "--for", "NAME"],
];
const SWARM_VERBS: &[&[&str]] = &[
    &["swarm", "create", "--prefix", "NAME"],
    &["swarm", "env", "NAME"],
    &["swarm", "rm", "NAME"],
    &["swarm", "suspend", "NAME"],
    &["swarm", "scale", "NAME", "--workers", "1", "--cold"],
    &["swarm", "load", "NAME", "/nonexistent.tar"],
    &["swarm", "add-host", "NAME", "--host", "tcp://192.0.2.1:2376"],
    &["swarm", "upgrade", "NAME", "--dry-run"],
];

/// A home with a CA, and canaries next to it that a path-like name would reach.
struct Hostile {
    root: tempfile::TempDir,
}

impl Hostile {
    fn new() -> Hostile {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        for dir in ["certs", "machines", "swarms", "images", "networks"] {
            std::fs::create_dir_all(home.join(dir)).unwrap();
        }
        std::fs::write(home.join("certs/ca.pem"), b"ca").unwrap();
        std::fs::create_dir_all(root.path().join("canary")).unwrap();
        std::fs::write(root.path().join("canary/keep"), b"keep").unwrap();
        std::fs::write(root.path().join("canary.json"), br#"{"prefix":"canary"}"#).unwrap();
        Hostile { root }
    }
    fn home(&self) -> std::path::PathBuf {
        self.root.path().join("home")
    }
    fn assert_intact(&self, what: &str) {
        let r = self.root.path();
        assert!(r.join("canary/keep").exists(), "{what} deleted the canary outside the home");
        assert!(r.join("canary.json").exists(), "{what} deleted canary.json outside the home");
        assert!(self.home().join("certs/ca.pem").exists(), "{what} deleted the home's CA");
        assert!(self.home().join("machines").is_dir(), "{what} deleted machines/");
    }
}

#[test]
fn hostile_names_are_refused_by_every_verb_before_anything_is_touched() {
    let h = Hostile::new();
    let abs = h.root.path().join("canary").display().to_string();
    let long = "x".repeat(64);
    let names: Vec<&str> =
        vec!["..", "../certs", "../../canary", &abs, "a/b", ".", "", "-x", &long, "a\nb", "../canary"];
    for (verbs, rule) in [(MACHINE_VERBS, "invalid machine name"), (SWARM_VERBS, "invalid swarm name")] {
        for verb in verbs {
            for name in &names {
                let args: Vec<&str> = verb.iter().map(|a| if *a == "NAME" { *name } else { *a }).collect();
                let got = run(&h.home(), &args);
                assert_eq!(got, 2, "n2d {args:?} exited {got}, expected 2");
                h.assert_intact(&format!("n2d {args:?}"));
                // The message names the rule (clap's own for what looks like a flag).
                let argv = std::iter::once("n2d").chain(args.iter().copied());
                let err = <n2d::args::Cli as clap::Parser>::try_parse_from(argv).unwrap_err().to_string();
                if !name.starts_with('-') {
                    assert!(err.contains(rule), "n2d {args:?}: {err}");
                }
            }
        }
    }
}

#[test]
fn a_swarm_record_naming_paths_cannot_make_swarm_rm_delete_them() {
    let h = Hostile::new();
    for nodes in [r#"["../../canary"]"#, r#"["../certs"]"#, r#"[".."]"#] {
        let record = format!(r#"{{"prefix":"s","managers":["s-mngr-0"],"workers":{nodes}}}"#);
        std::fs::write(h.home().join("swarms/s.json"), record).unwrap();
        let got = run(&h.home(), &["swarm", "rm", "s"]);
        assert_ne!(got, 0, "swarm rm with workers {nodes} succeeded");
        h.assert_intact(&format!("swarm rm with workers {nodes}"));
        assert!(h.home().join("swarms/s.json").exists(), "the damaged record is kept for the user to see");
    }
}

#[test]
fn labels_have_one_parser_for_create_and_swarm_create() {
    let home = tempfile::tempdir().unwrap();
    for label in ["a\nb=v", "a b=v", "=v", "novalue", "a=b\nc", "a\tb=v"] {
        for args in [
            vec!["create", "h1", "--label", label],
            vec!["swarm", "create", "--label", label],
            vec!["swarm", "create", "--label", &format!("{label}@workers")],
        ] {
            let got = run(home.path(), &args);
            assert_eq!(got, 2, "n2d {args:?} exited {got}, expected 2");
        }
    }
    assert_eq!(leftovers(home.path()), Vec::<String>::new());
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn ls_survives_non_ascii_image_ids_and_tightens_a_loose_home() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let dir = home.join("machines/h1");
    std::fs::create_dir_all(&dir).unwrap();
    let image = "é".repeat(20);
    let record = serde_json::json!({
        "spec": { "name": "h1", "cpus": 1, "memory": 2147483648u64, "disk": 21474836480u64,
                  "bridge": "n2d0", "image": image, "insecure_tcp": false, "labels": {} },
        "ip": "10.77.0.2", "prefix_len": 24, "gateway": "10.77.0.1",
        "mac": "52:54:00:00:00:01", "tap": "n2dt00000000", "swarm": null
    });
    std::fs::write(dir.join("machine.json"), record.to_string()).unwrap();
    for d in [&home, &home.join("machines")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(run(&home, &["ls"]), 0);
    assert_eq!(run(&home, &["ls", "--json"]), 0);
    assert_eq!(mode(&home), 0o700, "the home is tightened");
    assert_eq!(mode(&home.join("machines")), 0o700);
}

#[test]
fn add_host_without_tls_is_refused_before_any_connection() {
    // A valid swarm record, so only the missing TLS can stop it. The host is in TEST-NET-1,
    // where a connection attempt would hang until its timeout instead of failing at once.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("swarms")).unwrap();
    let record = r#"{"prefix":"s","managers":["s-mngr-0"],"workers":[]}"#;
    std::fs::write(home.path().join("swarms/s.json"), record).unwrap();
    let started = std::time::Instant::now();
    let got = run(home.path(), &["swarm", "add-host", "s", "--host", "tcp://192.0.2.1:2376"]);
    assert_eq!(got, 2, "add-host without TLS would send the join token in clear");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "it tried to connect first");
    assert_eq!(std::fs::read_to_string(home.path().join("swarms/s.json")).unwrap(), record);
}

#[test]
fn add_host_refuses_bad_names_and_oversized_labels_before_any_connection() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("swarms")).unwrap();
    let record = r#"{"prefix":"s","managers":["s-mngr-0"],"workers":[]}"#;
    std::fs::write(home.path().join("swarms/s.json"), record).unwrap();
    let tls = [
        "--tlscacert",
        "/nonexistent/ca.pem",
        "--tlscert",
        "/nonexistent/c.pem",
        "--tlskey",
        "/nonexistent/k.pem",
    ];
    let big = format!("k={}", "v".repeat(4000));
    let many: Vec<String> = (0..20).map(|i| format!("--label=k{i}={}", "v".repeat(4000))).collect();
    let cases: Vec<Vec<&str>> = vec![
        vec!["--as", "../x"],
        vec!["--as", "a\nb"],
        vec!["--as", "-x"],
        vec!["--label", &big, "--label", "x"],
        many.iter().map(String::as_str).collect(),
    ];
    for extra in cases {
        let mut args = vec!["swarm", "add-host", "s", "--host", "tcp://192.0.2.1:2376"];
        args.extend(tls);
        args.extend(extra.iter().copied());
        let started = std::time::Instant::now();
        assert_eq!(run(home.path(), &args), 2, "{extra:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "it tried to connect first");
    }
    assert_eq!(std::fs::read_to_string(home.path().join("swarms/s.json")).unwrap(), record);
}

#[test]
fn image_rm_and_prune_keep_what_a_machine_boots() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let manifest = |id: &str| {
        serde_json::json!({
            "id": id, "recipe_id": id, "kernel_release": "6.12", "created_unix": 1, "kernel_bytes": 1,
            "initrd_bytes": 1, "rootfs_bytes": 1, "rootfs_unpacked_bytes": 1,
            "packages": [], "source_date_epoch": 1, "debs": [],
            "init_sha256": "x", "artifacts_sha256": "",
            "recipe": { "suite": "trixie", "mirror": "", "packages": [], "kernel_package": "k",
                        "initrd_modules": [], "boot_modules": [], "late_modules": [],
                        "module_dirs": [], "init_sha256": "x",
                        "sources": ["http://deb.debian.org/debian trixie"], "local_debs": [] }
        })
    };
    for id in ["aaaa1111", "bbbb2222"] {
        let dir = home.join("images").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("image.json"), manifest(id).to_string()).unwrap();
        std::fs::write(dir.join("rootfs.erofs"), b"root").unwrap();
    }
    // Not an image this n2d can read: prune takes it too.
    std::fs::create_dir_all(home.join("images/cccc3333")).unwrap();
    let dir = home.join("machines/h1");
    std::fs::create_dir_all(&dir).unwrap();
    let record = serde_json::json!({
        "spec": { "name": "h1", "cpus": 1, "memory": 2147483648u64, "disk": 21474836480u64,
                  "bridge": "n2d0", "image": "aaaa1111", "insecure_tcp": false, "labels": {} },
        "ip": "10.77.0.2", "prefix_len": 24, "gateway": "10.77.0.1",
        "mac": "52:54:00:00:00:01", "tap": "n2dt00000000", "swarm": null
    });
    std::fs::write(dir.join("machine.json"), record.to_string()).unwrap();

    assert_eq!(run(&home, &["image", "inspect", "aaaa"]), 0);
    assert_eq!(run(&home, &["image", "inspect", "zzzz"]), 2, "no such image");
    assert_eq!(run(&home, &["image", "rm", "bbbb", "aaaa"]), 2, "aaaa is h1's");
    assert!(home.join("images/bbbb2222").exists(), "nothing is removed when one ID is refused");
    assert_eq!(run(&home, &["image", "prune"]), 0);
    let mut left: Vec<String> = std::fs::read_dir(home.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["aaaa1111"]);
    // An empty ID would match the one image left: it names none.
    assert_eq!(run(&home, &["image", "inspect", ""]), 2);
    assert_eq!(run(&home, &["image", "rm", ""]), 2);
    assert_eq!(run(&home, &["image", "rm", "aaaa"]), 2);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(run(&home, &["image", "rm", "aaaa"]), 0);
    assert_eq!(std::fs::read_dir(home.join("images")).unwrap().count(), 0);
}

/// An image record n2d can read, with no files beside it.
fn fake_image(home: &std::path::Path, id: &str) {
    let dir = home.join("images").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = serde_json::json!({
        "id": id, "recipe_id": id, "kernel_release": "6.12", "created_unix": 1, "kernel_bytes": 1,
        "initrd_bytes": 1, "rootfs_bytes": 1, "rootfs_unpacked_bytes": 1,
        "packages": [], "source_date_epoch": 1, "debs": [],
        "init_sha256": "x", "artifacts_sha256": "",
        "recipe": { "suite": "trixie", "mirror": "", "packages": [], "kernel_package": "k",
                    "initrd_modules": [], "boot_modules": [], "late_modules": [],
                    "module_dirs": [], "init_sha256": "x",
                    "sources": ["http://deb.debian.org/debian trixie"], "local_debs": [] }
    });
    std::fs::write(dir.join("image.json"), manifest.to_string()).unwrap();
}

#[test]
fn export_refuses_output_directories_others_can_change_and_build_refuses_a_fifo() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    fake_image(&home, "aaaa1111");
    let dir = |name: &str, mode: u32| {
        let d = root.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
        d
    };
    let mut refused = vec![dir("world", 0o777), dir("group", 0o770)];
    if rustix::process::geteuid().is_root() {
        // A /tmp-like directory of another user: they may rename what n2d puts there.
        let sticky = dir("sticky", 0o1777);
        rustix::fs::chown(&sticky, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
        refused.push(sticky);
    }
    for out in &refused {
        let out_s = out.to_str().unwrap();
        let got =
            run(&home, &["image", "export", "aaaa", "--format", "raw", "--for", "web1", "--output", out_s]);
        assert_eq!(got, 2, "{out_s}");
        assert_eq!(std::fs::read_dir(out).unwrap().count(), 0, "{out_s}: something was written");
    }
    // A private directory passes the check (the fake image then fails the export: exit 1).
    let private = dir("private", 0o700);
    let got =
        run(&home, &["image", "export", "aaaa", "--format", "raw", "--output", private.to_str().unwrap()]);
    assert_eq!(got, 1);
    assert_eq!(std::fs::read_dir(&private).unwrap().count(), 0, "a failed export leaves nothing");

    // A FIFO as --deb is refused at once instead of blocking the build forever.
    let fifo = root.path().join("pkg.deb");
    n2d_store::safe_fs::make_fifo(&fifo).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(run(&home, &["image", "build", "--deb", fifo.to_str().unwrap()]), 2);
    assert_eq!(run(&home, &["image", "build", "--docker-archive", fifo.to_str().unwrap()]), 2);
    // So is a FIFO or a device as a cluster file or a swarm's image archive.
    assert_eq!(run(&home, &["swarm", "create", "--file", fifo.to_str().unwrap()]), 2);
    assert_eq!(run(&home, &["swarm", "create", "--file", "/dev/zero"]), 2);
    assert_ne!(run(&home, &["swarm", "load", "n2d", fifo.to_str().unwrap()]), 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

/// Runs the CLI with one more environment variable set for this run only.
fn run_with_env(home: &std::path::Path, var: &str, value: &str, args: &[&str]) -> i32 {
    run_with_vars(home, &[(var, value)], args)
}

#[test]
fn a_home_that_is_not_the_callers_is_refused_and_left_as_it_is() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(home.join("machines")).unwrap();
    // Writable by every user: anyone could have planted state there. Refused, not "tightened".
    for m in [0o777, 0o1777] {
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(m)).unwrap();
        assert_eq!(run(&home, &["ls"]), 2, "{m:o}");
        assert_eq!(std::fs::metadata(&home).unwrap().permissions().mode() & 0o7777, m);
    }
    // Another user's (only root can make one here): refused, never chmod'ed.
    if rustix::process::geteuid().is_root() {
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
        assert_eq!(run(&home, &["ls"]), 2);
        assert_eq!(run(&home, &["rm", "-f", "h1"]), 2);
        assert_eq!(mode(&home), 0o755, "another user's home is not changed");
        std::os::unix::fs::chown(&home, Some(0), Some(0)).unwrap();
    }
    // The caller's, only readable by others: tightened, as before.
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(run(&home, &["ls"]), 0);
    assert_eq!(mode(&home), 0o700);
}

#[test]
fn numeric_environment_values_out_of_range_are_usage_errors_not_panics() {
    let home = tempfile::tempdir().unwrap();
    // A journal a killed n2d left: the next state-changing command takes the lock to recover it.
    std::fs::create_dir_all(home.path().join("intents")).unwrap();
    std::fs::write(home.path().join("intents/create-x-1-0.json"), b"{").unwrap();
    for bad in ["1e300", "-1", "NaN", "inf", "86401", "ten"] {
        assert_eq!(run_with_env(home.path(), "N2D_LOCK_TIMEOUT", bad, &["rm", "-f", "h1"]), 2, "{bad}");
    }
    // The emulator's knobs are read once, before any command: a bad one stops every command,
    // the ones that touch nothing included.
    for (var, bad) in [("N2D_TCG_TB_SIZE", "8"), ("N2D_TCG_TB_SIZE", "1e9"), ("N2D_TCG_THREAD", "both")] {
        assert_eq!(run_with_env(home.path(), var, bad, &["rm", "-f", "h1"]), 2, "{var}={bad}");
        assert_eq!(run_with_env(home.path(), var, bad, &["ls"]), 2, "{var}={bad}");
    }
    // A log filter that is not one stops the command before it does anything.
    for bad in ["n2d=loud", "[", "n2d=debug,=x"] {
        assert_eq!(run_with_env(home.path(), "N2D_LOG", bad, &["rm", "-f", "h1"]), 2, "N2D_LOG={bad}");
    }
    assert!(home.path().join("intents/create-x-1-0.json").exists());
}

#[test]
fn env_refuses_a_home_whose_path_it_cannot_print_exactly() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    // Not UTF-8: lossy text would point DOCKER_CERT_PATH at another directory.
    let home = dir.path().join(std::ffi::OsStr::from_bytes(b"home-\xff"));
    std::fs::create_dir_all(home.join("hosts")).unwrap();
    std::fs::write(home.join("hosts/web.json"), r#"{"name":"web","docker_host":"tcp://192.168.1.50:2376"}"#)
        .unwrap();
    assert_eq!(run(&home, &["env", "web"]), 2);
    assert_eq!(leftovers(&home), [home.join("hosts/web.json").display().to_string()]);
}

#[test]
fn a_scenario_with_an_unknown_verb_or_steps_out_of_order_is_refused_before_any_swarm_is_asked() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("verb.yaml", "steps:\n  - at: 10s\n    explode: web\n"),
        ("order.yaml", "steps:\n  - at: 20s\n    pause: web\n  - at: 10s\n    clear: all\n"),
        ("time.yaml", "steps:\n  - at: soon\n    pause: web\n"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        // The swarm does not exist either: the file is what is refused first.
        assert_eq!(
            run(home.path(), &["fault", "run", file.to_str().unwrap(), "--swarm", "lab"]),
            2,
            "{name}"
        );
        assert!(leftovers(home.path()).is_empty(), "{name}: {:?}", leftovers(home.path()));
    }
}
