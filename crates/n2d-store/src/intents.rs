//! Intent journals: a multi-step change (create, rm, start, scale, swarm create and rm, image
//! build) writes what it is about to do to `intents/<op>-<target>-<pid>-<n>.json` before it
//! touches the host, records each step as it completes, and removes the file when it is done
//! (succeeded, or failed and rolled back). A file left behind names a change that was killed
//! midway (SIGKILL, OOM, a closed terminal, a second Ctrl-C): the next command, or `n2d doctor
//! --repair`, reads it and completes or undoes the change (n2d-orchestrate's `recover`).
//!
//! A journal whose process still runs is live and left alone: its pid *and* that process's
//! start time must match (a pid is reused), and within this process a journal is live while its
//! [`Journal`] handle exists. Dropping the handle without [`Journal::finish`] (a panic unwinding)
//! leaves the file for recovery, as a kill would.
//!
//! [`KillPoints`]: the test-only hook (`N2D_TEST_KILL_AT=create:after-lease`) that makes n2d
//! SIGKILL itself at a named step, so that the fault tests can leave exactly these files behind.

use crate::records::remove_file;
use crate::{read_json, write_json, Home, StoreError};
use n2d_spec::machine::MachineName;
use n2d_spec::swarm::SwarmName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The environment variable naming the step at which n2d SIGKILLs itself (test-only).
pub const KILL_AT_ENV: &str = "N2D_TEST_KILL_AT";

/// What a journal says is being changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Operation {
    /// `n2d create` (or one node of a swarm create or scale).
    Create { machine: MachineName },
    /// `n2d rm` (or a node removed by swarm rm or scale-down).
    Rm { machine: MachineName },
    /// `n2d start`.
    Start { machine: MachineName },
    /// `n2d swarm create`: the record is written first, then the nodes are made and joined.
    SwarmCreate { swarm: SwarmName },
    /// `n2d swarm rm`.
    SwarmRm { swarm: SwarmName },
    /// `n2d swarm scale`: the nodes it adds (by role) and removes.
    Scale {
        swarm: SwarmName,
        add_managers: Vec<MachineName>,
        add_workers: Vec<MachineName>,
        remove: Vec<MachineName>,
    },
    /// `n2d swarm upgrade`, one node at a time: the node being moved to `image` (drained,
    /// stopped, its record switched, started, made active again).
    SwarmUpgrade { swarm: SwarmName, node: MachineName, image: String },
    /// `n2d image build`: the staging tree under `images/` (a `.build-*` name, never a path:
    /// anything else is refused as the journal is read).
    ImageBuild {
        #[serde(deserialize_with = "build_tree_name")]
        staging: String,
    },
}

/// A staging tree's name as a journal may hold it: `.build-` then 1-128 letters, digits, '-'
/// and '_' (no '/', no '.', so never a path out of `images/`).
fn build_tree_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    let ok = name.strip_prefix(".build-").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 128
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    });
    if ok {
        Ok(name)
    } else {
        Err(serde::de::Error::custom(format!("{name:?} is not the name of a build tree (.build-ID-PID)")))
    }
}

impl Operation {
    /// The operation's name in kill points and file names: `create`, `swarm-create`...
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Create { .. } => "create",
            Operation::Rm { .. } => "rm",
            Operation::Start { .. } => "start",
            Operation::SwarmCreate { .. } => "swarm-create",
            Operation::SwarmRm { .. } => "swarm-rm",
            Operation::Scale { .. } => "scale",
            Operation::SwarmUpgrade { .. } => "swarm-upgrade",
            Operation::ImageBuild { .. } => "image-build",
        }
    }

    /// What it changes: a machine, a swarm, a build tree.
    pub fn target(&self) -> &str {
        match self {
            Operation::Create { machine } | Operation::Rm { machine } | Operation::Start { machine } => {
                machine.as_str()
            }
            Operation::SwarmCreate { swarm }
            | Operation::SwarmRm { swarm }
            | Operation::Scale { swarm, .. }
            | Operation::SwarmUpgrade { swarm, .. } => swarm.as_str(),
            Operation::ImageBuild { staging } => staging.trim_start_matches('.'),
        }
    }
}

/// One journal as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    #[serde(flatten)]
    pub op: Operation,
    /// The n2d process making the change.
    pub pid: u32,
    /// That process's start time (clock ticks since boot, from /proc/PID/stat), so a reused pid
    /// is not taken for it.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// The steps completed so far, in order.
    pub done: Vec<String>,
}

impl Intent {
    pub fn has(&self, step: &str) -> bool {
        self.done.iter().any(|s| s == step)
    }
}

/// Journals this process has open (live until finished or dropped).
static OPEN: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static SEQ: AtomicU64 = AtomicU64::new(0);

fn open_set() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    OPEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// The open journal of a change in progress. See the module documentation.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    intent: Intent,
    kill: KillPoints,
    finished: bool,
}

impl Journal {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn intent(&self) -> &Intent {
        &self.intent
    }

    /// Records `step` as done (an atomic rewrite), then passes the kill point
    /// `<op>:after-<step>`.
    pub fn step(&mut self, step: &str) -> Result<(), StoreError> {
        self.intent.done.push(step.to_string());
        write_json(&self.path, &self.intent)?;
        self.kill.hit(&format!("{}:after-{step}", self.intent.op.kind()));
        Ok(())
    }

    /// Passes the kill point `<op>:<point>` without recording anything.
    pub fn kill_point(&self, point: &str) {
        self.kill.hit(&format!("{}:{point}", self.intent.op.kind()));
    }

    /// The change is over (done, or failed and undone): the journal goes.
    pub fn finish(mut self) -> Result<(), StoreError> {
        self.finished = true;
        open_set().remove(&self.path);
        remove_file(self.path.clone())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if !self.finished {
            // Abandoned (a panic): the file stays for recovery, and is no longer live.
            open_set().remove(&self.path);
        }
    }
}

/// One journal found on disk.
#[derive(Debug)]
pub struct IntentEntry {
    pub path: PathBuf,
    pub intent: Result<Intent, StoreError>,
    /// Its process still runs (then it is not recovered).
    pub live: bool,
}

impl Home {
    pub fn intents_dir(&self) -> PathBuf {
        self.root.join("intents")
    }

    /// Writes the journal of `op` (nothing done yet). Take the state lock around this and the
    /// checks that make the target this change's own (a machine name not yet taken...).
    pub fn begin_intent(&self, op: Operation, kill: &KillPoints) -> Result<Journal, StoreError> {
        let pid = std::process::id();
        let name =
            format!("{}-{}-{pid}-{}.json", op.kind(), op.target(), SEQ.fetch_add(1, Ordering::Relaxed));
        let path = self.intents_dir().join(name);
        let intent = Intent { op, pid, pid_start: process_start(pid), done: Vec::new() };
        write_json(&path, &intent)?;
        open_set().insert(path.clone());
        let journal = Journal { path, intent, kill: kill.clone(), finished: false };
        journal.kill_point("after-journal");
        Ok(journal)
    }

    /// Every journal on disk, oldest first (by file name within a process), each read on its
    /// own: a damaged one is reported in its place.
    pub fn intents(&self) -> Vec<IntentEntry> {
        let Ok(entries) = std::fs::read_dir(self.intents_dir()) else { return Vec::new() };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                !name.starts_with('.') && name.ends_with(".json")
            })
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let intent: Result<Intent, StoreError> = read_json(&path);
                let live = match &intent {
                    Ok(i) => is_live(&path, i),
                    Err(_) => false,
                };
                IntentEntry { path, intent, live }
            })
            .collect()
    }

    /// Removes a journal recovery has dealt with. Only a file directly under `intents/`.
    pub fn drop_intent(&self, path: &Path) -> Result<(), StoreError> {
        if path.parent() != Some(self.intents_dir().as_path()) {
            return Ok(());
        }
        remove_file(path.to_path_buf())
    }
}

/// Whether the process that wrote `intent` still runs it.
fn is_live(path: &Path, intent: &Intent) -> bool {
    if intent.pid == std::process::id() {
        return open_set().contains(path);
    }
    match (process_start(intent.pid), intent.pid_start) {
        (None, _) => false,
        (Some(now), Some(then)) => now == then,
        // No start time recorded: trust the pid.
        (Some(_), None) => true,
    }
}

/// The start time of process `pid` (field 22 of /proc/PID/stat, clock ticks since boot);
/// `None` when there is no such process.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field 22 is index 19.
    let start = fields.get(19)?.parse().ok()?;
    // A zombie has finished its work.
    (fields.first() != Some(&"Z")).then_some(start)
}

/// How a kill point ends the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMode {
    /// SIGKILL, as the OOM killer or `kill -9` would (`N2D_TEST_KILL_AT`).
    Sigkill,
    /// Panics instead, for unit tests in one process: rollbacks do nothing while a panic
    /// unwinds, so the state is left as a kill leaves it.
    Panic,
}

/// Test-only: the named step (`create:after-lease`) at which n2d kills itself. Compiled in
/// always so the fault tests run the binary users run; unset, every kill point is a no-op.
#[derive(Debug, Clone, Default)]
pub struct KillPoints {
    at: Option<(String, KillMode)>,
    /// Where "killing myself" is said before the kill.
    notes: crate::Notes,
    /// Whether the point was reached (a panicking one fires once: the other threads of a
    /// parallel create go on, as if they had finished just before a kill).
    fired: Arc<AtomicBool>,
}

impl KillPoints {
    /// The value of `$N2D_TEST_KILL_AT` (SIGKILL at that point); none when unset or blank.
    pub fn parse(value: Option<&str>) -> KillPoints {
        let at = value.map(str::trim).filter(|v| !v.is_empty());
        KillPoints { at: at.map(|a| (a.to_string(), KillMode::Sigkill)), ..KillPoints::default() }
    }

    /// Says where it kills through `notes` (the orchestrator's progress).
    pub fn with_notes(mut self, notes: crate::Notes) -> KillPoints {
        self.notes = notes;
        self
    }

    /// The point it kills at, if any.
    pub fn point(&self) -> Option<&str> {
        self.at.as_ref().map(|(at, _)| at.as_str())
    }

    pub fn none() -> KillPoints {
        KillPoints::default()
    }

    /// Panics at `point` (unit tests).
    pub fn panic_at(point: &str) -> KillPoints {
        KillPoints { at: Some((point.to_string(), KillMode::Panic)), ..KillPoints::default() }
    }

    /// Whether the kill point was reached.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Ends the process here if `point` is the one named.
    pub fn hit(&self, point: &str) {
        let Some((at, mode)) = &self.at else { return };
        if at != point || self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        match mode {
            KillMode::Sigkill => {
                self.notes.say(&format!("n2d: {KILL_AT_ENV}={point}: killing myself (SIGKILL)"));
                let _ =
                    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
                // SIGKILL cannot be caught; never go on past the point.
                std::process::abort();
            }
            KillMode::Panic => panic!("simulated kill at {point}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kill_points_are_parsed_from_the_settings_value() {
        assert_eq!(super::KillPoints::parse(None).point(), None);
        assert_eq!(super::KillPoints::parse(Some("  ")).point(), None);
        assert_eq!(
            super::KillPoints::parse(Some(" create:after-lease ")).point(),
            Some("create:after-lease")
        );
        // Another point is a no-op.
        super::KillPoints::parse(Some("create:after-lease")).hit("rm:after-stop");
    }

    use super::*;

    fn machine(n: &str) -> MachineName {
        n.parse().unwrap()
    }

    #[test]
    fn a_journal_is_live_while_open_and_left_for_recovery_when_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let mut j =
            home.begin_intent(Operation::Create { machine: machine("h1") }, &KillPoints::none()).unwrap();
        j.step("dir").unwrap();
        let found = home.intents();
        assert_eq!(found.len(), 1);
        assert!(found[0].live);
        let intent = found[0].intent.as_ref().unwrap();
        assert!(intent.has("dir") && !intent.has("lease"));
        assert_eq!(intent.pid, std::process::id());
        drop(j);
        let found = home.intents();
        assert!(!found[0].live, "abandoned: dead");
        home.drop_intent(&found[0].path).unwrap();
        assert!(home.intents().is_empty());

        let j = home.begin_intent(Operation::Rm { machine: machine("h1") }, &KillPoints::none()).unwrap();
        j.finish().unwrap();
        assert!(home.intents().is_empty());
    }

    #[test]
    fn another_process_journal_is_live_only_while_that_process_runs() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let intent = Intent {
            op: Operation::Start { machine: machine("h1") },
            pid,
            pid_start: process_start(pid),
            done: vec![],
        };
        write_json(&home.intents_dir().join("start-h1-x.json"), &intent).unwrap();
        assert!(home.intents()[0].live);
        // A reused pid (another start time) is not the writer.
        let reused = Intent { pid_start: Some(1), ..intent.clone() };
        write_json(&home.intents_dir().join("start-h1-x.json"), &reused).unwrap();
        assert!(!home.intents()[0].live);
        write_json(&home.intents_dir().join("start-h1-x.json"), &intent).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!home.intents()[0].live);
    }

    #[test]
    fn the_journal_format_is_plain_json() {
        let intent = Intent {
            op: Operation::Scale {
                swarm: "s".parse().unwrap(),
                add_managers: vec![],
                add_workers: vec![machine("s-wrkr-1")],
                remove: vec![],
            },
            pid: 7,
            pid_start: Some(9),
            done: vec!["nodes".into()],
        };
        let json = serde_json::to_value(&intent).unwrap();
        assert_eq!(json["op"], "scale");
        assert_eq!(json["swarm"], "s");
        assert_eq!(json["add_workers"][0], "s-wrkr-1");
        let back: Intent = serde_json::from_value(json).unwrap();
        assert_eq!(back, intent);
        // A name that is not a machine name is refused as the journal is read.
        let bad = serde_json::json!({"op": "create", "machine": "../x", "pid": 1, "done": []});
        assert!(serde_json::from_value::<Intent>(bad).is_err());
        // So is a build tree that is a path, or not a build tree.
        for staging in ["../../x", "/etc", ".build-../x", ".build-", ".rm-x", "x", ".build-a/b", ".build-a,b"]
        {
            let bad = serde_json::json!({"op": "image-build", "staging": staging, "pid": 1, "done": []});
            assert!(serde_json::from_value::<Intent>(bad).is_err(), "{staging}");
        }
        let good = serde_json::json!({"op": "image-build", "staging": ".build-feedface0011-4242", "pid": 1, "done": []});
        assert!(serde_json::from_value::<Intent>(good).is_ok());
    }

    #[test]
    #[should_panic(expected = "simulated kill at create:after-dir")]
    fn a_panic_kill_point_panics_at_its_step_only() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let kill = KillPoints::panic_at("create:after-dir");
        let mut j = home.begin_intent(Operation::Create { machine: machine("h1") }, &kill).unwrap();
        kill.hit("create:after-lease");
        j.step("dir").unwrap();
    }
}
