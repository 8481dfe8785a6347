//! The real wiring of the orchestration library: the state home, the host-wide network state,
//! real tools (`SystemRunner`), QEMU and bollard, with progress drawn on the terminal.

use anyhow::Result;
use n2d_exec::SystemRunner;
use n2d_net::host::HostNet;
use n2d_orchestrate::preflight::SystemProbe;
use n2d_orchestrate::Orchestrator;
use n2d_store::{Home, KillPoints};
use n2d_swarm::BollardConnector;
use n2d_vm::Qemu;

/// What every command works with (see [`Orchestrator`]); derefs to it, for its methods only
/// (its parts are its own).
pub struct Ctx(Orchestrator<SystemRunner, Qemu, BollardConnector>);

impl std::ops::Deref for Ctx {
    type Target = Orchestrator<SystemRunner, Qemu, BollardConnector>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Ctx {
    pub fn from_env() -> Result<Ctx> {
        let qemu = Qemu::default();
        // Ctrl-C also ends a wait for the state lock held by another n2d.
        let home = Home::from_env()?.with_cancel(qemu.cancel.clone());
        let net = HostNet::system()?.with_cancel(qemu.cancel.clone());
        let cancel = qemu.cancel.clone();
        Ok(Ctx(Orchestrator::new(
            home,
            net,
            SystemRunner,
            qemu,
            BollardConnector,
            Box::new(crate::progress::Terminal),
            cancel,
            KillPoints::from_env(),
        )))
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
fn guest_init_for_probe() -> Result<n2d_image::GuestInit, String> {
    crate::guest_init::guest_init(None).map_err(|e| format!("{e:#}"))
}
