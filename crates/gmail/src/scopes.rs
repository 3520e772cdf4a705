//! The OAuth scopes apimail asks Google for.

/// The scope apimail asks for: send mail, nothing else.
pub const SEND_SCOPE: &str = "https://www.googleapis.com/auth/gmail.send";

/// The sign-in scopes a login asks for besides [`SEND_SCOPE`]: Google's
/// non-sensitive `openid email`, which give an `id_token` with the
/// account's address and no access to mail.
pub const SIGN_IN_SCOPES: [&str; 2] = ["openid", "email"];

/// The box on Google's consent screen that grants `scope`, for telling a
/// user which one to tick.
pub fn consent_box(scope: &str) -> &'static str {
    match scope {
        SEND_SCOPE => "Send email on your behalf",
        METADATA_SCOPE => {
            "View your email message metadata such as labels and headers, but not the email body"
        }
        _ => "the permission apimail asked for",
    }
}

/// The opt-in scope (`auth login gmail --verify-sent`) that lets apimail
/// check, after a send whose answer was lost, whether the message is in
/// Sent. It shows every message's headers (never bodies) and is one of
/// Google's restricted scopes, so it is never asked for by default. It
/// cannot search (`q` is refused with it): the check reads the Message-ID
/// of the newest [`SENT_CHECK_DEPTH`] sent messages.
pub const METADATA_SCOPE: &str = "https://www.googleapis.com/auth/gmail.metadata";

/// How many of the newest sent messages a Sent check reads.
pub const SENT_CHECK_DEPTH: u32 = 20;
