//! Shared helpers for the strata-net integration tests: bounded receive,
//! root detection, and self-cleaning network namespaces.

#![allow(dead_code)] // each test binary uses a different subset

use std::io;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use strata_net::{RecvMeta, UdpSocket};

/// How long a test waits for a datagram that should arrive.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Receives one datagram, waiting (with poll(2)) up to `timeout`.
pub fn recv_timeout(sock: &UdpSocket, buf: &mut [u8], timeout: Duration) -> io::Result<RecvMeta> {
    let deadline = Instant::now() + timeout;
    loop {
        match sock.recv(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no datagram arrived",
                    ));
                }
                let wait = PollTimeout::try_from(left.min(Duration::from_millis(500)))
                    .unwrap_or(PollTimeout::from(500u16));
                let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
                poll(&mut fds, wait).map_err(io::Error::from)?;
            }
            other => return other,
        }
    }
}

/// True when the tests run as root (namespace and device tests need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `ip ARGS`, panicking with its output if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace `strata-nettest-<pid>-<tag>` that is deleted when
/// dropped, also when the test panics.
pub struct NetnsGuard {
    pub name: String,
}

impl NetnsGuard {
    /// Creates the namespace.
    pub fn new(tag: &str) -> NetnsGuard {
        let name = format!("strata-nettest-{}-{tag}", std::process::id());
        // Remove a leftover from a crashed run with the same pid (ignore failure).
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        NetnsGuard { name }
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full);
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let ok = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: could not delete network namespace {}", self.name);
        }
    }
}
