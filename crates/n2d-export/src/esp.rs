//! FAT images written in memory with the `fatfs` crate: the disk's EFI system partition and the
//! ISO's El Torito EFI image, each holding the UKI as `EFI/BOOT/BOOTX64.EFI` (the removable-media
//! path every UEFI firmware boots without a boot entry). No mkfs, mtools or loop mount. fatfs is
//! built without its `chrono` feature, so every timestamp is the DOS epoch (1980-01-01), and the
//! volume ID is derived from the export's seed: the same inputs give the same bytes.

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};
use sha2::{Digest, Sha256};
use std::io::{Cursor, Write};

pub const BOOT_PATH: [&str; 3] = ["EFI", "BOOT", "BOOTX64.EFI"];

/// FAT32 needs 65525 clusters: at 512 bytes each, a little over 32 MiB. The disk's ESP is at
/// least this large, as the UEFI specification asks FAT32 of a disk's system partition.
pub const MIN_FAT32: u64 = 64 * 1024 * 1024;

/// How large a FAT image holding `payload` bytes of files is made: the payload plus room for the
/// FATs and directories (2%, at least 1 MiB), rounded up to whole MiB; for a disk's ESP, at
/// least [`MIN_FAT32`].
pub fn image_size(payload: u64, disk_esp: bool) -> u64 {
    let mib = 1024 * 1024;
    let raw = (payload + (payload / 50).max(mib)).div_ceil(mib) * mib;
    if disk_esp {
        raw.max(MIN_FAT32)
    } else {
        raw
    }
}

/// The volume ID of an export (from its seed).
pub fn volume_id(seed: &str) -> u32 {
    let h = Sha256::digest(format!("{seed}:fat").as_bytes());
    u32::from_le_bytes([h[0], h[1], h[2], h[3]])
}

/// A FAT image of `size` bytes holding `uki` as `EFI/BOOT/BOOTX64.EFI`: FAT32 for a disk's
/// system partition, FAT12/16 as fits for the ISO's El Torito image.
pub fn fat_with_uki(uki: &[u8], size: u64, fat32: bool, seed: &str) -> std::io::Result<Vec<u8>> {
    let mut disk = Cursor::new(vec![0u8; size as usize]);
    let mut opts = FormatVolumeOptions::new().volume_id(volume_id(seed)).volume_label(*b"N2D-EFI    ");
    if fat32 {
        opts = opts.fat_type(FatType::Fat32);
    }
    fatfs::format_volume(&mut disk, opts)?;
    disk.set_position(0);
    {
        let fs = FileSystem::new(&mut disk, FsOptions::new())?;
        {
            let root = fs.root_dir();
            let dir = root.create_dir(BOOT_PATH[0])?.create_dir(BOOT_PATH[1])?;
            let mut file = dir.create_file(BOOT_PATH[2])?;
            file.truncate()?;
            file.write_all(uki)?;
            file.flush()?;
        }
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_back(image: Vec<u8>) -> (FatType, u32, Vec<u8>) {
        let fs = FileSystem::new(Cursor::new(image), FsOptions::new()).unwrap();
        let mut bytes = Vec::new();
        fs.root_dir().open_file("EFI/BOOT/BOOTX64.EFI").unwrap().read_to_end(&mut bytes).unwrap();
        (fs.fat_type(), fs.volume_id(), bytes)
    }

    #[test]
    fn the_uki_reads_back_from_a_fat32_esp() {
        let uki: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let size = image_size(uki.len() as u64, true);
        assert_eq!(size, MIN_FAT32);
        let image = fat_with_uki(&uki, size, true, "s").unwrap();
        assert_eq!(image.len() as u64, size);
        let (fat, id, bytes) = read_back(image);
        assert_eq!(fat, FatType::Fat32);
        assert_eq!(id, volume_id("s"));
        assert_eq!(bytes, uki);
    }

    #[test]
    fn the_el_torito_image_is_small_and_fits_the_uki() {
        let uki = vec![7u8; 5_000_000];
        let size = image_size(uki.len() as u64, false);
        assert_eq!(size, 6 * 1024 * 1024);
        let (fat, _, bytes) = read_back(fat_with_uki(&uki, size, false, "s").unwrap());
        assert_ne!(fat, FatType::Fat32);
        assert_eq!(bytes, uki);
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let uki = vec![1u8; 100_000];
        let a = fat_with_uki(&uki, 2 << 20, false, "s").unwrap();
        assert_eq!(a, fat_with_uki(&uki, 2 << 20, false, "s").unwrap());
        assert_ne!(a, fat_with_uki(&uki, 2 << 20, false, "t").unwrap());
    }
}
