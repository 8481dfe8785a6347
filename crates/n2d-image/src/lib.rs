//! The image builder: turns Debian packages and n2d-init into a bootable n2d image.
//!
//! An image is a directory `images/<id>/` in the store holding
//! * `vmlinuz`      Debian's cloud kernel, booted as it is (a bzImage): the decompressed `vmlinux`
//!   that images up to issue 20 also stored (57.6 MB, 1.4 s off each cold boot) no longer pays
//!   now that machines start from warm templates (BENCHMARKS.md, "A smaller image"),
//! * `initrd.img`   a small lz4 initramfs: n2d-init as `/init` plus the few modules needed to
//!   mount the root disk (virtio_blk, erofs, overlay),
//! * `rootfs.erofs` the read-only root filesystem (Debian userland with dockerd, containerd, runc,
//!   iptables and the Docker host's kernel modules), attached to every VM read-only and shared;
//!   n2d-init puts a tmpfs overlay on top so runc can `pivot_root` (it cannot on an initramfs),
//! * `image.json`   what the image is made of ([`ImageManifest`]).
//!
//! The ID is a hash of the recipe (suite, packages, module lists, n2d-init's bytes), so the same
//! inputs give the same ID and a second build is a cache hit. Stages live in [`build`];
//! the module subset logic in [`modules`]. Other disk formats (raw, qcow2, vhdx, iso) are further
//! stages over the same staging tree.

#![forbid(unsafe_code)]

pub mod build;
pub mod cache;
pub mod error;
pub mod init;
pub mod initramfs;
pub mod inputs;
pub mod modules;
pub mod recipe;
pub mod unshare;

pub use build::{build_image, newest_of_recipe, BuildOptions, BuildRequest, Built, Outcome, PackageSource};
pub use error::{BuildError, BuildStage};
pub use init::{check_static_x86_64, GuestInit, InitProblem};
pub use recipe::{BadManifest, ImageManifest, Recipe};

use n2d_store::{Home, StoreError};
use std::path::{Path, PathBuf};

pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRD_FILE: &str = "initrd.img";
pub const ROOTFS_FILE: &str = "rootfs.erofs";
pub const MANIFEST_FILE: &str = "image.json";
/// The largest `image.json` read: a real one (a few hundred packages and their digests) is
/// under 200 KiB.
pub const MAX_MANIFEST_BYTES: u64 = 8 << 20;

/// A built image in the store.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: ImageManifest,
}

impl Image {
    /// The kernel QEMU boots (the bzImage; a `vmlinux` an older build left beside it is unused).
    pub fn boot_kernel(&self) -> PathBuf {
        self.dir.join(KERNEL_FILE)
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join(INITRD_FILE)
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(ROOTFS_FILE)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no image {0:?} in the store (see `n2d image ls`, or build one with `n2d image build`)")]
    NotFound(String),
    #[error("an empty image ID matches every image: give an ID or a prefix of one (see `n2d image ls`)")]
    EmptyId,
    #[error("image ID prefix {id:?} matches several images ({}): give more characters", candidates.join(", "))]
    Ambiguous { id: String, candidates: Vec<String> },
    #[error("cannot read the image record {path}: {problem}")]
    BadManifest { path: PathBuf, problem: String },
    #[error("cannot remove the image at {}", dir.display())]
    Remove {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ImageError {
    /// A mistake in what the user asked for (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, ImageError::NotFound(_) | ImageError::EmptyId | ImageError::Ambiguous { .. })
    }
}

/// Reads the `image.json` of an image directory like any input: a regular file within
/// [`MAX_MANIFEST_BYTES`], whose fields check out ([`ImageManifest::from_json`]) and whose ID
/// is the directory's name (a record copied or planted elsewhere cannot pose as another image).
pub fn read_manifest(dir: &Path) -> Result<ImageManifest, ImageError> {
    let path = dir.join(MANIFEST_FILE);
    let bad = |problem: String| ImageError::BadManifest { path: path.clone(), problem };
    let bytes = n2d_store::safe_fs::read_input(&path, MAX_MANIFEST_BYTES, "an image record")
        .map_err(|e| bad(e.to_string()))?;
    let manifest = ImageManifest::from_json(&bytes).map_err(|e| bad(e.to_string()))?;
    if dir.file_name().is_none_or(|n| n != manifest.id.as_str()) {
        return Err(bad(format!("it names the image {}, not its directory", manifest.id)));
    }
    Ok(manifest)
}

/// All complete images, newest first.
pub fn list_images(home: &Home) -> Vec<Image> {
    let Ok(dir) = std::fs::read_dir(home.images_dir()) else { return Vec::new() };
    let mut images: Vec<Image> = dir
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let manifest = read_manifest(&e.path()).ok()?;
            Some(Image { dir: e.path(), manifest })
        })
        .collect();
    images.sort_by_key(|i| std::cmp::Reverse(i.manifest.created_unix));
    images
}

/// For each image ID in the store, the ID of a newer build of the same recipe (`image build
/// --refresh` stores one beside the old): the machines booting the old one run older packages.
pub fn newer_builds(home: &Home) -> std::collections::BTreeMap<String, String> {
    newer_builds_of(&list_images(home))
}

fn newer_builds_of(images: &[Image]) -> std::collections::BTreeMap<String, String> {
    let mut newest: std::collections::BTreeMap<String, &ImageManifest> = Default::default();
    for m in images.iter().map(|i| &i.manifest) {
        let slot = newest.entry(m.recipe_id.clone()).or_insert(m);
        if m.created_unix > slot.created_unix {
            *slot = m;
        }
    }
    images
        .iter()
        .map(|i| &i.manifest)
        .filter_map(|m| {
            let top = newest[&m.recipe_id];
            (top.id != m.id).then(|| (m.id.clone(), top.id.clone()))
        })
        .collect()
}

/// Directories of the images directory that are not images n2d can read (damaged, or no
/// image at all): nothing boots them, so `image prune` removes them.
pub fn unreadable_images(home: &Home) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(home.images_dir()) else { return Vec::new() };
    dir.filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.') && e.path().is_dir())
        .filter(|e| read_manifest(&e.path()).is_err())
        .map(|e| e.path())
        .collect()
}

/// Removes an image from the store. It is renamed to a hidden name first, so that a removal
/// cut short leaves no half image that lists or boots (the next build's sweep, or a second `rm`,
/// finishes it).
pub fn remove_image(home: &Home, dir: &std::path::Path) -> Result<(), ImageError> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let hidden = home.images_dir().join(format!(".rm-{name}"));
    std::fs::rename(dir, &hidden).map_err(|source| ImageError::Remove { dir: dir.to_path_buf(), source })?;
    n2d_store::remove_dir_all(&hidden)?;
    Ok(())
}

/// Bytes of every file of an image directory (readable or not), by file name.
pub fn image_files(dir: &std::path::Path) -> Vec<(String, u64)> {
    let Ok(dir) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(String, u64)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some((e.file_name().to_string_lossy().into_owned(), meta.len()))
        })
        .collect();
    files.sort();
    files
}

/// Finds an image by ID or unique ID prefix. An empty ID, which every image starts with, is
/// refused; so is a prefix several images start with, naming them.
pub fn find_image(home: &Home, id: &str) -> Result<Image, ImageError> {
    pick_image(list_images(home), id)
}

fn pick_image(images: Vec<Image>, id: &str) -> Result<Image, ImageError> {
    if id.is_empty() {
        return Err(ImageError::EmptyId);
    }
    let mut matches: Vec<Image> = images.into_iter().filter(|i| i.manifest.id.starts_with(id)).collect();
    match matches.len() {
        0 => Err(ImageError::NotFound(id.to_string())),
        1 => Ok(matches.remove(0)),
        _ => Err(ImageError::Ambiguous {
            id: id.to_string(),
            candidates: matches.iter().map(|i| i.manifest.short_id().to_string()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, recipe_id: &str, created_unix: u64) -> Image {
        let json = serde_json::json!({
            "id": id, "recipe_id": recipe_id, "kernel_release": "6.12", "created_unix": created_unix,
            "kernel_bytes": 1, "initrd_bytes": 1, "rootfs_bytes": 1, "rootfs_unpacked_bytes": 1,
            "packages": [], "source_date_epoch": 1, "debs": [],
            "init_sha256": "", "artifacts_sha256": "",
            "recipe": serde_json::to_value(Recipe::docker_host("x".into())).unwrap(),
        });
        Image { dir: PathBuf::from(id), manifest: serde_json::from_value(json).unwrap() }
    }

    #[test]
    fn empty_and_ambiguous_ids_are_refused_naming_the_candidates() {
        let images = || {
            vec![
                image("aaaa11112222333344445555", "r", 1),
                image("aaaa99998888777766665555", "r", 2),
                image("bbbb", "r", 3),
            ]
        };
        let err = pick_image(images(), "").unwrap_err();
        assert!(matches!(err, ImageError::EmptyId) && err.is_usage(), "{err:?}");
        let err = pick_image(images(), "aaaa").unwrap_err();
        assert!(err.is_usage());
        assert_eq!(
            err.to_string(),
            "image ID prefix \"aaaa\" matches several images (aaaa11112222, aaaa99998888): give more characters"
        );
        assert_eq!(pick_image(images(), "aaaa1").unwrap().manifest.id, "aaaa11112222333344445555");
        assert_eq!(pick_image(images(), "bbbb").unwrap().manifest.id, "bbbb");
        assert!(matches!(pick_image(images(), "c"), Err(ImageError::NotFound(_))));
    }

    #[test]
    fn a_manifest_is_read_like_input() {
        let root = tempfile::tempdir().unwrap();
        let good = serde_json::to_vec(&image("abcd", "12ab", 1).manifest).unwrap();
        let dir = root.path().join("abcd");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), &good).unwrap();
        assert_eq!(read_manifest(&dir).unwrap().id, "abcd");
        // Posing as another image: the ID is not the directory's name.
        let other = root.path().join("ffff");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(MANIFEST_FILE), &good).unwrap();
        let msg = read_manifest(&other).unwrap_err().to_string();
        assert!(msg.contains("names the image abcd, not its directory"), "{msg}");
        // A FIFO in its place does not hang; a huge file is not read.
        let fifo = root.path().join("eeee");
        std::fs::create_dir(&fifo).unwrap();
        n2d_store::safe_fs::make_fifo(&fifo.join(MANIFEST_FILE)).unwrap();
        assert!(read_manifest(&fifo).unwrap_err().to_string().contains("FIFO"));
        let big = root.path().join("dddd");
        std::fs::create_dir(&big).unwrap();
        let f = std::fs::File::create(big.join(MANIFEST_FILE)).unwrap();
        f.set_len(MAX_MANIFEST_BYTES + 1).unwrap();
        assert!(read_manifest(&big).unwrap_err().to_string().contains("more than"));
    }

    #[test]
    fn an_older_build_of_a_recipe_points_at_the_newest() {
        let images =
            [image("old", "r1", 10), image("new", "r1", 30), image("mid", "r1", 20), image("other", "r2", 5)];
        let newer = newer_builds_of(&images);
        assert_eq!(newer.get("old").map(String::as_str), Some("new"));
        assert_eq!(newer.get("mid").map(String::as_str), Some("new"));
        assert!(!newer.contains_key("new") && !newer.contains_key("other"), "{newer:?}");
    }
}
