//! `cargo xtask ci`: exactly what CI runs, step by step.
//!
//! Each step is announced on stderr as `==> name` and reports its elapsed time
//! when it finishes; the first failing step stops the run.

use std::path::Path;
use std::time::Instant;

use crate::{Error, Result, bench, cargo, codegen, output, run as run_cmd};

/// The fuzz crate: outside the workspace, with its own `Cargo.lock`. Optional.
const FUZZ_MANIFEST: &str = "fuzz/Cargo.toml";

/// Crates that would mean OpenSSL is linked; TLS must go through rustls.
const FORBIDDEN_CRATES: &[&str] = &["openssl-sys", "native-tls", "openssl"];

/// One CI step; runs from the workspace root.
type StepFn = fn(&Path) -> Result<()>;

/// Runs every CI step in order, stopping at the first failure.
pub(crate) fn run(root: &Path) -> Result<()> {
    let mut steps: Vec<(&str, StepFn)> = vec![
        ("test tools", test_tools),
        ("no-openssl", no_openssl),
        ("import loops", crate::imports::check),
        ("fmt", fmt),
        ("clippy", clippy),
        ("doc", doc),
        ("codegen --check", codegen_check),
        ("test", test),
        ("bench --quick", bench_quick),
    ];
    if has_fuzz(root) {
        steps.push(("fuzz build", fuzz_build));
    }

    let total = Instant::now();
    for (name, step) in steps {
        eprintln!("==> {name}");
        let started = Instant::now();
        let result = step(root);
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => eprintln!("==> {name}: ok ({secs:.1}s)"),
            Err(e) => {
                eprintln!("==> {name}: FAILED ({secs:.1}s)");
                return Err(e.context(format_args!("ci step `{name}` failed")));
            }
        }
    }
    eprintln!(
        "==> ci: all steps passed ({:.1}s)",
        total.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Debian packages of the real programs the sendmail tests drive.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("git-email", "/usr/lib/git-core/git-send-email"),
    ("bsd-mailx", "/usr/bin/bsd-mailx"),
];

/// Installs the programs the end-to-end tests run (git send-email and
/// bsd-mailx) when they are missing and this machine can install them.
fn test_tools(_root: &Path) -> Result<()> {
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(_, path)| !Path::new(path).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        eprintln!("git send-email and bsd-mailx are installed");
        return Ok(());
    }
    let root_user = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root_user || !Path::new("/usr/bin/apt-get").exists() {
        return Err(Error::new(format!(
            "the tests need {}, which are not installed; install them (Debian: sudo apt-get install {})",
            missing.join(" and "),
            missing.join(" ")
        )));
    }
    eprintln!("installing {}", missing.join(" "));
    let apt = || {
        let mut command = std::process::Command::new("apt-get");
        command.env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run_cmd(apt().args(["update", "-qq"]))?;
    run_cmd(
        apt()
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

fn has_fuzz(root: &Path) -> bool {
    root.join(FUZZ_MANIFEST).is_file()
}

/// Fails if OpenSSL or native-tls is anywhere in the normal/build dependency
/// graph, for any target, of the workspace and of the fuzz crate.
fn no_openssl(root: &Path) -> Result<()> {
    check_no_openssl(root, &["--workspace"], "the workspace")?;
    if has_fuzz(root) {
        check_no_openssl(root, &["--manifest-path", FUZZ_MANIFEST], "the fuzz crate")?;
    }
    Ok(())
}

fn check_no_openssl(root: &Path, selection: &[&str], what: &str) -> Result<()> {
    let tree = output(
        cargo()
            .current_dir(root)
            .arg("tree")
            .args(selection)
            .args(["--all-features", "--target", "all", "-e", "normal,build"])
            .args(["--prefix", "none", "--locked"]),
    )?;
    let found = forbidden_crates(&tree);
    let Some(first) = found.first() else {
        return Ok(());
    };
    let name = first.split(' ').next().unwrap_or(first);
    Err(Error::new(format!(
        "{what} depends on {}: OpenSSL must not be linked, use rustls for TLS",
        found.join(", ")
    ))
    .with_hint(format!(
        "`cargo tree {} --target all -e normal,build -i {name}` shows what pulls it in",
        selection.join(" ")
    )))
}

/// The forbidden crates (as `name version`) in `cargo tree --prefix none` output.
fn forbidden_crates(tree: &str) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter(|line| {
            FORBIDDEN_CRATES.iter().any(|krate| {
                line.strip_prefix(krate)
                    .is_some_and(|rest| rest.starts_with(' '))
            })
        })
        .map(|line| line.trim_end().trim_end_matches(" (*)").to_owned())
        .collect();
    found.sort();
    found.dedup();
    found
}

fn fmt(root: &Path) -> Result<()> {
    run_cmd(cargo().current_dir(root).args(["fmt", "--all", "--check"]))?;
    if has_fuzz(root) {
        run_cmd(cargo().current_dir(root).args([
            "fmt",
            "--manifest-path",
            FUZZ_MANIFEST,
            "--check",
        ]))?;
    }
    Ok(())
}

fn clippy(root: &Path) -> Result<()> {
    run_cmd(cargo().current_dir(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))
}

fn doc(root: &Path) -> Result<()> {
    run_cmd(
        cargo()
            .current_dir(root)
            .env("RUSTDOCFLAGS", "-D warnings")
            .args(["doc", "--workspace", "--no-deps", "--locked"]),
    )
}

fn codegen_check(root: &Path) -> Result<()> {
    codegen::check(root)
}

fn test(root: &Path) -> Result<()> {
    run_cmd(
        cargo()
            .current_dir(root)
            .args(["test", "--workspace", "--locked"]),
    )
}

/// Smoke-runs the benchmark (one run of everything, small sizes) so that
/// it cannot rot; no timing can fail it.
fn bench_quick(root: &Path) -> Result<()> {
    bench::run(root, &bench::Options::quick())
}

/// Compiles the fuzz targets (without running them) so they cannot rot.
fn fuzz_build(root: &Path) -> Result<()> {
    run_cmd(
        cargo()
            .current_dir(root)
            .args(["build", "--manifest-path", FUZZ_MANIFEST, "--locked"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_crates_are_found_by_exact_name() {
        let tree = "\
apimail v0.1.0 (/work/main/crates/cli)
openssl-sys v0.9.104
native-tls v0.2.12 (*)
openssl v0.10.68
openssl-probe v0.1.5
openssl-sys v0.9.104 (*)
rustls v0.23.20
";
        assert_eq!(
            forbidden_crates(tree),
            [
                "native-tls v0.2.12",
                "openssl v0.10.68",
                "openssl-sys v0.9.104"
            ]
        );
    }

    #[test]
    fn clean_tree_passes() {
        let tree = "apimail v0.1.0 (/w)\nrustls v0.23.20\nopenssl-probe v0.1.5\n";
        assert!(forbidden_crates(tree).is_empty());
    }
}
