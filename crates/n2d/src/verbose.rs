//! `-v` and `N2D_LOG`: what n2d does (external commands, QEMU's command line, QMP and Docker
//! API calls, stages), as `tracing` events on stderr. Never on stdout, so `--json` output and
//! `n2d env` stay clean; without either, only warnings.

use crate::error::UsageError;
use std::ffi::OsString;
use tracing_subscriber::EnvFilter;

/// Overrides `-v`: tracing's filter syntax (`debug`, `n2d_vm=debug,n2d_exec=info`).
pub const LOG_ENV: &str = "N2D_LOG";

/// The filter: `N2D_LOG` when set, else one step per `-v` for n2d's own crates (every target
/// of n2d's begins with `n2d`), never more than warnings from the libraries under them.
pub fn filter(verbose: u8, env: Option<&OsString>) -> anyhow::Result<EnvFilter> {
    if let Some(spec) = env {
        let spec = spec.to_str().ok_or_else(|| UsageError::err(format!("{LOG_ENV} is not UTF-8")))?;
        return EnvFilter::try_new(spec).map_err(|e| {
            UsageError::err(format!(
                "{LOG_ENV}={spec:?} is not a log filter ({e}): use a level (error, warn, info, debug, \
                 trace) or TARGET=LEVEL pairs, e.g. {LOG_ENV}=n2d_vm=debug"
            ))
        });
    }
    let ours = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    Ok(EnvFilter::new(format!("warn,n2d={ours}")))
}

/// Installs the subscriber for this process (the first call wins: tests call `main_with` many
/// times in one process).
pub fn init(filter: EnvFilter) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directives(f: EnvFilter) -> std::collections::BTreeSet<String> {
        f.to_string().split(',').map(str::to_string).collect()
    }

    #[test]
    fn each_v_shows_more_of_n2d_and_no_more_of_the_libraries() {
        for (v, ours) in [(0, "n2d=warn"), (1, "n2d=info"), (2, "n2d=debug"), (7, "n2d=trace")] {
            assert_eq!(directives(filter(v, None).unwrap()), [ours, "warn"].map(String::from).into());
        }
    }

    #[test]
    fn n2d_log_overrides_v_and_a_bad_one_is_a_usage_error_naming_the_fix() {
        let env = OsString::from("n2d_vm=debug");
        assert_eq!(filter(1, Some(&env)).unwrap().to_string(), "n2d_vm=debug");
        let bad = OsString::from("n2d_vm=loud");
        let err = filter(0, Some(&bad)).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
        assert!(err.to_string().contains("N2D_LOG=\"n2d_vm=loud\" is not a log filter"), "{err}");
    }
}
