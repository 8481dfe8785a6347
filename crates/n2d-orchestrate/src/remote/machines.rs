//! Machines of this home on other hosts: made by the host's own n2d (`create --tls-relay`
//! there, with this home's CA issuing the certificate: see [`super::relay`]), reached by the
//! docker CLI at their own address with this home's client certificate, and managed by
//! running the verb on their host.

use super::relay::{parse_request, IssuedCert};
use super::{RemoteError, SshFailure};
use crate::{Error, Orchestrator, Result};
use n2d_pki::Ca;
use n2d_spec::host::HostName;
use n2d_spec::machine::MachineName;
use n2d_store::RemoteMachine;
use n2d_swarm::{Endpoint, TlsPaths};
use std::io::{BufRead, BufReader, Write};

/// A remote machine as `n2d ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRemote {
    pub machine: RemoteMachine,
    /// `running`, `stopped`... as its host says; `unknown` when the host does not answer.
    pub state: String,
    /// Why the state is unknown.
    pub error: Option<String>,
}

impl<R, H, C> Orchestrator<R, H, C> {
    /// The remote machine of that name, if it is one.
    pub fn remote_machine(&self, name: &MachineName) -> Result<Option<RemoteMachine>> {
        Ok(self.home.load_remote_machine(name)?)
    }

    /// The names of this home's remote machines.
    pub fn remote_machine_names(&self) -> Vec<MachineName> {
        self.home.list_remote_machines().into_iter().map(|(n, _)| n).collect()
    }

    /// The remote machines, each with its state as its host says (hosts asked in parallel).
    pub fn list_remote_machines(&self) -> Vec<ListedRemote>
    where
        R: Sync,
        H: Sync,
        C: Sync,
    {
        let machines: Vec<RemoteMachine> =
            self.home.list_remote_machines().into_iter().filter_map(|(_, m)| m.ok()).collect();
        let mut hosts: Vec<HostName> = machines.iter().map(|m| m.host.clone()).collect();
        hosts.sort();
        hosts.dedup();
        let states: Vec<(HostName, std::result::Result<serde_json::Value, String>)> =
            std::thread::scope(|scope| {
                let asks: Vec<_> = hosts
                    .iter()
                    .map(|host| {
                        scope.spawn(move || {
                            let rows = self.remote_host(host).and_then(|h| {
                                let out =
                                    self.call_host(host, &h.url, &["ls".into(), "--json".into()], b"")?;
                                serde_json::from_slice::<serde_json::Value>(&out).map_err(|e| {
                                    RemoteError::BadAnswer {
                                        name: host.clone(),
                                        command: "ls --json".into(),
                                        reason: e.to_string(),
                                    }
                                    .into()
                                })
                            });
                            (host.clone(), rows.map_err(|e| e.to_string()))
                        })
                    })
                    .collect();
                asks.into_iter().map(|a| a.join().expect("a host probe does not panic")).collect()
            });
        machines
            .into_iter()
            .map(|machine| {
                let answer = states.iter().find(|(h, _)| h == &machine.host).map(|(_, rows)| rows);
                let (state, error) = match answer {
                    Some(Ok(rows)) => {
                        let row = rows
                            .as_array()
                            .and_then(|rows| rows.iter().find(|r| r["name"] == machine.name.as_str()));
                        match row.and_then(|r| r["state"].as_str()) {
                            Some(state) => (state.to_string(), None),
                            None => (
                                "missing".to_string(),
                                Some(format!("host {} has no such machine", machine.host)),
                            ),
                        }
                    }
                    Some(Err(e)) => ("unknown".to_string(), Some(e.clone())),
                    None => ("unknown".to_string(), None),
                };
                ListedRemote { machine, state, error }
            })
            .collect()
    }

    /// The engine of a remote machine as this home reaches it: its own address, this home's
    /// client certificate and CA.
    pub fn remote_endpoint(&self, machine: &RemoteMachine) -> Endpoint {
        let certs = self.home.certs_dir();
        Endpoint {
            name: machine.name.to_string(),
            ip: machine.ip,
            docker_host: format!("tcp://{}:2376", machine.ip),
            tls: Some(TlsPaths {
                ca: certs.join(n2d_pki::CA_CERT),
                cert: certs.join(n2d_pki::CLIENT_CERT),
                key: certs.join(n2d_pki::CLIENT_KEY),
            }),
        }
    }

    /// Creates machine `name` on `host`: `n2d create NAME ARGS... --tls-relay` there, answering
    /// its certificate request with this home's CA, then records where it runs. The remote
    /// create rolls back its own failures; nothing is recorded here unless it succeeded.
    pub fn create_on_host(
        &self,
        host: &HostName,
        name: &MachineName,
        args: &[String],
    ) -> Result<RemoteMachine> {
        if self.home.machine_exists(name) || self.home.load_remote_machine(name)?.is_some() {
            return Err(Error::MachineExists { name: name.to_string() });
        }
        let record = self.remote_host(host)?;
        let ca = Ca::load_or_create(&self.home.certs_dir())?;
        let mut argv = vec!["create".to_string(), name.to_string()];
        argv.extend(args.iter().cloned());
        argv.push("--tls-relay".into());
        let session = self
            .ssh
            .session(&record.url, &argv)
            .map_err(|source| RemoteError::Spawn { name: host.clone(), source })?;
        let mut stdin = session.stdin;
        let stderr = session.stderr;
        // The remote's progress is shown as it comes; its error lines are kept for ours.
        let progress = &self.progress;
        let (status, output, error_lines) = std::thread::scope(|scope| {
            let errors = scope.spawn(move || {
                let mut kept = Vec::new();
                for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                    if line.starts_with("error: ")
                        || line.starts_with("  caused by: ")
                        || line.starts_with("ssh: ")
                        || !kept.is_empty()
                    {
                        kept.push(line);
                    } else if !line.trim().is_empty() {
                        progress.say(&format!("  {host}: {}", line.trim()));
                    }
                }
                kept
            });
            let mut output = Vec::new();
            let mut failure = None;
            for line in BufReader::new(session.stdout).lines().map_while(|l| l.ok()) {
                match parse_request(&line) {
                    Some(req) if &req.name == name => {
                        let answer = ca.issue_server(name, &req.ips).map(|c| IssuedCert {
                            ca_pem: ca.cert_pem().to_string(),
                            cert_pem: c.cert_pem,
                            key_pem: c.key_pem,
                        });
                        match answer {
                            Ok(issued) => {
                                let line = serde_json::to_string(&issued).expect("serialisable");
                                let _ = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
                            }
                            Err(e) => {
                                failure = Some(Error::from(e));
                                break;
                            }
                        }
                    }
                    // Never sign for another name than the one asked for.
                    Some(_) => break,
                    None => output.push(line),
                }
            }
            drop(stdin);
            let status = (session.wait)();
            (status.map(|s| (s, failure)), output, errors.join().unwrap_or_default())
        });
        let (status, failure) = status.map_err(|source| RemoteError::Spawn { name: host.clone(), source })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let stderr_text = error_lines.join("\n");
        match status {
            Some(0) => {}
            Some(code) => {
                let out = super::RemoteOutput {
                    status: Some(code),
                    stdout: vec![],
                    stderr: stderr_text.clone().into(),
                };
                if let Some(f) = super::ssh::classify(&out) {
                    return Err(self.ssh_failure_of(host, &record.url, f).into());
                }
                let message = error_lines
                    .iter()
                    .map(|l| l.trim().strip_prefix("error: ").unwrap_or(l.trim()).to_string())
                    .collect::<Vec<_>>()
                    .join(" ");
                return Err(if code == 2 {
                    RemoteError::Refused { name: host.clone(), message }
                } else {
                    RemoteError::Remote {
                        name: host.clone(),
                        command: "create".into(),
                        status: format!(" (exit status {code})"),
                        message,
                    }
                }
                .into());
            }
            None => {
                return Err(RemoteError::Remote {
                    name: host.clone(),
                    command: "create".into(),
                    status: " (killed)".into(),
                    message: stderr_text,
                }
                .into())
            }
        }
        let ip = output.iter().find_map(|l| l.trim().parse().ok()).ok_or_else(|| RemoteError::BadAnswer {
            name: host.clone(),
            command: "create".into(),
            reason: format!("no address in its output: {:?}", output.join(" / ")),
        })?;
        let machine = RemoteMachine { name: name.clone(), host: host.clone(), ip, swarm: None };
        self.home.save_remote_machine(&machine)?;
        Ok(machine)
    }

    fn ssh_failure_of(&self, host: &HostName, url: &n2d_spec::host::SshUrl, f: SshFailure) -> RemoteError {
        self.ssh_failure(host, url, f)
    }

    /// Runs `n2d ARGS...` on the machine's host on this terminal (stdin, stdout, stderr);
    /// returns its exit status.
    pub fn run_on_host_of(&self, machine: &RemoteMachine, args: &[String], tty: bool) -> Result<i32> {
        let host = self.remote_host(&machine.host)?;
        let status = self
            .ssh
            .n2d_attached(&host.url, args, tty)
            .map_err(|source| RemoteError::Spawn { name: machine.host.clone(), source })?;
        match status {
            Some(super::ssh::SSH_FAILED) => Err(RemoteError::Unreachable {
                name: machine.host.clone(),
                url: host.url.clone(),
                detail: "ssh failed (its message is above)".into(),
            }
            .into()),
            Some(s) => Ok(s),
            None => Ok(1),
        }
    }

    /// Removes a remote machine: `n2d rm [-f] NAME` on its host, then this home's record of it.
    pub fn remove_remote(&self, machine: &RemoteMachine, force: bool) -> Result<()> {
        let host = self.remote_host(&machine.host)?;
        let mut args = vec!["rm".to_string()];
        if force {
            args.push("--force".into());
        }
        args.push(machine.name.to_string());
        match self.call_host(&machine.host, &host.url, &args, b"") {
            Ok(_) => {}
            // Already gone there: only the record is left to forget.
            Err(Error::Remote(e)) if matches!(&*e, RemoteError::Remote { message, .. } if message.contains("no machine named")) =>
                {}
            Err(e) => return Err(e),
        }
        self.home.remove_remote_machine(&machine.name)?;
        Ok(())
    }
}
