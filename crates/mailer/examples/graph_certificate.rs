//! Microsoft Graph app-only with a certificate, built explicitly: nothing
//! else is read from the environment than what this program reads itself.
//!
//! ```sh
//! cargo run -p apimail-mailer --example graph_certificate -- \
//!     TENANT CLIENT_ID app.pem alerts@contoso.com oncall@contoso.com
//! ```
//!
//! `GRAPH_API_URL` and `AUTHORITY_URL` point it at a gateway (or a test
//! server) instead of Microsoft's hosts.

#![allow(clippy::print_stdout, reason = "an example program")]

use std::time::Duration;

use apimail_mailer::{Credentials, Mailer, MessageBuilder, Secret};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tenant, client_id, pem_path, mailbox, to] = args.as_slice() else {
        return Err("usage: graph_certificate TENANT CLIENT_ID PEM MAILBOX TO".into());
    };
    let pem = Secret::new(std::fs::read_to_string(pem_path)?);
    let mut builder = Mailer::builder(Credentials::GraphAppCertificate {
        tenant: tenant.clone(),
        client_id: client_id.clone(),
        pem,
        mailbox: mailbox.clone(),
    })
    .deadline(Duration::from_secs(60));
    if let Ok(url) = std::env::var("GRAPH_API_URL") {
        builder = builder.graph_api_url(url);
    }
    if let Ok(url) = std::env::var("AUTHORITY_URL") {
        builder = builder.authority_url(url);
    }
    let mailer = builder.build().await?;
    let message = MessageBuilder::new()
        .from(mailbox.parse()?)
        .to(to.parse()?)
        .subject("Graph app-only with a certificate")
        .text("No secret to rotate: the app signs its own assertion.")
        .build()?;
    mailer.send(&message).await?;
    println!("sent as {mailbox}");
    Ok(())
}
