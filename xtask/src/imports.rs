//! `cargo xtask ci`'s import check (alone: `cargo xtask imports`): no two
//! files of a crate import each other, directly or through others
//! (`crate::a` in `b.rs` and `crate::b` in `a.rs`). Cycles make a module's
//! meaning depend on its importers.
//!
//! Every crate of the workspace is checked (the `members` of the root
//! `Cargo.toml`: each member's `src/lib.rs`, `src/main.rs`, `src/bin/*.rs`
//! and integration tests), and the crate root counts as a file: a module
//! that names `crate::Item` imports the module `lib.rs` re-exports `Item`
//! from (`pub use a::Item`), or `lib.rs` itself when `Item` is defined
//! there, and `lib.rs` imports every module its own code (not its `mod` and
//! `pub use` lines) names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Fails naming every import loop found.
pub(crate) fn check(root: &Path) -> Result<()> {
    let roots = crate_roots(root)?;
    let mut loops = Vec::new();
    for crate_root in &roots {
        let graph = module_graph(crate_root)?;
        let shown = crate_root
            .strip_prefix(root)
            .unwrap_or(crate_root)
            .display();
        loops.extend(
            find_loops(&graph)
                .into_iter()
                .map(|l| format!("{shown}: {l}")),
        );
    }
    if loops.is_empty() {
        eprintln!("no import loops in {} crates", roots.len());
        return Ok(());
    }
    Err(Error::new(format!(
        "files import each other in a loop:\n  {}",
        loops.join("\n  ")
    ))
    .with_hint("move what both need into a module that imports neither"))
}

/// The root file of every crate in the workspace.
fn crate_roots(root: &Path) -> Result<Vec<PathBuf>> {
    let manifest = root.join("Cargo.toml");
    let text = read(&manifest)?;
    let members = workspace_members(&text)
        .ok_or_else(|| Error::new(format!("{} has no [workspace] members", manifest.display())))?;
    let mut dirs = Vec::new();
    for member in members {
        match member.strip_suffix("/*") {
            Some(parent) => {
                let mut found: Vec<PathBuf> = list(&root.join(parent))?
                    .into_iter()
                    .filter(|p| p.join("Cargo.toml").is_file())
                    .collect();
                found.sort();
                dirs.extend(found);
            }
            None => dirs.push(root.join(member)),
        }
    }
    let mut roots = Vec::new();
    for dir in dirs {
        let src = dir.join("src");
        roots.extend(
            [src.join("lib.rs"), src.join("main.rs")]
                .into_iter()
                .filter(|p| p.is_file()),
        );
        for folder in [src.join("bin"), dir.join("tests")] {
            if !folder.is_dir() {
                continue;
            }
            let mut found: Vec<PathBuf> = list(&folder)?
                .into_iter()
                .filter_map(|p| {
                    if p.is_dir() {
                        Some(p.join("main.rs")).filter(|m| m.is_file())
                    } else {
                        p.extension().is_some_and(|x| x == "rs").then_some(p)
                    }
                })
                .collect();
            found.sort();
            roots.extend(found);
        }
    }
    Ok(roots)
}

/// The `members = [...]` of a workspace manifest.
fn workspace_members(manifest: &str) -> Option<Vec<String>> {
    let workspace = manifest.split("[workspace]").nth(1)?;
    let workspace = workspace.split("\n[").next().unwrap_or(workspace);
    let start = workspace
        .lines()
        .scan(0, |at, line| {
            let here = *at;
            *at += line.len() + 1;
            Some((here, line))
        })
        .find(|(_, line)| {
            line.trim_start()
                .strip_prefix("members")
                .is_some_and(|r| r.trim_start().starts_with('='))
        })?
        .0;
    let list = &workspace[start..];
    let list = &list[list.find('[')? + 1..];
    let list = &list[..list.find(']')?];
    Some(
        list.split(',')
            .map(|item| item.trim().trim_matches('"').to_owned())
            .filter(|item| !item.is_empty())
            .collect(),
    )
}

/// Module name → the modules it imports, for the crate whose root file is
/// `root_file`: its top-level modules (a file and its folder are one
/// module) and the root itself (by its file name, `lib.rs`).
fn module_graph(root_file: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let dir = root_file.parent().unwrap_or(Path::new("."));
    let root_name = root_file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("lib.rs");
    let root_text = read(root_file)?;
    let mut sources = BTreeMap::new();
    for module in declared_modules(&root_text) {
        let mut text = String::new();
        let file = dir.join(format!("{module}.rs"));
        if file.is_file() {
            text.push_str(&top_level_super_as_crate(&read(&file)?));
        }
        let folder = dir.join(&module);
        if folder.is_dir() {
            collect(&folder, true, &mut text)?;
        }
        sources.insert(module, text);
    }
    Ok(graph_of(root_name, &root_text, &sources))
}

/// The graph from the root's text and each module's text.
fn graph_of(
    root_name: &str,
    root_text: &str,
    sources: &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let reexports = reexports(root_text, &modules);
    let defined = root_items(root_text);
    let mut graph: BTreeMap<String, BTreeSet<String>> = sources
        .iter()
        .map(|(module, text)| {
            let used = crate_paths(text)
                .into_iter()
                .filter_map(|name| {
                    if modules.contains(&name) {
                        Some(name)
                    } else if let Some(from) = reexports.get(&name) {
                        Some(from.clone())
                    } else {
                        defined.contains(&name).then(|| root_name.to_owned())
                    }
                })
                .filter(|m| m != module)
                .collect();
            (module.clone(), used)
        })
        .collect();
    graph.insert(root_name.to_owned(), root_uses(root_text, &modules));
    graph
}

/// The modules a crate root declares (`mod a;`, `pub mod b;`).
fn declared_modules(root: &str) -> Vec<String> {
    code_only(root)
        .lines()
        .filter_map(|line| {
            let line = line
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            let name = line.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect()
}

/// Each name the root re-exports (`pub use a::{B, c::D as E}`), by the
/// module it comes from.
fn reexports(root: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for statement in use_statements(root).into_iter().filter(|s| s.public) {
        let path = statement
            .path
            .trim_start_matches("self::")
            .trim_start_matches("crate::");
        let Some(module) = first_ident(path).filter(|m| modules.contains(m)) else {
            continue;
        };
        for leaf in leaves(path) {
            found.insert(leaf, module.clone());
        }
    }
    found
}

/// The names a `use` tree brings in: `a::{B, c::D as E, f::*}` → B, E.
fn leaves(path: &str) -> Vec<String> {
    let inner = match (path.find('{'), path.rfind('}')) {
        (Some(open), Some(close)) if open < close => &path[open + 1..close],
        _ => path,
    };
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (at, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .flat_map(|part| {
            let part = part.trim();
            if part.contains('{') {
                return leaves(part);
            }
            let name = match part.split_once(" as ") {
                Some((_, alias)) => alias.trim(),
                None => part.rsplit("::").next().unwrap_or(part),
            };
            first_ident(name).into_iter().collect()
        })
        .collect()
}

/// A `use` statement of a crate root, whitespace removed but for ` as `.
struct UseStatement {
    public: bool,
    path: String,
}

/// The `use` statements at the top level of a crate root.
fn use_statements(root: &str) -> Vec<UseStatement> {
    let code = code_only(root);
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        let line_start = before.rfind('\n').map_or(0, |n| n + 1);
        let prefix = &before[line_start..];
        let end = rest[at..].find(';').map_or(rest.len(), |e| at + e);
        if ["", "pub ", "pub(crate) "].contains(&prefix) {
            let path: String = rest[at + 4..end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace(":: ", "::")
                .replace("{ ", "{")
                .replace(" }", "}");
            found.push(UseStatement {
                public: prefix.starts_with("pub"),
                path,
            });
        }
        rest = &rest[end.min(rest.len())..];
        if rest.is_empty() {
            break;
        }
        rest = &rest[1..];
    }
    found
}

/// Names the root defines at its top level (`fn run`, `struct Error`, ...).
fn root_items(root: &str) -> BTreeSet<String> {
    const KINDS: &[&str] = &[
        "fn ",
        "async fn ",
        "struct ",
        "enum ",
        "trait ",
        "type ",
        "const ",
        "static ",
        "union ",
        "macro_rules! ",
    ];
    code_only(root)
        .lines()
        .filter_map(|line| {
            let line = line
                .strip_prefix("pub(crate) ")
                .or_else(|| line.strip_prefix("pub "))
                .unwrap_or(line);
            KINDS
                .iter()
                .find_map(|kind| line.strip_prefix(kind))
                .and_then(first_ident)
        })
        .collect()
}

/// The modules the root's own code names (`a::f()`, `use a::B;`,
/// `crate::a`), not counting its `mod` lines and re-exports.
fn root_uses(root: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = code_only(root);
    let mut own = String::new();
    let mut skipping = false;
    for line in code.lines() {
        let bare = line
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub ");
        if !skipping && line.starts_with("pub") && bare.starts_with("use ") {
            skipping = true;
        }
        if skipping {
            skipping = !line.contains(';');
            continue;
        }
        if bare.starts_with("mod ") && bare.ends_with(';') {
            continue;
        }
        own.push_str(line);
        own.push('\n');
    }
    let mut found: BTreeSet<String> = crate_paths(&own)
        .into_iter()
        .filter(|m| modules.contains(m))
        .collect();
    for module in modules {
        let pattern = format!("{module}::");
        let named = own.match_indices(&pattern).any(|(at, _)| {
            !own[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        });
        if named {
            found.insert(module.clone());
        }
    }
    found
}

/// A file directly below the crate root names the root as `super::`: such
/// imports at the file's top level (unindented) read as `crate::`.
fn top_level_super_as_crate(text: &str) -> String {
    text.lines()
        .map(|line| {
            for prefix in ["use super::", "pub use super::", "pub(crate) use super::"] {
                if let Some(rest) = line.strip_prefix(prefix) {
                    let visibility = &prefix[..prefix.len() - "use super::".len()];
                    return format!("{visibility}use crate::{rest}\n");
                }
            }
            format!("{line}\n")
        })
        .collect()
}

/// Appends every `.rs` file under `dir`; with `top`, `dir` is a module's
/// folder, whose `mod.rs` sits directly below the crate root.
fn collect(dir: &Path, top: bool, out: &mut String) -> Result<()> {
    let mut entries = list(dir)?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, false, out)?;
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = read(&path)?;
            if top && path.ends_with("mod.rs") {
                out.push_str(&top_level_super_as_crate(&text));
            } else {
                out.push_str(&text);
            }
        }
    }
    Ok(())
}

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::new(format!("cannot list {}: {e}", dir.display())))?;
    entries
        .map(|entry| {
            entry
                .map(|e| e.path())
                .map_err(|e| Error::new(format!("cannot list {}: {e}", dir.display())))
        })
        .collect()
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))
}

/// `text` without its `//` comments (doc comments and links included).
fn code_only(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every `crate::a::…` and `crate::{a, b::…}` path
/// in code (comments, doc links included, are not imports).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code = code_only(text);
    let text = code.as_str();
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if rest.starts_with('{') {
            found.extend(group_heads(rest));
        } else {
            found.extend(first_ident(rest));
        }
    }
    found
}

/// The first segment of each path in a `{a, b::{c, d}}` group that starts
/// `text`: a, b.
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = 1;
    for (at, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                heads.extend(first_ident(text[start..at].trim()));
                start = at + 1;
                if c == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    heads
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

    fn sources(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(m, text)| (m.to_string(), top_level_super_as_crate(text)))
            .collect()
    }

    #[test]
    fn an_item_reexported_by_lib_rs_leads_to_its_module() {
        let root = "mod draft;\nmod transport;\n\npub use draft::NOTE;\npub use transport::{\n    GraphTransport, Mailbox as Box2,\n};\n";
        let graph = graph_of(
            "lib.rs",
            root,
            &sources(&[
                ("draft", "use crate::GraphTransport;\n"),
                ("transport", "use crate::{NOTE, Box2};\n"),
            ]),
        );
        assert_eq!(find_loops(&graph), ["draft -> transport -> draft"]);
        // `mod` and `pub use` lines are not the root importing its modules.
        assert!(graph["lib.rs"].is_empty());
    }

    #[test]
    fn lib_rs_calling_a_module_that_imports_its_items_is_a_loop() {
        let root = "mod draft;\nmod scan;\n\npub struct GraphTransport;\n\nimpl GraphTransport {\n    fn send(&self) {\n        draft::start(self);\n    }\n}\n";
        let graph = graph_of(
            "lib.rs",
            root,
            &sources(&[
                ("draft", "use crate::GraphTransport;\nuse crate::scan;\n"),
                ("scan", "pub fn scan() {}\n"),
            ]),
        );
        assert_eq!(find_loops(&graph), ["draft -> lib.rs -> draft"]);
        assert_eq!(
            graph["draft"].iter().collect::<Vec<_>>(),
            ["lib.rs", "scan"]
        );
    }

    #[test]
    fn a_private_use_in_lib_rs_and_super_in_a_module_count() {
        let root = "mod errors;\nmod exit;\n\nuse errors::Answer;\n\npub(crate) fn run() {}\n";
        let graph = graph_of(
            "main.rs",
            root,
            &sources(&[
                // Unindented `super::` in a file below the root is the root;
                // indented (a tests module) it is the file itself.
                (
                    "errors",
                    "use super::run;\n\nmod tests {\n    use super::*;\n}\n",
                ),
                ("exit", "mod tests {\n    use super::run;\n}\n"),
            ]),
        );
        assert_eq!(find_loops(&graph), ["errors -> main.rs -> errors"]);
        assert!(graph["exit"].is_empty());
    }

    #[test]
    fn reads_declared_modules_reexports_and_root_items() {
        let root = "//! Docs: mod fake;\nmod a;\npub mod b;\n#[cfg(test)]\nmod tests;\nmod inline {\n    mod deep;\n}\npub use a::{X, c::{D, E as F}, g::*};\npub use ipnet::IpNet;\npub(crate) fn helper() {}\npub struct Error;\n";
        assert_eq!(declared_modules(root), ["a", "b", "tests"]);
        let modules: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let found = reexports(root, &modules);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["D", "F", "X"]);
        assert!(found.values().all(|m| m == "a"));
        assert_eq!(
            root_items(root).into_iter().collect::<Vec<_>>(),
            ["Error", "helper"]
        );
    }

    #[test]
    fn reads_nested_crate_path_groups() {
        let text = "use crate::{cli, queue::{flush, x}, Item};";
        let found: Vec<String> = crate_paths(text).into_iter().collect();
        assert_eq!(found, ["Item", "cli", "queue"]);
    }

    #[test]
    fn reads_the_workspace_members() {
        let manifest = "[workspace]\nresolver = \"3\"\nmembers = [\n    \"crates/core\",\n    \"xtask\", \"crates/*\",\n]\nexclude = [\"fuzz\"]\n\n[workspace.package]\nmembers = [\"no\"]\n";
        assert_eq!(
            workspace_members(manifest).unwrap(),
            ["crates/core", "xtask", "crates/*"]
        );
        assert!(workspace_members("[package]\nname = \"x\"\n").is_none());
    }

    #[test]
    fn every_workspace_crate_is_checked() {
        let root = crate::workspace_root();
        let roots: Vec<String> = crate_roots(&root)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        for expected in [
            "crates/core/src/lib.rs",
            "crates/gmail/src/lib.rs",
            "crates/graph/src/lib.rs",
            "crates/mailer/src/lib.rs",
            "crates/relay/src/lib.rs",
            "crates/cli/src/lib.rs",
            "crates/cli/src/main.rs",
            "tests/src/lib.rs",
            "tests/tests/relay.rs",
            "xtask/src/main.rs",
        ] {
            assert!(
                roots.iter().any(|r| r == expected),
                "{expected} in {roots:?}"
            );
        }
    }
}
