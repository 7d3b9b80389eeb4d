//! The `ops` scenario: operating strata — reload, drift file, metrics,
//! trace and sd_notify — in network namespaces.
//!
//! Six namespaces on one bridge `lan` (10.200.9.0/24):
//!
//! ```text
//!  s1 (.1)  strata, stratum 1 (local reference)
//!  chrony (.2)  chronyd -x, client of s1, serves the lan        → stratum 2
//!  mid (.3)  strata, client of chrony                            → stratum 3
//!  leaf (.4)  strata, client of mid, [metrics] on .4:9975        → stratum 4
//!  cli (.5)  strata, client of s1 (virtual clock 300 ms off, +40 ppm)
//!  notify  strata alone, started with $NOTIFY_SOCKET
//! ```
//!
//! In order, each step with a bounded wait:
//!
//! 1. **sd_notify**: `notify`'s stratad runs with `NOTIFY_SOCKET` naming a
//!    unix datagram socket this check holds; `READY=1` must arrive within
//!    [`NOTIFY_TIMEOUT`], and `STOPPING=1` after a SIGTERM.
//! 2. **Reload**: once `cli`'s source s1 has reach 377, its file gains a
//!    second source (chronyd) and it gets SIGHUP: the new source appears and
//!    s1's reach register is still full (its history was kept: the top bit
//!    is set at the first look, and it reads 377). Then a file with a syntax
//!    error and another SIGHUP: the daemon logs "reload rejected", keeps
//!    running both sources, and s1 still reads 377.
//! 3. **Drift file**: `cli` converges (synchronised, frequency within
//!    1 ppm of −40), is stopped (the drift file is written at shutdown) and
//!    started again: its frequency right after start is the saved one
//!    (within [`DRIFT_TOLERANCE_PPM`]), before any sample could move it.
//! 4. **Metrics**: `GET /metrics` from inside `leaf`'s namespace shows the
//!    per-instance counters and `leaf`'s association to `mid` with reach 255
//!    and stratum 3, and the system stratum 4.
//! 5. **Trace**: `stratactl trace` on `leaf` follows mid (3) → chronyd (2)
//!    → s1 (1) with those addresses and ends at stratum 1.
//!
//! chronyd is started with `-x` by the interop helper, which confirms its
//! "clock control disabled" log line and that it holds no `CAP_SYS_TIME`.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixDatagram,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Deserialize;

use super::{config::stratum1, guard, interop, Outcome, Run, Scenario};

/// The longest wait for `READY=1`.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest wait for `cli`'s source to reach 377 (before and after a reload).
pub const REACH_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait for `cli`'s frequency to lock.
pub const DRIFT_TIMEOUT: Duration = Duration::from_secs(150);
/// How far the frequency right after a restart may be from the saved one, ppm.
pub const DRIFT_TOLERANCE_PPM: f64 = 0.5;
/// The longest wait for the chain s1 ← chronyd ← mid ← leaf to settle.
pub const CHAIN_TIMEOUT: Duration = Duration::from_secs(150);

const S1: &str = "10.200.9.1";
const CHRONY: &str = "10.200.9.2";
const MID: &str = "10.200.9.3";
const METRICS: &str = "10.200.9.4:9975";

const MID_CONFIG: &str = r#"
[clock]
backend = "virtual"

[[server]]
address = "10.200.9.2:123"
minpoll = -1
maxpoll = 0
iburst = true

[[listen]]
address = "10.200.9.3:123"
"#;

const LEAF_CONFIG: &str = r#"
[clock]
backend = "virtual"

[[server]]
address = "10.200.9.3:123"
minpoll = -1
maxpoll = 0
iburst = true

[metrics]
listen = "10.200.9.4:9975"
"#;

/// `cli` before the reload: one source.
const CLI_CONFIG: &str = r#"
[clock]
backend = "virtual"
initial-offset = "300ms"
frequency-error-ppm = 40.0

# Shortened for the scenario: step the 300 ms start offset after 2 s.
[discipline]
stepout = "2s"

[[server]]
address = "10.200.9.1:123"
minpoll = -2
maxpoll = -1
iburst = true
"#;

/// What the reload adds to [`CLI_CONFIG`]: chronyd as a second source.
const CLI_SECOND_SOURCE: &str = r#"
[[server]]
address = "10.200.9.2:123"
minpoll = -2
maxpoll = -1
"#;

/// A file the reload must reject (a table header without its `]`).
const BROKEN_CONFIG: &str = "[clock\nbackend = \"virtual\"\n";

const NOTIFY_CONFIG: &str = r#"
[clock]
backend = "virtual"
"#;

/// chronyd: a client of s1 serving the lan.
fn chrony_directives() -> String {
    format!("server {S1} iburst minpoll -2 maxpoll 0\nallow 10.200.0.0/16\nport 123\n")
}

/// The scenario; see the module doc.
pub fn ops() -> Scenario {
    Scenario::new(
        "ops",
        "reload (good, bad), drift file across a restart, metrics, trace over chronyd, sd_notify",
        check,
    )
    .daemon("s1", stratum1(&format!("{S1}:123")))
    .bare("chrony")
    .daemon("mid", MID_CONFIG)
    .daemon("leaf", LEAF_CONFIG)
    .bare("cli")
    .bare("notify")
    .on_lan("s1", "10.200.9.1/24")
    .on_lan("chrony", "10.200.9.2/24")
    .on_lan("mid", "10.200.9.3/24")
    .on_lan("leaf", "10.200.9.4/24")
    .on_lan("cli", "10.200.9.5/24")
}

/// The summary line's values, filled in as the steps run.
#[derive(Debug, Default)]
struct Figures {
    values: Vec<(&'static str, String)>,
}

impl Figures {
    fn push(&mut self, key: &'static str, value: impl ToString) {
        self.values.push((key, value.to_string()));
    }
}

fn check(run: &Run<'_>) -> Result<Outcome> {
    let mut figures = Figures::default();
    let result = steps(run, &mut figures);
    Ok(Outcome::of(&result, figures.values))
}

fn steps(run: &Run<'_>, figures: &mut Figures) -> Result<()> {
    let chronyd = interop::find_program("chronyd")?;
    interop::start_chronyd(run, &chronyd, "chrony", &chrony_directives())?;
    figures.push("chronyd_x", "confirmed");
    let started = Instant::now();

    let ready_ms = sd_notify(run)?;
    figures.push("notify_ready_ms", ready_ms);

    let cli = run.start_stratad("cli", CLI_CONFIG)?;
    let (kept_first, kept) = reload(run)?;
    figures.push("reload_reach_first", format!("{kept_first:o}"));
    figures.push("reload_reach", format!("{kept:o}"));
    figures.push("bad_reload", "rejected");

    let (locked, saved, restarted) = drift(run, cli)?;
    figures.push("drift_locked_ppm", format!("{locked:.3}"));
    figures.push("drift_saved_ppm", format!("{saved:.3}"));
    figures.push("drift_restart_ppm", format!("{restarted:.3}"));

    let chain_s = wait_chain(run, started)?;
    figures.push("chain_s", format!("{chain_s:.1}"));

    let (series, reach, stratum) = metrics(run)?;
    figures.push("metrics_series", series);
    figures.push("metrics_reach", reach);
    figures.push("metrics_stratum", stratum);

    let hops = trace(run)?;
    figures.push("trace", hops);
    Ok(())
}

/// Step 1: starts a stratad with `$NOTIFY_SOCKET`; returns how long `READY=1` took (ms).
fn sd_notify(run: &Run<'_>) -> Result<u128> {
    let socket = run.dir.join("notify.sock");
    let listener = UnixDatagram::bind(&socket)
        .with_context(|| format!("bind the notify socket {}", socket.display()))?;
    let file = run.write_config("notify", NOTIFY_CONFIG)?;
    let env = format!("NOTIFY_SOCKET={}", socket.display());
    let started = Instant::now();
    let stratad = run.bins.stratad.display().to_string();
    let file = file.display().to_string();
    let pid = run.spawn_in(
        "notify",
        "stratad",
        Path::new("/usr/bin/env"),
        &[&env, &stratad, "-c", &file],
    )?;
    let ready = receive_until(&listener, started + NOTIFY_TIMEOUT, "READY=1")
        .context("no READY=1 on $NOTIFY_SOCKET")?;
    let ready_ms = started.elapsed().as_millis();
    ensure!(
        ready.contains("STATUS="),
        "READY=1 without a STATUS line: {ready:?}"
    );
    ensure!(
        run.exit_status(pid).is_none(),
        "stratad exited after READY=1"
    );
    run.stop(pid)?;
    receive_until(&listener, Instant::now() + NOTIFY_TIMEOUT, "STOPPING=1")
        .context("no STOPPING=1 after SIGTERM")?;
    Ok(ready_ms)
}

/// Reads notifications until one contains `want` or `deadline` passes;
/// returns that datagram.
fn receive_until(listener: &UnixDatagram, deadline: Instant, want: &str) -> Result<String> {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(!left.is_zero(), "nothing with {want:?} (got {seen:?})");
        listener.set_read_timeout(Some(left))?;
        match listener.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == want) {
                    return Ok(msg);
                }
                seen.push(msg);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("receive a notification"),
        }
    }
}

/// `cli`'s reach register for the source at `ip`, if it has that session.
fn reach_of(run: &Run<'_>, ip: &str) -> Result<Option<u8>> {
    let want = format!("{ip}:123");
    Ok(run
        .sessions("cli")?
        .into_iter()
        .find(|s| s.address == want)
        .and_then(|s| s.reach))
}

/// `kill -HUP` to `cli`'s stratad.
fn sighup(pid: u32) -> Result<()> {
    guard::run_cmd(Command::new("kill").args(["-s", "HUP", &pid.to_string()])).map(drop)
}

/// Step 2: a good reload keeps s1's state and adds chronyd; a bad one is
/// rejected. Returns s1's reach at the first look after the good reload
/// and once full again.
fn reload(run: &Run<'_>) -> Result<(u8, u8)> {
    guard::wait_until(REACH_TIMEOUT, Duration::from_millis(100), || {
        reach_of(run, S1).ok().flatten().filter(|r| *r == 0o377)
    })
    .context("cli's source s1 did not reach 377")?;
    let pid = run.stratad_pid("cli")?;

    run.write_config("cli", &format!("{CLI_CONFIG}{CLI_SECOND_SOURCE}"))?;
    sighup(pid)?;
    let first = guard::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let sessions = run.sessions("cli").ok()?;
        let has_new = sessions
            .iter()
            .any(|s| s.address == format!("{CHRONY}:123"));
        let s1 = sessions.iter().find(|s| s.address == format!("{S1}:123"))?;
        has_new.then_some(s1.reach.unwrap_or(0))
    })
    .context("the reload did not add chronyd as a second source")?;
    // A re-created association would start again from an empty register:
    // eight polls of history (the top bit) show the state was kept.
    ensure!(
        first & 0x80 != 0,
        "s1's reach register was reset by the reload ({first:o})"
    );
    let kept = guard::wait_until(REACH_TIMEOUT, Duration::from_millis(100), || {
        reach_of(run, S1).ok().flatten().filter(|r| *r == 0o377)
    })
    .with_context(|| format!("s1's reach does not read 377 after the reload (first {first:o})"))?;

    std::fs::write(run.node_dir("cli").join("strata.toml"), BROKEN_CONFIG)?;
    sighup(pid)?;
    let log = run.node_dir("cli").join("stratad.log");
    guard::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("reload rejected"))
    })
    .with_context(|| format!("no \"reload rejected\" in {}", log.display()))?;
    ensure!(
        run.exit_status(pid).is_none(),
        "stratad exited on a bad reload"
    );
    let sessions = run.sessions("cli")?;
    ensure!(
        sessions.len() == 2,
        "the old configuration no longer runs: {} sessions",
        sessions.len()
    );
    guard::wait_until(REACH_TIMEOUT, Duration::from_millis(100), || {
        reach_of(run, S1).ok().flatten().filter(|r| *r == 0o377)
    })
    .context("s1's reach does not read 377 after the rejected reload")?;
    // Restore a good file for the restart of step 3.
    run.write_config("cli", &format!("{CLI_CONFIG}{CLI_SECOND_SOURCE}"))?;
    Ok((first, kept))
}

/// Step 3: returns the locked frequency, the saved one and the one right
/// after the restart (ppm).
fn drift(run: &Run<'_>, pid: u32) -> Result<(f64, f64, f64)> {
    let locked = guard::wait_until(DRIFT_TIMEOUT, Duration::from_millis(250), || {
        let s = run.status("cli").ok()?;
        let f = s.frequency_ppm?;
        (s.synchronized && (f + 40.0).abs() < 1.0).then_some(f)
    })
    .context("cli's frequency did not lock to -40 ppm")?;
    run.stop(pid)?;
    let drift_file = run.node_dir("cli").join("drift");
    let saved: f64 = std::fs::read_to_string(&drift_file)
        .with_context(|| format!("no drift file {} after shutdown", drift_file.display()))?
        .trim()
        .parse()
        .context("the drift file is not a number")?;
    ensure!(
        (saved - locked).abs() < 1.0,
        "saved {saved} ppm, locked {locked} ppm"
    );
    let file = run.node_dir("cli").join("strata.toml");
    let file = file.display().to_string();
    let pid = run.spawn_in(
        "cli",
        "stratad-restarted",
        &run.bins.stratad,
        &["-c", &file],
    )?;
    let restarted =
        guard::try_wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            if let Some(status) = run.exit_status(pid) {
                bail!("the restarted stratad exited ({status})");
            }
            Ok(run.status("cli").ok().and_then(|s| s.frequency_ppm))
        })
        .context("the restarted stratad does not answer")?;
    ensure!(
        (restarted - saved).abs() <= DRIFT_TOLERANCE_PPM,
        "frequency {restarted} ppm right after the restart, {saved} ppm saved"
    );
    Ok((locked, saved, restarted))
}

/// Waits until `leaf` serves stratum 4 through mid; returns the seconds since `started`.
fn wait_chain(run: &Run<'_>, started: Instant) -> Result<f64> {
    guard::wait_until(CHAIN_TIMEOUT, Duration::from_millis(250), || {
        let mid = run.status("mid").ok()?;
        let leaf = run.status("leaf").ok()?;
        (mid.synchronized && mid.stratum == 3 && leaf.synchronized && leaf.stratum == 4)
            .then_some(())
    })
    .with_context(|| {
        let show = |n: &str| {
            run.status(n).map_or_else(
                |e| format!("{n}: {e:#}"),
                |s| format!("{n}: synchronized={} stratum={}", s.synchronized, s.stratum),
            )
        };
        format!(
            "the chain did not settle ({}; {})",
            show("mid"),
            show("leaf")
        )
    })?;
    Ok(started.elapsed().as_secs_f64())
}

/// `GET path` from inside namespace `ns` (a helper thread enters it; the
/// socket stays there); returns the whole response. Bounded: 5 s per
/// read or write, at most 1 MiB.
fn http_get_in(ns: &str, addr: SocketAddr, path: &str) -> Result<String> {
    let netns = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("open namespace {ns}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<String> {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("enter namespace {ns}"))?;
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .with_context(|| format!("connect to {addr}"))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.set_write_timeout(Some(Duration::from_secs(5)))?;
                write!(
                    stream,
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                )?;
                let mut response = Vec::new();
                stream.take(1 << 20).read_to_end(&mut response)?;
                Ok(String::from_utf8_lossy(&response).into_owned())
            })
            .join()
            .map_err(|_| anyhow!("the HTTP helper thread panicked"))?
    })
}

/// The value of the series `name{labels}` (labels as the exposition writes
/// them, or empty) in an exposition text.
fn series(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Step 4: returns the number of series, leaf's reach of mid and mid's stratum.
fn metrics(run: &Run<'_>) -> Result<(usize, f64, f64)> {
    let addr: SocketAddr = METRICS.parse()?;
    let assoc = format!("instance=\"default\",address=\"{MID}:123\"");
    let mut last = String::new();
    let found = guard::wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        last = http_get_in(&run.ns("leaf"), addr, "/metrics").unwrap_or_else(|e| format!("{e:#}"));
        let reach = series(&last, "strata_association_reach", &assoc)?;
        (reach == 255.0).then_some(reach)
    });
    let reach = found.with_context(|| {
        format!(
            "no strata_association_reach{{{assoc}}} 255 in /metrics of leaf: {}",
            last.lines().take(60).collect::<Vec<_>>().join(" | ")
        )
    })?;
    let text = last;
    ensure!(
        text.starts_with("HTTP/1.1 200"),
        "metrics answered {:?}",
        text.lines().next()
    );
    let stratum = series(&text, "strata_association_stratum", &assoc)
        .context("no association stratum series")?;
    ensure!(stratum == 3.0, "leaf sees mid at stratum {stratum}");
    let received = series(
        &text,
        "strata_packets_received_total",
        "instance=\"default\"",
    )
    .context("no received counter for the default instance")?;
    let sent = series(&text, "strata_packets_sent_total", "instance=\"default\"")
        .context("no sent counter for the default instance")?;
    ensure!(
        received > 0.0 && sent >= received,
        "received {received}, sent {sent}"
    );
    let system = series(&text, "strata_system_stratum", "").context("no system stratum")?;
    ensure!(system == 4.0, "leaf serves stratum {system}");
    let synchronized =
        series(&text, "strata_system_synchronized", "").context("no synchronized series")?;
    ensure!(synchronized == 1.0, "leaf not synchronized in /metrics");
    let count = text.lines().filter(|l| l.starts_with("strata_")).count();
    Ok((count, reach, stratum))
}

/// `stratactl trace --json`, the fields this check reads.
#[derive(Debug, Deserialize)]
struct TraceOut {
    instance: String,
    hops: Vec<Hop>,
    end: String,
}

#[derive(Debug, Deserialize)]
struct Hop {
    address: String,
    stratum: u8,
    refid: String,
}

/// Step 5: returns the hops as `address/stratum,…`.
fn trace(run: &Run<'_>) -> Result<String> {
    let want = [(MID, 3u8), (CHRONY, 2), (S1, 1)];
    let mut last = String::new();
    let got = guard::wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        let out = run
            .stratactl("leaf", "trace")
            .unwrap_or_else(|e| format!("{e:#}"));
        last = out.clone();
        let t: TraceOut = serde_json::from_str(&out).ok()?;
        let shape: Vec<(String, u8)> = t
            .hops
            .iter()
            .map(|h| (h.address.clone(), h.stratum))
            .collect();
        let expected: Vec<(String, u8)> = want
            .iter()
            .map(|(ip, st)| (format!("{ip}:123"), *st))
            .collect();
        (shape == expected).then_some(t)
    })
    .with_context(|| format!("trace from leaf is not mid(3) → chronyd(2) → s1(1): {last}"))?;
    ensure!(got.instance == "default", "trace instance {}", got.instance);
    ensure!(
        got.end.starts_with("stratum 1"),
        "trace ended with {:?}",
        got.end
    );
    // Each hop's reference ID names the next hop; s1 serves its local clock.
    ensure!(
        got.hops[0].refid == CHRONY && got.hops[1].refid == S1 && got.hops[2].refid == "LOCL",
        "reference IDs {:?}",
        got.hops.iter().map(|h| &h.refid).collect::<Vec<_>>()
    );
    Ok(got
        .hops
        .iter()
        .map(|h| format!("{}/{}", h.address, h.stratum))
        .collect::<Vec<_>>()
        .join(","))
}

#[cfg(test)]
mod tests {
    use super::super::config;
    use super::*;

    #[test]
    fn scenario_is_well_formed_and_configs_render() {
        let sc = ops();
        sc.validate().expect("well-formed");
        let ctx = config::RenderCtx {
            prefix: "st1a2b-",
            run_dir: Path::new("/r"),
            node_dir: Path::new("/r/n"),
        };
        for template in [
            MID_CONFIG,
            LEAF_CONFIG,
            CLI_CONFIG,
            NOTIFY_CONFIG,
            &format!("{CLI_CONFIG}{CLI_SECOND_SOURCE}"),
        ] {
            config::render(template, &ctx).expect("renders");
        }
        assert!(
            config::render(BROKEN_CONFIG, &ctx).is_err(),
            "the bad file must be bad"
        );
        for ip in [S1, CHRONY, MID, "10.200.9.4"] {
            assert!(sc.addrs.iter().any(|a| a.cidr == format!("{ip}/24")));
        }
        assert!(LEAF_CONFIG.contains(METRICS) && METRICS.starts_with("10.200.9.4:"));
        assert!(chrony_directives().contains(&format!("server {S1} ")));
    }

    #[test]
    fn reads_series_from_exposition_text() {
        let text = "# HELP strata_system_stratum Stratum served.\n\
                    # TYPE strata_system_stratum gauge\n\
                    strata_system_stratum 4\n\
                    strata_association_reach{instance=\"default\",address=\"10.200.9.3:123\"} 255\n\
                    strata_packets_received_total{instance=\"default\"} 17\n";
        assert_eq!(series(text, "strata_system_stratum", ""), Some(4.0));
        assert_eq!(
            series(
                text,
                "strata_association_reach",
                "instance=\"default\",address=\"10.200.9.3:123\""
            ),
            Some(255.0)
        );
        assert_eq!(
            series(
                text,
                "strata_packets_received_total",
                "instance=\"default\""
            ),
            Some(17.0)
        );
        assert_eq!(
            series(text, "strata_packets_received", "instance=\"default\""),
            None
        );
        assert_eq!(series(text, "strata_system", ""), None);
    }
}
