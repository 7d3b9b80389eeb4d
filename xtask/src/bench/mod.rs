//! `cargo xtask bench`: measurements that run real daemons in namespaces.
//!
//! A subcommand group: `bench accuracy` ([`accuracy`]) compares strata's
//! clock error with chronyd's on the same impaired path, through the
//! userland impairment relay of [`relay`] (also run as `xtask relay`).
//! `bench server` ([`server`]) measures server throughput on loopback with
//! the load generator of [`loadgen`] against stratad, chronyd and the
//! reference [`reflector`] (also run as `xtask reflector`).

pub mod accuracy;
pub mod loadgen;
mod mmsg;
pub mod reflector;
pub mod relay;
pub mod server;
