//! Warm starts over the fakes: a template made once and cloned, what makes one unfit, and the
//! cold boot a failed clone falls back to.

use super::*;
use crate::templates::{check_template, template_dirs, Shape};

fn warm_kit() -> Kit {
    let k = kit();
    k.orch.set_cold_boots(false);
    k
}

fn image_dir(k: &Kit) -> std::path::PathBuf {
    k.orch.home.images_dir().join(IMAGE)
}

fn templates(k: &Kit) -> Vec<std::path::PathBuf> {
    template_dirs(&image_dir(k))
}

fn template_vm() -> String {
    format!("template-{}", &IMAGE[..12])
}

#[test]
fn the_first_create_makes_a_template_and_every_create_clones_it() {
    let k = warm_kit();
    let a = k.create("a").unwrap();
    let b = k.create("b").unwrap();
    let t = template_vm();
    // The identity request carries the host's clock: its value is checked by the guest's tests.
    let events: Vec<String> = k
        .vms()
        .events()
        .into_iter()
        .map(|e| e.split_once(" identity ").map_or(e.clone(), |(head, _)| format!("{head} identity")))
        .collect();
    assert_eq!(
        events,
        [
            format!("start {t}"),
            format!("wait_ready {t}"),
            format!("save {t}"),
            "restore a".into(),
            "control a identity".into(),
            "wait_ready a".into(),
            "restore b".into(),
            "control b identity".into(),
            "wait_ready b".into(),
        ]
    );
    // One template, complete and read-only; both machines name it and layer their disks on it.
    let dirs = templates(&k);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let template = check_template(&dirs[0], "fake QEMU 10.0.2").unwrap();
    assert_eq!(template.record.shape, Shape::of(&spec("a")));
    assert_eq!(a.warm_from.as_deref(), Some(template.name().as_str()));
    assert_eq!(b.warm_from, a.warm_from);
    let mode = std::fs::metadata(template.data()).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o400);
    let overlays: Vec<String> =
        k.orch.runner.qemu_img.lock().unwrap().iter().filter(|c| c.contains(" -b ")).cloned().collect();
    assert_eq!(overlays.len(), 2, "{overlays:?}");
    assert!(overlays[0].contains(&format!("-b {} -F qcow2", template.data().display())), "{overlays:?}");
    // The clone's RAM is the template's file, mapped copy-on-write.
    let launch = k.vms().last_launch("b").unwrap();
    assert_eq!(launch.memory, n2d_vm::Memory::CloneOf(template.ram()));
    // A clone's later starts are cold boots of its own disk.
    k.orch.stop_machine(&name("a"), BOOT).unwrap();
    k.orch.start_machine(&name("a"), BOOT).unwrap();
    assert_eq!(k.vms().last_launch("a").unwrap().memory, n2d_vm::Memory::Private);
    assert_eq!(k.vms().count("start a"), 1);
}

#[test]
fn cold_boots_make_no_template() {
    let k = warm_kit();
    k.orch.set_cold_boots(true);
    let a = k.create("a").unwrap();
    assert_eq!(k.vms().events(), ["start a", "wait_ready a"]);
    assert_eq!(a.warm_from, None);
    assert!(templates(&k).is_empty());
}

#[test]
fn a_clone_that_fails_boots_cold_on_a_new_disk_with_one_line() {
    let k = warm_kit();
    k.vms().fail_restore("a");
    let a = k.create("a").unwrap();
    assert_eq!(a.warm_from, None);
    assert_eq!(k.orch.load_record(&name("a")).unwrap().warm_from, None);
    assert!(k.vms().is_running("a"));
    let warnings: Vec<String> =
        k.said.lines().into_iter().filter(|l| l.contains("warm template (")).collect();
    assert_eq!(warnings.len(), 1, "{:?}", k.said.lines());
    assert!(
        warnings[0].contains("a could not start from its warm template")
            && warnings[0].ends_with("booting it cold")
    );
    // The cold boot got an empty disk, not the layer over the template's.
    let last = k.orch.runner.qemu_img.lock().unwrap().last().cloned().unwrap();
    assert!(!last.contains(" -b "), "{last}");
    assert_eq!(k.vms().count("start a"), 1);
}

#[test]
fn a_template_that_cannot_be_made_leaves_nothing_and_the_machine_boots_cold() {
    let k = warm_kit();
    k.vms().fail_boot(&template_vm(), BootFault::Timeout);
    let a = k.create("a").unwrap();
    assert_eq!(a.warm_from, None);
    assert!(templates(&k).is_empty(), "{:?}", templates(&k));
    assert!(!k.vms().is_running(&template_vm()), "the template's QEMU was left running");
    assert!(k.said.lines().iter().any(|l| l.contains("no warm template for image")), "{:?}", k.said.lines());
}

#[test]
fn a_damaged_template_or_another_qemu_is_passed_over_with_one_line_and_another_made() {
    let k = warm_kit();
    k.create("a").unwrap();
    let first = templates(&k)[0].clone();
    // Its device state damaged: passed over, a new one made.
    let state = first.join("state");
    let mut perms = std::fs::metadata(&state).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&state, perms).unwrap();
    std::fs::write(&state, b"garbage").unwrap();
    // Template names carry the time they were made in ms: let the clock move on.
    std::thread::sleep(Duration::from_millis(5));
    let b = k.create("b").unwrap();
    let lines = k.said.lines();
    let passed: Vec<&String> = lines.iter().filter(|l| l.contains("is not used")).collect();
    assert_eq!(passed.len(), 1, "{lines:?}");
    assert!(passed[0].contains("its device state was changed"), "{}", passed[0]);
    assert_eq!(templates(&k).len(), 2);
    assert_ne!(b.warm_from.as_deref(), Some(first.file_name().unwrap().to_str().unwrap()));
    // The first one stays: machine a's disk is layered on it.
    assert!(first.exists());

    // QEMU upgraded: no template of the old build is used.
    k.vms().set_build("fake QEMU 11.0.0");
    std::thread::sleep(Duration::from_millis(5));
    let c = k.create("c").unwrap();
    assert!(k.said.lines().iter().any(|l| l.contains("saved by another QEMU (fake QEMU 10.0.2)")));
    assert_eq!(templates(&k).len(), 3);
    let made = check_template(&templates(&k)[2], "fake QEMU 11.0.0").unwrap();
    assert_eq!(c.warm_from, Some(made.name()));
}

#[test]
fn an_interrupted_clone_is_rolled_back_not_booted_cold() {
    let k = warm_kit();
    k.create("a").unwrap();
    k.vms().fail_boot("b", BootFault::Interrupted);
    let err = k.create("b").unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Interrupted, "{err:?}");
    k.assert_gone("b");
    assert_eq!(k.vms().count("start b"), 0);
}

#[test]
fn a_swarm_makes_one_template_for_all_its_nodes() {
    let k = warm_kit();
    make_swarm(&k, 1, 2);
    assert_eq!(templates(&k).len(), 1);
    assert_eq!(k.vms().count(&format!("save {}", template_vm())), 1);
    assert_eq!(k.vms().count("restore "), 3);
    assert_eq!(k.vms().count("start n2d-"), 0, "{:?}", k.vms().events());
}

#[test]
fn image_warm_makes_a_template_once_and_create_clones_it() {
    let k = warm_kit();
    let request = crate::templates::WarmRequest {
        cpus: Some(1),
        memory: "512M".into(),
        disk: "1G".into(),
        network: Some("n2d0".into()),
    };
    let (made, was_made) = k.orch.warm_image(None, &request).unwrap();
    assert!(was_made);
    let (again, was_made) = k.orch.warm_image(Some(&IMAGE[..8]), &request).unwrap();
    assert!(!was_made);
    assert_eq!(again, made);
    // spec() is 1 vCPU, 512 MiB, 1 GiB on n2d0: the same shape, so no other template.
    let a = k.create("a").unwrap();
    assert_eq!(a.warm_from, Some(made.name()));
    assert_eq!(templates(&k).len(), 1);
    // Another shape is another template.
    let (other, was_made) =
        k.orch.warm_image(None, &crate::templates::WarmRequest { memory: "1G".into(), ..request }).unwrap();
    assert!(was_made && other != made);
}

#[test]
fn image_warm_checks_the_shape_as_create_does_before_booting_anything() {
    let k = warm_kit();
    let request = |cpus: u32, memory: &str, disk: &str| crate::templates::WarmRequest {
        cpus: Some(cpus),
        memory: memory.into(),
        disk: disk.into(),
        network: Some("n2d0".into()),
    };
    for (bad, flag) in [
        (request(0, "1G", "1G"), "--cpus"),
        (request(1000, "1G", "1G"), "--cpus"),
        (request(1, "1K", "1G"), "--memory"),
        (request(1, "1G", "1K"), "--disk"),
        (request(1, "lots", "1G"), "--memory"),
    ] {
        let err = k.orch.warm_image(None, &bad).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Usage, "{err}");
        assert!(err.to_string().contains(flag), "{flag}: {err}");
    }
    assert!(k.vms().events().is_empty(), "{:?}", k.vms().events());
    assert!(templates(&k).is_empty());
}

#[test]
fn image_warm_without_an_image_is_a_usage_error() {
    let k = warm_kit();
    std::fs::remove_dir_all(image_dir(&k)).unwrap();
    let request =
        crate::templates::WarmRequest { cpus: None, memory: "1G".into(), disk: "1G".into(), network: None };
    let err = k.orch.warm_image(None, &request).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Usage, "{err}");
    assert!(err.to_string().contains("n2d image build"), "{err}");
}

#[test]
fn a_changed_ram_file_is_passed_over() {
    let k = warm_kit();
    k.create("a").unwrap();
    let ram = templates(&k)[0].join("ram");
    let mut perms = std::fs::metadata(&ram).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&ram, perms).unwrap();
    std::fs::write(&ram, b"changed").unwrap();
    std::thread::sleep(Duration::from_millis(5));
    k.create("b").unwrap();
    assert!(k.said.lines().iter().any(|l| l.contains("its RAM file was changed")), "{:?}", k.said.lines());
    assert_eq!(templates(&k).len(), 2);
}

#[test]
fn what_a_killed_n2d_left_while_making_a_template_is_swept() {
    let k = warm_kit();
    // pid 0 is never an n2d: its maker is dead. Its QEMU is found by the directory and ended.
    let left = k.orch.home.images_dir().join(".warm-0-1");
    std::fs::create_dir_all(&left).unwrap();
    k.vms().set_running("template");
    k.create("a").unwrap();
    assert!(!left.exists(), "the unfinished template was left");
    assert!(k.vms().events().contains(&"kill template".to_string()), "{:?}", k.vms().events());
    // One being made by a live n2d (this test's own pid) is left alone.
    let live = k.orch.home.images_dir().join(format!(".warm-{}-1", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();
    k.orch.set_cold_boots(false);
    std::fs::remove_dir_all(&templates(&k)[0]).unwrap();
    k.create("b").unwrap();
    assert!(live.exists());
}

#[test]
fn a_rebuilt_image_uses_none_of_the_old_images_templates() {
    let k = warm_kit();
    k.create("a").unwrap();
    // A rebuild with other inputs is another image, with another ID and no templates yet.
    let rebuilt = "beef".repeat(16);
    let old_dir = image_dir(&k);
    let new_dir = k.orch.home.images_dir().join(&rebuilt);
    std::fs::create_dir_all(&new_dir).unwrap();
    let manifest = std::fs::read_to_string(old_dir.join(n2d_image::MANIFEST_FILE)).unwrap();
    std::fs::write(new_dir.join(n2d_image::MANIFEST_FILE), manifest.replace(IMAGE, &rebuilt)).unwrap();
    let b = k.orch.create_machine(&MachineSpec { image: rebuilt.clone(), ..spec("b") }, None, BOOT).unwrap();
    let made = template_dirs(&new_dir);
    assert_eq!(made.len(), 1, "no template was made for the rebuilt image");
    assert_eq!(b.warm_from.as_deref(), made[0].file_name().and_then(|n| n.to_str()));
    assert_eq!(k.vms().count("save template-beefbeefbeef"), 1);
    assert_eq!(templates(&k).len(), 1, "the old image's template is its own");
}

#[test]
fn a_clone_that_never_gets_ready_boots_cold() {
    // As when its guest refuses the identity: no ready marker ever comes.
    let k = warm_kit();
    k.vms().fail_boot("a", BootFault::Timeout);
    let a = k.create("a").unwrap();
    assert_eq!(a.warm_from, None);
    assert_eq!(k.vms().count("restore a"), 1);
    assert_eq!(k.vms().count("kill a"), 1, "the clone's QEMU was not ended before the cold boot");
    assert_eq!(k.vms().count("start a"), 1);
    assert!(k.vms().is_running("a"));
    let lines = k.said.lines();
    assert!(lines.iter().any(|l| l.contains("a could not start from its warm template")), "{lines:?}");
}

#[test]
fn a_machine_with_host_folders_boots_cold_shares_them_and_cannot_be_suspended() {
    let k = warm_kit();
    let folder = tempfile::tempdir().unwrap();
    let typed: n2d_spec::mount::HostMount = format!("{}:/app:ro", folder.path().display()).parse().unwrap();
    let request = crate::inventory::MachineRequest {
        memory: "1G".into(),
        disk: "1G".into(),
        network: Some("n2d0".into()),
        mounts: vec![typed, folder.path().display().to_string().parse().unwrap()],
        ..Default::default()
    };
    // Two folders at one guest path.
    let request = crate::inventory::MachineRequest {
        mounts: vec![request.mounts[0].clone(), format!("{}:/app", folder.path().display()).parse().unwrap()],
        ..request
    };
    let err = k.orch.plan_machine(&name("m"), &request).unwrap_err();
    assert!(err.to_string().contains("guest path of two"), "{err}");
    assert_eq!(err.kind(), crate::ErrorKind::Usage);
    let request = crate::inventory::MachineRequest {
        mounts: vec![format!("{}:/app:ro", folder.path().display()).parse().unwrap()],
        ..request
    };
    let mut spec = k.orch.plan_machine(&name("m"), &request).unwrap();
    spec.image = IMAGE.into();
    let m = k.orch.create_machine(&spec, None, BOOT).unwrap();
    assert_eq!(m.warm_from, None, "no template has a 9p device");
    assert!(templates(&k).is_empty());
    assert!(
        k.said.lines().iter().any(|l| l.contains("m: host folders are shared from boot")),
        "{:?}",
        k.said.lines()
    );
    let launch = k.vms().last_launch("m").unwrap();
    assert_eq!(launch.mounts.len(), 1);
    assert_eq!(launch.mounts[0].host, folder.path().canonicalize().unwrap());
    assert!(launch.mounts[0].read_only);
    let err = k.orch.suspend_machine(&name("m")).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Usage, "{err}");
    assert!(err.to_string().contains("stop it instead"), "{err}");
}

#[test]
fn host_folders_must_exist_be_directories_and_have_a_guest_path_outside_the_guests_own() {
    let k = warm_kit();
    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join("f");
    std::fs::write(&file, "x").unwrap();
    for (given, says) in [
        (folder.path().join("nosuch").display().to_string(), "No such file"),
        (file.display().to_string(), "is not a directory"),
        (format!("{}:/var/lib/docker/x", folder.path().display()), "belongs to the guest"),
    ] {
        let mount = match given.parse::<n2d_spec::mount::HostMount>() {
            Ok(m) => m,
            Err(e) => {
                assert!(e.to_string().contains(says), "{given}: {e}");
                continue;
            }
        };
        let request = crate::inventory::MachineRequest {
            memory: "1G".into(),
            disk: "1G".into(),
            network: Some("n2d0".into()),
            mounts: vec![mount],
            ..Default::default()
        };
        let err = k.orch.plan_machine(&name("m"), &request).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Usage, "{given}: {err}");
        assert!(err.to_string().contains(says), "{given}: {err}");
    }
}
