//! The node: one NTP daemon's associations, instances and timers, driven
//! sans-IO — its inputs, outputs and configuration. The rest of it lives
//! beside this file: `dispatch` (received datagrams, mobilisation),
//! `system` (selection, combining, discipline), `broadcast` (the mode-5
//! server), `responder` (the server policy and its snapshot) and `status`.
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

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use rand_core::{CryptoRng, CryptoRngCore, RngCore};
use strata_clock::discipline::{ClockCommand, Discipline, DisciplineConfig};
use strata_clock::select::SelectConfig;
use strata_wire::{NtpTimestamp, ReferenceId};

use crate::assoc::{
    Association, AssociationId, AssociationMode, AssociationState, BroadcastClientConfig,
    Calibrate, ClientConfig, Polled,
};
use crate::auth::{self, KeyStore};
use crate::broadcast::BroadcastServer;
use crate::counters::{Counters, DropReason};
use crate::dispatch::PendingReply;
use crate::responder::Policy;
use crate::system::System;
use crate::time::Instant;

pub use crate::datagram::{RecvMeta, Route, Transmit};
pub use crate::status::{RefusedServer, MAX_REFUSED_SERVERS};

/// Default `max-dynamic-sessions` of an instance.
pub const DEFAULT_MAX_DYNAMIC: usize = 100;

/// Default limit on dynamic associations of all instances together.
pub const DEFAULT_MAX_DYNAMIC_TOTAL: usize = 1000;
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
    /// The broadcast/multicast client of an instance refused a mode-5
    /// server for the first time: unsigned while the instance requires a
    /// key, or signed with a key it does not accept. Once per server (see
    /// [`Node::refused_servers`]).
    Refused {
        /// The instance.
        instance: InstanceId,
        /// The server.
        address: SocketAddr,
        /// Why: [`DropReason::Unauthenticated`] or [`DropReason::BadMac`].
        reason: DropReason,
    },
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
    /// Requests waiting for an answer beyond this are dropped as overload.
    pub max_pending_replies: usize,
    /// How long the first clock update may wait until as many sources as
    /// selection wants have samples (stepping to the first one heard could
    /// step to a falseticker).
    pub startup_hold: Duration,
    /// The frequency correction to start from (a drift file), ppm.
    pub initial_frequency_ppm: Option<f64>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            precision: -20,
            local_stratum: None,
            discipline: DisciplineConfig::default(),
            select: SelectConfig::default(),
            max_pending_replies: 1024,
            startup_hold: Duration::from_secs(60),
            initial_frequency_ppm: None,
        }
    }
}

pub(crate) struct Instance {
    name: String,
    counters: Counters,
    pub(crate) max_dynamic: usize,
    /// Reference ids of our own addresses in this instance (loop check).
    pub(crate) local_refids: HashSet<ReferenceId>,
    pub(crate) broadcast_client: Option<BroadcastClientConfig>,
    /// Mode-5 servers the broadcast client refuses, by address.
    pub(crate) refused: HashMap<SocketAddr, RefusedServer>,
}

impl Instance {
    fn new(name: &str) -> Self {
        Instance {
            name: name.to_owned(),
            counters: Counters::default(),
            max_dynamic: DEFAULT_MAX_DYNAMIC,
            local_refids: HashSet::new(),
            broadcast_client: None,
            refused: HashMap::new(),
        }
    }

    pub(crate) fn learn_local(&mut self, ip: IpAddr) {
        if self.local_refids.len() < MAX_LOCAL_REFIDS && !ip.is_multicast() {
            self.local_refids.insert(ReferenceId::from_ip(ip));
        }
    }
}

/// A whole NTP node, sans-IO. See the module docs for the call order.
pub struct Node {
    pub(crate) config: NodeConfig,
    pub(crate) instances: Vec<Instance>,
    pub(crate) broadcast_servers: Vec<BroadcastServer>,
    pub(crate) assocs: Vec<Association>,
    /// Demultiplexing: the association of each `(instance, remote
    /// address)`, an index into `assocs`.
    pub(crate) by_addr: HashMap<(InstanceId, SocketAddr), usize>,
    next_id: u32,
    pub(crate) replies: VecDeque<PendingReply>,
    /// Control (mode 6) answer fragments waiting to be sent.
    pub(crate) control_replies: VecDeque<crate::control::ControlReply>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) discipline: Discipline,
    pub(crate) sys: System,
    /// Request cookies, the random low bits of symmetric transmit
    /// timestamps and poll jitter: a cryptographic generator, since a
    /// cookie an attacker can predict protects nothing.
    rng: Box<dyn CryptoRngCore + Send>,
    /// The most recent clock reading seen, for reference timestamps.
    pub(crate) last_clock: NtpTimestamp,
    /// When the node first saw time pass (the startup hold starts here).
    pub(crate) started: Option<Instant>,
    /// The server side's rules, which every [`crate::Responder`] carries.
    pub(crate) policy: Policy,
    /// Counts changes of `policy` (see [`Node::policy_generation`]).
    pub(crate) policy_generation: u64,
    /// Symmetric keys for MACs.
    pub(crate) keys: KeyStore,
    /// The limit on dynamic associations of all instances together.
    pub(crate) max_dynamic_total: usize,
}

impl Node {
    /// A node with only the default instance. `rng` draws the request
    /// cookies (the off-path protection of every client exchange): seed it
    /// from the operating system (`getrandom`) in production; tests and the
    /// simulator pass a seeded ChaCha generator to stay deterministic
    /// (see the crate docs: a generator that is not cryptographic does not
    /// compile).
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
            control_replies: VecDeque::new(),
            events,
            discipline,
            sys: System::new(),
            last_clock: NtpTimestamp::ZERO,
            started: None,
            policy: Policy::default(),
            policy_generation: 0,
            keys: KeyStore::new_empty(),
            max_dynamic_total: DEFAULT_MAX_DYNAMIC_TOTAL,
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
    /// client/server calibration volley, then sends mode 1; its
    /// [`Calibrate`] policy is [`Calibrate::Required`] until
    /// [`Node::set_calibrate`] changes it.
    pub fn add_peer(&mut self, config: ClientConfig, now: Instant) -> AssociationId {
        self.add_association(config, AssociationMode::SymmetricActive, now)
    }

    /// Sets the calibration policy of a symmetric active association;
    /// `false` when `id` is not one.
    pub fn set_calibrate(&mut self, id: AssociationId, calibrate: Calibrate) -> bool {
        self.assocs
            .iter_mut()
            .find(|a| a.id == id)
            .is_some_and(|a| a.set_calibrate(calibrate))
    }

    /// The calibration policy of a symmetric active association.
    #[must_use]
    pub fn calibrate(&self, id: AssociationId) -> Option<Calibrate> {
        self.assocs.iter().find(|a| a.id == id)?.calibrate()
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

    pub(crate) fn next_association_id(&mut self) -> AssociationId {
        let id = AssociationId(self.next_id);
        self.next_id += 1;
        id
    }

    pub(crate) fn insert(&mut self, mut a: Association) {
        a.set_system_poll(self.discipline.poll_exponent());
        self.by_addr
            .insert((a.config.instance, a.config.address), self.assocs.len());
        self.assocs.push(a);
    }

    fn remove(&mut self, idx: usize) {
        let a = self.assocs.remove(idx);
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
            .filter(|a| !a.mode().is_dynamic())
            .map(|a| (a.id, a.mode(), &a.config))
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
        let Some(a) = self.assocs.iter_mut().find(|a| a.id == id) else {
            return false;
        };
        a.key = key_id;
        true
    }

    /// The key an association signs with and requires, if any.
    #[must_use]
    pub fn association_key(&self, id: AssociationId) -> Option<u32> {
        self.assocs.iter().find(|a| a.id == id)?.key
    }

    /// The symmetric keys in use.
    #[must_use]
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Sets an instance's limit on dynamic (symmetric passive and
    /// broadcast/multicast client) associations.
    pub fn set_max_dynamic(&mut self, instance: InstanceId, max: usize) {
        if let Some(i) = self.instance_mut(instance) {
            i.max_dynamic = max;
        }
    }

    /// Sets the limit on dynamic associations of all instances together
    /// (default [`DEFAULT_MAX_DYNAMIC_TOTAL`]); existing ones stay, new
    /// ones beyond it are refused (`session-limit`).
    pub fn set_max_dynamic_total(&mut self, max: usize) {
        self.max_dynamic_total = max;
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
            if i.broadcast_client != config {
                i.refused.clear();
            }
            i.broadcast_client = config;
        }
    }

    /// Notes a refused mode-5 packet; the first from a server raises
    /// [`Event::Refused`].
    pub(crate) fn note_refused(&mut self, now: Instant, meta: &RecvMeta, reason: DropReason) {
        let Some(inst) = self.instances.get_mut(usize::from(meta.instance.0)) else {
            return;
        };
        if let Some(r) = inst.refused.get_mut(&meta.src) {
            r.packets += 1;
            r.last = now;
            r.reason = reason;
            return;
        }
        if inst.refused.len() >= MAX_REFUSED_SERVERS {
            return;
        }
        let refused = RefusedServer {
            instance: meta.instance,
            address: meta.src,
            multicast: meta.dst_ip.is_some_and(|ip| ip.is_multicast()),
            reason,
            packets: 1,
            last: now,
        };
        inst.refused.insert(meta.src, refused);
        self.events.push_back(Event::Refused {
            instance: meta.instance,
            address: meta.src,
            reason,
        });
    }

    pub(crate) fn instance_mut(&mut self, instance: InstanceId) -> Option<&mut Instance> {
        self.instances.get_mut(usize::from(instance.0))
    }

    pub(crate) fn counters(&mut self, instance: InstanceId) -> &mut Counters {
        let i = usize::from(instance.0);
        if i >= self.instances.len() {
            // Unknown ids are counted under the default instance.
            return &mut self.instances[0].counters;
        }
        &mut self.instances[i].counters
    }

    pub(crate) fn dynamic_count(&self, instance: InstanceId) -> usize {
        self.assocs
            .iter()
            .filter(|a| a.config.instance == instance && a.mode().is_dynamic())
            .count()
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
        self.broadcast_timers(now);
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
        if let Some(tx) = self.poll_reply(clock_now, buf) {
            return Some(tx);
        }
        if let Some(tx) = self.poll_control(buf) {
            return Some(tx);
        }
        let state = self.server_state(clock_now);
        if let Some(tx) = self.poll_broadcast(&state, clock_now, buf) {
            return Some(tx);
        }
        let i = self.assocs.iter().position(|a| a.pending_send)?;
        let a = &mut self.assocs[i];
        let (len, route) = a.build_packet(clock_now, &state, &mut *self.rng, buf)?;
        let (instance, dst, via) = (a.config.instance, a.config.address, a.via());
        // Fails closed: a packet that cannot be signed is not sent.
        let len = match a.key {
            Some(key) => auth::sign_in_place(&self.keys, key, len, buf)?,
            None => len,
        };
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
            || self.has_control()
            || self.broadcast_servers.iter().any(|b| b.due)
            || self.assocs.iter().any(|a| a.pending_send)
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
