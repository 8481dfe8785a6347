//! `n2d certs`: server certificates re-issued for the same names and pushed to running machines
//! (config disk rewritten in place, `reload-tls` on the control port, the engine checked), the
//! client certificate, and what `certs ls` reports. The fake hypervisor's control hook stands in
//! for n2d-init: it reads the config disk again and its engine presents what it found.

use super::*;
use crate::certs::{Rotated, CONFIG_DISK_ROOM};
use n2d_pki::CertInfo;
use n2d_proto::{decode_config_disk, encode_config_disk, GuestConfig};
use std::os::unix::fs::MetadataExt;

fn config_path(k: &Kit, n: &str) -> std::path::PathBuf {
    k.orch.home.machine_dir(&name(n)).join(n2d_vm::argv::CONFIG_DISK_FILE)
}

fn config_of(k: &Kit, n: &str) -> GuestConfig {
    decode_config_disk(&std::fs::read(config_path(k, n)).unwrap()).unwrap()
}

fn cert_of(k: &Kit, n: &str) -> CertInfo {
    CertInfo::from_pem(&config_of(k, n).docker.tls.unwrap().cert_pem).unwrap()
}

/// The guest's side: on `reload-tls` it reads its config disk again and its engine presents
/// the certificate there.
fn guest_reloads(k: &Kit) {
    let cluster = k.cluster.clone();
    k.vms().on_control(move |vm, request| {
        assert_eq!(request, n2d_proto::ControlRequest::ReloadTls);
        let config = decode_config_disk(&std::fs::read(vm.dir.join("config.img")).unwrap()).unwrap();
        let der = n2d_pki::der_of(&config.docker.tls.unwrap().cert_pem).unwrap();
        cluster.present_certificate(&vm.name, der);
    });
}

#[test]
fn server_certificates_name_127_0_0_1_only_for_user_mode_machines() {
    let k = kit();
    k.create("h1").unwrap();
    let bridge = cert_of(&k, "h1");
    assert_eq!(bridge.dns_names, ["h1.internal", "h1.local"]);
    assert_eq!(bridge.ips, [std::net::IpAddr::from([10, 77, 0, 2])], "a bridge machine's names 127.0.0.1");
    let user = MachineSpec { bridge: n2d_spec::machine::USER_NETWORK.into(), ..spec("u1") };
    k.orch.create_machine(&user, None, BOOT).unwrap();
    let ips = cert_of(&k, "u1").ips;
    assert_eq!(ips, [std::net::IpAddr::from([10, 77, 0, 2]), std::net::IpAddr::from([127, 0, 0, 1])]);
    // New config disks leave room for a longer certificate.
    assert_eq!(std::fs::metadata(config_path(&k, "h1")).unwrap().len(), CONFIG_DISK_ROOM as u64);
}

#[test]
fn rotating_a_running_machine_rewrites_its_config_disk_in_place_and_reloads_its_engine() {
    let k = kit();
    k.create("h1").unwrap();
    guest_reloads(&k);
    let path = config_path(&k, "h1");
    let (inode, len) = (std::fs::metadata(&path).unwrap().ino(), std::fs::metadata(&path).unwrap().len());
    let before = config_of(&k, "h1");
    let old = cert_of(&k, "h1");
    let events = k.vms().events().len();

    let rotated = k.orch.rotate_server_certificate(&name("h1"), BOOT).unwrap();
    let new = cert_of(&k, "h1");
    assert_eq!(rotated, Rotated::Live { serial: new.serial.clone() });
    assert_ne!(new.serial, old.serial);
    assert_eq!((new.dns_names.clone(), new.ips.clone()), (old.dns_names, old.ips), "the same names");
    // The same file QEMU holds open, the same size; everything but the TLS material unchanged.
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.ino(), meta.len(), meta.mode() & 0o777), (inode, len, 0o600));
    let after = config_of(&k, "h1");
    assert_ne!(after.docker.tls, before.docker.tls);
    assert_eq!(GuestConfig { docker: before.docker.clone(), ..after }, before);
    assert_eq!(k.vms().events()[events..], ["control h1 reload-tls", "wait_ready_after h1"]);
    assert!(k.cluster.count_events("certificate h1") >= 1);
    assert!(k.vms().is_running("h1"), "rotation reboots nothing");
}

#[test]
fn an_engine_that_still_presents_the_old_certificate_is_reported() {
    let k = kit();
    k.create("h1").unwrap();
    // No guest reload: the engine keeps presenting its first certificate.
    let old = config_of(&k, "h1").docker.tls.unwrap().cert_pem;
    k.cluster.present_certificate("h1", n2d_pki::der_of(&old).unwrap());
    let err = k.orch.rotate_server_certificate(&name("h1"), BOOT).unwrap_err();
    assert!(matches!(err, Error::CertificateNotReloaded { .. }), "{err:?}");
    assert!(err.to_string().contains("n2d restart h1"), "{err}");
}

#[test]
fn a_control_port_that_cannot_be_reached_fails_and_the_next_start_has_the_new_certificate() {
    let k = kit();
    k.create("h1").unwrap();
    k.vms().fail_control("h1");
    let old = cert_of(&k, "h1").serial;
    let err = k.orch.rotate_server_certificate(&name("h1"), BOOT).unwrap_err();
    assert!(matches!(err, Error::Vm(VmError::Socket { .. })), "{err:?}");
    assert_ne!(cert_of(&k, "h1").serial, old, "the config disk has it for the next boot");
}

#[test]
fn a_stopped_machine_gets_the_new_certificate_at_its_next_start() {
    let k = kit();
    k.create("h1").unwrap();
    k.orch.stop_machine(&name("h1"), BOOT).unwrap();
    let old = cert_of(&k, "h1").serial;
    let rotated = k.orch.rotate_server_certificate(&name("h1"), BOOT).unwrap();
    let new = cert_of(&k, "h1").serial;
    assert_eq!(rotated, Rotated::NextStart { serial: new.clone() });
    assert_ne!(new, old);
    assert_eq!(k.vms().count("control"), 0, "nothing sent to a stopped machine");
    k.orch.start_machine(&name("h1"), BOOT).unwrap();
    assert_eq!(cert_of(&k, "h1").serial, new, "start keeps the rotated certificate");
}

#[test]
fn a_damaged_config_disk_of_a_stopped_machine_is_written_again_from_its_record() {
    let k = kit();
    let record = k.create("h1").unwrap();
    k.orch.stop_machine(&name("h1"), BOOT).unwrap();
    for garbage in [&b""[..], b"N2DCONF1\xff\xff\xff\xff", &[0u8; 4096]] {
        std::fs::write(config_path(&k, "h1"), garbage).unwrap();
        k.orch.rotate_server_certificate(&name("h1"), BOOT).unwrap();
        let config = config_of(&k, "h1");
        assert_eq!(config.hostname, "h1");
        assert_eq!(config.network.static_address(), Some(record.ip));
    }
}

#[test]
fn a_running_machine_whose_config_disk_has_no_room_is_left_as_it_was() {
    let k = kit();
    k.create("h1").unwrap();
    // A disk sized to its config exactly (as one over CONFIG_DISK_ROOM is), with a shorter
    // certificate than any new one: the new config cannot fit the device QEMU has open.
    let mut tight = config_of(&k, "h1");
    tight.docker.tls.as_mut().unwrap().cert_pem =
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into();
    let bytes = encode_config_disk(&tight).unwrap();
    std::fs::write(config_path(&k, "h1"), &bytes).unwrap();
    let err = k.orch.rotate_server_certificate(&name("h1"), BOOT).unwrap_err();
    assert!(matches!(err, Error::ConfigDiskFull { .. }), "{err:?}");
    assert_eq!(std::fs::read(config_path(&k, "h1")).unwrap(), bytes, "the disk is untouched");
    assert_eq!(k.vms().count("control"), 0);
}

#[test]
fn an_insecure_machine_has_nothing_to_rotate_and_a_symlinked_config_disk_is_refused() {
    let k = kit();
    k.orch.create_machine(&MachineSpec { insecure_tcp: true, ..spec("h1") }, None, BOOT).unwrap();
    assert_eq!(k.orch.rotate_server_certificate(&name("h1"), BOOT).unwrap(), Rotated::NoTls);
    assert!(matches!(
        k.orch.rotate_server_certificate(&name("nope"), BOOT).unwrap_err(),
        Error::Store(n2d_store::StoreError::NoSuchMachine(_))
    ));

    k.create("h2").unwrap();
    let target = k.dir.path().join("elsewhere");
    std::fs::write(&target, b"not n2d's").unwrap();
    std::fs::remove_file(config_path(&k, "h2")).unwrap();
    std::os::unix::fs::symlink(&target, config_path(&k, "h2")).unwrap();
    let err = k.orch.rotate_server_certificate(&name("h2"), BOOT).unwrap_err();
    assert!(matches!(err, Error::CertificateFile { .. }), "{err:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"not n2d's", "written through a symlink");
}

#[test]
fn the_client_certificate_is_rotated_and_every_certificate_is_listed_with_its_expiry() {
    let k = kit();
    k.create("h1").unwrap();
    let certs = k.orch.home.certs_dir();
    let old =
        CertInfo::from_pem(&std::fs::read_to_string(certs.join(n2d_pki::CLIENT_CERT)).unwrap()).unwrap();
    let serial = k.orch.rotate_client_certificate().unwrap();
    let new =
        CertInfo::from_pem(&std::fs::read_to_string(certs.join(n2d_pki::CLIENT_CERT)).unwrap()).unwrap();
    assert_eq!(new.serial, serial);
    assert_ne!(new.serial, old.serial);

    std::fs::create_dir_all(k.orch.home.machine_dir(&name("broken"))).unwrap();
    std::fs::write(config_path(&k, "broken"), b"garbage").unwrap();
    // A FIFO in a machine's place: reported, not waited on.
    std::fs::create_dir_all(k.orch.home.machine_dir(&name("fifo"))).unwrap();
    let fifo = config_path(&k, "fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let listed = k.orch.certificates();
    let names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ca", "client", "broken", "fifo", "h1"]);
    let now = n2d_pki::unix_now();
    let days: Vec<Option<i64>> =
        listed.iter().map(|c| c.info.as_ref().ok().map(|i| i.days_left(now))).collect();
    assert!(days[0].is_some_and(|d| (3649..=3650).contains(&d)), "{days:?}");
    assert!(days[1].is_some_and(|d| (824..=825).contains(&d)));
    assert_eq!(days[2..4], [None, None], "a damaged config disk is reported for that machine only");
    assert!(listed.iter().all(|c| !c.expiring(now)));
    assert!(listed[4].expiring(now + 800 * 86_400));
}

#[test]
fn a_new_ca_comes_in_by_moving_the_old_one_aside_and_rotating_the_machines() {
    let k = kit();
    k.create("h1").unwrap();
    guest_reloads(&k);
    let certs = k.orch.home.certs_dir();
    let old_ca = std::fs::read_to_string(certs.join(n2d_pki::CA_CERT)).unwrap();
    std::fs::rename(&certs, certs.with_file_name("certs.old")).unwrap();
    assert!(matches!(k.orch.rotate_server_certificate(&name("h1"), BOOT).unwrap(), Rotated::Live { .. }));
    let new_ca = std::fs::read_to_string(certs.join(n2d_pki::CA_CERT)).unwrap();
    assert_ne!(new_ca, old_ca);
    // The guest gets the new CA with its certificate: it accepts the new client certificate.
    assert_eq!(config_of(&k, "h1").docker.tls.unwrap().ca_pem, new_ca);
    assert!(certs.join(n2d_pki::CLIENT_CERT).exists());
}

#[test]
fn an_engine_that_does_not_come_back_after_the_reload_is_reported_with_its_console() {
    let k = kit();
    k.create("h1").unwrap();
    k.vms().fail_boot("h1", BootFault::Timeout);
    let err = k.orch.rotate_server_certificate(&name("h1"), BOOT).unwrap_err();
    assert!(matches!(err, Error::Vm(VmError::ReadyTimeout { .. })), "{err:?}");
    assert!(k.vms().is_running("h1"), "the machine is left running for a look at it");
}
