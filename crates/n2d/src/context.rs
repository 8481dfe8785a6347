//! What every command works with: the state home, the host-wide network state, the tool
//! runner and the hypervisor.

use anyhow::Result;
use n2d_exec::SystemRunner;
use n2d_net::host::HostNet;
use n2d_store::Home;
use n2d_vm::Qemu;
use std::path::PathBuf;

pub struct Ctx {
    pub home: Home,
    /// Bridges, leases and taps, shared with every other home on the host.
    pub net: HostNet,
    pub runner: SystemRunner,
    pub qemu: Qemu,
}

impl Ctx {
    pub fn from_env() -> Result<Ctx> {
        let qemu = Qemu::default();
        // Ctrl-C also ends a wait for the state lock held by another n2d.
        let home = Home::from_env()?.with_cancel(qemu.cancel.clone());
        let net = HostNet::system()?.with_cancel(qemu.cancel.clone());
        Ok(Ctx { home, net, runner: SystemRunner, qemu })
    }

    /// The home as the host-wide state names it: its real path, so two spellings of one home
    /// are one owner.
    pub fn home_key(&self) -> PathBuf {
        std::fs::canonicalize(self.home.root()).unwrap_or_else(|_| self.home.root().to_path_buf())
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
