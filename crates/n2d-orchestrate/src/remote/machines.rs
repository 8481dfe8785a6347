//! Machines of this home on other hosts: made by the host's own n2d (`create --tls-relay`
//! there, with this home's CA issuing the certificate: see [`super::relay`]), reached by the
//! docker CLI at their own address with this home's client certificate, and managed by
//! running the verb on their host.

use super::relay::{parse_request, IssuedCert};
use super::RemoteError;
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

/// `n2d create`'s flags on `host` for a machine like `spec` (its resources, labels and
/// exposure; the network and addresses are the host's own, from `host add`, and the image the
/// host's default).
pub fn remote_create_args(
    spec: &n2d_spec::machine::MachineSpec,
    host: &n2d_store::RemoteHost,
) -> Vec<String> {
    let mut args = vec![
        "--cpus".to_string(),
        spec.cpus.to_string(),
        "--memory".into(),
        spec.memory.to_string(),
        "--disk".into(),
        spec.disk.to_string(),
    ];
    if let Some(network) = &host.network {
        args.extend(["--network".into(), network.clone()]);
        if let Some(range) = host.ip_range {
            args.extend(["--ip-range".into(), range.to_string()]);
        }
    }
    for (key, value) in &spec.labels {
        args.extend(["--label".into(), format!("{key}={value}")]);
    }
    if spec.expose {
        args.push("--expose".into());
    }
    args
}

impl<R: n2d_exec::Runner, H, C> Orchestrator<R, H, C> {
    /// Makes swarm node `spec` on `host` (see [`Self::create_on_host`]) and records it as the
    /// swarm's; returns its record.
    pub(crate) fn create_remote_node(
        &self,
        host: &HostName,
        spec: &n2d_spec::machine::MachineSpec,
        swarm: &str,
    ) -> Result<n2d_store::MachineRecord> {
        let mut record = self.remote_host(host)?;
        // A node of a linked swarm attaches to the host's link bridge, in its own subnet.
        if spec.bridge == n2d_net::wireguard::LINK_BRIDGE {
            let index = self.link_index(host)?;
            record.network = Some(n2d_net::wireguard::LINK_BRIDGE.to_string());
            record.ip_range = Some(n2d_net::wireguard::machine_range(index));
        }
        let args = remote_create_args(spec, &record);
        let mut machine = self.create_on_host(host, &spec.name, &args)?;
        machine.swarm = Some(swarm.to_string());
        machine.record.swarm = Some(swarm.to_string());
        self.home.save_remote_machine(&machine)?;
        Ok(machine.record)
    }

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
        if self.home.machine_name_taken(name)? {
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
        let out =
            super::RemoteOutput { status, stdout: Vec::new(), stderr: error_lines.join("\n").into_bytes() };
        // The remote's usage errors (exit 2) stay usage errors here.
        if status == Some(2) && super::ssh::classify(&out).is_none() {
            let message = super::error_message(&String::from_utf8_lossy(&out.stderr));
            return Err(RemoteError::Refused { name: host.clone(), message }.into());
        }
        self.outcome(host, &record.url, "create", out)?;
        let ip = output.iter().find_map(|l| l.trim().parse().ok()).ok_or_else(|| RemoteError::BadAnswer {
            name: host.clone(),
            command: "create".into(),
            reason: format!("no address in its output: {:?}", output.join(" / ")),
        })?;
        // Its record, as its host keeps it: what a swarm of this home needs to reach it.
        let record = match self.fetch_remote_record(host, &record.url, name) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.call_host(
                    host,
                    &record.url,
                    &["rm".into(), "--force".into(), name.to_string()],
                    b"",
                );
                return Err(e);
            }
        };
        let machine = RemoteMachine { name: name.clone(), host: host.clone(), ip, swarm: None, record };
        self.home.save_remote_machine(&machine)?;
        Ok(machine)
    }

    /// `n2d inspect NAME` on the host, as a record (without the keys inspect adds).
    fn fetch_remote_record(
        &self,
        host: &HostName,
        url: &n2d_spec::host::SshUrl,
        name: &MachineName,
    ) -> Result<n2d_store::MachineRecord> {
        let out = self.call_host(host, url, &["inspect".into(), name.to_string()], b"")?;
        let bad =
            |reason: String| RemoteError::BadAnswer { name: host.clone(), command: "inspect".into(), reason };
        let mut value: serde_json::Value = serde_json::from_slice(&out).map_err(|e| bad(e.to_string()))?;
        if let Some(object) = value.as_object_mut() {
            for added in ["state", "endpoint", "dir"] {
                object.remove(added);
            }
        }
        let bytes = serde_json::to_vec(&value).expect("serialisable");
        let record = n2d_store::MachineRecord::from_json(&bytes)
            .map_err(|e| bad(e.to_string()))?
            .map_err(|e| bad(e.to_string()))?;
        Ok(record)
    }

    /// A swarm node's record, wherever it runs: this host's record, or the one its host keeps.
    pub fn node_record(&self, name: &MachineName) -> Option<n2d_store::MachineRecord> {
        self.home
            .load_machine(name)
            .ok()
            .or_else(|| self.home.load_remote_machine(name).ok().flatten().map(|m| m.record))
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

impl<R: n2d_exec::Runner, H: n2d_vm::Hypervisor, C: n2d_swarm::Connector> Orchestrator<R, H, C> {
    /// Removes a swarm node's machine, wherever it runs (killed if running).
    pub(crate) fn remove_node_machine(&self, name: &MachineName) -> Result<()> {
        match self.home.load_remote_machine(name)? {
            Some(remote) => self.remove_remote(&remote, true),
            None => self.remove_machine(name, true),
        }
    }

    /// [`Self::remove_node_machine`], but a node whose host does not answer is only forgotten
    /// here (said, with how to remove it there): a swarm can go while one of its hosts is lost.
    pub(crate) fn remove_or_forget_node(&self, name: &MachineName) -> Result<()> {
        let Some(remote) = self.home.load_remote_machine(name)? else {
            return self.remove_machine(name, true);
        };
        match self.remove_remote(&remote, true) {
            Err(Error::Remote(e)) if matches!(*e, RemoteError::Unreachable { .. }) => {
                self.progress.say(&format!(
                    "warning: {name} could not be removed on host {}: {e}; forgotten here (remove it there with `n2d rm -f {name}`)",
                    remote.host
                ));
                Ok(self.home.remove_remote_machine(name)?)
            }
            other => other,
        }
    }

    /// Sends the docker-save archive at `archive` to `host` once, whose n2d loads it into its
    /// machines `names` (the hidden `n2d host load`); returns each node's loaded images.
    pub(crate) fn load_on_host(
        &self,
        host: &HostName,
        names: &[MachineName],
        archive: &std::path::Path,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let record = self.remote_host(host)?;
        let mut args = vec!["host".to_string(), "load".to_string()];
        args.extend(names.iter().map(|n| n.to_string()));
        let spawn = |source| RemoteError::Spawn { name: host.clone(), source };
        let session = self.ssh.session(&record.url, &args).map_err(spawn)?;
        let mut file = std::fs::File::open(archive)
            .map_err(|source| Error::ReadFile { path: archive.to_path_buf(), source })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.progress.say(&format!(
            "  {host}: sending the archive ({} MB) once for {}",
            size / 1_000_000,
            names.len()
        ));
        let mut stdin = session.stdin;
        let (out, errors) = std::thread::scope(|scope| {
            let send = scope.spawn(move || {
                let _ = std::io::copy(&mut file, &mut stdin);
            });
            let errors = scope.spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut BufReader::new(session.stderr), &mut text);
                text
            });
            let mut out = Vec::new();
            let _ = std::io::Read::read_to_end(&mut BufReader::new(session.stdout), &mut out);
            let _ = send.join();
            (out, errors.join().unwrap_or_default())
        });
        let status = (session.wait)().map_err(spawn)?;
        let output = super::RemoteOutput { status, stdout: out, stderr: errors.into_bytes() };
        let stdout = self.outcome(host, &record.url, "host load", output)?;
        serde_json::from_slice(&stdout).map_err(|e| {
            RemoteError::BadAnswer { name: host.clone(), command: "host load".into(), reason: e.to_string() }
                .into()
        })
    }

    /// The hidden `n2d host load NAME...` on a host: the archive read from `input` (into a
    /// file in this home, removed after) is loaded into these machines of this home.
    pub fn load_into_machines(
        &self,
        names: &[MachineName],
        input: &mut dyn std::io::Read,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let path = self.home.root().join(format!(".load-{}.tar", std::process::id()));
        let result = (|| {
            let mut file = std::fs::File::create(&path)
                .map_err(|source| Error::ReadFile { path: path.clone(), source })?;
            std::io::copy(input, &mut file)
                .map_err(|source| Error::ReadFile { path: path.clone(), source })?;
            drop(file);
            n2d_swarm::check_docker_save_archive(&path).map_err(|e| Error::Usage(e.to_string()))?;
            let mut nodes = Vec::new();
            for name in names {
                let m = self.home.load_machine(name)?;
                nodes.push((name.to_string(), self.connect(&self.endpoint(&m), 3600)?));
            }
            Ok(crate::runtime()?.block_on(n2d_swarm::load_image_everywhere(&nodes, &path, |_| {}))?)
        })();
        let _ = std::fs::remove_file(&path);
        result
    }
}
