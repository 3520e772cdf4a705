//! Smoke tests of the binary itself. Having integration tests here also
//! makes `cargo test --workspace` build `target/<profile>/apimail`, which
//! the end-to-end tests in `tests/` run.

use std::process::Command;

fn apimail() -> Command {
    Command::new(env!("CARGO_BIN_EXE_apimail"))
}

#[test]
fn version_prints_the_package_version() {
    let out = apimail().arg("--version").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim(),
        format!("apimail {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_usage_exits_64_not_clap_default_2() {
    let out = apimail().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
}
