//! `stratactl trace`: follow the chain of reference IDs up to stratum 1.
//!
//! The event loop resolves the start (the given address, else the system
//! peer) and the instance, and hands a task the instance's client sockets.
//! The task sends plain mode-3 queries whose transmit timestamp is a random
//! cookie, and registers each in the `Probes` table; the event loop's
//! `handle_datagram` hands a datagram from a pending destination whose
//! origin timestamp equals the cookie to the task instead of the engine.
//! The next hop is the reply's reference ID read as an IPv4 address.
//! Bounded: [`MAX_HOPS`] queries, [`QUERY_TIMEOUT`] each, [`TRACE_TIMEOUT`]
//! in all.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_engine::{InstanceId, SocketId};
use strata_net::{HostTime, Transmit, UdpSocket};
use strata_wire::{
    offset_and_delay, Mode, NtpDuration, NtpPacket, NtpRepr, NtpTimestamp, ReferenceId,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use super::Daemon;
use crate::config::DEFAULT_NTP_PORT;
use crate::control::{Reply, Trace, TraceHop};

/// The most servers a trace queries.
pub const MAX_HOPS: usize = 16;
/// How long a trace waits for each reply.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole trace may take.
pub const TRACE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a trace cannot start, or why a query has no usable answer (where the trace ends).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// `--instance` names no instance.
    #[error("unknown instance {0:?}")]
    UnknownInstance(String),
    /// No address given and no system peer.
    #[error("no system peer to start from; give an address")]
    NoSystemPeer,
    /// The address does not parse.
    #[error("bad address {0:?} (expected ip or ip:port)")]
    BadAddress(String),
    /// The instance has no client socket of the address's family.
    #[error("no {family} client socket in instance {instance}")]
    NoSocket {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The instance.
        instance: String,
    },
    /// The operating system's generator failed.
    #[error("no random cookie (getrandom): {0}")]
    Random(getrandom::Error),
    /// The query could not be sent.
    #[error("sending to {dst}: {source}")]
    Send {
        /// Where to.
        dst: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No reply in time.
    #[error("no reply from {dst} within {} s", QUERY_TIMEOUT.as_secs())]
    NoReply {
        /// The server.
        dst: SocketAddr,
    },
    /// The reply is not a server's.
    #[error("{dst} answered in mode {mode:?}, not as a server")]
    NotServer {
        /// The server.
        dst: SocketAddr,
        /// The mode it answered in.
        mode: Mode,
    },
}

/// A reply delivered to a probe: the packet and its receive time (daemon clock).
type ProbeReply = (NtpRepr, NtpTimestamp);

/// A pending probe: its client socket, destination and cookie.
type ProbeKey = (SocketId, SocketAddr, u64);

/// Pending probe queries: (client socket, destination, cookie) → the waiting task.
#[derive(Clone, Default)]
pub(super) struct Probes(Arc<Mutex<HashMap<ProbeKey, oneshot::Sender<ProbeReply>>>>);

impl Probes {
    fn register(&self, key: ProbeKey) -> oneshot::Receiver<ProbeReply> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut table) = self.0.lock() {
            table.insert(key, tx);
        }
        rx
    }

    fn forget(&self, key: &ProbeKey) {
        if let Ok(mut table) = self.0.lock() {
            table.remove(key);
        }
    }

    /// Hands `data` to the probe waiting for it; `false` when it is not a
    /// reply to a pending probe (the engine gets it).
    pub(super) fn deliver(
        &self,
        socket: SocketId,
        src: SocketAddr,
        data: &[u8],
        rx_time: NtpTimestamp,
    ) -> bool {
        let Ok(mut table) = self.0.lock() else {
            return false;
        };
        if table.is_empty() {
            return false;
        }
        let Ok(repr) = NtpPacket::new_checked(data).and_then(|p| NtpRepr::parse(&p)) else {
            return false;
        };
        let key = (socket, src, repr.origin_timestamp.to_bits());
        match table.remove(&key) {
            Some(tx) => {
                let _ = tx.send((repr, rx_time));
                true
            }
            None => false,
        }
    }
}

/// What a trace needs from the event loop.
pub(super) struct TraceStart {
    /// The instance's name (for the reply).
    pub(super) instance: String,
    /// The first server.
    pub(super) start: SocketAddr,
    /// The instance's client sockets, IPv4 and IPv6 (whichever opened).
    pub(super) sockets: [Option<(SocketId, Arc<AsyncFd<UdpSocket>>)>; 2],
    /// The daemon clock minus the host clock, seconds (the virtual clock's
    /// offset; zero for the others).
    pub(super) clock_minus_host: f64,
    /// The table replies are matched in.
    pub(super) probes: Probes,
}

/// Where a trace goes after a reply, or why it stops there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    /// Query this server next.
    Query(SocketAddr),
    /// The trace ends, for this reason.
    Stop(String),
}

/// The hop after `current`, given its reply's stratum and reference ID, and
/// the servers already queried.
pub fn next_hop(
    current: SocketAddr,
    stratum: u8,
    refid: ReferenceId,
    visited: &[SocketAddr],
) -> NextHop {
    match stratum {
        0 => {
            return NextHop::Stop(format!(
                "{current} is unsynchronized or refused (kiss code {refid})"
            ))
        }
        1 => return NextHop::Stop(format!("stratum 1 ({refid})")),
        16.. => return NextHop::Stop(format!("{current} is unsynchronized (stratum {stratum})")),
        _ => {}
    }
    if current.is_ipv6() {
        return NextHop::Stop(format!(
            "{current} is reached over IPv6: its reference ID {refid} is a hash of an IPv6 address, not an address to follow"
        ));
    }
    if refid.as_ascii().is_some() {
        return NextHop::Stop(format!("reference ID {refid} is a code, not an address"));
    }
    let ip = Ipv4Addr::from(refid.as_bytes());
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return NextHop::Stop(format!("reference ID {ip} is not a server address"));
    }
    let next = SocketAddr::new(IpAddr::V4(ip), DEFAULT_NTP_PORT);
    if visited.contains(&next) {
        return NextHop::Stop(format!("loop: {next} was already queried"));
    }
    NextHop::Query(next)
}

/// Runs a trace and replies with it.
pub(super) async fn run(start: TraceStart, reply: oneshot::Sender<Reply>) {
    let result = tokio::time::timeout(TRACE_TIMEOUT, trace(&start)).await;
    let _ = reply.send(match result {
        Ok(trace) => Reply::Trace(trace),
        Err(_) => Reply::Error(format!(
            "trace took longer than {} s",
            TRACE_TIMEOUT.as_secs()
        )),
    });
}

async fn trace(start: &TraceStart) -> Trace {
    let mut hops = Vec::new();
    let mut visited = Vec::new();
    let mut current = start.start;
    let end = loop {
        if hops.len() >= MAX_HOPS {
            break format!("{MAX_HOPS} hops queried, stopping");
        }
        visited.push(current);
        let (repr, offset, delay) = match query(start, current).await {
            Ok(reply) => reply,
            Err(why) => break why.to_string(),
        };
        hops.push(TraceHop {
            address: current.to_string(),
            stratum: repr.stratum,
            offset_s: offset,
            delay_s: delay,
            root_distance_s: repr.root_delay.to_seconds() / 2.0 + repr.root_dispersion.to_seconds(),
            refid: repr.reference_id.to_string(),
        });
        match next_hop(current, repr.stratum, repr.reference_id, &visited) {
            NextHop::Query(next) => current = next,
            NextHop::Stop(why) => break why,
        }
    };
    Trace {
        instance: start.instance.clone(),
        hops,
        end,
    }
}

/// The daemon clock's time now.
fn clock_now(clock_minus_host: f64) -> NtpTimestamp {
    let t = HostTime::now();
    NtpTimestamp::from_bits(
        NtpTimestamp::from_unix(t.secs, t.nanos)
            .to_bits()
            .wrapping_add_signed(NtpDuration::from_seconds(clock_minus_host).to_bits()),
    )
}

/// One query: the reply, offset and delay, or why there is none.
async fn query(start: &TraceStart, dst: SocketAddr) -> Result<(NtpRepr, f64, f64), TraceError> {
    let Some((socket, io)) = &start.sockets[usize::from(dst.is_ipv6())] else {
        return Err(TraceError::NoSocket {
            family: if dst.is_ipv6() { "IPv6" } else { "IPv4" },
            instance: start.instance.clone(),
        });
    };
    let cookie = cookie()?;
    let key = (*socket, dst, cookie);
    let mut buf = [0u8; strata_wire::HEADER_LEN];
    let request = NtpRepr::client_request(0, NtpTimestamp::from_bits(cookie));
    // A header always fits its buffer.
    let _ = request.emit_to_slice(&mut buf);
    let rx = start.probes.register(key);
    let t1 = clock_now(start.clock_minus_host);
    if let Err(source) = io.get_ref().send(&buf, &Transmit::to(dst)) {
        start.probes.forget(&key);
        return Err(TraceError::Send { dst, source });
    }
    let reply = tokio::time::timeout(QUERY_TIMEOUT, rx).await;
    start.probes.forget(&key);
    let Ok(Ok((repr, t4))) = reply else {
        return Err(TraceError::NoReply { dst });
    };
    if repr.mode != Mode::Server {
        return Err(TraceError::NotServer {
            dst,
            mode: repr.mode,
        });
    }
    let (offset, delay) = offset_and_delay(t1, repr.receive_timestamp, repr.transmit_timestamp, t4);
    Ok((repr, offset, delay))
}

/// `ip:port`, or `ip` with the NTP port.
fn parse_address(text: &str) -> Result<SocketAddr, TraceError> {
    let text = text.trim();
    text.parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, DEFAULT_NTP_PORT))
        })
        .map_err(|_| TraceError::BadAddress(text.to_owned()))
}

/// A query's cookie, from the operating system's generator: a trace query is rare, so each
/// draws its own.
fn cookie() -> Result<u64, TraceError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(TraceError::Random)?;
    Ok(u64::from_le_bytes(bytes))
}

impl Daemon {
    /// Resolves a trace request and starts its task, which replies on `reply`.
    pub(super) fn start_trace(
        &mut self,
        address: Option<&str>,
        instance: Option<&str>,
        reply: oneshot::Sender<Reply>,
    ) {
        match self.trace_start(address, instance) {
            Ok(start) => {
                tokio::spawn(run(start, reply));
            }
            Err(why) => {
                let _ = reply.send(Reply::Error(why.to_string()));
            }
        }
    }

    fn trace_start(
        &mut self,
        address: Option<&str>,
        instance: Option<&str>,
    ) -> Result<TraceStart, TraceError> {
        let named = match instance {
            Some(name) => Some(
                (self.instances.id(name))
                    .ok_or_else(|| TraceError::UnknownInstance(name.to_owned()))?,
            ),
            None => None,
        };
        let (instance, start) = match address {
            Some(text) => (named.unwrap_or(InstanceId::DEFAULT), parse_address(text)?),
            None => match self.node.status().system_peer {
                Some((_, inst, addr)) if named.is_none_or(|n| n == inst) => (inst, addr),
                _ => return Err(TraceError::NoSystemPeer),
            },
        };
        let mut sockets = [None, None];
        for (slot, v6) in sockets.iter_mut().zip([false, true]) {
            if let Ok(id) = self.client_socket(instance, v6) {
                let fd = self.sockets.get(id).and_then(|s| s.async_fd());
                *slot = fd.map(|fd| (id, Arc::clone(fd)));
            }
        }
        let host = HostTime::now();
        let host = NtpTimestamp::from_unix(host.secs, host.nanos);
        let clock_minus_host = (self.clock.from_host(host) - host).to_seconds();
        Ok(TraceStart {
            instance: self.instances.name(instance),
            start,
            sockets,
            clock_minus_host,
            probes: self.probes.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn follows_an_ipv4_refid_to_port_123() {
        let hop = next_hop(
            v4("10.200.1.2:123"),
            2,
            ReferenceId::new([10, 200, 2, 1]),
            &[v4("10.200.1.2:123")],
        );
        assert_eq!(hop, NextHop::Query(v4("10.200.2.1:123")));
    }

    #[test]
    fn stops_at_stratum_1_with_its_code() {
        let NextHop::Stop(why) = next_hop(v4("10.0.0.1:123"), 1, ReferenceId::GPS, &[]) else {
            panic!("stratum 1 ends the trace");
        };
        assert!(why.contains("stratum 1") && why.contains("GPS"), "{why}");
    }

    #[test]
    fn stops_at_kiss_codes_unsynchronized_and_codes() {
        for (stratum, refid) in [
            (0, ReferenceId::INIT),
            (16, ReferenceId::new([10, 0, 0, 1])),
            (3, ReferenceId::LOCL),
        ] {
            assert!(
                matches!(
                    next_hop(v4("10.0.0.1:123"), stratum, refid, &[]),
                    NextHop::Stop(_)
                ),
                "{stratum} {refid}"
            );
        }
    }

    #[test]
    fn stops_at_ipv6_and_says_so() {
        let NextHop::Stop(why) = next_hop(
            "[fd00:200::1]:123".parse().unwrap(),
            2,
            ReferenceId::new([0xab, 0x12, 0x34, 0x56]),
            &[],
        ) else {
            panic!("an IPv6 hop ends the trace");
        };
        assert!(why.contains("hash"), "{why}");
    }

    #[test]
    fn stops_on_loops_and_non_addresses() {
        let a = v4("10.0.0.1:123");
        assert!(matches!(
            next_hop(a, 2, ReferenceId::new([10, 0, 0, 1]), &[a]),
            NextHop::Stop(why) if why.contains("loop")
        ));
        for bytes in [[0, 0, 0, 0], [255, 255, 255, 255], [224, 0, 1, 1]] {
            assert!(matches!(
                next_hop(a, 2, ReferenceId::new(bytes), &[a]),
                NextHop::Stop(_)
            ));
        }
    }

    #[test]
    fn probes_match_socket_source_and_cookie() {
        let probes = Probes::default();
        let dst = v4("127.0.0.1:123");
        let mut rx = probes.register((SocketId(1), dst, 42));
        let mut reply = NtpRepr::client_request(0, NtpTimestamp::ZERO);
        reply.mode = strata_wire::Mode::Server;
        reply.stratum = 1;
        let mut buf = [0u8; strata_wire::HEADER_LEN];
        reply.origin_timestamp = NtpTimestamp::from_bits(41);
        reply.emit_to_slice(&mut buf).unwrap();
        assert!(!probes.deliver(SocketId(1), dst, &buf, NtpTimestamp::ZERO));
        reply.origin_timestamp = NtpTimestamp::from_bits(42);
        reply.emit_to_slice(&mut buf).unwrap();
        assert!(!probes.deliver(SocketId(2), dst, &buf, NtpTimestamp::ZERO));
        assert!(!probes.deliver(SocketId(1), v4("127.0.0.2:123"), &buf, NtpTimestamp::ZERO));
        assert!(!probes.deliver(SocketId(1), dst, &buf[..10], NtpTimestamp::ZERO));
        assert!(rx.try_recv().is_err());
        assert!(probes.deliver(SocketId(1), dst, &buf, NtpTimestamp::from_bits(7)));
        let (repr, t4) = rx.try_recv().unwrap();
        assert_eq!((repr.stratum, t4), (1, NtpTimestamp::from_bits(7)));
        // Delivered once.
        assert!(!probes.deliver(SocketId(1), dst, &buf, NtpTimestamp::ZERO));
    }
}
