//! One door: the environment is read at the edge only (`crates/n2d/src`, into
//! `n2d_orchestrate::Settings`), and libraries tell the user things through the orchestrator's
//! `Progress` (or a returned value), never by printing. `n2d-init`, the guest's own binary, is
//! outside both rules.

use std::path::{Path, PathBuf};

/// Crates whose `src` may read the environment and print.
const EDGE: [&str; 2] = ["n2d", "n2d-init"];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("crates/").to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every line of the libraries' sources, as (file:line, code without its `//` comment), with
/// whether it is test code: a `tests.rs` or a file under a `tests/` directory, or anything after
/// the file's `#[cfg(test)]` (where n2d keeps its test modules, at the end).
fn library_lines() -> Vec<(String, String, bool)> {
    let root = crates_dir();
    let mut lines = Vec::new();
    let mut crates: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    crates.sort();
    for krate in crates {
        let name = krate.file_name().unwrap().to_string_lossy().into_owned();
        if EDGE.contains(&name.as_str()) || !krate.join("src").is_dir() {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &mut files);
        for file in files {
            let shown = file.strip_prefix(root.parent().unwrap()).unwrap().display().to_string();
            let test_file = file.file_name().is_some_and(|n| n == "tests.rs")
                || file
                    .strip_prefix(krate.join("src"))
                    .unwrap()
                    .components()
                    .any(|c| c.as_os_str() == "tests");
            let mut in_tests = test_file;
            for (i, line) in std::fs::read_to_string(&file).unwrap().lines().enumerate() {
                if line.trim_start().starts_with("#[cfg(test)]") {
                    in_tests = true;
                }
                let code = line.split("//").next().unwrap_or("").to_string();
                lines.push((format!("{shown}:{}", i + 1), code, in_tests));
            }
        }
    }
    lines
}

#[test]
fn no_library_reads_or_sets_the_environment() {
    let lines = library_lines();
    assert!(lines.len() > 1000, "found the sources ({} lines)", lines.len());
    let found: Vec<String> = lines
        .iter()
        .filter(|(_, code, _)| ["env::var", "set_var(", "remove_var("].iter().any(|p| code.contains(p)))
        .map(|(at, code, _)| format!("{at}: {}", code.trim()))
        .collect();
    assert!(
        found.is_empty(),
        "libraries read or set the environment (take the value from n2d_orchestrate::Settings \
         instead, or build one in tests):\n{}",
        found.join("\n")
    );
}

#[test]
fn no_library_prints() {
    let found: Vec<String> = library_lines()
        .iter()
        .filter(|(_, code, in_tests)| {
            !in_tests
                && ["println!", "print!(", "eprint!(", "eprintln!", "io::stdout()", "io::stderr()"]
                    .iter()
                    .any(|p| code.contains(p))
        })
        .map(|(at, code, _)| format!("{at}: {}", code.trim()))
        .collect();
    assert!(
        found.is_empty(),
        "libraries print (say it through the orchestrator's Progress, n2d_store::Notes, a writer \
         passed in, or return it):\n{}",
        found.join("\n")
    );
}
