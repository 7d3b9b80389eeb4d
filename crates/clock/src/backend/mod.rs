//! Clock backends: what the discipline steers and what timestamps are read
//! from.
//!
//! * [`Clock`]: a steerable clock (read, step, set frequency, leap flag).
//!   [`SystemClock`] adjusts the host clock through
//!   `adjtimex`; [`ObserveOnly`] reads the host clock and never adjusts it;
//!   [`VirtualClock`] is a skewed, steerable clock computed from a
//!   [`TimeSource`], for tests, simulation and namespace scenarios.
//! * [`TimeSource`]: the host realtime clock
//!   ([`HostRealtime`]) or a hand-driven one
//!   ([`ManualTime`]).
//!
//! Kernel receive timestamps are taken on the host clock; [`Clock::from_host`]
//! maps them into the clock's own timescale, so an engine can use the same
//! code for every backend.
//!
//! Only `system.rs` reads the real time or calls into the kernel.

pub mod observe;
#[cfg(target_os = "linux")]
pub mod system;
#[path = "virtual.rs"]
pub mod virtual_clock;

pub use observe::ObserveOnly;
#[cfg(target_os = "linux")]
pub use system::{ClockChangeWatch, HostRealtime, SystemClock};
pub use virtual_clock::{ManualTime, VirtualClock};

use std::sync::Arc;

use strata_wire::NtpTimestamp;

/// The largest frequency correction (ppm) a backend accepts, the kernel's
/// limit for `adjtimex` `freq` (Linux MAXFREQ, 500 ppm).
pub const MAX_FREQUENCY_PPM: f64 = 500.0;

/// Errors from a clock backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// The operation that failed (e.g. `"adjtimex"`).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A value was not finite or outside what the clock accepts.
    #[error("{what} out of range: {value}")]
    OutOfRange {
        /// What the value was (e.g. `"frequency (ppm)"`).
        what: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// The backend cannot do this.
    #[error("not supported by this clock: {0}")]
    Unsupported(&'static str),
}

/// Checks a frequency request: finite and within ±[`MAX_FREQUENCY_PPM`].
pub(crate) fn check_frequency(ppm: f64) -> Result<f64, ClockError> {
    if ppm.is_finite() && ppm.abs() <= MAX_FREQUENCY_PPM {
        Ok(ppm)
    } else {
        Err(ClockError::OutOfRange {
            what: "frequency (ppm)",
            value: ppm,
        })
    }
}

/// Checks a step request: finite and under 2^31 s (the NTP era half-range).
pub(crate) fn check_step(offset: f64) -> Result<f64, ClockError> {
    if offset.is_finite() && offset.abs() < 2_147_483_648.0 {
        Ok(offset)
    } else {
        Err(ClockError::OutOfRange {
            what: "step (s)",
            value: offset,
        })
    }
}

/// A pending leap second, as announced by the leap indicator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeapAction {
    /// No leap second.
    None,
    /// Insert a second at the end of the current UTC day.
    Insert,
    /// Delete the last second of the current UTC day.
    Delete,
}

/// How a clock's readings follow the host realtime clock, as a value
/// other threads can hold: `clock = anchor_clock + (host - anchor_host) ×
/// (1 + rate_ppm × 1e-6)`. A [`Clock`] hands out its current map with
/// [`Clock::host_map`]; applying it to a host reading gives exactly what
/// [`Clock::from_host`] gives (and, for a host reading taken now, what
/// [`Clock::now`] gives) until the clock is next stepped or its frequency
/// changed, when the owner hands out the new map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostMap {
    /// A host instant.
    pub anchor_host: NtpTimestamp,
    /// The clock's reading at `anchor_host`.
    pub anchor_clock: NtpTimestamp,
    /// How much faster than the host clock the clock runs, ppm.
    pub rate_ppm: f64,
}

impl HostMap {
    /// The host clock itself.
    pub const IDENTITY: HostMap = HostMap {
        anchor_host: NtpTimestamp::ZERO,
        anchor_clock: NtpTimestamp::ZERO,
        rate_ppm: 0.0,
    };

    /// The clock's reading at host time `host`.
    #[must_use]
    pub fn apply(&self, host: NtpTimestamp) -> NtpTimestamp {
        let elapsed = host - self.anchor_host;
        if self.rate_ppm == 0.0 {
            return self.anchor_clock + elapsed;
        }
        let drift =
            strata_wire::NtpDuration::from_seconds(elapsed.to_seconds() * self.rate_ppm * 1e-6);
        self.anchor_clock + elapsed + drift
    }
}

/// What the kernel is told about the clock's synchronisation on each
/// clock update (see [`Clock::set_sync_status`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyncStatus {
    /// Maximum error (s): the root distance.
    pub max_error: f64,
    /// Estimated error (s): the jitter.
    pub est_error: f64,
}

/// The kernel's view of the clock (`adjtimex`), for status output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelView {
    /// Frequency correction, ppm.
    pub frequency_ppm: f64,
    /// The `STA_*` status bits.
    pub status: i32,
    /// The clock state (`TIME_OK` … `TIME_ERROR`).
    pub state: i32,
    /// Maximum error, s.
    pub max_error: f64,
    /// Estimated error, s.
    pub est_error: f64,
}

/// A steerable clock.
pub trait Clock: Send {
    /// This clock's reading.
    fn now(&self) -> Result<NtpTimestamp, ClockError>;
    /// Moves the clock by `offset` seconds (positive = forward).
    fn step(&mut self, offset: f64) -> Result<(), ClockError>;
    /// Sets the total frequency correction in ppm; positive speeds the
    /// clock up.
    fn set_frequency(&mut self, ppm: f64) -> Result<(), ClockError>;
    /// The current total frequency correction in ppm.
    fn frequency(&self) -> Result<f64, ClockError>;
    /// Arms (or disarms) a leap second at the end of the current UTC day.
    fn set_leap(&mut self, action: LeapAction) -> Result<(), ClockError>;
    /// Converts a host `CLOCK_REALTIME` timestamp (e.g. a kernel receive
    /// timestamp, as `NtpTimestamp::from_unix`) into this clock's timescale.
    #[allow(clippy::wrong_self_convention)] // the name is the engine's contract
    fn from_host(&self, host: NtpTimestamp) -> NtpTimestamp;
    /// Whether steering this clock adjusts the host clock (true only for
    /// [`SystemClock`]).
    fn adjusts_host(&self) -> bool;
    /// The map from host time to this clock's time as it stands now, for
    /// threads that read the clock without owning it (see [`HostMap`]).
    /// The default is the identity, right for every clock that reads the
    /// host clock itself.
    fn host_map(&self) -> HostMap {
        HostMap::IDENTITY
    }
    /// Tells the kernel the clock is synchronised with these error bounds
    /// (a clock update). Nothing for clocks without a kernel status.
    fn set_sync_status(&mut self, _sync: SyncStatus) -> Result<(), ClockError> {
        Ok(())
    }
    /// At a clean stop: leaves `frequency_ppm` (the drift estimate, without
    /// any phase slew) as the frequency and marks the clock unsynchronised.
    /// Nothing for clocks without a kernel status.
    fn release(&mut self, _frequency_ppm: f64) -> Result<(), ClockError> {
        Ok(())
    }
    /// The kernel's view of the clock, for clocks the kernel keeps.
    fn kernel_view(&self) -> Option<KernelView> {
        None
    }
}

/// A source of host realtime readings.
pub trait TimeSource: Send {
    /// The host realtime clock now.
    fn host_now(&self) -> NtpTimestamp;
}

impl<T: TimeSource + Sync + ?Sized> TimeSource for Arc<T> {
    fn host_now(&self) -> NtpTimestamp {
        (**self).host_now()
    }
}

impl<T: TimeSource + ?Sized> TimeSource for Box<T> {
    fn host_now(&self) -> NtpTimestamp {
        (**self).host_now()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now(&self) -> Result<NtpTimestamp, ClockError> {
        (**self).now()
    }
    fn step(&mut self, offset: f64) -> Result<(), ClockError> {
        (**self).step(offset)
    }
    fn set_frequency(&mut self, ppm: f64) -> Result<(), ClockError> {
        (**self).set_frequency(ppm)
    }
    fn frequency(&self) -> Result<f64, ClockError> {
        (**self).frequency()
    }
    fn set_leap(&mut self, action: LeapAction) -> Result<(), ClockError> {
        (**self).set_leap(action)
    }
    fn from_host(&self, host: NtpTimestamp) -> NtpTimestamp {
        (**self).from_host(host)
    }
    fn adjusts_host(&self) -> bool {
        (**self).adjusts_host()
    }
    fn host_map(&self) -> HostMap {
        (**self).host_map()
    }
    fn set_sync_status(&mut self, sync: SyncStatus) -> Result<(), ClockError> {
        (**self).set_sync_status(sync)
    }
    fn release(&mut self, frequency_ppm: f64) -> Result<(), ClockError> {
        (**self).release(frequency_ppm)
    }
    fn kernel_view(&self) -> Option<KernelView> {
        (**self).kernel_view()
    }
}
