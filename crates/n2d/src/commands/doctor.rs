//! `n2d doctor`: the host checks, one line each (or JSON); exit 1 when one fails.

use crate::args::DoctorArgs;
use crate::context::Ctx;
use crate::doctor::{run_checks, Status, SystemProbe, Target};
use anyhow::{bail, Result};

pub fn run(ctx: &Ctx, args: DoctorArgs) -> Result<()> {
    if args.repair {
        if ctx.recover()?.is_empty() {
            errln!("nothing to repair: no change was left half done");
        }
    } else {
        let pending = ctx.home().intents().iter().filter(|e| !e.live).count();
        if pending > 0 {
            errln!("note: {pending} change(s) were interrupted (n2d was killed): `n2d doctor --repair` (or any command that changes state) completes or undoes them");
        }
    }
    let target =
        Target { bridge: args.network.unwrap_or_else(crate::commands::default_network), image: None };
    let checks = run_checks(&SystemProbe { ctx }, &target);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&checks)?)?;
    } else {
        for check in &checks {
            outln!("{check}")?;
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        bail!("{failed} check(s) failed: `n2d create` cannot work on this host until they are fixed");
    }
    Ok(())
}
