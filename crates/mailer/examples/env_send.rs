//! Sends one message with the credentials in the environment, the way a
//! cloud function or a cron job would.
//!
//! ```sh
//! export GOOGLE_APPLICATION_CREDENTIALS=key.json APIMAIL_GMAIL_USER=alerts@example.com
//! cargo run -p apimail-mailer --example env_send -- alerts@example.com oncall@example.com
//! ```

#![allow(clippy::print_stdout, reason = "an example program")]

use apimail_mailer::{Mailer, MessageBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(from), Some(to)) = (args.next(), args.next()) else {
        return Err("usage: env_send FROM TO".into());
    };
    let mailer = Mailer::from_env().await?;
    let message = MessageBuilder::new()
        .from(from.parse()?)
        .to(to.parse()?)
        .subject("Hello from apimail")
        .text("Sent with Mailer::from_env().")
        .build()?;
    let receipt = mailer.send(&message).await?;
    println!(
        "sent through {}: {}",
        receipt.provider,
        receipt.id.as_deref().unwrap_or("(no id)")
    );
    Ok(())
}
