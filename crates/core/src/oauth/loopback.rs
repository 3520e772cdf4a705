//! The loopback listener that receives the browser's redirect, and the
//! reading of a redirect URL pasted into the terminal.

use std::borrow::Cow;
use std::io::{BufRead, Read};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use url::{Url, form_urlencoded};

use super::LoginError;

/// The path of the redirect URI.
pub(super) const CALLBACK_PATH: &str = "/callback";

/// The largest request head (request line and headers) read from the
/// browser. Authorization codes are long on some providers, but not this
/// long.
const MAX_HEAD: usize = 32 * 1024;

/// How long one browser connection may take to send its request and take
/// the answer. Browsers open speculative connections that never send
/// anything; each connection is served on its own task, so a slow one
/// holds up nothing.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest pasted line kept.
const MAX_PASTED_LINE: u64 = 64 * 1024;

/// Waits for the redirect: on the listener and, when `pasted` is given, on
/// lines pasted into the terminal. Returns the authorization code, or the
/// first decisive failure (state mismatch, denial, provider error).
/// Requests to other paths, and callbacks or pasted lines that carry
/// neither `code` nor `error`, are answered or ignored and the wait goes
/// on.
pub(super) async fn wait_for_code(
    listener: &TcpListener,
    expected_state: &str,
    mut pasted: Option<mpsc::UnboundedReceiver<String>>,
) -> Result<String, LoginError> {
    let expected_state: Arc<str> = Arc::from(expected_state);
    // Dropping the set (on return or on timeout) aborts the connections
    // still being served.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, Arc::clone(&expected_state)));
                }
                // Out of file descriptors or the like: wait a little
                // rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(served) = connections.join_next() => {
                if let Ok(Some(outcome)) = served {
                    return outcome;
                }
            }
            line = next_line(&mut pasted) => match line {
                Some(line) => match parse_redirect(&line, &expected_state) {
                    Err(LoginError::BadRedirect(_)) => {}
                    outcome => return outcome,
                },
                // End of input: keep waiting for the browser alone.
                None => pasted = None,
            },
        }
    }
}

async fn next_line(pasted: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match pasted {
        Some(lines) => lines.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads lines from the process's standard input on a detached thread.
///
/// A plain thread rather than `tokio::io::stdin`: a tokio runtime waits for
/// its blocking tasks when it shuts down, and a read from a terminal
/// blocks until the user presses Enter. The thread ends at end of input or
/// after the first line read once the receiver is gone; a process that
/// exits does not wait for it.
pub(super) fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    // If the thread cannot be started, the sender is dropped with the
    // closure and the receiver simply reports end of input.
    let _ = std::thread::Builder::new()
        .name("apimail-paste".to_owned())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut line = String::new();
            loop {
                line.clear();
                match stdin.lock().take(MAX_PASTED_LINE).read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if sender.send(line.clone()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    receiver
}

/// Extracts the authorization code from a redirect URL pasted by the user
/// (`http://127.0.0.1:48888/callback?code=...&state=...`), or from its
/// query string alone, and checks `state`.
///
/// Text with neither `code` nor `error` gives [`LoginError::BadRedirect`];
/// the other failures are those of the listener.
pub(super) fn parse_redirect(text: &str, expected_state: &str) -> Result<String, LoginError> {
    let text = text.trim();
    let query = match Url::parse(text) {
        Ok(url) if is_error_page(&url) => return Err(error_page(&url)),
        Ok(url) => Cow::Owned(url.query().unwrap_or_default().to_owned()),
        Err(_) => Cow::Borrowed(text.split_once('?').map_or(text, |(_, query)| query)),
    };
    // The user pasted it: an `error=` redirect is believed without `state`
    // (a provider's error page may drop it), and explained.
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    if let (Some(error), None) = (value("error"), value("state")) {
        let description = value("error_description");
        return Err(match error.as_str() {
            "access_denied" => LoginError::Denied { description },
            _ => LoginError::Provider {
                code: error,
                description,
            },
        });
    }
    check_redirect(&query, expected_state)
}

/// Whether a pasted address is a page at the provider rather than the
/// redirect to this machine: a host that is not loopback, or a path that
/// is not the callback.
fn is_error_page(url: &Url) -> bool {
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    matches!(url.scheme(), "http" | "https") && !(loopback && url.path() == CALLBACK_PATH)
}

/// [`LoginError::ErrorPage`] for a pasted address: the page without its
/// query, and the error it names. Google's error page carries it in
/// `authError`, base64 of a small protobuf whose first field is the
/// error's name (e.g. `redirect_uri_mismatch`); others use `error`.
fn error_page(url: &Url) -> LoginError {
    use base64::Engine as _;
    let mut page = url.clone();
    page.set_query(None);
    page.set_fragment(None);
    let mut code = None;
    for (name, value) in url.query_pairs() {
        match name.as_ref() {
            "error" if !value.is_empty() => code = Some(value.into_owned()),
            "authError" => {
                let engine = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::URL_SAFE,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
                );
                let cleaned: String = value
                    .chars()
                    .map(|c| match c {
                        '+' => '-',
                        '/' => '_',
                        c => c,
                    })
                    .collect();
                code = engine
                    .decode(cleaned.trim_end_matches('='))
                    .ok()
                    .and_then(|bytes| error_name(&bytes));
            }
            _ => {}
        }
    }
    LoginError::ErrorPage {
        page: page.to_string(),
        code,
    }
}

/// The first run of at least 5 lowercase letters and underscores in
/// `bytes`: an OAuth error name such as `redirect_uri_mismatch`.
fn error_name(bytes: &[u8]) -> Option<String> {
    bytes
        .split(|b| !(b.is_ascii_lowercase() || *b == b'_'))
        .find(|run| run.len() >= 5)
        .map(|run| String::from_utf8_lossy(run).into_owned())
}

/// Checks the query of a redirect: something to act on (`code` or
/// `error`), then `state`, then the outcome.
fn check_redirect(query: &str, expected_state: &str) -> Result<String, LoginError> {
    let mut code = None;
    let mut state = None;
    let mut error = None;
    let mut description = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = Some(value.into_owned()).filter(|v| !v.is_empty());
        match name.as_ref() {
            "code" => code = value,
            "state" => state = value,
            "error" => error = value,
            "error_description" => description = value,
            _ => {}
        }
    }
    if code.is_none() && error.is_none() {
        return Err(LoginError::BadRedirect(
            "the redirect has neither a `code` nor an `error` parameter; \
             paste the whole address from the browser's address bar"
                .to_owned(),
        ));
    }
    if state.as_deref() != Some(expected_state) {
        return Err(LoginError::StateMismatch);
    }
    match (error, code) {
        (Some(error), _) if error == "access_denied" => Err(LoginError::Denied { description }),
        (Some(code), _) => Err(LoginError::Provider { code, description }),
        (None, code) => Ok(code.unwrap_or_default()),
    }
}

/// Serves one browser connection. `Some` when it was the callback with a
/// decisive outcome.
async fn serve(
    mut stream: TcpStream,
    expected_state: Arc<str>,
) -> Option<Result<String, LoginError>> {
    tokio::time::timeout(
        CONNECTION_TIMEOUT,
        serve_request(&mut stream, &expected_state),
    )
    .await
    .ok()
    .flatten()
}

async fn serve_request(
    stream: &mut TcpStream,
    expected_state: &str,
) -> Option<Result<String, LoginError>> {
    let head = match read_head(stream).await {
        Head::Complete(head) => head,
        Head::TooLarge => {
            respond(stream, Page::TOO_LARGE).await;
            return None;
        }
        Head::Closed => return None,
    };
    let Some((method, target)) = request_line(&head) else {
        respond(stream, Page::BAD_REQUEST).await;
        return None;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != CALLBACK_PATH {
        respond(stream, Page::NOT_FOUND).await;
        return None;
    }
    if method != "GET" {
        respond(stream, Page::METHOD_NOT_ALLOWED).await;
        return None;
    }
    let outcome = check_redirect(query, expected_state);
    let page = match &outcome {
        Ok(_) => Page::AUTHORIZED,
        Err(LoginError::StateMismatch) => Page::MISMATCH,
        Err(LoginError::Denied { .. }) => Page::DENIED,
        Err(LoginError::BadRedirect(_)) => Page::NO_CODE,
        Err(_) => Page::PROVIDER_ERROR,
    };
    respond(stream, page).await;
    match outcome {
        Err(LoginError::BadRedirect(_)) => None,
        outcome => Some(outcome),
    }
}

enum Head {
    Complete(String),
    TooLarge,
    Closed,
}

/// Reads up to the blank line that ends the request head.
async fn read_head(stream: &mut TcpStream) -> Head {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if let Some(end) = find(&head, b"\r\n\r\n").or_else(|| find(&head, b"\n\n")) {
            head.truncate(end);
            return match String::from_utf8(head) {
                Ok(head) => Head::Complete(head),
                // Browsers percent-encode request targets; this is not one.
                Err(_) => Head::Complete(String::new()),
            };
        }
        if head.len() > MAX_HEAD {
            return Head::TooLarge;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `(method, target)` of an origin-form HTTP/1.x request line.
fn request_line(head: &str) -> Option<(&str, &str)> {
    let line = head.lines().next()?;
    let mut parts = line.split_ascii_whitespace();
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && target.starts_with('/') && version.starts_with("HTTP/1."))
        .then_some((method, target))
}

/// An answer to the browser.
struct Page {
    status: &'static str,
    text: &'static str,
}

impl Page {
    const AUTHORIZED: Page = Page {
        status: "200 OK",
        text: "apimail is authorized. You can close this tab and return to the terminal.",
    };
    const DENIED: Page = Page {
        status: "200 OK",
        text: "Authorization was denied. You can close this tab.",
    };
    const MISMATCH: Page = Page {
        status: "400 Bad Request",
        text: "This sign-in does not match the one apimail is waiting for \
               (it may come from an old tab). Close this tab and run \
               `apimail auth login` again.",
    };
    const PROVIDER_ERROR: Page = Page {
        status: "400 Bad Request",
        text: "The sign-in failed. The terminal shows the provider's error.",
    };
    const NO_CODE: Page = Page {
        status: "400 Bad Request",
        text: "This address carries no authorization code. apimail is still waiting for the sign-in.",
    };
    const NOT_FOUND: Page = Page {
        status: "404 Not Found",
        text: "Not found.",
    };
    const METHOD_NOT_ALLOWED: Page = Page {
        status: "405 Method Not Allowed",
        text: "Method not allowed.",
    };
    const BAD_REQUEST: Page = Page {
        status: "400 Bad Request",
        text: "Bad request.",
    };
    const TOO_LARGE: Page = Page {
        status: "431 Request Header Fields Too Large",
        text: "Request too large.",
    };
}

/// Writes the page and closes the connection. Failures are ignored: the
/// browser went away.
async fn respond(stream: &mut TcpStream, page: Page) {
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>apimail</title></head>\n<body><p>{}</p></body></html>\n",
        page.text
    );
    let response = format!(
        "HTTP/1.1 {}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\n\
         Referrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        page.status,
        body.len()
    );
    if stream.write_all(response.as_bytes()).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pasted_redirect() {
        let code = parse_redirect(
            "  http://127.0.0.1:48888/callback?state=s1&code=4%2F0AbC%2Fx&scope=a+b\n",
            "s1",
        )
        .unwrap();
        assert_eq!(code, "4/0AbC/x");
        // The query alone, or with the path, is enough.
        assert_eq!(parse_redirect("code=c&state=s1", "s1").unwrap(), "c");
        assert_eq!(
            parse_redirect("/callback?code=c&state=s1", "s1").unwrap(),
            "c"
        );
        assert_eq!(
            parse_redirect("http://localhost:1/callback?code=c&state=s1#frag", "s1").unwrap(),
            "c"
        );
    }

    #[test]
    fn pasted_redirect_failures() {
        assert!(matches!(
            parse_redirect("http://127.0.0.1:1/callback?code=c&state=old", "s1"),
            Err(LoginError::StateMismatch)
        ));
        assert!(matches!(
            parse_redirect("http://127.0.0.1:1/callback?code=c", "s1"),
            Err(LoginError::StateMismatch)
        ));
        match parse_redirect(
            "http://127.0.0.1:1/callback?error=access_denied&error_description=no+thanks&state=s1",
            "s1",
        ) {
            Err(LoginError::Denied { description }) => {
                assert_eq!(description.as_deref(), Some("no thanks"));
            }
            other => panic!("{other:?}"),
        }
        match parse_redirect("?error=invalid_scope&state=s1", "s1") {
            Err(LoginError::Provider { code, description }) => {
                assert_eq!(code, "invalid_scope");
                assert_eq!(description, None);
            }
            other => panic!("{other:?}"),
        }
        // An error with another login's state is not believed; a pasted
        // one without any state is (the user pasted it), and explained.
        assert!(matches!(
            parse_redirect("?error=access_denied&state=old", "s1"),
            Err(LoginError::StateMismatch)
        ));
        assert!(matches!(
            parse_redirect("http://127.0.0.1:1/callback?error=access_denied", "s1"),
            Err(LoginError::Denied { .. })
        ));
        for garbage in [
            "",
            "   ",
            "hello",
            "4/0AbC",
            "http://127.0.0.1:1/callback?state=s1",
        ] {
            match parse_redirect(garbage, "s1") {
                Err(e @ LoginError::BadRedirect(_)) => {
                    assert!(e.to_string().contains("code"), "{e}");
                }
                other => panic!("{garbage:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn pasted_error_pages_are_recognised() {
        // Google's page for a client that does not allow the redirect URI:
        // authError is base64 of a protobuf naming the error.
        let auth_error = "Cg9yZWRpcmVjdF91cmlfbWlzbWF0Y2gSDGJhZCByZWRpcmVjdA%3D%3D";
        let pasted = format!(
            "https://accounts.google.com/signin/oauth/error/v2?authError={auth_error}&client_id=x"
        );
        match parse_redirect(&pasted, "s1") {
            Err(LoginError::ErrorPage { page, code }) => {
                assert_eq!(page, "https://accounts.google.com/signin/oauth/error/v2");
                assert_eq!(code.as_deref(), Some("redirect_uri_mismatch"));
            }
            other => panic!("{other:?}"),
        }
        // Any page that is not the callback, e.g. the authorize URL again.
        match parse_redirect(
            "https://login.example.com/authorize?client_id=x&key=k",
            "s1",
        ) {
            Err(e @ LoginError::ErrorPage { code: None, .. }) => {
                assert!(!e.to_string().contains("key=k"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line("GET /callback?code=a HTTP/1.1\r\nHost: x"),
            Some(("GET", "/callback?code=a"))
        );
        assert_eq!(request_line("GET http://x/ HTTP/1.1"), None);
        assert_eq!(request_line("GET / HTTP/2"), None);
        assert_eq!(request_line("GET /"), None);
        assert_eq!(request_line(""), None);
    }
}
