//! The guest's PID 1. n2d carries a static musl build of n2d-init inside itself (built by
//! `build.rs`); `--init PATH` or `$N2D_INIT` override it, e.g. to try a changed init.

use anyhow::Result;
use n2d_image::GuestInit;
use std::path::PathBuf;

/// n2d-init for x86_64-unknown-linux-musl, as built with this n2d.
pub static EMBEDDED_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/n2d-init"));

/// The largest `--init` read: n2d-init, static with musl, is about 2 MiB in release and tens of
/// MiB as a debug build with its symbols; a cap well above both.
const MAX_INIT_BYTES: u64 = 256 << 20;

/// The init to put in an image: `explicit` (`--init`), else `$N2D_INIT`, else the embedded one.
pub fn guest_init(explicit: Option<PathBuf>) -> Result<GuestInit> {
    match explicit.or_else(|| std::env::var_os("N2D_INIT").map(PathBuf::from)) {
        Some(path) => {
            // A regular file within the cap: a FIFO or /dev/zero is refused (exit 2), not read.
            let bytes = match n2d_store::safe_fs::read_input(&path, MAX_INIT_BYTES, "a guest init") {
                Ok(bytes) => bytes,
                Err(e @ n2d_store::safe_fs::InputFileError::Open { .. }) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "cannot read the guest init {} (from --init or N2D_INIT)",
                        path.display()
                    )))
                }
                Err(e) => {
                    return Err(crate::error::UsageError::err(format!("{e} (from --init or N2D_INIT)")))
                }
            };
            Ok(GuestInit { bytes, source: path.display().to_string() })
        }
        None => Ok(GuestInit { bytes: EMBEDDED_INIT.to_vec(), source: "built into n2d".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_init_is_a_static_x86_64_elf() {
        n2d_image::check_static_x86_64(EMBEDDED_INIT).unwrap();
        assert!(EMBEDDED_INIT.len() > 100_000, "suspiciously small: {} bytes", EMBEDDED_INIT.len());
    }
}
