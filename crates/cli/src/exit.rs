//! Exit codes (sysexits) and the `error:` / `caused by:` / `hint:` report.

use std::fmt;
use std::io::Write;

/// Process exit codes, from BSD's sysexits.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Ok = 0,
    /// 64: the command line is wrong.
    Usage = 64,
    /// 65: the message or an address is wrong.
    DataErr = 65,
    /// 66: an input file is missing or unreadable.
    NoInput = 66,
    /// 69: the provider refused for good.
    Unavailable = 69,
    /// 70: a bug.
    Software = 70,
    /// 75: try again later.
    TempFail = 75,
    /// 77: not authorized.
    NoPerm = 77,
    /// 78: configuration is missing or wrong.
    Config = 78,
}

/// A failure on its way to the user: what went wrong, the exit code, and
/// what to do about it.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub error: anyhow::Error,
    pub hint: Option<String>,
    pub notes: Vec<String>,
    silent: bool,
}

impl Failure {
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            exit,
            error: error.into(),
            hint: None,
            notes: Vec::new(),
            silent: false,
        }
    }

    pub fn hint(mut self, hint: impl fmt::Display) -> Self {
        self.hint = Some(hint.to_string());
        self
    }

    /// Adds background shown after the hint, as `note:` lines.
    pub fn note(mut self, note: impl fmt::Display) -> Self {
        self.notes.push(note.to_string());
        self
    }

    /// A failure already reported elsewhere (by the panic hook).
    pub fn silent(mut self) -> Self {
        self.silent = true;
        self
    }

    /// Writes the report to stderr.
    pub fn report(&self) {
        if self.silent {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        // Nothing useful can be done if stderr itself is gone.
        let _ = writeln!(stderr, "error: {}", self.error);
        // A cause already said in full by the line before it adds nothing.
        let mut said = self.error.to_string();
        for cause in self.error.chain().skip(1) {
            let text = cause.to_string();
            if !said.ends_with(&text) {
                let _ = writeln!(stderr, "caused by: {text}");
            }
            said = text;
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(stderr, "hint: {hint}");
        }
        for note in &self.notes {
            let _ = writeln!(stderr, "note: {note}");
        }
    }
}

/// Attaches an exit code to a fallible result.
pub trait ExitContext<T> {
    fn exit(self, exit: Exit) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> ExitContext<T> for Result<T, E> {
    fn exit(self, exit: Exit) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(exit, e))
    }
}
