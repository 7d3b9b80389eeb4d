//! The poll-interval policy: the system poll exponent follows the
//! regression window.

use super::Discipline;

impl Discipline {
    /// The system poll exponent the discipline asks for (log2 s), within
    /// `[min_poll, max_poll]`.
    #[must_use]
    pub fn poll_exponent(&self) -> i8 {
        self.poll
    }

    /// Poll adjustment from the regression window: while the runs test
    /// lets the fit average over at least `poll_up_window` samples, the
    /// clock is steady enough to poll less often (after `poll_limit`
    /// samples at a poll); when the runs test cuts the window to fewer
    /// than halfway between `poll_down_window` and `poll_up_window`, or it
    /// keeps fewer than `poll_down_window`, the clock wanders (or the path
    /// changed) faster than the samples come, so the poll comes down (the
    /// latter after `poll_limit / 4` samples).
    pub(super) fn adjust_poll(&mut self) {
        self.samples_at_poll = self.samples_at_poll.saturating_add(1);
        let settle = u32::try_from(self.config.poll_limit.max(1)).unwrap_or(1);
        if self.cut {
            // The clock bent away from the line: no rise for a while, and
            // a fall if too few samples are left to average.
            self.samples_at_poll = 0;
            if self.window < (self.config.poll_up_window + self.config.poll_down_window) / 2
                && self.poll > self.config.min_poll
            {
                self.poll -= 1;
            }
            return;
        }
        let wandering = self.window < self.config.poll_down_window || self.misfit > 2.0;
        if wandering
            && self.samples_at_poll >= (settle / 4).max(1)
            && self.poll > self.config.min_poll
        {
            self.poll -= 1;
            self.samples_at_poll = 0;
        } else if self.window >= self.config.poll_up_window
            && self.misfit < 1.5
            && self.samples_at_poll >= settle
            && self.poll < self.config.max_poll
        {
            self.poll += 1;
            self.samples_at_poll = 0;
        }
    }
}
