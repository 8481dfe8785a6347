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
        SwarmCommand::Ls => ls(ctx),
        SwarmCommand::Env { name, shell } => env(ctx, &name, shell),
        SwarmCommand::Rm { name } => rm(ctx, &name),
        SwarmCommand::Scale { name, workers, managers, timeout, cold } => {
            ctx.set_cold_boots(cold);
            scale(ctx, &name, workers, managers, timeout)
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

fn ls(ctx: &Ctx) -> Result<()> {
    outln!("{:<16} {:<9} {:<8} {:<8}", "SWARM", "MANAGERS", "WORKERS", "READY")?;
    for name in ctx.swarm_names() {
        let name = match name {
            Ok(name) => name,
            Err(e) => {
                outln!("{:<16} error: {e}", "?")?;
                continue;
            }
        };
        let record = match ctx.load_swarm(&name) {
            Ok(r) => r,
            Err(e) => {
                outln!("{:<16} error: {e}", name.as_str())?;
                continue;
            }
        };
        let total = record.managers.len() + record.workers.len() + record.external_hosts.len();
        let context = ctx.swarm_context(&record);
        let ready = ctx
            .swarm_nodes_from(&record, context.manager.as_ref())
            .ok()
            .map(|(m, nodes)| {
                repoint(ctx, &context, &record, &m);
                format!("{}/{total}", nodes.iter().filter(|n| n.ready()).count())
            })
            .unwrap_or_else(|| format!("?/{total} (no manager answers)"));
        outln!(
            "{:<16} {:<9} {:<8} {:<8}",
            name,
            record.managers.len(),
            record.workers.len() + record.external_hosts.len(),
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
    timeout: u64,
) -> Result<()> {
    let record =
        match ctx.scale_swarm_checked(&ctx.probe(), name, workers, managers, Duration::from_secs(timeout))? {
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
