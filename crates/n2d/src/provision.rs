//! Creating, starting, stopping and removing machines: the steps `create` and `swarm` share.
//!
//! A create that fails midway undoes what it made, in reverse order ([`Rollback`]): VM, tap
//! and IP lease (host-wide, see `n2d_net::host`), machine directory.

use crate::context::Ctx;
use crate::progress::Step;
use crate::UsageError;
use anyhow::{bail, Context as _, Result};
use n2d_exec::{Cmd, Runner};
use n2d_image::{build_image, find_image, list_images, BuildOptions, Image};
use n2d_net::host::{AttachRequest, Claim};
use n2d_pki::Ca;
use n2d_proto::{encode_config_disk, DockerConfig, GuestConfig, GuestNetwork, TlsMaterial};
use n2d_spec::machine::{MachineName, MachineSpec};
use n2d_store::{remove_dir_all, write_atomic, MachineRecord};
use n2d_vm::qemu::console_log_len;
use n2d_vm::{Hypervisor, StartReport, StopOutcome, VmConfig, VmState};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use n2d_vm::argv::{CONFIG_DISK_FILE as CONFIG_DISK, DATA_DISK_FILE as DATA_DISK};

/// Undo actions, run newest first unless the operation commits.
#[derive(Default)]
pub struct Rollback<'a> {
    undo: Vec<Box<dyn FnOnce() + Send + 'a>>,
}

impl<'a> Rollback<'a> {
    pub fn push(&mut self, f: impl FnOnce() + Send + 'a) {
        self.undo.push(Box::new(f));
    }
    pub fn commit(mut self) {
        self.undo.clear();
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        while let Some(f) = self.undo.pop() {
            f();
        }
    }
}

static SAID_WHY_NOT_KVM: AtomicBool = AtomicBool::new(false);

/// Tells the user once per run that VMs run under emulation, and why.
fn report_accel(report: &StartReport) {
    if let Some(why) = &report.why_not_kvm {
        if !SAID_WHY_NOT_KVM.swap(true, Ordering::Relaxed) {
            crate::progress::say(format!("note: KVM is not available ({why}): VMs run under QEMU's software emulation (TCG), which is slower"));
        }
    }
}

/// The image to boot: the one named, else the newest built, else a fresh build of the default.
pub fn resolve_image(ctx: &Ctx, id: Option<&str>) -> Result<Image> {
    if let Some(id) = id {
        return Ok(find_image(&ctx.home, id)?);
    }
    if let Some(image) = list_images(&ctx.home).into_iter().next() {
        return Ok(image);
    }
    eprintln!("No image yet: building the default image first.");
    build_default_image(ctx, &crate::args::ImageBuildArgs::default())
}

pub fn build_default_image(ctx: &Ctx, args: &crate::args::ImageBuildArgs) -> Result<Image> {
    let opts = BuildOptions {
        init: crate::guest_init::guest_init(args.init.clone())?,
        suite: args.suite.clone(),
        mirror: args.mirror.clone(),
    };
    let step = Step::start("Building image");
    let total = n2d_image::Stage::ALL.len();
    let (image, cached) = build_image(&ctx.home, &ctx.runner, &opts, &|stage| {
        step.set(format!("[{}/{total}] {}", stage.number(), stage.describe()));
    })?;
    let m = &image.manifest;
    step.done(format!(
        "Image {} {} (kernel {}, initrd {}, root {}; {} unpacked)",
        m.short_id(),
        if cached { "already built" } else { "built" },
        mb(m.kernel_bytes),
        mb(m.initrd_bytes),
        mb(m.rootfs_bytes),
        mb(m.rootfs_unpacked_bytes)
    ));
    Ok(image)
}

pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub fn vm_config(ctx: &Ctx, record: &MachineRecord, image: &Image) -> VmConfig {
    let dir = ctx.home.machine_dir(&record.spec.name);
    VmConfig {
        name: record.spec.name.to_string(),
        cpus: record.spec.cpus,
        memory_mib: record.spec.memory.mib(),
        kernel: image.kernel(),
        initrd: image.initrd(),
        rootfs: image.rootfs(),
        tap: record.tap.clone(),
        mac: record.mac.clone(),
        dir,
    }
}

/// Validates a spec and the name's availability before anything is made.
pub fn check_new_machine(ctx: &Ctx, spec: &MachineSpec) -> Result<()> {
    spec.validate()?;
    if ctx.home.machine_exists(&spec.name) {
        bail!(UsageError(format!(
            "a machine named {:?} already exists: pick another name or remove it with `n2d rm -f {}`",
            spec.name.as_str(),
            spec.name
        )));
    }
    Ok(())
}

/// Allocates everything a machine needs (IP, tap, certificate, disks) and records it. On
/// error nothing is left behind; on success the returned [`Rollback`] undoes it all unless
/// committed.
pub fn prepare_machine<'a>(
    ctx: &'a Ctx,
    spec: &MachineSpec,
    swarm: Option<&str>,
) -> Result<(MachineRecord, Rollback<'a>)> {
    let _lock = ctx.home.lock()?;
    check_new_machine(ctx, spec)?;
    let name = spec.name.to_string();
    let mut rollback = Rollback::default();

    let dir = ctx.home.machine_dir(&spec.name);
    // QEMU's sockets are created relative to the machine directory, but clients connect by
    // full path, which Linux limits to 107 bytes.
    if dir.join("console.sock").as_os_str().len() > 100 {
        bail!(UsageError(format!(
            "the state directory path {} is too long for QEMU's sockets: set N2D_HOME to a shorter path",
            dir.display()
        )));
    }
    // The directory comes first: a host-wide lease whose machine directory is gone is taken
    // for stale by every home.
    n2d_store::ensure_dir(&dir)?;
    {
        let dir = dir.clone();
        rollback.push(move || {
            let _ = remove_dir_all(&dir);
        });
    }
    let home = ctx.home_key();
    let claims = home_claims(ctx);
    let request = AttachRequest {
        home: &home,
        machine: &name,
        bridge: &spec.bridge,
        addresses: spec.addresses,
        subnet: None,
        claims: &claims,
    };
    let net = ctx.net.attach(&ctx.runner, &request, None)?;
    {
        let (home, name, tap) = (home.clone(), name.clone(), net.tap.clone());
        rollback.push(move || {
            let _ = ctx.net.detach(&ctx.runner, &home, &name, Some(&tap));
        });
    }

    let record = MachineRecord {
        spec: spec.clone(),
        ip: net.ip,
        prefix_len: net.prefix_len,
        gateway: net.gateway,
        mac: net.mac,
        tap: net.tap,
        swarm: swarm.map(str::to_string),
    };
    write_config_disk(ctx, &record)?;
    ctx.runner
        .run(
            &Cmd::new("qemu-img", "qemu-utils")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(dir.join(DATA_DISK))
                .arg(spec.disk.0.to_string()),
        )
        .context("cannot create the data disk")?;
    // qemu-img runs under n2d's umask (0077), but the disk holds the node's swarm keys: make
    // sure it is private whatever the tool did.
    std::fs::set_permissions(dir.join(DATA_DISK), std::fs::Permissions::from_mode(n2d_store::FILE_MODE))
        .context("cannot make the data disk private")?;
    ctx.home.save_machine(&record)?;
    Ok((record, rollback))
}

/// The addresses this home's machines hold (from their records), which every attach
/// re-asserts host-wide: after a reboot empties `/run`, no other home takes them.
fn home_claims(ctx: &Ctx) -> Vec<Claim> {
    ctx.home
        .list_machines()
        .into_iter()
        .filter_map(|(_, rec)| rec.ok())
        .map(|r| Claim {
            machine: r.spec.name.to_string(),
            bridge: r.spec.bridge,
            ip: r.ip,
            tap: r.tap,
            mac: r.mac,
        })
        .collect()
}

/// Writes the config disk: network, TLS material (a fresh server certificate for the machine's
/// IP and name), labels.
fn write_config_disk(ctx: &Ctx, record: &MachineRecord) -> Result<()> {
    let spec = &record.spec;
    let tls = if spec.insecure_tcp {
        None
    } else {
        let ca = Ca::load_or_create(&ctx.home.certs_dir())?;
        let ips: Vec<IpAddr> = vec![record.ip.into(), IpAddr::from([127, 0, 0, 1])];
        // No `localhost`: a certificate for every machine's loopback name would let any of them
        // stand in for another behind a local forward.
        let server = ca.issue_server(&spec.name, &ips)?;
        Some(TlsMaterial {
            ca_pem: ca.cert_pem().to_string(),
            cert_pem: server.cert_pem,
            key_pem: server.key_pem,
        })
    };
    let config = GuestConfig {
        hostname: spec.name.to_string(),
        network: GuestNetwork {
            mac: record.mac.clone(),
            address: record.ip,
            prefix_len: record.prefix_len,
            gateway: Some(record.gateway),
            dns: n2d_net::host_nameservers(),
        },
        docker: DockerConfig { tls, tcp_port: spec.docker_port() },
        labels: spec.labels.clone(),
    };
    let path = ctx.home.machine_dir(&spec.name).join(CONFIG_DISK);
    // It holds the server's private key.
    write_atomic(&path, &encode_config_disk(&config)?, 0o600)?;
    Ok(())
}

/// Starts the VM and waits until its Docker engine answers (ready marker, then a TLS ping).
pub fn boot(ctx: &Ctx, record: &MachineRecord, timeout: Duration, step: &Step) -> Result<StartReport> {
    let image = find_image(&ctx.home, &record.spec.image)?;
    let vm = vm_config(ctx, record, &image);
    let since = console_log_len(&vm.dir);
    step.set("starting QEMU");
    let mut report = ctx.qemu.start(&vm)?;
    report_accel(&report);
    step.set(format!("booting ({})", report.accel));
    match ctx.qemu.wait_ready(&vm, since, timeout) {
        // Multi-threaded TCG (QEMU 7.2) occasionally crashes a guest kernel early in boot (an
        // emulator flaw, not a property of the machine): one more boot is the dependable answer.
        // Anything else (no init, no root) would fail the same way again and is reported.
        Err(n2d_vm::VmError::ExitedDuringBoot { failure, .. }) if failure.is_retryable() => {
            crate::progress::say(format!(
                "warning: {}'s kernel panicked during boot under emulation; booting it again",
                record.spec.name
            ));
            let since = console_log_len(&vm.dir);
            report = ctx.qemu.start(&vm)?;
            ctx.qemu.wait_ready(&vm, since, timeout)?;
        }
        other => other?,
    }
    step.set("checking the Docker API from the host");
    ping_docker(ctx, record).with_context(|| {
        format!("{}'s Docker engine is up but does not answer on {}", record.spec.name, record.docker_host())
    })?;
    Ok(report)
}

/// One Docker API ping from the host, over TLS with the user's client certificate.
pub fn ping_docker(ctx: &Ctx, record: &MachineRecord) -> Result<()> {
    let api = crate::commands::connect(&crate::commands::endpoint(ctx, record), 30)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut last = None;
    for attempt in 0..5 {
        match rt.block_on(n2d_swarm::DockerApi::ping(&api)) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(500 << attempt));
    }
    Err(last.expect("set on failure").into())
}

/// `n2d create`: allocate, boot, wait; undo everything on failure.
pub fn create_machine(
    ctx: &Ctx,
    spec: &MachineSpec,
    swarm: Option<&str>,
    timeout: Duration,
) -> Result<MachineRecord> {
    let step = Step::start(format!("Creating {}", spec.name));
    let (record, mut rollback) = prepare_machine(ctx, spec, swarm)?;
    {
        let (qemu, vm) = (&ctx.qemu, vm_config(ctx, &record, &find_image(&ctx.home, &spec.image)?));
        rollback.push(move || {
            let _ = qemu.kill(&vm);
        });
    }
    if let Err(e) = boot(ctx, &record, timeout, &step) {
        // Undo under the lock, so a concurrent create of the same name cannot slip in between.
        let _lock = ctx.home.lock()?;
        drop(rollback);
        return Err(e);
    }
    rollback.commit();
    step.done(format!(
        "{} is up at {} (Docker endpoint {})",
        record.spec.name,
        record.ip,
        record.docker_host()
    ));
    Ok(record)
}

pub fn load_record(ctx: &Ctx, name: &MachineName) -> Result<MachineRecord> {
    Ok(ctx.home.load_machine(name)?)
}

pub fn machine_state(ctx: &Ctx, record: &MachineRecord) -> VmState {
    let name = &record.spec.name;
    ctx.qemu.state(&bare_vm(name, ctx.home.machine_dir(name)))
}

/// A VmConfig good enough for state/stop/kill (which only need the directory and name),
/// usable even when the machine's record is damaged or its image is gone.
fn bare_vm(name: &MachineName, dir: std::path::PathBuf) -> VmConfig {
    VmConfig {
        name: name.to_string(),
        dir,
        cpus: 1,
        memory_mib: 0,
        kernel: Default::default(),
        initrd: Default::default(),
        rootfs: Default::default(),
        tap: String::new(),
        mac: String::new(),
    }
}

/// `n2d start`: recreate the bridge and tap if the host lost them, then boot. A boot that
/// fails leaves the machine stopped, not half up.
pub fn start_machine(ctx: &Ctx, name: &MachineName, timeout: Duration) -> Result<()> {
    let record = load_record(ctx, name)?;
    if machine_state(ctx, &record) == VmState::Running {
        eprintln!("{name} is already running");
        return Ok(());
    }
    {
        // The bridge and tap are recreated if the host lost them (a reboot), with the recorded
        // address, tap and MAC: the certificate and the guest's configuration name them.
        let _lock = ctx.home.lock()?;
        let home = ctx.home_key();
        let claims = home_claims(ctx);
        let request = AttachRequest {
            home: &home,
            machine: name.as_str(),
            bridge: &record.spec.bridge,
            addresses: record.spec.addresses,
            subnet: Some((record.gateway, record.prefix_len)),
            claims: &claims,
        };
        let keep = Claim {
            machine: name.to_string(),
            bridge: record.spec.bridge.clone(),
            ip: record.ip,
            tap: record.tap.clone(),
            mac: record.mac.clone(),
        };
        ctx.net.attach(&ctx.runner, &request, Some(&keep))?;
    }
    let step = Step::start(format!("Starting {name}"));
    if let Err(e) = boot(ctx, &record, timeout, &step) {
        let _ = ctx.qemu.kill(&bare_vm(name, ctx.home.machine_dir(name)));
        return Err(e);
    }
    step.done(format!("{name} is up at {} (Docker endpoint {})", record.ip, record.docker_host()));
    Ok(())
}

pub fn stop_machine(ctx: &Ctx, name: &MachineName, timeout: Duration) -> Result<StopOutcome> {
    load_record(ctx, name)?;
    Ok(ctx.qemu.stop(&bare_vm(name, ctx.home.machine_dir(name)), timeout)?)
}

/// Removes the VM, its disks, tap and IP lease; the bridge too when n2d made it and no
/// machine of any home uses it now.
pub fn remove_machine(ctx: &Ctx, name: &MachineName, force: bool) -> Result<()> {
    let dir = ctx.home.machine_dir(name);
    if !dir.exists() {
        bail!(UsageError(format!("no machine named {name:?} (see `n2d ls`)")));
    }
    // A damaged (or never written) record still leaves enough to clean up: QEMU is found by
    // its pid file, the tap and lease by the machine's name.
    let vm = bare_vm(name, dir.clone());
    if ctx.qemu.state(&vm) == VmState::Running {
        if !force {
            bail!(UsageError(format!(
                "{name} is running: stop it first (`n2d stop {name}`) or use `n2d rm -f {name}`"
            )));
        }
        ctx.qemu.kill(&vm)?;
    }
    let _lock = ctx.home.lock()?;
    // The record names the tap even when the host-wide state was lost (a reboot).
    let tap = ctx.home.load_machine(name).ok().map(|r| r.tap);
    for note in ctx.net.detach(&ctx.runner, &ctx.home_key(), name.as_str(), tap.as_deref())? {
        crate::progress::say(note);
    }
    remove_dir_all(&dir)?;
    Ok(())
}
