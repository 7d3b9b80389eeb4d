//! What goes in and out of a node: a received datagram's metadata and
//! the datagrams the driver must send, with the route each leaves by.

use core::net::{IpAddr, SocketAddr};

use strata_wire::NtpTimestamp;

use crate::node::{InstanceId, SocketId};

/// Where and when a datagram arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    /// The instance of the receiving socket.
    pub instance: InstanceId,
    /// The receiving socket.
    pub socket: SocketId,
    /// Whether the socket serves time (a `[[listen]]` socket). Requests on
    /// other sockets are not answered.
    pub listener: bool,
    /// The sender.
    pub src: SocketAddr,
    /// The local address the datagram was sent to, when known.
    pub dst_ip: Option<IpAddr>,
    /// The receiving interface, when known.
    pub ifindex: Option<u32>,
    /// Arrival time on the disciplined clock's timescale (a kernel
    /// timestamp converted by the driver, where available).
    pub rx_time: NtpTimestamp,
}

/// Which socket a datagram leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// This socket: a reply leaves through the socket its request came in
    /// on, a symmetric association through the listener its peer's packets
    /// arrive on, a broadcast/multicast server through the socket it was
    /// configured with.
    Socket(SocketId),
    /// The instance's client socket for the destination's address family:
    /// client requests and calibration volleys.
    Client,
    /// A listening socket of the instance, of the destination's family
    /// (port 123 first): symmetric packets before the peer's first packet
    /// has arrived, so the peer sees them come from the port it sends to.
    Listener,
    /// The socket the driver set up for this broadcast/multicast
    /// destination (a [`crate::BroadcastServerConfig`] without a socket).
    Broadcast,
}

/// A datagram the driver must send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The instance to send in.
    pub instance: InstanceId,
    /// The socket to send from.
    pub route: Route,
    /// Source address to use (the address a request was sent to).
    pub src_ip: Option<IpAddr>,
    /// Outgoing interface, when it matters.
    pub ifindex: Option<u32>,
    /// Destination.
    pub dst: SocketAddr,
    /// Bytes written at the front of the caller's buffer.
    pub len: usize,
}

impl Transmit {
    /// An answer of `len` bytes to the datagram `meta` describes: back to
    /// its sender, through the socket it came in on, from the address it
    /// was sent to.
    pub(crate) fn reply_to(meta: &RecvMeta, len: usize) -> Transmit {
        Transmit {
            instance: meta.instance,
            route: Route::Socket(meta.socket),
            src_ip: meta.dst_ip,
            ifindex: meta.ifindex,
            dst: meta.src,
            len,
        }
    }
}
