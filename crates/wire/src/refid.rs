//! The 32-bit reference identifier and the kiss codes it carries in
//! kiss-o'-death packets (RFC 5905 §7.3, §7.4; NTSN from RFC 8915 §5.7).
//!
//! The meaning of a reference ID depends on the stratum of the packet that
//! carries it: at stratum 0 it is a [`KissCode`], at stratum 1 an ASCII
//! reference-clock code such as `GPS` or `PPS`, above that the IPv4 address of
//! the upstream server or, for IPv6, the first four octets of the MD5 digest
//! of its address. All of this is plain data: nothing here can panic.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use md5::{Digest, Md5};

/// A 32-bit NTP reference identifier, stored as the four octets on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct ReferenceId([u8; 4]);

impl ReferenceId {
    /// The all-zero reference ID (unknown / not yet synchronized).
    pub const ZERO: Self = ReferenceId([0; 4]);
    /// `LOCL`: the local clock, used by an undisciplined or orphan server.
    pub const LOCL: Self = ReferenceId(*b"LOCL");
    /// `GPS`: a GPS reference clock.
    pub const GPS: Self = ReferenceId(*b"GPS\0");
    /// `PPS`: a pulse-per-second reference clock.
    pub const PPS: Self = ReferenceId(*b"PPS\0");
    /// `INIT`: the kiss code a server sends before it has synchronized.
    pub const INIT: Self = ReferenceId(*b"INIT");

    /// From the four octets as they appear on the wire.
    #[must_use]
    pub const fn new(bytes: [u8; 4]) -> Self {
        ReferenceId(bytes)
    }

    /// The four octets as they appear on the wire.
    #[must_use]
    pub const fn as_bytes(&self) -> [u8; 4] {
        self.0
    }

    /// The identifier as a big-endian (network order) 32-bit number.
    #[must_use]
    pub const fn to_bits(self) -> u32 {
        u32::from_be_bytes(self.0)
    }

    /// From a 32-bit number, written big-endian (network order).
    #[must_use]
    pub const fn from_bits(bits: u32) -> Self {
        ReferenceId(bits.to_be_bytes())
    }

    /// The reference ID of an IPv4 upstream server: its address octets.
    #[must_use]
    pub const fn from_ipv4(addr: Ipv4Addr) -> Self {
        ReferenceId(addr.octets())
    }

    /// The reference ID of an IPv6 upstream server: the first four octets of
    /// the MD5 digest of the 16 address octets (RFC 5905 §7.3).
    #[must_use]
    pub fn from_ipv6(addr: &Ipv6Addr) -> Self {
        let digest = Md5::digest(addr.octets());
        let mut id = [0u8; 4];
        for (dst, src) in id.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
        ReferenceId(id)
    }

    /// The reference ID of an upstream server at `addr`.
    #[must_use]
    pub fn from_ip(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Self::from_ipv4(v4),
            IpAddr::V6(v6) => Self::from_ipv6(&v6),
        }
    }

    /// The reference ID carrying a kiss code (for stratum-0 packets).
    #[must_use]
    pub fn from_kiss(code: KissCode) -> Self {
        ReferenceId(code.into())
    }

    /// Interprets the identifier as a kiss code. Only meaningful when the
    /// packet's stratum is 0; codes not in RFC 5905 / RFC 8915 come back as
    /// [`KissCode::Unknown`].
    #[must_use]
    pub fn kiss_code(self) -> KissCode {
        KissCode::from(self.0)
    }

    /// From an ASCII code such as `b"GPS"` or `b"LOCL"`: the first up to four
    /// bytes, padded on the right with zero octets. Longer input is cut to
    /// four bytes.
    #[must_use]
    pub fn from_ascii(code: &[u8]) -> Self {
        let mut id = [0u8; 4];
        for (dst, src) in id.iter_mut().zip(code.iter()) {
            *dst = *src;
        }
        ReferenceId(id)
    }

    /// The identifier as an ASCII code, if it looks like one: one to four
    /// ASCII letters or digits, followed only by zero padding. `None`
    /// otherwise (for example for an address-derived identifier).
    ///
    /// Note that some IPv4 addresses also pass this test; the stratum of the
    /// packet decides which reading is right.
    #[must_use]
    pub fn as_ascii(&self) -> Option<&str> {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(4);
        let (code, padding) = self.0.split_at(len);
        if code.is_empty()
            || !code.iter().all(u8::is_ascii_alphanumeric)
            || padding.iter().any(|&b| b != 0)
        {
            return None;
        }
        core::str::from_utf8(code).ok()
    }
}

impl From<[u8; 4]> for ReferenceId {
    fn from(bytes: [u8; 4]) -> Self {
        ReferenceId(bytes)
    }
}

impl From<ReferenceId> for [u8; 4] {
    fn from(id: ReferenceId) -> Self {
        id.0
    }
}

impl From<Ipv4Addr> for ReferenceId {
    fn from(addr: Ipv4Addr) -> Self {
        Self::from_ipv4(addr)
    }
}

impl From<KissCode> for ReferenceId {
    fn from(code: KissCode) -> Self {
        Self::from_kiss(code)
    }
}

impl fmt::Display for ReferenceId {
    /// ASCII for printable codes (`GPS`, `RATE`), a dotted quad otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_ascii() {
            Some(code) => f.write_str(code),
            None => fmt::Display::fmt(&Ipv4Addr::from(self.0), f),
        }
    }
}

/// Declares [`KissCode`] with lossless conversions from and to the 4 octets.
macro_rules! kiss_codes {
    ($( $(#[$doc:meta])* $variant:ident = $bytes:literal, )*) => {
        /// A kiss code: the reference ID of a stratum-0 "kiss-o'-death"
        /// packet (RFC 5905 fig. 13, plus `NTSN` from RFC 8915).
        ///
        /// Conversion from and to `[u8; 4]` is lossless: unlisted codes are
        /// kept in [`KissCode::Unknown`]. (Do not build `Unknown` from a
        /// listed code by hand: it would not compare equal to the variant.)
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum KissCode {
            $( $(#[$doc])* $variant, )*
            /// Any other code, as received.
            Unknown([u8; 4]),
        }

        impl From<[u8; 4]> for KissCode {
            fn from(bytes: [u8; 4]) -> Self {
                match &bytes {
                    $( $bytes => KissCode::$variant, )*
                    _ => KissCode::Unknown(bytes),
                }
            }
        }

        impl From<KissCode> for [u8; 4] {
            fn from(code: KissCode) -> Self {
                match code {
                    $( KissCode::$variant => *$bytes, )*
                    KissCode::Unknown(bytes) => bytes,
                }
            }
        }
    };
}

kiss_codes! {
    /// `ACST`: the association belongs to an anycast server.
    Acst = b"ACST",
    /// `AUTH`: server authentication failed.
    Auth = b"AUTH",
    /// `AUTO`: autokey sequence failed.
    Auto = b"AUTO",
    /// `BCST`: the association belongs to a broadcast server.
    Bcst = b"BCST",
    /// `CRYP`: cryptographic authentication or identification failed.
    Cryp = b"CRYP",
    /// `DENY`: access denied by remote server.
    Deny = b"DENY",
    /// `DROP`: lost peer in symmetric mode.
    Drop = b"DROP",
    /// `RSTR`: access denied due to local policy.
    Rstr = b"RSTR",
    /// `INIT`: the association has not yet synchronized for the first time.
    Init = b"INIT",
    /// `MCST`: the association belongs to a dynamically discovered server.
    Mcst = b"MCST",
    /// `NKEY`: no key found.
    Nkey = b"NKEY",
    /// `NTSN`: NTS negative-acknowledgment (RFC 8915).
    Ntsn = b"NTSN",
    /// `RATE`: rate exceeded; the server has temporarily denied access.
    Rate = b"RATE",
    /// `RMOT`: alteration of association from a remote host running ntpdc.
    Rmot = b"RMOT",
    /// `STEP`: a step change in system time has occurred.
    Step = b"STEP",
}

impl KissCode {
    /// The four octets of the code.
    #[must_use]
    pub fn to_bytes(self) -> [u8; 4] {
        self.into()
    }

    /// Whether the code tells the client to stop using this server
    /// (`DENY`, `RSTR`, RFC 5905 §7.4).
    #[must_use]
    pub fn is_deny(self) -> bool {
        matches!(self, KissCode::Deny | KissCode::Rstr)
    }

    /// Whether the code asks the client to reduce its polling rate (`RATE`).
    #[must_use]
    pub fn is_rate(self) -> bool {
        matches!(self, KissCode::Rate)
    }
}

impl fmt::Display for KissCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&ReferenceId::from_kiss(*self), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_refid_is_the_address() {
        let id = ReferenceId::from_ipv4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(id.as_bytes(), [192, 0, 2, 1]);
        assert_eq!(id.to_bits(), 0xc000_0201);
        assert_eq!(ReferenceId::from_bits(0xc000_0201), id);
        assert_eq!(id.to_string(), "192.0.2.1");
        assert_eq!(
            ReferenceId::from_ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            id
        );
    }

    #[test]
    fn ipv6_refid_is_md5_prefix() {
        // Vectors: python3 -c 'import hashlib,ipaddress;
        //   print(hashlib.md5(ipaddress.IPv6Address(A).packed).hexdigest()[:8])'
        let cases = [
            ("2001:db8::1", 0x39ab_9b37),
            ("::1", 0xcf40_4dc8),
            ("fd00:200::1", 0x5960_ea45),
        ];
        for (addr, bits) in cases {
            let addr: Ipv6Addr = addr.parse().unwrap();
            assert_eq!(ReferenceId::from_ipv6(&addr).to_bits(), bits, "{addr}");
            assert_eq!(ReferenceId::from_ip(IpAddr::V6(addr)).to_bits(), bits);
        }
    }

    #[test]
    fn ascii_codes() {
        assert_eq!(ReferenceId::from_ascii(b"GPS"), ReferenceId::GPS);
        assert_eq!(ReferenceId::from_ascii(b"LOCL"), ReferenceId::LOCL);
        assert_eq!(ReferenceId::from_ascii(b"LOCLX").as_bytes(), *b"LOCL");
        assert_eq!(ReferenceId::from_ascii(b"").as_bytes(), [0; 4]);
        assert_eq!(ReferenceId::GPS.to_string(), "GPS");
        assert_eq!(ReferenceId::LOCL.as_ascii(), Some("LOCL"));
        assert_eq!(ReferenceId::ZERO.as_ascii(), None);
        assert_eq!(ReferenceId::ZERO.to_string(), "0.0.0.0");
        // A zero in the middle is not padding.
        assert_eq!(ReferenceId::new(*b"G\0S\0").as_ascii(), None);
        assert_eq!(ReferenceId::new([127, 0, 0, 1]).to_string(), "127.0.0.1");
    }

    #[test]
    fn kiss_codes_round_trip() {
        let all = [
            (KissCode::Acst, b"ACST"),
            (KissCode::Auth, b"AUTH"),
            (KissCode::Auto, b"AUTO"),
            (KissCode::Bcst, b"BCST"),
            (KissCode::Cryp, b"CRYP"),
            (KissCode::Deny, b"DENY"),
            (KissCode::Drop, b"DROP"),
            (KissCode::Rstr, b"RSTR"),
            (KissCode::Init, b"INIT"),
            (KissCode::Mcst, b"MCST"),
            (KissCode::Nkey, b"NKEY"),
            (KissCode::Ntsn, b"NTSN"),
            (KissCode::Rate, b"RATE"),
            (KissCode::Rmot, b"RMOT"),
            (KissCode::Step, b"STEP"),
        ];
        for (code, bytes) in all {
            assert_eq!(KissCode::from(*bytes), code);
            assert_eq!(code.to_bytes(), *bytes);
            let id = ReferenceId::from_kiss(code);
            assert_eq!(id.as_bytes(), *bytes);
            assert_eq!(id.kiss_code(), code);
            assert_eq!(code.to_string().as_bytes(), bytes);
        }
        let odd = KissCode::from(*b"XYZW");
        assert_eq!(odd, KissCode::Unknown(*b"XYZW"));
        assert_eq!(<[u8; 4]>::from(odd), *b"XYZW");
        assert_eq!(ReferenceId::INIT.kiss_code(), KissCode::Init);
        assert!(KissCode::Deny.is_deny() && KissCode::Rstr.is_deny());
        assert!(!KissCode::Rate.is_deny() && KissCode::Rate.is_rate());
    }
}
