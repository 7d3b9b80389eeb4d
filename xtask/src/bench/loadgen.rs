//! The server bench's load generator: many NTP clients on loopback.
//!
//! [`LoadGen`] opens `sockets` UDP sockets, each bound to its own loopback
//! source address (127.20.x.y, so a per-address rate limiter sees that many
//! clients) and connected to the server. It sends mode-3 requests in
//! batches (`sendmmsg`), one batch per socket in turn, and takes replies in
//! batches (`recvmmsg`) from the sockets `epoll` reports readable.
//!
//! Every request's transmit timestamp is unique: a per-run tag in the top
//! 24 bits and a sequence number below. A reply counts when it is mode 4,
//! its origin timestamp is a request of this run not yet answered; its
//! response time is from just before the `sendmmsg` of its request to just
//! after the `recvmmsg` that returned it (CLOCK_MONOTONIC).
//!
//! Loads: open loop at a target rate (batches paced every
//! [`PACING_INTERVAL`]) or closed loop (keep `window` requests outstanding).
//! Every run is bounded by its duration and its request count; after the
//! sending phase it drains replies for up to [`DRAIN`].

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use nix::{
    errno::Errno,
    sys::{
        epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
        socket::{setsockopt, sockopt, MsgFlags, MultiHeaders},
    },
};

use super::mmsg::{self, RecvBatch};
use crate::ntp;

/// How often an open-loop run sends a batch (the batch size follows the rate).
pub const PACING_INTERVAL: Duration = Duration::from_micros(100);
/// How long replies are still taken after the sending phase.
pub const DRAIN: Duration = Duration::from_millis(300);
/// A closed-loop window with no reply for this long is written off as lost.
const STALL: Duration = Duration::from_millis(20);
/// Requests tracked at once (a power of two); older ones count as lost.
const RING: usize = 1 << 21;
/// The sequence number's bits in a transmit timestamp.
const SEQ_BITS: u32 = 40;
/// Receive buffer asked for on each generator socket.
const RCVBUF: usize = 1 << 20;

/// The generator's sockets.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server.
    pub target: SocketAddrV4,
    /// Number of client sockets (distinct source addresses).
    pub sockets: usize,
    /// Largest batch per `sendmmsg`/`recvmmsg`.
    pub batch: usize,
    /// The first source address; socket i binds the i-th address after it
    /// (skipping x.y.z.0 and x.y.z.255).
    pub first_source: Ipv4Addr,
}

/// How a run offers load.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// Open loop: this many requests per second, whatever the replies.
    Open {
        /// Requests per second.
        rate: f64,
    },
    /// Closed loop: keep this many requests outstanding.
    Closed {
        /// Requests outstanding.
        window: usize,
    },
}

/// One run's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// The load.
    pub load: Load,
    /// Sending phase length.
    pub duration: Duration,
    /// At most this many requests.
    pub max_requests: u64,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Requests sent.
    pub sent: u64,
    /// Valid replies (matching an unanswered request of this run).
    pub replies: u64,
    /// Replies that were not valid mode-4 replies to a request of this run.
    pub invalid: u64,
    /// Second replies to the same request.
    pub duplicates: u64,
    /// Length of the sending phase actually run.
    pub elapsed: Duration,
    /// Response times of valid replies, nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
}

impl Stats {
    /// Requests sent per second of the sending phase.
    pub fn sent_per_s(&self) -> f64 {
        per_s(self.sent, self.elapsed)
    }

    /// Valid replies per second of the sending phase.
    pub fn replies_per_s(&self) -> f64 {
        per_s(self.replies, self.elapsed)
    }

    /// Fraction of requests without a valid reply.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        to_f64(self.sent.saturating_sub(self.replies)) / to_f64(self.sent)
    }

    /// The `p`-th percentile (0..=100) response time, seconds.
    pub fn percentile_s(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies_ns, p).map(|ns| to_f64(ns) * 1e-9)
    }
}

/// The nearest-rank `p`-th percentile of sorted `values`.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * to_f64(sorted.len() as u64)).ceil();
    // In 1..=len after the clamp; the cast is exact for these sizes.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let idx = (rank as usize).clamp(1, sorted.len()) - 1;
    sorted.get(idx).copied()
}

fn per_s(n: u64, d: Duration) -> f64 {
    let secs = d.as_secs_f64();
    if secs > 0.0 {
        to_f64(n) / secs
    } else {
        0.0
    }
}

/// Counts as floats (exact below 2^53).
#[allow(clippy::cast_precision_loss)]
fn to_f64(n: u64) -> f64 {
    n as f64
}

/// The `i`-th loopback source address after `first` (skipping .0 and .255).
pub fn source_addr(first: Ipv4Addr, i: u32) -> Ipv4Addr {
    let base = u32::from(first);
    let (hi, lo) = (base >> 8, base & 0xff);
    let lo = lo.clamp(1, 254) - 1;
    let n = lo + i;
    Ipv4Addr::from(((hi + n / 254) << 8) | (n % 254 + 1))
}

/// A mode-3 NTPv4 request whose transmit timestamp is `xmt`.
pub fn request(xmt: u64) -> [u8; ntp::HEADER_LEN] {
    ntp::request(3, xmt)
}

/// The origin timestamp of a mode-4 reply (`None` for anything else).
pub fn reply_origin(reply: &[u8]) -> Option<u64> {
    ntp::Header::parse(reply)
        .filter(|h| h.mode == 4)
        .map(|h| h.origin)
}

/// The load generator; see the module doc.
pub struct LoadGen {
    cfg: Config,
    sockets: Vec<UdpSocket>,
    epoll: Epoll,
    tag: u64,
    rx: RecvBatch,
    tx: MultiHeaders<()>,
    /// Send time (ns since the run's start, + 1) per in-flight sequence number; 0 = none.
    ring: Vec<u64>,
}

impl LoadGen {
    /// Opens and connects the sockets.
    ///
    /// # Errors
    /// A socket that cannot be bound, connected or registered.
    pub fn new(cfg: &Config) -> Result<LoadGen> {
        ensure!(cfg.sockets > 0 && cfg.batch > 0, "need sockets and a batch");
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll")?;
        let mut sockets = Vec::with_capacity(cfg.sockets);
        for i in 0..cfg.sockets {
            let src = source_addr(cfg.first_source, u32::try_from(i)?);
            let s = open_client(src, cfg.target)?;
            epoll
                .add(&s, EpollEvent::new(EpollFlags::EPOLLIN, u64::try_from(i)?))
                .context("epoll add")?;
            sockets.push(s);
        }
        Ok(LoadGen {
            cfg: cfg.clone(),
            sockets,
            epoll,
            tag: u64::from(std::process::id() & 0xffff) << 8,
            rx: RecvBatch::new(cfg.batch),
            tx: MultiHeaders::preallocate(cfg.batch, None),
            ring: vec![0; RING],
        })
    }

    /// Sends single requests until one is answered or `timeout` passes.
    ///
    /// # Errors
    /// No reply within `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            let stats = self.run(&Run {
                load: Load::Closed { window: 1 },
                duration: Duration::from_millis(1),
                max_requests: 1,
            })?;
            if stats.replies > 0 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "no reply from {} within {timeout:?}: is the server up?",
            self.cfg.target
        )
    }

    /// One bounded run.
    ///
    /// # Errors
    /// A send or receive error other than a full buffer or ICMP refusal.
    pub fn run(&mut self, run: &Run) -> Result<Stats> {
        self.tag = (self.tag + 1) & 0xff_ffff;
        self.ring.fill(0);
        let mut st = Stats::default();
        let mut latencies = Vec::with_capacity(usize::try_from(run.max_requests.min(4_000_000))?);
        let start = Instant::now();
        let send_end = start + run.duration;
        let mut next_socket = 0usize;
        let mut written_off = 0u64;
        let mut last_progress = start;
        let mut events = vec![EpollEvent::empty(); 64];
        let mut reqs = vec![[0u8; 48]; self.cfg.batch];
        let addrs: Vec<Option<()>> = vec![None; self.cfg.batch];
        let mut sending = true;
        let mut drain_end = send_end + DRAIN;
        loop {
            let now = Instant::now();
            if sending && (now >= send_end || st.sent >= run.max_requests) {
                sending = false;
                st.elapsed = now.duration_since(start);
                drain_end = now + DRAIN;
            }
            if !sending && (now >= drain_end || st.replies + st.duplicates >= st.sent) {
                break;
            }
            if sending {
                let want = match run.load {
                    Load::Open { rate } => {
                        let due = rate * now.duration_since(start).as_secs_f64();
                        // Truncation is intended: whole requests due so far.
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let due = due.max(0.0) as u64;
                        due.saturating_sub(st.sent)
                    }
                    Load::Closed { window } => {
                        let outstanding = st.sent.saturating_sub(st.replies + written_off);
                        if outstanding > 0 && now.duration_since(last_progress) > STALL {
                            written_off += outstanding;
                            last_progress = now;
                        }
                        let outstanding = st.sent.saturating_sub(st.replies + written_off);
                        u64::try_from(window)?.saturating_sub(outstanding)
                    }
                };
                let n = usize::try_from(
                    want.min(run.max_requests - st.sent)
                        .min(u64::try_from(self.cfg.batch)?),
                )?;
                // Open loop sends once a pacing interval's worth is due (or the rest).
                let min_batch = match run.load {
                    Load::Open { rate } => pacing_batch(rate, self.cfg.batch),
                    Load::Closed { .. } => 1,
                };
                if n >= min_batch.min(usize::try_from(run.max_requests - st.sent)?) && n > 0 {
                    let sent_ns = nanos_since(start) + 1;
                    for (i, r) in reqs.iter_mut().take(n).enumerate() {
                        let seq = st.sent + u64::try_from(i)?;
                        *r = request((self.tag << SEQ_BITS) | seq);
                        self.ring[ring_index(seq)] = sent_ns;
                    }
                    let datagrams: Vec<&[u8]> = reqs[..n].iter().map(|r| &r[..]).collect();
                    let fd = self.sockets[next_socket].as_raw_fd();
                    next_socket = (next_socket + 1) % self.sockets.len();
                    match mmsg::send_batch(
                        fd,
                        &mut self.tx,
                        &datagrams,
                        &addrs[..n],
                        MsgFlags::MSG_DONTWAIT,
                    ) {
                        Ok(()) => st.sent += u64::try_from(n)?,
                        Err(Errno::EAGAIN | Errno::ENOBUFS | Errno::ECONNREFUSED) => {
                            for r in 0..n {
                                self.ring[ring_index(st.sent + u64::try_from(r)?)] = 0;
                            }
                        }
                        Err(e) => return Err(e).context("sendmmsg"),
                    }
                }
            }
            let got = self.receive(&mut events, start, &mut st, &mut latencies)?;
            if got > 0 {
                last_progress = Instant::now();
            } else if !sending {
                std::hint::spin_loop();
            }
        }
        latencies.sort_unstable();
        st.latencies_ns = latencies;
        Ok(st)
    }

    /// Takes every queued reply on readable sockets; returns how many.
    fn receive(
        &mut self,
        events: &mut [EpollEvent],
        start: Instant,
        st: &mut Stats,
        latencies: &mut Vec<u64>,
    ) -> Result<u64> {
        let ready = match self.epoll.wait(events, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        let mut got = 0;
        for ev in events.iter().take(ready) {
            let Some(socket) = usize::try_from(ev.data())
                .ok()
                .and_then(|i| self.sockets.get(i))
            else {
                continue;
            };
            let fd = socket.as_raw_fd();
            loop {
                let n = match self.rx.recv(fd, MsgFlags::MSG_DONTWAIT) {
                    Ok(n) => n,
                    Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNREFUSED) => break,
                    Err(e) => return Err(e).context("recvmmsg"),
                };
                let now_ns = nanos_since(start);
                for i in 0..n {
                    got += 1;
                    let Some(origin) = reply_origin(self.rx.datagram(i)) else {
                        st.invalid += 1;
                        continue;
                    };
                    let seq = origin & ((1 << SEQ_BITS) - 1);
                    if origin >> SEQ_BITS != self.tag
                        || seq >= st.sent
                        || st.sent - seq > u64::try_from(RING)?
                    {
                        st.invalid += 1;
                        continue;
                    }
                    let slot = &mut self.ring[ring_index(seq)];
                    if *slot == 0 {
                        st.duplicates += 1;
                        continue;
                    }
                    latencies.push(now_ns.saturating_sub(*slot - 1));
                    *slot = 0;
                    st.replies += 1;
                }
                if n < self.cfg.batch {
                    break;
                }
            }
        }
        Ok(got)
    }
}

/// The batch an open-loop run sends per [`PACING_INTERVAL`] at `rate`.
pub fn pacing_batch(rate: f64, max_batch: usize) -> usize {
    let per_interval = (rate * PACING_INTERVAL.as_secs_f64()).round();
    // Clamped to 1..=max_batch, so the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = per_interval.clamp(1.0, 4096.0) as usize;
    n.min(max_batch.max(1))
}

fn ring_index(seq: u64) -> usize {
    // Masked to the ring size, so the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    let i = (seq & (RING as u64 - 1)) as usize;
    i
}

fn nanos_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A non-blocking client socket bound to `src` and connected to `target`.
fn open_client(src: Ipv4Addr, target: SocketAddrV4) -> Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddr::from((src, 0))).with_context(|| format!("bind {src}"))?;
    s.connect(target)
        .with_context(|| format!("connect {target}"))?;
    s.set_nonblocking(true)?;
    // Best effort: a bigger buffer keeps replies from being dropped here.
    let _ = setsockopt(&s, sockopt::RcvBuf, &RCVBUF);
    Ok(s)
}

/// What [`distinct_clients`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientsStats {
    /// Distinct source addresses that sent a request.
    pub clients: u64,
    /// Of those, how many got a reply.
    pub answered: u64,
}

/// Sends one request from each of `n` distinct loopback source addresses
/// (starting at `first`), `chunk` sockets at a time, taking replies for up
/// to `wait` per chunk. Bounded by `max_duration`.
///
/// # Errors
/// A socket that cannot be opened.
pub fn distinct_clients(
    target: SocketAddrV4,
    first: Ipv4Addr,
    n: u32,
    chunk: u32,
    wait: Duration,
    max_duration: Duration,
) -> Result<ClientsStats> {
    let started = Instant::now();
    let mut st = ClientsStats::default();
    let mut buf = [0u8; 128];
    let mut i = 0u32;
    while i < n && started.elapsed() < max_duration {
        let end = n.min(i + chunk.max(1));
        let mut socks = Vec::new();
        for k in i..end {
            let s = open_client(source_addr(first, k), target)?;
            if s.send(&request(u64::from(k))).is_ok() {
                st.clients += 1;
                socks.push(s);
            }
        }
        let deadline = Instant::now() + wait;
        let mut pending: Vec<&UdpSocket> = socks.iter().collect();
        while !pending.is_empty() && Instant::now() < deadline {
            pending.retain(|s| match s.recv(&mut buf) {
                Ok(len) => {
                    if buf.get(..len).and_then(reply_origin).is_some() {
                        st.answered += 1;
                    }
                    false
                }
                Err(_) => true,
            });
        }
        i = end;
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_skip_network_and_broadcast_octets() {
        let first = Ipv4Addr::new(127, 20, 0, 1);
        assert_eq!(source_addr(first, 0), Ipv4Addr::new(127, 20, 0, 1));
        assert_eq!(source_addr(first, 253), Ipv4Addr::new(127, 20, 0, 254));
        assert_eq!(source_addr(first, 254), Ipv4Addr::new(127, 20, 1, 1));
        assert_eq!(
            source_addr(first, 100_000),
            Ipv4Addr::new(127, 21, 137, 179)
        );
        let all: std::collections::HashSet<_> =
            (0..100_000).map(|i| source_addr(first, i)).collect();
        assert_eq!(all.len(), 100_000);
        assert!(all
            .iter()
            .all(|a| a.octets()[0] == 127 && a.octets()[3] != 0 && a.octets()[3] != 255));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn request_and_reply_fields() {
        let r = request(0x0102_0304_0506_0708);
        assert_eq!(r[0], 0x23);
        assert_eq!(reply_origin(&r), None); // a request is not a reply
        let mut reply = [0u8; 48];
        reply[0] = 0x24;
        reply[24..32].copy_from_slice(&42u64.to_be_bytes());
        assert_eq!(reply_origin(&reply), Some(42));
        assert_eq!(reply_origin(&reply[..47]), None);
    }

    #[test]
    fn pacing_batches_follow_the_rate() {
        assert_eq!(pacing_batch(20_000.0, 32), 2);
        assert_eq!(pacing_batch(1_000.0, 32), 1);
        assert_eq!(pacing_batch(1e7, 32), 32);
    }

    /// Drives the reference reflector: every request answered, origins checked.
    #[test]
    fn measures_the_reflector_on_loopback() {
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let SocketAddr::V4(target) = probe.local_addr().expect("addr") else {
            panic!("v4")
        };
        drop(probe);
        let reflector = super::super::reflector::Config {
            addr: SocketAddr::V4(target),
            batch: 16,
            max_duration: Duration::from_secs(20),
            max_packets: 1_000_000,
        };
        let handle = std::thread::spawn(move || super::super::reflector::run(&reflector));
        let mut gen = LoadGen::new(&Config {
            target,
            sockets: 8,
            batch: 16,
            first_source: Ipv4Addr::new(127, 20, 0, 1),
        })
        .expect("loadgen");
        gen.wait_ready(Duration::from_secs(5)).expect("ready");
        // Behaviour only, no speed: how many requests a loaded machine
        // sends in 300 ms, and how fast they come back, is not tested.
        let started = Instant::now();
        let st = gen
            .run(&Run {
                load: Load::Open { rate: 2000.0 },
                duration: Duration::from_millis(300),
                max_requests: 10_000,
            })
            .expect("run");
        let took = started.elapsed().as_secs_f64();
        assert!((1..=10_000).contains(&st.sent), "{st:?}");
        assert_eq!(st.invalid, 0);
        assert_eq!(st.duplicates, 0);
        // Loopback may drop what a starved reflector cannot take in time.
        assert!((1..=st.sent).contains(&st.replies), "{st:?}");
        assert_eq!(st.latencies_ns.len() as u64, st.replies);
        assert!(st.latencies_ns.windows(2).all(|w| w[0] <= w[1]), "sorted");
        // A response time lies within the run that measured it.
        let p99 = st.percentile_s(99.0);
        assert!(p99.is_some_and(|p| p > 0.0 && p <= took), "p99 {p99:?}");
        let closed = gen
            .run(&Run {
                load: Load::Closed { window: 64 },
                duration: Duration::from_millis(200),
                max_requests: 5_000,
            })
            .expect("run");
        assert!(
            closed.replies > 0 && closed.replies <= closed.sent,
            "{closed:?}"
        );
        assert!(closed.sent <= 5_000, "{closed:?}");
        let clients = distinct_clients(
            target,
            Ipv4Addr::new(127, 30, 0, 1),
            600,
            200,
            Duration::from_secs(5),
            Duration::from_secs(120),
        )
        .expect("clients");
        assert_eq!(clients.clients, 600);
        assert!((1..=600).contains(&clients.answered), "{clients:?}");
        // The reflector stops at its bound (20 s) at the latest.
        drop(gen);
        let _ = handle;
    }
}
