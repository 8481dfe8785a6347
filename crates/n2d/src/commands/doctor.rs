//! `n2d doctor`: the host checks, one line each (or JSON); exit 1 when one fails.

use crate::args::DoctorArgs;
use crate::context::Ctx;
use anyhow::{bail, Result};
use n2d_orchestrate::preflight::DoctorRequest;

pub fn run(ctx: &Ctx, args: DoctorArgs) -> Result<()> {
    let request = DoctorRequest { repair: args.repair, network: args.network };
    let report = ctx.doctor(&ctx.probe(), &request)?;
    for note in &report.notes {
        errln!("{note}");
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report.checks)?)?;
    } else {
        for check in &report.checks {
            outln!("{check}")?;
        }
    }
    let failed = report.failed();
    if failed > 0 {
        bail!("{failed} check(s) failed: `n2d create` cannot work on this host until they are fixed");
    }
    Ok(())
}
