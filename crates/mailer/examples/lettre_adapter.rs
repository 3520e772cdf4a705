//! An existing lettre program switched from SMTP to the Gmail API or
//! Microsoft Graph: the transport is the one line that changes.
//!
//! ```sh
//! cargo run -p apimail-mailer --features lettre --example lettre_adapter -- \
//!     alerts@example.com to@example.com cc@example.com bcc@example.com
//! ```

#![allow(clippy::print_stdout, reason = "an example program")]

use apimail_mailer::Mailer;
use lettre::AsyncTransport;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [from, to, cc, bcc] = args.as_slice() else {
        return Err("usage: lettre_adapter FROM TO CC BCC".into());
    };
    let message = lettre::Message::builder()
        .from(from.parse()?)
        .to(to.parse()?)
        .cc(cc.parse()?)
        .bcc(bcc.parse()?)
        .subject("Sent with lettre")
        .body("Bcc recipients are kept: the adapter puts them back.".to_owned())?;

    // Was: AsyncSmtpTransport::<Tokio1Executor>::relay("smtp.example.com")?.build()
    let transport = Mailer::from_env().await?.lettre();

    let receipt = transport.send(message).await?;
    println!("sent: {}", receipt.id.as_deref().unwrap_or("(no id)"));
    Ok(())
}
