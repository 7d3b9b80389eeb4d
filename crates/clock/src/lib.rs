//! strata-clock: the RFC 5905 clock algorithms and the clock backends.
//!
//! The algorithm modules are pure: they never read a clock, never sleep and
//! hold no IO. Every input carries its own time (`now`, `f64` seconds on a
//! monotonic timebase the caller chooses), so the same inputs always give
//! the same outputs and tests can run hours of simulated time in
//! milliseconds.
//!
//! * [`filter`]: the per-association clock filter (RFC 5905 §10, handing
//!   on every sample of plausible delay).
//! * [`regression`]: the delay-weighted regression of the free-running
//!   phase over a window chosen by a runs test.
//! * [`offset_filter`]: spike suppression on offsets, for samples that all
//!   carry the same delay (broadcast and multicast listening).
//! * [`select`]: intersection, clustering and combining (RFC 5905 §11).
//! * [`discipline`]: the clock discipline: step/slew decisions, the
//!   frequency estimate and the poll interval (RFC 5905 §11.3, with a
//!   regression estimator and a step/slew controller in place of the
//!   PLL/FLL; see the module doc).
//! * [`backend`]: the clocks the discipline steers: the host clock via
//!   `adjtimex` ([`backend::SystemClock`]), a read-only observer
//!   ([`backend::ObserveOnly`]) and a skewed simulated clock
//!   ([`backend::VirtualClock`]).
//!
//! Offsets follow RFC 5905 throughout: theta = reference − local clock,
//! positive when the local clock is behind.
//!
//! # Example
//!
//! Feed on-wire samples to a clock filter: it hands on every plausible
//! sample with the offset error its excess delay allows, and gives
//! selection the least delay it holds:
//!
//! ```
//! use strata_clock::filter::{ClockFilter, Sample};
//!
//! let mut filter = ClockFilter::new();
//! let precision = 2f64.powi(-20);
//! let mut outputs = Vec::new();
//! for (i, (offset, delay)) in [(0.012, 0.030), (0.010, 0.008), (0.015, 0.040)]
//!     .into_iter()
//!     .enumerate()
//! {
//!     let sample = Sample { offset, delay, dispersion: 1e-6, time: 16.0 * i as f64 };
//!     outputs.extend(filter.add(sample, precision));
//! }
//! assert_eq!(outputs.len(), 3);
//! assert_eq!(outputs[1].offset, 0.010);
//! assert_eq!(outputs[1].extra_noise, 0.0); // at the least delay
//! assert!(outputs[2].extra_noise > 0.0); // 32 ms above it
//! assert_eq!(outputs[2].delay, 0.008); // selection weighs the least delay
//! assert!(outputs[2].jitter >= precision);
//! ```
#![warn(missing_debug_implementations)]

pub mod backend;
pub mod discipline;
pub mod filter;
pub mod offset_filter;
pub mod regression;
pub mod select;

/// Frequency tolerance PHI (RFC 5905): the assumed worst-case frequency
/// error of a clock, 15 ppm, at which dispersion grows (s/s).
pub const PHI: f64 = 15e-6;

/// Maximum dispersion MAXDISP (RFC 5905), 16 s: the dispersion of a missing
/// or unusable sample.
pub const MAXDISP: f64 = 16.0;
