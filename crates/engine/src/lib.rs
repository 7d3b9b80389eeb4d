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
#![forbid(unsafe_code)]

pub mod access;
mod assoc;
pub mod auth;
mod broadcast;
pub mod counters;
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
    AssociationId, AssociationMode, AssociationState, BroadcastClientConfig, ClientConfig,
    CALIBRATION_ATTEMPTS, CALIBRATION_REPLIES,
};
pub use broadcast::BroadcastServerConfig;
pub use counters::{Counters, DropReason};
pub use node::{
    Event, InstanceId, Node, NodeConfig, RecvMeta, Route, SocketId, Transmit, DEFAULT_MAX_DYNAMIC,
};
pub use ratelimit::RateLimitConfig;
pub use responder::{DenyPolicy, Plan, Responder};
pub use server::{admit, kiss_of_death, respond, Admission, ServerState};
pub use status::{SelectionRole, SessionStatus, SystemStatus};
pub use strata_clock::discipline::ClockCommand;
pub use time::Instant;
