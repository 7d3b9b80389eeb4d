//! strata-engine: the NTP mode engines, sans-IO.
//!
//! Nothing in this crate opens a socket, reads a clock or spawns a task.
//! The driver (the daemon, a simulator or a test) feeds datagrams and time
//! in and drains what to send, when to wake up and what to do to the
//! clock — in the manner of `quinn-proto`:
//!
//! - inputs: [`Node::handle_datagram`], [`Node::handle_timeout`];
//! - outputs: [`Node::poll_transmit`], [`Node::poll_timeout`] (an absolute
//!   deadline on the caller's monotonic timebase), [`Node::poll_event`].
//!
//! Two timebases meet here: the caller's monotonic [`Instant`] for timers,
//! and the disciplined clock's NTP timescale for packet timestamps. The
//! server side is also available as a [`Responder`] snapshot
//! ([`Node::responder`]), for drivers that answer requests on several
//! threads with the node's own rules.
//!
//! # Randomness
//! Request cookies protect every client exchange against off-path
//! forgery, so the generator [`Node::new`] takes must be a
//! `rand_core::CryptoRng` (seeded from the OS in production):
//!
//! ```
//! use rand_chacha::{rand_core::SeedableRng, ChaCha8Rng};
//! use strata_engine::{Node, NodeConfig};
//! let node = Node::new(NodeConfig::default(), ChaCha8Rng::from_seed([7; 32]));
//! ```
//!
//! A generator that is not cryptographic does not compile:
//!
//! ```compile_fail
//! use rand_chacha::rand_core::{impls, Error, RngCore};
//! use strata_engine::{Node, NodeConfig};
//! struct Counter(u64);
//! impl RngCore for Counter {
//!     fn next_u32(&mut self) -> u32 {
//!         impls::next_u32_via_fill(self)
//!     }
//!     fn next_u64(&mut self) -> u64 {
//!         self.0 += 1;
//!         self.0
//!     }
//!     fn fill_bytes(&mut self, dest: &mut [u8]) {
//!         impls::fill_bytes_via_next(self, dest)
//!     }
//!     fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
//!         Ok(self.fill_bytes(dest))
//!     }
//! }
//! let node = Node::new(NodeConfig::default(), Counter(0));
//! ```
//!
//! # Example
//!
//! A node serving time from its local clock at stratum 8 answers a client
//! request; the driver supplies the datagram, the time and the buffer:
//!
//! ```
//! use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
//! use strata_engine::{InstanceId, Instant, Node, NodeConfig, RecvMeta, SocketId};
//! use strata_wire::{parse_datagram, Mode, NtpRepr, NtpTimestamp};
//!
//! let config = NodeConfig { local_stratum: Some(8), ..NodeConfig::default() };
//! // Production drivers seed from the OS (getrandom); a seed keeps this repeatable.
//! let mut node = Node::new(config, ChaCha20Rng::from_seed([7; 32]));
//!
//! let clock = NtpTimestamp::from_unix(1_800_000_000, 0);
//! let request = NtpRepr::client_request(6, NtpTimestamp::from_bits(0x1234_5678));
//! let meta = RecvMeta {
//!     instance: InstanceId::DEFAULT,
//!     socket: SocketId(0),
//!     listener: true,
//!     src: "192.0.2.10:40000".parse().unwrap(),
//!     dst_ip: None,
//!     ifindex: None,
//!     rx_time: clock,
//! };
//! node.handle_datagram(Instant::from_secs_f64(1.0), &meta, &request.to_bytes());
//!
//! let mut buf = [0u8; 1024];
//! let tx = node.poll_transmit(clock, &mut buf).expect("a reply");
//! assert_eq!(tx.dst, meta.src);
//! let (reply, _) = parse_datagram(&buf[..tx.len])?;
//! assert_eq!(reply.mode, Mode::Server);
//! assert_eq!(reply.stratum, 8);
//! assert_eq!(reply.origin_timestamp, request.transmit_timestamp);
//! # Ok::<(), strata_wire::Error>(())
//! ```
//!
//! `examples/sntp_client.rs` and `examples/sntp_server.rs` drive a node
//! over a std `UdpSocket`.
#![forbid(unsafe_code)]

pub mod access;
mod assoc;
pub mod auth;
mod broadcast;
mod control;
pub mod counters;
mod datagram;
mod dispatch;
mod node;
pub mod ratelimit;
pub mod responder;
pub mod server;
mod status;
mod system;
pub mod time;

pub use access::{AccessLevel, AccessRule};
pub use assoc::{
    AssociationId, AssociationMode, AssociationState, BroadcastClientConfig, Calibrate,
    ClientConfig, CALIBRATION_ATTEMPTS, CALIBRATION_REPLIES,
};
pub use broadcast::BroadcastServerConfig;
pub use counters::{Counters, DropReason};
pub use node::{
    Event, InstanceId, Node, NodeConfig, RecvMeta, RefusedServer, Route, SocketId, Transmit,
    DEFAULT_MAX_DYNAMIC, DEFAULT_MAX_DYNAMIC_TOTAL, MAX_REFUSED_SERVERS,
};
pub use ratelimit::RateLimitConfig;
pub use responder::{DenyPolicy, Plan, Responder};
pub use server::{admit, kiss_of_death, respond, Admission, ServerState};
pub use status::{SelectionRole, SessionStatus, SystemStatus};
pub use strata_clock::discipline::ClockCommand;
pub use time::Instant;
