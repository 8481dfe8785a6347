//! Docker contexts: `n2d create NAME` and `n2d swarm create` register a context in the docker
//! CLI's own store (`docker context create`, so `$DOCKER_CONFIG` is honoured by the CLI itself),
//! named after the machine or the swarm, with the user's TLS material. `rm` removes it.
//!
//! n2d owns a context when its description is exactly the one n2d writes (`n2d machine NAME`,
//! `n2d swarm NAME`): those are updated in place when re-registered and removed with the
//! machine or swarm; any other context of the same name is left alone with a warning. A
//! context is a convenience: failing to register one never fails a command, and without the
//! docker CLI there is one note per run.

use n2d_exec::{Cmd, ExecError, Runner};
use n2d_swarm::Endpoint;
use std::sync::atomic::{AtomicBool, Ordering};

/// The Debian package of the docker CLI.
pub const DOCKER_PACKAGE: &str = "docker.io";

/// What a context should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextSpec {
    pub name: String,
    pub description: String,
    /// The `--docker` endpoint: host, and the TLS files unless the engine is plain TCP.
    pub endpoint: Endpoint,
}

pub fn machine_description(name: &str) -> String {
    format!("n2d machine {name}")
}

pub fn swarm_description(name: &str) -> String {
    format!("n2d swarm {name}")
}

impl ContextSpec {
    /// The context of a lone machine, named after it.
    pub fn machine(ep: &Endpoint) -> ContextSpec {
        ContextSpec {
            name: ep.name.clone(),
            description: machine_description(&ep.name),
            endpoint: ep.clone(),
        }
    }

    /// The context of a swarm, named after it, pointing at one of its managers.
    pub fn swarm(swarm: &str, manager: &Endpoint) -> ContextSpec {
        ContextSpec {
            name: swarm.to_string(),
            description: swarm_description(swarm),
            endpoint: manager.clone(),
        }
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

    fn command(&self, verb: &str) -> Cmd {
        docker([
            "context",
            verb,
            &self.name,
            "--description",
            &self.description,
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
    Created,
    Updated,
    Removed,
    /// There was no context of that name.
    Absent,
    /// A context of that name exists and is not n2d's (for this machine or swarm): untouched.
    Foreign {
        description: String,
    },
    /// The docker CLI is not installed.
    NoDockerCli,
    /// The docker CLI refuses the name (too short, or `default`).
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

/// Creates the context, or updates it when n2d made it; leaves anyone else's alone.
pub fn ensure(runner: &dyn Runner, spec: &ContextSpec) -> Result<Outcome, ExecError> {
    if !valid_name(&spec.name) {
        return Ok(Outcome::InvalidName);
    }
    let outcome = match existing(runner, &spec.name) {
        Err(ExecError::NotInstalled { .. }) => return Ok(Outcome::NoDockerCli),
        Err(e) => return Err(e),
        Ok(None) => {
            runner.run(&spec.command("create"))?;
            Outcome::Created
        }
        Ok(Some(e)) if e.description == spec.description => {
            runner.run(&spec.command("update"))?;
            Outcome::Updated
        }
        Ok(Some(e)) => Outcome::Foreign { description: e.description },
    };
    Ok(outcome)
}

/// The docker host n2d's context `name` (described `description`) points at now; `None` when
/// there is no such context, it is someone else's, or the docker CLI cannot tell.
pub fn current_host(runner: &dyn Runner, name: &str, description: &str) -> Option<String> {
    if !valid_name(name) {
        return None;
    }
    match existing(runner, name) {
        Ok(Some(e)) if e.description == description => Some(e.host),
        _ => None,
    }
}

/// Removes the context `name` if n2d made it with `description`.
pub fn remove(runner: &dyn Runner, name: &str, description: &str) -> Result<Outcome, ExecError> {
    if !valid_name(name) {
        return Ok(Outcome::Absent);
    }
    match existing(runner, name) {
        Err(ExecError::NotInstalled { .. }) => Ok(Outcome::NoDockerCli),
        Err(e) => Err(e),
        Ok(None) => Ok(Outcome::Absent),
        Ok(Some(e)) if e.description == description => {
            // -f: n2d's context may be the current one (`docker context use`); the CLI then
            // falls back to the default.
            runner.run(&docker(["context", "rm", "-f", name]))?;
            Ok(Outcome::Removed)
        }
        Ok(Some(e)) => Ok(Outcome::Foreign { description: e.description }),
    }
}

static SAID_NO_DOCKER_CLI: AtomicBool = AtomicBool::new(false);

fn note_no_docker_cli(env_hint: &str) {
    if !SAID_NO_DOCKER_CLI.swap(true, Ordering::Relaxed) {
        crate::progress::say(format!(
            "note: the docker CLI is not installed (Debian package {DOCKER_PACKAGE}), so n2d registers no docker context; `{env_hint}` gives the environment instead"
        ));
    }
}

/// [`ensure`], saying what went wrong on stderr instead of failing. `env_hint` is the `n2d env`
/// command that reaches the same engine. True when the context now points at the engine.
pub fn register(runner: &dyn Runner, spec: &ContextSpec, env_hint: &str) -> bool {
    let name = &spec.name;
    match ensure(runner, spec) {
        Ok(Outcome::Created | Outcome::Updated) => true,
        Ok(Outcome::NoDockerCli) => {
            note_no_docker_cli(env_hint);
            false
        }
        Ok(Outcome::InvalidName) => {
            crate::progress::say(format!(
                "note: {name:?} is not a name the docker CLI accepts for a context (two characters at least, not \"default\"): no docker context registered; use `{env_hint}`"
            ));
            false
        }
        Ok(Outcome::Foreign { description }) => {
            crate::progress::say(format!(
                "warning: a docker context named {name:?} already exists and is not n2d's ({description:?}): left as it is; use `{env_hint}`, or remove it (`docker context rm {name}`) and run this again"
            ));
            false
        }
        Ok(Outcome::Removed | Outcome::Absent) => false,
        Err(e) => {
            let e = anyhow::Error::new(e).context(format!("cannot register docker context {name:?}"));
            crate::progress::say(format!("warning: {e:#}; use `{env_hint}`"));
            false
        }
    }
}

/// [`remove`], with a warning on stderr instead of an error.
pub fn unregister(runner: &dyn Runner, name: &str, description: &str) {
    match remove(runner, name, description) {
        Ok(Outcome::Foreign { description }) => crate::progress::say(format!(
            "note: the docker context {name:?} is not n2d's ({description:?}): left as it is"
        )),
        Ok(_) => {}
        Err(e) => {
            let e = anyhow::Error::new(e).context(format!("cannot remove docker context {name:?}"));
            crate::progress::say(format!("warning: {e:#}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use n2d_exec::RecordingRunner;
    use n2d_swarm::TlsPaths;
    use std::path::PathBuf;

    fn tls_endpoint(name: &str, certs: &str) -> Endpoint {
        let certs = PathBuf::from(certs);
        Endpoint {
            name: name.into(),
            ip: [10, 77, 0, 2].into(),
            docker_host: "tcp://10.77.0.2:2376".into(),
            tls: Some(TlsPaths {
                ca: certs.join("ca.pem"),
                cert: certs.join("cert.pem"),
                key: certs.join("key.pem"),
            }),
        }
    }

    fn inspect_json(description: &str) -> String {
        format!(
            r#"[{{"Name":"x","Metadata":{{"Description":"{description}"}},"Endpoints":{{"docker":{{"Host":"tcp://10.77.0.9:2376"}}}}}}]"#
        )
    }

    const NOT_FOUND: &str =
        "context \"h1\": context not found: open /d/contexts/meta/ab/meta.json: no such file or directory";

    #[test]
    fn creates_a_tls_context_for_a_machine() {
        let r = RecordingRunner::default();
        r.answer("context inspect", Err(NOT_FOUND));
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/home/n2d/certs"));
        assert_eq!(ensure(&r, &spec).unwrap(), Outcome::Created);
        assert_eq!(
            r.calls(),
            [
                "docker context inspect h1",
                "docker context create h1 --description n2d machine h1 --docker host=tcp://10.77.0.2:2376,ca=/home/n2d/certs/ca.pem,cert=/home/n2d/certs/cert.pem,key=/home/n2d/certs/key.pem",
            ]
        );
    }

    #[test]
    fn plain_tcp_machines_get_a_host_only() {
        let ep = Endpoint {
            name: "h2".into(),
            ip: [10, 77, 0, 3].into(),
            docker_host: "tcp://10.77.0.3:2375".into(),
            tls: None,
        };
        assert_eq!(ContextSpec::machine(&ep).docker_arg(), "host=tcp://10.77.0.3:2375");
    }

    #[test]
    fn fields_with_commas_are_quoted() {
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/odd,dir"));
        assert_eq!(
            spec.docker_arg(),
            "host=tcp://10.77.0.2:2376,\"ca=/odd,dir/ca.pem\",\"cert=/odd,dir/cert.pem\",\"key=/odd,dir/key.pem\""
        );
    }

    #[test]
    fn an_n2d_context_is_updated_not_recreated() {
        let r = RecordingRunner::default();
        r.answer("context inspect", Ok(&inspect_json("n2d swarm demo")));
        let spec = ContextSpec::swarm("demo", &tls_endpoint("demo-mngr-0", "/c"));
        assert_eq!(ensure(&r, &spec).unwrap(), Outcome::Updated);
        let calls = r.calls();
        assert_eq!(calls.len(), 2);
        assert!(calls[1].starts_with("docker context update demo --description n2d swarm demo --docker host=tcp://10.77.0.2:2376,ca=/c/ca.pem"), "{}", calls[1]);
    }

    #[test]
    fn a_foreign_context_is_left_alone() {
        let r = RecordingRunner::default();
        r.answer("context inspect", Ok(&inspect_json("my laptop's engine")));
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"));
        assert_eq!(ensure(&r, &spec).unwrap(), Outcome::Foreign { description: "my laptop's engine".into() });
        assert_eq!(
            remove(&r, "h1", &machine_description("h1")).unwrap(),
            Outcome::Foreign { description: "my laptop's engine".into() }
        );
        assert!(r.calls().iter().all(|c| c.starts_with("docker context inspect")), "{:?}", r.calls());
        // A swarm's context is not a machine's of the same name, and the other way round.
        let r = RecordingRunner::default();
        r.answer("context inspect", Ok(&inspect_json("n2d swarm h1")));
        assert!(matches!(ensure(&r, &spec).unwrap(), Outcome::Foreign { .. }));
        assert!(matches!(remove(&r, "h1", &machine_description("h1")).unwrap(), Outcome::Foreign { .. }));
        assert_eq!(r.calls().len(), 2);
    }

    #[test]
    fn current_host_is_read_from_n2d_contexts_only() {
        let r = RecordingRunner::default();
        r.answer("context inspect", Ok(&inspect_json("n2d swarm demo")));
        assert_eq!(current_host(&r, "demo", "n2d swarm demo").as_deref(), Some("tcp://10.77.0.9:2376"));
        assert_eq!(current_host(&r, "demo", "n2d machine demo"), None, "not this swarm's");
        let r = RecordingRunner::default();
        r.answer("context inspect", Err(NOT_FOUND));
        assert_eq!(current_host(&r, "demo", "n2d swarm demo"), None);
        assert_eq!(current_host(&r, "a", "n2d swarm a"), None, "a name the CLI refuses is not asked");
        assert_eq!(r.calls(), ["docker context inspect demo"]);
    }

    #[test]
    fn rm_removes_only_what_n2d_made() {
        let r = RecordingRunner::default();
        r.answer("context inspect", Ok(&inspect_json("n2d machine h1")));
        assert_eq!(remove(&r, "h1", &machine_description("h1")).unwrap(), Outcome::Removed);
        assert_eq!(r.calls(), ["docker context inspect h1", "docker context rm -f h1"]);

        let r = RecordingRunner::default();
        r.answer("context inspect", Err(NOT_FOUND));
        assert_eq!(remove(&r, "h1", &machine_description("h1")).unwrap(), Outcome::Absent);
        assert_eq!(r.calls(), ["docker context inspect h1"]);
    }

    #[test]
    fn no_docker_cli_is_an_outcome_not_an_error() {
        // A runner that finds no docker binary, like SystemRunner on a host without it.
        struct NoDocker;
        impl Runner for NoDocker {
            fn run(&self, cmd: &Cmd) -> Result<Vec<u8>, ExecError> {
                Err(ExecError::NotInstalled { program: cmd.program.clone(), package: cmd.package })
            }
        }
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"));
        assert_eq!(ensure(&NoDocker, &spec).unwrap(), Outcome::NoDockerCli);
        assert_eq!(remove(&NoDocker, "h1", "n2d machine h1").unwrap(), Outcome::NoDockerCli);
        assert!(!register(&NoDocker, &spec, "n2d env h1"));
        unregister(&NoDocker, "h1", "n2d machine h1");
    }

    #[test]
    fn other_failures_are_errors_that_register_only_reports() {
        let r = RecordingRunner::default();
        r.answer("context inspect", Err(NOT_FOUND));
        r.answer("context create", Err("unable to create docker endpoint config: ca.pem seems invalid"));
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"));
        let err = ensure(&r, &spec).unwrap_err().to_string();
        assert!(err.contains("ca.pem seems invalid"), "{err}");
        assert!(!register(&r, &spec, "n2d env h1"));

        let r = RecordingRunner::default();
        r.answer("context inspect", Err("permission denied"));
        assert!(ensure(&r, &spec).is_err());
        assert!(remove(&r, "h1", "n2d machine h1").is_err());
    }

    #[test]
    fn names_the_docker_cli_refuses_are_skipped() {
        assert!(valid_name("h1") && valid_name("n2d") && valid_name("a-b.c_d+e"));
        assert!(!valid_name("a") && !valid_name("default") && !valid_name("-ab") && !valid_name(""));
        let r = RecordingRunner::default();
        let spec = ContextSpec::machine(&tls_endpoint("a", "/c"));
        assert_eq!(ensure(&r, &spec).unwrap(), Outcome::InvalidName);
        assert_eq!(remove(&r, "a", "n2d machine a").unwrap(), Outcome::Absent);
        assert!(r.calls().is_empty());
    }
}
