//! The one way n2d reaches another host: OpenSSH, as docker's `ssh://` contexts do, running
//! the `n2d` installed there. Host keys are always checked (`StrictHostKeyChecking=yes` on
//! the command line, which no ssh_config can override) and nothing is asked on a terminal
//! (`BatchMode=yes`: keys or an agent only). [`Ssh`] is the seam: unit tests answer with
//! [`FakeSsh`](crate::remote::fake::FakeSsh).

use n2d_spec::host::SshUrl;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What a remote `n2d` printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteOutput {
    /// The exit status; `None` when killed by a signal.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `n2d` on other hosts.
pub trait Ssh: Send + Sync {
    /// Runs `n2d ARGS...` on the host with `stdin` as its input and returns what it printed.
    fn n2d(&self, url: &SshUrl, args: &[String], stdin: &[u8]) -> io::Result<RemoteOutput>;

    /// Runs `n2d ARGS...` on the host on this process's own stdin, stdout and stderr (a remote
    /// verb whose output is the user's: `logs -f`, `exec`, a create's progress), with a
    /// terminal when `tty`; returns its exit status.
    fn n2d_attached(&self, url: &SshUrl, args: &[String], tty: bool) -> io::Result<Option<i32>>;

    /// Starts `n2d ARGS...` on the host with its stdin, stdout and stderr piped to the caller,
    /// for a conversation (`create --tls-relay`).
    fn session(&self, url: &SshUrl, args: &[String]) -> io::Result<RemoteSession>;
}

/// A running remote n2d: its three streams and how to wait for its end.
pub struct RemoteSession {
    pub stdin: Box<dyn io::Write + Send>,
    pub stdout: Box<dyn io::Read + Send>,
    pub stderr: Box<dyn io::Read + Send>,
    /// Waits for the end; the exit status (`None` when killed by a signal).
    pub wait: Box<dyn FnOnce() -> io::Result<Option<i32>> + Send>,
}

/// The real one: `ssh` from openssh-client.
#[derive(Debug, Clone, Default)]
pub struct OpenSsh {
    /// `ssh -F FILE` (`N2D_SSH_CONFIG`).
    pub config: Option<PathBuf>,
}

/// ssh's own exit status for its failures (connection, authentication, host key).
pub const SSH_FAILED: i32 = 255;
/// What a shell answers for a command it cannot find.
pub const COMMAND_NOT_FOUND: i32 = 127;

impl OpenSsh {
    /// The whole `ssh` argument list for `n2d ARGS...` on `url`.
    pub fn argv(&self, url: &SshUrl, args: &[String], tty: bool) -> Vec<String> {
        let mut argv: Vec<String> = Vec::new();
        if let Some(config) = &self.config {
            argv.extend(["-F".into(), config.display().to_string()]);
        }
        for option in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "ConnectTimeout=10",
            // A host that vanishes mid-command is noticed within ~15 s.
            "ServerAliveInterval=5",
            "ServerAliveCountMax=3",
            "LogLevel=ERROR",
        ] {
            argv.extend(["-o".into(), option.into()]);
        }
        if let Some(port) = url.port {
            argv.extend(["-p".into(), port.to_string()]);
        }
        argv.push(if tty { "-tt".into() } else { "-T".into() });
        argv.push("--".into());
        argv.push(url.destination());
        // ssh joins the rest into one line for the remote shell: each word is quoted.
        let mut line = String::from("n2d");
        for arg in args {
            line.push(' ');
            line.push_str(&shell_quote(arg));
        }
        argv.push(line);
        argv
    }

    /// `ssh` running `n2d ARGS...`, its three streams piped to the caller.
    fn spawn_piped(&self, url: &SshUrl, args: &[String]) -> io::Result<std::process::Child> {
        self.command(url, args, false)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)
    }

    fn command(&self, url: &SshUrl, args: &[String], tty: bool) -> Command {
        let argv = self.argv(url, args, tty);
        tracing::info!(target: "n2d_exec", "ssh {}", argv.join(" "));
        let mut cmd = Command::new("ssh");
        cmd.args(argv);
        cmd
    }
}

fn spawn_error(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::NotFound {
        io::Error::new(
            io::ErrorKind::NotFound,
            "`ssh` is not installed: install the Debian package `openssh-client` (apt-get install openssh-client)",
        )
    } else {
        e
    }
}

impl Ssh for OpenSsh {
    fn n2d(&self, url: &SshUrl, args: &[String], stdin: &[u8]) -> io::Result<RemoteOutput> {
        use std::io::Write;
        let started = std::time::Instant::now();
        let mut child = self.spawn_piped(url, args)?;
        let mut input = child.stdin.take().expect("piped");
        let stdin = stdin.to_vec();
        // Written on its own thread: a remote that prints before it reads cannot deadlock us.
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let out = child.wait_with_output()?;
        let _ = writer.join();
        tracing::info!(target: "n2d_exec", "ssh {}: {} in {:.2?}", url, out.status, started.elapsed());
        Ok(RemoteOutput { status: out.status.code(), stdout: out.stdout, stderr: out.stderr })
    }

    fn n2d_attached(&self, url: &SshUrl, args: &[String], tty: bool) -> io::Result<Option<i32>> {
        let status = self.command(url, args, tty).status().map_err(spawn_error)?;
        Ok(status.code())
    }

    fn session(&self, url: &SshUrl, args: &[String]) -> io::Result<RemoteSession> {
        let mut child = self.spawn_piped(url, args)?;
        Ok(RemoteSession {
            stdin: Box::new(child.stdin.take().expect("piped")),
            stdout: Box::new(child.stdout.take().expect("piped")),
            stderr: Box::new(child.stderr.take().expect("piped")),
            wait: Box::new(move || child.wait().map(|s| s.code())),
        })
    }
}

/// `arg` as one word for a POSIX shell.
pub fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// What went wrong on the way to a remote n2d, read from ssh's exit status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshFailure {
    /// The host's key is not in known_hosts.
    HostKeyUnknown,
    /// The host presents another key than the one known.
    HostKeyChanged,
    /// No key or agent identity was accepted.
    AuthRefused(String),
    /// No connection (refused, timed out, no route, no such name).
    Unreachable(String),
    /// The remote shell did not find `n2d`.
    N2dMissing,
}

/// Classifies a finished `ssh` whose remote command is `n2d`: `None` when ssh itself worked
/// (whatever n2d's own status).
pub fn classify(out: &RemoteOutput) -> Option<SshFailure> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let last = last.strip_suffix('.').unwrap_or(last).to_string();
    match out.status {
        Some(SSH_FAILED) => Some(if stderr.contains("IDENTIFICATION HAS CHANGED") {
            SshFailure::HostKeyChanged
        } else if stderr.contains("Host key verification failed")
            || stderr.contains("No ") && stderr.contains("host key is known")
        {
            SshFailure::HostKeyUnknown
        } else if stderr.contains("Permission denied") || stderr.contains("Too many authentication failures")
        {
            SshFailure::AuthRefused(last)
        } else {
            SshFailure::Unreachable(if last.is_empty() {
                "ssh failed without a message".into()
            } else {
                last
            })
        }),
        Some(COMMAND_NOT_FOUND) if stderr.contains("n2d") && stderr.contains("not found") => {
            Some(SshFailure::N2dMissing)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_checks_host_keys_never_prompts_and_quotes_every_word() {
        let ssh = OpenSsh { config: Some("/t/ssh_config".into()) };
        let url: SshUrl = "ssh://me@lab:2222".parse().unwrap();
        let argv =
            ssh.argv(&url, &["create".into(), "a b".into(), "it's".into(), "--memory=1G".into()], false);
        let line = argv.join(" ");
        assert!(line.starts_with("-F /t/ssh_config -o BatchMode=yes -o StrictHostKeyChecking=yes"), "{line}");
        assert!(line.ends_with("-p 2222 -T -- me@lab n2d create 'a b' 'it'\\''s' --memory=1G"), "{line}");
        let plain = OpenSsh::default().argv(&"ssh://lab".parse().unwrap(), &[], true);
        assert_eq!(plain[plain.len() - 4..], ["-tt", "--", "lab", "n2d"].map(String::from)[..]);
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
    }

    #[test]
    fn ssh_failures_are_told_apart_by_status_and_message() {
        let out = |status, stderr: &str| RemoteOutput { status, stdout: vec![], stderr: stderr.into() };
        let cases = [
            (out(Some(255), "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.\n"), Some(SshFailure::HostKeyChanged)),
            (out(Some(255), "No ED25519 host key is known for [10.0.0.2]:22 and you have requested strict checking.\nHost key verification failed.\n"), Some(SshFailure::HostKeyUnknown)),
            (out(Some(255), "me@lab: Permission denied (publickey).\n"), Some(SshFailure::AuthRefused("me@lab: Permission denied (publickey)".into()))),
            (out(Some(255), "ssh: connect to host 10.0.0.9 port 22: Connection refused\n"), Some(SshFailure::Unreachable("ssh: connect to host 10.0.0.9 port 22: Connection refused".into()))),
            (out(Some(127), "bash: line 1: n2d: command not found\n"), Some(SshFailure::N2dMissing)),
            (out(Some(127), "sh: 1: n2d: not found\n"), Some(SshFailure::N2dMissing)),
            (out(Some(2), "error: no machine named x\n"), None),
            (out(Some(0), ""), None),
        ];
        for (output, expected) in cases {
            assert_eq!(classify(&output), expected, "{output:?}");
        }
    }
}
