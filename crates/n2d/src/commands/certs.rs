//! `n2d certs ls` and `n2d certs rotate [NAME...|--all] [--client]`: thin over
//! n2d-orchestrate's `certs` module.

use crate::args::{CertsCommand, RotateArgs};
use crate::context::Ctx;
use anyhow::Result;
use n2d_orchestrate::certs::{unix_now, RotateRequest, Rotated, EXPIRY_WARNING_DAYS};
use std::time::Duration;

pub fn run(ctx: &Ctx, cmd: CertsCommand) -> Result<()> {
    match cmd {
        CertsCommand::Ls { json, quiet } => ls(ctx, json, quiet),
        CertsCommand::Rotate(args) => rotate(ctx, &args),
    }
}

fn ls(ctx: &Ctx, json: bool, quiet: bool) -> Result<()> {
    let certs = ctx.certificates();
    let now = unix_now();
    if json {
        let rows: Vec<serde_json::Value> = certs
            .iter()
            .map(|c| {
                let info = c.info.as_ref().ok();
                serde_json::json!({
                    "name": c.name,
                    "expires": info.map(|i| i.expiry_date()),
                    "days_left": info.map(|i| i.days_left(now)),
                    "serial": info.map(|i| i.serial.clone()),
                    "expiring": c.expiring(now),
                    "error": c.info.as_ref().err(),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    if quiet {
        for c in &certs {
            outln!("{}", c.name)?;
        }
        return Ok(());
    }
    if certs.is_empty() {
        errln!("no certificates yet: this home has no CA (it is made with the first machine)");
        return Ok(());
    }
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
    let report = ctx.rotate_certificates(&RotateRequest {
        names: args.names.clone(),
        all: args.all,
        client: args.client,
        timeout: Duration::from_secs(args.timeout),
    })?;
    let certs = ctx.certs_dir();
    if let Some(serial) = &report.client_serial {
        errln!(
            "new client certificate {serial} in {}; the old one stays valid until it expires",
            certs.display()
        );
    }
    for (name, result) in &report.machines {
        match result {
            Ok(Rotated::Live { serial }) => errln!("{name}: new certificate {serial}; its engine restarted"),
            Ok(Rotated::NextStart { serial }) => {
                errln!("{name}: new certificate {serial}, used from its next start")
            }
            Ok(Rotated::NoTls) => errln!("{name}: no TLS (--insecure-tcp), nothing to rotate"),
            Err(e) => errln!("{name}: {}", n2d_orchestrate::error::chain_text(e)),
        }
    }
    if report.new_ca {
        errln!("a new CA and client certificate were made in {} (CA rotation)", certs.display());
    }
    // The docker CLI keeps its own copy of the client certificate (and CA) in each context.
    for (_, ep) in &report.contexts {
        ctx.register_machine_context(ep);
    }
    Ok(report.result()?)
}
