//! The build pipeline, one function per stage.

use crate::cache::{sha256_file, CacheError, PackageCache};
use crate::init::{check_static_x86_64, GuestInit, InitProblem, INIT_FIX};
use crate::initramfs::{CpioWriter, Entry};
use crate::inputs::{self, Mirror};
use crate::modules::{module_name, ModuleDb};
use crate::recipe::{
    artifacts_digest, default_sources, refreshed_id, DebDigest, ImageManifest, Package, Recipe,
    DIGESTED_ARTIFACTS, ENGINE_PACKAGES, SOURCE_DATE_EPOCH,
};
use crate::unshare::{check_unshare, BuildUser};
use crate::{Image, DIRECT_KERNEL_FILE, INITRD_FILE, KERNEL_FILE, MANIFEST_FILE, ROOTFS_FILE};
use n2d_exec::{Cmd, ExecError, Runner, SearchPath};
use n2d_proto::{LATE_MODULE_LIST, MODULE_LIST};
use n2d_store::{write_json, Home, KillPoints, Operation, StoreError};
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The stages a build goes through, in order (for progress display).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Rootfs,
    Kernel,
    Modules,
    RootImage,
    Initramfs,
    Store,
}

impl Stage {
    pub const ALL: [Stage; 6] =
        [Stage::Rootfs, Stage::Kernel, Stage::Modules, Stage::RootImage, Stage::Initramfs, Stage::Store];

    pub fn describe(self) -> &'static str {
        match self {
            Stage::Rootfs => "building the Debian userland (mmdebstrap)",
            Stage::Kernel => "unpacking the kernel",
            Stage::Modules => "selecting kernel modules",
            Stage::RootImage => "packing the root filesystem (erofs)",
            Stage::Initramfs => "packing the initramfs",
            Stage::Store => "storing the image",
        }
    }

    pub fn number(self) -> usize {
        Stage::ALL.iter().position(|s| *s == self).expect("listed") + 1
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The guest's PID 1 (n2d-init), checked to be a static x86-64 ELF before any work.
    pub init: GuestInit,
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
            suite: None,
            mirror: None,
            include: Vec::new(),
            debs: Vec::new(),
            docker_archive: None,
            offline: false,
            refresh: false,
            search_path: SearchPath::default(),
            kill: KillPoints::none(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the guest init ({source_desc}) cannot be the VM's PID 1: {problem}; {fix}", fix = INIT_FIX)]
    UnusableInit { source_desc: String, problem: InitProblem },
    #[error("building an image as an ordinary user needs {program}, which is not installed: install uidmap (as root: apt-get install uidmap), or build as root")]
    UidmapMissing { program: &'static str },
    #[error("building an image as an ordinary user needs a range of at least {min} subordinate ids for {user} in {file}: add one (as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}, with ranges no other user has), or build as root", min = crate::unshare::MIN_SUBORDINATE_IDS)]
    NoSubordinateIds { user: String, file: &'static str },
    #[error(transparent)]
    MissingTool(ExecError),
    #[error("{stage} failed", stage = .stage.describe())]
    Tool {
        stage: Stage,
        #[source]
        source: ExecError,
    },
    #[error("{stage} failed", stage = .stage.describe())]
    Io {
        stage: Stage,
        #[source]
        source: io::Error,
    },
    #[error("the kernel package has no modules named {0:?}: the image recipe does not fit this kernel")]
    UnknownModules(Vec<String>),
    #[error("the kernel package holds no kernel (no boot/vmlinuz-* and usr/lib/modules/*)")]
    NoKernel,
    #[error("cannot store the image")]
    Store(#[source] StoreError),
    #[error("the mirror {url:?} cannot be used: {problem}")]
    BadMirror { url: String, problem: String },
    #[error("{0:?} is not a Debian suite: give a suite or codename such as trixie, stable or bookworm-backports (lower case letters, digits and '-', starting with a letter, at most {max} characters)", max = crate::inputs::MAX_SUITE_LEN)]
    BadSuite(String),
    #[error("{0:?} is not a Debian package name (lower case letters, digits, '+', '-', '.'; give a local file with --deb)")]
    BadPackageName(String),
    #[error("the package file {path} (--deb) cannot be used: {problem}")]
    BadDeb { path: PathBuf, problem: String },
    #[error("the Docker archive {path} (--docker-archive) cannot be used: {problem}")]
    BadDockerArchive { path: PathBuf, problem: String },
    #[error("--offline, and the package cache {cache} is empty: build once with the network (without --offline), or pass --mirror file:///PATH (a local Debian mirror)")]
    OfflineNoCache { cache: PathBuf },
    #[error("{why}, and the package cache {cache} lacks {missing:?}: build once with the network and these packages, or pass --mirror file:///PATH (a local Debian mirror)", missing = .missing.join(", "))]
    CacheLacks { why: &'static str, cache: PathBuf, missing: Vec<String> },
    #[error("no network ({host} cannot be reached) and no cached packages for {suite} in {cache}: build once online, or pass --mirror file:///PATH (a local Debian mirror)")]
    NoNetworkNoCache { host: String, suite: String, cache: PathBuf },
    #[error("the package {name:?} does not exist in {suite} (or has no installable version): check its name (apt-cache policy {name}), or drop it from --include")]
    UnknownPackage {
        name: String,
        suite: String,
        #[source]
        source: ExecError,
    },
    #[error("cannot keep the downloaded packages in the package cache")]
    Cache(#[source] CacheError),
}

impl BuildError {
    /// A mistake in the build's inputs (exit status 2), found before any work.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            BuildError::UnusableInit { .. }
                | BuildError::BadMirror { .. }
                | BuildError::BadSuite(_)
                | BuildError::BadPackageName(_)
                | BuildError::BadDeb { .. }
                | BuildError::BadDockerArchive { .. }
        )
    }
}

/// The external tools a build uses and the Debian packages that ship them.
pub const TOOLS: [(&str, &str); 7] = [
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.erofs", "erofs-utils"),
    ("depmod", "kmod"),
    ("lz4", "lz4"),
    ("xz", "xz-utils"),
    ("dpkg-deb", "dpkg"),
    ("dpkg-query", "dpkg"),
];

/// Fails with the first missing tool and its package.
pub fn check_tools(search_path: &SearchPath) -> Result<(), BuildError> {
    for (program, package) in TOOLS {
        if !search_path.is_installed_or_in_sbin(program) {
            return Err(BuildError::MissingTool(ExecError::NotInstalled {
                program: program.into(),
                package,
            }));
        }
    }
    Ok(())
}

/// The recipe for the given options (and so the image ID they would produce).
pub fn recipe_for(opts: &BuildOptions) -> Result<Recipe, BuildError> {
    plan(opts).map(|p| p.recipe)
}

/// A build's checked inputs: the recipe, and the local files it names.
#[derive(Debug, Clone)]
pub struct Plan {
    pub recipe: Recipe,
    /// `--deb` files, in the recipe's order.
    pub local_debs: Vec<PathBuf>,
    pub docker_archive: Option<PathBuf>,
}

/// Checks every input (init, mirror, package names, .deb files, Docker archive) before any work
/// and makes the recipe.
pub fn plan(opts: &BuildOptions) -> Result<Plan, BuildError> {
    check_static_x86_64(&opts.init.bytes)
        .map_err(|problem| BuildError::UnusableInit { source_desc: opts.init.source.clone(), problem })?;
    let mut recipe = Recipe::docker_host(hex::encode(Sha256::digest(&opts.init.bytes)));
    if let Some(suite) = &opts.suite {
        inputs::check_suite(suite)?;
        recipe.suite = suite.clone();
    }
    let mut local_mirror = None;
    if let Some(mirror) = &opts.mirror {
        if let Mirror::Local(path) = inputs::check_mirror(mirror, &recipe.suite)? {
            local_mirror = Some(path);
        }
        recipe.mirror = mirror.trim_end_matches('/').to_string();
    }
    let has_dist =
        |d: &str| local_mirror.as_ref().is_some_and(|m: &PathBuf| m.join("dists").join(d).is_dir());
    recipe.sources = default_sources(&recipe.mirror, &recipe.suite, &has_dist);
    for name in &opts.include {
        inputs::check_package_name(name)?;
        if !recipe.packages.contains(name) {
            recipe.packages.push(name.clone());
        }
    }
    for deb in &opts.debs {
        let sha256 = inputs::check_deb(deb)?;
        let file = deb.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        recipe.local_debs.push(DebDigest { file, sha256 });
    }
    if let Some(archive) = &opts.docker_archive {
        let (sha256, _) = inputs::check_docker_archive(archive)?;
        recipe.packages.retain(|p| !ENGINE_PACKAGES.contains(&p.as_str()));
        recipe.docker_archive_sha256 = Some(sha256);
    }
    Ok(Plan { recipe, local_debs: opts.debs.clone(), docker_archive: opts.docker_archive.clone() })
}

/// Where a build's packages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSource {
    /// The recipe's mirrors (over the network, or a local mirror).
    Mirrors,
    /// The package cache: `--offline`, or the network is down (`no_network` names the host).
    Cache { no_network: Option<String> },
}

/// Decides where packages come from: a local mirror is read in place; `--offline` reads the
/// cache; otherwise the network, unless the mirror cannot be reached, then the cache if it has
/// packages. `reachable` is asked only when the network would be used.
pub fn package_source(
    recipe: &Recipe,
    offline: bool,
    cache: &PackageCache,
    reachable: &dyn Fn(&str, u16) -> bool,
) -> Result<PackageSource, BuildError> {
    let remote: Vec<(String, u16)> = recipe
        .sources
        .iter()
        .filter_map(|s| inputs::host_port(s.split_whitespace().next().unwrap_or("")))
        .collect();
    if remote.is_empty() {
        return Ok(PackageSource::Mirrors);
    }
    let cached = cache.is_usable();
    if offline {
        return if cached {
            Ok(PackageSource::Cache { no_network: None })
        } else {
            Err(BuildError::OfflineNoCache { cache: cache.dir.clone() })
        };
    }
    let (host, port) = &remote[0];
    if reachable(host, *port) {
        return Ok(PackageSource::Mirrors);
    }
    if cached {
        Ok(PackageSource::Cache { no_network: Some(host.clone()) })
    } else {
        Err(BuildError::NoNetworkNoCache {
            host: host.clone(),
            suite: recipe.suite.clone(),
            cache: cache.dir.clone(),
        })
    }
}

/// Whether a TCP connection to the mirror opens within a few seconds (name resolution included).
pub fn tcp_reachable(host: &str, port: u16) -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    let Ok(addrs) = (host, port).to_socket_addrs() else { return false };
    addrs.into_iter().any(|a| TcpStream::connect_timeout(&a, std::time::Duration::from_secs(4)).is_ok())
}

/// The packages a cache-only build needs by name that the cache lacks.
fn missing_from_cache(recipe: &Recipe, cache: &PackageCache) -> Vec<String> {
    let have = cache.package_names();
    recipe.packages.iter().chain([&recipe.kernel_package]).filter(|p| !have.contains(*p)).cloned().collect()
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
    crate::list_images(home).into_iter().find(|i| i.manifest.recipe_id() == recipe_id)
}

/// Builds the image (or finds it already built, unless `refresh`).
pub fn build_image(
    home: &Home,
    runner: &dyn Runner,
    opts: &BuildOptions,
    progress: &dyn Fn(Stage),
) -> Result<Built, BuildError> {
    let plan = plan(opts)?;
    let recipe = &plan.recipe;
    let id = recipe.id();
    let stored = newest_of_recipe(home, &id);
    if let (Some(image), false) = (&stored, opts.refresh) {
        return Ok(Built { image: image.clone(), outcome: Outcome::AlreadyBuilt, source: None });
    }
    check_tools(&opts.search_path)?;
    let mode = Mode::of_this_process();
    if mode == Mode::Unshare {
        check_unshare(&BuildUser::of_this_process(), &|p| opts.search_path.is_installed_or_in_sbin(p))?;
    }
    let cache = PackageCache::new(&home.deb_cache_dir(), &recipe.suite);
    let source = package_source(recipe, opts.offline, &cache, &tcp_reachable)?;
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
            .map_err(|source| BuildError::Io { stage: Stage::Store, source })?;
        Ok((Image { dir: final_dir, manifest }, outcome))
    });
    // The staging tree (a whole Debian userland) is never kept, built or not.
    let _ = fs::remove_dir_all(&staging);
    let _ = journal.finish();
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

/// How mmdebstrap runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As root, straight into the staging tree (going through a tar as an ordinary user does
    /// made a root build about 10 s, 15-20 %, slower).
    Root,
    /// As an ordinary user, in a user namespace on the user's subordinate ids ([`crate::unshare`]).
    /// The tree it makes belongs to those ids, which the user cannot read or remove, so it comes
    /// out as a tar, extracted as the user.
    Unshare,
}

impl Mode {
    fn of_this_process() -> Mode {
        if rustix::process::geteuid().is_root() {
            Mode::Root
        } else {
            Mode::Unshare
        }
    }
}

/// apt's archive of downloaded packages inside the userland: the customize hook downloads the
/// kernel packages there too, and mmdebstrap's `sync-out` copies it all out (as the user, in
/// unshare mode) into the staging tree's [`DEBS_OUT`] before its cleanup empties it.
const APT_ARCHIVES: &str = "/var/cache/apt/archives";
/// The packages a build used, in its staging tree, before they move into the package cache.
const DEBS_OUT: &str = "debs";
/// The `--deb` files, copied into the staging tree (what was hashed is what is installed).
const LOCAL_DEBS: &str = "local-debs";
/// mmdebstrap's hooks that make `file://` mirrors and local .debs visible inside the chroot.
const FILE_MIRROR_HOOKS: &str = "/usr/share/mmdebstrap/hooks/file-mirror-automount";

struct Builder<'a> {
    runner: &'a dyn Runner,
    plan: &'a Plan,
    recipe: &'a Recipe,
    staging: &'a Path,
    init: &'a [u8],
    mode: Mode,
    cache: &'a PackageCache,
    source: &'a PackageSource,
}

impl Builder<'_> {
    fn run(&self, id: &str, progress: &dyn Fn(Stage)) -> Result<ImageManifest, BuildError> {
        let out = self.staging.join("out");
        fs::create_dir_all(&out).map_err(|source| BuildError::Io { stage: Stage::Rootfs, source })?;
        let rootfs = self.staging.join("rootfs");

        progress(Stage::Rootfs);
        self.mmdebstrap(&rootfs)?;
        let packages = self.installed_packages(&rootfs)?;
        let io = |source| BuildError::Io { stage: Stage::Rootfs, source };
        // Whatever the packages came from, the image names the recipe's sources.
        write_sources(&rootfs, &self.recipe.sources_list()).map_err(io)?;
        if let Some(archive) = &self.plan.docker_archive {
            inputs::install_docker_archive(archive, &rootfs.join("usr/bin")).map_err(io)?;
        }
        // Keep what was downloaded, so a rebuild needs no network.
        let debs = self.staging.join(DEBS_OUT);
        let kernel_debs = kernel_debs(&debs).map_err(io)?;
        self.cache.add_from(&debs).map_err(BuildError::Cache)?;
        self.cache.reindex(self.runner).map_err(BuildError::Cache)?;
        let deb_digests = self.deb_digests(&packages, &kernel_debs).map_err(io)?;

        progress(Stage::Kernel);
        let kernel = self.unpack_kernel(&kernel_debs)?;

        progress(Stage::Modules);
        let db = kernel.module_db().map_err(|source| BuildError::Io { stage: Stage::Modules, source })?;
        let mut names = self.recipe.boot_modules.clone();
        names.extend(self.recipe.late_modules.iter().cloned());
        names.extend(self.recipe.initrd_modules.iter().cloned());
        let rootfs_modules =
            db.select(&names, &self.recipe.module_dirs).map_err(BuildError::UnknownModules)?;
        self.install_modules(&kernel, &rootfs, &rootfs_modules, &self.recipe.boot_modules)?;
        write_module_list(&rootfs, LATE_MODULE_LIST, &self.recipe.late_modules)
            .map_err(|source| BuildError::Io { stage: Stage::Modules, source })?;
        let initrd_tree = self.staging.join("initrd");
        let initrd_modules =
            db.select(&self.recipe.initrd_modules, &[]).map_err(BuildError::UnknownModules)?;
        self.install_modules(&kernel, &initrd_tree, &initrd_modules, &self.recipe.initrd_modules)?;
        trim_rootfs(&rootfs).map_err(|source| BuildError::Io { stage: Stage::Modules, source })?;

        progress(Stage::RootImage);
        let rootfs_unpacked_bytes =
            tree_size(&rootfs).map_err(|source| BuildError::Io { stage: Stage::RootImage, source })?;
        let erofs = out.join(ROOTFS_FILE);
        self.tool(Stage::RootImage, mkfs_erofs_cmd(self.recipe, &erofs, &rootfs))?;

        progress(Stage::Initramfs);
        let cpio = self.staging.join("initrd.cpio");
        self.write_initramfs(&initrd_tree, &cpio)
            .map_err(|source| BuildError::Io { stage: Stage::Initramfs, source })?;
        let initrd = out.join(INITRD_FILE);
        self.tool(
            Stage::Initramfs,
            Cmd::new("lz4", "lz4").args([
                "-l".into(),
                "-9".into(),
                "-q".into(),
                "-f".into(),
                cpio.into_os_string(),
                initrd.clone().into_os_string(),
            ]),
        )?;

        progress(Stage::Store);
        let io = |source| BuildError::Io { stage: Stage::Store, source };
        let bzimage = fs::read(&kernel.vmlinuz).map_err(io)?;
        fs::write(out.join(KERNEL_FILE), &bzimage).map_err(io)?;
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).map_err(io);
        // A kernel that cannot boot directly is not an error: the image boots the bzImage.
        let direct_kernel_bytes = match crate::kernel::direct_boot_kernel(&bzimage) {
            Ok(vmlinux) => {
                fs::write(out.join(DIRECT_KERNEL_FILE), &vmlinux).map_err(io)?;
                Some(vmlinux.len() as u64)
            }
            Err(_) => None,
        };
        let manifest = ImageManifest {
            id: id.to_string(),
            recipe: self.recipe.clone(),
            kernel_release: kernel.release.clone(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            kernel_bytes: size(&out.join(KERNEL_FILE))?,
            initrd_bytes: size(&initrd)?,
            rootfs_bytes: size(&erofs)?,
            rootfs_unpacked_bytes,
            direct_kernel_bytes,
            packages,
            source_date_epoch: SOURCE_DATE_EPOCH,
            debs: deb_digests,
            init_sha256: self.recipe.init_sha256.clone(),
            artifacts_sha256: digest_artifacts(&out).map_err(io)?,
            recipe_id: id.to_string(),
        };
        write_json(&out.join(MANIFEST_FILE), &manifest).map_err(BuildError::Store)?;
        Ok(manifest)
    }

    fn tool(&self, stage: Stage, cmd: Cmd) -> Result<Vec<u8>, BuildError> {
        self.runner.run(&cmd).map_err(|source| match source {
            ExecError::NotInstalled { .. } => BuildError::MissingTool(source),
            source => BuildError::Tool { stage, source },
        })
    }

    /// The userland in `rootfs`; every package it used (and the kernel's) in [`DEBS_OUT`].
    fn mmdebstrap(&self, rootfs: &Path) -> Result<(), BuildError> {
        let io = |source| BuildError::Io { stage: Stage::Rootfs, source };
        let debs_out = self.staging.join(DEBS_OUT);
        fs::create_dir_all(&debs_out).map_err(io)?;
        let mut local = Vec::new();
        if !self.plan.local_debs.is_empty() {
            let dir = self.staging.join(LOCAL_DEBS);
            fs::create_dir_all(&dir).map_err(io)?;
            for (deb, digest) in self.plan.local_debs.iter().zip(&self.recipe.local_debs) {
                let copy = dir.join(&digest.file);
                inputs::copy_deb(deb, &copy, &digest.sha256)?;
                local.push(copy);
            }
        }
        let sources = match self.source {
            PackageSource::Mirrors => self.recipe.sources.iter().map(|s| format!("deb {s} main")).collect(),
            PackageSource::Cache { .. } => vec![self.cache.source_line()],
        };
        let args = MmdebstrapArgs {
            recipe: self.recipe,
            mode: self.mode,
            sources: &sources,
            local_debs: &local,
            debs_out: &debs_out,
        };
        let result = match self.mode {
            Mode::Root => self.tool(Stage::Rootfs, args.cmd(rootfs)).map(|_| ()),
            Mode::Unshare => {
                let tar = self.staging.join("rootfs.tar");
                let made = self.tool(Stage::Rootfs, args.cmd(&tar));
                made.and_then(|_| {
                    fs::create_dir_all(rootfs).map_err(io)?;
                    self.tool(Stage::Rootfs, extract_cmd(&tar, rootfs))?;
                    fs::remove_file(&tar).map_err(io)
                })
            }
        };
        result.map_err(|e| self.name_unknown_package(e))?;
        // The file-mirror hooks leave their (empty) mount points: paths of this host's home and
        // staging tree, which must not make the image differ from one built from the network.
        for dir in [&self.cache.dir, &self.staging.join(LOCAL_DEBS)] {
            prune_empty_dirs(rootfs, dir).map_err(io)?;
        }
        Ok(())
    }

    /// A failed mmdebstrap whose apt could not find one of the recipe's packages names it.
    fn name_unknown_package(&self, e: BuildError) -> BuildError {
        let BuildError::Tool { source: ExecError::Failed { stderr_tail, .. }, .. } = &e else { return e };
        match unknown_package(stderr_tail) {
            Some(name) => {
                let BuildError::Tool { source, .. } = e else { unreachable!() };
                BuildError::UnknownPackage { name, suite: self.recipe.suite.clone(), source }
            }
            None => e,
        }
    }

    /// dpkg's database of the userland: every installed package, by name.
    fn installed_packages(&self, rootfs: &Path) -> Result<Vec<Package>, BuildError> {
        let out = self.tool(
            Stage::Rootfs,
            Cmd::new("dpkg-query", "dpkg")
                .arg(format!("--admindir={}", rootfs.join("var/lib/dpkg").display()))
                .arg("--show")
                .arg("--showformat=${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n"),
        )?;
        Ok(parse_installed(&String::from_utf8_lossy(&out)))
    }

    /// The digest of every .deb that went in: the installed packages' files in the cache, the
    /// kernel's, and the `--deb` files.
    fn deb_digests(&self, packages: &[Package], kernel_debs: &[PathBuf]) -> io::Result<Vec<DebDigest>> {
        let mut out = Vec::new();
        for p in packages {
            if let Some(file) = self.cache.file_of(&p.name, &p.version, &p.arch) {
                let name = file.file_name().expect("a file").to_string_lossy().into_owned();
                out.push(DebDigest { file: name, sha256: sha256_file(&file)? });
            }
        }
        for deb in kernel_debs {
            let name = deb.file_name().expect("a file").to_string_lossy().into_owned();
            if !out.iter().any(|d| d.file == name) {
                let cached = self.cache.dir.join(&name);
                out.push(DebDigest { file: name, sha256: sha256_file(&cached)? });
            }
        }
        for local in &self.recipe.local_debs {
            if !out.iter().any(|d| d.file == local.file) {
                out.push(local.clone());
            }
        }
        out.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(out)
    }

    fn unpack_kernel(&self, kernel_debs: &[PathBuf]) -> Result<UnpackedKernel, BuildError> {
        let io = |source| BuildError::Io { stage: Stage::Kernel, source };
        let name = kernel_debs
            .iter()
            .filter_map(|p| p.file_name())
            .find(|n| is_versioned_kernel(&n.to_string_lossy()))
            .ok_or(BuildError::NoKernel)?;
        // Moved into the cache by now.
        let deb = self.cache.dir.join(name);
        let root = self.staging.join("kernel");
        self.tool(Stage::Kernel, Cmd::new("dpkg-deb", "dpkg").arg("-x").arg(&deb).arg(&root))?;
        let release = only_entry(&root.join("usr/lib/modules")).ok_or(BuildError::NoKernel)?;
        let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
        if !vmlinuz.exists() {
            return Err(BuildError::NoKernel);
        }
        link_lib(&root).map_err(io)?;
        self.tool(Stage::Kernel, Cmd::new("depmod", "kmod").arg("-b").arg(&root).arg(&release))?;
        Ok(UnpackedKernel { modules_dir: root.join("usr/lib/modules").join(&release), release, vmlinuz })
    }

    /// Copies `modules` (decompressed: the guest loads them faster) into `tree`, runs depmod
    /// there, and lists `load` in n2d-init's boot list (`n2d_proto::MODULE_LIST`).
    fn install_modules(
        &self,
        kernel: &UnpackedKernel,
        tree: &Path,
        modules: &std::collections::BTreeSet<String>,
        load: &[String],
    ) -> Result<(), BuildError> {
        let io = |source| BuildError::Io { stage: Stage::Modules, source };
        let dest = tree.join("usr/lib/modules").join(&kernel.release);
        for module in modules {
            let target = dest.join(module.trim_end_matches(".xz"));
            fs::create_dir_all(target.parent().expect("module path has a parent")).map_err(io)?;
            let bytes = if module.ends_with(".xz") {
                self.tool(
                    Stage::Modules,
                    Cmd::new("xz", "xz-utils").arg("-dc").arg(kernel.modules_dir.join(module)),
                )?
            } else {
                fs::read(kernel.modules_dir.join(module)).map_err(io)?
            };
            fs::write(target, bytes).map_err(io)?;
        }
        for meta in ["modules.builtin", "modules.builtin.modinfo", "modules.order"] {
            if kernel.modules_dir.join(meta).exists() {
                fs::copy(kernel.modules_dir.join(meta), dest.join(meta)).map_err(io)?;
            }
        }
        link_lib(tree).map_err(io)?;
        self.tool(Stage::Modules, Cmd::new("depmod", "kmod").arg("-b").arg(tree).arg(&kernel.release))?;
        write_module_list(tree, MODULE_LIST, load).map_err(io)
    }

    /// `/init` (n2d-init), `/dev/console` (so PID 1 has a console before devtmpfs is
    /// mounted), the mount points stage 1 uses, and the modules tree.
    fn write_initramfs(&self, tree: &Path, cpio: &Path) -> io::Result<()> {
        let mut w = CpioWriter::new(io::BufWriter::new(fs::File::create(cpio)?));
        for dir in ["dev", "proc", "sys", "sysroot", "etc", "usr", "usr/lib", "usr/lib/modules"] {
            w.add(Entry::Dir { path: dir })?;
        }
        w.add(Entry::CharDev { path: "dev/console", major: 5, minor: 1 })?;
        w.add(Entry::File { path: "init", mode: 0o755, data: self.init })?;
        let mut files = Vec::new();
        walk(tree, tree, &mut files)?;
        for (rel, is_dir) in files {
            if ["etc", "usr", "usr/lib", "usr/lib/modules"].contains(&rel.as_str()) {
                continue;
            }
            if is_dir {
                w.add(Entry::Dir { path: &rel })?;
            } else {
                let data = fs::read(tree.join(&rel))?;
                w.add(Entry::File { path: &rel, mode: 0o644, data: &data })?;
            }
        }
        w.finish()?;
        Ok(())
    }
}

/// What mmdebstrap's command line is made of.
struct MmdebstrapArgs<'a> {
    recipe: &'a Recipe,
    mode: Mode,
    /// apt source lines the packages come from (the recipe's mirrors, or the package cache).
    sources: &'a [String],
    /// `--deb` files (absolute paths in the staging tree).
    local_debs: &'a [PathBuf],
    /// Where `sync-out` leaves every package used (apt's archives, the kernel's added).
    debs_out: &'a Path,
}

impl MmdebstrapArgs<'_> {
    /// mmdebstrap making the userland at `target` (a directory, or a tar in unshare mode) under
    /// [`SOURCE_DATE_EPOCH`], its customize hooks fetching the kernel package into apt's
    /// archives and copying those out to [`DEBS_OUT`].
    fn cmd(&self, target: &Path) -> Cmd {
        // The hook runs outside the chroot (in unshare mode as the namespace's root) with the
        // guest's apt configuration, so it resolves the kernel of the guest's suite, not the
        // host's. The metapackage is fetched too, so the package cache can resolve it offline.
        let apt = "APT_CONFIG=\"$MMDEBSTRAP_APT_CONFIG\"";
        let hook = format!(
            "cd \"$1{APT_ARCHIVES}\" && {apt} apt-get download {meta} $({apt} apt-cache depends {meta} | awk '/Depends: linux-image-[0-9]/{{print $2}}')",
            meta = self.recipe.kernel_package,
        );
        let mut cmd = Cmd::new("env", "coreutils")
            .arg(format!("SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH}"))
            // Not --quiet: apt's "Unable to locate package" is said only at the default verbosity,
            // and the error names the package from it.
            .arg("mmdebstrap")
            .arg(match self.mode {
                Mode::Root => "--mode=root",
                Mode::Unshare => "--mode=unshare",
            })
            .arg("--variant=essential")
            .arg(format!("--include={}", self.recipe.packages.join(",")));
        for deb in self.local_debs {
            cmd = cmd.arg(format!("--include={}", deb.display()));
        }
        for excluded in [
            "/usr/share/doc/*",
            "/usr/share/man/*",
            "/usr/share/locale/*",
            "/usr/share/info/*",
            "/usr/share/lintian/*",
        ] {
            cmd = cmd.arg(format!("--dpkgopt=path-exclude={excluded}"));
        }
        if !self.local_debs.is_empty() || self.sources.iter().any(|s| s.contains("file:/")) {
            cmd = cmd.arg(format!("--hook-dir={FILE_MIRROR_HOOKS}"));
        }
        // Keep the essential packages' .debs in apt's archives for sync-out.
        cmd.arg("--skip=essential/unlink")
            .arg(format!("--customize-hook={hook}"))
            .arg(format!("--customize-hook=sync-out {APT_ARCHIVES} {}", self.debs_out.display()))
            .arg(&self.recipe.suite)
            .arg(target.as_os_str())
            .args(self.sources.iter().map(std::ffi::OsString::from))
    }
}

/// mkfs.erofs with every timestamp [`SOURCE_DATE_EPOCH`] and the recipe's UUID, so the same tree
/// gives the same bytes (it orders entries itself, whatever the directory order on disk).
fn mkfs_erofs_cmd(recipe: &Recipe, erofs: &Path, rootfs: &Path) -> Cmd {
    Cmd::new("mkfs.erofs", "erofs-utils")
        .arg("-zlz4hc")
        .arg(format!("-T{SOURCE_DATE_EPOCH}"))
        .arg(format!("-U{}", recipe.erofs_uuid()))
        .arg("--all-root")
        .arg("--quiet")
        .arg(erofs)
        .arg(rootfs)
}

/// The image's apt sources: the recipe's, in `/etc/apt/sources.list`, nothing in sources.list.d.
fn write_sources(rootfs: &Path, list: &str) -> io::Result<()> {
    let d = rootfs.join("etc/apt/sources.list.d");
    if let Ok(entries) = fs::read_dir(&d) {
        for e in entries.flatten() {
            fs::remove_file(e.path())?;
        }
    }
    fs::create_dir_all(rootfs.join("etc/apt"))?;
    fs::write(rootfs.join("etc/apt/sources.list"), list)
}

/// The kernel packages (`linux-image-*`) the hook fetched, sorted: the metapackage and the
/// kernel itself.
fn kernel_debs(debs: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = fs::read_dir(debs)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("linux-image-")))
        .collect();
    out.sort();
    Ok(out)
}

/// Whether a file name is a kernel's package (`linux-image-6.12…`), not its metapackage.
fn is_versioned_kernel(name: &str) -> bool {
    name.strip_prefix("linux-image-").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
}

/// Removes `host_path`'s directories inside `rootfs`, deepest first, while they are empty.
fn prune_empty_dirs(rootfs: &Path, host_path: &Path) -> io::Result<()> {
    let Ok(rel) = host_path.strip_prefix("/") else { return Ok(()) };
    let mut dir = rootfs.join(rel);
    while dir != rootfs && dir.starts_with(rootfs) {
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => break, // not empty: part of the userland
        }
        if !dir.pop() {
            break;
        }
    }
    Ok(())
}

/// The package apt could not find, from mmdebstrap's error output.
fn unknown_package(stderr: &str) -> Option<String> {
    for line in stderr.lines() {
        for marker in ["Unable to locate package ", "Package '"] {
            if let Some(rest) = line.split_once(marker).map(|(_, r)| r) {
                let name: String = rest
                    .trim_start_matches('\'')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "+-.".contains(*c))
                    .collect();
                let tail = &rest[name.len()..];
                let unknown = marker.starts_with("Unable")
                    || tail.contains("has no installation candidate")
                    || tail.contains("is not available");
                if unknown && !name.is_empty() {
                    return Some(name);
                }
            }
        }
    }
    None
}

/// `dpkg-query --show` lines (`STATUS\tNAME\tVERSION\tARCH`) of installed packages, by name.
fn parse_installed(text: &str) -> Vec<Package> {
    let mut out: Vec<Package> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let status = f.next()?;
            let (name, version, arch) = (f.next()?, f.next()?, f.next()?);
            status.starts_with("ii").then(|| Package {
                name: name.into(),
                version: version.into(),
                arch: arch.into(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// [`artifacts_digest`] of an image directory's [`DIGESTED_ARTIFACTS`].
pub fn digest_artifacts(dir: &Path) -> io::Result<String> {
    let files: Vec<(&str, Vec<u8>)> =
        DIGESTED_ARTIFACTS.iter().map(|n| Ok((*n, fs::read(dir.join(n))?))).collect::<io::Result<_>>()?;
    Ok(artifacts_digest(files.iter().map(|(n, b)| (*n, &b[..]))))
}

/// Extracts mmdebstrap's tar as whoever runs it: Debian's modes (setuid and setgid bits too)
/// whatever the umask, no owners (the erofs root is made `--all-root`), and no device nodes
/// (which an ordinary user cannot make; the guest mounts devtmpfs on /dev).
fn extract_cmd(tar: &Path, dest: &Path) -> Cmd {
    Cmd::new("tar", "tar").arg("--extract").arg("--file").arg(tar).arg("--directory").arg(dest).args([
        "--same-permissions",
        "--no-same-owner",
        "--exclude=./dev/*",
    ])
}

/// Writes one of n2d-init's module lists (`n2d_proto::MODULE_LIST`, `LATE_MODULE_LIST`: guest
/// paths) into `tree`.
fn write_module_list(tree: &Path, list: &str, modules: &[String]) -> io::Result<()> {
    let path = tree.join(list.trim_start_matches('/'));
    fs::create_dir_all(path.parent().expect("list path has a parent"))?;
    fs::write(path, modules.iter().map(|m| format!("{}\n", module_name(m))).collect::<String>())
}

struct UnpackedKernel {
    release: String,
    vmlinuz: PathBuf,
    modules_dir: PathBuf,
}

impl UnpackedKernel {
    fn module_db(&self) -> io::Result<ModuleDb> {
        let dep = fs::read_to_string(self.modules_dir.join("modules.dep"))?;
        let builtin = fs::read_to_string(self.modules_dir.join("modules.builtin")).unwrap_or_default();
        Ok(ModuleDb::parse(&dep, &builtin))
    }
}

/// depmod on a bookworm host looks in BASE/lib/modules; merged-/usr trees keep them in usr/lib.
fn link_lib(tree: &Path) -> io::Result<()> {
    let lib = tree.join("lib");
    if fs::symlink_metadata(&lib).is_err() {
        std::os::unix::fs::symlink("usr/lib", lib)?;
    }
    Ok(())
}

/// Directories emptied in the image: apt's caches and lists, logs of the build, docs.
const EMPTIED_DIRS: [&str; 5] =
    ["var/cache/apt", "var/lib/apt/lists", "var/log", "usr/share/doc", "usr/share/man"];

/// Files of the installed packages that a Docker host never runs: containerd's debugging
/// client and its legacy v1 shims (dockerd uses io.containerd.runc.v2), perl and debconf's perl
/// modules (only package scripts at install time need them), glibc's charset converters.
const DROPPED_PATHS: [&str; 9] = [
    "usr/bin/ctr",
    "usr/bin/containerd-shim",
    "usr/bin/containerd-shim-runc-v1",
    "usr/lib/x86_64-linux-gnu/gconv",
    "usr/lib/x86_64-linux-gnu/perl-base",
    "usr/bin/perl",
    "usr/bin/perl5*",
    "usr/share/perl5",
    "usr/share/common-licenses",
];

/// Drops what a Docker host never reads.
fn trim_rootfs(rootfs: &Path) -> io::Result<()> {
    for dir in EMPTIED_DIRS {
        let p = rootfs.join(dir);
        if p.exists() {
            fs::remove_dir_all(&p)?;
            fs::create_dir_all(&p)?;
        }
    }
    for path in DROPPED_PATHS {
        for p in matching(rootfs, path)? {
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&p)?,
                Ok(_) => fs::remove_file(&p)?,
                Err(_) => {}
            }
        }
    }
    Ok(())
}

/// `path` under `root`; one ending in `*` is every entry of its directory whose name starts
/// with what precedes the `*` (e.g. `usr/bin/perl5*`, whatever perl's version).
fn matching(root: &Path, path: &str) -> io::Result<Vec<PathBuf>> {
    let Some(prefix) = path.strip_suffix('*') else { return Ok(vec![root.join(path)]) };
    let (dir, stem) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    let Ok(entries) = fs::read_dir(root.join(dir)) else { return Ok(Vec::new()) };
    let mut found = Vec::new();
    for e in entries {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(stem) {
            found.push(e.path());
        }
    }
    Ok(found)
}

fn only_entry(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.pop()
}

/// Every directory and regular file under `dir`, relative to `base`, parents first, sorted.
fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, bool)>) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ty = e.file_type()?;
        let rel = e.path().strip_prefix(base).expect("under base").to_string_lossy().into_owned();
        if ty.is_dir() {
            out.push((rel, true));
            walk(base, &e.path(), out)?;
        } else if ty.is_file() {
            out.push((rel, false));
        }
    }
    Ok(())
}

fn tree_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let ty = e.file_type()?;
        if ty.is_dir() {
            total += tree_size(&e.path())?;
        } else if ty.is_file() {
            total += e.metadata()?.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_numbered_in_order() {
        assert_eq!(Stage::Rootfs.number(), 1);
        assert_eq!(Stage::Store.number(), Stage::ALL.len());
    }

    fn recipe() -> Recipe {
        Recipe::docker_host("00".repeat(32))
    }

    fn mmdebstrap(recipe: &Recipe, mode: Mode, sources: &[String], local: &[PathBuf], target: &str) -> Cmd {
        MmdebstrapArgs { recipe, mode, sources, local_debs: local, debs_out: Path::new("/s/debs") }
            .cmd(Path::new(target))
    }

    fn mirror_lines(r: &Recipe) -> Vec<String> {
        r.sources.iter().map(|s| format!("deb {s} main")).collect()
    }

    #[test]
    fn an_ordinary_user_builds_in_unshare_mode_into_a_tar_under_a_fixed_epoch() {
        let r = recipe();
        let cmd = mmdebstrap(&r, Mode::Unshare, &mirror_lines(&r), &[], "/s/rootfs.tar").display();
        assert!(
            cmd.starts_with(&format!(
                "env SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH} mmdebstrap --mode=unshare --variant=essential --include=docker.io,"
            )),
            "{cmd}"
        );
        assert!(
            cmd.ends_with(" trixie /s/rootfs.tar deb http://deb.debian.org/debian trixie main deb http://deb.debian.org/debian trixie-updates main deb http://deb.debian.org/debian-security trixie-security main"),
            "{cmd}"
        );
        assert!(!cmd.contains("--hook-dir"), "{cmd}");
        let cmd = mmdebstrap(&r, Mode::Root, &mirror_lines(&r), &[], "/s/rootfs").display();
        assert!(cmd.contains(" --mode=root "), "{cmd}");
        assert!(cmd.contains(" trixie /s/rootfs deb "), "{cmd}");
    }

    #[test]
    fn the_hooks_fetch_the_kernel_into_apts_archives_and_copy_them_out() {
        let r = recipe();
        let cmd = mmdebstrap(&r, Mode::Unshare, &mirror_lines(&r), &[], "/s/rootfs.tar");
        let hooks: Vec<&str> =
            cmd.args.iter().filter_map(|a| a.to_str()?.strip_prefix("--customize-hook=")).collect();
        assert_eq!(hooks.len(), 2, "{hooks:?}");
        assert!(hooks[0].starts_with("cd \"$1/var/cache/apt/archives\" && "), "{}", hooks[0]);
        assert!(
            hooks[0].contains(
                "APT_CONFIG=\"$MMDEBSTRAP_APT_CONFIG\" apt-get download linux-image-cloud-amd64 $("
            ),
            "{}",
            hooks[0]
        );
        assert!(hooks[0].contains("apt-cache depends linux-image-cloud-amd64 |"), "{}", hooks[0]);
        // Nothing of the host's staging tree: the namespace's root could not write there.
        assert!(!hooks[0].contains("/s/"), "{}", hooks[0]);
        // sync-out writes as the user, after the kernel hook, before mmdebstrap's cleanup.
        assert_eq!(hooks[1], "sync-out /var/cache/apt/archives /s/debs");
        assert!(cmd.display().contains(" --skip=essential/unlink "));
    }

    #[test]
    fn the_cache_and_local_debs_come_with_the_file_mirror_hooks() {
        let r = recipe();
        let cache = ["deb [trusted=yes] file:///h/cache/debs ./".to_string()];
        let cmd = mmdebstrap(&r, Mode::Root, &cache, &[], "/s/rootfs").display();
        assert!(cmd.contains(" --hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount "), "{cmd}");
        assert!(cmd.ends_with(" trixie /s/rootfs deb [trusted=yes] file:///h/cache/debs ./"), "{cmd}");
        let local = [PathBuf::from("/s/local-debs/x_1_amd64.deb")];
        let cmd = mmdebstrap(&r, Mode::Root, &mirror_lines(&r), &local, "/s/rootfs").display();
        assert!(cmd.contains(" --include=/s/local-debs/x_1_amd64.deb "), "{cmd}");
        assert!(cmd.contains(" --hook-dir="), "{cmd}");
    }

    #[test]
    fn erofs_gets_fixed_timestamps_and_the_recipes_uuid() {
        let r = recipe();
        let cmd = mkfs_erofs_cmd(&r, Path::new("/o/rootfs.erofs"), Path::new("/s/rootfs")).display();
        assert_eq!(
            cmd,
            format!(
                "mkfs.erofs -zlz4hc -T{SOURCE_DATE_EPOCH} -U{} --all-root --quiet /o/rootfs.erofs /s/rootfs",
                r.erofs_uuid()
            )
        );
    }

    #[test]
    fn installed_packages_are_parsed_and_sorted() {
        let text = "ii \tzlib1g\t1:1.3.dfsg-3\tamd64\nii \tbase-files\t13.8\tamd64\nrc \tgone\t1\tamd64\n";
        let p = parse_installed(text);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[1].version.as_str(), p[1].arch.as_str()),
            ("base-files", "1:1.3.dfsg-3", "amd64")
        );
    }

    #[test]
    fn apts_unknown_package_is_named() {
        assert_eq!(
            unknown_package("E: Unable to locate package no-such-pkg\n").as_deref(),
            Some("no-such-pkg")
        );
        assert_eq!(unknown_package("E: Package 'foo' has no installation candidate").as_deref(), Some("foo"));
        assert_eq!(unknown_package("E: Some index files failed to download"), None);
    }

    #[test]
    fn kernel_packages_are_found_and_the_kernel_told_from_its_metapackage() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "linux-image-cloud-amd64_6.12.41-1_amd64.deb",
            "linux-image-6.12.41+deb13-cloud-amd64_6.12.41-1_amd64.deb",
            "zlib1g_1_amd64.deb",
        ] {
            fs::write(dir.path().join(f), b"x").unwrap();
        }
        let debs = kernel_debs(dir.path()).unwrap();
        assert_eq!(debs.len(), 2);
        let kernels: Vec<_> =
            debs.iter().filter(|p| is_versioned_kernel(&p.file_name().unwrap().to_string_lossy())).collect();
        assert_eq!(kernels.len(), 1);
        assert!(kernels[0].ends_with("linux-image-6.12.41+deb13-cloud-amd64_6.12.41-1_amd64.deb"));
    }

    #[test]
    fn the_image_names_the_recipes_sources_whatever_the_build_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/apt/sources.list.d")).unwrap();
        fs::write(dir.path().join("etc/apt/sources.list.d/0000cache.list"), "deb file:///x ./\n").unwrap();
        write_sources(dir.path(), &recipe().sources_list()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("etc/apt/sources.list.d")).unwrap().count(), 0);
        assert_eq!(
            fs::read_to_string(dir.path().join("etc/apt/sources.list")).unwrap(),
            recipe().sources_list()
        );
    }

    #[test]
    fn empty_mount_points_of_host_paths_are_pruned_and_the_userland_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir_all(root.join("home/u/.n2d/cache/debs")).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        prune_empty_dirs(&root, Path::new("/home/u/.n2d/cache/debs")).unwrap();
        assert!(!root.join("home").exists());
        assert!(root.join("usr/bin").is_dir());
        fs::create_dir_all(root.join("usr/share/x")).unwrap();
        prune_empty_dirs(&root, Path::new("/usr/share/x")).unwrap();
        assert!(!root.join("usr/share").exists() && root.join("usr/bin").is_dir());
    }

    #[test]
    fn sources_come_from_the_mirror_the_cache_or_fail_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PackageCache::new(&dir.path().join("debs"), "trixie");
        let r = recipe();
        let up = |_: &str, _: u16| true;
        let down = |_: &str, _: u16| false;
        assert_eq!(package_source(&r, false, &cache, &up).unwrap(), PackageSource::Mirrors);
        let err = package_source(&r, false, &cache, &down).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, BuildError::NoNetworkNoCache { .. }), "{err:?}");
        assert!(
            msg.contains("no network")
                && msg.contains("build once online")
                && msg.contains("--mirror file://"),
            "{msg}"
        );
        assert!(matches!(package_source(&r, true, &cache, &up), Err(BuildError::OfflineNoCache { .. })));

        fs::create_dir_all(&cache.dir).unwrap();
        fs::write(cache.dir.join("Packages"), "Package: docker.io\n\nPackage: runc\n").unwrap();
        // --offline never asks the network.
        let never = |_: &str, _: u16| -> bool { panic!("--offline reached for the network") };
        assert_eq!(
            package_source(&r, true, &cache, &never).unwrap(),
            PackageSource::Cache { no_network: None }
        );
        assert_eq!(
            package_source(&r, false, &cache, &down).unwrap(),
            PackageSource::Cache { no_network: Some("deb.debian.org".into()) }
        );
        let missing = missing_from_cache(&r, &cache);
        assert!(
            missing.contains(&"containerd".to_string())
                && missing.contains(&"linux-image-cloud-amd64".to_string())
        );
        assert!(!missing.contains(&"runc".to_string()));

        // A local mirror is read in place, network or not.
        let mut local = r.clone();
        local.sources = vec!["file:///srv/debian trixie".into()];
        assert_eq!(package_source(&local, true, &cache, &never).unwrap(), PackageSource::Mirrors);
    }

    #[test]
    fn a_docker_archive_replaces_debians_engine_in_the_recipe() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("docker.tgz");
        fs::write(
            &archive,
            crate::inputs::tests::tgz(&[
                ("docker/dockerd", b"x"),
                ("docker/containerd", b"x"),
                ("docker/runc", b"x"),
            ]),
        )
        .unwrap();
        let mut opts = BuildOptions::new(GuestInit { bytes: static_elf(), source: "t".into() });
        let plain = plan(&opts).unwrap().recipe;
        opts.docker_archive = Some(archive.clone());
        opts.include = vec!["strace".into()];
        let p = plan(&opts).unwrap();
        assert!(
            !p.recipe.packages.iter().any(|x| ENGINE_PACKAGES.contains(&x.as_str())),
            "{:?}",
            p.recipe.packages
        );
        assert!(
            p.recipe.packages.contains(&"iptables".to_string())
                && p.recipe.packages.contains(&"strace".to_string())
        );
        assert_eq!(p.recipe.docker_archive_sha256.as_ref().unwrap().len(), 64);
        assert_ne!(p.recipe.id(), plain.id());
        assert_eq!(p.docker_archive, Some(archive));
    }

    #[test]
    fn bad_inputs_are_refused_before_any_work_as_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let base = BuildOptions::new(GuestInit { bytes: static_elf(), source: "t".into() });
        let text = dir.path().join("notes.txt");
        fs::write(&text, "x").unwrap();
        let cases: Vec<(BuildOptions, &str)> = vec![
            (BuildOptions { debs: vec![dir.path().join("gone.deb")], ..base.clone() }, "gone.deb"),
            (BuildOptions { debs: vec![text.clone()], ..base.clone() }, "notes.txt"),
            (BuildOptions { docker_archive: Some(text.clone()), ..base.clone() }, "notes.txt"),
            (BuildOptions { mirror: Some("ftp://x/debian".into()), ..base.clone() }, "ftp://x/debian"),
            (
                BuildOptions { mirror: Some("file:///no/such/mirror".into()), ..base.clone() },
                "/no/such/mirror",
            ),
            (BuildOptions { include: vec!["Bad Name".into()], ..base.clone() }, "Bad Name"),
        ];
        for (opts, named) in cases {
            let err = plan(&opts).unwrap_err();
            assert!(err.is_usage(), "{err:?}");
            assert!(err.to_string().contains(named), "{err}");
        }
    }

    /// The smallest static x86-64 ELF the init check accepts.
    fn static_elf() -> Vec<u8> {
        crate::init::tests::minimal_static_elf()
    }

    #[test]
    fn extraction_keeps_modes_and_drops_owners_and_device_nodes() {
        let cmd = extract_cmd(Path::new("/s/rootfs.tar"), Path::new("/s/rootfs"));
        assert_eq!(
            cmd.display(),
            "tar --extract --file /s/rootfs.tar --directory /s/rootfs --same-permissions --no-same-owner --exclude=./dev/*"
        );
    }

    #[test]
    fn trimming_drops_listed_paths_and_versioned_names_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir_all(root.join("usr/share/perl5/Debconf")).unwrap();
        for f in ["usr/bin/perl5.40.1", "usr/bin/perl", "usr/bin/ctr", "usr/bin/dockerd", "usr/bin/perlx"] {
            fs::write(root.join(f), b"x").unwrap();
        }
        trim_rootfs(root).unwrap();
        let mut left: Vec<String> = fs::read_dir(root.join("usr/bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["dockerd", "perlx"]);
        assert!(!root.join("usr/share/perl5").exists());
    }

    #[test]
    fn walk_lists_parents_before_children() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("b/c")).unwrap();
        fs::write(dir.path().join("b/c/f"), b"x").unwrap();
        fs::write(dir.path().join("a"), b"y").unwrap();
        let mut out = Vec::new();
        walk(dir.path(), dir.path(), &mut out).unwrap();
        let names: Vec<_> = out.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        assert_eq!(names, [("a", false), ("b", true), ("b/c", true), ("b/c/f", false)]);
    }

    #[test]
    fn a_dynamically_linked_init_is_refused_before_any_work() {
        // This test binary is linked against the host's C library, like a plain host build of
        // n2d-init: the recipe (the first step of a build) refuses it, naming the fix.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        let init = GuestInit { bytes: me, source: "/tmp/n2d-init".into() };
        let opts = BuildOptions::new(init);
        let err = recipe_for(&opts).unwrap_err().to_string();
        assert!(err.contains("/tmp/n2d-init") && err.contains("dynamically linked"), "{err}");
        assert!(err.contains("x86_64-unknown-linux-musl"), "{err}");
    }
}
