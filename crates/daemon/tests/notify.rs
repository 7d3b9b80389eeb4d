//! `strata_daemon::notify` against a listener on a temporary `NOTIFY_SOCKET`, as systemd
//! provides for `Type=notify` services: the exact datagrams, the no-op without the variable,
//! an abstract socket name, and a dead socket that must not disturb the caller.
//!
//! One test function on purpose: it sets the process environment, and this file is its own
//! test binary, so nothing else reads `NOTIFY_SOCKET` meanwhile.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use strata_daemon::notify;

fn recv(listener: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = listener
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8(buf[..n].to_vec()).expect("UTF-8 notification")
}

fn assert_nothing_pending(listener: &UnixDatagram) {
    listener.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    match listener.recv(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("expected no datagram, got {other:?}"),
    }
    listener.set_nonblocking(false).unwrap();
}

#[test]
fn notifications_reach_the_socket_and_are_silent_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&path).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    // Unset or empty: nothing is sent, nothing fails.
    std::env::set_var(notify::NOTIFY_SOCKET_ENV, "");
    assert!(!notify::enabled());
    notify::ready("ignored");
    std::env::remove_var(notify::NOTIFY_SOCKET_ENV);
    assert!(!notify::enabled());
    notify::ready("ignored");
    notify::status("ignored");
    notify::stopping();
    assert_nothing_pending(&listener);

    std::env::set_var(notify::NOTIFY_SOCKET_ENV, &path);
    assert!(notify::enabled());
    notify::ready("serving, 2 sources");
    assert_eq!(recv(&listener), "READY=1\nSTATUS=serving, 2 sources\n");
    notify::status("synchronised to 192.0.2.1\nstratum 2");
    assert_eq!(
        recv(&listener),
        "STATUS=synchronised to 192.0.2.1 stratum 2\n"
    );
    notify::stopping();
    assert_eq!(recv(&listener), "STOPPING=1\n");
    assert_nothing_pending(&listener);

    // An abstract socket name (`@…`), as systemd may hand out.
    {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("strata-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_listener = UnixDatagram::bind_addr(&addr).unwrap();
        abstract_listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        std::env::set_var(notify::NOTIFY_SOCKET_ENV, format!("@{name}"));
        notify::ready("abstract");
        assert_eq!(recv(&abstract_listener), "READY=1\nSTATUS=abstract\n");
    }

    // A socket nobody listens on: logged, never a panic or an error to the caller.
    std::env::set_var(notify::NOTIFY_SOCKET_ENV, dir.path().join("gone.sock"));
    notify::ready("nobody hears this");
    notify::stopping();

    std::env::remove_var(notify::NOTIFY_SOCKET_ENV);
    assert_nothing_pending(&listener);
}
