//! Progress display on stderr (stdout stays clean for data such as IPs and env lines).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One set of bars for the process, so parallel steps (a swarm's nodes) draw one line each.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

fn bars() -> &'static MultiProgress {
    BARS.get_or_init(MultiProgress::new)
}

/// Plain lines instead of spinners for the rest of the process: with `-v`, log lines and a
/// spinner redrawing itself would overwrite each other.
pub fn plain_lines() {
    let _ = BARS.set(MultiProgress::with_draw_target(ProgressDrawTarget::hidden()));
}

/// Prints a line above any active spinners.
pub fn say(line: impl AsRef<str>) {
    if bars().is_hidden() {
        errln!("{}", line.as_ref());
    } else {
        let _ = bars().println(line.as_ref());
    }
}

/// A spinner with a message and the elapsed time; a plain line per step when stderr is not a
/// terminal (CI logs).
pub struct Step {
    bar: ProgressBar,
    started: Instant,
    label: String,
}

impl Step {
    pub fn start(label: impl Into<String>) -> Step {
        let label = label.into();
        let bar = bars().add(ProgressBar::new_spinner());
        if bar.is_hidden() {
            errln!("{label}...");
        } else {
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"),
            );
            bar.set_message(label.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        Step { bar, started: Instant::now(), label }
    }

    pub fn set(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if self.bar.is_hidden() {
            errln!("  {}: {msg}", self.label);
        } else {
            self.bar.set_message(format!("{}: {msg}", self.label));
        }
    }

    pub fn done(self, summary: impl AsRef<str>) {
        self.bar.finish_and_clear();
        say(format!("{} ({:.1}s)", summary.as_ref(), self.started.elapsed().as_secs_f64()));
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
        bars().remove(&self.bar);
    }
}

/// The orchestration's progress on this terminal: spinners, or plain lines in CI logs.
pub struct Terminal;

impl n2d_orchestrate::Progress for Terminal {
    fn say(&self, line: &str) {
        say(line);
    }
    fn step(&self, label: &str) -> Box<dyn n2d_orchestrate::ProgressStep> {
        Box::new(Step::start(label))
    }
}

impl n2d_orchestrate::ProgressStep for Step {
    fn set(&self, msg: &str) {
        Step::set(self, msg);
    }
    fn done(self: Box<Self>, summary: &str) {
        Step::done(*self, summary);
    }
}
