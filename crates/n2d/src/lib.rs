//! The `n2d` command line. `main` is one line; [`main_with_args`] runs the whole CLI
//! in-process (tests call it too).

// First: its macros (`outln!`, `out!`, `errln!`) are used by the modules below.
#[macro_use]
pub mod out;
pub mod args;
pub mod commands;
pub mod context;
pub mod docker_context;
pub mod doctor;
pub mod error;
pub mod guest_init;
pub mod progress;

use clap::Parser;
use std::ffi::OsString;

pub use error::UsageError;

/// Parses `args`, runs the command, prints the whole error chain on failure and returns the
/// exit status: 0 ok, 1 runtime failure, 2 usage error (bad input, unknown machine), 130
/// interrupted.
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    // Everything n2d and the tools it runs (qemu-img, QEMU's sockets and logs) create is
    // private; the store sets exact modes on top of this.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = match args::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version go to stdout, which may be a closed pipe or a full disk.
            return match e.print().and_then(|()| std::io::Write::flush(&mut std::io::stdout())) {
                Err(io) if !e.use_stderr() => out::exit_status(&io),
                _ => e.exit_code(),
            };
        }
    };
    match commands::run(cli.command).and_then(|()| Ok(out::flush()?)) {
        Ok(()) => 0,
        Err(err) => {
            if let Some(io) = out::stdout_error(&err) {
                return out::exit_status(io);
            }
            errln!("error: {err}");
            for cause in err.chain().skip(1) {
                errln!("  caused by: {cause}");
            }
            exit_code(&err)
        }
    }
}

fn exit_code(err: &anyhow::Error) -> i32 {
    let orchestration = |c: &(dyn std::error::Error + 'static), test: fn(&n2d_orchestrate::Error) -> bool| {
        c.downcast_ref::<n2d_orchestrate::Error>().is_some_and(test)
    };
    if err.chain().any(|c| {
        orchestration(c, n2d_orchestrate::Error::is_interrupted)
            || matches!(c.downcast_ref(), Some(n2d_vm::VmError::Interrupted { .. }))
            || matches!(c.downcast_ref(), Some(n2d_store::StoreError::LockInterrupted { .. }))
            || c.downcast_ref::<n2d_export::ExportError>()
                .is_some_and(n2d_export::ExportError::is_interrupted)
    }) {
        return 130;
    }
    let usage = err.chain().any(|c| {
        c.is::<UsageError>()
            || orchestration(c, n2d_orchestrate::Error::is_usage)
            || c.is::<n2d_spec::machine::MachineSpecError>()
            || c.is::<n2d_spec::swarm::SwarmSpecError>()
            || c.downcast_ref::<n2d_store::StoreError>().is_some_and(n2d_store::StoreError::is_usage)
            || c.downcast_ref::<n2d_store::safe_fs::InputFileError>()
                .is_some_and(n2d_store::safe_fs::InputFileError::is_usage)
            || matches!(c.downcast_ref(), Some(n2d_image::BuildError::UnusableInit { .. }))
            || c.downcast_ref::<n2d_image::ImageError>().is_some_and(n2d_image::ImageError::is_usage)
            || c.downcast_ref::<n2d_image::BuildError>().is_some_and(n2d_image::BuildError::is_usage)
            || c.downcast_ref::<n2d_net::NetError>().is_some_and(n2d_net::NetError::is_usage)
    });
    if usage {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_wait_for_the_state_lock_exits_130() {
        let err = anyhow::Error::new(n2d_store::StoreError::LockInterrupted { path: "/h/lock".into() });
        assert_eq!(exit_code(&err.context("cannot start m1")), 130);
        let timeout = n2d_store::StoreError::LockTimeout {
            path: "/h/lock".into(),
            holder: Some(42),
            waited: std::time::Duration::from_secs(120),
        };
        let msg = timeout.to_string();
        assert_eq!(
            msg,
            "timed out after 120s waiting for the state lock /h/lock, held by pid 42: if that n2d is stuck, stop it"
        );
        assert_eq!(exit_code(&anyhow::Error::new(timeout)), 1);
    }
}
