//! Running commands (cargo's above all) from the workspace root.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Context, Error, Result};

/// The workspace root: the parent of this crate's directory.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A `cargo` command: the `CARGO` binary cargo gave us, else `cargo` from `PATH`.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Announces `cmd` on stderr, runs it with inherited stdio and fails unless it succeeds.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(format!("`{shown}` failed ({status})")))
    }
}

/// Like [`run`], but captures and returns stdout (stderr stays inherited).
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    eprintln!("$ {shown}");
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if !out.status.success() {
        return Err(Error::new(format!("`{shown}` failed ({})", out.status)));
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{shown}` printed non-UTF-8 output"))
}

/// A shell-like rendering of `cmd` for messages, e.g. `RUSTDOCFLAGS='-D warnings' cargo doc`.
/// The program is shown by file name only, so `$CARGO=/long/path/cargo` shows as `cargo`.
pub(crate) fn display(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            words.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program());
    words.push(quote(program));
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

fn quote(word: &OsStr) -> String {
    const LONGEST: usize = 60;
    let mut word = word.to_string_lossy();
    if word.chars().count() > LONGEST {
        let start: String = word.chars().take(LONGEST - 3).collect();
        word = format!("{start}...").into();
    }
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c))
    {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_when_needed() {
        let mut cmd = Command::new("/opt/rust/bin/cargo");
        cmd.args(["doc", "--workspace"])
            .env("RUSTDOCFLAGS", "-D warnings");
        assert_eq!(
            display(&cmd),
            "RUSTDOCFLAGS='-D warnings' cargo doc --workspace"
        );
    }
}
