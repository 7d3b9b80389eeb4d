//! strata-net: VRF- and namespace-aware UDP sockets with kernel receive
//! timestamps and packet info.
//!
//! This crate plays the role quinn-udp plays for quinn: it owns every
//! socket option and control message the daemon needs, and nothing else.
//! The protocol engines never see a socket; the daemon wraps a
//! [`UdpSocket`] in its event loop (it implements `AsFd`/`AsRawFd` and is
//! always non-blocking), feeds each [`RecvMeta`] to an engine and sends
//! whatever the engine asks for with a [`Transmit`].
//!
//! # Placement model
//!
//! A socket lives somewhere, described by [`Placement`]:
//!
//! - [`Placement::Default`]: the daemon's own network namespace.
//! - [`Placement::Device`]: the daemon's namespace, but bound with
//!   `SO_BINDTODEVICE` to one device, typically a VRF master device, so it
//!   only sees (and routes through) that VRF.
//! - [`Placement::Netns`]: inside the named namespace `/run/netns/NAME`
//!   (as made by `ip netns add`). The socket is created on a short-lived
//!   helper thread that has entered the namespace ([`in_netns`]); a socket
//!   keeps the namespace it was created in, so the daemon's own threads
//!   never switch namespace.
//!
//! # Timestamps
//!
//! Every received datagram carries a host `CLOCK_REALTIME` receive time
//! ([`HostTime`]). The kernel stamps it when the packet arrives
//! (`SO_TIMESTAMPNS`), which keeps scheduling delay of the daemon out of
//! the measurement ([`TimestampSource::Kernel`]). Where the kernel gives
//! no timestamp, the time is read right after `recvmsg` returns and marked
//! [`TimestampSource::Software`].
//!
//! # Packet info
//!
//! `IP_PKTINFO`/`IPV6_RECVPKTINFO` tell which local address and interface
//! a datagram came to ([`RecvMeta::dst_ip`], [`RecvMeta::ifindex`]). A
//! server bound to a wildcard address answers with
//! [`Transmit::src_ip`] set to that address, so the reply leaves from the
//! address the request was sent to.
//!
//! # Degradation
//!
//! The full feature set is Linux only. If the kernel refuses
//! `SO_TIMESTAMPNS`, sockets still work with software timestamps
//! ([`UdpSocket::kernel_timestamps`] says which). If a control message is
//! missing or was cut short, the matching [`RecvMeta`] field is `None` (or
//! the timestamp is software). On other operating systems sockets work
//! with software timestamps only, without packet info, and
//! [`Placement::Device`]/[`Placement::Netns`] fail with
//! [`NetError::Unsupported`].
//!
//! # Batches
//!
//! A server answering at the kernel's limit takes many datagrams per
//! system call: [`UdpSocket::recv_batch`] (`recvmmsg`) fills a
//! preallocated [`RecvBatch`] with datagrams and the same [`RecvMeta`] as
//! [`UdpSocket::recv`] (kernel timestamp, packet info), and
//! [`UdpSocket::send_batch`] (`sendmmsg`) sends what was written into a
//! [`SendBatch`], each datagram with its own [`Transmit`] (source address
//! and interface through packet info). Neither allocates per call. A worker
//! thread switches its socket to blocking receives with a timeout
//! ([`UdpSocket::set_blocking_recv`]); [`UdpSocket::send`] and
//! [`UdpSocket::recv`] never block, so an event loop may share the socket.
//!
//! # Truncated datagrams
//!
//! A datagram larger than the receive buffer is consumed and reported as
//! an [`std::io::Error`] of kind [`std::io::ErrorKind::InvalidData`] that
//! wraps [`NetError::Truncated`]; test for it with [`is_truncated`]. The
//! socket stays usable.
//!
//! # Example
//!
//! Two sockets on loopback; the receiver learns the sender, the local
//! address the datagram was sent to, and when it arrived:
//!
//! ```
//! use std::time::Duration;
//! use strata_net::{SocketOptions, Transmit, UdpSocket};
//!
//! let loopback = "127.0.0.1:0".parse().unwrap();
//! let rx = UdpSocket::open(&SocketOptions::new(loopback))?;
//! let tx = UdpSocket::open(&SocketOptions::new(loopback))?;
//! rx.set_blocking_recv(Some(Duration::from_secs(5)))?;
//!
//! tx.send(b"hello", &Transmit::to(rx.local_addr()?))?;
//! let mut buf = [0u8; 64];
//! let meta = rx.recv(&mut buf)?;
//! assert_eq!(&buf[..meta.len], b"hello");
//! assert_eq!(meta.src, tx.local_addr()?);
//! println!("arrived at {:?} ({:?} timestamp)", meta.rx_time, meta.ts_source);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_debug_implementations)]

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod batch;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as sys;

#[cfg(not(target_os = "linux"))]
mod fallback;
#[cfg(not(target_os = "linux"))]
use fallback as sys;

pub use batch::{RecvBatch, SendBatch, MAX_BATCH};
pub use sys::{
    device_ifindexes, ifindex, in_netns, interface_address, is_local_address, netns_exists,
    UdpSocket,
};

/// The directory where named network namespaces are mounted (`ip netns`).
pub const NETNS_DIR: &str = "/run/netns";

/// Errors from opening and configuring sockets.
///
/// Messages name the namespace, device or address involved. For
/// [`NetError::Io`] the `Display` text is the context only; the OS error is
/// its [`std::error::Error::source`] (print the chain, e.g. anyhow's `{:#}`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The named network namespace does not exist under [`NETNS_DIR`] (or
    /// the name is not a valid namespace name).
    #[error("network namespace {0:?} does not exist (looked in /run/netns)")]
    NoSuchNamespace(String),
    /// The named network device does not exist.
    #[error("network device {0:?} does not exist")]
    NoSuchDevice(String),
    /// The network device has no usable address of the wanted family.
    #[error("network device {device:?} has no {family} address")]
    NoAddress {
        /// The device.
        device: String,
        /// `"IPv4"` or `"IPv6"`.
        family: &'static str,
    },
    /// An operating-system call failed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the address, device or namespace.
        context: String,
        /// The underlying OS error.
        source: io::Error,
    },
    /// An address given for a multicast operation is not a multicast group.
    #[error("{0} is not a multicast group address")]
    NotMulticast(IpAddr),
    /// An address of one family was used with a socket of the other.
    #[error("{addr} does not match the address family of the socket bound to {local}")]
    FamilyMismatch {
        /// The offending address.
        addr: IpAddr,
        /// The socket's local address.
        local: SocketAddr,
    },
    /// A received datagram did not fit into the buffer; its tail was lost.
    /// Returned wrapped in an [`io::Error`] by [`UdpSocket::recv`].
    #[error("received datagram truncated to the {capacity}-byte buffer")]
    Truncated {
        /// The size of the buffer the datagram was received into.
        capacity: usize,
    },
    /// The operation is not available on this operating system.
    #[error("{0} is not supported on this operating system")]
    Unsupported(&'static str),
}

impl NetError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        NetError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Returns true if `err` (from [`UdpSocket::recv`]) reports a datagram that
/// was truncated because the buffer was too small.
#[must_use]
pub fn is_truncated(err: &io::Error) -> bool {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<NetError>())
        .is_some_and(|e| matches!(e, NetError::Truncated { .. }))
}

/// Where a socket lives: the default namespace, bound to a device
/// (`SO_BINDTODEVICE`, e.g. a VRF), or inside a named netns
/// (`/run/netns/NAME`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Placement {
    /// The daemon's own network namespace, no device binding.
    #[default]
    Default,
    /// The daemon's namespace, bound to this device (e.g. a VRF).
    Device(String),
    /// Inside the named network namespace (`/run/netns/NAME`).
    Netns(String),
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Default => f.write_str("the default namespace"),
            Placement::Device(dev) => write!(f, "device {dev:?}"),
            Placement::Netns(ns) => write!(f, "network namespace {ns:?}"),
        }
    }
}

/// How to open a [`UdpSocket`].
#[derive(Clone, Debug)]
pub struct SocketOptions {
    /// The local address to bind (port 0 picks a free port).
    pub local: SocketAddr,
    /// Where the socket lives.
    pub placement: Placement,
    /// Set `SO_REUSEPORT`.
    pub reuse_port: bool,
    /// Set `SO_BROADCAST` (needed to send to a broadcast address).
    pub broadcast: bool,
}

impl SocketOptions {
    /// Options for a socket bound to `local` in the default placement, with
    /// `reuse_port` and `broadcast` off.
    #[must_use]
    pub fn new(local: SocketAddr) -> Self {
        SocketOptions {
            local,
            placement: Placement::Default,
            reuse_port: false,
            broadcast: false,
        }
    }
}

/// A host `CLOCK_REALTIME` timestamp: seconds and nanoseconds since the
/// Unix epoch. `nanos` is always below 1 000 000 000; times before the
/// epoch have negative `secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostTime {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
}

const NANOS_PER_SEC: i128 = 1_000_000_000;

impl HostTime {
    /// Reads the host's `CLOCK_REALTIME` now.
    #[must_use]
    pub fn now() -> HostTime {
        let now = SystemTime::now();
        match now.duration_since(UNIX_EPOCH) {
            Ok(after) => HostTime::from_duration_after_epoch(after),
            Err(before) => HostTime::from_unix_nanos(
                -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
            )
            .unwrap_or(HostTime {
                secs: i64::MIN,
                nanos: 0,
            }),
        }
    }

    /// Builds a time from seconds and nanoseconds, or `None` if
    /// `nanos >= 1_000_000_000`.
    #[must_use]
    pub fn new(secs: i64, nanos: u32) -> Option<HostTime> {
        (nanos < 1_000_000_000).then_some(HostTime { secs, nanos })
    }

    fn from_duration_after_epoch(d: Duration) -> HostTime {
        HostTime {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        }
    }

    /// Nanoseconds since the Unix epoch (negative before it).
    #[must_use]
    pub fn as_unix_nanos(self) -> i128 {
        i128::from(self.secs) * NANOS_PER_SEC + i128::from(self.nanos)
    }

    /// The time `nanos` nanoseconds after the Unix epoch, or `None` if it
    /// is out of range.
    #[must_use]
    pub fn from_unix_nanos(nanos: i128) -> Option<HostTime> {
        let secs = i64::try_from(nanos.div_euclid(NANOS_PER_SEC)).ok()?;
        let sub = u32::try_from(nanos.rem_euclid(NANOS_PER_SEC)).ok()?;
        Some(HostTime { secs, nanos: sub })
    }
}

/// Where a receive timestamp came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimestampSource {
    /// Taken by the kernel when the packet arrived (`SO_TIMESTAMPNS`).
    Kernel,
    /// Read by strata right after the datagram was received.
    Software,
}

/// What [`UdpSocket::recv`] learned about one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    /// The datagram's length in bytes (at the start of the buffer).
    pub len: usize,
    /// The sender's address.
    pub src: SocketAddr,
    /// The destination address in the packet's IP header (for multicast or
    /// broadcast that is the group or broadcast address), if known.
    pub dst_ip: Option<IpAddr>,
    /// The index of the interface the datagram arrived on, if known.
    pub ifindex: Option<u32>,
    /// The host `CLOCK_REALTIME` time the datagram was received.
    pub rx_time: HostTime,
    /// Where `rx_time` came from.
    pub ts_source: TimestampSource,
}

/// Where [`UdpSocket::send`] sends one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The destination address.
    pub dst: SocketAddr,
    /// The source address to use (`IP_PKTINFO`/`IPV6_PKTINFO`), so replies
    /// leave from the address the request came to. `None` lets the kernel
    /// choose. Must be a local unicast address of the same family as `dst`.
    pub src_ip: Option<IpAddr>,
    /// The outgoing interface index, or `None` to let routing decide.
    pub ifindex: Option<u32>,
}

impl Transmit {
    /// A transmit to `dst` with kernel-chosen source and interface.
    #[must_use]
    pub fn to(dst: SocketAddr) -> Self {
        Transmit {
            dst,
            src_ip: None,
            ifindex: None,
        }
    }

    /// The reply to a datagram described by `meta`: sent back to its source,
    /// from the unicast address it arrived at (a multicast or broadcast
    /// destination is not used as the source; the kernel chooses then).
    #[must_use]
    pub fn reply_to(meta: &RecvMeta) -> Self {
        let src_ip = meta.dst_ip.filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_multicast() && !v4.is_broadcast(),
            IpAddr::V6(v6) => !v6.is_multicast(),
        });
        Transmit {
            dst: meta.src,
            src_ip,
            ifindex: None,
        }
    }
}

/// Checks that `name` can be a file name under [`NETNS_DIR`].
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn valid_netns_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn host_time_nanos_round_trip() {
        for (secs, nanos) in [(0, 0), (1, 999_999_999), (-1, 5), (1_700_000_000, 123)] {
            let t = HostTime::new(secs, nanos).unwrap();
            assert_eq!(HostTime::from_unix_nanos(t.as_unix_nanos()), Some(t));
        }
        assert_eq!(
            HostTime::from_unix_nanos(-1),
            Some(HostTime {
                secs: -1,
                nanos: 999_999_999
            })
        );
        assert_eq!(HostTime::new(0, 1_000_000_000), None);
        assert_eq!(HostTime::from_unix_nanos(i128::MAX), None);
    }

    #[test]
    fn host_time_now_is_after_2020() {
        assert!(HostTime::now().secs > 1_577_836_800);
        assert!(HostTime::now().nanos < 1_000_000_000);
    }

    #[test]
    fn truncated_detection() {
        let err = io::Error::new(
            io::ErrorKind::InvalidData,
            NetError::Truncated { capacity: 4 },
        );
        assert!(is_truncated(&err));
        assert!(!is_truncated(&io::Error::from(io::ErrorKind::WouldBlock)));
        assert!(!is_truncated(&io::Error::new(
            io::ErrorKind::InvalidData,
            "other"
        )));
    }

    #[test]
    fn reply_uses_unicast_destination_only() {
        let mut meta = RecvMeta {
            len: 48,
            src: "192.0.2.1:123".parse().unwrap(),
            dst_ip: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
            ifindex: Some(1),
            rx_time: HostTime::now(),
            ts_source: TimestampSource::Kernel,
        };
        let tx = Transmit::reply_to(&meta);
        assert_eq!(tx.dst, meta.src);
        assert_eq!(tx.src_ip, meta.dst_ip);
        meta.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(224, 0, 1, 1)));
        assert_eq!(Transmit::reply_to(&meta).src_ip, None);
        meta.dst_ip = Some(IpAddr::V4(Ipv4Addr::BROADCAST));
        assert_eq!(Transmit::reply_to(&meta).src_ip, None);
        meta.dst_ip = Some(IpAddr::V6("ff02::101".parse::<Ipv6Addr>().unwrap()));
        assert_eq!(Transmit::reply_to(&meta).src_ip, None);
    }

    #[test]
    fn netns_names() {
        assert!(valid_netns_name("pe1-vpna"));
        for bad in ["", ".", "..", "a/b", "../etc", "a\0b"] {
            assert!(!valid_netns_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn placement_display_names_target() {
        assert_eq!(
            Placement::Device("vrf-b".into()).to_string(),
            "device \"vrf-b\""
        );
        assert_eq!(
            Placement::Netns("pe1".into()).to_string(),
            "network namespace \"pe1\""
        );
    }
}
