//! What follows the header: extension fields (RFC 7822) and the optional
//! MAC (RFC 5905 §7.3, RFC 8573).
//!
//! # Layout rules
//!
//! The bytes after the 48-byte header are walked from the front (RFC 7822
//! §7.5). Whenever exactly 4, 20 or 24 bytes remain they are the MAC; zero
//! remaining bytes end the packet; otherwise an extension field must start
//! there: a 16-bit type, a 16-bit length counting the whole field including
//! its 4-byte header, at least [`MIN_EXTENSION_LEN`] bytes, a multiple of 4,
//! and no longer than what remains. Anything else is an error. A 20-byte
//! trailer is therefore always a MAC, never an extension field.
//!
//! # Panic contract
//!
//! [`ExtensionField::new_checked`] validates the length field; after it, no
//! accessor panics. [`ExtensionField::value`] never panics at all; setters on
//! a too-short buffer made with `new_unchecked` may. [`parse_trailer`],
//! [`crate::parse_datagram`] and [`ExtensionIter`] never panic on any input.

use core::iter::FusedIterator;

use crate::packet::{NtpPacket, NtpRepr, HEADER_LEN};
use crate::{Error, Result};

/// The length of an extension field's type + length header.
pub const EXTENSION_HEADER_LEN: usize = 4;

/// The smallest allowed extension field, header included (RFC 7822 §3).
pub const MIN_EXTENSION_LEN: usize = 16;

/// Byte offsets inside an extension field.
mod field {
    use core::ops::Range;

    pub const TYPE: Range<usize> = 0..2;
    pub const LENGTH: Range<usize> = 2..4;
    pub const VALUE: usize = 4;
}

/// A zero-copy view of one extension field. See the module docs for the
/// panic contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionField<T: AsRef<[u8]>> {
    buffer: T,
}

fn read_u16(data: &[u8], range: core::ops::Range<usize>) -> u16 {
    let mut bytes = [0u8; 2];
    bytes.copy_from_slice(&data[range]);
    u16::from_be_bytes(bytes)
}

impl<T: AsRef<[u8]>> ExtensionField<T> {
    /// Wraps a buffer that starts with an extension field, unchecked.
    pub const fn new_unchecked(buffer: T) -> Self {
        ExtensionField { buffer }
    }

    /// Wraps a buffer that starts with an extension field after validating
    /// its length field. The buffer may extend past the field.
    ///
    /// # Errors
    ///
    /// [`Error::BadExtension`] if the header is cut off, the length is below
    /// [`MIN_EXTENSION_LEN`], not a multiple of 4, or longer than the buffer.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let field = Self::new_unchecked(buffer);
        field.check_len()?;
        Ok(field)
    }

    /// Validates the length field against the RFC 7822 rules and the buffer.
    ///
    /// # Errors
    ///
    /// As [`ExtensionField::new_checked`].
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        if data.len() < EXTENSION_HEADER_LEN {
            return Err(Error::BadExtension);
        }
        let len = usize::from(read_u16(data, field::LENGTH));
        if len < MIN_EXTENSION_LEN || len % 4 != 0 || len > data.len() {
            return Err(Error::BadExtension);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The field type.
    #[must_use]
    pub fn field_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TYPE)
    }

    /// The field length in bytes, including the 4-byte header and padding.
    #[must_use]
    pub fn length(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The value: the bytes after the header up to `length()`, padding
    /// included. Empty if the length field is inconsistent; never panics.
    #[must_use]
    pub fn value(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = data
            .get(field::LENGTH)
            .map_or(0, |_| usize::from(self.length()));
        data.get(field::VALUE..end).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ExtensionField<T> {
    /// Sets the field type.
    pub fn set_field_type(&mut self, value: u16) {
        self.buffer.as_mut()[field::TYPE].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the length field.
    pub fn set_length(&mut self, value: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }

    /// The value bytes (as delimited by the length field), mutably. Empty if
    /// the length field is inconsistent; never panics.
    pub fn value_mut(&mut self) -> &mut [u8] {
        let end = usize::from(if self.buffer.as_ref().len() >= EXTENSION_HEADER_LEN {
            self.length()
        } else {
            0
        });
        match self.buffer.as_mut().get_mut(field::VALUE..end) {
            Some(value) => value,
            None => &mut [],
        }
    }
}

/// A typed extension field: its type and value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExtensionRepr<'a> {
    /// The field type.
    pub field_type: u16,
    /// The value. On parse this includes the padding; on emit it is padded
    /// with zeros to a multiple of 4 and to at least [`MIN_EXTENSION_LEN`].
    pub value: &'a [u8],
}

impl<'a> ExtensionRepr<'a> {
    /// Reads the typed field out of a checked view.
    ///
    /// # Errors
    ///
    /// [`Error::BadExtension`] if the view's length field is invalid.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(field: &ExtensionField<&'a T>) -> Result<Self> {
        field.check_len()?;
        let buffer: &'a T = field.buffer;
        let data: &'a [u8] = buffer.as_ref();
        let value = data
            .get(field::VALUE..usize::from(field.length()))
            .ok_or(Error::BadExtension)?;
        Ok(ExtensionRepr {
            field_type: field.field_type(),
            value,
        })
    }

    /// The encoded length: header plus value, padded to a multiple of 4 and
    /// to at least [`MIN_EXTENSION_LEN`].
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        let len = (EXTENSION_HEADER_LEN + self.value.len()).next_multiple_of(4);
        if len < MIN_EXTENSION_LEN {
            MIN_EXTENSION_LEN
        } else {
            len
        }
    }

    /// Writes the field to the start of `buf` (zero padding included) and
    /// returns the number of bytes written. Never panics.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if `buf` is shorter than
    /// [`ExtensionRepr::buffer_len`]; [`Error::BadExtension`] if the field
    /// would be longer than 65532 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        let len16 = u16::try_from(len).map_err(|_| Error::BadExtension)?;
        let out = buf.get_mut(..len).ok_or(Error::Truncated)?;
        out.fill(0);
        let mut field = ExtensionField::new_unchecked(out);
        field.set_field_type(self.field_type);
        field.set_length(len16);
        let value = field.value_mut();
        if let Some(dst) = value.get_mut(..self.value.len()) {
            dst.copy_from_slice(self.value);
        }
        Ok(len)
    }
}

/// Walks a run of extension fields, yielding a view of each (exactly the
/// field's bytes). After the first error it yields that error and stops.
///
/// It does no MAC detection: give it [`Layout::extensions`], not a whole
/// trailer.
#[derive(Clone, Debug)]
pub struct ExtensionIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> ExtensionIter<'a> {
    /// Iterates over the extension fields in `bytes`.
    #[must_use]
    pub const fn new(bytes: &'a [u8]) -> Self {
        ExtensionIter {
            rest: bytes,
            failed: false,
        }
    }
}

impl<'a> Iterator for ExtensionIter<'a> {
    type Item = Result<ExtensionField<&'a [u8]>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let split = ExtensionField::new_checked(self.rest).and_then(|f| {
            self.rest
                .split_at_checked(usize::from(f.length()))
                .ok_or(Error::BadExtension)
        });
        match split {
            Ok((field, rest)) => {
                self.rest = rest;
                Some(Ok(ExtensionField::new_unchecked(field)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for ExtensionIter<'_> {}

/// The message authentication code trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mac<'a> {
    /// A 4-byte MAC: only a key identifier. A crypto-NAK proper carries key
    /// id 0; the key id is kept as received.
    CryptoNak {
        /// The key identifier (0 in a well-formed crypto-NAK).
        key_id: u32,
    },
    /// A key identifier and a 16-byte (MD5, AES-CMAC) or 20-byte (SHA-1)
    /// digest.
    Digest {
        /// The key identifier.
        key_id: u32,
        /// The digest, 16 or 20 bytes.
        digest: &'a [u8],
    },
}

/// The lengths a MAC trailer may have.
pub const MAC_LENS: [usize; 3] = [4, 20, 24];

impl<'a> Mac<'a> {
    /// Parses a MAC occupying all of `bytes`.
    ///
    /// # Errors
    ///
    /// [`Error::BadMac`] unless `bytes` is 4, 20 or 24 bytes long.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let (key, digest) = bytes.split_first_chunk::<4>().ok_or(Error::BadMac)?;
        let key_id = u32::from_be_bytes(*key);
        match digest.len() {
            0 => Ok(Mac::CryptoNak { key_id }),
            16 | 20 => Ok(Mac::Digest { key_id, digest }),
            _ => Err(Error::BadMac),
        }
    }

    /// The key identifier.
    #[must_use]
    pub const fn key_id(&self) -> u32 {
        match *self {
            Mac::CryptoNak { key_id } | Mac::Digest { key_id, .. } => key_id,
        }
    }

    /// Whether this is a 4-byte MAC with key id 0, a crypto-NAK.
    #[must_use]
    pub const fn is_crypto_nak(&self) -> bool {
        matches!(self, Mac::CryptoNak { key_id: 0 })
    }

    /// The encoded length: 4 plus the digest length.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self {
            Mac::CryptoNak { .. } => 4,
            Mac::Digest { digest, .. } => 4 + digest.len(),
        }
    }

    /// Writes the MAC to the start of `buf`; returns the bytes written.
    /// Never panics.
    ///
    /// # Errors
    ///
    /// [`Error::BadMac`] if a digest is not 16 or 20 bytes long;
    /// [`Error::Truncated`] if `buf` is shorter than [`Mac::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if let Mac::Digest { digest, .. } = self {
            if digest.len() != 16 && digest.len() != 20 {
                return Err(Error::BadMac);
            }
        }
        let len = self.buffer_len();
        let out = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let (key, rest) = out.split_at_mut(4);
        key.copy_from_slice(&self.key_id().to_be_bytes());
        if let Mac::Digest { digest, .. } = self {
            rest.copy_from_slice(digest);
        }
        Ok(len)
    }
}

/// Where things are in the bytes after the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Layout<'a> {
    /// The raw extension-field area (already validated; iterate it with
    /// [`Layout::extension_fields`] or [`ExtensionIter`]). Empty if none.
    pub extensions: &'a [u8],
    /// The MAC, if any.
    pub mac: Option<Mac<'a>>,
}

impl<'a> Layout<'a> {
    /// An iterator over the extension fields.
    #[must_use]
    pub const fn extension_fields(&self) -> ExtensionIter<'a> {
        ExtensionIter::new(self.extensions)
    }
}

/// Splits the bytes after the header into extension fields and MAC,
/// following the rules in the module docs.
///
/// # Errors
///
/// [`Error::BadExtension`] if an extension field is malformed or the bytes
/// after the last one are not 0, 4, 20 or 24 long.
pub fn parse_trailer(trailer: &[u8]) -> Result<Layout<'_>> {
    let mut pos = 0usize;
    loop {
        let (extensions, rest) = trailer.split_at_checked(pos).ok_or(Error::BadExtension)?;
        match rest.len() {
            0 => {
                return Ok(Layout {
                    extensions,
                    mac: None,
                })
            }
            4 | 20 | 24 => {
                return Ok(Layout {
                    extensions,
                    mac: Some(Mac::parse(rest)?),
                })
            }
            _ => {
                // Each field is at least MIN_EXTENSION_LEN long: the walk ends.
                let field = ExtensionField::new_checked(rest)?;
                pos += usize::from(field.length());
            }
        }
    }
}

/// Parses a whole datagram: the header, then extension fields and an
/// optional MAC. Never panics.
///
/// # Errors
///
/// [`Error::Truncated`] for fewer than [`HEADER_LEN`] bytes,
/// [`Error::BadVersion`] for a version outside 1..=4, and the errors of
/// [`parse_trailer`].
pub fn parse_datagram(bytes: &[u8]) -> Result<(NtpRepr, Layout<'_>)> {
    let repr = NtpRepr::parse(&NtpPacket::new_checked(bytes)?)?;
    let layout = parse_trailer(bytes.get(HEADER_LEN..).unwrap_or(&[]))?;
    Ok((repr, layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 48-byte NTPv4 client request header.
    static HEADER: [u8; 48] = {
        let mut h = [0u8; 48];
        h[0] = 0x23;
        h[2] = 6;
        h[3] = 0xec;
        h
    };

    /// Two extension fields: an NTS unique identifier (type 0x0104, 32 bytes
    /// of data) and an NTS cookie placeholder (type 0x0204, 16 bytes total).
    static EXTENSIONS: [u8; 52] = {
        let mut e = [0u8; 52];
        // Unique identifier: type 0x0104, length 36.
        e[0] = 0x01;
        e[1] = 0x04;
        e[3] = 36;
        let mut i = 4;
        while i < 36 {
            #[allow(clippy::cast_possible_truncation)] // i < 36
            {
                e[i] = i as u8;
            }
            i += 1;
        }
        // Cookie placeholder: type 0x0204, length 16, zero body.
        e[36] = 0x02;
        e[37] = 0x04;
        e[39] = 16;
        e
    };

    fn datagram(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn header_only() {
        let (repr, layout) = parse_datagram(&HEADER).unwrap();
        assert_eq!(repr.version, 4);
        assert_eq!(layout, Layout::default());
        assert_eq!(layout.extension_fields().count(), 0);
    }

    #[test]
    fn mac_lengths() {
        let key = 0x0000_002au32.to_be_bytes();
        let md5 = [0x11u8; 16];
        let sha1 = [0x22u8; 20];

        let bytes = datagram(&[&HEADER, &[0, 0, 0, 0]]);
        let (_, layout) = parse_datagram(&bytes).unwrap();
        assert_eq!(layout.mac, Some(Mac::CryptoNak { key_id: 0 }));
        assert!(layout.mac.unwrap().is_crypto_nak());
        assert!(layout.extensions.is_empty());

        let bytes = datagram(&[&HEADER, &key, &md5]);
        let (_, layout) = parse_datagram(&bytes).unwrap();
        let mac = layout.mac.unwrap();
        assert_eq!(
            mac,
            Mac::Digest {
                key_id: 42,
                digest: &md5
            }
        );
        assert_eq!((mac.key_id(), mac.buffer_len()), (42, 20));

        let bytes = datagram(&[&HEADER, &key, &sha1]);
        let (_, layout) = parse_datagram(&bytes).unwrap();
        assert_eq!(
            layout.mac,
            Some(Mac::Digest {
                key_id: 42,
                digest: &sha1
            })
        );

        // A MAC after extension fields.
        let bytes = datagram(&[&HEADER, &EXTENSIONS, &key, &md5]);
        let (_, layout) = parse_datagram(&bytes).unwrap();
        assert_eq!(layout.extensions, &EXTENSIONS[..]);
        assert_eq!(layout.mac.unwrap().key_id(), 42);

        // Lengths that are neither a MAC nor an extension field.
        for len in [1usize, 2, 3, 5, 8, 12, 15, 21, 23] {
            let bytes = datagram(&[&HEADER, &vec![0u8; len]]);
            assert_eq!(parse_datagram(&bytes), Err(Error::BadExtension), "{len}");
        }
    }

    #[test]
    fn mac_emit() {
        let md5 = [0x33u8; 16];
        let mut buf = [0u8; 24];
        let mac = Mac::Digest {
            key_id: 7,
            digest: &md5,
        };
        assert_eq!(mac.emit(&mut buf), Ok(20));
        assert_eq!(Mac::parse(&buf[..20]), Ok(mac));
        assert_eq!(Mac::CryptoNak { key_id: 0 }.emit(&mut buf), Ok(4));
        assert_eq!(&buf[..4], &[0; 4]);
        let odd = Mac::Digest {
            key_id: 1,
            digest: &md5[..5],
        };
        assert_eq!(odd.emit(&mut buf), Err(Error::BadMac));
        assert_eq!(mac.emit(&mut buf[..19]), Err(Error::Truncated));
        assert_eq!(Mac::parse(&buf[..5]), Err(Error::BadMac));
        assert_eq!(Mac::parse(&buf[..3]), Err(Error::BadMac));
    }

    #[test]
    fn extension_walk_good() {
        let bytes = datagram(&[&HEADER, &EXTENSIONS]);
        let (_, layout) = parse_datagram(&bytes).unwrap();
        assert_eq!(layout.mac, None);
        let fields: Vec<_> = layout.extension_fields().collect::<Result<_>>().unwrap();
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].field_type(), 0x0104);
        assert_eq!(fields[0].length(), 36);
        assert_eq!(fields[0].value(), &EXTENSIONS[4..36]);
        assert_eq!(fields[1].field_type(), 0x0204);
        assert_eq!(fields[1].length(), 16);
        assert_eq!(fields[1].value(), &[0u8; 12]);
        let repr = ExtensionRepr::parse(&fields[0]).unwrap();
        assert_eq!(repr.field_type, 0x0104);
        assert_eq!(repr.value.len(), 32);
    }

    #[test]
    fn extension_zero_length() {
        let mut ext = EXTENSIONS;
        ext[2] = 0;
        ext[3] = 0;
        let bytes = datagram(&[&HEADER, &ext]);
        assert_eq!(parse_datagram(&bytes), Err(Error::BadExtension));
        let mut iter = ExtensionIter::new(&ext);
        assert_eq!(iter.next(), Some(Err(Error::BadExtension)));
        assert_eq!(iter.next(), None, "stops after the first error");
    }

    #[test]
    fn extension_too_short() {
        // Length 12: a multiple of 4 but below the minimum of 16.
        let mut ext = EXTENSIONS;
        ext[39] = 12;
        assert_eq!(
            parse_datagram(&datagram(&[&HEADER, &ext])),
            Err(Error::BadExtension)
        );
    }

    #[test]
    fn extension_overlong() {
        let mut ext = EXTENSIONS;
        ext[39] = 20; // second field claims 4 more bytes than there are
        let bytes = datagram(&[&HEADER, &ext]);
        assert_eq!(parse_datagram(&bytes), Err(Error::BadExtension));
        let results: Vec<_> = ExtensionIter::new(&ext).collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        assert_eq!(results[1], Err(Error::BadExtension));
        // A huge length in the first field.
        ext[2] = 0xff;
        ext[3] = 0xfc;
        assert_eq!(
            parse_datagram(&datagram(&[&HEADER, &ext])),
            Err(Error::BadExtension)
        );
    }

    #[test]
    fn extension_misaligned() {
        let mut ext = EXTENSIONS;
        ext[3] = 34; // not a multiple of 4
        assert_eq!(
            parse_datagram(&datagram(&[&HEADER, &ext])),
            Err(Error::BadExtension)
        );
        assert_eq!(
            ExtensionField::new_checked(&ext[..]).err(),
            Some(Error::BadExtension)
        );
        // The value accessor stays safe on an unchecked, inconsistent view.
        let view = ExtensionField::new_unchecked(&ext[..2]);
        assert!(view.value().is_empty());
    }

    #[test]
    fn extension_repr_emit() {
        let mut buf = [0xffu8; 64];
        let short = ExtensionRepr {
            field_type: 0x0204,
            value: b"abc",
        };
        assert_eq!(short.buffer_len(), 16);
        assert_eq!(short.emit(&mut buf), Ok(16));
        assert_eq!(&buf[..16], b"\x02\x04\x00\x10abc\0\0\0\0\0\0\0\0\0");
        let long = ExtensionRepr {
            field_type: 0x0104,
            value: &EXTENSIONS[4..36],
        };
        assert_eq!(long.buffer_len(), 36);
        assert_eq!(long.emit(&mut buf), Ok(36));
        assert_eq!(&buf[..36], &EXTENSIONS[..36]);
        let odd = ExtensionRepr {
            field_type: 9,
            value: &[1; 17],
        };
        assert_eq!(odd.buffer_len(), 24);
        assert_eq!(odd.emit(&mut buf[..23]), Err(Error::Truncated));
        let field = ExtensionField::new_checked(&buf[..36]).unwrap();
        assert_eq!(ExtensionRepr::parse(&field), Ok(long));
    }

    #[test]
    fn twenty_bytes_are_a_mac() {
        // A 16-byte extension field plus a 4-byte crypto-NAK is 20 bytes,
        // which RFC 7822 §7.5 reads as one MAC with a 16-byte digest.
        let bytes = datagram(&[&HEADER, &EXTENSIONS[36..52], &[0, 0, 0, 0]]);
        let (_, layout) = parse_datagram(&bytes).unwrap();
        assert!(layout.extensions.is_empty());
        assert_eq!(
            layout.mac,
            Some(Mac::Digest {
                key_id: 0x0204_0010,
                digest: &bytes[52..]
            })
        );
    }

    #[test]
    fn header_errors_come_first() {
        assert_eq!(parse_datagram(&HEADER[..47]), Err(Error::Truncated));
        let mut bad = HEADER;
        bad[0] = 0x2b; // version 5
        assert_eq!(parse_datagram(&bad), Err(Error::BadVersion(5)));
    }
}
