//! The Prometheus endpoint: `[metrics] listen = "127.0.0.1:9975"`.
//!
//! A minimal HTTP/1.1 server: `GET /metrics` answers `200` with the text
//! exposition format (version 0.0.4), anything else `404` (or `405`/`400`).
//! A request head is read up to [`MAX_REQUEST_HEAD`] bytes within
//! [`REQUEST_TIMEOUT`], and at most [`MAX_CONNECTIONS`] connections are
//! served at once; every connection is closed after one reply.
//!
//! The event loop owns the node, so a scrape asks it for a status and a
//! sessions snapshot over the control channel and renders those with
//! `prometheus-client` ([`render`]).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::ControlRequest;
use crate::control::{Reply, Request, Session, Status};

/// The longest request head read (request line and headers), in bytes.
pub const MAX_REQUEST_HEAD: usize = 8192;
/// How long a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How many scrapes are served at once; further connections wait.
pub const MAX_CONNECTIONS: usize = 8;
/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    instance: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AssociationLabels {
    instance: String,
    address: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// A label value escaped as the text format wants (`\\`, `\"`, `\n`): the encoder
/// writes label values as they are, and an instance name may hold a quote.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The exposition text of a status and sessions snapshot.
///
/// Per instance: `strata_packets_received_total`, `strata_packets_sent_total`,
/// `strata_packets_dropped_total` (by `reason`) and `strata_kod_sent_total`,
/// labelled `instance`. Per association (labelled `instance` and `address`):
/// `strata_association_offset_seconds`, `_delay_seconds`, `_jitter_seconds`,
/// `_reach`, `_stratum` and `_poll_log2_seconds`. The system:
/// `strata_system_synchronized`, `_stratum`, `_offset_seconds` and
/// `_frequency_ppm`.
pub fn render(status: &Status, sessions: &[Session]) -> String {
    let mut registry = Registry::with_prefix("strata");

    let received = Family::<InstanceLabels, Counter>::default();
    let sent = Family::<InstanceLabels, Counter>::default();
    let kod_sent = Family::<InstanceLabels, Counter>::default();
    let dropped = Family::<DropLabels, Counter>::default();
    for (name, c) in &status.instances {
        let labels = InstanceLabels {
            instance: label(name),
        };
        received.get_or_create(&labels).inc_by(c.received);
        sent.get_or_create(&labels).inc_by(c.sent);
        kod_sent.get_or_create(&labels).inc_by(c.kod_sent);
        for (reason, n) in &c.dropped {
            let labels = DropLabels {
                instance: label(name),
                reason: label(reason),
            };
            dropped.get_or_create(&labels).inc_by(*n);
        }
    }
    registry.register("packets_received", "NTP packets received", received);
    registry.register("packets_sent", "NTP packets sent", sent);
    registry.register("packets_dropped", "NTP packets dropped, by reason", dropped);
    registry.register("kod_sent", "Kiss-o'-death packets sent", kod_sent);

    let offset = Family::<AssociationLabels, FloatGauge>::default();
    let delay = Family::<AssociationLabels, FloatGauge>::default();
    let jitter = Family::<AssociationLabels, FloatGauge>::default();
    let reach = Family::<AssociationLabels, Gauge>::default();
    let stratum = Family::<AssociationLabels, Gauge>::default();
    let poll = Family::<AssociationLabels, Gauge>::default();
    for s in sessions {
        let labels = AssociationLabels {
            instance: label(&s.instance),
            address: label(&s.address),
        };
        offset.get_or_create(&labels).set(s.offset_s);
        delay.get_or_create(&labels).set(s.delay_s);
        jitter.get_or_create(&labels).set(s.jitter_s);
        reach.get_or_create(&labels).set(i64::from(s.reach));
        stratum.get_or_create(&labels).set(i64::from(s.stratum));
        poll.get_or_create(&labels).set(i64::from(s.poll));
    }
    registry.register(
        "association_offset_seconds",
        "Offset of the association (positive when the local clock is behind)",
        offset,
    );
    registry.register(
        "association_delay_seconds",
        "Round-trip delay of the association",
        delay,
    );
    registry.register(
        "association_jitter_seconds",
        "Jitter of the association",
        jitter,
    );
    registry.register(
        "association_reach",
        "Reachability register of the association (8 bits)",
        reach,
    );
    registry.register(
        "association_stratum",
        "Stratum of the association's remote",
        stratum,
    );
    registry.register(
        "association_poll_log2_seconds",
        "Poll exponent of the association",
        poll,
    );

    let synchronized = Gauge::<i64>::default();
    synchronized.set(i64::from(status.synchronized));
    let sys_stratum = Gauge::<i64>::default();
    sys_stratum.set(i64::from(status.stratum));
    let sys_offset = FloatGauge::default();
    sys_offset.set(status.offset_s);
    let frequency = FloatGauge::default();
    frequency.set(status.frequency_ppm);
    registry.register(
        "system_synchronized",
        "1 when the clock is synchronized",
        synchronized,
    );
    registry.register("system_stratum", "Stratum served", sys_stratum);
    registry.register(
        "system_offset_seconds",
        "Last clock offset (positive when the local clock is behind)",
        sys_offset,
    );
    registry.register(
        "system_frequency_ppm",
        "Frequency correction applied",
        frequency,
    );

    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        // Writing into a String does not fail; say so in the text if it ever does.
        return format!("# encoding failed: {e}\n");
    }
    out
}

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (or `HEAD`).
    Metrics,
    /// Another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
    /// Not an HTTP request line.
    BadRequest,
}

/// Routes a request head by its request line.
pub fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    if method != "GET" && method != "HEAD" {
        return Route::MethodNotAllowed;
    }
    let path = target.split('?').next().unwrap_or_default();
    if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

/// Opens the metrics listener.
pub(super) async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("[metrics] listen {address}"))
}

/// Serves scrapes until the event loop goes away.
pub(super) async fn serve(listener: TcpListener, ctl: mpsc::Sender<ControlRequest>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("metrics accept failed: {e}");
                continue;
            }
        };
        if ctl.is_closed() {
            return;
        }
        let ctl = ctl.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, &ctl).await {
                tracing::debug!("metrics connection: {e}");
            }
            drop(permit);
        });
    }
}

async fn serve_one(
    mut stream: TcpStream,
    ctl: &mpsc::Sender<ControlRequest>,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let (code, body, head_only) = match route(&head) {
        Route::Metrics => match snapshot(ctl).await {
            Some((status, sessions)) => (
                "200 OK",
                render(&status, &sessions),
                head.starts_with(b"HEAD "),
            ),
            None => ("503 Service Unavailable", "daemon busy\n".to_owned(), false),
        },
        Route::NotFound => (
            "404 Not Found",
            "not found; try /metrics\n".to_owned(),
            false,
        ),
        Route::MethodNotAllowed => ("405 Method Not Allowed", "only GET\n".to_owned(), false),
        Route::BadRequest => ("400 Bad Request", "bad request\n".to_owned(), false),
    };
    let content_type = if code.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut reply = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        reply.push_str(&body);
    }
    tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(reply.as_bytes()))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = stream.shutdown().await;
    Ok(())
}

/// Reads until the blank line ending the head, at most [`MAX_REQUEST_HEAD`]
/// bytes (a longer head is cut there; its request line still routes).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while head.len() < MAX_REQUEST_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    head.truncate(MAX_REQUEST_HEAD);
    Ok(head)
}

/// Asks the event loop for the status and the sessions.
async fn snapshot(ctl: &mpsc::Sender<ControlRequest>) -> Option<(Status, Vec<Session>)> {
    let ask = |request| async move {
        let (reply, rx) = oneshot::channel();
        ctl.send(ControlRequest { request, reply }).await.ok()?;
        tokio::time::timeout(REQUEST_TIMEOUT, rx).await.ok()?.ok()
    };
    let Some(Reply::Status(status)) = ask(Request::Status).await else {
        return None;
    };
    let Some(Reply::Sessions(sessions)) = ask(Request::Sessions).await else {
        return None;
    };
    Some((status, sessions))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::control::InstanceCounters;

    fn status() -> Status {
        let mut dropped = BTreeMap::new();
        dropped.insert("rate-limited".to_owned(), 3);
        Status {
            synchronized: true,
            stratum: 2,
            offset_s: 0.000_125,
            frequency_ppm: -12.5,
            jitter_s: 0.0,
            refid: "10.0.0.1".into(),
            reference: Some("10.0.0.1:123".into()),
            reference_instance: Some("default".to_owned()),
            leap: "none".into(),
            precision: -20,
            root_delay_s: 0.001,
            root_dispersion_s: 0.002,
            poll: 6,
            last_update_s: Some(3.0),
            clock_steps: 0,
            clock_backend: "virtual".into(),
            estimate: None,
            instances: BTreeMap::from([(
                "vpn1".to_owned(),
                InstanceCounters {
                    received: 10,
                    sent: 9,
                    dropped,
                    kod_sent: 1,
                    ..InstanceCounters::default()
                },
            )]),
        }
    }

    fn session() -> Session {
        Session {
            instance: "vpn1".into(),
            address: "10.0.0.1:123".into(),
            mode: "client".into(),
            state: "selected".into(),
            stratum: 1,
            reach: 0o377,
            poll: 6,
            offset_s: -0.5,
            delay_s: 0.002,
            dispersion_s: 0.0,
            jitter_s: 0.000_25,
            refid: "GPS".into(),
            last_s: Some(1.0),
            calibrated_delay_s: None,
            calibration_age_s: None,
            calibrations: 0,
            detail: None,
        }
    }

    #[test]
    fn text_has_every_series_with_labels() {
        let text = render(&status(), &[session()]);
        for line in [
            "strata_packets_received_total{instance=\"vpn1\"} 10",
            "strata_packets_sent_total{instance=\"vpn1\"} 9",
            "strata_kod_sent_total{instance=\"vpn1\"} 1",
            "strata_packets_dropped_total{instance=\"vpn1\",reason=\"rate-limited\"} 3",
            "strata_association_offset_seconds{instance=\"vpn1\",address=\"10.0.0.1:123\"} -0.5",
            "strata_association_delay_seconds{instance=\"vpn1\",address=\"10.0.0.1:123\"} 0.002",
            "strata_association_jitter_seconds{instance=\"vpn1\",address=\"10.0.0.1:123\"} 0.00025",
            "strata_association_reach{instance=\"vpn1\",address=\"10.0.0.1:123\"} 255",
            "strata_association_stratum{instance=\"vpn1\",address=\"10.0.0.1:123\"} 1",
            "strata_association_poll_log2_seconds{instance=\"vpn1\",address=\"10.0.0.1:123\"} 6",
            "strata_system_synchronized 1",
            "strata_system_stratum 2",
            "strata_system_offset_seconds 0.000125",
            "strata_system_frequency_ppm -12.5",
            "# TYPE strata_packets_received counter",
            "# TYPE strata_association_offset_seconds gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = session();
        s.address = "a\"b\\c\nd".into();
        let text = render(&status(), &[s]);
        assert!(
            text.contains(r#"address="a\"b\\c\nd""#),
            "label value not escaped:\n{text}"
        );
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
        assert_eq!(route(b"GET /metrics SPDY/3\r\n\r\n"), Route::BadRequest);
    }
}
