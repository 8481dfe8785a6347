//! Recovery: completing or undoing the changes a kill interrupted, from their journals
//! (`n2d_store::intents`). It runs under the state lock at the start of every command that
//! changes state (and in `n2d doctor --repair`), costs two directory reads when there is
//! nothing to do, skips journals whose process still runs, and says one line per change it
//! dealt with.
//!
//! Per operation, and why:
//!
//! | journal | recovery |
//! |---|---|
//! | create, before the machine's record | **back**: lease, tap (the recorded one or the one the name derives from), bridge when last, directory |
//! | create, record written | **forward**: the machine is complete; kept as it is (running or stopped) |
//! | rm | **forward** once the VM is not running (lease, tap, directory); a VM still running is left and nothing removed |
//! | start | nothing to undo: the machine keeps its lease, running or stopped |
//! | swarm create | **forward**: the record keeps the nodes that exist (so `swarm rm` finds them) and drops the others; a record with none left is removed |
//! | swarm rm | **forward**: nodes whose VM is not running are removed, then the record; running ones stay in it |
//! | scale | **forward**: new nodes that exist are recorded; removed nodes whose machine is gone leave the record (and their lease) |
//! | swarm upgrade | **forward**: the node being moved (its record names the old image or the new, never neither) is started if it is not running and made active in the swarm again |
//! | image build | **back**: the `.build-*` staging tree is deleted (also one with no journal, once its pid is gone) |
//!
//! A running VM is never stopped by recovery (an upgrade's node is the one VM it starts), and only this home's machines, leases and taps
//! (named from this home's path) are touched.

use crate::swarm::chain;
use crate::{Orchestrator, Result};
use n2d_exec::Runner;
use n2d_spec::machine::MachineName;
use n2d_spec::swarm::{NodeRole, SwarmName};
use n2d_store::{process_start, remove_dir_all, Intent, Operation};
use n2d_swarm::Connector;
use n2d_vm::{Hypervisor, VmState};

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// Completes or undoes every change a kill interrupted (see the module documentation);
    /// returns (and says) one line per change dealt with. A journal that cannot be dealt with
    /// now is kept, with a warning, for the next command.
    pub fn recover(&self) -> Result<Vec<String>> {
        // Faults whose `--for` is up end first, whoever made them.
        let ended = self.expire_faults()?;
        for line in &ended {
            self.progress.say(line);
        }
        if self.home.intents().iter().all(|e| e.live) && self.stale_build_trees().is_empty() {
            return Ok(ended);
        }
        let _lock = self.home.lock()?;
        let mut said = Vec::new();
        let mut entries = self.home.intents();
        // Machines first: a swarm's recovery looks at which of its nodes exist.
        entries.sort_by_key(|e| e.intent.as_ref().map_or(9, |i| order(&i.op)));
        for entry in entries.into_iter().filter(|e| !e.live) {
            let intent = match entry.intent {
                Ok(intent) => intent,
                Err(e) => {
                    said.push(format!("warning: {}: fix or remove it", chain(&e)));
                    continue;
                }
            };
            match self.recover_one(&intent) {
                Ok(line) => {
                    said.extend(line);
                    self.home.drop_intent(&entry.path)?;
                }
                Err(e) => said.push(format!(
                    "warning: could not recover the interrupted {} of {} (trying again next time): {}",
                    intent.op.kind(),
                    intent.op.target(),
                    chain(&e)
                )),
            }
        }
        // A user-mode create killed after its switch started leaves the switch with no VM.
        if self.user_net().switch_pid().is_some() {
            match self.stop_switch_if_idle() {
                Ok(true) => said.push("recovered: stopped the user-mode switch no VM uses".into()),
                Ok(false) => {}
                Err(e) => said.push(format!("warning: {}", chain(&e))),
            }
        }
        for tree in self.stale_build_trees() {
            let path = self.home.images_dir().join(&tree);
            match remove_dir_all(&path) {
                Ok(()) => said.push(format!(
                    "recovered: removed {tree}, the build tree of an image build that was killed"
                )),
                Err(e) => said.push(format!("warning: {}", chain(&e))),
            }
        }
        for line in &said {
            self.progress.say(line);
        }
        Ok(ended.into_iter().chain(said).collect())
    }

    /// Deals with one dead journal; `None`: nothing to say.
    fn recover_one(&self, intent: &Intent) -> Result<Option<String>> {
        Ok(match &intent.op {
            Operation::Create { machine } => Some(self.recover_create(machine)?),
            Operation::Rm { machine } => Some(self.recover_rm(machine)?),
            Operation::Start { machine } => Some(format!(
                "recovered: the interrupted start of {machine} left it {}",
                self.machine_state(machine)
            )),
            Operation::SwarmCreate { swarm } if intent.has("record") => self.recover_swarm_create(swarm)?,
            // Killed before its record was written: the record (if any) is another create's.
            Operation::SwarmCreate { .. } => None,
            Operation::SwarmRm { swarm } => self.recover_swarm_rm(swarm)?,
            Operation::Scale { swarm, add_managers, add_workers, remove } => {
                self.recover_scale(swarm, add_managers, add_workers, remove)?
            }
            Operation::SwarmUpgrade { swarm, node, .. } => Some(self.recover_upgrade(swarm, node)?),
            Operation::ImageBuild { staging } => {
                if !is_build_tree(staging) {
                    return Ok(Some(format!(
                        "warning: ignored a journal naming {staging:?}, not a build tree"
                    )));
                }
                remove_dir_all(&self.home.images_dir().join(staging))?;
                Some(format!(
                    "recovered: removed {staging}, the build tree of an image build that was killed"
                ))
            }
        })
    }

    fn has_record(&self, machine: &MachineName) -> bool {
        self.home.machine_dir(machine).join("machine.json").exists()
    }

    fn recover_create(&self, machine: &MachineName) -> Result<String> {
        let state = self.machine_state(machine);
        if state == VmState::Running || self.has_record(machine) {
            return Ok(format!(
                "recovered: the interrupted create of {machine} had made it whole: kept ({state}; `n2d start {machine}` or `n2d rm -f {machine}`)"
            ));
        }
        self.hypervisor.release(&self.vm_handle(machine));
        self.release_machine(machine)?;
        remove_dir_all(&self.home.machine_dir(machine))?;
        Ok(format!("recovered: undid the interrupted create of {machine} (its address, tap and directory)"))
    }

    fn recover_rm(&self, machine: &MachineName) -> Result<String> {
        if self.machine_state(machine) == VmState::Running {
            return Ok(format!(
                "recovered: the interrupted rm of {machine} had not stopped it: nothing was removed ({machine} is running)"
            ));
        }
        self.hypervisor.release(&self.vm_handle(machine));
        self.release_machine(machine)?;
        remove_dir_all(&self.home.machine_dir(machine))?;
        Ok(format!("recovered: finished the interrupted rm of {machine}"))
    }

    fn recover_swarm_create(&self, swarm: &SwarmName) -> Result<Option<String>> {
        let Some(record) = self.home.update_swarm(swarm, |r| {
            let exists = |n: &MachineName| self.home.machine_exists(n);
            r.managers.retain(exists);
            r.workers.retain(exists);
        })?
        else {
            return Ok(None);
        };
        let kept = record.nodes().count();
        if kept == 0 && record.external_hosts.is_empty() {
            self.home.remove_swarm(swarm)?;
            return Ok(Some(format!(
                "recovered: undid the interrupted creation of swarm {swarm} (none of its nodes had been made)"
            )));
        }
        Ok(Some(format!(
            "recovered: the creation of swarm {swarm} was interrupted; its record keeps the {kept} machines made: check it with `n2d swarm ls`, remove it with `n2d swarm rm {swarm}`"
        )))
    }

    fn recover_swarm_rm(&self, swarm: &SwarmName) -> Result<Option<String>> {
        let Some(record) = self.home.load_swarm(swarm)? else { return Ok(None) };
        let mut running = Vec::new();
        for node in record.nodes() {
            if self.home.machine_exists(node) {
                if self.machine_state(node) == VmState::Running {
                    running.push(node.to_string());
                    continue;
                }
                self.remove_machine(node, false)?;
            } else {
                self.forget_machine(node)?;
            }
            self.home.update_swarm(swarm, |r| r.forget_node(node))?;
        }
        if running.is_empty() {
            self.home.remove_swarm(swarm)?;
            return Ok(Some(format!("recovered: finished the interrupted rm of swarm {swarm}")));
        }
        Ok(Some(format!(
            "recovered: the interrupted rm of swarm {swarm} left {} running: run `n2d swarm rm {swarm}` again",
            running.join(", ")
        )))
    }

    fn recover_scale(
        &self,
        swarm: &SwarmName,
        add_managers: &[MachineName],
        add_workers: &[MachineName],
        remove: &[MachineName],
    ) -> Result<Option<String>> {
        let Some(before) = self.home.load_swarm(swarm)? else { return Ok(None) };
        let gone: Vec<&MachineName> = remove.iter().filter(|n| !self.home.machine_exists(n)).collect();
        for node in &gone {
            self.forget_machine(node)?;
        }
        let added = |role| {
            let list = if role == NodeRole::Manager { add_managers } else { add_workers };
            list.iter().filter(|n| self.has_record(n)).map(move |n| (role, n.clone()))
        };
        let new: Vec<(NodeRole, MachineName)> =
            added(NodeRole::Manager).chain(added(NodeRole::Worker)).collect();
        let Some(after) = self.home.update_swarm(swarm, |r| {
            for (role, node) in &new {
                r.add_node(*role, node);
            }
            for node in &gone {
                r.forget_node(node);
            }
        })?
        else {
            return Ok(None);
        };
        let recorded: Vec<String> =
            after.nodes().filter(|n| !before.nodes().any(|b| b == *n)).map(|n| n.to_string()).collect();
        let dropped: Vec<String> =
            before.nodes().filter(|n| !after.nodes().any(|a| a == *n)).map(|n| n.to_string()).collect();
        if recorded.is_empty() && dropped.is_empty() {
            return Ok(Some(format!(
                "recovered: the interrupted scale of swarm {swarm} left its record as it was"
            )));
        }
        let mut what = Vec::new();
        if !recorded.is_empty() {
            what.push(format!("recorded its new nodes {}", recorded.join(", ")));
        }
        if !dropped.is_empty() {
            what.push(format!("dropped its removed nodes {}", dropped.join(", ")));
        }
        Ok(Some(format!(
            "recovered: finished the interrupted scale of swarm {swarm}: {} (check with `n2d swarm ls`)",
            what.join("; ")
        )))
    }

    /// `.build-<id>-<pid>` trees in the images directory whose n2d is gone and whose journal
    /// (if any) is not live: what a killed build left (its journal is written before the tree,
    /// and kept when the build cannot remove its tree), or a tree whose journal was deleted by
    /// hand; and `.rm-<id>` trees, what a killed `image rm` left.
    fn stale_build_trees(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.home.images_dir()) else { return Vec::new() };
        let live: Vec<String> = self
            .home
            .intents()
            .into_iter()
            .filter(|e| e.live)
            .filter_map(|e| match e.intent {
                Ok(Intent { op: Operation::ImageBuild { staging }, .. }) => Some(staging),
                _ => None,
            })
            .collect();
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| {
                // An image `image rm` renamed away, cut short: removed under the home lock, which
                // recovery holds too, so nobody is removing it now.
                if is_removed_image(name) {
                    return true;
                }
                let pid = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
                is_build_tree(name)
                    && !live.contains(name)
                    && pid.is_some_and(|pid| pid != std::process::id() && process_start(pid).is_none())
            })
            .collect()
    }
}

/// What `n2d_image::remove_image` renames an image to: `.rm-` and no path.
fn is_removed_image(name: &str) -> bool {
    name.starts_with(".rm-") && !name.contains('/') && !name.contains("..")
}

/// A staging tree's name: `.build-` and no path.
fn is_build_tree(name: &str) -> bool {
    name.starts_with(".build-") && !name.contains('/') && !name.contains("..")
}

fn order(op: &Operation) -> u8 {
    match op {
        Operation::Create { .. } | Operation::Rm { .. } | Operation::Start { .. } => 0,
        Operation::Scale { .. } | Operation::SwarmUpgrade { .. } => 1,
        Operation::SwarmCreate { .. } | Operation::SwarmRm { .. } => 2,
        Operation::ImageBuild { .. } => 3,
    }
}
