//! Microsoft's national clouds: where to sign in, where Graph lives, and
//! the scope strings each one expects.
//!
//! Scopes always name the cloud's real Graph root (`https://graph.microsoft.com/Mail.Send`),
//! even when requests go to an overridden API URL such as a local fake:
//! the scope is a resource identifier that Entra ID checks, not an address.

use std::fmt;
use std::str::FromStr;

use url::Url;

/// A Microsoft cloud: each has its own sign-in authority and Graph root,
/// and tokens from one are useless in another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Cloud {
    /// The global service (also Microsoft 365 GCC). The only cloud for
    /// personal Microsoft accounts.
    #[default]
    Global,
    /// US Government L4 (GCC High).
    UsGov,
    /// US Government L5 (DoD).
    UsGovDod,
    /// China, operated by 21Vianet.
    China,
}

impl Cloud {
    /// Every cloud, in the order `--help` lists them.
    pub const ALL: [Cloud; 4] = [Cloud::Global, Cloud::UsGov, Cloud::UsGovDod, Cloud::China];

    /// The name [`FromStr`] accepts: `global`, `usgov`, `usgov-dod`, `china`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Global => "global",
            Cloud::UsGov => "usgov",
            Cloud::UsGovDod => "usgov-dod",
            Cloud::China => "china",
        }
    }

    /// The sign-in authority (Entra ID), without a tenant.
    pub fn login_url(self) -> Url {
        parse_static(match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::UsGov | Cloud::UsGovDod => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        })
    }

    /// The Microsoft Graph root, without the `/v1.0` version segment.
    pub fn graph_url(self) -> Url {
        parse_static(self.graph_root())
    }

    /// [`graph_url`](Self::graph_url) as text, without a trailing slash:
    /// the prefix of every scope string.
    fn graph_root(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::UsGov => "https://graph.microsoft.us",
            Cloud::UsGovDod => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }
}

fn parse_static(text: &'static str) -> Url {
    Url::parse(text).expect("a built-in URL parses")
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cloud name that is not one of `global`, `usgov`, `usgov-dod`, `china`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Microsoft cloud `{0}`; expected one of: global, usgov, usgov-dod, china")]
pub struct UnknownCloud(pub String);

impl FromStr for Cloud {
    type Err = UnknownCloud;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cloud::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownCloud(s.to_owned()))
    }
}

/// `{authority}/{tenant}/oauth2/v2.0/authorize`.
///
/// `authority` is a cloud's [`login_url`](Cloud::login_url) or an override
/// such as `http://127.0.0.1:PORT/prefix`; any path it has is kept. The
/// tenant (`common`, `organizations`, `consumers`, a tenant id or domain)
/// is one percent-encoded path segment.
pub fn authorize_url(authority: &Url, tenant: &str) -> Url {
    endpoint(authority, tenant, "authorize")
}

/// `{authority}/{tenant}/oauth2/v2.0/token`; see [`authorize_url`].
pub fn token_url(authority: &Url, tenant: &str) -> Url {
    endpoint(authority, tenant, "token")
}

/// `{authority}/{tenant}/oauth2/v2.0/devicecode`; see [`authorize_url`].
pub fn device_code_url(authority: &Url, tenant: &str) -> Url {
    endpoint(authority, tenant, "devicecode")
}

/// `{authority}/{tenant}/adminconsent?client_id=…`: the page where an
/// administrator grants the app's permissions for the whole tenant
/// ("Grant tenant-wide admin consent", Microsoft Entra docs). `common` and
/// `consumers` have no administrator, so they become `organizations`.
pub fn admin_consent_url(authority: &Url, tenant: &str, client_id: &str) -> Url {
    let tenant = match tenant {
        "common" | "consumers" => "organizations",
        other => other,
    };
    let mut url = authority.clone();
    url.set_fragment(None);
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend([tenant, "adminconsent"]);
    }
    url.query_pairs_mut()
        .clear()
        .append_pair("client_id", client_id);
    url
}

fn endpoint(authority: &Url, tenant: &str, last: &str) -> Url {
    let mut url = authority.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .push(tenant)
            .extend(["oauth2", "v2.0", last]);
    }
    url
}

/// The delegated scopes to ask for at sign-in: `openid email` (an
/// `id_token` with the address, which a personal account's opaque access
/// token does not carry; users may consent to both themselves),
/// `offline_access` (for a refresh token) and `{graph}/Mail.Send`, plus `{graph}/Mail.ReadWrite`
/// when messages over Graph's 4 MB request limit must be sendable (they
/// go through a draft, which needs it).
pub fn delegated_scopes(cloud: Cloud, large_messages: bool) -> Vec<String> {
    let root = cloud.graph_root();
    let mut scopes: Vec<String> = ["openid", "email", "offline_access"]
        .map(str::to_owned)
        .to_vec();
    scopes.push(format!("{root}/Mail.Send"));
    if large_messages {
        scopes.push(format!("{root}/Mail.ReadWrite"));
    }
    scopes
}

/// The app-only (client credentials) scope: `{graph}/.default`, i.e.
/// every application permission an admin granted.
pub fn app_scope(cloud: Cloud) -> String {
    format!("{}/.default", cloud.graph_root())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_consent_url_names_tenant_and_client() {
        let authority = Url::parse("https://login.microsoftonline.com/").unwrap();
        assert_eq!(
            admin_consent_url(&authority, "contoso.com", "abc").as_str(),
            "https://login.microsoftonline.com/contoso.com/adminconsent?client_id=abc"
        );
        assert_eq!(
            admin_consent_url(&authority, "common", "abc").as_str(),
            "https://login.microsoftonline.com/organizations/adminconsent?client_id=abc"
        );
    }

    #[test]
    fn names_round_trip() {
        for cloud in Cloud::ALL {
            assert_eq!(cloud.as_str().parse::<Cloud>(), Ok(cloud));
            assert_eq!(cloud.to_string(), cloud.as_str());
        }
        assert_eq!("USGov-DoD".parse::<Cloud>(), Ok(Cloud::UsGovDod));
        let error = "germany".parse::<Cloud>().unwrap_err();
        assert!(error.to_string().contains("usgov-dod"), "{error}");
    }

    #[test]
    fn roots_per_cloud() {
        let pairs: Vec<(String, String)> = Cloud::ALL
            .into_iter()
            .map(|c| (c.login_url().to_string(), c.graph_url().to_string()))
            .collect();
        assert_eq!(
            pairs,
            [
                (
                    "https://login.microsoftonline.com/",
                    "https://graph.microsoft.com/"
                ),
                (
                    "https://login.microsoftonline.us/",
                    "https://graph.microsoft.us/"
                ),
                (
                    "https://login.microsoftonline.us/",
                    "https://dod-graph.microsoft.us/"
                ),
                (
                    "https://login.chinacloudapi.cn/",
                    "https://microsoftgraph.chinacloudapi.cn/"
                ),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }

    #[test]
    fn authority_urls_keep_prefixes() {
        let global = Cloud::Global.login_url();
        assert_eq!(
            authorize_url(&global, "organizations").as_str(),
            "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize"
        );
        assert_eq!(
            token_url(&global, "contoso.onmicrosoft.com").as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        let fake = Url::parse("http://127.0.0.1:8080/aad/").unwrap();
        assert_eq!(
            device_code_url(&fake, "common").as_str(),
            "http://127.0.0.1:8080/aad/common/oauth2/v2.0/devicecode"
        );
        let fake = Url::parse("http://127.0.0.1:8080/aad?x=1").unwrap();
        assert_eq!(
            token_url(&fake, "a/b").as_str(),
            "http://127.0.0.1:8080/aad/a%2Fb/oauth2/v2.0/token"
        );
    }

    #[test]
    fn scopes_name_the_real_graph_root() {
        assert_eq!(
            delegated_scopes(Cloud::Global, false),
            [
                "openid",
                "email",
                "offline_access",
                "https://graph.microsoft.com/Mail.Send"
            ]
        );
        assert_eq!(
            delegated_scopes(Cloud::China, true),
            [
                "openid",
                "email",
                "offline_access",
                "https://microsoftgraph.chinacloudapi.cn/Mail.Send",
                "https://microsoftgraph.chinacloudapi.cn/Mail.ReadWrite"
            ]
        );
        assert_eq!(
            app_scope(Cloud::UsGovDod),
            "https://dod-graph.microsoft.us/.default"
        );
    }
}
