//! Property tests ("a short fuzz run") for what an image build and the image store trust: the
//! build-input checks (suite, mirror, package names, `--deb` and `--docker-archive` files) and
//! the `image.json` reader, plus the regression corpus in `tests/corpus/`. Each must answer Ok
//! or an error, never panic, and what it accepts must be safe to use as a name, argument or path.

use n2d_image::inputs::{
    check_deb, check_docker_archive, check_mirror, check_package_name, check_suite, host_port, Mirror,
    MAX_SUITE_LEN,
};
use n2d_image::ImageManifest;
use proptest::prelude::*;
use std::io::Write;

const VALID: &[u8] = include_bytes!("corpus/ok-minimal.json");

/// A valid-looking .deb's first bytes (an ar archive whose first member is debian-binary).
const DEB: &[u8] = b"!<arch>\ndebian-binary   1342177280  0     0     100644  4         `\n2.0\n";

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What an accepted manifest must satisfy: its ID is a plain lower-case hex name, its suite a
/// suite, every method later steps call answers, and it prints and re-reads to itself.
fn check_manifest(m: &ImageManifest) -> Result<(), TestCaseError> {
    prop_assert!(!m.id.is_empty() && m.id.len() <= 64 && is_lower_hex(&m.id), "{:?}", m.id);
    prop_assert!(check_suite(&m.recipe.suite).is_ok());
    prop_assert!(!m.kernel_release.contains(['"', '\n', ' ', '/']));
    let _ = (m.short_id(), m.recipe.id(), m.recipe.sources_list(), m.recipe.erofs_uuid());
    let sum = m.kernel_bytes.checked_add(m.initrd_bytes).and_then(|n| n.checked_add(m.rootfs_bytes));
    prop_assert!(sum.is_some());
    let again = ImageManifest::from_json(&serde_json::to_vec(m).unwrap());
    prop_assert_eq!(again.ok(), Some(m.clone()));
    Ok(())
}

fn read(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = ImageManifest::from_json(bytes) {
        check_manifest(&m)?;
    }
    Ok(())
}

/// Applies byte edits (replace, insert, remove) to `base`.
fn mutate(base: &[u8], edits: Vec<(prop::sample::Index, u8, u8)>) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for (at, byte, op) in edits {
        let i = at.index(bytes.len() + 1);
        match op {
            0 if i < bytes.len() => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            _ if i < bytes.len() => {
                bytes.remove(i);
            }
            _ => {}
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8)
}

/// A gzip tar of `(path, bytes)` files.
fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
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

fn in_file(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input");
    std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
    (dir, path)
}

/// Something that could read as an option, a path or more than one word.
fn unsafe_word(s: &str) -> bool {
    s.is_empty() || s.starts_with(['-', '.']) || s.contains(['/', ' ', '\t', '\n', '=', ',', '\0'])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn manifest_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        read(&bytes)?;
    }

    #[test]
    fn manifest_json_like_text(text in "[a-z0-9_:\\-\\[\\]{}\"., \n\\\\]{0,200}") {
        read(text.as_bytes())?;
    }

    #[test]
    fn manifest_mutated(edits in edits()) {
        read(&mutate(VALID, edits))?;
    }

    #[test]
    fn manifest_fields(
        id in "\\PC{0,70}|[0-9a-fA-F./]{0,70}",
        suite in "\\PC{0,50}|[a-z0-9./ \\-]{0,50}",
        release in "\\PC{0,40}|[a-z0-9.+~\"\\- ]{0,40}",
        size in prop_oneof![any::<u64>(), 0..(1u64 << 41)],
    ) {
        let mut value: serde_json::Value = serde_json::from_slice(VALID).unwrap();
        value["id"] = id.clone().into();
        value["recipe"]["suite"] = suite.clone().into();
        value["kernel_release"] = release.clone().into();
        value["rootfs_bytes"] = size.into();
        let got = ImageManifest::from_json(&serde_json::to_vec(&value).unwrap());
        let expect = !id.is_empty() && id.len() <= 64 && is_lower_hex(&id)
            && check_suite(&suite).is_ok()
            && !release.is_empty() && release.len() <= 128
            && release.bytes().all(|b| b.is_ascii_alphanumeric() || b".+-_~".contains(&b))
            && size <= n2d_image::recipe::MAX_ARTIFACT_BYTES;
        prop_assert_eq!(got.is_ok(), expect, "{:?}", got);
        if let Ok(m) = got {
            check_manifest(&m)?;
        }
    }

    #[test]
    fn suites_and_mirrors(suite in "\\PC{0,50}|[a-z0-9./ \\-]{0,50}", url in "\\PC{0,60}|(https?|file|ftp)://[a-z0-9.:@\\[\\]/ -]{0,40}") {
        if check_suite(&suite).is_ok() {
            prop_assert!(!unsafe_word(&suite) && suite.len() <= MAX_SUITE_LEN, "{:?}", suite);
            // A suite is a safe directory name and one argument of mmdebstrap.
            prop_assert!(suite != ".." && !suite.contains(char::is_uppercase));
        }
        if let Ok(Mirror::Remote(u)) = check_mirror(&url, "trixie") {
            let (host, _) = host_port(&u).unwrap();
            prop_assert!(!host.is_empty());
        }
        let _ = host_port(&url);
    }

    #[test]
    fn package_names(name in "\\PC{0,30}|[a-z0-9+.=/ \\-]{0,30}") {
        if check_package_name(&name).is_ok() {
            prop_assert!(!unsafe_word(&name) && name.len() >= 2, "{:?}", name);
        }
    }

    #[test]
    fn deb_files(bytes in prop::collection::vec(any::<u8>(), 0..128), edits in edits(), mutate_real in any::<bool>()) {
        let bytes = if mutate_real { mutate(DEB, edits) } else { bytes };
        let (_dir, path) = in_file(&bytes);
        if check_deb(&path).is_ok() {
            prop_assert!(bytes.starts_with(b"!<arch>\ndebian-binary"));
        }
    }

    #[test]
    fn docker_archives(edits in edits(), extra in "(docker/)?[a-z]{1,8}(/[a-z]{1,4})?") {
        let elf = &b"\x7fELF"[..];
        let good = tgz(&[
            ("docker/dockerd", elf),
            ("docker/containerd", elf),
            ("docker/runc", elf),
            (&extra, b"x"),
        ]);
        let (_dir, path) = in_file(&mutate(&good, edits));
        if let Ok((sha, binaries)) = check_docker_archive(&path) {
            prop_assert_eq!(sha.len(), 64);
            for b in ["dockerd", "containerd", "runc"] {
                prop_assert!(binaries.iter().any(|x| x == b));
            }
            prop_assert!(binaries.iter().all(|b| !b.contains('/') && !b.is_empty()));
        }
    }
}

#[test]
fn regression_corpus_gives_clear_errors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let t = std::time::Instant::now();
        let result = ImageManifest::from_json(&bytes);
        assert!(t.elapsed().as_secs() < 2, "{name} took {:?}", t.elapsed());
        // `<what>-<case>.json`: "ok" reads; "json" is not a record; any other names the field.
        let expect = name.split_once('-').unwrap().0;
        match (expect, &result) {
            ("ok", Ok(m)) => assert_eq!(m.id.len(), 64),
            ("json", Err(e)) => assert!(e.to_string().starts_with("not an image record"), "{name}: {e}"),
            (field, Err(e)) if e.to_string().starts_with(&format!("its {field} ")) => {}
            _ => panic!("{name}: expected {expect:?}, got {result:?}"),
        }
        // As a build input each is refused, not a panic.
        assert!(check_deb(&path).is_err() && check_docker_archive(&path).is_err(), "{name}");
        n += 1;
    }
    assert!(n >= 10, "corpus at {} is missing", dir.display());
}
