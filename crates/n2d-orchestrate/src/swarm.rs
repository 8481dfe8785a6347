//! Swarms of n2d machines: nodes created in parallel, formed over the Docker API (n2d-swarm),
//! scaled and removed; a create or scale-up that fails takes back what it made.

use crate::{runtime, ConsoleLines, Error, Orchestrator, Result};
use n2d_exec::Runner;
use n2d_spec::machine::{ByteSize, MachineName, MachineSpec, DEFAULT_BRIDGE, DEFAULT_DISK, DEFAULT_MEMORY};
use n2d_spec::swarm::{apply_label_rules, plan_scale, NodePlan, NodeRole, ScalePlan, SwarmName, SwarmSpec};
use n2d_store::{ExternalHost, Journal, MachineRecord, Operation, SwarmRecord};
use n2d_swarm::{
    form_swarm, join_external_worker, load_image_everywhere, remove_nodes, swarm_health, Connector,
    DockerApi, Endpoint, LoadProgress, Manager, NodeInfo,
};
use n2d_vm::qemu::console_tail;
use n2d_vm::{Hypervisor, VmState};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Each node's `Loaded image: ...` lines, as `swarm load` reports them.
pub type LoadedImages = Vec<(String, Vec<String>)>;

/// Swarm nodes get less than a lone host by default (four of them share one machine): 1 GiB,
/// what the fault suite's swarm runs its stack, routing mesh and restarts in, and twice the
/// smallest `--memory` with which a node runs a container (512M, BENCHMARKS.md "Footprint").
/// Memory a node does not use goes back to the host (free page reporting) either way.
pub const DEFAULT_SWARM_MEMORY: ByteSize = ByteSize(DEFAULT_MEMORY.0 / 2);

/// The machine spec of one planned node (memory default: [`DEFAULT_SWARM_MEMORY`]; vCPUs:
/// `default_cpus`, the hypervisor's).
pub fn node_spec(spec: &SwarmSpec, node: &NodePlan, image: &str, default_cpus: u32) -> Result<MachineSpec> {
    let memory = match node.memory.as_ref().or(spec.memory.as_ref()) {
        Some(m) => {
            m.parse::<ByteSize>().map_err(|source| Error::NodeMemory { node: node.name.clone(), source })?
        }
        None => DEFAULT_SWARM_MEMORY,
    };
    let machine = MachineSpec {
        name: node.name.parse()?,
        cpus: node.cpus.or(spec.cpus).unwrap_or(default_cpus),
        memory,
        disk: DEFAULT_DISK,
        bridge: spec.network.clone().unwrap_or_else(|| DEFAULT_BRIDGE.to_string()),
        addresses: spec.ip_range,
        image: image.to_string(),
        insecure_tcp: false,
        labels: node.labels.clone(),
        // A swarm publishes on its record (any live node), not per node.
        publish: Vec::new(),
        expose: spec.expose,
        mounts: spec.mounts.clone(),
    };
    machine.validate()?;
    Ok(machine)
}

/// A new swarm's nodes, checked before anything is made.
#[derive(Debug, Clone)]
pub struct SwarmPlan {
    pub nodes: Vec<NodePlan>,
    /// One per node, in the same order; `image` is empty until the caller resolves it.
    pub specs: Vec<MachineSpec>,
    /// The host of each node placed on another host (`swarm create --on`); the others are
    /// this host's.
    pub placement: std::collections::BTreeMap<String, n2d_spec::host::HostName>,
}

/// A scale, checked before anything is made.
#[derive(Debug, Clone)]
pub struct ScaleWork {
    pub record: SwarmRecord,
    pub want_managers: u32,
    pub want_workers: u32,
    pub plan: ScalePlan,
    /// The machine specs of `plan.add`, each like an existing node of its role.
    pub add: Vec<MachineSpec>,
    /// The existing nodes: their plans and records (read only when nodes are added).
    current: Vec<(NodePlan, MachineRecord)>,
    /// The new nodes placed on other hosts (`swarm scale --on`); the others are this host's.
    pub placement: std::collections::BTreeMap<String, n2d_spec::host::HostName>,
}

impl ScaleWork {
    pub fn is_empty(&self) -> bool {
        self.plan.is_empty()
    }
}

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    pub fn load_swarm(&self, name: &SwarmName) -> Result<SwarmRecord> {
        self.home.load_swarm(name)?.ok_or_else(|| Error::NoSuchSwarm(name.to_string()))
    }

    /// The bridge and addresses are checked (a bridge, a range where one is needed, room for
    /// every node) before any node is made.
    pub fn check_network(&self, specs: &[MachineSpec]) -> Result<()> {
        let Some(first) = specs.first() else { return Ok(()) };
        if first.user_network() {
            let held: Vec<_> = self.user_mode_records().iter().map(|r| r.ip).collect();
            let free = n2d_net::user::capacity(&held, first.addresses);
            if specs.len() > free {
                return Err(Error::BridgeTooSmall {
                    bridge: first.bridge.clone(),
                    free,
                    within: first.addresses.map_or_else(n2d_net::user::subnet, |r| r.to_string()),
                    needed: specs.len(),
                });
            }
            return Ok(());
        }
        self.net.check_choice(&self.runner, &first.bridge, first.addresses)?;
        let Some((free, within)) = self.net.capacity(&self.runner, &first.bridge, first.addresses)? else {
            return Ok(());
        };
        if specs.len() > free {
            return Err(Error::BridgeTooSmall {
                bridge: first.bridge.clone(),
                free,
                within,
                needed: specs.len(),
            });
        }
        Ok(())
    }

    /// Plans a new swarm: no node name may clash with a machine, every node's spec must be
    /// valid and the bridge must have room for them all.
    pub fn plan_swarm(&self, spec: &SwarmSpec) -> Result<SwarmPlan> {
        let machines: Vec<String> = self.home.list_machines().into_iter().map(|(n, _)| n).collect();
        spec.check_no_clash(machines.iter().map(String::as_str))?;
        let nodes = spec.plan();
        let default_cpus = self.hypervisor.default_cpus();
        let specs = nodes.iter().map(|n| node_spec(spec, n, "", default_cpus)).collect::<Result<Vec<_>>>()?;
        self.check_network(&specs)?;
        if !spec.publish.is_empty() {
            if !specs.first().is_some_and(MachineSpec::user_network) {
                return Err(n2d_spec::machine::MachineSpecError::PublishNeedsUserNetwork.into());
            }
            for f in &spec.publish {
                self.check_host_port(f.host)?;
            }
        }
        Ok(SwarmPlan { nodes, specs, placement: Default::default() })
    }

    /// Creates the machines of `specs` in parallel (bounded), returning those made. On error
    /// the ones that were made are returned too, so the caller can roll back.
    pub fn create_nodes(
        &self,
        specs: &[MachineSpec],
        placement: &std::collections::BTreeMap<String, n2d_spec::host::HostName>,
        swarm: &str,
        timeout: Duration,
    ) -> (Vec<MachineRecord>, Result<()>) {
        // The CA and client certificate exist before the nodes are made in parallel: each
        // node's create would otherwise make them at once, and mix one's key with another's
        // certificate.
        if let Err(e) = n2d_pki::Ca::load_or_create(&self.home.certs_dir()) {
            return (Vec::new(), Err(e.into()));
        }
        // Under TCG every vCPU is a host thread: more parallel boots than this only slow each other.
        let parallel = std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(4).max(2);
        let made = Mutex::new(Vec::new());
        let first_error = Mutex::new(None);
        let queue = Mutex::new(specs.iter());
        std::thread::scope(|s| {
            for _ in 0..parallel.min(specs.len()) {
                s.spawn(|| loop {
                    let Some(spec) = queue.lock().unwrap().next() else { break };
                    if first_error.lock().unwrap().is_some() {
                        break;
                    }
                    let made_node = match placement.get(spec.name.as_str()) {
                        Some(host) => self.create_remote_node(host, spec, swarm),
                        None => self.create_machine(spec, Some(swarm), timeout),
                    };
                    match made_node {
                        Ok(rec) => made.lock().unwrap().push(rec),
                        Err(e) => {
                            first_error.lock().unwrap().get_or_insert(Error::CreateNode {
                                name: spec.name.to_string(),
                                source: Box::new(e),
                            });
                        }
                    }
                });
            }
        });
        let made = made.into_inner().unwrap();
        (made, first_error.into_inner().unwrap().map_or(Ok(()), Err))
    }

    /// Joins the machines into a swarm: the first manager inits, the others join, labels land.
    pub fn form(&self, plan: &[NodePlan], made: &[MachineRecord], timeout: Duration) -> Result<()> {
        let mut nodes = Vec::new();
        for node in plan {
            let m = made
                .iter()
                .find(|m| m.spec.name.as_str() == node.name)
                .ok_or_else(|| Error::NodeVmMissing(node.name.clone()))?;
            let ep = self.endpoint(m);
            let api = self.connect(&ep, self.timing.form_request_secs)?;
            nodes.push((node.clone(), ep, api));
        }
        let say = |msg: &str| self.progress.say(&format!("  {msg}"));
        let interrupted = || Error::Interrupted { what: "forming the swarm" };
        if self.cancelled() {
            return Err(interrupted());
        }
        // The first Ctrl-C ends the formation wherever it waits (a Docker call, the wait for
        // Ready): the caller rolls back.
        let result = runtime()?.block_on(async {
            tokio::select! {
                result = form_swarm(&nodes, timeout, say) => Some(result),
                () = until_set(&self.cancel) => None,
            }
        });
        // Pressed while a step ran that did not wait: the formation is undone all the same.
        let Some(result) = result.filter(|_| !self.cancelled()) else { return Err(interrupted()) };
        if let Err(n2d_swarm::SwarmError::NodesNotReady { nodes: late, .. }) = &result {
            // Say what the late nodes' consoles say: that is where the reason is.
            let tails: Vec<String> = late
                .iter()
                .map(|n| match n.parse::<MachineName>() {
                    Ok(name) => format!("{n}:\n{}", console_tail(&self.home.machine_dir(&name), 10)),
                    Err(e) => format!("{n}: {e}"),
                })
                .collect();
            let error = result.unwrap_err();
            return Err(Error::NodesNotReady { error, consoles: ConsoleLines(tails.join("\n")) });
        }
        result?;
        Ok(())
    }

    /// Creates the swarm `spec` planned as `plan` (its specs' images resolved): records it
    /// (refused when a swarm of that name has a record: a second create never overwrites, nor
    /// on failure deletes, the first's), creates every node, forms the swarm. On failure or
    /// Ctrl-C every node made and the record are removed, unless `keep_on_failure`. Each step
    /// is journalled: after a kill, recovery keeps the nodes that exist in the record (so
    /// `swarm rm` removes them) and drops a record with none.
    pub fn create_swarm(
        &self,
        spec: &SwarmSpec,
        plan: &SwarmPlan,
        timeout: Duration,
        keep_on_failure: bool,
    ) -> Result<SwarmRecord> {
        let record = SwarmRecord::from_spec(spec)?;
        let mut journal = self.begin(Operation::SwarmCreate { swarm: record.prefix.clone() })?;
        match self.home.create_swarm_record(&record) {
            Ok(true) => {}
            Ok(false) => {
                let _ = journal.finish();
                return Err(Error::SwarmExists(record.prefix.to_string()));
            }
            Err(e) => {
                let _ = journal.finish();
                return Err(e.into());
            }
        }
        journal.step("record")?;
        let started = std::time::Instant::now();
        let (made, result) = self.create_nodes(&plan.specs, &plan.placement, &spec.prefix, timeout);
        let result = result.and_then(|()| {
            journal.step("nodes")?;
            if self.cancelled() {
                return Err(Error::Interrupted { what: "creating the swarm's nodes" });
            }
            if !plan.placement.is_empty() {
                self.check_node_reach(&made)?;
            }
            self.progress.say(&format!(
                "All {} VMs are up ({:.1}s); forming the swarm...",
                made.len(),
                started.elapsed().as_secs_f64()
            ));
            self.form(&plan.nodes, &made, timeout)?;
            journal.step("formed")?;
            Ok(())
        });
        if let Err(e) = result {
            if keep_on_failure {
                self.progress.say(&format!("--keep-on-failure: leaving the swarm's machines for inspection (remove with `n2d swarm rm {}`)", spec.prefix));
            } else {
                self.progress.say("Rolling back: removing the swarm's machines");
                let mut undone = true;
                for m in &made {
                    undone &= self.remove_node_machine(&m.spec.name).is_ok();
                }
                undone &= self.home.remove_swarm(&record.prefix).is_ok();
                if !undone {
                    // The journal stays: the next command's recovery finishes the job.
                    return Err(e);
                }
            }
            let _ = journal.finish();
            return Err(e);
        }
        let _ = journal.finish();
        self.progress.say(&format!(
            "Swarm {} is ready ({:.1}s)",
            spec.prefix,
            started.elapsed().as_secs_f64()
        ));
        Ok(record)
    }

    /// A reachable manager of the swarm: (machine, api).
    pub fn reachable_manager(
        &self,
        record: &SwarmRecord,
        rt: &tokio::runtime::Runtime,
    ) -> Result<(MachineRecord, C::Api)> {
        self.reachable_manager_from(record, rt, None)
    }

    /// A reachable manager of the swarm, trying `first` (say, the manager the swarm's docker
    /// context names) before the others in the record's order.
    pub fn reachable_manager_from(
        &self,
        record: &SwarmRecord,
        rt: &tokio::runtime::Runtime,
        first: Option<&MachineName>,
    ) -> Result<(MachineRecord, C::Api)> {
        let others = record.managers.iter().filter(|m| Some(*m) != first);
        let mut order: Vec<&MachineName> = first.into_iter().chain(others).collect();
        // A manager of this host whose VM is down is asked last: its address would only time out.
        order.sort_by_cached_key(|n| {
            self.home.load_machine(n).is_ok() && self.machine_state(n) != VmState::Running
        });
        for name in order {
            let Some(m) = self.node_record(name) else { continue };
            let Ok(api) = self.connect(&self.endpoint(&m), 10) else { continue };
            if rt.block_on(api.ping()).is_ok() {
                return Ok((m, api));
            }
        }
        Err(Error::NoManagerAnswers(record.prefix.to_string()))
    }

    /// The swarm's nodes as a reachable manager sees them (managers first); and that manager.
    pub fn swarm_nodes(&self, record: &SwarmRecord) -> Result<(MachineRecord, Vec<NodeInfo>)> {
        self.swarm_nodes_from(record, None)
    }

    /// [`Self::swarm_nodes`], asking `first` before the other managers.
    pub fn swarm_nodes_from(
        &self,
        record: &SwarmRecord,
        first: Option<&MachineName>,
    ) -> Result<(MachineRecord, Vec<NodeInfo>)> {
        let rt = runtime()?;
        let (m, api) = self.reachable_manager_from(record, &rt, first)?;
        let nodes = rt.block_on(swarm_health(Manager { name: m.spec.name.as_str(), ip: m.ip, api: &api }))?;
        Ok((m, nodes))
    }

    /// Removes a swarm: external hosts leave (their machines are not ours), every node's
    /// machine is removed, then the record.
    pub fn remove_swarm(&self, name: &SwarmName) -> Result<()> {
        let record = self.load_swarm(name)?;
        let journal = self.begin(Operation::SwarmRm { swarm: name.clone() })?;
        let result = self.remove_swarm_steps(name, &record, &journal);
        let _ = journal.finish();
        result
    }

    fn remove_swarm_steps(&self, name: &SwarmName, record: &SwarmRecord, journal: &Journal) -> Result<()> {
        if !record.external_hosts.is_empty() {
            let rt = runtime()?;
            for host in &record.external_hosts {
                let ep = external_endpoint(host);
                let left = self.connect(&ep, 30).and_then(|api| Ok(rt.block_on(api.leave_swarm(true))?));
                match left {
                    Ok(()) => self.progress.say(&format!("{} left the swarm", host.name)),
                    Err(e) => self.progress.say(&format!(
                        "warning: {} could not be made to leave the swarm: {}",
                        host.name,
                        chain(&e)
                    )),
                }
            }
        }
        // Its published ports go with it: none is moved from node to node as they go.
        self.home.update_swarm(name, |r| r.ports.clear())?;
        // The hosts whose WireGuard link its nodes used: unlinked once they are gone.
        let mut linked: Vec<n2d_spec::host::HostName> = Vec::new();
        for node in record.managers.iter().chain(&record.workers) {
            let (host, node_record) = match self.home.load_remote_machine(node).ok().flatten() {
                Some(m) => (m.host, Some(m.record)),
                None => (n2d_spec::host::HostName::local(), self.home.load_machine(node).ok()),
            };
            let on_link = node_record.is_some_and(|r| r.spec.bridge == n2d_net::wireguard::LINK_BRIDGE);
            if on_link && !linked.contains(&host) {
                linked.push(host);
            }
        }
        for node in record.managers.iter().chain(&record.workers) {
            if self.home.machine_name_taken(node)? {
                self.remove_or_forget_node(node)?;
                self.progress.say(&format!("{node} removed"));
            } else {
                // Removed by hand: its lease and tap may still be held.
                self.forget_machine(node)?;
            }
            // The record lists only what is left, were n2d killed here.
            self.home.update_swarm(name, |r| r.forget_node(node))?;
            journal.kill_point("after-node");
        }
        self.home.remove_swarm(name)?;
        if !linked.is_empty() {
            self.unlink_hosts(&linked);
        }
        Ok(())
    }

    /// Plans a scale of swarm `name` to `managers`/`workers` (unchanged when `None`): the new
    /// nodes copy the resources, bridge and image of an existing node of their role.
    pub fn plan_swarm_scale(
        &self,
        name: &SwarmName,
        workers: Option<u32>,
        managers: Option<u32>,
    ) -> Result<ScaleWork> {
        self.plan_swarm_scale_on(name, workers, managers, &[])
    }

    /// [`Self::plan_swarm_scale`] over `on`, the hosts the swarm is to run on (empty: as it
    /// is): a worker on a host not named (a lost host, say) is replaced by a new one on a named
    /// host, and the new nodes are placed over them (`remote::placement`).
    pub fn plan_swarm_scale_on(
        &self,
        name: &SwarmName,
        workers: Option<u32>,
        managers: Option<u32>,
        on: &[n2d_spec::host::HostName],
    ) -> Result<ScaleWork> {
        let record = self.load_swarm(name)?;
        let want_managers = managers.unwrap_or(record.managers.len() as u32);
        let want_workers = workers.unwrap_or(record.workers.len() as u32);
        let prefix = record.prefix.to_string();
        // Nodes on hosts outside `on` move: as many new ones of their role are planned (with
        // fresh names), and they are removed.
        let host_of = |n: &MachineName| match self.home.load_remote_machine(n) {
            Ok(Some(m)) => m.host,
            _ => n2d_spec::host::HostName::local(),
        };
        let moving = |names: &[MachineName]| -> Vec<MachineName> {
            if on.is_empty() {
                return Vec::new();
            }
            names.iter().filter(|n| !on.contains(&host_of(n))).cloned().collect()
        };
        // Workers only: managers carry the swarm's quorum, so their moves are the user's
        // (`--managers`); one left on such a host is said.
        for m in moving(&record.managers) {
            self.progress.say(&format!(
                "note: manager {m} is on host {}, not among --on: it stays a manager (Down while its host is gone)",
                host_of(&m)
            ));
        }
        let moving_workers = moving(&record.workers);
        let mut plan = plan_scale(
            &record.managers,
            &record.workers,
            want_managers,
            want_workers + moving_workers.len() as u32,
            &prefix,
        )?;
        for n in &moving_workers {
            if !plan.remove.contains(n) {
                plan.remove.push(n.clone());
            }
        }
        // New nodes get the swarm's label rules, as the nodes it was created with did.
        for node in &mut plan.add {
            apply_label_rules(&record.labels, &node.name, node.role, &mut node.labels);
        }
        let mut current = Vec::new();
        let mut add = Vec::new();
        if !plan.add.is_empty() {
            for (names, role) in [(&record.managers, NodeRole::Manager), (&record.workers, NodeRole::Worker)]
            {
                for n in names {
                    let index = n2d_spec::swarm::node_index(&prefix, role, n.as_str()).unwrap_or(0);
                    let machine = match self.node_record(n) {
                        Some(m) => m,
                        None => self.home.load_machine(n).map_err(|source| Error::SwarmNode {
                            node: n.to_string(),
                            swarm: name.to_string(),
                            source,
                        })?,
                    };
                    current.push((NodePlan::new(&prefix, role, index), machine));
                }
            }
            for n in &plan.add {
                let like = current
                    .iter()
                    .find(|(p, _)| p.role == n.role)
                    .or_else(|| current.first())
                    .map(|(_, m)| m)
                    .ok_or(Error::NothingToCopy)?;
                let spec = MachineSpec {
                    name: n.name.parse()?,
                    labels: n.labels.clone(),
                    publish: Vec::new(),
                    ..like.spec.clone()
                };
                spec.validate()?;
                add.push(spec);
            }
        }
        let mut placement = std::collections::BTreeMap::new();
        if !on.is_empty() && !plan.add.is_empty() {
            let nodes =
                SwarmPlan { nodes: plan.add.clone(), specs: add.clone(), placement: Default::default() };
            placement = self.place_swarm(on, &nodes)?;
            // A new node here takes the network and addresses of a node here (one copied from
            // another host has that host's: its addresses would clash).
            for (node, spec) in plan.add.iter().zip(add.iter_mut()) {
                if placement.contains_key(spec.name.as_str()) {
                    continue;
                }
                let local = |role: Option<NodeRole>| {
                    current.iter().find(|(p, m)| {
                        role.is_none_or(|r| p.role == r) && self.home.machine_exists(&m.spec.name)
                    })
                };
                let (_, like) = local(Some(node.role)).or_else(|| local(None)).ok_or_else(|| {
                    Error::Usage(format!(
                        "no node of swarm {name} runs on this host to take its network from: place {} on hosts that have nodes",
                        spec.name
                    ))
                })?;
                spec.bridge = like.spec.bridge.clone();
                spec.addresses = like.spec.addresses;
            }
        }
        // A node made on another host takes that host's network, not this one's.
        let local: Vec<MachineSpec> =
            add.iter().filter(|s| !placement.contains_key(s.name.as_str())).cloned().collect();
        if !local.is_empty() {
            self.check_network(&local)?;
        }
        Ok(ScaleWork { record, want_managers, want_workers, plan, add, current, placement })
    }

    /// Carries out a planned scale: new nodes are created and joined (on failure they are
    /// removed from the swarm and their machines deleted), removed nodes are drained, leave and
    /// are deleted (a node whose machine is already gone is removed from the manager's side).
    /// Every change of the record happens under the lock on the record as it is then, so a
    /// concurrent `add-host` is kept. Returns the updated record.
    pub fn scale_swarm(&self, work: ScaleWork, timeout: Duration) -> Result<SwarmRecord> {
        let role_names = |role: NodeRole| -> Vec<MachineName> {
            work.plan
                .add
                .iter()
                .zip(&work.add)
                .filter(|(n, _)| n.role == role)
                .map(|(_, s)| s.name.clone())
                .collect()
        };
        let op = Operation::Scale {
            swarm: work.record.prefix.clone(),
            add_managers: role_names(NodeRole::Manager),
            add_workers: role_names(NodeRole::Worker),
            remove: work.plan.remove.clone(),
        };
        let mut journal = self.begin(op)?;
        let result = self.scale_steps(work, timeout, &mut journal);
        let _ = journal.finish();
        result
    }

    fn scale_steps(&self, work: ScaleWork, timeout: Duration, journal: &mut Journal) -> Result<SwarmRecord> {
        let ScaleWork { mut record, plan, add, current, placement, .. } = work;
        let name = record.prefix.clone();
        if !add.is_empty() {
            // A node on another host that does not answer (its host lost) is left out of the
            // formation: the new nodes join through the ones that answer.
            let current: Vec<(NodePlan, MachineRecord)> =
                if current.iter().any(|(_, m)| !self.home.machine_exists(&m.spec.name)) {
                    let rt = runtime()?;
                    current
                        .into_iter()
                        .filter(|(p, m)| {
                            let answers = self.home.machine_exists(&m.spec.name)
                                || self
                                    .connect(&self.endpoint(m), 5)
                                    .is_ok_and(|api| rt.block_on(api.ping()).is_ok());
                            if !answers {
                                self.progress.say(&format!(
                                "note: {} does not answer (is its host gone?): the new nodes join without it",
                                p.name
                            ));
                            }
                            answers
                        })
                        .collect()
                } else {
                    current
                };
            let (made, result) = self.create_nodes(&add, &placement, name.as_str(), timeout);
            let (mut all_plan, mut all_made): (Vec<NodePlan>, Vec<MachineRecord>) =
                current.into_iter().unzip();
            all_plan.extend(plan.add.iter().cloned());
            all_made.extend(made.iter().cloned());
            let result = result.and_then(|()| {
                journal.step("nodes")?;
                if self.cancelled() {
                    return Err(Error::Interrupted { what: "creating the new nodes" });
                }
                self.form(&all_plan, &all_made, timeout).inspect_err(|_| self.evict(&record, &made))?;
                journal.step("joined")?;
                Ok(())
            });
            if let Err(e) = result {
                for m in &made {
                    let _ = self.remove_node_machine(&m.spec.name);
                }
                return Err(e);
            }
            let added: Vec<(NodeRole, MachineName)> =
                plan.add.iter().zip(&add).map(|(n, spec)| (n.role, spec.name.clone())).collect();
            record = self
                .home
                .update_swarm(&name, |r| {
                    for (role, node) in &added {
                        r.add_node(*role, node);
                    }
                })?
                .ok_or_else(|| Error::NoSuchSwarm(name.to_string()))?;
            journal.step("recorded")?;
        }
        if !plan.remove.is_empty() {
            let rt = runtime()?;
            let (m, api) = self.reachable_manager(&record, &rt)?;
            if plan.remove.contains(&m.spec.name) {
                return Err(Error::RemoveContactManager(m.spec.name.to_string()));
            }
            let mut leaving = Vec::new();
            for r in &plan.remove {
                // A node whose machine was removed by hand has no engine to ask: the manager
                // removes it from its side.
                let api = match self.home.load_machine(r) {
                    Ok(node) => Some(self.connect(&self.endpoint(&node), 60)?),
                    // On another host: its engine if it answers (a lost host's does not).
                    Err(n2d_store::StoreError::NoSuchMachine(_)) => match self.node_record(r) {
                        Some(node) => self
                            .connect(&self.endpoint(&node), 10)
                            .ok()
                            .filter(|api| rt.block_on(api.ping()).is_ok()),
                        None => None,
                    },
                    Err(e) => return Err(e.into()),
                };
                leaving.push((r.to_string(), api));
            }
            let manager = Manager { name: m.spec.name.as_str(), ip: m.ip, api: &api };
            let say = |msg: &str| self.progress.say(&format!("  {msg}"));
            rt.block_on(remove_nodes(manager, &leaving, self.timing.remove, say))?;
            journal.step("left")?;
            for r in &plan.remove {
                if self.home.machine_exists(r) {
                    self.remove_machine(r, true)?;
                } else if self.home.load_remote_machine(r)?.is_some() {
                    // Its host may be lost: the swarm no longer has it either way.
                    self.remove_or_forget_node(r)?;
                } else {
                    self.forget_machine(r)?;
                }
                if let Some(updated) = self.home.update_swarm(&name, |rec| rec.forget_node(r))? {
                    record = updated;
                }
                self.progress.say(&format!("{r} removed"));
                journal.kill_point("after-remove");
            }
        }
        Ok(record)
    }

    /// Takes nodes that a failed scale-up made back out of the swarm, so they are not left in
    /// it as Down. Best effort: what fails is said, the machines are removed anyway.
    fn evict(&self, record: &SwarmRecord, made: &[MachineRecord]) {
        let evict = || -> Result<()> {
            let rt = runtime()?;
            let (m, api) = self.reachable_manager(record, &rt)?;
            let manager = Manager { name: m.spec.name.as_str(), ip: m.ip, api: &api };
            let timeouts = self.timing.evict;
            for node in made {
                let api = self.connect(&self.endpoint(node), 30).ok();
                let one = [(node.spec.name.to_string(), api)];
                if let Err(e) = rt.block_on(remove_nodes(manager, &one, timeouts, |_| {})) {
                    self.progress.say(&format!(
                        "warning: {} could not be taken out of the swarm: {}",
                        node.spec.name,
                        chain(&e)
                    ));
                }
            }
            Ok(())
        };
        if let Err(e) = evict() {
            self.progress
                .say(&format!("warning: the new nodes could not be taken out of the swarm: {}", chain(&e)));
        }
    }

    /// Joins an engine n2d did not create to the swarm as a worker, and records it.
    pub fn add_external_host(&self, record: &mut SwarmRecord, host: ExternalHost) -> Result<()> {
        let ep = external_endpoint(&host);
        let rt = runtime()?;
        let worker = self.connect(&ep, 60)?;
        let (m, api) = self.reachable_manager(record, &rt)?;
        if m.user_mode() {
            return Err(Error::AddHostNeedsBridge { ip: m.ip });
        }
        let manager = Manager { name: m.spec.name.as_str(), ip: m.ip, api: &api };
        let advertise = (!ep.ip.is_unspecified()).then_some(ep.ip);
        rt.block_on(join_external_worker(
            manager,
            &host.name,
            &worker,
            advertise,
            &host.labels,
            Duration::from_secs(300),
        ))?;
        // On the record as it is now, under the lock: a concurrent scale's nodes are kept.
        let prefix = record.prefix.clone();
        *record = self
            .home
            .update_swarm(&prefix, |r| r.external_hosts.push(host))?
            .ok_or_else(|| Error::NoSuchSwarm(prefix.to_string()))?;
        Ok(())
    }

    /// Streams a `docker save` archive into every node (external hosts too); returns what each
    /// loaded.
    pub fn load_archive(
        &self,
        record: &SwarmRecord,
        archive: &Path,
        on_progress: impl Fn(LoadProgress<'_>) + Send + Sync + 'static,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let mut nodes = Vec::new();
        // Nodes on other hosts: the archive goes to each host once, whose n2d loads it into
        // its nodes there.
        let mut by_host: std::collections::BTreeMap<n2d_spec::host::HostName, Vec<MachineName>> =
            Default::default();
        for n in record.managers.iter().chain(&record.workers) {
            if let Some(remote) = self.home.load_remote_machine(n)? {
                by_host.entry(remote.host).or_default().push(n.clone());
                continue;
            }
            let m = self.home.load_machine(n)?;
            nodes.push((n.to_string(), self.connect(&self.endpoint(&m), 3600)?));
        }
        for host in &record.external_hosts {
            nodes.push((host.name.clone(), self.connect(&external_endpoint(host), 3600)?));
        }
        let (here, there) = std::thread::scope(|scope| {
            let remote: Vec<_> = by_host
                .iter()
                .map(|(host, names)| scope.spawn(move || self.load_on_host(host, names, archive)))
                .collect();
            let here = runtime()
                .and_then(|rt| Ok(rt.block_on(load_image_everywhere(&nodes, archive, on_progress))?));
            let there: Vec<Result<LoadedImages>> =
                remote.into_iter().map(|r| r.join().expect("a host's load does not panic")).collect();
            (here, there)
        });
        let mut loaded = here?;
        for host in there {
            loaded.extend(host?);
        }
        Ok(loaded)
    }
}

/// How to reach an external host's engine (its address from `tcp://HOST:PORT`).
pub fn external_endpoint(host: &ExternalHost) -> Endpoint {
    let ip = host
        .docker_host
        .trim_start_matches("tcp://")
        .split(':')
        .next()
        .and_then(|h| h.parse().ok())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    Endpoint { name: host.name.clone(), ip, docker_host: host.docker_host.clone(), tls: host.tls.clone() }
}

/// Returns once `flag` is set (polled: a signal handler sets it).
async fn until_set(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An error and its causes on one line, as `{:#}` prints an anyhow error.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}
