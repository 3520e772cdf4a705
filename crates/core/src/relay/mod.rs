//! `apimail relay`: an SMTP submission server that accepts mail from
//! devices and applications and delivers it through the outbox.
//!
//! - `tls`: the listeners' rustls configuration (files or self-signed).
//! - `users`: the relay users file (argon2 hashes).
//! - `workers`: the delivery workers over the engine.

pub mod tls;
pub mod users;
pub mod workers;
