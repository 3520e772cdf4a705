//! The `sendmail` command line, parsed the way sendmail(8) and Postfix do.
//!
//! Cron, git send-email, mutt, mailx, PHP's `mail()`, logwatch, smartd and
//! many scripts run `/usr/sbin/sendmail` with sendmail's own syntax: getopt
//! style single-letter options, some of which take an argument either
//! attached (`-fADDR`) or as the next argument (`-f ADDR`), clustered
//! booleans (`-ti`), `-o` options that set sendmail configuration, and
//! recipient addresses as operands. That syntax is not clap's, so this
//! module parses it by hand, with std only.
//!
//! Parsing is pure: [`parse`] and [`parse_as`] turn arguments into an
//! [`Invocation`] or a [`UsageError`] (a message plus a hint), and
//! [`mode_for_program_name`] tells whether the binary was run through a
//! `sendmail`, `mailq` or `newaliases` link.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::Path;

/// The help for `apimail sendmail --help` (and `sendmail --help` through a
/// link).
pub const HELP: &str = "\
apimail as sendmail: a drop-in sendmail(8) that sends through an HTTPS mail API

Usage:
  sendmail [options] [--] recipient...  < message
  sendmail -t [options] [recipient...]  < message
  sendmail -bp        (or: mailq)       list the queued messages
  sendmail -q                           send the queued messages now
  apimail sendmail ...                  the same, without a link

apimail reads one complete message (headers, a blank line, the body) from
standard input and sends it through the account's mail API (Gmail or
Microsoft Graph). It takes the options that cron, mail programs and scripts
pass to sendmail.

Modes:
  -bm             send the message on standard input (the default)
  -bp             list the queued messages, like mailq
  -q              send the queued messages now, like `apimail queue flush`;
                  an interval (-q30m) is ignored: the queue is flushed once
  --help          print this help
  --version       print the version
  Not supported: -bs (SMTP on standard input), -bd and -bD (daemon), -bi and
  -I (newaliases), -bt (address test), -bv (verify), -bh, -bH, -bP, and
  queue selection (-qR, -qS, -qI, -qG, -qQ, -qL).

Options:
  -t              also send to the To, Cc and Bcc addresses in the message
  -i, -oi         a line holding only \".\" does not end the message (without
                  -i, such a line ends it, as in sendmail)
  -f ADDR, -r ADDR
                  the sender (envelope from); used as the From address when
                  the message has none. -f \"\" and -f \"<>\" mean no sender
  -F NAME         the sender's full name, for a From header apimail adds
  -v              verbose: report what apimail does
  --              end of options: every later argument is a recipient
  An option's argument may be attached (-fADDR) or separate (-f ADDR), and
  options without arguments may be combined (-ti, -tf ADDR).

Accepted and ignored (they tune sendmail's own delivery):
  -oX... and -O Option=value (any sendmail option, e.g. -oem, -odi, -odb),
  -B 8BITMIME, -N dsn, -R ret, -V envid, -h hops, -e mode, -L tag, -p proto,
  -A c|m, -U, -m, -n, -G. With -v, apimail lists the ones it ignored.

Recipients:
  Recipients named as arguments get the message. Those missing from the
  To, Cc and Bcc headers are added to the message's one Bcc field.
  With -t, the To, Cc and Bcc addresses in the message get it as well as the
  recipients named as arguments.
  Without -t, at least one recipient must be named. The APIs deliver to every
  address in the To, Cc and Bcc headers, so header recipients not named as
  arguments still receive the mail: apimail prints a warning about them.
  A resent message (Resent-To/-Cc/-Bcc, e.g. mutt's bounce) goes only to the
  recipients of this send: its To and Cc become Original-To and Original-Cc.
  Local names such as root (cron's default) go to their aliases, in the
  headers too: $APIMAIL_ALIASES, else the config key `aliases`, else
  /etc/aliases, in aliases(5) format (root: you@example.com).

Account:
  The message is sent through the account named by the APIMAIL_ACCOUNT
  environment variable, else through the configured default account.

Examples:
  cron (set MAILTO in the crontab; cron runs):
    sendmail -FCronDaemon -i -B8BITMIME -oem user
  a script:
    printf 'Subject: backup done\\n\\nAll good.\\n' | sendmail -i you@example.com
  a message with its own recipients:
    sendmail -t -i < message.eml
  git send-email (it adds -i, -f and the recipients):
    git config --global sendemail.sendmailcmd \"apimail sendmail\"
  mailx (~/.mailrc; s-nail calls the setting mta), through a link in ~/bin:
    ln -s \"$(command -v apimail)\" ~/bin/sendmail
    set sendmail=/home/you/bin/sendmail
  install as the system's sendmail (as root):
    ln -s \"$(command -v apimail)\" /usr/sbin/sendmail
    ln -s \"$(command -v apimail)\" /usr/bin/mailq
";

/// What a sendmail command line asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Send the message on standard input (`-bm`, the default).
    #[default]
    Deliver,
    /// List the queue (`-bp`, or run as `mailq`).
    ListQueue,
    /// Send the queued messages now (`-q`, `-q30m`: the interval is ignored).
    FlushQueue,
    /// `--help`: print [`HELP`].
    Help,
    /// `--version`: print the version.
    Version,
}

/// A parsed sendmail command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// What to do.
    pub mode: Mode,
    /// The recipients named as arguments, as given. One argument may hold a
    /// comma-separated list, as sendmail allows: the caller parses them.
    pub recipients: Vec<String>,
    /// `-t`: also send to the To, Cc and Bcc addresses in the message.
    pub read_recipients_from_headers: bool,
    /// `-i`, `-oi` (or `-O IgnoreDots`): a line holding only "." does not
    /// end the message.
    pub ignore_dots: bool,
    /// `-f ADDR`, `-r ADDR`: the envelope sender. An empty argument is
    /// stored as `<>` (no sender), as sendmail does. When given twice the
    /// last one wins, as in Postfix; the earlier one goes to `ignored`.
    pub envelope_from: Option<String>,
    /// `-F NAME`: the sender's full name (`None` when empty).
    pub full_name: Option<String>,
    /// `-v`.
    pub verbose: bool,
    /// Options accepted and ignored, as given (`-oem`, `-B8BITMIME`,
    /// `-B 8BITMIME`, `-q30m`, ...), for a debug note: see [`Invocation::notes`].
    pub ignored: Vec<String>,
}

impl Invocation {
    /// Notes for the log about what was accepted but ignored: the ignored
    /// options, and a `-q` interval.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let intervals: Vec<&str> = self
            .ignored
            .iter()
            .map(String::as_str)
            .filter(|given| is_queue_interval_option(given))
            .collect();
        if !intervals.is_empty() {
            notes.push(format!(
                "{}: the queue interval is ignored; apimail sends the queued messages once",
                intervals.join(", ")
            ));
        }
        let others: Vec<&str> = self
            .ignored
            .iter()
            .map(String::as_str)
            .filter(|given| !is_queue_interval_option(given))
            .collect();
        if !others.is_empty() {
            notes.push(format!(
                "ignored sendmail options (accepted for compatibility): {}",
                others.join(" ")
            ));
        }
        notes
    }
}

fn is_queue_interval_option(given: &str) -> bool {
    given.starts_with("-q") && given != "-qf"
}

/// A command line apimail cannot honour: what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    /// What is wrong, e.g. "sendmail mode -bs (SMTP on standard input) is
    /// not supported".
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl UsageError {
    fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        UsageError {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

/// The sendmail-family names apimail answers to when run through a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramName {
    /// `sendmail`: parse sendmail arguments, deliver by default.
    Sendmail,
    /// `mailq`: like `sendmail -bp`.
    Mailq,
    /// `newaliases`: not supported ([`parse_as`] returns its error).
    Newaliases,
}

/// Which sendmail-family program `argv0` names, if any: its final path
/// component is `sendmail`, `mailq` or `newaliases` (an `.exe` suffix is
/// allowed). Any other name, `apimail` included, gives `None`.
pub fn mode_for_program_name(argv0: &OsStr) -> Option<ProgramName> {
    let name = Path::new(argv0).file_name()?.to_str()?;
    let name = match name.len().checked_sub(4) {
        Some(cut) if name.is_char_boundary(cut) && name[cut..].eq_ignore_ascii_case(".exe") => {
            &name[..cut]
        }
        _ => name,
    };
    match name {
        "sendmail" => Some(ProgramName::Sendmail),
        "mailq" => Some(ProgramName::Mailq),
        "newaliases" => Some(ProgramName::Newaliases),
        _ => None,
    }
}

/// Parses sendmail arguments (`args` excludes argv\[0\]), as `sendmail` or
/// `apimail sendmail`.
pub fn parse(args: &[OsString]) -> Result<Invocation, UsageError> {
    parse_as(ProgramName::Sendmail, args)
}

/// Parses sendmail arguments for a program run through a link: as `mailq`
/// the default mode is [`Mode::ListQueue`]; as `newaliases` the answer is
/// always an error, since apimail has no aliases database.
pub fn parse_as(program: ProgramName, args: &[OsString]) -> Result<Invocation, UsageError> {
    let mode = match program {
        ProgramName::Sendmail => Mode::Deliver,
        ProgramName::Mailq => Mode::ListQueue,
        ProgramName::Newaliases => {
            return Err(UsageError::new(
                "`newaliases` is not supported: apimail has no aliases database",
                "nothing needs rebuilding; write full addresses where aliases were used",
            ));
        }
    };
    let args = args
        .iter()
        .map(|arg| {
            arg.to_str().ok_or_else(|| {
                UsageError::new(
                    format!("argument `{}` is not valid UTF-8", arg.to_string_lossy()),
                    "pass addresses and names as UTF-8 text",
                )
            })
        })
        .collect::<Result<Vec<&str>, _>>()?;

    // --help and --version win wherever they appear before `--`.
    for &arg in args.iter().take_while(|&&arg| arg != "--") {
        match arg {
            "--help" => return Ok(special(Mode::Help)),
            "--version" => return Ok(special(Mode::Version)),
            _ => {}
        }
    }

    let mut parser = Parser {
        invocation: Invocation {
            mode,
            ..Invocation::default()
        },
        args: &args,
        next: 0,
    };
    parser.run()?;
    let invocation = parser.invocation;
    check(&invocation)?;
    Ok(invocation)
}

fn special(mode: Mode) -> Invocation {
    Invocation {
        mode,
        ..Invocation::default()
    }
}

struct Parser<'a> {
    invocation: Invocation,
    args: &'a [&'a str],
    /// Index of the next argument to read.
    next: usize,
}

impl<'a> Parser<'a> {
    fn run(&mut self) -> Result<(), UsageError> {
        let mut options_done = false;
        while let Some(&arg) = self.args.get(self.next) {
            self.next += 1;
            if options_done {
                self.recipient(arg)?;
            } else if arg == "--" {
                options_done = true;
            } else if arg == "-" {
                return Err(UsageError::new(
                    "`-` is neither a sendmail option nor a recipient",
                    "the message is always read from standard input: drop the `-`",
                ));
            } else if arg.starts_with("--") {
                return Err(unknown_option(arg));
            } else if let Some(cluster) = arg.strip_prefix('-') {
                self.cluster(cluster)?;
            } else {
                // Permissive, like GNU getopt: operands may come before or
                // between options.
                self.recipient(arg)?;
            }
        }
        Ok(())
    }

    /// One argument starting with `-`, without the dash: getopt-style
    /// booleans, ended by an option that takes the rest as its argument.
    fn cluster(&mut self, cluster: &'a str) -> Result<(), UsageError> {
        for (at, letter) in cluster.char_indices() {
            let rest = &cluster[at + letter.len_utf8()..];
            match letter {
                't' => self.invocation.read_recipients_from_headers = true,
                'i' => self.invocation.ignore_dots = true,
                'v' => self.invocation.verbose = true,
                // -U initial submission, -m send to me too, -n no aliasing,
                // -G gateway submission: nothing to do for an API.
                'U' | 'm' | 'n' | 'G' => self.invocation.ignored.push(format!("-{letter}")),
                'q' => return self.queue(rest),
                'I' => {
                    return Err(UsageError::new(
                        "sendmail option -I (initialize the alias database, like newaliases) \
                         is not supported",
                        "apimail has no aliases database: drop -I",
                    ));
                }
                _ => {
                    let Some(what) = argument_of(letter) else {
                        return Err(unknown_option(&format!("-{letter}")));
                    };
                    let (value, given) = if rest.is_empty() {
                        let Some(&value) = self.args.get(self.next) else {
                            return Err(UsageError::new(
                                format!("option -{letter} needs an argument: {what}"),
                                format!(
                                    "write -{letter} VALUE or -{letter}VALUE, before the recipients"
                                ),
                            ));
                        };
                        self.next += 1;
                        (value, format!("-{letter} {value}"))
                    } else {
                        (rest, format!("-{letter}{rest}"))
                    };
                    return self.with_argument(letter, value, given);
                }
            }
        }
        Ok(())
    }

    fn with_argument(
        &mut self,
        letter: char,
        value: &str,
        given: String,
    ) -> Result<(), UsageError> {
        match letter {
            'f' | 'r' => {
                no_line_breaks(value, &format!("the -{letter} address"))?;
                let from = if value.is_empty() { "<>" } else { value };
                if let Some(earlier) = self.invocation.envelope_from.replace(from.to_owned()) {
                    // Postfix keeps the last; keep a trace of the earlier.
                    self.invocation.ignored.push(format!("-f{earlier}"));
                }
            }
            'F' => {
                no_line_breaks(value, "the -F name")?;
                self.invocation.full_name = (!value.is_empty()).then(|| value.to_owned());
            }
            'b' => self.invocation.mode = operation_mode(value)?,
            'o' => match value.strip_prefix('i') {
                Some(setting) => self.invocation.ignore_dots = sendmail_bool(setting),
                None => self.invocation.ignored.push(given),
            },
            'O' => {
                let (name, setting) = value.split_once('=').unwrap_or((value, ""));
                if name.trim().eq_ignore_ascii_case("IgnoreDots") {
                    self.invocation.ignore_dots = sendmail_bool(setting.trim());
                } else {
                    self.invocation.ignored.push(given);
                }
            }
            _ => self.invocation.ignored.push(given),
        }
        Ok(())
    }

    /// `-q` and what is attached to it (sendmail's optional argument).
    fn queue(&mut self, rest: &str) -> Result<(), UsageError> {
        let selection = rest.strip_prefix('!').unwrap_or(rest);
        if selection.starts_with(['R', 'S', 'I', 'G', 'Q', 'L']) {
            return Err(UsageError::new(
                format!("queue selection (-q{rest}) is not supported"),
                "run `apimail queue flush` to send every queued message",
            ));
        }
        let interval = rest
            .strip_prefix('p')
            .or_else(|| rest.strip_prefix('f'))
            .unwrap_or(rest);
        if !(interval.is_empty() || is_interval(interval)) {
            return Err(UsageError::new(
                format!("unknown queue option -q{rest}"),
                "use -q alone to send the queued messages now (an interval such as \
                 -q30m is accepted and ignored)",
            ));
        }
        if !rest.is_empty() {
            self.invocation.ignored.push(format!("-q{rest}"));
        }
        self.invocation.mode = Mode::FlushQueue;
        Ok(())
    }

    fn recipient(&mut self, arg: &str) -> Result<(), UsageError> {
        if arg.trim().is_empty() {
            return Err(UsageError::new(
                "an empty recipient argument",
                "check the variable or setting that should hold the address",
            ));
        }
        no_line_breaks(arg, &format!("recipient `{}`", arg.escape_debug()))?;
        self.invocation.recipients.push(arg.to_owned());
        Ok(())
    }
}

/// Options that take an argument, and what that argument is, for the
/// "needs an argument" error.
fn argument_of(letter: char) -> Option<&'static str> {
    Some(match letter {
        'f' | 'r' => "the sender address",
        'F' => "the sender's full name",
        'b' => "a mode letter, such as m (send) or p (list the queue)",
        'o' => "a sendmail option letter and its value, such as i or em",
        'O' => "a sendmail option, such as ErrorMode=m",
        'B' => "a body type, 7BIT or 8BITMIME",
        'N' => "a delivery status notification list, such as failure,delay or never",
        'R' => "what a bounce returns, hdrs or full",
        'V' => "an envelope id",
        'h' => "a hop count",
        'e' => "an error mode letter",
        'L' => "a syslog tag",
        'p' => "a protocol, such as UUCP or HTTP:host",
        'A' => "c or m, the configuration file to use",
        _ => return None,
    })
}

/// sendmail's atobool: empty or starting with t or y is true.
fn sendmail_bool(setting: &str) -> bool {
    setting.is_empty() || setting.starts_with(['t', 'T', 'y', 'Y'])
}

/// A queue interval as sendmail's convtime reads it: digits, each group
/// optionally followed by a unit (s, m, h, d, w): `30m`, `1h30m`, `15`.
fn is_interval(text: &str) -> bool {
    let mut digits = 0;
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits += 1;
        } else if matches!(c, 's' | 'm' | 'h' | 'd' | 'w') && digits > 0 {
            digits = 0;
        } else {
            return false;
        }
    }
    !text.is_empty() && text.starts_with(|c: char| c.is_ascii_digit())
}

/// The mode named by `-bX`.
fn operation_mode(value: &str) -> Result<Mode, UsageError> {
    const NOT_A_SERVER: &str =
        "apimail is not a mail server: it sends the message piped to it and exits";
    let unsupported = |what: &str, hint: &str| {
        Err(UsageError::new(
            format!("sendmail mode -b{value} ({what}) is not supported"),
            hint,
        ))
    };
    match value {
        "m" => Ok(Mode::Deliver),
        "p" => Ok(Mode::ListQueue),
        "s" => unsupported(
            "SMTP on standard input",
            "apimail reads one message from standard input: drop -bs and pipe the \
             message itself, e.g. to `sendmail -t -i`",
        ),
        "d" => unsupported("run as an SMTP daemon", NOT_A_SERVER),
        "D" => unsupported("run as an SMTP daemon in the foreground", NOT_A_SERVER),
        "i" => unsupported(
            "initialize the alias database, like newaliases",
            "apimail has no aliases database: nothing needs rebuilding",
        ),
        "t" => unsupported(
            "address test mode",
            "apimail does not rewrite addresses: there is nothing to test",
        ),
        "v" => unsupported(
            "verify addresses",
            "the mail APIs cannot check an address without sending: send a test message",
        ),
        "h" => unsupported(
            "print the persistent host status",
            "apimail keeps no host status; -bp lists the queued messages",
        ),
        "H" => unsupported(
            "purge the persistent host status",
            "apimail keeps no host status: there is nothing to purge",
        ),
        "P" => unsupported(
            "print the number of queued messages",
            "use -bp (or mailq) to list the queued messages",
        ),
        "a" => unsupported("ARPANET protocols on standard input", NOT_A_SERVER),
        "C" => unsupported(
            "check the sendmail configuration",
            "apimail has no sendmail configuration; `apimail --help` lists its own commands",
        ),
        _ => Err(UsageError::new(
            format!("unknown sendmail mode -b{value}"),
            "apimail supports -bm (send the message, the default) and -bp (list the queue)",
        )),
    }
}

fn unknown_option(option: &str) -> UsageError {
    UsageError::new(
        format!("unknown sendmail option `{option}`"),
        "apimail accepts the options cron, mail programs and scripts use; \
         see `apimail sendmail --help`",
    )
}

/// A line break in an address or name could smuggle headers into the
/// message.
fn no_line_breaks(value: &str, what: &str) -> Result<(), UsageError> {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(UsageError::new(
            format!("{what} contains a line break or control character"),
            "pass a single-line value",
        ));
    }
    Ok(())
}

/// Checks that the options fit together, as Postfix does.
fn check(invocation: &Invocation) -> Result<(), UsageError> {
    let (name, flag) = match invocation.mode {
        Mode::Deliver => {
            if invocation.recipients.is_empty() && !invocation.read_recipients_from_headers {
                return Err(UsageError::new(
                    "no recipients: name them as arguments, or use -t",
                    "pass the recipient addresses after the options, or -t to send to the \
                     message's To, Cc and Bcc addresses",
                ));
            }
            return Ok(());
        }
        Mode::ListQueue => ("listing the queue", "-bp"),
        Mode::FlushQueue => ("flushing the queue", "-q"),
        Mode::Help | Mode::Version => return Ok(()),
    };
    if let Some(first) = invocation.recipients.first() {
        return Err(UsageError::new(
            format!("{name} ({flag}) takes no recipients, but `{first}` was given"),
            format!("drop the addresses, or drop {flag} to send a message"),
        ));
    }
    if invocation.read_recipients_from_headers {
        return Err(UsageError::new(
            format!("-t only applies when sending a message, not when {name} ({flag})"),
            format!("drop -t, or drop {flag} to send a message"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Vec<OsString> {
        line.iter().map(OsString::from).collect()
    }

    fn ok(line: &[&str]) -> Invocation {
        parse(&args(line)).unwrap_or_else(|e| panic!("{line:?}: {} ({})", e.message, e.hint))
    }

    fn err(line: &[&str]) -> UsageError {
        match parse(&args(line)) {
            Ok(invocation) => panic!("{line:?} parsed: {invocation:?}"),
            Err(error) => error,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn deliver_to(recipients: &[&str]) -> Invocation {
        Invocation {
            recipients: strings(recipients),
            ..Invocation::default()
        }
    }

    // Real callers.

    #[test]
    fn cron() {
        assert_eq!(
            ok(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "user"]),
            Invocation {
                full_name: Some("CronDaemon".into()),
                ignore_dots: true,
                ignored: strings(&["-B8BITMIME", "-oem"]),
                ..deliver_to(&["user"])
            }
        );
    }

    #[test]
    fn cronie_with_separate_arguments() {
        assert_eq!(
            ok(&["-F", "Cron Daemon", "-i", "-B", "8BITMIME", "-oem", "root"]),
            Invocation {
                full_name: Some("Cron Daemon".into()),
                ignore_dots: true,
                ignored: strings(&["-B 8BITMIME", "-oem"]),
                ..deliver_to(&["root"])
            }
        );
    }

    #[test]
    fn git_send_email() {
        assert_eq!(
            ok(&["-i", "user@example.com", "other@example.com"]),
            Invocation {
                ignore_dots: true,
                ..deliver_to(&["user@example.com", "other@example.com"])
            }
        );
        assert_eq!(
            ok(&[
                "-i",
                "-f",
                "from@x",
                "user@example.com",
                "other@example.com"
            ]),
            Invocation {
                ignore_dots: true,
                envelope_from: Some("from@x".into()),
                ..deliver_to(&["user@example.com", "other@example.com"])
            }
        );
    }

    #[test]
    fn mutt() {
        assert_eq!(
            ok(&["-oem", "-oi", "--", "a@x", "b@x"]),
            Invocation {
                ignore_dots: true,
                ignored: strings(&["-oem"]),
                ..deliver_to(&["a@x", "b@x"])
            }
        );
    }

    #[test]
    fn mailx_and_s_nail() {
        assert_eq!(
            ok(&["-i", "--", "user"]),
            Invocation {
                ignore_dots: true,
                ..deliver_to(&["user"])
            }
        );
        assert_eq!(
            ok(&["-oi", "-oem", "user"]),
            Invocation {
                ignore_dots: true,
                ignored: strings(&["-oem"]),
                ..deliver_to(&["user"])
            }
        );
        assert_eq!(
            ok(&["-i", "-f", "me@example.com", "--", "user"]),
            Invocation {
                ignore_dots: true,
                envelope_from: Some("me@example.com".into()),
                ..deliver_to(&["user"])
            }
        );
    }

    #[test]
    fn php_mail() {
        let default = Invocation {
            read_recipients_from_headers: true,
            ignore_dots: true,
            ..Invocation::default()
        };
        assert_eq!(ok(&["-t", "-i"]), default);
        assert_eq!(
            ok(&["-t", "-i", "-fbounce@example.com"]),
            Invocation {
                envelope_from: Some("bounce@example.com".into()),
                ..default.clone()
            }
        );
    }

    #[test]
    fn postfix_style() {
        assert_eq!(
            ok(&["-t", "-i", "-f", "root"]),
            Invocation {
                read_recipients_from_headers: true,
                ignore_dots: true,
                envelope_from: Some("root".into()),
                ..Invocation::default()
            }
        );
    }

    #[test]
    fn list_queue() {
        assert_eq!(
            ok(&["-bp"]),
            Invocation {
                mode: Mode::ListQueue,
                ..Invocation::default()
            }
        );
        assert_eq!(ok(&["-b", "p"]).mode, Mode::ListQueue);
        assert_eq!(ok(&["-v", "-bp"]).mode, Mode::ListQueue);
    }

    #[test]
    fn flush_queue() {
        assert_eq!(
            ok(&["-q"]),
            Invocation {
                mode: Mode::FlushQueue,
                ..Invocation::default()
            }
        );
    }

    #[test]
    fn logwatch_smartd_mdadm() {
        assert_eq!(
            ok(&["-oi", "-t"]),
            Invocation {
                read_recipients_from_headers: true,
                ignore_dots: true,
                ..Invocation::default()
            }
        );
    }

    #[test]
    fn verbose() {
        assert_eq!(
            ok(&["-v", "-t"]),
            Invocation {
                read_recipients_from_headers: true,
                verbose: true,
                ..Invocation::default()
            }
        );
    }

    // Option syntax.

    #[test]
    fn attached_and_separate_arguments_agree() {
        for (attached, separate) in [
            (vec!["-fa@x"], vec!["-f", "a@x"]),
            (vec!["-ra@x"], vec!["-r", "a@x"]),
            (vec!["-FName"], vec!["-F", "Name"]),
        ] {
            let mut a = attached.clone();
            a.push("to@x");
            let mut s = separate.clone();
            s.push("to@x");
            assert_eq!(ok(&a), ok(&s), "{attached:?} vs {separate:?}");
        }
        assert_eq!(
            ok(&["-r", "a@x", "to@x"]).envelope_from.as_deref(),
            Some("a@x")
        );
    }

    #[test]
    fn ignored_options_keep_their_given_form() {
        let invocation = ok(&[
            "-B8BITMIME",
            "-B",
            "7BIT",
            "-Nsuccess,failure",
            "-N",
            "never",
            "-Rhdrs",
            "-R",
            "full",
            "-Venvid1",
            "-V",
            "envid2",
            "-h3",
            "-h",
            "4",
            "-em",
            "-e",
            "q",
            "-Ltag",
            "-pSMTP:host",
            "-Ac",
            "-U",
            "-m",
            "-n",
            "-G",
            "-odi",
            "-odb",
            "-oQ/var/spool/x",
            "-o",
            "em",
            "-OErrorMode=m",
            "-O",
            "DeliveryMode=b",
            "to@x",
        ]);
        assert_eq!(
            invocation.ignored,
            strings(&[
                "-B8BITMIME",
                "-B 7BIT",
                "-Nsuccess,failure",
                "-N never",
                "-Rhdrs",
                "-R full",
                "-Venvid1",
                "-V envid2",
                "-h3",
                "-h 4",
                "-em",
                "-e q",
                "-Ltag",
                "-pSMTP:host",
                "-Ac",
                "-U",
                "-m",
                "-n",
                "-G",
                "-odi",
                "-odb",
                "-oQ/var/spool/x",
                "-o em",
                "-OErrorMode=m",
                "-O DeliveryMode=b",
            ])
        );
        assert_eq!(invocation.recipients, strings(&["to@x"]));
        assert!(!invocation.ignore_dots);
    }

    #[test]
    fn oi_forms() {
        assert!(ok(&["-oi", "x"]).ignore_dots);
        assert!(ok(&["-o", "i", "x"]).ignore_dots);
        assert!(ok(&["-oiTrue", "x"]).ignore_dots);
        assert!(!ok(&["-i", "-oiFalse", "x"]).ignore_dots);
        assert!(ok(&["-OIgnoreDots", "x"]).ignore_dots);
        assert!(ok(&["-O", "IgnoreDots=true", "x"]).ignore_dots);
        assert!(!ok(&["-i", "-O", "ignoredots=false", "x"]).ignore_dots);
        assert!(ok(&["-oi", "x"]).ignored.is_empty());
    }

    #[test]
    fn clustered_booleans() {
        let both = Invocation {
            read_recipients_from_headers: true,
            ignore_dots: true,
            ..Invocation::default()
        };
        assert_eq!(ok(&["-ti"]), both);
        assert_eq!(ok(&["-it"]), both);
        assert_eq!(
            ok(&["-tiv"]),
            Invocation {
                verbose: true,
                ..both.clone()
            }
        );
        assert_eq!(
            ok(&["-tUm", "x@y"]),
            Invocation {
                read_recipients_from_headers: true,
                ignored: strings(&["-U", "-m"]),
                ..deliver_to(&["x@y"])
            }
        );
    }

    #[test]
    fn option_with_argument_ends_a_cluster() {
        let expected = Invocation {
            read_recipients_from_headers: true,
            envelope_from: Some("user@x".into()),
            ..Invocation::default()
        };
        assert_eq!(ok(&["-tf", "user@x"]), expected);
        assert_eq!(ok(&["-tfuser@x"]), expected);
        assert_eq!(
            ok(&["-tif", "user@x", "to@y"]),
            Invocation {
                ignore_dots: true,
                recipients: strings(&["to@y"]),
                ..expected.clone()
            }
        );
        // The rest of the cluster is the argument, even if it looks like flags.
        assert_eq!(ok(&["-fti", "to@y"]).envelope_from.as_deref(), Some("ti"));
        assert_eq!(
            ok(&["-iB8BITMIME", "to@y"]).ignored,
            strings(&["-B8BITMIME"])
        );
        assert_eq!(ok(&["-ioi", "to@y"]).ignored, Vec::<String>::new());
        let listing = ok(&["-ibp"]);
        assert_eq!(listing.mode, Mode::ListQueue);
        assert!(listing.ignore_dots);
    }

    #[test]
    fn separate_argument_is_taken_even_if_it_looks_like_an_option() {
        // getopt takes the next argument whatever it is.
        assert_eq!(
            ok(&["-f", "-t", "to@x"]).envelope_from.as_deref(),
            Some("-t")
        );
        assert_eq!(ok(&["-F", "--", "to@x"]).full_name.as_deref(), Some("--"));
    }

    #[test]
    fn missing_argument() {
        for flag in [
            "-f", "-r", "-F", "-B", "-N", "-R", "-V", "-h", "-o", "-O", "-b", "-e", "-L",
        ] {
            let error = err(&["to@x", flag]);
            assert!(
                error
                    .message
                    .starts_with(&format!("option {flag} needs an argument")),
                "{flag}: {}",
                error.message
            );
        }
        assert!(err(&["-tf"]).message.contains("the sender address"));
    }

    #[test]
    fn double_dash_ends_options() {
        assert_eq!(
            ok(&["--", "-t", "-x", "--help", "a@x"]),
            deliver_to(&["-t", "-x", "--help", "a@x"])
        );
        assert_eq!(ok(&["-i", "--", "--"]).recipients, strings(&["--"]));
    }

    #[test]
    fn operands_may_come_before_and_between_options() {
        assert_eq!(
            ok(&["a@x", "-i", "b@x", "-f", "me@x", "c@x"]),
            Invocation {
                ignore_dots: true,
                envelope_from: Some("me@x".into()),
                ..deliver_to(&["a@x", "b@x", "c@x"])
            }
        );
    }

    #[test]
    fn recipients_are_kept_as_given() {
        assert_eq!(
            ok(&["Jane Doe <jane@example.com>", "a@x, b@x"]).recipients,
            strings(&["Jane Doe <jane@example.com>", "a@x, b@x"])
        );
    }

    #[test]
    fn envelope_from_details() {
        assert_eq!(ok(&["-f", "", "x"]).envelope_from.as_deref(), Some("<>"));
        assert_eq!(ok(&["-f<>", "x"]).envelope_from.as_deref(), Some("<>"));
        // Postfix keeps the last -f; the earlier one is noted as ignored.
        let twice = ok(&["-f", "a@x", "-rb@x", "to@x"]);
        assert_eq!(twice.envelope_from.as_deref(), Some("b@x"));
        assert_eq!(twice.ignored, strings(&["-fa@x"]));
    }

    #[test]
    fn empty_full_name_is_none() {
        assert_eq!(ok(&["-F", "", "x"]).full_name, None);
    }

    #[test]
    fn help_and_version() {
        assert_eq!(ok(&["--help"]).mode, Mode::Help);
        assert_eq!(ok(&["-t", "--help", "-x"]).mode, Mode::Help);
        assert_eq!(ok(&["-bs", "--help"]).mode, Mode::Help);
        assert_eq!(ok(&["--version"]).mode, Mode::Version);
        assert_eq!(ok(&["--help"]), special(Mode::Help));
        // After --, they are recipients.
        assert_eq!(ok(&["--", "--help"]).mode, Mode::Deliver);
    }

    // Modes.

    #[test]
    fn deliver_mode_explicit() {
        assert_eq!(ok(&["-bm", "x@y"]), deliver_to(&["x@y"]));
        assert_eq!(ok(&["-b", "m", "x@y"]), deliver_to(&["x@y"]));
        assert_eq!(ok(&["-bp", "-bm", "x@y"]).mode, Mode::Deliver);
    }

    #[test]
    fn unsupported_modes_are_named() {
        for (mode, words) in [
            ("-bs", "SMTP on standard input"),
            ("-bd", "daemon"),
            ("-bD", "foreground"),
            ("-bi", "alias"),
            ("-bt", "address test"),
            ("-bv", "verify"),
            ("-bh", "host status"),
            ("-bH", "purge"),
            ("-bP", "number of queued"),
        ] {
            let error = err(&[mode]);
            assert!(
                error
                    .message
                    .starts_with(&format!("sendmail mode {mode} (")),
                "{mode}: {}",
                error.message
            );
            assert!(error.message.contains(words), "{mode}: {}", error.message);
            assert!(
                error.message.ends_with("is not supported"),
                "{}",
                error.message
            );
            assert!(!error.hint.is_empty());
        }
        let bs = err(&["-bs"]);
        assert_eq!(
            bs.message,
            "sendmail mode -bs (SMTP on standard input) is not supported"
        );
        assert!(bs.hint.contains("drop -bs"), "{}", bs.hint);
        assert_eq!(err(&["-b", "d"]).message, err(&["-bd"]).message);
    }

    #[test]
    fn unknown_modes() {
        assert_eq!(err(&["-bx"]).message, "unknown sendmail mode -bx");
        assert_eq!(err(&["-bpx"]).message, "unknown sendmail mode -bpx");
        assert!(err(&["-bx"]).hint.contains("-bp"));
    }

    #[test]
    fn queue_intervals_are_ignored_with_a_note() {
        for interval in [
            "-q30m", "-q1h30m", "-q15", "-q0", "-q2d", "-qp", "-qp1h", "-qf",
        ] {
            let invocation = ok(&[interval]);
            assert_eq!(invocation.mode, Mode::FlushQueue, "{interval}");
            assert_eq!(invocation.ignored, strings(&[interval]));
        }
        assert_eq!(
            ok(&["-q30m"]).notes(),
            strings(&[
                "-q30m: the queue interval is ignored; apimail sends the queued messages once"
            ])
        );
        assert_eq!(
            ok(&["-qf"]).notes(),
            strings(&["ignored sendmail options (accepted for compatibility): -qf"])
        );
        assert!(ok(&["-q"]).notes().is_empty());
        assert_eq!(ok(&["-vq"]).mode, Mode::FlushQueue);
        assert!(ok(&["-vq"]).verbose);
    }

    #[test]
    fn queue_selection_is_refused() {
        for selector in [
            "-qRexample.com",
            "-qSroot",
            "-qIabc123",
            "-qGgroup",
            "-q!Rfoo",
            "-qQ",
            "-qL",
        ] {
            let error = err(&[selector]);
            assert_eq!(
                error.message,
                format!("queue selection ({selector}) is not supported")
            );
            assert!(error.hint.contains("apimail queue flush"), "{}", error.hint);
        }
    }

    #[test]
    fn bad_queue_options() {
        for bad in ["-qx", "-q30x", "-qm", "-q30mm", "-qpx"] {
            assert_eq!(err(&[bad]).message, format!("unknown queue option {bad}"));
        }
        // -q takes no separate argument: the next one is an operand, which
        // a queue flush refuses.
        assert!(err(&["-q", "30m"]).message.contains("takes no recipients"));
    }

    #[test]
    fn queue_modes_take_no_recipients_or_t() {
        let error = err(&["-bp", "user@x"]);
        assert_eq!(
            error.message,
            "listing the queue (-bp) takes no recipients, but `user@x` was given"
        );
        assert!(
            err(&["-q", "user@x"])
                .message
                .starts_with("flushing the queue (-q)")
        );
        assert!(err(&["-t", "-bp"]).message.starts_with("-t only applies"));
        assert!(err(&["-t", "-q"]).message.starts_with("-t only applies"));
        assert!(err(&["-tbp"]).message.starts_with("-t only applies"));
    }

    #[test]
    fn deliver_needs_recipients_or_t() {
        let error = err(&[]);
        assert!(
            error.message.starts_with("no recipients"),
            "{}",
            error.message
        );
        assert!(error.hint.contains("-t"));
        assert!(
            err(&["-i", "-f", "me@x"])
                .message
                .starts_with("no recipients")
        );
        assert!(ok(&["-t"]).recipients.is_empty());
        assert_eq!(
            ok(&["-t", "extra@x"]),
            Invocation {
                read_recipients_from_headers: true,
                ..deliver_to(&["extra@x"])
            }
        );
    }

    // Errors.

    #[test]
    fn unknown_options() {
        for (line, option) in [
            (vec!["-x", "a@x"], "-x"),
            (vec!["-Z", "a@x"], "-Z"),
            (vec!["--foo", "a@x"], "--foo"),
            (vec!["-tx", "a@x"], "-x"),
            (vec!["-C/etc/mail/sendmail.cf", "a@x"], "-C"),
            (vec!["-d0.1", "a@x"], "-d"),
            (vec!["-X/tmp/log", "a@x"], "-X"),
            (vec!["-é", "a@x"], "-é"),
            (vec!["--help=x"], "--help=x"),
        ] {
            let error = err(&line);
            assert_eq!(error.message, format!("unknown sendmail option `{option}`"));
            assert_eq!(
                error.hint,
                "apimail accepts the options cron, mail programs and scripts use; \
                 see `apimail sendmail --help`"
            );
        }
    }

    #[test]
    fn lone_dash_is_an_error() {
        let error = err(&["-", "a@x"]);
        assert!(error.message.contains("`-`"), "{}", error.message);
        assert!(error.hint.contains("standard input"));
        // After --, even `-` is a recipient.
        assert_eq!(ok(&["--", "-"]).recipients, strings(&["-"]));
    }

    #[test]
    fn dash_i_capital_is_newaliases() {
        assert!(err(&["-I"]).message.contains("-I"));
    }

    #[test]
    fn line_breaks_are_refused() {
        assert!(
            err(&["-f", "a@x\nBcc: evil@x", "to@x"])
                .message
                .contains("-f address")
        );
        assert!(
            err(&["-FName\r\nBcc: evil@x", "to@x"])
                .message
                .contains("-F name")
        );
        assert!(err(&["to@x\nBcc: evil@x"]).message.contains("line break"));
        // A tab is fine (folded display names).
        assert_eq!(
            ok(&["-F", "A\tB", "to@x"]).full_name.as_deref(),
            Some("A\tB")
        );
    }

    #[test]
    fn empty_recipient_is_refused() {
        assert_eq!(err(&["-i", ""]).message, "an empty recipient argument");
        assert_eq!(err(&["-t", " "]).message, "an empty recipient argument");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_is_refused() {
        use std::os::unix::ffi::OsStringExt;
        let line = vec![
            OsString::from("-i"),
            OsString::from_vec(vec![b'a', 0xff, b'@', b'x']),
        ];
        let error = parse(&line).unwrap_err();
        assert!(
            error.message.contains("not valid UTF-8"),
            "{}",
            error.message
        );
    }

    #[test]
    fn usage_error_displays_its_message() {
        let error = err(&["-x"]);
        assert_eq!(error.to_string(), error.message);
        let boxed: Box<dyn std::error::Error> = Box::new(error);
        assert!(boxed.to_string().contains("-x"));
    }

    // Program names.

    #[test]
    fn program_names() {
        for (argv0, expected) in [
            ("sendmail", Some(ProgramName::Sendmail)),
            ("/usr/sbin/sendmail", Some(ProgramName::Sendmail)),
            ("/usr/lib/sendmail", Some(ProgramName::Sendmail)),
            ("./sendmail", Some(ProgramName::Sendmail)),
            ("sendmail.exe", Some(ProgramName::Sendmail)),
            ("SENDMAIL.EXE", None),
            ("sendmail.EXE", Some(ProgramName::Sendmail)),
            ("mailq", Some(ProgramName::Mailq)),
            ("/usr/bin/mailq", Some(ProgramName::Mailq)),
            ("/usr/bin/newaliases", Some(ProgramName::Newaliases)),
            ("apimail", None),
            ("/usr/local/bin/apimail", None),
            ("sendmail-wrapper", None),
            ("/usr/sbin/sendmail/", Some(ProgramName::Sendmail)),
            ("", None),
            ("/", None),
            ("exe", None),
        ] {
            assert_eq!(
                mode_for_program_name(OsStr::new(argv0)),
                expected,
                "{argv0}"
            );
        }
    }

    #[test]
    fn run_as_mailq() {
        assert_eq!(
            parse_as(ProgramName::Mailq, &[]).unwrap(),
            Invocation {
                mode: Mode::ListQueue,
                ..Invocation::default()
            }
        );
        assert!(
            parse_as(ProgramName::Mailq, &args(&["-v"]))
                .unwrap()
                .verbose
        );
        // Options can still change the mode, as in sendmail and Postfix.
        assert_eq!(
            parse_as(ProgramName::Mailq, &args(&["-bm", "x@y"]))
                .unwrap()
                .mode,
            Mode::Deliver
        );
        assert!(parse_as(ProgramName::Mailq, &args(&["x@y"])).is_err());
        assert_eq!(
            parse_as(ProgramName::Sendmail, &args(&["-t"])),
            parse(&args(&["-t"]))
        );
    }

    #[test]
    fn run_as_newaliases() {
        let error = parse_as(ProgramName::Newaliases, &[]).unwrap_err();
        assert!(error.message.contains("newaliases"), "{}", error.message);
        assert!(error.message.contains("not supported"));
    }

    #[test]
    fn interval_syntax() {
        for good in ["0", "30", "30m", "1h30m", "1w2d3h4m5s", "15m0"] {
            assert!(is_interval(good), "{good}");
        }
        for bad in ["", "m", "30mm", "1x", "-1", "1.5h"] {
            assert!(!is_interval(bad), "{bad}");
        }
    }

    #[test]
    fn help_documents_what_it_should() {
        for needle in [
            "-t",
            "-i",
            "-oi",
            "-f ADDR",
            "-F NAME",
            "-bp",
            "-bm",
            "-q",
            "mailq",
            "-oem",
            "-B 8BITMIME",
            "Bcc",
            "warning",
            "APIMAIL_ACCOUNT",
            "default account",
            "-FCronDaemon -i -B8BITMIME -oem",
            "sendemail.sendmailcmd",
            "set sendmail=",
            "ln -s \"$(command -v apimail)\" /usr/sbin/sendmail",
            "--help",
            "-bs",
        ] {
            assert!(HELP.contains(needle), "HELP lacks {needle:?}");
        }
        for line in HELP.lines() {
            assert!(line.chars().count() <= 80, "HELP line too long: {line:?}");
        }
    }
}
