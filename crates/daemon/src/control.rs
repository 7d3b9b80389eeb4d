//! The control protocol between `stratactl` and `stratad`.
//!
//! Line-delimited JSON over a unix stream socket: the client writes one request line, the
//! daemon writes one reply line and closes the connection.
//!
//! ```text
//! → {"command":"status"}
//! ← {"ok":true,"status":{"synchronized":true,"stratum":2,...}}
//! → {"command":"sessions"}
//! ← {"ok":true,"sessions":[{"instance":"default","address":"127.0.0.1:123",...}]}
//! ← {"ok":false,"error":"unknown command"}
//! ```
//!
//! Requests longer than [`MAX_REQUEST_LEN`] bytes are refused. Decoding never panics, whatever
//! the input. [`request`] is a small blocking client with a timeout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest accepted request line, in bytes (without the newline).
pub const MAX_REQUEST_LEN: usize = 4096;

/// The longest accepted reply line, in bytes: a guard for the client.
pub const MAX_REPLY_LEN: usize = 16 * 1024 * 1024;

/// How long [`request`] waits for the daemon by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a control message could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The request line is longer than [`MAX_REQUEST_LEN`].
    #[error("request too long ({len} bytes, at most {MAX_REQUEST_LEN})")]
    RequestTooLong {
        /// The length received.
        len: usize,
    },
    /// The reply line is longer than [`MAX_REPLY_LEN`].
    #[error("reply too long (more than {MAX_REPLY_LEN} bytes)")]
    ReplyTooLong,
    /// The message is not valid JSON of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The message is not a valid request or reply (not UTF-8, or JSON of the wrong shape).
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The peer closed the connection without sending a line.
    #[error("the connection closed without a message")]
    NoReply,
    /// Talking to the socket failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
}

/// A request from stratactl.
///
/// Fields besides `command` are ignored, so later requests can add parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    /// `{"command":"status"}`: the system status.
    Status,
    /// `{"command":"sessions"}`: every association.
    Sessions,
    /// `{"command":"reload"}`: re-read the configuration file (as SIGHUP).
    Reload,
    /// `{"command":"trace","address":"192.0.2.1","instance":"vpn1"}`: follow the chain of
    /// reference IDs from `address` (default: the system peer) up to stratum 1 with plain
    /// mode-3 queries sent through `instance`'s client socket (default: the system peer's
    /// instance, else `default`).
    Trace {
        /// The first server to query, `ip` or `ip:port`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        /// The instance whose sockets send the queries.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
    },
}

/// One server queried by a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceHop {
    /// The server, `ip:port`.
    pub address: String,
    /// Its stratum (0 for a kiss-o'-death or an unsynchronized server).
    pub stratum: u8,
    /// Its offset from this host's clock, seconds (positive when this host is behind).
    pub offset_s: f64,
    /// The round-trip delay to it, seconds.
    pub delay_s: f64,
    /// Its root distance (root delay / 2 + root dispersion), seconds.
    pub root_distance_s: f64,
    /// Its reference ID, as text.
    pub refid: String,
}

/// The result of a trace (`stratactl trace --json` prints this object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The instance whose sockets sent the queries.
    pub instance: String,
    /// The servers queried, in order.
    pub hops: Vec<TraceHop>,
    /// Why the trace ended (for example `"stratum 1 (GPS)"`).
    pub end: String,
}

/// The daemon's system status (`stratactl status --json` prints this object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Whether the clock is synchronized to a source (or a local reference).
    pub synchronized: bool,
    /// The stratum served (16 = unsynchronized).
    pub stratum: u8,
    /// The last clock offset, seconds; RFC 5905 theta: reference − local, positive when the
    /// local clock is behind.
    pub offset_s: f64,
    /// The frequency correction applied, ppm.
    pub frequency_ppm: f64,
    /// The system jitter, seconds.
    #[serde(default)]
    pub jitter_s: f64,
    /// The reference ID served, as text (an IPv4 address, a hashed IPv6 address, or an ASCII
    /// code such as `LOCL` or `INIT`).
    pub refid: String,
    /// The system peer, `ip:port` (followed by `%INSTANCE` when it is not in the default
    /// instance), if any.
    pub reference: Option<String>,
    /// The instance the system peer is reached through, if any.
    #[serde(default)]
    pub reference_instance: Option<String>,
    /// The leap indicator: `"none"`, `"insert"`, `"delete"` or `"unsynchronized"`.
    pub leap: String,
    /// The clock precision, log2 seconds.
    pub precision: i8,
    /// The root delay, seconds.
    pub root_delay_s: f64,
    /// The root dispersion, seconds.
    pub root_dispersion_s: f64,
    /// The system poll exponent, log2 seconds.
    pub poll: i8,
    /// Seconds since the clock was last updated, if ever.
    pub last_update_s: Option<f64>,
    /// How many times the clock was stepped.
    pub clock_steps: u64,
    /// The clock backend: `"system"`, `"observe"` or `"virtual"`.
    pub clock_backend: String,
    /// Packet counters per instance name.
    pub instances: BTreeMap<String, InstanceCounters>,
    /// The discipline's smoothed estimate, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
}

/// The discipline's smoothed estimate (like `chronyc tracking`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The smoothed offset now, seconds (same sign as `offset_s`); for an
    /// observe-only clock, the host clock's offset.
    pub offset_s: f64,
    /// Its one-sigma uncertainty, seconds.
    pub offset_uncertainty_s: f64,
    /// RMS of the samples about the fitted line, seconds (chrony's "RMS
    /// offset").
    pub rms_offset_s: f64,
    /// The frequency's one-sigma uncertainty, ppm (chrony's "skew").
    pub skew_ppm: f64,
    /// How many samples the estimate averages.
    pub samples: usize,
}

/// Packet counters of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCounters {
    /// Packets received.
    pub received: u64,
    /// Packets sent.
    pub sent: u64,
    /// Packets dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Kiss-o'-death packets sent.
    pub kod_sent: u64,
    /// `"up"`, or `"down"` while its device or namespace is missing (retried).
    #[serde(default = "default_state")]
    pub state: String,
    /// Where its sockets live: `"default"`, `"device NAME"` or `"netns NAME"`.
    #[serde(default = "default_placement")]
    pub placement: String,
    /// Why the instance is down, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn default_state() -> String {
    "up".to_owned()
}

fn default_placement() -> String {
    "default".to_owned()
}

/// One association (`stratactl sessions --json` prints an array of these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The instance it belongs to.
    pub instance: String,
    /// The remote address, `ip:port`.
    pub address: String,
    /// The association mode: `"client"`, `"server"`, `"symmetric-active"`,
    /// `"symmetric-passive"`, `"broadcast-client"`, `"multicast-client"`, ...
    pub mode: String,
    /// The association state (engine-defined, e.g. `"reachable"`).
    pub state: String,
    /// The remote stratum.
    pub stratum: u8,
    /// The reachability register (shown in octal by the table).
    pub reach: u8,
    /// The poll exponent, log2 seconds.
    pub poll: i8,
    /// The offset, seconds (positive when the local clock is behind).
    pub offset_s: f64,
    /// The round-trip delay, seconds.
    pub delay_s: f64,
    /// The dispersion, seconds.
    pub dispersion_s: f64,
    /// The jitter, seconds.
    pub jitter_s: f64,
    /// The remote's reference ID, as text.
    pub refid: String,
    /// Seconds since the last valid packet, if any.
    pub last_s: Option<f64>,
    /// Broadcast/multicast clients: the calibrated round-trip delay, s.
    #[serde(default)]
    pub calibrated_delay_s: Option<f64>,
    /// Broadcast/multicast clients: seconds since the last calibration.
    #[serde(default)]
    pub calibration_age_s: Option<f64>,
    /// Completed calibration volleys (broadcast/multicast clients and
    /// symmetric active peers).
    #[serde(default)]
    pub calibrations: u32,
    /// The details `stratactl sessions --verbose` shows, as further fields of the same
    /// object (absent in plain `stratactl sessions --json`).
    #[serde(flatten)]
    pub detail: Option<SessionDetail>,
}

/// An association's details (`stratactl sessions --verbose --json` adds these fields to each
/// session).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionDetail {
    /// Its part in the last source selection: `"system-peer"`, `"candidate"` (combined),
    /// `"outlier"` (dropped by clustering), `"falseticker"` or `"rejected"` (too far); `null`
    /// when it was not a candidate (unreachable, unsynchronised, a loop, no sample yet).
    pub selection: Option<String>,
    /// The clock filter register, newest first (at most 8 samples).
    pub filter: Vec<FilterSample>,
    /// The key its packets are signed with and must be authenticated with; `null` without
    /// authentication.
    pub key_id: Option<u32>,
    /// Whether a key is required and a packet authenticated with it has been accepted.
    /// Packets that fail are counted per instance (`bad-mac`, `unauthenticated`).
    pub authenticated: bool,
    /// The remote's leap indicator (as `leap` in the status), once heard.
    pub remote_leap: Option<String>,
    /// The remote's root delay, seconds (0 until heard).
    pub root_delay_s: f64,
    /// The remote's root dispersion, seconds (0 until heard).
    pub root_dispersion_s: f64,
    /// The remote's advertised poll exponent, once heard.
    pub remote_poll: Option<i8>,
    /// Seconds until it sends next; `null` when it sends nothing of its own (denied, or a
    /// broadcast client listening).
    pub next_poll_s: Option<f64>,
    /// The poll floor a kiss-o'-death RATE imposed (log2 s), if one did; a DENY or RSTR
    /// shows as the state `"denied"`.
    pub kod_poll_floor: Option<i8>,
    /// During a calibration volley: requests sent so far.
    pub calibration_requests: Option<u8>,
    /// During a calibration volley: good replies so far.
    pub calibration_replies: Option<u8>,
}

/// One sample of an association's clock filter register.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FilterSample {
    /// The offset, seconds.
    pub offset_s: f64,
    /// The round-trip delay, seconds (16 for a missed poll).
    pub delay_s: f64,
    /// The dispersion aged to now, seconds (16 for a missed poll).
    pub dispersion_s: f64,
    /// Seconds since the sample was taken.
    pub age_s: f64,
}

/// A reply from the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `{"ok":true,"status":{...}}`.
    Status(Status),
    /// `{"ok":true,"sessions":[...]}`.
    Sessions(Vec<Session>),
    /// `{"ok":true,"message":"..."}`: an action was carried out.
    Done(String),
    /// `{"ok":true,"trace":{...}}`.
    Trace(Trace),
    /// `{"ok":false,"error":"..."}`.
    Error(String),
}

/// The reply as it travels: `ok` and exactly one of the others.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireReply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sessions: Option<Vec<Session>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<Trace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Strip one trailing `\n` (and `\r`).
fn strip_newline(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// Encode a request as one line, newline included.
pub fn encode_request(request: &Request) -> String {
    match request {
        Request::Status => "{\"command\":\"status\"}\n".to_owned(),
        Request::Sessions => "{\"command\":\"sessions\"}\n".to_owned(),
        Request::Reload => "{\"command\":\"reload\"}\n".to_owned(),
        Request::Trace { .. } => {
            // Serializing strings cannot fail.
            let mut line = serde_json::to_string(request).unwrap_or_default();
            line.push('\n');
            line
        }
    }
}

/// Decode a request line (a trailing newline is allowed).
pub fn decode_request(line: &str) -> Result<Request, ControlError> {
    let line = strip_newline(line);
    if line.len() > MAX_REQUEST_LEN {
        return Err(ControlError::RequestTooLong { len: line.len() });
    }
    Ok(serde_json::from_str(line)?)
}

/// Encode a reply as one line, newline included.
pub fn encode_reply(reply: &Reply) -> String {
    let mut wire = WireReply {
        ok: true,
        ..WireReply::default()
    };
    match reply {
        Reply::Status(status) => wire.status = Some(status.clone()),
        Reply::Sessions(sessions) => wire.sessions = Some(sessions.clone()),
        Reply::Done(message) => wire.message = Some(message.clone()),
        Reply::Trace(trace) => wire.trace = Some(trace.clone()),
        Reply::Error(message) => (wire.ok, wire.error) = (false, Some(message.clone())),
    }
    // Serializing these plain structs cannot fail: every map key is a string and
    // serde_json writes non-finite floats as null.
    let mut line = serde_json::to_string(&wire)
        .unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"cannot encode reply: {e}\"}}"));
    line.push('\n');
    line
}

/// Decode a reply line (a trailing newline is allowed).
pub fn decode_reply(line: &str) -> Result<Reply, ControlError> {
    let w: WireReply = serde_json::from_str(strip_newline(line))?;
    let present = [
        w.status.is_some(),
        w.sessions.is_some(),
        w.message.is_some(),
        w.trace.is_some(),
        w.error.is_some(),
    ];
    if present.iter().filter(|p| **p).count() != 1 || w.ok == w.error.is_some() {
        return Err(ControlError::Invalid(if w.ok {
            "an ok reply needs exactly one of \"status\", \"sessions\", \"message\" or \"trace\""
                .to_owned()
        } else {
            "an error reply needs \"error\" and nothing else".to_owned()
        }));
    }
    Ok(match w {
        WireReply {
            status: Some(s), ..
        } => Reply::Status(s),
        WireReply {
            sessions: Some(s), ..
        } => Reply::Sessions(s),
        WireReply {
            message: Some(m), ..
        } => Reply::Done(m),
        WireReply { trace: Some(t), .. } => Reply::Trace(t),
        WireReply { error, .. } => Reply::Error(error.unwrap_or_default()),
    })
}

/// Read one request line from a connection, refusing more than [`MAX_REQUEST_LEN`] bytes.
///
/// For the daemon side: `Ok(request)`, or the error to send back as [`Reply::Error`].
pub fn read_request<R: Read>(reader: R) -> Result<Request, ControlError> {
    // Room for the line, "\r\n", and one byte more to notice an overlong line.
    let bytes = read_line(reader, MAX_REQUEST_LEN + 3)?.ok_or(ControlError::NoReply)?;
    let content = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let content = content.strip_suffix(b"\r").unwrap_or(content);
    if content.len() > MAX_REQUEST_LEN {
        return Err(ControlError::RequestTooLong { len: content.len() });
    }
    let line = std::str::from_utf8(content)
        .map_err(|_| ControlError::Invalid("request is not UTF-8".to_owned()))?;
    decode_request(line)
}

/// Read one line (up to and including `\n`), at most `limit` bytes; `None` at end of stream
/// before any byte. A longer line is cut at `limit` bytes for the caller to refuse.
fn read_line<R: Read>(reader: R, limit: usize) -> Result<Option<Vec<u8>>, ControlError> {
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    let mut limited = BufReader::new(reader.take(limit));
    let mut buf = Vec::new();
    limited.read_until(b'\n', &mut buf)?;
    Ok((!buf.is_empty()).then_some(buf))
}

/// Send one request to the daemon's control socket and wait for its reply (blocking).
///
/// `timeout` bounds each read and write.
pub fn request(socket: &Path, request: &Request, timeout: Duration) -> Result<Reply, ControlError> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(encode_request(request).as_bytes())?;
    stream.flush()?;
    let bytes = read_line(&stream, MAX_REPLY_LEN + 1)?.ok_or(ControlError::NoReply)?;
    if bytes.len() > MAX_REPLY_LEN {
        return Err(ControlError::ReplyTooLong);
    }
    let line = std::str::from_utf8(&bytes)
        .map_err(|_| ControlError::Invalid("reply is not UTF-8".to_owned()))?;
    decode_reply(line)
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Replies shared by the protocol's and the renderer's tests.
    use super::*;

    pub(crate) fn trace() -> Trace {
        Trace {
            instance: "vpn1".into(),
            hops: vec![
                TraceHop {
                    address: "10.200.1.2:123".into(),
                    stratum: 2,
                    offset_s: 0.000_5,
                    delay_s: 0.000_2,
                    root_distance_s: 0.001,
                    refid: "10.200.2.1".into(),
                },
                TraceHop {
                    address: "10.200.2.1:123".into(),
                    stratum: 1,
                    offset_s: -0.002,
                    delay_s: 0.000_4,
                    root_distance_s: 0.000_01,
                    refid: "GPS".into(),
                },
            ],
            end: "stratum 1 (GPS)".into(),
        }
    }

    pub(crate) fn status() -> Status {
        let mut instances = BTreeMap::new();
        instances.insert(
            "default".to_owned(),
            InstanceCounters {
                received: 1200,
                sent: 1190,
                dropped: BTreeMap::from([
                    ("access-denied".to_owned(), 3),
                    ("rate-limited".to_owned(), 7),
                ]),
                kod_sent: 2,
                state: "up".to_owned(),
                placement: "default".to_owned(),
                error: None,
            },
        );
        instances.insert(
            "vpna".to_owned(),
            InstanceCounters {
                received: 40,
                sent: 40,
                state: "down".to_owned(),
                placement: "netns pe1-vpna".to_owned(),
                error: Some("network namespace \"pe1-vpna\" is gone".to_owned()),
                ..InstanceCounters::default()
            },
        );
        Status {
            synchronized: true,
            stratum: 3,
            offset_s: -0.000_012_5,
            frequency_ppm: -12.345,
            jitter_s: 0.000_004,
            refid: "10.200.1.1".to_owned(),
            reference: Some("10.200.1.1:123%vpna".to_owned()),
            reference_instance: Some("vpna".to_owned()),
            leap: "none".to_owned(),
            precision: -20,
            root_delay_s: 0.000_45,
            root_dispersion_s: 0.002_5,
            poll: 4,
            last_update_s: Some(9.6),
            clock_steps: 1,
            clock_backend: "virtual".to_owned(),
            instances,
            estimate: None,
        }
    }

    pub(crate) fn sessions() -> Vec<Session> {
        let plain = Session {
            instance: "vpna".to_owned(),
            address: "10.200.1.1:123".to_owned(),
            mode: "client".to_owned(),
            state: "selected".to_owned(),
            stratum: 2,
            reach: 0o377,
            poll: 4,
            offset_s: -0.000_012_5,
            delay_s: 0.000_21,
            dispersion_s: 0.001_5,
            jitter_s: 0.000_004,
            refid: "10.200.9.9".to_owned(),
            last_s: Some(3.2),
            calibrated_delay_s: None,
            calibration_age_s: None,
            calibrations: 0,
            detail: Some(SessionDetail {
                selection: Some("system-peer".to_owned()),
                filter: vec![
                    FilterSample {
                        offset_s: -0.000_012_5,
                        delay_s: 0.000_21,
                        dispersion_s: 0.000_001,
                        age_s: 3.2,
                    },
                    FilterSample {
                        offset_s: 0.0,
                        delay_s: 16.0,
                        dispersion_s: 16.0,
                        age_s: 19.2,
                    },
                    FilterSample {
                        offset_s: 0.000_150,
                        delay_s: 0.001_2,
                        dispersion_s: 0.000_3,
                        age_s: 35.0,
                    },
                ],
                key_id: Some(7),
                authenticated: true,
                remote_leap: Some("none".to_owned()),
                root_delay_s: 0.000_24,
                root_dispersion_s: 0.001,
                remote_poll: Some(4),
                next_poll_s: Some(12.8),
                kod_poll_floor: None,
                calibration_requests: None,
                calibration_replies: None,
            }),
        };
        let listening = Session {
            instance: "default".to_owned(),
            address: "10.200.3.1:123".to_owned(),
            mode: "multicast-client".to_owned(),
            state: "calibrating".to_owned(),
            stratum: 16,
            reach: 0,
            poll: 6,
            offset_s: 0.0,
            delay_s: 0.0,
            dispersion_s: 16.0,
            jitter_s: 0.0,
            refid: "0.0.0.0".to_owned(),
            last_s: None,
            calibrated_delay_s: Some(0.000_8),
            calibration_age_s: Some(4000.0),
            calibrations: 1,
            detail: Some(SessionDetail {
                selection: None,
                filter: Vec::new(),
                key_id: None,
                authenticated: false,
                remote_leap: None,
                root_delay_s: 0.0,
                root_dispersion_s: 0.0,
                remote_poll: None,
                next_poll_s: Some(0.5),
                kod_poll_floor: Some(8),
                calibration_requests: Some(3),
                calibration_replies: Some(1),
            }),
        };
        vec![plain, listening]
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{sessions, trace};
    use super::*;

    #[test]
    fn verbose_session_json_adds_stable_fields_and_round_trips() {
        let all = sessions();
        let v: serde_json::Value =
            serde_json::from_str(&encode_reply(&Reply::Sessions(all.clone()))).unwrap();
        let s = &v["sessions"][0];
        let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "address",
                "authenticated",
                "calibrated_delay_s",
                "calibration_age_s",
                "calibration_replies",
                "calibration_requests",
                "calibrations",
                "delay_s",
                "dispersion_s",
                "filter",
                "instance",
                "jitter_s",
                "key_id",
                "kod_poll_floor",
                "last_s",
                "mode",
                "next_poll_s",
                "offset_s",
                "poll",
                "reach",
                "refid",
                "remote_leap",
                "remote_poll",
                "root_delay_s",
                "root_dispersion_s",
                "selection",
                "state",
                "stratum",
            ]
        );
        let mut sample: Vec<&str> = s["filter"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        sample.sort_unstable();
        assert_eq!(sample, ["age_s", "delay_s", "dispersion_s", "offset_s"]);
        assert_eq!(s["key_id"], 7);
        assert_eq!(s["selection"], "system-peer");
        assert_eq!(v["sessions"][1]["selection"], serde_json::Value::Null);
        assert_eq!(
            decode_reply(&encode_reply(&Reply::Sessions(all.clone()))).unwrap(),
            Reply::Sessions(all.clone())
        );
        // Without details the object has the plain fields only, and decodes back to none.
        let mut plain = all;
        for s in &mut plain {
            s.detail = None;
        }
        let line = encode_reply(&Reply::Sessions(plain.clone()));
        assert!(
            !line.contains("filter") && !line.contains("key_id"),
            "{line}"
        );
        assert_eq!(decode_reply(&line).unwrap(), Reply::Sessions(plain));
    }

    #[test]
    fn trace_request_round_trips_with_and_without_parameters() {
        for request in [
            Request::Trace {
                address: None,
                instance: None,
            },
            Request::Trace {
                address: Some("192.0.2.1".into()),
                instance: Some("vpn1".into()),
            },
        ] {
            let line = encode_request(&request);
            assert!(
                line.ends_with('\n') && line.starts_with("{\"command\":\"trace\""),
                "{line}"
            );
            assert_eq!(decode_request(&line).unwrap(), request);
        }
        assert_eq!(
            decode_request(r#"{"command":"trace"}"#).unwrap(),
            Request::Trace {
                address: None,
                instance: None
            }
        );
        assert!(decode_request(r#"{"command":"trace","address":7}"#).is_err());
    }

    #[test]
    fn trace_reply_round_trips() {
        let reply = Reply::Trace(trace());
        let line = encode_reply(&reply);
        assert!(line.contains("\"trace\":{\"instance\":\"vpn1\""), "{line}");
        assert!(line.contains("\"root_distance_s\":0.001"), "{line}");
        assert_eq!(decode_reply(&line).unwrap(), reply);
        assert!(decode_reply(
            r#"{"ok":true,"message":"x","trace":{"instance":"a","hops":[],"end":"e"}}"#
        )
        .is_err());
    }
}
