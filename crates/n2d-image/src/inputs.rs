//! The user's build inputs beyond the recipe's defaults, each checked before any work: a suite,
//! a mirror (`http(s)://` or a local `file://` one), extra package names, local .deb files and
//! Docker's static binaries tarball. Files are opened through `n2d_store::safe_fs`: regular
//! files only (a FIFO would hang the build, `/dev/zero` never end), each within a size cap, and
//! read as a stream (the digest never needs the whole file in memory).

use crate::error::BuildError;
pub use crate::error::MAX_SUITE_LEN;
use n2d_store::safe_fs::{check_input, InputFileError};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

/// The largest `--deb`: the packages one adds to a Docker host (an engine, containerd, a kernel
/// update) are tens of MiB; Debian's largest (debug symbols, game data) stay under 1 GiB and
/// have no place in a VM's root filesystem.
pub const MAX_DEB_BYTES: u64 = 512 << 20;
/// The largest `--docker-archive`: Docker's static binaries tarball is about 75 MiB (docker-28).
pub const MAX_DOCKER_ARCHIVE_BYTES: u64 = 1 << 30;
/// What the archive may unpack to (its binaries are about 250 MiB): a gzip bomb stops here.
pub const MAX_DOCKER_ARCHIVE_UNPACKED: u64 = 4 << 30;
/// Entries of the archive read at most (the real one has a dozen).
pub const MAX_DOCKER_ARCHIVE_ENTRIES: usize = 4096;

/// `--suite`: a Debian suite or codename (`trixie`, `stable`, `bookworm-backports`): lower case
/// letters, digits and `-`, starting with a letter, at most [`MAX_SUITE_LEN`]. It becomes an
/// argument of mmdebstrap, apt source lines and a directory name of the package cache, so
/// nothing that could read as an option, a path or two words passes.
pub fn check_suite(suite: &str) -> Result<(), BuildError> {
    let ok = !suite.is_empty()
        && suite.len() <= MAX_SUITE_LEN
        && suite.starts_with(|c: char| c.is_ascii_lowercase())
        && suite.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(BuildError::BadSuite(suite.to_string()))
    }
}

/// Why an input file cannot be used, in words for [`BuildError::BadDeb`] and the like.
fn input_problem(e: InputFileError) -> String {
    match e {
        InputFileError::Open { source, .. } => format!("cannot read it ({source})"),
        InputFileError::NotRegular { kind, .. } => format!("it is {kind}, not a regular file"),
        InputFileError::TooLarge { size, max, .. } => {
            format!("it is {size} bytes, more than the {max} n2d takes: give a smaller file")
        }
    }
}

/// sha256 of a reader's bytes, read as a stream.
fn sha256_of(mut reader: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut buf)? {
            0 => return Ok(hex::encode(h.finalize())),
            n => h.update(&buf[..n]),
        }
    }
}

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
    let (mut file, _) =
        check_input(path, MAX_DEB_BYTES, "a .deb (--deb)").map_err(|e| bad(input_problem(e)))?;
    let mut head = Vec::with_capacity(21);
    (&mut file).take(21).read_to_end(&mut head).map_err(|e| bad(format!("cannot read it ({e})")))?;
    // An ar archive whose first member is debian-binary (deb(5)).
    if !head.starts_with(b"!<arch>\n") || head.get(8..21) != Some(&b"debian-binary"[..]) {
        return Err(bad("not a Debian package (.deb): no ar archive starting with debian-binary".into()));
    }
    file.rewind().map_err(|e| bad(format!("cannot read it ({e})")))?;
    // At most the cap, even if the file grows meanwhile.
    sha256_of(file.take(MAX_DEB_BYTES)).map_err(|e| bad(format!("cannot read it ({e})")))
}

/// Copies a `--deb` checked by [`check_deb`] into the build as `to` (a new file), and checks
/// that the bytes copied are the ones digested: a file changed in between is refused, not
/// installed under the recorded digest.
pub fn copy_deb(path: &Path, to: &Path, sha256: &str) -> Result<(), BuildError> {
    use std::io::Write;
    let bad = |problem: String| BuildError::BadDeb { path: path.to_path_buf(), problem };
    let (file, _) = check_input(path, MAX_DEB_BYTES, "a .deb (--deb)").map_err(|e| bad(input_problem(e)))?;
    let mut out = n2d_store::safe_fs::create_new_private(to, 0o644)
        .map_err(|e| bad(format!("cannot copy it to {} ({e})", to.display())))?;
    let mut h = Sha256::new();
    let mut reader = file.take(MAX_DEB_BYTES);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| bad(format!("cannot read it ({e})")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| bad(format!("cannot copy it to {} ({e})", to.display())))?;
    }
    if hex::encode(h.finalize()) != sha256 {
        let _ = std::fs::remove_file(to);
        return Err(bad("it changed while the build ran: run the build again".into()));
    }
    Ok(())
}

/// What an image needs of Docker's static binaries tarball: the engine, containerd and runc.
pub const DOCKER_ARCHIVE_REQUIRED: [&str; 3] = ["docker/dockerd", "docker/containerd", "docker/runc"];

/// Docker's static binaries tarball (`docker-<version>.tgz` from download.docker.com): a gzip
/// tar of `docker/<binary>`. Returns its sha256 and the binaries (file names under `docker/`).
pub fn check_docker_archive(path: &Path) -> Result<(String, Vec<String>), BuildError> {
    let bad = |problem: String| BuildError::BadDockerArchive { path: path.to_path_buf(), problem };
    let unreadable = |e: std::io::Error| bad(format!("cannot read it ({e})"));
    let (mut file, _) = check_input(path, MAX_DOCKER_ARCHIVE_BYTES, "a Docker archive (--docker-archive)")
        .map_err(|e| bad(input_problem(e)))?;
    let mut magic = Vec::with_capacity(2);
    (&mut file).take(2).read_to_end(&mut magic).map_err(unreadable)?;
    if magic != [0x1f, 0x8b] {
        return Err(bad(
            "not a gzip-compressed tar (Docker's static binaries come as docker-VERSION.tgz)".into()
        ));
    }
    file.rewind().map_err(unreadable)?;
    let sha256 = sha256_of((&mut file).take(MAX_DOCKER_ARCHIVE_BYTES)).map_err(unreadable)?;
    file.rewind().map_err(unreadable)?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file.take(MAX_DOCKER_ARCHIVE_BYTES)));
    // One more byte than allowed: reaching it means the archive unpacks to more than the cap.
    let mut archive = tar::Archive::new(gz.take(MAX_DOCKER_ARCHIVE_UNPACKED + 1));
    let mut binaries = Vec::new();
    let entries = archive.entries().map_err(|e| bad(format!("not a readable tar.gz ({e})")))?;
    let too_big = || {
        bad(format!(
            "it unpacks to more than {MAX_DOCKER_ARCHIVE_UNPACKED} bytes or {MAX_DOCKER_ARCHIVE_ENTRIES} entries: not Docker's static binaries tarball"
        ))
    };
    for (n, entry) in entries.enumerate() {
        if n >= MAX_DOCKER_ARCHIVE_ENTRIES {
            return Err(too_big());
        }
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
    if archive.into_inner().limit() == 0 {
        return Err(too_big());
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
    Ok((sha256, binaries))
}

/// Extracts the `docker/` binaries of a checked archive into `bin` (the userland's /usr/bin), 0755.
pub fn install_docker_archive(archive: &Path, bin: &Path) -> std::io::Result<Vec<String>> {
    let (file, _) = check_input(archive, MAX_DOCKER_ARCHIVE_BYTES, "a Docker archive (--docker-archive)")
        .map_err(std::io::Error::other)?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file.take(MAX_DOCKER_ARCHIVE_BYTES)));
    let mut archive = tar::Archive::new(gz.take(MAX_DOCKER_ARCHIVE_UNPACKED));
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
    fn a_deb_is_copied_only_with_the_bytes_that_were_digested() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("x_1_amd64.deb");
        std::fs::write(&deb, b"!<arch>\ndebian-binary   1342177280  0     0     100644  4         `\n2.0\n")
            .unwrap();
        let sha = check_deb(&deb).unwrap();
        copy_deb(&deb, &dir.path().join("copy.deb"), &sha).unwrap();
        assert_eq!(std::fs::read(dir.path().join("copy.deb")).unwrap(), std::fs::read(&deb).unwrap());
        // Changed after the check: refused, and no copy is left.
        std::fs::write(&deb, b"!<arch>\ndebian-binary   evil").unwrap();
        let msg = copy_deb(&deb, &dir.path().join("again.deb"), &sha).unwrap_err().to_string();
        assert!(msg.contains("changed while the build ran"), "{msg}");
        assert!(!dir.path().join("again.deb").exists());
        // An existing name (or a symlink planted there) is never written through.
        std::os::unix::fs::symlink(&deb, dir.path().join("link.deb")).unwrap();
        assert!(copy_deb(&deb, &dir.path().join("link.deb"), &sha).is_err());
    }

    fn fifo(path: &Path) {
        n2d_store::safe_fs::make_fifo(path).unwrap();
    }

    #[test]
    fn fifos_devices_directories_and_huge_files_are_refused_before_any_read() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = dir.path().join("pkg.deb");
        fifo(&pipe);
        // A sparse file past each cap: refused by its size, never read.
        let huge_deb = dir.path().join("huge.deb");
        std::fs::File::create(&huge_deb).unwrap().set_len(MAX_DEB_BYTES + 1).unwrap();
        let huge_tgz = dir.path().join("huge.tgz");
        std::fs::File::create(&huge_tgz).unwrap().set_len(MAX_DOCKER_ARCHIVE_BYTES + 1).unwrap();
        let cases: [(&Path, &str); 4] = [
            (&pipe, "a FIFO, not a regular file"),
            (Path::new("/dev/zero"), "a character device, not a regular file"),
            (dir.path(), "a directory, not a regular file"),
            (Path::new("/dev/null"), "a character device"),
        ];
        for (path, expect) in cases {
            let started = std::time::Instant::now();
            let deb = check_deb(path).unwrap_err();
            let tgz = check_docker_archive(path).unwrap_err();
            assert!(started.elapsed() < std::time::Duration::from_secs(5), "{path:?} hung");
            for err in [deb, tgz] {
                assert!(err.is_usage(), "{err:?}");
                assert!(err.to_string().contains(expect), "{path:?}: {err}");
            }
        }
        let msg = check_deb(&huge_deb).unwrap_err().to_string();
        assert!(msg.contains("huge.deb") && msg.contains("more than the 536870912"), "{msg}");
        let msg = check_docker_archive(&huge_tgz).unwrap_err().to_string();
        assert!(msg.contains("huge.tgz") && msg.contains("more than the 1073741824"), "{msg}");
        assert!(install_docker_archive(&pipe, dir.path()).is_err());
    }

    #[test]
    fn an_archive_of_too_many_entries_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..=MAX_DOCKER_ARCHIVE_ENTRIES).map(|i| format!("docker/f{i}")).collect();
        let mut files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        files.extend([("docker/dockerd", &b"x"[..]), ("docker/containerd", b"x"), ("docker/runc", b"x")]);
        let archive = dir.path().join("many.tgz");
        std::fs::write(&archive, tgz(&files)).unwrap();
        let msg = check_docker_archive(&archive).unwrap_err().to_string();
        assert!(msg.contains("4096 entries"), "{msg}");
    }

    #[test]
    fn suites_are_suite_names_never_options_or_paths() {
        for ok in
            ["trixie", "bookworm", "sid", "stable", "bookworm-backports", "trixie-proposed-updates", "u22"]
        {
            check_suite(ok).unwrap();
        }
        let long = "a".repeat(MAX_SUITE_LEN + 1);
        for bad in [
            "", "-x", "--help", "../x", "a/b", "a b", "Trixie", "trixie\n", "1abc", "é", ".", "x=y", "a,b",
            &long,
        ] {
            let err = check_suite(bad).unwrap_err();
            assert!(matches!(err, BuildError::BadSuite(_)) && err.is_usage(), "{bad:?}");
            assert!(err.to_string().contains("not a Debian suite"), "{err}");
        }
        check_suite(&long[1..]).unwrap();
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
