//! The controller: steps, the phase slew through the frequency correction
//! and the periodic adjustment that recomputes it.

use super::{ClockCommand, Discipline, DisciplineState, Outcome};
use crate::backend::MAX_FREQUENCY_PPM;

impl Discipline {
    /// Periodic phase adjustment: call when `now >= next_tick()`. Recomputes
    /// the slew from the predicted offset. A call before the deadline does
    /// nothing.
    pub fn tick(&mut self, now: f64) {
        match self.next_tick() {
            Some(due) if now.is_finite() && now >= due => {
                self.predict(now);
                self.command(now);
            }
            _ => {}
        }
    }

    /// When [`Discipline::tick`] wants to run next (monotonic s); `None`
    /// before the first offset.
    #[must_use]
    pub fn next_tick(&self) -> Option<f64> {
        if self.state == DisciplineState::Unset {
            None
        } else {
            Some(self.last_adjust + self.adjust_interval())
        }
    }

    /// The phase slew time constant at the current poll interval (s).
    #[must_use]
    pub fn time_constant(&self) -> f64 {
        self.config.phase_time_constant.max(1.0) * 2f64.powi(i32::from(self.poll))
    }

    fn adjust_interval(&self) -> f64 {
        let a = self.config.adjust_interval;
        let a = if a.is_finite() && a > 0.0 { a } else { 1.0 };
        a.min(self.time_constant() / 4.0)
    }

    pub(super) fn enter_tracking(&mut self, now: f64) {
        self.since = now;
        self.state = if self.frequency_known {
            DisciplineState::Sync
        } else {
            DisciplineState::Freq
        };
    }

    pub(super) fn step(&mut self, now: f64, offset: f64) -> Outcome {
        self.commands.push_back(ClockCommand::Step { offset });
        self.removed += offset;
        self.checkpoint(now);
        // The step takes out the measured offset; what is left is the
        // measurement noise.
        let r = self.measurement_variance();
        self.theta = 0.0;
        self.p[0] = [r, 0.0];
        self.p[1][0] = 0.0;
        self.t = now;
        self.last_offset = 0.0;
        self.poll = self.config.min_poll.min(self.config.max_poll);
        self.samples_at_poll = 0;
        self.enter_tracking(now);
        self.command(now);
        Outcome::Stepped { offset }
    }

    /// Queues the correction for the current estimate.
    pub(super) fn command(&mut self, now: f64) {
        let max = MAX_FREQUENCY_PPM * 1e-6;
        let c = (-self.d + self.theta / self.slew_time_constant()).clamp(-max, max);
        self.last_adjust = now;
        if (c - self.applied).abs() > 1e-12 {
            self.applied = c;
            self.checkpoint(now);
            self.commands
                .retain(|cmd| !matches!(cmd, ClockCommand::SetFrequency { .. }));
            self.commands
                .push_back(ClockCommand::SetFrequency { ppm: c * 1e6 });
        }
    }

    /// The time constant the phase is slewed out with (s): the
    /// noise-filtering [`Discipline::time_constant`] while the estimated
    /// offset is within three standard deviations of zero, shorter (down to
    /// `min_time_constant`) in proportion as it stands out of its
    /// uncertainty — a known offset is removed quickly, noise is not
    /// chased.
    fn slew_time_constant(&self) -> f64 {
        let t = self.time_constant();
        let floor = self.config.min_time_constant;
        let floor = if floor.is_finite() && floor >= 1.0 {
            floor.min(t)
        } else {
            t
        };
        let sigma = self.p[0][0].max(0.0).sqrt();
        let ratio = 3.0 * sigma / self.theta.abs();
        if ratio.is_finite() {
            (t * ratio).clamp(floor, t)
        } else {
            t
        }
    }
}
