//! `cargo xtask bench server`: strata's server throughput against chronyd
//! and the bare reference reflector, on loopback.
//!
//! The servers run side by side on their own 127.0.0.1 ports, each
//! pinned to core 1 (`taskset -c 1`), each with its own generator
//! ([`super::loadgen`], one thread pinned to core 0); they take turns run
//! by run (a closed-loop run of each, then the next; each bisection step's
//! runs; each fixed-rate run), so that other load on a shared machine
//! weighs on all of them alike. An idle server costs nothing. With fewer
//! than two cores nothing is pinned, and the output says so. Servers:
//!
//! * `reflector`: `xtask reflector ADDR --batch N` ([`super::reflector`]),
//!   the practical limit of one core, and the generator's proven ceiling;
//! * `strata`: release `stratad`, virtual clock, `[local-reference]
//!   stratum = 1`, one `[[listen]]`, `[responder] workers = N` (`--workers`,
//!   default 1: one pinned core), rate limiting on ([`STRATA_RATE_LIMIT`]:
//!   above the generator's per-client rate, so every request pays the
//!   lookup and none is limited), control socket and drift file in the run
//!   directory;
//! * `chronyd`: `chronyd -x -d -f CONF` with `local stratum 1`, `allow
//!   127.0.0.0/8`, `port PORT`, `bindaddress 127.0.0.1`, `cmdport 0`, and
//!   its rate limiting on likewise ([`CHRONYD_RATE_LIMIT`]); the run checks
//!   it logged "Disabled control of system clock" and holds no
//!   `CAP_SYS_TIME` before loading it;
//! * `ntpsec`: ntpsec's `ntpd` 1.2.x from its unpacked package
//!   ([`ntpsec::ensure_ntpsec`], skipped with a message when it cannot be
//!   had), run as `setpriv --inh-caps=-sys_time --bounding-set=-sys_time
//!   ntpd -n -c CONF` ([`ntpsec::ntpd_args`]) with `disable ntp`; see
//!   [`ntpsec_config`]. ntpd has no port option, so it serves on
//!   127.0.0.1:123 (which must be free). The run checks that its
//!   `CapEff` and `CapBnd` lack `CAP_SYS_TIME`, that its config parsed
//!   without errors and that it listens on 127.0.0.1:123 before loading it.
//!   Its rate limiting is **off**: `discard average` takes whole log2
//!   seconds (0 at the least: one request per second per client), far
//!   below the generator's per-client rate.
//!
//! Per server: the closed-loop maximum (median of 3 runs), the highest
//! open-loop rate with ≤ 0.1% loss (bisection, median of 3 runs per
//! step), p50/p99 response time and server CPU per reply (`/proc/PID/stat`
//! utime + stime) at a fixed 20,000 requests/s (medians of 3 runs), and
//! the server's RSS after
//! 100,000 distinct clients (source addresses) have each sent a request.
//! Then `ratio=<strata/chronyd>`, `ratio=<strata/ntpsec>` and
//! `ratio_reflector=<strata/reflector>`.
//!
//! `--scaling` measures strata alone with 1 and with 2 workers (two
//! daemons taking turns), nothing pinned (the generator shares the cores
//! with the server), closed-loop maximum and replies/s at ≤ 0.1% loss, and
//! prints the 2/1 ratio.
//!
//! Run from a debug `cargo xtask`, the command builds release `stratad`
//! and `xtask` and re-runs itself from the release `xtask` (the generator
//! and the reflector must not be debug builds); `--no-build` reuses them.
//! Everything it starts lives in a run directory under /tmp with the
//! `strata-bench-` prefix and is killed and removed at the end, also on
//! failure.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use nix::{sched::CpuSet, unistd::Pid};
use xshell::{cmd, Shell};

use super::loadgen::{self, Load, LoadGen, Stats};
use crate::scenario::{self, interop, ntpsec};

/// The fixed open-loop rate of the latency and CPU figures.
pub const FIXED_RATE: f64 = 20_000.0;
/// The loss a rate may have and still count.
pub const MAX_LOSS: f64 = 0.001;
/// Distinct clients for the memory figure.
pub const CLIENTS: u32 = 100_000;
/// The core the servers run on; the generator takes [`GEN_CORE`].
pub const SERVER_CORE: usize = 1;
/// The generator's core.
pub const GEN_CORE: usize = 0;
/// Default datagrams per batch (generator and reflector).
pub const DEFAULT_BATCH: usize = 32;
/// Generator sockets (distinct source addresses) for the throughput runs.
/// 1,024 so that a client's rate stays well under the rate limits below
/// at any rate this machine reaches (400,000/s is 390/s per client).
const GEN_SOCKETS: usize = 1024;
/// strata's `[rate-limit]`: 1,000 requests/s per client sustained, bursts
/// of 1,000, room for the 100,000 clients of the memory phase.
pub const STRATA_RATE_LIMIT: &str =
    "[rate-limit]\ninterval = \"1ms\"\nburst = 1000\nmax-clients = 200000\n";
/// chronyd's `ratelimit`: 2^-10 s (about 1,000 responses/s per client),
/// bursts of 255 (its maximum).
pub const CHRONYD_RATE_LIMIT: &str = "ratelimit interval -10 burst 255\n";
/// Requests outstanding in closed-loop runs.
const WINDOW: usize = 512;
/// chronyd's log line when started with `-x`.
const CLOCK_CONTROL_DISABLED: &str = "Disabled control of system clock";
/// chronyd's user after it drops root (Debian's chrony package).
const CHRONY_USER: &str = "_chrony";
/// The servers measured by default (ntpsec only when it can be had).
pub const DEFAULT_SERVERS: &str = "reflector,strata,chronyd,ntpsec";
/// ntpd's port: ntpsec has no option to serve on another.
const NTPSEC_PORT: u16 = 123;

/// Options of `bench server`.
#[derive(Clone, Debug)]
pub struct Options {
    /// About 1 minute instead of about 5.
    pub quick: bool,
    /// Build release binaries (and re-run from the release xtask).
    pub build: bool,
    /// Datagrams per batch.
    pub batch: usize,
    /// Servers to measure, in order.
    pub servers: Vec<Kind>,
    /// stratad's `[responder] workers`.
    pub workers: usize,
    /// Measure strata with 1 and 2 workers, unpinned, instead.
    pub scaling: bool,
}

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The reference reflector.
    Reflector,
    /// stratad.
    Strata,
    /// chronyd -x.
    Chronyd,
    /// ntpsec's ntpd without `CAP_SYS_TIME`, `disable ntp`.
    Ntpsec,
}

impl Kind {
    /// The name used in flags and output.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Reflector => "reflector",
            Kind::Strata => "strata",
            Kind::Chronyd => "chronyd",
            Kind::Ntpsec => "ntpsec",
        }
    }

    /// Parses `reflector,strata,chronyd,ntpsec` (any subset, in order).
    ///
    /// # Errors
    /// An unknown name.
    pub fn parse_list(s: &str) -> Result<Vec<Kind>> {
        s.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| match n {
                "reflector" => Ok(Kind::Reflector),
                "strata" => Ok(Kind::Strata),
                "chronyd" => Ok(Kind::Chronyd),
                "ntpsec" => Ok(Kind::Ntpsec),
                _ => bail!("unknown server {n:?} (reflector, strata, chronyd, ntpsec)"),
            })
            .collect()
    }
}

/// Run lengths of one invocation.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// Sending phase of each closed-loop run.
    pub closed: Duration,
    /// Sending phase of each open-loop ramp run.
    pub ramp: Duration,
    /// Bisection steps of the ramp.
    pub steps: u32,
    /// Runs per measurement (the median counts).
    pub repeats: usize,
    /// Sending phase of the fixed-rate run.
    pub fixed: Duration,
}

impl Profile {
    /// `--quick` (about a minute for three servers) or the default (about five).
    pub fn new(quick: bool) -> Profile {
        if quick {
            Profile {
                closed: Duration::from_millis(1000),
                ramp: Duration::from_millis(600),
                steps: 5,
                repeats: 3,
                fixed: Duration::from_secs(2),
            }
        } else {
            Profile {
                closed: Duration::from_secs(3),
                ramp: Duration::from_secs(2),
                steps: 6,
                repeats: 3,
                fixed: Duration::from_secs(6),
            }
        }
    }
}

/// One server's figures.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Closed-loop replies/s (median).
    pub max_rps: f64,
    /// Replies/s at the highest open-loop rate with ≤ 0.1% loss (median).
    pub rps_at_loss: f64,
    /// p50 response time at [`FIXED_RATE`], seconds.
    pub p50_s: Option<f64>,
    /// p99 response time at [`FIXED_RATE`], seconds.
    pub p99_s: Option<f64>,
    /// Server CPU per reply at [`FIXED_RATE`], seconds.
    pub cpu_per_reply_s: Option<f64>,
    /// Loss at [`FIXED_RATE`].
    pub fixed_loss: f64,
    /// Generator's achieved send rate at [`FIXED_RATE`].
    pub fixed_sent_rps: f64,
    /// RSS before the distinct clients, KiB.
    pub rss_before_kib: Option<u64>,
    /// RSS after [`CLIENTS`] distinct clients, KiB.
    pub rss_after_kib: Option<u64>,
    /// Clients that got an answer in the memory phase.
    pub clients_answered: u64,
}

impl Figures {
    /// The `bench server NAME:` line.
    pub fn line(&self, name: &str) -> String {
        let us = |v: Option<f64>| v.map_or("n/a".to_owned(), |s| format!("{:.1}", s * 1e6));
        let kib = |v: Option<u64>| v.map_or("n/a".to_owned(), |k| k.to_string());
        format!(
            "bench server {name}: max_rps={:.0} rps_at_0.1pct_loss={:.0} p50_us={} p99_us={} \
             cpu_us_per_reply={} (at {FIXED_RATE:.0}/s: sent {:.0}/s, loss {:.3}%) \
             rss_kib={} rss_kib_after_{CLIENTS}_clients={} (answered {})",
            self.max_rps,
            self.rps_at_loss,
            us(self.p50_s),
            us(self.p99_s),
            us(self.cpu_per_reply_s),
            self.fixed_sent_rps,
            self.fixed_loss * 100.0,
            kib(self.rss_before_kib),
            kib(self.rss_after_kib),
            self.clients_answered,
        )
    }
}

/// `a / b` when both are finite and `b` is positive.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
}

/// The `ratio…=<a/b>` line comparing two servers' figures.
pub fn ratio_line(label: &str, a: &Figures, b: &Figures) -> String {
    let r = |v: Option<f64>| v.map_or("n/a".to_owned(), |x| format!("{x:.2}"));
    let opt = |x: Option<f64>, y: Option<f64>| x.zip(y).and_then(|(x, y)| ratio(x, y));
    format!(
        "{label} max_rps={} rps_at_0.1pct_loss={} p99={} cpu_per_reply={}",
        r(ratio(a.max_rps, b.max_rps)),
        r(ratio(a.rps_at_loss, b.rps_at_loss)),
        r(opt(a.p99_s, b.p99_s)),
        r(opt(a.cpu_per_reply_s, b.cpu_per_reply_s)),
    )
}

/// The median of `values` (the lower middle for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied()
}

/// Bisects `[lo, hi]` for the highest rate that passes, one probe at a
/// time (so that several servers' searches can take turns): probe
/// [`Bisection::next_rate`], [`Bisection::record`] the outcome and the
/// figure to keep, until `next_rate` is `None`.
#[derive(Clone, Copy, Debug)]
pub struct Bisection {
    lo: f64,
    hi: f64,
    steps_left: u32,
    best: (f64, f64),
}

impl Bisection {
    /// A search of `[lo, hi]` in `steps` steps.
    pub fn new(lo: f64, hi: f64, steps: u32) -> Bisection {
        Bisection {
            lo,
            hi,
            steps_left: steps,
            best: (0.0, 0.0),
        }
    }

    /// The rate to probe next, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        (self.steps_left > 0).then(|| (self.lo + self.hi) / 2.0)
    }

    /// Records the outcome of probing [`Bisection::next_rate`].
    pub fn record(&mut self, pass: bool, figure: f64) {
        let Some(mid) = self.next_rate() else {
            return;
        };
        if pass {
            self.best = (mid, figure);
            self.lo = mid;
        } else {
            self.hi = mid;
        }
        self.steps_left -= 1;
    }

    /// The highest passing rate and its figure (`(0, 0)` if none passed).
    pub fn best(&self) -> (f64, f64) {
        self.best
    }
}

/// utime + stime of a process in clock ticks, from `/proc/PID/stat` text.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line; `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB from `/proc/PID/status` text.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    let v = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    v.split_whitespace().next()?.parse().ok()
}

/// `Cpus_allowed_list` from `/proc/PID/status` text.
fn cpus_allowed(status: &str) -> Option<String> {
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    Some(v.trim().to_owned())
}

/// A started server, killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn status(&self) -> Result<String> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .with_context(|| format!("{} is gone; log: {}", self.name, self.log.display()))
    }

    /// The distinct `Cpus_allowed_list` values of the server's threads.
    fn threads_cpus_allowed(&self) -> Vec<String> {
        let mut all: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
            .filter_map(|s| cpus_allowed(&s))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn cpu_ticks(&self) -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .with_context(|| format!("{} is gone; log: {}", self.name, self.log.display()))?;
        cpu_ticks(&stat).context("parse /proc/PID/stat")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The run directory, removed when dropped.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cargo xtask bench server`.
///
/// # Errors
/// A build, a server that does not start or answer, or a generator error.
pub fn cli(sh: &Shell, opts: &Options) -> Result<()> {
    if opts.build {
        cmd!(sh, "cargo build --release -p strata-daemon -p xtask").run()?;
        let xtask = crate::target_dir().join("release/xtask");
        let mut args = vec![
            "bench".to_owned(),
            "server".to_owned(),
            "--no-build".to_owned(),
            "--batch".to_owned(),
            opts.batch.to_string(),
            "--servers".to_owned(),
            opts.servers
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(","),
        ];
        args.push("--workers".to_owned());
        args.push(opts.workers.to_string());
        if opts.quick {
            args.push("--quick".to_owned());
        }
        if opts.scaling {
            args.push("--scaling".to_owned());
        }
        let status = Command::new(&xtask)
            .args(&args)
            .current_dir(crate::project_root())
            .status()
            .with_context(|| format!("run {}", xtask.display()))?;
        ensure!(status.success(), "release xtask bench server: {status}");
        return Ok(());
    }
    // The release xtask runs from the directory that holds the release stratad.
    let release = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .filter(|dir| dir.join("stratad").is_file())
        .unwrap_or_else(|| crate::target_dir().join("release"));
    let profile = Profile::new(opts.quick);
    let cores = online_cores();
    let mut opts = opts.clone();
    let ntpsec_prefix = if opts.servers.contains(&Kind::Ntpsec) && !opts.scaling {
        match ntpsec::ensure_ntpsec() {
            Ok(prefix) => Some(prefix),
            Err(e) => {
                println!("bench server: ntpsec skipped (not available: {e:#})");
                opts.servers.retain(|k| *k != Kind::Ntpsec);
                None
            }
        }
    } else {
        None
    };
    let opts = &opts;
    if opts.scaling {
        return scaling(&release, opts, &profile, cores);
    }
    let pinned = cores > SERVER_CORE;
    let gen_pin = if pinned {
        pin_self(GEN_CORE)
    } else {
        Err(anyhow::anyhow!("only {cores} core(s)"))
    };
    println!(
        "bench server: {} online core(s); generator pinned to core {GEN_CORE}: {}; \
         servers pinned to core {SERVER_CORE}: {}",
        cores,
        match &gen_pin {
            Ok(set) => format!("yes (allowed: {set})"),
            Err(e) => format!("no ({e:#})"),
        },
        if pinned { "requested (taskset)" } else { "no" }
    );
    println!(
        "bench server: batch {}, {GEN_SOCKETS} client sockets on 127.20.0.1.., window {WINDOW}, \
         runs: closed {:?} x{}, ramp {} steps of {:?} x{}, fixed {FIXED_RATE:.0}/s for {:?}",
        opts.batch,
        profile.closed,
        profile.repeats,
        profile.steps,
        profile.ramp,
        profile.repeats,
        profile.fixed
    );
    let dir = RunDir(make_run_dir()?);
    let mut subjects = Vec::new();
    for (i, &kind) in opts.servers.iter().enumerate() {
        let sub = dir.0.join(kind.name());
        let first = Ipv4Addr::new(127, 20 + u8::try_from(i % 8)?, 0, 1);
        subjects.push(Subject::start(
            kind,
            kind.name().to_owned(),
            Programs {
                release: &release,
                ntpsec: ntpsec_prefix.as_deref(),
            },
            &sub,
            opts,
            pinned,
            first,
        )?);
    }
    measure(&mut subjects, &profile, true)?;
    for s in &subjects {
        println!("{}", s.f.line(&s.label));
    }
    let get = |k: Kind| subjects.iter().find(|s| s.kind == k).map(|s| &s.f);
    if let Some(reflector) = get(Kind::Reflector) {
        println!(
            "bench server: generator ceiling >= {:.0} replies/s (closed loop against the reflector)",
            reflector.max_rps
        );
    }
    if let (Some(s), Some(c)) = (get(Kind::Strata), get(Kind::Chronyd)) {
        println!("{}", ratio_line("ratio=<strata/chronyd>", s, c));
    }
    if let (Some(s), Some(n)) = (get(Kind::Strata), get(Kind::Ntpsec)) {
        println!("{}", ratio_line("ratio=<strata/ntpsec>", s, n));
    }
    if let (Some(s), Some(r)) = (get(Kind::Strata), get(Kind::Reflector)) {
        println!("{}", ratio_line("ratio_reflector=<strata/reflector>", s, r));
    }
    Ok(())
}

/// Where the servers' programs are.
#[derive(Clone, Copy, Debug)]
struct Programs<'a> {
    /// The directory of the release `stratad` and `xtask`.
    release: &'a Path,
    /// ntpsec's unpacked package, when ntpsec is measured.
    ntpsec: Option<&'a Path>,
}

/// A started server with its own generator and figures.
struct Subject {
    kind: Kind,
    label: String,
    server: Server,
    addr: SocketAddrV4,
    gen: LoadGen,
    f: Figures,
}

impl Subject {
    /// Starts the server in `dir` on a fresh port and waits until it answers.
    fn start(
        kind: Kind,
        label: String,
        programs: Programs<'_>,
        dir: &Path,
        opts: &Options,
        pin: bool,
        first: Ipv4Addr,
    ) -> Result<Subject> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        let port = if kind == Kind::Ntpsec {
            // Free right now (nothing else serves NTP on loopback)?
            UdpSocket::bind((Ipv4Addr::LOCALHOST, NTPSEC_PORT)).with_context(|| {
                format!("ntpsec serves on 127.0.0.1:{NTPSEC_PORT} only, which is taken")
            })?;
            NTPSEC_PORT
        } else {
            free_port()?
        };
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let server = start(kind, programs, dir, addr, opts, pin)?;
        let mut gen = LoadGen::new(&loadgen::Config {
            target: addr,
            sockets: GEN_SOCKETS,
            batch: opts.batch,
            first_source: first,
        })?;
        gen.wait_ready(Duration::from_secs(15))
            .with_context(|| format!("{label}; log: {}", server.log.display()))?;
        // Read once it answers: taskset has set the affinity and exec'd by then.
        let allowed = server.threads_cpus_allowed();
        let pinned = !allowed.is_empty() && allowed.iter().all(|c| *c == SERVER_CORE.to_string());
        println!(
            "bench server {label}: pid {} on {addr}, threads' cpus allowed: {allowed:?} (pinned \
             to core {SERVER_CORE}: {}); load average: {}",
            server.pid(),
            if pinned { "yes" } else { "no" },
            load_average()
        );
        Ok(Subject {
            kind,
            label,
            server,
            addr,
            gen,
            f: Figures::default(),
        })
    }

    fn run(&mut self, load: Load, duration: Duration) -> Result<Stats> {
        self.gen.run(&loadgen::Run {
            load,
            duration,
            max_requests: 20_000_000,
        })
    }
}

/// (CPU per reply, p50, p99, loss, sent/s) of one fixed-rate run.
type FixedRun = (Option<f64>, Option<f64>, Option<f64>, f64, f64);

/// Measures every subject, taking turns run by run (the closed-loop runs,
/// each bisection step's runs, the fixed-rate runs), so that other load on
/// a shared machine weighs on every server alike; medians per server.
/// With `full`, also the fixed-rate figures and the memory figure.
fn measure(subjects: &mut [Subject], profile: &Profile, full: bool) -> Result<()> {
    let tck = clock_ticks_per_s();
    let mut closed = vec![Vec::new(); subjects.len()];
    for _ in 0..profile.repeats {
        for (s, out) in subjects.iter_mut().zip(&mut closed) {
            out.push(
                s.run(Load::Closed { window: WINDOW }, profile.closed)?
                    .replies_per_s(),
            );
        }
    }
    let mut searches = Vec::new();
    for (s, out) in subjects.iter_mut().zip(&mut closed) {
        s.f.max_rps = median(out).unwrap_or(0.0);
        searches.push(Bisection::new(
            s.f.max_rps * 0.1,
            s.f.max_rps * 1.2,
            profile.steps,
        ));
    }
    for _ in 0..profile.steps {
        let mut stats = vec![Vec::new(); subjects.len()];
        for _ in 0..profile.repeats {
            for ((s, b), out) in subjects.iter_mut().zip(&searches).zip(&mut stats) {
                if let Some(rate) = b.next_rate() {
                    out.push(s.run(Load::Open { rate }, profile.ramp)?);
                }
            }
        }
        for ((s, b), st) in subjects.iter().zip(&mut searches).zip(&stats) {
            let Some(rate) = b.next_rate() else {
                continue;
            };
            let med = |f: fn(&Stats) -> f64, empty: f64| {
                median(&mut st.iter().map(f).collect::<Vec<_>>()).unwrap_or(empty)
            };
            let (loss, rps, sent) = (
                med(Stats::loss, 1.0),
                med(Stats::replies_per_s, 0.0),
                med(Stats::sent_per_s, 0.0),
            );
            // A rate the generator did not reach does not count as passed.
            let pass = loss <= MAX_LOSS && sent >= rate * 0.97;
            println!(
                "  ramp {}: rate {rate:.0}/s sent {sent:.0}/s replies {rps:.0}/s loss {:.3}% {}",
                s.label,
                loss * 100.0,
                if pass { "ok" } else { "over" }
            );
            b.record(pass, rps);
        }
    }
    for (s, b) in subjects.iter_mut().zip(&searches) {
        let (rate, rps) = b.best();
        s.f.rps_at_loss = rps;
        if rate == 0.0 {
            // Below the search range: the server loses more than 0.1% even
            // at a tenth of its closed-loop maximum.
            println!(
                "  ramp {}: no rate in the range passed (<= 0.1% loss)",
                s.label
            );
        }
    }
    if !full {
        return Ok(());
    }
    let mut fixed: Vec<Vec<FixedRun>> = vec![Vec::new(); subjects.len()];
    for _ in 0..profile.repeats {
        for (s, out) in subjects.iter_mut().zip(&mut fixed) {
            let before = s.server.cpu_ticks()?;
            let st = s.run(Load::Open { rate: FIXED_RATE }, profile.fixed)?;
            let after = s.server.cpu_ticks()?;
            let cpu = (st.replies > 0)
                .then(|| to_f64(after.saturating_sub(before)) / tck / to_f64(st.replies));
            out.push((
                cpu,
                st.percentile_s(50.0),
                st.percentile_s(99.0),
                st.loss(),
                st.sent_per_s(),
            ));
        }
    }
    for (s, runs) in subjects.iter_mut().zip(&fixed) {
        let med = |f: fn(&FixedRun) -> Option<f64>| {
            median(&mut runs.iter().filter_map(f).collect::<Vec<_>>())
        };
        s.f.cpu_per_reply_s = med(|r| r.0);
        s.f.p50_s = med(|r| r.1);
        s.f.p99_s = med(|r| r.2);
        s.f.fixed_loss = med(|r| Some(r.3)).unwrap_or(1.0);
        s.f.fixed_sent_rps = med(|r| Some(r.4)).unwrap_or(0.0);
    }
    for s in subjects.iter_mut() {
        s.f.rss_before_kib = s.server.status().ok().and_then(|st| vm_rss_kib(&st));
        let clients = loadgen::distinct_clients(
            s.addr,
            Ipv4Addr::new(127, 100, 0, 1),
            CLIENTS,
            1000,
            Duration::from_millis(200),
            Duration::from_secs(60),
        )?;
        s.f.clients_answered = clients.answered;
        s.f.rss_after_kib = s.server.status().ok().and_then(|st| vm_rss_kib(&st));
    }
    Ok(())
}

#[allow(clippy::cast_precision_loss)]
fn to_f64(n: u64) -> f64 {
    n as f64
}

/// Starts `kind` on `addr`, pinned to [`SERVER_CORE`] when `pin`.
fn start(
    kind: Kind,
    programs: Programs<'_>,
    dir: &Path,
    addr: SocketAddrV4,
    opts: &Options,
    pin: bool,
) -> Result<Server> {
    let release = programs.release;
    let batch = opts.batch;
    let log = dir.join(format!("{}.log", kind.name()));
    let (program, args): (PathBuf, Vec<String>) = match kind {
        Kind::Reflector => (
            release.join("xtask"),
            vec![
                "reflector".to_owned(),
                addr.to_string(),
                "--batch".to_owned(),
                batch.to_string(),
                "--max-seconds".to_owned(),
                "1800".to_owned(),
                "--max-packets".to_owned(),
                "1000000000".to_owned(),
            ],
        ),
        Kind::Strata => {
            let conf = dir.join("stratad.toml");
            std::fs::write(&conf, strata_config(dir, addr, opts.workers))?;
            (
                release.join("stratad"),
                vec!["-c".to_owned(), conf.display().to_string()],
            )
        }
        Kind::Chronyd => {
            let chrony_dir = dir.join("chrony");
            std::fs::create_dir_all(&chrony_dir)?;
            let status = Command::new("chown")
                .arg(format!("{CHRONY_USER}:{CHRONY_USER}"))
                .arg(&chrony_dir)
                .status()?;
            ensure!(
                status.success(),
                "chown {CHRONY_USER} {}",
                chrony_dir.display()
            );
            std::fs::set_permissions(&chrony_dir, std::fs::Permissions::from_mode(0o770))?;
            let conf = dir.join("chronyd.conf");
            std::fs::write(&conf, chronyd_config(&chrony_dir, addr))?;
            let args = interop::chronyd_args(&conf);
            ensure!(args.iter().any(|a| a == "-x"), "chronyd must run with -x");
            (interop::find_program("chronyd")?, args)
        }
        Kind::Ntpsec => {
            let prefix = programs.ntpsec.context("ntpsec is not available")?;
            let conf = dir.join("ntpd.conf");
            std::fs::write(&conf, ntpsec_config(dir, addr))?;
            let args = ntpsec::ntpd_args(&prefix.join("usr/sbin/ntpd"), &conf);
            ensure!(
                args.iter().any(|a| a == "--bounding-set=-sys_time"),
                "ntpd must run without CAP_SYS_TIME"
            );
            (interop::find_program("setpriv")?, args)
        }
    };
    ensure!(program.is_file(), "{} not built", program.display());
    let mut command = if pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(SERVER_CORE.to_string()).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    let out = std::fs::File::create(&log)?;
    let child = command
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    let mut server = Server {
        name: kind.name(),
        child,
        log,
    };
    match kind {
        Kind::Chronyd => confirm_chronyd_x(&mut server)?,
        Kind::Ntpsec => confirm_ntpsec(&mut server, dir)?,
        Kind::Reflector | Kind::Strata => {}
    }
    Ok(server)
}

/// Waits until the started process is `ntpd` (taskset and setpriv exec in
/// place), holds no `CAP_SYS_TIME` (effective and bounding sets), parsed
/// its config without errors and listens on 127.0.0.1:123.
fn confirm_ntpsec(server: &mut Server, dir: &Path) -> Result<()> {
    let ntpd_log = dir.join("ntpd.log");
    let started = Instant::now();
    let mut caps_ok = false;
    while started.elapsed() < Duration::from_secs(10) {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "ntpd exited early ({status}); logs: {}, {}",
                server.log.display(),
                ntpd_log.display()
            );
        }
        let comm =
            std::fs::read_to_string(format!("/proc/{}/comm", server.pid())).unwrap_or_default();
        if comm.trim() == "ntpd" {
            let status = server.status()?;
            ensure!(
                scenario::lacks_sys_time(&status, &["CapEff", "CapBnd"]),
                "ntpd (PID {}) holds CAP_SYS_TIME: refusing to load it",
                server.pid()
            );
            caps_ok = true;
            let out = std::fs::read_to_string(&server.log).unwrap_or_default();
            let log = std::fs::read_to_string(&ntpd_log).unwrap_or_default();
            ensure!(
                !out.contains("syntax error") && !log.contains("parsing errors"),
                "ntpd did not parse its config; logs: {}, {}",
                server.log.display(),
                ntpd_log.display()
            );
            let listening = format!(" 127.0.0.1:{NTPSEC_PORT}");
            if log
                .lines()
                .any(|l| l.contains("Listen normally") && l.ends_with(&listening))
            {
                println!(
                    "bench server ntpsec: no CAP_SYS_TIME confirmed (CapEff, CapBnd), disable ntp, \
                     listening on 127.0.0.1:{NTPSEC_PORT}"
                );
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "ntpd did not start ({}); logs: {}, {}",
        if caps_ok {
            "no 127.0.0.1 listener logged"
        } else {
            "not running as ntpd"
        },
        server.log.display(),
        ntpd_log.display()
    )
}

/// Waits until chronyd logged that clock control is disabled and holds no
/// `CAP_SYS_TIME`.
fn confirm_chronyd_x(server: &mut Server) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "chronyd exited early ({status}); log: {}",
                server.log.display()
            );
        }
        let text = std::fs::read_to_string(&server.log).unwrap_or_default();
        let no_sys_time = server
            .status()
            .is_ok_and(|s| scenario::lacks_sys_time(&s, &["CapEff"]));
        if text.contains(CLOCK_CONTROL_DISABLED) && no_sys_time {
            println!("bench server chronyd: -x confirmed (log line and no CAP_SYS_TIME)");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "chronyd did not confirm -x and drop CAP_SYS_TIME; log: {}",
        server.log.display()
    )
}

/// stratad's config: virtual clock, local reference, one listener with
/// `workers` fast-path workers, rate limiting on.
pub fn strata_config(dir: &Path, addr: SocketAddrV4, workers: usize) -> String {
    let dir = dir.display();
    format!(
        "[responder]\n\
         workers = {workers}\n\
         \n\
         {STRATA_RATE_LIMIT}\
         \n\
         [clock]\n\
         backend = \"virtual\"\n\
         drift-file = \"{dir}/drift\"\n\
         \n\
         [local-reference]\n\
         stratum = 1\n\
         \n\
         [control]\n\
         socket = \"{dir}/control.sock\"\n\
         \n\
         [[listen]]\n\
         address = \"{addr}\"\n"
    )
}

/// chronyd's config: local stratum 1, loopback clients, rate limiting on.
pub fn chronyd_config(dir: &Path, addr: SocketAddrV4) -> String {
    let d = dir.display();
    let mut conf = String::new();
    // Infallible: writing to a String.
    let _ = write!(
        conf,
        "local stratum 1\n\
         allow 127.0.0.0/8\n\
         bindaddress {}\n\
         port {}\n\
         cmdport 0\n\
         bindcmdaddress {d}/chronyd.sock\n\
         pidfile {d}/chronyd.pid\n\
         driftfile {d}/chronyd.drift\n\
         {CHRONYD_RATE_LIMIT}",
        addr.ip(),
        addr.port()
    );
    conf
}

/// ntpsec's config: `disable ntp` (no clock discipline), orphan mode at
/// stratum 1 from the start (`tos orphan 1 orphanwait 0`: ntpsec answers
/// as a synchronised stratum-1 server, refid `LOOP`, without any source;
/// its local driver would select but, with `disable ntp`, never
/// synchronise), IPv4 loopback only (`interface ignore all`, `interface
/// listen 127.0.0.1`), queries from 127.0.0.0/8 only, no rate limiting (see
/// the module doc), an MRU list as large as strata's client table, drift,
/// statistics and log files in `dir`.
pub fn ntpsec_config(dir: &Path, addr: SocketAddrV4) -> String {
    let d = dir.display();
    format!(
        "disable ntp\n\
         tos orphan 1 orphanwait 0\n\
         interface ignore all\n\
         interface ignore ipv6\n\
         interface listen {}\n\
         restrict default ignore\n\
         restrict 127.0.0.0 mask 255.0.0.0 nomodify noquery\n\
         mru maxdepth 200000\n\
         driftfile {d}/ntpd.drift\n\
         statsdir {d}/\n\
         logfile {d}/ntpd.log\n",
        addr.ip()
    )
}

/// A fresh `/tmp/strata-bench-PID-N` directory (world-searchable so that
/// chronyd can reach its own directory inside after dropping root).
fn make_run_dir() -> Result<PathBuf> {
    for n in 0..100 {
        let dir = std::env::temp_dir().join(format!("strata-bench-{}-{n}", std::process::id()));
        if std::fs::create_dir(&dir).is_ok() {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
            return Ok(dir);
        }
    }
    bail!(
        "cannot create a run directory in {}",
        std::env::temp_dir().display()
    )
}

/// A UDP port free on 127.0.0.1 right now.
fn free_port() -> Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// Online CPUs (from `/sys/devices/system/cpu/online`, e.g. `0-1`).
fn online_cores() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    text.trim()
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| match r.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .unwrap_or(0)
                    .saturating_sub(a.parse().unwrap_or(0))
                    + 1
            }
            None => 1,
        })
        .sum::<usize>()
        .max(1)
}

/// Pins this thread to `core` and reads the affinity back.
fn pin_self(core: usize) -> Result<String> {
    let mut set = CpuSet::new();
    set.set(core).context("cpu set")?;
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set).context("sched_setaffinity")?;
    let got = nix::sched::sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    let cores: Vec<String> = (0..CpuSet::count())
        .filter(|&c| got.is_set(c).unwrap_or(false))
        .map(|c| c.to_string())
        .collect();
    ensure!(cores == [core.to_string()], "affinity is {cores:?}");
    Ok(cores.join(","))
}

/// `--scaling`: strata with 1 and 2 workers, generator and server unpinned.
fn scaling(release: &Path, opts: &Options, profile: &Profile, cores: usize) -> Result<()> {
    println!(
        "bench server --scaling: strata with 1 then 2 workers; {cores} online core(s); \
         generator and server NOT pinned (they share the cores); load average {}",
        load_average()
    );
    let dir = RunDir(make_run_dir()?);
    let mut subjects = Vec::new();
    for workers in [1usize, 2] {
        let o = Options {
            workers,
            ..opts.clone()
        };
        subjects.push(Subject::start(
            Kind::Strata,
            format!("strata workers={workers}"),
            Programs {
                release,
                ntpsec: None,
            },
            &dir.0.join(format!("strata-{workers}")),
            &o,
            false,
            Ipv4Addr::new(127, 20 + u8::try_from(workers)?, 0, 1),
        )?);
    }
    let before: Vec<u64> = subjects
        .iter()
        .map(|s| s.server.cpu_ticks())
        .collect::<Result<_>>()?;
    let started = Instant::now();
    measure(&mut subjects, profile, false)?;
    let secs = started.elapsed().as_secs_f64();
    for (s, b) in subjects.iter().zip(&before) {
        let cpu_s = to_f64(s.server.cpu_ticks()?.saturating_sub(*b)) / clock_ticks_per_s();
        println!(
            "bench server {}: max_rps={:.0} rps_at_0.1pct_loss={:.0} (server CPU {:.1} s over the \
             {secs:.0} s both took turns in); load average {}",
            s.label,
            s.f.max_rps,
            s.f.rps_at_loss,
            cpu_s,
            load_average()
        );
    }
    let rps: Vec<&Figures> = subjects.iter().map(|s| &s.f).collect();
    if let [one, two] = rps[..] {
        let r = |a: f64, b: f64| ratio(a, b).map_or("n/a".to_owned(), |x| format!("{x:.2}"));
        println!(
            "ratio_workers=<2/1> max_rps={} rps_at_0.1pct_loss={}",
            r(two.max_rps, one.max_rps),
            r(two.rps_at_loss, one.rps_at_loss)
        );
    }
    Ok(())
}

/// The first three fields of `/proc/loadavg` (other work on the machine
/// skews every figure: runs compare servers within one invocation).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `getconf CLK_TCK` (100 when it cannot be read).
fn clock_ticks_per_s() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_cpu_ticks() {
        let stat = "1234 (chrony d) S 1 1234 1234 0 -1 4194560 300 0 0 0 57 31 0 0 20 0 1 0 \
                    100 10000000 500 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(88));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(cpu_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn reads_own_proc_files() {
        let pid = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        assert!(cpu_ticks(&stat).is_some());
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        assert!(vm_rss_kib(&status).is_some_and(|k| k > 0));
        assert!(cpus_allowed(&status).is_some());
        assert!(crate::scenario::cap_mask(&status, "CapEff").is_some());
    }

    #[test]
    fn median_and_ratio() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut []), None);
        assert_eq!(ratio(1.0, 2.0), Some(0.5));
        assert_eq!(ratio(1.0, 0.0), None);
    }

    #[test]
    fn bisection_finds_the_highest_passing_rate() {
        let search = |lo: f64, hi: f64, steps: u32, pass: &dyn Fn(f64) -> bool| {
            let mut b = Bisection::new(lo, hi, steps);
            let mut probes = Vec::new();
            while let Some(r) = b.next_rate() {
                probes.push(r);
                b.record(pass(r), r * 0.99);
            }
            (b.best(), probes.len())
        };
        let ((rate, fig), probes) = search(0.0, 1000.0, 6, &|r| r <= 300.0);
        assert_eq!(probes, 6);
        assert!(rate <= 300.0 && rate > 300.0 - 1000.0 / 64.0, "{rate}");
        assert!((fig - rate * 0.99).abs() < 1e-9);
        let ((none, _), _) = search(10.0, 20.0, 3, &|_| false);
        assert_eq!(none, 0.0);
    }

    #[test]
    fn server_lists() {
        assert_eq!(
            Kind::parse_list("reflector, strata,chronyd").expect("list"),
            vec![Kind::Reflector, Kind::Strata, Kind::Chronyd]
        );
        assert_eq!(
            Kind::parse_list(DEFAULT_SERVERS).expect("default list"),
            vec![Kind::Reflector, Kind::Strata, Kind::Chronyd, Kind::Ntpsec]
        );
        assert!(Kind::parse_list("ntpd").is_err());
    }

    #[test]
    fn configs_hold_the_address_and_rate_limits() {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 12345);
        let s = strata_config(Path::new("/tmp/x"), addr, 2);
        assert!(s.contains("address = \"127.0.0.1:12345\""));
        assert!(s.contains("backend = \"virtual\""));
        assert!(s.contains("stratum = 1"));
        assert!(s.contains("[rate-limit]\ninterval = \"1ms\""));
        assert!(s.contains("[responder]\nworkers = 2\n"));
        let parsed: toml::Table = s.parse().expect("stratad config is TOML");
        assert!(parsed.contains_key("rate-limit") && parsed.contains_key("responder"));
        let c = chronyd_config(Path::new("/tmp/x/chrony"), addr);
        assert!(c.contains("port 12345\n") && c.contains("local stratum 1\n"));
        assert!(c.contains("cmdport 0\n") && c.contains("ratelimit interval -10 burst 255\n"));
        let n = ntpsec_config(Path::new("/tmp/x/ntpsec"), addr);
        assert_eq!(n.lines().next(), Some("disable ntp"));
        for line in [
            "interface listen 127.0.0.1",
            "restrict default ignore",
            "logfile /tmp/x/ntpsec/ntpd.log",
        ] {
            assert!(n.lines().any(|l| l == line), "{line:?} in\n{n}");
        }
        assert!(!n.contains("limited"), "ntpsec cannot match the limits");
    }

    #[test]
    fn generator_clients_stay_under_the_limits() {
        // 400,000 requests/s over the generator's sockets is each client's
        // rate at most; both limits must be well above it.
        let per_client = 400_000.0 / to_f64(u64::try_from(GEN_SOCKETS).expect("usize"));
        assert!(per_client * 2.0 < 1000.0, "strata: 1 ms interval");
        assert!(per_client * 2.0 < 1024.0, "chronyd: 2^-10 s interval");
    }
}
