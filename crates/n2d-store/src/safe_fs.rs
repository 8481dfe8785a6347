//! Opening files n2d did not write itself, safely: the one place for it.
//!
//! * Inputs a user names (`--deb`, `--docker-archive`, a cluster file, a certificate) must be
//!   regular files of bounded size: a FIFO would hang n2d and `/dev/zero` would fill its memory.
//!   [`read_input`] and [`check_input`] open without blocking (`O_NONBLOCK`, so a FIFO's open
//!   returns at once), refuse anything but a regular file, and cap the size.
//! * Files n2d creates in a directory someone else could write are created exclusively and never
//!   through a symlink ([`create_new_private`]); files it reopens from its own state are opened
//!   with `O_NOFOLLOW` ([`open_nofollow`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why an input file was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputFileError {
    #[error("cannot read {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is {kind}, not a regular file: give the path of a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path} is {size} bytes, more than the {max} bytes n2d reads for {what}: give a smaller file")]
    TooLarge { path: PathBuf, size: u64, max: u64, what: &'static str },
}

impl InputFileError {
    /// Whether the user gave the wrong kind of file (exit 2); a file that cannot be read is not.
    pub fn is_usage(&self) -> bool {
        !matches!(self, InputFileError::Open { .. })
    }
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// Opens `path` (following symlinks: the user named it) without blocking on a FIFO, and checks
/// that it is a regular file of at most `max` bytes. Returns the open file and its size.
pub fn check_input(path: &Path, max: u64, what: &'static str) -> Result<(File, u64), InputFileError> {
    let open_err = |source| InputFileError::Open { path: path.to_path_buf(), source };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    if !meta.file_type().is_file() {
        return Err(InputFileError::NotRegular { path: path.to_path_buf(), kind: kind_of(meta.file_type()) });
    }
    if meta.len() > max {
        return Err(InputFileError::TooLarge { path: path.to_path_buf(), size: meta.len(), max, what });
    }
    Ok((file, meta.len()))
}

/// Reads a whole input file of at most `max` bytes (see [`check_input`]). The read itself stops
/// at `max + 1` bytes, so a file that grows meanwhile is refused too.
pub fn read_input(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>, InputFileError> {
    let (file, size) = check_input(path, max, what)?;
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InputFileError::Open { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > max {
        return Err(InputFileError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            max,
            what,
        });
    }
    Ok(bytes)
}

/// Creates `path` for writing: it must not exist (`O_EXCL`, which also refuses a symlink in its
/// place), with exactly `mode` whatever the umask.
pub fn create_new_private(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// Opens an existing file for reading, refusing a symlink in its last component (`ELOOP`). It
/// does not block on a FIFO (`O_NONBLOCK`, which changes nothing for a regular file): check the
/// file's type before reading.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    OpenOptions::new().read(true).custom_flags(flags.bits() as i32).open(path)
}

/// Opens an existing regular file of n2d's for writing in place (no truncation, no creation),
/// refusing a symlink in its last component and anything but a regular file.
pub fn open_nofollow_write(path: &Path) -> io::Result<File> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = OpenOptions::new().write(true).custom_flags(flags.bits() as i32).open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// Makes a FIFO (mode 0600) at `path`: what the tests of every input check plant.
pub fn make_fifo(path: &Path) -> io::Result<()> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .map_err(io::Error::from)
}

/// A random hex suffix for temporary names nobody can predict (from the kernel's RNG).
pub fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    // getrandom(2) of 8 bytes does not fail once the RNG is seeded; fall back to the time.
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).map(|n| n == 8) != Ok(true)
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = ((nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_regular_file_within_the_cap_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_input(&p, 5, "a test").unwrap(), b"hello");
        assert!(matches!(read_input(&p, 4, "a test"), Err(InputFileError::TooLarge { size: 5, max: 4, .. })));
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        make_fifo(&fifo).unwrap();
        for (path, kind) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a character device"),
            (dir.path(), "a directory"),
        ] {
            match read_input(path, 1 << 20, "a test") {
                Err(InputFileError::NotRegular { kind: k, .. }) => assert_eq!(k, kind, "{path:?}"),
                other => panic!("{path:?}: {other:?}"),
            }
        }
        let err = read_input(Path::new("/dev/zero"), 10, "a test").unwrap_err().to_string();
        assert!(err.contains("/dev/zero is a character device, not a regular file"), "{err}");
    }

    #[test]
    fn exclusive_creation_refuses_an_existing_file_and_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_new_private(&link, 0o600).is_err());
        assert!(create_new_private(&target, 0o600).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(open_nofollow(&link).is_err());
        let fresh = dir.path().join("fresh");
        create_new_private(&fresh, 0o600).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn random_suffixes_differ() {
        let a = random_suffix();
        assert_eq!(a.len(), 16);
        assert_ne!(a, random_suffix());
    }
}
