//! The relay users page: each user's account, last use and limits; add,
//! remove (after a confirmation) and reset a password. The file and its
//! rules are `apimail_relay::users::Users`, as `apimail relay user` uses
//! them; a running relay picks changes up on its next reload.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apimail_core::Secret;
use apimail_core::journal::{Journal, parse_line};
use apimail_relay::users::{RelayUser, Users, UsersError};
use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::guard::{Admin, PageLang};
use crate::i18n::{Lang, local_time};
use crate::pages::{common, refusal, render};
use crate::state::Console;

/// Journal files read back for the users' last use, newest first.
const LAST_USE_FILES: usize = 2;

/// When each SMTP user last sent, from the newest journal files.
fn last_use(journal: &Journal, names: &[String]) -> HashMap<String, i64> {
    let mut seen: HashMap<String, i64> = HashMap::new();
    let Ok(files) = journal.files() else {
        return seen;
    };
    for file in files.into_iter().rev().take(LAST_USE_FILES) {
        for line in BufReader::new(file.file).split(b'\n').map_while(Result::ok) {
            // Only lines naming an SMTP user are parsed.
            if !line.windows(11).any(|w| w == b"\"smtp_user\"") {
                continue;
            }
            if let Some(record) = parse_line(&line)
                && let Some(user) = record.smtp_user
            {
                let time = seen.entry(user).or_insert(record.time);
                *time = (*time).max(record.time);
            }
        }
        if names.iter().all(|n| seen.contains_key(n)) {
            break;
        }
    }
    seen
}

#[derive(Debug, Serialize)]
struct UserView {
    name: String,
    account: String,
    account_missing: bool,
    last_use: Option<String>,
    allowed_from: String,
    rewrite_from: bool,
    messages_per_minute: Option<u32>,
}

/// `?done=` after an action: `added`, `reset`, `removed`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Done {
    done: String,
    name: String,
}

fn users_path(console: &Console) -> Option<PathBuf> {
    console.relay_users.clone()
}

fn load(path: &Path) -> Result<Users, UsersError> {
    Users::load(path)
}

fn users_error(console: &Console, lang: Lang, error: &UsersError) -> Response {
    let (status, key) = match error {
        UsersError::BadName(_) => (StatusCode::BAD_REQUEST, "ru_bad_name"),
        UsersError::EmptyPassword => (StatusCode::BAD_REQUEST, "ru_empty_password"),
        _ => {
            tracing::warn!("admin console: {error}");
            (StatusCode::INTERNAL_SERVER_ERROR, "ru_file_error")
        }
    };
    refusal(console, lang, status, key)
}

/// `GET /relay-users`.
pub(crate) async fn page(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    admin: Admin,
    Query(done): Query<Done>,
) -> Response {
    let Some(path) = users_path(&console) else {
        let ctx = context! { page => "relay_users", configured => false, ..common(&console, lang, Some(&admin)) };
        return render(&console, StatusCode::OK, "relay_users.html", ctx);
    };
    let journal = console.journal.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        load(&path).map(|users| {
            let names: Vec<String> = users.list().iter().map(|u| u.name.clone()).collect();
            let seen = last_use(&journal, &names);
            (users.list().to_vec(), seen)
        })
    })
    .await;
    let (users, seen) = match loaded {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => return users_error(&console, lang, &error),
        Err(_) => {
            return refusal(
                &console,
                lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            );
        }
    };
    let rows: Vec<UserView> = users
        .iter()
        .map(|u| UserView {
            name: u.name.clone(),
            account: u.account.clone(),
            account_missing: !console.accounts.iter().any(|a| a.name == u.account),
            last_use: seen.get(&u.name).map(|t| local_time(&console.zone, *t)),
            allowed_from: u.allowed_from.join(", "),
            rewrite_from: u.rewrite_from,
            messages_per_minute: u.messages_per_minute,
        })
        .collect();
    let done_text = match done.done.as_str() {
        "added" => Some(lang.text("ru_added")),
        "reset" => Some(lang.text("ru_reset_done")),
        "removed" => Some(lang.text("ru_removed")),
        _ => None,
    };
    let accounts: Vec<String> = console.accounts.iter().map(|a| a.name.clone()).collect();
    let ctx = context! {
        page => "relay_users",
        configured => true,
        rows => rows,
        accounts => accounts,
        done => done_text,
        done_name => done.name,
        ..common(&console, lang, Some(&admin))
    };
    render(&console, StatusCode::OK, "relay_users.html", ctx)
}

/// The forms' fields: `action` is `add`, `reset` or `remove`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct UserForm {
    csrf: String,
    action: String,
    name: String,
    account: String,
    password: Option<Secret>,
    again: Option<Secret>,
    allowed_from: String,
    /// Present (checked) when other senders are refused.
    refuse_other_senders: Option<String>,
    messages_per_minute: String,
    confirm: String,
}

/// `POST /relay-users`: add, reset a password, or remove (asked first).
pub(crate) async fn action(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    admin: Admin,
    Form(form): Form<UserForm>,
) -> Response {
    if !admin.csrf_ok(&form.csrf) {
        return refusal(&console, lang, StatusCode::FORBIDDEN, "forbidden");
    }
    let Some(path) = users_path(&console) else {
        return refusal(&console, lang, StatusCode::NOT_FOUND, "not_found");
    };
    let bad = |key: &'static str| refusal(&console, lang, StatusCode::BAD_REQUEST, key);
    let name = form.name.trim().to_owned();
    if form.action == "remove" && form.confirm != "yes" {
        let ctx = context! { page => "relay_users", name => name, ..common(&console, lang, Some(&admin)) };
        return render(&console, StatusCode::OK, "relay_user_remove.html", ctx);
    }
    let password = match form.action.as_str() {
        "add" | "reset" => {
            let typed = form.password.clone().unwrap_or_else(|| Secret::new(""));
            let again = form.again.clone().unwrap_or_else(|| Secret::new(""));
            if typed.expose() != again.expose() {
                return bad("ru_passwords_differ");
            }
            Some(typed)
        }
        "remove" => None,
        _ => return bad("bad_request"),
    };
    let limit = form.messages_per_minute.trim();
    let messages_per_minute = if limit.is_empty() {
        None
    } else {
        match limit.parse::<u32>() {
            Ok(n) if n > 0 => Some(n),
            _ => return bad("ru_bad_limit"),
        }
    };
    if form.action == "add" && !console.accounts.iter().any(|a| a.name == form.account) {
        return bad("ru_bad_account");
    }
    let action = form.action.clone();
    let allowed_from: Vec<String> = form
        .allowed_from
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let account = form.account.clone();
    let rewrite_from = form.refuse_other_senders.is_none();
    let user_name = name.clone();
    let changed = tokio::task::spawn_blocking(move || -> Result<bool, UsersError> {
        let mut users = load(&path)?;
        let known = match action.as_str() {
            "add" => {
                let user = RelayUser {
                    name: user_name,
                    password_hash: String::new(),
                    account,
                    allowed_from,
                    rewrite_from,
                    messages_per_minute,
                };
                users.add(user, password.as_ref().unwrap_or(&Secret::new("")))?;
                true
            }
            "reset" => match users.get(&user_name).cloned() {
                Some(user) => {
                    users.add(user, password.as_ref().unwrap_or(&Secret::new("")))?;
                    true
                }
                None => false,
            },
            _ => users.remove(&user_name),
        };
        if known {
            users.save()?;
        }
        Ok(known)
    })
    .await;
    match changed {
        Ok(Ok(true)) => {
            tracing::info!(
                "admin console: {} changed relay user {name} ({})",
                admin.user,
                form.action
            );
            if let Some(reload) = &console.relay_reload {
                reload();
            }
            let done = match form.action.as_str() {
                "add" => "added",
                "reset" => "reset",
                _ => "removed",
            };
            let query = serde_urlencoded::to_string([("done", done), ("name", name.as_str())])
                .unwrap_or_default();
            Redirect::to(&format!("/relay-users?{query}")).into_response()
        }
        Ok(Ok(false)) => refusal(&console, lang, StatusCode::NOT_FOUND, "ru_no_such_user"),
        Ok(Err(error)) => users_error(&console, lang, &error),
        Err(_) => refusal(
            &console,
            lang,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        ),
    }
}
