//! `n2d image build` and `n2d image ls`.

use crate::args::ImageCommand;
use crate::context::Ctx;
use crate::provision::{build_default_image, mb};
use anyhow::Result;
use n2d_image::list_images;

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
