//! `n2d image ls|inspect|rm|prune|export` and the guest init, against the kit's store: an
//! image a machine boots is never removed, every ID is checked before anything goes, a machine
//! whose record cannot be read blocks removals, and an export's mistakes are usage errors found
//! before anything is made.

use super::*;
use crate::image::{guest_init, ImageBuild, ImageExport, InitChoice};
use crate::ErrorKind;

const OTHER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A second image in the store, `id`, a copy of the kit's with its own ID.
pub(super) fn add_image(k: &Kit, id: &str) {
    let src = k.orch.home.images_dir().join(IMAGE).join(n2d_image::MANIFEST_FILE);
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(src).unwrap()).unwrap();
    manifest["id"] = id.into();
    let dir = k.orch.home.images_dir().join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(n2d_image::MANIFEST_FILE), serde_json::to_vec(&manifest).unwrap()).unwrap();
    std::fs::write(dir.join("rootfs.erofs"), vec![0u8; 1000]).unwrap();
}

fn ids(k: &Kit) -> Vec<String> {
    let mut ids: Vec<String> = k.orch.images().into_iter().map(|i| i.manifest.id).collect();
    ids.sort();
    ids
}

fn export(output: &std::path::Path) -> ImageExport {
    ImageExport {
        id: None,
        formats: vec![crate::image::Format::Raw],
        output: output.to_path_buf(),
        disk_size: 1 << 30,
        for_name: None,
        ip: None,
        gateway: None,
        dns: Vec::new(),
        labels: Vec::new(),
        hyperv: false,
    }
}

#[test]
fn an_image_a_machine_boots_is_not_removed() {
    let k = kit();
    k.create("h1").unwrap();
    let err = k.orch.remove_images(&[IMAGE[..12].to_string()]).unwrap_err();
    assert!(matches!(err, Error::ImageInUse { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Usage);
    assert_eq!(
        err.to_string(),
        "image feedface0011 is used by h1: remove those machines first (n2d rm NAME)"
    );
    assert_eq!(ids(&k), [IMAGE]);
}

#[test]
fn every_id_is_checked_before_any_image_is_removed() {
    let k = kit();
    add_image(&k, OTHER);
    let err = k.orch.remove_images(&[OTHER.to_string(), "nosuch".to_string()]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err:?}");
    assert_eq!(ids(&k), [OTHER, IMAGE], "an image went before every ID was found");
    let removed = k.orch.remove_images(&[OTHER[..6].to_string()]).unwrap();
    assert_eq!(removed, [&OTHER[..12]]);
    assert_eq!(ids(&k), [IMAGE]);
}

#[test]
fn prune_keeps_the_images_machines_use_and_removes_the_rest() {
    let k = kit();
    k.create("h1").unwrap();
    add_image(&k, OTHER);
    // A directory this n2d cannot read as an image, no machine's.
    let junk = k.orch.home.images_dir().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("blob"), vec![0u8; 500]).unwrap();
    let pruned = k.orch.prune_images().unwrap();
    assert_eq!(
        pruned.removed,
        [OTHER[..12].to_string(), "junk (not an image this n2d can read)".to_string()]
    );
    assert!(pruned.freed >= 1500, "{pruned:?}");
    assert_eq!(ids(&k), [IMAGE]);
    assert!(!junk.exists());
    // Nothing left to prune.
    assert_eq!(k.orch.prune_images().unwrap().removed, Vec::<String>::new());
}

#[test]
fn a_machine_whose_record_cannot_be_read_blocks_removals() {
    let k = kit();
    add_image(&k, OTHER);
    let dir = k.orch.home.machine_dir(&name("broken"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("machine.json"), b"{not json").unwrap();
    let err = k.orch.prune_images().unwrap_err();
    assert!(matches!(err, Error::ImageUsers { ref name, .. } if name == "broken"), "{err:?}");
    assert!(err.to_string().contains("n2d rm -f broken"), "{err}");
    let err = k.orch.remove_images(&[OTHER.to_string()]).unwrap_err();
    assert!(matches!(err, Error::ImageUsers { .. }), "{err:?}");
    assert_eq!(ids(&k), [OTHER, IMAGE]);
}

#[test]
fn inspect_says_which_machines_use_an_image_and_its_files() {
    let k = kit();
    k.create("h1").unwrap();
    k.create("h2").unwrap();
    let details = k.orch.inspect_image(&IMAGE[..8]).unwrap();
    assert_eq!(details.image.manifest.id, IMAGE);
    assert_eq!(details.used_by, ["h1", "h2"]);
    assert!(details.files.iter().any(|(n, _)| n == n2d_image::MANIFEST_FILE), "{:?}", details.files);
    let err = k.orch.inspect_image("").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "an empty ID is refused: {err:?}");
}

#[test]
fn the_image_named_or_else_the_newest_is_booted_and_a_missing_one_is_a_usage_error() {
    let k = kit();
    let none = ImageBuild::default();
    assert_eq!(k.orch.resolve_image(None, &none).unwrap().manifest.id, IMAGE);
    assert_eq!(k.orch.resolve_image(Some("feed"), &none).unwrap().manifest.id, IMAGE);
    let err = k.orch.resolve_image(Some("beef"), &none).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err:?}");
}

#[test]
fn with_no_image_the_default_is_built_first_and_an_unreadable_init_stops_it() {
    let k = kit();
    n2d_store::remove_dir_all(&k.orch.home.images_dir().join(IMAGE)).unwrap();
    let missing = k.dir.path().join("no-such-init");
    let build = ImageBuild {
        init: InitChoice { explicit: None, env: Some(missing.clone()), embedded: b"" },
        ..ImageBuild::default()
    };
    let err = k.orch.resolve_image(None, &build).unwrap_err();
    assert!(matches!(err, Error::GuestInitUnreadable { ref path, .. } if *path == missing), "{err:?}");
    assert!(err.to_string().ends_with("(from --init or N2D_INIT)"), "{err}");
    assert_eq!(k.said.lines(), ["No image yet: building the default image first."]);
}

#[test]
fn the_guest_init_is_the_flag_else_the_environment_else_the_embedded_one() {
    let dir = tempfile::tempdir().unwrap();
    let (flag, env) = (dir.path().join("flag"), dir.path().join("env"));
    std::fs::write(&flag, b"from the flag").unwrap();
    std::fs::write(&env, b"from the environment").unwrap();
    let choice = |explicit: Option<&std::path::Path>, env: Option<&std::path::Path>| InitChoice {
        explicit: explicit.map(Into::into),
        env: env.map(Into::into),
        embedded: b"embedded",
    };
    assert_eq!(guest_init(&choice(Some(&flag), Some(&env))).unwrap().bytes, b"from the flag");
    assert_eq!(guest_init(&choice(None, Some(&env))).unwrap().bytes, b"from the environment");
    let embedded = guest_init(&choice(None, None)).unwrap();
    assert_eq!((embedded.bytes.as_slice(), embedded.source.as_str()), (&b"embedded"[..], "built into n2d"));
    // A directory (or a FIFO, a device) is refused as the user's mistake, not read.
    let err = guest_init(&choice(Some(dir.path()), None)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err:?}");
    assert!(err.to_string().ends_with("(from --init or N2D_INIT)"), "{err}");
}

#[test]
fn an_exports_mistakes_are_usage_errors_found_before_the_ca_is_made() {
    let k = kit();
    let out = k.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let ca = k.orch.home.certs_dir().join(n2d_pki::CA_CERT);
    let hyperv = ImageExport { hyperv: true, ..export(&out) };
    let err = k.orch.export_image(&hyperv).unwrap_err();
    assert!(matches!(err, Error::Usage(_)) && err.to_string().contains("vhdx"), "{err:?}");
    let off = ImageExport {
        for_name: Some(name("web1")),
        ip: Some("192.168.1.50/24".parse().unwrap()),
        gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ..export(&out)
    };
    let err = k.orch.export_image(&off).unwrap_err();
    assert!(matches!(err, Error::Usage(_)) && err.to_string().contains("--gateway"), "{err:?}");
    let label = ImageExport { for_name: Some(name("web1")), labels: vec!["novalue".into()], ..export(&out) };
    assert_eq!(k.orch.export_image(&label).unwrap_err().kind(), ErrorKind::Usage);
    let nowhere = ImageExport { for_name: Some(name("web1")), ..export(&k.dir.path().join("nowhere")) };
    let err = k.orch.export_image(&nowhere).unwrap_err();
    assert!(matches!(err, Error::Usage(_)), "{err:?}");
    let unknown = ImageExport { id: Some("beef".into()), for_name: Some(name("web1")), ..export(&out) };
    assert_eq!(k.orch.export_image(&unknown).unwrap_err().kind(), ErrorKind::Usage);
    assert!(!ca.exists(), "a CA was made for an export that was refused");
}

#[test]
fn an_export_never_builds() {
    let k = kit();
    n2d_store::remove_dir_all(&k.orch.home.images_dir().join(IMAGE)).unwrap();
    let out = k.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let err = k.orch.export_image(&ImageExport { for_name: Some(name("web1")), ..export(&out) }).unwrap_err();
    assert!(matches!(err, Error::NoImageToExport), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Usage);
    assert!(!k.orch.home.certs_dir().join(n2d_pki::CA_CERT).exists());
}
