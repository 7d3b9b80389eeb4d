//! Broadcast and multicast client associations (mode 5): calibrated
//! with a client/server volley, then listening, each mode-5 packet giving
//! `offset = T3 + delay/2 − T4`.

use core::time::Duration;

use strata_clock::filter::Sample;
use strata_clock::offset_filter::{Held, OffsetFilter};
use strata_wire::{NtpDuration, NtpTimestamp};

use super::{
    log2d, Arrival, Association, AssociationState, Calibration, ClientConfig, Outcome, Polled,
    Received, Role,
};
use crate::counters::DropReason;
use crate::time::{poll_interval, Instant};
use crate::AssociationId;

/// Consecutive mode-5 packets with a transmit timestamp going backwards
/// that mean "the server restarted" rather than "a replay".
const RESTART_BACKWARDS: u8 = 3;
/// Missed mode-5 intervals after which a listening client recalibrates.
const SILENCE_RECALIBRATE: f64 = 3.0;

/// Settings of an instance's broadcast/multicast client.
///
/// A server is followed only when its mode-5 packets are signed with a
/// trusted key ([`BroadcastClientConfig::key`] when set), unless
/// `allow_unauthenticated` is set. The association then signs its
/// calibration requests with that key and accepts only packets signed with
/// it; a packet whose transmit timestamp is not newer than the last
/// accepted one is a replay.
#[derive(Clone, Debug, PartialEq)]
pub struct BroadcastClientConfig {
    /// Accept servers without authentication (off by default, as in the
    /// reference ntpd: unauthenticated mode 5 is a known attack vector).
    pub allow_unauthenticated: bool,
    /// Accept only servers signing with this key (it must be trusted);
    /// `None` accepts any trusted key.
    pub key: Option<u32>,
    /// Re-run the calibration volley this long after the last one.
    pub recalibrate_after: Duration,
    /// Two consecutive packets whose offset differs from the last accepted
    /// one by more than this (s) trigger a recalibration.
    pub offset_jump: f64,
}

impl Default for BroadcastClientConfig {
    fn default() -> Self {
        BroadcastClientConfig {
            allow_unauthenticated: false,
            key: None,
            recalibrate_after: Duration::from_secs(3600),
            offset_jump: 0.05,
        }
    }
}

/// What a listening client keeps between mode-5 packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Listen {
    /// The calibrated delay, seconds.
    pub(super) delay: f64,
    /// When it was measured.
    pub(super) since: Instant,
    /// The newest accepted transmit timestamp (replay check).
    last_xmt: Option<NtpTimestamp>,
    /// Consecutive packets going backwards.
    backwards: u8,
    /// Consecutive offset jumps.
    jumps: u8,
    last_offset: Option<f64>,
}

/// A broadcast/multicast client association's own state.
pub(super) struct BroadcastClient {
    /// Mobilised by a packet to a multicast group.
    pub(super) multicast: bool,
    settings: BroadcastClientConfig,
    /// The calibration volley, while one runs.
    pub(super) calibration: Option<Calibration>,
    /// Set once a volley measured the delay.
    pub(super) listen: Option<Listen>,
    /// Newest mode-5 transmit timestamp seen before listening started.
    seen_xmt: Option<NtpTimestamp>,
    /// Filters the offsets of mode-5 packets while listening.
    pub(super) offsets: OffsetFilter,
}

impl BroadcastClient {
    /// A listening broadcast client counts as having enough samples for
    /// the startup quorum: its calibration volley filled the clock filter.
    pub(super) const STARTUP_SAMPLES_LISTENING: usize = usize::MAX;

    pub(super) fn new(multicast: bool, settings: BroadcastClientConfig) -> Self {
        BroadcastClient {
            multicast,
            settings,
            calibration: Some(Calibration::START),
            listen: None,
            seen_xmt: None,
            offsets: OffsetFilter::new(),
        }
    }

    pub(super) fn restart_calibration(&mut self) {
        if let Some(l) = &mut self.listen {
            l.jumps = 0;
            l.backwards = 0;
        }
    }

    /// Starts listening with the delay a volley measured; returns whether
    /// it measured one (no reply: nothing to listen with).
    pub(super) fn start_listening(&mut self, now: Instant, best_delay: Option<f64>) -> bool {
        let Some(best_delay) = best_delay else {
            self.listen = None;
            return false;
        };
        let last_xmt = self.listen.map_or(self.seen_xmt, |l| l.last_xmt);
        self.listen = Some(Listen {
            delay: best_delay,
            since: now,
            last_xmt,
            backwards: 0,
            jumps: 0,
            last_offset: None,
        });
        self.offsets.reset();
        true
    }

    pub(super) fn clear_after_step(&mut self) {
        self.offsets.reset();
        if let Some(l) = &mut self.listen {
            l.last_offset = None;
        }
    }

    /// Keeps the newest transmit timestamp seen while calibrating, so a
    /// replay of an older packet is caught once listening starts.
    fn listen_seed(&mut self, xmt: NtpTimestamp) {
        if self
            .seen_xmt
            .is_none_or(|seen| (xmt - seen) > NtpDuration::ZERO)
        {
            self.seen_xmt = Some(xmt);
        }
    }
}

impl Association {
    /// A broadcast/multicast client association for the server at
    /// `config.address`.
    pub(crate) fn new_broadcast(
        id: AssociationId,
        config: ClientConfig,
        multicast: bool,
        settings: BroadcastClientConfig,
        now: Instant,
    ) -> Self {
        let role = Role::Broadcast(Box::new(BroadcastClient::new(multicast, settings)));
        Self::with_role(id, config, role, now)
    }

    /// A listening broadcast client's timer: silence detection and the
    /// periodic recalibration.
    pub(super) fn on_listen_timer(&mut self, now: Instant) -> Polled {
        let Role::Broadcast(b) = &self.role else {
            return Polled::Nothing;
        };
        let Some(listen) = b.listen else {
            return Polled::Nothing;
        };
        let interval = poll_interval(self.ppoll);
        let silent = self
            .last_rx
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        if silent >= interval * 8 {
            return Polled::Demobilize;
        }
        if now.saturating_duration_since(listen.since) >= b.settings.recalibrate_after {
            self.restart_calibration();
            self.next_poll = now;
            return Polled::State(AssociationState::Calibrating);
        }
        self.next_poll = now + interval;
        Polled::Nothing
    }

    /// A broadcast (mode 5) packet from our server. `authenticated`: the
    /// association requires a MAC (already checked by the node), so a
    /// packet not newer than the last accepted one is always a replay; an
    /// unauthenticated association takes several in a row for a server
    /// restart (its clock stepped back).
    pub(super) fn receive_broadcast(&mut self, rx: Arrival, authenticated: bool) -> Outcome {
        let (now, rx_time, pkt) = (rx.now, rx.rx_time, rx.pkt);
        let before = self.state;
        let changed = |a: &Self| (a.state != before).then_some(a.state);
        Self::check_header(pkt)?;
        // Server restarts and identity changes call for a new calibration.
        let identity_changed = self
            .peer
            .is_some_and(|p| p.stratum != pkt.stratum || p.reference_id != pkt.reference_id);
        let Role::Broadcast(b) = &mut self.role else {
            return Err(DropReason::UnexpectedMode);
        };
        let jump_bound = b.settings.offset_jump;
        let Some(listen) = &mut b.listen else {
            if authenticated
                && b.seen_xmt
                    .is_some_and(|seen| (pkt.transmit_timestamp - seen) <= NtpDuration::ZERO)
            {
                return Err(DropReason::Replay);
            }
            // Calibrating: remember the server's clock for the replay check.
            b.listen_seed(pkt.transmit_timestamp);
            self.note_valid(now, pkt);
            return Ok((Received::Sample(None), changed(self)));
        };
        if listen
            .last_xmt
            .is_some_and(|last| (pkt.transmit_timestamp - last) <= NtpDuration::ZERO)
        {
            listen.backwards = listen.backwards.saturating_add(1);
            if authenticated || listen.backwards < RESTART_BACKWARDS {
                // An authenticated server whose clock really went back is
                // silent to us until the association is demobilised (eight
                // intervals) and mobilised afresh by its next packet.
                return Err(DropReason::Replay);
            }
            // Backwards several times running: the server restarted.
            listen.last_xmt = Some(pkt.transmit_timestamp);
            self.restart_calibration();
            self.next_poll = now;
            return Ok((Received::Sample(None), changed(self)));
        }
        listen.backwards = 0;
        listen.last_xmt = Some(pkt.transmit_timestamp);
        let offset = (pkt.transmit_timestamp - rx_time).to_seconds() + listen.delay / 2.0;
        let jumped = listen
            .last_offset
            .is_some_and(|last| (offset - last).abs() > jump_bound);
        if jumped {
            listen.jumps += 1;
        } else {
            listen.jumps = 0;
        }
        let (delay, jumps) = (listen.delay, listen.jumps);
        // Reach: one bit per advertised interval since the last packet.
        let missed = self.last_rx.map_or(0.0, |t| {
            let gap = now.saturating_duration_since(t).as_secs_f64();
            let interval = poll_interval(pkt.poll).as_secs_f64().max(1e-3);
            ((gap / interval).round() - 1.0).clamp(0.0, 8.0)
        });
        // A silence of several intervals (a server restart, a route
        // change) or a lasting jump calls for a new calibration too.
        let recalibrate = identity_changed || jumps >= 2 || missed >= SILENCE_RECALIBRATE;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped to 0..=8
        let missed = missed as u32;
        self.reach = self.reach.checked_shl(missed).unwrap_or(0);
        self.reach <<= 1;
        self.note_valid(now, pkt);
        if recalibrate {
            self.restart_calibration();
            self.next_poll = now;
            return Ok((Received::Sample(None), changed(self)));
        }
        if jumped {
            return Err(DropReason::Spike);
        }
        let precision = log2d(rx.sys_precision);
        let sample = Sample {
            offset,
            delay,
            dispersion: log2d(pkt.precision) + precision,
            time: now.as_secs_f64(),
        };
        let Role::Broadcast(b) = &mut self.role else {
            return Err(DropReason::UnexpectedMode);
        };
        match b.offsets.add(sample, precision) {
            Ok(out) => {
                if let Some(l) = &mut b.listen {
                    l.last_offset = Some(offset);
                }
                Ok((Received::Sample(Some(out)), changed(self)))
            }
            Err(Held::Spike { .. } | Held::Invalid) => Err(DropReason::Spike),
        }
    }
}
