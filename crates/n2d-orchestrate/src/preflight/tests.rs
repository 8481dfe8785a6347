use super::fake::{route, FakeHost};
use super::*;
use n2d_image::unshare::BuildUser;
use n2d_spec::machine::{DEFAULT_BRIDGE, USER_NETWORK};
use n2d_vm::accel::KvmDevice;
use std::net::Ipv4Addr;

fn checks(host: &FakeHost) -> Vec<Check> {
    run_checks(host, &Target::default())
}

/// The one check named `name`, after asserting that every other one is ok.
fn only(host: &FakeHost, name: &str) -> Check {
    let all = checks(host);
    for c in all.iter().filter(|c| c.name != name) {
        assert_eq!(c.status, Status::Ok, "{c}");
    }
    all.into_iter().find(|c| c.name == name).expect("check present")
}

fn assert_finding(c: &Check, status: Status, finding: &str, fix: &str) {
    assert_eq!(c.status, status, "{c}");
    assert!(c.finding.contains(finding), "{c}");
    assert!(c.fix.as_deref().unwrap_or_default().contains(fix), "{c}");
}

#[test]
fn all_ok_on_a_complete_host() {
    let all = checks(&FakeHost::default());
    let names: Vec<&str> = all.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "qemu",
            "kvm",
            "privileges",
            "iptables",
            "bridge",
            "disk",
            "image",
            "docker",
            "virtiofsd",
            "firewall"
        ]
    );
    for c in &all {
        assert_eq!(c.status, Status::Ok, "{c}");
        assert_eq!(c.fix, None);
    }
    assert_eq!(all[0].to_string(), "ok   qemu       QEMU 10.0.2 (qemu-system-x86_64), qemu-img");
    assert!(all[4].finding.contains("n2d0 will be created with 10.77.0.1/24"), "{}", all[4]);
}

#[test]
fn no_virtiofsd_fails_only_a_create_with_host_folders() {
    let host = FakeHost { virtiofsd: ToolState::Missing, ..Default::default() };
    let doctor = Target::default();
    let c = run_checks(&host, &doctor).into_iter().find(|c| c.name == "virtiofsd").unwrap();
    assert_finding(&c, Status::Warn, "not host folders (--mount)", "scripts/deps.sh");
    let mounts = Target { mounts: true, ..Target::default() };
    let c = run_checks(&host, &mounts).into_iter().find(|c| c.name == "virtiofsd").unwrap();
    assert_finding(&c, Status::Fail, "host folders (--mount) need it", "apt-get install virtiofsd");
}

#[test]
fn qemu_missing_fails() {
    let c = only(&FakeHost { qemu: None, ..Default::default() }, "qemu");
    assert_finding(
        &c,
        Status::Fail,
        "qemu-system-x86_64 is not installed",
        "apt-get install qemu-system-x86",
    );
    assert!(c.to_string().starts_with("FAIL qemu "), "{c}");
    assert!(c.to_string().contains(" — fix: install QEMU: scripts/deps.sh"), "{c}");
}

#[test]
fn qemu_img_missing_fails() {
    let c = only(&FakeHost { missing: vec!["qemu-img"], ..Default::default() }, "qemu");
    assert_finding(&c, Status::Fail, "qemu-img is not installed", "apt-get install qemu-utils");
}

#[test]
fn old_qemu_warns() {
    let host = FakeHost {
        qemu: Some("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)"),
        ..Default::default()
    };
    assert_finding(&only(&host, "qemu"), Status::Warn, "QEMU 7.2.19", "scripts/deps.sh");
}

#[test]
fn unparsable_qemu_version_warns() {
    let host = FakeHost { qemu: Some("something else\n"), ..Default::default() };
    assert_finding(&only(&host, "qemu"), Status::Warn, "version is unknown", "QEMU 10");
}

#[test]
fn no_vmx_flag_warns_with_the_reason() {
    let host = FakeHost { cpuinfo: "flags\t\t: fpu vme sse\n", ..Default::default() };
    let c = only(&host, "kvm");
    assert_finding(&c, Status::Warn, "no vmx/svm flag", "VT-x/AMD-V");
    assert!(c.finding.contains("TCG"), "{c}");
}

#[test]
fn unusable_dev_kvm_warns_with_the_reason() {
    let host = FakeHost { dev_kvm: KvmDevice::Missing, ..Default::default() };
    assert_finding(&only(&host, "kvm"), Status::Warn, "/dev/kvm is missing", "modprobe");
    // An ordinary user outside the kvm group is told to ask for it.
    let host = FakeHost { dev_kvm: KvmDevice::NoAccess, ..Default::default() };
    assert_finding(&only(&host, "kvm"), Status::Warn, "may not open /dev/kvm", "usermod -aG kvm");
}

#[test]
fn user_mode_needs_the_switch_but_no_privileges_or_iptables() {
    let target = Target { bridge: USER_NETWORK.into(), image: None, mounts: false };
    let host = FakeHost { euid: 1000, iptables: ToolState::Missing, ..Default::default() };
    let checks = run_checks(&host, &target);
    assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:?}");
    assert!(checks.iter().all(|c| c.name != "bridge" && c.name != "iptables"), "{checks:?}");
    let host = FakeHost { euid: 1000, missing: vec!["vde_switch"], ..Default::default() };
    let check = run_checks(&host, &target).into_iter().find(|c| c.name == "network").unwrap();
    assert_finding(&check, Status::Fail, "vde_switch is not installed", "apt-get install vde2");
}

#[test]
fn not_root_without_net_admin_fails() {
    // Image built, so only the privilege check cares.
    let host = FakeHost { euid: 1000, ..Default::default() };
    assert_finding(
        &only(&host, "privileges"),
        Status::Fail,
        "uid 1000 without CAP_NET_ADMIN",
        "run n2d as root",
    );
}

#[test]
fn not_root_with_ambient_net_admin_is_enough() {
    let host = FakeHost {
        euid: 1000,
        status: "CapEff:\t0000000000001000\nCapAmb:\t0000000000001000\n",
        ..Default::default()
    };
    let c = only(&host, "privileges");
    assert_eq!(c.status, Status::Ok, "{c}");
    assert!(c.finding.contains("CAP_NET_ADMIN"), "{c}");
}

#[test]
fn iptables_missing_warns() {
    let host = FakeHost { iptables: ToolState::Missing, ..Default::default() };
    assert_finding(&only(&host, "iptables"), Status::Warn, "no internet access", "apt-get install iptables");
}

#[test]
fn iptables_broken_warns() {
    let host = FakeHost {
        iptables: ToolState::Broken("Permission denied (you must be root)".into()),
        ..Default::default()
    };
    assert_finding(&only(&host, "iptables"), Status::Warn, "Permission denied", "nf_tables");
}

#[test]
fn a_run_dir_others_could_change_fails_the_bridge_check() {
    let host = FakeHost {
        run_dir: Some("refusing /run/n2d: writable by others (mode 1777)".into()),
        ..FakeHost::default()
    };
    assert_finding(&only(&host, "bridge"), Status::Fail, "writable by others", "chmod go-w");
    // User-mode machines keep no host-wide state: the run directory does not matter to them.
    let user = run_checks(&host, &Target { bridge: USER_NETWORK.into(), image: None, mounts: false });
    assert!(user.iter().all(|c| !c.finding.contains("writable by others")), "{user:?}");
}

#[test]
fn subnet_clash_with_a_host_route_fails() {
    let mut host = FakeHost::default();
    host.routes.push(route("tun0", [10, 0, 0, 0], 8));
    let c = only(&host, "bridge");
    assert_finding(&c, Status::Fail, "10.77.0.0/24 overlaps the host route 10.0.0.0/8 on tun0", "--network");
}

#[test]
fn clash_uses_the_recorded_subnet() {
    let mut host = FakeHost { recorded: Some((Ipv4Addr::new(192, 168, 1, 1), 24)), ..Default::default() };
    host.routes.retain(|r| r.dev != "n2d0");
    assert_finding(
        &only(&host, "bridge"),
        Status::Fail,
        "192.168.1.0/24 overlaps the host route 192.168.1.0/24 on eth0",
        "--network",
    );
}

#[test]
fn the_bridges_own_route_is_no_clash() {
    let mut host = FakeHost::default();
    host.links.push(("n2d0", Some((Ipv4Addr::new(10, 77, 0, 1), 24))));
    let c = only(&host, "bridge");
    assert!(c.finding.contains("n2d0 is up with 10.77.0.1/24"), "{c}");
}

#[test]
fn a_network_that_is_not_a_bridge_fails() {
    let host = FakeHost::default();
    for dev in ["eth0", "lo"] {
        let c = run_checks(&host, &Target { bridge: dev.into(), image: None, mounts: false });
        let c = c.iter().find(|c| c.name == "bridge").unwrap();
        assert_finding(c, Status::Fail, "link, not a bridge", "--network");
    }
}

#[test]
fn ip_missing_fails() {
    let host = FakeHost { missing: vec!["ip"], ..Default::default() };
    assert_finding(&only(&host, "bridge"), Status::Fail, "`ip` is not installed", "apt-get install iproute2");
}

#[test]
fn a_named_bridge_must_exist_and_have_an_address() {
    let mut host = FakeHost::default();
    let target = |b: &str| Target { bridge: b.into(), image: None, mounts: false };
    let c = run_checks(&host, &target("br7")).remove(4);
    assert_finding(&c, Status::Fail, "bridge br7 does not exist", "ip link add br7 type bridge");
    host.links.push(("br7", None));
    let c = run_checks(&host, &target("br7")).remove(4);
    assert_finding(&c, Status::Fail, "br7 has no IPv4 address", "ip addr add 10.78.0.1/24 dev br7");
    host.links[1].1 = Some((Ipv4Addr::new(10, 78, 0, 1), 24));
    assert_eq!(run_checks(&host, &target("br7"))[4].status, Status::Ok);
}

#[test]
fn too_little_disk_fails_and_little_warns() {
    let host = FakeHost { free: Ok(512 << 20), ..Default::default() };
    assert_finding(
        &only(&host, "disk"),
        Status::Fail,
        "only 0.5 GiB free under /root/.local/share",
        "N2D_HOME",
    );
    let host = FakeHost { free: Ok(3 << 30), ..Default::default() };
    assert_finding(&only(&host, "disk"), Status::Warn, "3.0 GiB free", "N2D_HOME");
    let host = FakeHost { free: Err("Permission denied".into()), ..Default::default() };
    assert_finding(&only(&host, "disk"), Status::Warn, "Permission denied", "N2D_HOME");
}

#[test]
fn no_image_is_fine_when_one_can_be_built() {
    let host = FakeHost { images: vec![], ..Default::default() };
    let c = only(&host, "image");
    assert_eq!(c.status, Status::Ok, "{c}");
    assert!(c.finding.contains("create builds one first"), "{c}");
}

#[test]
fn no_image_and_no_build_tools_fails() {
    let host = FakeHost { images: vec![], missing: vec!["mmdebstrap", "mkfs.erofs"], ..Default::default() };
    assert_finding(
        &only(&host, "image"),
        Status::Fail,
        "needs mmdebstrap (mmdebstrap), mkfs.erofs (erofs-utils)",
        "apt-get install mmdebstrap erofs-utils",
    );
}

#[test]
fn no_image_and_an_unusable_init_override_fails() {
    let host = FakeHost {
        images: vec![],
        init: Err("/tmp/n2d-init: it is dynamically linked".into()),
        ..Default::default()
    };
    assert_finding(&only(&host, "image"), Status::Fail, "dynamically linked", "N2D_INIT");
}

/// An ordinary user on bridge networking (ambient CAP_NET_ADMIN), with no image yet.
fn user_without_image() -> FakeHost {
    FakeHost { images: vec![], euid: 1000, status: "CapAmb:\t0000000000001000\n", ..Default::default() }
}

#[test]
fn no_image_and_not_root_builds_with_uidmap_and_subordinate_ids() {
    let c = only(&user_without_image(), "image");
    assert_eq!(c.status, Status::Ok, "{c}");
    assert!(c.finding.contains("uidmap and subordinate ids for ann"), "{c}");
}

#[test]
fn no_image_and_not_root_without_uidmap_fails() {
    let host = FakeHost { missing: vec!["newuidmap"], ..user_without_image() };
    assert_finding(
        &only(&host, "image"),
        Status::Fail,
        "as an ordinary user needs newuidmap, which is not installed",
        "ask an administrator to install uidmap (apt-get install uidmap)",
    );
}

#[test]
fn no_image_and_not_root_without_subordinate_ids_fails() {
    let mut host = user_without_image();
    host.user.subgid = "bob:100000:65536\n".into();
    let c = only(&host, "image");
    assert_finding(
        &c,
        Status::Fail,
        "/etc/subgid gives ann no range of at least 65536",
        "ask an administrator",
    );
    assert!(c.fix.unwrap().contains("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ann"));
}

#[test]
fn an_image_built_needs_no_build_checks() {
    let host = FakeHost { missing: vec!["newuidmap"], user: BuildUser::default(), ..user_without_image() };
    let host = FakeHost { images: vec!["0123456789abcdef0123".into()], ..host };
    assert_eq!(only(&host, "image").status, Status::Ok);
}

#[test]
fn a_named_image_must_be_built() {
    let host = FakeHost::default();
    let target = |id: &str| Target { bridge: DEFAULT_BRIDGE.into(), image: Some(id.into()), mounts: false };
    assert_eq!(run_checks(&host, &target("0123"))[6].status, Status::Ok);
    assert_finding(&run_checks(&host, &target("dead"))[6], Status::Fail, "no image dead", "n2d image ls");
}

#[test]
fn docker_cli_missing_warns() {
    let host = FakeHost { docker: ToolState::Missing, ..Default::default() };
    assert_finding(&only(&host, "docker"), Status::Warn, "no docker CLI", "apt-get install docker.io");
}

#[test]
fn proc_net_route_is_parsed() {
    let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                n2d0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
    assert_eq!(
        parse_proc_net_route(text),
        vec![
            route("eth0", [0, 0, 0, 0], 0),
            route("eth0", [192, 0, 2, 0], 24),
            route("n2d0", [10, 77, 0, 0], 24)
        ]
    );
}

#[test]
fn not_ready_lists_the_failing_lines() {
    let host = FakeHost { qemu: None, free: Ok(1), ..Default::default() };
    let failed: Vec<Check> = checks(&host).into_iter().filter(|c| c.status == Status::Fail).collect();
    let msg = NotReady(failed).to_string();
    assert!(msg.contains("\n  FAIL qemu "), "{msg}");
    assert!(msg.contains("\n  FAIL disk "), "{msg}");
}

/// `iptables -S` of a host where n2d installed the chain of n2d0 (uplink eth0), exposing
/// `exposed`, with the FORWARD policy `policy`.
fn filter_with_n2d(policy: &str, exposed: &[Ipv4Addr]) -> String {
    let (forward, _) = n2d_net::nat::rules("n2d0", "10.77.0.0/24", Some("eth0"), exposed);
    let mut text =
        format!("-P INPUT ACCEPT\n-P FORWARD {policy}\n-P OUTPUT ACCEPT\n-N DOCKER-USER\n-N N2D-FWD-n2d0\n");
    text.push_str("-A FORWARD -j DOCKER-USER\n-A FORWARD -j N2D-FWD-n2d0\n");
    for rule in forward {
        text.push_str(&format!("-A N2D-FWD-n2d0 {}\n", rule.join(" ")));
    }
    text
}

#[test]
fn firewall_reports_the_policy_and_n2ds_chains() {
    let c = only(&FakeHost::default(), "firewall");
    assert!(c.finding.contains("FORWARD policy ACCEPT"), "{c}");
    assert!(c.finding.contains("n2d0 gets N2D-FWD-n2d0 with its first machine"), "{c}");

    let host = FakeHost {
        filter: Ok(filter_with_n2d("DROP", &[Ipv4Addr::new(10, 77, 0, 5)])),
        ..Default::default()
    };
    let c = only(&host, "firewall");
    assert!(c.finding.contains("FORWARD policy DROP"), "{c}");
    assert!(c.finding.contains("N2D-FWD-n2d0 (outbound through eth0, replies, new connections from other networks dropped, open to other networks (--expose): 10.77.0.5)"), "{c}");

    // A bridge n2d did not create gets no rules, and doctor says so.
    let host = FakeHost { filter: Ok(filter_with_n2d("ACCEPT", &[])), ..Default::default() };
    let mut host = host;
    host.links.push(("br7", Some((Ipv4Addr::new(10, 78, 0, 1), 24))));
    let c = run_checks(&host, &Target { bridge: "br7".into(), image: None, mounts: false }).pop().unwrap();
    assert_eq!(c.status, Status::Ok, "{c}");
    assert!(c.finding.contains("none for br7: n2d adds no rules to a bridge it did not create"), "{c}");
}

#[test]
fn an_incomplete_or_unjumped_n2d_chain_warns() {
    let whole = filter_with_n2d("ACCEPT", &[]);
    // Hostile or stale: the drops gone (a flush by hand), a rule after them,
    // the FORWARD jump gone.
    let no_drops: String =
        whole.lines().filter(|l| !l.ends_with("-j DROP")).map(|l| format!("{l}\n")).collect();
    let after = format!("{whole}-A N2D-FWD-n2d0 -j ACCEPT\n");
    let unjumped = whole.replace("-A FORWARD -j N2D-FWD-n2d0\n", "");
    for filter in [no_drops, after, unjumped] {
        let host = FakeHost { filter: Ok(filter.clone()), ..Default::default() };
        assert_finding(
            &only(&host, "firewall"),
            Status::Warn,
            "N2D-FWD-n2d0 is incomplete",
            "start or create a machine on n2d0",
        );
    }
    let host = FakeHost { filter: Err("iptables: Permission denied".into()), ..Default::default() };
    assert_finding(&only(&host, "firewall"), Status::Warn, "Permission denied", "apt-get install iptables");
}

mod orchestrated {
    use super::*;

    #[test]
    fn doctor_as_root_checks_the_bridge_and_notes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (orch, said) = crate::tests::recording_orchestrator(dir.path());
        let report = orch.doctor(&FakeHost::default(), &DoctorRequest::default()).unwrap();
        assert_eq!(report.notes, Vec::<String>::new());
        assert_eq!(report.checks, checks(&FakeHost::default()));
        assert_eq!(report.failed(), 0);
        assert!(said.lines().is_empty(), "{:?}", said.lines());
    }

    #[test]
    fn doctor_not_root_defaults_to_user_mode_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (orch, _) = crate::tests::recording_orchestrator(dir.path());
        let host = FakeHost { euid: 1000, ..Default::default() };
        let report = orch.doctor(&host, &DoctorRequest::default()).unwrap();
        assert_eq!(report.notes, [USER_NETWORK_NOTE]);
        assert!(report.checks.iter().any(|c| c.name == "network"), "{:?}", report.checks);
        // --network n2d0 as an ordinary user: no note, and the privilege check fails.
        let request = DoctorRequest { repair: false, network: Some(DEFAULT_BRIDGE.into()) };
        let report = orch.doctor(&host, &request).unwrap();
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        assert_eq!(report.failed(), 1, "{:?}", report.checks);
        // Ambient CAP_NET_ADMIN is as good as root.
        let host = FakeHost { euid: 1000, status: "CapAmb:\t0000000000001000\n", ..Default::default() };
        assert_eq!(default_network(&host), (DEFAULT_BRIDGE.to_string(), None));
    }

    #[test]
    fn doctor_repair_with_nothing_left_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (orch, _) = crate::tests::recording_orchestrator(dir.path());
        let request = DoctorRequest { repair: true, network: None };
        let host = FakeHost { euid: 1000, qemu: None, ..Default::default() };
        let report = orch.doctor(&host, &request).unwrap();
        assert_eq!(report.notes, [NOTHING_TO_REPAIR, USER_NETWORK_NOTE]);
        assert_eq!(report.failed(), 1);
    }

    #[test]
    fn preflight_stops_on_a_failure_and_says_the_warnings_but_kvms() {
        let dir = tempfile::tempdir().unwrap();
        let (orch, said) = crate::tests::recording_orchestrator(dir.path());
        let host = FakeHost { qemu: None, free: Ok(1), ..Default::default() };
        let err = orch.preflight(&host, &Target::default()).unwrap_err();
        let names: Vec<&str> = err.0.iter().map(|c| c.name).collect();
        assert_eq!(names, ["qemu", "disk"]);
        assert!(said.lines().is_empty(), "nothing said on a failure: {:?}", said.lines());

        let host = FakeHost { dev_kvm: KvmDevice::Missing, docker: ToolState::Missing, ..Default::default() };
        orch.preflight(&host, &Target::default()).unwrap();
        assert_eq!(
            said.lines(),
            ["warning: no docker CLI: the VMs work, but you need it to use their endpoints (fix: apt-get install docker.io (or Docker's docker-ce-cli))"]
        );
    }
}

mod system_probe {
    use super::*;
    use n2d_exec::{Cmd, ExecError, RecordingRunner, Runner};
    use n2d_image::GuestInit;
    use n2d_net::host::HostNet;
    use n2d_store::Home;

    fn no_init() -> Result<GuestInit, String> {
        Err("cannot read the guest init /x: No such file or directory".into())
    }

    fn not_an_elf() -> Result<GuestInit, String> {
        Ok(GuestInit { bytes: b"#!/bin/sh\n".to_vec(), source: "/tmp/init.sh".into() })
    }

    /// Checks `f` against a probe on `runner`, with a home and network state in a fresh directory.
    fn with_probe(runner: &dyn Runner, init: GuestInitSource, f: impl FnOnce(&SystemProbe)) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        let net = HostNet::at(dir.path().join("run"), "netns-1", dir.path().join("ip_forward"));
        let search_path = n2d_exec::SearchPath::default();
        let probe = SystemProbe {
            runner,
            qemu_binary: "/opt/qemu",
            no_kvm: false,
            search_path: &search_path,
            home: &home,
            net: &net,
            guest_init: init,
        };
        f(&probe)
    }

    #[test]
    fn iptables_must_answer_for_the_nat_table_too() {
        let r = RecordingRunner::default();
        r.answer("--version", Ok("iptables v1.8.9 (nf_tables)\nmore\n"));
        with_probe(&r, &no_init, |p| {
            assert_eq!(p.iptables(), ToolState::Works("iptables v1.8.9 (nf_tables)".into()))
        });
        assert_eq!(r.calls(), ["iptables --version", "iptables -w 5 -t nat -S POSTROUTING"]);

        let r = RecordingRunner::default();
        r.answer("--version", Ok("iptables v1.8.9 (nf_tables)\n"));
        r.answer("-t nat", Err("Permission denied (you must be root)"));
        with_probe(&r, &no_init, |p| match p.iptables() {
            ToolState::Broken(why) => assert!(why.contains("Permission denied"), "{why}"),
            other => panic!("{other:?}"),
        });

        struct NothingInstalled;
        impl Runner for NothingInstalled {
            fn run(&self, cmd: &Cmd) -> Result<Vec<u8>, ExecError> {
                Err(ExecError::NotInstalled { program: cmd.program.clone(), package: cmd.package })
            }
        }
        with_probe(&NothingInstalled, &no_init, |p| {
            assert_eq!(p.iptables(), ToolState::Missing);
            assert_eq!(p.docker(), ToolState::Missing);
            assert_eq!(p.qemu_version_output(), None);
            assert!(p.filter_rules().unwrap_err().contains("is not installed"));
        });
    }

    #[test]
    fn qemu_is_the_orchestrators_binary() {
        let r = RecordingRunner::default();
        r.answer("--version", Ok("QEMU emulator version 10.0.2\n"));
        with_probe(&r, &no_init, |p| {
            assert_eq!(p.qemu_binary(), "/opt/qemu");
            assert_eq!(p.qemu_version_output().as_deref(), Some("QEMU emulator version 10.0.2\n"));
        });
        assert_eq!(r.calls(), ["/opt/qemu --version"]);
    }

    #[test]
    fn a_guest_init_that_cannot_be_had_or_run_says_why() {
        let r = RecordingRunner::default();
        with_probe(&r, &no_init, |p| assert_eq!(p.guest_init(), no_init().map(|i| i.source)));
        with_probe(&r, &not_an_elf, |p| {
            let why = p.guest_init().unwrap_err();
            assert!(why.starts_with("/tmp/init.sh: "), "{why}");
        });
    }

    #[test]
    fn a_home_and_run_dir_not_made_yet_are_fine() {
        let r = RecordingRunner::default();
        with_probe(&r, &no_init, |p| {
            assert_eq!(p.run_dir_problem(), None);
            assert!(p.images().is_empty());
            assert_eq!(p.recorded_subnet("n2d0"), None);
            // The nearest directory that exists is measured.
            let (dir, _) = p.free_space().unwrap();
            assert!(p.home.root().starts_with(&dir), "{}", dir.display());
        });
    }
}
