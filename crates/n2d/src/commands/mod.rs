//! One module per group of commands; [`run`] dispatches.

pub mod env;
pub mod image;
pub mod machine;
pub mod swarm;

use crate::args::Command;
use crate::context::Ctx;
use anyhow::Result;
use n2d_store::MachineRecord;

pub fn run(command: Command) -> Result<()> {
    let ctx = Ctx::from_env()?;
    ctx.handle_interrupts()?;
    match command {
        Command::Image(cmd) => image::run(&ctx, cmd),
        Command::Create(args) => machine::create(&ctx, args),
        Command::Ls { json } => machine::ls(&ctx, json),
        Command::Inspect { name } => machine::inspect(&ctx, &name),
        Command::Ip { name } => machine::ip(&ctx, &name),
        Command::Env { name, shell } => env::machine_env(&ctx, &name, shell),
        Command::Start { names } => machine::start(&ctx, &names),
        Command::Stop(args) => machine::stop(&ctx, &args.names, args.timeout),
        Command::Restart(args) => machine::restart(&ctx, &args.names, args.timeout),
        Command::Rm { names, force } => machine::rm(&ctx, &names, force),
        Command::Logs { name, follow } => machine::logs(&ctx, &name, follow),
        Command::Console { name } => machine::console(&ctx, &name),
        Command::Swarm(cmd) => swarm::run(&ctx, cmd),
    }
}

/// A bollard client for a machine's engine: TLS with the user's client certificate, or plain
/// HTTP for `--insecure-tcp` machines.
pub fn docker_client(ctx: &Ctx, record: &MachineRecord) -> Result<bollard::Docker> {
    let addr = record.docker_host();
    if record.spec.insecure_tcp {
        return Ok(bollard::Docker::connect_with_http(&addr, 30, bollard::API_DEFAULT_VERSION)?);
    }
    let certs = ctx.home.certs_dir();
    Ok(bollard::Docker::connect_with_ssl(
        &addr,
        &certs.join("key.pem"),
        &certs.join("cert.pem"),
        &certs.join("ca.pem"),
        30,
        bollard::API_DEFAULT_VERSION,
    )?)
}
