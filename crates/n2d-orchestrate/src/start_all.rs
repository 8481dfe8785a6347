//! Several machines at once: `n2d start --all` boots every stopped machine of a home (after a
//! host reboot, a whole swarm), in parallel and bounded like a swarm's creates, and reports each.

use crate::{Orchestrator, Result};
use n2d_exec::Runner;
use n2d_spec::machine::MachineName;
use n2d_swarm::Connector;
use n2d_vm::{Hypervisor, VmState};
use std::sync::Mutex;
use std::time::Duration;

/// How many VMs to boot at once: under TCG every VM is a host thread, and more parallel boots
/// than this only slow each other down.
pub fn parallel_boots() -> usize {
    std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(4).max(2)
}

/// Runs `f` on every item, on at most `limit` threads at once; the results in the items' order.
pub fn run_bounded<T: Sync, O: Send>(items: &[T], limit: usize, f: impl Fn(&T) -> O + Sync) -> Vec<O> {
    let results: Mutex<Vec<Option<O>>> = Mutex::new(items.iter().map(|_| None).collect());
    let queue = Mutex::new(items.iter().enumerate());
    std::thread::scope(|s| {
        for _ in 0..limit.max(1).min(items.len()) {
            s.spawn(|| loop {
                let Some((i, item)) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else { break };
                let out = f(item);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(out);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|o| o.expect("every item ran"))
        .collect()
}

/// What `n2d start --all` found in the home.
#[derive(Debug, Default)]
pub struct StartAllPlan {
    /// Machines whose VM is not running: to start.
    pub stopped: Vec<MachineName>,
    /// Machines already running: left alone.
    pub running: Vec<MachineName>,
    /// Machine directories that cannot be started (no readable record): name and why.
    pub unreadable: Vec<(String, String)>,
}

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// Sorts the home's machines into stopped, running and unreadable ones.
    pub fn plan_start_all(&self) -> StartAllPlan {
        let mut plan = StartAllPlan::default();
        for (name, record) in self.home.list_machines() {
            match record {
                Ok(r) if self.machine_state(&r.spec.name) == VmState::Running => {
                    plan.running.push(r.spec.name)
                }
                Ok(r) => plan.stopped.push(r.spec.name),
                Err(e) => plan.unreadable.push((name, crate::swarm::chain(&e))),
            }
        }
        plan
    }

    /// Starts the machines in parallel (at most [`parallel_boots`] at once), each as
    /// [`Orchestrator::start_machine`] does (bridge and tap recreated when the host lost them);
    /// one result per machine, in order. A failure stops no other start.
    pub fn start_machines(&self, names: &[MachineName], timeout: Duration) -> Vec<Result<bool>> {
        run_bounded(names, parallel_boots(), |name| self.start_machine(name, timeout))
    }
}
