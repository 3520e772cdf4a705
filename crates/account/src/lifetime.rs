//! How long an authorization lives unused: Google ends a refresh token
//! unused for 6 months, Microsoft one unused for 90 days. `auth status`,
//! `doctor` and the console's alerts ask here.

use apimail_core::token_store::StoredToken;

use crate::Provider;

const DAY: i64 = 86_400;

/// How many days `provider` keeps a refresh token nobody uses.
pub fn unused_days(provider: Provider) -> i64 {
    match provider {
        Provider::Gmail => 182,
        Provider::Graph => 90,
    }
}

/// When `stored` ends unless it is used before (the last refresh, else the
/// authorization, plus [`unused_days`]); `None` if neither is recorded or
/// the provider is not known.
pub fn unused_end(stored: &StoredToken) -> Option<i64> {
    let provider = match stored.provider.as_str() {
        "gmail" => Provider::Gmail,
        "graph" => Provider::Graph,
        _ => return None,
    };
    let used = stored.refreshed_at.or(stored.authorized_at)?;
    Some(used + unused_days(provider) * DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(provider: &str, authorized: Option<i64>, refreshed: Option<i64>) -> StoredToken {
        StoredToken {
            account: "a".to_owned(),
            provider: provider.to_owned(),
            address: None,
            client_id: "c".to_owned(),
            client_secret: None,
            token_url: "https://example.com/token".to_owned(),
            scopes: Vec::new(),
            refresh_token: None,
            access_token: None,
            expires_at: None,
            updated_at: 0,
            authorized_at: authorized,
            refreshed_at: refreshed,
            refresh_refused: None,
        }
    }

    #[test]
    fn an_authorization_ends_its_providers_days_after_its_last_use() {
        assert_eq!(unused_end(&stored("graph", Some(0), None)), Some(90 * DAY));
        assert_eq!(
            unused_end(&stored("gmail", Some(0), Some(DAY))),
            Some(183 * DAY)
        );
        assert_eq!(unused_end(&stored("gmail", None, None)), None);
        assert_eq!(unused_end(&stored("other", Some(0), None)), None);
    }
}
