//! End to end: one Docker host, booted for real under QEMU, judged by the host's docker CLI.
//! Ignored by default (it needs root, QEMU and Debian's package mirror): run it with
//! `cargo test --release -p n2d --test e2e_host -- --ignored`. Everything but the image build
//! happens in a network namespace of its own.

mod common;
use common::*;

#[test]
#[ignore = "boots a VM: needs root and QEMU; run with --ignored"]
fn one_docker_host_over_tls() {
    // scripts/test.sh makes a plain `cargo build --release` of the workspace first, which leaves
    // a glibc-linked n2d-init next to n2d: the image must still get the static one n2d embeds.
    let sibling = std::path::Path::new(n2d_bin()).with_file_name("n2d-init");
    eprintln!("a host-built n2d-init next to n2d (not to be used): {}", sibling.exists());
    let home = e2e_home();
    build_image(&home);
    let work = tempfile::tempdir().unwrap();
    let tar = busybox_rootfs_tar(work.path());
    let ns = Netns::new("n2d-e2e-host", &home);

    // Bad input: usage errors (exit 2) and nothing created.
    for bad in
        [&["create", "Bad_Name"][..], &["create", "h1", "--memory", "lots"], &["create", "h1", "--cpus", "0"]]
    {
        let out = ns.n2d(bad);
        assert_eq!(out.status.code(), Some(2), "n2d {bad:?}");
    }
    assert!(ns.n2d_ok(&["ls", "--json"]).trim() == "[]");

    let created = ns.n2d_ok(&["create", "h1", "--cpus", "2", "--memory", "1536M"]);
    let ip = created.lines().next().unwrap().trim().to_string();
    assert_eq!(ns.n2d_ok(&["ip", "h1"]).trim(), ip);
    let env = parse_env(&ns.n2d_ok(&["env", "h1"]));
    assert_eq!(env.iter().find(|(k, _)| k == "DOCKER_HOST").unwrap().1, format!("tcp://{ip}:2376"));

    // The docker context create registered, in the test's DOCKER_CONFIG: the real docker CLI
    // over TLS reaches the machine with nothing but `--context`.
    let contexts = ns.docker_ok(&[], &["context", "ls", "--format", "{{.Name}} {{.Description}}"]);
    let home_path = std::fs::canonicalize(&home).unwrap();
    let described = format!("h1 n2d machine h1 (home {})", home_path.display());
    assert!(contexts.lines().any(|l| l == described), "{contexts}");
    assert!(ns.docker_config().join("contexts/meta").is_dir(), "the context is not in DOCKER_CONFIG");
    let info = ns.docker_ok(&[], &["--context", "h1", "info", "--format", "{{.Name}} {{.OperatingSystem}}"]);
    assert!(info.starts_with("h1 "), "{info}");
    let version = ns.docker_ok(&[], &["--context", "h1", "version", "--format", "{{.Server.Version}}"]);
    assert!(!version.trim().is_empty(), "no server version through the context");

    // The same engine through `n2d env`: info, import, run.
    let info = ns.docker_ok(&env, &["info", "--format", "{{.Name}} {{.OperatingSystem}}"]);
    assert!(info.starts_with("h1 "), "{info}");
    ns.docker_ok(&env, &["import", tar.to_str().unwrap(), "n2d-test/busybox:1"]);
    let hello = ns.docker_ok(&env, &["run", "--rm", "n2d-test/busybox:1", "/bin/echo", "hello-from-h1"]);
    assert_eq!(hello.trim(), "hello-from-h1");

    // Without a client certificate, or without TLS, the engine refuses.
    let host = format!("tcp://{ip}:2376");
    let plain = ns.docker(&[], &["-H", &host, "info"]);
    assert!(!plain.status.success(), "plain HTTP to the TLS port must fail");
    let ca = home.join("certs/ca.pem");
    let no_cert = ns.docker(&[], &["--tls", "--tlscacert", ca.to_str().unwrap(), "-H", &host, "version"]);
    assert!(!no_cert.status.success(), "TLS without a client certificate must fail");
    let port_2375 = ns.docker(&[], &["-H", &format!("tcp://{ip}:2375"), "info"]);
    assert!(!port_2375.status.success(), "nothing may listen on plain 2375");

    // A duplicate name is a usage error.
    assert_eq!(ns.n2d(&["create", "h1"]).status.code(), Some(2));

    // Stop/start keeps the IP and the data disk (the imported image).
    ns.n2d_ok(&["stop", "h1"]);
    assert!(ns.qemu_pids().is_empty(), "stop left QEMU running");
    assert!(ns.n2d_ok(&["ls"]).contains("stopped"));
    ns.n2d_ok(&["start", "h1"]);
    assert_eq!(ns.n2d_ok(&["ip", "h1"]).trim(), ip);
    let images =
        ns.docker_ok(&[], &["--context", "h1", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.contains("n2d-test/busybox:1"), "image lost across restart: {images}");

    // The console gives a root shell in the guest.
    let mut console = ns.cmd(n2d_bin(), &["console", "h1"]);
    let out = {
        use std::io::Write;
        let mut child =
            console.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"echo console-$((40+2)) $(id -u)\n").unwrap();
        std::thread::sleep(std::time::Duration::from_secs(5));
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("console-42 0"), "console output: {text}");

    // `certs rotate` re-issues h1's server certificate (same names: its address, no 127.0.0.1 on
    // a bridge) and pushes it without a reboot: the same QEMU, the engine restarted with the new
    // certificate, the real docker CLI still answers over TLS.
    let presented = || {
        let certs = home.join("certs");
        let file = |f: &str| certs.join(f).display().to_string();
        let out = ns
            .cmd("openssl", &["s_client", "-connect", &format!("{ip}:2376"), "-CAfile", &file("ca.pem")])
            .args([
                "-cert",
                &file("cert.pem"),
                "-key",
                &file("key.pem"),
                "-verify_ip",
                &ip,
                "-verify_return_error",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && text.contains("Verify return code: 0 (ok)"),
            "openssl s_client: {text}"
        );
        n2d_pki::CertInfo::from_pem(&text).unwrap()
    };
    let before = presented();
    assert_eq!(
        before.ips,
        [ip.parse::<std::net::IpAddr>().unwrap()],
        "a bridge machine's certificate names only its address"
    );
    let qemu = ns.machine_qemu_pid("h1");
    let rotated = ns.cmd(n2d_bin(), &["certs", "rotate", "h1"]).output().unwrap();
    assert!(rotated.status.success(), "certs rotate: {}", String::from_utf8_lossy(&rotated.stderr));
    let after = presented();
    assert_ne!(after.serial, before.serial, "the engine still presents its old certificate");
    assert_eq!((after.dns_names.clone(), after.ips.clone()), (before.dns_names, before.ips));
    assert!(String::from_utf8_lossy(&rotated.stderr).contains(&after.serial));
    assert_eq!(ns.machine_qemu_pid("h1"), qemu, "rotation rebooted the machine");
    let info = ns.docker_ok(&[], &["--context", "h1", "info", "--format", "{{.Name}}"]);
    assert_eq!(info.trim(), "h1");
    assert!(ns.n2d_ok(&["certs", "ls"]).contains(&after.serial), "certs ls shows the new serial");

    // rm leaves no QEMU, tap or files.
    assert_eq!(ns.n2d(&["rm", "h1"]).status.code(), Some(2), "rm of a running machine needs -f");
    ns.n2d_ok(&["rm", "-f", "h1"]);
    assert!(ns.qemu_pids().is_empty(), "rm left QEMU running");
    assert_eq!(ns.links(), Vec::<String>::new(), "rm left links behind");
    assert!(!ns.host_state_file().exists(), "rm left host-wide network state");
    assert!(!ns.iptables("filter").contains("N2D-"), "rm left firewall chains");
    assert!(!home.join("machines/h1").exists());
    assert!(!ns.docker(&[], &["context", "inspect", "h1"]).status.success(), "rm left the docker context");
}
