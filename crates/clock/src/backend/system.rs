//! The host clock: read with `clock_gettime(CLOCK_REALTIME)` and steered
//! with `adjtimex` (Linux).
//!
//! [`SystemClock`] is the only backend that changes the host clock; the
//! daemon constructs it only when the configuration asks for
//! `backend = "system"`. It steers through two kernel interfaces:
//!
//! * a step is `ADJ_SETOFFSET | ADJ_NANO` (an atomic relative jump);
//! * the frequency is `ADJ_FREQUENCY`, whose `freq` field is in units of
//!   2^-16 ppm ([`ppm_to_freq`], [`freq_to_ppm`]);
//! * a leap second is the `STA_INS` / `STA_DEL` status bits
//!   ([`leap_status`]).
//!
//! The kernel's synchronisation status follows the daemon, as with chrony:
//!
//! * [`SystemClock::take_over`] (at start) clears `STA_PLL`/`STA_FLL` (the
//!   kernel's own loops must not fight the daemon's) and zeroes a pending
//!   `ADJ_OFFSET`, and reports the kernel's current frequency, which a
//!   daemon without a drift file starts from;
//! * [`Clock::set_sync_status`] (on every clock update) sets `ADJ_MAXERROR`
//!   and `ADJ_ESTERROR` and clears `STA_UNSYNC`; between updates the kernel
//!   grows maxerror by itself (500 µs/s) and sets `STA_UNSYNC` when it
//!   passes 16 s;
//! * [`Clock::release`] (at a clean stop) leaves the drift estimate as the
//!   frequency, `STA_UNSYNC` set and the leap bits cleared.
//!
//! [`ClockChangeWatch`] notices the clock being set by someone else (a
//! `timerfd` armed with `TFD_TIMER_CANCEL_ON_SET`).
//!
//! [`kernel_state`] is a read-only query (`modes = 0`) that needs no
//! privilege. The conversions are pure functions so they can be tested
//! without touching the clock.

use std::io::{self, Read};
use std::time::{SystemTime, UNIX_EPOCH};

use strata_wire::NtpTimestamp;

use super::{
    check_frequency, check_step, Clock, ClockError, KernelView, LeapAction, SyncStatus, TimeSource,
};

/// The host realtime clock (`CLOCK_REALTIME`).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostRealtime;

impl TimeSource for HostRealtime {
    fn host_now(&self) -> NtpTimestamp {
        let (secs, nanos) = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => (
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            ),
            Err(e) => {
                // Before 1970: borrow a second for the fraction.
                let d = e.duration();
                let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                match d.subsec_nanos() {
                    0 => (-s, 0),
                    n => (-s - 1, 1_000_000_000 - n),
                }
            }
        };
        NtpTimestamp::from_unix(secs, nanos)
    }
}

/// The kernel clock state as `adjtimex` reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelState {
    /// The frequency correction (ppm, positive = faster).
    pub frequency_ppm: f64,
    /// The `status` bits (`STA_*`).
    pub status: i32,
    /// The clock state returned by the call (`TIME_OK`, `TIME_INS`, …,
    /// `TIME_ERROR`).
    pub state: i32,
    /// Maximum error (s).
    pub max_error: f64,
    /// Estimated error (s).
    pub est_error: f64,
}

impl KernelState {
    /// Whether the kernel considers the clock unsynchronised (`STA_UNSYNC`).
    #[must_use]
    pub fn unsynchronised(&self) -> bool {
        self.status & libc::STA_UNSYNC != 0
    }
}

/// Reads the kernel clock state without changing anything (`adjtimex` with
/// `modes = 0`).
pub fn kernel_state() -> Result<KernelState, ClockError> {
    let mut tx = zeroed_timex();
    let state = adjtimex(&mut tx)?;
    #[allow(clippy::useless_conversion)] // c_long is i64 on 64-bit targets only
    let (freq, maxerror, esterror) = (
        i64::from(tx.freq),
        i64::from(tx.maxerror),
        i64::from(tx.esterror),
    );
    #[allow(clippy::cast_precision_loss)] // microseconds, far below 2^52
    Ok(KernelState {
        frequency_ppm: freq_to_ppm(freq),
        status: tx.status,
        state,
        max_error: maxerror as f64 * 1e-6,
        est_error: esterror as f64 * 1e-6,
    })
}

/// Converts ppm to the `adjtimex` `freq` unit (2^-16 ppm), rounded; `None`
/// when not finite or beyond ±[`MAX_FREQUENCY_PPM`](super::MAX_FREQUENCY_PPM).
#[must_use]
pub fn ppm_to_freq(ppm: f64) -> Option<i64> {
    let ppm = check_frequency(ppm).ok()?;
    #[allow(clippy::cast_possible_truncation)] // |ppm| <= 500: |value| < 2^25
    Some((ppm * 65536.0).round() as i64)
}

/// Converts an `adjtimex` `freq` value (2^-16 ppm) to ppm.
#[must_use]
pub fn freq_to_ppm(freq: i64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // kernel values are < 2^26
    let f = freq as f64;
    f / 65536.0
}

/// Splits a step offset (s) into the `ADJ_SETOFFSET | ADJ_NANO` form:
/// whole seconds (rounded down) and nanoseconds in `0..1_000_000_000`.
/// `None` when not finite or beyond ±2^31 s.
#[must_use]
pub fn offset_to_timespec(offset: f64) -> Option<(i64, i64)> {
    let offset = check_step(offset).ok()?;
    let secs = offset.floor();
    #[allow(clippy::cast_possible_truncation)] // |secs| < 2^31, 0 <= nanos <= 1e9
    let (mut s, mut ns) = (secs as i64, ((offset - secs) * 1e9).round() as i64);
    if ns >= 1_000_000_000 {
        s += 1;
        ns -= 1_000_000_000;
    }
    Some((s, ns))
}

/// The `status` word with the leap bits set for `action` (other bits kept).
#[must_use]
pub fn leap_status(status: i32, action: LeapAction) -> i32 {
    let cleared = status & !(libc::STA_INS | libc::STA_DEL);
    match action {
        LeapAction::None => cleared,
        LeapAction::Insert => cleared | libc::STA_INS,
        LeapAction::Delete => cleared | libc::STA_DEL,
    }
}

/// The kernel's limit for maxerror and esterror (`NTP_PHASE_LIMIT`, 16 s),
/// in microseconds.
pub const MAX_ERROR_US: i64 = 16_000_000;

/// Seconds to the `adjtimex` microsecond fields, clamped to
/// `0..=`[`MAX_ERROR_US`] (not finite counts as the limit).
#[must_use]
pub fn error_to_us(seconds: f64) -> i64 {
    if !seconds.is_finite() {
        return MAX_ERROR_US;
    }
    #[allow(clippy::cast_possible_truncation)] // clamped to 0..=1.6e7 first
    let us = (seconds * 1e6).round().clamp(0.0, 16e6) as i64;
    us
}

/// The status word at take-over: the kernel's PLL and FLL off (the daemon
/// disciplines the clock), everything else kept.
#[must_use]
pub fn takeover_status(status: i32) -> i32 {
    status & !(libc::STA_PLL | libc::STA_FLL)
}

/// The status word on a clock update: synchronised (`STA_UNSYNC` clear).
#[must_use]
pub fn synced_status(status: i32) -> i32 {
    status & !libc::STA_UNSYNC
}

/// The status word a clean stop leaves: unsynchronised, no leap second
/// armed, the kernel's PLL and FLL still off.
#[must_use]
pub fn released_status(status: i32) -> i32 {
    (status | libc::STA_UNSYNC) & !(libc::STA_INS | libc::STA_DEL | libc::STA_PLL | libc::STA_FLL)
}

/// The host clock, steered through `adjtimex`. See the module doc.
#[derive(Debug)]
pub struct SystemClock {
    source: HostRealtime,
}

impl SystemClock {
    /// Opens the host clock. Only checks that `adjtimex` answers (a
    /// read-only query); changes nothing.
    pub fn new() -> Result<Self, ClockError> {
        kernel_state()?;
        Ok(Self {
            source: HostRealtime,
        })
    }

    /// The kernel clock state (read-only).
    pub fn kernel_state(&self) -> Result<KernelState, ClockError> {
        kernel_state()
    }

    /// Takes the kernel clock over: clears `STA_PLL`/`STA_FLL`, zeroes a
    /// pending `ADJ_OFFSET` slew, and returns the kernel's frequency (ppm),
    /// which is left as it is.
    pub fn take_over(&mut self) -> Result<f64, ClockError> {
        let current = kernel_state()?;
        // The kernel takes ADJ_OFFSET only while STA_PLL is set: zero the
        // pending slew with the PLL on, then switch it (and the FLL) off.
        let mut tx = zeroed_timex();
        tx.modes = libc::ADJ_STATUS | libc::ADJ_OFFSET;
        tx.status = (current.status | libc::STA_PLL) & !libc::STA_FLL;
        tx.offset = 0;
        adjtimex(&mut tx)?;
        let mut tx = zeroed_timex();
        tx.modes = libc::ADJ_STATUS;
        tx.status = takeover_status(current.status);
        adjtimex(&mut tx)?;
        // Zeroing the offset with the PLL on may touch the frequency: put
        // the kernel's back.
        self.set_frequency(current.frequency_ppm)?;
        Ok(current.frequency_ppm)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Result<NtpTimestamp, ClockError> {
        Ok(self.source.host_now())
    }

    fn step(&mut self, offset: f64) -> Result<(), ClockError> {
        let (secs, nanos) = offset_to_timespec(offset).ok_or(ClockError::OutOfRange {
            what: "step (s)",
            value: offset,
        })?;
        let mut tx = zeroed_timex();
        tx.modes = libc::ADJ_SETOFFSET | libc::ADJ_NANO;
        #[allow(clippy::cast_possible_truncation, clippy::useless_conversion)]
        // |secs| < 2^31 and nanos < 1e9 fit every time_t / suseconds_t
        {
            tx.time.tv_sec = secs as libc::time_t;
            tx.time.tv_usec = nanos as libc::suseconds_t;
        }
        adjtimex(&mut tx).map(|_| ())
    }

    fn set_frequency(&mut self, ppm: f64) -> Result<(), ClockError> {
        let freq = ppm_to_freq(ppm).ok_or(ClockError::OutOfRange {
            what: "frequency (ppm)",
            value: ppm,
        })?;
        let mut tx = zeroed_timex();
        tx.modes = libc::ADJ_FREQUENCY;
        #[allow(clippy::cast_possible_truncation, clippy::useless_conversion)]
        // |freq| <= 500 × 2^16 < 2^31 fits every c_long
        {
            tx.freq = freq as libc::c_long;
        }
        adjtimex(&mut tx).map(|_| ())
    }

    fn frequency(&self) -> Result<f64, ClockError> {
        Ok(kernel_state()?.frequency_ppm)
    }

    fn set_leap(&mut self, action: LeapAction) -> Result<(), ClockError> {
        let current = kernel_state()?.status;
        let mut tx = zeroed_timex();
        tx.modes = libc::ADJ_STATUS;
        tx.status = leap_status(current, action);
        adjtimex(&mut tx).map(|_| ())
    }

    fn from_host(&self, host: NtpTimestamp) -> NtpTimestamp {
        host
    }

    fn adjusts_host(&self) -> bool {
        true
    }

    fn set_sync_status(&mut self, sync: SyncStatus) -> Result<(), ClockError> {
        let current = kernel_state()?.status;
        let mut tx = zeroed_timex();
        tx.modes = libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR;
        tx.status = synced_status(current);
        #[allow(clippy::cast_possible_truncation, clippy::useless_conversion)]
        // at most 1.6e7, fits every c_long
        {
            tx.maxerror = error_to_us(sync.max_error) as libc::c_long;
            tx.esterror = error_to_us(sync.est_error) as libc::c_long;
        }
        adjtimex(&mut tx).map(|_| ())
    }

    fn release(&mut self, frequency_ppm: f64) -> Result<(), ClockError> {
        let freq = ppm_to_freq(frequency_ppm).ok_or(ClockError::OutOfRange {
            what: "frequency (ppm)",
            value: frequency_ppm,
        })?;
        let current = kernel_state()?.status;
        let mut tx = zeroed_timex();
        tx.modes = libc::ADJ_STATUS | libc::ADJ_FREQUENCY | libc::ADJ_MAXERROR;
        tx.status = released_status(current);
        #[allow(clippy::cast_possible_truncation, clippy::useless_conversion)]
        // |freq| <= 500 × 2^16 < 2^31 fits every c_long
        {
            tx.freq = freq as libc::c_long;
            tx.maxerror = MAX_ERROR_US as libc::c_long;
        }
        adjtimex(&mut tx).map(|_| ())
    }

    fn kernel_view(&self) -> Option<KernelView> {
        kernel_state().ok().map(|k| KernelView {
            frequency_ppm: k.frequency_ppm,
            status: k.status,
            state: k.state,
            max_error: k.max_error,
            est_error: k.est_error,
        })
    }
}

/// Notices the realtime clock being set (stepped) by anyone: a `timerfd` on
/// `CLOCK_REALTIME` armed far in the future with `TFD_TIMER_CANCEL_ON_SET`,
/// whose read fails with `ECANCELED` after every discontinuous change.
/// The daemon's own steps are noticed too: [`ClockChangeWatch::changed`]
/// right after a step consumes them.
#[derive(Debug)]
pub struct ClockChangeWatch {
    fd: std::os::fd::OwnedFd,
}

impl ClockChangeWatch {
    /// Creates and arms the watch (non-blocking descriptor).
    pub fn new() -> Result<Self, ClockError> {
        let fd = timerfd_create()?;
        let watch = Self { fd };
        watch.arm()?;
        Ok(watch)
    }

    fn arm(&self) -> Result<(), ClockError> {
        // Far in the future (year 2286): it never expires, only cancels.
        timerfd_arm_cancel_on_set(&self.fd, 10_000_000_000)
    }

    /// Whether the clock was set since the last call; re-arms the watch.
    /// Never blocks.
    pub fn changed(&self) -> Result<bool, ClockError> {
        let mut buf = [0u8; 8];
        match std::fs::File::from(self.fd.try_clone().map_err(|e| ClockError::Os {
            op: "dup timerfd",
            source: e,
        })?)
        .read(&mut buf)
        {
            Ok(_) => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {
                self.arm()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(ClockError::Os {
                op: "read timerfd",
                source: e,
            }),
        }
    }
}

impl std::os::fd::AsRawFd for ClockChangeWatch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::os::fd::AsFd for ClockChangeWatch {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC)`.
#[allow(unsafe_code)]
fn timerfd_create() -> Result<std::os::fd::OwnedFd, ClockError> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscall with constant arguments; it returns a new
    // descriptor or -1.
    let fd = unsafe {
        libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
    };
    if fd < 0 {
        return Err(ClockError::Os {
            op: "timerfd_create",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Arms `fd` to expire at the absolute realtime `secs`, cancelled on set.
#[allow(unsafe_code)]
fn timerfd_arm_cancel_on_set(fd: &std::os::fd::OwnedFd, secs: i64) -> Result<(), ClockError> {
    use std::os::fd::AsRawFd;
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: 0,
        },
    };
    // SAFETY: `fd` is an open timerfd; `spec` is a valid `itimerspec` that
    // outlives the call, and the old value pointer may be null.
    let rc = unsafe {
        libc::timerfd_settime(
            fd.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET,
            &spec,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(ClockError::Os {
            op: "timerfd_settime",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// `TFD_TIMER_CANCEL_ON_SET` (linux/timerfd.h: `1 << 1`).
const TFD_TIMER_CANCEL_ON_SET: libc::c_int = 1 << 1;

/// An all-zero `timex`: with `modes = 0` it is a read-only request.
#[allow(unsafe_code)]
fn zeroed_timex() -> libc::timex {
    // SAFETY: `timex` is a plain C struct of integers (and a `timeval` of
    // integers); the all-zero bit pattern is a valid value of it.
    unsafe { std::mem::zeroed() }
}

/// Calls `adjtimex(2)`; returns the clock state on success.
#[allow(unsafe_code)]
fn adjtimex(tx: &mut libc::timex) -> Result<i32, ClockError> {
    // SAFETY: `tx` is an exclusive reference to an initialised `timex` that
    // outlives the call; the kernel reads and writes only within it.
    let rc = unsafe { libc::adjtimex(tx) };
    if rc == -1 {
        Err(ClockError::Os {
            op: "adjtimex",
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(rc)
    }
}

// These tests never adjust the host clock: only read-only queries
// (`modes = 0`) and pure conversions.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_freq_conversions() {
        assert_eq!(ppm_to_freq(1.0), Some(65536));
        assert_eq!(ppm_to_freq(-50.0), Some(-50 * 65536));
        assert_eq!(ppm_to_freq(0.5), Some(32768));
        assert_eq!(ppm_to_freq(500.0), Some(500 * 65536));
        assert_eq!(ppm_to_freq(500.1), None);
        assert_eq!(ppm_to_freq(f64::NAN), None);
        assert_eq!(freq_to_ppm(-3 * 65536), -3.0);
        assert_eq!(freq_to_ppm(ppm_to_freq(12.25).unwrap()), 12.25);
    }

    #[test]
    fn offset_splits_into_seconds_and_nanos() {
        assert_eq!(offset_to_timespec(1.5), Some((1, 500_000_000)));
        assert_eq!(offset_to_timespec(-0.25), Some((-1, 750_000_000)));
        assert_eq!(offset_to_timespec(-2.0), Some((-2, 0)));
        assert_eq!(offset_to_timespec(0.0), Some((0, 0)));
        // Rounding up to a whole second carries.
        assert_eq!(offset_to_timespec(0.999_999_999_9), Some((1, 0)));
        assert_eq!(offset_to_timespec(f64::INFINITY), None);
        assert_eq!(offset_to_timespec(3e9), None);
    }

    #[test]
    fn leap_bits() {
        let base = libc::STA_PLL | libc::STA_UNSYNC;
        assert_eq!(leap_status(base, LeapAction::Insert), base | libc::STA_INS);
        assert_eq!(
            leap_status(base | libc::STA_INS, LeapAction::Delete),
            base | libc::STA_DEL
        );
        assert_eq!(leap_status(base | libc::STA_DEL, LeapAction::None), base);
    }

    #[test]
    fn reads_kernel_state_read_only() {
        let a = kernel_state().expect("read-only adjtimex");
        assert!(a.frequency_ppm.abs() <= 512.0);
        let b = SystemClock::new().unwrap().kernel_state().unwrap();
        assert_eq!(a.frequency_ppm, b.frequency_ppm);
        assert!(SystemClock::new().unwrap().adjusts_host());
    }

    #[test]
    fn kernel_status_words() {
        let base = libc::STA_PLL | libc::STA_FLL | libc::STA_UNSYNC | libc::STA_NANO;
        assert_eq!(takeover_status(base), libc::STA_UNSYNC | libc::STA_NANO);
        assert_eq!(synced_status(base), base & !libc::STA_UNSYNC);
        assert_eq!(
            released_status(libc::STA_INS | libc::STA_NANO),
            libc::STA_UNSYNC | libc::STA_NANO
        );
        assert_eq!(
            released_status(libc::STA_DEL | libc::STA_PLL),
            libc::STA_UNSYNC
        );
    }

    #[test]
    fn errors_to_microseconds() {
        assert_eq!(error_to_us(0.0015), 1500);
        assert_eq!(error_to_us(-1.0), 0);
        assert_eq!(error_to_us(100.0), MAX_ERROR_US);
        assert_eq!(error_to_us(f64::NAN), MAX_ERROR_US);
    }

    #[test]
    fn clock_change_watch_is_quiet_without_a_change() {
        // Reading never blocks and reports no change while nobody sets the
        // clock (the host clock is never set by this test).
        let watch = ClockChangeWatch::new().expect("timerfd");
        assert!(!watch.changed().unwrap());
        assert!(!watch.changed().unwrap());
    }

    #[test]
    fn host_realtime_reads_the_present() {
        let t = HostRealtime.host_now();
        let (secs, _) = t.to_unix_near(1_767_225_600); // 2026-01-01
        assert!(secs > 1_700_000_000, "{secs}");
        let later = HostRealtime.host_now();
        assert!((later - t).to_seconds() >= 0.0);
        let clock = SystemClock::new().unwrap();
        assert_eq!(clock.from_host(t), t);
    }
}
