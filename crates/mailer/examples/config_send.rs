//! Sends one message as an account of the command line's configuration,
//! with the tokens `apimail auth login` stored (`APIMAIL_CONFIG`,
//! `APIMAIL_DATA_DIR`, or their platform defaults).
//!
//! ```sh
//! apimail auth login gmail
//! cargo run -p apimail-mailer --example config_send -- me@gmail.com friend@example.com [ACCOUNT]
//! ```

#![allow(clippy::print_stdout, reason = "an example program")]

use apimail_mailer::{Mailer, MessageBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(from), Some(to)) = (args.next(), args.next()) else {
        return Err("usage: config_send FROM TO [ACCOUNT]".into());
    };
    let account = args.next();
    let mailer = Mailer::from_config(None, account.as_deref()).await?;
    let message = MessageBuilder::new()
        .from(from.parse()?)
        .to(to.parse()?)
        .subject("Hello from apimail")
        .text("Sent with Mailer::from_config().")
        .build()?;
    let receipt = mailer.send(&message).await?;
    println!(
        "sent through {}: {}",
        receipt.provider,
        receipt.id.as_deref().unwrap_or("(no id)")
    );
    Ok(())
}
