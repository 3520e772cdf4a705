//! The library bench's program (`cargo xtask bench --only library`):
//! `Mailer::from_env()`, then COUNT sends of a 2 KB message, AT_ONCE at a
//! time from clones of the one mailer. Prints one JSON line: how long the
//! mailer took to build, and each send's time in milliseconds, in order of
//! completion.
//!
//! ```sh
//! cargo run -p apimail-mailer --example bench_sends -- FROM TO COUNT AT_ONCE
//! ```

#![allow(clippy::print_stdout, reason = "an example program")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use apimail_mailer::{Mailer, MessageBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [from, to, count, at_once] = args.as_slice() else {
        return Err("usage: bench_sends FROM TO COUNT AT_ONCE".into());
    };
    let (count, at_once): (usize, usize) = (count.parse()?, at_once.parse()?);
    let started = Instant::now();
    let mailer = Mailer::from_env().await?;
    let build_ms = started.elapsed().as_secs_f64() * 1000.0;
    let line = "apimail bench: a small message, as cron and monitoring send them.\n";
    let text = line.repeat(2000 / line.len());
    let next = Arc::new(AtomicUsize::new(0));
    let times = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let mut workers = Vec::new();
    for _ in 0..at_once {
        let (mailer, next, times) = (mailer.clone(), next.clone(), times.clone());
        let (from, to, text) = (from.clone(), to.clone(), text.clone());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let message = MessageBuilder::new()
                    .from(from.parse()?)
                    .to(to.parse()?)
                    .subject("bench")
                    .text(text.as_str())
                    .build()?;
                let sent = Instant::now();
                mailer.send(&message).await?;
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                times.lock().expect("not poisoned").push(ms);
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for worker in workers {
        worker.await?.map_err(|e| e.to_string())?;
    }
    let times = times.lock().expect("not poisoned");
    let list: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
    println!(
        "{{\"build_ms\":{build_ms:.3},\"total_ms\":{:.3},\"send_ms\":[{}]}}",
        started.elapsed().as_secs_f64() * 1000.0,
        list.join(",")
    );
    Ok(())
}
