//! The build pipeline: [`build_image`] checks the inputs ([`plan()`], in `plan.rs`), runs the
//! stages (`stages.rs`: mmdebstrap's userland (`mmdebstrap.rs`), the kernel, its modules, the
//! trimmed (`trim.rs`) erofs root, the initramfs) in a staging tree and stores the image.
//! Within it, `stages` uses `plan`, `mmdebstrap` and `trim`, none of which uses `stages`; all
//! of them fail with [`BuildError`] ([`crate::error`]).

mod mmdebstrap;
mod plan;
mod stages;
#[cfg(test)]
mod tests;
mod trim;

pub use plan::{check_tools, package_source, plan, recipe_for, tcp_reachable, PackageSource, Plan, TOOLS};
pub use stages::digest_artifacts;

use crate::cache::PackageCache;
use crate::error::{BuildError, BuildStage};
use crate::init::GuestInit;
use crate::recipe::refreshed_id;
use crate::unshare::{check_unshare, BuildUser};
use crate::{Image, MANIFEST_FILE};
use mmdebstrap::MmdebstrapMode;
use n2d_exec::{Runner, SearchPath};
use n2d_store::{write_json, Home, KillPoints, Operation};
use plan::missing_from_cache;
use stages::Builder;
use std::fs;
use std::path::PathBuf;

/// What the user asks of a build: `n2d image build`'s flags.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// Debian suite (default trixie).
    pub suite: Option<String>,
    /// Debian mirror URL, `http(s)://` or a local `file:///` mirror (default: deb.debian.org).
    pub mirror: Option<String>,
    /// More packages for the userland (`--include`).
    pub include: Vec<String>,
    /// Local .deb files installed into the userland (`--deb`).
    pub debs: Vec<PathBuf>,
    /// Docker's static binaries tarball, installed instead of Debian's engine.
    pub docker_archive: Option<PathBuf>,
    /// Never reach the network: packages come from the package cache (or a local mirror).
    pub offline: bool,
    /// Build even though the recipe's image exists, to pick up updates.
    pub refresh: bool,
}

/// A build: the request, the guest init it embeds and what the host gives it.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The guest's PID 1 (n2d-init), checked to be a static x86-64 ELF before any work.
    pub init: GuestInit,
    pub request: BuildRequest,
    /// Where the build's tools are looked for (the CLI's settings: `$PATH`).
    pub search_path: SearchPath,
    /// Test-only kill points (the CLI's settings: `$N2D_TEST_KILL_AT`).
    pub kill: KillPoints,
}

impl BuildOptions {
    /// The default image with this init.
    pub fn new(init: GuestInit) -> BuildOptions {
        BuildOptions {
            init,
            request: BuildRequest::default(),
            search_path: SearchPath::default(),
            kill: KillPoints::none(),
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The recipe's image was in the store: nothing built.
    AlreadyBuilt,
    /// Built and stored.
    Built,
    /// `--refresh` built the same bytes as the stored image, which is kept.
    UpToDate,
    /// `--refresh` picked up updates: a new image beside the old one.
    Refreshed,
}

/// The result of [`build_image`].
#[derive(Debug, Clone)]
pub struct Built {
    pub image: Image,
    pub outcome: Outcome,
    /// Where the packages came from (`None` when nothing was built).
    pub source: Option<PackageSource>,
}

/// The newest stored image of a recipe.
pub fn newest_of_recipe(home: &Home, recipe_id: &str) -> Option<Image> {
    crate::list_images(home).into_iter().find(|i| i.manifest.recipe_id == recipe_id)
}

/// Builds the image (or finds it already built, unless `refresh`).
pub fn build_image(
    home: &Home,
    runner: &dyn Runner,
    opts: &BuildOptions,
    progress: &dyn Fn(BuildStage),
) -> Result<Built, BuildError> {
    let plan = plan(opts)?;
    let recipe = &plan.recipe;
    let id = recipe.id();
    let stored = newest_of_recipe(home, &id);
    if let (Some(image), false) = (&stored, opts.request.refresh) {
        return Ok(Built { image: image.clone(), outcome: Outcome::AlreadyBuilt, source: None });
    }
    check_tools(&opts.search_path)?;
    let mode = MmdebstrapMode::of_this_process();
    if mode == MmdebstrapMode::Unshare {
        check_unshare(&BuildUser::of_this_process(), &|p| opts.search_path.is_installed_or_in_sbin(p))?;
    }
    let cache = PackageCache::new(&home.deb_cache_dir(), &recipe.suite);
    let source = package_source(recipe, opts.request.offline, &cache, &tcp_reachable)?;
    if let PackageSource::Cache { no_network } = &source {
        let missing = missing_from_cache(recipe, &cache);
        if !missing.is_empty() {
            let why = if no_network.is_some() { "no network" } else { "--offline" };
            return Err(BuildError::CacheLacks { why, cache: cache.dir.clone(), missing });
        }
    }
    // The guest's root tree must keep Debian's modes (0755 directories and binaries): n2d's own
    // umask (0077) would make what mmdebstrap's scripts and the builder create root-only inside
    // the guest. The images directory itself stays private (0700).
    n2d_store::ensure_dir(&home.images_dir()).map_err(BuildError::Store)?;
    let _umask = UmaskGuard::set(0o022);
    let staging_name = format!(".build-{}-{}", &id[..12], std::process::id());
    let staging = home.images_dir().join(&staging_name);
    // A kill leaves the journal: the next command removes the staging tree (a whole Debian
    // userland) instead of keeping it forever.
    let journal = home
        .begin_intent(Operation::ImageBuild { staging: staging_name }, &opts.kill)
        .map_err(BuildError::Store)?;
    let builder = Builder {
        runner,
        plan: &plan,
        recipe,
        staging: &staging,
        init: &opts.init.bytes,
        mode,
        cache: &cache,
        source: &source,
    };
    let result = builder.run(&id, progress).and_then(|mut manifest| {
        journal.kill_point("before-store");
        let outcome = match &stored {
            Some(old) if old.manifest.artifacts_sha256 == manifest.artifacts_sha256 => {
                return Ok((old.clone(), Outcome::UpToDate));
            }
            Some(_) => {
                manifest.id = refreshed_id(&id, &manifest.artifacts_sha256);
                write_json(&staging.join("out").join(MANIFEST_FILE), &manifest).map_err(BuildError::Store)?;
                Outcome::Refreshed
            }
            None => Outcome::Built,
        };
        let final_dir = home.images_dir().join(&manifest.id);
        // A refresh back to bytes an older build of the recipe already has: that one is kept.
        if let (Outcome::Refreshed, Ok(image)) = (outcome, crate::find_image(home, &manifest.id)) {
            return Ok((image, Outcome::UpToDate));
        }
        fs::rename(staging.join("out"), &final_dir)
            .map_err(|source| BuildError::Io { stage: BuildStage::Store, source })?;
        Ok((Image { dir: final_dir, manifest }, outcome))
    });
    // The staging tree (a whole Debian userland) is never kept, built or not; a journal is
    // kept while it is there, so recovery removes what this could not.
    if n2d_store::remove_dir_all(&staging).is_ok() {
        let _ = journal.finish();
    }
    result.map(|(image, outcome)| Built { image, outcome, source: Some(source) })
}

/// Sets the process umask until dropped. Image builds run before any VM thread starts, so
/// nothing else in the process creates files meanwhile.
struct UmaskGuard(rustix::fs::Mode);

impl UmaskGuard {
    fn set(mask: u32) -> UmaskGuard {
        UmaskGuard(rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask)))
    }
}

impl Drop for UmaskGuard {
    fn drop(&mut self) {
        rustix::process::umask(self.0);
    }
}
