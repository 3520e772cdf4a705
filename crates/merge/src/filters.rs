//! The template's filters: `date` and `number`.

use minijinja::{Error, ErrorKind};

/// `{{ due | date("[year]年[month]月[day]日") }}`: a date written
/// `YYYY-MM-DD` or `YYYY/MM/DD` (optionally with `HH:MM[:SS]`), in a
/// `time` format description; without one, `YYYY-MM-DD`.
pub fn date(value: String, format: Option<String>) -> Result<String, Error> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("`{value}` is not a date (write it as YYYY-MM-DD)"),
        )
    };
    let text = value.trim().replace('/', "-");
    let (day, clock) = match text.split_once([' ', 'T']) {
        Some((day, clock)) => (day, Some(clock)),
        None => (text.as_str(), None),
    };
    let mut parts = day.split('-').map(|p| p.parse::<i32>().map_err(|_| bad()));
    let (year, month, dom) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d), None) => (y?, m?, d?),
        _ => return Err(bad()),
    };
    let month =
        time::Month::try_from(u8::try_from(month).map_err(|_| bad())?).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(year, month, u8::try_from(dom).map_err(|_| bad())?)
        .map_err(|_| bad())?;
    let mut at = date.midnight();
    if let Some(clock) = clock {
        let numbers: Vec<u8> = clock
            .split(':')
            .map(|p| p.parse::<u8>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let (h, m, s) = match numbers[..] {
            [h, m] => (h, m, 0),
            [h, m, s] => (h, m, s),
            _ => return Err(bad()),
        };
        at = at.replace_time(time::Time::from_hms(h, m, s).map_err(|_| bad())?);
    }
    let format = format.unwrap_or_else(|| "[year]-[month]-[day]".to_owned());
    let description = time::format_description::parse_borrowed::<2>(&format).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("`{format}` is not a date format ({e}); write e.g. \"[year]/[month]/[day]\""),
        )
    })?;
    at.format(&description)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

/// `{{ amount | number }}` → `12,345`; `number(2)` → `12,345.00`; a third
/// argument replaces the `,`.
pub fn number(
    value: String,
    decimals: Option<u8>,
    separator: Option<String>,
) -> Result<String, Error> {
    let cleaned: String = value.trim().chars().filter(|c| *c != ',').collect();
    let parsed: f64 = cleaned.parse().map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("`{value}` is not a number"),
        )
    })?;
    let decimals = usize::from(decimals.unwrap_or(0).min(12));
    let separator = separator.unwrap_or_else(|| ",".to_owned());
    let fixed = format!("{:.*}", decimals, parsed.abs());
    let (whole, fraction) = match fixed.split_once('.') {
        Some((w, f)) => (w.to_owned(), Some(f.to_owned())),
        None => (fixed, None),
    };
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push_str(&separator);
        }
        grouped.push(digit);
    }
    let negative = parsed < 0.0 && fixed_is_nonzero(&whole, fraction.as_deref());
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    out.push_str(&grouped);
    if let Some(fraction) = fraction {
        out.push('.');
        out.push_str(&fraction);
    }
    Ok(out)
}

fn fixed_is_nonzero(whole: &str, fraction: Option<&str>) -> bool {
    whole
        .chars()
        .chain(fraction.unwrap_or("").chars())
        .any(|c| c != '0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_take_a_format() {
        assert_eq!(date("2026/12/04".into(), None).unwrap(), "2026-12-04");
        assert_eq!(
            date(
                "2026-1-5".into(),
                Some("[year]年[month padding:none]月[day padding:none]日".into())
            )
            .unwrap(),
            "2026年1月5日"
        );
        assert_eq!(
            date(
                "2026-12-04 09:30".into(),
                Some("[day]/[month]/[year] [hour]:[minute]".into())
            )
            .unwrap(),
            "04/12/2026 09:30"
        );
        assert!(date("next week".into(), None).is_err());
        assert!(date("2026-02-30".into(), None).is_err());
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(number("1234567".into(), None, None).unwrap(), "1,234,567");
        assert_eq!(
            number("-1234.5".into(), Some(2), None).unwrap(),
            "-1,234.50"
        );
        assert_eq!(
            number("1,000".into(), None, Some(".".into())).unwrap(),
            "1.000"
        );
        assert_eq!(number("999".into(), None, None).unwrap(), "999");
        assert_eq!(number("-0.001".into(), Some(2), None).unwrap(), "0.00");
        assert!(number("abc".into(), None, None).is_err());
    }
}
