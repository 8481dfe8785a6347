//! The other hosts this home runs machines on (`remotes/NAME.json`, see `n2d host add`) and
//! where each of its remote machines lives (`remote-machines/NAME.json`). A remote machine's
//! own record, disks and VM are in the remote host's home; this home keeps only which host
//! holds it and how to reach its engine, so every verb finds it and `ls` can mark it unknown
//! when its host does not answer.

use crate::{ensure_dir, read_json, write_json, Home, StoreError};
use n2d_spec::host::{HostName, SshUrl};
use n2d_spec::machine::MachineName;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A host that `n2d host add` checked and recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteHost {
    pub name: HostName,
    pub url: SshUrl,
    /// The remote n2d's version when it was added (`n2d --version`'s second word).
    pub version: String,
    /// The bridge there that its machines attach to (`host add --network`), and the addresses
    /// they may take on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<n2d_spec::address::IpRange>,
    /// Its number in this home's WireGuard links (`--network wireguard`): its link bridge has
    /// the subnet 10.78.N.0/24. Given on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_index: Option<u8>,
}

/// A machine of this home that runs on another host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteMachine {
    pub name: MachineName,
    pub host: HostName,
    /// The machine's address, where its Docker API answers (port 2376, TLS).
    pub ip: std::net::Ipv4Addr,
    /// The swarm it is a node of, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<String>,
    /// Its record as its host keeps it (its spec, address, network), as of its create: what
    /// this home needs to reach it as a swarm node.
    pub record: crate::MachineRecord,
}

impl Home {
    fn remotes_dir(&self) -> PathBuf {
        self.root().join("remotes")
    }

    fn remote_machines_dir(&self) -> PathBuf {
        self.root().join("remote-machines")
    }

    pub fn save_remote_host(&self, host: &RemoteHost) -> Result<(), StoreError> {
        ensure_dir(&self.remotes_dir())?;
        write_json(&self.remotes_dir().join(format!("{}.json", host.name)), host)
    }

    /// The recorded host of that name, if any (`local` never is).
    pub fn load_remote_host(&self, name: &HostName) -> Result<Option<RemoteHost>, StoreError> {
        load_named(self.remotes_dir().join(format!("{name}.json")), |h: &RemoteHost| &h.name == name)
    }

    pub fn remove_remote_host(&self, name: &HostName) -> Result<(), StoreError> {
        let path = self.remotes_dir().join(format!("{name}.json"));
        std::fs::remove_file(&path).map_err(|source| StoreError::Remove { path, source })
    }

    /// Every recorded host, by name; a damaged record is listed with its error.
    pub fn list_remote_hosts(&self) -> Vec<(HostName, Result<RemoteHost, StoreError>)> {
        list_named(&self.remotes_dir(), |n| self.load_remote_host(n))
    }

    /// Whether a machine of this home has that name, here or on another host.
    pub fn machine_name_taken(&self, name: &MachineName) -> Result<bool, StoreError> {
        Ok(self.machine_exists(name) || self.load_remote_machine(name)?.is_some())
    }

    pub fn save_remote_machine(&self, machine: &RemoteMachine) -> Result<(), StoreError> {
        ensure_dir(&self.remote_machines_dir())?;
        write_json(&self.remote_machines_dir().join(format!("{}.json", machine.name)), machine)
    }

    /// Where the machine of that name runs, if it is a remote one.
    pub fn load_remote_machine(&self, name: &MachineName) -> Result<Option<RemoteMachine>, StoreError> {
        let path = self.remote_machines_dir().join(format!("{name}.json"));
        load_named(path, |m: &RemoteMachine| &m.name == name)
    }

    pub fn remove_remote_machine(&self, name: &MachineName) -> Result<(), StoreError> {
        let path = self.remote_machines_dir().join(format!("{name}.json"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(|source| StoreError::Remove { path, source }),
        }
    }

    /// Every remote machine of this home, by name; a damaged record is listed with its error.
    pub fn list_remote_machines(&self) -> Vec<(MachineName, Result<RemoteMachine, StoreError>)> {
        list_named(&self.remote_machines_dir(), |n| self.load_remote_machine(n))
    }
}

/// Reads a record that must name itself as its file does.
pub(crate) fn load_named<T: serde::de::DeserializeOwned>(
    path: PathBuf,
    names_itself: impl Fn(&T) -> bool,
) -> Result<Option<T>, StoreError> {
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let record: T = read_json(&path)?;
    if !names_itself(&record) {
        let reason = "the file holds the record of another name".to_string();
        return Err(StoreError::InvalidRecord { path, reason });
    }
    Ok(Some(record))
}

/// Every record in `dir` whose file name (`NAME.json`) is a valid name, by name; a damaged or
/// refused record is listed with its error, a file named otherwise is not n2d's and is skipped.
pub(crate) fn list_named<N: std::str::FromStr, T>(
    dir: &std::path::Path,
    load: impl Fn(&N) -> Result<Option<T>, StoreError>,
) -> Vec<(N, Result<T, StoreError>)> {
    let names = crate::records::sorted_names(dir, |e| {
        e.file_name().to_string_lossy().strip_suffix(".json").map(str::to_string)
    });
    names
        .into_iter()
        .filter_map(|n| n.parse::<N>().ok())
        .filter_map(|n| match load(&n) {
            Ok(Some(record)) => Some((n, Ok(record))),
            Ok(None) => None,
            Err(e) => Some((n, Err(e))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_remote_machines_round_trip_and_a_misnamed_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path(), std::time::Duration::from_secs(1)).unwrap();
        let lab: HostName = "lab".parse().unwrap();
        let host = RemoteHost {
            name: lab.clone(),
            url: "ssh://me@lab:2222".parse().unwrap(),
            version: "0.1.0".into(),
            network: Some("brlan".into()),
            ip_range: Some("10.99.0.110-10.99.0.119".parse().unwrap()),
            link_index: Some(2),
        };
        home.save_remote_host(&host).unwrap();
        assert_eq!(home.load_remote_host(&lab).unwrap(), Some(host.clone()));
        assert_eq!(home.list_remote_hosts().len(), 1);
        let web: MachineName = "web".parse().unwrap();
        let m = RemoteMachine {
            name: web.clone(),
            host: lab.clone(),
            ip: "10.9.0.5".parse().unwrap(),
            swarm: None,
            record: crate::MachineRecord::example("web", "10.9.0.5".parse().unwrap()),
        };
        home.save_remote_machine(&m).unwrap();
        assert_eq!(home.load_remote_machine(&web).unwrap(), Some(m));
        std::fs::copy(dir.path().join("remotes/lab.json"), dir.path().join("remotes/other.json")).unwrap();
        let listed = home.list_remote_hosts();
        assert!(matches!(&listed[1], (n, Err(StoreError::InvalidRecord { .. })) if n.as_str() == "other"));
        home.remove_remote_machine(&web).unwrap();
        home.remove_remote_machine(&web).unwrap();
        assert_eq!(home.load_remote_machine(&web).unwrap(), None);
        home.remove_remote_host(&lab).unwrap();
        assert_eq!(home.load_remote_host(&lab).unwrap(), None);
    }
}
