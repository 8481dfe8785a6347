//! `n2d cp`'s two ends: a path on the host, or `NAME:PATH` in a machine (as `docker cp`
//! writes a container's).

use crate::machine::MachineName;
use std::path::PathBuf;
use std::str::FromStr;

/// One end of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyEnd {
    Host(PathBuf),
    /// `path` is absolute in the guest (a relative one is taken from `/`).
    Machine {
        name: MachineName,
        path: String,
    },
}

impl FromStr for CopyEnd {
    type Err = std::convert::Infallible;

    /// `NAME:PATH` when what precedes the first `:` is a machine name (no `/`, so `./a:b` and
    /// `/x:y` are host paths); anything else is a host path.
    fn from_str(s: &str) -> Result<CopyEnd, Self::Err> {
        if let Some((name, path)) = s.split_once(':') {
            if let Ok(name) = name.parse::<MachineName>() {
                let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
                return Ok(CopyEnd::Machine { name, path });
            }
        }
        Ok(CopyEnd::Host(PathBuf::from(s)))
    }
}

impl std::fmt::Display for CopyEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyEnd::Host(path) => write!(f, "{}", path.display()),
            CopyEnd::Machine { name, path } => write!(f, "{name}:{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ends_need_a_machine_name_before_the_colon() {
        let m = |s: &str| s.parse::<CopyEnd>().unwrap();
        assert_eq!(
            m("web-1:/etc/hosts"),
            CopyEnd::Machine { name: "web-1".parse().unwrap(), path: "/etc/hosts".into() }
        );
        assert_eq!(m("web-1:tmp"), CopyEnd::Machine { name: "web-1".parse().unwrap(), path: "/tmp".into() });
        for host in ["./a:b", "/x:y", "Web:x", "plain", "dir/file"] {
            assert_eq!(m(host), CopyEnd::Host(host.into()), "{host}");
        }
        assert_eq!(m("web-1:/x").to_string(), "web-1:/x");
    }
}
