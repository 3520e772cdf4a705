//! The command line, as clap sees it. Doc comments are the `--help` text.

use std::path::PathBuf;

use apimail_core::Charset;
use apimail_core::journal::Outcome;
use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Configuration: --config FILE, else $APIMAIL_CONFIG, else ~/.config/apimail/config.toml.
Tokens: $APIMAIL_DATA_DIR, else ~/.local/share/apimail (files are mode 0600).

Exit codes (sysexits):
  0 ok, 64 usage, 65 bad message or address, 66 input file missing,
  69 refused permanently, 70 internal, 75 temporary failure,
  77 not authorized, 78 configuration

Examples:
  # Authorize once (opens a browser), then send
  apimail auth login gmail --client-secret client_secret.json
  apimail send --to you@example.com --subject 'Backup finished' --text 'All good'

  # Print a message without any account
  df -h | apimail send --dry-run --from me@example.com --to ops@example.com --subject 'Disk report'";

/// Send email through HTTPS APIs (Gmail API, Microsoft Graph) instead of SMTP.
///
/// For mail that SMTP no longer sends: "535 5.7.139" (SMTP AUTH disabled), "534-5.7.9 Application-specific password required", "Username and Password not accepted", or ports 25, 465 and 587 blocked.
#[derive(Debug, Parser)]
#[command(name = "apimail", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Configuration file
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Say more: -v shows progress and retries
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log every HTTP request and response (secrets are redacted)
    #[arg(long, global = true)]
    pub debug: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compose a message and send it (or, with --dry-run, print it).
    #[command(after_help = SEND_HELP)]
    Send(Box<SendArgs>),

    /// Authorize accounts, and inspect or remove their tokens.
    #[command(subcommand, after_help = AUTH_HELP)]
    Auth(AuthCommand),

    /// Work as sendmail: send the message on standard input (drop-in for programs).
    #[command(disable_help_flag = true)]
    Sendmail(SendmailArgs),

    /// List, flush, retry or drop messages waiting in the outbox.
    #[command(subcommand, after_help = QUEUE_HELP)]
    Queue(QueueCommand),

    /// Check the configuration, tokens, network, clock and queue, and explain any problem.
    #[command(after_help = DOCTOR_HELP)]
    Doctor(DoctorArgs),

    /// Show the delivery journal: what was sent, queued, held or failed, and why.
    #[command(after_help = LOG_HELP)]
    Log(LogArgs),

    /// Run an SMTP relay for printers, scanners and applications that only speak SMTP.
    #[command(after_help = RELAY_HELP, args_conflicts_with_subcommands = true)]
    Relay(RelayArgs),

    /// Mail one letter to many: a CSV or .xlsx sheet and a template (a dry run without --send).
    #[command(
        after_help = MERGE_HELP,
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true
    )]
    Merge(Box<MergeArgs>),

    /// Serve the admin console (log, queue, accounts, API); manage its users and tokens
    #[command(subcommand, after_help = ADMIN_HELP)]
    Admin(AdminCommand),

    /// Set up the shared PostgreSQL store (outbox, journal, pacing) for several machines.
    #[command(subcommand, after_help = STORE_HELP)]
    Store(StoreCommand),
}

const STORE_HELP: &str = "\
The store is named by APIMAIL_STORE_URL or [store] url in the configuration;
its password comes from the URL, APIMAIL_STORE_PASSWORD_FILE, [store]
password_file or PGPASSWORD, never from a flag.

With [store] tokens = \"store\" and a key file (APIMAIL_STORE_KEY_FILE or
[store] key_file), accounts' OAuth tokens live in the store too, encrypted:
one refresh per mailbox serves every node.

Examples:
  apimail store migrate
  APIMAIL_STORE_URL=postgres://apimail@db.example.com/apimail apimail store migrate
  apimail store migrate --check
  apimail store key new --output /etc/apimail/store.key
  apimail store tokens push --account work";

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create or upgrade the store's tables (versioned migrations; safe to run again, from any node).
    #[command(after_help = STORE_MIGRATE_HELP)]
    Migrate(StoreMigrateArgs),
    /// The key accounts' tokens in the store are encrypted under.
    #[command(subcommand)]
    Key(StoreKeyCommand),
    /// Accounts' OAuth tokens in the store.
    #[command(subcommand)]
    Tokens(StoreTokensCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreKeyCommand {
    /// Write a new random key (32 bytes, base64) to a file, mode 0600; never over an existing file.
    #[command(after_help = STORE_KEY_NEW_HELP)]
    New(StoreKeyNewArgs),
}

const STORE_KEY_NEW_HELP: &str = "\
Give every node the same file (APIMAIL_STORE_KEY_FILE=FILE or [store]
key_file), then set [store] tokens = \"store\". The key is never printed and
never taken from a flag or a variable. Only its id (8 bytes of a SHA-256 of
it) is shown, the same id `apimail store tokens push` shows.

Examples:
  apimail store key new --output /etc/apimail/store.key";

#[derive(Debug, Args)]
pub struct StoreKeyNewArgs {
    /// The file to create
    #[arg(long, value_name = "FILE")]
    pub output: std::path::PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum StoreTokensCommand {
    /// Copy this machine's logged-in accounts' tokens into the store, encrypted (after `auth login`).
    #[command(after_help = STORE_TOKENS_PUSH_HELP)]
    Push(StoreTokensPushArgs),
}

const STORE_TOKENS_PUSH_HELP: &str = "\
Reads the token files of the data directory (APIMAIL_DATA_DIR) and writes
each account's tokens to the store, encrypted under the key file's key,
replacing what the store held for that account. Log in on one machine, push,
and every node refreshes through the store from then on.

Examples:
  apimail store tokens push
  apimail store tokens push --account work";

#[derive(Debug, Args)]
pub struct StoreTokensPushArgs {
    /// Only this account (repeatable); default: every account with a token file
    #[arg(long, value_name = "NAME")]
    pub account: Vec<String>,
}

const STORE_MIGRATE_HELP: &str = "\
Applies the schema migrations this apimail has and the database lacks, in
order, each once; several nodes may run it at the same time. With --check it
changes nothing and exits 78 when the schema is behind.

Examples:
  apimail store migrate
  apimail store migrate --check";

#[derive(Debug, Args)]
pub struct StoreMigrateArgs {
    /// Only report the schema's version; exit 78 if it needs migrating
    #[arg(long)]
    pub check: bool,
}

const MERGE_HELP: &str = "\
The template is a TOML file: from, to, cc, bcc, reply_to, subject, text or
text_file, html or html_file, attach (a list of paths), charset (\"utf-8\" or
\"iso-2022-jp\") and [headers]. Fields of the sheet's header row are written
{{ name }}; they are HTML-escaped in HTML bodies; filters: date(\"[year]/[month]/[day]\")
and number (1,234), number(2) (1,234.00). Paths start from the template's folder.

Every row is checked before anything is sent; an error names the row's number
(the header is row 1). Without --send it is a dry run: a summary, the first
--preview messages as .eml files, and the time the account's pace allows.
With --send every message goes through the outbox and the delivery engine.
The merge keeps a record (in the data directory, by --name), so running the same
command again after a crash, Ctrl-C or kill sends only the rows not yet sent.

Examples:
  # Check the rows and write 3 previews; nothing is sent
  apimail merge --data customers.csv --template invoice.toml

  # Excel's CSV from a Japanese Windows, keyed by the customer column
  apimail merge --data 顧客.csv --data-encoding cp932 --template 請求書.toml --id-column customer_id

  # Send the first two to yourself, then everyone, with a report
  apimail merge --data members.xlsx --template notice.toml --test-to me@example.com --preview 2
  apimail merge --data members.xlsx --template notice.toml --send --report result.csv

  # Where a merge stands, from another terminal
  apimail merge status members";

#[derive(Debug, Args)]
pub struct MergeArgs {
    #[command(subcommand)]
    pub command: Option<MergeCommand>,

    /// The sheet: .csv (UTF-8, with or without a BOM, or see --data-encoding) or .xlsx
    #[arg(long, value_name = "FILE", required = true)]
    pub data: Option<PathBuf>,

    /// The template (TOML)
    #[arg(long, value_name = "FILE", required = true)]
    pub template: Option<PathBuf>,

    /// The CSV's encoding
    #[arg(long, value_name = "ENCODING", value_enum, default_value_t = DataEncoding::Utf8)]
    pub data_encoding: DataEncoding,

    /// The column that identifies each row (default: a hash of the row's values)
    #[arg(long, value_name = "COLUMN")]
    pub id_column: Option<String>,

    /// The merge's name, which keeps its record (default: the data file's name)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The account to send from (default: $APIMAIL_ACCOUNT, else the configured default)
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,

    /// Send (without it, nothing is sent)
    #[arg(long)]
    pub send: bool,

    /// Write the first N messages as .eml files (dry run), or send N to --test-to
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub preview: usize,

    /// Where the previews go (default: NAME-preview)
    #[arg(long, value_name = "DIR")]
    pub preview_dir: Option<PathBuf>,

    /// Send the first --preview messages to this address instead of the rows' recipients
    #[arg(long, value_name = "ADDR", conflicts_with = "send")]
    pub test_to: Option<String>,

    /// Send the good rows even when others have errors (they are reported)
    #[arg(long)]
    pub skip_invalid: bool,

    /// Send again the rows that failed in an earlier run
    #[arg(long)]
    pub resend_failed: bool,

    /// Write every row's outcome as CSV (its failed rows can be given to --data again)
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Send at most N messages in any 24 hours (the rest wait for another run)
    #[arg(long, value_name = "N")]
    pub daily_limit: Option<u32>,

    /// Send at most N messages a minute (default: the provider's pace)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub per_minute: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum MergeCommand {
    /// Show a merge's counts from its record; with --report, every row it sent or tried.
    Status {
        /// The merge's name (its data file's name unless --name was given)
        name: String,
        /// Write every recorded row (row, key, status, Message-ID, error) as CSV
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataEncoding {
    /// UTF-8, with or without a byte order mark
    #[value(name = "utf-8", alias = "utf8")]
    Utf8,
    /// Shift_JIS as Windows extends it (Excel's CSV in Japan)
    #[value(name = "cp932", alias = "shift_jis", alias = "sjis")]
    Cp932,
}

const RELAY_HELP: &str = "\
Accepts mail over SMTP and delivers it through your accounts over HTTPS. With
no --listen and no [relay] listeners in the configuration, it listens on
127.0.0.1:2525 and relays for the default account, without AUTH. A listener on
another address needs AUTH or allowed_networks, and says so when it starts.
--listen and --listen-tls replace the configured listeners; on an address that
is not loopback they require AUTH. SIGTERM stops it gracefully; SIGHUP reloads
the users and settings (not the listeners). --admin serves the admin console
from the relay process too; off loopback over TLS ([admin] certificate, else
the relay's certificate).

Examples:
  apimail relay
  apimail relay user add scanner --account work
  apimail relay --listen 0.0.0.0:587 --listen-tls 0.0.0.0:465
  apimail relay --admin 192.168.1.10:8025
  apimail log --since 1d --csv > relay.csv";

#[derive(Debug, Args)]
pub struct RelayArgs {
    #[command(subcommand)]
    pub command: Option<RelayCommand>,

    /// Listen on ADDR:PORT, plain with STARTTLS (repeatable)
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<String>,

    /// Listen on ADDR:PORT with implicit TLS (repeatable)
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen_tls: Vec<String>,

    /// Also serve the admin console on ADDR:PORT (off loopback over TLS)
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// Add, list or remove the users devices log in as (SMTP AUTH).
    #[command(subcommand)]
    User(RelayUserCommand),
}

#[derive(Debug, Subcommand)]
pub enum RelayUserCommand {
    /// Add a user, or give one a new password or account. The password is
    /// read from a prompt, or from the first line of standard input.
    Add {
        /// The user name devices log in with
        name: String,
        /// The account their mail goes out through (default: the default account)
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// A sender they may use besides the account's address, e.g. '*@example.com' (repeatable)
        #[arg(long, value_name = "PATTERN")]
        allowed_from: Vec<String>,
        /// Mail from any other sender goes out from the account's address, keeping their name (default: true); false refuses it with 553
        #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
        rewrite_from: bool,
        /// At most this many messages per minute
        #[arg(long, value_name = "N")]
        messages_per_minute: Option<u32>,
    },
    /// List the users and their accounts.
    List,
    /// Remove a user.
    Remove {
        /// The user name
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct SendmailArgs {
    /// sendmail options and recipients, as sendmail takes them
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<std::ffi::OsString>,
}

const QUEUE_HELP: &str = "\
Messages wait in the outbox (under the data directory) when the provider
could not take them yet. Every successful send also flushes its account's
due messages. For a timer, run `apimail queue flush` from cron or systemd.

Examples:
  apimail queue list
  apimail queue list --json | jq -r 'select(.waits_for == \"login\") | .id'
  apimail queue list --offset 100 --limit 100
  apimail queue flush
  apimail queue flush --account work --all
  apimail queue show 20261121T101500-3f9a0c1b2d4e
  apimail queue retry 20261121T101500-3f9a0c1b2d4e
  apimail queue drop 20261121T101500-3f9a0c1b2d4e";

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queued, held and failed messages, oldest first, a page at a
    /// time, and what each held one waits for.
    List {
        /// Print JSON Lines: one object per message
        #[arg(long)]
        json: bool,
        /// At most N messages
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        /// Skip the first N (the next page starts at the last one's number)
        #[arg(long, value_name = "N", default_value_t = 0)]
        offset: usize,
    },
    /// Send the messages that are due now.
    Flush {
        /// Only this account's messages
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// Also the messages that are not due yet
        #[arg(long)]
        all: bool,
    },
    /// Show one message's details and headers.
    Show {
        /// The queue id (from `apimail queue list`)
        id: String,
    },
    /// Make a message due now (or put a failed one back in the queue).
    Retry {
        /// The queue id
        id: String,
    },
    /// Delete a message from the outbox.
    Drop {
        /// The queue id
        id: String,
    },
}

const DOCTOR_HELP: &str = "\
Checks, in order: the configuration parses; the account exists and its address
is known; the token store's permissions; how long the authorization lasts
(warnings 30 days ahead); a real token refresh; DNS, TLS and proxy to each
endpoint; the clock against the server's; the queue. Exits 0 only when all
pass (warnings do not fail).

Examples:
  apimail doctor
  apimail doctor --account work

  # For monitoring: every check as data
  apimail doctor --json";

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The account to check (default: $APIMAIL_ACCOUNT, else the default)
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,

    /// Print every check as one JSON object on standard output
    #[arg(long)]
    pub json: bool,
}

const LOG_HELP: &str = "\
Every settled delivery (sent, queued, held, failed, ...) adds one line to the
journal under the data directory (journal/), and so does every attempt whose
outcome was unknown (uncertain), before the message is sent again. `attempts`
counts every attempt; `possible_duplicate` is true on the record of a copy sent
after such an attempt: the recipient may have it twice. It is rotated at 10 MiB,
and the 5 newest rotated files are kept. Times are UTC.

Examples:
  apimail log --since 2h
  apimail log --status failed --status held --since 7d
  apimail log --status uncertain --since 7d
  apimail log --account work --since 2026-11-29 --csv > deliveries.csv
  apimail log --json | jq -r 'select(.outcome == \"failed\") | .error'";

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only records since DURATION ago (30m, 2h, 7d), a DATE (2026-11-29) or an RFC 3339 time
    #[arg(long, value_name = "DURATION|DATE", allow_hyphen_values = true)]
    pub since: Option<String>,

    /// Only this account's records
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,

    /// Only records with this outcome (repeatable)
    #[arg(long, value_enum, value_name = "STATUS")]
    pub status: Vec<StatusArg>,

    /// Print JSON Lines: one object per record
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,

    /// Print CSV with a header row
    #[arg(long)]
    pub csv: bool,
}

/// The outcomes of `apimail_core::journal::Outcome`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    /// Accepted by the provider
    Sent,
    /// Waiting in the outbox for another attempt
    Queued,
    /// Waiting for its sender, a login or `queue retry` (see `queue list`)
    Held,
    /// Given up on
    Failed,
    /// Maybe sent: the provider's answer never came
    Uncertain,
    /// Found in the mailbox's sent messages after an uncertain attempt
    #[value(name = "verified_sent", alias = "verified-sent")]
    VerifiedSent,
    /// Removed from the outbox unsent (`queue drop`, the admin console)
    Dropped,
}

impl From<StatusArg> for Outcome {
    fn from(value: StatusArg) -> Self {
        match value {
            StatusArg::Sent => Outcome::Sent,
            StatusArg::Queued => Outcome::Queued,
            StatusArg::Held => Outcome::Held,
            StatusArg::Failed => Outcome::Failed,
            StatusArg::Uncertain => Outcome::Uncertain,
            StatusArg::VerifiedSent => Outcome::VerifiedSent,
            StatusArg::Dropped => Outcome::Dropped,
        }
    }
}

const AUTH_HELP: &str = "\
Examples:
  apimail auth login gmail --client-secret client_secret.json
  apimail auth login graph --client-id 00000000-0000-0000-0000-000000000000
  apimail auth status
  apimail auth logout --account me@example.com";

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Authorize an account in the browser and store its tokens.
    #[command(subcommand)]
    Login(LoginCommand),

    /// Import the OAuth credentials of an SMAIL installation (smail_refreshtoken.ini).
    #[command(after_help = IMPORT_HELP)]
    ImportSmail(ImportSmailArgs),

    /// List accounts, their scopes, token expiry and where tokens are kept.
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),

    /// Delete an account's stored tokens, revoking them at the provider.
    #[command(after_help = LOGOUT_HELP)]
    Logout(LogoutArgs),
}

#[derive(Debug, Subcommand)]
pub enum LoginCommand {
    /// Authorize a Google account (Gmail API, scope gmail.send).
    #[command(after_help = GMAIL_LOGIN_HELP)]
    Gmail(GmailLoginArgs),

    /// Authorize a Microsoft 365 or Outlook.com account (Microsoft Graph, Mail.Send).
    #[command(after_help = GRAPH_LOGIN_HELP)]
    Graph(GraphLoginArgs),
}

const GMAIL_LOGIN_HELP: &str = "\
Create an OAuth client (Desktop app) in the Google Cloud console, download its
JSON, and pass it with --client-secret. apimail asks for the gmail.send scope,
and for openid and email to learn the address. The browser is sent back to
http://127.0.0.1:PORT/callback.

Examples:
  apimail auth login gmail --client-secret client_secret.json

  # Over SSH or in a container: open the printed URL on any machine, then paste
  # the address the browser ends up on (or forward the port with ssh -L)
  apimail auth login gmail --client-secret client_secret.json --no-browser

  # A Web application client registered with http://127.0.0.1:48888/callback
  apimail auth login gmail --client-secret web_client.json --port 48888";

const GRAPH_LOGIN_HELP: &str = "\
Register an app in Microsoft Entra ID (App registrations) with the redirect URI
http://localhost:48888/callback (platform \"Mobile and desktop applications\"),
and the delegated permissions Mail.Send and offline_access (apimail also asks
for openid and email, which users consent to themselves, to learn the address). The secret of a
confidential (web) app comes from $APIMAIL_GRAPH_CLIENT_SECRET or
--client-secret-file, never from the command line.

Examples:
  apimail auth login graph --client-id 00000000-0000-0000-0000-000000000000

  # No browser on this machine: enter a code on any device
  apimail auth login graph --client-id 0000... --device-code

  # Messages over ~3 MB need drafts and upload sessions (adds Mail.ReadWrite)
  apimail auth login graph --client-id 0000... --tenant contoso.com --large-messages

  # A personal Outlook.com account, or a US Government tenant
  apimail auth login graph --client-id 0000... --tenant consumers
  apimail auth login graph --client-id 0000... --tenant contoso.us --cloud usgov";

#[derive(Debug, Args)]
pub struct LoginCommon {
    /// Name for this account (default: its address)
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,

    /// Loopback port for the browser's redirect (default 48888); 0 picks a free one
    #[arg(long)]
    pub port: Option<u16>,

    /// Don't open a browser: print the URL, and accept the redirect URL pasted here
    #[arg(long)]
    pub no_browser: bool,

    /// The address to sign in as (pre-fills the browser and names the account)
    #[arg(long, value_name = "ADDR")]
    pub login_hint: Option<String>,

    /// Give up waiting for the browser after this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct GmailLoginArgs {
    /// The OAuth client file downloaded from the Google Cloud console
    #[arg(long, value_name = "FILE")]
    pub client_secret: PathBuf,

    /// Also ask for gmail.metadata (headers only, a restricted scope), so that
    /// after a send whose answer was lost apimail can look in Sent instead
    /// of sending again
    #[arg(long)]
    pub verify_sent: bool,

    #[command(flatten)]
    pub common: LoginCommon,
}

#[derive(Debug, Args)]
pub struct GraphLoginArgs {
    /// The app registration's Application (client) ID
    #[arg(long, value_name = "ID")]
    pub client_id: String,

    /// common, organizations, consumers, a tenant id, or a domain
    #[arg(long, value_name = "TENANT", default_value = "common")]
    pub tenant: String,

    /// The Microsoft cloud: global, usgov, usgov-dod or china
    #[arg(long, value_name = "CLOUD", default_value = "global")]
    pub cloud: String,

    /// Use the device code flow: enter a code on any device with a browser
    #[arg(long, conflicts_with = "no_browser")]
    pub device_code: bool,

    /// Also ask for Mail.ReadWrite, which messages over Graph's 4 MB request limit need
    #[arg(long)]
    pub large_messages: bool,

    /// A file holding the client secret of a confidential (web) app
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,

    #[command(flatten)]
    pub common: LoginCommon,
}

const IMPORT_HELP: &str = "\
Reads UserID, ClientID, ClientSecret, RefreshToken and TokenURI from the [OAUTH2]
section, checks them with one token refresh, and stores them like `auth login`.

Examples:
  apimail auth import-smail smail_refreshtoken.ini --account office";

const STATUS_HELP: &str = "\
Never shows a token or secret.

Examples:
  apimail auth status
  apimail auth status --account office";

const LOGOUT_HELP: &str = "\
Examples:
  apimail auth logout --account office";

#[derive(Debug, Args)]
pub struct ImportSmailArgs {
    /// The smail_refreshtoken.ini file
    pub file: PathBuf,

    /// Name for the imported account
    #[arg(long, value_name = "NAME")]
    pub account: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show only this account
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The account to log out
    #[arg(long, value_name = "NAME")]
    pub account: String,
}

const SEND_HELP: &str = "\
Gmail rewrites From to the account's address unless it is one of the account's
verified 'Send mail as' aliases.

The body comes from --text, --text-file, or standard input when neither is given
and standard input is not a terminal. Addresses are `name@example.com` or
`Name <name@example.com>`. Bcc recipients stay in the bytes handed to the provider,
which reads recipients from the headers and removes Bcc from delivered copies.

Set SOURCE_DATE_EPOCH (Unix seconds) and --message-id to make output reproducible.

Environment credentials (no config file needed; used when no account is named):
  GOOGLE_APPLICATION_CREDENTIALS=key.json APIMAIL_GMAIL_USER=sender@your-domain
      a service account with domain-wide delegation, sending as that user
  APIMAIL_GOOGLE_CLIENT_ID, APIMAIL_GOOGLE_CLIENT_SECRET, APIMAIL_GOOGLE_REFRESH_TOKEN
      a user's refresh token

Examples:
  # Send from the default account
  apimail send --to you@example.com --subject Hello --text 'Hi there'

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
    /// Sender, e.g. 'Ann <ann@example.com>' (default: the account's address)
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,

    /// The account to send from (default: $APIMAIL_ACCOUNT, else the configured default)
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,

    /// With no account named, send with this provider's environment credentials
    #[arg(long, value_name = "PROVIDER", value_parser = provider_parser())]
    pub provider: Option<crate::config::Provider>,

    /// Print the receipt as one JSON object
    #[arg(long)]
    pub json: bool,

    /// Only put the message in the outbox; `apimail queue flush` (or the next send) sends it
    #[arg(long, conflicts_with = "dry_run")]
    pub queue: bool,

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

/// `gmail` or `graph`, as the account layer's `Provider`.
fn provider_parser() -> impl clap::builder::TypedValueParser<Value = crate::config::Provider> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["gmail", "graph"]).map(|name| match name.as_str() {
        "graph" => crate::config::Provider::Graph,
        _ => crate::config::Provider::Gmail,
    })
}

/// The clap definition, for man pages and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

const ADMIN_HELP: &str = "\
Examples:
  apimail admin user add alice
  apimail admin serve
  apimail admin token create monitoring --read-only
  apimail admin token list";

const ADMIN_SERVE_HELP: &str = "\
Serves the delivery log, the queue's counts and the accounts in a browser, and
the same as JSON under /api/v1/ for a bearer token. Sign in with a user from
`apimail admin user add`. Settings come from the [admin] table of the
configuration (listen, certificate, private_key, time_zone). On an address
that is not loopback the console requires TLS (certificate and private_key).

Examples:
  apimail admin user add alice
  apimail admin serve
  apimail admin serve --listen 0.0.0.0:8025   # with [admin] certificate/private_key
  apimail admin token create monitoring --read-only
  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8025/api/v1/messages?outcome=failed";

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Serve the admin console (web pages and a JSON API) until stopped.
    #[command(after_help = ADMIN_SERVE_HELP)]
    Serve {
        /// Listen on ADDR:PORT (default: [admin] listen, else 127.0.0.1:8025)
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<String>,
    },
    /// Add, list or remove the administrators who sign in to the console.
    #[command(subcommand)]
    User(UserCommand),
    /// Create, list or revoke the API's bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add an administrator, or give one a new password. The password is
    /// read from a prompt, or from the first line of standard input.
    Add {
        /// The name they sign in with
        name: String,
    },
    /// List the administrators.
    List,
    /// Remove an administrator.
    Remove {
        /// The name
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it, once; only its hash is kept.
    Create {
        /// A name for it, e.g. the system that uses it
        name: String,
        /// It may only read (log, messages, stats); writes get 403
        #[arg(long)]
        read_only: bool,
    },
    /// List the tokens (names only; tokens are never shown again).
    List,
    /// Revoke a token.
    Revoke {
        /// The token's name
        name: String,
    },
}
