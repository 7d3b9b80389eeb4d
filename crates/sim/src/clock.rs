//! A simulated oscillator and clock: initial offset, frequency error,
//! random-walk frequency wander and temperature-like frequency steps,
//! steered by the engine's [`ClockCommand`]s.
//!
//! All times are true (simulation) time in seconds since the start of the
//! run; the clock reading is seconds since the simulation epoch as seen by
//! this host.

use strata_engine::ClockCommand;
use strata_wire::{NtpDuration, NtpTimestamp};

/// Unix time of the simulation's start (true time 0).
pub const EPOCH_UNIX: i64 = 1_800_000_000;

/// The physical properties of a host's clock.
#[derive(Clone, Debug, PartialEq)]
pub struct ClockModel {
    /// Reading minus true time at start (s; positive = ahead).
    pub initial_offset: f64,
    /// The oscillator's frequency error (ppm; positive = runs fast).
    pub frequency_error_ppm: f64,
    /// Random-walk frequency wander: the standard deviation of the
    /// frequency change over one second (ppm); 0 disables it.
    pub wander_ppm_per_sqrt_s: f64,
    /// Temperature-like steps: at true time `.0` (s) the frequency error
    /// changes by `.1` ppm.
    pub frequency_steps: Vec<(f64, f64)>,
}

impl ClockModel {
    /// A perfect clock.
    #[must_use]
    pub fn perfect() -> Self {
        Self::offset(0.0, 0.0)
    }

    /// A clock with a fixed offset and frequency error, no wander.
    #[must_use]
    pub fn offset(initial_offset: f64, frequency_error_ppm: f64) -> Self {
        ClockModel {
            initial_offset,
            frequency_error_ppm,
            wander_ppm_per_sqrt_s: 0.0,
            frequency_steps: Vec::new(),
        }
    }
}

/// A running simulated clock.
#[derive(Clone, Debug)]
pub struct SimClock {
    /// Reading at `anchor` (s since the epoch).
    reading: f64,
    /// True time of the last change of rate (s).
    anchor: f64,
    /// The oscillator's current frequency error (ppm).
    error_ppm: f64,
    /// The total correction commanded by the discipline (ppm).
    correction_ppm: f64,
    steps: u32,
    step_total: f64,
}

impl SimClock {
    /// A clock in the start state of `model`.
    #[must_use]
    pub fn new(model: &ClockModel) -> Self {
        SimClock {
            reading: model.initial_offset,
            anchor: 0.0,
            error_ppm: model.frequency_error_ppm,
            correction_ppm: 0.0,
            steps: 0,
            step_total: 0.0,
        }
    }

    /// The reading at true time `t` (s since the epoch).
    #[must_use]
    pub fn read(&self, t: f64) -> f64 {
        self.reading + (t - self.anchor) * (1.0 + (self.error_ppm + self.correction_ppm) * 1e-6)
    }

    /// The reading at true time `t` as an NTP timestamp.
    #[must_use]
    pub fn stamp(&self, t: f64) -> NtpTimestamp {
        NtpTimestamp::from_unix(EPOCH_UNIX, 0) + NtpDuration::from_seconds(self.read(t))
    }

    /// The true clock error at `t`: reading − true time (s; positive =
    /// ahead).
    #[must_use]
    pub fn error(&self, t: f64) -> f64 {
        self.read(t) - t
    }

    /// The oscillator's current frequency error (ppm).
    #[must_use]
    pub fn frequency_error_ppm(&self) -> f64 {
        self.error_ppm
    }

    /// The correction currently applied by the discipline (ppm).
    #[must_use]
    pub fn correction_ppm(&self) -> f64 {
        self.correction_ppm
    }

    /// How many times the clock was stepped.
    #[must_use]
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The sum of all steps (s).
    #[must_use]
    pub fn step_total(&self) -> f64 {
        self.step_total
    }

    fn reanchor(&mut self, t: f64) {
        self.reading = self.read(t);
        self.anchor = t;
    }

    /// Applies an engine clock command at true time `t`.
    pub fn apply(&mut self, t: f64, cmd: ClockCommand) {
        self.reanchor(t);
        match cmd {
            ClockCommand::Step { offset } => {
                self.reading += offset;
                self.steps += 1;
                self.step_total += offset;
            }
            ClockCommand::SetFrequency { ppm } => self.correction_ppm = ppm,
        }
    }

    /// Changes the oscillator's frequency error by `delta_ppm` at true time
    /// `t` (wander and temperature steps).
    pub fn shift_frequency(&mut self, t: f64, delta_ppm: f64) {
        self.reanchor(t);
        self.error_ppm += delta_ppm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drifts_steps_and_slews() {
        let mut c = SimClock::new(&ClockModel::offset(0.5, 50.0));
        assert!((c.error(0.0) - 0.5).abs() < 1e-12);
        assert!((c.error(1000.0) - 0.55).abs() < 1e-9);
        c.apply(1000.0, ClockCommand::Step { offset: -0.55 });
        assert!(c.error(1000.0).abs() < 1e-9);
        c.apply(1000.0, ClockCommand::SetFrequency { ppm: -50.0 });
        assert!(c.error(5000.0).abs() < 1e-9);
        c.shift_frequency(5000.0, 1.0);
        assert!((c.error(6000.0) - 1e-3).abs() < 1e-9);
        assert_eq!(c.steps(), 1);
    }
}
