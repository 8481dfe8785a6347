//! `n2d swarm upgrade` (issue 23, part 3): a live swarm moved to another image one node at a
//! time. The plan: workers first, then the managers that do not lead, the leader last; one node
//! at a time, so a swarm of 2k+1 managers never has more than one of them away, which is within
//! its quorum. A node already on the image is left alone (a re-run after an interruption
//! continues where it stopped).
//!
//! Each node: drained (its tasks end, and every replicated service runs all its replicas on
//! other nodes), the swarm ports it holds moved to a running node, stopped, its record switched
//! to the new image (its data disk kept, so it keeps its swarm identity; a warm clone's
//! copy-on-write layer is made whole first, so it no longer leans on the old image), started,
//! Ready in the swarm and active again before the next. A `swarm-upgrade` journal covers it: a
//! kill is finished by the next command's recovery (started, made active). Ctrl-C, or a failure,
//! brings the node in hand back up on whichever image its record names and stops there.

use crate::{runtime, Error, Orchestrator, Result};
use n2d_exec::{Cmd, Runner};
use n2d_spec::machine::MachineName;
use n2d_spec::swarm::SwarmName;
use n2d_store::{MachineRecord, Operation, SwarmRecord};
use n2d_swarm::{drain_for_restart, return_to_service, Connector, Manager, NodeRole};
use n2d_vm::{Hypervisor, VmState};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a node's engine has to stop its containers and shut down before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// A boot by recovery (no flag gives it a timeout).
const RECOVERY_BOOT: Duration = Duration::from_secs(600);

/// What `swarm upgrade` did, or would do (`--dry-run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeReport {
    /// The image's short ID.
    pub image: String,
    /// The nodes to move, in order.
    pub plan: Vec<UpgradeNode>,
    /// The nodes moved (all of the plan, unless `--dry-run`).
    pub moved: Vec<String>,
    /// Nodes n2d cannot move (hosts added with `swarm add-host`), left as they are.
    pub skipped: Vec<String>,
}

/// Ctrl-C stopped an upgrade: the node in hand was brought back, the rest not begun.
#[derive(Debug, thiserror::Error)]
#[error("swarm {swarm}'s upgrade to image {image} was interrupted: {}; still on the old image: {}; every node runs and is active; run `n2d swarm upgrade {swarm}` again to continue", on_new(moved), left.join(", "))]
pub struct UpgradeInterrupted {
    pub swarm: String,
    pub image: String,
    pub moved: Vec<String>,
    pub left: Vec<String>,
}

/// A node failed to move; the upgrade stopped there.
#[derive(Debug, thiserror::Error)]
#[error("upgrading {node} to image {image} failed; {node} is {state}; {}; still on the old image: {}", on_new(moved), if left.is_empty() { "none".to_string() } else { left.join(", ") })]
pub struct UpgradeFailed {
    pub node: String,
    pub image: String,
    /// Where the node is left, in words.
    pub state: String,
    pub moved: Vec<String>,
    pub left: Vec<String>,
    #[source]
    pub source: Error,
}

/// "a, b on the new image" for an upgrade's messages.
fn on_new(moved: &[String]) -> String {
    if moved.is_empty() {
        "no node is on the new image yet".into()
    } else {
        format!("{} on the new image", moved.join(", "))
    }
}

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// `n2d swarm upgrade PREFIX [--image ID] [--dry-run]`: see the module documentation.
    /// `image`: an image ID or prefix, else the newest image. `timeout`: each node's boot.
    pub fn upgrade_swarm(
        &self,
        name: &SwarmName,
        image: Option<&str>,
        dry_run: bool,
        timeout: Duration,
    ) -> Result<UpgradeReport> {
        let record = self.load_swarm(name)?;
        let target = self
            .named_or_newest(image)?
            .ok_or_else(|| Error::Usage("no image is built; build one with `n2d image build`".into()))?;
        let image_id = target.manifest.id.clone();
        let short = target.manifest.short_id().to_string();
        let remote: Vec<String> =
            record.nodes().filter(|n| !self.home.machine_exists(n)).map(|n| n.to_string()).collect();
        if !remote.is_empty() {
            return Err(Error::Usage(format!(
                "swarm {name} has nodes on other hosts ({}): `swarm upgrade` moves this host's machines only (nodes on other hosts are not upgraded yet)",
                remote.join(", ")
            )));
        }
        let skipped = record.external_hosts.iter().map(|h| h.name.clone()).collect();
        let (_, seen) = self.swarm_nodes(&record)?;
        let mut nodes = Vec::new();
        for node in record.nodes() {
            let machine = self.load_record(node)?;
            let info =
                seen.iter().find(|i| i.hostname == node.as_str() && i.state != n2d_swarm::NodeState::Down);
            nodes.push(UpgradeNode {
                name: node.to_string(),
                manager: record.managers.contains(node),
                leader: info.is_some_and(|i| i.leader),
                image: machine.spec.image.clone(),
            });
        }
        let ready_managers = seen.iter().filter(|i| i.role == NodeRole::Manager && i.ready()).count();
        let order = plan(&nodes, &image_id, ready_managers)?;
        let mut report =
            UpgradeReport { image: short.clone(), plan: order.clone(), moved: Vec::new(), skipped };
        if dry_run || order.is_empty() {
            return Ok(report);
        }
        let rt = runtime()?;
        let started = Instant::now();
        for (i, node) in order.iter().enumerate() {
            let left = || order[i..].iter().map(|n| n.name.clone()).collect::<Vec<_>>();
            if self.cancelled() {
                return Err(Error::UpgradeInterrupted(Box::new(UpgradeInterrupted {
                    swarm: name.to_string(),
                    image: short.clone(),
                    moved: report.moved.clone(),
                    left: left(),
                })));
            }
            let machine: MachineName = node.name.parse().map_err(|e| Error::Usage(format!("{e}")))?;
            let step = self.progress.step(&format!("Upgrading {} ({}/{})", node.name, i + 1, order.len()));
            let moved_so_far: Vec<MachineName> = report.moved.iter().filter_map(|n| n.parse().ok()).collect();
            let mut journal = self.begin(Operation::SwarmUpgrade {
                swarm: record.prefix.clone(),
                node: machine.clone(),
                image: image_id.clone(),
            })?;
            match self.upgrade_node(
                &record,
                &machine,
                &image_id,
                &moved_so_far,
                timeout,
                &rt,
                &*step,
                &mut journal,
            ) {
                Ok(()) => {
                    journal.finish()?;
                    step.done(&format!("{} runs image {short}", node.name));
                    report.moved.push(node.name.clone());
                }
                Err(e) => {
                    drop(step);
                    let pressed = self.cancel.swap(false, Ordering::Relaxed)
                        || e.kind() == crate::ErrorKind::Interrupted;
                    let (back, on) = self.bring_back(&record, &machine, timeout, &rt);
                    self.cancel.fetch_or(pressed, Ordering::Relaxed);
                    // Back up and active: nothing is left for recovery. Else the journal stays,
                    // and the next command finishes the node.
                    if back {
                        journal.finish()?;
                    }
                    if self.load_record(&machine).is_ok_and(|r| r.spec.image == image_id) {
                        report.moved.push(node.name.clone());
                    }
                    let mut left = left();
                    left.retain(|n| !report.moved.contains(n));
                    if pressed {
                        return Err(Error::UpgradeInterrupted(Box::new(UpgradeInterrupted {
                            swarm: name.to_string(),
                            image: short,
                            moved: report.moved,
                            left,
                        })));
                    }
                    return Err(Error::UpgradeNode(Box::new(UpgradeFailed {
                        node: node.name.clone(),
                        image: short,
                        state: on,
                        moved: report.moved,
                        left,
                        source: e,
                    })));
                }
            }
        }
        self.progress.say(&format!(
            "Swarm {name} runs image {short} on every node ({:.1}s)",
            started.elapsed().as_secs_f64()
        ));
        Ok(report)
    }

    /// One node onto `image`, its steps in `journal` (the caller's: it finishes it, or leaves it
    /// for recovery).
    /// `moved`: nodes already on the new image, preferred holders of the ports it gives up.
    #[allow(clippy::too_many_arguments)]
    fn upgrade_node(
        &self,
        record: &SwarmRecord,
        node: &MachineName,
        image: &str,
        moved: &[MachineName],
        timeout: Duration,
        rt: &tokio::runtime::Runtime,
        step: &dyn crate::ProgressStep,
        journal: &mut n2d_store::Journal,
    ) -> Result<()> {
        step.set("draining: its tasks move to the other nodes");
        {
            let (m, api) = self.manager_besides(record, node, rt)?;
            let manager = Manager { name: m.spec.name.as_str(), ip: m.ip, api: &api };
            rt.block_on(drain_for_restart(manager, node.as_str(), self.timing.restart))?;
        }
        journal.step("drained")?;
        journal.kill_point("after-drain");
        if self.cancelled() {
            return Err(Error::Interrupted { what: "upgrading the swarm" });
        }
        let machine = self.load_record(node)?;
        for note in self.move_swarm_ports_off(&machine, moved)? {
            self.progress.say(&note);
        }
        step.set("stopping");
        self.stop_machine(node, STOP_GRACE)?;
        journal.step("stopped")?;
        self.switch_image(node, image)?;
        journal.step("switched")?;
        journal.kill_point("after-switch");
        step.set("booting on the new image");
        self.start_machine(node, timeout)?;
        step.set("waiting until it is Ready in the swarm, then making it active");
        self.back_in_service(record, node, rt)
    }

    /// The node's record names `image`; a warm clone's data disk, a layer over its template's
    /// (under the old image), is made whole first.
    fn switch_image(&self, node: &MachineName, image: &str) -> Result<()> {
        let mut machine = self.load_record(node)?;
        if machine.warm_from.is_some() {
            let disk = self.home.machine_dir(node).join(n2d_vm::argv::DATA_DISK_FILE);
            let cmd =
                Cmd::new("qemu-img", "qemu-utils").args(["rebase", "-q", "-f", "qcow2", "-b", ""]).arg(disk);
            self.runner.run(&cmd).map_err(Error::DataDisk)?;
            machine.warm_from = None;
        }
        // One write: a kill before it leaves the old image named and a whole disk, which boots.
        machine.spec.image = image.to_string();
        self.home.save_machine(&machine)?;
        Ok(())
    }

    /// After a failure or Ctrl-C: the node runs again (on whichever image its record names) and
    /// is active. Best effort: whether it is, and in words where it is left.
    fn bring_back(
        &self,
        record: &SwarmRecord,
        node: &MachineName,
        timeout: Duration,
        rt: &tokio::runtime::Runtime,
    ) -> (bool, String) {
        let image = self
            .load_record(node)
            .map(|r| r.spec.image.chars().take(12).collect::<String>())
            .unwrap_or_default();
        if self.machine_state(node) != VmState::Running {
            self.progress.say(&format!("{node}: starting it again on image {image}"));
            if let Err(e) = self.start_machine(node, timeout) {
                return (
                    false,
                    format!("stopped, on image {image} (its start failed: {})", crate::swarm::chain(&e)),
                );
            }
        }
        match self.back_in_service(record, node, rt) {
            Ok(()) => (true, format!("running and active, on image {image}")),
            Err(e) => {
                (false, format!("running on image {image}, not active again ({})", crate::swarm::chain(&e)))
            }
        }
    }

    /// `node` Ready in the swarm (and no node Unknown to a restarted manager), then active,
    /// as a manager that answers sees it.
    fn back_in_service(
        &self,
        record: &SwarmRecord,
        node: &MachineName,
        rt: &tokio::runtime::Runtime,
    ) -> Result<()> {
        let (m, api) = self.manager_besides(record, node, rt)?;
        let manager = Manager { name: m.spec.name.as_str(), ip: m.ip, api: &api };
        rt.block_on(return_to_service(manager, node.as_str(), self.timing.restart.ready))?;
        Ok(())
    }

    /// A manager that answers, another than `node` first (it may be the one stopping, or the
    /// only manager).
    fn manager_besides(
        &self,
        record: &SwarmRecord,
        node: &MachineName,
        rt: &tokio::runtime::Runtime,
    ) -> Result<(MachineRecord, C::Api)> {
        self.reachable_manager_from(record, rt, record.managers.iter().find(|m| *m != node))
    }

    /// Recovery of a killed `swarm upgrade`: the node in hand runs and is active again.
    pub(crate) fn recover_upgrade(&self, swarm: &SwarmName, node: &MachineName) -> Result<String> {
        if !self.home.machine_exists(node) {
            return Ok(format!("recovered: {node}, whose upgrade was interrupted, is gone"));
        }
        let record = self.load_swarm(swarm)?;
        let rt = runtime()?;
        if self.machine_state(node) != VmState::Running {
            self.start_machine(node, RECOVERY_BOOT)?;
        }
        self.back_in_service(&record, node, &rt)?;
        let image = self.load_record(node)?.spec.image;
        Ok(format!(
            "recovered: {node}, whose upgrade was interrupted, runs again and is active, on image {} (`n2d swarm upgrade {swarm}` continues)",
            image.chars().take(12).collect::<String>()
        ))
    }
}

/// A node as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeNode {
    pub name: String,
    pub manager: bool,
    pub leader: bool,
    /// The image it runs now.
    pub image: String,
}

/// Why a swarm cannot be upgraded now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradePlanError {
    #[error("only {ready} of {managers} managers are Ready: upgrading one of them would leave the swarm without a quorum; bring them back first (`n2d start`, `n2d swarm scale`)")]
    NoQuorumToSpare { ready: usize, managers: usize },
}

/// The nodes to move to `image`, in order. `ready_managers`: how many managers are Ready now;
/// taking one away must leave a majority of `managers`.
pub fn plan(
    nodes: &[UpgradeNode],
    image: &str,
    ready_managers: usize,
) -> Result<Vec<UpgradeNode>, UpgradePlanError> {
    let stale = |n: &&UpgradeNode| n.image != image;
    let mut order: Vec<UpgradeNode> = nodes.iter().filter(stale).filter(|n| !n.manager).cloned().collect();
    let mut managers: Vec<UpgradeNode> = nodes.iter().filter(stale).filter(|n| n.manager).cloned().collect();
    // Followers first (by name, so a re-run takes them in the same order), the leader last.
    managers.sort_by(|a, b| a.leader.cmp(&b.leader).then(a.name.cmp(&b.name)));
    let total = nodes.iter().filter(|n| n.manager).count();
    if !managers.is_empty() && ready_managers.saturating_sub(1) < total / 2 + 1 && total > 1 {
        return Err(UpgradePlanError::NoQuorumToSpare { ready: ready_managers, managers: total });
    }
    order.extend(managers);
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, manager: bool, leader: bool, image: &str) -> UpgradeNode {
        UpgradeNode { name: name.into(), manager, leader, image: image.into() }
    }

    #[test]
    fn workers_first_then_followers_then_the_leader_and_done_nodes_are_skipped() {
        let nodes = [
            node("s-mngr-0", true, true, "old"),
            node("s-mngr-1", true, false, "old"),
            node("s-mngr-2", true, false, "new"),
            node("s-wrkr-1", false, false, "old"),
            node("s-wrkr-0", false, false, "old"),
        ];
        let order: Vec<String> = plan(&nodes, "new", 3).unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(order, ["s-wrkr-1", "s-wrkr-0", "s-mngr-1", "s-mngr-0"]);
        assert!(plan(
            &nodes.map(|mut n| {
                n.image = "new".into();
                n
            }),
            "new",
            3
        )
        .unwrap()
        .is_empty());
    }

    #[test]
    fn a_manager_is_not_taken_away_when_the_quorum_cannot_spare_it() {
        let nodes =
            [node("m0", true, true, "old"), node("m1", true, false, "old"), node("m2", true, false, "old")];
        let err = plan(&nodes, "new", 2).unwrap_err();
        assert!(err.to_string().contains("only 2 of 3 managers are Ready"), "{err}");
        // One manager alone: it is the swarm; it goes (the swarm is down meanwhile).
        assert_eq!(plan(&[node("m0", true, true, "old")], "new", 1).unwrap().len(), 1);
        // Workers only: no manager leaves, no quorum needed.
        let nodes = [node("m0", true, true, "new"), node("w0", false, false, "old")];
        assert_eq!(plan(&nodes, "new", 0).unwrap().len(), 1);
    }
}
