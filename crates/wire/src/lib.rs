//! strata-wire: the NTPv4 packet format (RFC 5905), extension fields
//! (RFC 7822) and MAC trailers (RFC 5905 / RFC 8573).
//!
//! Untrusted bytes never cause a panic here: every view is created with a
//! checked constructor, after which no accessor panics.
#![forbid(unsafe_code)]

pub mod time;

pub use time::{NtpDuration, NtpShort, NtpTimestamp};
