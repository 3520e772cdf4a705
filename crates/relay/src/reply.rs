//! SMTP replies, as the session writes them.

use std::borrow::Cow;
use std::fmt;

/// One SMTP reply line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    code: u16,
    status: [u8; 3],
    text: Cow<'static, str>,
}

impl Reply {
    pub(super) fn new(code: u16, status: [u8; 3], text: impl Into<Cow<'static, str>>) -> Self {
        Reply {
            code,
            status,
            text: text.into(),
        }
    }

    /// A reply without an enhanced status code (220, 334, 354).
    pub(super) fn plain(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Reply::new(code, [0, 0, 0], text)
    }

    pub(super) fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            [0, 0, 0] => write!(f, "{} {}", self.code, self.text),
            [a, b, c] => write!(f, "{} {a}.{b}.{c} {}", self.code, self.text),
        }
    }
}
