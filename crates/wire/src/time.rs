//! NTP time formats: the 64-bit timestamp, the 32-bit short format and a
//! signed 32.32 fixed-point duration.
//!
//! A 64-bit NTP timestamp carries seconds modulo 2^32 (an *era* lasts about
//! 136 years; era 0 ends on 2036-02-07 06:28:16 UTC). Timestamps are
//! therefore compared only through differences: `a - b` is the signed
//! [`NtpDuration`] of the shortest way from `b` to `a`, which is right as
//! long as the two are within 68 years of each other, across an era wrap
//! too. An absolute date is recovered relative to a local pivot time with
//! [`NtpTimestamp::to_unix_near`].

use core::fmt;
use core::ops::{Add, AddAssign, Neg, Sub, SubAssign};

/// Seconds from the NTP prime epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const UNIX_OFFSET: i64 = 2_208_988_800;

const FRAC: f64 = 4_294_967_296.0; // 2^32

/// A 64-bit NTP timestamp: 32 bits of seconds (modulo an era) and 32 bits of
/// fraction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NtpTimestamp(u64);

impl NtpTimestamp {
    /// The zero timestamp, which NTP uses to mean "unknown / not set".
    pub const ZERO: Self = NtpTimestamp(0);

    /// From the raw 64 bits as they appear on the wire (host order).
    #[must_use]
    pub const fn from_bits(bits: u64) -> Self {
        NtpTimestamp(bits)
    }

    /// The raw 64 bits (host order).
    #[must_use]
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// From seconds (modulo 2^32) and a 32-bit fraction.
    #[must_use]
    pub const fn from_parts(seconds: u32, fraction: u32) -> Self {
        NtpTimestamp(((seconds as u64) << 32) | fraction as u64)
    }

    /// The seconds field (modulo the era).
    #[must_use]
    pub const fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The fraction field, in units of 2^-32 s.
    #[must_use]
    pub const fn fraction(self) -> u32 {
        (self.0 & 0xffff_ffff) as u32
    }

    /// Whether this is the zero timestamp.
    #[must_use]
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// From a Unix time (seconds since 1970 and nanoseconds, `nanos < 10^9`).
    /// Any era is accepted; the era number is dropped, as on the wire.
    #[must_use]
    pub fn from_unix(secs: i64, nanos: u32) -> Self {
        #[allow(clippy::cast_sign_loss)] // modulo 2^32 by design: the era is dropped
        let s = (secs.wrapping_add(UNIX_OFFSET) as u64) & 0xffff_ffff;
        let frac = (u64::from(nanos.min(999_999_999)) << 32) / 1_000_000_000;
        NtpTimestamp((s << 32) | frac)
    }

    /// Resolves the era relative to `pivot_unix_secs` (a local Unix time the
    /// timestamp is known to be within 68 years of) and returns Unix seconds
    /// and nanoseconds.
    #[must_use]
    pub fn to_unix_near(self, pivot_unix_secs: i64) -> (i64, u32) {
        let pivot = NtpTimestamp::from_unix(pivot_unix_secs, 0);
        let delta = self - pivot; // shortest signed distance, era-safe
        let d = delta.to_bits();
        let whole = d >> 32; // arithmetic shift: floor
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // masked to 32 bits
        let frac = (d & 0xffff_ffff) as u32;
        let nanos = (u64::from(frac) * 1_000_000_000) >> 32;
        #[allow(clippy::cast_possible_truncation)] // < 10^9
        (pivot_unix_secs + whole, nanos as u32)
    }
}

impl fmt::Debug for NtpTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NtpTimestamp({}.{:010})",
            self.seconds(),
            (u64::from(self.fraction()) * 10_000_000_000) >> 32
        )
    }
}

impl Sub for NtpTimestamp {
    type Output = NtpDuration;
    /// The signed distance `self - rhs`, correct across era boundaries as long
    /// as the true distance is under 2^31 seconds.
    fn sub(self, rhs: Self) -> NtpDuration {
        #[allow(clippy::cast_possible_wrap)] // two's complement wrap is the point
        NtpDuration(self.0.wrapping_sub(rhs.0) as i64)
    }
}

impl Add<NtpDuration> for NtpTimestamp {
    type Output = NtpTimestamp;
    fn add(self, rhs: NtpDuration) -> NtpTimestamp {
        #[allow(clippy::cast_sign_loss)] // two's complement wrap is the point
        NtpTimestamp(self.0.wrapping_add(rhs.0 as u64))
    }
}

impl AddAssign<NtpDuration> for NtpTimestamp {
    fn add_assign(&mut self, rhs: NtpDuration) {
        *self = *self + rhs;
    }
}

impl Sub<NtpDuration> for NtpTimestamp {
    type Output = NtpTimestamp;
    fn sub(self, rhs: NtpDuration) -> NtpTimestamp {
        self + (-rhs)
    }
}

impl SubAssign<NtpDuration> for NtpTimestamp {
    fn sub_assign(&mut self, rhs: NtpDuration) {
        *self = *self - rhs;
    }
}

/// A signed duration in 32.32 fixed point (range ±68 years, resolution
/// 2^-32 s), the natural result of subtracting two [`NtpTimestamp`]s.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpDuration(i64);

impl NtpDuration {
    /// Zero.
    pub const ZERO: Self = NtpDuration(0);
    /// The largest representable duration.
    pub const MAX: Self = NtpDuration(i64::MAX);
    /// The most negative representable duration.
    pub const MIN: Self = NtpDuration(i64::MIN);
    /// One second.
    pub const ONE_SECOND: Self = NtpDuration(1 << 32);

    /// From raw 32.32 fixed-point bits.
    #[must_use]
    pub const fn from_bits(bits: i64) -> Self {
        NtpDuration(bits)
    }

    /// The raw 32.32 fixed-point bits.
    #[must_use]
    pub const fn to_bits(self) -> i64 {
        self.0
    }

    /// From seconds; saturates at the range ends, NaN gives zero.
    #[must_use]
    pub fn from_seconds(secs: f64) -> Self {
        // `as` from f64 saturates and maps NaN to 0.
        #[allow(clippy::cast_possible_truncation)]
        NtpDuration((secs * FRAC) as i64)
    }

    /// In seconds.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn to_seconds(self) -> f64 {
        self.0 as f64 / FRAC
    }

    /// From nanoseconds (saturating).
    #[must_use]
    pub fn from_nanos(nanos: i64) -> Self {
        let v = (i128::from(nanos) << 32) / 1_000_000_000;
        #[allow(clippy::cast_possible_truncation)] // clamped first
        NtpDuration(v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
    }

    /// In nanoseconds (rounded toward negative infinity).
    #[must_use]
    pub fn to_nanos(self) -> i64 {
        #[allow(clippy::cast_possible_truncation)] // |result| < 2^63 since 10^9 < 2^32
        let v = ((i128::from(self.0) * 1_000_000_000) >> 32) as i64;
        v
    }

    /// The absolute value (saturating).
    #[must_use]
    pub const fn abs(self) -> Self {
        NtpDuration(self.0.saturating_abs())
    }

    /// From a poll exponent: 2^`log2` seconds, saturating, for -32..=31.
    #[must_use]
    pub fn from_log2(log2: i8) -> Self {
        let shift = i32::from(log2) + 32;
        if shift <= 0 {
            NtpDuration(0)
        } else if shift >= 63 {
            NtpDuration::MAX
        } else {
            NtpDuration(1i64 << shift)
        }
    }
}

impl fmt::Debug for NtpDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NtpDuration({:.9}s)", self.to_seconds())
    }
}

impl Add for NtpDuration {
    type Output = NtpDuration;
    fn add(self, rhs: Self) -> Self {
        NtpDuration(self.0.saturating_add(rhs.0))
    }
}

impl Sub for NtpDuration {
    type Output = NtpDuration;
    fn sub(self, rhs: Self) -> Self {
        NtpDuration(self.0.saturating_sub(rhs.0))
    }
}

impl Neg for NtpDuration {
    type Output = NtpDuration;
    fn neg(self) -> Self {
        NtpDuration(self.0.saturating_neg())
    }
}

/// The 32-bit short format: unsigned 16.16 fixed-point seconds, used for
/// root delay and root dispersion.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpShort(u32);

impl NtpShort {
    /// Zero.
    pub const ZERO: Self = NtpShort(0);
    /// The largest value (about 65536 s).
    pub const MAX: Self = NtpShort(u32::MAX);

    /// From the raw 32 bits (host order).
    #[must_use]
    pub const fn from_bits(bits: u32) -> Self {
        NtpShort(bits)
    }

    /// The raw 32 bits (host order).
    #[must_use]
    pub const fn to_bits(self) -> u32 {
        self.0
    }

    /// From seconds; negative and NaN give zero, large values saturate.
    #[must_use]
    pub fn from_seconds(secs: f64) -> Self {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // saturating cast
        NtpShort((secs * 65536.0) as u32)
    }

    /// In seconds.
    #[must_use]
    pub fn to_seconds(self) -> f64 {
        f64::from(self.0) / 65536.0
    }
}

impl fmt::Debug for NtpShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NtpShort({:.6}s)", self.to_seconds())
    }
}

impl From<NtpDuration> for NtpShort {
    /// Saturating conversion; negative durations give zero.
    fn from(d: NtpDuration) -> Self {
        let bits = d.to_bits() >> 16;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped first
        NtpShort(bits.clamp(0, i64::from(u32::MAX)) as u32)
    }
}

impl From<NtpShort> for NtpDuration {
    fn from(s: NtpShort) -> Self {
        NtpDuration(i64::from(s.0) << 16)
    }
}

/// The RFC 5905 on-wire equations for one request/reply exchange: `t1` the
/// request left the client, `t2` it reached the server, `t3` the reply left
/// the server, `t4` it reached the client. Returns `(offset, delay)` in
/// seconds, where offset is theta = server − client (positive when the
/// client's clock is behind) and delay the round trip minus the server's
/// hold time.
#[must_use]
pub fn offset_and_delay(
    t1: NtpTimestamp,
    t2: NtpTimestamp,
    t3: NtpTimestamp,
    t4: NtpTimestamp,
) -> (f64, f64) {
    let offset = ((t2 - t1).to_seconds() + (t3 - t4).to_seconds()) / 2.0;
    let delay = (t4 - t1).to_seconds() - (t3 - t2).to_seconds();
    (offset, delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_roundtrip_near_pivot() {
        let now = 1_795_000_000; // 2026
        let ts = NtpTimestamp::from_unix(now, 250_000_000);
        assert_eq!(ts.to_unix_near(now + 1000), (now, 250_000_000));
    }

    #[test]
    fn era_wrap_difference() {
        // 2036-02-07 06:28:16 UTC is Unix 2085978496: NTP seconds wrap to 0.
        let wrap = 2_085_978_496;
        let before = NtpTimestamp::from_unix(wrap - 1, 0);
        let after = NtpTimestamp::from_unix(wrap + 1, 0);
        assert_eq!(before.seconds(), u32::MAX);
        assert_eq!(after.seconds(), 1);
        assert_eq!((after - before).to_seconds(), 2.0);
        assert_eq!((before - after).to_seconds(), -2.0);
        assert_eq!(after.to_unix_near(wrap - 100), (wrap + 1, 0));
        assert_eq!(before.to_unix_near(wrap + 100), (wrap - 1, 0));
        assert_eq!(before + NtpDuration::from_seconds(2.0), after);
    }

    #[test]
    fn duration_conversions() {
        assert_eq!(NtpDuration::from_seconds(1.5).to_bits(), 3 << 31);
        assert_eq!(NtpDuration::from_nanos(-500_000_000).to_seconds(), -0.5);
        assert_eq!(NtpDuration::from_seconds(0.25).to_nanos(), 250_000_000);
        assert_eq!(NtpDuration::from_log2(-2).to_seconds(), 0.25);
        assert_eq!(NtpDuration::from_seconds(f64::NAN), NtpDuration::ZERO);
        assert_eq!(NtpDuration::from_seconds(1e30), NtpDuration::MAX);
    }

    #[test]
    fn on_wire_equations() {
        // Client 0.5 s behind, 10 ms each way, 1 ms in the server.
        let t1 = NtpTimestamp::from_unix(1_800_000_000, 0);
        let t2 = t1 + NtpDuration::from_seconds(0.510);
        let t3 = t2 + NtpDuration::from_seconds(0.001);
        let t4 = t1 + NtpDuration::from_seconds(0.021);
        let (offset, delay) = offset_and_delay(t1, t2, t3, t4);
        assert!((offset - 0.5).abs() < 1e-9, "{offset}");
        assert!((delay - 0.020).abs() < 1e-9, "{delay}");
    }

    #[test]
    fn short_conversions() {
        assert_eq!(NtpShort::from_seconds(1.0).to_bits(), 0x0001_0000);
        assert_eq!(NtpShort::from_seconds(-3.0), NtpShort::ZERO);
        assert_eq!(
            NtpShort::from(NtpDuration::from_seconds(0.5)).to_seconds(),
            0.5
        );
        assert_eq!(
            NtpDuration::from(NtpShort::from_seconds(2.0)).to_seconds(),
            2.0
        );
    }
}
