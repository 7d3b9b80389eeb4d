//! The true error of a guest's clock, measured from the host.
//!
//! The guest's initramfs runs [`serve`] (`xtask vm-guest truth`): an NTP
//! responder independent of the daemon under test whose receive timestamp
//! is the kernel's (`SO_TIMESTAMPNS`, `CLOCK_REALTIME`) and whose transmit
//! timestamp is read just before sending. The host probes it from the run's
//! namespace, whose clock is the host clock, with [`crate::probe`]: a burst
//! of exchanges of which the one with the least round trip is kept
//! ([`measure`]). Half that round trip bounds the measurement error, so a
//! check against a bound is only made when it is at most a quarter of the
//! bound ([`Verdict`]).
//!
//! [`slope`] fits the residual frequency (the slope of true error over
//! time) by least squares, with its standard error.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::{AsFd, AsRawFd},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use nix::{
    poll::{PollFd, PollFlags, PollTimeout},
    sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage},
};

use crate::{ntp, probe};

/// The guest port the truth responder answers on.
pub const PORT: u16 = 4460;

/// One truth measurement: the least-round-trip exchange of a burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Truth {
    /// Guest clock minus host clock, seconds (positive = guest ahead).
    pub error_s: f64,
    /// The round trip of that exchange, seconds; half of it bounds the
    /// measurement error.
    pub rtt_s: f64,
}

impl Truth {
    /// The measurement's own error bound (half the round trip).
    pub fn bound_s(&self) -> f64 {
        self.rtt_s / 2.0
    }
}

/// The least-round-trip sample of `samples`.
pub fn best(samples: &[probe::Sample]) -> Option<Truth> {
    samples
        .iter()
        .filter(|s| s.offset_s.is_finite() && s.delay_s.is_finite())
        .min_by(|a, b| a.delay_s.total_cmp(&b.delay_s))
        .map(|s| Truth {
            error_s: s.offset_s,
            rtt_s: s.delay_s.max(0.0),
        })
}

/// Runs `f` on a helper thread inside network namespace `ns`
/// (`/run/netns/NAME`); sockets it opens stay in that namespace.
pub fn in_netns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> Result<R> {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("network namespace {ns}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> Result<R> {
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering network namespace {ns}"))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Probes the guest responder at `addr` `count` times from namespace `ns`
/// and keeps the exchange with the least round trip.
pub fn measure(ns: &str, addr: SocketAddr, count: usize) -> Result<Truth> {
    let samples = in_netns(ns, || {
        (0..count)
            .filter_map(|_| probe::probe_offset(addr, Duration::from_millis(500)).ok())
            .collect::<Vec<_>>()
    })?;
    best(&samples).with_context(|| format!("no truth reply from {addr} in {count} tries"))
}

/// What a truth measurement says about `|error| < bound`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the bound, measured precisely enough.
    Pass,
    /// Outside the bound, measured precisely enough.
    Fail,
    /// Half the round trip exceeds a quarter of the bound: no verdict.
    Inconclusive,
}

/// Judges `truth` against `bound` seconds.
pub fn judge(truth: Truth, bound: f64) -> Verdict {
    if truth.bound_s() > bound / 4.0 {
        Verdict::Inconclusive
    } else if truth.error_s.abs() < bound {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

/// A least-squares slope with its standard error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slope {
    /// dy/dx.
    pub slope: f64,
    /// Its standard error.
    pub stderr: f64,
    /// Points used.
    pub n: usize,
    /// The span of x covered.
    pub span: f64,
}

/// The least-squares slope of `points` (x, y); `None` with fewer than three
/// points or no spread in x.
pub fn slope(points: &[(f64, f64)]) -> Option<Slope> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    #[allow(clippy::cast_precision_loss)] // a few thousand points at most
    let nf = n as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let b = sxy / sxx;
    let a = my - b * mx;
    let rss: f64 = points.iter().map(|p| (p.1 - a - b * p.0).powi(2)).sum();
    let stderr = (rss / (nf - 2.0) / sxx).sqrt();
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
    Some(Slope {
        slope: b,
        stderr,
        n,
        span: hi - lo,
    })
}

/// The reply to a mode-3 `request` received at `t2` (NTP timestamps),
/// sent at `t3`; `None` for anything that is not a client request.
pub fn reply(request: &[u8], t2: u64, t3: u64) -> Option<[u8; ntp::HEADER_LEN]> {
    let h = ntp::Header::parse(request)?;
    (h.mode == 3).then(|| ntp::reply(&h, 1, *b"TRUE", t2, t3))
}

/// Answers truth probes on `addr` for at most `max` (inside a guest): the
/// receive timestamp is the kernel's (`SO_TIMESTAMPNS`), the transmit
/// timestamp is read right before sending.
pub fn serve(addr: SocketAddr, max: Duration) -> Result<u64> {
    let socket = UdpSocket::bind(addr).with_context(|| format!("bind {addr}"))?;
    setsockopt(&socket, sockopt::ReceiveTimestampns, &true).context("SO_TIMESTAMPNS")?;
    let deadline = Instant::now() + max;
    let mut buf = [0u8; 512];
    let mut answered = 0u64;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        if nix::poll::poll(&mut fds, PollTimeout::from(ms)).context("poll")? == 0 {
            continue;
        }
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let (len, from, rx) = {
            let msg = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            )
            .context("recvmsg")?;
            let rx = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmTimestampns(ts) => Some(ts),
                    _ => None,
                })
            });
            let from = msg.address.and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
            });
            (msg.bytes, from, rx)
        };
        let (Some(from), Some(rx)) = (from, rx) else {
            continue;
        };
        #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
        // CLOCK_REALTIME after 1970; nanoseconds below 1e9
        let t2 = ntp::from_unix(rx.tv_sec() as u64, rx.tv_nsec() as u32);
        let t3 = ntp::timestamp(SystemTime::now());
        if let Some(out) = reply(&buf[..len.min(buf.len())], t2, t3) {
            socket.send_to(&out, from).context("reply")?;
            answered += 1;
        }
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(offset_s: f64, delay_s: f64) -> probe::Sample {
        probe::Sample {
            offset_s,
            delay_s,
            stratum: 1,
        }
    }

    #[test]
    fn keeps_least_round_trip() {
        let t = best(&[sample(0.3, 0.01), sample(0.1, 0.002), sample(0.2, 0.005)]).unwrap();
        assert_eq!(
            t,
            Truth {
                error_s: 0.1,
                rtt_s: 0.002
            }
        );
        assert_eq!(t.bound_s(), 0.001);
        assert!(best(&[]).is_none());
    }

    #[test]
    fn verdict_needs_a_tight_measurement() {
        let t = |error_s, rtt_s| Truth { error_s, rtt_s };
        assert_eq!(judge(t(0.0005, 0.0004), 0.001), Verdict::Pass);
        assert_eq!(judge(t(0.002, 0.0004), 0.001), Verdict::Fail);
        // Half the RTT (0.3 ms) over a quarter of the bound (0.25 ms).
        assert_eq!(judge(t(0.0, 0.0006), 0.001), Verdict::Inconclusive);
    }

    #[test]
    fn fits_a_slope_with_its_error() {
        let exact: Vec<_> = (0..10)
            .map(|i| (f64::from(i), 2.0 + 3e-6 * f64::from(i)))
            .collect();
        let s = slope(&exact).unwrap();
        assert!((s.slope - 3e-6).abs() < 1e-12);
        assert!(s.stderr < 1e-12);
        assert_eq!((s.n, s.span), (10, 9.0));
        let noisy: Vec<_> = (0..10)
            .map(|i| (f64::from(i), if i % 2 == 0 { 1e-3 } else { -1e-3 }))
            .collect();
        let s = slope(&noisy).unwrap();
        assert!(s.stderr > 1e-5);
        assert!(slope(&exact[..2]).is_none());
        assert!(slope(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]).is_none());
    }

    #[test]
    fn replies_only_to_client_requests() {
        let req = ntp::request(3, 7);
        let out = reply(&req, 11, 12).unwrap();
        assert_eq!(out[0] & 7, 4);
        assert_eq!(&out[24..32], &7u64.to_be_bytes());
        assert_eq!(&out[32..40], &11u64.to_be_bytes());
        assert_eq!(&out[40..48], &12u64.to_be_bytes());
        assert!(reply(&ntp::request(4, 7), 1, 2).is_none());
        assert!(reply(&req[..10], 1, 2).is_none());
    }

    #[test]
    fn serves_a_local_probe() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        drop(socket);
        let server = std::thread::spawn(move || serve(addr, Duration::from_secs(3)));
        let got =
            crate::scenario::wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
                probe::probe_offset(addr, Duration::from_millis(200)).ok()
            })
            .unwrap();
        // The same clock on both sides: only the measurement error remains.
        assert!(got.offset_s.abs() <= got.delay_s / 2.0 + 1e-3, "{got:?}");
        assert!(server.join().unwrap().unwrap() >= 1);
    }
}
