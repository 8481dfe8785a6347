//! `n2d image build|ls|inspect|rm|prune|warm|export`: clap → one n2d-orchestrate call → print.

use crate::args::{ImageBuildArgs, ImageCommand, ImageExportArgs};
use crate::context::Ctx;
use anyhow::Result;
use n2d_orchestrate::image::{mb, BuildRequest, ImageBuild, ImageDetails, ImageExport};
use n2d_orchestrate::templates::WarmRequest;

pub fn run(ctx: &Ctx, cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Build(args) => {
            let image = ctx.build_image(&build_request(&args, ctx.init_env()))?;
            outln!("{}", image.manifest.id)?;
            Ok(())
        }
        ImageCommand::Export(args) => export(ctx, &args),
        ImageCommand::Ls { json, quiet } => {
            let images = ctx.images();
            if quiet {
                for image in &images {
                    outln!("{}", image.manifest.id)?;
                }
                return Ok(());
            }
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
            for short in ctx.remove_images(&ids)? {
                outln!("removed {short}")?;
            }
            Ok(())
        }
        ImageCommand::Warm(args) => {
            let request = WarmRequest {
                cpus: args.cpus,
                memory: args.memory.clone(),
                disk: args.disk.clone(),
                network: args.network.clone(),
            };
            let (template, made) = ctx.warm_image(args.id.as_deref(), &request)?;
            outln!("{}", template.dir.display())?;
            if !made {
                errln!("(already there: machines of this shape start from it)");
            }
            Ok(())
        }
        ImageCommand::Prune => {
            let pruned = ctx.prune_images()?;
            for line in &pruned.removed {
                outln!("removed {line}")?;
            }
            outln!("{} freed", mb(pruned.freed))?;
            Ok(())
        }
    }
}

fn inspect(ctx: &Ctx, id: &str, json: bool) -> Result<()> {
    let ImageDetails { image, used_by, files, templates } = ctx.inspect_image(id)?;
    let m = &image.manifest;
    if json {
        let mut value = serde_json::to_value(m)?;
        value["used_by"] = serde_json::json!(used_by);
        value["warm_templates"] =
            serde_json::json!(templates.iter().map(|(name, _)| name).collect::<Vec<_>>());
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
    outln!("Recipe:    {}", m.recipe_id)?;
    outln!("Artifacts: sha256 {}", m.artifacts_sha256)?;
    outln!("Built:     {} (unix time; file times {})", m.created_unix, m.source_date_epoch)?;
    if !m.packages.is_empty() {
        // Every package that went in, with its version (`--json` has them all, and each .deb's sha256).
        let listed: Vec<String> = m.packages.iter().map(|p| format!("{}={}", p.name, p.version)).collect();
        outln!("Installed: {} packages from {} .debs: {}", m.packages.len(), m.debs.len(), listed.join(" "))?;
    }
    outln!("Used by:   {}", if used_by.is_empty() { "no machine".to_string() } else { used_by.join(", ") })?;
    outln!("Files:")?;
    for (name, bytes) in &files {
        outln!("  {name:<14} {:>10}", mb(*bytes))?;
    }
    outln!("  {:<14} {:>10}", "total", mb(files.iter().map(|(_, b)| b).sum()))?;
    outln!("Root filesystem: {} unpacked, {} as erofs", mb(m.rootfs_unpacked_bytes), mb(m.rootfs_bytes))?;
    if templates.is_empty() {
        outln!("Warm templates: none yet (the first create makes one; `n2d image warm` ahead of time)")?;
    } else {
        outln!("Warm templates (accelerator-vCPUs-memory-disk-network.made; on disk):")?;
        for (name, bytes) in &templates {
            outln!("  {name} {:>10}", mb(*bytes))?;
        }
    }
    Ok(())
}

/// The image build `args` ask for; its init from `--init`, `$N2D_INIT` or n2d itself.
pub fn build_request(args: &ImageBuildArgs, init_env: Option<std::path::PathBuf>) -> ImageBuild {
    ImageBuild {
        init: crate::guest_init::init_choice(args.init.clone(), init_env),
        request: BuildRequest {
            suite: args.suite.clone(),
            mirror: args.mirror.clone(),
            include: args.include.clone(),
            debs: args.debs.clone(),
            docker_archive: args.docker_archive.clone(),
            offline: args.offline,
            refresh: args.refresh,
        },
    }
}

/// `n2d image export`: one call; the files written on stdout, the next step on stderr.
fn export(ctx: &Ctx, args: &ImageExportArgs) -> Result<()> {
    let report = ctx.export_image(&ImageExport {
        id: args.id.clone(),
        formats: args.format.0.clone(),
        output: args.output.clone(),
        disk_size: args.disk_size.0,
        for_name: args.for_name.clone(),
        ip: args.address,
        gateway: args.gateway,
        dns: args.dns.clone(),
        labels: args.labels.clone(),
        hyperv: args.hyperv,
    })?;
    for f in &report.files {
        let on_disk =
            if f.allocated < f.bytes { format!(" ({} on disk)", mb(f.allocated)) } else { String::new() };
        outln!("{}  {}{on_disk}", f.path.display(), mb(f.bytes))?;
    }
    if let Some(next) = &report.next_step {
        errln!("{next}");
    }
    Ok(())
}
