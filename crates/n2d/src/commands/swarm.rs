//! `n2d swarm ...` (wired to n2d-swarm).

use crate::context::Ctx;
use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum SwarmCommand {
    /// List swarms
    Ls,
}

pub fn run(_ctx: &Ctx, _cmd: SwarmCommand) -> Result<()> {
    Ok(())
}
