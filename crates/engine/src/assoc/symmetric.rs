//! Symmetric associations (modes 1 and 2): the RFC 5905 peer variables,
//! the packets we send our peer and the checks of the packets it sends.

use rand_core::CryptoRngCore;
use strata_wire::{KissCode, Mode, NtpRepr, NtpTimestamp};

use super::{
    randomize_below_precision, Arrival, Association, AssociationState, Calibrate, Calibration,
    Outcome, Received, Role,
};
use crate::counters::DropReason;
use crate::server::ServerState;
use crate::SocketId;

/// Where a symmetric association's packets leave from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Via {
    /// The listening socket.
    pub(crate) socket: SocketId,
    /// The local address the peer sent to.
    pub(crate) src_ip: Option<core::net::IpAddr>,
    /// The receiving interface.
    pub(crate) ifindex: Option<u32>,
}

/// A symmetric association's own state.
pub(super) struct Symmetric {
    /// Configured (mode 1) rather than mobilised by the peer (mode 2).
    pub(super) active: bool,
    /// The peer's last transmit timestamp and when it arrived: echoed as
    /// our origin and receive timestamps. `None` before its first packet
    /// and after a clock step (we then send zeros, and the peer takes no
    /// sample from that packet).
    echo: Option<(NtpTimestamp, NtpTimestamp)>,
    /// Our last transmit timestamp (expected as the peer's origin).
    xmt: Option<NtpTimestamp>,
    /// Answer a peer's mode-1 packet in mode 2 at once.
    reply_now: bool,
    /// The client/server volley an active association starts with.
    pub(super) calibration: Option<Calibration>,
    /// Whether mode 1 waits for an answered volley.
    pub(super) calibrate: Calibrate,
    /// Volleys in a row that got no reply (the backoff of
    /// [`Calibrate::Required`]).
    pub(super) unanswered_volleys: u8,
    /// The listening socket, local address and interface the peer's
    /// packets last arrived on. Our packets leave the same way, so the
    /// peer sees them come from the address and port it sends to (port
    /// 123), which is how it matches them to its association.
    pub(super) via: Option<Via>,
}

impl Symmetric {
    pub(super) fn new(active: bool) -> Self {
        Symmetric {
            active,
            echo: None,
            xmt: None,
            reply_now: false,
            calibration: active.then_some(Calibration::START),
            calibrate: Calibrate::default(),
            unanswered_volleys: 0,
            via: None,
        }
    }

    /// Whether our next packet is symmetric (mode 1 or 2) rather than a
    /// calibration request.
    pub(super) fn sends_symmetric(&self) -> bool {
        !self.active || self.reply_now || self.calibration.is_none()
    }

    /// Our next symmetric packet, sent at `clock_now`.
    pub(super) fn packet(
        &mut self,
        clock_now: NtpTimestamp,
        poll: i8,
        sys: &ServerState,
        rng: &mut dyn CryptoRngCore,
    ) -> NtpRepr {
        let mode = if self.active && !self.reply_now {
            Mode::SymmetricActive
        } else {
            Mode::SymmetricPassive
        };
        self.reply_now = false;
        // The peer uses our transmit time: only the bits below the clock's
        // precision carry no information, so only they are random (as
        // chrony does).
        let xmt = randomize_below_precision(clock_now, sys.precision, rng);
        self.xmt = Some(xmt);
        let (org, rec) = self
            .echo
            .unwrap_or((NtpTimestamp::ZERO, NtpTimestamp::ZERO));
        sys.header(mode, 4, poll, org, rec, xmt)
    }

    pub(super) fn clear_after_step(&mut self) {
        self.echo = None;
        self.xmt = None;
    }
}

impl Association {
    /// A symmetric (mode 1 or 2) packet from our peer (RFC 5905 receive
    /// and packet processing).
    ///
    /// A packet whose origin does not match our last transmit is bogus and
    /// gives no sample, but it still updates the origin and receive
    /// timestamps we echo, as RFC 5905 does: when both peers send at once
    /// (crossing packets), each then echoes the other's latest packet and
    /// the exchange recovers at the next poll. (On a keyed association the
    /// node has checked the MAC first. Without a key a spoofer that knows
    /// both addresses can cost samples this way, which is why symmetric
    /// associations require authentication unless the access level
    /// `peer` opts out.)
    pub(super) fn receive_symmetric(&mut self, rx: Arrival) -> Outcome {
        let (now, rx_time, pkt) = (rx.now, rx.rx_time, rx.pkt);
        let before = self.state;
        let Role::Symmetric(s) = &mut self.role else {
            return Err(DropReason::UnexpectedMode);
        };
        let answers_ours = s.xmt == Some(pkt.origin_timestamp);
        if pkt.stratum == 0 && pkt.reference_id.kiss_code() == KissCode::Cryp {
            // A crypto-NAK (mode 2, from a server that could not
            // authenticate our mode 1): counted only when it answers our
            // last packet.
            return Err(if answers_ours {
                DropReason::CryptoNak
            } else {
                DropReason::SpoofedKod
            });
        }
        if pkt.transmit_timestamp.is_zero() {
            return Err(DropReason::ZeroTimestamp);
        }
        if s.echo.is_some_and(|(org, _)| org == pkt.transmit_timestamp) {
            return Err(DropReason::Duplicate);
        }
        // With `Calibrate::Required` our own volley decides; the peer's
        // mode 1 does not end it.
        let peer_is_active = pkt.mode == Mode::SymmetricActive
            && s.calibration.is_some()
            && s.calibrate == Calibrate::BestEffort;
        if peer_is_active {
            // The peer is active too: stop calibrating, answer at once.
            s.calibration = None;
            s.reply_now = true;
        }
        let first = pkt.origin_timestamp.is_zero();
        s.echo = Some((pkt.transmit_timestamp, rx_time));
        if peer_is_active {
            self.calibrations += 1;
            self.state = AssociationState::Reachable;
            self.pending_send = true;
        }
        if !first && !answers_ours {
            return Err(DropReason::Bogus);
        }
        self.note_valid(now, pkt);
        let changed = |a: &Self| (a.state != before).then_some(a.state);
        if first {
            return Ok((Received::Sample(None), changed(self)));
        }
        Self::check_header(pkt)?;
        if pkt.receive_timestamp.is_zero() {
            return Err(DropReason::ZeroTimestamp);
        }
        let out = self.add_sample(now, pkt.origin_timestamp, pkt, rx_time, rx.sys_precision);
        Ok((Received::Sample(out), changed(self)))
    }
}
