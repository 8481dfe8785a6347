//! The architecture, checked (over the sources and `cargo metadata` only, so it costs no build
//! of the other crates):
//! - one door: the CLI depends on the orchestrator and the spec only, among n2d's own crates;
//! - the environment is read at the edge only (`crates/n2d/src`, into
//!   `n2d_orchestrate::Settings`), and libraries tell the user things through the orchestrator's
//!   `Progress` (or a returned value), never by printing; `n2d-init`, the guest's own binary, is
//!   outside both rules;
//! - no module circles, in any crate of the workspace: within a crate, the top-level modules
//!   (`src/x.rs` or `src/x/mod.rs` and what lies under it) use each other one way only. A
//!   `crate::a` path in module `b` is an edge b → a; test code (`mod tests { .. }`, `tests.rs`,
//!   `fake.rs`, `fuzz_tests.rs`, `src/*/tests/`) may reach anywhere and is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn crates_dir() -> PathBuf {
    workspace_root().join("crates")
}

/// The CLI's normal dependencies among n2d's own crates: the orchestrator (the one door) and
/// the spec (argument types) only. Checked over `cargo metadata`, so a new `n2d-*` dependency
/// in crates/n2d/Cargo.toml fails here.
#[test]
fn the_cli_depends_on_the_orchestrator_and_the_spec_only() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli = meta["packages"].as_array().unwrap().iter().find(|p| p["name"] == "n2d").unwrap();
    let own: BTreeSet<&str> = cli["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null())
        .filter_map(|d| d["name"].as_str())
        .filter(|n| n.starts_with("n2d"))
        .collect();
    assert_eq!(own, BTreeSet::from(["n2d-orchestrate", "n2d-spec"]), "the CLI's own-crate dependencies");
}

// Environment and printing: the edge only.

/// Crates whose `src` may read the environment and print.
const EDGE: [&str; 2] = ["n2d", "n2d-init"];

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
        files.sort();
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

// Module circles.

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src` belongs to (`None`: the crate root, or test code).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let name = parts.last()?.as_str();
    if ["tests.rs", "fake.rs", "fuzz_tests.rs"].contains(&name)
        || parts[..parts.len() - 1].contains(&"tests".into())
    {
        return None;
    }
    let first = parts[0].trim_end_matches(".rs").to_string();
    (first != "lib" && first != "main").then_some(first)
}

/// The code of a file without comments and without its inline `mod tests { .. }`.
fn non_test_code(text: &str) -> String {
    let code: String =
        text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    match code.find("mod tests {") {
        Some(at) => code[..at].to_string(),
        None => code,
    }
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The first segments of every `crate::` path in `code` (`crate::{a, b::c}` gives a and b).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `other_crate::`, not this crate's root
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut expect_name = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => expect_name = true,
                    c if c.is_whitespace() => {}
                    _ if depth == 1 && expect_name => {
                        found.insert(ident_at(&group[i..]).to_string());
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident_at(rest).to_string());
        }
    }
    found
}

fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let Some(module) = top_module(src, &file) else { continue };
        let code = non_test_code(&fs::read_to_string(&file).expect("readable source"));
        graph.entry(module).or_default().extend(crate_paths(&code));
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (module, uses) in graph.iter_mut() {
        uses.retain(|u| modules.contains(u) && u != module);
    }
    graph
}

/// One circle through `start`, if any: the path back to it.
fn circle_from(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &Graph,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in &graph[at] {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then(|| {
        path.push(start.to_string());
        path
    })
}

#[test]
fn no_crate_has_modules_that_depend_on_each_other_in_a_circle() {
    let crates = crates_dir();
    let mut circles = Vec::new();
    let mut dirs: Vec<PathBuf> =
        fs::read_dir(&crates).expect("crates/").flatten().map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = module_graph(&src);
        for module in graph.keys() {
            if let Some(circle) = circle_from(&graph, module) {
                circles.push(format!(
                    "{}: {}",
                    dir.file_name().unwrap().to_string_lossy(),
                    circle.join(" → ")
                ));
                break;
            }
        }
    }
    assert!(circles.is_empty(), "module circles (make the dependency one-way):\n{}", circles.join("\n"));
}

#[test]
fn the_scan_sees_grouped_and_plain_paths_and_skips_tests() {
    let code = non_test_code(
        "use crate::a::X;\nuse crate::{b, c::{D, E}};\n// crate::f\nfn g() { crate::h::i(); other_crate::j(); }\nmod tests { use crate::z; }",
    );
    assert_eq!(crate_paths(&code), ["a", "b", "c", "h"].map(String::from).into());
    let graph: Graph = [("a", &["b"][..]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]
        .into_iter()
        .map(|(m, u)| (m.to_string(), u.iter().map(|s| s.to_string()).collect()))
        .collect();
    assert_eq!(circle_from(&graph, "a").unwrap(), ["a", "b", "c", "a"]);
    assert_eq!(circle_from(&graph, "d"), None);
}
