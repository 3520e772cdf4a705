//! The first hour: the README's quick starts run as written against the
//! fakes, and each setup failure names its cause and the fix (exit code,
//! first error line, hint).

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use apimail_tests::fake_google::{FakeGoogle, GMAIL_SEND_SCOPE};
use apimail_tests::fake_microsoft::{self, FakeMicrosoft};
use apimail_tests::sandbox::{CLIENT_ID, CLIENT_SECRET, Sandbox, play_browser};
use apimail_tests::{Run, run, shell_words};

/// The quick starts log in on the default port (48888): one at a time.
static DEFAULT_PORT: Mutex<()> = Mutex::new(());

/// The `apimail …` commands of the README's `sh` blocks in the section
/// whose heading starts with `heading`, in order.
fn readme_commands(heading: &str) -> Vec<Vec<String>> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("the README has a section `{heading}`"));
    let section = &readme[start + 4..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in section.lines().map(str::trim) {
        match line {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            _ if in_sh && line.starts_with("apimail ") => {
                commands.push(shell_words(&line["apimail ".len()..]));
            }
            _ => {}
        }
    }
    commands
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args.iter().position(|a| a == flag).unwrap();
    &args[at + 1]
}

fn lines(stderr: &str) -> (String, String) {
    let first = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default()
        .to_owned();
    let hint = stderr
        .lines()
        .find(|l| l.starts_with("hint: "))
        .unwrap_or_default()
        .to_owned();
    (first, hint)
}

/// Runs one README command; a login plays the browser at `auth_url`.
fn run_step(sandbox: &Sandbox, args: &[String], auth_url: &str) -> Run {
    let mut command: Command = sandbox.cmd();
    command.args(args);
    if args[0] == "auth" && args[1] == "login" {
        play_browser(command, auth_url, |url| url)
    } else {
        run(&mut command)
    }
}

#[test]
fn readme_gmail_quick_start_works_as_written() {
    let _port = DEFAULT_PORT.lock().unwrap_or_else(|e| e.into_inner());
    let fake = FakeGoogle::start();
    fake.set_user_email("ann@example.com");
    let sandbox = Sandbox::new(&fake);
    let commands = readme_commands("Gmail in five minutes");
    assert_eq!(commands.len(), 2, "login, then send: {commands:?}");
    // The file the README names, as the console downloads it: Google's own
    // endpoints (the environment points apimail at the fake).
    let client = serde_json::json!({"installed": {
        "client_id": CLIENT_ID,
        "project_id": "apimail-test",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
        "client_secret": CLIENT_SECRET,
        "redirect_uris": ["http://localhost"],
    }});
    let file = flag(&commands[0], "--client-secret");
    std::fs::write(sandbox.path().join(file), client.to_string()).unwrap();

    for args in &commands {
        let out = run_step(&sandbox, args, &fake.auth_url());
        assert_eq!(out.code, 0, "`apimail {}`: {}", args.join(" "), out.stderr);
    }
    let sent = fake.messages();
    assert_eq!(sent.len(), 1);
    let raw = String::from_utf8_lossy(&sent[0].raw);
    assert!(raw.contains("From: <ann@example.com>"), "{raw}");
    let asked = &fake.authorize_requests()[0]["scope"];
    assert_eq!(asked, &format!("openid email {GMAIL_SEND_SCOPE}"));

    let doctor = run(sandbox.cmd().arg("doctor"));
    assert_eq!(doctor.code, 0, "{}", doctor.stderr);
}

#[test]
fn readme_microsoft_quick_start_works_as_written() {
    let _port = DEFAULT_PORT.lock().unwrap_or_else(|e| e.into_inner());
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let commands = readme_commands("Outlook / Microsoft 365 in five minutes");
    assert_eq!(commands.len(), 2, "login, then send: {commands:?}");
    // Registered as step 1 says: "Mobile and desktop applications",
    // http://localhost:48888/callback.
    let client_id = flag(&commands[0], "--client-id");
    fake.add_public_client(client_id);
    fake.add_redirect_uri(client_id, "http://localhost:48888/callback");
    let tenant = flag(&commands[0], "--tenant");

    for args in &commands {
        let out = run_step(&sandbox, args, &fake.authorize_url(tenant));
        assert_eq!(out.code, 0, "`apimail {}`: {}", args.join(" "), out.stderr);
    }
    let sent = fake.delivered();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].mailbox, fake_microsoft::DEFAULT_USER);
    let raw = String::from_utf8_lossy(&sent[0].mime);
    assert!(
        raw.contains(&format!("From: <{}>", fake_microsoft::DEFAULT_USER)),
        "{raw}"
    );
    let doctor = run(sandbox.cmd().arg("doctor"));
    assert_eq!(doctor.code, 0, "{}", doctor.stderr);
}

#[test]
fn unticked_gmail_send_fails_the_login_naming_the_box() {
    let fake = FakeGoogle::start();
    fake.untick_scope(GMAIL_SEND_SCOPE);
    let sandbox = Sandbox::new(&fake);
    let out = sandbox.login_with(&fake, &[], |url| url);
    assert_eq!(out.code, 77, "{}", out.stderr);
    let (first, hint) = lines(&out.stderr);
    assert_eq!(
        first,
        "error: Google signed you in, but the box \"Send email on your behalf\" was not ticked, \
         so apimail may not use https://www.googleapis.com/auth/gmail.send"
    );
    assert!(
        hint.starts_with("hint: run `apimail auth login gmail --client-secret ")
            && hint.ends_with(
                "again and tick \"Send email on your behalf\" on Google's consent screen"
            ),
        "{hint}"
    );
    assert!(!sandbox.token_file("user@example.com").exists());
}

#[test]
fn withheld_mail_send_fails_the_graph_login_with_the_consent_url() {
    let fake = FakeMicrosoft::start();
    fake.withhold_consent("Mail.Send");
    let sandbox = Sandbox::microsoft(&fake);
    let out = sandbox.login_graph(&fake, &["--tenant", "contoso.com"]);
    assert_eq!(out.code, 77, "{}", out.stderr);
    let (first, hint) = lines(&out.stderr);
    assert!(
        first.starts_with(
            "error: Microsoft signed you in but did not grant Mail.Send (\"Send mail as you\""
        ),
        "{first}"
    );
    assert!(
        hint.contains(&format!(
            "{}/contoso.com/adminconsent?client_id={}",
            fake.authority_url().trim_end_matches('/'),
            apimail_tests::sandbox::MS_CLIENT_ID
        )),
        "{hint}"
    );
}

#[test]
fn doctor_fails_for_an_account_without_an_address() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &["--account", "work"]);
    // An account from an older apimail, which never learned the address.
    let config_path = sandbox.path().join("config/config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let without: String = config
        .lines()
        .filter(|l| !l.starts_with("address"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config_path, without).unwrap();
    let mut token = sandbox.token_json("work");
    token["address"] = serde_json::Value::Null;
    std::fs::write(sandbox.token_file("work"), token.to_string()).unwrap();

    let out = run(sandbox.cmd().arg("doctor"));
    assert_eq!(out.code, 78, "{}", out.stderr);
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &out.stderr;
    let line = report
        .lines()
        .find(|l| l.starts_with("FAIL  address"))
        .unwrap_or_else(|| panic!("an address check: {report}"));
    assert!(
        line.ends_with("is unknown, so `send` without --from fails"),
        "{line}"
    );
    assert!(
        report.contains("set `address = \"you@example.com\"` under [accounts.work]"),
        "{report}"
    );
}

// ---- Item 3: a wrong token URL ---------------------------------------------

/// A token URL with a path the fake does not serve, and a query that must
/// never be shown.
fn wrong_token_url(fake: &FakeGoogle) -> String {
    format!("{}/oauth2/v4/tokn?key=QUERY-SECRET", fake.base_url())
}

#[test]
fn a_wrong_token_url_at_login_names_the_url_and_the_variable() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    let mut command = sandbox.cmd();
    command
        .env("APIMAIL_GOOGLE_TOKEN_URL", wrong_token_url(&fake))
        .args(["auth", "login", "gmail", "--no-browser", "--port", "0"])
        .arg("--client-secret")
        .arg(sandbox.client_secret_file());
    let out = play_browser(command, &fake.auth_url(), |url| url);
    assert_eq!(out.code, 78, "{}", out.stderr);
    let (first, hint) = lines(&out.stderr);
    assert_eq!(
        first,
        format!(
            "error: the token URL from APIMAIL_GOOGLE_TOKEN_URL is wrong: {}/oauth2/v4/tokn is not \
             an OAuth token endpoint: it answered HTTP 404 with a web page",
            fake.base_url()
        )
    );
    assert_eq!(
        hint,
        "hint: correct APIMAIL_GOOGLE_TOKEN_URL (Google's is https://oauth2.googleapis.com/token)"
    );
    assert!(!out.stderr.contains("QUERY-SECRET"), "{}", out.stderr);
    assert!(!out.stderr.contains("bug in apimail"), "{}", out.stderr);
}

#[test]
fn a_wrong_token_uri_in_the_config_fails_send_naming_the_key() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &["--account", "work"]);
    sandbox.expire_stored_token("work");
    let config_path = sandbox.path().join("config/config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let wrong = config.replace(&fake.token_url(), &wrong_token_url(&fake));
    assert_ne!(config, wrong, "the config holds the token URL: {config}");
    std::fs::write(&config_path, wrong).unwrap();

    let mut command = sandbox.cmd();
    command.env_remove("APIMAIL_GOOGLE_TOKEN_URL").args([
        "send",
        "--to",
        "bob@example.net",
        "--subject",
        "s",
        "--text",
        "t",
    ]);
    let out = run(&mut command);
    assert_eq!(out.code, 78, "{}", out.stderr);
    let (first, hint) = lines(&out.stderr);
    let setting = format!(
        "`token_uri` under [accounts.work] in {}",
        config_path.display()
    );
    assert_eq!(
        first,
        format!(
            "error: the token URL from {setting} is wrong: {}/oauth2/v4/tokn is not an OAuth \
             token endpoint: it answered HTTP 404 with a web page",
            fake.base_url()
        )
    );
    assert_eq!(
        hint,
        format!("hint: correct {setting} (Google's is https://oauth2.googleapis.com/token)")
    );
    assert!(!out.stderr.contains("QUERY-SECRET"), "{}", out.stderr);
}

#[test]
fn a_wrong_token_uri_in_an_smail_ini_names_the_line() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    let ini = format!(
        "[OAUTH2]\nUserID=ann@example.com\nClientID={CLIENT_ID}\nClientSecret={CLIENT_SECRET}\n\
         RefreshToken=1//whatever\nTokenURI={}\n",
        wrong_token_url(&fake)
    );
    std::fs::write(sandbox.path().join("smail_refreshtoken.ini"), ini).unwrap();
    let mut command = sandbox.cmd();
    command.env_remove("APIMAIL_GOOGLE_TOKEN_URL").args([
        "auth",
        "import-smail",
        "smail_refreshtoken.ini",
        "--account",
        "office",
    ]);
    let out = run(&mut command);
    assert_eq!(out.code, 78, "{}", out.stderr);
    let (first, hint) = lines(&out.stderr);
    assert_eq!(
        first,
        format!(
            "error: the token URL from `TokenURI` (line 6 of smail_refreshtoken.ini) is wrong: \
             {}/oauth2/v4/tokn is not an OAuth token endpoint: it answered HTTP 404 with a web page",
            fake.base_url()
        )
    );
    assert_eq!(
        hint,
        "hint: correct `TokenURI` (line 6 of smail_refreshtoken.ini) (Google's is \
         https://oauth2.googleapis.com/token), then run `apimail auth import-smail \
         smail_refreshtoken.ini --account office` again"
    );
    assert!(!out.stderr.contains("auth login gmail"), "{}", out.stderr);
    assert!(!sandbox.token_file("office").exists());
}

// ---- Item 4: the wrong kind of Google client; pasted error pages ----------

/// Writes a Web application client file for `fake` into the sandbox.
fn web_client(sandbox: &Sandbox, fake: &FakeGoogle) {
    let client = serde_json::json!({"web": {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "auth_uri": fake.auth_url(),
        "token_uri": fake.token_url(),
        "redirect_uris": ["https://example.com/oauth"],
    }});
    std::fs::write(sandbox.path().join("web_client.json"), client.to_string()).unwrap();
}

#[test]
fn a_web_client_without_port_is_refused_at_once() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    web_client(&sandbox, &fake);
    for extra in [&[][..], &["--port", "0"][..]] {
        let out = run(sandbox
            .cmd()
            .args([
                "auth",
                "login",
                "gmail",
                "--client-secret",
                "web_client.json",
            ])
            .args(extra));
        assert_eq!(out.code, 78, "{}", out.stderr);
        let (first, hint) = lines(&out.stderr);
        assert_eq!(
            first,
            "error: `web_client.json` is a Web application client; apimail needs a Desktop app client"
        );
        assert!(
            hint.starts_with(
                "hint: create a Desktop app client instead: Google Cloud console > APIs & Services \
                 > Credentials > Create credentials > OAuth client ID > Application type \"Desktop app\""
            ) && hint.ends_with(
                "to keep this Web client, add http://127.0.0.1:48888/callback to its Authorized \
                 redirect URIs and pass --port 48888"
            ),
            "{hint}"
        );
        assert!(
            fake.authorize_requests().is_empty(),
            "no browser was sent anywhere"
        );
    }
}

#[test]
fn a_web_client_kept_on_purpose_prints_the_redirect_uri_to_register() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    web_client(&sandbox, &fake);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut command = sandbox.cmd();
    command.args([
        "auth",
        "login",
        "gmail",
        "--no-browser",
        "--client-secret",
        "web_client.json",
        "--port",
        &port,
    ]);
    let out = play_browser(command, &fake.auth_url(), |url| url);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "note: `web_client.json` is a Web application client: its Authorized redirect URIs \
             must include exactly http://127.0.0.1:{port}/callback"
        )),
        "{}",
        out.stderr
    );
}

/// Starts a `--no-browser` login, waits for the authorize URL, pastes
/// `pasted` (which may name `{redirect}`) at the prompt, and returns the
/// finished run.
fn login_pasting(sandbox: &Sandbox, fake: &FakeGoogle, pasted: &str) -> Run {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;
    let mut child = sandbox
        .cmd()
        .args(["auth", "login", "gmail", "--no-browser", "--port", "0"])
        .arg("--client-secret")
        .arg(sandbox.client_secret_file())
        .args(["--timeout", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no URL: {seen}");
        seen.push_str(&line);
        if line.starts_with(&fake.auth_url()) {
            break line.trim().to_owned();
        }
    };
    let redirect = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", pasted.replace("{redirect}", &redirect)).unwrap();
    stderr.read_to_string(&mut seen).unwrap();
    let status = child.wait().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: Vec::new(),
        stderr: seen.replace(&redirect, "{redirect}"),
    }
}

#[test]
fn a_pasted_google_error_page_is_explained() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    // The page Google shows for redirect_uri_mismatch: authError is base64
    // of a protobuf naming the error.
    let page = "https://accounts.google.com/signin/oauth/error/v2?authError=\
                Cg9yZWRpcmVjdF91cmlfbWlzbWF0Y2gSDGJhZCByZWRpcmVjdA%3D%3D&client_id=x";
    let out = login_pasting(&sandbox, &fake, page);
    assert_eq!(out.code, 78, "{}", out.stderr);
    let (first, hint) = lines(&out.stderr);
    assert_eq!(
        first,
        "error: the browser stopped at an error page of \
         https://accounts.google.com/signin/oauth/error/v2: redirect_uri_mismatch"
    );
    assert_eq!(
        hint,
        "hint: the OAuth client does not allow the redirect URI {redirect}: use a Desktop app \
         client (any loopback port works), or add exactly {redirect} to the Web client's \
         Authorized redirect URIs"
    );
}

#[test]
fn a_pasted_error_redirect_is_explained() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    let out = login_pasting(
        &sandbox,
        &fake,
        "{redirect}?error=access_denied&error_description=The+user+denied",
    );
    assert_eq!(out.code, 77, "{}", out.stderr);
    let (first, hint) = lines(&out.stderr);
    assert_eq!(
        first,
        "error: the authorization was denied: The user denied"
    );
    assert_eq!(
        hint,
        "hint: run the login again and choose Allow; for an app in Testing status, add your \
         address as a test user"
    );
}

// ---- Item 5: Microsoft's AADSTS codes -------------------------------------

/// A Graph login (tenant contoso.com) whose code exchange meets AADSTS
/// `code`; returns the run.
fn graph_login_failing_with(code: u32) -> (FakeMicrosoft, Run) {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    fake.fail_token_with(code);
    let out = sandbox.login_graph(&fake, &["--tenant", "contoso.com"]);
    (fake, out)
}

#[test]
fn aadsts_codes_at_login_name_their_cause_and_fix() {
    let client = apimail_tests::sandbox::MS_CLIENT_ID;
    // (code, exit, first line, a piece of the hint)
    let cases: [(u32, i32, &str, &str); 10] = [
        (
            65001,
            77,
            "consent is missing: nobody has consented to the app's permissions in this tenant (AADSTS65001)",
            "/contoso.com/adminconsent?client_id=",
        ),
        (
            700016,
            78,
            "the app (--client-id) was not found in this tenant (AADSTS700016)",
            "check --client-id (the Application (client) ID",
        ),
        (
            7000218,
            78,
            "the app does not allow public client flows, so a sign-in without a client secret is refused (AADSTS7000218)",
            "set \"Allow public client flows\" to Yes",
        ),
        (
            50011,
            78,
            "the redirect URI {redirect} is not registered for the app (AADSTS50011)",
            "Mobile and desktop applications, add {redirect}",
        ),
        (
            53003,
            77,
            "a Conditional Access policy blocked the sign-in (AADSTS53003)",
            "Sign-in logs",
        ),
        (
            50076,
            77,
            "multi-factor authentication is required (AADSTS50076)",
            "complete (or set up) multi-factor authentication",
        ),
        (
            50079,
            77,
            "multi-factor authentication is required (AADSTS50079)",
            "complete (or set up) multi-factor authentication",
        ),
        (
            700082,
            77,
            "the refresh token expired after 90 days without use (AADSTS700082)",
            "at least monthly",
        ),
        (
            9002313,
            77,
            "Microsoft found the sign-in request malformed (AADSTS9002313): usually a code or refresh token that was cut or changed",
            "--debug",
        ),
        (
            90014,
            77,
            "Microsoft found the sign-in request malformed (AADSTS90014): usually a code or refresh token that was cut or changed",
            "--debug",
        ),
    ];
    for (code, exit, first_line, hint_piece) in cases {
        let (fake, out) = graph_login_failing_with(code);
        let redirect = fake.authorize_requests()[0]["redirect_uri"].clone();
        assert_eq!(out.code, exit, "AADSTS{code}: {}", out.stderr);
        let (first, hint) = lines(&out.stderr);
        assert_eq!(
            first,
            format!("error: {}", first_line.replace("{redirect}", &redirect)),
            "AADSTS{code}"
        );
        let piece = hint_piece.replace("{redirect}", &redirect);
        assert!(
            hint.starts_with("hint: ") && hint.contains(&piece),
            "AADSTS{code}: {hint}"
        );
        assert!(
            out.stderr.contains("caused by: ") && out.stderr.contains(&format!("AADSTS{code}: ")),
            "Microsoft's own words follow: {}",
            out.stderr
        );
        if code == 65001 {
            assert!(
                hint.contains(&format!("adminconsent?client_id={client}")),
                "{hint}"
            );
        }
        if code == 50011 {
            assert!(
                !redirect.contains(":48888/"),
                "the URI used, not the default: {redirect}"
            );
        }
    }
}

#[test]
fn a_declined_consent_is_aadsts65004() {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    fake.set_deny(true);
    let out = sandbox.login_graph(&fake, &["--tenant", "contoso.com"]);
    assert_eq!(out.code, 77, "{}", out.stderr);
    let (first, hint) = lines(&out.stderr);
    assert_eq!(
        first,
        "error: the consent was declined at sign-in (AADSTS65004)"
    );
    assert!(
        hint.starts_with("hint: run the login again and choose Accept; if the screen says an administrator must approve, ask one to grant consent at ")
            && hint.contains("/contoso.com/adminconsent?client_id="),
        "{hint}"
    );
}

#[test]
fn aadsts700082_at_send_names_the_90_days_and_the_login() {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let login = sandbox.login_graph(&fake, &["--tenant", "contoso.com", "--account", "work"]);
    assert_eq!(login.code, 0, "{}", login.stderr);
    sandbox.expire_stored_token("work");
    fake.fail_token_with(700082);
    let out = run(sandbox.cmd().args([
        "send",
        "--account",
        "work",
        "--to",
        "bob@example.net",
        "--subject",
        "s",
        "--text",
        "t",
    ]));
    assert_eq!(out.code, 77, "{}", out.stderr);
    let (first, hint) = lines(&out.stderr);
    assert_eq!(
        first,
        "error: the refresh token expired after 90 days without use (AADSTS700082)"
    );
    assert!(
        hint.starts_with("hint: run `apimail auth login graph --account work --client-id ")
            && hint.contains("at least monthly"),
        "{hint}"
    );
}

// ---- Item 6: warnings before authorizations end, doctor --json, slips ------

fn stdout(out: &Run) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn day(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&format)
        .unwrap()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn status_and_doctor_warn_of_google_testing_apps_ending() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &["--account", "work"]);
    let status = run(sandbox.cmd().args(["auth", "status"]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    let text = stdout(&status);
    let ends = day(now() + 7 * 86_400);
    assert!(
        text.contains(&format!("  authorized: authorized today ({})", day(now()))),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  warning:    if the app is in Testing, this authorization ends on {ends}; publish it \
             (Google Cloud console > Google Auth Platform > Audience > Publish app) to keep it"
        )),
        "{text}"
    );

    let doctor = run(sandbox.cmd().args(["doctor", "--json"]));
    assert_eq!(doctor.code, 0, "warnings do not fail: {}", doctor.stderr);
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let checks = report["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names[..6],
        [
            "configuration",
            "certificates",
            "account",
            "address",
            "token store",
            "authorization"
        ]
    );
    let authorization = &checks[5];
    assert_eq!(authorization["status"], "warn");
    assert!(
        authorization["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("this authorization ends on {ends}")),
        "{authorization}"
    );
    assert!(checks.iter().all(|c| c["status"] != "fail"), "{report}");
}

#[test]
fn a_revoked_refresh_token_shows_in_status() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &["--account", "work"]);
    fake.revoke_refresh_tokens();
    sandbox.expire_stored_token("work");
    let send = run(sandbox.cmd().args([
        "send",
        "--to",
        "bob@example.net",
        "--subject",
        "s",
        "--text",
        "t",
    ]));
    assert_eq!(send.code, 77, "{}", send.stderr);
    let text = stdout(&run(sandbox.cmd().args(["auth", "status"])));
    assert!(
        text.contains("refresh token refused by the provider: log in again"),
        "{text}"
    );
    assert!(
        text.contains(
            "  warning:    the provider refused the refresh token (Token has been expired or \
             revoked.): log in again"
        ),
        "{text}"
    );
    assert!(!text.contains("refresh token stored"), "{text}");
}

#[test]
fn a_microsoft_refresh_token_near_90_days_unused_is_warned_of() {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let login = sandbox.login_graph(&fake, &["--account", "work"]);
    assert_eq!(login.code, 0, "{}", login.stderr);
    let mut token = sandbox.token_json("work");
    let last = now() - 80 * 86_400;
    token["authorized_at"] = serde_json::json!(last);
    std::fs::write(sandbox.token_file("work"), token.to_string()).unwrap();
    let text = stdout(&run(sandbox.cmd().args(["auth", "status"])));
    assert!(
        text.contains(&format!(
            "  warning:    Microsoft ends a refresh token unused for 90 days; this one ends on {} \
             unless apimail sends (or `apimail doctor` runs) before",
            day(last + 90 * 86_400)
        )),
        "{text}"
    );
}

#[test]
fn an_app_only_client_secret_expiring_soon_is_warned_of() {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let expires = day(now() + 10 * 86_400);
    std::fs::create_dir_all(sandbox.path().join("config")).unwrap();
    std::fs::write(sandbox.path().join("secret"), "s3cret").unwrap();
    std::fs::write(
        sandbox.path().join("config/config.toml"),
        format!(
            "default_account = \"alerts\"\n\n[accounts.alerts]\nprovider = \"graph\"\n\
             app_only = true\ntenant = \"contoso.com\"\nclient_id = \"app\"\n\
             user = \"alerts@contoso.com\"\nclient_secret_file = \"secret\"\n\
             client_secret_expires = \"{expires}\"\n"
        ),
    )
    .unwrap();
    let text = stdout(&run(sandbox.cmd().args(["auth", "status"])));
    assert!(
        text.contains(&format!(
            "  warning:    the client secret expires on {expires}, in 9 days"
        )) || text.contains(&format!(
            "  warning:    the client secret expires on {expires}, in 10 days"
        )),
        "{text}"
    );
    let doctor = run(sandbox.cmd().args(["doctor", "--json"]));
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let authorization = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "authorization")
        .cloned()
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(authorization["status"], "warn", "{authorization}");
}

#[test]
fn no_graph_credentials_hint_names_the_graph_login() {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let out = run(sandbox.cmd().args([
        "send",
        "--provider",
        "graph",
        "--from",
        "a@contoso.com",
        "--to",
        "b@example.net",
        "--subject",
        "s",
        "--text",
        "t",
    ]));
    assert_eq!(out.code, 78, "{}", out.stderr);
    let (_, hint) = lines(&out.stderr);
    assert!(
        hint.starts_with("hint: run `apimail auth login graph --client-id CLIENT_ID`"),
        "{hint}"
    );
}

#[test]
fn doctor_fails_when_the_config_file_does_not_exist() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    let out = run(sandbox.cmd().arg("doctor"));
    assert_eq!(out.code, 78, "{}", out.stderr);
    let text = stdout(&out);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with("FAIL  configuration")
            && text
                .lines()
                .next()
                .unwrap()
                .ends_with("config.toml does not exist, and no credentials are in the environment"),
        "{text}"
    );
    assert!(!text.contains("parses"), "{text}");
}

#[test]
fn help_says_why_apimail_exists() {
    let out = run(apimail_tests::apimail().arg("--help"));
    assert_eq!(out.code, 0);
    let help = stdout(&out).replace('\n', " ");
    for words in [
        "\"535 5.7.139\"",
        "\"534-5.7.9 Application-specific password required\"",
        "\"Username and Password not accepted\"",
        "ports 25, 465 and 587 blocked",
    ] {
        assert!(help.contains(words), "{words}: {help}");
    }
    let man = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/man/apimail.1"),
    )
    .unwrap();
    assert!(man.contains("\"535 5.7.139\""), "the man page says it too");
}

#[test]
fn doctor_names_the_saved_client_file_for_a_missing_token() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &["--account", "work"]);
    std::fs::remove_file(sandbox.token_file("work")).unwrap();
    let out = run(sandbox.cmd().arg("doctor"));
    assert_eq!(out.code, 77, "{}", out.stderr);
    let text = stdout(&out);
    let client = std::fs::canonicalize(sandbox.client_secret_file()).unwrap();
    assert!(
        text.contains(&format!(
            "hint: log in: `apimail auth login gmail --account work --client-secret {}`",
            client.display()
        )),
        "{text}"
    );
}

#[test]
fn aadsts65001_at_send_names_the_admin_consent_page_as_at_login() {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let out = sandbox.login_graph(
        &fake,
        &[
            "--tenant",
            "contoso.com",
            "--account",
            "work",
            "--login-hint",
            "adele@contoso.com",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    sandbox.expire_stored_token("work");
    fake.fail_token_with(65001);
    let sent = run(sandbox.cmd().args([
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "consent",
        "--text",
        "hi",
    ]));
    assert_eq!(sent.code, 77, "{}", sent.stderr);
    let (first, hint) = lines(&sent.stderr);
    assert!(first.contains("consent is missing"), "{first}");
    assert!(
        hint.contains(&format!(
            "{}/contoso.com/adminconsent?client_id={}",
            fake.authority_url().trim_end_matches('/'),
            apimail_tests::sandbox::MS_CLIENT_ID
        )),
        "the same page as at login: {hint}"
    );
}
