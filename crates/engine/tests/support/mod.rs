//! A small in-memory network for engine tests: nodes on simulated clocks
//! exchanging packets with virtual time, fixed one-way delays, broadcast
//! and multicast delivery, and hosts that can be taken down.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_clock::discipline::{ClockCommand, DisciplineConfig};
use strata_engine::{
    ClientConfig, Event, InstanceId, Instant, Node, NodeConfig, RecvMeta, SocketId,
};
use strata_wire::{NtpDuration, NtpTimestamp};

/// Unix time of the simulation's start.
pub const EPOCH: i64 = 1_800_000_000;

/// A free-running clock with an offset and a frequency error, steered by
/// the engine's clock commands.
pub struct SimClock {
    /// Reading (seconds since EPOCH) at `anchor`.
    reading: f64,
    anchor: f64,
    error_ppm: f64,
    correction_ppm: f64,
    /// Steps applied so far.
    pub steps: u32,
}

impl SimClock {
    /// A clock `offset` s ahead of true time, running `error_ppm` fast.
    pub fn new(offset: f64, error_ppm: f64) -> Self {
        SimClock {
            reading: offset,
            anchor: 0.0,
            error_ppm,
            correction_ppm: 0.0,
            steps: 0,
        }
    }
    fn read(&self, t: f64) -> f64 {
        self.reading + (t - self.anchor) * (1.0 + (self.error_ppm + self.correction_ppm) * 1e-6)
    }
    /// The clock's NTP timestamp at true time `t`.
    pub fn stamp(&self, t: f64) -> NtpTimestamp {
        NtpTimestamp::from_unix(EPOCH, 0) + NtpDuration::from_seconds(self.read(t))
    }
    /// Clock error against true time `t`: positive when ahead.
    pub fn error(&self, t: f64) -> f64 {
        self.read(t) - t
    }
    fn apply(&mut self, t: f64, cmd: ClockCommand) {
        self.reading = self.read(t);
        self.anchor = t;
        match cmd {
            ClockCommand::Step { offset } => {
                self.reading += offset;
                self.steps += 1;
            }
            ClockCommand::SetFrequency { ppm } => self.correction_ppm = ppm,
        }
    }
}

/// A node, its clock and its address.
pub struct Host {
    /// The engine.
    pub node: Node,
    /// Its clock.
    pub clock: SimClock,
    /// Its address (port 123).
    pub addr: SocketAddr,
    /// Whether it takes broadcast and multicast packets.
    pub hears_broadcast: bool,
    /// Down: receives nothing, runs no timers.
    pub down: bool,
    /// Events seen, for assertions.
    pub events: Vec<Event>,
    /// Datagrams sent, per mode (index = mode number).
    pub sent_by_mode: [u32; 8],
    /// True send times of mode-5 packets.
    pub broadcast_times: Vec<f64>,
}

impl Host {
    /// A host at 10.200.1.`last`.
    pub fn new(node: Node, clock: SimClock, last: u8) -> Self {
        Host {
            node,
            clock,
            addr: addr(last),
            hears_broadcast: false,
            down: false,
            events: Vec::new(),
            sent_by_mode: [0; 8],
            broadcast_times: Vec::new(),
        }
    }
    fn drain_events(&mut self, t: f64) {
        while let Some(e) = self.node.poll_event() {
            if let Event::Clock(c) = e {
                self.clock.apply(t, c);
            }
            self.events.push(e);
        }
    }
}

struct InFlight {
    at: f64,
    to: usize,
    src: SocketAddr,
    dst_ip: IpAddr,
    data: Vec<u8>,
}

/// Hosts on one network with a fixed one-way delay.
pub struct Net {
    /// The hosts, by index.
    pub hosts: Vec<Host>,
    queue: VecDeque<InFlight>,
    /// True time, seconds.
    pub t: f64,
    /// One-way delay, seconds.
    pub one_way: f64,
    /// Extra one-way delay for packets *to* this host index (asymmetry).
    pub extra_to: Option<(usize, f64)>,
}

impl Net {
    /// A network of `hosts` with `one_way` delay.
    pub fn new(hosts: Vec<Host>, one_way: f64) -> Self {
        Net {
            hosts,
            queue: VecDeque::new(),
            t: 0.0,
            one_way,
            extra_to: None,
        }
    }

    /// The current monotonic instant.
    pub fn now(&self) -> Instant {
        Instant::from_secs_f64(self.t)
    }

    fn delay_to(&self, i: usize) -> f64 {
        self.one_way
            + self
                .extra_to
                .filter(|(h, _)| *h == i)
                .map_or(0.0, |(_, d)| d)
    }

    fn flush(&mut self, i: usize) {
        let t = self.t;
        let mut buf = [0u8; 1500];
        loop {
            let now = self.hosts[i].clock.stamp(t);
            let Some(tx) = self.hosts[i].node.poll_transmit(now, &mut buf) else {
                break;
            };
            self.hosts[i].sent_by_mode[usize::from(buf[0] & 7)] += 1;
            if buf[0] & 7 == 5 {
                self.hosts[i].broadcast_times.push(t);
            }
            let src = self.hosts[i].addr;
            let group = match tx.dst.ip() {
                IpAddr::V4(v4) => v4.is_multicast() || v4.octets()[3] == 255,
                IpAddr::V6(v6) => v6.is_multicast(),
            };
            for to in 0..self.hosts.len() {
                let h = &self.hosts[to];
                let hit = if group {
                    to != i && h.hears_broadcast
                } else {
                    h.addr == tx.dst
                };
                if hit {
                    self.queue.push_back(InFlight {
                        at: t + self.delay_to(to),
                        to,
                        src,
                        dst_ip: tx.dst.ip(),
                        data: buf[..tx.len].to_vec(),
                    });
                }
            }
        }
        self.hosts[i].drain_events(t);
    }

    /// Runs until true time `until`.
    pub fn run_until(&mut self, until: f64) {
        for i in 0..self.hosts.len() {
            if !self.hosts[i].down {
                self.flush(i);
            }
        }
        let mut steps = 0u64;
        loop {
            steps += 1;
            if steps > 1_000_000 {
                let timers: Vec<_> = self
                    .hosts
                    .iter()
                    .map(|h| (h.node.poll_timeout(), h.node.has_transmit()))
                    .collect();
                panic!("livelock at t={}: {timers:?}", self.t);
            }
            let next_packet = self
                .queue
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.at.total_cmp(&b.1.at))
                .map(|(i, p)| (i, p.at));
            let next_timer = self
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| !h.down)
                .filter_map(|(i, h)| h.node.poll_timeout().map(|d| (i, d)))
                .min_by_key(|(_, d)| *d);
            let packet_first = match (next_packet, next_timer) {
                (Some((_, pa)), Some((_, ta))) => pa <= ta.as_secs_f64(),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if packet_first {
                let (qi, at) = next_packet.expect("packet");
                if at > until {
                    break;
                }
                self.t = self.t.max(at);
                let p = self.queue.remove(qi).expect("queued");
                if self.hosts[p.to].down {
                    continue;
                }
                let h = &mut self.hosts[p.to];
                let meta = RecvMeta {
                    instance: InstanceId::DEFAULT,
                    socket: SocketId(0),
                    listener: true,
                    src: p.src,
                    dst_ip: Some(p.dst_ip),
                    ifindex: None,
                    rx_time: h.clock.stamp(self.t),
                };
                h.node
                    .handle_datagram(Instant::from_secs_f64(self.t), &meta, &p.data);
                self.flush(p.to);
            } else {
                let (hi, deadline) = next_timer.expect("timer");
                if deadline.as_secs_f64() > until {
                    break;
                }
                self.t = self.t.max(deadline.as_secs_f64());
                // The deadline itself, so float rounding never leaves a
                // timer just short of due.
                let now = deadline.max(Instant::from_secs_f64(self.t));
                self.hosts[hi].node.handle_timeout(now);
                self.flush(hi);
            }
        }
        self.t = until;
    }
}

/// 10.200.1.`last`:123.
pub fn addr(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 200, 1, last)), 123)
}

/// A node serving its local clock at `stratum`.
pub fn server_node(stratum: u8) -> Node {
    Node::new(
        NodeConfig {
            local_stratum: Some(stratum),
            ..NodeConfig::default()
        },
        rng(u64::from(stratum)),
    )
}

/// A seeded cryptographic generator: deterministic tests, and the type
/// the engine demands of its cookie source.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A node with lab discipline constants (polls 2^-2..2^0 s).
pub fn lab_node(step_threshold: f64, stepout: f64, seed: u64) -> Node {
    Node::new(
        NodeConfig {
            discipline: DisciplineConfig {
                step_threshold,
                stepout,
                min_poll: -2,
                max_poll: 0,
                ..DisciplineConfig::default()
            },
            ..NodeConfig::default()
        },
        rng(seed),
    )
}

/// A lab-poll association config for `remote`.
pub fn lab_config(remote: SocketAddr, iburst: bool) -> ClientConfig {
    ClientConfig {
        instance: InstanceId::DEFAULT,
        address: remote,
        minpoll: -2,
        maxpoll: 0,
        iburst,
    }
}
