//! The clock discipline: decides between stepping and slewing, estimates
//! the clock's frequency error and picks the system poll interval.
//!
//! # Design
//!
//! RFC 5905 §11.3 disciplines the clock with a hybrid PLL/FLL whose gains
//! depend on the poll interval. Here the loop is split into an *estimator*
//! and a *controller*, which keeps it stable at any poll interval, from
//! 2^-4 s in lab scenarios to 2^17 s:
//!
//! * **Estimator.** The state is the clock offset `theta` (reference −
//!   local, s) and the clock's own fractional frequency error `d` (s/s,
//!   positive = the clock runs fast before correction), with the model
//!   `dtheta/dt = -(d + c)`, where `c` is the total frequency correction
//!   the discipline has commanded (0 for a clock that is not
//!   [`DisciplineConfig::steered`]). Every command is known, so the
//!   discipline's own corrections never look like drift: each offset plus
//!   every correction applied until it was measured is a sample of the
//!   *free-running phase*, a line of slope `-d` while the oscillator holds
//!   still. A weighted regression over recent samples
//!   ([`crate::regression`], chrony's approach) fits that line; a runs test
//!   on its residuals drops the oldest samples once the line bends (the
//!   oscillator wandered or stepped, or the path changed), so the noise is
//!   averaged over as many samples as the clock's stability allows. Each
//!   sample weighs by its noise: the measurement noise, estimated from the
//!   second differences of the free-running phase (starting from
//!   [`DisciplineConfig::initial_noise`], floored at
//!   [`DisciplineConfig::min_jitter`]), or, once the window is long enough,
//!   a model learnt from the residuals of how much of the `extra_noise`
//!   its excess delay allows shows up ([`Discipline::update_weighted`]),
//!   plus the phase the
//!   oscillator's wander can put between it and the line at its age. The
//!   wander starts at [`DisciplineConfig::frequency_wander`] and follows the
//!   fits' scatter (reduced chi-square above 1 raises it, below lowers
//!   it). Between samples the estimate is propagated like a two-state
//!   Kalman filter's (phase noise [`DisciplineConfig::phase_noise`], the
//!   adapted wander); with a single sample after start the Kalman
//!   measurement update stands in for the fit. So the frequency is
//!   measured from the first few samples after the first step (chrony
//!   does the same), instead of RFC 5905's FREQ interval of two samples.
//! * **Jumps and bends.** An offset beyond
//!   [`DisciplineConfig::jump_gate`] standard deviations of its prediction
//!   is a phase jump: the older samples are moved by it, so the phase
//!   follows and the frequency is not dragged; a second such jump the same
//!   way means the frequency changed and the line restarts. A lasting
//!   smaller departure is caught by a CUSUM on the normalised innovations,
//!   which restarts the line from the samples since it began to rise.
//! * **Observe-only.** A clock that is not steered keeps its free-running
//!   offset: the model applies no corrections and no steps, so the offset
//!   and frequency estimates describe the host clock and cannot run off
//!   (offsets of any size are tracked, none is stepped).
//! * **Controller.** Phase is removed by slewing through the frequency: the
//!   commanded correction is `c = -d + theta / T`, clamped to ±500 ppm,
//!   where `T = phase_time_constant × 2^poll` s while the estimated offset
//!   is within three standard deviations of zero, and shorter (down to
//!   [`DisciplineConfig::min_time_constant`]) in proportion as it stands
//!   out: a known offset, like the one left after the first step while
//!   the frequency was being measured, is slewed out quickly, noise is not
//!   chased. [`Discipline::tick`]
//!   recomputes `c` from the predicted offset every
//!   `min(adjust_interval, T / 4)` s so that long polls do not overshoot.
//!   The frequency part `-d` is [`Discipline::frequency_ppm`], the value
//!   worth saving in the drift file.
//! * **Sample age.** An offset may reach the discipline some time after it
//!   was measured (a combine of several sources, a filter that hands on an
//!   older sample). [`Discipline::update_sampled`] takes the time
//!   the offset was measured: the corrections applied since then are known
//!   exactly (a log of every change of `c` and every step) and subtracted,
//!   and each sample enters the regression at the time it was measured. [`Discipline::update`] treats the offset as
//!   measured at `now`, which is fine except while a large offset is being
//!   slewed out at a high rate.
//!
//! # Steps, spikes and panics (RFC 5905 semantics)
//!
//! * The first offset ever ([`DisciplineState::Unset`]) is stepped at once
//!   when above `step_threshold`, whatever its size (like `ntpd -g`; the
//!   panic threshold does not apply to it).
//! * Later, an offset above `panic_threshold` gives [`Outcome::Panic`] and
//!   changes nothing (the caller decides, typically by exiting).
//! * An offset above `step_threshold` enters [`DisciplineState::Spike`] and is
//!   ignored; if offsets stay above the threshold for `stepout` seconds the
//!   clock is stepped. A normal offset in between ends the spike.
//! * After a step every association's filter must be reset by the caller
//!   (RFC 5905 `clear()`), and the poll interval drops to `min_poll`.
//!
//! # Poll interval
//!
//! In [`DisciplineState::Sync`] the poll follows the regression, so that it
//! adapts to the measured noise and wander rather than to a counter alone:
//! after `poll_limit` samples at a poll with the fit averaging at least
//! `poll_up_window` samples and a reduced chi-square below 1.5, the poll
//! exponent rises by one; when the runs test drops samples and fewer than
//! halfway between `poll_down_window` and `poll_up_window` are left, or the fit keeps fewer than
//! `poll_down_window` (or its chi-square exceeds 2), it falls by one,
//! within `[min_poll, max_poll]`.

mod config;
mod controller;
mod estimator;
mod jump;
mod poll;

use std::collections::VecDeque;

use crate::backend::MAX_FREQUENCY_PPM;
use crate::regression::{Point, Regression};

pub use config::DisciplineConfig;
use estimator::{MAX_WANDER, MIN_WANDER};

/// The discipline's current estimate, for status output (like `chronyc
/// tracking`).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Estimate {
    /// The smoothed offset now (s; reference − local): the regression's
    /// value, not the last raw sample.
    pub offset: f64,
    /// Its one-sigma uncertainty (s).
    pub offset_uncertainty: f64,
    /// RMS of the samples about the fitted line (s), like chrony's "RMS
    /// offset".
    pub rms_offset: f64,
    /// The frequency estimate's one-sigma uncertainty (ppm), like
    /// chrony's "skew".
    pub frequency_uncertainty_ppm: f64,
    /// How many samples the estimate averages.
    pub samples: usize,
}

/// A command for the clock backend, drained with
/// [`Discipline::poll_command`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClockCommand {
    /// Step the clock by `offset` seconds (positive = forward).
    Step {
        /// The step (s).
        offset: f64,
    },
    /// Set the total frequency correction applied to the clock (ppm,
    /// positive speeds it up). It includes the transient phase slew.
    SetFrequency {
        /// The correction (ppm).
        ppm: f64,
    },
}

/// The discipline state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisciplineState {
    /// No offset seen yet.
    Unset,
    /// Measuring the frequency: the first `stepout` seconds after start or
    /// a step, when no drift-file frequency was known.
    Freq,
    /// Tracking: the frequency is known and offsets are slewed.
    Sync,
    /// Offsets above the step threshold are being held off for up to
    /// `stepout` seconds.
    Spike,
}

/// What [`Discipline::update`] did with an offset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// Not used (a spike being held off, or not a finite number).
    Ignored,
    /// Used; the clock is slewed.
    Slewed,
    /// The clock was stepped by `offset`; the caller must reset every
    /// association's clock filter.
    Stepped {
        /// The step (s).
        offset: f64,
    },
    /// The offset exceeds the panic threshold; nothing was changed.
    Panic {
        /// The offending offset (s).
        offset: f64,
    },
}

/// The clock discipline. See the module doc.
#[derive(Clone, Debug)]
pub struct Discipline {
    config: DisciplineConfig,
    state: DisciplineState,
    /// State before a spike began, restored when it ends.
    before_spike: DisciplineState,
    /// When the current Freq or Spike state began.
    since: f64,
    /// Whether the frequency estimate is trusted (drift file or Freq done).
    frequency_known: bool,
    // Estimator: x = [theta, d] at time `t`, covariance `p`.
    theta: f64,
    d: f64,
    p: [[f64; 2]; 2],
    t: f64,
    /// The correction in effect since `t` (s/s).
    applied: f64,
    /// Everything the corrections took off theta so far (s): the integral
    /// of `applied` plus all steps. `offset + removed` is the free-running
    /// phase.
    removed: f64,
    /// Checkpoints (time, removed, rate after) at every change of the
    /// correction, oldest first, for [`Discipline::update_sampled`].
    log: VecDeque<(f64, f64, f64)>,
    /// The last two free-running phase points (time, phase), newest last.
    history: [Option<(f64, f64)>; 2],
    /// Measurement noise variance estimate (s²) and how many second
    /// differences went into it.
    noise: f64,
    noise_samples: u32,
    /// The free-running phase samples and their fit.
    regression: Regression,
    /// How many samples the last fit used.
    window: usize,
    /// The frequency wander (random-walk FM, (s/s)²/s), adapted to the
    /// fits' scatter.
    wander: f64,
    /// The last fit's reduced chi-square.
    misfit: f64,
    /// The last fit's RMS residual (s).
    rms_offset: f64,
    /// The CUSUM sums up and down, and how many samples each has been
    /// rising.
    cusum_up: (f64, usize),
    cusum_down: (f64, usize),
    /// Whether the last fit's runs test dropped old samples.
    cut: bool,
    /// The last sample's phase jump (s), if it was one.
    last_jump: Option<f64>,
    /// Updates since the poll exponent last changed.
    samples_at_poll: u32,
    last_adjust: f64,
    commands: VecDeque<ClockCommand>,
    last_offset: f64,
    jitter: f64,
    poll: i8,
}

impl Discipline {
    /// A discipline with `config`, starting from a drift-file frequency
    /// correction (ppm) if there is one. A `SetFrequency` with the starting
    /// correction (0 without a drift file) is queued at once, so that the
    /// clock and the discipline agree from the start.
    #[must_use]
    pub fn new(config: DisciplineConfig, initial_frequency_ppm: Option<f64>) -> Self {
        let max = MAX_FREQUENCY_PPM;
        let initial = initial_frequency_ppm
            .filter(|f| f.is_finite())
            .map(|f| f.clamp(-max, max));
        let (d, var) = match initial {
            Some(ppm) => (
                -ppm * 1e-6,
                (config.initial_frequency_uncertainty_ppm.abs().max(1e-3) * 1e-6).powi(2),
            ),
            None => (0.0, (max * 1e-6).powi(2)),
        };
        let poll = config.min_poll.min(config.max_poll);
        let mut commands = VecDeque::new();
        commands.push_back(ClockCommand::SetFrequency {
            ppm: initial.unwrap_or(0.0),
        });
        Self {
            state: DisciplineState::Unset,
            before_spike: DisciplineState::Unset,
            since: 0.0,
            frequency_known: initial.is_some(),
            theta: 0.0,
            d,
            p: [[0.0, 0.0], [0.0, var]],
            t: 0.0,
            applied: -d,
            removed: 0.0,
            log: VecDeque::new(),
            history: [None, None],
            noise: config
                .initial_noise
                .abs()
                .max(config.min_jitter.abs())
                .powi(2),
            noise_samples: 0,
            regression: {
                let mut r = Regression::new();
                r.set_wander(config.frequency_wander);
                r
            },
            window: 0,
            wander: config.frequency_wander.abs().clamp(MIN_WANDER, MAX_WANDER),
            misfit: 1.0,
            rms_offset: 0.0,
            cusum_up: (0.0, 0),
            cusum_down: (0.0, 0),
            cut: false,
            last_jump: None,
            samples_at_poll: 0,
            last_adjust: 0.0,
            commands,
            last_offset: 0.0,
            jitter: 0.0,
            poll,
            config,
        }
    }

    /// A new system offset (s) with its jitter (s) from the combine step at
    /// monotonic time `now`, taken as measured at `now`. Queues clock
    /// commands (drain them with [`Discipline::poll_command`]); on
    /// [`Outcome::Stepped`] the caller must reset all associations' filters
    /// (RFC 5905 `clear()`). Prefer [`Discipline::update_sampled`] when the
    /// time the offset was measured is known.
    pub fn update(&mut self, now: f64, offset: f64, jitter: f64) -> Outcome {
        self.update_sampled(now, now, offset, jitter)
    }

    /// Like [`Discipline::update`], for an offset measured at `sample_time`
    /// (e.g. the system peer's `FilterOutput::time`; clamped to `now`). The
    /// clock filter hands on the least-delay sample, which can be several
    /// polls old; the corrections applied since then are known exactly and
    /// are taken into account, which matters while a large offset is being
    /// slewed out.
    pub fn update_sampled(
        &mut self,
        now: f64,
        sample_time: f64,
        offset: f64,
        jitter: f64,
    ) -> Outcome {
        self.update_weighted(now, sample_time, offset, jitter, 0.0)
    }

    /// Like [`Discipline::update_sampled`], for an offset whose error may
    /// exceed the usual measurement noise by up to `extra_noise` (s, in
    /// quadrature) because its round-trip delay exceeds the path's least
    /// delay (`FilterOutput::extra_noise`). How much such samples weigh
    /// less is learnt from the residuals ([`crate::regression`]).
    pub fn update_weighted(
        &mut self,
        now: f64,
        sample_time: f64,
        offset: f64,
        jitter: f64,
        extra_noise: f64,
    ) -> Outcome {
        let extra_noise = if extra_noise.is_finite() {
            extra_noise.abs()
        } else {
            0.0
        };
        if !offset.is_finite() || !now.is_finite() {
            return Outcome::Ignored;
        }
        let ts = if sample_time.is_finite() {
            sample_time.min(now)
        } else {
            now
        };
        if self.state == DisciplineState::Unset {
            let r = self.measurement_variance();
            self.t = now;
            self.theta = offset;
            self.p[0] = [r, 0.0];
            self.p[1][0] = 0.0;
            self.last_offset = offset;
            self.jitter = if jitter.is_finite() {
                jitter.abs()
            } else {
                0.0
            };
            self.log.push_back((now, self.removed, self.model_rate()));
            self.observe_phase(ts, offset + self.removed);
            self.regression.push(Point {
                t: ts,
                phase: offset + self.removed,
                variance: r,
                queueing: extra_noise * extra_noise,
            });
            if self.config.steered && offset.abs() > self.config.step_threshold {
                return self.step(now, offset);
            }
            self.enter_tracking(now);
            self.command(now);
            return Outcome::Slewed;
        }
        if let Some(panic) = self.config.panic_threshold {
            if offset.abs() > panic {
                return Outcome::Panic { offset };
            }
        }
        self.predict(now);
        // The offset as of now, less the clock's own drift since `ts`.
        let removed_then = self.removed_at(ts);
        let current = offset - (self.removed_at(now) - removed_then);
        if self.config.steered && current.abs() > self.config.step_threshold {
            if self.state != DisciplineState::Spike {
                self.before_spike = self.state;
                self.state = DisciplineState::Spike;
                self.since = now;
                return Outcome::Ignored;
            }
            if now - self.since < self.config.stepout {
                return Outcome::Ignored;
            }
            return self.step(now, current);
        }
        if self.state == DisciplineState::Spike {
            self.state = self.before_spike;
        }
        self.observe_phase(ts, offset + removed_then);
        let queueing = extra_noise * extra_noise;
        let r = self.measurement_variance() + queueing;
        let phase = offset + removed_then;
        if self.regression.len() >= 2 {
            // The free-running phase predicted at `ts`.
            let predicted = self.theta + self.removed + self.d * (now - ts);
            self.check_innovation(phase - predicted, r);
        }
        self.regression.push(Point {
            t: ts,
            phase,
            variance: r - queueing,
            queueing,
        });
        match self.regression.fit() {
            Some(fit) => self.apply_fit(now, &fit),
            None => self.measure(current, now - ts, r),
        }
        // RFC 5905 clock jitter: exponential average (AVG = 4) of the
        // squared offset differences.
        let diff2 = (offset - self.last_offset).powi(2);
        self.jitter = (self.jitter.powi(2) + (diff2 - self.jitter.powi(2)) / 4.0)
            .max(0.0)
            .sqrt();
        self.last_offset = offset;
        if self.state == DisciplineState::Freq && now - self.since >= self.config.stepout {
            self.state = DisciplineState::Sync;
            self.frequency_known = true;
        }
        if self.state == DisciplineState::Sync {
            self.adjust_poll();
        }
        self.command(now);
        Outcome::Slewed
    }

    /// The next clock command to carry out; drain after
    /// [`Discipline::update`] and [`Discipline::tick`] (and once after
    /// [`Discipline::new`]).
    #[must_use]
    pub fn poll_command(&mut self) -> Option<ClockCommand> {
        self.commands.pop_front()
    }

    /// The current frequency correction (ppm; positive = clock sped up):
    /// the estimate of the clock's frequency error, negated, without the
    /// transient phase slew. This is the drift-file value.
    #[must_use]
    pub fn frequency_ppm(&self) -> f64 {
        -self.d * 1e6
    }

    /// The total correction last commanded (ppm), including the phase
    /// slew.
    #[must_use]
    pub fn applied_frequency_ppm(&self) -> f64 {
        self.applied * 1e6
    }

    /// The one-sigma uncertainty of [`Discipline::frequency_ppm`] (ppm).
    #[must_use]
    pub fn frequency_uncertainty_ppm(&self) -> f64 {
        self.p[1][1].max(0.0).sqrt() * 1e6
    }

    /// Whether the frequency is known (from the drift file or measured).
    #[must_use]
    pub fn frequency_known(&self) -> bool {
        self.frequency_known
    }

    /// The discipline state.
    #[must_use]
    pub fn state(&self) -> DisciplineState {
        self.state
    }

    /// The last offset passed to [`Discipline::update`] (s).
    #[must_use]
    pub fn offset(&self) -> f64 {
        self.last_offset
    }

    /// The estimated current offset (s) after the corrections so far, as of
    /// the last update or tick.
    #[must_use]
    pub fn estimated_offset(&self) -> f64 {
        self.theta
    }

    /// The RFC 5905 clock jitter (s): RMS of successive offset differences.
    #[must_use]
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &DisciplineConfig {
        &self.config
    }

    /// The measurement noise standard deviation currently assumed (s).
    #[must_use]
    pub fn measurement_noise(&self) -> f64 {
        self.measurement_variance().sqrt()
    }

    /// The current estimate, for status output.
    #[must_use]
    pub fn estimate(&self) -> Estimate {
        Estimate {
            offset: self.theta,
            offset_uncertainty: self.offset_uncertainty(),
            rms_offset: self.rms_offset,
            frequency_uncertainty_ppm: self.frequency_uncertainty_ppm(),
            samples: self.window,
        }
    }

    /// How many samples the estimate currently averages over.
    #[must_use]
    pub fn window(&self) -> usize {
        self.window
    }

    /// The one-sigma uncertainty of [`Discipline::estimated_offset`] (s).
    #[must_use]
    pub fn offset_uncertainty(&self) -> f64 {
        self.p[0][0].max(0.0).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Clock, ManualTime, VirtualClock};
    use crate::filter::{ClockFilter, Sample};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use strata_wire::{NtpDuration, NtpTimestamp};

    fn drain(d: &mut Discipline) -> Vec<ClockCommand> {
        std::iter::from_fn(|| d.poll_command()).collect()
    }

    fn short() -> DisciplineConfig {
        DisciplineConfig {
            stepout: 2.0,
            min_poll: -1,
            max_poll: -1,
            ..DisciplineConfig::default()
        }
    }

    #[test]
    fn defaults_are_rfc_values() {
        let c = DisciplineConfig::default();
        assert_eq!(c.step_threshold, 0.128);
        assert_eq!(c.stepout, 900.0);
        assert_eq!(c.panic_threshold, Some(1000.0));
        assert_eq!((c.min_poll, c.max_poll), (4, 17));
        let d = Discipline::new(c, None);
        assert_eq!(d.state(), DisciplineState::Unset);
        assert_eq!(d.poll_exponent(), 4);
        assert_eq!(d.next_tick(), None);
    }

    #[test]
    fn drift_file_frequency_is_applied_at_start() {
        let mut d = Discipline::new(DisciplineConfig::default(), Some(-12.5));
        assert_eq!(
            drain(&mut d),
            vec![ClockCommand::SetFrequency { ppm: -12.5 }]
        );
        assert!((d.frequency_ppm() + 12.5).abs() < 1e-9);
        assert!(d.frequency_known());
        // A small first offset is slewed, and the frequency being known the
        // discipline goes straight to Sync.
        assert_eq!(d.update(0.0, 0.001, 1e-5), Outcome::Slewed);
        assert_eq!(d.state(), DisciplineState::Sync);
        let cmds = drain(&mut d);
        let [ClockCommand::SetFrequency { ppm }] = cmds[..] else {
            panic!("{cmds:?}")
        };
        // Slewing a positive offset speeds the clock up.
        assert!(ppm > -12.5, "{ppm}");
    }

    #[test]
    fn first_large_offset_is_stepped_at_once() {
        let mut d = Discipline::new(short(), None);
        drain(&mut d);
        // Even beyond the panic threshold: the first offset is trusted.
        assert_eq!(
            d.update(5.0, 2000.0, 1e-4),
            Outcome::Stepped { offset: 2000.0 }
        );
        let cmds = drain(&mut d);
        assert_eq!(cmds[0], ClockCommand::Step { offset: 2000.0 });
        assert_eq!(d.state(), DisciplineState::Freq);
        assert!(d.next_tick().is_some());
    }

    #[test]
    fn spike_is_held_off_then_stepped_after_stepout() {
        let mut d = Discipline::new(short(), Some(0.0));
        d.update(0.0, 0.0, 1e-4);
        assert_eq!(d.state(), DisciplineState::Sync);
        // One spike: ignored, and a normal offset ends it.
        assert_eq!(d.update(0.5, 0.3, 1e-4), Outcome::Ignored);
        assert_eq!(d.state(), DisciplineState::Spike);
        assert_eq!(d.update(1.0, 0.0001, 1e-4), Outcome::Slewed);
        assert_eq!(d.state(), DisciplineState::Sync);
        drain(&mut d);
        // A lasting offset: ignored until stepout has passed, then stepped.
        assert_eq!(d.update(1.5, 0.3, 1e-4), Outcome::Ignored);
        assert_eq!(d.update(3.0, 0.3, 1e-4), Outcome::Ignored);
        assert!(drain(&mut d)
            .iter()
            .all(|c| !matches!(c, ClockCommand::Step { .. })));
        assert_eq!(d.update(3.5, 0.3, 1e-4), Outcome::Stepped { offset: 0.3 });
        assert!(drain(&mut d).contains(&ClockCommand::Step { offset: 0.3 }));
        assert_eq!(d.state(), DisciplineState::Sync);
    }

    #[test]
    fn panic_threshold_refuses_huge_offsets() {
        let mut d = Discipline::new(short(), Some(0.0));
        d.update(0.0, 0.0, 1e-4);
        drain(&mut d);
        assert_eq!(
            d.update(1.0, -1500.0, 1e-4),
            Outcome::Panic { offset: -1500.0 }
        );
        assert_eq!(drain(&mut d), vec![]);
        assert_eq!(d.state(), DisciplineState::Sync);
        // Without a panic threshold the same offset is a spike, then a step.
        let mut d = Discipline::new(
            DisciplineConfig {
                panic_threshold: None,
                ..short()
            },
            Some(0.0),
        );
        d.update(0.0, 0.0, 1e-4);
        assert_eq!(d.update(1.0, -1500.0, 1e-4), Outcome::Ignored);
        assert_eq!(
            d.update(3.0, -1500.0, 1e-4),
            Outcome::Stepped { offset: -1500.0 }
        );
    }

    #[test]
    fn observe_only_tracks_the_free_running_clock() {
        // A clock 0.3 s ahead and 20 ppm fast that nobody steers: every
        // command is ignored, so the offsets keep growing. The estimator
        // must follow them, never step, and measure the clock's own
        // frequency instead of running off with its ignored corrections.
        let cfg = DisciplineConfig {
            steered: false,
            ..DisciplineConfig::default()
        };
        let mut d = Discipline::new(cfg, None);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut t = 0.0;
        for _ in 0..240 {
            let noise = rng.gen_range(-10e-6..10e-6);
            let theta = -(0.3 + 20e-6 * t);
            let outcome = d.update(t, theta + noise, 1e-5);
            assert!(matches!(outcome, Outcome::Slewed), "t {t}: {outcome:?}");
            t += 16.0;
        }
        let t = t - 16.0;
        assert!(
            (d.frequency_ppm() + 20.0).abs() < 0.05,
            "{}",
            d.frequency_ppm()
        );
        let e = d.estimate();
        assert!((e.offset + 0.3 + 20e-6 * t).abs() < 10e-6, "{e:?}");
        assert!(e.offset_uncertainty > 0.0 && e.offset_uncertainty < 10e-6);
        assert!(e.samples > 10, "{e:?}");
    }

    #[test]
    fn a_small_frequency_step_restarts_the_window() {
        // A free-running clock (observe-only, so the offsets are its own)
        // measured every 64 s with 7 µs of noise; its frequency moves by
        // 0.05 ppm after 200 samples, which moves the phase by only half
        // the noise per sample. The long window is dropped within a few
        // dozen samples and the new frequency measured.
        let cfg = DisciplineConfig {
            steered: false,
            ..DisciplineConfig::default()
        };
        let mut d = Discipline::new(cfg, Some(0.0));
        let mut rng = SmallRng::seed_from_u64(5);
        let mut phase = 0.0;
        let mut widest = 0;
        for k in 0..260u32 {
            if k > 200 {
                phase -= 0.05e-6 * 64.0;
            }
            let noise = rng.gen_range(-12e-6..12e-6);
            d.update(f64::from(k) * 64.0, phase + noise, 1e-5);
            if k == 200 {
                widest = d.window();
            }
        }
        assert!(widest >= 100, "the window grew: {widest}");
        assert!(d.window() < 60, "and was cut: {}", d.window());
        assert!(
            (d.frequency_ppm() + 0.05).abs() < 0.02,
            "{}",
            d.frequency_ppm()
        );
    }

    #[test]
    fn bad_input_is_ignored() {
        let mut d = Discipline::new(short(), None);
        assert_eq!(d.update(0.0, f64::NAN, 1e-4), Outcome::Ignored);
        assert_eq!(d.update(f64::INFINITY, 0.0, 1e-4), Outcome::Ignored);
        assert_eq!(d.state(), DisciplineState::Unset);
        // A non-finite jitter falls back to the floor.
        assert_eq!(d.update(0.0, 0.001, f64::NAN), Outcome::Slewed);
        assert!(d.applied_frequency_ppm().is_finite());
    }

    #[test]
    fn tick_slews_between_updates_and_spurious_ticks_do_nothing() {
        let mut d = Discipline::new(DisciplineConfig::default(), Some(0.0));
        drain(&mut d);
        d.update(0.0, 0.002, 1e-4);
        let first = drain(&mut d);
        assert_eq!(first.len(), 1);
        let due = d.next_tick().unwrap();
        assert!(due > 0.0 && due <= 1.0);
        d.tick(due / 2.0);
        assert_eq!(drain(&mut d), vec![]);
        // As the predicted offset shrinks, the slew eases off.
        let ClockCommand::SetFrequency { ppm: before } = first[0] else {
            panic!()
        };
        d.tick(due);
        let after = drain(&mut d);
        let [ClockCommand::SetFrequency { ppm }] = after[..] else {
            panic!("{after:?}")
        };
        assert!(ppm < before && ppm > 0.0, "{before} {ppm}");
        assert!(d.estimated_offset() < 0.002);
    }

    #[test]
    fn sample_age_is_accounted_for() {
        // Slewing 50 ms out at the 500 ppm limit.
        let mut fresh = Discipline::new(short(), Some(0.0));
        fresh.update(0.0, 0.05, 1e-4);
        assert_eq!(fresh.applied_frequency_ppm(), MAX_FREQUENCY_PPM);
        let mut stale = fresh.clone();
        // The offset measured at 0.0 arrives at 1.0: the 500 µs slewed out
        // in between are known, so it agrees with the prediction exactly.
        assert_eq!(stale.update_sampled(1.0, 0.0, 0.05, 1e-4), Outcome::Slewed);
        assert!((stale.estimated_offset() - 0.0495).abs() < 1e-9);
        assert!(stale.frequency_ppm().abs() < 1e-6);
        // Taken as measured now, the same offset looks 500 µs off.
        fresh.update(1.0, 0.05, 1e-4);
        assert!(fresh.estimated_offset() > 0.0495 + 1e-5);
        // A sample time in the future or not a number counts as now.
        let mut d = stale.clone();
        assert_eq!(d.update_sampled(2.0, 5.0, 0.049, 1e-4), Outcome::Slewed);
        assert_eq!(
            d.update_sampled(3.0, f64::NAN, 0.048, 1e-4),
            Outcome::Slewed
        );
    }

    #[test]
    fn poll_interval_adapts_to_noise_and_wander() {
        let cfg = DisciplineConfig {
            min_poll: 4,
            max_poll: 6,
            ..DisciplineConfig::default()
        };
        let mut d = Discipline::new(cfg, Some(0.0));
        let mut now = 0.0;
        // Offsets well inside the jitter: the poll grows to max_poll.
        for k in 0..200 {
            let off = if k % 2 == 0 { 1e-5 } else { -1e-5 };
            d.update(now, off, 1e-4);
            now += 2f64.powi(i32::from(d.poll_exponent()));
        }
        assert_eq!(d.poll_exponent(), 6);
        // Offsets that swing (a clock whose frequency wanders within a
        // few polls): the runs test keeps cutting the window, and the poll
        // comes back down to min_poll.
        for k in 0..200u32 {
            let off = 2e-4 * (f64::from(k) * std::f64::consts::TAU / 16.0).sin();
            d.update(now, off, 1e-5);
            now += 2f64.powi(i32::from(d.poll_exponent()));
        }
        assert_eq!(d.poll_exponent(), 4);
    }

    /// A client polling a perfect server over a path with random delays,
    /// the way an engine drives filter and discipline.
    struct Sim {
        host: ManualTime,
        start: NtpTimestamp,
        clock: VirtualClock<ManualTime>,
        filter: ClockFilter,
        discipline: Discipline,
        rng: SmallRng,
        steps: usize,
        /// Extra one-way delay on the outbound path (s): a path asymmetry
        /// that biases the measured offset by `asymmetry / 2`.
        asymmetry: f64,
        /// Pass the filter's sample time ([`Discipline::update_sampled`])
        /// rather than treating offsets as measured now.
        sample_time: bool,
    }

    impl Sim {
        fn new(config: DisciplineConfig, offset: f64, ppm: f64, seed: u64) -> Self {
            Self::with_drift(config, None, offset, ppm, seed)
        }

        fn with_drift(
            config: DisciplineConfig,
            drift: Option<f64>,
            offset: f64,
            ppm: f64,
            seed: u64,
        ) -> Self {
            let start = NtpTimestamp::from_unix(1_795_000_000, 0);
            let host = ManualTime::new(start);
            let clock = VirtualClock::new(host.clone(), offset, ppm);
            let mut sim = Sim {
                host,
                start,
                clock,
                filter: ClockFilter::new(),
                discipline: Discipline::new(config, drift),
                rng: SmallRng::seed_from_u64(seed),
                steps: 0,
                asymmetry: 0.0,
                sample_time: true,
            };
            sim.apply();
            sim
        }

        fn now(&self) -> f64 {
            (self.host.now() - self.start).to_seconds()
        }

        fn set_now(&self, t: f64) {
            self.host.set(self.start + NtpDuration::from_seconds(t));
        }

        /// The true error of the clock (s; positive = ahead).
        fn error(&self) -> f64 {
            self.clock.offset_from_host()
        }

        fn apply(&mut self) {
            while let Some(cmd) = self.discipline.poll_command() {
                match cmd {
                    ClockCommand::Step { offset } => {
                        self.clock.step(offset).unwrap();
                        self.steps += 1;
                    }
                    ClockCommand::SetFrequency { ppm } => self.clock.set_frequency(ppm).unwrap(),
                }
            }
        }

        fn gauss(&mut self) -> f64 {
            // Box-Muller.
            let u1: f64 = self.rng.gen_range(f64::EPSILON..1.0);
            let u2: f64 = self.rng.gen_range(0.0..1.0);
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }

        /// One exchange: one-way delays of 1 ms ± 70 µs each, so the
        /// offset noise is about 50 µs.
        fn poll(&mut self) {
            let d1 = (0.001 + 70e-6 * self.gauss()).max(1e-4) + self.asymmetry;
            let d2 = (0.001 + 70e-6 * self.gauss()).max(1e-4);
            let h = self.host.now();
            let t1 = self.clock.from_host(h);
            let t2 = h + NtpDuration::from_seconds(d1);
            let t3 = t2;
            let t4 = self.clock.from_host(t3 + NtpDuration::from_seconds(d2));
            let offset = ((t2 - t1).to_seconds() + (t3 - t4).to_seconds()) / 2.0;
            let delay = (t4 - t1).to_seconds() - (t3 - t2).to_seconds();
            let now = self.now();
            let sample = Sample {
                offset,
                delay,
                dispersion: 2e-6,
                time: now,
            };
            if let Some(out) = self.filter.add(sample, 1e-6) {
                let outcome = if self.sample_time {
                    self.discipline
                        .update_sampled(now, out.time, out.offset, out.jitter)
                } else {
                    self.discipline.update(now, out.offset, out.jitter)
                };
                if let Outcome::Stepped { .. } = outcome {
                    self.filter.reset();
                }
                assert!(!matches!(outcome, Outcome::Panic { .. }));
            }
            self.apply();
        }

        /// Runs until `until` s, polling every 2^poll s and ticking when
        /// due; calls `check(sim)` after every poll.
        fn run(&mut self, until: f64, mut check: impl FnMut(&Sim)) {
            let mut next_poll = self.now();
            loop {
                let tick = self.discipline.next_tick().unwrap_or(f64::INFINITY);
                let t = next_poll.min(tick);
                if t > until {
                    break;
                }
                self.set_now(t);
                if tick <= next_poll {
                    self.discipline.tick(t);
                    self.apply();
                } else {
                    self.poll();
                    check(self);
                    let poll = self.discipline.poll_exponent();
                    next_poll = t + 2f64.powi(i32::from(poll));
                }
            }
        }
    }

    /// The target behaviour: 0.5 s off and 50 ppm fast, polled every 0.5 s
    /// with ~50 µs noise, stepout 2 s: one step, then < 1 ms error within
    /// 60 s and the frequency within 1 ppm of -50 ppm within 120 s.
    #[test]
    fn closed_loop_converges_after_one_step() {
        for seed in 1..=40 {
            let mut sim = Sim::new(short(), 0.5, 50.0, seed);
            // Half the runs time offsets at the update, as a caller that
            // does not know the sample time would.
            sim.sample_time = seed % 2 == 0;
            let mut worst_error = 0.0f64;
            let mut worst_freq = 0.0f64;
            let (mut freq_sum, mut freq_n) = (0.0f64, 0u32);
            sim.run(600.0, |sim| {
                let t = sim.now();
                if std::env::var("SIM_TRACE").is_ok() && (t < 10.0 || t % 10.0 < 0.4) {
                    eprintln!(
                        "t={t:.1} err={:.6} est={:.6} f={:.3} applied={:.3} sd={:.3} {:?}",
                        sim.error(),
                        sim.discipline.estimated_offset(),
                        sim.discipline.frequency_ppm(),
                        sim.discipline.applied_frequency_ppm(),
                        sim.discipline.frequency_uncertainty_ppm(),
                        sim.discipline.state()
                    );
                }
                if t >= 60.0 {
                    worst_error = worst_error.max(sim.error().abs());
                }
                if t >= 120.0 {
                    let off = (sim.discipline.frequency_ppm() + 50.0).abs();
                    worst_freq = worst_freq.max(off);
                    freq_sum += off;
                    freq_n += 1;
                }
            });
            assert_eq!(sim.steps, 1, "seed {seed}");
            assert!(worst_error < 1e-3, "seed {seed}: error {worst_error}");
            // A regression over at most 128 samples 0.5 s apart with 50 µs
            // of noise knows the frequency to a few tenths of a ppm; right
            // after its runs test cuts the window to a few samples (3 s),
            // only to tens of ppm for a poll or two, which moves the phase
            // by microseconds: the average is what must hold.
            let mean_freq = freq_sum / f64::from(freq_n.max(1));
            assert!(
                mean_freq < 1.0,
                "seed {seed}: frequency off by {mean_freq} ppm on average, {worst_freq} at worst"
            );
            assert_eq!(sim.discipline.state(), DisciplineState::Sync);
            eprintln!("seed {seed}: worst error {worst_error:e}, worst freq {worst_freq:e}");
        }
    }

    /// The same clock when the poll interval adapts (2^-1 .. 2^6 s): the
    /// poll backs off, and the loop stays locked.
    #[test]
    fn closed_loop_with_adaptive_poll() {
        let cfg = DisciplineConfig {
            max_poll: 6,
            ..short()
        };
        let mut sim = Sim::new(cfg, 0.5, 50.0, 7);
        let mut worst_error = 0.0f64;
        let mut max_poll = -1;
        sim.run(4.0 * 3600.0, |sim| {
            if sim.now() >= 600.0 {
                worst_error = worst_error.max(sim.error().abs());
            }
            max_poll = max_poll.max(sim.discipline.poll_exponent());
        });
        assert_eq!(sim.steps, 1);
        assert_eq!(max_poll, 6);
        assert!(worst_error < 1e-3, "{worst_error}");
        assert!((sim.discipline.frequency_ppm() + 50.0).abs() < 1.0);
    }

    /// RFC 5905 defaults (poll 2^4 .. 2^10 s, stepout 900 s).
    #[test]
    fn closed_loop_with_rfc_defaults() {
        let cfg = DisciplineConfig {
            max_poll: 10,
            ..DisciplineConfig::default()
        };
        let mut sim = Sim::new(cfg, -0.3, -20.0, 11);
        let mut worst_error = 0.0f64;
        sim.run(12.0 * 3600.0, |sim| {
            if sim.now() >= 3600.0 {
                worst_error = worst_error.max(sim.error().abs());
            }
        });
        assert_eq!(sim.steps, 1);
        assert!(worst_error < 1e-3, "{worst_error}");
        assert!((sim.discipline.frequency_ppm() - 20.0).abs() < 1.0);
    }

    /// With the drift-file frequency and a small start offset, nothing is
    /// stepped and the offset is slewed out.
    #[test]
    fn drift_file_start_slews_without_stepping() {
        let mut sim = Sim::with_drift(short(), Some(-49.0), 0.05, 50.0, 3);
        let mut worst_error = 0.0f64;
        sim.run(300.0, |sim| {
            let t = sim.now();
            if std::env::var("SIM_TRACE").is_ok() && t % 10.0 < 0.4 {
                eprintln!(
                    "t={t:.1} err={:.6} est={:.6} f={:.3} applied={:.3} sd={:.3} noise={:.6} {:?}",
                    sim.error(),
                    sim.discipline.estimated_offset(),
                    sim.discipline.frequency_ppm(),
                    sim.discipline.applied_frequency_ppm(),
                    sim.discipline.frequency_uncertainty_ppm(),
                    sim.discipline.measurement_noise(),
                    sim.discipline.state()
                );
            }
            if t >= 120.0 {
                worst_error = worst_error.max(sim.error().abs());
            }
        });
        assert_eq!(sim.steps, 0);
        assert!(worst_error < 1e-3, "{worst_error}");
        assert!((sim.discipline.frequency_ppm() + 50.0).abs() < 1.0);
    }

    /// A lasting 5 ms change of the measured offset (a path change) is
    /// followed in phase without dragging the frequency far.
    #[test]
    fn phase_jump_does_not_drag_the_frequency() {
        let mut sim = Sim::new(short(), 0.5, 50.0, 5);
        sim.run(300.0, |_| {});
        sim.asymmetry = 0.010; // measured offsets move by +5 ms
        let mut worst_freq = 0.0f64;
        sim.run(600.0, |sim| {
            worst_freq = worst_freq.max((sim.discipline.frequency_ppm() + 50.0).abs());
        });
        assert_eq!(sim.steps, 1);
        assert!(worst_freq < 5.0, "{worst_freq}");
        // The clock now follows the biased offsets: 5 ms behind the host.
        assert!((sim.error() - 0.005).abs() < 5e-4, "{}", sim.error());
    }
}
