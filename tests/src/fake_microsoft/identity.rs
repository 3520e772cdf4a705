//! The Microsoft identity platform (v2.0): authorize, token (authorization
//! code, refresh, client credentials with secrets or certificate assertions,
//! device code) and devicecode.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose;
use serde_json::{Value, json};

use super::state::{
    AccessGrant, CLIENT_ASSERTION_TYPE, Certificate, Client, Code, DEVICE_CODE_GRANT, DeviceGrant,
    DeviceOutcome, FAKE_TENANT_ID, GRAPH_APP_ID, GRAPH_RESOURCE, Grant, Principal, RefreshGrant,
    RefreshStatus, State, USER_CODE, VERIFICATION_URI,
};
use crate::fake_common::{URL_SAFE_ANY, der_next, now_secs, pem_block, random_hex, utc, uuid};
use crate::http::{Request, Response, form_decode, lock};

/// Scopes that are about the sign-in, not a resource.
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Resources the identity platform knows (Graph in each national cloud).
const KNOWN_RESOURCES: [&str; 5] = [
    GRAPH_RESOURCE,
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
    GRAPH_APP_ID,
];

/// Delegated permissions granted for `{resource}/.default`.
const DEFAULT_DELEGATED: [&str; 3] = ["Mail.Send", "Mail.ReadWrite", "User.Read"];

const FIXTURE_PEM: &str = include_str!("../../fixtures/graph-app.pem");
const FIXTURE_CERT_DER: &[u8] = include_bytes!("../../fixtures/graph-app-cert.der");

/// The fixture certificate (DER), for [`FakeMicrosoft::add_app`](super::FakeMicrosoft::add_app).
pub fn fixture_certificate_der() -> &'static [u8] {
    FIXTURE_CERT_DER
}

/// The fixture PEM file: the PKCS#8 private key and the certificate, as
/// `AZURE_CLIENT_CERTIFICATE_PATH` expects.
pub fn fixture_certificate_pem() -> &'static str {
    FIXTURE_PEM
}

/// Where the fixture PEM file is.
pub fn fixture_certificate_pem_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/graph-app.pem")
}

/// The fixture's private key (PKCS#8 DER), to sign assertions in tests.
pub fn fixture_private_key_pkcs8() -> Vec<u8> {
    pem_block(FIXTURE_PEM, "PRIVATE KEY").expect("the fixture PEM holds a PKCS#8 private key")
}

/// `x5t` of a certificate: base64url (unpadded) SHA-1 of its DER.
pub fn certificate_x5t(certificate_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, certificate_der);
    general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// `x5t#S256` of a certificate: base64url (unpadded) SHA-256 of its DER.
pub fn certificate_x5t_s256(certificate_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, certificate_der);
    general_purpose::URL_SAFE_NO_PAD.encode(digest)
}
/// An error in the identity platform's format.
fn aad_error(status: u16, error: &str, code: u32, description: &str) -> Response {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    let timestamp = utc(now_secs()).format(&format).unwrap_or_default();
    let (trace_id, correlation_id) = (uuid(), uuid());
    Response::json(
        status,
        &json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: \
                 {correlation_id} Timestamp: {timestamp}"
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

/// Entra's token-endpoint answer for AADSTS `code`: the `error` and
/// wording of its error-code reference (learn.microsoft.com/entra/
/// identity-platform/reference-error-codes).
fn entra_error(code: u32, client_id: &str, tenant: &str) -> Response {
    let graph = GRAPH_APP_ID;
    let (status, error, description) = match code {
        65001 => (
            400,
            "invalid_grant",
            format!(
                "The user or administrator has not consented to use the application with ID \
                 '{client_id}' named 'apimail'. Send an interactive authorization request for \
                 this user and resource."
            ),
        ),
        700016 => return unknown_client(client_id, tenant),
        7000218 => (
            401,
            "invalid_client",
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'."
                .to_owned(),
        ),
        50011 => (
            400,
            "invalid_grant",
            "The redirect URI specified in the request does not match the redirect URIs \
             configured for the application."
                .to_owned(),
        ),
        53003 => (
            400,
            "invalid_grant",
            "Access has been blocked by Conditional Access policies. The access policy does not \
             allow token issuance."
                .to_owned(),
        ),
        50076 => (
            400,
            "invalid_grant",
            format!(
                "Due to a configuration change made by your administrator, or because you moved \
                 to a new location, you must use multi-factor authentication to access '{graph}'."
            ),
        ),
        50079 => (
            400,
            "invalid_grant",
            format!(
                "Due to a configuration change made by your administrator, or because you moved \
                 to a new location, you must enroll in multi-factor authentication to access \
                 '{graph}'."
            ),
        ),
        700082 => (
            400,
            "invalid_grant",
            "The refresh token has expired due to inactivity. The token was issued on \
             2026-01-01T00:00:00Z and was inactive for 90.00:00:00."
                .to_owned(),
        ),
        9002313 => (
            400,
            "invalid_request",
            "Invalid request. Request is malformed or invalid.".to_owned(),
        ),
        90014 => (
            400,
            "invalid_request",
            "The required field 'code' is missing from the credential. Ensure that you have all \
             the necessary parameters for the login request."
                .to_owned(),
        ),
        other => panic!("the fake has no wording for AADSTS{other}"),
    };
    aad_error(status, error, code, &description)
}

fn missing_parameter(name: &str) -> Response {
    aad_error(
        400,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{name}'."),
    )
}

fn unknown_client(client_id: &str, tenant: &str) -> Response {
    aad_error(
        400,
        "unauthorized_client",
        700016,
        &format!(
            "Application with identifier '{client_id}' was not found in the directory \
             '{tenant}'. This can happen if the application has not been installed by the \
             administrator of the tenant or consented to by any user in the tenant. You may have \
             sent your authentication request to the wrong tenant."
        ),
    )
}

/// An error page of the authorization endpoint (shown, not redirected).
fn authorize_page(code: u32, description: &str) -> Response {
    Response::new(400)
        .with_header("Content-Type", "text/html; charset=utf-8")
        .with_body(
            format!(
                "<html><body><h1>Sign in</h1><p>AADSTS{code}: {}</p></body></html>\n",
                html_escape(description)
            )
            .into_bytes(),
        )
}

/// `GET /{tenant}/oauth2/v2.0/authorize`: checks the request and redirects
/// with a code (or an error).
pub(super) fn authorize(state: &Mutex<State>, tenant: &str, request: &Request) -> Response {
    let params = request.query_map();
    let mut state = lock(state);
    state.authorize_requests.push(params.clone());
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    let client_id = param("client_id");
    if client_id.is_empty() {
        return authorize_page(
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    }
    if !state.clients.contains_key(client_id) {
        return authorize_page(
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'."
            ),
        );
    }
    let redirect_uri = param("redirect_uri");
    let registered = state
        .redirect_uris
        .get(client_id)
        .cloned()
        .unwrap_or_default();
    if registered.is_empty() {
        return authorize_page(
            500113,
            "No reply address is registered for the application.",
        );
    }
    let location = url::Url::parse(redirect_uri)
        .ok()
        .filter(|_| registered.iter().any(|r| redirect_matches(r, redirect_uri)));
    let Some(mut location) = location else {
        return authorize_page(
            50011,
            &format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the \
                 redirect URIs configured for the application '{client_id}'. Make sure the \
                 redirect URI sent in the request matches one added to your application in the \
                 Azure portal."
            ),
        );
    };
    let state_param = params.get("state").cloned();
    let redirect_error = |mut location: url::Url, error: &str, code: u32, description: &str| {
        {
            let mut query = location.query_pairs_mut();
            query.append_pair("error", error);
            query.append_pair("error_description", &format!("AADSTS{code}: {description}"));
            if let Some(value) = &state_param {
                query.append_pair("state", value);
            }
        }
        Response::new(302).with_header("Location", location.as_str())
    };
    if param("response_type") != "code" {
        return redirect_error(
            location,
            "unsupported_response_type",
            70005,
            "The application requested an unsupported response type.",
        );
    }
    if param("scope").trim().is_empty() {
        return redirect_error(
            location,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    }
    let scopes = match parse_scopes(&state, param("scope")) {
        Ok(scopes) => scopes,
        Err((error, code, description)) => {
            return redirect_error(location, error, code, &description);
        }
    };
    let challenge = param("code_challenge");
    if challenge.is_empty() {
        return redirect_error(
            location,
            "invalid_request",
            50147,
            "Missing code_challenge: this fake requires PKCE.",
        );
    }
    if param("code_challenge_method") != "S256" {
        return redirect_error(
            location,
            "invalid_request",
            501491,
            "code_challenge_method must be S256.",
        );
    }
    let challenge_ok = (43..=128).contains(&challenge.len())
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !challenge_ok {
        return redirect_error(
            location,
            "invalid_request",
            501491,
            "Invalid size of Code_Challenge parameter.",
        );
    }
    if state.deny {
        return redirect_error(
            location,
            "access_denied",
            65004,
            "User declined to consent to access the app.",
        );
    }
    let code = format!("1.AAAA-fake-code-{}", random_hex(32));
    let grant = Grant {
        principal: Principal::User(state.user.clone()),
        client_id: client_id.to_owned(),
        tenant: tenant.to_owned(),
        resource: scopes.resource,
        permissions: scopes.permissions,
        openid: scopes.openid,
        offline: scopes.offline,
    };
    state.codes.insert(
        code.clone(),
        Code {
            grant,
            redirect_uri: redirect_uri.to_owned(),
            challenge: challenge.to_owned(),
            used: false,
        },
    );
    {
        let mut query = location.query_pairs_mut();
        query.append_pair("code", &code);
        if let Some(value) = &state_param {
            query.append_pair("state", value);
        }
        query.append_pair("session_state", &uuid());
    }
    Response::new(302).with_header("Location", location.as_str())
}

/// Whether `requested` matches the `registered` redirect URI: exactly, or,
/// for loopback hosts, with any port.
fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(registered), Ok(requested)) = (url::Url::parse(registered), url::Url::parse(requested))
    else {
        return false;
    };
    let loopback = matches!(
        registered.host_str(),
        Some("localhost" | "127.0.0.1" | "[::1]")
    );
    loopback
        && registered.scheme() == requested.scheme()
        && registered.host_str() == requested.host_str()
        && registered.path() == requested.path()
        && registered.query() == requested.query()
}

/// Scopes as the identity platform reads them.
#[derive(Debug)]
pub(super) struct Scopes {
    pub(super) resource: String,
    pub(super) permissions: Vec<String>,
    openid: bool,
    offline: bool,
}

/// Parses a space-separated scope list; errors are (error, code,
/// description).
pub(super) fn parse_scopes(
    state: &State,
    scope: &str,
) -> Result<Scopes, (&'static str, u32, String)> {
    let mut resource: Option<String> = None;
    let mut permissions: Vec<String> = Vec::new();
    let (mut openid, mut offline) = (false, false);
    for item in scope.split_whitespace() {
        let lower = item.to_ascii_lowercase();
        if OIDC_SCOPES.contains(&lower.as_str()) {
            openid |= lower == "openid";
            offline |= lower == "offline_access";
            continue;
        }
        let (item_resource, permission) = match item.rsplit_once('/') {
            Some((res, perm)) if !res.is_empty() && !perm.is_empty() => {
                (res.trim_end_matches('/').to_owned(), perm.to_owned())
            }
            Some(_) => {
                return Err((
                    "invalid_scope",
                    70011,
                    format!(
                        "The provided value for the input parameter 'scope' is not valid. The \
                         scope {item} is not valid."
                    ),
                ));
            }
            None => (state.graph_resource.clone(), item.to_owned()),
        };
        if !KNOWN_RESOURCES
            .iter()
            .chain([&state.graph_resource.as_str()])
            .any(|known| known.eq_ignore_ascii_case(&item_resource))
        {
            return Err((
                "invalid_resource",
                500011,
                format!(
                    "The resource principal named {item_resource} was not found in the tenant. \
                     This can happen if the application has not been installed by the \
                     administrator of the tenant or consented to by any user in the tenant."
                ),
            ));
        }
        match &resource {
            Some(known) if !known.eq_ignore_ascii_case(&item_resource) => {
                return Err((
                    "invalid_scope",
                    28000,
                    format!(
                        "Provided value for the input parameter scope is not valid because it \
                         contains more than one resource. Scope {scope} is not valid."
                    ),
                ));
            }
            Some(_) => {}
            None => resource = Some(item_resource),
        }
        if permission == ".default" {
            permissions.extend(DEFAULT_DELEGATED.iter().map(|p| (*p).to_owned()));
        } else {
            permissions.push(permission);
        }
    }
    let mut seen = HashSet::new();
    permissions.retain(|p| seen.insert(p.to_ascii_lowercase()));
    // Permissions nobody consented to are left out of the grant (and of the
    // token response's `scope`).
    permissions.retain(|p| !state.withheld.contains(&p.to_ascii_lowercase()));
    Ok(Scopes {
        resource: resource.unwrap_or_else(|| state.graph_resource.clone()),
        permissions,
        openid,
        offline,
    })
}

type Form = HashMap<String, String>;

/// `POST /{tenant}/oauth2/v2.0/token`: the four grant types.
pub(super) fn token(state: &Mutex<State>, tenant: &str, request: &Request) -> Response {
    let form: Form = request.form();
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    let mut state = lock(state);
    state.total_token_requests += 1;
    *state.token_requests.entry(grant_type.clone()).or_default() += 1;
    state.token_forms.push(form.clone());
    if request.method != "POST" {
        return aad_error(
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    let form_type = request.header("content-type").unwrap_or("");
    if !form_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return aad_error(
            400,
            "invalid_request",
            90004,
            "The request isn't properly formatted: expected application/x-www-form-urlencoded.",
        );
    }
    if let Some(code) = state.token_errors.pop_front() {
        let client_id = form.get("client_id").map_or("", String::as_str);
        return entra_error(code, client_id, tenant);
    }
    let result = match grant_type.as_str() {
        "" => Err(missing_parameter("grant_type")),
        "authorization_code" => authorization_code(&mut state, tenant, request, &form),
        "refresh_token" => refresh(&mut state, tenant, request, &form),
        "client_credentials" => client_credentials(&mut state, tenant, request, &form),
        DEVICE_CODE_GRANT => device_token(&mut state, tenant, request, &form),
        other => Err(aad_error(
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
        )),
    };
    result.unwrap_or_else(|response| response)
}

fn authorization_code(
    state: &mut State,
    tenant: &str,
    request: &Request,
    form: &Form,
) -> Result<Response, Response> {
    let client_id = client_auth(state, tenant, request, form)?;
    let code_value = form.get("code").ok_or_else(|| missing_parameter("code"))?;
    let invalid_code = || {
        aad_error(
            400,
            "invalid_grant",
            70000,
            "The provided value for the 'code' parameter is not valid.",
        )
    };
    let code = state.codes.get_mut(code_value).ok_or_else(invalid_code)?;
    if code.grant.client_id != client_id {
        return Err(invalid_code());
    }
    if code.used {
        return Err(aad_error(
            400,
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code \
             or use an existing refresh token.",
        ));
    }
    let redirect_uri = form
        .get("redirect_uri")
        .ok_or_else(|| missing_parameter("redirect_uri"))?;
    if *redirect_uri != code.redirect_uri {
        return Err(aad_error(
            400,
            "invalid_grant",
            50011,
            &format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the \
                 redirect URI of the authorization request."
            ),
        ));
    }
    let verifier = form.get("code_verifier").map(String::as_str).unwrap_or("");
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    if general_purpose::URL_SAFE_NO_PAD.encode(digest) != code.challenge {
        return Err(aad_error(
            400,
            "invalid_grant",
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization \
             request.",
        ));
    }
    code.used = true;
    let grant = code.grant.clone();
    Ok(Response::json(200, &issue_tokens(state, grant)))
}

fn refresh(
    state: &mut State,
    tenant: &str,
    request: &Request,
    form: &Form,
) -> Result<Response, Response> {
    let client_id = client_auth(state, tenant, request, form)?;
    let refresh_token = form
        .get("refresh_token")
        .ok_or_else(|| missing_parameter("refresh_token"))?;
    let Some(stored) = state.refresh_tokens.get(refresh_token) else {
        return Err(aad_error(
            400,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
        ));
    };
    match stored.status {
        RefreshStatus::Active => {}
        RefreshStatus::Rotated => {
            return Err(aad_error(
                400,
                "invalid_grant",
                70000,
                "The provided value for the 'refresh_token' parameter is not valid: it was \
                 already redeemed and replaced by a newer refresh token.",
            ));
        }
        RefreshStatus::Revoked => {
            return Err(aad_error(
                400,
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is \
                 needed. The user might have changed or reset their password.",
            ));
        }
    }
    if stored.grant.client_id != client_id {
        return Err(aad_error(
            400,
            "invalid_grant",
            70000,
            "The provided value for the 'refresh_token' parameter is not valid: it was issued to \
             another client.",
        ));
    }
    let mut grant = stored.grant.clone();
    if let Some(scope) = form.get("scope").filter(|s| !s.trim().is_empty()) {
        let asked = parse_scopes(state, scope)
            .map_err(|(error, code, description)| aad_error(400, error, code, &description))?;
        let granted = |p: &String| grant.permissions.iter().any(|g| g.eq_ignore_ascii_case(p));
        if !asked.resource.eq_ignore_ascii_case(&grant.resource)
            || !asked.permissions.iter().all(granted)
        {
            return Err(aad_error(
                400,
                "invalid_grant",
                65001,
                &format!(
                    "The user or administrator has not consented to use the application with ID \
                     '{client_id}'. Send an interactive authorization request for this user and \
                     resource."
                ),
            ));
        }
        if !asked.permissions.is_empty() {
            grant.permissions = asked.permissions;
        }
    }
    if let Some(stored) = state.refresh_tokens.get_mut(refresh_token) {
        stored.status = RefreshStatus::Rotated;
    }
    grant.offline = true;
    Ok(Response::json(200, &issue_tokens(state, grant)))
}

fn client_credentials(
    state: &mut State,
    tenant: &str,
    request: &Request,
    form: &Form,
) -> Result<Response, Response> {
    let client_id = client_auth(state, tenant, request, form)?;
    if state.clients.get(&client_id).is_some_and(|c| c.public) {
        return Err(aad_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        ));
    }
    let roles = match state.clients.get(&client_id).and_then(|c| c.app.as_ref()) {
        Some((app_tenant, roles)) if app_tenant.eq_ignore_ascii_case(tenant) => roles.clone(),
        _ => return Err(unknown_client(&client_id, tenant)),
    };
    let scope = form
        .get("scope")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing_parameter("scope"))?;
    let resource = match scope.strip_suffix("/.default") {
        Some(resource) if !scope.contains(char::is_whitespace) => resource.trim_end_matches('/'),
        _ => {
            return Err(aad_error(
                400,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope {scope} is not valid. Client credential flows \
                     must have a scope value with /.default suffixed to the resource identifier \
                     (application ID URI)."
                ),
            ));
        }
    };
    let known = KNOWN_RESOURCES
        .iter()
        .chain([&state.graph_resource.as_str()])
        .any(|known| known.eq_ignore_ascii_case(resource));
    if !known {
        return Err(aad_error(
            400,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named \
                 {tenant}."
            ),
        ));
    }
    let grant = Grant {
        principal: Principal::App(client_id.clone()),
        client_id,
        tenant: tenant.to_owned(),
        resource: resource.to_owned(),
        permissions: roles,
        openid: false,
        offline: false,
    };
    let access_token = issue_access(state, grant);
    Ok(Response::json(
        200,
        &json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": access_token,
        }),
    ))
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`.
pub(super) fn device_code(state: &Mutex<State>, tenant: &str, request: &Request) -> Response {
    let form: Form = request.form();
    let mut state = lock(state);
    state.device_code_requests += 1;
    if request.method != "POST" {
        return aad_error(
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    let Some(client_id) = form.get("client_id").filter(|id| !id.is_empty()) else {
        return missing_parameter("client_id");
    };
    if !state.clients.contains_key(client_id) {
        return unknown_client(client_id, tenant);
    }
    let Some(scope) = form.get("scope").filter(|s| !s.trim().is_empty()) else {
        return missing_parameter("scope");
    };
    let scopes = match parse_scopes(&state, scope) {
        Ok(scopes) => scopes,
        Err((error, code, description)) => return aad_error(400, error, code, &description),
    };
    let device_code = format!("DAQABAAEAAAD-fake-{}", random_hex(32));
    let grant = Grant {
        principal: Principal::User(state.user.clone()),
        client_id: client_id.clone(),
        tenant: tenant.to_owned(),
        resource: scopes.resource,
        permissions: scopes.permissions,
        openid: scopes.openid,
        offline: scopes.offline,
    };
    state.device_codes.insert(
        device_code.clone(),
        DeviceGrant {
            grant,
            pending_polls: 0,
            slowed: false,
            redeemed: false,
        },
    );
    Response::json(
        200,
        &json!({
            "user_code": USER_CODE,
            "device_code": device_code,
            "verification_uri": VERIFICATION_URI,
            "expires_in": 900,
            "interval": 1,
            "message": format!(
                "To sign in, use a web browser to open the page {VERIFICATION_URI} and enter the \
                 code {USER_CODE} to authenticate."
            ),
        }),
    )
}

/// A device code poll at the token endpoint.
fn device_token(
    state: &mut State,
    tenant: &str,
    request: &Request,
    form: &Form,
) -> Result<Response, Response> {
    state.device_polls += 1;
    let client_id = client_auth(state, tenant, request, form)?;
    let code = form
        .get("device_code")
        .ok_or_else(|| missing_parameter("device_code"))?;
    let (pending_polls, outcome) = (state.device_pending_polls, state.device_outcome);
    let invalid = || {
        aad_error(
            400,
            "invalid_grant",
            70000,
            "The provided value for the 'device_code' parameter is not valid.",
        )
    };
    let device = state.device_codes.get_mut(code).ok_or_else(invalid)?;
    if device.grant.client_id != client_id {
        return Err(invalid());
    }
    if device.redeemed {
        return Err(aad_error(
            400,
            "invalid_grant",
            54005,
            "The device code was already redeemed.",
        ));
    }
    if outcome == DeviceOutcome::SlowDownOnce && !device.slowed {
        device.slowed = true;
        return Err(aad_error(
            400,
            "slow_down",
            70016,
            "OAuth 2.0 device flow error. The client is polling too quickly; slow down.",
        ));
    }
    if device.pending_polls < pending_polls {
        device.pending_polls += 1;
        return Err(aad_error(
            400,
            "authorization_pending",
            70016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        ));
    }
    match outcome {
        DeviceOutcome::Decline => Err(aad_error(
            400,
            "authorization_declined",
            65004,
            "User declined to consent to access the app.",
        )),
        DeviceOutcome::Expire => Err(aad_error(
            400,
            "expired_token",
            70019,
            "Verification code expired. Have the user retry the sign-in.",
        )),
        DeviceOutcome::Approve | DeviceOutcome::SlowDownOnce => {
            device.redeemed = true;
            let grant = device.grant.clone();
            Ok(Response::json(200, &issue_tokens(state, grant)))
        }
    }
}

/// Authenticates the client: public clients by `client_id` alone,
/// confidential ones by secret (form or HTTP Basic) or by a certificate
/// assertion. Returns the client id.
fn client_auth(
    state: &State,
    tenant: &str,
    request: &Request,
    form: &Form,
) -> Result<String, Response> {
    let basic = request
        .header("authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim());
    let (mut id, mut secret) = (
        form.get("client_id").cloned(),
        form.get("client_secret").cloned(),
    );
    if let Some(credentials) = basic {
        let decoded = general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let Some((basic_id, basic_secret)) = decoded.as_deref().and_then(|s| s.split_once(':'))
        else {
            return Err(aad_error(
                401,
                "invalid_client",
                7000216,
                "Malformed HTTP Basic client credentials.",
            ));
        };
        id = Some(form_decode(basic_id));
        secret = Some(form_decode(basic_secret));
    }
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return Err(missing_parameter("client_id"));
    };
    let Some(client) = state.clients.get(&id) else {
        return Err(unknown_client(&id, tenant));
    };
    let assertion_type = form.get("client_assertion_type");
    let assertion = form.get("client_assertion");
    if client.public {
        if secret.is_some() || assertion.is_some() {
            return Err(aad_error(
                401,
                "invalid_client",
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be \
                 presented.",
            ));
        }
        return Ok(id);
    }
    if let Some(assertion) = assertion {
        if assertion_type.map(String::as_str) != Some(CLIENT_ASSERTION_TYPE) {
            return Err(aad_error(
                400,
                "invalid_request",
                90004,
                &format!("client_assertion_type must be {CLIENT_ASSERTION_TYPE}."),
            ));
        }
        let token_url = format!("{}/{tenant}/oauth2/v2.0/token", state.base);
        verify_assertion(client, &id, assertion, &token_url)?;
        return Ok(id);
    }
    match (secret, &client.secret) {
        (None, _) => Err(aad_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        )),
        (Some(given), Some(expected)) if given == *expected => Ok(id),
        (Some(_), _) => Err(aad_error(
            401,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{id}'."
            ),
        )),
    }
}

/// Checks a client assertion: an RS256 (or PS256) JWT signed by the app's
/// certificate, naming it in `x5t` or `x5t#S256`, with `aud` the token
/// endpoint, `iss` = `sub` = the client id, a future `exp` and a `jti`.
fn verify_assertion(
    client: &Client,
    client_id: &str,
    assertion: &str,
    token_url: &str,
) -> Result<(), Response> {
    let malformed = || {
        aad_error(
            401,
            "invalid_client",
            50027,
            "JWT token is invalid or malformed.",
        )
    };
    let segments: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = segments[..] else {
        return Err(malformed());
    };
    let decode_json = |segment: &str| {
        URL_SAFE_ANY
            .decode(segment)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .filter(Value::is_object)
    };
    let (Some(header), Some(claims), Ok(signature)) = (
        decode_json(header),
        decode_json(claims),
        URL_SAFE_ANY.decode(signature),
    ) else {
        return Err(malformed());
    };
    let algorithm: &dyn ring::signature::VerificationAlgorithm = match header["alg"].as_str() {
        Some("RS256") => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        Some("PS256") => &ring::signature::RSA_PSS_2048_8192_SHA256,
        _ => return Err(malformed()),
    };
    let key_not_found = |thumbprint: &str| {
        aad_error(
            401,
            "invalid_client",
            700027,
            &format!(
                "Client assertion failed signature validation. [Reason - The key was not found., \
                 Thumbprint of key used by client: '{thumbprint}']"
            ),
        )
    };
    let x5t = header["x5t"].as_str().map(|t| t.trim_end_matches('='));
    let x5t_s256 = header["x5t#S256"].as_str().map(|t| t.trim_end_matches('='));
    let Some(certificate) = &client.certificate else {
        return Err(key_not_found(x5t.or(x5t_s256).unwrap_or("")));
    };
    let known =
        x5t == Some(certificate.x5t.as_str()) || x5t_s256 == Some(certificate.x5t_s256.as_str());
    if !known {
        return Err(key_not_found(x5t.or(x5t_s256).unwrap_or("")));
    }
    let signed = &assertion[..segments[0].len() + 1 + segments[1].len()];
    ring::signature::UnparsedPublicKey::new(algorithm, &certificate.public_key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| {
            aad_error(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
            )
        })?;
    if claims["aud"].as_str() != Some(token_url) {
        return Err(aad_error(
            401,
            "invalid_client",
            700023,
            &format!(
                "Client assertion audience claim does not match Realm issuer. Expected \
                 '{token_url}'."
            ),
        ));
    }
    if claims["iss"].as_str() != Some(client_id) || claims["sub"].as_str() != Some(client_id) {
        return Err(aad_error(
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let now = now_secs();
    let exp_ok = claims["exp"].as_i64().is_some_and(|exp| exp > now);
    let nbf_ok = claims["nbf"].as_i64().is_none_or(|nbf| nbf <= now + 300);
    if !exp_ok || !nbf_ok {
        return Err(aad_error(
            401,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    if claims["jti"].as_str().is_none_or(str::is_empty) {
        return Err(malformed());
    }
    Ok(())
}

pub(super) fn issue_access(state: &mut State, grant: Grant) -> String {
    let token = format!("eyJ0eXAi.fake-{}", random_hex(24));
    state.access_tokens.insert(
        token.clone(),
        AccessGrant {
            grant,
            expired: false,
        },
    );
    token
}

/// Issues the tokens of a delegated grant; returns the response JSON. As
/// the identity platform's auth-code flow documents it
/// (learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow,
/// "Successful response"): `scope` lists the permissions the access token
/// is valid for (those consented, so a withheld Mail.Send is missing), an
/// `id_token` comes only when `openid` was asked for, and a
/// `refresh_token` only with `offline_access`.
fn issue_tokens(state: &mut State, grant: Grant) -> Value {
    let scope = grant
        .permissions
        .iter()
        .map(|p| format!("{}/{p}", grant.resource))
        .collect::<Vec<_>>()
        .join(" ");
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": 3599,
        "ext_expires_in": 3599,
    });
    if grant.openid {
        body["id_token"] = Value::String(id_token(&grant));
    }
    if grant.offline {
        let refresh_token = format!("0.AAA-fake-{}", random_hex(32));
        state.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshGrant {
                grant: grant.clone(),
                status: RefreshStatus::Active,
            },
        );
        body["refresh_token"] = Value::String(refresh_token);
    }
    body["access_token"] = Value::String(issue_access(state, grant));
    body
}

/// An unsigned (`alg: none`) but well-formed v2.0 ID token.
fn id_token(grant: &Grant) -> String {
    let Principal::User(email) = &grant.principal else {
        return String::new();
    };
    let tid = if grant.tenant.len() == 36 && grant.tenant.matches('-').count() == 4 {
        grant.tenant.clone()
    } else {
        FAKE_TENANT_ID.to_owned()
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, email.to_lowercase().as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let oid = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    let now = now_secs();
    let name = email.split('@').next().unwrap_or(email);
    let header = json!({"typ": "JWT", "alg": "none"});
    let payload = json!({
        "ver": "2.0",
        "iss": format!("https://login.microsoftonline.com/{tid}/v2.0"),
        "sub": general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[16..]),
        "aud": grant.client_id,
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "name": name,
        "preferred_username": email,
        "email": email,
        "oid": oid,
        "tid": tid,
    });
    let encode = |value: &Value| general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.", encode(&header), encode(&payload))
}

/// Reads an X.509 certificate (DER or PEM): its RSA public key and
/// thumbprints.
pub(super) fn parse_certificate(input: &[u8]) -> Option<Certificate> {
    let der = match std::str::from_utf8(input) {
        Ok(text) if text.contains("-----BEGIN") => pem_block(text, "CERTIFICATE")?,
        _ => input.to_vec(),
    };
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
    //   OPTIONAL, serialNumber, signature, issuer, validity, subject,
    //   subjectPublicKeyInfo, ... }, ... }
    let (tag, certificate, _) = der_next(&der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, tbs, _) = der_next(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, after) = der_next(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        rest = der_next(rest)?.2;
    }
    let (tag, spki, _) = der_next(rest)?;
    if tag != 0x30 {
        return None;
    }
    // SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING }
    let (tag, algorithm, after) = der_next(spki)?;
    const RSA_ENCRYPTION: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    if tag != 0x30 || !algorithm.starts_with(RSA_ENCRYPTION) {
        return None;
    }
    let (tag, bits, _) = der_next(after)?;
    if tag != 0x03 {
        return None;
    }
    let public_key = bits.strip_prefix(&[0])?.to_vec();
    Some(Certificate {
        public_key,
        x5t: certificate_x5t(&der),
        x5t_s256: certificate_x5t_s256(&der),
    })
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_certificate_parses() {
        let certificate = parse_certificate(fixture_certificate_der()).unwrap();
        assert_eq!(certificate.x5t.len(), 27);
        let from_pem = parse_certificate(fixture_certificate_pem().as_bytes()).unwrap();
        assert_eq!(from_pem.public_key, certificate.public_key);
    }

    #[test]
    fn loopback_redirects_ignore_the_port() {
        let registered = "http://localhost/callback";
        assert!(redirect_matches(
            registered,
            "http://localhost:48888/callback"
        ));
        assert!(redirect_matches(
            "http://localhost:48888/callback",
            "http://localhost:5000/callback"
        ));
        assert!(!redirect_matches(
            registered,
            "http://127.0.0.1:48888/callback"
        ));
        assert!(!redirect_matches(
            registered,
            "http://localhost:48888/other"
        ));
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://app.example:444/cb"
        ));
    }
}
