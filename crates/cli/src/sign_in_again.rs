//! The admin console's "Sign in again": `auth login` for one configured
//! account, with that account's own settings.

use anyhow::anyhow;

use crate::auth::{Surface, login_gmail_on};
use crate::cli::{GmailLoginArgs, GraphLoginArgs, LoginCommon};
use crate::config::Account;
use crate::exit::{Exit, Failure};
use crate::graph_auth::login_on;
use crate::providers::Context;

/// Signs `account` in again with its own settings, as `auth login` would
/// with them (Gmail: its client file, the paste-back flow; Graph: a
/// device code), on `surface`; the account's name. The admin console's
/// "Sign in again".
pub(crate) async fn login_again(
    config_flag: Option<&std::path::Path>,
    account: &str,
    surface: &Surface,
) -> Result<String, Failure> {
    let ctx = Context::load(config_flag)?;
    let stored = ctx.store()?.load(account).ok().flatten();
    let scopes = stored
        .as_ref()
        .map(|t| t.scopes.clone())
        .unwrap_or_default();
    let address = stored.and_then(|t| t.address);
    let common = |login_hint: Option<String>| LoginCommon {
        account: Some(account.to_owned()),
        // Any free port: a desktop client takes any loopback redirect.
        port: Some(0),
        no_browser: true,
        login_hint,
        timeout: 600,
    };
    match ctx.config.accounts.get(account).cloned() {
        Some(Account::Gmail(gmail)) => {
            let Some(file) = gmail.client_file.clone() else {
                return Err(Failure::new(
                    Exit::Config,
                    anyhow!("account `{account}` names no client file to sign in with"),
                )
                .hint(format!(
                    "sign in once at the terminal: apimail auth login gmail --client-secret FILE --account {account}"
                )));
            };
            let args = GmailLoginArgs {
                client_secret: file.into(),
                verify_sent: scopes.iter().any(|s| s == apimail_gmail::METADATA_SCOPE),
                common: common(gmail.address.or(address)),
            };
            login_gmail_on(ctx, args, surface).await
        }
        Some(Account::Graph(graph)) if !graph.app_only => {
            let Some(client_id) = graph.client_id.clone() else {
                return Err(Failure::new(
                    Exit::Config,
                    anyhow!("account `{account}` names no client_id to sign in with"),
                )
                .hint(format!(
                    "sign in once at the terminal: apimail auth login graph --client-id ID --account {account}"
                )));
            };
            let args = GraphLoginArgs {
                client_id,
                tenant: graph.tenant.clone().unwrap_or_else(|| "common".to_owned()),
                cloud: graph.cloud.clone().unwrap_or_else(|| "global".to_owned()),
                device_code: true,
                large_messages: scopes.iter().any(|s| s.ends_with("Mail.ReadWrite")),
                client_secret_file: graph.client_secret_file.clone().map(Into::into),
                common: common(graph.address.clone().or(address)),
            };
            login_on(ctx, args, surface).await
        }
        Some(_) => Err(Failure::new(
            Exit::Usage,
            anyhow!("account `{account}` is app-only: it has no sign-in"),
        )),
        None => Err(Failure::new(
            Exit::Usage,
            anyhow!("there is no account `{account}` in the configuration"),
        )),
    }
}
