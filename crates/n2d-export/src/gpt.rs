//! The GPT of an exported disk, written by n2d itself: a protective MBR, the primary header and
//! partition array at the start, their backup at the end. Pure functions of the layout, so the
//! arithmetic is unit-tested and the same inputs give the same bytes (no tool, no random GUID).
//!
//! Layout (512-byte sectors, every partition 1 MiB aligned):
//! 1. EFI system partition (the UKI as `EFI/BOOT/BOOTX64.EFI`),
//! 2. `n2d-root` (the image's erofs root),
//! 3. `n2d-config` (1 MiB: a config disk's bytes, or zeros),
//! 4. `n2d-data` (the rest of the disk, blank: the guest formats it).

use crate::guid::Guid;

pub const SECTOR: u64 = 512;
pub const ALIGN: u64 = 1024 * 1024;
/// Sectors of a partition array of 128 entries of 128 bytes.
const ARRAY_SECTORS: u64 = 32;
const ENTRIES: u32 = 128;
const ENTRY_SIZE: u32 = 128;

/// `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`
pub const ESP_TYPE: Guid =
    Guid::from_fields(0xC12A7328, 0xF81F, 0x11D2, [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]);
/// Linux filesystem data, `0FC63DAF-8483-4772-8E79-3D69D8477DE4`.
pub const LINUX_TYPE: Guid =
    Guid::from_fields(0x0FC63DAF, 0x8483, 0x4772, [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4]);

/// One partition: its byte range and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub type_guid: Guid,
    pub guid: Guid,
    /// First byte (a multiple of [`ALIGN`]).
    pub offset: u64,
    /// Bytes (a multiple of [`SECTOR`]).
    pub size: u64,
}

impl Partition {
    pub fn first_lba(&self) -> u64 {
        self.offset / SECTOR
    }
    pub fn last_lba(&self) -> u64 {
        (self.offset + self.size) / SECTOR - 1
    }
}

/// A whole disk: its size and partitions, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    pub disk_size: u64,
    pub disk_guid: Guid,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("a disk of {disk} bytes is too small for this image: it needs at least {needed} bytes (give a larger --disk-size, e.g. {suggestion})")]
    TooSmall { disk: u64, needed: u64, suggestion: String },
}

pub fn align_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// The smallest data partition an export gets: room for a first Docker image or two.
pub const MIN_DATA: u64 = 256 * 1024 * 1024;

/// Places the ESP, the root, the config partition and the data partition (the rest) on a disk
/// of `disk_size` bytes (rounded down to whole MiB). GUIDs come from `seed`.
pub fn layout(
    disk_size: u64,
    esp_bytes: u64,
    root_bytes: u64,
    config_bytes: u64,
    seed: &str,
) -> Result<DiskLayout, LayoutError> {
    let disk_size = disk_size / ALIGN * ALIGN;
    let specs = [
        ("EFI system partition", ESP_TYPE, esp_bytes),
        (n2d_proto::ROOT_DISK_SERIAL, LINUX_TYPE, root_bytes),
        (n2d_proto::CONFIG_DISK_SERIAL, LINUX_TYPE, config_bytes),
    ];
    let mut partitions = Vec::new();
    let mut next = ALIGN;
    for (i, (name, type_guid, bytes)) in specs.into_iter().enumerate() {
        let size = align_up(bytes.max(1), ALIGN);
        partitions.push(Partition {
            name: name.to_string(),
            type_guid,
            guid: Guid::derive(&format!("{seed}:partition:{}", i + 1)),
            offset: next,
            size,
        });
        next += size;
    }
    // The backup array and header take the last 33 sectors; the data partition ends before the
    // last MiB so that it stays aligned and a grown disk moves only the backup.
    let end = disk_size.saturating_sub(ALIGN);
    let needed = next + MIN_DATA + ALIGN;
    if disk_size < needed {
        return Err(LayoutError::TooSmall {
            disk: disk_size,
            needed,
            suggestion: format!("{}M", align_up(needed, ALIGN) / ALIGN),
        });
    }
    partitions.push(Partition {
        name: n2d_proto::DATA_DISK_SERIAL.to_string(),
        type_guid: LINUX_TYPE,
        guid: Guid::derive(&format!("{seed}:partition:4")),
        offset: next,
        size: end - next,
    });
    Ok(DiskLayout { disk_size, disk_guid: Guid::derive(&format!("{seed}:disk")), partitions })
}

/// CRC-32 (IEEE, reflected), as GPT uses it.
pub fn crc32(bytes: &[u8]) -> u32 {
    reflected_crc32(0xEDB8_8320, bytes)
}

/// A reflected CRC-32 with the given (reversed) polynomial: IEEE's for GPT, Castagnoli's for
/// VHDX ([`crate::reproducible_ids`]). Bitwise: it runs over a few KiB of headers.
pub fn reflected_crc32(poly: u32, bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ poly } else { crc >> 1 };
        }
    }
    !crc
}

impl DiskLayout {
    fn last_lba(&self) -> u64 {
        self.disk_size / SECTOR - 1
    }

    /// The partition array (128 entries of 128 bytes).
    fn array(&self) -> Vec<u8> {
        let mut array = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut array[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&p.type_guid.0);
            e[16..32].copy_from_slice(&p.guid.0);
            e[32..40].copy_from_slice(&p.first_lba().to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba().to_le_bytes());
            for (j, unit) in p.name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        array
    }

    fn header(&self, my_lba: u64, alternate_lba: u64, array_lba: u64, array_crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + ARRAY_SECTORS).to_le_bytes());
        h[48..56].copy_from_slice(&(self.last_lba() - 1 - ARRAY_SECTORS).to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.0);
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRIES.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The protective MBR, the primary header and the array: bytes for offset 0.
    pub fn primary(&self) -> Vec<u8> {
        let mut out = vec![0u8; SECTOR as usize];
        let sectors = u32::try_from(self.last_lba()).unwrap_or(u32::MAX);
        let e = &mut out[446..462];
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
        out[510] = 0x55;
        out[511] = 0xAA;
        let array = self.array();
        out.extend(self.header(1, self.last_lba(), 2, crc32(&array)));
        out.extend(array);
        out
    }

    /// The backup array and header: bytes for offset [`Self::backup_offset`].
    pub fn backup(&self) -> Vec<u8> {
        let array = self.array();
        let array_lba = self.last_lba() - ARRAY_SECTORS;
        let mut out = array.clone();
        out.extend(self.header(self.last_lba(), 1, array_lba, crc32(&array)));
        out
    }

    pub fn backup_offset(&self) -> u64 {
        (self.last_lba() - ARRAY_SECTORS) * SECTOR
    }

    pub fn partition(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn crc32_matches_the_reference_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn partitions_are_aligned_in_order_and_the_data_fills_the_rest() {
        let l = layout(20 << 30, 40 * MIB + 5, 150 * MIB - 3, 4096, "seed").unwrap();
        let names: Vec<_> = l.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["EFI system partition", "n2d-root", "n2d-config", "n2d-data"]);
        let p = &l.partitions;
        assert_eq!((p[0].offset, p[0].size), (MIB, 41 * MIB));
        assert_eq!((p[1].offset, p[1].size), (42 * MIB, 150 * MIB));
        assert_eq!((p[2].offset, p[2].size), (192 * MIB, MIB));
        assert_eq!(p[3].offset, 193 * MIB);
        assert_eq!(p[3].offset + p[3].size, (20 << 30) - MIB);
        assert!(p.iter().all(|p| p.offset % ALIGN == 0 && p.size % SECTOR == 0));
        // The backup GPT sits after the last partition.
        assert!(l.backup_offset() >= p[3].offset + p[3].size);
        assert_eq!(l.backup_offset() + l.backup().len() as u64, 20 << 30);
    }

    #[test]
    fn a_disk_too_small_is_refused_with_the_size_needed() {
        let err = layout(300 * MIB, 40 * MIB, 150 * MIB, MIB, "s").unwrap_err();
        let LayoutError::TooSmall { needed, suggestion, .. } = err;
        assert_eq!(needed, (192 + 256 + 1) * MIB);
        assert_eq!(suggestion, "449M");
        assert!(layout(449 * MIB, 40 * MIB, 150 * MIB, MIB, "s").is_ok());
    }

    #[test]
    fn guids_depend_on_the_seed_only() {
        let a = layout(1 << 30, MIB, MIB, MIB, "img:a").unwrap();
        assert_eq!(a, layout(1 << 30, MIB, MIB, MIB, "img:a").unwrap());
        let b = layout(1 << 30, MIB, MIB, MIB, "img:b").unwrap();
        assert_ne!(a.disk_guid, b.disk_guid);
        assert_ne!(a.partitions[0].guid, b.partitions[0].guid);
    }

    #[test]
    fn headers_carry_valid_crcs_and_point_at_each_other() {
        let l = layout(1 << 30, MIB, MIB, MIB, "s").unwrap();
        let primary = l.primary();
        assert_eq!(&primary[510..512], &[0x55, 0xAA]);
        assert_eq!(primary[446 + 4], 0xEE);
        let h = &primary[512..1024];
        assert_eq!(&h[0..8], b"EFI PART");
        let mut zeroed = h[..92].to_vec();
        zeroed[16..20].fill(0);
        assert_eq!(u32::from_le_bytes(h[16..20].try_into().unwrap()), crc32(&zeroed));
        let array = &primary[1024..1024 + 16384];
        assert_eq!(u32::from_le_bytes(h[88..92].try_into().unwrap()), crc32(array));
        let last = (1u64 << 30) / 512 - 1;
        assert_eq!(u64::from_le_bytes(h[32..40].try_into().unwrap()), last);
        let backup = l.backup();
        let bh = &backup[16384..];
        assert_eq!(u64::from_le_bytes(bh[24..32].try_into().unwrap()), last);
        assert_eq!(u64::from_le_bytes(bh[32..40].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(bh[72..80].try_into().unwrap()), last - 32);
        // The entry's name is UTF-16LE.
        let root = &array[128..256];
        assert_eq!(&root[56..60], &[b'n', 0, b'2', 0]);
    }
}
