//! n2d's docker contexts against the real docker CLI (no engine needed: contexts are files in
//! the CLI's store), in a DOCKER_CONFIG of the test's own. Skipped where the CLI is missing.

use n2d_exec::{Cmd, ExecError, Runner};
use n2d_orchestrate::contexts::{current_host, ensure, remove, ContextSpec, Outcome, Owner};
use n2d_swarm::{Endpoint, TlsPaths};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The system runner with DOCKER_CONFIG pointing into the test's directory.
struct WithDockerConfig(PathBuf);

impl Runner for WithDockerConfig {
    fn run(&self, cmd: &Cmd) -> Result<Vec<u8>, ExecError> {
        let out = Command::new(&cmd.program)
            .args(&cmd.args)
            .env("DOCKER_CONFIG", &self.0)
            .env_remove("DOCKER_CONTEXT")
            .output()
            .map_err(|e| n2d_exec::spawn_error(cmd, e))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(ExecError::Failed {
            command: cmd.display(),
            status: out.status.to_string(),
            stderr_tail: n2d_exec::tail(&out.stderr, 6),
        })
    }
}

fn endpoint(name: &str, host: &str, certs: Option<&Path>) -> Endpoint {
    Endpoint {
        name: name.into(),
        ip: [10, 77, 0, 2].into(),
        docker_host: host.into(),
        tls: certs.map(|c| TlsPaths {
            ca: c.join(n2d_pki::CA_CERT),
            cert: c.join(n2d_pki::CLIENT_CERT),
            key: c.join(n2d_pki::CLIENT_KEY),
        }),
    }
}

fn host_of(r: &WithDockerConfig, name: &str) -> String {
    let out = r.run(&Cmd::new("docker", "docker.io").args(["context", "inspect", name])).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    json[0]["Endpoints"]["docker"]["Host"].as_str().unwrap().to_string()
}

fn exists(r: &WithDockerConfig, name: &str) -> bool {
    r.run(&Cmd::new("docker", "docker.io").args(["context", "inspect", name])).is_ok()
}

/// The copies of client keys the docker CLI keeps in its store, with their modes.
fn key_copies(docker_config: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut stack = vec![docker_config.join("contexts/tls")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else if e.file_name() == "key.pem" {
                found.push((e.path(), meta.permissions().mode() & 0o777));
            }
        }
    }
    found
}

/// Whether `program` is on this test process's PATH (libraries take the search path as a value).
fn is_installed(program: &str) -> bool {
    n2d_exec::SearchPath::from_path_var(std::env::var_os("PATH").as_deref()).is_installed(program)
}

fn created(name: &str) -> Outcome {
    Outcome::Created { name: name.into(), taken: None }
}

#[test]
fn contexts_in_the_real_docker_cli_store() {
    if !is_installed("docker") {
        eprintln!("skipped: no docker CLI");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let certs = home.join("certs,with a comma");
    std::fs::create_dir_all(&certs).unwrap();
    n2d_pki::Ca::load_or_create(&certs).unwrap();
    let r = WithDockerConfig(dir.path().join("docker"));

    // Create, then update in place (a new address); TLS material lands in the store.
    let spec = ContextSpec::machine(&endpoint("h1", "tcp://10.77.0.2:2376", Some(&certs)), &home);
    assert_eq!(ensure(&r, &spec).unwrap(), created("h1"));
    assert_eq!(host_of(&r, "h1"), "tcp://10.77.0.2:2376");
    let moved = ContextSpec::machine(&endpoint("h1", "tcp://10.77.0.7:2376", Some(&certs)), &home);
    assert_eq!(ensure(&r, &moved).unwrap(), Outcome::Updated { name: "h1".into() });
    assert_eq!(host_of(&r, "h1"), "tcp://10.77.0.7:2376");

    // Plain TCP: host only.
    let plain = ContextSpec::machine(&endpoint("h2", "tcp://10.77.0.3:2375", None), &home);
    assert_eq!(ensure(&r, &plain).unwrap(), created("h2"));

    // A context the user made is neither overwritten nor removed.
    r.run(&Cmd::new("docker", "docker.io").args([
        "context",
        "create",
        "mine",
        "--docker",
        "host=tcp://1.2.3.4:2375",
    ]))
    .unwrap();
    let clash =
        ContextSpec::swarm("mine", &endpoint("mine-mngr-0", "tcp://10.77.0.4:2376", Some(&certs)), &home);
    assert!(matches!(ensure(&r, &clash).unwrap(), Outcome::Foreign { .. }));
    assert_eq!(remove(&r, &clash.owner).unwrap(), Outcome::Absent);
    assert_eq!(host_of(&r, "mine"), "tcp://1.2.3.4:2375");

    // rm removes n2d's, even the current one; a second rm finds nothing.
    r.run(&Cmd::new("docker", "docker.io").args(["context", "use", "h1"])).unwrap();
    assert_eq!(remove(&r, &spec.owner).unwrap(), Outcome::Removed { names: vec!["h1".into()] });
    assert_eq!(remove(&r, &spec.owner).unwrap(), Outcome::Absent);
    assert_eq!(remove(&r, &plain.owner).unwrap(), Outcome::Removed { names: vec!["h2".into()] });
}

#[test]
fn two_homes_with_a_machine_of_the_same_name_keep_their_own_contexts() {
    if !is_installed("docker") {
        eprintln!("skipped: no docker CLI");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = WithDockerConfig(dir.path().join("docker"));
    let (home_a, home_b) = (dir.path().join("home-a"), dir.path().join("home b"));
    for home in [&home_a, &home_b] {
        std::fs::create_dir_all(home.join("certs")).unwrap();
        n2d_pki::Ca::load_or_create(&home.join("certs")).unwrap();
    }
    let a =
        ContextSpec::machine(&endpoint("web", "tcp://10.77.0.2:2376", Some(&home_a.join("certs"))), &home_a);
    let b =
        ContextSpec::machine(&endpoint("web", "tcp://10.77.0.9:2376", Some(&home_b.join("certs"))), &home_b);
    let b_name = b.owner.candidates()[1].clone();

    // A takes the plain name; B, second, gets its own and leaves A's as it was.
    assert_eq!(ensure(&r, &a).unwrap(), created("web"));
    assert_eq!(
        ensure(&r, &b).unwrap(),
        Outcome::Created { name: b_name.clone(), taken: Some(a.owner.description()) }
    );
    assert_eq!(host_of(&r, "web"), "tcp://10.77.0.2:2376");
    assert_eq!(host_of(&r, &b_name), "tcp://10.77.0.9:2376");
    // Re-registering (a swarm repointed, a machine recreated) stays in each home's own context.
    assert_eq!(ensure(&r, &b).unwrap(), Outcome::Updated { name: b_name.clone() });
    assert_eq!(ensure(&r, &a).unwrap(), Outcome::Updated { name: "web".into() });
    assert_eq!(host_of(&r, "web"), "tcp://10.77.0.2:2376");
    assert_eq!(current_host(&r, &b.owner).as_deref(), Some("tcp://10.77.0.9:2376"));
    // The same home through a symlink is the same owner.
    let link = dir.path().join("link-to-a");
    std::os::unix::fs::symlink(&home_a, &link).unwrap();
    assert_eq!(current_host(&r, &Owner::machine("web", &link)).as_deref(), Some("tcp://10.77.0.2:2376"));

    // The docker CLI keeps a private copy of each home's client key in its store.
    let copies = key_copies(&r.0);
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert!(copies.iter().all(|(_, mode)| *mode == 0o600), "{copies:?}");
    let key_of = |home: &Path| std::fs::read(home.join("certs").join(n2d_pki::CLIENT_KEY)).unwrap();
    let copied: Vec<Vec<u8>> = copies.iter().map(|(p, _)| std::fs::read(p).unwrap()).collect();
    assert!(copied.contains(&key_of(&home_a)) && copied.contains(&key_of(&home_b)));

    // rm in A removes A's only (and the CLI's copy of A's key); B's keeps working, under its name
    // even once the plain one is free.
    assert_eq!(remove(&r, &a.owner).unwrap(), Outcome::Removed { names: vec!["web".into()] });
    let copied: Vec<Vec<u8>> = key_copies(&r.0).iter().map(|(p, _)| std::fs::read(p).unwrap()).collect();
    assert_eq!(copied, [key_of(&home_b)]);
    assert!(!exists(&r, "web"));
    assert_eq!(host_of(&r, &b_name), "tcp://10.77.0.9:2376");
    assert_eq!(ensure(&r, &b).unwrap(), Outcome::Updated { name: b_name.clone() });
    assert!(!exists(&r, "web"), "B did not take A's name behind its back");
    // rm in A again: B's is not A's to remove.
    assert_eq!(remove(&r, &a.owner).unwrap(), Outcome::Absent);
    assert!(exists(&r, &b_name));
    assert_eq!(remove(&r, &b.owner).unwrap(), Outcome::Removed { names: vec![b_name.clone()] });
    assert!(!exists(&r, &b_name));

    // A context an older n2d made (no home recorded) is nobody's to change: a home gets the
    // second name and rm leaves the old one.
    r.run(&Cmd::new("docker", "docker.io").args([
        "context",
        "create",
        "web",
        "--description",
        "n2d machine web",
        "--docker",
        "host=tcp://10.77.0.5:2376",
    ]))
    .unwrap();
    assert!(
        matches!(ensure(&r, &a).unwrap(), Outcome::Created { ref name, .. } if *name == a.owner.candidates()[1])
    );
    assert_eq!(
        remove(&r, &a.owner).unwrap(),
        Outcome::Removed { names: vec![a.owner.candidates()[1].clone()] }
    );
    assert_eq!(host_of(&r, "web"), "tcp://10.77.0.5:2376");
}
