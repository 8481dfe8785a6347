//! The real wiring of the orchestration library: the state home, the host-wide network state,
//! real tools (`SystemRunner`), QEMU and bollard, with progress drawn on the terminal.

use anyhow::Result;
use n2d_exec::SystemRunner;
use n2d_orchestrate::{Orchestrator, Settings};
use n2d_swarm::BollardConnector;
use n2d_vm::Qemu;
use std::sync::Arc;

/// What every command works with (see [`Orchestrator`]); derefs to it.
pub struct Ctx(pub Orchestrator<SystemRunner, Qemu, BollardConnector>);

impl std::ops::Deref for Ctx {
    type Target = Orchestrator<SystemRunner, Qemu, BollardConnector>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Ctx {
    /// The environment is read here, once, and nowhere else ([`Settings`]).
    pub fn from_env() -> Result<Ctx> {
        Ctx::from_vars(|k| std::env::var_os(k))
    }

    /// The real parts, with the environment's variables read through `get` (a map in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<Ctx> {
        let settings = Settings::from_vars(get).map_err(n2d_orchestrate::Error::from)?;
        Ok(Ctx(Orchestrator::system(&settings, Arc::new(crate::progress::Terminal))?))
    }

    /// The first Ctrl-C (or SIGTERM) stops waiting for VMs (or for the state lock) so that
    /// what a create made is rolled back; a second one exits at once.
    pub fn handle_interrupts(&self) -> Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for signal in [SIGINT, SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(signal, 130, self.hypervisor.cancel.clone())?;
            signal_hook::flag::register(signal, self.hypervisor.cancel.clone())?;
        }
        Ok(())
    }
}
