//! `cargo xtask ci`: exactly what CI runs, step by step.
//!
//! Each step is announced on stderr as `==> name` and reports its elapsed time
//! when it finishes; the first failing step stops the run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{Error, Result, bench, cargo, codegen, output, run as run_cmd};

/// The fuzz crate: outside the workspace, with its own `Cargo.lock`. Optional.
const FUZZ_MANIFEST: &str = "fuzz/Cargo.toml";

/// How long CI runs each fuzz target, unless `APIMAIL_FUZZ_SECONDS` says
/// otherwise (0: build the targets only).
const FUZZ_SECONDS: u64 = 60;
const FUZZ_SECONDS_VAR: &str = "APIMAIL_FUZZ_SECONDS";

/// Targets that share one target's time, so adding the second kept CI's
/// total fuzz time the same: each runs half of the seconds.
const SHARED_BUDGET: [&str; 2] = ["relay_session", "relay_auth_data"];

/// libFuzzer's limit for one input: a slower one is reported as a hang.
const FUZZ_INPUT_TIMEOUT_SECONDS: u64 = 10;

/// Crates that would mean OpenSSL is linked; TLS must go through rustls.
const FORBIDDEN_CRATES: &[&str] = &["openssl-sys", "native-tls", "openssl"];

/// Set for the tests once PostgreSQL is installed: the store's tests then
/// fail rather than skip when no cluster starts (`apimail-test-postgres`).
const POSTGRES_REQUIRED_VAR: &str = "APIMAIL_PG_REQUIRED";

/// Set for the tests once `faketime` is installed (a test package below):
/// the merge's next-day test then fails rather than skips without
/// libfaketime (`tests/tests/merge.rs`).
const FAKETIME_REQUIRED_VAR: &str = "APIMAIL_FAKETIME_REQUIRED";

/// What Debian's `faketime` package installs (it depends on `libfaketime`,
/// whose `libfaketime.so.1` the tests preload).
const FAKETIME_BIN: &str = "/usr/bin/faketime";

/// One CI step; runs from the workspace root.
type StepFn = fn(&Path) -> Result<()>;

/// Runs every CI step in order, stopping at the first failure.
/// With `only` (comma-separated step names), runs just those steps.
pub(crate) fn run(root: &Path, only: Option<&str>) -> Result<()> {
    let mut steps: Vec<(&str, StepFn)> = vec![
        ("test tools", test_tools),
        ("no-openssl", no_openssl),
        ("import loops", crate::imports::check),
        ("account layer", crate::account_layer::check),
        ("provider names in core", crate::provider_names::check),
        ("README benchmarks", crate::readme_figures::check),
        ("fmt", fmt),
        ("clippy", clippy),
        ("doc", doc),
        ("package", package),
        ("codegen --check", codegen_check),
        ("test", test),
        ("bench --quick", bench_quick),
    ];
    if has_fuzz(root) {
        steps.push(("fuzz", fuzz));
    }
    if let Some(only) = only {
        let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
        if let Some(unknown) = wanted.iter().find(|w| !steps.iter().any(|(n, _)| n == *w)) {
            let names: Vec<&str> = steps.iter().map(|(n, _)| *n).collect();
            return Err(Error::new(format!(
                "no ci step `{unknown}`; the steps: {}",
                names.join(", ")
            )));
        }
        steps.retain(|(name, _)| wanted.contains(name));
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

/// Debian packages of the real programs the end-to-end tests drive: the
/// sendmail callers, the SMTP clients of the relay tests, the browser of
/// the console's (with node and npm for playwright-core), and libfaketime,
/// which runs apimail a day ahead for the merge's daily window.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("git-email", "/usr/lib/git-core/git-send-email"),
    ("bsd-mailx", "/usr/bin/bsd-mailx"),
    ("swaks", "/usr/bin/swaks"),
    ("msmtp", "/usr/bin/msmtp"),
    ("chromium", "/usr/bin/chromium"),
    // Japanese glyphs for the console's screenshots.
    (
        "fonts-ipafont-gothic",
        "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    ),
    ("nodejs", "/usr/bin/node"),
    ("npm", "/usr/bin/npm"),
    ("faketime", FAKETIME_BIN),
];

/// The console's browser tests: `package.json` and its lock file, whose
/// playwright-core `npm ci` installs into `node_modules/` there.
const BROWSER_TESTS: &str = "tests/browser";

/// Installs the programs the end-to-end tests run (git send-email,
/// bsd-mailx, swaks, msmtp, Chromium, node, faketime, and Debian's `postgresql` for
/// the PostgreSQL store's throwaway clusters) when they are missing and
/// this machine can install them, then the browser tests' playwright-core.
/// PostgreSQL alone is optional: where it cannot be installed, its tests
/// skip and say why.
fn test_tools(root: &Path) -> Result<()> {
    debian_packages()?;
    reserve_login_port();
    let dir = root.join(BROWSER_TESTS);
    if dir.join("node_modules/playwright-core").is_dir() {
        eprintln!("playwright-core is installed in {BROWSER_TESTS}");
        return Ok(());
    }
    eprintln!("installing playwright-core in {BROWSER_TESTS} (npm ci)");
    run_cmd(
        Command::new("npm")
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"]),
    )
    .map_err(|e| {
        e.with_hint(
            "npm needs the registry (registry.npmjs.org) once; see tests/browser/package.json",
        )
    })
}

/// The README's quick starts log in on apimail's default port, 48888, which
/// lies in Linux's ephemeral range: a test's outgoing connection may hold
/// it as its source port. Reserving it (as root) keeps those tests honest;
/// elsewhere they may rarely meet a busy port, and this says so.
fn reserve_login_port() {
    const FILE: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
    const PORT: &str = "48888";
    let Ok(reserved) = std::fs::read_to_string(FILE) else {
        return;
    };
    if reserved.trim().split(',').any(|p| p == PORT) {
        return;
    }
    let list = match reserved.trim() {
        "" => PORT.to_owned(),
        other => format!("{other},{PORT}"),
    };
    if std::fs::write(FILE, list).is_err() {
        eprintln!(
            "warning: cannot reserve port {PORT} ({FILE}); the quick-start tests may meet it busy"
        );
    }
}

fn debian_packages() -> Result<()> {
    let mut missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(_, path)| !Path::new(path).exists())
        .map(|(package, _)| *package)
        .collect();
    let root_user = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = Path::new("/usr/bin/apt-get").exists() && Path::new("/etc/debian_version").exists();
    if postgres_bin().is_none() {
        if root_user && apt {
            missing.push("postgresql");
        } else {
            eprintln!(
                "warning: PostgreSQL is not installed and cannot be installed here (not root on Debian): \
                 the PostgreSQL store's tests will be skipped"
            );
        }
    }
    if missing.is_empty() {
        eprintln!(
            "git send-email, bsd-mailx, swaks, msmtp, Chromium, a Japanese font, node, faketime and PostgreSQL are installed"
        );
        return Ok(());
    }
    if !root_user || !apt {
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

/// The directory of PostgreSQL's `initdb` from Debian's packages
/// (`/usr/lib/postgresql/<version>/bin`), if installed.
fn postgres_bin() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .find(|bin| bin.join("initdb").is_file())
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

/// The library crates, which must be publishable.
const LIBRARY_CRATES: &[&str] = &[
    "apimail-core",
    "apimail-gmail",
    "apimail-graph",
    "apimail-account",
    "apimail-mailer",
    "apimail-relay",
    "apimail-store-postgres",
    "apimail-merge",
];

/// The manifest keys crates.io shows, which each library crate must set.
const PACKAGE_METADATA: &[&str] = &[
    "description",
    "license",
    "repository",
    "keywords",
    "categories",
];

/// Checks that every library crate has its crates.io metadata and would
/// package (`cargo package --no-verify`: path dependencies carry versions).
fn package(root: &Path) -> Result<()> {
    let metadata: serde_json::Value =
        serde_json::from_str(&output(cargo().current_dir(root).args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--locked",
        ]))?)
        .map_err(|e| Error::new(format!("cargo metadata printed no JSON: {e}")))?;
    for krate in LIBRARY_CRATES {
        let package = metadata["packages"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["name"] == *krate))
            .ok_or_else(|| Error::new(format!("{krate} is not in the workspace")))?;
        let missing = missing_metadata(package);
        if !missing.is_empty() {
            return Err(Error::new(format!(
                "{krate} has no {} in its Cargo.toml",
                missing.join(", ")
            ))
            .with_hint("crates.io shows these keys; set them in the crate's [package]"));
        }
    }
    let mut command = cargo();
    command
        .current_dir(root)
        .args(["package", "--no-verify", "--locked", "--allow-dirty"]);
    for krate in LIBRARY_CRATES {
        command.args(["-p", krate]);
    }
    run_cmd(&mut command)
}

/// The [`PACKAGE_METADATA`] keys a `cargo metadata` package lacks.
fn missing_metadata(package: &serde_json::Value) -> Vec<&'static str> {
    PACKAGE_METADATA
        .iter()
        .copied()
        .filter(|key| match &package[*key] {
            serde_json::Value::String(text) => text.trim().is_empty(),
            serde_json::Value::Array(items) => items.is_empty(),
            _ => true,
        })
        .collect()
}

fn codegen_check(root: &Path) -> Result<()> {
    codegen::check(root)
}

/// Runs the tests with an empty `HOME` and no git configuration, so that a
/// test leaning on the developer's own files (a git identity, dotfiles, a
/// config under `~/.config`) fails here rather than on a fresh machine.
fn test(root: &Path) -> Result<()> {
    let home = tempfile::Builder::new()
        .prefix("apimail-ci-home-")
        .tempdir()
        .map_err(|e| Error::new(format!("cannot create an empty HOME for the tests: {e}")))?;
    let mut command = cargo();
    command
        .current_dir(root)
        .args(["test", "--workspace", "--locked"]);
    for (key, value) in isolated_env(home.path(), |key| std::env::var_os(key)) {
        command.env(key, value);
    }
    if postgres_bin().is_some() {
        // Installed: a cluster that does not start is a failure, not a skip.
        command.env(POSTGRES_REQUIRED_VAR, "1");
    }
    if Path::new(FAKETIME_BIN).exists() {
        // Installed with libfaketime: the next-day test must run.
        command.env(FAKETIME_REQUIRED_VAR, "1");
    }
    run_cmd(&mut command)
}

/// The variables of an isolated test run: `HOME` is `home`; the toolchain
/// stays where it was (`CARGO_HOME`, `RUSTUP_HOME`, by default under the
/// old home); git reads no global or system configuration.
fn isolated_env(
    home: &Path,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<(&'static str, std::ffi::OsString)> {
    let old_home = var("HOME").map(PathBuf::from);
    let kept = |key: &str, default: &str| {
        var(key)
            .filter(|v| !v.is_empty())
            .or_else(|| old_home.as_ref().map(|h| h.join(default).into_os_string()))
    };
    let mut env = vec![("HOME", home.as_os_str().to_owned())];
    for (key, default) in [("CARGO_HOME", ".cargo"), ("RUSTUP_HOME", ".rustup")] {
        if let Some(value) = kept(key, default) {
            env.push((key, value));
        }
    }
    env.push(("GIT_CONFIG_GLOBAL", "/dev/null".into()));
    env.push(("GIT_CONFIG_NOSYSTEM", "1".into()));
    env
}

/// Smoke-runs the benchmark (one run of everything, small sizes) so that
/// it cannot rot; no timing can fail it.
fn bench_quick(root: &Path) -> Result<()> {
    bench::run(root, &bench::Options::quick())
}

/// Runs every fuzz target `cargo fuzz list` names for a bounded time,
/// starting from its committed corpus, `fuzz/corpus/<target>/`. Inputs
/// that find new paths go to `fuzz/target/ci-corpus/<target>/`, so the
/// committed corpus stays as it is. A crash or hang fails the step and
/// leaves its input in `fuzz/artifacts/<target>/`.
///
/// libFuzzer needs nightly compiler flags: `RUSTC_BOOTSTRAP=1` allows them
/// on the stable toolchain.
pub(crate) fn fuzz(root: &Path) -> Result<()> {
    let seconds = fuzz_seconds(std::env::var(FUZZ_SECONDS_VAR).ok().as_deref())?;
    install_cargo_fuzz(root)?;
    let targets = output(cargo_fuzz(root).arg("list"))?;
    let targets: Vec<&str> = targets.split_whitespace().collect();
    // One build for all targets: they share every dependency.
    run_cmd(cargo_fuzz(root).arg("build"))?;
    if seconds == 0 {
        eprintln!("{FUZZ_SECONDS_VAR}=0: the fuzz targets are built, not run");
        return Ok(());
    }
    for target in targets {
        fuzz_one(root, target, target_seconds(target, seconds))?;
    }
    Ok(())
}

/// The seconds `target` runs: `seconds`, or half of it for the targets
/// of [`SHARED_BUDGET`] (at least one).
fn target_seconds(target: &str, seconds: u64) -> u64 {
    if SHARED_BUDGET.contains(&target) {
        (seconds / 2).max(1)
    } else {
        seconds
    }
}

fn fuzz_one(root: &Path, target: &str, seconds: u64) -> Result<()> {
    let fresh = root.join("fuzz/target/ci-corpus").join(target);
    std::fs::create_dir_all(&fresh)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", fresh.display())))?;
    let mut command = cargo_fuzz(root);
    command.args(["run", target]).arg(&fresh);
    let committed = root.join("fuzz/corpus").join(target);
    if committed.is_dir() {
        command.arg(&committed);
    } else {
        eprintln!(
            "warning: {} is missing: fuzzing `{target}` from nothing",
            committed.display()
        );
    }
    command.args([
        "--".to_owned(),
        format!("-max_total_time={seconds}"),
        format!("-timeout={FUZZ_INPUT_TIMEOUT_SECONDS}"),
    ]);

    let artifacts = root.join("fuzz/artifacts").join(target);
    let before = files_in(&artifacts);
    let Err(error) = run_cmd(&mut command) else {
        return Ok(());
    };
    let found: Vec<PathBuf> = files_in(&artifacts).difference(&before).cloned().collect();
    let Some(input) = found.first() else {
        return Err(error.with_hint(format!(
            "no input was saved in {}: the target did not build or libFuzzer \
             failed to start (see its output above)",
            artifacts.display()
        )));
    };
    let input = input.strip_prefix(root).unwrap_or(input).display();
    Err(Error::new(format!(
        "fuzz target `{target}` failed; the input is in {input}"
    ))
    .with_hint(format!(
        "reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run {target} {input}`, \
         shrink it with `cargo fuzz tmin {target} {input}`, fix the bug and add \
         the shrunk input as a regression test"
    )))
}

/// The seconds each fuzz target runs: `APIMAIL_FUZZ_SECONDS`, or the default.
fn fuzz_seconds(setting: Option<&str>) -> Result<u64> {
    let Some(setting) = setting else {
        return Ok(FUZZ_SECONDS);
    };
    setting.trim().parse().map_err(|_| {
        Error::new(format!(
            "{FUZZ_SECONDS_VAR}=`{setting}` is not a number of seconds"
        ))
        .with_hint(format!(
            "set {FUZZ_SECONDS_VAR} to whole seconds per target, e.g. 300, or 0 \
             to only build the targets (default {FUZZ_SECONDS})"
        ))
    })
}

/// `cargo fuzz`, with nightly flags allowed on a stable toolchain.
fn cargo_fuzz(root: &Path) -> Command {
    let mut command = cargo();
    command
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .arg("fuzz");
    command
}

/// Installs cargo-fuzz from crates.io when `cargo fuzz` is missing.
fn install_cargo_fuzz(root: &Path) -> Result<()> {
    let installed = cargo_fuzz(root)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        return Ok(());
    }
    eprintln!("cargo-fuzz is missing: installing it");
    run_cmd(cargo().args(["install", "cargo-fuzz", "--locked"]))
}

/// The files in `dir` (none if it does not exist).
fn files_in(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default()
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
    fn fuzz_seconds_default_and_override() {
        assert_eq!(fuzz_seconds(None).unwrap(), FUZZ_SECONDS);
        assert_eq!(fuzz_seconds(Some("300")).unwrap(), 300);
        assert_eq!(fuzz_seconds(Some("0")).unwrap(), 0);
        let error = fuzz_seconds(Some("1m")).unwrap_err().to_string();
        assert!(error.contains("APIMAIL_FUZZ_SECONDS=`1m`"), "{error}");
        assert!(error.contains("hint: "), "{error}");
    }

    #[test]
    fn the_relay_targets_share_one_targets_time() {
        assert_eq!(target_seconds("compose", 60), 60);
        assert_eq!(target_seconds("relay_session", 60), 30);
        assert_eq!(target_seconds("relay_auth_data", 60), 30);
        assert_eq!(target_seconds("relay_auth_data", 1), 1);
    }

    #[test]
    fn missing_package_metadata_is_named() {
        let package = serde_json::json!({
            "description": "x", "license": "MIT", "repository": null,
            "keywords": [], "categories": ["email"],
        });
        assert_eq!(missing_metadata(&package), ["repository", "keywords"]);
    }

    #[test]
    fn tests_run_with_an_empty_home_and_the_toolchain_where_it_was() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            isolated_env(Path::new("/tmp/empty"), move |key| {
                vars.iter().find(|(k, _)| *k == key).map(|(_, v)| v.into())
            })
            .into_iter()
            .map(|(k, v)| format!("{k}={}", v.to_string_lossy()))
            .collect::<Vec<_>>()
        };
        assert_eq!(
            env(&[("HOME", "/root")]),
            [
                "HOME=/tmp/empty",
                "CARGO_HOME=/root/.cargo",
                "RUSTUP_HOME=/root/.rustup",
                "GIT_CONFIG_GLOBAL=/dev/null",
                "GIT_CONFIG_NOSYSTEM=1",
            ]
        );
        let kept = env(&[
            ("HOME", "/home/ann"),
            ("CARGO_HOME", "/opt/cargo"),
            ("RUSTUP_HOME", "/opt/rustup"),
        ]);
        assert_eq!(
            kept[1..3],
            ["CARGO_HOME=/opt/cargo", "RUSTUP_HOME=/opt/rustup"]
        );
    }

    #[test]
    fn clean_tree_passes() {
        let tree = "apimail v0.1.0 (/w)\nrustls v0.23.20\nopenssl-probe v0.1.5\n";
        assert!(forbidden_crates(tree).is_empty());
    }
}
