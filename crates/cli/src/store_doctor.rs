//! `apimail doctor`'s checks of the shared store, when one is configured:
//! the connection (its URL shown without the password), the schema's
//! version, this machine's clock against the database's, and the clocks
//! of the other nodes seen recently.

use std::time::Duration;

use apimail_account::{Config, store_config, store_settings};
use apimail_store_postgres::{NodeSeen, Store, latest_version, redact_url};

use crate::exit::{Exit, Failure};
use crate::store::{settings_failure, store_failure};

/// A clock further than this from the database's is warned of.
pub const SKEW_WARN_SECS: f64 = 2.0;

/// Nodes seen within this long are listed.
const RECENT: Duration = Duration::from_secs(3600);

/// At most this many nodes are named (the skewed ones always are).
const NAMED: usize = 10;

/// The time synchronization hint.
const SYNC: &str = "turn on time synchronization (chrony or ntpd, or `timedatectl set-ntp true`)";

/// One check's outcome, as `apimail doctor` reports it.
pub enum Outcome {
    Ok(String),
    /// Passed, with something to do: the detail and a hint.
    Warn(String, String),
    /// The exit code, the detail and a hint.
    Fail(Exit, String, String),
}

/// The store's checks; none when no store is configured.
pub async fn checks(config: &Config) -> Vec<(&'static str, Outcome)> {
    let settings = match store_settings(config) {
        Ok(Some(settings)) => settings,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![("store", failed(settings_failure(e)))],
    };
    let shown = redact_url(settings.url.expose());
    let store = match Store::new(&store_config(&settings)) {
        Ok(store) => store,
        Err(e) => return vec![("store", failed(store_failure(e, &shown, settings.url_from)))],
    };
    let found = match store.schema_version().await {
        Ok(found) => found,
        Err(e) => return vec![("store", failed(store_failure(e, &shown, settings.url_from)))],
    };
    let mut checks = vec![(
        "store",
        Outcome::Ok(format!("{shown} answers ({})", settings.url_from)),
    )];
    checks.push(("store schema", schema(found, latest_version())));
    checks.push((
        "store clock",
        match store.clock_offset().await {
            Ok(offset) => own_clock(offset.offset_secs, offset.round_trip),
            Err(e) => failed(store_failure(e, &shown, settings.url_from)),
        },
    ));
    if found >= 2 {
        checks.push((
            "store nodes",
            match store.nodes_seen(RECENT).await {
                Ok(nodes) => nodes_clocks(&nodes),
                Err(e) => failed(store_failure(e, &shown, settings.url_from)),
            },
        ));
    }
    checks
}

/// A failure with its causes in the detail.
fn failed(failure: Failure) -> Outcome {
    Outcome::Fail(
        failure.exit,
        apimail_core::error_chain(&*failure.error),
        failure.hint.unwrap_or_default(),
    )
}

/// The schema's version `found` against the `needed` one.
fn schema(found: i64, needed: i64) -> Outcome {
    if found < needed {
        Outcome::Fail(
            Exit::Config,
            format!("the schema is at version {found}, this apimail needs {needed}"),
            "run `apimail store migrate` (or set `[store] migrate = true`)".to_owned(),
        )
    } else if found > needed {
        Outcome::Warn(
            format!("the schema is at version {found}, newer than this apimail's {needed}"),
            "upgrade apimail on this machine to the version the other nodes run".to_owned(),
        )
    } else {
        Outcome::Ok(format!("version {found} (current)"))
    }
}

/// "1.5 s ahead of" / "0.3 s behind".
fn ahead_or_behind(offset: f64) -> String {
    format!(
        "{:.1} s {}",
        offset.abs(),
        if offset > 0.0 { "ahead of" } else { "behind" }
    )
}

/// This machine's clock against the database's.
fn own_clock(offset: f64, round_trip: Duration) -> Outcome {
    let measured = format!("measured over a {} ms round trip", round_trip.as_millis());
    if offset.abs() > SKEW_WARN_SECS {
        Outcome::Warn(
            format!(
                "this machine's clock is {} the database's ({measured})",
                ahead_or_behind(offset)
            ),
            format!(
                "{SYNC} on this machine: the nodes' due times and leases depend on their clocks agreeing"
            ),
        )
    } else {
        Outcome::Ok(format!(
            "this machine's clock is within {:.1} s of the database's ({measured})",
            offset.abs()
        ))
    }
}

/// The nodes seen recently, and a warning naming those whose clock is off.
fn nodes_clocks(nodes: &[NodeSeen]) -> Outcome {
    if nodes.is_empty() {
        return Outcome::Ok("no node has opened the store in the last hour".to_owned());
    }
    let skewed: Vec<&NodeSeen> = nodes
        .iter()
        .filter(|n| n.offset_secs.abs() > SKEW_WARN_SECS)
        .collect();
    let describe = |n: &NodeSeen| {
        format!(
            "{} ({:+.1} s, seen {} s ago)",
            n.node,
            n.offset_secs,
            n.seen_secs_ago.max(0.0).round()
        )
    };
    let mut named: Vec<String> = skewed.iter().map(|n| describe(n)).collect();
    named.extend(
        nodes
            .iter()
            .filter(|n| n.offset_secs.abs() <= SKEW_WARN_SECS)
            .take(NAMED.saturating_sub(named.len()))
            .map(describe),
    );
    let more = nodes.len() - named.len();
    let more = if more > 0 {
        format!(", and {more} more")
    } else {
        String::new()
    };
    let detail = format!(
        "{} node{} seen in the last hour, clocks against the database's: {}{more}",
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" },
        named.join(", ")
    );
    if skewed.is_empty() {
        return Outcome::Ok(detail);
    }
    let which: Vec<String> = skewed
        .iter()
        .map(|n| format!("{} is {} it", n.node, ahead_or_behind(n.offset_secs)))
        .collect();
    Outcome::Warn(
        format!("{detail}; {}", which.join("; ")),
        format!(
            "{SYNC} on {}: leases and due times depend on the nodes' clocks agreeing (within {SKEW_WARN_SECS} s)",
            skewed
                .iter()
                .map(|n| n.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, offset_secs: f64) -> NodeSeen {
        NodeSeen {
            node: name.to_owned(),
            seen_secs_ago: 12.4,
            offset_secs,
        }
    }

    #[test]
    fn the_schema_behind_says_to_migrate() {
        match schema(0, 2) {
            Outcome::Fail(Exit::Config, detail, hint) => {
                assert!(detail.contains("version 0"), "{detail}");
                assert!(hint.contains("apimail store migrate"), "{hint}");
            }
            _ => panic!("a schema behind passed"),
        }
        assert!(matches!(schema(2, 2), Outcome::Ok(d) if d.contains("version 2")));
        assert!(matches!(schema(3, 2), Outcome::Warn(..)));
    }

    #[test]
    fn a_clock_off_by_more_than_two_seconds_is_warned_of() {
        let rtt = Duration::from_millis(3);
        assert!(matches!(own_clock(0.4, rtt), Outcome::Ok(d) if d.contains("within 0.4 s")));
        match own_clock(-5.0, rtt) {
            Outcome::Warn(detail, hint) => {
                assert!(detail.contains("5.0 s behind"), "{detail}");
                assert!(hint.contains("chrony"), "{hint}");
            }
            _ => panic!("a clock 5 s behind passed"),
        }
    }

    #[test]
    fn skewed_nodes_are_named_first_and_warned_of() {
        assert!(matches!(nodes_clocks(&[]), Outcome::Ok(d) if d.contains("no node")));
        let mut nodes: Vec<NodeSeen> = (0..12).map(|i| node(&format!("ok{i:02}"), 0.1)).collect();
        assert!(matches!(nodes_clocks(&nodes), Outcome::Ok(d) if d.contains("and 2 more")));
        nodes.push(node("zz-skewed", 7.3));
        match nodes_clocks(&nodes) {
            Outcome::Warn(detail, hint) => {
                assert!(detail.starts_with("13 nodes"), "{detail}");
                assert!(detail.contains("zz-skewed (+7.3 s"), "{detail}");
                assert!(
                    detail.contains("zz-skewed is 7.3 s ahead of it"),
                    "{detail}"
                );
                assert!(detail.contains("and 3 more"), "{detail}");
                assert!(hint.contains("on zz-skewed"), "{hint}");
                assert!(!hint.contains("ok00"), "{hint}");
            }
            _ => panic!("a skewed node passed"),
        }
    }
}
