//! The alerts' rounds: which conditions hold now (the outbox, the token
//! store, the disk), and what changed since the last report, sent.

use std::sync::Arc;

use apimail_core::journal::rfc3339;
use apimail_core::now_unix;
use apimail_core::outbox::HoldKind;

use crate::alerts::{
    ALERTS_FILE, AlertConfig, AlertFailure, Condition, ENDING_WITHIN, ROUND, SETTLE, free_share,
    load_state, post_webhook, report, save_state,
};
use crate::shared;
use crate::state::Console;

/// The conditions that hold now.
pub(crate) fn conditions(console: &Console, config: &AlertConfig, now: i64) -> Vec<Condition> {
    let mut found = Vec::new();
    let entries = shared::list_blocking(console).unwrap_or_else(|error| {
        tracing::warn!("admin console alerts: {error}");
        Vec::new()
    });
    for account in console.accounts.iter().filter(|a| !a.app_only) {
        let Ok(Some(stored)) = console.token_store.load(&account.name) else {
            continue;
        };
        if let Some(reason) = &stored.refresh_refused {
            let held = entries
                .iter()
                .filter(|e| e.account.as_deref() == Some(account.name.as_str()))
                .filter(|e| e.hold_kind() == Some(HoldKind::Login))
                .count();
            if held > 0 {
                found.push(Condition {
                    key: format!("auth_failed:{}", account.name),
                    text: format!(
                        "account {}: the provider refused its authorization ({reason}); {held} message(s) held until someone signs in again",
                        account.name
                    ),
                });
            }
            continue;
        }
        if let Some(end) = apimail_account::lifetime::unused_end(&stored)
            && end - now <= ENDING_WITHIN
        {
            found.push(Condition {
                key: format!("auth_ending:{}", account.name),
                text: format!(
                    "account {}: its authorization ends on {} unless it is used or renewed before",
                    account.name,
                    rfc3339(end)
                ),
            });
        }
    }
    let limit = i64::from(config.queued_hours) * 3600;
    let old: Vec<_> = entries
        .iter()
        .filter(|e| now - e.created_at > limit)
        .collect();
    if let Some(oldest) = old.iter().min_by_key(|e| e.created_at) {
        found.push(Condition {
            key: "queued_long".to_owned(),
            text: format!(
                "{} message(s) queued longer than {} hours; the oldest, {}, since {}",
                old.len(),
                config.queued_hours,
                oldest.id.as_str(),
                rfc3339(oldest.created_at)
            ),
        });
    }
    if let Some(free) = free_share(&config.data_dir)
        && free * 100.0 < config.disk_free_percent
    {
        found.push(Condition {
            key: "disk_full".to_owned(),
            text: format!(
                "the data disk of {} is almost full: {:.1}% free",
                config.data_dir.display(),
                free * 100.0
            ),
        });
    }
    found
}

impl Console {
    /// Looks at the conditions once and sends what changed; the reports
    /// that could not be sent are kept for the overview. Without alerts
    /// configured, nothing.
    pub async fn alert_round(self: &Arc<Self>) {
        let Some(alerts) = self.alerts.clone() else {
            return;
        };
        let _one = alerts.round.lock().await;
        let (console, held) = (Arc::clone(self), Arc::clone(&alerts));
        let looked = tokio::task::spawn_blocking(move || {
            let now = now_unix();
            let found = conditions(&console, &held.config, now);
            let state = load_state(&console.dir.join(ALERTS_FILE));
            (found, state)
        })
        .await;
        let Ok((found, mut state)) = looked else {
            return;
        };
        let config = &alerts.config;
        for reported in state.conditions.values_mut() {
            reported.active = false;
        }
        for condition in &found {
            let entry = state.conditions.entry(condition.key.clone()).or_default();
            if !entry.mail && !entry.webhook {
                entry.text = condition.text.clone();
            }
            entry.active = true;
        }
        let mut failures = Vec::new();
        for reported in state.conditions.values_mut() {
            let (subject, body) = report(&reported.text, reported.active);
            match &config.mail {
                Some(mail) if reported.mail != reported.active => {
                    match mail.send(&subject, &body).await {
                        Ok(()) => reported.mail = reported.active,
                        Err(error) => failures.push(AlertFailure {
                            channel: "mail",
                            text: subject.clone(),
                            error,
                        }),
                    }
                }
                None => reported.mail = false,
                _ => {}
            }
            match &config.webhook {
                Some(url) if reported.webhook != reported.active => {
                    match post_webhook(url, &subject).await {
                        Ok(()) => reported.webhook = reported.active,
                        Err(error) => failures.push(AlertFailure {
                            channel: "webhook",
                            text: subject.clone(),
                            error,
                        }),
                    }
                }
                None => reported.webhook = false,
                _ => {}
            }
        }
        state
            .conditions
            .retain(|_, r| r.active || r.mail || r.webhook);
        for failure in &failures {
            tracing::warn!(
                "admin console: an alert could not be sent by {}: {}",
                failure.channel,
                failure.error
            );
        }
        let active: Vec<String> = found.into_iter().map(|c| c.text).collect();
        if let Ok(mut slot) = alerts.active.lock()
            && *slot != active
        {
            *slot = active;
            self.events.alerts_changed();
        }
        if let Ok(mut slot) = alerts.failures.lock() {
            *slot = failures;
        }
        let path = self.dir.join(ALERTS_FILE);
        let _ = tokio::task::spawn_blocking(move || save_state(&path, &state)).await;
    }

    /// Alert rounds every [`ROUND`], and [`SETTLE`] after a queue or
    /// sign-in change the console sees (its own actions; other processes'
    /// while live updates run), until the future is dropped.
    pub async fn watch_alerts(self: Arc<Self>) {
        let mut interval = tokio::time::interval(ROUND);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = self.events.alerts.notified() => {
                    // A burst of changes makes one round.
                    tokio::time::sleep(SETTLE).await;
                }
            }
            self.alert_round().await;
        }
    }
}
