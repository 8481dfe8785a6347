//! `n2d swarm ...`: swarms of n2d machines. The orchestration is n2d-orchestrate's; this module
//! turns flags into a request and prints.

use crate::args::{AddHostArgs, Shell, SwarmCommand, SwarmCreateArgs};
use crate::context::Ctx;
use anyhow::Result;
use n2d_orchestrate::contexts::swarm::SwarmContext;
use n2d_orchestrate::swarm_request::{AddHost, Scaled, SwarmCreated, SwarmRequest};
use n2d_orchestrate::{MachineRecord, SwarmRecord};
use n2d_spec::swarm::SwarmName;
use std::sync::Mutex;
use std::time::Duration;

pub fn run(ctx: &Ctx, cmd: SwarmCommand) -> Result<()> {
    match cmd {
        SwarmCommand::Create(args) => create(ctx, args),
        SwarmCommand::Ls { json, quiet } => ls(ctx, json, quiet),
        SwarmCommand::Env { name, shell } => env(ctx, &name, shell),
        SwarmCommand::Rm { name } => rm(ctx, &name),
        SwarmCommand::Scale { name, workers, managers, on, timeout, cold } => {
            ctx.set_cold_boots(cold);
            scale(ctx, &name, workers, managers, &on, timeout)
        }
        SwarmCommand::Load { name, archive } => load(ctx, &name, &archive),
        SwarmCommand::Suspend { name } => {
            let suspended = ctx.suspend_swarm(&name)?;
            for node in &suspended {
                errln!("{node} suspended");
            }
            errln!("Swarm {name}: {} nodes suspended (`n2d start --all` resumes them)", suspended.len());
            Ok(())
        }
        SwarmCommand::Upgrade { name, image, dry_run, timeout } => {
            upgrade(ctx, &name, image.as_deref(), dry_run, Duration::from_secs(timeout))
        }
        SwarmCommand::AddHost(args) => add_host(ctx, args),
    }
}

fn create(ctx: &Ctx, args: SwarmCreateArgs) -> Result<()> {
    let request = SwarmRequest {
        file: args.file.clone(),
        prefix: args.name.clone().or_else(|| args.prefix.clone()),
        managers: args.managers,
        workers: args.workers,
        cpus: args.cpus,
        memory: args.memory.clone(),
        network: args.network.clone(),
        ip_range: args.ip_range,
        publish: args.publish.clone(),
        expose: args.expose,
        labels: args.labels.clone(),
        mounts: args.mounts.clone(),
        on: args.on.clone(),
    };
    let default_image = crate::commands::image::build_request(&Default::default(), ctx.init_env());
    ctx.set_cold_boots(args.cold);
    let created = ctx.create_swarm_checked(
        &ctx.probe(),
        &request,
        args.image.as_deref(),
        &default_image,
        Duration::from_secs(args.timeout),
        args.keep_on_failure,
    )?;
    let record = match created {
        SwarmCreated::Existing { record, ready } => return report_existing(ctx, &record, ready),
        SwarmCreated::Created(record) => record,
    };
    let manager = print_summary(ctx, &record)?;
    let context = ctx.register_swarm_context(&record, &manager);
    print_hint(record.prefix.as_str(), context.as_deref())?;
    for p in &record.ports {
        outln!(
            "Published: {} (the routing mesh, through {})",
            p.forward,
            p.node.as_ref().map_or("no node", |n| n.as_str())
        )?;
    }
    Ok(())
}

fn print_hint(name: &str, context: Option<&str>) -> Result<()> {
    if let Some(context) = context {
        outln!(
            "\nPoint the docker CLI at it: docker --context {context} node ls (or `docker context use {context}`)"
        )?;
        outln!("Or set the environment: eval \"$(n2d swarm env {name})\"")?;
    } else {
        outln!("\nPoint the docker CLI at it: eval \"$(n2d swarm env {name})\"")?;
    }
    Ok(())
}

fn report_existing(ctx: &Ctx, record: &SwarmRecord, ready: usize) -> Result<()> {
    errln!("Swarm {} already exists and all {ready} nodes are Ready: nothing to do", record.prefix);
    let manager = print_summary(ctx, record)?;
    let context = ctx.register_swarm_context(record, &manager);
    print_hint(record.prefix.as_str(), context.as_deref())?;
    Ok(())
}

/// Prints the swarm's nodes as a manager sees them; returns that manager.
fn print_summary(ctx: &Ctx, record: &SwarmRecord) -> Result<MachineRecord> {
    let (m, nodes) = ctx.swarm_nodes(record)?;
    outln!("{:<20} {:<8} {:<15} {:<8} {:<10}", "NODE", "ROLE", "IP", "STATE", "AVAILABILITY")?;
    for n in nodes {
        outln!(
            "{:<20} {:<8} {:<15} {:<8} {:<10}",
            n.hostname,
            n.role.to_string(),
            n.addr.clone().unwrap_or_default(),
            format!("{:?}", n.state).to_lowercase(),
            format!("{:?}", n.availability).to_lowercase()
        )?;
    }
    Ok(m)
}

/// One swarm as `swarm ls` shows it; every key in every `--json` row (null where unknown).
#[derive(serde::Serialize)]
struct SwarmRow {
    name: String,
    managers: Vec<String>,
    workers: Vec<String>,
    external_hosts: Vec<String>,
    /// Nodes Ready, as a manager that answered counts them.
    ready: Option<usize>,
    error: Option<String>,
}

fn swarm_row(ctx: &Ctx, name: Result<SwarmName, String>) -> SwarmRow {
    let mut row = SwarmRow {
        name: String::new(),
        managers: vec![],
        workers: vec![],
        external_hosts: vec![],
        ready: None,
        error: None,
    };
    let name = match name {
        Ok(name) => name,
        Err(e) => {
            row.name = "?".into();
            row.error = Some(e);
            return row;
        }
    };
    row.name = name.to_string();
    let record = match ctx.load_swarm(&name) {
        Ok(r) => r,
        Err(e) => {
            row.error = Some(e.to_string());
            return row;
        }
    };
    row.managers = record.managers.iter().map(ToString::to_string).collect();
    row.workers = record.workers.iter().map(ToString::to_string).collect();
    row.external_hosts = record.external_hosts.iter().map(|h| h.name.to_string()).collect();
    let context = ctx.swarm_context(&record);
    match ctx.swarm_nodes_from(&record, context.manager.as_ref()) {
        Ok((m, nodes)) => {
            repoint(ctx, &context, &record, &m);
            row.ready = Some(nodes.iter().filter(|n| n.ready()).count());
        }
        Err(_) => row.error = Some("no manager answers".into()),
    }
    row
}

fn ls(ctx: &Ctx, json: bool, quiet: bool) -> Result<()> {
    let names = ctx.swarm_names().into_iter().map(|n| n.map_err(|e| e.to_string()));
    if quiet {
        for name in names.flatten() {
            outln!("{name}")?;
        }
        return Ok(());
    }
    let rows: Vec<SwarmRow> = names.map(|n| swarm_row(ctx, n)).collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    outln!("{:<16} {:<9} {:<8} {:<8}", "SWARM", "MANAGERS", "WORKERS", "READY")?;
    for row in rows {
        let total = row.managers.len() + row.workers.len() + row.external_hosts.len();
        let ready = match (row.ready, &row.error) {
            (Some(n), _) => format!("{n}/{total}"),
            (None, Some(e)) if total > 0 => format!("?/{total} ({e})"),
            (None, Some(e)) => format!("error: {e}"),
            (None, None) => "?".into(),
        };
        outln!(
            "{:<16} {:<9} {:<8} {:<8}",
            row.name,
            row.managers.len(),
            row.workers.len() + row.external_hosts.len(),
            ready
        )?;
    }
    Ok(())
}

/// Points the swarm's context at `live` when it names a manager that does not answer, and
/// says so.
fn repoint(ctx: &Ctx, context: &SwarmContext, record: &SwarmRecord, live: &MachineRecord) {
    if let Some(note) = ctx.repoint_swarm_context(context, record, live) {
        errln!("{note}");
    }
}

fn env(ctx: &Ctx, name: &SwarmName, shell: Shell) -> Result<()> {
    let found = ctx.swarm_env(name)?;
    if let Some(note) = &found.note {
        errln!("{note}");
    }
    out!("{}", found.env()?.render(super::env::shell(shell)))?;
    Ok(())
}

fn rm(ctx: &Ctx, name: &SwarmName) -> Result<()> {
    ctx.remove_swarm(name)?;
    ctx.unregister_swarm_context(name);
    errln!("Swarm {name} removed");
    Ok(())
}

fn scale(
    ctx: &Ctx,
    name: &SwarmName,
    workers: Option<u32>,
    managers: Option<u32>,
    on: &[n2d_spec::host::HostName],
    timeout: u64,
) -> Result<()> {
    let record = match ctx.scale_swarm_checked(
        &ctx.probe(),
        name,
        workers,
        managers,
        on,
        Duration::from_secs(timeout),
    )? {
        Scaled::Unchanged { managers, workers } => {
            errln!("Swarm {name} already has {managers} managers and {workers} workers");
            return Ok(());
        }
        Scaled::Scaled(record) => record,
    };
    let manager = print_summary(ctx, &record)?;
    // The context may have pointed at a manager that is gone.
    ctx.register_swarm_context(&record, &manager);
    Ok(())
}

fn load(ctx: &Ctx, name: &SwarmName, archive: &std::path::Path) -> Result<()> {
    let last_percent = std::sync::Arc::new(Mutex::new(std::collections::HashMap::<String, u64>::new()));
    let loaded = ctx.load_images(name, archive, move |p| {
        let percent = (p.sent * 100).checked_div(p.total).unwrap_or(100);
        let mut seen = last_percent.lock().unwrap();
        let prev = seen.entry(p.node.to_string()).or_insert(u64::MAX);
        if *prev == u64::MAX || percent >= *prev + 25 || (percent == 100 && *prev != 100) {
            *prev = percent;
            errln!("  {}: {percent}%", p.node);
        }
    })?;
    for (node, images) in loaded {
        errln!("{node}: {}", images.join(", "));
    }
    Ok(())
}

fn upgrade(ctx: &Ctx, name: &SwarmName, image: Option<&str>, dry_run: bool, timeout: Duration) -> Result<()> {
    let report = ctx.upgrade_swarm(name, image, dry_run, timeout)?;
    for host in &report.skipped {
        errln!("{host}: added with `swarm add-host`, not n2d's machine: left as it is");
    }
    if report.plan.is_empty() {
        outln!("Swarm {name}: every node runs image {} already", report.image)?;
    } else if dry_run {
        outln!("Swarm {name} would move to image {}, one node at a time:", report.image)?;
        for (i, node) in report.plan.iter().enumerate() {
            let role = match (node.manager, node.leader) {
                (true, true) => "manager, the leader",
                (true, false) => "manager",
                _ => "worker",
            };
            let from: String = node.image.chars().take(12).collect();
            outln!("  {}. {} ({role}; now on {from})", i + 1, node.name)?;
        }
    } else {
        outln!("Swarm {name}: {} on image {}", report.moved.join(", "), report.image)?;
    }
    Ok(())
}

fn add_host(ctx: &Ctx, args: AddHostArgs) -> Result<()> {
    let (host_name, record) = ctx.add_host(&AddHost {
        swarm: args.name,
        host: args.host,
        host_name: args.host_name,
        tlscacert: args.tlscacert,
        tlscert: args.tlscert,
        tlskey: args.tlskey,
        labels: args.labels,
    })?;
    errln!("{host_name} joined swarm {} as a worker", record.prefix);
    Ok(())
}
