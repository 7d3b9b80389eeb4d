//! A broadcast/multicast client refuses unsigned servers by default, loudly: one log line
//! per server naming the option to set, and the server listed by `stratactl sessions`.

use std::net::UdpSocket;
use std::time::Duration;

use strata_tests::{free_udp_port, header_packet, wait_until, Daemon};
use strata_wire::{Mode, NtpTimestamp};

fn mode5() -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    let xmt = NtpTimestamp::from_unix(
        i64::try_from(now.as_secs()).expect("seconds"),
        now.subsec_nanos(),
    );
    header_packet(Mode::Broadcast, xmt)
}

#[test]
fn an_unsigned_server_is_logged_once_and_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    // The wildcard listener also receives the group's packets; a unicast mode-5 packet to
    // it stands in for the group's.
    let d = Daemon::start(
        dir.path(),
        "client",
        &format!(
            "[clock]\nbackend = \"observe\"\n[[listen]]\naddress = \"0.0.0.0:{port}\"\n\
             [[multicast-client]]\ngroup = \"224.0.1.1\"\nport = {port}\ninterface = \"lo\"\n"
        ),
    );
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let from = server.local_addr().expect("local address").to_string();
    let packet = mode5();
    for _ in 0..3 {
        server.send_to(&packet, ("127.0.0.1", port)).expect("send");
    }
    let refused = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        d.sessions()
            .into_iter()
            .find(|s| s.address == from && s.state.starts_with("refused"))
    });
    let refused = refused.unwrap_or_else(|| panic!("no refused session; log:\n{}", d.log()));
    assert_eq!(refused.state, "refused-unsigned");
    assert_eq!(refused.instance, "default");
    let log = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let log = d.log();
        log.contains("allow-unauthenticated = true").then_some(log)
    })
    .unwrap_or_else(|| panic!("no warning; log:\n{}", d.log()));
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&from)).collect();
    assert_eq!(lines.len(), 1, "one line per server:\n{log}");
    assert!(lines[0].contains("key"), "{log}");
}
