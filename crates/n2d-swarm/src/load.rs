//! Loading a `docker save` archive into every node (no registry needed).

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use futures_util::future::join_all;

use crate::api::DockerApi;
use crate::error::{Result, SwarmError};

/// Magic numbers of the compressions `docker load` accepts.
const COMPRESSED: &[(&[u8], &str)] = &[
    (&[0x1f, 0x8b], "gzip"),
    (b"BZh", "bzip2"),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
];

/// Cheap check, before any VM work, that `path` looks like a `docker save`
/// archive: a tar with `manifest.json` at its root. Only tar headers are
/// read (file contents are seeked over). Compressed archives, which
/// `docker load` also accepts, are recognised by their magic number and not
/// looked into.
pub fn check_docker_save_archive(path: &Path) -> Result<()> {
    let io = |source| SwarmError::ArchiveIo { path: path.to_path_buf(), source };
    let bad = |reason: String| SwarmError::BadArchive { path: path.to_path_buf(), reason };
    // Opened without blocking and checked to be a regular file: a FIFO must not hang n2d.
    let mut file = match n2d_store::safe_fs::check_input(path, u64::MAX, "a docker save archive") {
        Ok((file, _)) => file,
        Err(n2d_store::safe_fs::InputFileError::Open { source, .. }) => return Err(io(source)),
        Err(n2d_store::safe_fs::InputFileError::NotRegular { kind, .. }) => {
            return Err(bad(format!("{kind}, not a regular file")))
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let mut magic = [0u8; 6];
    let n = read_up_to(&mut file, &mut magic).map_err(io)?;
    if COMPRESSED.iter().any(|(m, _)| magic[..n].starts_with(m)) {
        return Ok(());
    }
    let file = File::open(path).map_err(io)?;
    let mut archive = tar::Archive::new(file);
    let entries = archive.entries_with_seek().map_err(|e| bad(format!("not a tar file ({e})")))?;
    let mut count = 0;
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("not a tar file ({e})")))?;
        count += 1;
        let entry_path = entry.path().map_err(|e| bad(format!("bad tar entry ({e})")))?;
        let p = entry_path.to_string_lossy();
        if p.trim_start_matches("./") == "manifest.json" {
            return Ok(());
        }
    }
    Err(bad(if count == 0 {
        "empty or not a tar file".into()
    } else {
        format!("tar with {count} entries but no manifest.json")
    }))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Progress of one node's upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProgress<'a> {
    pub node: &'a str,
    pub sent: u64,
    pub total: u64,
}

/// Load the archive at `path` into all `nodes` (name, API) concurrently.
/// The archive is checked first. Every upload runs to completion; if any
/// failed, the first failure (in `nodes` order) is returned. On success,
/// returns each node's "Loaded image: ..." lines.
pub async fn load_image_everywhere<A: DockerApi>(
    nodes: &[(String, A)],
    path: &Path,
    progress: impl Fn(LoadProgress<'_>) + Send + Sync + 'static,
) -> Result<Vec<(String, Vec<String>)>> {
    check_docker_save_archive(path)?;
    let total = std::fs::metadata(path)
        .map_err(|source| SwarmError::ArchiveIo { path: path.to_path_buf(), source })?
        .len();
    let progress = Arc::new(progress);
    let uploads = nodes.iter().map(|(name, api)| {
        let progress = progress.clone();
        let node = name.clone();
        let per_node = Arc::new(move |sent| progress(LoadProgress { node: &node, sent, total }));
        async move {
            api.load_image(path, per_node)
                .await
                .map(|lines| (name.clone(), lines))
                .map_err(|source| SwarmError::LoadImage { node: name.clone(), source })
        }
    });
    join_all(uploads).await.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::Cluster;
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::sync::Mutex;

    fn tar_with(files: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
        f
    }

    fn save_archive() -> tempfile::NamedTempFile {
        let layer = vec![7u8; 100_000];
        tar_with(&[("blobs/sha256/abc", &layer), ("index.json", b"{}"), ("manifest.json", b"[]")])
    }

    #[test]
    fn accepts_docker_save_archive() {
        check_docker_save_archive(save_archive().path()).unwrap();
    }

    #[test]
    fn rejects_other_files() {
        let no_manifest = tar_with(&[("hello.txt", b"hi")]);
        let e = check_docker_save_archive(no_manifest.path()).unwrap_err();
        assert!(e.to_string().contains("no manifest.json"), "{e}");

        let mut text = tempfile::NamedTempFile::new().unwrap();
        text.write_all(&[b'x'; 2000]).unwrap();
        let e = check_docker_save_archive(text.path()).unwrap_err();
        assert!(matches!(e, SwarmError::BadArchive { .. }), "{e:?}");

        let empty = tempfile::NamedTempFile::new().unwrap();
        let e = check_docker_save_archive(empty.path()).unwrap_err();
        assert!(matches!(e, SwarmError::BadArchive { .. }), "{e:?}");

        let e = check_docker_save_archive(Path::new("/nonexistent/x.tar")).unwrap_err();
        assert!(matches!(e, SwarmError::ArchiveIo { .. }));

        let dir = tempfile::tempdir().unwrap();
        assert!(check_docker_save_archive(dir.path()).is_err());
    }

    #[test]
    fn compressed_archive_passes_on_magic() {
        let mut gz = tempfile::NamedTempFile::new().unwrap();
        gz.write_all(&[0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
        check_docker_save_archive(gz.path()).unwrap();
    }

    #[tokio::test]
    async fn loads_everywhere_with_per_node_progress() {
        let archive = save_archive();
        let size = std::fs::metadata(archive.path()).unwrap().len();
        let cluster = Cluster::new();
        let nodes: Vec<_> = ["a", "b", "c"].iter().map(|n| (n.to_string(), cluster.api(n))).collect();
        let seen = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
        let seen2 = seen.clone();
        let out = load_image_everywhere(&nodes, archive.path(), move |p| {
            assert_eq!(p.total, size);
            let mut s = seen2.lock().unwrap();
            let last = s.entry(p.node.to_string()).or_default();
            assert!(p.sent > *last);
            *last = p.sent;
        })
        .await
        .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].0, "b");
        for n in ["a", "b", "c"] {
            assert_eq!(cluster.loaded(n), Some(size));
            assert_eq!(seen.lock().unwrap()[n], size);
        }
    }

    #[tokio::test]
    async fn load_failure_names_node_and_bad_archive_stops_early() {
        let archive = save_archive();
        let cluster = Cluster::new();
        cluster.fail("b", "load");
        let nodes: Vec<_> = ["a", "b"].iter().map(|n| (n.to_string(), cluster.api(n))).collect();
        let e = load_image_everywhere(&nodes, archive.path(), |_| {}).await.unwrap_err();
        assert!(matches!(e, SwarmError::LoadImage { ref node, .. } if node == "b"));
        // The other node still got it.
        assert!(cluster.loaded("a").is_some());

        let bad = tar_with(&[("x", b"y")]);
        let cluster = Cluster::new();
        let nodes = vec![("a".to_string(), cluster.api("a"))];
        let e = load_image_everywhere(&nodes, bad.path(), |_| {}).await.unwrap_err();
        assert!(matches!(e, SwarmError::BadArchive { .. }));
        assert!(cluster.events().is_empty());
    }
}
