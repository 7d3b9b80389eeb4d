//! Departures from the fitted line: phase jumps (an innovation beyond the
//! jump gate) and lasting smaller departures (Page's CUSUM on the
//! normalised innovations).

use super::Discipline;

/// CUSUM allowance and threshold (standard deviations).
const CUSUM_K: f64 = 0.5;
const CUSUM_H: f64 = 8.0;

impl Discipline {
    /// Checks the innovation `y` (s: the sample's free-running phase less
    /// its prediction) of a sample with measurement noise variance `r`
    /// (s²). An offset beyond the jump gate is a phase jump: the samples so
    /// far are moved to it, so the phase follows and the frequency is not
    /// dragged. Otherwise the innovation feeds the CUSUM.
    pub(super) fn check_innovation(&mut self, y: f64, r: f64) {
        if y * y > self.config.jump_gate.powi(2) * (self.p[0][0].max(0.0) + r) {
            if self
                .last_jump
                .is_some_and(|last| last.signum() == y.signum())
            {
                // Two jumps the same way in a row: the frequency
                // changed (a temperature step), not the phase. Start
                // the line afresh from the sample before.
                self.regression.keep_last(1);
                self.last_jump = None;
            } else {
                self.regression.shift(y);
                self.last_jump = Some(y);
            }
        } else {
            self.last_jump = None;
            self.cusum(y / (self.p[0][0].max(0.0) + r).sqrt());
        }
    }

    /// Page's CUSUM on the normalised innovations `nu`, both ways: a
    /// lasting departure from the line (a frequency step, a small phase
    /// shift) that the runs test would see only once it spans much of the
    /// window raises a sum by about `|nu| - CUSUM_K` per sample; past
    /// `CUSUM_H` the line restarts from the samples since the sum began to
    /// rise. With `CUSUM_K` 0.5 and `CUSUM_H` 8, white noise alone takes
    /// of the order of ten thousand samples to cross it, a lasting shift of
    /// one standard deviation about sixteen.
    fn cusum(&mut self, nu: f64) {
        if !nu.is_finite() {
            return;
        }
        let step = |sum: &mut f64, run: &mut usize, x: f64| {
            *sum = (*sum + x - CUSUM_K).max(0.0);
            *run = if *sum > 0.0 { *run + 1 } else { 0 };
        };
        step(&mut self.cusum_up.0, &mut self.cusum_up.1, nu);
        step(&mut self.cusum_down.0, &mut self.cusum_down.1, -nu);
        let run = if self.cusum_up.0 > CUSUM_H {
            self.cusum_up.1
        } else if self.cusum_down.0 > CUSUM_H {
            self.cusum_down.1
        } else {
            return;
        };
        // The newest `run` samples include the one being added.
        self.regression.keep_last(run.saturating_sub(1).max(1));
        self.cusum_up = (0.0, 0);
        self.cusum_down = (0.0, 0);
    }
}
