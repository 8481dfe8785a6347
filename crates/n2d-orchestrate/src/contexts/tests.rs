use super::*;
use crate::Quiet;
use n2d_exec::RecordingRunner;
use n2d_swarm::TlsPaths;
use std::path::PathBuf;

fn tls_endpoint(name: &str, certs: &str) -> Endpoint {
    let certs = PathBuf::from(certs);
    Endpoint {
        name: name.into(),
        ip: [10, 77, 0, 2].into(),
        docker_host: "tcp://10.77.0.2:2376".into(),
        tls: Some(TlsPaths {
            ca: certs.join("ca.pem"),
            cert: certs.join("cert.pem"),
            key: certs.join("key.pem"),
        }),
    }
}

/// Homes that do not exist keep their path as given (no canonical form to find).
const HOME_A: &str = "/nonexistent/home-a";
const HOME_B: &str = "/nonexistent/home-b";

fn inspect_json(description: &str) -> String {
    let description = serde_json::to_string(description).unwrap();
    format!(
        r#"[{{"Name":"x","Metadata":{{"Description":{description}}},"Endpoints":{{"docker":{{"Host":"tcp://10.77.0.9:2376"}}}}}}]"#
    )
}

const NOT_FOUND: &str =
    "context \"h1\": context not found: open /d/contexts/meta/ab/meta.json: no such file or directory";

fn second_name(name: &str, home: &str) -> String {
    format!("{name}-{}", Owner::machine(name, Path::new(home)).home_id)
}

#[test]
fn the_description_names_the_home_and_the_second_name_hashes_it() {
    let a = Owner::machine("h1", Path::new(HOME_A));
    assert_eq!(a.description(), "n2d machine h1 (home /nonexistent/home-a)");
    assert_eq!(
        Owner::swarm("demo", Path::new(HOME_A)).description(),
        "n2d swarm demo (home /nonexistent/home-a)"
    );
    let b = Owner::machine("h1", Path::new(HOME_B));
    assert_eq!(a.candidates()[0], "h1");
    assert_ne!(a.candidates()[1], b.candidates()[1], "two homes, two second names");
    assert!(a.candidates()[1].starts_with("h1-") && a.candidates()[1].len() == 3 + 8);
    // Stable: the same home always gets the same name (FNV-1a, not a per-build hasher).
    assert_eq!(home_id(Path::new("/root/.local/share/n2d")), home_id(Path::new("/root/.local/share/n2d")));
    assert_eq!(home_id(Path::new("/root/.local/share/n2d")), "77302a86", "renames every context");
    // Another home's description, an older n2d's and the user's own are told apart.
    assert!(a.is_n2d_for_this_name(&b.description()));
    assert!(a.is_n2d_for_this_name("n2d machine h1"));
    assert!(!a.is_n2d_for_this_name("n2d machine h10 (home /x)"));
    assert!(!a.is_n2d_for_this_name("n2d swarm h1 (home /x)"));
    assert!(!a.is_n2d_for_this_name("my laptop's engine"));
}

#[test]
fn a_symlinked_home_is_the_same_owner() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
    assert_eq!(Owner::machine("h1", &real), Owner::machine("h1", &dir.path().join("link")));
}

#[test]
fn creates_a_tls_context_for_a_machine() {
    let r = RecordingRunner::default();
    r.answer("context inspect", Err(NOT_FOUND));
    let spec = ContextSpec::machine(&tls_endpoint("h1", "/home/n2d/certs"), Path::new(HOME_A));
    assert_eq!(ensure(&r, &spec).unwrap(), Outcome::Created { name: "h1".into(), taken: None });
    let second = second_name("h1", HOME_A);
    assert_eq!(
        r.calls(),
        [
            "docker context inspect h1".to_string(),
            format!("docker context inspect {second}"),
            "docker context create h1 --description n2d machine h1 (home /nonexistent/home-a) --docker host=tcp://10.77.0.2:2376,ca=/home/n2d/certs/ca.pem,cert=/home/n2d/certs/cert.pem,key=/home/n2d/certs/key.pem".to_string(),
        ]
    );
}

#[test]
fn plain_tcp_machines_get_a_host_only() {
    let ep = Endpoint {
        name: "h2".into(),
        ip: [10, 77, 0, 3].into(),
        docker_host: "tcp://10.77.0.3:2375".into(),
        tls: None,
    };
    assert_eq!(ContextSpec::machine(&ep, Path::new(HOME_A)).docker_arg(), "host=tcp://10.77.0.3:2375");
}

#[test]
fn fields_with_commas_are_quoted() {
    let spec = ContextSpec::machine(&tls_endpoint("h1", "/odd,dir"), Path::new(HOME_A));
    assert_eq!(
        spec.docker_arg(),
        "host=tcp://10.77.0.2:2376,\"ca=/odd,dir/ca.pem\",\"cert=/odd,dir/cert.pem\",\"key=/odd,dir/key.pem\""
    );
}

#[test]
fn this_homes_context_is_updated_not_recreated() {
    let r = RecordingRunner::default();
    r.answer("context inspect", Ok(&inspect_json("n2d swarm demo (home /nonexistent/home-a)")));
    let spec = ContextSpec::swarm("demo", &tls_endpoint("demo-mngr-0", "/c"), Path::new(HOME_A));
    assert_eq!(ensure(&r, &spec).unwrap(), Outcome::Updated { name: "demo".into() });
    let calls = r.calls();
    assert_eq!(calls.len(), 3);
    assert!(calls[2].starts_with("docker context update demo --description n2d swarm demo (home /nonexistent/home-a) --docker host=tcp://10.77.0.2:2376,ca=/c/ca.pem"), "{}", calls[2]);
}

#[test]
fn another_homes_context_is_never_touched_and_this_home_gets_the_second_name() {
    let second = second_name("h1", HOME_B);
    for theirs in ["n2d machine h1 (home /nonexistent/home-a)", "n2d machine h1"] {
        let r = RecordingRunner::default();
        // (Answers match by substring: the second name's first.)
        r.answer(&format!("context inspect {second}"), Err(NOT_FOUND));
        r.answer("context inspect h1", Ok(&inspect_json(theirs)));
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_B));
        assert_eq!(
            ensure(&r, &spec).unwrap(),
            Outcome::Created { name: second.clone(), taken: Some(theirs.into()) }
        );
        assert!(r.calls()[2].starts_with(&format!(
            "docker context create {second} --description n2d machine h1 (home /nonexistent/home-b)"
        )));
        // rm in home B: nothing of A's is removed.
        let r = RecordingRunner::default();
        r.answer(&format!("context inspect {second}"), Err(NOT_FOUND));
        r.answer("context inspect h1", Ok(&inspect_json(theirs)));
        assert_eq!(remove(&r, &Owner::machine("h1", Path::new(HOME_B))).unwrap(), Outcome::Absent);
        assert!(r.calls().iter().all(|c| c.starts_with("docker context inspect")), "{:?}", r.calls());
    }
    // Both names held by other homes: none.
    let r = RecordingRunner::default();
    r.answer("context inspect", Ok(&inspect_json("n2d machine h1 (home /elsewhere)")));
    let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_B));
    assert_eq!(ensure(&r, &spec).unwrap(), Outcome::Taken { names: vec!["h1".into(), second] });
    assert!(register(&r, &Quiet::default(), &spec, "n2d env h1").is_none());
}

#[test]
fn the_second_name_is_kept_once_the_first_is_free() {
    let second = second_name("h1", HOME_B);
    let r = RecordingRunner::default();
    r.answer(
        &format!("context inspect {second}"),
        Ok(&inspect_json("n2d machine h1 (home /nonexistent/home-b)")),
    );
    r.answer("context inspect h1", Err(NOT_FOUND));
    let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_B));
    assert_eq!(ensure(&r, &spec).unwrap(), Outcome::Updated { name: second.clone() });
    assert_eq!(current_host(&r, &spec.owner).as_deref(), Some("tcp://10.77.0.9:2376"));
    assert_eq!(remove(&r, &spec.owner).unwrap(), Outcome::Removed { names: vec![second.clone()] });
    assert_eq!(r.calls().last().unwrap(), &format!("docker context rm -f {second}"));
}

#[test]
fn a_foreign_context_is_left_alone() {
    let r = RecordingRunner::default();
    r.answer("context inspect", Ok(&inspect_json("my laptop's engine")));
    let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_A));
    assert_eq!(
        ensure(&r, &spec).unwrap(),
        Outcome::Foreign { name: "h1".into(), description: "my laptop's engine".into() }
    );
    assert_eq!(remove(&r, &spec.owner).unwrap(), Outcome::Absent);
    assert!(r.calls().iter().all(|c| c.starts_with("docker context inspect")), "{:?}", r.calls());
    // A swarm's context is not a machine's of the same name, and the other way round.
    let r = RecordingRunner::default();
    r.answer("context inspect", Ok(&inspect_json("n2d swarm h1 (home /nonexistent/home-a)")));
    assert!(matches!(ensure(&r, &spec).unwrap(), Outcome::Foreign { .. }));
    assert_eq!(remove(&r, &spec.owner).unwrap(), Outcome::Absent);
    assert!(r.calls().iter().all(|c| c.starts_with("docker context inspect")), "{:?}", r.calls());
}

#[test]
fn current_host_is_read_from_this_homes_contexts_only() {
    let demo = Owner::swarm("demo", Path::new(HOME_A));
    let r = RecordingRunner::default();
    r.answer("context inspect", Ok(&inspect_json("n2d swarm demo (home /nonexistent/home-a)")));
    assert_eq!(current_host(&r, &demo).as_deref(), Some("tcp://10.77.0.9:2376"));
    assert_eq!(current_host(&r, &Owner::machine("demo", Path::new(HOME_A))), None, "not this swarm's");
    assert_eq!(current_host(&r, &Owner::swarm("demo", Path::new(HOME_B))), None, "not this home's");
    let r = RecordingRunner::default();
    r.answer("context inspect", Err(NOT_FOUND));
    assert_eq!(current_host(&r, &demo), None);
}

#[test]
fn rm_removes_only_what_this_home_made() {
    let owner = Owner::machine("h1", Path::new(HOME_A));
    let r = RecordingRunner::default();
    r.answer(&format!("context inspect {}", second_name("h1", HOME_A)), Err(NOT_FOUND));
    r.answer("context inspect h1", Ok(&inspect_json(&owner.description())));
    assert_eq!(remove(&r, &owner).unwrap(), Outcome::Removed { names: vec!["h1".into()] });
    assert_eq!(r.calls().last().unwrap(), "docker context rm -f h1");

    let r = RecordingRunner::default();
    r.answer("context inspect", Err(NOT_FOUND));
    assert_eq!(remove(&r, &owner).unwrap(), Outcome::Absent);
    assert_eq!(r.calls().len(), 2);
}

#[test]
fn no_docker_cli_is_an_outcome_not_an_error() {
    // A runner that finds no docker binary, like SystemRunner on a host without it.
    struct NoDocker;
    impl Runner for NoDocker {
        fn run(&self, cmd: &Cmd) -> Result<Vec<u8>, ExecError> {
            Err(ExecError::NotInstalled { program: cmd.program.clone(), package: cmd.package })
        }
    }
    let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_A));
    assert_eq!(ensure(&NoDocker, &spec).unwrap(), Outcome::NoDockerCli);
    assert_eq!(remove(&NoDocker, &spec.owner).unwrap(), Outcome::NoDockerCli);
    assert!(register(&NoDocker, &Quiet::default(), &spec, "n2d env h1").is_none());
    unregister(&NoDocker, &Quiet::default(), &spec.owner);
}

#[test]
fn other_failures_are_errors_that_register_only_reports() {
    let r = RecordingRunner::default();
    r.answer("context inspect", Err(NOT_FOUND));
    r.answer("context create", Err("unable to create docker endpoint config: ca.pem seems invalid"));
    let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_A));
    let err = ensure(&r, &spec).unwrap_err().to_string();
    assert!(err.contains("ca.pem seems invalid"), "{err}");
    assert!(register(&r, &Quiet::default(), &spec, "n2d env h1").is_none());

    let r = RecordingRunner::default();
    r.answer("context inspect", Err("permission denied"));
    assert!(ensure(&r, &spec).is_err());
    assert!(remove(&r, &spec.owner).is_err());
}

#[test]
fn names_the_docker_cli_refuses_are_skipped() {
    assert!(valid_name("h1") && valid_name("n2d") && valid_name("a-b.c_d+e"));
    assert!(!valid_name("a") && !valid_name("default") && !valid_name("-ab") && !valid_name(""));
    // A one-letter machine has only the second name.
    let owner = Owner::machine("a", Path::new(HOME_A));
    assert_eq!(owner.candidates(), [second_name("a", HOME_A)]);
    let r = RecordingRunner::default();
    let spec = ContextSpec::machine(&tls_endpoint("-", "/c"), Path::new(HOME_A));
    assert_eq!(ensure(&r, &spec).unwrap(), Outcome::InvalidName);
    assert_eq!(remove(&r, &spec.owner).unwrap(), Outcome::Absent);
    assert!(r.calls().is_empty());
}

#[test]
fn register_says_why_it_registered_nothing_or_another_name() {
    let second = second_name("h1", HOME_B);
    let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_B));
    // Both names held by other homes.
    let r = RecordingRunner::default();
    r.answer("context inspect", Ok(&inspect_json("n2d machine h1 (home /elsewhere)")));
    let said = Quiet::default();
    assert_eq!(register(&r, &said, &spec, "n2d env h1"), None);
    assert_eq!(
        said.lines(),
        [format!(
            "warning: the docker contexts h1 and {second} belong to other n2d homes: left as they are; use `n2d env h1`"
        )]
    );
    // The plain name is another home's: the second one, said.
    let r = RecordingRunner::default();
    r.answer(&format!("context inspect {second}"), Err(NOT_FOUND));
    r.answer("context inspect h1", Ok(&inspect_json("n2d machine h1")));
    let said = Quiet::default();
    assert_eq!(register(&r, &said, &spec, "n2d env h1"), Some(second.clone()));
    assert_eq!(
        said.lines(),
        [format!(
            "note: the docker context \"h1\" is another n2d home's, or an older n2d's (\"n2d machine h1\"): this one's is {second:?}"
        )]
    );
    // The user's own.
    let r = RecordingRunner::default();
    r.answer("context inspect", Ok(&inspect_json("my laptop's engine")));
    let said = Quiet::default();
    assert_eq!(register(&r, &said, &spec, "n2d env h1"), None);
    assert_eq!(
        said.lines(),
        ["warning: a docker context named \"h1\" already exists and is not n2d's (\"my laptop's engine\"): left as it is; use `n2d env h1`, or remove it (`docker context rm h1`) and run this again"]
    );
    // A name the docker CLI refuses.
    let said = Quiet::default();
    let bad = ContextSpec::machine(&tls_endpoint("-", "/c"), Path::new(HOME_A));
    assert_eq!(register(&RecordingRunner::default(), &said, &bad, "n2d env -"), None);
    assert!(
        said.lines()[0].starts_with("note: \"-\" is not a name the docker CLI accepts"),
        "{:?}",
        said.lines()
    );
    // Made or updated: nothing to say.
    let r = RecordingRunner::default();
    r.answer("context inspect", Err(NOT_FOUND));
    let said = Quiet::default();
    assert_eq!(register(&r, &said, &spec, "n2d env h1"), Some("h1".into()));
    assert!(said.lines().is_empty(), "{:?}", said.lines());
}

#[test]
fn register_and_unregister_say_failures_as_one_line_with_their_causes() {
    let r = RecordingRunner::default();
    r.answer("context inspect", Err(NOT_FOUND));
    r.answer("context create", Err("ca.pem seems invalid"));
    let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_A));
    let said = Quiet::default();
    assert_eq!(register(&r, &said, &spec, "n2d env h1"), None);
    let line = &said.lines()[0];
    assert!(
        line.starts_with("warning: cannot register docker context \"h1\": `docker context create h1 "),
        "{line}"
    );
    assert!(line.ends_with("failed (exit status: 1): ca.pem seems invalid; use `n2d env h1`"), "{line}");

    let r = RecordingRunner::default();
    r.answer("context inspect", Err("permission denied"));
    let said = Quiet::default();
    unregister(&r, &said, &spec.owner);
    assert_eq!(
        said.lines(),
        ["warning: cannot remove docker context \"h1\": `docker context inspect h1` failed (exit status: 1): permission denied"]
    );
}

mod swarm_contexts {
    use super::*;
    use crate::Orchestrator;
    use n2d_spec::machine::{ByteSize, MachineName, MachineSpec};
    use n2d_store::{MachineRecord, SwarmRecord};
    use n2d_swarm::fake::Cluster;
    use n2d_vm::fake::FakeHypervisor;

    type TestOrchestrator = Orchestrator<RecordingRunner, FakeHypervisor, Cluster>;

    /// A user-mode manager of swarm `demo`, its engine on 127.0.0.1:`port`.
    fn manager(orch: &TestOrchestrator, name: &str, port: u16) -> MachineRecord {
        let name: MachineName = name.parse().unwrap();
        let record = MachineRecord {
            spec: MachineSpec {
                name,
                cpus: 1,
                memory: ByteSize(512 << 20),
                disk: ByteSize(1 << 30),
                bridge: n2d_spec::machine::USER_NETWORK.into(),
                addresses: None,
                image: "feedface".into(),
                insecure_tcp: false,
                labels: Default::default(),
                publish: Vec::new(),
                expose: false,
                mounts: Vec::new(),
            },
            ip: [10, 0, 2, 15].into(),
            prefix_len: 24,
            gateway: [10, 0, 2, 2].into(),
            mac: "52:54:00:12:34:56".into(),
            tap: String::new(),
            swarm: Some("demo".into()),
            api_port: Some(port),
            warm_from: None,
        };
        orch.home.save_machine(&record).unwrap();
        record
    }

    fn demo() -> SwarmRecord {
        serde_json::from_str(r#"{"prefix":"demo","managers":["demo-m1","demo-m2"]}"#).unwrap()
    }

    fn context_json(description: &str, host: &str) -> String {
        serde_json::json!([{"Name": "demo", "Metadata": {"Description": description}, "Endpoints": {"docker": {"Host": host}}}])
            .to_string()
    }

    #[test]
    fn the_context_names_its_manager_and_follows_one_that_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (orch, said) = crate::tests::recording_orchestrator(dir.path());
        let m1 = manager(&orch, "demo-m1", 2001);
        let m2 = manager(&orch, "demo-m2", 2002);
        let ours = Owner::swarm("demo", orch.home.root()).description();
        orch.runner.answer("context inspect demo", Ok(&context_json(&ours, "tcp://127.0.0.1:2001")));
        let context = orch.swarm_context(&demo());
        assert_eq!(context.host.as_deref(), Some("tcp://127.0.0.1:2001"));
        assert_eq!(context.manager, Some(m1.spec.name.clone()));

        // The manager it names answers: nothing to do.
        assert_eq!(orch.repoint_swarm_context(&context, &demo(), &m1), None);
        assert!(orch.runner.calls().iter().all(|c| c.starts_with("docker context inspect")));
        // Another one answers: the context follows it, and the note says so.
        let note = orch.repoint_swarm_context(&context, &demo(), &m2).unwrap();
        assert_eq!(
            note,
            "note: docker context demo pointed at tcp://127.0.0.1:2001, where no manager of the swarm answers; it now points at demo-m2 (tcp://127.0.0.1:2002)"
        );
        let calls = orch.runner.calls();
        assert!(calls.last().unwrap().starts_with("docker context update demo "), "{calls:?}");
        assert!(calls.last().unwrap().contains("host=tcp://127.0.0.1:2002"), "{calls:?}");
        assert!(said.lines().is_empty(), "{:?}", said.lines());

        orch.unregister_swarm_context(&"demo".parse().unwrap());
        // (The answer matches both names here, so both look like this home's.)
        assert!(orch.runner.calls().contains(&"docker context rm -f demo".to_string()));
    }

    #[test]
    fn a_context_not_this_homes_is_neither_read_nor_repointed() {
        let dir = tempfile::tempdir().unwrap();
        let (orch, _) = crate::tests::recording_orchestrator(dir.path());
        manager(&orch, "demo-m1", 2001);
        let m2 = manager(&orch, "demo-m2", 2002);
        orch.runner.answer("context inspect", Ok(&context_json("my own", "tcp://127.0.0.1:2001")));
        let context = orch.swarm_context(&demo());
        assert_eq!(context, crate::contexts::swarm::SwarmContext::default());
        assert_eq!(orch.repoint_swarm_context(&context, &demo(), &m2), None);
        assert!(orch.runner.calls().iter().all(|c| c.starts_with("docker context inspect")));
    }

    #[test]
    fn swarm_env_needs_a_known_swarm() {
        let dir = tempfile::tempdir().unwrap();
        let (orch, _) = crate::tests::recording_orchestrator(dir.path());
        let err = orch.swarm_env(&"nosuch".parse().unwrap()).unwrap_err();
        assert!(err.is_usage(), "{err:?}");
    }
}
