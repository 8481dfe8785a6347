//! End to end: n2d SIGKILLed at each step of `create` (the test-only kill points,
//! `N2D_TEST_KILL_AT`), then the next command: the state is consistent, nothing leaks, and
//! `rm -f` or a new create works. Ignored by default (root, QEMU): run it with
//! `cargo test --release -p n2d --test e2e_kill -- --ignored`.

mod common;
use common::*;
use std::os::unix::process::ExitStatusExt;

#[test]
#[ignore = "boots a VM: needs root and QEMU; run with --ignored"]
fn create_killed_at_each_step_is_recovered() {
    let home = e2e_home();
    build_image(&home);
    let ns = Netns::new("n2d-e2e-kill", &home);
    let machine = home.join("machines/k1");
    let n2d_links = |ns: &Netns| ns.links().into_iter().filter(|l| l.starts_with("n2d")).collect::<Vec<_>>();
    let killed_at = |point: &str| {
        let out = ns
            .cmd(n2d_bin(), &["create", "k1", "--memory", "1G"])
            .env("N2D_TEST_KILL_AT", point)
            .output()
            .unwrap();
        eprintln!(
            "$ N2D_TEST_KILL_AT={point} n2d create k1\n{}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        assert_eq!(out.status.signal(), Some(9), "n2d was not killed at {point}");
    };
    let repair = || {
        let out = ns.n2d(&["doctor", "--repair"]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // Killed before the machine's record exists: the next command undoes it all.
    for point in [
        "create:after-journal",
        "create:after-dir",
        "create:after-lease",
        "create:after-config-disk",
        "create:after-data-disk",
    ] {
        killed_at(point);
        let said = repair();
        assert!(said.contains("recovered:"), "{point}: nothing recovered: {said}");
        assert!(!machine.exists(), "{point}: the half-made machine directory is left");
        assert!(n2d_links(&ns).is_empty(), "{point}: links left: {:?}", n2d_links(&ns));
        assert!(!ns.host_state_file().exists(), "{point}: a lease is left");
        assert!(ns.qemu_pids().is_empty(), "{point}: QEMU left running");
        assert_eq!(ns.n2d_ok(&["ls", "--json"]).trim(), "[]", "{point}");
    }

    // Killed once the record exists: the machine is kept, and `rm -f` removes all of it.
    for point in ["create:after-record", "create:after-qemu-start"] {
        killed_at(point);
        assert!(repair().contains("recovered:"), "{point}");
        assert!(machine.join("machine.json").exists(), "{point}: the recorded machine was dropped");
        ns.n2d_ok(&["rm", "-f", "k1"]);
        assert!(
            !machine.exists() && n2d_links(&ns).is_empty() && ns.qemu_pids().is_empty(),
            "{point}: rm -f left things"
        );
        assert!(!ns.host_state_file().exists(), "{point}: rm -f left a lease");
    }

    // Killed after the engine answered: the machine works, found by the next command (a
    // state-changing one, which recovers first), and is then removed cleanly.
    killed_at("create:after-ready");
    let said = String::from_utf8_lossy(&ns.n2d(&["stop", "k1"]).stderr).into_owned();
    assert!(said.contains("recovered:"), "stop did not recover first: {said}");
    ns.n2d_ok(&["start", "k1"]);
    let env = parse_env(&ns.n2d_ok(&["env", "k1"]));
    assert_eq!(ns.docker_ok(&env, &["info", "--format", "{{.Name}}"]).trim(), "k1");
    ns.n2d_ok(&["rm", "-f", "k1"]);
    assert!(!machine.exists() && n2d_links(&ns).is_empty() && ns.qemu_pids().is_empty());
    assert!(!ns.host_state_file().exists() && !ns.iptables("filter").contains("N2D-"));
    let intents = std::fs::read_dir(home.join("intents")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(intents, 0, "journals are left in the home");
}
