//! `n2d certs` through the real binary, no VM: usage errors exit 2 and change nothing,
//! `--client` re-issues the client certificate, `ls` lists what the home holds.

use std::process::{Command, Output};

fn n2d(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_n2d"))
        .args(args)
        .env("N2D_HOME", home)
        .env("DOCKER_CONFIG", home.join("docker"))
        .output()
        .unwrap()
}

#[test]
fn certs_rotate_refuses_bad_input_and_rotates_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let ls = n2d(&home, &["certs", "ls"]);
    assert_eq!(ls.status.code(), Some(0), "{}", String::from_utf8_lossy(&ls.stderr));
    // No CA yet: no client certificate to rotate; no machine either.
    assert_eq!(n2d(&home, &["certs", "rotate", "--client"]).status.code(), Some(2));
    assert_eq!(n2d(&home, &["certs", "rotate", "--all"]).status.code(), Some(0));
    assert!(!home.join("certs").exists(), "a rotation of nothing made a CA");

    n2d_pki::Ca::load_or_create(&home.join("certs")).unwrap();
    let cert = || std::fs::read_to_string(home.join("certs/cert.pem")).unwrap();
    let before = cert();
    for args in [
        &["certs", "rotate"][..],
        &["certs", "rotate", "--all", "h1"],
        &["certs", "rotate", "../h1"],
        &["certs", "rotate", "Bad_Name"],
        &["certs", "rotate", "nosuch"],
        &["certs", "rotate", "h1", "--timeout", "x"],
    ] {
        let out = n2d(&home, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(cert(), before, "a refused rotation changed the client certificate");

    let out = n2d(&home, &["certs", "rotate", "--client"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let new = n2d_pki::CertInfo::from_pem(&cert()).unwrap();
    assert_ne!(new.serial, n2d_pki::CertInfo::from_pem(&before).unwrap().serial);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&new.serial));

    let out = n2d(&home, &["certs", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().skip(1).map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(rows, ["ca", "client"], "{text}");
    assert!(text.contains(&new.serial) && !text.contains("expires soon"), "{text}");
}
