//! Single-machine commands: create, ls, inspect, ip, start, stop, restart, rm, logs, console,
//! exec, cp.
//! Each is clap → n2d-orchestrate → print.

use crate::args::{CreateArgs, PortArgs, StartArgs, StopArgs};
use crate::context::Ctx;
use crate::error::{CommandStatus, UsageError};
use anyhow::Result;
use n2d_orchestrate::exec::{ExecIo, ExecRequest};
use n2d_orchestrate::inventory::MachineRequest;
use n2d_orchestrate::remote::relay::LineIssuer;
use n2d_orchestrate::{StopOutcome, VmState};
use n2d_spec::copy::CopyEnd;
use n2d_spec::machine::{truncate_chars, MachineName};
use n2d_spec::swarm::SwarmName;
use std::time::Duration;

pub fn create(ctx: &Ctx, args: CreateArgs) -> Result<()> {
    if let Some(host) = args.on.as_ref().filter(|h| !h.is_local()) {
        return create_on(ctx, host, &args);
    }
    if args.tls_relay {
        // Asked by another home's n2d over SSH: its CA issues the certificate.
        let stdin = std::io::BufReader::new(std::io::stdin());
        ctx.relay_certificates(std::sync::Arc::new(LineIssuer::new(stdin, std::io::stdout())));
    }
    let m = &args.machine;
    // Everything the user typed is checked before building or creating anything.
    let default_image = crate::commands::image::build_request(&Default::default(), ctx.init_env());
    ctx.set_cold_boots(args.cold);
    let record = ctx.create_machine_checked(
        &ctx.probe(),
        &args.name,
        &MachineRequest {
            cpus: m.cpus,
            memory: m.memory.clone(),
            disk: m.disk.clone(),
            network: m.network.clone(),
            ip: m.ip,
            ip_range: m.ip_range,
            insecure_tcp: m.insecure_tcp,
            labels: args.labels.clone(),
            publish: args.publish.clone(),
            expose: args.expose,
            mounts: args.mounts.clone(),
        },
        m.image.as_deref(),
        &default_image,
        Duration::from_secs(m.timeout),
    )?;
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

/// `create --on HOST`: the machine is made by HOST's n2d, its certificate issued here; then
/// pinged from here over TLS (the engine must be reachable from this host) and given a context.
fn create_on(ctx: &Ctx, host: &n2d_spec::host::HostName, args: &CreateArgs) -> Result<()> {
    let refuse = |what: &str| -> Result<()> {
        Err(UsageError::err(format!(
            "{what}: not for a machine on another host (--on), which is reached at its own address, over TLS"
        )))
    };
    let m = &args.machine;
    if !args.mounts.is_empty() {
        return Err(UsageError::err("--mount shares a folder of this host: not for a machine on another host (--on); run `n2d create --mount` on that host instead"));
    }
    if !args.publish.is_empty() || m.network.as_deref() == Some(n2d_spec::machine::USER_NETWORK) {
        return refuse("user-mode networking (--publish, --network user)");
    }
    if m.insecure_tcp {
        return refuse("--insecure-tcp");
    }
    if args.tls_relay {
        return Err(UsageError::err("--tls-relay is n2d's own, between hosts"));
    }
    let record = ctx.remote_host(host)?;
    let mut remote: Vec<String> = vec!["--memory".into(), m.memory.clone(), "--disk".into(), m.disk.clone()];
    remote.extend(["--timeout".into(), m.timeout.to_string()]);
    if let Some(cpus) = m.cpus {
        remote.extend(["--cpus".into(), cpus.to_string()]);
    }
    // The host's own placement (host add --network --ip-range) unless told otherwise here.
    let (network, ip_range) = match &m.network {
        Some(network) => (Some(network.clone()), m.ip_range),
        None => (record.network.clone(), m.ip_range.or(record.ip_range)),
    };
    if let Some(network) = network {
        remote.extend(["--network".into(), network]);
    }
    if let Some(ip) = m.ip {
        remote.extend(["--ip".into(), ip.to_string()]);
    } else if let Some(range) = ip_range {
        remote.extend(["--ip-range".into(), range.to_string()]);
    }
    if let Some(image) = &m.image {
        remote.extend(["--image".into(), image.clone()]);
    }
    for label in &args.labels {
        remote.extend(["--label".into(), label.clone()]);
    }
    if args.expose {
        remote.push("--expose".into());
    }
    if args.cold {
        remote.push("--cold".into());
    }
    let machine = ctx.create_on_host(host, &args.name, &remote)?;
    let endpoint = ctx.remote_endpoint(&machine);
    if let Err(e) = ctx.ping_endpoint(&endpoint) {
        // Made, but out of this host's reach: of no use here, so not kept.
        let _ = ctx.remove_remote(&machine, true);
        return Err(anyhow::Error::new(e).context(format!(
            "{} was made on host {host}, but this host cannot reach its engine at {}: it was removed again; place it on a bridge that reaches this host (`n2d host add {host} ... --network BRIDGE --ip-range RANGE`, or --network here)",
            machine.name, endpoint.docker_host
        )));
    }
    let context = ctx.register_machine_context(&endpoint);
    outln!("{}", machine.ip)?;
    outln!("Docker endpoint: {} (on host {host})", endpoint.docker_host)?;
    if let Some(context) = context {
        outln!(
            "Point the docker CLI at it: docker --context {context} info (or `docker context use {context}`)"
        )?;
    }
    outln!("Or set the environment: eval \"$(n2d env {})\"", machine.name)?;
    Ok(())
}

/// Registers (or refreshes) the docker context of a lone machine; a failure is only reported.
fn register_context(ctx: &Ctx, record: &n2d_orchestrate::MachineRecord) -> Option<String> {
    ctx.register_machine_context(&ctx.endpoint(record))
}

pub fn ls(ctx: &Ctx, json: bool, quiet: bool) -> Result<()> {
    let listing = ctx.list();
    if quiet {
        let adopted = listing.adopted.iter().map(|(n, _)| n.to_string());
        let remote = ctx.remote_machine_names().into_iter().map(|n| n.to_string());
        for name in listing.machines.iter().map(|(n, _)| n.to_string()).chain(adopted).chain(remote) {
            outln!("{name}")?;
        }
        return Ok(());
    }
    // Machines on other hosts, their states asked of their hosts (in parallel).
    let remote = ctx.list_remote_machines();
    if json {
        // One shape for every row (machines, adopted ones, unreadable records): every key,
        // null where it does not apply.
        let row = |name: &dyn std::fmt::Display, state: &str| {
            serde_json::json!({
                "name": name.to_string(), "state": state, "ip": null, "network": null, "endpoint": null,
                "image": null, "swarm": null, "ports": [], "newer_image": null, "host": null, "error": null,
            })
        };
        let rows: Vec<serde_json::Value> = listing
            .machines
            .iter()
            .map(|(name, m)| match m {
                Ok(m) => {
                    let r = &m.record;
                    let mut v = row(name, &state_of(m));
                    v["ip"] = serde_json::json!(r.ip);
                    v["network"] = serde_json::json!(r.spec.bridge);
                    v["endpoint"] = serde_json::json!(r.docker_host());
                    v["image"] = serde_json::json!(r.spec.image);
                    v["swarm"] = serde_json::json!(r.swarm);
                    v["ports"] = serde_json::json!(r.spec.publish);
                    v["newer_image"] = serde_json::json!(m.newer_image);
                    v["host"] = serde_json::json!("local");
                    v
                }
                Err(e) => {
                    let mut v = row(name, "error");
                    v["error"] = serde_json::json!(e);
                    v
                }
            })
            .chain(listing.adopted.iter().map(|(name, h)| match h {
                Ok(h) => {
                    let mut v = row(&h.name, "adopted");
                    v["endpoint"] = serde_json::json!(h.docker_host);
                    v
                }
                Err(e) => {
                    let mut v = row(name, "error");
                    v["error"] = serde_json::json!(e);
                    v
                }
            }))
            .chain(remote.iter().map(|r| {
                let mut v = row(&r.machine.name, &r.state);
                v["ip"] = serde_json::json!(r.machine.ip);
                v["network"] = serde_json::json!(r.machine.record.spec.bridge);
                v["image"] = serde_json::json!(r.machine.record.spec.image);
                v["endpoint"] = serde_json::json!(ctx.remote_endpoint(&r.machine).docker_host);
                v["swarm"] = serde_json::json!(r.machine.swarm);
                v["host"] = serde_json::json!(r.machine.host);
                v["error"] = serde_json::json!(r.error);
                v
            }))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    outln!(
        "{:<20} {:<9} {:<15} {:<26} {:<12} {:<10} PORTS",
        "NAME",
        "STATE",
        "IP",
        "ENDPOINT",
        "IMAGE",
        "HOST"
    )?;
    let mut outdated = Vec::new();
    for (name, m) in &listing.machines {
        match m {
            Ok(m) => {
                let r = &m.record;
                outln!(
                    "{:<20} {:<9} {:<15} {:<26} {:<12} {:<10} {}",
                    name,
                    state_of(m),
                    r.ip.to_string(),
                    r.docker_host(),
                    match &m.newer_image {
                        Some(newest) => {
                            outdated.push((name.clone(), truncate_chars(newest, 12)));
                            format!("{}*", truncate_chars(&r.spec.image, 11))
                        }
                        None => truncate_chars(&r.spec.image, 12).to_string(),
                    },
                    "local",
                    r.spec
                        .publish
                        .iter()
                        .map(|f| format!("{}->{}", f.host, f.guest))
                        .collect::<Vec<_>>()
                        .join(",")
                )?
            }
            Err(e) => outln!("{name:<20} error     {e}")?,
        }
    }
    // Machines booted elsewhere from an export (`n2d adopt`): n2d knows only their endpoint.
    for (name, h) in &listing.adopted {
        match h {
            Ok(h) => outln!(
                "{:<20} {:<9} {:<15} {:<26} {:<12} {:<10}",
                h.name.as_str(),
                "adopted",
                "-",
                h.docker_host,
                "-",
                "-"
            )?,
            Err(e) => outln!("{:<20} error     {e}", name.as_str())?,
        }
    }
    for r in &remote {
        outln!(
            "{:<20} {:<9} {:<15} {:<26} {:<12} {:<10}",
            r.machine.name.as_str(),
            r.state,
            r.machine.ip.to_string(),
            ctx.remote_endpoint(&r.machine).docker_host,
            truncate_chars(&r.machine.record.spec.image, 12),
            r.machine.host.as_str()
        )?;
        if let Some(e) = &r.error {
            errln!("{}: {e}", r.machine.name);
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
    v["dir"] = ctx.machine_dir(name).display().to_string().into();
    outln!("{}", serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

pub fn ip(ctx: &Ctx, name: &MachineName) -> Result<()> {
    if let Some(remote) = ctx.remote_machine(name)? {
        outln!("{}", remote.ip)?;
        return Ok(());
    }
    outln!("{}", ctx.load_record(name)?.ip)?;
    Ok(())
}

fn need_names(names: &[MachineName], verb: &str) -> Result<()> {
    if names.is_empty() {
        let all = if matches!(verb, "start" | "stop") { ", or --all" } else { "" };
        return Err(UsageError::err(format!("name the machines to {verb}, e.g. `n2d {verb} h1`{all}")));
    }
    Ok(())
}

pub fn start_cmd(ctx: &Ctx, args: &StartArgs) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    ctx.set_cold_boots(args.cold);
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
    let all = ctx.start_all(timeout);
    for (name, why) in &all.plan.unreadable {
        outln!("{name}: cannot be started: {why} (`n2d rm -f {name}` removes it)")?;
    }
    for name in &all.plan.running {
        outln!("{name}: already running")?;
    }
    for (name, result) in &all.started {
        match result {
            Ok(record) => {
                if record.swarm.is_none() {
                    register_context(ctx, record);
                }
                outln!("{name}: started")?
            }
            Err(e) => outln!("{name}: failed to start: {}", n2d_orchestrate::error::chain_text(e))?,
        }
    }
    all.result()?;
    if all.plan.stopped.is_empty() {
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

pub fn suspend(ctx: &Ctx, names: &[MachineName]) -> Result<()> {
    need_names(names, "suspend")?;
    for name in names {
        if ctx.suspend_machine(name)? {
            errln!("{name} suspended (`n2d start {name}` resumes it)");
        } else {
            errln!("{name} was not running");
        }
    }
    Ok(())
}

/// `stop` or `restart` (`verb`) of the machines named, or with `--all` of every running one.
pub fn stop_cmd(ctx: &Ctx, args: &StopArgs, verb: fn(&Ctx, &[MachineName], u64) -> Result<()>) -> Result<()> {
    if !args.all {
        return verb(ctx, &args.names, args.timeout);
    }
    let running: Vec<MachineName> = ctx
        .list()
        .machines
        .into_iter()
        .filter_map(|(_, m)| m.ok().filter(|m| m.state == VmState::Running).map(|m| m.record.spec.name))
        .collect();
    if running.is_empty() {
        errln!("no machine is running");
        return Ok(());
    }
    verb(ctx, &running, args.timeout)
}

pub fn restart(ctx: &Ctx, names: &[MachineName], timeout: u64) -> Result<()> {
    stop(ctx, names, timeout)?;
    start(ctx, names, Duration::from_secs(600))
}

pub fn rm(ctx: &Ctx, names: &[MachineName], force: bool) -> Result<()> {
    need_names(names, "rm")?;
    for name in names {
        if ctx.forget_adopted(name)? {
            ctx.unregister_machine_context(name);
            errln!("{name} forgotten (adopted: its VM, wherever it runs, is not touched)");
            continue;
        }
        ctx.remove_machine(name, force)?;
        ctx.unregister_machine_context(name);
        errln!("{name} removed");
    }
    Ok(())
}

/// `n2d logs NAME [-f] [-n N] [--raw]`: the serial log on stdout (see
/// `Orchestrator::write_log`).
pub fn logs(ctx: &Ctx, name: &MachineName, follow: bool, raw: bool, tail: Option<u64>) -> Result<()> {
    Ok(ctx.write_log(name, follow, raw, tail, crate::out::stdout())?)
}

/// `n2d port NAME [[HOST:]GUEST | --rm HOST]`: NAME is a machine, else a swarm.
/// One row of `port --json`: every key in every row.
fn port_row(host: u16, guest: u16, what: &str, through: Option<MachineName>) -> serde_json::Value {
    serde_json::json!({ "host_port": host, "guest_port": guest, "what": what, "through": through })
}

pub fn port(ctx: &Ctx, args: PortArgs) -> Result<()> {
    let machine = args.name.parse::<MachineName>().ok().filter(|m| ctx.machine_exists(m));
    if let Some(name) = machine {
        match (args.forward, args.remove) {
            (Some(f), _) => {
                ctx.publish_machine_port(&name, f)?;
                outln!("{f} -> {name}")?;
            }
            (None, Some(host)) => ctx.unpublish_machine_port(&name, host)?,
            (None, None) => {
                let (r, api) = ctx.machine_forwards(&name)?;
                if args.json {
                    let mut rows = vec![port_row(api, r.spec.docker_port(), "docker-api", None)];
                    rows.extend(r.spec.publish.iter().map(|f| port_row(f.host, f.guest, "published", None)));
                    outln!("{}", serde_json::to_string_pretty(&rows)?)?;
                    return Ok(());
                }
                outln!("127.0.0.1:{api}->{}/tcp (Docker API)", r.spec.docker_port())?;
                for f in &r.spec.publish {
                    outln!("{f}")?;
                }
            }
        }
        return Ok(());
    }
    let swarm: SwarmName = ctx.port_swarm(&args.name)?;
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
            let ports = ctx.load_swarm(&swarm)?.ports;
            let through = |node: &Option<MachineName>| {
                node.clone().filter(|n| ctx.machine_state(n) == VmState::Running)
            };
            if args.json {
                let rows: Vec<_> = ports
                    .iter()
                    .map(|p| port_row(p.forward.host, p.forward.guest, "routing-mesh", through(&p.node)))
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?)?;
                return Ok(());
            }
            for p in &ports {
                let via = match through(&p.node) {
                    Some(n) => format!("through {n}"),
                    None => "no node running".to_string(),
                };
                outln!("{} (routing mesh, {via})", p.forward)?;
            }
        }
    }
    Ok(())
}

pub fn console(ctx: &Ctx, name: &MachineName) -> Result<()> {
    Ok(ctx.attach_console(name, &mut std::io::stdout(), &mut std::io::stderr())?)
}

/// `n2d exec`: the command's exit status becomes n2d's ([`CommandStatus`]); a terminal when
/// stdin and stdout are one, unless `--no-tty`.
pub fn exec(
    ctx: &Ctx,
    name: &MachineName,
    argv: Vec<String>,
    env: Vec<String>,
    workdir: Option<String>,
    no_tty: bool,
) -> Result<()> {
    use std::io::IsTerminal;
    if let Some(bad) = env.iter().find(|pair| !pair.contains('=') || pair.starts_with('=')) {
        return Err(UsageError::err(format!("--env {bad}: write it as KEY=VALUE")));
    }
    let terminal = !no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let request = ExecRequest { argv, env, workdir, terminal };
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let io = ExecIo { stdin: Box::new(std::io::stdin()), stdout: &mut stdout, stderr: &mut stderr };
    match ctx.exec(name, request, io)? {
        0 => Ok(()),
        status => Err(CommandStatus(status).into()),
    }
}

/// `n2d cp`: says what landed where on stderr, as `docker cp` does.
pub fn copy(ctx: &Ctx, source: &CopyEnd, target: &CopyEnd) -> Result<()> {
    let report = ctx.copy(source, target)?;
    errln!("Copied {} to {}", human_bytes(report.bytes), report.target);
    Ok(())
}

/// `2.1 kB`, `14.0 MB`: decimal units, as `docker cp` says them.
fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.1} GB", bytes as f64 / 1e9),
    }
}

/// A machine's state as `ls` says it: running, stopped, or suspended (stopped, its running
/// state saved).
fn state_of(m: &n2d_orchestrate::inventory::ListedMachine) -> String {
    if m.suspended {
        "suspended".into()
    } else {
        m.state.to_string()
    }
}
