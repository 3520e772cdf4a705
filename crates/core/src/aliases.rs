//! Aliases in aliases(5) format: bare local names such as `root` mapped to
//! the addresses that receive their mail.
//!
//! ```text
//! # Lines starting with # are comments; blank lines are ignored.
//! root: ops@example.com, oncall@example.com
//! # A chain:
//! postmaster: root
//! # A line starting with blanks continues the entry above:
//! team: a@example.com,
//!     b@example.com
//! # Any other local name:
//! default: admin@example.com
//! ```
//!
//! Names are case-insensitive. A target is an address or another name.
//! Commands (`|cmd`), files (`/path`), includes (`:include:`) and local
//! mailboxes (`\user`) cannot be delivered through an API: they parse, and
//! expanding a name that reaches one is an error naming its line.

use std::collections::{HashMap, HashSet};

use crate::address::{Mailbox, Recipient, split_list};

/// How many names one expansion may pass through (sendmail allows 10).
const MAX_DEPTH: usize = 32;

/// The catch-all entry for names without their own.
const DEFAULT: &str = "default";

/// A parsed aliases file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    entries: HashMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    line: usize,
    targets: Vec<Target>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Address(Mailbox),
    Name(String),
    Unsupported(String),
}

/// A line of an aliases file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct AliasSyntaxError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, in plain words.
    pub reason: String,
}

/// Why a local name cannot be turned into addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpandError {
    /// Neither the name nor `default:` has an entry.
    #[error("`{name}` is a local name with no alias{}", via_text(via))]
    Unknown {
        /// The name without an entry.
        name: String,
        /// The names whose aliases led to it, first to last.
        via: Vec<String>,
    },
    /// The expansion reaches a command, file, include or local mailbox.
    #[error(
        "the alias on line {line} delivers to `{target}`, which apimail cannot do (only addresses and other names)"
    )]
    Unsupported {
        /// The line of the entry.
        line: usize,
        /// The target as written.
        target: String,
    },
    /// The names lead back to themselves, or further than 32 names deep.
    #[error("the aliases loop: {}", chain.join(" -> "))]
    Loop {
        /// The names passed through; the last repeats an earlier one (or
        /// the chain is too long).
        chain: Vec<String>,
    },
}

fn via_text(via: &[String]) -> String {
    if via.is_empty() {
        String::new()
    } else {
        format!(" (reached through {})", via.join(" -> "))
    }
}

impl Aliases {
    /// Parses an aliases file. Syntax errors name their line; entries this
    /// crate cannot deliver to are kept and only fail when expanded.
    pub fn parse(text: &str) -> Result<Aliases, AliasSyntaxError> {
        let mut aliases = Aliases::default();
        for (line, entry) in logical_lines(text)? {
            let error = |reason: String| AliasSyntaxError { line, reason };
            let Some((name, targets)) = entry.split_once(':') else {
                return Err(error(
                    "expected `name: address, ...` (a name, a colon, then addresses)".into(),
                ));
            };
            let name = name.trim().trim_matches('"');
            if Recipient::local(name).is_none() {
                return Err(error(format!(
                    "`{name}` is not a local name (letters, digits, `.`, `-`, `_`, no `@` or spaces)"
                )));
            }
            let key = name.to_ascii_lowercase();
            if let Some(first) = aliases.entries.get(&key) {
                return Err(error(format!(
                    "`{name}` already has an alias on line {}",
                    first.line
                )));
            }
            let targets = split_list(targets)
                .map(|text| target(text).map_err(&error))
                .collect::<Result<Vec<_>, _>>()?;
            if targets.is_empty() {
                return Err(error(format!("`{name}:` names no address")));
            }
            aliases.entries.insert(key, Entry { line, targets });
        }
        Ok(aliases)
    }

    /// Whether `name` has an entry of its own, or `default:` catches it.
    pub fn maps(&self, name: &str) -> bool {
        self.entry(&name.to_ascii_lowercase()).is_some()
    }

    /// The addresses `name` delivers to, following chains, without
    /// duplicates, in the order the file gives them.
    pub fn expand(&self, name: &str) -> Result<Vec<Mailbox>, ExpandError> {
        let mut expansion = Expansion {
            aliases: self,
            path: Vec::new(),
            done: HashSet::new(),
            out: Vec::new(),
        };
        expansion.visit(name)?;
        Ok(expansion.out)
    }

    /// The entry for a lowercase name, else `default:`, with its key.
    fn entry(&self, lower: &str) -> Option<(&str, &Entry)> {
        self.entries
            .get_key_value(lower)
            .or_else(|| self.entries.get_key_value(DEFAULT))
            .map(|(key, entry)| (key.as_str(), entry))
    }
}

struct Expansion<'a> {
    aliases: &'a Aliases,
    /// The names being expanded, outermost first.
    path: Vec<(String, &'a str)>,
    /// Entries already expanded: their addresses are in `out`.
    done: HashSet<&'a str>,
    out: Vec<Mailbox>,
}

impl<'a> Expansion<'a> {
    fn visit(&mut self, name: &str) -> Result<(), ExpandError> {
        let names = |path: &[(String, &str)]| path.iter().map(|(n, _)| n.clone()).collect();
        let lower = name.to_ascii_lowercase();
        let Some((key, entry)) = self.aliases.entry(&lower) else {
            return Err(ExpandError::Unknown {
                name: name.to_owned(),
                via: names(&self.path),
            });
        };
        let shown = if key == DEFAULT && lower != DEFAULT {
            format!("{name} (default)")
        } else {
            name.to_owned()
        };
        if self.path.iter().any(|(_, k)| *k == key) || self.path.len() >= MAX_DEPTH {
            let mut chain: Vec<String> = names(&self.path);
            chain.push(shown);
            return Err(ExpandError::Loop { chain });
        }
        if self.done.contains(key) {
            return Ok(());
        }
        self.path.push((shown, key));
        for target in &entry.targets {
            match target {
                Target::Address(mailbox) => {
                    if !self
                        .out
                        .iter()
                        .any(|m| m.email().eq_ignore_ascii_case(mailbox.email()))
                    {
                        self.out.push(mailbox.clone());
                    }
                }
                Target::Name(next) => self.visit(next)?,
                Target::Unsupported(text) => {
                    return Err(ExpandError::Unsupported {
                        line: entry.line,
                        target: text.clone(),
                    });
                }
            }
        }
        self.path.pop();
        self.done.insert(key);
        Ok(())
    }
}

/// Joins continuation lines and drops comments and blank lines (as
/// Postfix's aliases(5) does), giving each entry with its first line.
fn logical_lines(text: &str) -> Result<Vec<(usize, String)>, AliasSyntaxError> {
    let mut entries: Vec<(usize, String)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some((_, entry)) = entries.last_mut() else {
                return Err(AliasSyntaxError {
                    line: index + 1,
                    reason:
                        "a line starting with blanks continues an entry, but none comes before it"
                            .into(),
                });
            };
            entry.push(' ');
            entry.push_str(trimmed);
        } else {
            entries.push((index + 1, trimmed.to_owned()));
        }
    }
    Ok(entries)
}

fn target(text: &str) -> Result<Target, String> {
    let unquoted = text.trim_matches('"');
    let special = unquoted.starts_with(['|', '/', '\\'])
        || unquoted
            .get(..9)
            .is_some_and(|p| p.eq_ignore_ascii_case(":include:"));
    if special {
        return Ok(Target::Unsupported(text.to_owned()));
    }
    match text.parse::<Recipient>() {
        Ok(Recipient::Mailbox(mailbox)) => Ok(Target::Address(mailbox)),
        Ok(Recipient::Local(name)) => Ok(Target::Name(name)),
        Err(e) => Err(format!(
            "`{text}` is neither an address nor a local name: {}",
            e.reason
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emails(aliases: &Aliases, name: &str) -> Vec<String> {
        aliases
            .expand(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .iter()
            .map(|m| m.email().to_owned())
            .collect()
    }

    #[test]
    fn names_comments_continuations_and_chains() {
        let aliases = Aliases::parse(
            "# system aliases\n\
             \n\
             root: ops@example.com, Oncall <oncall@example.com>\n\
             postmaster: root\n\
             MAILER-DAEMON: postmaster\n\
             team: a@example.com,\n\
             \t# a comment inside an entry\n\
             \x20   b@example.com, root,\r\n\
             \x20   ops@example.com\n\
             \"quoted\": \"Doe, Jane\" <jane@example.com>, x@example.com\n",
        )
        .unwrap();
        let both = ["ops@example.com", "oncall@example.com"];
        assert_eq!(emails(&aliases, "root"), both);
        assert_eq!(emails(&aliases, "mailer-daemon"), both);
        assert_eq!(emails(&aliases, "ROOT"), both);
        assert_eq!(
            emails(&aliases, "team"),
            [
                "a@example.com",
                "b@example.com",
                "ops@example.com",
                "oncall@example.com"
            ]
        );
        let quoted = aliases.expand("quoted").unwrap();
        assert_eq!(quoted[0].name(), Some("Doe, Jane"));
        assert_eq!(quoted.len(), 2);
        assert!(aliases.maps("Postmaster"));
        assert!(!aliases.maps("nobody"));
    }

    #[test]
    fn unknown_names_say_how_they_were_reached() {
        let aliases = Aliases::parse("root: admin\n").unwrap();
        assert_eq!(
            aliases.expand("nobody").unwrap_err(),
            ExpandError::Unknown {
                name: "nobody".into(),
                via: vec![]
            }
        );
        let e = aliases.expand("root").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`admin` is a local name with no alias (reached through root)"
        );
    }

    #[test]
    fn default_catches_every_other_name() {
        let aliases =
            Aliases::parse("root: ops@example.com\ndefault: root, fallback@example.com\n").unwrap();
        assert_eq!(emails(&aliases, "root"), ["ops@example.com"]);
        assert_eq!(
            emails(&aliases, "www-data"),
            ["ops@example.com", "fallback@example.com"]
        );
        assert!(aliases.maps("anyone"));
        // A default that names an unknown name would catch it again.
        let aliases = Aliases::parse("default: nobody\n").unwrap();
        assert_eq!(
            aliases.expand("cron").unwrap_err(),
            ExpandError::Loop {
                chain: vec!["cron (default)".into(), "nobody (default)".into()]
            }
        );
    }

    #[test]
    fn loops_are_found() {
        let aliases = Aliases::parse("a: b\nb: c, x@example.com\nc: a\n").unwrap();
        assert_eq!(
            aliases.expand("a").unwrap_err().to_string(),
            "the aliases loop: a -> b -> c -> a"
        );
        let aliases = Aliases::parse("root: root\n").unwrap();
        assert!(matches!(
            aliases.expand("root"),
            Err(ExpandError::Loop { .. })
        ));
        // Diamonds are not loops, and each name is expanded once.
        let aliases = Aliases::parse("a: b, c\nb: d\nc: d\nd: x@example.com\n").unwrap();
        assert_eq!(emails(&aliases, "a"), ["x@example.com"]);
        // A long chain stops.
        let chain: String = (0..100).map(|i| format!("n{i}: n{}\n", i + 1)).collect();
        let aliases = Aliases::parse(&format!("{chain}n100: x@example.com\n")).unwrap();
        match aliases.expand("n0").unwrap_err() {
            ExpandError::Loop { chain } => assert_eq!(chain.len(), MAX_DEPTH + 1),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn commands_files_and_includes_fail_only_when_used() {
        let aliases = Aliases::parse(
            "root: ops@example.com\n\
             list: \"|/usr/lib/mailman/mail/mailman post list\"\n\
             archive: /var/mail/archive\n\
             staff: :include:/etc/staff\n\
             keep: \\keep, ops@example.com\n\
             via: list\n",
        )
        .unwrap();
        assert_eq!(emails(&aliases, "root"), ["ops@example.com"]);
        for (name, line, target) in [
            ("list", 2, "\"|/usr/lib/mailman/mail/mailman post list\""),
            ("archive", 3, "/var/mail/archive"),
            ("staff", 4, ":include:/etc/staff"),
            ("keep", 5, "\\keep"),
            ("via", 2, "\"|/usr/lib/mailman/mail/mailman post list\""),
        ] {
            assert_eq!(
                aliases.expand(name).unwrap_err(),
                ExpandError::Unsupported {
                    line,
                    target: target.into()
                },
                "{name}"
            );
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let cases = [
            ("root ops@example.com\n", 1, "expected `name: address"),
            ("# c\n  x@example.com\n", 2, "continues an entry"),
            (
                "a: x@example.com\nb@host: x@example.com\n",
                2,
                "not a local name",
            ),
            (
                "a: x@example.com\n\nA: y@example.com\n",
                3,
                "already has an alias on line 1",
            ),
            ("a:\n", 1, "names no address"),
            ("a: two words\n", 1, "neither an address nor a local name"),
        ];
        for (text, line, reason) in cases {
            let e = Aliases::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.reason.contains(reason), "{text:?}: {e}");
        }
    }
}
