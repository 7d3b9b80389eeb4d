//! A clock that reads its source and never adjusts anything.
//!
//! [`ObserveOnly`] lets the daemon measure and report the host clock's
//! offset without steering it. Steering requests are accepted and recorded,
//! but change no reading: [`Clock::frequency`] returns the last requested
//! frequency so that a discipline driving it proceeds as if it had been
//! applied (its offsets then do not follow its corrections, which is the
//! point: they show how far off the host clock really is).

use strata_wire::NtpTimestamp;

use super::{check_frequency, check_step, Clock, ClockError, LeapAction, TimeSource};

/// A read-only clock over a [`TimeSource`]; see the module doc.
#[derive(Debug, Clone)]
pub struct ObserveOnly<S: TimeSource> {
    source: S,
    requested_frequency_ppm: f64,
    requested_steps: u64,
    requested_step_total: f64,
    leap: LeapAction,
}

impl<S: TimeSource> ObserveOnly<S> {
    /// An observer of `source`.
    pub fn new(source: S) -> Self {
        Self {
            source,
            requested_frequency_ppm: 0.0,
            requested_steps: 0,
            requested_step_total: 0.0,
            leap: LeapAction::None,
        }
    }

    /// How many steps were requested (and not applied).
    pub fn requested_steps(&self) -> u64 {
        self.requested_steps
    }

    /// The sum of all requested steps (s).
    pub fn requested_step_total(&self) -> f64 {
        self.requested_step_total
    }

    /// The leap second last requested (not applied).
    pub fn leap(&self) -> LeapAction {
        self.leap
    }
}

impl<S: TimeSource> Clock for ObserveOnly<S> {
    fn now(&self) -> Result<NtpTimestamp, ClockError> {
        Ok(self.source.host_now())
    }

    fn step(&mut self, offset: f64) -> Result<(), ClockError> {
        let offset = check_step(offset)?;
        self.requested_steps += 1;
        self.requested_step_total += offset;
        Ok(())
    }

    fn set_frequency(&mut self, ppm: f64) -> Result<(), ClockError> {
        self.requested_frequency_ppm = check_frequency(ppm)?;
        Ok(())
    }

    fn frequency(&self) -> Result<f64, ClockError> {
        Ok(self.requested_frequency_ppm)
    }

    fn set_leap(&mut self, action: LeapAction) -> Result<(), ClockError> {
        self.leap = action;
        Ok(())
    }

    fn from_host(&self, host: NtpTimestamp) -> NtpTimestamp {
        host
    }

    fn adjusts_host(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ManualTime;
    use strata_wire::NtpDuration;

    #[test]
    fn never_changes_readings() {
        let start = NtpTimestamp::from_unix(1_795_000_000, 0);
        let t = ManualTime::new(start);
        let mut clock = ObserveOnly::new(t.clone());
        assert_eq!(clock.now().unwrap(), start);
        clock.step(0.5).unwrap();
        clock.step(-0.25).unwrap();
        clock.set_frequency(-42.0).unwrap();
        clock.set_leap(LeapAction::Delete).unwrap();
        assert_eq!(clock.now().unwrap(), start);
        t.advance_secs(1000.0);
        // No frequency applied: exactly 1000 s later.
        assert_eq!(
            clock.now().unwrap() - start,
            NtpDuration::from_seconds(1000.0)
        );
        let host = t.now();
        assert_eq!(clock.from_host(host), host);
        // The requests are recorded.
        assert_eq!(clock.frequency().unwrap(), -42.0);
        assert_eq!(clock.requested_steps(), 2);
        assert_eq!(clock.requested_step_total(), 0.25);
        assert_eq!(clock.leap(), LeapAction::Delete);
        assert!(!clock.adjusts_host());
        assert!(clock.set_frequency(f64::NAN).is_err());
        assert_eq!(clock.frequency().unwrap(), -42.0);
    }
}
