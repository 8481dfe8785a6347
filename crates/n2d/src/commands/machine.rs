//! Single-machine commands: create, ls, inspect, ip, start, stop, restart, rm, logs, console.

use crate::args::{CreateArgs, MachineArgs, PortArgs, StartArgs};
use crate::commands::image::resolve_image;
use crate::context::Ctx;
use crate::docker_context::{self, ContextSpec};
use crate::doctor::{preflight, Target};
use crate::error::UsageError;
use anyhow::{Context as _, Result};
use n2d_spec::address::IpRange;
use n2d_spec::machine::{parse_label, truncate_chars, ByteSize, MachineName, MachineSpec};
use n2d_spec::ports::PortForward;
use n2d_spec::swarm::SwarmName;
use n2d_vm::{Hypervisor as _, StopOutcome, VmState};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

/// Turns flags into a validated spec (no image resolution yet: `image` stays as typed); vCPUs
/// not given are `default_cpus` (the hypervisor's).
pub fn spec_from_args(
    name: &MachineName,
    m: &MachineArgs,
    labels: &BTreeMap<String, String>,
    publish: &[PortForward],
    image: String,
    default_cpus: u32,
) -> Result<MachineSpec> {
    let spec = MachineSpec {
        name: name.clone(),
        cpus: m.cpus.unwrap_or(default_cpus),
        memory: m.memory.parse::<ByteSize>().context("--memory")?,
        disk: m.disk.parse::<ByteSize>().context("--disk")?,
        bridge: m.network.clone().unwrap_or_else(crate::commands::default_network),
        addresses: m.ip.map(IpRange::single).or(m.ip_range),
        image,
        insecure_tcp: m.insecure_tcp,
        labels: labels.clone(),
        publish: publish.to_vec(),
    };
    spec.validate()?;
    Ok(spec)
}

pub fn warn_insecure(m: &MachineArgs) {
    if m.insecure_tcp {
        eprintln!("WARNING: --insecure-tcp: the Docker API listens on plain TCP port 2375 with no authentication; anyone who can reach the VM is root on it");
    }
}

pub fn create(ctx: &Ctx, args: CreateArgs) -> Result<()> {
    let labels = args.labels.iter().map(|l| parse_label(l)).collect::<Result<BTreeMap<_, _>, _>>()?;
    // Validate everything the user typed before building or creating anything.
    let default_cpus = ctx.hypervisor.default_cpus();
    let mut spec =
        spec_from_args(&args.name, &args.machine, &labels, &args.publish, String::new(), default_cpus)?;
    ctx.check_new_machine(&spec)?;
    if !spec.user_network() {
        ctx.net.check_choice(&ctx.runner, &spec.bridge, spec.addresses)?;
    }
    let target = Target { bridge: spec.bridge.clone(), image: args.machine.image.clone() };
    preflight(ctx, &target)?;
    warn_insecure(&args.machine);
    spec.image = resolve_image(ctx, args.machine.image.as_deref())?.manifest.id;
    let record = ctx.create_machine(&spec, None, Duration::from_secs(args.machine.timeout))?;
    let name = &record.spec.name;
    let context = register_context(ctx, &record);
    println!("{}", record.ip);
    println!("Docker endpoint: {}", record.docker_host());
    if context {
        println!("Point the docker CLI at it: docker --context {name} info (or `docker context use {name}`)");
    }
    println!("Or set the environment: eval \"$(n2d env {name})\"");
    for f in &record.spec.publish {
        println!("Published: {f}");
    }
    Ok(())
}

/// Registers (or refreshes) the docker context of a lone machine; a failure is only reported.
fn register_context(ctx: &Ctx, record: &n2d_store::MachineRecord) -> bool {
    let name = record.spec.name.as_str();
    let spec = ContextSpec::machine(&ctx.endpoint(record));
    docker_context::register(&ctx.runner, &spec, &format!("n2d env {name}"))
}

pub fn ls(ctx: &Ctx, json: bool) -> Result<()> {
    let entries = ctx.home.list_machines();
    // Machines booting an image that `image build --refresh` has since rebuilt with newer packages.
    let newer = n2d_image::newer_builds(&ctx.home);
    let newer_of = |image: &str| newer.get(image).map(|id| truncate_chars(id, 12));
    if json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|(name, rec)| match rec {
                Ok(r) => serde_json::json!({
                    "name": name, "state": ctx.machine_state(&r.spec.name).to_string(), "ip": r.ip,
                    "network": r.spec.bridge, "endpoint": r.docker_host(), "image": r.spec.image,
                    "swarm": r.swarm, "ports": r.spec.publish, "newer_image": newer.get(&r.spec.image),
                }),
                Err(e) => serde_json::json!({ "name": name, "state": "error", "error": e.to_string() }),
            })
            .chain(ctx.home.list_adopted().iter().map(
                |h| serde_json::json!({ "name": h.name, "state": "adopted", "endpoint": h.docker_host }),
            ))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<20} {:<8} {:<15} {:<26} {:<12} PORTS", "NAME", "STATE", "IP", "ENDPOINT", "IMAGE");
    let mut outdated = Vec::new();
    for (name, rec) in entries {
        match rec {
            Ok(r) => println!(
                "{:<20} {:<8} {:<15} {:<26} {:<12} {}",
                name,
                ctx.machine_state(&r.spec.name).to_string(),
                r.ip.to_string(),
                r.docker_host(),
                match newer_of(&r.spec.image) {
                    Some(newest) => {
                        outdated.push((name.clone(), newest));
                        format!("{}*", truncate_chars(&r.spec.image, 11))
                    }
                    None => truncate_chars(&r.spec.image, 12).to_string(),
                },
                r.spec
                    .publish
                    .iter()
                    .map(|f| format!("{}->{}", f.host, f.guest))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Err(e) => println!("{name:<20} error    {e}"),
        }
    }
    // Machines booted elsewhere from an export (`n2d adopt`): n2d knows only their endpoint.
    for h in ctx.home.list_adopted() {
        println!("{:<20} {:<8} {:<15} {:<26} {:<12}", h.name.as_str(), "adopted", "-", h.docker_host, "-");
    }
    for (name, newest) in outdated {
        eprintln!("* {name} runs an older build of its image than {newest} (`n2d image build --refresh` made it): recreate it to pick up the updates");
    }
    Ok(())
}

pub fn inspect(ctx: &Ctx, name: &MachineName) -> Result<()> {
    let r = ctx.load_record(name)?;
    let mut v = serde_json::to_value(&r)?;
    v["state"] = ctx.machine_state(&r.spec.name).to_string().into();
    v["endpoint"] = r.docker_host().into();
    v["dir"] = ctx.home.machine_dir(name).display().to_string().into();
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

pub fn ip(ctx: &Ctx, name: &MachineName) -> Result<()> {
    println!("{}", ctx.load_record(name)?.ip);
    Ok(())
}

fn need_names(names: &[MachineName], verb: &str) -> Result<()> {
    if names.is_empty() {
        return Err(UsageError::err(format!("name the machines to {verb}, e.g. `n2d {verb} h1`")));
    }
    Ok(())
}

pub fn start_cmd(ctx: &Ctx, args: &StartArgs) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    if args.all {
        start_all(ctx, timeout)
    } else {
        start(ctx, &args.names, timeout)
    }
}

pub fn start(ctx: &Ctx, names: &[MachineName], timeout: Duration) -> Result<()> {
    need_names(names, "start")?;
    for name in names {
        if !ctx.start_machine(name, timeout)? {
            eprintln!("{name} is already running");
        }
        refresh_context(ctx, name)?;
    }
    Ok(())
}

/// A started machine's docker context (swarm nodes are reached through the swarm's).
fn refresh_context(ctx: &Ctx, name: &MachineName) -> Result<()> {
    let record = ctx.load_record(name)?;
    if record.swarm.is_none() {
        register_context(ctx, &record);
    }
    Ok(())
}

/// `n2d start --all`: every stopped machine of the home, in parallel (bounded); one line per
/// machine on stdout; an error naming those that did not start (or cannot be read).
fn start_all(ctx: &Ctx, timeout: Duration) -> Result<()> {
    let plan = ctx.plan_start_all();
    let mut failed: Vec<String> = Vec::new();
    for (name, why) in &plan.unreadable {
        println!("{name}: cannot be started: {why} (`n2d rm -f {name}` removes it)");
        failed.push(name.clone());
    }
    for name in &plan.running {
        println!("{name}: already running");
    }
    if !plan.stopped.is_empty() {
        let names: Vec<&str> = plan.stopped.iter().map(MachineName::as_str).collect();
        eprintln!("Starting {} machines: {}", names.len(), names.join(", "));
    }
    let results = ctx.start_machines(&plan.stopped, timeout);
    for (name, result) in plan.stopped.iter().zip(results) {
        match result.map_err(anyhow::Error::new).and_then(|_| refresh_context(ctx, name)) {
            Ok(()) => println!("{name}: started"),
            Err(e) => {
                println!("{name}: failed to start: {e:#}");
                failed.push(name.to_string());
            }
        }
    }
    if !failed.is_empty() {
        let total = plan.stopped.len() + plan.unreadable.len();
        anyhow::bail!("{} of {total} machines did not start: {}", failed.len(), failed.join(", "));
    }
    if plan.stopped.is_empty() {
        eprintln!("No stopped machine to start");
    }
    Ok(())
}

pub fn stop(ctx: &Ctx, names: &[MachineName], timeout: u64) -> Result<()> {
    need_names(names, "stop")?;
    for name in names {
        match ctx.stop_machine(name, Duration::from_secs(timeout))? {
            StopOutcome::AlreadyStopped => eprintln!("{name} was not running"),
            StopOutcome::Graceful => eprintln!("{name} stopped"),
            StopOutcome::Forced => {
                eprintln!("{name} did not shut down within {timeout}s and was stopped forcibly")
            }
        }
    }
    Ok(())
}

pub fn restart(ctx: &Ctx, names: &[MachineName], timeout: u64) -> Result<()> {
    stop(ctx, names, timeout)?;
    start(ctx, names, Duration::from_secs(600))
}

pub fn rm(ctx: &Ctx, names: &[MachineName], force: bool) -> Result<()> {
    need_names(names, "rm")?;
    for name in names {
        if !ctx.home.machine_exists(name) && ctx.home.load_adopted(name)?.is_some() {
            ctx.home.remove_adopted(name)?;
            docker_context::unregister(
                &ctx.runner,
                name.as_str(),
                &docker_context::machine_description(name.as_str()),
            );
            eprintln!("{name} forgotten (adopted: its VM, wherever it runs, is not touched)");
            continue;
        }
        ctx.remove_machine(name, force)?;
        docker_context::unregister(
            &ctx.runner,
            name.as_str(),
            &docker_context::machine_description(name.as_str()),
        );
        eprintln!("{name} removed");
    }
    Ok(())
}

pub fn logs(ctx: &Ctx, name: &MachineName, follow: bool) -> Result<()> {
    let dir = ctx.home.machine_dir(name);
    let record = ctx.load_record(name)?;
    let path = dir.join(n2d_vm::argv::SERIAL_LOG);
    let mut out = std::io::stdout();
    let mut offset = 0u64;
    loop {
        if let Ok(mut f) = std::fs::File::open(&path) {
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            offset += f.read_to_end(&mut buf)? as u64;
            out.write_all(&buf)?;
            out.flush()?;
        }
        if !follow || ctx.hypervisor.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        if ctx.machine_state(&record.spec.name) == VmState::Stopped {
            std::thread::sleep(Duration::from_secs(1));
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// `n2d port NAME [[HOST:]GUEST | --rm HOST]`: NAME is a machine, else a swarm.
pub fn port(ctx: &Ctx, args: PortArgs) -> Result<()> {
    let machine = args.name.parse::<MachineName>().ok().filter(|m| ctx.home.machine_exists(m));
    if let Some(name) = machine {
        match (args.forward, args.remove) {
            (Some(f), _) => {
                ctx.publish_machine_port(&name, f)?;
                println!("{f} -> {name}");
            }
            (None, Some(host)) => ctx.unpublish_machine_port(&name, host)?,
            (None, None) => {
                let r = ctx.load_record(&name)?;
                let Some(api) = r.api_port else {
                    return Err(UsageError::err(format!(
                        "{name} is on bridge {}: reach its ports at {} (forwards are for user-mode networking)",
                        r.spec.bridge, r.ip
                    )));
                };
                println!("127.0.0.1:{api}->{}/tcp (Docker API)", r.spec.docker_port());
                for f in &r.spec.publish {
                    println!("{f}");
                }
            }
        }
        return Ok(());
    }
    let Ok(swarm) = args.name.parse::<SwarmName>() else {
        return Err(n2d_orchestrate::Error::NoSuchTarget(args.name).into());
    };
    if ctx.home.load_swarm(&swarm)?.is_none() {
        return Err(n2d_orchestrate::Error::NoSuchTarget(args.name).into());
    }
    match (args.forward, args.remove) {
        (Some(f), _) => {
            for note in ctx.publish_swarm_port(&swarm, f)? {
                eprintln!("{note}");
            }
        }
        (None, Some(host)) => ctx.unpublish_swarm_port(&swarm, host)?,
        (None, None) => {
            for note in ctx.place_swarm_ports(&swarm)? {
                eprintln!("{note}");
            }
            for p in ctx.load_swarm(&swarm)?.ports {
                let via = match &p.node {
                    Some(n) if ctx.machine_state(n) == VmState::Running => format!("through {n}"),
                    _ => "no node running".to_string(),
                };
                println!("{} (routing mesh, {via})", p.forward);
            }
        }
    }
    Ok(())
}

pub fn console(ctx: &Ctx, name: &MachineName) -> Result<()> {
    let record = ctx.load_record(name)?;
    if ctx.machine_state(&record.spec.name) != VmState::Running {
        return Err(UsageError::err(format!("{name} is not running: start it with `n2d start {name}`")));
    }
    n2d_vm::console::attach(&ctx.vm_handle(&record.spec.name))?;
    Ok(())
}
