//! The console's two languages (English and Japanese, from `Accept-Language`
//! or the switch) and its times, shown in the configured time zone.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// A language of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// Japanese.
    Ja,
}

impl Lang {
    /// `en` or `ja`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        }
    }

    /// The language a code names, if it is one of ours.
    pub fn from_code(code: &str) -> Option<Lang> {
        match code.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Lang::En),
            "ja" => Some(Lang::Ja),
            _ => None,
        }
    }

    /// The first of ours in an `Accept-Language` header, by quality
    /// (`ja,en-US;q=0.8` → Japanese); English if none.
    pub fn from_accept_language(header: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or_default().trim();
            let primary = tag.split('-').next().unwrap_or_default();
            let quality = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if let Some(lang) = Lang::from_code(primary)
                && quality > 0.0
                && best.is_none_or(|(q, _)| quality > q)
            {
                best = Some((quality, lang));
            }
        }
        best.map_or(Lang::En, |(_, lang)| lang)
    }

    /// Every text of the pages in this language, by key.
    pub fn texts(self) -> BTreeMap<&'static str, &'static str> {
        TEXTS
            .iter()
            .chain(ADMIN_TEXTS)
            .map(|(key, en, ja)| (*key, if self == Lang::Ja { *ja } else { *en }))
            .collect()
    }

    /// One text by key (the key itself if there is none).
    pub fn text(self, key: &'static str) -> &'static str {
        TEXTS
            .iter()
            .chain(ADMIN_TEXTS)
            .find(|(k, _, _)| *k == key)
            .map_or(key, |(_, en, ja)| if self == Lang::Ja { ja } else { en })
    }
}

/// (key, English, Japanese).
const TEXTS: &[(&str, &str, &str)] = &[
    ("console", "apimail console", "apimail 管理画面"),
    ("overview", "Overview", "概要"),
    ("log", "Delivery log", "送信ログ"),
    ("sign_in", "Sign in", "ログイン"),
    ("sign_out", "Sign out", "ログアウト"),
    ("user", "User name", "ユーザー名"),
    ("password", "Password", "パスワード"),
    (
        "login_failed",
        "Wrong user name or password.",
        "ユーザー名またはパスワードが違います。",
    ),
    (
        "locked",
        "Too many failed sign-ins from this address. Try again later.",
        "このアドレスからのログイン失敗が多すぎます。しばらくしてから再度お試しください。",
    ),
    ("accounts", "Accounts", "アカウント"),
    (
        "no_accounts",
        "No accounts are configured.",
        "アカウントが設定されていません。",
    ),
    ("name", "Name", "名前"),
    ("provider", "Provider", "プロバイダー"),
    ("address", "Address", "アドレス"),
    ("authorization", "Authorization", "認可"),
    ("auth_ok", "authorized", "認可済み"),
    (
        "auth_refused",
        "refused: sign in again",
        "拒否されました: 再ログインが必要です",
    ),
    ("auth_missing", "not signed in", "未ログイン"),
    (
        "auth_app_only",
        "app-only (no sign-in)",
        "アプリのみ (ログイン不要)",
    ),
    (
        "auth_unreadable",
        "token file unreadable",
        "トークンファイルを読めません",
    ),
    ("queue", "Queue", "キュー"),
    ("unreadable", "unreadable", "読めないエントリ"),
    ("last_24h", "Last 24 hours", "過去24時間"),
    ("last_7d", "Last 7 days", "過去7日間"),
    ("time", "Time", "日時"),
    ("outcome", "Outcome", "結果"),
    ("from", "From", "差出人"),
    ("recipients", "Recipients", "宛先"),
    ("subject", "Subject", "件名"),
    ("account", "Account", "アカウント"),
    ("client", "Client", "クライアント"),
    ("size", "Size", "サイズ"),
    ("attempts", "Attempts", "試行"),
    ("provider_id", "Provider id", "プロバイダーID"),
    ("error", "Error", "エラー"),
    ("filter", "Filter", "絞り込み"),
    ("any", "any", "すべて"),
    ("sender", "Sender", "差出人"),
    ("recipient", "Recipient", "宛先"),
    ("since", "Since", "開始"),
    ("until", "Until", "終了"),
    (
        "search",
        "Subject or address contains",
        "件名・アドレスに含む",
    ),
    ("download_csv", "Download CSV", "CSVダウンロード"),
    ("older", "Older", "さらに古い"),
    ("newest", "Newest", "最新"),
    (
        "no_messages",
        "No messages match.",
        "該当するメッセージはありません。",
    ),
    ("message", "Message", "メッセージ"),
    ("queue_id", "Queue id", "キューID"),
    ("message_id", "Message-ID", "Message-ID"),
    ("timeline", "Timeline", "経過"),
    (
        "original_from",
        "Sent as the account; the client's From was",
        "アカウントのアドレスで送信（元の差出人）",
    ),
    (
        "possible_duplicate",
        "possible duplicate: an earlier copy may have arrived",
        "重複の可能性: 先に1通届いているかもしれません",
    ),
    ("headers", "Headers", "ヘッダー"),
    (
        "not_in_outbox",
        "The message is no longer in the outbox; its headers are not kept.",
        "メッセージは送信キューにありません。ヘッダーは保存されていません。",
    ),
    ("not_found", "Not found.", "見つかりません。"),
    (
        "forbidden",
        "Refused: the form has expired. Reload the page and try again.",
        "拒否されました: フォームの有効期限が切れています。再読み込みしてやり直してください。",
    ),
    (
        "bad_request",
        "The request is not valid",
        "リクエストが正しくありません",
    ),
    (
        "internal",
        "The console could not answer",
        "管理画面が応答できませんでした",
    ),
    ("language", "日本語", "English"),
    ("time_zone", "Times in", "表示タイムゾーン"),
    ("o_sent", "sent", "送信済み"),
    ("o_queued", "queued", "待機中"),
    ("o_held", "held", "保留"),
    ("o_failed", "failed", "失敗"),
    ("o_uncertain", "uncertain", "不明"),
    ("o_dropped", "dropped", "削除済み"),
    ("o_verified_sent", "verified sent", "送信確認済み"),
];

/// (key, English, Japanese): the queue, relay users, checks, sign-in and
/// alerts pages.
const ADMIN_TEXTS: &[(&str, &str, &str)] = &[
    ("state", "State", "状態"),
    (
        "queue_search",
        "Id, address or error contains",
        "ID・アドレス・エラーに含む",
    ),
    ("matching", "Matching entries", "該当するエントリ"),
    (
        "retry_all",
        "Retry all matching now",
        "該当をすべて今すぐ再送",
    ),
    ("drop_all", "Drop all matching", "該当をすべて削除"),
    ("waits_for", "Waits for", "待っているもの"),
    ("accepted", "Accepted", "受付"),
    ("actions", "Actions", "操作"),
    ("retry_now", "Retry now", "今すぐ再送"),
    ("drop", "Drop", "削除"),
    (
        "more_rows",
        "Not shown (actions still apply to them)",
        "表示されていない件数 (操作は適用されます)",
    ),
    (
        "queue_empty",
        "No entries match.",
        "該当するエントリはありません。",
    ),
    ("confirm", "Confirm", "確認"),
    (
        "confirm_drop",
        "Drop these messages for good? They will not be sent. Messages:",
        "これらのメッセージを削除しますか? 送信されません。件数:",
    ),
    (
        "confirm_retry",
        "Send these messages again now? Messages:",
        "これらのメッセージを今すぐ再送しますか? 件数:",
    ),
    ("yes_drop", "Yes, drop them", "削除する"),
    ("yes_retry", "Yes, retry them now", "今すぐ再送する"),
    ("cancel", "Cancel", "キャンセル"),
    ("done_retry", "Due now", "再送予定に入れました"),
    ("done_drop", "Dropped", "削除しました"),
    (
        "done_busy",
        "busy with another process, try again",
        "他のプロセスが処理中 (再度お試しください)",
    ),
    (
        "done_gone",
        "no longer in the outbox",
        "すでにキューにありません",
    ),
    ("w_failed", "nothing: given up", "なし: 送信を断念"),
    (
        "w_identity",
        "its sender to be configured again",
        "送信元の再設定",
    ),
    (
        "w_login",
        "a new sign-in of its account",
        "アカウントの再ログイン",
    ),
    (
        "w_person",
        "a person: it may have been sent",
        "人の判断: 送信済みの可能性あり",
    ),
    ("w_check", "a check whether it was sent", "送信済みかの確認"),
    ("w_next_attempt", "its next attempt at", "次の試行:"),
    ("checks", "Checks", "診断"),
    (
        "checks_unavailable",
        "This console cannot run the checks; run `apimail doctor`.",
        "この管理画面では診断を実行できません。`apimail doctor` を実行してください。",
    ),
    ("default_account", "the default account", "既定のアカウント"),
    ("run_again", "Run the checks", "診断を実行"),
    ("checks_failed", "Checks failed", "失敗した診断"),
    (
        "checks_passed",
        "Every check passed.",
        "すべての診断に合格しました。",
    ),
    ("c_ok", "ok", "OK"),
    ("c_warn", "warning", "注意"),
    ("c_fail", "failed", "失敗"),
    ("hint", "hint", "ヒント"),
    ("sign_in_again", "Sign in again", "再ログイン"),
    ("si_title", "Sign in again", "再ログイン"),
    (
        "si_intro",
        "Runs the same sign-in as `apimail auth login` for this account. Its held mail goes out afterwards.",
        "このアカウントで `apimail auth login` と同じログインを行います。完了後、保留中のメールが送信されます。",
    ),
    ("si_start", "Start signing in", "ログインを開始"),
    (
        "si_starting",
        "Starting the sign-in…",
        "ログインを開始しています…",
    ),
    (
        "si_device",
        "On any device, open this page and enter the code:",
        "任意の端末で次のページを開き、コードを入力してください:",
    ),
    (
        "si_expires",
        "The code expires in (minutes)",
        "コードの有効期限 (分)",
    ),
    (
        "si_link",
        "Open this link, sign in and allow apimail:",
        "次のリンクを開き、ログインして apimail を許可してください:",
    ),
    (
        "si_paste",
        "Afterwards the browser shows an address starting with the one below (it may say it cannot connect). Paste that whole address here:",
        "許可後、ブラウザーに下記で始まるアドレスが表示されます (接続できないと表示されることがあります)。そのアドレス全体をここに貼り付けてください:",
    ),
    ("si_send", "Finish signing in", "ログインを完了"),
    (
        "si_same_machine",
        "On the console's own machine the browser finishes by itself.",
        "管理画面と同じマシンのブラウザーでは自動で完了します。",
    ),
    ("si_done", "Signed in", "ログインしました"),
    ("si_failed", "The sign-in failed", "ログインに失敗しました"),
    ("si_again", "Try again", "やり直す"),
    (
        "si_not_waiting",
        "No sign-in of this account is waiting for an address; start it again.",
        "このアカウントのログインはアドレスを待っていません。もう一度開始してください。",
    ),
    ("alerts", "Alerts", "警告"),
    (
        "alert_not_sent",
        "An alert could not be sent",
        "警告を送信できませんでした",
    ),
    ("relay_users", "Relay users", "リレーユーザー"),
    (
        "ru_not_configured",
        "This console does not manage relay users.",
        "この管理画面ではリレーユーザーを管理していません。",
    ),
    (
        "ru_none",
        "There are no relay users yet.",
        "リレーユーザーはまだいません。",
    ),
    ("last_use", "Last use", "最終利用"),
    (
        "never_seen",
        "not in the recent log",
        "最近のログにありません",
    ),
    ("limits", "Limits", "制限"),
    ("per_minute", "messages a minute", "通/分"),
    (
        "other_senders_refused",
        "other senders refused",
        "他の差出人は拒否",
    ),
    (
        "other_senders_rewritten",
        "other senders rewritten",
        "他の差出人は書き換え",
    ),
    ("allowed_from", "Allowed senders", "許可する差出人"),
    (
        "allowed_from_hint",
        "*@example.com, scanner@*",
        "*@example.com, scanner@*",
    ),
    (
        "ru_account_missing",
        "not in the configuration",
        "設定にありません",
    ),
    ("ru_add", "Add a relay user", "リレーユーザーを追加"),
    ("password_again", "Password again", "パスワード (確認)"),
    (
        "refuse_other_senders",
        "Refuse other senders (instead of rewriting them)",
        "他の差出人を拒否する (書き換えない)",
    ),
    ("add", "Add", "追加"),
    ("reset_password", "Reset password", "パスワード再設定"),
    ("new_password", "New password", "新しいパスワード"),
    ("remove", "Remove", "削除"),
    (
        "ru_confirm_remove",
        "Remove this relay user? Devices using it can no longer send:",
        "このリレーユーザーを削除しますか? このユーザーを使う機器は送信できなくなります:",
    ),
    ("yes_remove", "Yes, remove", "削除する"),
    (
        "ru_added",
        "Saved relay user",
        "リレーユーザーを保存しました",
    ),
    (
        "ru_reset_done",
        "New password set for",
        "パスワードを再設定しました:",
    ),
    (
        "ru_removed",
        "Removed relay user",
        "リレーユーザーを削除しました",
    ),
    (
        "ru_reload",
        "A relay running elsewhere reads the change at its next reload (SIGHUP).",
        "別に動作中のリレーは次の再読み込み (SIGHUP) で変更を反映します。",
    ),
    (
        "ru_bad_name",
        "That name cannot be used: 1 to 64 visible characters, no spaces.",
        "この名前は使えません: 空白なしの1〜64文字にしてください。",
    ),
    (
        "ru_empty_password",
        "Type a password.",
        "パスワードを入力してください。",
    ),
    (
        "ru_passwords_differ",
        "The two passwords differ.",
        "2つのパスワードが一致しません。",
    ),
    (
        "ru_bad_limit",
        "The limit must be a whole number above 0, or empty.",
        "制限は1以上の整数か空欄にしてください。",
    ),
    (
        "ru_bad_account",
        "Choose one of the configured accounts.",
        "設定済みのアカウントを選んでください。",
    ),
    (
        "ru_no_such_user",
        "There is no relay user of that name.",
        "その名前のリレーユーザーはいません。",
    ),
    (
        "ru_file_error",
        "The relay users file cannot be read or written; see the console's log.",
        "リレーユーザーのファイルを読み書きできません。管理画面のログを確認してください。",
    ),
];

/// `unix` in `zone` as `2026-11-29 17:15:00`.
pub fn local_time(zone: &TimeZone, unix: i64) -> String {
    let offset = jiff::Timestamp::from_second(unix)
        .map(|t| zone.to_offset(t).seconds())
        .unwrap_or(0);
    let offset = UtcOffset::from_whole_seconds(offset).unwrap_or(UtcOffset::UTC);
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default()
}

/// The offset of `zone` from UTC at `unix`, in seconds.
pub fn offset_at(zone: &TimeZone, unix: i64) -> i64 {
    jiff::Timestamp::from_second(unix)
        .map(|t| i64::from(zone.to_offset(t).seconds()))
        .unwrap_or(0)
}

/// The zone's name for people (`Asia/Tokyo`, else `UTC+09:00`).
pub fn zone_name(zone: &TimeZone, unix: i64) -> String {
    match zone.iana_name() {
        Some(name) => name.to_owned(),
        None => {
            let seconds = offset_at(zone, unix);
            let sign = if seconds < 0 { '-' } else { '+' };
            let minutes = seconds.abs() / 60;
            format!("UTC{sign}{:02}:{:02}", minutes / 60, minutes % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_come_from_the_header() {
        assert_eq!(Lang::from_accept_language("ja,en-US;q=0.8"), Lang::Ja);
        assert_eq!(Lang::from_accept_language("en-GB,ja;q=0.5"), Lang::En);
        assert_eq!(Lang::from_accept_language("fr,ja;q=0.3"), Lang::Ja);
        assert_eq!(Lang::from_accept_language("fr"), Lang::En);
        assert_eq!(Lang::from_accept_language("ja;q=0"), Lang::En);
    }

    #[test]
    fn every_text_has_both_languages() {
        for (key, en, ja) in TEXTS.iter().chain(ADMIN_TEXTS) {
            assert!(!en.is_empty() && !ja.is_empty(), "{key}");
        }
        assert_eq!(Lang::Ja.text("log"), "送信ログ");
    }

    #[test]
    fn times_are_shown_in_the_zone() {
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        assert_eq!(local_time(&tokyo, 1_780_000_000), "2026-05-29 05:26:40");
        assert_eq!(
            local_time(&TimeZone::UTC, 1_780_000_000),
            "2026-05-28 20:26:40"
        );
        assert_eq!(zone_name(&tokyo, 0), "Asia/Tokyo");
    }
}
