//! Mailboxes: a display name plus an RFC 5322 addr-spec.
//!
//! Domains may be internationalised; they are stored in their ASCII
//! (A-label) form so every header stays 7-bit. Local parts must be ASCII,
//! because non-ASCII local parts need SMTPUTF8 end to end.

use std::fmt;
use std::str::FromStr;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address `{input}`: {reason}")]
pub struct AddressError {
    /// The text as the user gave it.
    pub input: String,
    /// What is wrong with it, in plain words.
    pub reason: String,
}

/// One mailbox, such as `Alice <alice@example.com>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    name: Option<String>,
    email: String,
}

impl Mailbox {
    /// A mailbox from a display name and an addr-spec (`local@domain`).
    ///
    /// ```
    /// let m = apimail_core::Mailbox::new(Some("Ann"), "ann@bücher.example")?;
    /// assert_eq!(m.email(), "ann@xn--bcher-kva.example");
    /// # Ok::<(), apimail_core::AddressError>(())
    /// ```
    pub fn new(name: Option<&str>, email: &str) -> Result<Self, AddressError> {
        let email = normalize_addr_spec(email)?;
        let name = match name.map(str::trim) {
            Some("") | None => None,
            Some(name) if name.contains(['\r', '\n']) => {
                return Err(AddressError {
                    input: name.to_owned(),
                    reason: "the display name contains a line break".into(),
                });
            }
            Some(name) => Some(name.to_owned()),
        };
        Ok(Mailbox { name, email })
    }

    /// The display name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The addr-spec, with the domain in ASCII form.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// The domain part of the address (ASCII form).
    pub fn domain(&self) -> &str {
        self.email.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

impl fmt::Display for Mailbox {
    /// Human form, for messages and logs (not for headers).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} <{}>", self.email),
            None => f.write_str(&self.email),
        }
    }
}

impl FromStr for Mailbox {
    type Err = AddressError;

    /// Parses `addr@example.com`, `Name <addr@example.com>` or
    /// `"Doe, Jane" <addr@example.com>`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        let error = |reason: &str| AddressError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if text.contains(['\r', '\n']) {
            return Err(error("it contains a line break"));
        }
        let Some(open) = text.rfind('<') else {
            if text.contains('>') {
                return Err(error("it has `>` without a matching `<`"));
            }
            return Mailbox::new(None, text).map_err(|e| AddressError {
                input: input.to_owned(),
                reason: e.reason,
            });
        };
        let Some(addr) = text[open + 1..].strip_suffix('>') else {
            return Err(error("text follows the closing `>`, or `>` is missing"));
        };
        let name = unquote_display_name(text[..open].trim()).map_err(|r| error(&r))?;
        Mailbox::new(Some(&name), addr).map_err(|e| AddressError {
            input: input.to_owned(),
            reason: e.reason,
        })
    }
}

/// A recipient as a caller or a header names it: a full address, or a
/// bare local name such as `root`, which only an alias turns into
/// addresses (see [`crate::aliases`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// A full address.
    Mailbox(Mailbox),
    /// A local name without a domain (`root`, `postmaster`).
    Local(String),
}

impl Recipient {
    /// A bare local name (a dot-atom of at most 64 characters, no `@`), or
    /// `None` when `text` is not one.
    pub fn local(text: &str) -> Option<Recipient> {
        let text = text.trim();
        let dot_atom = !text.is_empty()
            && text.len() <= 64
            && !text.split('.').any(str::is_empty)
            && text.chars().all(|c| c == '.' || is_atext(c));
        dot_atom.then(|| Recipient::Local(text.to_owned()))
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipient::Mailbox(mailbox) => mailbox.fmt(f),
            Recipient::Local(name) => f.write_str(name),
        }
    }
}

impl FromStr for Recipient {
    type Err = AddressError;

    /// A bare local name (`root`), else a mailbox as [`Mailbox`] parses it.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match Recipient::local(input) {
            Some(local) => Ok(local),
            None => input.parse().map(Recipient::Mailbox),
        }
    }
}

/// Splits an address list on commas outside double quotes and angle
/// brackets, trimming each part and dropping empty ones.
pub(crate) fn split_list(text: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut angle, mut escaped) = (0, false, false, false);
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

fn unquote_display_name(name: &str) -> Result<String, String> {
    let Some(inner) = name.strip_prefix('"') else {
        return Ok(name.to_owned());
    };
    let Some(inner) = inner.strip_suffix('"') else {
        return Err("the display name has an opening `\"` but no closing one".into());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => return Err("the display name has an unescaped `\"` inside quotes".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// RFC 5322 `atext`.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

fn normalize_addr_spec(input: &str) -> Result<String, AddressError> {
    let error = |reason: &str| AddressError {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let Some((local, domain)) = input.rsplit_once('@') else {
        return Err(error("it has no `@`"));
    };
    check_local_part(local).map_err(|r| error(&r))?;
    let domain = check_domain(domain).map_err(|r| error(&r))?;
    Ok(format!("{local}@{domain}"))
}

fn check_local_part(local: &str) -> Result<(), String> {
    if local.is_empty() {
        return Err("the part before `@` is empty".into());
    }
    if !local.is_ascii() {
        return Err("the part before `@` has non-ASCII characters, which needs SMTPUTF8 and is not supported".into());
    }
    if local.len() > 64 {
        return Err("the part before `@` is longer than 64 characters".into());
    }
    if let Some(quoted) = local.strip_prefix('"') {
        // quoted-string: printable ASCII, with `"` and `\` escaped.
        let Some(body) = quoted.strip_suffix('"') else {
            return Err("the quoted local part is not closed with `\"`".into());
        };
        let mut escaped = false;
        for c in body.chars() {
            match (escaped, c) {
                (true, ' '..='~') => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => return Err("the quoted local part has an unescaped `\"`".into()),
                (false, ' '..='~') => {}
                _ => return Err("the quoted local part has a control character".into()),
            }
        }
        if escaped {
            return Err("the quoted local part ends with a lone `\\`".into());
        }
        return Ok(());
    }
    // dot-atom
    if local.split('.').any(str::is_empty) {
        return Err(
            "the part before `@` has an empty segment (leading, trailing or double `.`)".into(),
        );
    }
    if let Some(c) = local.chars().find(|&c| c != '.' && !is_atext(c)) {
        return Err(format!(
            "the part before `@` contains `{}`, which is not allowed unquoted",
            c.escape_default()
        ));
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<String, String> {
    if domain.is_empty() {
        return Err("the domain after `@` is empty".into());
    }
    if domain.starts_with('[') {
        return Err(
            "address literals such as [192.0.2.1] are not supported; use a domain name".into(),
        );
    }
    if let Some(c) = domain
        .chars()
        .find(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "the domain contains `{}`; only letters, digits, `-` and `.` are allowed",
            c.escape_default()
        ));
    }
    let ascii = idna::domain_to_ascii_strict(domain)
        .map_err(|_| format!("`{domain}` is not a valid (internationalised) domain name"))?;
    if ascii
        .split('.')
        .any(|label| label.is_empty() || label.len() > 63)
    {
        return Err("the domain has an empty or over-long label".into());
    }
    if ascii.len() > 253 {
        return Err("the domain is longer than 253 characters".into());
    }
    Ok(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Mailbox {
        input.parse().unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    fn reason(input: &str) -> String {
        input.parse::<Mailbox>().unwrap_err().reason
    }

    #[test]
    fn accepts_common_forms() {
        assert_eq!(ok("a@example.com").email(), "a@example.com");
        let m = ok("Alice Liddell <alice@example.com>");
        assert_eq!(
            (m.name(), m.email()),
            (Some("Alice Liddell"), "alice@example.com")
        );
        let m = ok(r#""Doe, \"JD\" Jane" <jd@example.com>"#);
        assert_eq!(m.name(), Some(r#"Doe, "JD" Jane"#));
        assert_eq!(ok("<x@example.com>").name(), None);
        assert_eq!(
            ok("first.o'brien+tag@example.co.uk").domain(),
            "example.co.uk"
        );
        assert_eq!(
            ok(r#""john doe"@example.com"#).email(),
            r#""john doe"@example.com"#
        );
        assert_eq!(
            ok("山田 太郎 <taro@例え.jp>").email(),
            "taro@xn--r8jz45g.jp"
        );
    }

    #[test]
    fn rejects_invalid_with_reason() {
        assert!(reason("no-at-sign").contains("no `@`"));
        assert!(reason("@example.com").contains("empty"));
        assert!(reason("a..b@example.com").contains("empty segment"));
        assert!(reason("a b@example.com").contains("` `"));
        assert!(reason("a@exa_mple.com").contains("`_`"));
        assert!(reason("a@example..com").contains("domain"));
        assert!(reason("a@").contains("empty"));
        assert!(reason("ä@example.com").contains("SMTPUTF8"));
        assert!(reason("Name <a@example.com").contains("`>`"));
        assert!(reason("Name <a@example.com> trailing").contains("`>`"));
        assert!(reason("a@example.com\r\nBcc: x@evil.example").contains("line break"));
        assert!(reason("a@[127.0.0.1]").contains("literals"));
    }

    #[test]
    fn recipients_are_addresses_or_local_names() {
        assert_eq!(
            "root".parse::<Recipient>().unwrap(),
            Recipient::Local("root".into())
        );
        assert_eq!(
            "Ann <a@example.com>".parse::<Recipient>().unwrap(),
            Recipient::Mailbox(ok("Ann <a@example.com>"))
        );
        assert!("two words".parse::<Recipient>().is_err());
        assert!("root@".parse::<Recipient>().is_err());
        assert!(".root".parse::<Recipient>().is_err());
        assert_eq!(Recipient::local(&"x".repeat(65)), None);
    }

    #[test]
    fn error_names_the_input() {
        let e = "bad address".parse::<Mailbox>().unwrap_err();
        assert!(
            e.to_string().starts_with("invalid address `bad address`"),
            "{e}"
        );
    }
}
