//! Durations as Corefiles write them: Go's `time.ParseDuration` (`30s`, `1m`, `1h30m`,
//! `1.5h`, `500ms`, `0`), limited to values that are not negative.
//!
//! The grammar is Go's: an optional sign, then one or more `NUMBER UNIT` pairs where NUMBER is
//! a decimal with an optional fraction and UNIT one of `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`,
//! `h`; a bare `0` needs no unit. Like Go, values above 2^63 - 1 nanoseconds (about 292 years)
//! are refused and fractions finer than a nanosecond are dropped.

use std::time::Duration;

/// The largest duration Go represents, in nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Fraction digits read; later ones are below a nanosecond even for hours.
const MAX_FRACTION_DIGITS: usize = 18;

/// Why a text is not an accepted duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DurationError {
    /// Not of the form NUMBER UNIT [NUMBER UNIT...].
    #[error("not a duration")]
    Malformed,
    /// A number without a unit (only `0` may go without).
    #[error("a unit (ns, us, ms, s, m or h) is missing")]
    MissingUnit,
    /// A unit Go does not know.
    #[error("unknown unit {0:?} (expected ns, us, ms, s, m or h)")]
    UnknownUnit(String),
    /// Below zero.
    #[error("negative durations are not allowed")]
    Negative,
    /// Above Go's limit of 2^63 - 1 nanoseconds.
    #[error("too large")]
    TooLarge,
}

/// Parses a non-negative Go-style duration.
pub(crate) fn parse(text: &str) -> Result<Duration, DurationError> {
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if unsigned == "0" {
        return Ok(Duration::ZERO);
    }
    if unsigned.is_empty() {
        return Err(DurationError::Malformed);
    }
    let mut total: u128 = 0;
    let mut rest = unsigned;
    while !rest.is_empty() {
        let (whole, after) = split_digits(rest);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after_dot) => split_digits(after_dot),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(DurationError::Malformed);
        }
        let unit_end = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        total = total
            .checked_add(nanos(whole, fraction, unit_nanos(unit)?)?)
            .filter(|&total| total <= MAX_NANOS)
            .ok_or(DurationError::TooLarge)?;
        rest = after;
    }
    if negative && total > 0 {
        return Err(DurationError::Negative);
    }
    // MAX_NANOS fits in a u64.
    Ok(Duration::from_nanos(total as u64))
}

/// Splits `text` after its leading ASCII digits.
fn split_digits(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Nanoseconds in one `unit`.
fn unit_nanos(unit: &str) -> Result<u128, DurationError> {
    Ok(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "" => return Err(DurationError::MissingUnit),
        other => return Err(DurationError::UnknownUnit(other.to_string())),
    })
}

/// `WHOLE.FRACTION` units in nanoseconds, rounded down.
fn nanos(whole: &str, fraction: &str, unit: u128) -> Result<u128, DurationError> {
    let mut value: u128 = 0;
    for digit in whole.bytes() {
        value = value * 10 + u128::from(digit - b'0');
        if value > MAX_NANOS {
            return Err(DurationError::TooLarge);
        }
    }
    let mut total = value * unit;
    if total > MAX_NANOS {
        return Err(DurationError::TooLarge);
    }
    let digits = &fraction.as_bytes()[..fraction.len().min(MAX_FRACTION_DIGITS)];
    if !digits.is_empty() {
        let (numerator, denominator) =
            digits
                .iter()
                .fold((0u128, 1u128), |(numerator, denominator), digit| {
                    (numerator * 10 + u128::from(digit - b'0'), denominator * 10)
                });
        // numerator < 10^18 and unit < 4 * 10^12: no overflow.
        total += numerator * unit / denominator;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("+0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("-0s"), Duration::ZERO);
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1h30m15s"), Duration::from_secs(5415));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("1.0000000001s"), Duration::from_secs(1));
        assert_eq!(ok("10us"), Duration::from_micros(10));
        assert_eq!(ok("10µs"), Duration::from_micros(10));
        assert_eq!(ok("10μs"), Duration::from_micros(10));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("+2m"), Duration::from_secs(120));
        assert_eq!(ok("1m1m"), Duration::from_secs(120));
        assert_eq!(
            ok("2562047h47m16.854775807s"),
            Duration::from_nanos(i64::MAX as u64)
        );
    }

    #[test]
    fn rejected_forms() {
        use DurationError::*;
        let cases: &[(&str, DurationError)] = &[
            ("", Malformed),
            ("-", Malformed),
            ("+", Malformed),
            (".", Malformed),
            ("s", Malformed),
            ("1h.", Malformed),
            ("--1s", Malformed),
            ("1s ", UnknownUnit("s ".to_string())),
            ("30", MissingUnit),
            ("00", MissingUnit),
            ("1h30", MissingUnit),
            ("1.5", MissingUnit),
            ("1d", UnknownUnit("d".to_string())),
            ("1e3s", UnknownUnit("e".to_string())),
            ("1S", UnknownUnit("S".to_string())),
            ("-1s", Negative),
            ("-1h30m", Negative),
            ("-.5s", Negative),
            ("2562047h47m16.854775808s", TooLarge),
            ("9223372036854775808ns", TooLarge),
            ("99999999999999999999999999999999999999999999h", TooLarge),
            ("3000000h", TooLarge),
        ];
        for (text, error) in cases {
            assert_eq!(parse(text).as_ref(), Err(error), "{text:?}");
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            DurationError::UnknownUnit("d".to_string()).to_string(),
            "unknown unit \"d\" (expected ns, us, ms, s, m or h)"
        );
        assert_eq!(
            DurationError::MissingUnit.to_string(),
            "a unit (ns, us, ms, s, m or h) is missing"
        );
    }
}
