//! The node: every association, the server responder and the system
//! process (selection, combining and the clock discipline) of one NTP
//! daemon, driven sans-IO.
//!
//! # Driving a node
//! 1. Feed every datagram with [`Node::handle_datagram`] and every expired
//!    deadline with [`Node::handle_timeout`].
//! 2. After each input, drain [`Node::poll_transmit`] until it returns
//!    `None`, reading the clock right before each call (that reading
//!    becomes the transmit timestamp), then drain [`Node::poll_event`] and
//!    apply clock commands in order.
//! 3. Sleep until [`Node::poll_timeout`] or the next datagram.
//!
//! A spurious or early [`Node::handle_timeout`] does nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use core::time::Duration;

use core::net::{IpAddr, SocketAddr};

use rand_core::{CryptoRng, CryptoRngCore, RngCore};
use strata_clock::discipline::{ClockCommand, Discipline, DisciplineConfig, Outcome};
use strata_clock::filter::Sample;
use strata_clock::select::{is_eligible, select, Candidate, SelectConfig, Selection};
use strata_wire::{
    KissCode, Leap, Mode, NtpPacket, NtpRepr, NtpShort, NtpTimestamp, ReferenceId, HEADER_LEN,
};

use crate::access::{AccessLevel, AccessRule};
use crate::assoc::{
    Association, AssociationId, AssociationMode, AssociationState, BroadcastClientConfig,
    ClientConfig, Polled, Received, Via, MAXDISP, PHI,
};
use crate::auth::{self, KeyStore, Verdict};
use crate::counters::{Counters, DropReason};
use crate::ratelimit::{RateLimitConfig, ShardedRateLimiter};
use crate::responder::{DenyPolicy, Policy, Responder};
use crate::server::{
    kiss_of_death, respond, wire_drop_reason, Admission, ServerState, MAX_STRATUM,
};
use crate::time::{poll_interval, Instant};

/// Default `max-dynamic-sessions` of an instance.
pub const DEFAULT_MAX_DYNAMIC: usize = 100;
/// Samples each source needs before the first clock update (within the
/// startup hold).
const STARTUP_SAMPLES: usize = 3;
/// At most this many local addresses are remembered per instance for loop
/// detection.
const MAX_LOCAL_REFIDS: usize = 256;

/// Identifies a VPN instance; [`InstanceId::DEFAULT`] is the daemon's own
/// network stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InstanceId(pub u16);

impl InstanceId {
    /// The default instance.
    pub const DEFAULT: InstanceId = InstanceId(0);
}

/// An opaque socket handle chosen by the driver, echoed back so a reply
/// leaves through the socket its request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketId(pub u32);

/// Where and when a datagram arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    /// The instance of the receiving socket.
    pub instance: InstanceId,
    /// The receiving socket.
    pub socket: SocketId,
    /// Whether the socket serves time (a `[[listen]]` socket). Requests on
    /// other sockets are not answered.
    pub listener: bool,
    /// The sender.
    pub src: SocketAddr,
    /// The local address the datagram was sent to, when known.
    pub dst_ip: Option<IpAddr>,
    /// The receiving interface, when known.
    pub ifindex: Option<u32>,
    /// Arrival time on the disciplined clock's timescale (a kernel
    /// timestamp converted by the driver, where available).
    pub rx_time: NtpTimestamp,
}

/// Which socket a datagram leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// This socket: a reply leaves through the socket its request came in
    /// on, a symmetric association through the listener its peer's packets
    /// arrive on, a broadcast/multicast server through the socket it was
    /// configured with.
    Socket(SocketId),
    /// The instance's client socket for the destination's address family:
    /// client requests and calibration volleys.
    Client,
    /// A listening socket of the instance, of the destination's family
    /// (port 123 first): symmetric packets before the peer's first packet
    /// has arrived, so the peer sees them come from the port it sends to.
    Listener,
    /// The socket the driver set up for this broadcast/multicast
    /// destination (a [`BroadcastServerConfig`] without a socket).
    Broadcast,
}

/// A datagram the driver must send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The instance to send in.
    pub instance: InstanceId,
    /// The socket to send from.
    pub route: Route,
    /// Destination.
    pub dst: SocketAddr,
    /// Source address to use (the address a request was sent to).
    pub src_ip: Option<IpAddr>,
    /// Outgoing interface, when it matters.
    pub ifindex: Option<u32>,
    /// Bytes written at the front of the caller's buffer.
    pub len: usize,
}

/// Something the driver must act on or may report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    /// Apply this to the disciplined clock, in order.
    Clock(ClockCommand),
    /// The offset exceeded the panic threshold: the driver must stop
    /// disciplining and report it (RFC 5905 exits).
    Panic {
        /// The offending offset, seconds.
        offset: f64,
    },
    /// An association changed state.
    Association {
        /// Which one.
        id: AssociationId,
        /// Its new state.
        state: AssociationState,
    },
    /// The system peer changed (`None`: no source selected).
    SystemPeer(Option<AssociationId>),
    /// A dynamic association was mobilised by a remote's packet.
    Mobilized {
        /// Its id.
        id: AssociationId,
        /// Its mode.
        mode: AssociationMode,
    },
    /// A dynamic association was removed (its remote fell silent).
    Demobilized {
        /// Its id.
        id: AssociationId,
    },
}

/// A broadcast or multicast server: sends mode 5 every 2^`poll` s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroadcastServerConfig {
    /// The instance to send in.
    pub instance: InstanceId,
    /// The broadcast address or multicast group, with the port.
    pub destination: SocketAddr,
    /// The socket to send from (set up by the driver with the outgoing
    /// interface and TTL); `None`: the driver picks the one it set up for
    /// the destination ([`Route::Broadcast`]).
    pub socket: Option<SocketId>,
    /// The outgoing interface.
    pub ifindex: Option<u32>,
    /// Poll exponent: the send interval is 2^`poll` s.
    pub poll: i8,
    /// Sign every packet with this key (clients then accept only packets
    /// signed with it); `None` sends unsigned packets. A packet that cannot
    /// be signed (the key is missing from [`Node::set_keys`]) is not sent.
    pub key: Option<u32>,
}

/// Node-wide settings.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Precision of the clock readings, log2 seconds.
    pub precision: i8,
    /// Serve at this stratum from the local clock while no source is
    /// selected (a local reference); `None` serves nothing until synced.
    pub local_stratum: Option<u8>,
    /// Clock discipline constants.
    pub discipline: DisciplineConfig,
    /// Source selection constants.
    pub select: SelectConfig,
    /// The frequency correction to start from (a drift file), ppm.
    pub initial_frequency_ppm: Option<f64>,
    /// Requests waiting for an answer beyond this are dropped as overload.
    pub max_pending_replies: usize,
    /// How long the first clock update may wait until as many sources as
    /// selection wants have samples (stepping to the first one heard could
    /// step to a falseticker).
    pub startup_hold: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            precision: -20,
            local_stratum: None,
            discipline: DisciplineConfig::default(),
            select: SelectConfig::default(),
            initial_frequency_ppm: None,
            max_pending_replies: 1024,
            startup_hold: Duration::from_secs(60),
        }
    }
}

/// The system's view of its synchronisation, for status output.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemStatus {
    /// Whether the node serves synchronised time.
    pub synchronized: bool,
    /// What the node tells its clients.
    pub server: ServerState,
    /// The selected source, if any.
    pub system_peer: Option<(AssociationId, InstanceId, SocketAddr)>,
    /// Last combined offset, seconds (RFC 5905 sign: positive = local
    /// clock behind).
    pub offset: f64,
    /// System jitter, seconds.
    pub jitter: f64,
    /// Current frequency correction, ppm.
    pub frequency_ppm: f64,
    /// System poll exponent.
    pub poll: i8,
    /// When the clock was last updated (monotonic).
    pub last_update: Option<Instant>,
    /// How many times the clock was stepped.
    pub clock_steps: u64,
}

/// One association, for status output.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionStatus {
    /// Its id.
    pub id: AssociationId,
    /// Its instance.
    pub instance: InstanceId,
    /// The remote address.
    pub address: SocketAddr,
    /// The association mode.
    pub mode: AssociationMode,
    /// Its state.
    pub state: AssociationState,
    /// Whether it is the system peer.
    pub selected: bool,
    /// The server's stratum (16 when unknown).
    pub stratum: u8,
    /// The server's reference id.
    pub reference_id: ReferenceId,
    /// Reach register.
    pub reach: u8,
    /// Poll exponent.
    pub poll: i8,
    /// Filtered offset, seconds.
    pub offset: f64,
    /// Filtered delay, seconds.
    pub delay: f64,
    /// Peer dispersion, seconds.
    pub dispersion: f64,
    /// Peer jitter, seconds.
    pub jitter: f64,
    /// When the last valid reply arrived.
    pub last_rx: Option<Instant>,
    /// Broadcast/multicast clients: the calibrated delay (s) and when it
    /// was measured.
    pub calibrated: Option<(f64, Instant)>,
    /// Completed calibration volleys.
    pub calibrations: u32,
    /// The clock filter register, newest first (at most 8 samples), each
    /// with its dispersion aged to the time asked; sample times are on the
    /// caller's monotonic timebase, in seconds.
    pub filter: Vec<Sample>,
    /// The key its packets are signed with and must be authenticated
    /// with; `None` when it does not use authentication.
    pub key_id: Option<u32>,
    /// The remote's leap indicator, once heard.
    pub remote_leap: Option<Leap>,
    /// The remote's root delay, seconds (0 until heard).
    pub root_delay: f64,
    /// The remote's root dispersion, seconds (0 until heard).
    pub root_dispersion: f64,
    /// The remote's advertised poll exponent, once heard.
    pub remote_poll: Option<i8>,
    /// When it sends next; `None` when it sends nothing of its own
    /// (denied, or a broadcast client listening).
    pub next_poll: Option<Instant>,
    /// The poll floor a kiss-o'-death RATE imposed, if one did.
    pub kod_poll_floor: Option<i8>,
    /// During a calibration volley: requests sent and good replies so far.
    pub calibration_progress: Option<(u8, u8)>,
    /// Its part in the last source selection; `None` when it was not a
    /// candidate (not reachable, unsynchronised, a loop, no sample yet).
    pub selection: Option<SelectionRole>,
}

/// What the last source selection made of a candidate (ntpq's tally codes:
/// `*`, `+`, `-`, `x` and a blank for a rejected candidate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelectionRole {
    /// Not eligible: its root distance exceeds the limit.
    Rejected,
    /// Outside the majority intersection (or no majority was found).
    Falseticker,
    /// A truechimer dropped by clustering.
    Outlier,
    /// A survivor, combined into the system offset.
    Candidate,
    /// The system peer.
    SystemPeer,
}

impl SelectionRole {
    /// A stable name for status output.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            SelectionRole::Rejected => "rejected",
            SelectionRole::Falseticker => "falseticker",
            SelectionRole::Outlier => "outlier",
            SelectionRole::Candidate => "candidate",
            SelectionRole::SystemPeer => "system-peer",
        }
    }
}

struct PendingReply {
    meta: RecvMeta,
    header: [u8; HEADER_LEN],
    /// Answer with this kiss-o'-death instead of the time.
    kod: Option<KissCode>,
    /// How to authenticate the answer.
    mac: ReplyMac,
}

/// The MAC appended to an answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReplyMac {
    None,
    /// Sign with this key (the request's).
    Key(u32),
    /// A crypto-NAK: the request's MAC did not authenticate.
    CryptoNak,
}

struct System {
    peer: Option<AssociationId>,
    stratum: u8,
    leap: Leap,
    reference_id: ReferenceId,
    reference_time: NtpTimestamp,
    root_delay: f64,
    root_dispersion: f64,
    offset: f64,
    jitter: f64,
    last_update: Option<Instant>,
    /// Sample time of the last update passed to the discipline.
    last_sample_time: f64,
    clock_steps: u64,
}

struct Instance {
    name: String,
    counters: Counters,
    max_dynamic: usize,
    /// Reference ids of our own addresses in this instance (loop check).
    local_refids: HashSet<ReferenceId>,
    broadcast_client: Option<BroadcastClientConfig>,
}

impl Instance {
    fn new(name: &str) -> Self {
        Instance {
            name: name.to_owned(),
            counters: Counters::default(),
            max_dynamic: DEFAULT_MAX_DYNAMIC,
            local_refids: HashSet::new(),
            broadcast_client: None,
        }
    }

    fn learn_local(&mut self, ip: IpAddr) {
        if self.local_refids.len() < MAX_LOCAL_REFIDS && !ip.is_multicast() {
            self.local_refids.insert(ReferenceId::from_ip(ip));
        }
    }
}

struct BroadcastServer {
    config: BroadcastServerConfig,
    next_send: Instant,
    due: bool,
}

/// A whole NTP node, sans-IO. See the module docs for the call order.
pub struct Node {
    config: NodeConfig,
    instances: Vec<Instance>,
    broadcast_servers: Vec<BroadcastServer>,
    assocs: Vec<Association>,
    by_addr: HashMap<(InstanceId, SocketAddr), usize>,
    next_id: u32,
    replies: VecDeque<PendingReply>,
    events: VecDeque<Event>,
    discipline: Discipline,
    sys: System,
    /// Request cookies, the random low bits of symmetric transmit
    /// timestamps and poll jitter: a cryptographic generator, since a
    /// cookie an attacker can predict protects nothing.
    rng: Box<dyn CryptoRngCore + Send>,
    /// The most recent clock reading seen, for reference timestamps.
    last_clock: NtpTimestamp,
    /// When the node first saw time pass (the startup hold starts here).
    started: Option<Instant>,
    /// The server side's rules, which every [`Responder`] carries.
    policy: Policy,
    /// Counts changes of `policy` (see [`Node::policy_generation`]).
    policy_generation: u64,
    /// Symmetric keys for MACs.
    keys: KeyStore,
    /// Associations that sign with, and require, a key.
    assoc_keys: HashMap<AssociationId, u32>,
    /// What the last source selection made of each candidate.
    selection_roles: HashMap<AssociationId, SelectionRole>,
}

impl Node {
    /// A node with only the default instance. `rng` draws the request
    /// cookies (the off-path protection of every client exchange): seed it
    /// from the operating system (`getrandom`) in production; tests and the
    /// simulator pass a seeded ChaCha generator to stay deterministic.
    #[must_use]
    pub fn new(config: NodeConfig, rng: impl CryptoRng + RngCore + Send + 'static) -> Node {
        let mut discipline =
            Discipline::new(config.discipline.clone(), config.initial_frequency_ppm);
        let mut events = VecDeque::new();
        while let Some(c) = discipline.poll_command() {
            events.push_back(Event::Clock(c));
        }
        Node {
            rng: Box::new(rng),
            instances: vec![Instance::new("default")],
            broadcast_servers: Vec::new(),
            assocs: Vec::new(),
            by_addr: HashMap::new(),
            next_id: 1,
            replies: VecDeque::new(),
            events,
            discipline,
            sys: System {
                peer: None,
                stratum: MAX_STRATUM,
                leap: Leap::Unsynchronized,
                reference_id: ReferenceId::new([0; 4]),
                reference_time: NtpTimestamp::ZERO,
                root_delay: 0.0,
                root_dispersion: 0.0,
                offset: 0.0,
                jitter: 0.0,
                last_update: None,
                last_sample_time: f64::NEG_INFINITY,
                clock_steps: 0,
            },
            last_clock: NtpTimestamp::ZERO,
            started: None,
            policy: Policy::default(),
            policy_generation: 0,
            keys: KeyStore::new_empty(),
            assoc_keys: HashMap::new(),
            selection_roles: HashMap::new(),
            config,
        }
    }

    /// Adds a named instance and returns its id; adding a known name
    /// returns the existing id.
    pub fn add_instance(&mut self, name: &str) -> InstanceId {
        if let Some(i) = self.instances.iter().position(|inst| inst.name == name) {
            return InstanceId(u16::try_from(i).unwrap_or(u16::MAX));
        }
        self.instances.push(Instance::new(name));
        InstanceId(u16::try_from(self.instances.len() - 1).unwrap_or(u16::MAX))
    }

    /// The instances, by id, with their names and counters.
    pub fn instances(&self) -> impl Iterator<Item = (InstanceId, &str, &Counters)> {
        self.instances.iter().enumerate().map(|(i, inst)| {
            (
                InstanceId(u16::try_from(i).unwrap_or(u16::MAX)),
                inst.name.as_str(),
                &inst.counters,
            )
        })
    }

    /// Adds a client association; the first request goes out at `now`.
    /// Returns the existing id when one for the same instance and address
    /// exists.
    pub fn add_client(&mut self, config: ClientConfig, now: Instant) -> AssociationId {
        self.add_association(config, AssociationMode::Client, now)
    }

    /// Adds a symmetric active association with a peer. It starts with a
    /// client/server calibration volley, then sends mode 1.
    pub fn add_peer(&mut self, config: ClientConfig, now: Instant) -> AssociationId {
        self.add_association(config, AssociationMode::SymmetricActive, now)
    }

    fn add_association(
        &mut self,
        config: ClientConfig,
        mode: AssociationMode,
        now: Instant,
    ) -> AssociationId {
        let key = (config.instance, config.address);
        if let Some(&i) = self.by_addr.get(&key) {
            return self.assocs[i].id;
        }
        let id = self.next_association_id();
        self.insert(Association::new(id, config, mode, now));
        id
    }

    fn next_association_id(&mut self) -> AssociationId {
        let id = AssociationId(self.next_id);
        self.next_id += 1;
        id
    }

    fn insert(&mut self, mut a: Association) {
        a.set_system_poll(self.discipline.poll_exponent());
        self.by_addr
            .insert((a.config.instance, a.config.address), self.assocs.len());
        self.assocs.push(a);
    }

    fn remove(&mut self, idx: usize) {
        let a = self.assocs.remove(idx);
        self.assoc_keys.remove(&a.id);
        if self.sys.peer == Some(a.id) {
            self.sys.peer = None;
            self.events.push_back(Event::SystemPeer(None));
        }
        self.events.push_back(Event::Demobilized { id: a.id });
        self.by_addr = self
            .assocs
            .iter()
            .enumerate()
            .map(|(i, a)| ((a.config.instance, a.config.address), i))
            .collect();
    }

    /// The configured (client and symmetric active) associations, with
    /// their configuration.
    pub fn configured(
        &self,
    ) -> impl Iterator<Item = (AssociationId, AssociationMode, &ClientConfig)> {
        self.assocs
            .iter()
            .filter(|a| !a.mode.is_dynamic())
            .map(|a| (a.id, a.mode, &a.config))
    }

    /// Removes an association (a source dropped from the configuration).
    /// Returns whether it existed.
    pub fn remove_association(&mut self, id: AssociationId) -> bool {
        match self.assocs.iter().position(|a| a.id == id) {
            Some(i) => {
                self.remove(i);
                true
            }
            None => false,
        }
    }

    /// Changes a configured association's poll bounds and `iburst`,
    /// keeping its state (reach, filter, on-wire variables). The instance
    /// and address cannot change. Returns whether it existed.
    pub fn reconfigure(&mut self, id: AssociationId, config: &ClientConfig) -> bool {
        let sys_poll = self.discipline.poll_exponent();
        let Some(a) = self.assocs.iter_mut().find(|a| a.id == id) else {
            return false;
        };
        a.config.minpoll = config.minpoll;
        a.config.maxpoll = config.maxpoll.max(config.minpoll);
        a.config.iburst = config.iburst;
        a.set_system_poll(sys_poll);
        true
    }

    /// Adds a broadcast/multicast server; the first packet goes out at `now`
    /// (once the node is synchronised or has a local reference).
    pub fn add_broadcast_server(&mut self, config: BroadcastServerConfig, now: Instant) {
        self.broadcast_servers.push(BroadcastServer {
            config,
            next_send: now,
            due: false,
        });
    }

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

    /// Sets the symmetric keys. A request with a MAC from a trusted key is
    /// answered with a MAC from the same key (the answer is then as long
    /// as the request); a request whose MAC does not authenticate gets a
    /// crypto-NAK (counted as `bad-mac`).
    pub fn set_keys(&mut self, keys: KeyStore) {
        self.keys = keys;
    }

    /// Makes an association sign its packets with key `key_id` and accept
    /// only packets authenticated with that key (anything else is dropped
    /// as `bad-mac` or `unauthenticated`); `None` turns that off. Returns
    /// whether the association exists.
    pub fn set_association_key(&mut self, id: AssociationId, key_id: Option<u32>) -> bool {
        if !self.assocs.iter().any(|a| a.id == id) {
            return false;
        }
        match key_id {
            Some(k) => self.assoc_keys.insert(id, k),
            None => self.assoc_keys.remove(&id),
        };
        true
    }

    /// The key an association signs with and requires, if any.
    #[must_use]
    pub fn association_key(&self, id: AssociationId) -> Option<u32> {
        self.assoc_keys.get(&id).copied()
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

    /// The symmetric keys in use.
    #[must_use]
    pub fn keys(&self) -> &KeyStore {
        &self.keys
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

    /// Sets an instance's limit on dynamic (symmetric passive and
    /// broadcast/multicast client) associations.
    pub fn set_max_dynamic(&mut self, instance: InstanceId, max: usize) {
        if let Some(i) = self.instance_mut(instance) {
            i.max_dynamic = max;
        }
    }

    /// Declares our own addresses in an instance, for loop detection: a
    /// source whose reference id is one of them is synchronised to us and
    /// is never selected. Addresses datagrams arrive at are learnt too.
    pub fn set_local_addresses(&mut self, instance: InstanceId, addresses: &[IpAddr]) {
        if let Some(i) = self.instance_mut(instance) {
            for a in addresses {
                i.learn_local(*a);
            }
        }
    }

    /// Enables (or with `None` disables) the broadcast/multicast client of
    /// an instance: mode-5 packets arriving in it mobilise associations.
    pub fn set_broadcast_client(
        &mut self,
        instance: InstanceId,
        config: Option<BroadcastClientConfig>,
    ) {
        if let Some(i) = self.instance_mut(instance) {
            i.broadcast_client = config;
        }
    }

    fn instance_mut(&mut self, instance: InstanceId) -> Option<&mut Instance> {
        self.instances.get_mut(usize::from(instance.0))
    }

    fn counters(&mut self, instance: InstanceId) -> &mut Counters {
        let i = usize::from(instance.0);
        if i >= self.instances.len() {
            // Unknown ids are counted under the default instance.
            return &mut self.instances[0].counters;
        }
        &mut self.instances[i].counters
    }

    fn dynamic_count(&self, instance: InstanceId) -> usize {
        self.assocs
            .iter()
            .filter(|a| a.config.instance == instance && a.mode.is_dynamic())
            .count()
    }

    /// Handles one received datagram. Never panics on any input; every
    /// datagram that is not used is counted under a [`DropReason`].
    pub fn handle_datagram(&mut self, now: Instant, meta: &RecvMeta, data: &[u8]) {
        self.started.get_or_insert(now);
        self.counters(meta.instance).received += 1;
        self.last_clock = meta.rx_time;
        if let (Some(ip), Some(inst)) = (meta.dst_ip, self.instance_mut(meta.instance)) {
            inst.learn_local(ip);
        }
        if let Err(reason) = self.dispatch(now, meta, data) {
            self.counters(meta.instance).drop_packet(reason);
        }
    }

    fn dispatch(&mut self, now: Instant, meta: &RecvMeta, data: &[u8]) -> Result<(), DropReason> {
        if data
            .first()
            .is_some_and(|b| matches!(Mode::from(*b), Mode::Control | Mode::Private))
        {
            // strata has no network control protocol.
            return Err(DropReason::ControlMode);
        }
        let (pkt, _layout) = strata_wire::parse_datagram(data).map_err(wire_drop_reason)?;
        let existing = self.by_addr.get(&(meta.instance, meta.src)).copied();
        if pkt.mode != Mode::Client {
            let verdict = auth::verify(&self.keys, data);
            if let Some(idx) = existing {
                self.check_mac(idx, pkt.mode, verdict)?;
            }
            if existing.is_none() {
                return match pkt.mode {
                    Mode::SymmetricActive => self.mobilize_passive(now, meta, &pkt, data, verdict),
                    Mode::Broadcast => self.mobilize_broadcast(now, meta, &pkt, verdict),
                    Mode::Server | Mode::SymmetricPassive => Err(DropReason::NoAssociation),
                    _ => Err(DropReason::UnexpectedMode),
                };
            }
        }
        match pkt.mode {
            Mode::Client => {
                if !meta.listener {
                    return Err(DropReason::UnexpectedMode);
                }
                self.queue_reply(now, meta, data, true)
            }
            Mode::Server => {
                let idx = existing.ok_or(DropReason::NoAssociation)?;
                self.receive(now, idx, meta, &pkt)
            }
            Mode::SymmetricActive | Mode::SymmetricPassive => match existing {
                Some(idx)
                    if matches!(
                        self.assocs[idx].mode,
                        AssociationMode::SymmetricActive | AssociationMode::SymmetricPassive
                    ) =>
                {
                    self.receive(now, idx, meta, &pkt)
                }
                Some(_) => Err(DropReason::UnexpectedMode),
                None => Err(DropReason::NoAssociation),
            },
            Mode::Broadcast => match existing {
                Some(idx) if self.assocs[idx].mode.is_dynamic() => {
                    self.receive(now, idx, meta, &pkt)
                }
                Some(_) => Err(DropReason::UnexpectedMode),
                None => Err(DropReason::NoAssociation),
            },
            _ => Err(DropReason::UnexpectedMode),
        }
    }

    /// Queues the answer to a request: the time, a KoD RATE (over the
    /// rate limit), a KoD DENY (refused by the access rules with the `kod`
    /// deny policy; `client` requests only) or nothing.
    fn queue_reply(
        &mut self,
        now: Instant,
        meta: &RecvMeta,
        data: &[u8],
        client: bool,
    ) -> Result<(), DropReason> {
        // Unsigned requests to a listener that requires a key are dropped
        // before they cost a rate-limiter token.
        let mac = self.request_mac(meta, auth::verify(&self.keys, data))?;
        let admission = self.policy.admit(now, meta.instance, meta.src.ip(), client);
        let kod = match admission {
            Admission::Drop(reason) => return Err(reason),
            Admission::Answer => None,
            Admission::KissRate => Some(KissCode::Rate),
            Admission::KissDeny => Some(KissCode::Deny),
        };
        if self.replies.len() >= self.config.max_pending_replies {
            return Err(DropReason::Overload);
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(data.get(..HEADER_LEN).ok_or(DropReason::Malformed)?);
        self.replies.push_back(PendingReply {
            meta: *meta,
            header,
            kod,
            mac,
        });
        if mac == ReplyMac::CryptoNak {
            // Answered with a crypto-NAK, but not served.
            Err(DropReason::BadMac)
        } else if admission == Admission::KissDeny {
            // Refused all the same: counted, and answered with a KoD DENY.
            Err(DropReason::AccessDenied)
        } else {
            Ok(())
        }
    }

    /// Whether a packet for association `idx` carries the MAC it needs.
    /// A crypto-NAK (mode 4 or 2) goes on to the association, which counts
    /// it only when it answers our last packet.
    fn check_mac(&self, idx: usize, mode: Mode, verdict: Verdict) -> Result<(), DropReason> {
        let Some(&key) = self.assoc_keys.get(&self.assocs[idx].id) else {
            return Ok(());
        };
        match verdict {
            Verdict::Ok { key_id } if key_id == key => Ok(()),
            Verdict::CryptoNak if matches!(mode, Mode::Server | Mode::SymmetricPassive) => Ok(()),
            Verdict::None => Err(DropReason::Unauthenticated),
            _ => Err(DropReason::BadMac),
        }
    }

    /// The MAC a request arriving on a listener must carry: `Err` when the
    /// listener requires a key and the request is unsigned; otherwise how
    /// to authenticate the answer.
    fn request_mac(&self, meta: &RecvMeta, verdict: Verdict) -> Result<ReplyMac, DropReason> {
        let required = self.policy.listener_key(meta.socket);
        match (verdict, required) {
            (Verdict::None, Some(_)) => Err(DropReason::Unauthenticated),
            (Verdict::None, None) => Ok(ReplyMac::None),
            // A client never sends a crypto-NAK.
            (Verdict::CryptoNak, _) => Err(DropReason::BadMac),
            (Verdict::Ok { key_id }, Some(k)) if key_id != k => Ok(ReplyMac::CryptoNak),
            (Verdict::Ok { key_id }, _) => Ok(ReplyMac::Key(key_id)),
            (Verdict::Bad(_), _) => Ok(ReplyMac::CryptoNak),
        }
    }

    /// A mode-1 packet from an unknown address: a passive association when
    /// the source may peer (or authenticates with a trusted key), a
    /// stateless mode-2 answer when it may only get time, nothing
    /// otherwise.
    fn mobilize_passive(
        &mut self,
        now: Instant,
        meta: &RecvMeta,
        pkt: &NtpRepr,
        data: &[u8],
        verdict: Verdict,
    ) -> Result<(), DropReason> {
        let level = self.policy.level(meta.instance, meta.src.ip());
        if meta.listener {
            if let Some(required) = self.policy.listener_key(meta.socket) {
                match verdict {
                    Verdict::Ok { key_id } if key_id == required => {}
                    Verdict::None => return Err(DropReason::Unauthenticated),
                    _ => return Err(DropReason::BadMac),
                }
            }
        }
        let key = match verdict {
            Verdict::Ok { key_id } => Some(key_id),
            _ => None,
        };
        if level != Some(AccessLevel::Peer) && key.is_none() {
            return if meta.listener {
                self.queue_reply(now, meta, data, false)
            } else {
                Err(DropReason::AccessDenied)
            };
        }
        let max = self
            .instances
            .get(usize::from(meta.instance.0))
            .map_or(DEFAULT_MAX_DYNAMIC, |i| i.max_dynamic);
        if self.dynamic_count(meta.instance) >= max {
            return Err(DropReason::SessionLimit);
        }
        let id = self.next_association_id();
        let poll = pkt.poll.clamp(-4, 17);
        let config = ClientConfig {
            instance: meta.instance,
            address: meta.src,
            minpoll: poll.min(6),
            maxpoll: poll.max(10),
            iburst: false,
        };
        if let Some(k) = key {
            self.assoc_keys.insert(id, k);
        }
        let mut a = Association::new(id, config, AssociationMode::SymmetricPassive, now);
        // Answer at once, then poll on our own timer.
        a.pending_send = true;
        a.next_poll = now + poll_interval(poll);
        self.insert(a);
        self.events.push_back(Event::Mobilized {
            id,
            mode: AssociationMode::SymmetricPassive,
        });
        let idx = self.assocs.len() - 1;
        self.receive(now, idx, meta, pkt)
    }

    /// A mode-5 packet from an unknown server.
    fn mobilize_broadcast(
        &mut self,
        now: Instant,
        meta: &RecvMeta,
        pkt: &NtpRepr,
        verdict: Verdict,
    ) -> Result<(), DropReason> {
        let Some(inst) = self.instances.get(usize::from(meta.instance.0)) else {
            return Err(DropReason::UnexpectedMode);
        };
        let Some(settings) = inst.broadcast_client.clone() else {
            return Err(DropReason::UnexpectedMode);
        };
        let key = match verdict {
            Verdict::Ok { key_id } if settings.key.is_none_or(|k| k == key_id) => Some(key_id),
            Verdict::None => None,
            // Unknown, untrusted or another key, a failed digest, a crypto-NAK.
            _ => return Err(DropReason::BadMac),
        };
        if !settings.allow_unauthenticated && key.is_none() {
            return Err(DropReason::Unauthenticated);
        }
        if pkt.leap == Leap::Unsynchronized || pkt.stratum == 0 || pkt.stratum >= MAX_STRATUM {
            return Err(DropReason::Unsynchronized);
        }
        if self
            .policy
            .level(meta.instance, meta.src.ip())
            .is_none_or(|l| l < AccessLevel::Server)
        {
            return Err(DropReason::AccessDenied);
        }
        if self.dynamic_count(meta.instance) >= inst.max_dynamic {
            return Err(DropReason::SessionLimit);
        }
        let multicast = meta.dst_ip.is_some_and(|ip| ip.is_multicast());
        let id = self.next_association_id();
        let poll = pkt.poll.clamp(-4, 17);
        let config = ClientConfig {
            instance: meta.instance,
            address: meta.src,
            minpoll: poll,
            maxpoll: poll,
            iburst: false,
        };
        if let Some(k) = key {
            self.assoc_keys.insert(id, k);
        }
        let a = Association::new_broadcast(id, config, multicast, settings, now);
        let mode = a.mode;
        self.insert(a);
        self.events.push_back(Event::Mobilized { id, mode });
        let idx = self.assocs.len() - 1;
        self.receive(now, idx, meta, pkt)
    }

    fn receive(
        &mut self,
        now: Instant,
        idx: usize,
        meta: &RecvMeta,
        pkt: &NtpRepr,
    ) -> Result<(), DropReason> {
        let precision = self.config.precision;
        let authenticated = self.assoc_keys.contains_key(&self.assocs[idx].id);
        let a = &mut self.assocs[idx];
        let result = match pkt.mode {
            Mode::Server => a.receive_reply(now, meta.rx_time, pkt, precision),
            Mode::SymmetricActive | Mode::SymmetricPassive => {
                a.receive_symmetric(now, meta.rx_time, pkt, precision)
            }
            Mode::Broadcast => {
                a.receive_broadcast(now, meta.rx_time, pkt, precision, authenticated)
            }
            _ => Err(DropReason::UnexpectedMode),
        };
        let id = a.id;
        if a.state != AssociationState::Reachable || result.is_err() {
            // State changes are reported below; errors still may have
            // changed reach (a valid but unusable packet).
        }
        if meta.listener && matches!(pkt.mode, Mode::SymmetricActive | Mode::SymmetricPassive) {
            // Also after an unusable packet (the peer's first, unsynchronised
            // or crossing ours): our answer must reach it all the same.
            a.via = Some(Via {
                socket: meta.socket,
                src_ip: meta.dst_ip,
                ifindex: meta.ifindex,
            });
        }
        let (received, changed) = result?;
        if let Some(state) = changed {
            self.events.push_back(Event::Association { id, state });
        }
        if let Received::Sample(Some(_)) = received {
            self.clock_select(now);
        }
        Ok(())
    }

    /// The RFC 5905 system process: select, cluster and combine the
    /// sources, then pass a new offset to the discipline.
    fn clock_select(&mut self, now: Instant) {
        let now_s = now.as_secs_f64();
        let candidates: Vec<Candidate> = self
            .assocs
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let out = a.output()?;
                let peer = a.peer?;
                if a.reach == 0
                    || peer.stratum >= MAX_STRATUM
                    || peer.leap == Leap::Unsynchronized
                    || self.is_loop(a.config.instance, peer.reference_id)
                {
                    return None;
                }
                Some(Candidate {
                    id: i,
                    offset: out.offset,
                    delay: peer.root_delay + out.delay,
                    dispersion: peer.root_dispersion + a.dispersion_at(now_s),
                    jitter: out.jitter,
                    stratum: peer.stratum,
                })
            })
            .collect();
        // Eligible sources with a few samples in their filter: before that
        // their intervals are too wide for selection to tell a falseticker.
        let ready = candidates
            .iter()
            .filter(|c| {
                is_eligible(c, &self.config.select)
                    && self.assocs[c.id].samples(now_s) >= STARTUP_SAMPLES
            })
            .count();
        if self.sys.last_update.is_none() && !self.startup_quorum(now, ready) {
            return; // the first clock update waits for enough sources
        }
        let sel = select(&candidates, &self.config.select);
        self.note_selection(&candidates, sel.as_ref());
        let Some(sel) = sel else {
            if self.sys.peer.take().is_some() {
                self.events.push_back(Event::SystemPeer(None));
            }
            return;
        };
        let a = &self.assocs[sel.system_peer];
        let (Some(out), Some(peer)) = (a.output(), a.peer) else {
            return;
        };
        let new_peer = Some(a.id);
        if self.sys.peer != new_peer {
            self.sys.peer = new_peer;
            self.events.push_back(Event::SystemPeer(new_peer));
        }
        if out.time <= self.sys.last_sample_time {
            return; // nothing new from the system peer
        }
        self.sys.last_sample_time = out.time;
        let reference_id = match a.config.address.ip() {
            IpAddr::V4(v4) => ReferenceId::from_ipv4(v4),
            IpAddr::V6(v6) => ReferenceId::from_ipv6(&v6),
        };
        let (root_delay, root_disp) = (
            peer.root_delay + out.delay,
            peer.root_dispersion
                + a.dispersion_at(now_s)
                + sel.jitter
                + PHI * (now_s - out.time).max(0.0)
                + sel.offset.abs(),
        );
        match self
            .discipline
            .update_sampled(now_s, out.time, sel.offset, sel.jitter)
        {
            Outcome::Ignored => {}
            Outcome::Panic { offset } => self.events.push_back(Event::Panic { offset }),
            Outcome::Stepped { .. } => {
                self.sys.clock_steps += 1;
                for a in &mut self.assocs {
                    a.clear_after_step();
                }
                self.sys.leap = Leap::Unsynchronized;
                self.sys.stratum = MAX_STRATUM;
                self.sys.last_sample_time = f64::NEG_INFINITY;
                self.sys.last_update = Some(now);
            }
            Outcome::Slewed => {
                self.sys.leap = if peer.leap == Leap::Unsynchronized {
                    Leap::NoWarning
                } else {
                    peer.leap
                };
                self.sys.stratum = peer.stratum.saturating_add(1).min(MAX_STRATUM);
                self.sys.reference_id = reference_id;
                self.sys.reference_time = self.last_clock;
                self.sys.root_delay = root_delay;
                self.sys.root_dispersion = root_disp.min(MAXDISP);
                self.sys.offset = sel.offset;
                self.sys.jitter = sel.jitter;
                self.sys.last_update = Some(now);
            }
        }
        self.drain_discipline();
    }

    /// Records what a selection made of each candidate, for status output.
    fn note_selection(&mut self, candidates: &[Candidate], sel: Option<&Selection>) {
        self.selection_roles.clear();
        for c in candidates {
            let role = if !is_eligible(c, &self.config.select) {
                SelectionRole::Rejected
            } else if let Some(sel) = sel {
                if sel.system_peer == c.id {
                    SelectionRole::SystemPeer
                } else if sel.survivors.contains(&c.id) {
                    SelectionRole::Candidate
                } else if sel.truechimers.contains(&c.id) {
                    SelectionRole::Outlier
                } else {
                    SelectionRole::Falseticker
                }
            } else {
                // Eligible, yet no majority agrees with it.
                SelectionRole::Falseticker
            };
            self.selection_roles.insert(self.assocs[c.id].id, role);
        }
    }

    /// Before the first clock update (which may step the clock), wait
    /// until as many sources as selection wants (at most the synchronised
    /// ones heard from) are eligible with [`STARTUP_SAMPLES`] samples each, or until the startup
    /// hold has passed: stepping to the first source heard could step to a
    /// falseticker.
    fn startup_quorum(&mut self, now: Instant, ready: usize) -> bool {
        let started = *self.started.get_or_insert(now);
        // Sources heard from that say they are synchronised: the ones that
        // can become candidates (an unsynchronised peer cannot).
        let usable = self
            .assocs
            .iter()
            .filter(|a| {
                a.reach != 0
                    && a.peer
                        .is_some_and(|p| p.stratum < MAX_STRATUM && p.leap != Leap::Unsynchronized)
            })
            .count();
        let needed = usable.min(self.config.select.min_survivors).max(1);
        ready >= needed || now.saturating_duration_since(started) >= self.config.startup_hold
    }

    /// Whether a source with this reference id is synchronised to us.
    fn is_loop(&self, instance: InstanceId, refid: ReferenceId) -> bool {
        self.instances
            .get(usize::from(instance.0))
            .is_some_and(|i| i.local_refids.contains(&refid))
    }

    fn drain_discipline(&mut self) {
        while let Some(c) = self.discipline.poll_command() {
            self.events.push_back(Event::Clock(c));
        }
        let sys_poll = self.discipline.poll_exponent();
        for a in &mut self.assocs {
            a.set_system_poll(sys_poll);
        }
    }

    /// Handles expired deadlines. Call when `now` reaches
    /// [`Node::poll_timeout`]; calling early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.started.get_or_insert(now);
        if let Some(t) = self.discipline.next_tick() {
            // Compare on the Instant timebase poll_timeout reported, so a
            // deadline rounded to nanoseconds is never just short of due.
            if now >= Instant::from_secs_f64(t) {
                self.discipline.tick(now.as_secs_f64().max(t));
                self.drain_discipline();
            }
        }
        let mut i = 0;
        while i < self.assocs.len() {
            // Symmetric associations take poll jitter (they also recover
            // from crossing packets, which jitter makes occasional rather
            // than never or always). Randomness is drawn only for the polls
            // that use it, so other modes keep their cookie sequence.
            let jitter = if self.assocs[i].symmetric_poll_due(now) {
                self.rng.next_u32().to_le_bytes()[0]
            } else {
                0
            };
            let a = &mut self.assocs[i];
            match a.on_poll(now, jitter) {
                Polled::Nothing => {}
                Polled::State(state) => {
                    self.events
                        .push_back(Event::Association { id: a.id, state });
                }
                Polled::Demobilize => {
                    self.remove(i);
                    continue;
                }
            }
            i += 1;
        }
        for b in &mut self.broadcast_servers {
            if now >= b.next_send {
                b.due = true;
                // A steady cadence: never early, never drifting.
                let interval = poll_interval(b.config.poll);
                while b.next_send <= now {
                    b.next_send = b.next_send + interval;
                }
            }
        }
    }

    /// The next deadline at which [`Node::handle_timeout`] must be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let polls = self
            .assocs
            .iter()
            .filter(|a| a.state != AssociationState::Denied)
            .map(|a| a.next_poll);
        let tick = self.discipline.next_tick().map(Instant::from_secs_f64);
        let sends = self.broadcast_servers.iter().map(|b| b.next_send);
        polls.chain(tick).chain(sends).min()
    }

    /// The next datagram to send, written to the front of `buf` (at least
    /// 48 bytes). `clock_now` is the disciplined clock read right before
    /// this call; it becomes the transmit timestamp.
    #[must_use]
    pub fn poll_transmit(&mut self, clock_now: NtpTimestamp, buf: &mut [u8]) -> Option<Transmit> {
        self.last_clock = clock_now;
        while let Some(r) = self.replies.pop_front() {
            let state = self.server_state(clock_now);
            let result = match (r.kod, r.mac) {
                (Some(code), _) => kiss_of_death(&r.header, code, self.config.precision, buf),
                (None, ReplyMac::CryptoNak) => crypto_nak(&r.header, buf),
                (None, ReplyMac::None) => {
                    respond(&r.header, r.meta.rx_time, clock_now, &state, buf)
                }
                (None, ReplyMac::Key(key_id)) => {
                    let mut plain = [0u8; HEADER_LEN];
                    respond(&r.header, r.meta.rx_time, clock_now, &state, &mut plain).and_then(
                        |n| {
                            auth::sign(&self.keys, key_id, &plain[..n], buf)
                                .map_err(|_| DropReason::BadMac)
                        },
                    )
                }
            };
            match result {
                Ok(len) => {
                    let counters = self.counters(r.meta.instance);
                    counters.sent += 1;
                    if r.kod.is_some() {
                        counters.kod_sent += 1;
                    }
                    return Some(Transmit {
                        instance: r.meta.instance,
                        route: Route::Socket(r.meta.socket),
                        dst: r.meta.src,
                        src_ip: r.meta.dst_ip,
                        ifindex: r.meta.ifindex,
                        len,
                    });
                }
                Err(reason) => self.counters(r.meta.instance).drop_packet(reason),
            }
        }
        let state = self.server_state(clock_now);
        while let Some(b) = self.broadcast_servers.iter_mut().find(|b| b.due) {
            b.due = false;
            let config = b.config.clone();
            // Fails closed: a packet that cannot be signed (a key missing
            // from the store) is not sent.
            let packet = state
                .is_synchronized()
                .then(|| broadcast_packet(&state, config.poll, clock_now, buf))
                .flatten()
                .and_then(|len| match config.key {
                    None => Some(len),
                    Some(key) => {
                        let mut plain = [0u8; HEADER_LEN];
                        plain.copy_from_slice(buf.get(..HEADER_LEN)?);
                        auth::sign(&self.keys, key, plain.get(..len)?, buf).ok()
                    }
                });
            if let Some(len) = packet {
                self.counters(config.instance).sent += 1;
                return Some(Transmit {
                    instance: config.instance,
                    route: config.socket.map_or(Route::Broadcast, Route::Socket),
                    dst: config.destination,
                    src_ip: None,
                    ifindex: config.ifindex,
                    len,
                });
            }
        }
        let i = self.assocs.iter().position(|a| a.pending_send)?;
        let a = &mut self.assocs[i];
        let mut len = a.build_packet(clock_now, &state, &mut *self.rng, buf)?;
        let (instance, dst, via) = (a.config.instance, a.config.address, a.via);
        let route = match via {
            Some(v) => Route::Socket(v.socket),
            // Symmetric packets leave from a listener (port 123), also
            // before the peer's first packet has told us which one.
            None if matches!(
                buf.first().map(|b| Mode::from(*b)),
                Some(Mode::SymmetricActive | Mode::SymmetricPassive)
            ) =>
            {
                Route::Listener
            }
            None => Route::Client,
        };
        if let Some(&key) = self.assoc_keys.get(&a.id) {
            // Fails closed: a packet that cannot be signed is not sent.
            let mut plain = [0u8; HEADER_LEN];
            plain.copy_from_slice(buf.get(..HEADER_LEN)?);
            len = auth::sign(&self.keys, key, plain.get(..len)?, buf).ok()?;
        }
        self.counters(instance).sent += 1;
        Some(Transmit {
            instance,
            route,
            dst,
            src_ip: via.and_then(|v| v.src_ip),
            ifindex: via.and_then(|v| v.ifindex),
            len,
        })
    }

    /// Whether anything waits in [`Node::poll_transmit`].
    #[must_use]
    pub fn has_transmit(&self) -> bool {
        !self.replies.is_empty()
            || self.broadcast_servers.iter().any(|b| b.due)
            || self.assocs.iter().any(|a| a.pending_send)
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// What the node tells clients now; `clock_now` supplies the reference
    /// time of a local reference.
    #[must_use]
    pub fn server_state(&self, clock_now: NtpTimestamp) -> ServerState {
        let precision = self.config.precision;
        if self.sys.peer.is_some() && self.sys.stratum < MAX_STRATUM {
            return ServerState {
                leap: self.sys.leap,
                stratum: self.sys.stratum,
                precision,
                root_delay: NtpShort::from_seconds(self.sys.root_delay),
                root_dispersion: NtpShort::from_seconds(self.sys.root_dispersion),
                reference_id: self.sys.reference_id,
                reference_time: self.sys.reference_time,
            };
        }
        match self.config.local_stratum {
            Some(stratum) => ServerState {
                leap: Leap::NoWarning,
                stratum,
                precision,
                root_delay: NtpShort::ZERO,
                root_dispersion: NtpShort::ZERO,
                reference_id: ReferenceId::new(*b"LOCL"),
                reference_time: clock_now,
            },
            None => ServerState::unsynchronized(precision),
        }
    }

    /// Whether [`Node::server_state`] serves the local reference, whose
    /// reference time is the clock reading of the answer itself (a driver
    /// holding a snapshot of the state sets it to each transmit time).
    #[must_use]
    pub fn reference_follows_clock(&self) -> bool {
        let synced_to_peer = self.sys.peer.is_some() && self.sys.stratum < MAX_STRATUM;
        !synced_to_peer && self.config.local_stratum.is_some()
    }

    /// The system status.
    #[must_use]
    pub fn status(&self) -> SystemStatus {
        let server = self.server_state(self.last_clock);
        let system_peer = self.sys.peer.and_then(|id| {
            self.assocs
                .iter()
                .find(|a| a.id == id)
                .map(|a| (id, a.config.instance, a.config.address))
        });
        SystemStatus {
            synchronized: server.is_synchronized(),
            server,
            system_peer,
            offset: self.sys.offset,
            jitter: self.sys.jitter,
            frequency_ppm: self.discipline.frequency_ppm(),
            poll: self.discipline.poll_exponent(),
            last_update: self.sys.last_update,
            clock_steps: self.sys.clock_steps,
        }
    }

    /// Every association's status.
    pub fn sessions(&self, now: Instant) -> impl Iterator<Item = SessionStatus> + '_ {
        let now_s = now.as_secs_f64();
        self.assocs.iter().map(move |a| {
            let out = a.output();
            SessionStatus {
                id: a.id,
                instance: a.config.instance,
                address: a.config.address,
                mode: a.mode,
                state: a.state,
                selected: self.sys.peer == Some(a.id),
                stratum: a.peer.map_or(MAX_STRATUM, |p| p.stratum),
                reference_id: a.peer.map_or(ReferenceId::new([0; 4]), |p| p.reference_id),
                reach: a.reach,
                poll: a.poll,
                offset: out.map_or(0.0, |o| o.offset),
                delay: out.map_or(0.0, |o| o.delay),
                dispersion: if out.is_some() {
                    a.dispersion_at(now_s)
                } else {
                    MAXDISP
                },
                jitter: out.map_or(0.0, |o| o.jitter),
                last_rx: a.last_rx,
                calibrated: a.calibrated(),
                calibrations: a.calibrations,
                filter: a.filter.register(now_s).collect(),
                key_id: self.assoc_keys.get(&a.id).copied(),
                remote_leap: a.peer.map(|p| p.leap),
                root_delay: a.peer.map_or(0.0, |p| p.root_delay),
                root_dispersion: a.peer.map_or(0.0, |p| p.root_dispersion),
                remote_poll: a.remote_poll(),
                next_poll: a.next_send(),
                kod_poll_floor: a.kod_poll_floor(),
                calibration_progress: a.calibration_progress(),
                selection: self.selection_roles.get(&a.id).copied(),
            }
        })
    }
}

/// Writes a crypto-NAK answer to a client request: a server header with
/// stratum 0 and the request's transmit timestamp as origin, then a 4-byte
/// MAC of key id 0 (RFC 5905).
fn crypto_nak(request: &[u8], buf: &mut [u8]) -> Result<usize, DropReason> {
    let n = kiss_of_death(request, KissCode::Cryp, 0, buf)?;
    let mac = buf.get_mut(n..n + 4).ok_or(DropReason::Malformed)?;
    mac.fill(0);
    Ok(n + 4)
}

/// Writes a mode-5 packet announcing `state` with `clock_now` as its
/// transmit timestamp.
fn broadcast_packet(
    state: &ServerState,
    poll: i8,
    clock_now: NtpTimestamp,
    buf: &mut [u8],
) -> Option<usize> {
    let out = buf.get_mut(..HEADER_LEN)?;
    let repr = NtpRepr {
        leap: state.leap,
        version: 4,
        mode: Mode::Broadcast,
        stratum: state.stratum,
        poll,
        precision: state.precision,
        root_delay: state.root_delay,
        root_dispersion: state.root_dispersion,
        reference_id: state.reference_id,
        reference_timestamp: state.reference_time,
        origin_timestamp: NtpTimestamp::ZERO,
        receive_timestamp: NtpTimestamp::ZERO,
        transmit_timestamp: clock_now,
    };
    repr.emit(&mut NtpPacket::new_unchecked(out));
    Some(HEADER_LEN)
}
