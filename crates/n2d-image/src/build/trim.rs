//! What the userland drops before it becomes the erofs root: what a Docker host never reads.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Directories emptied in the image: apt's caches and lists, logs of the build, docs.
pub(super) const EMPTIED_DIRS: [&str; 5] =
    ["var/cache/apt", "var/lib/apt/lists", "var/log", "usr/share/doc", "usr/share/man"];

/// Files of the installed packages that a Docker host never runs: containerd's debugging
/// client and its legacy v1 shims (dockerd uses io.containerd.runc.v2), perl and debconf's perl
/// modules (only package scripts at install time need them), glibc's charset converters.
pub(super) const DROPPED_PATHS: [&str; 9] = [
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
pub(super) fn trim_rootfs(rootfs: &Path) -> io::Result<()> {
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
pub(super) fn matching(root: &Path, path: &str) -> io::Result<Vec<PathBuf>> {
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
