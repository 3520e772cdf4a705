//! The command line, as clap sees it. Doc comments are the `--help` text.

use std::path::PathBuf;

use apimail_core::Charset;
use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit codes (sysexits):
  0 ok, 64 usage, 65 bad message or address, 66 input file missing,
  69 refused permanently, 70 internal, 75 temporary failure,
  77 not authorized, 78 configuration

Examples:
  apimail send --dry-run --from me@example.com --to you@example.com \\
      --subject 'Backup finished' --text 'All good'
  df -h | apimail send --dry-run --from me@example.com --to ops@example.com --subject 'Disk report'";

/// Send email through HTTPS APIs (Gmail API, Microsoft Graph) instead of SMTP.
#[derive(Debug, Parser)]
#[command(name = "apimail", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compose a message and send it (or, with --dry-run, print it).
    #[command(after_help = SEND_HELP)]
    Send(SendArgs),
}

const SEND_HELP: &str = "\
The body comes from --text, --text-file, or standard input when neither is given
and standard input is not a terminal. Addresses are `name@example.com` or
`Name <name@example.com>`. Bcc recipients stay in the bytes handed to the provider,
which reads recipients from the headers and removes Bcc from delivered copies.

Set SOURCE_DATE_EPOCH (Unix seconds) and --message-id to make output reproducible.

Examples:
  # Print the exact bytes that would be sent; no account needed
  apimail send --dry-run --from me@example.com --to you@example.com \\
      --subject Hello --text 'Hi there'

  # HTML with a text fallback, an inline logo and a PDF, saved to a file
  apimail send --dry-run --from 'Ops <ops@example.com>' --to team@example.com \\
      --subject 'Weekly report' --text-file report.txt --html-file report.html \\
      --inline logo.png --attach report.pdf --output report.eml

  # Japanese legacy systems
  apimail send --dry-run --charset iso-2022-jp --from '山田 <yamada@example.jp>' \\
      --to tanaka@example.jp --subject 'お知らせ' --text '本文'

  # Override a guessed content type
  apimail send --dry-run --from me@example.com --to you@example.com \\
      --subject data --attach 'dump.bin;type=application/x-sqlite3'";

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Sender, e.g. 'Ann <ann@example.com>'
    #[arg(long, value_name = "ADDR")]
    pub from: String,

    /// Recipient (repeatable)
    #[arg(long, value_name = "ADDR")]
    pub to: Vec<String>,

    /// Carbon-copy recipient (repeatable)
    #[arg(long, value_name = "ADDR")]
    pub cc: Vec<String>,

    /// Blind-copy recipient (repeatable); hidden from other recipients
    #[arg(long, value_name = "ADDR")]
    pub bcc: Vec<String>,

    /// Where replies should go (repeatable)
    #[arg(long, value_name = "ADDR")]
    pub reply_to: Vec<String>,

    /// The Sender header, when someone sends on behalf of --from
    #[arg(long, value_name = "ADDR")]
    pub sender: Option<String>,

    /// Subject line
    #[arg(long, short = 's', value_name = "TEXT")]
    pub subject: Option<String>,

    /// Plain-text body
    #[arg(long, value_name = "TEXT", conflicts_with = "text_file")]
    pub text: Option<String>,

    /// Read the plain-text body from a file (UTF-8)
    #[arg(long, value_name = "FILE")]
    pub text_file: Option<PathBuf>,

    /// Read an HTML body from a file (UTF-8); with a text body, both are sent as alternatives
    #[arg(long, value_name = "FILE")]
    pub html_file: Option<PathBuf>,

    /// Attach a file (repeatable); append ';type=MIME' to override the guessed type
    #[arg(long, short = 'a', value_name = "FILE")]
    pub attach: Vec<String>,

    /// Embed a file the HTML refers to as cid:FILENAME (repeatable)
    #[arg(long, value_name = "FILE")]
    pub inline: Vec<String>,

    /// Extra header, as 'Name: value' (repeatable)
    #[arg(long, value_name = "'NAME: VALUE'")]
    pub header: Vec<String>,

    /// Message-ID of the message being replied to
    #[arg(long, value_name = "ID")]
    pub in_reply_to: Option<String>,

    /// Message-IDs of the thread, oldest first (repeatable)
    #[arg(long, value_name = "ID")]
    pub references: Vec<String>,

    /// Use this Message-ID instead of a generated one
    #[arg(long, value_name = "ID")]
    pub message_id: Option<String>,

    /// Charset of text parts and encoded headers
    #[arg(long, value_enum, default_value_t = CharsetArg::Utf8)]
    pub charset: CharsetArg,

    /// Print the exact message bytes instead of sending; needs no account or network
    #[arg(long)]
    pub dry_run: bool,

    /// With --dry-run, write the message to FILE instead of standard output
    #[arg(long, short = 'o', value_name = "FILE", requires = "dry_run")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CharsetArg {
    #[value(name = "utf-8", alias = "utf8")]
    Utf8,
    #[value(name = "iso-2022-jp")]
    Iso2022Jp,
}

impl From<CharsetArg> for Charset {
    fn from(value: CharsetArg) -> Self {
        match value {
            CharsetArg::Utf8 => Charset::Utf8,
            CharsetArg::Iso2022Jp => Charset::Iso2022Jp,
        }
    }
}
