//! Is this pid a machine's QEMU? The pid file alone is not trusted (a pid is reused, and any
//! process can put a path on its command line): the process must be alive, not a zombie, run
//! by n2d's own user, be the QEMU binary, and have the machine's data disk on its command line.
//! [`is_machine_qemu`] decides from [`ProcFacts`] read from /proc, as a pure function.

use crate::argv::QEMU_BINARY;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What /proc says about one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcFacts {
    /// `/proc/PID/exe` (unreadable for another user's process).
    pub exe: Option<PathBuf>,
    /// The real uid, from the `Uid:` line of `/proc/PID/status`.
    pub uid: Option<u32>,
    /// The state letter from `/proc/PID/stat` (`R`, `S`, `Z`…).
    pub state: Option<char>,
    /// `/proc/PID/cmdline`, NUL-separated.
    pub cmdline: Vec<u8>,
}

impl ProcFacts {
    /// Reads the facts of `pid`; `None` when there is no such process.
    pub fn read(pid: i32) -> Option<ProcFacts> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()?.chars().next());
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        Some(ProcFacts {
            exe: std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
            uid: status_uid(&status),
            state,
            cmdline: std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
        })
    }
}

/// The real uid from the text of `/proc/PID/status` (`Uid:\treal\teffective\tsaved\tfs`).
pub fn status_uid(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("Uid:")?.split_whitespace().next()?.parse().ok())
}

/// The QEMU binary n2d runs: its resolved path (when found) and its file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuExe {
    pub path: Option<PathBuf>,
    pub name: OsString,
}

impl QemuExe {
    /// Resolves `binary` as exec would: a path as is, a bare name through `search_path`
    /// (`$PATH`); symlinks are followed, since /proc/PID/exe shows the real file.
    pub fn resolve(binary: &str, search_path: &n2d_exec::SearchPath) -> QemuExe {
        let path = if binary.contains('/') {
            std::fs::canonicalize(binary).ok()
        } else {
            search_path.find(binary).and_then(|p| p.canonicalize().ok())
        };
        let name = path
            .as_deref()
            .and_then(Path::file_name)
            .or_else(|| Path::new(binary).file_name())
            .unwrap_or(OsStr::new(QEMU_BINARY))
            .to_os_string();
        QemuExe { path, name }
    }

    /// Whether `exe` (as /proc/PID/exe shows it, maybe with " (deleted)" after an upgrade
    /// replaced the binary) is this QEMU: the same path, or the same file name (QEMU's own,
    /// or the one n2d was told to run).
    pub fn matches(&self, exe: &Path) -> bool {
        let bytes = exe.as_os_str().as_bytes();
        let exe = Path::new(OsStr::from_bytes(bytes.strip_suffix(b" (deleted)").unwrap_or(bytes)));
        if self.path.as_deref() == Some(exe) {
            return true;
        }
        exe.file_name().is_some_and(|n| n == self.name.as_os_str() || n == OsStr::new(QEMU_BINARY))
    }
}

/// The `file=` marker of a machine's data disk on QEMU's command line (its commas doubled, as
/// `argv` writes them).
pub fn data_disk_marker(data_disk: &Path) -> String {
    format!("file={},", crate::argv::opt_value(&data_disk.display().to_string()))
}

/// Whether the process described by `facts` is the QEMU of the machine whose data disk is
/// `data_disk`, for n2d running as `uid`.
pub fn is_machine_qemu(facts: &ProcFacts, qemu: &QemuExe, uid: u32, data_disk: &Path) -> bool {
    let alive = matches!(facts.state, Some(s) if s != 'Z' && s != 'X' && s != 'x');
    let ours = facts.uid == Some(uid);
    let is_qemu = facts.exe.as_deref().is_some_and(|exe| qemu.matches(exe));
    let has_disk = String::from_utf8_lossy(&facts.cmdline).contains(&data_disk_marker(data_disk));
    alive && ours && is_qemu && has_disk
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISK: &str = "/home/u/.local/share/n2d/machines/m1/data.qcow2";

    fn qemu() -> QemuExe {
        QemuExe { path: Some("/usr/bin/qemu-system-x86_64".into()), name: "qemu-system-x86_64".into() }
    }

    fn running_qemu() -> ProcFacts {
        ProcFacts {
            exe: Some("/usr/bin/qemu-system-x86_64".into()),
            uid: Some(1000),
            state: Some('S'),
            cmdline: format!("qemu-system-x86_64\0-drive\0if=virtio,file={DISK},format=qcow2\0").into_bytes(),
        }
    }

    fn decide(f: &ProcFacts) -> bool {
        is_machine_qemu(f, &qemu(), 1000, Path::new(DISK))
    }

    #[test]
    fn the_machines_qemu_is_recognised() {
        assert!(decide(&running_qemu()));
        // Replaced by a package upgrade while running.
        let upgraded =
            ProcFacts { exe: Some("/usr/bin/qemu-system-x86_64 (deleted)".into()), ..running_qemu() };
        assert!(decide(&upgraded));
        // Another install of QEMU (e.g. $N2D_QEMU changed since the start).
        let other = ProcFacts { exe: Some("/opt/qemu/bin/qemu-system-x86_64".into()), ..running_qemu() };
        assert!(decide(&other));
    }

    #[test]
    fn a_process_with_the_disk_in_its_argv_is_not_the_vm() {
        let decoy = ProcFacts {
            exe: Some("/usr/bin/sleep".into()),
            cmdline: format!("sleep\01000\0file={DISK},\0").into_bytes(),
            ..running_qemu()
        };
        assert!(!decide(&decoy));
        // Named like QEMU on its command line only.
        let renamed = ProcFacts {
            exe: Some("/usr/bin/python3".into()),
            cmdline: format!("qemu-system-x86_64\0file={DISK},\0").into_bytes(),
            ..running_qemu()
        };
        assert!(!decide(&renamed));
    }

    #[test]
    fn dead_foreign_unreadable_or_other_machines_qemus_are_not_the_vm() {
        assert!(!decide(&ProcFacts { state: Some('Z'), ..running_qemu() }));
        assert!(!decide(&ProcFacts { state: None, ..running_qemu() }));
        assert!(!decide(&ProcFacts { uid: Some(0), ..running_qemu() }));
        assert!(!decide(&ProcFacts { uid: None, ..running_qemu() }));
        assert!(!decide(&ProcFacts { exe: None, ..running_qemu() }));
        let other_machine = ProcFacts {
            cmdline: b"qemu-system-x86_64\0-drive\0file=/home/u/.local/share/n2d/machines/m2/data.qcow2,\0"
                .to_vec(),
            ..running_qemu()
        };
        assert!(!decide(&other_machine));
        // m1's marker is not a prefix match of m10's disk.
        let m10 = ProcFacts {
            cmdline: b"qemu-system-x86_64\0file=/home/u/.local/share/n2d/machines/m10/data.qcow2,\0".to_vec(),
            ..running_qemu()
        };
        assert!(!decide(&m10));
    }

    #[test]
    fn the_uid_is_read_from_proc_status() {
        assert_eq!(status_uid("Name:\tqemu\nUid:\t1000\t1001\t1000\t1000\nGid:\t5\n"), Some(1000));
        assert_eq!(status_uid("Name:\tqemu\n"), None);
    }

    #[test]
    fn a_bare_binary_name_is_resolved_through_the_search_path() {
        let path = n2d_exec::SearchPath::new(["/n2d-no-such-dir".into(), "/bin".into()]);
        let sh = QemuExe::resolve("sh", &path);
        assert!(sh.path.as_deref().is_some_and(Path::is_absolute), "{sh:?}");
        assert_eq!(QemuExe::resolve("sh", &n2d_exec::SearchPath::default()).path, None);
        let missing = QemuExe::resolve("n2d-no-such-qemu", &path);
        assert_eq!(missing, QemuExe { path: None, name: "n2d-no-such-qemu".into() });
        assert!(missing.matches(Path::new("/usr/bin/qemu-system-x86_64")));
    }
}
