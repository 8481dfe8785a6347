//! The real wiring of the orchestration library: the state home, the host-wide network state,
//! real tools (`SystemRunner`), QEMU and bollard, with progress drawn on the terminal.

use anyhow::Result;
use n2d_orchestrate::image::GuestInit;
use n2d_orchestrate::preflight::SystemProbe;
use n2d_orchestrate::{Orchestrator, Settings, SystemOrchestrator};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

/// What every command works with (see [`Orchestrator`]); derefs to it, for its methods only
/// (its parts are its own).
pub struct Ctx {
    orchestrator: SystemOrchestrator,
    /// `$N2D_INIT`: the guest init to use instead of the one built into n2d.
    init_env: Option<PathBuf>,
    /// The guest init an image build would use, for the checks ([`Ctx::probe`]).
    probe_init: Box<dyn Fn() -> Result<GuestInit, String>>,
}

impl std::ops::Deref for Ctx {
    type Target = SystemOrchestrator;
    fn deref(&self) -> &Self::Target {
        &self.orchestrator
    }
}

impl Ctx {
    /// The real parts, with the environment's variables read through `get`, here, once, and
    /// nowhere else ([`Settings`], `$N2D_INIT`): `std::env::var_os` in `n2d`, a map in tests.
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> Result<Ctx> {
        let init_env = get("N2D_INIT").map(PathBuf::from);
        let settings = Settings::from_vars(get).map_err(n2d_orchestrate::Error::from)?;
        let probe_env = init_env.clone();
        Ok(Ctx {
            orchestrator: Orchestrator::system(&settings, Arc::new(crate::progress::Terminal))?,
            init_env,
            probe_init: Box::new(move || {
                crate::guest_init::guest_init(None, probe_env.clone()).map_err(|e| format!("{e:#}"))
            }),
        })
    }

    /// `$N2D_INIT`, as read by [`Ctx::from_vars`].
    pub fn init_env(&self) -> Option<PathBuf> {
        self.init_env.clone()
    }

    /// This host as the checks see it (`n2d doctor`, the checks before a create).
    pub fn probe(&self) -> SystemProbe<'_> {
        self.system_probe(&*self.probe_init)
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
