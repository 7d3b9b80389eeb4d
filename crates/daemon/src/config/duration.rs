//! Duration strings of the configuration file: `"500ms"`, `"64s"`, `"2m"`, `"1h30m"`, `"1.5s"`, `"-200ms"`.
//!
//! The result is a number of seconds as `f64`, since the clock code works in seconds. Signs are
//! parsed here; whether a negative value is allowed is up to the caller.

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The string is empty (or only a sign).
    #[error("empty duration")]
    Empty,
    /// A number is missing where one was expected, or is malformed.
    #[error("expected a number at `{0}`")]
    BadNumber(String),
    /// A number has no unit (only a bare `0` may omit it).
    #[error("missing unit after `{0}` (use ns, us, ms, s, m, h or d)")]
    MissingUnit(String),
    /// The unit is not one of the known ones.
    #[error("unknown unit `{0}` (use ns, us, ms, s, m, h or d)")]
    UnknownUnit(String),
    /// The value is too large to be a useful duration.
    #[error("duration is too large")]
    TooLarge,
}

/// The largest accepted magnitude, in seconds (about 31 years).
const MAX_SECONDS: f64 = 1e9;

/// Parse a duration string into seconds.
///
/// Grammar: an optional sign, then one or more `NUMBER UNIT` parts (whitespace allowed between
/// them), where NUMBER may have a decimal fraction and UNIT is one of `ns`, `us`/`µs`, `ms`,
/// `s`/`sec`, `m`/`min`, `h`, `d`. A bare `0` is also accepted.
///
/// ```
/// use strata_daemon::config::parse_duration;
/// assert_eq!(parse_duration("1.5s"), Ok(1.5));
/// assert_eq!(parse_duration("-200ms"), Ok(-0.2));
/// assert_eq!(parse_duration("1h30m"), Ok(5400.0));
/// ```
pub fn parse_duration(text: &str) -> Result<f64, DurationError> {
    let trimmed = text.trim();
    let (negative, rest) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Err(DurationError::Empty);
    }
    if rest == "0" {
        return Ok(0.0);
    }
    let mut total = 0.0_f64;
    let mut remaining = rest;
    while !remaining.is_empty() {
        let number_len = remaining
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(remaining.len());
        let number = &remaining[..number_len];
        if number.is_empty()
            || number.starts_with('.')
            || number.ends_with('.')
            || number.matches('.').count() > 1
        {
            return Err(DurationError::BadNumber(remaining.to_owned()));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| DurationError::BadNumber(remaining.to_owned()))?;
        let after_number = remaining[number_len..].trim_start();
        let unit_len = after_number
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(after_number.len());
        let unit = &after_number[..unit_len];
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(number.to_owned()));
        }
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            other => return Err(DurationError::UnknownUnit(other.to_owned())),
        };
        total += value * scale;
        if !total.is_finite() || total > MAX_SECONDS {
            return Err(DurationError::TooLarge);
        }
        remaining = after_number[unit_len..].trim_start();
    }
    Ok(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        let cases = [
            ("500ms", 0.5),
            ("64s", 64.0),
            ("2m", 120.0),
            ("1h", 3600.0),
            ("1.5s", 1.5),
            ("-200ms", -0.2),
            ("+3s", 3.0),
            ("0", 0.0),
            ("0s", 0.0),
            ("1h30m", 5400.0),
            ("1m 30s", 90.0),
            ("250 us", 250e-6),
            ("250µs", 250e-6),
            ("10ns", 10e-9),
            ("2d", 172_800.0),
            ("5min", 300.0),
        ];
        for (text, expected) in cases {
            let got = parse_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(
                (got - expected).abs() < 1e-12,
                "{text}: {got} != {expected}"
            );
        }
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("-"), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("12"),
            Err(DurationError::MissingUnit("12".into()))
        );
        assert_eq!(
            parse_duration("3 fortnights"),
            Err(DurationError::UnknownUnit("fortnights".into()))
        );
        assert!(matches!(
            parse_duration("ms"),
            Err(DurationError::BadNumber(_))
        ));
        assert!(matches!(
            parse_duration("1.2.3s"),
            Err(DurationError::BadNumber(_))
        ));
        assert!(matches!(
            parse_duration(".5s"),
            Err(DurationError::BadNumber(_))
        ));
        assert!(matches!(
            parse_duration("1s-2s"),
            Err(DurationError::BadNumber(_))
        ));
        assert_eq!(parse_duration("99999999999d"), Err(DurationError::TooLarge));
        assert_eq!(
            parse_duration(&format!("{}s", "9".repeat(400))),
            Err(DurationError::TooLarge)
        );
    }
}
