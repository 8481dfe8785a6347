//! Exports of a small fake image with the real tools (objcopy, qemu-img, xorriso, sgdisk),
//! skipped where one is missing: the disk's GPT as sgdisk reads it, the ISO's files as xorriso
//! lists them, byte-identical repeats, and nothing left behind by a failure.

use n2d_exec::{SearchPath, SystemRunner};
use n2d_export::{export, ExportRequest, ForMachine, Format};
use n2d_image::{Image, ImageManifest, Recipe};
use std::path::Path;
use std::process::Command;

/// This test process's `$PATH`, as the CLI's settings read it.
fn search_path() -> SearchPath {
    SearchPath::from_path_var(std::env::var_os("PATH").as_deref())
}

fn tools_present() -> bool {
    let tools = ["objcopy", "qemu-img", "xorriso", "sgdisk"];
    let ok = tools.iter().all(|t| search_path().is_installed_or_in_sbin(t))
        && Path::new(n2d_export::uki::STUB_PATH).exists()
        && n2d_export::iso::BIOS_FILES.iter().all(|(p, _)| Path::new(p).exists());
    if !ok {
        eprintln!("skipped: needs {tools:?}, systemd-boot-efi, isolinux and syslinux-common");
    }
    ok
}

fn fake_image(dir: &Path) -> Image {
    let write = |name: &str, len: usize, seed: u8| {
        let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        std::fs::write(dir.join(name), bytes).unwrap();
        len as u64
    };
    let manifest = ImageManifest {
        id: "0123456789abcdef0123456789abcdef".into(),
        recipe: Recipe::docker_host("init".into()),
        kernel_release: "6.12.0-test".into(),
        created_unix: 1_700_000_000,
        kernel_bytes: write("vmlinuz", 300_000, 1),
        initrd_bytes: write("initrd.img", 200_000, 2),
        rootfs_bytes: write("rootfs.erofs", 3 << 20, 3),
        rootfs_unpacked_bytes: 0,
        recipe_id: "0".repeat(64),
        packages: Vec::new(),
        source_date_epoch: 1_700_000_000,
        debs: Vec::new(),
        init_sha256: String::new(),
        artifacts_sha256: String::new(),
    };
    Image { dir: dir.to_path_buf(), manifest }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn request<'a>(image: &'a Image, out: &Path, formats: Vec<Format>) -> ExportRequest<'a> {
    ExportRequest {
        image,
        formats,
        output_dir: out.to_path_buf(),
        disk_size: 1 << 30,
        machine: Some(ForMachine { name: "web1".into(), config_disk: b"N2DCONF1-test".to_vec() }),
        hyperv: None,
        cancel: None,
        search_path: search_path(),
    }
}

#[test]
fn disks_and_iso_are_laid_out_as_agreed_and_reproducible() {
    if !tools_present() {
        return;
    }
    let img_dir = tempfile::tempdir().unwrap();
    let image = fake_image(img_dir.path());
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let formats = vec![Format::Raw, Format::Qcow2, Format::Vhdx, Format::Vmdk, Format::Iso];
    let files = export(&SystemRunner, &request(&image, a.path(), formats.clone()), &|_| {}).unwrap();
    let names: Vec<String> =
        files.iter().map(|f| f.path.file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(
        names,
        [
            "n2d-0123456789ab-web1.img",
            "n2d-0123456789ab-web1.iso",
            "n2d-0123456789ab-web1.qcow2",
            "n2d-0123456789ab-web1.vhdx",
            "n2d-0123456789ab-web1.vmdk"
        ]
    );
    // Only the exports: the work directory is gone.
    assert_eq!(std::fs::read_dir(a.path()).unwrap().count(), 5);
    // The VHDX and VMDK, their identifiers pinned, are sound and hold the raw disk's bytes.
    for name in &names[3..] {
        let path = a.path().join(name);
        run("qemu-img", &["check", path.to_str().unwrap()]);
        let raw = a.path().join(&names[0]);
        run("qemu-img", &["compare", "-f", "raw", raw.to_str().unwrap(), path.to_str().unwrap()]);
    }

    let raw = a.path().join(&names[0]);
    let table = run("sgdisk", &["-p", raw.to_str().unwrap()]);
    for part in ["EF00", "n2d-root", "n2d-config", "n2d-data"] {
        assert!(table.contains(part), "{part} missing:\n{table}");
    }
    let verify = run("sgdisk", &["-v", raw.to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "{verify}");
    // The config partition starts with the config bytes.
    let info = run("sgdisk", &["-i", "3", raw.to_str().unwrap()]);
    let first: u64 = info
        .lines()
        .find(|l| l.starts_with("First sector"))
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let disk = std::fs::read(&raw).unwrap();
    assert_eq!(&disk[(first * 512) as usize..(first * 512) as usize + 13], b"N2DCONF1-test");
    let qinfo = run("qemu-img", &["info", a.path().join(&names[2]).to_str().unwrap()]);
    assert!(qinfo.contains("file format: qcow2") && qinfo.contains("virtual size: 1 GiB"), "{qinfo}");

    let iso = a.path().join(&names[1]);
    let listing = run("xorriso", &["-indev", iso.to_str().unwrap(), "-find", "/", "-type", "f"]);
    for path in
        ["/n2d/rootfs.erofs", "/n2d/config", "/boot/vmlinuz", "/boot/initrd.img", "/isolinux/isolinux.bin"]
    {
        assert!(listing.contains(path), "{path} missing:\n{listing}");
    }
    let boot = run("xorriso", &["-indev", iso.to_str().unwrap(), "-report_el_torito", "plain"]);
    assert!(boot.contains("BIOS") && boot.contains("UEFI"), "{boot}");

    // The same inputs, again: byte-identical.
    export(&SystemRunner, &request(&image, b.path(), formats), &|_| {}).unwrap();
    for name in &names {
        let same =
            Command::new("cmp").arg("-l").arg(a.path().join(name)).arg(b.path().join(name)).output().unwrap();
        let diff: String =
            String::from_utf8_lossy(&same.stdout).lines().take(20).collect::<Vec<_>>().join("\n");
        assert!(same.status.success(), "{name} differs between two exports (offset, octal bytes):\n{diff}");
    }
}

#[test]
fn a_failed_export_leaves_nothing() {
    if !tools_present() {
        return;
    }
    let img_dir = tempfile::tempdir().unwrap();
    let mut image = fake_image(img_dir.path());
    // The root goes missing after planning: the raw disk fails midway.
    std::fs::remove_file(img_dir.path().join("rootfs.erofs")).unwrap();
    image.manifest.rootfs_bytes = 1 << 20;
    let out = tempfile::tempdir().unwrap();
    let err = export(&SystemRunner, &request(&image, out.path(), vec![Format::Raw, Format::Iso]), &|_| {});
    assert!(err.is_err());
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "partial files left");
}

/// Runs the real tools, and before each looks at the output directory: all it may hold then is
/// n2d's private work directory (and what the test planted).
struct Watching<'a> {
    out: &'a Path,
    planted: Vec<String>,
    runs: std::sync::Mutex<usize>,
}

impl n2d_exec::Runner for Watching<'_> {
    fn run(&self, cmd: &n2d_exec::Cmd) -> Result<Vec<u8>, n2d_exec::ExecError> {
        use std::os::unix::fs::MetadataExt;
        let entries: Vec<_> = std::fs::read_dir(self.out)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| !self.planted.contains(&e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(entries.len(), 1, "during {}: {entries:?}", cmd.program);
        let name = entries[0].file_name().to_string_lossy().into_owned();
        let suffix = name.strip_prefix(n2d_export::outdir::WORK_PREFIX).unwrap_or_else(|| panic!("{name}"));
        assert!(suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        let meta = std::fs::symlink_metadata(entries[0].path()).unwrap();
        assert!(meta.is_dir() && meta.mode() & 0o7777 == 0o700, "{name}: {:o}", meta.mode());
        *self.runs.lock().unwrap() += 1;
        SystemRunner.run(cmd)
    }
}

#[test]
fn a_for_export_keeps_the_key_in_a_private_work_dir_and_its_files_are_0600() {
    use std::os::unix::fs::MetadataExt;
    if !tools_present() {
        return;
    }
    let img_dir = tempfile::tempdir().unwrap();
    let image = fake_image(img_dir.path());
    let out = tempfile::tempdir().unwrap();
    // A directory at the old predictable work-directory name changes nothing and is left alone.
    let old = format!(".n2d-export-{}-0123456789ab", std::process::id());
    std::fs::create_dir(out.path().join(&old)).unwrap();
    std::fs::write(out.path().join(&old).join("theirs"), b"x").unwrap();
    let watch = Watching { out: out.path(), planted: vec![old.clone()], runs: Default::default() };
    let formats = vec![Format::Raw, Format::Qcow2, Format::Iso];
    let files = export(&watch, &request(&image, out.path(), formats), &|_| {}).unwrap();
    assert!(*watch.runs.lock().unwrap() >= 3, "objcopy, qemu-img and xorriso ran");
    assert_eq!(files.len(), 3);
    for f in &files {
        let meta = std::fs::symlink_metadata(&f.path).unwrap();
        assert!(meta.is_file() && meta.mode() & 0o7777 == 0o600, "{}: {:o}", f.path.display(), meta.mode());
    }
    assert_eq!(std::fs::read(out.path().join(&old).join("theirs")).unwrap(), b"x");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 4, "the exports and the planted directory");

    // Without --for nothing secret is in it: readable by all, as any build artifact.
    let out = tempfile::tempdir().unwrap();
    let mut req = request(&image, out.path(), vec![Format::Raw]);
    req.machine = None;
    let files = export(&SystemRunner, &req, &|_| {}).unwrap();
    assert_eq!(std::fs::metadata(&files[0].path).unwrap().mode() & 0o7777, 0o644);
}

#[test]
fn a_symlink_at_a_final_name_is_not_followed_and_nothing_is_left() {
    if !tools_present() {
        return;
    }
    let img_dir = tempfile::tempdir().unwrap();
    let image = fake_image(img_dir.path());
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let target = root.path().join("precious");
    std::fs::write(&target, b"keep me").unwrap();
    std::os::unix::fs::symlink(&target, out.join("n2d-0123456789ab-web1.iso")).unwrap();
    let err =
        export(&SystemRunner, &request(&image, &out, vec![Format::Raw, Format::Iso]), &|_| {}).unwrap_err();
    assert!(err.is_usage(), "{err:?}");
    assert!(
        err.to_string().contains("n2d-0123456789ab-web1.iso already exists and is a symbolic link"),
        "{err}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["n2d-0123456789ab-web1.iso"], "nothing but the planted link");
    assert!(std::fs::symlink_metadata(out.join("n2d-0123456789ab-web1.iso"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_directory_others_can_write_is_refused_before_any_work() {
    use std::os::unix::fs::PermissionsExt;
    let img_dir = tempfile::tempdir().unwrap();
    let image = fake_image(img_dir.path());
    let out = tempfile::tempdir().unwrap();
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let runner = n2d_exec::RecordingRunner::default();
    let err = export(&runner, &request(&image, out.path(), vec![Format::Raw]), &|_| {}).unwrap_err();
    assert!(err.is_usage(), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("is not safe to export into") && msg.contains("chmod go-w"), "{msg}");
    assert!(runner.calls().is_empty(), "a tool ran");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}
