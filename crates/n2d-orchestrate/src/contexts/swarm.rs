//! A swarm's docker context: it names one manager, and follows a manager that answers when the
//! one it names does not (its VM killed, a leader lost) or is no longer a manager.

use super::env::{cert_path_text, MachineEnv};
use super::{current_host, ContextSpec, Owner};
use crate::{runtime, Orchestrator, Result};
use n2d_exec::Runner;
use n2d_spec::machine::MachineName;
use n2d_spec::swarm::SwarmName;
use n2d_store::MachineRecord;
use n2d_store::SwarmRecord;
use n2d_swarm::Connector;
use n2d_vm::Hypervisor;
use std::path::PathBuf;

/// Where a swarm's docker context points (when it is this home's), and at which manager.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwarmContext {
    /// The context's docker host; `None` when this home has no context for the swarm.
    pub host: Option<String>,
    /// The manager of the swarm at that host, if one is.
    pub manager: Option<MachineName>,
}

/// The manager `n2d swarm env NAME` reaches the swarm through, and the note to say first when
/// the swarm's context was repointed at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmEnv {
    pub note: Option<String>,
    pub docker_host: String,
    /// The home's certificates' directory.
    pub certs: PathBuf,
    pub eval_hint: String,
}

impl SwarmEnv {
    /// The environment to print; a certificates' path that is not UTF-8 is refused.
    pub fn env(&self) -> Result<MachineEnv> {
        Ok(MachineEnv {
            docker_host: self.docker_host.clone(),
            cert_path: Some(cert_path_text(&self.certs)?.to_string()),
            eval_hint: self.eval_hint.clone(),
        })
    }
}

impl<R: Runner, H, C> Orchestrator<R, H, C> {
    /// Where the swarm's context points now (see [`SwarmContext`]).
    pub fn swarm_context(&self, record: &SwarmRecord) -> SwarmContext {
        let owner = Owner::swarm(record.prefix.as_str(), self.home.root());
        let host = current_host(&self.runner, &owner);
        let manager = host.as_ref().and_then(|h| {
            record
                .managers
                .iter()
                .find(|m| self.home.load_machine(m).is_ok_and(|r| &r.docker_host() == h))
                .cloned()
        });
        SwarmContext { host, manager }
    }

    /// Registers (or repoints) the swarm's docker context at `manager` (the one that just
    /// answered); a failure is only said. The context's name when it points there.
    pub fn register_swarm_context(&self, record: &SwarmRecord, manager: &MachineRecord) -> Option<String> {
        let hint = format!("n2d swarm env {}", record.prefix);
        let spec = ContextSpec::swarm(record.prefix.as_str(), &self.endpoint(manager), self.home.root());
        self.register_context(&spec, &hint)
    }

    /// Points the context at `live` (a manager that answers) when it names another host; the
    /// note for the user when it did.
    pub fn repoint_swarm_context(
        &self,
        context: &SwarmContext,
        record: &SwarmRecord,
        live: &MachineRecord,
    ) -> Option<String> {
        let host = context.host.as_ref()?;
        if *host == live.docker_host() {
            return None;
        }
        let name = self.register_swarm_context(record, live)?;
        Some(format!(
            "note: docker context {name} pointed at {host}, where no manager of the swarm answers; it now points at {} ({})",
            live.spec.name,
            live.docker_host()
        ))
    }

    /// Removes this home's context of swarm `name`; a failure is only said.
    pub fn unregister_swarm_context(&self, name: &SwarmName) {
        self.unregister_context(&Owner::swarm(name.as_str(), self.home.root()));
    }
}

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// How to reach swarm `name`: a manager that answers (the one its context names first),
    /// with the context repointed when it named one that does not.
    pub fn swarm_env(&self, name: &SwarmName) -> Result<SwarmEnv> {
        let record = self.load_swarm(name)?;
        let context = self.swarm_context(&record);
        let (m, _) = self.reachable_manager_from(&record, &runtime()?, context.manager.as_ref())?;
        let note = self.repoint_swarm_context(&context, &record, &m);
        Ok(SwarmEnv {
            note,
            docker_host: m.docker_host(),
            certs: self.home.certs_dir(),
            eval_hint: format!("n2d swarm env {name}"),
        })
    }
}
