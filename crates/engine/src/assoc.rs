//! Associations: the poll process, the reach register and the RFC 5905
//! on-wire protocol for one remote, in every mode that keeps state —
//! client (3/4), symmetric active and passive (1/2), and broadcast or
//! multicast client (5, calibrated with 3/4).
//!
//! **Client exchanges follow data minimisation.** A mode-3 request carries
//! only the mode, version, poll and a random 64-bit cookie as its transmit
//! timestamp; our real send time stays local (`t1`). A reply is accepted
//! only when its origin timestamp echoes the cookie, which an off-path
//! attacker cannot guess. Symmetric packets must carry real timestamps
//! (the peer uses them), so they follow RFC 5905 as written.
//!
//! **Calibration.** Symmetric active and broadcast/multicast client
//! associations begin with a client/server volley ([`CALIBRATION_REPLIES`]
//! good replies, at most [`CALIBRATION_ATTEMPTS`] requests, spaced
//! `min(2 s, poll)`); its samples may already set the clock. A symmetric
//! active association then switches to mode 1 (at once if the peer's own
//! mode-1 packet arrives first). A broadcast client keeps the least delay
//! seen and goes back to listening: each mode-5 packet gives
//! `offset = T3 + delay/2 − T4`.

use core::net::SocketAddr;
use core::time::Duration;

use rand_core::CryptoRngCore;
use strata_clock::filter::{ClockFilter, FilterOutput, Sample};
use strata_clock::offset_filter::{Held, OffsetFilter};
use strata_wire::{
    offset_and_delay, KissCode, Leap, Mode, NtpDuration, NtpPacket, NtpRepr, NtpTimestamp,
    ReferenceId, HEADER_LEN,
};

use crate::counters::DropReason;
use crate::server::{ServerState, MAX_STRATUM};
use crate::time::{poll_interval, Instant};
use crate::InstanceId;

/// Frequency tolerance of a clock, s/s (RFC 5905 PHI).
pub(crate) const PHI: f64 = 15e-6;
/// Dispersion ceiling, seconds (RFC 5905 MAXDISP).
pub(crate) const MAXDISP: f64 = 16.0;
/// The burst spacing of `iburst` and calibration (RFC 5905 BTIME),
/// shortened to the poll interval when that is shorter.
const BURST_SPACING: Duration = Duration::from_secs(2);
/// Packets in an `iburst` volley.
const BURST_COUNT: u8 = 8;
/// Good replies that end a calibration volley.
pub const CALIBRATION_REPLIES: u8 = 4;
/// Requests after which a calibration volley ends anyway.
pub const CALIBRATION_ATTEMPTS: u8 = 8;
/// Consecutive mode-5 packets with a transmit timestamp going backwards
/// that mean "the server restarted" rather than "a replay".
const RESTART_BACKWARDS: u8 = 3;
/// A listening broadcast client counts as having enough samples: its
/// calibration volley filled the clock filter.
const STARTUP_SAMPLES_LISTENING: usize = usize::MAX;
/// Missed mode-5 intervals after which a listening client recalibrates.
const SILENCE_RECALIBRATE: f64 = 3.0;

/// Identifies an association within a [`crate::Node`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssociationId(pub u32);

/// Configuration of a client (or symmetric active) association.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The VPN instance the remote is reached through.
    pub instance: InstanceId,
    /// The remote's address.
    pub address: SocketAddr,
    /// Minimum poll exponent (log2 s); -4..=17.
    pub minpoll: i8,
    /// Maximum poll exponent (log2 s); at least `minpoll`.
    pub maxpoll: i8,
    /// Send a burst of requests while the remote is unreachable.
    pub iburst: bool,
}

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

/// The mode of an association.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssociationMode {
    /// A configured server (mode 3 → 4).
    Client,
    /// A configured symmetric peer (mode 1).
    SymmetricActive,
    /// Mobilised by a peer's mode-1 packet (mode 2).
    SymmetricPassive,
    /// Mobilised by a broadcast server's mode-5 packet.
    BroadcastClient,
    /// Mobilised by a multicast server's mode-5 packet.
    MulticastClient,
}

impl AssociationMode {
    /// A stable name for status output.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            AssociationMode::Client => "client",
            AssociationMode::SymmetricActive => "symmetric-active",
            AssociationMode::SymmetricPassive => "symmetric-passive",
            AssociationMode::BroadcastClient => "broadcast-client",
            AssociationMode::MulticastClient => "multicast-client",
        }
    }

    fn is_broadcast(self) -> bool {
        matches!(
            self,
            AssociationMode::BroadcastClient | AssociationMode::MulticastClient
        )
    }

    /// Mobilised by the remote rather than configured.
    pub(crate) fn is_dynamic(self) -> bool {
        self.is_broadcast() || self == AssociationMode::SymmetricPassive
    }
}

/// The life-cycle state of an association.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssociationState {
    /// Configured, nothing received yet.
    Init,
    /// Running the client/server volley that measures the delay.
    Calibrating,
    /// A broadcast/multicast client taking time from mode-5 packets.
    Listening,
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
            AssociationState::Calibrating => "calibrating",
            AssociationState::Listening => "listening",
            AssociationState::Reachable => "reachable",
            AssociationState::Unreachable => "unreachable",
            AssociationState::Denied => "denied",
        }
    }
}

/// What the remote last told us about itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PeerInfo {
    pub(crate) leap: Leap,
    pub(crate) stratum: u8,
    pub(crate) root_delay: f64,
    pub(crate) root_dispersion: f64,
    pub(crate) reference_id: ReferenceId,
}

/// What an accepted packet produced.
pub(crate) enum Received {
    /// A valid packet; `Some` when a new sample was handed on.
    Sample(Option<FilterOutput>),
    /// A KoD RATE was obeyed.
    RateLimited,
    /// A KoD DENY or RSTR: the association stops.
    Denied,
}

/// What the poll process decided.
pub(crate) enum Polled {
    /// Nothing to report.
    Nothing,
    /// The state changed.
    State(AssociationState),
    /// A dynamic association lost its remote: remove it.
    Demobilize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Calibration {
    attempts: u8,
    replies: u8,
    best_delay: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Listen {
    delay: f64,
    since: Instant,
    last_xmt: NtpTimestamp,
    backwards: u8,
    jumps: u8,
    last_offset: Option<f64>,
}

pub(crate) struct Association {
    pub(crate) id: AssociationId,
    pub(crate) config: ClientConfig,
    pub(crate) mode: AssociationMode,
    pub(crate) poll: i8,
    /// Poll floor imposed by a RATE kiss.
    kod_floor: i8,
    pub(crate) reach: u8,
    pub(crate) state: AssociationState,
    pub(crate) next_poll: Instant,
    burst: u8,
    pub(crate) pending_send: bool,
    // Client exchange (mode 3 → 4).
    /// The cookie sent as our transmit timestamp; zero when no request is
    /// outstanding.
    cookie: NtpTimestamp,
    /// Our clock when the outstanding request left.
    t1: NtpTimestamp,
    /// Transmit timestamp of the last accepted reply (duplicate check).
    last_xmt: NtpTimestamp,
    // Symmetric exchange (RFC 5905 peer variables).
    /// The peer's last transmit timestamp (echoed as our origin).
    org: NtpTimestamp,
    /// When it arrived (echoed as our receive timestamp).
    rec: NtpTimestamp,
    /// Our last transmit timestamp (expected as the peer's origin).
    xmt: NtpTimestamp,
    /// Answer a peer's mode-1 packet in mode 2 at once.
    reply_now: bool,
    calibration: Option<Calibration>,
    listen: Option<Listen>,
    /// Completed calibration volleys.
    pub(crate) calibrations: u32,
    /// Newest mode-5 transmit timestamp seen before listening started.
    seen_xmt: NtpTimestamp,
    broadcast: Option<BroadcastClientConfig>,
    pub(crate) filter: ClockFilter,
    offsets: OffsetFilter,
    pub(crate) peer: Option<PeerInfo>,
    pub(crate) last_rx: Option<Instant>,
    /// The remote's advertised poll exponent.
    ppoll: i8,
    /// The system poll exponent last applied.
    sys_poll: i8,
    /// Symmetric associations: the listening socket, local address and
    /// interface the peer's packets last arrived on. Our packets leave the
    /// same way, so the peer sees them come from the address and port it
    /// sends to (port 123), which is how it matches them to its association.
    pub(crate) via: Option<Via>,
}

/// Where a symmetric association's packets leave from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Via {
    /// The listening socket.
    pub(crate) socket: crate::SocketId,
    /// The local address the peer sent to.
    pub(crate) src_ip: Option<core::net::IpAddr>,
    /// The receiving interface.
    pub(crate) ifindex: Option<u32>,
}

impl Association {
    pub(crate) fn new(
        id: AssociationId,
        config: ClientConfig,
        mode: AssociationMode,
        now: Instant,
    ) -> Self {
        let calibrating = matches!(mode, AssociationMode::SymmetricActive) || mode.is_broadcast();
        Association {
            id,
            mode,
            burst: 0,
            poll: config.minpoll,
            kod_floor: i8::MIN,
            reach: 0,
            state: if calibrating {
                AssociationState::Calibrating
            } else {
                AssociationState::Init
            },
            next_poll: now,
            pending_send: false,
            cookie: NtpTimestamp::ZERO,
            t1: NtpTimestamp::ZERO,
            last_xmt: NtpTimestamp::ZERO,
            org: NtpTimestamp::ZERO,
            rec: NtpTimestamp::ZERO,
            xmt: NtpTimestamp::ZERO,
            reply_now: false,
            calibration: calibrating.then_some(Calibration {
                attempts: 0,
                replies: 0,
                best_delay: f64::INFINITY,
            }),
            listen: None,
            calibrations: 0,
            seen_xmt: NtpTimestamp::ZERO,
            broadcast: None,
            filter: ClockFilter::new(),
            offsets: OffsetFilter::new(),
            peer: None,
            last_rx: None,
            ppoll: config.minpoll,
            sys_poll: config.minpoll,
            via: None,
            config,
        }
    }

    /// A broadcast/multicast client association for the server at
    /// `config.address`.
    pub(crate) fn new_broadcast(
        id: AssociationId,
        config: ClientConfig,
        multicast: bool,
        settings: BroadcastClientConfig,
        now: Instant,
    ) -> Self {
        let mode = if multicast {
            AssociationMode::MulticastClient
        } else {
            AssociationMode::BroadcastClient
        };
        let mut a = Association::new(id, config, mode, now);
        a.broadcast = Some(settings);
        a
    }

    /// The output the system process uses: the offset filter's while
    /// listening, the clock filter's otherwise.
    pub(crate) fn output(&self) -> Option<FilterOutput> {
        match (
            self.listen.is_some(),
            self.offsets.last(),
            self.filter.last(),
        ) {
            (true, Some(o), _) => Some(o),
            (_, _, f) => f,
        }
    }

    /// Usable samples behind the current output.
    pub(crate) fn samples(&self, now: f64) -> usize {
        if self.listen.is_some() && self.offsets.last().is_some() {
            STARTUP_SAMPLES_LISTENING
        } else {
            self.filter.usable(now)
        }
    }

    /// Dispersion of the current output aged to `now`.
    pub(crate) fn dispersion_at(&self, now: f64) -> f64 {
        if self.listen.is_some() && self.offsets.last().is_some() {
            self.offsets.dispersion_at(now)
        } else {
            self.filter.dispersion_at(now)
        }
    }

    /// The calibrated delay and when it was measured, for broadcast clients
    /// past their first volley.
    pub(crate) fn calibrated(&self) -> Option<(f64, Instant)> {
        self.listen.map(|l| (l.delay, l.since))
    }

    /// The poll floor a RATE kiss imposed, if one did.
    pub(crate) fn kod_poll_floor(&self) -> Option<i8> {
        (self.kod_floor != i8::MIN).then_some(self.kod_floor)
    }

    /// The remote's advertised poll exponent, once it has been heard.
    pub(crate) fn remote_poll(&self) -> Option<i8> {
        self.peer.map(|_| self.ppoll)
    }

    /// During a calibration volley: requests sent and good replies so far.
    pub(crate) fn calibration_progress(&self) -> Option<(u8, u8)> {
        self.calibration.map(|c| (c.attempts, c.replies))
    }

    /// When the association sends next; `None` when it sends nothing of
    /// its own (denied, or a broadcast client listening).
    pub(crate) fn next_send(&self) -> Option<Instant> {
        let listening = self.listen.is_some() && self.calibration.is_none();
        (self.state != AssociationState::Denied && !listening).then_some(self.next_poll)
    }

    /// Follows the system poll within this association's bounds.
    pub(crate) fn set_system_poll(&mut self, sys_poll: i8) {
        self.sys_poll = sys_poll;
        self.apply_poll();
    }

    /// The poll exponent: the system poll within this association's
    /// bounds (and above a RATE kiss's floor); a symmetric association
    /// follows its peer's poll when that is faster (RFC 5905 poll_update:
    /// `max(min(ppoll, hpoll), minpoll)`), so both sides exchange at the
    /// pace of the faster one.
    fn apply_poll(&mut self) {
        let host = self
            .sys_poll
            .clamp(self.config.minpoll, self.config.maxpoll)
            .max(self.kod_floor);
        let symmetric = matches!(
            self.mode,
            AssociationMode::SymmetricActive | AssociationMode::SymmetricPassive
        );
        let p = if symmetric && self.peer.is_some() {
            self.ppoll.min(host).max(self.config.minpoll)
        } else {
            host
        };
        if p < self.poll && self.burst == 0 && self.calibration.is_none() {
            // Poll faster at once rather than waiting out a long interval.
            let shorter = self.next_poll.as_nanos().saturating_sub(
                u64::try_from((poll_interval(self.poll) - poll_interval(p)).as_nanos())
                    .unwrap_or(u64::MAX),
            );
            self.next_poll = Instant::from_nanos(shorter);
        }
        self.poll = p;
    }

    /// Whether a symmetric peer was heard within three of its own or our
    /// intervals, whichever is longer. A peer that sends more slowly than we
    /// poll (chronyd backs off toward an unsynchronised peer) leaves gaps in
    /// our reach register that are not losses; only a real silence counts
    /// as a missed sample.
    fn heard_lately(&self, now: Instant) -> bool {
        let symmetric = matches!(
            self.mode,
            AssociationMode::SymmetricActive | AssociationMode::SymmetricPassive
        );
        let interval = poll_interval(self.poll.max(self.ppoll));
        symmetric
            && self
                .last_rx
                .is_some_and(|t| now.saturating_duration_since(t) < interval * 3)
    }

    fn spacing(&self) -> Duration {
        BURST_SPACING.min(poll_interval(self.poll))
    }

    /// Whether the association is due to run its poll process at `now`
    /// and exchanges symmetric packets (its next interval takes jitter).
    pub(crate) fn symmetric_poll_due(&self, now: Instant) -> bool {
        now >= self.next_poll
            && self.state != AssociationState::Denied
            && matches!(
                self.mode,
                AssociationMode::SymmetricActive | AssociationMode::SymmetricPassive
            )
    }

    /// Runs the poll process when `now` reaches `next_poll`. `jitter`
    /// lengthens a symmetric association's next interval by `jitter`/4096
    /// of it (up to 6 %, as the reference ntpd does), so two peers polling
    /// at the same rate drift apart instead of sending at the same moment
    /// poll after poll (crossing packets, each bogus on arrival). The node
    /// passes 0 for other associations.
    pub(crate) fn on_poll(&mut self, now: Instant, jitter: u8) -> Polled {
        if self.state == AssociationState::Denied || now < self.next_poll {
            return Polled::Nothing;
        }
        if self.listen.is_some() && self.calibration.is_none() {
            return self.on_listen_timer(now);
        }
        let mut changed = Polled::Nothing;
        // A request still outstanding is a miss.
        self.reach <<= 1;
        if self.reach & 0x7 == 0 && self.filter.last().is_some() && !self.heard_lately(now) {
            self.filter.add_missing(now.as_secs_f64());
        }
        if self.reach == 0 && self.state == AssociationState::Reachable {
            if self.mode.is_dynamic() {
                return Polled::Demobilize;
            }
            self.state = AssociationState::Unreachable;
            changed = Polled::State(self.state);
        }
        self.pending_send = true;
        if let Some(cal) = &mut self.calibration {
            cal.attempts += 1;
            self.next_poll = now + BURST_SPACING.min(poll_interval(self.poll));
            if cal.attempts > CALIBRATION_ATTEMPTS {
                // The volley went unanswered: end it, keep polling.
                if let Some(c) = self.finish_calibration(now) {
                    changed = Polled::State(c);
                }
                if self.mode.is_broadcast() && self.listen.is_none() {
                    // Nothing measured: try again after a poll interval.
                    self.restart_calibration();
                    self.next_poll = now + poll_interval(self.poll);
                    if self.reach == 0 {
                        return Polled::Demobilize;
                    }
                }
            }
            return changed;
        }
        if self.burst > 0 {
            self.burst -= 1;
        } else if self.config.iburst && self.reach == 0 {
            self.burst = BURST_COUNT - 1;
        }
        let mut interval = if self.burst > 0 {
            self.spacing()
        } else {
            poll_interval(self.poll)
        };
        if matches!(
            self.mode,
            AssociationMode::SymmetricActive | AssociationMode::SymmetricPassive
        ) {
            interval += interval * u32::from(jitter) / 4096;
        }
        self.next_poll = now + interval;
        changed
    }

    /// A listening broadcast client's timer: silence detection and the
    /// periodic recalibration.
    fn on_listen_timer(&mut self, now: Instant) -> Polled {
        let Some(listen) = self.listen else {
            return Polled::Nothing;
        };
        let interval = poll_interval(self.ppoll);
        let silent = self
            .last_rx
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        if silent >= interval * 8 {
            return Polled::Demobilize;
        }
        let recal = self
            .broadcast
            .as_ref()
            .map_or(Duration::MAX, |b| b.recalibrate_after);
        if now.saturating_duration_since(listen.since) >= recal {
            self.restart_calibration();
            self.next_poll = now;
            return Polled::State(AssociationState::Calibrating);
        }
        self.next_poll = now + interval;
        Polled::Nothing
    }

    fn restart_calibration(&mut self) {
        self.calibration = Some(Calibration {
            attempts: 0,
            replies: 0,
            best_delay: f64::INFINITY,
        });
        self.state = AssociationState::Calibrating;
        if let Some(l) = &mut self.listen {
            l.jumps = 0;
            l.backwards = 0;
        }
    }

    /// Ends a calibration volley; returns the new state.
    fn finish_calibration(&mut self, now: Instant) -> Option<AssociationState> {
        let cal = self.calibration.take()?;
        self.calibrations += 1;
        if self.mode.is_broadcast() {
            if cal.best_delay.is_finite() {
                let last_xmt = self.listen.map_or(self.seen_xmt, |l| l.last_xmt);
                self.listen = Some(Listen {
                    delay: cal.best_delay,
                    since: now,
                    last_xmt,
                    backwards: 0,
                    jumps: 0,
                    last_offset: None,
                });
                self.offsets.reset();
                self.pending_send = false;
                self.state = AssociationState::Listening;
                self.next_poll = now + poll_interval(self.ppoll);
            } else {
                self.listen = None;
            }
        } else {
            self.state = if self.reach != 0 {
                AssociationState::Reachable
            } else {
                AssociationState::Unreachable
            };
            self.next_poll = now + poll_interval(self.poll);
        }
        Some(self.state)
    }

    /// Writes the next packet into `buf` (at least [`HEADER_LEN`] bytes)
    /// with `clock_now` as our send time. Returns the length.
    pub(crate) fn build_packet(
        &mut self,
        clock_now: NtpTimestamp,
        sys: &ServerState,
        rng: &mut dyn CryptoRngCore,
        buf: &mut [u8],
    ) -> Option<usize> {
        let out = buf.get_mut(..HEADER_LEN)?;
        self.pending_send = false;
        let symmetric = match self.mode {
            AssociationMode::SymmetricActive if self.reply_now => Some(Mode::SymmetricPassive),
            AssociationMode::SymmetricActive if self.calibration.is_none() => {
                Some(Mode::SymmetricActive)
            }
            AssociationMode::SymmetricPassive => Some(Mode::SymmetricPassive),
            _ => None,
        };
        self.reply_now = false;
        let repr = match symmetric {
            Some(mode) => {
                // The peer uses our transmit time: only the bits below the
                // clock's precision carry no information, so only they
                // are random (as chrony does).
                self.xmt = randomize_below_precision(clock_now, sys.precision, rng);
                let synced = sys.is_synchronized();
                NtpRepr {
                    leap: if synced {
                        sys.leap
                    } else {
                        Leap::Unsynchronized
                    },
                    version: 4,
                    mode,
                    stratum: if synced { sys.stratum } else { 0 },
                    poll: self.poll,
                    precision: sys.precision,
                    root_delay: sys.root_delay,
                    root_dispersion: sys.root_dispersion,
                    reference_id: sys.reference_id,
                    reference_timestamp: sys.reference_time,
                    origin_timestamp: self.org,
                    receive_timestamp: self.rec,
                    transmit_timestamp: self.xmt,
                }
            }
            None => {
                let mut cookie = NtpTimestamp::from_bits(rng.next_u64());
                if cookie.is_zero() {
                    cookie = NtpTimestamp::from_bits(1);
                }
                self.cookie = cookie;
                self.t1 = clock_now;
                NtpRepr::client_request(self.poll, cookie)
            }
        };
        repr.emit(&mut NtpPacket::new_unchecked(&mut *out));
        Some(HEADER_LEN)
    }

    /// Forgets outstanding exchanges and filters (after a clock step,
    /// timestamps taken before it are meaningless). The next symmetric
    /// packet carries a zero origin, so the peer takes no sample from it.
    pub(crate) fn clear_after_step(&mut self) {
        self.cookie = NtpTimestamp::ZERO;
        self.xmt = NtpTimestamp::ZERO;
        self.org = NtpTimestamp::ZERO;
        self.rec = NtpTimestamp::ZERO;
        self.filter.reset();
        self.offsets.reset();
        if let Some(l) = &mut self.listen {
            l.last_offset = None;
        }
    }

    fn note_valid(&mut self, now: Instant, pkt: &NtpRepr) {
        self.reach |= 1;
        self.last_rx = Some(now);
        self.ppoll = pkt.poll;
        self.peer = Some(PeerInfo {
            leap: pkt.leap,
            stratum: pkt.stratum,
            root_delay: pkt.root_delay.to_seconds(),
            root_dispersion: pkt.root_dispersion.to_seconds(),
            reference_id: pkt.reference_id,
        });
        if matches!(
            self.state,
            AssociationState::Init | AssociationState::Unreachable
        ) {
            self.state = AssociationState::Reachable;
        }
        if pkt.poll != self.poll {
            self.apply_poll();
        }
    }

    /// Header checks shared by every mode: unsynchronised senders and
    /// absurd header values give no sample.
    fn check_header(pkt: &NtpRepr) -> Result<(), DropReason> {
        if pkt.leap == Leap::Unsynchronized || pkt.stratum >= MAX_STRATUM || pkt.stratum == 0 {
            return Err(DropReason::Unsynchronized);
        }
        if pkt.root_delay.to_seconds() / 2.0 + pkt.root_dispersion.to_seconds() >= MAXDISP
            // A zero reference time means "never set" (ntpsec in orphan
            // mode sends it), not a time after the transmit time.
            || (!pkt.reference_timestamp.is_zero()
                && (pkt.transmit_timestamp - pkt.reference_timestamp) < NtpDuration::ZERO)
        {
            return Err(DropReason::BadHeader);
        }
        Ok(())
    }

    fn add_sample(
        &mut self,
        now: Instant,
        t: [NtpTimestamp; 4],
        pkt: &NtpRepr,
        sys_precision: i8,
    ) -> Option<FilterOutput> {
        let [t1, t2, t3, t4] = t;
        let (offset, delay) = offset_and_delay(t1, t2, t3, t4);
        let precision = log2d(sys_precision);
        let delay = delay.max(precision);
        let dispersion = log2d(pkt.precision) + precision + PHI * (t4 - t1).to_seconds().abs();
        if let Some(cal) = &mut self.calibration {
            cal.replies += 1;
            cal.best_delay = cal.best_delay.min(delay);
        }
        self.filter.add(
            Sample {
                offset,
                delay,
                dispersion,
                time: now.as_secs_f64(),
            },
            precision,
        )
    }

    /// A server (mode 4) reply: the client checks of RFC 5905, with the
    /// cookie as the origin.
    pub(crate) fn receive_reply(
        &mut self,
        now: Instant,
        rx_time: NtpTimestamp,
        pkt: &NtpRepr,
        sys_precision: i8,
    ) -> Result<(Received, Option<AssociationState>), DropReason> {
        if self.state == AssociationState::Denied {
            return Err(DropReason::NoAssociation);
        }
        if pkt.stratum == 0 {
            // Kiss-o'-death (a crypto-NAK is one too): obeyed only when it
            // answers our own request.
            if self.cookie.is_zero() || pkt.origin_timestamp != self.cookie {
                return Err(DropReason::SpoofedKod);
            }
            if pkt.reference_id.kiss_code() == KissCode::Cryp {
                // The server could not authenticate our request. Counted;
                // the request stays outstanding, so a forged copy cannot
                // suppress a genuine reply, and reach decays as for a loss.
                return Err(DropReason::CryptoNak);
            }
            self.cookie = NtpTimestamp::ZERO;
            return match pkt.reference_id.kiss_code() {
                KissCode::Rate => {
                    let raised = pkt.poll.max(self.poll.saturating_add(1));
                    self.kod_floor = raised.clamp(self.config.minpoll, self.config.maxpoll);
                    self.poll = self.poll.max(self.kod_floor);
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
        let before = self.state;
        self.note_valid(now, pkt);
        Self::check_header(pkt)?;
        let t = [
            self.t1,
            pkt.receive_timestamp,
            pkt.transmit_timestamp,
            rx_time,
        ];
        let out = self.add_sample(now, t, pkt, sys_precision);
        if self
            .calibration
            .is_some_and(|c| c.replies >= CALIBRATION_REPLIES)
        {
            self.finish_calibration(now);
        }
        let changed = (self.state != before).then_some(self.state);
        Ok((Received::Sample(out), changed))
    }

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
    pub(crate) fn receive_symmetric(
        &mut self,
        now: Instant,
        rx_time: NtpTimestamp,
        pkt: &NtpRepr,
        sys_precision: i8,
    ) -> Result<(Received, Option<AssociationState>), DropReason> {
        let before = self.state;
        if pkt.stratum == 0 && pkt.reference_id.kiss_code() == KissCode::Cryp {
            // A crypto-NAK (mode 2, from a server that could not
            // authenticate our mode 1): counted only when it answers our
            // last packet.
            return Err(if !self.xmt.is_zero() && pkt.origin_timestamp == self.xmt {
                DropReason::CryptoNak
            } else {
                DropReason::SpoofedKod
            });
        }
        if pkt.transmit_timestamp.is_zero() {
            return Err(DropReason::ZeroTimestamp);
        }
        if pkt.transmit_timestamp == self.org {
            return Err(DropReason::Duplicate);
        }
        if pkt.mode == Mode::SymmetricActive && self.calibration.is_some() {
            // The peer is active too: stop calibrating, answer at once.
            self.calibration = None;
            self.calibrations += 1;
            self.state = AssociationState::Reachable;
            self.reply_now = true;
            self.pending_send = true;
        }
        let first = pkt.origin_timestamp.is_zero();
        if !first && (self.xmt.is_zero() || pkt.origin_timestamp != self.xmt) {
            self.org = pkt.transmit_timestamp;
            self.rec = rx_time;
            return Err(DropReason::Bogus);
        }
        self.org = pkt.transmit_timestamp;
        self.rec = rx_time;
        self.note_valid(now, pkt);
        let changed = |s: &Self| (s.state != before).then_some(s.state);
        if first {
            return Ok((Received::Sample(None), changed(self)));
        }
        Self::check_header(pkt)?;
        if pkt.receive_timestamp.is_zero() {
            return Err(DropReason::ZeroTimestamp);
        }
        let t = [
            pkt.origin_timestamp,
            pkt.receive_timestamp,
            pkt.transmit_timestamp,
            rx_time,
        ];
        let out = self.add_sample(now, t, pkt, sys_precision);
        Ok((Received::Sample(out), changed(self)))
    }

    /// A broadcast (mode 5) packet from our server. `authenticated`: the
    /// association requires a MAC (already checked by the node), so a
    /// packet not newer than the last accepted one is always a replay; an
    /// unauthenticated association takes several in a row for a server
    /// restart (its clock stepped back).
    pub(crate) fn receive_broadcast(
        &mut self,
        now: Instant,
        rx_time: NtpTimestamp,
        pkt: &NtpRepr,
        sys_precision: i8,
        authenticated: bool,
    ) -> Result<(Received, Option<AssociationState>), DropReason> {
        let before = self.state;
        let changed = |s: &Self| (s.state != before).then_some(s.state);
        Self::check_header(pkt)?;
        let jump_bound = self.broadcast.as_ref().map_or(0.05, |b| b.offset_jump);
        // Server restarts and identity changes call for a new calibration.
        let identity_changed = self
            .peer
            .is_some_and(|p| p.stratum != pkt.stratum || p.reference_id != pkt.reference_id);
        let Some(listen) = &mut self.listen else {
            if authenticated
                && !self.seen_xmt.is_zero()
                && (pkt.transmit_timestamp - self.seen_xmt) <= NtpDuration::ZERO
            {
                return Err(DropReason::Replay);
            }
            // Calibrating: remember the server's clock for the replay check.
            self.listen_seed(pkt.transmit_timestamp);
            self.note_valid(now, pkt);
            return Ok((Received::Sample(None), changed(self)));
        };
        let advance = pkt.transmit_timestamp - listen.last_xmt;
        if !listen.last_xmt.is_zero() && advance <= NtpDuration::ZERO {
            listen.backwards = listen.backwards.saturating_add(1);
            if authenticated || listen.backwards < RESTART_BACKWARDS {
                // An authenticated server whose clock really went back is
                // silent to us until the association is demobilised (eight
                // intervals) and mobilised afresh by its next packet.
                return Err(DropReason::Replay);
            }
            // Backwards several times running: the server restarted.
            listen.last_xmt = pkt.transmit_timestamp;
            self.restart_calibration();
            self.next_poll = now;
            return Ok((Received::Sample(None), changed(self)));
        }
        listen.backwards = 0;
        listen.last_xmt = pkt.transmit_timestamp;
        let delay = listen.delay;
        let offset = (pkt.transmit_timestamp - rx_time).to_seconds() + delay / 2.0;
        let jumped = listen
            .last_offset
            .is_some_and(|last| (offset - last).abs() > jump_bound);
        if jumped {
            listen.jumps += 1;
        } else {
            listen.jumps = 0;
        }
        // Reach: one bit per advertised interval since the last packet.
        let missed = self.last_rx.map_or(0.0, |t| {
            let gap = now.saturating_duration_since(t).as_secs_f64();
            let interval = poll_interval(pkt.poll).as_secs_f64().max(1e-3);
            ((gap / interval).round() - 1.0).clamp(0.0, 8.0)
        });
        // A silence of several intervals (a server restart, a route
        // change) or a lasting jump calls for a new calibration too.
        let recalibrate = identity_changed || listen.jumps >= 2 || missed >= SILENCE_RECALIBRATE;
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
        let precision = log2d(sys_precision);
        let sample = Sample {
            offset,
            delay,
            dispersion: log2d(pkt.precision) + precision,
            time: now.as_secs_f64(),
        };
        match self.offsets.add(sample, precision) {
            Ok(out) => {
                if let Some(l) = &mut self.listen {
                    l.last_offset = Some(offset);
                }
                Ok((Received::Sample(Some(out)), changed(self)))
            }
            Err(Held::Spike { .. } | Held::Invalid) => Err(DropReason::Spike),
        }
    }

    fn listen_seed(&mut self, xmt: NtpTimestamp) {
        // Keep the newest transmit timestamp seen while calibrating, so a
        // replay of an older packet is caught once listening starts.
        if self.seen_xmt.is_zero() || (xmt - self.seen_xmt) > NtpDuration::ZERO {
            self.seen_xmt = xmt;
        }
    }
}

/// `t` with its bits below 2^`precision` s replaced by random ones.
fn randomize_below_precision(
    t: NtpTimestamp,
    precision: i8,
    rng: &mut dyn CryptoRngCore,
) -> NtpTimestamp {
    // 32 fraction bits: a precision of 2^-20 s leaves 12 bits of noise.
    let bits = u32::try_from(32 + i32::from(precision))
        .unwrap_or(0)
        .min(32);
    let mask = (1u64 << bits) - 1;
    NtpTimestamp::from_bits((t.to_bits() & !mask) | (rng.next_u64() & mask))
}

/// 2^`log2` seconds as f64.
pub(crate) fn log2d(log2: i8) -> f64 {
    2f64.powi(i32::from(log2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn only_bits_below_the_precision_are_random() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let t = NtpTimestamp::from_bits(0x1234_5678_9abc_def0);
        let a = randomize_below_precision(t, -20, &mut rng);
        let b = randomize_below_precision(t, -20, &mut rng);
        assert_eq!(a.to_bits() >> 12, t.to_bits() >> 12, "time kept");
        assert_eq!(b.to_bits() >> 12, t.to_bits() >> 12, "time kept");
        assert_ne!(a, b, "12 random bits differ between draws");
        // A precision of a second or coarser leaves the fraction random;
        // one finer than the format keeps every bit.
        let coarse = randomize_below_precision(t, 0, &mut rng);
        assert_eq!(coarse.to_bits() >> 32, t.to_bits() >> 32);
        assert_eq!(randomize_below_precision(t, -40, &mut rng), t);
    }
}
