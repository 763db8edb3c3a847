//! The crate's layout keeps its promise: every import points down. The
//! modules of `harness/src` (a file or a folder each) and the `crate::`
//! paths each one's code names (not its tests or comments) form a graph
//! with no cycle, and nothing outside `run/` (but the command line) names
//! the live runner: whatever judges or reports a case depends on `outcome`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules its source names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            // Tests may use anything to make their fixtures.
            if path.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "main" || module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // What a module imports, not what its tests or its comments name.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let text: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let names = graph.entry(module.clone()).or_default();
            for (i, _) in text.match_indices("crate::") {
                // `scacheck::` is the command line's; `$crate::` a macro's.
                if i > 0 && text.as_bytes()[i - 1].is_ascii_alphanumeric() {
                    continue;
                }
                let rest = &text[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    names.insert(name);
                }
            }
        }
    }
    graph
}

#[test]
fn every_import_points_down() {
    let graph = imports();
    // Kahn's algorithm: what is left over sits on a cycle.
    let mut left: BTreeMap<&String, usize> = graph.keys().map(|m| (m, 0)).collect();
    for deps in graph.values() {
        for d in deps {
            if let Some(n) = left.get_mut(d) {
                *n += 1;
            }
        }
    }
    let mut ready: Vec<&String> = left
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(m, _)| *m)
        .collect();
    let mut order = Vec::new();
    while let Some(m) = ready.pop() {
        order.push(m.clone());
        left.remove(m);
        for d in &graph[m] {
            if let Some(n) = left.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    ready.push(graph.get_key_value(d).unwrap().0);
                }
            }
        }
    }
    // What is left sits on a cycle or below one: name those on one.
    let reaches = |from: &String, to: &String| {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph[from].iter().collect();
        while let Some(m) = stack.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                stack.extend(graph.get(m).into_iter().flatten());
            }
        }
        false
    };
    let cyclic: Vec<String> = left
        .keys()
        .filter(|m| reaches(m, m))
        .map(|m| format!("{m} -> {:?}", graph[*m]))
        .collect();
    assert!(
        cyclic.is_empty(),
        "modules on an import cycle:\n{}",
        cyclic.join("\n")
    );
    println!("top-down: {}", order.join(" > "));
}

#[test]
fn nothing_but_the_command_line_names_the_live_runner() {
    let graph = imports();
    let users: Vec<&String> = graph
        .iter()
        .filter(|(m, deps)| *m != "run" && deps.contains("run"))
        .map(|(m, _)| m)
        .collect();
    assert!(users.is_empty(), "modules that import run: {users:?}");
}

/// The command line defines arguments and dispatches; what it would
/// compute belongs in the library, where unit tests reach it.
#[test]
fn the_command_line_stays_thin() {
    let main = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/src/main.rs");
    let lines = std::fs::read_to_string(main).unwrap().lines().count();
    assert!(lines < 350, "main.rs has {lines} lines");
}
