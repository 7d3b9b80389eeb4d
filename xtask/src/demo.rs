//! `cargo xtask demo`: every association mode and a VPN instance converging
//! live in network namespaces.
//!
//! The demo is a [`Scenario`] run by the scenario runner (root only; it
//! builds `stratad`/`stratactl` first unless `$XTASK_BIN_DIR` is set, and a
//! [`Guard`](crate::scenario::Guard) tears everything down on success,
//! failure and Ctrl-C). Its topology ([`topology`]) is six namespaces and
//! five daemons on embedded configs with shortened polls:
//!
//! ```text
//!   s1 (1) ───── pe (2) ═══ [vpna] ─┬── ce1 (3)  client
//!    │                               └── ce2 (3)  symmetric passive
//!    └── mode 5 to 224.0.1.1 ──> mc (2)  multicast client
//! ```
//!
//! a stratum-1 server `s1`; a client `pe` with a VPN instance `vpna` (a
//! network namespace) in which it serves `ce1` and is symmetric active
//! toward `ce2`; and a multicast client `mc` that calibrates against `s1`
//! and then listens to its mode-5 packets. Every node runs a virtual
//! clock, so the host clock is never touched; its true error is measured
//! against the host clock by an NTP probe from inside its namespace.
//!
//! About once a second the demo shows each node's stratum,
//! synchronisation, true error, frequency and sessions (instance, address,
//! mode, state, reach, poll, offset, delay), and for `pe` its instances:
//! a full-screen view on a terminal ([`view::render_view`]), else one
//! progress line per node ([`view::progress_lines`]). A client counts as
//! synchronised once it has been at its stratum, with the sessions its role
//! needs reached and in the expected state ([`topology::WantSession`]) and
//! |true error| < 1 ms, for [`SETTLE_TICKS`] ticks in a row; it stays
//! counted if it drops out later (the symmetric pair can: see
//! [`Tracker`]). The demo passes once every client is synchronised and
//! fails after [`TIMEOUT`]. It ends with a summary table and `demo: pass` or
//! `demo: FAIL <reason>` (and a non-zero exit).

mod topology;
mod view;

use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use xshell::Shell;

use crate::probe::Sample;
use crate::scenario::{self, wait_until, Instance, Outcome, Run, Scenario, Session, Status};
use topology::{NodeSpec, NODES};

/// How long the clients get to synchronise (typically 5 to 30 s).
pub const TIMEOUT: Duration = Duration::from_secs(90);
/// How many consecutive ticks every client must meet the goal.
pub const SETTLE_TICKS: u32 = 3;
/// The pause between two redraws.
const TICK: Duration = Duration::from_millis(800);
/// Probes per node and tick; the lowest-delay one counts.
const PROBES_PER_TICK: usize = 3;
/// The largest accepted |true error|, seconds.
const MAX_TRUE_ERROR_S: f64 = 1e-3;

/// The demo topology as scenario data.
pub fn scenario() -> Scenario {
    topology::scenario(demo_check)
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
    instances: BTreeMap<String, Instance>,
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
        for w in spec.want_sessions {
            let what = format!("{} {}/{}", w.mode, w.instance, w.address);
            let Some(s) = self
                .sessions
                .iter()
                .find(|s| s.instance == w.instance && s.address == w.address && s.mode == w.mode)
            else {
                return Some(format!("no {what} session"));
            };
            if s.reach.unwrap_or(0) == 0 {
                return Some(format!("{what} not reached"));
            }
            if !w.states.contains(&s.state.as_str()) {
                return Some(format!(
                    "{what} is {} (want {})",
                    s.state,
                    w.states.join(" or ")
                ));
            }
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

/// Reads one node: status, instances, sessions and (once it serves
/// synchronised time) its true error.
fn observe_node(run: &Run<'_>, spec: &NodeSpec) -> NodeView {
    let mut problems = Vec::new();
    let (status, instances) = match run.status(spec.name) {
        Ok(s) => {
            let instances = s.instances.clone();
            (Some(s), instances)
        }
        Err(e) => {
            problems.push(format!("status: {e:#}"));
            (None, BTreeMap::new())
        }
    };
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
        instances,
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

/// Per-client streaks of ticks meeting the goal, and which clients have
/// held it for [`SETTLE_TICKS`] ticks in a row (synchronised).
///
/// A client stays synchronised once it has been: `ce2` depends on a
/// symmetric pair polling every 0.25 s on both sides, which now and then
/// loses a few exchanges (both ends send at once, each drops the other's
/// packet as `bogus-origin`, and the passive end demobilises and is
/// mobilised again), so `ce2` may flap after it was synchronised; the live
/// view shows it (`synchronised at …; now …`).
#[derive(Debug, Clone, Default)]
struct Tracker {
    /// Consecutive ticks each node has met the goal (0 for the reference).
    streak: [u32; NODES.len()],
    /// When each node's current streak began; once it is synchronised,
    /// when the streak that proved it began (its time to sync).
    since: [Option<Duration>; NODES.len()],
    /// Whether each client has held the goal for [`SETTLE_TICKS`] ticks
    /// in a row (it stays so: a symmetric pair that flaps later still
    /// synchronised).
    synced: [bool; NODES.len()],
}

impl Tracker {
    /// Records one tick at `elapsed`; true once every client has held the
    /// goal for [`SETTLE_TICKS`] ticks in a row.
    fn update(&mut self, elapsed: Duration, views: &[NodeView]) -> bool {
        let mut done = views.len() == NODES.len();
        for (i, (spec, view)) in NODES.iter().zip(views).enumerate() {
            if spec.want_stratum.is_none() {
                continue;
            }
            if view.shortfall(spec).is_none() {
                if self.streak[i] == 0 && !self.synced[i] {
                    self.since[i] = Some(elapsed);
                }
                self.streak[i] = self.streak[i].saturating_add(1);
                self.synced[i] |= self.streak[i] >= SETTLE_TICKS;
            } else {
                self.streak[i] = 0;
                if !self.synced[i] {
                    self.since[i] = None;
                }
            }
            done &= self.synced[i];
        }
        done
    }
}

/// The outcome of the demo from the last views.
fn outcome(settled: bool, views: &[NodeView], tracker: &Tracker) -> Outcome {
    let mut values = Vec::new();
    for (i, (spec, view)) in NODES.iter().zip(views).enumerate() {
        if spec.want_stratum.is_some() {
            let since = tracker.synced[i].then_some(tracker.since[i]).flatten();
            values.push((spec.name, view::outcome_value(view, since)));
        }
    }
    if !settled {
        let why: Vec<String> = NODES
            .iter()
            .zip(views)
            .enumerate()
            .filter(|(i, (spec, _))| spec.want_stratum.is_some() && !tracker.synced[*i])
            .map(|(_, (spec, view))| {
                let why = view.shortfall(spec).unwrap_or_else(|| {
                    format!("goal not yet held for {SETTLE_TICKS} ticks in a row")
                });
                format!("{}: {why}", spec.name)
            })
            .collect();
        let why = if why.is_empty() {
            "no complete observation".to_owned()
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
            print!(
                "\x1b[2J\x1b[H{}",
                view::render_view(elapsed, &views, &tracker)
            );
        } else {
            print!("{}", view::progress_lines(elapsed, &views, &tracker));
        }
        last = views;
        done.then_some(())
    })
    .is_ok();
    println!(
        "\ndemo summary after {:.1} s:\n{}",
        started.elapsed().as_secs_f64(),
        view::summary_table(&last, &tracker)
    );
    Ok(outcome(settled, &last, &tracker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::config::rendered;
    use topology::WantSession;

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

    fn session(w: &WantSession, state: &str, reach: u8) -> Session {
        serde_json::from_value(serde_json::json!({
            "instance": w.instance, "address": w.address, "mode": w.mode,
            "state": state, "stratum": 1, "reach": reach, "poll": -2,
            "offset_s": 0.000_101, "delay_s": 0.000_08,
        }))
        .expect("session")
    }

    fn spec(name: &str) -> (usize, &'static NodeSpec) {
        NODES
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
            .expect(name)
    }

    /// A node meeting its goal: synchronised at its stratum, every wanted
    /// session reached in its first wanted state.
    fn good_view(spec: &NodeSpec, err: f64) -> NodeView {
        NodeView {
            status: Some(status(true, spec.want_stratum.unwrap_or(1))),
            instances: BTreeMap::new(),
            sessions: spec
                .want_sessions
                .iter()
                .map(|w| session(w, w.states[0], 0o377))
                .collect(),
            true_error_s: Some(err),
            problem: None,
        }
    }

    fn good() -> Vec<NodeView> {
        NODES
            .iter()
            .enumerate()
            .map(|(i, s)| good_view(s, f64::from(u32::try_from(i).expect("small")) * 1e-4))
            .collect()
    }

    /// `good()` with node `name` replaced.
    fn with(name: &str, view: NodeView) -> Vec<NodeView> {
        let mut views = good();
        views[spec(name).0] = view;
        views
    }

    fn unsynced(name: &str) -> NodeView {
        let mut v = good_view(spec(name).1, 0.0);
        v.status = Some(status(false, 16));
        v.true_error_s = None;
        v
    }

    fn configs() -> Vec<(&'static str, toml::Table)> {
        scenario()
            .nodes
            .iter()
            .filter_map(|node| {
                let template = node.config.as_deref()?;
                Some((node.name, rendered("demo", node.name, template)))
            })
            .collect()
    }

    #[test]
    fn topology_is_small_well_formed_and_matches_node_specs() {
        let sc = scenario();
        sc.validate().expect("valid");
        assert!(sc.nodes.len() <= 6, "at most six namespaces");
        assert!(sc.bridges.is_empty(), "no bridge namespaces");
        let daemons: Vec<_> = sc
            .nodes
            .iter()
            .filter(|n| n.config.is_some())
            .map(|n| n.name)
            .collect();
        let spec_names: Vec<_> = NODES.iter().map(|n| n.name).collect();
        assert_eq!(daemons, spec_names, "every daemon is observed, in order");
        let bare: Vec<_> = sc
            .nodes
            .iter()
            .filter(|n| n.config.is_none())
            .map(|n| n.name)
            .collect();
        assert_eq!(bare, ["pe-vpna"], "the VPN instance runs no daemon");
        for spec in &NODES {
            let ip = spec.probe.parse::<SocketAddr>().expect("probe").ip();
            assert!(
                sc.addrs
                    .iter()
                    .any(|a| a.end.node == spec.name && a.cidr.starts_with(&format!("{ip}/"))),
                "{} is probed at one of its own addresses",
                spec.name
            );
            for w in spec.want_sessions {
                let remote = w.address.parse::<SocketAddr>().expect("address").ip();
                assert!(
                    sc.addrs
                        .iter()
                        .any(|a| a.end.node != spec.name
                            && a.cidr.starts_with(&format!("{remote}/"))),
                    "{}: {} is another node's address",
                    spec.name,
                    w.address
                );
                assert!(!w.states.is_empty());
            }
        }
    }

    #[test]
    fn configs_wire_up_every_mode() {
        let configs = configs();
        let get = |name: &str| &configs.iter().find(|(n, _)| *n == name).expect(name).1;
        let list = |doc: &toml::Table, table: &str, key: &str| -> Vec<String> {
            doc.get(table)
                .and_then(|t| t.as_array())
                .map_or_else(Vec::new, |a| {
                    a.iter()
                        .map(|e| e[key].as_str().expect(key).to_owned())
                        .collect()
                })
        };
        let (s1, pe, ce1, ce2, mc) = (get("s1"), get("pe"), get("ce1"), get("ce2"), get("mc"));

        // Client/server: pe polls s1, which listens on every address.
        assert_eq!(s1["local-reference"]["stratum"].as_integer(), Some(1));
        assert_eq!(list(s1, "listen", "address"), ["0.0.0.0:123"]);
        assert_eq!(list(pe, "server", "address"), ["10.200.1.1:123"]);
        assert_eq!(pe["server"][0].get("instance"), None, "default instance");

        // The VPN instance: a namespace of this run, serving ce1.
        assert_eq!(pe["instance"][0]["name"].as_str(), Some("vpna"));
        assert_eq!(
            pe["instance"][0]["netns"].as_str(),
            Some("st0000-pe-vpna"),
            "the bare node's namespace"
        );
        assert_eq!(list(ce1, "server", "address"), ["10.200.2.1:123"]);
        let vpna_listens: Vec<_> = pe["listen"]
            .as_array()
            .expect("listen")
            .iter()
            .filter(|l| l.get("instance").and_then(|i| i.as_str()) == Some("vpna"))
            .map(|l| l["address"].as_str().expect("address"))
            .collect();
        assert_eq!(vpna_listens, ["10.200.2.1:123", "10.200.4.1:123"]);

        // The symmetric pair: pe active in vpna, ce2 lets pe's vpna address peer.
        assert_eq!(list(pe, "peer", "address"), ["10.200.4.2:123"]);
        assert_eq!(pe["peer"][0]["instance"].as_str(), Some("vpna"));
        assert!(ce2.get("server").is_none() && ce2.get("peer").is_none());
        assert_eq!(ce2["access"][0]["level"].as_str(), Some("peer"));
        assert_eq!(
            ce2["access"][0]["prefixes"][0].as_str(),
            Some("10.200.4.1/32")
        );

        // Multicast: s1 sends on its link to mc, mc listens on its end.
        let sc = scenario();
        let link_to_mc = sc
            .links
            .iter()
            .find_map(|l| match l {
                crate::scenario::Link::Veth(a, b) if a.node == "s1" && b.node == "mc" => {
                    Some((a.ifname, b.ifname))
                }
                _ => None,
            })
            .expect("s1-mc link");
        let ms = &s1["multicast-server"][0];
        assert_eq!(ms["group"].as_str(), Some("224.0.1.1"));
        assert_eq!(
            ms["interface"].as_str(),
            Some(&*format!("st0000-{}", link_to_mc.0))
        );
        assert_eq!(ms["poll"].as_integer(), Some(0), "shortened to 1 s");
        let mcc = &mc["multicast-client"][0];
        assert_eq!(mcc["group"].as_str(), Some("224.0.1.1"));
        assert_eq!(
            mcc["interface"].as_str(),
            Some(&*format!("st0000-{}", link_to_mc.1))
        );
        assert_eq!(mcc["allow-unauthenticated"].as_bool(), Some(true));

        // The wanted sessions are the configured ones.
        assert_eq!(
            spec("pe").1.want_sessions[0].address,
            pe["server"][0]["address"].as_str().expect("a")
        );
        assert_eq!(
            spec("pe").1.want_sessions[1].address,
            pe["peer"][0]["address"].as_str().expect("a")
        );
        assert_eq!(
            spec("ce1").1.want_sessions[0].address,
            ce1["server"][0]["address"].as_str().expect("a")
        );

        for (name, doc) in &configs {
            assert_eq!(doc["clock"]["backend"].as_str(), Some("virtual"), "{name}");
            let spec = spec(name).1;
            let listens = list(doc, "listen", "address");
            let port = spec.probe.rsplit_once(':').expect("port").1;
            assert!(
                listens
                    .iter()
                    .any(|l| *l == spec.probe || *l == format!("0.0.0.0:{port}")),
                "{name} serves its probe address"
            );
            for table in ["server", "peer"] {
                for source in doc
                    .get(table)
                    .and_then(|t| t.as_array())
                    .into_iter()
                    .flatten()
                {
                    assert_eq!(source["minpoll"].as_integer(), Some(-2), "{name}");
                    assert_eq!(source["maxpoll"].as_integer(), Some(0), "{name}");
                }
            }
            if spec.want_stratum.is_some() {
                assert_eq!(doc["discipline"]["stepout"].as_str(), Some("2s"), "{name}");
                assert!(
                    doc["clock"]["initial-offset"].as_str().is_some(),
                    "{name} starts off"
                );
            }
        }
    }

    #[test]
    fn every_shortened_setting_says_so() {
        for node in scenario().nodes {
            let Some(template) = node.config else {
                continue;
            };
            for key in ["minpoll", "poll = ", "stepout"] {
                if template.contains(key) {
                    assert!(
                        template.to_lowercase().contains("shortened for the demo"),
                        "{}: {key} without a comment",
                        node.name
                    );
                }
            }
        }
    }

    #[test]
    fn shortfall_names_what_is_missing() {
        let (_, ce2) = spec("ce2");
        let (_, mc) = spec("mc");
        let (_, pe) = spec("pe");
        assert_eq!(good_view(ce2, -9e-4).shortfall(ce2), None);
        assert_eq!(
            good_view(&NODES[0], 0.0).shortfall(&NODES[0]),
            None,
            "reference"
        );
        let why = |v: NodeView, s: &NodeSpec| v.shortfall(s).expect("short");
        assert!(why(unsynced("ce2"), ce2).contains("not synchronised"));
        let mut v = good_view(ce2, 0.0);
        v.status = Some(status(true, 2));
        assert!(why(v, ce2).contains("stratum 2 (want 3)"));
        assert!(why(good_view(ce2, 1.5e-3), ce2).contains("1500.0 us"));
        assert!(why(good_view(ce2, -1e-3), ce2).contains(">= 1000 us"));
        let mut v = good_view(ce2, 0.0);
        v.true_error_s = None;
        assert!(why(v, ce2).contains("no true error"));
        let unreadable = NodeView {
            problem: Some("status: connection refused".to_owned()),
            ..NodeView::default()
        };
        assert!(why(unreadable, ce2).contains("connection refused"));

        // Sessions: missing, unreached, in the wrong state, or the wrong mode.
        let mut v = good_view(ce2, 0.0);
        v.sessions.clear();
        assert_eq!(
            why(v, ce2),
            "no symmetric-passive default/10.200.4.1:123 session"
        );
        let mut v = good_view(mc, 0.0);
        v.sessions = vec![session(&mc.want_sessions[0], "calibrating", 0o17)];
        assert_eq!(
            why(v, mc),
            "multicast-client default/10.200.3.1:123 is calibrating (want listening)"
        );
        let mut v = good_view(pe, 0.0);
        v.sessions[1] = session(&pe.want_sessions[1], "reachable", 0);
        assert!(why(v, pe).ends_with("not reached"));
        let mut v = good_view(pe, 0.0);
        v.sessions[0].mode = "symmetric-active".to_owned();
        assert!(why(v, pe).starts_with("no client default/10.200.1.1:123"));
    }

    #[test]
    fn a_node_is_synchronised_after_consecutive_good_ticks_and_stays_so() {
        let at = Duration::from_secs;
        let (ce2, _) = spec("ce2");
        let (pe, _) = spec("pe");
        let mut t = Tracker::default();
        assert!(!t.update(at(1), &good()));
        assert!(!t.update(at(2), &good()));
        // ce2 drops out before its third tick: its streak restarts.
        assert!(!t.update(at(3), &with("ce2", unsynced("ce2"))));
        assert_eq!(t.since[ce2], None);
        assert!(!t.synced[ce2]);
        assert!(t.synced[pe], "pe held 3 ticks (1, 2 and 3)");
        assert_eq!(t.since[pe], Some(at(1)));
        assert!(!t.update(at(4), &good()));
        assert!(!t.update(at(5), &good()));
        // pe flaps now: it was synchronised at 1 s, and stays so.
        assert!(
            t.update(at(6), &with("pe", unsynced("pe"))),
            "ce2's third tick"
        );
        assert_eq!(t.since[ce2], Some(at(4)));
        assert_eq!(t.since[pe], Some(at(1)));
        assert!(t.synced[pe]);
        assert_eq!(t.since[0], None, "the reference is not tracked");
        assert!(
            !Tracker::default().update(at(1), &good()[..2]),
            "missing nodes"
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
        let names: Vec<_> = pass.values.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["pe", "ce1", "ce2", "mc"]);
        assert_eq!(
            pass.values[2].1,
            "stratum:3,true_error_us:+300.0,sync_s:1.0"
        );
        assert_eq!(fail_reason(&pass), "(no reason recorded)");

        let mut t = Tracker::default();
        let mc_calibrating = {
            let (_, mc) = spec("mc");
            let mut v = good_view(mc, 0.0);
            v.sessions = vec![session(&mc.want_sessions[0], "calibrating", 0o17)];
            with("mc", v)
        };
        for s in 1..=3 {
            t.update(Duration::from_secs(s), &mc_calibrating);
        }
        let fail = outcome(false, &mc_calibrating, &t);
        assert!(!fail.pass);
        let reason = fail_reason(&fail);
        assert!(
            reason.starts_with("reason=\"within 90 s: mc: multicast-client"),
            "{reason}"
        );
        assert!(!reason.contains("ce2:"), "{reason}");
        assert!(fail
            .values
            .iter()
            .any(|(k, v)| *k == "mc" && v.ends_with("sync_s:-")));

        let one_tick = outcome(false, &good(), &Tracker::default());
        assert!(fail_reason(&one_tick).contains("not yet held for 3 ticks"));
    }

    #[test]
    fn views_show_every_node_instance_mode_and_state() {
        let mut views = good();
        views[spec("ce1").0].problem = Some("probe: timed out".to_owned());
        views[spec("pe").0].instances = BTreeMap::from([
            (
                "default".to_owned(),
                Instance {
                    state: "up".to_owned(),
                    placement: "default".to_owned(),
                    received: 40,
                    sent: 41,
                    ..Instance::default()
                },
            ),
            (
                "vpna".to_owned(),
                Instance {
                    state: "up".to_owned(),
                    placement: "netns st0000-pe-vpna".to_owned(),
                    received: 52,
                    sent: 50,
                    ..Instance::default()
                },
            ),
        ]);
        let mut t = Tracker::default();
        t.update(Duration::from_secs(2), &views);
        let screen = view::render_view(Duration::from_millis(12_340), &views, &t);
        assert!(screen.contains("t = 12.3 s (timeout 90 s)"), "{screen}");
        assert!(screen.lines().count() <= 23, "fits a terminal:\n{screen}");
        for needle in [
            "s1 ",
            "pe ",
            "ce1 ",
            "ce2 ",
            "mc ",
            "(no associations: it only serves)",
            "vpna      10.200.4.2:123   symmetric-active  reachable",
            "default   10.200.1.1:123   client            selected",
            "symmetric-passive",
            "multicast-client  listening",
            "instances: default up (rx 40, tx 41); vpna up in netns st0000-pe-vpna (rx 52, tx 50)",
            "-29.900",
            "377",
            "+0.101",
            "0.080",
            "ok 1/3",
            "! probe: timed out",
        ] {
            assert!(screen.contains(needle), "{needle:?} missing in\n{screen}");
        }
        // pe's default-instance session comes first.
        let client = screen.find("client            selected").expect("client");
        let peer = screen.find("symmetric-active  reachable").expect("peer");
        assert!(client < peer, "{screen}");

        let lines = view::progress_lines(Duration::from_millis(5_050), &views, &t);
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines.len(), NODES.len());
        assert!(
            lines[0].starts_with("demo t=5.0s s1  st=1 sync=yes err_us=+0.0 -- reference"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("[default 10.200.1.1:123 client selected reach=377 poll=-2] [vpna 10.200.4.2:123 symmetric-active reachable reach=377 poll=-2] -- ok 1/3"),
            "{}",
            lines[1]
        );
        let mut flapping = views.clone();
        flapping[spec("ce2").0] = unsynced("ce2");
        t.update(Duration::from_secs(3), &views);
        t.update(Duration::from_secs(4), &views);
        let lines = view::progress_lines(Duration::from_secs(5), &flapping, &t);
        assert!(
            lines.contains("ce2 st=16 sync=no err_us=- [default 10.200.4.1:123 symmetric-passive selected reach=377 poll=-2] -- synchronised at 2.0 s; now not synchronised (stratum 16)"),
            "{lines}"
        );
    }

    #[test]
    fn summary_table_lists_every_node() {
        let mut t = Tracker::default();
        let views = with("ce2", unsynced("ce2"));
        for ms in [14_200, 15_000, 16_000] {
            t.update(Duration::from_millis(ms), &views);
        }
        let table = view::summary_table(&views, &t);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), NODES.len() + 1, "{table}");
        assert!(lines[0].contains("time to sync"));
        for (line, spec) in lines[1..].iter().zip(&NODES) {
            assert!(line.starts_with(spec.name), "{table}");
            assert!(line.ends_with(spec.role), "{table}");
        }
        assert!(lines[1].contains("(reference)"), "{table}");
        assert!(
            lines[2].contains("-29.900") && lines[2].contains("14.2 s"),
            "{table}"
        );
        let ce2 = lines[1 + spec("ce2").0];
        assert!(ce2.contains("16") && ce2.contains("not synced"), "{table}");
    }
}
