//! `n2d fault ...`: faults on demand (n2d-orchestrate's `faults`).

use crate::args::FaultCommand;
use crate::context::Ctx;
use anyhow::Result;
use n2d_orchestrate::faults::{now_ms, FaultRow};
use serde::Serialize;

pub fn run(ctx: &Ctx, cmd: FaultCommand) -> Result<()> {
    match cmd {
        FaultCommand::Partition { names, from, duration } => {
            for record in ctx.partition(&names, &from, duration)? {
                errln!("{}: {}{}", record.machine, record.fault.detail(), until(duration));
            }
            Ok(())
        }
        FaultCommand::Delay { name, delay, jitter, loss, duplicate, reorder, rate, duration } => {
            let shaping = n2d_spec::shaping::Shaping { delay, jitter, loss, duplicate, reorder, rate };
            let record = ctx.delay(&name, &shaping, duration)?;
            errln!("{}: {}{}", record.machine, record.fault.detail(), until(duration));
            Ok(())
        }
        FaultCommand::Pause { name, duration } => {
            let record = ctx.pause(&name, duration)?;
            errln!("{}: {}{}", record.machine, record.fault.detail(), until(duration));
            Ok(())
        }
        FaultCommand::FillDisk { name, leave, duration } => {
            let leave = leave
                .parse::<n2d_spec::machine::ByteSize>()
                .map_err(|e| n2d_orchestrate::Error::Usage(format!("--leave: {e}")))?;
            let fault = n2d_orchestrate::Fault::FillDisk { leave_bytes: leave.0 };
            let record = ctx.guest_fault(&name, fault, duration)?;
            errln!("{}: {}{}", record.machine, record.fault.detail(), until(duration));
            Ok(())
        }
        FaultCommand::Clock { name, offset, duration } => {
            let offset_s = clock_offset(&offset)?;
            let record = ctx.guest_fault(&name, n2d_orchestrate::Fault::Clock { offset_s }, duration)?;
            errln!("{}: {}{}", record.machine, record.fault.detail(), until(duration));
            Ok(())
        }
        FaultCommand::Ls { json, quiet } => ls(ctx, json, quiet),
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

/// `+5m` / `-30s` in seconds.
fn clock_offset(text: &str) -> Result<i64> {
    let bad = || {
        n2d_orchestrate::Error::Usage(format!(
            "invalid clock offset {text:?}: use + or - and a duration, e.g. +5m or -30s"
        ))
    };
    let (sign, rest) = match text.split_at_checked(1) {
        Some(("+", rest)) => (1, rest),
        Some(("-", rest)) => (-1, rest),
        _ => return Err(bad().into()),
    };
    let d = n2d_spec::duration::parse(rest).map_err(|_| bad())?;
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        return Err(bad().into());
    }
    Ok(sign * d.as_secs() as i64)
}

/// How long a fault lasts, as said when it is made.
fn until(duration: Option<std::time::Duration>) -> String {
    match duration {
        Some(d) => format!(" for {} (or until `n2d fault clear`)", n2d_spec::duration::show(d)),
        None => " until `n2d fault clear`".into(),
    }
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
