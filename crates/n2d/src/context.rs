//! The real wiring of the orchestration library: the state home, the host-wide network state,
//! real tools (`SystemRunner`), QEMU and bollard, with progress drawn on the terminal.

use anyhow::Result;
use n2d_orchestrate::preflight::SystemProbe;
use n2d_orchestrate::{Orchestrator, Settings, SystemOrchestrator};
use std::sync::Arc;

/// What every command works with (see [`Orchestrator`]); derefs to it, for its methods only
/// (its parts are its own).
pub struct Ctx(SystemOrchestrator);

impl std::ops::Deref for Ctx {
    type Target = SystemOrchestrator;
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

    /// This host as the checks see it (`n2d doctor`, the checks before a create).
    pub fn probe(&self) -> SystemProbe<'_> {
        self.system_probe(&guest_init_for_probe)
    }

    /// The first Ctrl-C (or SIGTERM) stops waiting for VMs (or for the state lock) so that
    /// what a create made is rolled back; a second one exits at once.
    pub fn handle_interrupts(&self) -> Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for signal in [SIGINT, SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(signal, 130, self.cancel_flag().clone())?;
            signal_hook::flag::register(signal, self.cancel_flag().clone())?;
        }
        Ok(())
    }
}

/// The guest init an image build would use (built into n2d, or `$N2D_INIT`), for the checks.
fn guest_init_for_probe() -> Result<n2d_orchestrate::image::GuestInit, String> {
    crate::guest_init::guest_init(None).map_err(|e| format!("{e:#}"))
}
