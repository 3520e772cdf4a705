//! One SMTP session over any byte stream.
//!
//! smtp-proto parses each command line, `data.rs` reads DATA; this loop
//! frames lines (with our own length limit), answers, and enforces the timeouts
//! and the policy. Replies are collected and written when the input holds
//! no further complete command, which is what PIPELINING needs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use smtp_proto::request::receiver::BdatReceiver;
use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, EXT_8BIT_MIME, EXT_AUTH, EXT_CHUNKING, EXT_ENHANCED_STATUS_CODES,
    EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS, EhloResponse, Error as ProtoError,
    Request,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use super::accept::{self, Prepared, Queued, Transaction, not_allowed, printable};
use super::data::DotReader;
use super::handshake;
use super::intake::Intake;
use super::reply::Reply;
use super::shared::Shared;
use super::split::Splits;
use super::spool::{Received, Spool};
use super::{Accepted, AccountInfo, Directory, Listener, ListenerTls, Principal};
use apimail_core::Mailbox;
use apimail_core::journal::Details;
use apimail_core::login_backoff::Gate;

/// A byte stream a session runs over: TCP, TLS over TCP, an in-memory pipe.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How a session's loop over one stream ended.
enum End {
    /// The client quit, went away, timed out or was thrown out.
    Closed,
    /// The client asked for STARTTLS and got 220: hand over the stream.
    StartTls,
}

/// What the session expects next.
enum State {
    Command,
    /// Between 354 and the final dot.
    Data(DotReader),
    /// Reading a BDAT chunk; a refused chunk is read and dropped, then
    /// answered with `refusal`.
    Bdat {
        receiver: BdatReceiver,
        refusal: Option<Reply>,
    },
    /// AUTH PLAIN without an initial response.
    AuthPlain,
    /// AUTH LOGIN: the user name next.
    AuthLoginUser,
    /// AUTH LOGIN: the password next.
    AuthLoginPassword(String),
}

/// A MAIL transaction in progress.
struct Mail {
    principal: Principal,
    account: AccountInfo,
    from: String,
    recipients: Vec<String>,
    limit: u64,
}

pub(super) struct Session<'a> {
    shared: &'a Shared,
    listener: &'a Listener,
    peer: SocketAddr,
    ip: IpAddr,
    directory: Arc<dyn Directory>,
    tls: bool,
    /// The name the client gave in EHLO/HELO (for the log).
    helo: Option<String>,
    authenticated: Option<Principal>,
    state: State,
    mail: Option<Mail>,
    /// The message being received.
    spool: Spool,
    body_too_big: bool,
    /// When the wait for the current command line began: the whole line
    /// must arrive within the command timeout.
    command_started: Instant,
    /// When the current DATA or BDAT chunk began, and the bytes read since.
    data_started: Instant,
    data_bytes: u64,
    /// Log the next line masked: it follows an AUTH command.
    mask_next: bool,
    /// Log lines masked until one parses as a command: after AUTH, a
    /// client may send its credentials even though AUTH was refused.
    mask_until_command: bool,
    bad_commands: u32,
    accepted: u32,
    /// Discarding a command line longer than the limit, up to its LF.
    skipping_long_line: bool,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Why the session ended, for its log line.
    end: &'static str,
}

/// Reads this much at a time in DATA and BDAT.
const READ_CHUNK: usize = 16 * 1024;

/// Reads at least this much at a time while waiting for commands; a
/// longer (or pipelined) input grows the buffer up to the line limit.
const COMMAND_CHUNK: usize = 1024;

/// The output buffer's room at the start (an EHLO reply fits); one grown
/// past [`OUTPUT_KEPT`] by a large reply is let go once written.
const OUTPUT_ROOM: usize = 256;
const OUTPUT_KEPT: usize = 4096;

/// Runs a whole session: TLS first for implicit-TLS listeners, the
/// greeting, the commands, and the STARTTLS upgrade.
pub(super) async fn run(
    shared: &Shared,
    stream: Box<dyn Stream>,
    peer: SocketAddr,
    listener: &Listener,
) {
    let command_timeout = shared.limits.timeouts.command;
    let mut stream = stream;
    let mut session = Session::new(shared, listener, peer);
    if let ListenerTls::Implicit(config) = &listener.tls {
        // Boxed, like STARTTLS's: a handshake's state lives on the heap
        // only while it runs, not in every session's future (RSS with
        // many idle connections).
        let handshake = Box::pin(handshake::accept(config.clone(), stream, session.ip));
        match timeout(command_timeout, handshake).await {
            Ok(Ok(tls)) => stream = Box::new(tls),
            Ok(Err(why)) => {
                tracing::warn!("session {peer} on {}: {why}", listener.name);
                return;
            }
            Err(_) => {
                tracing::info!(
                    "session {peer} on {}: TLS handshake timed out",
                    listener.name
                );
                return;
            }
        }
        session.tls = true;
    }
    session.reply(Reply::plain(
        220,
        format!("{} ESMTP apimail relay", shared.hostname),
    ));
    loop {
        match session.serve(&mut stream).await {
            End::Closed => break,
            End::StartTls => {
                let ListenerTls::Plain {
                    starttls: Some(config),
                } = &listener.tls
                else {
                    break;
                };
                let handshake = Box::pin(handshake::accept(config.clone(), stream, session.ip));
                match timeout(command_timeout, handshake).await {
                    Ok(Ok(tls)) => stream = Box::new(tls),
                    Ok(Err(why)) => {
                        tracing::warn!("session {peer} on {}: STARTTLS: {why}", listener.name);
                        session.end = "STARTTLS handshake failed";
                        session.log_end();
                        return;
                    }
                    Err(_) => {
                        session.end = "STARTTLS handshake failed";
                        session.log_end();
                        return;
                    }
                }
                // RFC 3207: forget everything learned before TLS.
                session.tls = true;
                session.helo = None;
                session.authenticated = None;
                session.mail = None;
                session.command_started = Instant::now();
            }
        }
    }
    let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
    session.log_end();
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, listener: &'a Listener, peer: SocketAddr) -> Self {
        Session {
            shared,
            listener,
            peer,
            ip: peer.ip().to_canonical(),
            directory: shared.directory(),
            tls: false,
            helo: None,
            authenticated: None,
            state: State::Command,
            mail: None,
            spool: Spool::default(),
            body_too_big: false,
            command_started: Instant::now(),
            data_started: Instant::now(),
            data_bytes: 0,
            mask_next: false,
            mask_until_command: false,
            bad_commands: 0,
            accepted: 0,
            skipping_long_line: false,
            input: Vec::new(),
            output: Vec::with_capacity(OUTPUT_ROOM),
            end: "closed",
        }
    }

    /// The session's one log line.
    fn log_end(&self) {
        tracing::info!(
            "session {} ({}) on {}{}{}: {} accepted, {}",
            self.peer,
            self.helo.as_deref().unwrap_or("no EHLO"),
            self.listener.name,
            if self.tls { " (TLS)" } else { "" },
            self.authenticated
                .as_ref()
                .map(|p| format!(" as {}", p.name))
                .unwrap_or_default(),
            self.accepted,
            self.end
        );
    }

    fn reply(&mut self, reply: Reply) {
        tracing::debug!("{} > {reply}", self.peer);
        reply.write_to(&mut self.output);
    }

    /// Serves commands until the session ends or switches to TLS.
    async fn serve(&mut self, stream: &mut Box<dyn Stream>) -> End {
        loop {
            // Answer everything already received.
            let end = if self.receiving() {
                self.take_data().await
            } else {
                match self.take_line() {
                    Some(line) => self.line(line).await,
                    None => None,
                }
            };
            if let Some(end) = end {
                if self.flush(stream).await.is_err() {
                    return End::Closed;
                }
                if matches!(end, End::StartTls) {
                    // Nothing sent before the handshake may count after it.
                    self.input.clear();
                }
                return end;
            }
            if self.has_line() && !self.receiving() {
                continue;
            }
            if self.receiving() && !self.input.is_empty() {
                continue;
            }
            // Nothing more to answer: send the replies, then wait.
            if self.flush(stream).await.is_err() {
                self.end = "write failed";
                return End::Closed;
            }
            let wait = self
                .read_deadline()
                .saturating_duration_since(Instant::now());
            let mut closing = self.shared.closing.subscribe();
            let idle = !self.receiving();
            // Read straight into the input's spare room: no buffer of its
            // own in the session's future. Waiting for a command, the
            // input is small (DATA's large buffer is let go once
            // consumed): an idle session holds little (RSS with many idle
            // connections).
            let mut input = std::mem::take(&mut self.input);
            if idle {
                if input.is_empty() && input.capacity() > COMMAND_CHUNK {
                    input = Vec::new();
                }
                input.reserve(COMMAND_CHUNK);
            } else {
                input.reserve(READ_CHUNK);
            }
            let read = tokio::select! {
                read = timeout(wait, stream.read_buf(&mut input)) => read,
                () = closed(&mut closing), if idle => {
                    self.reply(Reply::new(421, [4, 3, 2], "the relay is shutting down, try again later"));
                    let _ = self.flush(stream).await;
                    self.end = "shut down";
                    return End::Closed;
                }
            };
            self.input = input;
            match read {
                Ok(Ok(0)) => {
                    self.end = if self.mail.is_some() {
                        "the client went away mid-transaction"
                    } else {
                        "the client went away"
                    };
                    return End::Closed;
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) => {
                    self.end = "read failed";
                    return End::Closed;
                }
                Err(_) => {
                    self.reply(Reply::new(
                        421,
                        [4, 4, 2],
                        "timeout, closing the connection",
                    ));
                    let _ = self.flush(stream).await;
                    self.end = if self.receiving() {
                        "timed out in DATA, nothing queued"
                    } else {
                        "timed out"
                    };
                    return End::Closed;
                }
            }
        }
    }

    /// When the next read must have arrived: the whole command line within
    /// the command timeout of the reply before it; in DATA, each block
    /// within the block timeout, and the whole at `min_data_rate` past it.
    /// A client trickling bytes cannot push either back.
    fn read_deadline(&self) -> Instant {
        let limits = &self.shared.limits;
        if !self.receiving() {
            return self.command_started + limits.timeouts.command;
        }
        let block = Instant::now() + limits.timeouts.data_block;
        let earned =
            Duration::from_secs_f64(self.data_bytes as f64 / limits.min_data_rate.max(1) as f64);
        block.min(self.data_started + limits.timeouts.data_block + earned)
    }

    async fn flush(&mut self, stream: &mut Box<dyn Stream>) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let write = async {
            stream.write_all(&self.output).await?;
            stream.flush().await
        };
        let result = match timeout(self.shared.limits.timeouts.command, write).await {
            Ok(result) => result,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        };
        if self.output.capacity() > OUTPUT_KEPT {
            self.output = Vec::with_capacity(OUTPUT_ROOM);
        } else {
            self.output.clear();
        }
        result
    }

    fn has_line(&self) -> bool {
        self.input.contains(&b'\n')
    }

    /// The next complete line from the input, LF included. A line longer
    /// than the limit is answered `500` and skipped.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        let max = self.shared.limits.max_line_bytes;
        loop {
            match self.input.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    let line: Vec<u8> = self.input.drain(..=at).collect();
                    self.command_started = Instant::now();
                    if self.skipping_long_line {
                        self.skipping_long_line = false;
                        continue;
                    }
                    if line.len() > max {
                        self.line_too_long();
                        continue;
                    }
                    return Some(line);
                }
                None => {
                    if self.input.len() > max || (self.skipping_long_line && !self.input.is_empty())
                    {
                        if !self.skipping_long_line {
                            self.line_too_long();
                        }
                        self.skipping_long_line = true;
                        self.input.clear();
                    }
                    return None;
                }
            }
        }
    }

    fn line_too_long(&mut self) {
        self.bad_commands += 1;
        self.reply(Reply::new(500, [5, 5, 2], "line too long"));
    }

    /// Whether message content is expected rather than commands.
    fn receiving(&self) -> bool {
        matches!(self.state, State::Data(_) | State::Bdat { .. })
    }

    /// Feeds the input to the DATA or BDAT receiver; at the final dot, or
    /// the end of the last chunk, queues the message.
    async fn take_data(&mut self) -> Option<End> {
        let mut bytes = self.input.iter();
        let mut scratch = Vec::new();
        let (done, last) = match &mut self.state {
            State::Data(receiver) => {
                let sink = if self.body_too_big {
                    &mut scratch
                } else {
                    &mut self.spool.pending
                };
                (receiver.ingest(&mut bytes, sink), true)
            }
            State::Bdat { receiver, refusal } => {
                let sink = if self.body_too_big || refusal.is_some() {
                    &mut scratch
                } else {
                    &mut self.spool.pending
                };
                (receiver.ingest(&mut bytes, sink), receiver.is_last)
            }
            _ => return None,
        };
        let consumed = self.input.len() - bytes.as_slice().len();
        self.input.drain(..consumed);
        self.data_bytes += consumed as u64;
        let limit = self.mail.as_ref().map_or(0, |m| m.limit);
        if !self.body_too_big && self.spool.len() > limit {
            self.body_too_big = true;
            self.spool = Spool::default();
        }
        // Past a small buffer, the message goes to the outbox's tmp/.
        Box::pin(self.spool.settle(&self.shared.outbox, false)).await;
        if !done {
            return None;
        }
        self.command_started = Instant::now();
        match std::mem::replace(&mut self.state, State::Command) {
            State::Bdat {
                refusal: Some(reply),
                ..
            } => self.reply(reply),
            // A chunk too many ends the transaction at once.
            State::Bdat { .. } if !last && !self.body_too_big => {
                let received = self.spool.len();
                self.reply(Reply::new(
                    250,
                    [2, 0, 0],
                    format!("{received} octets received"),
                ));
            }
            // Boxed (as are AUTH's waits): an idle session's future
            // holds none of their state.
            _ => Box::pin(self.end_of_data()).await,
        }
        None
    }

    async fn end_of_data(&mut self) {
        let spool = std::mem::take(&mut self.spool);
        let too_big = std::mem::take(&mut self.body_too_big);
        let Some(mail) = self.mail.take() else {
            return;
        };
        if too_big {
            tracing::info!(
                "{}: refused a message over {} bytes from {}",
                self.peer,
                mail.limit,
                mail.principal.name
            );
            self.reply(too_big_reply(mail.limit));
            return;
        }
        let size = spool.len();
        let body = match spool.finish(&self.shared.outbox).await {
            Ok(body) => body,
            Err(reply) => {
                tracing::info!(
                    "refused a message from {} ({}): {reply}",
                    self.peer,
                    mail.principal.name
                );
                return self.reply(reply);
            }
        };
        let splits = self.shared.splits.clone();
        let mail = Arc::new(mail);
        let result = match self.shared.store.clone() {
            None => {
                let outbox = self.shared.outbox.clone();
                let mail = mail.clone();
                let task = tokio::task::spawn_blocking(move || {
                    let tx = Transaction {
                        principal: &mail.principal,
                        account: &mail.account,
                        mail_from: &mail.from,
                        recipients: &mail.recipients,
                    };
                    accept::accept(&outbox, &splits, &tx, body)
                });
                task.await.unwrap_or_else(|e| {
                    tracing::error!("queueing a message failed: {e}");
                    Err(accept::unavailable())
                })
            }
            Some(store) => Box::pin(into_store(&*store, &splits, &mail, body)).await,
        };
        match result {
            Ok(Queued::Covered(id)) => {
                self.accepted += 1;
                self.reply(Reply::new(
                    250,
                    [2, 0, 0],
                    format!("already queued as {id} for these recipients"),
                ));
            }
            Ok(Queued::New(id, subject)) => {
                self.accepted += 1;
                tracing::info!(
                    "accepted {id} from {} ({}) for account `{}`: {} recipient(s), {size} bytes",
                    self.peer,
                    mail.principal.name,
                    mail.principal.account,
                    mail.recipients.len()
                );
                let _ = self.shared.accepted.send(Accepted {
                    id: id.clone(),
                    identity: mail.account.identity.clone(),
                    details: Details {
                        subject,
                        client: Some(self.ip.to_string()),
                        smtp_user: self.authenticated.as_ref().map(|p| p.name.clone()),
                    },
                });
                self.reply(Reply::new(250, [2, 0, 0], format!("queued as {id}")));
            }
            Err(reply) => {
                tracing::info!(
                    "refused a message from {} ({}): {reply}",
                    self.peer,
                    mail.principal.name
                );
                self.reply(reply);
            }
        }
    }

    /// Answers one line: a command, or an AUTH exchange's response.
    async fn line(&mut self, line: Vec<u8>) -> Option<End> {
        let state = std::mem::replace(&mut self.state, State::Command);
        if !matches!(state, State::Command | State::Data(_) | State::Bdat { .. }) {
            // Inside a SASL exchange: every line is a secret.
            self.mask_next = false;
            self.mask_until_command = false;
        }
        match state {
            State::Command | State::Data(_) | State::Bdat { .. } => self.command(&line).await,
            State::AuthPlain => {
                tracing::debug!("{} < ****", self.peer);
                Box::pin(self.auth_plain(text(&line))).await;
                None
            }
            State::AuthLoginUser => {
                tracing::debug!("{} < ****", self.peer);
                self.login_user(text(&line));
                None
            }
            State::AuthLoginPassword(user) => {
                tracing::debug!("{} < ****", self.peer);
                match decode(text(&line)) {
                    Ok(password) => {
                        let password = String::from_utf8_lossy(&password).into_owned();
                        Box::pin(self.check_password(user, password)).await
                    }
                    Err(reply) => self.reply(reply),
                }
                None
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> Option<End> {
        let parsed = Request::parse(&mut line.iter()).map(|r| r.into_owned());
        self.log_line(line, parsed.is_ok());
        let request = match parsed {
            Ok(request) => request,
            Err(error) => return self.bad_command(error_reply(error)),
        };
        match request {
            Request::Ehlo { host } => self.ehlo(&host),
            Request::Helo { host } => {
                self.mail = None;
                self.helo = Some(printable(&host));
                self.reply(Reply::new(250, [2, 0, 0], self.shared.hostname.clone()));
            }
            Request::Mail { from } => self.mail_from(from),
            Request::Rcpt { to } => self.rcpt_to(to.address),
            Request::Data => self.data(),
            Request::Auth {
                mechanism,
                initial_response,
            } => Box::pin(self.auth(mechanism, initial_response)).await,
            Request::StartTls => return self.starttls(),
            Request::Rset => {
                self.mail = None;
                self.reply(Reply::new(250, [2, 0, 0], "OK"));
            }
            Request::Noop { .. } => self.reply(Reply::new(250, [2, 0, 0], "OK")),
            Request::Vrfy { .. } => self.reply(Reply::new(
                252,
                [2, 1, 5],
                "cannot VRFY the user, but will accept the message",
            )),
            Request::Help { .. } => self.reply(Reply::new(
                214,
                [2, 0, 0],
                "EHLO, AUTH, MAIL, RCPT, DATA, RSET, NOOP, VRFY, STARTTLS, HELP, QUIT",
            )),
            Request::Quit => {
                self.reply(Reply::new(221, [2, 0, 0], "bye"));
                self.end = "quit";
                return Some(End::Closed);
            }
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last),
            Request::Lhlo { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                return self.bad_command(Reply::new(502, [5, 5, 1], "command not implemented"));
            }
        }
        None
    }

    /// Logs a command line for -v, but never what may be a credential: an
    /// AUTH line, the line after it (refused or not), and the lines after
    /// that until one is a command.
    fn log_line(&mut self, line: &[u8], is_command: bool) {
        let is_auth = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"AUTH");
        if is_auth {
            tracing::debug!("{} < AUTH ****", self.peer);
        } else if self.mask_next || (self.mask_until_command && !is_command) {
            tracing::debug!("{} < ****", self.peer);
        } else {
            let shown = String::from_utf8_lossy(line);
            tracing::debug!("{} < {}", self.peer, printable(shown.trim_end()));
        }
        self.mask_next = is_auth;
        self.mask_until_command = is_auth || (self.mask_until_command && !is_command);
    }

    /// Counts a bad command; too many end the session.
    fn bad_command(&mut self, reply: Reply) -> Option<End> {
        self.bad_commands += 1;
        if self.bad_commands > self.shared.limits.max_bad_commands {
            self.reply(Reply::new(
                421,
                [4, 7, 0],
                "too many errors, closing the connection",
            ));
            self.end = "too many bad commands";
            return Some(End::Closed);
        }
        self.reply(reply);
        None
    }

    /// Whether AUTH may be used on this connection as it is now.
    fn auth_allowed_now(&self) -> bool {
        self.tls || self.ip.is_loopback() || self.listener.allow_plaintext_auth
    }

    fn starttls_offered(&self) -> bool {
        !self.tls && matches!(self.listener.tls, ListenerTls::Plain { starttls: Some(_) })
    }

    /// The principal a client that did not AUTH maps to, if it may send
    /// without AUTH.
    fn unauthenticated_principal(&self) -> Result<Principal, Reply> {
        let auth_required = Reply::new(530, [5, 7, 0], "authentication required");
        let denied = Reply::new(550, [5, 7, 1], format!("relaying denied for {}", self.ip));
        if self.listener.require_auth {
            return Err(auth_required);
        }
        // Networks, when the listener names them, are the whole rule:
        // loopback clients too must be in one.
        let networks = &self.listener.allowed_networks;
        let allowed = if networks.is_empty() {
            self.ip.is_loopback()
        } else {
            networks.iter().any(|net| net.contains(&self.ip))
        };
        if allowed && let Some(principal) = self.directory.for_client(&self.listener.name, self.ip)
        {
            return Ok(principal);
        }
        if self.auth_allowed_now() || self.starttls_offered() {
            Err(auth_required)
        } else {
            Err(denied)
        }
    }

    /// The message size limit for `principal`, with its account.
    fn account_for(&self, principal: &Principal) -> Result<(AccountInfo, u64), Reply> {
        let account = self.directory.account(&principal.account).ok_or_else(|| {
            tracing::error!(
                "relay principal `{}` maps to account `{}`, which is not configured",
                principal.name,
                principal.account
            );
            Reply::new(451, [4, 3, 5], "the sending account is not available")
        })?;
        let limit = account
            .max_message_bytes
            .min(self.shared.limits.max_message_bytes);
        Ok((account, limit))
    }

    fn ehlo(&mut self, host: &str) {
        self.mail = None;
        self.helo = Some(printable(host));
        let mut ehlo = EhloResponse::new(self.shared.hostname.as_str());
        ehlo.capabilities = EXT_CHUNKING
            | EXT_PIPELINING
            | EXT_8BIT_MIME
            | EXT_ENHANCED_STATUS_CODES
            | EXT_SMTP_UTF8
            | EXT_SIZE;
        // SIZE: the account's limit once the client is known (by its
        // network, or by AUTH for a client that sends EHLO again), else
        // the largest any account takes.
        let ceiling = self.shared.limits.max_message_bytes;
        let known = self
            .authenticated
            .clone()
            .or_else(|| self.unauthenticated_principal().ok());
        let size = match known {
            Some(principal) => self
                .account_for(&principal)
                .map_or(ceiling, |(_, limit)| limit),
            None => self
                .directory
                .largest_message_bytes()
                .map_or(ceiling, |largest| largest.min(ceiling)),
        };
        ehlo.size = size.try_into().unwrap_or(usize::MAX);
        if self.starttls_offered() {
            ehlo.capabilities |= EXT_START_TLS;
        }
        if self.auth_allowed_now() && self.authenticated.is_none() {
            ehlo.capabilities |= EXT_AUTH;
            ehlo.auth_mechanisms = AUTH_PLAIN | AUTH_LOGIN;
        }
        let mut out = Vec::new();
        let _ = ehlo.write(&mut out);
        // smtp-proto's first line has its own greeting text; use ours.
        let rest = out
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&out[..0], |at| &out[at + 1..]);
        tracing::debug!("{} > 250 EHLO capabilities", self.peer);
        self.output
            .extend_from_slice(format!("250-{}\r\n", self.shared.hostname).as_bytes());
        self.output.extend_from_slice(rest);
    }

    fn mail_from(&mut self, from: smtp_proto::MailFrom<String>) {
        if self.helo.is_none() {
            return self.reply(Reply::new(503, [5, 5, 1], "send EHLO first"));
        }
        if self.mail.is_some() {
            return self.reply(Reply::new(
                503,
                [5, 5, 1],
                "a transaction is already in progress",
            ));
        }
        if let Some(reply) = self.mail_from_refusal(&from.address, from.size as u64) {
            tracing::info!(
                "{}: MAIL FROM {} refused: {reply}",
                self.peer,
                printable(&from.address)
            );
            return self.reply(reply);
        }
        self.reply(Reply::new(250, [2, 1, 0], "OK"));
    }

    fn mail_from_refusal(&mut self, address: &str, size: u64) -> Option<Reply> {
        let principal = match self.authenticated.clone() {
            Some(p) => p,
            None => match self.unauthenticated_principal() {
                Ok(p) => p,
                Err(reply) => return Some(reply),
            },
        };
        let (account, limit) = match self.account_for(&principal) {
            Ok(found) => found,
            Err(reply) => return Some(reply),
        };
        if size > limit {
            return Some(too_big_reply(limit));
        }
        if !principal.rewrite_from
            && !address.is_empty()
            && !principal
                .sender_policy()
                .allows(account.address.as_deref(), address)
        {
            return Some(not_allowed(address));
        }
        if let Some(per_minute) = principal.messages_per_minute
            && !self.shared.rate.try_take(&principal.name, per_minute)
        {
            return Some(Reply::new(
                451,
                [4, 7, 0],
                format!("rate limit of {per_minute} messages per minute reached, try again later"),
            ));
        }
        self.spool = Spool::default();
        self.body_too_big = false;
        self.mail = Some(Mail {
            principal,
            account,
            from: address.to_owned(),
            recipients: Vec::new(),
            limit,
        });
        None
    }

    fn rcpt_to(&mut self, address: String) {
        let max = self.shared.limits.max_recipients;
        let Some(mail) = &mut self.mail else {
            return self.reply(Reply::new(503, [5, 5, 1], "send MAIL first"));
        };
        if mail.recipients.len() >= max {
            return self.reply(Reply::new(452, [4, 5, 3], "too many recipients"));
        }
        let local = address
            .rsplit_once('@')
            .map_or(address.as_str(), |(l, _)| l);
        if !local.is_ascii() {
            // RFC 6531 §3.7.4.1; the APIs' address handling is ASCII.
            return self.reply(Reply::new(
                553,
                [5, 6, 7],
                "non-ASCII local parts are not supported",
            ));
        }
        if address.parse::<Mailbox>().is_err() {
            let text = format!("bad recipient address {}", printable(&address));
            return self.reply(Reply::new(553, [5, 1, 3], text));
        }
        mail.recipients.push(address);
        self.reply(Reply::new(250, [2, 1, 5], "OK"));
    }

    fn data(&mut self) {
        let Some(mail) = &self.mail else {
            return self.reply(Reply::new(503, [5, 5, 1], "send MAIL first"));
        };
        if mail.recipients.is_empty() {
            return self.reply(Reply::new(554, [5, 5, 1], "no valid recipients"));
        }
        if !self.spool.is_empty() || self.body_too_big {
            return self.reply(Reply::new(
                503,
                [5, 5, 1],
                "BDAT in progress: DATA not allowed",
            ));
        }
        self.spool = Spool::default();
        self.body_too_big = false;
        self.data_started = Instant::now();
        self.data_bytes = 0;
        self.state = State::Data(DotReader::new());
        self.reply(Reply::new(
            354,
            [0, 0, 0],
            "end data with <CR><LF>.<CR><LF>",
        ));
    }

    /// BDAT (CHUNKING, RFC 3030): the chunk is read in any case, then
    /// answered.
    fn bdat(&mut self, size: usize, last: bool) {
        let refusal = match &self.mail {
            None => Some(Reply::new(503, [5, 5, 1], "send MAIL first")),
            Some(mail) if mail.recipients.is_empty() => {
                Some(Reply::new(554, [5, 5, 1], "no valid recipients"))
            }
            Some(_) => None,
        };
        self.data_started = Instant::now();
        self.data_bytes = 0;
        self.state = State::Bdat {
            receiver: BdatReceiver::new(size, last),
            refusal,
        };
    }

    fn starttls(&mut self) -> Option<End> {
        if !self.starttls_offered() {
            return self.bad_command(Reply::new(502, [5, 5, 1], "STARTTLS not available"));
        }
        self.reply(Reply::new(220, [2, 0, 0], "ready to start TLS"));
        Some(End::StartTls)
    }

    async fn auth(&mut self, mechanism: u64, initial: String) {
        if self.authenticated.is_some() {
            return self.reply(Reply::new(503, [5, 5, 1], "already authenticated"));
        }
        if self.mail.is_some() {
            return self.reply(Reply::new(
                503,
                [5, 5, 1],
                "AUTH not allowed during a transaction",
            ));
        }
        if !self.auth_allowed_now() {
            return self.reply(Reply::new(
                538,
                [5, 7, 11],
                "encryption required: use STARTTLS or the TLS port",
            ));
        }
        if let Gate::Locked(left) = self.shared.backoff.gate(self.ip) {
            return self.locked_out(left);
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.state = State::AuthPlain;
                self.reply(Reply::plain(334, ""));
            }
            AUTH_PLAIN => self.auth_plain(&initial).await,
            AUTH_LOGIN if initial.is_empty() => {
                self.state = State::AuthLoginUser;
                self.reply(Reply::plain(334, "VXNlcm5hbWU6"));
            }
            AUTH_LOGIN => self.login_user(&initial),
            _ => self.reply(Reply::new(504, [5, 5, 4], "use AUTH PLAIN or AUTH LOGIN")),
        }
    }

    fn locked_out(&mut self, left: Duration) {
        tracing::warn!(
            "AUTH from {} refused: too many failed logins (locked for {}s more)",
            self.ip,
            left.as_secs()
        );
        self.reply(Reply::new(
            454,
            [4, 7, 0],
            "too many failed logins, try again later",
        ));
    }

    /// AUTH LOGIN's user name; asks for the password.
    fn login_user(&mut self, response: &str) {
        match decode(response) {
            Ok(user) => {
                self.state = State::AuthLoginPassword(String::from_utf8_lossy(&user).into_owned());
                self.reply(Reply::plain(334, "UGFzc3dvcmQ6"));
            }
            Err(reply) => self.reply(reply),
        }
    }

    async fn auth_plain(&mut self, response: &str) {
        let decoded = match decode(response) {
            Ok(decoded) => decoded,
            Err(reply) => return self.reply(reply),
        };
        // authzid NUL authcid NUL password
        let mut parts = decoded.split(|&b| b == 0);
        let (Some(authz), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.reply(Reply::new(501, [5, 5, 2], "malformed AUTH PLAIN response"));
        };
        let user = String::from_utf8_lossy(user).into_owned();
        if !authz.is_empty() && authz != user.as_bytes() {
            return self.check_password(user, String::new()).await;
        }
        self.check_password(user, String::from_utf8_lossy(password).into_owned())
            .await;
    }

    async fn check_password(&mut self, user: String, password: String) {
        // Counted against the address before anything runs, so parallel
        // connections cannot run more checks than one connection could.
        let attempt = match self.shared.backoff.begin(self.ip) {
            Ok(attempt) => attempt,
            Err(left) => return self.locked_out(left),
        };
        let found = if password.is_empty() {
            None
        } else {
            // A few verifications at once over all sessions, in turn: each
            // holds its hash's memory cost while it runs.
            let directory = self.directory.clone();
            let name = user.clone();
            match self.shared.auth_checks.clone().acquire_owned().await {
                Ok(permit) => tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    directory.authenticate(&name, &password)
                })
                .await
                .unwrap_or(None),
                Err(_) => None,
            }
        };
        match found {
            Some(principal) => {
                attempt.succeeded();
                tracing::info!(
                    "{}: authenticated as {} (account `{}`)",
                    self.peer,
                    principal.name,
                    principal.account
                );
                self.authenticated = Some(principal);
                self.reply(Reply::new(235, [2, 7, 0], "authentication successful"));
            }
            None => {
                let (delay, failures) = attempt.failed();
                tracing::warn!(
                    "{}: failed login for user `{}` ({failures} in a row from {}{})",
                    self.peer,
                    printable(&user),
                    self.ip,
                    if delay.is_zero() {
                        String::new()
                    } else {
                        format!("; answering after {} ms", delay.as_millis())
                    }
                );
                tokio::time::sleep(delay).await;
                self.reply(Reply::new(
                    535,
                    [5, 7, 8],
                    "authentication credentials invalid",
                ));
            }
        }
    }
}

/// Resolves when the server stops accepting.
async fn closed(closing: &mut tokio::sync::watch::Receiver<bool>) {
    if closing.wait_for(|c| *c).await.is_err() {
        // The server is gone: never resolve.
        std::future::pending::<()>().await;
    }
}

/// Takes the message in and commits it into a shared store: the intake's
/// work off the async thread (it reads nothing but memory, yet it is the
/// same work as the local path's), then the store's commit. Any failure
/// of the store is a 451: nothing is answered 250 before it committed.
async fn into_store(
    store: &dyn Intake,
    splits: &Splits,
    mail: &Arc<Mail>,
    body: Received,
) -> Result<Queued, Reply> {
    let prepared = {
        let (splits, mail) = (splits.clone(), mail.clone());
        tokio::task::spawn_blocking(move || {
            let tx = Transaction {
                principal: &mail.principal,
                account: &mail.account,
                mail_from: &mail.from,
                recipients: &mail.recipients,
            };
            accept::prepare(&splits, &tx, body)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!("queueing a message failed: {e}");
            Err(accept::unavailable())
        })?
    };
    let mut ready = match prepared {
        Prepared::Covered(id) => return Ok(Queued::Covered(id)),
        Prepared::Ready(ready) => ready,
    };
    let message = ready.message.take().expect("a prepared message");
    let entry = std::mem::take(&mut ready.entry);
    let committed = message.commit_to(store, &ready.bytes, entry).await;
    let queued = committed.map_err(|e| {
        tracing::error!("cannot queue a message in the store: {e}");
        accept::unavailable()
    });
    ready.settle(splits, queued)
}

fn too_big_reply(limit: u64) -> Reply {
    Reply::new(
        552,
        [5, 3, 4],
        format!("message too big: this account takes up to {limit} bytes"),
    )
}

/// A line without its CRLF, as text.
fn text(line: &[u8]) -> &str {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    std::str::from_utf8(line).unwrap_or("\u{fffd}").trim()
}

/// An AUTH response: base64, `=` for empty, or `*` to cancel.
fn decode(response: &str) -> Result<Vec<u8>, Reply> {
    match response {
        "*" => Err(Reply::new(501, [5, 0, 0], "AUTH cancelled")),
        "=" => Ok(Vec::new()),
        text => BASE64
            .decode(text)
            .map_err(|_| Reply::new(501, [5, 5, 2], "invalid base64")),
    }
}

fn error_reply(error: ProtoError) -> Reply {
    match error {
        ProtoError::UnknownCommand => Reply::new(500, [5, 5, 1], "unknown command"),
        ProtoError::InvalidSenderAddress => Reply::new(501, [5, 1, 7], "bad sender address"),
        ProtoError::InvalidRecipientAddress => Reply::new(501, [5, 1, 3], "bad recipient address"),
        ProtoError::SyntaxError { syntax } => {
            Reply::new(501, [5, 5, 2], format!("syntax: {syntax}"))
        }
        ProtoError::InvalidParameter { param } => {
            Reply::new(501, [5, 5, 4], format!("invalid parameter {param}"))
        }
        ProtoError::UnsupportedParameter { param } => Reply::new(
            555,
            [5, 5, 4],
            format!("unsupported parameter {}", printable(&param)),
        ),
        ProtoError::ResponseTooLong => Reply::new(500, [5, 5, 2], "line too long"),
        ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
            Reply::new(500, [5, 5, 2], "syntax error")
        }
    }
}
