//! Any command line: sendmail argument parsing never panics, and what it
//! accepts keeps its promises.
//!
//! The input is an argv as exec passes it: NUL-separated arguments, the
//! first being the program name (argv\[0\]), which picks `sendmail`,
//! `mailq` or `newaliases` as `apimail` does.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;

// The CLI's own parser, compiled here on its own: it needs only std, and the
// whole `apimail` crate (both providers' clients) would make the
// sanitizer build several times longer.
#[allow(dead_code)]
#[path = "../../crates/cli/src/sendmail_args.rs"]
mod sendmail_args;

use sendmail_args::{Mode, ProgramName, mode_for_program_name, parse_as};

fuzz_target!(|data: &[u8]| {
    let mut argv = data
        .split(|&b| b == 0)
        .map(|arg| OsString::from_vec(arg.to_vec()));
    let Some(argv0) = argv.next() else { return };
    let args: Vec<OsString> = argv.collect();
    let program = mode_for_program_name(&argv0).unwrap_or(ProgramName::Sendmail);

    let invocation = match parse_as(program, &args) {
        Ok(invocation) => invocation,
        Err(usage) => {
            assert!(!usage.message.is_empty() && !usage.hint.is_empty());
            return;
        }
    };
    assert_ne!(program, ProgramName::Newaliases, "newaliases always fails");
    // No header smuggling: what reaches the message is single-line.
    let values = invocation
        .recipients
        .iter()
        .chain(&invocation.envelope_from)
        .chain(&invocation.full_name);
    for value in values {
        assert!(
            !value.chars().any(|c| c.is_control() && c != '\t'),
            "control character in {value:?}"
        );
    }
    assert!(invocation.recipients.iter().all(|r| !r.trim().is_empty()));
    match invocation.mode {
        Mode::Deliver => assert!(
            !invocation.recipients.is_empty() || invocation.read_recipients_from_headers,
            "delivering with no recipient"
        ),
        Mode::ListQueue | Mode::FlushQueue => assert!(
            invocation.recipients.is_empty() && !invocation.read_recipients_from_headers,
            "a queue command with recipients"
        ),
        Mode::Help | Mode::Version => {}
    }
    let _ = invocation.notes();
});
