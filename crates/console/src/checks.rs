//! What the checks page shows: the process's own checks ([`Checks`]: the
//! CLI runs `apimail doctor`'s) and their results.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Passed.
    Ok,
    /// Passed, with something to do before it fails.
    Warn,
    /// Failed.
    Fail,
}

/// One check: its name, outcome, what it found and what to do.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// `configuration`, `authorization`, `network`, ...
    pub name: String,
    /// How it came out.
    pub status: CheckStatus,
    /// What it found.
    pub detail: String,
    /// What to do, if anything.
    pub hint: Option<String>,
}

/// A future with the checks' results.
pub type Checking<'a> = Pin<Box<dyn Future<Output = Vec<CheckResult>> + Send + 'a>>;

/// What runs the checks (the CLI: `apimail doctor`'s).
pub trait Checks: Send + Sync {
    /// Runs every check for `account` (`None`: the default account).
    fn run<'a>(&'a self, account: Option<&'a str>) -> Checking<'a>;
}
