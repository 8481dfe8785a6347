//! `n2d adopt` against real TLS servers on 127.0.0.1 (n2d-swarm's test server): the engine must
//! present a certificate of this home's CA that names the address it is adopted at and was
//! issued for the machine being adopted. No VM needed.

use n2d_pki::Ca;
use std::path::Path;
use std::process::{Command, Output};

struct Home {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Home {
    fn new() -> Home {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&dir.path().join("home").join("certs")).unwrap();
        Home { dir, ca }
    }

    fn home(&self) -> std::path::PathBuf {
        self.dir.path().join("home")
    }

    /// A server presenting an export certificate of this home's CA for `name` at `ips`.
    fn serve(&self, name: &str, ips: &[&str]) -> u16 {
        let ips: Vec<_> = ips.iter().map(|i| i.parse().unwrap()).collect();
        let c = self.ca.issue_export_server(&name.parse().unwrap(), &ips).unwrap();
        n2d_swarm::testing::serve_in_background(&c.cert_pem, &c.key_pem)
    }

    fn adopt(&self, name: &str, port: u16) -> Output {
        Command::new(env!("CARGO_BIN_EXE_n2d"))
            .args(["adopt", name, "--host", &format!("tcp://127.0.0.1:{port}")])
            .env("N2D_HOME", self.home())
            // The docker CLI, if installed, registers contexts here, not in the user's config.
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .output()
            .unwrap()
    }
}

fn adopted(home: &Path, name: &str) -> bool {
    home.join("hosts").join(format!("{name}.json")).exists()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_certificate_of_the_home_ca_for_another_machine_is_refused() {
    let h = Home::new();
    // web2's certificate, valid for the address: the CA and the address are right, the machine
    // is not (what an export of another machine forwarded to this port would present).
    let port = h.serve("web2", &["127.0.0.1"]);
    let out = h.adopt("web1", port);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("issued for another machine (web2.internal"), "{}", stderr(&out));
    assert!(!adopted(&h.home(), "web1"));
}

#[test]
fn a_certificate_that_does_not_name_the_address_is_refused() {
    let h = Home::new();
    // web1's own certificate, for its address on another network: not for 127.0.0.1.
    let port = h.serve("web1", &["192.168.1.50"]);
    let out = h.adopt("web1", port);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("certificate not valid for name \"127.0.0.1\""), "{}", stderr(&out));
    assert!(!adopted(&h.home(), "web1"));
}

#[test]
fn a_certificate_of_another_ca_is_refused() {
    let h = Home::new();
    let other = Home::new();
    let port = other.serve("web1", &["127.0.0.1"]);
    let out = h.adopt("web1", port);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // Another home's CA has the same subject ("n2d CA"): its signature does not verify.
    assert!(stderr(&out).contains("invalid peer certificate: BadSignature"), "{}", stderr(&out));
    assert!(!adopted(&h.home(), "web1"));
}

#[test]
fn the_machines_own_certificate_for_the_address_is_adopted() {
    let h = Home::new();
    let port = h.serve("web1", &["127.0.0.1"]);
    let out = h.adopt("web1", port);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(adopted(&h.home(), "web1"));
}
