//! Where an export writes, safely: the output directory may be one other users can reach (a
//! shared `/tmp`), and a `--for NAME` export carries the machine's TLS private key.
//!
//! * The output directory is resolved once (the user may name it through a symlink) and every
//!   directory from `/` down to it must be owned by the caller or root and not writable by
//!   group or others unless sticky ([`check_output_dir`]): otherwise another user could rename
//!   n2d's work directory away and plant one of their own in its place while `qemu-img` or
//!   `xorriso` (given paths) write there.
//! * Files are made in a work directory n2d creates itself with an unpredictable name, mode 0700
//!   ([`WorkDir`]): n2d's own files in it are created exclusively without following symlinks;
//!   what the external tools write there no one else can reach.
//! * Each file is moved into place by `renameat2(RENAME_NOREPLACE)` ([`place`]): a symlink,
//!   directory or another user's file at the final name is left alone and refused; only a
//!   regular file of the caller's own (a previous export of the same image) is replaced, as a
//!   rename replaces it (never writing through it).

use crate::ExportError;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Prefix of a work directory's name (then 16 random hex digits).
pub const WORK_PREFIX: &str = ".n2d-export-";

const FIX: &str =
    "give a directory only you (or root) can write, e.g. `mkdir -m 700 ~/exports` and --output ~/exports";

fn unsafe_dir(dir: &Path, problem: String, fix: String) -> ExportError {
    ExportError::UnsafeOutputDir { dir: dir.to_path_buf(), problem, fix }
}

/// Checks a directory n2d would write into (or one above it): owned by `me` or root; writable by
/// group or others only when sticky (then nobody but a file's owner may rename or remove it).
fn check_one(dir: &Path, meta: &std::fs::Metadata, me: u32) -> Result<(), ExportError> {
    let (uid, mode) = (meta.uid(), meta.mode());
    if uid != me && uid != 0 {
        return Err(unsafe_dir(
            dir,
            format!("it belongs to uid {uid}, who could swap the files n2d writes there"),
            FIX.to_string(),
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        return Err(unsafe_dir(
            dir,
            format!("it is writable by {who} (mode {:04o}) and not sticky", mode & 0o7777),
            format!("run `chmod go-w {}`, or {FIX}", dir.display()),
        ));
    }
    Ok(())
}

/// The output directory exists, is a directory the caller can write, and neither it nor any
/// directory above it can be changed by another user (see the module's notes). Returns its
/// resolved path, which every later step uses. Nothing is created.
pub fn check_output_dir(out: &Path) -> Result<PathBuf, ExportError> {
    let fail = |source| ExportError::OutputDir { dir: out.to_path_buf(), source };
    // The user named it: a symlink to it is followed, once.
    let resolved = std::fs::canonicalize(out).map_err(fail)?;
    let meta = std::fs::metadata(&resolved).map_err(fail)?;
    if !meta.is_dir() {
        return Err(fail(std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory")));
    }
    let me = rustix::process::geteuid().as_raw();
    for dir in resolved.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let meta = std::fs::symlink_metadata(dir).map_err(fail)?;
        check_one(dir, &meta, me)?;
    }
    // Writable (for the caller), without making a file to find out.
    rustix::fs::access(&resolved, rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK)
        .map_err(|e| fail(e.into()))?;
    Ok(resolved)
}

/// The work directory: `<output>/.n2d-export-<random>`, mode 0700, made by n2d (mkdir fails
/// if anything has the name), removed with everything in it on drop whatever happened.
pub struct WorkDir(PathBuf);

impl WorkDir {
    /// Makes it in `out` (a path [`check_output_dir`] returned): on the same filesystem as the
    /// output, so the final renames move no bytes.
    pub fn create(out: &Path) -> Result<WorkDir, ExportError> {
        let path = out.join(format!("{WORK_PREFIX}{}", n2d_store::safe_fs::random_suffix()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| ExportError::OutputDir { dir: out.to_path_buf(), source })?;
        let work = WorkDir(path);
        // Exactly 0700 whatever the umask.
        std::fs::set_permissions(&work.0, std::fs::Permissions::from_mode(0o700))
            .map_err(crate::io_err("make private", &work.0))?;
        Ok(work)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path in it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // std's remove_dir_all does not follow symlinks inside the tree.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A final file name must be one plain name: no `/`, no leading dot, not empty.
fn check_name(name: &str) -> Result<(), ExportError> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
        return Err(ExportError::BadFileName(name.to_string()));
    }
    Ok(())
}

fn open_dir(out: &Path) -> Result<OwnedFd, ExportError> {
    rustix::fs::open(
        out,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| ExportError::OutputDir { dir: out.to_path_buf(), source: e.into() })
}

/// What is at `name` in the directory: nothing (`Ok(false)`), a file n2d may replace
/// (`Ok(true)`: a regular file of the caller's with no other hard link), or something else
/// (refused, naming it). Never follows a symlink.
fn replaceable(dir: &OwnedFd, out: &Path, name: &str) -> Result<bool, ExportError> {
    let path = out.join(name);
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(crate::io_err("look at", &path)(e.into())),
    };
    let me = rustix::process::geteuid().as_raw();
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile if st.st_uid != me => format!("a file of uid {}", st.st_uid),
        FileType::RegularFile if st.st_nlink > 1 => "a file with other hard links".to_string(),
        FileType::RegularFile => return Ok(true),
        FileType::Symlink => "a symbolic link".to_string(),
        FileType::Directory => "a directory".to_string(),
        _ => "not a regular file".to_string(),
    };
    Err(ExportError::Exists { path, kind })
}

/// Checks, before any work, that every final name is free or replaceable (see [`place`]).
pub fn check_final_names<'a>(
    out: &Path,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), ExportError> {
    let dir = open_dir(out)?;
    for name in names {
        check_name(name)?;
        replaceable(&dir, out, name)?;
    }
    Ok(())
}

/// Moves `from` (a file in the work directory) to `out/name` with exactly `mode`. The name must
/// be free, or hold a regular file of the caller's own, which is replaced (atomically: a rename
/// replaces the entry, it never writes through it). Anything else there is left as it is.
pub fn place(out: &Path, from: &Path, name: &str, mode: u32) -> Result<PathBuf, ExportError> {
    check_name(name)?;
    let to = out.join(name);
    std::fs::set_permissions(from, std::fs::Permissions::from_mode(mode))
        .map_err(crate::io_err("set the mode of", from))?;
    let dir = open_dir(out)?;
    let moved = if replaceable(&dir, out, name)? {
        rustix::fs::renameat(rustix::fs::CWD, from, &dir, name)
    } else {
        match rustix::fs::renameat_with(rustix::fs::CWD, from, &dir, name, RenameFlags::NOREPLACE) {
            // A filesystem without RENAME_NOREPLACE: a hard link is just as exclusive.
            Err(rustix::io::Errno::INVAL) => {
                rustix::fs::linkat(rustix::fs::CWD, from, &dir, name, AtFlags::empty())
                    .and_then(|()| rustix::fs::unlink(from))
            }
            other => other,
        }
    };
    match moved {
        Ok(()) => Ok(to),
        Err(rustix::io::Errno::EXIST) => {
            Err(ExportError::Exists { path: to, kind: "something put there during the export".into() })
        }
        Err(e) => Err(ExportError::Io { action: "move into place", path: to, source: e.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn a_private_directory_is_accepted_and_resolved_through_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let link = root.path().join("link");
        symlink(&out, &link).unwrap();
        let resolved = check_output_dir(&link).unwrap();
        assert_eq!(resolved, std::fs::canonicalize(&out).unwrap());
        // Nothing was made to find out.
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    }

    #[test]
    fn directories_others_can_write_are_refused_naming_the_fix() {
        let root = tempfile::tempdir().unwrap();
        for (mode, who) in [(0o777, "group and others"), (0o757, "others"), (0o775, "its group")] {
            let out = root.path().join(format!("o{mode:o}"));
            std::fs::create_dir(&out).unwrap();
            chmod(&out, mode);
            let err = check_output_dir(&out).unwrap_err();
            assert!(err.is_usage(), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&out.display().to_string()), "{msg}");
            assert!(msg.contains(who) && msg.contains("chmod go-w"), "{msg}");
        }
        // A world-writable directory above a private one: the private one could be renamed away.
        let open = root.path().join("open");
        std::fs::create_dir_all(open.join("mine")).unwrap();
        chmod(&open, 0o777);
        let msg = check_output_dir(&open.join("mine")).unwrap_err().to_string();
        assert!(msg.contains(&format!("{} is not safe", open.display())), "{msg}");
    }

    #[test]
    fn a_sticky_directory_is_accepted_only_from_the_caller_or_root() {
        let root = tempfile::tempdir().unwrap();
        let sticky = root.path().join("tmp");
        std::fs::create_dir(&sticky).unwrap();
        chmod(&sticky, 0o1777);
        check_output_dir(&sticky).unwrap();
        if !is_root() {
            eprintln!("skipped the foreign-owner half: needs root to chown");
            return;
        }
        // A /tmp-like directory owned by nobody: its owner may rename anything in it.
        rustix::fs::chown(&sticky, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
        let msg = check_output_dir(&sticky).unwrap_err().to_string();
        assert!(msg.contains("belongs to uid 65534"), "{msg}");
        // So is a private directory below a directory another user owns.
        let theirs = root.path().join("theirs");
        std::fs::create_dir_all(theirs.join("mine")).unwrap();
        rustix::fs::chown(&theirs, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
        assert!(check_output_dir(&theirs.join("mine")).unwrap_err().to_string().contains("uid 65534"));
    }

    #[test]
    fn the_probe_is_gone_a_planted_probe_symlink_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let out = root.path().join("out");
        std::fs::create_dir(&out).unwrap();
        symlink(&target, out.join(format!(".n2d-export-probe-{}", std::process::id()))).unwrap();
        check_output_dir(&out).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn work_directories_are_private_unpredictable_and_removed() {
        let out = tempfile::tempdir().unwrap();
        // A directory at the old predictable name is irrelevant.
        let planted = out.path().join(format!(".n2d-export-{}-0123456789ab", std::process::id()));
        std::fs::create_dir(&planted).unwrap();
        std::fs::write(planted.join("x"), b"x").unwrap();
        let (a, b) = (WorkDir::create(out.path()).unwrap(), WorkDir::create(out.path()).unwrap());
        assert_ne!(a.path(), b.path());
        for w in [&a, &b] {
            let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
            let suffix = name.strip_prefix(WORK_PREFIX).unwrap();
            assert!(suffix.len() == 16 && suffix.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
            let meta = std::fs::symlink_metadata(w.path()).unwrap();
            assert!(meta.is_dir());
            assert_eq!(meta.mode() & 0o7777, 0o700);
        }
        std::fs::write(a.join("f"), b"x").unwrap();
        let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
        drop((a, b));
        assert!(!pa.exists() && !pb.exists());
        assert_eq!(std::fs::read(planted.join("x")).unwrap(), b"x");
    }

    #[test]
    fn placing_never_follows_or_replaces_what_was_planted() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let work = WorkDir::create(&out).unwrap();
        let target = root.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let from = work.join("disk.img");
        std::fs::write(&from, b"secret").unwrap();

        // A symlink at the final name: left as it is, its target untouched.
        symlink(&target, out.join("a.img")).unwrap();
        let err = place(&out, &from, "a.img", 0o600).unwrap_err();
        assert!(err.is_usage() && err.to_string().contains("a symbolic link"), "{err}");
        assert!(check_final_names(&out, ["a.img"]).is_err());
        assert!(std::fs::symlink_metadata(out.join("a.img")).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        // A dangling symlink (which an O_CREAT open would follow to create its target).
        let absent = root.path().join("absent");
        symlink(&absent, out.join("b.img")).unwrap();
        assert!(place(&out, &from, "b.img", 0o600).is_err());
        assert!(!absent.exists());
        // A directory, and a file with another hard link.
        std::fs::create_dir(out.join("c.img")).unwrap();
        assert!(place(&out, &from, "c.img", 0o600).unwrap_err().to_string().contains("a directory"));
        std::fs::hard_link(&target, out.join("d.img")).unwrap();
        assert!(place(&out, &from, "d.img", 0o600).unwrap_err().to_string().contains("hard links"));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        // Names that are not one plain name.
        for bad in ["", "../x.img", ".hidden", "a/b"] {
            assert!(matches!(place(&out, &from, bad, 0o600), Err(ExportError::BadFileName(_))), "{bad:?}");
        }
        assert_eq!(std::fs::read(&from).unwrap(), b"secret", "the file stays in the work directory");

        // A free name: moved with exactly the mode asked.
        let placed = place(&out, &from, "e.img", 0o600).unwrap();
        assert_eq!(std::fs::read(&placed).unwrap(), b"secret");
        assert_eq!(std::fs::metadata(&placed).unwrap().mode() & 0o7777, 0o600);
        // A file of the caller's own (an earlier export) is replaced.
        let again = work.join("again");
        std::fs::write(&again, b"newer").unwrap();
        place(&out, &again, "e.img", 0o644).unwrap();
        assert_eq!(std::fs::read(out.join("e.img")).unwrap(), b"newer");
        assert_eq!(std::fs::metadata(out.join("e.img")).unwrap().mode() & 0o7777, 0o644);
    }

    #[test]
    fn a_file_of_another_user_at_the_final_name_is_not_replaced() {
        if !is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let out = tempfile::tempdir().unwrap();
        let work = WorkDir::create(out.path()).unwrap();
        let theirs = out.path().join("n2d.img");
        std::fs::write(&theirs, b"theirs").unwrap();
        rustix::fs::chown(&theirs, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
        let from = work.join("x");
        std::fs::write(&from, b"mine").unwrap();
        let msg = place(out.path(), &from, "n2d.img", 0o600).unwrap_err().to_string();
        assert!(msg.contains("a file of uid 65534") && msg.contains("another --output"), "{msg}");
        assert_eq!(std::fs::read(&theirs).unwrap(), b"theirs");
    }
}
