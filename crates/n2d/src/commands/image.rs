//! `n2d image build|ls|inspect|rm|prune|export`, and the image a create boots.

use crate::args::{ImageBuildArgs, ImageCommand, ImageExportArgs};
use crate::context::Ctx;
use crate::error::UsageError;
use crate::progress::Step;
use anyhow::Result;
use n2d_export::config::{machine_config, ExportNetwork};
use n2d_export::{ExportRequest, ForMachine, Format};
use n2d_image::{
    build_image, find_image, image_files, list_images, remove_image, unreadable_images, BuildOptions, Image,
    Outcome, PackageSource,
};
use std::collections::BTreeMap;

pub fn run(ctx: &Ctx, cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Build(args) => {
            let image = build_default_image(ctx, &args)?;
            outln!("{}", image.manifest.id)?;
            Ok(())
        }
        ImageCommand::Export(args) => export(ctx, &args),
        ImageCommand::Ls { json } => {
            let images = list_images(&ctx.home);
            if json {
                let manifests: Vec<_> = images.iter().map(|i| &i.manifest).collect();
                outln!("{}", serde_json::to_string_pretty(&manifests)?)?;
                return Ok(());
            }
            outln!(
                "{:<14} {:<8} {:<28} {:>10} {:>10} {:>12}",
                "IMAGE ID",
                "SUITE",
                "KERNEL",
                "INITRD",
                "ROOT",
                "UNPACKED"
            )?;
            for i in images {
                let m = &i.manifest;
                outln!(
                    "{:<14} {:<8} {:<28} {:>10} {:>10} {:>12}",
                    m.short_id(),
                    m.recipe.suite,
                    m.kernel_release,
                    mb(m.initrd_bytes),
                    mb(m.rootfs_bytes),
                    mb(m.rootfs_unpacked_bytes)
                )?;
            }
            Ok(())
        }
        ImageCommand::Inspect { id, json } => inspect(ctx, &id, json),
        ImageCommand::Rm { ids } => {
            let _lock = ctx.home.lock()?;
            let users = image_users(ctx)?;
            // Every ID is checked before anything is removed.
            let images = ids.iter().map(|id| find_image(&ctx.home, id)).collect::<Result<Vec<_>, _>>()?;
            for image in &images {
                if let Some(machines) = users.get(&image.manifest.id) {
                    return Err(UsageError::err(format!(
                        "image {} is used by {}: remove those machines first (n2d rm NAME)",
                        image.manifest.short_id(),
                        machines.join(", ")
                    )));
                }
            }
            for image in &images {
                remove_image(&ctx.home, &image.dir)?;
                outln!("removed {}", image.manifest.short_id())?;
            }
            Ok(())
        }
        ImageCommand::Prune => {
            let _lock = ctx.home.lock()?;
            let users = image_users(ctx)?;
            let mut freed = 0;
            for image in list_images(&ctx.home).iter().filter(|i| !users.contains_key(&i.manifest.id)) {
                freed += total_bytes(&image.dir);
                remove_image(&ctx.home, &image.dir)?;
                outln!("removed {}", image.manifest.short_id())?;
            }
            for dir in unreadable_images(&ctx.home) {
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if users.contains_key(&name) {
                    continue;
                }
                freed += total_bytes(&dir);
                remove_image(&ctx.home, &dir)?;
                outln!("removed {name} (not an image this n2d can read)")?;
            }
            outln!("{} freed", mb(freed))?;
            Ok(())
        }
    }
}

fn total_bytes(dir: &std::path::Path) -> u64 {
    image_files(dir).iter().map(|(_, bytes)| bytes).sum()
}

/// Which machines of the home boot each image (by ID). A machine whose record cannot be read
/// might use any image, so nothing may be removed until it is mended or removed.
fn image_users(ctx: &Ctx) -> Result<BTreeMap<String, Vec<String>>> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, record) in ctx.home.list_machines() {
        match record {
            Ok(record) => users.entry(record.spec.image.clone()).or_default().push(name),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot tell which image machine {name} uses: mend its record or remove it (n2d rm -f {name}) first"
                )))
            }
        }
    }
    Ok(users)
}

fn inspect(ctx: &Ctx, id: &str, json: bool) -> Result<()> {
    let image = find_image(&ctx.home, id)?;
    let m = &image.manifest;
    let users = image_users(ctx).unwrap_or_default();
    let used_by = users.get(&m.id).cloned().unwrap_or_default();
    if json {
        let mut value = serde_json::to_value(m)?;
        value["used_by"] = serde_json::json!(used_by);
        outln!("{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    let r = &m.recipe;
    outln!("Image:     {}", m.id)?;
    outln!(
        "Suite:     {}{}",
        r.suite,
        if r.mirror.is_empty() { String::new() } else { format!(" from {}", r.mirror) }
    )?;
    for source in &r.sources {
        outln!("Source:    {source}")?;
    }
    outln!("Kernel:    {} ({})", m.kernel_release, r.kernel_package)?;
    outln!("Asked for: {}", r.packages.join(" "))?;
    for deb in &r.local_debs {
        outln!("Local deb: {} (sha256 {})", deb.file, deb.sha256)?;
    }
    if let Some(sha) = &r.docker_archive_sha256 {
        outln!("Engine:    Docker's static binaries, archive sha256 {sha}")?;
    }
    outln!("Init:      sha256 {}", r.init_sha256)?;
    outln!("Recipe:    {}", m.recipe_id())?;
    if !m.artifacts_sha256.is_empty() {
        outln!("Artifacts: sha256 {}", m.artifacts_sha256)?;
    }
    outln!("Built:     {} (unix time; file times {})", m.created_unix, m.source_date_epoch)?;
    if !m.packages.is_empty() {
        // Every package that went in, with its version (`--json` has them all, and each .deb's sha256).
        let listed: Vec<String> = m.packages.iter().map(|p| format!("{}={}", p.name, p.version)).collect();
        outln!("Installed: {} packages from {} .debs: {}", m.packages.len(), m.debs.len(), listed.join(" "))?;
    }
    outln!("Used by:   {}", if used_by.is_empty() { "no machine".to_string() } else { used_by.join(", ") })?;
    outln!("Files:")?;
    let files = image_files(&image.dir);
    for (name, bytes) in &files {
        outln!("  {name:<14} {:>10}", mb(*bytes))?;
    }
    outln!("  {:<14} {:>10}", "total", mb(files.iter().map(|(_, b)| b).sum()))?;
    outln!("Root filesystem: {} unpacked, {} as erofs", mb(m.rootfs_unpacked_bytes), mb(m.rootfs_bytes))?;
    Ok(())
}

/// The image to boot: the one named, else the newest built, else a fresh build of the default.
pub fn resolve_image(ctx: &Ctx, id: Option<&str>) -> Result<Image> {
    if let Some(id) = id {
        return Ok(find_image(&ctx.home, id)?);
    }
    if let Some(image) = list_images(&ctx.home).into_iter().next() {
        return Ok(image);
    }
    errln!("No image yet: building the default image first.");
    build_default_image(ctx, &ImageBuildArgs::default())
}

pub fn build_default_image(ctx: &Ctx, args: &ImageBuildArgs) -> Result<Image> {
    let opts = BuildOptions {
        init: crate::guest_init::guest_init(args.init.clone())?,
        suite: args.suite.clone(),
        mirror: args.mirror.clone(),
        include: args.include.clone(),
        debs: args.debs.clone(),
        docker_archive: args.docker_archive.clone(),
        offline: args.offline,
        refresh: args.refresh,
    };
    let step = Step::start("Building image");
    let total = n2d_image::BuildStage::ALL.len();
    let built = build_image(&ctx.home, &ctx.runner, &opts, &|stage| {
        step.set(format!("[{}/{total}] {}", stage.number(), stage.describe()));
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
    step.done(format!(
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

pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `n2d image export`: checks the flags, makes the config of `--for NAME`, writes the files.
fn export(ctx: &Ctx, args: &ImageExportArgs) -> Result<()> {
    let formats = args.format.0.clone();
    if args.hyperv && !formats.contains(&Format::Vhdx) {
        return Err(UsageError::err(n2d_export::ExportError::HyperVNeedsVhdx.to_string()));
    }
    let network = match (args.ip, args.gateway) {
        (Some(cidr), Some(gateway)) => ExportNetwork::Static { cidr, gateway, dns: args.dns.clone() },
        _ => ExportNetwork::Dhcp,
    };
    network.check().map_err(|e| UsageError::err(e.to_string()))?;
    let labels = args
        .labels
        .iter()
        .map(|l| n2d_spec::machine::parse_label(l))
        .collect::<Result<std::collections::BTreeMap<_, _>, _>>()?;
    n2d_export::check_output_dir(&args.output).map_err(export_error)?;
    // An export never builds: it writes what was built.
    let image = match args.id.as_deref() {
        Some(id) => find_image(&ctx.home, id)?,
        None => list_images(&ctx.home)
            .into_iter()
            .next()
            .ok_or_else(|| UsageError::err("no image to export: build one first with `n2d image build`"))?,
    };
    let machine = match &args.for_name {
        Some(name) => {
            // The CA is made under the state lock, as a create makes it.
            let _lock = ctx.home.lock()?;
            let ca = n2d_pki::Ca::load_or_create(&ctx.home.certs_dir())?;
            let config = machine_config(&ca, name, &network, labels).map_err(|e| {
                if e.is_usage() {
                    UsageError::err(format!("{:#}", anyhow::Error::new(e)))
                } else {
                    anyhow::Error::new(e)
                }
            })?;
            let config_disk = n2d_proto::encode_config_disk(&config)?;
            Some(ForMachine { name: name.to_string(), config_disk })
        }
        None => None,
    };
    let hyperv = args
        .hyperv
        .then(|| n2d_export::hyperv::HyperV { static_ip: network.static_address(), ..Default::default() });
    let req = ExportRequest {
        image: &image,
        formats: formats.clone(),
        output_dir: args.output.clone(),
        disk_size: args.disk_size.0,
        machine,
        hyperv,
        cancel: Some(&ctx.cancel),
    };
    n2d_export::preflight(&req).map_err(export_error)?;
    let names: Vec<&str> = formats.iter().map(|f| f.name()).collect();
    let step = Step::start(format!("Exporting image {} as {}", image.manifest.short_id(), names.join(", ")));
    let files =
        n2d_export::export(&ctx.runner, &req, &|stage| step.set(stage.describe())).map_err(export_error)?;
    step.done(format!("Exported image {}", image.manifest.short_id()));
    for f in &files {
        let on_disk =
            if f.allocated < f.bytes { format!(" ({} on disk)", mb(f.allocated)) } else { String::new() };
        outln!("{}  {}{on_disk}", f.path.display(), mb(f.bytes))?;
    }
    if let (Some(name), true) = (&args.for_name, args.hyperv) {
        errln!("Run the .ps1 script on the Hyper-V host, then: n2d adopt {name} --host tcp://ADDRESS:2376");
    } else if let Some(name) = &args.for_name {
        let host = network.static_address().map_or_else(|| format!("{name}.mshome.net"), |ip| ip.to_string());
        errln!("Once it runs: n2d adopt {name} --host tcp://{host}:2376");
    }
    Ok(())
}

/// An export's usage errors exit 2; the rest keep their chain.
fn export_error(e: n2d_export::ExportError) -> anyhow::Error {
    if e.is_usage() {
        UsageError::err(e.to_string())
    } else {
        anyhow::Error::new(e)
    }
}
