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

use n2d_exec::{Cmd, ExecError, Runner};
use n2d_swarm::Endpoint;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

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

static SAID_NO_DOCKER_CLI: AtomicBool = AtomicBool::new(false);

fn note_no_docker_cli(env_hint: &str) {
    if !SAID_NO_DOCKER_CLI.swap(true, Ordering::Relaxed) {
        crate::progress::say(format!(
            "note: the docker CLI is not installed (Debian package {DOCKER_PACKAGE}), so n2d registers no docker context; `{env_hint}` gives the environment instead"
        ));
    }
}

/// [`ensure`], saying what went wrong on stderr instead of failing. `env_hint` is the `n2d env`
/// command that reaches the same engine. The context's name when it now points at the engine.
pub fn register(runner: &dyn Runner, spec: &ContextSpec, env_hint: &str) -> Option<String> {
    let name = &spec.owner.name;
    match ensure(runner, spec) {
        Ok(Outcome::Created { name: got, taken: Some(description) }) => {
            crate::progress::say(format!(
                "note: the docker context {name:?} is another n2d home's, or an older n2d's ({description:?}): this one's is {got:?}"
            ));
            Some(got)
        }
        Ok(Outcome::Created { name, taken: None } | Outcome::Updated { name }) => Some(name),
        Ok(Outcome::NoDockerCli) => {
            note_no_docker_cli(env_hint);
            None
        }
        Ok(Outcome::InvalidName) => {
            crate::progress::say(format!(
                "note: {name:?} is not a name the docker CLI accepts for a context (two characters at least, not \"default\"): no docker context registered; use `{env_hint}`"
            ));
            None
        }
        Ok(Outcome::Foreign { name, description }) => {
            crate::progress::say(format!(
                "warning: a docker context named {name:?} already exists and is not n2d's ({description:?}): left as it is; use `{env_hint}`, or remove it (`docker context rm {name}`) and run this again"
            ));
            None
        }
        Ok(Outcome::Taken { names }) => {
            crate::progress::say(format!(
                "warning: the docker contexts {} belong to other n2d homes: left as they are; use `{env_hint}`",
                names.join(" and ")
            ));
            None
        }
        Ok(Outcome::Removed { .. } | Outcome::Absent) => None,
        Err(e) => {
            let e = anyhow::Error::new(e).context(format!("cannot register docker context {name:?}"));
            crate::progress::say(format!("warning: {e:#}; use `{env_hint}`"));
            None
        }
    }
}

/// [`remove`], with a warning on stderr instead of an error.
pub fn unregister(runner: &dyn Runner, owner: &Owner) {
    if let Err(e) = remove(runner, owner) {
        let e = anyhow::Error::new(e).context(format!("cannot remove docker context {:?}", owner.name));
        crate::progress::say(format!("warning: {e:#}"));
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

    /// Homes that do not exist keep their path as given (no canonical form to find).
    const HOME_A: &str = "/nonexistent/home-a";
    const HOME_B: &str = "/nonexistent/home-b";

    fn inspect_json(description: &str) -> String {
        let description = serde_json::to_string(description).unwrap();
        format!(
            r#"[{{"Name":"x","Metadata":{{"Description":{description}}},"Endpoints":{{"docker":{{"Host":"tcp://10.77.0.9:2376"}}}}}}]"#
        )
    }

    const NOT_FOUND: &str =
        "context \"h1\": context not found: open /d/contexts/meta/ab/meta.json: no such file or directory";

    fn second_name(name: &str, home: &str) -> String {
        format!("{name}-{}", Owner::machine(name, Path::new(home)).home_id)
    }

    #[test]
    fn the_description_names_the_home_and_the_second_name_hashes_it() {
        let a = Owner::machine("h1", Path::new(HOME_A));
        assert_eq!(a.description(), "n2d machine h1 (home /nonexistent/home-a)");
        assert_eq!(
            Owner::swarm("demo", Path::new(HOME_A)).description(),
            "n2d swarm demo (home /nonexistent/home-a)"
        );
        let b = Owner::machine("h1", Path::new(HOME_B));
        assert_eq!(a.candidates()[0], "h1");
        assert_ne!(a.candidates()[1], b.candidates()[1], "two homes, two second names");
        assert!(a.candidates()[1].starts_with("h1-") && a.candidates()[1].len() == 3 + 8);
        // Stable: the same home always gets the same name (FNV-1a, not a per-build hasher).
        assert_eq!(
            home_id(Path::new("/root/.local/share/n2d")),
            home_id(Path::new("/root/.local/share/n2d"))
        );
        assert_eq!(home_id(Path::new("/root/.local/share/n2d")), "77302a86", "renames every context");
        // Another home's description, an older n2d's and the user's own are told apart.
        assert!(a.is_n2d_for_this_name(&b.description()));
        assert!(a.is_n2d_for_this_name("n2d machine h1"));
        assert!(!a.is_n2d_for_this_name("n2d machine h10 (home /x)"));
        assert!(!a.is_n2d_for_this_name("n2d swarm h1 (home /x)"));
        assert!(!a.is_n2d_for_this_name("my laptop's engine"));
    }

    #[test]
    fn a_symlinked_home_is_the_same_owner() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        assert_eq!(Owner::machine("h1", &real), Owner::machine("h1", &dir.path().join("link")));
    }

    #[test]
    fn creates_a_tls_context_for_a_machine() {
        let r = RecordingRunner::default();
        r.answer("context inspect", Err(NOT_FOUND));
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/home/n2d/certs"), Path::new(HOME_A));
        assert_eq!(ensure(&r, &spec).unwrap(), Outcome::Created { name: "h1".into(), taken: None });
        let second = second_name("h1", HOME_A);
        assert_eq!(
            r.calls(),
            [
                "docker context inspect h1".to_string(),
                format!("docker context inspect {second}"),
                "docker context create h1 --description n2d machine h1 (home /nonexistent/home-a) --docker host=tcp://10.77.0.2:2376,ca=/home/n2d/certs/ca.pem,cert=/home/n2d/certs/cert.pem,key=/home/n2d/certs/key.pem".to_string(),
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
        assert_eq!(ContextSpec::machine(&ep, Path::new(HOME_A)).docker_arg(), "host=tcp://10.77.0.3:2375");
    }

    #[test]
    fn fields_with_commas_are_quoted() {
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/odd,dir"), Path::new(HOME_A));
        assert_eq!(
            spec.docker_arg(),
            "host=tcp://10.77.0.2:2376,\"ca=/odd,dir/ca.pem\",\"cert=/odd,dir/cert.pem\",\"key=/odd,dir/key.pem\""
        );
    }

    #[test]
    fn this_homes_context_is_updated_not_recreated() {
        let r = RecordingRunner::default();
        r.answer("context inspect", Ok(&inspect_json("n2d swarm demo (home /nonexistent/home-a)")));
        let spec = ContextSpec::swarm("demo", &tls_endpoint("demo-mngr-0", "/c"), Path::new(HOME_A));
        assert_eq!(ensure(&r, &spec).unwrap(), Outcome::Updated { name: "demo".into() });
        let calls = r.calls();
        assert_eq!(calls.len(), 3);
        assert!(calls[2].starts_with("docker context update demo --description n2d swarm demo (home /nonexistent/home-a) --docker host=tcp://10.77.0.2:2376,ca=/c/ca.pem"), "{}", calls[2]);
    }

    #[test]
    fn another_homes_context_is_never_touched_and_this_home_gets_the_second_name() {
        let second = second_name("h1", HOME_B);
        for theirs in ["n2d machine h1 (home /nonexistent/home-a)", "n2d machine h1"] {
            let r = RecordingRunner::default();
            // (Answers match by substring: the second name's first.)
            r.answer(&format!("context inspect {second}"), Err(NOT_FOUND));
            r.answer("context inspect h1", Ok(&inspect_json(theirs)));
            let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_B));
            assert_eq!(
                ensure(&r, &spec).unwrap(),
                Outcome::Created { name: second.clone(), taken: Some(theirs.into()) }
            );
            assert!(r.calls()[2].starts_with(&format!(
                "docker context create {second} --description n2d machine h1 (home /nonexistent/home-b)"
            )));
            // rm in home B: nothing of A's is removed.
            let r = RecordingRunner::default();
            r.answer(&format!("context inspect {second}"), Err(NOT_FOUND));
            r.answer("context inspect h1", Ok(&inspect_json(theirs)));
            assert_eq!(remove(&r, &Owner::machine("h1", Path::new(HOME_B))).unwrap(), Outcome::Absent);
            assert!(r.calls().iter().all(|c| c.starts_with("docker context inspect")), "{:?}", r.calls());
        }
        // Both names held by other homes: none.
        let r = RecordingRunner::default();
        r.answer("context inspect", Ok(&inspect_json("n2d machine h1 (home /elsewhere)")));
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_B));
        assert_eq!(ensure(&r, &spec).unwrap(), Outcome::Taken { names: vec!["h1".into(), second] });
        assert!(register(&r, &spec, "n2d env h1").is_none());
    }

    #[test]
    fn the_second_name_is_kept_once_the_first_is_free() {
        let second = second_name("h1", HOME_B);
        let r = RecordingRunner::default();
        r.answer(
            &format!("context inspect {second}"),
            Ok(&inspect_json("n2d machine h1 (home /nonexistent/home-b)")),
        );
        r.answer("context inspect h1", Err(NOT_FOUND));
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_B));
        assert_eq!(ensure(&r, &spec).unwrap(), Outcome::Updated { name: second.clone() });
        assert_eq!(current_host(&r, &spec.owner).as_deref(), Some("tcp://10.77.0.9:2376"));
        assert_eq!(remove(&r, &spec.owner).unwrap(), Outcome::Removed { names: vec![second.clone()] });
        assert_eq!(r.calls().last().unwrap(), &format!("docker context rm -f {second}"));
    }

    #[test]
    fn a_foreign_context_is_left_alone() {
        let r = RecordingRunner::default();
        r.answer("context inspect", Ok(&inspect_json("my laptop's engine")));
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_A));
        assert_eq!(
            ensure(&r, &spec).unwrap(),
            Outcome::Foreign { name: "h1".into(), description: "my laptop's engine".into() }
        );
        assert_eq!(remove(&r, &spec.owner).unwrap(), Outcome::Absent);
        assert!(r.calls().iter().all(|c| c.starts_with("docker context inspect")), "{:?}", r.calls());
        // A swarm's context is not a machine's of the same name, and the other way round.
        let r = RecordingRunner::default();
        r.answer("context inspect", Ok(&inspect_json("n2d swarm h1 (home /nonexistent/home-a)")));
        assert!(matches!(ensure(&r, &spec).unwrap(), Outcome::Foreign { .. }));
        assert_eq!(remove(&r, &spec.owner).unwrap(), Outcome::Absent);
        assert!(r.calls().iter().all(|c| c.starts_with("docker context inspect")), "{:?}", r.calls());
    }

    #[test]
    fn current_host_is_read_from_this_homes_contexts_only() {
        let demo = Owner::swarm("demo", Path::new(HOME_A));
        let r = RecordingRunner::default();
        r.answer("context inspect", Ok(&inspect_json("n2d swarm demo (home /nonexistent/home-a)")));
        assert_eq!(current_host(&r, &demo).as_deref(), Some("tcp://10.77.0.9:2376"));
        assert_eq!(current_host(&r, &Owner::machine("demo", Path::new(HOME_A))), None, "not this swarm's");
        assert_eq!(current_host(&r, &Owner::swarm("demo", Path::new(HOME_B))), None, "not this home's");
        let r = RecordingRunner::default();
        r.answer("context inspect", Err(NOT_FOUND));
        assert_eq!(current_host(&r, &demo), None);
    }

    #[test]
    fn rm_removes_only_what_this_home_made() {
        let owner = Owner::machine("h1", Path::new(HOME_A));
        let r = RecordingRunner::default();
        r.answer(&format!("context inspect {}", second_name("h1", HOME_A)), Err(NOT_FOUND));
        r.answer("context inspect h1", Ok(&inspect_json(&owner.description())));
        assert_eq!(remove(&r, &owner).unwrap(), Outcome::Removed { names: vec!["h1".into()] });
        assert_eq!(r.calls().last().unwrap(), "docker context rm -f h1");

        let r = RecordingRunner::default();
        r.answer("context inspect", Err(NOT_FOUND));
        assert_eq!(remove(&r, &owner).unwrap(), Outcome::Absent);
        assert_eq!(r.calls().len(), 2);
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
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_A));
        assert_eq!(ensure(&NoDocker, &spec).unwrap(), Outcome::NoDockerCli);
        assert_eq!(remove(&NoDocker, &spec.owner).unwrap(), Outcome::NoDockerCli);
        assert!(register(&NoDocker, &spec, "n2d env h1").is_none());
        unregister(&NoDocker, &spec.owner);
    }

    #[test]
    fn other_failures_are_errors_that_register_only_reports() {
        let r = RecordingRunner::default();
        r.answer("context inspect", Err(NOT_FOUND));
        r.answer("context create", Err("unable to create docker endpoint config: ca.pem seems invalid"));
        let spec = ContextSpec::machine(&tls_endpoint("h1", "/c"), Path::new(HOME_A));
        let err = ensure(&r, &spec).unwrap_err().to_string();
        assert!(err.contains("ca.pem seems invalid"), "{err}");
        assert!(register(&r, &spec, "n2d env h1").is_none());

        let r = RecordingRunner::default();
        r.answer("context inspect", Err("permission denied"));
        assert!(ensure(&r, &spec).is_err());
        assert!(remove(&r, &spec.owner).is_err());
    }

    #[test]
    fn names_the_docker_cli_refuses_are_skipped() {
        assert!(valid_name("h1") && valid_name("n2d") && valid_name("a-b.c_d+e"));
        assert!(!valid_name("a") && !valid_name("default") && !valid_name("-ab") && !valid_name(""));
        // A one-letter machine has only the second name.
        let owner = Owner::machine("a", Path::new(HOME_A));
        assert_eq!(owner.candidates(), [second_name("a", HOME_A)]);
        let r = RecordingRunner::default();
        let spec = ContextSpec::machine(&tls_endpoint("-", "/c"), Path::new(HOME_A));
        assert_eq!(ensure(&r, &spec).unwrap(), Outcome::InvalidName);
        assert_eq!(remove(&r, &spec.owner).unwrap(), Outcome::Absent);
        assert!(r.calls().is_empty());
    }
}
