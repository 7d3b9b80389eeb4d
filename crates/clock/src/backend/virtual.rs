//! A simulated, steerable clock over a [`TimeSource`], and a hand-driven
//! time source for tests.
//!
//! [`VirtualClock`] never touches the host clock. It maps host time to its
//! own timescale with a piecewise-linear map:
//!
//! ```text
//! virtual = anchor_virtual + (host - anchor_host) × (1 + (frequency_error_ppm + correction_ppm) × 1e-6)
//! ```
//!
//! `step` moves `anchor_virtual`; `set_frequency` re-anchors at the current
//! host instant (so the reading is continuous) and changes `correction_ppm`.
//! [`Clock::from_host`] applies exactly the map [`Clock::now`] uses, so a
//! kernel receive timestamp converts consistently with a reading taken at
//! the same instant.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use strata_wire::{NtpDuration, NtpTimestamp};

use super::{check_frequency, check_step, Clock, ClockError, HostMap, LeapAction, TimeSource};

/// A simulated clock with a frequency error, steered like a real one.
#[derive(Debug, Clone)]
pub struct VirtualClock<S: TimeSource> {
    source: S,
    anchor_host: NtpTimestamp,
    anchor_virtual: NtpTimestamp,
    frequency_error_ppm: f64,
    correction_ppm: f64,
    leap: LeapAction,
}

impl<S: TimeSource> VirtualClock<S> {
    /// A virtual clock that reads `initial_offset` seconds ahead of the host
    /// clock now (negative = behind) and runs `frequency_error_ppm` fast
    /// (negative = slow) before any correction. Non-finite inputs count as
    /// zero.
    pub fn new(source: S, initial_offset: f64, frequency_error_ppm: f64) -> Self {
        let anchor_host = source.host_now();
        let initial = if initial_offset.is_finite() {
            initial_offset
        } else {
            0.0
        };
        Self {
            source,
            anchor_host,
            anchor_virtual: anchor_host + NtpDuration::from_seconds(initial),
            frequency_error_ppm: if frequency_error_ppm.is_finite() {
                frequency_error_ppm
            } else {
                0.0
            },
            correction_ppm: 0.0,
            leap: LeapAction::None,
        }
    }

    /// The time source this clock is computed from.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The uncorrected frequency error (ppm, positive = fast).
    pub fn frequency_error_ppm(&self) -> f64 {
        self.frequency_error_ppm
    }

    /// The leap second last armed with [`Clock::set_leap`] (recorded only:
    /// the virtual clock does not apply leap seconds).
    pub fn leap(&self) -> LeapAction {
        self.leap
    }

    /// How far this clock reads ahead of the host clock now (s): the true
    /// error of the clock when the host clock is the reference.
    pub fn offset_from_host(&self) -> f64 {
        let host = self.source.host_now();
        (self.map(host) - host).to_seconds()
    }

    fn rate_ppm(&self) -> f64 {
        self.frequency_error_ppm + self.correction_ppm
    }

    fn map(&self, host: NtpTimestamp) -> NtpTimestamp {
        self.host_map().apply(host)
    }
}

impl<S: TimeSource> Clock for VirtualClock<S> {
    fn now(&self) -> Result<NtpTimestamp, ClockError> {
        Ok(self.map(self.source.host_now()))
    }

    fn step(&mut self, offset: f64) -> Result<(), ClockError> {
        let offset = check_step(offset)?;
        self.anchor_virtual += NtpDuration::from_seconds(offset);
        Ok(())
    }

    fn set_frequency(&mut self, ppm: f64) -> Result<(), ClockError> {
        let ppm = check_frequency(ppm)?;
        let host = self.source.host_now();
        self.anchor_virtual = self.map(host);
        self.anchor_host = host;
        self.correction_ppm = ppm;
        Ok(())
    }

    fn frequency(&self) -> Result<f64, ClockError> {
        Ok(self.correction_ppm)
    }

    fn set_leap(&mut self, action: LeapAction) -> Result<(), ClockError> {
        self.leap = action;
        Ok(())
    }

    fn from_host(&self, host: NtpTimestamp) -> NtpTimestamp {
        self.map(host)
    }

    fn adjusts_host(&self) -> bool {
        false
    }

    /// The map from the source's readings (the host clock for
    /// `HostRealtime`) to this clock.
    fn host_map(&self) -> HostMap {
        HostMap {
            anchor_host: self.anchor_host,
            anchor_clock: self.anchor_virtual,
            rate_ppm: self.rate_ppm(),
        }
    }
}

/// A [`TimeSource`] that only moves when told to. Clones share the same
/// time, so a test can keep one handle and give another to a clock.
#[derive(Debug, Clone, Default)]
pub struct ManualTime {
    bits: Arc<AtomicU64>,
}

impl ManualTime {
    /// A manual time source reading `start`.
    #[must_use]
    pub fn new(start: NtpTimestamp) -> Self {
        Self {
            bits: Arc::new(AtomicU64::new(start.to_bits())),
        }
    }

    /// The current reading.
    #[must_use]
    pub fn now(&self) -> NtpTimestamp {
        NtpTimestamp::from_bits(self.bits.load(Ordering::SeqCst))
    }

    /// Sets the reading.
    pub fn set(&self, to: NtpTimestamp) {
        self.bits.store(to.to_bits(), Ordering::SeqCst);
    }

    /// Moves the reading by `by` (negative moves it back).
    pub fn advance(&self, by: NtpDuration) {
        #[allow(clippy::cast_sign_loss)] // two's complement add: wraps like NtpTimestamp
        let delta = by.to_bits() as u64;
        self.bits.fetch_add(delta, Ordering::SeqCst);
    }

    /// Moves the reading by `secs` seconds.
    pub fn advance_secs(&self, secs: f64) {
        self.advance(NtpDuration::from_seconds(secs));
    }
}

impl TimeSource for ManualTime {
    fn host_now(&self) -> NtpTimestamp {
        self.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_795_000_000;

    fn secs(d: NtpDuration) -> f64 {
        d.to_seconds()
    }

    #[test]
    fn manual_time_moves_only_when_told() {
        let t = ManualTime::new(NtpTimestamp::from_unix(START, 0));
        let shared = t.clone();
        assert_eq!(t.host_now(), NtpTimestamp::from_unix(START, 0));
        t.advance_secs(1.5);
        assert_eq!(
            shared.host_now(),
            NtpTimestamp::from_unix(START + 1, 500_000_000)
        );
        t.advance_secs(-0.5);
        assert_eq!(shared.host_now(), NtpTimestamp::from_unix(START + 1, 0));
        t.set(NtpTimestamp::from_unix(START, 0));
        assert_eq!(shared.now(), NtpTimestamp::from_unix(START, 0));
    }

    #[test]
    fn host_map_reads_as_the_clock_does() {
        let t = ManualTime::new(NtpTimestamp::from_unix(START, 0));
        let mut c = VirtualClock::new(t.clone(), 0.25, 40.0);
        let probe = |c: &VirtualClock<ManualTime>| {
            let map = c.host_map();
            for dt in [0.0, 0.001, 3.5, 1000.0] {
                let host = t.now() + NtpDuration::from_seconds(dt);
                assert_eq!(map.apply(host), c.from_host(host), "dt {dt}");
            }
            assert_eq!(map.apply(t.now()), c.now().unwrap());
        };
        probe(&c);
        t.advance_secs(10.0);
        c.step(-0.125).unwrap();
        probe(&c);
        t.advance_secs(5.0);
        c.set_frequency(-40.0).unwrap();
        probe(&c);
        assert_eq!(c.host_map().rate_ppm, 0.0);
        let observe = super::super::ObserveOnly::new(t.clone());
        assert_eq!(observe.host_map().apply(t.now()), observe.now().unwrap());
    }

    #[test]
    fn maps_offset_and_frequency_error() {
        let t = ManualTime::new(NtpTimestamp::from_unix(START, 0));
        let clock = VirtualClock::new(t.clone(), 0.5, 50.0);
        assert!((clock.offset_from_host() - 0.5).abs() < 1e-9);
        t.advance_secs(1000.0);
        // 50 ppm fast: 50 ms gained over 1000 s.
        let host = t.now();
        assert!((secs(clock.now().unwrap() - host) - 0.55).abs() < 1e-9);
        assert!((clock.offset_from_host() - 0.55).abs() < 1e-9);
        // from_host is the same map now() uses, also for earlier instants.
        assert_eq!(clock.from_host(host), clock.now().unwrap());
        let earlier = host - NtpDuration::from_seconds(500.0);
        assert!((secs(clock.from_host(earlier) - earlier) - 0.525).abs() < 1e-9);
        assert!(!clock.adjusts_host());
    }

    #[test]
    fn step_moves_the_reading() {
        let t = ManualTime::new(NtpTimestamp::from_unix(START, 0));
        let mut clock = VirtualClock::new(t.clone(), 0.5, 0.0);
        clock.step(-0.5).unwrap();
        assert!(clock.offset_from_host().abs() < 1e-9);
        clock.step(2.25).unwrap();
        assert!((clock.offset_from_host() - 2.25).abs() < 1e-9);
        assert!(clock.step(f64::NAN).is_err());
        assert!((clock.offset_from_host() - 2.25).abs() < 1e-9);
    }

    #[test]
    fn frequency_correction_is_continuous_and_cancels_the_error() {
        let t = ManualTime::new(NtpTimestamp::from_unix(START, 0));
        let mut clock = VirtualClock::new(t.clone(), 0.0, 50.0);
        t.advance_secs(100.0);
        let before = clock.now().unwrap();
        clock.set_frequency(-50.0).unwrap();
        assert_eq!(clock.frequency().unwrap(), -50.0);
        // Re-anchoring keeps the reading continuous.
        assert_eq!(clock.now().unwrap(), before);
        let off = clock.offset_from_host();
        assert!((off - 0.005).abs() < 1e-9, "{off}");
        // Corrected: no further drift.
        t.advance_secs(10_000.0);
        assert!((clock.offset_from_host() - off).abs() < 1e-9);
        // Over-correcting makes it run slow.
        clock.set_frequency(-60.0).unwrap();
        t.advance_secs(1000.0);
        assert!((clock.offset_from_host() - (off - 0.010)).abs() < 1e-9);
        // Out-of-range requests are refused and change nothing.
        assert!(clock.set_frequency(600.0).is_err());
        assert!(clock.set_frequency(f64::INFINITY).is_err());
        assert_eq!(clock.frequency().unwrap(), -60.0);
    }

    #[test]
    fn leap_is_recorded() {
        let t = ManualTime::new(NtpTimestamp::from_unix(START, 0));
        let mut clock = VirtualClock::new(t, 0.0, 0.0);
        clock.set_leap(LeapAction::Insert).unwrap();
        assert_eq!(clock.leap(), LeapAction::Insert);
    }
}
