//! n2d's state on disk, under `$N2D_HOME` (default `~/.local/share/n2d`):
//!
//! ```text
//! lock                    flock(2) taken by every command that changes state
//! images/<id>/            one directory per built image (see n2d-image)
//! machines/<name>/        machine.json, disks, serial.log, sockets, qemu.pid, server cert
//! swarms/<prefix>.json    which machines (and external hosts) form a swarm, and its label rules
//! intents/<op>-....json   journals of changes in progress (see [`Journal`]); left by a kill
//! certs/                  the CA and the user's client certificate (DOCKER_CERT_PATH)
//! ```
//!
//! Bridges and their leases are not here: they are host-wide, shared by every home
//! (`n2d_net::host`, under `/run/n2d`).
//!
//! Every file is written atomically (temp file + fsync + rename), so a crash leaves either the
//! old or the new version, never half of one; the temp file has an unpredictable name and is
//! created exclusively (`O_EXCL|O_NOFOLLOW`), so nothing planted at its name is followed or
//! truncated. Everything is private: directories 0700, files 0600, whatever the umask
//! ([`Home::tighten`] fixes a home of the caller's made looser by hand, e.g. a directory the user
//! made under a loose umask and pointed `N2D_HOME` at).
//!
//! The home must be the caller's ([`Home::check_owner`], run by [`Home::open`]): owned by
//! the caller or root, writable by no other user; another user's home is refused, never
//! changed. The lock is opened with `O_NOFOLLOW` (a regular file only), and state files are read
//! as input ([`read_json`]): never through a symlink, regular files of at most
//! [`MAX_STATE_FILE`] bytes, and every record validated like user input before use (`records`).
//!
//! Paths are made from validated names only ([`MachineName`], `SwarmName`), so no name typed by a user or read from a record can lead outside the home.

#![forbid(unsafe_code)]

use n2d_spec::machine::MachineName;
use serde::{de::DeserializeOwned, Serialize};
use std::cell::Cell;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod faults;
mod intents;
mod records;
mod remotes;
pub mod safe_fs;
pub use faults::*;
pub use intents::*;
pub use records::*;
pub use remotes::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is damaged (not valid JSON for its kind, or a value n2d refuses): fix or remove it")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} holds a value n2d refuses: {reason}: fix or remove it")]
    InvalidRecord { path: PathBuf, reason: String },
    #[error("cannot take the state lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "timed out after {} waiting for the state lock {}, held by {}: if that n2d is stuck, stop it",
        secs_text(*.waited), .path.display(), holder_text(*.holder)
    )]
    LockTimeout { path: PathBuf, holder: Option<u32>, waited: Duration },
    #[error("interrupted while waiting for the state lock {path}")]
    LockInterrupted { path: PathBuf },
    #[error(
        "{LOCK_TIMEOUT_ENV}={0:?} is not valid: use a number of seconds from 0 to {max} (default {default})",
        max = MAX_LOCK_TIMEOUT.as_secs(), default = DEFAULT_LOCK_TIMEOUT.as_secs()
    )]
    BadLockTimeout(String),
    #[error(
        "{path} is owned by uid {owner}, not by you (uid {you}) or root: n2d keeps its keys and \
         state there, so it must be yours: set N2D_HOME to a directory of your own"
    )]
    HomeNotOwned { path: PathBuf, owner: u32, you: u32 },
    #[error(
        "{path} is writable by other users (mode {mode:04o}): anyone could have changed n2d's \
         state there: check what it holds, then `chmod 700 {path}`"
    )]
    HomeWritable { path: PathBuf, mode: u32 },
    #[error("{path} is not a directory: set N2D_HOME to a directory")]
    HomeNotDirectory { path: PathBuf },
    #[error("{path} is a symbolic link: n2d never follows links in its state; remove it")]
    Symlink { path: PathBuf },
    #[error("{path} is not a regular file: n2d's state holds files only; remove it")]
    NotRegular { path: PathBuf },
    #[error("{path} is larger than the {max} bytes a state file may hold: it is not n2d's; remove it")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no machine named {0:?} (see `n2d ls`)")]
    NoSuchMachine(String),
    #[error("refusing the {what} name {name:?} found in the state: {reason}")]
    InvalidName { what: &'static str, name: String, reason: String },
    #[error("cannot tighten the permissions of {path}")]
    Tighten {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Permission bits of every directory n2d makes.
pub const DIR_MODE: u32 = 0o700;
/// Permission bits of every file n2d writes.
pub const FILE_MODE: u32 = 0o600;

/// How long [`Home::lock`] waits for another process's lock by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(120);
/// Overrides [`DEFAULT_LOCK_TIMEOUT`], in seconds (read by the CLI's settings).
pub const LOCK_TIMEOUT_ENV: &str = "N2D_LOCK_TIMEOUT";
/// The longest `$N2D_LOCK_TIMEOUT` accepted: a day (a larger number, `1e300`, is refused rather
/// than overflowing a `Duration`).
pub const MAX_LOCK_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// The most bytes n2d reads from one of its state files (records, journals, manifests,
/// host-wide state): they are a few KiB; anything larger is not n2d's.
pub const MAX_STATE_FILE: u64 = 1 << 20;
/// How often a held lock is tried again.
const LOCK_POLL: Duration = Duration::from_millis(150);

/// `$N2D_LOCK_TIMEOUT`'s value: seconds (fractions allowed) from 0 to [`MAX_LOCK_TIMEOUT`].
pub fn parse_lock_timeout(value: &str) -> Result<Duration, StoreError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        // NaN, infinities and negatives fail this too.
        .filter(|s| (0.0..=MAX_LOCK_TIMEOUT.as_secs_f64()).contains(s))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| StoreError::BadLockTimeout(value.to_string()))
}

impl StoreError {
    /// A mistake in what the user set (an environment value, a home that is not theirs): the
    /// CLI exits 2 for these.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            StoreError::BadLockTimeout(_)
                | StoreError::HomeNotOwned { .. }
                | StoreError::HomeWritable { .. }
                | StoreError::HomeNotDirectory { .. }
                | StoreError::NoSuchMachine(_)
        )
    }
}

fn secs_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn holder_text(holder: Option<u32>) -> String {
    holder.map_or_else(|| "another process".to_string(), |pid| format!("pid {pid}"))
}

/// Where the libraries' notes to the user go while they work (a wait for a lock, a warning, a
/// kill point): no library prints; the orchestrator hands its `Progress` here. Without one
/// (`Notes::default()`, tests) they are dropped.
#[derive(Clone, Default)]
pub struct Notes(Option<Arc<Say>>);

/// What [`Notes`] calls with each line.
type Say = dyn Fn(&str) + Send + Sync;

impl Notes {
    pub fn new(say: impl Fn(&str) + Send + Sync + 'static) -> Notes {
        Notes(Some(Arc::new(say)))
    }

    /// Tells the user `line`.
    pub fn say(&self, line: &str) {
        if let Some(say) = &self.0 {
            say(line);
        }
    }
}

impl std::fmt::Debug for Notes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Notes(..)" } else { "Notes(none)" })
    }
}

/// The root of n2d's state.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
    /// Set (by the CLI's SIGINT handler) to abandon a wait for the lock.
    cancel: Option<Arc<AtomicBool>>,
    /// How long [`Home::lock`] waits for another process.
    lock_timeout: Duration,
    /// Where "waiting for the lock" goes.
    notes: Notes,
}

impl Home {
    /// The home at `root` (the CLI's settings resolve it: `$N2D_HOME`, else
    /// `$XDG_DATA_HOME/n2d`, else `~/.local/share/n2d`), made absolute and checked to be the
    /// caller's ([`Home::check_owner`]); [`Home::lock`] waits at most `lock_timeout`.
    pub fn open(root: &Path, lock_timeout: Duration) -> Result<Self, StoreError> {
        // QEMU runs in the machine's directory: every path it is given must be absolute.
        let root = std::path::absolute(root)
            .map_err(|source| StoreError::CreateDir { path: root.to_path_buf(), source })?;
        let home = Home::at(root).with_lock_timeout(lock_timeout);
        home.check_owner()?;
        Ok(home)
    }

    /// Refuses a home that is not the caller's: one owned by another user (only the caller and
    /// root may own it, and the link, when `$N2D_HOME` is a symlink), one every user may write
    /// (mode `o+w`, sticky or not: anyone could have planted records, links or keys there), or
    /// one a group may write that the caller cannot fix (owned by root). A home of the
    /// caller's that is only group-writable or readable by others (a directory the user made
    /// under a loose umask): [`Home::tighten`] fixes it. A home not made yet is fine (n2d makes
    /// it 0700).
    pub fn check_owner(&self) -> Result<(), StoreError> {
        let you = rustix::process::geteuid().as_raw();
        self.check_owner_as(you)
    }

    fn check_owner_as(&self, you: u32) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let path = &self.root;
        let read_err = |source| StoreError::Read { path: path.clone(), source };
        let link = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(read_err(e)),
        };
        let not_ours = |owner: u32| owner != you && owner != 0;
        if link.file_type().is_symlink() && not_ours(link.uid()) {
            return Err(StoreError::HomeNotOwned { path: path.clone(), owner: link.uid(), you });
        }
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            // A dangling link: the directory it names is made by n2d.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(read_err(e)),
        };
        if !meta.is_dir() {
            return Err(StoreError::HomeNotDirectory { path: path.clone() });
        }
        if not_ours(meta.uid()) {
            return Err(StoreError::HomeNotOwned { path: path.clone(), owner: meta.uid(), you });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o002 != 0 || (mode & 0o020 != 0 && meta.uid() != you) {
            return Err(StoreError::HomeWritable { path: path.clone(), mode });
        }
        Ok(())
    }

    pub fn at(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into(), cancel: None, lock_timeout: DEFAULT_LOCK_TIMEOUT, notes: Notes::default() }
    }

    /// Says "waiting for the n2d state lock" through `notes`.
    pub fn with_notes(mut self, notes: Notes) -> Self {
        self.notes = notes;
        self
    }

    /// A wait for the lock ends (with [`StoreError::LockInterrupted`]) once `flag` is set.
    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Waits at most `timeout` for another process's lock (default [`DEFAULT_LOCK_TIMEOUT`]).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn machines_dir(&self) -> PathBuf {
        self.root.join("machines")
    }
    /// The package cache of image builds: every .deb a build downloaded, with the index that
    /// makes it a flat apt repository, so a rebuild needs no network (n2d-image's `cache`).
    pub fn deb_cache_dir(&self) -> PathBuf {
        self.root.join("cache").join("debs")
    }
    /// A machine's directory: only a validated name makes one, so it is always a child of
    /// `machines/`.
    pub fn machine_dir(&self, name: &MachineName) -> PathBuf {
        self.machines_dir().join(name.as_str())
    }
    pub fn swarms_dir(&self) -> PathBuf {
        self.root.join("swarms")
    }
    pub fn certs_dir(&self) -> PathBuf {
        self.root.join("certs")
    }
    /// The home's user-mode network: its switch's sockets and pid file (n2d-net's `user`).
    pub fn user_network_dir(&self) -> PathBuf {
        self.root.join("network")
    }

    /// Makes an existing home private again: the home, its top-level directories and the lock
    /// file lose every group and other permission bit. Returns what it changed (empty once the
    /// home is private), so the caller can say so once.
    /// A directory that is not n2d's (nothing of n2d's in it yet, or a shared one such as
    /// `/tmp`, with its sticky bit) is left alone, and so is anything the caller does not own
    /// (a home of another user is refused by [`Home::check_owner`], never changed).
    pub fn tighten(&self) -> Result<Vec<PathBuf>, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let you = rustix::process::geteuid().as_raw();
        let mut changed = Vec::new();
        if fs::metadata(&self.root).map_or(true, |m| m.uid() != you) {
            return Ok(changed);
        }
        let ours = ["lock", "images", "machines", "swarms", "certs", "intents"];
        if !ours.iter().any(|e| fs::symlink_metadata(self.root.join(e)).is_ok()) {
            return Ok(changed);
        }
        let dirs =
            [self.root.clone(), self.images_dir(), self.machines_dir(), self.swarms_dir(), self.certs_dir()];
        let paths = dirs.iter().map(|d| (d.clone(), DIR_MODE)).chain([(self.root.join("lock"), FILE_MODE)]);
        for (path, mode) in paths {
            // Never follow a link: a home is n2d's own directories.
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            let mode_now = meta.permissions().mode();
            if meta.file_type().is_symlink()
                || meta.uid() != you
                || mode_now & 0o077 == 0
                || mode_now & 0o1000 != 0
            {
                continue;
            }
            let tight = meta.permissions().mode() & mode & 0o7777;
            fs::set_permissions(&path, fs::Permissions::from_mode(tight))
                .map_err(|source| StoreError::Tighten { path: path.clone(), source })?;
            changed.push(path);
        }
        Ok(changed)
    }

    /// Takes the exclusive state lock; it is released when the guard drops. The lock is
    /// re-entrant within a thread (a rollback running under a held lock can take it again)
    /// and serialises the threads of this process before it serialises processes.
    ///
    /// When another process holds it, n2d says so once (with the holder's pid) and tries again
    /// every 150 ms, never blocking in the kernel: it gives up after its lock timeout
    /// (`$N2D_LOCK_TIMEOUT`, default 120 s) and stops at once when the cancel flag (Ctrl-C) is set.
    pub fn lock(&self) -> Result<StateLock, StoreError> {
        if LOCK_DEPTH.with(|d| d.get()) > 0 {
            LOCK_DEPTH.with(|d| d.set(d.get() + 1));
            return Ok(StateLock { _held: None });
        }
        let timeout = self.lock_timeout;
        let thread_guard = PROCESS_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        ensure_dir(&self.root)?;
        let file = flock_exclusive(&self.root.join("lock"), timeout, self.cancel.as_deref(), &self.notes)?;
        LOCK_DEPTH.with(|d| d.set(1));
        Ok(StateLock { _held: Some((file, thread_guard)) })
    }
}

/// Takes an exclusive flock on `path` (created 0600), never blocking in the kernel: when another
/// process holds it, says so once through `notes` (with the holder's pid) and tries again every 150 ms until
/// `timeout`, or until `cancel` is set (Ctrl-C). The holder's pid is written into the file, for
/// the next one waiting. The lock lasts as long as the returned file is open.
pub fn flock_exclusive(
    path: &Path,
    timeout: Duration,
    cancel: Option<&AtomicBool>,
    notes: &Notes,
) -> Result<File, StoreError> {
    // Never through a symlink (it would have n2d write its pid into the file it names), and a
    // FIFO or device in its place is refused rather than waited on.
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let opened = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(FILE_MODE)
        .custom_flags(flags.bits() as i32)
        .open(path);
    let file = match opened {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(StoreError::Symlink { path: path.to_path_buf() })
        }
        other => other.map_err(|source| StoreError::Lock { path: path.to_path_buf(), source })?,
    };
    let meta = file.metadata().map_err(|source| StoreError::Lock { path: path.to_path_buf(), source })?;
    if !meta.is_file() {
        return Err(StoreError::NotRegular { path: path.to_path_buf() });
    }
    let start = Instant::now();
    let mut said = false;
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {}
            Err(e) => return Err(StoreError::Lock { path: path.to_path_buf(), source: e.into() }),
        }
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(StoreError::LockInterrupted { path: path.to_path_buf() });
        }
        let waited = start.elapsed();
        if waited >= timeout {
            let holder = lock_holder(&file);
            return Err(StoreError::LockTimeout { path: path.to_path_buf(), holder, waited: timeout });
        }
        if !said {
            said = true;
            notes.say(&format!(
                "waiting for the n2d state lock {} (held by {})",
                path.display(),
                holder_text(lock_holder(&file))
            ));
        }
        std::thread::sleep(LOCK_POLL.min(timeout - waited));
    }
    // Say who holds it, for the next one waiting (where /proc/locks cannot tell).
    let _ =
        file.set_len(0).and_then(|()| file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0));
    Ok(file)
}

/// The pid holding the flock on `file`: from /proc/locks (matched by device and inode), else
/// the pid the holder wrote into the file.
fn lock_holder(file: &File) -> Option<u32> {
    let from_proc = rustix::fs::fstat(file).ok().and_then(|st| {
        let dev = st.st_dev;
        let locks = fs::read_to_string("/proc/locks").ok()?;
        flock_holder(&locks, rustix::fs::major(dev), rustix::fs::minor(dev), st.st_ino)
    });
    from_proc.or_else(|| {
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok().filter(|pid| *pid > 0)
    })
}

/// The pid of the process holding a `FLOCK` on the inode `major:minor:inode`, read from the
/// text of /proc/locks (`1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF`; waiters, marked
/// `->`, are skipped; the device numbers are hex, the inode decimal).
pub fn flock_holder(proc_locks: &str, major: u32, minor: u32, inode: u64) -> Option<u32> {
    proc_locks.lines().find_map(|line| {
        let mut fields = line.split_whitespace().skip(1);
        if fields.next()? != "FLOCK" {
            return None;
        }
        let pid: u32 = fields.nth(2)?.parse().ok()?;
        let mut id = fields.next()?.split(':');
        let (maj, min, ino) = (id.next()?, id.next()?, id.next()?);
        let same = u32::from_str_radix(maj, 16).ok()? == major
            && u32::from_str_radix(min, 16).ok()? == minor
            && ino.parse::<u64>().ok()? == inode;
        (same && pid > 0).then_some(pid)
    })
}

static PROCESS_LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    static LOCK_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Held while state is being changed; dropping it releases the lock.
#[must_use = "the lock is released when this guard is dropped"]
pub struct StateLock {
    /// The flocked file and the in-process guard; `None` for a re-entrant acquisition.
    _held: Option<(File, MutexGuard<'static, ()>)>,
}

impl Drop for StateLock {
    fn drop(&mut self) {
        LOCK_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Creates `path` (and missing parents) with mode 0700, whatever the umask.
pub fn ensure_dir(path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::CreateDir { path: path.to_path_buf(), source };
    if path.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(path).map_err(err)?;
    // The umask may have taken bits off, never added any: set exactly 0700.
    fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE)).map_err(err)
}

/// Writes `bytes` to `path` atomically with the given permission bits.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let err = |source| StoreError::Write { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    // An unpredictable name, created exclusively (never through a symlink, never an existing
    // file), with exactly `mode` whatever the umask.
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        safe_fs::random_suffix()
    ));
    let mut f = match safe_fs::create_new_private(&tmp, mode) {
        Ok(f) => f,
        // Not ours to remove: the name was taken (or is a link) before we came.
        Err(source) => return Err(err(source)),
    };
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("state types always serialise");
    bytes.push(b'\n');
    write_atomic(path, &bytes, FILE_MODE)
}

/// Reads and parses one of n2d's state files. The file must be a regular file of at most
/// [`MAX_STATE_FILE`] bytes, not a symlink (n2d writes none in its state): a link, FIFO, device
/// or huge file is refused, never followed, waited on or read whole.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let bytes = read_state_file(path)?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { path: path.to_path_buf(), source })
}

/// The bytes of a state file (see [`read_json`]).
pub fn read_state_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    use std::io::Read;
    let read_err = |source| StoreError::Read { path: path.to_path_buf(), source };
    let file = match safe_fs::open_nofollow(path) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(StoreError::Symlink { path: path.to_path_buf() })
        }
        other => other.map_err(read_err)?,
    };
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(StoreError::NotRegular { path: path.to_path_buf() });
    }
    let too_large = || StoreError::TooLarge { path: path.to_path_buf(), max: MAX_STATE_FILE };
    if meta.len() > MAX_STATE_FILE {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Capped again while reading: a file that grows meanwhile is refused too.
    file.take(MAX_STATE_FILE + 1).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 > MAX_STATE_FILE {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Like [`read_json`], but a missing file is `None`.
pub fn read_json_opt<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match read_json(path) {
        Err(StoreError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        other => other.map(Some),
    }
}

/// Removes a directory tree; a missing one is fine. Filesystems mounted inside it are detached
/// first and never walked into: an image build's tree holds mmdebstrap's /proc, /sys and /dev
/// mounts while it runs, and a killed mmdebstrap leaves them behind.
pub fn remove_dir_all(path: &Path) -> Result<(), StoreError> {
    if let Ok(real) = fs::canonicalize(path) {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for mount in mounts_within(&mountinfo, &real) {
            rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH)
                .map_err(|e| StoreError::Remove { path: mount.clone(), source: e.into() })?;
        }
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(StoreError::Remove { path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// The mount points at or below `dir` in a `/proc/self/mountinfo` text, deepest first (the
/// order to detach them in).
pub fn mounts_within(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mount_path(field)))
        .filter(|mount| mount.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts
}

/// Mountinfo writes a space, tab, newline and backslash in a path as `\NNN` (octal).
fn unescape_mount_path(field: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8).wrapping_add(b - b'0')));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_inside_a_tree_are_found_deepest_first_and_escapes_read() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/vda rw
90 22 0:5 / /h/images/.build-1/rootfs/proc ro - proc proc ro
91 22 0:6 / /h/images/.build-1/rootfs/dev/pts rw - devpts none rw
92 22 0:7 / /h/images/.build-1/rootfs/dev rw - tmpfs none rw
93 22 0:8 / /h/images/.build-10/rootfs/proc ro - proc proc ro
94 22 0:9 / /h/images/.build-1/a\\040b rw - tmpfs none rw
";
        let got = mounts_within(info, Path::new("/h/images/.build-1"));
        let want: Vec<PathBuf> = [
            "/h/images/.build-1/rootfs/dev/pts",
            "/h/images/.build-1/rootfs/proc",
            "/h/images/.build-1/rootfs/dev",
            "/h/images/.build-1/a b",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want, "a sibling tree (.build-10) is not inside");
        assert!(mounts_within(info, Path::new("/h/machines/m1")).is_empty());
    }

    #[test]
    fn a_tree_with_a_mount_inside_is_removed_without_walking_into_the_mount() {
        // Needs root (mount); skipped otherwise.
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: not root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join(".build-x");
        let inner = tree.join("rootfs/mnt");
        fs::create_dir_all(&inner).unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        let bind = std::process::Command::new("mount").arg("--bind").arg(&outside).arg(&inner).status();
        if !bind.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mount --bind failed");
            return;
        }
        remove_dir_all(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(fs::read_to_string(outside.join("keep")).unwrap(), "x", "the mount was walked into");
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn what_the_store_creates_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        drop(home.lock().unwrap());
        assert_eq!(mode(home.root()), 0o700);
        assert_eq!(mode(&home.root().join("lock")), 0o600);
        let name: MachineName = "h1".parse().unwrap();
        ensure_dir(&home.machine_dir(&name)).unwrap();
        assert_eq!(mode(&home.machines_dir()), 0o700);
        assert_eq!(mode(&home.machine_dir(&name)), 0o700);
        let p = home.swarms_dir().join("s.json");
        write_json(&p, &serde_json::json!({})).unwrap();
        assert_eq!(mode(&home.swarms_dir()), 0o700);
        assert_eq!(mode(&p), 0o600);
        write_atomic(&home.certs_dir().join("x.pem"), b"x", 0o644).unwrap();
        assert_eq!(mode(&home.certs_dir()), 0o700);
    }

    #[test]
    fn a_loose_home_is_tightened_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        for d in [home.root().to_path_buf(), home.machines_dir(), home.certs_dir()] {
            fs::create_dir_all(&d).unwrap();
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::write(home.root().join("lock"), b"").unwrap();
        fs::set_permissions(home.root().join("lock"), fs::Permissions::from_mode(0o644)).unwrap();
        let changed = home.tighten().unwrap();
        assert_eq!(changed.len(), 4, "{changed:?}");
        assert_eq!(mode(home.root()), 0o700);
        assert_eq!(mode(&home.machines_dir()), 0o700);
        assert_eq!(mode(&home.certs_dir()), 0o700);
        assert_eq!(mode(&home.root().join("lock")), 0o600);
        assert!(home.tighten().unwrap().is_empty());
        // Not n2d's: an empty directory, or a shared sticky one, is left alone.
        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Home::at(&other).tighten().unwrap().is_empty());
        fs::create_dir(other.join("machines")).unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(Home::at(&other).tighten().unwrap(), [other.join("machines")]);
        assert_eq!(mode(&other), 0o777);
    }

    #[test]
    fn a_home_of_another_user_or_writable_by_all_is_refused_and_not_changed() {
        let dir = tempfile::tempdir().unwrap();
        let me = rustix::process::geteuid().as_raw();
        let home = Home::at(dir.path().join("home"));
        // Not made yet: n2d makes it, 0700.
        home.check_owner().unwrap();
        drop(home.lock().unwrap());
        home.check_owner().unwrap();

        // Writable by every user, even with the sticky bit: refused, whoever owns it.
        for m in [0o777, 0o1777, 0o703] {
            fs::set_permissions(home.root(), fs::Permissions::from_mode(m)).unwrap();
            let err = home.check_owner().unwrap_err();
            assert!(matches!(err, StoreError::HomeWritable { mode, .. } if mode == m), "{m:o}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&home.root().display().to_string()), "{msg}");
            assert!(msg.contains("writable by other users") && msg.contains("chmod 700"), "{msg}");
            assert!(err.is_usage());
        }
        // Group-writable or readable by others, and the caller's: tighten's job, not refused.
        for m in [0o770, 0o755, 0o750] {
            fs::set_permissions(home.root(), fs::Permissions::from_mode(m)).unwrap();
            home.check_owner().unwrap();
        }
        // Group-writable and owned by root, the caller being someone else: the caller cannot
        // fix it, so it is refused.
        fs::set_permissions(home.root(), fs::Permissions::from_mode(0o770)).unwrap();
        if me == 0 {
            assert!(matches!(home.check_owner_as(1000), Err(StoreError::HomeWritable { mode: 0o770, .. })));
        }
        fs::set_permissions(home.root(), fs::Permissions::from_mode(0o700)).unwrap();
        // Owned by someone else (as seen by another uid): refused, naming both; a home of
        // root's is fine for anyone (it is root's to keep safe).
        let other = me + 1;
        if me == 0 {
            home.check_owner_as(other).unwrap();
        } else {
            let err = home.check_owner_as(other).unwrap_err();
            assert!(
                matches!(err, StoreError::HomeNotOwned { owner, you, .. } if owner == me && you == other)
            );
            let msg = err.to_string();
            assert!(msg.contains(&format!("owned by uid {me}, not by you (uid {other})")), "{msg}");
            assert!(msg.contains("set N2D_HOME"), "{msg}");
        }
        // A file is not a home.
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(matches!(Home::at(&file).check_owner(), Err(StoreError::HomeNotDirectory { .. })));
    }

    #[test]
    fn a_home_owned_by_another_uid_is_refused_never_chmodded() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: giving a directory to another user (uid 65534) needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        drop(home.lock().unwrap());
        fs::create_dir(home.machines_dir()).unwrap();
        let nobody = Some(rustix::process::Uid::from_raw(65534));
        for m in [0o755, 0o700] {
            fs::set_permissions(home.root(), fs::Permissions::from_mode(m)).unwrap();
            rustix::fs::chown(home.root(), nobody, None).unwrap();
            let err = home.check_owner().unwrap_err();
            assert!(matches!(err, StoreError::HomeNotOwned { owner: 65534, you: 0, .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{} is owned by uid 65534, not by you (uid 0)", home.root().display())),
                "{msg}"
            );
            assert!(err.is_usage());
            // tighten never changes what is not the caller's.
            assert!(home.tighten().unwrap().is_empty());
            assert_eq!(mode(home.root()), m);
        }
        // A link to it, made by another user, is refused too (whatever it names).
        rustix::fs::chown(home.root(), Some(rustix::process::Uid::ROOT), None).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(home.root(), &link).unwrap();
        Home::at(&link).check_owner().unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
        let err = Home::at(&link).check_owner().unwrap_err();
        assert!(matches!(err, StoreError::HomeNotOwned { owner: 65534, .. }), "{err:?}");
    }

    #[test]
    fn a_symlink_in_place_of_the_lock_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        ensure_dir(home.root()).unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, b"keep me").unwrap();
        std::os::unix::fs::symlink(&target, home.root().join("lock")).unwrap();
        let err = home.with_lock_timeout(Duration::ZERO).lock().err().unwrap();
        assert!(matches!(err, StoreError::Symlink { .. }), "{err:?}");
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
        // A dangling one is not created through either.
        let home2 = Home::at(dir.path().join("home2"));
        ensure_dir(home2.root()).unwrap();
        let absent = dir.path().join("absent");
        std::os::unix::fs::symlink(&absent, home2.root().join("lock")).unwrap();
        assert!(matches!(home2.lock().err().unwrap(), StoreError::Symlink { .. }));
        assert!(!absent.exists());
        // A FIFO in its place is refused at once, not waited on.
        let home3 = Home::at(dir.path().join("home3"));
        ensure_dir(home3.root()).unwrap();
        mkfifo(&home3.root().join("lock"));
        assert!(matches!(home3.lock().err().unwrap(), StoreError::NotRegular { .. }));
    }

    fn mkfifo(path: &Path) {
        crate::safe_fs::make_fifo(path).unwrap();
    }

    #[test]
    fn atomic_writes_never_follow_a_link_planted_at_a_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, b"keep me").unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        // The names the old code used (`.NAME.tmp-PID`) and a few others: none is followed.
        let pid = std::process::id();
        for name in [format!(".x.json.tmp-{pid}"), ".x.json.tmp-0".into(), ".x.json.tmp".into()] {
            std::os::unix::fs::symlink(&target, state.join(name)).unwrap();
        }
        let p = state.join("x.json");
        write_json(&p, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
        assert_eq!(read_json::<serde_json::Value>(&p).unwrap()["a"], 1);
        // The temporary names differ every time and none is left behind.
        let names = || -> Vec<String> {
            let mut v: Vec<_> = fs::read_dir(&state)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        let before = names();
        write_json(&p, &serde_json::json!({"a": 2})).unwrap();
        assert_eq!(names(), before);
        assert_eq!(before.len(), 4, "{before:?}");
    }

    #[test]
    fn state_files_that_are_links_fifos_or_huge_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.json");
        fs::write(&target, b"{}").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = read_json::<serde_json::Value>(&link).unwrap_err();
        assert!(matches!(err, StoreError::Symlink { .. }), "{err:?}");
        // A dangling link is refused too, not taken for a missing file.
        let dangling = dir.path().join("dangling.json");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        assert!(matches!(read_json_opt::<serde_json::Value>(&dangling), Err(StoreError::Symlink { .. })));
        let fifo = dir.path().join("fifo.json");
        mkfifo(&fifo);
        let started = Instant::now();
        assert!(matches!(read_json::<serde_json::Value>(&fifo), Err(StoreError::NotRegular { .. })));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(read_json::<serde_json::Value>(dir.path()), Err(StoreError::NotRegular { .. })));
        let huge = dir.path().join("huge.json");
        let f = File::create(&huge).unwrap();
        f.set_len(MAX_STATE_FILE + 1).unwrap();
        let err = read_json::<serde_json::Value>(&huge).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
        f.set_len(MAX_STATE_FILE).unwrap();
        assert!(matches!(read_json::<serde_json::Value>(&huge), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn lock_timeouts_out_of_range_are_refused_with_the_range() {
        assert_eq!(parse_lock_timeout(" 0.5 ").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_lock_timeout("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_lock_timeout("86400").unwrap(), MAX_LOCK_TIMEOUT);
        for bad in ["1e300", "86401", "-1", "NaN", "inf", "-inf", "1e-400x", "", "ten", "1.8e19"] {
            let err = parse_lock_timeout(bad).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("N2D_LOCK_TIMEOUT")
                    && msg.contains("from 0 to 86400")
                    && msg.contains("default 120"),
                "{bad}: {msg}"
            );
            assert!(err.is_usage());
        }
    }

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/key.pem");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        // No temp files left behind.
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_json_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        fs::write(&p, b"{not json").unwrap();
        let err = read_json::<serde_json::Value>(&p).unwrap_err();
        assert!(err.to_string().contains("x.json is damaged"), "{err}");
        assert!(read_json_opt::<serde_json::Value>(&dir.path().join("missing.json")).unwrap().is_none());
    }

    #[test]
    fn the_flock_holder_is_read_from_proc_locks() {
        let sample = "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF\n\
                      1: -> FLOCK  ADVISORY  WRITE 999 00:2c:77 0 EOF\n\
                      2: POSIX  ADVISORY  WRITE 555 00:2c:77 0 EOF\n\
                      3: FLOCK  ADVISORY  WRITE 777 00:2c:77 0 EOF\n";
        assert_eq!(flock_holder(sample, 0xfd, 1, 1234), Some(4242));
        assert_eq!(flock_holder(sample, 0, 0x2c, 77), Some(777));
        assert_eq!(flock_holder(sample, 0xfd, 1, 77), None);
        assert_eq!(flock_holder(sample, 0, 0x2c, 1234), None);
        assert_eq!(flock_holder("", 0, 0, 1), None);
        assert_eq!(flock_holder("garbage\n1: FLOCK\n", 0, 0, 1), None);
    }

    #[test]
    fn the_holder_writes_its_pid_into_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let held = home.lock().unwrap();
        let text = fs::read_to_string(dir.path().join("lock")).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(held);
    }

    /// Holds the lock of `dir` in a `flock` process (which closes it before running `sleep`,
    /// so killing that process releases it), once /proc/locks shows it.
    fn hold_lock_in_another_process(dir: &Path) -> std::process::Child {
        let path = dir.join("lock");
        let child = std::process::Command::new("flock")
            .arg("-o")
            .arg(&path)
            .args(["sleep", "30"])
            .spawn()
            .expect("flock(1) from util-linux");
        let file = File::open(&path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock_holder(&file) != Some(child.id()) {
            assert!(Instant::now() < deadline, "flock did not take the lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    #[test]
    fn a_lock_held_by_another_process_times_out_naming_it_then_is_taken_once_released() {
        let dir = tempfile::tempdir().unwrap();
        drop(Home::at(dir.path()).lock().unwrap());
        let mut holder = hold_lock_in_another_process(dir.path());
        let pid = holder.id();

        let started = Instant::now();
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let notes = {
            let said = said.clone();
            Notes::new(move |line| said.lock().unwrap().push(line.to_string()))
        };
        let err = Home::at(dir.path())
            .with_lock_timeout(Duration::from_millis(300))
            .with_notes(notes)
            .lock()
            .err()
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        // The wait is said once, through the notes (the CLI's progress), not printed.
        let lock = dir.path().join("lock");
        assert_eq!(
            *said.lock().unwrap(),
            [format!("waiting for the n2d state lock {} (held by pid {pid})", lock.display())]
        );
        assert!(matches!(err, StoreError::LockTimeout { holder: Some(p), .. } if p == pid), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("held by pid {pid}")) && msg.contains("timed out after 0.3s"), "{msg}");

        // Ctrl-C while waiting: the wait ends at once.
        let cancel = Arc::new(AtomicBool::new(false));
        let home =
            Home::at(dir.path()).with_lock_timeout(Duration::from_secs(30)).with_cancel(cancel.clone());
        let flag = cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            flag.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let err = home.lock().err().unwrap();
        assert!(matches!(err, StoreError::LockInterrupted { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        t.join().unwrap();

        // Released while waiting: taken.
        let home = Home::at(dir.path()).with_lock_timeout(Duration::from_secs(20));
        let waiter = std::thread::spawn(move || home.lock().map(drop));
        std::thread::sleep(Duration::from_millis(300));
        holder.kill().unwrap();
        holder.wait().unwrap();
        waiter.join().unwrap().unwrap();
    }

    /// Runs `flock -n LOCK true` as the unprivileged user 65534 (nobody), as another user's
    /// attempt to take (and so hold) the lock would.
    fn flock_as_nobody(lock: &Path) -> std::process::Output {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("flock")
            .uid(65534)
            .gid(65534)
            .current_dir("/")
            .arg("-n")
            .arg(lock)
            .arg("true")
            .output()
            .expect("flock(1) from util-linux")
    }

    #[test]
    fn another_user_cannot_open_the_lock_so_cannot_hang_n2d() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: running a process as another user (uid 65534) needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Anyone may pass through the temporary directory: only the home protects the lock.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let home = Home::at(dir.path().join("home"));
        drop(home.lock().unwrap());
        let lock = home.root().join("lock");
        assert_eq!(mode(home.root()), 0o700);
        assert_eq!(mode(&lock), 0o600);

        let refused = |what: &str| {
            let out = flock_as_nobody(&lock);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{what}: another user opened the lock");
            assert!(stderr.contains("Permission denied"), "{what}: {stderr}");
        };
        // The home's 0700 keeps other users out...
        refused("home 0700, lock 0600");
        // ...and so does the lock file's own 0600, were the home looser.
        fs::set_permissions(home.root(), fs::Permissions::from_mode(0o755)).unwrap();
        refused("home 0755, lock 0600");
        // The check is real: a readable lock is enough for flock(2), hence for a stranger to
        // hold it and keep n2d waiting.
        fs::set_permissions(&lock, fs::Permissions::from_mode(0o644)).unwrap();
        let out = flock_as_nobody(&lock);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(home.tighten().unwrap(), [home.root().to_path_buf(), lock.clone()]);
        refused("tightened home");

        // Nothing was left holding it: the home's own lock is taken at once.
        drop(home.with_lock_timeout(Duration::ZERO).lock().unwrap());
    }

    #[test]
    fn lock_can_be_taken_again_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        drop(home.lock().unwrap());
        drop(home.lock().unwrap());
    }

    #[test]
    fn lock_is_reentrant_in_a_thread_and_exclusive_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let outer = home.lock().unwrap();
        let inner = home.lock().unwrap();
        drop(inner);
        let (tx, rx) = std::sync::mpsc::channel();
        let h2 = home.clone();
        let t = std::thread::spawn(move || {
            let _l = h2.lock().unwrap();
            tx.send(()).unwrap();
        });
        // The other thread must wait while this one still holds the (outer) lock.
        assert!(rx.recv_timeout(std::time::Duration::from_millis(200)).is_err());
        drop(outer);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }
}
