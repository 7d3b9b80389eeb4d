//! The kernel's side of `backend = "system"`: what the kernel is told about
//! the daemon's synchronisation, and clock changes made under the daemon.
//!
//! * At start the kernel's PLL/FLL are switched off and a pending
//!   `ADJ_OFFSET` slew is dropped; without a drift file the discipline
//!   starts from the kernel's current frequency (with a wide uncertainty),
//!   never from zero.
//! * On every clock update the kernel gets maxerror (the root distance) and
//!   esterror (the jitter) and `STA_UNSYNC` is cleared. Between updates the
//!   kernel grows maxerror itself (500 µs/s) and sets `STA_UNSYNC` at 16 s.
//! * The daemon's own root distance grows at 15 ppm (RFC 5905 PHI) from the
//!   last update; while it is past `[clock] max-distance` (grown, or
//!   already at an update while the filters fill after a start or step)
//!   the daemon reports itself unsynchronised, until an update within the
//!   limit. Each change is logged once.
//! * A clean stop leaves the drift estimate as the frequency, `STA_UNSYNC`
//!   set and the leap bits cleared (see `Clock::release`).
//! * A `timerfd` with `TFD_TIMER_CANCEL_ON_SET` notices the clock being set
//!   by someone else (`date -s`); it is logged once per change. The
//!   discipline then sees the new offset as a spike and steps once, after
//!   the stepout, like any other sustained offset.

use std::sync::Arc;

use strata_clock::backend::{ClockChangeWatch, SyncStatus};
use strata_engine::{Instant, SystemStatus};
use tokio::io::unix::AsyncFd;

/// RFC 5905 PHI: how fast the root dispersion grows without updates (s/s).
const PHI: f64 = 15e-6;

/// The kernel-facing state of a system clock.
#[derive(Default)]
pub(super) struct KernelSync {
    /// Whether the clock is the system clock.
    pub(super) enabled: bool,
    /// `[clock] max-distance`, s.
    pub(super) max_distance: f64,
    /// The last clock update seen.
    last_update: Option<Instant>,
    /// The root distance at that update, s.
    distance: f64,
    /// Whether the daemon reports itself unsynchronised because its root
    /// distance passed `max-distance`.
    pub(super) stale: bool,
    /// Clock changes by others noticed so far.
    pub(super) external_changes: u64,
    /// The clock-change watch.
    pub(super) watch: Option<Arc<AsyncFd<ClockChangeWatch>>>,
}

/// The root distance of a status: half the root delay plus the root
/// dispersion.
fn root_distance(s: &SystemStatus) -> f64 {
    s.server.root_delay.to_seconds() / 2.0 + s.server.root_dispersion.to_seconds()
}

impl KernelSync {
    /// A system clock's state, with its clock-change watch (`None` and a
    /// warning when the watch cannot be created).
    pub(super) fn system(max_distance: f64) -> Self {
        // `AsyncFd::new` is deprecated because a borrowed descriptor could be
        // closed while registered; the watch owns its descriptor for as long
        // as the `AsyncFd` holds it, so this use is sound.
        #[allow(deprecated)]
        let watch = match ClockChangeWatch::new().and_then(|w| {
            AsyncFd::new(w).map_err(|e| strata_clock::backend::ClockError::Os {
                op: "registering the timerfd",
                source: e,
            })
        }) {
            Ok(fd) => Some(Arc::new(fd)),
            Err(e) => {
                tracing::warn!("clock changes by other processes go unnoticed: {e}");
                None
            }
        };
        Self {
            enabled: true,
            max_distance,
            watch,
            ..Self::default()
        }
    }

    /// After the node's events were applied: on a new clock update, what
    /// the kernel is to be told.
    pub(super) fn on_status(&mut self, s: &SystemStatus) -> Option<SyncStatus> {
        if !self.enabled || s.last_update == self.last_update {
            return None;
        }
        self.last_update = s.last_update;
        if !s.synchronized {
            return None;
        }
        self.distance = root_distance(s);
        // Hysteresis: only an update within max-distance ends a stale
        // spell (right after a start or step the filters are still filling
        // and the distance is large); each change is logged once.
        if self.stale && self.distance <= self.max_distance {
            self.stale = false;
            tracing::info!(
                root_distance_s = self.distance,
                "root distance within max-distance again: synchronised"
            );
        } else if !self.stale && self.distance > self.max_distance {
            self.stale = true;
            tracing::warn!(
                root_distance_s = self.distance,
                max_distance_s = self.max_distance,
                "root distance exceeds max-distance: reporting unsynchronised"
            );
        }
        Some(SyncStatus {
            max_error: self.distance,
            est_error: s.jitter,
        })
    }

    /// The daemon's root distance at `now` (s): the distance at the last
    /// update grown at PHI since; `None` before any update.
    pub(super) fn distance_at(&self, now: Instant) -> Option<f64> {
        let last = self.last_update?;
        Some(self.distance + PHI * now.saturating_duration_since(last).as_secs_f64())
    }

    /// Once a second: whether the daemon has just become unsynchronised
    /// (root distance past `max-distance`); logs it once.
    pub(super) fn tick(&mut self, now: Instant, synchronized: bool) {
        if !self.enabled || self.stale || !synchronized {
            return;
        }
        if let Some(d) = self.distance_at(now) {
            if d > self.max_distance {
                self.stale = true;
                tracing::warn!(
                    root_distance_s = d,
                    max_distance_s = self.max_distance,
                    "root distance exceeds max-distance: reporting unsynchronised \
                     (no clock update; the kernel keeps the last frequency)"
                );
            }
        }
    }

    /// Consumes a change notice caused by the daemon's own step.
    pub(super) fn after_own_step(&self) {
        if let Some(w) = &self.watch {
            if let Err(e) = w.get_ref().changed() {
                tracing::debug!("clock-change watch: {e}");
            }
        }
    }

    /// Records a clock change by someone else (logged once per change).
    pub(super) fn external_change(&mut self) {
        self.external_changes += 1;
        tracing::warn!(
            changes = self.external_changes,
            "the system clock was set by another process; the next offsets \
             measure the change and the clock is stepped once after the stepout"
        );
    }
}

/// Resolves when the clock was set by someone else; never without a watch.
pub(super) async fn clock_set(watch: Option<Arc<AsyncFd<ClockChangeWatch>>>) {
    let Some(watch) = watch else {
        return std::future::pending().await;
    };
    loop {
        let Ok(mut guard) = watch.readable().await else {
            return std::future::pending().await;
        };
        guard.clear_ready();
        match watch.get_ref().changed() {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("clock-change watch failed: {e}");
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::{ServerState, SystemStatus};
    use strata_wire::NtpShort;

    fn status(synced: bool, at: Option<Instant>) -> SystemStatus {
        let mut server = ServerState::unsynchronized(-20);
        server.root_delay = NtpShort::from_seconds(0.002);
        server.root_dispersion = NtpShort::from_seconds(0.001);
        SystemStatus {
            synchronized: synced,
            server,
            system_peer: None,
            offset: 0.0,
            jitter: 0.0002,
            frequency_ppm: 0.0,
            poll: 0,
            last_update: at,
            clock_steps: 0,
            estimate: strata_clock::discipline::Estimate::default(),
        }
    }

    #[test]
    fn tells_the_kernel_on_each_update_only() {
        let mut k = KernelSync {
            enabled: true,
            max_distance: 0.005,
            ..KernelSync::default()
        };
        let t1 = Instant::from_nanos(1_000_000_000);
        let sync = k.on_status(&status(true, Some(t1))).unwrap();
        assert!((sync.max_error - 0.002).abs() < 1e-4, "{sync:?}");
        assert_eq!(sync.est_error, 0.0002);
        // The same update again: nothing.
        assert!(k.on_status(&status(true, Some(t1))).is_none());
        // An update while unsynchronised (a step): nothing for the kernel.
        let t2 = Instant::from_nanos(2_000_000_000);
        assert!(k.on_status(&status(false, Some(t2))).is_none());
        // A disabled (non-system) clock never tells the kernel.
        let mut off = KernelSync::default();
        assert!(off.on_status(&status(true, Some(t1))).is_none());
    }

    #[test]
    fn unsynchronised_once_distance_passes_the_limit() {
        let mut k = KernelSync {
            enabled: true,
            max_distance: 0.003,
            ..KernelSync::default()
        };
        let t0 = Instant::from_nanos(0);
        k.on_status(&status(true, Some(t0)));
        // 2 ms at the update; +15 µs/s: passes 3 ms after about 67 s.
        k.tick(Instant::from_nanos(60_000_000_000), true);
        assert!(!k.stale);
        k.tick(Instant::from_nanos(70_000_000_000), true);
        assert!(k.stale);
        // A new update within the limit clears it.
        k.on_status(&status(true, Some(Instant::from_nanos(71_000_000_000))));
        assert!(!k.stale);
        // One beyond it (filters still filling) starts a stale spell at
        // once, and only one within the limit ends it.
        let mut far = status(true, Some(Instant::from_nanos(72_000_000_000)));
        far.server.root_dispersion = NtpShort::from_seconds(0.5);
        assert!(k.on_status(&far).is_some(), "the kernel is still told");
        assert!(k.stale);
        far.last_update = Some(Instant::from_nanos(73_000_000_000));
        k.on_status(&far);
        assert!(k.stale);
        k.on_status(&status(true, Some(Instant::from_nanos(74_000_000_000))));
        assert!(!k.stale);
    }
}
