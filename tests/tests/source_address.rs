//! `source` / `source-interface` end to end on loopback: a client `stratad` polls a server
//! through a relay on 127.0.0.1 that records where each request came from and passes it to a
//! `stratad` server (and the reply back). The requests must come from the configured source
//! address, and the replies, sent back to that address, must be matched (the source becomes
//! reachable).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_tests::{free_udp_port, wait_until, Daemon};

/// Relays datagrams between clients and `server` for at most `limit`, recording the source
/// address of each request; stops when `stop` is set.
fn relay(
    listen: &UdpSocket,
    server: SocketAddr,
    seen: &Mutex<Vec<SocketAddr>>,
    stop: &AtomicBool,
    limit: Duration,
) {
    let upstream = UdpSocket::bind("127.0.0.1:0").expect("bind upstream");
    upstream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    listen
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let start = Instant::now();
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
        let Ok((n, from)) = listen.recv_from(&mut buf) else {
            continue;
        };
        seen.lock().expect("lock").push(from);
        upstream.send_to(&buf[..n], server).expect("relay request");
        if let Ok((m, _)) = upstream.recv_from(&mut buf) {
            listen.send_to(&buf[..m], from).expect("relay reply");
        }
    }
}

/// Runs a client with `source_line` on its `[[server]]` against a relayed server; returns the
/// request sources the relay saw once the client reached the server, and the client's log.
fn run(source_line: &str) -> (Vec<SocketAddr>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_port = free_udp_port();
    let _server = Daemon::start(
        dir.path(),
        "server",
        &format!(
            "[clock]\nbackend = \"virtual\"\n[local-reference]\nstratum = 1\n\
             [[listen]]\naddress = \"127.0.0.1:{server_port}\"\n"
        ),
    );
    let relay_socket = UdpSocket::bind("127.0.0.1:0").expect("bind relay");
    let relay_addr = relay_socket.local_addr().expect("relay addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        let server: SocketAddr = ([127, 0, 0, 1], server_port).into();
        std::thread::spawn(move || {
            relay(&relay_socket, server, &seen, &stop, Duration::from_secs(60));
        })
    };
    let client = Daemon::start(
        dir.path(),
        "client",
        &format!(
            "[clock]\nbackend = \"observe\"\n[[server]]\naddress = \"{relay_addr}\"\n\
             minpoll = -2\nmaxpoll = -2\niburst = true\n{source_line}\n"
        ),
    );
    let reached = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        client
            .sessions()
            .into_iter()
            .find(|s| s.address == relay_addr.to_string() && s.reach != 0)
    });
    stop.store(true, Ordering::Relaxed);
    thread.join().expect("relay thread");
    let log = client.log();
    assert!(
        reached.is_some(),
        "the source never became reachable; log:\n{log}"
    );
    let seen = seen.lock().expect("lock").clone();
    (seen, log)
}

#[test]
fn requests_leave_from_the_source_address_and_replies_are_matched() {
    let (seen, log) = run("source = \"127.0.0.2\"");
    assert!(!seen.is_empty(), "no request relayed; log:\n{log}");
    let want: IpAddr = [127, 0, 0, 2].into();
    assert!(
        seen.iter().all(|a| a.ip() == want),
        "requests came from {seen:?}; log:\n{log}"
    );
}

#[test]
fn source_interface_sends_from_the_interface_address() {
    let (seen, log) = run("source-interface = \"lo\"");
    let want: IpAddr = [127, 0, 0, 1].into();
    assert!(
        !seen.is_empty() && seen.iter().all(|a| a.ip() == want),
        "requests came from {seen:?}; log:\n{log}"
    );
    assert!(
        log.contains("source-interface lo: sending from 127.0.0.1"),
        "log:\n{log}"
    );
}

/// Starts a client of a plain UDP listener with `setting`, waits for the
/// log line `warning`, then checks that no request reaches the listener.
fn assert_nothing_sent(setting: &str, warning: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = Daemon::start(
        dir.path(),
        "client",
        &format!(
            "[clock]\nbackend = \"observe\"\n[[server]]\naddress = \"{addr}\"\n\
             minpoll = -4\nmaxpoll = -4\niburst = true\n{setting}\n"
        ),
    );
    let warned = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        client.log().contains(warning).then_some(())
    });
    assert!(warned.is_some(), "no warning; log:\n{}", client.log());
    // Polling every 1/16 s with a burst: a second is many polls, none of which may arrive.
    listener
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 100];
    assert!(
        listener.recv_from(&mut buf).is_err(),
        "a request was sent despite {setting}"
    );
}

#[test]
fn nothing_is_sent_while_the_interface_has_no_address() {
    assert_nothing_sent("source-interface = \"strata-nodev0\"", "not sending to");
}

#[test]
fn nothing_is_sent_from_an_address_the_host_does_not_have() {
    assert_nothing_sent(
        "source = \"192.0.2.77\"",
        "192.0.2.77 is not an address of this host",
    );
}
