//! `[dynamic-sessions] max` limits the symmetric passive associations of the default
//! instance: beyond it a peer's packet is dropped and counted as `session-limit`.

use std::net::UdpSocket;
use std::time::Duration;

use strata_tests::{free_udp_port, header_packet, wait_until, Daemon};
use strata_wire::{Mode, NtpTimestamp};

fn symmetric_active() -> Vec<u8> {
    header_packet(
        Mode::SymmetricActive,
        NtpTimestamp::from_unix(1_700_000_000, 0),
    )
}

#[test]
fn the_default_instance_keeps_to_its_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let d = Daemon::start(
        dir.path(),
        "limit",
        &format!(
            "[clock]\nbackend = \"observe\"\n[[listen]]\naddress = \"127.0.0.1:{port}\"\n\
             [[access]]\nlevel = \"peer\"\nprefixes = [\"127.0.0.0/8\"]\n\
             [dynamic-sessions]\nmax = 1\n"
        ),
    );
    let peers: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    for p in &peers {
        p.send_to(&symmetric_active(), ("127.0.0.1", port))
            .expect("send");
    }
    let limited = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let status = d.status();
        let n = status
            .instances
            .get("default")?
            .dropped
            .get("session-limit")
            .copied()?;
        (n >= 2).then_some(n)
    });
    assert_eq!(limited, Some(2), "log:\n{}", d.log());
    let passive = d
        .sessions()
        .into_iter()
        .filter(|s| s.mode == "symmetric-passive")
        .count();
    assert_eq!(passive, 1);
}
