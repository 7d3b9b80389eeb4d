//! `xtask relay`: a userland UDP relay that impairs a path (delay, jitter,
//! asymmetry, loss), precise at LAN-like delays.
//!
//! Clients send to the `--listen` address; the relay forwards each datagram
//! to `--upstream` from a socket of its own per client address (so every
//! answer maps back to the client that asked; a slot idle for
//! [`CLIENT_IDLE`] is reused), and forwards answers back from the listen
//! socket. Each datagram gets a one-way delay drawn from [`Impairment`] for
//! its [`Direction`], or is dropped.
//!
//! Timing: one thread, no tokio (its timers have 1 ms granularity). It waits
//! in `epoll` on the sockets and a `timerfd` (CLOCK_MONOTONIC). A datagram's
//! arrival time is the kernel's receive timestamp (`SO_TIMESTAMPNS`), so the
//! relay's wake-up latency does not shift its due time (arrival + drawn
//! delay); it is kept in a min-heap. The timerfd is armed [`SPIN_WINDOW`]
//! before the earliest due time (absorbing timer slack and wake-up latency),
//! then the thread spins to the due time, still taking in datagrams, and
//! sends. Each send's lateness (actual − intended send time) is recorded and
//! reported as p50/p99/max: the relay's own scheduling error (it includes the
//! wake-up latency whenever that exceeds the drawn delay).
//!
//! The relay is bounded: it exits after `--max-seconds` or `--max-packets`
//! forwarded datagrams, and serves at most [`MAX_CLIENTS`] clients at once
//! (datagrams from more are counted as refused and dropped).

use std::{
    cmp::Ordering,
    collections::BinaryHeap,
    fmt,
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::{
    epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
    socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage},
    time::{TimeSpec, TimeValLike},
    timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Normal};

/// How long before a datagram's due time the scheduler stops sleeping and spins.
pub const SPIN_WINDOW: Duration = Duration::from_micros(300);
/// The most clients served at once (each gets its own upstream socket).
pub const MAX_CLIENTS: usize = 32;
/// A client silent this long gives up its upstream socket (chronyd sends
/// each request from a fresh port, so clients come and go).
pub const CLIENT_IDLE: Duration = Duration::from_secs(10);
/// How often the statistics file is rewritten.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 2048;

/// Jitter added to the base one-way delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// None: every datagram takes the base delay.
    None,
    /// Normal with standard deviation `sigma` seconds (a negative total is clamped to 0).
    Normal {
        /// Standard deviation, seconds.
        sigma: f64,
    },
    /// Uniform in `[-half_width, +half_width]` seconds.
    Uniform {
        /// Half the width, seconds.
        half_width: f64,
    },
    /// Exponential with mean `mean` seconds (only ever adds delay, like queueing).
    Exponential {
        /// Mean, seconds.
        mean: f64,
    },
}

impl Jitter {
    /// Parses a distribution name (`none`, `normal`, `uniform`, `exp`) with its scale in seconds.
    pub fn from_name(name: &str, scale_s: f64) -> Result<Jitter> {
        ensure!(
            scale_s.is_finite() && scale_s >= 0.0,
            "jitter must be finite and >= 0"
        );
        if scale_s == 0.0 {
            return Ok(Jitter::None);
        }
        Ok(match name {
            "none" => Jitter::None,
            "normal" => Jitter::Normal { sigma: scale_s },
            "uniform" => Jitter::Uniform {
                half_width: scale_s,
            },
            "exp" | "exponential" => Jitter::Exponential { mean: scale_s },
            other => bail!("unknown jitter distribution {other:?} (none, normal, uniform, exp)"),
        })
    }

    fn sample(self, rng: &mut SmallRng) -> f64 {
        match self {
            Jitter::None => 0.0,
            Jitter::Normal { sigma } => Normal::new(0.0, sigma).map_or(0.0, |d| d.sample(rng)),
            Jitter::Uniform { half_width } => rng.gen_range(-half_width..=half_width),
            Jitter::Exponential { mean } => Exp::new(1.0 / mean).map_or(0.0, |d| d.sample(rng)),
        }
    }
}

/// A direction through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → upstream server.
    Up,
    /// Upstream server → client.
    Down,
}

/// What the relay does to a path, per direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Mean base one-way delay, seconds.
    pub delay_s: f64,
    /// Jitter added to each datagram.
    pub jitter: Jitter,
    /// Asymmetry, seconds: up takes `delay + asym/2`, down `delay − asym/2`
    /// (an NTP client then reads an offset biased by `−asym/2`).
    pub asym_s: f64,
    /// Loss probability per datagram and direction, `0..=1`.
    pub loss: f64,
}

impl Impairment {
    /// Checks the values are usable (finite, non-negative base delays, loss in `0..=1`).
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.delay_s.is_finite() && self.asym_s.is_finite(),
            "delay and asymmetry must be finite"
        );
        ensure!(
            self.delay_s - self.asym_s.abs() / 2.0 >= 0.0,
            "asymmetry makes a base delay negative"
        );
        ensure!((0.0..=1.0).contains(&self.loss), "loss must be in 0..=1");
        Ok(())
    }

    /// The base delay of `dir` (without jitter), seconds.
    pub fn base_s(&self, dir: Direction) -> f64 {
        match dir {
            Direction::Up => self.delay_s + self.asym_s / 2.0,
            Direction::Down => self.delay_s - self.asym_s / 2.0,
        }
    }

    /// The one-way delay of one datagram in `dir`, or `None` when it is lost.
    pub fn one_way(&self, dir: Direction, rng: &mut SmallRng) -> Option<Duration> {
        if self.loss > 0.0 && rng.gen::<f64>() < self.loss {
            return None;
        }
        let total = (self.base_s(dir) + self.jitter.sample(rng)).max(0.0);
        Duration::try_from_secs_f64(total).ok()
    }
}

/// Everything `xtask relay` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients send.
    pub listen: SocketAddr,
    /// The server datagrams go to.
    pub upstream: SocketAddr,
    /// The impairment.
    pub impairment: Impairment,
    /// RNG seed.
    pub seed: u64,
    /// Exit after this long.
    pub max_duration: Duration,
    /// Exit after forwarding this many datagrams.
    pub max_packets: u64,
    /// Rewrite this file with a [`Stats`] line every second, if set.
    pub stats_file: Option<PathBuf>,
}

/// The relay's counters and its own scheduling error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Datagrams forwarded client → server.
    pub up: u64,
    /// Datagrams forwarded server → client.
    pub down: u64,
    /// Datagrams dropped client → server.
    pub lost_up: u64,
    /// Datagrams dropped server → client.
    pub lost_down: u64,
    /// Client addresses seen.
    pub clients: usize,
    /// Datagrams dropped because every client slot was busy.
    pub refused: u64,
    /// Median of actual − intended send time, µs.
    pub sched_p50_us: f64,
    /// 99th percentile of actual − intended send time, µs.
    pub sched_p99_us: f64,
    /// Largest actual − intended send time, µs.
    pub sched_max_us: f64,
    /// Median actual − intended send time client → server, µs.
    pub sched_up_p50_us: f64,
    /// Median actual − intended send time server → client, µs (a difference
    /// from the up direction biases the observers' offsets by half of it).
    pub sched_down_p50_us: f64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "relay: up={} down={} lost_up={} lost_down={} clients={} refused={} \
             sched_p50_us={:.1} sched_p99_us={:.1} sched_max_us={:.1} \
             sched_up_p50_us={:.1} sched_down_p50_us={:.1}",
            self.up,
            self.down,
            self.lost_up,
            self.lost_down,
            self.clients,
            self.refused,
            self.sched_p50_us,
            self.sched_p99_us,
            self.sched_max_us,
            self.sched_up_p50_us,
            self.sched_down_p50_us
        )
    }
}

impl Stats {
    /// Parses a line written by [`Display`](fmt::Display).
    pub fn parse(line: &str) -> Result<Stats> {
        let body = line
            .trim()
            .strip_prefix("relay:")
            .with_context(|| format!("not a relay stats line: {line:?}"))?;
        let mut s = Stats::default();
        for kv in body.split_whitespace() {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("bad field {kv:?}"))?;
            let int = || v.parse::<u64>().with_context(|| format!("bad {k}: {v:?}"));
            let float = || v.parse::<f64>().with_context(|| format!("bad {k}: {v:?}"));
            match k {
                "up" => s.up = int()?,
                "down" => s.down = int()?,
                "lost_up" => s.lost_up = int()?,
                "lost_down" => s.lost_down = int()?,
                "clients" => s.clients = usize::try_from(int()?)?,
                "refused" => s.refused = int()?,
                "sched_p50_us" => s.sched_p50_us = float()?,
                "sched_p99_us" => s.sched_p99_us = float()?,
                "sched_max_us" => s.sched_max_us = float()?,
                "sched_up_p50_us" => s.sched_up_p50_us = float()?,
                "sched_down_p50_us" => s.sched_down_p50_us = float()?,
                _ => {}
            }
        }
        Ok(s)
    }
}

/// The `q` quantile (`0..=1`) of sorted `values`, nearest rank; 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let last = sorted.len() - 1;
    // In range: q is clamped to 0..=1 and `last` fits an f64 exactly at these sizes.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank in 0..=last"
    )]
    let rank = ((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last);
    sorted[rank]
}

/// A datagram waiting for its due time.
struct Pending {
    due: Instant,
    seq: u64,
    dir: Direction,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Reversed, so that `BinaryHeap` pops the earliest due time first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// The client a slot (an upstream socket) currently serves.
struct Client {
    addr: SocketAddr,
    last: Instant,
}

/// The epoll token of the listen socket.
const LISTEN_TOKEN: u64 = 0;
/// The epoll token of the timer.
const TIMER_TOKEN: u64 = 1;
/// Client slot `i` has token `SLOT_TOKEN_BASE + i`.
const SLOT_TOKEN_BASE: u64 = 2;

/// The relay's state: one thread, epoll over the sockets and a timerfd.
struct Relay<'a> {
    cfg: &'a Config,
    epoll: Epoll,
    timer: TimerFd,
    listen: Arc<UdpSocket>,
    /// Upstream sockets, opened up front so a new client costs no syscall.
    upstream: Vec<Arc<UdpSocket>>,
    /// The client of each upstream socket; a slot idle for [`CLIENT_IDLE`] is reused.
    clients: Vec<Option<Client>>,
    heap: BinaryHeap<Pending>,
    rng: SmallRng,
    seq: u64,
    /// Lateness of every send, µs, per direction (up, down).
    late_us: [Vec<f64>; 2],
    /// Where statistics lines go to be written to the file, off the timing thread.
    stats_tx: Option<std::sync::mpsc::Sender<String>>,
    stats: Stats,
}

impl<'a> Relay<'a> {
    fn new(cfg: &'a Config) -> Result<Relay<'a>> {
        let listen = UdpSocket::bind(cfg.listen).with_context(|| format!("bind {}", cfg.listen))?;
        listen.set_nonblocking(true)?;
        setsockopt(&listen, sockopt::ReceiveTimestampns, &true).context("SO_TIMESTAMPNS")?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll")?;
        epoll.add(&listen, EpollEvent::new(EpollFlags::EPOLLIN, LISTEN_TOKEN))?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .context("timerfd")?;
        epoll.add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, TIMER_TOKEN))?;
        let any: SocketAddr = if cfg.upstream.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut upstream = Vec::with_capacity(MAX_CLIENTS);
        for i in 0..MAX_CLIENTS {
            let socket = UdpSocket::bind(any).context("bind an upstream socket")?;
            socket.set_nonblocking(true)?;
            setsockopt(&socket, sockopt::ReceiveTimestampns, &true).context("SO_TIMESTAMPNS")?;
            let token = SLOT_TOKEN_BASE + u64::try_from(i)?;
            epoll.add(&socket, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
            upstream.push(Arc::new(socket));
        }
        Ok(Relay {
            cfg,
            epoll,
            timer,
            listen: Arc::new(listen),
            upstream,
            clients: (0..MAX_CLIENTS).map(|_| None).collect(),
            heap: BinaryHeap::new(),
            rng: SmallRng::seed_from_u64(cfg.seed),
            seq: 0,
            late_us: [Vec::new(), Vec::new()],
            stats_tx: None,
            stats: Stats::default(),
        })
    }

    /// The upstream socket of client `from` (a free or idle slot on first
    /// use); `None` when every slot is busy.
    fn upstream_socket(&mut self, from: SocketAddr, now: Instant) -> Option<Arc<UdpSocket>> {
        let slot = match self
            .clients
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.addr == from))
        {
            Some(i) => i,
            None => {
                let i = self.clients.iter().position(|c| {
                    c.as_ref()
                        .is_none_or(|c| now.duration_since(c.last) >= CLIENT_IDLE)
                })?;
                self.stats.clients += 1;
                i
            }
        };
        self.clients[slot] = Some(Client {
            addr: from,
            last: now,
        });
        self.upstream.get(slot).cloned()
    }

    /// Queues one datagram for its due time (or counts it lost).
    fn queue(
        &mut self,
        dir: Direction,
        arrived: Instant,
        socket: Arc<UdpSocket>,
        to: SocketAddr,
        bytes: &[u8],
    ) {
        let Some(delay) = self.cfg.impairment.one_way(dir, &mut self.rng) else {
            match dir {
                Direction::Up => self.stats.lost_up += 1,
                Direction::Down => self.stats.lost_down += 1,
            }
            return;
        };
        self.seq += 1;
        self.heap.push(Pending {
            due: arrived + delay,
            seq: self.seq,
            dir,
            socket,
            to,
            bytes: bytes.to_vec(),
        });
    }

    /// Reads every datagram waiting on the socket of `token`.
    fn receive(&mut self, token: u64) -> Result<()> {
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            if token == LISTEN_TOKEN {
                let (n, from, arrived) = match recv_stamped(&self.listen, &mut buf) {
                    Ok(got) => got,
                    Err(e) if is_would_block(&e) => return Ok(()),
                    Err(e) => return Err(e).context("receive on the listen socket"),
                };
                match self.upstream_socket(from, arrived) {
                    Some(up) => {
                        self.queue(Direction::Up, arrived, up, self.cfg.upstream, &buf[..n])
                    }
                    None => self.stats.refused += 1,
                }
            } else {
                let slot = usize::try_from(token - SLOT_TOKEN_BASE)?;
                let Some(socket) = self.upstream.get(slot).cloned() else {
                    return Ok(());
                };
                let (n, from, arrived) = match recv_stamped(&socket, &mut buf) {
                    Ok(got) => got,
                    Err(e) if is_would_block(&e) => return Ok(()),
                    Err(e) => return Err(e).context("receive on an upstream socket"),
                };
                let Some(addr) = self
                    .clients
                    .get(slot)
                    .and_then(Option::as_ref)
                    .map(|c| c.addr)
                else {
                    // No client (any more): nobody to answer.
                    continue;
                };
                // Only the server's answers are relayed.
                if from == self.cfg.upstream {
                    let listen = Arc::clone(&self.listen);
                    self.queue(Direction::Down, arrived, listen, addr, &buf[..n]);
                }
            }
        }
    }

    /// Waits up to `timeout` for events and handles them.
    fn poll(&mut self, timeout: EpollTimeout) -> Result<()> {
        let mut events = [EpollEvent::empty(); MAX_CLIENTS + 2];
        let n = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        for ev in &events[..n] {
            match ev.data() {
                TIMER_TOKEN => {
                    // Clears the expiry; EAGAIN when it was already read.
                    let _ = self.timer.wait();
                }
                token => self.receive(token)?,
            }
        }
        Ok(())
    }

    /// Sends every datagram due by now, recording how late each one is.
    fn send_due(&mut self) {
        while self.heap.peek().is_some_and(|p| p.due <= Instant::now()) {
            let Some(p) = self.heap.pop() else { break };
            let sent_at = Instant::now();
            if let Err(e) = p.socket.send_to(&p.bytes, p.to) {
                eprintln!("relay: send to {}: {e}", p.to);
            }
            let late = sent_at.saturating_duration_since(p.due).as_secs_f64() * 1e6;
            let i = match p.dir {
                Direction::Up => {
                    self.stats.up += 1;
                    0
                }
                Direction::Down => {
                    self.stats.down += 1;
                    1
                }
            };
            self.late_us[i].push(late);
        }
    }

    /// Updates the percentiles and rewrites the statistics file.
    fn snapshot(&mut self) {
        let sorted_of = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v
        };
        let sorted = sorted_of(&self.late_us.concat());
        self.stats.sched_p50_us = quantile(&sorted, 0.5);
        self.stats.sched_p99_us = quantile(&sorted, 0.99);
        self.stats.sched_max_us = sorted.last().copied().unwrap_or(0.0);
        self.stats.sched_up_p50_us = quantile(&sorted_of(&self.late_us[0]), 0.5);
        self.stats.sched_down_p50_us = quantile(&sorted_of(&self.late_us[1]), 0.5);
        if let Some(tx) = &self.stats_tx {
            // The writer has gone only if it failed; it said so on stderr.
            let _ = tx.send(format!("{}\n", self.stats));
        }
    }

    /// The main loop, until `deadline` or the packet budget.
    fn run(mut self, deadline: Instant) -> Result<Stats> {
        self.snapshot();
        let mut last_stats = Instant::now();
        loop {
            self.send_due();
            let now = Instant::now();
            if now >= deadline || self.stats.up + self.stats.down >= self.cfg.max_packets {
                break;
            }
            let next_due = self.heap.peek().map(|p| p.due);
            // Statistics only when nothing is due soon, so writing them delays no datagram.
            if now.duration_since(last_stats) >= STATS_EVERY
                && next_due.is_none_or(|d| d > now + Duration::from_millis(5))
            {
                self.snapshot();
                last_stats = Instant::now();
            }
            match next_due {
                // Within the spin window: busy-wait, still taking in datagrams.
                Some(due) if due <= now + SPIN_WINDOW => {
                    self.poll(EpollTimeout::ZERO)?;
                    std::hint::spin_loop();
                    continue;
                }
                Some(due) => {
                    let wake = due - now - SPIN_WINDOW;
                    self.timer
                        .set(
                            Expiration::OneShot(TimeSpec::from_duration(wake)),
                            TimerSetTimeFlags::empty(),
                        )
                        .context("arm timerfd")?;
                }
                None => self.timer.unset().context("disarm timerfd")?,
            }
            // The timerfd wakes us precisely; this bound only keeps the
            // statistics and the deadline checked.
            let cap = (deadline - now).min(STATS_EVERY);
            let timeout = EpollTimeout::try_from(cap).unwrap_or(EpollTimeout::ZERO);
            self.poll(timeout)?;
        }
        self.snapshot();
        Ok(self.stats)
    }
}

/// Receives one datagram: its length, sender and arrival time. The arrival
/// time is the kernel's receive timestamp (`SO_TIMESTAMPNS`, realtime)
/// mapped onto the monotonic clock, so the relay's own wake-up latency does
/// not shift a datagram's due time; without a timestamp it is "now".
fn recv_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Instant)> {
    use std::os::fd::AsRawFd;
    let mut cmsg = nix::cmsg_space!(TimeSpec);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )?;
    let (now, now_sys) = (Instant::now(), std::time::SystemTime::now());
    let mut arrived = now;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            let kernel = u64::try_from(ts.num_nanoseconds())
                .ok()
                .map(|ns| std::time::UNIX_EPOCH + Duration::from_nanos(ns));
            let age = kernel.and_then(|k| now_sys.duration_since(k).ok());
            if let Some(earlier) = age.and_then(|a| now.checked_sub(a)) {
                arrived = earlier;
            }
        }
    }
    let from = msg
        .address
        .as_ref()
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::V4((*v4).into()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
        })
        .ok_or_else(|| std::io::Error::other("datagram without an IP source address"))?;
    Ok((msg.bytes, from, arrived))
}

fn is_would_block(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
}

/// Runs the relay until its time or packet budget is spent; returns its statistics.
pub fn run(cfg: &Config) -> Result<Stats> {
    cfg.impairment.validate()?;
    ensure!(cfg.max_packets > 0, "max packets must be > 0");
    let deadline = Instant::now() + cfg.max_duration;
    let mut relay = Relay::new(cfg)?;
    let Some(path) = cfg.stats_file.clone() else {
        return relay.run(deadline);
    };
    // File writes can block for long on a busy disk: a thread of their own.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    relay.stats_tx = Some(tx);
    let writer = std::thread::spawn(move || {
        for line in rx {
            let tmp = path.with_extension("tmp");
            let written = std::fs::write(&tmp, line).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                eprintln!("relay: write {}: {e}", path.display());
                return;
            }
        }
    });
    // `run` consumes the relay, closing the channel, so the writer ends.
    let stats = relay.run(deadline);
    if writer.join().is_err() {
        bail!("relay statistics writer panicked");
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(delay_s: f64, jitter: Jitter, asym_s: f64, loss: f64) -> Impairment {
        Impairment {
            delay_s,
            jitter,
            asym_s,
            loss,
        }
    }

    fn mean_and_loss(i: &Impairment, dir: Direction, n: u32) -> (f64, f64) {
        let mut rng = SmallRng::seed_from_u64(7);
        let (mut sum, mut kept) = (0.0, 0u32);
        for _ in 0..n {
            if let Some(d) = i.one_way(dir, &mut rng) {
                sum += d.as_secs_f64();
                kept += 1;
            }
        }
        (sum / f64::from(kept), 1.0 - f64::from(kept) / f64::from(n))
    }

    #[test]
    fn asymmetry_splits_around_the_mean_delay() {
        let i = imp(0.020, Jitter::None, 0.001, 0.0);
        assert!((i.base_s(Direction::Up) - 0.0205).abs() < 1e-12);
        assert!((i.base_s(Direction::Down) - 0.0195).abs() < 1e-12);
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(
            i.one_way(Direction::Up, &mut rng),
            Some(Duration::from_micros(20_500))
        );
    }

    #[test]
    fn jitter_distributions_have_their_means_and_loss_its_rate() {
        let n = 20_000;
        let lan = imp(50e-6, Jitter::Normal { sigma: 10e-6 }, 0.0, 0.0);
        let (mean, loss) = mean_and_loss(&lan, Direction::Up, n);
        assert!((mean - 50e-6).abs() < 1e-6, "{mean}");
        assert!(loss.abs() < f64::EPSILON);
        let wan = imp(0.020, Jitter::Exponential { mean: 0.002 }, 0.001, 0.01);
        let (up, loss_up) = mean_and_loss(&wan, Direction::Up, n);
        let (down, _) = mean_and_loss(&wan, Direction::Down, n);
        assert!((up - 0.0225).abs() < 1e-4, "{up}");
        assert!((down - 0.0215).abs() < 1e-4, "{down}");
        assert!((loss_up - 0.01).abs() < 0.004, "{loss_up}");
        let uni = imp(1e-3, Jitter::Uniform { half_width: 1e-3 }, 0.0, 0.0);
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..1000 {
            let d = uni.one_way(Direction::Down, &mut rng).expect("no loss");
            assert!(d <= Duration::from_millis(2), "{d:?}");
        }
    }

    #[test]
    fn rejects_bad_impairments_and_names() {
        assert!(imp(1e-3, Jitter::None, 0.0, 1.5).validate().is_err());
        assert!(imp(1e-3, Jitter::None, 3e-3, 0.0).validate().is_err());
        assert!(imp(f64::NAN, Jitter::None, 0.0, 0.0).validate().is_err());
        assert!(imp(0.02, Jitter::None, 1e-3, 0.01).validate().is_ok());
        assert!(Jitter::from_name("gauss", 1e-5).is_err());
        assert!(Jitter::from_name("exp", -1.0).is_err());
        assert_eq!(Jitter::from_name("exp", 0.0).ok(), Some(Jitter::None));
        assert_eq!(
            Jitter::from_name("normal", 1e-5).ok(),
            Some(Jitter::Normal { sigma: 1e-5 })
        );
    }

    #[test]
    fn quantiles_and_stats_round_trip() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((quantile(&v, 0.5) - 51.0).abs() < 1e-9);
        assert!((quantile(&v, 0.99) - 99.0).abs() < 1e-9);
        assert!((quantile(&v, 1.0) - 100.0).abs() < 1e-9);
        assert!(quantile(&[], 0.5).abs() < f64::EPSILON);
        let s = Stats {
            up: 10,
            down: 9,
            lost_up: 1,
            lost_down: 0,
            clients: 2,
            refused: 3,
            sched_p50_us: 3.5,
            sched_p99_us: 12.5,
            sched_max_us: 40.0,
            sched_up_p50_us: 2.5,
            sched_down_p50_us: 1.5,
        };
        let line = s.to_string();
        assert_eq!(Stats::parse(&line).expect("parse"), s);
        assert!(Stats::parse("nope").is_err());
        assert!(Stats::parse("relay: up=x").is_err());
    }

    /// A real relay on loopback: two clients, each answered (and only) by
    /// its own reply, with the configured delay, and a small scheduling error.
    #[test]
    fn relays_each_client_its_own_answers_on_time() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("server");
        let upstream = server.local_addr().expect("addr");
        // A free port for the relay's listen socket.
        let listen = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free port");
        let cfg = Config {
            listen,
            upstream,
            impairment: imp(2e-3, Jitter::None, 0.0, 0.0),
            seed: 1,
            max_duration: Duration::from_secs(120),
            max_packets: 8,
            stats_file: None,
        };
        let relay = std::thread::spawn(move || run(&cfg));
        // Echo server: answers each datagram with "re:" + payload, 4 times.
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            for _ in 0..4 {
                let (n, from) = server.recv_from(&mut buf).expect("server recv");
                let mut reply = b"re:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                server.send_to(&reply, from).expect("server send");
            }
        });
        let a = UdpSocket::bind("127.0.0.1:0").expect("a");
        let b = UdpSocket::bind("127.0.0.1:0").expect("b");
        for s in [&a, &b] {
            // Long: a late answer must not look like a lost one (a resend
            // would be relayed too).
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
        }
        let mut buf = [0u8; 64];
        for round in 0..2 {
            for (s, name) in [(&a, "a"), (&b, "b")] {
                let msg = format!("{name}{round}");
                // The relay may not be bound yet on the first send: retry until answered.
                let started = Instant::now();
                let n = crate::scenario::wait_until(
                    Duration::from_secs(60),
                    Duration::from_millis(1),
                    || {
                        s.send_to(msg.as_bytes(), listen).ok()?;
                        s.recv(&mut buf).ok()
                    },
                )
                .expect("answer");
                let rtt = started.elapsed();
                assert_eq!(&buf[..n], format!("re:{msg}").as_bytes());
                assert!(rtt >= Duration::from_millis(4), "{rtt:?}");
            }
        }
        echo.join().expect("echo");
        let stats = relay.join().expect("relay thread").expect("relay");
        assert_eq!((stats.up, stats.down, stats.clients), (4, 4, 2));
        // How late a loaded machine sends is not asserted, only that the
        // figures are consistent.
        assert!(
            (0.0..=stats.sched_max_us).contains(&stats.sched_p50_us),
            "{stats}"
        );
    }
}
