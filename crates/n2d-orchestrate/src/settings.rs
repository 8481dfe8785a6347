//! Every knob n2d takes from its environment, read once at the edge ([`Settings::from_vars`],
//! which the CLI calls with `std::env::var_os`) and passed down as values: no library reads the
//! environment, and tests build a `Settings` (or the parts' own constructors) instead of setting
//! variables.
//!
//! | variable | field | consumed by |
//! |---|---|---|
//! | `N2D_HOME`, else `XDG_DATA_HOME`/n2d, else `HOME`/.local/share/n2d | [`Settings::home`] | `n2d_store::Home::open` |
//! | `N2D_RUN_DIR` (default `/run/n2d`) | [`Settings::run_dir`] | `n2d_net::host::HostNet::system` |
//! | `N2D_LOCK_TIMEOUT` (seconds, default 120) | [`Settings::lock_timeout`] | `Home` and `HostNet` (`with_lock_timeout`) |
//! | `N2D_QEMU`, `N2D_TCG_THREAD`, `N2D_TCG_TB_SIZE`, `N2D_NO_KVM`, `PATH` | [`Settings::qemu`] | `n2d_vm::Qemu::new` |
//! | `PATH` | [`Settings::search_path`] | tool checks: image build, export, doctor |
//! | `N2D_SSH_CONFIG` (an ssh_config file for n2d's SSH connections; default: ssh's own) | [`Settings::ssh_config`] | `remote::OpenSsh` |
//! | `N2D_TEST_KILL_AT` | [`Settings::kill_at`] | `n2d_store::KillPoints::parse` |
//!
//! (`N2D_INIT`, the default of `image build --init`, and `N2D_LOG`, `-v`'s filter, are the CLI's own,
//! read beside their flags.)

use n2d_exec::SearchPath;
use n2d_store::{parse_lock_timeout, StoreError, DEFAULT_LOCK_TIMEOUT, LOCK_TIMEOUT_ENV};
use n2d_vm::argv::{
    parse_tb_size, InvalidTbSize, InvalidTcgThread, QEMU_BINARY, TCG_TB_SIZE_ENV, TCG_THREAD_ENV,
};
use n2d_vm::QemuConfig;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The QEMU binary to run instead of qemu-system-x86_64.
pub const QEMU_ENV: &str = "N2D_QEMU";
/// Set (to anything) to never use KVM.
pub const NO_KVM_ENV: &str = "N2D_NO_KVM";
/// The state home.
pub const HOME_ENV: &str = "N2D_HOME";
/// An ssh_config file for n2d's SSH connections to other hosts.
pub const SSH_CONFIG_ENV: &str = "N2D_SSH_CONFIG";

/// What n2d was told by its environment, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The state home (not yet made absolute or checked: `Home::open` does).
    pub home: PathBuf,
    /// The host-wide network state's directory.
    pub run_dir: PathBuf,
    /// How long a wait for another n2d's lock (the home's or the host's) may last.
    pub lock_timeout: Duration,
    /// The binary, TCG's knobs, KVM refused, and the search path to recognise QEMU by.
    pub qemu: QemuConfig,
    /// Where tools are looked for before they are run (`PATH`).
    pub search_path: SearchPath,
    /// Test-only: the step at which n2d kills itself.
    pub kill_at: Option<String>,
    /// The ssh_config file `ssh -F` reads for n2d's connections to other hosts (its host-key
    /// checking stays on whatever it says).
    pub ssh_config: Option<PathBuf>,
}

/// A value in the environment n2d refuses. All but [`SettingsError::NoHome`] are the user's
/// mistake (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot find a home directory for n2d's state: set N2D_HOME or HOME")]
    NoHome,
    #[error(transparent)]
    LockTimeout(StoreError),
    #[error(transparent)]
    TcgThread(InvalidTcgThread),
    #[error(transparent)]
    TbSize(InvalidTbSize),
    #[error("{var}={value:?} is not valid: it must be valid UTF-8")]
    NotUnicode { var: &'static str, value: String },
}

impl SettingsError {
    pub fn is_usage(&self) -> bool {
        !matches!(self, SettingsError::NoHome)
    }
}

impl Settings {
    /// Reads every knob through `get` (the CLI passes `std::env::var_os`; tests a map). Blank
    /// values count as unset, except `N2D_NO_KVM`, which counts when set at all.
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> Result<Settings, SettingsError> {
        let set = |var: &str| get(var).filter(|v| !v.is_empty());
        // A text value: unset or blank is `None`; bytes that are not UTF-8 are refused with
        // `invalid`'s message, or a generic one.
        let text = |var: &'static str| -> Result<Option<String>, String> {
            match get(var) {
                None => Ok(None),
                Some(v) => match v.into_string() {
                    Ok(v) if v.trim().is_empty() => Ok(None),
                    Ok(v) => Ok(Some(v)),
                    Err(v) => Err(v.to_string_lossy().into_owned()),
                },
            }
        };
        let not_unicode = |var: &'static str| move |value: String| SettingsError::NotUnicode { var, value };

        let home = if let Some(h) = set(HOME_ENV) {
            PathBuf::from(h)
        } else if let Some(x) = set("XDG_DATA_HOME") {
            PathBuf::from(x).join("n2d")
        } else {
            PathBuf::from(get("HOME").ok_or(SettingsError::NoHome)?).join(".local/share/n2d")
        };
        let run_dir = set(n2d_net::host::RUN_DIR_ENV)
            .map_or_else(|| PathBuf::from(n2d_net::host::DEFAULT_RUN_DIR), PathBuf::from);
        let lock_timeout = match text(LOCK_TIMEOUT_ENV) {
            Ok(None) => DEFAULT_LOCK_TIMEOUT,
            Ok(Some(v)) => parse_lock_timeout(&v).map_err(SettingsError::LockTimeout)?,
            Err(v) => return Err(SettingsError::LockTimeout(StoreError::BadLockTimeout(v))),
        };
        let tcg_thread = match text(TCG_THREAD_ENV) {
            Ok(v) => v.map(|v| v.parse()).transpose().map_err(SettingsError::TcgThread)?,
            Err(value) => return Err(SettingsError::TcgThread(InvalidTcgThread { value })),
        };
        let tb_size_mib = match text(TCG_TB_SIZE_ENV) {
            Ok(v) => v.map(|v| parse_tb_size(&v)).transpose().map_err(SettingsError::TbSize)?,
            Err(value) => return Err(SettingsError::TbSize(InvalidTbSize { value })),
        };
        let search_path = SearchPath::from_path_var(get("PATH").as_deref());
        let qemu = QemuConfig {
            binary: text(QEMU_ENV).map_err(not_unicode(QEMU_ENV))?.unwrap_or_else(|| QEMU_BINARY.to_string()),
            tcg_thread,
            tb_size_mib,
            no_kvm: get(NO_KVM_ENV).is_some(),
            search_path: search_path.clone(),
        };
        let kill_at = text(n2d_store::KILL_AT_ENV)
            .map_err(not_unicode(n2d_store::KILL_AT_ENV))?
            .map(|v| v.trim().to_string());
        let ssh_config = set(SSH_CONFIG_ENV).map(PathBuf::from);
        Ok(Settings { home, run_dir, lock_timeout, qemu, search_path, kill_at, ssh_config })
    }

    /// The settings of a home at `home` with every other knob at its default (tests).
    pub fn for_home(home: impl Into<PathBuf>) -> Settings {
        Settings {
            home: home.into(),
            run_dir: PathBuf::from(n2d_net::host::DEFAULT_RUN_DIR),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            qemu: QemuConfig::default(),
            search_path: SearchPath::default(),
            kill_at: None,
            ssh_config: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use n2d_vm::TcgThread;
    use std::collections::HashMap;
    use std::os::unix::ffi::OsStringExt;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, OsString> {
        pairs.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect()
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map = vars(pairs);
        Settings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_come_from_home_alone() {
        let s = settings(&[("HOME", "/home/ann")]).unwrap();
        assert_eq!(s, Settings::for_home("/home/ann/.local/share/n2d"));
        assert_eq!(s.home, PathBuf::from("/home/ann/.local/share/n2d"));
        assert_eq!(s.run_dir, PathBuf::from("/run/n2d"));
        assert_eq!(s.lock_timeout, DEFAULT_LOCK_TIMEOUT);
        assert_eq!(s.qemu, QemuConfig::default());
        assert_eq!(s.search_path, SearchPath::default());
        assert_eq!(s.kill_at, None);
    }

    #[test]
    fn the_home_is_n2d_home_then_xdg_data_home_then_home() {
        let all = [("N2D_HOME", "/a"), ("XDG_DATA_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(settings(&all).unwrap().home, PathBuf::from("/a"));
        let blank_n2d_home = [("N2D_HOME", ""), ("XDG_DATA_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(settings(&blank_n2d_home).unwrap().home, PathBuf::from("/x/n2d"));
        assert_eq!(
            settings(&[("XDG_DATA_HOME", ""), ("HOME", "/h")]).unwrap().home,
            PathBuf::from("/h/.local/share/n2d")
        );
        let err = settings(&[("N2D_HOME", "")]).unwrap_err();
        assert!(matches!(err, SettingsError::NoHome) && !err.is_usage(), "{err}");
        assert_eq!(err.to_string(), "cannot find a home directory for n2d's state: set N2D_HOME or HOME");
    }

    #[test]
    fn every_knob_is_read() {
        let s = settings(&[
            ("N2D_HOME", "/a"),
            ("N2D_RUN_DIR", "/tmp/run"),
            ("N2D_LOCK_TIMEOUT", " 0.5 "),
            ("N2D_QEMU", "/opt/qemu"),
            ("N2D_TCG_THREAD", "Multi"),
            ("N2D_TCG_TB_SIZE", "64"),
            ("N2D_NO_KVM", ""),
            ("PATH", "/usr/bin:/bin"),
            ("N2D_TEST_KILL_AT", " create:after-lease "),
        ])
        .unwrap();
        assert_eq!(s.run_dir, PathBuf::from("/tmp/run"));
        assert_eq!(s.lock_timeout, Duration::from_millis(500));
        let path = SearchPath::new(["/usr/bin".into(), "/bin".into()]);
        let qemu = QemuConfig {
            binary: "/opt/qemu".into(),
            tcg_thread: Some(TcgThread::Multi),
            tb_size_mib: Some(64),
            no_kvm: true,
            search_path: path.clone(),
        };
        assert_eq!(s.qemu, qemu);
        assert_eq!(s.search_path, path);
        assert_eq!(s.kill_at.as_deref(), Some("create:after-lease"));
    }

    #[test]
    fn blank_values_are_unset() {
        let s = settings(&[
            ("HOME", "/h"),
            ("N2D_RUN_DIR", ""),
            ("N2D_LOCK_TIMEOUT", "  "),
            ("N2D_QEMU", ""),
            ("N2D_TCG_THREAD", " "),
            ("N2D_TCG_TB_SIZE", ""),
            ("N2D_TEST_KILL_AT", " "),
        ])
        .unwrap();
        assert_eq!(s, settings(&[("HOME", "/h")]).unwrap());
    }

    #[test]
    fn bad_values_are_refused_with_the_range() {
        let err = |pairs: &[(&str, &str)]| {
            let mut all = vec![("HOME", "/h")];
            all.extend_from_slice(pairs);
            let e = settings(&all).unwrap_err();
            assert!(e.is_usage(), "{e}");
            e.to_string()
        };
        for bad in ["1e300", "-1", "NaN", "inf", "86401", "ten"] {
            assert_eq!(
                err(&[("N2D_LOCK_TIMEOUT", bad)]),
                format!("N2D_LOCK_TIMEOUT={bad:?} is not valid: use a number of seconds from 0 to 86400 (default 120)")
            );
        }
        assert_eq!(
            err(&[("N2D_TCG_THREAD", "many")]),
            r#"N2D_TCG_THREAD="many" is not valid: use single or multi"#
        );
        for bad in ["8", "4096", "lots"] {
            assert_eq!(
                err(&[("N2D_TCG_TB_SIZE", bad)]),
                format!(
                    "N2D_TCG_TB_SIZE={bad:?} is not valid: use a size in MiB from 16 to 2048 (default 128)"
                )
            );
        }
    }

    #[test]
    fn the_system_orchestrator_is_wired_from_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Settings::for_home(dir.path().join("home"));
        s.run_dir = dir.path().join("run");
        s.lock_timeout = Duration::from_secs(7);
        s.qemu.binary = "n2d-no-such-qemu".into();
        s.search_path = SearchPath::new(["/bin".into()]);
        s.kill_at = Some("create:after-lease".into());
        let progress = std::sync::Arc::new(crate::Quiet::default());
        let orch = crate::Orchestrator::system(&s, progress.clone()).unwrap();
        assert_eq!(orch.home.root(), dir.path().join("home"));
        assert_eq!(orch.net.dir(), dir.path().join("run"));
        assert_eq!(orch.hypervisor.config, s.qemu);
        assert_eq!(orch.search_path, s.search_path);
        assert_eq!(orch.kill.point(), Some("create:after-lease"));
        orch.progress.say("through the one progress");
        assert_eq!(progress.lines(), ["through the one progress"]);
        // A home that is not the caller's is refused here, before any command.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let err = crate::Orchestrator::system(&Settings::for_home(&open), progress).err().unwrap();
        assert!(err.is_usage(), "{err}");
    }

    #[test]
    fn values_that_are_not_utf8_are_refused() {
        let bad = || OsString::from_vec(b"\xff".to_vec());
        for var in ["N2D_LOCK_TIMEOUT", "N2D_TCG_THREAD", "N2D_TCG_TB_SIZE", "N2D_QEMU", "N2D_TEST_KILL_AT"] {
            let e = Settings::from_vars(|k| match k {
                "HOME" => Some("/h".into()),
                k if k == var => Some(bad()),
                _ => None,
            })
            .unwrap_err();
            assert!(e.is_usage() && e.to_string().starts_with(&format!("{var}=\"\u{fffd}\"")), "{e}");
        }
        // Paths need not be UTF-8.
        let s = Settings::from_vars(|k| (k == "N2D_HOME").then(bad)).unwrap();
        assert_eq!(s.home, PathBuf::from(bad()));
    }
}
