use super::fake::FakeSsh;
use super::*;
use crate::tests::recording_orchestrator;
use crate::ErrorKind;
use n2d_store::RemoteMachine;
use std::sync::Arc;

const INFO: &str =
    r#"{"version":"0.1.0","cpus":4,"memory_total":8000000000,"memory_available":6000000000,"machines":1}"#;
const DOCTOR_OK: &str = r#"[{"name":"qemu","status":"ok","finding":"QEMU 10"},{"name":"kvm","status":"warn","finding":"KVM not usable","fix":"enable VT-x"}]"#;

fn healthy(ssh: &FakeSsh, host: &str) {
    ssh.answer(host, "--version", 0, &format!("n2d {VERSION}\n"), "");
    ssh.answer(host, "doctor --json", 0, DOCTOR_OK, "");
    ssh.answer(host, "host info --json", 0, INFO, "");
}

fn name(n: &str) -> HostName {
    n.parse().unwrap()
}

fn url(u: &str) -> SshUrl {
    u.parse().unwrap()
}

#[test]
fn a_host_that_passes_every_check_is_recorded_with_its_resources_and_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let (mut orch, _) = recording_orchestrator(dir.path());
    let ssh = Arc::new(FakeSsh::default());
    orch.ssh = ssh.clone();
    healthy(&ssh, "10.0.0.2");
    let added =
        orch.register_host(&name("lab2"), &url("ssh://root@10.0.0.2"), HostPlacement::default()).unwrap();
    assert_eq!(added.info.cpus, 4);
    assert_eq!(added.warnings, ["kvm: KVM not usable"]);
    assert_eq!(orch.remote_host(&name("lab2")).unwrap().url, url("ssh://root@10.0.0.2"));
    assert_eq!(
        ssh.calls(),
        ["10.0.0.2: n2d --version", "10.0.0.2: n2d doctor --json", "10.0.0.2: n2d host info --json"]
    );
    let again =
        orch.register_host(&name("lab2"), &url("ssh://10.0.0.9"), HostPlacement::default()).unwrap_err();
    assert!(again.to_string().contains("already exists (ssh://root@10.0.0.2)"), "{again}");
    assert_eq!(again.kind(), ErrorKind::Usage);
}

#[test]
fn each_way_a_host_check_fails_is_one_clear_error_and_records_nothing() {
    type Case = (&'static str, fn(&FakeSsh), &'static str, ErrorKind);
    let cases: [Case; 7] = [
        ("unreachable", |_| {}, "does not answer: ssh: connect to host h port 22: Connection refused", ErrorKind::Failure),
        (
            "unknown key",
            |s| s.answer("h", "", 255, "", "No ED25519 host key is known for h and you have requested strict checking.\nHost key verification failed.\n"),
            "its SSH host key is not known here: check its fingerprint and connect once with `ssh me@h -p 2200`",
            ErrorKind::Usage,
        ),
        (
            "changed key",
            |s| s.answer("h", "", 255, "", "@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\nHost key verification failed.\n"),
            "another SSH host key than the one known here, so n2d refuses it: if the host was reinstalled, remove the old key with `ssh-keygen -R '[h]:2200'`",
            ErrorKind::Usage,
        ),
        (
            "no key accepted",
            |s| s.answer("h", "", 255, "", "me@h: Permission denied (publickey).\n"),
            "refused the login: me@h: Permission denied (publickey): n2d logs in",
            ErrorKind::Usage,
        ),
        (
            "n2d missing",
            |s| s.answer("h", "", 127, "", "bash: line 1: n2d: command not found\n"),
            "has no n2d on the PATH of a non-interactive SSH session",
            ErrorKind::Usage,
        ),
        ("other version", |s| s.answer("h", "--version", 0, "n2d 0.0.9\n", ""), "runs n2d 0.0.9, this is n2d", ErrorKind::Usage),
        (
            "failing doctor",
            |s| {
                s.answer("h", "--version", 0, &format!("n2d {VERSION}\n"), "");
                s.answer("h", "doctor", 1, r#"[{"name":"qemu","status":"fail","finding":"no qemu-system-x86_64","fix":"apt-get install qemu-system-x86"}]"#, "");
            },
            "cannot run machines yet; its `n2d doctor` says:\n  qemu: no qemu-system-x86_64 (apt-get install qemu-system-x86)",
            ErrorKind::Usage,
        ),
    ];
    for (what, script, says, kind) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (mut orch, _) = recording_orchestrator(dir.path());
        let ssh = Arc::new(FakeSsh::default());
        script(&ssh);
        orch.ssh = ssh;
        let err =
            orch.register_host(&name("lab"), &url("ssh://me@h:2200"), HostPlacement::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("host lab (ssh://me@h:2200)"), "{what}: {msg}");
        assert!(msg.contains(says), "{what}: {msg}");
        assert_eq!(err.kind(), kind, "{what}");
        assert!(orch.home.list_remote_hosts().is_empty(), "{what}: nothing recorded");
    }
}

#[test]
fn local_is_no_name_to_add_or_remove_and_unknown_hosts_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (orch, _) = recording_orchestrator(dir.path());
    for err in [
        orch.register_host(&HostName::local(), &url("ssh://h"), HostPlacement::default()).unwrap_err(),
        orch.forget_host(&HostName::local(), false).unwrap_err(),
    ] {
        assert!(err.to_string().contains("`local` is this machine"), "{err}");
        assert_eq!(err.kind(), ErrorKind::Usage);
    }
    let err = orch.forget_host(&name("nope"), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no host named nope: `n2d host ls` lists the hosts, `n2d host add nope ssh://[USER@]HOST` adds one"
    );
    assert_eq!(err.kind(), ErrorKind::Usage);
}

#[test]
fn a_host_with_machines_is_kept_unless_forced_and_forcing_forgets_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut orch, _) = recording_orchestrator(dir.path());
    let ssh = Arc::new(FakeSsh::default());
    healthy(&ssh, "h");
    orch.ssh = ssh;
    orch.register_host(&name("lab"), &url("ssh://h"), HostPlacement::default()).unwrap();
    let web = RemoteMachine {
        name: "web".parse().unwrap(),
        host: name("lab"),
        ip: "10.0.0.5".parse().unwrap(),
        swarm: None,
        record: n2d_store::MachineRecord::example("web", "10.0.0.5".parse().unwrap()),
    };
    orch.home.save_remote_machine(&web).unwrap();
    let err = orch.forget_host(&name("lab"), false).unwrap_err();
    assert!(err.to_string().contains("host lab has machines of this home: web"), "{err}");
    assert!(orch.remote_host(&name("lab")).is_ok());
    orch.forget_host(&name("lab"), true).unwrap();
    assert!(orch.home.list_remote_hosts().is_empty());
    assert!(orch.home.list_remote_machines().is_empty());
}

#[test]
fn host_ls_has_local_first_then_each_host_answering_or_saying_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let (mut orch, _) = recording_orchestrator(dir.path());
    let ssh = Arc::new(FakeSsh::default());
    healthy(&ssh, "up");
    healthy(&ssh, "down");
    orch.ssh = ssh.clone();
    orch.register_host(&name("b-up"), &url("ssh://up"), HostPlacement::default()).unwrap();
    orch.register_host(&name("a-down"), &url("ssh://down"), HostPlacement::default()).unwrap();
    // The second host goes away.
    let gone = Arc::new(FakeSsh::default());
    healthy(&gone, "up");
    orch.ssh = gone;
    let rows = orch.list_hosts();
    let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["local", "a-down", "b-up"]);
    assert!(rows[0].reachable && rows[0].info.as_ref().unwrap().version == VERSION);
    assert!(!rows[1].reachable);
    assert!(rows[1].error.as_deref().unwrap().contains("does not answer"), "{:?}", rows[1]);
    assert_eq!(rows[2].info.as_ref().unwrap().memory_available, 6_000_000_000);
}

#[test]
fn meminfo_gives_total_and_available_bytes() {
    let text = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   20000000 kB\n";
    assert_eq!(parse_meminfo(text), (24_000_000 * 1024, 20_000_000 * 1024));
    assert_eq!(parse_meminfo(""), (0, 0));
}

mod create_on_host {
    use super::*;
    use crate::remote::relay::IssuedCert;
    use n2d_spec::machine::MachineName;
    use std::io::{BufRead, Write};

    fn lab_with(
        script: crate::remote::fake::SessionScript,
    ) -> (
        tempfile::TempDir,
        Orchestrator<n2d_exec::RecordingRunner, n2d_vm::fake::FakeHypervisor, n2d_swarm::fake::Cluster>,
        Arc<crate::Quiet>,
        Arc<FakeSsh>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (mut orch, said) = recording_orchestrator(dir.path());
        let ssh = Arc::new(FakeSsh::default());
        healthy(&ssh, "h2");
        ssh.script("h2", "create", script);
        orch.ssh = ssh.clone();
        orch.register_host(&name("lab2"), &url("ssh://h2"), HostPlacement::default()).unwrap();
        (dir, orch, said, ssh)
    }

    #[test]
    fn the_remote_create_gets_a_certificate_of_this_homes_ca_and_the_machine_is_recorded() {
        let script: crate::remote::fake::SessionScript = Arc::new(
            |args: &[String], stdin: &mut dyn BufRead, stdout: &mut dyn Write, stderr: &mut dyn Write| {
                assert_eq!(args, ["create", "web", "--memory", "1G", "--tls-relay"]);
                writeln!(stderr, "Creating web...").unwrap();
                writeln!(stdout, r#"{{"issue":{{"name":"web","ips":["10.99.0.110"]}}}}"#).unwrap();
                let mut answer = String::new();
                stdin.read_line(&mut answer).unwrap();
                let issued: IssuedCert = serde_json::from_str(&answer).unwrap();
                let info = n2d_pki::CertInfo::from_pem(&issued.cert_pem).unwrap();
                if !info.names_machine(&"web".parse().unwrap()) || !info.names().contains("10.99.0.110") {
                    return 1;
                }
                writeln!(stdout, "10.99.0.110\nDocker endpoint: tcp://10.99.0.110:2376").unwrap();
                0
            },
        );
        let (_dir, orch, said, ssh) = lab_with(script);
        let mut inspected =
            serde_json::to_value(n2d_store::MachineRecord::example("web", "10.99.0.110".parse().unwrap()))
                .unwrap();
        inspected["state"] = "running".into();
        inspected["dir"] = "/h2/machines/web".into();
        ssh.answer("h2", "inspect web", 0, &inspected.to_string(), "");
        let web: MachineName = "web".parse().unwrap();
        let made = orch.create_on_host(&name("lab2"), &web, &["--memory".into(), "1G".into()]).unwrap();
        assert_eq!(made.ip.to_string(), "10.99.0.110");
        assert_eq!(made.record.spec.bridge, "brlan");
        assert_eq!(orch.remote_machine(&web).unwrap(), Some(made.clone()));
        assert!(said.lines().iter().any(|l| l == "  lab2: Creating web..."), "{:?}", said.lines());
        assert_eq!(orch.remote_endpoint(&made).docker_host, "tcp://10.99.0.110:2376");
        // The name is taken now, here and there.
        let again = orch.create_on_host(&name("lab2"), &web, &[]).unwrap_err();
        assert!(matches!(again, crate::Error::MachineExists { .. }), "{again}");
    }

    #[test]
    fn a_refused_or_failed_remote_create_records_nothing_and_says_why() {
        let refused: crate::remote::fake::SessionScript =
            Arc::new(|_: &[String], _: &mut dyn BufRead, _: &mut dyn Write, stderr: &mut dyn Write| {
                writeln!(stderr, "Creating web...\nerror: invalid size \"lots\"").unwrap();
                2
            });
        let (_dir, orch, _, _) = lab_with(refused);
        let web: MachineName = "web".parse().unwrap();
        let err = orch.create_on_host(&name("lab2"), &web, &[]).unwrap_err();
        assert_eq!(err.to_string(), "host lab2 refused: invalid size \"lots\"");
        assert_eq!(err.kind(), ErrorKind::Usage);
        assert_eq!(orch.remote_machine(&web).unwrap(), None);

        // A request for another name is never signed.
        let other: crate::remote::fake::SessionScript = Arc::new(
            |_: &[String], stdin: &mut dyn BufRead, stdout: &mut dyn Write, stderr: &mut dyn Write| {
                writeln!(stdout, r#"{{"issue":{{"name":"other","ips":["10.99.0.111"]}}}}"#).unwrap();
                let mut answer = String::new();
                let got = stdin.read_line(&mut answer).unwrap_or(0);
                writeln!(stderr, "error: the certificate relay to the asking n2d broke: it hung up ({got})")
                    .unwrap();
                1
            },
        );
        let (_dir, orch, _, _) = lab_with(other);
        let err = orch.create_on_host(&name("lab2"), &web, &[]).unwrap_err();
        assert!(err.to_string().contains("hung up (0)"), "{err}");
        assert_eq!(err.kind(), ErrorKind::Failure);
        assert_eq!(orch.remote_machine(&web).unwrap(), None);
    }

    #[test]
    fn an_unknown_host_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (orch, _) = recording_orchestrator(dir.path());
        let err = orch.create_on_host(&name("nope"), &"web".parse().unwrap(), &[]).unwrap_err();
        assert!(err.to_string().starts_with("no host named nope"), "{err}");
        assert_eq!(err.kind(), ErrorKind::Usage);
    }
}

#[test]
fn swarm_load_sends_the_archive_to_a_host_once_for_its_nodes_there() {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir().unwrap();
    let (mut orch, said) = recording_orchestrator(dir.path());
    let ssh = Arc::new(FakeSsh::default());
    healthy(&ssh, "h3");
    let archive = dir.path().join("web.tar");
    std::fs::write(&archive, vec![7u8; 300_000]).unwrap();
    let script: crate::remote::fake::SessionScript =
        Arc::new(|args: &[String], stdin: &mut dyn BufRead, stdout: &mut dyn Write, _: &mut dyn Write| {
            assert_eq!(args, ["host", "load", "a", "b"]);
            let mut bytes = Vec::new();
            stdin.read_to_end(&mut bytes).unwrap();
            let ok = bytes.len() == 300_000 && bytes.iter().all(|b| *b == 7);
            let line = if ok { "Loaded image: web:1" } else { "wrong bytes" };
            writeln!(stdout, r#"[["a",["{line}"]],["b",["{line}"]]]"#).unwrap();
            0
        });
    ssh.script("h3", "host load", script);
    orch.ssh = ssh.clone();
    orch.register_host(&name("h3"), &url("ssh://h3"), HostPlacement::default()).unwrap();
    let names: Vec<n2d_spec::machine::MachineName> = vec!["a".parse().unwrap(), "b".parse().unwrap()];
    let loaded = orch.load_on_host(&name("h3"), &names, &archive).unwrap();
    assert_eq!(
        loaded,
        [
            ("a".to_string(), vec!["Loaded image: web:1".to_string()]),
            ("b".to_string(), vec!["Loaded image: web:1".to_string()])
        ]
    );
    assert_eq!(ssh.calls().iter().filter(|c| c.contains("host load")).count(), 1);
    assert!(
        said.lines().iter().any(|l| l.contains("h3: sending the archive (0 MB) once for 2")),
        "{:?}",
        said.lines()
    );

    // A host whose n2d refuses: its error, named.
    let refuses: crate::remote::fake::SessionScript =
        Arc::new(|_: &[String], stdin: &mut dyn BufRead, _: &mut dyn Write, stderr: &mut dyn Write| {
            let _ = std::io::copy(stdin, &mut std::io::sink());
            writeln!(stderr, "error: no machine named \"b\" (see `n2d ls`)").unwrap();
            2
        });
    let other = Arc::new(FakeSsh::default());
    other.script("h3", "host load", refuses);
    orch.ssh = other;
    let err = orch.load_on_host(&name("h3"), &names, &archive).unwrap_err();
    assert!(
        err.to_string().contains("`n2d host load` on host h3 failed (exit status 2): no machine named"),
        "{err}"
    );
}
