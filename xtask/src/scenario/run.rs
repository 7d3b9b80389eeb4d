//! What a scenario's check works with: the running scenario ([`Run`]:
//! namespaces, processes, `stratactl` queries, true-offset probes), the
//! daemon's JSON answers ([`Status`], [`Instance`], [`Session`]), the
//! outcome and its summary values, and the capability checks for the
//! reference daemons.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::{de::DeserializeOwned, Deserialize};

use super::{config, guard, wait_until, Guard};
use crate::probe::Sample;

/// The result of a check: pass or fail, plus the values it measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Whether the scenario passed.
    pub pass: bool,
    /// `key=value` pairs for the summary line.
    pub values: Vec<(&'static str, String)>,
}

/// One sub-check's line, printed under the scenario's summary as
/// `  NAME: pass|FAIL key=value ...`.
#[derive(Debug, Clone)]
pub struct Line {
    /// The sub-check's name.
    pub name: &'static str,
    /// Whether it passed.
    pub pass: bool,
    /// What it measured.
    pub values: Vec<(&'static str, String)>,
}

impl Line {
    /// Prints the line.
    pub fn print(&self) {
        let kv: String = self
            .values
            .iter()
            .map(|(k, v)| format!(" {k}={v}"))
            .collect();
        println!(
            "  {}: {}{kv}",
            self.name,
            if self.pass { "pass" } else { "FAIL" }
        );
    }
}

/// `f` of the value, or `none`: how summary lines show a figure.
pub fn show<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "none".to_owned(), f)
}

/// The value, or `none`.
pub fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    show(v, |v| v.to_string())
}

/// Seconds as microseconds with one decimal, or `none`.
pub fn us(s: Option<f64>) -> String {
    show(s, |s| format!("{:.1}", s * 1e6))
}

/// Seconds with one decimal, or `none`.
pub fn secs(s: Option<f64>) -> String {
    show(s, |s| format!("{s:.1}"))
}

/// A reach register in octal, or `none`.
pub fn octal(r: Option<u8>) -> String {
    show(r, |r| format!("{r:o}"))
}

impl Outcome {
    /// Passed when `result` is `Ok`; else `values` end with its `error`.
    pub fn of<T>(result: &Result<T>, mut values: Vec<(&'static str, String)>) -> Outcome {
        if let Err(e) = result {
            values.push(("error", format!("{:?}", format!("{e:#}"))));
        }
        Outcome {
            pass: result.is_ok(),
            values,
        }
    }
}

/// Paths of the binaries scenarios run.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `stratad`.
    pub stratad: PathBuf,
    /// `stratactl`.
    pub stratactl: PathBuf,
    /// This `xtask` (for `probe` and `ntp-responder` inside namespaces).
    pub xtask: PathBuf,
}

/// `stratactl status --json`, the fields scenarios use.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    /// Whether the clock is synchronized.
    pub synchronized: bool,
    /// Stratum.
    pub stratum: u8,
    /// Last offset (RFC 5905 theta: positive when the local clock is behind).
    #[serde(default)]
    pub offset_s: Option<f64>,
    /// Frequency correction in ppm.
    #[serde(default)]
    pub frequency_ppm: Option<f64>,
    /// Number of clock steps so far.
    #[serde(default)]
    pub clock_steps: Option<u64>,
    /// The system peer, `ip:port`.
    #[serde(default)]
    pub reference: Option<String>,
    /// Per-instance state and counters.
    #[serde(default)]
    pub instances: BTreeMap<String, Instance>,
}

/// One instance of `stratactl status --json`: its state and counters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Instance {
    /// `up` or `down`.
    pub state: String,
    /// Where its sockets live (namespace, device, …).
    pub placement: String,
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Kiss-o'-death packets sent.
    pub kod_sent: u64,
    /// Dropped datagrams by reason.
    pub dropped: BTreeMap<String, u64>,
}

impl Instance {
    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.get(reason).copied().unwrap_or(0)
    }
}

/// One entry of `stratactl sessions --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    /// Instance name.
    pub instance: String,
    /// Remote address.
    pub address: String,
    /// Association mode.
    pub mode: String,
    /// Session state.
    pub state: String,
    /// Remote stratum.
    #[serde(default)]
    pub stratum: Option<u8>,
    /// Reach register.
    #[serde(default)]
    pub reach: Option<u8>,
    /// Poll exponent.
    #[serde(default)]
    pub poll: Option<i8>,
    /// Offset, seconds.
    #[serde(default)]
    pub offset_s: Option<f64>,
    /// Delay, seconds.
    #[serde(default)]
    pub delay_s: Option<f64>,
}

impl Session {
    /// A one-line summary for diagnostics.
    pub fn summary(&self) -> String {
        format!(
            "{}/{} mode={} state={} stratum={:?} reach={} poll={:?} offset_s={:?} delay_s={:?}",
            self.instance,
            self.address,
            self.mode,
            self.state,
            self.stratum,
            octal(self.reach),
            self.poll,
            self.offset_s,
            self.delay_s,
        )
    }
}

/// A running scenario, as its check sees it.
pub struct Run<'a> {
    /// This run's prefix, `st<4 hex>-`.
    pub prefix: &'a str,
    /// This scenario's directory.
    pub dir: PathBuf,
    /// Binaries.
    pub bins: &'a Bins,
    pub(super) guard: &'a Guard,
}

impl Run<'_> {
    /// The namespace of `node`.
    pub fn ns(&self, node: &str) -> String {
        format!("{}{node}", self.prefix)
    }

    /// The real interface name of `ifname`.
    pub fn ifname(&self, ifname: &str) -> String {
        format!("{}{ifname}", self.prefix)
    }

    /// The directory of `node` (config, control socket, drift file, logs).
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join(node)
    }

    /// The control socket of `node`.
    pub fn control_socket(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("control.sock")
    }

    /// Runs `program args` inside `node`'s namespace and returns its stdout.
    pub fn exec_in(&self, node: &str, program: &Path, args: &[&str]) -> Result<String> {
        guard::run_cmd(
            Command::new("ip")
                .args(["netns", "exec", &self.ns(node)])
                .arg(program)
                .args(args),
        )
    }

    /// Starts `program args` inside `node`'s namespace, owned by the guard,
    /// with output to `NODE_DIR/LABEL.log`. Returns the PID.
    pub fn spawn_in(&self, node: &str, label: &str, program: &Path, args: &[&str]) -> Result<u32> {
        let dir = self.node_dir(node);
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join(format!("{label}.log")))?;
        self.guard.spawn(
            &format!("{node}/{label}"),
            Command::new("ip")
                .args(["netns", "exec", &self.ns(node)])
                .arg(program)
                .args(args)
                .stdout(log.try_clone()?)
                .stderr(log),
        )
    }

    /// Whether a process started by this run has exited, and how.
    pub fn exit_status(&self, pid: u32) -> Option<std::process::ExitStatus> {
        self.guard.exit_status(pid)
    }

    /// `stratactl --socket … WHAT --json` of `node` (run from the host:
    /// unix sockets are not namespaced).
    pub fn stratactl(&self, node: &str, what: &str) -> Result<String> {
        let socket = self.control_socket(node);
        guard::run_cmd(
            Command::new(&self.bins.stratactl)
                .arg("--socket")
                .arg(&socket)
                .args([what, "--json"]),
        )
    }

    /// `stratactl … WHAT --json` of `node`, parsed as `T` (the fields the
    /// caller reads).
    pub fn query<T: DeserializeOwned>(&self, node: &str, what: &str) -> Result<T> {
        let out = self.stratactl(node, what)?;
        serde_json::from_str(&out).with_context(|| format!("parse {what} of {node}: {out}"))
    }

    /// `stratactl … status --json` of `node`.
    pub fn status(&self, node: &str) -> Result<Status> {
        self.query(node, "status")
    }

    /// Instance `name` of `node`'s status.
    pub fn instance(&self, node: &str, name: &str) -> Result<Instance> {
        self.status(node)?
            .instances
            .remove(name)
            .with_context(|| format!("{node}: no instance {name}"))
    }

    /// `stratactl … sessions --json` of `node`.
    pub fn sessions(&self, node: &str) -> Result<Vec<Session>> {
        self.query(node, "sessions")
    }

    /// Renders `template` as `node`'s `strata.toml`; returns its path.
    pub fn write_config(&self, node: &str, template: &str) -> Result<PathBuf> {
        let node_dir = self.node_dir(node);
        std::fs::create_dir_all(&node_dir)?;
        let ctx = config::RenderCtx {
            prefix: self.prefix,
            run_dir: &self.dir,
            node_dir: &node_dir,
        };
        let rendered =
            config::render(template, &ctx).with_context(|| format!("config of node {node}"))?;
        let file = node_dir.join("strata.toml");
        std::fs::write(&file, rendered)?;
        Ok(file)
    }

    /// Starts `stratad` in `node` from its `strata.toml` (output to
    /// `LABEL.log`), owned by the guard, and waits for its control socket.
    /// Returns the PID.
    pub fn spawn_stratad(&self, node: &str, label: &str) -> Result<u32> {
        let node_dir = self.node_dir(node);
        let file = node_dir.join("strata.toml").display().to_string();
        let socket = self.control_socket(node);
        // A socket left by an earlier daemon would look like this one's.
        std::fs::remove_file(&socket).ok();
        let pid = self.spawn_in(node, label, &self.bins.stratad, &["-c", &file])?;
        let log = node_dir.join(format!("{label}.log"));
        self.wait_started(pid, || socket.exists().then_some(()))
            .with_context(|| {
                let log = log.display();
                format!("stratad on {node} did not open its control socket; log: {log}")
            })?;
        Ok(pid)
    }

    /// Waits up to 10 s until `ready` gives a value, failing as soon as
    /// process `pid` (one this run started) exits.
    pub fn wait_started<T>(&self, pid: u32, mut ready: impl FnMut() -> Option<T>) -> Result<T> {
        guard::try_wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            if let Some(status) = self.exit_status(pid) {
                bail!("process {pid} exited early ({status})");
            }
            Ok(ready())
        })
    }

    /// Renders `template` for `node` and starts `stratad` there
    /// ([`Run::spawn_stratad`]). Returns the PID.
    pub fn start_stratad(&self, node: &str, template: &str) -> Result<u32> {
        self.write_config(node, template)?;
        self.spawn_stratad(node, "stratad")
    }

    /// The PID of the `stratad` in `node`'s namespace.
    pub fn stratad_pid(&self, node: &str) -> Result<u32> {
        let pids = guard::ip(&["netns", "pids", &self.ns(node)])?;
        pids.split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "stratad")
            })
            .with_context(|| format!("no stratad in {node}"))
    }

    /// Stops process `pid` (one this run started) with SIGTERM and waits
    /// until it has exited.
    pub fn stop(&self, pid: u32) -> Result<()> {
        guard::run_cmd(Command::new("kill").args(["-s", "TERM", &pid.to_string()]))?;
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            self.exit_status(pid)
        })
        .with_context(|| format!("process {pid} did not exit after SIGTERM"))?;
        Ok(())
    }

    /// The true clock error of the server at `addr`, probed from inside `node`.
    pub fn true_offset(&self, node: &str, addr: SocketAddr) -> Result<Sample> {
        let out = self.exec_in(
            node,
            &self.bins.xtask,
            &["probe", &addr.to_string(), "--timeout-ms", "1000"],
        )?;
        Sample::parse_line(out.lines().last().unwrap_or(""))
    }
}

/// `CAP_SYS_TIME` in a capability mask.
const CAP_SYS_TIME_BIT: u64 = 1 << 25;

/// A capability mask line (`CapEff`, `CapBnd`, …) of `/proc/PID/status` text.
pub fn cap_mask(status: &str, set: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(set)?.strip_prefix(':'))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether a process (its `/proc/PID/status` text) holds no `CAP_SYS_TIME`
/// in any of `sets`. A missing or unreadable mask counts as holding it.
pub fn lacks_sys_time(status: &str, sets: &[&str]) -> bool {
    sets.iter()
        .all(|s| cap_mask(status, s).is_some_and(|m| m & CAP_SYS_TIME_BIT == 0))
}
