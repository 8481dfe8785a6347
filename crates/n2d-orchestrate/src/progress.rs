//! What the user is told while the orchestration works: the CLI draws spinners, tests stay
//! quiet (or keep the lines).

use std::sync::Mutex;

/// Where progress goes. `say` prints a line (above any spinners); `step` starts one. The lower
/// crates' notes (a wait for another n2d's lock, a firewall warning, a kill point) come through
/// `say` too ([`Orchestrator::system`](crate::Orchestrator::system) hands them an
/// `n2d_store::Notes` that calls it): nothing below the CLI prints.
pub trait Progress: Send + Sync {
    fn say(&self, line: &str);
    fn step(&self, label: &str) -> Box<dyn ProgressStep>;
}

/// One step with a changing message (a machine being created or started).
pub trait ProgressStep: Send {
    fn set(&self, msg: &str);
    /// The step succeeded; `summary` is what the user keeps.
    fn done(self: Box<Self>, summary: &str);
}

/// Says nothing; keeps the lines it was told, for tests.
#[derive(Default)]
pub struct Quiet {
    pub lines: Mutex<Vec<String>>,
}

impl Quiet {
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Progress for Quiet {
    fn say(&self, line: &str) {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).push(line.to_string());
    }
    fn step(&self, _label: &str) -> Box<dyn ProgressStep> {
        Box::new(QuietStep)
    }
}

struct QuietStep;

impl ProgressStep for QuietStep {
    fn set(&self, _msg: &str) {}
    fn done(self: Box<Self>, _summary: &str) {}
}

impl<P: Progress + ?Sized> Progress for std::sync::Arc<P> {
    fn say(&self, line: &str) {
        (**self).say(line)
    }
    fn step(&self, label: &str) -> Box<dyn ProgressStep> {
        (**self).step(label)
    }
}
