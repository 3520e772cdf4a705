//! Sign in again from the console, for an account whose authorization
//! failed or is ending: the process's own login flows ([`SignIn`]: the
//! CLI runs `apimail auth login`'s) report through [`Progress`] what the
//! page shows: Microsoft's device code, or Google's authorization link
//! with a form for the address the browser shows afterwards (as
//! `--no-browser` reads it from the terminal). A browser on the console's
//! own machine is redirected straight to the login's loopback listener.
//! The page never shows a token; afterwards the account's held mail goes
//! out (the flow releases it).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use apimail_core::oauth::DeviceCode;
use serde::Serialize;
use tokio::sync::mpsc;
use url::Url;

use crate::events::Events;

/// A running sign-in: `Ok` with what to tell the administrator (the
/// account, the held messages released), or `Err` with why it failed.
pub type Signing = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'static>>;

/// The login flows (the CLI: `apimail auth login`'s, for the account's
/// own settings).
pub trait SignIn: Send + Sync {
    /// Runs the sign-in of `account` to its end, telling `progress` what
    /// the administrator must do.
    fn run(&self, account: String, progress: Progress) -> Signing;
}

/// Where a sign-in stands, as its page shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub(crate) enum Step {
    Starting,
    DeviceCode {
        uri: String,
        code: String,
        minutes: u64,
    },
    Link {
        url: String,
        redirect: String,
    },
    Done {
        text: String,
    },
    Failed {
        error: String,
    },
}

#[derive(Debug)]
pub(crate) struct Flow {
    pub(crate) step: Step,
    pub(crate) paste: Option<mpsc::UnboundedSender<String>>,
}

/// Every account's sign-in, as far as it got.
#[derive(Debug, Default)]
pub(crate) struct Flows(pub(crate) Mutex<HashMap<String, Flow>>);

impl Flows {
    fn set(&self, account: &str, step: Step) {
        if let Ok(mut flows) = self.0.lock()
            && let Some(flow) = flows.get_mut(account)
        {
            flow.step = step;
        }
    }
}

/// What a running login tells the console.
#[derive(Clone)]
pub struct Progress {
    pub(crate) flows: Arc<Flows>,
    pub(crate) events: Arc<Events>,
    pub(crate) account: String,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("account", &self.account)
            .finish()
    }
}

impl Progress {
    /// Microsoft's device code: the page shows where to go and the code.
    pub fn device_code(&self, code: &DeviceCode) {
        self.flows.set(
            &self.account,
            Step::DeviceCode {
                uri: code.verification_uri.clone(),
                code: code.user_code.clone(),
                minutes: code.expires_in.as_secs().div_ceil(60),
            },
        );
        self.events.signin_changed();
    }

    /// The authorization link and the redirect address it ends at.
    pub fn authorize_link(&self, url: &Url, redirect: &str) {
        self.flows.set(
            &self.account,
            Step::Link {
                url: url.to_string(),
                redirect: redirect.to_owned(),
            },
        );
        self.events.signin_changed();
    }

    /// The addresses the administrator pastes into the page, for the
    /// login's paste source (`oauth::login_with_pasted_redirect`).
    pub fn pasted(&self) -> mpsc::UnboundedReceiver<String> {
        let (sender, receiver) = mpsc::unbounded_channel();
        if let Ok(mut flows) = self.flows.0.lock()
            && let Some(flow) = flows.get_mut(&self.account)
        {
            flow.paste = Some(sender);
        }
        receiver
    }
}
