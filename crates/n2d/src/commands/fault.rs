//! `n2d fault ...`: faults on demand (n2d-orchestrate's `faults`).

use crate::args::FaultCommand;
use crate::context::Ctx;
use anyhow::Result;
use n2d_orchestrate::faults::{now_ms, FaultRow};
use serde::Serialize;

pub fn run(ctx: &Ctx, cmd: FaultCommand) -> Result<()> {
    match cmd {
        FaultCommand::Partition { names, from, duration } => {
            made(&ctx.partition(&names, &from, duration)?, duration);
            Ok(())
        }
        FaultCommand::Delay { name, delay, jitter, loss, duplicate, reorder, rate, duration } => {
            let shaping = n2d_spec::shaping::Shaping { delay, jitter, loss, duplicate, reorder, rate };
            made(&[ctx.delay(&name, &shaping, duration)?], duration);
            Ok(())
        }
        FaultCommand::Pause { name, duration } => {
            made(&[ctx.pause(&name, duration)?], duration);
            Ok(())
        }
        FaultCommand::FillDisk { name, leave, duration } => {
            let leave = leave
                .parse::<n2d_spec::machine::ByteSize>()
                .map_err(|e| n2d_orchestrate::Error::Usage(format!("--leave: {e}")))?;
            let fault = n2d_orchestrate::Fault::FillDisk { leave_bytes: leave.0 };
            made(&[ctx.guest_fault(&name, fault, duration)?], duration);
            Ok(())
        }
        FaultCommand::Clock { name, offset, duration } => {
            let offset_s =
                n2d_spec::scenario::parse_offset(&offset).map_err(n2d_orchestrate::Error::Usage)?;
            made(&[ctx.guest_fault(&name, n2d_orchestrate::Fault::Clock { offset_s }, duration)?], duration);
            Ok(())
        }
        FaultCommand::KillEngine { name, no_restart: true, duration } => {
            made(&[ctx.guest_fault(&name, n2d_orchestrate::Fault::EngineDown, duration)?], duration);
            Ok(())
        }
        FaultCommand::KillEngine { name, .. } => {
            let pid = ctx.kill_engine(&name)?;
            errln!("{name}: dockerd (pid {pid}) killed; the guest's supervisor starts it again");
            Ok(())
        }
        FaultCommand::Run { file, swarm, settle } => run_scenario(ctx, &file, &swarm, settle),
        FaultCommand::Ls { json, quiet } => ls(ctx, json, quiet),
        FaultCommand::Expire => {
            // Until no fault has a time left: sleep to the nearest end (at most a minute, so a
            // fault cleared or replaced meanwhile is seen), then end what is due.
            while let Some(next) = ctx.fault_rows().iter().filter_map(|r| r.record.as_ref()?.until_ms).min() {
                let wait = next.saturating_sub(now_ms()).min(60_000);
                std::thread::sleep(std::time::Duration::from_millis(wait));
                for line in ctx.expire_faults()? {
                    errln!("{line}");
                }
            }
            Ok(())
        }
        FaultCommand::Clear { names } => {
            let cleared = ctx.clear_faults(&names)?;
            for record in &cleared {
                errln!("{}: its {} is cleared", record.machine, record.fault.kind());
            }
            if cleared.is_empty() {
                errln!("No fault in force{}", if names.is_empty() { "" } else { " on those machines" });
            }
            Ok(())
        }
    }
}

/// Starts `n2d fault expire` in the background, its own process group, detached from this
/// terminal; if it cannot start, the next n2d command ends the fault (said).
fn start_expiry_waiter() {
    use std::os::unix::process::CommandExt;
    let started = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(["fault", "expire"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
    });
    if let Err(e) = started {
        errln!("warning: cannot start the waiter that ends the fault on time ({e}): the next n2d command after its time ends it");
    }
}

/// Says the faults made; with a duration, starts the background waiter (`n2d fault expire`)
/// that ends them on time.
fn made(records: &[n2d_orchestrate::FaultRecord], duration: Option<std::time::Duration>) {
    let until = match duration {
        Some(d) => format!(" for {} (or until `n2d fault clear`)", n2d_spec::duration::show(d)),
        None => " until `n2d fault clear`".into(),
    };
    for record in records {
        errln!("{}: {}{until}", record.machine, record.fault.detail());
    }
    if duration.is_some() {
        start_expiry_waiter();
    }
}

/// `n2d fault run`: the file read (at most 64 KiB) and checked, the steps run, the report.
fn run_scenario(
    ctx: &Ctx,
    file: &std::path::Path,
    swarm: &n2d_spec::swarm::SwarmName,
    settle: std::time::Duration,
) -> Result<()> {
    use std::io::Read;
    let mut text = String::new();
    let max = n2d_spec::scenario::MAX_SCENARIO_FILE as u64;
    std::fs::File::open(file)
        .and_then(|f| f.take(max + 1).read_to_string(&mut text))
        .map_err(|e| n2d_orchestrate::Error::Usage(format!("cannot read {}: {e}", file.display())))?;
    let scenario = n2d_spec::scenario::Scenario::from_yaml(&text)
        .map_err(|e| n2d_orchestrate::Error::Usage(format!("{}: {e}", file.display())))?;
    let say = |line: &str| errln!("{line}");
    let report = ctx.run_scenario(swarm, &scenario, settle, &say)?;
    outln!("Applied:")?;
    for e in &report.applied {
        outln!("  {:>6.1}s  {}", e.at.as_secs_f64(), e.what)?;
    }
    outln!("Nodes:")?;
    if report.changes.is_empty() {
        outln!("  no node went Down or changed leadership")?;
    }
    for e in &report.changes {
        outln!("  {:>6.1}s  {}", e.at.as_secs_f64(), e.what)?;
    }
    Ok(())
}

/// One `fault ls --json` row: every key in every row.
#[derive(Serialize)]
struct JsonRow<'a> {
    machine: &'a str,
    kind: Option<&'a str>,
    detail: Option<String>,
    since_unix_ms: Option<u64>,
    until_unix_ms: Option<u64>,
    error: Option<&'a str>,
}

fn json_row(row: &FaultRow) -> JsonRow<'_> {
    let r = row.record.as_ref();
    JsonRow {
        machine: row.machine.as_str(),
        kind: r.map(|r| r.fault.kind()),
        detail: r.map(|r| r.fault.detail()),
        since_unix_ms: r.map(|r| r.since_ms),
        until_unix_ms: r.and_then(|r| r.until_ms),
        error: row.error.as_deref(),
    }
}

fn ls(ctx: &Ctx, json: bool, quiet: bool) -> Result<()> {
    let rows = ctx.fault_rows();
    if quiet {
        for row in &rows {
            outln!("{}", row.machine)?;
        }
        return Ok(());
    }
    if json {
        let rows: Vec<JsonRow> = rows.iter().map(json_row).collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    let now = now_ms();
    outln!("{:<20} {:<10} {:<10} {:<10} {}", "MACHINE", "FAULT", "SINCE", "ENDS", "WHAT")?;
    for row in &rows {
        match &row.record {
            Some(r) => {
                let since = format!("{}s ago", now.saturating_sub(r.since_ms) / 1000);
                let ends = r.until_ms.map_or("on clear".to_string(), |u| {
                    format!("in {}s", u.saturating_sub(now).div_ceil(1000))
                });
                outln!(
                    "{:<20} {:<10} {:<10} {:<10} {}",
                    row.machine,
                    r.fault.kind(),
                    since,
                    ends,
                    r.fault.detail()
                )?
            }
            None => outln!("{:<20} {:<10} {}", row.machine, "?", row.error.as_deref().unwrap_or(""))?,
        }
    }
    Ok(())
}
