//! n2d's docker contexts against the real docker CLI (no engine needed: contexts are files in
//! the CLI's store), in a DOCKER_CONFIG of the test's own. Skipped where the CLI is missing.

use n2d::docker_context::{ensure, machine_description, remove, swarm_description, ContextSpec, Outcome};
use n2d_exec::{Cmd, ExecError, Runner};
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

#[test]
fn contexts_in_the_real_docker_cli_store() {
    if !n2d_exec::is_installed("docker") {
        eprintln!("skipped: no docker CLI");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs,with a comma");
    std::fs::create_dir_all(&certs).unwrap();
    n2d_pki::Ca::load_or_create(&certs).unwrap();
    let r = WithDockerConfig(dir.path().join("docker"));

    // Create, then update in place (a new address); TLS material lands in the store.
    let spec = ContextSpec::machine(&endpoint("h1", "tcp://10.77.0.2:2376", Some(&certs)));
    assert_eq!(ensure(&r, &spec).unwrap(), Outcome::Created);
    assert_eq!(host_of(&r, "h1"), "tcp://10.77.0.2:2376");
    let moved = ContextSpec::machine(&endpoint("h1", "tcp://10.77.0.7:2376", Some(&certs)));
    assert_eq!(ensure(&r, &moved).unwrap(), Outcome::Updated);
    assert_eq!(host_of(&r, "h1"), "tcp://10.77.0.7:2376");

    // Plain TCP: host only.
    let plain = ContextSpec::machine(&endpoint("h2", "tcp://10.77.0.3:2375", None));
    assert_eq!(ensure(&r, &plain).unwrap(), Outcome::Created);

    // A context the user made is neither overwritten nor removed.
    r.run(&Cmd::new("docker", "docker.io").args([
        "context",
        "create",
        "mine",
        "--docker",
        "host=tcp://1.2.3.4:2375",
    ]))
    .unwrap();
    let clash = ContextSpec::swarm("mine", &endpoint("mine-mngr-0", "tcp://10.77.0.4:2376", Some(&certs)));
    assert!(matches!(ensure(&r, &clash).unwrap(), Outcome::Foreign { .. }));
    assert!(matches!(remove(&r, "mine", &swarm_description("mine")).unwrap(), Outcome::Foreign { .. }));
    assert_eq!(host_of(&r, "mine"), "tcp://1.2.3.4:2375");

    // rm removes n2d's, even the current one; a second rm finds nothing.
    r.run(&Cmd::new("docker", "docker.io").args(["context", "use", "h1"])).unwrap();
    assert_eq!(remove(&r, "h1", &machine_description("h1")).unwrap(), Outcome::Removed);
    assert_eq!(remove(&r, "h1", &machine_description("h1")).unwrap(), Outcome::Absent);
    assert_eq!(remove(&r, "h2", &machine_description("h2")).unwrap(), Outcome::Removed);
}
