//! The addresses a machine may take on its bridge: `--ip` (one) or `--ip-range` (several).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An inclusive range of IPv4 addresses, written `10.0.0.5` (one address),
/// `10.0.0.50-10.0.0.99` or `10.0.0.64/27` (a block). Which of them a machine may really take
/// (inside the bridge's subnet, not its gateway, network or broadcast address, not leased) is
/// decided where the subnet is known, in n2d-net.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address range {input:?}: {reason} (use an address like 10.0.0.5, a range like 10.0.0.50-10.0.0.99 or a block like 10.0.0.64/27)")]
pub struct InvalidIpRange {
    pub input: String,
    pub reason: &'static str,
}

impl IpRange {
    pub fn single(ip: Ipv4Addr) -> IpRange {
        IpRange { first: ip, last: ip }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip)
    }

    /// Every address of the range, in order.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl FromStr for IpRange {
    type Err = InvalidIpRange;
    fn from_str(input: &str) -> Result<Self, InvalidIpRange> {
        let invalid = |reason| InvalidIpRange { input: input.to_string(), reason };
        let addr = |s: &str| s.trim().parse::<Ipv4Addr>().map_err(|_| invalid("not an IPv4 address"));
        let s = input.trim();
        let range = if let Some((a, b)) = s.split_once('-') {
            IpRange { first: addr(a)?, last: addr(b)? }
        } else if let Some((a, len)) = s.split_once('/') {
            let len: u8 = len
                .parse()
                .ok()
                .filter(|l| (1..=32).contains(l))
                .ok_or(invalid("the prefix length is not 1 to 32"))?;
            let mask = u32::MAX << (32 - len);
            let network = u32::from(addr(a)?) & mask;
            IpRange { first: network.into(), last: (network | !mask).into() }
        } else {
            IpRange::single(addr(s)?)
        };
        if range.first > range.last {
            return Err(invalid("the first address is above the last"));
        }
        if range.first.is_unspecified()
            || range.last.is_broadcast()
            || range.first.is_loopback()
            || range.first.is_multicast()
        {
            return Err(invalid(
                "it holds an address no machine can have (0.0.0.0, loopback, multicast or broadcast)",
            ));
        }
        Ok(range)
    }
}

impl TryFrom<String> for IpRange {
    type Error = InvalidIpRange;
    fn try_from(s: String) -> Result<Self, InvalidIpRange> {
        s.parse()
    }
}

impl From<IpRange> for String {
    fn from(r: IpRange) -> String {
        r.to_string()
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_in_three_forms() {
        assert_eq!("10.0.0.5".parse::<IpRange>().unwrap(), IpRange::single(ip("10.0.0.5")));
        let r: IpRange = "10.0.0.50 - 10.0.0.99".parse().unwrap();
        assert_eq!((r.first, r.last), (ip("10.0.0.50"), ip("10.0.0.99")));
        assert_eq!(r.addresses().count(), 50);
        let r: IpRange = "192.168.1.77/28".parse().unwrap();
        assert_eq!((r.first, r.last), (ip("192.168.1.64"), ip("192.168.1.79")));
        assert!(r.contains(ip("192.168.1.70")) && !r.contains(ip("192.168.1.80")));
        assert_eq!(r.to_string(), "192.168.1.64-192.168.1.79");
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"192.168.1.64-192.168.1.79\"");
        assert_eq!(serde_json::from_str::<IpRange>("\"192.168.1.64-192.168.1.79\"").unwrap(), r);
    }

    #[test]
    fn bad_ranges_say_why() {
        for (bad, why) in [
            ("", "not an IPv4 address"),
            ("10.0.0", "not an IPv4 address"),
            ("10.0.0.9-10.0.0.1", "first address is above"),
            ("10.0.0.0/0", "prefix length"),
            ("10.0.0.0/33", "prefix length"),
            ("127.0.0.1", "no machine can have"),
            ("0.0.0.0/8", "no machine can have"),
            ("10.0.0.1-255.255.255.255", "no machine can have"),
        ] {
            let err = bad.parse::<IpRange>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
