//! A scripted [`Ssh`] for unit tests: answers by host and the remote command's first words,
//! and records every call.

use super::ssh::{RemoteOutput, RemoteSession, Ssh};
use n2d_spec::host::SshUrl;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

/// A scripted remote end of a session: gets the arguments, reads the session's stdin, writes
/// its stdout and stderr, returns the exit status.
pub type SessionScript =
    Arc<dyn Fn(&[String], &mut dyn BufRead, &mut dyn Write, &mut dyn Write) -> i32 + Send + Sync>;

#[derive(Default)]
pub struct FakeSsh {
    /// (host, command prefix, answer): the first match answers.
    answers: Mutex<Vec<(String, String, RemoteOutput)>>,
    /// (host, command prefix, script) for sessions.
    sessions: Mutex<Vec<(String, String, SessionScript)>>,
    calls: Mutex<Vec<String>>,
    /// (host, command line, stdin) of every call that was given a stdin.
    stdins: Mutex<Vec<(String, String, Vec<u8>)>>,
}

impl FakeSsh {
    /// Answers `n2d PREFIX...` on `host` (the URL's host part) with `out`.
    pub fn answer(&self, host: &str, prefix: &str, status: i32, stdout: &str, stderr: &str) {
        let out = RemoteOutput { status: Some(status), stdout: stdout.into(), stderr: stderr.into() };
        self.answers.lock().unwrap().push((host.to_string(), prefix.to_string(), out));
    }

    /// Runs `script` for sessions of `n2d PREFIX...` on `host`.
    pub fn script(&self, host: &str, prefix: &str, script: SessionScript) {
        self.sessions.lock().unwrap().push((host.to_string(), prefix.to_string(), script));
    }

    /// Every call so far, `HOST: n2d ARGS`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// What the calls of `n2d PREFIX...` on `host` were given on stdin, in order.
    pub fn stdins(&self, host: &str, prefix: &str) -> Vec<Vec<u8>> {
        let stdins = self.stdins.lock().unwrap();
        stdins
            .iter()
            .filter(|(h, l, _)| h == host && l.starts_with(prefix))
            .map(|(_, _, s)| s.clone())
            .collect()
    }

    fn find(&self, url: &SshUrl, args: &[String]) -> RemoteOutput {
        let line = args.join(" ");
        self.calls.lock().unwrap().push(format!("{}: n2d {line}", url.host));
        let answers = self.answers.lock().unwrap();
        match answers.iter().find(|(h, p, _)| h == &url.host && line.starts_with(p.as_str())) {
            Some((_, _, out)) => out.clone(),
            None => RemoteOutput {
                status: Some(255),
                stdout: vec![],
                stderr: format!("ssh: connect to host {} port 22: Connection refused\n", url.host).into(),
            },
        }
    }
}

impl Ssh for FakeSsh {
    fn n2d(&self, url: &SshUrl, args: &[String], stdin: &[u8]) -> std::io::Result<RemoteOutput> {
        if !stdin.is_empty() {
            self.stdins.lock().unwrap().push((url.host.clone(), args.join(" "), stdin.to_vec()));
        }
        Ok(self.find(url, args))
    }

    fn n2d_attached(&self, url: &SshUrl, args: &[String], _tty: bool) -> std::io::Result<Option<i32>> {
        Ok(self.find(url, args).status)
    }

    fn session(&self, url: &SshUrl, args: &[String]) -> std::io::Result<RemoteSession> {
        let line = args.join(" ");
        self.calls.lock().unwrap().push(format!("{}: n2d {line} (session)", url.host));
        let script = self
            .sessions
            .lock()
            .unwrap()
            .iter()
            .find(|(h, p, _)| h == &url.host && line.starts_with(p.as_str()))
            .map(|(_, _, s)| s.clone());
        let (stdin_r, stdin_w) = std::io::pipe()?;
        let (stdout_r, mut stdout_w) = std::io::pipe()?;
        let (stderr_r, mut stderr_w) = std::io::pipe()?;
        let args = args.to_vec();
        let host = url.host.clone();
        let remote = std::thread::spawn(move || match script {
            Some(script) => {
                script(&args, &mut std::io::BufReader::new(stdin_r), &mut stdout_w, &mut stderr_w)
            }
            None => {
                let _ = writeln!(stderr_w, "ssh: connect to host {host} port 22: Connection refused");
                255
            }
        });
        Ok(RemoteSession {
            stdin: Box::new(stdin_w),
            stdout: Box::new(stdout_r),
            stderr: Box::new(stderr_r),
            wait: Box::new(move || Ok(Some(remote.join().expect("the script does not panic")))),
        })
    }
}
