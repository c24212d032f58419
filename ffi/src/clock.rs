//! The clock every counted call is timed with.
//!
//! Timing is always on, so its two clock reads per call are most of what
//! counting costs (see [`crate::stats`]). On x86-64, where the kernel itself
//! keeps time with the CPU's timestamp counter (its clocksource is `tsc`:
//! the counter is invariant and in step across CPUs), the counter is read
//! directly: about 10 ns a read on the virtual machine this was measured
//! on, against 23 ns for `clock_gettime` through the vDSO, which reads the
//! same counter and scales it under a sequence lock. Anywhere else, or
//! until the counter's rate is known, calls are timed with [`Instant`].
//!
//! The rate is measured, not looked up: the first timed call notes the
//! counter and the monotonic clock, and the first one at least
//! [`CALIBRATION`] later divides the two intervals. Each such reading is
//! bracketed by two counter reads, and a rate whose brackets add up to more
//! than a thousandth of its interval (the thread was preempted between the
//! reads) is not taken: a later call tries again over a longer span. A
//! thousandth is far below what a latency histogram resolves. (Under
//! valgrind, whose reads are slow, that takes seconds: a short run there
//! is timed with the monotonic clock throughout.)

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How long the rate is measured over before the counter is used.
const CALIBRATION: Duration = Duration::from_millis(20);

/// A call's start, on whichever clock was in use when it started.
#[derive(Clone, Copy)]
pub(crate) enum Start {
    /// Timestamp-counter ticks.
    Ticks(u64),
    /// The monotonic clock.
    Clock(Instant),
}

/// The counter's reference reading, taken at the first timed call; `None`
/// where the counter is not to be used.
struct Reference(Paired);

/// The monotonic clock read between two counter reads: their midpoint and
/// how far apart they were.
struct Paired {
    ticks: u64,
    at: Instant,
    spread: u64,
}

fn paired() -> Paired {
    let before = ticks();
    let at = Instant::now();
    let spread = ticks().saturating_sub(before);
    Paired { ticks: before + spread / 2, at, spread }
}

static REFERENCE: OnceLock<Option<Reference>> = OnceLock::new();

/// Microseconds per tick as a fraction of 2^32; 0 until calibrated.
static MICROS_PER_TICK_Q32: AtomicU64 = AtomicU64::new(0);

/// Now, for timing a call.
pub(crate) fn start() -> Start {
    if MICROS_PER_TICK_Q32.load(Relaxed) == 0 {
        if let Err(now) = calibrate() {
            return Start::Clock(now);
        }
    }
    Start::Ticks(ticks())
}

/// Whole microseconds since `start`, rounded up (a call that took any time
/// at all took at least 1 µs, as [`Duration`] arithmetic rounds here too).
pub(crate) fn micros_since(start: Start) -> u64 {
    match start {
        Start::Ticks(t0) => {
            // A counter read on another CPU a hair behind: no time passed.
            let ticks = ticks().saturating_sub(t0);
            let q32 = u128::from(ticks) * u128::from(MICROS_PER_TICK_Q32.load(Relaxed));
            u64::try_from(q32.div_ceil(1 << 32)).unwrap_or(u64::MAX)
        }
        Start::Clock(at) => {
            let took = at.elapsed();
            // In u64: `as_nanos` is a u128, and its division a library call.
            took.as_secs()
                .saturating_mul(1_000_000)
                .saturating_add(u64::from(took.subsec_nanos().div_ceil(1000)))
        }
    }
}

/// Takes the reference reading, or once it is old enough, the rate:
/// `Ok` when the counter may be used from now on, else the monotonic
/// clock's now (read for the attempt already, so the caller need not read
/// it again).
fn calibrate() -> Result<(), Instant> {
    let reference = REFERENCE.get_or_init(|| {
        // The first clock read of a process is slow (its first call into
        // the vDSO): not between the bracketing reads.
        let _ = Instant::now();
        usable().then(|| Reference(paired()))
    });
    let Some(Reference(r)) = reference else { return Err(Instant::now()) };
    let now = paired();
    let elapsed = now.at.duration_since(r.at);
    let ticks = now.ticks.saturating_sub(r.ticks);
    if elapsed < CALIBRATION || ticks == 0 || (r.spread + now.spread) > ticks / 1_000 {
        return Err(now.at);
    }
    let micros_q32 = (elapsed.as_nanos() << 32) / 1000 / u128::from(ticks);
    match u64::try_from(micros_q32) {
        Ok(q32 @ 1..) => {
            MICROS_PER_TICK_Q32.store(q32, Relaxed);
            Ok(())
        }
        _ => Err(now.at),
    }
}

/// Whether the kernel keeps time with the timestamp counter here.
fn usable() -> bool {
    cfg!(target_arch = "x86_64")
        && std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|s| s.trim() == "tsc")
}

#[cfg(target_arch = "x86_64")]
fn ticks() -> u64 {
    // SAFETY: `rdtsc` exists on every x86-64 CPU and only reads a counter;
    // it is used only where the kernel's own clock is this counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn ticks() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Once calibrated (where the counter is usable), a timed sleep reads
    /// as about as long as the monotonic clock says, in microseconds.
    #[test]
    fn the_counter_agrees_with_the_monotonic_clock() {
        let first = start();
        std::thread::sleep(CALIBRATION + Duration::from_millis(5));
        let _ = micros_since(first);
        let mut s = start();
        if usable() {
            // A preempted calibration waits for a longer span.
            let tried = Instant::now();
            while matches!(s, Start::Clock(_)) && tried.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
                s = start();
            }
            assert!(matches!(s, Start::Ticks(_)), "never calibrated");
        }
        // The clock's own span is bracketed: the counter's must fall
        // within the outer one and cover the inner one, give or take 2 %
        // (many times the rate's error) and a microsecond of rounding.
        let outer = Instant::now();
        let s = start();
        let inner = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let inner_us = inner.elapsed().as_micros() as u64;
        let ours = micros_since(s);
        let outer_us = outer.elapsed().as_micros() as u64;
        assert!(ours + 1 >= inner_us - inner_us / 50, "counter {ours} µs, at least {inner_us} µs");
        assert!(ours <= outer_us + outer_us / 50 + 1, "counter {ours} µs, at most {outer_us} µs");
        assert!(micros_since(start()) <= 1_000, "an instant reads as more than a millisecond");
    }

    #[test]
    fn the_monotonic_fallback_rounds_up_to_whole_microseconds() {
        let at = Instant::now();
        assert!(micros_since(Start::Clock(at)) >= 1);
        let past = Instant::now() - Duration::from_micros(1500);
        let us = micros_since(Start::Clock(past));
        assert!((1500..1_000_000).contains(&us), "{us}");
    }
}
