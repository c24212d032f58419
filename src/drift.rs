//! How much sooner than the holder's clock a backend may end a lease.
//!
//! A holder measures its lease on its own monotonic clock, from just before
//! the request was sent; the backend expires it on *its* clock. If that
//! clock runs faster, the backend ends the lease first, and a holder that
//! worked until its own count ran out would overlap the next holder. The
//! allowance is subtracted from every lease the guard counts.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A backend's clock-drift allowance: `rate × ttl + fixed_ms`.
///
/// Its JSON form is the optional `clock_drift` field of a plugin's
/// `describe` answer: `{"rate":0.01,"fixed_ms":2}`. The default is
/// [`ClockDrift::REDLOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Raw", into = "Raw")]
pub struct ClockDrift {
    rate: f64,
    fixed_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    rate: f64,
    fixed_ms: u64,
}

impl TryFrom<Raw> for ClockDrift {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        Self::try_new(r.rate, r.fixed_ms)
    }
}

impl From<ClockDrift> for Raw {
    fn from(d: ClockDrift) -> Self {
        Raw { rate: d.rate, fixed_ms: d.fixed_ms }
    }
}

impl ClockDrift {
    /// Redlock's allowance, 1 % of the TTL plus 2 ms: the backend's clock
    /// may run up to 1 % faster than the holder's, plus a little for
    /// timer granularity. What every backend gets unless it states its own.
    pub const REDLOCK: ClockDrift = ClockDrift { rate: 0.01, fixed_ms: 2 };

    /// No allowance: the lease expires on the holder's own monotonic clock
    /// (the memory backend).
    pub const NONE: ClockDrift = ClockDrift { rate: 0.0, fixed_ms: 0 };

    /// An allowance of `rate × ttl + fixed_ms`. Panics (at compile time in a
    /// `const`) unless `0 <= rate < 1` and `fixed_ms` is at most
    /// [`crate::MAX_TTL_MS`]; use [`try_new`](Self::try_new) for values read
    /// at run time.
    pub const fn new(rate: f64, fixed_ms: u64) -> Self {
        assert!(rate >= 0.0 && rate < 1.0, "clock drift rate must be in [0, 1)");
        assert!(fixed_ms <= crate::MAX_TTL_MS, "clock drift fixed_ms above the TTL limit");
        Self { rate, fixed_ms }
    }

    /// [`new`](Self::new) for values read at run time: an error names the
    /// value out of range.
    pub fn try_new(rate: f64, fixed_ms: u64) -> Result<Self, String> {
        if !(rate.is_finite() && (0.0..1.0).contains(&rate)) {
            return Err(format!("clock_drift rate {rate} is not in [0, 1)"));
        }
        if fixed_ms > crate::MAX_TTL_MS {
            return Err(format!(
                "clock_drift fixed_ms {fixed_ms} is above the TTL limit {}",
                crate::MAX_TTL_MS
            ));
        }
        Ok(Self { rate, fixed_ms })
    }

    /// The proportional part: the fastest the backend's clock may run
    /// relative to the holder's, minus one.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The fixed part, in milliseconds.
    pub fn fixed_ms(&self) -> u64 {
        self.fixed_ms
    }

    /// How much to take off a lease of `ttl`, rounded up to the microsecond.
    pub fn allowance(&self, ttl: Duration) -> Duration {
        let proportional = (ttl.as_secs_f64() * self.rate * 1e6).ceil() / 1e6;
        Duration::from_secs_f64(proportional) + Duration::from_millis(self.fixed_ms)
    }
}

impl Default for ClockDrift {
    fn default() -> Self {
        Self::REDLOCK
    }
}

impl fmt::Display for ClockDrift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} % of the TTL + {} ms", self.rate * 100.0, self.fixed_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redlock_is_one_percent_plus_two_ms() {
        let d = ClockDrift::default();
        assert_eq!(d, ClockDrift::REDLOCK);
        assert_eq!(d.allowance(Duration::from_secs(30)), Duration::from_millis(302));
        assert_eq!(d.allowance(Duration::from_secs(3)), Duration::from_millis(32));
        assert_eq!(ClockDrift::NONE.allowance(Duration::from_secs(30)), Duration::ZERO);
        assert_eq!(d.to_string(), "1 % of the TTL + 2 ms");
    }

    #[test]
    fn json_round_trips_and_bad_values_are_refused() {
        let d: ClockDrift = serde_json::from_str(r#"{"rate":0.001,"fixed_ms":1}"#).unwrap();
        assert_eq!((d.rate(), d.fixed_ms()), (0.001, 1));
        assert_eq!(serde_json::to_string(&d).unwrap(), r#"{"rate":0.001,"fixed_ms":1}"#);
        for bad in [
            r#"{"rate":1.0,"fixed_ms":1}"#,
            r#"{"rate":-0.1,"fixed_ms":1}"#,
            r#"{"rate":0.01,"fixed_ms":-1}"#,
            r#"{"rate":0.01}"#,
            r#"{"rate":0.01,"fixed_ms":2,"extra":1}"#,
            r#"{"rate":"0.01","fixed_ms":2}"#,
            r#"{"rate":0.01,"fixed_ms":31536000001}"#,
        ] {
            assert!(serde_json::from_str::<ClockDrift>(bad).is_err(), "{bad}");
        }
        assert!(ClockDrift::try_new(f64::NAN, 0).is_err());
    }
}
