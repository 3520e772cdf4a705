//! `cargo codegen [--check]`: man pages and shell completions generated from
//! the CLI definition (`apimail::codegen::generated_files`).
//!
//! The directories in [`GENERATED_DIRS`] are owned by codegen: any file in
//! them that is not generated is stale and gets deleted (or, with `--check`,
//! reported).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::{Context, Error, Result};

/// Directories, relative to the workspace root, that hold only generated files.
pub(crate) const GENERATED_DIRS: &[&str] = &["docs/man", "completions"];

/// What `cargo codegen` does with out-of-date files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Update the files on disk.
    Write,
    /// Compare only; fail if anything is out of date.
    Check,
}

/// Generated files keyed by path relative to the workspace root.
type Files = BTreeMap<PathBuf, Vec<u8>>;

/// How a file on disk differs from what codegen produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Drift {
    Missing,
    Changed,
    /// On disk in a generated directory but no longer generated.
    Stale,
}

impl Drift {
    fn as_str(self) -> &'static str {
        match self {
            Drift::Missing => "missing",
            Drift::Changed => "changed",
            Drift::Stale => "stale",
        }
    }
}

/// Runs codegen in the given mode.
pub(crate) fn run(root: &Path, mode: Mode) -> Result<()> {
    match mode {
        Mode::Check => check(root),
        Mode::Write => write(root),
    }
}

/// Fails, listing every offending file, unless the generated files on disk
/// are exactly what codegen produces. Writes nothing.
pub(crate) fn check(root: &Path) -> Result<()> {
    let files = generated()?;
    check_files(root, &files)?;
    eprintln!("generated files are up to date ({} files)", files.len());
    Ok(())
}

fn check_files(root: &Path, files: &Files) -> Result<()> {
    let drift = diff(root, files)?;
    if drift.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = drift
        .iter()
        .map(|(path, kind)| format!("{} ({})", path.display(), kind.as_str()))
        .collect();
    Err(Error::new(format!(
        "generated files are out of date: {}",
        list.join(", ")
    ))
    .with_hint("run `cargo codegen` and commit the result"))
}

/// Brings the generated files on disk up to date, printing what changed.
fn write(root: &Path) -> Result<()> {
    let files = generated()?;
    let drift = write_files(root, &files)?;
    for (path, kind) in &drift {
        let verb = match kind {
            Drift::Missing => "created",
            Drift::Changed => "updated",
            Drift::Stale => "removed stale",
        };
        println!("{verb} {}", path.display());
    }
    if drift.is_empty() {
        println!(
            "generated files are already up to date ({} files)",
            files.len()
        );
    } else {
        println!(
            "{} generated file(s) changed; commit the result",
            drift.len()
        );
    }
    Ok(())
}

fn write_files(root: &Path, files: &Files) -> Result<Vec<(PathBuf, Drift)>> {
    let drift = diff(root, files)?;
    for (path, kind) in &drift {
        let full = root.join(path);
        match kind {
            Drift::Missing | Drift::Changed => {
                if let Some(dir) = full.parent() {
                    fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                fs::write(&full, &files[path])
                    .with_context(|| format!("cannot write {}", full.display()))?;
            }
            Drift::Stale => {
                fs::remove_file(&full)
                    .with_context(|| format!("cannot remove {}", full.display()))?;
            }
        }
    }
    Ok(drift)
}

/// The files the CLI crate generates, validated and keyed by relative path.
fn generated() -> Result<Files> {
    let mut files = Files::new();
    for (path, contents) in apimail::codegen::generated_files() {
        let is_plain_relative = path.components().next().is_some()
            && path.components().all(|c| matches!(c, Component::Normal(_)));
        if !is_plain_relative {
            return Err(Error::new(format!(
                "codegen produced `{}`, which is not a plain path relative to the workspace root",
                path.display()
            )));
        }
        if files.insert(path.clone(), contents).is_some() {
            return Err(Error::new(format!(
                "codegen produced `{}` twice",
                path.display()
            )));
        }
    }
    Ok(files)
}

/// Every difference between `files` and the disk under `root`, sorted by path.
fn diff(root: &Path, files: &Files) -> Result<Vec<(PathBuf, Drift)>> {
    let mut drift = Vec::new();
    for (path, contents) in files {
        let full = root.join(path);
        match fs::read(&full) {
            Ok(on_disk) if on_disk == *contents => {}
            Ok(_) => drift.push((path.clone(), Drift::Changed)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                drift.push((path.clone(), Drift::Missing));
            }
            Err(e) => return Err(Error::new(format!("cannot read {}: {e}", full.display()))),
        }
    }
    for dir in GENERATED_DIRS {
        for full in files_under(&root.join(dir))? {
            let path = full
                .strip_prefix(root)
                .expect("walked below root")
                .to_path_buf();
            if !files.contains_key(&path) {
                drift.push((path, Drift::Stale));
            }
        }
    }
    drift.sort();
    Ok(drift)
}

/// All non-directory entries below `dir`, recursively; none if it does not exist.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::new(format!("cannot list {}: {e}", dir.display()))),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let file_type = entry
                .file_type()
                .with_context(|| format!("cannot stat {}", entry.path().display()))?;
            if file_type.is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo test` fails when the committed man pages or completions drift
    /// from the CLI definition (the same check as `cargo codegen --check`).
    #[test]
    fn generated_files_are_up_to_date() {
        if let Err(e) = check(&crate::workspace_root()) {
            panic!("{e}");
        }
    }

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xtask-codegen-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn files(entries: &[(&str, &str)]) -> Files {
        entries
            .iter()
            .map(|(path, contents)| (PathBuf::from(path), contents.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn write_then_check_round_trips_and_removes_stale_files() {
        let tmp = TempDir::new("roundtrip");
        let root = &tmp.0;
        fs::create_dir_all(root.join("completions/old")).unwrap();
        fs::write(root.join("completions/old/gone.fish"), "old").unwrap();
        fs::create_dir_all(root.join("docs/man")).unwrap();
        fs::write(root.join("docs/man/apimail.1"), "outdated").unwrap();
        fs::write(root.join("docs/README.md"), "not generated, not ours").unwrap();
        let wanted = files(&[
            ("docs/man/apimail.1", "man"),
            ("completions/apimail.bash", "bash"),
        ]);

        let err = check_files(root, &wanted).unwrap_err().to_string();
        assert_eq!(
            err,
            "generated files are out of date: \
             completions/apimail.bash (missing), completions/old/gone.fish (stale), \
             docs/man/apimail.1 (changed)\n\
             hint: run `cargo codegen` and commit the result"
        );

        let changed = write_files(root, &wanted).unwrap();
        assert_eq!(changed.len(), 3);
        check_files(root, &wanted).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("docs/man/apimail.1")).unwrap(),
            "man"
        );
        assert!(!root.join("completions/old/gone.fish").exists());
        assert!(root.join("docs/README.md").exists());
        assert!(write_files(root, &wanted).unwrap().is_empty());
    }
}
