//! `swarm upgrade` over the fakes: the order, what each node goes through, a re-run, Ctrl-C in
//! the middle, a node that does not boot, a kill finished by recovery, bad input.

use super::image::add_image;
use super::*;
use crate::swarm::chain;
use crate::ErrorKind;
use n2d_store::Operation;

const NEW: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn images(k: &Kit) -> Vec<(String, String)> {
    let record = k.orch.load_swarm(&prefix()).unwrap();
    record
        .nodes()
        .map(|n| (n.to_string(), k.orch.load_record(n).unwrap().spec.image[..4].to_string()))
        .collect()
}

fn upgraded_kit() -> Kit {
    let k = kit();
    make_swarm(&k, 1, 2);
    add_image(&k, NEW);
    k
}

#[test]
fn workers_then_the_manager_each_drained_restarted_on_the_new_image_and_made_active() {
    let k = upgraded_kit();
    let dry = k.orch.upgrade_swarm(&prefix(), Some("0123"), true, BOOT).unwrap();
    let order: Vec<&str> = dry.plan.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(order, ["n2d-wrkr-0", "n2d-wrkr-1", "n2d-mngr-0"]);
    assert!(dry.moved.is_empty());
    assert_eq!(k.cluster.count_events("drain"), 0, "a dry run drained: {:?}", k.cluster.events());
    assert_eq!(images(&k).iter().filter(|(_, i)| i == "feed").count(), 3);

    let report = k.orch.upgrade_swarm(&prefix(), Some("0123"), false, BOOT).unwrap();
    assert_eq!(report.moved, ["n2d-wrkr-0", "n2d-wrkr-1", "n2d-mngr-0"]);
    assert!(images(&k).iter().all(|(_, i)| i == "0123"), "{:?}", images(&k));
    let availability: Vec<String> = k
        .cluster
        .events()
        .into_iter()
        .filter(|e| e.starts_with("drain") || e.starts_with("active"))
        .collect();
    assert_eq!(
        availability,
        [
            "drain n2d-wrkr-0",
            "active n2d-wrkr-0",
            "drain n2d-wrkr-1",
            "active n2d-wrkr-1",
            "drain n2d-mngr-0",
            "active n2d-mngr-0"
        ]
    );
    // Each stopped and started once more (after its create's start).
    for node in ["n2d-wrkr-0", "n2d-wrkr-1", "n2d-mngr-0"] {
        assert_eq!(k.vms().count(&format!("stop {node}")), 1, "{:?}", k.vms().events());
        assert!(k.vms().is_running(node));
    }
    assert!(k.orch.home.intents().is_empty(), "a journal was left");
    // A re-run has nothing to do.
    assert!(k.orch.upgrade_swarm(&prefix(), Some("0123"), false, BOOT).unwrap().plan.is_empty());
}

#[test]
fn a_missing_image_or_a_swarm_without_its_quorum_is_refused_before_anything_is_done() {
    let k = upgraded_kit();
    let err = k.orch.upgrade_swarm(&prefix(), Some("dead"), false, BOOT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
    assert!(chain(&err).contains("dead"), "{}", chain(&err));
    let err = k.orch.upgrade_swarm(&"ghost".parse().unwrap(), Some("0123"), false, BOOT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
    assert_eq!(k.cluster.count_events("drain"), 0);
    assert!(images(&k).iter().all(|(_, i)| i == "feed"));
}

#[test]
fn ctrl_c_during_a_drain_brings_that_node_back_active_and_a_re_run_continues() {
    let k = upgraded_kit();
    // The third availability change is the second node's drain.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cancel = k.orch.cancel.clone();
    let seen = calls.clone();
    k.cluster.on_call("n2d-mngr-0", "availability", move || {
        if seen.fetch_add(1, Ordering::Relaxed) == 2 {
            cancel.store(true, Ordering::Relaxed);
        }
    });
    let err = k.orch.upgrade_swarm(&prefix(), Some("0123"), false, BOOT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Interrupted, "{err}");
    let said = err.to_string();
    assert!(said.contains("n2d-wrkr-0 on the new image"), "{said}");
    assert!(said.contains("still on the old image: n2d-wrkr-1, n2d-mngr-0"), "{said}");
    assert!(k.cluster.nodes().iter().all(|n| n.availability == n2d_swarm::Availability::Active));
    assert!(k.vms().is_running("n2d-wrkr-1"));
    assert!(k.orch.cancelled(), "the Ctrl-C is still seen by the caller");
    assert!(k.orch.home.intents().is_empty(), "the node is back: nothing is left for recovery");

    k.orch.cancel.store(false, Ordering::Relaxed);
    let report = k.orch.upgrade_swarm(&prefix(), Some("0123"), false, BOOT).unwrap();
    assert_eq!(report.moved, ["n2d-wrkr-1", "n2d-mngr-0"]);
    assert!(images(&k).iter().all(|(_, i)| i == "0123"));
}

#[test]
fn a_node_that_does_not_boot_on_the_new_image_stops_the_upgrade_and_says_where_it_is() {
    let k = upgraded_kit();
    k.vms().fail_start("n2d-wrkr-0");
    let err = k.orch.upgrade_swarm(&prefix(), Some("0123"), false, BOOT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failure, "{err}");
    let said = chain(&err);
    assert!(said.contains("upgrading n2d-wrkr-0 to image 0123"), "{said}");
    assert!(said.contains("n2d-wrkr-0 is stopped, on image 0123"), "{said}");
    assert!(said.contains("still on the old image: n2d-wrkr-1, n2d-mngr-0"), "{said}");
    assert_eq!(k.cluster.count_events("drain n2d-wrkr-1"), 0, "it went on to the next node");
    // Not back up: the journal stays for the next command's recovery.
    assert_eq!(k.orch.home.intents().len(), 1);
}

#[test]
fn an_upgrade_killed_after_the_switch_is_finished_by_recovery() {
    let mut k = upgraded_kit();
    let kill = KillPoints::panic_at("swarm-upgrade:after-switch");
    k.orch.kill = kill.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        k.orch.upgrade_swarm(&prefix(), Some("0123"), false, BOOT)
    }));
    k.orch.kill = KillPoints::none();
    assert!(kill.fired() && outcome.is_err(), "never killed");
    // Left: the first node stopped and drained, its record on the new image, the journal.
    assert!(!k.vms().is_running("n2d-wrkr-0"));
    assert!(matches!(
        &k.orch.home.intents()[0].intent.as_ref().unwrap().op,
        Operation::SwarmUpgrade { node, .. } if node.as_str() == "n2d-wrkr-0"
    ));

    let said = k.orch.recover().unwrap();
    assert!(
        said.iter().any(|l| l
            .contains("n2d-wrkr-0, whose upgrade was interrupted, runs again and is active, on image 0123")),
        "{said:?}"
    );
    assert!(k.vms().is_running("n2d-wrkr-0"));
    assert!(k.cluster.nodes().iter().all(|n| n.availability == n2d_swarm::Availability::Active));
    assert!(k.orch.home.intents().is_empty());
    // The re-run goes on with the others.
    let report = k.orch.upgrade_swarm(&prefix(), Some("0123"), false, BOOT).unwrap();
    assert_eq!(report.moved, ["n2d-wrkr-1", "n2d-mngr-0"]);
}
