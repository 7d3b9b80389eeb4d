//! End to end on loopback: a stratum-1 `stratad` (local reference) and a client `stratad`
//! with `[metrics]`: the Prometheus endpoint answers a scrape with the series, other paths
//! get 404, and `stratactl trace` follows the client's system peer to stratum 1.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Kills and reaps the daemon when the test ends, passing or not.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &Path) -> Daemon {
    Daemon(
        Command::new(env!("CARGO_BIN_EXE_stratad"))
            .arg("-c")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts stratad"),
    )
}

fn stratactl(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stratactl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("STRATA_CONTROL__SOCKET")
        .output()
        .expect("runs stratactl")
}

/// A loopback port free right now (UDP and TCP are asked separately by the callers).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    reply
}

/// Polls `f` until it returns `Some`, for at most `limit`.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn metrics_scrape_and_trace_to_stratum_1() {
    let dir = tempfile::tempdir().unwrap();
    let (s_port, c_port, m_port) = (free_udp_port(), free_udp_port(), free_tcp_port());
    let s_sock: PathBuf = dir.path().join("s.sock");
    let c_sock: PathBuf = dir.path().join("c.sock");
    let s_conf = dir.path().join("s.toml");
    let c_conf = dir.path().join("c.toml");
    std::fs::write(
        &s_conf,
        format!(
            "[clock]\nbackend = \"virtual\"\n[control]\nsocket = \"{}\"\n[local-reference]\nstratum = 1\n[[listen]]\naddress = \"127.0.0.1:{s_port}\"\n",
            s_sock.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &c_conf,
        format!(
            "[clock]\nbackend = \"virtual\"\n[control]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{m_port}\"\n[[listen]]\naddress = \"127.0.0.1:{c_port}\"\n[[server]]\naddress = \"127.0.0.1:{s_port}\"\nminpoll = -2\nmaxpoll = -2\niburst = true\n",
            c_sock.display()
        ),
    )
    .unwrap();
    let _server = start(&s_conf);
    let _client = start(&c_conf);

    let synced = poll(Duration::from_secs(60), || {
        let out = stratactl(&c_sock, &["status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["synchronized"] == true).then_some(v)
    });
    assert!(synced.is_some(), "the client did not synchronize");

    let reply = http(m_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        reply.contains("Content-Type: text/plain; version=0.0.4"),
        "{reply}"
    );
    for series in [
        "strata_packets_received_total{instance=\"default\"} ",
        "strata_packets_sent_total{instance=\"default\"} ",
        "strata_kod_sent_total{instance=\"default\"} 0",
        &format!("strata_association_stratum{{instance=\"default\",address=\"127.0.0.1:{s_port}\"}} 1"),
        &format!("strata_association_offset_seconds{{instance=\"default\",address=\"127.0.0.1:{s_port}\"}} "),
        "strata_system_synchronized 1",
        "strata_system_stratum 2",
        "strata_system_frequency_ppm ",
    ] {
        assert!(reply.contains(series), "no {series:?} in\n{reply}");
    }
    let reply = http(m_port, b"GET / HTTP/1.1\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 404 "), "{reply}");
    let reply = http(m_port, b"DELETE /metrics HTTP/1.1\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 405 "), "{reply}");
    // An endless head is cut at the bound and still answered (and the daemon lives on).
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    let reply = http(m_port, &big);
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");

    let out = stratactl(&c_sock, &["trace", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("trace JSON");
    assert_eq!(v["instance"], "default");
    assert_eq!(v["hops"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["hops"][0]["address"], format!("127.0.0.1:{s_port}"));
    assert_eq!(v["hops"][0]["stratum"], 1);
    assert_eq!(v["hops"][0]["refid"], "LOCL");
    assert!(v["hops"][0]["delay_s"].as_f64().unwrap() < 0.1, "{v}");
    assert_eq!(v["end"], "stratum 1 (LOCL)");

    // An unknown instance is refused.
    let out = stratactl(&c_sock, &["trace", "--instance", "nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown instance"),
        "{out:?}"
    );
}
