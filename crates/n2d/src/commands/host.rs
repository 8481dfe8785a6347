//! `n2d host add|ls|rm`: other Linux hosts that run n2d, reached over SSH
//! (n2d-orchestrate's `remote`), and the hidden `host info --json` they answer `host ls` with.

use crate::args::HostCommand;
use crate::context::Ctx;
use anyhow::Result;
use n2d_orchestrate::remote::{HostPlacement, HostRow};
use serde::Serialize;

pub fn run(ctx: &Ctx, cmd: HostCommand) -> Result<()> {
    match cmd {
        HostCommand::Add { name, url, network, ip_range } => {
            let added = ctx.register_host(&name, &url, HostPlacement { network, ip_range })?;
            for warning in &added.warnings {
                errln!("  warning on {name}: {warning}");
            }
            let info = &added.info;
            errln!(
                "Added host {name} ({url}): n2d {}, {} CPUs, {} of {} memory free, {} machines; `n2d create NAME --on {name}`",
                info.version,
                info.cpus,
                gib(info.memory_available),
                gib(info.memory_total),
                info.machines
            );
            Ok(())
        }
        HostCommand::Ls { json, quiet } => ls(ctx, json, quiet),
        HostCommand::Rm { names, force } => {
            for name in &names {
                for machine in ctx.forget_host(name, force)? {
                    ctx.unregister_machine_context(&machine);
                    errln!("Forgot {machine} (its VM stays on {name})");
                }
                errln!("Removed host {name}");
            }
            Ok(())
        }
        HostCommand::Load { names } => {
            let loaded = ctx.load_into_machines(&names, &mut std::io::stdin().lock())?;
            outln!("{}", serde_json::to_string(&loaded)?)?;
            Ok(())
        }
        HostCommand::Info { json: _ } => {
            outln!("{}", serde_json::to_string(&ctx.local_host_info())?)?;
            Ok(())
        }
        HostCommand::LinkPrepare { index } => {
            let ssh_connection = std::env::var("SSH_CONNECTION").ok();
            let prepared = ctx.link_prepare_here(index, ssh_connection.as_deref())?;
            outln!("{}", serde_json::to_string(&prepared)?)?;
            Ok(())
        }
        HostCommand::LinkUp => {
            let config: n2d_orchestrate::LinkConfig = serde_json::from_reader(std::io::stdin().lock())?;
            ctx.link_up_here(&config)?;
            Ok(())
        }
        HostCommand::LinkDown => {
            let said = match ctx.link_down_here()? {
                n2d_orchestrate::Unlinked::Removed => "removed",
                n2d_orchestrate::Unlinked::InUse(_) => "in-use",
                n2d_orchestrate::Unlinked::NotLinked => "not-linked",
            };
            outln!("{said}")?;
            Ok(())
        }
    }
}

/// One `host ls --json` row: every key in every row.
#[derive(Serialize)]
struct JsonRow<'a> {
    name: &'a str,
    url: &'a str,
    reachable: bool,
    version: Option<&'a str>,
    cpus: Option<u32>,
    memory_total: Option<u64>,
    memory_available: Option<u64>,
    machines: Option<usize>,
    error: Option<&'a str>,
}

fn ls(ctx: &Ctx, json: bool, quiet: bool) -> Result<()> {
    if quiet {
        outln!("local")?;
        for name in ctx.remote_host_names() {
            outln!("{name}")?;
        }
        return Ok(());
    }
    let rows = ctx.list_hosts();
    if json {
        let rows: Vec<JsonRow> = rows.iter().map(json_row).collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    outln!(
        "{:<12} {:<28} {:<12} {:<8} {:<5} {:<16} {:<8}",
        "HOST",
        "URL",
        "STATE",
        "VERSION",
        "CPUS",
        "MEMORY FREE",
        "MACHINES"
    )?;
    for row in &rows {
        match &row.info {
            Some(i) => outln!(
                "{:<12} {:<28} {:<12} {:<8} {:<5} {:<16} {:<8}",
                row.name,
                row.url,
                "reachable",
                i.version,
                i.cpus,
                format!("{}/{}", gib(i.memory_available), gib(i.memory_total)),
                i.machines
            )?,
            None => outln!(
                "{:<12} {:<28} {:<12} {}",
                row.name,
                row.url,
                "unreachable",
                row.error.as_deref().unwrap_or("")
            )?,
        }
    }
    Ok(())
}

fn json_row(row: &HostRow) -> JsonRow<'_> {
    let info = row.info.as_ref();
    JsonRow {
        name: row.name.as_str(),
        url: &row.url,
        reachable: row.reachable,
        version: info.map(|i| i.version.as_str()),
        cpus: info.map(|i| i.cpus),
        memory_total: info.map(|i| i.memory_total),
        memory_available: info.map(|i| i.memory_available),
        machines: info.map(|i| i.machines),
        error: row.error.as_deref(),
    }
}

/// `5.6G`: binary GiB with one decimal, as free(1) -h says it.
fn gib(bytes: u64) -> String {
    format!("{:.1}G", bytes as f64 / (1u64 << 30) as f64)
}
