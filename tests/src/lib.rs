//! Support for the workspace-level end-to-end tests: start `stratad`
//! processes with generated configs, talk to their control sockets, and
//! measure a daemon's true clock error against the host clock.
//!
//! Every process started here is killed when its [`Daemon`] handle drops,
//! also when a test fails.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_daemon::control::{self, Reply, Request, Session, Status};
use strata_wire::{Leap, Mode, NtpPacket, NtpRepr, NtpShort, NtpTimestamp, ReferenceId};

/// How long a control request may take: generous, so that a loaded
/// machine's slow answer is not taken for none.
const CONTROL_WAIT: Duration = Duration::from_secs(10);

/// A 48-byte packet of `mode` from a synchronised stratum-2 sender (LOCL
/// reference) that has heard nothing from us yet: zero origin and receive
/// timestamps, `transmit` as its transmit and reference time.
#[must_use]
pub fn header_packet(mode: Mode, transmit: NtpTimestamp) -> Vec<u8> {
    let repr = NtpRepr {
        leap: Leap::NoWarning,
        version: 4,
        mode,
        stratum: 2,
        poll: 6,
        precision: -20,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::ZERO,
        reference_id: ReferenceId::LOCL,
        reference_timestamp: transmit,
        origin_timestamp: NtpTimestamp::ZERO,
        receive_timestamp: NtpTimestamp::ZERO,
        transmit_timestamp: transmit,
    };
    let mut buf = vec![0u8; 48];
    repr.emit(&mut NtpPacket::new_unchecked(&mut buf[..]));
    buf
}

/// The path of a workspace binary (`stratad`, `stratactl`), built on demand
/// into the same target directory as the running test.
///
/// # Panics
/// When the binary cannot be built.
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory")
        .to_path_buf();
    let path = dir.join(name);
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let target_dir = dir.parent().expect("target directory").to_path_buf();
        let status = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "strata-daemon",
                "--bins",
                "--target-dir",
            ])
            .arg(&target_dir)
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the strata binaries failed");
    });
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A free UDP port on 127.0.0.1 (best effort: the port is released before
/// use).
///
/// # Panics
/// When no socket can be bound.
#[must_use]
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

/// A running `stratad` with its own directory (config, control socket,
/// drift file, log). Killed on drop.
pub struct Daemon {
    child: Child,
    /// The control socket.
    pub socket: PathBuf,
    /// The daemon's directory.
    pub dir: PathBuf,
    name: String,
}

impl Daemon {
    /// Starts `stratad -c DIR/NAME.toml` with `config` followed by a
    /// `[control]` table pointing into `dir`; waits until its control
    /// socket answers.
    ///
    /// # Panics
    /// When the daemon does not come up within 20 s.
    #[must_use]
    pub fn start(dir: &Path, name: &str, config: &str) -> Daemon {
        Daemon::start_with_env(dir, name, config, &[])
    }

    /// As [`Daemon::start`], with extra environment variables.
    ///
    /// # Panics
    /// When the daemon does not come up within 20 s.
    #[must_use]
    pub fn start_with_env(dir: &Path, name: &str, config: &str, env: &[(&str, &str)]) -> Daemon {
        let socket = dir.join(format!("{name}.sock"));
        let drift = dir.join(format!("{name}.drift"));
        let text = config.replace("@DRIFT@", &drift.display().to_string())
            + &format!("\n[control]\nsocket = \"{}\"\n", socket.display());
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, text).expect("writing config");
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new(binary("stratad"))
            .arg("-c")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting stratad");
        let mut d = Daemon {
            child,
            socket,
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        };
        let up = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            d.try_status().ok()
        });
        if up.is_none() {
            let status = d.child.try_wait();
            panic!("{name} did not come up ({status:?}); log:\n{}", d.log());
        }
        d
    }

    /// The daemon's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }

    /// Asks for the status.
    ///
    /// # Errors
    /// When the control socket does not answer with a status.
    pub fn try_status(&self) -> Result<Status, String> {
        match control::request(&self.socket, &Request::Status, CONTROL_WAIT) {
            Ok(Reply::Status(s)) => Ok(s),
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The status.
    ///
    /// # Panics
    /// When the control socket does not answer.
    #[must_use]
    pub fn status(&self) -> Status {
        self.try_status().expect("status")
    }

    /// The sessions.
    ///
    /// # Panics
    /// When the control socket does not answer with sessions.
    #[must_use]
    pub fn sessions(&self) -> Vec<Session> {
        match control::request(&self.socket, &Request::Sessions, CONTROL_WAIT) {
            Ok(Reply::Sessions(s)) => s,
            other => panic!("unexpected reply {other:?}"),
        }
    }
}

impl Daemon {
    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, …) with `kill`.
    ///
    /// # Panics
    /// When `kill` cannot be run.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Stops the daemon with SIGTERM and waits (at most 10 s) for it to
    /// exit; returns whether it exited successfully.
    ///
    /// # Panics
    /// When it does not exit in time.
    pub fn stop(&mut self) -> bool {
        self.signal("TERM");
        let exited = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            self.child.try_wait().ok().flatten()
        });
        exited.expect("stratad exits on SIGTERM").success()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The config file the daemon was started with.
    #[must_use]
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(format!("{}.toml", self.name))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls `f` every `every` until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// One measurement of a server's clock against the host clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probe {
    /// The server's clock minus the host clock, seconds (positive: ahead).
    pub error: f64,
    /// Round-trip delay, seconds.
    pub delay: f64,
    /// The server's stratum.
    pub stratum: u8,
}

fn host_now() -> NtpTimestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    NtpTimestamp::from_unix(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// Measures the true clock error of the NTP server at `addr`: one mode-3
/// exchange timed with the host clock. With the host clock as reference,
/// the RFC 5905 offset of the server is exactly its error.
///
/// # Errors
/// On a socket error, a timeout, or a reply that does not answer the request.
pub fn probe(addr: SocketAddr, timeout: Duration) -> std::io::Result<Probe> {
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(timeout))?;
    let t1 = host_now();
    let req = NtpRepr::client_request(0, t1);
    let mut buf = [0u8; 512];
    req.emit(&mut NtpPacket::new_unchecked(&mut buf[..48]));
    sock.send_to(&buf[..48], addr)?;
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        let t4 = host_now();
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
        if from != addr {
            continue;
        }
        let (r, _) = strata_wire::parse_datagram(&buf[..n]).map_err(|e| bad(&e.to_string()))?;
        if r.mode != Mode::Server || r.origin_timestamp != t1 {
            return Err(bad("reply does not answer the probe"));
        }
        let (error, delay) =
            strata_wire::offset_and_delay(t1, r.receive_timestamp, r.transmit_timestamp, t4);
        return Ok(Probe {
            error,
            delay,
            stratum: r.stratum,
        });
    }
}

/// The median error of `n` probes (robust against one slow exchange).
///
/// # Errors
/// When every probe fails.
pub fn probe_median(addr: SocketAddr, n: usize) -> std::io::Result<Probe> {
    let mut ok = Vec::with_capacity(n);
    let mut last_err = None;
    for _ in 0..n {
        match probe(addr, Duration::from_secs(1)) {
            Ok(p) => ok.push(p),
            Err(e) => last_err = Some(e),
        }
    }
    if ok.is_empty() {
        return Err(last_err.unwrap_or_else(|| std::io::Error::other("no probe")));
    }
    ok.sort_by(|a, b| a.error.total_cmp(&b.error));
    Ok(ok[ok.len() / 2])
}
