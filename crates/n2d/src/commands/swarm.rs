//! `n2d swarm ...`: swarms of n2d machines, formed over the Docker API (n2d-swarm).

use super::{connect, endpoint};
use crate::args::Shell;
use crate::context::Ctx;
use crate::docker_context::{self, ContextSpec};
use crate::provision::{create_machine, remove_machine, resolve_image};
use crate::UsageError;
use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use n2d_spec::machine::{
    ByteSize, MachineName, MachineSpec, DEFAULT_BRIDGE, DEFAULT_CPUS, DEFAULT_DISK, DEFAULT_MEMORY,
};
use n2d_spec::swarm::{
    manager_count_advice, plan_scale, ExternalHost, LabelRule, NodePlan, NodeRole, SwarmName, SwarmRecord,
    SwarmSpec,
};
use n2d_store::MachineRecord;
use n2d_swarm::{
    check_docker_save_archive, form_swarm, join_external_worker, load_image_everywhere, remove_nodes,
    swarm_health, BollardApi, DockerApi, Endpoint, Manager, RemoveTimeouts, TlsPaths,
};
use n2d_vm::qemu::console_tail;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum SwarmCommand {
    /// Create a swarm: N managers + M workers, created in parallel, joined and labelled
    Create(SwarmCreateArgs),
    /// List swarms and the health of their nodes
    Ls,
    /// Print the environment that points the docker CLI at a swarm manager
    Env {
        name: SwarmName,
        #[arg(long, value_enum, default_value_t = Shell::Bash)]
        shell: Shell,
    },
    /// Remove a swarm: its VMs, disks, leases and certificates (external hosts only leave)
    Rm { name: SwarmName },
    /// Add or remove nodes (removed nodes are drained first, so services keep running)
    Scale {
        name: SwarmName,
        #[arg(long)]
        workers: Option<u32>,
        #[arg(long)]
        managers: Option<u32>,
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Load a `docker save` archive into every node
    Load { name: SwarmName, archive: PathBuf },
    /// Join a Docker engine n2d did not create to the swarm as a worker
    AddHost(AddHostArgs),
}

#[derive(Debug, Args)]
pub struct SwarmCreateArgs {
    /// Cluster file (YAML) describing the swarm; replaces the flags below
    #[arg(short = 'f', long = "file", conflicts_with_all = ["prefix", "managers", "workers", "cpus", "memory", "network", "ip_range", "labels"])]
    pub file: Option<PathBuf>,
    /// Name of the swarm and prefix of its node names
    #[arg(long)]
    pub prefix: Option<SwarmName>,
    #[arg(long)]
    pub managers: Option<u32>,
    #[arg(long)]
    pub workers: Option<u32>,
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory per node, e.g. 1536M
    #[arg(long)]
    pub memory: Option<String>,
    /// Bridge to attach the nodes to [default: n2d0, created if absent]
    #[arg(long, value_parser = crate::args::bridge_name)]
    pub network: Option<String>,
    /// The addresses the nodes take, FIRST-LAST or a CIDR block (needed on a bridge n2d did
    /// not create)
    #[arg(long)]
    pub ip_range: Option<n2d_spec::address::IpRange>,
    /// Node label KEY=VALUE@TARGET, TARGET a node name, all, workers or managers (repeatable)
    #[arg(long = "label")]
    pub labels: Vec<String>,
    #[arg(long)]
    pub image: Option<String>,
    /// Seconds to wait for the nodes to boot and become Ready
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Keep what was created when the command fails (for debugging)
    #[arg(long)]
    pub keep_on_failure: bool,
}

#[derive(Debug, Args)]
pub struct AddHostArgs {
    pub name: SwarmName,
    /// The engine to join, e.g. tcp://192.168.1.20:2376
    #[arg(long)]
    pub host: String,
    /// Name to record the host under [default: from --host]
    #[arg(long = "as")]
    pub host_name: Option<String>,
    #[arg(long)]
    pub tlscacert: Option<PathBuf>,
    #[arg(long)]
    pub tlscert: Option<PathBuf>,
    #[arg(long)]
    pub tlskey: Option<PathBuf>,
    /// Node label KEY=VALUE (repeatable)
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

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

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn load_swarm(ctx: &Ctx, name: &SwarmName) -> Result<SwarmRecord> {
    ctx.home
        .load_swarm(name)?
        .ok_or_else(|| UsageError::err(format!("no swarm named {:?} (see `n2d swarm ls`)", name.as_str())))
}

fn save_swarm(ctx: &Ctx, record: &SwarmRecord) -> Result<()> {
    Ok(ctx.home.save_swarm(record)?)
}

/// The swarm spec from the cluster file or the flags.
fn spec_from_args(args: &SwarmCreateArgs) -> Result<SwarmSpec> {
    let spec = if let Some(file) = &args.file {
        // One byte past the cap is enough to refuse it: never read a huge file (or /dev/zero).
        let mut bytes = Vec::new();
        std::fs::File::open(file)
            .and_then(|f| f.take(n2d_spec::swarm::MAX_CLUSTER_FILE as u64 + 1).read_to_end(&mut bytes))
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
        spec.labels = args.labels.iter().map(|l| LabelRule::parse(l)).collect::<Result<_, _>>()?;
        spec
    };
    spec.validate()?;
    Ok(spec)
}

/// The machine spec of one planned node (memory default: 1.5G per node for swarms).
fn machine_spec(spec: &SwarmSpec, node: &NodePlan, image: &str) -> Result<MachineSpec> {
    let memory = match node.memory.as_ref().or(spec.memory.as_ref()) {
        Some(m) => m.parse::<ByteSize>().with_context(|| format!("memory of {}", node.name))?,
        None => DEFAULT_SWARM_MEMORY,
    };
    let machine = MachineSpec {
        name: node.name.parse()?,
        cpus: node.cpus.or(spec.cpus).unwrap_or(DEFAULT_CPUS),
        memory,
        disk: DEFAULT_DISK,
        bridge: spec.network.clone().unwrap_or_else(|| DEFAULT_BRIDGE.to_string()),
        addresses: spec.ip_range,
        image: image.to_string(),
        insecure_tcp: false,
        labels: node.labels.clone(),
    };
    machine.validate()?;
    Ok(machine)
}

/// Swarm nodes get less than a lone host by default: four of them share one machine.
const DEFAULT_SWARM_MEMORY: ByteSize = ByteSize(DEFAULT_MEMORY.0 * 3 / 4);

/// Creates the machines of `nodes` in parallel (bounded), returning those made. On error the
/// ones that were made are returned too, so the caller can roll back.
fn create_nodes(
    ctx: &Ctx,
    specs: &[MachineSpec],
    swarm: &str,
    timeout: Duration,
) -> (Vec<MachineRecord>, Result<()>) {
    // Under TCG every vCPU is a host thread: more parallel boots than this only slow each other.
    let parallel = std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(4).max(2);
    let made = Mutex::new(Vec::new());
    let first_error = Mutex::new(None);
    let queue = Mutex::new(specs.iter());
    std::thread::scope(|s| {
        for _ in 0..parallel.min(specs.len()) {
            s.spawn(|| loop {
                let Some(spec) = queue.lock().unwrap().next() else { break };
                if first_error.lock().unwrap().is_some() {
                    break;
                }
                match create_machine(ctx, spec, Some(swarm), timeout) {
                    Ok(rec) => made.lock().unwrap().push(rec),
                    Err(e) => {
                        first_error
                            .lock()
                            .unwrap()
                            .get_or_insert(e.context(format!("creating {}", spec.name)));
                    }
                }
            });
        }
    });
    let made = made.into_inner().unwrap();
    (made, first_error.into_inner().unwrap().map_or(Ok(()), Err))
}

fn create(ctx: &Ctx, args: SwarmCreateArgs) -> Result<()> {
    let spec = spec_from_args(&args)?;
    if let Some(advice) = manager_count_advice(spec.managers) {
        eprintln!("note: {advice}");
    }
    let prefix: SwarmName = spec.prefix.parse()?;
    if let Some(existing) = ctx.home.load_swarm(&prefix)? {
        return report_existing(ctx, &existing);
    }
    let machines: Vec<String> = ctx.home.list_machines().into_iter().map(|(n, _)| n).collect();
    spec.check_no_clash(machines.iter().map(String::as_str))?;
    let plan = spec.plan();
    // Every node's spec is checked before any VM starts.
    let mut specs = plan.iter().map(|n| machine_spec(&spec, n, "")).collect::<Result<Vec<_>>>()?;
    check_network(ctx, &specs)?;
    preflight(ctx, &specs, args.image.clone())?;
    let image = resolve_image(ctx, args.image.as_deref())?.manifest.id;
    specs.iter_mut().for_each(|s| s.image = image.clone());

    let record = SwarmRecord::from_spec(&spec)?;
    save_swarm(ctx, &record)?;
    let started = std::time::Instant::now();
    let timeout = Duration::from_secs(args.timeout);
    let (made, result) = create_nodes(ctx, &specs, &spec.prefix, timeout);
    let result = result.and_then(|()| {
        eprintln!(
            "All {} VMs are up ({:.1}s); forming the swarm...",
            made.len(),
            started.elapsed().as_secs_f64()
        );
        form(ctx, &plan, &made, timeout)
    });
    if let Err(e) = result {
        if args.keep_on_failure {
            eprintln!("--keep-on-failure: leaving the swarm's machines for inspection (remove with `n2d swarm rm {}`)", spec.prefix);
        } else {
            eprintln!("Rolling back: removing the swarm's machines");
            for m in &made {
                let _ = remove_machine(ctx, &m.spec.name, true);
            }
            let _ = ctx.home.remove_swarm(&prefix);
        }
        return Err(e);
    }
    eprintln!("Swarm {} is ready ({:.1}s)", spec.prefix, started.elapsed().as_secs_f64());
    let manager = print_summary(ctx, &record)?;
    let context = register_context(ctx, &record, &manager);
    print_hint(&spec.prefix, context);
    Ok(())
}

fn print_hint(name: &str, context: bool) {
    if context {
        println!(
            "\nPoint the docker CLI at it: docker --context {name} node ls (or `docker context use {name}`)"
        );
        println!("Or set the environment: eval \"$(n2d swarm env {name})\"");
    } else {
        println!("\nPoint the docker CLI at it: eval \"$(n2d swarm env {name})\"");
    }
}

/// Registers (or repoints) the swarm's docker context at `manager` (the one that just
/// answered); a failure is only reported.
fn register_context(ctx: &Ctx, record: &SwarmRecord, manager: &MachineRecord) -> bool {
    let hint = format!("n2d swarm env {}", record.prefix);
    let spec = ContextSpec::swarm(record.prefix.as_str(), &endpoint(ctx, manager));
    docker_context::register(&ctx.runner, &spec, &hint)
}

/// The host checks of `n2d doctor`, before any node is made.
fn preflight(ctx: &Ctx, specs: &[MachineSpec], image: Option<String>) -> Result<()> {
    let bridge = specs.first().map_or_else(|| DEFAULT_BRIDGE.to_string(), |s| s.bridge.clone());
    Ok(crate::doctor::preflight(ctx, &crate::doctor::Target { bridge, image })?)
}

/// The bridge and addresses are checked (a bridge, a range where one is needed, room for every
/// node) before any node is made.
fn check_network(ctx: &Ctx, specs: &[MachineSpec]) -> Result<()> {
    let Some(first) = specs.first() else { return Ok(()) };
    ctx.net.check_choice(&ctx.runner, &first.bridge, first.addresses)?;
    let Some((free, within)) = ctx.net.capacity(&ctx.runner, &first.bridge, first.addresses)? else {
        return Ok(());
    };
    if specs.len() > free {
        bail!(UsageError(format!(
            "bridge {} has {free} free addresses in {within} but the swarm needs {}: use fewer nodes, a larger --ip-range or a bridge with a larger subnet (--network)",
            first.bridge,
            specs.len()
        )));
    }
    Ok(())
}

/// Joins the machines into a swarm: the first manager inits, the others join, labels land.
fn form(ctx: &Ctx, plan: &[NodePlan], made: &[MachineRecord], timeout: Duration) -> Result<()> {
    let mut nodes = Vec::new();
    for node in plan {
        let m = made.iter().find(|m| m.spec.name.as_str() == node.name).context("node VM missing")?;
        let ep = endpoint(ctx, m);
        let api = connect(&ep, 120)?;
        nodes.push((node.clone(), ep, api));
    }
    let result =
        runtime()?.block_on(form_swarm(&nodes, timeout, |msg| crate::progress::say(format!("  {msg}"))));
    if let Err(n2d_swarm::SwarmError::NodesNotReady { nodes: late, .. }) = &result {
        // Say what the late nodes' consoles say: that is where the reason is.
        let tails: Vec<String> = late
            .iter()
            .map(|n| match n.parse::<MachineName>() {
                Ok(name) => format!("{n}:\n{}", console_tail(&ctx.home.machine_dir(&name), 10)),
                Err(e) => format!("{n}: {e}"),
            })
            .collect();
        return Err(anyhow::anyhow!("last console lines:\n{}", tails.join("\n")).context(result.unwrap_err()));
    }
    result?;
    Ok(())
}

/// A reachable manager of the swarm: (machine, api).
fn reachable_manager(
    ctx: &Ctx,
    record: &SwarmRecord,
    rt: &tokio::runtime::Runtime,
) -> Result<(MachineRecord, BollardApi)> {
    for name in &record.managers {
        let Ok(m) = ctx.home.load_machine(name) else { continue };
        let Ok(api) = connect(&endpoint(ctx, &m), 10) else { continue };
        if rt.block_on(api.ping()).is_ok() {
            return Ok((m, api));
        }
    }
    bail!("no manager of swarm {} answers (are its machines running? see `n2d ls`)", record.prefix)
}

fn report_existing(ctx: &Ctx, record: &SwarmRecord) -> Result<()> {
    let rt = runtime()?;
    let (m, api) = reachable_manager(ctx, record, &rt)?;
    let nodes = rt.block_on(swarm_health(Manager { name: m.spec.name.as_str(), ip: m.ip, api: &api }))?;
    let expected = record.managers.len() + record.workers.len() + record.external_hosts.len();
    let ready = nodes.iter().filter(|n| n.ready()).count();
    if ready >= expected {
        eprintln!("Swarm {} already exists and all {ready} nodes are Ready: nothing to do", record.prefix);
        let manager = print_summary(ctx, record)?;
        let context = register_context(ctx, record, &manager);
        print_hint(record.prefix.as_str(), context);
        return Ok(());
    }
    bail!(UsageError(format!(
        "swarm {} already exists but only {ready} of {expected} nodes are Ready: fix it with `n2d swarm scale`, or remove it with `n2d swarm rm {}`",
        record.prefix, record.prefix
    )))
}

/// Prints the swarm's nodes as a manager sees them; returns that manager.
fn print_summary(ctx: &Ctx, record: &SwarmRecord) -> Result<MachineRecord> {
    let rt = runtime()?;
    let (m, api) = reachable_manager(ctx, record, &rt)?;
    let nodes = rt.block_on(swarm_health(Manager { name: m.spec.name.as_str(), ip: m.ip, api: &api }))?;
    println!("{:<20} {:<8} {:<15} {:<8} {:<10}", "NODE", "ROLE", "IP", "STATE", "AVAILABILITY");
    for n in nodes {
        println!(
            "{:<20} {:<8} {:<15} {:<8} {:<10}",
            n.hostname,
            n.role.to_string(),
            n.addr.clone().unwrap_or_default(),
            format!("{:?}", n.state).to_lowercase(),
            format!("{:?}", n.availability).to_lowercase()
        );
    }
    Ok(m)
}

fn ls(ctx: &Ctx) -> Result<()> {
    println!("{:<16} {:<9} {:<8} {:<8}", "SWARM", "MANAGERS", "WORKERS", "READY");
    let names = ctx.home.swarm_names();
    if names.is_empty() {
        return Ok(());
    }
    let rt = runtime()?;
    for name in names {
        let name = match name {
            Ok(name) => name,
            Err(e) => {
                println!("{:<16} error: {e}", "?");
                continue;
            }
        };
        let record = match load_swarm(ctx, &name) {
            Ok(r) => r,
            Err(e) => {
                println!("{:<16} error: {e}", name.as_str());
                continue;
            }
        };
        let total = record.managers.len() + record.workers.len() + record.external_hosts.len();
        let ready = reachable_manager(ctx, &record, &rt)
            .ok()
            .and_then(|(m, api)| {
                rt.block_on(swarm_health(Manager { name: m.spec.name.as_str(), ip: m.ip, api: &api })).ok()
            })
            .map(|nodes| format!("{}/{total}", nodes.iter().filter(|n| n.ready()).count()))
            .unwrap_or_else(|| format!("?/{total} (no manager answers)"));
        println!(
            "{:<16} {:<9} {:<8} {:<8}",
            name,
            record.managers.len(),
            record.workers.len() + record.external_hosts.len(),
            ready
        );
    }
    Ok(())
}

fn env(ctx: &Ctx, name: &SwarmName, shell: Shell) -> Result<()> {
    let record = load_swarm(ctx, name)?;
    let rt = runtime()?;
    let (m, _) = reachable_manager(ctx, &record, &rt)?;
    let certs = ctx.home.certs_dir();
    print!(
        "{}",
        super::env::render(
            shell,
            &m.docker_host(),
            Some(&certs.to_string_lossy()),
            &format!("n2d swarm env {name}")
        )
    );
    Ok(())
}

fn rm(ctx: &Ctx, name: &SwarmName) -> Result<()> {
    let record = load_swarm(ctx, name)?;
    // External hosts leave the swarm; their machines are not ours to touch.
    if !record.external_hosts.is_empty() {
        let rt = runtime()?;
        for host in &record.external_hosts {
            let ep = external_endpoint(host);
            match connect(&ep, 30).and_then(|api| Ok(rt.block_on(api.leave_swarm(true))?)) {
                Ok(()) => eprintln!("{} left the swarm", host.name),
                Err(e) => eprintln!("warning: {} could not be made to leave the swarm: {e:#}", host.name),
            }
        }
    }
    for node in record.managers.iter().chain(&record.workers) {
        if ctx.home.machine_exists(node) {
            remove_machine(ctx, node, true)?;
            eprintln!("{node} removed");
        }
    }
    ctx.home.remove_swarm(name)?;
    docker_context::unregister(&ctx.runner, name.as_str(), &docker_context::swarm_description(name.as_str()));
    eprintln!("Swarm {name} removed");
    Ok(())
}

fn external_endpoint(host: &ExternalHost) -> Endpoint {
    let ip = host
        .docker_host
        .trim_start_matches("tcp://")
        .split(':')
        .next()
        .and_then(|h| h.parse().ok())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    Endpoint { name: host.name.clone(), ip, docker_host: host.docker_host.clone(), tls: host.tls.clone() }
}

fn scale(
    ctx: &Ctx,
    name: &SwarmName,
    workers: Option<u32>,
    managers: Option<u32>,
    timeout: u64,
) -> Result<()> {
    let mut record = load_swarm(ctx, name)?;
    let want_managers = managers.unwrap_or(record.managers.len() as u32);
    let want_workers = workers.unwrap_or(record.workers.len() as u32);
    let prefix = record.prefix.to_string();
    let plan = plan_scale(&record.managers, &record.workers, want_managers, want_workers, &prefix)?;
    if plan.is_empty() {
        eprintln!("Swarm {name} already has {want_managers} managers and {want_workers} workers");
        return Ok(());
    }
    let rt = runtime()?;
    if !plan.add.is_empty() {
        // The current nodes, read before anything is made: new nodes copy the resources, bridge
        // and image of one of the same role.
        let mut all_plan: Vec<NodePlan> = Vec::new();
        let mut all_made: Vec<MachineRecord> = Vec::new();
        for (names, role) in [(&record.managers, NodeRole::Manager), (&record.workers, NodeRole::Worker)] {
            for n in names {
                let index = n2d_spec::swarm::node_index(&prefix, role, n.as_str()).unwrap_or(0);
                all_plan.push(NodePlan::new(&prefix, role, index));
                all_made.push(ctx.home.load_machine(n).with_context(|| format!("node {n} of swarm {name}"))?);
            }
        }
        let specs = plan
            .add
            .iter()
            .map(|n| {
                let like = all_plan
                    .iter()
                    .zip(&all_made)
                    .find(|(p, _)| p.role == n.role)
                    .or_else(|| all_plan.iter().zip(&all_made).next())
                    .map(|(_, m)| m)
                    .context("the swarm has no node to copy settings from")?;
                let spec =
                    MachineSpec { name: n.name.parse()?, labels: n.labels.clone(), ..like.spec.clone() };
                spec.validate()?;
                Ok(spec)
            })
            .collect::<Result<Vec<_>>>()?;
        check_network(ctx, &specs)?;
        preflight(ctx, &specs, specs.first().map(|s| s.image.clone()))?;
        let (made, result) = create_nodes(ctx, &specs, name.as_str(), Duration::from_secs(timeout));
        all_plan.extend(plan.add.iter().cloned());
        all_made.extend(made.iter().cloned());
        if let Err(e) = result.and_then(|()| form(ctx, &all_plan, &all_made, Duration::from_secs(timeout))) {
            for m in &made {
                let _ = remove_machine(ctx, &m.spec.name, true);
            }
            return Err(e);
        }
        for (n, spec) in plan.add.iter().zip(&specs) {
            match n.role {
                NodeRole::Manager => record.managers.push(spec.name.clone()),
                NodeRole::Worker => record.workers.push(spec.name.clone()),
            }
        }
        save_swarm(ctx, &record)?;
    }
    if !plan.remove.is_empty() {
        let (m, api) = reachable_manager(ctx, &record, &rt)?;
        if plan.remove.contains(&m.spec.name) {
            bail!("removing the manager n2d talks to ({}) is not supported yet: scale workers, or remove managers other than the first", m.spec.name);
        }
        let mut leaving = Vec::new();
        for r in &plan.remove {
            let node = ctx.home.load_machine(r)?;
            leaving.push((r.to_string(), connect(&endpoint(ctx, &node), 60)?));
        }
        let manager = Manager { name: m.spec.name.as_str(), ip: m.ip, api: &api };
        rt.block_on(remove_nodes(manager, &leaving, RemoveTimeouts::default(), |msg| eprintln!("  {msg}")))?;
        for r in &plan.remove {
            remove_machine(ctx, r, true)?;
            record.managers.retain(|n| n != r);
            record.workers.retain(|n| n != r);
            save_swarm(ctx, &record)?;
            eprintln!("{r} removed");
        }
    }
    let manager = print_summary(ctx, &record)?;
    // The context may have pointed at a manager that is gone.
    register_context(ctx, &record, &manager);
    Ok(())
}

fn load(ctx: &Ctx, name: &SwarmName, archive: &std::path::Path) -> Result<()> {
    check_docker_save_archive(archive).map_err(|e| UsageError::err(format!("{e}")))?;
    let record = load_swarm(ctx, name)?;
    let mut nodes = Vec::new();
    for n in record.managers.iter().chain(&record.workers) {
        let m = ctx.home.load_machine(n)?;
        nodes.push((n.to_string(), connect(&endpoint(ctx, &m), 3600)?));
    }
    for host in &record.external_hosts {
        nodes.push((host.name.clone(), connect(&external_endpoint(host), 3600)?));
    }
    let last_percent = std::sync::Arc::new(Mutex::new(std::collections::HashMap::<String, u64>::new()));
    let loaded = runtime()?.block_on(load_image_everywhere(&nodes, archive, move |p| {
        let percent = (p.sent * 100).checked_div(p.total).unwrap_or(100);
        let mut seen = last_percent.lock().unwrap();
        let prev = seen.entry(p.node.to_string()).or_insert(u64::MAX);
        if *prev == u64::MAX || percent >= *prev + 25 || (percent == 100 && *prev != 100) {
            *prev = percent;
            eprintln!("  {}: {percent}%", p.node);
        }
    }))?;
    for (node, images) in loaded {
        eprintln!("{node}: {}", images.join(", "));
    }
    Ok(())
}

fn add_host(ctx: &Ctx, args: AddHostArgs) -> Result<()> {
    let labels = args
        .labels
        .iter()
        .map(|l| n2d_spec::machine::parse_label(l))
        .collect::<Result<std::collections::BTreeMap<_, _>, _>>()?;
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
    let mut record = load_swarm(ctx, &args.name)?;
    let host_name = args.host_name.clone().unwrap_or_else(|| {
        args.host.trim_start_matches("tcp://").split(':').next().unwrap_or("host").to_string()
    });
    let ext =
        ExternalHost { name: host_name.clone(), docker_host: args.host.clone(), tls, labels: labels.clone() };
    let ep = external_endpoint(&ext);
    let rt = runtime()?;
    let worker = connect(&ep, 60)?;
    let (m, api) = reachable_manager(ctx, &record, &rt)?;
    let manager = Manager { name: m.spec.name.as_str(), ip: m.ip, api: &api };
    let advertise = (!ep.ip.is_unspecified()).then_some(ep.ip);
    rt.block_on(join_external_worker(
        manager,
        &host_name,
        &worker,
        advertise,
        &labels,
        Duration::from_secs(300),
    ))?;
    record.external_hosts.push(ext);
    save_swarm(ctx, &record)?;
    eprintln!("{host_name} joined swarm {} as a worker", record.prefix);
    Ok(())
}
