//! How a machine's link is degraded (`n2d fault delay`): a delay, optionally jitter, loss,
//! duplication, reordering and a rate limit, as Linux's netem queueing discipline takes them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {reason} ({example})")]
pub struct InvalidShaping {
    pub what: &'static str,
    pub input: String,
    pub reason: &'static str,
    pub example: &'static str,
}

/// A share of packets, more than 0 and at most 100 percent, e.g. `1%` or `0.5%`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Percent(String);

impl FromStr for Percent {
    type Err = InvalidShaping;
    fn from_str(input: &str) -> Result<Self, InvalidShaping> {
        let invalid = |reason| InvalidShaping {
            what: "percentage",
            input: input.to_string(),
            reason,
            example: "use e.g. 1% or 0.5%",
        };
        let number = input.strip_suffix('%').unwrap_or(input);
        if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(invalid("it is not a number"));
        }
        let value: f64 = number.parse().map_err(|_| invalid("it is not a number"))?;
        if !(value > 0.0 && value <= 100.0) {
            return Err(invalid("it is not more than 0 and at most 100"));
        }
        Ok(Percent(format!("{number}%")))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A rate limit, a whole number of `kbit`, `mbit` or `gbit` per second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate(String);

impl FromStr for Rate {
    type Err = InvalidShaping;
    fn from_str(input: &str) -> Result<Self, InvalidShaping> {
        let invalid = |reason| InvalidShaping {
            what: "rate",
            input: input.to_string(),
            reason,
            example: "use e.g. 500kbit or 10mbit",
        };
        let split = input.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| invalid("it has no unit"))?;
        let (number, unit) = input.split_at(split);
        let n: u64 = number.parse().map_err(|_| invalid("it does not start with a whole number"))?;
        if n == 0 || n > 1_000_000 {
            return Err(invalid("the number is 0 or above 1000000"));
        }
        if !matches!(unit, "kbit" | "mbit" | "gbit") {
            return Err(invalid("its unit is not kbit, mbit or gbit"));
        }
        Ok(Rate(input.to_string()))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `n2d fault delay` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shaping {
    pub delay: Duration,
    pub jitter: Option<Duration>,
    pub loss: Option<Percent>,
    pub duplicate: Option<Percent>,
    pub reorder: Option<Percent>,
    pub rate: Option<Rate>,
}

impl Shaping {
    /// The arguments after `tc qdisc replace dev DEV root netem`.
    pub fn netem_args(&self) -> Vec<String> {
        let mut args = vec!["delay".to_string(), crate::duration::show(self.delay)];
        if let Some(jitter) = self.jitter {
            args.push(crate::duration::show(jitter));
        }
        for (word, value) in
            [("loss", &self.loss), ("duplicate", &self.duplicate), ("reorder", &self.reorder)]
        {
            if let Some(p) = value {
                args.extend([word.to_string(), p.to_string()]);
            }
        }
        if let Some(rate) = &self.rate {
            args.extend(["rate".to_string(), rate.to_string()]);
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaping_becomes_netem_arguments_and_bad_values_are_refused() {
        let s = Shaping {
            delay: Duration::from_millis(200),
            jitter: Some(Duration::from_millis(20)),
            loss: Some("1%".parse().unwrap()),
            duplicate: None,
            reorder: Some("0.5".parse().unwrap()),
            rate: Some("10mbit".parse().unwrap()),
        };
        assert_eq!(s.netem_args().join(" "), "delay 200ms 20ms loss 1% reorder 0.5% rate 10mbit");
        for bad in ["", "%", "0%", "101%", "-1%", "1e2%", "x"] {
            assert!(bad.parse::<Percent>().is_err(), "{bad:?}");
        }
        for bad in ["", "10", "0mbit", "10mb", "1.5mbit", "mbit", "10 mbit"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }
}
