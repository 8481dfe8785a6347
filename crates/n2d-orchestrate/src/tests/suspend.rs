//! Suspend and resume over the fakes: the saved state and its record, a resume with the clock
//! set, and every way a resume is refused with the way out, the disks untouched.

use super::*;

fn machine_file(k: &Kit, n: &str, file: &str) -> std::path::PathBuf {
    k.orch.home.machine_dir(&name(n)).join(file)
}

/// Machine `a`, booted and suspended; from here on `start` resumes (the kit's cold boots are
/// for its creates, which make no template).
fn suspended_kit() -> Kit {
    let k = kit();
    k.create("a").unwrap();
    assert!(k.orch.suspend_machine(&name("a")).unwrap());
    k.orch.set_cold_boots(false);
    k
}

#[test]
fn a_suspended_machine_is_saved_whole_and_resumed_where_it_was() {
    let k = suspended_kit();
    assert!(!k.vms().is_running("a"));
    assert!(machine_file(&k, "a", "suspend.state").is_file());
    assert!(machine_file(&k, "a", "suspend.json").is_file());
    assert!(k.orch.is_suspended(&name("a")));
    let listed = k.orch.list();
    assert!(listed.machines[0].1.as_ref().unwrap().suspended);
    // Suspending it again, or a stopped machine, does nothing.
    assert!(!k.orch.suspend_machine(&name("a")).unwrap());

    let disks_before = k.orch.runner.qemu_img.lock().unwrap().len();
    assert!(k.orch.start_machine(&name("a"), BOOT).unwrap());
    let events = k.vms().events();
    assert_eq!(events[events.len() - 2], "restore a");
    assert!(events[events.len() - 1].starts_with("control a clock "), "{events:?}");
    assert!(k.vms().is_running("a"));
    assert_eq!(k.orch.runner.qemu_img.lock().unwrap().len(), disks_before, "a disk was remade");
    // Running again: the saved state is gone, so it can never be loaded over newer disks.
    assert!(!machine_file(&k, "a", "suspend.state").exists());
    assert!(!machine_file(&k, "a", "suspend.json").exists());
    assert!(!k.orch.is_suspended(&name("a")));
}

fn refused(k: &Kit, why: &str) {
    let err = k.orch.start_machine(&name("a"), BOOT).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(why) && text.contains("n2d start --cold a"), "{text}");
    assert!(!k.vms().is_running("a"));
    assert_eq!(k.vms().count("start a"), 1, "it booted from its disk");
}

#[test]
fn a_resume_by_another_qemu_is_refused_with_the_way_out() {
    let k = suspended_kit();
    k.vms().set_build("fake QEMU 11.0.0");
    refused(&k, "it was saved by fake QEMU 10.0.2, and this is fake QEMU 11.0.0");
    assert!(machine_file(&k, "a", "suspend.state").is_file(), "the saved state was dropped");
}

#[test]
fn a_missing_or_unloadable_state_is_refused_with_the_way_out() {
    let k = suspended_kit();
    k.vms().fail_restore("a");
    refused(&k, "cannot be resumed: QMP command migrate-incoming failed");
    std::fs::remove_file(machine_file(&k, "a", "suspend.state")).unwrap();
    refused(&k, "is missing");
}

#[test]
fn start_cold_discards_the_saved_state_says_so_and_boots() {
    let k = suspended_kit();
    k.orch.set_cold_boots(true);
    assert!(k.orch.start_machine(&name("a"), BOOT).unwrap());
    assert_eq!(k.vms().count("start a"), 2);
    assert_eq!(k.vms().count("restore a"), 0);
    assert!(!machine_file(&k, "a", "suspend.json").exists());
    assert!(k.said.lines().iter().any(|l| l.contains("its saved state is discarded (--cold)")));
}

#[test]
fn a_suspended_swarm_resumes_with_start_all() {
    let k = kit();
    make_swarm(&k, 1, 2);
    let suspended = k.orch.suspend_swarm(&prefix()).unwrap();
    assert_eq!(suspended.len(), 3);
    k.orch.set_cold_boots(false);
    assert!(k.vms().running().is_empty());
    let all = k.orch.start_all(BOOT);
    all.result().unwrap();
    assert_eq!(k.vms().running().len(), 3);
    assert_eq!(k.vms().count("restore "), 3);
    assert_eq!(k.vms().count("start "), 3, "only the swarm's first boots: {:?}", k.vms().events());
}
