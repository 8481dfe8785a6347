//! Building as an ordinary user: mmdebstrap's unshare mode builds the userland in a user
//! namespace whose ids 0..65535 map onto the user's subordinate ids (`/etc/subuid`,
//! `/etc/subgid`), set up by the setuid `newuidmap` and `newgidmap` (Debian package uidmap).
//! What it needs is checked here, before any work, so a missing piece is named with its fix.

use crate::error::BuildError;
pub use crate::error::MIN_SUBORDINATE_IDS;

/// The programs that map a user namespace's ids onto subordinate ids.
pub const UIDMAP_PROGRAMS: [&str; 2] = ["newuidmap", "newgidmap"];
pub const UIDMAP_PACKAGE: &str = "uidmap";
pub const SUBUID_FILE: &str = "/etc/subuid";
pub const SUBGID_FILE: &str = "/etc/subgid";

/// What an unshare-mode build needs to know of the user, as read from the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildUser {
    pub uid: u32,
    /// The user's name: mmdebstrap looks the ranges up by name. `None`: the uid has none.
    pub name: Option<String>,
    /// The text of /etc/subuid and /etc/subgid (empty when missing or unreadable).
    pub subuid: String,
    pub subgid: String,
}

impl BuildUser {
    /// This process's (effective) user.
    pub fn of_this_process() -> BuildUser {
        let uid = nix::unistd::Uid::effective();
        let read = |file| std::fs::read_to_string(file).unwrap_or_default();
        BuildUser {
            uid: uid.as_raw(),
            name: nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name),
            subuid: read(SUBUID_FILE),
            subgid: read(SUBGID_FILE),
        }
    }

    /// The name the fixes use: the user's, else the uid.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("uid {}", self.uid))
    }
}

/// `name`'s range (first id, count) in an /etc/subuid or /etc/subgid text: its first entry, the
/// one mmdebstrap uses. `None` when it has none or that entry is malformed.
pub fn subordinate_range(text: &str, name: &str) -> Option<(u64, u64)> {
    let mut fields =
        text.lines().map(|l| l.split(':')).find_map(|mut f| (f.next() == Some(name)).then_some(f))?;
    let start = fields.next()?.trim().parse().ok()?;
    let count = fields.next()?.trim().parse().ok()?;
    Some((start, count))
}

/// Whether an ordinary user can build an image: newuidmap and newgidmap installed, and a range
/// of at least [`MIN_SUBORDINATE_IDS`] ids for the user in both /etc/subuid and /etc/subgid.
pub fn check_unshare(user: &BuildUser, installed: &dyn Fn(&str) -> bool) -> Result<(), BuildError> {
    if let Some(program) = UIDMAP_PROGRAMS.into_iter().find(|p| !installed(p)) {
        return Err(BuildError::UidmapMissing { program });
    }
    for (file, text) in [(SUBUID_FILE, &user.subuid), (SUBGID_FILE, &user.subgid)] {
        let range = user.name.as_deref().and_then(|name| subordinate_range(text, name));
        if range.is_none_or(|(_, count)| count < MIN_SUBORDINATE_IDS) {
            return Err(BuildError::NoSubordinateIds { user: user.display_name(), file });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(subuid: &str, subgid: &str) -> BuildUser {
        BuildUser { uid: 1001, name: Some("ann".into()), subuid: subuid.into(), subgid: subgid.into() }
    }

    const RANGE: &str = "bob:100000:65536\nann:165536:65536\nann:300000:65536\n";

    #[test]
    fn the_first_entry_naming_the_user_is_its_range() {
        assert_eq!(subordinate_range(RANGE, "ann"), Some((165536, 65536)));
        assert_eq!(subordinate_range(RANGE, "bob"), Some((100000, 65536)));
        assert_eq!(subordinate_range(RANGE, "an"), None);
        assert_eq!(subordinate_range("", "ann"), None);
        assert_eq!(subordinate_range("ann:x:65536\n", "ann"), None);
        assert_eq!(subordinate_range("ann:100000\n", "ann"), None);
    }

    #[test]
    fn a_user_with_uidmap_and_both_ranges_can_build() {
        assert!(check_unshare(&user(RANGE, RANGE), &|_| true).is_ok());
    }

    #[test]
    fn missing_uidmap_names_the_package() {
        let err = check_unshare(&user(RANGE, RANGE), &|p| p != "newgidmap").unwrap_err();
        assert!(matches!(err, BuildError::UidmapMissing { program: "newgidmap" }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("as an ordinary user") && msg.contains("apt-get install uidmap"), "{msg}");
    }

    #[test]
    fn a_missing_or_small_range_names_the_file_and_the_fix() {
        let err = check_unshare(&user("", RANGE), &|_| true).unwrap_err();
        assert!(matches!(&err, BuildError::NoSubordinateIds { file: SUBUID_FILE, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("/etc/subuid") && msg.contains("ann"), "{msg}");
        assert!(msg.contains("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ann"), "{msg}");

        let err = check_unshare(&user(RANGE, "ann:100000:1000\n"), &|_| true).unwrap_err();
        assert!(matches!(&err, BuildError::NoSubordinateIds { file: SUBGID_FILE, .. }), "{err:?}");
    }

    #[test]
    fn a_user_without_a_name_has_no_range() {
        let nameless = BuildUser { name: None, ..user(RANGE, RANGE) };
        let msg = check_unshare(&nameless, &|_| true).unwrap_err().to_string();
        assert!(msg.contains("uid 1001"), "{msg}");
    }
}
