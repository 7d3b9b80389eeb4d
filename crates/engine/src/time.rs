//! The engine's monotonic timebase.
//!
//! The engine never reads a clock. Callers pass an [`Instant`] on a
//! monotonic timebase of their choosing (the daemon uses
//! `CLOCK_MONOTONIC`, the simulator its virtual time); deadlines returned
//! by [`crate::Node::poll_timeout`] are on the same timebase. The NTP
//! timescale of the disciplined clock is separate and reaches the engine
//! only as [`strata_wire::NtpTimestamp`] values (receive and transmit
//! timestamps).

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point on the caller's monotonic timebase, in nanoseconds from an
/// arbitrary origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the timebase.
    pub const ZERO: Instant = Instant(0);

    /// From nanoseconds since the origin.
    #[must_use]
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// Nanoseconds since the origin.
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// From seconds since the origin; negative and NaN give the origin.
    #[must_use]
    pub fn from_secs_f64(secs: f64) -> Self {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // saturating cast
        Instant((secs * 1e9).round() as u64)
    }

    /// Seconds since the origin.
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // nanosecond resolution over centuries is not needed
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// `self - earlier`, or zero when `earlier` is later.
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// 2^`log2` seconds as a [`Duration`], for poll exponents (-32..=31 are
/// meaningful; values outside saturate).
#[must_use]
pub fn poll_interval(log2: i8) -> Duration {
    if log2 >= 0 {
        Duration::from_secs(1u64 << log2.min(40))
    } else {
        let shift = u32::from(log2.unsigned_abs()).min(63);
        Duration::from_nanos(1_000_000_000u64 >> shift.min(63))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_intervals() {
        assert_eq!(poll_interval(0), Duration::from_secs(1));
        assert_eq!(poll_interval(6), Duration::from_secs(64));
        assert_eq!(poll_interval(-2), Duration::from_millis(250));
        assert_eq!(poll_interval(-4), Duration::from_micros(62_500));
    }

    #[test]
    fn instant_arithmetic() {
        let a = Instant::from_secs_f64(1.5);
        let b = a + Duration::from_millis(500);
        assert_eq!(b.as_secs_f64(), 2.0);
        assert_eq!(b - a, Duration::from_millis(500));
        assert_eq!(a - b, Duration::ZERO);
    }
}
