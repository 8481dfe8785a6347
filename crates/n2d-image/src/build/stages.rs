//! The stages of a build, one method each, over the staging tree.

use super::mmdebstrap::{
    extract_cmd, parse_installed, prune_empty_dirs, unknown_package, write_sources, MmdebstrapArgs,
    MmdebstrapMode, DEBS_OUT, LOCAL_DEBS,
};
use super::plan::{PackageSource, Plan};
use super::trim::trim_rootfs;
use crate::cache::{sha256_file, PackageCache};
use crate::error::{BuildError, BuildStage};
use crate::initramfs::{CpioWriter, Entry};
use crate::inputs;
use crate::modules::{module_name, ModuleDb};
use crate::recipe::{
    artifacts_digest, DebDigest, ImageManifest, Package, Recipe, DIGESTED_ARTIFACTS, SOURCE_DATE_EPOCH,
};
use crate::{INITRD_FILE, KERNEL_FILE, MANIFEST_FILE, ROOTFS_FILE};
use n2d_exec::{Cmd, ExecError, Runner};
use n2d_proto::{LATE_MODULE_LIST, MODULE_LIST};
use n2d_store::write_json;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub(super) struct Builder<'a> {
    pub(super) runner: &'a dyn Runner,
    pub(super) plan: &'a Plan,
    pub(super) recipe: &'a Recipe,
    pub(super) staging: &'a Path,
    pub(super) init: &'a [u8],
    pub(super) mode: MmdebstrapMode,
    pub(super) cache: &'a PackageCache,
    pub(super) source: &'a PackageSource,
}

impl Builder<'_> {
    pub(super) fn run(&self, id: &str, progress: &dyn Fn(BuildStage)) -> Result<ImageManifest, BuildError> {
        let out = self.staging.join("out");
        fs::create_dir_all(&out).map_err(|source| BuildError::Io { stage: BuildStage::Rootfs, source })?;
        let rootfs = self.staging.join("rootfs");

        progress(BuildStage::Rootfs);
        self.mmdebstrap(&rootfs)?;
        let packages = self.installed_packages(&rootfs)?;
        let io = |source| BuildError::Io { stage: BuildStage::Rootfs, source };
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

        progress(BuildStage::Kernel);
        let kernel = self.unpack_kernel(&kernel_debs)?;

        progress(BuildStage::Modules);
        let db =
            kernel.module_db().map_err(|source| BuildError::Io { stage: BuildStage::Modules, source })?;
        let mut names = self.recipe.boot_modules.clone();
        names.extend(self.recipe.late_modules.iter().cloned());
        names.extend(self.recipe.initrd_modules.iter().cloned());
        let rootfs_modules =
            db.select(&names, &self.recipe.module_dirs).map_err(BuildError::UnknownModules)?;
        self.install_modules(&kernel, &rootfs, &rootfs_modules, &self.recipe.boot_modules)?;
        write_module_list(&rootfs, LATE_MODULE_LIST, &self.recipe.late_modules)
            .map_err(|source| BuildError::Io { stage: BuildStage::Modules, source })?;
        let initrd_tree = self.staging.join("initrd");
        let initrd_modules =
            db.select(&self.recipe.initrd_modules, &[]).map_err(BuildError::UnknownModules)?;
        self.install_modules(&kernel, &initrd_tree, &initrd_modules, &self.recipe.initrd_modules)?;
        trim_rootfs(&rootfs).map_err(|source| BuildError::Io { stage: BuildStage::Modules, source })?;

        progress(BuildStage::RootImage);
        let rootfs_unpacked_bytes =
            tree_size(&rootfs).map_err(|source| BuildError::Io { stage: BuildStage::RootImage, source })?;
        let erofs = out.join(ROOTFS_FILE);
        self.tool(BuildStage::RootImage, mkfs_erofs_cmd(self.recipe, &erofs, &rootfs))?;

        progress(BuildStage::Initramfs);
        let cpio = self.staging.join("initrd.cpio");
        self.write_initramfs(&initrd_tree, &cpio)
            .map_err(|source| BuildError::Io { stage: BuildStage::Initramfs, source })?;
        let initrd = out.join(INITRD_FILE);
        self.tool(
            BuildStage::Initramfs,
            Cmd::new("lz4", "lz4").args([
                "-l".into(),
                "-9".into(),
                "-q".into(),
                "-f".into(),
                cpio.into_os_string(),
                initrd.clone().into_os_string(),
            ]),
        )?;

        progress(BuildStage::Store);
        let io = |source| BuildError::Io { stage: BuildStage::Store, source };
        let bzimage = fs::read(&kernel.vmlinuz).map_err(io)?;
        fs::write(out.join(KERNEL_FILE), &bzimage).map_err(io)?;
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).map_err(io);
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

    fn tool(&self, stage: BuildStage, cmd: Cmd) -> Result<Vec<u8>, BuildError> {
        self.runner.run(&cmd).map_err(|source| match source {
            ExecError::NotInstalled { .. } => BuildError::MissingTool(source),
            source => BuildError::Tool { stage, source },
        })
    }

    /// The userland in `rootfs`; every package it used (and the kernel's) in [`DEBS_OUT`].
    fn mmdebstrap(&self, rootfs: &Path) -> Result<(), BuildError> {
        let io = |source| BuildError::Io { stage: BuildStage::Rootfs, source };
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
            MmdebstrapMode::Root => self.tool(BuildStage::Rootfs, args.cmd(rootfs)).map(|_| ()),
            MmdebstrapMode::Unshare => {
                let tar = self.staging.join("rootfs.tar");
                let made = self.tool(BuildStage::Rootfs, args.cmd(&tar));
                made.and_then(|_| {
                    fs::create_dir_all(rootfs).map_err(io)?;
                    self.tool(BuildStage::Rootfs, extract_cmd(&tar, rootfs))?;
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
            BuildStage::Rootfs,
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
        let io = |source| BuildError::Io { stage: BuildStage::Kernel, source };
        let name = kernel_debs
            .iter()
            .filter_map(|p| p.file_name())
            .find(|n| is_versioned_kernel(&n.to_string_lossy()))
            .ok_or(BuildError::NoKernel)?;
        // Moved into the cache by now.
        let deb = self.cache.dir.join(name);
        let root = self.staging.join("kernel");
        self.tool(BuildStage::Kernel, Cmd::new("dpkg-deb", "dpkg").arg("-x").arg(&deb).arg(&root))?;
        let release = only_entry(&root.join("usr/lib/modules")).ok_or(BuildError::NoKernel)?;
        let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
        if !vmlinuz.exists() {
            return Err(BuildError::NoKernel);
        }
        link_lib(&root).map_err(io)?;
        self.tool(BuildStage::Kernel, Cmd::new("depmod", "kmod").arg("-b").arg(&root).arg(&release))?;
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
        let io = |source| BuildError::Io { stage: BuildStage::Modules, source };
        let dest = tree.join("usr/lib/modules").join(&kernel.release);
        for module in modules {
            let target = dest.join(module.trim_end_matches(".xz"));
            fs::create_dir_all(target.parent().expect("module path has a parent")).map_err(io)?;
            let bytes = if module.ends_with(".xz") {
                self.tool(
                    BuildStage::Modules,
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
        self.tool(BuildStage::Modules, Cmd::new("depmod", "kmod").arg("-b").arg(tree).arg(&kernel.release))?;
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

/// mkfs.erofs with every timestamp [`SOURCE_DATE_EPOCH`] and the recipe's UUID, so the same tree
/// gives the same bytes (it orders entries itself, whatever the directory order on disk).
pub(super) fn mkfs_erofs_cmd(recipe: &Recipe, erofs: &Path, rootfs: &Path) -> Cmd {
    Cmd::new("mkfs.erofs", "erofs-utils")
        .arg("-zlz4hc")
        .arg(format!("-T{SOURCE_DATE_EPOCH}"))
        .arg(format!("-U{}", recipe.erofs_uuid()))
        .arg("--all-root")
        .arg("--quiet")
        .arg(erofs)
        .arg(rootfs)
}

/// The kernel packages (`linux-image-*`) the hook fetched, sorted: the metapackage and the
/// kernel itself.
pub(super) fn kernel_debs(debs: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = fs::read_dir(debs)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("linux-image-")))
        .collect();
    out.sort();
    Ok(out)
}

/// Whether a file name is a kernel's package (`linux-image-6.12…`), not its metapackage.
pub(super) fn is_versioned_kernel(name: &str) -> bool {
    name.strip_prefix("linux-image-").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
}

/// [`artifacts_digest`] of an image directory's [`DIGESTED_ARTIFACTS`].
pub fn digest_artifacts(dir: &Path) -> io::Result<String> {
    let files: Vec<(&str, Vec<u8>)> =
        DIGESTED_ARTIFACTS.iter().map(|n| Ok((*n, fs::read(dir.join(n))?))).collect::<io::Result<_>>()?;
    Ok(artifacts_digest(files.iter().map(|(n, b)| (*n, &b[..]))))
}

/// Writes one of n2d-init's module lists (`n2d_proto::MODULE_LIST`, `LATE_MODULE_LIST`: guest
/// paths) into `tree`.
pub(super) fn write_module_list(tree: &Path, list: &str, modules: &[String]) -> io::Result<()> {
    let path = tree.join(list.trim_start_matches('/'));
    fs::create_dir_all(path.parent().expect("list path has a parent"))?;
    fs::write(path, modules.iter().map(|m| format!("{}\n", module_name(m))).collect::<String>())
}

pub(super) struct UnpackedKernel {
    pub(super) release: String,
    pub(super) vmlinuz: PathBuf,
    pub(super) modules_dir: PathBuf,
}

impl UnpackedKernel {
    fn module_db(&self) -> io::Result<ModuleDb> {
        let dep = fs::read_to_string(self.modules_dir.join("modules.dep"))?;
        let builtin = fs::read_to_string(self.modules_dir.join("modules.builtin")).unwrap_or_default();
        Ok(ModuleDb::parse(&dep, &builtin))
    }
}

/// depmod on a bookworm host looks in BASE/lib/modules; merged-/usr trees keep them in usr/lib.
pub(super) fn link_lib(tree: &Path) -> io::Result<()> {
    let lib = tree.join("lib");
    if fs::symlink_metadata(&lib).is_err() {
        std::os::unix::fs::symlink("usr/lib", lib)?;
    }
    Ok(())
}

pub(super) fn only_entry(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.pop()
}

/// Every directory and regular file under `dir`, relative to `base`, parents first, sorted.
pub(super) fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, bool)>) -> io::Result<()> {
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

pub(super) fn tree_size(dir: &Path) -> io::Result<u64> {
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
