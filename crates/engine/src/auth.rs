//! Symmetric-key authentication: keys, the keys file, MACs (RFC 5905, RFC 8573).
//!
//! Sans-IO like the rest of the engine: the daemon reads the keys file and
//! hands its text to [`parse_keys_file`]; [`KeyStore`] holds the keys and
//! the set of trusted key ids; [`sign`] appends a MAC to an outgoing packet
//! and [`verify`] judges the MAC of an incoming datagram.
//!
//! # MACs
//!
//! A MAC trailer is a 32-bit key id followed by a digest over every byte
//! before the MAC (the header and any extension fields):
//!
//! | [`KeyType`]  | digest                                   | MAC length |
//! |--------------|------------------------------------------|-----------:|
//! | `Md5`        | MD5(key ‖ packet), 16 bytes (RFC 5905)   | 20         |
//! | `Sha1`       | SHA-1(key ‖ packet), 20 bytes            | 24         |
//! | `Sha256`     | SHA-256(key ‖ packet) truncated to 20 bytes, as chrony and ntpsec do | 24 |
//! | `Aes128Cmac` | AES-128-CMAC(key, packet), 16 bytes (RFC 8573) | 20   |
//!
//! Digests are compared in constant time. A 4-byte MAC holding key id 0
//! is a crypto-NAK ([`Verdict::CryptoNak`]).
//!
//! # Keys file
//!
//! One key per line, `ID TYPE KEY`, in the format ntpd and chrony share:
//!
//! - `ID` is a decimal key id in `1..=65535` (0 is reserved: a MAC with key
//!   id 0 is a crypto-NAK);
//! - `TYPE` is `MD5` (or ntpd's `M`), `SHA1`, `SHA256`, `AES128CMAC`
//!   (also spelled `AES-128-CMAC` or chrony's `AES128`), case-insensitive;
//! - `KEY` is `HEX:` followed by hex digits, `ASCII:` followed by printable
//!   characters (chrony), or a bare string read as ntpd does: up to 20
//!   characters are the key itself in ASCII, longer strings must be hex
//!   (for example 40 hex digits for a 20-byte SHA-1 key);
//! - an AES-128-CMAC key is exactly 16 bytes;
//! - `#` starts a comment that runs to the end of the line (so `#` cannot
//!   be part of a key); blank lines are ignored.
//!
//! Every error names the 1-based line number. Errors never include a key.

use std::collections::{HashMap, HashSet};
use std::fmt;

use aes::Aes128;
use cmac::{Cmac, Mac as _};
use md5::{Digest as _, Md5};
use sha1::Sha1;
use sha2::Sha256;
use strata_wire::{parse_datagram, Mac, HEADER_LEN};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// The largest key id a keys file may hold.
pub const MAX_KEY_ID: u32 = 65_535;

/// The longest digest any [`KeyType`] produces.
pub const MAX_DIGEST_LEN: usize = 20;

/// The longest MAC trailer [`sign`] appends: key id and digest.
pub const MAX_MAC_LEN: usize = 4 + MAX_DIGEST_LEN;

/// The digest algorithm of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// MD5(key ‖ packet), 16 bytes.
    Md5,
    /// SHA-1(key ‖ packet), 20 bytes.
    Sha1,
    /// SHA-256(key ‖ packet) truncated to 20 bytes.
    Sha256,
    /// AES-128-CMAC over the packet (RFC 8573), 16 bytes; the key is 16 bytes.
    Aes128Cmac,
}

impl KeyType {
    /// The digest length in bytes (the MAC is 4 bytes longer).
    #[must_use]
    pub const fn digest_len(self) -> usize {
        match self {
            KeyType::Md5 | KeyType::Aes128Cmac => 16,
            KeyType::Sha1 | KeyType::Sha256 => 20,
        }
    }

    /// The length of a MAC trailer with this key type.
    #[must_use]
    pub const fn mac_len(self) -> usize {
        4 + self.digest_len()
    }

    /// Parses a keys-file type name, case-insensitively.
    #[must_use]
    pub fn from_name(name: &str) -> Option<KeyType> {
        match name.to_ascii_uppercase().as_str() {
            "MD5" | "M" => Some(KeyType::Md5),
            "SHA1" | "SHA-1" => Some(KeyType::Sha1),
            "SHA256" | "SHA-256" => Some(KeyType::Sha256),
            "AES128CMAC" | "AES-128-CMAC" | "AES128-CMAC" | "AES128" => Some(KeyType::Aes128Cmac),
            _ => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Md5 => "MD5",
            KeyType::Sha1 => "SHA1",
            KeyType::Sha256 => "SHA256",
            KeyType::Aes128Cmac => "AES128CMAC",
        })
    }
}

/// A problem with one key, or one line of a keys file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The line has fewer than three fields.
    #[error("expected `ID TYPE KEY`, missing the {0}")]
    MissingField(&'static str),
    /// The line has more than three fields.
    #[error("unexpected text after the key (only `ID TYPE KEY` is supported)")]
    ExtraField,
    /// The id is not a decimal number.
    #[error("key id {0:?} is not a number")]
    BadId(String),
    /// The id is outside `1..=65535`.
    #[error("key id {0} is outside 1..=65535")]
    IdOutOfRange(u64),
    /// The type is not one of the supported names.
    #[error("unknown key type {0:?} (expected MD5, SHA1, SHA256 or AES128CMAC)")]
    UnknownType(String),
    /// A `HEX:` key, or a bare key longer than 20 characters, is not an
    /// even number of hex digits.
    #[error("key is not valid hex (an even number of hex digits; bare keys over 20 characters are read as hex)")]
    BadHex,
    /// An `ASCII:` key holds a non-printable character.
    #[error("ASCII key holds a non-printable character")]
    BadAscii,
    /// The key is empty.
    #[error("key is empty")]
    Empty,
    /// The key has the wrong length for its type.
    #[error("{kind} key must be {expected} bytes, this one is {got}")]
    BadLength {
        /// The key type.
        kind: KeyType,
        /// The length the type requires.
        expected: usize,
        /// The key's length.
        got: usize,
    },
    /// Another key has the same id.
    #[error("duplicate key id {0}")]
    DuplicateId(u32),
}

/// A keys-file error: the 1-based line number and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("keys file line {line}: {error}")]
pub struct KeysError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub error: KeyError,
}

/// A symmetric key. The secret is wiped from memory on drop and never
/// printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    id: u32,
    kind: KeyType,
    secret: Vec<u8>,
}

impl Key {
    /// A key, checked: id in `1..=65535`, non-empty secret, 16 bytes for
    /// AES-128-CMAC.
    ///
    /// # Errors
    ///
    /// [`KeyError::IdOutOfRange`], [`KeyError::Empty`] or
    /// [`KeyError::BadLength`].
    pub fn new(id: u32, kind: KeyType, secret: Vec<u8>) -> Result<Key, KeyError> {
        // Build first so the secret is wiped on every error path too.
        let key = Key { id, kind, secret };
        if !(1..=MAX_KEY_ID).contains(&id) {
            return Err(KeyError::IdOutOfRange(u64::from(id)));
        }
        if key.secret.is_empty() {
            return Err(KeyError::Empty);
        }
        if kind == KeyType::Aes128Cmac && key.secret.len() != 16 {
            return Err(KeyError::BadLength {
                kind,
                expected: 16,
                got: key.secret.len(),
            });
        }
        Ok(key)
    }

    /// The key id.
    #[must_use]
    pub const fn id(&self) -> u32 {
        self.id
    }

    /// The digest algorithm.
    #[must_use]
    pub const fn kind(&self) -> KeyType {
        self.kind
    }

    /// The secret bytes.
    #[must_use]
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The digest of `data` under this key, in the first
    /// [`KeyType::digest_len`] bytes of the result.
    fn digest(&self, data: &[u8]) -> [u8; MAX_DIGEST_LEN] {
        let mut out = [0u8; MAX_DIGEST_LEN];
        match self.kind {
            KeyType::Md5 => {
                let d = Md5::new()
                    .chain_update(&self.secret)
                    .chain_update(data)
                    .finalize();
                out[..16].copy_from_slice(&d);
            }
            KeyType::Sha1 => {
                let d = Sha1::new()
                    .chain_update(&self.secret)
                    .chain_update(data)
                    .finalize();
                out.copy_from_slice(&d);
            }
            KeyType::Sha256 => {
                let d = Sha256::new()
                    .chain_update(&self.secret)
                    .chain_update(data)
                    .finalize();
                out.copy_from_slice(&d[..MAX_DIGEST_LEN]);
            }
            KeyType::Aes128Cmac => {
                // Key::new guarantees 16 bytes; a failure here would leave an
                // all-zero digest, which a constant-time compare rejects
                // like any other wrong digest.
                if let Ok(mac) = <Cmac<Aes128> as cmac::Mac>::new_from_slice(&self.secret) {
                    let d = mac.chain_update(data).finalize().into_bytes();
                    out[..16].copy_from_slice(&d);
                }
            }
        }
        out
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// Parses the text of a keys file (format in the module docs).
///
/// # Errors
///
/// The first bad line, with its 1-based number; duplicate ids are an
/// error on the second occurrence.
pub fn parse_keys_file(text: &str) -> Result<Vec<Key>, KeysError> {
    let mut keys: Vec<Key> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split_once('#').map_or(raw, |(before, _)| before);
        let mut fields = content.split_whitespace();
        let Some(id) = fields.next() else { continue };
        let parsed = parse_key_line(id, &mut fields)
            .and_then(|key| {
                if keys.iter().any(|k| k.id == key.id) {
                    Err(KeyError::DuplicateId(key.id))
                } else {
                    Ok(key)
                }
            })
            .map_err(|error| KeysError { line, error })?;
        keys.push(parsed);
    }
    Ok(keys)
}

fn parse_key_line<'a>(
    id: &str,
    fields: &mut impl Iterator<Item = &'a str>,
) -> Result<Key, KeyError> {
    let id_num: u64 = id.parse().map_err(|_| KeyError::BadId(id.to_owned()))?;
    let id = u32::try_from(id_num)
        .ok()
        .filter(|i| (1..=MAX_KEY_ID).contains(i))
        .ok_or(KeyError::IdOutOfRange(id_num))?;
    let type_name = fields.next().ok_or(KeyError::MissingField("type"))?;
    let kind =
        KeyType::from_name(type_name).ok_or_else(|| KeyError::UnknownType(type_name.to_owned()))?;
    let key_text = fields.next().ok_or(KeyError::MissingField("key"))?;
    if fields.next().is_some() {
        return Err(KeyError::ExtraField);
    }
    let secret = decode_key(key_text)?;
    Key::new(id, kind, secret)
}

fn decode_key(text: &str) -> Result<Vec<u8>, KeyError> {
    let prefix = |p: &str| {
        text.get(..p.len())
            .filter(|head| head.eq_ignore_ascii_case(p))
            .and_then(|_| text.get(p.len()..))
    };
    if let Some(hex) = prefix("HEX:") {
        decode_hex(hex)
    } else if let Some(ascii) = prefix("ASCII:") {
        decode_ascii(ascii)
    } else if text.len() <= 20 {
        decode_ascii(text)
    } else {
        decode_hex(text)
    }
}

fn decode_ascii(text: &str) -> Result<Vec<u8>, KeyError> {
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::BadAscii);
    }
    Ok(text.as_bytes().to_vec())
}

fn decode_hex(text: &str) -> Result<Vec<u8>, KeyError> {
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return Err(KeyError::BadHex);
    }
    let nibble = |c: u8| char::from(c).to_digit(16).ok_or(KeyError::BadHex);
    let mut out = Vec::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks_exact(2) {
        let value = nibble(pair[0]).and_then(|hi| Ok(hi << 4 | nibble(pair[1])?));
        match value.map(u8::try_from) {
            Ok(Ok(b)) => out.push(b),
            _ => {
                out.zeroize();
                return Err(KeyError::BadHex);
            }
        }
    }
    Ok(out)
}

/// A problem building a [`KeyStore`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Two keys share an id.
    #[error("duplicate key id {0}")]
    DuplicateId(u32),
    /// A trusted key id names no key.
    #[error("trusted key {0} is not in the keys file")]
    UnknownTrustedKey(u32),
}

/// The keys and which of them are trusted. Only trusted keys authenticate
/// incoming packets; any key in the store can sign.
#[derive(Clone, Debug, Default)]
pub struct KeyStore {
    keys: HashMap<u32, Key>,
    trusted: HashSet<u32>,
}

impl KeyStore {
    /// An empty store: every MAC is [`BadReason::UnknownKey`].
    #[must_use]
    pub fn new_empty() -> KeyStore {
        KeyStore::default()
    }

    /// A store of `keys`, trusting the ids in `trusted`.
    ///
    /// # Errors
    ///
    /// [`StoreError::DuplicateId`] if two keys share an id,
    /// [`StoreError::UnknownTrustedKey`] if a trusted id names no key.
    pub fn new(
        keys: impl IntoIterator<Item = Key>,
        trusted: impl IntoIterator<Item = u32>,
    ) -> Result<KeyStore, StoreError> {
        let mut map = HashMap::new();
        for key in keys {
            let id = key.id;
            if map.insert(id, key).is_some() {
                return Err(StoreError::DuplicateId(id));
            }
        }
        let trusted: HashSet<u32> = trusted.into_iter().collect();
        if let Some(&id) = trusted.iter().find(|id| !map.contains_key(id)) {
            return Err(StoreError::UnknownTrustedKey(id));
        }
        Ok(KeyStore { keys: map, trusted })
    }

    /// The key with this id.
    #[must_use]
    pub fn get(&self, id: u32) -> Option<&Key> {
        self.keys.get(&id)
    }

    /// Whether `id` is a trusted key.
    #[must_use]
    pub fn is_trusted(&self, id: u32) -> bool {
        self.trusted.contains(&id)
    }

    /// The number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the store holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why [`sign`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No key has this id.
    #[error("no key {0}")]
    UnknownKey(u32),
    /// `out` cannot hold the packet and the MAC.
    #[error("output buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// The signed packet's length.
        needed: usize,
    },
    /// The packet and MAC would not parse as that packet followed by
    /// that MAC (a bad header or extension fields, or a MAC already there).
    #[error("signed packet would not parse as the packet followed by its MAC")]
    Malformed,
}

/// Why a MAC failed to authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BadReason {
    /// No key has this id (including 0 with a digest).
    UnknownKey,
    /// The key exists but is not trusted.
    Untrusted,
    /// The digest does not match.
    BadDigest,
    /// The digest length does not fit the key's type, or a 4-byte MAC
    /// carries a non-zero key id.
    BadLength,
    /// The datagram is not a valid NTP packet, so no MAC can be found.
    Malformed,
}

/// The outcome of [`verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// No MAC.
    None,
    /// A crypto-NAK: a 4-byte MAC with key id 0.
    CryptoNak,
    /// Authenticated with a trusted key.
    Ok {
        /// The key id.
        key_id: u32,
    },
    /// A MAC that does not authenticate.
    Bad(BadReason),
}

/// Signs `packet` (header and extension fields, no MAC) with key `key_id`:
/// copies it into `out`, appends the key id and digest, and returns the
/// signed length. Never panics.
///
/// The signed datagram is checked to parse as `packet` followed by this
/// MAC (so `packet` may end in a 20- or 24-byte extension field, which
/// only a following MAC disambiguates). On error the contents of `out`
/// are unspecified.
///
/// # Errors
///
/// [`AuthError::UnknownKey`], [`AuthError::BufferTooSmall`], or
/// [`AuthError::Malformed`] if the result would not parse that way.
pub fn sign(
    store: &KeyStore,
    key_id: u32,
    packet: &[u8],
    out: &mut [u8],
) -> Result<usize, AuthError> {
    let key = store.get(key_id).ok_or(AuthError::UnknownKey(key_id))?;
    let digest_len = key.kind.digest_len();
    let needed = packet.len() + 4 + digest_len;
    let dst = out
        .get_mut(..needed)
        .ok_or(AuthError::BufferTooSmall { needed })?;
    let (body, mac) = dst.split_at_mut(packet.len());
    body.copy_from_slice(packet);
    let (id, digest_out) = mac.split_at_mut(4);
    id.copy_from_slice(&key_id.to_be_bytes());
    digest_out.copy_from_slice(&key.digest(packet)[..digest_len]);
    match parse_datagram(dst) {
        Ok((_, layout))
            if layout.extensions.len() + HEADER_LEN == packet.len()
                && matches!(layout.mac, Some(Mac::Digest { key_id: k, .. }) if k == key_id) =>
        {
            Ok(needed)
        }
        _ => Err(AuthError::Malformed),
    }
}

/// Signs the `len`-byte packet at the front of `buf` in place, appending
/// the MAC of key `key_id`; returns the new length. `None` when it cannot
/// be signed (unknown key, `buf` too small): callers fail closed and send
/// nothing.
pub(crate) fn sign_in_place(
    store: &KeyStore,
    key_id: u32,
    len: usize,
    buf: &mut [u8],
) -> Option<usize> {
    let mut plain = [0u8; HEADER_LEN];
    let plain = plain.get_mut(..len)?;
    plain.copy_from_slice(buf.get(..len)?);
    sign(store, key_id, plain, buf).ok()
}

/// Judges the MAC of a received datagram: finds it with
/// [`strata_wire::parse_datagram`] and checks the digest over every byte
/// before it with a trusted key, in constant time. Never panics.
#[must_use]
pub fn verify(store: &KeyStore, datagram: &[u8]) -> Verdict {
    let Ok((_, layout)) = parse_datagram(datagram) else {
        return Verdict::Bad(BadReason::Malformed);
    };
    let (key_id, digest) = match layout.mac {
        None => return Verdict::None,
        Some(Mac::CryptoNak { key_id: 0 }) => return Verdict::CryptoNak,
        Some(Mac::CryptoNak { .. }) => return Verdict::Bad(BadReason::BadLength),
        Some(Mac::Digest { key_id, digest }) => (key_id, digest),
    };
    let Some(key) = store.get(key_id) else {
        return Verdict::Bad(BadReason::UnknownKey);
    };
    if !store.is_trusted(key_id) {
        return Verdict::Bad(BadReason::Untrusted);
    }
    if digest.len() != key.kind.digest_len() {
        return Verdict::Bad(BadReason::BadLength);
    }
    let Some(body) = datagram
        .len()
        .checked_sub(4 + digest.len())
        .and_then(|end| datagram.get(..end))
    else {
        return Verdict::Bad(BadReason::Malformed);
    };
    let expected = key.digest(body);
    let ok: bool = expected[..digest.len()].ct_eq(digest).into();
    if ok {
        Verdict::Ok { key_id }
    } else {
        Verdict::Bad(BadReason::BadDigest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An NTPv4 client request: version 4, mode 3, poll 6, precision -20,
    /// transmit timestamp e90b6c4e.12345678.
    fn packet() -> Vec<u8> {
        let mut p = vec![0x23, 0, 6, 0xec];
        p.extend_from_slice(&[0; 36]);
        p.extend_from_slice(&[0xe9, 0x0b, 0x6c, 0x4e, 0x12, 0x34, 0x56, 0x78]);
        p
    }

    /// A 16-byte extension field (type 0x0104) of 0xaa bytes.
    fn extension() -> Vec<u8> {
        let mut e = vec![0x01, 0x04, 0x00, 0x10];
        e.extend_from_slice(&[0xaa; 12]);
        e
    }

    fn hex(s: &str) -> Vec<u8> {
        decode_hex(s).unwrap()
    }

    const KEYS: &str = "\
# strata test keys
1 MD5 strata-md5-key
2 SHA1 HEX:0102030405060708090a0b0c0d0e0f1011121314
3 SHA256 ASCII:sha256secret   # trailing comment
4 AES128CMAC HEX:2b7e151628aed2a6abf7158809cf4f3c

5 md5 0102030405060708090a0b0c0d0e0f1011121314
6 AES-128-CMAC 2b7e151628aed2a6abf7158809cf4f3c
";

    fn store() -> KeyStore {
        let keys = parse_keys_file(KEYS).unwrap();
        KeyStore::new(keys, [1, 2, 3, 4, 6]).unwrap()
    }

    fn signed(store: &KeyStore, id: u32, body: &[u8]) -> Vec<u8> {
        let mut out = [0u8; 256];
        let n = sign(store, id, body, &mut out).unwrap();
        out[..n].to_vec()
    }

    #[test]
    fn parses_keys_file() {
        let keys = parse_keys_file(KEYS).unwrap();
        let summary: Vec<(u32, KeyType, usize)> = keys
            .iter()
            .map(|k| (k.id(), k.kind(), k.secret().len()))
            .collect();
        assert_eq!(
            summary,
            [
                (1, KeyType::Md5, 14),
                (2, KeyType::Sha1, 20),
                (3, KeyType::Sha256, 12),
                (4, KeyType::Aes128Cmac, 16),
                (5, KeyType::Md5, 20),
                (6, KeyType::Aes128Cmac, 16),
            ]
        );
        assert_eq!(keys[0].secret(), b"strata-md5-key");
        assert_eq!(
            keys[4].secret(),
            hex("0102030405060708090a0b0c0d0e0f1011121314")
        );
    }

    #[test]
    fn keys_file_errors_name_the_line() {
        let cases: &[(&str, usize, KeyError)] = &[
            ("1 MD5", 1, KeyError::MissingField("key")),
            ("\n\n7", 3, KeyError::MissingField("type")),
            ("x MD5 abc", 1, KeyError::BadId("x".into())),
            ("0 MD5 abc", 1, KeyError::IdOutOfRange(0)),
            ("65536 MD5 abc", 1, KeyError::IdOutOfRange(65536)),
            (
                "99999999999 MD5 abc",
                1,
                KeyError::IdOutOfRange(99_999_999_999),
            ),
            ("1 RMD160 abc", 1, KeyError::UnknownType("RMD160".into())),
            ("1 MD5 HEX:abc", 1, KeyError::BadHex),
            ("1 MD5 HEX:zz", 1, KeyError::BadHex),
            ("1 MD5 HEX:", 1, KeyError::Empty),
            ("1 MD5 ASCII:", 1, KeyError::Empty),
            ("1 MD5 this-is-longer-than-twenty", 1, KeyError::BadHex),
            ("1 MD5 abc 10.0.0.1", 1, KeyError::ExtraField),
            (
                "# c\n1 AES128CMAC HEX:0011",
                2,
                KeyError::BadLength {
                    kind: KeyType::Aes128Cmac,
                    expected: 16,
                    got: 2,
                },
            ),
            ("1 MD5 a\n2 MD5 b\n1 SHA1 c", 3, KeyError::DuplicateId(1)),
            ("1 MD5 ASCII:a\u{7f}", 1, KeyError::BadAscii),
        ];
        for (text, line, error) in cases {
            let got = parse_keys_file(text).unwrap_err();
            assert_eq!(
                got,
                KeysError {
                    line: *line,
                    error: error.clone()
                },
                "{text:?}"
            );
            assert!(got
                .to_string()
                .starts_with(&format!("keys file line {line}: ")));
        }
    }

    #[test]
    fn errors_and_debug_never_show_secrets() {
        let keys = parse_keys_file("9 SHA1 ASCII:topsecret").unwrap();
        assert!(!format!("{keys:?}").contains("topsecret"));
        let err = parse_keys_file("9 SHA1 ASCII:topsecret extra").unwrap_err();
        assert!(!err.to_string().contains("topsecret"));
    }

    #[test]
    fn type_names() {
        for (name, kind) in [
            ("MD5", KeyType::Md5),
            ("m", KeyType::Md5),
            ("sha1", KeyType::Sha1),
            ("SHA256", KeyType::Sha256),
            ("AES128CMAC", KeyType::Aes128Cmac),
            ("aes-128-cmac", KeyType::Aes128Cmac),
            ("AES128", KeyType::Aes128Cmac),
        ] {
            assert_eq!(KeyType::from_name(name), Some(kind), "{name}");
            assert_eq!(KeyType::from_name(&kind.to_string()), Some(kind));
        }
        assert_eq!(KeyType::from_name("AES256"), None);
    }

    /// Known-answer MACs computed independently with Python's `hashlib`
    /// and `cryptography` (CMAC) over the same bytes.
    #[test]
    fn known_answer_macs() {
        let store = store();
        let p = packet();
        let cases = [
            (1, "3ab8cb4ccfb37eb9d552937ba39321fb"),
            (2, "f615a6111f324071652070555448b482123b2424"),
            (3, "c8b1e5b31b6f6018d2d67e7e1dd2b43562747ae0"),
            (4, "f948d0e9ba0913594bb235e6e5239e54"),
        ];
        for (id, digest) in cases {
            let s = signed(&store, id, &p);
            let mut expected = p.clone();
            expected.extend_from_slice(&u32::to_be_bytes(id));
            expected.extend_from_slice(&hex(digest));
            assert_eq!(s, expected, "key {id}");
            assert_eq!(verify(&store, &s), Verdict::Ok { key_id: id });
        }
        // The digest covers extension fields too.
        let mut body = p.clone();
        body.extend_from_slice(&extension());
        let s = signed(&store, 2, &body);
        assert_eq!(
            s[s.len() - 20..],
            hex("838fd2308d1178861e6f4a5a5fc58bc4e304015a")
        );
        assert_eq!(verify(&store, &s), Verdict::Ok { key_id: 2 });
        // A last extension field of 20 or 24 bytes would read as a MAC on
        // its own; followed by the MAC it is unambiguous.
        for ext_len in [20u8, 24] {
            let mut body = p.clone();
            body.extend_from_slice(&[0x01, 0x04, 0x00, ext_len]);
            body.resize(48 + usize::from(ext_len), 0xbb);
            for id in 1..=4 {
                let s = signed(&store, id, &body);
                assert_eq!(verify(&store, &s), Verdict::Ok { key_id: id });
            }
        }
    }

    /// RFC 4493 section 4 examples 1 and 2 for AES-CMAC itself.
    #[test]
    fn rfc4493_vectors() {
        let key = Key::new(
            1,
            KeyType::Aes128Cmac,
            hex("2b7e151628aed2a6abf7158809cf4f3c"),
        )
        .unwrap();
        assert_eq!(
            key.digest(&[])[..16],
            hex("bb1d6929e95937287fa37d129b756746")
        );
        assert_eq!(
            key.digest(&hex("6bc1bee22e409f96e93d7e117393172a"))[..16],
            hex("070a16b46b4d4144f79bdd9dd04a287c")
        );
    }

    #[test]
    fn verdicts() {
        let store = store();
        let p = packet();
        assert_eq!(verify(&store, &p), Verdict::None);
        assert_eq!(verify(&store, &p[..40]), Verdict::Bad(BadReason::Malformed));

        let mut nak = p.clone();
        nak.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(verify(&store, &nak), Verdict::CryptoNak);
        let mut short = p.clone();
        short.extend_from_slice(&[0, 0, 0, 1]);
        assert_eq!(verify(&store, &short), Verdict::Bad(BadReason::BadLength));

        // Key 5 exists but is not trusted.
        let s = signed(&store, 5, &p);
        assert_eq!(verify(&store, &s), Verdict::Bad(BadReason::Untrusted));

        // Unknown key id, and key id 0 with a digest.
        for id in [0u32, 77] {
            let mut s = signed(&store, 1, &p);
            s[48..52].copy_from_slice(&id.to_be_bytes());
            assert_eq!(verify(&store, &s), Verdict::Bad(BadReason::UnknownKey));
        }

        // An MD5-length digest claimed by a SHA1 key.
        let mut s = signed(&store, 1, &p);
        s[48..52].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(verify(&store, &s), Verdict::Bad(BadReason::BadLength));

        // Any flipped bit, in the body or the digest, fails.
        let good = signed(&store, 4, &p);
        for i in (0..good.len()).filter(|i| !(48..52).contains(i)) {
            let mut s = good.clone();
            s[i] ^= 0x01;
            let v = verify(&store, &s);
            assert!(
                matches!(v, Verdict::Bad(BadReason::BadDigest | BadReason::Malformed)),
                "byte {i}: {v:?}"
            );
        }

        // The same secret under another (trusted) id does not verify.
        let mut s = signed(&store, 4, &p);
        s[48..52].copy_from_slice(&6u32.to_be_bytes());
        assert_eq!(verify(&store, &s), Verdict::Ok { key_id: 6 });
        assert_eq!(
            verify(&KeyStore::new_empty(), &s),
            Verdict::Bad(BadReason::UnknownKey)
        );
    }

    #[test]
    fn sign_errors() {
        let store = store();
        let p = packet();
        let mut out = [0u8; 71];
        assert_eq!(
            sign(&store, 2, &p, &mut out),
            Err(AuthError::BufferTooSmall { needed: 72 })
        );
        assert_eq!(
            sign(&store, 42, &p, &mut out),
            Err(AuthError::UnknownKey(42))
        );
        assert_eq!(
            sign(&store, 1, &p[..47], &mut out),
            Err(AuthError::Malformed)
        );
        let s = signed(&store, 1, &p);
        let mut big = [0u8; 128];
        assert_eq!(sign(&store, 1, &s, &mut big), Err(AuthError::Malformed));
        assert_eq!(out.len(), 71);
        let mut exact = [0u8; 72];
        assert_eq!(sign(&store, 2, &p, &mut exact), Ok(72));
    }

    #[test]
    fn store_errors() {
        let keys = || parse_keys_file("1 MD5 a\n2 MD5 b").unwrap();
        assert_eq!(
            KeyStore::new(keys(), [3]).unwrap_err(),
            StoreError::UnknownTrustedKey(3)
        );
        let twice = keys().into_iter().chain(keys());
        assert_eq!(
            KeyStore::new(twice, []).unwrap_err(),
            StoreError::DuplicateId(1)
        );
        let s = KeyStore::new(keys(), [2]).unwrap();
        assert_eq!(
            (s.len(), s.is_trusted(1), s.is_trusted(2)),
            (2, false, true)
        );
        assert!(KeyStore::new_empty().is_empty());
        assert_eq!(
            Key::new(70_000, KeyType::Md5, vec![1]).unwrap_err(),
            KeyError::IdOutOfRange(70_000)
        );
        assert_eq!(
            Key::new(1, KeyType::Sha1, vec![]).unwrap_err(),
            KeyError::Empty
        );
    }

    proptest! {
        #[test]
        fn verify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = verify(&store(), &bytes);
        }

        #[test]
        fn sign_then_verify(
            id in prop_oneof![Just(1u32), Just(2), Just(3), Just(4)],
            tail in proptest::collection::vec(any::<u8>(), 0..64),
            out_len in 0usize..200,
        ) {
            let store = store();
            let mut body = packet();
            body.extend_from_slice(&tail);
            let mut out = vec![0u8; out_len];
            if let Ok(n) = sign(&store, id, &body, &mut out) {
                prop_assert_eq!(verify(&store, &out[..n]), Verdict::Ok { key_id: id });
            }
        }

        #[test]
        fn keys_file_never_panics(text in "[ -~\n\t#]{0,200}") {
            let _ = parse_keys_file(&text);
        }
    }
}
