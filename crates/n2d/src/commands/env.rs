//! `n2d env`: the environment that points the docker CLI at a machine (computed and quoted by
//! `n2d_orchestrate::contexts::env`).

use crate::args::Shell;
use crate::context::Ctx;
use anyhow::Result;
use n2d_orchestrate::contexts::env;

/// The shell of `--shell`, as the orchestration names it.
pub fn shell(shell: Shell) -> env::Shell {
    match shell {
        Shell::Bash => env::Shell::Bash,
        Shell::Fish => env::Shell::Fish,
        Shell::Powershell => env::Shell::Powershell,
    }
}

pub fn unset(shell: Shell) -> Result<()> {
    out!("{}", env::render_unset(self::shell(shell)))?;
    Ok(())
}

pub fn machine_env(ctx: &Ctx, name: &n2d_spec::machine::MachineName, shell: Shell) -> Result<()> {
    out!("{}", ctx.machine_env(name)?.render(self::shell(shell)))?;
    Ok(())
}
