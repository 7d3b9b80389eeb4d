//! `stratad`: the strata NTP daemon.
fn main() {}
