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
use std::io::{Seek, SeekFrom, Write};
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
        expose: false,
    };
    spec.validate()?;
    Ok(spec)
}

pub fn warn_insecure(m: &MachineArgs) {
    if m.insecure_tcp {
        errln!("WARNING: --insecure-tcp: the Docker API listens on plain TCP port 2375 with no authentication; anyone who can reach the VM is root on it");
    }
}

pub fn create(ctx: &Ctx, args: CreateArgs) -> Result<()> {
    let labels = args.labels.iter().map(|l| parse_label(l)).collect::<Result<BTreeMap<_, _>, _>>()?;
    // Validate everything the user typed before building or creating anything.
    let default_cpus = ctx.hypervisor.default_cpus();
    let mut spec =
        spec_from_args(&args.name, &args.machine, &labels, &args.publish, String::new(), default_cpus)?;
    spec.expose = args.expose;
    spec.validate()?;
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
    outln!("{}", record.ip)?;
    outln!("Docker endpoint: {}", record.docker_host())?;
    if let Some(context) = context {
        outln!(
            "Point the docker CLI at it: docker --context {context} info (or `docker context use {context}`)"
        )?;
    }
    outln!("Or set the environment: eval \"$(n2d env {name})\"")?;
    for f in &record.spec.publish {
        outln!("Published: {f}")?;
    }
    Ok(())
}

/// Registers (or refreshes) the docker context of a lone machine; a failure is only reported.
fn register_context(ctx: &Ctx, record: &n2d_store::MachineRecord) -> Option<String> {
    let name = record.spec.name.as_str();
    let spec = ContextSpec::machine(&ctx.endpoint(record), ctx.home.root());
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
            .chain(ctx.home.list_adopted().iter().map(|(name, h)| match h {
                Ok(h) => serde_json::json!({ "name": h.name, "state": "adopted", "endpoint": h.docker_host }),
                Err(e) => serde_json::json!({ "name": name, "state": "error", "error": e.to_string() }),
            }))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    outln!("{:<20} {:<8} {:<15} {:<26} {:<12} PORTS", "NAME", "STATE", "IP", "ENDPOINT", "IMAGE")?;
    let mut outdated = Vec::new();
    for (name, rec) in entries {
        match rec {
            Ok(r) => outln!(
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
            )?,
            Err(e) => outln!("{name:<20} error    {e}")?,
        }
    }
    // Machines booted elsewhere from an export (`n2d adopt`): n2d knows only their endpoint.
    for (name, h) in ctx.home.list_adopted() {
        match h {
            Ok(h) => outln!(
                "{:<20} {:<8} {:<15} {:<26} {:<12}",
                h.name.as_str(),
                "adopted",
                "-",
                h.docker_host,
                "-"
            )?,
            Err(e) => outln!("{:<20} error    {e}", name.as_str())?,
        }
    }
    for (name, newest) in outdated {
        errln!("* {name} runs an older build of its image than {newest} (`n2d image build --refresh` made it): recreate it to pick up the updates");
    }
    Ok(())
}

pub fn inspect(ctx: &Ctx, name: &MachineName) -> Result<()> {
    let r = ctx.load_record(name)?;
    let mut v = serde_json::to_value(&r)?;
    v["state"] = ctx.machine_state(&r.spec.name).to_string().into();
    v["endpoint"] = r.docker_host().into();
    v["dir"] = ctx.home.machine_dir(name).display().to_string().into();
    outln!("{}", serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

pub fn ip(ctx: &Ctx, name: &MachineName) -> Result<()> {
    outln!("{}", ctx.load_record(name)?.ip)?;
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
            errln!("{name} is already running");
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
        outln!("{name}: cannot be started: {why} (`n2d rm -f {name}` removes it)")?;
        failed.push(name.clone());
    }
    for name in &plan.running {
        outln!("{name}: already running")?;
    }
    if !plan.stopped.is_empty() {
        let names: Vec<&str> = plan.stopped.iter().map(MachineName::as_str).collect();
        errln!("Starting {} machines: {}", names.len(), names.join(", "));
    }
    let results = ctx.start_machines(&plan.stopped, timeout);
    for (name, result) in plan.stopped.iter().zip(results) {
        match result.map_err(anyhow::Error::new).and_then(|_| refresh_context(ctx, name)) {
            Ok(()) => outln!("{name}: started")?,
            Err(e) => {
                outln!("{name}: failed to start: {e:#}")?;
                failed.push(name.to_string());
            }
        }
    }
    if !failed.is_empty() {
        let total = plan.stopped.len() + plan.unreadable.len();
        anyhow::bail!("{} of {total} machines did not start: {}", failed.len(), failed.join(", "));
    }
    if plan.stopped.is_empty() {
        errln!("No stopped machine to start");
    }
    Ok(())
}

pub fn stop(ctx: &Ctx, names: &[MachineName], timeout: u64) -> Result<()> {
    need_names(names, "stop")?;
    for name in names {
        match ctx.stop_machine(name, Duration::from_secs(timeout))? {
            StopOutcome::AlreadyStopped => errln!("{name} was not running"),
            StopOutcome::Graceful => errln!("{name} stopped"),
            StopOutcome::Forced => {
                errln!("{name} did not shut down within {timeout}s and was stopped forcibly")
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
                &docker_context::Owner::machine(name.as_str(), ctx.home.root()),
            );
            errln!("{name} forgotten (adopted: its VM, wherever it runs, is not touched)");
            continue;
        }
        ctx.remove_machine(name, force)?;
        docker_context::unregister(
            &ctx.runner,
            &docker_context::Owner::machine(name.as_str(), ctx.home.root()),
        );
        errln!("{name} removed");
    }
    Ok(())
}

/// `n2d logs NAME [-f] [-n N] [--raw]`: the serial log, streamed (constant memory), with
/// terminal controls stripped unless `--raw` (it is the guest's output), from its last `tail`
/// lines when asked (found from the end). Following, a restart's fresh log is read from its start.
pub fn logs(ctx: &Ctx, name: &MachineName, follow: bool, raw: bool, tail: Option<u64>) -> Result<()> {
    use n2d_vm::serial_log::{self, Sanitizer};
    use std::os::unix::fs::MetadataExt;
    let dir = ctx.home.machine_dir(name);
    let record = ctx.load_record(name)?;
    let path = serial_log::path(&dir);
    let mut out = crate::out::stdout();
    let mut sanitizer = (!raw).then(Sanitizer::new);
    // The log being read (its inode) and how far.
    let mut at: Option<(u64, u64)> = None;
    loop {
        if let Ok(mut f) = n2d_store::safe_fs::open_nofollow(&path) {
            let meta = f.metadata()?;
            if !meta.file_type().is_file() {
                anyhow::bail!("{} is not a regular file", path.display());
            }
            let offset = match at {
                Some((ino, offset)) if ino == meta.ino() && offset <= meta.len() => offset,
                // A new boot's log: from its start, the old one's half sequence forgotten.
                Some(_) => {
                    sanitizer = (!raw).then(Sanitizer::new);
                    0
                }
                None => match tail {
                    Some(n) => serial_log::tail_offset(&mut f, n)?,
                    None => 0,
                },
            };
            f.seek(SeekFrom::Start(offset))?;
            let read = serial_log::copy(&mut f, &mut out, sanitizer.as_mut())?;
            out.flush()?;
            at = Some((meta.ino(), offset + read));
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
                outln!("{f} -> {name}")?;
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
                outln!("127.0.0.1:{api}->{}/tcp (Docker API)", r.spec.docker_port())?;
                for f in &r.spec.publish {
                    outln!("{f}")?;
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
                errln!("{note}");
            }
        }
        (None, Some(host)) => ctx.unpublish_swarm_port(&swarm, host)?,
        (None, None) => {
            for note in ctx.place_swarm_ports(&swarm)? {
                errln!("{note}");
            }
            for p in ctx.load_swarm(&swarm)?.ports {
                let via = match &p.node {
                    Some(n) if ctx.machine_state(n) == VmState::Running => format!("through {n}"),
                    _ => "no node running".to_string(),
                };
                outln!("{} (routing mesh, {via})", p.forward)?;
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
    n2d_vm::console::attach(
        &ctx.vm_handle(&record.spec.name),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )?;
    Ok(())
}
