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
//! active association then switches to mode 1. What it does when the
//! peer does not answer the volley is its [`Calibrate`] policy: with
//! [`Calibrate::Required`] (the default) it enters symmetric mode only
//! after a volley got a reply, and otherwise calibrates again with
//! backoff, never sending mode 1; with [`Calibrate::BestEffort`] it
//! switches to mode 1 after an unanswered volley, or at once when the
//! peer's own mode-1 packet arrives first. A broadcast client keeps the least delay
//! seen and goes back to listening: each mode-5 packet gives
//! `offset = T3 + delay/2 − T4`.

mod broadcast;
mod calibration;
mod client;
mod symmetric;

pub use broadcast::BroadcastClientConfig;
pub(crate) use symmetric::Via;

use core::net::SocketAddr;
use core::time::Duration;

use rand_core::CryptoRngCore;
use strata_clock::filter::{ClockFilter, FilterOutput, Sample};
use strata_clock::{MAXDISP, PHI};
use strata_wire::{
    offset_and_delay, Leap, Mode, NtpDuration, NtpPacket, NtpRepr, NtpTimestamp, ReferenceId,
    HEADER_LEN,
};

use crate::counters::DropReason;
use crate::server::{ServerState, MAX_STRATUM};
use crate::status::SelectionRole;
use crate::time::{poll_interval, Instant};
use crate::{InstanceId, Route};

use self::broadcast::BroadcastClient;
use self::calibration::Calibration;
use self::client::Outstanding;
use self::symmetric::Symmetric;

/// The burst spacing of `iburst` and calibration (RFC 5905 BTIME),
/// shortened to the poll interval when that is shorter.
const BURST_SPACING: Duration = Duration::from_secs(2);
/// Packets in an `iburst` volley.
const BURST_COUNT: u8 = 8;
/// Good replies that end a calibration volley.
pub const CALIBRATION_REPLIES: u8 = 4;
/// Requests after which a calibration volley ends anyway.
pub const CALIBRATION_ATTEMPTS: u8 = 8;

/// When a symmetric active association may send mode 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Calibrate {
    /// Only after a calibration volley (mode 3/4) got at least one valid
    /// reply (an unsynchronised peer's counts: it may need our time).
    /// A peer that never answers keeps being calibrated, with the wait
    /// between volleys doubling up to `maxpoll`, and never gets mode 1.
    #[default]
    Required,
    /// Also after a volley that went unanswered, or at once when the
    /// peer's own mode-1 packet arrives first: for peers that speak only
    /// symmetric mode.
    BestEffort,
}

impl Calibrate {
    /// Its configuration name: `required` or `best-effort`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Calibrate::Required => "required",
            Calibrate::BestEffort => "best-effort",
        }
    }
}

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

/// What [`Association::receive`] makes of a packet: what it produced and
/// the new state if it changed, or why the packet is dropped.
pub(crate) type Outcome = Result<(Received, Option<AssociationState>), DropReason>;

/// A packet from an association's remote, as the node hands it on.
#[derive(Clone, Copy)]
pub(crate) struct Arrival<'a> {
    /// When it arrived (monotonic).
    pub(crate) now: Instant,
    /// When it arrived, on the disciplined clock's timescale.
    pub(crate) rx_time: NtpTimestamp,
    pub(crate) pkt: &'a NtpRepr,
    /// Our clock's precision, log2 s.
    pub(crate) sys_precision: i8,
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

/// What an association does in its mode, with the state only that mode
/// keeps.
enum Role {
    /// A configured server, polled in mode 3.
    Client,
    /// A symmetric peer, active (configured) or passive (mobilised).
    Symmetric(Symmetric),
    /// A broadcast or multicast client (mobilised by mode 5).
    Broadcast(Box<BroadcastClient>),
}

pub(crate) struct Association {
    pub(crate) id: AssociationId,
    pub(crate) config: ClientConfig,
    role: Role,
    /// The key its packets are signed with and must be authenticated
    /// with; `None` when it does not use authentication.
    pub(crate) key: Option<u32>,
    /// Its part in the last source selection; `None` when it was not a
    /// candidate.
    pub(crate) selection: Option<SelectionRole>,
    pub(crate) poll: i8,
    /// Poll floor imposed by a RATE kiss.
    kod_floor: Option<i8>,
    pub(crate) reach: u8,
    pub(crate) state: AssociationState,
    pub(crate) next_poll: Instant,
    burst: u8,
    pub(crate) pending_send: bool,
    /// The client request (ours, or a calibration volley's) awaiting its
    /// reply.
    outstanding: Option<Outstanding>,
    /// Transmit timestamp of the last accepted reply (duplicate check).
    last_reply_xmt: Option<NtpTimestamp>,
    /// Completed calibration volleys.
    pub(crate) calibrations: u32,
    pub(crate) filter: ClockFilter,
    pub(crate) peer: Option<PeerInfo>,
    pub(crate) last_rx: Option<Instant>,
    /// The remote's advertised poll exponent.
    ppoll: i8,
    /// The system poll exponent last applied.
    sys_poll: i8,
}

impl Association {
    /// A configured association: a client, or (`symmetric`) a symmetric
    /// active peer, which starts with a calibration volley.
    pub(crate) fn new(
        id: AssociationId,
        config: ClientConfig,
        mode: AssociationMode,
        now: Instant,
    ) -> Self {
        let role = match mode {
            AssociationMode::Client => Role::Client,
            AssociationMode::SymmetricActive => Role::Symmetric(Symmetric::new(true)),
            AssociationMode::SymmetricPassive => Role::Symmetric(Symmetric::new(false)),
            AssociationMode::BroadcastClient | AssociationMode::MulticastClient => {
                Role::Broadcast(Box::new(BroadcastClient::new(
                    mode == AssociationMode::MulticastClient,
                    BroadcastClientConfig::default(),
                )))
            }
        };
        Self::with_role(id, config, role, now)
    }

    fn with_role(id: AssociationId, config: ClientConfig, role: Role, now: Instant) -> Self {
        let mut a = Association {
            id,
            role,
            key: None,
            selection: None,
            burst: 0,
            poll: config.minpoll,
            kod_floor: None,
            reach: 0,
            state: AssociationState::Init,
            next_poll: now,
            pending_send: false,
            outstanding: None,
            last_reply_xmt: None,
            calibrations: 0,
            filter: ClockFilter::new(),
            peer: None,
            last_rx: None,
            ppoll: config.minpoll,
            sys_poll: config.minpoll,
            config,
        };
        if a.calibration().is_some() {
            a.state = AssociationState::Calibrating;
        }
        a
    }

    /// Its mode.
    pub(crate) fn mode(&self) -> AssociationMode {
        match &self.role {
            Role::Client => AssociationMode::Client,
            Role::Symmetric(s) if s.active => AssociationMode::SymmetricActive,
            Role::Symmetric(_) => AssociationMode::SymmetricPassive,
            Role::Broadcast(b) if b.multicast => AssociationMode::MulticastClient,
            Role::Broadcast(_) => AssociationMode::BroadcastClient,
        }
    }

    fn is_symmetric(&self) -> bool {
        matches!(self.role, Role::Symmetric(_))
    }

    /// The calibration volley slot of a mode that calibrates.
    fn calibration_slot(&mut self) -> Option<&mut Option<Calibration>> {
        match &mut self.role {
            Role::Client => None,
            Role::Symmetric(s) => Some(&mut s.calibration),
            Role::Broadcast(b) => Some(&mut b.calibration),
        }
    }

    /// The calibration volley in progress, if any.
    fn calibration(&self) -> Option<Calibration> {
        match &self.role {
            Role::Client => None,
            Role::Symmetric(s) => s.calibration,
            Role::Broadcast(b) => b.calibration,
        }
    }

    /// A listening broadcast client's state.
    fn listening(&self) -> Option<&BroadcastClient> {
        match &self.role {
            Role::Broadcast(b) if b.listen.is_some() => Some(b),
            _ => None,
        }
    }

    /// The output the system process uses: the offset filter's while
    /// listening, the clock filter's otherwise.
    pub(crate) fn output(&self) -> Option<FilterOutput> {
        self.listening()
            .and_then(|b| b.offsets.last())
            .or_else(|| self.filter.last())
    }

    /// Usable samples behind the current output.
    pub(crate) fn samples(&self, now: f64) -> usize {
        match self.listening() {
            Some(b) if b.offsets.last().is_some() => BroadcastClient::STARTUP_SAMPLES_LISTENING,
            _ => self.filter.usable(now),
        }
    }

    /// Dispersion of the current output aged to `now`.
    pub(crate) fn dispersion_at(&self, now: f64) -> f64 {
        match self.listening() {
            Some(b) if b.offsets.last().is_some() => b.offsets.dispersion_at(now),
            _ => self.filter.dispersion_at(now),
        }
    }

    /// The calibrated delay and when it was measured, for broadcast clients
    /// past their first volley.
    pub(crate) fn calibrated(&self) -> Option<(f64, Instant)> {
        self.listening()?.listen.map(|l| (l.delay, l.since))
    }

    /// The poll floor a RATE kiss imposed, if one did.
    pub(crate) fn kod_poll_floor(&self) -> Option<i8> {
        self.kod_floor
    }

    /// The remote's advertised poll exponent, once it has been heard.
    pub(crate) fn remote_poll(&self) -> Option<i8> {
        self.peer.map(|_| self.ppoll)
    }

    /// During a calibration volley: requests sent and good replies so far.
    pub(crate) fn calibration_progress(&self) -> Option<(u8, u8)> {
        self.calibration().map(|c| (c.attempts, c.replies))
    }

    /// Whether it only listens (a broadcast client between volleys).
    fn only_listens(&self) -> bool {
        self.listening().is_some() && self.calibration().is_none()
    }

    /// When the association sends next; `None` when it sends nothing of
    /// its own (denied, or a broadcast client listening).
    pub(crate) fn next_send(&self) -> Option<Instant> {
        (self.state != AssociationState::Denied && !self.only_listens()).then_some(self.next_poll)
    }

    /// Where a symmetric association's packets leave from: set from each
    /// packet of its peer that arrives on a listener.
    pub(crate) fn set_via(&mut self, via: Via) {
        if let Role::Symmetric(s) = &mut self.role {
            s.via = Some(via);
        }
    }

    /// Where its packets leave from, when that is a listener it learnt.
    pub(crate) fn via(&self) -> Option<Via> {
        match &self.role {
            Role::Symmetric(s) => s.via,
            _ => None,
        }
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
            .max(self.kod_floor.unwrap_or(i8::MIN));
        let p = if self.is_symmetric() && self.peer.is_some() {
            self.ppoll.min(host).max(self.config.minpoll)
        } else {
            host
        };
        if p < self.poll && self.burst == 0 && self.calibration().is_none() {
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
        let interval = poll_interval(self.poll.max(self.ppoll));
        self.is_symmetric()
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
        now >= self.next_poll && self.state != AssociationState::Denied && self.is_symmetric()
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
        if self.only_listens() {
            return self.on_listen_timer(now);
        }
        let mut changed = Polled::Nothing;
        // A request still outstanding is a miss.
        self.reach <<= 1;
        if self.reach & 0x7 == 0 && self.filter.last().is_some() && !self.heard_lately(now) {
            self.filter.add_missing(now.as_secs_f64());
        }
        if self.reach == 0 && self.state == AssociationState::Reachable {
            if self.mode().is_dynamic() {
                return Polled::Demobilize;
            }
            self.state = AssociationState::Unreachable;
            changed = Polled::State(self.state);
        }
        self.pending_send = true;
        let spacing = self.spacing();
        if let Some(Some(cal)) = self.calibration_slot() {
            cal.attempts += 1;
            let exhausted = cal.attempts > CALIBRATION_ATTEMPTS;
            self.next_poll = now + spacing;
            if exhausted {
                if let Some(wait) = self.calibration_retry() {
                    // A required volley went unanswered: no mode 1; try
                    // again later.
                    self.restart_calibration();
                    self.next_poll = now + wait;
                    return changed;
                }
                // The volley went unanswered: end it, keep polling.
                if let Some(c) = self.finish_calibration(now) {
                    changed = Polled::State(c);
                }
                if matches!(&self.role, Role::Broadcast(b) if b.listen.is_none()) {
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
            spacing
        } else {
            poll_interval(self.poll)
        };
        if self.is_symmetric() {
            interval += interval * u32::from(jitter) / 4096;
        }
        self.next_poll = now + interval;
        changed
    }

    /// Writes the next packet into `buf` (at least [`HEADER_LEN`] bytes)
    /// with `clock_now` as our send time. Returns the length and the
    /// route: symmetric associations send from the listener their peer's
    /// packets arrive on (any listener, port 123 first, until the first
    /// arrives), everything else from the client socket.
    pub(crate) fn build_packet(
        &mut self,
        clock_now: NtpTimestamp,
        sys: &ServerState,
        rng: &mut dyn CryptoRngCore,
        buf: &mut [u8],
    ) -> Option<(usize, Route)> {
        let out = buf.get_mut(..HEADER_LEN)?;
        self.pending_send = false;
        let poll = self.poll;
        let mut route = self
            .via()
            .map_or(Route::Client, |v| Route::Socket(v.socket));
        let repr = match &mut self.role {
            Role::Symmetric(s) if s.sends_symmetric() => {
                if s.via.is_none() {
                    route = Route::Listener;
                }
                s.packet(clock_now, poll, sys, rng)
            }
            _ => self.client_request(clock_now, rng),
        };
        repr.emit(&mut NtpPacket::new_unchecked(&mut *out));
        Some((HEADER_LEN, route))
    }

    /// Forgets outstanding exchanges and filters (after a clock step,
    /// timestamps taken before it are meaningless). The next symmetric
    /// packet carries a zero origin, so the peer takes no sample from it.
    pub(crate) fn clear_after_step(&mut self) {
        self.outstanding = None;
        self.filter.reset();
        match &mut self.role {
            Role::Client => {}
            Role::Symmetric(s) => s.clear_after_step(),
            Role::Broadcast(b) => b.clear_after_step(),
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

    /// Adds the sample of an exchange: our send time `t1`, the remote's
    /// receive and transmit timestamps in `pkt`, and our receive time `t4`.
    fn add_sample(
        &mut self,
        now: Instant,
        t1: NtpTimestamp,
        pkt: &NtpRepr,
        t4: NtpTimestamp,
        sys_precision: i8,
    ) -> Option<FilterOutput> {
        let (t2, t3) = (pkt.receive_timestamp, pkt.transmit_timestamp);
        let (offset, delay) = offset_and_delay(t1, t2, t3, t4);
        let precision = log2d(sys_precision);
        let delay = delay.max(precision);
        let dispersion = log2d(pkt.precision) + precision + PHI * (t4 - t1).to_seconds().abs();
        if let Some(Some(cal)) = self.calibration_slot() {
            cal.replies += 1;
            cal.best_delay = Some(cal.best_delay.map_or(delay, |best| best.min(delay)));
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

    /// A packet from the remote, in the mode the node found it in: a
    /// reply, a symmetric or a broadcast packet. Returns what it produced
    /// and the new state if it changed; on a key-using association the
    /// node has checked the MAC first.
    pub(crate) fn receive(&mut self, rx: Arrival) -> Outcome {
        match rx.pkt.mode {
            Mode::Server => self.receive_reply(rx),
            Mode::SymmetricActive | Mode::SymmetricPassive => self.receive_symmetric(rx),
            Mode::Broadcast => self.receive_broadcast(rx, self.key.is_some()),
            _ => Err(DropReason::UnexpectedMode),
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
