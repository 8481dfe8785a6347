//! `n2d image build` and `n2d image ls`, and the image a create boots.

use crate::args::{ImageBuildArgs, ImageCommand};
use crate::context::Ctx;
use crate::progress::Step;
use anyhow::Result;
use n2d_image::{build_image, find_image, list_images, BuildOptions, Image, Outcome, PackageSource};

pub fn run(ctx: &Ctx, cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Build(args) => {
            let image = build_default_image(ctx, &args)?;
            println!("{}", image.manifest.id);
            Ok(())
        }
        ImageCommand::Ls { json } => {
            let images = list_images(&ctx.home);
            if json {
                let manifests: Vec<_> = images.iter().map(|i| &i.manifest).collect();
                println!("{}", serde_json::to_string_pretty(&manifests)?);
                return Ok(());
            }
            println!(
                "{:<14} {:<8} {:<28} {:>10} {:>10} {:>12}",
                "IMAGE ID", "SUITE", "KERNEL", "INITRD", "ROOT", "UNPACKED"
            );
            for i in images {
                let m = &i.manifest;
                println!(
                    "{:<14} {:<8} {:<28} {:>10} {:>10} {:>12}",
                    m.short_id(),
                    m.recipe.suite,
                    m.kernel_release,
                    mb(m.initrd_bytes),
                    mb(m.rootfs_bytes),
                    mb(m.rootfs_unpacked_bytes)
                );
            }
            Ok(())
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
    let total = n2d_image::Stage::ALL.len();
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
