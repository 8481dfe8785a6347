//! The hybrid ISO, made by `xorriso -as mkisofs` (Debian `xorriso`) from the image's files
//! grafted in place (no staging copy):
//! * BIOS: El Torito with ISOLINUX (Debian `isolinux` + `syslinux-common`), and ISOLINUX's
//!   isohybrid MBR (`isohdpfx.bin`), so the same file boots from a CD or as a disk;
//! * UEFI: an El Torito EFI image (a FAT image holding the UKI, see `esp`), also appended as a
//!   GPT EFI system partition for booting the file as a disk;
//! * the ISO 9660 filesystem (Rock Ridge) holds the root as [`n2d_proto::ISO_ROOTFS_PATH`] and,
//!   for `--for`, the config disk's bytes as [`n2d_proto::ISO_CONFIG_PATH`]; the BIOS path boots
//!   the same `vmlinuz` + `initrd.img` with the same command line as the UKI.
//!
//! Every date xorriso writes is fixed (`--modification-date`, `--set_all_file_dates`) and the
//! GPT disk GUID is given, so the same inputs give the same ISO.

use crate::guid::Guid;
use n2d_exec::Cmd;
use std::path::{Path, PathBuf};

pub const ISOLINUX_BIN: &str = "/usr/lib/ISOLINUX/isolinux.bin";
pub const ISOHYBRID_MBR: &str = "/usr/lib/ISOLINUX/isohdpfx.bin";
pub const LDLINUX_C32: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";

/// The host files the BIOS path needs, with the Debian package of each.
pub const BIOS_FILES: [(&str, &str); 3] =
    [(ISOLINUX_BIN, "isolinux"), (ISOHYBRID_MBR, "isolinux"), (LDLINUX_C32, "syslinux-common")];

/// ISOLINUX's configuration: boot the kernel and initramfs at once, console on serial too.
pub fn isolinux_cfg(cmdline: &str) -> String {
    format!(
        "SERIAL 0 115200\nDEFAULT n2d\nPROMPT 0\nTIMEOUT 0\nLABEL n2d\n  KERNEL /boot/vmlinuz\n  INITRD /boot/initrd.img\n  APPEND {cmdline}\n"
    )
}

/// A Unix time as xorriso's `YYYYMMDDhhmmsscc` (UTC); times before 1980 are taken as
/// 1980-01-01, ISO 9660's and FAT's floor.
pub fn iso_timestamp(unix: u64) -> String {
    let unix = unix.max(315_532_800);
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}{:02}{:02}{:02}00", secs / 3600, secs / 60 % 60, secs % 60)
}

/// What goes into the ISO.
#[derive(Debug, Clone)]
pub struct IsoInputs {
    pub volume_id: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
    pub isolinux_cfg: PathBuf,
    /// The FAT image holding the UKI.
    pub efi_image: PathBuf,
    /// The config disk's bytes, for an export made for one machine.
    pub config: Option<PathBuf>,
    pub unix_time: u64,
    pub disk_guid: Guid,
}

/// An ISO 9660 volume ID: upper-case letters, digits and `_`, at most 32.
pub fn volume_id(short_id: &str) -> String {
    let id: String = short_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect();
    format!("N2D_{id}").chars().take(32).collect()
}

/// The `xorriso -as mkisofs` command line writing `out`.
pub fn xorriso_command(inputs: &IsoInputs, out: &Path) -> Cmd {
    let date = iso_timestamp(inputs.unix_time);
    let graft = |iso_path: &str, file: &Path| format!("{iso_path}={}", file.display());
    let mut cmd = Cmd::new("xorriso", "xorriso")
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(out)
        .args(["-V", &inputs.volume_id, "-r"])
        .arg(format!("--modification-date={date}"))
        .args(["--set_all_file_dates", &date])
        .args(["--gpt_disk_guid", &inputs.disk_guid.to_string()])
        .args(["-isohybrid-mbr", ISOHYBRID_MBR])
        .args(["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat"])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
        .args(["-eltorito-alt-boot", "-e", "--interval:appended_partition_2:all::", "-no-emul-boot"])
        .arg("-isohybrid-gpt-basdat")
        .args(["-append_partition", "2", "0xef"])
        .arg(&inputs.efi_image)
        .arg("-graft-points")
        .arg(graft("isolinux/isolinux.bin", Path::new(ISOLINUX_BIN)))
        .arg(graft("isolinux/ldlinux.c32", Path::new(LDLINUX_C32)))
        .arg(graft("isolinux/isolinux.cfg", &inputs.isolinux_cfg))
        .arg(graft("boot/vmlinuz", &inputs.kernel))
        .arg(graft("boot/initrd.img", &inputs.initrd))
        .arg(graft(n2d_proto::ISO_ROOTFS_PATH, &inputs.rootfs));
    if let Some(config) = &inputs.config {
        cmd = cmd.arg(graft(n2d_proto::ISO_CONFIG_PATH, config));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(iso_timestamp(0), "1980010100000000");
        assert_eq!(iso_timestamp(1_700_000_000), "2023111422132000");
        assert_eq!(iso_timestamp(951_782_400), "2000022900000000");
    }

    #[test]
    fn volume_ids_are_iso_characters() {
        assert_eq!(volume_id("ab12-cd"), "N2D_AB12_CD");
        assert!(volume_id(&"x".repeat(64)).len() <= 32);
    }

    fn inputs(config: bool) -> IsoInputs {
        IsoInputs {
            volume_id: "N2D_ABC".into(),
            kernel: "/img/vmlinuz".into(),
            initrd: "/img/initrd.img".into(),
            rootfs: "/img/rootfs.erofs".into(),
            isolinux_cfg: "/w/isolinux.cfg".into(),
            efi_image: "/w/efi.img".into(),
            config: config.then(|| "/w/config".into()),
            unix_time: 1_700_000_000,
            disk_guid: Guid::derive("x"),
        }
    }

    #[test]
    fn the_command_is_hybrid_fixed_in_time_and_grafts_the_image() {
        let text = xorriso_command(&inputs(false), Path::new("/out/x.iso")).display();
        for part in [
            "xorriso -as mkisofs -quiet -o /out/x.iso -V N2D_ABC -r",
            "--modification-date=2023111422132000 --set_all_file_dates 2023111422132000",
            &format!("--gpt_disk_guid {}", Guid::derive("x")),
            "-isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin",
            "-b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table",
            "-eltorito-alt-boot -e --interval:appended_partition_2:all:: -no-emul-boot -isohybrid-gpt-basdat",
            "-append_partition 2 0xef /w/efi.img",
            "boot/vmlinuz=/img/vmlinuz boot/initrd.img=/img/initrd.img n2d/rootfs.erofs=/img/rootfs.erofs",
        ] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
        assert!(!text.contains("n2d/config"));
        assert!(xorriso_command(&inputs(true), Path::new("/o")).display().ends_with("n2d/config=/w/config"));
    }

    #[test]
    fn isolinux_boots_the_kernel_with_the_command_line() {
        let cfg = isolinux_cfg("console=ttyS0 panic=10");
        assert!(cfg
            .contains("KERNEL /boot/vmlinuz\n  INITRD /boot/initrd.img\n  APPEND console=ttyS0 panic=10\n"));
        assert!(cfg.starts_with("SERIAL 0 115200\n"));
    }
}
