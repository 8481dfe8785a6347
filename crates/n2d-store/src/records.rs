//! The records n2d keeps: machines and swarms (network leases are host-wide: n2d-net).
//!
//! State is input: every record is validated as it is read, like what a user types, before any
//! of its values reaches `ip`, iptables, QEMU or a path ([`MachineRecord::from_json`],
//! [`AdoptedHost::from_json`], [`check_swarm_record`]). A record holding a value n2d would
//! refuse from the user (a tap that is not n2d's, a MAC with a QEMU option after it, an address
//! outside its subnet) is reported for that machine only ([`StoreError::InvalidRecord`]), like a
//! damaged one, and never acted on.

use crate::{read_state_file, write_json, Home, StoreError};
use n2d_spec::link::{parse_bridge_name, parse_n2d_mac, parse_tap_name};
use n2d_spec::machine::{split_label, MachineName, MachineSpec, USER_NETWORK};
use n2d_spec::ports::PortForward;
use n2d_spec::swarm::{LabelRule, NodeRole, SwarmName, SwarmSpec, SwarmSpecError, TlsPaths};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Why a record read back was refused: the field and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("its {field}: {reason}")]
pub struct RecordError {
    pub field: &'static str,
    pub reason: String,
}

fn refuse(field: &'static str, reason: impl std::fmt::Display) -> RecordError {
    RecordError { field, reason: reason.to_string() }
}

/// Longest image ID (a sha256 in hex).
const MAX_IMAGE_ID: usize = 64;

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
    /// The warm template it was cloned from (a directory name under its image's templates):
    /// its data disk is a copy-on-write layer over that template's, which stays while it is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_from: Option<String>,
}

/// Whether `name` can name a template directory: 1-128 of `a-z 0-9 . -`, not starting with a
/// dot (so never `.`, `..` or a hidden directory n2d is still making).
pub fn is_template_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

impl MachineRecord {
    /// A plausible record of a bridge machine at `ip` (tests of the crates above).
    #[doc(hidden)]
    pub fn example(name: &str, ip: Ipv4Addr) -> MachineRecord {
        use n2d_spec::machine::{MachineSpec, DEFAULT_DISK, DEFAULT_MEMORY};
        MachineRecord {
            spec: MachineSpec {
                name: name.parse().expect("a valid name"),
                cpus: 1,
                memory: DEFAULT_MEMORY,
                disk: DEFAULT_DISK,
                bridge: "brlan".into(),
                addresses: None,
                image: "img".into(),
                insecure_tcp: false,
                labels: Default::default(),
                publish: Vec::new(),
                expose: false,
                mounts: Vec::new(),
            },
            ip,
            prefix_len: 24,
            gateway: Ipv4Addr::new(ip.octets()[0], ip.octets()[1], ip.octets()[2], 1),
            mac: "52:54:00:00:00:01".into(),
            tap: "n2dt00000000".into(),
            swarm: None,
            api_port: None,
            warm_from: None,
        }
    }

    /// Parses a `machine.json` and validates it ([`MachineRecord::validate`]): the one way a
    /// record is read.
    pub fn from_json(bytes: &[u8]) -> Result<Result<MachineRecord, RecordError>, serde_json::Error> {
        let record: MachineRecord = serde_json::from_slice(bytes)?;
        Ok(record.validate().map(|()| record))
    }

    /// Checks every field as user input is checked, so that nothing read back from a record can
    /// name an interface n2d did not make, add an option to QEMU's command line, or lead outside
    /// the home: the spec's ranges, bridge and labels, the image ID, the swarm's name, the tap
    /// (n2d's naming scheme), the MAC (unicast, locally administered), the address (a host of its
    /// subnet, not the gateway) and, for user-mode networking, the API port.
    pub fn validate(&self) -> Result<(), RecordError> {
        let spec = &self.spec;
        spec.validate().map_err(|e| refuse("spec", e))?;
        for (key, value) in &spec.labels {
            split_label(&format!("{key}={value}"))
                .ok()
                .filter(|(k, _)| k == key)
                .ok_or_else(|| refuse("label", format!("{key:?} is not a valid KEY=VALUE label")))?;
        }
        let image = &spec.image;
        if image.is_empty()
            || image.len() > MAX_IMAGE_ID
            || !image.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        {
            return Err(refuse(
                "image",
                format!("{image:?} is not an image ID (1-64 lowercase letters and digits)"),
            ));
        }
        if let Some(swarm) = &self.swarm {
            swarm.parse::<SwarmName>().map_err(|e| refuse("swarm", e))?;
        }
        if let Some(template) = self.warm_from.as_deref().filter(|t| !is_template_name(t)) {
            return Err(refuse("warm_from", format!("{template:?} is not a template's name")));
        }
        parse_n2d_mac(&self.mac).map_err(|e| refuse("mac", e))?;
        check_address(self.ip, self.prefix_len, self.gateway)?;
        if let Some(range) = spec.addresses {
            if !range.contains(self.ip) {
                return Err(refuse(
                    "ip",
                    format!("{} is outside the addresses it may take ({range})", self.ip),
                ));
            }
        }
        match self.api_port {
            // User-mode networking: nothing host-wide, no tap.
            Some(port) => {
                if spec.bridge != USER_NETWORK {
                    return Err(refuse(
                        "api_port",
                        format!("{port} is set on a machine of bridge {:?}", spec.bridge),
                    ));
                }
                if port == 0 {
                    return Err(refuse("api_port", "0 is not a port"));
                }
                if !self.tap.is_empty() {
                    return Err(refuse("tap", format!("{:?} is set on a user-mode machine", self.tap)));
                }
            }
            None => {
                if spec.bridge == USER_NETWORK {
                    return Err(refuse("api_port", "none is recorded for a user-mode machine"));
                }
                parse_bridge_name(&spec.bridge).map_err(|e| refuse("bridge", e))?;
                parse_tap_name(&self.tap).map_err(|e| refuse("tap", e))?;
            }
        }
        Ok(())
    }

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

/// A machine's address on its subnet: `prefix_len` 1-30, `ip` and `gateway` hosts of one subnet
/// (not its network or broadcast address), distinct, none of them an address no machine can
/// have (unspecified, loopback, multicast, broadcast).
fn check_address(ip: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> Result<(), RecordError> {
    if !(1..=30).contains(&prefix_len) {
        return Err(refuse("prefix_len", format!("{prefix_len} is not 1 to 30")));
    }
    let mask = u32::MAX << (32 - prefix_len);
    let host = |a: Ipv4Addr| {
        let n = u32::from(a);
        !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast())
            && n & !mask != 0
            && n & !mask != !mask
    };
    if !host(gateway) {
        return Err(refuse("gateway", format!("{gateway} is not a host address of a /{prefix_len}")));
    }
    if !host(ip) || u32::from(ip) & mask != u32::from(gateway) & mask {
        return Err(refuse("ip", format!("{ip} is not a host of {gateway}/{prefix_len}")));
    }
    if ip == gateway {
        return Err(refuse("ip", format!("{ip} is its gateway")));
    }
    Ok(())
}

/// A Docker host that is not an n2d VM but joined the swarm as a worker
/// (`n2d swarm add-host`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalHost {
    /// Its hostname as the swarm sees it.
    pub name: String,
    /// e.g. `tcp://192.168.1.5:2376` or `unix:///var/run/docker.sock`.
    pub docker_host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsPaths>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What the store keeps about a swarm (as JSON), beside [`MachineRecord`]. Names are validated when it is read: a record
/// whose node list holds `../../x` is refused as damaged, never turned into a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmRecord {
    pub prefix: SwarmName,
    /// RFC 3339, set by the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default)]
    pub managers: Vec<MachineName>,
    #[serde(default)]
    pub workers: Vec<MachineName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_hosts: Vec<ExternalHost>,
    /// The label rules of the flags or cluster file, which `scale` applies to new nodes
    /// (left out of the file when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<LabelRule>,
    /// Published ports of a user-mode swarm: each forwarded to the routing mesh of one live
    /// node at a time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<SwarmPort>,
}

/// A swarm's published port and the node whose QEMU holds its forward now (`None`: no node
/// was running when it was last placed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmPort {
    pub forward: n2d_spec::ports::PortForward,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<MachineName>,
}

impl SwarmRecord {
    /// Records `node` in `role` unless it is there already.
    pub fn add_node(&mut self, role: NodeRole, node: &MachineName) {
        let list = match role {
            NodeRole::Manager => &mut self.managers,
            NodeRole::Worker => &mut self.workers,
        };
        if !list.contains(node) {
            list.push(node.clone());
        }
    }

    /// Takes `node` out of the record.
    pub fn forget_node(&mut self, node: &MachineName) {
        self.managers.retain(|n| n != node);
        self.workers.retain(|n| n != node);
    }

    /// Every machine of the swarm, managers first.
    pub fn nodes(&self) -> impl Iterator<Item = &MachineName> {
        self.managers.iter().chain(&self.workers)
    }

    /// The record of a validated spec (an invalid prefix or node name is refused here too).
    pub fn from_spec(spec: &SwarmSpec) -> Result<SwarmRecord, SwarmSpecError> {
        let plan = spec.plan();
        let names = |r: NodeRole| -> Result<Vec<MachineName>, SwarmSpecError> {
            plan.iter().filter(|p| p.role == r).map(|p| Ok(p.name.parse()?)).collect()
        };
        Ok(SwarmRecord {
            prefix: spec.prefix.parse()?,
            created_at: None,
            managers: names(NodeRole::Manager)?,
            workers: names(NodeRole::Worker)?,
            external_hosts: Vec::new(),
            labels: spec.labels.clone(),
            // Held first by the first manager, which boots with them.
            ports: {
                let first = names(NodeRole::Manager)?.into_iter().next();
                spec.publish.iter().map(|f| SwarmPort { forward: *f, node: first.clone() }).collect()
            },
        })
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
        let path = self.machine_file(name);
        let bytes = read_state_file(&path)?;
        let record = MachineRecord::from_json(&bytes)
            .map_err(|source| StoreError::Corrupt { path: path.clone(), source })?
            .map_err(|e| StoreError::InvalidRecord { path: path.clone(), reason: e.to_string() })?;
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

    /// A swarm's record; `None` when there is none. Its names are validated as it is read, and
    /// its external hosts ([`check_swarm_record`]).
    pub fn load_swarm(&self, name: &SwarmName) -> Result<Option<SwarmRecord>, StoreError> {
        let path = self.swarm_file(name);
        let record: Option<SwarmRecord> = crate::read_json_opt(&path)?;
        if let Some(r) = &record {
            check_swarm_record(r).map_err(|e| StoreError::InvalidRecord { path, reason: e.to_string() })?;
        }
        Ok(record)
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
            .map(|n| n.parse().map_err(|e: n2d_spec::swarm::SwarmSpecError| invalid_name("swarm", &n, e)))
            .collect()
    }
}

/// Checks what a swarm record holds beyond its names (validated by their types): each external
/// host's endpoint (`tcp://HOST:PORT` or `unix:///PATH`), its name and labels.
pub fn check_swarm_record(record: &SwarmRecord) -> Result<(), RecordError> {
    for host in &record.external_hosts {
        if let Some(path) = host.docker_host.strip_prefix("unix://") {
            if !path.starts_with('/') || path.len() > 4096 || path.chars().any(char::is_control) {
                return Err(refuse("external host", format!("{:?} is not unix:///PATH", host.docker_host)));
            }
        } else {
            check_docker_host(&host.docker_host).map_err(|e| refuse("external host", e))?;
        }
        check_host_name(&host.name).map_err(|e| refuse("external host", e))?;
        for (key, value) in &host.labels {
            split_label(&format!("{key}={value}")).ok().filter(|(k, _)| k == key).ok_or_else(|| {
                refuse("external host label", format!("{key:?} is not a valid KEY=VALUE label"))
            })?;
        }
    }
    if record.created_at.as_deref().is_some_and(|t| t.len() > 64 || t.chars().any(char::is_control)) {
        return Err(refuse("created_at", "not a time"));
    }
    Ok(())
}

/// A host name or IPv4 address: 1-253 letters, digits, '-' and '.', not starting with '-' or '.'.
fn check_host_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a host name or IPv4 address"))
    }
}

/// Checks a Docker endpoint `tcp://HOST:PORT`: HOST a name or an IPv4 address, PORT 1-65535.
/// The one check of `adopt --host`, adopted machines' records and swarms' external hosts.
pub fn check_docker_host(host: &str) -> Result<(String, u16), String> {
    let rest = host
        .strip_prefix("tcp://")
        .ok_or_else(|| format!("--host {host:?} is not tcp://HOST:PORT (e.g. tcp://192.168.1.50:2376)"))?;
    let (name, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("--host {host:?} has no port (e.g. tcp://{rest}:2376)"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("--host {host:?}: {port:?} is not a port number"))?;
    check_host_name(name).map_err(|e| format!("--host {host:?}: {e}"))?;
    Ok((name.to_string(), port))
}

/// The names `pick` takes from the entries of `dir`, sorted; none when `dir` cannot be read.
pub(crate) fn sorted_names(dir: &Path, pick: impl Fn(&std::fs::DirEntry) -> Option<String>) -> Vec<String> {
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
    use n2d_spec::swarm::apply_label_rules;

    fn record(name: &str) -> MachineRecord {
        let mut record = MachineRecord::example(name, Ipv4Addr::new(10, 77, 0, 2));
        record.spec.bridge = "n2d0".into();
        record
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
    fn a_records_template_is_a_plain_directory_name() {
        let mut r = record("a");
        r.warm_from = Some("tcg-1cpu-2048m-20g-bridge.1796000000123".into());
        r.validate().unwrap();
        for bad in ["", ".", "..", ".making-x", "../x", "a/b", "A", "x y", &"a".repeat(129)] {
            r.warm_from = Some(bad.into());
            let err = r.validate().unwrap_err().to_string();
            assert!(err.contains("warm_from"), "{bad:?}: {err}");
        }
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

    /// Sets `pointer` (a JSON pointer) of a record to `value`.
    fn patched(record: &MachineRecord, edits: &[(&str, serde_json::Value)]) -> serde_json::Value {
        let mut json = serde_json::to_value(record).unwrap();
        for (pointer, value) in edits {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            json.pointer_mut(parent).unwrap().as_object_mut().unwrap().insert(key.into(), value.clone());
        }
        json
    }

    fn user_record(name: &str) -> MachineRecord {
        let mut r = record(name);
        r.spec.bridge = "user".into();
        r.tap = String::new();
        r.api_port = Some(12376);
        r
    }

    /// Hostile values of every field: (what, the record's edits, the field named).
    pub(crate) fn hostile_machine_records() -> Vec<(&'static str, serde_json::Value, &'static str)> {
        use serde_json::json;
        let b = record("h1");
        let u = user_record("h1");
        vec![
            (
                "QEMU option after the MAC",
                patched(&b, &[("/mac", json!("52:54:00:00:00:01,romfile=/x"))]),
                "mac",
            ),
            ("multicast MAC", patched(&b, &[("/mac", json!("01:00:5e:00:00:01"))]), "mac"),
            ("vendor MAC", patched(&b, &[("/mac", json!("00:16:3e:00:00:01"))]), "mac"),
            ("empty MAC", patched(&b, &[("/mac", json!(""))]), "mac"),
            ("uplink as tap", patched(&b, &[("/tap", json!("eth0"))]), "tap"),
            ("bridge as tap", patched(&b, &[("/tap", json!("n2d0"))]), "tap"),
            ("tap option", patched(&b, &[("/tap", json!("n2dt00000000,script=/x"))]), "tap"),
            ("tap as ip option", patched(&b, &[("/tap", json!("-h"))]), "tap"),
            ("no tap on a bridge", patched(&b, &[("/tap", json!(""))]), "tap"),
            ("bridge with a comma", patched(&b, &[("/spec/bridge", json!("n2d0,x"))]), "spec"),
            ("bridge as an option", patched(&b, &[("/spec/bridge", json!("-all"))]), "spec"),
            ("bridge wildcard", patched(&b, &[("/spec/bridge", json!("br+"))]), "spec"),
            ("bridge path", patched(&b, &[("/spec/bridge", json!("../x"))]), "spec"),
            ("ip off its subnet", patched(&b, &[("/ip", json!("10.78.0.2"))]), "ip"),
            ("ip is the gateway", patched(&b, &[("/ip", json!("10.77.0.1"))]), "ip"),
            ("ip is the broadcast", patched(&b, &[("/ip", json!("10.77.0.255"))]), "ip"),
            ("ip is the network", patched(&b, &[("/ip", json!("10.77.0.0"))]), "ip"),
            ("prefix 0", patched(&b, &[("/prefix_len", json!(0))]), "prefix_len"),
            ("prefix 32", patched(&b, &[("/prefix_len", json!(32))]), "prefix_len"),
            (
                "loopback gateway",
                patched(&b, &[("/gateway", json!("127.0.0.1")), ("/ip", json!("127.0.0.2"))]),
                "gateway",
            ),
            (
                "ip outside --ip-range",
                patched(&b, &[("/spec/addresses", json!("10.77.0.50-10.77.0.60"))]),
                "ip",
            ),
            ("empty image", patched(&b, &[("/spec/image", json!(""))]), "image"),
            ("image path", patched(&b, &[("/spec/image", json!("../../x"))]), "image"),
            ("image option", patched(&b, &[("/spec/image", json!("abc,x"))]), "image"),
            ("long image", patched(&b, &[("/spec/image", json!("a".repeat(65)))]), "image"),
            ("swarm path", patched(&b, &[("/swarm", json!("../x"))]), "swarm"),
            ("label newline", patched(&b, &[("/spec/labels", json!({"a": "b\nc=d"}))]), "label"),
            ("label key space", patched(&b, &[("/spec/labels", json!({"a b": "c"}))]), "label"),
            ("label key equals", patched(&b, &[("/spec/labels", json!({"a=b": "c"}))]), "label"),
            ("no cpus", patched(&b, &[("/spec/cpus", json!(0))]), "spec"),
            ("API port on a bridge", patched(&b, &[("/api_port", json!(12376))]), "api_port"),
            ("API port 0", patched(&u, &[("/api_port", json!(0))]), "api_port"),
            (
                "user mode without API port",
                patched(&u, &[("/api_port", serde_json::Value::Null)]),
                "api_port",
            ),
            ("user mode with a tap", patched(&u, &[("/tap", json!("n2dt00000000"))]), "tap"),
            ("published port on a bridge", patched(&b, &[("/spec/publish", json!(["8080:80"]))]), "spec"),
        ]
    }

    #[test]
    fn hostile_machine_records_are_refused_for_that_machine_only() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.save_machine(&record("a")).unwrap();
        home.save_machine(&user_record("c")).unwrap();
        assert!(home.load_machine(&"a".parse().unwrap()).is_ok());
        assert!(home.load_machine(&"c".parse().unwrap()).is_ok());
        let b: MachineName = "h1".parse().unwrap();
        std::fs::create_dir_all(home.machine_dir(&b)).unwrap();
        let cases = hostile_machine_records();
        for (what, json, field) in &cases {
            std::fs::write(home.machine_dir(&b).join("machine.json"), json.to_string()).unwrap();
            let list = home.list_machines();
            let names: Vec<_> = list.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["a", "c", "h1"], "{what}");
            assert!(list[0].1.is_ok() && list[1].1.is_ok(), "{what}");
            match &list[2].1 {
                Err(StoreError::InvalidRecord { reason, .. }) => {
                    assert!(reason.starts_with(&format!("its {field}: ")), "{what}: {reason}");
                }
                other => panic!("{what}: {other:?}"),
            }
            let msg = home.load_machine(&b).unwrap_err().to_string();
            assert!(
                msg.contains("machine.json holds a value n2d refuses") && msg.ends_with("fix or remove it"),
                "{msg}"
            );
        }
        assert!(cases.len() >= 30);
    }

    #[test]
    fn hostile_adopted_hosts_and_external_hosts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let name: MachineName = "web1".parse().unwrap();
        let bad_hosts = [
            "http://10.0.0.5:2376",
            "tcp://10.0.0.5",
            "tcp://10.0.0.5:0",
            "tcp://10.0.0.5:70000",
            "tcp://-oProxyCommand=x:2376",
            "tcp://a b:2376",
            "tcp://a,b:2376",
            "tcp://:2376",
            "tcp://host\n:2376",
            "",
        ];
        for bad in bad_hosts {
            let json = serde_json::json!({"name": "web1", "docker_host": bad});
            crate::write_atomic(&home.adopted_file(&name), json.to_string().as_bytes(), 0o600).unwrap();
            let err = home.load_adopted(&name).unwrap_err();
            assert!(matches!(err, StoreError::InvalidRecord { .. }), "{bad}: {err:?}");
            let listed = home.list_adopted();
            assert!(listed.len() == 1 && listed[0].1.is_err(), "{bad}: listed as usable");
        }
        let good = serde_json::json!({"name": "web1", "docker_host": "tcp://web1.mshome.net:2376"});
        crate::write_atomic(&home.adopted_file(&name), good.to_string().as_bytes(), 0o600).unwrap();
        assert!(home.list_adopted()[0].1.is_ok());

        let swarm: SwarmName = "s".parse().unwrap();
        let external = |docker_host: &str, host_name: &str| {
            serde_json::json!({"prefix": "s", "managers": ["s-mngr-0"],
                "external_hosts": [{"name": host_name, "docker_host": docker_host}]})
        };
        for (docker_host, host_name) in [
            ("ssh://x", "ext"),
            ("tcp://x:2376,y", "ext"),
            ("unix://relative/sock", "ext"),
            ("tcp://10.0.0.9:2376", "-ext"),
            ("tcp://10.0.0.9:2376", "ext\nforged"),
        ] {
            let json = external(docker_host, host_name);
            crate::write_atomic(&home.swarm_file(&swarm), json.to_string().as_bytes(), 0o600).unwrap();
            let err = home.load_swarm(&swarm).unwrap_err();
            assert!(matches!(err, StoreError::InvalidRecord { .. }), "{docker_host} {host_name}: {err:?}");
        }
        for docker_host in ["tcp://10.0.0.9:2376", "unix:///var/run/docker.sock"] {
            let json = external(docker_host, "ext");
            crate::write_atomic(&home.swarm_file(&swarm), json.to_string().as_bytes(), 0o600).unwrap();
            assert!(home.load_swarm(&swarm).unwrap().is_some());
        }
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
        let names: Vec<String> =
            home.list_adopted().iter().map(|(n, h)| format!("{n}={}", h.is_ok())).collect();
        assert_eq!(names, ["web1=true", "web2=true"]);
        home.remove_adopted(&"web1".parse().unwrap()).unwrap();
        assert_eq!(home.list_adopted().len(), 1);
        assert!(home.remove_adopted(&"web1".parse().unwrap()).is_err());
    }

    #[test]
    fn swarm_records_keep_their_label_rules_and_old_ones_still_load() {
        let spec = SwarmSpec {
            labels: vec![LabelRule::parse("tier=db@workers").unwrap(), LabelRule::parse("env=dev").unwrap()],
            ..SwarmSpec::default()
        };
        let record = SwarmRecord::from_spec(&spec).unwrap();
        assert_eq!(record.labels, spec.labels);
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(r#""labels":["tier=db@workers","env=dev@all"]"#), "{json}");
        assert_eq!(serde_json::from_str::<SwarmRecord>(&json).unwrap(), record);
        // Written before label rules were kept: no field, no rules.
        let old: SwarmRecord =
            serde_json::from_str(r#"{"prefix":"n2d","managers":["n2d-mngr-0"],"workers":[]}"#).unwrap();
        assert!(old.labels.is_empty());
        let mut labels = BTreeMap::new();
        apply_label_rules(&spec.labels, "n2d-wrkr-7", NodeRole::Worker, &mut labels);
        assert_eq!(labels.len(), 2);
        labels.clear();
        apply_label_rules(&spec.labels, "n2d-mngr-1", NodeRole::Manager, &mut labels);
        assert_eq!(labels.keys().collect::<Vec<_>>(), ["env"]);
    }

    #[test]
    fn record_json() {
        let mut rec = SwarmRecord::from_spec(&SwarmSpec::default()).unwrap();
        assert_eq!(rec.managers, ["n2d-mngr-0".parse::<MachineName>().unwrap()]);
        assert_eq!(rec.workers.len(), 3);
        rec.external_hosts.push(ExternalHost {
            name: "laptop".into(),
            docker_host: "tcp://10.0.0.1:2376".into(),
            tls: Some(TlsPaths {
                ca: "/c/ca.pem".into(),
                cert: "/c/cert.pem".into(),
                key: "/c/key.pem".into(),
            }),
            labels: BTreeMap::from([("gpu".into(), "yes".into())]),
        });
        let json = serde_json::to_string(&rec).unwrap();
        assert!(!json.contains("created_at"));
        assert_eq!(serde_json::from_str::<SwarmRecord>(&json).unwrap(), rec);
        let min: SwarmRecord = serde_json::from_str(r#"{"prefix":"p"}"#).unwrap();
        assert!(min.managers.is_empty() && min.external_hosts.is_empty());
    }

    #[test]
    fn a_record_with_a_path_for_a_name_is_refused() {
        for json in [
            r#"{"prefix":"p","managers":["../../x"]}"#,
            r#"{"prefix":"p","workers":["/tmp/x"]}"#,
            r#"{"prefix":"p","managers":[".."]}"#,
            r#"{"prefix":"../p"}"#,
            r#"{"prefix":"/p/q"}"#,
        ] {
            assert!(serde_json::from_str::<SwarmRecord>(json).is_err(), "{json}");
        }
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

impl AdoptedHost {
    /// Parses a `hosts/NAME.json` and validates its endpoint ([`check_docker_host`]).
    pub fn from_json(bytes: &[u8]) -> Result<Result<AdoptedHost, RecordError>, serde_json::Error> {
        let host: AdoptedHost = serde_json::from_slice(bytes)?;
        Ok(check_docker_host(&host.docker_host).map(|_| host).map_err(|e| refuse("docker_host", e)))
    }
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
        let path = self.adopted_file(name);
        let bytes = match read_state_file(&path) {
            Err(StoreError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            other => other?,
        };
        let host = AdoptedHost::from_json(&bytes)
            .map_err(|source| StoreError::Corrupt { path: path.clone(), source })?
            .map_err(|e| StoreError::InvalidRecord { path: path.clone(), reason: e.to_string() })?;
        match Some(host) {
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

    /// Every adopted host, by name; a damaged or refused record is listed with its error (so
    /// `ls` shows it), a file whose name is not a machine name is not n2d's and is skipped.
    pub fn list_adopted(&self) -> Vec<(MachineName, Result<AdoptedHost, StoreError>)> {
        crate::remotes::list_named(&self.hosts_dir(), |n| self.load_adopted(n))
    }
}
