//! Network paths between simulated hosts: per-direction base delay
//! (asymmetry), jitter, loss, delay spikes and a route change.

use rand::Rng;
use rand_distr::{Distribution, Exp, Normal};

use crate::SimError;

/// The random part of a path's one-way delay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Jitter {
    /// No jitter: every packet takes exactly the base delay.
    None,
    /// Exponentially distributed extra delay with this mean (s), as
    /// queueing behind cross traffic gives.
    Exponential {
        /// Mean extra delay (s).
        mean: f64,
    },
    /// Normally distributed delay around the base with this standard
    /// deviation (s); the delay never goes below zero.
    Normal {
        /// Standard deviation (s).
        sigma: f64,
    },
}

/// A new base delay from a given true time on (a route change).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteChange {
    /// True time of the change (s from the start).
    pub at: f64,
    /// New base delay from the first host to the second (s).
    pub delay_ab: f64,
    /// New base delay from the second host to the first (s).
    pub delay_ba: f64,
}

/// A bidirectional path between two hosts `a` and `b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Path {
    /// Base one-way delay from `a` to `b` (s).
    pub delay_ab: f64,
    /// Base one-way delay from `b` to `a` (s).
    pub delay_ba: f64,
    /// Jitter added to each packet.
    pub jitter: Jitter,
    /// Probability that a packet is lost, each direction.
    pub loss: f64,
    /// Probability that a packet is delayed by an extra `spike`.
    pub spike_probability: f64,
    /// The extra delay of a spike (s).
    pub spike: f64,
    /// An optional route change.
    pub route_change: Option<RouteChange>,
}

impl Path {
    /// A symmetric path with a fixed delay and nothing else.
    #[must_use]
    pub fn symmetric(delay: f64) -> Self {
        Path {
            delay_ab: delay,
            delay_ba: delay,
            jitter: Jitter::None,
            loss: 0.0,
            spike_probability: 0.0,
            spike: 0.0,
            route_change: None,
        }
    }

    /// Checks that every parameter is finite and in range.
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        let delay_ok = |d: f64| d.is_finite() && d >= 0.0;
        let prob_ok = |p: f64| (0.0..=1.0).contains(&p);
        let jitter_ok = match self.jitter {
            Jitter::None => true,
            Jitter::Exponential { mean } => mean.is_finite() && mean > 0.0,
            Jitter::Normal { sigma } => sigma.is_finite() && sigma >= 0.0,
        };
        let route_ok = self
            .route_change
            .is_none_or(|r| r.at.is_finite() && delay_ok(r.delay_ab) && delay_ok(r.delay_ba));
        if delay_ok(self.delay_ab)
            && delay_ok(self.delay_ba)
            && jitter_ok
            && prob_ok(self.loss)
            && prob_ok(self.spike_probability)
            && delay_ok(self.spike)
            && route_ok
        {
            Ok(())
        } else {
            Err(SimError::InvalidPath)
        }
    }

    /// Half the path's asymmetry at true time `t`: (a → b base delay −
    /// b → a base delay) / 2 (s). NTP cannot see it, so a client `a`
    /// synchronised over this path settles this far ahead of its server.
    #[must_use]
    pub fn half_asymmetry(&self, t: f64) -> f64 {
        let (ab, ba) = match self.route_change {
            Some(r) if t >= r.at => (r.delay_ab, r.delay_ba),
            _ => (self.delay_ab, self.delay_ba),
        };
        (ab - ba) / 2.0
    }

    /// The fate of one packet sent at true time `t`: `None` when lost,
    /// else its one-way delay (s). `forward` is the `a` → `b` direction.
    pub(crate) fn sample<R: Rng>(&self, t: f64, forward: bool, rng: &mut R) -> Option<f64> {
        if self.loss > 0.0 && rng.gen::<f64>() < self.loss {
            return None;
        }
        let (ab, ba) = match self.route_change {
            Some(r) if t >= r.at => (r.delay_ab, r.delay_ba),
            _ => (self.delay_ab, self.delay_ba),
        };
        let base = if forward { ab } else { ba };
        let jitter = match self.jitter {
            Jitter::None => 0.0,
            Jitter::Exponential { mean } => Exp::new(1.0 / mean).map_or(0.0, |d| d.sample(rng)),
            Jitter::Normal { sigma } => Normal::new(0.0, sigma).map_or(0.0, |d| d.sample(rng)),
        };
        let spike = if self.spike_probability > 0.0 && rng.gen::<f64>() < self.spike_probability {
            self.spike
        } else {
            0.0
        };
        Some((base + jitter).max(0.0) + spike)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn rejects_bad_parameters() {
        assert!(Path::symmetric(0.01).validate().is_ok());
        assert!(Path::symmetric(-1.0).validate().is_err());
        assert!(Path::symmetric(f64::NAN).validate().is_err());
        let lossy = Path {
            loss: 1.5,
            ..Path::symmetric(0.01)
        };
        assert!(lossy.validate().is_err());
        let jit = Path {
            jitter: Jitter::Exponential { mean: 0.0 },
            ..Path::symmetric(0.01)
        };
        assert!(jit.validate().is_err());
    }

    #[test]
    fn statistics_match_parameters() {
        let mut rng = SmallRng::seed_from_u64(1);
        let p = Path {
            delay_ab: 0.020,
            delay_ba: 0.010,
            jitter: Jitter::Exponential { mean: 0.002 },
            loss: 0.3,
            spike_probability: 0.0,
            spike: 0.0,
            route_change: Some(RouteChange {
                at: 100.0,
                delay_ab: 0.040,
                delay_ba: 0.010,
            }),
        };
        let n = 20_000;
        let fwd: Vec<f64> = (0..n)
            .filter_map(|_| p.sample(0.0, true, &mut rng))
            .collect();
        let lost = n - fwd.len();
        assert!((5_400..6_600).contains(&lost), "lost {lost}");
        let mean = fwd.iter().sum::<f64>() / f64::from(u32::try_from(fwd.len()).unwrap_or(1));
        assert!((mean - 0.022).abs() < 2e-4, "mean {mean}");
        assert!(fwd.iter().all(|&d| d >= 0.020));
        let back = p.sample(0.0, false, &mut SmallRng::seed_from_u64(3));
        assert!(back.is_none_or(|d| (0.010..0.120).contains(&d)));
        let after: Vec<f64> = (0..1000)
            .filter_map(|_| p.sample(100.0, true, &mut rng))
            .collect();
        assert!(after.iter().all(|&d| d >= 0.040));
    }
}
