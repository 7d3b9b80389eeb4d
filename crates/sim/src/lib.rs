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
