//! The NTP header as xtask's probes, responders and load generators build
//! and read it.
//!
//! Written by hand from RFC 5905 §7.3 on purpose: the tools that measure
//! strata must not share its packet code (strata-wire), or a bug there
//! would hide itself. Only the 48-byte header: no extension fields, no MAC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an NTP header without extension fields.
pub const HEADER_LEN: usize = 48;
/// Seconds from the NTP era-0 epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// One second in NTP 32.32 fixed point.
const FRAC_PER_SEC: f64 = 4_294_967_296.0;
/// Poll exponent the requests carry.
const POLL: u8 = 6;
/// Precision the requests and replies carry (2^-20 s).
const PRECISION: u8 = 0xec;

/// The NTP 32.32 timestamp (era-relative) of `secs`.`nanos` since the Unix
/// epoch.
pub fn from_unix(secs: u64, nanos: u32) -> u64 {
    // Era arithmetic: the seconds field wraps modulo 2^32 by definition.
    let secs = secs.wrapping_add(NTP_UNIX_OFFSET) & 0xffff_ffff;
    let frac = (u64::from(nanos.min(999_999_999)) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The NTP timestamp of a wall-clock time (before 1970 reads as 1970).
pub fn timestamp(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    from_unix(since.as_secs(), since.subsec_nanos())
}

/// `a − b` in seconds, for timestamps less than 68 years apart (era-safe).
pub fn diff_seconds(a: u64, b: u64) -> f64 {
    let d = i64::from_ne_bytes(a.wrapping_sub(b).to_ne_bytes());
    // Precision: f64 keeps ~2^-22 s resolution at 68 years; plenty here.
    #[allow(clippy::cast_precision_loss)]
    let d = d as f64;
    d / FRAC_PER_SEC
}

/// A 48-byte NTPv4 request of `mode` (1 symmetric active, 3 client; any
/// other mode only in its low three bits) carrying `xmt` as its transmit
/// timestamp.
pub fn request(mode: u8, xmt: u64) -> [u8; HEADER_LEN] {
    let mut r = [0u8; HEADER_LEN];
    r[0] = 0x20 | (mode & 0x7); // leap 0, version 4
    r[2] = POLL;
    r[3] = PRECISION;
    r[40..48].copy_from_slice(&xmt.to_be_bytes());
    r
}

/// The fields of a header the tools look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Version number (bits 3..6 of the first byte).
    pub version: u8,
    /// Association mode (the low three bits of the first byte).
    pub mode: u8,
    /// Stratum; 0 is a kiss-o'-death or unsynchronised.
    pub stratum: u8,
    /// Poll exponent.
    pub poll: u8,
    /// Reference identifier (the kiss code when `stratum` is 0).
    pub refid: [u8; 4],
    /// Origin timestamp (T1 echoed).
    pub origin: u64,
    /// Receive timestamp (T2).
    pub receive: u64,
    /// Transmit timestamp (T3).
    pub transmit: u64,
}

impl Header {
    /// Reads the header at the start of `buf`; `None` when `buf` is shorter
    /// than [`HEADER_LEN`].
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Some(Header {
            version: (h[0] >> 3) & 0x7,
            mode: h[0] & 0x7,
            stratum: h[1],
            poll: h[2],
            refid: [h[12], h[13], h[14], h[15]],
            origin: u64_at(24),
            receive: u64_at(32),
            transmit: u64_at(40),
        })
    }
}

/// A server (mode 4) reply to `request` in the request's version: `rx`
/// and `tx` as receive and transmit (and reference) timestamps, the
/// request's transmit timestamp as origin, `refid` as reference id (or
/// kiss code with stratum 0).
pub fn reply(request: &Header, stratum: u8, refid: [u8; 4], rx: u64, tx: u64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0] = (request.version << 3) | 4; // leap 0
    out[1] = stratum;
    out[2] = request.poll;
    out[3] = PRECISION;
    out[12..16].copy_from_slice(&refid);
    out[16..24].copy_from_slice(&tx.to_be_bytes());
    out[24..32].copy_from_slice(&request.transmit.to_be_bytes());
    out[32..40].copy_from_slice(&rx.to_be_bytes());
    out[40..48].copy_from_slice(&tx.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_reply_round_trip() {
        let req = request(3, 0xdead_beef);
        let h = Header::parse(&req).expect("48 bytes");
        assert_eq!((h.version, h.mode, h.poll), (4, 3, POLL));
        assert_eq!(h.transmit, 0xdead_beef);
        let out = reply(&h, 1, *b"XTSK", 7, 9);
        let r = Header::parse(&out).expect("48 bytes");
        assert_eq!((r.version, r.mode, r.stratum), (4, 4, 1));
        assert_eq!((r.origin, r.receive, r.transmit), (0xdead_beef, 7, 9));
        assert_eq!(&r.refid, b"XTSK");
        assert!(Header::parse(&out[..47]).is_none(), "short");
        assert_eq!(request(6, 0)[0] & 7, 6, "mode kept in three bits");
    }

    #[test]
    fn timestamps_wrap_across_eras() {
        // 2036-02-07T06:28:16Z is the start of NTP era 1: seconds field 0.
        let era1 = 2_085_978_496;
        assert_eq!(from_unix(era1, 0), 0);
        let before = from_unix(era1 - 1, 500_000_000);
        assert!((diff_seconds(from_unix(era1, 0), before) - 0.5).abs() < 1e-9);
        assert!((diff_seconds(before, from_unix(era1, 0)) + 0.5).abs() < 1e-9);
        assert_eq!(from_unix(0, 0) >> 32, NTP_UNIX_OFFSET);
    }
}
