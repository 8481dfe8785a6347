//! The package cache: every .deb an image build used, kept in `$N2D_HOME/cache/debs/` with a
//! `Packages` index (and a `Release` naming its digest), which makes it a flat apt repository.
//! A build without the network reads it as its only source
//! (`deb [trusted=yes] file:///…/cache/debs ./`); apt picks the newest version of each package
//! there, which after one online build is what that build installed, so the rebuild gives the
//! same bytes.
//!
//! Files arrive by rename from the build's staging tree (or a temporary copy renamed into
//! place), so a killed build leaves no partial .deb; the index is written atomically after them.

use n2d_exec::{Cmd, ExecError, Runner};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const INDEX: &str = "Packages";
pub const RELEASE: &str = "Release";

/// One suite's cache directory (`<Home::deb_cache_dir>/<suite>`: apt's flat repository names
/// its suite in `Release`, which mmdebstrap's essential set is chosen by).
#[derive(Debug, Clone)]
pub struct PackageCache {
    pub dir: PathBuf,
    pub suite: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot update the package cache {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the control fields of {path} for the package cache's index")]
    Control {
        path: PathBuf,
        #[source]
        source: ExecError,
    },
}

impl PackageCache {
    pub fn new(cache_root: &Path, suite: &str) -> PackageCache {
        PackageCache { dir: cache_root.join(suite), suite: suite.to_string() }
    }

    /// Whether the cache has an index (one build stored its packages).
    pub fn is_usable(&self) -> bool {
        self.dir.join(INDEX).is_file()
    }

    /// The apt source line that reads the cache.
    pub fn source_line(&self) -> String {
        format!("deb [trusted=yes] file://{} ./", self.dir.display())
    }

    /// The package names the index holds.
    pub fn package_names(&self) -> BTreeSet<String> {
        let text = fs::read_to_string(self.dir.join(INDEX)).unwrap_or_default();
        text.lines().filter_map(|l| l.strip_prefix("Package: ")).map(|n| n.trim().to_string()).collect()
    }

    /// Moves every `*.deb` of `from` that the cache lacks into it. Returns how many were added.
    pub fn add_from(&self, from: &Path) -> Result<usize, CacheError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        n2d_store::ensure_dir(&self.dir).map_err(|e| CacheError::Io {
            path: self.dir.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        let Ok(entries) = fs::read_dir(from) else { return Ok(0) };
        let mut added = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".deb") || name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let target = self.dir.join(&name);
            if target.exists() {
                continue;
            }
            if fs::rename(e.path(), &target).is_err() {
                // Another file system: a temporary copy, renamed into place once complete.
                let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
                let copied = fs::copy(e.path(), &tmp).and_then(|_| fs::rename(&tmp, &target));
                if let Err(source) = copied {
                    let _ = fs::remove_file(&tmp);
                    return Err(io_err(&target)(source));
                }
            }
            added += 1;
        }
        Ok(added)
    }

    /// Rewrites `Packages` and `Release` for the .debs present: stanzas of files already indexed
    /// (same size) are kept, new files' control fields come from `dpkg-deb -f`.
    pub fn reindex(&self, runner: &dyn Runner) -> Result<(), CacheError> {
        let io_err = |source| CacheError::Io { path: self.dir.clone(), source };
        let old = parse_index(&fs::read_to_string(self.dir.join(INDEX)).unwrap_or_default());
        let mut stanzas = BTreeMap::new();
        for e in fs::read_dir(&self.dir).map_err(io_err)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".deb") || name.starts_with('.') {
                continue;
            }
            let size = e.metadata().map_err(io_err)?.len();
            if let Some(old) = old.get(&name).filter(|s| s.size == size) {
                stanzas.insert(name, old.text.clone());
                continue;
            }
            let path = e.path();
            let control = runner
                .run(&Cmd::new("dpkg-deb", "dpkg").arg("-f").arg(&path))
                .map_err(|source| CacheError::Control { path: path.clone(), source })?;
            let sha = sha256_file(&path).map_err(io_err)?;
            stanzas.insert(name.clone(), stanza(&String::from_utf8_lossy(&control), &name, size, &sha));
        }
        let index: String = stanzas.values().map(|s| format!("{s}\n")).collect();
        let write = |file: &str, text: &str| {
            n2d_store::write_atomic(&self.dir.join(file), text.as_bytes(), 0o644).map_err(|e| {
                CacheError::Io { path: self.dir.join(file), source: io::Error::other(e.to_string()) }
            })
        };
        write(INDEX, &index)?;
        write(RELEASE, &release(&self.suite, index.as_bytes()))
    }

    /// The cached file of an installed package, if the cache has it.
    pub fn file_of(&self, name: &str, version: &str, arch: &str) -> Option<PathBuf> {
        Some(self.dir.join(deb_file_name(name, version, arch))).filter(|p| p.is_file())
    }
}

/// The file name apt gives a package in its archives: `NAME_VERSION_ARCH.deb`, the epoch's `:`
/// written `%3a`.
pub fn deb_file_name(name: &str, version: &str, arch: &str) -> String {
    format!("{name}_{}_{arch}.deb", version.replace(':', "%3a"))
}

/// One index entry: the package's control fields, then where the file is and its digest.
fn stanza(control: &str, file: &str, size: u64, sha256: &str) -> String {
    let mut out = String::new();
    for line in control.lines().filter(|l| !l.trim().is_empty()) {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("Filename: ./{file}\nSize: {size}\nSHA256: {sha256}\n"));
    out
}

struct Indexed {
    size: u64,
    text: String,
}

/// The stanzas of a `Packages` index by file name.
fn parse_index(text: &str) -> BTreeMap<String, Indexed> {
    let mut out = BTreeMap::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let field = |key: &str| block.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
        let (Some(file), Some(size)) = (field("Filename: "), field("Size: ").and_then(|s| s.parse().ok()))
        else {
            continue;
        };
        let text = format!("{}\n", block.trim_matches('\n'));
        out.insert(file.trim_start_matches("./").to_string(), Indexed { size, text });
    }
    out
}

/// A flat repository's `Release`: the suite (mmdebstrap picks the essential packages of the
/// suite by archive or codename) and the index's digest (no date: the same packages give the
/// same file).
fn release(suite: &str, index: &[u8]) -> String {
    format!(
        "Suite: {suite}\nCodename: {suite}\nSHA256:\n {} {} {INDEX}\n",
        hex::encode(Sha256::digest(index)),
        index.len()
    )
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut h = Sha256::new();
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use n2d_exec::RecordingRunner;

    #[test]
    fn file_names_are_apts() {
        assert_eq!(
            deb_file_name("docker.io", "26.1.5+dfsg1-9+b9", "amd64"),
            "docker.io_26.1.5+dfsg1-9+b9_amd64.deb"
        );
        assert_eq!(deb_file_name("iptables", "1:1.8.11-2", "amd64"), "iptables_1%3a1.8.11-2_amd64.deb");
    }

    #[test]
    fn new_debs_are_moved_in_and_indexed_and_old_stanzas_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (out, cache_dir) = (dir.path().join("out"), dir.path().join("cache/trixie"));
        fs::create_dir_all(out.join("partial")).unwrap();
        fs::write(out.join("a_1_amd64.deb"), b"aaa").unwrap();
        fs::write(out.join("partial/b_1_amd64.deb"), b"half").unwrap();
        fs::write(out.join("lock"), b"").unwrap();
        let cache = PackageCache::new(&dir.path().join("cache"), "trixie");
        assert!(!cache.is_usable());
        assert_eq!(cache.add_from(&out).unwrap(), 1);
        assert!(cache_dir.join("a_1_amd64.deb").is_file() && !cache_dir.join("b_1_amd64.deb").exists());

        let runner = RecordingRunner::default();
        runner.answer("dpkg-deb -f", Ok("Package: a\nVersion: 1\nArchitecture: amd64\nEssential: yes\n"));
        cache.reindex(&runner).unwrap();
        let index = fs::read_to_string(cache_dir.join(INDEX)).unwrap();
        assert!(index.starts_with("Package: a\nVersion: 1\nArchitecture: amd64\nEssential: yes\nFilename: ./a_1_amd64.deb\nSize: 3\nSHA256: 9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0\n"), "{index}");
        assert!(cache.is_usable());
        assert_eq!(cache.package_names(), BTreeSet::from(["a".to_string()]));
        let release = fs::read_to_string(cache_dir.join(RELEASE)).unwrap();
        assert!(
            release.starts_with("Suite: trixie\nCodename: trixie\nSHA256:\n ")
                && release.ends_with(&format!(" {} Packages\n", index.len()))
        );
        assert_eq!(cache.file_of("a", "1", "amd64"), Some(cache_dir.join("a_1_amd64.deb")));
        assert_eq!(cache.file_of("a", "2", "amd64"), None);

        // A second file: only it is read; the first's stanza is kept as it was.
        fs::write(out.join("c_2_all.deb"), b"c").unwrap();
        assert_eq!(cache.add_from(&out).unwrap(), 1);
        let runner = RecordingRunner::default();
        runner.answer("dpkg-deb -f", Ok("Package: c\nVersion: 2\nArchitecture: all\n"));
        cache.reindex(&runner).unwrap();
        assert_eq!(runner.calls().len(), 1, "{:?}", runner.calls());
        assert_eq!(cache.package_names(), BTreeSet::from(["a".to_string(), "c".to_string()]));
        assert_eq!(fs::read_to_string(cache_dir.join(INDEX)).unwrap().matches("Essential: yes").count(), 1);
        assert!(
            cache.source_line().starts_with("deb [trusted=yes] file:///")
                && cache.source_line().ends_with("/cache/trixie ./")
        );
    }
}
