//! An offset filter for samples whose delay says nothing.
//!
//! A broadcast or multicast client in its listening phase corrects every
//! mode-5 packet by the same calibrated delay, so the clock filter's
//! minimum-delay choice cannot tell a good sample from a delayed one. This
//! filter suppresses spikes on the offsets instead: a sample whose offset
//! lies more than [`SGATE`] × the jitter (at least the
//! precision) from the median of the recent offsets is held back. If the
//! next sample lands beyond the gate on the same side too, the change is
//! taken as real (a path or server change): the register restarts from
//! those two samples and the newest is handed on.
//!
//! Accepted samples are handed on as they are (no averaging, so no lag);
//! the clock discipline does the smoothing. The jitter is the RMS distance
//! of the register from its median.

use crate::filter::{FilterOutput, Sample, NSTAGE, SGATE};
use crate::{MAXDISP, PHI};

/// Why a sample was not handed on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Held {
    /// The sample is a spike: too far from the recent offsets.
    Spike {
        /// Its distance from the median of the recent offsets (s).
        distance: f64,
    },
    /// The sample is not a finite number.
    Invalid,
}

/// See the module doc.
#[derive(Clone, Debug, Default)]
pub struct OffsetFilter {
    /// Recent accepted offsets, oldest first, at most [`NSTAGE`].
    offsets: Vec<f64>,
    /// A held spike and its sign, waiting to see whether it lasts.
    held: Option<Sample>,
    last: Option<FilterOutput>,
}

impl OffsetFilter {
    /// An empty filter.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn median(&self) -> Option<f64> {
        if self.offsets.is_empty() {
            return None;
        }
        let mut v = self.offsets.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }

    fn jitter(&self, precision: f64) -> f64 {
        let Some(m) = self.median() else {
            return precision;
        };
        #[allow(clippy::cast_precision_loss)] // at most NSTAGE entries
        let n = self.offsets.len() as f64;
        let rms = (self.offsets.iter().map(|o| (o - m).powi(2)).sum::<f64>() / n).sqrt();
        rms.max(precision)
    }

    fn push(&mut self, offset: f64) {
        if self.offsets.len() == NSTAGE {
            self.offsets.remove(0);
        }
        self.offsets.push(offset);
    }

    /// Adds a sample. Returns the output to hand on, or why it was held.
    ///
    /// # Errors
    /// [`Held`] when the sample is a spike or not finite.
    pub fn add(&mut self, sample: Sample, precision: f64) -> Result<FilterOutput, Held> {
        if !(sample.offset.is_finite() && sample.delay.is_finite() && sample.time.is_finite()) {
            return Err(Held::Invalid);
        }
        if let Some(median) = self.median() {
            let gate = SGATE * self.jitter(precision);
            let distance = sample.offset - median;
            if self.offsets.len() >= 3 && distance.abs() > gate {
                match self.held.take() {
                    Some(prev) if (prev.offset - median).signum() == distance.signum() => {
                        // Two in a row on the same side: a real change.
                        self.offsets.clear();
                        self.push(prev.offset);
                    }
                    _ => {
                        self.held = Some(sample);
                        return Err(Held::Spike { distance });
                    }
                }
            } else {
                self.held = None;
            }
        }
        self.push(sample.offset);
        let out = FilterOutput {
            offset: sample.offset,
            delay: sample.delay,
            dispersion: sample.dispersion.min(MAXDISP),
            jitter: self.jitter(precision),
            time: sample.time,
            extra_noise: 0.0,
        };
        self.last = Some(out);
        Ok(out)
    }

    /// The last output handed on.
    #[must_use]
    pub fn last(&self) -> Option<FilterOutput> {
        self.last
    }

    /// The dispersion of the last output aged to `now`.
    #[must_use]
    pub fn dispersion_at(&self, now: f64) -> f64 {
        self.last.map_or(MAXDISP, |o| {
            (o.dispersion + PHI * (now - o.time).max(0.0)).min(MAXDISP)
        })
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(offset: f64, time: f64) -> Sample {
        Sample {
            offset,
            delay: 0.001,
            dispersion: 1e-6,
            time,
        }
    }

    #[test]
    fn passes_quiet_samples_without_lag() {
        let mut f = OffsetFilter::new();
        for i in 0..20 {
            let o = 0.001 + 1e-6 * f64::from(i % 3);
            let out = f.add(s(o, f64::from(i)), 1e-7).expect("accepted");
            assert_eq!(out.offset, o);
        }
        assert!(f.last().expect("last").jitter < 2e-6);
    }

    #[test]
    fn suppresses_a_lone_spike() {
        let mut f = OffsetFilter::new();
        for i in 0..8 {
            f.add(s(0.0001 * f64::from(i % 2), f64::from(i)), 1e-6)
                .expect("quiet");
        }
        let held = f.add(s(0.050, 8.0), 1e-6);
        assert!(matches!(held, Err(Held::Spike { .. })), "{held:?}");
        // The next normal sample is accepted and the spike forgotten.
        assert!(f.add(s(0.0001, 9.0), 1e-6).is_ok());
        assert!(f.add(s(0.0, 10.0), 1e-6).is_ok());
    }

    #[test]
    fn follows_a_lasting_step() {
        let mut f = OffsetFilter::new();
        for i in 0..8 {
            f.add(s(0.0, f64::from(i)), 1e-6).expect("quiet");
        }
        assert!(f.add(s(0.010, 8.0), 1e-6).is_err());
        let out = f
            .add(s(0.010, 9.0), 1e-6)
            .expect("a lasting change gets through");
        assert_eq!(out.offset, 0.010);
        assert!(f.add(s(0.0101, 10.0), 1e-6).is_ok());
    }

    #[test]
    fn rejects_non_finite() {
        let mut f = OffsetFilter::new();
        assert_eq!(f.add(s(f64::NAN, 0.0), 1e-6), Err(Held::Invalid));
        assert!(f.last().is_none());
    }
}
