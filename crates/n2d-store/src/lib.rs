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
//! (`n2d_net::host`, under `/run/n2d`). A `networks/` directory left by older versions is
//! no longer read.
//!
//! Every file is written atomically (temp file + fsync + rename), so a crash leaves either the
//! old or the new version, never half of one. Everything is private: directories 0700, files
//! 0600, whatever the umask ([`Home::tighten`] fixes a home made looser by older versions).
//!
//! Paths are made from validated names only ([`MachineName`], `SwarmName`), so no name typed by a user or read from a record can lead outside the home.

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

mod intents;
mod records;
pub use intents::*;
pub use records::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot find a home directory for n2d's state: set N2D_HOME or HOME")]
    NoHome,
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
    #[error("{path} is damaged (not valid JSON for its kind): fix or remove it")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
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
    #[error("{LOCK_TIMEOUT_ENV}={0:?} is not a number of seconds")]
    BadLockTimeout(String),
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
/// Overrides [`DEFAULT_LOCK_TIMEOUT`], in seconds.
pub const LOCK_TIMEOUT_ENV: &str = "N2D_LOCK_TIMEOUT";
/// How often a held lock is tried again.
const LOCK_POLL: Duration = Duration::from_millis(150);

/// How long to wait for another process's lock: `explicit` when given (tests), else
/// `$N2D_LOCK_TIMEOUT` (seconds), else [`DEFAULT_LOCK_TIMEOUT`].
pub fn lock_timeout(explicit: Option<Duration>) -> Result<Duration, StoreError> {
    if let Some(t) = explicit {
        return Ok(t);
    }
    match std::env::var(LOCK_TIMEOUT_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or(StoreError::BadLockTimeout(v)),
        _ => Ok(DEFAULT_LOCK_TIMEOUT),
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

/// The root of n2d's state.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
    /// Set (by the CLI's SIGINT handler) to abandon a wait for the lock.
    cancel: Option<Arc<AtomicBool>>,
    /// Overrides `$N2D_LOCK_TIMEOUT` (tests).
    lock_timeout: Option<Duration>,
}

impl Home {
    /// `$N2D_HOME`, else `$XDG_DATA_HOME/n2d`, else `~/.local/share/n2d`.
    pub fn from_env() -> Result<Self, StoreError> {
        let root = if let Some(h) = std::env::var_os("N2D_HOME").filter(|h| !h.is_empty()) {
            PathBuf::from(h)
        } else if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
            PathBuf::from(x).join("n2d")
        } else {
            PathBuf::from(std::env::var_os("HOME").ok_or(StoreError::NoHome)?).join(".local/share/n2d")
        };
        // QEMU runs in the machine's directory: every path it is given must be absolute.
        let root = std::path::absolute(&root)
            .map_err(|source| StoreError::CreateDir { path: root.clone(), source })?;
        Ok(Home::at(root))
    }

    pub fn at(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into(), cancel: None, lock_timeout: None }
    }

    /// A wait for the lock ends (with [`StoreError::LockInterrupted`]) once `flag` is set.
    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Waits at most `timeout` for another process's lock, whatever `$N2D_LOCK_TIMEOUT` says.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
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
    /// `/tmp`, with its sticky bit) is left alone.
    pub fn tighten(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut changed = Vec::new();
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
            if meta.file_type().is_symlink() || mode_now & 0o077 == 0 || mode_now & 0o1000 != 0 {
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
    /// every 150 ms, never blocking in the kernel: it gives up after `$N2D_LOCK_TIMEOUT` seconds
    /// (default 120) and stops at once when the cancel flag (Ctrl-C) is set.
    pub fn lock(&self) -> Result<StateLock, StoreError> {
        if LOCK_DEPTH.with(|d| d.get()) > 0 {
            LOCK_DEPTH.with(|d| d.set(d.get() + 1));
            return Ok(StateLock { _held: None });
        }
        let timeout = lock_timeout(self.lock_timeout)?;
        let thread_guard = PROCESS_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        ensure_dir(&self.root)?;
        let file = flock_exclusive(&self.root.join("lock"), timeout, self.cancel.as_deref())?;
        LOCK_DEPTH.with(|d| d.set(1));
        Ok(StateLock { _held: Some((file, thread_guard)) })
    }
}

/// Takes an exclusive flock on `path` (created 0600), never blocking in the kernel: when another
/// process holds it, says so once (with the holder's pid) and tries again every 150 ms until
/// `timeout`, or until `cancel` is set (Ctrl-C). The holder's pid is written into the file, for
/// the next one waiting. The lock lasts as long as the returned file is open.
pub fn flock_exclusive(
    path: &Path,
    timeout: Duration,
    cancel: Option<&AtomicBool>,
) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|source| StoreError::Lock { path: path.to_path_buf(), source })?;
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
            eprintln!(
                "waiting for the n2d state lock {} (held by {})",
                path.display(),
                holder_text(lock_holder(&file))
            );
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
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(mode).open(&tmp)?;
        // The umask may take bits off `mode`: set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
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

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let bytes = fs::read(path).map_err(|source| StoreError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { path: path.to_path_buf(), source })
}

/// Like [`read_json`], but a missing file is `None`.
pub fn read_json_opt<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match read_json(path) {
        Err(StoreError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        other => other.map(Some),
    }
}

/// Removes a directory tree; a missing one is fine.
pub fn remove_dir_all(path: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(StoreError::Remove { path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let err = Home::at(dir.path()).with_lock_timeout(Duration::from_millis(300)).lock().err().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
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
