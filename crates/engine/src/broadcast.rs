//! The broadcast/multicast server: sends the node's time in mode 5 to a
//! broadcast address or multicast group every 2^`poll` s, signed when
//! configured with a key, once the node is synchronised (or serves a
//! local reference).

use core::net::SocketAddr;

use strata_wire::{Mode, NtpPacket, NtpTimestamp, HEADER_LEN};

use crate::auth;
use crate::node::{InstanceId, Node, Route, SocketId, Transmit};
use crate::server::ServerState;
use crate::time::{poll_interval, Instant};

/// A broadcast or multicast server: sends mode 5 every 2^`poll` s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroadcastServerConfig {
    /// The instance to send in.
    pub instance: InstanceId,
    /// The broadcast address or multicast group, with the port.
    pub destination: SocketAddr,
    /// Poll exponent: the send interval is 2^`poll` s.
    pub poll: i8,
    /// The socket to send from (set up by the driver with the outgoing
    /// interface and TTL); `None`: the driver picks the one it set up for
    /// the destination ([`Route::Broadcast`]).
    pub socket: Option<SocketId>,
    /// The outgoing interface.
    pub ifindex: Option<u32>,
    /// Sign every packet with this key (clients then accept only packets
    /// signed with it); `None` sends unsigned packets. A packet that cannot
    /// be signed (the key is missing from [`Node::set_keys`]) is not sent.
    pub key: Option<u32>,
}

/// A configured mode-5 sender and its timer.
pub(crate) struct BroadcastServer {
    config: BroadcastServerConfig,
    pub(crate) next_send: Instant,
    pub(crate) due: bool,
}

impl Node {
    /// Adds a broadcast/multicast server; the first packet goes out at `now`
    /// (once the node is synchronised or has a local reference).
    pub fn add_broadcast_server(&mut self, config: BroadcastServerConfig, now: Instant) {
        self.broadcast_servers.push(BroadcastServer {
            config,
            next_send: now,
            due: false,
        });
    }

    /// Marks the servers whose interval has passed as due.
    pub(crate) fn broadcast_timers(&mut self, now: Instant) {
        for b in &mut self.broadcast_servers {
            if now >= b.next_send {
                b.due = true;
                // A steady cadence: never early, never drifting.
                let interval = poll_interval(b.config.poll);
                while b.next_send <= now {
                    b.next_send = b.next_send + interval;
                }
            }
        }
    }

    /// The next due mode-5 packet, written to `buf`. Fails closed: a
    /// packet that cannot be signed (its key is missing from the store) is
    /// not sent.
    pub(crate) fn poll_broadcast(
        &mut self,
        state: &ServerState,
        clock_now: NtpTimestamp,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        while let Some(b) = self.broadcast_servers.iter_mut().find(|b| b.due) {
            b.due = false;
            let config = b.config.clone();
            let packet = state
                .is_synchronized()
                .then(|| broadcast_packet(state, config.poll, clock_now, buf))
                .flatten()
                .and_then(|len| match config.key {
                    None => Some(len),
                    Some(key) => auth::sign_in_place(&self.keys, key, len, buf),
                });
            if let Some(len) = packet {
                self.counters(config.instance).sent += 1;
                return Some(Transmit {
                    instance: config.instance,
                    route: config.socket.map_or(Route::Broadcast, Route::Socket),
                    dst: config.destination,
                    src_ip: None,
                    ifindex: config.ifindex,
                    len,
                });
            }
        }
        None
    }
}

/// Writes a mode-5 packet announcing `state` with `clock_now` as its
/// transmit timestamp.
fn broadcast_packet(
    state: &ServerState,
    poll: i8,
    clock_now: NtpTimestamp,
    buf: &mut [u8],
) -> Option<usize> {
    let out = buf.get_mut(..HEADER_LEN)?;
    let repr = state.header(
        Mode::Broadcast,
        4,
        poll,
        NtpTimestamp::ZERO,
        NtpTimestamp::ZERO,
        clock_now,
    );
    repr.emit(&mut NtpPacket::new_unchecked(out));
    Some(HEADER_LEN)
}
