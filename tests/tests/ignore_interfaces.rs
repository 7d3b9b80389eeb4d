//! `[interfaces] ignore` (the default instance's `ignore-interfaces`): requests arriving on
//! an ignored interface get no answer and are counted as `ignored-interface`, both when the
//! fast-path workers read the listener and when the event loop does; a reload that lifts
//! the setting serves the interface again.

use std::net::SocketAddr;
use std::time::Duration;

use strata_tests::{free_udp_port, probe, wait_until, Daemon};

fn dropped(d: &Daemon) -> u64 {
    d.status()
        .instances
        .get("default")
        .and_then(|c| c.dropped.get("ignored-interface").copied())
        .unwrap_or(0)
}

fn check(workers: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let base = format!(
        "[clock]\nbackend = \"virtual\"\n[local-reference]\nstratum = 1\n\
         [responder]\nworkers = {workers}\n[[listen]]\naddress = \"127.0.0.1:{port}\"\n"
    );
    let d = Daemon::start(
        dir.path(),
        "server",
        &format!("{base}[interfaces]\nignore = [\"lo\"]\n"),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Each probe waits for its answer; none comes while lo is ignored.
    let counted = wait_until(Duration::from_secs(20), Duration::from_millis(10), || {
        assert!(
            probe(addr, Duration::from_millis(200)).is_err(),
            "answered on an ignored interface (workers = {workers})"
        );
        (dropped(&d) >= 3).then_some(())
    });
    assert!(
        counted.is_some(),
        "no ignored-interface drops; log:\n{}",
        d.log()
    );

    // Lift it: the same listener answers again.
    let text = std::fs::read_to_string(d.config_path()).expect("config");
    let text = text.replace("[interfaces]\nignore = [\"lo\"]\n", "");
    std::fs::write(d.config_path(), text).expect("write config");
    d.signal("HUP");
    let served = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        probe(addr, Duration::from_millis(200)).ok()
    });
    assert!(
        served.is_some(),
        "not served after the reload; log:\n{}",
        d.log()
    );
}

#[test]
fn ignored_interface_drops_and_counts_on_the_fast_path() {
    check(1);
}

#[test]
fn ignored_interface_drops_and_counts_in_the_event_loop() {
    check(0);
}
