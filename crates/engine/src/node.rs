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

use std::collections::{HashMap, VecDeque};

use core::net::{IpAddr, SocketAddr};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use strata_clock::discipline::{ClockCommand, Discipline, DisciplineConfig, Outcome};
use strata_clock::select::{select, Candidate, SelectConfig};
use strata_wire::{Leap, Mode, NtpShort, NtpTimestamp, ReferenceId, HEADER_LEN};

use crate::assoc::{
    Association, AssociationId, AssociationState, ClientConfig, Received, MAXDISP, PHI,
};
use crate::counters::{Counters, DropReason};
use crate::server::{respond, wire_drop_reason, ServerState, MAX_STRATUM};
use crate::time::Instant;

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

/// A datagram the driver must send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The instance to send in.
    pub instance: InstanceId,
    /// The socket to send from; `None` means the instance's client socket
    /// for the destination's address family.
    pub socket: Option<SocketId>,
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
    /// Seed for request cookies. Use a random seed in production.
    pub seed: u64,
    /// Requests waiting for an answer beyond this are dropped as overload.
    pub max_pending_replies: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            precision: -20,
            local_stratum: None,
            discipline: DisciplineConfig::default(),
            select: SelectConfig::default(),
            initial_frequency_ppm: None,
            seed: 0,
            max_pending_replies: 1024,
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
    /// The association mode, as named in status output ("client").
    pub mode: &'static str,
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
}

struct PendingReply {
    meta: RecvMeta,
    header: [u8; HEADER_LEN],
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

/// A whole NTP node, sans-IO. See the module docs for the call order.
pub struct Node {
    config: NodeConfig,
    instances: Vec<(String, Counters)>,
    assocs: Vec<Association>,
    by_addr: HashMap<(InstanceId, SocketAddr), usize>,
    next_id: u32,
    replies: VecDeque<PendingReply>,
    events: VecDeque<Event>,
    discipline: Discipline,
    sys: System,
    rng: SmallRng,
    /// The most recent clock reading seen, for reference timestamps.
    last_clock: NtpTimestamp,
}

impl Node {
    /// A node with only the default instance.
    #[must_use]
    pub fn new(config: NodeConfig) -> Node {
        let mut discipline =
            Discipline::new(config.discipline.clone(), config.initial_frequency_ppm);
        let mut events = VecDeque::new();
        while let Some(c) = discipline.poll_command() {
            events.push_back(Event::Clock(c));
        }
        Node {
            rng: SmallRng::seed_from_u64(config.seed),
            instances: vec![("default".to_owned(), Counters::default())],
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
            config,
        }
    }

    /// Adds a named instance and returns its id; adding a known name
    /// returns the existing id.
    pub fn add_instance(&mut self, name: &str) -> InstanceId {
        if let Some(i) = self.instances.iter().position(|(n, _)| n == name) {
            return InstanceId(u16::try_from(i).unwrap_or(u16::MAX));
        }
        self.instances.push((name.to_owned(), Counters::default()));
        InstanceId(u16::try_from(self.instances.len() - 1).unwrap_or(u16::MAX))
    }

    /// The instances, by id, with their names and counters.
    pub fn instances(&self) -> impl Iterator<Item = (InstanceId, &str, &Counters)> {
        self.instances.iter().enumerate().map(|(i, (n, c))| {
            (
                InstanceId(u16::try_from(i).unwrap_or(u16::MAX)),
                n.as_str(),
                c,
            )
        })
    }

    /// Adds a client association; the first request goes out at `now`.
    /// Returns the existing id when one for the same instance and address
    /// exists.
    pub fn add_client(&mut self, config: ClientConfig, now: Instant) -> AssociationId {
        let key = (config.instance, config.address);
        if let Some(&i) = self.by_addr.get(&key) {
            return self.assocs[i].id;
        }
        let id = AssociationId(self.next_id);
        self.next_id += 1;
        let mut a = Association::new(id, config, now);
        a.set_system_poll(self.discipline.poll_exponent());
        self.by_addr.insert(key, self.assocs.len());
        self.assocs.push(a);
        id
    }

    fn counters(&mut self, instance: InstanceId) -> &mut Counters {
        let i = usize::from(instance.0);
        if i >= self.instances.len() {
            // Unknown ids are counted under the default instance.
            return &mut self.instances[0].1;
        }
        &mut self.instances[i].1
    }

    /// Handles one received datagram. Never panics on any input; every
    /// datagram that is not used is counted under a [`DropReason`].
    pub fn handle_datagram(&mut self, now: Instant, meta: &RecvMeta, data: &[u8]) {
        self.counters(meta.instance).received += 1;
        self.last_clock = meta.rx_time;
        if let Err(reason) = self.dispatch(now, meta, data) {
            self.counters(meta.instance).drop_packet(reason);
        }
    }

    fn dispatch(&mut self, now: Instant, meta: &RecvMeta, data: &[u8]) -> Result<(), DropReason> {
        let (pkt, _layout) = strata_wire::parse_datagram(data).map_err(wire_drop_reason)?;
        match pkt.mode {
            Mode::Client => {
                if !meta.listener {
                    return Err(DropReason::UnexpectedMode);
                }
                if self.replies.len() >= self.config.max_pending_replies {
                    return Err(DropReason::Overload);
                }
                let mut header = [0u8; HEADER_LEN];
                header.copy_from_slice(data.get(..HEADER_LEN).ok_or(DropReason::Malformed)?);
                self.replies.push_back(PendingReply {
                    meta: *meta,
                    header,
                });
                Ok(())
            }
            Mode::Server => {
                let &idx = self
                    .by_addr
                    .get(&(meta.instance, meta.src))
                    .ok_or(DropReason::NoAssociation)?;
                let a = &mut self.assocs[idx];
                let before = a.state;
                let received = a.receive(now, meta.rx_time, &pkt, self.config.precision)?;
                let (id, after) = (a.id, a.state);
                if before != after {
                    self.events
                        .push_back(Event::Association { id, state: after });
                }
                if let Received::Sample(Some(_)) = received {
                    self.clock_select(now);
                }
                Ok(())
            }
            _ => Err(DropReason::UnexpectedMode),
        }
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
                let out = a.filter.last()?;
                let peer = a.peer?;
                if a.reach == 0 || peer.stratum >= MAX_STRATUM {
                    return None;
                }
                Some(Candidate {
                    id: i,
                    offset: out.offset,
                    delay: peer.root_delay + out.delay,
                    dispersion: peer.root_dispersion + a.filter.dispersion_at(now_s),
                    jitter: out.jitter,
                    stratum: peer.stratum,
                })
            })
            .collect();
        let Some(sel) = select(&candidates, &self.config.select) else {
            if self.sys.peer.take().is_some() {
                self.events.push_back(Event::SystemPeer(None));
            }
            return;
        };
        let a = &self.assocs[sel.system_peer];
        let (Some(out), Some(peer)) = (a.filter.last(), a.peer) else {
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
                + a.filter.dispersion_at(now_s)
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
        if let Some(t) = self.discipline.next_tick() {
            if now.as_secs_f64() >= t {
                self.discipline.tick(now.as_secs_f64());
                self.drain_discipline();
            }
        }
        for a in &mut self.assocs {
            if let Some(state) = a.on_poll(now) {
                self.events
                    .push_back(Event::Association { id: a.id, state });
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
        polls.chain(tick).min()
    }

    /// The next datagram to send, written to the front of `buf` (at least
    /// 48 bytes). `clock_now` is the disciplined clock read right before
    /// this call; it becomes the transmit timestamp.
    #[must_use]
    pub fn poll_transmit(&mut self, clock_now: NtpTimestamp, buf: &mut [u8]) -> Option<Transmit> {
        self.last_clock = clock_now;
        while let Some(r) = self.replies.pop_front() {
            let state = self.server_state(clock_now);
            match respond(&r.header, r.meta.rx_time, clock_now, &state, buf) {
                Ok(len) => {
                    self.counters(r.meta.instance).sent += 1;
                    return Some(Transmit {
                        instance: r.meta.instance,
                        socket: Some(r.meta.socket),
                        dst: r.meta.src,
                        src_ip: r.meta.dst_ip,
                        ifindex: r.meta.ifindex,
                        len,
                    });
                }
                Err(reason) => self.counters(r.meta.instance).drop_packet(reason),
            }
        }
        let i = self.assocs.iter().position(|a| a.pending_send)?;
        let a = &mut self.assocs[i];
        let len = a.build_request(clock_now, &mut self.rng, buf)?;
        let (instance, dst) = (a.config.instance, a.config.address);
        self.counters(instance).sent += 1;
        Some(Transmit {
            instance,
            socket: None,
            dst,
            src_ip: None,
            ifindex: None,
            len,
        })
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
            let out = a.filter.last();
            SessionStatus {
                id: a.id,
                instance: a.config.instance,
                address: a.config.address,
                mode: "client",
                state: a.state,
                selected: self.sys.peer == Some(a.id),
                stratum: a.peer.map_or(MAX_STRATUM, |p| p.stratum),
                reference_id: a.peer.map_or(ReferenceId::new([0; 4]), |p| p.reference_id),
                reach: a.reach,
                poll: a.poll,
                offset: out.map_or(0.0, |o| o.offset),
                delay: out.map_or(0.0, |o| o.delay),
                dispersion: if out.is_some() {
                    a.filter.dispersion_at(now_s)
                } else {
                    MAXDISP
                },
                jitter: out.map_or(0.0, |o| o.jitter),
                last_rx: a.last_rx,
            }
        })
    }
}
