//! What `n2d doctor` finds: one [`Check`] per line, and the report of a whole run.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// `create` works, but worse (slower, no internet in the VMs, no docker CLI...).
    Warn,
    /// `create` cannot work until this is fixed.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// One finding: what was checked, how it stands, what was seen, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub finding: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub(crate) fn ok(name: &'static str, finding: impl Into<String>) -> Check {
        Check { name, status: Status::Ok, finding: finding.into(), fix: None }
    }
    pub(crate) fn warn(name: &'static str, finding: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Warn, finding: finding.into(), fix: Some(fix.into()) }
    }
    pub(crate) fn fail(name: &'static str, finding: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Fail, finding: finding.into(), fix: Some(fix.into()) }
    }
}

/// `ok   qemu       QEMU 10.0.2 (qemu-system-x86_64)` or `FAIL disk ... — fix: ...`.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4} {:<10} {}", self.status.to_string(), self.name, self.finding)?;
        if let Some(fix) = &self.fix {
            write!(f, " — fix: {fix}")?;
        }
        Ok(())
    }
}

/// What `n2d doctor` found: notes for stderr (a repair, interrupted changes, the network
/// chosen), in order, then every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorReport {
    pub notes: Vec<String>,
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// How many checks failed: `create` cannot work on this host until they are fixed.
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| c.status == Status::Fail).count()
    }
}
