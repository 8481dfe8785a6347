//! Published ports: a TCP port on the host's 127.0.0.1 forwarded to a port of a node
//! (user-mode networking, `n2d port`, `--publish`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A forward from `127.0.0.1:host` to the guest's port `guest` (TCP). Written `HOST:GUEST` in
/// records and cluster files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortForward {
    pub host: u16,
    pub guest: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid port {input:?}: {reason} (use GUEST or HOST:GUEST with ports 1-65535, e.g. 8080 or 18080:80)"
)]
pub struct InvalidPort {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for PortForward {
    type Err = InvalidPort;

    /// `GUEST` (the same port on the host) or `HOST:GUEST`; `/tcp` may follow.
    fn from_str(input: &str) -> Result<Self, InvalidPort> {
        let bad = |reason| InvalidPort { input: input.to_string(), reason };
        let spec = input.strip_suffix("/tcp").unwrap_or(input);
        if spec.contains('/') {
            return Err(bad("only TCP ports can be forwarded"));
        }
        let port = |s: &str| match s.parse::<u16>() {
            Ok(0) => Err(bad("port 0 is not a port")),
            Ok(p) => Ok(p),
            Err(_) => Err(bad("not a port number")),
        };
        match spec.split_once(':') {
            Some((host, guest)) => Ok(PortForward { host: port(host)?, guest: port(guest)? }),
            None => {
                let p = port(spec)?;
                Ok(PortForward { host: p, guest: p })
            }
        }
    }
}

impl TryFrom<String> for PortForward {
    type Error = InvalidPort;
    fn try_from(s: String) -> Result<Self, InvalidPort> {
        s.parse()
    }
}

impl From<PortForward> for String {
    fn from(f: PortForward) -> String {
        format!("{}:{}", f.host, f.guest)
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "127.0.0.1:{}->{}/tcp", self.host, self.guest)
    }
}

/// `forwards` with no two on one host port: the first one given for a port is kept out of a
/// clash, reported as `Err(port)`.
pub fn check_distinct(forwards: &[PortForward]) -> Result<(), u16> {
    let mut seen = std::collections::BTreeSet::new();
    for f in forwards {
        if !seen.insert(f.host) {
            return Err(f.host);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_guest_and_host_guest() {
        assert_eq!("8080".parse::<PortForward>().unwrap(), PortForward { host: 8080, guest: 8080 });
        assert_eq!("18080:80".parse::<PortForward>().unwrap(), PortForward { host: 18080, guest: 80 });
        assert_eq!("18080:80/tcp".parse::<PortForward>().unwrap(), PortForward { host: 18080, guest: 80 });
        for (bad, why) in [
            ("0", "port 0"),
            ("x", "not a port"),
            ("70000", "not a port"),
            ("1:2:3", "not a port"),
            ("53/udp", "only TCP"),
            (":80", "not a port"),
            ("", "not a port"),
        ] {
            let err = bad.parse::<PortForward>().unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("HOST:GUEST"), "{bad}: {err}");
        }
        assert_eq!(PortForward { host: 1, guest: 2 }.to_string(), "127.0.0.1:1->2/tcp");
        let json = serde_json::to_string(&PortForward { host: 1, guest: 2 }).unwrap();
        assert_eq!(json, r#""1:2""#);
        assert_eq!(serde_json::from_str::<PortForward>(&json).unwrap(), PortForward { host: 1, guest: 2 });
    }

    #[test]
    fn one_forward_per_host_port() {
        let f = |h, g| PortForward { host: h, guest: g };
        assert_eq!(check_distinct(&[f(1, 1), f(2, 1)]), Ok(()));
        assert_eq!(check_distinct(&[f(1, 1), f(2, 1), f(1, 3)]), Err(1));
    }
}
