//! Host-wide network state, shared by every `$N2D_HOME` on the host: which bridges n2d made,
//! which addresses, taps and MACs are handed out on them and to which home's machine, and
//! whether n2d turned IPv4 forwarding on. It lives in one file per network namespace under
//! `/run/n2d` (`$N2D_RUN_DIR`), changed only under one host-wide lock, so two homes never hand
//! out the same address or tap and one home's `rm` never deletes a bridge another still uses.
//!
//! `/run` is emptied by a reboot, like the bridges and taps it describes; each home's machine
//! records keep their addresses, and every attach re-asserts the calling home's claims
//! ([`Claim`]) before it chooses a new address.
//!
//! The state is input, not trusted: its directory must belong to the caller or root and be
//! writable by no one else ([`check_run_dir`]), its files are opened without following
//! symlinks, and every entry is checked like user input before it reaches `ip` or iptables
//! ([`BridgeState::problem`], [`Lease::problem`]). A damaged or hostile entry is reported and
//! left alone: its address stays taken, its tap and bridge are never touched. n2d deletes or
//! re-attaches only taps of its own naming scheme that its own records name, and only when the
//! link is a tap.

use crate::{mac_for, nat, tap_for, Links, NetError, DEFAULT_GATEWAY, DEFAULT_PREFIX_LEN};
use n2d_exec::{Cmd, Runner};
use n2d_spec::address::IpRange;
use n2d_spec::link::{parse_bridge_name, parse_interface_name, parse_n2d_mac, parse_tap_name};
use n2d_spec::machine::MachineName;
use n2d_store::Notes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Where the host-wide state lives unless `$N2D_RUN_DIR` says otherwise.
pub const DEFAULT_RUN_DIR: &str = "/run/n2d";
pub const RUN_DIR_ENV: &str = "N2D_RUN_DIR";
pub(crate) const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The home's absolute path.
    pub home: PathBuf,
    pub machine: String,
    pub tap: String,
    pub mac: String,
    /// New connections from outside the bridge may reach the machine (`--expose`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exposed: bool,
}

impl Lease {
    fn owned_by(&self, home: &Path, machine: &str) -> bool {
        self.home == home && self.machine == machine
    }

    /// Why n2d may not act on this lease (it is not one n2d writes), if so: a tap outside n2d's
    /// naming scheme, a MAC that is not n2d's kind, a machine name or home that is no name or
    /// path n2d uses.
    pub fn problem(&self) -> Option<String> {
        if let Err(e) = parse_tap_name(&self.tap) {
            return Some(e.to_string());
        }
        if let Err(e) = parse_n2d_mac(&self.mac) {
            return Some(e.to_string());
        }
        if let Err(e) = self.machine.parse::<MachineName>() {
            return Some(e.to_string());
        }
        let plain = self.home.is_absolute()
            && self.home.components().skip(1).all(|c| matches!(c, std::path::Component::Normal(_)))
            && !self.home.as_os_str().as_encoded_bytes().iter().any(u8::is_ascii_control);
        if !plain {
            return Some(format!("home {:?} is not an absolute, normalized path", self.home));
        }
        None
    }
    fn describe(&self) -> String {
        format!("machine {} of {}", self.machine, self.home.display())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeState {
    /// The host's address on the bridge: the machines' gateway.
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    /// Whether n2d created the bridge (and so deletes it with its last machine).
    pub created_by_n2d: bool,
    /// The interface the NAT rules send traffic out of (none: VMs reach only each other and
    /// the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    #[serde(default)]
    pub leases: BTreeMap<Ipv4Addr, Lease>,
}

impl BridgeState {
    pub fn subnet(&self) -> String {
        nat::subnet_text(self.gateway, self.prefix_len)
    }

    /// Why n2d may not act on the bridge named `name` with this entry, if so: a name that is no
    /// interface name, a gateway that is no host address of a usable subnet, an uplink that is
    /// no interface name.
    pub fn problem(&self, name: &str) -> Option<String> {
        if let Err(e) = parse_bridge_name(name) {
            return Some(e.to_string());
        }
        let host = crate::host_range(self.gateway, self.prefix_len)
            .is_some_and(|(first, last)| (first..=last).contains(&u32::from(self.gateway)));
        let odd = self.gateway.is_loopback() || self.gateway.is_multicast() || self.gateway.is_unspecified();
        if !host || odd {
            return Some(format!(
                "gateway {}/{} is not a host address of a usable subnet",
                self.gateway, self.prefix_len
            ));
        }
        if let Some(Err(e)) = self.uplink.as_deref().map(parse_interface_name) {
            return Some(format!("uplink: {e}"));
        }
        None
    }

    /// Why n2d may not act on the lease of `ip` on this (sound) bridge, if so.
    fn lease_problem(&self, ip: Ipv4Addr, lease: &Lease) -> Option<String> {
        if !self.candidates(None).any(|c| c == ip) {
            return Some(format!(
                "address {ip} is not a host address of {} other than its gateway",
                self.subnet()
            ));
        }
        lease.problem()
    }

    /// Whether n2d may act on the lease of `ip` (see [`Lease::problem`]).
    fn trusted(&self, ip: Ipv4Addr, lease: &Lease) -> bool {
        self.lease_problem(ip, lease).is_none()
    }

    /// The addresses of the trusted leases that accept new connections from outside.
    fn exposed(&self) -> Vec<Ipv4Addr> {
        self.leases.iter().filter(|(ip, l)| l.exposed && self.trusted(**ip, l)).map(|(ip, _)| *ip).collect()
    }

    /// The addresses a machine may be given: the subnet's hosts (less the gateway), within
    /// `range` when given.
    fn candidates(&self, range: Option<IpRange>) -> impl Iterator<Item = Ipv4Addr> {
        crate::candidates(self.gateway, self.prefix_len, range)
    }

    /// How many more machines fit (in `range` when given).
    pub fn free(&self, range: Option<IpRange>) -> usize {
        self.candidates(range).filter(|ip| !self.leases.contains_key(ip)).count()
    }
}

/// Everything n2d holds in one network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// IPv4 forwarding was off and n2d turned it on: it goes back off with the last bridge.
    #[serde(default)]
    pub forwarding_turned_on: bool,
    #[serde(default)]
    pub bridges: BTreeMap<String, BridgeState>,
}

impl HostState {
    fn is_empty(&self) -> bool {
        !self.forwarding_turned_on && self.bridges.is_empty()
    }

    /// Every entry n2d leaves alone, one line each (for warnings and `doctor`).
    pub fn problems(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (name, bridge) in &self.bridges {
            if let Some(p) = bridge.problem(name) {
                found.push(format!("bridge {name:?}: {p}"));
                continue;
            }
            for (ip, lease) in &bridge.leases {
                if let Some(p) = bridge.lease_problem(*ip, lease) {
                    found.push(format!("lease of {ip} on {name}: {p}"));
                }
            }
        }
        found
    }
}

/// An address a home's machine already has (from its record), kept for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub machine: String,
    pub bridge: String,
    pub ip: Ipv4Addr,
    pub tap: String,
    pub mac: String,
}

impl Claim {
    /// Whether the claim's names are ones n2d makes (records are checked when read; this keeps
    /// a damaged one from reaching `ip`).
    fn sound(&self) -> bool {
        parse_tap_name(&self.tap).is_ok()
            && parse_n2d_mac(&self.mac).is_ok()
            && parse_bridge_name(&self.bridge).is_ok()
    }
}

/// What a machine asks for on a bridge.
#[derive(Debug, Clone)]
pub struct AttachRequest<'a> {
    /// The home's absolute path.
    pub home: &'a Path,
    pub machine: &'a str,
    pub bridge: &'a str,
    /// Addresses it may take (`--ip`, `--ip-range`).
    pub addresses: Option<IpRange>,
    /// The subnet to create the bridge with when n2d makes it (a machine's recorded one after a
    /// reboot); default 10.77.0.1/24.
    pub subnet: Option<(Ipv4Addr, u8)>,
    /// The home's machines and their addresses (its own records), re-asserted first.
    pub claims: &'a [Claim],
    /// Accept new connections from outside the bridge to the machine (`--expose`); otherwise
    /// n2d's chain drops them.
    pub expose: bool,
}

/// What a machine got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    pub tap: String,
    pub mac: String,
}

/// The host-wide state of this network namespace and its lock.
#[derive(Debug, Clone)]
pub struct HostNet {
    dir: PathBuf,
    /// `netns-<inode>`: the state of one network namespace.
    namespace: String,
    ip_forward: PathBuf,
    cancel: Option<Arc<AtomicBool>>,
    timeout: Duration,
    /// Where warnings go (a damaged entry, chains or NAT that could not be set up).
    notes: Notes,
}

impl HostNet {
    /// The state under `run_dir` (the CLI's settings: `$N2D_RUN_DIR`, default
    /// [`DEFAULT_RUN_DIR`]), keyed by the namespace n2d runs in.
    pub fn system(run_dir: &Path) -> Result<HostNet, NetError> {
        let dir = run_dir.to_path_buf();
        let ns = std::fs::metadata("/proc/self/ns/net").map_err(NetError::Namespace)?;
        Ok(HostNet::at(dir, &format!("netns-{}", std::os::unix::fs::MetadataExt::ino(&ns)), IP_FORWARD))
    }

    /// State under `dir` for the namespace `namespace`, with the forwarding switch at
    /// `ip_forward` (tests use a plain file).
    pub fn at(dir: impl Into<PathBuf>, namespace: &str, ip_forward: impl Into<PathBuf>) -> HostNet {
        HostNet {
            dir: dir.into(),
            namespace: namespace.to_string(),
            ip_forward: ip_forward.into(),
            cancel: None,
            timeout: n2d_store::DEFAULT_LOCK_TIMEOUT,
            notes: Notes::default(),
        }
    }

    /// Says warnings through `notes` (the orchestrator's progress).
    pub fn with_notes(mut self, notes: Notes) -> Self {
        self.notes = notes;
        self
    }

    /// A wait for the host lock ends once `flag` is set (Ctrl-C).
    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.namespace))
    }

    /// Runs `change` on the state under the host lock and saves what it leaves (the file goes
    /// when nothing is left).
    fn locked<T>(&self, change: impl FnOnce(&mut HostState) -> Result<T, NetError>) -> Result<T, NetError> {
        let store = |source| NetError::HostState { path: self.dir.clone(), source };
        n2d_store::ensure_dir(&self.dir).map_err(store)?;
        check_run_dir(&self.dir)?;
        let _lock = n2d_store::flock_exclusive(
            &self.dir.join("lock"),
            self.timeout,
            self.cancel.as_deref(),
            &self.notes,
        )
        .map_err(store)?;
        let path = self.state_file();
        let mut state = read_state(&path)?;
        for problem in state.problems() {
            self.notes.say(&format!("warning: {}: {problem}; n2d leaves this entry alone", path.display()));
        }
        let before = state.clone();
        let result = change(&mut state);
        if state != before {
            if state.is_empty() {
                std::fs::remove_file(&path)
                    .map_err(|e| store(n2d_store::StoreError::Remove { path: path.clone(), source: e }))?;
            } else {
                n2d_store::write_json(&path, &state).map_err(store)?;
            }
        }
        result
    }

    /// The state as it is now (for `doctor` and capacity checks).
    pub fn snapshot(&self) -> Result<HostState, NetError> {
        if std::fs::symlink_metadata(&self.dir).is_err() {
            return Ok(HostState::default());
        }
        check_run_dir(&self.dir)?;
        read_state(&self.state_file())
    }

    /// The IPv4 forwarding switch (`/proc/sys/net/ipv4/ip_forward`; a plain file in tests).
    pub fn ip_forward(&self) -> &Path {
        &self.ip_forward
    }

    /// The directory of the host-wide state (`$N2D_RUN_DIR`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks a choice of bridge and addresses before anything is made: `bridge` must be a
    /// bridge (or n2d's default, made on demand), and on a bridge n2d did not make the user
    /// must say which addresses are theirs to use.
    pub fn check_choice(
        &self,
        runner: &dyn Runner,
        bridge: &str,
        addresses: Option<IpRange>,
    ) -> Result<(), NetError> {
        let links = Links::new(runner);
        let may_create = bridge == crate::DEFAULT_BRIDGE;
        // A state n2d may not read (not root) is reported by the create itself, with its fix.
        let known = self.snapshot().ok().and_then(|mut s| s.bridges.remove(bridge));
        let kind = links.kind_of(bridge);
        if known.is_none() && kind.is_none() && !may_create {
            return Err(NetError::NoSuchBridge(bridge.into()));
        }
        if let Some(kind) = kind.filter(|k| k != "bridge") {
            return Err(NetError::NotABridge { dev: bridge.into(), kind });
        }
        let subnet =
            known.as_ref().map(|b| (b.gateway, b.prefix_len)).or_else(|| unrecorded_subnet(&links, bridge));
        let adopted = known.as_ref().map_or(!may_create, |b| !b.created_by_n2d);
        let Some(range) = addresses else {
            if adopted {
                let subnet = subnet.map(|(gw, len)| nat::subnet_text(gw, len)).unwrap_or_default();
                return Err(NetError::AdoptedBridgeNeedsRange { bridge: bridge.into(), subnet });
            }
            return Ok(());
        };
        // A bridge without an address is reported by the create itself.
        if let Some((gateway, prefix_len)) = subnet {
            check_range(bridge, gateway, prefix_len, range)?;
        }
        Ok(())
    }

    /// How many machines still fit on `bridge` (in `range` when given), and where: `None` when
    /// the bridge is unknown (its check reports that).
    pub fn capacity(
        &self,
        runner: &dyn Runner,
        bridge: &str,
        range: Option<IpRange>,
    ) -> Result<Option<(usize, String)>, NetError> {
        let entry = match self.snapshot()?.bridges.remove(bridge) {
            Some(entry) => entry,
            None => {
                let Some(subnet) = unrecorded_subnet(&Links::new(runner), bridge) else { return Ok(None) };
                BridgeState {
                    gateway: subnet.0,
                    prefix_len: subnet.1,
                    created_by_n2d: false,
                    uplink: None,
                    leases: BTreeMap::new(),
                }
            }
        };
        Ok(Some((entry.free(range), range.map_or_else(|| entry.subnet(), |r| r.to_string()))))
    }

    /// Gives `req.machine` an address, tap and MAC on `req.bridge` (its recorded ones when
    /// `keep` is given), creating n2d's bridge with its chains when missing, and lets new
    /// connections from outside reach it when `req.expose` (n2d's own bridges only: a bridge n2d
    /// did not make gets no rules). On error nothing of it is left.
    pub fn attach(
        &self,
        runner: &dyn Runner,
        req: &AttachRequest,
        keep: Option<&Claim>,
    ) -> Result<Attachment, NetError> {
        let refuse = |what: String, source| NetError::UnsafeName { what, source };
        parse_bridge_name(req.bridge).map_err(|e| refuse(format!("bridge {:?}", req.bridge), e))?;
        if let Some(k) = keep {
            let what = |field: &str| format!("the {field} of machine {}'s record", req.machine);
            parse_tap_name(&k.tap).map_err(|e| refuse(what("tap"), e))?;
            parse_n2d_mac(&k.mac).map_err(|e| refuse(what("MAC"), e))?;
        }
        self.locked(|state| {
            forget_stale(state, runner);
            let links = Links::new(runner);
            let created = ensure_bridge(state, runner, &self.ip_forward, req, &self.notes)?;
            for claim in req.claims.iter().filter(|c| c.sound()) {
                reassert(state, req.home, claim);
            }
            let result = (|| {
                let bridge = state.bridges.get_mut(req.bridge).expect("ensured above");
                let ip = choose_address(req, bridge, keep)?;
                let previous = bridge.leases.get(&ip).filter(|l| bridge.trusted(ip, l)).cloned();
                let (tap, mac) = match (keep, &previous) {
                    (Some(k), _) => (k.tap.clone(), k.mac.clone()),
                    (None, Some(l)) => (l.tap.clone(), l.mac.clone()),
                    (None, None) => fresh_names(state, req.home, req.machine),
                };
                let bridge = state.bridges.get_mut(req.bridge).expect("ensured above");
                let tap_err =
                    |source| NetError::CreateTap { tap: tap.clone(), bridge: req.bridge.into(), source };
                match links.kind_of(&tap).as_deref() {
                    // Ours (the name derives from this home and machine): a crash left it, or
                    // the bridge was recreated and it lost its port.
                    Some("tun") => links.attach(&tap, req.bridge).map_err(tap_err)?,
                    None => links.create_tap(&tap, req.bridge).map_err(tap_err)?,
                    Some(kind) => {
                        let why = format!("a link named {tap} exists and is a {kind} link, not a tap");
                        return Err(tap_err(n2d_exec::ExecError::Failed {
                            command: format!("ip link show dev {tap}"),
                            status: why,
                            stderr_tail: String::new(),
                        }));
                    }
                }
                if bridge.created_by_n2d {
                    if req.expose {
                        if let Err(e) = nat::expose(runner, req.bridge, ip) {
                            self.notes.say(&format!(
                                "warning: cannot let connections from other networks reach {ip} on {}: {e}",
                                req.bridge
                            ));
                        }
                    } else if previous.as_ref().is_some_and(|l| l.exposed) {
                        nat::unexpose(runner, req.bridge, ip);
                    }
                }
                let lease = Lease {
                    home: req.home.to_path_buf(),
                    machine: req.machine.into(),
                    tap: tap.clone(),
                    mac: mac.clone(),
                    exposed: req.expose,
                };
                bridge.leases.insert(ip, lease);
                Ok(Attachment { ip, gateway: bridge.gateway, prefix_len: bridge.prefix_len, tap, mac })
            })();
            if result.is_err() && created {
                remove_bridge(state, runner, &self.ip_forward, req.bridge);
            }
            result
        })
    }

    /// Gives back every address of `machine` of `home`, deletes its taps (and `tap`, the one
    /// its record names, when no lease knows it), and removes each bridge n2d made that no
    /// machine of any home uses any more. Returns what it said it did, for the user. Only taps of
    /// n2d's naming scheme that are taps are deleted; a damaged lease is left as it is.
    pub fn detach(
        &self,
        runner: &dyn Runner,
        home: &Path,
        machine: &str,
        tap: Option<&str>,
    ) -> Result<Vec<String>, NetError> {
        let mut notes = Vec::new();
        let tap = match tap.map(parse_tap_name) {
            Some(Err(e)) => {
                notes.push(format!("left {:?} alone: {e}", tap.unwrap_or_default()));
                None
            }
            Some(Ok(t)) => Some(t),
            None => None,
        };
        // Nothing host-wide to give back (a user-mode machine, or one whose create stopped
        // before its lease): no lock is taken, which an ordinary user could not.
        if !self.state_file().exists() && tap.is_none_or(|t| !Links::new(runner).exists(t)) {
            return Ok(notes);
        }
        self.locked(|state| {
            forget_stale(state, runner);
            let links = Links::new(runner);
            let mut taps: Vec<String> = tap.map(str::to_string).into_iter().collect();
            let mut emptied = Vec::new();
            let mut unexpose = Vec::new();
            for (name, bridge) in state.bridges.iter_mut() {
                if bridge.problem(name).is_some() {
                    continue;
                }
                let before = bridge.leases.len();
                let sound = bridge.clone();
                bridge.leases.retain(|ip, l| {
                    let mine = l.owned_by(home, machine) && sound.trusted(*ip, l);
                    if mine {
                        taps.push(l.tap.clone());
                        if l.exposed {
                            unexpose.push((name.clone(), *ip));
                        }
                    }
                    !mine
                });
                if bridge.leases.len() != before && bridge.leases.is_empty() && bridge.created_by_n2d {
                    emptied.push(name.clone());
                }
            }
            for (bridge, ip) in unexpose {
                if state.bridges.get(&bridge).is_some_and(|b| b.created_by_n2d) && !emptied.contains(&bridge)
                {
                    nat::unexpose(runner, &bridge, ip);
                }
            }
            taps.sort();
            taps.dedup();
            let others: Vec<&Lease> = state.bridges.values().flat_map(|b| b.leases.values()).collect();
            for t in taps {
                if others.iter().any(|l| l.tap == t) {
                    continue;
                }
                match links.kind_of(&t).as_deref() {
                    None => {}
                    Some("tun") => {
                        links.delete(&t).map_err(|source| NetError::DeleteTap { tap: t.clone(), source })?
                    }
                    Some(kind) => {
                        notes.push(format!("left {t} alone: it is a {kind} link, not a tap n2d made"))
                    }
                }
            }
            for name in emptied {
                notes.extend(remove_bridge(state, runner, &self.ip_forward, &name));
            }
            Ok(notes)
        })
    }
}

/// Refuses a state directory someone other than the caller or root could change: it must be a
/// real directory (not a symlink), owned by the caller or root, and writable by neither group
/// nor others, or another user could swap in leases that name any interface.
pub fn check_run_dir(dir: &Path) -> Result<(), NetError> {
    use std::os::unix::fs::MetadataExt;
    let unsafe_dir = |reason: String| NetError::UnsafeRunDir { path: dir.to_path_buf(), reason };
    let meta = std::fs::symlink_metadata(dir).map_err(|e| unsafe_dir(format!("unreadable ({e})")))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory".into()));
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(unsafe_dir(format!("owned by uid {}, neither you (uid {euid}) nor root", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "writable by {} (mode {:o})",
            if meta.mode() & 0o002 != 0 { "others" } else { "its group" },
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Reads a state file (n2d-store's reader: no symlink followed, regular files of bounded size
/// only); a missing file is the empty state.
fn read_state(path: &Path) -> Result<HostState, NetError> {
    let store = |source| NetError::HostState { path: path.to_path_buf(), source };
    Ok(n2d_store::read_json_opt(path).map_err(store)?.unwrap_or_default())
}

/// The subnet of a bridge n2d has no entry for: the link's own address, else, for n2d's
/// default bridge (made on demand), the default subnet.
fn unrecorded_subnet(links: &Links, bridge: &str) -> Option<(Ipv4Addr, u8)> {
    let default = (bridge == crate::DEFAULT_BRIDGE).then_some((DEFAULT_GATEWAY, DEFAULT_PREFIX_LEN));
    links.ipv4_of(bridge).ok().flatten().or(default)
}

/// Drops the leases of machines whose home directory no longer holds them (a home deleted by
/// hand, a machine directory removed by hand, a crash before the lease was given back), and
/// deletes their taps unless another lease names them.
fn forget_stale(state: &mut HostState, runner: &dyn Runner) {
    let mut dropped = Vec::new();
    for (name, bridge) in state.bridges.iter_mut() {
        if bridge.problem(name).is_some() {
            continue;
        }
        let sound = bridge.clone();
        // Only a directory that is surely gone counts: one the caller may not read (another
        // user's home) keeps its leases. A damaged lease is never taken for stale.
        bridge.leases.retain(|ip, l| {
            if !sound.trusted(*ip, l) {
                return true;
            }
            let dir = l.home.join("machines").join(&l.machine);
            let gone = matches!(std::fs::metadata(dir), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
            if gone {
                dropped.push(l.tap.clone());
            }
            !gone
        });
    }
    let links = Links::new(runner);
    for tap in dropped {
        let held = state.bridges.values().flat_map(|b| b.leases.values()).any(|l| l.tap == tap);
        if !held && links.kind_of(&tap).as_deref() == Some("tun") {
            let _ = links.delete(&tap);
        }
    }
}

/// Records a home's existing machine on its address unless someone else holds it (then that
/// machine's `start` reports the clash).
fn reassert(state: &mut HostState, home: &Path, claim: &Claim) {
    if let Some(bridge) = state.bridges.get_mut(&claim.bridge) {
        let in_subnet = bridge.candidates(None).any(|ip| ip == claim.ip);
        if in_subnet && !bridge.leases.contains_key(&claim.ip) {
            let lease = Lease {
                home: home.to_path_buf(),
                machine: claim.machine.clone(),
                tap: claim.tap.clone(),
                mac: claim.mac.clone(),
                // Its start exposes it again: a stopped machine needs no open door.
                exposed: false,
            };
            bridge.leases.insert(claim.ip, lease);
        }
    }
}

/// Makes sure `req.bridge` exists and has an entry. Returns whether it was created now.
fn ensure_bridge(
    state: &mut HostState,
    runner: &dyn Runner,
    ip_forward: &Path,
    req: &AttachRequest,
    notes: &Notes,
) -> Result<bool, NetError> {
    let links = Links::new(runner);
    let may_create = req.bridge == crate::DEFAULT_BRIDGE;
    match links.kind_of(req.bridge) {
        Some(kind) if kind != "bridge" => Err(NetError::NotABridge { dev: req.bridge.into(), kind }),
        Some(_) => {
            if let Some(entry) = state.bridges.get(req.bridge) {
                if let Some(problem) = entry.problem(req.bridge) {
                    return Err(NetError::DamagedState { bridge: req.bridge.into(), problem });
                }
                // Chains flushed or cut short by hand, or gone with a firewall reload, are filled
                // again.
                if entry.created_by_n2d && !nat::intact(runner, req.bridge) {
                    let (subnet, uplink, exposed) = (entry.subnet(), entry.uplink.clone(), entry.exposed());
                    if let Err(e) = nat::install(runner, req.bridge, &subnet, uplink.as_deref(), &exposed) {
                        notes.say(&format!(
                            "warning: cannot set up the firewall chains of {}: {e}",
                            req.bridge
                        ));
                    }
                }
                return Ok(false);
            }
            let (gateway, prefix_len) = links
                .ipv4_of(req.bridge)
                .map_err(|source| NetError::InspectBridge { bridge: req.bridge.into(), source })?
                .ok_or_else(|| NetError::BridgeWithoutAddress(req.bridge.into()))?;
            // n2d's own bridge without an entry: n2d was killed between making it and saving
            // the entry, or the state file was removed by hand; it gets n2d's chains. Any other
            // bridge is the user's.
            let created_by_n2d = may_create;
            let mut entry =
                BridgeState { gateway, prefix_len, created_by_n2d, uplink: None, leases: BTreeMap::new() };
            if created_by_n2d {
                entry.uplink =
                    enable_outbound(state, runner, ip_forward, req.bridge, &entry.subnet(), &[], notes);
            }
            state.bridges.insert(req.bridge.into(), entry);
            Ok(false)
        }
        None => {
            if let Some(problem) = state.bridges.get(req.bridge).and_then(|b| b.problem(req.bridge)) {
                return Err(NetError::DamagedState { bridge: req.bridge.into(), problem });
            }
            let recorded =
                state.bridges.get(req.bridge).filter(|b| b.created_by_n2d).map(|b| (b.gateway, b.prefix_len));
            if !may_create && recorded.is_none() {
                return Err(NetError::NoSuchBridge(req.bridge.into()));
            }
            // Recreated with its recorded subnet, so the leases and certificates stay valid.
            let (gateway, prefix_len) =
                recorded.or(req.subnet).unwrap_or((DEFAULT_GATEWAY, DEFAULT_PREFIX_LEN));
            links
                .create_bridge(req.bridge, gateway, prefix_len)
                .map_err(|source| NetError::CreateBridge { bridge: req.bridge.into(), source })?;
            let subnet = nat::subnet_text(gateway, prefix_len);
            let exposed = state.bridges.get(req.bridge).map(BridgeState::exposed).unwrap_or_default();
            let uplink = enable_outbound(state, runner, ip_forward, req.bridge, &subnet, &exposed, notes);
            let leases = state.bridges.remove(req.bridge).map(|b| b.leases).unwrap_or_default();
            state.bridges.insert(
                req.bridge.into(),
                BridgeState { gateway, prefix_len, created_by_n2d: true, uplink, leases },
            );
            Ok(true)
        }
    }
}

/// The chains of a bridge n2d made (NAT and forwarding when the host has a default route).
/// Problems are warnings: the VMs still reach each other and the host.
fn enable_outbound(
    state: &mut HostState,
    runner: &dyn Runner,
    ip_forward: &Path,
    bridge: &str,
    subnet: &str,
    exposed: &[Ipv4Addr],
    notes: &Notes,
) -> Option<String> {
    let uplink = default_route_dev(runner, notes);
    if let Err(e) = nat::install(runner, bridge, subnet, uplink.as_deref(), exposed) {
        notes.say(&format!("warning: cannot set up NAT for {bridge}: VMs will not reach the internet ({e})"));
        return uplink;
    }
    if uplink.is_some() && std::fs::read_to_string(ip_forward).is_ok_and(|v| v.trim() == "0") {
        match std::fs::write(ip_forward, b"1") {
            Ok(()) => state.forwarding_turned_on = true,
            Err(e) => notes.say(&format!(
                "warning: cannot enable IPv4 forwarding ({e}): VMs on {bridge} will not reach the internet"
            )),
        }
    }
    uplink
}

/// Deletes a bridge n2d made, its chains and entry; turns forwarding back off when n2d turned
/// it on and no bridge of n2d's is left. Returns notes for the user.
fn remove_bridge(state: &mut HostState, runner: &dyn Runner, ip_forward: &Path, bridge: &str) -> Vec<String> {
    let links = Links::new(runner);
    let mut notes = Vec::new();
    nat::remove(runner, bridge);
    if links.exists(bridge) {
        let _ = links.delete(bridge);
    }
    state.bridges.remove(bridge);
    notes.push(format!("removed bridge {bridge} (no machine uses it) and its firewall chains"));
    if state.forwarding_turned_on && !state.bridges.values().any(|b| b.created_by_n2d) {
        state.forwarding_turned_on = false;
        if links.exists("docker0") {
            notes.push("left IPv4 forwarding on: the host's Docker engine (docker0) needs it".into());
        } else if std::fs::write(ip_forward, b"0").is_ok() {
            notes.push("turned IPv4 forwarding back off (n2d had turned it on)".into());
        }
    }
    notes
}

/// The address for a request: the kept one (a clash is an error), the machine's current lease,
/// or the first free one in the allowed range.
fn choose_address(
    req: &AttachRequest,
    bridge: &BridgeState,
    keep: Option<&Claim>,
) -> Result<Ipv4Addr, NetError> {
    let subnet = bridge.subnet();
    if let Some(range) = req.addresses {
        check_range(req.bridge, bridge.gateway, bridge.prefix_len, range)?;
    }
    // A damaged lease holds its address whoever it names.
    let taken = |ip: &Ipv4Addr| {
        bridge.leases.get(ip).filter(|l| !l.owned_by(req.home, req.machine) || !bridge.trusted(*ip, l))
    };
    if let Some(k) = keep {
        if let Some(other) = taken(&k.ip) {
            return Err(NetError::AddressTaken {
                ip: k.ip,
                bridge: req.bridge.into(),
                holder: other.describe(),
            });
        }
        return Ok(k.ip);
    }
    if let Some((ip, _)) =
        bridge.leases.iter().find(|(ip, l)| l.owned_by(req.home, req.machine) && bridge.trusted(**ip, l))
    {
        return Ok(*ip);
    }
    if let Some(r) = req.addresses.filter(|r| r.first == r.last) {
        if let Some(other) = taken(&r.first) {
            return Err(NetError::AddressTaken {
                ip: r.first,
                bridge: req.bridge.into(),
                holder: other.describe(),
            });
        }
    }
    bridge.candidates(req.addresses).find(|ip| taken(ip).is_none()).ok_or_else(|| NetError::SubnetFull {
        bridge: req.bridge.into(),
        used: bridge.leases.len(),
        range: req.addresses.map_or(subnet, |r| r.to_string()),
    })
}

/// Every address of `range` must be a host address of the subnet other than the gateway.
fn check_range(bridge: &str, gateway: Ipv4Addr, prefix_len: u8, range: IpRange) -> Result<(), NetError> {
    let (first, last) = crate::host_range(gateway, prefix_len).unwrap_or((1, 0));
    let inside = |ip: Ipv4Addr| (first..=last).contains(&u32::from(ip));
    if inside(range.first) && inside(range.last) && !range.contains(gateway) {
        return Ok(());
    }
    Err(NetError::RangeOutsideSubnet {
        range: range.to_string(),
        bridge: bridge.into(),
        subnet: nat::subnet_text(gateway, prefix_len),
        gateway,
    })
}

/// A tap and MAC from the home and machine, unlike every other lease's (a hash clash takes the
/// next salt).
fn fresh_names(state: &HostState, home: &Path, machine: &str) -> (String, String) {
    let leases: Vec<&Lease> = state.bridges.values().flat_map(|b| b.leases.values()).collect();
    (0u32..)
        .map(|salt| (tap_for(home, machine, salt), mac_for(home, machine, salt)))
        .find(|(tap, mac)| !leases.iter().any(|l| &l.tap == tap || &l.mac == mac))
        .expect("an unused name exists")
}

/// The interface of the default route, if any.
fn default_route_dev(runner: &dyn Runner, notes: &Notes) -> Option<String> {
    let out = runner.run(&Cmd::new("ip", "iproute2").args(["-j", "-4", "route", "show", "default"])).ok()?;
    match crate::ipjson::default_route_dev(&out)? {
        Ok(dev) => Some(dev),
        Err(e) => {
            notes.say(&format!(
                "warning: the default route's interface is not used for the VMs' outbound traffic: {e}"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    struct Setup {
        _dir: tempfile::TempDir,
        net: HostNet,
        forward: PathBuf,
        homes: Vec<PathBuf>,
    }

    /// Host state in a temp dir, forwarding off, and two homes each with machines `a` and `b`
    /// (their directories exist, as `create` makes them before attaching).
    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let forward = dir.path().join("ip_forward");
        std::fs::write(&forward, "0\n").unwrap();
        let homes: Vec<PathBuf> = ["home1", "home2"].iter().map(|h| dir.path().join(h)).collect();
        for h in &homes {
            for m in ["a", "b"] {
                std::fs::create_dir_all(h.join("machines").join(m)).unwrap();
            }
        }
        let net = HostNet::at(dir.path().join("run"), "netns-1", &forward)
            .with_lock_timeout(Duration::from_secs(5));
        Setup { _dir: dir, net, forward, homes }
    }

    fn req<'a>(home: &'a Path, machine: &'a str, bridge: &'a str) -> AttachRequest<'a> {
        AttachRequest { home, machine, bridge, addresses: None, subnet: None, claims: &[], expose: false }
    }

    fn forwarding(s: &Setup) -> String {
        std::fs::read_to_string(&s.forward).unwrap().trim().to_string()
    }

    #[test]
    fn two_homes_share_the_bridge_and_the_last_machine_removes_it() {
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        let (h1, h2) = (&s.homes[0], &s.homes[1]);
        let a1 = s.net.attach(&host, &req(h1, "a", "n2d0"), None).unwrap();
        let a2 = s.net.attach(&host, &req(h2, "a", "n2d0"), None).unwrap();
        // Same machine name, two homes: other address, tap and MAC.
        assert_eq!((a1.ip, a2.ip), (Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 3)));
        assert_ne!(a1.tap, a2.tap);
        assert_ne!(a1.mac, a2.mac);
        assert_eq!(host.master(&a1.tap).as_deref(), Some("n2d0"));
        assert_eq!(host.master(&a2.tap).as_deref(), Some("n2d0"));
        assert_eq!(forwarding(&s), "1");
        // Attaching again gives the same lease.
        assert_eq!(s.net.attach(&host, &req(h1, "a", "n2d0"), None).unwrap(), a1);

        // Home 1's rm leaves home 2's machine, tap, bridge and rules alone.
        let notes = s.net.detach(&host, h1, "a", None).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert!(!host.links().contains(&a1.tap));
        assert!(host.links().contains(&a2.tap) && host.links().contains("n2d0"));
        assert!(host.chain("filter N2D-FWD-n2d0").is_some());
        assert_eq!(forwarding(&s), "1");

        // The last one takes the bridge, its chains and jumps, and forwarding with it.
        let notes = s.net.detach(&host, h2, "a", None).unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(!host.links().contains("n2d0") && !host.links().contains(&a2.tap));
        assert_eq!(host.chain("filter N2D-FWD-n2d0"), None);
        assert_eq!(host.chain("nat N2D-NAT-n2d0"), None);
        assert_eq!(host.chain("filter FORWARD").unwrap(), Vec::<String>::new());
        assert_eq!(host.chain("nat POSTROUTING").unwrap(), Vec::<String>::new());
        assert_eq!(forwarding(&s), "0");
        assert!(!s.net.state_file().exists(), "nothing held: no state file");
    }

    #[test]
    fn nat_goes_after_existing_forward_rules_and_only_to_the_uplink() {
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        host.set_chain("filter FORWARD", &["-j DOCKER-USER", "-j DROP"]);
        s.net.attach(&host, &req(&s.homes[0], "a", "n2d0"), None).unwrap();
        assert_eq!(host.chain("filter FORWARD").unwrap(), ["-j DOCKER-USER", "-j DROP", "-j N2D-FWD-n2d0"]);
        assert_eq!(host.chain("nat N2D-NAT-n2d0").unwrap(), ["-s 10.77.0.0/24 -o eth0 -j MASQUERADE"]);
    }

    #[test]
    fn forwarding_already_on_stays_on_and_without_a_route_is_never_touched() {
        let s = setup();
        std::fs::write(&s.forward, "1\n").unwrap();
        let host = FakeHost::new(Some("eth0"));
        s.net.attach(&host, &req(&s.homes[0], "a", "n2d0"), None).unwrap();
        s.net.detach(&host, &s.homes[0], "a", None).unwrap();
        assert_eq!(forwarding(&s), "1");

        let s = setup();
        let host = FakeHost::new(None);
        s.net.attach(&host, &req(&s.homes[0], "a", "n2d0"), None).unwrap();
        assert_eq!(forwarding(&s), "0");
        assert_eq!(host.chain("nat N2D-NAT-n2d0"), None);
        // No uplink: the VMs reach each other and the host, and nothing else.
        assert_eq!(
            host.chain("filter N2D-FWD-n2d0").unwrap(),
            [
                "-i n2d0 -o n2d0 -j ACCEPT",
                "-o n2d0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-i n2d0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-o n2d0 -j DROP",
                "-i n2d0 -j DROP"
            ]
        );
    }

    #[test]
    fn forwarding_stays_on_when_the_hosts_docker_needs_it() {
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        s.net.attach(&host, &req(&s.homes[0], "a", "n2d0"), None).unwrap();
        host.add_link("docker0", "bridge", Some((Ipv4Addr::new(172, 17, 0, 1), 16)));
        let notes = s.net.detach(&host, &s.homes[0], "a", None).unwrap();
        assert!(notes.iter().any(|n| n.contains("docker0")), "{notes:?}");
        assert_eq!(forwarding(&s), "1");
    }

    #[test]
    fn network_must_be_a_bridge_and_a_foreign_bridge_needs_a_range() {
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        for dev in ["eth0", "lo"] {
            let err = s.net.check_choice(&host, dev, None).unwrap_err();
            assert!(matches!(err, NetError::NotABridge { .. }) && err.is_usage(), "{err}");
            assert!(s.net.attach(&host, &req(&s.homes[0], "a", dev), None).is_err());
        }
        assert!(matches!(s.net.check_choice(&host, "br9", None), Err(NetError::NoSuchBridge(_))));
        host.add_link("br0", "bridge", Some((Ipv4Addr::new(192, 168, 1, 1), 24)));
        let err = s.net.check_choice(&host, "br0", None).unwrap_err();
        assert!(
            err.to_string().contains("--ip-range") && err.to_string().contains("192.168.1.0/24"),
            "{err}"
        );
        let range: IpRange = "192.168.1.200-192.168.1.201".parse().unwrap();
        s.net.check_choice(&host, "br0", Some(range)).unwrap();
        for outside in ["192.168.2.5", "192.168.1.1-192.168.1.9", "192.168.1.250-192.168.1.255"] {
            let err = s.net.check_choice(&host, "br0", Some(outside.parse().unwrap())).unwrap_err();
            assert!(matches!(err, NetError::RangeOutsideSubnet { .. }) && err.is_usage(), "{outside}: {err}");
        }
        let err = s.net.check_choice(&host, "n2d0", Some("10.78.0.5".parse().unwrap())).unwrap_err();
        assert!(err.to_string().contains("10.77.0.0/24"), "{err}");
        s.net.check_choice(&host, "n2d0", None).unwrap();

        // Addresses come from the range only, and a foreign bridge gets no NAT and is kept.
        let mut r = req(&s.homes[0], "a", "br0");
        r.addresses = Some(range);
        assert_eq!(s.net.attach(&host, &r, None).unwrap().ip, Ipv4Addr::new(192, 168, 1, 200));
        r.machine = "b";
        assert_eq!(s.net.attach(&host, &r, None).unwrap().ip, Ipv4Addr::new(192, 168, 1, 201));
        let mut r3 = req(&s.homes[1], "a", "br0");
        r3.addresses = Some(range);
        assert!(matches!(s.net.attach(&host, &r3, None), Err(NetError::SubnetFull { .. })));
        assert_eq!(host.chain("filter N2D-FWD-br0"), None);
        s.net.detach(&host, &s.homes[0], "a", None).unwrap();
        s.net.detach(&host, &s.homes[0], "b", None).unwrap();
        assert!(host.links().contains("br0"));
        assert_eq!(forwarding(&s), "0");
    }

    #[test]
    fn ranges_outside_the_subnet_and_taken_addresses_are_refused() {
        let s = setup();
        let host = FakeHost::new(None);
        let mut r = req(&s.homes[0], "a", "n2d0");
        for bad in ["10.77.1.5", "10.77.0.1", "10.77.0.250-10.77.0.255"] {
            r.addresses = Some(bad.parse().unwrap());
            let err = s.net.attach(&host, &r, None).unwrap_err();
            assert!(matches!(err, NetError::RangeOutsideSubnet { .. }), "{bad}: {err}");
        }
        // The failed attaches left no bridge behind.
        assert!(!host.links().contains("n2d0"));
        r.addresses = Some("10.77.0.9".parse().unwrap());
        assert_eq!(s.net.attach(&host, &r, None).unwrap().ip, Ipv4Addr::new(10, 77, 0, 9));
        let mut other = req(&s.homes[1], "a", "n2d0");
        other.addresses = r.addresses;
        let err = s.net.attach(&host, &other, None).unwrap_err();
        assert!(err.to_string().contains("held by machine a of"), "{err}");
    }

    #[test]
    fn a_failed_tap_leaves_nothing_and_a_stale_home_is_forgotten() {
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        host.fail_on("tuntap");
        assert!(matches!(
            s.net.attach(&host, &req(&s.homes[0], "a", "n2d0"), None),
            Err(NetError::CreateTap { .. })
        ));
        assert!(!host.links().contains("n2d0"));
        assert_eq!(host.chain("filter FORWARD").unwrap(), Vec::<String>::new());
        assert_eq!(forwarding(&s), "0");
        assert!(!s.net.state_file().exists());

        let host = FakeHost::new(Some("eth0"));
        s.net.attach(&host, &req(&s.homes[0], "a", "n2d0"), None).unwrap();
        let stale_tap = s.net.snapshot().unwrap().bridges["n2d0"].leases.values().next().unwrap().tap.clone();
        // Home 1 deleted by hand: its lease and tap go, and the address is free again.
        std::fs::remove_dir_all(&s.homes[0]).unwrap();
        let got = s.net.attach(&host, &req(&s.homes[1], "a", "n2d0"), None).unwrap();
        assert_eq!(got.ip, Ipv4Addr::new(10, 77, 0, 2));
        assert!(!host.links().contains(&stale_tap), "the stale lease's tap is left");
    }

    #[test]
    fn after_a_reboot_machines_get_their_recorded_addresses_back() {
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        let (h1, h2) = (&s.homes[0], &s.homes[1]);
        let a = s.net.attach(&host, &req(h1, "a", "n2d0"), None).unwrap();
        let b = s.net.attach(&host, &req(h1, "b", "n2d0"), None).unwrap();
        // Reboot: /run and every link are gone.
        std::fs::remove_file(s.net.state_file()).unwrap();
        let host = FakeHost::new(Some("eth0"));
        let claim = |m: &str, at: &Attachment| Claim {
            machine: m.into(),
            bridge: "n2d0".into(),
            ip: at.ip,
            tap: at.tap.clone(),
            mac: at.mac.clone(),
        };
        let claims = [claim("a", &a), claim("b", &b)];
        // Home 1 starts b first, re-asserting a's address too.
        let mut r = req(h1, "b", "n2d0");
        r.claims = &claims;
        assert_eq!(s.net.attach(&host, &r, Some(&claims[1])).unwrap(), b);
        // So home 2's new machine does not take a's address.
        assert_eq!(s.net.attach(&host, &req(h2, "a", "n2d0"), None).unwrap().ip, Ipv4Addr::new(10, 77, 0, 4));
        let mut r = req(h1, "a", "n2d0");
        r.claims = &claims;
        assert_eq!(s.net.attach(&host, &r, Some(&claims[0])).unwrap(), a);
    }

    #[test]
    fn n2ds_bridge_without_an_entry_gets_its_chains() {
        // What a kill between making the bridge and saving its entry leaves.
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        host.add_link("n2d0", "bridge", Some((Ipv4Addr::new(10, 77, 0, 1), 24)));
        s.net.attach(&host, &req(&s.homes[0], "a", "n2d0"), None).unwrap();
        assert_eq!(host.chain("filter FORWARD").unwrap(), ["-j N2D-FWD-n2d0"]);
        s.net.detach(&host, &s.homes[0], "a", None).unwrap();
        assert!(!host.links().contains("n2d0"));
    }

    #[test]
    fn capacity_counts_what_is_free() {
        let s = setup();
        let host = FakeHost::new(None);
        assert_eq!(s.net.capacity(&host, "n2d0", None).unwrap(), Some((253, "10.77.0.0/24".into())));
        s.net.attach(&host, &req(&s.homes[0], "a", "n2d0"), None).unwrap();
        let range: IpRange = "10.77.0.2-10.77.0.5".parse().unwrap();
        assert_eq!(s.net.capacity(&host, "n2d0", Some(range)).unwrap(), Some((3, range.to_string())));
        assert_eq!(s.net.capacity(&host, "br7", None).unwrap(), None);
    }

    /// Rewrites the state file with `edit` applied (what a hostile or careless writer could do).
    fn tamper(s: &Setup, edit: impl FnOnce(&mut HostState)) {
        let mut state = s.net.snapshot().unwrap();
        edit(&mut state);
        std::fs::write(s.net.state_file(), serde_json::to_vec(&state).unwrap()).unwrap();
    }

    fn lease(home: &Path, machine: &str, tap: &str, mac: &str) -> Lease {
        Lease { home: home.into(), machine: machine.into(), tap: tap.into(), mac: mac.into(), exposed: false }
    }

    #[test]
    fn a_lease_naming_the_uplink_never_deletes_it() {
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        let h1 = &s.homes[0];
        s.net.attach(&host, &req(h1, "a", "n2d0"), None).unwrap();
        host.add_link("n2dt00000bad", "veth", None);
        // Hostile: leases of machine b naming the uplink, the bridge, loopback and a link of n2d's
        // naming scheme that is no tap; a stale lease (its home gone) naming the uplink too.
        tamper(&s, |st| {
            let b = st.bridges.get_mut("n2d0").unwrap();
            b.leases.insert(Ipv4Addr::new(10, 77, 0, 20), lease(h1, "b", "eth0", "52:54:00:00:00:20"));
            b.leases.insert(Ipv4Addr::new(10, 77, 0, 21), lease(h1, "b", "n2d0", "52:54:00:00:00:21"));
            b.leases.insert(Ipv4Addr::new(10, 77, 0, 22), lease(h1, "b", "lo", "52:54:00:00:00:22"));
            b.leases
                .insert(Ipv4Addr::new(10, 77, 0, 23), lease(h1, "b", "n2dt00000bad", "52:54:00:00:00:23"));
            b.leases.insert(
                Ipv4Addr::new(10, 77, 0, 24),
                lease(Path::new("/gone"), "x", "eth0", "52:54:00:00:00:24"),
            );
        });
        let problems = s.net.snapshot().unwrap().problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("\"eth0\" is not a tap n2d made")), "{problems:?}");
        // rm of b, with a damaged record naming the uplink as its tap too.
        let notes = s.net.detach(&host, h1, "b", Some("eth0")).unwrap();
        assert!(notes.iter().any(|n| n.contains("left \"eth0\" alone")), "{notes:?}");
        for link in ["eth0", "lo", "n2d0", "n2dt00000bad"] {
            assert!(host.links().contains(link), "{link} was deleted");
        }
        // The damaged entries are left as they are, their addresses still taken (b's sound lease,
        // whose "tap" is a veth, was given back without touching that link).
        let left = s.net.snapshot().unwrap().bridges["n2d0"].leases.len();
        assert_eq!(left, 5);
        // A record naming a link of n2d's scheme that is no tap: left alone too.
        let notes = s.net.detach(&host, h1, "b", Some("n2dt00000bad")).unwrap();
        assert!(notes.iter().any(|n| n.contains("veth link, not a tap")), "{notes:?}");
        assert!(host.links().contains("n2dt00000bad"));
        // The last sound machine goes: the bridge stays, since damaged leases still name it.
        s.net.detach(&host, h1, "a", None).unwrap();
        assert!(host.links().contains("eth0") && host.links().contains("n2d0"));
    }

    #[test]
    fn damaged_leases_are_reported_and_never_reused() {
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        let h1 = &s.homes[0];
        let a = s.net.attach(&host, &req(h1, "a", "n2d0"), None).unwrap();
        // Hostile: machine a's own lease rewritten with a MAC carrying QEMU options, and leases
        // with a bad machine name, relative and unnormalized homes, an address outside the subnet.
        tamper(&s, |st| {
            let b = st.bridges.get_mut("n2d0").unwrap();
            b.leases.get_mut(&a.ip).unwrap().mac = "52:54:00:12:34:56,romfile=/tmp/x".into();
            b.leases.insert(
                Ipv4Addr::new(10, 77, 0, 30),
                lease(h1, "../../etc", "n2dt00000030", "52:54:00:00:00:30"),
            );
            b.leases.insert(
                Ipv4Addr::new(10, 77, 0, 31),
                lease(Path::new("rel"), "c", "n2dt00000031", "52:54:00:00:00:31"),
            );
            b.leases.insert(
                Ipv4Addr::new(10, 77, 0, 32),
                lease(Path::new("/a/../b"), "c", "n2dt00000032", "52:54:00:00:00:32"),
            );
            b.leases
                .insert(Ipv4Addr::new(10, 78, 0, 33), lease(h1, "c", "n2dt00000033", "52:54:00:00:00:33"));
            b.leases
                .insert(Ipv4Addr::new(10, 77, 0, 255), lease(h1, "c", "n2dt000000ff", "52:54:00:00:00:ff"));
            b.leases
                .insert(Ipv4Addr::new(10, 77, 0, 34), lease(h1, "c", "n2dt00000034", "01:00:5e:00:00:34"));
        });
        assert_eq!(s.net.snapshot().unwrap().problems().len(), 7);
        // Attaching a again never hands out the damaged MAC: a gets a fresh, sound lease, and the
        // damaged one keeps its address.
        let again = s.net.attach(&host, &req(h1, "a", "n2d0"), None).unwrap();
        assert_ne!(again.ip, a.ip);
        assert!(n2d_spec::link::parse_n2d_mac(&again.mac).is_ok(), "{}", again.mac);
        for ip in [30, 31, 32, 34] {
            assert_ne!(again.ip, Ipv4Addr::new(10, 77, 0, ip));
        }
        // A record whose tap or MAC is not n2d's is refused before anything is made.
        let claim = |tap: &str, mac: &str| Claim {
            machine: "b".into(),
            bridge: "n2d0".into(),
            ip: Ipv4Addr::new(10, 77, 0, 40),
            tap: tap.into(),
            mac: mac.into(),
        };
        for bad in [claim("eth0", "52:54:00:00:00:40"), claim("n2dt00000040", "52:54:00:00:00:40,romfile=/x")]
        {
            let err = s.net.attach(&host, &req(h1, "b", "n2d0"), Some(&bad)).unwrap_err();
            assert!(matches!(err, NetError::UnsafeName { .. }), "{err}");
        }
        assert!(!host.links().contains("n2dt00000040"));
    }

    #[test]
    fn a_damaged_bridge_entry_is_never_acted_on() {
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        let h1 = &s.homes[0];
        s.net.attach(&host, &req(h1, "a", "n2d0"), None).unwrap();
        let entry = s.net.snapshot().unwrap().bridges["n2d0"].clone();
        // Hostile: an entry named like an option or with a path, and n2d0's entry with a
        // non-host gateway, then with an uplink carrying an iptables wildcard.
        tamper(&s, |st| {
            for name in ["-h", "eth0/x"] {
                let mut bad = entry.clone();
                bad.leases.clear();
                st.bridges.insert(name.into(), bad);
            }
        });
        assert_eq!(s.net.snapshot().unwrap().problems().len(), 2);
        s.net.detach(&host, h1, "a", None).unwrap();
        assert!(host.links().contains("eth0"));
        assert_eq!(s.net.snapshot().unwrap().bridges.len(), 2, "the damaged entries are left");
        for (gateway, prefix_len, uplink) in [
            (Ipv4Addr::new(10, 77, 0, 0), 24, None),
            (Ipv4Addr::new(127, 0, 0, 1), 8, None),
            (entry.gateway, 0, None),
            (entry.gateway, 24, Some("eth+")),
        ] {
            tamper(&s, |st| {
                let mut bad = entry.clone();
                bad.leases.clear();
                (bad.gateway, bad.prefix_len, bad.uplink) = (gateway, prefix_len, uplink.map(str::to_string));
                st.bridges.insert("n2d0".into(), bad);
            });
            let err = s.net.attach(&host, &req(h1, "a", "n2d0"), None).unwrap_err();
            assert!(matches!(err, NetError::DamagedState { .. }), "{err}");
        }
    }

    #[test]
    fn an_exposed_machine_is_opened_in_n2ds_chain_and_closed_again() {
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        let h1 = &s.homes[0];
        let mut r = req(h1, "a", "n2d0");
        r.expose = true;
        let a = s.net.attach(&host, &r, None).unwrap();
        let b = s.net.attach(&host, &req(h1, "b", "n2d0"), None).unwrap();
        let open = format!("-d {}/32 -o n2d0 -j ACCEPT", a.ip);
        let chain = host.chain("filter N2D-FWD-n2d0").unwrap();
        assert_eq!(chain[0], open, "{chain:?}");
        assert!(!chain.iter().any(|r| r.contains(&b.ip.to_string())), "{chain:?}");
        assert_eq!(chain.last().unwrap(), "-i n2d0 -j DROP");
        assert!(s.net.snapshot().unwrap().bridges["n2d0"].leases[&a.ip].exposed);
        // Attaching again (start) keeps one rule; a flushed chain is refilled with it.
        s.net.attach(&host, &r, None).unwrap();
        assert_eq!(host.chain("filter N2D-FWD-n2d0").unwrap().iter().filter(|x| **x == open).count(), 1);
        host.set_chain("filter N2D-FWD-n2d0", &[]);
        s.net.attach(&host, &req(h1, "b", "n2d0"), None).unwrap();
        let chain = host.chain("filter N2D-FWD-n2d0").unwrap();
        assert!(chain.contains(&open) && chain.last().unwrap() == "-i n2d0 -j DROP", "{chain:?}");
        // Started without --expose: closed. rm of an exposed machine closes it too.
        s.net.attach(&host, &req(h1, "a", "n2d0"), None).unwrap();
        assert!(!host.chain("filter N2D-FWD-n2d0").unwrap().contains(&open));
        s.net.attach(&host, &r, None).unwrap();
        s.net.detach(&host, h1, "a", None).unwrap();
        let chain = host.chain("filter N2D-FWD-n2d0").unwrap();
        assert!(!chain.contains(&open) && chain.contains(&"-o n2d0 -j DROP".to_string()), "{chain:?}");
    }

    #[test]
    fn a_chain_whose_drops_were_deleted_by_hand_is_completed() {
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        s.net.attach(&host, &req(&s.homes[0], "a", "n2d0"), None).unwrap();
        host.set_chain(
            "filter N2D-FWD-n2d0",
            &["-i n2d0 -o n2d0 -j ACCEPT", "-i n2d0 -o eth0 -s 10.77.0.0/24 -j ACCEPT"],
        );
        s.net.attach(&host, &req(&s.homes[0], "b", "n2d0"), None).unwrap();
        let chain = host.chain("filter N2D-FWD-n2d0").unwrap();
        assert_eq!(&chain[chain.len() - 2..], ["-o n2d0 -j DROP", "-i n2d0 -j DROP"]);
        assert_eq!(host.chain("filter FORWARD").unwrap(), ["-j N2D-FWD-n2d0"]);
    }

    #[test]
    fn a_run_dir_others_could_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let s = setup();
        let host = FakeHost::new(Some("eth0"));
        let run = s._dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        // Hostile: writable by others, by the group, a symlink to a directory, a file.
        for mode in [0o777, 0o1777, 0o770] {
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = s.net.attach(&host, &req(&s.homes[0], "a", "n2d0"), None).unwrap_err();
            assert!(matches!(err, NetError::UnsafeRunDir { .. }), "{mode:o}: {err}");
            assert!(err.to_string().contains("chmod go-w"), "{err}");
            assert!(s.net.snapshot().is_err());
        }
        assert!(!host.links().contains("n2d0"), "nothing was made");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        s.net.attach(&host, &req(&s.homes[0], "a", "n2d0"), None).unwrap();

        let real = s._dir.path().join("elsewhere");
        std::fs::create_dir(&real).unwrap();
        let linked = s._dir.path().join("linked");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        let file = s._dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        for dir in [linked, file] {
            let net = HostNet::at(&dir, "netns-1", &s.forward).with_lock_timeout(Duration::from_secs(5));
            let err = net.attach(&host, &req(&s.homes[0], "b", "n2d0"), None).unwrap_err();
            assert!(
                matches!(err, NetError::UnsafeRunDir { .. }) || matches!(err, NetError::HostState { .. }),
                "{err}"
            );
        }
        // Another user's directory (needs root to make one).
        if rustix::process::geteuid().is_root() {
            let theirs = s._dir.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let err = check_run_dir(&theirs).unwrap_err();
            assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        }
        // A state file replaced by a symlink is not followed.
        let state = s.net.state_file();
        let target = s._dir.path().join("target.json");
        std::fs::rename(&state, &target).unwrap();
        std::os::unix::fs::symlink(&target, &state).unwrap();
        assert!(s.net.attach(&host, &req(&s.homes[0], "b", "n2d0"), None).is_err());
    }
}
