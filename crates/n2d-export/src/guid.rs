//! GUIDs derived from a seed (the image ID, and the machine name for `--for`): the same export
//! gets the same disk and partition GUIDs, so two exports are byte-identical.

use sha2::{Digest, Sha256};

/// A GUID in its on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// From the textual fields `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6],
            d4[7],
        ])
    }

    /// A version-4-shaped GUID from the SHA-256 of `seed` (RFC 4122 variant bits set).
    pub fn derive(seed: &str) -> Guid {
        let hash = Sha256::digest(seed.as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&hash[..16]);
        // Version 4 in the high nibble of d3 (byte 7 on disk), variant 10xx in d4[0].
        b[7] = (b[7] & 0x0F) | 0x40;
        b[8] = (b[8] & 0x3F) | 0x80;
        Guid(b)
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02X}"))
    }
}

impl std::fmt::Debug for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_matches_the_fields() {
        let esp = crate::gpt::ESP_TYPE;
        assert_eq!(esp.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(esp.0[0], 0x28, "first field little-endian on disk");
    }

    #[test]
    fn derived_guids_are_stable_and_version_4() {
        let g = Guid::derive("n2d:abc");
        assert_eq!(g, Guid::derive("n2d:abc"));
        assert_ne!(g, Guid::derive("n2d:abd"));
        let text = g.to_string();
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "A" | "B"), "{text}");
    }
}
