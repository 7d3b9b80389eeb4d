//! `cargo xtask bench accuracy`: strata against chronyd on the same impaired path.
//!
//! Topology (one scenario per [`Setting`], built by the scenario framework):
//!
//! ```text
//!  srv (10.200.8.2) ── veth ── relay (10.200.8.1 | 10.200.9.1) ── bridge lan ─┬─ obsst (10.200.9.2)
//!                                                                              └─ obsch (10.200.9.3)
//! ```
//!
//! * `srv` runs stratad with a virtual clock at offset 0 (the host timescale)
//!   as a stratum-1 local reference.
//! * `relay` runs `xtask relay` (see [`super::relay`]) under `chrt -f` (real-time
//!   priority, for prompt wake-ups on a busy machine): both observers send to
//!   10.200.9.1:123 and it forwards to the server with the setting's delay,
//!   jitter, asymmetry and loss, from one upstream socket per observer.
//! * `obsst` runs stratad with the `observe` clock backend (it never adjusts
//!   any clock) and one `[[server]]`: the relay.
//! * `obsch` runs `chronyd -x` (the interop scenario's launcher: `-x -d -f`,
//!   no `CAP_SYS_TIME`) with `server 10.200.9.1` and the same poll range.
//!
//! All namespaces share the host clock, so the true offset is 0 and each
//! observer's estimate of its own clock's offset, less half the path's
//! asymmetry (which no NTP client can see; WAN only), is its error:
//!
//! * strata: `stratactl status --json` `estimate.offset_s`, the
//!   discipline's smoothed offset now (RFC 5905 theta, reference − local),
//!   the counterpart of chronyd's "System time". The discipline knows an
//!   observe-only clock is never steered, so this is its estimate of the
//!   host clock against the server. The last raw combined offset
//!   (`offset_s`) is printed as a diagnostic (`strata_raw_rms_us`).
//! * chronyd: `chronyc tracking` "System time" (CSV field 5). With `-x`
//!   chronyd keeps its corrections in software (its null clock driver): each
//!   update's offset is accrued at once into the correction between the host
//!   clock and chronyd's own time, and "System time" is that correction,
//!   positive when the host clock is behind chronyd's time, the same sense as
//!   theta. "Last offset" (field 6) is the offset measured at the last update
//!   and is already included in "System time", so adding it would count it
//!   twice; the bench prints the sum as a diagnostic (`chrony_plus_last_rms_us`)
//!   only.
//!
//! After a warm-up (at least [`MIN_WARMUP`], and until both report
//! synchronised, at most [`WARMUP_TIMEOUT`]) both estimates are sampled once
//! a second for the requested time; the bench prints RMS and max |error| per
//! observer and their ratio strata/chronyd.

use std::{
    path::Path,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use xshell::Shell;

use super::relay::{self, Impairment, Jitter};
use crate::scenario::{
    self, guard,
    interop::{self, Chronyd, Tracking},
    Addr, End, Link, Node, Outcome, Run, Scenario,
};

/// The least warm-up before sampling starts.
pub const MIN_WARMUP: Duration = Duration::from_secs(60);
/// The longest wait for both observers to report synchronised.
pub const WARMUP_TIMEOUT: Duration = Duration::from_secs(240);
/// Default measurement length (after the warm-up).
pub const DEFAULT_SECONDS: u64 = 300;

/// The relay's SCHED_FIFO priority (`chrt -f`).
const RELAY_RT_PRIORITY: &str = "10";
/// The server's address (behind the relay).
const SERVER: &str = "10.200.8.2:123";
/// The relay's address for the observers.
const RELAY: &str = "10.200.9.1:123";

/// Seconds to measure, set once by [`cli`] for the scenario checks (a
/// [`scenario::Check`] is a plain `fn` and cannot capture it).
static SECONDS: OnceLock<u64> = OnceLock::new();

/// A path setting of the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// 50 µs one-way, normal jitter σ 10 µs, no asymmetry, no loss; polls 2^0..2^2 s.
    Lan,
    /// 20 ms one-way, exponential jitter mean 2 ms, 1 ms asymmetry, 1% loss; polls 2^0..2^4 s.
    Wan,
}

impl Setting {
    /// Parses `lan`, `wan` or `both`.
    pub fn parse_list(s: &str) -> Result<Vec<Setting>> {
        Ok(match s {
            "lan" => vec![Setting::Lan],
            "wan" => vec![Setting::Wan],
            "both" => vec![Setting::Lan, Setting::Wan],
            other => bail!("unknown setting {other:?} (lan, wan or both)"),
        })
    }

    /// The setting's name.
    pub fn name(self) -> &'static str {
        match self {
            Setting::Lan => "lan",
            Setting::Wan => "wan",
        }
    }

    /// What the relay does to the path.
    pub fn impairment(self) -> Impairment {
        match self {
            Setting::Lan => Impairment {
                delay_s: 50e-6,
                jitter: Jitter::Normal { sigma: 10e-6 },
                asym_s: 0.0,
                loss: 0.0,
            },
            Setting::Wan => Impairment {
                delay_s: 20e-3,
                jitter: Jitter::Exponential { mean: 2e-3 },
                asym_s: 1e-3,
                loss: 0.01,
            },
        }
    }

    /// `(minpoll, maxpoll)` of both observers.
    pub fn polls(self) -> (i8, i8) {
        match self {
            Setting::Lan => (0, 2),
            Setting::Wan => (0, 4),
        }
    }

    /// `xtask relay` arguments (without the program) for this setting.
    pub fn relay_args(self, max_seconds: u64, stats: &Path) -> Vec<String> {
        let imp = self.impairment();
        let (dist, scale_s) = match imp.jitter {
            Jitter::None => ("none", 0.0),
            Jitter::Normal { sigma } => ("normal", sigma),
            Jitter::Uniform { half_width } => ("uniform", half_width),
            Jitter::Exponential { mean } => ("exp", mean),
        };
        let us = |s: f64| format!("{:.0}", s * 1e6);
        [
            "relay",
            "--listen",
            RELAY,
            "--upstream",
            SERVER,
            "--delay-us",
            &us(imp.delay_s),
            "--jitter-us",
            &us(scale_s),
            "--jitter",
            dist,
            "--asym-us",
            &us(imp.asym_s),
            "--loss",
            &imp.loss.to_string(),
            "--seed",
            "1",
            "--max-seconds",
            &max_seconds.to_string(),
            "--max-packets",
            "1000000",
            "--stats",
            &stats.display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn strata_observer_config(self) -> String {
        let (min, max) = self.polls();
        format!(
            "[clock]\nbackend = \"observe\"\n\n[[server]]\naddress = \"{RELAY}\"\n\
             minpoll = {min}\nmaxpoll = {max}\niburst = true\n"
        )
    }

    fn chronyd_directives(self) -> String {
        let (min, max) = self.polls();
        let ip = RELAY.trim_end_matches(":123");
        format!("port 0\nserver {ip} iburst minpoll {min} maxpoll {max}\n")
    }
}

const SERVER_CONFIG: &str = r#"
[clock]
backend = "virtual"

[local-reference]
stratum = 1

[[listen]]
address = "10.200.8.2:123"
"#;

fn end(node: &'static str, ifname: &'static str) -> End {
    End { node, ifname }
}

/// The bench topology for `setting`; see the module doc.
pub fn scenario(setting: Setting) -> Scenario {
    let addr = |node, ifname, cidr| Addr {
        end: end(node, ifname),
        cidr,
    };
    let (name, check): (&'static str, scenario::Check) = match setting {
        Setting::Lan => ("bench-accuracy-lan", check_lan),
        Setting::Wan => ("bench-accuracy-wan", check_wan),
    };
    Scenario {
        name,
        about: "strata (observe) and chronyd -x behind one impairment relay",
        nodes: vec![
            Node {
                name: "srv",
                config: Some(SERVER_CONFIG.to_owned()),
            },
            Node {
                name: "relay",
                config: None,
            },
            Node {
                name: "obsst",
                config: Some(setting.strata_observer_config()),
            },
            Node {
                name: "obsch",
                config: None,
            },
        ],
        bridges: vec!["lan"],
        links: vec![
            Link::Veth(end("relay", "up0"), end("srv", "eth0")),
            Link::BridgePort {
                bridge: "lan",
                end: end("relay", "lan0"),
            },
            Link::BridgePort {
                bridge: "lan",
                end: end("obsst", "lan0"),
            },
            Link::BridgePort {
                bridge: "lan",
                end: end("obsch", "lan0"),
            },
        ],
        addrs: vec![
            addr("srv", "eth0", "10.200.8.2/24"),
            addr("relay", "up0", "10.200.8.1/24"),
            addr("relay", "lan0", "10.200.9.1/24"),
            addr("obsst", "lan0", "10.200.9.2/24"),
            addr("obsch", "lan0", "10.200.9.3/24"),
        ],
        check,
    }
}

fn check_lan(run: &Run<'_>) -> Result<Outcome> {
    measure(run, Setting::Lan)
}

fn check_wan(run: &Run<'_>) -> Result<Outcome> {
    measure(run, Setting::Wan)
}

/// Error samples of one observer, seconds.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// One estimate per second (missing seconds are left out).
    pub samples: Vec<f64>,
}

impl Series {
    /// Root mean square, seconds (0 when empty).
    pub fn rms(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let n = f64::from(u32::try_from(self.samples.len()).unwrap_or(u32::MAX));
        (self.samples.iter().map(|e| e * e).sum::<f64>() / n).sqrt()
    }

    /// Mean, seconds (0 when empty): the part of the error that is bias.
    pub fn mean(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let n = f64::from(u32::try_from(self.samples.len()).unwrap_or(u32::MAX));
        self.samples.iter().sum::<f64>() / n
    }

    /// Largest |error|, seconds (0 when empty).
    pub fn max_abs(&self) -> f64 {
        self.samples.iter().fold(0.0, |m, e| m.max(e.abs()))
    }
}

/// `a / b`, or `None` when `b` is 0.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
}

/// The figures of one setting.
#[derive(Debug, Clone)]
pub struct Report {
    /// The setting.
    pub setting: Setting,
    /// strata's errors (its smoothed estimate).
    pub strata: Series,
    /// strata's last raw combined offset (diagnostic only).
    pub strata_raw: Series,
    /// chronyd's errors ("System time").
    pub chrony: Series,
    /// chronyd's "System time" + "Last offset" (diagnostic only).
    pub chrony_plus_last: Series,
}

impl Report {
    /// The summary line: `bench accuracy SETTING: strata_rms_us=… … ratio_max=…`.
    pub fn summary_line(&self) -> String {
        let us = |s: f64| format!("{:.1}", s * 1e6);
        let r = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), |v| format!("{v:.2}"));
        format!(
            "bench accuracy {}: strata_rms_us={} chrony_rms_us={} ratio_rms={} \
             strata_max_us={} chrony_max_us={} ratio_max={}",
            self.setting.name(),
            us(self.strata.rms()),
            us(self.chrony.rms()),
            r(ratio(self.strata.rms(), self.chrony.rms())),
            us(self.strata.max_abs()),
            us(self.chrony.max_abs()),
            r(ratio(self.strata.max_abs(), self.chrony.max_abs())),
        )
    }

    /// One line per observer plus the ratio line.
    pub fn observer_lines(&self) -> Vec<String> {
        let name = self.setting.name();
        let line = |who: &str, s: &Series| {
            format!(
                "bench accuracy {name}: {who}: samples={} rms_us={:.1} max_us={:.1} mean_us={:.1}",
                s.samples.len(),
                s.rms() * 1e6,
                s.max_abs() * 1e6,
                s.mean() * 1e6
            )
        };
        let r = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), |v| format!("{v:.2}"));
        vec![
            line("strata", &self.strata),
            line("chronyd", &self.chrony),
            format!(
                "bench accuracy {name}: ratio=<strata/chronyd> rms={} max={} \
                 (chrony_plus_last_rms_us={:.1}, strata_raw_rms_us={:.1}, diagnostic)",
                r(ratio(self.strata.rms(), self.chrony.rms())),
                r(ratio(self.strata.max_abs(), self.chrony.max_abs())),
                self.chrony_plus_last.rms() * 1e6,
                self.strata_raw.rms() * 1e6
            ),
        ]
    }
}

/// The fields of strata's `stratactl status --json` the bench samples.
#[derive(Debug, serde::Deserialize)]
struct ObserverStatus {
    /// The last raw combined offset.
    #[serde(default)]
    offset_s: Option<f64>,
    /// The frequency estimate (ppm).
    #[serde(default)]
    frequency_ppm: Option<f64>,
    /// The discipline's smoothed estimate, once it has one.
    #[serde(default)]
    estimate: Option<ObserverEstimate>,
}

/// `estimate` of [`ObserverStatus`].
#[derive(Debug, serde::Deserialize)]
struct ObserverEstimate {
    /// The smoothed offset now (s).
    offset_s: f64,
}

/// Whether chronyd reports itself synchronised to the relay's server.
fn chrony_synced(t: &Tracking) -> bool {
    t.stratum == 2 && t.leap != "Not synchronised"
}

fn tracking(chronyc: &Path, d: &Chronyd) -> Result<Tracking> {
    interop::chronyc(chronyc, d, "tracking").and_then(|o| Tracking::parse(&o))
}

/// Runs one setting inside a built scenario: relay, chronyd, warm-up, sampling.
fn measure(run: &Run<'_>, setting: Setting) -> Result<Outcome> {
    let seconds = *SECONDS.get().unwrap_or(&DEFAULT_SECONDS);
    let chronyd_bin = interop::find_program("chronyd")?;
    let chronyc_bin = interop::find_program("chronyc")?;
    let name = setting.name();

    let stats_file = run.node_dir("relay").join("stats");
    std::fs::create_dir_all(run.node_dir("relay"))?;
    let budget = WARMUP_TIMEOUT.as_secs() + seconds + 60;
    let mut args = setting.relay_args(budget, &stats_file);
    // Real-time priority (SCHED_FIFO) keeps the relay's wake-ups prompt on
    // a busy machine; it sleeps between datagrams and spins at most
    // SPIN_WINDOW per datagram, and the kernel's RT throttling bounds it anyway.
    let program = match interop::find_program("chrt") {
        Ok(chrt) => {
            let xtask = run.bins.xtask.display().to_string();
            args.splice(0..0, ["-f".to_owned(), RELAY_RT_PRIORITY.to_owned(), xtask]);
            chrt
        }
        Err(_) => {
            println!("bench accuracy {name}: no chrt: the relay runs at normal priority");
            run.bins.xtask.clone()
        }
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let relay_pid = run.spawn_in("relay", "relay", &program, &args)?;
    guard::try_wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        if let Some(status) = run.exit_status(relay_pid) {
            bail!("relay exited early ({status})");
        }
        Ok(stats_file.exists().then_some(()))
    })
    .context("relay did not start")?;

    let chronyd =
        interop::start_chronyd(run, &chronyd_bin, "obsch", &setting.chronyd_directives())?;
    let started = Instant::now();
    println!(
        "bench accuracy {name}: warming up (at least {MIN_WARMUP:?}, until both are synchronised)"
    );
    let warm = guard::try_wait_until(WARMUP_TIMEOUT, Duration::from_secs(1), || {
        if let Some(status) = run.exit_status(relay_pid) {
            bail!("relay exited ({status})");
        }
        let strata_ok = run
            .status("obsst")
            .is_ok_and(|s| s.synchronized && s.offset_s.is_some());
        let chrony_ok = tracking(&chronyc_bin, &chronyd).is_ok_and(|t| chrony_synced(&t));
        Ok((strata_ok && chrony_ok && started.elapsed() >= MIN_WARMUP).then_some(()))
    });
    if let Err(err) = warm {
        let status = run.status("obsst").map(|s| format!("{s:?}"));
        let track = tracking(&chronyc_bin, &chronyd).map(|t| format!("{t:?}"));
        bail!("warm-up: {err:#}; strata: {status:?}; chronyd: {track:?}");
    }
    println!(
        "bench accuracy {name}: synchronised after {:.0} s; sampling every second for {seconds} s",
        started.elapsed().as_secs_f64()
    );

    let mut report = Report {
        setting,
        strata: Series::default(),
        strata_raw: Series::default(),
        chrony: Series::default(),
        chrony_plus_last: Series::default(),
    };
    // The asymmetry no NTP client can see: up takes asym/2 longer than
    // down, so every estimate of theta reads asym/2 high. Errors are taken
    // less it.
    let bias = setting.impairment().asym_s / 2.0;
    let mut freq_ppm = Vec::new();
    let t0 = Instant::now();
    for i in 0..seconds {
        // Pacing of a periodic sampler (not waiting for a condition).
        let due = t0 + Duration::from_secs(i);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if let Ok(s) = run.query::<ObserverStatus>("obsst", "status") {
            if let Some(e) = s.estimate {
                report.strata.samples.push(e.offset_s - bias);
            }
            report
                .strata_raw
                .samples
                .extend(s.offset_s.map(|o| o - bias));
            freq_ppm.extend(s.frequency_ppm);
        }
        if let Ok(t) = tracking(&chronyc_bin, &chronyd) {
            if chrony_synced(&t) {
                report.chrony.samples.push(t.system_time_s - bias);
                report
                    .chrony_plus_last
                    .samples
                    .push(t.system_time_s + t.last_offset_s - bias);
            }
        }
    }
    let relay_stats = std::fs::read_to_string(&stats_file)
        .context("read relay stats")
        .and_then(|text| relay::Stats::parse(&text))?;

    if let Ok(raw) = interop::chronyc(&chronyc_bin, &chronyd, "tracking") {
        println!("bench accuracy {name}: chronyc -c tracking: {}", raw.trim());
    }
    if let Ok(sessions) = run.sessions("obsst") {
        for s in sessions {
            println!("bench accuracy {name}: strata session: {}", s.summary());
        }
    }
    for line in report.observer_lines() {
        println!("{line}");
    }
    println!("bench accuracy {name}: {relay_stats}");
    if let (Some(first), Some(last)) = (freq_ppm.first(), freq_ppm.last()) {
        println!("bench accuracy {name}: strata frequency_ppm first={first:.3} last={last:.3}");
    }
    println!("{}", report.summary_line());

    let want = usize::try_from(seconds)?.saturating_mul(9);
    let enough = |s: &Series| s.samples.len().saturating_mul(10) >= want;
    let pass = enough(&report.strata) && enough(&report.chrony);
    let us = |s: f64| format!("{:.1}", s * 1e6);
    let r = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), |v| format!("{v:.2}"));
    Ok(Outcome {
        pass,
        values: vec![
            ("strata_samples", report.strata.samples.len().to_string()),
            ("chrony_samples", report.chrony.samples.len().to_string()),
            ("strata_rms_us", us(report.strata.rms())),
            ("chrony_rms_us", us(report.chrony.rms())),
            (
                "ratio_rms",
                r(ratio(report.strata.rms(), report.chrony.rms())),
            ),
            (
                "relay_sched_p50_us",
                format!("{:.1}", relay_stats.sched_p50_us),
            ),
            (
                "relay_sched_p99_us",
                format!("{:.1}", relay_stats.sched_p99_us),
            ),
        ],
    })
}

/// Options of `cargo xtask bench accuracy`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Settings to run, in order.
    pub settings: Vec<Setting>,
    /// Seconds to sample after the warm-up.
    pub seconds: u64,
}

/// `cargo xtask bench accuracy` (root only).
pub fn cli(sh: &Shell, opts: &Options) -> Result<()> {
    ensure!(opts.seconds > 0, "--seconds must be > 0");
    ensure!(
        SECONDS.set(opts.seconds).is_ok() || SECONDS.get() == Some(&opts.seconds),
        "bench seconds already set"
    );
    let scenarios: Vec<Scenario> = opts.settings.iter().map(|s| scenario(*s)).collect();
    let refs: Vec<&Scenario> = scenarios.iter().collect();
    let outcomes = scenario::run_scenarios(sh, &refs, scenario::Options::default())?;
    let failed: Vec<&str> = scenarios
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| !o.pass)
        .map(|(s, _)| s.name)
        .collect();
    ensure!(failed.is_empty(), "bench failed: {}", failed.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_describe_the_paths() {
        assert_eq!(
            Setting::parse_list("both").expect("both"),
            [Setting::Lan, Setting::Wan]
        );
        assert_eq!(Setting::parse_list("lan").expect("lan"), [Setting::Lan]);
        assert!(Setting::parse_list("moon").is_err());
        let wan = Setting::Wan.impairment();
        wan.validate().expect("valid");
        assert!((wan.delay_s - 0.020).abs() < 1e-12 && (wan.loss - 0.01).abs() < 1e-12);
        Setting::Lan.impairment().validate().expect("valid");
        let args = Setting::Lan.relay_args(100, Path::new("/r/stats"));
        let joined = args.join(" ");
        assert!(
            joined.contains("--delay-us 50 --jitter-us 10 --jitter normal --asym-us 0 --loss 0"),
            "{joined}"
        );
        let args = Setting::Wan
            .relay_args(100, Path::new("/r/stats"))
            .join(" ");
        assert!(
            args.contains(
                "--delay-us 20000 --jitter-us 2000 --jitter exp --asym-us 1000 --loss 0.01"
            ),
            "{args}"
        );
    }

    #[test]
    fn observers_use_the_same_poll_range_and_the_relay() {
        for s in [Setting::Lan, Setting::Wan] {
            let (min, max) = s.polls();
            let strata = s.strata_observer_config();
            let doc: toml::Table = strata.parse().expect("TOML");
            assert_eq!(doc["clock"]["backend"].as_str(), Some("observe"));
            assert_eq!(doc["server"][0]["address"].as_str(), Some(RELAY));
            assert_eq!(doc["server"][0]["minpoll"].as_integer(), Some(min.into()));
            assert_eq!(doc["server"][0]["maxpoll"].as_integer(), Some(max.into()));
            assert!(s.chronyd_directives().contains(&format!(
                "server 10.200.9.1 iburst minpoll {min} maxpoll {max}"
            )));
            scenario(s).validate().expect("well-formed");
        }
        assert!(SERVER_CONFIG.contains(SERVER));
    }

    #[test]
    fn series_figures_and_summary_line() {
        let s = Series {
            samples: vec![3e-6, -4e-6],
        };
        assert!((s.rms() - (12.5e-12f64).sqrt()).abs() < 1e-15);
        assert!((s.max_abs() - 4e-6).abs() < 1e-15);
        assert!((s.mean() + 0.5e-6).abs() < 1e-15);
        assert!(Series::default().rms().abs() < f64::EPSILON);
        assert_eq!(ratio(1.0, 0.0), None);
        let report = Report {
            setting: Setting::Lan,
            strata: Series {
                samples: vec![10e-6, -10e-6],
            },
            chrony: Series {
                samples: vec![5e-6, -5e-6],
            },
            chrony_plus_last: Series::default(),
            strata_raw: Series::default(),
        };
        assert_eq!(
            report.summary_line(),
            "bench accuracy lan: strata_rms_us=10.0 chrony_rms_us=5.0 ratio_rms=2.00 \
             strata_max_us=10.0 chrony_max_us=5.0 ratio_max=2.00"
        );
        assert!(report.observer_lines()[2].contains("ratio=<strata/chronyd> rms=2.00 max=2.00"));
    }

    #[test]
    fn chrony_sync_needs_stratum_two_and_a_leap_status() {
        let line = "0AC80801,10.200.8.2,2,1795634915.6,-0.000004254,-0.000002255,\
                    0.000002197,-0.686,-0.105,2.344,0.000036738,0.000004323,0.3,Normal\n";
        let t = Tracking::parse(line).expect("tracking");
        assert!(chrony_synced(&t));
        let unsynced = Tracking {
            leap: "Not synchronised".to_owned(),
            ..t.clone()
        };
        assert!(!chrony_synced(&unsynced));
        assert!(!chrony_synced(&Tracking { stratum: 0, ..t }));
    }
}
