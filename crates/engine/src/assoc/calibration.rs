//! The calibration volley of symmetric active and broadcast/multicast
//! client associations: its progress, how it ends, and the retry policy
//! of [`Calibrate::Required`] peers (see the parent module's doc).

use core::time::Duration;

use super::{Association, AssociationState, Calibrate, Role};
use crate::time::{poll_interval, Instant};

/// A calibration volley in progress.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Calibration {
    pub(super) attempts: u8,
    pub(super) replies: u8,
    /// Whether any request got a valid reply, synchronised or not.
    pub(super) answered: bool,
    /// The least delay of the volley's replies so far.
    pub(super) best_delay: Option<f64>,
}

impl Calibration {
    pub(super) const START: Calibration = Calibration {
        attempts: 0,
        replies: 0,
        answered: false,
        best_delay: None,
    };
}

impl Association {
    /// For a symmetric active association whose volley got no reply and
    /// whose policy is [`Calibrate::Required`]: the wait before the next
    /// volley, `2^(poll + unanswered volleys)` s up to `2^maxpoll` s.
    /// `None` when the volley may end without a reply.
    pub(super) fn calibration_retry(&mut self) -> Option<Duration> {
        let (poll, maxpoll) = (self.poll, self.config.maxpoll);
        let Role::Symmetric(s) = &mut self.role else {
            return None;
        };
        let got_reply = s.calibration.is_some_and(|c| c.answered);
        if !s.active || s.calibrate != Calibrate::Required || got_reply {
            return None;
        }
        s.unanswered_volleys = s.unanswered_volleys.saturating_add(1);
        let exp = i16::from(poll) + i16::from(s.unanswered_volleys);
        let exp = i8::try_from(exp.min(i16::from(maxpoll.max(poll)))).unwrap_or(maxpoll);
        Some(poll_interval(exp))
    }

    /// Its calibration policy; `None` unless it is symmetric active.
    pub(crate) fn calibrate(&self) -> Option<Calibrate> {
        match &self.role {
            Role::Symmetric(s) if s.active => Some(s.calibrate),
            _ => None,
        }
    }

    /// Sets the calibration policy of a symmetric active association;
    /// `false` for any other.
    pub(crate) fn set_calibrate(&mut self, calibrate: Calibrate) -> bool {
        match &mut self.role {
            Role::Symmetric(s) if s.active => {
                s.calibrate = calibrate;
                true
            }
            _ => false,
        }
    }

    pub(super) fn restart_calibration(&mut self) {
        if let Some(slot) = self.calibration_slot() {
            *slot = Some(Calibration::START);
        }
        self.state = AssociationState::Calibrating;
        if let Role::Broadcast(b) = &mut self.role {
            b.restart_calibration();
        }
    }

    /// Ends a calibration volley; returns the new state.
    pub(super) fn finish_calibration(&mut self, now: Instant) -> Option<AssociationState> {
        let cal = self.calibration_slot()?.take()?;
        self.calibrations += 1;
        if let Role::Broadcast(b) = &mut self.role {
            if b.start_listening(now, cal.best_delay) {
                self.pending_send = false;
                self.state = AssociationState::Listening;
                self.next_poll = now + poll_interval(self.ppoll);
            }
        } else {
            if let Role::Symmetric(s) = &mut self.role {
                s.unanswered_volleys = 0;
            }
            self.state = if self.reach != 0 {
                AssociationState::Reachable
            } else {
                AssociationState::Unreachable
            };
            self.next_poll = now + poll_interval(self.poll);
        }
        Some(self.state)
    }
}
