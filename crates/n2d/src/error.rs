//! The CLI's own error: a mistake in what the user typed.

/// A mistake in what the user typed: exit status 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    pub fn err(msg: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(UsageError(msg.into()))
    }
}

/// A command n2d ran for the user ended with this status, which becomes n2d's own (`n2d exec`);
/// the command said what it had to, so n2d prints nothing more.
#[derive(Debug, thiserror::Error)]
#[error("the command exited with status {0}")]
pub struct CommandStatus(pub i32);
