//! No module circles, in any crate of the workspace: within a crate, the top-level modules
//! (`src/x.rs` or `src/x/mod.rs` and what lies under it) use each other one way only. A
//! `crate::a` path in module `b` is an edge b → a; test code (`mod tests { .. }`, `tests.rs`,
//! `fake.rs`, `fuzz_tests.rs`, `src/*/tests/`) may reach anywhere and is not counted.
//!
//! It lives here because n2d-spec is the crate every other one depends on; it reads only the
//! sources, so it costs no build of the others.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

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
fn no_crate_has_a_module_circle() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("crates/");
    let mut circles = Vec::new();
    let mut dirs: Vec<PathBuf> = fs::read_dir(crates).expect("crates/").flatten().map(|e| e.path()).collect();
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
        "use crate::a::X;\nuse crate::{b, c::{D, E}};\n// crate::f\nfn g() { crate::h::i(); }\nmod tests { use crate::z; }",
    );
    assert_eq!(crate_paths(&code), ["a", "b", "c", "h"].map(String::from).into());
    let graph: Graph = [("a", &["b"][..]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]
        .into_iter()
        .map(|(m, u)| (m.to_string(), u.iter().map(|s| s.to_string()).collect()))
        .collect();
    assert_eq!(circle_from(&graph, "a").unwrap(), ["a", "b", "c", "a"]);
    assert_eq!(circle_from(&graph, "d"), None);
}
