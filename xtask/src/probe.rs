//! The true clock error of an NTP server, measured against this host's clock.
//!
//! Scenario nodes run virtual clocks; the host clock is the reference. A
//! probe sends one NTPv4 mode-3 request with T1 from the host clock, reads
//! T2/T3 from the reply, takes T4 from the host clock and computes
//! `error = ((T2 − T1) + (T3 − T4)) / 2`: positive when the server's clock is
//! ahead of the host. Scenarios run it inside a node's namespace as
//! `ip netns exec NS xtask probe ADDR`.
//!
//! The header comes from [`crate::ntp`], independent of the crates under
//! test. [`serve`] is the matching tiny
//! server with a known offset, used by the unit tests and the `smoke` scenario.

use std::{
    io::ErrorKind,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, ensure, Context, Result};

use crate::ntp::{self, diff_seconds, timestamp as ntp_timestamp};

/// A signed shift of the clock a [`serve`] responder answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    ahead: bool,
    by: Duration,
}

impl Shift {
    /// A shift of `ms` milliseconds (positive = the served clock is ahead).
    pub fn from_millis(ms: i64) -> Shift {
        Shift {
            ahead: ms >= 0,
            by: Duration::from_millis(ms.unsigned_abs()),
        }
    }

    fn apply(self, t: SystemTime) -> SystemTime {
        if self.ahead {
            t + self.by
        } else {
            t.checked_sub(self.by).unwrap_or(UNIX_EPOCH)
        }
    }
}

/// One measurement of a server's clock against the host clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// `((T2 − T1) + (T3 − T4)) / 2` in seconds; positive = server ahead.
    pub offset_s: f64,
    /// Round-trip delay `(T4 − T1) − (T3 − T2)` in seconds.
    pub delay_s: f64,
    /// The server's stratum.
    pub stratum: u8,
}

impl Sample {
    /// The one-line form `xtask probe` prints and [`Sample::parse_line`] reads.
    pub fn to_line(self) -> String {
        format!(
            "offset_s={:.9} delay_s={:.9} stratum={}",
            self.offset_s, self.delay_s, self.stratum
        )
    }

    /// Parses the output of [`Sample::to_line`].
    pub fn parse_line(line: &str) -> Result<Sample> {
        let mut offset_s = None;
        let mut delay_s = None;
        let mut stratum = None;
        for field in line.split_whitespace() {
            match field.split_once('=') {
                Some(("offset_s", v)) => offset_s = Some(v.parse::<f64>()?),
                Some(("delay_s", v)) => delay_s = Some(v.parse::<f64>()?),
                Some(("stratum", v)) => stratum = Some(v.parse::<u8>()?),
                _ => {}
            }
        }
        match (offset_s, delay_s, stratum) {
            (Some(offset_s), Some(delay_s), Some(stratum)) => Ok(Sample {
                offset_s,
                delay_s,
                stratum,
            }),
            _ => bail!("not a probe line: {line:?}"),
        }
    }
}

/// Validates a server reply to the request sent at `t1`, received at `t4`.
fn parse_reply(buf: &[u8], t1: u64, t4: u64) -> Result<Sample> {
    let Some(h) = ntp::Header::parse(buf) else {
        bail!("reply too short: {} bytes", buf.len())
    };
    ensure!(h.mode == 4, "reply has mode {}, want 4 (server)", h.mode);
    ensure!(
        h.stratum != 0,
        "kiss-o'-death or unsynchronized reply (stratum 0)"
    );
    ensure!(
        h.origin == t1,
        "reply origin timestamp does not match request"
    );
    let (t2, t3) = (h.receive, h.transmit);
    let offset_s = (diff_seconds(t2, t1) + diff_seconds(t3, t4)) / 2.0;
    let delay_s = diff_seconds(t4, t1) - diff_seconds(t3, t2);
    Ok(Sample {
        offset_s,
        delay_s,
        stratum: h.stratum,
    })
}

/// Sends one request to `addr` and measures the server's clock error.
///
/// Gives up after `timeout`; replies that do not answer this request are
/// ignored until then.
pub fn probe_offset(addr: SocketAddr, timeout: Duration) -> Result<Sample> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(bind).context("bind probe socket")?;
    socket
        .connect(addr)
        .with_context(|| format!("connect {addr}"))?;
    let deadline = Instant::now() + timeout;
    let t1 = ntp_timestamp(SystemTime::now());
    socket
        .send(&ntp::request(3, t1))
        .with_context(|| format!("send to {addr}"))?;
    let mut buf = [0u8; 1024];
    loop {
        let Some((len, _)) = recv_until(&socket, deadline, &mut buf)
            .with_context(|| format!("receive from {addr}"))?
        else {
            bail!("no reply from {addr} within {timeout:?}")
        };
        let t4 = ntp_timestamp(SystemTime::now());
        match parse_reply(&buf[..len], t1, t4) {
            Ok(sample) => return Ok(sample),
            Err(err) => eprintln!("probe: ignoring reply from {addr}: {err:#}"),
        }
    }
}

/// One datagram on `socket` before `deadline`, or `None` once it has passed.
fn recv_until(
    socket: &UdpSocket,
    deadline: Instant,
    buf: &mut [u8],
) -> std::io::Result<Option<(usize, SocketAddr)>> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Ok(None);
    }
    socket.set_read_timeout(Some(left))?;
    match socket.recv_from(buf) {
        Ok(got) => Ok(Some(got)),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Answers client requests on `socket` like a stratum-1 server whose clock is
/// the host clock shifted by `shift`.
///
/// Returns the number of requests answered, after `max_requests` answers or
/// when `max_time` has passed, whichever comes first.
pub fn serve(
    socket: &UdpSocket,
    shift: Shift,
    max_requests: u32,
    max_time: Duration,
) -> Result<u32> {
    let deadline = Instant::now() + max_time;
    let mut answered = 0;
    let mut buf = [0u8; 1024];
    while answered < max_requests {
        let Some((len, from)) =
            recv_until(socket, deadline, &mut buf).context("receive request")?
        else {
            break;
        };
        let t2 = ntp_timestamp(shift.apply(SystemTime::now()));
        let Some(request) = ntp::Header::parse(&buf[..len]).filter(|h| h.mode == 3) else {
            continue;
        };
        let t3 = ntp_timestamp(shift.apply(SystemTime::now()));
        let reply = ntp::reply(&request, 1, *b"XTSK", t2, t3);
        socket.send_to(&reply, from).context("send reply")?;
        answered += 1;
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responder(shift: Shift, max_requests: u32) -> (SocketAddr, std::thread::JoinHandle<u32>) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind responder");
        let addr = socket.local_addr().expect("local addr");
        let handle = std::thread::spawn(move || {
            serve(&socket, shift, max_requests, Duration::from_secs(10)).expect("serve")
        });
        (addr, handle)
    }

    #[test]
    fn measures_known_positive_offset() {
        let (addr, handle) = responder(Shift::from_millis(250), 1);
        let started = Instant::now();
        let sample = probe_offset(addr, Duration::from_secs(5)).expect("probe");
        let waited = started.elapsed().as_secs_f64();
        // The error of an offset is at most half the round trip, however
        // slow the machine is; the round trip fits in the time waited.
        assert!(
            (sample.offset_s - 0.250).abs() <= sample.delay_s / 2.0 + 1e-3,
            "{sample:?}"
        );
        assert!(
            sample.delay_s >= 0.0 && sample.delay_s <= waited,
            "{sample:?}"
        );
        assert_eq!(sample.stratum, 1);
        assert_eq!(handle.join().expect("join"), 1);
    }

    #[test]
    fn measures_known_negative_offset() {
        let (addr, handle) = responder(Shift::from_millis(-1500), 1);
        let sample = probe_offset(addr, Duration::from_secs(5)).expect("probe");
        assert!(
            (sample.offset_s + 1.5).abs() <= sample.delay_s / 2.0 + 1e-3,
            "{sample:?}"
        );
        assert_eq!(handle.join().expect("join"), 1);
    }

    #[test]
    fn times_out_when_nobody_answers() {
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = silent.local_addr().expect("addr");
        let started = Instant::now();
        let err = probe_offset(addr, Duration::from_millis(200)).expect_err("must time out");
        assert!(err.to_string().contains("no reply"), "{err:#}");
        // It gives up rather than waiting forever (bound generous for a
        // loaded machine).
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn responder_ignores_non_requests_and_stops_at_deadline() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind client");
        client.send_to(&[0x24; 48], addr).expect("send mode 4");
        client.send_to(&[0x23; 10], addr).expect("send short");
        let answered = serve(
            &socket,
            Shift::from_millis(0),
            5,
            Duration::from_millis(300),
        )
        .expect("serve");
        assert_eq!(answered, 0);
    }

    #[test]
    fn reply_validation() {
        let t1 = ntp_timestamp(SystemTime::now());
        let mut good = [0u8; ntp::HEADER_LEN];
        good[0] = 0x24;
        good[1] = 2;
        good[24..32].copy_from_slice(&t1.to_be_bytes());
        good[32..40].copy_from_slice(&(t1 + (1 << 32)).to_be_bytes());
        good[40..48].copy_from_slice(&(t1 + (1 << 32)).to_be_bytes());
        let sample = parse_reply(&good, t1, t1).expect("good reply");
        assert!((sample.offset_s - 1.0).abs() < 1e-9);
        assert!(sample.delay_s.abs() < 1e-9);

        assert!(parse_reply(&good[..47], t1, t1).is_err(), "short");
        let mut wrong_mode = good;
        wrong_mode[0] = 0x23;
        assert!(parse_reply(&wrong_mode, t1, t1).is_err(), "mode 3");
        let mut kod = good;
        kod[1] = 0;
        assert!(parse_reply(&kod, t1, t1).is_err(), "stratum 0");
        assert!(parse_reply(&good, t1 + 1, t1).is_err(), "origin mismatch");
    }

    #[test]
    fn sample_line_round_trips() {
        let s = Sample {
            offset_s: -0.000_123_456,
            delay_s: 0.000_2,
            stratum: 2,
        };
        let parsed = Sample::parse_line(&s.to_line()).expect("parse");
        assert!((parsed.offset_s - s.offset_s).abs() < 1e-9);
        assert_eq!(parsed.stratum, 2);
        assert!(Sample::parse_line("garbage").is_err());
    }
}
