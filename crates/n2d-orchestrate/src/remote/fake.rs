//! A scripted [`Ssh`] for unit tests: answers by host and the remote command's first words,
//! and records every call.

use super::ssh::{RemoteOutput, Ssh};
use n2d_spec::host::SshUrl;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct FakeSsh {
    /// (host, command prefix, answer): the first match answers.
    answers: Mutex<Vec<(String, String, RemoteOutput)>>,
    calls: Mutex<Vec<String>>,
}

impl FakeSsh {
    /// Answers `n2d PREFIX...` on `host` (the URL's host part) with `out`.
    pub fn answer(&self, host: &str, prefix: &str, status: i32, stdout: &str, stderr: &str) {
        let out = RemoteOutput { status: Some(status), stdout: stdout.into(), stderr: stderr.into() };
        self.answers.lock().unwrap().push((host.to_string(), prefix.to_string(), out));
    }

    /// Every call so far, `HOST: n2d ARGS`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
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
    fn n2d(&self, url: &SshUrl, args: &[String], _stdin: &[u8]) -> std::io::Result<RemoteOutput> {
        Ok(self.find(url, args))
    }

    fn n2d_attached(&self, url: &SshUrl, args: &[String], _tty: bool) -> std::io::Result<Option<i32>> {
        Ok(self.find(url, args).status)
    }
}
