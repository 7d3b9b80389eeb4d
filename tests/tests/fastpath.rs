//! The fast server path end to end on loopback: a `stratad` with several
//! worker threads per listener answers many clients correctly (origin,
//! stratum and reference id from its state once it synchronised), limits
//! each client IP across workers exactly as the engine's limiter allows,
//! keeps its own associations working (client replies on its client
//! socket; symmetric replies arrive on the listener the workers read and
//! still reach the engine), and counts it all in `stratactl status`.
//! A reload's access rules, deny policy and rate limits reach the workers.
//! `[responder] workers = 0` keeps the event-loop path, and bad values are
//! refused with key and line.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use strata_tests::{binary, free_udp_port, wait_until, Daemon};
use strata_wire::{KissCode, Mode, NtpPacket, NtpRepr, NtpTimestamp, ReferenceId};

const WORKERS: usize = 3;
const CLIENTS: u8 = 48;
/// `[rate-limit] burst`.
const BURST: u32 = 4;
/// Requests of the client that goes over its limit.
const FLOOD: u32 = 40;

/// A client socket on its own loopback source address.
fn client(a: u8, b: u8) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(127, 30, a, b), 0)).expect("bind");
    s.set_read_timeout(Some(QUIET)).expect("timeout");
    s
}

/// How long a socket must stay quiet, once the replies waited for are in,
/// before no more are expected.
const QUIET: Duration = Duration::from_millis(200);
/// How long replies are waited for: generous, so that a loaded machine
/// answers late rather than not at all.
const REPLY_WAIT: Duration = Duration::from_secs(30);

fn request(xmt: u64) -> [u8; 48] {
    let mut buf = [0u8; 48];
    // Version 3: the answer must carry the request's version.
    NtpRepr {
        version: 3,
        ..NtpRepr::client_request(6, NtpTimestamp::from_bits(xmt))
    }
    .emit(&mut NtpPacket::new_unchecked(&mut buf[..]));
    buf
}

/// Every reply `sock` receives: at least `want` of them (waiting up to
/// [`REPLY_WAIT`]), then any more until it has been [`QUIET`].
fn replies(sock: &UdpSocket, want: usize) -> Vec<NtpRepr> {
    let deadline = Instant::now() + REPLY_WAIT;
    let mut out = Vec::new();
    let mut buf = [0u8; 128];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let (r, _) = strata_wire::parse_datagram(&buf[..n]).expect("a valid reply");
                out.push(r);
            }
            Err(_) if out.len() >= want || Instant::now() >= deadline => return out,
            Err(_) => {}
        }
    }
}

/// The names of the process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|s| s.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn workers_answer_many_clients_limit_per_ip_and_keep_associations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up_port = free_udp_port();
    let up_port2 = free_udp_port();
    let port = free_udp_port();
    // The upstream: a local reference on two addresses, one for each of
    // the daemon's sources.
    let _upstream = Daemon::start(
        dir.path(),
        "upstream",
        &format!(
            r#"
[clock]
backend = "virtual"
[local-reference]
stratum = 1
[responder]
workers = 2
[[listen]]
address = "127.0.0.1:{up_port}"
[[listen]]
address = "127.0.0.2:{up_port2}"
"#
        ),
    );
    let daemon = Daemon::start(
        dir.path(),
        "fast",
        &format!(
            r#"
[clock]
backend = "virtual"
[responder]
workers = {WORKERS}
[rate-limit]
interval = "30s"
burst = {BURST}
max-clients = 1000
[[listen]]
address = "127.0.0.1:{port}"
[[server]]
address = "127.0.0.1:{up_port}"
minpoll = -2
maxpoll = 0
iburst = true
[[peer]]
address = "127.0.0.2:{up_port2}"
minpoll = -2
maxpoll = 0
"#
        ),
    );
    let names = thread_names(daemon.pid());
    let fast = names
        .iter()
        .filter(|n| n.starts_with("strata-fast"))
        .count();
    assert_eq!(fast, WORKERS, "worker threads: {names:?}");

    // The client association (its own client socket) and the symmetric
    // one (its replies come to the listener the workers read) both reach
    // the engine: the daemon synchronises and both are reachable.
    let synced = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        let s = daemon.status();
        let sessions = daemon.sessions();
        let reach = |addr: String| sessions.iter().any(|x| x.address == addr && x.reach != 0);
        (s.synchronized
            && s.stratum == 2
            && reach(format!("127.0.0.1:{up_port}"))
            && reach(format!("127.0.0.2:{up_port2}")))
        .then_some(s)
    });
    let status = synced.unwrap_or_else(|| {
        panic!(
            "not synchronised with both sources reachable: {:?} {:?}\nlog:\n{}",
            daemon.status(),
            daemon.sessions(),
            daemon.log()
        )
    });
    let before = status
        .instances
        .get("default")
        .cloned()
        .expect("default instance");

    let server = SocketAddr::from(([127, 0, 0, 1], port));
    // Many clients on their own addresses, two requests each (within the
    // burst): every request answered with the server's state.
    let clients: Vec<UdpSocket> = (0..CLIENTS).map(|i| client(0, i + 1)).collect();
    let mut xmt = 0x1234_0000_0000_u64;
    let mut sent: Vec<Vec<u64>> = Vec::new();
    for c in &clients {
        let mut mine = Vec::new();
        for _ in 0..2 {
            xmt += 1;
            c.send_to(&request(xmt), server).expect("send");
            mine.push(xmt);
        }
        sent.push(mine);
    }
    for (c, mine) in clients.iter().zip(&sent) {
        let got = replies(c, mine.len());
        let mut origins: Vec<u64> = got.iter().map(|r| r.origin_timestamp.to_bits()).collect();
        origins.sort_unstable();
        assert_eq!(&origins, mine, "every request answered once");
        for r in &got {
            assert_eq!(r.mode, Mode::Server);
            assert_eq!(r.version, 3, "the request's version");
            assert_eq!(r.stratum, status.stratum);
            assert_eq!(r.reference_id.to_string(), status.refid);
            assert!(r.receive_timestamp.to_bits() != 0);
            assert!(
                (r.transmit_timestamp - r.receive_timestamp).to_seconds() >= 0.0,
                "transmit after receive"
            );
        }
    }

    // One client far over its rate: its burst, then one KoD RATE in the
    // interval and nothing else, whichever workers took its requests.
    let abuser = client(1, 1);
    for k in 0..FLOOD {
        abuser
            .send_to(&request(0x5555_0000_0000 + u64::from(k)), server)
            .expect("send");
    }
    let got = replies(&abuser, BURST as usize + 1);
    let kods: Vec<&NtpRepr> = got
        .iter()
        .filter(|r| r.reference_id.kiss_code() == KissCode::Rate && r.stratum == 0)
        .collect();
    let answers = got.len() - kods.len();
    assert_eq!(answers, BURST as usize, "replies: {got:?}");
    assert_eq!(kods.len(), 1, "one KoD RATE: {got:?}");
    // The other clients are not affected.
    xmt += 1;
    clients[0].send_to(&request(xmt), server).expect("send");
    assert_eq!(replies(&clients[0], 1).len(), 1);

    // Counted in the status, with the engine's own counts.
    let expected_sent = u64::from(CLIENTS) * 2 + u64::from(BURST) + 1 + 1;
    let after = wait_until(REPLY_WAIT, Duration::from_millis(50), || {
        let s = daemon.status();
        let c = s.instances.get("default").cloned()?;
        (c.sent >= before.sent + expected_sent).then_some(c)
    })
    .unwrap_or_else(|| panic!("counters: {:?}", daemon.status()));
    let limited = |c: &strata_daemon::control::InstanceCounters| {
        c.dropped.get("rate-limited").copied().unwrap_or(0)
    };
    assert_eq!(
        limited(&after) - limited(&before),
        u64::from(FLOOD - BURST - 1)
    );
    assert!(after.kod_sent > before.kod_sent);
    assert!(after.received >= before.received + expected_sent + u64::from(FLOOD - BURST - 1));
}

/// Sends one request from `c` and returns the replies, waiting for `want`
/// of them ([`replies`]); sends again (up to three times) while fewer came,
/// in case the listener was not open yet.
fn ask(c: &UdpSocket, server: SocketAddr, xmt: u64, want: usize) -> Vec<NtpRepr> {
    let mut got = Vec::new();
    for _ in 0..3 {
        c.send_to(&request(xmt), server).expect("send");
        got = replies(c, want);
        if got.len() >= want {
            break;
        }
    }
    got
}

#[test]
fn reload_reaches_the_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    // One worker, so the request after the first (which goes to the event
    // loop: the worker's first for this local address) is the worker's.
    let base = format!(
        r#"
[clock]
backend = "virtual"
[local-reference]
stratum = 2
[responder]
workers = 1
[[listen]]
address = "127.0.0.1:{port}"
"#
    );
    let daemon = Daemon::start(dir.path(), "reload", &base);
    let c = client(3, 1);
    for xmt in 1..=2 {
        let got = ask(&c, server, xmt, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].stratum, got[0].origin_timestamp.to_bits()),
            (2, xmt)
        );
    }
    // `stratactl reload` answers once the reload is done.
    let reload = |extra: &str| {
        let text = format!(
            "{base}{extra}\n[control]\nsocket = \"{}\"\n",
            daemon.socket.display()
        );
        std::fs::write(daemon.config_path(), text).expect("rewrite config");
        let out = Command::new(binary("stratactl"))
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("reload")
            .output()
            .expect("stratactl");
        assert!(out.status.success(), "{out:?}");
    };

    // Only 10.0.0.0/8 may have time now; refused clients get a KoD DENY,
    // from the worker's next batch on.
    reload(
        "[[access]]\nlevel = \"server\"\nprefixes = [\"10.0.0.0/8\"]\n[access-policy]\ndeny = \"kod\"\n",
    );
    let denied = ask(&c, server, 3, 1);
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].reference_id.kiss_code(), KissCode::Deny);
    assert_eq!(denied[0].stratum, 0);
    assert_eq!(denied[0].origin_timestamp.to_bits(), 3);

    // Open again, with a rate limit of one request per minute: one answer,
    // then a KoD RATE, then nothing.
    reload("[rate-limit]\ninterval = \"60s\"\nburst = 1\n");
    let first = ask(&c, server, 4, 1);
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].stratum, first[0].origin_timestamp.to_bits()),
        (2, 4)
    );
    let second = ask(&c, server, 5, 1);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].reference_id.kiss_code(), KissCode::Rate);
    assert!(ask(&c, server, 6, 0).is_empty());
    let counters = &daemon.status().instances["default"];
    assert_eq!(counters.kod_sent, 2, "{counters:?}");
    assert_eq!(
        counters.dropped.get("rate-limited"),
        Some(&1),
        "{counters:?}"
    );
}

#[test]
fn workers_zero_keeps_the_event_loop_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let daemon = Daemon::start(
        dir.path(),
        "slow",
        &format!(
            r#"
[clock]
backend = "virtual"
[local-reference]
stratum = 3
[responder]
workers = 0
[[listen]]
address = "127.0.0.1:{port}"
"#
        ),
    );
    assert!(!thread_names(daemon.pid())
        .iter()
        .any(|n| n.starts_with("strata-fast")));
    let c = client(2, 1);
    let got = ask(&c, SocketAddr::from(([127, 0, 0, 1], port)), 77, 1);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].stratum, 3);
    assert_eq!(got[0].reference_id, ReferenceId::new(*b"LOCL"));
    assert_eq!(got[0].origin_timestamp.to_bits(), 77);
    assert!(daemon.status().instances["default"].sent >= 1);
}

#[test]
fn bad_worker_counts_name_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["-1", "100000"] {
        let path = dir.path().join("strata.toml");
        std::fs::write(
            &path,
            format!("[clock]\nbackend = \"virtual\"\n\n[responder]\nworkers = {bad}\n"),
        )
        .expect("write");
        let out = Command::new(binary("stratad"))
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("run stratad");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("responder.workers"), "{text}");
        assert!(text.contains(":5"), "line 5: {text}");
        assert!(text.contains("out of range"), "{text}");
    }
}
