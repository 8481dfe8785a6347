//! Kills at each journalled step, then recovery. A kill is simulated in-process: the kill point
//! panics (`KillPoints::panic_at`), rollbacks do nothing while a panic unwinds, and the
//! journal's handle is dropped without being finished, so the state is what a SIGKILL leaves.
//! Recovery must then leave it consistent: nothing leaked (lease, tap, directory, record) or
//! the change complete, and `rm -f` or a re-create working.

use super::*;
use n2d_net::host::AttachRequest;
use n2d_store::Operation;
use std::panic::AssertUnwindSafe;

/// Runs `f` with n2d "killed" at `point`; the kill must happen.
fn killed_at<T>(k: &mut Kit, point: &str, f: impl FnOnce(&TestOrchestrator) -> T) {
    let kill = KillPoints::panic_at(point);
    k.orch.kill = kill.clone();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| f(&k.orch)));
    k.orch.kill = KillPoints::none();
    assert!(kill.fired(), "the kill point {point} was never reached");
    assert!(outcome.is_err(), "{point}: the operation went on after its kill");
}

/// The journals left, none live.
fn left_journals(k: &Kit) -> Vec<Operation> {
    let found = k.orch.home.intents();
    assert!(found.iter().all(|e| !e.live), "a journal is still live");
    found.into_iter().map(|e| e.intent.unwrap().op).collect()
}

/// Recovers; every journal is gone afterwards and a second pass has nothing to do.
fn recover(k: &Kit) -> Vec<String> {
    let said = k.orch.recover().unwrap();
    assert!(k.orch.home.intents().is_empty(), "journals left after recovery: {said:?}");
    assert!(k.orch.recover().unwrap().is_empty(), "a second recovery found work");
    said
}

const BEFORE_RECORD: [&str; 5] = [
    "create:after-journal",
    "create:after-dir",
    "create:after-lease",
    "create:after-config-disk",
    "create:after-data-disk",
];

#[test]
fn a_create_killed_before_its_record_is_undone_and_the_name_can_be_created_again() {
    for point in BEFORE_RECORD {
        let mut k = kit();
        killed_at(&mut k, point, |o| o.create_machine(&spec("h1"), None, BOOT));
        assert!(
            matches!(&left_journals(&k)[..], [Operation::Create { machine }] if machine.as_str() == "h1")
        );
        let said = recover(&k);
        assert_eq!(said.len(), 1, "{point}: {said:?}");
        assert!(said[0].contains("undid the interrupted create of h1"), "{point}: {said:?}");
        k.assert_gone("h1");
        k.assert_host_clean();
        // A re-create works, on the same address.
        let rec = k.create("h1").unwrap();
        assert_eq!(rec.ip, Ipv4Addr::new(10, 77, 0, 2), "{point}");
        k.orch.remove_machine(&name("h1"), true).unwrap();
        k.assert_host_clean();
    }
}

#[test]
fn a_create_killed_once_its_record_is_written_is_kept_and_rm_f_works() {
    for (point, running) in
        [("create:after-record", false), ("create:after-qemu-start", true), ("create:after-ready", true)]
    {
        let mut k = kit();
        killed_at(&mut k, point, |o| o.create_machine(&spec("h1"), None, BOOT));
        assert_eq!(left_journals(&k).len(), 1);
        let said = recover(&k);
        assert!(said[0].contains("had made it whole: kept"), "{point}: {said:?}");
        // Complete: its record, its lease and tap; running as the kill left it, never stopped.
        let rec = k.orch.load_record(&name("h1")).unwrap();
        assert!(k.host().links().contains(&rec.tap), "{point}");
        assert_eq!(k.vms().is_running("h1"), running, "{point}");
        assert!(!k.vms().events().iter().any(|e| e.starts_with("kill")), "{point}: recovery killed a VM");
        if !running {
            assert!(k.orch.start_machine(&name("h1"), BOOT).unwrap(), "{point}: a kept machine starts");
        }
        k.orch.remove_machine(&name("h1"), true).unwrap();
        k.assert_host_clean();
    }
}

#[test]
fn a_tap_made_just_before_the_kill_without_its_lease_is_deleted() {
    let mut k = kit();
    killed_at(&mut k, "create:after-dir", |o| o.create_machine(&spec("h1"), None, BOOT));
    // The kill came inside the attach, between `ip tuntap add` and the state being saved.
    let tap = n2d_net::tap_for(&k.orch.home_key(), "h1", 0);
    k.host().add_link(&tap, "tun", None);
    recover(&k);
    assert!(!k.host().links().contains(&tap), "the tap leaked");
    k.assert_host_clean();
}

#[test]
fn recovery_leaves_live_journals_and_other_homes_alone() {
    let mut k = kit();
    // Another home's h1, on the same bridge.
    let other = k.dir.path().join("other-home");
    std::fs::create_dir_all(other.join("machines/h1")).unwrap();
    let theirs = k
        .orch
        .net
        .attach(
            &k.orch.runner,
            &AttachRequest {
                home: &other,
                machine: "h1",
                bridge: "n2d0",
                addresses: None,
                subnet: None,
                claims: &[],
                expose: false,
            },
            None,
        )
        .unwrap();
    killed_at(&mut k, "create:after-lease", |o| o.create_machine(&spec("h1"), None, BOOT));
    // A change in progress (its handle open in this process) is not touched.
    let live = k.orch.begin(Operation::Create { machine: name("h2") }).unwrap();
    std::fs::create_dir_all(k.orch.home.machine_dir(&name("h2"))).unwrap();
    let said = recover_some(&k);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(k.orch.home.machine_exists(&name("h2")), "a live create's directory was removed");
    assert_eq!(k.orch.home.intents().len(), 1);
    live.finish().unwrap();
    assert!(!k.orch.home.machine_exists(&name("h1")));
    let state = k.orch.net.snapshot().unwrap();
    let ours: Vec<_> =
        state.bridges["n2d0"].leases.values().filter(|l| l.home == k.orch.home_key()).collect();
    assert!(ours.is_empty(), "our h1's lease is left: {ours:?}");
    let lease = &state.bridges["n2d0"].leases[&theirs.ip];
    assert_eq!((lease.home.as_path(), lease.machine.as_str()), (other.as_path(), "h1"));
    assert!(k.host().links().contains(&theirs.tap), "another home's tap was deleted");
}

fn recover_some(k: &Kit) -> Vec<String> {
    k.orch.recover().unwrap()
}

#[test]
fn an_rm_killed_before_the_vm_stopped_removes_nothing_and_after_it_is_finished() {
    // Before the VM was killed: the machine is running, so nothing is touched.
    let mut k = kit();
    k.create("h1").unwrap();
    killed_at(&mut k, "rm:after-journal", |o| o.remove_machine(&name("h1"), true));
    let said = recover(&k);
    assert!(said[0].contains("nothing was removed"), "{said:?}");
    assert!(k.vms().is_running("h1") && k.orch.load_record(&name("h1")).is_ok());
    k.orch.remove_machine(&name("h1"), true).unwrap();
    k.assert_host_clean();

    for point in ["rm:after-vm-killed", "rm:after-detached"] {
        let mut k = kit();
        k.create("h1").unwrap();
        killed_at(&mut k, point, |o| o.remove_machine(&name("h1"), true));
        let said = recover(&k);
        assert_eq!(said, ["recovered: finished the interrupted rm of h1"], "{point}");
        k.assert_gone("h1");
        k.assert_host_clean();
        k.create("h1").unwrap();
    }
}

#[test]
fn a_killed_start_leaves_the_machine_stopped_or_running_with_its_lease() {
    for (point, running) in [("start:after-attach", false), ("start:after-qemu-start", true)] {
        let mut k = kit();
        let rec = k.create("h1").unwrap();
        k.orch.stop_machine(&name("h1"), BOOT).unwrap();
        killed_at(&mut k, point, |o| o.start_machine(&name("h1"), BOOT));
        let said = recover(&k);
        let state = if running { "running" } else { "stopped" };
        assert_eq!(said, [format!("recovered: the interrupted start of h1 left it {state}")], "{point}");
        assert!(k.host().links().contains(&rec.tap));
        assert_eq!(k.orch.start_machine(&name("h1"), BOOT).unwrap(), !running, "{point}");
        k.orch.remove_machine(&name("h1"), true).unwrap();
        k.assert_host_clean();
    }
}

// --- swarms ---------------------------------------------------------------------------------

fn create_swarm(o: &TestOrchestrator, spec: &SwarmSpec, plan: &SwarmPlan) {
    let _ = o.create_swarm(spec, plan, BOOT, false);
}

#[test]
fn a_swarm_create_killed_before_any_node_is_undone_and_can_be_created_again() {
    let mut k = kit();
    let spec = swarm_spec(1, 2);
    let p = plan(&k, &spec);
    killed_at(&mut k, "swarm-create:after-record", |o| create_swarm(o, &spec, &p));
    let said = recover(&k);
    assert_eq!(
        said,
        ["recovered: undid the interrupted creation of swarm n2d (none of its nodes had been made)"]
    );
    assert_swarm_gone(&k);
    make_swarm(&k, 1, 2);
}

#[test]
fn a_swarm_create_killed_after_its_nodes_keeps_them_in_its_record_for_swarm_rm() {
    let mut k = kit();
    let spec = swarm_spec(1, 2);
    let p = plan(&k, &spec);
    killed_at(&mut k, "swarm-create:after-nodes", |o| create_swarm(o, &spec, &p));
    let said = recover(&k);
    assert!(said[0].contains("its record keeps the 3 machines made"), "{said:?}");
    let record = k.orch.load_swarm(&prefix()).unwrap();
    assert_eq!(record.nodes().count(), 3);
    assert_eq!(k.vms().running().len(), 3, "recovery stopped a VM");
    k.orch.remove_swarm(&prefix()).unwrap();
    assert_swarm_gone(&k);
}

#[test]
fn a_swarm_create_killed_while_one_node_is_half_made() {
    // One node's create is killed after its lease; the other nodes finish in parallel.
    let mut k = kit();
    let spec = swarm_spec(1, 2);
    let p = plan(&k, &spec);
    killed_at(&mut k, "create:after-lease", |o| create_swarm(o, &spec, &p));
    let ops = left_journals(&k);
    assert!(ops.iter().any(|op| matches!(op, Operation::SwarmCreate { .. })), "{ops:?}");
    assert!(ops.iter().any(|op| matches!(op, Operation::Create { .. })), "{ops:?}");
    let said = recover(&k);
    assert!(said.iter().any(|l| l.contains("undid the interrupted create")), "{said:?}");
    // The record names exactly the machines that exist; swarm rm then leaves nothing.
    let record = k.orch.load_swarm(&prefix()).unwrap();
    let listed: Vec<String> = record.nodes().map(|n| n.to_string()).collect();
    let machines: Vec<String> = k.orch.home.list_machines().into_iter().map(|(n, _)| n).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for n in &listed {
        assert!(machines.contains(n), "{n} is recorded but gone");
    }
    assert_eq!(machines.len(), 2, "{machines:?}");
    k.orch.remove_swarm(&prefix()).unwrap();
    assert_swarm_gone(&k);
}

#[test]
fn a_swarm_rm_killed_midway_is_finished() {
    let mut k = kit();
    make_swarm(&k, 1, 2);
    killed_at(&mut k, "swarm-rm:after-node", |o| o.remove_swarm(&prefix()));
    // One node is gone and out of the record; the others are still running.
    assert_eq!(k.orch.load_swarm(&prefix()).unwrap().nodes().count(), 2);
    let said = recover(&k);
    assert!(said[0].contains("left n2d-wrkr-0, n2d-wrkr-1 running"), "{said:?}");
    // Running VMs are never stopped by recovery: `swarm rm` again finishes it.
    k.orch.remove_swarm(&prefix()).unwrap();
    assert_swarm_gone(&k);

    // Stopped nodes are removed by recovery itself.
    let mut k = kit();
    make_swarm(&k, 1, 1);
    k.vms().crash("n2d-wrkr-0");
    killed_at(&mut k, "swarm-rm:after-journal", |o| o.remove_swarm(&prefix()));
    k.vms().crash("n2d-mngr-0");
    let said = recover(&k);
    assert_eq!(said, ["recovered: finished the interrupted rm of swarm n2d"]);
    assert_swarm_gone(&k);
}

#[test]
fn a_scale_up_killed_after_its_nodes_joined_records_them() {
    let mut k = kit();
    make_swarm(&k, 1, 1);
    let work = k.orch.plan_swarm_scale(&prefix(), Some(3), None).unwrap();
    killed_at(&mut k, "scale:after-joined", move |o| o.scale_swarm(work, BOOT));
    assert_eq!(k.orch.load_swarm(&prefix()).unwrap().workers.len(), 1, "not recorded before the kill");
    let said = recover(&k);
    assert!(said[0].contains("recorded its new nodes n2d-wrkr-1, n2d-wrkr-2"), "{said:?}");
    let record = k.orch.load_swarm(&prefix()).unwrap();
    assert_eq!(record.workers.len(), 3);
    // The next scale and swarm rm see them.
    let work = k.orch.plan_swarm_scale(&prefix(), Some(2), None).unwrap();
    assert_eq!(work.plan.remove.len(), 1);
    k.orch.scale_swarm(work, BOOT).unwrap();
    k.orch.remove_swarm(&prefix()).unwrap();
    k.assert_host_clean();
}

#[test]
fn a_scale_up_killed_while_creating_its_nodes() {
    let mut k = kit();
    make_swarm(&k, 1, 1);
    let work = k.orch.plan_swarm_scale(&prefix(), Some(2), None).unwrap();
    killed_at(&mut k, "create:after-config-disk", move |o| o.scale_swarm(work, BOOT));
    let said = recover(&k);
    assert!(said.iter().any(|l| l.contains("undid the interrupted create of n2d-wrkr-1")), "{said:?}");
    assert!(said.iter().any(|l| l.contains("left its record as it was")), "{said:?}");
    k.assert_gone("n2d-wrkr-1");
    assert_eq!(k.orch.load_swarm(&prefix()).unwrap().workers.len(), 1);
    // Scaling again works.
    let work = k.orch.plan_swarm_scale(&prefix(), Some(2), None).unwrap();
    k.orch.scale_swarm(work, BOOT).unwrap();
    assert_eq!(hostnames(&k), ["n2d-mngr-0", "n2d-wrkr-0", "n2d-wrkr-1"]);
}

#[test]
fn a_scale_down_killed_after_a_machine_was_removed_drops_it_from_the_record() {
    let mut k = kit();
    make_swarm(&k, 1, 3);
    let work = k.orch.plan_swarm_scale(&prefix(), Some(1), None).unwrap();
    assert_eq!(work.plan.remove.len(), 2);
    // Killed inside the first node's rm, after its directory went but before the record changed.
    killed_at(&mut k, "rm:after-detached", move |o| o.scale_swarm(work, BOOT));
    let said = recover(&k);
    assert!(said.iter().any(|l| l.contains("dropped its removed nodes n2d-wrkr-2")), "{said:?}");
    k.assert_gone("n2d-wrkr-2");
    let record = k.orch.load_swarm(&prefix()).unwrap();
    assert_eq!(record.workers.len(), 2, "{record:?}");
    // The scale, run again, finishes (n2d-wrkr-1 already left the swarm: skipped there).
    let work = k.orch.plan_swarm_scale(&prefix(), Some(1), None).unwrap();
    k.orch.scale_swarm(work, BOOT).unwrap();
    assert_eq!(hostnames(&k), ["n2d-mngr-0", "n2d-wrkr-0"]);
    k.assert_gone("n2d-wrkr-1");
}

#[test]
fn an_image_build_tree_left_by_a_kill_is_removed() {
    let k = kit();
    let staging = ".build-feedface0011-999999999";
    let tree = k.orch.home.images_dir().join(staging).join("rootfs/usr/bin");
    std::fs::create_dir_all(&tree).unwrap();
    // With its journal (a dead one)...
    drop(
        k.orch
            .home
            .begin_intent(Operation::ImageBuild { staging: staging.into() }, &KillPoints::none())
            .unwrap(),
    );
    let said = recover(&k);
    assert_eq!(
        said,
        [format!("recovered: removed {staging}, the build tree of an image build that was killed")]
    );
    assert!(!k.orch.home.images_dir().join(staging).exists());
    // ...or without one (the build's own removal of it failed), once its pid is gone; the
    // images stay.
    std::fs::create_dir_all(k.orch.home.images_dir().join(staging)).unwrap();
    let said = recover(&k);
    assert_eq!(said.len(), 1);
    assert!(!k.orch.home.images_dir().join(staging).exists());
    assert!(k.orch.home.images_dir().join(IMAGE).exists());
    // A live build's tree (this process) is kept.
    let ours = format!(".build-feedface0011-{}", std::process::id());
    std::fs::create_dir_all(k.orch.home.images_dir().join(&ours)).unwrap();
    assert!(k.orch.recover().unwrap().is_empty());
    assert!(k.orch.home.images_dir().join(&ours).exists());
}

#[test]
fn a_damaged_journal_is_reported_and_kept() {
    let k = kit();
    std::fs::create_dir_all(k.orch.home.intents_dir()).unwrap();
    let path = k.orch.home.intents_dir().join("create-x-1-0.json");
    std::fs::write(&path, b"{").unwrap();
    let said = k.orch.recover().unwrap();
    assert!(said[0].starts_with("warning: ") && said[0].contains("fix or remove it"), "{said:?}");
    assert!(path.exists());
}

#[test]
fn a_user_mode_create_killed_before_its_record_is_undone_without_host_wide_state() {
    for point in BEFORE_RECORD {
        let mut k = kit();
        let user = MachineSpec { bridge: n2d_spec::machine::USER_NETWORK.into(), ..spec("u1") };
        killed_at(&mut k, point, |o| o.create_machine(&user, None, BOOT));
        let said = recover(&k);
        assert!(said[0].contains("undid the interrupted create of u1"), "{point}: {said:?}");
        k.assert_gone("u1");
        // No lock or file under the host-wide run directory: an ordinary user could take neither.
        assert!(!k.dir.path().join("run").exists(), "{point}: recovery touched host-wide state");
        let rec = k.orch.create_machine(&user, None, BOOT).unwrap();
        assert_eq!(rec.ip, Ipv4Addr::new(10, 77, 0, 2), "{point}");
    }
}
