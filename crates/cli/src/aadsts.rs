//! Microsoft identity platform error codes (AADSTS…): what each one that
//! setup meets means, and what fixes it.

use url::Url;

use crate::exit::Exit;

/// The number of the first `AADSTS<digits>` in `text`.
pub(crate) fn code(text: &str) -> Option<u32> {
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
pub(crate) fn advice(
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
