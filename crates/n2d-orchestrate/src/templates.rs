//! Warm templates: a node booted once to a running Docker engine with no identity, saved, and
//! restored as many clones (issue 20).
//!
//! A template belongs to an image and a shape (vCPUs, memory, data disk size, bridge or
//! user-mode NICs) under one accelerator, and lives in the image's directory:
//!
//! ```text
//! images/<id>/templates/<shape>.<made-ms>/   read-only once made, never changed
//!     ram          the guest's RAM (QEMU's memory-backend-file, share=on while it ran)
//!     state        the device state (QMP migrate, RAM left out: x-ignore-shared)
//!     data.qcow2   its data disk, frozen: each clone's is a qcow2 layer over it
//!     config.img   the template's config disk (no identity: no TLS, no seed, links down)
//!     template.json  what it was made from and for, and what its files must still be
//! ```
//!
//! A clone maps `ram` copy-on-write (pages none of them wrote stay shared through the host's
//! page cache), loads `state` into a QEMU waiting with `-incoming defer`, and is handed its
//! identity over the control port (`identity <unix_ms>`: n2d-init re-reads the clone's own
//! config disk and takes its MACs, addresses, hostname, machine-id, seed, TLS material and a
//! new engine ID before dockerd listens on TCP). What clones share is what the template held
//! before any identity existed: no key, token or random state.
//!
//! Templates are immutable: a newer one gets a new directory, and one that is damaged or made
//! by another QEMU build is passed over (a cold boot, said in one line). One a machine was cloned
//! from stays as long as the image (its data disk is that machine's base).

use crate::{Error, Orchestrator, Result};
use n2d_exec::{Cmd, Runner};
use n2d_image::Image;
use n2d_net::user::uplink_mac;
use n2d_proto::{encode_config_disk, Addressing, DockerConfig, GuestConfig, GuestNetwork, GuestUplink};
use n2d_spec::machine::MachineSpec;
use n2d_store::{ensure_dir, read_json, remove_dir_all, write_atomic, write_json};
use n2d_swarm::Connector;
use n2d_vm::argv::{CONFIG_DISK_FILE, DATA_DISK_FILE};
use n2d_vm::{Accel, Hypervisor, Memory, Nic, VmHandle, VmLaunch};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directory of an image's templates.
pub const TEMPLATES_DIR: &str = "templates";
const RAM_FILE: &str = "ram";
const STATE_FILE: &str = "state";
const RECORD_FILE: &str = "template.json";
/// A template being made: `images/.warm-<pid>-<ms>`.
const MAKING_PREFIX: &str = ".warm-";
/// The MAC of a template's NIC: every clone replaces it with its own.
const TEMPLATE_MAC: &str = "52:54:00:00:00:01";
/// How long a template's boot may take before it is given up (a cold boot then).
const TEMPLATE_BOOT: Duration = Duration::from_secs(600);
/// How long a clone may take from its identity request to its ready marker (about 8 s on a
/// 2-core host under emulation, 17 s for four at once) before it is booted cold instead.
pub(crate) const CLONE_READY: Duration = Duration::from_secs(180);
/// How long saving a template, or loading one into a clone, may take.
pub(crate) const STATE_TRANSFER: Duration = Duration::from_secs(120);

/// What a template must match to be cloned for a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
    /// Two NICs (the home's switch and QEMU's user-mode stack) instead of one on a tap.
    pub user_network: bool,
}

impl Shape {
    pub fn of(spec: &MachineSpec) -> Shape {
        Shape {
            cpus: spec.cpus,
            memory_mib: spec.memory.mib(),
            disk_bytes: spec.disk.0,
            user_network: spec.user_network(),
        }
    }

    /// The shape as the start of a template's directory name, e.g. `tcg-1cpu-2048m-disk20480m-bridge`.
    pub fn key(&self, accel: Accel) -> String {
        let net = if self.user_network { "user" } else { "bridge" };
        let disk = if self.disk_bytes.is_multiple_of(1 << 20) {
            format!("{}m", self.disk_bytes >> 20)
        } else {
            format!("{}b", self.disk_bytes)
        };
        format!("{accel}-{}cpu-{}m-disk{disk}-{net}", self.cpus, self.memory_mib)
    }
}

/// The shape `n2d image warm` makes a template for, as `n2d create` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmRequest {
    /// Default: the hypervisor's.
    pub cpus: Option<u32>,
    pub memory: String,
    pub disk: String,
    /// A bridge, or `user`; default: [`Orchestrator::default_network`].
    pub network: Option<String>,
}

/// A file as it was when its template was made; a file that differs was changed or replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStamp {
    pub len: u64,
    pub inode: u64,
    pub mtime_ns: i64,
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<FileStamp> {
        let m = std::fs::metadata(path)?;
        Ok(FileStamp { len: m.len(), inode: m.ino(), mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec() })
    }
}

/// `template.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRecord {
    pub image: String,
    pub shape: Shape,
    pub accel: String,
    /// The QEMU build that saved it (`Hypervisor::build`): only that one loads it.
    pub qemu: String,
    pub made_unix_ms: u64,
    /// The device state's sha256, checked before every clone (it is small).
    pub state_sha256: String,
    /// The RAM file and the data disk: large, so checked by stamp (size, inode, mtime) before
    /// each clone. Made read-only, they change only if something rewrites them.
    pub ram: FileStamp,
    pub data: FileStamp,
    /// The config disk's size: a clone's must be the same (the guest knows the disk's size).
    pub config_disk_len: u64,
}

/// A template found fit to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub dir: PathBuf,
    pub record: TemplateRecord,
}

impl Template {
    /// Its directory's name, which a clone's record keeps.
    pub fn name(&self) -> String {
        self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
    pub fn ram(&self) -> PathBuf {
        self.dir.join(RAM_FILE)
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }
    pub fn data(&self) -> PathBuf {
        self.dir.join(DATA_DISK_FILE)
    }
    pub fn accel(&self) -> Accel {
        Accel::from_recorded(&self.record.accel)
    }
}

/// Why a template cannot be cloned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    #[error("it was saved by another QEMU ({0})")]
    OtherQemu(String),
    #[error("its {0} was changed or removed since it was made")]
    Changed(&'static str),
    #[error("its record is unreadable: {0}")]
    Unreadable(String),
}

/// Checks a template directory against what a clone needs: the record, the QEMU build, every
/// file's stamp and the state's digest.
pub fn check_template(dir: &Path, qemu: &str) -> std::result::Result<Template, Unfit> {
    let record: TemplateRecord =
        read_json(&dir.join(RECORD_FILE)).map_err(|e| Unfit::Unreadable(crate::swarm::chain(&e)))?;
    if record.qemu != qemu {
        return Err(Unfit::OtherQemu(record.qemu));
    }
    for (file, stamp, what) in
        [(RAM_FILE, &record.ram, "RAM file"), (DATA_DISK_FILE, &record.data, "data disk")]
    {
        if FileStamp::of(&dir.join(file)).ok().as_ref() != Some(stamp) {
            return Err(Unfit::Changed(what));
        }
    }
    let state = std::fs::read(dir.join(STATE_FILE)).map_err(|_| Unfit::Changed("device state"))?;
    if hex::encode(Sha256::digest(&state)) != record.state_sha256 {
        return Err(Unfit::Changed("device state"));
    }
    let config_len = std::fs::metadata(dir.join(CONFIG_DISK_FILE)).map(|m| m.len()).ok();
    if config_len != Some(record.config_disk_len) {
        return Err(Unfit::Changed("config disk"));
    }
    Ok(Template { dir: dir.to_path_buf(), record })
}

/// The templates of `image` whose directory names start with `key`, newest first.
fn candidates(image: &Image, key: &str) -> Vec<PathBuf> {
    let mut found: Vec<(u64, PathBuf)> = template_dirs(&image.dir)
        .into_iter()
        .filter_map(|dir| {
            let name = dir.file_name()?.to_str()?;
            let made: u64 = name.strip_prefix(key)?.strip_prefix('.')?.parse().ok()?;
            Some((made, dir))
        })
        .collect();
    found.sort_by_key(|(made, _)| std::cmp::Reverse(*made));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Every template directory of an image, by name.
pub fn template_dirs(image_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(image_dir.join(TEMPLATES_DIR)) else { return Vec::new() };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    dirs
}

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// `--cold`: machines created from now on boot, none is cloned from a warm template.
    pub fn set_cold_boots(&self, cold: bool) {
        self.cold.store(cold, std::sync::atomic::Ordering::Relaxed);
    }

    /// `n2d image warm`: the template of image `id` (else the newest) for machines of `req`'s
    /// shape, made now unless a fit one exists. Returns it and whether it was made.
    pub fn warm_image(&self, id: Option<&str>, req: &WarmRequest) -> Result<(Template, bool)> {
        // The machines it serves, checked as `create` checks them (vCPUs, memory and disk in
        // range) before anything is booted.
        let machines = MachineSpec {
            name: "template".parse().expect("a valid machine name"),
            cpus: req.cpus.unwrap_or_else(|| self.hypervisor.default_cpus()),
            memory: crate::error::size_flag("--memory", &req.memory)?,
            disk: crate::error::size_flag("--disk", &req.disk)?,
            bridge: req.network.clone().unwrap_or_else(|| self.default_network()),
            addresses: None,
            image: String::new(),
            insecure_tcp: false,
            labels: Default::default(),
            publish: Vec::new(),
            expose: false,
            mounts: Vec::new(),
        };
        machines.validate()?;
        let shape = Shape::of(&machines);
        let image = self.named_or_newest(id)?.ok_or(Error::NoImageToWarm)?;
        self.fit_or_make_template(&image, &shape)
    }

    /// The newest fit template of `image` for `shape`, else one made now; and whether it was
    /// made. One at a time: the nodes of a swarm ask together, and one template serves them all.
    fn fit_or_make_template(&self, image: &Image, shape: &Shape) -> Result<(Template, bool)> {
        let _gate = self.template_gate.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = self.fit_template(image, shape)? {
            return Ok((t, false));
        }
        Ok((self.make_template(image, shape)?, true))
    }

    /// The template a machine of `spec` is cloned from: the newest fit one, else one made now
    /// (said as it is made). `None`, with a line saying why, when none can be had: the machine
    /// then boots cold, as without templates. A machine on plain TCP (`--insecure-tcp`) always
    /// boots: a clone's identity includes its TLS endpoint. So does one with host folders
    /// (`--mount`): a template's devices are its clones', and it has none.
    pub fn warm_template_for(&self, spec: &MachineSpec) -> Option<Template> {
        if spec.insecure_tcp {
            return None;
        }
        if !spec.mounts.is_empty() {
            self.progress.say(&format!("{}: host folders are shared from boot, so it boots cold", spec.name));
            return None;
        }
        let image = n2d_image::find_image(&self.home, &spec.image).ok()?;
        match self.fit_or_make_template(&image, &Shape::of(spec)) {
            Ok((t, _)) => Some(t),
            Err(e) => {
                self.progress.say(&format!(
                    "warning: no warm template for image {} ({}): machines boot cold",
                    short(&image.manifest.id),
                    crate::swarm::chain(&e)
                ));
                None
            }
        }
    }

    /// The newest template of `image` fit for `shape` under this host's accelerator and QEMU.
    /// Unfit ones are passed over with a line naming why; none made yet is `Ok(None)`.
    pub fn fit_template(&self, image: &Image, shape: &Shape) -> Result<Option<Template>> {
        let Some(qemu) = self.hypervisor.build() else {
            return Err(Error::TemplateUnusable { reason: "QEMU's version cannot be told".into() });
        };
        for dir in candidates(image, &shape.key(self.hypervisor.accel())) {
            match check_template(&dir, &qemu) {
                Ok(t) if t.record.shape == *shape && t.record.image == image.manifest.id => {
                    return Ok(Some(t))
                }
                Ok(_) => {}
                Err(why) => self.progress.say(&format!(
                    "warning: warm template {} is not used: {why}; another is made",
                    dir.display()
                )),
            }
        }
        Ok(None)
    }

    /// Boots a template of `image` for `shape` and saves it: made in a hidden directory and
    /// renamed into place when complete, so a failure or a kill leaves nothing that is used.
    pub fn make_template(&self, image: &Image, shape: &Shape) -> Result<Template> {
        let step = self.progress.step(&format!(
            "Making a warm template of image {} ({} vCPU, {} MiB): once per image and shape",
            short(&image.manifest.id),
            shape.cpus,
            shape.memory_mib
        ));
        let templates = image.dir.join(TEMPLATES_DIR);
        ensure_dir(&templates)?;
        self.sweep_unfinished_templates();
        let accel = self.hypervisor.accel();
        let made_unix_ms = unix_ms();
        let name = format!("{}.{made_unix_ms}", shape.key(accel));
        // Made in a short hidden directory beside the images (QEMU's sockets are in it, and a
        // socket's path is limited to 107 bytes), renamed into place when complete.
        let making =
            self.home.images_dir().join(format!("{MAKING_PREFIX}{}-{made_unix_ms}", std::process::id()));
        if making.join("console.sock").as_os_str().len() > 100 {
            return Err(Error::StatePathTooLong { dir: making });
        }
        ensure_dir(&making)?;
        let vm = VmHandle::new(format!("template-{}", short(&image.manifest.id)), &making);
        let made = self.make_template_in(&vm, image, shape, accel, made_unix_ms, &*step);
        let record = match made {
            Ok(record) => record,
            Err(e) => {
                let _ = self.hypervisor.kill(&vm);
                let _ = remove_dir_all(&making);
                return Err(e);
            }
        };
        let dir = templates.join(&name);
        std::fs::rename(&making, &dir).map_err(|source| Error::TemplateIo { path: dir.clone(), source })?;
        step.done(&format!("warm template ready ({})", dir.display()));
        Ok(Template { dir, record })
    }

    fn make_template_in(
        &self,
        vm: &VmHandle,
        image: &Image,
        shape: &Shape,
        accel: Accel,
        made_unix_ms: u64,
        step: &dyn crate::ProgressStep,
    ) -> Result<TemplateRecord> {
        let dir = &vm.dir;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::TemplateIo { path, source }
        };
        let uplink = shape.user_network.then(|| uplink_mac(TEMPLATE_MAC));
        let config = GuestConfig {
            hostname: "n2d-template".into(),
            // A template takes no address: n2d-init leaves its links down.
            network: GuestNetwork { mac: TEMPLATE_MAC.into(), addressing: Addressing::Dhcp, dns: vec![] },
            docker: DockerConfig { tls: None, tcp_port: 0 },
            labels: Default::default(),
            uplink: uplink.clone().map(|mac| GuestUplink { mac }),
            template: true,
            seed: None,
            mounts: Vec::new(),
        };
        let mut bytes = encode_config_disk(&config)?;
        bytes.resize(bytes.len().max(crate::certs::CONFIG_DISK_ROOM), 0);
        let config_disk = dir.join(CONFIG_DISK_FILE);
        write_atomic(&config_disk, &bytes, n2d_store::FILE_MODE)?;
        let data = dir.join(DATA_DISK_FILE);
        self.runner
            .run(
                &Cmd::new("qemu-img", "qemu-utils")
                    .args(["create", "-q", "-f", "qcow2"])
                    .arg(&data)
                    .arg(shape.disk_bytes.to_string()),
            )
            .map_err(Error::DataDisk)?;
        let ram = dir.join(RAM_FILE);
        let file = std::fs::File::create(&ram).map_err(io(&ram))?;
        file.set_len(shape.memory_mib << 20).map_err(io(&ram))?;
        drop(file);
        let launch = VmLaunch {
            cpus: shape.cpus,
            memory_mib: shape.memory_mib,
            kernel: image.boot_kernel(),
            initrd: image.initrd(),
            rootfs: image.rootfs(),
            nic: Nic::Unplugged { mac: TEMPLATE_MAC.into(), uplink_mac: uplink },
            memory: Memory::TemplateFile(ram.clone()),
            mounts: Vec::new(),
        };
        step.set("booting the template");
        let report = self.hypervisor.start(vm, &launch)?;
        if report.accel != accel {
            return Err(Error::TemplateUnusable {
                reason: format!("it booted under {} instead", report.accel),
            });
        }
        self.hypervisor.wait_ready(vm, 0, TEMPLATE_BOOT)?;
        step.set("saving the template");
        let state = dir.join(STATE_FILE);
        self.hypervisor.save(vm, &state, STATE_TRANSFER)?;
        let qemu = self
            .hypervisor
            .build()
            .ok_or_else(|| Error::TemplateUnusable { reason: "QEMU's version cannot be told".into() })?;
        // Read-only from here on: every clone's data disk is a layer over this one.
        for file in [&ram, &data, &state, &config_disk] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o400)).map_err(io(file))?;
        }
        let state_bytes = std::fs::read(&state).map_err(io(&state))?;
        let record = TemplateRecord {
            image: image.manifest.id.clone(),
            shape: shape.clone(),
            accel: report.accel.to_string(),
            qemu,
            made_unix_ms,
            state_sha256: hex::encode(Sha256::digest(&state_bytes)),
            ram: FileStamp::of(&ram).map_err(io(&ram))?,
            data: FileStamp::of(&data).map_err(io(&data))?,
            config_disk_len: bytes.len() as u64,
        };
        write_json(&dir.join(RECORD_FILE), &record)?;
        Ok(record)
    }

    /// Removes what a killed n2d left while making a template: its hidden directory, after
    /// ending the template's QEMU (found by its pid file there, as any machine's is).
    fn sweep_unfinished_templates(&self) {
        let Ok(entries) = std::fs::read_dir(self.home.images_dir()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(MAKING_PREFIX) else { continue };
            let pid: Option<i32> = rest.split('-').next().and_then(|p| p.parse().ok());
            let maker_alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
            if maker_alive {
                continue;
            }
            let _ = self.hypervisor.kill(&VmHandle::new("template", entry.path()));
            let _ = remove_dir_all(&entry.path());
        }
    }
}

/// The bytes the files of a directory take on disk (allocated blocks: a sparse file counts what
/// it holds).
pub fn allocated_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
