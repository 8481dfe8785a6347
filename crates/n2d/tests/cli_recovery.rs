//! Recovery runs at the start of a command that changes state, through the real CLI
//! in-process: a journal a killed n2d left is dealt with before the command runs, even one that
//! then fails. No VM, no root needed (only a build tree and journals are involved).

use std::ffi::OsString;

#[test]
fn a_state_changing_command_first_recovers_what_a_killed_n2d_left() {
    let home = tempfile::tempdir().unwrap();
    let intents = home.path().join("intents");
    std::fs::create_dir_all(&intents).unwrap();
    // A killed image build: its journal (the pid is gone) and its staging tree.
    let staging = ".build-0123456789ab-999999999";
    std::fs::create_dir_all(home.path().join("images").join(staging).join("rootfs/usr")).unwrap();
    let dead = r#"{"op":"image-build","staging":"STAGING","pid":999999999,"pid_start":1,"done":[]}"#;
    std::fs::write(intents.join("image-build-x-999999999-0.json"), dead.replace("STAGING", staging)).unwrap();
    // A swarm create killed before it wrote its record: nothing of it to touch.
    let early = r#"{"op":"swarm-create","swarm":"n2d","pid":999999999,"done":[]}"#;
    std::fs::write(intents.join("swarm-create-n2d-999999999-1.json"), early).unwrap();

    // A read-only command leaves them.
    let argv = |args: &[&str]| -> Vec<OsString> {
        std::iter::once("n2d").chain(args.iter().copied()).map(OsString::from).collect()
    };
    // `$N2D_HOME` is given to the CLI; the rest of the environment is this process's.
    let vars = |k: &str| match k {
        "N2D_HOME" => Some(home.path().as_os_str().to_owned()),
        _ => std::env::var_os(k),
    };
    assert_eq!(n2d::main_with(argv(&["swarm", "ls"]), vars), 0);
    assert_eq!(std::fs::read_dir(&intents).unwrap().count(), 2);

    // `rm` of an unknown machine still exits 2, after recovering.
    assert_eq!(n2d::main_with(argv(&["rm", "nosuch"]), vars), 2);
    assert!(!home.path().join("images").join(staging).exists(), "the build tree is left");
    assert_eq!(std::fs::read_dir(&intents).unwrap().count(), 0, "journals are left");
}
