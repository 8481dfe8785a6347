//! Durations as users type them (`--for 30s`, `fault delay web 200ms`): a whole number and a
//! unit, `ms`, `s`, `m` or `h`.

use std::time::Duration;

/// The longest duration accepted: a day (a fault meant to last longer is one to clear by hand).
pub const MAX: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (use a whole number and a unit: 200ms, 30s, 5m or 1h)")]
pub struct InvalidDuration {
    pub input: String,
    pub reason: &'static str,
}

/// Parses `200ms`, `30s`, `5m`, `1h`; at most [`MAX`].
pub fn parse(input: &str) -> Result<Duration, InvalidDuration> {
    let invalid = |reason| InvalidDuration { input: input.to_string(), reason };
    let split = input.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| invalid("it has no unit"))?;
    let (number, unit) = input.split_at(split);
    if number.is_empty() {
        return Err(invalid("it does not start with a number"));
    }
    let n: u64 = number.parse().map_err(|_| invalid("the number is too large"))?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(invalid("its unit is not ms, s, m or h")),
    };
    let d = Duration::from_millis(millis.ok_or_else(|| invalid("it is longer than a day"))?);
    if d > MAX {
        return Err(invalid("it is longer than a day"));
    }
    Ok(d)
}

/// A duration as [`parse`] reads it back: `200ms`, `30s`, `5m`, `1h`.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if !ms.is_multiple_of(1000) => format!("{ms}ms"),
        _ if ms.is_multiple_of(3_600_000) && ms > 0 => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) && ms > 0 => format!("{}m", ms / 60_000),
        _ => format!("{}s", ms / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units_parse_and_the_rest_is_refused() {
        assert_eq!(parse("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("24h").unwrap(), MAX);
        for text in ["200ms", "30s", "90s", "5m", "1h", "0s"] {
            assert_eq!(show(parse(text).unwrap()), text);
        }
        for bad in ["", "30", "s", "-1s", "1.5s", "30 s", "10d", "25h", "99999999999999999999s", "3S"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
