//! The host checks live below the door, in `n2d_orchestrate::preflight`; this keeps the create
//! commands' one call to them.

use crate::context::Ctx;
pub use n2d_orchestrate::preflight::{NotReady, Target};

/// The checks before a create, on this host: fails with the failing lines, says the warnings.
pub fn preflight(ctx: &Ctx, target: &Target) -> Result<(), NotReady> {
    ctx.preflight(&ctx.probe(), target)
}
