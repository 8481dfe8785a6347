//! The directly bootable kernel: the ELF `vmlinux` inside Debian's compressed `vmlinuz`.
//!
//! A bzImage decompresses itself before Linux starts. Under emulation that costs about 1.5 s of
//! every boot (BENCHMARKS.md, "What was cut"), so the build also stores the kernel already
//! decompressed, and QEMU boots it through its PVH entry point (an ELF note, `Xen` type 18, which
//! Debian's kernels carry): no self-decompression, no real-mode setup. Only a zstd payload (what
//! Debian ships since trixie) is unpacked; any other kernel just boots as the bzImage.

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::Endianness;
use std::io::Read;

/// Why the bzImage gave no directly bootable kernel (the image then boots the bzImage).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoDirectBoot {
    #[error("not a bzImage of boot protocol 2.08 or later")]
    NotBzImage,
    #[error("its payload is not zstd-compressed")]
    NotZstd,
    #[error("its payload does not decompress: {0}")]
    Corrupt(String),
    #[error("the decompressed kernel is not a 64-bit x86 ELF")]
    NotElf,
    #[error("the kernel has no PVH entry point (ELF note Xen/18)")]
    NoPvhEntry,
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit entry point QEMU's PVH loader jumps to.
const PVH_ENTRY_NOTE: u32 = 18;
/// The decompressed kernel is tens of MB; refuse anything absurd rather than fill the disk.
const MAX_KERNEL_BYTES: u64 = 512 << 20;

/// The ELF kernel inside `bzimage`, checked to be bootable through PVH.
pub fn direct_boot_kernel(bzimage: &[u8]) -> Result<Vec<u8>, NoDirectBoot> {
    let payload = bzimage_payload(bzimage)?;
    if !payload.starts_with(&ZSTD_MAGIC) {
        return Err(NoDirectBoot::NotZstd);
    }
    // One zstd frame; the kernel's trailing 4-byte size is not read.
    let mut decoder =
        ruzstd::decoding::StreamingDecoder::new(payload).map_err(|e| NoDirectBoot::Corrupt(e.to_string()))?;
    let mut vmlinux = Vec::new();
    (&mut decoder)
        .take(MAX_KERNEL_BYTES)
        .read_to_end(&mut vmlinux)
        .map_err(|e| NoDirectBoot::Corrupt(e.to_string()))?;
    if !has_pvh_entry(&vmlinux)? {
        return Err(NoDirectBoot::NoPvhEntry);
    }
    Ok(vmlinux)
}

/// The compressed kernel inside a bzImage, located by the setup header (boot protocol ≥ 2.08:
/// `payload_offset` at 0x248, `payload_length` at 0x24c, relative to the protected-mode code,
/// which starts after `setup_sects` (0x1f1) + 1 sectors).
fn bzimage_payload(bzimage: &[u8]) -> Result<&[u8], NoDirectBoot> {
    let u16_at = |at: usize| bzimage.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| bzimage.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let (Some(magic), Some(version)) = (u32_at(0x202), u16_at(0x206)) else {
        return Err(NoDirectBoot::NotBzImage);
    };
    if magic != u32::from_le_bytes(*b"HdrS") || version < 0x0208 {
        return Err(NoDirectBoot::NotBzImage);
    }
    let setup_sects = match bzimage.get(0x1f1) {
        Some(0) => 4, // the boot protocol's "0 means 4"
        Some(&n) => usize::from(n),
        None => return Err(NoDirectBoot::NotBzImage),
    };
    let (Some(offset), Some(length)) = (u32_at(0x248), u32_at(0x24c)) else {
        return Err(NoDirectBoot::NotBzImage);
    };
    let start = (setup_sects + 1) * 512 + offset as usize;
    bzimage.get(start..start + length as usize).ok_or(NoDirectBoot::NotBzImage)
}

fn has_pvh_entry(vmlinux: &[u8]) -> Result<bool, NoDirectBoot> {
    let file = ElfFile64::<Endianness>::parse(vmlinux).map_err(|_| NoDirectBoot::NotElf)?;
    let endian = file.endian();
    let header = file.elf_header();
    if header.e_machine(endian) != elf::EM_X86_64 {
        return Err(NoDirectBoot::NotElf);
    }
    let segments = header.program_headers(endian, vmlinux).map_err(|_| NoDirectBoot::NotElf)?;
    for segment in segments {
        let Ok(Some(mut notes)) = segment.notes(endian, vmlinux) else { continue };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"Xen" && note.n_type(endian) == elf::NoteType(PVH_ENTRY_NOTE) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 x86-64 executable with one PT_NOTE segment holding `note_type` (name "Xen").
    fn elf_with_note(note_type: u32) -> Vec<u8> {
        let mut note = Vec::new();
        note.extend(4u32.to_le_bytes()); // namesz ("Xen\0")
        note.extend(4u32.to_le_bytes()); // descsz
        note.extend(note_type.to_le_bytes());
        note.extend(b"Xen\0");
        note.extend(0x0100_0000u32.to_le_bytes());
        let phoff = 64u64;
        let note_off = phoff + 56;
        let mut f = Vec::new();
        f.extend(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        f.extend(2u16.to_le_bytes()); // ET_EXEC
        f.extend(62u16.to_le_bytes()); // EM_X86_64
        f.extend(1u32.to_le_bytes());
        f.extend(0x0100_0000u64.to_le_bytes()); // entry
        f.extend(phoff.to_le_bytes());
        f.extend(0u64.to_le_bytes()); // shoff
        f.extend(0u32.to_le_bytes()); // flags
        f.extend(64u16.to_le_bytes()); // ehsize
        f.extend(56u16.to_le_bytes()); // phentsize
        f.extend(1u16.to_le_bytes()); // phnum
        f.extend(64u16.to_le_bytes()); // shentsize
        f.extend(0u16.to_le_bytes()); // shnum
        f.extend(0u16.to_le_bytes()); // shstrndx
        f.extend(4u32.to_le_bytes()); // PT_NOTE
        f.extend(4u32.to_le_bytes()); // flags
        f.extend(note_off.to_le_bytes());
        f.extend(0u64.to_le_bytes()); // vaddr
        f.extend(0u64.to_le_bytes()); // paddr
        f.extend((note.len() as u64).to_le_bytes());
        f.extend((note.len() as u64).to_le_bytes());
        f.extend(4u64.to_le_bytes()); // align
        f.extend(note);
        f
    }

    /// A bzImage-shaped file: setup header fields, then the payload plus the kernel's 4-byte size.
    fn bzimage(payload: &[u8], version: u16) -> Vec<u8> {
        let setup_sects = 3u8;
        let offset = 0x40u32;
        let mut f = vec![0u8; (usize::from(setup_sects) + 1) * 512 + offset as usize];
        f[0x1f1] = setup_sects;
        f[0x202..0x206].copy_from_slice(b"HdrS");
        f[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        f[0x248..0x24c].copy_from_slice(&offset.to_le_bytes());
        f[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
        f.extend(payload);
        f.extend(12345u32.to_le_bytes());
        f.extend(b"trailing setup data");
        f
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    #[test]
    fn a_zstd_kernel_with_a_pvh_note_is_unpacked_whole() {
        let vmlinux = elf_with_note(PVH_ENTRY_NOTE);
        assert_eq!(direct_boot_kernel(&bzimage(&zstd(&vmlinux), 0x020f)), Ok(vmlinux));
    }

    #[test]
    fn kernels_that_cannot_boot_directly_say_why() {
        let no_pvh = elf_with_note(6);
        assert_eq!(direct_boot_kernel(&bzimage(&zstd(&no_pvh), 0x020f)), Err(NoDirectBoot::NoPvhEntry));
        let gzip = [0x1f, 0x8b, 0x08, 0, 1, 2, 3];
        assert_eq!(direct_boot_kernel(&bzimage(&gzip, 0x020f)), Err(NoDirectBoot::NotZstd));
        let vmlinux = elf_with_note(PVH_ENTRY_NOTE);
        assert_eq!(direct_boot_kernel(&bzimage(&zstd(&vmlinux), 0x0206)), Err(NoDirectBoot::NotBzImage));
        assert_eq!(direct_boot_kernel(b"short"), Err(NoDirectBoot::NotBzImage));
        assert_eq!(direct_boot_kernel(&bzimage(&zstd(b"not an elf"), 0x020f)), Err(NoDirectBoot::NotElf));
        let mut corrupt = zstd(&vmlinux);
        corrupt.truncate(corrupt.len() / 2);
        assert!(matches!(direct_boot_kernel(&bzimage(&corrupt, 0x020f)), Err(NoDirectBoot::Corrupt(_))));
    }
}
