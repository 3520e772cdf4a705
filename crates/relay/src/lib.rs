//! apimail-relay: the SMTP submission server behind `apimail relay`.
//!
//! Devices and applications that only speak SMTP hand their mail to a
//! [`Server`]; each message is written durably into the [`Outbox`] with
//! the sender identity of the account its client maps to, and announced on
//! a channel ([`Accepted`]) for the delivery workers. The reply to the end
//! of DATA is 250 only once the entry is fsynced, or, over a shared store
//! ([`Server::over_store`]), once its transaction has committed; a store
//! that cannot take it gets the client a 451.
//!
//! - `session.rs`: one SMTP session over any byte stream (smtp-proto parses
//!   the commands; the loop, the replies and the limits are ours).
//! - `server.rs`: listeners, the connection limit, graceful shutdown,
//!   reload.
//! - `policy.rs`: the rate limit per principal (the AUTH back-off per
//!   client address is [`apimail_core::login_backoff`]).
//! - `data.rs`: the end of DATA (`.` alone on a line, after CRLF or a
//!   bare LF) and dot-unstuffing.
//! - `accept.rs`: the accepted message and its envelope into the outbox,
//!   through [`apimail_core::intake`] with the principal's sender policy
//!   (`allowed_from`, `rewrite_from`).
//! - `split.rs`: split envelopes (one message over several transactions):
//!   header recipients get one copy.
//! - `reply.rs`, `shared.rs`: SMTP replies; what all sessions share.
//! - `handshake.rs`: the TLS handshake, its failures named (TLS 1.0/1.1
//!   only, no common cipher) with the fix.
//! - `spool.rs`: a message arriving in DATA: in memory while small, then in
//!   a temporary file of the outbox.
//! - `intake.rs`: accepting into a shared store (PostgreSQL) instead of
//!   the outbox: any [`apimail_core::store::Store`] behind one boxed face,
//!   so the sessions are not generic; the local spool never goes through it.
//! - `listener.rs`, `limits.rs`: a listener's rules and TLS; the server's
//!   limits.
//! - `directory.rs`: what the server asks about clients and accounts
//!   ([`Directory`]), and hands the workers ([`Accepted`]).
//! - `tls.rs`: the listeners' rustls configuration (PEM files, or a
//!   self-signed certificate kept in the data directory).
//! - `users.rs`: the relay users file (argon2id hashes).
//! - `workers.rs`: the delivery workers: the engine over due entries,
//!   paced per mailbox, with postmaster reports; over the local outbox
//!   (a schedule in memory) or a shared store (claims and pace in it).
//!
//! [`Outbox`]: apimail_core::outbox::Outbox

#![deny(missing_docs)]

mod accept;
mod data;
mod directory;
mod handshake;
mod intake;
mod limits;
mod listener;
mod policy;
mod reply;
mod server;
mod session;
mod shared;
mod split;
mod spool;
#[cfg(test)]
mod tests;
pub mod tls;
pub mod users;
pub mod workers;

pub use apimail_core::login_backoff::BackoffSettings;
pub use directory::{Accepted, AccountInfo, Directory, Principal};
pub use ipnet::IpNet;
pub use limits::{Limits, SmtpTimeouts};
pub use listener::{Listener, ListenerTls};
pub use server::Server;
