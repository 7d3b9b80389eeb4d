//! `cargo xtask bench`: measurements that run real daemons in namespaces.
//!
//! A subcommand group: `bench accuracy` ([`accuracy`]) compares strata's
//! clock error with chronyd's on the same impaired path, through the
//! userland impairment relay of [`relay`] (also run as `xtask relay`).

pub mod accuracy;
pub mod relay;
