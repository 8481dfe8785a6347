//! The one seam through which n2d runs external tools (ip, qemu-img, mmdebstrap, mkfs.erofs...).
//!
//! Every call goes through [`Runner`], so unit tests swap in [`RecordingRunner`] and check the
//! exact command lines without root or the tools installed. Errors name the tool, the Debian
//! package that provides it when it is missing, and the tail of what it printed when it fails.

#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// One command line: program + arguments, plus the Debian package that ships the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<OsString>,
    pub package: &'static str,
}

impl Cmd {
    pub fn new(program: &str, package: &'static str) -> Self {
        Cmd { program: program.to_string(), args: Vec::new(), package }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command line as a user would type it (for messages; never holds secrets).
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(
        "`{program}` is not installed: install the Debian package `{package}` (apt-get install {package})"
    )]
    NotInstalled { program: String, package: &'static str },
    #[error("could not run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr_tail}")]
    Failed { command: String, status: String, stderr_tail: String },
}

/// Runs commands to completion and returns their stdout.
pub trait Runner: Send + Sync {
    fn run(&self, cmd: &Cmd) -> Result<Vec<u8>, ExecError>;
}

/// Runs real processes.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<Vec<u8>, ExecError> {
        let started = std::time::Instant::now();
        let output = Command::new(&cmd.program).args(&cmd.args).stdin(Stdio::null()).output();
        let outcome = match &output {
            Ok(o) => o.status.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::info!("ran {}: {outcome} ({:.2}s)", cmd.display(), started.elapsed().as_secs_f64());
        let output = output.map_err(|source| spawn_error(cmd, source))?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(ExecError::Failed {
            command: cmd.display(),
            status: output.status.to_string(),
            stderr_tail: tail(&output.stderr, 6),
        })
    }
}

/// Maps a spawn failure to `NotInstalled` when the program does not exist.
pub fn spawn_error(cmd: &Cmd, source: io::Error) -> ExecError {
    if source.kind() == io::ErrorKind::NotFound {
        ExecError::NotInstalled { program: cmd.program.clone(), package: cmd.package }
    } else {
        ExecError::Spawn { command: cmd.display(), source }
    }
}

/// The last `lines` non-empty lines of `bytes`, joined with " | " to stay on one line.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = kept.len().saturating_sub(lines);
    kept[start..].join(" | ")
}

/// Where tools are looked for: the directories of `$PATH`, read once by the CLI (no library
/// reads the environment). Spawning itself goes through [`Command`], which resolves a bare name
/// as exec does over the process's own `PATH`: the same value, so n2d does not reimplement
/// execvp; this is only for telling beforehand whether a tool is there (and which file a
/// running QEMU was started from).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPath {
    dirs: Vec<PathBuf>,
}

impl SearchPath {
    /// These directories, in order.
    pub fn new(dirs: impl IntoIterator<Item = PathBuf>) -> SearchPath {
        SearchPath { dirs: dirs.into_iter().collect() }
    }

    /// The directories of a `PATH` value (`None`: none at all).
    pub fn from_path_var(value: Option<&OsStr>) -> SearchPath {
        SearchPath::new(value.map(|v| std::env::split_paths(v).collect::<Vec<_>>()).unwrap_or_default())
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The file `program` names: a path as is (when it exists), a bare name in the first
    /// directory that holds it as a file.
    pub fn find(&self, program: &str) -> Option<PathBuf> {
        if program.contains('/') {
            let path = Path::new(program);
            return path.exists().then(|| path.to_path_buf());
        }
        self.dirs.iter().map(|dir| dir.join(program)).find(|p| p.is_file())
    }

    /// Whether `program` can be found (or is an existing path).
    pub fn is_installed(&self, program: &str) -> bool {
        self.find(program).is_some()
    }

    /// Whether a tool is on the search path or in /usr/sbin or /sbin, where administration tools
    /// (mkfs.erofs, depmod, ip) live even when a user's PATH leaves those directories out.
    pub fn is_installed_or_in_sbin(&self, program: &str) -> bool {
        self.is_installed(program)
            || ["/usr/sbin", "/sbin"].iter().any(|dir| self.is_installed(&format!("{dir}/{program}")))
    }
}

/// A scripted answer: (substring of the command line, stdout or error message).
type Answer = (String, Result<Vec<u8>, String>);

/// A fake for unit tests: records every command and answers from a script of results.
#[derive(Default)]
pub struct RecordingRunner {
    pub calls: Mutex<Vec<String>>,
    /// First match wins.
    answers: Mutex<Vec<Answer>>,
}

impl RecordingRunner {
    pub fn answer(&self, matching: &str, result: Result<&str, &str>) {
        self.answers
            .lock()
            .unwrap()
            .push((matching.to_string(), result.map(|s| s.as_bytes().to_vec()).map_err(str::to_string)));
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Runner for RecordingRunner {
    fn run(&self, cmd: &Cmd) -> Result<Vec<u8>, ExecError> {
        let line = cmd.display();
        self.calls.lock().unwrap().push(line.clone());
        let answers = self.answers.lock().unwrap();
        match answers.iter().find(|(m, _)| line.contains(m.as_str())) {
            Some((_, Ok(out))) => Ok(out.clone()),
            Some((_, Err(msg))) => Err(ExecError::Failed {
                command: line,
                status: "exit status: 1".into(),
                stderr_tail: msg.clone(),
            }),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_its_package() {
        let err = SystemRunner.run(&Cmd::new("n2d-no-such-tool", "n2d-pkg")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`n2d-no-such-tool` is not installed: install the Debian package `n2d-pkg` (apt-get install n2d-pkg)"
        );
    }

    #[test]
    fn failure_carries_the_stderr_tail() {
        let cmd = Cmd::new("sh", "dash").args(["-c", "echo one >&2; echo two >&2; exit 3"]);
        let err = SystemRunner.run(&cmd).unwrap_err().to_string();
        assert!(err.contains("one | two"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
    }

    #[test]
    fn tools_are_found_on_the_search_path_given() {
        let path = SearchPath::from_path_var(Some(OsStr::new("/n2d-no-such-dir:/bin")));
        assert_eq!(path.find("sh"), Some(PathBuf::from("/bin/sh")));
        assert!(!path.is_installed("n2d-no-such-tool"));
        assert!(!SearchPath::default().is_installed("sh"), "an empty search path finds nothing");
        assert!(SearchPath::default().is_installed("/bin/sh"), "a path needs no search");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\n\nb\nc\n", 2), "b | c");
    }

    #[test]
    fn recording_runner_records_and_answers() {
        let r = RecordingRunner::default();
        r.answer("link show", Err("Device does not exist"));
        assert!(r.run(&Cmd::new("ip", "iproute2").args(["link", "show", "x"])).is_err());
        assert!(r.run(&Cmd::new("ip", "iproute2").args(["addr"])).is_ok());
        assert_eq!(r.calls(), vec!["ip link show x", "ip addr"]);
    }
}
