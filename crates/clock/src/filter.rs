//! The clock filter (RFC 5905 §10, `clock_filter()`).
//!
//! Each association keeps the last [`NSTAGE`] samples in a shift register.
//! On every new sample the register is sorted by round-trip delay (the
//! sample with the least delay has the least error from path asymmetry and
//! queueing), the peer dispersion is the weighted sum of the aged stage
//! dispersions and the peer jitter the RMS of offset differences from the
//! best sample.
//!
//! Dispersion ages at [`PHI`] s/s from the time each sample was taken;
//! stages whose aged dispersion reaches [`MAXDISP`] (missing polls, very old
//! samples) take no part in the choice or in the jitter.
//!
//! Unlike RFC 5905, which hands on only the least-delay sample (and so
//! throws most samples away where delay and offset error are independent,
//! as with normally distributed jitter), the filter hands on *every* new
//! sample whose delay is plausible, and says how much its delay exceeds
//! the path's least delay; the discipline's estimator then averages the
//! samples, weighting each by that excess (the delay-weighting of chrony's
//! regression). The rules:
//!
//! * the prime directive: a sample is used at most once, and never one older
//!   than the last one handed on;
//! * the delay gate: a sample whose delay exceeds the least delay in the
//!   register by more than [`DELAY_GATE`] × the median excess of the other
//!   usable stages (at least [`DELAY_GATE`] × the precision) is dropped — a
//!   queueing spike costs a sample, not a clock step. After a route change
//!   to a longer delay the old short-delay stages leave the register within
//!   [`NSTAGE`] samples, and once half the register holds long-delay
//!   samples their median excess opens the gate: the new path is followed
//!   after about [`NSTAGE`] / 2 samples, without a step;
//! * [`FilterOutput::extra_noise`]: the excess over the least delay of the
//!   last [`LONG_DELAYS`] samples (closer to the path's true minimum than
//!   the register's), over √12 — the standard
//!   deviation of the offset error when the excess is queueing split
//!   uniformly between the two directions. Whether a path's offset errors
//!   do come from queueing is for the estimator to learn
//!   ([`crate::regression`]).
//!
//! The peer jitter and dispersion keep their RFC definitions (relative to
//! the least-delay sample).

use std::collections::VecDeque;

use crate::{MAXDISP, PHI};

/// Number of filter stages (RFC 5905 NSTAGE).
pub const NSTAGE: usize = 8;

/// Popcorn spike gate (RFC 5905 SGATE): spikes larger than this many
/// jitters are suppressed.
pub const SGATE: f64 = 3.0;

/// Delay gate: samples whose delay exceeds the register's least delay by
/// more than this many median excesses are dropped.
pub const DELAY_GATE: f64 = 4.0;

/// How many recent samples' delays the least delay behind
/// [`FilterOutput::extra_noise`] is taken over: longer than the register,
/// so that it comes close to the path's true minimum.
pub const LONG_DELAYS: usize = 128;

/// One clock sample from an on-wire exchange.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Clock offset theta (s): reference − local, positive when the local
    /// clock is behind.
    pub offset: f64,
    /// Round-trip delay delta (s).
    pub delay: f64,
    /// Dispersion epsilon of this sample (s), e.g. precisions plus
    /// PHI × the exchange duration.
    pub dispersion: f64,
    /// When the sample was taken (monotonic seconds).
    pub time: f64,
}

/// The filter's output: the chosen sample plus the peer statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FilterOutput {
    /// Offset of the chosen sample (s).
    pub offset: f64,
    /// The least delay in the register (s), which selection's root
    /// distance uses.
    pub delay: f64,
    /// Peer dispersion (s), aged to the time of the latest sample.
    pub dispersion: f64,
    /// Peer jitter (s): RMS offset difference of the usable stages from the
    /// chosen one, at least the precision.
    pub jitter: f64,
    /// When the chosen sample was taken (monotonic seconds).
    pub time: f64,
    /// The offset error this sample's excess delay allows (s; 0 for a
    /// sample at the least delay). See the module doc; pass it to
    /// `Discipline::update_weighted`.
    pub extra_noise: f64,
}

#[derive(Clone, Copy, Debug)]
struct Stage {
    offset: f64,
    delay: f64,
    dispersion: f64,
    time: f64,
}

impl Stage {
    fn aged_dispersion(&self, now: f64) -> f64 {
        let age = (now - self.time).max(0.0);
        (self.dispersion + PHI * age).min(MAXDISP)
    }
}

/// The RFC 5905 clock filter of one association. See the module doc.
#[derive(Clone, Debug, Default)]
pub struct ClockFilter {
    /// Newest first; `None` = never filled since the last reset.
    stages: [Option<Stage>; NSTAGE],
    /// The last output handed on.
    last: Option<FilterOutput>,
    /// The delays of the last [`LONG_DELAYS`] samples, oldest first: the
    /// least of them is the path's least delay that
    /// [`FilterOutput::extra_noise`] is measured from.
    delays: VecDeque<f64>,
}

impl ClockFilter {
    /// An empty filter.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sample at `sample.time`; returns the newly selected sample when
    /// the filter picks one newer than the last one it returned (RFC 5905:
    /// "only use a sample once, and not older than the last").
    ///
    /// `precision` (s) is the floor for the jitter (the system precision).
    /// Samples with a non-finite field or a negative delay are ignored.
    pub fn add(&mut self, sample: Sample, precision: f64) -> Option<FilterOutput> {
        if !(sample.offset.is_finite()
            && sample.delay.is_finite()
            && sample.dispersion.is_finite()
            && sample.time.is_finite())
            || sample.delay < 0.0
        {
            return None;
        }
        self.shift(Stage {
            offset: sample.offset,
            delay: sample.delay,
            dispersion: sample.dispersion.clamp(0.0, MAXDISP),
            time: sample.time,
        });
        let now = sample.time;
        if self.delays.len() >= LONG_DELAYS {
            self.delays.pop_front();
        }
        self.delays.push_back(sample.delay);
        let (best, _) = self.evaluate(now, precision)?;
        let (excess, median_excess) = self.delay_excess(now, sample.delay, best.delay);
        let floor = if precision.is_finite() {
            precision.abs()
        } else {
            0.0
        };
        if excess > DELAY_GATE * median_excess.max(floor) {
            return None;
        }
        // The offset and time are the new sample's; the delay, dispersion
        // and jitter that selection weighs stay the RFC's (least-delay
        // sample).
        let out = FilterOutput {
            offset: sample.offset,
            time: sample.time,
            extra_noise: self.long_excess(sample.delay) / 12f64.sqrt(),
            ..best
        };
        if let Some(last) = self.last {
            // Prime directive: only newer samples.
            if out.time <= last.time {
                return None;
            }
        }
        self.last = Some(out);
        Some(out)
    }

    /// A missed poll (reach bit 0): shift in a dummy sample with MAXDISP
    /// (16 s) dispersion (RFC 5905 `clock_filter(0, 0, MAXDISP)`).
    pub fn add_missing(&mut self, now: f64) {
        if !now.is_finite() {
            return;
        }
        self.shift(Stage {
            offset: 0.0,
            delay: MAXDISP,
            dispersion: MAXDISP,
            time: now,
        });
    }

    /// Forgets all samples and the last output (RFC 5905 `clear()`, e.g.
    /// after the clock was stepped).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// The values last handed on by [`ClockFilter::add`].
    #[must_use]
    pub fn last(&self) -> Option<FilterOutput> {
        self.last
    }

    /// The peer dispersion aged to `now`: the stage dispersions, each aged
    /// at PHI from its sample time, sorted like the filter sorts them and
    /// weighted 1/2, 1/4, … (RFC 5905 §10). An empty filter gives about
    /// MAXDISP.
    #[must_use]
    pub fn dispersion_at(&self, now: f64) -> f64 {
        let order = self.sorted(now);
        let mut disp = 0.0;
        let mut weight = 0.5;
        for slot in &order {
            let d = match slot {
                Some(i) => self.stages[*i].map_or(MAXDISP, |s| s.aged_dispersion(now)),
                None => MAXDISP,
            };
            disp += d * weight;
            weight /= 2.0;
        }
        disp
    }

    /// Number of stages holding a usable sample at `now`.
    #[must_use]
    pub fn usable(&self, now: f64) -> usize {
        self.stages
            .iter()
            .flatten()
            .filter(|s| s.aged_dispersion(now) < MAXDISP)
            .count()
    }

    /// The register's samples, newest first (at most [`NSTAGE`]), each
    /// with its dispersion aged to `now`. A missed poll shows as a sample
    /// with [`MAXDISP`] delay and dispersion, as [`ClockFilter::add_missing`]
    /// shifted it in. For status output.
    pub fn register(&self, now: f64) -> impl Iterator<Item = Sample> + '_ {
        self.stages.iter().flatten().map(move |s| Sample {
            offset: s.offset,
            delay: s.delay,
            dispersion: s.aged_dispersion(now),
            time: s.time,
        })
    }

    /// How much `delay` exceeds the least delay of the last
    /// [`LONG_DELAYS`] samples (s).
    fn long_excess(&self, delay: f64) -> f64 {
        let least = self.delays.iter().copied().fold(f64::INFINITY, f64::min);
        if least.is_finite() {
            (delay - least).max(0.0)
        } else {
            0.0
        }
    }

    fn shift(&mut self, stage: Stage) {
        self.stages.rotate_right(1);
        self.stages[0] = Some(stage);
    }

    /// Stage indexes sorted by delay (usable first); `None` for empty slots.
    fn sorted(&self, now: f64) -> [Option<usize>; NSTAGE] {
        let mut order: [Option<usize>; NSTAGE] = [None; NSTAGE];
        let mut n = 0;
        for (i, s) in self.stages.iter().enumerate() {
            if s.is_some() {
                order[n] = Some(i);
                n += 1;
            }
        }
        let key = |i: usize| -> f64 {
            self.stages[i].map_or(f64::INFINITY, |s| {
                if s.aged_dispersion(now) >= MAXDISP {
                    // Unusable stages sort last, newest first among them.
                    MAXDISP * 2.0 + (now - s.time).max(0.0)
                } else {
                    s.delay
                }
            })
        };
        order[..n].sort_by(|a, b| {
            let (a, b) = (a.unwrap_or(0), b.unwrap_or(0));
            key(a).total_cmp(&key(b)).then(a.cmp(&b))
        });
        order
    }

    /// How much `delay` exceeds the least delay `least` (s), and the
    /// median excess of the other usable stages (s; infinite when there
    /// are none): the newest stage holds the sample itself and is left
    /// out. The median, so that one spike in the register does not open
    /// the gate for the next.
    fn delay_excess(&self, now: f64, delay: f64, least: f64) -> (f64, f64) {
        let mut excess = [0.0f64; NSTAGE];
        let mut n = 0;
        for s in self.stages.iter().skip(1).flatten() {
            if s.aged_dispersion(now) < MAXDISP {
                excess[n] = (s.delay - least).max(0.0);
                n += 1;
            }
        }
        let others = &mut excess[..n];
        others.sort_by(f64::total_cmp);
        let median = match n {
            0 => f64::INFINITY,
            _ if n % 2 == 1 => others[n / 2],
            _ => (others[n / 2 - 1] + others[n / 2]) / 2.0,
        };
        ((delay - least).max(0.0), median)
    }

    /// The chosen sample and statistics, plus the number of usable stages.
    fn evaluate(&self, now: f64, precision: f64) -> Option<(FilterOutput, u32)> {
        let order = self.sorted(now);
        let best = self.stages[order[0]?]?;
        if best.aged_dispersion(now) >= MAXDISP {
            return None;
        }
        let mut sum = 0.0;
        let mut m = 0u32;
        for i in order.iter().flatten() {
            if let Some(s) = self.stages[*i] {
                if s.aged_dispersion(now) < MAXDISP {
                    let d = s.offset - best.offset;
                    sum += d * d;
                    m += 1;
                }
            }
        }
        let jitter = if m > 1 {
            (sum / f64::from(m - 1)).sqrt()
        } else {
            0.0
        };
        let floor = if precision.is_finite() {
            precision.abs()
        } else {
            0.0
        };
        let out = FilterOutput {
            offset: best.offset,
            delay: best.delay,
            dispersion: self.dispersion_at(now),
            jitter: jitter.max(floor),
            time: best.time,
            extra_noise: 0.0,
        };
        Some((out, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(offset: f64, delay: f64, time: f64) -> Sample {
        Sample {
            offset,
            delay,
            dispersion: 1e-6,
            time,
        }
    }

    #[test]
    fn register_lists_stages_newest_first_with_aged_dispersion() {
        let mut f = ClockFilter::new();
        assert_eq!(f.register(0.0).count(), 0);
        for i in 0..10u32 {
            let t = f64::from(i);
            f.add(s(t * 1e-3, 0.002, t), 1e-6);
        }
        f.add_missing(10.0);
        let reg: Vec<Sample> = f.register(20.0).collect();
        assert_eq!(reg.len(), NSTAGE, "at most NSTAGE stages");
        assert_eq!((reg[0].delay, reg[0].dispersion), (MAXDISP, MAXDISP));
        assert_eq!(reg[1].time, 9.0);
        assert!((reg[1].offset - 9e-3).abs() < 1e-12);
        assert!((reg[1].dispersion - (1e-6 + PHI * 11.0)).abs() < 1e-12);
        assert_eq!(reg[7].time, 3.0, "the oldest kept stage");
        f.reset();
        assert_eq!(f.register(20.0).count(), 0);
    }

    #[test]
    fn first_sample_is_handed_on() {
        let mut f = ClockFilter::new();
        let out = f.add(s(0.01, 0.002, 0.0), 1e-6).unwrap();
        assert_eq!(out.offset, 0.01);
        assert_eq!(out.delay, 0.002);
        assert_eq!(out.time, 0.0);
        // 7 empty stages at MAXDISP, weights 1/4 .. 1/256, plus the sample.
        let expect = 1e-6 / 2.0 + MAXDISP * (0.5 - 1.0 / 256.0);
        assert!((out.dispersion - expect).abs() < 1e-9, "{}", out.dispersion);
        assert_eq!(f.last(), Some(out));
    }

    #[test]
    fn hands_on_each_plausible_sample_once_with_its_delay_excess() {
        let mut f = ClockFilter::new();
        f.add(s(0.010, 0.004, 0.0), 1e-6).unwrap();
        let out = f.add(s(0.011, 0.001, 1.0), 1e-6).unwrap();
        assert_eq!((out.delay, out.time, out.extra_noise), (0.001, 1.0, 0.0));
        assert_eq!(out.offset, 0.011);
        // A higher delay, within the gate (2 ms excess, 4x the median
        // excess of the other stages being 6 ms): handed on, with the
        // offset error its excess allows.
        let out = f.add(s(0.0105, 0.003, 2.0), 1e-6).unwrap();
        assert_eq!((out.offset, out.time), (0.0105, 2.0));
        assert!((out.extra_noise - 0.002 / 12f64.sqrt()).abs() < 1e-12);
        // Jitter: RMS of offset differences from the least-delay sample.
        let d: [f64; 3] = [0.010 - 0.011, 0.0, 0.0105 - 0.011];
        let rms = (d.iter().map(|x| x * x).sum::<f64>() / 2.0).sqrt();
        assert!((out.jitter - rms).abs() < 1e-12);
        // Prime directive: never a sample older than the last handed on.
        assert_eq!(f.add(s(0.0108, 0.0005, 1.5), 1e-6), None);
        assert_eq!(f.last().unwrap().time, 2.0);
    }

    #[test]
    fn dispersion_ages_at_phi() {
        let mut f = ClockFilter::new();
        for i in 0..8u32 {
            f.add(s(0.0, 0.001, f64::from(i)), 1e-6);
        }
        let d0 = f.dispersion_at(7.0);
        let d1 = f.dispersion_at(107.0);
        // Every stage ages 100 s × PHI; the weights sum to 1 - 2^-8.
        let expect = 100.0 * PHI * (1.0 - 1.0 / 256.0);
        assert!((d1 - d0 - expect).abs() < 1e-12, "{d0} {d1}");
        // Dispersion saturates at MAXDISP per stage.
        assert!(f.dispersion_at(1e9) <= MAXDISP);
    }

    #[test]
    fn missing_polls_push_out_samples() {
        let mut f = ClockFilter::new();
        f.add(s(0.0, 0.001, 0.0), 1e-6).unwrap();
        for i in 1..=8u32 {
            f.add_missing(f64::from(i));
        }
        assert_eq!(f.usable(8.0), 0);
        assert!(f.dispersion_at(8.0) > MAXDISP * 0.99);
        // A fresh sample is handed on again.
        let out = f.add(s(0.002, 0.003, 9.0), 1e-6).unwrap();
        assert_eq!(out.offset, 0.002);
    }

    #[test]
    fn extra_noise_is_measured_from_a_longer_memory_than_the_register() {
        let mut f = ClockFilter::new();
        f.add(s(0.0, 0.001, 0.0), 1e-7).unwrap();
        let mut out = None;
        for i in 1..=NSTAGE {
            #[allow(clippy::cast_precision_loss, reason = "small")]
            let t = i as f64;
            out = f.add(s(0.0, 0.002, t), 1e-7);
        }
        // The 1 ms sample has left the register but not the memory.
        let out = out.expect("handed on");
        assert_eq!(out.delay, 0.002, "the register's least delay");
        assert!((out.extra_noise - 0.001 / 12f64.sqrt()).abs() < 1e-12);
        f.reset();
        let out = f.add(s(0.0, 0.002, 20.0), 1e-7).unwrap();
        assert_eq!(out.extra_noise, 0.0, "forgotten by a reset");
    }

    #[test]
    fn delay_spike_costs_a_sample_and_a_new_route_is_followed() {
        let mut f = ClockFilter::new();
        let mut t = 0.0;
        for k in 0..8 {
            let wiggle = if k % 2 == 0 { 1e-5 } else { -1e-5 };
            assert!(f.add(s(wiggle, 0.001 + wiggle, t), 1e-7).is_some());
            t += 1.0;
        }
        // A 50 ms queueing spike: dropped.
        assert_eq!(f.add(s(0.025, 0.051, t), 1e-7), None);
        t += 1.0;
        // The route changes to 3 ms: the first samples on it are dropped
        // too, but within a register's worth the new path is followed.
        let mut passed = Vec::new();
        for _ in 0..NSTAGE {
            passed.push(f.add(s(0.001, 0.003, t), 1e-7).is_some());
            t += 1.0;
        }
        assert!(!passed[0], "{passed:?}");
        let first = passed.iter().position(|&p| p).expect("followed");
        assert!(passed[first..].iter().all(|&p| p), "{passed:?}");
    }

    #[test]
    fn reset_forgets_everything() {
        let mut f = ClockFilter::new();
        f.add(s(0.1, 0.001, 5.0), 1e-6).unwrap();
        f.reset();
        assert_eq!(f.last(), None);
        // An older timestamp is accepted after a reset.
        assert!(f.add(s(0.0, 0.002, 1.0), 1e-6).is_some());
    }

    #[test]
    fn bad_input_is_ignored() {
        let mut f = ClockFilter::new();
        assert_eq!(f.add(s(f64::NAN, 0.001, 0.0), 1e-6), None);
        assert_eq!(f.add(s(0.0, -1.0, 0.0), 1e-6), None);
        assert_eq!(f.add(s(0.0, 0.001, f64::INFINITY), 1e-6), None);
        f.add_missing(f64::NAN);
        assert_eq!(f.usable(0.0), 0);
    }
}
