//! One module per group of commands, each clap → library call → print; [`run`] dispatches.

pub mod adopt;
pub mod certs;
pub mod docs;
pub mod doctor;
pub mod env;
pub mod fault;
pub mod host;
pub mod image;
pub mod machine;
pub mod remote;
pub mod swarm;

use crate::args::Command;
use crate::context::Ctx;
use anyhow::Result;

/// Runs `command`, with the environment's variables read through `vars` (see
/// [`Ctx::from_vars`]).
pub fn run(command: Command, vars: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Result<()> {
    // These need no state home.
    match command {
        Command::Completions { shell } => return docs::completions(shell),
        Command::Man { dir } => return docs::man_pages(&dir),
        Command::Version => return Ok(outln!("n2d {}", env!("CARGO_PKG_VERSION"))?),
        _ => {}
    }
    let ctx = Ctx::from_vars(vars)?;
    match ctx.tighten_home() {
        Ok(paths) => {
            for path in paths {
                errln!("n2d: tightened permissions of {} to 0{:o}", path.display(), permission_target(&path));
            }
        }
        // Not fatal: the command itself may still work (and will say why if it does not).
        Err(e) => errln!("warning: {e:#}"),
    }
    ctx.handle_interrupts()?;
    if changes_state(&command) {
        // What a killed n2d left half done is completed or undone first (one line each).
        ctx.recover()?;
    }
    if remote::forward(&ctx, &command)?.is_some() {
        return Ok(());
    }
    match command {
        Command::Image(cmd) => image::run(&ctx, cmd),
        Command::Create(args) => machine::create(&ctx, args),
        Command::Ls { json, quiet } => machine::ls(&ctx, json, quiet),
        Command::Inspect { name } => machine::inspect(&ctx, &name),
        Command::Ip { name } => machine::ip(&ctx, &name),
        Command::Env { name: Some(name), shell, .. } => env::machine_env(&ctx, &name, shell),
        Command::Env { name: None, shell, .. } => env::unset(shell),
        Command::Start(args) => machine::start_cmd(&ctx, &args),
        Command::Stop(args) => machine::stop_cmd(&ctx, &args, machine::stop),
        Command::Restart(args) => machine::stop_cmd(&ctx, &args, machine::restart),
        Command::Suspend { names } => machine::suspend(&ctx, &names),
        Command::Rm { names, force } => machine::rm(&ctx, &names, force),
        Command::Logs { name, follow, tail, raw } => machine::logs(&ctx, &name, follow, raw, tail),
        Command::Console { name } => machine::console(&ctx, &name),
        Command::Exec { name, command, env, workdir, no_tty } => {
            machine::exec(&ctx, &name, command, env, workdir, no_tty)
        }
        Command::Cp { source, target } => machine::copy(&ctx, &source, &target),
        Command::Port(args) => machine::port(&ctx, args),
        Command::Swarm(cmd) => swarm::run(&ctx, cmd),
        Command::Host(cmd) => host::run(&ctx, cmd),
        Command::Fault(cmd) => fault::run(&ctx, cmd),
        Command::Completions { .. } | Command::Man { .. } | Command::Version => unreachable!("handled above"),
        Command::Doctor(args) => doctor::run(&ctx, args),
        Command::Adopt(args) => adopt::adopt(&ctx, &args),
        Command::Certs(cmd) => certs::run(&ctx, cmd),
    }
}

/// The commands that change the state (machines, swarms, images), which first recover what a
/// killed n2d left (`n2d_orchestrate::recover`). `doctor --repair` does it on demand.
fn changes_state(command: &Command) -> bool {
    use crate::args::{CertsCommand, ImageCommand, SwarmCommand};
    match command {
        Command::Image(ImageCommand::Build(_) | ImageCommand::Rm { .. } | ImageCommand::Prune)
        | Command::Create(_)
        | Command::Start { .. }
        | Command::Stop(_)
        | Command::Restart(_)
        | Command::Suspend { .. }
        | Command::Port(_)
        | Command::Rm { .. }
        | Command::Adopt(_)
        | Command::Certs(CertsCommand::Rotate(_))
        // A fault whose time is up ends before anything else is said about faults.
        | Command::Fault(_) => true,
        Command::Swarm(cmd) => matches!(
            cmd,
            SwarmCommand::Create(_)
                | SwarmCommand::Rm { .. }
                | SwarmCommand::Suspend { .. }
                | SwarmCommand::Scale { .. }
                | SwarmCommand::AddHost(_)
        ),
        _ => false,
    }
}

fn permission_target(path: &std::path::Path) -> u32 {
    if path.is_dir() {
        n2d_orchestrate::DIR_MODE
    } else {
        n2d_orchestrate::FILE_MODE
    }
}
