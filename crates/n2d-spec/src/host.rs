//! A host: another Linux machine where n2d runs machines, reached over OpenSSH
//! (`n2d host add NAME ssh://[USER@]HOST[:PORT]`). The machine n2d runs on is the host
//! [`LOCAL_HOST`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The name of the machine n2d itself runs on: never recorded, always there.
pub const LOCAL_HOST: &str = "local";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostSpecError {
    #[error("invalid host name {name:?}: {reason} (use 1-63 lowercase letters, digits and '-', starting with a letter or digit)")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid SSH address {input:?}: {reason} (use ssh://[USER@]HOST[:PORT], e.g. ssh://alice@lab2 or ssh://10.0.0.7:2222)")]
    InvalidUrl { input: String, reason: &'static str },
}

/// A host's name: a DNS label, like a machine's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl HostName {
    pub fn local() -> HostName {
        HostName(LOCAL_HOST.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_local(&self) -> bool {
        self.0 == LOCAL_HOST
    }
}

impl FromStr for HostName {
    type Err = HostSpecError;
    fn from_str(name: &str) -> Result<Self, HostSpecError> {
        let invalid = |reason| Err(HostSpecError::InvalidName { name: name.to_string(), reason });
        if name.is_empty() {
            return invalid("it is empty");
        }
        if name.len() > 63 {
            return invalid("it is longer than 63 characters");
        }
        if name.chars().any(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-')) {
            return invalid("it has characters other than a-z, 0-9 and '-'");
        }
        if name.starts_with('-') || name.ends_with('-') {
            return invalid("it starts or ends with '-'");
        }
        Ok(HostName(name.to_string()))
    }
}

impl TryFrom<String> for HostName {
    type Error = HostSpecError;
    fn try_from(s: String) -> Result<Self, HostSpecError> {
        s.parse()
    }
}

impl From<HostName> for String {
    fn from(n: HostName) -> String {
        n.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a host is: `ssh://[USER@]HOST[:PORT]`, as docker's `ssh://` contexts write it. Every
/// part is checked so that none of it can reach `ssh` as an option (a host `-oProxyCommand=...`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SshUrl {
    pub user: Option<String>,
    /// A host name, an IPv4 address or an IPv6 address (without brackets).
    pub host: String,
    pub port: Option<u16>,
}

impl SshUrl {
    /// `[USER@]HOST` as `ssh` takes it.
    pub fn destination(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

impl FromStr for SshUrl {
    type Err = HostSpecError;
    fn from_str(input: &str) -> Result<Self, HostSpecError> {
        let invalid = |reason| Err(HostSpecError::InvalidUrl { input: input.to_string(), reason });
        let Some(rest) = input.strip_prefix("ssh://") else {
            return invalid("it does not start with ssh://");
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return invalid("a path or query has no meaning here");
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((user, hostport)) => (Some(user), hostport),
            None => (None, rest),
        };
        if let Some(user) = user {
            let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
            if user.is_empty() || user.starts_with('-') || !user.chars().all(plain) {
                return invalid(
                    "the user name is empty or has characters other than letters, digits, '_', '-' and '.'",
                );
            }
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let Some((addr, after)) = v6.split_once(']') else {
                return invalid("an IPv6 address misses its closing ']'");
            };
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return invalid("what is in brackets is not an IPv6 address");
            }
            let port = match after {
                "" => None,
                p => match p.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return invalid("after ']' only :PORT may follow"),
                },
            };
            (addr.to_string(), port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => return invalid("the port is not a number from 1 to 65535"),
            },
        };
        if host.is_empty() {
            return invalid("the host is empty");
        }
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if !host.contains(':') && (host.starts_with('-') || !host.chars().all(name_char)) {
            return invalid("the host has characters other than letters, digits, '-', '.' and '_'");
        }
        Ok(SshUrl { user: user.map(str::to_string), host, port })
    }
}

impl TryFrom<String> for SshUrl {
    type Error = HostSpecError;
    fn try_from(s: String) -> Result<Self, HostSpecError> {
        s.parse()
    }
}

impl From<SshUrl> for String {
    fn from(u: SshUrl) -> String {
        u.to_string()
    }
}

impl fmt::Display for SshUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ssh://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_parse_and_print_back() {
        for (input, user, host, port) in [
            ("ssh://lab2", None, "lab2", None),
            ("ssh://alice@lab2", Some("alice"), "lab2", None),
            ("ssh://alice@10.0.0.7:2222", Some("alice"), "10.0.0.7", Some(2222)),
            ("ssh://[fd00::7]:22", None, "fd00::7", Some(22)),
            ("ssh://[fd00::7]", None, "fd00::7", None),
            ("ssh://node-1.lan.example/", None, "node-1.lan.example", None),
        ] {
            let url: SshUrl = input.parse().unwrap();
            assert_eq!(url.user.as_deref(), user, "{input}");
            assert_eq!(url.host, host, "{input}");
            assert_eq!(url.port, port, "{input}");
            assert_eq!(url.to_string().parse::<SshUrl>().unwrap(), url);
        }
        assert_eq!("ssh://alice@lab2:2222".parse::<SshUrl>().unwrap().destination(), "alice@lab2");
    }

    #[test]
    fn ssh_urls_that_could_become_options_or_are_malformed_are_refused() {
        for (input, says) in [
            ("lab2", "does not start with ssh://"),
            ("tcp://lab2:2376", "does not start with ssh://"),
            ("ssh://", "the host is empty"),
            ("ssh://-oProxyCommand=sh", "the host has characters"),
            ("ssh://-lroot@lab2", "the user name"),
            ("ssh://a b@lab2", "the user name"),
            ("ssh://lab2;rm", "the host has characters"),
            ("ssh://lab2:0", "the port"),
            ("ssh://lab2:99999", "the port"),
            ("ssh://lab2:x", "the port"),
            ("ssh://lab2/path", "a path"),
            ("ssh://[fd00::7", "closing"),
            ("ssh://[nothost]:22", "not an IPv6"),
        ] {
            let err = input.parse::<SshUrl>().unwrap_err().to_string();
            assert!(err.contains(says), "{input}: {err}");
            assert!(err.contains("use ssh://[USER@]HOST[:PORT]"), "{err}");
        }
    }

    #[test]
    fn host_names_are_dns_labels() {
        assert!("lab-2".parse::<HostName>().is_ok());
        assert!(HostName::local().is_local());
        for bad in ["", "Lab", "a_b", "-a", &"a".repeat(64)] {
            assert!(bad.parse::<HostName>().is_err(), "{bad}");
        }
    }
}
