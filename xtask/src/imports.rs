//! `cargo xtask ci`'s import check: no two files of a crate import each
//! other, directly or through others (`crate::a` in `b.rs` and `crate::b`
//! in `a.rs`). Cycles make a module's meaning depend on its importers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::{Error, Result};

/// The source folders checked, one crate each.
const CRATES: &[&str] = &[
    "crates/core/src",
    "crates/gmail/src",
    "crates/graph/src",
    "crates/cli/src",
    "tests/src",
    "xtask/src",
];

/// Fails naming every import loop found.
pub(crate) fn check(root: &Path) -> Result<()> {
    let mut loops = Vec::new();
    for krate in CRATES {
        let graph = module_graph(&root.join(krate))?;
        loops.extend(
            find_loops(&graph)
                .into_iter()
                .map(|l| format!("{krate}: {l}")),
        );
    }
    if loops.is_empty() {
        eprintln!("no import loops in {} crates", CRATES.len());
        return Ok(());
    }
    Err(Error::new(format!(
        "files import each other in a loop:\n  {}",
        loops.join("\n  ")
    ))
    .with_hint("move what both need into a module that imports neither"))
}

/// Top-level module name → the top-level modules it names as `crate::x`.
fn module_graph(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut sources = BTreeMap::new();
    collect(src, src, &mut sources)?;
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let graph = sources
        .iter()
        .map(|(module, text)| {
            let used = crate_paths(text)
                .into_iter()
                .filter(|m| m != module && modules.contains(m))
                .collect();
            (module.clone(), used)
        })
        .collect();
    Ok(graph)
}

/// Reads every `.rs` file under `dir`, keyed by its top-level module
/// (`lib.rs` and `main.rs` are the crate root and left out).
fn collect(src: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::new(format!("cannot list {}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(|e| Error::new(format!("cannot list {}: {e}", dir.display())))?
            .path();
        if path.is_dir() {
            collect(src, &path, out)?;
            continue;
        }
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap_or(&path);
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
        out.entry(top).or_default().push_str(&text);
    }
    Ok(())
}

/// The first segment of every `crate::a::…` and `crate::{a, b::…}` path
/// in code (comments, doc links included, are not imports).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let text = code.as_str();
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(group.split(',').filter_map(|part| first_ident(part.trim())));
        } else {
            found.extend(first_ident(rest));
        }
    }
    found
}

fn first_ident(path: &str) -> Option<String> {
    let end = path
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(path.len());
    (end > 0).then(|| path[..end].to_owned())
}

/// Every loop, as `a -> b -> a`, each reported once.
fn find_loops(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut loops = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    // Report each loop from its smallest module, once.
                    let smallest = path.iter().min().cloned().unwrap_or_default();
                    if &smallest == start {
                        let mut shown = path.clone();
                        shown.push(start.clone());
                        loops.insert(shown.join(" -> "));
                    }
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    loops.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in edges {
            graph
                .entry(from.to_string())
                .or_default()
                .insert(to.to_string());
            graph.entry(to.to_string()).or_default();
        }
        graph
    }

    #[test]
    fn finds_direct_and_longer_loops_once() {
        let loops = find_loops(&graph(&[
            ("auth", "queue"),
            ("queue", "auth"),
            ("a", "b"),
            ("b", "c"),
            ("c", "a"),
        ]));
        assert_eq!(loops, ["a -> b -> c -> a", "auth -> queue -> auth"]);
        assert!(find_loops(&graph(&[("send", "queue"), ("queue", "providers")])).is_empty());
    }

    #[test]
    fn reads_single_and_grouped_crate_paths() {
        let text = "use crate::exit::{Exit, Failure};\nuse crate::{cli, queue::flush};\nlet x = crate::providers::resolve();\n/// See [`crate::send`].";
        let found: Vec<String> = crate_paths(text).into_iter().collect();
        assert_eq!(found, ["cli", "exit", "providers", "queue"]);
    }
}
