//! The user's build inputs beyond the recipe's defaults, each checked before any work: a mirror
//! (`http(s)://` or a local `file://` one), extra package names, local .deb files and Docker's
//! static binaries tarball.

use crate::build::BuildError;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where `--mirror` may point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    /// `http://` or `https://`: reached over the network.
    Remote(String),
    /// `file:///path`: a local mirror, read in place.
    Local(PathBuf),
}

/// Parses `--mirror`: `http(s)://HOST/...`, or `file:///PATH` holding `dists/<suite>`.
pub fn check_mirror(url: &str, suite: &str) -> Result<Mirror, BuildError> {
    let bad = |problem: String| BuildError::BadMirror { url: url.to_string(), problem };
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(bad("a file:// mirror needs an absolute path (file:///srv/debian)".into()));
        }
        let path = PathBuf::from(path);
        if !path.is_dir() {
            return Err(bad(format!("{} is not a directory", path.display())));
        }
        if !path.join("dists").join(suite).is_dir() {
            return Err(bad(format!(
                "{} holds no dists/{suite}: not a Debian mirror of the suite {suite}",
                path.display()
            )));
        }
        return Ok(Mirror::Local(path));
    }
    match host_port(url) {
        Some((host, _)) if !host.is_empty() => Ok(Mirror::Remote(url.to_string())),
        _ => Err(bad("give an http://, https:// or file:/// URL".into())),
    }
}

/// Host and port of an `http(s)://` URL.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else {
        return None;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

/// A Debian package name (policy 5.6.1): lower case letters, digits, `+`, `-`, `.`, at least
/// two characters, starting with a letter or digit.
pub fn check_package_name(name: &str) -> Result<(), BuildError> {
    let ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(BuildError::BadPackageName(name.to_string()))
    }
}

/// A local .deb given with `--deb`: its bytes' digest, once checked to be a Debian package.
pub fn check_deb(path: &Path) -> Result<String, BuildError> {
    let bad = |problem: String| BuildError::BadDeb { path: path.to_path_buf(), problem };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    // An ar archive whose first member is debian-binary (deb(5)).
    if !bytes.starts_with(b"!<arch>\n") || bytes.get(8..21) != Some(&b"debian-binary"[..]) {
        return Err(bad("not a Debian package (.deb): no ar archive starting with debian-binary".into()));
    }
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// What an image needs of Docker's static binaries tarball: the engine, containerd and runc.
pub const DOCKER_ARCHIVE_REQUIRED: [&str; 3] = ["docker/dockerd", "docker/containerd", "docker/runc"];

/// Docker's static binaries tarball (`docker-<version>.tgz` from download.docker.com): a gzip
/// tar of `docker/<binary>`. Returns its sha256 and the binaries (file names under `docker/`).
pub fn check_docker_archive(path: &Path) -> Result<(String, Vec<String>), BuildError> {
    let bad = |problem: String| BuildError::BadDockerArchive { path: path.to_path_buf(), problem };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(bad(
            "not a gzip-compressed tar (Docker's static binaries come as docker-VERSION.tgz)".into()
        ));
    }
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut binaries = Vec::new();
    let entries = archive.entries().map_err(|e| bad(format!("not a readable tar.gz ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a readable tar.gz ({e})")))?;
        let name =
            entry.path().map_err(|e| bad(format!("bad entry name ({e})")))?.to_string_lossy().into_owned();
        let name = name.trim_start_matches("./").to_string();
        // Read to the end: a truncated archive fails here, not halfway through a build.
        std::io::copy(&mut entry, &mut std::io::sink())
            .map_err(|e| bad(format!("truncated or corrupt ({e})")))?;
        if entry.header().entry_type().is_file() {
            if let Some(bin) = name.strip_prefix("docker/").filter(|b| !b.is_empty() && !b.contains('/')) {
                binaries.push(bin.to_string());
            }
        }
    }
    let missing: Vec<&str> = DOCKER_ARCHIVE_REQUIRED
        .iter()
        .copied()
        .filter(|r| !binaries.iter().any(|b| Some(b.as_str()) == r.strip_prefix("docker/")))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "it lacks {}: not Docker's static binaries tarball (docker/dockerd, docker/containerd, docker/runc, ...)",
            missing.join(", ")
        )));
    }
    binaries.sort();
    Ok((hex::encode(Sha256::digest(&bytes)), binaries))
}

/// Extracts the `docker/` binaries of a checked archive into `bin` (the userland's /usr/bin), 0755.
pub fn install_docker_archive(archive: &Path, bin: &Path) -> std::io::Result<Vec<String>> {
    let file = std::fs::File::open(archive)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut installed = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path()?.to_string_lossy().trim_start_matches("./").to_string();
        let Some(bin_name) = name.strip_prefix("docker/").filter(|b| !b.is_empty() && !b.contains('/'))
        else {
            continue;
        };
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        let target = bin.join(bin_name);
        let _ = std::fs::remove_file(&target);
        std::fs::write(&target, data)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
        installed.push(bin_name.to_string());
    }
    installed.sort();
    Ok(installed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A gzip tar of `(path, bytes)` files.
    pub(crate) fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder =
            tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    const OFFICIAL: [&str; 8] = [
        "docker/docker",
        "docker/dockerd",
        "docker/containerd",
        "docker/containerd-shim-runc-v2",
        "docker/ctr",
        "docker/runc",
        "docker/docker-init",
        "docker/docker-proxy",
    ];

    #[test]
    fn the_official_layout_is_accepted_and_installed_into_usr_bin() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<(&str, &[u8])> = OFFICIAL.iter().map(|p| (*p, &b"\x7fELF"[..])).collect();
        let archive = dir.path().join("docker-28.tgz");
        std::fs::write(&archive, tgz(&files)).unwrap();
        let (sha, bins) = check_docker_archive(&archive).unwrap();
        assert_eq!(sha, hex::encode(Sha256::digest(std::fs::read(&archive).unwrap())));
        assert_eq!(bins.len(), 8);
        let bin = dir.path().join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        assert_eq!(install_docker_archive(&archive, &bin).unwrap(), bins);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(bin.join("dockerd")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn an_archive_without_the_engine_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("d.tgz");
        std::fs::write(&archive, tgz(&[("docker/docker", b"x"), ("docker/runc", b"x")])).unwrap();
        let err = check_docker_archive(&archive).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, BuildError::BadDockerArchive { .. }), "{err:?}");
        assert!(msg.contains("d.tgz") && msg.contains("lacks docker/dockerd, docker/containerd:"), "{msg}");
    }

    #[test]
    fn not_a_tarball_truncated_or_missing_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        let msg = check_docker_archive(&text).unwrap_err().to_string();
        assert!(msg.contains("notes.txt") && msg.contains("not a gzip"), "{msg}");

        let good =
            tgz(&[("docker/dockerd", &[7u8; 4000]), ("docker/containerd", b"x"), ("docker/runc", b"x")]);
        let cut = dir.path().join("cut.tgz");
        std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
        let msg = check_docker_archive(&cut).unwrap_err().to_string();
        assert!(msg.contains("cut.tgz"), "{msg}");

        let msg = check_docker_archive(&dir.path().join("absent.tgz")).unwrap_err().to_string();
        assert!(msg.contains("absent.tgz") && msg.contains("cannot read"), "{msg}");
    }

    #[test]
    fn a_deb_is_an_ar_archive_starting_with_debian_binary() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("x_1_amd64.deb");
        std::fs::write(&deb, b"!<arch>\ndebian-binary   1342177280  0     0     100644  4         `\n2.0\n")
            .unwrap();
        assert_eq!(check_deb(&deb).unwrap().len(), 64);
        let not = dir.path().join("y.deb");
        std::fs::write(&not, b"PK\x03\x04").unwrap();
        let msg = check_deb(&not).unwrap_err().to_string();
        assert!(msg.contains("y.deb") && msg.contains("not a Debian package"), "{msg}");
        let msg = check_deb(&dir.path().join("gone.deb")).unwrap_err().to_string();
        assert!(msg.contains("gone.deb") && msg.contains("cannot read"), "{msg}");
    }

    #[test]
    fn package_names_follow_debian_policy() {
        for ok in ["strace", "g++", "libc6", "lib32z1-dev", "0ad"] {
            check_package_name(ok).unwrap();
        }
        for bad in ["", "a", "Strace", "-x", "a b", "x,y", "../x.deb", "pkg=1.0"] {
            assert!(matches!(check_package_name(bad), Err(BuildError::BadPackageName(_))), "{bad}");
        }
    }

    #[test]
    fn mirrors_are_http_https_or_a_local_mirror_of_the_suite() {
        assert_eq!(host_port("http://deb.debian.org/debian"), Some(("deb.debian.org".into(), 80)));
        assert_eq!(host_port("https://u:p@m.example:8443/d"), Some(("m.example".into(), 8443)));
        assert_eq!(host_port("http://[::1]:3142/debian"), Some(("::1".into(), 3142)));
        assert_eq!(host_port("ftp://x/"), None);
        assert!(matches!(check_mirror("http://deb.debian.org/debian", "trixie"), Ok(Mirror::Remote(_))));
        let msg = check_mirror("ftp://x/debian", "trixie").unwrap_err().to_string();
        assert!(msg.contains("ftp://x/debian") && msg.contains("file:///"), "{msg}");

        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let msg = check_mirror(&url, "trixie").unwrap_err().to_string();
        assert!(msg.contains("dists/trixie"), "{msg}");
        std::fs::create_dir_all(dir.path().join("dists/trixie")).unwrap();
        assert_eq!(check_mirror(&url, "trixie").unwrap(), Mirror::Local(dir.path().to_path_buf()));
        let msg = check_mirror("file:///no/such/dir", "trixie").unwrap_err().to_string();
        assert!(msg.contains("/no/such/dir") && msg.contains("not a directory"), "{msg}");
    }
}
