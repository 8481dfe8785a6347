//! The failure paths of create, start, rm, swarm create and scale, against the fakes: a host
//! that keeps links and chains (`FakeHost`), a hypervisor that keeps a set of running machines
//! (`FakeHypervisor`) and an in-memory swarm (`Cluster`). Each failed create must leave nothing
//! behind: no machine directory, no lease or bridge in the host-wide state, no tap on the host,
//! no VM running.

use crate::swarm::SwarmPlan;
use crate::{Error, Orchestrator, Quiet, Timing};
use n2d_exec::{Cmd, ExecError, Runner};
use n2d_net::host::HostNet;
use n2d_net::testing::FakeHost;
use n2d_spec::machine::{ByteSize, MachineName, MachineSpec};
use n2d_spec::swarm::{SwarmName, SwarmSpec};
use n2d_store::Home;
use n2d_store::KillPoints;
use n2d_swarm::fake::Cluster;
use n2d_swarm::RemoveTimeouts;
use n2d_vm::fake::{BootFault, FakeHypervisor};
use n2d_vm::{BootFailure, VmError, VmState};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An orchestrator over the plain fakes (a recording runner, no host state yet) in `dir`, and
/// what it said: for tests of one module that need no running machines.
pub(crate) fn recording_orchestrator(
    dir: &std::path::Path,
) -> (Orchestrator<n2d_exec::RecordingRunner, FakeHypervisor, Cluster>, Arc<Quiet>) {
    let forward = dir.join("ip_forward");
    std::fs::write(&forward, "0\n").unwrap();
    let said = Arc::new(Quiet::default());
    let orch = Orchestrator {
        home: Home::at(dir.join("home")),
        net: HostNet::at(dir.join("run"), "netns-1", &forward),
        runner: n2d_exec::RecordingRunner::default(),
        hypervisor: FakeHypervisor::new(),
        docker: Cluster::new(),
        progress: Box::new(said.clone()),
        timing: Timing::default(),
        cancel: Arc::new(AtomicBool::new(false)),
        kill: KillPoints::none(),
        search_path: n2d_exec::SearchPath::default(),
        // Cold boots unless a test is about warm starts (`tests/warm.rs`).
        cold: AtomicBool::new(true),
        template_gate: Default::default(),
        ssh: Arc::new(crate::remote::fake::FakeSsh::default()),
        cert_issuer: Default::default(),
    };
    (orch, said)
}

const IMAGE: &str = "feedface00112233445566778899aabbccddeeff00112233445566778899aabb";

/// The fake host for `ip`/`iptables`, plus `qemu-img`, which makes the disk file (or fails).
struct TestRunner {
    host: FakeHost,
    fail_qemu_img: Mutex<bool>,
    /// `qemu-img` says it worked but makes nothing.
    qemu_img_makes_nothing: Mutex<bool>,
    /// How many times `vde_switch` was started.
    switch_starts: Mutex<usize>,
    /// The stand-in switches started, ended with the test.
    switches: Mutex<Vec<std::process::Child>>,
    /// Every `qemu-img` command line.
    qemu_img: Mutex<Vec<String>>,
}

impl Drop for TestRunner {
    fn drop(&mut self) {
        for mut child in self.switches.lock().unwrap().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Runner for TestRunner {
    fn run(&self, cmd: &Cmd) -> Result<Vec<u8>, ExecError> {
        if cmd.program == "vde_switch" {
            // A stand-in switch: a process named vde_switch serving the directory it is given,
            // which opens its control socket there and writes its pid file.
            use std::os::unix::process::CommandExt;
            let arg = |flag: &str| cmd.args.iter().skip_while(|a| *a != flag).nth(1).expect(flag).clone();
            let (dir, pid_file) = (arg("--sock"), arg("--pidfile"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(std::path::Path::new(&dir).join("ctl"), b"").unwrap();
            let child = std::process::Command::new("sh")
                .arg0("vde_switch")
                .args(["-c", "echo $$ > \"$1\"; while :; do sleep 1; done", "sh"])
                .arg(pid_file)
                .arg("--sock")
                .arg(dir)
                .spawn()
                .unwrap();
            self.switches.lock().unwrap().push(child);
            *self.switch_starts.lock().unwrap() += 1;
            return Ok(Vec::new());
        }
        if cmd.program != "qemu-img" {
            return self.host.run(cmd);
        }
        self.qemu_img.lock().unwrap().push(cmd.display());
        if *self.fail_qemu_img.lock().unwrap() {
            return Err(ExecError::Failed {
                command: cmd.display(),
                status: "exit status: 1".into(),
                stderr_tail: "qemu-img: No space left on device".into(),
            });
        }
        if !*self.qemu_img_makes_nothing.lock().unwrap() {
            let path = cmd.args.iter().rev().nth(1).expect("qemu-img create ... PATH SIZE");
            std::fs::write(path, b"QFI\xfb").unwrap();
        }
        Ok(Vec::new())
    }
}

type TestOrchestrator = Orchestrator<TestRunner, FakeHypervisor, Cluster>;

struct Kit {
    dir: tempfile::TempDir,
    orch: TestOrchestrator,
    cluster: Cluster,
    said: Arc<Quiet>,
}

fn kit() -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let forward = dir.path().join("ip_forward");
    std::fs::write(&forward, "0\n").unwrap();
    let home = Home::at(dir.path().join("home")).with_lock_timeout(Duration::from_secs(5));
    let net =
        HostNet::at(dir.path().join("run"), "netns-1", &forward).with_lock_timeout(Duration::from_secs(5));
    // An image in the store: only its manifest is read (the fake hypervisor boots nothing).
    let image_dir = home.images_dir().join(IMAGE);
    std::fs::create_dir_all(&image_dir).unwrap();
    let manifest = n2d_image::ImageManifest {
        id: IMAGE.into(),
        recipe: n2d_image::Recipe::docker_host("0".repeat(64)),
        kernel_release: "6.12.0".into(),
        created_unix: 1,
        kernel_bytes: 1,
        initrd_bytes: 1,
        rootfs_bytes: 1,
        rootfs_unpacked_bytes: 1,
        recipe_id: "0".repeat(64),
        packages: Vec::new(),
        source_date_epoch: 0,
        debs: Vec::new(),
        init_sha256: String::new(),
        artifacts_sha256: String::new(),
    };
    std::fs::write(image_dir.join(n2d_image::MANIFEST_FILE), serde_json::to_vec(&manifest).unwrap()).unwrap();
    let cluster = Cluster::new();
    let said = Arc::new(Quiet::default());
    let fast = RemoveTimeouts { drain: Duration::from_millis(200), down: Duration::from_millis(200) };
    let orch = Orchestrator {
        home,
        net,
        runner: TestRunner {
            host: FakeHost::new(Some("eth0")),
            fail_qemu_img: Mutex::new(false),
            qemu_img_makes_nothing: Mutex::new(false),
            switch_starts: Mutex::new(0),
            switches: Mutex::default(),
            qemu_img: Mutex::default(),
        },
        hypervisor: FakeHypervisor::new(),
        docker: cluster.clone(),
        progress: Box::new(said.clone()),
        timing: Timing {
            ping_backoff: Duration::from_millis(1),
            form_request_secs: 5,
            remove: fast,
            evict: fast,
            restart: n2d_swarm::RestartTimeouts {
                drain: Duration::from_secs(2),
                ready: Duration::from_secs(2),
            },
        },
        cancel: Arc::new(AtomicBool::new(false)),
        kill: KillPoints::none(),
        search_path: n2d_exec::SearchPath::default(),
        // Cold boots unless a test is about warm starts (`tests/warm.rs`).
        cold: AtomicBool::new(true),
        template_gate: Default::default(),
        ssh: Arc::new(crate::remote::fake::FakeSsh::default()),
        cert_issuer: Default::default(),
    };
    Kit { dir, orch, cluster, said }
}

fn name(n: &str) -> MachineName {
    n.parse().unwrap()
}

fn spec(n: &str) -> MachineSpec {
    MachineSpec {
        name: name(n),
        cpus: 1,
        memory: ByteSize(512 << 20),
        disk: ByteSize(1 << 30),
        bridge: "n2d0".into(),
        addresses: None,
        image: IMAGE.into(),
        insecure_tcp: false,
        labels: Default::default(),
        publish: Vec::new(),
        expose: false,
        mounts: Vec::new(),
    }
}

const BOOT: Duration = Duration::from_secs(5);

impl Kit {
    fn host(&self) -> &FakeHost {
        &self.orch.runner.host
    }

    fn vms(&self) -> &FakeHypervisor {
        &self.orch.hypervisor
    }

    /// Nothing of machine `n` is left: directory, lease, tap, VM.
    fn assert_gone(&self, n: &str) {
        assert!(!self.orch.home.machine_dir(&name(n)).exists(), "{n}'s directory is left");
        let state = self.orch.net.snapshot().unwrap();
        let leases: Vec<_> = state.bridges.values().flat_map(|b| b.leases.values()).collect();
        assert!(leases.iter().all(|l| l.machine != n), "{n}'s lease is left: {leases:?}");
        let taps: Vec<String> = self.host().links().into_iter().filter(|l| l.starts_with("n2dt")).collect();
        let held: BTreeSet<String> = leases.iter().map(|l| l.tap.clone()).collect();
        assert!(taps.iter().all(|t| held.contains(t)), "a tap no lease holds is left: {taps:?}");
        assert!(!self.vms().is_running(n), "{n}'s VM is still running");
    }

    /// The host as it was before n2d: no machine, no bridge, chains, state file or VM.
    fn assert_host_clean(&self) {
        assert_eq!(self.host().links(), BTreeSet::from(["eth0".to_string(), "lo".to_string()]));
        assert_eq!(self.host().chain("filter N2D-FWD-n2d0"), None);
        assert_eq!(self.host().chain("nat N2D-NAT-n2d0"), None);
        assert!(!self.orch.net.state_file().exists(), "host-wide state left");
        assert_eq!(std::fs::read_to_string(self.dir.path().join("ip_forward")).unwrap().trim(), "0");
        assert!(self.vms().running().is_empty(), "VMs left running: {:?}", self.vms().running());
        assert!(self.orch.home.list_machines().is_empty(), "machines left");
    }

    fn create(&self, n: &str) -> Result<n2d_store::MachineRecord, Error> {
        self.orch.create_machine(&spec(n), None, BOOT)
    }
}

/// A create whose step fails leaves nothing, and the error is the step's.
fn create_fails(k: &Kit, n: &str, check: impl Fn(&Error) -> bool) {
    let err = k.create(n).unwrap_err();
    assert!(check(&err), "unexpected error: {err:?}");
    k.assert_gone(n);
    k.assert_host_clean();
}

#[test]
fn a_create_that_works_leaves_a_running_machine_on_its_lease() {
    let k = kit();
    let rec = k.create("h1").unwrap();
    assert_eq!(rec.ip, Ipv4Addr::new(10, 77, 0, 2));
    assert!(k.vms().is_running("h1"));
    assert!(k.host().links().contains(&rec.tap));
    assert_eq!(k.vms().events(), ["start h1", "wait_ready h1"]);
    assert_eq!(k.cluster.count_events("ping h1"), 1);
    // The disk holds the node's swarm keys: private whatever qemu-img did.
    let mode = std::fs::metadata(k.orch.home.machine_dir(&name("h1")).join("data.qcow2")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    k.orch.remove_machine(&name("h1"), true).unwrap();
    k.assert_gone("h1");
    k.assert_host_clean();
}

#[test]
fn an_exposed_machine_is_open_while_it_lives_and_closed_by_rm() {
    let k = kit();
    let mut s = spec("h1");
    s.expose = true;
    let rec = k.orch.create_machine(&s, None, BOOT).unwrap();
    assert!(rec.spec.expose);
    let open = format!("-d {}/32 -o n2d0 -j ACCEPT", rec.ip);
    let chain = || k.host().chain("filter N2D-FWD-n2d0").unwrap_or_default();
    assert!(chain().contains(&open), "{:?}", chain());
    let closed = k.create("h2").unwrap();
    assert!(!chain().iter().any(|r| r.contains(&format!("{}/32", closed.ip))), "{:?}", chain());
    // A start after the host lost its links and chains (a reboot) opens it again.
    k.orch.stop_machine(&name("h1"), Duration::from_secs(1)).unwrap();
    k.host().set_chain("filter N2D-FWD-n2d0", &[]);
    assert!(k.orch.start_machine(&name("h1"), BOOT).unwrap());
    assert!(chain().contains(&open) && chain().contains(&"-i n2d0 -j DROP".to_string()), "{:?}", chain());
    k.orch.remove_machine(&name("h1"), true).unwrap();
    assert!(!chain().contains(&open), "{:?}", chain());
    assert!(chain().contains(&"-o n2d0 -j DROP".to_string()));
}

#[test]
fn create_fails_on_the_tap_and_leaves_nothing() {
    let k = kit();
    k.host().fail_on("tuntap");
    create_fails(&k, "h1", |e| matches!(e, Error::Net(n2d_net::NetError::CreateTap { .. })));
}

#[test]
fn create_fails_on_a_taken_address_and_leaves_nothing_of_its_own() {
    let k = kit();
    k.create("h1").unwrap();
    let mut s = spec("h2");
    s.addresses = Some("10.77.0.2".parse().unwrap());
    let err = k.orch.create_machine(&s, None, BOOT).unwrap_err();
    assert!(matches!(err, Error::Net(n2d_net::NetError::AddressTaken { .. })) && err.is_usage(), "{err:?}");
    k.assert_gone("h2");
    assert!(k.vms().is_running("h1"));
}

#[test]
fn create_fails_on_the_config_disk_and_leaves_nothing() {
    // The CA vouches only for private addresses: a bridge on a public subnet fails the
    // certificate, after the lease and tap were taken.
    let k = kit();
    k.host().add_link("br9", "bridge", Some((Ipv4Addr::new(198, 51, 100, 1), 24)));
    let mut s = spec("h1");
    s.bridge = "br9".into();
    s.addresses = Some("198.51.100.10-198.51.100.20".parse().unwrap());
    let err = k.orch.create_machine(&s, None, BOOT).unwrap_err();
    assert!(matches!(err, Error::Pki(_)), "{err:?}");
    k.assert_gone("h1");
    // The user's bridge stays; nothing of n2d's is on it.
    assert!(k.host().links().contains("br9"));
    assert!(!k.host().links().iter().any(|l| l.starts_with("n2dt")));
    assert!(
        !k.orch.net.state_file().exists() || k.orch.net.snapshot().unwrap().bridges["br9"].leases.is_empty()
    );
}

#[test]
fn create_fails_on_the_data_disk_and_leaves_nothing() {
    let k = kit();
    *k.orch.runner.fail_qemu_img.lock().unwrap() = true;
    create_fails(&k, "h1", |e| {
        matches!(e, Error::DataDisk(_)) && e.to_string() == "cannot create the data disk"
    });
}

#[test]
fn create_fails_when_the_data_disk_cannot_be_made_private_and_leaves_nothing() {
    let k = kit();
    *k.orch.runner.qemu_img_makes_nothing.lock().unwrap() = true;
    create_fails(&k, "h1", |e| matches!(e, Error::DataDiskMode(_)));
}

#[test]
fn create_fails_when_the_image_is_gone_and_leaves_nothing() {
    let k = kit();
    let mut s = spec("h1");
    s.image = "0000dead".into();
    let err = k.orch.create_machine(&s, None, BOOT).unwrap_err();
    assert!(matches!(err, Error::Image(n2d_image::ImageError::NotFound(_))), "{err:?}");
    k.assert_gone("h1");
    k.assert_host_clean();
}

#[test]
fn create_fails_when_qemu_refuses_to_start_and_leaves_nothing() {
    let k = kit();
    k.vms().fail_start("h1");
    create_fails(&k, "h1", |e| matches!(e, Error::Vm(VmError::Start { .. })));
}

#[test]
fn create_fails_on_a_boot_timeout_and_kills_the_vm() {
    let k = kit();
    k.vms().fail_boot("h1", BootFault::Timeout);
    create_fails(&k, "h1", |e| matches!(e, Error::Vm(VmError::ReadyTimeout { .. })));
    assert_eq!(k.vms().events(), ["start h1", "wait_ready h1", "kill h1"]);
}

#[test]
fn create_fails_at_once_on_a_deterministic_boot_failure() {
    let k = kit();
    k.vms().fail_boot("h1", BootFault::Exits(BootFailure::Deterministic("No working init found".into())));
    create_fails(&k, "h1", |e| matches!(e, Error::Vm(VmError::ExitedDuringBoot { .. })));
    assert_eq!(k.vms().count("start h1"), 1, "a deterministic failure is not retried");
}

#[test]
fn the_emulation_race_is_retried_once_then_reported() {
    let k = kit();
    // Once: the second boot works.
    k.vms().fail_boot("h1", BootFault::Exits(BootFailure::EmulationRace));
    k.create("h1").unwrap();
    assert_eq!(k.vms().count("start h1"), 2);
    assert!(k.said.lines().iter().any(|l| l.contains("booting it again")), "{:?}", k.said.lines());
    // Twice: reported, nothing left.
    for _ in 0..2 {
        k.vms().fail_boot("h2", BootFault::Exits(BootFailure::EmulationRace));
    }
    let err = k.create("h2").unwrap_err();
    assert!(matches!(err, Error::Vm(VmError::ExitedDuringBoot { .. })), "{err:?}");
    assert_eq!(k.vms().count("start h2"), 2, "retried once only");
    k.assert_gone("h2");
}

#[test]
fn create_interrupted_during_boot_rolls_back_and_exits_130() {
    let k = kit();
    k.vms().fail_boot("h1", BootFault::Interrupted);
    create_fails(&k, "h1", |e| e.is_interrupted());
}

#[test]
fn create_fails_when_docker_does_not_answer_and_kills_the_vm() {
    let k = kit();
    k.cluster.fail("h1", "ping");
    create_fails(&k, "h1", |e| {
        matches!(e, Error::DockerUnreachable { .. })
            && e.to_string() == "h1's Docker engine is up but does not answer on tcp://10.77.0.2:2376"
    });
    assert_eq!(k.cluster.count_events("ping h1"), 5, "five tries");
    assert!(k.vms().events().contains(&"kill h1".to_string()));
}

#[test]
fn create_fails_when_no_docker_client_can_be_made_and_leaves_nothing() {
    let k = kit();
    k.cluster.fail("h1", "connect");
    create_fails(
        &k,
        "h1",
        |e| matches!(e, Error::DockerUnreachable { source, .. } if matches!(**source, Error::Connect { .. })),
    );
}

#[test]
fn a_failed_create_leaves_the_other_machines_and_the_bridge() {
    let k = kit();
    let h1 = k.create("h1").unwrap();
    k.vms().fail_start("h2");
    k.create("h2").unwrap_err();
    k.assert_gone("h2");
    assert!(k.host().links().contains("n2d0") && k.host().links().contains(&h1.tap));
    assert!(k.vms().is_running("h1"));
    // The name is free again.
    assert!(k.orch.check_new_machine(&spec("h2")).is_ok());
}

#[test]
fn an_existing_name_is_refused_before_anything_is_made() {
    let k = kit();
    k.create("h1").unwrap();
    let err = k.create("h1").unwrap_err();
    assert!(matches!(err, Error::MachineExists { .. }) && err.is_usage(), "{err:?}");
    assert_eq!(k.vms().count("start h1"), 1);
}

#[test]
fn a_start_that_fails_to_boot_leaves_the_machine_stopped_not_half_up() {
    let k = kit();
    let rec = k.create("h1").unwrap();
    k.orch.stop_machine(&name("h1"), Duration::from_secs(1)).unwrap();
    // A reboot: the host lost its links and the host-wide state.
    std::fs::remove_file(k.orch.net.state_file()).unwrap();
    for link in k.host().links() {
        if link != "eth0" && link != "lo" {
            k.host().run(&Cmd::new("ip", "iproute2").args(["link", "del", "dev", &link])).unwrap();
        }
    }
    k.vms().fail_boot("h1", BootFault::Timeout);
    let err = k.orch.start_machine(&name("h1"), BOOT).unwrap_err();
    assert!(matches!(err, Error::Vm(VmError::ReadyTimeout { .. })), "{err:?}");
    assert_eq!(k.orch.machine_state(&name("h1")), VmState::Stopped);
    assert!(k.orch.home.machine_exists(&name("h1")));
    // The tap came back with its recorded name, and the next start works on it.
    assert!(k.host().links().contains(&rec.tap));
    assert!(k.orch.start_machine(&name("h1"), BOOT).unwrap());
    assert!(!k.orch.start_machine(&name("h1"), BOOT).unwrap(), "already running");
}

#[test]
fn rm_refuses_a_running_machine_without_force_and_cleans_a_damaged_one() {
    let k = kit();
    k.create("h1").unwrap();
    let err = k.orch.remove_machine(&name("h1"), false).unwrap_err();
    assert!(matches!(err, Error::MachineRunning { .. }) && err.is_usage(), "{err:?}");
    // A damaged record: the VM, tap and lease are still found by the machine's name.
    std::fs::write(k.orch.home.machine_dir(&name("h1")).join("machine.json"), b"{").unwrap();
    k.orch.remove_machine(&name("h1"), true).unwrap();
    k.assert_gone("h1");
    k.assert_host_clean();
    let err = k.orch.remove_machine(&name("h1"), true).unwrap_err();
    assert!(err.is_usage() && err.to_string() == "no machine named \"h1\" (see `n2d ls`)", "{err}");
}

// --- swarms ---------------------------------------------------------------------------------

fn swarm_spec(managers: u32, workers: u32) -> SwarmSpec {
    SwarmSpec { managers, workers, ..SwarmSpec::default() }
}

fn plan(k: &Kit, spec: &SwarmSpec) -> SwarmPlan {
    let mut plan = k.orch.plan_swarm(spec).unwrap();
    plan.specs.iter_mut().for_each(|s| s.image = IMAGE.into());
    plan
}

fn prefix() -> SwarmName {
    "n2d".parse().unwrap()
}

fn hostnames(k: &Kit) -> Vec<String> {
    k.cluster.nodes().into_iter().map(|n| n.hostname).collect()
}

fn make_swarm(k: &Kit, managers: u32, workers: u32) {
    let spec = swarm_spec(managers, workers);
    k.orch.create_swarm(&spec, &plan(k, &spec), BOOT, false).unwrap();
}

#[test]
fn a_swarm_is_created_formed_and_removed() {
    let k = kit();
    make_swarm(&k, 1, 2);
    assert_eq!(hostnames(&k), ["n2d-mngr-0", "n2d-wrkr-0", "n2d-wrkr-1"]);
    let (m, nodes) = k.orch.swarm_nodes(&k.orch.load_swarm(&prefix()).unwrap()).unwrap();
    assert_eq!((m.spec.name.as_str(), nodes.len()), ("n2d-mngr-0", 3));
    k.orch.remove_swarm(&prefix()).unwrap();
    k.assert_host_clean();
    assert!(k.orch.home.load_swarm(&prefix()).unwrap().is_none());
}

#[test]
fn an_exposed_swarm_opens_every_node_and_a_user_mode_one_is_refused() {
    let k = kit();
    let spec = SwarmSpec { expose: true, ..swarm_spec(1, 1) };
    k.orch.create_swarm(&spec, &plan(&k, &spec), BOOT, false).unwrap();
    let chain = k.host().chain("filter N2D-FWD-n2d0").unwrap();
    for node in ["n2d-mngr-0", "n2d-wrkr-0"] {
        let rec = k.orch.load_record(&name(node)).unwrap();
        assert!(rec.spec.expose, "{node}");
        assert!(chain.contains(&format!("-d {}/32 -o n2d0 -j ACCEPT", rec.ip)), "{node}: {chain:?}");
    }
    k.orch.remove_swarm(&prefix()).unwrap();
    k.assert_host_clean();
    let user = SwarmSpec { network: Some(n2d_spec::machine::USER_NETWORK.into()), ..spec };
    let err = k.orch.plan_swarm(&user).unwrap_err();
    assert!(err.is_usage() && err.to_string().contains("--expose"), "{err}");
}

/// Nothing of the swarm is left: record, machines, leases, taps, bridge, VMs.
fn assert_swarm_gone(k: &Kit) {
    assert!(k.orch.home.load_swarm(&prefix()).unwrap().is_none(), "the swarm record is left");
    for n in ["n2d-mngr-0", "n2d-wrkr-0", "n2d-wrkr-1"] {
        k.assert_gone(n);
    }
    k.assert_host_clean();
}

#[test]
fn a_swarm_whose_node_fails_to_boot_is_rolled_back() {
    let k = kit();
    k.vms().fail_boot("n2d-wrkr-1", BootFault::Timeout);
    let spec = swarm_spec(1, 2);
    let err = k.orch.create_swarm(&spec, &plan(&k, &spec), BOOT, false).unwrap_err();
    assert!(matches!(&err, Error::CreateNode { name, .. } if name == "n2d-wrkr-1"), "{err:?}");
    assert_swarm_gone(&k);
}

#[test]
fn a_swarm_whose_formation_fails_is_rolled_back() {
    let k = kit();
    k.cluster.fail("n2d-wrkr-0", "join");
    let spec = swarm_spec(1, 2);
    let err = k.orch.create_swarm(&spec, &plan(&k, &spec), BOOT, false).unwrap_err();
    assert!(matches!(err, Error::Swarm(n2d_swarm::SwarmError::JoinSwarm { .. })), "{err:?}");
    assert_swarm_gone(&k);
    assert!(k.said.lines().iter().any(|l| l.contains("Rolling back")));
}

#[test]
fn a_swarm_whose_node_never_gets_ready_says_its_console_and_is_rolled_back() {
    let k = kit();
    k.cluster.never_ready("n2d-wrkr-1");
    let spec = swarm_spec(1, 2);
    let err = k.orch.create_swarm(&spec, &plan(&k, &spec), Duration::from_secs(1), false).unwrap_err();
    let Error::NodesNotReady { consoles, .. } = &err else { panic!("{err:?}") };
    assert!(consoles.0.starts_with("n2d-wrkr-1:\n"), "{consoles}");
    assert_swarm_gone(&k);
}

#[test]
fn a_swarm_create_interrupted_during_formation_is_rolled_back() {
    let k = kit();
    k.vms().fail_boot("n2d-mngr-0", BootFault::Interrupted);
    let spec = swarm_spec(1, 2);
    let err = k.orch.create_swarm(&spec, &plan(&k, &spec), BOOT, false).unwrap_err();
    assert!(err.is_interrupted(), "{err:?}");
    assert_swarm_gone(&k);
}

#[test]
fn keep_on_failure_keeps_the_nodes_for_inspection() {
    let k = kit();
    k.cluster.fail("n2d-wrkr-1", "join");
    let spec = swarm_spec(1, 2);
    k.orch.create_swarm(&spec, &plan(&k, &spec), BOOT, true).unwrap_err();
    assert!(k.orch.home.load_swarm(&prefix()).unwrap().is_some());
    assert_eq!(k.orch.home.list_machines().len(), 3);
    k.orch.remove_swarm(&prefix()).unwrap();
    k.assert_host_clean();
}

#[test]
fn a_swarm_that_does_not_fit_on_the_bridge_is_refused_before_anything_is_made() {
    let k = kit();
    let spec = SwarmSpec { ip_range: Some("10.77.0.2-10.77.0.3".parse().unwrap()), ..swarm_spec(1, 2) };
    let err = k.orch.plan_swarm(&spec).unwrap_err();
    assert!(matches!(err, Error::BridgeTooSmall { free: 2, needed: 3, .. }) && err.is_usage(), "{err:?}");
    k.assert_host_clean();
}

#[test]
fn a_failed_scale_up_takes_its_joined_nodes_out_of_the_swarm_and_deletes_them() {
    let k = kit();
    make_swarm(&k, 1, 1);
    // Workers join one after the other: n2d-wrkr-1 joins, n2d-wrkr-2's join fails.
    k.cluster.fail("n2d-wrkr-2", "join");
    let work = k.orch.plan_swarm_scale(&prefix(), Some(3), None).unwrap();
    assert_eq!(work.add.len(), 2);
    let err = k.orch.scale_swarm(work, BOOT).unwrap_err();
    assert!(matches!(err, Error::Swarm(n2d_swarm::SwarmError::JoinSwarm { .. })), "{err:?}");
    // Not left in the swarm as Down: removed from it.
    assert_eq!(hostnames(&k), ["n2d-mngr-0", "n2d-wrkr-0"]);
    assert_eq!(k.cluster.count_events("leave n2d-wrkr-1"), 1);
    for n in ["n2d-wrkr-1", "n2d-wrkr-2"] {
        k.assert_gone(n);
    }
    let record = k.orch.load_swarm(&prefix()).unwrap();
    assert_eq!(record.workers.len(), 1, "the record is unchanged");
    assert!(k.vms().is_running("n2d-wrkr-0"));
}

#[test]
fn a_scale_up_whose_node_fails_to_boot_deletes_the_new_nodes() {
    let k = kit();
    make_swarm(&k, 1, 1);
    k.vms().fail_start("n2d-wrkr-2");
    let work = k.orch.plan_swarm_scale(&prefix(), Some(3), None).unwrap();
    let err = k.orch.scale_swarm(work, BOOT).unwrap_err();
    assert!(matches!(&err, Error::CreateNode { name, .. } if name == "n2d-wrkr-2"), "{err:?}");
    for n in ["n2d-wrkr-1", "n2d-wrkr-2"] {
        k.assert_gone(n);
    }
    assert_eq!(hostnames(&k), ["n2d-mngr-0", "n2d-wrkr-0"]);
    assert_eq!(k.orch.load_swarm(&prefix()).unwrap().workers.len(), 1);
}

#[test]
fn a_scale_up_adds_and_records_nodes() {
    let k = kit();
    make_swarm(&k, 1, 1);
    let work = k.orch.plan_swarm_scale(&prefix(), Some(2), Some(1)).unwrap();
    let record = k.orch.scale_swarm(work, BOOT).unwrap();
    assert_eq!(record.workers.len(), 2);
    assert_eq!(hostnames(&k), ["n2d-mngr-0", "n2d-wrkr-0", "n2d-wrkr-1"]);
    let work = k.orch.plan_swarm_scale(&prefix(), Some(2), None).unwrap();
    assert!(work.is_empty());
}

#[test]
fn scale_down_of_a_node_whose_vm_was_removed_by_hand() {
    let k = kit();
    make_swarm(&k, 1, 2);
    // Removed by hand: VM killed, machine directory deleted.
    k.vms().crash("n2d-wrkr-1");
    std::fs::remove_dir_all(k.orch.home.machine_dir(&name("n2d-wrkr-1"))).unwrap();
    let work = k.orch.plan_swarm_scale(&prefix(), Some(1), None).unwrap();
    let record = k.orch.scale_swarm(work, BOOT).unwrap();
    assert_eq!(record.workers.iter().map(|n| n.as_str()).collect::<Vec<_>>(), ["n2d-wrkr-0"]);
    assert_eq!(k.orch.load_swarm(&prefix()).unwrap().workers.len(), 1);
    // Removed from the manager's side.
    assert_eq!(hostnames(&k), ["n2d-mngr-0", "n2d-wrkr-0"]);
    assert_eq!(k.cluster.count_events("remove n2d-wrkr-1 force=true"), 1);
    k.assert_gone("n2d-wrkr-1");
}

#[test]
fn scale_down_drains_leaves_and_deletes() {
    let k = kit();
    make_swarm(&k, 1, 2);
    let work = k.orch.plan_swarm_scale(&prefix(), Some(1), None).unwrap();
    k.orch.scale_swarm(work, BOOT).unwrap();
    assert_eq!(hostnames(&k), ["n2d-mngr-0", "n2d-wrkr-0"]);
    assert_eq!(k.cluster.count_events("leave n2d-wrkr-1 force=false"), 1);
    k.assert_gone("n2d-wrkr-1");
}

#[test]
fn scale_with_no_manager_answering_changes_nothing() {
    let k = kit();
    make_swarm(&k, 1, 2);
    k.cluster.fail("n2d-mngr-0", "ping");
    let work = k.orch.plan_swarm_scale(&prefix(), Some(1), None).unwrap();
    let err = k.orch.scale_swarm(work, BOOT).unwrap_err();
    assert!(matches!(err, Error::NoManagerAnswers(_)), "{err:?}");
    assert_eq!(k.orch.load_swarm(&prefix()).unwrap().workers.len(), 2);
    assert!(k.vms().is_running("n2d-wrkr-1"));
}

#[test]
fn swarm_rm_skips_a_node_removed_by_hand() {
    let k = kit();
    make_swarm(&k, 1, 1);
    k.vms().crash("n2d-wrkr-0");
    std::fs::remove_dir_all(k.orch.home.machine_dir(&name("n2d-wrkr-0"))).unwrap();
    k.orch.remove_swarm(&prefix()).unwrap();
    k.assert_host_clean();
    let err = k.orch.remove_swarm(&prefix()).unwrap_err();
    assert!(matches!(err, Error::NoSuchSwarm(_)) && err.is_usage(), "{err:?}");
}

// --- swarm records under the lock, label rules, Ctrl-C ------------------------------------

mod adopt;
mod certs;
mod commands;
mod exec;
mod image;
mod recovery;
mod suspend;
mod upgrade;
mod user_mode;
mod warm;

#[test]
fn a_concurrent_add_host_is_not_lost_by_a_scale() {
    let k = kit();
    make_swarm(&k, 1, 1);
    // The scale reads the record, then an add-host changes it, then the scale records its node.
    let work = k.orch.plan_swarm_scale(&prefix(), Some(2), None).unwrap();
    let mut record = k.orch.load_swarm(&prefix()).unwrap();
    let host = n2d_store::ExternalHost {
        name: "ext1".into(),
        docker_host: "tcp://10.77.0.200:2376".into(),
        tls: None,
        labels: Default::default(),
    };
    k.orch.add_external_host(&mut record, host).unwrap();
    let scaled = k.orch.scale_swarm(work, BOOT).unwrap();
    let saved = k.orch.load_swarm(&prefix()).unwrap();
    assert_eq!(saved, scaled);
    assert_eq!(saved.workers.len(), 2, "the scale's node was lost");
    assert_eq!(saved.external_hosts.len(), 1, "the add-host was lost");
    // And the other way round: a scale-down between an add-host's read and its write.
    let mut stale = k.orch.load_swarm(&prefix()).unwrap();
    let work = k.orch.plan_swarm_scale(&prefix(), Some(1), None).unwrap();
    k.orch.scale_swarm(work, BOOT).unwrap();
    let host = n2d_store::ExternalHost {
        name: "ext2".into(),
        docker_host: "tcp://10.77.0.201:2376".into(),
        tls: None,
        labels: Default::default(),
    };
    k.orch.add_external_host(&mut stale, host).unwrap();
    let saved = k.orch.load_swarm(&prefix()).unwrap();
    assert_eq!(saved.workers.iter().map(|n| n.as_str()).collect::<Vec<_>>(), ["n2d-wrkr-0"]);
    assert_eq!(saved.external_hosts.len(), 2);
    assert_eq!(stale, saved, "the caller's record is the saved one");
}

#[test]
fn a_second_swarm_create_with_the_same_prefix_fails_and_keeps_the_first() {
    let k = kit();
    // Both were planned before either made anything (two `swarm create` at once).
    let second = swarm_spec(1, 2);
    let second_plan = plan(&k, &second);
    make_swarm(&k, 1, 1);
    let first = k.orch.load_swarm(&prefix()).unwrap();
    let err = k.orch.create_swarm(&second, &second_plan, BOOT, false).unwrap_err();
    assert!(matches!(&err, Error::SwarmExists(p) if p == "n2d") && err.is_usage(), "{err:?}");
    assert_eq!(k.orch.load_swarm(&prefix()).unwrap(), first, "the first swarm's record changed");
    assert!(k.vms().is_running("n2d-mngr-0") && k.vms().is_running("n2d-wrkr-0"));
    k.assert_gone("n2d-wrkr-1");
    assert!(k.orch.home.intents().is_empty());
    k.orch.remove_swarm(&prefix()).unwrap();
    k.assert_host_clean();
}

#[test]
fn scale_applies_the_swarms_label_rules_to_new_nodes() {
    let k = kit();
    let spec = SwarmSpec {
        labels: vec!["tier=db@workers".parse().unwrap(), "env=dev".parse().unwrap()],
        ..swarm_spec(1, 1)
    };
    k.orch.create_swarm(&spec, &plan(&k, &spec), BOOT, false).unwrap();
    let record = k.orch.load_swarm(&prefix()).unwrap();
    assert_eq!(record.labels, spec.labels, "the record keeps the rules");
    let work = k.orch.plan_swarm_scale(&prefix(), Some(2), Some(2)).unwrap();
    k.orch.scale_swarm(work, BOOT).unwrap();
    let labels = |host: &str| {
        k.cluster
            .nodes()
            .into_iter()
            .find(|n| n.hostname == host)
            .unwrap()
            .labels
            .into_iter()
            .collect::<Vec<_>>()
    };
    let both = vec![("env".to_string(), "dev".to_string()), ("tier".to_string(), "db".to_string())];
    assert_eq!(labels("n2d-wrkr-1"), both, "a new worker");
    assert_eq!(labels("n2d-mngr-1"), [("env".to_string(), "dev".to_string())], "a new manager");
    // The engine labels too (the config disk's), as at create.
    let rec = k.orch.load_record(&name("n2d-wrkr-1")).unwrap();
    assert_eq!(rec.spec.labels.get("tier").map(String::as_str), Some("db"));
}

/// Presses Ctrl-C (sets the cancel flag) when `op` is called on `host`.
fn ctrl_c_on(k: &Kit, host: &str, op: &str) {
    let cancel = k.orch.cancel.clone();
    k.cluster.on_call(host, op, move || cancel.store(true, Ordering::Relaxed));
}

#[test]
fn ctrl_c_at_each_stage_of_swarm_formation_rolls_the_create_back() {
    for (host, op) in [
        ("n2d-mngr-0", "ping"),
        ("n2d-mngr-0", "init"),
        ("n2d-mngr-1", "join"),
        ("n2d-wrkr-1", "join"),
        ("n2d-mngr-0", "labels"),
        ("n2d-mngr-0", "list_nodes"),
    ] {
        let k = kit();
        ctrl_c_on(&k, host, op);
        let spec = SwarmSpec { labels: vec!["env=dev".parse().unwrap()], ..swarm_spec(2, 2) };
        let err = k.orch.create_swarm(&spec, &plan(&k, &spec), BOOT, false).unwrap_err();
        assert!(err.is_interrupted(), "{host} {op}: {err:?}");
        assert!(k.orch.home.load_swarm(&prefix()).unwrap().is_none(), "{host} {op}: the record is left");
        for n in ["n2d-mngr-0", "n2d-mngr-1", "n2d-wrkr-0", "n2d-wrkr-1"] {
            k.assert_gone(n);
        }
        k.assert_host_clean();
        assert!(k.orch.home.intents().is_empty(), "{host} {op}");
    }
}

#[test]
fn ctrl_c_while_waiting_for_nodes_to_be_ready_ends_the_wait_at_once() {
    let k = kit();
    k.cluster.never_ready("n2d-wrkr-1");
    let cancel = k.orch.cancel.clone();
    let presser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        cancel.store(true, Ordering::Relaxed);
    });
    let spec = swarm_spec(1, 2);
    let started = std::time::Instant::now();
    let err = k.orch.create_swarm(&spec, &plan(&k, &spec), Duration::from_secs(120), false).unwrap_err();
    presser.join().unwrap();
    assert!(matches!(err, Error::Interrupted { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}", started.elapsed());
    assert_swarm_gone(&k);
}

#[test]
fn ctrl_c_during_a_scale_up_takes_the_new_nodes_out_and_deletes_them() {
    let k = kit();
    make_swarm(&k, 1, 1);
    ctrl_c_on(&k, "n2d-wrkr-1", "join");
    let work = k.orch.plan_swarm_scale(&prefix(), Some(2), None).unwrap();
    let err = k.orch.scale_swarm(work, BOOT).unwrap_err();
    assert!(err.is_interrupted(), "{err:?}");
    k.assert_gone("n2d-wrkr-1");
    assert_eq!(hostnames(&k), ["n2d-mngr-0", "n2d-wrkr-0"]);
    assert_eq!(k.orch.load_swarm(&prefix()).unwrap().workers.len(), 1);
}

#[test]
fn start_all_after_a_reboot_brings_back_every_machine_on_its_lease_and_reports_each() {
    let k = kit();
    let records: Vec<_> = ["h1", "h2", "h3", "h4"].iter().map(|n| k.create(n).unwrap()).collect();
    // A reboot: every VM gone, the host's links and host-wide state with them.
    for r in &records {
        k.vms().crash(r.spec.name.as_str());
    }
    std::fs::remove_file(k.orch.net.state_file()).unwrap();
    for link in k.host().links() {
        if link != "eth0" && link != "lo" {
            k.host().run(&Cmd::new("ip", "iproute2").args(["link", "del", "dev", &link])).unwrap();
        }
    }
    // One more machine was never stopped (say, started again by hand), and one cannot boot.
    k.vms().set_running("h4");
    k.vms().fail_start("h3");
    let plan = k.orch.plan_start_all();
    assert_eq!(plan.stopped, [name("h1"), name("h2"), name("h3")]);
    assert_eq!(plan.running, [name("h4")]);
    assert!(plan.unreadable.is_empty());

    let results = k.orch.start_machines(&plan.stopped, BOOT);
    assert!(matches!(results[0], Ok(true)) && matches!(results[1], Ok(true)), "{results:?}");
    assert!(matches!(results[2], Err(Error::Vm(VmError::Start { .. }))), "{results:?}");
    assert_eq!(k.vms().running(), ["h1", "h2", "h4"], "the failed one stays stopped, the others run");
    // Same addresses and taps as before the reboot; the bridge is back.
    let state = k.orch.net.snapshot().unwrap();
    for r in &records[..2] {
        let lease =
            state.bridges["n2d0"].leases.values().find(|l| l.machine == r.spec.name.as_str()).unwrap();
        assert_eq!((lease.tap.as_str(), lease.mac.as_str()), (r.tap.as_str(), r.mac.as_str()));
        assert!(k.host().links().contains(&r.tap), "{}'s tap is not back", r.spec.name);
        assert_eq!(k.orch.load_record(&r.spec.name).unwrap(), *r);
    }
    assert!(k.host().links().contains("n2d0"));
}

#[test]
fn start_all_names_a_machine_whose_record_is_damaged() {
    let k = kit();
    k.create("h1").unwrap();
    k.vms().crash("h1");
    std::fs::create_dir_all(k.orch.home.machine_dir(&name("half"))).unwrap();
    let plan = k.orch.plan_start_all();
    assert_eq!(plan.stopped, [name("h1")]);
    assert_eq!(plan.unreadable.len(), 1);
    assert_eq!(plan.unreadable[0].0, "half");
}

#[test]
fn the_manager_named_first_is_asked_first_and_a_dead_one_is_skipped() {
    let k = kit();
    let spec = swarm_spec(3, 0);
    let record = k.orch.create_swarm(&spec, &plan(&k, &spec), BOOT, false).unwrap();
    let rt = crate::runtime().unwrap();
    let [m0, m1, m2] = [0, 1, 2].map(|i| record.managers[i].clone());
    assert_eq!(k.orch.reachable_manager(&record, &rt).unwrap().0.spec.name, m0);
    assert_eq!(k.orch.reachable_manager_from(&record, &rt, Some(&m2)).unwrap().0.spec.name, m2);
    // The first manager's VM dies: the next one answers.
    k.vms().crash(m0.as_str());
    k.cluster.fail(m0.as_str(), "ping");
    assert_eq!(k.orch.reachable_manager_from(&record, &rt, Some(&m0)).unwrap().0.spec.name, m1);
    assert_eq!(k.orch.swarm_nodes_from(&record, Some(&m0)).unwrap().0.spec.name, m1);
}

#[test]
fn a_manager_whose_vm_is_down_here_is_asked_last() {
    let k = kit();
    let spec = swarm_spec(3, 0);
    let record = k.orch.create_swarm(&spec, &plan(&k, &spec), BOOT, false).unwrap();
    let rt = crate::runtime().unwrap();
    let [m0, m1, _] = [0, 1, 2].map(|i| record.managers[i].clone());
    // Its engine would still answer here (a fake's), so only its state kept it from being asked.
    k.vms().crash(m0.as_str());
    assert_eq!(k.orch.reachable_manager_from(&record, &rt, Some(&m0)).unwrap().0.spec.name, m1);
    assert_eq!(k.orch.reachable_manager(&record, &rt).unwrap().0.spec.name, m1);
}

/// State is input: a record whose tap names another interface, or whose MAC carries a QEMU
/// option, is refused as it is read: `start` boots nothing and touches no link, and `rm -f`
/// removes the machine's own tap (derived from its name), never the one the record names.
#[test]
fn a_crafted_record_is_never_acted_on() {
    let k = kit();
    let rec = k.create("h1").unwrap();
    k.orch.stop_machine(&name("h1"), BOOT).unwrap();
    let file = k.orch.home.machine_dir(&name("h1")).join("machine.json");
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let crafted = [
        ("tap", serde_json::json!("eth0")),
        ("tap", serde_json::json!("n2d0")),
        ("mac", serde_json::json!("52:54:00:00:00:01,romfile=/tmp/x")),
        ("ip", serde_json::json!("10.99.0.2")),
    ];
    for (field, value) in crafted {
        let mut bad = good.clone();
        bad[field] = value.clone();
        std::fs::write(&file, bad.to_string()).unwrap();
        let links = k.host().links();
        let err = k.orch.start_machine(&name("h1"), BOOT).unwrap_err();
        assert!(err.to_string().contains("holds a value n2d refuses"), "{field}={value}: {err}");
        assert_eq!(k.vms().count("start h1"), 1, "{field}={value}: it was booted");
        assert_eq!(k.host().links(), links, "{field}={value}: links changed");
    }
    // Removed with its record naming the uplink: the uplink stays, the machine's tap goes.
    let mut bad = good.clone();
    bad["tap"] = serde_json::json!("eth0");
    std::fs::write(&file, bad.to_string()).unwrap();
    k.orch.remove_machine(&name("h1"), true).unwrap();
    assert!(k.host().links().contains("eth0"));
    assert!(!k.host().links().contains(&rec.tap));
    k.assert_gone("h1");
    k.assert_host_clean();
}

/// A create for another home (`--tls-relay`): that home's CA issues the server certificate, the
/// engine trusts the clients of both CAs, and this host checks the engine against the issuer.
#[test]
fn a_relayed_create_presents_the_asking_homes_certificate_and_trusts_both_cas() {
    struct OtherHome(n2d_pki::Ca, std::sync::Mutex<Vec<String>>);
    impl crate::remote::relay::CertIssuer for OtherHome {
        fn issue(
            &self,
            name: &MachineName,
            ips: &[std::net::IpAddr],
        ) -> Result<crate::remote::relay::IssuedCert, Error> {
            self.1.lock().unwrap().push(format!("{name} {ips:?}"));
            let c = self.0.issue_server(name, ips)?;
            Ok(crate::remote::relay::IssuedCert {
                ca_pem: self.0.cert_pem().into(),
                cert_pem: c.cert_pem,
                key_pem: c.key_pem,
            })
        }
    }
    let k = kit();
    let other_dir = tempfile::tempdir().unwrap();
    let other =
        Arc::new(OtherHome(n2d_pki::Ca::load_or_create(other_dir.path()).unwrap(), Default::default()));
    k.orch.relay_certificates(other.clone());
    let record = k.create("web").unwrap();
    assert_eq!(*other.1.lock().unwrap(), [format!("web [{}]", record.ip)]);
    let dir = k.orch.home.machine_dir(&name("web"));
    let issuer_ca = std::fs::read_to_string(dir.join(crate::remote::relay::ISSUER_CA_FILE)).unwrap();
    assert_eq!(issuer_ca, other.0.cert_pem());
    // This host checks the engine against the issuer; its own client certificate still works.
    let ep = k.orch.endpoint(&record);
    assert_eq!(ep.tls.unwrap().ca, dir.join(crate::remote::relay::ISSUER_CA_FILE));
    let own = n2d_pki::Ca::load_or_create(&k.orch.home.certs_dir()).unwrap();
    let config = k.orch.guest_config(&record, k.orch.server_tls(&record).unwrap());
    let ca_pem = config.docker.tls.unwrap().ca_pem;
    assert!(ca_pem.contains(other.0.cert_pem().trim()) && ca_pem.contains(own.cert_pem().trim()), "both CAs");
}

/// A swarm across hosts whose node fails on another host: the nodes made here (and on any
/// host) are removed, the record too, and the error names the host.
#[test]
fn a_node_that_fails_on_another_host_takes_back_the_nodes_made_here() {
    use std::io::Write;
    let mut k = kit();
    let ssh = Arc::new(crate::remote::fake::FakeSsh::default());
    let info = r#"{"version":"0.1.0","cpus":2,"memory_total":8000000000,"memory_available":6000000000,"machines":0}"#;
    ssh.answer("h2", "--version", 0, &format!("n2d {}\n", crate::remote::VERSION), "");
    ssh.answer("h2", "doctor --json", 0, "[]", "");
    ssh.answer("h2", "host info --json", 0, info, "");
    ssh.script(
        "h2",
        "create",
        Arc::new(|_: &[String], _: &mut dyn std::io::BufRead, _: &mut dyn Write, stderr: &mut dyn Write| {
            writeln!(stderr, "Creating n2d-mngr-1...\nerror: no space left on /var/lib/n2d").unwrap();
            1
        }),
    );
    k.orch.ssh = ssh.clone();
    k.orch.register_host(&"h2".parse().unwrap(), &"ssh://h2".parse().unwrap(), Default::default()).unwrap();
    let spec = swarm_spec(2, 1);
    let mut p = plan(&k, &spec);
    p.placement.insert("n2d-mngr-1".into(), "h2".parse().unwrap());
    let err = k.orch.create_swarm(&spec, &p, BOOT, false).unwrap_err();
    let said = crate::swarm::chain(&err);
    assert!(
        said.contains("n2d-mngr-1") && said.contains("on host h2 failed (exit status 1): no space left"),
        "{said}"
    );
    for n in ["n2d-mngr-0", "n2d-wrkr-0"] {
        k.assert_gone(n);
    }
    k.assert_host_clean();
    assert!(k.orch.home.load_swarm(&prefix()).unwrap().is_none());
    assert!(k.orch.home.list_remote_machines().is_empty());
    assert!(
        ssh.calls().iter().any(|c| c.starts_with("h2: n2d create n2d-mngr-1 --cpus")),
        "{:?}",
        ssh.calls()
    );
}

/// `swarm rm` while a host of the swarm is lost: its node is forgotten here (said), the rest
/// removed, the record gone.
#[test]
fn a_swarm_goes_while_one_of_its_hosts_does_not_answer() {
    let mut k = kit();
    make_swarm(&k, 1, 1);
    let ssh = Arc::new(crate::remote::fake::FakeSsh::default());
    let info = r#"{"version":"0.1.0","cpus":2,"memory_total":8000000000,"memory_available":6000000000,"machines":0}"#;
    ssh.answer("h2", "--version", 0, &format!("n2d {}\n", crate::remote::VERSION), "");
    ssh.answer("h2", "doctor --json", 0, "[]", "");
    ssh.answer("h2", "host info --json", 0, info, "");
    k.orch.ssh = ssh.clone();
    k.orch.register_host(&"h2".parse().unwrap(), &"ssh://h2".parse().unwrap(), Default::default()).unwrap();
    // A worker on h2 (its `rm` there gets "Connection refused": h2 is gone).
    let ip = "10.99.0.120".parse().unwrap();
    let node = n2d_store::RemoteMachine {
        name: name("n2d-wrkr-1"),
        host: "h2".parse().unwrap(),
        ip,
        swarm: Some("n2d".into()),
        record: n2d_store::MachineRecord::example("n2d-wrkr-1", ip),
    };
    k.orch.home.save_remote_machine(&node).unwrap();
    k.orch
        .home
        .update_swarm(&prefix(), |r| r.add_node(n2d_spec::swarm::NodeRole::Worker, &name("n2d-wrkr-1")))
        .unwrap();
    k.orch.remove_swarm(&prefix()).unwrap();
    assert!(
        k.said.lines().iter().any(|l| l.starts_with("warning: n2d-wrkr-1 could not be removed on host h2")),
        "{:?}",
        k.said.lines()
    );
    assert!(k.orch.home.list_remote_machines().is_empty());
    assert!(k.orch.home.load_swarm(&prefix()).unwrap().is_none());
    k.assert_host_clean();
    assert!(ssh.calls().contains(&"h2: n2d rm --force n2d-wrkr-1".to_string()), "{:?}", ssh.calls());
}

#[test]
fn pause_and_clock_faults_go_through_the_hypervisor_and_rm_undoes_them() {
    let k = kit();
    k.create("h1").unwrap();
    k.create("h2").unwrap();
    let (h1, h2) = (name("h1"), name("h2"));
    k.orch.pause(&h1, Some(Duration::from_secs(30))).unwrap();
    assert!(k.vms().events().contains(&"pause h1".to_string()));
    let err = k.orch.pause(&h1, None).unwrap_err();
    assert!(err.to_string().contains("already has a fault (pause"), "{err}");
    let rows = k.orch.fault_rows();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].record.as_ref().unwrap().until_ms.is_some());
    k.orch.guest_fault(&h2, n2d_store::Fault::Clock { offset_s: -300 }, None).unwrap();
    assert!(k.vms().events().iter().any(|e| e.starts_with("control h2 clock ")), "{:?}", k.vms().events());
    // clear one: h1 runs on; rm the other: its fault goes with it.
    let cleared = k.orch.clear_faults(std::slice::from_ref(&h1)).unwrap();
    assert_eq!(cleared.len(), 1);
    assert!(k.vms().events().contains(&"resume h1".to_string()));
    k.orch.remove_machine(&h2, true).unwrap();
    assert!(k.orch.fault_rows().is_empty());
    // An engine kept down: engine-down over the control port, engine-up when cleared.
    k.orch.guest_fault(&h1, n2d_store::Fault::EngineDown, None).unwrap();
    assert!(k.vms().events().contains(&"control h1 engine-down".to_string()), "{:?}", k.vms().events());
    assert_eq!(k.orch.fault_rows()[0].record.as_ref().unwrap().fault.kind(), "kill-engine");
    k.orch.clear_faults(&[]).unwrap();
    assert!(k.vms().events().contains(&"control h1 engine-up".to_string()), "{:?}", k.vms().events());
    k.orch.remove_machine(&h1, true).unwrap();
    k.assert_host_clean();
}
