//! NTP control messages (mode 6, RFC 9327): a zero-copy view,
//! [`ControlPacket`], and its typed meaning, [`ControlRepr`].
//!
//! ```text
//!  0                   1                   2                   3
//! |LI | VN  |Mode |R|E|M| Opcode  |          Sequence             |
//! |            Status             |        Association ID         |
//! |            Offset             |            Count              |
//! |   Data (Count octets), padded with zeros to 4 octets ...     |
//! |   optional MAC (key id + digest) ...                          |
//! ```
//!
//! # Panic contract
//!
//! [`ControlPacket::new_checked`] validates that the buffer holds the
//! 12-byte header and the `count` data octets it announces; after that no
//! accessor panics. [`ControlRepr::emit`] never panics: it returns
//! [`Error::Truncated`] when the buffer is shorter than
//! [`ControlRepr::buffer_len`].

use crate::packet::{Leap, Mode};
use crate::{Error, Result};

/// The length of the control message header.
pub const CONTROL_HEADER_LEN: usize = 12;

/// The most data octets one control message (fragment) carries.
pub const CONTROL_MAX_DATA: usize = 468;

/// Byte offsets of the header fields.
mod field {
    use core::ops::Range;

    pub const LI_VN_MODE: usize = 0;
    pub const REM_OP: usize = 1;
    pub const SEQUENCE: Range<usize> = 2..4;
    pub const STATUS: Range<usize> = 4..6;
    pub const ASSOC_ID: Range<usize> = 6..8;
    pub const OFFSET: Range<usize> = 8..10;
    pub const COUNT: Range<usize> = 10..12;

    pub const RESPONSE: u8 = 0x80;
    pub const ERROR: u8 = 0x40;
    pub const MORE: u8 = 0x20;
    pub const OPCODE_MASK: u8 = 0x1f;
}

/// A control message opcode (5 bits). Lossless from and to `u8` (masked to
/// 5 bits): codes this crate does not name are kept in `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// 1: read status (the system status word and the association list, or
    /// one association's status).
    ReadStatus,
    /// 2: read variables.
    ReadVariables,
    /// 3: write variables.
    WriteVariables,
    /// 4: read clock variables.
    ReadClock,
    /// 5: write clock variables.
    WriteClock,
    /// 8: runtime configuration.
    Configure,
    /// 10: read the MRU list.
    ReadMru,
    /// Any other code.
    Unknown(u8),
}

impl From<u8> for Opcode {
    fn from(value: u8) -> Self {
        match value & field::OPCODE_MASK {
            1 => Opcode::ReadStatus,
            2 => Opcode::ReadVariables,
            3 => Opcode::WriteVariables,
            4 => Opcode::ReadClock,
            5 => Opcode::WriteClock,
            8 => Opcode::Configure,
            10 => Opcode::ReadMru,
            other => Opcode::Unknown(other),
        }
    }
}

impl From<Opcode> for u8 {
    fn from(op: Opcode) -> u8 {
        match op {
            Opcode::ReadStatus => 1,
            Opcode::ReadVariables => 2,
            Opcode::WriteVariables => 3,
            Opcode::ReadClock => 4,
            Opcode::WriteClock => 5,
            Opcode::Configure => 8,
            Opcode::ReadMru => 10,
            Opcode::Unknown(c) => c & field::OPCODE_MASK,
        }
    }
}

/// The error codes of an error response (the high octet of its status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlError {
    /// 0: unspecified.
    Unspecified,
    /// 1: authentication failure / permission denied.
    Permission,
    /// 2: invalid message format.
    BadFormat,
    /// 3: invalid opcode.
    BadOpcode,
    /// 4: unknown association ID.
    BadAssociation,
    /// 5: unknown variable name.
    UnknownVariable,
    /// 6: invalid variable value.
    BadValue,
}

impl ControlError {
    /// The status word of an error response with this code.
    #[must_use]
    pub const fn status(self) -> u16 {
        let code: u16 = match self {
            ControlError::Unspecified => 0,
            ControlError::Permission => 1,
            ControlError::BadFormat => 2,
            ControlError::BadOpcode => 3,
            ControlError::BadAssociation => 4,
            ControlError::UnknownVariable => 5,
            ControlError::BadValue => 6,
        };
        code << 8
    }
}

/// A view of a control message.
#[derive(Debug, Clone, Copy)]
pub struct ControlPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ControlPacket<T> {
    /// Wraps a buffer without checking it (for emitting into a buffer
    /// sized with [`ControlRepr::buffer_len`]).
    pub const fn new_unchecked(buffer: T) -> Self {
        ControlPacket { buffer }
    }

    /// Wraps an untrusted buffer: it must hold the header and the data its
    /// count announces.
    ///
    /// # Errors
    /// [`Error::Truncated`] when it does not.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = ControlPacket { buffer };
        let len = p.buffer.as_ref().len();
        if len < CONTROL_HEADER_LEN || len < CONTROL_HEADER_LEN + usize::from(p.count()) {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    fn u16_at(&self, r: core::ops::Range<usize>) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[r.start], b[r.start + 1]])
    }

    /// The leap indicator.
    #[must_use]
    pub fn leap(&self) -> Leap {
        Leap::from(self.buffer.as_ref()[field::LI_VN_MODE] >> 6)
    }

    /// The version number.
    #[must_use]
    pub fn version(&self) -> u8 {
        (self.buffer.as_ref()[field::LI_VN_MODE] >> 3) & 7
    }

    /// The mode (6 for a control message).
    #[must_use]
    pub fn mode(&self) -> Mode {
        Mode::from(self.buffer.as_ref()[field::LI_VN_MODE])
    }

    /// The response bit.
    #[must_use]
    pub fn is_response(&self) -> bool {
        self.buffer.as_ref()[field::REM_OP] & field::RESPONSE != 0
    }

    /// The error bit.
    #[must_use]
    pub fn is_error(&self) -> bool {
        self.buffer.as_ref()[field::REM_OP] & field::ERROR != 0
    }

    /// The more bit: further fragments follow.
    #[must_use]
    pub fn more(&self) -> bool {
        self.buffer.as_ref()[field::REM_OP] & field::MORE != 0
    }

    /// The opcode.
    #[must_use]
    pub fn opcode(&self) -> Opcode {
        Opcode::from(self.buffer.as_ref()[field::REM_OP])
    }

    /// The sequence number.
    #[must_use]
    pub fn sequence(&self) -> u16 {
        self.u16_at(field::SEQUENCE)
    }

    /// The status word.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.u16_at(field::STATUS)
    }

    /// The association ID.
    #[must_use]
    pub fn association_id(&self) -> u16 {
        self.u16_at(field::ASSOC_ID)
    }

    /// The offset of this fragment's data in the whole message.
    #[must_use]
    pub fn offset(&self) -> u16 {
        self.u16_at(field::OFFSET)
    }

    /// The number of data octets.
    #[must_use]
    pub fn count(&self) -> u16 {
        self.u16_at(field::COUNT)
    }

    /// The data octets (`count` of them).
    #[must_use]
    pub fn data(&self) -> &[u8] {
        data_of(self.buffer.as_ref(), self.count())
    }

    /// What follows the data and its padding to 4 octets: a MAC, if any.
    #[must_use]
    pub fn trailer(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let padded = (CONTROL_HEADER_LEN + usize::from(self.count())).next_multiple_of(4);
        b.get(padded..).unwrap_or(&[])
    }
}

/// The `count` data octets after the header (fewer if the buffer ends).
fn data_of(b: &[u8], count: u16) -> &[u8] {
    let end = (CONTROL_HEADER_LEN + usize::from(count)).min(b.len());
    b.get(CONTROL_HEADER_LEN..end).unwrap_or(&[])
}

/// A control message's meaning (its data borrowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRepr<'a> {
    /// Leap indicator (responses carry the system's).
    pub leap: Leap,
    /// Version, 1..=7 on the wire.
    pub version: u8,
    /// A response (R bit).
    pub response: bool,
    /// An error response (E bit).
    pub error: bool,
    /// More fragments follow (M bit).
    pub more: bool,
    /// The opcode.
    pub opcode: Opcode,
    /// The sequence number (echoed in responses).
    pub sequence: u16,
    /// The status word.
    pub status: u16,
    /// The association ID (0: the system).
    pub association_id: u16,
    /// The offset of the data in the whole message.
    pub offset: u16,
    /// The data.
    pub data: &'a [u8],
}

impl<'a> ControlRepr<'a> {
    /// Parses a checked view.
    ///
    /// # Errors
    /// [`Error::BadVersion`] for version 0; [`Error::Truncated`] when the
    /// mode is not 6 (not a control message).
    pub fn parse(packet: &ControlPacket<&'a [u8]>) -> Result<Self> {
        if packet.mode() != Mode::Control {
            return Err(Error::Truncated);
        }
        let version = packet.version();
        if version == 0 {
            return Err(Error::BadVersion(0));
        }
        Ok(ControlRepr {
            leap: packet.leap(),
            version,
            response: packet.is_response(),
            error: packet.is_error(),
            more: packet.more(),
            opcode: packet.opcode(),
            sequence: packet.sequence(),
            status: packet.status(),
            association_id: packet.association_id(),
            offset: packet.offset(),
            data: data_of(packet.buffer, packet.count()),
        })
    }

    /// The emitted length: header and data, padded to 4 octets.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        (CONTROL_HEADER_LEN + self.data.len()).next_multiple_of(4)
    }

    /// Writes the message to the front of `buf`; returns its length.
    ///
    /// # Errors
    /// [`Error::Truncated`] when `buf` is shorter than
    /// [`ControlRepr::buffer_len`] or the data exceeds 65535 octets;
    /// [`Error::BadVersion`] for a version outside 1..=7.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        let count = u16::try_from(self.data.len()).map_err(|_| Error::Truncated)?;
        if !(1..=7).contains(&self.version) {
            return Err(Error::BadVersion(self.version));
        }
        let out = buf.get_mut(..len).ok_or(Error::Truncated)?;
        out.fill(0);
        out[field::LI_VN_MODE] =
            (u8::from(self.leap) << 6) | (self.version << 3) | u8::from(Mode::Control);
        let mut rem = u8::from(self.opcode);
        if self.response {
            rem |= field::RESPONSE;
        }
        if self.error {
            rem |= field::ERROR;
        }
        if self.more {
            rem |= field::MORE;
        }
        out[field::REM_OP] = rem;
        out[field::SEQUENCE].copy_from_slice(&self.sequence.to_be_bytes());
        out[field::STATUS].copy_from_slice(&self.status.to_be_bytes());
        out[field::ASSOC_ID].copy_from_slice(&self.association_id.to_be_bytes());
        out[field::OFFSET].copy_from_slice(&self.offset.to_be_bytes());
        out[field::COUNT].copy_from_slice(&count.to_be_bytes());
        out[CONTROL_HEADER_LEN..CONTROL_HEADER_LEN + self.data.len()].copy_from_slice(self.data);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ntpq's `rv 0 offset,stratum` request (version 2, sequence 1),
    /// padded to 4 octets.
    static REQUEST: [u8; 28] = [
        0x16, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0e, b'o', b'f', b'f',
        b's', b'e', b't', b',', b's', b't', b'r', b'a', b't', b'u', b'm', 0x00, 0x00,
    ];

    #[test]
    fn deconstruct() {
        let p = ControlPacket::new_checked(&REQUEST[..]).expect("checked");
        assert_eq!(p.version(), 2);
        assert_eq!(p.mode(), Mode::Control);
        assert!(!p.is_response() && !p.is_error() && !p.more());
        assert_eq!(p.opcode(), Opcode::ReadVariables);
        assert_eq!((p.sequence(), p.status(), p.association_id()), (1, 0, 0));
        assert_eq!((p.offset(), p.count()), (0, 14));
        assert_eq!(p.data(), b"offset,stratum");
        assert!(p.trailer().is_empty());
    }

    #[test]
    fn parse_emit_round_trip() {
        let p = ControlPacket::new_checked(&REQUEST[..]).expect("checked");
        let repr = ControlRepr::parse(&p).expect("parse");
        assert_eq!(repr.buffer_len(), REQUEST.len());
        let mut out = [0xffu8; 40];
        let n = repr.emit(&mut out).expect("emit");
        assert_eq!(&out[..n], &REQUEST[..]);
        assert_eq!(repr.emit(&mut out[..20]), Err(Error::Truncated));
    }

    #[test]
    fn response_bits_and_errors() {
        let repr = ControlRepr {
            leap: Leap::Unsynchronized,
            version: 4,
            response: true,
            error: true,
            more: true,
            opcode: Opcode::WriteVariables,
            sequence: 0xabcd,
            status: ControlError::Permission.status(),
            association_id: 7,
            offset: 468,
            data: b"x",
        };
        let mut out = [0u8; 16];
        assert_eq!(repr.emit(&mut out), Ok(16));
        assert_eq!(&out[..4], &[0xe6, 0xe3, 0xab, 0xcd]);
        assert_eq!(&out[4..12], &[0x01, 0x00, 0, 7, 0x01, 0xd4, 0, 1]);
        let p = ControlPacket::new_checked(&out[..]).expect("checked");
        assert_eq!(ControlRepr::parse(&p), Ok(repr));
        for code in 0..32u8 {
            assert_eq!(u8::from(Opcode::from(code)), code);
        }
    }

    #[test]
    fn impossible_lengths() {
        assert_eq!(
            ControlPacket::new_checked(&REQUEST[..11]).err(),
            Some(Error::Truncated)
        );
        // A count beyond the datagram.
        let mut bad = REQUEST;
        bad[11] = 200;
        assert_eq!(
            ControlPacket::new_checked(&bad[..]).err(),
            Some(Error::Truncated)
        );
        // Not mode 6.
        let mut mode3 = REQUEST;
        mode3[0] = 0x13;
        let p = ControlPacket::new_checked(&mode3[..]).expect("len");
        assert!(ControlRepr::parse(&p).is_err());
    }
}
