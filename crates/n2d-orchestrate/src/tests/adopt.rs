//! `n2d adopt`: a machine booted elsewhere is recorded only when its engine answers with a
//! certificate of this home's CA issued for that name; an engine that cannot be reached,
//! refuses, presents nothing or presents another machine's certificate leaves nothing recorded.

use super::*;
use crate::ErrorKind;

const HOST: &str = "tcp://192.168.1.50:2376";

/// The DER of machine `n`'s server certificate (issued by the kit's CA).
fn cert_der(k: &Kit, n: &str) -> Vec<u8> {
    let disk = std::fs::read(k.orch.home.machine_dir(&name(n)).join(n2d_vm::argv::CONFIG_DISK_FILE)).unwrap();
    let config = n2d_proto::decode_config_disk(&disk).unwrap();
    n2d_pki::der_of(&config.docker.tls.unwrap().cert_pem).unwrap()
}

/// A home with a CA and the certificate of a machine `n` (made here, then removed: it runs
/// elsewhere now).
fn exported(k: &Kit, n: &str) -> Vec<u8> {
    k.create(n).unwrap();
    let der = cert_der(k, n);
    k.orch.remove_machine(&name(n), true).unwrap();
    der
}

fn adopted(k: &Kit, n: &str) -> bool {
    k.orch.adopted(&name(n)).unwrap().is_some()
}

#[test]
fn an_engine_that_presents_its_own_certificate_is_adopted_once() {
    let k = kit();
    let der = exported(&k, "web1");
    k.cluster.present_certificate("web1", der);
    let ep = k.orch.adopt(&name("web1"), HOST).unwrap();
    assert_eq!((ep.docker_host.as_str(), ep.ip), (HOST, Ipv4Addr::new(192, 168, 1, 50)));
    assert!(ep.tls.is_some(), "an adopted machine is reached over TLS");
    assert!(adopted(&k, "web1"));
    let listing = k.orch.list();
    assert_eq!(listing.adopted.len(), 1);
    let err = k.orch.adopt(&name("web1"), HOST).unwrap_err();
    assert!(matches!(err, Error::AdoptedExists { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Usage);
    // `n2d rm` forgets it (its VM is not n2d's to stop).
    assert!(k.orch.forget_adopted(&name("web1")).unwrap());
    assert!(!adopted(&k, "web1"));
    assert!(!k.orch.forget_adopted(&name("web1")).unwrap());
}

#[test]
fn an_unreachable_engine_is_not_adopted() {
    let k = kit();
    let der = exported(&k, "web1");
    k.cluster.present_certificate("web1", der);
    k.cluster.fail("web1", "ping");
    let err = k.orch.adopt(&name("web1"), HOST).unwrap_err();
    assert!(matches!(err, Error::AdoptUnanswered { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Failure);
    assert!(err.to_string().contains("does not answer at tcp://192.168.1.50:2376"), "{err}");
    assert!(!adopted(&k, "web1"));
}

#[test]
fn an_engine_that_refuses_the_connection_is_not_adopted() {
    let k = kit();
    exported(&k, "web1");
    k.cluster.fail("web1", "connect");
    let err = k.orch.adopt(&name("web1"), HOST).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(!adopted(&k, "web1"));
}

#[test]
fn an_engine_that_presents_no_certificate_or_another_machines_is_refused() {
    let k = kit();
    exported(&k, "web1");
    let err = k.orch.adopt(&name("web1"), HOST).unwrap_err();
    assert!(matches!(err, Error::NoCertificatePresented), "{err:?}");
    k.create("h2").unwrap();
    k.cluster.present_certificate("web1", cert_der(&k, "h2"));
    let err = k.orch.adopt(&name("web1"), HOST).unwrap_err();
    assert!(matches!(err, Error::CertificateForAnotherMachine { .. }), "{err:?}");
    assert!(err.to_string().contains("issued for another machine"), "{err}");
    assert!(!adopted(&k, "web1"));
}

#[test]
fn a_bad_host_a_taken_name_or_a_home_without_a_ca_are_usage_errors() {
    let k = kit();
    let err = k.orch.adopt(&name("web1"), "192.168.1.50:2376").unwrap_err();
    assert!(matches!(err, Error::Usage(_)) && err.to_string().contains("tcp://HOST:PORT"), "{err:?}");
    let err = k.orch.adopt(&name("web1"), HOST).unwrap_err();
    assert!(matches!(err, Error::AdoptWithoutCa { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Usage);
    k.create("h1").unwrap();
    let err = k.orch.adopt(&name("h1"), HOST).unwrap_err();
    assert!(matches!(err, Error::AdoptedExists { .. }), "{err:?}");
    // Nothing was asked of any engine.
    assert_eq!(k.cluster.count_events("certificate"), 0);
}
