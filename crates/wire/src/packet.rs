//! The 48-byte NTP header (RFC 5905 §7.3): a zero-copy view, [`NtpPacket`],
//! and its typed meaning, [`NtpRepr`].
//!
//! # Panic contract
//!
//! [`NtpPacket::new_checked`] validates that the buffer holds at least a full
//! header ([`HEADER_LEN`] bytes). After that, no accessor or setter panics.
//! Use `new_checked` for every untrusted buffer; [`NtpPacket::new_unchecked`]
//! is for emitting into a buffer you sized yourself (for example with
//! [`NtpRepr::buffer_len`]). On a buffer shorter than [`HEADER_LEN`] made with
//! `new_unchecked`, header accessors and setters (and [`NtpRepr::emit`]) may
//! panic; [`NtpPacket::trailer`] and [`NtpRepr::parse`] never do.

use crate::refid::ReferenceId;
use crate::time::{NtpShort, NtpTimestamp};
use crate::{Error, Result};

/// The length of the fixed NTP header in bytes.
pub const HEADER_LEN: usize = 48;

/// The highest NTP version this crate parses.
pub const MAX_VERSION: u8 = 4;

/// Byte offsets of the header fields.
mod field {
    #![allow(clippy::unreadable_literal)]
    use core::ops::{Range, RangeFrom};

    /// Leap indicator (2 bits), version (3 bits), mode (3 bits).
    pub const LI_VN_MODE: usize = 0;
    pub const STRATUM: usize = 1;
    pub const POLL: usize = 2;
    pub const PRECISION: usize = 3;
    pub const ROOT_DELAY: Range<usize> = 4..8;
    pub const ROOT_DISPERSION: Range<usize> = 8..12;
    pub const REFERENCE_ID: Range<usize> = 12..16;
    pub const REFERENCE_TS: Range<usize> = 16..24;
    pub const ORIGIN_TS: Range<usize> = 24..32;
    pub const RECEIVE_TS: Range<usize> = 32..40;
    pub const TRANSMIT_TS: Range<usize> = 40..48;
    pub const TRAILER: RangeFrom<usize> = 48..;

    pub const LEAP_SHIFT: u8 = 6;
    pub const VERSION_SHIFT: u8 = 3;
    pub const VERSION_MASK: u8 = 0b111;
    pub const MODE_MASK: u8 = 0b111;
    pub const LEAP_MASK: u8 = 0b11;
}

/// The leap indicator (2 bits).
///
/// Every 2-bit value has a meaning, so `From<u8>` (which masks to the low two
/// bits) and `Into<u8>` are lossless for all values in `0..=3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Leap {
    /// 0: no leap second warning.
    #[default]
    NoWarning,
    /// 1: the last minute of the day has 61 seconds.
    AddSecond,
    /// 2: the last minute of the day has 59 seconds.
    DeleteSecond,
    /// 3: the clock is unsynchronized (alarm condition).
    Unsynchronized,
}

impl From<u8> for Leap {
    /// Uses the low two bits of `value`.
    fn from(value: u8) -> Self {
        match value & field::LEAP_MASK {
            0 => Leap::NoWarning,
            1 => Leap::AddSecond,
            2 => Leap::DeleteSecond,
            _ => Leap::Unsynchronized,
        }
    }
}

impl From<Leap> for u8 {
    fn from(leap: Leap) -> u8 {
        match leap {
            Leap::NoWarning => 0,
            Leap::AddSecond => 1,
            Leap::DeleteSecond => 2,
            Leap::Unsynchronized => 3,
        }
    }
}

/// The association mode (3 bits).
///
/// Every 3-bit value has a meaning, so `From<u8>` (which masks to the low
/// three bits) and `Into<u8>` are lossless for all values in `0..=7`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// 0: reserved.
    Reserved,
    /// 1: symmetric active.
    SymmetricActive,
    /// 2: symmetric passive.
    SymmetricPassive,
    /// 3: client.
    Client,
    /// 4: server.
    Server,
    /// 5: broadcast (and multicast).
    Broadcast,
    /// 6: NTP control message (RFC 9327).
    Control,
    /// 7: reserved for private use.
    Private,
}

impl From<u8> for Mode {
    /// Uses the low three bits of `value`.
    fn from(value: u8) -> Self {
        match value & field::MODE_MASK {
            0 => Mode::Reserved,
            1 => Mode::SymmetricActive,
            2 => Mode::SymmetricPassive,
            3 => Mode::Client,
            4 => Mode::Server,
            5 => Mode::Broadcast,
            6 => Mode::Control,
            _ => Mode::Private,
        }
    }
}

impl From<Mode> for u8 {
    fn from(mode: Mode) -> u8 {
        match mode {
            Mode::Reserved => 0,
            Mode::SymmetricActive => 1,
            Mode::SymmetricPassive => 2,
            Mode::Client => 3,
            Mode::Server => 4,
            Mode::Broadcast => 5,
            Mode::Control => 6,
            Mode::Private => 7,
        }
    }
}

/// A zero-copy view of an NTP packet: the 48-byte header and whatever
/// follows it (extension fields, MAC). See the module docs for the panic
/// contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

fn read_u32(data: &[u8], range: core::ops::Range<usize>) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&data[range]);
    u32::from_be_bytes(bytes)
}

fn read_u64(data: &[u8], range: core::ops::Range<usize>) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[range]);
    u64::from_be_bytes(bytes)
}

impl<T: AsRef<[u8]>> NtpPacket<T> {
    /// Wraps a buffer without checking its length. Accessors may panic if it
    /// is shorter than [`HEADER_LEN`]; use for buffers you sized yourself.
    pub const fn new_unchecked(buffer: T) -> Self {
        NtpPacket { buffer }
    }

    /// Wraps a buffer after checking that it holds a full header.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer is shorter than [`HEADER_LEN`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a full header; after this succeeds no
    /// accessor panics.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer is shorter than [`HEADER_LEN`].
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The leap indicator.
    #[must_use]
    pub fn leap(&self) -> Leap {
        Leap::from(self.buffer.as_ref()[field::LI_VN_MODE] >> field::LEAP_SHIFT)
    }

    /// The version number (0..=7 as received; only 1..=4 are valid).
    #[must_use]
    pub fn version(&self) -> u8 {
        (self.buffer.as_ref()[field::LI_VN_MODE] >> field::VERSION_SHIFT) & field::VERSION_MASK
    }

    /// The association mode.
    #[must_use]
    pub fn mode(&self) -> Mode {
        Mode::from(self.buffer.as_ref()[field::LI_VN_MODE])
    }

    /// The stratum (0 = kiss-o'-death / unspecified, 1 = primary, 16 =
    /// unsynchronized).
    #[must_use]
    pub fn stratum(&self) -> u8 {
        self.buffer.as_ref()[field::STRATUM]
    }

    /// The poll exponent (log2 seconds).
    #[must_use]
    pub fn poll(&self) -> i8 {
        i8::from_be_bytes([self.buffer.as_ref()[field::POLL]])
    }

    /// The precision exponent (log2 seconds).
    #[must_use]
    pub fn precision(&self) -> i8 {
        i8::from_be_bytes([self.buffer.as_ref()[field::PRECISION]])
    }

    /// The root delay.
    #[must_use]
    pub fn root_delay(&self) -> NtpShort {
        NtpShort::from_bits(read_u32(self.buffer.as_ref(), field::ROOT_DELAY))
    }

    /// The root dispersion.
    #[must_use]
    pub fn root_dispersion(&self) -> NtpShort {
        NtpShort::from_bits(read_u32(self.buffer.as_ref(), field::ROOT_DISPERSION))
    }

    /// The reference identifier.
    #[must_use]
    pub fn reference_id(&self) -> ReferenceId {
        ReferenceId::from_bits(read_u32(self.buffer.as_ref(), field::REFERENCE_ID))
    }

    /// The reference timestamp: when the sender's clock was last set.
    #[must_use]
    pub fn reference_timestamp(&self) -> NtpTimestamp {
        NtpTimestamp::from_bits(read_u64(self.buffer.as_ref(), field::REFERENCE_TS))
    }

    /// The origin timestamp (T1 in a reply).
    #[must_use]
    pub fn origin_timestamp(&self) -> NtpTimestamp {
        NtpTimestamp::from_bits(read_u64(self.buffer.as_ref(), field::ORIGIN_TS))
    }

    /// The receive timestamp (T2 in a reply).
    #[must_use]
    pub fn receive_timestamp(&self) -> NtpTimestamp {
        NtpTimestamp::from_bits(read_u64(self.buffer.as_ref(), field::RECEIVE_TS))
    }

    /// The transmit timestamp (T3 in a reply).
    #[must_use]
    pub fn transmit_timestamp(&self) -> NtpTimestamp {
        NtpTimestamp::from_bits(read_u64(self.buffer.as_ref(), field::TRANSMIT_TS))
    }

    /// The bytes after the 48-byte header (extension fields and MAC); empty
    /// if there are none. Never panics, even on a short unchecked buffer.
    #[must_use]
    pub fn trailer(&self) -> &[u8] {
        self.buffer.as_ref().get(field::TRAILER).unwrap_or(&[])
    }
}

fn write_u32(data: &mut [u8], range: core::ops::Range<usize>, value: u32) {
    data[range].copy_from_slice(&value.to_be_bytes());
}

fn write_u64(data: &mut [u8], range: core::ops::Range<usize>, value: u64) {
    data[range].copy_from_slice(&value.to_be_bytes());
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NtpPacket<T> {
    /// Sets the leap indicator.
    pub fn set_leap(&mut self, leap: Leap) {
        let byte = &mut self.buffer.as_mut()[field::LI_VN_MODE];
        *byte = (*byte & !(field::LEAP_MASK << field::LEAP_SHIFT))
            | (u8::from(leap) << field::LEAP_SHIFT);
    }

    /// Sets the version number (masked to three bits).
    pub fn set_version(&mut self, version: u8) {
        let byte = &mut self.buffer.as_mut()[field::LI_VN_MODE];
        *byte = (*byte & !(field::VERSION_MASK << field::VERSION_SHIFT))
            | ((version & field::VERSION_MASK) << field::VERSION_SHIFT);
    }

    /// Sets the association mode.
    pub fn set_mode(&mut self, mode: Mode) {
        let byte = &mut self.buffer.as_mut()[field::LI_VN_MODE];
        *byte = (*byte & !field::MODE_MASK) | u8::from(mode);
    }

    /// Sets the stratum.
    pub fn set_stratum(&mut self, stratum: u8) {
        self.buffer.as_mut()[field::STRATUM] = stratum;
    }

    /// Sets the poll exponent.
    pub fn set_poll(&mut self, poll: i8) {
        self.buffer.as_mut()[field::POLL] = poll.to_be_bytes()[0];
    }

    /// Sets the precision exponent.
    pub fn set_precision(&mut self, precision: i8) {
        self.buffer.as_mut()[field::PRECISION] = precision.to_be_bytes()[0];
    }

    /// Sets the root delay.
    pub fn set_root_delay(&mut self, value: NtpShort) {
        write_u32(self.buffer.as_mut(), field::ROOT_DELAY, value.to_bits());
    }

    /// Sets the root dispersion.
    pub fn set_root_dispersion(&mut self, value: NtpShort) {
        write_u32(
            self.buffer.as_mut(),
            field::ROOT_DISPERSION,
            value.to_bits(),
        );
    }

    /// Sets the reference identifier.
    pub fn set_reference_id(&mut self, value: ReferenceId) {
        write_u32(self.buffer.as_mut(), field::REFERENCE_ID, value.to_bits());
    }

    /// Sets the reference timestamp.
    pub fn set_reference_timestamp(&mut self, value: NtpTimestamp) {
        write_u64(self.buffer.as_mut(), field::REFERENCE_TS, value.to_bits());
    }

    /// Sets the origin timestamp.
    pub fn set_origin_timestamp(&mut self, value: NtpTimestamp) {
        write_u64(self.buffer.as_mut(), field::ORIGIN_TS, value.to_bits());
    }

    /// Sets the receive timestamp.
    pub fn set_receive_timestamp(&mut self, value: NtpTimestamp) {
        write_u64(self.buffer.as_mut(), field::RECEIVE_TS, value.to_bits());
    }

    /// Sets the transmit timestamp.
    pub fn set_transmit_timestamp(&mut self, value: NtpTimestamp) {
        write_u64(self.buffer.as_mut(), field::TRANSMIT_TS, value.to_bits());
    }

    /// The bytes after the header, mutably (empty if there are none).
    pub fn trailer_mut(&mut self) -> &mut [u8] {
        match self.buffer.as_mut().get_mut(field::TRAILER) {
            Some(trailer) => trailer,
            None => &mut [],
        }
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for NtpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The typed NTP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NtpRepr {
    /// Leap indicator.
    pub leap: Leap,
    /// Version number, 1..=4.
    pub version: u8,
    /// Association mode.
    pub mode: Mode,
    /// Stratum.
    pub stratum: u8,
    /// Poll exponent (log2 seconds).
    pub poll: i8,
    /// Precision exponent (log2 seconds).
    pub precision: i8,
    /// Root delay.
    pub root_delay: NtpShort,
    /// Root dispersion.
    pub root_dispersion: NtpShort,
    /// Reference identifier (a kiss code when `stratum == 0`).
    pub reference_id: ReferenceId,
    /// When the sender's clock was last set.
    pub reference_timestamp: NtpTimestamp,
    /// Origin timestamp (T1 echoed back in a reply).
    pub origin_timestamp: NtpTimestamp,
    /// Receive timestamp (T2).
    pub receive_timestamp: NtpTimestamp,
    /// Transmit timestamp (T3).
    pub transmit_timestamp: NtpTimestamp,
}

impl NtpRepr {
    /// A minimal client (mode 3) request: version 4 and every field zero
    /// but the poll exponent and the transmit timestamp, which the server
    /// echoes as the origin timestamp (data minimisation: a client need not
    /// reveal its clock, so `transmit` may be a random cookie).
    #[must_use]
    pub const fn client_request(poll: i8, transmit: NtpTimestamp) -> NtpRepr {
        NtpRepr {
            leap: Leap::NoWarning,
            version: 4,
            mode: Mode::Client,
            stratum: 0,
            poll,
            precision: 0,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::ZERO,
            reference_id: ReferenceId::new([0; 4]),
            reference_timestamp: NtpTimestamp::ZERO,
            origin_timestamp: NtpTimestamp::ZERO,
            receive_timestamp: NtpTimestamp::ZERO,
            transmit_timestamp: transmit,
        }
    }

    /// Parses the header of a packet. Checks the length itself, so it never
    /// panics, even on a view made with `new_unchecked`. Trailing bytes are
    /// ignored here; see [`crate::parse_datagram`] to validate them too.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer is shorter than [`HEADER_LEN`];
    /// [`Error::BadVersion`] for version 0 or above [`MAX_VERSION`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &NtpPacket<&T>) -> Result<NtpRepr> {
        packet.check_len()?;
        let version = packet.version();
        if version == 0 || version > MAX_VERSION {
            return Err(Error::BadVersion(version));
        }
        Ok(NtpRepr {
            leap: packet.leap(),
            version,
            mode: packet.mode(),
            stratum: packet.stratum(),
            poll: packet.poll(),
            precision: packet.precision(),
            root_delay: packet.root_delay(),
            root_dispersion: packet.root_dispersion(),
            reference_id: packet.reference_id(),
            reference_timestamp: packet.reference_timestamp(),
            origin_timestamp: packet.origin_timestamp(),
            receive_timestamp: packet.receive_timestamp(),
            transmit_timestamp: packet.transmit_timestamp(),
        })
    }

    /// The number of bytes [`NtpRepr::emit`] writes: [`HEADER_LEN`].
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 48-byte header into `packet`, leaving any trailer bytes
    /// untouched. `version` is written masked to three bits.
    ///
    /// Cannot panic on a buffer of at least [`NtpRepr::buffer_len`] bytes;
    /// panics on a shorter buffer wrapped with `new_unchecked`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut NtpPacket<T>) {
        packet.set_leap(self.leap);
        packet.set_version(self.version);
        packet.set_mode(self.mode);
        packet.set_stratum(self.stratum);
        packet.set_poll(self.poll);
        packet.set_precision(self.precision);
        packet.set_root_delay(self.root_delay);
        packet.set_root_dispersion(self.root_dispersion);
        packet.set_reference_id(self.reference_id);
        packet.set_reference_timestamp(self.reference_timestamp);
        packet.set_origin_timestamp(self.origin_timestamp);
        packet.set_receive_timestamp(self.receive_timestamp);
        packet.set_transmit_timestamp(self.transmit_timestamp);
    }

    /// Writes the header to the start of `buf` and returns the number of
    /// bytes written ([`HEADER_LEN`]). Never panics.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if `buf` is shorter than [`HEADER_LEN`].
    pub fn emit_to_slice(&self, buf: &mut [u8]) -> Result<usize> {
        let mut packet = NtpPacket::new_checked(buf)?;
        self.emit(&mut packet);
        Ok(HEADER_LEN)
    }

    /// The 48 header bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        self.emit(&mut NtpPacket::new_unchecked(&mut bytes[..]));
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refid::KissCode;
    use core::net::Ipv4Addr;

    /// A client request as ntpd sends it before it is synchronized:
    /// LI=3, VN=4, mode 3, poll 6, precision -20, only the transmit
    /// timestamp set.
    static CLIENT_BYTES: [u8; 48] = [
        0xe3, 0x00, 0x06, 0xec, // LI/VN/mode, stratum, poll, precision
        0x00, 0x00, 0x00, 0x00, // root delay
        0x00, 0x00, 0x00, 0x00, // root dispersion
        0x00, 0x00, 0x00, 0x00, // reference id
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // reference ts
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // origin ts
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // receive ts
        0xec, 0xd0, 0x3f, 0x68, 0x1d, 0x2f, 0x4b, 0x7a, // transmit ts
    ];

    /// The stratum-2 server's reply to `CLIENT_BYTES`: LI=0, VN=4, mode 4,
    /// poll 6, precision -23, refid 192.0.2.1, origin = client's transmit.
    static SERVER_BYTES: [u8; 48] = [
        0x24, 0x02, 0x06, 0xe9, // LI/VN/mode, stratum, poll, precision
        0x00, 0x00, 0x0a, 0x3d, // root delay: 0.04 s
        0x00, 0x00, 0x1b, 0x2c, // root dispersion: 0.1061 s
        0xc0, 0x00, 0x02, 0x01, // reference id: 192.0.2.1
        0xec, 0xd0, 0x3c, 0x10, 0x8a, 0x3b, 0x11, 0x20, // reference ts
        0xec, 0xd0, 0x3f, 0x68, 0x1d, 0x2f, 0x4b, 0x7a, // origin ts
        0xec, 0xd0, 0x3f, 0x68, 0x2a, 0x44, 0x10, 0x93, // receive ts
        0xec, 0xd0, 0x3f, 0x68, 0x2a, 0x4c, 0x71, 0xe8, // transmit ts
    ];

    /// A RATE kiss-o'-death.
    static KOD_BYTES: [u8; 48] = [
        0xe4, 0x00, 0x06, 0xe9, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, b'R', b'A', b'T',
        b'E', 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xec, 0xd0, 0x3f, 0x68, 0x1d, 0x2f,
        0x4b, 0x7a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00,
    ];

    const CLIENT_XMT: NtpTimestamp = NtpTimestamp::from_bits(0xecd0_3f68_1d2f_4b7a);

    fn client_repr() -> NtpRepr {
        NtpRepr {
            leap: Leap::Unsynchronized,
            version: 4,
            mode: Mode::Client,
            stratum: 0,
            poll: 6,
            precision: -20,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::ZERO,
            reference_id: ReferenceId::ZERO,
            reference_timestamp: NtpTimestamp::ZERO,
            origin_timestamp: NtpTimestamp::ZERO,
            receive_timestamp: NtpTimestamp::ZERO,
            transmit_timestamp: CLIENT_XMT,
        }
    }

    fn server_repr() -> NtpRepr {
        NtpRepr {
            leap: Leap::NoWarning,
            version: 4,
            mode: Mode::Server,
            stratum: 2,
            poll: 6,
            precision: -23,
            root_delay: NtpShort::from_bits(0x0a3d),
            root_dispersion: NtpShort::from_bits(0x1b2c),
            reference_id: ReferenceId::from_ipv4(Ipv4Addr::new(192, 0, 2, 1)),
            reference_timestamp: NtpTimestamp::from_bits(0xecd0_3c10_8a3b_1120),
            origin_timestamp: CLIENT_XMT,
            receive_timestamp: NtpTimestamp::from_bits(0xecd0_3f68_2a44_1093),
            transmit_timestamp: NtpTimestamp::from_bits(0xecd0_3f68_2a4c_71e8),
        }
    }

    #[test]
    fn deconstruct_client() {
        let packet = NtpPacket::new_checked(&CLIENT_BYTES[..]).unwrap();
        assert_eq!(packet.leap(), Leap::Unsynchronized);
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.mode(), Mode::Client);
        assert_eq!(packet.stratum(), 0);
        assert_eq!(packet.poll(), 6);
        assert_eq!(packet.precision(), -20);
        assert_eq!(packet.root_delay(), NtpShort::ZERO);
        assert_eq!(packet.reference_id(), ReferenceId::ZERO);
        assert!(packet.origin_timestamp().is_zero());
        assert_eq!(packet.transmit_timestamp(), CLIENT_XMT);
        assert!(packet.trailer().is_empty());
    }

    #[test]
    fn deconstruct_server() {
        let packet = NtpPacket::new_checked(&SERVER_BYTES[..]).unwrap();
        assert_eq!(packet.leap(), Leap::NoWarning);
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.mode(), Mode::Server);
        assert_eq!(packet.stratum(), 2);
        assert_eq!(packet.poll(), 6);
        assert_eq!(packet.precision(), -23);
        assert!((packet.root_delay().to_seconds() - 0.04).abs() < 1e-4);
        assert!((packet.root_dispersion().to_seconds() - 0.1061).abs() < 1e-4);
        assert_eq!(packet.reference_id().to_string(), "192.0.2.1");
        assert_eq!(packet.origin_timestamp(), CLIENT_XMT);
        assert_eq!(packet.receive_timestamp().seconds(), 0xecd0_3f68);
        // Server processing time T3 - T2 is about 128 µs.
        let proc = packet.transmit_timestamp() - packet.receive_timestamp();
        assert!((proc.to_seconds() - 128e-6).abs() < 1e-6, "{proc:?}");
    }

    #[test]
    fn construct_with_setters() {
        for (bytes, repr) in [
            (&CLIENT_BYTES, client_repr()),
            (&SERVER_BYTES, server_repr()),
        ] {
            // Start from garbage to prove every bit is written.
            let mut buf = [0xa5u8; 48];
            let mut packet = NtpPacket::new_unchecked(&mut buf[..]);
            packet.set_leap(repr.leap);
            packet.set_version(repr.version);
            packet.set_mode(repr.mode);
            packet.set_stratum(repr.stratum);
            packet.set_poll(repr.poll);
            packet.set_precision(repr.precision);
            packet.set_root_delay(repr.root_delay);
            packet.set_root_dispersion(repr.root_dispersion);
            packet.set_reference_id(repr.reference_id);
            packet.set_reference_timestamp(repr.reference_timestamp);
            packet.set_origin_timestamp(repr.origin_timestamp);
            packet.set_receive_timestamp(repr.receive_timestamp);
            packet.set_transmit_timestamp(repr.transmit_timestamp);
            assert_eq!(&packet.into_inner()[..], &bytes[..]);
        }
    }

    #[test]
    fn parse_fixtures() {
        let packet = NtpPacket::new_checked(&CLIENT_BYTES[..]).unwrap();
        assert_eq!(NtpRepr::parse(&packet).unwrap(), client_repr());
        let packet = NtpPacket::new_checked(&SERVER_BYTES[..]).unwrap();
        assert_eq!(NtpRepr::parse(&packet).unwrap(), server_repr());
        let packet = NtpPacket::new_checked(&KOD_BYTES[..]).unwrap();
        let kod = NtpRepr::parse(&packet).unwrap();
        assert_eq!(kod.stratum, 0);
        assert_eq!(kod.leap, Leap::Unsynchronized);
        assert_eq!(kod.reference_id.kiss_code(), KissCode::Rate);
    }

    #[test]
    fn emit_fixtures() {
        for (bytes, repr) in [
            (&CLIENT_BYTES, client_repr()),
            (&SERVER_BYTES, server_repr()),
        ] {
            let mut buf = vec![0xffu8; repr.buffer_len()];
            let mut packet = NtpPacket::new_unchecked(&mut buf);
            repr.emit(&mut packet);
            assert_eq!(&buf[..], &bytes[..]);
            assert_eq!(repr.to_bytes(), *bytes);
        }
    }

    #[test]
    fn emit_leaves_trailer_alone() {
        let mut buf = [0x11u8; 52];
        assert_eq!(server_repr().emit_to_slice(&mut buf), Ok(48));
        assert_eq!(&buf[..48], &SERVER_BYTES[..]);
        assert_eq!(&buf[48..], &[0x11; 4]);
        let mut short = [0u8; 47];
        assert_eq!(
            server_repr().emit_to_slice(&mut short),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn impossible_len() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                NtpPacket::new_checked(&SERVER_BYTES[..len]).err(),
                Some(Error::Truncated)
            );
            // parse re-checks the length, even on an unchecked view.
            let packet = NtpPacket::new_unchecked(&SERVER_BYTES[..len]);
            assert_eq!(NtpRepr::parse(&packet), Err(Error::Truncated));
            assert!(packet.trailer().is_empty());
        }
    }

    #[test]
    fn versions() {
        let mut bytes = SERVER_BYTES;
        for version in 0..=7u8 {
            NtpPacket::new_unchecked(&mut bytes[..]).set_version(version);
            let packet = NtpPacket::new_checked(&bytes[..]).unwrap();
            assert_eq!(packet.version(), version);
            assert_eq!(packet.mode(), Mode::Server, "mode bits untouched");
            assert_eq!(packet.leap(), Leap::NoWarning, "leap bits untouched");
            let parsed = NtpRepr::parse(&packet);
            if (1..=4).contains(&version) {
                assert_eq!(parsed.unwrap().version, version);
            } else {
                assert_eq!(parsed, Err(Error::BadVersion(version)));
            }
        }
    }

    #[test]
    fn codes_convert_losslessly() {
        for raw in 0..=7u8 {
            assert_eq!(u8::from(Mode::from(raw)), raw);
        }
        for raw in 0..=3u8 {
            assert_eq!(u8::from(Leap::from(raw)), raw);
        }
        assert_eq!(Mode::from(0xfc), Mode::Server);
        assert_eq!(Leap::from(0xfd), Leap::AddSecond);
    }
}
