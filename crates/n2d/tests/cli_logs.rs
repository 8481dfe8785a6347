//! `n2d logs` through the real binary, on a machine record and a serial log written by hand:
//! the guest's escape sequences do not reach the terminal (unless `--raw`), `--tail N` starts at
//! the last N lines found from the end, so a huge log costs neither time nor memory. No VM, no
//! root needed.

use std::process::{Command, Output, Stdio};

fn home_with_machine() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("run")).unwrap();
    let dir = home.path().join("machines/h1");
    std::fs::create_dir_all(&dir).unwrap();
    let record = serde_json::json!({
        "spec": { "name": "h1", "cpus": 1, "memory": 2147483648u64, "disk": 21474836480u64,
                  "bridge": "n2d0", "image": "aaaa1111", "insecure_tcp": false, "labels": {} },
        "ip": "10.77.0.2", "prefix_len": 24, "gateway": "10.77.0.1",
        "mac": "52:54:00:00:00:01", "tap": "n2dt00000000", "swarm": null
    });
    std::fs::write(dir.join("machine.json"), record.to_string()).unwrap();
    home
}

fn log_path(home: &tempfile::TempDir) -> std::path::PathBuf {
    home.path().join("machines/h1/serial.log")
}

/// `n2d ARGS` under `sh -c 'ulimit -v KIB; exec n2d ARGS'`.
fn n2d(home: &tempfile::TempDir, args: &[&str], vm_limit_kib: u64) -> Output {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {vm_limit_kib} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_n2d"))
        .args(args)
        .env("N2D_HOME", home.path())
        .env("N2D_RUN_DIR", home.path().join("run"))
        .env("DOCKER_CONFIG", home.path().join("docker"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "n2d {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

const GIB: u64 = 1 << 20; // in KiB

#[test]
fn logs_strips_the_guests_terminal_controls_unless_raw() {
    let home = home_with_machine();
    let hostile: &[u8] = b"boot ok\r\n\x1b]52;c;cm0gLXJmIH4=\x07\x1b]0;pwned\x1b\\\x1b[2J\x1b[Hclean\x07\n\
                          \xc2\x9b6n\x1bc\x1b[31mred\x1b[0m\tend\n";
    std::fs::write(log_path(&home), hostile).unwrap();
    let out = n2d(&home, &["logs", "h1"], 4 * GIB);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "boot ok\nclean\nred\tend\n");
    let out = n2d(&home, &["logs", "--raw", "h1"], 4 * GIB);
    assert_eq!(out.stdout, hostile);
}

#[test]
fn logs_tail_reads_the_end_of_a_huge_log_only() {
    let home = home_with_machine();
    // 8 GiB, sparse (the disk holds only the end): more than the memory n2d is allowed below.
    let f = std::fs::File::create(log_path(&home)).unwrap();
    f.set_len(8 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_at(b"\none\ntwo\n\x1b[Hthree\n", 8 << 30).unwrap();
    let started = std::time::Instant::now();
    let out = n2d(&home, &["logs", "-n", "2", "h1"], 2 * GIB);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "two\nthree\n");
    let out = n2d(&home, &["logs", "--tail", "3", "--raw", "h1"], 2 * GIB);
    assert_eq!(out.stdout, b"one\ntwo\n\x1b[Hthree\n");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    // No log yet: nothing, and no error.
    std::fs::remove_file(log_path(&home)).unwrap();
    assert!(n2d(&home, &["logs", "-n", "5", "h1"], 4 * GIB).stdout.is_empty());
}
