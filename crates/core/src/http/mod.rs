//! The one HTTP policy every client apimail builds follows: one rustls
//! configuration (ring) with the roots loaded once per process, one proxy
//! rule set, one user agent, and the same timeouts.
//!
//! - Roots: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the system
//!   bundle ([`tls_config`]).
//! - Proxy: `HTTPS_PROXY` (or `https_proxy`, `ALL_PROXY`) for https
//!   destinations, minus `NO_PROXY`, read once ([`proxy_for`]). Plain http
//!   is only ever allowed to loopback hosts and always connects directly.
//! - Timeouts ([`Timeouts`]): connecting (TCP, proxy tunnel and TLS
//!   handshake) and a stall limit: no byte moved in either direction while
//!   a request is outstanding. A slow but moving upload never hits either.
//!   The overall bound of a whole send is the retry policy's
//!   (`RetryPolicy::max_elapsed`).
//!
//! [`Stall`] wraps a connection's IO for the stall limit (the hyper
//! stack); [`exchange`] keeps the same limit for a reqwest request, whose
//! connection cannot be wrapped; [`NetFailure`] reads what went wrong out
//! of any client's error chain.

mod chain;
mod client;
mod exchange;
mod failure;
mod proxy;
mod stall;
#[cfg(test)]
mod tests;
mod timeouts;
mod tls;

pub use chain::find;
pub use client::{USER_AGENT, reqwest_builder, shared_client};
pub use exchange::{Received, exchange};
pub use failure::NetFailure;
pub use proxy::{ProxyError, proxy_for, proxy_matcher, proxy_setting, reqwest_proxy};
pub use stall::{HttpTimeout, Phase, Stall, connecting};
pub use timeouts::{Timeouts, set_timeouts, timeouts};
pub use tls::{TlsSetupError, root_source, tls_config};
