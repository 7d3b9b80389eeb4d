//! The client exchange (mode 3 → 4), which every association uses: a
//! client polls with it, symmetric active and broadcast/multicast clients
//! calibrate with it. Requests are data-minimised: the mode, version, poll
//! and a random 64-bit cookie as the transmit timestamp, our real send
//! time kept here; a reply counts only when its origin echoes the cookie.

use rand_core::CryptoRngCore;
use strata_wire::{KissCode, NtpRepr, NtpTimestamp};

use super::{Arrival, Association, AssociationState, Outcome, Received, CALIBRATION_REPLIES};
use crate::counters::DropReason;
use crate::time::poll_interval;

/// A client request (mode 3) waiting for its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Outstanding {
    /// The cookie sent as our transmit timestamp.
    cookie: NtpTimestamp,
    /// Our clock when the request left.
    t1: NtpTimestamp,
}

impl Association {
    /// A data-minimised request sent at `clock_now`, its cookie drawn
    /// from `rng`; it stays outstanding until answered.
    pub(super) fn client_request(
        &mut self,
        clock_now: NtpTimestamp,
        rng: &mut dyn CryptoRngCore,
    ) -> NtpRepr {
        let mut cookie = NtpTimestamp::from_bits(rng.next_u64());
        if cookie.is_zero() {
            // A zero origin means "none" to the server.
            cookie = NtpTimestamp::from_bits(1);
        }
        self.outstanding = Some(Outstanding {
            cookie,
            t1: clock_now,
        });
        NtpRepr::client_request(self.poll, cookie)
    }

    /// A server (mode 4) reply: the client checks of RFC 5905, with the
    /// cookie as the origin.
    pub(super) fn receive_reply(&mut self, rx: Arrival) -> Outcome {
        let (now, rx_time, pkt) = (rx.now, rx.rx_time, rx.pkt);
        if self.state == AssociationState::Denied {
            return Err(DropReason::NoAssociation);
        }
        let answers_ours = self
            .outstanding
            .is_some_and(|o| pkt.origin_timestamp == o.cookie);
        if pkt.stratum == 0 {
            // Kiss-o'-death (a crypto-NAK is one too): obeyed only when it
            // answers our own request.
            if !answers_ours {
                return Err(DropReason::SpoofedKod);
            }
            if pkt.reference_id.kiss_code() == KissCode::Cryp {
                // The server could not authenticate our request. Counted;
                // the request stays outstanding, so a forged copy cannot
                // suppress a genuine reply, and reach decays as for a loss.
                return Err(DropReason::CryptoNak);
            }
            self.outstanding = None;
            if let Some(Some(cal)) = self.calibration_slot() {
                // An unsynchronised server's stratum 0 answers the
                // calibration too: the peer talks mode 3/4.
                cal.answered = true;
            }
            return match pkt.reference_id.kiss_code() {
                KissCode::Rate => {
                    let raised = pkt.poll.max(self.poll.saturating_add(1));
                    let floor = raised.clamp(self.config.minpoll, self.config.maxpoll);
                    self.kod_floor = Some(floor);
                    self.poll = self.poll.max(floor);
                    self.burst = 0;
                    self.next_poll = now + poll_interval(self.poll);
                    Ok((Received::RateLimited, None))
                }
                KissCode::Deny | KissCode::Rstr => {
                    self.state = AssociationState::Denied;
                    self.pending_send = false;
                    Ok((Received::Denied, Some(AssociationState::Denied)))
                }
                _ => Err(DropReason::UnknownKod),
            };
        }
        if !pkt.transmit_timestamp.is_zero() && Some(pkt.transmit_timestamp) == self.last_reply_xmt
        {
            return Err(DropReason::Duplicate);
        }
        let Some(request) = self.outstanding.filter(|_| answers_ours) else {
            return Err(DropReason::Bogus);
        };
        if pkt.receive_timestamp.is_zero() || pkt.transmit_timestamp.is_zero() {
            return Err(DropReason::ZeroTimestamp);
        }
        // The exchange is complete: a second copy must not match again.
        self.outstanding = None;
        self.last_reply_xmt = Some(pkt.transmit_timestamp);
        let before = self.state;
        self.note_valid(now, pkt);
        if let Some(Some(cal)) = self.calibration_slot() {
            cal.answered = true;
        }
        Self::check_header(pkt)?;
        let out = self.add_sample(now, request.t1, pkt, rx_time, rx.sys_precision);
        if self
            .calibration()
            .is_some_and(|c| c.replies >= CALIBRATION_REPLIES)
        {
            self.finish_calibration(now);
        }
        let changed = (self.state != before).then_some(self.state);
        Ok((Received::Sample(out), changed))
    }
}
