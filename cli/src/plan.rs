//! When `bext-lock run` tells the command to stop, and when it kills it:
//! the rules that keep every process of the command from outliving the
//! lease, whatever `--grace` says.
//!
//! ```text
//!  sent        renew due     half-way      loss signalled       SIGKILL    lease end
//!   |------------|--------------|------------- |------------------|----------|
//!   0          ttl/3          ttl/2     at the latest:    at the latest:  ttl − drift
//!                                      lease end − stop   lease end − kill
//!                                           margin           margin
//!                                             |<---- --grace --->|<-------->|
//!                                                                 kill margin
//! ```
//!
//! * `drift`: the backend's clock-drift allowance (its `describe` answer,
//!   Redlock's 1 % + 2 ms by default).
//! * kill margin: 100 ms (a tenth of TTLs under 1 s), for the SIGKILL to be
//!   sent and delivered on a loaded machine before the lease end.
//! * stop margin = `--grace` + kill margin: the guard signals the loss by
//!   then, so the command gets its whole grace and is still killed in time.
//! * The stop margin may reach back at most to half-way through the lease,
//!   so the renewal sent at a third of the TTL has at least a sixth of it to
//!   be confirmed; hence the largest `--grace` is
//!   `ttl / 2 − drift − kill margin`.

use std::time::Duration;

use bext_locking::ClockDrift;

use crate::duration::show;

/// `--grace` when none is given and it fits.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The most time set aside for the SIGKILL to land before the lease end.
const KILL_MARGIN: Duration = Duration::from_millis(100);

/// The numbers `run` works with, checked to fit together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The lease asked for.
    pub ttl: Duration,
    /// The backend's clock-drift allowance for this TTL.
    pub drift: Duration,
    /// How long before the lease end the SIGKILL is sent at the latest.
    pub kill_margin: Duration,
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// The guard's stop margin: `grace + kill_margin`.
    pub stop_margin: Duration,
}

/// The time set aside for the SIGKILL: 100 ms, or a tenth of a shorter TTL.
pub fn kill_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(KILL_MARGIN)
}

/// The largest `--grace` that fits a TTL, if any does.
pub fn largest_grace(ttl: Duration, drift: &ClockDrift) -> Option<Duration> {
    (ttl / 2).checked_sub(drift.allowance(ttl) + kill_margin(ttl))
}

/// `--grace` when none is given: 10 s, or a third of the TTL if that is
/// less (the guard's own default stop margin, which gives the renewal a
/// whole third of the TTL to be confirmed).
pub fn default_grace(ttl: Duration, drift: &ClockDrift) -> Duration {
    let third = ttl / 3;
    let largest = largest_grace(ttl, drift).unwrap_or_default();
    DEFAULT_GRACE.min(third).min(largest)
}

/// Checks `--grace` (or picks the default) against `--ttl`.
pub fn plan(ttl: Duration, drift: &ClockDrift, grace: Option<Duration>) -> Result<Plan, String> {
    let allowance = drift.allowance(ttl);
    let km = kill_margin(ttl);
    let Some(largest) = largest_grace(ttl, drift) else {
        // The shortest TTL that fits, in the whole milliseconds --ttl takes.
        let shortest = (ttl.as_millis() as u64..=bext_locking::MAX_TTL_MS)
            .map(Duration::from_millis)
            .take(100_000)
            .find(|t| largest_grace(*t, drift).is_some());
        let at_least =
            shortest.map(|t| format!("; give --ttl {} or more", show(t))).unwrap_or_default();
        return Err(format!(
            "--ttl {} is too short: the lease counts as the TTL less {} of clock-drift allowance \
             ({drift}), and half of the TTL must still hold that and {} to deliver the SIGKILL{at_least}",
            show(ttl),
            show(allowance),
            show(km)
        ));
    };
    let grace = match grace {
        None => default_grace(ttl, drift),
        Some(g) if g <= largest => g,
        Some(g) => {
            return Err(format!(
                "--grace {} does not fit --ttl {}: the command must be gone by the lease end (the \
                 TTL less {} of clock-drift allowance), so the loss is signalled at the latest \
                 --grace + {} before it, and that must not be earlier than half-way through the \
                 lease (the renewal, sent at a third of the TTL, needs time to be confirmed); the \
                 largest --grace for --ttl {} is {}; a --ttl of {} or more fits --grace {}",
                show(g),
                show(ttl),
                show(allowance),
                show(km),
                show(ttl),
                show(largest),
                show(smallest_ttl(g, drift)),
                show(g)
            ));
        }
    };
    Ok(Plan { ttl, drift: allowance, kill_margin: km, grace, stop_margin: grace + km })
}

/// The shortest whole-millisecond TTL that fits `grace`.
fn smallest_ttl(grace: Duration, drift: &ClockDrift) -> Duration {
    // ttl / 2 − (rate × ttl + fixed) − 100 ms ≥ grace, solved for ttl with
    // the largest kill margin, then walked down while it still fits.
    let need = grace + Duration::from_millis(drift.fixed_ms()) + KILL_MARGIN;
    let mut ms = (need.as_secs_f64() * 1000.0 / (0.5 - drift.rate())).ceil() as u64;
    let fits =
        |ms: u64| largest_grace(Duration::from_millis(ms), drift).is_some_and(|l| l >= grace);
    while !fits(ms) {
        ms += 1;
    }
    while ms > 1 && fits(ms - 1) {
        ms -= 1;
    }
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDLOCK: ClockDrift = ClockDrift::REDLOCK;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_default_grace_is_ten_seconds_where_it_fits_else_a_third_of_the_ttl() {
        assert_eq!(default_grace(Duration::from_secs(30), &REDLOCK), Duration::from_secs(10));
        assert_eq!(default_grace(Duration::from_secs(60), &REDLOCK), Duration::from_secs(10));
        assert_eq!(default_grace(Duration::from_secs(3), &REDLOCK), Duration::from_secs(1));
        assert_eq!(default_grace(Duration::from_secs(6), &REDLOCK), Duration::from_secs(2));
        let p = plan(Duration::from_secs(30), &REDLOCK, None).unwrap();
        assert_eq!((p.grace, p.kill_margin, p.drift), (Duration::from_secs(10), ms(100), ms(302)));
        assert_eq!(p.stop_margin, ms(10_100));
    }

    #[test]
    fn the_largest_grace_is_half_the_ttl_less_drift_and_the_kill_margin() {
        assert_eq!(largest_grace(Duration::from_secs(3), &REDLOCK), Some(ms(1368)));
        assert_eq!(largest_grace(Duration::from_secs(6), &REDLOCK), Some(ms(2838)));
        assert_eq!(largest_grace(ms(500), &ClockDrift::NONE), Some(ms(200)));
        assert!(plan(Duration::from_secs(3), &REDLOCK, Some(ms(1368))).is_ok());
        assert!(plan(Duration::from_secs(3), &REDLOCK, Some(ms(1369))).is_err());
        assert_eq!(largest_grace(ms(4), &REDLOCK), None);
    }

    #[test]
    fn a_grace_that_does_not_fit_names_both_numbers_and_the_rule() {
        let err = plan(Duration::from_secs(6), &REDLOCK, Some(Duration::from_secs(4))).unwrap_err();
        assert!(err.contains("--grace 4s does not fit --ttl 6s"), "{err}");
        assert!(err.contains("largest --grace for --ttl 6s is 2s 838ms"), "{err}");
        assert!(err.contains("half-way through the lease"), "{err}");
        assert!(err.contains("a --ttl of 8s 372ms or more fits --grace 4s"), "{err}");
        assert_eq!(
            largest_grace(ms(8372), &REDLOCK).map(|l| l >= Duration::from_secs(4)),
            Some(true)
        );
        assert_eq!(
            largest_grace(ms(8371), &REDLOCK).map(|l| l >= Duration::from_secs(4)),
            Some(false)
        );
        let err = plan(ms(4), &REDLOCK, None).unwrap_err();
        assert!(err.contains("--ttl 4ms is too short"), "{err}");
        let shortest = (1..).find(|&t| largest_grace(ms(t), &REDLOCK).is_some()).unwrap();
        assert!(err.contains(&format!("give --ttl {shortest}ms or more")), "{err}");
    }
}
