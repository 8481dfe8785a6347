//! Docker contexts: `n2d create NAME` and `n2d swarm create` register a context in the docker
//! CLI's own store (`docker context create`, so `$DOCKER_CONFIG` is honoured by the CLI itself),
//! named after the machine or the swarm, with the user's TLS material. `rm` removes it.
//!
//! A context belongs to one home: its description names the object and the home's canonical path
//! (`n2d machine NAME (home /root/.local/share/n2d)`), and n2d updates or removes only contexts
//! whose description is exactly its own. One user may have several homes with a machine of the
//! same name, so a context has two possible names: `NAME`, taken by the first home that asks, and
//! `NAME-XXXXXXXX` (a hash of the home's path) for any other. A context of another home, of an
//! n2d that did not record homes, or the user's own is never changed or removed. A context is a
//! convenience: failing to register one never fails a command, and without the docker CLI there
//! is one note per run.
//!
//! [`ensure`], [`remove`] and [`current_host`] report what they did; [`register`] and
//! [`unregister`] (and the orchestrator's [`crate::Orchestrator::register_context`] and
//! [`crate::Orchestrator::unregister_context`]) say it through [`crate::Progress`] instead of
//! failing. [`mod@env`] is the other way to reach an engine: `n2d env`'s variables.

pub mod env;
mod register;
pub mod swarm;

pub use register::{register, unregister};

use n2d_exec::{Cmd, ExecError, Runner};
use n2d_swarm::Endpoint;
use std::path::Path;

/// The Debian package of the docker CLI.
pub const DOCKER_PACKAGE: &str = "docker.io";

/// What n2d makes contexts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Machine,
    Swarm,
}

/// A machine or swarm of one home: whose context it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: Kind,
    pub name: String,
    /// The home's canonical path, as written in the description.
    pub home: String,
    /// A short hash of the home's canonical path, for the second name.
    pub home_id: String,
}

impl Owner {
    pub fn machine(name: &str, home: &Path) -> Owner {
        Owner::new(Kind::Machine, name, home)
    }

    pub fn swarm(name: &str, home: &Path) -> Owner {
        Owner::new(Kind::Swarm, name, home)
    }

    fn new(kind: Kind, name: &str, home: &Path) -> Owner {
        // The same home reached through a symlink or a relative $N2D_HOME is the same owner.
        let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
        Owner { kind, name: name.to_string(), home: home.display().to_string(), home_id: home_id(&home) }
    }

    /// What n2d versions that did not record the home wrote: `n2d machine NAME`.
    fn legacy_description(&self) -> String {
        let kind = match self.kind {
            Kind::Machine => "machine",
            Kind::Swarm => "swarm",
        };
        format!("n2d {kind} {}", self.name)
    }

    /// The description n2d writes, and recognises its own contexts by.
    pub fn description(&self) -> String {
        format!("{} (home {})", self.legacy_description(), self.home)
    }

    /// Whether `description` is n2d's for this object, in this home or another (or written by an
    /// n2d that did not record homes).
    fn is_n2d_for_this_name(&self, description: &str) -> bool {
        let legacy = self.legacy_description();
        description == legacy || description.strip_prefix(&legacy).is_some_and(|r| r.starts_with(" (home "))
    }

    /// The names this object's context may have, in order of preference, among those the docker
    /// CLI accepts: `NAME`, then `NAME-XXXXXXXX`.
    pub fn candidates(&self) -> Vec<String> {
        [self.name.clone(), format!("{}-{}", self.name, self.home_id)]
            .into_iter()
            .filter(|n| valid_name(n))
            .collect()
    }
}

/// 8 hex digits of FNV-1a over the path's bytes: stable across builds and Rust versions (which
/// `DefaultHasher` is not). Not a secret and not a guard: a collision only makes the second home's
/// context name taken, and the description still tells the homes apart.
fn home_id(home: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in home.as_os_str().as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", (hash ^ (hash >> 32)) as u32)
}

/// What a context should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextSpec {
    pub owner: Owner,
    /// The `--docker` endpoint: host, and the TLS files unless the engine is plain TCP.
    pub endpoint: Endpoint,
}

impl ContextSpec {
    /// The context of a lone machine of `home`, named after it.
    pub fn machine(ep: &Endpoint, home: &Path) -> ContextSpec {
        ContextSpec { owner: Owner::machine(&ep.name, home), endpoint: ep.clone() }
    }

    /// The context of a swarm of `home`, named after it, pointing at one of its managers.
    pub fn swarm(swarm: &str, manager: &Endpoint, home: &Path) -> ContextSpec {
        ContextSpec { owner: Owner::swarm(swarm, home), endpoint: manager.clone() }
    }

    /// The value of `--docker`: comma-separated `key=value` fields, CSV-quoted where needed
    /// (the docker CLI reads it with a CSV reader).
    pub fn docker_arg(&self) -> String {
        let mut fields = vec![format!("host={}", self.endpoint.docker_host)];
        if let Some(tls) = &self.endpoint.tls {
            for (key, path) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
                fields.push(format!("{key}={}", path.display()));
            }
        }
        fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",")
    }

    fn command(&self, verb: &str, name: &str) -> Cmd {
        docker([
            "context",
            verb,
            name,
            "--description",
            &self.owner.description(),
            "--docker",
            &self.docker_arg(),
        ])
    }
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn docker<const N: usize>(args: [&str; N]) -> Cmd {
    Cmd::new("docker", DOCKER_PACKAGE).args(args)
}

/// What [`ensure`] or [`remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The context `name` was made. `taken` is the description of another home's context that
    /// holds the plain name, when this one got the second.
    Created {
        name: String,
        taken: Option<String>,
    },
    Updated {
        name: String,
    },
    /// These contexts (this home's) were removed.
    Removed {
        names: Vec<String>,
    },
    /// There was no context of this home.
    Absent,
    /// The context `name` exists and is the user's own, not n2d's: untouched.
    Foreign {
        name: String,
        description: String,
    },
    /// Both names are taken by contexts of other homes: none registered.
    Taken {
        names: Vec<String>,
    },
    /// The docker CLI is not installed.
    NoDockerCli,
    /// The docker CLI refuses every name (`default`, or too short).
    InvalidName,
}

/// Names the docker CLI accepts: `^[a-zA-Z0-9][a-zA-Z0-9_.+-]+$`, and not `default`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest: Vec<char> = chars.collect();
    first_ok
        && !rest.is_empty()
        && rest.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-'))
        && name != "default"
}

/// What a context holds now: its description and docker host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Existing {
    description: String,
    host: String,
}

/// The context `name` as it is, `None` when there is no such context.
fn existing(runner: &dyn Runner, name: &str) -> Result<Option<Existing>, ExecError> {
    match runner.run(&docker(["context", "inspect", name])) {
        Ok(out) => {
            let json: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
            let Some(first) = json.as_array().and_then(|a| a.first()) else { return Ok(None) };
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            Ok(Some(Existing {
                description: text(&first["Metadata"]["Description"]),
                host: text(&first["Endpoints"]["docker"]["Host"]),
            }))
        }
        Err(ExecError::Failed { stderr_tail, .. })
            if stderr_tail.contains("not found") || stderr_tail.contains("does not exist") =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Each candidate name of `owner` with what holds it now.
fn survey(runner: &dyn Runner, owner: &Owner) -> Result<Vec<(String, Option<Existing>)>, ExecError> {
    owner.candidates().into_iter().map(|name| existing(runner, &name).map(|e| (name, e))).collect()
}

/// Creates this home's context, or updates it where it already is; leaves every other context
/// alone (another home's, the user's own).
pub fn ensure(runner: &dyn Runner, spec: &ContextSpec) -> Result<Outcome, ExecError> {
    let owner = &spec.owner;
    let ours = owner.description();
    let names = match survey(runner, owner) {
        Err(ExecError::NotInstalled { .. }) => return Ok(Outcome::NoDockerCli),
        Err(e) => return Err(e),
        Ok(names) if names.is_empty() => return Ok(Outcome::InvalidName),
        Ok(names) => names,
    };
    // Where it is already (e.g. the second name, though the first has since been freed).
    if let Some((name, _)) = names.iter().find(|(_, e)| e.as_ref().is_some_and(|e| e.description == ours)) {
        runner.run(&spec.command("update", name))?;
        return Ok(Outcome::Updated { name: name.clone() });
    }
    let mut taken = None;
    for (name, e) in &names {
        match e {
            None => {
                runner.run(&spec.command("create", name))?;
                return Ok(Outcome::Created { name: name.clone(), taken });
            }
            // Another home's (or an n2d that did not record homes): try the next name.
            Some(e) if owner.is_n2d_for_this_name(&e.description) => {
                taken.get_or_insert_with(|| e.description.clone());
            }
            Some(e) => {
                return Ok(Outcome::Foreign { name: name.clone(), description: e.description.clone() })
            }
        }
    }
    Ok(Outcome::Taken { names: names.into_iter().map(|(n, _)| n).collect() })
}

/// The docker host this home's context of `owner` points at now; `None` when it has none or the
/// docker CLI cannot tell.
pub fn current_host(runner: &dyn Runner, owner: &Owner) -> Option<String> {
    let ours = owner.description();
    owner.candidates().iter().find_map(|name| match existing(runner, name) {
        Ok(Some(e)) if e.description == ours => Some(e.host),
        _ => None,
    })
}

/// Removes this home's context of `owner` (under either name); nothing else.
pub fn remove(runner: &dyn Runner, owner: &Owner) -> Result<Outcome, ExecError> {
    let names = match survey(runner, owner) {
        Err(ExecError::NotInstalled { .. }) => return Ok(Outcome::NoDockerCli),
        Err(e) => return Err(e),
        Ok(names) => names,
    };
    let ours = owner.description();
    let mut removed = Vec::new();
    for (name, e) in names {
        if e.is_some_and(|e| e.description == ours) {
            // -f: n2d's context may be the current one (`docker context use`); the CLI then
            // falls back to the default.
            runner.run(&docker(["context", "rm", "-f", &name]))?;
            removed.push(name);
        }
    }
    Ok(if removed.is_empty() { Outcome::Absent } else { Outcome::Removed { names: removed } })
}

#[cfg(test)]
mod tests;
