//! The build pipeline, one function per stage.

use crate::init::{check_static_x86_64, GuestInit, InitProblem, INIT_FIX};
use crate::initramfs::{CpioWriter, Entry};
use crate::modules::{module_name, ModuleDb};
use crate::recipe::{ImageManifest, Recipe};
use crate::unshare::{check_unshare, BuildUser};
use crate::{Image, DIRECT_KERNEL_FILE, INITRD_FILE, KERNEL_FILE, MANIFEST_FILE, ROOTFS_FILE};
use n2d_exec::{is_installed_or_in_sbin, Cmd, ExecError, Runner};
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
    /// Debian mirror URL (default: mmdebstrap's).
    pub mirror: Option<String>,
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
}

/// The external tools a build uses and the Debian packages that ship them.
pub const TOOLS: [(&str, &str); 5] = [
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.erofs", "erofs-utils"),
    ("depmod", "kmod"),
    ("lz4", "lz4"),
    ("xz", "xz-utils"),
];

/// Fails with the first missing tool and its package.
pub fn check_tools() -> Result<(), BuildError> {
    for (program, package) in TOOLS {
        if !is_installed_or_in_sbin(program) {
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
    check_static_x86_64(&opts.init.bytes)
        .map_err(|problem| BuildError::UnusableInit { source_desc: opts.init.source.clone(), problem })?;
    let mut recipe = Recipe::docker_host(hex::encode(Sha256::digest(&opts.init.bytes)));
    if let Some(suite) = &opts.suite {
        recipe.suite = suite.clone();
    }
    if let Some(mirror) = &opts.mirror {
        recipe.mirror = mirror.clone();
    }
    Ok(recipe)
}

/// Builds the image (or finds it already built). Returns the image and whether it was a cache hit.
pub fn build_image(
    home: &Home,
    runner: &dyn Runner,
    opts: &BuildOptions,
    progress: &dyn Fn(Stage),
) -> Result<(Image, bool), BuildError> {
    let recipe = recipe_for(opts)?;
    let id = recipe.id();
    if let Ok(image) = crate::find_image(home, &id) {
        return Ok((image, true));
    }
    check_tools()?;
    let mode = Mode::of_this_process();
    if mode == Mode::Unshare {
        check_unshare(&BuildUser::of_this_process(), &is_installed_or_in_sbin)?;
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
        .begin_intent(Operation::ImageBuild { staging: staging_name }, &KillPoints::from_env())
        .map_err(BuildError::Store)?;
    let result = Builder { runner, recipe: &recipe, staging: &staging, init: &opts.init.bytes, mode }
        .run(&id, progress)
        .and_then(|manifest| {
            journal.kill_point("before-store");
            let final_dir = home.images_dir().join(&id);
            fs::rename(staging.join("out"), &final_dir)
                .map_err(|source| BuildError::Io { stage: Stage::Store, source })?;
            Ok(Image { dir: final_dir, manifest })
        });
    // The staging tree (a whole Debian userland) is never kept, built or not.
    let _ = fs::remove_dir_all(&staging);
    let _ = journal.finish();
    result.map(|image| (image, false))
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

/// Where the customize hook leaves the kernel package, inside the userland: the hook runs as the
/// namespace's root in unshare mode, which may write there but not into the user's staging tree.
/// The builder moves it out before anything reads the tree.
const KERNEL_DEB_DIR: &str = "var/cache/n2d-kernel";

struct Builder<'a> {
    runner: &'a dyn Runner,
    recipe: &'a Recipe,
    staging: &'a Path,
    init: &'a [u8],
    mode: Mode,
}

impl Builder<'_> {
    fn run(&self, id: &str, progress: &dyn Fn(Stage)) -> Result<ImageManifest, BuildError> {
        let out = self.staging.join("out");
        fs::create_dir_all(&out).map_err(|source| BuildError::Io { stage: Stage::Rootfs, source })?;
        let rootfs = self.staging.join("rootfs");

        progress(Stage::Rootfs);
        self.mmdebstrap(&rootfs)?;

        progress(Stage::Kernel);
        let kernel = self.unpack_kernel()?;

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
        self.tool(
            Stage::RootImage,
            Cmd::new("mkfs.erofs", "erofs-utils").args([
                "-zlz4hc".into(),
                "-T0".into(),
                "--all-root".into(),
                erofs.clone().into_os_string(),
                rootfs.clone().into_os_string(),
            ]),
        )?;

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

    /// The userland in `rootfs`, and (from the same package lists) the kernel .deb in `debs/`.
    fn mmdebstrap(&self, rootfs: &Path) -> Result<(), BuildError> {
        let io = |source| BuildError::Io { stage: Stage::Rootfs, source };
        match self.mode {
            Mode::Root => {
                self.tool(Stage::Rootfs, mmdebstrap_cmd(self.recipe, self.mode, rootfs))?;
            }
            Mode::Unshare => {
                let tar = self.staging.join("rootfs.tar");
                self.tool(Stage::Rootfs, mmdebstrap_cmd(self.recipe, self.mode, &tar))?;
                fs::create_dir_all(rootfs).map_err(io)?;
                self.tool(Stage::Rootfs, extract_cmd(&tar, rootfs))?;
                fs::remove_file(&tar).map_err(io)?;
            }
        }
        take_kernel_debs(rootfs, &self.staging.join("debs"))
    }

    fn unpack_kernel(&self) -> Result<UnpackedKernel, BuildError> {
        let io = |source| BuildError::Io { stage: Stage::Kernel, source };
        let debs = self.staging.join("debs");
        let deb = fs::read_dir(&debs)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("linux-image-")))
            .ok_or(BuildError::NoKernel)?;
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

/// mmdebstrap making the userland at `target` (a directory, or a tar in unshare mode), its
/// customize hook fetching the kernel package into [`KERNEL_DEB_DIR`] of the userland.
fn mmdebstrap_cmd(recipe: &Recipe, mode: Mode, target: &Path) -> Cmd {
    // The hook runs outside the chroot (in unshare mode as the namespace's root) with the
    // guest's apt configuration, so it resolves the kernel of the guest's suite, not the host's.
    let apt = "APT_CONFIG=\"$MMDEBSTRAP_APT_CONFIG\"";
    let hook = format!(
        "mkdir -p \"$1/{KERNEL_DEB_DIR}\" && cd \"$1/{KERNEL_DEB_DIR}\" && {apt} apt-get download $({apt} apt-cache depends {meta} | awk '/Depends: linux-image-[0-9]/{{print $2}}')",
        meta = recipe.kernel_package,
    );
    let mut cmd = Cmd::new("mmdebstrap", "mmdebstrap")
        .arg("--quiet")
        .arg(match mode {
            Mode::Root => "--mode=root",
            Mode::Unshare => "--mode=unshare",
        })
        .arg("--variant=essential")
        .arg(format!("--include={}", recipe.packages.join(",")));
    for excluded in [
        "/usr/share/doc/*",
        "/usr/share/man/*",
        "/usr/share/locale/*",
        "/usr/share/info/*",
        "/usr/share/lintian/*",
    ] {
        cmd = cmd.arg(format!("--dpkgopt=path-exclude={excluded}"));
    }
    cmd = cmd.arg(format!("--customize-hook={hook}")).arg(&recipe.suite).arg(target.as_os_str());
    if !recipe.mirror.is_empty() {
        cmd = cmd.arg(&recipe.mirror);
    }
    cmd
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

/// Moves the kernel package out of the userland into `debs`, so it never reaches the guest.
fn take_kernel_debs(rootfs: &Path, debs: &Path) -> Result<(), BuildError> {
    match fs::rename(rootfs.join(KERNEL_DEB_DIR), debs) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BuildError::NoKernel),
        Err(source) => Err(BuildError::Io { stage: Stage::Rootfs, source }),
    }
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

    #[test]
    fn an_ordinary_user_builds_in_unshare_mode_into_a_tar() {
        let cmd = mmdebstrap_cmd(&recipe(), Mode::Unshare, Path::new("/s/rootfs.tar")).display();
        assert!(
            cmd.starts_with("mmdebstrap --quiet --mode=unshare --variant=essential --include=docker.io,"),
            "{cmd}"
        );
        assert!(cmd.ends_with(" trixie /s/rootfs.tar"), "{cmd}");
        let cmd = mmdebstrap_cmd(&recipe(), Mode::Root, Path::new("/s/rootfs")).display();
        assert!(cmd.contains(" --mode=root "), "{cmd}");
        assert!(cmd.ends_with(" trixie /s/rootfs"), "{cmd}");
    }

    #[test]
    fn the_hook_fetches_the_kernel_into_the_userland_with_the_guests_apt() {
        let cmd = mmdebstrap_cmd(&recipe(), Mode::Unshare, Path::new("/s/rootfs.tar"));
        let hook = cmd.args.iter().find_map(|a| a.to_str()?.strip_prefix("--customize-hook=")).unwrap();
        assert!(
            hook.starts_with("mkdir -p \"$1/var/cache/n2d-kernel\" && cd \"$1/var/cache/n2d-kernel\" && "),
            "{hook}"
        );
        assert!(hook.contains("APT_CONFIG=\"$MMDEBSTRAP_APT_CONFIG\" apt-get download $("), "{hook}");
        assert!(hook.contains("apt-cache depends linux-image-cloud-amd64 |"), "{hook}");
        // Nothing of the host's staging tree: the namespace's root could not write there.
        assert!(!hook.contains("/s/"), "{hook}");
    }

    #[test]
    fn a_mirror_follows_the_target() {
        let mut r = recipe();
        r.mirror = "http://deb.example/debian".into();
        let cmd = mmdebstrap_cmd(&r, Mode::Root, Path::new("/s/rootfs")).display();
        assert!(cmd.ends_with(" trixie /s/rootfs http://deb.example/debian"), "{cmd}");
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
    fn the_kernel_package_is_moved_out_of_the_userland() {
        let dir = tempfile::tempdir().unwrap();
        let (rootfs, debs) = (dir.path().join("rootfs"), dir.path().join("debs"));
        fs::create_dir_all(rootfs.join(KERNEL_DEB_DIR)).unwrap();
        fs::write(rootfs.join(KERNEL_DEB_DIR).join("linux-image-6.12_amd64.deb"), b"x").unwrap();
        take_kernel_debs(&rootfs, &debs).unwrap();
        assert!(debs.join("linux-image-6.12_amd64.deb").is_file());
        assert!(!rootfs.join(KERNEL_DEB_DIR).exists());
        assert!(rootfs.join("var/cache").is_dir());
        // A hook that fetched nothing: no kernel.
        assert!(matches!(take_kernel_debs(&rootfs, &dir.path().join("debs2")), Err(BuildError::NoKernel)));
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
        let opts = BuildOptions { init, suite: None, mirror: None };
        let err = recipe_for(&opts).unwrap_err().to_string();
        assert!(err.contains("/tmp/n2d-init") && err.contains("dynamically linked"), "{err}");
        assert!(err.contains("x86_64-unknown-linux-musl"), "{err}");
    }
}
