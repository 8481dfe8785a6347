//! Pins the identifiers qemu-img draws at random when it writes a VHDX or VMDK, so that the same
//! inputs give the same bytes (qemu-img has no option for them). Each value is replaced in
//! place by one derived from the export's seed, and any checksum over it recomputed:
//!
//! * VMDK (monolithicSparse): the `CID=` of the embedded descriptor (plain text, no checksum).
//! * VHDX: in both headers the file- and data-write GUIDs (and the sequence numbers, whose order
//!   says which header is current, kept), each header's CRC-32C; the log region, which holds
//!   only qemu's creation entry and is never replayed while the headers' log GUID is zero, is
//!   zeroed; the Page 83 data item of the metadata region (the disk's identity) derived.

use crate::guid::Guid;
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Where a VHDX file's two headers start, and their size (VHDX specification 2.2).
const VHDX_HEADERS: [u64; 2] = [64 * 1024, 128 * 1024];
const VHDX_HEADER_SIZE: usize = 4096;
/// The region table, and the metadata region's GUID in it.
const VHDX_REGION_TABLE: u64 = 192 * 1024;
const METADATA_REGION: Guid =
    Guid::from_fields(0x8B7CA206, 0x4790, 0x4B9A, [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E]);
const PAGE83_ITEM: Guid =
    Guid::from_fields(0xBECA12AB, 0xB2E6, 0x4523, [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46]);

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn read_at(file: &mut std::fs::File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_at(file: &mut std::fs::File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// CRC-32C (Castagnoli), as VHDX checksums its headers.
fn crc32c(bytes: &[u8]) -> u32 {
    crate::gpt::reflected_crc32(0x82F6_3B78, bytes)
}

/// Rewrites the CID of a monolithicSparse VMDK's embedded descriptor.
pub fn pin_vmdk(path: &Path, seed: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let header = read_at(&mut file, 0, 512)?;
    if &header[..4] != b"KDMV" {
        return Err(bad("not a sparse VMDK (no KDMV header)"));
    }
    let (offset, sectors) = (u64_at(&header, 28), u64_at(&header, 36));
    if offset == 0 || sectors == 0 || sectors > 64 {
        return Err(bad("a sparse VMDK without an embedded descriptor"));
    }
    let descriptor = read_at(&mut file, offset * 512, sectors as usize * 512)?;
    let pinned = pin_vmdk_descriptor(&descriptor, seed)?;
    write_at(&mut file, offset * 512, &pinned)
}

/// The descriptor area (text, then zeros) with its `CID=` line set from `seed`. qemu-img writes
/// the random CID without leading zeros (`%x`), so its length varies: the text after it is
/// rewritten and the area padded with zeros again, so the result never depends on the old CID.
fn pin_vmdk_descriptor(area: &[u8], seed: &str) -> io::Result<Vec<u8>> {
    let text_len = area.iter().position(|&b| b == 0).unwrap_or(area.len());
    let text = &area[..text_len];
    let start = find(text, b"\nCID=").ok_or_else(|| bad("no CID in the VMDK descriptor"))? + 5;
    let end =
        start + text[start..].iter().position(|&b| b == b'\n').ok_or_else(|| bad("an unended CID line"))?;
    let cid = format!(
        "{:08x}",
        u32::from_le_bytes(Guid::derive(&format!("{seed}/vmdk-cid")).0[..4].try_into().unwrap())
    );
    let mut out = [&text[..start], cid.as_bytes(), &text[end..]].concat();
    if out.len() > area.len() {
        return Err(bad("no room for the CID in the VMDK descriptor"));
    }
    out.resize(area.len(), 0);
    Ok(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Rewrites a VHDX's random identifiers (see the module's documentation).
pub fn pin_vhdx(path: &Path, seed: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    if read_at(&mut file, 0, 8)? != b"vhdxfile" {
        return Err(bad("not a VHDX (no vhdxfile signature)"));
    }
    let mut headers = Vec::new();
    for offset in VHDX_HEADERS {
        let h = read_at(&mut file, offset, VHDX_HEADER_SIZE)?;
        if &h[..4] != b"head" {
            return Err(bad("a VHDX header without its signature"));
        }
        headers.push(h);
    }
    let log_guid_zero = headers.iter().all(|h| h[48..64].iter().all(|b| *b == 0));
    if !log_guid_zero {
        return Err(bad("a VHDX with a log to replay"));
    }
    // The current header (the higher sequence number) stays the current one.
    let first_is_current = u64_at(&headers[0], 8) > u64_at(&headers[1], 8);
    let file_write = Guid::derive(&format!("{seed}/vhdx-file-write"));
    let data_write = Guid::derive(&format!("{seed}/vhdx-data-write"));
    for (i, (offset, h)) in VHDX_HEADERS.iter().zip(headers.iter_mut()).enumerate() {
        let sequence: u64 = if (i == 0) == first_is_current { 2 } else { 1 };
        h[8..16].copy_from_slice(&sequence.to_le_bytes());
        h[16..32].copy_from_slice(&file_write.0);
        h[32..48].copy_from_slice(&data_write.0);
        h[4..8].fill(0);
        let sum = crc32c(h);
        h[4..8].copy_from_slice(&sum.to_le_bytes());
        write_at(&mut file, *offset, h)?;
    }
    let current = &headers[if first_is_current { 0 } else { 1 }];
    let (log_length, log_offset) = (u32_at(current, 68), u64_at(current, 72));
    if log_length > 0 {
        write_at(&mut file, log_offset, &vec![0u8; log_length as usize])?;
    }
    // The metadata region, from the region table; its Page 83 item (a GUID).
    let table = read_at(&mut file, VHDX_REGION_TABLE, 64 * 1024)?;
    if &table[..4] != b"regi" {
        return Err(bad("a VHDX without its region table"));
    }
    let metadata = (0..u32_at(&table, 8) as usize)
        .map(|i| &table[16 + 32 * i..48 + 32 * i])
        .find(|e| e[..16] == METADATA_REGION.0)
        .map(|e| u64_at(e, 16))
        .ok_or_else(|| bad("a VHDX without a metadata region"))?;
    let items = read_at(&mut file, metadata, 64 * 1024)?;
    if &items[..8] != b"metadata" {
        return Err(bad("a VHDX metadata region without its table"));
    }
    let count = u16::from_le_bytes([items[10], items[11]]) as usize;
    let page83 = (0..count)
        .map(|i| &items[32 + 32 * i..64 + 32 * i])
        .find(|e| e[..16] == PAGE83_ITEM.0)
        .map(|e| u32_at(e, 16))
        .ok_or_else(|| bad("a VHDX without Page 83 data"))?;
    write_at(&mut file, metadata + u64::from(page83), &Guid::derive(&format!("{seed}/vhdx-page83")).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_reference_vector() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn a_vmdk_cid_of_any_length_pins_to_the_same_descriptor() {
        // qemu-img writes CID=%x: 7 or fewer digits when the random value has leading zeros.
        let area = |cid: &str| {
            let text = format!("# Disk DescriptorFile\nversion=1\nCID={cid}\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n");
            let mut bytes = text.into_bytes();
            bytes.resize(1024, 0);
            bytes
        };
        let pinned = pin_vmdk_descriptor(&area("1a2b3c4d"), "seed").unwrap();
        for cid in ["a2b3c4d", "4d", "0", "ffffffff"] {
            assert_eq!(pin_vmdk_descriptor(&area(cid), "seed").unwrap(), pinned, "CID={cid}");
        }
        assert_eq!(pinned.len(), 1024);
        let text = String::from_utf8_lossy(&pinned);
        assert!(text.contains("\nparentCID=ffffffff\ncreateType="), "{text}");
        assert_ne!(pin_vmdk_descriptor(&area("4d"), "other").unwrap(), pinned);
        assert!(pin_vmdk_descriptor(b"no cid here\0\0", "seed").is_err());
    }

    #[test]
    fn refuses_what_is_not_its_format() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, vec![0u8; 300 * 1024]).unwrap();
        assert!(pin_vmdk(&f, "s").is_err());
        assert!(pin_vhdx(&f, "s").is_err());
    }
}
