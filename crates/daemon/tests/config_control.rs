//! The control protocol: JSON field names, request/reply encoding, refusal of garbage and
//! oversized input, the human tables, and the blocking client against a socket.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use serde_json::Value;
use strata_daemon::control::{
    self, decode_reply, decode_request, encode_reply, encode_request, read_request, ControlError,
    InstanceCounters, Reply, Request, Session, Status, MAX_REQUEST_LEN,
};
use strata_daemon::ctl::{render_sessions, render_status};

fn status() -> Status {
    let mut dropped = BTreeMap::new();
    dropped.insert("rate-limit".to_owned(), 3);
    let mut instances = BTreeMap::new();
    instances.insert(
        "default".to_owned(),
        InstanceCounters {
            received: 10,
            sent: 9,
            dropped,
            kod_sent: 1,
            state: "up".to_owned(),
            placement: "default".to_owned(),
            error: None,
        },
    );
    instances.insert(
        "vpna".to_owned(),
        InstanceCounters {
            state: "down".to_owned(),
            placement: "netns pe1-vpna".to_owned(),
            error: Some("network namespace \"pe1-vpna\" does not exist".to_owned()),
            ..InstanceCounters::default()
        },
    );
    Status {
        synchronized: true,
        stratum: 2,
        offset_s: -0.012_345,
        frequency_ppm: 12.5,
        jitter_s: 0.0,
        refid: "127.0.0.1".to_owned(),
        reference: Some("127.0.0.1:11123".to_owned()),
        reference_instance: Some("default".to_owned()),
        leap: "none".to_owned(),
        precision: -20,
        root_delay_s: 0.000_25,
        root_dispersion_s: 0.0015,
        poll: 6,
        last_update_s: Some(3.0),
        clock_steps: 1,
        clock_backend: "virtual".to_owned(),
        estimate: None,
        instances,
    }
}

fn session() -> Session {
    Session {
        instance: "default".to_owned(),
        address: "127.0.0.1:11123".to_owned(),
        mode: "client".to_owned(),
        state: "reachable".to_owned(),
        stratum: 1,
        reach: 0o377,
        poll: 6,
        offset_s: 0.000_087_6,
        delay_s: 0.000_2,
        dispersion_s: 0.002,
        jitter_s: 0.000_01,
        refid: "LOCL".to_owned(),
        last_s: Some(12.0),
        calibrated_delay_s: None,
        calibration_age_s: None,
        calibrations: 0,
        detail: None,
    }
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[test]
fn status_reply_has_the_documented_field_names() {
    let line = encode_reply(&Reply::Status(status()));
    assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(keys(&v), vec!["ok", "status"]);
    assert_eq!(v["ok"], Value::Bool(true));
    let s = &v["status"];
    assert_eq!(
        keys(s),
        vec![
            "clock_backend",
            "clock_steps",
            "frequency_ppm",
            "instances",
            "jitter_s",
            "last_update_s",
            "leap",
            "offset_s",
            "poll",
            "precision",
            "reference",
            "reference_instance",
            "refid",
            "root_delay_s",
            "root_dispersion_s",
            "stratum",
            "synchronized",
        ]
    );
    assert_eq!(s["stratum"], 2);
    assert_eq!(s["offset_s"], -0.012_345);
    assert_eq!(
        keys(&s["instances"]["default"]),
        vec![
            "dropped",
            "kod_sent",
            "placement",
            "received",
            "sent",
            "state"
        ]
    );
    assert_eq!(s["instances"]["default"]["state"], "up");
    assert_eq!(s["instances"]["vpna"]["state"], "down");
    assert_eq!(s["instances"]["vpna"]["placement"], "netns pe1-vpna");
    assert!(s["instances"]["vpna"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("does not exist")));
    assert_eq!(s["instances"]["default"]["dropped"]["rate-limit"], 3);
    // Absent optionals are null, not missing.
    let mut unsynced = status();
    unsynced.reference = None;
    unsynced.last_update_s = None;
    let v: Value = serde_json::from_str(&encode_reply(&Reply::Status(unsynced))).unwrap();
    assert_eq!(v["status"]["reference"], Value::Null);
    assert_eq!(v["status"]["last_update_s"], Value::Null);
}

#[test]
fn sessions_reply_has_the_documented_field_names() {
    let v: Value = serde_json::from_str(&encode_reply(&Reply::Sessions(vec![session()]))).unwrap();
    assert_eq!(keys(&v), vec!["ok", "sessions"]);
    let s = &v["sessions"][0];
    assert_eq!(
        keys(s),
        vec![
            "address",
            "calibrated_delay_s",
            "calibration_age_s",
            "calibrations",
            "delay_s",
            "dispersion_s",
            "instance",
            "jitter_s",
            "last_s",
            "mode",
            "offset_s",
            "poll",
            "reach",
            "refid",
            "state",
            "stratum",
        ]
    );
    assert_eq!(s["reach"], 255);
    assert_eq!(s["mode"], "client");
}

#[test]
fn error_reply_shape() {
    let line = encode_reply(&Reply::Error("unknown command".to_owned()));
    assert_eq!(line, "{\"ok\":false,\"error\":\"unknown command\"}\n");
}

#[test]
fn replies_round_trip() {
    for reply in [
        Reply::Status(status()),
        Reply::Sessions(vec![session(), session()]),
        Reply::Sessions(Vec::new()),
        Reply::Error("nope".to_owned()),
    ] {
        assert_eq!(decode_reply(&encode_reply(&reply)).unwrap(), reply);
    }
}

#[test]
fn requests_round_trip_and_match_the_wire_format() {
    assert_eq!(
        encode_request(&Request::Status),
        "{\"command\":\"status\"}\n"
    );
    assert_eq!(
        encode_request(&Request::Sessions),
        "{\"command\":\"sessions\"}\n"
    );
    for r in [Request::Status, Request::Sessions] {
        assert_eq!(decode_request(&encode_request(&r)).unwrap(), r);
    }
    assert_eq!(
        decode_request(" { \"command\" : \"status\" }\r\n").unwrap(),
        Request::Status
    );
}

#[test]
fn garbage_requests_are_errors_not_panics() {
    for bad in [
        "",
        "\n",
        "status",
        "{",
        "null",
        "[]",
        "{}",
        "{\"command\":\"reboot\"}",
        "{\"command\":\"STATUS\"}",
        "{\"command\":1}",
        "{\"command\":\"status\"}{\"command\":\"status\"}",
        "\u{0}\u{ffff}",
    ] {
        assert!(
            matches!(decode_request(bad), Err(ControlError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn oversized_requests_are_refused() {
    let padding = " ".repeat(MAX_REQUEST_LEN);
    let long = format!("{{\"command\":\"status\"}}{padding}");
    assert!(matches!(
        decode_request(&long),
        Err(ControlError::RequestTooLong { len }) if len == long.len()
    ));
    // Exactly at the limit is fine.
    let ok = format!(
        "{:<width$}\n",
        "{\"command\":\"status\"}",
        width = MAX_REQUEST_LEN
    );
    assert_eq!(decode_request(&ok).unwrap(), Request::Status);
    assert_eq!(read_request(ok.as_bytes()).unwrap(), Request::Status);
    // From a stream: an endless line is cut off, not buffered.
    let endless = std::io::repeat(b'x').take_bytes(10 * 1024 * 1024);
    assert!(matches!(
        read_request(endless),
        Err(ControlError::RequestTooLong { .. })
    ));
    assert!(matches!(read_request(&b""[..]), Err(ControlError::NoReply)));
    assert!(matches!(
        read_request(&b"\xff\xfe\n"[..]),
        Err(ControlError::Invalid(_))
    ));
}

/// `Read::take` under a name that does not clash with the imports.
trait TakeBytes: std::io::Read + Sized {
    fn take_bytes(self, n: u64) -> std::io::Take<Self> {
        self.take(n)
    }
}
impl<R: std::io::Read> TakeBytes for R {}

#[test]
fn malformed_replies_are_errors() {
    for bad in [
        "{\"ok\":true}",
        "{\"ok\":false}",
        "{\"ok\":true,\"error\":\"x\"}",
        "{\"ok\":false,\"error\":\"x\",\"sessions\":[]}",
        "{\"ok\":true,\"sessions\":[],\"status\":null,\"bogus\":1}",
        "{\"ok\":true,\"sessions\":[{}]}",
        "not json",
    ] {
        assert!(decode_reply(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn status_table_is_aligned_and_has_units() {
    let text = render_status(&status());
    let lines: Vec<&str> = text.lines().collect();
    // Values start in one column.
    let column = |line: &str| {
        line.find(':').unwrap()
            + 1
            + line[line.find(':').unwrap() + 1..]
                .find(|c| c != ' ')
                .unwrap()
    };
    let first = column(lines[0]);
    assert!(lines.iter().all(|l| column(l) == first), "{text}");
    assert!(lines[0].starts_with("synchronized:") && lines[0].ends_with("yes"));
    assert!(
        text.contains("offset:") && text.contains("-12.345 ms"),
        "{text}"
    );
    assert!(text.contains("+12.500 ppm"), "{text}");
    assert!(text.contains("250.0 µs"), "{text}");
    assert!(text.contains("1.500 ms"), "{text}");
    assert!(text.contains("3s ago"), "{text}");
    assert!(
        text.contains("received 10, sent 9, dropped 3, kod sent 1 (rate-limit 3)"),
        "{text}"
    );
    let mut unsynced = status();
    unsynced.last_update_s = None;
    unsynced.reference = None;
    let text = render_status(&unsynced);
    assert!(text.contains("never"), "{text}");
}

#[test]
fn sessions_table_is_aligned_with_octal_reach() {
    let mut second = session();
    second.address = "[fd00:200::1]:123".to_owned();
    second.reach = 0o1;
    second.offset_s = -1.5;
    second.last_s = None;
    let text = render_sessions(&[session(), second]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("INSTANCE"), "{text}");
    // Right-aligned columns end where their header ends.
    let reach_end = lines[0].find("REACH").unwrap() + "REACH".len();
    assert_eq!(&lines[1][reach_end - 3..reach_end], "377", "{text}");
    assert_eq!(&lines[2][reach_end - 3..reach_end], "001", "{text}");
    assert!(lines[1].contains("+87.6 µs"), "{text}");
    assert!(lines[2].contains("-1.500 s"), "{text}");
    assert!(
        lines[1].contains("200.0 µs") && lines[1].contains("2.000 ms"),
        "{text}"
    );
    assert!(
        lines[1].ends_with("12s") && lines[2].ends_with('-'),
        "{text}"
    );
    assert_eq!(render_sessions(&[]).lines().count(), 1);
}

#[test]
fn client_talks_to_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // A one-shot daemon: serves exactly three connections, then ends.
    let server = std::thread::spawn(move || {
        for _ in 0..3 {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let reply = match read_request(&stream) {
                Ok(Request::Status) => Reply::Status(status()),
                Ok(Request::Sessions) => Reply::Sessions(vec![session()]),
                Ok(Request::Reload) => Reply::Done("reloaded".to_owned()),
                Ok(Request::Trace { .. }) => Reply::Error("no trace here".to_owned()),
                Err(e) => Reply::Error(e.to_string()),
            };
            (&stream)
                .write_all(encode_reply(&reply).as_bytes())
                .unwrap();
        }
    });
    let t = Duration::from_secs(5);
    assert_eq!(
        control::request(&path, &Request::Status, t).unwrap(),
        Reply::Status(status())
    );
    assert_eq!(
        control::request(&path, &Request::Sessions, t).unwrap(),
        Reply::Sessions(vec![session()])
    );
    // A raw client sending garbage gets an error reply.
    let mut raw = std::os::unix::net::UnixStream::connect(&path).unwrap();
    raw.write_all(b"{\"command\":\"reboot\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&raw).read_line(&mut line).unwrap();
    assert!(matches!(decode_reply(&line).unwrap(), Reply::Error(_)));
    server.join().unwrap();
    // Nobody listening: an I/O error, quickly.
    assert!(matches!(
        control::request(&path, &Request::Status, t),
        Err(ControlError::Io(_))
    ));
}
