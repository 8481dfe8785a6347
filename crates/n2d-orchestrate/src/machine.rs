//! Creating, starting, stopping and removing machines: the steps `create` and `swarm` share.
//!
//! A create that fails midway undoes what it made, in reverse order ([`Rollback`]): VM, tap
//! and IP lease (host-wide, see `n2d_net::host`), machine directory.

use crate::templates::Template;
use crate::{Error, Orchestrator, ProgressStep, Result, Rollback};
use n2d_exec::{Cmd, Runner};
use n2d_image::{find_image, Image};
use n2d_net::host::{AttachRequest, Claim};
use n2d_net::tap_for;
use n2d_net::user::{self, uplink_mac, UserNet};
use n2d_pki::Ca;
use n2d_proto::{
    encode_config_disk, Addressing, ControlRequest, DockerConfig, GuestConfig, GuestMount, GuestNetwork,
    GuestUplink, TlsMaterial,
};
use n2d_spec::machine::{MachineName, MachineSpec};
use n2d_store::{remove_dir_all, write_atomic, Journal, MachineRecord, Operation};
use n2d_swarm::{Connector, DockerApi};
use n2d_vm::argv::{CONFIG_DISK_FILE as CONFIG_DISK, DATA_DISK_FILE as DATA_DISK};
use n2d_vm::qemu::console_log_len;
use n2d_vm::{Hypervisor, Memory, Nic, StartReport, StopOutcome, VmHandle, VmLaunch, VmMount, VmState};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static SAID_WHY_NOT_KVM: AtomicBool = AtomicBool::new(false);

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// Tells the user once per run that VMs run under emulation, and why.
    fn report_accel(&self, report: &StartReport) {
        if let Some(why) = &report.why_not_kvm {
            if !SAID_WHY_NOT_KVM.swap(true, Ordering::Relaxed) {
                self.progress.say(&format!("note: KVM is not available ({why}): VMs run under QEMU's software emulation (TCG), which is slower"));
            }
        }
    }

    /// The machine as the hypervisor knows it: its name and directory.
    pub fn vm_handle(&self, name: &MachineName) -> VmHandle {
        VmHandle::new(name.as_str(), self.home.machine_dir(name))
    }

    /// How to start the machine of `record` with `image`. A user-mode machine gets its
    /// forwards: its Docker API, its published ports, and the swarm ports it holds.
    pub fn vm_launch(&self, record: &MachineRecord, image: &Image) -> VmLaunch {
        let nic = if record.user_mode() {
            let mut forwards = record.forwards();
            forwards.extend(self.swarm_ports_held_by(record));
            Nic::User {
                switch: self.user_net().socket_dir(),
                mac: record.mac.clone(),
                uplink_mac: uplink_mac(&record.mac),
                forwards,
            }
        } else {
            Nic::Tap { tap: record.tap.clone(), mac: record.mac.clone() }
        };
        VmLaunch {
            cpus: record.spec.cpus,
            memory_mib: record.spec.memory.mib(),
            kernel: image.boot_kernel(),
            initrd: image.initrd(),
            rootfs: image.rootfs(),
            nic,
            memory: Memory::Private,
            mounts: record
                .spec
                .mounts
                .iter()
                .enumerate()
                .map(|(i, m)| VmMount {
                    tag: n2d_proto::mount_tag(i),
                    host: m.host.clone(),
                    read_only: m.read_only,
                    keep_owners: rustix::process::geteuid().is_root(),
                })
                .collect(),
        }
    }

    /// Validates a spec and the name's availability before anything is made.
    pub fn check_new_machine(&self, spec: &MachineSpec) -> Result<()> {
        spec.validate()?;
        if self.home.machine_name_taken(&spec.name)? {
            return Err(Error::MachineExists { name: spec.name.to_string() });
        }
        Ok(())
    }

    /// Allocates everything a machine needs (IP, tap, certificate, disks) and records it, each
    /// step written to the create's journal (see `n2d_store::intents`). On error nothing is left
    /// behind; on success the returned [`Rollback`] undoes it all unless committed, and the
    /// journal is the caller's to finish.
    pub fn prepare_machine(
        &self,
        spec: &MachineSpec,
        swarm: Option<&str>,
        template: Option<&Template>,
    ) -> Result<(MachineRecord, Rollback<'_>, Journal)> {
        let _lock = self.home.lock()?;
        self.check_new_machine(spec)?;
        let dir = self.home.machine_dir(&spec.name);
        // QEMU's sockets are created relative to the machine directory, but clients connect by
        // full path, which Linux limits to 107 bytes.
        if dir.join("console.sock").as_os_str().len() > 100 {
            return Err(Error::StatePathTooLong { dir });
        }
        // Under the same lock as the check: whatever is found under this name from here on is
        // this create's, which is what lets recovery remove it.
        let mut journal = self.begin(Operation::Create { machine: spec.name.clone() })?;
        let mut rollback = Rollback::default();
        match self.prepare_steps(spec, swarm, template, &mut journal, &mut rollback) {
            Ok(record) => Ok((record, rollback, journal)),
            Err(e) => {
                drop(rollback);
                let _ = journal.finish();
                Err(e)
            }
        }
    }

    fn prepare_steps<'a>(
        &'a self,
        spec: &MachineSpec,
        swarm: Option<&str>,
        template: Option<&Template>,
        journal: &mut Journal,
        rollback: &mut Rollback<'a>,
    ) -> Result<MachineRecord> {
        let name = spec.name.to_string();
        let dir = self.home.machine_dir(&spec.name);
        // The directory comes first: a host-wide lease whose machine directory is gone is taken
        // for stale by every home.
        n2d_store::ensure_dir(&dir)?;
        {
            let dir = dir.clone();
            rollback.push(move || {
                let _ = remove_dir_all(&dir);
            });
        }
        journal.step("dir")?;
        let record = if spec.user_network() {
            // The address and ports are the record itself: nothing host-wide to give back. The
            // switch starts with the first boot; a failed create stops it when it was the last.
            rollback.push(move || {
                let _ = self.stop_switch_if_idle();
            });
            self.new_user_mode_record(spec, swarm)?
        } else {
            let home = self.home_key();
            let claims = self.home_claims();
            let request = AttachRequest {
                home: &home,
                machine: &name,
                bridge: &spec.bridge,
                addresses: spec.addresses,
                subnet: None,
                claims: &claims,
                expose: spec.expose,
            };
            let net = self.net.attach(&self.runner, &request, None)?;
            {
                let (home, name, tap) = (home.clone(), name.clone(), net.tap.clone());
                rollback.push(move || {
                    let _ = self.net.detach(&self.runner, &home, &name, Some(&tap));
                });
            }
            MachineRecord {
                spec: spec.clone(),
                ip: net.ip,
                prefix_len: net.prefix_len,
                gateway: net.gateway,
                mac: net.mac,
                tap: net.tap,
                swarm: swarm.map(str::to_string),
                api_port: None,
                warm_from: None,
            }
        };
        journal.step("lease")?;
        let record = MachineRecord { warm_from: template.map(Template::name), ..record };

        self.write_config_disk(&record)?;
        journal.step("config-disk")?;
        self.create_data_disk(&dir, spec.disk.0, template.map(Template::data).as_deref())?;
        journal.step("data-disk")?;
        self.home.save_machine(&record)?;
        journal.step("record")?;
        Ok(record)
    }

    /// Makes a machine's data disk in `dir`: empty (its first boot formats it), or a
    /// copy-on-write layer over a warm template's frozen disk. Replaces one already there.
    fn create_data_disk(
        &self,
        dir: &std::path::Path,
        bytes: u64,
        base: Option<&std::path::Path>,
    ) -> Result<()> {
        let mut cmd = Cmd::new("qemu-img", "qemu-utils").args(["create", "-q", "-f", "qcow2"]);
        if let Some(base) = base {
            cmd = cmd.arg("-b").arg(base).args(["-F", "qcow2"]);
        }
        self.runner.run(&cmd.arg(dir.join(DATA_DISK)).arg(bytes.to_string())).map_err(Error::DataDisk)?;
        // qemu-img runs under n2d's umask (0077), but the disk holds the node's swarm keys: make
        // sure it is private whatever the tool did.
        std::fs::set_permissions(dir.join(DATA_DISK), std::fs::Permissions::from_mode(n2d_store::FILE_MODE))
            .map_err(Error::DataDiskMode)?;
        Ok(())
    }

    /// A user-mode machine's record: the first free address on the home's segment and the first
    /// free host port for its Docker API (the caller holds the state lock).
    fn new_user_mode_record(&self, spec: &MachineSpec, swarm: Option<&str>) -> Result<MachineRecord> {
        let records = self.all_records();
        let held: Vec<_> =
            records.iter().filter(|r| r.user_mode()).map(|r| (r.ip, r.spec.name.to_string())).collect();
        let ip = user::free_address(&held, spec.addresses)?;
        let mut ports: Vec<u16> = records.iter().flat_map(|r| r.forwards()).map(|f| f.host).collect();
        ports.extend(self.all_swarm_ports().iter().map(|p| p.forward.host));
        ports.extend(spec.publish.iter().map(|f| f.host));
        let api_port = user::free_api_port(&ports, user::port_is_free)?;
        Ok(MachineRecord {
            spec: spec.clone(),
            ip,
            prefix_len: n2d_net::DEFAULT_PREFIX_LEN,
            gateway: n2d_net::DEFAULT_GATEWAY,
            mac: n2d_net::mac_for(&self.home_key(), spec.name.as_str(), 0),
            tap: String::new(),
            swarm: swarm.map(str::to_string),
            api_port: Some(api_port),
            warm_from: None,
        })
    }

    /// The home's user-mode network (its switch).
    pub fn user_net(&self) -> UserNet {
        UserNet::new(self.home.user_network_dir())
    }

    /// Stops the home's switch when none of its user-mode machines runs (the last one stopped
    /// or was removed). Returns whether it stopped it.
    pub fn stop_switch_if_idle(&self) -> Result<bool> {
        let _lock = self.home.lock()?;
        let running =
            self.user_mode_records().iter().any(|r| self.machine_state(&r.spec.name) == VmState::Running);
        if running {
            return Ok(false);
        }
        Ok(self.user_net().stop_switch()?)
    }

    /// The addresses this home's machines hold (from their records), which every attach
    /// re-asserts host-wide: after a reboot empties `/run`, no other home takes them.
    fn home_claims(&self) -> Vec<Claim> {
        self.all_records()
            .into_iter()
            .filter(|r| !r.user_mode())
            .map(|r| Claim {
                machine: r.spec.name.to_string(),
                bridge: r.spec.bridge,
                ip: r.ip,
                tap: r.tap,
                mac: r.mac,
            })
            .collect()
    }

    /// A fresh server certificate for the machine's Docker engine (`None`: `--insecure-tcp`),
    /// for the names of [`server_ips`].
    pub(crate) fn server_tls(&self, record: &MachineRecord) -> Result<Option<TlsMaterial>> {
        if record.spec.insecure_tcp {
            return Ok(None);
        }
        let ca = Ca::load_or_create(&self.home.certs_dir())?;
        let issuer = self.cert_issuer.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(issuer) = issuer {
            // A machine for another home (see `remote::relay`): its CA issues, and the engine
            // trusts the clients of both.
            let issued = issuer.issue(&record.spec.name, &server_ips(record))?;
            let dir = self.home.machine_dir(&record.spec.name);
            write_atomic(&dir.join(crate::remote::relay::ISSUER_CA_FILE), issued.ca_pem.as_bytes(), 0o600)?;
            return Ok(Some(TlsMaterial {
                ca_pem: format!("{}\n{}", issued.ca_pem.trim_end(), ca.cert_pem()),
                cert_pem: issued.cert_pem,
                key_pem: issued.key_pem,
            }));
        }
        let server = ca.issue_server(&record.spec.name, &server_ips(record))?;
        Ok(Some(TlsMaterial {
            ca_pem: ca.cert_pem().to_string(),
            cert_pem: server.cert_pem,
            key_pem: server.key_pem,
        }))
    }

    /// Writes the config disk: network, TLS material (a fresh server certificate for the
    /// machine's IP and name), labels.
    fn write_config_disk(&self, record: &MachineRecord) -> Result<()> {
        let config = self.guest_config(record, self.server_tls(record)?);
        let path = self.home.machine_dir(&record.spec.name).join(CONFIG_DISK);
        // It holds the server's private key. Room to spare: `certs rotate` rewrites it in place
        // while QEMU has it open, and a new certificate may be a few bytes longer.
        let mut bytes = encode_config_disk(&config)?;
        bytes.resize(bytes.len().max(crate::certs::CONFIG_DISK_ROOM), 0);
        write_atomic(&path, &bytes, 0o600)?;
        Ok(())
    }

    /// The guest's configuration, from the machine's record and its TLS material.
    pub(crate) fn guest_config(&self, record: &MachineRecord, tls: Option<TlsMaterial>) -> GuestConfig {
        let spec = &record.spec;
        // User-mode: the default route and DNS go through the uplink (slirp's proxy asks the
        // host's resolvers, loopback ones too); the segment has no gateway.
        let user_mode = record.user_mode();
        GuestConfig {
            hostname: spec.name.to_string(),
            network: GuestNetwork {
                mac: record.mac.clone(),
                addressing: Addressing::Static {
                    address: record.ip,
                    prefix_len: record.prefix_len,
                    gateway: (!user_mode).then_some(record.gateway),
                },
                dns: if user_mode { vec![n2d_proto::uplink::DNS] } else { n2d_net::host_nameservers() },
            },
            docker: DockerConfig { tls, tcp_port: spec.docker_port() },
            labels: spec.labels.clone(),
            uplink: user_mode.then(|| GuestUplink { mac: uplink_mac(&record.mac) }),
            template: false,
            seed: Some(fresh_seed()),
            mounts: spec
                .mounts
                .iter()
                .enumerate()
                .map(|(i, m)| GuestMount {
                    tag: n2d_proto::mount_tag(i),
                    path: m.guest.clone(),
                    read_only: m.read_only,
                })
                .collect(),
        }
    }

    /// Starts the VM and waits until its Docker engine answers (ready marker, then a TLS ping).
    /// `journal`: the change this boot is part of, for its kill point `<op>:after-qemu-start`.
    pub fn boot(
        &self,
        record: &MachineRecord,
        timeout: Duration,
        step: &dyn ProgressStep,
        journal: Option<&Journal>,
    ) -> Result<StartReport> {
        let image = find_image(&self.home, &record.spec.image)?;
        let vm = self.vm_handle(&record.spec.name);
        self.ensure_switch_for(record)?;
        let report = self.boot_vm(record, &image, &vm, timeout, step, journal)?;
        self.check_api(record, step)?;
        Ok(report)
    }

    /// A user-mode machine's switch, started unless it runs. Under the lock: the nodes of a
    /// swarm start in parallel, and one switch serves them.
    pub(crate) fn ensure_switch_for(&self, record: &MachineRecord) -> Result<()> {
        if record.user_mode() {
            let _lock = self.home.lock()?;
            self.user_net().ensure_switch(&self.runner)?;
        }
        Ok(())
    }

    /// The host's check that a started machine's engine answers: one ping over TLS.
    pub(crate) fn check_api(&self, record: &MachineRecord, step: &dyn ProgressStep) -> Result<()> {
        step.set("checking the Docker API from the host");
        self.ping_docker(record).map_err(|source| Error::DockerUnreachable {
            name: record.spec.name.to_string(),
            endpoint: record.docker_host(),
            source: Box::new(source),
        })?;
        Ok(())
    }

    /// A new machine's first start: cloned from `template` when it has one, else booted. A clone
    /// that fails is said in one line and the machine boots cold instead, on a new empty data
    /// disk (its record then names no template).
    pub fn first_boot(
        &self,
        record: &mut MachineRecord,
        template: Option<&Template>,
        timeout: Duration,
        step: &dyn ProgressStep,
        journal: &Journal,
    ) -> Result<StartReport> {
        let Some(template) = template else { return self.boot(record, timeout, step, Some(journal)) };
        let image = find_image(&self.home, &record.spec.image)?;
        let vm = self.vm_handle(&record.spec.name);
        self.ensure_switch_for(record)?;
        match self.clone_vm(record, template, &image, timeout, step, journal) {
            Ok(report) => {
                self.check_api(record, step)?;
                Ok(report)
            }
            Err(e @ Error::Vm(n2d_vm::VmError::Interrupted { .. })) => Err(e),
            Err(e) => {
                let _ = self.hypervisor.kill(&vm);
                self.progress.say(&format!(
                    "warning: {} could not start from its warm template ({}); booting it cold",
                    record.spec.name,
                    crate::swarm::chain(&e)
                ));
                self.create_data_disk(&vm.dir, record.spec.disk.0, None)?;
                record.warm_from = None;
                self.home.save_machine(record)?;
                self.boot(record, timeout, step, Some(journal))
            }
        }
    }

    /// Restores `template` as this machine and hands it its identity; returns once its engine
    /// says it is ready with it.
    fn clone_vm(
        &self,
        record: &MachineRecord,
        template: &Template,
        image: &Image,
        timeout: Duration,
        step: &dyn ProgressStep,
        journal: &Journal,
    ) -> Result<StartReport> {
        let vm = &self.vm_handle(&record.spec.name);
        // The guest knows its config disk's size from the template.
        let config_len = std::fs::metadata(vm.dir.join(CONFIG_DISK)).map(|m| m.len()).unwrap_or(0);
        if config_len != template.record.config_disk_len {
            return Err(Error::TemplateUnusable {
                reason: format!(
                    "its config disk is {config_len} bytes, the template's {}",
                    template.record.config_disk_len
                ),
            });
        }
        let mut launch = self.vm_launch(record, image);
        launch.memory = Memory::CloneOf(template.ram());
        step.set("restoring its warm template");
        let report = self.hypervisor.restore(
            vm,
            &launch,
            &template.state(),
            template.accel(),
            crate::templates::STATE_TRANSFER,
        )?;
        journal.kill_point("after-qemu-start");
        step.set("handing it its identity");
        self.hypervisor.control(vm, ControlRequest::TakeIdentity { unix_ms: crate::templates::unix_ms() })?;
        // A clone is ready in seconds; one whose guest refused its identity never is: give up
        // well before a boot's timeout, and boot it cold instead.
        self.hypervisor.wait_ready(vm, 0, timeout.min(crate::templates::CLONE_READY))?;
        Ok(report)
    }

    /// Starts QEMU and waits for the ready marker (the emulator's boot race retried once).
    fn boot_vm(
        &self,
        record: &MachineRecord,
        image: &Image,
        vm: &VmHandle,
        timeout: Duration,
        step: &dyn ProgressStep,
        journal: Option<&Journal>,
    ) -> Result<StartReport> {
        let vm = vm.clone();
        let launch = self.vm_launch(record, image);
        let since = console_log_len(&vm.dir);
        step.set("starting QEMU");
        let mut report = self.hypervisor.start(&vm, &launch)?;
        if let Some(j) = journal {
            j.kill_point("after-qemu-start");
        }
        self.report_accel(&report);
        step.set(&format!("booting ({})", report.accel));
        match self.hypervisor.wait_ready(&vm, since, timeout) {
            // Multi-threaded TCG (QEMU 7.2) occasionally crashes a guest kernel early in boot (an
            // emulator flaw, not a property of the machine): one more boot is the dependable
            // answer. Anything else (no init, no root) would fail the same way again.
            Err(n2d_vm::VmError::ExitedDuringBoot { failure, .. }) if failure.is_retryable() => {
                self.progress.say(&format!(
                    "warning: {}'s kernel panicked during boot under emulation; booting it again",
                    record.spec.name
                ));
                let since = console_log_len(&vm.dir);
                report = self.hypervisor.start(&vm, &launch)?;
                self.hypervisor.wait_ready(&vm, since, timeout)?;
            }
            other => other?,
        }
        Ok(report)
    }

    /// One Docker API ping from the host, over TLS with the user's client certificate.
    pub fn ping_docker(&self, record: &MachineRecord) -> Result<()> {
        self.ping_endpoint(&self.endpoint(record))
    }

    /// [`Self::ping_docker`] for any endpoint (a machine on another host).
    pub fn ping_endpoint(&self, endpoint: &n2d_swarm::Endpoint) -> Result<()> {
        let api = self.connect(endpoint, 30)?;
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
        let mut last = None;
        for attempt in 0..5 {
            match rt.block_on(api.ping()) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(self.timing.ping_backoff * (1 << attempt));
        }
        Err(last.expect("set on failure").into())
    }

    /// `n2d create`: allocate, boot, wait; undo everything on failure. A kill midway leaves the
    /// journal: recovery undoes a create that had not yet written the machine's record, and
    /// keeps one that had (see `recover`).
    pub fn create_machine(
        &self,
        spec: &MachineSpec,
        swarm: Option<&str>,
        timeout: Duration,
    ) -> Result<MachineRecord> {
        let template = if self.cold.load(Ordering::Relaxed) { None } else { self.warm_template_for(spec) };
        let step = self.progress.step(&format!("Creating {}", spec.name));
        let (mut record, mut rollback, journal) = self.prepare_machine(spec, swarm, template.as_ref())?;
        {
            let vm = self.vm_handle(&spec.name);
            rollback.push(move || {
                let _ = self.hypervisor.kill(&vm);
            });
        }
        if let Err(e) = self.first_boot(&mut record, template.as_ref(), timeout, &*step, &journal) {
            // Undo under the lock, so a concurrent create of the same name cannot slip in between.
            let _lock = self.home.lock()?;
            drop(rollback);
            let _ = journal.finish();
            return Err(e);
        }
        journal.kill_point("after-ready");
        rollback.commit();
        // The machine is complete: a journal left behind (a full disk) is only kept by recovery.
        let _ = journal.finish();
        step.done(&format!(
            "{} is up at {} (Docker endpoint {})",
            record.spec.name,
            record.ip,
            record.docker_host()
        ));
        Ok(record)
    }

    pub fn load_record(&self, name: &MachineName) -> Result<MachineRecord> {
        Ok(self.home.load_machine(name)?)
    }

    pub fn machine_state(&self, name: &MachineName) -> VmState {
        self.hypervisor.state(&self.vm_handle(name))
    }

    /// `n2d start`: recreate the bridge and tap if the host lost them, then boot. A boot that
    /// fails leaves the machine stopped, not half up. `Ok(false)`: it was already running.
    pub fn start_machine(&self, name: &MachineName, timeout: Duration) -> Result<bool> {
        let record = self.load_record(name)?;
        if self.machine_state(name) == VmState::Running {
            return Ok(false);
        }
        let journal = self.begin(Operation::Start { machine: name.clone() })?;
        let result = self.start_steps(name, &record, timeout, &journal);
        let _ = journal.finish();
        result.map(|()| true)
    }

    fn start_steps(
        &self,
        name: &MachineName,
        record: &MachineRecord,
        timeout: Duration,
        journal: &Journal,
    ) -> Result<()> {
        if !record.user_mode() {
            // The bridge and tap are recreated if the host lost them (a reboot), with the
            // recorded address, tap and MAC: the certificate and the guest's configuration name
            // them.
            let _lock = self.home.lock()?;
            let home = self.home_key();
            let claims = self.home_claims();
            let request = AttachRequest {
                home: &home,
                machine: name.as_str(),
                bridge: &record.spec.bridge,
                addresses: record.spec.addresses,
                subnet: Some((record.gateway, record.prefix_len)),
                claims: &claims,
                expose: record.spec.expose,
            };
            let keep = Claim {
                machine: name.to_string(),
                bridge: record.spec.bridge.clone(),
                ip: record.ip,
                tap: record.tap.clone(),
                mac: record.mac.clone(),
            };
            self.net.attach(&self.runner, &request, Some(&keep))?;
        }
        journal.kill_point("after-attach");
        let step = self.progress.step(&format!("Starting {name}"));
        if let Err(e) = self.boot_or_resume(record, timeout, &*step, journal) {
            let _ = self.hypervisor.kill(&self.vm_handle(name));
            return Err(e);
        }
        step.done(&format!("{name} is up at {} (Docker endpoint {})", record.ip, record.docker_host()));
        // A swarm port whose node is down comes to this one.
        self.place_ports_of_swarm_of(record)
    }

    /// Stops the VM; the home's switch goes with its last user-mode machine, and the swarm
    /// ports the machine held move to another running node.
    pub fn stop_machine(&self, name: &MachineName, timeout: Duration) -> Result<StopOutcome> {
        let record = self.load_record(name)?;
        let outcome = self.hypervisor.stop(&self.vm_handle(name), timeout)?;
        if record.user_mode() {
            self.after_user_machine_left(&record)?;
        }
        Ok(outcome)
    }

    /// What a user-mode machine that stopped or went away leaves to do: its swarm's ports
    /// move to a running node, and the switch stops when no machine uses it.
    pub(crate) fn after_user_machine_left(&self, record: &MachineRecord) -> Result<()> {
        self.place_ports_of_swarm_of(record)?;
        self.stop_switch_if_idle()?;
        Ok(())
    }

    /// Removes the VM, its disks, tap and IP lease; the bridge too when n2d made it and no
    /// machine of any home uses it now.
    pub fn remove_machine(&self, name: &MachineName, force: bool) -> Result<()> {
        let dir = self.home.machine_dir(name);
        if !dir.exists() {
            return Err(n2d_store::StoreError::NoSuchMachine(name.to_string()).into());
        }
        // A damaged (or never written) record still leaves enough to clean up: QEMU is found by
        // its pid file, the tap and lease by the machine's name.
        let vm = self.vm_handle(name);
        let running = self.hypervisor.state(&vm) == VmState::Running;
        if running && !force {
            return Err(Error::MachineRunning { name: name.to_string() });
        }
        // A kill from here on leaves the journal: recovery finishes the removal once the VM is
        // not running.
        let mut journal = self.begin(Operation::Rm { machine: name.clone() })?;
        let result = self.remove_steps(name, running, &mut journal);
        let _ = journal.finish();
        result
    }

    fn remove_steps(&self, name: &MachineName, running: bool, journal: &mut Journal) -> Result<()> {
        if running {
            self.hypervisor.kill(&self.vm_handle(name))?;
            journal.step("vm-killed")?;
        }
        self.hypervisor.release(&self.vm_handle(name));
        let record = self.home.load_machine(name).ok();
        {
            let _lock = self.home.lock()?;
            // A fault on it goes with it (its chain names its tap).
            if let Ok(Some(fault)) = self.home.load_fault(name) {
                self.undo_fault(&fault)?;
            }
            self.release_machine(name)?;
            journal.step("detached")?;
            remove_dir_all(&self.home.machine_dir(name))?;
        }
        if let Some(record) = record.filter(MachineRecord::user_mode) {
            self.after_user_machine_left(&record)?;
        }
        Ok(())
    }

    /// Gives back a machine's lease and tap (and the bridge when it was the last): the tap its
    /// record names, else the one its name derives from, so a tap a kill left without a lease
    /// goes too. The caller holds the state lock.
    pub(crate) fn release_machine(&self, name: &MachineName) -> Result<()> {
        let home = self.home_key();
        let record = self.home.load_machine(name);
        // A user-mode machine holds nothing host-wide.
        if record.as_ref().is_ok_and(MachineRecord::user_mode) {
            return Ok(());
        }
        // The record names the tap even when the host-wide state was lost (a reboot).
        let tap = record.map(|r| r.tap).unwrap_or_else(|_| tap_for(&home, name.as_str(), 0));
        for note in self.net.detach(&self.runner, &home, name.as_str(), Some(&tap))? {
            self.progress.say(&note);
        }
        Ok(())
    }

    /// Gives back what the host still holds for a machine whose directory was removed by hand
    /// (its lease, its tap, the bridge if it was the last), as `rm` would have.
    pub fn forget_machine(&self, name: &MachineName) -> Result<()> {
        let _lock = self.home.lock()?;
        for note in self.net.detach(&self.runner, &self.home_key(), name.as_str(), None)? {
            self.progress.say(&note);
        }
        Ok(())
    }
}

/// The addresses a machine's server certificate names: its own, and 127.0.0.1 only for a
/// user-mode machine, whose API the host reaches through a forward on 127.0.0.1. A bridge
/// machine's certificate does not name 127.0.0.1: whatever answers on the host's loopback is not
/// that machine. No `localhost` either, for the same reason.
pub fn server_ips(record: &MachineRecord) -> Vec<IpAddr> {
    let mut ips = vec![IpAddr::from(record.ip)];
    if record.user_mode() {
        ips.push(IpAddr::from([127, 0, 0, 1]));
    }
    ips
}

/// 32 bytes from the host's kernel RNG, for a guest's [`n2d_proto::Seed`].
pub(crate) fn fresh_seed() -> n2d_proto::Seed {
    let mut seed = [0u8; 32];
    let mut filled = 0;
    while filled < seed.len() {
        // getrandom(2) blocks only before the host's pool is initialised, and never fails
        // otherwise but for EINTR.
        match rustix::rand::getrandom(&mut seed[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("getrandom failed: {e}"),
        }
    }
    n2d_proto::Seed(seed)
}
