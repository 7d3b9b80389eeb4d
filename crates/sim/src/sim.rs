//! The discrete-event core: hosts running the real [`Node`], paths between
//! them, and one queue of events ordered by true time.
//!
//! True time is the simulation's reference: seconds from the start, kept as
//! integer nanoseconds in the queue. Each node's monotonic [`Instant`] is
//! true time (a perfect monotonic clock); its NTP timescale is its
//! [`SimClock`], which drifts and obeys the node's clock commands.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use strata_engine::{
    BroadcastClientConfig, BroadcastServerConfig, ClientConfig, Event, InstanceId, Instant, Node,
    RecvMeta, SocketId,
};

use crate::clock::{ClockModel, SimClock};
use crate::path::Path;
use crate::SimError;

/// Identifies a host in a [`Sim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub usize);

/// One per-second sample of a recorded host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Record {
    /// True time (s from the start).
    pub t: f64,
    /// True clock error: reading − true time (s; positive = ahead).
    pub error: f64,
    /// Total frequency correction applied to the clock, phase slew
    /// included (ppm).
    pub correction_ppm: f64,
    /// The discipline's frequency estimate, without the phase slew (ppm).
    pub frequency_ppm: f64,
    /// The oscillator's true frequency error at `t` (ppm).
    pub oscillator_ppm: f64,
    /// Datagrams the host has sent so far.
    pub sent: u64,
}

/// A simulated host: the real engine on a simulated clock.
pub struct Host {
    /// Its name.
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    /// The engine.
    pub node: Node,
    /// Its clock.
    pub clock: SimClock,
    /// Datagrams sent.
    pub sent: u64,
    /// Whether the node reported a panic (offset over the panic threshold).
    pub panicked: bool,
    model: ClockModel,
    record: bool,
    trace: Vec<Record>,
}

enum Payload {
    Deliver {
        to: usize,
        src: SocketAddr,
        /// The destination address: the host's own, or a group it joined.
        dst_ip: IpAddr,
        data: Vec<u8>,
    },
    FrequencyStep {
        host: usize,
        delta_ppm: f64,
    },
}

struct Queued {
    at: u64,
    seq: u64,
    payload: Payload,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Reversed, so that `BinaryHeap` pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Seconds to integer nanoseconds, saturating (negative and NaN give 0).
fn to_nanos(secs: f64) -> u64 {
    Instant::from_secs_f64(secs).as_nanos()
}

fn to_secs(nanos: u64) -> f64 {
    Instant::from_nanos(nanos).as_secs_f64()
}

/// How many events one [`Sim::run_until`] call may process per simulated
/// second (plus a constant) before it is declared a livelock.
const EVENTS_PER_SECOND_LIMIT: u64 = 1_000;

/// A deterministic discrete-event simulation of NTP nodes.
pub struct Sim {
    hosts: Vec<Host>,
    paths: HashMap<(usize, usize), (Path, bool)>,
    /// Multicast groups (or broadcast addresses) and the hosts that hear them.
    groups: HashMap<IpAddr, Vec<usize>>,
    queue: BinaryHeap<Queued>,
    seq: u64,
    now: u64,
    next_record: u64,
    rng: SmallRng,
    seed: u64,
    lost: u64,
    events: u64,
    /// The last host timer fired: (host, deadline).
    last_timer: Option<(usize, u64)>,
}

impl Sim {
    /// An empty simulation at true time 0. Everything random derives from
    /// `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Sim {
            hosts: Vec::new(),
            paths: HashMap::new(),
            groups: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            next_record: 0,
            rng: SmallRng::seed_from_u64(seed),
            seed,
            lost: 0,
            events: 0,
            last_timer: None,
        }
    }

    /// The seed the simulation was built with.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Current true time (s from the start).
    #[must_use]
    pub fn now(&self) -> f64 {
        to_secs(self.now)
    }

    /// Packets lost on paths (or sent where no path leads).
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Events processed so far.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Adds a host running `node` on a clock built from `model`, with the
    /// address `10.200.X.Y:123`. The node's cookie generator is the
    /// caller's; [`Sim::node_rng`] gives a reproducible one.
    pub fn add_host(&mut self, name: &str, node: Node, model: ClockModel) -> HostId {
        let i = self.hosts.len();
        let (hi, lo) = (i / 250, i % 250 + 1);
        let ip = Ipv4Addr::new(
            10,
            200,
            u8::try_from(hi).unwrap_or(u8::MAX),
            u8::try_from(lo).unwrap_or(u8::MAX),
        );
        for &(at, delta_ppm) in &model.frequency_steps {
            if at.is_finite() && delta_ppm.is_finite() {
                self.push(to_nanos(at), Payload::FrequencyStep { host: i, delta_ppm });
            }
        }
        self.hosts.push(Host {
            name: name.to_owned(),
            addr: SocketAddr::new(IpAddr::V4(ip), 123),
            node,
            clock: SimClock::new(&model),
            sent: 0,
            panicked: false,
            model,
            record: false,
            trace: Vec::new(),
        });
        HostId(i)
    }

    /// A node's cookie generator, seeded from the simulation seed and a
    /// host index: the engine demands a cryptographic generator, and a
    /// seeded one keeps the simulation deterministic.
    #[must_use]
    pub fn node_rng(&self, index: usize) -> ChaCha8Rng {
        let i = u64::try_from(index).unwrap_or(u64::MAX);
        ChaCha8Rng::seed_from_u64(
            self.seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9)),
        )
    }

    /// Connects hosts `a` and `b`; `path.delay_ab` is the `a` → `b`
    /// direction. Replaces an earlier path between them.
    pub fn connect(&mut self, a: HostId, b: HostId, path: Path) -> Result<(), SimError> {
        path.validate()?;
        let n = self.hosts.len();
        if a.0 >= n || b.0 >= n || a == b {
            return Err(SimError::NoSuchHost);
        }
        self.paths.insert((a.0, b.0), (path, true));
        self.paths.insert((b.0, a.0), (path, false));
        Ok(())
    }

    /// Makes `client` poll `server` (a client association, first request
    /// now).
    pub fn add_server(
        &mut self,
        client: HostId,
        server: HostId,
        minpoll: i8,
        maxpoll: i8,
        iburst: bool,
    ) -> Result<(), SimError> {
        let address = self.host(server)?.addr;
        let now = Instant::from_nanos(self.now);
        let h = self.hosts.get_mut(client.0).ok_or(SimError::NoSuchHost)?;
        h.node.add_client(
            ClientConfig {
                instance: InstanceId::DEFAULT,
                address,
                minpoll,
                maxpoll,
                iburst,
            },
            now,
        );
        Ok(())
    }

    /// Makes `host` hear datagrams sent to `group` (a multicast group or a
    /// broadcast address), each over the path from the sender to it.
    pub fn join(&mut self, host: HostId, group: IpAddr) -> Result<(), SimError> {
        self.host(host)?;
        let members = self.groups.entry(group).or_default();
        if !members.contains(&host.0) {
            members.push(host.0);
        }
        Ok(())
    }

    /// Makes `server` send mode 5 to `group` every 2^`poll` s (first
    /// packet now).
    pub fn add_multicast_server(
        &mut self,
        server: HostId,
        group: SocketAddr,
        poll: i8,
    ) -> Result<(), SimError> {
        let now = Instant::from_nanos(self.now);
        let h = self.hosts.get_mut(server.0).ok_or(SimError::NoSuchHost)?;
        h.node.add_broadcast_server(
            BroadcastServerConfig {
                instance: InstanceId::DEFAULT,
                destination: group,
                socket: None,
                ifindex: None,
                poll,
                key: None,
            },
            now,
        );
        Ok(())
    }

    /// Makes `client` a broadcast/multicast client: it mobilises an
    /// association on the first mode-5 packet it hears (see [`Sim::join`]),
    /// calibrates with a client/server volley, then listens.
    pub fn set_multicast_client(
        &mut self,
        client: HostId,
        config: BroadcastClientConfig,
    ) -> Result<(), SimError> {
        let h = self.hosts.get_mut(client.0).ok_or(SimError::NoSuchHost)?;
        h.node
            .set_broadcast_client(InstanceId::DEFAULT, Some(config));
        Ok(())
    }

    /// Records `host` once per true second from now on.
    pub fn record(&mut self, host: HostId) -> Result<(), SimError> {
        self.hosts
            .get_mut(host.0)
            .ok_or(SimError::NoSuchHost)?
            .record = true;
        Ok(())
    }

    /// A host.
    pub fn host(&self, id: HostId) -> Result<&Host, SimError> {
        self.hosts.get(id.0).ok_or(SimError::NoSuchHost)
    }

    /// Every host, by index.
    #[must_use]
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The per-second samples of a recorded host.
    pub fn trace(&self, id: HostId) -> Result<&[Record], SimError> {
        Ok(&self.host(id)?.trace)
    }

    fn push(&mut self, at: u64, payload: Payload) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            payload,
        });
    }

    /// Drains a host's transmits and events after an input.
    fn flush(&mut self, i: usize) {
        let t = self.now();
        let mut buf = [0u8; 1500];
        loop {
            let stamp = self.hosts[i].clock.stamp(t);
            let Some(tx) = self.hosts[i].node.poll_transmit(stamp, &mut buf) else {
                break;
            };
            self.hosts[i].sent += 1;
            let src = self.hosts[i].addr;
            let Some(data) = buf.get(..tx.len).map(<[u8]>::to_vec) else {
                self.lost += 1;
                continue;
            };
            // A group reaches each member over its own path; an address, its host.
            let targets: Vec<usize> = match self.groups.get(&tx.dst.ip()) {
                Some(members) => members.iter().copied().filter(|&m| m != i).collect(),
                None => self
                    .hosts
                    .iter()
                    .position(|h| h.addr == tx.dst)
                    .into_iter()
                    .collect(),
            };
            if targets.is_empty() {
                self.lost += 1;
            }
            for to in targets {
                let delay = self
                    .paths
                    .get(&(i, to))
                    .and_then(|(path, forward)| path.sample(t, *forward, &mut self.rng));
                match delay {
                    Some(d) => self.push(
                        self.now.saturating_add(to_nanos(d)),
                        Payload::Deliver {
                            to,
                            src,
                            dst_ip: tx.dst.ip(),
                            data: data.clone(),
                        },
                    ),
                    None => self.lost += 1,
                }
            }
        }
        let h = &mut self.hosts[i];
        while let Some(e) = h.node.poll_event() {
            match e {
                Event::Clock(c) => h.clock.apply(t, c),
                Event::Panic { .. } => h.panicked = true,
                _ => {}
            }
        }
    }

    /// Applies wander and takes the per-second samples.
    fn second(&mut self) {
        let t = self.now();
        for h in &mut self.hosts {
            let w = h.model.wander_ppm_per_sqrt_s;
            if w > 0.0 && t > 0.0 {
                if let Ok(n) = Normal::new(0.0, w) {
                    let delta = n.sample(&mut self.rng);
                    h.clock.shift_frequency(t, delta);
                }
            }
            if h.record {
                let status = h.node.status();
                h.trace.push(Record {
                    t,
                    error: h.clock.error(t),
                    correction_ppm: h.clock.correction_ppm(),
                    frequency_ppm: status.frequency_ppm,
                    oscillator_ppm: h.clock.frequency_error_ppm(),
                    sent: h.sent,
                });
            }
        }
    }

    /// Runs until true time `until` (s), processing every event due by
    /// then in order. Fails when the number of events exceeds a bound
    /// proportional to the simulated time (a livelock in the engine or
    /// the simulation).
    pub fn run_until(&mut self, until: f64) -> Result<(), SimError> {
        if !until.is_finite() {
            return Err(SimError::InvalidTime);
        }
        let until_ns = to_nanos(until);
        let span = until_ns.saturating_sub(self.now) / 1_000_000_000 + 1;
        let budget = span.saturating_mul(EVENTS_PER_SECOND_LIMIT) + 1000;
        let mut processed = 0u64;
        for i in 0..self.hosts.len() {
            self.flush(i);
        }
        loop {
            let next_queue = self.queue.peek().map(|q| q.at);
            // A deadline that a timeout at exactly that instant did not
            // clear (the engine rounds its f64 deadlines to nanoseconds) is
            // retried one nanosecond later.
            let now = self.now;
            let last = self.last_timer;
            let next_timer = self
                .hosts
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    let d = h.node.poll_timeout()?.as_nanos();
                    let d = if last == Some((i, d)) {
                        d.max(now) + 1
                    } else {
                        d
                    };
                    Some((d, i))
                })
                .min();
            let next = [next_queue, next_timer.map(|x| x.0), Some(self.next_record)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(u64::MAX);
            if next > until_ns {
                break;
            }
            processed += 1;
            self.events += 1;
            if processed > budget {
                return Err(SimError::Livelock { at: self.now() });
            }
            self.now = self.now.max(next);
            if next == self.next_record {
                self.second();
                self.next_record = self.next_record.saturating_add(1_000_000_000);
            } else if next_queue == Some(next) {
                let Some(q) = self.queue.pop() else { break };
                match q.payload {
                    Payload::Deliver {
                        to,
                        src,
                        dst_ip,
                        data,
                    } => {
                        let t = self.now();
                        let h = &mut self.hosts[to];
                        let meta = RecvMeta {
                            instance: InstanceId::DEFAULT,
                            socket: SocketId(0),
                            listener: true,
                            src,
                            dst_ip: Some(dst_ip),
                            ifindex: None,
                            rx_time: h.clock.stamp(t),
                        };
                        h.node
                            .handle_datagram(Instant::from_nanos(self.now), &meta, &data);
                        self.flush(to);
                    }
                    Payload::FrequencyStep { host, delta_ppm } => {
                        let t = self.now();
                        if let Some(h) = self.hosts.get_mut(host) {
                            h.clock.shift_frequency(t, delta_ppm);
                        }
                    }
                }
            } else if let Some((_, i)) = next_timer {
                self.last_timer = self.hosts[i].node.poll_timeout().map(|d| (i, d.as_nanos()));
                self.hosts[i]
                    .node
                    .handle_timeout(Instant::from_nanos(self.now));
                self.flush(i);
            }
        }
        self.now = self.now.max(until_ns);
        Ok(())
    }
}
