//! A fault scenario (`n2d fault run FILE --swarm PREFIX`): timed steps, each one fault verb,
//! checked whole before anything runs.
//!
//! ```yaml
//! steps:
//!   - at: 10s
//!     partition: [n2d-wrkr-1]
//!     from: [n2d-mngr-0]          # optional: default, every other machine on its bridge
//!   - at: 20s
//!     delay: { node: n2d-wrkr-0, delay: 200ms, jitter: 20ms, loss: 1% }
//!   - at: 30s
//!     pause: n2d-mngr-0
//!   - at: 40s
//!     clear: all                  # or a list of nodes
//! ```

use crate::duration;
use crate::machine::MachineName;
use crate::shaping::{Percent, Rate, Shaping};
use serde::Deserialize;
use std::time::Duration;

/// A scenario file's largest size.
pub const MAX_SCENARIO_FILE: usize = 64 * 1024;
/// The latest a step may be.
pub const MAX_AT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    #[error("the scenario file is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("the scenario file is not valid: {0}")]
    Yaml(String),
    #[error("step {step}: {reason}")]
    Step { step: usize, reason: String },
    #[error("the scenario has no steps: give `steps:` a list of `- at: 10s` and one fault each")]
    Empty,
}

/// What one step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Partition {
        nodes: Vec<MachineName>,
        from: Vec<MachineName>,
    },
    Delay {
        node: MachineName,
        shaping: Shaping,
    },
    Pause {
        node: MachineName,
    },
    KillEngine {
        node: MachineName,
    },
    FillDisk {
        node: MachineName,
    },
    Clock {
        node: MachineName,
        offset_s: i64,
    },
    /// Every fault (`None`) or those of these nodes.
    Clear {
        nodes: Option<Vec<MachineName>>,
    },
}

impl Action {
    /// The nodes it names (checked to be the swarm's before the run).
    pub fn nodes(&self) -> Vec<&MachineName> {
        match self {
            Action::Partition { nodes, from } => nodes.iter().chain(from).collect(),
            Action::Delay { node, .. }
            | Action::Pause { node }
            | Action::KillEngine { node }
            | Action::FillDisk { node }
            | Action::Clock { node, .. } => vec![node],
            Action::Clear { nodes } => nodes.iter().flatten().collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// From the start of the run.
    pub at: Duration,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawClear {
    Word(String),
    Nodes(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelay {
    node: String,
    delay: String,
    jitter: Option<String>,
    loss: Option<String>,
    duplicate: Option<String>,
    reorder: Option<String>,
    rate: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClock {
    node: String,
    offset: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStep {
    at: String,
    partition: Option<Vec<String>>,
    from: Option<Vec<String>>,
    delay: Option<RawDelay>,
    pause: Option<String>,
    kill_engine: Option<String>,
    fill_disk: Option<String>,
    clock: Option<RawClock>,
    clear: Option<RawClear>,
}

/// `+5m` / `-30s` in whole seconds.
pub fn parse_offset(text: &str) -> Result<i64, String> {
    let bad = || format!("invalid clock offset {text:?}: use + or - and a duration, e.g. +5m or -30s");
    let (sign, rest) = match text.split_at_checked(1) {
        Some(("+", rest)) => (1, rest),
        Some(("-", rest)) => (-1, rest),
        _ => return Err(bad()),
    };
    let d = duration::parse(rest).map_err(|_| bad())?;
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        return Err(bad());
    }
    Ok(sign * d.as_secs() as i64)
}

impl Scenario {
    /// Parses and checks a whole scenario: sizes, YAML (no aliases), one verb per step, node
    /// names, durations, percentages, and times that never go back.
    pub fn from_yaml(text: &str) -> Result<Scenario, ScenarioError> {
        if text.len() > MAX_SCENARIO_FILE {
            return Err(ScenarioError::TooLarge { max: MAX_SCENARIO_FILE });
        }
        crate::yaml_scan::check(text.as_bytes(), 8).map_err(|e| ScenarioError::Yaml(format!("{e:?}")))?;
        let raw: RawScenario =
            serde_yaml_ng::from_str(text).map_err(|e| ScenarioError::Yaml(e.to_string()))?;
        if raw.steps.is_empty() {
            return Err(ScenarioError::Empty);
        }
        let mut steps = Vec::new();
        let mut last = Duration::ZERO;
        for (i, raw) in raw.steps.into_iter().enumerate() {
            let step = i + 1;
            let fail = |reason: String| ScenarioError::Step { step, reason };
            let at = duration::parse(&raw.at).map_err(|e| fail(e.to_string()))?;
            if at > MAX_AT {
                return Err(fail(format!("at: {} is later than an hour", raw.at)));
            }
            if at < last {
                return Err(fail(format!(
                    "at: {} is before the step above it: steps go in time order",
                    raw.at
                )));
            }
            last = at;
            let action = action_of(raw).map_err(fail)?;
            steps.push(Step { at, action });
        }
        Ok(Scenario { steps })
    }
}

fn name(text: &str) -> Result<MachineName, String> {
    text.parse::<MachineName>().map_err(|e| e.to_string())
}

fn names(list: &[String]) -> Result<Vec<MachineName>, String> {
    list.iter().map(|n| name(n)).collect()
}

fn action_of(raw: RawStep) -> Result<Action, String> {
    let verbs = [
        raw.partition.is_some(),
        raw.delay.is_some(),
        raw.pause.is_some(),
        raw.kill_engine.is_some(),
        raw.fill_disk.is_some(),
        raw.clock.is_some(),
        raw.clear.is_some(),
    ];
    match verbs.iter().filter(|v| **v).count() {
        1 => {}
        0 => {
            return Err(
                "no fault: give one of partition, delay, pause, kill-engine, fill-disk, clock, clear".into()
            )
        }
        _ => return Err("more than one fault: give each its own step".into()),
    }
    if raw.from.is_some() && raw.partition.is_none() {
        return Err("`from` goes with `partition` only".into());
    }
    if let Some(nodes) = raw.partition {
        if nodes.is_empty() {
            return Err("partition: name at least one node".into());
        }
        return Ok(Action::Partition { nodes: names(&nodes)?, from: names(&raw.from.unwrap_or_default())? });
    }
    if let Some(d) = raw.delay {
        let dur = |t: &str| duration::parse(t).map_err(|e| e.to_string());
        let pct = |t: &Option<String>| {
            t.as_deref().map(|t| t.parse::<Percent>().map_err(|e| e.to_string())).transpose()
        };
        let shaping = Shaping {
            delay: dur(&d.delay)?,
            jitter: d.jitter.as_deref().map(dur).transpose()?,
            loss: pct(&d.loss)?,
            duplicate: pct(&d.duplicate)?,
            reorder: pct(&d.reorder)?,
            rate: d.rate.as_deref().map(|r| r.parse::<Rate>().map_err(|e| e.to_string())).transpose()?,
        };
        return Ok(Action::Delay { node: name(&d.node)?, shaping });
    }
    if let Some(n) = raw.pause {
        return Ok(Action::Pause { node: name(&n)? });
    }
    if let Some(n) = raw.kill_engine {
        return Ok(Action::KillEngine { node: name(&n)? });
    }
    if let Some(n) = raw.fill_disk {
        return Ok(Action::FillDisk { node: name(&n)? });
    }
    if let Some(c) = raw.clock {
        return Ok(Action::Clock { node: name(&c.node)?, offset_s: parse_offset(&c.offset)? });
    }
    match raw.clear {
        Some(RawClear::Word(w)) if w == "all" => Ok(Action::Clear { nodes: None }),
        Some(RawClear::Word(w)) => Ok(Action::Clear { nodes: Some(vec![name(&w)?]) }),
        Some(RawClear::Nodes(list)) => Ok(Action::Clear { nodes: Some(names(&list)?) }),
        None => unreachable!("one verb was counted"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_parses_into_timed_actions() {
        let s = Scenario::from_yaml(
            "steps:\n  - at: 10s\n    partition: [n2d-wrkr-1]\n    from: [n2d-mngr-0]\n  - at: 20s\n    delay: { node: n2d-wrkr-0, delay: 200ms, loss: 1% }\n  - at: 25s\n    clock: { node: n2d-wrkr-0, offset: -30s }\n  - at: 40s\n    clear: all\n",
        )
        .unwrap();
        assert_eq!(s.steps.len(), 4);
        assert_eq!(s.steps[0].at, Duration::from_secs(10));
        assert!(
            matches!(&s.steps[0].action, Action::Partition { nodes, from } if nodes.len() == 1 && from.len() == 1)
        );
        assert!(
            matches!(&s.steps[1].action, Action::Delay { shaping, .. } if shaping.netem_args().join(" ") == "delay 200ms loss 1%")
        );
        assert_eq!(s.steps[2].action, Action::Clock { node: "n2d-wrkr-0".parse().unwrap(), offset_s: -30 });
        assert_eq!(s.steps[3].action, Action::Clear { nodes: None });
    }

    #[test]
    fn bad_scenarios_say_which_step_and_why() {
        for (text, says) in [
            ("steps: []\n", "no steps"),
            ("steps:\n  - at: 10s\n    explode: web\n", "unknown field `explode`"),
            ("steps:\n  - at: 10\n    pause: web\n", "step 1: invalid duration"),
            (
                "steps:\n  - at: 20s\n    pause: web\n  - at: 10s\n    clear: all\n",
                "step 2: at: 10s is before",
            ),
            ("steps:\n  - at: 2h\n    pause: web\n", "later than an hour"),
            ("steps:\n  - at: 1s\n", "no fault"),
            ("steps:\n  - at: 1s\n    pause: web\n    kill-engine: web\n", "more than one fault"),
            ("steps:\n  - at: 1s\n    pause: Web\n", "step 1: invalid machine name"),
            ("steps:\n  - at: 1s\n    delay: { node: web, delay: 200ms, loss: 300% }\n", "percentage"),
            ("steps:\n  - at: 1s\n    from: [db]\n    pause: web\n", "`from` goes with `partition`"),
            ("steps:\n  - at: 1s\n    pause: &a web\n  - at: 2s\n    pause: *a\n", "not valid"),
        ] {
            let err = Scenario::from_yaml(text).unwrap_err().to_string();
            assert!(err.contains(says), "{says}: {err}");
        }
    }
}
