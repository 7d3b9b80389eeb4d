//! End-to-end on loopback, no root needed: a `stratad` server with a local
//! reference and a `stratad` client whose virtual clock starts 0.5 s off
//! with a +50 ppm frequency error. The client's *true* error is measured
//! by querying its own listening port against the host clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use strata_tests::{free_udp_port, probe_median, wait_until, Daemon};

#[test]
fn client_synchronises_to_server_on_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_port = free_udp_port();
    let client_port = free_udp_port();
    let server = Daemon::start(
        dir.path(),
        "server",
        &format!(
            r#"
[clock]
backend = "virtual"
[local-reference]
stratum = 1
[[listen]]
address = "127.0.0.1:{server_port}"
"#
        ),
    );
    let start = Instant::now();
    let client = Daemon::start(
        dir.path(),
        "client",
        &format!(
            r#"
[clock]
backend = "virtual"
initial-offset = "500ms"
frequency-error-ppm = 50.0
drift-file = "@DRIFT@"
[discipline]
step-threshold = "128ms"
stepout = "2s"
[[listen]]
address = "127.0.0.1:{client_port}"
[[server]]
address = "127.0.0.1:{server_port}"
minpoll = -2
maxpoll = 0
iburst = true
"#
        ),
    );
    let client_addr: SocketAddr = ([127, 0, 0, 1], client_port).into();

    // Before synchronising, the client's clock is really 0.5 s ahead.
    let before = probe_median(client_addr, 3).expect("probe");
    assert!(
        before.error > 0.3 || client.status().clock_steps > 0,
        "initial error {}",
        before.error
    );

    let mut last = None;
    let synced = wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        let status = client.status();
        let probe = probe_median(client_addr, 3).ok()?;
        last = Some((probe.error, status.frequency_ppm, status.clock_steps));
        (probe.error.abs() < 1e-3 && (status.frequency_ppm + 50.0).abs() < 1.0)
            .then_some((probe, status))
    });
    let Some((probe, status)) = synced else {
        panic!(
            "client did not converge: last (error, ppm, steps) = {last:?}\nclient log:\n{}",
            client.log()
        );
    };
    let elapsed = start.elapsed();
    eprintln!(
        "loopback: true_error_us={:.1} freq_ppm={:.3} steps={} sync_s={:.1}",
        probe.error * 1e6,
        status.frequency_ppm,
        status.clock_steps,
        elapsed.as_secs_f64()
    );
    assert_eq!(status.clock_steps, 1, "exactly one step");
    assert!(status.synchronized);
    assert_eq!(status.stratum, 2);
    assert_eq!(status.refid, "127.0.0.1");
    let sessions = client.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].address, format!("127.0.0.1:{server_port}"));
    assert_eq!(sessions[0].state, "selected");
    // The server stays at stratum 1 on its local reference and answered
    // (the client locks within a few polls, so possibly only the iburst).
    let s = server.status();
    assert_eq!(s.stratum, 1);
    assert!(s.instances["default"].sent >= 4);
}
