//! systemd service notification (`sd_notify(3)`): `READY=1`, `STATUS=…` and `STOPPING=1`
//! sent as one datagram to the unix socket named by `$NOTIFY_SOCKET`, an absolute path or,
//! with a leading `@`, a Linux abstract socket name.
//!
//! Every function does nothing when `NOTIFY_SOCKET` is unset or empty (not started by
//! systemd, or a unit that is not `Type=notify`), and never fails the caller: a send error is
//! logged as a warning, since the daemon serves time whether or not the service manager
//! hears about it. A send never blocks for more than [`SEND_TIMEOUT`].
//!
//! The protocol is a datagram of newline-terminated `KEY=VALUE` lines, small enough to write
//! here with `std` alone (the `sd-notify` crate does not take abstract socket names).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// The longest a notification may block when the service manager's queue is full.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a service manager asked for notifications (`$NOTIFY_SOCKET` is set and not empty).
#[must_use]
pub fn enabled() -> bool {
    target().is_some()
}

/// Start-up is complete (`READY=1`), with a one-line status shown by `systemctl status`.
///
/// Call once the sockets are open and the control socket accepts requests; under
/// `Type=notify` systemd treats the service as starting until then.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={}\n", one_line(status)));
}

/// A new one-line status for `systemctl status` (`STATUS=…`), for example
/// "synchronised to 192.0.2.1, stratum 2". Line breaks are replaced by spaces.
pub fn status(msg: &str) {
    notify(&format!("STATUS={}\n", one_line(msg)));
}

/// The daemon is shutting down (`STOPPING=1`).
pub fn stopping() {
    notify("STOPPING=1\n");
}

/// `$NOTIFY_SOCKET`, when set and not empty.
fn target() -> Option<std::ffi::OsString> {
    std::env::var_os(NOTIFY_SOCKET_ENV).filter(|s| !s.is_empty())
}

fn notify(message: &str) {
    let Some(target) = target() else {
        return;
    };
    if let Err(e) = send_to(&target, message) {
        tracing::warn!(
            "could not notify the service manager at {}: {e}",
            target.to_string_lossy()
        );
    }
}

/// The protocol is one `KEY=VALUE` per line: a line break inside a value would start a new
/// (bogus) assignment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Sends `message` as one datagram to `target`: an absolute path, or `@name` for an abstract
/// socket.
fn send_to(target: &OsStr, message: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    let bytes = target.as_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        send_abstract(&socket, name, message.as_bytes())?
    } else if bytes.starts_with(b"/") {
        socket.send_to(message.as_bytes(), Path::new(target))?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an @abstract name",
        ));
    };
    if sent == message.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification truncated",
        ))
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &[u8], message: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt as _;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt as _;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(message, &addr)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_socket: &UnixDatagram, _name: &[u8], _message: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(listener: &UnixDatagram) -> String {
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = listener.recv(&mut buf).expect("a datagram within 5 s");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn values_stay_on_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
        assert_eq!(one_line("synchronised"), "synchronised");
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1\nSTATUS=x\n").unwrap();
        assert_eq!(recv(&listener), "READY=1\nSTATUS=x\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("strata-notify-unit-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(OsStr::new(&format!("@{name}")), "STOPPING=1\n").unwrap();
        assert_eq!(recv(&listener), "STOPPING=1\n");
    }

    #[test]
    fn bad_targets_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone.sock");
        assert!(send_to(gone.as_os_str(), "READY=1\n").is_err());
        assert_eq!(
            send_to(OsStr::new("relative.sock"), "READY=1\n")
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
