//! A cloud function's handler: each request (here, a line on standard
//! input naming a recipient) sends one message through `Mailer` with the
//! shared store on PostgreSQL, and returns. The function's disk does not
//! outlive its instance, so the message is committed to the database
//! before it is tried: when the provider cannot take it now, the handler
//! still answers "queued", and any worker on the same store sends it
//! later, even after this instance is gone.
//!
//! ```sh
//! export APIMAIL_STORE_URL=postgres://apimail@db.example.com/apimail
//! export APIMAIL_STORE_PASSWORD_FILE=/run/secrets/store-password
//! export GOOGLE_APPLICATION_CREDENTIALS=key.json APIMAIL_GMAIL_USER=alerts@example.com
//! echo oncall@example.com | cargo run -p apimail-mailer --example cloud_function
//! # a worker, anywhere, on a schedule:
//! cargo run -p apimail-mailer --example cloud_function -- flush
//! ```

#![allow(clippy::print_stdout, reason = "an example program")]

use std::io::BufRead;

use apimail_mailer::{Mailer, MessageBuilder};

/// One invocation: what the function answers its caller.
async fn handle(
    mailer: &Mailer,
    from: &str,
    to: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let message = MessageBuilder::new()
        .from(from.parse()?)
        .to(to.parse()?)
        .subject("Your report is ready")
        .text("Sent by a cloud function through apimail.")
        .build()?;
    match mailer.send(&message).await {
        Ok(_) => Ok(format!("sent {}", message.message_id())),
        // Committed to the store: a worker sends it.
        Err(error) if error.outbox_entry().is_some() && error.is_temporary() => Ok(format!(
            "queued {} as {}: {error}",
            message.message_id(),
            error.outbox_entry().unwrap_or_default()
        )),
        Err(error) => Err(error.into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mailer = Mailer::from_env().await?;
    if std::env::args().nth(1).as_deref() == Some("flush") {
        let report = mailer.flush_all().await?;
        println!(
            "flushed: {} sent, {} still queued",
            report.sent, report.queued
        );
        return Ok(());
    }
    let from = std::env::var("APIMAIL_FROM")?;
    for line in std::io::stdin().lock().lines() {
        let answer = match handle(&mailer, &from, line?.trim()).await {
            Ok(answer) => answer,
            Err(error) => format!("error: {error}"),
        };
        println!("{answer}");
    }
    Ok(())
}
