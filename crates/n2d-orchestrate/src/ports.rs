//! Published ports of user-mode machines and swarms: forwards from the host's 127.0.0.1 that
//! QEMU's user-mode stack holds (`n2d port`, `--publish`).
//!
//! A machine's ports are in its spec and on its QEMU's command line, so they come back with
//! every start. A swarm's port reaches the routing mesh, which answers on every node, so one
//! running node at a time holds it: the swarm record names that node (the first manager at
//! creation). When the holder stops or goes, [`Orchestrator::place_swarm_ports`] moves the
//! port to the first running node (managers first); a node that starts while the holder is
//! down takes it over.

use crate::{Error, Orchestrator, Result};
use n2d_exec::Runner;
use n2d_net::user::port_is_free;
use n2d_spec::machine::MachineName;
use n2d_spec::ports::PortForward;
use n2d_spec::swarm::SwarmName;
use n2d_store::{MachineRecord, SwarmPort, SwarmRecord};
use n2d_swarm::Connector;
use n2d_vm::{Hypervisor, VmState};

/// Who holds a host port in this home, for messages.
fn holder_of(records: &[MachineRecord], swarms: &[SwarmRecord], port: u16) -> Option<String> {
    for r in records {
        if r.api_port == Some(port) {
            return Some(format!("{}'s Docker API", r.spec.name));
        }
        if r.spec.publish.iter().any(|f| f.host == port) {
            return Some(r.spec.name.to_string());
        }
    }
    swarms
        .iter()
        .find(|s| s.ports.iter().any(|p| p.forward.host == port))
        .map(|s| format!("swarm {}", s.prefix))
}

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// The home's machine records that can be read.
    pub(crate) fn all_records(&self) -> Vec<MachineRecord> {
        self.home.list_machines().into_iter().filter_map(|(_, r)| r.ok()).collect()
    }

    /// The home's user-mode machines.
    pub(crate) fn user_mode_records(&self) -> Vec<MachineRecord> {
        self.all_records().into_iter().filter(MachineRecord::user_mode).collect()
    }

    fn all_swarms(&self) -> Vec<SwarmRecord> {
        self.home
            .swarm_names()
            .into_iter()
            .filter_map(|n| n.ok())
            .filter_map(|n| self.home.load_swarm(&n).ok().flatten())
            .collect()
    }

    /// Every published port of the home's swarms.
    pub(crate) fn all_swarm_ports(&self) -> Vec<SwarmPort> {
        self.all_swarms().into_iter().flat_map(|s| s.ports).collect()
    }

    /// The swarm ports that `record`'s machine holds (on its command line when it starts).
    pub(crate) fn swarm_ports_held_by(&self, record: &MachineRecord) -> Vec<PortForward> {
        let Some(swarm) = record.swarm.as_deref().and_then(|s| s.parse::<SwarmName>().ok()) else {
            return Vec::new();
        };
        let Ok(Some(swarm)) = self.home.load_swarm(&swarm) else { return Vec::new() };
        swarm.ports.iter().filter(|p| p.node.as_ref() == Some(&record.spec.name)).map(|p| p.forward).collect()
    }

    /// A host port a new forward may take: no forward of this home holds it (running or not),
    /// and nothing else listens there now.
    pub(crate) fn check_host_port(&self, port: u16) -> Result<()> {
        if let Some(holder) = holder_of(&self.all_records(), &self.all_swarms(), port) {
            return Err(Error::PortHeld { port, holder });
        }
        if !port_is_free(port) {
            return Err(Error::PortBusy { port });
        }
        Ok(())
    }

    fn published_record(&self, name: &MachineName) -> Result<MachineRecord> {
        let record = self.load_record(name)?;
        if !record.user_mode() {
            return Err(Error::PortNeedsUserNetwork { name: name.to_string(), ip: record.ip });
        }
        Ok(record)
    }

    /// `n2d port MACHINE [HOST:]GUEST`: forwards 127.0.0.1:HOST to the machine's GUEST port, now
    /// if it runs, and from every start.
    pub fn publish_machine_port(&self, name: &MachineName, forward: PortForward) -> Result<()> {
        let _lock = self.home.lock()?;
        let mut record = self.published_record(name)?;
        self.check_host_port(forward.host)?;
        let vm = self.vm_handle(name);
        if self.hypervisor.state(&vm) == VmState::Running {
            self.hypervisor.add_forward(&vm, forward)?;
        }
        record.spec.publish.push(forward);
        self.home.save_machine(&record)?;
        Ok(())
    }

    /// `n2d port MACHINE --rm HOST`.
    pub fn unpublish_machine_port(&self, name: &MachineName, host: u16) -> Result<()> {
        let _lock = self.home.lock()?;
        let mut record = self.published_record(name)?;
        if !record.spec.publish.iter().any(|f| f.host == host) {
            return Err(Error::NoSuchPort { name: name.to_string(), port: host });
        }
        let vm = self.vm_handle(name);
        if self.hypervisor.state(&vm) == VmState::Running {
            self.hypervisor.remove_forward(&vm, host)?;
        }
        record.spec.publish.retain(|f| f.host != host);
        self.home.save_machine(&record)?;
        Ok(())
    }

    /// The first node of a user-mode swarm, to check its mode (every node has its first's).
    fn user_mode_swarm(&self, swarm: &SwarmName) -> Result<SwarmRecord> {
        let record = self.load_swarm(swarm)?;
        if let Some(first) = record.nodes().next() {
            self.published_record(first)?;
        }
        Ok(record)
    }

    /// `n2d port SWARM [HOST:]GUEST`: forwards 127.0.0.1:HOST to the routing mesh through one
    /// running node. Returns what to tell the user.
    pub fn publish_swarm_port(&self, swarm: &SwarmName, forward: PortForward) -> Result<Vec<String>> {
        {
            let _lock = self.home.lock()?;
            self.user_mode_swarm(swarm)?;
            self.check_host_port(forward.host)?;
            self.home.update_swarm(swarm, |r| r.ports.push(SwarmPort { forward, node: None }))?;
        }
        self.place_swarm_ports(swarm)
    }

    /// `n2d port SWARM --rm HOST`.
    pub fn unpublish_swarm_port(&self, swarm: &SwarmName, host: u16) -> Result<()> {
        let _lock = self.home.lock()?;
        let record = self.user_mode_swarm(swarm)?;
        let Some(port) = record.ports.iter().find(|p| p.forward.host == host) else {
            return Err(Error::NoSuchPort { name: swarm.to_string(), port: host });
        };
        if let Some(node) = &port.node {
            let vm = self.vm_handle(node);
            if self.hypervisor.state(&vm) == VmState::Running {
                self.hypervisor.remove_forward(&vm, host)?;
            }
        }
        self.home.update_swarm(swarm, |r| r.ports.retain(|p| p.forward.host != host))?;
        Ok(())
    }

    /// [`Self::place_swarm_ports`] for the swarm of a user-mode machine that started, stopped or
    /// went, saying what moved.
    pub(crate) fn place_ports_of_swarm_of(&self, record: &MachineRecord) -> Result<()> {
        let Some(swarm) = record.swarm.as_deref().filter(|_| record.user_mode()) else { return Ok(()) };
        if let Ok(swarm) = swarm.parse() {
            for note in self.place_swarm_ports(&swarm)? {
                self.progress.say(&note);
            }
        }
        Ok(())
    }

    /// Moves the swarm ports `node` holds to another running node (those in `prefer` first)
    /// before it stops, so they stay open but for the moment between QEMU giving the forward up
    /// and the other taking it. Says what moved; a port no other node takes goes back to `node`.
    pub(crate) fn move_swarm_ports_off(
        &self,
        node: &MachineRecord,
        prefer: &[MachineName],
    ) -> Result<Vec<String>> {
        let Some(swarm) = node.swarm.as_deref().filter(|_| node.user_mode()).and_then(|s| s.parse().ok())
        else {
            return Ok(Vec::new());
        };
        let _lock = self.home.lock()?;
        let Some(record) = self.home.load_swarm(&swarm)? else { return Ok(Vec::new()) };
        let name = &node.spec.name;
        let from = self.vm_handle(name);
        let mut others: Vec<&MachineName> =
            record.nodes().filter(|n| *n != name && self.machine_state(n) == VmState::Running).collect();
        others.sort_by_key(|n| !prefer.contains(n));
        let mut notes = Vec::new();
        let mut placed = Vec::new();
        for port in record.ports.iter().filter(|p| p.node.as_ref() == Some(name)) {
            // Handed over, not removed then added: a client connecting meanwhile is refused.
            let holder = others
                .iter()
                .find(|n| self.hypervisor.move_forward(&from, &self.vm_handle(n), port.forward).is_ok());
            if let Some(n) = holder {
                notes.push(format!("{} reaches swarm {swarm}'s routing mesh through {n}", port.forward));
                placed.push((port.forward.host, (*n).clone()));
            }
        }
        self.record_port_holders(&swarm, &placed)?;
        Ok(notes)
    }

    /// Gives each port of the swarm whose node is not running to the first running node that
    /// takes it (managers first). Returns what moved, or why a port has no node now.
    pub fn place_swarm_ports(&self, swarm: &SwarmName) -> Result<Vec<String>> {
        // Under the lock: parallel starts (`start --all`) would each try to place a port.
        let _lock = self.home.lock()?;
        let Some(record) = self.home.load_swarm(swarm)? else { return Ok(Vec::new()) };
        let running = |n: &MachineName| self.machine_state(n) == VmState::Running;
        let mut notes = Vec::new();
        let mut placed = Vec::new();
        for port in &record.ports {
            if port.node.as_ref().is_some_and(running) {
                continue;
            }
            let mut holder = None;
            for node in record.nodes().filter(|n| running(n)) {
                match self.hypervisor.add_forward(&self.vm_handle(node), port.forward) {
                    Ok(()) => {
                        holder = Some(node.clone());
                        break;
                    }
                    Err(e) => notes.push(format!("warning: {e}")),
                }
            }
            // None running: the port comes back with the next node that starts.
            if let Some(node) = holder {
                notes.push(format!("{} reaches swarm {swarm}'s routing mesh through {node}", port.forward));
                placed.push((port.forward.host, node));
            }
        }
        self.record_port_holders(swarm, &placed)?;
        Ok(notes)
    }

    /// The swarm's record names each port's new holder (`placed`: host port, node).
    fn record_port_holders(&self, swarm: &SwarmName, placed: &[(u16, MachineName)]) -> Result<()> {
        if !placed.is_empty() {
            self.home.update_swarm(swarm, |r| {
                for p in r.ports.iter_mut() {
                    if let Some((_, node)) = placed.iter().find(|(host, _)| *host == p.forward.host) {
                        p.node = Some(node.clone());
                    }
                }
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use n2d_spec::machine::MachineSpec;
    use std::net::Ipv4Addr;

    fn record(name: &str, api: Option<u16>, publish: &[(u16, u16)]) -> MachineRecord {
        MachineRecord {
            spec: MachineSpec {
                name: name.parse().unwrap(),
                cpus: 1,
                memory: n2d_spec::machine::DEFAULT_MEMORY,
                disk: n2d_spec::machine::DEFAULT_DISK,
                bridge: "user".into(),
                addresses: None,
                image: "i".into(),
                insecure_tcp: false,
                labels: Default::default(),
                publish: publish.iter().map(|&(host, guest)| PortForward { host, guest }).collect(),
                expose: false,
                mounts: Vec::new(),
            },
            ip: Ipv4Addr::new(10, 77, 0, 2),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            mac: "52:54:00:00:00:01".into(),
            tap: String::new(),
            swarm: None,
            api_port: api,
            warm_from: None,
        }
    }

    #[test]
    fn holders_are_named_for_the_user() {
        let records = [record("a", Some(12376), &[(8080, 80)])];
        let mut swarm = SwarmRecord::from_spec(&Default::default()).unwrap();
        swarm.ports.push(SwarmPort { forward: PortForward { host: 9000, guest: 80 }, node: None });
        let swarms = [swarm];
        assert_eq!(holder_of(&records, &swarms, 12376).unwrap(), "a's Docker API");
        assert_eq!(holder_of(&records, &swarms, 8080).unwrap(), "a");
        assert_eq!(holder_of(&records, &swarms, 9000).unwrap(), "swarm n2d");
        assert_eq!(holder_of(&records, &swarms, 1), None);
    }
}
