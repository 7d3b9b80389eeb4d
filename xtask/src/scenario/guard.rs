//! Setup that always tears down: the [`Guard`], run prefixes, `ip` helpers
//! and [`wait_until`].
//!
//! Everything a scenario creates (namespaces, links, processes) is recorded
//! in a [`Guard`] the moment it exists. Dropping the guard kills every
//! process it started (by PID: SIGTERM, then SIGKILL after a bounded wait)
//! and deletes every link and namespace it made (by name), in reverse order.
//! The same cleanup runs on Ctrl-C, after which the process exits with 130.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, Once, PoisonError, Weak},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context, Result};

/// How long a process gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Polls `f` every `poll` until it yields a value or `timeout` passes.
///
/// This is the only way scenarios wait: never a bare sleep.
pub fn wait_until<T>(
    timeout: Duration,
    poll: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    try_wait_until(timeout, poll, || Ok(f()))
}

/// Like [`wait_until`], but an `Err` from `f` stops the wait at once.
pub fn try_wait_until<T>(
    timeout: Duration,
    poll: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f()? {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(poll.min(deadline - now));
    }
}

/// The namespace prefix pattern of every scenario run: `st<4 hex>-`.
pub fn is_run_prefixed(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 7
        && name.starts_with("st")
        && b[2..6]
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        && b[6] == b'-'
}

/// A fresh run prefix `st<4 hex>-` not used by any existing namespace.
pub fn new_prefix() -> Result<String> {
    let existing = netns_list()?;
    for attempt in 0u32..64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u32(attempt);
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        let prefix = format!("st{:04x}-", h.finish() & 0xffff);
        if !existing.iter().any(|n| n.starts_with(&prefix)) {
            return Ok(prefix);
        }
    }
    bail!("no free run prefix")
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run_cmd(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {shown}"))?;
    if !status.success() {
        bail!(
            "{shown} failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// `ip ARGS...`.
pub fn ip(args: &[&str]) -> Result<String> {
    run_cmd(Command::new("ip").args(args))
}

/// Names from `ip netns list` (which prints `name (id: N)` or `name`).
pub fn netns_list() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Sends SIGTERM to `pid`, without unsafe code.
fn sigterm(pid: u32) -> Result<()> {
    run_cmd(Command::new("kill").args(["-s", "TERM", &pid.to_string()])).map(drop)
}

/// Stops one child: SIGTERM, a bounded wait, then SIGKILL; always reaped.
fn stop_child(label: &str, child: &mut Child, grace: Duration) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    if let Err(e) = sigterm(child.id()) {
        eprintln!("cleanup: SIGTERM {label} (pid {}): {e:#}", child.id());
    }
    let exited = wait_until(grace, Duration::from_millis(20), || {
        child.try_wait().ok().flatten()
    });
    if exited.is_err() {
        eprintln!(
            "cleanup: {label} (pid {}) ignored SIGTERM for {grace:?}; SIGKILL",
            child.id()
        );
        child.kill().ok();
        child.wait().context("reap after SIGKILL")?;
    }
    Ok(())
}

/// What one guard has created, in creation order.
#[derive(Default)]
struct Resources {
    children: Vec<(String, Child)>,
    /// `(namespace, link name)`.
    links: Vec<(String, String)>,
    namespaces: Vec<String>,
    grace: Duration,
}

impl Resources {
    /// Undoes everything, newest first; idempotent. Returns the problems.
    fn cleanup(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let grace = self.grace;
        while let Some((label, mut child)) = self.children.pop() {
            if let Err(e) = stop_child(&label, &mut child, grace) {
                problems.push(format!("stop {label}: {e:#}"));
            }
        }
        while let Some((ns, link)) = self.links.pop() {
            // Deleting one end of a veth removes both; a link already gone is fine.
            let present = ip(&["-n", &ns, "link", "show", "dev", &link]).is_ok();
            if present {
                if let Err(e) = ip(&["-n", &ns, "link", "del", "dev", &link]) {
                    problems.push(format!("delete link {link} in {ns}: {e:#}"));
                }
            }
        }
        while let Some(ns) = self.namespaces.pop() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                problems.push(format!("delete namespace {ns}: {e:#}"));
            }
        }
        problems
    }
}

/// Guards registered for cleanup on Ctrl-C.
static ACTIVE: Mutex<Vec<Weak<Mutex<Resources>>>> = Mutex::new(Vec::new());
static CTRLC: Once = Once::new();

fn install_ctrlc_handler() {
    CTRLC.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            eprintln!("interrupted: cleaning up");
            let guards: Vec<_> = ACTIVE
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for res in guards {
                let problems = res.lock().unwrap_or_else(PoisonError::into_inner).cleanup();
                for p in problems {
                    eprintln!("cleanup: {p}");
                }
            }
            std::process::exit(130);
        });
        if let Err(e) = installed {
            eprintln!("warning: no Ctrl-C cleanup handler: {e}");
        }
    });
}

/// Owns every namespace, link and process a scenario creates; see the module doc.
pub struct Guard {
    res: Arc<Mutex<Resources>>,
}

impl Guard {
    /// An empty guard, registered for cleanup on Ctrl-C.
    pub fn new() -> Guard {
        Guard::with_grace(TERM_GRACE)
    }

    /// An empty guard whose processes get `grace` between SIGTERM and SIGKILL.
    pub fn with_grace(grace: Duration) -> Guard {
        install_ctrlc_handler();
        let res = Arc::new(Mutex::new(Resources {
            grace,
            ..Resources::default()
        }));
        let mut active = ACTIVE.lock().unwrap_or_else(PoisonError::into_inner);
        active.retain(|w| w.strong_count() > 0);
        active.push(Arc::downgrade(&res));
        Guard { res }
    }

    fn with_res<R>(&self, f: impl FnOnce(&mut Resources) -> R) -> R {
        f(&mut self.res.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Creates namespace `name` with `lo` up and reverse-path filtering off.
    pub fn add_netns(&self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.with_res(|r| r.namespaces.push(name.to_owned()));
        ip(&["-n", name, "link", "set", "dev", "lo", "up"])?;
        for key in ["all", "default"] {
            run_cmd(Command::new("ip").args([
                "netns",
                "exec",
                name,
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{key}.rp_filter=0"),
            ]))?;
        }
        Ok(())
    }

    /// Records link `name` in namespace `ns` for deletion.
    pub fn record_link(&self, ns: &str, name: &str) {
        self.with_res(|r| r.links.push((ns.to_owned(), name.to_owned())));
    }

    /// Creates a veth pair, each end directly in its namespace (never in the host's).
    pub fn add_veth(&self, ns_a: &str, if_a: &str, ns_b: &str, if_b: &str) -> Result<()> {
        ip(&[
            "-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b,
        ])?;
        self.record_link(ns_a, if_a);
        Ok(())
    }

    /// Starts `cmd` and owns the process from now on; returns its PID.
    pub fn spawn(&self, label: &str, cmd: &mut Command) -> Result<u32> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("start {label}: {cmd:?}"))?;
        let pid = child.id();
        self.with_res(|r| r.children.push((label.to_owned(), child)));
        Ok(pid)
    }

    /// The exit status of process `pid` if it has exited (`None` while running
    /// or when it is not one of ours).
    pub fn exit_status(&self, pid: u32) -> Option<std::process::ExitStatus> {
        self.with_res(|r| {
            r.children
                .iter_mut()
                .find(|(_, c)| c.id() == pid)
                .and_then(|(_, c)| c.try_wait().ok().flatten())
        })
    }

    /// Tears everything down now; returns the problems met.
    pub fn cleanup(&self) -> Vec<String> {
        self.with_res(Resources::cleanup)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for p in self.cleanup() {
            eprintln!("cleanup: {p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_exists(pid: u32) -> bool {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn wait_until_returns_value_once_ready() {
        let mut calls = 0;
        let got = wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            (calls == 3).then_some(calls)
        })
        .expect("ready on third poll");
        assert_eq!(got, 3);
    }

    #[test]
    fn wait_until_times_out() {
        let started = Instant::now();
        let err = wait_until(Duration::from_millis(50), Duration::from_millis(10), || {
            None::<()>
        })
        .expect_err("never ready");
        assert!(err.to_string().contains("within"), "{err:#}");
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn try_wait_until_stops_on_error() {
        let mut calls = 0;
        let err = try_wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            if calls == 2 {
                bail!("daemon died")
            }
            Ok(None::<()>)
        })
        .expect_err("error stops the wait");
        assert_eq!(calls, 2);
        assert!(err.to_string().contains("daemon died"));
    }

    #[test]
    fn prefix_pattern() {
        assert!(is_run_prefixed("st1a2b-server"));
        assert!(!is_run_prefixed("st1a2b-"), "prefix alone is not a node");
        assert!(!is_run_prefixed("st1A2b-server"), "lower-case hex only");
        assert!(!is_run_prefixed("sx1a2b-server"));
        assert!(!is_run_prefixed("st1a2bxserver"));
        assert!(!is_run_prefixed("strata"));
    }

    #[test]
    fn drop_terminates_processes() {
        let guard = Guard::with_grace(Duration::from_secs(5));
        let pid = guard
            .spawn("sleeper", Command::new("sleep").arg("30"))
            .expect("spawn sleep");
        assert!(proc_exists(pid));
        assert!(guard.exit_status(pid).is_none(), "still running");
        let started = Instant::now();
        drop(guard);
        assert!(!proc_exists(pid), "sleep must be gone after drop");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIGTERM was enough"
        );
    }

    #[test]
    fn sigkill_after_grace_when_sigterm_is_ignored() {
        let guard = Guard::with_grace(Duration::from_millis(200));
        let pid = guard
            .spawn(
                "stubborn",
                Command::new("sh").args(["-c", "trap '' TERM; exec sleep 30"]),
            )
            .expect("spawn");
        // Only once `sleep` runs has the shell's `trap` taken effect.
        wait_until(Duration::from_secs(5), Duration::from_millis(5), || {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "sleep").then_some(())
        })
        .expect("sleep started");
        let started = Instant::now();
        assert!(guard.cleanup().is_empty());
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "waited the grace"
        );
        assert!(!proc_exists(pid));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(guard.cleanup().is_empty(), "cleanup is idempotent");
    }
}
