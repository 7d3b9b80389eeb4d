//! strata-daemon: configuration, control protocol and the event loop behind `stratad` and `stratactl`.
pub mod cli;
pub mod config;
pub mod control;
pub mod ctl;
pub mod logging;
pub mod notify;
pub mod runtime;
