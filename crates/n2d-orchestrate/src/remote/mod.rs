//! Other hosts: `n2d host add|ls|rm` and the one call every remote verb goes through
//! ([`Orchestrator::call_host`]). A remote host runs its own n2d, with its own home, over
//! [`Ssh`]; this home records the host ([`n2d_store::RemoteHost`]) and which of its machines
//! run there ([`n2d_store::RemoteMachine`]). The CA stays here: its key never leaves this home.

pub mod fake;
pub mod link;
pub mod machines;
pub mod placement;
pub mod reach;
pub mod relay;
pub mod ssh;

pub use ssh::{OpenSsh, RemoteOutput, Ssh, SshFailure};

use crate::{Orchestrator, Result};
use n2d_spec::host::{HostName, SshUrl};
use n2d_store::RemoteHost;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// This n2d's version: a remote n2d must have the same one (the hidden verbs and JSON between
/// them are not a stable interface across versions).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("no host named {name}: `n2d host ls` lists the hosts, `n2d host add {name} ssh://[USER@]HOST` adds one")]
    NoSuchHost { name: HostName },
    #[error("a host named {name} already exists ({url}): remove it first with `n2d host rm {name}`")]
    HostExists { name: HostName, url: SshUrl },
    #[error("`local` is this machine, always there: give the other host another name")]
    LocalIsReserved,
    #[error(
        "host {name} ({url}) does not answer: {detail}: check that it is up and that sshd listens there"
    )]
    Unreachable { name: HostName, url: SshUrl, detail: String },
    #[error("host {name} ({url}): its SSH host key is not known here: check its fingerprint and connect once with `ssh {dest}{port}` to accept it, then try again")]
    HostKeyUnknown { name: HostName, url: SshUrl, dest: String, port: String },
    #[error("host {name} ({url}) presents another SSH host key than the one known here, so n2d refuses it: if the host was reinstalled, remove the old key with `ssh-keygen -R {host}` and connect once by hand to check and accept the new one")]
    HostKeyChanged { name: HostName, url: SshUrl, host: String },
    #[error("host {name} ({url}) refused the login: {detail}: n2d logs in with your SSH keys or agent only (never a password); install your key there with `ssh-copy-id {dest}`")]
    AuthRefused { name: HostName, url: SshUrl, detail: String, dest: String },
    #[error("host {name} ({url}) has no n2d on the PATH of a non-interactive SSH session: install it there (scripts/install.sh), version {VERSION}")]
    N2dMissing { name: HostName, url: SshUrl },
    #[error(
        "host {name} ({url}) runs n2d {remote}, this is n2d {VERSION}: install the same version on both"
    )]
    VersionMismatch { name: HostName, url: SshUrl, remote: String },
    #[error("host {name} ({url}) cannot run machines yet; its `n2d doctor` says:\n{fails}")]
    DoctorFailed { name: HostName, url: SshUrl, fails: String },
    #[error("host {name} has machines of this home: {machines}: remove them first (`n2d rm`), or forget them with `n2d host rm --force {name}` (their VMs stay there)")]
    HostInUse { name: HostName, machines: String },
    #[error("could not run ssh for host {name}")]
    Spawn {
        name: HostName,
        #[source]
        source: std::io::Error,
    },
    #[error("`n2d {command}` on host {name} failed{status}: {message}")]
    Remote { name: HostName, command: String, status: String, message: String },
    #[error("host {name} refused: {message}")]
    Refused { name: HostName, message: String },
    #[error("host {name} answered `n2d {command}` with what this n2d cannot read: {reason}")]
    BadAnswer { name: HostName, command: String, reason: String },
}

impl RemoteError {
    /// The user's to fix (exit status 2): a name, a key, an install. A host that does not answer
    /// or fails at run time is a failure.
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            RemoteError::Unreachable { .. }
                | RemoteError::Spawn { .. }
                | RemoteError::Remote { .. }
                | RemoteError::BadAnswer { .. }
        )
    }
}

/// A host's resources and load, as `n2d host ls` shows them (`n2d host info --json`, a hidden
/// verb, prints it on the host itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub version: String,
    pub cpus: u32,
    pub memory_total: u64,
    pub memory_available: u64,
    /// Machines in that host's home (all of them, whoever created them).
    pub machines: usize,
}

/// One row of `n2d host ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRow {
    pub name: HostName,
    /// `ssh://...`, or `-` for `local`.
    pub url: String,
    pub reachable: bool,
    pub info: Option<HostInfo>,
    /// Why the host did not answer.
    pub error: Option<String>,
}

/// Where machines placed on a host attach there (`host add --network --ip-range`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPlacement {
    pub network: Option<String>,
    pub ip_range: Option<n2d_spec::address::IpRange>,
}

/// What `host add` found.
#[derive(Debug, Clone)]
pub struct HostAdded {
    pub info: HostInfo,
    /// The remote doctor's warnings, `name: finding`.
    pub warnings: Vec<String>,
}

/// One line of `n2d doctor --json`.
#[derive(Debug, Deserialize)]
struct DoctorLine {
    name: String,
    status: String,
    finding: String,
    #[serde(default)]
    fix: Option<String>,
}

/// What a failed remote n2d said: its `error: ...` line and the causes after it, on one line
/// (all it printed when it has no such line).
pub fn error_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let from = lines.iter().position(|l| l.starts_with("error: ")).unwrap_or(0);
    let message = lines[from..].join(" ");
    message.strip_prefix("error: ").unwrap_or(&message).to_string()
}

/// Total and available memory from `/proc/meminfo` text, in bytes.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

impl<R, H, C> Orchestrator<R, H, C> {
    /// This machine as a host.
    pub fn local_host_info(&self) -> HostInfo {
        let (memory_total, memory_available) =
            parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
        HostInfo {
            version: VERSION.to_string(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_total,
            memory_available,
            machines: self.home.list_machines().len(),
        }
    }

    /// From now on, server certificates come from `issuer` (see [`relay`]).
    pub fn relay_certificates(&self, issuer: Arc<dyn relay::CertIssuer>) {
        *self.cert_issuer.lock().unwrap_or_else(|e| e.into_inner()) = Some(issuer);
    }

    /// The names of the recorded hosts (`local` is not one).
    pub fn remote_host_names(&self) -> Vec<HostName> {
        self.home.list_remote_hosts().into_iter().map(|(name, _)| name).collect()
    }

    /// The recorded host of that name.
    pub fn remote_host(&self, name: &HostName) -> Result<RemoteHost> {
        match self.home.load_remote_host(name)? {
            Some(host) => Ok(host),
            None => Err(RemoteError::NoSuchHost { name: name.clone() }.into()),
        }
    }

    /// Runs `n2d ARGS...` on the host and returns what it printed when it exits 0; ssh's own
    /// failures and a failing n2d become [`RemoteError`]s that name the host.
    pub fn call_host(&self, name: &HostName, url: &SshUrl, args: &[String], stdin: &[u8]) -> Result<Vec<u8>> {
        let out = self
            .ssh
            .n2d(url, args, stdin)
            .map_err(|source| RemoteError::Spawn { name: name.clone(), source })?;
        self.outcome(name, url, args.first().map_or("", String::as_str), out)
    }

    /// What a finished remote `n2d COMMAND` printed when it exited 0; else ssh's own failure
    /// (read from its message), or the remote n2d's error line and causes, naming the host.
    pub(crate) fn outcome(
        &self,
        name: &HostName,
        url: &SshUrl,
        command: &str,
        out: RemoteOutput,
    ) -> Result<Vec<u8>> {
        if let Some(failure) = ssh::classify(&out) {
            return Err(self.ssh_failure(name, url, failure).into());
        }
        match out.status {
            Some(0) => Ok(out.stdout),
            status => Err(RemoteError::Remote {
                name: name.clone(),
                command: command.to_string(),
                status: status.map_or(" (killed)".into(), |s| format!(" (exit status {s})")),
                message: error_message(&String::from_utf8_lossy(&out.stderr)),
            }
            .into()),
        }
    }

    /// `n2d ARGS...` on the host, ssh's own failures mapped; n2d's status is the caller's.
    pub(crate) fn ssh_n2d(
        &self,
        name: &HostName,
        url: &SshUrl,
        args: &[String],
        stdin: &[u8],
    ) -> Result<RemoteOutput> {
        let out = self
            .ssh
            .n2d(url, args, stdin)
            .map_err(|source| RemoteError::Spawn { name: name.clone(), source })?;
        match ssh::classify(&out) {
            None => Ok(out),
            Some(failure) => Err(self.ssh_failure(name, url, failure).into()),
        }
    }

    fn ssh_failure(&self, name: &HostName, url: &SshUrl, failure: SshFailure) -> RemoteError {
        let (name, url) = (name.clone(), url.clone());
        match failure {
            SshFailure::HostKeyUnknown => RemoteError::HostKeyUnknown {
                dest: url.destination(),
                port: url.port.map_or(String::new(), |p| format!(" -p {p}")),
                name,
                url,
            },
            SshFailure::HostKeyChanged => {
                let host = match url.port {
                    Some(p) => format!("'[{}]:{p}'", url.host),
                    None => url.host.clone(),
                };
                RemoteError::HostKeyChanged { name, url, host }
            }
            SshFailure::AuthRefused(detail) => {
                RemoteError::AuthRefused { dest: url.destination(), name, url, detail }
            }
            SshFailure::Unreachable(detail) => RemoteError::Unreachable { name, url, detail },
            SshFailure::N2dMissing => RemoteError::N2dMissing { name, url },
        }
    }

    /// Checks a host (SSH without prompts, the same n2d version, a passing doctor) and records
    /// it. Nothing is recorded unless every check passes.
    pub fn register_host(
        &self,
        name: &HostName,
        url: &SshUrl,
        placement: HostPlacement,
    ) -> Result<HostAdded> {
        if name.is_local() {
            return Err(RemoteError::LocalIsReserved.into());
        }
        if let Some(existing) = self.home.load_remote_host(name)? {
            return Err(RemoteError::HostExists { name: name.clone(), url: existing.url }.into());
        }
        let step = self.progress.step(&format!("Checking host {name} ({url})"));
        let version = self.call_host(name, url, &["--version".into()], b"")?;
        let version = String::from_utf8_lossy(&version);
        let remote = version.trim().strip_prefix("n2d ").unwrap_or(version.trim()).to_string();
        if remote != VERSION {
            return Err(RemoteError::VersionMismatch { name: name.clone(), url: url.clone(), remote }.into());
        }
        step.set("running its n2d doctor");
        // doctor exits 1 when a check fails; its JSON says which.
        let doctor = self.ssh_n2d(name, url, &["doctor".into(), "--json".into()], b"")?;
        let lines: Vec<DoctorLine> =
            serde_json::from_slice(&doctor.stdout).map_err(|e| RemoteError::BadAnswer {
                name: name.clone(),
                command: "doctor --json".into(),
                reason: e.to_string(),
            })?;
        let said = |l: &DoctorLine| match &l.fix {
            Some(fix) => format!("  {}: {} ({fix})", l.name, l.finding),
            None => format!("  {}: {}", l.name, l.finding),
        };
        let fails: Vec<String> = lines.iter().filter(|l| l.status == "fail").map(said).collect();
        if !fails.is_empty() {
            return Err(RemoteError::DoctorFailed {
                name: name.clone(),
                url: url.clone(),
                fails: fails.join("\n"),
            }
            .into());
        }
        let warnings = lines
            .iter()
            .filter(|l| l.status == "warn")
            .map(|l| format!("{}: {}", l.name, l.finding))
            .collect();
        let info = self.host_info(name, url)?;
        let HostPlacement { network, ip_range } = placement;
        self.home.save_remote_host(&RemoteHost {
            name: name.clone(),
            url: url.clone(),
            version: remote,
            network,
            ip_range,
            link_index: None,
        })?;
        step.done(&format!("host {name} added"));
        Ok(HostAdded { info, warnings })
    }

    /// The host's resources, asked over SSH.
    pub fn host_info(&self, name: &HostName, url: &SshUrl) -> Result<HostInfo> {
        let args = ["host".into(), "info".into(), "--json".into()];
        let out = self.call_host(name, url, &args, b"")?;
        Ok(serde_json::from_slice(&out).map_err(|e| RemoteError::BadAnswer {
            name: name.clone(),
            command: "host info --json".into(),
            reason: e.to_string(),
        })?)
    }

    /// `local` and every recorded host, the remote ones asked in parallel; a host that does not
    /// answer is a row that says why.
    pub fn list_hosts(&self) -> Vec<HostRow>
    where
        R: Sync,
        H: Sync,
        C: Sync,
    {
        let local = HostRow {
            name: HostName::local(),
            url: "-".into(),
            reachable: true,
            info: Some(self.local_host_info()),
            error: None,
        };
        let recorded = self.home.list_remote_hosts();
        let remote: Vec<HostRow> = std::thread::scope(|scope| {
            let asks: Vec<_> = recorded
                .iter()
                .map(|(name, record)| {
                    scope.spawn(move || match record {
                        Err(e) => HostRow {
                            name: name.clone(),
                            url: "?".into(),
                            reachable: false,
                            info: None,
                            error: Some(e.to_string()),
                        },
                        Ok(host) => match self.host_info(&host.name, &host.url) {
                            Ok(info) => HostRow {
                                name: name.clone(),
                                url: host.url.to_string(),
                                reachable: true,
                                info: Some(info),
                                error: None,
                            },
                            Err(e) => HostRow {
                                name: name.clone(),
                                url: host.url.to_string(),
                                reachable: false,
                                info: None,
                                error: Some(e.to_string()),
                            },
                        },
                    })
                })
                .collect();
            asks.into_iter().map(|a| a.join().expect("a host probe does not panic")).collect()
        });
        std::iter::once(local).chain(remote).collect()
    }

    /// Forgets a host. With machines of this home on it, refused unless `force` (which forgets
    /// them too, and returns their names; their VMs keep running there).
    pub fn forget_host(&self, name: &HostName, force: bool) -> Result<Vec<n2d_spec::machine::MachineName>> {
        if name.is_local() {
            return Err(RemoteError::LocalIsReserved.into());
        }
        self.remote_host(name)?;
        let machines: Vec<_> = self
            .home
            .list_remote_machines()
            .into_iter()
            .filter_map(|(n, m)| m.ok().filter(|m| &m.host == name).map(|_| n))
            .collect();
        if !machines.is_empty() && !force {
            let machines = machines.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
            return Err(RemoteError::HostInUse { name: name.clone(), machines }.into());
        }
        for machine in &machines {
            self.home.remove_remote_machine(machine)?;
        }
        self.home.remove_remote_host(name)?;
        Ok(machines)
    }
}

#[cfg(test)]
mod tests;
