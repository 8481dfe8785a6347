//! User-mode networking against the fakes: addresses and API ports from the home's records,
//! nothing host-wide, the switch started with the first VM and stopped with the last, published
//! ports on machines and swarms (a swarm's port moves when the node holding it stops).

use super::*;
use n2d_spec::ports::PortForward;
use n2d_vm::Nic;

fn user_spec(n: &str) -> MachineSpec {
    MachineSpec { bridge: n2d_spec::machine::USER_NETWORK.into(), ..spec(n) }
}

fn forwards_of(k: &Kit, n: &str) -> Vec<PortForward> {
    match k.vms().last_launch(n).expect("started").nic {
        Nic::User { forwards, .. } => forwards,
        other => panic!("{n} booted on {other:?}"),
    }
}

fn network_dir(k: &Kit) -> std::path::PathBuf {
    k.orch.home.user_network_dir()
}

#[test]
fn user_mode_machines_hold_nothing_host_wide_and_share_one_switch() {
    let k = kit();
    let a = k.orch.create_machine(&user_spec("a"), None, BOOT).unwrap();
    let b = k.orch.create_machine(&user_spec("b"), None, BOOT).unwrap();
    assert_eq!((a.ip, b.ip), (Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 3)));
    let (pa, pb) = (a.api_port.unwrap(), b.api_port.unwrap());
    assert!(pa != pb && n2d_net::user::API_PORTS.contains(&pa), "{pa} {pb}");
    assert_eq!(a.docker_host(), format!("tcp://127.0.0.1:{pa}"));
    assert_eq!(forwards_of(&k, "a"), [PortForward { host: pa, guest: 2376 }]);
    match k.vms().last_launch("b").unwrap().nic {
        Nic::User { switch, mac, uplink_mac, .. } => {
            assert_eq!(switch, network_dir(&k).join("switch"));
            assert_eq!(uplink_mac, mac.replacen("52:54:00", "52:54:01", 1));
        }
        other => panic!("{other:?}"),
    }
    assert!(!k.orch.net.state_file().exists(), "user mode wrote host-wide state");
    assert_eq!(k.host().links(), BTreeSet::from(["eth0".to_string(), "lo".to_string()]));
    assert!(network_dir(&k).join("switch").exists());

    // The switch stays while one machine runs, and goes with the last.
    k.orch.stop_machine(&name("a"), BOOT).unwrap();
    assert!(network_dir(&k).exists());
    k.orch.stop_machine(&name("b"), BOOT).unwrap();
    assert!(!network_dir(&k).exists(), "the switch outlived its last VM");
    // A restart keeps the address and the port.
    k.orch.start_machine(&name("a"), BOOT).unwrap();
    assert_eq!(forwards_of(&k, "a"), [PortForward { host: pa, guest: 2376 }]);
    assert!(network_dir(&k).exists());
    k.orch.remove_machine(&name("a"), true).unwrap();
    k.orch.remove_machine(&name("b"), true).unwrap();
    assert!(!network_dir(&k).exists());
    k.assert_host_clean();
}

#[test]
fn a_failed_user_mode_create_leaves_no_switch() {
    let k = kit();
    k.vms().fail_boot("a", BootFault::Timeout);
    assert!(k.orch.create_machine(&user_spec("a"), None, BOOT).is_err());
    k.assert_gone("a");
    assert!(!network_dir(&k).exists());
    assert_eq!(*k.orch.runner.switch_starts.lock().unwrap(), 1);
}

#[test]
fn published_ports_of_a_machine() {
    let k = kit();
    let mut s = user_spec("a");
    s.publish = vec![PortForward { host: 28080, guest: 80 }];
    let a = k.orch.create_machine(&s, None, BOOT).unwrap();
    let api = a.api_port.unwrap();
    assert_eq!(
        forwards_of(&k, "a"),
        [PortForward { host: api, guest: 2376 }, PortForward { host: 28080, guest: 80 }]
    );

    // Added live to the running VM, and kept for the next start.
    k.orch.publish_machine_port(&name("a"), PortForward { host: 28443, guest: 443 }).unwrap();
    assert_eq!(k.vms().count("forward a 28443:443"), 1);
    for taken in [28080, 28443, api] {
        let err = k.orch.publish_machine_port(&name("a"), PortForward { host: taken, guest: 1 }).unwrap_err();
        assert!(matches!(err, Error::PortHeld { .. }) && err.is_usage(), "{err}");
    }
    k.orch.stop_machine(&name("a"), BOOT).unwrap();
    k.orch.start_machine(&name("a"), BOOT).unwrap();
    assert!(forwards_of(&k, "a").contains(&PortForward { host: 28443, guest: 443 }));

    // QEMU refusing the port (something else took it) changes nothing.
    k.vms().fail_forward(28444);
    let refused = k.orch.publish_machine_port(&name("a"), PortForward { host: 28444, guest: 1 });
    assert!(matches!(refused, Err(Error::Vm(n2d_vm::VmError::Forward { .. }))), "{refused:?}");
    assert_eq!(k.orch.load_record(&name("a")).unwrap().spec.publish.len(), 2);

    k.orch.unpublish_machine_port(&name("a"), 28080).unwrap();
    assert_eq!(k.vms().count("unforward a 28080"), 1);
    assert!(matches!(
        k.orch.unpublish_machine_port(&name("a"), 28080),
        Err(Error::NoSuchPort { port: 28080, .. })
    ));

    // A machine on a bridge is reached at its own address: no forwards.
    k.create("h1").unwrap();
    let err = k.orch.publish_machine_port(&name("h1"), PortForward { host: 28081, guest: 80 }).unwrap_err();
    assert!(matches!(err, Error::PortNeedsUserNetwork { .. }) && err.is_usage(), "{err}");
}

#[test]
fn a_swarm_port_moves_to_a_running_node_when_its_holder_stops() {
    let k = kit();
    let spec = SwarmSpec {
        network: Some(n2d_spec::machine::USER_NETWORK.into()),
        publish: vec![PortForward { host: 28088, guest: 8080 }],
        ..swarm_spec(1, 2)
    };
    k.orch.create_swarm(&spec, &plan(&k, &spec), BOOT, false).unwrap();
    let mngr: MachineName = "n2d-mngr-0".parse().unwrap();
    let held = |k: &Kit| k.orch.load_swarm(&prefix()).unwrap().ports[0].node.clone();
    // The first manager boots with it.
    assert_eq!(held(&k), Some(mngr.clone()));
    assert!(forwards_of(&k, "n2d-mngr-0").contains(&PortForward { host: 28088, guest: 8080 }));
    assert!(!forwards_of(&k, "n2d-wrkr-0").contains(&PortForward { host: 28088, guest: 8080 }));

    k.orch.stop_machine(&mngr, BOOT).unwrap();
    assert_eq!(held(&k), Some(name("n2d-wrkr-0")));
    assert_eq!(k.vms().count("forward n2d-wrkr-0 28088:8080"), 1);
    // Back up, the manager does not take it back: the worker still holds it.
    k.orch.start_machine(&mngr, BOOT).unwrap();
    assert_eq!(held(&k), Some(name("n2d-wrkr-0")));

    // A second port on the same host port is refused; one on a bridge swarm too.
    let err = k.orch.publish_swarm_port(&prefix(), PortForward { host: 28088, guest: 1 }).unwrap_err();
    assert!(matches!(err, Error::PortHeld { .. }), "{err}");
    k.orch.publish_swarm_port(&prefix(), PortForward { host: 28089, guest: 80 }).unwrap();
    assert_eq!(k.orch.load_swarm(&prefix()).unwrap().ports.len(), 2);
    k.orch.unpublish_swarm_port(&prefix(), 28089).unwrap();

    // add-host cannot reach a user-mode swarm's managers.
    let host = n2d_store::ExternalHost {
        name: "ext".into(),
        docker_host: "tcp://10.0.0.9:2376".into(),
        tls: None,
        labels: Default::default(),
    };
    let mut record = k.orch.load_swarm(&prefix()).unwrap();
    let err = k.orch.add_external_host(&mut record, host).unwrap_err();
    assert!(matches!(err, Error::AddHostNeedsBridge { .. }) && err.is_usage(), "{err}");

    k.orch.remove_swarm(&prefix()).unwrap();
    assert!(!network_dir(&k).exists());
    k.assert_host_clean();
}

#[test]
fn publishing_on_a_bridge_swarm_is_refused_before_anything_is_made() {
    let k = kit();
    let spec = SwarmSpec { publish: vec![PortForward { host: 28090, guest: 80 }], ..swarm_spec(1, 1) };
    let err = k.orch.plan_swarm(&spec).unwrap_err();
    assert!(err.is_usage(), "{err}");
    k.assert_host_clean();
}

#[test]
fn a_user_mode_swarm_scales_up_and_down_on_its_switch() {
    let k = kit();
    let spec = SwarmSpec { network: Some(n2d_spec::machine::USER_NETWORK.into()), ..swarm_spec(1, 1) };
    k.orch.create_swarm(&spec, &plan(&k, &spec), BOOT, false).unwrap();
    let work = k.orch.plan_swarm_scale(&prefix(), Some(2), None).unwrap();
    k.orch.scale_swarm(work, BOOT).unwrap();
    let new = k.orch.load_record(&name("n2d-wrkr-1")).unwrap();
    assert!(new.spec.user_network() && new.api_port.is_some() && new.spec.publish.is_empty(), "{new:?}");
    assert_eq!(new.ip, Ipv4Addr::new(10, 77, 0, 4));
    assert_eq!(hostnames(&k), ["n2d-mngr-0", "n2d-wrkr-0", "n2d-wrkr-1"]);
    let work = k.orch.plan_swarm_scale(&prefix(), Some(0), None).unwrap();
    k.orch.scale_swarm(work, BOOT).unwrap();
    assert_eq!(hostnames(&k), ["n2d-mngr-0"]);
    assert!(network_dir(&k).exists(), "the switch went while the manager runs");
    assert!(!k.orch.net.state_file().exists());
    k.orch.remove_swarm(&prefix()).unwrap();
    k.assert_host_clean();
}
