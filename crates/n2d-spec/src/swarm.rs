//! Swarm specs: what `n2d swarm create` should build (from flags or a
//! cluster file), the per-node plan derived from it, scale planning and the
//! persistent record of a swarm. Pure data and validation; no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::machine::MachineName;
use crate::yaml_scan::ScanError;

/// Default node-name prefix.
pub const DEFAULT_PREFIX: &str = "n2d";
/// Default number of managers.
pub const DEFAULT_MANAGERS: u32 = 1;
/// Default number of workers.
pub const DEFAULT_WORKERS: u32 = 3;
/// Upper bound on nodes in one swarm (managers + workers). Each is a VM on
/// this host, so this is a sanity limit rather than a Docker one.
pub const MAX_NODES: u32 = 64;
/// Longest machine/host name we generate (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// Largest cluster file accepted, checked on its bytes before any YAML parsing (64 nodes with
/// overrides and labels fit in a few KiB).
pub const MAX_CLUSTER_FILE: usize = 64 * 1024;
/// Deepest nesting of mappings and sequences in a cluster file (its schema needs 4).
pub const MAX_CLUSTER_DEPTH: usize = 16;

/// Errors in a swarm spec. Each message names the problem and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwarmSpecError {
    #[error("cluster file: {0}")]
    Yaml(String),
    #[error("cluster file is larger than {max} bytes (MAX_CLUSTER_FILE), far more than 64 nodes need: is it the right file?")]
    FileTooLarge { max: usize },
    #[error("cluster file is not UTF-8 (first bad byte at offset {offset}): save it as UTF-8")]
    NotUtf8 { offset: usize },
    #[error("cluster file nests deeper than {max} levels (MAX_CLUSTER_DEPTH, line {line}): a cluster file needs at most 4")]
    TooDeep { max: usize, line: u64 },
    #[error("cluster file uses a YAML anchor or alias (&name / *name, line {line}), which n2d does not accept: write the values out, or quote a value that starts with & or *")]
    Alias { line: u64 },
    #[error(
        "a swarm needs at least one manager: use --managers 1 (or 3 or 5 to \
         survive manager failures; odd numbers keep a raft quorum)"
    )]
    NoManagers,
    #[error("{total} nodes requested, but n2d allows at most {max} per swarm: lower --managers/--workers")]
    TooManyNodes { total: u64, max: u32 },
    #[error("invalid swarm name (prefix) {prefix:?}: {reason}")]
    BadPrefix { prefix: String, reason: String },
    #[error("node name {name:?} is {len} characters; names must be at most {max}: use a shorter prefix")]
    NameTooLong { name: String, len: usize, max: usize },
    #[error("label {rule:?}: {reason}")]
    BadLabel { rule: String, reason: String },
    #[error("label {rule:?}: no node named {target} in this swarm (nodes: {nodes}); use a node name, or all, workers, managers")]
    UnknownLabelTarget { rule: String, target: String, nodes: String },
    #[error("per-node settings for {name:?}: no node with that name in this swarm (nodes: {nodes})")]
    UnknownNode { name: String, nodes: String },
    #[error("{what} must be at least 1")]
    Zero { what: String },
    #[error("memory for {what} is empty: use a size such as 2G or 1536M")]
    EmptyMemory { what: String },
    #[error("machine names already in use: {names}; pick another --prefix or remove them first")]
    NameClash { names: String },
    #[error(transparent)]
    Machine(#[from] crate::machine::MachineSpecError),
}

impl From<ScanError> for SwarmSpecError {
    fn from(e: ScanError) -> SwarmSpecError {
        match e {
            ScanError::OutOfMemory => SwarmSpecError::Yaml("out of memory".into()),
            ScanError::Alias { line } => SwarmSpecError::Alias { line },
            ScanError::TooDeep { max, line } => SwarmSpecError::TooDeep { max, line },
        }
    }
}

/// A swarm's name, which is also the prefix of its node names (`<name>-mngr-0`): the rules of
/// [`validate_prefix`], so every node name it makes is a valid [`MachineName`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SwarmName(String);

impl SwarmName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SwarmName {
    type Err = SwarmSpecError;
    fn from_str(name: &str) -> Result<Self, SwarmSpecError> {
        validate_prefix(name)?;
        Ok(SwarmName(name.to_string()))
    }
}

impl TryFrom<String> for SwarmName {
    type Error = SwarmSpecError;
    fn try_from(s: String) -> Result<Self, SwarmSpecError> {
        s.parse()
    }
}

impl From<SwarmName> for String {
    fn from(n: SwarmName) -> String {
        n.0
    }
}

impl fmt::Display for SwarmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// Role of a swarm node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Manager,
    Worker,
}

impl NodeRole {
    /// The infix used in node names: `mngr` / `wrkr`.
    pub fn infix(self) -> &'static str {
        match self {
            NodeRole::Manager => "mngr",
            NodeRole::Worker => "wrkr",
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        })
    }
}

/// `<prefix>-mngr-<i>` / `<prefix>-wrkr-<i>`.
pub fn node_name(prefix: &str, role: NodeRole, index: u32) -> String {
    format!("{prefix}-{}-{index}", role.infix())
}

/// Inverse of [`node_name`]: the index if `name` is `<prefix>-<infix>-<i>`.
pub fn node_index(prefix: &str, role: NodeRole, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let digits = rest.strip_prefix(role.infix())?.strip_prefix('-')?;
    // Reject "01" etc. so that name <-> index is one-to-one.
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

/// Advice to print (as a warning) for a manager count that works but is a
/// poor choice; `None` when the count is fine.
pub fn manager_count_advice(n: u32) -> Option<String> {
    if n == 0 {
        return Some(SwarmSpecError::NoManagers.to_string());
    }
    if n.is_multiple_of(2) {
        return Some(format!(
            "{n} managers tolerate no more failures than {} (raft needs a majority of \
             {}); use 1, 3 or 5 managers",
            n - 1,
            n / 2 + 1
        ));
    }
    if n > 7 {
        return Some(format!(
            "{n} managers slow down raft consensus; Docker recommends at most 7 (usually 3 or 5)"
        ));
    }
    None
}

/// Which nodes a label rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelTarget {
    All,
    Managers,
    Workers,
    Node(String),
}

impl LabelTarget {
    fn matches(&self, name: &str, role: NodeRole) -> bool {
        match self {
            LabelTarget::All => true,
            LabelTarget::Managers => role == NodeRole::Manager,
            LabelTarget::Workers => role == NodeRole::Worker,
            LabelTarget::Node(n) => n == name,
        }
    }
}

/// Applies `rules` in order (later wins) to the labels of a node named `name` with `role`.
pub fn apply_label_rules(
    rules: &[LabelRule],
    name: &str,
    role: NodeRole,
    labels: &mut BTreeMap<String, String>,
) {
    for rule in rules {
        if rule.target.matches(name, role) {
            labels.insert(rule.key.clone(), rule.value.clone());
        }
    }
}

/// A node label rule: `key=value@target`; without `@target` it applies to all
/// nodes. Targets: a node name, `all`, `workers`, `managers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRule {
    pub key: String,
    pub value: String,
    pub target: LabelTarget,
}

impl LabelRule {
    pub fn parse(s: &str) -> Result<LabelRule, SwarmSpecError> {
        // The target is after the *last* '@' so values may contain '@' when a
        // target is given (`mail=a@b@all`).
        let (kv, target) = match s.rsplit_once('@') {
            Some((kv, t)) => (kv, Some(t)),
            None => (s, None),
        };
        let (key, value) =
            parse_key_value(kv).map_err(|reason| SwarmSpecError::BadLabel { rule: s.to_string(), reason })?;
        let target = match target {
            None | Some("all") => LabelTarget::All,
            Some("managers") => LabelTarget::Managers,
            Some("workers") => LabelTarget::Workers,
            Some("") => {
                return Err(SwarmSpecError::BadLabel {
                    rule: s.to_string(),
                    reason: "empty target after '@': use a node name, all, workers or managers".into(),
                })
            }
            Some(node) => LabelTarget::Node(node.to_string()),
        };
        Ok(LabelRule { key, value, target })
    }
}

impl fmt::Display for LabelRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}@", self.key, self.value)?;
        match &self.target {
            LabelTarget::All => f.write_str("all"),
            LabelTarget::Managers => f.write_str("managers"),
            LabelTarget::Workers => f.write_str("workers"),
            LabelTarget::Node(n) => f.write_str(n),
        }
    }
}

impl FromStr for LabelRule {
    type Err = SwarmSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelRule::parse(s)
    }
}

impl Serialize for LabelRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LabelRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LabelRule::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `key=value`: the one label parser, [`crate::machine::split_label`].
fn parse_key_value(kv: &str) -> Result<(String, String), String> {
    crate::machine::split_label(kv).map_err(str::to_string)
}

/// Per-node settings that override the swarm-wide ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Written as a list of `key=value` strings.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "ser_kv_list",
        deserialize_with = "de_kv_list"
    )]
    pub labels: BTreeMap<String, String>,
}

fn ser_kv_list<S: Serializer>(m: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.iter().map(|(k, v)| format!("{k}={v}")))
}

fn de_kv_list<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.iter()
        .map(|s| {
            parse_key_value(s)
                .map_err(|reason| serde::de::Error::custom(format!("node label {s:?}: {reason}")))
        })
        .collect()
}

fn de_nodes<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, NodeOverride>, D::Error> {
    struct Nodes;
    impl<'de> serde::de::Visitor<'de> for Nodes {
        type Value = BTreeMap<String, NodeOverride>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping from node names to their settings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut nodes = BTreeMap::new();
            while let Some((name, o)) = map.next_entry::<String, NodeOverride>()? {
                if nodes.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!(
                        "node {name:?} appears twice under nodes:; merge its settings into one entry"
                    )));
                }
                nodes.insert(name, o);
            }
            Ok(nodes)
        }
    }
    d.deserialize_map(Nodes)
}

/// What to build. Same shape from CLI flags or a YAML cluster file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmSpec {
    pub prefix: String,
    pub managers: u32,
    pub workers: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// e.g. "2G"; parsed by the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Bridge name, or `user` (user-mode networking).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Ports published on the host's 127.0.0.1, to the routing mesh (user-mode networking).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<crate::ports::PortForward>,
    /// The addresses the nodes take on the bridge (needed on a bridge n2d did not create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<crate::address::IpRange>,
    /// Every node accepts new connections from other networks (`--expose`, see
    /// [`crate::machine::MachineSpec::expose`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expose: bool,
    /// Host folders shared into every node (`--mount`, `mounts:`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::mount::HostMount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<LabelRule>,
    /// Keyed by node name; a name given twice is an error, not a silent merge.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "de_nodes")]
    pub nodes: BTreeMap<String, NodeOverride>,
}

impl Default for SwarmSpec {
    fn default() -> Self {
        SwarmSpec {
            prefix: DEFAULT_PREFIX.to_string(),
            managers: DEFAULT_MANAGERS,
            workers: DEFAULT_WORKERS,
            cpus: None,
            memory: None,
            network: None,
            publish: Vec::new(),
            ip_range: None,
            expose: false,
            mounts: Vec::new(),
            labels: Vec::new(),
            nodes: BTreeMap::new(),
        }
    }
}

/// One node to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    pub name: String,
    pub role: NodeRole,
    pub index: u32,
    pub cpus: Option<u32>,
    pub memory: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl NodePlan {
    pub fn new(prefix: &str, role: NodeRole, index: u32) -> NodePlan {
        NodePlan {
            name: node_name(prefix, role, index),
            role,
            index,
            cpus: None,
            memory: None,
            labels: BTreeMap::new(),
        }
    }
}

impl SwarmSpec {
    /// Parse (but do not validate) a cluster file. Unknown keys are errors, and so are files over
    /// [`MAX_CLUSTER_FILE`], nesting over [`MAX_CLUSTER_DEPTH`], anchors and aliases, and a node
    /// named twice under `nodes:`.
    pub fn from_yaml(text: &str) -> Result<SwarmSpec, SwarmSpecError> {
        if text.len() > MAX_CLUSTER_FILE {
            return Err(SwarmSpecError::FileTooLarge { max: MAX_CLUSTER_FILE });
        }
        crate::yaml_scan::check(text.as_bytes(), MAX_CLUSTER_DEPTH)?;
        serde_yaml_ng::from_str(text).map_err(|e| SwarmSpecError::Yaml(e.to_string()))
    }

    /// [`SwarmSpec::from_yaml`] on a file's raw bytes: the size cap comes first, then UTF-8.
    pub fn from_yaml_bytes(bytes: &[u8]) -> Result<SwarmSpec, SwarmSpecError> {
        if bytes.len() > MAX_CLUSTER_FILE {
            return Err(SwarmSpecError::FileTooLarge { max: MAX_CLUSTER_FILE });
        }
        let text =
            std::str::from_utf8(bytes).map_err(|e| SwarmSpecError::NotUtf8 { offset: e.valid_up_to() })?;
        SwarmSpec::from_yaml(text)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("SwarmSpec always serializes")
    }

    /// All node names, managers first.
    pub fn node_names(&self) -> Vec<String> {
        let m = (0..self.managers).map(|i| node_name(&self.prefix, NodeRole::Manager, i));
        let w = (0..self.workers).map(|i| node_name(&self.prefix, NodeRole::Worker, i));
        m.chain(w).collect()
    }

    /// Check everything that can be checked without looking at the host.
    pub fn validate(&self) -> Result<(), SwarmSpecError> {
        validate_prefix(&self.prefix)?;
        if self.managers == 0 {
            return Err(SwarmSpecError::NoManagers);
        }
        let total = u64::from(self.managers) + u64::from(self.workers);
        if total > u64::from(MAX_NODES) {
            return Err(SwarmSpecError::TooManyNodes { total, max: MAX_NODES });
        }
        // The longest names are those with the highest indices.
        for (role, n) in [(NodeRole::Manager, self.managers), (NodeRole::Worker, self.workers)] {
            if n > 0 {
                check_name_len(&node_name(&self.prefix, role, n - 1))?;
            }
        }
        check_resources("the swarm", self.cpus, self.memory.as_deref())?;
        crate::ports::check_distinct(&self.publish)
            .map_err(|port| crate::machine::MachineSpecError::PublishedTwice { port })?;
        crate::mount::check_mounts(&self.mounts).map_err(crate::machine::MachineSpecError::from)?;

        let names = self.node_names();
        let known: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        for rule in &self.labels {
            if let LabelTarget::Node(n) = &rule.target {
                if !known.contains(n.as_str()) {
                    return Err(SwarmSpecError::UnknownLabelTarget {
                        rule: rule.to_string(),
                        target: n.clone(),
                        nodes: list_names(&names),
                    });
                }
            }
        }
        for (name, o) in &self.nodes {
            if !known.contains(name.as_str()) {
                return Err(SwarmSpecError::UnknownNode { name: name.clone(), nodes: list_names(&names) });
            }
            check_resources(name, o.cpus, o.memory.as_deref())?;
        }
        for p in self.plan() {
            crate::machine::check_labels_size(&p.name, &p.labels)?;
        }
        Ok(())
    }

    /// Refuse if any node name is already taken by an existing machine.
    pub fn check_no_clash<'a>(
        &self,
        existing: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), SwarmSpecError> {
        let existing: BTreeSet<&str> = existing.into_iter().collect();
        let clash: Vec<String> =
            self.node_names().into_iter().filter(|n| existing.contains(n.as_str())).collect();
        if clash.is_empty() {
            Ok(())
        } else {
            Err(SwarmSpecError::NameClash { names: clash.join(", ") })
        }
    }

    /// The nodes to create, managers first, with resources and labels
    /// resolved. Label rules apply in order (later wins), then per-node
    /// override labels. Call [`SwarmSpec::validate`] first.
    pub fn plan(&self) -> Vec<NodePlan> {
        let roles = (0..self.managers)
            .map(|i| (NodeRole::Manager, i))
            .chain((0..self.workers).map(|i| (NodeRole::Worker, i)));
        roles
            .map(|(role, index)| {
                let mut p = NodePlan::new(&self.prefix, role, index);
                apply_label_rules(&self.labels, &p.name, role, &mut p.labels);
                p.cpus = self.cpus;
                p.memory = self.memory.clone();
                if let Some(o) = self.nodes.get(&p.name) {
                    p.cpus = o.cpus.or(p.cpus);
                    p.memory = o.memory.clone().or(p.memory);
                    p.labels.extend(o.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                p
            })
            .collect()
    }
}

fn list_names(names: &[String]) -> String {
    names.join(", ")
}

fn check_resources(what: &str, cpus: Option<u32>, memory: Option<&str>) -> Result<(), SwarmSpecError> {
    if cpus == Some(0) {
        return Err(SwarmSpecError::Zero { what: format!("cpus for {what}") });
    }
    if memory.is_some_and(|m| m.trim().is_empty()) {
        return Err(SwarmSpecError::EmptyMemory { what: what.to_string() });
    }
    Ok(())
}

fn check_name_len(name: &str) -> Result<(), SwarmSpecError> {
    if name.len() > MAX_NAME_LEN {
        return Err(SwarmSpecError::NameTooLong {
            name: name.to_string(),
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    Ok(())
}

/// Prefixes become host names: lowercase letters, digits and '-', starting
/// with a letter, not ending with '-'.
pub fn validate_prefix(prefix: &str) -> Result<(), SwarmSpecError> {
    let bad =
        |reason: &str| SwarmSpecError::BadPrefix { prefix: prefix.to_string(), reason: reason.to_string() };
    let Some(first) = prefix.chars().next() else {
        return Err(bad("it is empty; use e.g. --prefix n2d"));
    };
    if !first.is_ascii_lowercase() {
        return Err(bad("it must start with a lowercase letter (a-z)"));
    }
    if let Some(c) = prefix.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(bad(&format!("{c:?} is not allowed; use lowercase letters, digits and '-'")));
    }
    if prefix.ends_with('-') {
        return Err(bad("it must not end with '-' (n2d adds '-mngr-0' etc.)"));
    }
    // Even node 0 must fit.
    let longest = MAX_NAME_LEN - node_name("", NodeRole::Worker, 0).len();
    if prefix.len() > longest {
        return Err(bad(&format!(
            "it is {} characters; use at most {longest} so that node names (<name>-wrkr-0) fit in {MAX_NAME_LEN}",
            prefix.len()
        )));
    }
    Ok(())
}

/// TLS client material for a Docker endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Result of [`plan_scale`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalePlan {
    /// New nodes (managers first); resources/labels left for the caller.
    pub add: Vec<NodePlan>,
    /// Node names to remove, in removal order.
    pub remove: Vec<MachineName>,
}

impl ScalePlan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Work out which nodes to add or remove to reach the wanted counts. New
/// nodes take the lowest unused indices; removal takes the highest indices
/// first (workers before managers). Never goes to 0 managers.
pub fn plan_scale(
    current_managers: &[MachineName],
    current_workers: &[MachineName],
    want_managers: u32,
    want_workers: u32,
    prefix: &str,
) -> Result<ScalePlan, SwarmSpecError> {
    if want_managers == 0 {
        return Err(SwarmSpecError::NoManagers);
    }
    let total = u64::from(want_managers) + u64::from(want_workers);
    if total > u64::from(MAX_NODES) {
        return Err(SwarmSpecError::TooManyNodes { total, max: MAX_NODES });
    }
    let mut plan = ScalePlan::default();
    for (role, current, want) in [
        (NodeRole::Worker, current_workers, want_workers),
        (NodeRole::Manager, current_managers, want_managers),
    ] {
        let want = want as usize;
        if current.len() > want {
            // Names that don't follow the scheme sort as highest, so
            // oddities go first.
            let mut by_index: Vec<(u32, &MachineName)> = current
                .iter()
                .map(|n| (node_index(prefix, role, n.as_str()).unwrap_or(u32::MAX), n))
                .collect();
            by_index.sort_by(|a, b| b.cmp(a));
            plan.remove.extend(by_index.into_iter().take(current.len() - want).map(|(_, n)| n.clone()));
        } else {
            let used: BTreeSet<u32> =
                current.iter().filter_map(|n| node_index(prefix, role, n.as_str())).collect();
            let new = (0..)
                .filter(|i| !used.contains(i))
                .take(want - current.len())
                .map(|i| NodePlan::new(prefix, role, i));
            for p in new {
                check_name_len(&p.name)?;
                plan.add.push(p);
            }
        }
    }
    // Managers first when adding (workers need a manager to join).
    plan.add.sort_by_key(|p| (p.role, p.index));
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn n(v: &[&str]) -> Vec<MachineName> {
        v.iter().map(|x| x.parse().unwrap()).collect()
    }

    #[test]
    fn defaults_and_naming() {
        let spec = SwarmSpec::default();
        spec.validate().unwrap();
        assert_eq!(spec.node_names(), s(&["n2d-mngr-0", "n2d-wrkr-0", "n2d-wrkr-1", "n2d-wrkr-2"]));
        let plan = spec.plan();
        assert_eq!(plan[0].role, NodeRole::Manager);
        assert_eq!(plan[3].index, 2);
        assert_eq!(node_index("n2d", NodeRole::Worker, "n2d-wrkr-12"), Some(12));
        assert_eq!(node_index("n2d", NodeRole::Worker, "n2d-mngr-1"), None);
        assert_eq!(node_index("n2d", NodeRole::Worker, "n2d-wrkr-01"), None);
        assert_eq!(node_index("n2", NodeRole::Worker, "n2d-wrkr-1"), None);
    }

    #[test]
    fn label_parse() {
        let r = LabelRule::parse("zone=a@n2d-wrkr-0").unwrap();
        assert_eq!(r.key, "zone");
        assert_eq!(r.value, "a");
        assert_eq!(r.target, LabelTarget::Node("n2d-wrkr-0".into()));
        assert_eq!(LabelRule::parse("a=b").unwrap().target, LabelTarget::All);
        assert_eq!(LabelRule::parse("a=b@workers").unwrap().target, LabelTarget::Workers);
        assert_eq!(LabelRule::parse("a=b@managers").unwrap().target, LabelTarget::Managers);
        assert_eq!(LabelRule::parse("a=@all").unwrap().value, "");
        let r = LabelRule::parse("mail=x@y@all").unwrap();
        assert_eq!((r.value.as_str(), &r.target), ("x@y", &LabelTarget::All));
        for bad in ["novalue", "=v", "a b=c", "a=b@"] {
            let e = LabelRule::parse(bad).unwrap_err();
            assert!(matches!(e, SwarmSpecError::BadLabel { .. }), "{bad}: {e}");
        }
        assert_eq!(r.to_string().parse::<LabelRule>().unwrap(), r);
    }

    #[test]
    fn label_targeting() {
        let spec = SwarmSpec {
            managers: 1,
            workers: 2,
            labels: vec![
                LabelRule::parse("env=dev").unwrap(),
                LabelRule::parse("tier=db@workers").unwrap(),
                LabelRule::parse("ctl=yes@managers").unwrap(),
                LabelRule::parse("zone=a@n2d-wrkr-1").unwrap(),
                LabelRule::parse("env=prod@n2d-wrkr-1").unwrap(),
            ],
            ..Default::default()
        };
        spec.validate().unwrap();
        let plan = spec.plan();
        let labels = |i: usize| plan[i].labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!(labels(0), s(&["ctl=yes", "env=dev"]));
        assert_eq!(labels(1), s(&["env=dev", "tier=db"]));
        assert_eq!(labels(2), s(&["env=prod", "tier=db", "zone=a"]));
    }

    #[test]
    fn unknown_label_target_names_nodes() {
        let spec =
            SwarmSpec { labels: vec![LabelRule::parse("zone=a@n2d-wrkr-9").unwrap()], ..Default::default() };
        let e = spec.validate().unwrap_err().to_string();
        assert!(e.contains("no node named n2d-wrkr-9"), "{e}");
        assert!(e.contains("n2d-mngr-0, n2d-wrkr-0"), "{e}");
    }

    const YAML: &str = include_str!("../tests/corpus/ok-full.yaml");

    #[test]
    fn yaml_cluster_file() {
        let spec = SwarmSpec::from_yaml(YAML).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.prefix, "demo");
        assert_eq!(spec.network.as_deref(), Some("n2d0"));
        let plan = spec.plan();
        assert_eq!(plan.len(), 3);
        let w0 = &plan[1];
        assert_eq!(w0.name, "demo-wrkr-0");
        assert_eq!(w0.memory.as_deref(), Some("1536M"));
        assert_eq!(w0.labels.get("zone").map(String::as_str), Some("a"));
        let w1 = &plan[2];
        assert_eq!(w1.cpus, Some(2));
        assert_eq!(w1.memory.as_deref(), Some("3G"));
        assert_eq!(w1.labels.get("ssd").map(String::as_str), Some("true"));
        assert_eq!(w1.labels.get("tier").map(String::as_str), Some("db"));
        assert!(!w1.labels.contains_key("zone"));
        assert!(!plan[0].labels.contains_key("tier"));
        // Round trip.
        assert_eq!(SwarmSpec::from_yaml(&spec.to_yaml()).unwrap(), spec);
        // Missing keys take defaults.
        assert_eq!(
            SwarmSpec::from_yaml("workers: 5").unwrap(),
            SwarmSpec { workers: 5, ..Default::default() }
        );
    }

    #[test]
    fn yaml_mounts_are_host_folders_in_the_flags_form() {
        let spec = SwarmSpec::from_yaml("workers: 1\nmounts: [/src, ./data:/data:ro]\n").unwrap();
        assert_eq!(spec.mounts.len(), 2);
        assert_eq!((spec.mounts[1].guest.as_str(), spec.mounts[1].read_only), ("/data", true));
        let err = SwarmSpec::from_yaml("mounts: [/src:/var/lib/docker]\n").unwrap_err().to_string();
        assert!(err.contains("/var/lib/docker belongs to the guest"), "{err}");
        assert!(!SwarmSpec::default().to_yaml().contains("mounts"));
    }

    #[test]
    fn yaml_expose_is_opt_in() {
        assert!(!SwarmSpec::from_yaml("workers: 1").unwrap().expose);
        let spec = SwarmSpec::from_yaml("workers: 1\nexpose: true\n").unwrap();
        assert!(spec.expose);
        assert_eq!(SwarmSpec::from_yaml(&spec.to_yaml()).unwrap(), spec);
        assert!(!SwarmSpec::default().to_yaml().contains("expose"));
        assert!(SwarmSpec::from_yaml("expose: yes please\n").is_err());
    }

    #[test]
    fn yaml_unknown_keys_rejected() {
        for text in [
            "prefix: a\nworker: 2\n",
            "nodes:\n  n2d-wrkr-0: { memroy: 1G }\n",
            "labels: [novalue]\n",
            "nodes:\n  n2d-wrkr-0: { labels: [bad] }\n",
        ] {
            let e = SwarmSpec::from_yaml(text).unwrap_err();
            assert!(matches!(e, SwarmSpecError::Yaml(_)), "{text}: {e}");
        }
        let e = SwarmSpec::from_yaml("worker: 2").unwrap_err().to_string();
        assert!(e.contains("worker"), "{e}");
    }

    #[test]
    fn override_for_unknown_node() {
        let spec = SwarmSpec::from_yaml("nodes:\n  n2d-wrkr-7: { cpus: 2 }\n").unwrap();
        let e = spec.validate().unwrap_err();
        assert!(matches!(e, SwarmSpecError::UnknownNode { ref name, .. } if name == "n2d-wrkr-7"));
    }

    #[test]
    fn bad_counts() {
        let e = SwarmSpec { managers: 0, ..Default::default() }.validate().unwrap_err();
        assert_eq!(e, SwarmSpecError::NoManagers);
        assert!(e.to_string().contains("at least one manager"));
        let e = SwarmSpec { workers: 64, ..Default::default() }.validate().unwrap_err();
        assert!(matches!(e, SwarmSpecError::TooManyNodes { total: 65, .. }));
        SwarmSpec { managers: 1, workers: 63, ..Default::default() }.validate().unwrap();
        let e = SwarmSpec { cpus: Some(0), ..Default::default() }.validate().unwrap_err();
        assert!(matches!(e, SwarmSpecError::Zero { .. }));
    }

    #[test]
    fn manager_advice() {
        assert_eq!(manager_count_advice(1), None);
        assert_eq!(manager_count_advice(3), None);
        assert_eq!(manager_count_advice(5), None);
        assert!(manager_count_advice(2).unwrap().contains("use 1, 3 or 5"));
        assert!(manager_count_advice(4).is_some());
        assert!(manager_count_advice(9).is_some());
        assert!(manager_count_advice(0).is_some());
    }

    #[test]
    fn prefixes() {
        for ok in ["n2d", "a", "demo-1", "x9"] {
            validate_prefix(ok).unwrap();
        }
        for bad in ["", "1abc", "Demo", "de_mo", "a.b", "-a", "a-", "ä"] {
            assert!(matches!(validate_prefix(bad), Err(SwarmSpecError::BadPrefix { .. })), "{bad}");
        }
        // 63 - len("-wrkr-0") = 56 is the longest usable prefix.
        let p56 = "a".repeat(56);
        validate_prefix(&p56).unwrap();
        let e = validate_prefix(&"a".repeat(57)).unwrap_err();
        assert!(matches!(e, SwarmSpecError::BadPrefix { .. }), "{e}");
        assert!(e.to_string().contains("at most 56"), "{e}");
        // ...but then only 10 workers fit (two-digit indices are too long).
        let spec = SwarmSpec { prefix: p56, workers: 11, ..Default::default() };
        assert!(matches!(
            spec.validate(),
            Err(SwarmSpecError::NameTooLong { ref name, .. }) if name.ends_with("-wrkr-10")
        ));
    }

    #[test]
    fn name_clash() {
        let spec = SwarmSpec::default();
        spec.check_no_clash(["other", "n2d-wrkr-3"]).unwrap();
        let e = spec.check_no_clash(["n2d-wrkr-1", "x", "n2d-mngr-0"]).unwrap_err();
        assert_eq!(e, SwarmSpecError::NameClash { names: "n2d-mngr-0, n2d-wrkr-1".into() });
    }

    #[test]
    fn scale_up_fills_gaps() {
        let plan = plan_scale(&n(&["n2d-mngr-0"]), &n(&["n2d-wrkr-0", "n2d-wrkr-2"]), 3, 4, "n2d").unwrap();
        let names: Vec<_> = plan.add.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["n2d-mngr-1", "n2d-mngr-2", "n2d-wrkr-1", "n2d-wrkr-3"]);
        assert!(plan.remove.is_empty());
        assert_eq!(plan.add[3].index, 3);
    }

    #[test]
    fn scale_down_highest_first() {
        let plan = plan_scale(
            &n(&["n2d-mngr-0", "n2d-mngr-1", "n2d-mngr-2"]),
            &n(&["n2d-wrkr-0", "n2d-wrkr-10", "n2d-wrkr-2", "n2d-wrkr-9"]),
            1,
            1,
            "n2d",
        )
        .unwrap();
        assert!(plan.add.is_empty());
        assert_eq!(plan.remove, n(&["n2d-wrkr-10", "n2d-wrkr-9", "n2d-wrkr-2", "n2d-mngr-2", "n2d-mngr-1"]));
    }

    #[test]
    fn scale_refusals_and_noop() {
        let m = n(&["n2d-mngr-0"]);
        assert_eq!(plan_scale(&m, &[], 0, 3, "n2d").unwrap_err(), SwarmSpecError::NoManagers);
        assert!(matches!(plan_scale(&m, &[], 1, 100, "n2d"), Err(SwarmSpecError::TooManyNodes { .. })));
        assert!(plan_scale(&m, &n(&["n2d-wrkr-0"]), 1, 1, "n2d").unwrap().is_empty());
    }

    #[test]
    fn one_label_parser_for_flags_and_cluster_files() {
        use crate::machine::tests::{BAD_LABELS, GOOD_LABELS};
        for (input, key, value) in GOOD_LABELS {
            let rule = LabelRule::parse(&format!("{input}@workers")).unwrap();
            assert_eq!((rule.key.as_str(), rule.value.as_str()), (*key, *value), "{input:?}");
            let yaml = format!("nodes:\n  n2d-wrkr-0: {{ labels: [{input:?}] }}\n");
            let spec = SwarmSpec::from_yaml(&yaml).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(spec.nodes["n2d-wrkr-0"].labels[*key], *value);
        }
        for bad in BAD_LABELS {
            for rule in [bad.to_string(), format!("{bad}@workers")] {
                let e = LabelRule::parse(&rule).unwrap_err();
                assert!(matches!(e, SwarmSpecError::BadLabel { .. }), "{rule:?}: {e}");
            }
            // JSON strings are YAML strings: the exact bytes reach the parser.
            let json = serde_json::to_string(bad).unwrap();
            let node = format!("nodes:\n  n2d-wrkr-0: {{ labels: [{json}] }}\n");
            assert!(SwarmSpec::from_yaml(&node).is_err(), "node label {bad:?}");
            let swarm = format!("labels: [{json}]\n");
            assert!(SwarmSpec::from_yaml(&swarm).is_err(), "swarm label {bad:?}");
        }
    }

    #[test]
    fn cluster_file_limits() {
        let e = SwarmSpec::from_yaml_bytes(&vec![b' '; MAX_CLUSTER_FILE + 1]).unwrap_err();
        assert_eq!(e, SwarmSpecError::FileTooLarge { max: MAX_CLUSTER_FILE });
        assert!(e.to_string().contains("65536"), "{e}");
        let e = SwarmSpec::from_yaml_bytes(b"prefix: d\xffmo\n").unwrap_err();
        assert_eq!(e, SwarmSpecError::NotUtf8 { offset: 9 });
        let deep = format!("labels: {}{}", "[".repeat(30_000), "]".repeat(30_000));
        let t = std::time::Instant::now();
        assert!(matches!(SwarmSpec::from_yaml(&deep), Err(SwarmSpecError::TooDeep { .. })));
        assert!(t.elapsed() < std::time::Duration::from_secs(1), "{:?}", t.elapsed());
        for text in [
            "prefix: &p demo\n",
            "labels: &l [a=b]\nnodes:\n  n2d-wrkr-0: { labels: *l }\n",
            "memory: &m 2G\ncpus: 1\nnodes: { n2d-wrkr-0: { memory: *m } }\n",
        ] {
            assert!(matches!(SwarmSpec::from_yaml(text), Err(SwarmSpecError::Alias { .. })), "{text}");
        }
        // '&' and '*' inside values are fine.
        SwarmSpec::from_yaml("labels: [\"a=&b\", 'c=*d', e=f&g]\n").unwrap();
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = SwarmSpec::from_yaml("nodes:\n  n2d-wrkr-0: { cpus: 2 }\n  n2d-wrkr-0: { memory: 3G }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("appears twice"), "{e}");
        assert!(SwarmSpec::from_yaml("workers: 2\nworkers: 3\n").is_err());
        assert!(SwarmSpec::from_yaml("nodes:\n  n2d-wrkr-0: { cpus: 2, cpus: 3 }\n").is_err());
    }

    #[test]
    fn labels_that_would_not_fit_the_config_disk_are_refused_before_boot() {
        use crate::machine::{MAX_LABELS_BYTES, MAX_LABEL_LEN};
        let long = format!("k={}", "v".repeat(MAX_LABEL_LEN));
        assert!(matches!(LabelRule::parse(&long), Err(SwarmSpecError::BadLabel { .. })));
        let labels = (0..MAX_LABELS_BYTES / 1000 + 1)
            .map(|i| LabelRule::parse(&format!("k{i}={}", "v".repeat(1000))).unwrap())
            .collect();
        let e = SwarmSpec { labels, ..Default::default() }.validate().unwrap_err();
        assert!(
            matches!(e, SwarmSpecError::Machine(crate::machine::MachineSpecError::LabelsTooLarge { .. })),
            "{e}"
        );
    }

    #[test]
    fn swarm_names_follow_the_prefix_rules() {
        assert_eq!("demo".parse::<SwarmName>().unwrap().as_str(), "demo");
        for bad in ["", ".", "..", "../certs", "a/b", "/abs", "-x", "A", "a\nb", &"a".repeat(57)] {
            let e = bad.parse::<SwarmName>().unwrap_err().to_string();
            assert!(e.contains("swarm name") || e.contains("characters"), "{bad:?}: {e}");
        }
    }
}
