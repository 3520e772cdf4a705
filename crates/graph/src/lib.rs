//! apimail-graph: the Microsoft Graph provider for apimail.
//!
//! Not built yet: this crate will implement `apimail_core::Transport`.
//! Until it does, nothing here can send, and apimail says so.
