//! `xtask ntp-load`: NTP traffic from inside a scenario namespace, counted
//! at the sender.
//!
//! Three kinds, each bounded in time and in requests:
//!
//! - `poll`: one client per source address, each sending a mode-3 request,
//!   then waiting at least `interval` (plus a random share of `jitter`)
//!   before the next, like a normal client. Requests go out whether or not
//!   the last one was answered.
//! - `flood`: one socket sending mode-3 requests at a fixed `rate`, paced
//!   in small batches.
//! - `once`: one datagram of mode 1, 3, 6 or 7, then up to `timeout` for
//!   an answer.
//!
//! Every request's transmit timestamp is unique (a per-run tag and a
//! sequence number), so a reply counts only when its origin timestamp is a
//! request of this run not yet answered. Replies are sorted into normal
//! answers (stratum 1..=15), kiss-o'-death by code (RATE, DENY, other) and
//! anything else; a datagram longer than the request it answers is counted
//! as `oversized` (an amplification). After the sending phase, replies are
//! still taken for [`DRAIN`]. The result is one line of `key=value` counts
//! on stdout, read back with [`Counts::parse_line`].

use std::{
    collections::{BTreeMap, HashMap},
    io::ErrorKind,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, SeedableRng};

use crate::ntp;

/// How long replies are still taken after the last request.
pub const DRAIN: Duration = Duration::from_secs(2);
/// The longest sending phase allowed.
pub const MAX_SECONDS: f64 = 300.0;
/// The most requests one run may send.
pub const MAX_REQUESTS: u64 = 1_000_000;
/// The most requests a flood sends per batch (catching up after a stall).
const MAX_BATCH: u64 = 64;
/// A mode-3 request's length.
const REQUEST_LEN: usize = ntp::HEADER_LEN;
/// Bits of the sequence number in a transmit timestamp.
const SEQ_BITS: u32 = 32;

/// What to send.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// Clients polling every `interval` plus up to `jitter`.
    Poll {
        /// The shortest gap between one client's requests.
        interval: Duration,
        /// Up to this much more, uniformly at random.
        jitter: Duration,
    },
    /// One source at `rate` requests per second.
    Flood {
        /// Requests per second.
        rate: f64,
    },
    /// One datagram of `mode`.
    Once {
        /// 1, 3, 6 or 7.
        mode: u8,
        /// How long to wait for an answer.
        timeout: Duration,
    },
}

/// One run.
#[derive(Clone, Debug)]
pub struct Config {
    /// What to send.
    pub kind: Kind,
    /// The server.
    pub target: SocketAddr,
    /// Source addresses (one client each); empty: one client, any address.
    pub sources: Vec<IpAddr>,
    /// Sending phase length.
    pub duration: Duration,
    /// At most this many requests.
    pub max_requests: u64,
}

/// What came back, counted at the sender.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Datagrams sent.
    pub sent: u64,
    /// Normal answers to requests of this run.
    pub replies: u64,
    /// KoD RATE answers.
    pub kod_rate: u64,
    /// KoD DENY answers.
    pub kod_deny: u64,
    /// Other kiss-o'-death answers.
    pub kod_other: u64,
    /// Datagrams that answer no outstanding request of this run, or are
    /// not NTP server replies.
    pub other: u64,
    /// Answers longer than the request.
    pub oversized: u64,
    /// Bytes sent (UDP payload).
    pub bytes_sent: u64,
    /// Bytes received (UDP payload).
    pub bytes_received: u64,
    /// Clients (source addresses).
    pub clients: u64,
    /// The smallest share of one client's requests that got a normal
    /// answer, percent (100 with no request).
    pub worst_client_pct: f64,
    /// `once`: the stratum of the answer, or the kiss code; `none` without one.
    pub answer: String,
}

impl Counts {
    /// The line `ntp-load` prints.
    pub fn to_line(&self) -> String {
        format!(
            "sent={} replies={} kod_rate={} kod_deny={} kod_other={} other={} oversized={} \
             bytes_sent={} bytes_received={} clients={} worst_client_pct={:.2} answer={}",
            self.sent,
            self.replies,
            self.kod_rate,
            self.kod_deny,
            self.kod_other,
            self.other,
            self.oversized,
            self.bytes_sent,
            self.bytes_received,
            self.clients,
            self.worst_client_pct,
            self.answer,
        )
    }

    /// Parses [`Counts::to_line`] (the last line of `text` that is one).
    ///
    /// # Errors
    /// No such line, or a value that does not parse.
    pub fn parse_line(text: &str) -> Result<Counts> {
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with("sent="))
            .with_context(|| format!("no ntp-load line in {text:?}"))?;
        let kv: BTreeMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .collect();
        let num = |k: &str| -> Result<u64> {
            kv.get(k)
                .with_context(|| format!("no {k} in {line:?}"))?
                .parse()
                .with_context(|| format!("bad {k} in {line:?}"))
        };
        Ok(Counts {
            sent: num("sent")?,
            replies: num("replies")?,
            kod_rate: num("kod_rate")?,
            kod_deny: num("kod_deny")?,
            kod_other: num("kod_other")?,
            other: num("other")?,
            oversized: num("oversized")?,
            bytes_sent: num("bytes_sent")?,
            bytes_received: num("bytes_received")?,
            clients: num("clients")?,
            worst_client_pct: kv
                .get("worst_client_pct")
                .context("no worst_client_pct")?
                .parse()
                .context("bad worst_client_pct")?,
            answer: (*kv.get("answer").context("no answer")?).to_owned(),
        })
    }

    /// Every answer of any kind to a request of this run.
    pub fn answered(&self) -> u64 {
        self.replies + self.kod_rate + self.kod_deny + self.kod_other
    }
}

/// What one datagram from the server is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A normal answer at this stratum.
    Time(u8),
    /// A kiss-o'-death with this code.
    Kiss([u8; 4]),
}

impl Answer {
    fn name(self) -> String {
        match self {
            Answer::Time(s) => format!("stratum-{s}"),
            Answer::Kiss(code) => format!(
                "kod-{}",
                String::from_utf8_lossy(&code).trim_end_matches('\0')
            ),
        }
    }
}

/// The origin timestamp and kind of a server (mode 4) or symmetric passive
/// (mode 2) reply; `None` for anything else.
pub fn classify(reply: &[u8]) -> Option<(u64, Answer)> {
    let h = ntp::Header::parse(reply).filter(|h| matches!(h.mode, 2 | 4))?;
    let answer = match h.stratum {
        0 => Answer::Kiss(h.refid),
        1..=15 => Answer::Time(h.stratum),
        _ => return None,
    };
    Some((h.origin, answer))
}

/// A request of `mode` carrying `xmt` as its transmit timestamp: a 48-byte
/// NTPv4 header for modes 1 and 3, a 12-byte mode-6 READSTAT header, a
/// 48-byte mode-7 (ntpdc) request.
pub fn request(mode: u8, xmt: u64) -> Result<Vec<u8>> {
    Ok(match mode {
        1 | 3 => ntp::request(mode, xmt).to_vec(),
        // Version 2, mode 6, opcode 1 (read status), sequence 1.
        6 => vec![0x16, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        // Version 2, mode 7, implementation 3 (xntpd), request 1 (peer list).
        7 => {
            let mut r = vec![0u8; REQUEST_LEN];
            r[..4].copy_from_slice(&[0x17, 0x00, 0x03, 0x01]);
            r
        }
        _ => bail!("mode {mode}: want 1, 3, 6 or 7"),
    })
}

/// One client: its socket and what it has seen.
struct Client {
    socket: UdpSocket,
    next_send: Instant,
    sent: u64,
    replies: u64,
}

/// Requests sent and not yet answered: transmit timestamp → client.
type Outstanding = HashMap<u64, usize>;

/// The per-run state shared by the kinds.
struct Load {
    cfg: Config,
    clients: Vec<Client>,
    outstanding: Outstanding,
    tag: u64,
    seq: u64,
    counts: Counts,
    buf: Vec<u8>,
}

fn open(source: Option<IpAddr>, target: SocketAddr) -> Result<UdpSocket> {
    let bind = SocketAddr::new(
        source.unwrap_or(if target.is_ipv4() {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u16; 8])
        }),
        0,
    );
    let socket = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
    socket
        .connect(target)
        .with_context(|| format!("connect {target}"))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

impl Load {
    fn new(cfg: &Config) -> Result<Load> {
        ensure!(
            cfg.duration.as_secs_f64() <= MAX_SECONDS,
            "at most {MAX_SECONDS} s"
        );
        ensure!(
            cfg.max_requests <= MAX_REQUESTS,
            "at most {MAX_REQUESTS} requests"
        );
        let sources: Vec<Option<IpAddr>> = if cfg.sources.is_empty() {
            vec![None]
        } else {
            cfg.sources.iter().copied().map(Some).collect()
        };
        let now = Instant::now();
        let clients = sources
            .iter()
            .map(|s| {
                Ok(Client {
                    socket: open(*s, cfg.target)?,
                    next_send: now,
                    sent: 0,
                    replies: 0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        Ok(Load {
            cfg: cfg.clone(),
            counts: Counts {
                clients: u64::try_from(clients.len())?,
                answer: "none".to_owned(),
                ..Counts::default()
            },
            clients,
            outstanding: HashMap::new(),
            tag: u64::from(std::process::id() ^ nanos) & 0xffff_ffff,
            seq: 0,
            buf: vec![0u8; 2048],
        })
    }

    /// Sends one request of `mode` from client `i`; false when the socket
    /// would block (nothing sent).
    fn send(&mut self, i: usize, mode: u8) -> Result<bool> {
        let xmt = (self.tag << SEQ_BITS) | (self.seq & ((1 << SEQ_BITS) - 1));
        let req = request(mode, xmt)?;
        let Some(client) = self.clients.get_mut(i) else {
            return Ok(false);
        };
        match client.socket.send(&req) {
            Ok(n) => {
                self.seq += 1;
                client.sent += 1;
                self.counts.sent += 1;
                self.counts.bytes_sent += u64::try_from(n)?;
                self.outstanding.insert(xmt, i);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::ConnectionRefused
                ) || e.raw_os_error() == Some(nix::libc::ENOBUFS) =>
            {
                Ok(false)
            }
            Err(e) => Err(e).context("send"),
        }
    }

    /// Takes every datagram queued on every client socket; returns how many.
    fn receive(&mut self) -> Result<u64> {
        let mut got = 0;
        for i in 0..self.clients.len() {
            loop {
                let n = match self.clients[i].socket.recv(&mut self.buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::WouldBlock
                                | ErrorKind::ConnectionRefused
                                | ErrorKind::Interrupted
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(e).context("receive"),
                };
                got += 1;
                self.counts.bytes_received += u64::try_from(n)?;
                let datagram = self.buf.get(..n).unwrap_or_default();
                let matched = classify(datagram).and_then(|(origin, answer)| {
                    (self.outstanding.get(&origin) == Some(&i)).then_some((origin, answer))
                });
                let Some((origin, answer)) = matched else {
                    self.counts.other += 1;
                    continue;
                };
                self.outstanding.remove(&origin);
                if n > REQUEST_LEN {
                    self.counts.oversized += 1;
                }
                self.counts.answer = answer.name();
                match answer {
                    Answer::Time(_) => {
                        self.counts.replies += 1;
                        self.clients[i].replies += 1;
                    }
                    Answer::Kiss(code) => match &code {
                        b"RATE" => self.counts.kod_rate += 1,
                        b"DENY" => self.counts.kod_deny += 1,
                        _ => self.counts.kod_other += 1,
                    },
                }
            }
        }
        Ok(got)
    }

    /// Takes replies until none is outstanding or `until`.
    fn drain(&mut self, until: Instant) -> Result<()> {
        while !self.outstanding.is_empty() && Instant::now() < until {
            if self.receive()? == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Counts {
        let worst = self
            .clients
            .iter()
            .filter(|c| c.sent > 0)
            .map(|c| to_f64(c.replies) * 100.0 / to_f64(c.sent))
            .fold(100.0, f64::min);
        self.counts.worst_client_pct = worst;
        self.counts
    }

    fn poll(&mut self, interval: Duration, jitter: Duration) -> Result<()> {
        let start = Instant::now();
        let end = start + self.cfg.duration;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(self.tag);
        // Spread the clients' first requests over one interval.
        let n = u32::try_from(self.clients.len())?;
        for (k, c) in (0..n).zip(self.clients.iter_mut()) {
            c.next_send = start + interval * k / n.max(1);
        }
        loop {
            let now = Instant::now();
            if now >= end || self.counts.sent >= self.cfg.max_requests {
                break;
            }
            for i in 0..self.clients.len() {
                if self.clients[i].next_send <= now && self.counts.sent < self.cfg.max_requests {
                    self.send(i, 3)?;
                    let extra = jitter.mul_f64(rng.gen::<f64>());
                    self.clients[i].next_send = now + interval + extra;
                }
            }
            if self.receive()? == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        self.drain(Instant::now() + DRAIN)
    }

    fn flood(&mut self, rate: f64) -> Result<()> {
        ensure!(
            rate > 0.0 && rate <= 1e6,
            "rate {rate}: want 0 < rate <= 1e6"
        );
        let start = Instant::now();
        let end = start + self.cfg.duration;
        loop {
            let now = Instant::now();
            if now >= end || self.counts.sent >= self.cfg.max_requests {
                break;
            }
            // Whole requests due so far; truncation intended.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let due = (rate * now.duration_since(start).as_secs_f64()) as u64;
            let batch = due
                .saturating_sub(self.counts.sent)
                .min(MAX_BATCH)
                .min(self.cfg.max_requests - self.counts.sent);
            for _ in 0..batch {
                if !self.send(0, 3)? {
                    break;
                }
            }
            if self.receive()? == 0 && batch == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        self.drain(Instant::now() + DRAIN)
    }

    fn once(&mut self, mode: u8, timeout: Duration) -> Result<()> {
        if !self.send(0, mode)? {
            bail!("could not send to {}", self.cfg.target);
        }
        let deadline = Instant::now() + timeout;
        // Modes 6 and 7 get no origin to match: count anything that comes.
        while Instant::now() < deadline {
            let before = self.counts.other;
            if self.receive()? == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            if self.outstanding.is_empty() || self.counts.other > before {
                break;
            }
        }
        Ok(())
    }
}

/// Counts as floats (exact below 2^53).
#[allow(clippy::cast_precision_loss)]
fn to_f64(n: u64) -> f64 {
    n as f64
}

/// Runs one load and returns its counts.
///
/// # Errors
/// Bad settings, a socket that cannot be opened, or a send or receive error
/// other than a full buffer or an ICMP refusal.
pub fn run(cfg: &Config) -> Result<Counts> {
    let mut load = Load::new(cfg)?;
    match cfg.kind.clone() {
        Kind::Poll { interval, jitter } => {
            ensure!(!interval.is_zero(), "poll needs an interval");
            load.poll(interval, jitter)?;
        }
        Kind::Flood { rate } => {
            ensure!(load.clients.len() == 1, "a flood comes from one address");
            load.flood(rate)?;
        }
        Kind::Once { mode, timeout } => {
            ensure!(load.clients.len() == 1, "once sends from one address");
            load.once(mode, timeout)?;
        }
    }
    Ok(load.finish())
}

/// Parses `--sources`: comma-separated IP addresses.
///
/// # Errors
/// An entry that is not an IP address.
pub fn parse_sources(list: &str) -> Result<Vec<IpAddr>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .with_context(|| format!("bad source address {s:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on loopback: answers mode 3 with a normal reply, except
    /// that every `kod_every`-th request gets a KoD RATE, and never
    /// answers mode 6 or 7. Returns how many datagrams it saw, after `max`
    /// or a generous idle time (a loaded machine may stall the sender).
    fn server(kod_every: u64, max: u64) -> (SocketAddr, std::thread::JoinHandle<u64>) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 128];
            let mut seen = 0;
            while seen < max {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    break;
                };
                seen += 1;
                let Some(req) = ntp::Header::parse(&buf[..n]).filter(|h| h.mode == 3) else {
                    continue;
                };
                let reply = if seen % kod_every == 0 {
                    ntp::reply(&req, 0, *b"RATE", 0, 0)
                } else {
                    ntp::reply(&req, 1, *b"XTSK", 0, 0)
                };
                socket.send_to(&reply, from).expect("reply");
            }
            seen
        });
        (addr, handle)
    }

    #[test]
    fn flood_counts_replies_and_kods() {
        let (addr, handle) = server(10, 200);
        let counts = run(&Config {
            kind: Kind::Flood { rate: 2000.0 },
            target: addr,
            sources: vec!["127.0.0.1".parse().expect("ip")],
            duration: Duration::from_secs(5),
            max_requests: 200,
        })
        .expect("run");
        let seen = handle.join().expect("join");
        assert_eq!(counts.sent, 200);
        assert_eq!(counts.bytes_sent, 200 * 48);
        // Loopback may drop under load: what comes back is bounded by what
        // the server saw and answered, each counted where it belongs.
        assert!(seen <= 200, "{seen}");
        assert!(
            (1..=seen - seen / 10).contains(&counts.replies),
            "{counts:?}"
        );
        assert!((1..=seen / 10).contains(&counts.kod_rate), "{counts:?}");
        assert_eq!((counts.other, counts.oversized), (0, 0));
        assert_eq!(
            counts.bytes_received,
            (counts.replies + counts.kod_rate) * 48
        );
        let back = Counts::parse_line(&format!("noise\n{}\n", counts.to_line())).expect("parse");
        assert_eq!(back, counts);
    }

    #[test]
    fn poll_spreads_clients_and_counts_each() {
        let (addr, handle) = server(u64::MAX, 1000);
        let counts = run(&Config {
            kind: Kind::Poll {
                interval: Duration::from_millis(100),
                jitter: Duration::from_millis(50),
            },
            target: addr,
            sources: parse_sources("127.0.0.2,127.0.0.3").expect("sources"),
            duration: Duration::from_millis(550),
            max_requests: 1000,
        })
        .expect("run");
        drop(handle);
        assert_eq!(counts.clients, 2);
        // Each client sends first within one interval, then at most every
        // 100 ms: at most 6 each in 550 ms, at least 1 (however slow).
        assert!((2..=12).contains(&counts.sent), "{counts:?}");
        assert_eq!(counts.replies, counts.sent);
        assert!((counts.worst_client_pct - 100.0).abs() < 1e-9);
    }

    #[test]
    fn once_reports_the_answer_or_none() {
        let (addr, handle) = server(1, 2);
        let once = |mode, timeout| {
            run(&Config {
                kind: Kind::Once { mode, timeout },
                target: addr,
                sources: vec![],
                duration: Duration::ZERO,
                max_requests: 1,
            })
            .expect("run")
        };
        // An answer ends the wait: a long timeout costs nothing here.
        let kod = once(3, Duration::from_secs(30));
        assert_eq!((kod.kod_rate, kod.answer.as_str()), (1, "kod-RATE"));
        let silent = once(6, Duration::from_millis(300));
        assert_eq!((silent.sent, silent.answered()), (1, 0));
        assert_eq!(silent.answer, "none");
        assert_eq!(silent.bytes_sent, 12);
        drop(handle);
    }

    #[test]
    fn classify_and_requests() {
        let mut r = [0u8; 48];
        r[0] = 0x24;
        r[1] = 2;
        r[24..32].copy_from_slice(&7u64.to_be_bytes());
        assert_eq!(classify(&r), Some((7, Answer::Time(2))));
        r[1] = 0;
        r[12..16].copy_from_slice(b"DENY");
        assert_eq!(classify(&r), Some((7, Answer::Kiss(*b"DENY"))));
        assert_eq!(Answer::Kiss(*b"DENY").name(), "kod-DENY");
        r[1] = 16;
        assert_eq!(classify(&r), None, "unsynchronised");
        r[0] = 0x23;
        r[1] = 1;
        assert_eq!(classify(&r), None, "a request");
        assert_eq!(classify(&r[..47]), None, "short");
        assert_eq!(request(3, 9).expect("mode 3")[40..48], 9u64.to_be_bytes());
        assert_eq!(request(1, 9).expect("mode 1")[0] & 7, 1);
        assert_eq!(request(6, 0).expect("mode 6")[0] & 7, 6);
        assert_eq!(request(7, 0).expect("mode 7")[0] & 7, 7);
        assert!(request(4, 0).is_err());
        assert!(parse_sources("10.200.1.1,x").is_err());
    }
}
