//! The async runtime: one current-thread tokio runtime per command.

use anyhow::anyhow;

use crate::exit::{Exit, Failure};

/// Runs `future` to completion on a new current-thread runtime.
pub(crate) fn block_on<F: std::future::Future<Output = Result<(), Failure>>>(
    future: F,
) -> Result<(), Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::new(
                Exit::Software,
                anyhow!(e).context("cannot start the async runtime"),
            )
        })?
        .block_on(future)
}
