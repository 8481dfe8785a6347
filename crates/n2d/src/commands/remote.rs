//! Verbs on machines that run on other hosts (`create --on`): most run on the machine's host,
//! by its n2d, with this command line as typed; `ip`, `env` and `ls` answer here from this
//! home's record; `rm` also forgets the record and the docker context.

use crate::args::Command;
use crate::context::Ctx;
use crate::error::CommandStatus;
use anyhow::Result;
use n2d_orchestrate::RemoteMachine;
use n2d_spec::machine::MachineName;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::OnceLock;

/// The command line as typed, without the program's name (set by `main_with`).
pub static ARGS: OnceLock<Vec<OsString>> = OnceLock::new();

/// The remote machines among `names`, all on one host; `None` when none is remote.
fn remote_of(ctx: &Ctx, names: &[MachineName]) -> Result<Option<Vec<RemoteMachine>>> {
    let mut remote = Vec::new();
    for name in names {
        if let Some(m) = ctx.remote_machine(name)? {
            remote.push(m);
        }
    }
    if remote.is_empty() {
        return Ok(None);
    }
    if remote.len() != names.len() || remote.iter().any(|m| m.host != remote[0].host) {
        let hosts: Vec<String> = names
            .iter()
            .map(|n| {
                let host =
                    remote.iter().find(|m| &m.name == n).map_or("local".to_string(), |m| m.host.to_string());
                format!("{n} ({host})")
            })
            .collect();
        return Err(crate::UsageError::err(format!(
            "these machines run on different hosts: {}: name the machines of one host per command",
            hosts.join(", ")
        )));
    }
    Ok(Some(remote))
}

/// Runs `command` on the host of the remote machines it names, if it names any: `Some` with
/// the outcome, `None` when it is this host's to run.
pub fn forward(ctx: &Ctx, command: &Command) -> Result<Option<()>> {
    let (names, tty): (Vec<MachineName>, bool) = match command {
        Command::Inspect { name } | Command::Logs { name, .. } => (vec![name.clone()], false),
        Command::Console { name } => (vec![name.clone()], true),
        Command::Exec { name, no_tty, .. } => {
            (vec![name.clone()], !no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal())
        }
        Command::Start(args) => (args.names.clone(), false),
        Command::Stop(args) | Command::Restart(args) => (args.names.clone(), false),
        Command::Suspend { names } => (names.clone(), false),
        Command::Cp { source, target } => {
            for end in [source, target] {
                if let n2d_spec::copy::CopyEnd::Machine { name, .. } = end {
                    if ctx.remote_machine(name)?.is_some() {
                        return Err(crate::UsageError::err(format!(
                            "{name} runs on another host: `n2d cp` copies to and from machines of this host only; copy with `docker --context {name} cp` instead"
                        )));
                    }
                }
            }
            return Ok(None);
        }
        Command::Rm { names, force } => return rm(ctx, names, *force),
        _ => return Ok(None),
    };
    let Some(machines) = remote_of(ctx, &names)? else { return Ok(None) };
    let args: Vec<String> =
        ARGS.get().map(|a| a.iter().map(|s| s.to_string_lossy().into_owned()).collect()).unwrap_or_default();
    match ctx.run_on_host_of(&machines[0], &args, tty)? {
        0 => Ok(Some(())),
        status => Err(CommandStatus(status).into()),
    }
}

/// `rm` of remote machines: on their host, then here (record, docker context).
fn rm(ctx: &Ctx, names: &[MachineName], force: bool) -> Result<Option<()>> {
    let Some(machines) = remote_of(ctx, names)? else { return Ok(None) };
    for machine in &machines {
        ctx.remove_remote(machine, force)?;
        ctx.unregister_machine_context(&machine.name);
        errln!("Removed {} (on host {})", machine.name, machine.host);
    }
    Ok(Some(()))
}
