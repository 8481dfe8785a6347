//! The `n2d` command line. `main` is one line; [`main_with_args`] runs the whole CLI
//! in-process, and [`main_with`] with the environment's variables given (tests call it).

#![forbid(unsafe_code)]

// First: its macros (`outln!`, `out!`, `errln!`) are used by the modules below.
#[macro_use]
pub mod out;
pub mod args;
pub mod commands;
pub mod context;
pub mod error;
pub mod guest_init;
pub mod progress;
pub mod verbose;

use clap::Parser;
use std::ffi::OsString;

pub use error::UsageError;

/// [`main_with`] with this process's environment: the one place it is read.
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    main_with(args, |k| std::env::var_os(k))
}

/// Parses `args`, runs the command with the environment's variables read through `vars`,
/// prints the whole error chain on failure and returns the exit status: 0 ok, 1 runtime
/// failure, 2 usage error (bad input, unknown machine), 130 interrupted.
pub fn main_with<I: IntoIterator<Item = OsString>>(args: I, vars: impl Fn(&str) -> Option<OsString>) -> i32 {
    // Everything n2d and the tools it runs (qemu-img, QEMU's sockets and logs) create is
    // private; the store sets exact modes on top of this.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let args: Vec<OsString> = args.into_iter().collect();
    // Kept whole for a verb that runs on a machine's own host (`commands::remote`).
    let _ = commands::remote::ARGS.set(args.iter().skip(1).cloned().collect());
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
    let log_env = vars(verbose::LOG_ENV);
    if cli.verbose > 0 || log_env.is_some() {
        progress::plain_lines();
    }
    let logging = verbose::filter(cli.verbose, log_env.as_ref()).map(verbose::init);
    match logging.and_then(|()| commands::run(cli.command, &vars)).and_then(|()| Ok(out::flush()?)) {
        Ok(()) => 0,
        Err(err) => {
            if let Some(io) = out::stdout_error(&err) {
                return out::exit_status(io);
            }
            if let Some(error::CommandStatus(status)) = err.downcast_ref() {
                return *status;
            }
            errln!("error: {err}");
            for cause in err.chain().skip(1) {
                errln!("  caused by: {cause}");
            }
            exit_code(&err)
        }
    }
}

/// The exit status of a failed command, from what its error means
/// (`n2d_orchestrate::ErrorKind`, which knows every layer's errors): the one place kinds become
/// statuses. The CLI's own usage errors ([`UsageError`]) are usage errors too.
fn exit_code(err: &anyhow::Error) -> i32 {
    use n2d_orchestrate::ErrorKind;
    let kind = match ErrorKind::of_chain(err.as_ref()) {
        ErrorKind::Failure if err.chain().any(|c| c.is::<UsageError>()) => ErrorKind::Usage,
        kind => kind,
    };
    match kind {
        ErrorKind::Interrupted => 130,
        ErrorKind::Usage => 2,
        ErrorKind::Failure => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_wait_for_the_state_lock_exits_130() {
        use n2d_orchestrate::error::StoreError;
        let err = anyhow::Error::new(StoreError::LockInterrupted { path: "/h/lock".into() });
        assert_eq!(exit_code(&err.context("cannot start m1")), 130);
        let timeout = StoreError::LockTimeout {
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

    #[test]
    fn each_kind_of_error_has_one_exit_status() {
        use n2d_orchestrate::Error;
        assert_eq!(exit_code(&UsageError::err("bad flag")), 2);
        assert_eq!(exit_code(&anyhow::Error::new(Error::Usage("bad".into())).context("n2d create")), 2);
        assert_eq!(exit_code(&anyhow::Error::new(Error::NoImageToExport)), 2);
        assert_eq!(exit_code(&anyhow::Error::new(Error::Interrupted { what: "forming" })), 130);
        assert_eq!(exit_code(&anyhow::Error::new(Error::Failed("disk full".into()))), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("anything else")), 1);
    }
}
