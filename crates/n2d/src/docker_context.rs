//! Docker contexts live below the door, in `n2d_orchestrate::contexts`; this keeps the
//! commands' calls (and `tests/docker_context_cli.rs`'s imports) as they were, saying what went
//! wrong on this terminal.

use n2d_exec::Runner;
pub use n2d_orchestrate::contexts::*;

/// [`ensure`], saying what went wrong on stderr instead of failing (see
/// `n2d_orchestrate::contexts::register`).
pub fn register(runner: &dyn Runner, spec: &ContextSpec, env_hint: &str) -> Option<String> {
    n2d_orchestrate::contexts::register(runner, &crate::progress::Terminal, spec, env_hint)
}

/// [`remove`], with a warning on stderr instead of an error.
pub fn unregister(runner: &dyn Runner, owner: &Owner) {
    n2d_orchestrate::contexts::unregister(runner, &crate::progress::Terminal, owner)
}
