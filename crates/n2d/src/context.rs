//! What every command works with: the state home, the tool runner and the hypervisor.

use anyhow::{Context as _, Result};
use n2d_exec::SystemRunner;
use n2d_store::Home;
use n2d_vm::Qemu;
use std::path::PathBuf;

pub struct Ctx {
    pub home: Home,
    pub runner: SystemRunner,
    pub qemu: Qemu,
}

impl Ctx {
    pub fn from_env() -> Result<Ctx> {
        Ok(Ctx { home: Home::from_env()?, runner: SystemRunner, qemu: Qemu::default() })
    }

    /// The first Ctrl-C (or SIGTERM) stops waiting for VMs so that what a create made is rolled
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

/// Where the guest's init binary is: `--init`, `$N2D_INIT`, next to `n2d`, `../lib/n2d/`,
/// or the workspace's musl build output (for `cargo run`).
pub fn find_init_binary(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit.or_else(|| std::env::var_os("N2D_INIT").map(PathBuf::from)) {
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot locate the n2d executable")?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let candidates = [
        dir.join("n2d-init"),
        dir.join("../lib/n2d/n2d-init"),
        dir.join("../x86_64-unknown-linux-musl/release/n2d-init"),
        dir.join("../../x86_64-unknown-linux-musl/release/n2d-init"),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "cannot find the n2d-init binary next to {}: build it with `cargo build --release -p n2d-init --target x86_64-unknown-linux-musl` or point N2D_INIT at it",
            exe.display()
        )
    })
}
