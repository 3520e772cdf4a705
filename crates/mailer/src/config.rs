//! [`Mailer::from_config`]: an account of the command line's configuration
//! file, with the tokens `apimail auth login` stored, resolved by the
//! account layer exactly as the command line resolves it.

use std::path::Path;

use apimail_account::Context;
use apimail_core::retry::RetryPolicy;

use crate::limited::Limited;
use crate::{Error, Mailer};

pub(crate) async fn mailer(path: Option<&Path>, account: Option<&str>) -> Result<Mailer, Error> {
    apimail_account::set_env_http_timeouts();
    let config_path = apimail_account::config::path(path)?;
    let config = apimail_account::config::load(&config_path)?;
    let ctx = Context::new(config_path, config);
    let name = account
        .map(str::to_owned)
        .or_else(|| ctx.config.default_account.clone())
        .ok_or_else(|| {
            Error::config(format!(
                "{} names no default_account; pass an account name",
                ctx.config_path.display()
            ))
        })?;
    let resolved = apimail_account::resolve_account(&ctx, &name).await?;
    let retry = apimail_account::retry_policy(&ctx.config, RetryPolicy::standard())?;
    Mailer::new(Limited::new(resolved.sender), retry, None, None)
}

impl Mailer {
    /// A mailer for `account` of the command line's configuration file
    /// (`None`: its `default_account`), with the tokens `apimail auth
    /// login` stored (`APIMAIL_DATA_DIR`). `path` `None` is where the
    /// command line looks: `$APIMAIL_CONFIG`, else the platform's
    /// configuration directory.
    pub async fn from_config(
        path: Option<&std::path::Path>,
        account: Option<&str>,
    ) -> Result<Mailer, Error> {
        mailer(path, account).await
    }
}
