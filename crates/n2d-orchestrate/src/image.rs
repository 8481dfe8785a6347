//! `n2d image build|ls|inspect|rm|prune|export`, and the image a create boots: which machines
//! use which image (an image in use is never removed), the guest init an image carries, and
//! exports (with `--for NAME`, the machine's config disk, signed by the home's CA).
//!
//! A removal renames the image to a hidden name first (`n2d_image::remove_image`), so a removal
//! cut short leaves nothing that lists or boots: it needs no journal. Removals and the CA an
//! export makes are done under the state lock, as creates and removals of machines are.

use crate::{Error, Orchestrator, Result};
use n2d_exec::Runner;
use n2d_export::config::{machine_config, ExportNetwork};
use n2d_export::{ExportRequest, ForMachine};
use n2d_image::{
    find_image, image_files, list_images, remove_image, unreadable_images, BuildOptions, Image, Outcome,
    PackageSource,
};
use n2d_spec::machine::MachineName;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub use n2d_export::config::HostCidr;
pub use n2d_export::{Exported, Format, FormatList, DEFAULT_DISK_SIZE};
pub use n2d_image::{check_static_x86_64, BuildRequest, GuestInit};

/// The largest `--init` read: n2d-init, static with musl, is about 2 MiB in release and tens of
/// MiB as a debug build with its symbols; a cap well above both.
pub const MAX_INIT_BYTES: u64 = 256 << 20;

/// Where the guest's PID 1 comes from: `--init`, else `$N2D_INIT` (read by the caller), else
/// the build the caller carries.
#[derive(Debug, Clone, Default)]
pub struct InitChoice {
    pub explicit: Option<PathBuf>,
    /// `$N2D_INIT`.
    pub env: Option<PathBuf>,
    pub embedded: &'static [u8],
}

/// The init to put in an image (see [`InitChoice`]). A path must name a regular file within
/// [`MAX_INIT_BYTES`]: a FIFO or /dev/zero is refused (a usage error), not read.
pub fn guest_init(choice: &InitChoice) -> Result<GuestInit> {
    match choice.explicit.clone().or_else(|| choice.env.clone()) {
        Some(path) => {
            let bytes = match n2d_store::safe_fs::read_input(&path, MAX_INIT_BYTES, "a guest init") {
                Ok(bytes) => bytes,
                Err(source @ n2d_store::safe_fs::InputFileError::Open { .. }) => {
                    return Err(Error::GuestInitUnreadable { path, source })
                }
                Err(e) => return Err(Error::Usage(format!("{e} (from --init or N2D_INIT)"))),
            };
            Ok(GuestInit { bytes, source: path.display().to_string() })
        }
        None => Ok(GuestInit { bytes: choice.embedded.to_vec(), source: "built into n2d".into() }),
    }
}

/// `n2d image build`'s flags.
#[derive(Debug, Clone, Default)]
pub struct ImageBuild {
    pub init: InitChoice,
    pub request: BuildRequest,
}

/// One image in detail (`n2d image inspect`).
#[derive(Debug, Clone)]
pub struct ImageDetails {
    pub image: Image,
    /// The machines that boot it.
    pub used_by: Vec<String>,
    /// Its files and their bytes, by name.
    pub files: Vec<(String, u64)>,
    /// Its warm templates (directory names) and the bytes each
    /// takes on disk (the RAM file is sparse).
    pub templates: Vec<(String, u64)>,
}

/// What `n2d image prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// One line each: the short ID, or the directory's name of one this n2d cannot read.
    pub removed: Vec<String>,
    pub freed: u64,
}

/// `n2d image export`'s flags.
#[derive(Debug, Clone)]
pub struct ImageExport {
    /// The image (ID or prefix); the newest when `None` (an export never builds).
    pub id: Option<String>,
    pub formats: Vec<Format>,
    pub output: PathBuf,
    pub disk_size: u64,
    /// `--for NAME`: the machine's config (hostname, TLS certificate, network) goes in.
    pub for_name: Option<MachineName>,
    /// A static address (with `gateway`), else DHCP.
    pub ip: Option<HostCidr>,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// Docker engine labels `KEY=VALUE`.
    pub labels: Vec<String>,
    pub hyperv: bool,
}

/// What an export wrote, and what to do next.
#[derive(Debug)]
pub struct ExportReport {
    pub files: Vec<Exported>,
    /// How to adopt the machine once it runs (`--for`).
    pub next_step: Option<String>,
}

/// Megabytes with one decimal, as n2d shows sizes.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn total_bytes(dir: &Path) -> u64 {
    image_files(dir).iter().map(|(_, bytes)| bytes).sum()
}

impl<R: Runner, H, C> Orchestrator<R, H, C> {
    /// The home's images, newest first.
    pub fn images(&self) -> Vec<Image> {
        list_images(&self.home)
    }

    /// Which machines of the home boot each image (by ID). A machine whose record cannot be
    /// read might use any image, so nothing may be removed until it is mended or removed.
    pub fn image_users(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, record) in self.home.list_machines() {
            match record {
                Ok(record) => users.entry(record.spec.image.clone()).or_default().push(name),
                Err(source) => return Err(Error::ImageUsers { name, source }),
            }
        }
        Ok(users)
    }

    /// `n2d image inspect ID`.
    pub fn inspect_image(&self, id: &str) -> Result<ImageDetails> {
        let image = find_image(&self.home, id)?;
        let used_by = self.image_users().unwrap_or_default().remove(&image.manifest.id).unwrap_or_default();
        let files = image_files(&image.dir);
        let templates = crate::templates::template_dirs(&image.dir)
            .into_iter()
            .map(|dir| {
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                (name, crate::templates::allocated_bytes(&dir))
            })
            .collect();
        Ok(ImageDetails { image, used_by, files, templates })
    }

    /// `n2d image rm ID...`: every ID is found and checked to be unused before anything is
    /// removed; returns the short IDs removed.
    pub fn remove_images(&self, ids: &[String]) -> Result<Vec<String>> {
        let _lock = self.home.lock()?;
        let users = self.image_users()?;
        let images = ids.iter().map(|id| find_image(&self.home, id)).collect::<Result<Vec<_>, _>>()?;
        for image in &images {
            if let Some(machines) = users.get(&image.manifest.id) {
                return Err(Error::ImageInUse {
                    image: image.manifest.short_id().to_string(),
                    machines: machines.join(", "),
                });
            }
        }
        let mut removed = Vec::new();
        for image in &images {
            remove_image(&self.home, &image.dir)?;
            removed.push(image.manifest.short_id().to_string());
        }
        Ok(removed)
    }

    /// `n2d image prune`: every image no machine uses, and every image directory this n2d
    /// cannot read whose name no machine boots.
    pub fn prune_images(&self) -> Result<Pruned> {
        let _lock = self.home.lock()?;
        let users = self.image_users()?;
        let mut pruned = Pruned::default();
        for image in list_images(&self.home).iter().filter(|i| !users.contains_key(&i.manifest.id)) {
            pruned.freed += total_bytes(&image.dir);
            remove_image(&self.home, &image.dir)?;
            pruned.removed.push(image.manifest.short_id().to_string());
        }
        for dir in unreadable_images(&self.home) {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if users.contains_key(&name) {
                continue;
            }
            pruned.freed += total_bytes(&dir);
            remove_image(&self.home, &dir)?;
            pruned.removed.push(format!("{name} (not an image this n2d can read)"));
        }
        Ok(pruned)
    }

    /// The image to boot: the one named, else the newest built, else a fresh build of `default`.
    pub fn resolve_image(&self, id: Option<&str>, default: &ImageBuild) -> Result<Image> {
        if let Some(image) = self.named_or_newest(id)? {
            return Ok(image);
        }
        self.progress.say("No image yet: building the default image first.");
        self.build_image(default)
    }

    /// The image `id` names (an unknown or ambiguous one is an error), else the newest built;
    /// `None` when no image is built.
    pub(crate) fn named_or_newest(&self, id: Option<&str>) -> Result<Option<Image>> {
        match id {
            Some(id) => Ok(Some(find_image(&self.home, id)?)),
            None => Ok(list_images(&self.home).into_iter().next()),
        }
    }

    /// `n2d image build`: builds the image (or finds it built), its stages shown as progress.
    pub fn build_image(&self, args: &ImageBuild) -> Result<Image> {
        let opts = BuildOptions {
            init: guest_init(&args.init)?,
            request: args.request.clone(),
            search_path: self.search_path.clone(),
            kill: self.kill.clone(),
        };
        let step = self.progress.step("Building image");
        let total = n2d_image::BuildStage::ALL.len();
        let built = n2d_image::build_image(&self.home, &self.runner, &opts, &|stage| {
            step.set(&format!("[{}/{total}] {}", stage.number(), stage.describe()));
        })?;
        let image = built.image;
        let m = &image.manifest;
        let source = match &built.source {
            Some(PackageSource::Cache { no_network: Some(host) }) => {
                format!(", from the package cache: {host} cannot be reached")
            }
            Some(PackageSource::Cache { no_network: None }) => ", from the package cache".to_string(),
            _ => String::new(),
        };
        step.done(&format!(
            "Image {} {}{source} (kernel {}, initrd {}, root {}; {} unpacked)",
            m.short_id(),
            match built.outcome {
                Outcome::AlreadyBuilt => "already built",
                Outcome::Built => "built",
                Outcome::UpToDate => "up to date (the rebuild gave the same bytes)",
                Outcome::Refreshed => "built with updates (machines keep the image they run)",
            },
            mb(m.kernel_bytes),
            mb(m.initrd_bytes),
            mb(m.rootfs_bytes),
            mb(m.rootfs_unpacked_bytes)
        ));
        Ok(image)
    }

    /// `n2d image export`: checks the flags, makes the config of `--for NAME` (the CA made
    /// under the state lock, as a create makes it), writes the files.
    pub fn export_image(&self, args: &ImageExport) -> Result<ExportReport> {
        if args.hyperv && !args.formats.contains(&Format::Vhdx) {
            return Err(Error::export(n2d_export::ExportError::HyperVNeedsVhdx));
        }
        let network = match (args.ip, args.gateway) {
            (Some(cidr), Some(gateway)) => ExportNetwork::Static { cidr, gateway, dns: args.dns.clone() },
            _ => ExportNetwork::Dhcp,
        };
        network.check().map_err(|e| Error::Usage(e.to_string()))?;
        let labels = args
            .labels
            .iter()
            .map(|l| n2d_spec::machine::parse_label(l))
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        n2d_export::check_output_dir(&args.output).map_err(Error::export)?;
        // An export never builds: it writes what was built.
        let image = self.named_or_newest(args.id.as_deref())?.ok_or(Error::NoImageToExport)?;
        let machine = match &args.for_name {
            Some(name) => {
                let _lock = self.home.lock()?;
                let ca = n2d_pki::Ca::load_or_create(&self.home.certs_dir())?;
                let config = machine_config(&ca, name, &network, labels).map_err(|e| {
                    if e.is_usage() {
                        Error::Usage(crate::error::chain_text(&e))
                    } else {
                        Error::ExportConfig(e)
                    }
                })?;
                let config_disk = n2d_proto::encode_config_disk(&config)?;
                Some(ForMachine { name: name.to_string(), config_disk })
            }
            None => None,
        };
        let hyperv = args.hyperv.then(|| n2d_export::hyperv::HyperV {
            static_ip: network.static_address(),
            ..Default::default()
        });
        let req = ExportRequest {
            image: &image,
            formats: args.formats.clone(),
            output_dir: args.output.clone(),
            disk_size: args.disk_size,
            machine,
            hyperv,
            cancel: Some(&self.cancel),
            search_path: self.search_path.clone(),
        };
        n2d_export::preflight(&req).map_err(Error::export)?;
        let names: Vec<&str> = args.formats.iter().map(|f| f.name()).collect();
        let short = image.manifest.short_id();
        let step = self.progress.step(&format!("Exporting image {short} as {}", names.join(", ")));
        let files = n2d_export::export(&self.runner, &req, &|stage| step.set(&stage.describe()))
            .map_err(Error::export)?;
        step.done(&format!("Exported image {short}"));
        let next_step = args.for_name.as_ref().map(|name| {
            if args.hyperv {
                format!("Run the .ps1 script on the Hyper-V host, then: n2d adopt {name} --host tcp://ADDRESS:2376")
            } else {
                let host =
                    network.static_address().map_or_else(|| format!("{name}.mshome.net"), |ip| ip.to_string());
                format!("Once it runs: n2d adopt {name} --host tcp://{host}:2376")
            }
        });
        Ok(ExportReport { files, next_step })
    }
}
