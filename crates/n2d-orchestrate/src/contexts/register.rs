//! Registering and removing a context as a convenience: what went wrong is said, never failed on.

use super::{ensure, remove, ContextSpec, Outcome, Owner, DOCKER_PACKAGE};
use crate::swarm::chain;
use crate::{Orchestrator, Progress};
use n2d_exec::Runner;
use n2d_spec::machine::MachineName;
use n2d_swarm::Endpoint;
use std::sync::atomic::{AtomicBool, Ordering};

static SAID_NO_DOCKER_CLI: AtomicBool = AtomicBool::new(false);

fn note_no_docker_cli(progress: &dyn Progress, env_hint: &str) {
    if !SAID_NO_DOCKER_CLI.swap(true, Ordering::Relaxed) {
        progress.say(&format!(
            "note: the docker CLI is not installed (Debian package {DOCKER_PACKAGE}), so n2d registers no docker context; `{env_hint}` gives the environment instead"
        ));
    }
}

/// [`ensure`], saying what went wrong through `progress` instead of failing. `env_hint` is the `n2d env`
/// command that reaches the same engine. The context's name when it now points at the engine.
pub fn register(
    runner: &dyn Runner,
    progress: &dyn Progress,
    spec: &ContextSpec,
    env_hint: &str,
) -> Option<String> {
    let name = &spec.owner.name;
    match ensure(runner, spec) {
        Ok(Outcome::Created { name: got, taken: Some(description) }) => {
            progress.say(&format!(
                "note: the docker context {name:?} is another n2d home's, or an older n2d's ({description:?}): this one's is {got:?}"
            ));
            Some(got)
        }
        Ok(Outcome::Created { name, taken: None } | Outcome::Updated { name }) => Some(name),
        Ok(Outcome::NoDockerCli) => {
            note_no_docker_cli(progress, env_hint);
            None
        }
        Ok(Outcome::InvalidName) => {
            progress.say(&format!(
                "note: {name:?} is not a name the docker CLI accepts for a context (two characters at least, not \"default\"): no docker context registered; use `{env_hint}`"
            ));
            None
        }
        Ok(Outcome::Foreign { name, description }) => {
            progress.say(&format!(
                "warning: a docker context named {name:?} already exists and is not n2d's ({description:?}): left as it is; use `{env_hint}`, or remove it (`docker context rm {name}`) and run this again"
            ));
            None
        }
        Ok(Outcome::Taken { names }) => {
            progress.say(&format!(
                "warning: the docker contexts {} belong to other n2d homes: left as they are; use `{env_hint}`",
                names.join(" and ")
            ));
            None
        }
        Ok(Outcome::Removed { .. } | Outcome::Absent) => None,
        Err(e) => {
            progress.say(&format!(
                "warning: cannot register docker context {name:?}: {}; use `{env_hint}`",
                chain(&e)
            ));
            None
        }
    }
}

/// [`remove`], with a warning through `progress` instead of an error.
pub fn unregister(runner: &dyn Runner, progress: &dyn Progress, owner: &Owner) {
    if let Err(e) = remove(runner, owner) {
        progress.say(&format!("warning: cannot remove docker context {:?}: {}", owner.name, chain(&e)));
    }
}

impl<R: Runner, H, C> Orchestrator<R, H, C> {
    /// [`register`] with this orchestrator's runner and progress.
    pub fn register_context(&self, spec: &ContextSpec, env_hint: &str) -> Option<String> {
        register(&self.runner, self.progress.as_ref(), spec, env_hint)
    }

    /// [`unregister`] with this orchestrator's runner and progress.
    pub fn unregister_context(&self, owner: &Owner) {
        unregister(&self.runner, self.progress.as_ref(), owner)
    }

    /// Registers (or refreshes) the docker context of the lone machine at `ep` (one of this
    /// home's, or an adopted one); a failure is only said. The context's name when it is made.
    pub fn register_machine_context(&self, ep: &Endpoint) -> Option<String> {
        let spec = ContextSpec::machine(ep, self.home.root());
        self.register_context(&spec, &format!("n2d env {}", ep.name))
    }

    /// Removes this home's context of machine `name`; a failure is only said.
    pub fn unregister_machine_context(&self, name: &MachineName) {
        self.unregister_context(&Owner::machine(name.as_str(), self.home.root()));
    }
}
