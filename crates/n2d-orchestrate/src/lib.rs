//! The orchestration of n2d as a library: creating, starting, stopping and removing machines
//! ([`machine`]) and forming, scaling and removing swarms of them ([`swarm`]), with what a failed
//! create made undone ([`Rollback`]).
//!
//! Everything goes through [`Orchestrator`], generic over its three seams to the host: the tool
//! runner ([`n2d_exec::Runner`]: `ip`, `iptables`, `qemu-img`), the hypervisor
//! ([`n2d_vm::Hypervisor`]) and the Docker API client factory ([`n2d_swarm::Connector`]). The CLI
//! wires the real ones; the unit tests use fakes (`n2d_net::testing::FakeHost`,
//! `n2d_vm::fake::FakeHypervisor`, `n2d_swarm::fake::Cluster`), so every failure path runs
//! without root, QEMU or Docker. Nothing here prints: what the user should see goes through
//! [`Progress`].

pub mod certs;
pub mod error;
pub mod machine;
pub mod ports;
pub mod progress;
pub mod recover;
pub mod rollback;
pub mod start_all;
pub mod swarm;

#[cfg(test)]
mod tests;

pub use error::{ConsoleLines, Error, Result};
pub use progress::{Progress, ProgressStep, Quiet};
pub use rollback::Rollback;

use n2d_net::host::HostNet;
use n2d_store::{Home, Journal, KillPoints, MachineRecord, Operation};
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
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ping_backoff: Duration::from_millis(500),
            form_request_secs: 120,
            remove: RemoveTimeouts::default(),
            evict: RemoveTimeouts { drain: Duration::from_secs(10), down: Duration::from_secs(30) },
        }
    }
}

/// The state home, the host-wide network state and the three seams (see the crate docs).
pub struct Orchestrator<R, H, C> {
    pub home: Home,
    /// Bridges, leases and taps, shared with every other home on the host.
    pub net: HostNet,
    pub runner: R,
    pub hypervisor: H,
    pub docker: C,
    pub progress: Box<dyn Progress>,
    pub timing: Timing,
    /// Set by the first Ctrl-C: waits end and what a create made is rolled back.
    pub cancel: Arc<AtomicBool>,
    /// Test-only kill points (`N2D_TEST_KILL_AT`), passed by every journalled step.
    pub kill: KillPoints,
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
        let tls = (!record.spec.insecure_tcp).then(|| TlsPaths {
            ca: certs.join(n2d_pki::CA_CERT),
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
