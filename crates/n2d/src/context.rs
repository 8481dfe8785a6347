//! What every command works with: the state home, the tool runner and the hypervisor.

use anyhow::Result;
use n2d_exec::SystemRunner;
use n2d_store::Home;
use n2d_vm::Qemu;

pub struct Ctx {
    pub home: Home,
    pub runner: SystemRunner,
    pub qemu: Qemu,
}

impl Ctx {
    pub fn from_env() -> Result<Ctx> {
        let qemu = Qemu::default();
        // Ctrl-C also ends a wait for the state lock held by another n2d.
        let home = Home::from_env()?.with_cancel(qemu.cancel.clone());
        Ok(Ctx { home, runner: SystemRunner, qemu })
    }

    /// The first Ctrl-C (or SIGTERM) stops waiting for VMs (or for the state lock) so that what a create made is rolled
    /// back; a second one exits at once.
    pub fn handle_interrupts(&self) -> Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for signal in [SIGINT, SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(signal, 130, self.qemu.cancel.clone())?;
            signal_hook::flag::register(signal, self.qemu.cancel.clone())?;
        }
        Ok(())
    }
}
