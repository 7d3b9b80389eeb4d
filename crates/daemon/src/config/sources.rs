//! The validated source types: unicast `[[server]]`/`[[peer]]` with their source address,
//! and the mode-5 tables (multicast and broadcast servers and clients) with their defaults.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One `[[server]]`: a unicast time source (client/server mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The server's address.
    pub address: SocketAddr,
    /// The instance it belongs to (default `"default"`).
    pub instance: String,
    /// The minimum poll exponent, -4..=17 (default 6).
    pub minpoll: i8,
    /// The maximum poll exponent, -4..=17 and at least `minpoll` (default 10).
    pub maxpoll: i8,
    /// Send a burst of packets at start (default false).
    pub iburst: bool,
    /// Sign packets with this key of `[auth] keys-file` and accept only replies signed with
    /// it (default none).
    pub key: Option<u32>,
    /// `[[peer]]` only: whether symmetric mode waits for an answered calibration exchange
    /// (`"required"`, the default) or also follows an unanswered one (`"best-effort"`).
    pub calibrate: strata_engine::Calibrate,
    /// The address requests are sent from: `source` or `source-interface`, else the
    /// instance's, else the routing table's choice.
    pub source: Option<SourceAddress>,
}

/// Where a unicast source's requests leave from (`source` / `source-interface`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceAddress {
    /// `source = "ADDR"`: this local address (of the server's family).
    Address(IpAddr),
    /// `source-interface = "NAME"`: the address of the server's family this interface has
    /// when the daemon looks (at start, on reload, and every few seconds).
    Interface(String),
}

impl fmt::Display for SourceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceAddress::Address(a) => write!(f, "source {a}"),
            SourceAddress::Interface(i) => write!(f, "source-interface {i}"),
        }
    }
}

impl Server {
    /// The default minimum poll exponent.
    pub const DEFAULT_MINPOLL: i8 = 6;
    /// The default maximum poll exponent.
    pub const DEFAULT_MAXPOLL: i8 = 10;
}

/// The IPv4 NTP multicast group (RFC 5905).
pub const DEFAULT_GROUP_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 1, 1);
/// The default IPv6 multicast scope: site-local, `ff05::101`.
pub const DEFAULT_IPV6_SCOPE: u8 = 5;
/// The default mode-5 poll exponent (64 s).
pub const DEFAULT_BROADCAST_POLL: i8 = 6;
/// The default TTL (IPv4) / hop limit (IPv6) of a multicast server: 16, as
/// the router CLI's `ntp-service multicast-server`, so that mode-5 packets
/// cross routers (ntpd documents 127; the kernel's own default is 1).
pub const DEFAULT_MULTICAST_TTL: u32 = 16;
/// The default recalibration interval of a broadcast/multicast client, s.
pub const DEFAULT_RECALIBRATE: f64 = 3600.0;

/// The IPv6 NTP group `ff0X::101` with scope `scope`.
#[must_use]
pub fn ipv6_ntp_group(scope: u8) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0xff00 | u16::from(scope & 0xf), 0, 0, 0, 0, 0, 0, 0x101)
}

/// One `[[multicast-server]]`: mode 5 to a group every 2^poll s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastServer {
    /// The group with its port (default 224.0.1.1:123, or `ff0X::101` with
    /// `ipv6-scope`).
    pub group: SocketAddr,
    /// The outgoing interface (default: the routing table's choice).
    pub interface: Option<String>,
    /// Poll exponent (default 6).
    pub poll: i8,
    /// IPv4 TTL / IPv6 hop limit (default [`DEFAULT_MULTICAST_TTL`], 16).
    pub ttl: u32,
    /// The instance it belongs to.
    pub instance: String,
    /// Sign every packet with this key (default none).
    pub key: Option<u32>,
}

/// One `[[broadcast-server]]`: mode 5 to a broadcast address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastServer {
    /// The broadcast address with its port (default port 123).
    pub address: SocketAddr,
    /// The outgoing interface.
    pub interface: Option<String>,
    /// Poll exponent (default 6).
    pub poll: i8,
    /// The instance it belongs to.
    pub instance: String,
    /// Sign every packet with this key (default none).
    pub key: Option<u32>,
}

/// One `[[multicast-client]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MulticastClient {
    /// The group to join, with the port to listen on.
    pub group: SocketAddr,
    /// The interface to join it on (default: the routing table's choice).
    pub interface: Option<String>,
    /// Accept unauthenticated servers (default false).
    pub allow_unauthenticated: bool,
    /// Follow only servers signing with this key (default none: any trusted key).
    pub key: Option<u32>,
    /// Recalibrate this often, s (default 3600).
    pub recalibrate: f64,
    /// The instance it belongs to.
    pub instance: String,
}

/// One `[[broadcast-client]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastClient {
    /// The interface broadcasts arrive on (informational; broadcasts to
    /// port 123 of the instance are taken).
    pub interface: Option<String>,
    /// Accept unauthenticated servers (default false).
    pub allow_unauthenticated: bool,
    /// Follow only servers signing with this key (default none: any trusted key).
    pub key: Option<u32>,
    /// Recalibrate this often, s (default 3600).
    pub recalibrate: f64,
    /// The instance it belongs to.
    pub instance: String,
}
