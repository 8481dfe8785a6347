//! The guest's PID 1. n2d carries a static musl build of n2d-init inside itself (built by
//! `build.rs`); `--init PATH` or `$N2D_INIT` override it, e.g. to try a changed init (read by
//! n2d-orchestrate, `n2d_orchestrate::image::guest_init`).

use n2d_orchestrate::image::InitChoice;
use std::path::PathBuf;

/// n2d-init for x86_64-unknown-linux-musl, as built with this n2d.
pub static EMBEDDED_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/n2d-init"));

/// The init to put in an image: `explicit` (`--init`), else `env` (`$N2D_INIT`, read with the
/// rest of the environment: `Ctx::from_vars`), else the embedded one.
pub fn init_choice(explicit: Option<PathBuf>, env: Option<PathBuf>) -> InitChoice {
    InitChoice { explicit, env, embedded: EMBEDDED_INIT }
}

/// The init `explicit`, `env` (`$N2D_INIT`) or n2d itself gives (for `n2d doctor`).
pub fn guest_init(
    explicit: Option<PathBuf>,
    env: Option<PathBuf>,
) -> anyhow::Result<n2d_orchestrate::image::GuestInit> {
    Ok(n2d_orchestrate::image::guest_init(&init_choice(explicit, env))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_init_is_a_static_x86_64_elf() {
        n2d_orchestrate::image::check_static_x86_64(EMBEDDED_INIT).unwrap();
        assert!(EMBEDDED_INIT.len() > 100_000, "suspiciously small: {} bytes", EMBEDDED_INIT.len());
    }
}
