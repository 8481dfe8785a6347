//! `n2d certs ls` and `n2d certs rotate [NAME...|--all] [--client]`: thin over
//! n2d-orchestrate's `certs` module.

use crate::args::{CertsCommand, RotateArgs};
use crate::context::Ctx;
use crate::docker_context::{self, ContextSpec};
use crate::error::UsageError;
use anyhow::{Context as _, Result};
use n2d_orchestrate::certs::{Rotated, EXPIRY_WARNING_DAYS};
use n2d_spec::machine::MachineName;
use std::time::Duration;

pub fn run(ctx: &Ctx, cmd: CertsCommand) -> Result<()> {
    match cmd {
        CertsCommand::Ls => ls(ctx),
        CertsCommand::Rotate(args) => rotate(ctx, &args),
    }
}

fn ls(ctx: &Ctx) -> Result<()> {
    let certs = ctx.certificates();
    if certs.is_empty() {
        errln!("no certificates yet: this home has no CA (it is made with the first machine)");
        return Ok(());
    }
    let now = n2d_pki::unix_now();
    outln!("{:<24} {:<12} {:>9}  SERIAL", "CERTIFICATE", "EXPIRES", "DAYS LEFT")?;
    for c in &certs {
        match &c.info {
            Ok(info) => {
                let mark = if c.expiring(now) { "  <- expires soon: n2d certs rotate" } else { "" };
                outln!(
                    "{:<24} {:<12} {:>9}  {}{mark}",
                    c.name,
                    info.expiry_date(),
                    info.days_left(now),
                    info.serial
                )?;
            }
            Err(why) => outln!("{:<24} unreadable: {why}", c.name)?,
        }
    }
    let soon = certs.iter().filter(|c| c.expiring(now)).count();
    if soon > 0 {
        errln!("{soon} certificate(s) expire within {EXPIRY_WARNING_DAYS} days");
    }
    Ok(())
}

fn rotate(ctx: &Ctx, args: &RotateArgs) -> Result<()> {
    if !args.all && args.names.is_empty() && !args.client {
        return Err(UsageError::err(
            "name the machines whose certificates to rotate, or give --all or --client",
        ));
    }
    let had_ca = ctx.home.certs_dir().join(n2d_pki::CA_CERT).exists();
    if !had_ca && args.client {
        return Err(UsageError::err("this home has no CA yet, so no client certificate to rotate"));
    }
    let names: Vec<MachineName> = if args.all {
        ctx.home.list_machines().into_iter().filter_map(|(n, _)| n.parse().ok()).collect()
    } else {
        args.names.clone()
    };
    for name in &names {
        if !ctx.home.machine_exists(name) {
            return Err(UsageError::err(format!("no machine named {name} (see `n2d ls`)")));
        }
    }
    if args.client {
        let serial = ctx.rotate_client_certificate()?;
        errln!(
            "new client certificate {serial} in {}; the old one stays valid until it expires",
            ctx.home.certs_dir().display()
        );
    }
    let timeout = Duration::from_secs(args.timeout);
    let mut failed = Vec::new();
    for name in &names {
        match ctx.rotate_server_certificate(name, timeout) {
            Ok(Rotated::Live { serial }) => errln!("{name}: new certificate {serial}; its engine restarted"),
            Ok(Rotated::NextStart { serial }) => {
                errln!("{name}: new certificate {serial}, used from its next start")
            }
            Ok(Rotated::NoTls) => errln!("{name}: no TLS (--insecure-tcp), nothing to rotate"),
            Err(e) => {
                errln!("{name}: {:#}", anyhow::Error::from(e));
                failed.push(name.to_string());
            }
        }
    }
    let new_ca = !had_ca && ctx.home.certs_dir().join(n2d_pki::CA_CERT).exists();
    if new_ca {
        errln!(
            "a new CA and client certificate were made in {} (CA rotation)",
            ctx.home.certs_dir().display()
        );
    }
    if args.client || new_ca {
        // The docker CLI keeps its own copy of the client certificate (and CA) in each context.
        for (name, record) in ctx.home.list_machines() {
            if let (Ok(_), Ok(record)) = (name.parse::<MachineName>(), record) {
                let spec = ContextSpec::machine(&ctx.endpoint(&record), ctx.home.root());
                docker_context::register(&ctx.runner, &spec, &format!("n2d env {name}"));
            }
        }
    }
    if !failed.is_empty() {
        return Err(anyhow::anyhow!("certificates not rotated: {}", failed.join(", ")))
            .context("n2d certs rotate");
    }
    Ok(())
}
