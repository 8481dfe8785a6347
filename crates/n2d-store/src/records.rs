//! The records n2d keeps: machines and swarms (network leases are host-wide: n2d-net).

use crate::{read_json, read_json_opt, write_json, Home, StoreError};
use n2d_spec::machine::{MachineName, MachineSpec};
use n2d_spec::ports::PortForward;
use n2d_spec::swarm::{SwarmName, SwarmRecord};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

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
    /// User-mode networking: the port on the host's 127.0.0.1 that reaches its Docker API (its
    /// `tap` is empty then). Kept across restarts, like its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_port: Option<u16>,
}

impl MachineRecord {
    /// On user-mode networking: reached through forwards on 127.0.0.1 (`api_port`), holding
    /// nothing host-wide.
    pub fn user_mode(&self) -> bool {
        self.api_port.is_some()
    }

    /// Where the host reaches its Docker engine: the forward on 127.0.0.1 under user-mode
    /// networking, its address on the bridge otherwise.
    pub fn docker_host(&self) -> String {
        match self.api_port {
            Some(port) => format!("tcp://127.0.0.1:{port}"),
            None => format!("tcp://{}:{}", self.ip, self.spec.docker_port()),
        }
    }

    /// The host's forwards to it (user-mode networking): its Docker API, then its published
    /// ports.
    pub fn forwards(&self) -> Vec<PortForward> {
        let api = self.api_port.map(|host| PortForward { host, guest: self.spec.docker_port() });
        api.into_iter().chain(self.spec.publish.iter().copied()).collect()
    }
}

/// The outcome of reading one machine directory: a damaged one does not hide the others.
pub type MachineEntry = (String, Result<MachineRecord, StoreError>);

impl Home {
    fn machine_file(&self, name: &MachineName) -> PathBuf {
        self.machine_dir(name).join("machine.json")
    }

    pub fn machine_exists(&self, name: &MachineName) -> bool {
        self.machine_dir(name).exists()
    }

    pub fn load_machine(&self, name: &MachineName) -> Result<MachineRecord, StoreError> {
        if !self.machine_file(name).exists() {
            return Err(StoreError::NoSuchMachine(name.to_string()));
        }
        let record: MachineRecord = read_json(&self.machine_file(name))?;
        if &record.spec.name != name {
            let reason = format!("{} holds the record of another machine", self.machine_file(name).display());
            return Err(invalid_name("machine", record.spec.name.as_str(), reason));
        }
        Ok(record)
    }

    pub fn save_machine(&self, record: &MachineRecord) -> Result<(), StoreError> {
        write_json(&self.machine_file(&record.spec.name), record)
    }

    /// Every machine directory, sorted by name, each parsed on its own (a directory whose name
    /// is not a machine name is reported, never read).
    pub fn list_machines(&self) -> Vec<MachineEntry> {
        let names = sorted_names(&self.machines_dir(), |e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (e.path().is_dir() && !name.starts_with('.')).then_some(name)
        });
        names
            .into_iter()
            .map(|n| {
                let record = match n.parse::<MachineName>() {
                    Ok(name) => self.load_machine(&name),
                    Err(e) => Err(invalid_name("machine", &n, e)),
                };
                (n, record)
            })
            .collect()
    }

    /// `swarms/<name>.json`.
    pub fn swarm_file(&self, name: &SwarmName) -> PathBuf {
        self.swarms_dir().join(format!("{name}.json"))
    }

    /// A swarm's record; `None` when there is none. Its names are validated as it is read.
    pub fn load_swarm(&self, name: &SwarmName) -> Result<Option<SwarmRecord>, StoreError> {
        read_json_opt(&self.swarm_file(name))
    }

    /// Writes a swarm's record as it is. Record changes go through [`Home::create_swarm_record`],
    /// [`Home::update_swarm`] and [`Home::remove_swarm`], which take the state lock and re-read.
    pub fn save_swarm(&self, record: &SwarmRecord) -> Result<(), StoreError> {
        write_json(&self.swarm_file(&record.prefix), record)
    }

    /// Writes the record of a new swarm, under the state lock; `Ok(false)` (nothing written)
    /// when a swarm of that name already has one, so a second create never overwrites the first.
    pub fn create_swarm_record(&self, record: &SwarmRecord) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        if self.load_swarm(&record.prefix)?.is_some() {
            return Ok(false);
        }
        self.save_swarm(record)?;
        Ok(true)
    }

    /// Changes a swarm's record under the state lock, on the record as it is now (re-read), so
    /// concurrent changes (a scale and an add-host) do not lose each other's update. Returns the
    /// record as saved; `None` when there is no such swarm (nothing is written).
    pub fn update_swarm(
        &self,
        name: &SwarmName,
        change: impl FnOnce(&mut SwarmRecord),
    ) -> Result<Option<SwarmRecord>, StoreError> {
        let _lock = self.lock()?;
        let Some(mut record) = self.load_swarm(name)? else { return Ok(None) };
        let before = record.clone();
        change(&mut record);
        if record != before {
            self.save_swarm(&record)?;
        }
        Ok(Some(record))
    }

    /// Removes a swarm's record (under the state lock); a missing one is fine.
    pub fn remove_swarm(&self, name: &SwarmName) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        remove_file(self.swarm_file(name))
    }

    /// The names of the swarm records, sorted; a file whose name is not a swarm name is
    /// reported as an error in its place.
    pub fn swarm_names(&self) -> Vec<Result<SwarmName, StoreError>> {
        let names = sorted_names(&self.swarms_dir(), |e| json_stem(e).filter(|n| !n.starts_with('.')));
        names
            .into_iter()
            .map(|n| n.parse().map_err(|e: n2d_spec::swarm::SpecError| invalid_name("swarm", &n, e)))
            .collect()
    }
}

/// The names `pick` takes from the entries of `dir`, sorted; none when `dir` cannot be read.
fn sorted_names(dir: &Path, pick: impl Fn(&std::fs::DirEntry) -> Option<String>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries.filter_map(|e| e.ok()).filter_map(|e| pick(&e)).collect();
    names.sort();
    names
}

/// `name` for an entry `name.json`.
fn json_stem(entry: &std::fs::DirEntry) -> Option<String> {
    entry.file_name().to_string_lossy().strip_suffix(".json").map(str::to_string)
}

fn invalid_name(what: &'static str, name: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::InvalidName { what, name: name.to_string(), reason: reason.to_string() }
}

/// Removes a file; a missing one is fine.
pub(crate) fn remove_file(path: PathBuf) -> Result<(), StoreError> {
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Remove { path, source: e }),
        _ => Ok(()),
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
                addresses: None,
                image: "img".into(),
                insecure_tcp: false,
                labels: Default::default(),
                publish: Vec::new(),
            },
            ip: Ipv4Addr::new(10, 77, 0, 2),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            mac: "52:54:00:00:00:01".into(),
            tap: "n2dt0".into(),
            swarm: None,
            api_port: None,
        }
    }

    #[test]
    fn one_corrupt_machine_does_not_hide_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.save_machine(&record("a")).unwrap();
        home.save_machine(&record("c")).unwrap();
        let b: MachineName = "b".parse().unwrap();
        std::fs::create_dir_all(home.machine_dir(&b)).unwrap();
        std::fs::write(home.machine_dir(&b).join("machine.json"), b"garbage").unwrap();
        let list = home.list_machines();
        let names: Vec<_> = list.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(list[0].1.is_ok() && list[2].1.is_ok());
        assert!(matches!(list[1].1, Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn missing_machine_has_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Home::at(dir.path()).load_machine(&"nope".parse().unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "no machine named \"nope\" (see `n2d ls`)");
    }

    #[test]
    fn a_swarm_record_cannot_lead_the_store_outside_its_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        let canary = dir.path().join("x");
        std::fs::create_dir_all(&canary).unwrap();
        let name: SwarmName = "s".parse().unwrap();
        for nodes in [r#"["../../x"]"#, r#"["/tmp/x"]"#, r#"[".."]"#, r#"["s-mngr-0", "../../x"]"#] {
            let json = format!(r#"{{"prefix":"s","managers":{nodes}}}"#);
            crate::write_atomic(&home.swarm_file(&name), json.as_bytes(), 0o600).unwrap();
            let err = home.load_swarm(&name).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{nodes}: {err}");
            assert!(format!("{:?}", anyhow_chain(&err)).contains("invalid machine name"), "{nodes}");
        }
        // Every path the store makes from a name stays under the home.
        let good: SwarmRecord = serde_json::from_str(r#"{"prefix":"s","managers":["s-mngr-0"]}"#).unwrap();
        home.save_swarm(&good).unwrap();
        let record = home.load_swarm(&name).unwrap().unwrap();
        for node in &record.managers {
            assert!(home.machine_dir(node).starts_with(home.machines_dir()));
        }
        assert!(home.swarm_file(&record.prefix).starts_with(home.swarms_dir()));
        // A file named like a path is listed as an error, not read.
        std::fs::write(home.swarms_dir().join("..json"), b"{}").unwrap();
        std::fs::write(home.swarms_dir().join("Bad.json"), b"{}").unwrap();
        let names = home.swarm_names();
        assert_eq!(names.len(), 2);
        assert!(names[0].is_err() && names[1].is_ok(), "{names:?}");
        home.remove_swarm(&name).unwrap();
        assert!(home.load_swarm(&name).unwrap().is_none());
        assert!(canary.exists());
    }

    fn anyhow_chain(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            s += &format!(": {c}");
            cur = c.source();
        }
        s
    }

    #[test]
    fn machine_directories_with_bad_names_are_reported_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        std::fs::create_dir_all(home.machines_dir().join("Bad_Name")).unwrap();
        let list = home.list_machines();
        assert_eq!(list.len(), 1);
        assert!(matches!(list[0].1, Err(StoreError::InvalidName { .. })));
    }

    #[test]
    fn a_machine_record_under_another_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.save_machine(&record("a")).unwrap();
        let b: MachineName = "b".parse().unwrap();
        std::fs::create_dir_all(home.machine_dir(&b)).unwrap();
        std::fs::copy(home.machines_dir().join("a/machine.json"), home.machine_dir(&b).join("machine.json"))
            .unwrap();
        assert!(matches!(home.load_machine(&b), Err(StoreError::InvalidName { .. })));
    }

    #[test]
    fn adopted_hosts_are_listed_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        assert!(home.list_adopted().is_empty());
        for name in ["web2", "web1"] {
            let host = AdoptedHost { name: name.parse().unwrap(), docker_host: "tcp://10.0.0.5:2376".into() };
            home.save_adopted(&host).unwrap();
        }
        std::fs::write(home.hosts_dir().join("Bad.json"), "{}").unwrap();
        let names: Vec<String> = home.list_adopted().iter().map(|h| h.name.to_string()).collect();
        assert_eq!(names, ["web1", "web2"]);
        home.remove_adopted(&"web1".parse().unwrap()).unwrap();
        assert_eq!(home.list_adopted().len(), 1);
        assert!(home.remove_adopted(&"web1".parse().unwrap()).is_err());
    }
}

/// A machine n2d did not boot: a disk exported with `n2d image export --for NAME`, booted by
/// another hypervisor and recorded by `n2d adopt NAME --host tcp://…` (`hosts/NAME.json`). Its
/// engine answers with a certificate from this home's CA, so the home's client certificate
/// reaches it, as it reaches a machine n2d runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptedHost {
    pub name: MachineName,
    /// `tcp://HOST:2376`
    pub docker_host: String,
}

impl Home {
    /// `hosts/`: the adopted machines.
    pub fn hosts_dir(&self) -> PathBuf {
        self.root().join("hosts")
    }

    fn adopted_file(&self, name: &MachineName) -> PathBuf {
        self.hosts_dir().join(format!("{name}.json"))
    }

    /// The adopted machine of that name, if any.
    pub fn load_adopted(&self, name: &MachineName) -> Result<Option<AdoptedHost>, StoreError> {
        let host: Option<AdoptedHost> = read_json_opt(&self.adopted_file(name))?;
        match host {
            Some(h) if &h.name != name => Err(invalid_name(
                "machine",
                h.name.as_str(),
                format!("{} holds the record of another machine", self.adopted_file(name).display()),
            )),
            other => Ok(other),
        }
    }

    pub fn save_adopted(&self, host: &AdoptedHost) -> Result<(), StoreError> {
        crate::ensure_dir(&self.hosts_dir())?;
        write_json(&self.adopted_file(&host.name), host)
    }

    /// Forgets an adopted machine (its VM, wherever it runs, is not touched).
    pub fn remove_adopted(&self, name: &MachineName) -> Result<(), StoreError> {
        let path = self.adopted_file(name);
        std::fs::remove_file(&path).map_err(|source| StoreError::Remove { path, source })
    }

    /// Every adopted machine whose record reads, sorted by name.
    pub fn list_adopted(&self) -> Vec<AdoptedHost> {
        let names = sorted_names(&self.hosts_dir(), |e| {
            e.file_name().to_string_lossy().strip_suffix(".json").map(str::to_string)
        });
        names
            .into_iter()
            .filter_map(|n| n.parse::<MachineName>().ok())
            .filter_map(|n| self.load_adopted(&n).ok().flatten())
            .collect()
    }
}
