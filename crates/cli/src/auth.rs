//! `apimail auth`: login, import-smail, status, logout.

use std::io::Write;
use std::time::Duration;

use anyhow::anyhow;
use apimail_account::env;
use apimail_core::oauth::{self, LoginError, LoginOptions, OAuthClient, RedirectHost};
use apimail_core::token_store::StoredToken;
use apimail_core::token_store::TokenStore;
use apimail_core::{Secret, StoredTokens, TokenError, TokenResponse, TokenSource, now_unix};
use apimail_gmail::google_auth;
use url::Url;

use crate::cli::{GmailLoginArgs, ImportSmailArgs, LogoutArgs, StatusArgs};
use crate::config::{Account, GmailAccount, GraphAccount, Provider};
use crate::exit::{Exit, Failure};
use crate::providers::{Context, endpoint, gmail_login_command, wrong_token_url};

/// Where a login shows what the user must do: the terminal, or the admin
/// console's sign-in page (which also takes the pasted address).
pub(crate) enum Surface {
    Terminal,
    Console(apimail_console::signin::Progress),
}

pub async fn login_gmail(ctx: Context, args: GmailLoginArgs) -> Result<(), Failure> {
    login_gmail_on(ctx, args, &Surface::Terminal)
        .await
        .map(drop)
}

/// `auth login gmail` on `surface`; the account's name.
pub(crate) async fn login_gmail_on(
    mut ctx: Context,
    args: GmailLoginArgs,
    surface: &Surface,
) -> Result<String, Failure> {
    let common = &args.common;
    let path = &args.client_secret;
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::new(Exit::NoInput, anyhow!(e).context(format!("cannot read the client file `{}`", path.display())))
            .hint("download it from the Google Cloud console: APIs & Services > Credentials > your OAuth client > Download JSON")
    })?;
    let file = google_auth::parse_client_secret(&bytes).map_err(|e| {
        Failure::new(Exit::Config, anyhow!("`{}`: {e}", path.display()))
            .hint("create an OAuth client of type \"Desktop app\" and download its JSON")
    })?;
    let auth_url = endpoint(
        env::GOOGLE_AUTH_URL,
        Some(&file.auth_uri),
        "auth_uri",
        google_auth::AUTH_URL,
    )?;
    let token_url = endpoint(
        env::GOOGLE_TOKEN_URL,
        Some(&file.token_uri),
        "token_uri",
        google_auth::TOKEN_URL,
    )?;
    let token_setting = match env::set_by(env::GOOGLE_TOKEN_URL) {
        Some(variable) => variable.to_owned(),
        None => format!("`{}.token_uri` in {}", file.kind, path.display()),
    };
    if let Some(name) = &common.account {
        check_account_name(name)?;
    }
    let port = web_client_port(&file, path, common.port)?;
    let store = ctx.store()?;

    let client = OAuthClient {
        client_id: file.client_id.clone(),
        client_secret: Some(file.client_secret.clone()),
        auth_url: Some(auth_url.clone()),
        token_url: token_url.clone(),
        device_auth_url: None,
    };
    let mut scopes: Vec<String> = apimail_gmail::SIGN_IN_SCOPES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    scopes.push(apimail_gmail::SEND_SCOPE.to_owned());
    if args.verify_sent {
        scopes.push(apimail_gmail::METADATA_SCOPE.to_owned());
    }
    let options = LoginOptions {
        scopes,
        extra_params: google_auth::login_params(common.login_hint.as_deref()),
        redirect_host: RedirectHost::Ip127,
        port,
        timeout: Duration::from_secs(common.timeout),
        accept_pasted_redirect: common.no_browser,
    };
    let no_browser = common.no_browser;
    let setup = LoginSetup::new(Provider::Gmail, token_setting);
    let mut prompt = |url: &Url, redirect: &str| {
        setup.used(redirect);
        match surface {
            Surface::Terminal => show_authorize_url(url, redirect, no_browser),
            Surface::Console(progress) => progress.authorize_link(url, redirect),
        }
    };
    let response = match surface {
        Surface::Terminal => oauth::login_with_browser(&client, &options, &mut prompt).await,
        Surface::Console(progress) => {
            oauth::login_with_pasted_redirect(&client, &options, &mut prompt, progress.pasted())
                .await
        }
    }
    .map_err(|e| login_failure(e, &setup))?;
    let needed = &options.scopes[apimail_gmail::SIGN_IN_SCOPES.len()..];
    if let Some(missing) = missing_scope(&response, needed) {
        let tick = apimail_gmail::consent_box(missing);
        let account = common
            .account
            .as_ref()
            .map(|name| format!(" --account {name}"))
            .unwrap_or_default();
        let again = format!(
            "apimail auth login gmail --client-secret {}{account}",
            path.display()
        );
        return Err(Failure::new(
            Exit::NoPerm,
            anyhow!("Google signed you in, but the box \"{tick}\" was not ticked, so apimail may not use {missing}"),
        )
        .hint(format!("run `{again}` again and tick \"{tick}\" on Google's consent screen")));
    }

    let client_file = std::path::absolute(path).unwrap_or_else(|_| path.clone());
    let account = Account::Gmail(GmailAccount {
        client_id: Some(file.client_id.clone()),
        auth_uri: Some(auth_url.to_string()),
        token_uri: Some(token_url.to_string()),
        client_file: Some(client_file.display().to_string()),
        ..GmailAccount::default()
    });
    let login = Login {
        response,
        requested_scopes: options.scopes,
        client_id: file.client_id,
        client_secret: Some(file.client_secret),
        token_url,
        login_hint: common.login_hint.clone(),
        account_flag: common.account.clone(),
    };
    let name = save_login(&mut ctx, &store, login, account, "Google").await?;
    crate::queue::release_after_login(&ctx, &name).await;
    Ok(name)
}

/// The first of `needed` that the token response's granted scopes lack.
/// A response without `scope` granted what was asked (RFC 6749 5.1).
pub(crate) fn missing_scope<'a>(response: &TokenResponse, needed: &'a [String]) -> Option<&'a str> {
    let granted = response.scopes.as_ref()?;
    needed
        .iter()
        .find(|want| !granted.iter().any(|g| g.eq_ignore_ascii_case(want)))
        .map(String::as_str)
}

/// What a successful interactive login produced, before it is saved.
pub(crate) struct Login {
    pub(crate) response: TokenResponse,
    pub(crate) requested_scopes: Vec<String>,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<Secret>,
    pub(crate) token_url: Url,
    pub(crate) login_hint: Option<String>,
    pub(crate) account_flag: Option<String>,
}

/// Stores the tokens, writes the account into the config file (and makes
/// it the default if there is none), and says where everything went.
pub(crate) async fn save_login(
    ctx: &mut Context,
    store: &TokenStore,
    login: Login,
    account: Account,
    provider_name: &str,
) -> Result<String, Failure> {
    let response = login.response;
    // The id_token, else the access token when it is a JWT (Microsoft's
    // work accounts), else what the user told us.
    let address = response
        .id_token
        .as_ref()
        .and_then(oauth::email_from_id_token)
        .or_else(|| oauth::email_from_id_token(&response.access_token.secret))
        .or(login.login_hint);
    let name = login
        .account_flag
        .or_else(|| address.clone())
        .unwrap_or_else(|| account.provider().name().to_owned());
    check_account_name(&name)?;
    let Some(refresh_token) = response.refresh_token.clone() else {
        return Err(Failure::new(
            Exit::NoPerm,
            anyhow!("{provider_name} returned no refresh token, so apimail could not send later without you"),
        )
        .hint("make sure the login asks for offline access (Microsoft: the offline_access permission), then run it again"));
    };
    let stored = StoredToken {
        account: name.clone(),
        provider: account.provider().name().into(),
        address: address.clone(),
        client_id: login.client_id,
        client_secret: login.client_secret,
        token_url: login.token_url.to_string(),
        scopes: response.scopes.clone().unwrap_or(login.requested_scopes),
        refresh_token: Some(refresh_token),
        access_token: Some(response.access_token.secret.clone()),
        expires_at: response.access_token.expires_at,
        updated_at: now_unix(),
        authorized_at: Some(now_unix()),
        refreshed_at: None,
        refresh_refused: None,
    };
    store.save(&stored).map_err(store_failure)?;
    let shared = share_login(ctx, &stored).await?;

    let previous = ctx.config.accounts.remove(&name);
    let account = match account {
        Account::Gmail(gmail) => Account::Gmail(GmailAccount {
            address: address.clone(),
            ..gmail
        }),
        Account::Graph(graph) => Account::Graph(GraphAccount {
            address: address.clone(),
            max_message_mb: match previous {
                Some(Account::Graph(previous)) => previous.max_message_mb,
                _ => None,
            },
            ..graph
        }),
    };
    ctx.config.accounts.insert(name.clone(), account);
    if ctx.config.default_account.is_none() {
        ctx.config.default_account = Some(name.clone());
    }
    crate::config::save(&ctx.config_path, &ctx.config)?;

    let who = address.as_deref().unwrap_or("the account you chose");
    say(&format!(
        "authorized {who} as account `{name}`\ntokens are stored in {}\nconfiguration written to {}",
        store.path(&name).display(),
        ctx.config_path.display()
    ));
    if let Some(shared) = shared {
        say(&shared);
    }
    if address.is_none() {
        say(&format!(
            "note: {provider_name} did not say which address this is; pass --from when sending, or log in again with --login-hint ADDR"
        ));
    }
    Ok(name)
}

/// With `[store] tokens = "store"`, the login's tokens go to the shared
/// store too (encrypted), so every node uses them: what to say about it.
async fn share_login(ctx: &Context, stored: &StoredToken) -> Result<Option<String>, Failure> {
    let Some(settings) = apimail_account::store_settings(&ctx.config)
        .map_err(apimail_account::ResolveError::StoreSettings)?
    else {
        return Ok(None);
    };
    let Some(shared) = apimail_account::shared_tokens_for(&settings)? else {
        return Ok(None);
    };
    let shown = apimail_store_postgres::redact_url(settings.url.expose());
    shared.put(stored).await.map_err(|e| {
        crate::store::tokens_failure(e, &shown, settings.url_from).note(format!(
            "the tokens are saved on this machine; push them later with `apimail store tokens push --account {}`",
            stored.account
        ))
    })?;
    Ok(Some(format!(
        "and in the shared store at {shown} (encrypted, key id {})",
        shared.key_id()
    )))
}

/// Shows the URL on a line of its own, and opens a browser when asked and
/// when there is a display to open one on.
pub(crate) fn show_authorize_url(url: &Url, redirect: &str, no_browser: bool) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "Open this URL in a browser to authorize apimail:\n\n{url}\n"
    );
    if no_browser {
        let shown_port = Url::parse(redirect)
            .ok()
            .and_then(|u| u.port())
            .unwrap_or(DEFAULT_PORT);
        let _ = writeln!(
            err,
            "Waiting for the browser on {redirect}.\nOn another machine? Either forward the port first (ssh -L {shown_port}:127.0.0.1:{shown_port} user@this-host), or paste here the full address the browser shows after you approve (it starts with {redirect}) and press Enter."
        );
        return;
    }
    let has_display = cfg!(any(target_os = "macos", target_os = "windows"))
        || std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if !(has_display && open::that_detached(url.as_str()).is_ok()) {
        let _ = writeln!(
            err,
            "(could not open a browser: open the URL yourself, or use --no-browser)"
        );
    }
    let _ = writeln!(err, "Waiting for the browser on {redirect} ...");
}

/// The loopback port when --port is not given.
pub(crate) const DEFAULT_PORT: u16 = 48888;

/// The port of a Google login. A Web application client allows only the
/// redirect URIs registered on it, so it gets a warning at once: apimail
/// needs a Desktop app client, and a Web client kept on purpose needs an
/// explicit --port whose exact redirect URI is registered.
fn web_client_port(
    file: &google_auth::ClientSecretFile,
    path: &std::path::Path,
    port: Option<u16>,
) -> Result<u16, Failure> {
    if file.kind != "web" {
        return Ok(port.unwrap_or(DEFAULT_PORT));
    }
    let create = "create a Desktop app client instead: Google Cloud console > APIs & Services > Credentials > Create credentials > OAuth client ID > Application type \"Desktop app\" > Create, then Download JSON and pass it with --client-secret";
    match port {
        Some(port) if port != 0 => {
            say(&format!(
                "note: `{}` is a Web application client: its Authorized redirect URIs must include exactly http://127.0.0.1:{port}/callback, or Google shows redirect_uri_mismatch ({create})",
                path.display()
            ));
            Ok(port)
        }
        _ => Err(Failure::new(
            Exit::Config,
            anyhow!(
                "`{}` is a Web application client; apimail needs a Desktop app client",
                path.display()
            ),
        )
        .hint(format!(
            "{create}; to keep this Web client, add http://127.0.0.1:{DEFAULT_PORT}/callback to its Authorized redirect URIs and pass --port {DEFAULT_PORT}"
        ))),
    }
}

/// What a failed login's explanation needs: the provider, where the token
/// URL came from, and the redirect URI the login actually used.
pub(crate) struct LoginSetup {
    pub(crate) provider: Provider,
    pub(crate) token_setting: String,
    redirect: std::sync::Mutex<Option<String>>,
    /// Microsoft: the tenant's admin-consent page for this app.
    pub(crate) consent_url: Option<Url>,
}

impl LoginSetup {
    pub(crate) fn new(provider: Provider, token_setting: String) -> Self {
        LoginSetup {
            provider,
            token_setting,
            redirect: std::sync::Mutex::new(None),
            consent_url: None,
        }
    }

    /// Records the redirect URI the login uses.
    pub(crate) fn used(&self, redirect: &str) {
        *self.redirect.lock().unwrap_or_else(|e| e.into_inner()) = Some(redirect.to_owned());
    }

    /// The redirect URI used, or the one a default login would use.
    pub(crate) fn redirect(&self) -> String {
        self.redirect
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| {
                let host = match self.provider {
                    Provider::Gmail => "127.0.0.1",
                    Provider::Graph => "localhost",
                };
                format!("http://{host}:{DEFAULT_PORT}/callback")
            })
    }
}

/// A failed login, explained.
pub(crate) fn login_failure(error: LoginError, setup: &LoginSetup) -> Failure {
    let provider = setup.provider;
    if let LoginError::Token(wrong @ TokenError::NotTokenEndpoint { .. }) = &error {
        return wrong_token_url(wrong, &setup.token_setting, provider);
    }
    if let Some(failure) = aadsts_failure(&error, setup) {
        return failure;
    }
    let redirect = setup.redirect();
    let mismatch = match &error {
        LoginError::Provider { code, .. } => code == "redirect_uri_mismatch",
        LoginError::ErrorPage { code, .. } => code.as_deref() == Some("redirect_uri_mismatch"),
        _ => false,
    };
    if mismatch && provider == Provider::Gmail {
        return Failure::new(Exit::Config, error).hint(format!(
            "the OAuth client does not allow the redirect URI {redirect}: use a Desktop app client (any loopback port works), or add exactly {redirect} to the Web client's Authorized redirect URIs"
        ));
    }
    if let LoginError::ErrorPage { .. } = &error {
        return Failure::new(Exit::NoPerm, error).hint(format!(
            "the browser was not sent back to {redirect}: read the error on that page, fix the OAuth client or app registration it names, and run the login again"
        ));
    }
    let console = match provider {
        Provider::Gmail => {
            "check the OAuth client (client id, secret and redirect URIs) in the Google Cloud console"
        }
        Provider::Graph => &format!(
            "check the app registration in Microsoft Entra ID (client id, redirect URI {redirect}, Mail.Send and offline_access permissions)"
        ),
    };
    let hint = match &error {
        LoginError::Denied { .. } => match provider {
            Provider::Gmail => "run the login again and choose Allow; for an app in Testing status, add your address as a test user".to_owned(),
            Provider::Graph => "run the login again and accept; if your organization requires it, ask an admin to grant consent to the app".to_owned(),
        },
        LoginError::StateMismatch => "the redirect did not belong to this login; run the login again and use the newest URL".to_owned(),
        LoginError::TimedOut(_) => "run the login again and finish in the browser sooner, or raise --timeout".to_owned(),
        LoginError::Expired => "the code expired before sign-in finished; run the login again".to_owned(),
        LoginError::Listen { .. } => "pass --port 0 to use any free port (if the app allows any loopback port), or another --port".to_owned(),
        LoginError::Token(TokenError::Unreachable(_)) => "check the network connection, then run the login again".to_owned(),
        LoginError::Token(TokenError::Network(failure)) => failure.hint(),
        _ => console.to_string(),
    };
    let exit = match &error {
        LoginError::Listen { .. } | LoginError::Config(_) => Exit::Config,
        LoginError::Token(TokenError::Network(failure)) if !failure.is_temporary() => Exit::Config,
        LoginError::Token(TokenError::Network(_)) => Exit::TempFail,
        LoginError::TimedOut(_)
        | LoginError::Expired
        | LoginError::Token(TokenError::Unreachable(_)) => Exit::TempFail,
        _ => Exit::NoPerm,
    };
    Failure::new(exit, error).hint(hint)
}

pub(crate) fn store_failure(error: apimail_core::token_store::StoreError) -> Failure {
    Failure::new(Exit::Config, error)
        .hint("check APIMAIL_DATA_DIR and the permissions of the directory")
}

pub(crate) fn check_account_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(
            Failure::new(Exit::Usage, anyhow!("account name `{name}` is not allowed")).hint(
                "use letters, digits, `.`, `-`, `_`, `@` or `+` (at most 64), e.g. --account work",
            ),
        )
    }
}

pub(crate) fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

pub async fn import_smail(mut ctx: Context, args: ImportSmailArgs) -> Result<(), Failure> {
    check_account_name(&args.account)?;
    let text = std::fs::read_to_string(&args.file).map_err(|e| {
        Failure::new(
            Exit::NoInput,
            anyhow!(e).context(format!("cannot read `{}`", args.file.display())),
        )
        .hint("pass the path of smail_refreshtoken.ini")
    })?;
    let creds = google_auth::parse_smail_ini(&text).map_err(|e| {
        Failure::new(Exit::DataErr, anyhow!("`{}`: {e}", args.file.display()))
            .hint("the file needs an [OAUTH2] section as SMAIL writes it")
    })?;
    let token_url = endpoint(
        env::GOOGLE_TOKEN_URL,
        Some(&creds.token_uri),
        "TokenURI",
        google_auth::TOKEN_URL,
    )?;
    let store = ctx.store()?;
    let stored = StoredToken {
        account: args.account.clone(),
        provider: "gmail".into(),
        address: Some(creds.user.clone()),
        client_id: creds.client_id.clone(),
        client_secret: Some(creds.client_secret.clone()),
        token_url: token_url.to_string(),
        scopes: vec![apimail_gmail::SEND_SCOPE.to_owned()],
        refresh_token: Some(creds.refresh_token.clone()),
        access_token: None,
        expires_at: None,
        updated_at: now_unix(),
        authorized_at: Some(now_unix()),
        refreshed_at: None,
        refresh_refused: None,
    };
    let previous = store.load(&args.account).map_err(store_failure)?;
    store.save(&stored).map_err(store_failure)?;
    // One refresh proves the credentials work before anything depends on them.
    if let Err(error) = StoredTokens::new(store.clone(), &args.account)
        .token()
        .await
    {
        match previous {
            Some(previous) => store.save(&previous).map_err(store_failure)?,
            None => {
                store.delete(&args.account).map_err(store_failure)?;
            }
        }
        if let TokenError::NotTokenEndpoint { .. } = &error {
            let setting = match env::set_by(env::GOOGLE_TOKEN_URL) {
                Some(variable) => variable.to_owned(),
                None => ini_line(&text, "TokenURI")
                    .map(|n| format!("`TokenURI` (line {n} of {})", args.file.display()))
                    .unwrap_or_else(|| "the built-in default".to_owned()),
            };
            let failure = wrong_token_url(&error, &setting, Provider::Gmail);
            let hint = failure.hint.clone().unwrap_or_default();
            return Err(failure.hint(format!(
                "{hint}, then run `apimail auth import-smail {} --account {}` again",
                args.file.display(),
                args.account
            )));
        }
        let exit = match &error {
            TokenError::Unreachable(_) => Exit::TempFail,
            TokenError::Network(failure) if failure.is_temporary() => Exit::TempFail,
            TokenError::Network(_) => Exit::Config,
            _ => Exit::NoPerm,
        };
        return Err(Failure::new(
            exit,
            anyhow::Error::new(error).context("the imported credentials do not work"),
        )
        .hint("run `apimail auth login gmail --client-secret client_secret.json` instead"));
    }
    let account = Account::Gmail(GmailAccount {
        address: Some(creds.user.clone()),
        client_id: Some(creds.client_id),
        token_uri: Some(token_url.to_string()),
        ..GmailAccount::default()
    });
    ctx.config.accounts.insert(args.account.clone(), account);
    if ctx.config.default_account.is_none() {
        ctx.config.default_account = Some(args.account.clone());
    }
    crate::config::save(&ctx.config_path, &ctx.config)?;
    crate::queue::release_after_login(&ctx, &args.account).await;
    say(&format!(
        "imported {} as account `{}`\ntokens are stored in {}",
        creds.user,
        args.account,
        store.path(&args.account).display()
    ));
    Ok(())
}

/// The 1-based number of the line that sets `key` in an INI text.
fn ini_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.split_once('=')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        })
        .map(|i| i + 1)
}

pub async fn status(ctx: Context, args: StatusArgs) -> Result<(), Failure> {
    let store = ctx.store()?;
    let shared = shared_tokens(&ctx)?;
    let mut names: Vec<String> = ctx.config.accounts.keys().cloned().collect();
    let stored_names = match &shared {
        Some((tokens, shown, from)) => tokens
            .accounts()
            .await
            .map_err(|e| crate::store::tokens_failure(e, shown, from))?,
        None => store.account_names().map_err(store_failure)?,
    };
    for stored in stored_names {
        if !names.contains(&stored) {
            names.push(stored);
        }
    }
    if let Some(only) = &args.account {
        if !names.contains(only) {
            ctx.config.account(only, &ctx.config_path)?;
        }
        names.retain(|n| n == only);
    }
    let mut out = String::new();
    if names.is_empty() {
        out.push_str(&format!(
            "no accounts in {}\nrun `apimail auth login gmail --client-secret client_secret.json` to add one\n",
            ctx.config_path.display()
        ));
    }
    for name in &names {
        let account = ctx.config.accounts.get(name);
        // One broken token file must not hide the other accounts.
        let (stored, unreadable) = match &shared {
            Some((tokens, _, _)) => match tokens.get(name).await {
                Ok(stored) => (stored, None),
                Err(error) => (None, Some(apimail_core::error_chain(&error))),
            },
            None => match store.load(name) {
                Ok(stored) => (stored, None),
                Err(error) => (None, Some(error.to_string())),
            },
        };
        let default = if ctx.config.default_account.as_deref() == Some(name) {
            " (default)"
        } else {
            ""
        };
        out.push_str(&format!("{name}{default}\n"));
        let provider = account
            .map(|a| a.provider().name().to_owned())
            .or_else(|| stored.as_ref().map(|s| s.provider.clone()))
            .unwrap_or_default();
        out.push_str(&format!("  provider:   {provider}\n"));
        let address = account
            .and_then(|a| a.address().map(str::to_owned))
            .or_else(|| stored.as_ref().and_then(|s| s.address.clone()))
            .unwrap_or_else(|| "unknown".into());
        out.push_str(&format!("  address:    {address}\n"));
        match &stored {
            _ if unreadable.is_some() => {
                let error = unreadable.clone().unwrap_or_default();
                out.push_str(&format!(
                    "  tokens:     unreadable: {error}; messages for it are held until it is fixed\n"
                ));
            }
            Some(s) => {
                out.push_str(&format!("  scopes:     {}\n", s.scopes.join(" ")));
                out.push_str(&format!("  tokens:     {}\n", describe_tokens(s)));
                let lifetime = lifetime(s, now_unix());
                if !lifetime.facts.is_empty() {
                    out.push_str(&format!("  authorized: {}\n", lifetime.facts.join("; ")));
                }
                for warning in lifetime.warnings {
                    out.push_str(&format!("  warning:    {warning}\n"));
                }
            }
            None if account.is_some_and(Account::is_app_only) => out.push_str(
                "  tokens:     app-only: fetched with the client credentials at each run\n",
            ),
            None => {
                let login = match account {
                    Some(Account::Graph(graph)) => {
                        crate::providers::login_command(name, graph, false)
                    }
                    Some(Account::Gmail(gmail)) => gmail_login_command(name, gmail),
                    None => gmail_login_command(name, &GmailAccount::default()),
                };
                out.push_str(&format!("  tokens:     none stored; run `{login}`\n"));
            }
        }
        if let Some(Account::Graph(graph)) = account
            && let Some(warning) = secret_expiry_warning(graph, now_unix())
        {
            out.push_str(&format!("  warning:    {warning}\n"));
        }
        if account.is_none() {
            out.push_str("  config:     missing from the configuration file\n");
        }
        let place = match &shared {
            Some((tokens, _, _)) => apimail_core::token_vault::TokenVault::describe(tokens, name),
            None => store.path(name).display().to_string(),
        };
        out.push_str(&format!("  stored in:  {place}\n"));
    }
    if let Ok(outbox) = crate::queue::open_outbox()
        && let Ok(summary) = outbox.summary()
        && summary.queued + summary.held + summary.failed > 0
    {
        out.push_str(&format!(
            "outbox: {} queued, {} held (a login, a fix or `apimail queue retry`), {} failed (`apimail queue list`)\n",
            summary.queued, summary.held, summary.failed
        ));
    }
    if apimail_account::env_credentials_set(Provider::Graph) {
        out.push_str("environment: Microsoft Graph app-only credentials are set (used when no account is named)\n");
    }
    if apimail_account::env_credentials_set(Provider::Gmail) {
        out.push_str("environment: Gmail credentials are set (used when no account is named)\n");
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    Ok(())
}

const DAY: i64 = 86_400;

/// What apimail knows of how long an authorization lasts: facts to show,
/// and warnings of an end ahead (or a refusal already seen).
#[derive(Debug, Default)]
pub(crate) struct Lifetime {
    pub(crate) facts: Vec<String>,
    pub(crate) warnings: Vec<String>,
}

fn date(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| unix.to_string())
}

fn days_ago(unix: i64, now: i64) -> String {
    match (now - unix) / DAY {
        0 => "today".to_owned(),
        1 => "1 day ago".to_owned(),
        n => format!("{n} days ago"),
    }
}

/// The lifetime of a stored authorization, by the providers' rules:
/// Google ends a Testing app's authorizations 7 days after consent and
/// refresh tokens unused for 6 months; Microsoft ends refresh tokens
/// unused for 90 days. Warnings start 30 days ahead.
pub(crate) fn lifetime(stored: &StoredToken, now: i64) -> Lifetime {
    let mut out = Lifetime::default();
    let gmail = stored.provider == "gmail";
    if let Some(reason) = &stored.refresh_refused {
        out.warnings.push(format!(
            "the provider refused the refresh token ({reason}): log in again"
        ));
    }
    if let Some(at) = stored.authorized_at {
        out.facts
            .push(format!("authorized {} ({})", days_ago(at, now), date(at)));
        let testing_end = at + 7 * DAY;
        if gmail && now < testing_end {
            out.warnings.push(format!(
                "if the app is in Testing, this authorization ends on {}; publish it (Google Cloud console > Google Auth Platform > Audience > Publish app) to keep it",
                date(testing_end)
            ));
        }
    }
    if let Some(used) = stored.refreshed_at {
        out.facts
            .push(format!("last refreshed {}", days_ago(used, now)));
    }
    if let Some(end) = apimail_account::lifetime::unused_end(stored) {
        let company = if gmail { "Google" } else { "Microsoft" };
        if end - now <= 30 * DAY {
            out.warnings.push(format!(
                "{company} ends a refresh token unused for {}; this one ends on {} unless apimail sends (or `apimail doctor` runs) before",
                if gmail { "6 months" } else { "90 days" },
                date(end)
            ));
        }
    }
    out
}

/// A warning when an app-only account's client secret expires within 30
/// days (`client_secret_expires`, YYYY-MM-DD), or has expired.
pub(crate) fn secret_expiry_warning(account: &GraphAccount, now: i64) -> Option<String> {
    let text = account.client_secret_expires.as_deref()?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let Ok(day) = time::Date::parse(text, &format) else {
        return Some(format!(
            "client_secret_expires = \"{text}\" is not a date (YYYY-MM-DD)"
        ));
    };
    let expires = day.midnight().assume_utc().unix_timestamp();
    let left = (expires - now).div_euclid(DAY);
    if left < 0 {
        Some(format!(
            "the client secret expired on {text}: create a new one (App registrations > the app > Certificates & secrets) and update the secret file and client_secret_expires"
        ))
    } else if left <= 30 {
        Some(format!(
            "the client secret expires on {text}, in {left} days: create a new one (App registrations > the app > Certificates & secrets) and update the secret file and client_secret_expires"
        ))
    } else {
        None
    }
}

fn describe_tokens(s: &StoredToken) -> String {
    let refresh = if s.refresh_refused.is_some() {
        "refresh token refused by the provider: log in again"
    } else if s.refresh_token.is_some() {
        "refresh token stored"
    } else {
        "no refresh token: log in again"
    };
    match (s.access_token.is_some(), s.expires_at) {
        (true, Some(at)) if at > now_unix() => {
            format!(
                "access token valid for {} more minutes; {refresh}",
                (at - now_unix()) / 60
            )
        }
        (true, Some(_)) => format!("access token expired (renewed at the next send); {refresh}"),
        _ => format!("no access token yet (fetched at the next send); {refresh}"),
    }
}

/// The shared store's tokens, when the configuration puts them there,
/// with the store's URL as shown and the setting that named it.
fn shared_tokens(
    ctx: &Context,
) -> Result<Option<(apimail_store_postgres::SharedTokens, String, &'static str)>, Failure> {
    let Some(settings) = apimail_account::store_settings(&ctx.config)
        .map_err(apimail_account::ResolveError::StoreSettings)?
    else {
        return Ok(None);
    };
    Ok(
        apimail_account::shared_tokens_for(&settings)?.map(|tokens| {
            (
                tokens,
                apimail_store_postgres::redact_url(settings.url.expose()),
                settings.url_from,
            )
        }),
    )
}

pub async fn logout(ctx: Context, args: LogoutArgs) -> Result<(), Failure> {
    let store = ctx.store()?;
    let shared = shared_tokens(&ctx)?;
    let mut stored = store.load(&args.account).map_err(store_failure)?;
    if let Some((tokens, shown, from)) = &shared {
        let in_store = tokens
            .get(&args.account)
            .await
            .map_err(|e| crate::store::tokens_failure(e, shown, from))?;
        stored = stored.or(in_store);
        // Gone from the store first: no node refreshes it any more.
        tokens
            .remove(&args.account)
            .await
            .map_err(|e| crate::store::tokens_failure(e, shown, from))?;
    }
    let Some(stored) = stored else {
        return Err(Failure::new(
            Exit::Config,
            anyhow!("account `{}` has no stored tokens", args.account),
        )
        .hint("see `apimail auth status` for the accounts that have some"));
    };
    if stored.provider == "graph" {
        store.delete(&args.account).map_err(store_failure)?;
        say(&format!(
            "logged out `{}`: tokens deleted. Microsoft has no endpoint that revokes one refresh token; \
it stops working after 90 days unused, or at once with \"Sign out everywhere\" (myaccount.microsoft.com) or the app's removal from the account",
            args.account
        ));
        return Ok(());
    }
    let account = ctx.config.accounts.get(&args.account);
    let revoke_url = endpoint(
        env::GOOGLE_REVOKE_URL,
        match account {
            Some(Account::Gmail(gmail)) => gmail.revoke_uri.as_deref(),
            _ => None,
        },
        "revoke_uri",
        google_auth::REVOKE_URL,
    )?;
    let token: Option<&Secret> = stored
        .refresh_token
        .as_ref()
        .or(stored.access_token.as_ref());
    let revoked = match token {
        Some(token) => oauth::revoke(&revoke_url, token).await,
        None => Ok(()),
    };
    store.delete(&args.account).map_err(store_failure)?;
    match revoked {
        Ok(()) => say(&format!(
            "logged out `{}`: tokens revoked at Google and deleted",
            args.account
        )),
        Err(TokenError::Refused { .. }) => say(&format!(
            "logged out `{}`: tokens deleted (Google already considered them invalid)",
            args.account
        )),
        Err(e) => say(&format!(
            "logged out `{}`: tokens deleted here, but revoking them at Google failed ({e}); remove apimail at myaccount.google.com/permissions",
            args.account
        )),
    }
    Ok(())
}

/// A login failure that carries an AADSTS code, explained by the code, or
/// `None` (see [`crate::aadsts::advice`]).
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
    let code = crate::aadsts::code(description)?;
    let relogin = "run the login again";
    let advice =
        crate::aadsts::advice(code, setup.consent_url.as_ref(), &setup.redirect(), relogin)?;
    let text = error.to_string();
    Some(Failure::new(advice.exit, anyhow!(text).context(advice.cause)).hint(advice.fix))
}
