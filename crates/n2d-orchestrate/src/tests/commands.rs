//! What the CLI's other commands ask of the orchestrator: a create's flags checked before
//! anything is made, `ls`, `logs`, `console`, `port`'s targets, `certs rotate`, a swarm's spec,
//! `swarm add-host` and `swarm load`'s checks, and what each error means for the exit status.

use super::*;
use crate::certs::{RotateRequest, Rotated};
use crate::inventory::MachineRequest;
use crate::swarm_request::{AddHost, SwarmRequest};
use crate::ErrorKind;

fn request() -> MachineRequest {
    MachineRequest {
        cpus: Some(1),
        memory: "512M".into(),
        disk: "1G".into(),
        network: Some("n2d0".into()),
        ..MachineRequest::default()
    }
}

#[test]
fn a_creates_flags_are_checked_before_anything_is_made() {
    let k = kit();
    let spec = k.orch.plan_machine(&name("h1"), &request()).unwrap();
    assert_eq!((spec.cpus, spec.memory, spec.image.as_str()), (1, ByteSize(512 << 20), ""));
    let err =
        k.orch.plan_machine(&name("h1"), &MachineRequest { memory: "lots".into(), ..request() }).unwrap_err();
    assert!(matches!(err, Error::Flag { flag: "--memory", .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Usage, "a bad --memory is the user's mistake");
    let err = k
        .orch
        .plan_machine(&name("h1"), &MachineRequest { labels: vec!["nokey".into()], ..request() })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err:?}");
    k.create("h1").unwrap();
    let err = k.orch.plan_machine(&name("h1"), &request()).unwrap_err();
    assert!(matches!(err, Error::MachineExists { .. }), "{err:?}");
    // The planned spec boots the kit's image.
    let spec = k.orch.plan_machine(&name("h2"), &request()).unwrap();
    let record = k.orch.create_machine_from(spec, Some("feed"), &Default::default(), BOOT).unwrap();
    assert_eq!(record.spec.image, IMAGE);
}

#[test]
fn ls_lists_states_unreadable_records_and_adopted_machines() {
    let k = kit();
    k.create("h1").unwrap();
    k.create("h2").unwrap();
    k.orch.stop_machine(&name("h2"), BOOT).unwrap();
    let dir = k.orch.home.machine_dir(&name("broken"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("machine.json"), b"garbage").unwrap();
    let listing = k.orch.list();
    let rows: Vec<(String, Option<VmState>)> =
        listing.machines.iter().map(|(n, m)| (n.clone(), m.as_ref().ok().map(|m| m.state))).collect();
    assert_eq!(
        rows,
        [
            ("broken".into(), None),
            ("h1".into(), Some(VmState::Running)),
            ("h2".into(), Some(VmState::Stopped))
        ]
    );
    assert!(listing.machines.iter().all(|(_, m)| m.as_ref().map_or(true, |m| m.newer_image.is_none())));
    assert!(listing.adopted.is_empty());
}

#[test]
fn logs_are_written_sanitized_from_their_last_lines() {
    let k = kit();
    k.create("h1").unwrap();
    let path = n2d_vm::serial_log::path(&k.orch.home.machine_dir(&name("h1")));
    std::fs::write(&path, b"one\ntwo\x1b[31m red\nthree\n").unwrap();
    let mut out = Vec::new();
    k.orch.write_log(&name("h1"), false, false, None, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("one\ntwo") && text.ends_with("three\n") && !text.contains('\x1b'), "{text:?}");
    let mut out = Vec::new();
    k.orch.write_log(&name("h1"), false, true, Some(1), &mut out).unwrap();
    assert_eq!(out, b"three\n");
    let err = k.orch.write_log(&name("nosuch"), false, false, None, &mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err:?}");
}

#[test]
fn the_console_of_a_stopped_machine_and_forwards_on_a_bridge_are_usage_errors() {
    let k = kit();
    k.create("h1").unwrap();
    let err = k.orch.machine_forwards(&name("h1")).unwrap_err();
    assert!(matches!(err, Error::Usage(_)) && err.to_string().contains("on bridge n2d0"), "{err:?}");
    k.orch.stop_machine(&name("h1"), BOOT).unwrap();
    let err = k.orch.attach_console(&name("h1"), &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert_eq!(err.to_string(), "h1 is not running: start it with `n2d start h1`");
    assert_eq!(err.kind(), ErrorKind::Usage);
    let err = k.orch.port_swarm("nosuch").unwrap_err();
    assert!(matches!(err, Error::NoSuchTarget(_)), "{err:?}");
    let err = k.orch.port_swarm("Not A Name!").unwrap_err();
    assert!(matches!(err, Error::NoSuchTarget(_)), "{err:?}");
}

#[test]
fn a_rotation_checks_every_name_first_and_reports_each_machine() {
    let k = kit();
    let rotate = |names: &[&str], all: bool, client: bool| {
        k.orch.rotate_certificates(&RotateRequest {
            names: names.iter().map(|n| name(n)).collect(),
            all,
            client,
            timeout: BOOT,
        })
    };
    let err = rotate(&[], false, false).unwrap_err();
    assert!(err.to_string().starts_with("name the machines"), "{err}");
    let err = rotate(&[], false, true).unwrap_err();
    assert_eq!(err.to_string(), "this home has no CA yet, so no client certificate to rotate");
    k.create("h1").unwrap();
    k.create("h2").unwrap();
    k.orch.stop_machine(&name("h2"), BOOT).unwrap();
    let err = rotate(&["h2", "nosuch"], false, false).unwrap_err();
    assert_eq!(err.to_string(), "no machine named nosuch (see `n2d ls`)");
    assert_eq!(err.kind(), ErrorKind::Usage);
    // h1 runs and its guest cannot be reached on its control port: it fails, h2 still rotates.
    k.vms().fail_control("h1");
    let report = rotate(&[], true, true).unwrap();
    assert!(report.client_serial.is_some());
    assert!(!report.new_ca);
    let results: Vec<(&str, bool)> = report.machines.iter().map(|(n, r)| (n.as_str(), r.is_ok())).collect();
    assert_eq!(results, [("h1", false), ("h2", true)]);
    assert!(matches!(report.machines[1].1, Ok(Rotated::NextStart { .. })));
    let contexts: Vec<&str> = report.contexts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(contexts, ["h1", "h2"], "a new client certificate goes into every machine's context");
    let err = report.result().unwrap_err();
    assert_eq!(crate::error::chain_text(&err), "n2d certs rotate: certificates not rotated: h1");
    assert_eq!(err.kind(), ErrorKind::Failure);
}

#[test]
fn a_swarms_spec_comes_from_its_flags_or_a_regular_cluster_file() {
    let k = kit();
    let req = SwarmRequest {
        managers: Some(1),
        workers: Some(2),
        network: Some("n2d0".into()),
        ..Default::default()
    };
    let spec = k.orch.swarm_spec(&req).unwrap();
    assert_eq!((spec.managers, spec.workers, spec.network.as_deref()), (1, 2, Some("n2d0")));
    let file = k.dir.path().join("cluster.yml");
    std::fs::write(&file, "prefix: web\nmanagers: 3\nworkers: 0\nnetwork: n2d0\n").unwrap();
    let spec = k.orch.swarm_spec(&SwarmRequest { file: Some(file.clone()), ..Default::default() }).unwrap();
    assert_eq!((spec.prefix.as_str(), spec.managers), ("web", 3));
    std::fs::write(&file, "managers: [\n").unwrap();
    let err = k.orch.swarm_spec(&SwarmRequest { file: Some(file), ..Default::default() }).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err:?}");
    let fifo = k.dir.path().join("fifo.yml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let err = k.orch.swarm_spec(&SwarmRequest { file: Some(fifo), ..Default::default() }).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "a FIFO is refused, not read: {err:?}");
    let err = k.orch.swarm_spec(&SwarmRequest { labels: vec!["bad".into()], ..req.clone() }).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err:?}");
}

#[test]
fn an_existing_swarm_is_fine_only_when_all_its_nodes_are_ready() {
    let k = kit();
    make_swarm(&k, 1, 1);
    let record = k.orch.load_swarm(&prefix()).unwrap();
    assert_eq!(k.orch.check_existing_swarm(&record).unwrap(), 2);
    let mut more = record.clone();
    more.workers.push(name("n2d-wrkr-9"));
    let err = k.orch.check_existing_swarm(&more).unwrap_err();
    assert!(err.to_string().contains("only 2 of 3 nodes are Ready"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Usage);
}

#[test]
fn add_host_needs_all_of_tls_and_a_dns_name() {
    let k = kit();
    make_swarm(&k, 1, 0);
    let add = |req: AddHost| k.orch.add_host(&req).unwrap_err();
    let base = AddHost {
        swarm: prefix(),
        host: "tcp://192.168.1.9:2376".into(),
        host_name: None,
        tlscacert: None,
        tlscert: None,
        tlskey: None,
        labels: Vec::new(),
    };
    let err = add(base.clone());
    assert!(err.to_string().starts_with("add-host sends the swarm's join token"), "{err}");
    let err = add(AddHost { tlscacert: Some("ca.pem".into()), ..base.clone() });
    assert_eq!(err.to_string(), "give all three of --tlscacert, --tlscert and --tlskey");
    let tls = AddHost {
        tlscacert: Some("ca.pem".into()),
        tlscert: Some("cert.pem".into()),
        tlskey: Some("key.pem".into()),
        ..base.clone()
    };
    let err = add(AddHost { host_name: Some("../etc".into()), ..tls.clone() });
    assert!(err.to_string().starts_with("invalid host name"), "{err}");
    let err = add(AddHost { labels: vec!["nokey".into()], ..tls.clone() });
    assert_eq!(err.kind(), ErrorKind::Usage, "{err:?}");
    let err = add(AddHost { swarm: "other".parse().unwrap(), ..tls });
    assert!(matches!(err, Error::NoSuchSwarm(_)), "{err:?}");
    for err in [add(base.clone()), add(AddHost { host_name: Some("-x".into()), ..base })] {
        assert_eq!(err.kind(), ErrorKind::Usage);
    }
}

#[test]
fn only_a_docker_save_archive_is_loaded() {
    let k = kit();
    make_swarm(&k, 1, 0);
    let file = k.dir.path().join("not.tar");
    std::fs::write(&file, b"not a tar").unwrap();
    let err = k.orch.load_images(&prefix(), &file, |_| {}).unwrap_err();
    assert!(matches!(err, Error::Usage(_)), "{err:?}");
    assert_eq!(k.cluster.loaded("n2d-mngr-0"), None);
}

#[test]
fn an_errors_kind_is_found_through_every_layer() {
    use n2d_store::StoreError;
    let interrupted = StoreError::LockInterrupted { path: "/h/lock".into() };
    let net = Error::Net(n2d_net::NetError::HostState { path: "/run/n2d".into(), source: interrupted });
    assert_eq!(net.kind(), ErrorKind::Interrupted);
    assert_eq!(Error::Export(n2d_export::ExportError::Interrupted).kind(), ErrorKind::Interrupted);
    assert_eq!(Error::Image(n2d_image::ImageError::EmptyId).kind(), ErrorKind::Usage);
    assert_eq!(Error::Failed("x".into()).kind(), ErrorKind::Failure);
    let node = Error::CreateNode {
        name: "n1".into(),
        source: Box::new(Error::Vm(VmError::Interrupted { name: "n1".into() })),
    };
    assert_eq!(node.kind(), ErrorKind::Interrupted);
    // A lower error wrapped in another (as the CLI's context does) keeps its kind.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot start m1")]
    struct Wrapped(#[source] StoreError);
    let wrapped = Wrapped(StoreError::LockInterrupted { path: "/h/lock".into() });
    assert_eq!(ErrorKind::of_chain(&wrapped), ErrorKind::Interrupted);
    let io = std::io::Error::other("disk on fire");
    assert_eq!(ErrorKind::of_chain(&io), ErrorKind::Failure);
}

#[test]
fn a_swarm_is_created_on_the_image_named_and_an_unknown_one_makes_nothing() {
    let k = kit();
    let spec = swarm_spec(1, 1);
    let plan = k.orch.plan_swarm(&spec).unwrap();
    let err =
        k.orch.create_swarm_from(&spec, plan, Some("beef"), &Default::default(), BOOT, false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err:?}");
    assert!(k.orch.find_swarm(&prefix()).unwrap().is_none());
    k.assert_host_clean();
    let plan = k.orch.plan_swarm(&spec).unwrap();
    let record =
        k.orch.create_swarm_from(&spec, plan, Some("feed"), &Default::default(), BOOT, false).unwrap();
    assert_eq!(record.managers.len() + record.workers.len(), 2);
    let node = k.orch.load_record(&record.managers[0]).unwrap();
    assert_eq!(node.spec.image, IMAGE);
}

#[test]
fn start_all_starts_the_stopped_machines_and_names_those_that_did_not_start() {
    let k = kit();
    for n in ["h1", "h2", "h3"] {
        k.create(n).unwrap();
    }
    k.orch.stop_machine(&name("h2"), BOOT).unwrap();
    k.orch.stop_machine(&name("h3"), BOOT).unwrap();
    k.vms().fail_start("h3");
    let dir = k.orch.home.machine_dir(&name("broken"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("machine.json"), b"garbage").unwrap();
    let all = k.orch.start_all(BOOT);
    assert_eq!(all.plan.running, [name("h1")]);
    assert_eq!(all.plan.unreadable.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["broken"]);
    let started: Vec<(&str, bool)> = all.started.iter().map(|(n, r)| (n.as_str(), r.is_ok())).collect();
    assert_eq!(started, [("h2", true), ("h3", false)]);
    assert!(k.said.lines().contains(&"Starting 2 machines: h2, h3".to_string()), "{:?}", k.said.lines());
    let err = all.result().unwrap_err();
    assert_eq!(err.to_string(), "2 of 3 machines did not start: broken, h3");
    assert_eq!(err.kind(), ErrorKind::Failure);
    assert_eq!(k.orch.machine_state(&name("h2")), VmState::Running);
    // A home with nothing stopped: nothing to start, nothing said.
    let k2 = kit();
    let none = k2.orch.start_all(BOOT);
    assert!(none.started.is_empty() && none.result().is_ok());
    assert!(k2.said.lines().is_empty());
}

#[test]
fn stop_says_whether_the_machine_was_running_and_an_unknown_one_is_a_usage_error() {
    let k = kit();
    k.create("h1").unwrap();
    assert_eq!(k.orch.stop_machine(&name("h1"), BOOT).unwrap(), crate::StopOutcome::Graceful);
    assert_eq!(k.orch.stop_machine(&name("h1"), BOOT).unwrap(), crate::StopOutcome::AlreadyStopped);
    assert_eq!(k.orch.machine_state(&name("h1")), VmState::Stopped);
    let err = k.orch.stop_machine(&name("nosuch"), BOOT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err:?}");
    // `n2d restart` is a stop, then a start.
    assert!(k.orch.start_machine(&name("h1"), BOOT).unwrap());
    assert!(!k.orch.start_machine(&name("h1"), BOOT).unwrap(), "already running");
}

#[test]
fn an_archive_is_loaded_into_every_node_of_the_swarm() {
    let k = kit();
    make_swarm(&k, 1, 1);
    let archive = k.dir.path().join("images.tar.gz");
    let mut bytes = vec![0x1f, 0x8b, 0x08];
    bytes.resize(3000, 0);
    std::fs::write(&archive, &bytes).unwrap();
    let loaded = k.orch.load_images(&prefix(), &archive, |_| {}).unwrap();
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    assert_eq!(k.cluster.loaded("n2d-mngr-0"), Some(3000));
    assert_eq!(k.cluster.loaded("n2d-wrkr-0"), Some(3000));
    let err = k.orch.load_images(&"nosuch".parse().unwrap(), &archive, |_| {}).unwrap_err();
    assert!(matches!(err, Error::NoSuchSwarm(_)), "{err:?}");
}

#[test]
fn the_swarms_of_the_home_are_listed_and_a_damaged_record_is_named() {
    let k = kit();
    make_swarm(&k, 1, 0);
    assert_eq!(k.orch.swarm_names().into_iter().map(|n| n.unwrap().to_string()).collect::<Vec<_>>(), ["n2d"]);
    assert!(k.orch.find_swarm(&prefix()).unwrap().is_some());
    assert!(k.orch.find_swarm(&"other".parse().unwrap()).unwrap().is_none());
    let file = k.orch.home.root().join("swarms").join("n2d.json");
    std::fs::write(&file, b"{").unwrap();
    let err = k.orch.find_swarm(&prefix()).unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
}

/// A host where every check passes, with the kit's image.
fn ready_host() -> crate::preflight::fake::FakeHost {
    crate::preflight::fake::FakeHost { images: vec![IMAGE.into()], ..Default::default() }
}

/// A host that cannot run VMs (no QEMU).
fn host_without_qemu() -> crate::preflight::fake::FakeHost {
    crate::preflight::fake::FakeHost { qemu: None, ..ready_host() }
}

#[test]
fn a_create_checks_the_host_first_and_a_host_not_ready_makes_nothing() {
    let k = kit();
    let err = k
        .orch
        .create_machine_checked(
            &host_without_qemu(),
            &name("h1"),
            &request(),
            Some("feed"),
            &Default::default(),
            BOOT,
        )
        .unwrap_err();
    assert!(matches!(err, Error::NotReady(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Failure, "a host not ready exits 1");
    assert!(err.to_string().starts_with("this host is not ready for n2d machines"), "{err}");
    k.assert_gone("h1");
    k.assert_host_clean();
    // The flags are checked before the host.
    let bad = MachineRequest { memory: "lots".into(), ..request() };
    let err = k
        .orch
        .create_machine_checked(
            &host_without_qemu(),
            &name("h1"),
            &bad,
            Some("feed"),
            &Default::default(),
            BOOT,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Flag { flag: "--memory", .. }), "{err:?}");
}

#[test]
fn a_create_says_the_hosts_warnings_then_the_insecure_tcp_one_then_creates() {
    let k = kit();
    let host =
        crate::preflight::fake::FakeHost { docker: crate::preflight::ToolState::Missing, ..ready_host() };
    let req = MachineRequest { insecure_tcp: true, ..request() };
    let record = k
        .orch
        .create_machine_checked(&host, &name("h1"), &req, Some("feed"), &Default::default(), BOOT)
        .unwrap();
    assert_eq!(record.spec.image, IMAGE);
    assert!(record.spec.insecure_tcp);
    let said = k.said.lines();
    assert!(said[0].starts_with("warning: no docker CLI"), "{said:?}");
    assert!(said[1].starts_with("WARNING: --insecure-tcp:"), "{said:?}");
}

#[test]
fn a_swarm_create_checks_the_host_before_any_node_and_an_existing_swarm_is_reported() {
    let k = kit();
    let req = SwarmRequest {
        managers: Some(1),
        workers: Some(1),
        network: Some("n2d0".into()),
        ..Default::default()
    };
    let err = k
        .orch
        .create_swarm_checked(&host_without_qemu(), &req, Some("feed"), &Default::default(), BOOT, false)
        .unwrap_err();
    assert!(matches!(err, Error::NotReady(_)), "{err:?}");
    assert!(k.orch.find_swarm(&prefix()).unwrap().is_none());
    k.assert_host_clean();
    let created = k
        .orch
        .create_swarm_checked(&ready_host(), &req, Some("feed"), &Default::default(), BOOT, false)
        .unwrap();
    let crate::swarm_request::SwarmCreated::Created(record) = created else { panic!("{created:?}") };
    assert_eq!(record.managers.len() + record.workers.len(), 2);
    // Once it exists, a second create checks it (not the host) and leaves it.
    let again = k
        .orch
        .create_swarm_checked(&host_without_qemu(), &req, Some("feed"), &Default::default(), BOOT, false)
        .unwrap();
    assert!(matches!(again, crate::swarm_request::SwarmCreated::Existing { ready: 2, .. }), "{again:?}");
}

#[test]
fn a_scale_that_adds_nodes_checks_the_host_first_and_one_that_changes_nothing_says_so() {
    use crate::swarm_request::Scaled;
    let k = kit();
    make_swarm(&k, 1, 1);
    let same = k.orch.scale_swarm_checked(&host_without_qemu(), &prefix(), Some(1), None, &[], BOOT).unwrap();
    assert!(matches!(same, Scaled::Unchanged { managers: 1, workers: 1 }), "{same:?}");
    let err =
        k.orch.scale_swarm_checked(&host_without_qemu(), &prefix(), Some(2), None, &[], BOOT).unwrap_err();
    assert!(matches!(err, Error::NotReady(_)), "{err:?}");
    assert_eq!(k.orch.load_swarm(&prefix()).unwrap().workers.len(), 1, "nothing added");
    let scaled = k.orch.scale_swarm_checked(&ready_host(), &prefix(), Some(2), None, &[], BOOT).unwrap();
    let Scaled::Scaled(record) = scaled else { panic!("{scaled:?}") };
    assert_eq!(record.workers.len(), 2);
}
