//! The control responder: read-only NTP control messages (mode 6, RFC
//! 9327), as ntpq, `check_ntp_peer` and monitoring collectors send them.
//!
//! Answered: READSTAT (the system status word and the association list
//! with each association's status word, or one association's status) and
//! READVAR (the system variables, or one association's), all or named,
//! in the units and formats ntpq expects (offsets, delays, jitter, root
//! delay and dispersion in milliseconds; timestamps as `0x` hex), split
//! into fragments of at most [`CONTROL_MAX_DATA`] octets with offsets and
//! the more bit. Poll exponents below 0 (sub-second polls) read as 0,
//! the least ntpq can show. Anything that writes (WRITEVAR, WRITECLOCK, CONFIGURE)
//! gets a permission error; READCLOCK a bad-association error (there are
//! no reference clocks); every other opcode, the MRU list among them (not
//! kept), a bad-opcode error. Responses carry the request's version and
//! the system leap indicator.
//!
//! A request is answered only when all of these hold, and otherwise
//! dropped and counted under a [`DropReason`] of its instance: it is a
//! well-formed request (not a response, version 2..=4, one fragment) on a
//! listener without a required key (authenticated mode 6 is not
//! supported: keyed listeners drop it); the instance's access rules give
//! its source `peer`, `server` or `query` (never `synchronization`), or —
//! **closed by default** — no rule matches (or there are none) and the
//! source is a loopback address; and the rate limiter admits it.
//!
//! A request sees its own instance: the association list and variables
//! are those of the instance whose listener received it, and `dstadr` is
//! the address the request was sent to.

use core::fmt::Write as _;
use core::net::IpAddr;

use strata_wire::{
    ControlError, ControlPacket, ControlRepr, Leap, NtpTimestamp, Opcode, CONTROL_MAX_DATA,
};

use crate::access::{level_for, AccessLevel};
use crate::assoc::AssociationMode;
use crate::counters::DropReason;
use crate::node::{Node, RecvMeta, Transmit};
use crate::ratelimit::Decision;
use crate::status::{SelectionRole, SessionStatus, SystemStatus};
use crate::time::Instant;

/// At most this many fragments answer one request.
const MAX_FRAGMENTS: usize = 16;
/// At most this many names in one READVAR request.
const MAX_NAMES: usize = 64;

/// One fragment waiting to be sent.
pub(crate) struct ControlReply {
    meta: RecvMeta,
    bytes: Vec<u8>,
}

/// Whether `instance`'s access rules let `ip` read control messages.
fn permitted(rules: &[crate::access::AccessRule], ip: IpAddr) -> bool {
    let level = if rules.is_empty() {
        None
    } else {
        level_for(rules, ip)
    };
    match level {
        Some(AccessLevel::Synchronization) => false,
        Some(AccessLevel::Query | AccessLevel::Server | AccessLevel::Peer) => true,
        None => match ip {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        },
    }
}

impl Node {
    /// Handles a mode-6 datagram: queues its answer, or says why it is
    /// dropped.
    pub(crate) fn handle_control(
        &mut self,
        now: Instant,
        meta: &RecvMeta,
        data: &[u8],
    ) -> Result<(), DropReason> {
        if !meta.listener {
            return Err(DropReason::UnexpectedMode);
        }
        let packet = ControlPacket::new_checked(data).map_err(|_| DropReason::Malformed)?;
        let request = ControlRepr::parse(&packet).map_err(|_| DropReason::Malformed)?;
        if !(2..=4).contains(&request.version) {
            return Err(DropReason::BadVersion);
        }
        if request.response {
            return Err(DropReason::UnexpectedMode);
        }
        if self.policy.listener_key(meta.socket).is_some() {
            return Err(DropReason::Unauthenticated);
        }
        if !permitted(self.policy.rules(meta.instance), meta.src.ip()) {
            return Err(DropReason::AccessDenied);
        }
        if let Some(limiter) = self.policy.limiter.as_deref() {
            if limiter.check(now, (meta.instance, meta.src.ip())) != Decision::Allow {
                return Err(DropReason::RateLimited);
            }
        }
        let status = self.status();
        let sessions: Vec<SessionStatus> = self
            .sessions(now)
            .filter(|s| s.instance == meta.instance)
            .collect();
        let view = View {
            now,
            meta,
            status: &status,
            sessions: &sessions,
        };
        let (status_word, answer) = match view.answer(&request) {
            Ok(ok) => ok,
            Err(e) => (e.status(), Err(e)),
        };
        let fragments = fragment(&request, status.server.leap, status_word, &answer);
        if self.control_replies.len() + fragments.len() > self.config.max_pending_replies {
            return Err(DropReason::Overload);
        }
        self.control_replies.extend(
            fragments
                .into_iter()
                .map(|bytes| ControlReply { meta: *meta, bytes }),
        );
        Ok(())
    }

    /// The next control fragment, written to `buf`.
    pub(crate) fn poll_control(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(r) = self.control_replies.pop_front() {
            let Some(out) = buf.get_mut(..r.bytes.len()) else {
                self.counters(r.meta.instance)
                    .drop_packet(DropReason::Overload);
                continue;
            };
            out.copy_from_slice(&r.bytes);
            self.counters(r.meta.instance).sent += 1;
            return Some(Transmit::reply_to(&r.meta, r.bytes.len()));
        }
        None
    }

    /// Whether control fragments wait to be sent.
    pub(crate) fn has_control(&self) -> bool {
        !self.control_replies.is_empty()
    }
}

/// Splits an answer into fragments (an error: one empty fragment).
fn fragment(
    request: &ControlRepr<'_>,
    leap: Leap,
    status: u16,
    answer: &Result<Vec<u8>, ControlError>,
) -> Vec<Vec<u8>> {
    let (data, error) = match answer {
        Ok(d) => (&d[..], false),
        Err(_) => (&[][..], true),
    };
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(CONTROL_MAX_DATA).collect()
    };
    let last = chunks.len() - 1;
    let mut out = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.into_iter().enumerate() {
        let repr = ControlRepr {
            leap,
            version: request.version,
            response: true,
            error,
            more: i < last,
            opcode: request.opcode,
            sequence: request.sequence,
            status,
            association_id: request.association_id,
            // At most MAX_FRAGMENTS * 468 octets: fits.
            offset: u16::try_from(i * CONTROL_MAX_DATA).unwrap_or(u16::MAX),
            data: chunk,
        };
        let mut bytes = vec![0u8; repr.buffer_len()];
        if repr.emit(&mut bytes).is_ok() {
            out.push(bytes);
        }
    }
    out
}

/// What one request sees: its instance's associations and the system.
struct View<'a> {
    now: Instant,
    meta: &'a RecvMeta,
    status: &'a SystemStatus,
    sessions: &'a [SessionStatus],
}

type Answer = (u16, Result<Vec<u8>, ControlError>);

impl View<'_> {
    fn answer(&self, request: &ControlRepr<'_>) -> Result<Answer, ControlError> {
        if request.more || request.offset != 0 {
            return Err(ControlError::BadFormat);
        }
        let data = match request.opcode {
            Opcode::ReadStatus => {
                if request.association_id == 0 {
                    let mut list = Vec::with_capacity(self.sessions.len() * 4);
                    for s in self.sessions {
                        if let Ok(id) = u16::try_from(s.id.0) {
                            list.extend_from_slice(&id.to_be_bytes());
                            list.extend_from_slice(&peer_status(s).to_be_bytes());
                        }
                    }
                    return self.sized(self.system_status(), list);
                }
                let s = self.session(request.association_id)?;
                return Ok((peer_status(s), Ok(Vec::new())));
            }
            Opcode::ReadVariables => request.data,
            Opcode::WriteVariables | Opcode::WriteClock | Opcode::Configure => {
                return Err(ControlError::Permission)
            }
            Opcode::ReadClock => return Err(ControlError::BadAssociation),
            Opcode::ReadMru | Opcode::Unknown(_) => return Err(ControlError::BadOpcode),
        };
        let (status, vars) = if request.association_id == 0 {
            (self.system_status(), self.system_variables())
        } else {
            let s = self.session(request.association_id)?;
            (peer_status(s), self.peer_variables(s))
        };
        let names = requested_names(data)?;
        let mut text = String::new();
        if names.is_empty() {
            for (name, value) in &vars {
                push_var(&mut text, name, value);
            }
        } else {
            for want in names {
                let (name, value) = vars
                    .iter()
                    .find(|(n, _)| *n == want)
                    .ok_or(ControlError::UnknownVariable)?;
                push_var(&mut text, name, value);
            }
        }
        self.sized(status, text.into_bytes())
    }

    /// Refuses an answer longer than [`MAX_FRAGMENTS`] fragments.
    fn sized(&self, status: u16, data: Vec<u8>) -> Result<Answer, ControlError> {
        if data.len() > MAX_FRAGMENTS * CONTROL_MAX_DATA {
            return Err(ControlError::Unspecified);
        }
        Ok((status, Ok(data)))
    }

    fn session(&self, id: u16) -> Result<&SessionStatus, ControlError> {
        self.sessions
            .iter()
            .find(|s| s.id.0 == u32::from(id))
            .ok_or(ControlError::BadAssociation)
    }

    /// The system status word: leap, clock source (6: NTP, 5: the local
    /// reference, 0: none), no event counts.
    fn system_status(&self) -> u16 {
        let leap = u16::from(u8::from(self.status.server.leap));
        let source: u16 = if self.status.system_peer.is_some() {
            6
        } else if self.status.synchronized {
            5
        } else {
            0
        };
        (leap << 14) | (source << 8)
    }

    fn system_variables(&self) -> Vec<(&'static str, String)> {
        let st = self.status;
        let s = &st.server;
        let peer = st
            .system_peer
            .and_then(|(id, ..)| u16::try_from(id.0).ok())
            .unwrap_or(0);
        vec![
            (
                "version",
                format!("\"strata {}\"", env!("CARGO_PKG_VERSION")),
            ),
            ("processor", format!("\"{}\"", std::env::consts::ARCH)),
            ("system", format!("\"{}\"", std::env::consts::OS)),
            ("leap", u8::from(s.leap).to_string()),
            ("stratum", s.stratum.to_string()),
            ("precision", s.precision.to_string()),
            ("rootdelay", ms(s.root_delay.to_seconds())),
            ("rootdisp", ms(s.root_dispersion.to_seconds())),
            ("refid", s.reference_id.to_string()),
            ("reftime", hex_time(s.reference_time)),
            ("clock", hex_time(self.meta.rx_time)),
            ("peer", peer.to_string()),
            ("tc", poll(st.poll)),
            ("offset", ms(st.offset)),
            ("frequency", format!("{:.3}", st.frequency_ppm)),
            ("sys_jitter", ms(st.jitter)),
        ]
    }

    fn peer_variables(&self, s: &SessionStatus) -> Vec<(&'static str, String)> {
        let (hmode, pmode) = match s.mode {
            AssociationMode::Client => (3, 4),
            AssociationMode::SymmetricActive => (1, 2),
            AssociationMode::SymmetricPassive => (2, 1),
            AssociationMode::BroadcastClient | AssociationMode::MulticastClient => (6, 5),
        };
        let dstadr = self
            .meta
            .dst_ip
            .map_or_else(|| "0.0.0.0".to_owned(), |ip| ip.to_string());
        let rec = s.last_rx.map_or(NtpTimestamp::ZERO, |rx| {
            let ago = self.now.saturating_duration_since(rx).as_secs_f64();
            // Fractions of 2^-32 s; saturating float-to-int is intended.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let bits = (ago * 4_294_967_296.0) as u64;
            NtpTimestamp::from_bits(self.meta.rx_time.to_bits().wrapping_sub(bits))
        });
        let filt = |f: &dyn Fn(&strata_clock::filter::Sample) -> f64| {
            let mut out = String::new();
            for sample in &s.filter {
                let _ = write!(out, " {:.3}", f(sample) * 1e3);
            }
            format!("\"{}\"", out.trim_start())
        };
        vec![
            ("srcadr", s.address.ip().to_string()),
            ("srcport", s.address.port().to_string()),
            ("dstadr", dstadr),
            (
                "leap",
                u8::from(s.remote_leap.unwrap_or(Leap::Unsynchronized)).to_string(),
            ),
            ("stratum", s.stratum.to_string()),
            ("rootdelay", ms(s.root_delay)),
            ("rootdisp", ms(s.root_dispersion)),
            ("refid", s.reference_id.to_string()),
            ("rec", hex_time(rec)),
            ("reach", format!("{:#04x}", s.reach)),
            ("unreach", u32::from(s.reach == 0).to_string()),
            ("hmode", hmode.to_string()),
            ("pmode", pmode.to_string()),
            ("hpoll", poll(s.poll)),
            ("ppoll", poll(s.remote_poll.unwrap_or(s.poll))),
            ("keyid", s.key_id.unwrap_or(0).to_string()),
            ("offset", ms(s.offset)),
            ("delay", ms(s.delay)),
            ("dispersion", ms(s.dispersion)),
            ("jitter", ms(s.jitter)),
            ("filtdelay", filt(&|x| x.delay)),
            ("filtoffset", filt(&|x| x.offset)),
            ("filtdisp", filt(&|x| x.dispersion)),
        ]
    }
}

/// The peer status word: configured, authentication, reachable and
/// broadcast flags, and the selection code that drives ntpq's tally
/// character (0 ' ' reject, 1 'x' falseticker, 3 '-' outlier,
/// 4 '+' candidate, 6 '*' system peer).
fn peer_status(s: &SessionStatus) -> u16 {
    let mut flags: u8 = 0;
    if matches!(
        s.mode,
        AssociationMode::Client | AssociationMode::SymmetricActive
    ) {
        flags |= 0x80;
    }
    if s.key_id.is_some() {
        flags |= 0x40;
        if s.reach != 0 {
            flags |= 0x20;
        }
    }
    if s.reach != 0 {
        flags |= 0x10;
    }
    if matches!(
        s.mode,
        AssociationMode::BroadcastClient | AssociationMode::MulticastClient
    ) {
        flags |= 0x08;
    }
    let select: u8 = if s.selected {
        6
    } else {
        match s.selection {
            None | Some(SelectionRole::Rejected) => 0,
            Some(SelectionRole::Falseticker) => 1,
            Some(SelectionRole::Outlier) => 3,
            Some(SelectionRole::Candidate) => 4,
            Some(SelectionRole::SystemPeer) => 6,
        }
    };
    u16::from(flags | select) << 8
}

/// The names a READVAR request asks for (`a,b=ignored, c`), empty for
/// all.
fn requested_names(data: &[u8]) -> Result<Vec<&str>, ControlError> {
    let text = core::str::from_utf8(data).map_err(|_| ControlError::BadFormat)?;
    let names: Vec<&str> = text
        .split(',')
        .map(|item| {
            item.split('=')
                .next()
                .unwrap_or("")
                .trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0')
        })
        .filter(|n| !n.is_empty())
        .collect();
    if names.len() > MAX_NAMES
        || names
            .iter()
            .any(|n| !n.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(ControlError::BadFormat);
    }
    Ok(names)
}

fn push_var(text: &mut String, name: &str, value: &str) {
    if !text.is_empty() {
        text.push_str(", ");
    }
    text.push_str(name);
    text.push('=');
    text.push_str(value);
}

/// A poll exponent as ntpq can show it: sub-second polls (negative
/// exponents, which strata allows) read as 0, the least ntpd has.
fn poll(exponent: i8) -> String {
    exponent.max(0).to_string()
}

/// Seconds as milliseconds, six decimals.
fn ms(seconds: f64) -> String {
    format!("{:.6}", seconds * 1e3)
}

/// A timestamp as ntpq reads it: `0x` seconds `.` fraction, in hex.
fn hex_time(t: NtpTimestamp) -> String {
    format!("0x{:08x}.{:08x}", t.seconds(), t.fraction())
}
