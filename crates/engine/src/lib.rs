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
