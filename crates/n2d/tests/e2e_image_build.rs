//! End to end: image builds that are reproducible and work offline, and an image running
//! Docker's static binaries tarball instead of Debian's engine. Ignored by default (root,
//! Debian's mirror once, QEMU): `cargo test --release -p n2d --test e2e_image_build -- --ignored`.
//!
//! 1. The default image of the e2e tests' shared home, built online (by the first e2e test to
//!    run): its artifacts' sha256 recorded, its directory removed.
//! 2. Rebuilt in a network namespace with only loopback: from the package cache, byte for byte
//!    the same artifacts and `artifacts_sha256`.
//! 3. A docker archive in the official layout (`docker/dockerd`, …), repacked from the cached
//!    Debian packages of the first build; an `--offline` build from it; a machine booted from it
//!    in that namespace answers the host's docker CLI with that engine; then `image rm`.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn n2d_build(home: &Path, ns: Option<&Netns>, args: &[&str]) -> (String, String) {
    let mut cmd = match ns {
        Some(ns) => ns.cmd(n2d_bin(), &[]),
        None => Command::new(n2d_bin()),
    };
    let out = cmd
        .args(["image", "build"])
        .args(args)
        .env("N2D_HOME", home)
        .env_remove("N2D_INIT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("$ n2d image build {}\n{}", args.join(" "), stderr.trim_end());
    assert!(out.status.success(), "image build {args:?} failed");
    (String::from_utf8(out.stdout).unwrap().trim().to_string(), stderr)
}

fn manifest(home: &Path, id: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(home.join("images").join(id).join("image.json")).unwrap()).unwrap()
}

const ARTIFACTS: [&str; 3] = ["vmlinuz", "initrd.img", "rootfs.erofs"];

fn sha256s(dir: &Path) -> Vec<String> {
    ARTIFACTS.iter().map(|f| run_ok(Command::new("sha256sum").arg(dir.join(f)))[..64].to_string()).collect()
}

/// The cached .deb of a package (the cache is one directory per suite).
fn cached_deb(home: &Path, package: &str) -> PathBuf {
    let dir = home.join("cache/debs/trixie");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{package}_")))
        .unwrap_or_else(|| panic!("no {package} in {}", dir.display()))
}

/// Docker's static binaries layout, made of Debian's binaries: `docker/<name>` in a .tgz.
fn docker_archive(home: &Path, work: &Path) -> PathBuf {
    let x = work.join("x");
    for package in ["docker.io", "containerd", "runc", "tini"] {
        run_ok(Command::new("dpkg-deb").arg("-x").arg(cached_deb(home, package)).arg(&x));
    }
    let docker = work.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    for (from, to) in [
        ("usr/sbin/dockerd", "dockerd"),
        ("usr/sbin/docker-proxy", "docker-proxy"),
        ("usr/bin/tini-static", "docker-init"),
        ("usr/bin/containerd", "containerd"),
        ("usr/bin/containerd-shim-runc-v2", "containerd-shim-runc-v2"),
        ("usr/bin/ctr", "ctr"),
        ("usr/sbin/runc", "runc"),
    ] {
        std::fs::copy(x.join(from), docker.join(to)).unwrap();
    }
    let tgz = work.join("docker-repacked.tgz");
    run_ok(Command::new("tar").arg("-czf").arg(&tgz).arg("-C").arg(work).arg("docker"));
    tgz
}

#[test]
#[ignore = "builds images and boots a VM: needs root, Debian's mirror and QEMU; run with --ignored"]
fn offline_rebuild_is_byte_identical_and_a_docker_archive_image_runs_that_engine() {
    // The e2e tests' shared home: its image is built (online) by whichever test runs first, and
    // rebuilt here byte for byte, so the other tests find it as it was.
    let home = e2e_home();
    build_image(&home);

    // 1. Online (or built already: the same image, and its packages in the cache).
    let (id, _) = n2d_build(&home, None, &[]);
    let first = manifest(&home, &id);
    let sums = sha256s(&home.join("images").join(&id));
    // The kernel is stored once, as Debian ships it (no decompressed `vmlinux` beside it).
    assert!(!home.join("images").join(&id).join("vmlinux").exists());
    assert_eq!(first["artifacts_sha256"].as_str().unwrap().len(), 64);
    assert!(first["packages"].as_array().unwrap().iter().any(|p| p["name"] == "docker.io"));
    assert!(first["debs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["file"].as_str().unwrap().starts_with("linux-image-")));
    std::fs::remove_dir_all(home.join("images").join(&id)).unwrap();

    // 2. No network: the cache, the same bytes.
    let ns = Netns::new("n2d-e2e-image", &home);
    let (again, said) = n2d_build(&home, Some(&ns), &[]);
    assert_eq!(again, id);
    assert!(said.contains("from the package cache"), "{said}");
    assert_eq!(sha256s(&home.join("images").join(&id)), sums, "an offline rebuild gave other bytes");
    assert_eq!(manifest(&home, &id)["artifacts_sha256"], first["artifacts_sha256"]);

    // 3. A docker archive: checked, built offline, booted.
    let work = tempfile::tempdir().unwrap();
    let archive = docker_archive(&home, work.path());
    // Debian's binaries are dynamically linked: what the engine packages brought, asked for.
    let archive_arg = archive.to_str().unwrap();
    let args = [
        "--offline",
        "--docker-archive",
        archive_arg,
        "--include",
        "libseccomp2",
        "--include",
        "libsystemd0",
    ];
    let (arch_id, _) = n2d_build(&home, Some(&ns), &args);
    // Removed however the test ends: the other tests boot the newest image of the shared home.
    let _arch_image = RemoveImage { home: home.clone(), id: arch_id.clone() };
    assert_ne!(arch_id, id);
    let m = manifest(&home, &arch_id);
    let names: Vec<&str> =
        m["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for engine in ["docker.io", "containerd", "runc"] {
        assert!(!names.contains(&engine), "{engine} installed from Debian: {names:?}");
    }
    assert_eq!(m["recipe"]["docker_archive_sha256"].as_str().unwrap().len(), 64);

    let created = ns.n2d_ok(&["create", "arch-0", "--image", &arch_id, "--memory", "1536M"]);
    assert!(!created.trim().is_empty());
    let env = parse_env(&ns.n2d_ok(&["env", "arch-0"]));
    let version = ns.docker_ok(&env, &["version", "--format", "{{.Server.Version}}"]);
    let debian = first["packages"].as_array().unwrap().iter().find(|p| p["name"] == "docker.io").unwrap()
        ["version"]
        .as_str()
        .unwrap()
        .to_string();
    // The archive's engine: the version of the Debian binaries repacked into it (26.1.5+dfsg1-…).
    assert!(!version.trim().is_empty() && debian.starts_with(version.trim()), "{version} vs {debian}");
    ns.n2d_ok(&["rm", "-f", "arch-0"]);
    ns.n2d_ok(&["image", "rm", &arch_id]);
    assert!(!home.join("images").join(&arch_id).exists());
}

/// `n2d image rm ID` when dropped (after the machine that booted it is gone).
struct RemoveImage {
    home: PathBuf,
    id: String,
}

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.home.join("machines/arch-0"));
        let _ = Command::new(n2d_bin()).args(["image", "rm", &self.id]).env("N2D_HOME", &self.home).output();
    }
}
