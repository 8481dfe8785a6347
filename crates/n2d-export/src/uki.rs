//! The unified kernel image: systemd's EFI stub (`linuxx64.efi.stub`, Debian's
//! `systemd-boot-efi`) with the image's `vmlinuz`, `initrd.img`, the export's kernel command
//! line and an os-release added as PE sections by `objcopy` (binutils). No signing: the UKI is
//! for firmware with Secure Boot off (see the Hyper-V script).
//!
//! The sections go after the stub's own, at addresses computed here from the stub's PE headers
//! ([`StubLayout`]) so that no tool guesses them: `.osrel`, `.cmdline`, `.linux` (last but one,
//! since the stub reads the kernel's setup header from it) and `.initrd`, each aligned to the
//! stub's section alignment. The result is given a fixed PE timestamp, so the same inputs give
//! the same bytes.

use n2d_exec::Cmd;
use std::path::{Path, PathBuf};

/// Where Debian's `systemd-boot-efi` puts the stub.
pub const STUB_PATH: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
pub const STUB_PACKAGE: &str = "systemd-boot-efi";

/// What the placement needs from the stub's PE headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StubLayout {
    pub image_base: u64,
    pub section_alignment: u64,
    /// End of the stub's last section (relative virtual address).
    pub end_rva: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a 64-bit PE image: {0}")]
pub struct NotPe(pub &'static str);

fn u16_at(b: &[u8], at: usize) -> Result<u16, NotPe> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or(NotPe("truncated"))
}
fn u32_at(b: &[u8], at: usize) -> Result<u32, NotPe> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4"))).ok_or(NotPe("truncated"))
}
fn u64_at(b: &[u8], at: usize) -> Result<u64, NotPe> {
    b.get(at..at + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8"))).ok_or(NotPe("truncated"))
}

/// Offset of the COFF file header (after the `PE\0\0` signature).
fn coff_offset(pe: &[u8]) -> Result<usize, NotPe> {
    if pe.get(0..2) != Some(b"MZ") {
        return Err(NotPe("no MZ header"));
    }
    let pe_off = u32_at(pe, 0x3C)? as usize;
    if pe.get(pe_off..pe_off + 4) != Some(b"PE\0\0") {
        return Err(NotPe("no PE signature"));
    }
    Ok(pe_off + 4)
}

/// Reads the image base, section alignment and the end of the last section of a PE32+ image.
pub fn stub_layout(pe: &[u8]) -> Result<StubLayout, NotPe> {
    let coff = coff_offset(pe)?;
    let sections = u16_at(pe, coff + 2)? as usize;
    let opt_size = u16_at(pe, coff + 16)? as usize;
    let opt = coff + 20;
    if u16_at(pe, opt)? != 0x20B {
        return Err(NotPe("not PE32+"));
    }
    let image_base = u64_at(pe, opt + 24)?;
    let section_alignment = u64::from(u32_at(pe, opt + 32)?);
    if section_alignment == 0 || !section_alignment.is_power_of_two() {
        return Err(NotPe("bad section alignment"));
    }
    let table = opt + opt_size;
    let mut end_rva = 0;
    for i in 0..sections {
        let s = table + 40 * i;
        let virtual_size = u64::from(u32_at(pe, s + 8)?);
        let rva = u64::from(u32_at(pe, s + 12)?);
        end_rva = end_rva.max(rva + virtual_size);
    }
    if end_rva == 0 {
        return Err(NotPe("no sections"));
    }
    Ok(StubLayout { image_base, section_alignment, end_rva })
}

/// A section to add: its name, the file holding its bytes and that file's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: &'static str,
    pub file: PathBuf,
    pub len: u64,
}

/// The absolute virtual address of each section, in order, each after the previous one and
/// aligned to the stub's section alignment.
pub fn placements(stub: &StubLayout, sections: &[Section]) -> Vec<u64> {
    let align = |n: u64| n.div_ceil(stub.section_alignment) * stub.section_alignment;
    let mut next = align(stub.end_rva);
    sections
        .iter()
        .map(|s| {
            let at = next;
            next = align(at + s.len.max(1));
            stub.image_base + at
        })
        .collect()
}

/// The `objcopy` command line that adds `sections` to `stub` and writes `out`.
pub fn objcopy_command(stub_path: &Path, stub: &StubLayout, sections: &[Section], out: &Path) -> Cmd {
    let mut cmd = Cmd::new("objcopy", "binutils");
    for (s, vma) in sections.iter().zip(placements(stub, sections)) {
        cmd = cmd
            .arg("--add-section")
            .arg(format!("{}={}", s.name, s.file.display()))
            .arg("--change-section-vma")
            .arg(format!("{}={vma:#x}", s.name));
    }
    cmd.arg(stub_path).arg(out)
}

/// Sets the PE timestamp (COFF TimeDateStamp) of an image in place, and its checksum again:
/// objcopy writes the time of the run there, so two runs would differ in both.
pub fn set_pe_timestamp(pe: &mut [u8], unix: u32) -> Result<(), NotPe> {
    let coff = coff_offset(pe)?;
    pe.get_mut(coff + 4..coff + 8).ok_or(NotPe("truncated"))?.copy_from_slice(&unix.to_le_bytes());
    let checksum_at = coff + 20 + 64;
    pe.get_mut(checksum_at..checksum_at + 4).ok_or(NotPe("truncated"))?.fill(0);
    let sum = pe_checksum(pe, checksum_at);
    pe[checksum_at..checksum_at + 4].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// The PE image checksum (as `imagehlp`'s CheckSumMappedFile): 16-bit one's-complement-style
/// sum of the file with the checksum field skipped, folded, plus the file's length.
pub fn pe_checksum(pe: &[u8], checksum_at: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, chunk) in pe.chunks(2).enumerate() {
        let at = i * 2;
        if at >= checksum_at && at < checksum_at + 4 {
            continue;
        }
        let word = u64::from(chunk[0]) | u64::from(*chunk.get(1).unwrap_or(&0)) << 8;
        sum += word;
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum = (sum & 0xFFFF) + (sum >> 16);
    (sum as u32).wrapping_add(pe.len() as u32)
}

/// The `.osrel` section: what the stub and boot menus show.
pub fn os_release(image_id: &str, kernel_release: &str) -> String {
    format!(
        "NAME=\"n2d\"\nID=n2d\nPRETTY_NAME=\"n2d Docker host ({short})\"\nVERSION_ID=\"{short}\"\nBUILD_ID=\"{image_id}\"\nKERNEL_RELEASE=\"{kernel_release}\"\n",
        short = &image_id[..image_id.len().min(12)]
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal PE32+ image: headers and two sections.
    pub fn fake_pe() -> Vec<u8> {
        let mut pe = vec![0u8; 0x400];
        pe[0..2].copy_from_slice(b"MZ");
        pe[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        pe[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        pe[coff + 2..coff + 4].copy_from_slice(&2u16.to_le_bytes());
        pe[coff + 4..coff + 8].copy_from_slice(&12345u32.to_le_bytes());
        pe[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        pe[opt..opt + 2].copy_from_slice(&0x20Bu16.to_le_bytes());
        pe[opt + 24..opt + 32].copy_from_slice(&0x1_0000_0000u64.to_le_bytes());
        pe[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes());
        let table = opt + 240;
        for (i, (rva, size)) in [(0x1000u32, 0x2345u32), (0x4000, 0x10)].into_iter().enumerate() {
            let s = table + 40 * i;
            pe[s + 8..s + 12].copy_from_slice(&size.to_le_bytes());
            pe[s + 12..s + 16].copy_from_slice(&rva.to_le_bytes());
        }
        pe
    }

    #[test]
    fn reads_the_stub_layout() {
        let l = stub_layout(&fake_pe()).unwrap();
        assert_eq!(l, StubLayout { image_base: 0x1_0000_0000, section_alignment: 0x1000, end_rva: 0x4010 });
        assert_eq!(stub_layout(b"ELF...."), Err(NotPe("no MZ header")));
        assert_eq!(stub_layout(&fake_pe()[..0x100]), Err(NotPe("truncated")));
    }

    #[test]
    fn sections_follow_the_stub_aligned_and_in_order() {
        let l = stub_layout(&fake_pe()).unwrap();
        let s = |name, len| Section { name, file: PathBuf::from(format!("/w/{name}")), len };
        let sections = [s(".osrel", 10), s(".cmdline", 0x1000), s(".linux", 0x1001), s(".initrd", 5)];
        let at = placements(&l, &sections);
        assert_eq!(at, [0x1_0000_5000, 0x1_0000_6000, 0x1_0000_7000, 0x1_0000_9000]);
        let cmd = objcopy_command(Path::new("/stub"), &l, &sections, Path::new("/out.efi"));
        assert_eq!(cmd.program, "objcopy");
        assert_eq!(
            cmd.display(),
            "objcopy --add-section .osrel=/w/.osrel --change-section-vma .osrel=0x100005000 \
             --add-section .cmdline=/w/.cmdline --change-section-vma .cmdline=0x100006000 \
             --add-section .linux=/w/.linux --change-section-vma .linux=0x100007000 \
             --add-section .initrd=/w/.initrd --change-section-vma .initrd=0x100009000 /stub /out.efi"
        );
    }

    #[test]
    fn the_timestamp_is_fixed_in_place() {
        let mut pe = fake_pe();
        set_pe_timestamp(&mut pe, 7).unwrap();
        assert_eq!(&pe[0x88..0x8C], &7u32.to_le_bytes());
        let checksum = u32::from_le_bytes(pe[0xD8..0xDC].try_into().unwrap());
        assert_eq!(checksum, pe_checksum(&pe, 0xD8));
        assert_ne!(checksum, 0);
    }

    #[test]
    fn os_release_names_the_image() {
        let text = os_release("0123456789abcdef", "6.12.0-cloud-amd64");
        assert!(text.contains("VERSION_ID=\"0123456789ab\""));
        assert!(text.contains("BUILD_ID=\"0123456789abcdef\""));
    }
}
