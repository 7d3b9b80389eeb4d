//! `xtask reflector ADDR --batch N`: the server bench's reference limit.
//!
//! The bare minimum an NTP server must do, and nothing else: one thread,
//! one socket with `SO_TIMESTAMPNS` and `IP_PKTINFO` on (the options
//! strata's fast path uses), `recvmmsg` of up to N requests, a mode-4 reply
//! built in place for each valid mode-3 request (origin = the request's
//! transmit timestamp, receive = the kernel's receive timestamp, transmit =
//! the clock read once per batch just before sending, reference = transmit),
//! `sendmmsg` of the batch. No strata code is used, so the figure does not
//! move when strata changes: written once, left alone.
//!
//! Bounded: exits after `max_seconds` or `max_packets` answered requests.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::{
    errno::Errno,
    sys::{
        socket::{setsockopt, sockopt, MsgFlags, MultiHeaders, SockaddrStorage},
        time::TimeSpec,
    },
    time::{clock_gettime, ClockId},
};

use super::mmsg::{self, RecvBatch};
use crate::ntp;

/// The NTP header length; replies are exactly this long.
pub const HEADER_LEN: usize = ntp::HEADER_LEN;
/// How long one blocking receive waits before the bounds are checked again.
const RECV_TIMEOUT: Duration = Duration::from_millis(100);
/// The reflector's reference identifier.
const REFID: [u8; 4] = *b"REFL";

/// Reflector settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to bind.
    pub addr: SocketAddr,
    /// Datagrams per `recvmmsg`/`sendmmsg`.
    pub batch: usize,
    /// Exit after this long.
    pub max_duration: Duration,
    /// Exit after answering this many requests.
    pub max_packets: u64,
}

/// A `TimeSpec` (Unix epoch) as a 64-bit NTP timestamp (era-wrapped).
pub fn ntp_from_timespec(ts: TimeSpec) -> u64 {
    let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
    ntp::from_unix(secs, u32::try_from(ts.tv_nsec()).unwrap_or(0))
}

/// Writes the mode-4 reply to `request` into `out` (at least 48 bytes).
/// Returns `false` (write nothing) unless the request is a mode-3 packet
/// of at least 48 bytes with version 1..=4.
pub fn build_reply(request: &[u8], rx: u64, tx: u64, out: &mut [u8; HEADER_LEN]) -> bool {
    match ntp::Header::parse(request) {
        Some(h) if h.mode == 3 && (1..=4).contains(&h.version) => {
            *out = ntp::reply(&h, 1, REFID, rx, tx);
            true
        }
        _ => false,
    }
}

/// Runs the reflector until a bound is reached; returns the number of
/// replies handed to `sendmmsg`.
///
/// # Errors
/// Binding or configuring the socket, or a receive/send error other than
/// a timeout or interruption.
pub fn run(cfg: &Config) -> Result<u64> {
    let socket = UdpSocket::bind(cfg.addr).with_context(|| format!("bind {}", cfg.addr))?;
    socket.set_read_timeout(Some(RECV_TIMEOUT))?;
    setsockopt(&socket, sockopt::ReceiveTimestampns, &true).context("SO_TIMESTAMPNS")?;
    if cfg.addr.is_ipv4() {
        setsockopt(&socket, sockopt::Ipv4PacketInfo, &true).context("IP_PKTINFO")?;
    } else {
        setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true).context("IPV6_RECVPKTINFO")?;
    }
    let fd = socket.as_raw_fd();
    let batch = cfg.batch.clamp(1, 1024);
    let mut rx_batch = RecvBatch::new(batch);
    let mut tx_headers: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(batch, None);
    let mut replies = vec![[0u8; HEADER_LEN]; batch];
    let mut addrs: Vec<Option<SockaddrStorage>> = vec![None; batch];
    let mut rx_times = vec![0u64; batch];
    let started = Instant::now();
    let mut answered = 0u64;
    while answered < cfg.max_packets && started.elapsed() < cfg.max_duration {
        let n = match rx_batch.recv(fd, MsgFlags::MSG_WAITFORONE) {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(e) => return Err(e).context("recvmmsg"),
        };
        let mut fallback_rx = None;
        for i in 0..n {
            let meta = rx_batch.meta(i).copied().unwrap_or_default();
            rx_times[i] = match meta.rx {
                Some(ts) => ntp_from_timespec(ts),
                None => *fallback_rx.get_or_insert(ntp_from_timespec(now_realtime()?)),
            };
            addrs[i] = meta.src;
        }
        // Transmit timestamp: once per batch, as late as possible.
        let tx = ntp_from_timespec(now_realtime()?);
        let mut out = 0;
        for i in 0..n {
            let (request, reply) = (rx_batch.datagram(i), &mut replies[out]);
            if build_reply(request, rx_times[i], tx, reply) {
                addrs[out] = addrs[i];
                out += 1;
            }
        }
        if out == 0 {
            continue;
        }
        let datagrams: Vec<&[u8]> = replies[..out].iter().map(|r| &r[..]).collect();
        match mmsg::send_batch(
            fd,
            &mut tx_headers,
            &datagrams,
            &addrs[..out],
            MsgFlags::empty(),
        ) {
            Ok(()) => answered += u64::try_from(out).unwrap_or(u64::MAX),
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ENOBUFS | Errno::ECONNREFUSED) => {}
            Err(e) => return Err(e).context("sendmmsg"),
        }
    }
    Ok(answered)
}

/// The host clock (CLOCK_REALTIME), read-only.
fn now_realtime() -> Result<TimeSpec> {
    clock_gettime(ClockId::CLOCK_REALTIME).context("clock_gettime")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(first: u8, xmt: u64) -> [u8; 48] {
        let mut r = [0u8; 48];
        r[0] = first;
        r[2] = 6;
        r[40..48].copy_from_slice(&xmt.to_be_bytes());
        r
    }

    #[test]
    fn replies_to_a_client_request() {
        let mut out = [0xffu8; 48];
        assert!(build_reply(&request(0x23, 0xdead_beef), 7, 9, &mut out));
        assert_eq!(out[0], 0x24); // v4 mode 4
        assert_eq!(out[1], 1);
        assert_eq!(out[2], 6);
        assert_eq!(&out[24..32], &0xdead_beef_u64.to_be_bytes());
        assert_eq!(&out[32..40], &7u64.to_be_bytes());
        assert_eq!(&out[40..48], &9u64.to_be_bytes());
        // v3 request: v3 reply.
        assert!(build_reply(&request(0x1b, 1), 0, 0, &mut out));
        assert_eq!(out[0], 0x1c);
    }

    #[test]
    fn drops_everything_else() {
        let mut out = [0u8; 48];
        assert!(!build_reply(&request(0x24, 1), 0, 0, &mut out)); // mode 4
        assert!(!build_reply(&request(0x03, 1), 0, 0, &mut out)); // version 0
        assert!(!build_reply(&request(0x2b, 1), 0, 0, &mut out)); // version 5
        assert!(!build_reply(&request(0x23, 1)[..47], 0, 0, &mut out));
        assert!(!build_reply(&[], 0, 0, &mut out));
    }

    #[test]
    fn converts_unix_time_to_ntp() {
        let t = ntp_from_timespec(TimeSpec::new(0, 500_000_000));
        assert_eq!(t >> 32, 2_208_988_800);
        assert_eq!(t & 0xffff_ffff, 1 << 31);
    }

    #[test]
    fn answers_over_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("addr");
        drop(server);
        let cfg = Config {
            addr,
            batch: 8,
            max_duration: Duration::from_secs(60),
            max_packets: 3,
        };
        let handle = std::thread::spawn(move || run(&cfg));
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 64];
        let mut xmt = 100u64;
        // The reflector may not be bound yet: resend until three replies.
        while got.len() < 3 && Instant::now() < deadline {
            xmt += 1;
            client.send_to(&request(0x23, xmt), addr).expect("send");
            if let Ok(n) = client.recv(&mut buf) {
                assert_eq!(n, 48);
                got.push(u64::from_be_bytes(buf[24..32].try_into().expect("8")));
            }
        }
        assert_eq!(got.len(), 3, "replies: {got:?}");
        assert!(got.iter().all(|o| (101..=xmt).contains(o)));
        assert_eq!(handle.join().expect("join").expect("run"), 3);
    }
}
