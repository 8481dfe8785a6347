//! Host folders shared into a machine: `--mount HOST_PATH[:GUEST_PATH][:ro]`, and a cluster
//! file's `mounts:` list in the same form.

use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

/// The most host folders one machine takes.
pub const MAX_MOUNTS: usize = 8;

/// Where the guest keeps what n2d and Docker need: no host folder goes there.
const RESERVED: [&str; 7] =
    ["/proc", "/sys", "/dev", "/run", "/etc", "/var/lib/docker", "/var/lib/containerd"];

/// One host folder shared into a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostMount {
    /// On the host; absolute once the orchestrator has resolved it (it must exist).
    pub host: PathBuf,
    /// In the guest, absolute; the host path when not given.
    pub guest: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("--mount {given}: {reason} (write HOST_PATH[:GUEST_PATH][:ro], e.g. --mount $PWD or --mount ./src:/app:ro)")]
    Invalid { given: String, reason: String },
    #[error("--mount: at most {MAX_MOUNTS} host folders per machine")]
    TooMany,
    #[error("--mount: {0} is the guest path of two host folders")]
    GuestTwice(String),
}

impl FromStr for HostMount {
    type Err = MountError;

    fn from_str(given: &str) -> Result<HostMount, MountError> {
        let invalid =
            |reason: &str| MountError::Invalid { given: given.to_string(), reason: reason.to_string() };
        let mut parts: Vec<&str> = given.split(':').collect();
        let read_only = match parts.last() {
            Some(&"ro") if parts.len() > 1 => {
                parts.pop();
                true
            }
            Some(&"rw") if parts.len() > 1 => {
                parts.pop();
                false
            }
            _ => false,
        };
        let (host, guest) = match parts[..] {
            [host] => (host, None),
            [host, guest] => (host, Some(guest)),
            _ => {
                return Err(invalid(
                    "too many `:` (a host path with `:` cannot be shared; link it elsewhere)",
                ))
            }
        };
        if host.is_empty() {
            return Err(invalid("the host path is empty"));
        }
        if host.contains(',') || guest.is_some_and(|g| g.contains(',')) {
            // QEMU's option syntax and the guest's mount options would both need escaping.
            return Err(invalid("a path with `,` cannot be shared; link it elsewhere"));
        }
        let guest = match guest {
            Some(g) => g.to_string(),
            None if host.starts_with('/') => host.to_string(),
            // A relative host path's absolute form is the orchestrator's to find.
            None => String::new(),
        };
        let mount = HostMount { host: PathBuf::from(host), guest, read_only };
        if !mount.guest.is_empty() {
            check_guest_path(&mount.guest).map_err(|reason| invalid(&reason))?;
        }
        Ok(mount)
    }
}

/// A guest path a host folder may go to: absolute, plain (no `.`, `..` or `//`), not `/`, and
/// outside what the guest itself needs.
pub fn check_guest_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("the guest path {path} is not absolute"));
    }
    if p.components().any(|c| matches!(c, Component::CurDir | Component::ParentDir)) || path.contains("//") {
        return Err(format!("the guest path {path} has `.`, `..` or `//` in it"));
    }
    let plain = path.trim_end_matches('/');
    if plain.is_empty() {
        return Err("the guest's / cannot be a host folder".into());
    }
    if let Some(r) = RESERVED.iter().find(|r| plain == **r || plain.starts_with(&format!("{r}/"))) {
        return Err(format!("{r} belongs to the guest itself; pick another guest path"));
    }
    Ok(())
}

/// The checks on a machine's list: how many, and each guest path once.
pub fn check_mounts(mounts: &[HostMount]) -> Result<(), MountError> {
    if mounts.len() > MAX_MOUNTS {
        return Err(MountError::TooMany);
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in mounts {
        if !seen.insert(m.guest.trim_end_matches('/')) {
            return Err(MountError::GuestTwice(m.guest.clone()));
        }
    }
    Ok(())
}

impl std::fmt::Display for HostMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host.display(), self.guest)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

impl From<HostMount> for String {
    fn from(m: HostMount) -> String {
        m.to_string()
    }
}

impl TryFrom<String> for HostMount {
    type Error = MountError;
    fn try_from(s: String) -> Result<HostMount, MountError> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> HostMount {
        s.parse().unwrap()
    }

    #[test]
    fn the_guest_path_defaults_to_the_host_path_and_ro_is_a_suffix() {
        assert_eq!(
            m("/src/app"),
            HostMount { host: "/src/app".into(), guest: "/src/app".into(), read_only: false }
        );
        assert_eq!(
            m("/src:/app:ro"),
            HostMount { host: "/src".into(), guest: "/app".into(), read_only: true }
        );
        assert_eq!(m("/src:ro"), HostMount { host: "/src".into(), guest: "/src".into(), read_only: true });
        assert_eq!(m("./src:/app:rw").guest, "/app");
        assert_eq!(m("src").guest, "", "a relative path is resolved later");
        assert_eq!(m("/src:/app:ro").to_string(), "/src:/app:ro");
        let json = serde_json::to_string(&m("/a:/b:ro")).unwrap();
        assert_eq!(serde_json::from_str::<HostMount>(&json).unwrap(), m("/a:/b:ro"));
    }

    #[test]
    fn bad_mounts_say_what_is_wrong_and_how_to_write_one() {
        for (given, says) in [
            ("", "empty"),
            ("/a:/b:/c", "too many"),
            ("/a:b", "not absolute"),
            ("/a:/", "guest's /"),
            ("/a:/x/../y", "`..`"),
            ("/a:/var/lib/docker/x", "/var/lib/docker belongs"),
            ("/a:/etc", "/etc belongs"),
            ("/a,b", "`,`"),
        ] {
            let err = given.parse::<HostMount>().unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("HOST_PATH[:GUEST_PATH][:ro]"), "{given}: {err}");
        }
        assert!(check_guest_path("/etcetera").is_ok());
        let two = [m("/a:/x"), m("/b:/x/")];
        assert_eq!(check_mounts(&two), Err(MountError::GuestTwice("/x/".into())));
        assert_eq!(check_mounts(&vec![m("/a:/x"); 9]), Err(MountError::TooMany));
    }
}
