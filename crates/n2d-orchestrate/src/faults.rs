//! Faults on demand (`n2d fault ...`, issue 23): made from outside the guests where the host
//! can (a partition: `n2d_net::faults`, the bridge's own filter on the machine's tap),
//! recorded per machine (`n2d_store::FaultRecord`) so that `fault ls` shows them, `fault
//! clear`, `rm` and `swarm rm` undo them, and a fault whose `--duration` is up is undone by the next
//! n2d command even when the one that made it was killed.
//!
//! Found on the project's machines (kernel 6.18, no modules): the host kernel has no
//! `sch_netem`, `sch_prio` nor tc actions, only `tbf` and `ingress` qdiscs, so delays and losses
//! cannot be made on the host's side of a tap there; the guest's kernel carries
//! `kernel/net/sched/` (netem) and the image has `tc`, so they are to be made inside the guest.

use crate::{Error, Orchestrator, Result};
use n2d_exec::Runner;
use n2d_spec::machine::MachineName;
use n2d_store::{Fault, FaultRecord};
use n2d_swarm::Connector;
use n2d_vm::Hypervisor;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The guest's network interface (n2d-init names it so).
const GUEST_NIC: &str = "eth0";
/// Docker's directory on the guest's data disk, and the file that fills it.
const DOCKER_DIR: &str = "/var/lib/docker";
const FILL_FILE: &str = "/var/lib/docker/.n2d-fault-fill";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One row of `n2d fault ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRow {
    pub machine: MachineName,
    pub record: Option<FaultRecord>,
    /// Why the record could not be read.
    pub error: Option<String>,
}

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// Cuts each of `nodes` from `from` (default: every other machine of this home on the same
    /// bridge that is not among `nodes`), both directions, until cleared or `duration` is up.
    /// Checked before anything is made: every machine exists here on a bridge, none has a fault
    /// already, `from` is not empty and shares no machine with `nodes`.
    pub fn partition(
        &self,
        nodes: &[MachineName],
        from: &[MachineName],
        duration: Option<Duration>,
    ) -> Result<Vec<FaultRecord>> {
        let _lock = self.home.lock()?;
        let load = |name: &MachineName| -> Result<n2d_store::MachineRecord> {
            if self.home.load_remote_machine(name)?.is_some() {
                return Err(Error::Usage(format!(
                    "{name} runs on another host: faults are made on this host's machines only"
                )));
            }
            let record = self.home.load_machine(name)?;
            if record.spec.user_network() {
                return Err(Error::Usage(format!(
                    "{name} uses user-mode networking: a partition is made on a bridge machine's tap (create it with --network BRIDGE)"
                )));
            }
            Ok(record)
        };
        let cut = nodes.iter().map(load).collect::<Result<Vec<_>>>()?;
        for node in nodes {
            self.check_faultable(node)?;
        }
        if let Some(both) = from.iter().find(|f| nodes.contains(f)) {
            return Err(Error::Usage(format!("{both} is both cut and what it is cut from: name it once")));
        }
        let others: Vec<n2d_store::MachineRecord> = if from.is_empty() {
            let bridges: Vec<&str> = cut.iter().map(|r| r.spec.bridge.as_str()).collect();
            self.home
                .list_machines()
                .into_iter()
                .filter_map(|(_, r)| r.ok())
                .filter(|r| !nodes.contains(&r.spec.name) && bridges.contains(&r.spec.bridge.as_str()))
                .collect()
        } else {
            from.iter().map(load).collect::<Result<_>>()?
        };
        if others.is_empty() {
            return Err(Error::Usage(
                "no machine to cut them from: name them with --from, or create more machines on their bridge"
                    .into(),
            ));
        }
        let since_ms = now_ms();
        let until_ms = duration.map(|d| since_ms + d.as_millis() as u64);
        let mut made = Vec::new();
        for node in &cut {
            let record = FaultRecord {
                machine: node.spec.name.clone(),
                fault: Fault::Partition {
                    from: others.iter().map(|o| o.spec.name.to_string()).collect(),
                    addresses: others.iter().map(|o| o.ip).collect(),
                    tap: node.tap.clone(),
                },
                since_ms,
                until_ms,
            };
            // Recorded first: a kill between the two leaves a record that clear undoes.
            self.home.save_fault(&record)?;
            let addresses: Vec<_> = others.iter().map(|o| o.ip).collect();
            if let Err(e) = n2d_net::faults::partition(&self.runner, &node.tap, &addresses) {
                made.push(record);
                for r in &made {
                    let _ = self.undo_fault(r);
                }
                return Err(Error::Fault { machine: node.spec.name.to_string(), source: Box::new(e) });
            }
            made.push(record);
        }
        Ok(made)
    }

    /// Degrades `name`'s outgoing packets (netem inside the guest: this host's kernel may have
    /// no netem, and a user-mode machine has no tap), until cleared or `duration` is up.
    pub fn delay(
        &self,
        name: &MachineName,
        shaping: &n2d_spec::shaping::Shaping,
        duration: Option<Duration>,
    ) -> Result<FaultRecord> {
        let _lock = self.home.lock()?;
        self.check_faultable(name)?;
        let netem = shaping.netem_args();
        let since_ms = now_ms();
        let record = FaultRecord {
            machine: name.clone(),
            fault: Fault::Delay { netem: netem.clone() },
            since_ms,
            until_ms: duration.map(|d| since_ms + d.as_millis() as u64),
        };
        self.home.save_fault(&record)?;
        let argv = ["tc", "qdisc", "replace", "dev", GUEST_NIC, "root", "netem"]
            .into_iter()
            .map(str::to_string)
            .chain(netem)
            .collect();
        let outcome = self.run_in_guest(name, argv);
        match outcome {
            Ok((0, _, _)) => Ok(record),
            Ok((status, _, stderr)) => {
                self.home.remove_fault(name)?;
                Err(Error::Usage(format!(
                    "{name}'s guest refused the delay (tc exit status {status}): {stderr}"
                )))
            }
            Err(e) => {
                self.home.remove_fault(name)?;
                Err(e)
            }
        }
    }

    /// Freezes `name`'s vCPUs (QMP `stop`) until cleared (`cont`) or `duration` is up.
    pub fn pause(&self, name: &MachineName, duration: Option<Duration>) -> Result<FaultRecord> {
        let _lock = self.home.lock()?;
        self.check_faultable(name)?;
        if self.machine_state(name) != n2d_vm::VmState::Running {
            return Err(Error::Usage(format!("{name} is not running: start it with `n2d start {name}`")));
        }
        let since_ms = now_ms();
        let record = FaultRecord {
            machine: name.clone(),
            fault: Fault::Pause,
            since_ms,
            until_ms: duration.map(|d| since_ms + d.as_millis() as u64),
        };
        self.home.save_fault(&record)?;
        if let Err(e) = self.hypervisor.set_paused(&self.vm_handle(name), true) {
            self.home.remove_fault(name)?;
            return Err(e.into());
        }
        Ok(record)
    }

    /// Fills `name`'s data disk with one file until `leave_bytes` are free (inside the guest);
    /// or sets its clock `offset_s` seconds away from the host's, or has n2d-init kill its
    /// dockerd and keep it down (both over n2d-init's control port); all undone by clear.
    pub fn guest_fault(
        &self,
        name: &MachineName,
        fault: Fault,
        duration: Option<Duration>,
    ) -> Result<FaultRecord> {
        let _lock = self.home.lock()?;
        self.check_faultable(name)?;
        let script = match &fault {
            Fault::FillDisk { leave_bytes } => format!(
                "avail=$(df -B1 --output=avail {DOCKER_DIR} | tail -n 1); size=$((avail - {leave_bytes})); \
                 [ \"$size\" -gt 0 ] || {{ echo \"only $avail bytes are free\" >&2; exit 3; }}; \
                 fallocate -l \"$size\" {FILL_FILE}"
            ),
            Fault::Clock { .. } | Fault::EngineDown => String::new(),
            other => unreachable!("{} is not made inside the guest", other.kind()),
        };
        let since_ms = now_ms();
        let record = FaultRecord {
            machine: name.clone(),
            fault,
            since_ms,
            until_ms: duration.map(|d| since_ms + d.as_millis() as u64),
        };
        self.home.save_fault(&record)?;
        let request = match record.fault {
            // Through n2d-init's control port, as after a resume: it sets the wall clock.
            Fault::Clock { offset_s } => Some(n2d_proto::ControlRequest::SetClock {
                unix_ms: now_ms().saturating_add_signed(offset_s * 1000),
            }),
            Fault::EngineDown => Some(n2d_proto::ControlRequest::EngineDown),
            _ => None,
        };
        if let Some(request) = request {
            if let Err(e) = self.hypervisor.control(&self.vm_handle(name), request) {
                self.home.remove_fault(name)?;
                return Err(e.into());
            }
            return Ok(record);
        }
        let argv = ["sh", "-c", &script].map(str::to_string).to_vec();
        match self.run_in_guest(name, argv) {
            Ok((0, _, _)) => Ok(record),
            Ok((status, _, stderr)) => {
                self.home.remove_fault(name)?;
                Err(Error::Usage(format!(
                    "{name}'s guest refused the {} (exit status {status}): {stderr}",
                    record.fault.kind()
                )))
            }
            Err(e) => {
                self.home.remove_fault(name)?;
                Err(e)
            }
        }
    }

    /// SIGKILLs `name`'s Docker engine (dockerd); n2d-init's supervisor starts it again after
    /// its back-off, as after any crash. A moment, not a state: nothing is recorded. Returns
    /// the pid killed. (Kept down, `--no-restart`, it is a fault: [`Self::guest_fault`] with
    /// [`Fault::EngineDown`].)
    pub fn kill_engine(&self, name: &MachineName) -> Result<u32> {
        if self.home.load_remote_machine(name)?.is_some() {
            return Err(Error::Usage(format!(
                "{name} runs on another host: faults are made on this host's machines only"
            )));
        }
        self.home.load_machine(name)?;
        let script = r#"for p in /proc/[0-9]*; do
  if [ "$(cat "$p/comm" 2>/dev/null)" = dockerd ]; then kill -9 "${p#/proc/}" && echo "${p#/proc/}"; fi
done"#;
        let (status, out, stderr) =
            self.run_in_guest(name, ["sh", "-c", script].map(str::to_string).to_vec())?;
        let pid = String::from_utf8_lossy(&out).lines().next().and_then(|l| l.trim().parse::<u32>().ok());
        match (status, pid) {
            (0, Some(pid)) => Ok(pid),
            _ => Err(Error::Usage(format!(
                "{name} has no Docker engine running to kill (it may be restarting already){}",
                if stderr.is_empty() { String::new() } else { format!(": {stderr}") }
            ))),
        }
    }

    /// A machine of this home, on this host, running, with no fault yet.
    fn check_faultable(&self, name: &MachineName) -> Result<n2d_store::MachineRecord> {
        if self.home.load_remote_machine(name)?.is_some() {
            return Err(Error::Usage(format!(
                "{name} runs on another host: faults are made on this host's machines only"
            )));
        }
        let record = self.home.load_machine(name)?;
        if let Some(existing) = self.home.load_fault(name)? {
            return Err(Error::Usage(format!(
                "{name} already has a fault ({}: {}): clear it first with `n2d fault clear {name}`",
                existing.fault.kind(),
                existing.fault.detail()
            )));
        }
        Ok(record)
    }

    /// Undoes `record`'s fault and removes its record.
    pub(crate) fn undo_fault(&self, record: &FaultRecord) -> Result<()> {
        match &record.fault {
            Fault::Partition { tap, .. } => {
                let last = self.home.list_faults().iter().all(|(m, r)| {
                    m == &record.machine
                        || !matches!(r, Ok(FaultRecord { fault: Fault::Partition { .. }, .. }))
                });
                n2d_net::faults::heal(&self.runner, tap, last);
            }
            Fault::Clock { .. } => {
                if self.machine_state(&record.machine) == n2d_vm::VmState::Running {
                    let request = n2d_proto::ControlRequest::SetClock { unix_ms: now_ms() };
                    self.hypervisor.control(&self.vm_handle(&record.machine), request)?;
                }
            }
            Fault::FillDisk { .. } => {
                if self.machine_state(&record.machine) == n2d_vm::VmState::Running {
                    let script = format!("rm -f {FILL_FILE}");
                    let (status, _, stderr) = self
                        .run_in_guest(&record.machine, ["sh", "-c", &script].map(str::to_string).to_vec())?;
                    if status != 0 {
                        return Err(Error::Usage(format!(
                            "{}'s guest could not undo its {} (exit status {status}): {stderr}",
                            record.machine,
                            record.fault.kind()
                        )));
                    }
                }
            }
            Fault::Pause => {
                if self.machine_state(&record.machine) == n2d_vm::VmState::Running {
                    self.hypervisor.set_paused(&self.vm_handle(&record.machine), false)?;
                }
            }
            Fault::EngineDown => {
                if self.machine_state(&record.machine) == n2d_vm::VmState::Running {
                    let request = n2d_proto::ControlRequest::EngineUp;
                    self.hypervisor.control(&self.vm_handle(&record.machine), request)?;
                }
            }
            Fault::Delay { .. } => {
                // A machine that is not running lost its qdisc with its kernel (a suspended one
                // keeps it: cleared when it runs again, by hand).
                if self.machine_state(&record.machine) == n2d_vm::VmState::Running {
                    let argv = ["tc", "qdisc", "del", "dev", GUEST_NIC, "root"].map(str::to_string).to_vec();
                    let (status, _, stderr) = self.run_in_guest(&record.machine, argv)?;
                    // "No such file or directory": the qdisc is gone already (a reboot).
                    if status != 0
                        && !stderr.contains("No such file")
                        && !stderr.contains("Cannot delete qdisc with handle of zero")
                    {
                        return Err(Error::Usage(format!(
                            "{}'s guest could not remove its delay (tc exit status {status}): {stderr}",
                            record.machine
                        )));
                    }
                }
            }
        }
        self.home.remove_fault(&record.machine)?;
        Ok(())
    }

    /// Clears the faults of `machines` (every fault when empty); returns the machines cleared.
    /// A named machine without a fault is not an error.
    pub fn clear_faults(&self, machines: &[MachineName]) -> Result<Vec<FaultRecord>> {
        let _lock = self.home.lock()?;
        let mut cleared = Vec::new();
        for (name, record) in self.home.list_faults() {
            if !machines.is_empty() && !machines.contains(&name) {
                continue;
            }
            let record = record?;
            self.undo_fault(&record)?;
            cleared.push(record);
        }
        Ok(cleared)
    }

    /// The faults in force.
    pub fn fault_rows(&self) -> Vec<FaultRow> {
        self.home
            .list_faults()
            .into_iter()
            .map(|(machine, r)| match r {
                Ok(record) => FaultRow { machine, record: Some(record), error: None },
                Err(e) => FaultRow { machine, record: None, error: Some(e.to_string()) },
            })
            .collect()
    }

    /// Undoes the faults whose time is up (each n2d command's recovery); one line each.
    pub fn expire_faults(&self) -> Result<Vec<String>> {
        let due = |home: &n2d_store::Home| -> Vec<FaultRecord> {
            let now = now_ms();
            home.list_faults().into_iter().filter_map(|(_, r)| r.ok()).filter(|r| r.expired(now)).collect()
        };
        if due(&self.home).is_empty() {
            return Ok(Vec::new());
        }
        let _lock = self.home.lock()?;
        Ok(due(&self.home)
            .iter()
            .map(|r| match self.undo_fault(r) {
                Ok(()) => format!("{}: its {} ended (its time was up)", r.machine, r.fault.kind()),
                Err(e) => format!("warning: {}: could not end its {}: {e}", r.machine, r.fault.kind()),
            })
            .collect())
    }
}

/// Something that happened during a scenario, `at` from its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioEvent {
    pub at: Duration,
    pub what: String,
}

/// What `n2d fault run` saw: the steps as applied, and the nodes' changes (Down, Ready again,
/// leadership lost and taken) as the swarm's managers reported them, polled every second.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScenarioReport {
    pub applied: Vec<ScenarioEvent>,
    pub changes: Vec<ScenarioEvent>,
}

/// A node as the poll last saw it: Ready, leader.
type Seen = std::collections::BTreeMap<String, (bool, bool)>;

fn changes_between(before: &Seen, after: &Seen) -> Vec<String> {
    let mut said = Vec::new();
    for (node, (ready, leader)) in after {
        let (was_ready, was_leader) = before.get(node).copied().unwrap_or((true, false));
        if was_ready && !ready {
            said.push(format!("{node} Down"));
        }
        if !was_ready && *ready {
            said.push(format!("{node} Ready again"));
        }
        if was_leader && !leader {
            said.push(format!("{node} lost the leadership"));
        }
        if !was_leader && *leader {
            said.push(format!("{node} is the leader"));
        }
    }
    said
}

impl<R: Runner + Sync, H: Hypervisor + Sync, C: Connector + Sync> Orchestrator<R, H, C> {
    /// `n2d fault run FILE --swarm PREFIX`: checks that every node the scenario names is the
    /// swarm's, that no fault is in force on them and that no step makes a second fault on a
    /// node before a clear; then applies each step at its time, saying it (`say`), while the
    /// swarm's nodes are polled every second; after the last step, waits up to `settle` for
    /// every node to be Ready with a leader. Ctrl-C or a failed step clears what the scenario
    /// made. Returns the report.
    pub fn run_scenario(
        &self,
        swarm: &n2d_spec::swarm::SwarmName,
        scenario: &n2d_spec::scenario::Scenario,
        settle: Duration,
        say: &(dyn Fn(&str) + Sync),
    ) -> Result<ScenarioReport> {
        use n2d_spec::scenario::Action;
        let record = self.home.load_swarm(swarm)?.ok_or_else(|| Error::NoSuchSwarm(swarm.to_string()))?;
        let members: Vec<&MachineName> = record.managers.iter().chain(&record.workers).collect();
        let mut faulted: std::collections::BTreeMap<MachineName, usize> = Default::default();
        for (i, step) in scenario.steps.iter().enumerate() {
            let n = i + 1;
            for node in step.action.nodes() {
                if !members.contains(&node) {
                    return Err(Error::Usage(format!("step {n}: {node} is not a node of swarm {swarm}")));
                }
            }
            let made: Vec<&MachineName> = match &step.action {
                Action::Partition { nodes, .. } => nodes.iter().collect(),
                Action::Delay { node, .. }
                | Action::Pause { node }
                | Action::FillDisk { node }
                | Action::Clock { node, .. } => vec![node],
                Action::KillEngine { .. } => vec![],
                Action::Clear { nodes: None } => {
                    faulted.clear();
                    vec![]
                }
                Action::Clear { nodes: Some(nodes) } => {
                    nodes.iter().for_each(|n| {
                        faulted.remove(n);
                    });
                    vec![]
                }
            };
            for node in made {
                if let Some(earlier) = faulted.insert(node.clone(), n) {
                    return Err(Error::Usage(format!(
                        "step {n}: {node} still has the fault of step {earlier}: clear it in a step before"
                    )));
                }
            }
        }
        if let Some(node) = members.iter().find(|m| self.home.load_fault(m).ok().flatten().is_some()) {
            return Err(Error::Usage(format!(
                "{node} has a fault in force: clear it first (`n2d fault clear {node}`)"
            )));
        }

        say(&format!("Running {} steps against swarm {swarm}...", scenario.steps.len()));
        let start = std::time::Instant::now();
        let done = std::sync::atomic::AtomicBool::new(false);
        let changes = std::sync::Mutex::new(Vec::new());
        let poll = || -> Option<Seen> {
            let (_, nodes) = self.swarm_nodes(&record).ok()?;
            Some(nodes.iter().map(|n| (n.hostname.clone(), (n.ready(), n.leader))).collect())
        };
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut before = poll().unwrap_or_default();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    let Some(now) = poll() else { continue };
                    for what in changes_between(&before, &now) {
                        let at = start.elapsed();
                        say(&format!("[{:>6.1}s] {what}", at.as_secs_f64()));
                        changes.lock().unwrap().push(ScenarioEvent { at, what });
                    }
                    before = now;
                }
            });
            let applied = self.scenario_steps(scenario, start, say);
            let settled = applied.is_ok() && {
                let deadline = std::time::Instant::now() + settle;
                loop {
                    let calm = poll()
                        .is_some_and(|s| s.values().all(|(ready, _)| *ready) && s.values().any(|(_, l)| *l));
                    if calm || std::time::Instant::now() >= deadline || self.cancelled() {
                        break calm;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            };
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            applied.map(|a| (a, settled))
        });
        let (applied, settled) = match result {
            Ok(ok) => ok,
            Err(e) => {
                // What the scenario made goes with it.
                let _ = self.clear_faults(&members.iter().map(|m| (*m).clone()).collect::<Vec<_>>());
                return Err(e);
            }
        };
        if !settled {
            say(&format!(
                "not every node was Ready with a leader within {}s of the last step",
                settle.as_secs()
            ));
        }
        Ok(ScenarioReport { applied, changes: changes.into_inner().unwrap() })
    }

    /// Applies each step at its time; stops at the first that fails or at Ctrl-C.
    fn scenario_steps(
        &self,
        scenario: &n2d_spec::scenario::Scenario,
        start: std::time::Instant,
        say: &(dyn Fn(&str) + Sync),
    ) -> Result<Vec<ScenarioEvent>> {
        use n2d_spec::scenario::Action;
        let mut applied = Vec::new();
        for step in &scenario.steps {
            while start.elapsed() < step.at {
                if self.cancelled() {
                    return Err(Error::Interrupted { what: "the scenario" });
                }
                std::thread::sleep((step.at - start.elapsed()).min(Duration::from_millis(100)));
            }
            let what = match &step.action {
                Action::Partition { nodes, from } => {
                    let made = self.partition(nodes, from, None)?;
                    made.iter()
                        .map(|r| format!("partition {}: {}", r.machine, r.fault.detail()))
                        .collect::<Vec<_>>()
                        .join("; ")
                }
                Action::Delay { node, shaping } => {
                    format!("delay {node}: {}", self.delay(node, shaping, None)?.fault.detail())
                }
                Action::Pause { node } => {
                    self.pause(node, None)?;
                    format!("pause {node}")
                }
                Action::KillEngine { node } => {
                    format!("kill-engine {node}: dockerd (pid {}) killed", self.kill_engine(node)?)
                }
                Action::FillDisk { node } => {
                    self.guest_fault(node, Fault::FillDisk { leave_bytes: 0 }, None)?;
                    format!("fill-disk {node}")
                }
                Action::Clock { node, offset_s } => {
                    self.guest_fault(node, Fault::Clock { offset_s: *offset_s }, None)?;
                    format!("clock {node} {offset_s:+}s")
                }
                Action::Clear { nodes } => {
                    let cleared = self.clear_faults(nodes.as_deref().unwrap_or_default())?;
                    let names: Vec<String> = cleared.iter().map(|r| r.machine.to_string()).collect();
                    format!(
                        "clear: {}",
                        if names.is_empty() { "nothing in force".into() } else { names.join(", ") }
                    )
                }
            };
            let at = start.elapsed();
            say(&format!("[{:>6.1}s] {what} (step at {}s)", at.as_secs_f64(), step.at.as_secs_f64()));
            applied.push(ScenarioEvent { at, what });
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::recording_orchestrator;

    type Recording =
        Orchestrator<n2d_exec::RecordingRunner, n2d_vm::fake::FakeHypervisor, n2d_swarm::fake::Cluster>;

    /// A bridge machine of this home, its tap `n2dt0000000N` for address .N.
    fn machine(orch: &Recording, name: &str, ip: [u8; 4], bridge: &str) {
        let mut record = n2d_store::MachineRecord::example(name, std::net::Ipv4Addr::from(ip));
        record.spec.bridge = bridge.into();
        record.tap = format!("n2dt{:08x}", ip[3]);
        orch.home.save_machine(&record).unwrap();
    }

    #[test]
    fn a_partition_cuts_from_the_others_on_its_bridge_and_clear_undoes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (orch, _) = recording_orchestrator(dir.path());
        machine(&orch, "w1", [10, 77, 0, 2], "n2d0");
        machine(&orch, "w2", [10, 77, 0, 3], "n2d0");
        machine(&orch, "m0", [10, 77, 0, 4], "n2d0");
        machine(&orch, "far", [10, 9, 0, 2], "br9");
        let w1: MachineName = "w1".parse().unwrap();
        let made = orch.partition(std::slice::from_ref(&w1), &[], Some(Duration::from_secs(30))).unwrap();
        assert_eq!(made.len(), 1);
        let Fault::Partition { from, addresses, tap } = &made[0].fault else { panic!("a partition") };
        assert_eq!(from, &["m0", "w2"]);
        assert_eq!(addresses.len(), 2);
        assert_eq!(tap, "n2dt00000002");
        let calls = orch.runner.calls();
        assert!(
            calls.iter().any(|c| c == "ebtables -A N2D-F-n2dt00000002 -p IPv4 --ip-dst 10.77.0.4 -j DROP"),
            "{calls:#?}"
        );
        assert!(!calls.iter().any(|c| c.contains("10.9.0.2")), "another bridge's machine is not cut");
        // Overlapping: refused, nothing more made.
        let err = orch.partition(std::slice::from_ref(&w1), &[], None).unwrap_err();
        assert!(err.to_string().contains("already has a fault"), "{err}");
        assert_eq!(orch.fault_rows().len(), 1);
        // Its time is up: the next command's recovery ends it.
        assert!(orch.expire_faults().unwrap().is_empty());
        let mut record = orch.home.load_fault(&w1).unwrap().unwrap();
        record.until_ms = Some(1);
        orch.home.save_fault(&record).unwrap();
        assert_eq!(orch.expire_faults().unwrap(), ["w1: its partition ended (its time was up)"]);
        assert!(orch.fault_rows().is_empty());
        assert!(orch.runner.calls().iter().any(|c| c == "ebtables -X N2D-FAULT"));
    }

    #[test]
    fn the_report_names_down_ready_and_leadership_changes() {
        let seen = |v: &[(&str, bool, bool)]| -> Seen {
            v.iter().map(|(n, r, l)| (n.to_string(), (*r, *l))).collect()
        };
        let before = seen(&[("m0", true, true), ("w0", true, false)]);
        let after = seen(&[("m0", true, false), ("m1", true, true), ("w0", false, false)]);
        assert_eq!(
            changes_between(&before, &after),
            ["m0 lost the leadership", "m1 is the leader", "w0 Down"]
        );
        assert_eq!(changes_between(&after, &before), ["m0 is the leader", "w0 Ready again"]);
    }

    #[test]
    fn bad_partitions_are_refused_before_anything_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let (orch, _) = recording_orchestrator(dir.path());
        machine(&orch, "w1", [10, 77, 0, 2], "n2d0");
        machine(&orch, "solo", [10, 9, 0, 2], "br9");
        let n = |s: &str| -> MachineName { s.parse().unwrap() };
        for (nodes, from, says) in [
            (vec![n("ghost")], vec![], "ghost"),
            (vec![n("solo")], vec![], "no machine to cut them from"),
            (vec![n("w1")], vec![n("w1")], "both cut and"),
            (vec![n("w1")], vec![n("ghost")], "ghost"),
        ] {
            let err = orch.partition(&nodes, &from, None).unwrap_err();
            assert!(err.to_string().contains(says), "{says}: {err}");
            assert_eq!(err.kind(), crate::ErrorKind::Usage, "{err}");
        }
        assert!(orch.fault_rows().is_empty());
        assert!(!orch.runner.calls().iter().any(|c| c.starts_with("ebtables")));
    }
}
