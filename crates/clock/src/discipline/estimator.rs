//! The estimator: the offset and frequency error of the free-running
//! clock, from the regression over the free-running phase, a two-state
//! Kalman prediction between samples, the measurement-noise estimate and
//! the log of the corrections applied so far.

use super::Discipline;
use crate::backend::MAX_FREQUENCY_PPM;
use crate::regression::Fit;

/// Bounds of the adapted frequency wander ((s/s)²/s).
pub(super) const MIN_WANDER: f64 = 1e-24;
pub(super) const MAX_WANDER: f64 = 1e-15;
/// Fewest samples in a fit that adapts the wander.
const MIN_WANDER_SAMPLES: usize = 8;

impl Discipline {
    pub(super) fn measurement_variance(&self) -> f64 {
        let floor = self.config.min_jitter.abs().max(1e-9);
        self.noise.max(floor * floor)
    }

    /// Feeds the noise estimator with the free-running phase at `now`.
    pub(super) fn observe_phase(&mut self, now: f64, phase: f64) {
        if let [Some((ta, pa)), Some((tb, pb))] = self.history {
            let (h1, h2) = (tb - ta, now - tb);
            if h1 > 0.0 && h2 > 0.0 && h2 <= 10.0 * h1 && h1 <= 10.0 * h2 {
                let k = h2 / h1;
                let e = phase - (pb + (pb - pa) * k);
                let v = e * e / (1.0 + (1.0 + k).powi(2) + k * k);
                // Winsorised at 3σ once there is an estimate, so that one
                // wild offset (a sample straddling a step) does not
                // inflate the noise for the next hundred.
                let v = if self.noise_samples >= 3 {
                    v.min(9.0 * self.noise)
                } else {
                    v
                };
                if v.is_finite() {
                    self.noise_samples = self.noise_samples.saturating_add(1);
                    // The prior is only a guess: the first sample replaces it.
                    let gain = (1.0 / f64::from(self.noise_samples)).max(1.0 / 32.0);
                    self.noise += gain * (v - self.noise);
                }
            }
        }
        match self.history[1] {
            Some((t, _)) if now <= t => {}
            _ => self.history = [self.history[1], Some((now, phase))],
        }
    }

    /// Advances the estimate to `now` under the commanded correction.
    pub(super) fn predict(&mut self, now: f64) {
        let dt = now - self.t;
        if dt.is_nan() || dt <= 0.0 {
            return;
        }
        let rate = self.model_rate();
        self.theta -= (self.d + rate) * dt;
        self.removed += rate * dt;
        let [[p00, p01], [_, p11]] = self.p;
        let qp = self.config.phase_noise.abs();
        let qf = self.wander;
        let n00 = p00 - 2.0 * p01 * dt + p11 * dt * dt + qp * dt + qf * dt.powi(3) / 3.0;
        let n01 = p01 - p11 * dt - qf * dt * dt / 2.0;
        let n11 = p11 + qf * dt;
        self.p = [[n00, n01], [n01, n11]];
        self.t = now;
    }

    /// What the corrections had taken off theta by time `t` (s).
    pub(super) fn removed_at(&self, t: f64) -> f64 {
        let i = self.log.partition_point(|c| c.0 <= t);
        match self.log.get(i.saturating_sub(1)) {
            Some(&(ct, removed, rate)) => removed + rate * (t - ct),
            None => self.removed,
        }
    }

    pub(super) fn checkpoint(&mut self, now: f64) {
        const MAX_CHECKPOINTS: usize = 2048;
        if self.log.len() >= MAX_CHECKPOINTS {
            self.log.pop_front();
        }
        self.log.push_back((now, self.removed, self.model_rate()));
    }

    /// The correction the clock actually applies (s/s): none when it is
    /// not steered.
    pub(super) fn model_rate(&self) -> f64 {
        if self.config.steered {
            self.applied
        } else {
            0.0
        }
    }

    /// Kalman measurement update: `z` is theta now plus `lag` × d (an
    /// offset measured `lag` seconds ago, less the corrections since), with
    /// noise variance `r`.
    pub(super) fn measure(&mut self, z: f64, lag: f64, r: f64) {
        let lag = if lag.is_finite() { lag.max(0.0) } else { 0.0 };
        let y = z - (self.theta + lag * self.d);
        let gate = |p: &[[f64; 2]; 2]| p[0][0] + 2.0 * lag * p[0][1] + lag * lag * p[1][1] + r;
        if y * y > self.config.jump_gate.powi(2) * gate(&self.p) {
            // A phase jump: let the phase follow it, not the frequency.
            self.p[0][0] += y * y;
        }
        let [[p00, p01], [_, p11]] = self.p;
        let s = gate(&self.p);
        // P Hᵀ with H = [1, lag].
        let (a0, a1) = (p00 + lag * p01, p01 + lag * p11);
        let (k0, k1) = (a0 / s, a1 / s);
        self.theta += k0 * y;
        self.d += k1 * y;
        let max = MAX_FREQUENCY_PPM * 1e-6;
        self.d = self.d.clamp(-max, max);
        let n00 = p00 - k0 * a0;
        let n01 = p01 - k0 * a1;
        let n11 = p11 - k1 * a1;
        self.p = [[n00.max(0.0), n01], [n01, n11.max(0.0)]];
    }

    /// Takes the estimate from a regression fit: the offset now is the
    /// fitted free-running phase extrapolated to `now` less every
    /// correction so far, the frequency error minus its slope.
    pub(super) fn apply_fit(&mut self, now: f64, fit: &Fit) {
        let (phase, var) = fit.at(now);
        let lead = now - fit.t0;
        self.theta = phase - self.removed;
        let max = MAX_FREQUENCY_PPM * 1e-6;
        self.d = (-fit.slope).clamp(-max, max);
        let cov = -lead * fit.slope_variance;
        self.p = [[var, cov], [cov, fit.slope_variance]];
        self.window = fit.samples;
        self.misfit = fit.reduced_chi2;
        self.rms_offset = fit.rms_residual;
        self.cut = fit.dropped > 0;
        if fit.samples >= MIN_WANDER_SAMPLES {
            // More scatter about the line than the samples' noise and the
            // assumed wander explain: the clock wanders more; less: less.
            let factor = fit.reduced_chi2.clamp(0.5, 2.0).powi(2);
            self.wander = (self.wander * factor).clamp(MIN_WANDER, MAX_WANDER);
            self.regression.set_wander(self.wander);
        }
    }
}
