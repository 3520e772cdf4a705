//! The anchor of figure 6: a throwaway Postfix instance on a loopback
//! port, and Postfix's own load generator, `smtp-source`.
//!
//! On Debian as root, a missing Postfix is installed (`apt-get install
//! postfix`, which also ships `/usr/sbin/smtp-source`), as `cargo xtask
//! ci` installs its test tools; elsewhere the bench says what to install.
//! The instance has its own configuration, queue and data directories in
//! a temporary directory: it accepts from 127.0.0.0/8 only, fsyncs each
//! queue file before its 250 (Postfix always does), and hands every
//! message to the `discard:` transport, so its queue stays empty. It never
//! touches the system's Postfix, and is stopped when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Context, Error, Result};

const POSTFIX: &str = "/usr/sbin/postfix";
/// Postfix's SMTP load generator (Debian package `postfix`).
pub(crate) const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";

/// Makes sure Postfix and `smtp-source` are installed: installs them on
/// Debian as root, else says what to install.
pub(crate) fn ensure_installed() -> std::result::Result<(), String> {
    if Path::new(POSTFIX).exists() && Path::new(SMTP_SOURCE).exists() {
        return Ok(());
    }
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root_user || !Path::new("/usr/bin/apt-get").exists() {
        return Err(
            "Postfix not installed (install it to compare: Debian `sudo apt-get install postfix`, \
             which brings /usr/sbin/smtp-source; Fedora `dnf install postfix`)"
                .to_owned(),
        );
    }
    eprintln!("==> bench: installing Postfix (apt-get install postfix)");
    // "No configuration": the package's own instance stays unconfigured
    // and stopped; the bench runs its own.
    let preseed = Command::new("debconf-set-selections")
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            if let Some(stdin) = child.stdin.as_mut() {
                stdin.write_all(b"postfix postfix/main_mailer_type select No configuration\n")?;
            }
            child.wait()
        });
    if !preseed.is_ok_and(|s| s.success()) {
        eprintln!("warning: debconf-set-selections failed; apt-get's default applies");
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(args)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let installed = apt(&["update", "-qq"])
        && apt(&["install", "-y", "-qq", "--no-install-recommends", "postfix"]);
    if installed && Path::new(SMTP_SOURCE).exists() {
        Ok(())
    } else {
        Err("Postfix not installed: `apt-get install postfix` failed".to_owned())
    }
}

/// A running throwaway instance.
#[derive(Debug)]
pub(crate) struct Postfix {
    dir: tempfile::TempDir,
    pub(crate) addr: SocketAddr,
}

impl Postfix {
    /// Configures and starts an instance on 127.0.0.1:`port`.
    pub(crate) fn start(port: u16) -> std::result::Result<Postfix, String> {
        ensure_installed()?;
        let fail =
            |what: &str, e: &dyn std::fmt::Display| format!("Postfix not started: {what}: {e}");
        // Postfix's daemons run as user `postfix` and must reach the
        // queue: the directory is world-searchable, unlike tempfile's
        // default.
        let dir = tempfile::Builder::new()
            .prefix("apimail-bench-postfix-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .tempdir()
            .map_err(|e| fail("cannot make its directory", &e))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let instance = Postfix { dir, addr };
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir_all(instance.dir.path().join(sub))
                .map_err(|e| fail("cannot make its directories", &e))?;
        }
        std::fs::write(instance.etc().join("main.cf"), instance.main_cf())
            .map_err(|e| fail("cannot write main.cf", &e))?;
        std::fs::write(instance.etc().join("master.cf"), master_cf(addr))
            .map_err(|e| fail("cannot write master.cf", &e))?;
        let data = instance.dir.path().join("data");
        let owned = Command::new("chown")
            .arg("postfix")
            .arg(&data)
            .status()
            .is_ok_and(|s| s.success());
        if !owned {
            return Err(
                "Postfix not started: cannot give its data directory to user postfix".into(),
            );
        }
        instance.postfix("start")?;
        let until = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > until {
                return Err(format!(
                    "Postfix did not listen on {addr}; its log: {}",
                    instance.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(instance)
    }

    fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    fn main_cf(&self) -> String {
        let dir = self.dir.path().display();
        format!(
            "# A throwaway instance for `cargo xtask bench`.\n\
             compatibility_level = 3.6\n\
             queue_directory = {dir}/queue\n\
             data_directory = {dir}/data\n\
             maillog_file_prefixes = {dir}\n\
             maillog_file = {dir}/maillog\n\
             myhostname = postfix-bench.localdomain\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mydestination =\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             # Accepted, fsynced, then dropped: nothing leaves the machine.\n\
             default_transport = discard:bench\n\
             relay_transport = discard:bench\n\
             local_transport = discard:bench\n\
             biff = no\n"
        )
    }

    /// `postfix -c ETC <command>`; stderr is only written to a terminal,
    /// so a failure points at the instance's log.
    fn postfix(&self, command: &str) -> std::result::Result<(), String> {
        let status = Command::new(POSTFIX)
            .arg("-c")
            .arg(self.etc())
            .arg(command)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Ok(()),
            _ => Err(format!(
                "`postfix {command}` failed; its log: {}",
                self.log_tail()
            )),
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(3).collect();
        if lines.is_empty() {
            "(empty)".to_owned()
        } else {
            lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if let Err(e) = self.postfix("stop") {
            eprintln!("warning: {e}");
        }
        // Its master exits after the stop; the directory goes with it.
        let pid_file = self.dir.path().join("queue/pid/master.pid");
        let until = Instant::now() + Duration::from_secs(10);
        while pid_file.exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The services an instance needs, none chrooted (the temporary queue
/// has no copy of /etc), the SMTP server on `addr` only.
fn master_cf(addr: SocketAddr) -> String {
    let listen = addr.to_string();
    let services = [
        (listen.as_str(), "inet", "n", "-", "smtpd"),
        ("pickup", "unix", "n", "60", "1 pickup"),
        ("cleanup", "unix", "n", "-", "0 cleanup"),
        ("qmgr", "unix", "n", "300", "1 qmgr"),
        ("rewrite", "unix", "-", "-", "- trivial-rewrite"),
        ("bounce", "unix", "-", "-", "0 bounce"),
        ("defer", "unix", "-", "-", "0 bounce"),
        ("trace", "unix", "-", "-", "0 bounce"),
        ("verify", "unix", "-", "-", "1 verify"),
        ("flush", "unix", "n", "1000?", "0 flush"),
        ("proxymap", "unix", "-", "-", "- proxymap"),
        ("showq", "unix", "n", "-", "- showq"),
        ("error", "unix", "-", "-", "- error"),
        ("retry", "unix", "-", "-", "- error"),
        ("discard", "unix", "-", "-", "- discard"),
        ("anvil", "unix", "-", "-", "1 anvil"),
        ("scache", "unix", "-", "-", "1 scache"),
        ("postlog", "unix-dgram", "n", "-", "1 postlogd"),
    ];
    let mut text = String::from("# service type private unpriv chroot wakeup maxproc command\n");
    for (service, kind, private, wakeup, rest) in services {
        // `smtpd`'s line has no maxproc of its own: the default (100).
        let rest = if rest == "smtpd" { "- smtpd" } else { rest };
        text.push_str(&format!("{service} {kind} {private} - n {wakeup} {rest}\n"));
    }
    text
}

/// What one `smtp-source` run measured.
#[derive(Debug, Clone)]
pub(crate) struct SourceRun {
    pub(crate) messages: usize,
    pub(crate) elapsed: Duration,
}

impl SourceRun {
    pub(crate) fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// `smtp-source -s sessions -m messages -l length -f from -t to addr`: a
/// new session per message, `sessions` at once, as the figures
/// were measured.
pub(crate) fn smtp_source(
    addr: SocketAddr,
    sessions: usize,
    messages: usize,
    length: usize,
    (from, to): (&str, &str),
) -> Result<SourceRun> {
    let started = Instant::now();
    let out = Command::new(SMTP_SOURCE)
        .args(["-s", &sessions.to_string()])
        .args(["-m", &messages.to_string()])
        .args(["-l", &length.to_string()])
        .args(["-f", from, "-t", to])
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {SMTP_SOURCE}"))?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(Error::new(format!(
            "smtp-source against {addr} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(SourceRun { messages, elapsed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_listens_only_on_its_loopback_port_and_chroots_nothing() {
        let text = master_cf(([127, 0, 0, 1], 2599).into());
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines[0], "127.0.0.1:2599 inet n - n - - smtpd");
        assert!(
            lines
                .iter()
                .all(|l| l.split_whitespace().nth(4) == Some("n"))
        );
        assert_eq!(lines.iter().filter(|l| l.contains(" inet ")).count(), 1);
    }
}
