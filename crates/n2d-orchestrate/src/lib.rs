//! The orchestration of n2d as a library: creating, starting, stopping and removing machines
//! ([`machine`]) and forming, scaling and removing swarms of them ([`swarm`]), with what a failed
//! create made undone ([`Rollback`]), with the host checks of `n2d doctor` and before a create
//! ([`preflight`]) and the docker contexts and `n2d env` that reach the engines ([`contexts`]).
//!
//! Everything goes through [`Orchestrator`], generic over its three seams to the host: the tool
//! runner ([`n2d_exec::Runner`]: `ip`, `iptables`, `qemu-img`), the hypervisor
//! ([`n2d_vm::Hypervisor`]) and the Docker API client factory ([`n2d_swarm::Connector`]). The CLI
//! wires the real ones; the unit tests use fakes (`n2d_net::testing::FakeHost`,
//! `n2d_vm::fake::FakeHypervisor`, `n2d_swarm::fake::Cluster`), so every failure path runs
//! without root, QEMU or Docker. Nothing here prints: what the user should see goes through
//! [`Progress`].

#![forbid(unsafe_code)]

pub mod adopt;
pub mod certs;
pub mod contexts;
pub mod error;
pub mod exec;
pub mod faults;
pub mod image;
pub mod inventory;
pub mod machine;
pub mod ports;
pub mod preflight;
pub mod progress;
pub mod recover;
pub mod remote;
pub mod rollback;
pub mod settings;
pub mod start_all;
pub mod suspend;
pub mod swarm;
pub mod swarm_request;
pub mod templates;
pub mod upgrade;

#[cfg(test)]
mod tests;

pub use error::{ConsoleLines, Error, ErrorKind, Result};
pub use n2d_net::wireguard::{LinkConfig, Unlinked};
/// What the CLI reads of records and VMs, at the door.
pub use n2d_store::{
    AdoptedHost, Fault, FaultRecord, MachineRecord, RemoteHost, RemoteMachine, SwarmRecord, DIR_MODE,
    FILE_MODE,
};
pub use n2d_vm::{StopOutcome, VmState};
pub use progress::{Progress, ProgressStep, Quiet};
pub use rollback::Rollback;
pub use settings::{Settings, SettingsError};

use n2d_net::host::HostNet;
use n2d_store::{Home, Journal, KillPoints, Operation};
use n2d_swarm::{Endpoint, RemoveTimeouts, TlsPaths};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Waits that tests shorten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The first pause between Docker pings after boot; doubles for each of five tries.
    pub ping_backoff: Duration,
    /// Seconds each Docker API request may take while forming a swarm.
    pub form_request_secs: u64,
    /// Waits of a scale-down (drain, then Down).
    pub remove: RemoveTimeouts,
    /// Waits when a failed scale-up takes its new nodes back out of the swarm.
    pub evict: RemoveTimeouts,
    /// Waits of a node's restart in `swarm upgrade` (drained; Ready again).
    pub restart: n2d_swarm::RestartTimeouts,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ping_backoff: Duration::from_millis(500),
            form_request_secs: 120,
            remove: RemoveTimeouts::default(),
            evict: RemoveTimeouts { drain: Duration::from_secs(10), down: Duration::from_secs(30) },
            restart: n2d_swarm::RestartTimeouts::default(),
        }
    }
}

/// The state home, the host-wide network state and the three seams (see the crate docs). Its
/// parts are its own: callers go through its methods (this crate's tests set them directly).
pub struct Orchestrator<R, H, C> {
    home: Home,
    /// Bridges, leases and taps, shared with every other home on the host.
    net: HostNet,
    runner: R,
    hypervisor: H,
    docker: C,
    progress: Box<dyn Progress>,
    timing: Timing,
    /// Set by the first Ctrl-C: waits end and what a create made is rolled back.
    cancel: Arc<AtomicBool>,
    /// Test-only kill points (`N2D_TEST_KILL_AT`), passed by every journalled step.
    kill: KillPoints,
    /// Where tools are looked for before they are run (`PATH`, from [`Settings`]).
    search_path: n2d_exec::SearchPath,
    /// Cold boots only (`--cold`): no warm template is made or cloned.
    cold: AtomicBool,
    /// Held while a warm template is looked for or made: one is made once, whoever asks.
    template_gate: std::sync::Mutex<()>,
    /// The way to other hosts (`n2d host add`, `create --on`).
    ssh: Arc<dyn remote::Ssh>,
    /// Set on a host that creates a machine for another home (`create --tls-relay`): that
    /// home's CA issues the server certificate (`remote::relay`).
    cert_issuer: std::sync::Mutex<Option<Arc<dyn remote::relay::CertIssuer>>>,
}

/// The orchestrator with the real parts (see [`Orchestrator::system`]).
pub type SystemOrchestrator = Orchestrator<n2d_exec::SystemRunner, n2d_vm::Qemu, n2d_swarm::BollardConnector>;

impl SystemOrchestrator {
    /// The real parts, wired from `settings`: the home (checked to be the caller's), the
    /// host-wide network state, real tools, QEMU and bollard. What the libraries have to say
    /// while they work (a wait for a lock, a warning) goes to `progress`, like the rest.
    pub fn system(settings: &Settings, progress: Arc<dyn Progress>) -> Result<Self> {
        let notes = {
            let progress = progress.clone();
            n2d_store::Notes::new(move |line| progress.say(line))
        };
        let hypervisor = n2d_vm::Qemu::new(settings.qemu.clone());
        // Ctrl-C also ends a wait for the state lock held by another n2d.
        let cancel = hypervisor.cancel.clone();
        let home = Home::open(&settings.home, settings.lock_timeout)?
            .with_cancel(cancel.clone())
            .with_notes(notes.clone());
        let net = HostNet::system(&settings.run_dir)?
            .with_cancel(cancel.clone())
            .with_lock_timeout(settings.lock_timeout)
            .with_notes(notes.clone());
        Ok(Orchestrator {
            home,
            net,
            runner: n2d_exec::SystemRunner,
            hypervisor,
            docker: n2d_swarm::BollardConnector,
            progress: Box::new(progress),
            timing: Timing::default(),
            cancel,
            kill: KillPoints::parse(settings.kill_at.as_deref()).with_notes(notes),
            search_path: settings.search_path.clone(),
            cold: AtomicBool::new(false),
            template_gate: Default::default(),
            ssh: Arc::new(remote::OpenSsh { config: settings.ssh_config.clone() }),
            cert_issuer: Default::default(),
        })
    }
}

impl<R, H, C> Orchestrator<R, H, C> {
    /// The flag Ctrl-C sets (the CLI's signal handlers set it).
    pub fn cancel_flag(&self) -> &Arc<AtomicBool> {
        &self.cancel
    }
}

impl<R, H, C> Orchestrator<R, H, C> {
    /// Writes the journal of `op` (see `n2d_store::intents`); the caller holds the state lock
    /// when the target must be checked first.
    pub fn begin(&self, op: Operation) -> Result<Journal> {
        Ok(self.home.begin_intent(op, &self.kill)?)
    }

    /// Ctrl-C was pressed.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The home as the host-wide state names it: its real path, so two spellings of one home
    /// are one owner.
    pub fn home_key(&self) -> PathBuf {
        std::fs::canonicalize(self.home.root()).unwrap_or_else(|_| self.home.root().to_path_buf())
    }

    /// How to reach a machine's engine: TLS with the user's client certificate, or plain HTTP
    /// for `--insecure-tcp` machines.
    pub fn endpoint(&self, record: &MachineRecord) -> Endpoint {
        let certs = self.home.certs_dir();
        // A machine made for another home presents that home's server certificate.
        let issuer_ca = self.home.machine_dir(&record.spec.name).join(remote::relay::ISSUER_CA_FILE);
        let tls = (!record.spec.insecure_tcp).then(|| TlsPaths {
            ca: if issuer_ca.is_file() { issuer_ca } else { certs.join(n2d_pki::CA_CERT) },
            cert: certs.join(n2d_pki::CLIENT_CERT),
            key: certs.join(n2d_pki::CLIENT_KEY),
        });
        Endpoint { name: record.spec.name.to_string(), ip: record.ip, docker_host: record.docker_host(), tls }
    }
}

impl<R, H, C: n2d_swarm::Connector> Orchestrator<R, H, C> {
    /// A Docker API client for `ep`; `timeout_secs` bounds each request.
    pub fn connect(&self, ep: &Endpoint, timeout_secs: u64) -> Result<C::Api> {
        self.docker.connect(ep, timeout_secs).map_err(|source| Error::Connect {
            name: ep.name.clone(),
            endpoint: ep.docker_host.clone(),
            source,
        })
    }
}

/// A runtime for the Docker API calls (the orchestration itself is synchronous).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(Error::Runtime)
}
