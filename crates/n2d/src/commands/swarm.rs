//! `n2d swarm ...`: swarms of n2d machines. The orchestration is n2d-orchestrate's; this module
//! turns flags into a spec, runs the host checks and prints.

use crate::args::{AddHostArgs, Shell, SwarmCommand, SwarmCreateArgs};
use crate::commands::image::resolve_image;
use crate::context::Ctx;
use crate::docker_context::{self, ContextSpec};
use crate::error::UsageError;
use anyhow::{bail, Context as _, Result};
use n2d_orchestrate::runtime;
use n2d_spec::machine::{MachineName, MachineSpec, DEFAULT_BRIDGE};
use n2d_spec::swarm::{manager_count_advice, LabelRule, SwarmName, SwarmSpec};
use n2d_store::{ExternalHost, MachineRecord, SwarmRecord};
use n2d_swarm::{check_docker_save_archive, TlsPaths};
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

pub fn run(ctx: &Ctx, cmd: SwarmCommand) -> Result<()> {
    match cmd {
        SwarmCommand::Create(args) => create(ctx, args),
        SwarmCommand::Ls => ls(ctx),
        SwarmCommand::Env { name, shell } => env(ctx, &name, shell),
        SwarmCommand::Rm { name } => rm(ctx, &name),
        SwarmCommand::Scale { name, workers, managers, timeout } => {
            scale(ctx, &name, workers, managers, timeout)
        }
        SwarmCommand::Load { name, archive } => load(ctx, &name, &archive),
        SwarmCommand::AddHost(args) => add_host(ctx, args),
    }
}

/// The swarm spec from the cluster file or the flags.
fn spec_from_args(args: &SwarmCreateArgs) -> Result<SwarmSpec> {
    let mut spec = if let Some(file) = &args.file {
        // One byte past the cap is enough to refuse it: never read a huge file (or /dev/zero).
        // Opened without blocking and checked to be a regular file: a FIFO or device is refused.
        let (f, _) = n2d_store::safe_fs::check_input(file, u64::MAX, "a cluster file")?;
        let mut bytes = Vec::new();
        f.take(n2d_spec::swarm::MAX_CLUSTER_FILE as u64 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", file.display()))?;
        SwarmSpec::from_yaml_bytes(&bytes)?
    } else {
        let mut spec = SwarmSpec::default();
        if let Some(p) = &args.prefix {
            spec.prefix = p.to_string();
        }
        spec.managers = args.managers.unwrap_or(spec.managers);
        spec.workers = args.workers.unwrap_or(spec.workers);
        spec.cpus = args.cpus;
        spec.memory = args.memory.clone();
        spec.network = args.network.clone();
        spec.ip_range = args.ip_range;
        spec.publish = args.publish.clone();
        spec.expose = args.expose;
        spec.labels = args.labels.iter().map(|l| LabelRule::parse(l)).collect::<Result<_, _>>()?;
        spec
    };
    if spec.network.is_none() {
        spec.network = Some(crate::commands::default_network());
    }
    spec.validate()?;
    Ok(spec)
}

fn create(ctx: &Ctx, args: SwarmCreateArgs) -> Result<()> {
    let spec = spec_from_args(&args)?;
    if let Some(advice) = manager_count_advice(spec.managers) {
        errln!("note: {advice}");
    }
    let prefix: SwarmName = spec.prefix.parse()?;
    if let Some(existing) = ctx.home.load_swarm(&prefix)? {
        return report_existing(ctx, &existing);
    }
    // Every node's spec and the network are checked before any VM starts.
    let mut plan = ctx.plan_swarm(&spec)?;
    preflight(ctx, &plan.specs, args.image.clone())?;
    let image = resolve_image(ctx, args.image.as_deref())?.manifest.id;
    plan.specs.iter_mut().for_each(|s| s.image = image.clone());
    let record = ctx.create_swarm(&spec, &plan, Duration::from_secs(args.timeout), args.keep_on_failure)?;
    let manager = print_summary(ctx, &record)?;
    let context = register_context(ctx, &record, &manager);
    print_hint(&spec.prefix, context.as_deref())?;
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

/// Registers (or repoints) the swarm's docker context at `manager` (the one that just
/// answered); a failure is only reported.
fn register_context(ctx: &Ctx, record: &SwarmRecord, manager: &MachineRecord) -> Option<String> {
    let hint = format!("n2d swarm env {}", record.prefix);
    let spec = ContextSpec::swarm(record.prefix.as_str(), &ctx.endpoint(manager), ctx.home.root());
    docker_context::register(&ctx.runner, &spec, &hint)
}

/// The host checks of `n2d doctor`, before any node is made.
fn preflight(ctx: &Ctx, specs: &[MachineSpec], image: Option<String>) -> Result<()> {
    let bridge = specs.first().map_or_else(|| DEFAULT_BRIDGE.to_string(), |s| s.bridge.clone());
    Ok(crate::doctor::preflight(ctx, &crate::doctor::Target { bridge, image })?)
}

fn report_existing(ctx: &Ctx, record: &SwarmRecord) -> Result<()> {
    let (_, nodes) = ctx.swarm_nodes(record)?;
    let expected = record.managers.len() + record.workers.len() + record.external_hosts.len();
    let ready = nodes.iter().filter(|n| n.ready()).count();
    if ready >= expected {
        errln!("Swarm {} already exists and all {ready} nodes are Ready: nothing to do", record.prefix);
        let manager = print_summary(ctx, record)?;
        let context = register_context(ctx, record, &manager);
        print_hint(record.prefix.as_str(), context.as_deref())?;
        return Ok(());
    }
    bail!(UsageError(format!(
        "swarm {} already exists but only {ready} of {expected} nodes are Ready: fix it with `n2d swarm scale`, or remove it with `n2d swarm rm {}`",
        record.prefix, record.prefix
    )))
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
    for name in ctx.home.swarm_names() {
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
        let context = ContextManager::read(ctx, &record);
        let ready = ctx
            .swarm_nodes_from(&record, context.manager.as_ref())
            .ok()
            .map(|(m, nodes)| {
                context.repoint(ctx, &record, &m);
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

/// Where the swarm's docker context points (when it is n2d's), and at which manager.
struct ContextManager {
    host: Option<String>,
    manager: Option<MachineName>,
}

impl ContextManager {
    fn read(ctx: &Ctx, record: &SwarmRecord) -> ContextManager {
        let owner = docker_context::Owner::swarm(record.prefix.as_str(), ctx.home.root());
        let host = docker_context::current_host(&ctx.runner, &owner);
        let manager = host.as_ref().and_then(|h| {
            record
                .managers
                .iter()
                .find(|m| ctx.home.load_machine(m).is_ok_and(|r| &r.docker_host() == h))
                .cloned()
        });
        ContextManager { host, manager }
    }

    /// Points the context at `live` (a manager that answers) when it names another: a manager
    /// that does not answer (its VM killed, a leader lost) or is no longer one.
    fn repoint(&self, ctx: &Ctx, record: &SwarmRecord, live: &MachineRecord) {
        let Some(host) = &self.host else { return };
        if *host == live.docker_host() {
            return;
        }
        if let Some(context) = register_context(ctx, record, live) {
            errln!(
                "note: docker context {context} pointed at {host}, where no manager of the swarm answers; it now points at {} ({})",
                live.spec.name,
                live.docker_host()
            );
        }
    }
}

fn env(ctx: &Ctx, name: &SwarmName, shell: Shell) -> Result<()> {
    let record = ctx.load_swarm(name)?;
    let context = ContextManager::read(ctx, &record);
    let (m, _) = ctx.reachable_manager_from(&record, &runtime()?, context.manager.as_ref())?;
    context.repoint(ctx, &record, &m);
    let certs = ctx.home.certs_dir();
    out!(
        "{}",
        super::env::render(
            shell,
            &m.docker_host(),
            Some(super::env::cert_path_text(&certs)?),
            &format!("n2d swarm env {name}")
        )
    )?;
    Ok(())
}

fn rm(ctx: &Ctx, name: &SwarmName) -> Result<()> {
    ctx.remove_swarm(name)?;
    docker_context::unregister(&ctx.runner, &docker_context::Owner::swarm(name.as_str(), ctx.home.root()));
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
    let work = ctx.plan_swarm_scale(name, workers, managers)?;
    if work.is_empty() {
        errln!("Swarm {name} already has {} managers and {} workers", work.want_managers, work.want_workers);
        return Ok(());
    }
    if !work.add.is_empty() {
        preflight(ctx, &work.add, work.add.first().map(|s| s.image.clone()))?;
    }
    let record = ctx.scale_swarm(work, Duration::from_secs(timeout))?;
    let manager = print_summary(ctx, &record)?;
    // The context may have pointed at a manager that is gone.
    register_context(ctx, &record, &manager);
    Ok(())
}

fn load(ctx: &Ctx, name: &SwarmName, archive: &std::path::Path) -> Result<()> {
    check_docker_save_archive(archive).map_err(|e| UsageError::err(format!("{e}")))?;
    let record = ctx.load_swarm(name)?;
    let last_percent = std::sync::Arc::new(Mutex::new(std::collections::HashMap::<String, u64>::new()));
    let loaded = ctx.load_archive(&record, archive, move |p| {
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
    let labels = args
        .labels
        .iter()
        .map(|l| n2d_spec::machine::parse_label(l))
        .collect::<Result<std::collections::BTreeMap<_, _>, _>>()?;
    // `--host NAME` of a machine recorded by `n2d adopt`: its endpoint and the home's certs.
    let adopted = match args.host.parse::<MachineName>() {
        Ok(name) if !args.host.contains("://") => ctx.home.load_adopted(&name)?,
        _ => None,
    };
    if let Some(host) = adopted {
        let ep = crate::commands::adopt::adopted_endpoint(ctx, &host);
        let args = AddHostArgs {
            host: host.docker_host.clone(),
            host_name: args.host_name.clone().or_else(|| Some(host.name.to_string())),
            tlscacert: ep.tls.as_ref().map(|t| t.ca.clone()),
            tlscert: ep.tls.as_ref().map(|t| t.cert.clone()),
            tlskey: ep.tls.as_ref().map(|t| t.key.clone()),
            ..args
        };
        return add_host(ctx, args);
    }
    let tls = match (&args.tlscacert, &args.tlscert, &args.tlskey) {
        (Some(ca), Some(cert), Some(key)) => {
            Some(TlsPaths { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
        }
        // The host is sent the swarm's join token: never over a plain connection.
        (None, None, None) => bail!(UsageError(
            "add-host sends the swarm's join token to the host, which needs TLS: give --tlscacert, --tlscert and --tlskey (for an n2d machine, the files in `n2d env NAME`'s DOCKER_CERT_PATH)"
                .into()
        )),
        _ => bail!(UsageError("give all three of --tlscacert, --tlscert and --tlskey".into())),
    };
    let mut record = ctx.load_swarm(&args.name)?;
    let host_name = args.host_name.clone().unwrap_or_else(|| {
        args.host.trim_start_matches("tcp://").split(':').next().unwrap_or("host").to_string()
    });
    check_host_name(&host_name)?;
    n2d_spec::machine::check_labels_size(&host_name, &labels)?;
    let ext = ExternalHost { name: host_name.clone(), docker_host: args.host.clone(), tls, labels };
    ctx.add_external_host(&mut record, ext)?;
    errln!("{host_name} joined swarm {} as a worker", record.prefix);
    Ok(())
}

/// The name an external host is recorded (and listed) under: a DNS name, so it can hold no
/// path or control character.
fn check_host_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        && !name.starts_with(['-', '.']);
    if !ok {
        bail!(UsageError(format!(
            "invalid host name {name:?}: use letters, digits, '-' and '.' (at most 253), or name it with --as"
        )));
    }
    Ok(())
}
