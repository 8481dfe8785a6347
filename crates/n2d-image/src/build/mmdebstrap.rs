//! mmdebstrap's command line: how it runs (as root or in unshare mode), its hooks, and
//! reading what it did (the installed packages, apt's complaint about an unknown one).

use crate::recipe::{Package, Recipe, SOURCE_DATE_EPOCH};
use n2d_exec::Cmd;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// How mmdebstrap runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MmdebstrapMode {
    /// As root, straight into the staging tree (going through a tar as an ordinary user does
    /// made a root build about 10 s, 15-20 %, slower).
    Root,
    /// As an ordinary user, in a user namespace on the user's subordinate ids ([`crate::unshare`]).
    /// The tree it makes belongs to those ids, which the user cannot read or remove, so it comes
    /// out as a tar, extracted as the user.
    Unshare,
}

impl MmdebstrapMode {
    pub(super) fn of_this_process() -> MmdebstrapMode {
        if rustix::process::geteuid().is_root() {
            MmdebstrapMode::Root
        } else {
            MmdebstrapMode::Unshare
        }
    }
}

/// apt's archive of downloaded packages inside the userland: the customize hook downloads the
/// kernel packages there too, and mmdebstrap's `sync-out` copies it all out (as the user, in
/// unshare mode) into the staging tree's [`DEBS_OUT`] before its cleanup empties it.
const APT_ARCHIVES: &str = "/var/cache/apt/archives";
/// The packages a build used, in its staging tree, before they move into the package cache.
pub(super) const DEBS_OUT: &str = "debs";
/// The `--deb` files, copied into the staging tree (what was hashed is what is installed).
pub(super) const LOCAL_DEBS: &str = "local-debs";
/// mmdebstrap's hooks that make `file://` mirrors and local .debs visible inside the chroot.
const FILE_MIRROR_HOOKS: &str = "/usr/share/mmdebstrap/hooks/file-mirror-automount";

/// What mmdebstrap's command line is made of.
pub(super) struct MmdebstrapArgs<'a> {
    pub(super) recipe: &'a Recipe,
    pub(super) mode: MmdebstrapMode,
    /// apt source lines the packages come from (the recipe's mirrors, or the package cache).
    pub(super) sources: &'a [String],
    /// `--deb` files (absolute paths in the staging tree).
    pub(super) local_debs: &'a [PathBuf],
    /// Where `sync-out` leaves every package used (apt's archives, the kernel's added).
    pub(super) debs_out: &'a Path,
}

impl MmdebstrapArgs<'_> {
    /// mmdebstrap making the userland at `target` (a directory, or a tar in unshare mode) under
    /// [`SOURCE_DATE_EPOCH`], its customize hooks fetching the kernel package into apt's
    /// archives and copying those out to [`DEBS_OUT`].
    pub(super) fn cmd(&self, target: &Path) -> Cmd {
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
                MmdebstrapMode::Root => "--mode=root",
                MmdebstrapMode::Unshare => "--mode=unshare",
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

/// The image's apt sources: the recipe's, in `/etc/apt/sources.list`, nothing in sources.list.d.
pub(super) fn write_sources(rootfs: &Path, list: &str) -> io::Result<()> {
    let d = rootfs.join("etc/apt/sources.list.d");
    if let Ok(entries) = fs::read_dir(&d) {
        for e in entries.flatten() {
            fs::remove_file(e.path())?;
        }
    }
    fs::create_dir_all(rootfs.join("etc/apt"))?;
    fs::write(rootfs.join("etc/apt/sources.list"), list)
}

/// Removes `host_path`'s directories inside `rootfs`, deepest first, while they are empty.
pub(super) fn prune_empty_dirs(rootfs: &Path, host_path: &Path) -> io::Result<()> {
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
pub(super) fn unknown_package(stderr: &str) -> Option<String> {
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
pub(super) fn parse_installed(text: &str) -> Vec<Package> {
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

/// Extracts mmdebstrap's tar as whoever runs it: Debian's modes (setuid and setgid bits too)
/// whatever the umask, no owners (the erofs root is made `--all-root`), and no device nodes
/// (which an ordinary user cannot make; the guest mounts devtmpfs on /dev).
pub(super) fn extract_cmd(tar: &Path, dest: &Path) -> Cmd {
    Cmd::new("tar", "tar").arg("--extract").arg("--file").arg(tar).arg("--directory").arg(dest).args([
        "--same-permissions",
        "--no-same-owner",
        "--exclude=./dev/*",
    ])
}
