//! Growing an exported disk's data partition to the end of the disk once the disk was enlarged
//! (a user gives the VM a bigger virtual disk): the partition's GPT entry gets the new end, the
//! backup entries and header move to the new last sectors, both headers' CRCs are recomputed,
//! and the kernel is told with BLKPG (the disk's root partition is mounted, so no re-read).

use crate::disks::{sysfs_u64, Partition};
use crate::sys::System;
use std::io;

const SECTOR: usize = 512;
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Not worth a rewrite: what alignment leaves at the end of a disk made to measure.
const MIN_GAIN_SECTORS: u64 = 2048;
/// The most of a disk's head read for its GPT, and so the largest entry table (UEFI's minimum
/// is 16 KiB, which sgdisk and n2d write).
const MAX_TABLE: usize = 1024 * 1024;

/// CRC-32 (IEEE, reflected), as GPT uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The writes that grow partition `partn`, and its new first sector and length in sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// (byte offset, bytes), in the order to write them: backup first, primary header last.
    pub writes: Vec<(u64, Vec<u8>)>,
    pub start: u64,
    pub sectors: u64,
    pub gained: u64,
}

/// How many bytes from the disk's start [`plan`] needs: the MBR, the header and the entries.
pub fn head_len(header_sector: &[u8]) -> Option<usize> {
    let h = header_sector.get(SECTOR..2 * SECTOR)?;
    if &h[..8] != SIGNATURE {
        return None;
    }
    let entries_bytes = u64::from(u32_at(h, 80)).checked_mul(u64::from(u32_at(h, 84)))?;
    let end = u64_at(h, 72)
        .checked_mul(SECTOR as u64)?
        .checked_add(entries_bytes.div_ceil(SECTOR as u64) * SECTOR as u64)?;
    usize::try_from(end).ok()
}

/// Plans growing partition `partn` (1-based) of a disk of `disk_sectors` whose first bytes are
/// `head` ([`head_len`] of them). `None`: nothing to gain.
pub fn plan(head: &[u8], disk_sectors: u64, partn: u32) -> io::Result<Option<Plan>> {
    let mut header = head.get(SECTOR..2 * SECTOR).ok_or_else(|| bad("no GPT header"))?.to_vec();
    if &header[..8] != SIGNATURE {
        return Err(bad("no GPT signature"));
    }
    let header_size = u32_at(&header, 12) as usize;
    if !(92..=SECTOR).contains(&header_size) {
        return Err(bad("GPT header size"));
    }
    let mut check = header[..header_size].to_vec();
    put_u32(&mut check, 16, 0);
    if crc32(&check) != u32_at(&header, 16) {
        return Err(bad("GPT header CRC"));
    }
    let entries_lba = u64_at(&header, 72);
    let (count, size) = (u32_at(&header, 80) as usize, u32_at(&header, 84) as usize);
    // Entries are 128 × 2^n bytes (UEFI); a table larger than `head_len`'s cap is not read.
    if size < 128 || !size.is_power_of_two() || count == 0 || count * size > MAX_TABLE {
        return Err(bad("GPT entry table"));
    }
    if partn == 0 || partn as usize > count {
        return Err(bad("no such GPT entry"));
    }
    let entry_sectors = (count * size).div_ceil(SECTOR) as u64;
    let (first_usable, last_usable) = (u64_at(&header, 40), u64_at(&header, 48));
    // The primary header at LBA 1, its entries after it and before the first usable sector.
    let table_end = entries_lba.checked_add(entry_sectors).filter(|&end| end <= first_usable);
    if u64_at(&header, 24) != 1 || entries_lba < 2 || table_end.is_none() || first_usable > last_usable {
        return Err(bad("GPT header layout"));
    }
    let start = usize::try_from(entries_lba).ok().and_then(|lba| lba.checked_mul(SECTOR));
    let mut entries = start
        .and_then(|start| head.get(start..start.checked_add(count * size)?))
        .ok_or_else(|| bad("GPT entries cut short"))?
        .to_vec();
    if crc32(&entries) != u32_at(&header, 88) {
        return Err(bad("GPT entries CRC"));
    }
    let at = (partn as usize - 1) * size;
    let (first, last) = (u64_at(&entries, at + 32), u64_at(&entries, at + 40));
    let used = |i: usize| entries[i * size..i * size + 16].iter().any(|&b| b != 0);
    if !used(partn as usize - 1) {
        return Err(bad("the partition's GPT entry is empty"));
    }
    if first < first_usable || first > last || last > last_usable {
        return Err(bad("the partition lies outside the GPT's usable sectors"));
    }
    // Only the last partition grows: every other one ends before it starts.
    if (0..count).any(|i| i != partn as usize - 1 && used(i) && u64_at(&entries, i * size + 40) >= first) {
        return Err(bad("a partition follows it"));
    }
    // The new backup: its header in the last sector, its entries just before.
    if disk_sectors.checked_mul(SECTOR as u64).is_none() {
        return Err(bad("disk size"));
    }
    let Some(new_last_usable) = disk_sectors.checked_sub(entry_sectors + 2) else { return Ok(None) };
    let new_alternate = disk_sectors - 1;
    if new_last_usable < last.saturating_add(MIN_GAIN_SECTORS) {
        return Ok(None);
    }
    put_u64(&mut entries, at + 40, new_last_usable);
    let entries_crc = crc32(&entries);

    let finish = |header: &mut Vec<u8>| {
        put_u32(header, 16, 0);
        let crc = crc32(&header[..header_size]);
        put_u32(header, 16, crc);
    };
    put_u64(&mut header, 32, new_alternate);
    put_u64(&mut header, 48, new_last_usable);
    put_u32(&mut header, 88, entries_crc);
    let mut backup = header.clone();
    finish(&mut header);
    put_u64(&mut backup, 24, new_alternate);
    put_u64(&mut backup, 32, 1);
    put_u64(&mut backup, 72, new_last_usable + 1);
    finish(&mut backup);

    let mut writes = vec![
        ((new_last_usable + 1) * SECTOR as u64, entries.clone()),
        (new_alternate * SECTOR as u64, backup),
        (entries_lba * SECTOR as u64, entries),
    ];
    // A protective MBR's one partition covers the disk (up to what 32 bits hold).
    let mut mbr = head[..SECTOR].to_vec();
    if mbr[510..512] == [0x55, 0xAA] && mbr[446 + 4] == 0xEE {
        put_u32(&mut mbr, 446 + 12, (disk_sectors - 1).min(u32::MAX as u64) as u32);
        writes.push((0, mbr));
    }
    writes.push((SECTOR as u64, header));
    Ok(Some(Plan {
        writes,
        start: first,
        sectors: new_last_usable - first + 1,
        gained: new_last_usable - last,
    }))
}

/// Grows `part` to the end of its disk when the disk has room after it; returns the sectors
/// gained. Disks with other than 512-byte sectors are left alone.
pub fn grow_partition(sys: &dyn System, part: &Partition) -> io::Result<Option<u64>> {
    let disk = format!("/dev/{}", part.disk);
    let block = sysfs_u64(sys, &format!("/sys/block/{}/queue/logical_block_size", part.disk)).unwrap_or(512);
    let Some(disk_sectors) = sysfs_u64(sys, &format!("/sys/block/{}/size", part.disk)) else {
        return Ok(None);
    };
    if block != SECTOR as u64 {
        return Ok(None);
    }
    let first = sys.read_head(&disk, 2 * SECTOR)?;
    let len = head_len(&first).ok_or_else(|| bad("no GPT header"))?;
    if len > MAX_TABLE {
        return Err(bad("GPT entry table too large"));
    }
    let head = sys.read_head(&disk, len)?;
    let Some(plan) = plan(&head, disk_sectors, part.partn)? else { return Ok(None) };
    for (offset, bytes) in &plan.writes {
        sys.write_at(&disk, *offset, bytes)?;
    }
    sys.resize_partition(&disk, part.partn, plan.start * SECTOR as u64, plan.sectors * SECTOR as u64)?;
    Ok(Some(plan.gained))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;

    /// A GPT disk of `sectors` laid out for `made_for` sectors (as sgdisk would): partitions
    /// (first, last) in order, the last one ending at the last usable sector.
    pub fn gpt_disk(sectors: u64, made_for: u64, parts: &[(u64, u64)]) -> Vec<u8> {
        let mut disk = vec![0u8; sectors as usize * SECTOR];
        disk[446 + 4] = 0xEE;
        put_u32(&mut disk, 446 + 8, 1);
        put_u32(&mut disk, 446 + 12, (made_for - 1) as u32);
        disk[510] = 0x55;
        disk[511] = 0xAA;
        let mut entries = vec![0u8; 128 * 128];
        for (i, (first, last)) in parts.iter().enumerate() {
            entries[i * 128] = 0xAF; // any type GUID
            entries[i * 128 + 16] = i as u8 + 1;
            put_u64(&mut entries, i * 128 + 32, *first);
            put_u64(&mut entries, i * 128 + 40, *last);
        }
        let mut h = vec![0u8; SECTOR];
        h[..8].copy_from_slice(SIGNATURE);
        put_u32(&mut h, 8, 0x0001_0000);
        put_u32(&mut h, 12, 92);
        put_u64(&mut h, 24, 1);
        put_u64(&mut h, 32, made_for - 1);
        put_u64(&mut h, 40, 34);
        put_u64(&mut h, 48, made_for - 34);
        put_u64(&mut h, 72, 2);
        put_u32(&mut h, 80, 128);
        put_u32(&mut h, 84, 128);
        put_u32(&mut h, 88, crc32(&entries));
        let crc = crc32(&h[..92]);
        put_u32(&mut h, 16, crc);
        disk[SECTOR..2 * SECTOR].copy_from_slice(&h);
        disk[2 * SECTOR..34 * SECTOR].copy_from_slice(&entries);
        disk
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn an_unenlarged_disk_is_left_alone() {
        let disk = gpt_disk(20_000, 20_000, &[(2048, 4095), (4096, 20_000 - 34)]);
        assert_eq!(plan(&disk[..34 * SECTOR], 20_000, 2).unwrap(), None);
    }

    #[test]
    fn an_enlarged_disk_moves_the_backup_and_grows_the_last_partition() {
        let made_for = 20_000;
        let mut disk = gpt_disk(30_000, made_for, &[(2048, 4095), (4096, made_for - 34)]);
        let plan = plan(&disk[..34 * SECTOR], 30_000, 2).unwrap().unwrap();
        assert_eq!((plan.start, plan.sectors, plan.gained), (4096, 30_000 - 34 - 4096 + 1, 10_000));
        for (offset, bytes) in &plan.writes {
            disk[*offset as usize..*offset as usize + bytes.len()].copy_from_slice(bytes);
        }
        // The result is a valid GPT for the new size: nothing left to grow, backup at the end.
        assert_eq!(super::plan(&disk[..34 * SECTOR], 30_000, 2).unwrap(), None);
        let backup = &disk[(30_000 - 1) * SECTOR..];
        assert_eq!(&backup[..8], SIGNATURE);
        assert_eq!((u64_at(backup, 24), u64_at(backup, 32), u64_at(backup, 72)), (29_999, 1, 30_000 - 33));
        let mut check = backup[..92].to_vec();
        put_u32(&mut check, 16, 0);
        assert_eq!(crc32(&check), u32_at(backup, 16));
        assert_eq!(disk[(30_000 - 33) * SECTOR..(30_000 - 1) * SECTOR], disk[2 * SECTOR..34 * SECTOR]);
        assert_eq!(u32_at(&disk, 446 + 12), 29_999);
    }

    #[test]
    fn only_the_last_partition_grows_and_damage_is_refused() {
        let disk = gpt_disk(30_000, 20_000, &[(2048, 4095), (4096, 20_000 - 34)]);
        assert!(plan(&disk[..34 * SECTOR], 30_000, 1).is_err());
        assert!(plan(&disk[..34 * SECTOR], 30_000, 3).is_err(), "empty entry");
        let mut damaged = disk.clone();
        damaged[2 * SECTOR + 40] ^= 1;
        assert!(plan(&damaged[..34 * SECTOR], 30_000, 2).is_err());
        assert!(plan(&[0u8; 34 * SECTOR], 30_000, 2).is_err());
    }

    #[test]
    fn growing_through_the_system_tells_the_kernel() {
        let sys = FakeSystem::new();
        let disk = gpt_disk(30_000, 20_000, &[(2048, 4095), (4096, 20_000 - 34)]);
        sys.add_plain_disk("vda", &disk);
        sys.add_partition("vda", 2, "n2d-data", 4096, vec![0u8; 4096]);
        let part = crate::disks::find_partition(&sys, "n2d-data").unwrap();
        assert_eq!(grow_partition(&sys, &part).unwrap(), Some(10_000));
        let calls = sys.calls();
        assert_eq!(
            calls.last().unwrap(),
            &format!("resize /dev/vda 2 {} {}", 4096 * 512, (30_000 - 34 - 4096 + 1) * 512)
        );
        assert_eq!(calls.iter().filter(|c| c.starts_with("write_at /dev/vda")).count(), 5);
        assert_eq!(grow_partition(&sys, &part).unwrap(), None, "grown once");
    }
}
