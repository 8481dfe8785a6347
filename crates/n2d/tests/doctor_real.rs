//! `n2d doctor` once for real, as a process, on whatever host runs the tests: it needs no VM
//! and makes nothing. What it must find is read from the host independently.

use std::process::Command;

fn check<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
}

#[test]
fn doctor_reports_this_host() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_n2d"))
        .args(["doctor", "--json"])
        .env("N2D_HOME", home.path().join("state"))
        .env_remove("N2D_NO_KVM")
        .output()
        .unwrap();
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "qemu",
            "kvm",
            "privileges",
            "iptables",
            "bridge",
            "disk",
            "image",
            "docker",
            "virtiofsd",
            "firewall"
        ]
    );

    let failed = checks.iter().any(|c| c["status"] == "fail");
    assert_eq!(out.status.code(), Some(if failed { 1 } else { 0 }), "{checks:#?}");
    for c in &checks {
        assert_eq!(c["fix"].is_null(), c["status"] == "ok", "{c}");
    }

    let qemu = check(&checks, "qemu");
    let version = Command::new("qemu-system-x86_64").arg("--version").output();
    match version.ok().and_then(|o| n2d_vm::QemuVersion::parse(&String::from_utf8_lossy(&o.stdout))) {
        Some(v) => assert!(qemu["finding"].as_str().unwrap().contains(&format!("QEMU {v}")), "{qemu}"),
        None => assert_eq!(qemu["status"], "fail", "{qemu}"),
    }

    let kvm = check(&checks, "kvm");
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    if !cpuinfo.lines().any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm"))) {
        assert_eq!(kvm["status"], "warn", "{kvm}");
        assert!(kvm["finding"].as_str().unwrap().contains("no vmx/svm flag"), "{kvm}");
    }

    let privileges = check(&checks, "privileges");
    if rustix::process::geteuid().is_root() {
        assert_eq!(privileges["status"], "ok", "{privileges}");
        assert_eq!(privileges["finding"], "running as root");
    }

    // Found where scripts/deps.sh puts it, or where Debian's package does.
    let virtiofsd = check(&checks, "virtiofsd");
    let installed = ["/usr/local/bin/virtiofsd", "/usr/libexec/virtiofsd", "/usr/bin/virtiofsd"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    assert_eq!(virtiofsd["status"], if installed { "ok" } else { "warn" }, "{virtiofsd}");

    let disk = check(&checks, "disk");
    assert!(disk["finding"].as_str().unwrap().contains(&home.path().display().to_string()), "{disk}");
    let image = check(&checks, "image");
    assert!(image["finding"].as_str().unwrap().contains("no image"), "{image}");
    assert!(!home.path().join("state").exists(), "doctor made $N2D_HOME");
}

#[test]
fn verbose_shows_each_command_run_on_stderr_and_leaves_stdout_as_it_was() {
    let home = tempfile::tempdir().unwrap();
    let doctor = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_n2d"))
            .args(extra)
            .args(["doctor", "--json"])
            .env("N2D_HOME", home.path().join("state"))
            .env_remove("N2D_LOG")
            .output()
            .unwrap()
    };
    let (quiet, verbose) = (doctor(&[]), doctor(&["-v"]));
    let stderr = String::from_utf8_lossy(&verbose.stderr);
    // Each external command with its exit status and time (QEMU's version is always asked).
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(" ran ")).collect();
    assert!(
        lines.iter().any(|l| l.contains("ran qemu-system-x86_64 --version: ") && l.ends_with("s)")),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&quiet.stderr).lines().all(|l| !l.contains(" ran ")));
    // stdout is the same JSON either way.
    let parse = |o: &std::process::Output| serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap();
    assert_eq!(parse(&quiet).as_array().unwrap().len(), parse(&verbose).as_array().unwrap().len());
    assert_eq!(quiet.status.code(), verbose.status.code());
}
