//! The admin console in end-to-end tests: `apimail admin serve` started
//! and waited for, and an administrator's signed-in session playing the
//! browser (cookies, CSRF fields, polling a page).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::Process;
use crate::http::{self, Response};

/// `apimail admin serve` on `127.0.0.1:port`, from `apimail` (a command
/// with the test's environment, such as `Sandbox::cmd`), once it answers
/// `/healthz`.
pub fn serve(mut apimail: Command, port: u16) -> Process {
    let process =
        Process::spawn(apimail.args(["admin", "serve", "--listen", &format!("127.0.0.1:{port}")]));
    let until = Instant::now() + Duration::from_secs(30);
    while http::request("GET", &format!("http://127.0.0.1:{port}/healthz"), &[], b"").is_err() {
        assert!(
            Instant::now() < until,
            "the console did not start:\n{}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    process
}

/// The text between `start` and the next `end` in `text`.
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let at = text.find(start)? + start.len();
    Some(&text[at..at + text[at..].find(end)?])
}

/// The text of an HTML attribute or element, unescaped.
pub fn unescape(text: &str) -> String {
    text.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of the first `csrf` form field of a page.
pub fn csrf_field(page: &str) -> String {
    between(page, "name=\"csrf\" value=\"", "\"")
        .expect("the page has a CSRF field")
        .to_owned()
}

/// An administrator signed in at the console at `base`
/// (`http://127.0.0.1:PORT`).
#[derive(Debug, Clone)]
pub struct AdminSession {
    pub base: String,
    /// The `apimail_session=...` cookie.
    pub cookie: String,
}

impl AdminSession {
    /// Signs in as `user` through the login form, as a browser does.
    pub fn sign_in(base: &str, user: &str, password: &str) -> AdminSession {
        let form = http::get(&format!("{base}/login"));
        let login_cookie = form
            .header("set-cookie")
            .expect("the login form sets a cookie")
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let csrf = csrf_field(&form.body_text());
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("user", user), ("password", password), ("csrf", &csrf)])
            .finish();
        let answer = http::request(
            "POST",
            &format!("{base}/login"),
            &[
                ("Cookie", &login_cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(answer.status, 303, "{}", answer.body_text());
        let cookie = answer
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.split(';').next().unwrap().to_owned())
            .find(|v| v.starts_with("apimail_session="))
            .expect("a session cookie");
        AdminSession {
            base: base.to_owned(),
            cookie,
        }
    }

    pub fn get(&self, path: &str) -> Response {
        http::request(
            "GET",
            &format!("{}{path}", self.base),
            &[("Cookie", &self.cookie)],
            b"",
        )
        .unwrap()
    }

    /// A form POST with the session's cookie.
    pub fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        http::request(
            "POST",
            &format!("{}{path}", self.base),
            &[
                ("Cookie", &self.cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
        .unwrap()
    }

    /// Polls `path` until its body contains `needle` (a generous limit).
    pub fn wait_for(&self, path: &str, needle: &str) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let body = self.get(path).body_text();
            if body.contains(needle) {
                return body;
            }
            assert!(Instant::now() < until, "no `{needle}` on {path}:\n{body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
