//! `cargo xtask demo`: a two-hop NTP chain converging live in network namespaces.
//!
//! The demo is a [`Scenario`] run by the scenario runner (root only; it
//! builds `stratad`/`stratactl` first unless `$XTASK_BIN_DIR` is set, and a
//! [`Guard`](crate::scenario::Guard) tears everything down, also on Ctrl-C):
//!
//! ```text
//!  s1 ──────────────── c1 ──────────────── c2
//!  10.200.1.1/24      10.200.1.2/24
//!  stratum 1          10.200.2.1/24       10.200.2.2/24
//!  (local reference)  +300 ms, +30 ppm     −200 ms, −20 ppm
//! ```
//!
//! `s1` serves its (virtual) clock as stratum 1; `c1` is a client of `s1` and
//! serves on both links; `c2` is a client of `c1` only, so it reads time
//! through a second hop and must end at stratum 3. Every node runs a virtual
//! clock, so the host clock is never touched; its true error is measured
//! against the host clock by an NTP probe from inside its namespace.
//!
//! About once a second the demo redraws each node's sessions, stratum,
//! synchronisation state and true error (a full-screen view on a terminal, a
//! compact progress line otherwise). It passes once every client has been
//! synchronised at its expected stratum with |true error| < 1 ms for
//! [`SETTLE_TICKS`] ticks in a row, and fails after [`TIMEOUT`]. It ends
//! with a summary table and `demo: pass` or `demo: FAIL <reason>`.

use std::{
    fmt::Write as _,
    io::IsTerminal as _,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use xshell::Shell;

use crate::probe::Sample;
use crate::scenario::{
    self, wait_until, Addr, End, Link, Node, Outcome, Run, Scenario, Session, Status,
};

/// How long the clients get to synchronise.
pub const TIMEOUT: Duration = Duration::from_secs(90);
/// How many consecutive ticks every client must meet the goal.
pub const SETTLE_TICKS: u32 = 3;
/// The pause between two redraws.
const TICK: Duration = Duration::from_millis(800);
/// Probes per node and tick; the lowest-delay one counts.
const PROBES_PER_TICK: usize = 3;
/// The largest accepted |true error|, seconds.
const MAX_TRUE_ERROR_S: f64 = 1e-3;

/// `s1`: stratum 1 from its own (virtual) clock.
const S1_CONFIG: &str = r#"
[clock]
backend = "virtual"

[local-reference]
stratum = 1

[[listen]]
address = "10.200.1.1:123"
"#;

/// `c1`: a client of `s1` that also serves `c2` on a second link.
const C1_CONFIG: &str = r#"
[clock]
backend = "virtual"
initial-offset = "300ms"
frequency-error-ppm = 30.0

[discipline]
step-threshold = "128ms"
stepout = "2s"

[[server]]
address = "10.200.1.1:123"
minpoll = -2
maxpoll = 0
iburst = true

[[listen]]
address = "10.200.1.2:123"

[[listen]]
address = "10.200.2.1:123"
"#;

/// `c2`: a client of `c1` only (two hops from the reference).
const C2_CONFIG: &str = r#"
[clock]
backend = "virtual"
initial-offset = "-200ms"
frequency-error-ppm = -20.0

[discipline]
step-threshold = "128ms"
stepout = "2s"

[[server]]
address = "10.200.2.1:123"
minpoll = -2
maxpoll = 0
iburst = true

[[listen]]
address = "10.200.2.2:123"
"#;

/// What the demo knows about one node.
#[derive(Debug, Clone, Copy)]
struct NodeSpec {
    name: &'static str,
    /// An address the node serves on; probed for its true error.
    probe: &'static str,
    /// The stratum a client must reach; `None` for the reference.
    want_stratum: Option<u8>,
}

/// The demo's nodes, upstream first.
const NODES: [NodeSpec; 3] = [
    NodeSpec {
        name: "s1",
        probe: "10.200.1.1:123",
        want_stratum: None,
    },
    NodeSpec {
        name: "c1",
        probe: "10.200.1.2:123",
        want_stratum: Some(2),
    },
    NodeSpec {
        name: "c2",
        probe: "10.200.2.2:123",
        want_stratum: Some(3),
    },
];

fn end(node: &'static str, ifname: &'static str) -> End {
    End { node, ifname }
}

fn addr(node: &'static str, ifname: &'static str, cidr: &'static str) -> Addr {
    Addr {
        end: end(node, ifname),
        cidr,
    }
}

/// The demo topology as scenario data.
pub fn scenario() -> Scenario {
    Scenario {
        name: "demo",
        about: "s1 (stratum 1) <- c1 <- c2: a two-hop chain converging live",
        nodes: vec![
            Node {
                name: "s1",
                config: Some(S1_CONFIG.to_owned()),
            },
            Node {
                name: "c1",
                config: Some(C1_CONFIG.to_owned()),
            },
            Node {
                name: "c2",
                config: Some(C2_CONFIG.to_owned()),
            },
        ],
        bridges: vec![],
        links: vec![
            Link::Veth(end("s1", "eth0"), end("c1", "eth0")),
            Link::Veth(end("c1", "eth1"), end("c2", "eth0")),
        ],
        addrs: vec![
            addr("s1", "eth0", "10.200.1.1/24"),
            addr("c1", "eth0", "10.200.1.2/24"),
            addr("c1", "eth1", "10.200.2.1/24"),
            addr("c2", "eth0", "10.200.2.2/24"),
        ],
        check: demo_check,
    }
}

/// `cargo xtask demo`: runs the demo; an error when it fails or cannot run.
pub fn cli(sh: &Shell) -> Result<()> {
    if !scenario::is_root()? {
        bail!(
            "demo requires root: it creates network namespaces and veth links \
             (run it as root, e.g. `sudo -E cargo xtask demo`)"
        );
    }
    let sc = scenario();
    let outcomes = scenario::run_scenarios(sh, &[&sc], scenario::Options::default())?;
    let Some(outcome) = outcomes.first() else {
        bail!("the scenario runner returned no outcome");
    };
    if outcome.pass {
        println!("demo: pass");
        Ok(())
    } else {
        println!("demo: FAIL {}", fail_reason(outcome));
        bail!("demo failed")
    }
}

/// The reasons a failed outcome carries (check, runner or teardown).
fn fail_reason(outcome: &Outcome) -> String {
    let reasons: Vec<String> = outcome
        .values
        .iter()
        .filter(|(k, _)| matches!(*k, "reason" | "error" | "cleanup" | "leftover_netns"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if reasons.is_empty() {
        "(no reason recorded)".to_owned()
    } else {
        reasons.join(" ")
    }
}

/// One node as seen at one tick.
#[derive(Debug, Clone, Default)]
struct NodeView {
    status: Option<Status>,
    sessions: Vec<Session>,
    true_error_s: Option<f64>,
    /// Why something could not be read (stratactl or probe failure).
    problem: Option<String>,
}

impl NodeView {
    /// Whether this client meets the goal; `None` when it does, else why not.
    fn shortfall(&self, spec: &NodeSpec) -> Option<String> {
        let want = spec.want_stratum?;
        let Some(status) = &self.status else {
            return Some(format!(
                "no status ({})",
                self.problem.as_deref().unwrap_or("unknown")
            ));
        };
        if !status.synchronized {
            return Some(format!("not synchronised (stratum {})", status.stratum));
        }
        if status.stratum != want {
            return Some(format!("stratum {} (want {want})", status.stratum));
        }
        match self.true_error_s {
            None => Some(format!(
                "no true error ({})",
                self.problem.as_deref().unwrap_or("probe failed")
            )),
            Some(e) if e.abs() >= MAX_TRUE_ERROR_S => Some(format!(
                "|true error| {:.1} us >= {:.0} us",
                e.abs() * 1e6,
                MAX_TRUE_ERROR_S * 1e6
            )),
            Some(_) => None,
        }
    }
}

/// Reads one node: status, sessions and (once it serves synchronised time)
/// its true error.
fn observe_node(run: &Run<'_>, spec: &NodeSpec) -> NodeView {
    let mut problems = Vec::new();
    let status = run
        .status(spec.name)
        .map_err(|e| problems.push(format!("status: {e:#}")))
        .ok();
    let sessions = run
        .sessions(spec.name)
        .map_err(|e| problems.push(format!("sessions: {e:#}")))
        .ok()
        .unwrap_or_default();
    // An unsynchronised server answers with stratum 0, which the probe
    // rejects after waiting out its timeout: only probe synchronised nodes.
    let true_error_s = if status.as_ref().is_some_and(|s| s.synchronized) {
        best_probe(run, spec)
            .map_err(|e| problems.push(format!("probe: {e:#}")))
            .ok()
    } else {
        None
    };
    NodeView {
        status,
        sessions,
        true_error_s,
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

/// The true error of `spec`'s node from the lowest-delay one of
/// [`PROBES_PER_TICK`] probes (a late-scheduled probe reads T4 late, which
/// inflates both its delay and its error, so the shortest round trip is the
/// most truthful, as in NTP's own clock filter).
fn best_probe(run: &Run<'_>, spec: &NodeSpec) -> Result<f64> {
    let target: SocketAddr = spec.probe.parse()?;
    let mut best: Option<Sample> = None;
    let mut last_err = None;
    for _ in 0..PROBES_PER_TICK {
        match run.true_offset(spec.name, target) {
            Ok(s) if best.is_none_or(|b| s.delay_s < b.delay_s) => best = Some(s),
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    match (best, last_err) {
        (Some(s), _) => Ok(s.offset_s),
        (None, Some(e)) => Err(e),
        (None, None) => bail!("no probe made"),
    }
}

/// Reads every node, one after the other (parallel probes on a small
/// machine would disturb each other's timestamps).
fn observe(run: &Run<'_>) -> Vec<NodeView> {
    NODES.iter().map(|spec| observe_node(run, spec)).collect()
}

/// Per-client streaks of ticks meeting the goal.
#[derive(Debug, Clone, Default)]
struct Tracker {
    /// Consecutive ticks each node has met the goal (0 for the reference).
    streak: [u32; NODES.len()],
    /// When each node's current streak began (its time to sync).
    since: [Option<Duration>; NODES.len()],
}

impl Tracker {
    /// Records one tick at `elapsed`; true once every client has met the
    /// goal for [`SETTLE_TICKS`] ticks in a row.
    fn update(&mut self, elapsed: Duration, views: &[NodeView]) -> bool {
        let mut settled = true;
        for (i, (spec, view)) in NODES.iter().zip(views).enumerate() {
            if spec.want_stratum.is_none() {
                continue;
            }
            if view.shortfall(spec).is_none() {
                if self.streak[i] == 0 {
                    self.since[i] = Some(elapsed);
                }
                self.streak[i] = self.streak[i].saturating_add(1);
            } else {
                self.streak[i] = 0;
                self.since[i] = None;
            }
            settled &= self.streak[i] >= SETTLE_TICKS;
        }
        settled && views.len() == NODES.len()
    }
}

fn show_us(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| format!("{:+.1}", s * 1e6))
}

fn show_ms(s: Option<f64>, signed: bool) -> String {
    match s {
        Some(s) if signed => format!("{:+.3}", s * 1e3),
        Some(s) => format!("{:.3}", s * 1e3),
        None => "-".to_owned(),
    }
}

fn show_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn show_reach(r: Option<u8>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:o}"))
}

fn sync_word(status: Option<&Status>) -> &'static str {
    match status.map(|s| s.synchronized) {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

/// The full-screen view of one tick (without the clear-screen sequence).
fn render_view(elapsed: Duration, views: &[NodeView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "strata demo: s1 (stratum 1) <- c1 <- c2    t = {:.1} s (timeout {} s)",
        elapsed.as_secs_f64(),
        TIMEOUT.as_secs()
    );
    let _ = writeln!(
        out,
        "goal: c1 at stratum 2 and c2 at stratum 3, synchronised, |true error| < 1 ms for {SETTLE_TICKS} ticks\n"
    );
    for (spec, view) in NODES.iter().zip(views) {
        let status = view.status.as_ref();
        let _ = writeln!(
            out,
            "{:<3} stratum {:<3} synchronised {:<4} true error {:>12} us   freq {:>9} ppm   steps {}",
            spec.name,
            show_opt(status.map(|s| s.stratum)),
            sync_word(status),
            show_us(view.true_error_s),
            status
                .and_then(|s| s.frequency_ppm)
                .map_or_else(|| "-".to_owned(), |f| format!("{f:+.3}")),
            show_opt(status.and_then(|s| s.clock_steps)),
        );
        if view.sessions.is_empty() {
            let _ = writeln!(out, "    (no sessions)");
        } else {
            let _ = writeln!(
                out,
                "    {:<9} {:<21} {:<17} {:<11} {:>7} {:>5} {:>4} {:>10} {:>9}",
                "instance",
                "address",
                "mode",
                "state",
                "stratum",
                "reach",
                "poll",
                "offset ms",
                "delay ms"
            );
            for s in &view.sessions {
                let _ = writeln!(
                    out,
                    "    {:<9} {:<21} {:<17} {:<11} {:>7} {:>5} {:>4} {:>10} {:>9}",
                    s.instance,
                    s.address,
                    s.mode,
                    s.state,
                    show_opt(s.stratum),
                    show_reach(s.reach),
                    show_opt(s.poll),
                    show_ms(s.offset_s, true),
                    show_ms(s.delay_s, false),
                );
            }
        }
        if let Some(p) = &view.problem {
            let _ = writeln!(out, "    ! {p}");
        }
    }
    out
}

/// The compact one-line form of one tick (when stdout is not a terminal).
fn progress_line(elapsed: Duration, views: &[NodeView]) -> String {
    let mut line = format!("demo t={:.1}s", elapsed.as_secs_f64());
    for (spec, view) in NODES.iter().zip(views) {
        let status = view.status.as_ref();
        let _ = write!(
            line,
            " {}[st={} sync={} err_us={}",
            spec.name,
            show_opt(status.map(|s| s.stratum)),
            sync_word(status),
            show_us(view.true_error_s),
        );
        if let Some(s) = view.sessions.first() {
            let _ = write!(
                line,
                " {} {} reach={} poll={}",
                s.address,
                s.state,
                show_reach(s.reach),
                show_opt(s.poll)
            );
        }
        line.push(']');
    }
    line
}

/// The final table: node, stratum, true error, frequency, steps, time to sync.
fn summary_table(views: &[NodeView], tracker: &Tracker) -> String {
    let mut out = format!(
        "{:<5} {:>7} {:>14} {:>10} {:>6} {:>13}\n",
        "node", "stratum", "true error us", "freq ppm", "steps", "time to sync"
    );
    for (i, (spec, view)) in NODES.iter().zip(views).enumerate() {
        let status = view.status.as_ref();
        let sync = match (spec.want_stratum, tracker.since[i]) {
            (None, _) => "(reference)".to_owned(),
            (Some(_), Some(t)) => format!("{:.1} s", t.as_secs_f64()),
            (Some(_), None) => "not synced".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<5} {:>7} {:>14} {:>10} {:>6} {:>13}",
            spec.name,
            show_opt(status.map(|s| s.stratum)),
            show_us(view.true_error_s),
            status
                .and_then(|s| s.frequency_ppm)
                .map_or_else(|| "-".to_owned(), |f| format!("{f:+.3}")),
            show_opt(status.and_then(|s| s.clock_steps)),
            sync,
        );
    }
    out
}

/// The outcome of the demo from the last views.
fn outcome(settled: bool, views: &[NodeView], tracker: &Tracker) -> Outcome {
    let mut values = Vec::new();
    for (i, (spec, view)) in NODES.iter().zip(views).enumerate() {
        if spec.want_stratum.is_none() {
            continue;
        }
        values.push((spec.name, {
            let stratum = show_opt(view.status.as_ref().map(|s| s.stratum));
            let sync = tracker.since[i]
                .map_or_else(|| "-".to_owned(), |t| format!("{:.1}", t.as_secs_f64()));
            format!(
                "stratum:{stratum},true_error_us:{},sync_s:{sync}",
                show_us(view.true_error_s)
            )
        }));
    }
    if !settled {
        let why: Vec<String> = NODES
            .iter()
            .zip(views)
            .filter_map(|(spec, view)| view.shortfall(spec).map(|w| format!("{}: {w}", spec.name)))
            .collect();
        let why = if why.is_empty() {
            format!("goal not held for {SETTLE_TICKS} ticks in a row")
        } else {
            why.join("; ")
        };
        values.push((
            "reason",
            format!("{:?}", format!("within {} s: {why}", TIMEOUT.as_secs())),
        ));
    }
    Outcome {
        pass: settled,
        values,
    }
}

/// The demo's check: live view until settled or [`TIMEOUT`], then the summary.
fn demo_check(run: &Run<'_>) -> Result<Outcome> {
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut tracker = Tracker::default();
    let mut last: Vec<NodeView> = Vec::new();
    let settled = wait_until(TIMEOUT, TICK, || {
        let views = observe(run);
        let elapsed = started.elapsed();
        let done = tracker.update(elapsed, &views);
        if tty {
            // Clear the screen, cursor home, then the view.
            print!("\x1b[2J\x1b[H{}", render_view(elapsed, &views));
        } else {
            println!("{}", progress_line(elapsed, &views));
        }
        last = views;
        done.then_some(())
    })
    .is_ok();
    println!(
        "\ndemo summary after {:.1} s:\n{}",
        started.elapsed().as_secs_f64(),
        summary_table(&last, &tracker)
    );
    Ok(outcome(settled, &last, &tracker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::config::{render, RenderCtx};

    fn status(synchronized: bool, stratum: u8) -> Status {
        serde_json::from_value(serde_json::json!({
            "synchronized": synchronized,
            "stratum": stratum,
            "offset_s": 1e-5,
            "frequency_ppm": -29.9,
            "clock_steps": 1,
        }))
        .expect("status")
    }

    fn session() -> Session {
        serde_json::from_value(serde_json::json!({
            "instance": "default", "address": "10.200.1.1:123", "mode": "client",
            "state": "synced", "stratum": 1, "reach": 255, "poll": 0,
            "offset_s": 0.000_101, "delay_s": 0.000_08,
        }))
        .expect("session")
    }

    fn view(synchronized: bool, stratum: u8, err: Option<f64>) -> NodeView {
        NodeView {
            status: Some(status(synchronized, stratum)),
            sessions: vec![session()],
            true_error_s: err,
            problem: None,
        }
    }

    /// s1 fine, c1 and c2 as given.
    fn tick(c1: NodeView, c2: NodeView) -> Vec<NodeView> {
        vec![view(true, 1, Some(0.0)), c1, c2]
    }

    fn good() -> Vec<NodeView> {
        tick(view(true, 2, Some(2e-4)), view(true, 3, Some(-4e-4)))
    }

    fn configs() -> Vec<(&'static str, toml::Table)> {
        let dir = std::path::Path::new("/tmp/strata-st0000/demo");
        scenario()
            .nodes
            .iter()
            .map(|node| {
                let node_dir = dir.join(node.name);
                let ctx = RenderCtx {
                    prefix: "st0000-",
                    run_dir: dir,
                    node_dir: &node_dir,
                };
                let text =
                    render(node.config.as_deref().expect("daemon node"), &ctx).expect("render");
                (node.name, text.parse().expect("TOML"))
            })
            .collect()
    }

    #[test]
    fn topology_is_well_formed_and_matches_node_specs() {
        let sc = scenario();
        sc.validate().expect("valid");
        let names: Vec<_> = sc.nodes.iter().map(|n| n.name).collect();
        let spec_names: Vec<_> = NODES.iter().map(|n| n.name).collect();
        assert_eq!(names, spec_names);
        for spec in &NODES {
            let ip = spec.probe.parse::<SocketAddr>().expect("probe").ip();
            assert!(
                sc.addrs
                    .iter()
                    .any(|a| a.end.node == spec.name && a.cidr.starts_with(&format!("{ip}/"))),
                "{} is probed at one of its own addresses",
                spec.name
            );
        }
    }

    #[test]
    fn configs_form_a_two_hop_chain() {
        let configs = configs();
        let get = |name: &str| &configs.iter().find(|(n, _)| *n == name).expect(name).1;
        let listens = |doc: &toml::Table| -> Vec<String> {
            doc["listen"]
                .as_array()
                .expect("listen")
                .iter()
                .map(|l| l["address"].as_str().expect("address").to_owned())
                .collect()
        };
        let upstream = |doc: &toml::Table| -> Vec<String> {
            doc.get("server")
                .and_then(|s| s.as_array())
                .map_or_else(Vec::new, |a| {
                    a.iter()
                        .map(|s| s["address"].as_str().expect("address").to_owned())
                        .collect()
                })
        };
        let (s1, c1, c2) = (get("s1"), get("c1"), get("c2"));
        assert_eq!(s1["local-reference"]["stratum"].as_integer(), Some(1));
        assert!(upstream(s1).is_empty());
        assert_eq!(upstream(c1), ["10.200.1.1:123"]);
        assert!(listens(s1).contains(&upstream(c1)[0]));
        assert_eq!(upstream(c2), ["10.200.2.1:123"], "c2 uses c1 only");
        assert!(listens(c1).contains(&upstream(c2)[0]), "c1 serves c2");
        assert_eq!(c1["clock"]["initial-offset"].as_str(), Some("300ms"));
        assert_eq!(c1["clock"]["frequency-error-ppm"].as_float(), Some(30.0));
        assert_eq!(c2["clock"]["initial-offset"].as_str(), Some("-200ms"));
        assert_eq!(c2["clock"]["frequency-error-ppm"].as_float(), Some(-20.0));
        for (name, doc) in &configs {
            assert_eq!(doc["clock"]["backend"].as_str(), Some("virtual"), "{name}");
            let spec = NODES.iter().find(|s| s.name == *name).expect("spec");
            assert!(
                listens(doc).contains(&spec.probe.to_owned()),
                "{name} serves its probe address"
            );
            if *name != "s1" {
                assert_eq!(doc["server"][0]["minpoll"].as_integer(), Some(-2));
                assert_eq!(doc["server"][0]["maxpoll"].as_integer(), Some(0));
                assert_eq!(doc["discipline"]["stepout"].as_str(), Some("2s"));
            }
        }
    }

    #[test]
    fn shortfall_names_what_is_missing() {
        let c2 = &NODES[2];
        assert_eq!(view(true, 3, Some(-9e-4)).shortfall(c2), None);
        assert_eq!(
            view(true, 1, Some(0.0)).shortfall(&NODES[0]),
            None,
            "reference"
        );
        let why = |v: NodeView| v.shortfall(c2).expect("short");
        assert!(why(view(false, 16, Some(0.0))).contains("not synchronised"));
        assert!(why(view(true, 2, Some(0.0))).contains("stratum 2 (want 3)"));
        assert!(why(view(true, 3, Some(1.5e-3))).contains("1500.0 us"));
        assert!(why(view(true, 3, Some(-1e-3))).contains(">= 1000 us"));
        assert!(why(view(true, 3, None)).contains("no true error"));
        let unreadable = NodeView {
            problem: Some("status: connection refused".to_owned()),
            ..NodeView::default()
        };
        assert!(why(unreadable).contains("connection refused"));
    }

    #[test]
    fn settles_only_after_consecutive_good_ticks() {
        let mut t = Tracker::default();
        let at = Duration::from_secs;
        assert!(!t.update(at(1), &good()));
        assert!(!t.update(at(2), &good()));
        // c2 drops out: its streak and time to sync restart.
        let c2_bad = tick(view(true, 2, Some(2e-4)), view(false, 16, Some(0.1)));
        assert!(!t.update(at(3), &c2_bad));
        assert_eq!(t.since[1], Some(at(1)));
        assert_eq!(t.since[2], None);
        assert!(!t.update(at(4), &good()));
        assert!(!t.update(at(5), &good()));
        assert!(t.update(at(6), &good()), "three good ticks in a row");
        assert_eq!(t.since, [None, Some(at(1)), Some(at(4))]);
        assert!(
            !Tracker::default().update(at(1), &good()[..2]),
            "missing node"
        );
    }

    #[test]
    fn outcome_pass_and_fail_reasons() {
        let mut t = Tracker::default();
        for s in 1..=3 {
            t.update(Duration::from_secs(s), &good());
        }
        let pass = outcome(true, &good(), &t);
        assert!(pass.pass);
        assert_eq!(
            pass.values,
            [
                ("c1", "stratum:2,true_error_us:+200.0,sync_s:1.0".to_owned()),
                ("c2", "stratum:3,true_error_us:-400.0,sync_s:1.0".to_owned()),
            ]
        );
        assert_eq!(fail_reason(&pass), "(no reason recorded)");
        let bad = tick(view(true, 2, Some(2e-4)), view(true, 2, Some(0.0)));
        let fail = outcome(false, &bad, &Tracker::default());
        assert!(!fail.pass);
        let reason = fail_reason(&fail);
        assert!(
            reason.starts_with("reason=\"within 90 s: c2: stratum 2 (want 3)"),
            "{reason}"
        );
        assert!(!reason.contains("c1:"), "{reason}");
        let flaky = outcome(false, &good(), &Tracker::default());
        assert!(fail_reason(&flaky).contains("not held for 3 ticks"));
    }

    #[test]
    fn views_show_every_node_and_session() {
        let mut views = good();
        views[0].sessions.clear();
        views[2].problem = Some("probe: timed out".to_owned());
        let screen = render_view(Duration::from_millis(12_340), &views);
        assert!(screen.contains("t = 12.3 s (timeout 90 s)"), "{screen}");
        assert!(screen.contains("(no sessions)"));
        for needle in [
            "s1 ",
            "c1 ",
            "c2 ",
            "+200.0",
            "-400.0",
            "-29.900",
            "377",
            "+0.101",
            "0.080",
            "client",
            "synced",
            "! probe: timed out",
        ] {
            assert!(screen.contains(needle), "{needle:?} missing in\n{screen}");
        }
        let line = progress_line(Duration::from_millis(5_050), &views);
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with("demo t=5.0s s1[st=1 sync=yes err_us=+0.0]"),
            "{line}"
        );
        assert!(
            line.contains("c2[st=3 sync=yes err_us=-400.0 10.200.1.1:123 synced reach=377 poll=0]"),
            "{line}"
        );
    }

    #[test]
    fn summary_table_lists_every_node() {
        let mut t = Tracker::default();
        let mut views = good();
        views[2] = view(false, 16, None);
        t.update(Duration::from_millis(14_200), &views);
        let table = summary_table(&views, &t);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].contains("time to sync"));
        assert!(
            lines[1].starts_with("s1") && lines[1].ends_with("(reference)"),
            "{table}"
        );
        assert!(
            lines[2].contains("+200.0") && lines[2].ends_with("14.2 s"),
            "{table}"
        );
        assert!(
            lines[3].contains("16") && lines[3].ends_with("not synced"),
            "{table}"
        );
    }
}
