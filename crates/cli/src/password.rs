//! Reading a password from the person at the terminal, or from stdin.

use std::io::{BufRead, IsTerminal};

use anyhow::anyhow;
use apimail_core::Secret;

use crate::exit::{Exit, Failure};

/// The password: typed twice at a terminal (not echoed), else the first
/// line of standard input. Never from the command line.
pub(crate) fn read_password(command: &str) -> Result<Secret, Failure> {
    let unreadable = |e: std::io::Error| {
        Failure::new(
            Exit::NoInput,
            anyhow!(e).context("cannot read the password"),
        )
        .hint(format!(
            "type it at the prompt, or pipe it: printf '%s\\n' \"$PASS\" | {command}"
        ))
    };
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(unreadable)?;
        let again = rpassword::prompt_password("Again: ").map_err(unreadable)?;
        if first != again {
            return Err(Failure::new(Exit::Usage, anyhow!("the passwords differ"))
                .hint("run the command again and type the same password twice"));
        }
        return Ok(Secret::new(first));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(unreadable)?;
    Ok(Secret::new(line.trim_end_matches(['\r', '\n'])))
}
