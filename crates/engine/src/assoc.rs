//! A client (mode 3/4) association: the poll process, the reach register
//! and the on-wire checks of RFC 5905 for one configured server.
//!
//! Requests follow data minimisation: every field but the mode, version,
//! poll and transmit timestamp is zero, and the transmit timestamp is a
//! random 64-bit cookie, not our clock. The real send time stays local
//! (`t1`) and a reply is accepted only when its origin timestamp echoes the
//! cookie, which off-path attackers cannot guess.

use core::net::SocketAddr;
use core::time::Duration;

use rand::RngCore;
use strata_clock::filter::{ClockFilter, FilterOutput, Sample};
use strata_wire::{
    offset_and_delay, KissCode, Leap, NtpDuration, NtpPacket, NtpRepr, NtpTimestamp, ReferenceId,
    HEADER_LEN,
};

use crate::counters::DropReason;
use crate::server::MAX_STRATUM;
use crate::time::{poll_interval, Instant};
use crate::InstanceId;

/// Frequency tolerance of a clock, s/s (RFC 5905 PHI).
pub(crate) const PHI: f64 = 15e-6;
/// Dispersion ceiling, seconds (RFC 5905 MAXDISP).
pub(crate) const MAXDISP: f64 = 16.0;
/// The burst spacing of `iburst` (RFC 5905 BTIME), shortened to the poll
/// interval when that is shorter.
const BURST_SPACING: Duration = Duration::from_secs(2);
/// Packets in an `iburst` volley.
const BURST_COUNT: u8 = 8;

/// Identifies an association within a [`crate::Node`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssociationId(pub u32);

/// Configuration of a client association with one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The VPN instance the server is reached through.
    pub instance: InstanceId,
    /// The server's address.
    pub address: SocketAddr,
    /// Minimum poll exponent (log2 s); -4..=17.
    pub minpoll: i8,
    /// Maximum poll exponent (log2 s); at least `minpoll`.
    pub maxpoll: i8,
    /// Send a burst of requests while the server is unreachable.
    pub iburst: bool,
}

/// The life-cycle state of an association.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssociationState {
    /// Configured, nothing received yet.
    Init,
    /// At least one of the last eight polls was answered.
    Reachable,
    /// None of the last eight polls was answered.
    Unreachable,
    /// The server told us to go away (KoD DENY or RSTR); no more requests.
    Denied,
}

impl AssociationState {
    /// A stable name for status output.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            AssociationState::Init => "init",
            AssociationState::Reachable => "reachable",
            AssociationState::Unreachable => "unreachable",
            AssociationState::Denied => "denied",
        }
    }
}

/// What the server last told us about itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PeerInfo {
    pub(crate) leap: Leap,
    pub(crate) stratum: u8,
    pub(crate) root_delay: f64,
    pub(crate) root_dispersion: f64,
    pub(crate) reference_id: ReferenceId,
}

/// What an accepted reply produced.
pub(crate) enum Received {
    /// A valid reply; `Some` when the clock filter selected a new sample.
    Sample(Option<FilterOutput>),
    /// A KoD RATE was obeyed.
    RateLimited,
    /// A KoD DENY or RSTR: the association stops.
    Denied,
}

pub(crate) struct Association {
    pub(crate) id: AssociationId,
    pub(crate) config: ClientConfig,
    pub(crate) poll: i8,
    /// Poll floor imposed by a RATE kiss.
    kod_floor: i8,
    pub(crate) reach: u8,
    pub(crate) state: AssociationState,
    pub(crate) next_poll: Instant,
    burst: u8,
    pub(crate) pending_send: bool,
    /// The cookie sent as our transmit timestamp; zero when no request is
    /// outstanding.
    cookie: NtpTimestamp,
    /// Our clock when the outstanding request left.
    t1: NtpTimestamp,
    /// Transmit timestamp of the last accepted reply (duplicate check).
    last_xmt: NtpTimestamp,
    pub(crate) filter: ClockFilter,
    pub(crate) peer: Option<PeerInfo>,
    pub(crate) last_rx: Option<Instant>,
}

impl Association {
    pub(crate) fn new(id: AssociationId, config: ClientConfig, now: Instant) -> Self {
        let poll = config.minpoll;
        Association {
            id,
            burst: 0,
            poll,
            kod_floor: i8::MIN,
            reach: 0,
            state: AssociationState::Init,
            next_poll: now,
            pending_send: false,
            cookie: NtpTimestamp::ZERO,
            t1: NtpTimestamp::ZERO,
            last_xmt: NtpTimestamp::ZERO,
            filter: ClockFilter::new(),
            peer: None,
            last_rx: None,
            config,
        }
    }

    /// Follows the system poll within this association's bounds.
    pub(crate) fn set_system_poll(&mut self, sys_poll: i8) {
        let p = sys_poll
            .clamp(self.config.minpoll, self.config.maxpoll)
            .max(self.kod_floor);
        if p < self.poll && self.burst == 0 {
            // Poll faster at once rather than waiting out a long interval.
            let shorter = self.next_poll.as_nanos().saturating_sub(
                u64::try_from((poll_interval(self.poll) - poll_interval(p)).as_nanos())
                    .unwrap_or(u64::MAX),
            );
            self.next_poll = Instant::from_nanos(shorter);
        }
        self.poll = p;
    }

    /// Runs the poll process when `now` reaches `next_poll`. Returns the
    /// new state when it changed.
    pub(crate) fn on_poll(&mut self, now: Instant) -> Option<AssociationState> {
        if self.state == AssociationState::Denied || now < self.next_poll {
            return None;
        }
        let mut changed = None;
        // A request still outstanding is a miss.
        self.reach <<= 1;
        if self.reach & 0x7 == 0 && self.filter.last().is_some() {
            self.filter.add_missing(now.as_secs_f64());
        }
        if self.reach == 0 && self.state == AssociationState::Reachable {
            self.state = AssociationState::Unreachable;
            changed = Some(self.state);
        }
        if self.burst > 0 {
            self.burst -= 1;
        } else if self.config.iburst && self.reach == 0 {
            self.burst = BURST_COUNT - 1;
        }
        self.pending_send = true;
        let interval = if self.burst > 0 {
            BURST_SPACING.min(poll_interval(self.poll))
        } else {
            poll_interval(self.poll)
        };
        self.next_poll = now + interval;
        changed
    }

    /// Writes the request into `buf` (at least [`HEADER_LEN`] bytes) with
    /// `clock_now` as our send time. Returns the length.
    pub(crate) fn build_request(
        &mut self,
        clock_now: NtpTimestamp,
        rng: &mut impl RngCore,
        buf: &mut [u8],
    ) -> Option<usize> {
        let out = buf.get_mut(..HEADER_LEN)?;
        self.pending_send = false;
        let mut cookie = NtpTimestamp::from_bits(rng.next_u64());
        if cookie.is_zero() {
            cookie = NtpTimestamp::from_bits(1);
        }
        self.cookie = cookie;
        self.t1 = clock_now;
        let repr = NtpRepr::client_request(self.poll, cookie);
        repr.emit(&mut NtpPacket::new_unchecked(&mut *out));
        Some(HEADER_LEN)
    }

    /// Forgets the outstanding request and the filter (after a clock step,
    /// timestamps taken before it are meaningless).
    pub(crate) fn clear_after_step(&mut self) {
        self.cookie = NtpTimestamp::ZERO;
        self.filter.reset();
    }

    /// The RFC 5905 packet checks and the sample computation for a server
    /// reply received at `rx_time` (our clock).
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        rx_time: NtpTimestamp,
        pkt: &NtpRepr,
        sys_precision: i8,
    ) -> Result<Received, DropReason> {
        if self.state == AssociationState::Denied {
            return Err(DropReason::NoAssociation);
        }
        if pkt.stratum == 0 {
            // Kiss-o'-death: obeyed only when it answers our own request.
            if self.cookie.is_zero() || pkt.origin_timestamp != self.cookie {
                return Err(DropReason::SpoofedKod);
            }
            self.cookie = NtpTimestamp::ZERO;
            return match pkt.reference_id.kiss_code() {
                KissCode::Rate => {
                    let raised = pkt.poll.max(self.poll.saturating_add(1));
                    self.kod_floor = raised.clamp(self.config.minpoll, self.config.maxpoll);
                    self.poll = self.poll.max(self.kod_floor);
                    self.burst = 0;
                    self.next_poll = now + poll_interval(self.poll);
                    Ok(Received::RateLimited)
                }
                KissCode::Deny | KissCode::Rstr => {
                    self.state = AssociationState::Denied;
                    self.pending_send = false;
                    Ok(Received::Denied)
                }
                _ => Err(DropReason::UnknownKod),
            };
        }
        if !pkt.transmit_timestamp.is_zero() && pkt.transmit_timestamp == self.last_xmt {
            return Err(DropReason::Duplicate);
        }
        if self.cookie.is_zero() || pkt.origin_timestamp != self.cookie {
            return Err(DropReason::Bogus);
        }
        if pkt.receive_timestamp.is_zero() || pkt.transmit_timestamp.is_zero() {
            return Err(DropReason::ZeroTimestamp);
        }
        // The exchange is complete: a second copy must not match again.
        self.cookie = NtpTimestamp::ZERO;
        self.last_xmt = pkt.transmit_timestamp;
        if pkt.leap == Leap::Unsynchronized || pkt.stratum >= MAX_STRATUM {
            return Err(DropReason::Unsynchronized);
        }
        let root_delay = pkt.root_delay.to_seconds();
        let root_dispersion = pkt.root_dispersion.to_seconds();
        if root_delay / 2.0 + root_dispersion >= MAXDISP
            || (pkt.transmit_timestamp - pkt.reference_timestamp) < NtpDuration::ZERO
        {
            return Err(DropReason::BadHeader);
        }

        self.reach |= 1;
        self.last_rx = Some(now);
        self.peer = Some(PeerInfo {
            leap: pkt.leap,
            stratum: pkt.stratum,
            root_delay,
            root_dispersion,
            reference_id: pkt.reference_id,
        });
        let (t1, t4) = (self.t1, rx_time);
        let (offset, delay) =
            offset_and_delay(t1, pkt.receive_timestamp, pkt.transmit_timestamp, t4);
        let precision = log2d(sys_precision);
        let delay = delay.max(precision);
        let dispersion = log2d(pkt.precision) + precision + PHI * (t4 - t1).to_seconds().abs();
        let sample = Sample {
            offset,
            delay,
            dispersion,
            time: now.as_secs_f64(),
        };
        if self.state != AssociationState::Reachable {
            self.state = AssociationState::Reachable;
        }
        Ok(Received::Sample(self.filter.add(sample, precision)))
    }
}

/// 2^`log2` seconds as f64.
pub(crate) fn log2d(log2: i8) -> f64 {
    2f64.powi(i32::from(log2))
}
