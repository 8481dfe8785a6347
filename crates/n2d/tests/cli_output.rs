//! The real `n2d` binary with its output going nowhere: stdout a pipe whose reader is gone
//! (`n2d ls | true`) or a full disk (`n2d ls > /dev/full`), stderr the same. n2d must end with
//! the conventional status (141 for a broken pipe, as a shell reports SIGPIPE; 1 and one line for
//! any other write error) and never panic. No VM, no root needed.

use std::process::{Command, Output, Stdio};

/// Commands that print to stdout without a machine: tables, JSON, the completion scripts, help.
const PRINTERS: &[&[&str]] = &[
    &["ls"],
    &["ls", "--json"],
    &["swarm", "ls"],
    &["image", "ls"],
    &["completions", "bash"],
    &["completions", "zsh"],
    &["--help"],
    &["ls", "--help"],
    &["--version"],
    &["version"],
];

/// A pipe whose read end is closed before n2d starts, so its first write fails with EPIPE
/// (closing it after the spawn would race with a small write that fits the pipe's buffer).
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

fn dev_full() -> Stdio {
    std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap().into()
}

fn n2d(home: &std::path::Path, args: &[&str], stdout: Stdio, stderr: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_n2d"))
        .args(args)
        .env("N2D_HOME", home)
        .env("N2D_RUN_DIR", home.join("run"))
        .env("DOCKER_CONFIG", home.join("docker"))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .output()
        .unwrap()
}

fn home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("run")).unwrap();
    home
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_printer_works_when_stdout_is_fine() {
    let home = home();
    for args in PRINTERS {
        let out = n2d(home.path(), args, Stdio::piped(), Stdio::piped());
        assert_eq!(out.status.code(), Some(0), "n2d {args:?}: {}", stderr_of(&out));
        assert!(!out.stdout.is_empty(), "n2d {args:?} printed nothing");
    }
}

#[test]
fn a_closed_pipe_on_stdout_ends_n2d_quietly_with_141() {
    let home = home();
    for args in PRINTERS {
        let out = n2d(home.path(), args, closed_pipe(), Stdio::piped());
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(141), "n2d {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "n2d {args:?} panicked: {stderr}");
        assert!(!stderr.contains("standard output"), "a broken pipe is not reported: {stderr}");
    }
}

#[test]
fn a_full_disk_on_stdout_is_one_line_and_exit_1() {
    let home = home();
    for args in PRINTERS {
        let out = n2d(home.path(), args, dev_full(), Stdio::piped());
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "n2d {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "n2d {args:?} panicked: {stderr}");
        let line = stderr.lines().find(|l| l.contains("standard output")).unwrap_or_default();
        assert!(
            line.starts_with("n2d: cannot write to standard output: No space left on device"),
            "n2d {args:?}: {stderr}"
        );
        assert_eq!(stderr.matches("standard output").count(), 1, "said once: {stderr}");
    }
}

#[test]
fn stderr_that_cannot_be_written_never_panics_nor_changes_the_status() {
    let home = home();
    // A usage error (exit 2) and a success, with stderr a closed pipe or a full disk; stdout
    // broken too for the printers.
    for stderr in [closed_pipe as fn() -> Stdio, dev_full] {
        let out = n2d(home.path(), &["inspect", "no-such-machine"], Stdio::piped(), stderr());
        assert_eq!(out.status.code(), Some(2), "usage errors keep their status");
        let out = n2d(home.path(), &["create", "Bad Name"], Stdio::piped(), stderr());
        assert_eq!(out.status.code(), Some(2), "clap's usage errors keep their status");
        let out = n2d(home.path(), &["ls"], Stdio::piped(), stderr());
        assert_eq!(out.status.code(), Some(0));
        let out = n2d(home.path(), &["ls"], dev_full(), stderr());
        assert_eq!(out.status.code(), Some(1), "the stdout error still fails the command");
        let out = n2d(home.path(), &["ls"], closed_pipe(), stderr());
        assert_eq!(out.status.code(), Some(141));
    }
}

#[test]
fn env_output_round_trips_through_bash_and_sh_for_a_hostile_home() {
    let dir = tempfile::tempdir().unwrap();
    // A home path with spaces, both quotes, `$(...)`, backticks, a newline and a backslash.
    let home = dir.path().join("my n2d 'home' \"x\" $(touch MARKER) `touch MARKER` \\ \nend");
    std::fs::create_dir_all(home.join("hosts")).unwrap();
    std::fs::create_dir(home.join("run")).unwrap();
    std::fs::write(home.join("hosts/web.json"), r#"{"name":"web","docker_host":"tcp://192.168.1.50:2376"}"#)
        .unwrap();
    for shell in ["bash", "sh"] {
        let script = r#"eval "$("$1" env web)" && printf '%s\0' "$DOCKER_HOST" "$DOCKER_TLS_VERIFY" "$DOCKER_CERT_PATH""#;
        let out = Command::new(shell)
            .args(["-c", script, shell, env!("CARGO_BIN_EXE_n2d")])
            .current_dir(dir.path())
            .env("N2D_HOME", &home)
            .env("N2D_RUN_DIR", home.join("run"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr_of(&out));
        let vars: Vec<String> =
            String::from_utf8(out.stdout).unwrap().split_terminator('\0').map(str::to_string).collect();
        let certs = std::fs::canonicalize(&home).unwrap().join("certs");
        let certs_as_given = home.join("certs");
        assert_eq!(vars[..2], ["tcp://192.168.1.50:2376", "1"], "{shell}");
        assert!(
            vars[2] == certs.to_str().unwrap() || vars[2] == certs_as_given.to_str().unwrap(),
            "{shell} read {:?}",
            vars[2]
        );
        assert!(!dir.path().join("MARKER").exists(), "{shell} ran a command hidden in the home's path");
    }
}

/// An adopted host whose record n2d refuses (here an endpoint carrying an ssh option) is listed
/// as an error, never as a usable endpoint, and never hidden.
#[test]
fn ls_lists_a_refused_adopted_host_as_an_error() {
    let home = home();
    let hosts = home.path().join("hosts");
    std::fs::create_dir(&hosts).unwrap();
    let hostile = r#"{"name": "web1", "docker_host": "tcp://-oProxyCommand=x:2376"}"#;
    std::fs::write(hosts.join("web1.json"), hostile).unwrap();
    let good = r#"{"name": "web2", "docker_host": "tcp://10.0.0.5:2376"}"#;
    std::fs::write(hosts.join("web2.json"), good).unwrap();

    let out = n2d(home.path(), &["ls"], Stdio::piped(), Stdio::piped());
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let row = |name: &str| table.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    assert!(row("web1 ").contains(" error ") && !row("web1 ").contains("ProxyCommand=x:2376 "), "{table}");
    assert!(row("web2 ").contains("adopted") && row("web2 ").contains("tcp://10.0.0.5:2376"), "{table}");

    let out = n2d(home.path(), &["ls", "--json"], Stdio::piped(), Stdio::piped());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let state = |name: &str| rows.iter().find(|r| r["name"] == name).map(|r| r["state"].clone());
    assert_eq!(state("web1"), Some("error".into()), "{rows:?}");
    assert_eq!(state("web2"), Some("adopted".into()), "{rows:?}");
}
