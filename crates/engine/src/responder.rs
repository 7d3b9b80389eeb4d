//! The responder: how a node answers client requests, as a snapshot that
//! any thread may answer with.
//!
//! The node keeps its server policy — access rules per instance, the deny
//! policy, the rate limiter, and its listening sockets with the key each
//! requires — and hands drivers a [`Responder`] ([`crate::Node::responder`]):
//! that policy with the server state of the moment. A driver that reads a
//! listener on several threads answers with it, and the node answers with
//! the same policy, so a rule, a limit or a key holds whoever answers:
//!
//! 1. [`Responder::plan`] decides per datagram: answer (the time or a
//!    kiss-o'-death), drop (counted under its reason), or
//!    [`Plan::ToNode`]: the node handles it (anything the snapshot cannot
//!    answer alone);
//! 2. [`Responder::write`] builds the planned answer, with the transmit
//!    time read as late as possible.
//!
//! A snapshot answers only plain client requests (48 bytes, mode 3,
//! version 1..=4) on listeners the node has registered without a key; it
//! fails closed: a listener it does not know (opened since) or that
//! requires a key hands everything to the node, which owns the keys.
//!
//! # Extension points
//! - *Interleaved mode*: the transmit timestamps of sent answers, saved
//!   per client, belong in a table the snapshot shares by `Arc` (as it
//!   shares the rate limiter), so every thread finds the timestamp another
//!   thread saved: a client's requests may come from a new source port
//!   each time and reach any thread. [`Responder::plan`] then recognises
//!   interleaved requests by their origin and receive timestamps, and
//!   [`Responder::write`] fills the saved timestamp in.
//! - *NTS*: requests with extension fields go to the node today
//!   ([`Plan::ToNode`]); the cookie keys would join the policy, shared by
//!   `Arc` and replaced on rotation, so [`Responder::plan`] can answer
//!   them.
//! - *Control messages (mode 6)*: always [`Plan::ToNode`]; the node
//!   answers them (`control.rs`) from its own status.

use std::collections::HashMap;
use std::sync::Arc;

use core::net::IpAddr;

use strata_wire::{KissCode, Mode, NtpPacket, NtpTimestamp, HEADER_LEN};

use crate::access::{level_for, AccessLevel, AccessRule};
use crate::counters::DropReason;
use crate::ratelimit::RateLimitConfig;
use crate::ratelimit::{Decision, ShardedRateLimiter};
use crate::server::{admit, kiss_of_death, respond, Admission, ServerState};
use crate::time::Instant;
use crate::{InstanceId, Node, SocketId};

/// What the server does with a client request from a source its access
/// rules give no time service (no rule matches, or a `query`-only rule).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DenyPolicy {
    /// Send nothing (the default).
    #[default]
    Drop,
    /// Answer a mode-3 request with a KoD DENY, itself subject to the rate
    /// limiter (at most one per interval per client while it is over its
    /// rate). Mode-1 packets are still dropped.
    Kod,
}

/// The server side's rules, kept by the node and carried by every
/// [`Responder`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Policy {
    /// Access rules, indexed by instance id.
    access: Vec<Vec<AccessRule>>,
    pub(crate) deny: DenyPolicy,
    /// Per-client rate limiting; `None` is off. Shared by every snapshot,
    /// so a client's limit holds whoever answers it.
    pub(crate) limiter: Option<Arc<ShardedRateLimiter>>,
    /// The listening sockets, each with the key its requests must be
    /// signed with (`None`: any request, signed or not).
    listeners: HashMap<SocketId, Option<u32>>,
}

impl Policy {
    pub(crate) fn set_access(&mut self, instance: InstanceId, rules: Vec<AccessRule>) {
        let i = usize::from(instance.0);
        if self.access.len() <= i {
            self.access.resize(i + 1, Vec::new());
        }
        self.access[i] = rules;
    }

    /// An instance's access rules.
    pub(crate) fn rules(&self, instance: InstanceId) -> &[AccessRule] {
        self.access
            .get(usize::from(instance.0))
            .map_or(&[][..], Vec::as_slice)
    }

    pub(crate) fn level(&self, instance: InstanceId, ip: IpAddr) -> Option<AccessLevel> {
        let rules = self
            .access
            .get(usize::from(instance.0))
            .map_or(&[][..], Vec::as_slice);
        level_for(rules, ip)
    }

    /// The admission of a request from `ip` (`client`: mode 3, which the
    /// deny policy may answer with a KoD DENY; otherwise mode 1).
    pub(crate) fn admit(
        &self,
        now: Instant,
        instance: InstanceId,
        ip: IpAddr,
        client: bool,
    ) -> Admission {
        let deny_kod = client && self.deny == DenyPolicy::Kod;
        let limiter = self.limiter.as_deref();
        admit(self.level(instance, ip), deny_kod, || {
            limiter.map_or(Decision::Allow, |l| l.check(now, (instance, ip)))
        })
    }

    pub(crate) fn set_listener(&mut self, socket: SocketId, key: Option<u32>) {
        self.listeners.insert(socket, key);
    }

    pub(crate) fn clear_listeners(&mut self) {
        self.listeners.clear();
    }

    /// The key a listener requires, if any.
    pub(crate) fn listener_key(&self, socket: SocketId) -> Option<u32> {
        self.listeners.get(&socket).copied().flatten()
    }
}

/// What to do with one datagram that arrived on a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Answer with the time.
    Time,
    /// Answer with this kiss-o'-death (RATE: over the rate limit; DENY:
    /// refused by the access rules under [`DenyPolicy::Kod`]).
    Kiss(KissCode),
    /// Send nothing; counted under this reason.
    Drop(DropReason),
    /// Hand the datagram to the node ([`crate::Node::handle_datagram`]):
    /// everything but a plain client request on a known unkeyed listener —
    /// replies to the node's associations, symmetric, broadcast and
    /// control modes, MACs and extension fields, malformed datagrams.
    ToNode,
}

impl Plan {
    /// The drop counter this plan counts under: a drop's reason, and
    /// `access-denied` for a KoD DENY (refused all the same).
    #[must_use]
    pub fn drop_reason(self) -> Option<DropReason> {
        match self {
            Plan::Drop(reason) => Some(reason),
            Plan::Kiss(KissCode::Deny) => Some(DropReason::AccessDenied),
            _ => None,
        }
    }
}

/// The node's server state and policy at one moment: what every thread
/// that answers client requests answers with. Cheap to clone (the rate
/// limiter is shared); take a new one when [`crate::Node::policy_generation`]
/// or the server state changes.
#[derive(Clone, Debug)]
pub struct Responder {
    state: ServerState,
    reference_follows_clock: bool,
    policy: Policy,
}

impl Responder {
    pub(crate) fn new(state: ServerState, reference_follows_clock: bool, policy: Policy) -> Self {
        Responder {
            state,
            reference_follows_clock,
            policy,
        }
    }

    /// A responder that knows no listener, so it hands every datagram to
    /// the node: for a driver's threads until the node's first snapshot.
    #[must_use]
    pub fn closed(precision: i8) -> Responder {
        Responder::new(
            ServerState::unsynchronized(precision),
            false,
            Policy::default(),
        )
    }

    /// Decides what to do with `request`, which arrived from `src` on
    /// listener `socket` of `instance` at `now` (the node's monotonic
    /// timebase: the rate limiter's clock). Takes a rate-limiter token
    /// when it answers or refuses.
    #[must_use]
    pub fn plan(
        &self,
        now: Instant,
        instance: InstanceId,
        socket: SocketId,
        src: IpAddr,
        request: &[u8],
    ) -> Plan {
        let unkeyed = matches!(self.policy.listeners.get(&socket), Some(None));
        if !unkeyed || !is_plain_request(request) {
            return Plan::ToNode;
        }
        match self.policy.admit(now, instance, src, true) {
            Admission::Answer => Plan::Time,
            Admission::KissRate => Plan::Kiss(KissCode::Rate),
            Admission::KissDeny => Plan::Kiss(KissCode::Deny),
            Admission::Drop(reason) => Plan::Drop(reason),
        }
    }

    /// Writes the answer `plan` calls for to the front of `out`: the time
    /// (received at `rx_time`, sent at `tx_time`, both on the served
    /// clock's timescale) or a kiss-o'-death. Returns its length; `None`
    /// when the plan sends nothing or `request` cannot be answered.
    #[must_use]
    pub fn write(
        &self,
        plan: Plan,
        request: &[u8],
        rx_time: NtpTimestamp,
        tx_time: NtpTimestamp,
        out: &mut [u8],
    ) -> Option<usize> {
        match plan {
            Plan::Time => {
                let mut state = self.state;
                if self.reference_follows_clock {
                    state.reference_time = tx_time;
                }
                respond(request, rx_time, tx_time, &state, out).ok()
            }
            Plan::Kiss(code) => kiss_of_death(request, code, self.state.precision, out).ok(),
            Plan::Drop(_) | Plan::ToNode => None,
        }
    }
}

/// A request a snapshot may answer: 48 bytes (no MAC, no extension
/// field), mode 3, version 1..=4.
fn is_plain_request(data: &[u8]) -> bool {
    NtpPacket::new_checked(data).is_ok_and(|p| {
        data.len() == HEADER_LEN && p.mode() == Mode::Client && (1..=4).contains(&p.version())
    })
}

impl Node {
    /// Turns per-client rate limiting of requests on (or with `None` off),
    /// keyed by (instance, source IP). Changing the settings forgets every
    /// client's state; setting the same settings again keeps it.
    pub fn set_rate_limit(&mut self, config: Option<RateLimitConfig>) {
        let same = match (&self.policy.limiter, config) {
            (Some(l), Some(c)) => l.config() == c,
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.policy.limiter = config.map(|c| {
                Arc::new(ShardedRateLimiter::new(
                    c,
                    ShardedRateLimiter::shards_for(c.max_clients),
                ))
            });
            self.policy_generation += 1;
        }
    }

    /// The rate limiter's settings, if limiting is on.
    #[must_use]
    pub fn rate_limit(&self) -> Option<RateLimitConfig> {
        self.policy.limiter.as_ref().map(|l| l.config())
    }

    /// A snapshot of the server side, for a driver that answers client
    /// requests on other threads: the server state now (`clock_now`
    /// supplies a local reference's reference time) and the node's access
    /// rules, deny policy, rate limiter (shared) and listeners. Take a new
    /// one when the server state or [`Node::policy_generation`] changes.
    #[must_use]
    pub fn responder(&self, clock_now: NtpTimestamp) -> Responder {
        Responder::new(
            self.server_state(clock_now),
            self.reference_follows_clock(),
            self.policy.clone(),
        )
    }

    /// A number that changes whenever the rules a [`Responder`] carries
    /// change (access rules, deny policy, rate limiter, listeners).
    #[must_use]
    pub fn policy_generation(&self) -> u64 {
        self.policy_generation
    }

    /// Registers a listening socket, whose client requests a
    /// [`Responder`] may answer, and makes it answer only packets signed
    /// with key `key_id` (`None`: any packet, signed or not). On such a socket an
    /// unsigned client request or mode-1 packet from an unknown peer is
    /// dropped (counted as `unauthenticated`); one signed with another key
    /// or with a MAC that fails gets a crypto-NAK (mode 3) or nothing
    /// (mode 1), counted as `bad-mac`. Packets of existing associations
    /// are judged by the association's own key.
    pub fn set_listener(&mut self, socket: SocketId, key_id: Option<u32>) {
        self.policy.set_listener(socket, key_id);
        self.policy_generation += 1;
    }

    /// Forgets every listener (before registering the sockets now open,
    /// so closed sockets leave nothing behind).
    pub fn clear_listeners(&mut self) {
        self.policy.clear_listeners();
        self.policy_generation += 1;
    }

    /// The key a listening socket requires, if any.
    #[must_use]
    pub fn listener_key(&self, socket: SocketId) -> Option<u32> {
        self.policy.listener_key(socket)
    }

    /// Sets what happens to requests from sources the access rules refuse.
    pub fn set_deny_policy(&mut self, policy: DenyPolicy) {
        self.policy.deny = policy;
        self.policy_generation += 1;
    }

    /// Sets an instance's access rules (see [`crate::access`]).
    pub fn set_access(&mut self, instance: InstanceId, rules: Vec<AccessRule>) {
        if self.instance_mut(instance).is_some() {
            self.policy.set_access(instance, rules);
            self.policy_generation += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::RateLimitConfig;
    use crate::{Node, NodeConfig};
    use core::net::Ipv4Addr;
    use core::time::Duration;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use strata_wire::{NtpRepr, ReferenceId};

    const OPEN: SocketId = SocketId(1);
    const KEYED: SocketId = SocketId(2);
    const UNKNOWN: SocketId = SocketId(3);

    fn client(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    /// A local-reference node serving 10.0.0.0/25, with one open and one
    /// keyed listener.
    fn node(deny: DenyPolicy) -> Node {
        let mut node = Node::new(
            NodeConfig {
                local_stratum: Some(3),
                ..NodeConfig::default()
            },
            ChaCha8Rng::seed_from_u64(1),
        );
        node.set_access(
            InstanceId::DEFAULT,
            vec![AccessRule {
                prefix: client(0),
                prefix_len: 25,
                level: AccessLevel::Synchronization,
            }],
        );
        node.set_deny_policy(deny);
        node.set_listener(OPEN, None);
        node.set_listener(KEYED, Some(1));
        node
    }

    fn request() -> [u8; HEADER_LEN] {
        NtpRepr::client_request(6, NtpTimestamp::from_bits(0xfeed)).to_bytes()
    }

    fn plan(r: &Responder, socket: SocketId, src: u8, data: &[u8]) -> Plan {
        r.plan(
            Instant::ZERO,
            InstanceId::DEFAULT,
            socket,
            client(src),
            data,
        )
    }

    #[test]
    fn answers_plain_requests_on_known_unkeyed_listeners_only() {
        let n = node(DenyPolicy::Drop);
        let generation = n.policy_generation();
        let r = n.responder(NtpTimestamp::ZERO);
        let req = request();
        assert_eq!(plan(&r, OPEN, 1, &req), Plan::Time);
        assert_eq!(plan(&r, KEYED, 1, &req), Plan::ToNode, "the node owns keys");
        assert_eq!(plan(&r, UNKNOWN, 1, &req), Plan::ToNode, "fails closed");
        assert_eq!(plan(&Responder::closed(-20), OPEN, 1, &req), Plan::ToNode);
        // Anything but a plain mode-3 request goes to the node.
        let mut with_mac = req.to_vec();
        with_mac.extend_from_slice(&[0; 20]);
        let mut control = req;
        control[0] = (control[0] & !7) | 6;
        let mut v5 = req;
        v5[0] = (v5[0] & !0x38) | (5 << 3);
        for data in [&with_mac[..], &control[..], &v5[..], &req[..40]] {
            assert_eq!(plan(&r, OPEN, 1, data), Plan::ToNode);
        }
        let mut n = n;
        n.set_listener(UNKNOWN, None);
        assert!(n.policy_generation() > generation, "a new snapshot is due");
    }

    #[test]
    fn refusals_follow_the_deny_policy() {
        let req = request();
        let dropping = node(DenyPolicy::Drop).responder(NtpTimestamp::ZERO);
        let refused = plan(&dropping, OPEN, 200, &req);
        assert_eq!(refused, Plan::Drop(DropReason::AccessDenied));
        assert_eq!(refused.drop_reason(), Some(DropReason::AccessDenied));
        let kissing = node(DenyPolicy::Kod).responder(NtpTimestamp::ZERO);
        let refused = plan(&kissing, OPEN, 200, &req);
        assert_eq!(refused, Plan::Kiss(KissCode::Deny));
        assert_eq!(refused.drop_reason(), Some(DropReason::AccessDenied));
        let mut out = [0u8; 64];
        let n = kissing
            .write(
                refused,
                &req,
                NtpTimestamp::ZERO,
                NtpTimestamp::ZERO,
                &mut out,
            )
            .expect("a KoD");
        let kod = NtpRepr::parse(&NtpPacket::new_checked(&out[..n]).expect("len")).expect("kod");
        assert_eq!(kod.reference_id, ReferenceId::from_kiss(KissCode::Deny));
        assert_eq!(kod.origin_timestamp, NtpTimestamp::from_bits(0xfeed));
    }

    #[test]
    fn the_rate_limit_is_shared_by_every_snapshot() {
        let mut n = node(DenyPolicy::Drop);
        n.set_rate_limit(Some(RateLimitConfig {
            interval: Duration::from_secs(60),
            burst: 1,
            max_clients: 16,
        }));
        let (a, b) = (
            n.responder(NtpTimestamp::ZERO),
            n.responder(NtpTimestamp::ZERO),
        );
        let req = request();
        assert_eq!(plan(&a, OPEN, 1, &req), Plan::Time);
        // The token is spent whichever snapshot answered.
        assert_eq!(plan(&b, OPEN, 1, &req), Plan::Kiss(KissCode::Rate));
        // A KoD RATE is an answer, not a drop.
        assert_eq!(Plan::Kiss(KissCode::Rate).drop_reason(), None);
    }

    #[test]
    fn a_local_reference_answers_with_its_transmit_time_as_reference() {
        let r = node(DenyPolicy::Drop).responder(NtpTimestamp::ZERO);
        let (rx, tx) = (
            NtpTimestamp::from_bits(5 << 32),
            NtpTimestamp::from_bits(6 << 32),
        );
        let mut out = [0u8; 64];
        let n = r
            .write(Plan::Time, &request(), rx, tx, &mut out)
            .expect("an answer");
        let reply =
            NtpRepr::parse(&NtpPacket::new_checked(&out[..n]).expect("len")).expect("reply");
        assert_eq!(
            (
                reply.stratum,
                reply.origin_timestamp,
                reply.receive_timestamp
            ),
            (3, NtpTimestamp::from_bits(0xfeed), rx)
        );
        assert_eq!(
            (reply.transmit_timestamp, reply.reference_timestamp),
            (tx, tx)
        );
        for plan in [Plan::ToNode, Plan::Drop(DropReason::RateLimited)] {
            assert_eq!(r.write(plan, &request(), rx, tx, &mut out), None);
        }
    }
}
