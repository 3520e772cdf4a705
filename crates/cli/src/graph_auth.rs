//! `apimail auth login graph`: Microsoft's side of logging in, and the
//! settings Graph accounts share (cloud, tenant, authority, API root).

use std::io::Write;
use std::time::Duration;

use apimail_account::env;
use apimail_core::oauth::{self, DeviceCode, LoginOptions, OAuthClient, RedirectHost};
use url::Url;

use crate::auth::{
    DEFAULT_PORT, Login, LoginSetup, Surface, check_account_name, login_failure, save_login,
    show_authorize_url,
};
use crate::cli::GraphLoginArgs;
use crate::config::{Account, GraphAccount, Provider};
use anyhow::anyhow;

use crate::exit::{Exit, Failure};
use crate::providers::{Context, authority, cloud};

pub async fn login(ctx: Context, args: GraphLoginArgs) -> Result<(), Failure> {
    login_on(ctx, args, &Surface::Terminal).await.map(drop)
}

/// `auth login graph` on `surface` (the console: device code); the
/// account's name.
pub(crate) async fn login_on(
    mut ctx: Context,
    args: GraphLoginArgs,
    surface: &Surface,
) -> Result<String, Failure> {
    let common = &args.common;
    if let Some(name) = &common.account {
        check_account_name(name)?;
    }
    let cloud = cloud(Some(&args.cloud))?;
    let previous = common
        .account
        .as_ref()
        .and_then(|n| match ctx.config.accounts.get(n) {
            Some(Account::Graph(graph)) => Some(graph.clone()),
            _ => None,
        });
    let authority = authority(previous.as_ref(), cloud)?;
    let secret_file = args
        .client_secret_file
        .as_ref()
        .map(|p| p.display().to_string());
    let client_secret = apimail_account::login_client_secret(secret_file.as_deref())?;
    let store = ctx.store()?;

    let token_url = apimail_graph::token_url(&authority, &args.tenant);
    let client = OAuthClient {
        client_id: args.client_id.clone(),
        client_secret: client_secret.clone(),
        auth_url: Some(apimail_graph::authorize_url(&authority, &args.tenant)),
        token_url: token_url.clone(),
        device_auth_url: Some(apimail_graph::device_code_url(&authority, &args.tenant)),
    };
    let scopes = apimail_graph::delegated_scopes(cloud, args.large_messages);
    let token_setting = match (env::set_by(env::MS_AUTHORITY_URL), &previous) {
        (Some(variable), _) => variable.to_owned(),
        (_, Some(account)) if account.authority_url.is_some() => format!(
            "`authority_url` under [accounts.{}] in {}",
            common.account.as_deref().unwrap_or_default(),
            ctx.config_path.display()
        ),
        _ => "the built-in authority".to_owned(),
    };
    let mut setup = LoginSetup::new(Provider::Graph, token_setting);
    setup.consent_url = Some(apimail_graph::admin_consent_url(
        &authority,
        &args.tenant,
        &args.client_id,
    ));
    let response = if args.device_code {
        let mut show = |code: &DeviceCode| match surface {
            Surface::Terminal => show_device_code(code),
            Surface::Console(progress) => progress.device_code(code),
        };
        oauth::login_with_device_code(&client, &scopes, &mut show).await
    } else {
        let options = LoginOptions {
            scopes: scopes.clone(),
            extra_params: common
                .login_hint
                .iter()
                .map(|hint| ("login_hint".to_owned(), hint.clone()))
                .collect(),
            redirect_host: RedirectHost::Localhost,
            port: common.port.unwrap_or(DEFAULT_PORT),
            timeout: Duration::from_secs(common.timeout),
            accept_pasted_redirect: common.no_browser,
        };
        let no_browser = common.no_browser;
        let mut prompt = |url: &Url, redirect: &str| {
            setup.used(redirect);
            match surface {
                Surface::Terminal => show_authorize_url(url, redirect, no_browser),
                Surface::Console(progress) => progress.authorize_link(url, redirect),
            }
        };
        match surface {
            Surface::Terminal => oauth::login_with_browser(&client, &options, &mut prompt).await,
            Surface::Console(progress) => {
                oauth::login_with_pasted_redirect(&client, &options, &mut prompt, progress.pasted())
                    .await
            }
        }
    }
    .map_err(|e| login_failure(e, &setup))?;
    if let Some(granted) = &response.scopes
        && !granted
            .iter()
            .any(|s| s.to_ascii_lowercase().ends_with("mail.send"))
    {
        return Err(Failure::new(
            Exit::NoPerm,
            anyhow!(
                "Microsoft signed you in but did not grant Mail.Send (\"Send mail as you\"; granted: {}), so apimail could not send",
                granted.join(" ")
            ),
        )
        .hint(format!(
            "add the delegated permission Mail.Send to the app and grant consent (Entra admin center > App registrations > API permissions > Grant admin consent, or {}), then log in again",
            setup.consent_url.as_ref().map_or_else(String::new, Url::to_string)
        )));
    }
    if args.large_messages
        && let Some(granted) = &response.scopes
        && !granted.iter().any(|s| s.ends_with("Mail.ReadWrite"))
    {
        return Err(Failure::new(
            Exit::NoPerm,
            anyhow!(
                "Microsoft signed you in but did not grant Mail.ReadWrite (granted: {}), which --large-messages needs",
                granted.join(" ")
            ),
        )
        .hint("an administrator must consent to the Mail.ReadWrite permission for this app (Entra admin center > Enterprise applications > Permissions), or log in without --large-messages to send messages up to 4 MB"));
    }

    let account = Account::Graph(GraphAccount {
        client_id: Some(args.client_id.clone()),
        tenant: Some(args.tenant.clone()),
        cloud: (args.cloud != "global").then(|| args.cloud.clone()),
        authority_url: previous.as_ref().and_then(|a| a.authority_url.clone()),
        graph_api_url: previous.as_ref().and_then(|a| a.graph_api_url.clone()),
        client_secret_file: secret_file,
        ..GraphAccount::default()
    });
    let login = Login {
        response,
        requested_scopes: scopes,
        client_id: args.client_id.clone(),
        client_secret,
        token_url,
        login_hint: common.login_hint.clone(),
        account_flag: common.account.clone(),
    };
    let name = save_login(&mut ctx, &store, login, account, "Microsoft").await?;
    crate::queue::release_after_login(&ctx, &name).await;
    Ok(name)
}

fn show_device_code(code: &DeviceCode) {
    let mut err = std::io::stderr().lock();
    let minutes = code.expires_in.as_secs().div_ceil(60);
    let _ = writeln!(
        err,
        "To sign in, open this page on any device:\n\n{}\n\nand enter the code {} (it expires in {minutes} minutes).\nWaiting for you to finish signing in ...",
        code.verification_uri, code.user_code
    );
}
