//! Faults injected on purpose (`n2d fault ...`), one record per machine under `faults/NAME.json`:
//! what was done, since when and until when, so that `fault ls` shows them, `fault clear`, `rm`
//! and `swarm rm` undo them, and one whose time is up is undone by the next n2d command, even
//! when the n2d that made it was killed.

use crate::remotes::{list_named, load_named};
use crate::{ensure_dir, write_json, Home, StoreError};
use n2d_spec::machine::MachineName;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// What a fault does to its machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum Fault {
    /// IPv4 between the machine and these addresses is dropped on its tap (both directions).
    Partition {
        /// The machines it is cut from, by name (what `fault ls` shows).
        from: Vec<String>,
        /// Their addresses, as they were when it was cut.
        addresses: Vec<Ipv4Addr>,
        /// The machine's tap on this host.
        tap: String,
    },
    /// Its outgoing packets go through netem inside the guest (`tc qdisc ... root netem`
    /// on eth0), with these arguments.
    Delay { netem: Vec<String> },
    /// Its vCPUs are frozen (QMP `stop`): the network sees a machine that answers nothing.
    Pause,
    /// Its data disk (Docker's `/var/lib/docker`) is filled by one file, leaving `leave_bytes`.
    FillDisk { leave_bytes: u64 },
    /// Its wall clock is set `offset_s` seconds away from the host's.
    Clock { offset_s: i64 },
    /// Its Docker engine was SIGKILLed and n2d-init keeps it down (`engine-down`).
    EngineDown,
}

impl Fault {
    /// `partition`, as `fault ls` shows the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition { .. } => "partition",
            Fault::Delay { .. } => "delay",
            Fault::Pause => "pause",
            Fault::FillDisk { .. } => "fill-disk",
            Fault::Clock { .. } => "clock",
            Fault::EngineDown => "kill-engine",
        }
    }

    /// What it does, in a few words.
    pub fn detail(&self) -> String {
        match self {
            Fault::Partition { from, .. } => format!("cut from {}", from.join(", ")),
            Fault::Delay { netem } => format!("netem {}", netem.join(" ")),
            Fault::Pause => "vCPUs frozen".into(),
            Fault::FillDisk { leave_bytes } => format!("data disk filled, {leave_bytes} bytes left"),
            Fault::Clock { offset_s } => format!("clock {offset_s:+}s from the host's"),
            Fault::EngineDown => "dockerd killed, kept down".into(),
        }
    }
}

/// A fault in force on a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRecord {
    pub machine: MachineName,
    pub fault: Fault,
    /// When it was made (ms since the Unix epoch).
    pub since_ms: u64,
    /// When it ends by itself (`--duration`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

impl FaultRecord {
    /// Whether its time is up at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.until_ms.is_some_and(|until| until <= now_ms)
    }
}

impl Home {
    fn faults_dir(&self) -> PathBuf {
        self.root().join("faults")
    }

    pub fn save_fault(&self, record: &FaultRecord) -> Result<(), StoreError> {
        ensure_dir(&self.faults_dir())?;
        write_json(&self.faults_dir().join(format!("{}.json", record.machine)), record)
    }

    /// The fault in force on `machine`, if any.
    pub fn load_fault(&self, machine: &MachineName) -> Result<Option<FaultRecord>, StoreError> {
        load_named(self.faults_dir().join(format!("{machine}.json")), |r: &FaultRecord| &r.machine == machine)
    }

    pub fn remove_fault(&self, machine: &MachineName) -> Result<(), StoreError> {
        let path = self.faults_dir().join(format!("{machine}.json"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(|source| StoreError::Remove { path, source }),
        }
    }

    /// Every fault in force, by machine; a damaged record is listed with its error.
    pub fn list_faults(&self) -> Vec<(MachineName, Result<FaultRecord, StoreError>)> {
        list_named(&self.faults_dir(), |n| self.load_fault(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_round_trip_expire_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path(), std::time::Duration::from_secs(1)).unwrap();
        let web: MachineName = "web".parse().unwrap();
        let record = FaultRecord {
            machine: web.clone(),
            fault: Fault::Partition {
                from: vec!["db".into()],
                addresses: vec![Ipv4Addr::new(10, 77, 0, 3)],
                tap: "n2dt1".into(),
            },
            since_ms: 1_000,
            until_ms: Some(31_000),
        };
        home.save_fault(&record).unwrap();
        assert_eq!(home.load_fault(&web).unwrap(), Some(record.clone()));
        assert_eq!(home.list_faults().len(), 1);
        assert_eq!(record.fault.kind(), "partition");
        assert_eq!(record.fault.detail(), "cut from db");
        assert!(!record.expired(30_999) && record.expired(31_000));
        home.remove_fault(&web).unwrap();
        home.remove_fault(&web).unwrap();
        assert!(home.list_faults().is_empty());
    }
}
