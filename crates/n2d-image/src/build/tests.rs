use super::mmdebstrap::*;
use super::stages::*;
use super::trim::*;
use super::*;
use crate::cache::PackageCache;
use crate::error::{BuildError, BuildStage};
use crate::init::GuestInit;
use crate::recipe::{Recipe, ENGINE_PACKAGES, SOURCE_DATE_EPOCH};
use n2d_exec::Cmd;
use std::fs;
use std::path::{Path, PathBuf};

#[test]
fn stages_are_numbered_in_order() {
    assert_eq!(BuildStage::Rootfs.number(), 1);
    assert_eq!(BuildStage::Store.number(), BuildStage::ALL.len());
}

fn recipe() -> Recipe {
    Recipe::docker_host("00".repeat(32))
}

fn mmdebstrap(
    recipe: &Recipe,
    mode: MmdebstrapMode,
    sources: &[String],
    local: &[PathBuf],
    target: &str,
) -> Cmd {
    MmdebstrapArgs { recipe, mode, sources, local_debs: local, debs_out: Path::new("/s/debs") }
        .cmd(Path::new(target))
}

fn mirror_lines(r: &Recipe) -> Vec<String> {
    r.sources.iter().map(|s| format!("deb {s} main")).collect()
}

#[test]
fn an_ordinary_user_builds_in_unshare_mode_into_a_tar_under_a_fixed_epoch() {
    let r = recipe();
    let cmd = mmdebstrap(&r, MmdebstrapMode::Unshare, &mirror_lines(&r), &[], "/s/rootfs.tar").display();
    assert!(
        cmd.starts_with(&format!(
            "env SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH} mmdebstrap --mode=unshare --variant=essential --include=docker.io,"
        )),
        "{cmd}"
    );
    assert!(
        cmd.ends_with(" trixie /s/rootfs.tar deb http://deb.debian.org/debian trixie main deb http://deb.debian.org/debian trixie-updates main deb http://deb.debian.org/debian-security trixie-security main"),
        "{cmd}"
    );
    assert!(!cmd.contains("--hook-dir"), "{cmd}");
    let cmd = mmdebstrap(&r, MmdebstrapMode::Root, &mirror_lines(&r), &[], "/s/rootfs").display();
    assert!(cmd.contains(" --mode=root "), "{cmd}");
    assert!(cmd.contains(" trixie /s/rootfs deb "), "{cmd}");
}

#[test]
fn the_hooks_fetch_the_kernel_into_apts_archives_and_copy_them_out() {
    let r = recipe();
    let cmd = mmdebstrap(&r, MmdebstrapMode::Unshare, &mirror_lines(&r), &[], "/s/rootfs.tar");
    let hooks: Vec<&str> =
        cmd.args.iter().filter_map(|a| a.to_str()?.strip_prefix("--customize-hook=")).collect();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert!(hooks[0].starts_with("cd \"$1/var/cache/apt/archives\" && "), "{}", hooks[0]);
    assert!(
        hooks[0]
            .contains("APT_CONFIG=\"$MMDEBSTRAP_APT_CONFIG\" apt-get download linux-image-cloud-amd64 $("),
        "{}",
        hooks[0]
    );
    assert!(hooks[0].contains("apt-cache depends linux-image-cloud-amd64 |"), "{}", hooks[0]);
    // Nothing of the host's staging tree: the namespace's root could not write there.
    assert!(!hooks[0].contains("/s/"), "{}", hooks[0]);
    // sync-out writes as the user, after the kernel hook, before mmdebstrap's cleanup.
    assert_eq!(hooks[1], "sync-out /var/cache/apt/archives /s/debs");
    assert!(cmd.display().contains(" --skip=essential/unlink "));
}

#[test]
fn the_cache_and_local_debs_come_with_the_file_mirror_hooks() {
    let r = recipe();
    let cache = ["deb [trusted=yes] file:///h/cache/debs ./".to_string()];
    let cmd = mmdebstrap(&r, MmdebstrapMode::Root, &cache, &[], "/s/rootfs").display();
    assert!(cmd.contains(" --hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount "), "{cmd}");
    assert!(cmd.ends_with(" trixie /s/rootfs deb [trusted=yes] file:///h/cache/debs ./"), "{cmd}");
    let local = [PathBuf::from("/s/local-debs/x_1_amd64.deb")];
    let cmd = mmdebstrap(&r, MmdebstrapMode::Root, &mirror_lines(&r), &local, "/s/rootfs").display();
    assert!(cmd.contains(" --include=/s/local-debs/x_1_amd64.deb "), "{cmd}");
    assert!(cmd.contains(" --hook-dir="), "{cmd}");
}

#[test]
fn erofs_gets_fixed_timestamps_and_the_recipes_uuid() {
    let r = recipe();
    let cmd = mkfs_erofs_cmd(&r, Path::new("/o/rootfs.erofs"), Path::new("/s/rootfs")).display();
    assert_eq!(
        cmd,
        format!(
            "mkfs.erofs -zlz4hc -T{SOURCE_DATE_EPOCH} -U{} --all-root --quiet /o/rootfs.erofs /s/rootfs",
            r.erofs_uuid()
        )
    );
}

#[test]
fn installed_packages_are_parsed_and_sorted() {
    let text = "ii \tzlib1g\t1:1.3.dfsg-3\tamd64\nii \tbase-files\t13.8\tamd64\nrc \tgone\t1\tamd64\n";
    let p = parse_installed(text);
    assert_eq!(p.len(), 2);
    assert_eq!(
        (p[0].name.as_str(), p[1].version.as_str(), p[1].arch.as_str()),
        ("base-files", "1:1.3.dfsg-3", "amd64")
    );
}

#[test]
fn apts_unknown_package_is_named() {
    assert_eq!(unknown_package("E: Unable to locate package no-such-pkg\n").as_deref(), Some("no-such-pkg"));
    assert_eq!(unknown_package("E: Package 'foo' has no installation candidate").as_deref(), Some("foo"));
    assert_eq!(unknown_package("E: Some index files failed to download"), None);
}

#[test]
fn kernel_packages_are_found_and_the_kernel_told_from_its_metapackage() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "linux-image-cloud-amd64_6.12.41-1_amd64.deb",
        "linux-image-6.12.41+deb13-cloud-amd64_6.12.41-1_amd64.deb",
        "zlib1g_1_amd64.deb",
    ] {
        fs::write(dir.path().join(f), b"x").unwrap();
    }
    let debs = kernel_debs(dir.path()).unwrap();
    assert_eq!(debs.len(), 2);
    let kernels: Vec<_> =
        debs.iter().filter(|p| is_versioned_kernel(&p.file_name().unwrap().to_string_lossy())).collect();
    assert_eq!(kernels.len(), 1);
    assert!(kernels[0].ends_with("linux-image-6.12.41+deb13-cloud-amd64_6.12.41-1_amd64.deb"));
}

#[test]
fn the_image_names_the_recipes_sources_whatever_the_build_read() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("etc/apt/sources.list.d")).unwrap();
    fs::write(dir.path().join("etc/apt/sources.list.d/0000cache.list"), "deb file:///x ./\n").unwrap();
    write_sources(dir.path(), &recipe().sources_list()).unwrap();
    assert_eq!(fs::read_dir(dir.path().join("etc/apt/sources.list.d")).unwrap().count(), 0);
    assert_eq!(fs::read_to_string(dir.path().join("etc/apt/sources.list")).unwrap(), recipe().sources_list());
}

#[test]
fn empty_mount_points_of_host_paths_are_pruned_and_the_userland_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    fs::create_dir_all(root.join("home/u/.n2d/cache/debs")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    prune_empty_dirs(&root, Path::new("/home/u/.n2d/cache/debs")).unwrap();
    assert!(!root.join("home").exists());
    assert!(root.join("usr/bin").is_dir());
    fs::create_dir_all(root.join("usr/share/x")).unwrap();
    prune_empty_dirs(&root, Path::new("/usr/share/x")).unwrap();
    assert!(!root.join("usr/share").exists() && root.join("usr/bin").is_dir());
}

#[test]
fn sources_come_from_the_mirror_the_cache_or_fail_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PackageCache::new(&dir.path().join("debs"), "trixie");
    let r = recipe();
    let up = |_: &str, _: u16| true;
    let down = |_: &str, _: u16| false;
    assert_eq!(package_source(&r, false, &cache, &up).unwrap(), PackageSource::Mirrors);
    let err = package_source(&r, false, &cache, &down).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BuildError::NoNetworkNoCache { .. }), "{err:?}");
    assert!(
        msg.contains("no network") && msg.contains("build once online") && msg.contains("--mirror file://"),
        "{msg}"
    );
    assert!(matches!(package_source(&r, true, &cache, &up), Err(BuildError::OfflineNoCache { .. })));

    fs::create_dir_all(&cache.dir).unwrap();
    fs::write(cache.dir.join("Packages"), "Package: docker.io\n\nPackage: runc\n").unwrap();
    // --offline never asks the network.
    let never = |_: &str, _: u16| -> bool { panic!("--offline reached for the network") };
    assert_eq!(package_source(&r, true, &cache, &never).unwrap(), PackageSource::Cache { no_network: None });
    assert_eq!(
        package_source(&r, false, &cache, &down).unwrap(),
        PackageSource::Cache { no_network: Some("deb.debian.org".into()) }
    );
    let missing = missing_from_cache(&r, &cache);
    assert!(
        missing.contains(&"containerd".to_string())
            && missing.contains(&"linux-image-cloud-amd64".to_string())
    );
    assert!(!missing.contains(&"runc".to_string()));

    // A local mirror is read in place, network or not.
    let mut local = r.clone();
    local.sources = vec!["file:///srv/debian trixie".into()];
    assert_eq!(package_source(&local, true, &cache, &never).unwrap(), PackageSource::Mirrors);
}

#[test]
fn a_docker_archive_replaces_debians_engine_in_the_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("docker.tgz");
    fs::write(
        &archive,
        crate::inputs::tests::tgz(&[
            ("docker/dockerd", b"x"),
            ("docker/containerd", b"x"),
            ("docker/runc", b"x"),
        ]),
    )
    .unwrap();
    let mut opts = BuildOptions::new(GuestInit { bytes: static_elf(), source: "t".into() });
    let plain = plan(&opts).unwrap().recipe;
    opts.request.docker_archive = Some(archive.clone());
    opts.request.include = vec!["strace".into()];
    let p = plan(&opts).unwrap();
    assert!(
        !p.recipe.packages.iter().any(|x| ENGINE_PACKAGES.contains(&x.as_str())),
        "{:?}",
        p.recipe.packages
    );
    assert!(
        p.recipe.packages.contains(&"iptables".to_string())
            && p.recipe.packages.contains(&"strace".to_string())
    );
    assert_eq!(p.recipe.docker_archive_sha256.as_ref().unwrap().len(), 64);
    assert_ne!(p.recipe.id(), plain.id());
    assert_eq!(p.docker_archive, Some(archive));
}

/// `base` with another request.
fn with(base: &BuildOptions, request: BuildRequest) -> BuildOptions {
    BuildOptions { request, ..base.clone() }
}

#[test]
fn bad_inputs_are_refused_before_any_work_as_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = BuildOptions::new(GuestInit { bytes: static_elf(), source: "t".into() });
    let text = dir.path().join("notes.txt");
    fs::write(&text, "x").unwrap();
    let cases: Vec<(BuildOptions, &str)> = vec![
        (
            with(&base, BuildRequest { debs: vec![dir.path().join("gone.deb")], ..Default::default() }),
            "gone.deb",
        ),
        (with(&base, BuildRequest { debs: vec![text.clone()], ..Default::default() }), "notes.txt"),
        (with(&base, BuildRequest { docker_archive: Some(text.clone()), ..Default::default() }), "notes.txt"),
        (
            with(&base, BuildRequest { mirror: Some("ftp://x/debian".into()), ..Default::default() }),
            "ftp://x/debian",
        ),
        (
            with(&base, BuildRequest { mirror: Some("file:///no/such/mirror".into()), ..Default::default() }),
            "/no/such/mirror",
        ),
        (with(&base, BuildRequest { include: vec!["Bad Name".into()], ..Default::default() }), "Bad Name"),
    ];
    for (opts, named) in cases {
        let err = plan(&opts).unwrap_err();
        assert!(err.is_usage(), "{err:?}");
        assert!(err.to_string().contains(named), "{err}");
    }
}

/// The smallest static x86-64 ELF the init check accepts.
fn static_elf() -> Vec<u8> {
    crate::init::tests::minimal_static_elf()
}

#[test]
fn extraction_keeps_modes_and_drops_owners_and_device_nodes() {
    let cmd = extract_cmd(Path::new("/s/rootfs.tar"), Path::new("/s/rootfs"));
    assert_eq!(
        cmd.display(),
        "tar --extract --file /s/rootfs.tar --directory /s/rootfs --same-permissions --no-same-owner --exclude=./dev/*"
    );
}

#[test]
fn trimming_drops_listed_paths_and_versioned_names_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("usr/share/perl5/Debconf")).unwrap();
    for f in ["usr/bin/perl5.40.1", "usr/bin/perl", "usr/bin/ctr", "usr/bin/dockerd", "usr/bin/perlx"] {
        fs::write(root.join(f), b"x").unwrap();
    }
    trim_rootfs(root).unwrap();
    let mut left: Vec<String> = fs::read_dir(root.join("usr/bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["dockerd", "perlx"]);
    assert!(!root.join("usr/share/perl5").exists());
}

#[test]
fn walk_lists_parents_before_children() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("b/c")).unwrap();
    fs::write(dir.path().join("b/c/f"), b"x").unwrap();
    fs::write(dir.path().join("a"), b"y").unwrap();
    let mut out = Vec::new();
    walk(dir.path(), dir.path(), &mut out).unwrap();
    let names: Vec<_> = out.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    assert_eq!(names, [("a", false), ("b", true), ("b/c", true), ("b/c/f", false)]);
}

#[test]
fn a_dynamically_linked_init_is_refused_before_any_work() {
    // This test binary is linked against the host's C library, like a plain host build of
    // n2d-init: the recipe (the first step of a build) refuses it, naming the fix.
    let me = fs::read(std::env::current_exe().unwrap()).unwrap();
    let init = GuestInit { bytes: me, source: "/tmp/n2d-init".into() };
    let opts = BuildOptions::new(init);
    let err = recipe_for(&opts).unwrap_err().to_string();
    assert!(err.contains("/tmp/n2d-init") && err.contains("dynamically linked"), "{err}");
    assert!(err.contains("x86_64-unknown-linux-musl"), "{err}");
}
