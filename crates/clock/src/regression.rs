//! A weighted linear regression of the clock's free-running phase over
//! its recent samples, with the window chosen by a runs test (the approach
//! of chrony's `regress.c`, written from its description).
//!
//! Each sample is a point `(t, phase, variance)`: the offset measured at
//! `t` plus every correction applied to the clock until `t`, which is the
//! offset the clock would show had it never been corrected. Its slope is
//! minus the clock's own frequency error; its value extrapolated to now,
//! less the corrections so far, is the current offset.
//!
//! A straight line fits only while the oscillator's frequency holds still.
//! When it wanders, steps, or the path's delay jumps, the residuals of the
//! oldest samples fall on one side of the line: too few runs of equal
//! sign. [`Regression::fit`] therefore tries the whole window, then
//! shorter and shorter ones (dropping the oldest samples), and keeps the
//! longest whose residual signs pass the runs test; the samples it drops
//! are forgotten. Noise is averaged over as many samples as the clock's
//! stability allows, and no longer.
//!
//! Each sample weighs by the inverse of its variance. Where its round-trip
//! delay exceeded the path's least delay, its offset may carry up to half
//! that excess as error (queueing in one direction only); whether it does
//! depends on the path (yes for exponential queueing, no for symmetric
//! normal jitter), so the variance is modelled as `a + b × queueing` with
//! `a` and `b` fitted to the squared residuals of a first pass (feasible
//! generalised least squares).

use std::collections::VecDeque;

/// Most samples kept.
pub const MAX_SAMPLES: usize = 128;

/// Fewest samples a runs test is applied to: below this any window passes.
const MIN_TESTED: usize = 6;

/// The runs test's one-sided threshold (standard deviations below the
/// expected number of runs).
const RUNS_Z: f64 = 1.65;

/// One sample of the free-running phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// When it was measured (monotonic s).
    pub t: f64,
    /// The free-running phase (s).
    pub phase: f64,
    /// Its noise variance (s²), which sets its weight.
    pub variance: f64,
    /// The variance its excess delay could add (s²; `FilterOutput::
    /// extra_noise` squared). How much it does is learnt from the
    /// residuals: see [`Regression::fit`].
    pub queueing: f64,
}

/// A fitted line: the phase at `t` is `phase + slope × (t − t0)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    /// The weighted mean time of the window (s).
    pub t0: f64,
    /// The phase at `t0` (s).
    pub phase: f64,
    /// The slope (s/s): minus the clock's frequency error.
    pub slope: f64,
    /// The variance of `phase` (s²).
    pub phase_variance: f64,
    /// The variance of `slope` ((s/s)²).
    pub slope_variance: f64,
    /// How many samples the fit used.
    pub samples: usize,
    /// How many of the oldest samples the runs test dropped.
    pub dropped: usize,
    /// Weighted RMS of the residuals (s).
    pub rms_residual: f64,
    /// The residuals' chi-square per degree of freedom: about 1 when the
    /// scatter is the samples' noise, larger when the line does not fit
    /// (the clock wandered within the window).
    pub reduced_chi2: f64,
}

impl Fit {
    /// The fitted phase at `t` and its variance.
    #[must_use]
    pub fn at(&self, t: f64) -> (f64, f64) {
        let dt = t - self.t0;
        (
            self.phase + self.slope * dt,
            self.phase_variance + dt * dt * self.slope_variance,
        )
    }
}

/// The sample window. See the module doc.
#[derive(Clone, Debug, Default)]
pub struct Regression {
    points: VecDeque<Point>,
    wander: f64,
}

impl Regression {
    /// An empty window.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sample (ignored unless every field is finite and the
    /// variance positive; the oldest goes beyond [`MAX_SAMPLES`]).
    pub fn push(&mut self, point: Point) {
        if !(point.t.is_finite()
            && point.phase.is_finite()
            && point.variance.is_finite()
            && point.variance > 0.0
            && point.queueing.is_finite()
            && point.queueing >= 0.0)
        {
            return;
        }
        if self.points.len() >= MAX_SAMPLES {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    /// Sets the frequency wander (random-walk FM, (s/s)²/s) the fit allows
    /// for: a sample `age` seconds older than the newest has its variance
    /// raised by `wander × age³ / 3`, the phase a wandering frequency
    /// can put between it and a straight line, so that old samples count
    /// for less where the clock wanders. Not finite or negative: 0.
    pub fn set_wander(&mut self, wander: f64) {
        self.wander = if wander.is_finite() {
            wander.max(0.0)
        } else {
            0.0
        };
    }

    /// Moves every stored sample's phase by `delta` (s): a phase jump
    /// (a path's delay changed asymmetrically) is followed without
    /// bending the line, so the frequency is not dragged along.
    pub fn shift(&mut self, delta: f64) {
        if delta.is_finite() {
            for p in &mut self.points {
                p.phase += delta;
            }
        }
    }

    /// Keeps only the newest `n` samples.
    pub fn keep_last(&mut self, n: usize) {
        let len = self.points.len();
        self.points.drain(..len.saturating_sub(n));
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.points.clear();
    }

    /// How many samples the window holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the window is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Fits a line to the longest recent window that passes the runs test
    /// and forgets the older samples. `None` with fewer than two samples
    /// (or samples all at one time).
    pub fn fit(&mut self) -> Option<Fit> {
        let n = self.points.len();
        if n < 2 {
            return None;
        }
        let mut k = n;
        let newest = self.points.back()?.t;
        let wander = self.wander;
        let model = self.variance_model();
        let fit = loop {
            let window = self.points.range(n - k..).map(|p| Point {
                variance: model.map_or(p.variance + p.queueing, |(a, b)| a + b * p.queueing)
                    + wander * (newest - p.t).max(0.0).powi(3) / 3.0,
                ..*p
            });
            let fit = line(window.clone())?;
            if k <= MIN_TESTED || runs_pass(window, &fit) {
                break fit;
            }
            // Drop about a quarter of the oldest samples and try again.
            k = (k - (k / 4).max(1)).max(MIN_TESTED);
        };
        self.points.drain(..n - k);
        Some(Fit {
            dropped: n - k,
            ..fit
        })
    }
}

impl Regression {
    /// The variance model `a + b × queueing` learnt from the residuals of
    /// a first fit over the whole window (a regression of the squared
    /// residuals on each sample's queueing variance; feasible generalised
    /// least squares). Where the offset error comes from queueing (an
    /// exponential-jitter WAN path) `b` comes out near 1 and `a` small,
    /// so the samples with the least excess delay dominate; where delay
    /// says nothing about the offset error (normal jitter on both
    /// directions) `b` is near 0 and the samples weigh alike. `None` with
    /// fewer than [`MODEL_SAMPLES`] samples or no spread of queueing.
    fn variance_model(&self) -> Option<(f64, f64)> {
        let n = self.points.len();
        if n < MODEL_SAMPLES {
            return None;
        }
        let first = line(self.points.iter().map(|p| Point {
            variance: p.variance + p.queueing,
            ..*p
        }))?;
        #[allow(clippy::cast_precision_loss, reason = "at most MAX_SAMPLES")]
        let nf = n as f64;
        let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
        for p in &self.points {
            let r = p.phase - (first.phase + first.slope * (p.t - first.t0));
            let (x, y) = (p.queueing, r * r);
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
        }
        let (mx, my) = (sx / nf, sy / nf);
        let var_x = sxx / nf - mx * mx;
        if !(var_x > 0.0 && var_x.is_finite()) {
            return None;
        }
        let b = ((sxy / nf - mx * my) / var_x).clamp(0.0, 2.0);
        let a = (my - b * mx).max(0.01 * my).max(1e-15);
        (a.is_finite() && b.is_finite()).then_some((a, b))
    }
}

/// Fewest samples from which the variance model is learnt.
const MODEL_SAMPLES: usize = 16;

/// The weighted least-squares line through `points`.
fn line(points: impl Iterator<Item = Point> + Clone) -> Option<Fit> {
    let (mut sw, mut swt) = (0.0, 0.0);
    let mut count = 0usize;
    for p in points.clone() {
        let w = 1.0 / p.variance;
        sw += w;
        swt += w * p.t;
        count += 1;
    }
    if count < 2 || sw <= 0.0 {
        return None;
    }
    let t0 = swt / sw;
    let (mut swp, mut swtt, mut swtp) = (0.0, 0.0, 0.0);
    for p in points.clone() {
        let w = 1.0 / p.variance;
        let dt = p.t - t0;
        swp += w * p.phase;
        swtt += w * dt * dt;
        swtp += w * dt * p.phase;
    }
    if swtt <= 0.0 || !swtt.is_finite() {
        return None;
    }
    let phase = swp / sw;
    let slope = swtp / swtt;
    let mut chi2 = 0.0;
    for p in points {
        let r = p.phase - (phase + slope * (p.t - t0));
        chi2 += r * r / p.variance;
    }
    // Scale the variances by the reduced chi-square when the scatter is
    // larger than the weights say (never smaller: a lucky run of samples
    // must not make the fit overconfident).
    #[allow(clippy::cast_precision_loss, reason = "at most MAX_SAMPLES")]
    let dof = count.saturating_sub(2).max(1) as f64;
    let scale = if count > 2 {
        (chi2 / dof).max(1.0)
    } else {
        1.0
    };
    let rms_residual = (chi2 / sw).sqrt();
    Some(Fit {
        t0,
        phase,
        slope,
        phase_variance: scale / sw,
        slope_variance: scale / swtt,
        samples: count,
        dropped: 0,
        rms_residual,
        reduced_chi2: chi2 / dof,
    })
}

/// The runs test: whether the residual signs of `points` about `fit` show
/// at least as many runs as chance would give, less [`RUNS_Z`] standard
/// deviations.
fn runs_pass(points: impl Iterator<Item = Point>, fit: &Fit) -> bool {
    let (mut pos, mut neg, mut runs) = (0u32, 0u32, 0u32);
    let mut last = None;
    for p in points {
        let positive = p.phase - (fit.phase + fit.slope * (p.t - fit.t0)) >= 0.0;
        if positive {
            pos += 1;
        } else {
            neg += 1;
        }
        if last != Some(positive) {
            runs += 1;
        }
        last = Some(positive);
    }
    if pos == 0 || neg == 0 {
        return false;
    }
    let (a, b) = (f64::from(pos), f64::from(neg));
    let n = a + b;
    let mean = 2.0 * a * b / n + 1.0;
    let var = (mean - 1.0) * (mean - 2.0) / (n - 1.0);
    f64::from(runs) >= mean - RUNS_Z * var.max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// A normal deviate with standard deviation `sigma` (Box–Muller).
    fn normal(rng: &mut SmallRng, sigma: f64) -> f64 {
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        let v: f64 = rng.gen();
        sigma * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn point(t: f64, phase: f64) -> Point {
        Point {
            t,
            phase,
            variance: 1e-10,
            queueing: 0.0,
        }
    }

    #[test]
    fn fits_a_line_and_its_uncertainty_shrinks_with_samples() {
        let mut r = Regression::new();
        assert!(r.fit().is_none());
        r.push(point(0.0, 1e-3));
        assert!(r.fit().is_none(), "one sample gives no line");
        let mut rng = SmallRng::seed_from_u64(1);
        let mut widths = Vec::new();
        for i in 1..40u32 {
            let t = f64::from(i) * 16.0;
            r.push(point(t, 1e-3 - 20e-6 * t + normal(&mut rng, 1e-5)));
            let f = r.fit().expect("fit");
            widths.push(f.slope_variance.sqrt());
        }
        let f = r.fit().expect("fit");
        assert_eq!(f.samples, 40, "white noise keeps the whole window");
        assert!((f.slope + 20e-6).abs() < 5.0 * f.slope_variance.sqrt());
        let (phase, var) = f.at(39.0 * 16.0);
        assert!((phase - (1e-3 - 20e-6 * 624.0)).abs() < 5.0 * var.sqrt());
        assert!(widths[38] < widths[5] / 5.0, "{widths:?}");
    }

    #[test]
    fn a_frequency_step_shortens_the_window() {
        let mut r = Regression::new();
        let mut rng = SmallRng::seed_from_u64(2);
        let mut phase = 0.0;
        for i in 0..60u32 {
            // The frequency error changes by 1 ppm after sample 40.
            phase += if i > 40 { -1e-6 * 16.0 } else { 0.0 };
            r.push(point(f64::from(i) * 16.0, phase + normal(&mut rng, 1e-6)));
        }
        let f = r.fit().expect("fit");
        assert!(f.samples < 30, "old samples dropped: {}", f.samples);
        assert_eq!(r.len(), f.samples);
        assert!((f.slope + 1e-6).abs() < 0.1e-6, "slope {}", f.slope);
    }

    #[test]
    fn samples_whose_excess_delay_shows_in_their_error_weigh_less() {
        // Half the samples have no excess delay and 1 µs of noise, half
        // 3.5 ms of excess and 1 ms of noise, all with the same prior
        // variance: the learnt model trusts the first half.
        let mut r = Regression::new();
        let mut rng = SmallRng::seed_from_u64(4);
        for i in 0..64u32 {
            let queueing = if i % 2 == 0 { 0.0 } else { 1e-6 };
            let noise = normal(&mut rng, if i % 2 == 0 { 1e-6 } else { 1e-3 });
            r.push(Point {
                t: f64::from(i) * 64.0,
                phase: 1e-3 + noise,
                variance: 2.5e-7,
                queueing,
            });
        }
        let f = r.fit().expect("fit");
        let (phase, _) = f.at(63.0 * 64.0);
        assert!((phase - 1e-3).abs() < 5e-6, "phase {phase}");
        assert!(f.slope.abs() < 1e-9, "slope {}", f.slope);
    }

    #[test]
    fn bad_points_are_ignored_and_the_window_is_bounded() {
        let mut r = Regression::new();
        r.push(Point {
            t: f64::NAN,
            phase: 0.0,
            variance: 1.0,
            queueing: 0.0,
        });
        r.push(Point {
            t: 0.0,
            phase: 0.0,
            variance: 0.0,
            queueing: 0.0,
        });
        assert!(r.is_empty());
        for i in 0..200u32 {
            r.push(point(f64::from(i), 0.0));
        }
        assert_eq!(r.len(), MAX_SAMPLES);
        r.clear();
        assert!(r.is_empty());
        // Two samples at one time give no line.
        r.push(point(1.0, 0.0));
        r.push(point(1.0, 1.0));
        assert!(r.fit().is_none());
    }
}
