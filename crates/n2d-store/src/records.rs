//! The records n2d keeps: machines and network leases.

use crate::{read_json, read_json_opt, write_json, Home, StoreError};
use n2d_spec::machine::MachineSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A created machine: its spec plus what n2d allocated for it. Fixed for the machine's life,
/// so its IP (and the IP in its TLS certificate) never changes across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineRecord {
    pub spec: MachineSpec,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub tap: String,
    /// The swarm (prefix) this machine was created for, if any.
    #[serde(default)]
    pub swarm: Option<String>,
}

impl MachineRecord {
    pub fn docker_host(&self) -> String {
        format!("tcp://{}:{}", self.ip, self.spec.docker_port())
    }
}

/// A bridge n2d attaches machines to, and the IPs it has handed out on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRecord {
    pub bridge: String,
    /// The host's address on the bridge: the machines' gateway.
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    /// Whether n2d created the bridge (and so may delete it).
    pub created_by_n2d: bool,
    /// machine name -> IP
    #[serde(default)]
    pub leases: BTreeMap<String, Ipv4Addr>,
}

/// The outcome of reading one machine directory: a damaged one does not hide the others.
pub type MachineEntry = (String, Result<MachineRecord, StoreError>);

impl Home {
    fn machine_file(&self, name: &str) -> PathBuf {
        self.machine_dir(name).join("machine.json")
    }

    pub fn machine_exists(&self, name: &str) -> bool {
        self.machine_dir(name).exists()
    }

    pub fn load_machine(&self, name: &str) -> Result<MachineRecord, StoreError> {
        if !self.machine_file(name).exists() {
            return Err(StoreError::NoSuchMachine(name.to_string()));
        }
        read_json(&self.machine_file(name))
    }

    pub fn save_machine(&self, record: &MachineRecord) -> Result<(), StoreError> {
        write_json(&self.machine_file(record.spec.name.as_str()), record)
    }

    /// Every machine directory, sorted by name, each parsed on its own.
    pub fn list_machines(&self) -> Vec<MachineEntry> {
        let Ok(dir) = std::fs::read_dir(self.machines_dir()) else { return Vec::new() };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names.into_iter().map(|n| (n.clone(), self.load_machine(&n))).collect()
    }

    fn network_file(&self, bridge: &str) -> PathBuf {
        self.networks_dir().join(format!("{bridge}.json"))
    }

    pub fn load_network(&self, bridge: &str) -> Result<Option<NetworkRecord>, StoreError> {
        read_json_opt(&self.network_file(bridge))
    }

    pub fn save_network(&self, record: &NetworkRecord) -> Result<(), StoreError> {
        write_json(&self.network_file(&record.bridge), record)
    }

    /// The bridges n2d keeps records for.
    pub fn network_names(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.networks_dir()) else { return Vec::new() };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".json").map(str::to_string))
            .collect();
        names.sort();
        names
    }

    pub fn remove_network(&self, bridge: &str) -> Result<(), StoreError> {
        let path = self.network_file(bridge);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Remove { path, source: e }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use n2d_spec::machine::*;

    fn record(name: &str) -> MachineRecord {
        MachineRecord {
            spec: MachineSpec {
                name: name.parse().unwrap(),
                cpus: 1,
                memory: DEFAULT_MEMORY,
                disk: DEFAULT_DISK,
                bridge: "n2d0".into(),
                image: "img".into(),
                insecure_tcp: false,
                labels: Default::default(),
            },
            ip: Ipv4Addr::new(10, 77, 0, 2),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            mac: "52:54:00:00:00:01".into(),
            tap: "n2dt0".into(),
            swarm: None,
        }
    }

    #[test]
    fn one_corrupt_machine_does_not_hide_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.save_machine(&record("a")).unwrap();
        home.save_machine(&record("c")).unwrap();
        std::fs::create_dir_all(home.machine_dir("b")).unwrap();
        std::fs::write(home.machine_dir("b").join("machine.json"), b"garbage").unwrap();
        let list = home.list_machines();
        let names: Vec<_> = list.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(list[0].1.is_ok() && list[2].1.is_ok());
        assert!(matches!(list[1].1, Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn missing_machine_has_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Home::at(dir.path()).load_machine("nope").unwrap_err();
        assert_eq!(err.to_string(), "no machine named \"nope\" (see `n2d ls`)");
    }

    #[test]
    fn network_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        assert!(home.load_network("n2d0").unwrap().is_none());
        let mut net = NetworkRecord {
            bridge: "n2d0".into(),
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            prefix_len: 24,
            created_by_n2d: true,
            leases: Default::default(),
        };
        net.leases.insert("a".into(), Ipv4Addr::new(10, 77, 0, 2));
        home.save_network(&net).unwrap();
        assert_eq!(home.load_network("n2d0").unwrap(), Some(net));
        assert_eq!(home.network_names(), ["n2d0"]);
        home.remove_network("n2d0").unwrap();
        assert!(home.load_network("n2d0").unwrap().is_none());
        assert!(home.network_names().is_empty());
    }
}
