//! apimail as sendmail, the outbox, and `apimail doctor`, end to end
//! against the fake providers; plus real programs (git send-email,
//! bsd-mailx) configured to use apimail.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apimail_tests::fake_google::{FakeGoogle, Fault};
use apimail_tests::fake_microsoft::{self, FakeMicrosoft};
use apimail_tests::sandbox::Sandbox;
use apimail_tests::{Run, apimail_bin, run, run_with_stdin};

const ACCOUNT: &str = "user@example.com";

fn logged_in() -> (FakeGoogle, Sandbox) {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    (fake, sandbox)
}

fn sendmail(sandbox: &Sandbox, args: &[&str], input: &str) -> Run {
    run_with_stdin(sandbox.cmd().arg("sendmail").args(args), input.as_bytes())
}

fn delivered_text(fake: &FakeGoogle, index: usize) -> String {
    String::from_utf8_lossy(&fake.messages()[index].raw).into_owned()
}

/// A directory holding `sendmail` and `mailq` links to the apimail binary.
fn links(sandbox: &Sandbox) -> PathBuf {
    let bin = sandbox.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["sendmail", "mailq"] {
        let link = bin.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(apimail_bin(), &link).unwrap();
        }
    }
    bin
}

// 1. Recipients

/// Fixed so the bytes the fake received can be compared whole.
const DATED: &str = "Date: Thu, 1 Jan 2026 00:00:00 +0000\nMessage-ID: <fixed@example.com>\n";

#[test]
fn dash_t_merges_argument_recipients_into_the_one_bcc_field() {
    let (fake, sandbox) = logged_in();
    let message = format!(
        "From: user@example.com\nTo: to@example.net\nCc: cc@example.net\nBcc: bcc@example.net\nSubject: t\n{DATED}\nbody\n"
    );
    let out = sendmail(&sandbox, &["-t", "-i", "extra@example.net"], &message);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        delivered_text(&fake, 0),
        format!(
            "From: user@example.com\nTo: to@example.net\nCc: cc@example.net\nBcc: <bcc@example.net>, <extra@example.net>\nSubject: t\n{DATED}\nbody\n"
        ),
        "one Bcc field (RFC 5322 allows one), kept for the provider"
    );
}

#[test]
fn argument_only_recipients_become_bcc_and_header_only_ones_are_warned_about() {
    let (fake, sandbox) = logged_in();
    let out = sendmail(
        &sandbox,
        &["-i", "a@example.net", "b@example.net"],
        &format!("Subject: x\n{DATED}\nhello\n"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        delivered_text(&fake, 0),
        format!(
            "From: <{ACCOUNT}>\nBcc: <a@example.net>, <b@example.net>\nSubject: x\n{DATED}\nhello\n"
        ),
        "From defaults to the account"
    );

    let out = sendmail(
        &sandbox,
        &["-i", "a@example.net"],
        "To: other@example.net\nSubject: y\n\nhi\n",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("other@example.net"),
        "warned: {}",
        out.stderr
    );
}

/// Writes an aliases file into the sandbox and returns its path.
fn aliases_file(sandbox: &Sandbox, text: &str) -> PathBuf {
    let path = sandbox.path().join("aliases");
    std::fs::write(&path, text).unwrap();
    path
}

const ALIASES: &str = "# who gets the system's mail\n\
root: ops@example.com,\n\
\tOn Call <oncall@example.com>\n\
postmaster: root\n\
default: admin@example.com\n";

#[test]
fn local_names_go_to_their_aliases_through_chains_and_default() {
    let (fake, sandbox) = logged_in();
    // Through the config key this time.
    let aliases = aliases_file(&sandbox, ALIASES);
    let config = sandbox.path().join("config/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("aliases = {:?}\n{text}", aliases.display().to_string()),
    )
    .unwrap();
    let message = format!(
        "From: user@example.com\nTo: postmaster, x@example.net\nCc: www-data\nSubject: a\n{DATED}\nbody\n"
    );
    let out = sendmail(&sandbox, &["-t", "-i", "nobody"], &message);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        delivered_text(&fake, 0),
        format!(
            "From: user@example.com\nTo: <ops@example.com>, \"On Call\" <oncall@example.com>, <x@example.net>\nCc: <admin@example.com>\nSubject: a\n{DATED}\nbody\n"
        ),
        "`nobody` falls to default:, already a recipient through Cc"
    );
}

/// What cron (cronie, Debian's cron) writes when MAILTO is unset.
const CRON_TO_ROOT: &str = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> /usr/local/bin/backup\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\n\nbackup done\n";

fn cron_to_root(sandbox: &Sandbox, aliases: &Path) -> Run {
    let bin = links(sandbox);
    let mut command = sandbox.cmd();
    let command = command
        .env("APIMAIL_ALIASES", aliases)
        .arg0_sendmail(&bin)
        .args(["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]);
    run_with_stdin(command, CRON_TO_ROOT.as_bytes())
}

#[test]
fn cron_with_mailto_unset_delivers_to_roots_alias() {
    let (fake, sandbox) = logged_in();
    let out = cron_to_root(&sandbox, &aliases_file(&sandbox, ALIASES));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.messages().len(), 1);
    let text = delivered_text(&fake, 0);
    let added = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing: {text}"))
            .to_owned()
    };
    let (date, id) = (added("Date: "), added("Message-ID: "));
    assert_eq!(
        text,
        format!(
            "From: \"CronDaemon\" <{ACCOUNT}>\nTo: <ops@example.com>, \"On Call\" <oncall@example.com>\nSubject: Cron <root@host> /usr/local/bin/backup\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\n{date}\n{id}\n\nbackup done\n"
        )
    );
}

#[test]
fn a_local_name_without_an_alias_is_65_and_names_it() {
    let (fake, sandbox) = logged_in();
    let aliases = aliases_file(&sandbox, "postmaster: ops@example.com\n");
    let out = cron_to_root(&sandbox, &aliases);
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("error: a recipient of this send: `root` is a local name with no alias"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "hint: add a line `root: you@example.com` to {}",
            aliases.display()
        )),
        "{}",
        out.stderr
    );
    assert!(fake.messages().is_empty());
    assert!(sandbox.outbox_entries("queue").is_empty());

    // A command in the aliases cannot be run: a configuration error naming its line.
    let aliases = aliases_file(
        &sandbox,
        "# pipe\nroot: ops@example.com, |/usr/bin/logger\n",
    );
    let out = cron_to_root(&sandbox, &aliases);
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
    assert!(fake.messages().is_empty());
}

#[test]
fn a_bounced_message_goes_only_to_the_new_recipient() {
    let (fake, sandbox) = logged_in();
    // mutt's bounce: Resent-* fields first, then the original message.
    let message = format!(
        "Resent-From: {ACCOUNT}\nResent-Date: Fri, 2 Jan 2026 00:00:00 +0000\nResent-Message-ID: <bounce@example.com>\nResent-To: new@example.net\nFrom: ann@example.org\nTo: orig@example.org\nCc: occ@example.org\nSubject: s\n{DATED}\nbody\n"
    );
    let out = sendmail(
        &sandbox,
        &["-oi", "-oem", "--", "new@example.net"],
        &message,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(
        delivered_text(&fake, 0),
        format!(
            "To: <new@example.net>\nResent-From: {ACCOUNT}\nResent-Date: Fri, 2 Jan 2026 00:00:00 +0000\nResent-Message-ID: <bounce@example.com>\nResent-To: new@example.net\nFrom: ann@example.org\nOriginal-To: orig@example.org\nOriginal-Cc: occ@example.org\nSubject: s\n{DATED}\nbody\n"
        ),
        "the APIs read To/Cc/Bcc: only the new recipient may be in them"
    );
    assert!(!out.stderr.contains("orig@example.org"), "{}", out.stderr);
}

#[test]
fn an_unqualified_dash_f_gives_the_accounts_address() {
    let (fake, sandbox) = logged_in();
    let out = sendmail(
        &sandbox,
        &["-i", "-f", "root", "a@example.net"],
        &format!("Subject: f\n{DATED}\nx\n"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        delivered_text(&fake, 0).starts_with(&format!("From: <{ACCOUNT}>\nBcc: <a@example.net>\n")),
        "{}",
        delivered_text(&fake, 0)
    );
}

#[test]
fn no_recipient_at_all_is_65() {
    let (fake, sandbox) = logged_in();
    let out = sendmail(&sandbox, &["-t"], "Subject: nobody\n\nhi\n");
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(fake.messages().is_empty());
}

#[test]
fn not_a_message_is_65() {
    let (_fake, sandbox) = logged_in();
    let out = sendmail(
        &sandbox,
        &["-i", "a@example.net"],
        "this is not\na message\n",
    );
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
}

// 2. Dot termination

#[test]
fn a_lone_dot_ends_input_without_dash_i() {
    let (fake, sandbox) = logged_in();
    let message = "Subject: dots\n\nbefore\n.\nafter\n";
    assert_eq!(sendmail(&sandbox, &["a@example.net"], message).code, 0);
    let text = delivered_text(&fake, 0);
    assert!(
        text.contains("before\n") && !text.contains("after"),
        "{text}"
    );

    assert_eq!(
        sendmail(&sandbox, &["-i", "a@example.net"], message).code,
        0
    );
    let text = delivered_text(&fake, 1);
    assert!(
        text.contains("before\n.\nafter\n"),
        "with -i the dot is content: {text}"
    );
}

// 3. Cron and the symlink

#[test]
fn crons_exact_call_through_a_sendmail_symlink() {
    let (fake, sandbox) = logged_in();
    let bin = links(&sandbox);
    let message = "From: root (Cron Daemon)\nTo: ops@example.net\nSubject: Cron <root@host> backup\nContent-Type: text/plain; charset=UTF-8\n\nbackup done\n";
    let mut command = sandbox.cmd();
    let command = command
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .arg0_sendmail(&bin)
        .args([
            "-FCronDaemon",
            "-i",
            "-B8BITMIME",
            "-oem",
            "ops@example.net",
        ]);
    let out = run_with_stdin(command, message.as_bytes());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = delivered_text(&fake, 0);
    assert!(text.contains("Subject: Cron <root@host> backup"), "{text}");
    assert!(
        text.contains(&format!("From: \"CronDaemon\" <{ACCOUNT}>")),
        "cron's local sender gets the account's address: {text}"
    );
    assert!(!text.contains("From: root"), "{text}");

    let mailq = run(sandbox.cmd().arg0_named(&bin, "mailq"));
    assert_eq!(mailq.code, 0, "{}", mailq.stderr);
    assert!(String::from_utf8_lossy(&mailq.stdout).contains("empty"));
}

/// Runs the links instead of `apimail` (keeping the sandbox environment).
trait Arg0 {
    fn arg0_sendmail(&mut self, bin: &Path) -> &mut Command;
    fn arg0_named(&mut self, bin: &Path, name: &str) -> &mut Command;
}

impl Arg0 for Command {
    fn arg0_sendmail(&mut self, bin: &Path) -> &mut Command {
        self.arg0_named(bin, "sendmail")
    }

    fn arg0_named(&mut self, bin: &Path, name: &str) -> &mut Command {
        let mut replacement = Command::new(bin.join(name));
        for (key, value) in self.get_envs() {
            match value {
                Some(v) => replacement.env(key, v),
                None => replacement.env_remove(key),
            };
        }
        if let Some(dir) = self.get_current_dir() {
            replacement.current_dir(dir);
        }
        *self = replacement;
        self
    }
}

// 4. Temporary failure

#[test]
fn a_503_leaves_the_message_queued_with_exit_0_then_flush_delivers_once() {
    let (fake, sandbox) = logged_in();
    fake.inject(Fault::Status503);
    let out = sendmail(
        &sandbox,
        &["-i", "a@example.net"],
        "Subject: later\n\nqueued\n",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("queued"),
        "one line on stderr: {}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(fake.messages().is_empty());
    assert_eq!(sandbox.outbox_entries("queue").len(), 1);

    let flush = run(sandbox.cmd().args(["queue", "flush", "--all"]));
    assert_eq!(flush.code, 0, "{}", flush.stderr);
    let again = run(sandbox.cmd().args(["queue", "flush", "--all"]));
    assert_eq!(again.code, 0);
    assert_eq!(fake.messages().len(), 1, "delivered exactly once");
    assert!(sandbox.outbox_entries("queue").is_empty());
}

#[test]
fn no_queue_fails_fast_with_75() {
    let (fake, sandbox) = logged_in();
    fake.inject(Fault::Status503);
    let out = run_with_stdin(
        sandbox
            .cmd()
            .env("APIMAIL_NO_QUEUE", "1")
            .args(["sendmail", "-i", "a@example.net"]),
        b"Subject: now or never\n\nx\n",
    );
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(sandbox.outbox_entries("queue").is_empty());
}

#[test]
fn send_keeps_a_failed_message_and_names_it() {
    let (fake, sandbox) = logged_in();
    fake.fail_forever(Fault::Status503);
    let out = run(sandbox.cmd().env("APIMAIL_RETRY_ATTEMPTS", "1").args([
        "send",
        "--to",
        "a@example.net",
        "--subject",
        "s",
        "--text",
        "t",
    ]));
    assert_eq!(out.code, 75, "{}", out.stderr);
    let entries = sandbox.outbox_entries("queue");
    assert_eq!(entries.len(), 1);
    let id = entries[0]["id"].as_str().unwrap();
    assert!(
        out.stderr.contains(&format!("apimail queue retry {id}")),
        "{}",
        out.stderr
    );
    fake.clear_faults();
    let retry = run(sandbox.cmd().args(["queue", "retry", id]));
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert_eq!(fake.messages().len(), 1);
}

#[test]
fn send_queue_and_the_next_send_flushes() {
    let (fake, sandbox) = logged_in();
    let queued = run(sandbox.cmd().args([
        "send",
        "--queue",
        "--to",
        "a@example.net",
        "--subject",
        "first",
        "--text",
        "1",
    ]));
    assert_eq!(queued.code, 0, "{}", queued.stderr);
    assert!(fake.messages().is_empty());
    let now = run(sandbox.cmd().args([
        "send",
        "--to",
        "a@example.net",
        "--subject",
        "second",
        "--text",
        "2",
    ]));
    assert_eq!(now.code, 0, "{}", now.stderr);
    assert_eq!(
        fake.messages().len(),
        2,
        "the queued message left with the next send"
    );
}

// 5. Permanent failure

#[test]
fn a_400_moves_the_message_to_failed_with_the_reason() {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let login = sandbox.login_graph(&fake, &["--login-hint", "user@contoso.com"]);
    assert_eq!(login.code, 0, "{}", login.stderr);
    fake.inject(fake_microsoft::Fault::Error {
        status: 400,
        code: "ErrorInvalidRecipients".into(),
        message: "At least one recipient is not valid.".into(),
    });
    let out = sendmail(&sandbox, &["-i", "bad@example.net"], "Subject: no\n\nx\n");
    assert_eq!(out.code, 65, "{}", out.stderr);
    let failed = sandbox.outbox_entries("failed");
    assert_eq!(failed.len(), 1, "{}", out.stderr);
    let reason = failed[0]["failed_reason"].as_str().unwrap();
    assert!(reason.contains("ErrorInvalidRecipients"), "{reason}");
    let list = run(sandbox.cmd().args(["queue", "list"]));
    assert!(String::from_utf8_lossy(&list.stdout).contains("ErrorInvalidRecipients"));
}

// 6. Concurrent flushes

#[test]
fn two_concurrent_flushes_deliver_each_of_20_exactly_once() {
    let (fake, sandbox) = logged_in();
    for i in 0..20 {
        let out = run(sandbox.cmd().args([
            "send",
            "--queue",
            "--to",
            "a@example.net",
            "--subject",
            &format!("n{i}"),
            "--text",
            "x",
        ]));
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    fake.inject_n(Fault::Slow(Duration::from_millis(50)), 20);
    let flushes: Vec<_> = (0..2)
        .map(|_| {
            sandbox
                .cmd()
                .args(["queue", "flush", "--all"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for flush in flushes {
        let out: Run = flush.wait_with_output().unwrap().into();
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let mut subjects: Vec<String> = fake
        .messages()
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.raw).into_owned();
            text.lines()
                .find(|l| l.starts_with("Subject: "))
                .unwrap()
                .to_owned()
        })
        .collect();
    subjects.sort();
    let before = subjects.len();
    subjects.dedup();
    assert_eq!(before, 20, "every entry was sent once: {subjects:?}");
    assert_eq!(subjects.len(), 20);
}

// 7. kill -9

#[test]
fn kill_9_at_random_points_never_loses_an_accepted_message() {
    let (fake, sandbox) = logged_in();
    fake.fail_forever(Fault::Slow(Duration::from_millis(150)));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut finished_ok = Vec::new();
    for i in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 400);
        let mut child = sandbox
            .cmd()
            .args(["sendmail", "-i", "a@example.net"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let message =
            format!("Message-ID: <kill-{i}@example.com>\nSubject: kill {i}\n\nbody {i}\n");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(message.as_bytes())
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            finished_ok.push(i);
        }
    }
    // Whatever reached the outbox (or the provider) must end up delivered.
    let accepted: Vec<String> = sandbox
        .outbox_entries("queue")
        .iter()
        .map(|e| e["message_id"].as_str().unwrap().to_owned())
        .collect();
    fake.clear_faults();
    let flush = run(sandbox.cmd().args(["queue", "flush", "--all"]));
    assert_eq!(flush.code, 0, "{}", flush.stderr);
    let delivered: Vec<String> = fake
        .messages()
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.raw).into_owned();
            text.lines()
                .find(|l| l.starts_with("Message-ID: "))
                .unwrap()["Message-ID: ".len()..]
                .to_owned()
        })
        .collect();
    for id in &accepted {
        assert!(
            delivered.contains(id),
            "{id} was accepted but never delivered"
        );
    }
    for i in finished_ok {
        let id = format!("<kill-{i}@example.com>");
        assert!(
            delivered.contains(&id),
            "{id} exited 0 but was never delivered"
        );
    }
    assert!(
        sandbox.outbox_entries("queue").is_empty(),
        "nothing is left behind"
    );
    let leftovers = std::fs::read_dir(sandbox.path().join("data/outbox/tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    // A killed writer can leave a partial tmp file; `open` removes old ones.
    assert!(leftovers <= 20);
}

// 8. doctor

#[test]
fn doctor_passes_then_reports_a_revoked_token_and_a_server_that_is_down() {
    let (fake, sandbox) = logged_in();
    let ok = run(sandbox.cmd().arg("doctor"));
    let report = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert_eq!(ok.code, 0, "{report}{}", ok.stderr);
    for check in [
        "configuration",
        "account",
        "token store",
        "token refresh",
        "network",
        "queue",
    ] {
        assert!(report.contains(check), "{check} missing from:\n{report}");
    }

    fake.revoke_refresh_tokens();
    let revoked = run(sandbox.cmd().arg("doctor"));
    let report = String::from_utf8_lossy(&revoked.stdout).into_owned();
    assert_eq!(revoked.code, 77, "{report}");
    let line = report
        .lines()
        .position(|l| l.starts_with("FAIL  token refresh"))
        .expect(&report);
    assert!(
        report
            .lines()
            .nth(line + 1)
            .unwrap()
            .contains("hint: run `apimail auth login gmail"),
        "{report}"
    );

    drop(fake);
    let down = run(sandbox.cmd().arg("doctor"));
    let report = String::from_utf8_lossy(&down.stdout).into_owned();
    assert_ne!(down.code, 0);
    let line = report
        .lines()
        .position(|l| l.starts_with("FAIL  network"))
        .expect(&report);
    assert!(
        report
            .lines()
            .nth(line)
            .unwrap()
            .contains("nothing answers"),
        "{report}"
    );
    assert!(
        report.lines().nth(line + 1).unwrap().contains("hint:"),
        "{report}"
    );
}

// 9. Real programs

fn require(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: `cargo xtask ci` installs it (Debian: apt-get install git-email bsd-mailx)"
    );
}

#[test]
fn git_send_email_delivers_through_apimail() {
    require("/usr/lib/git-core/git-send-email");
    let (fake, sandbox) = logged_in();
    let bin = links(&sandbox);
    let patch = sandbox.path().join("0001-fix.patch");
    std::fs::write(
        &patch,
        "From 3b18e512dba79e4c8300dd08aeb37f8e728b8dad Mon Sep 17 00:00:00 2001\nFrom: Ann Dev <user@example.com>\nDate: Thu, 1 Jan 2026 00:00:00 +0000\nSubject: [PATCH] fix the thing\n\n---\n a.txt | 2 +-\n 1 file changed, 1 insertion(+), 1 deletion(-)\n\ndiff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-old\n+new\n--\n2.39.5\n\n",
    )
    .unwrap();
    // git's own settings and identity are the test's, never the machine's:
    // a fresh machine has no `user.email`, and its host name no domain.
    let mut command = sandbox.cmd();
    command
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Ann Dev")
        .env("GIT_AUTHOR_EMAIL", "user@example.com")
        .env("GIT_COMMITTER_NAME", "Ann Dev")
        .env("GIT_COMMITTER_EMAIL", "user@example.com")
        .args(["--help"]);
    let mut git = Command::new("git");
    for (key, value) in command.get_envs() {
        if let Some(v) = value {
            git.env(key, v);
        }
    }
    let out: Run = git
        .current_dir(sandbox.path())
        .args(["send-email", "--confirm=never", "--quiet", "--no-validate"])
        .arg(format!("--sendmail-cmd={}", bin.join("sendmail").display()))
        .args([
            "--from",
            "Ann Dev <user@example.com>",
            "--to",
            "list@example.net",
        ])
        .arg(&patch)
        .stdin(Stdio::null())
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "git send-email failed: {}", out.stderr);
    let text = delivered_text(&fake, 0);
    assert!(text.contains("Subject: [PATCH] fix the thing"), "{text}");
    assert!(text.contains("To: list@example.net"), "{text}");
    assert!(text.contains("+new"), "{text}");
}

#[test]
fn bsd_mailx_delivers_through_apimail() {
    require("/usr/bin/bsd-mailx");
    let (fake, sandbox) = logged_in();
    let bin = links(&sandbox);
    let mailrc = sandbox.path().join("mailrc");
    std::fs::write(
        &mailrc,
        format!("set sendmail={}\n", bin.join("sendmail").display()),
    )
    .unwrap();
    let mut command = sandbox.cmd();
    command.args(["--help"]);
    let mut mailx = Command::new("/usr/bin/bsd-mailx");
    for (key, value) in command.get_envs() {
        if let Some(v) = value {
            mailx.env(key, v);
        }
    }
    let out = run_with_stdin(
        mailx
            .current_dir(sandbox.path())
            .env("MAILRC", &mailrc)
            .args(["-s", "disk report", "ops@example.net"]),
        b"/var is at 93%\n",
    );
    assert_eq!(out.code, 0, "mailx failed: {}", out.stderr);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.messages().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = delivered_text(&fake, 0);
    assert!(text.contains("Subject: disk report"), "{text}");
    assert!(text.contains("/var is at 93%"), "{text}");
}
