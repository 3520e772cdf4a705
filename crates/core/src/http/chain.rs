//! Reading an error's chain of causes, custom errors inside io errors
//! included.

use std::error::Error as StdError;
use std::io;

/// Every error in `error`'s chain, including the custom errors inside
/// `io::Error`s (which `source` skips).
pub(super) fn chain<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut all = Vec::new();
    let mut next = Some(error);
    while let Some(current) = next {
        all.push(current);
        next = match current
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => current.source(),
        };
    }
    all
}

/// The first `E` in `error`'s chain.
pub fn find<'a, E: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    chain(error).into_iter().find_map(|e| e.downcast_ref::<E>())
}
