//! `n2d adopt NAME --host tcp://…`: records a machine booted elsewhere from an export made
//! with `--for NAME` (checked by n2d-orchestrate's `adopt`), then registers its docker context.

use crate::args::AdoptArgs;
use crate::context::Ctx;
use anyhow::Result;

pub fn adopt(ctx: &Ctx, args: &AdoptArgs) -> Result<()> {
    let name = &args.name;
    let ep = ctx.adopt(name, &args.host)?;
    let context =
        ctx.register_machine_context(&ep).map(|c| format!(", `docker --context {c}`")).unwrap_or_default();
    errln!(
        "Adopted {name} at {}: `n2d env {name}`{context}, `n2d swarm add-host SWARM --host {name}`",
        args.host
    );
    Ok(())
}
