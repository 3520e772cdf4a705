//! `cargo xtask ci`'s account-layer check: only `apimail-account` reads
//! apimail's and the providers' environment variables and builds
//! transports, so a setting or a provider is added in one crate.
//!
//! - `crates/cli/src` reads no variable but a few of its own, and builds
//!   no transport or credential;
//! - no other crate's code (tests, `tests/` folders and examples aside)
//!   reads an `APIMAIL_*` variable or a provider's (`GOOGLE_*`, `AZURE_*`,
//!   a name with Gmail, Graph or Microsoft in it), and none but the
//!   provider crates themselves builds a transport.

use std::path::{Path, PathBuf};

use crate::provider_names::{code_outside_tests, rust_files, string_literals};
use crate::{Error, Result};

/// The command line's sources.
const CLI_SRC: &str = "crates/cli/src";

/// The account layer: the one reader of the variables.
const ACCOUNT: &str = "crates/account";

/// The crates that define the transports.
const PROVIDERS: &[&str] = &["crates/gmail", "crates/graph"];

/// How a variable's name begins or what it holds when it is apimail's or
/// a provider's (upper case).
const OWN_PREFIXES: &[&str] = &["APIMAIL_", "GOOGLE_", "AZURE_"];
const PROVIDER_WORDS: &[&str] = &["GMAIL", "GRAPH", "MICROSOFT", "MSAL"];

/// What builds a transport or its credentials: only the account layer
/// (and the provider crates, which define them) may.
const TRANSPORTS: &[&str] = &[
    "GmailTransport::",
    "GraphTransport::",
    "ServiceAccountTokens::",
    "AppOnlyTokens::",
    "RefreshTokenSource::",
    "https_client(",
];

/// Variables the command line may read itself: none of them configures an
/// account or a provider.
const ALLOWED_VARS: &[&str] = &["DISPLAY", "WAYLAND_DISPLAY", "SOURCE_DATE_EPOCH"];

/// What builds a transport or its credentials, or reads them from the
/// environment: only the account layer may.
const CONSTRUCTORS: &[&str] = &[
    "GmailTransport::",
    "GraphTransport::",
    "ServiceAccountTokens::",
    "AppOnlyTokens::",
    "RefreshTokenSource::",
    "https_client(",
    "apimail_account::build(",
    // Readers of the environment.
    "from_env(",
];

/// Fails naming each file and line that goes around the account layer.
pub(crate) fn check(root: &Path) -> Result<()> {
    let mut found = command_line(root)?;
    let crates = other_crates(root)?;
    found.extend(crates.1);
    if found.is_empty() {
        eprintln!(
            "{CLI_SRC} reads no provider variable and builds no transport; {} other files read no apimail or provider variable",
            crates.0
        );
        return Ok(());
    }
    Err(Error::new(format!(
        "code goes around the account layer:\n  {}",
        found.join("\n  ")
    ))
    .with_hint(
        "name the variable in crates/account/src/env.rs, read it there and pass the value as data; resolve senders and build transports with apimail_account (resolve, build)",
    ))
}

/// The files of every crate but the command line and the account layer,
/// without tests, `tests/` folders and examples; the count checked, and
/// each environment read of an apimail or provider variable and each
/// transport built outside the provider crates.
fn other_crates(root: &Path) -> Result<(usize, Vec<String>)> {
    let crates = root.join("crates");
    let list = |e: std::io::Error| Error::new(format!("cannot list {}: {e}", crates.display()));
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(&crates).map_err(list)? {
        let dir = entry.map_err(list)?.path().join("src");
        if dir.is_dir() {
            rust_files(&dir, &mut files)?;
        }
    }
    files.sort();
    let mut found = Vec::new();
    let mut checked = 0;
    for path in &files {
        let shown = path
            .strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string();
        if shown.starts_with(ACCOUNT)
            || shown.starts_with(CLI_SRC)
            || path.file_name().is_some_and(|n| n == "tests.rs")
            || path.components().any(|c| c.as_os_str() == "tests")
        {
            continue;
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
        checked += 1;
        let provider = PROVIDERS.iter().any(|p| shown.starts_with(p));
        found.extend(
            crate_violations(&text, provider)
                .into_iter()
                .map(|(line, what)| format!("{shown}:{line}: {what}")),
        );
    }
    Ok((checked, found))
}

/// Whether a variable's name is apimail's or a provider's.
fn own_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    OWN_PREFIXES.iter().any(|p| upper.starts_with(p))
        || PROVIDER_WORDS.iter().any(|w| upper.contains(w))
}

/// `(line, what)` for each read of an apimail or provider variable in the
/// code of `text` (tests skipped), and, unless it is a provider crate's,
/// each transport built. A name the check cannot see (neither a literal,
/// a `const` of the file, nor in a list of literals up to three lines
/// above) counts as
/// a read.
fn crate_violations(text: &str, provider_crate: bool) -> Vec<(usize, String)> {
    let lines = code_outside_tests(text);
    let consts: Vec<(String, String)> = lines
        .iter()
        .filter_map(|(_, code)| {
            let rest = code
                .trim()
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            let rest = rest.strip_prefix("const ")?;
            let (name, value) = rest.split_once(':')?;
            let literal = string_literals(value).into_iter().next()?;
            Some((name.trim().to_owned(), literal))
        })
        .collect();
    let mut found = Vec::new();
    for (index, (number, code)) in lines.iter().enumerate() {
        for (call, argument) in env_reads(code) {
            let names: Vec<String> = if let Some(literal) = string_literals(&argument).first() {
                vec![literal.clone()]
            } else if let Some((_, value)) = consts
                .iter()
                .find(|(name, _)| argument.trim_start_matches('&') == name)
            {
                vec![value.clone()]
            } else {
                // A name from the nearest list of literals at most three
                // lines above (`[...].iter().find_map(|name| ...)`).
                lines[index.saturating_sub(3)..index]
                    .iter()
                    .rev()
                    .map(|(_, code)| string_literals(code))
                    .find(|literals| !literals.is_empty())
                    .unwrap_or_default()
            };
            if names.is_empty() {
                found.push((
                    *number,
                    format!("reads a variable the check cannot name: {call}{argument})"),
                ));
            } else if let Some(name) = names.iter().find(|n| own_name(n)) {
                found.push((*number, format!("reads {name}: {call}{argument})")));
            }
        }
        if !provider_crate {
            for constructor in TRANSPORTS {
                if code.contains(constructor) {
                    found.push((*number, format!("builds a transport: {constructor}")));
                }
            }
        }
    }
    found
}

/// Each environment read in a line of code: the call and its argument.
fn env_reads(code: &str) -> Vec<(&'static str, String)> {
    let mut reads = Vec::new();
    for call in ["env::var(", "env::var_os(", "env::vars("] {
        let mut rest = code;
        while let Some(at) = rest.find(call) {
            let argument = rest[at + call.len()..]
                .split(')')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            reads.push((call, argument));
            rest = &rest[at + call.len()..];
        }
    }
    reads
}

/// The command line's files: each environment read of a variable outside
/// [`ALLOWED_VARS`] and each [`CONSTRUCTORS`] use.
fn command_line(root: &Path) -> Result<Vec<String>> {
    let dir = root.join(CLI_SRC);
    let mut found = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir)
        .map_err(|e| Error::new(format!("cannot list {}: {e}", dir.display())))?
    {
        let path = entry
            .map_err(|e| Error::new(format!("cannot list {}: {e}", dir.display())))?
            .path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
        files += 1;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        found.extend(
            violations(&text)
                .into_iter()
                .map(|(line, what)| format!("{CLI_SRC}/{name}:{line}: {what}")),
        );
    }
    if files == 0 {
        return Err(Error::new(format!("{CLI_SRC} has no Rust files")));
    }
    Ok(found)
}

/// `(line, what)` for each environment read of a variable outside
/// [`ALLOWED_VARS`] and each [`CONSTRUCTORS`] use in `text`.
fn violations(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for (call, argument) in env_reads(code) {
            let allowed = ALLOWED_VARS
                .iter()
                .any(|name| argument == format!("\"{name}\""));
            if !allowed {
                found.push((
                    number + 1,
                    format!("reads the environment: {call}{argument})"),
                ));
            }
        }
        for constructor in CONSTRUCTORS {
            if code.contains(constructor) {
                found.push((number + 1, format!("builds a transport: {constructor}")));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_variables_and_transports_are_found() {
        let text = "let a = std::env::var(\"APIMAIL_GOOGLE_TOKEN_URL\");\n\
                    let b = std::env::var_os(apimail_account::env::ACCOUNT);\n\
                    let t = GmailTransport::new(client, &url, \"me\", tokens);\n\
                    let d = std::env::var_os(\"DISPLAY\");\n\
                    // std::env::var(\"APIMAIL_IN_A_COMMENT\")\n";
        let found = violations(text);
        let lines: Vec<usize> = found.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [1, 2, 3], "{found:?}");
    }

    #[test]
    fn other_crates_may_read_only_variables_not_apimails_or_a_providers() {
        let text = r#"const DIR: &str = "APIMAIL_DATA_DIR";
fn a() { std::env::var_os(DIR); }
fn b() { std::env::var("AZURE_CLIENT_ID"); }
fn c() { std::env::var("HTTPS_PROXY"); }
fn d() {
    ["SSL_CERT_FILE", "APIMAIL_GRAPH_USER"].iter().map(|name| {
        std::env::var_os(name)
    });
}
fn e(name: &str) { std::env::var(name); }
fn f() { let t = GraphTransport::new(&api, m, tokens, 1, true); }
// std::env::var("APIMAIL_IN_A_COMMENT")
#[cfg(test)]
mod tests {
    fn child() { std::env::var_os("APIMAIL_TEST_CHILD"); }
}
"#;
        let found = crate_violations(text, false);
        let lines: Vec<usize> = found.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [2, 3, 7, 10, 11], "{found:?}");
        assert!(found[0].1.contains("APIMAIL_DATA_DIR"), "{found:?}");
        assert!(found[2].1.contains("APIMAIL_GRAPH_USER"), "{found:?}");
        assert!(found[3].1.contains("cannot name"), "{found:?}");
        // A provider crate defines its transports.
        let lines: Vec<usize> = crate_violations(text, true)
            .iter()
            .map(|(line, _)| *line)
            .collect();
        assert_eq!(lines, [2, 3, 7, 10]);
    }

    #[test]
    fn the_provider_crates_read_no_variable_as_they_did() {
        let before = r#"fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
pub fn credentials_from_env() {
    let user = var("APIMAIL_GMAIL_USER");
}
"#;
        assert_eq!(crate_violations(before, true).len(), 1);
    }

    #[test]
    fn the_command_line_goes_through_the_account_layer() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        check(&root).unwrap();
    }
}
