//! Builds the guest's PID 1 (n2d-init) as a static musl binary and leaves it in OUT_DIR, where
//! `src/guest_init.rs` embeds it: one `n2d` binary carries everything a VM needs, whether it was
//! built with `cargo build --release` of the workspace or `cargo install --path crates/n2d`.
//!
//! n2d-init is built by a nested cargo into a target directory of its own (a sibling of the
//! workspace's, shared by every profile), so the outer build's lock is never contended.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-musl";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let init_dir = manifest_dir.join("../n2d-init");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    for input in ["../n2d-init", "../n2d-proto", "../../Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", manifest_dir.join(input).display());
    }

    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if !target_installed(&rustc) {
        fail(&format!(
            "n2d embeds its guest init, built for {TARGET}, and that Rust target is not installed: run `rustup target add {TARGET}` (scripts/install.sh does)"
        ));
    }

    let target_dir = init_target_dir(&out_dir);
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(init_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // What the outer cargo sets for its own compilation must not leak into the guest's build
    // (clippy's wrapper, the host's encoded flags, a forced target).
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().unwrap_or_else(|e| fail(&format!("cannot run cargo to build n2d-init: {e}")));
    if !status.success() {
        fail(&format!("building n2d-init for {TARGET} failed ({status}); see the errors above"));
    }
    let built = target_dir.join(TARGET).join("release/n2d-init");
    std::fs::copy(&built, out_dir.join("n2d-init"))
        .unwrap_or_else(|e| fail(&format!("cannot copy {}: {e}", built.display())));
}

fn target_installed(rustc: &str) -> bool {
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return true; // let the build itself say what is wrong
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    sysroot.is_empty() || Path::new(&sysroot).join("lib/rustlib").join(TARGET).is_dir()
}

/// `<workspace target>/n2d-init`: found as the ancestor of OUT_DIR that cargo tagged with
/// CACHEDIR.TAG; OUT_DIR itself when there is none.
fn init_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(|target| target.join("n2d-init"))
        .unwrap_or_else(|| out_dir.join("n2d-init-target"))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
