//! strata-sim: a deterministic discrete-event simulator for strata.
//!
//! It drives the real sans-IO engine ([`strata_engine::Node`]) of every
//! host — no copy of its logic — on simulated clocks ([`SimClock`]: offset,
//! frequency error, random-walk wander, temperature-like steps) across
//! simulated paths ([`Path`]: per-direction delay, jitter, loss, spikes,
//! a route change), with one event queue ordered by true time. Everything
//! random derives from one seed, and nothing reads a real clock, so a run
//! is reproducible bit for bit.
//!
//! - [`Sim`]: the simulator; [`Sim::run_until`] is bounded by a livelock
//!   guard.
//! - [`cases()`] and [`run_case`]: the fixed matrix behind
//!   `docs/accuracy.md` and `cargo xtask sim`.
//! - [`Metrics`]: time to lock, steady-state error and frequency error.
//! - [`plot::write_png`]: offset and frequency against time.
#![forbid(unsafe_code)]

mod cases;
mod clock;
mod metrics;
mod path;
pub mod plot;
mod sim;

pub use cases::{
    case, cases, client_discipline, default_client_clock, run_case, Case, CaseResult, ServerSpec,
    GROUP,
};
pub use clock::{ClockModel, SimClock, EPOCH_UNIX};
pub use metrics::{Metrics, LOCK_THRESHOLD};
pub use path::{Jitter, Path, RouteChange};
pub use sim::{Host, HostId, Record, Sim};

/// Why a simulation could not be set up or run.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum SimError {
    /// A path parameter is negative, not finite or out of range.
    #[error("invalid path parameters")]
    InvalidPath,
    /// A host id does not exist (or a path joins a host to itself).
    #[error("no such host")]
    NoSuchHost,
    /// A time or duration is not finite or too short.
    #[error("invalid time")]
    InvalidTime,
    /// Too many events for the simulated time: something livelocked.
    #[error("livelock: event budget exhausted at t = {at} s")]
    Livelock {
        /// True time when the budget ran out (s).
        at: f64,
    },
}

/// A table of results, one line per case, for terminals and docs
/// (Markdown).
#[must_use]
pub fn table(results: &[CaseResult]) -> String {
    let mut s = String::from(
        "| case | lock < 1 ms (s) | steady RMS (µs) | steady max (µs) | freq error (ppm) | packets | steps |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let m = &r.metrics;
        let lock = m
            .time_to_lock
            .map_or_else(|| "never".to_owned(), |t| format!("{t:.0}"));
        s.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.4} | {} | {} |\n",
            r.name,
            lock,
            m.steady_rms * 1e6,
            m.steady_max * 1e6,
            m.frequency_error_ppm,
            m.packets_sent,
            r.steps
        ));
    }
    s
}

/// A table over several seeds, one line per case: the median and, in
/// brackets, the worst of each figure (the largest; a lock never reached
/// counts as worst). `runs` holds each case's results, one per seed.
#[must_use]
pub fn seed_table(runs: &[Vec<CaseResult>]) -> String {
    fn median_worst(mut xs: Vec<f64>) -> (f64, f64) {
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        if n == 0 {
            return (f64::NAN, f64::NAN);
        }
        let median = if n % 2 == 1 {
            xs[n / 2]
        } else {
            (xs[n / 2 - 1] + xs[n / 2]) / 2.0
        };
        (median, xs[n - 1])
    }
    let mut s = String::from(
        "| case | seeds | lock < 1 ms (s) | steady RMS (µs) | steady max (µs) | freq error (ppm) | packets | steps |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for results in runs {
        let Some(first) = results.first() else {
            continue;
        };
        let col = |f: &dyn Fn(&CaseResult) -> f64| median_worst(results.iter().map(f).collect());
        let lock = col(&|r| r.metrics.time_to_lock.unwrap_or(f64::INFINITY));
        let rms = col(&|r| r.metrics.steady_rms * 1e6);
        let max = col(&|r| r.metrics.steady_max * 1e6);
        let freq = col(&|r| r.metrics.frequency_error_ppm);
        #[allow(clippy::cast_precision_loss, reason = "packet counts are small")]
        let packets = col(&|r| r.metrics.packets_sent as f64);
        let steps = col(&|r| f64::from(r.steps));
        let fmt_lock = |t: f64| {
            if t.is_finite() {
                format!("{t:.0}")
            } else {
                "never".to_owned()
            }
        };
        s.push_str(&format!(
            "| {} | {} | {} [{}] | {:.2} [{:.2}] | {:.1} [{:.1}] | {:.4} [{:.4}] | {:.0} [{:.0}] | {:.0} [{:.0}] |\n",
            first.name,
            results.len(),
            fmt_lock(lock.0),
            fmt_lock(lock.1),
            rms.0,
            rms.1,
            max.0,
            max.1,
            freq.0,
            freq.1,
            packets.0,
            packets.1,
            steps.0,
            steps.1,
        ));
    }
    s
}
