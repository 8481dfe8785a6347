//! `n2d image export`: an image as a bootable artifact for other hypervisors.
//!
//! * Disks (`raw`, `qcow2`, `vhdx`, `vmdk`): GPT ([`gpt`]) with an EFI system partition holding
//!   a unified kernel image ([`uki`], [`esp`]), the erofs root as partition `n2d-root`, a 1 MiB
//!   `n2d-config` partition (a config disk's bytes for `--for NAME`, zeros otherwise) and
//!   `n2d-data` filling the rest, blank (the guest formats it). The raw disk is written by n2d
//!   (sparse), the others converted from it by `qemu-img convert`.
//! * `iso`: hybrid BIOS + UEFI ([`iso`]), the root and config as files.
//! * `--hyperv`: a PowerShell script beside the VHDX ([`hyperv`]).
//!
//! Everything is made in a private work directory inside the output directory and renamed into
//! place only when every format is done, so a failure (or Ctrl-C) leaves no partial file; the
//! output directory must be one no other user can change ([`outdir`]). GUIDs,
//! volume IDs and dates come from the image ID (and the machine name), never from the clock or
//! a random source: the same inputs give the same files (qemu-img's random VHDX and VMDK
//! identifiers are pinned afterwards: [`reproducible_ids`]).

#![forbid(unsafe_code)]

pub mod config;
pub mod esp;
pub mod gpt;
pub mod guid;
pub mod hyperv;
pub mod iso;
pub mod outdir;
pub mod reproducible_ids;
pub mod uki;

use n2d_exec::{Cmd, ExecError, Runner};
use n2d_image::Image;
use n2d_store::safe_fs::create_new_private;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub use outdir::check_output_dir;

/// The kernel command line of an exported image (n2d's own VMs use
/// `n2d_vm::argv::KERNEL_CMDLINE`): the console on the screen and on COM1 (the Hyper-V script
/// connects COM1 to a named pipe), a reboot 10 s after a panic instead of n2d's power-off, which
/// a hypervisor without n2d watching would leave hanging.
pub const EXPORT_CMDLINE: &str = "console=tty0 console=ttyS0,115200 panic=10 loglevel=4 no_timer_check";

/// Default size of an exported disk (sparse: only what is written takes room).
pub const DEFAULT_DISK_SIZE: &str = "20G";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Raw,
    Qcow2,
    Vhdx,
    Vmdk,
    Iso,
}

impl Format {
    pub const ALL: [Format; 5] = [Format::Raw, Format::Qcow2, Format::Vhdx, Format::Vmdk, Format::Iso];

    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
            Format::Iso => "iso",
        }
    }

    /// The file extension (the raw disk is `.img`).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Raw => "img",
            other => other.name(),
        }
    }

    /// A disk converted from the raw one by `qemu-img convert`, with its options.
    pub fn qemu_img(self) -> Option<&'static [&'static str]> {
        match self {
            Format::Qcow2 => Some(&["-O", "qcow2"]),
            // Dynamic: grows as the guest writes, which Hyper-V supports for Generation 2 VMs.
            Format::Vhdx => Some(&["-O", "vhdx", "-o", "subformat=dynamic"]),
            // monolithicSparse (qemu-img's default): one growable file that VMware products open.
            Format::Vmdk => Some(&["-O", "vmdk"]),
            Format::Raw | Format::Iso => None,
        }
    }

    pub fn is_disk(self) -> bool {
        self != Format::Iso
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn format_list() -> String {
    Format::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
}

/// Parses `--format`: names separated by commas (repeats ignored), in the order given.
pub fn parse_formats(input: &str) -> Result<Vec<Format>, ExportError> {
    let mut formats = Vec::new();
    for word in input.split(',').map(str::trim) {
        let format = Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(word))
            .ok_or_else(|| ExportError::UnknownFormat { input: word.to_string(), known: format_list() })?;
        if !formats.contains(&format) {
            formats.push(format);
        }
    }
    Ok(formats)
}

/// The value of `--format`: one or more formats (see [`parse_formats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatList(pub Vec<Format>);

impl std::str::FromStr for FormatList {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, ExportError> {
        parse_formats(s).map(FormatList)
    }
}

/// The file name of an export: `n2d-<short id>[-<machine>].<ext>`.
pub fn file_name(short_id: &str, machine: Option<&str>, extension: &str) -> String {
    match machine {
        Some(m) => format!("n2d-{short_id}-{m}.{extension}"),
        None => format!("n2d-{short_id}.{extension}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown export format {input:?}: use one or more of {known}, separated by commas")]
    UnknownFormat { input: String, known: String },
    #[error(
        "the output directory {dir} cannot be written to: {source} (create it, or give another --output)"
    )]
    OutputDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} is not safe to export into: {problem}; {fix}")]
    UnsafeOutputDir { dir: PathBuf, problem: String, fix: String },
    #[error("{path} already exists and is {kind}: n2d replaces only a file of its own there; remove it or give another --output")]
    Exists { path: PathBuf, kind: String },
    #[error("{0:?} cannot be an export's file name")]
    BadFileName(String),
    #[error("--hyperv writes a Hyper-V script for the VHDX disk: add vhdx to --format (e.g. --format vhdx)")]
    HyperVNeedsVhdx,
    #[error(
        "{what} ({path}) is missing: install the Debian package `{package}` (apt-get install {package})"
    )]
    MissingFile { what: &'static str, path: PathBuf, package: &'static str },
    #[error("the EFI stub {path} is not usable")]
    BadStub {
        path: PathBuf,
        #[source]
        source: uki::NotPe,
    },
    #[error(transparent)]
    Layout(#[from] gpt::LayoutError),
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the {what}")]
    Tool {
        what: &'static str,
        #[source]
        source: ExecError,
    },
    #[error("interrupted: nothing was written")]
    Interrupted,
}

impl ExportError {
    /// A mistake in the command line, not a failure of the export (exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ExportError::UnknownFormat { .. }
                | ExportError::OutputDir { .. }
                | ExportError::UnsafeOutputDir { .. }
                | ExportError::Exists { .. }
                | ExportError::HyperVNeedsVhdx
                | ExportError::Layout(_)
        )
    }

    pub fn is_interrupted(&self) -> bool {
        matches!(self, ExportError::Interrupted)
    }
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExportError {
    let path = path.to_path_buf();
    move |source| ExportError::Io { action, path, source }
}

/// An export made for one machine (`--for NAME`).
#[derive(Debug, Clone)]
pub struct ForMachine {
    pub name: String,
    /// The config disk's bytes (`n2d_proto::encode_config_disk`).
    pub config_disk: Vec<u8>,
}

/// What to export, and where.
pub struct ExportRequest<'a> {
    pub image: &'a Image,
    pub formats: Vec<Format>,
    pub output_dir: PathBuf,
    /// Bytes of the disk formats (the data partition takes what the rest leaves).
    pub disk_size: u64,
    pub machine: Option<ForMachine>,
    /// Write a Hyper-V script beside the VHDX.
    pub hyperv: Option<hyperv::HyperV>,
    /// Set by Ctrl-C: checked between steps.
    pub cancel: Option<&'a AtomicBool>,
    /// Where the tools (objcopy, qemu-img, xorriso) are looked for (`$PATH`).
    pub search_path: n2d_exec::SearchPath,
}

/// A step, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportStage {
    Uki,
    Esp,
    RawDisk,
    Convert(Format),
    Iso,
    Script,
}

impl ExportStage {
    pub fn describe(self) -> String {
        match self {
            ExportStage::Uki => "unified kernel image (objcopy)".into(),
            ExportStage::Esp => "EFI system partition (FAT)".into(),
            ExportStage::RawDisk => "GPT disk".into(),
            ExportStage::Convert(f) => format!("{f} (qemu-img convert)"),
            ExportStage::Iso => "hybrid ISO (xorriso)".into(),
            ExportStage::Script => "Hyper-V script".into(),
        }
    }
}

/// One file written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub path: PathBuf,
    /// Its length.
    pub bytes: u64,
    /// What it takes on disk (sparse files take less than their length).
    pub allocated: u64,
}

/// Checks what can be checked before any work: the formats and flags agree, the tools and
/// files each format needs are there, the output directory can be written to.
pub fn preflight(req: &ExportRequest<'_>) -> Result<(), ExportError> {
    if req.hyperv.is_some() && !req.formats.contains(&Format::Vhdx) {
        return Err(ExportError::HyperVNeedsVhdx);
    }
    let out = check_output_dir(&req.output_dir)?;
    outdir::check_final_names(&out, final_names(req).iter().map(String::as_str))?;
    let mut needed: Vec<(&'static str, PathBuf, &'static str)> =
        vec![("systemd's EFI stub", uki::STUB_PATH.into(), uki::STUB_PACKAGE)];
    if req.formats.contains(&Format::Iso) {
        for (path, package) in iso::BIOS_FILES {
            needed.push(("an ISOLINUX file", path.into(), package));
        }
    }
    for (what, path, package) in needed {
        if !path.is_file() {
            return Err(ExportError::MissingFile { what, path, package });
        }
    }
    let mut tools = vec![("objcopy", "binutils")];
    if req.formats.iter().any(|f| f.qemu_img().is_some()) {
        tools.push(("qemu-img", "qemu-utils"));
    }
    if req.formats.contains(&Format::Iso) {
        tools.push(("xorriso", "xorriso"));
    }
    for (program, package) in tools {
        if !req.search_path.is_installed(program) {
            return Err(ExportError::Tool {
                what: "export",
                source: ExecError::NotInstalled { program: program.into(), package },
            });
        }
    }
    // Planning the disk catches a --disk-size too small before minutes of work.
    if req.formats.iter().any(|f| f.is_disk()) {
        let m = &req.image.manifest;
        let uki_estimate = m.kernel_bytes.saturating_add(m.initrd_bytes).saturating_add(64 * 1024);
        gpt::layout(
            req.disk_size,
            esp::image_size(uki_estimate, true),
            m.rootfs_bytes,
            config_size(req),
            "plan",
        )?;
    }
    Ok(())
}

/// The names of the files an export writes into the output directory.
pub fn final_names(req: &ExportRequest<'_>) -> Vec<String> {
    let machine = req.machine.as_ref().map(|f| f.name.as_str());
    let name = |ext: &str| file_name(req.image.manifest.short_id(), machine, ext);
    let mut names: Vec<String> = req.formats.iter().map(|f| name(f.extension())).collect();
    if req.hyperv.is_some() {
        names.push(name("ps1"));
    }
    names
}

/// The mode of the exported files: a `--for NAME` export holds the machine's TLS private key,
/// so only its owner may read it.
pub fn file_mode(req: &ExportRequest<'_>) -> u32 {
    if req.machine.is_some() {
        0o600
    } else {
        0o644
    }
}

fn config_size(req: &ExportRequest<'_>) -> u64 {
    req.machine.as_ref().map_or(0, |m| m.config_disk.len() as u64).max(1024 * 1024)
}

/// The seed of every GUID and volume ID of an export.
pub fn seed(image_id: &str, machine: Option<&str>) -> String {
    format!("n2d-export:{image_id}:{}", machine.unwrap_or(""))
}

/// Makes every requested file. On any error nothing is left in the output directory.
pub fn export(
    runner: &dyn Runner,
    req: &ExportRequest<'_>,
    progress: &dyn Fn(ExportStage),
) -> Result<Vec<Exported>, ExportError> {
    preflight(req)?;
    let image = req.image;
    let m = &image.manifest;
    let machine = req.machine.as_ref().map(|f| f.name.as_str());
    let seed = seed(&m.id, machine);
    // The image's own fixed epoch, so an image rebuilt byte for byte exports byte for byte
    // (images from before it was recorded: their build time).
    let time = if m.source_date_epoch != 0 { m.source_date_epoch } else { m.created_unix };
    // Resolved once: every later step uses this path, whose directories no other user can change.
    let out_dir = check_output_dir(&req.output_dir)?;
    let work = outdir::WorkDir::create(&out_dir)?;
    let w = |name: &str| work.join(name);
    let check = || match req.cancel {
        Some(flag) if flag.load(Ordering::Relaxed) => Err(ExportError::Interrupted),
        _ => Ok(()),
    };
    // (path in the work directory, final name)
    let mut made: Vec<(PathBuf, String)> = Vec::new();
    let final_name = |ext: &str| file_name(m.short_id(), machine, ext);

    progress(ExportStage::Uki);
    let uki_path = w("BOOTX64.EFI");
    let uki = make_uki(runner, image, work.path(), &uki_path, time)?;
    check()?;

    if req.formats.iter().any(|f| f.is_disk()) {
        progress(ExportStage::Esp);
        let esp_size = esp::image_size(uki.len() as u64, true);
        let esp =
            esp::fat_with_uki(&uki, esp_size, true, &seed).map_err(io_err("write the ESP for", &uki_path))?;
        check()?;
        progress(ExportStage::RawDisk);
        let config = req.machine.as_ref().map(|f| f.config_disk.as_slice());
        let raw = w("disk.img");
        let layout = gpt::layout(req.disk_size, esp.len() as u64, m.rootfs_bytes, config_size(req), &seed)?;
        write_raw_disk(&raw, &layout, &esp, &image.rootfs(), config)?;
        check()?;
        for format in req.formats.iter().copied() {
            let Some(options) = format.qemu_img() else { continue };
            progress(ExportStage::Convert(format));
            // Under its final name: a VMDK's descriptor names its own file.
            let out = w(&final_name(format.extension()));
            let cmd = Cmd::new("qemu-img", "qemu-utils")
                .args(["convert", "-q", "-f", "raw"])
                .args(options.iter().copied())
                .arg(&raw)
                .arg(&out);
            runner.run(&cmd).map_err(|source| ExportError::Tool { what: "disk image", source })?;
            let pinned = match format {
                Format::Vhdx => reproducible_ids::pin_vhdx(&out, &seed),
                Format::Vmdk => reproducible_ids::pin_vmdk(&out, &seed),
                _ => Ok(()),
            };
            pinned.map_err(io_err("pin the identifiers of", &out))?;
            made.push((out, final_name(format.extension())));
            check()?;
        }
        if req.formats.contains(&Format::Raw) {
            made.push((raw, final_name(Format::Raw.extension())));
        }
    }

    if req.formats.contains(&Format::Iso) {
        progress(ExportStage::Iso);
        let efi_path = w("efi.img");
        let efi = esp::fat_with_uki(&uki, esp::image_size(uki.len() as u64, false), false, &seed)
            .map_err(io_err("write the EFI image for", &efi_path))?;
        write_new(&efi_path, &efi)?;
        let cfg = w("isolinux.cfg");
        write_new(&cfg, iso::isolinux_cfg(EXPORT_CMDLINE).as_bytes())?;
        let config = match &req.machine {
            Some(f) => {
                let path = w("config");
                write_new(&path, &f.config_disk)?;
                Some(path)
            }
            None => None,
        };
        let inputs = iso::IsoInputs {
            volume_id: iso::volume_id(m.short_id()),
            kernel: image.dir.join(n2d_image::KERNEL_FILE),
            initrd: image.initrd(),
            rootfs: image.rootfs(),
            isolinux_cfg: cfg,
            efi_image: efi_path,
            config,
            unix_time: time,
            disk_guid: guid::Guid::derive(&format!("{seed}:iso")),
        };
        let out = w("out.iso");
        runner
            .run(&iso::xorriso_command(&inputs, &out))
            .map_err(|source| ExportError::Tool { what: "ISO", source })?;
        made.push((out, final_name("iso")));
        check()?;
    }

    if let Some(hv) = &req.hyperv {
        progress(ExportStage::Script);
        let vhdx = final_name(Format::Vhdx.extension());
        let text = hyperv::script(hv, &vhdx, machine);
        let out = w("hyperv.ps1");
        write_new(&out, text.as_bytes())?;
        made.push((out, final_name("ps1")));
    }

    check()?;
    // Everything is made: move it into place (never over what someone else put there). A
    // failure here takes back what was moved.
    let mode = file_mode(req);
    let mut done: Vec<Exported> = Vec::new();
    for (from, name) in &made {
        let placed = outdir::place(&out_dir, from, name, mode).and_then(|to| {
            let meta = std::fs::symlink_metadata(&to).map_err(io_err("read", &to))?;
            Ok(Exported { path: to, bytes: meta.len(), allocated: meta.blocks() * 512 })
        });
        match placed {
            Ok(e) => done.push(e),
            Err(e) => {
                for e in &done {
                    let _ = std::fs::remove_file(&e.path);
                }
                return Err(e);
            }
        }
    }
    done.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(done)
}

/// Writes `bytes` to a new file of the work directory (exclusively, never through a symlink).
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    create_new_private(path, 0o600).and_then(|mut f| f.write_all(bytes)).map_err(io_err("write", path))
}

/// Makes the UKI: the export's command line, an os-release, the image's `vmlinuz` and
/// `initrd.img` added to systemd's stub, by objcopy into `out`. Returns its bytes with the PE timestamp fixed.
fn make_uki(
    runner: &dyn Runner,
    image: &Image,
    work: &Path,
    out: &Path,
    time: u64,
) -> Result<Vec<u8>, ExportError> {
    let stub_path = Path::new(uki::STUB_PATH);
    let stub_bytes = std::fs::read(stub_path).map_err(io_err("read", stub_path))?;
    let stub = uki::stub_layout(&stub_bytes)
        .map_err(|source| ExportError::BadStub { path: stub_path.into(), source })?;
    let osrel = work.join("osrel");
    let m = &image.manifest;
    write_new(&osrel, uki::os_release(&m.id, &m.kernel_release).as_bytes())?;
    let cmdline = work.join("cmdline");
    write_new(&cmdline, EXPORT_CMDLINE.as_bytes())?;
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(io_err("read", p));
    let kernel = image.dir.join(n2d_image::KERNEL_FILE);
    let initrd = image.initrd();
    let sections = [
        uki::Section { name: ".osrel", len: len(&osrel)?, file: osrel },
        uki::Section { name: ".cmdline", len: len(&cmdline)?, file: cmdline },
        uki::Section { name: ".linux", len: len(&kernel)?, file: kernel },
        uki::Section { name: ".initrd", len: len(&initrd)?, file: initrd },
    ];
    runner
        .run(&uki::objcopy_command(stub_path, &stub, &sections, out))
        .map_err(|source| ExportError::Tool { what: "unified kernel image", source })?;
    let mut bytes = std::fs::read(out).map_err(io_err("read", out))?;
    uki::set_pe_timestamp(&mut bytes, u32::try_from(time).unwrap_or(u32::MAX))
        .map_err(|source| ExportError::BadStub { path: out.into(), source })?;
    Ok(bytes)
}

/// Writes the raw disk, sparse: the GPT, the ESP, the root and the config; the data partition
/// and every gap stay holes.
fn write_raw_disk(
    path: &Path,
    layout: &gpt::DiskLayout,
    esp: &[u8],
    rootfs: &Path,
    config: Option<&[u8]>,
) -> Result<(), ExportError> {
    let err = io_err("write", path);
    let write = || -> std::io::Result<()> {
        let mut f = create_new_private(path, 0o600)?;
        f.set_len(layout.disk_size)?;
        f.write_all(&layout.primary())?;
        let at = |name: &str| layout.partition(name).expect("every export partition is laid out").offset;
        f.seek(SeekFrom::Start(at(&layout.partitions[0].name)))?;
        f.write_all(esp)?;
        f.seek(SeekFrom::Start(at(n2d_proto::ROOT_DISK_SERIAL)))?;
        std::io::copy(&mut std::fs::File::open(rootfs)?, &mut f)?;
        if let Some(config) = config {
            f.seek(SeekFrom::Start(at(n2d_proto::CONFIG_DISK_SERIAL)))?;
            f.write_all(config)?;
        }
        f.seek(SeekFrom::Start(layout.backup_offset()))?;
        f.write_all(&layout.backup())?;
        f.sync_all()
    };
    write().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_in_order_without_repeats() {
        assert_eq!(parse_formats("vhdx,qcow2").unwrap(), [Format::Vhdx, Format::Qcow2]);
        assert_eq!(parse_formats("ISO, raw,iso").unwrap(), [Format::Iso, Format::Raw]);
        let err = parse_formats("qcow2,vdi").unwrap_err();
        assert!(err.is_usage());
        assert_eq!(
            err.to_string(),
            "unknown export format \"vdi\": use one or more of raw, qcow2, vhdx, vmdk, iso, separated by commas"
        );
        assert!(parse_formats("").is_err());
    }

    #[test]
    fn file_names_carry_the_short_id_and_machine() {
        assert_eq!(file_name("0123456789ab", None, "vhdx"), "n2d-0123456789ab.vhdx");
        assert_eq!(file_name("0123456789ab", Some("web1"), "img"), "n2d-0123456789ab-web1.img");
        assert_eq!(Format::Raw.extension(), "img");
    }

    #[test]
    fn qemu_img_options_per_format() {
        assert_eq!(Format::Vhdx.qemu_img().unwrap(), ["-O", "vhdx", "-o", "subformat=dynamic"]);
        assert_eq!(Format::Qcow2.qemu_img().unwrap(), ["-O", "qcow2"]);
        assert!(Format::Raw.qemu_img().is_none() && Format::Iso.qemu_img().is_none());
    }

    #[test]
    fn the_export_command_line_is_serial_and_screen() {
        assert!(EXPORT_CMDLINE.starts_with("console=tty0 console=ttyS0,115200 panic=10"));
    }
}
