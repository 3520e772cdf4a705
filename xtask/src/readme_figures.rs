//! `cargo xtask ci`'s `README benchmarks` step: the README's "Benchmarks"
//! section may only quote figures that `bench/RESULTS.md` holds, so the two
//! cannot drift apart when the bench runs again.
//!
//! A figure is a number followed by a unit (`30.7 ms`, `6.46 s`, `20 MB`,
//! `13.6×`, `182 msgs/s`, `90%`). Each must equal a number of the results
//! once that number is rounded to the figure's decimals (`418 ms` quotes
//! `418.5`); the results' tables carry their units in the headers, so
//! their numbers are compared without units.

use std::path::Path;

use crate::{Context, Error, Result};

/// The README section that quotes the results.
const HEADING: &str = "## Benchmarks";
/// Units that make a number a quoted figure.
const UNITS: [&str; 7] = ["msgs/s", "ms", "s", "MB", "KB", "×", "%"];

/// Fails when the README's "Benchmarks" section quotes a figure that
/// bench/RESULTS.md does not hold.
pub(crate) fn check(root: &Path) -> Result<()> {
    let read = |name: &str| {
        std::fs::read_to_string(root.join(name)).with_context(|| format!("cannot read {name}"))
    };
    let readme = read("README.md")?;
    let results = read("bench/RESULTS.md")?;
    let section = section(&readme)
        .ok_or_else(|| Error::new(format!("README.md has no `{HEADING}` section")))?;
    let figures = figures(section);
    if figures.is_empty() {
        return Err(Error::new(
            "README.md's Benchmarks section quotes no figure of bench/RESULTS.md",
        ));
    }
    let numbers = numbers(&results);
    let stale: Vec<String> = figures
        .iter()
        .filter(|f| !numbers.iter().any(|n| f.quotes(*n)))
        .map(|f| f.text.clone())
        .collect();
    if stale.is_empty() {
        eprintln!(
            "README.md's Benchmarks section: {} figure(s), all in bench/RESULTS.md",
            figures.len()
        );
        return Ok(());
    }
    Err(Error::new(format!(
        "README.md's Benchmarks section quotes {} not in bench/RESULTS.md\n\
         hint: copy the figures of the latest bench/RESULTS.md into README.md's Benchmarks section",
        stale.join(", ")
    )))
}

/// The text from [`HEADING`] to the next `## ` heading.
fn section(text: &str) -> Option<&str> {
    let start = text.find(&format!("\n{HEADING}\n"))? + 1;
    let body = &text[start + HEADING.len()..];
    let end = body.find("\n## ").map_or(body.len(), |i| i + 1);
    Some(&body[..end])
}

/// A quoted figure: its number, decimals and text.
#[derive(Debug, Clone, PartialEq)]
struct Figure {
    value: f64,
    decimals: i32,
    text: String,
}

impl Figure {
    /// Whether `number` rounds to this figure.
    fn quotes(&self, number: f64) -> bool {
        let half = 0.5 * 10f64.powi(-self.decimals);
        (number - self.value).abs() <= half + 1e-9
    }
}

/// One number of `text` at each position: its value, decimals, and where
/// it ends. `1,000` is a thousand; `1, 10` are two numbers.
fn scan(text: &str) -> Vec<(f64, i32, usize, usize)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = bytes[i].is_ascii_digit()
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.'));
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = String::new();
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() {
                digits.push(bytes[i] as char);
                i += 1;
            } else if bytes[i] == b','
                && bytes
                    .get(i + 1..i + 4)
                    .is_some_and(|g| g.iter().all(u8::is_ascii_digit))
                && !bytes.get(i + 4).is_some_and(u8::is_ascii_digit)
            {
                i += 1;
            } else {
                break;
            }
        }
        let mut decimals = 0;
        if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            digits.push('.');
            i += 1;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                digits.push(bytes[i] as char);
                decimals += 1;
                i += 1;
            }
        }
        if let Ok(value) = digits.parse::<f64>() {
            found.push((value, decimals, start, i));
        }
    }
    found
}

/// Every number of the results.
fn numbers(text: &str) -> Vec<f64> {
    scan(text).into_iter().map(|(value, ..)| value).collect()
}

/// The figures of `text`: numbers followed (after at most one space) by a
/// unit that ends there.
fn figures(text: &str) -> Vec<Figure> {
    scan(text)
        .into_iter()
        .filter_map(|(value, decimals, start, end)| {
            let rest = &text[end..];
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            let unit = UNITS.iter().find(|unit| {
                rest.strip_prefix(**unit)
                    .is_some_and(|after| !after.starts_with(|c: char| c.is_alphanumeric()))
            })?;
            let unit_end = text.len() - rest.len() + unit.len();
            Some(Figure {
                value,
                decimals,
                text: text[start..unit_end].to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_numbers_with_units() {
        let found: Vec<String> = figures(
            "A send takes 30.7 ms (13.6× faster), 200 calls 6.46 s, 20 MB peak, \
             182 msgs/s, 90% of it; RFC 5322, 2 sends, 25 MiB and 2-core are not.",
        )
        .into_iter()
        .map(|f| f.text)
        .collect();
        assert_eq!(
            found,
            ["30.7 ms", "13.6×", "6.46 s", "20 MB", "182 msgs/s", "90%"]
        );
    }

    #[test]
    fn a_figure_quotes_a_number_rounded_to_its_decimals() {
        let figure = |text: &str| figures(text).remove(0);
        assert!(figure("418 ms").quotes(418.5));
        assert!(figure("20 MB").quotes(20.3));
        assert!(!figure("20 MB").quotes(20.6));
        assert!(figure("30.7 ms").quotes(30.7));
        assert!(!figure("31.5 ms").quotes(30.7));
    }

    #[test]
    fn thousands_separators_join_and_lists_do_not() {
        let values: Vec<f64> = numbers("100,000 entries; 1, 10 and 50; ×13.6; 2026-04-14")
            .into_iter()
            .collect();
        assert_eq!(values, [100000.0, 1.0, 10.0, 50.0, 13.6, 2026.0, 4.0, 14.0]);
    }

    #[test]
    fn the_section_ends_at_the_next_heading() {
        let text = "# x\n\n## Benchmarks\n\nIt takes 5 ms.\n\n## Contributing\n\n9 ms\n";
        assert_eq!(section(text), Some("\n\nIt takes 5 ms.\n\n"));
    }

    /// The committed README and results agree (what the CI step checks).
    #[test]
    fn the_readme_quotes_the_committed_results() {
        check(&crate::workspace_root()).unwrap();
    }
}
