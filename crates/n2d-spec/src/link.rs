//! Link-layer names n2d hands to `ip`, iptables and QEMU: interface (bridge, tap) names and MAC
//! addresses. They come from the user (`--network`), from records and from the host-wide state
//! in /run/n2d, so each is checked here like user input before it is used: a name that `ip`
//! would take as an option, iptables as a wildcard (`br+`) or QEMU as another option
//! (`mac=…,romfile=…`) is refused.
//!
//! The API, for every caller:
//! * [`parse_interface_name`] / [`parse_bridge_name`]: a Linux interface name (1-15 bytes,
//!   not `.` or `..`), restricted to ASCII letters, digits, `-`, `_` and `.`, not starting with
//!   `-`. That excludes everything Linux refuses (`/`, `:`, whitespace) and everything a tool
//!   would read as syntax (`,` for QEMU, `+` and `!` for iptables, a leading `-` for `ip`).
//! * [`parse_tap_name`]: a tap n2d made itself: `n2dt` and 8 lowercase hex digits
//!   ([`is_n2d_tap_name`]; [`n2d_tap_name`] makes one). Anything else (`eth0`, the uplink, a
//!   bridge) is never deleted or re-attached by n2d.
//! * [`parse_mac`]: 6 colon-separated hex bytes, unicast; [`parse_n2d_mac`] also requires the
//!   locally administered bit, as every MAC n2d gives (QEMU's `52:54:00` prefix) has. Both give a
//!   [`Mac`], whose `Display` is the canonical lowercase form.
//!
//! Each returns the input (or the parsed value) on success, so a caller writes
//! `let tap = parse_tap_name(&record.tap)?;`.

use std::fmt;
use std::str::FromStr;

/// Longest Linux interface name in bytes (IFNAMSIZ less the terminating NUL).
pub const MAX_INTERFACE_NAME: usize = 15;
/// The prefix of every tap n2d creates.
pub const TAP_PREFIX: &str = "n2dt";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkNameError {
    #[error("invalid interface name {name:?}: {reason} (use 1-15 letters, digits, '-', '_' or '.', not starting with '-')")]
    InvalidInterface { name: String, reason: &'static str },
    #[error("{name:?} is not a tap n2d made (those are named n2dt followed by 8 lowercase hex digits): n2d never touches other interfaces")]
    NotN2dTap { name: String },
    #[error("invalid MAC address {mac:?}: {reason} (use six colon-separated hex bytes of a unicast address, e.g. 52:54:00:12:34:56)")]
    InvalidMac { mac: String, reason: &'static str },
}

/// Checks a Linux interface name n2d may pass to `ip` and iptables (see the module docs).
pub fn parse_interface_name(name: &str) -> Result<&str, LinkNameError> {
    let bad = |reason| Err(LinkNameError::InvalidInterface { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_INTERFACE_NAME {
        return bad("it is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("it is '.' or '..'");
    }
    if name.starts_with('-') {
        return bad("it starts with '-'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return bad("it holds a character other than letters, digits, '-', '_' and '.'");
    }
    Ok(name)
}

/// Checks a bridge name: an interface name ([`parse_interface_name`]).
pub fn parse_bridge_name(name: &str) -> Result<&str, LinkNameError> {
    parse_interface_name(name)
}

/// Whether `name` follows n2d's own tap naming scheme: `n2dt` + 8 lowercase hex digits.
pub fn is_n2d_tap_name(name: &str) -> bool {
    name.strip_prefix(TAP_PREFIX).is_some_and(|hex| {
        hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Checks that `name` is a tap of n2d's naming scheme ([`is_n2d_tap_name`]).
pub fn parse_tap_name(name: &str) -> Result<&str, LinkNameError> {
    if is_n2d_tap_name(name) {
        Ok(name)
    } else {
        Err(LinkNameError::NotN2dTap { name: name.to_string() })
    }
}

/// The tap name of n2d's scheme for a hash (n2d-net derives the hash from the home and machine).
pub fn n2d_tap_name(hash: u32) -> String {
    format!("{TAP_PREFIX}{hash:08x}")
}

/// A MAC address: six bytes, shown as lowercase colon-separated hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The locally administered bit (second-lowest bit of the first byte) is set.
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// The group (multicast/broadcast) bit is clear.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 0x01 == 0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = LinkNameError;
    fn from_str(s: &str) -> Result<Mac, LinkNameError> {
        parse_mac(s)
    }
}

/// Parses six colon-separated pairs of hex digits (either case) of a unicast address.
pub fn parse_mac(mac: &str) -> Result<Mac, LinkNameError> {
    let bad = |reason| LinkNameError::InvalidMac { mac: mac.to_string(), reason };
    let mut bytes = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut bytes {
        let part = parts.next().ok_or(bad("it has fewer than six bytes"))?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("each byte must be two hex digits"));
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad("each byte must be two hex digits"))?;
    }
    if parts.next().is_some() {
        return Err(bad("it has more than six bytes"));
    }
    let parsed = Mac(bytes);
    if !parsed.is_unicast() {
        return Err(bad("it is a multicast or broadcast address"));
    }
    if parsed.0 == [0; 6] {
        return Err(bad("it is all zeros"));
    }
    Ok(parsed)
}

/// [`parse_mac`], and the address must be locally administered, as every MAC n2d makes is.
pub fn parse_n2d_mac(mac: &str) -> Result<Mac, LinkNameError> {
    let parsed = parse_mac(mac)?;
    if parsed.is_locally_administered() {
        Ok(parsed)
    } else {
        Err(LinkNameError::InvalidMac { mac: mac.to_string(), reason: "n2d's MACs are locally administered" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_linux_and_refuse_tool_syntax() {
        for good in ["n2d0", "br0", "br-lan", "br_1.10", "a", "x".repeat(15).as_str(), "user"] {
            assert_eq!(parse_bridge_name(good), Ok(good), "{good}");
        }
        // Hostile: what Linux refuses, and what ip/iptables/QEMU would read as syntax.
        let long = "x".repeat(16);
        for bad in [
            "",
            ".",
            "..",
            long.as_str(),
            "br/0",
            "../etc",
            "br 0",
            "br\t0",
            "br\n0",
            "br:0",
            "br0,romfile=x",
            "br+",
            "!br0",
            "-h",
            "--help",
            "br0;reboot",
            "bré",
            "br\0",
            "br$(x)",
        ] {
            assert!(parse_bridge_name(bad).is_err(), "{bad:?}");
            assert!(parse_interface_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_n2d_tap_names_are_taps() {
        assert!(is_n2d_tap_name("n2dt0123abcd"));
        assert_eq!(parse_tap_name("n2dtdeadbeef"), Ok("n2dtdeadbeef"));
        assert_eq!(n2d_tap_name(0xab), "n2dt000000ab");
        assert!(is_n2d_tap_name(&n2d_tap_name(u32::MAX)));
        for bad in [
            "eth0",
            "n2d0",
            "lo",
            "n2dt",
            "n2dt0123abc",
            "n2dt0123abcde",
            "n2dt0123ABCD",
            "n2dt0123abcg",
            "N2DT0123abcd",
            "n2dt0123abc,",
            "xn2dt0123abcd",
            "n2dt 123abcd",
        ] {
            assert!(!is_n2d_tap_name(bad), "{bad:?}");
            assert_eq!(parse_tap_name(bad), Err(LinkNameError::NotN2dTap { name: bad.into() }));
        }
    }

    #[test]
    fn macs_are_six_unicast_bytes_and_n2ds_are_local() {
        let mac = parse_n2d_mac("52:54:00:AB:cd:0f").unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!("52:54:01:00:00:01".parse::<Mac>().unwrap().0, [0x52, 0x54, 1, 0, 0, 1]);
        // A vendor's (globally administered) MAC is a MAC, but not one of n2d's.
        assert!(parse_mac("00:16:3e:00:00:01").is_ok());
        assert!(parse_n2d_mac("00:16:3e:00:00:01").is_err());
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5",
            "52:54:00:12:34:567",
            "52-54-00-12-34-56",
            "52:54:00:12:34:zz",
            "52:54:00:12:34:56,romfile=/tmp/x",
            "ff:ff:ff:ff:ff:ff",
            "53:54:00:12:34:56",
            "00:00:00:00:00:00",
            " 52:54:00:12:34:56",
            "52:54:00:12:34:+5",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad:?}");
            assert!(parse_n2d_mac(bad).is_err(), "{bad:?}");
        }
    }
}
