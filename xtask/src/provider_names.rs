//! `cargo xtask ci`'s check that `crates/core` decides nothing by a
//! provider's name: no string literal naming Gmail or Graph in its code.
//! Test modules (`#[cfg(test)]`, and `tests.rs` files), comments and doc
//! comments may name them; what a provider does comes in as data from its
//! own crate. And that core holds no SMTP server (that is
//! `crates/relay`): no SMTP dependency, no `relay` or `smtp` module, no
//! SMTP reply or command in its code.

use std::path::Path;

use crate::{Error, Result};

/// The folder checked.
const CORE_SRC: &str = "crates/core/src";

/// The names no literal of core's code may contain (case-insensitive).
const NAMES: &[&str] = &["gmail", "graph"];

/// What would make core an SMTP server: dependencies (by a part of their
/// name), module names, and the literals a server's code starts with.
const SMTP_DEPENDENCIES: &[&str] = &["smtp", "mail-send", "samotop"];
const SMTP_MODULES: &[&str] = &["relay", "smtp"];
const SMTP_LITERALS: &[&str] = &["EHLO", "HELO", "220 ", "250 ", "354 "];

/// Fails naming each file and line of core whose code has a string literal
/// naming a provider, or that makes core an SMTP server.
pub(crate) fn check(root: &Path) -> Result<()> {
    names_no_provider(root)?;
    no_smtp_server(root)
}

/// Fails naming what in core belongs to an SMTP server.
fn no_smtp_server(root: &Path) -> Result<()> {
    let manifest = root.join("crates/core/Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", manifest.display())))?;
    let mut found: Vec<String> = smtp_dependencies(&text)
        .into_iter()
        .map(|(line, dep)| format!("crates/core/Cargo.toml:{line}: depends on {dep}"))
        .collect();
    let mut files = Vec::new();
    rust_files(&root.join(CORE_SRC), &mut files)?;
    files.sort();
    for path in &files {
        let shown = path
            .strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string();
        let inside = path.strip_prefix(root.join(CORE_SRC)).unwrap_or(path);
        if let Some(module) = inside.components().find_map(|c| {
            let name = c.as_os_str().to_string_lossy();
            let stem = name.trim_end_matches(".rs");
            SMTP_MODULES.contains(&stem).then(|| stem.to_owned())
        }) {
            found.push(format!("{shown}: a `{module}` module"));
        }
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
        found.extend(
            smtp_code(&text)
                .into_iter()
                .map(|(line, what)| format!("{shown}:{line}: {what}")),
        );
    }
    if found.is_empty() {
        eprintln!("crates/core: no SMTP server ({} files)", files.len());
        return Ok(());
    }
    Err(Error::new(format!(
        "crates/core holds an SMTP server:\n  {}",
        found.join("\n  ")
    ))
    .with_hint("the SMTP server is crates/relay (apimail-relay); move it there and let it use core's public API"))
}

/// `(line, dependency)` for each dependency of a Cargo.toml whose name
/// is an SMTP library's.
fn smtp_dependencies(manifest: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_dependencies = false;
    for (number, line) in manifest.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.starts_with('[') {
            in_dependencies = line.contains("dependencies");
            continue;
        }
        let name = line.split(['=', '.']).next().unwrap_or_default().trim();
        if in_dependencies && SMTP_DEPENDENCIES.iter().any(|d| name.contains(d)) {
            found.push((number + 1, name.to_owned()));
        } else if let Some((_, features)) = line.split_once('=')
            && !in_dependencies
            && SMTP_DEPENDENCIES
                .iter()
                .any(|d| features.contains(&format!("dep:{d}")))
        {
            found.push((number + 1, line.to_owned()));
        }
    }
    found
}

/// `(line, what)` for each use of an SMTP library and each SMTP command or
/// reply literal in `text`'s code (tests skipped).
fn smtp_code(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, code) in code_outside_tests(text) {
        if code.contains("smtp_proto") {
            found.push((number, "uses smtp_proto".to_owned()));
        }
        for literal in string_literals(&code) {
            if SMTP_LITERALS.iter().any(|l| literal.starts_with(l)) {
                found.push((number, format!("an SMTP line \"{literal}\"")));
            }
        }
    }
    found
}

/// Fails naming each file and line of core whose code has a string literal
/// naming a provider.
fn names_no_provider(root: &Path) -> Result<()> {
    let dir = root.join(CORE_SRC);
    let mut files = Vec::new();
    rust_files(&dir, &mut files)?;
    files.sort();
    let mut found = Vec::new();
    for path in &files {
        // A `tests.rs` is a test module (`#[cfg(test)] mod tests;`).
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
        let shown = path
            .strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string();
        found.extend(
            literals_naming_a_provider(&text)
                .into_iter()
                .map(|(line, literal)| format!("{shown}:{line}: {literal}")),
        );
    }
    if found.is_empty() {
        eprintln!("{CORE_SRC}: {} files name no provider", files.len());
        return Ok(());
    }
    Err(Error::new(format!(
        "crates/core decides by a provider's name:\n  {}",
        found.join("\n  ")
    ))
    .with_hint(
        "let the provider crate state it as data (see Pace, Transport::provider), or move the literal into a #[cfg(test)] module",
    ))
}

pub(crate) fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let list = |e: std::io::Error| Error::new(format!("cannot list {}: {e}", dir.display()));
    for entry in std::fs::read_dir(dir).map_err(list)? {
        let path = entry.map_err(list)?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// `(line, literal)` for each string literal of `text`'s code that names a
/// provider (see [`code_outside_tests`]).
fn literals_naming_a_provider(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, code) in code_outside_tests(text) {
        for literal in string_literals(&code) {
            let lower = literal.to_ascii_lowercase();
            if NAMES.iter().any(|name| lower.contains(name)) {
                found.push((number, format!("\"{literal}\"")));
            }
        }
    }
    found
}

/// `(line number, code)` for each line of `text` outside tests, its
/// comment cut off (`//`, `///`, `//!`). Skipped: each item under
/// `#[cfg(test)]` or `#[cfg(any(test, …))]` (to its closing brace, or its
/// `;`).
pub(crate) fn code_outside_tests(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut skip_next_item = false;
    // Brace depth inside a skipped item; `None` outside one.
    let mut skipping: Option<i64> = None;
    for (number, line) in text.lines().enumerate() {
        let code = code_of(line);
        let trimmed = code.trim();
        if let Some(depth) = skipping.as_mut() {
            *depth += braces(&code);
            if *depth <= 0 {
                skipping = None;
            }
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") || trimmed.starts_with("#[cfg(any(test") {
            skip_next_item = true;
            continue;
        }
        if skip_next_item {
            if trimmed.is_empty() || trimmed.starts_with("#[") {
                continue;
            }
            skip_next_item = false;
            let depth = braces(&code);
            if code.contains('{') && depth > 0 {
                skipping = Some(depth);
            }
            continue;
        }
        lines.push((number + 1, code));
    }
    lines
}

/// The line without its comment (`//`, `///`, `//!`), string literals kept.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_string => {
                out.push(c);
                if let Some(next) = chars.next() {
                    out.push(next);
                }
                continue;
            }
            '"' => in_string = !in_string,
            '/' if !in_string && chars.peek() == Some(&'/') => break,
            _ => {}
        }
        out.push(c);
    }
    out
}

/// The string literals' contents in a line of code.
pub(crate) fn string_literals(code: &str) -> Vec<String> {
    let mut literals = Vec::new();
    let mut current: Option<String> = None;
    let mut chars = code.chars();
    while let Some(c) = chars.next() {
        match (&mut current, c) {
            (Some(text), '\\') => {
                text.push(c);
                if let Some(next) = chars.next() {
                    text.push(next);
                }
            }
            (Some(_), '"') => literals.extend(current.take()),
            (Some(text), _) => text.push(c),
            (None, '"') => current = Some(String::new()),
            (None, _) => {}
        }
    }
    literals
}

/// Opening minus closing braces outside string literals.
fn braces(code: &str) -> i64 {
    let mut depth = 0;
    let mut in_string = false;
    let mut chars = code.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_string => {
                chars.next();
            }
            '"' => in_string = !in_string,
            '{' if !in_string => depth += 1,
            '}' if !in_string => depth -= 1,
            _ => {}
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_literal_in_code_is_found_and_tests_and_comments_are_not() {
        let text = r#"//! Sends through Gmail or Graph.
/// The "gmail" way.
fn pace(provider: &str) -> u32 {
    if provider == "graph" { 30 } else { 0 } // "gmail"
}
fn host() -> &'static str { "https://GMAIL.googleapis.com/{x}" }
fn fine() -> &'static str { "a \"quoted\" word" }
#[cfg(any(test, feature = "test-util"))]
pub fn fill() {
    let p = "graph";
}
#[cfg(test)]
mod tests {
    fn fixture() -> &'static str {
        "gmail"
    }
}
fn after() -> &'static str { "Graph" }
"#;
        let found = literals_naming_a_provider(text);
        let lines: Vec<usize> = found.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [4, 6, 18], "{found:?}");
        assert_eq!(found[0].1, "\"graph\"");
    }

    #[test]
    fn an_smtp_server_in_core_is_found() {
        let manifest = "[dependencies]\nsmtp-proto = { workspace = true, optional = true }\ntime = \"1\"\n\n[features]\nrelay = [\"dep:smtp-proto\"]\n";
        let lines: Vec<usize> = smtp_dependencies(manifest)
            .iter()
            .map(|(l, _)| *l)
            .collect();
        assert_eq!(lines, [2, 6]);
        let code = "use smtp_proto::Request;\nfn greet() -> &'static str { \"220 ready\" }\nfn fine() -> &'static str { \"2200 bytes\" }\n";
        let lines: Vec<usize> = smtp_code(code).iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [1, 2]);
    }

    #[test]
    fn core_names_no_provider() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        check(&root).unwrap();
    }
}
