//! OAuth tokens in the shared store (`SharedTokens`) against a real,
//! throwaway PostgreSQL cluster and a local token endpoint that counts its
//! requests and, like a provider that rotates refresh tokens, accepts
//! only the refresh token it issued last. Without PostgreSQL each test
//! says why and skips (fails under `APIMAIL_PG_REQUIRED`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apimail_core::token_store::StoredToken;
use apimail_core::token_vault::TokenVault;
use apimail_core::{AccessToken, Secret, StoredTokens, TokenError, TokenSource, now_unix};
use apimail_store_postgres::{SharedTokens, Store, StoreConfig, StoreKey, TokensError};
use apimail_test_postgres::{PgCluster, skip_or_panic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

const REFRESH: &str = "SECRET-refresh-original";
const ACCESS: &str = "SECRET-access-original";
const CLIENT_SECRET: &str = "SECRET-client-secret";

fn database(test: &str) -> Option<(&'static PgCluster, String)> {
    let cluster = skip_or_panic(test)?;
    let db = cluster.new_database(test).expect("create a database");
    Some((cluster, db))
}

async fn store(cluster: &PgCluster, db: &str, node: &str) -> Store {
    let mut config = StoreConfig::new(cluster.url(db)).password(Secret::new(cluster.password()));
    config.node = Some(node.to_owned());
    let store = Store::new(&config).unwrap();
    store.migrate().await.unwrap();
    store
}

async fn sql(cluster: &PgCluster, db: &str) -> tokio_postgres::Client {
    let url = cluster.url_with_password(db);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn key(byte: u8) -> StoreKey {
    StoreKey::from_bytes(&[byte; 32])
}

fn stored(token_url: &str, expires_in: i64) -> StoredToken {
    StoredToken {
        account: "work".into(),
        provider: "graph".into(),
        address: Some("me@example.com".into()),
        client_id: "client-id".into(),
        client_secret: Some(Secret::new(CLIENT_SECRET)),
        token_url: token_url.into(),
        scopes: vec!["Mail.Send".into(), "offline_access".into()],
        refresh_token: Some(Secret::new(REFRESH)),
        access_token: Some(Secret::new(ACCESS)),
        expires_at: Some(now_unix() + expires_in),
        updated_at: 0,
        authorized_at: Some(now_unix()),
        refreshed_at: None,
        refresh_refused: None,
    }
}

/// A token endpoint on a loopback port: each refresh answers after
/// `delay` with `SECRET-access-N` and a rotated `SECRET-refresh-N`; a
/// refresh token other than the last one issued gets `invalid_grant`.
struct TokenEndpoint {
    url: String,
    requests: Arc<AtomicUsize>,
}

async fn token_endpoint(delay: Duration) -> TokenEndpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let current = Arc::new(Mutex::new(REFRESH.to_owned()));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            let current = current.clone();
            tokio::spawn(async move {
                let body = read_request(&mut socket).await;
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(delay).await;
                let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect();
                let given = form
                    .iter()
                    .find(|(k, _)| k == "refresh_token")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let mut current = current.lock().await;
                let (status, json) = if given == *current {
                    *current = format!("SECRET-refresh-{n}");
                    (
                        "200 OK",
                        format!(
                            r#"{{"token_type":"Bearer","expires_in":3600,"access_token":"SECRET-access-{n}","refresh_token":"SECRET-refresh-{n}","scope":"Mail.Send offline_access"}}"#
                        ),
                    )
                } else {
                    (
                        "400 Bad Request",
                        r#"{"error":"invalid_grant","error_description":"AADSTS70000: the refresh token was already used"}"#.to_owned(),
                    )
                };
                drop(current);
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                    json.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    TokenEndpoint { url, requests }
}

/// The request's body (headers read up to the blank line, then
/// Content-Length bytes).
async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
            }
        }
    }
    String::new()
}

/// Every byte the token table holds, as one buffer.
async fn table_bytes(client: &tokio_postgres::Client) -> Vec<u8> {
    let mut all = Vec::new();
    for row in client
        .query(
            "SELECT account, key_id, sealed, updated_at::text FROM apimail_tokens",
            &[],
        )
        .await
        .unwrap()
    {
        all.extend_from_slice(row.get::<_, String>(0).as_bytes());
        all.extend_from_slice(row.get::<_, String>(1).as_bytes());
        all.extend_from_slice(&row.get::<_, Vec<u8>>(2));
        all.extend_from_slice(row.get::<_, String>(3).as_bytes());
    }
    all
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn assert_no_secret(bytes: &[u8]) {
    for secret in [
        "SECRET-",
        REFRESH,
        ACCESS,
        CLIENT_SECRET,
        "Mail.Send",
        "me@example.com",
    ] {
        assert!(
            !holds(bytes, secret),
            "the table holds `{secret}` in the clear"
        );
    }
}

#[tokio::test]
async fn the_table_never_holds_a_token_in_the_clear() {
    let Some((cluster, db)) = database("tokens_clear") else {
        return;
    };
    let endpoint = token_endpoint(Duration::ZERO).await;
    let tokens = SharedTokens::new(store(cluster, &db, "a").await, key(1));
    tokens.put(&stored(&endpoint.url, -10)).await.unwrap();
    let client = sql(cluster, &db).await;
    let bytes = table_bytes(&client).await;
    assert!(holds(&bytes, "work"), "the account is the row's key");
    assert_no_secret(&bytes);

    // A refresh rewrites the row: still sealed, the rotated token too.
    let source = StoredTokens::in_vault(Arc::new(tokens.clone()), "work");
    let token = source.token().await.unwrap();
    assert_eq!(token.secret.expose(), "SECRET-access-1");
    let after = table_bytes(&client).await;
    assert_no_secret(&after);
    assert!(!holds(&after, "SECRET-refresh-1"));
    let loaded = tokens.get("work").await.unwrap().unwrap();
    assert_eq!(loaded.refresh_token.unwrap().expose(), "SECRET-refresh-1");
    assert_eq!(loaded.client_secret.unwrap().expose(), CLIENT_SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_refresh_once_and_share_the_token() {
    let Some((cluster, db)) = database("tokens_two_nodes") else {
        return;
    };
    // Slow enough that both nodes find the token stale and ask at once.
    let endpoint = token_endpoint(Duration::from_millis(500)).await;
    let a = SharedTokens::new(store(cluster, &db, "node-a").await, key(1));
    let b = SharedTokens::new(store(cluster, &db, "node-b").await, key(1));
    a.put(&stored(&endpoint.url, -10)).await.unwrap();

    let on_a = StoredTokens::in_vault(Arc::new(a.clone()), "work");
    let on_b = StoredTokens::in_vault(Arc::new(b.clone()), "work");
    let (from_a, from_b) = tokio::join!(
        tokio::spawn(async move { on_a.token().await }),
        tokio::spawn(async move { on_b.token().await })
    );
    let (from_a, from_b) = (from_a.unwrap().unwrap(), from_b.unwrap().unwrap());
    assert_eq!(
        endpoint.requests.load(Ordering::SeqCst),
        1,
        "one token request"
    );
    assert_eq!(from_a, from_b);
    assert_eq!(from_a.secret.expose(), "SECRET-access-1");

    // The rotated refresh token is what a third node reads.
    let c = SharedTokens::new(store(cluster, &db, "node-c").await, key(1));
    let loaded = c.get("work").await.unwrap().unwrap();
    assert_eq!(loaded.refresh_token.unwrap().expose(), "SECRET-refresh-1");
    assert_eq!(loaded.access_token.unwrap().expose(), "SECRET-access-1");
    assert!(loaded.refreshed_at.is_some());

    // After a rejection, one more refresh, with the rotated token (the
    // endpoint refuses any other).
    let rejected = from_a;
    let on_c = StoredTokens::in_vault(Arc::new(c.clone()), "work");
    let replaced = on_c.refresh_after_rejection(&rejected).await.unwrap();
    assert_eq!(replaced.secret.expose(), "SECRET-access-2");
    assert_eq!(endpoint.requests.load(Ordering::SeqCst), 2);
    let loaded = a.get("work").await.unwrap().unwrap();
    assert_eq!(loaded.refresh_token.unwrap().expose(), "SECRET-refresh-2");
    // Node b holds the rejected token: it gets the replacement, no request.
    let on_b = StoredTokens::in_vault(Arc::new(b), "work");
    assert_eq!(
        on_b.refresh_after_rejection(&rejected).await.unwrap(),
        replaced
    );
    assert_eq!(endpoint.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn another_key_is_a_clear_error_and_a_refusal_is_recorded() {
    let Some((cluster, db)) = database("tokens_wrong_key") else {
        return;
    };
    let endpoint = token_endpoint(Duration::ZERO).await;
    let ours = SharedTokens::new(store(cluster, &db, "a").await, key(1));
    let theirs = SharedTokens::new(store(cluster, &db, "b").await, key(2));
    let mut token = stored(&endpoint.url, -10);
    token.refresh_token = Some(Secret::new("SECRET-refresh-not-current"));
    ours.put(&token).await.unwrap();

    let error = theirs.get("work").await.unwrap_err();
    assert!(matches!(error, TokensError::Open(_)), "{error}");
    let text = error.to_string();
    assert!(text.contains("were encrypted with another key"), "{text}");
    assert!(
        text.contains(ours.key_id()) && text.contains(theirs.key_id()),
        "{text}"
    );
    let source = StoredTokens::in_vault(Arc::new(theirs), "work");
    let error = source.token().await.unwrap_err();
    assert!(matches!(error, TokenError::Store(_)), "{error}");
    assert_eq!(endpoint.requests.load(Ordering::SeqCst), 0);

    // The endpoint refuses this refresh token: the refusal is recorded,
    // the tokens kept.
    let source = StoredTokens::in_vault(Arc::new(ours.clone()), "work");
    let error = source.token().await.unwrap_err();
    assert!(matches!(error, TokenError::InvalidGrant { .. }), "{error}");
    let loaded = ours.get("work").await.unwrap().unwrap();
    assert!(loaded.refresh_refused.unwrap().contains("AADSTS70000"));
    assert!(loaded.refresh_token.is_some());

    // Nothing stored: not logged in.
    assert!(ours.remove("work").await.unwrap());
    let error = source.token().await.unwrap_err();
    assert!(matches!(error, TokenError::NotLoggedIn { .. }), "{error}");
}

#[tokio::test]
async fn a_node_waits_for_the_row_at_most_the_lock_timeout() {
    let Some((cluster, db)) = database("tokens_lock") else {
        return;
    };
    let endpoint = token_endpoint(Duration::ZERO).await;
    let tokens = SharedTokens::new(store(cluster, &db, "a").await, key(1))
        .with_lock_timeout(Duration::from_millis(200));
    tokens.put(&stored(&endpoint.url, -10)).await.unwrap();
    // Someone else holds the row.
    let mut holder = sql(cluster, &db).await;
    let held = holder.transaction().await.unwrap();
    held.execute(
        "SELECT 1 FROM apimail_tokens WHERE account = 'work' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let error = tokens
        .obtain(
            "work",
            None,
            Box::new(|_| panic!("no refresh while locked")),
        )
        .await
        .unwrap_err();
    let TokenError::Unreachable(inner) = &error else {
        panic!("{error}")
    };
    assert!(
        inner.to_string().contains("another node is refreshing"),
        "{inner}"
    );
    held.rollback().await.unwrap();
    let token: AccessToken = StoredTokens::in_vault(Arc::new(tokens), "work")
        .token()
        .await
        .unwrap();
    assert_eq!(token.secret.expose(), "SECRET-access-1");
}
