//! `apimail auth login graph`: Microsoft's side of logging in, and the
//! settings Graph accounts share (cloud, tenant, authority, API root).

use std::io::Write;
use std::time::Duration;

use apimail_core::TokenError;
use apimail_core::oauth::{self, DeviceCode, LoginError, LoginOptions, OAuthClient, RedirectHost};
use url::Url;

use crate::auth::{
    DEFAULT_PORT, Login, LoginSetup, check_account_name, login_failure, save_login,
    show_authorize_url,
};
use crate::cli::GraphLoginArgs;
use crate::config::{Account, GraphAccount, Provider};
use anyhow::anyhow;

use crate::exit::{Exit, Failure};
use crate::providers::{Context, authority, client_secret_file, cloud};

pub async fn login(mut ctx: Context, args: GraphLoginArgs) -> Result<(), Failure> {
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
    let client_secret = match apimail_graph::login_secret_from_env() {
        Some(secret) => Some(secret),
        None => client_secret_file(secret_file.as_deref())?,
    };
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
    let token_setting = match (std::env::var("APIMAIL_MS_AUTHORITY_URL"), &previous) {
        (Ok(value), _) if !value.is_empty() => "APIMAIL_MS_AUTHORITY_URL".to_owned(),
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
        let mut show = |code: &DeviceCode| show_device_code(code);
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
            show_authorize_url(url, redirect, no_browser);
        };
        oauth::login_with_browser(&client, &options, &mut prompt).await
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
    let name = save_login(&mut ctx, &store, login, account, "Microsoft")?;
    crate::queue::release_after_login(&ctx, &name).await;
    Ok(())
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

/// A login failure that carries an AADSTS code, explained by the code, or
/// `None` (see [`aadsts_advice`]).
pub(crate) fn aadsts_failure(error: &LoginError, setup: &LoginSetup) -> Option<Failure> {
    let description = match error {
        LoginError::Denied { description } | LoginError::Provider { description, .. } => {
            description.as_deref()
        }
        LoginError::Token(
            TokenError::InvalidGrant { description } | TokenError::Refused { description, .. },
        ) => description.as_deref(),
        _ => None,
    }?;
    let code = aadsts_code(description)?;
    let relogin = "run the login again";
    let advice = aadsts_advice(code, setup.consent_url.as_ref(), &setup.redirect(), relogin)?;
    let text = error.to_string();
    Some(Failure::new(advice.exit, anyhow!(text).context(advice.cause)).hint(advice.fix))
}

/// The number of the first `AADSTS<digits>` in `text`.
pub(crate) fn aadsts_code(text: &str) -> Option<u32> {
    let at = text.find("AADSTS")? + "AADSTS".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// What an AADSTS code means and what fixes it.
pub(crate) struct Advice {
    pub(crate) exit: Exit,
    pub(crate) cause: String,
    pub(crate) fix: String,
}

/// The causes and fixes of the identity platform's codes that setup meets
/// (learn.microsoft.com/entra/identity-platform/reference-error-codes).
/// `relogin` is the command (or words) that signs in again.
pub(crate) fn aadsts_advice(
    code: u32,
    consent_url: Option<&Url>,
    redirect: &str,
    relogin: &str,
) -> Option<Advice> {
    let consent = consent_url.map_or_else(
        || "the tenant's admin-consent page".to_owned(),
        Url::to_string,
    );
    let (exit, cause, fix) = match code {
        65001 => (
            Exit::NoPerm,
            "consent is missing: nobody has consented to the app's permissions in this tenant (AADSTS65001)".to_owned(),
            format!("an administrator of the tenant grants consent at {consent} (or Entra admin center > Enterprise applications > the app > Permissions > Grant admin consent); then {relogin}"),
        ),
        65004 => (
            Exit::NoPerm,
            "the consent was declined at sign-in (AADSTS65004)".to_owned(),
            format!("{relogin} and choose Accept; if the screen says an administrator must approve, ask one to grant consent at {consent}"),
        ),
        700016 => (
            Exit::Config,
            "the app (--client-id) was not found in this tenant (AADSTS700016)".to_owned(),
            "check --client-id (the Application (client) ID on the app's Overview page) and --tenant: an app for \"this organization only\" needs its own tenant id or domain, and personal accounts need an app that allows them and --tenant consumers".to_owned(),
        ),
        7000218 => (
            Exit::Config,
            "the app does not allow public client flows, so a sign-in without a client secret is refused (AADSTS7000218)".to_owned(),
            "in Entra admin center > App registrations > the app > Authentication, set \"Allow public client flows\" to Yes; or give the app's secret in APIMAIL_GRAPH_CLIENT_SECRET or --client-secret-file".to_owned(),
        ),
        50011 | 500113 => (
            Exit::Config,
            format!("the redirect URI {redirect} is not registered for the app (AADSTS{code})"),
            format!("in Entra admin center > App registrations > the app > Authentication > Add a platform > Mobile and desktop applications, add {redirect} (Entra accepts any port for http://localhost)"),
        ),
        53003 => (
            Exit::NoPerm,
            "a Conditional Access policy blocked the sign-in (AADSTS53003)".to_owned(),
            "ask an administrator which policy applies (Entra admin center > Sign-in logs > the failure > Conditional Access); sign in from a device, location or app the policy allows".to_owned(),
        ),
        50076 | 50079 => (
            Exit::NoPerm,
            format!("multi-factor authentication is required (AADSTS{code})"),
            format!("{relogin} in a browser and complete (or set up) multi-factor authentication; a device-code sign-in must also finish it"),
        ),
        700082 => (
            Exit::NoPerm,
            "the refresh token expired after 90 days without use (AADSTS700082)".to_owned(),
            format!("{relogin}; apimail renews it at every send, so sending (or `apimail doctor`) at least monthly keeps it alive"),
        ),
        9002313 | 90014 => (
            Exit::NoPerm,
            format!("Microsoft found the sign-in request malformed (AADSTS{code}): usually a code or refresh token that was cut or changed"),
            format!("{relogin}, pasting the whole address if you paste one; if it repeats, run it with --debug and report it"),
        ),
        _ => return None,
    };
    Some(Advice { exit, cause, fix })
}
