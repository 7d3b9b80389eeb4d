//! strata-wire: the NTPv4 packet format (RFC 5905), extension fields
//! (RFC 7822), MAC trailers (RFC 5905 / RFC 8573) and control messages
//! (mode 6, RFC 9327).
//!
//! The crate follows the smoltcp pattern: zero-copy views over byte buffers
//! ([`NtpPacket`], [`ExtensionField`]) whose accessors read fixed field
//! ranges, and typed representations ([`NtpRepr`], [`ExtensionRepr`],
//! [`Mac`]) with `parse`, `emit` and `buffer_len`. [`parse_datagram`] does
//! the whole job for a received datagram.
//!
//! # Panic contract
//!
//! Untrusted bytes never cause a panic here: create views with the checked
//! constructors (`new_checked`), after which no accessor panics.
//! `new_unchecked` is for buffers you sized yourself when emitting; header
//! accessors and setters on a too-short unchecked buffer may panic.
//! Parsing never allocates.
//!
//! # Example
//!
//! Build a client request, put it on the wire, read it back, and compute
//! offset and delay from the four timestamps of an exchange:
//!
//! ```
//! use strata_wire::{offset_and_delay, parse_datagram, Mode, NtpRepr, NtpTimestamp};
//!
//! let t1 = NtpTimestamp::from_unix(1_800_000_000, 0);
//! let request = NtpRepr::client_request(6, t1);
//! let bytes = request.to_bytes();
//!
//! let (parsed, _trailer) = parse_datagram(&bytes)?;
//! assert_eq!(parsed.mode, Mode::Client);
//! assert_eq!(parsed.transmit_timestamp, t1);
//!
//! // The server received at t2 and answered at t3; the reply came back at t4.
//! let t2 = NtpTimestamp::from_unix(1_800_000_000, 60_000_000);
//! let t3 = NtpTimestamp::from_unix(1_800_000_000, 61_000_000);
//! let t4 = NtpTimestamp::from_unix(1_800_000_000, 21_000_000);
//! let (offset, delay) = offset_and_delay(t1, t2, t3, t4);
//! assert!((offset - 0.050).abs() < 1e-6);
//! assert!((delay - 0.020).abs() < 1e-6);
//!
//! // Untrusted bytes give an error, never a panic.
//! assert_eq!(parse_datagram(&bytes[..20]), Err(strata_wire::Error::Truncated));
//! # Ok::<(), strata_wire::Error>(())
//! ```
#![warn(missing_debug_implementations)]
#![forbid(unsafe_code)]

mod control;
mod ext;
mod packet;
mod refid;
pub mod time;

pub use control::{
    ControlError, ControlPacket, ControlRepr, Opcode, CONTROL_HEADER_LEN, CONTROL_MAX_DATA,
};
pub use ext::{
    parse_datagram, parse_trailer, ExtensionField, ExtensionIter, ExtensionRepr, Layout, Mac,
    EXTENSION_HEADER_LEN, MAC_LENS, MIN_EXTENSION_LEN,
};
pub use packet::{Leap, Mode, NtpPacket, NtpRepr, HEADER_LEN, MAX_VERSION};
pub use refid::{KissCode, ReferenceId};
pub use time::{offset_and_delay, NtpDuration, NtpShort, NtpTimestamp};

/// Why bytes could not be parsed (or a value could not be emitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the structure it should hold.
    #[error("packet truncated")]
    Truncated,
    /// The header carries an unsupported version (0 or above 4).
    #[error("unsupported NTP version {0}")]
    BadVersion(u8),
    /// An extension field is malformed, or the bytes after the header do not
    /// divide into extension fields and a MAC.
    #[error("malformed extension field")]
    BadExtension,
    /// A MAC has an impossible length.
    #[error("malformed MAC")]
    BadMac,
}

/// The result type of this crate.
pub type Result<T> = core::result::Result<T, Error>;
