//! Google's OAuth 2.0 server: authorize, token, revoke and the JWT-bearer
//! grant of service accounts.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose;
use serde_json::{Value, json};

use super::state::{AccessGrant, Code, JWT_BEARER, RefreshGrant, State};
use crate::fake_common::{URL_SAFE_ANY, der_next, now_secs, random_hex};
use crate::http::{Request, Response, form_decode, lock};

const ISSUER: &str = "https://accounts.google.com";

/// The DER inside a PEM document (the first block), or `None`.
pub fn pem_decode(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start..];
    let body_start = rest.find('\n')? + 1;
    let body_end = rest.find("-----END ")?;
    let body: String = rest
        .get(body_start..body_end)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    general_purpose::STANDARD.decode(body).ok()
}

/// `GET /o/oauth2/auth`: checks the request and redirects with a code.
pub(super) fn authorize(state: &Mutex<State>, request: &Request) -> Response {
    let params = request.query_map();
    let mut state = lock(state);
    state.authorize_requests.push(params.clone());
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    let client_id = param("client_id");
    if client_id.is_empty() || !state.clients.contains_key(client_id) {
        return Response::text(400, "invalid_client: The OAuth client was not found.\n");
    }
    let redirect_uri = param("redirect_uri");
    let Some(mut location) = url::Url::parse(redirect_uri)
        .ok()
        .filter(|url| url.fragment().is_none() && matches!(url.scheme(), "http" | "https"))
    else {
        return Response::text(400, "invalid_request: missing or invalid redirect_uri\n");
    };
    if param("response_type") != "code" {
        return Response::text(
            400,
            "unsupported_response_type: response_type must be code\n",
        );
    }
    if param("scope").trim().is_empty() {
        return Response::text(400, "invalid_request: Missing required parameter: scope\n");
    }
    if param("code_challenge_method") != "S256" {
        return Response::text(400, "invalid_request: code_challenge_method must be S256\n");
    }
    let challenge = param("code_challenge");
    let challenge_ok = (43..=128).contains(&challenge.len())
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !challenge_ok {
        return Response::text(400, "invalid_request: missing or invalid code_challenge\n");
    }
    let state_param = params.get("state");
    let granted = granted_scopes(param("scope"), &state.unticked);
    {
        let mut query = location.query_pairs_mut();
        if state.deny {
            query.append_pair("error", "access_denied");
        } else {
            let code = format!("4/fake-{}", random_hex(24));
            query.append_pair("code", &code);
            let user = state.user_email.clone();
            state.codes.insert(
                code,
                Code {
                    client_id: client_id.to_owned(),
                    redirect_uri: redirect_uri.to_owned(),
                    challenge: challenge.to_owned(),
                    scope: granted.clone(),
                    user,
                    used: false,
                },
            );
        }
        if let Some(value) = state_param {
            query.append_pair("state", value);
        }
        if !state.deny {
            query.append_pair("scope", &granted);
        }
    }
    Response::new(302).with_header("Location", location.as_str())
}

/// `POST /token`: the three grant types.
pub(super) fn token(state: &Mutex<State>, request: &Request) -> Response {
    let form = request.form();
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    let mut state = lock(state);
    state.total_token_requests += 1;
    *state.token_requests.entry(grant_type.clone()).or_default() += 1;
    state.token_forms.push(form.clone());
    let form_type = request.header("content-type").unwrap_or("");
    if !form_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return oauth_error(400, "invalid_request", "Invalid content type.");
    }
    let result = match grant_type.as_str() {
        "authorization_code" => authorization_code(&mut state, request, &form),
        "refresh_token" => refresh(&mut state, request, &form),
        JWT_BEARER => jwt_bearer(&mut state, &form),
        _ => Err(Response::json(
            400,
            &json!({"error": "unsupported_grant_type"}),
        )),
    };
    result.unwrap_or_else(|response| response)
}

fn authorization_code(
    state: &mut State,
    request: &Request,
    form: &HashMap<String, String>,
) -> Result<Response, Response> {
    let client_id = client_auth(state, request, form)?;
    let Some(code_value) = form.get("code") else {
        return Err(oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: code",
        ));
    };
    let Some(code) = state.codes.get_mut(code_value) else {
        return Err(oauth_error(400, "invalid_grant", "Malformed auth code."));
    };
    if code.used || code.client_id != client_id {
        return Err(oauth_error(400, "invalid_grant", "Bad Request"));
    }
    match form.get("redirect_uri") {
        None => {
            return Err(oauth_error(
                400,
                "invalid_request",
                "Missing parameter: redirect_uri",
            ));
        }
        Some(uri) if *uri != code.redirect_uri => {
            return Err(oauth_error(400, "redirect_uri_mismatch", "Bad Request"));
        }
        Some(_) => {}
    }
    let Some(verifier) = form.get("code_verifier") else {
        return Err(oauth_error(400, "invalid_grant", "Missing code verifier."));
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    if general_purpose::URL_SAFE_NO_PAD.encode(digest) != code.challenge {
        return Err(oauth_error(400, "invalid_grant", "Invalid code verifier."));
    }
    code.used = true;
    let (user, scope) = (code.user.clone(), code.scope.clone());
    let refresh_token = format!("1//fake-{}", random_hex(24));
    state.refresh_tokens.insert(
        refresh_token.clone(),
        RefreshGrant {
            client_id: client_id.clone(),
            user: user.clone(),
            scope: scope.clone(),
            revoked: false,
        },
    );
    let access_token = issue_access(state, &user, &scope, Some(refresh_token.clone()));
    let mut body = json!({
        "access_token": access_token,
        "expires_in": 3599,
        "refresh_token": refresh_token,
        "scope": scope,
        "token_type": "Bearer",
    });
    if has_identity_scope(&scope) {
        body["id_token"] = Value::String(id_token(&user, &client_id));
    }
    Ok(Response::json(200, &body))
}

fn refresh(
    state: &mut State,
    request: &Request,
    form: &HashMap<String, String>,
) -> Result<Response, Response> {
    let client_id = client_auth(state, request, form)?;
    let Some(refresh_token) = form.get("refresh_token") else {
        return Err(oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: refresh_token",
        ));
    };
    let grant = match state.refresh_tokens.get(refresh_token) {
        Some(grant) if !grant.revoked => grant,
        _ => {
            return Err(oauth_error(
                400,
                "invalid_grant",
                "Token has been expired or revoked.",
            ));
        }
    };
    if grant.client_id != client_id {
        return Err(oauth_error(400, "unauthorized_client", "Unauthorized"));
    }
    let (user, scope) = (grant.user.clone(), grant.scope.clone());
    let access_token = issue_access(state, &user, &scope, Some(refresh_token.clone()));
    let mut body = json!({
        "access_token": access_token,
        "expires_in": 3599,
        "scope": scope,
        "token_type": "Bearer",
    });
    if has_identity_scope(&scope) {
        body["id_token"] = Value::String(id_token(&user, &client_id));
    }
    Ok(Response::json(200, &body))
}

fn jwt_bearer(state: &mut State, form: &HashMap<String, String>) -> Result<Response, Response> {
    let invalid = |why: &str| oauth_error(400, "invalid_grant", why);
    let Some(assertion) = form.get("assertion") else {
        return Err(oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: assertion",
        ));
    };
    let segments: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = segments[..] else {
        return Err(invalid("Invalid JWT: malformed assertion."));
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
        return Err(invalid("Invalid JWT: malformed assertion."));
    };
    if header["alg"] != "RS256" {
        return Err(invalid(
            "Invalid JWT: unsupported algorithm, expected RS256.",
        ));
    }
    let issuer = claims["iss"].as_str().unwrap_or("");
    let Some(key) = state.service_accounts.get(issuer) else {
        return Err(invalid("Invalid grant: account not found"));
    };
    let signed = &assertion[..segments[0].len() + 1 + segments[1].len()];
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| invalid("Invalid JWT Signature."))?;
    let token_url = format!("{}/token", state.base);
    if claims["aud"] != token_url.as_str() {
        return Err(invalid("Invalid JWT: Failed audience check."));
    }
    let now = now_secs();
    let times_ok = match (claims["iat"].as_i64(), claims["exp"].as_i64()) {
        (Some(iat), Some(exp)) => exp > now && exp > iat && exp - iat <= 3600 && iat <= now + 300,
        _ => false,
    };
    if !times_ok {
        return Err(invalid(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    let scope = claims["scope"].as_str().unwrap_or("").trim();
    if scope.is_empty() {
        return Err(oauth_error(
            400,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    }
    let subject = claims["sub"].as_str().unwrap_or("");
    if subject.is_empty() {
        return Err(invalid("Invalid email or User ID"));
    }
    if !state
        .delegations
        .contains(&(issuer.to_owned(), subject.to_lowercase()))
    {
        return Err(oauth_error(
            401,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not \
             authorized for any of the scopes requested.",
        ));
    }
    let (subject, scope) = (subject.to_owned(), scope.to_owned());
    let access_token = issue_access(state, &subject, &scope, None);
    Ok(Response::json(
        200,
        &json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}),
    ))
}

/// Authenticates the client (HTTP Basic, or `client_id`/`client_secret` in
/// the form) and returns its id.
fn client_auth(
    state: &State,
    request: &Request,
    form: &HashMap<String, String>,
) -> Result<String, Response> {
    let basic = request
        .header("authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim());
    let (id, secret) = match basic {
        Some(credentials) => {
            let decoded = general_purpose::STANDARD
                .decode(credentials)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            let Some((id, secret)) = decoded.as_deref().and_then(|s| s.split_once(':')) else {
                return Err(oauth_error(
                    400,
                    "invalid_request",
                    "Malformed HTTP Basic credentials.",
                ));
            };
            // RFC 6749 form-encodes both before Base64; some clients do not.
            let (decoded_id, decoded_secret) = (form_decode(id), form_decode(secret));
            if state.clients.get(&decoded_id) == Some(&decoded_secret) {
                (Some(decoded_id), Some(decoded_secret))
            } else {
                (Some(id.to_owned()), Some(secret.to_owned()))
            }
        }
        None => (
            form.get("client_id").cloned(),
            form.get("client_secret").cloned(),
        ),
    };
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return Err(oauth_error(
            400,
            "invalid_request",
            "Could not determine client ID from request.",
        ));
    };
    let Some(expected) = state.clients.get(&id) else {
        return Err(oauth_error(
            401,
            "invalid_client",
            "The OAuth client was not found.",
        ));
    };
    match secret {
        None => Err(oauth_error(
            400,
            "invalid_request",
            "client_secret is missing.",
        )),
        Some(secret) if secret != *expected => {
            Err(oauth_error(401, "invalid_client", "Unauthorized"))
        }
        Some(_) => Ok(id),
    }
}

/// `POST /revoke` (or GET): revokes a refresh or an access token.
pub(super) fn revoke(state: &Mutex<State>, request: &Request) -> Response {
    let mut params = request.query_map();
    for (name, value) in url::form_urlencoded::parse(&request.body).into_owned() {
        params.entry(name).or_insert(value);
    }
    let mut guard = lock(state);
    let state = &mut *guard;
    state.revoke_requests += 1;
    let Some(token) = params.get("token") else {
        return oauth_error(400, "invalid_request", "Missing required parameter: token");
    };
    let refresh_token = match state.refresh_tokens.get(token) {
        Some(grant) if !grant.revoked => Some(token.clone()),
        Some(_) => None,
        None => match state.access_tokens.get_mut(token) {
            Some(grant) if !grant.revoked && !grant.expired => {
                grant.revoked = true;
                // Revoking an access token revokes its refresh token too.
                Some(grant.refresh_token.clone().unwrap_or_default())
            }
            _ => None,
        },
    };
    let Some(refresh_token) = refresh_token else {
        return Response::json(
            400,
            &json!({"error": "invalid_token", "error_description": "Token expired or revoked"}),
        );
    };
    if let Some(grant) = state.refresh_tokens.get_mut(&refresh_token) {
        grant.revoked = true;
        for access in state.access_tokens.values_mut() {
            if access.refresh_token.as_deref() == Some(refresh_token.as_str()) {
                access.revoked = true;
            }
        }
    }
    Response::json(200, &json!({}))
}

pub(super) fn issue_access(
    state: &mut State,
    user: &str,
    scope: &str,
    refresh_token: Option<String>,
) -> String {
    let token = format!("ya29.fake-{}", random_hex(24));
    state.access_tokens.insert(
        token.clone(),
        AccessGrant {
            user: user.to_owned(),
            scope: scope.to_owned(),
            refresh_token,
            revoked: false,
            expired: false,
        },
    );
    token
}

/// The scopes a consent grants, space separated, as Google writes them in
/// the redirect's and the token response's `scope`: the sign-in scopes
/// `email` and `profile` become their `userinfo.*` URLs, and the boxes the
/// user unticked are left out. Google's "granular permissions" consent
/// shows the sign-in scopes (`openid`, `email`, `profile`) first and a
/// tick box for every other scope, so an app "must check what scopes are
/// granted" (developers.google.com/identity/protocols/oauth2/resources/
/// granular-permissions).
fn granted_scopes(requested: &str, unticked: &std::collections::HashSet<String>) -> String {
    let mut granted: Vec<&str> = Vec::new();
    for scope in requested.split_whitespace() {
        let scope = match scope {
            "email" => "https://www.googleapis.com/auth/userinfo.email",
            "profile" => "https://www.googleapis.com/auth/userinfo.profile",
            other => other,
        };
        if !unticked.contains(scope) && !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    granted.join(" ")
}

/// Whether a grant holds an identity scope: Google's token response has an
/// `id_token` "only returned if your request included an identity scope,
/// such as openid, profile, or email" (OAuth 2.0 for iOS & Desktop Apps,
/// step 5). `gmail.send` alone gives none.
fn has_identity_scope(scope: &str) -> bool {
    scope.split_whitespace().any(|s| {
        matches!(
            s,
            "openid"
                | "https://www.googleapis.com/auth/userinfo.email"
                | "https://www.googleapis.com/auth/userinfo.profile"
        )
    })
}

/// An unsigned (`alg: none`) but well-formed ID token for `email`.
fn id_token(email: &str, client_id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, email.to_lowercase().as_bytes());
    let mut sub_bytes = [0; 8];
    sub_bytes.copy_from_slice(&digest.as_ref()[..8]);
    let sub = format!("1{:020}", u64::from_be_bytes(sub_bytes));
    let now = now_secs();
    let header = json!({"alg": "none", "typ": "JWT"});
    let payload = json!({
        "iss": ISSUER,
        "azp": client_id,
        "aud": client_id,
        "sub": sub,
        "email": email,
        "email_verified": true,
        "iat": now,
        "exp": now + 3600,
    });
    let encode = |value: &Value| general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.", encode(&header), encode(&payload))
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    Response::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// Reads an RSA public key (SPKI or PKCS#1, DER or PEM) as PKCS#1 DER,
/// which is what `ring` verifies with.
pub(super) fn rsa_public_key(key: &[u8]) -> Option<Vec<u8>> {
    let der = match std::str::from_utf8(key) {
        Ok(text) if text.contains("-----BEGIN") => pem_decode(text)?,
        _ => key.to_vec(),
    };
    // SubjectPublicKeyInfo ::= SEQUENCE { SEQUENCE { OID, params }, BIT STRING }
    let spki = der_element(&der, 0x30)
        .and_then(|(contents, _)| {
            let (_, rest) = der_element(contents, 0x30)?;
            let (bits, _) = der_element(rest, 0x03)?;
            bits.strip_prefix(&[0])
        })
        .map(<[u8]>::to_vec);
    let pkcs1 = spki.unwrap_or(der);
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    let (contents, _) = der_element(&pkcs1, 0x30)?;
    let (_, rest) = der_element(contents, 0x02)?;
    der_element(rest, 0x02)?;
    Some(pkcs1)
}

/// Splits one DER element with tag `tag` off `input`: (contents, rest).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = der_next(input)?;
    (found == tag).then_some((contents, rest))
}
