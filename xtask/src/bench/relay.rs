//! Figure 6: `apimail relay`'s acceptance, against Postfix on the same
//! machine when it is installed. The load generator is ours (one SMTP
//! session per connection, each message MAIL, RCPT, DATA, waiting for every
//! reply, as Postfix's `smtp-source` does), so both servers get the same
//! load and the time from the end of DATA to the 250 is measured per
//! message.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Options;
use super::world::{Provider, RECIPIENT, World};
use crate::{Context, Error, Result};

/// Concurrent connections of each throughput row.
pub(crate) const CONNECTIONS: [usize; 3] = [1, 10, 50];
/// Idle connections for the memory row.
pub(crate) const IDLE_CONNECTIONS: usize = 100;

/// One throughput measurement.
#[derive(Debug, Clone)]
pub(crate) struct ThroughputRow {
    /// `apimail relay` or `Postfix`.
    pub(crate) server: &'static str,
    pub(crate) connections: usize,
    pub(crate) messages: usize,
    pub(crate) per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// Figure 6's figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct RelayFigures {
    pub(crate) rows: Vec<ThroughputRow>,
    /// The relay's RSS in MB with [`IDLE_CONNECTIONS`] idle connections.
    pub(crate) idle_rss_mb: Option<f64>,
    /// Why Postfix was not measured, if it was not.
    pub(crate) postfix_missing: Option<String>,
    pub(crate) message_bytes: usize,
}

/// Messages per connection count: about the same total for each row.
fn messages(options: &Options, connections: usize) -> usize {
    let total = if options.quick { 100 } else { 1000 };
    (total / connections).max(2) * connections
}

/// Measures the relay (and Postfix when installed).
pub(crate) fn measure(world: &World, options: &Options) -> Result<RelayFigures> {
    let message = message();
    let mut figures = RelayFigures {
        message_bytes: message.len(),
        ..RelayFigures::default()
    };
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut relay = world
        .apimail(Provider::Gmail)
        .args(["relay", "--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| "cannot start apimail relay")?;
    let measured = (|| -> Result<()> {
        wait_listening(addr, &mut relay)?;
        for connections in CONNECTIONS {
            eprintln!("==> bench: relay, {connections} connection(s)");
            figures.rows.push(load(
                "apimail relay",
                addr,
                connections,
                messages(options, connections),
                &message,
            )?);
        }
        eprintln!("==> bench: relay, RSS with {IDLE_CONNECTIONS} idle connections");
        // The load's sessions close first.
        std::thread::sleep(Duration::from_secs(1));
        figures.idle_rss_mb = Some(idle_rss(addr, relay.id())?);
        Ok(())
    })();
    let _ = relay.kill();
    let _ = relay.wait();
    measured?;

    match postfix_addr() {
        Err(why) => figures.postfix_missing = Some(why),
        Ok(postfix) => {
            for connections in CONNECTIONS {
                eprintln!("==> bench: Postfix, {connections} connection(s)");
                figures.rows.push(load(
                    "Postfix",
                    postfix,
                    connections,
                    messages(options, connections),
                    &message,
                )?);
            }
            postfix_stop();
        }
    }
    Ok(figures)
}

/// A 2 KB message from the Gmail account to the bench's recipient.
fn message() -> Vec<u8> {
    let line = "apimail bench: a scan-to-mail notice of about two kilobytes.\r\n";
    format!(
        "From: {}\r\nTo: {RECIPIENT}\r\nSubject: relay bench\r\n\r\n{}",
        Provider::Gmail.user(),
        line.repeat(2000 / line.len())
    )
    .into_bytes()
}

fn free_port() -> Result<u16> {
    let socket =
        std::net::TcpListener::bind("127.0.0.1:0").with_context(|| "cannot find a free port")?;
    Ok(socket
        .local_addr()
        .with_context(|| "no local address")?
        .port())
}

fn wait_listening(addr: SocketAddr, relay: &mut Child) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = relay.try_wait() {
            return Err(Error::new(format!("apimail relay exited: {status}")));
        }
        if Instant::now() > until {
            return Err(Error::new("apimail relay did not start listening"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One SMTP client session.
struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Session {
    fn open(addr: SocketAddr) -> Result<Session> {
        let stream =
            TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .with_context(|| "cannot set a timeout")?;
        let writer = stream
            .try_clone()
            .with_context(|| "cannot clone a socket")?;
        let mut session = Session {
            reader: BufReader::new(stream),
            writer,
        };
        session.expect("220")?;
        session.send(b"EHLO bench.example\r\n", "250")?;
        Ok(session)
    }

    /// Reads one reply (all its lines); fails unless its code is `code`.
    fn expect(&mut self, code: &str) -> Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self
                .reader
                .read_line(&mut line)
                .with_context(|| "the server did not answer")?;
            if read == 0 || line.len() < 4 {
                return Err(Error::new(format!("the server closed or sent {line:?}")));
            }
            if line.as_bytes()[3] == b' ' {
                break;
            }
        }
        if line.starts_with(code) {
            Ok(())
        } else {
            Err(Error::new(format!(
                "expected {code}, got {}",
                line.trim_end()
            )))
        }
    }

    fn send(&mut self, bytes: &[u8], code: &str) -> Result<()> {
        self.writer
            .write_all(bytes)
            .with_context(|| "cannot write to the server")?;
        self.expect(code)
    }

    /// One message; the time from the end of DATA to the 250.
    fn mail(&mut self, message: &[u8]) -> Result<Duration> {
        let from = format!("MAIL FROM:<{}>\r\n", Provider::Gmail.user());
        self.send(from.as_bytes(), "250")?;
        self.send(format!("RCPT TO:<{RECIPIENT}>\r\n").as_bytes(), "250")?;
        self.send(b"DATA\r\n", "354")?;
        self.writer
            .write_all(message)
            .with_context(|| "cannot write the message")?;
        let started = Instant::now();
        self.send(b".\r\n", "250")?;
        Ok(started.elapsed())
    }
}

/// `count` messages over `connections` sessions at once.
fn load(
    server: &'static str,
    addr: SocketAddr,
    connections: usize,
    count: usize,
    message: &[u8],
) -> Result<ThroughputRow> {
    let per_connection = count / connections;
    let started = Instant::now();
    let latencies = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                scope.spawn(move || -> Result<Vec<Duration>> {
                    let mut session = Session::open(addr)?;
                    let latencies = (0..per_connection)
                        .map(|_| session.mail(message))
                        .collect::<Result<Vec<_>>>()?;
                    let _ = session.writer.write_all(b"QUIT\r\n");
                    Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for worker in workers {
            all.extend(
                worker
                    .join()
                    .map_err(|_| Error::new("a load thread panicked"))??,
            );
        }
        Ok::<_, Error>(all)
    })?;
    let elapsed = started.elapsed();
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    Ok(ThroughputRow {
        server,
        connections,
        messages: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    })
}

/// The relay's resident set with [`IDLE_CONNECTIONS`] sessions open and
/// idle after EHLO, from /proc.
fn idle_rss(addr: SocketAddr, pid: u32) -> Result<f64> {
    let sessions = (0..IDLE_CONNECTIONS)
        .map(|_| Session::open(addr))
        .collect::<Result<Vec<_>>>()?;
    std::thread::sleep(Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| "cannot read the relay's /proc status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Error::new("no VmRSS in /proc status"))?;
    drop(sessions);
    Ok(kib / 1024.0)
}

/// Postfix on 127.0.0.1:25, started if it is installed and not running.
fn postfix_addr() -> std::result::Result<SocketAddr, String> {
    let addr: SocketAddr = ([127, 0, 0, 1], 25).into();
    if !Path::new("/usr/sbin/postfix").exists() {
        return Err("Postfix not installed".to_owned());
    }
    if TcpStream::connect(addr).is_err() {
        let started = Command::new("/usr/sbin/postfix")
            .arg("start")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !started.is_ok_and(|s| s.success()) {
            return Err("Postfix is installed but `postfix start` failed".to_owned());
        }
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > until {
                return Err("Postfix did not listen on 127.0.0.1:25".to_owned());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(addr)
}

/// Stops Postfix and drops what the bench queued in it.
fn postfix_stop() {
    let quiet = |args: &[&str]| {
        let _ = Command::new(args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    quiet(&["/usr/sbin/postsuper", "-d", "ALL"]);
    quiet(&["/usr/sbin/postfix", "stop"]);
}

/// The heading [`render`] starts with; `--only relay` replaces the report
/// from there to its end.
pub(crate) const HEADING: &str = "## 6. SMTP relay";

/// Most milliseconds from the end of DATA to the 250, at the 99th
/// percentile.
const P99_MS: f64 = 20.0;
/// Most RSS with [`IDLE_CONNECTIONS`] idle connections, in MB.
const IDLE_RSS_MB: f64 = 50.0;

/// Figure 6 and its targets, in Markdown.
pub(crate) fn render(figures: &RelayFigures, profile: &str, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "{HEADING}\n\n`apimail relay` ({profile} build) on 127.0.0.1, relaying for the Gmail account \
         (the workers deliver to the fake in the background, paced). Each connection sends \
         {} byte messages one after the other (MAIL, RCPT, DATA, each reply awaited), like \
         Postfix's `smtp-source`; the generator is xtask's own, the same for both servers. \
         Before the 250, apimail syncs the message file and its envelope file, renames both \
         and syncs the queue directory once, a sync shared by the sessions that finished \
         meanwhile (3 syncs at most); Postfix's cleanup fsyncs its one queue file. \
         Latency is from the end of DATA to the 250.\n",
        figures.message_bytes
    );
    let _ = writeln!(
        out,
        "| server | connections | messages | accepted msgs/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|"
    );
    for row in &figures.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} |",
            row.server, row.connections, row.messages, row.per_second, row.p50_ms, row.p99_ms
        );
    }
    if let Some(why) = &figures.postfix_missing {
        let _ = writeln!(out, "| Postfix | – | – | {why} | – | – |");
    }
    if let Some(mb) = figures.idle_rss_mb {
        let _ = writeln!(
            out,
            "\nRSS of `apimail relay` with {IDLE_CONNECTIONS} idle connections (after EHLO): **{mb:.1} MB**."
        );
    }
    let _ = writeln!(out, "\n| relay target | met | this run |\n|---|---|---|");
    let find = |server: &str, connections: usize| {
        figures
            .rows
            .iter()
            .find(|r| r.server == server && r.connections == connections)
    };
    let throughput = match (find("apimail relay", 10), find("Postfix", 10)) {
        (Some(relay), Some(postfix)) => (
            if relay.per_second >= postfix.per_second {
                "yes"
            } else {
                "**no**"
            },
            format!(
                "{:.0} msgs/s against Postfix's {:.0} at 10 connections",
                relay.per_second, postfix.per_second
            ),
        ),
        (Some(relay), None) => (
            "not measured",
            format!(
                "{:.0} msgs/s at 10 connections; {}",
                relay.per_second,
                figures
                    .postfix_missing
                    .as_deref()
                    .unwrap_or("Postfix not measured")
            ),
        ),
        _ => ("not measured", "no relay row".to_owned()),
    };
    let _ = writeln!(
        out,
        "| acceptance throughput at least Postfix's at 10 connections | {} | {} |",
        throughput.0, throughput.1
    );
    let relay_rows: Vec<&ThroughputRow> = figures
        .rows
        .iter()
        .filter(|r| r.server == "apimail relay")
        .collect();
    let p99_met = !relay_rows.is_empty() && relay_rows.iter().all(|r| r.p99_ms < P99_MS);
    let p99_detail: Vec<String> = relay_rows
        .iter()
        .map(|r| format!("{:.1} ms at {}", r.p99_ms, r.connections))
        .collect();
    let _ = writeln!(
        out,
        "| p99 end of DATA → 250 under {P99_MS:.0} ms | {} | {} |",
        if p99_met { "yes" } else { "**no**" },
        p99_detail.join(", ")
    );
    let _ = writeln!(
        out,
        "| under {IDLE_RSS_MB:.0} MB RSS with {IDLE_CONNECTIONS} connections | {} | {} |",
        match figures.idle_rss_mb {
            Some(mb) if mb < IDLE_RSS_MB => "yes",
            Some(_) => "**no**",
            None => "not measured",
        },
        figures
            .idle_rss_mb
            .map_or("–".to_owned(), |mb| format!("{mb:.1} MB"))
    );
    out.push('\n');
}
