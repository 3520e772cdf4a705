//! Figure 9: the admin console over a year of an office's mail: 1,000,000
//! journal records (`--quick`: 20,000, and the row says so), indexed once,
//! then the log page and the API timed (p95 of newest, old, filtered and
//! searched pages) and the CSV of every message downloaded, with the
//! console process's peak RSS. The console is `apimail admin serve`, the
//! same build as the rest of the bench; requests are plain HTTP/1.1 on
//! loopback.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Options;
use crate::{Context, Error, Result};

pub(crate) const HEADING: &str = "## 9. Admin console";

/// Records of the full run: about a year of a busy office's mail.
const RECORDS: usize = 1_000_000;
/// Records of `--quick`.
const QUICK_RECORDS: usize = 20_000;
/// The journal's files (the current one and five rotated ones).
const FILES: usize = 6;
/// Requests of each kind, per run.
const REQUESTS: usize = 20;
/// The targets.
const P95_MS: f64 = 100.0;
const CSV_RSS_BYTES: u64 = 64 << 20;
/// The records' times: the last 399 days (the journal keeps 400).
const SPAN_SECS: i64 = 399 * 86_400;
const ADMIN: &str = "bench";
const PASSWORD: &str = "bench-password-1";

/// Figure 9's figures.
#[derive(Debug, Clone)]
pub(crate) struct ConsoleFigures {
    pub(crate) records: usize,
    pub(crate) quick: bool,
    /// Starting the console the first time: indexing every record.
    pub(crate) index_secs: f64,
    pub(crate) page_p95_ms: f64,
    pub(crate) page_max_ms: f64,
    pub(crate) api_p95_ms: f64,
    pub(crate) api_max_ms: f64,
    pub(crate) csv_rows: usize,
    pub(crate) csv_bytes: u64,
    pub(crate) csv_secs: f64,
    /// The console's peak RSS (VmHWM) over a fresh start, every timed
    /// request and the whole CSV download.
    pub(crate) peak_rss: u64,
}

/// Builds the journal, indexes it, and measures.
pub(crate) fn measure(exe: &Path, target: &Path, options: &Options) -> Result<ConsoleFigures> {
    let records = if options.quick {
        QUICK_RECORDS
    } else {
        RECORDS
    };
    let scratch = target.join("bench/console");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(scratch.join("data/journal"))
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    eprintln!("==> bench: console, writing {records} journal records");
    let now = unix_now();
    write_journal(&scratch.join("data/journal"), records, now)?;
    let env = Env::new(&scratch);
    let mut add = env.cmd(exe);
    add.args(["admin", "user", "add", ADMIN]);
    pipe(&mut add, &format!("{PASSWORD}\n"))?;
    let mut create = env.cmd(exe);
    create.args(["admin", "token", "create", "monitor", "--read-only"]);
    let token = pipe(&mut create, "")?.trim().to_owned();

    eprintln!("==> bench: console, indexing");
    let started = Instant::now();
    let console = Console::start(&env, exe)?;
    let index_secs = started.elapsed().as_secs_f64();
    drop(console);

    // A fresh process: its peak RSS is serving, not indexing.
    let console = Console::start(&env, exe)?;
    let session = console.login()?;
    // A place about 90% of the way back: an old page.
    let old = format!("{}.{}", now - SPAN_SECS + SPAN_SECS / 10, records / 10);
    let queries = [
        String::new(),
        format!("cursor={old}"),
        "outcome=failed".to_owned(),
        "q=client17.example".to_owned(),
        "q=%E8%AB%8B%E6%B1%82%E6%9B%B8%2012345".to_owned(), // 請求書 12345
        format!("recipient=user42%40client42.example&cursor={old}"),
    ];
    let runs = if options.quick { 3 } else { REQUESTS };
    let mut pages = Vec::new();
    let mut api = Vec::new();
    eprintln!("==> bench: console, timing pages and the API");
    for _ in 0..runs {
        for query in &queries {
            let (ms, status) = console.time(
                &format!("/log?{query}"),
                &format!("Cookie: apimail_session={session}"),
            )?;
            check(status, 200, "/log")?;
            pages.push(ms);
            let (ms, status) = console.time(
                &format!("/api/v1/messages?{query}"),
                &format!("Authorization: Bearer {token}"),
            )?;
            check(status, 200, "/api/v1/messages")?;
            api.push(ms);
        }
    }
    eprintln!("==> bench: console, downloading the CSV of every message");
    let started = Instant::now();
    let (csv_rows, csv_bytes) = console.download(
        "/api/v1/messages.csv",
        &format!("Authorization: Bearer {token}"),
    )?;
    let csv_secs = started.elapsed().as_secs_f64();
    let peak_rss = console.peak_rss()?;
    Ok(ConsoleFigures {
        records,
        quick: options.quick,
        index_secs,
        page_p95_ms: p95(&mut pages),
        page_max_ms: pages.iter().copied().fold(0.0, f64::max),
        api_p95_ms: p95(&mut api),
        api_max_ms: api.iter().copied().fold(0.0, f64::max),
        csv_rows,
        csv_bytes,
        csv_secs,
        peak_rss,
    })
}

/// The section, in the report's format.
pub(crate) fn render(figures: &ConsoleFigures, profile: &str, out: &mut String) {
    use std::fmt::Write as _;
    let count = if figures.quick {
        format!(
            "{} journal records (`--quick`: not the 1,000,000 of the target)",
            figures.records
        )
    } else {
        format!("{} journal records", figures.records)
    };
    let _ = writeln!(
        out,
        "{HEADING}\n\n`apimail admin serve` ({profile} build) over {count}, one message each, \
         spread over 399 days. Indexing them all at the first start took {:.1} s. Each timed \
         request is made {} times, on a fresh connection: the newest page, a page about 90% of \
         the way back, outcome = failed, a free-text search of an address part and of a Japanese \
         Subject, and a recipient's old page; wall time from connect to the last byte.\n",
        figures.index_secs,
        if figures.quick { 3 } else { REQUESTS },
    );
    let _ = writeln!(
        out,
        "| what | p95 ms | max ms |\n|---|---:|---:|\n| log page (`/log`) | {:.1} | {:.1} |\n| API (`/api/v1/messages`) | {:.1} | {:.1} |\n",
        figures.page_p95_ms, figures.page_max_ms, figures.api_p95_ms, figures.api_max_ms
    );
    let _ = writeln!(
        out,
        "CSV of every message (`/api/v1/messages.csv`): {} rows, {:.1} MB in {:.1} s; the \
         console's peak RSS (VmHWM, from its start through every request above and the \
         download): {:.1} MB.\n",
        figures.csv_rows,
        figures.csv_bytes as f64 / 1e6,
        figures.csv_secs,
        figures.peak_rss as f64 / (1 << 20) as f64
    );
    let of = if figures.quick {
        format!(" ({} records, quick)", figures.records)
    } else {
        String::new()
    };
    let _ = writeln!(out, "| target | met? |\n|---|---|");
    let _ = writeln!(
        out,
        "| log page p95 < {P95_MS} ms at 1,000,000 records{of} | {} |",
        met(figures.page_p95_ms < P95_MS)
    );
    let _ = writeln!(
        out,
        "| API p95 < {P95_MS} ms at 1,000,000 records{of} | {} |",
        met(figures.api_p95_ms < P95_MS)
    );
    let _ = writeln!(
        out,
        "| CSV of all of them in constant memory: console RSS < 64 MB{of} | {} |",
        met(figures.peak_rss < CSV_RSS_BYTES && figures.csv_rows == figures.records)
    );
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "**not met**" }
}

fn check(status: u16, wanted: u16, what: &str) -> Result<()> {
    if status == wanted {
        Ok(())
    } else {
        Err(Error::new(format!(
            "the console answered {what} with {status}, not {wanted}"
        )))
    }
}

fn p95(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let at = ((values.len() as f64 * 0.95).ceil() as usize).clamp(1, values.len().max(1)) - 1;
    values.get(at).copied().unwrap_or(f64::NAN)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `records` records, oldest first, in the
/// journal's files (`journal.5.jsonl` the oldest … `journal.jsonl`).
/// Over the last 399 days: the journal keeps 400.
fn write_journal(dir: &Path, records: usize, now: i64) -> Result<()> {
    let span = SPAN_SECS;
    let stamp = time::macros::format_description!("[year][month][day]T[hour][minute][second]");
    let per_file = records.div_ceil(FILES);
    for file in 0..FILES {
        let name = match FILES - 1 - file {
            0 => "journal.jsonl".to_owned(),
            n => format!("journal.{n}.jsonl"),
        };
        let path = dir.join(name);
        let mut out = BufWriter::new(
            File::create(&path).with_context(|| format!("cannot write {}", path.display()))?,
        );
        for n in file * per_file..((file + 1) * per_file).min(records) {
            let time = now - span + (n as i64 * span) / records as i64;
            let at = time::OffsetDateTime::from_unix_timestamp(time)
                .map_err(|e| Error::new(e.to_string()))?;
            let (outcome, error) = match n % 50 {
                0 => (
                    "failed",
                    Some("the provider refused it: 550 mailbox unavailable"),
                ),
                1 => (
                    "held",
                    Some("the account's authorization failed; sign in again"),
                ),
                _ => ("sent", None),
            };
            let subject = if n % 3 == 0 {
                format!("請求書 {n}")
            } else {
                format!("Scan {n} from printer-{}", n % 40)
            };
            let record = serde_json::json!({
                "time": time,
                "queue_id": format!("{}-{:012x}", at.format(&stamp).unwrap_or_default(), n),
                "message_id": format!("<{n}@office.example>"),
                "account": "office",
                "client": format!("192.0.2.{}", n % 200),
                "smtp_user": "scanner",
                "provider": "gmail",
                "from": "scanner@office.example",
                "recipients": [format!("user{}@client{}.example", n % 5000, n % 300)],
                "subject": subject,
                "size": 20_000 + n % 5000,
                "attempts": 1,
                "possible_duplicate": false,
                "outcome": outcome,
                "provider_id": format!("18c{n:x}"),
                "error": error,
            });
            serde_json::to_writer(&mut out, &record).map_err(|e| Error::new(e.to_string()))?;
            out.write_all(b"\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        out.flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The environment of every command: config, data dir and home in the
/// scratch directory.
struct Env {
    vars: Vec<(&'static str, PathBuf)>,
}

impl Env {
    fn new(scratch: &Path) -> Env {
        Env {
            vars: vec![
                ("APIMAIL_CONFIG", scratch.join("config.toml")),
                ("APIMAIL_DATA_DIR", scratch.join("data")),
                ("HOME", scratch.join("home")),
            ],
        }
    }

    fn cmd(&self, exe: &Path) -> Command {
        let mut cmd = Command::new(exe);
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// Runs `cmd` with `stdin`; its standard output.
fn pipe(cmd: &mut Command, stdin: &str) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `apimail admin serve` on a free port; stopped when dropped.
struct Console {
    child: Child,
    port: u16,
}

impl Console {
    /// Starts it and waits (up to an hour: the first start indexes) for
    /// `/healthz`.
    fn start(env: &Env, exe: &Path) -> Result<Console> {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .with_context(|| "cannot find a free port")?;
            listener
                .local_addr()
                .with_context(|| "cannot find a free port")?
                .port()
        };
        let child = env
            .cmd(exe)
            .args(["admin", "serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| "cannot start apimail admin serve")?;
        let mut console = Console { child, port };
        let deadline = Instant::now() + Duration::from_secs(3600);
        loop {
            if let Ok((_, 200, _)) = console.request("GET", "/healthz", "", "") {
                return Ok(console);
            }
            if let Ok(Some(status)) = console.child.try_wait() {
                return Err(Error::new(format!("apimail admin serve ended: {status}")));
            }
            if Instant::now() > deadline {
                return Err(Error::new("apimail admin serve did not answer in an hour"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Signs in as the bench's administrator; the session cookie.
    fn login(&self) -> Result<String> {
        let (head, _, _) = self.request("GET", "/login", "", "")?;
        let token = cookie(&head, "apimail_login")
            .ok_or_else(|| Error::new("the login page set no CSRF cookie"))?;
        let body = format!("csrf={token}&user={ADMIN}&password={PASSWORD}");
        let (head, status, _) = self.request(
            "POST",
            "/login",
            &format!(
                "Cookie: apimail_login={token}\r\nContent-Type: application/x-www-form-urlencoded"
            ),
            &body,
        )?;
        if status != 303 && status != 302 {
            return Err(Error::new(format!("signing in answered {status}")));
        }
        cookie(&head, "apimail_session").ok_or_else(|| Error::new("signing in set no session"))
    }

    /// One GET with `header`: its time in ms and status.
    fn time(&self, path: &str, header: &str) -> Result<(f64, u16)> {
        let started = Instant::now();
        let (_, status, _) = self.request("GET", path, header, "")?;
        Ok((started.elapsed().as_secs_f64() * 1000.0, status))
    }

    /// One GET, its body read and dropped as it comes: (CSV rows without
    /// the header, bytes).
    fn download(&self, path: &str, header: &str) -> Result<(usize, u64)> {
        let mut stream = self.send("GET", path, header, "")?;
        let mut reader = BufReader::with_capacity(1 << 16, &mut stream);
        let status = read_head(&mut reader)?.1;
        check(status, 200, path)?;
        // Chunked: count CRLF-ended lines outside quotes over the raw
        // stream; the chunk framing adds lines too, so decode it.
        let mut rows = 0usize;
        let mut bytes = 0u64;
        let mut quoted = false;
        let mut line = String::new();
        loop {
            line.clear();
            reader
                .read_line(&mut line)
                .with_context(|| "the CSV download broke off")?;
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| Error::new("the CSV download is not chunked"))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size];
            reader
                .read_exact(&mut chunk)
                .with_context(|| "the CSV download broke off")?;
            let mut crlf = [0; 2];
            reader
                .read_exact(&mut crlf)
                .with_context(|| "the CSV download broke off")?;
            bytes += size as u64;
            for (i, b) in chunk.iter().enumerate() {
                match b {
                    b'"' => quoted = !quoted,
                    b'\n' if !quoted && i > 0 && chunk[i - 1] == b'\r' => rows += 1,
                    _ => {}
                }
            }
        }
        Ok((rows.saturating_sub(1), bytes))
    }

    fn send(&self, method: &str, path: &str, header: &str, body: &str) -> Result<TcpStream> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .with_context(|| "cannot connect to the console")?;
        stream
            .set_read_timeout(Some(Duration::from_secs(600)))
            .with_context(|| "cannot set a timeout")?;
        let extra = if header.is_empty() {
            String::new()
        } else {
            format!("{header}\r\n")
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .with_context(|| "cannot send a request to the console")?;
        Ok(stream)
    }

    /// One request on a new connection: (head, status, body).
    fn request(
        &self,
        method: &str,
        path: &str,
        header: &str,
        body: &str,
    ) -> Result<(String, u16, Vec<u8>)> {
        let stream = self.send(method, path, header, body)?;
        let mut reader = BufReader::new(stream);
        let (head, status) = read_head(&mut reader)?;
        let mut rest = Vec::new();
        reader
            .read_to_end(&mut rest)
            .with_context(|| "the console's answer broke off")?;
        Ok((head, status, rest))
    }

    /// The process's peak RSS, from /proc.
    fn peak_rss(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| Error::new(format!("no VmHWM in {path}")))
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The answer's head and status.
fn read_head(reader: &mut impl BufRead) -> Result<(String, u16)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .with_context(|| "the console's answer broke off")?;
        if n == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::new("the console's answer has no status line"))?;
    Ok((head, status))
}

/// The value `Set-Cookie` gives `name`.
fn cookie(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_the_value_at_95_percent() {
        let mut values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p95(&mut values), 95.0);
        assert_eq!(p95(&mut [3.0]), 3.0);
    }

    #[test]
    fn a_quick_row_says_it_is_not_the_target_count() {
        let figures = ConsoleFigures {
            records: 20_000,
            quick: true,
            index_secs: 1.0,
            page_p95_ms: 10.0,
            page_max_ms: 12.0,
            api_p95_ms: 8.0,
            api_max_ms: 9.0,
            csv_rows: 20_000,
            csv_bytes: 1,
            csv_secs: 1.0,
            peak_rss: 30 << 20,
        };
        let mut out = String::new();
        render(&figures, "dev", &mut out);
        assert!(out.contains("20000 records, quick) | met |"), "{out}");
        assert!(out.contains("not the 1,000,000"), "{out}");
    }
}
