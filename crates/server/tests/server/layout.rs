//! The server's module layout holds: imports point one way (no circle between modules),
//! the engine room (`manager`) and the HTTP machinery (`http`) never reach up to the
//! routes or the whole state, and only the routers and their composition see `AppState`.
//!
//! Read from the source files themselves: every `crate::…` and `super::…` path outside a
//! comment is an edge from the file's module to the module it names. A "module" is a
//! top-level one (`api`, `storage`, …), or one level deeper inside `manager` and `http`,
//! whose parts are separate components (`manager::dispatch`, `http::audit`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The source tree of the server crate.
fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file: `manager/dispatch/place.rs` is
/// `["manager", "dispatch", "place"]`, `manager/mod.rs` is `["manager"]`, `lib.rs` is `[]`.
fn module_of(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The component a module path belongs to (see the module docs).
fn component(path: &[String]) -> Option<String> {
    match path {
        // The crate root, and the folders' own `mod.rs` (only their list of parts).
        [] => None,
        [top] if top == "manager" || top == "http" => None,
        [top, inner, ..] if top == "manager" || top == "http" => Some(format!("{top}::{inner}")),
        [top, ..] => Some(top.clone()),
    }
}

/// The module paths named in `code` from a file whose module is `here`.
fn references(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start).map(|i| i + from) {
            from = i + start.len();
            if i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b':') {
                continue;
            }
            // The base: the crate root, or the parent of this file's module (`a/mod.rs` is
            // module `a`, so its `super` is the parent of `a`).
            let mut base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                let mut parent = here.to_vec();
                parent.pop();
                parent
            };
            // Follow `a::b::` segments; a brace group names several.
            let mut rest = &code[from..];
            loop {
                if let Some(group) = rest.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    for item in group[..end].split(',') {
                        let name: String = item.trim().chars().take_while(|c| ident(*c as u8)).collect();
                        if !name.is_empty() && name != "self" {
                            let mut path = base.clone();
                            path.push(name);
                            found.push(path);
                        }
                    }
                    break;
                }
                let name: String = rest.chars().take_while(|c| ident(*c as u8)).collect();
                if name.is_empty() {
                    break;
                }
                base.push(name.clone());
                rest = &rest[name.len()..];
                match rest.strip_prefix("::") {
                    Some(next) => rest = next,
                    None => break,
                }
            }
            found.push(base);
        }
    }
    found
}

/// Every edge between components, with a file that makes it.
fn edges() -> BTreeMap<(String, String), String> {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let known: BTreeSet<Vec<String>> = all.iter().map(|f| module_of(f)).collect();
    let mut edges = BTreeMap::new();
    for file in &all {
        let here = module_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let Some(from) = component(&here) else { continue };
        for mut path in references(&code, &here) {
            // Trim to the longest prefix that is a module file (the rest is an item in it).
            while !path.is_empty() && !known.contains(&path) {
                path.pop();
            }
            if let Some(to) = component(&path)
                && to != from
            {
                edges
                    .entry((from.clone(), to))
                    .or_insert_with(|| file.strip_prefix(src()).unwrap().display().to_string());
            }
        }
    }
    edges
}

#[test]
fn no_module_imports_another_that_imports_it_back_however_far_round() {
    let edges = edges();
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
    }
    // A depth-first walk from every module, with the path so far: meeting a module on
    // the path again is a circle.
    fn walk<'a>(
        at: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = path.iter().position(|m| *m == at) {
            let mut circle = path[i..].to_vec();
            circle.push(at);
            return Some(circle);
        }
        if !done.insert(at) {
            return None;
        }
        path.push(at);
        for next in graph.get(at).into_iter().flatten() {
            if let Some(circle) = walk(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for start in graph.keys() {
        if let Some(circle) = walk(start, &graph, &mut Vec::new(), &mut done) {
            let steps: Vec<String> = circle
                .windows(2)
                .map(|w| {
                    format!(
                        "{} -> {} (in {})",
                        w[0],
                        w[1],
                        edges[&(w[0].to_owned(), w[1].to_owned())]
                    )
                })
                .collect();
            panic!("an import circle:\n  {}", steps.join("\n  "));
        }
    }
    // The check sees real edges (it would pass vacuously on a parser that found none).
    assert!(
        edges.contains_key(&("api".to_owned(), "http::error".to_owned())),
        "{edges:?}"
    );
    assert!(edges.contains_key(&("manager::cluster".to_owned(), "manager::dispatch".to_owned())));
}

#[test]
fn the_engine_room_and_the_http_machinery_never_reach_up_to_the_routes_or_the_state() {
    let upward = ["api", "delegate_api", "probes", "state", "cli"];
    for ((from, to), file) in edges() {
        let lower =
            from.starts_with("manager::") || from.starts_with("http::") || from == "storage" || from == "metrics";
        if lower {
            assert!(!upward.contains(&to.as_str()), "{from} uses {to} (in {file})");
        }
        if from.starts_with("manager::") {
            assert!(
                !to.starts_with("http::"),
                "the manager uses HTTP: {from} -> {to} (in {file})"
            );
        }
        if from.starts_with("http::") {
            assert!(
                !to.starts_with("manager::"),
                "the HTTP machinery uses the manager: {from} -> {to} (in {file})"
            );
        }
    }
}

#[test]
fn the_parts_of_the_manager_use_only_those_before_them_in_the_documented_order() {
    // docs/architecture.md, "Which module may use which".
    let order = [
        ("manager::workers", 0),
        ("manager::masks", 0),
        ("manager::hub", 1),
        ("manager::heartbeats", 1),
        ("manager::sessions", 1),
        ("manager::liveness", 2),
        ("manager::dispatch", 3),
        ("manager::cluster", 4),
        ("manager::queue", 4),
        ("manager::housekeeping", 5),
        ("manager::demand", 5),
    ];
    let rank = |m: &str| order.iter().find(|(name, _)| *name == m).map(|(_, r)| *r);
    for ((from, to), file) in edges() {
        if let (Some(a), Some(b)) = (rank(&from), rank(&to)) {
            assert!(b < a, "{from} uses {to} (in {file}), which comes after it");
        } else if from.starts_with("manager::") || to.starts_with("manager::") {
            let unknown = if from.starts_with("manager::") { &from } else { &to };
            assert!(
                rank(unknown).is_some() || !unknown.starts_with("manager::"),
                "{unknown} is not in the documented order"
            );
        }
    }
}

#[test]
fn only_the_routers_and_their_composition_see_the_whole_state() {
    // Handlers take the parts they use (`State<Placer>`, `State<Arc<dyn Store>>`, ...,
    // through `FromRef`); only the state's own file, the two routers that name it as
    // their state type, and `app`/`run` see `AppState`.
    let allowed = ["lib.rs", "main.rs", "state.rs", "api/mod.rs", "delegate_api/mod.rs"];
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut seen = Vec::new();
    for file in &all {
        let text = std::fs::read_to_string(file).unwrap();
        let code = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .any(|l| l.contains("AppState"));
        if code {
            seen.push(file.strip_prefix(src()).unwrap().display().to_string());
        }
    }
    let beyond: Vec<&String> = seen.iter().filter(|f| !allowed.contains(&f.as_str())).collect();
    assert!(beyond.is_empty(), "these files see AppState: {beyond:?}");
    assert!(
        seen.iter().any(|f| f == "state.rs"),
        "the check reads the sources: {seen:?}"
    );
}

#[test]
fn the_library_never_uses_the_client_only_the_binary_does() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    for file in all.iter().filter(|f| !f.ends_with("main.rs")) {
        let text = std::fs::read_to_string(file).unwrap();
        for crate_name in ["switchboard_client", "switchboard_cli"] {
            assert!(
                !text.contains(crate_name),
                "{} names {crate_name}: the server library must not depend on the client",
                file.display()
            );
        }
    }
    let main = std::fs::read_to_string(src().join("main.rs")).unwrap();
    assert!(
        main.contains("switchboard_cli::operate"),
        "the binary runs the operator commands"
    );
}
