//! The provider's size limit, enforced while a message is written.

use std::io::{self, Write};

/// A writer that refuses to take more than `limit` bytes in all: the
/// write that would go over fails, so composing stops at once.
pub struct Limited<W> {
    inner: W,
    limit: u64,
    written: u64,
    /// What the refused write would have brought the total to.
    refused_at: Option<u64>,
}

impl<W: Write> Limited<W> {
    pub fn new(inner: W, limit: usize) -> Self {
        Limited {
            inner,
            limit: limit as u64,
            written: 0,
            refused_at: None,
        }
    }

    /// When a write was refused for going over the limit, the size the
    /// message had reached with it.
    pub fn refused_at(&self) -> Option<u64> {
        self.refused_at
    }

    /// Bytes taken so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let total = self.written + buf.len() as u64;
        if total > self.limit {
            self.refused_at = Some(total);
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "over the provider's size limit",
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_write_that_goes_over() {
        let mut out = Vec::new();
        let mut limited = Limited::new(&mut out, 5);
        limited.write_all(b"abc").unwrap();
        assert!(limited.write_all(b"def").is_err());
        assert_eq!(limited.refused_at(), Some(6));
        assert_eq!(limited.written(), 3);
        assert_eq!(out, b"abc");
    }
}
