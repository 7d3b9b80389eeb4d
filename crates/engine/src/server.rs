//! The server responder: a pure function from a client request (mode 3)
//! to a server reply (mode 4), or from a symmetric active packet (mode 1)
//! to a stateless symmetric passive answer (mode 2).
//!
//! [`respond`] takes the request bytes, the receive and transmit
//! timestamps and the node's [`ServerState`], and writes the reply into a
//! caller's buffer. It allocates nothing, takes no locks and keeps no
//! state, so any number of worker threads may call it on a shared
//! `ServerState` snapshot. A reply is never longer than its request (48
//! bytes for a request of at least 48), so answering cannot amplify.

use strata_wire::{
    KissCode, Leap, Mode, NtpPacket, NtpRepr, NtpShort, NtpTimestamp, ReferenceId, HEADER_LEN,
};

use crate::access::AccessLevel;
use crate::counters::DropReason;
use crate::ratelimit::Decision;

/// Stratum values at or above this mean "unsynchronised" (RFC 5905 MAXSTRAT).
pub const MAX_STRATUM: u8 = 16;

/// What a server tells its clients about itself: the system variables of
/// RFC 5905 section 11.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerState {
    /// Leap indicator (`Unsynchronized` while not synchronised).
    pub leap: Leap,
    /// Stratum, 1..=15 when synchronised; 16 when not.
    pub stratum: u8,
    /// Precision of the local clock, log2 seconds.
    pub precision: i8,
    /// Round-trip delay to the reference clock.
    pub root_delay: NtpShort,
    /// Total dispersion to the reference clock.
    pub root_dispersion: NtpShort,
    /// The reference identifier.
    pub reference_id: ReferenceId,
    /// When the clock was last set or corrected.
    pub reference_time: NtpTimestamp,
}

impl ServerState {
    /// The state of a node that is not synchronised.
    #[must_use]
    pub fn unsynchronized(precision: i8) -> Self {
        ServerState {
            leap: Leap::Unsynchronized,
            stratum: MAX_STRATUM,
            precision,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::ZERO,
            reference_id: ReferenceId::new([0; 4]),
            reference_time: NtpTimestamp::ZERO,
        }
    }

    /// Whether this state says "synchronised".
    #[must_use]
    pub fn is_synchronized(&self) -> bool {
        self.leap != Leap::Unsynchronized && self.stratum < MAX_STRATUM
    }

    /// The header a node in this state sends: its system variables, with
    /// leap 3 and stratum 0 while it is not synchronised, and the given
    /// mode, version, poll and timestamps. Every packet that carries the
    /// server's time (modes 2, 4 and 5, and our own mode 1) starts here.
    #[must_use]
    pub fn header(
        &self,
        mode: Mode,
        version: u8,
        poll: i8,
        origin: NtpTimestamp,
        receive: NtpTimestamp,
        transmit: NtpTimestamp,
    ) -> NtpRepr {
        let synced = self.is_synchronized();
        NtpRepr {
            leap: if synced {
                self.leap
            } else {
                Leap::Unsynchronized
            },
            version,
            mode,
            stratum: if synced { self.stratum } else { 0 },
            poll,
            precision: self.precision,
            root_delay: self.root_delay,
            root_dispersion: self.root_dispersion,
            reference_id: self.reference_id,
            reference_timestamp: self.reference_time,
            origin_timestamp: origin,
            receive_timestamp: receive,
            transmit_timestamp: transmit,
        }
    }
}

/// Builds the reply to a client (mode 3) request.
///
/// `rx_time` is when the request arrived and `tx_time` when the reply
/// leaves, both on the served clock's timescale; read `tx_time` as late as
/// possible. Writes the reply to the front of `out` and returns its length.
///
/// # Errors
/// The reason to drop the request: too short or a bad trailer
/// ([`DropReason::Malformed`], also when `out` is shorter than
/// [`HEADER_LEN`]), version outside 1..=4, or a mode other than client.
pub fn respond(
    request: &[u8],
    rx_time: NtpTimestamp,
    tx_time: NtpTimestamp,
    state: &ServerState,
    out: &mut [u8],
) -> Result<usize, DropReason> {
    let (req, mode, out) = parse_request(request, out)?;
    let reply = state.header(
        mode,
        req.version,
        req.poll,
        req.transmit_timestamp,
        rx_time,
        tx_time,
    );
    reply.emit(&mut NtpPacket::new_unchecked(&mut *out));
    Ok(HEADER_LEN)
}

/// Builds a kiss-o'-death answer to a client (mode 3) or symmetric active
/// (mode 1) request: leap 3, stratum 0, the kiss `code` as reference id,
/// the request's transmit timestamp as origin and no other timestamp.
/// Writes it to the front of `out` and returns its length, never more than
/// the request's.
///
/// # Errors
/// As [`respond`].
pub fn kiss_of_death(
    request: &[u8],
    code: KissCode,
    precision: i8,
    out: &mut [u8],
) -> Result<usize, DropReason> {
    let (req, mode, out) = parse_request(request, out)?;
    let kod = NtpRepr {
        leap: Leap::Unsynchronized,
        version: req.version,
        mode,
        stratum: 0,
        poll: req.poll,
        precision,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::ZERO,
        reference_id: ReferenceId::from_kiss(code),
        reference_timestamp: NtpTimestamp::ZERO,
        origin_timestamp: req.transmit_timestamp,
        receive_timestamp: NtpTimestamp::ZERO,
        transmit_timestamp: NtpTimestamp::ZERO,
    };
    kod.emit(&mut NtpPacket::new_unchecked(&mut *out));
    Ok(HEADER_LEN)
}

/// Parses a request the server answers, giving it, the mode of the
/// answer and the header's room in `out`: a client request (mode 3 → 4)
/// or a symmetric active packet from a peer we keep no association for
/// (mode 1 → a stateless 2, ntpd's `nopeer` behaviour).
fn parse_request<'a>(
    request: &[u8],
    out: &'a mut [u8],
) -> Result<(NtpRepr, Mode, &'a mut [u8]), DropReason> {
    let (req, _layout) = strata_wire::parse_datagram(request).map_err(wire_drop_reason)?;
    let mode = match req.mode {
        Mode::Client => Mode::Server,
        Mode::SymmetricActive => Mode::SymmetricPassive,
        _ => return Err(DropReason::UnexpectedMode),
    };
    let out = out.get_mut(..HEADER_LEN).ok_or(DropReason::Malformed)?;
    Ok((req, mode, out))
}

/// Maps a wire parse error to the drop counter it belongs to.
pub(crate) fn wire_drop_reason(e: strata_wire::Error) -> DropReason {
    match e {
        strata_wire::Error::BadVersion(_) => DropReason::BadVersion,
        _ => DropReason::Malformed,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn admission_by_level_policy_and_limit() {
        use super::{admit, AccessLevel, Admission, Decision, DropReason};
        let served = Some(AccessLevel::Synchronization);
        let query = Some(AccessLevel::Query);
        assert_eq!(admit(served, false, || Decision::Allow), Admission::Answer);
        assert_eq!(
            admit(served, false, || Decision::KissRate),
            Admission::KissRate
        );
        assert_eq!(
            admit(served, true, || Decision::Drop),
            Admission::Drop(DropReason::RateLimited)
        );
        // Refused and dropped: the limiter is not asked.
        for level in [None, query] {
            assert_eq!(
                admit(level, false, || unreachable!("limiter asked")),
                Admission::Drop(DropReason::AccessDenied)
            );
        }
        // Refused with the kod policy: a KoD DENY unless over the limit.
        assert_eq!(admit(None, true, || Decision::Allow), Admission::KissDeny);
        assert_eq!(
            admit(query, true, || Decision::KissRate),
            Admission::KissDeny
        );
        assert_eq!(
            admit(None, true, || Decision::Drop),
            Admission::Drop(DropReason::AccessDenied)
        );
    }
    use super::*;
    use strata_wire::NtpDuration;

    fn request(version: u8, mode: Mode, xmt: NtpTimestamp, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len.max(HEADER_LEN)];
        let repr = NtpRepr {
            version,
            mode,
            ..NtpRepr::client_request(6, xmt)
        };
        repr.emit(&mut NtpPacket::new_unchecked(&mut buf[..]));
        buf.truncate(len);
        buf
    }

    fn synced_state() -> ServerState {
        ServerState {
            leap: Leap::NoWarning,
            stratum: 2,
            precision: -23,
            root_delay: NtpShort::from_seconds(0.01),
            root_dispersion: NtpShort::from_seconds(0.02),
            reference_id: ReferenceId::new([10, 200, 0, 1]),
            reference_time: NtpTimestamp::from_unix(1_800_000_000, 0),
        }
    }

    #[test]
    fn answers_a_client_request() {
        let xmt = NtpTimestamp::from_bits(0x1234_5678_9abc_def0);
        let req = request(4, Mode::Client, xmt, HEADER_LEN);
        let rx = NtpTimestamp::from_unix(1_800_000_100, 0);
        let tx = rx + NtpDuration::from_seconds(0.000_01);
        let mut out = [0u8; 1500];
        let n = respond(&req, rx, tx, &synced_state(), &mut out).expect("reply");
        assert_eq!(n, HEADER_LEN);
        let (reply, _) = strata_wire::parse_datagram(&out[..n]).expect("parse");
        assert_eq!(reply.mode, Mode::Server);
        assert_eq!(reply.version, 4);
        assert_eq!(reply.stratum, 2);
        assert_eq!(reply.origin_timestamp, xmt);
        assert_eq!(reply.receive_timestamp, rx);
        assert_eq!(reply.transmit_timestamp, tx);
        assert_eq!(reply.reference_id, ReferenceId::new([10, 200, 0, 1]));
    }

    #[test]
    fn echoes_version_3() {
        let req = request(3, Mode::Client, NtpTimestamp::from_bits(7), HEADER_LEN);
        let mut out = [0u8; 48];
        let n = respond(
            &req,
            NtpTimestamp::ZERO,
            NtpTimestamp::ZERO,
            &synced_state(),
            &mut out,
        )
        .expect("reply");
        let (reply, _) = strata_wire::parse_datagram(&out[..n]).expect("parse");
        assert_eq!(reply.version, 3);
    }

    #[test]
    fn unsynchronized_server_says_so() {
        let req = request(4, Mode::Client, NtpTimestamp::from_bits(7), HEADER_LEN);
        let mut out = [0u8; 48];
        let state = ServerState::unsynchronized(-20);
        let n = respond(
            &req,
            NtpTimestamp::ZERO,
            NtpTimestamp::ZERO,
            &state,
            &mut out,
        )
        .expect("reply");
        let (reply, _) = strata_wire::parse_datagram(&out[..n]).expect("parse");
        assert_eq!(reply.leap, Leap::Unsynchronized);
        assert_eq!(reply.stratum, 0);
    }

    #[test]
    fn rejects_bad_requests() {
        let mut out = [0u8; 48];
        let st = synced_state();
        let t = NtpTimestamp::ZERO;
        let short = request(4, Mode::Client, t, 47);
        assert_eq!(
            respond(&short, t, t, &st, &mut out),
            Err(DropReason::Malformed)
        );
        let v5 = request(5, Mode::Client, t, 48);
        assert_eq!(
            respond(&v5, t, t, &st, &mut out),
            Err(DropReason::BadVersion)
        );
        let server = request(4, Mode::Server, t, 48);
        assert_eq!(
            respond(&server, t, t, &st, &mut out),
            Err(DropReason::UnexpectedMode)
        );
        let ok = request(4, Mode::Client, t, 48);
        assert_eq!(
            respond(&ok, t, t, &st, &mut out[..40]),
            Err(DropReason::Malformed)
        );
    }

    #[test]
    fn kiss_of_death_carries_only_the_origin() {
        let xmt = NtpTimestamp::from_bits(0x1234_5678_9abc_def0);
        let req = request(4, Mode::Client, xmt, HEADER_LEN);
        let mut out = [0u8; 64];
        let n = kiss_of_death(&req, KissCode::Rate, -20, &mut out).expect("kod");
        assert_eq!(n, HEADER_LEN);
        let (kod, _) = strata_wire::parse_datagram(&out[..n]).expect("parse");
        assert_eq!(kod.mode, Mode::Server);
        assert_eq!(kod.stratum, 0);
        assert_eq!(kod.leap, Leap::Unsynchronized);
        assert_eq!(kod.reference_id.kiss_code(), KissCode::Rate);
        assert_eq!(kod.origin_timestamp, xmt);
        assert_eq!(kod.receive_timestamp, NtpTimestamp::ZERO);
        assert_eq!(kod.transmit_timestamp, NtpTimestamp::ZERO);
        assert_eq!(kod.reference_timestamp, NtpTimestamp::ZERO);
        let sym = request(4, Mode::SymmetricActive, xmt, HEADER_LEN);
        let n = kiss_of_death(&sym, KissCode::Deny, -20, &mut out).expect("kod");
        let (kod, _) = strata_wire::parse_datagram(&out[..n]).expect("parse");
        assert_eq!(kod.mode, Mode::SymmetricPassive);
        assert_eq!(kod.reference_id.kiss_code(), KissCode::Deny);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_amplifies(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut out = [0u8; 256];
            if let Ok(n) = respond(&bytes, NtpTimestamp::ZERO, NtpTimestamp::ZERO, &synced_state(), &mut out) {
                proptest::prop_assert!(n <= bytes.len());
            }
        }
    }
}

/// What a server does with a time request, given the client's access level
/// and its rate limit: the one decision the engine and the daemon's
/// fast-path workers share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Serve the time.
    Answer,
    /// Over the rate limit: answer with a KoD RATE.
    KissRate,
    /// Refused by the access rules with the `kod` deny policy: answer with
    /// a KoD DENY, and count the request as [`DropReason::AccessDenied`].
    KissDeny,
    /// Answer nothing; count the request under this reason.
    Drop(DropReason),
}

/// Decides a time request. `level` is the client's access level (`None`:
/// matched no rule); `deny_kod` whether refused clients get a KoD DENY;
/// `limit` runs the rate limiter, and is called only for a request that
/// may get an answer (so refused-and-dropped requests cost no token).
pub fn admit(
    level: Option<AccessLevel>,
    deny_kod: bool,
    limit: impl FnOnce() -> Decision,
) -> Admission {
    let allowed = level.is_some_and(AccessLevel::serves_time);
    if !(allowed || deny_kod) {
        return Admission::Drop(DropReason::AccessDenied);
    }
    match (allowed, limit()) {
        (true, Decision::Drop) => Admission::Drop(DropReason::RateLimited),
        (false, Decision::Drop) => Admission::Drop(DropReason::AccessDenied),
        (true, Decision::Allow) => Admission::Answer,
        (true, Decision::KissRate) => Admission::KissRate,
        (false, _) => Admission::KissDeny,
    }
}
