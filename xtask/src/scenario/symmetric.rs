//! The `symmetric` scenario: two strata peers (symmetric active/passive),
//! each with its own upstream, swapping roles when the better upstream dies.
//!
//! Four namespaces on one bridge `lan` (10.200.1.0/24):
//!
//! ```text
//!  u1 (.1, local reference stratum 1) ──> a (.2) <══ symmetric ══> b (.3) <── u3 (.4, stratum 3)
//! ```
//!
//! `a` has `u1` as its `[[server]]` and `b` as its `[[peer]]` (symmetric
//! active); `b` has `u3` as its `[[server]]` and lets 10.200.1.0/24 be a
//! `peer` (`[[access]]`), so `a`'s mode-1 packets mobilise a symmetric
//! passive association on `b`. Polls are short (minpoll -2, maxpoll 0) and
//! the stepout is shortened to 2 s. `a` starts 200 ms off (+20 ppm), `b`
//! −300 ms (−15 ppm), both on virtual clocks; `u1` and `u3` run on the host
//! timescale, so every true error (probed against the host clock) is small.
//!
//! The check, in three phases, sampling both peers' status every 250 ms
//! throughout and counting a *loop* whenever `a` has `b` as its reference
//! while `b`'s reference ID is `a`'s address (or the other way round):
//!
//! 1. `a` syncs to `u1` (stratum 2); `b` prefers `a` (stratum 3) over `u3`
//!    (it would be 4); both true errors under 1 ms; `a`'s session to `b` is
//!    `symmetric-active` and `b`'s to `a` `symmetric-passive`, both reached.
//! 2. `u1` is stopped (by PID): `b` falls back to `u3` (stratum 4) and `a`
//!    synchronises from `b` (stratum 5), within [`FAILOVER_TIMEOUT`].
//! 3. `a` is stopped: `b`'s passive association decays and is demobilised
//!    (gone from `b`'s sessions) within [`DEMOBILISE_TIMEOUT`], while `b`
//!    keeps stratum 4.
//!
//! `interop-symmetric`: strata and chrony's `chronyd -x` as symmetric peers,
//! four namespaces on bridge `lan` (10.200.5.0/24). chronyd has symmetric
//! active (`peer`) but no passive associations, so:
//!
//! 1. `chronyp` (.1, `local stratum 3`) names `stratap` (.2) as `peer`;
//!    `stratap` has no sources of its own and lets 10.200.5.0/24 peer, so
//!    chronyd's mode-1 packets mobilise a symmetric passive association,
//!    from which `stratap` synchronises (stratum 4).
//! 2. `chronya` (.3, `local stratum 3`) names `strataa` (.4) as `peer`, and
//!    `strataa` has `chronya` as its `[[peer]]` (symmetric active, no access
//!    rule needed for a configured peer).
//!
//! Each pair passes when `chronyc sources` lists the strata peer in mode `=`
//! with a nonzero reach and an offset under 1 ms, and strata's session to
//! chronyd is `symmetric-passive` (resp. `symmetric-active`) with a nonzero
//! reach, and strata's true error is under 1 ms at stratum 4. chronyd runs
//! as in `interop-chrony`: `-x`, no `CAP_SYS_TIME`, checked before use.
//!
//! [`Run::start_stratad`](super::Run::start_stratad) starts a `stratad` from a check (rather than when the
//! topology is built) so the check knows its PID and can stop it.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::Deserialize;

use super::{
    config::{self, stratum1},
    guard, octal, secs, show, us, Outcome, Run, Scenario,
};

/// The longest wait for phase 1 (both peers in sync, `b` via `a`).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest wait for phase 2 (`b` on `u3`, `a` via `b`).
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest wait for phase 3 (the passive association gone).
pub const DEMOBILISE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often both peers' status is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Largest accepted true clock error.
const MAX_ERROR_S: f64 = 1e-3;

const U1: &str = "10.200.1.1";
const A: &str = "10.200.1.2";
const B: &str = "10.200.1.3";
const U3: &str = "10.200.1.4";

/// `a`: client of `u1`, symmetric active toward `b`.
fn a_config() -> String {
    let clock = config::stepping("200ms", Some(20.0), "128ms");
    let server = config::source("server", &format!("{U1}:123"));
    let peer = config::source("peer", &format!("{B}:123"));
    format!(
        "{clock}{server}{peer}{}",
        config::listen(&format!("{A}:123"))
    )
}

/// `b`: client of `u3`, lets the subnet of `a` mobilise a passive association.
fn b_config() -> String {
    let clock = config::stepping("-300ms", Some(-15.0), "128ms");
    let access = config::access("peer", "10.200.1.0/24");
    let server = config::source("server", &format!("{U3}:123"));
    format!(
        "{clock}{access}{server}{}",
        config::listen(&format!("{B}:123"))
    )
}

/// `cargo xtask scenario symmetric`; see the module doc.
pub fn symmetric() -> Scenario {
    Scenario::new(
        "symmetric",
        "peers a (via u1, s1) <-> b (via u3, s3): b prefers a; u1 dies: a via b, no loop; a dies: b demobilises",
        check,
    )
    // Started by the check (it stops them by PID).
    .bare("u1")
    .bare("a")
    .daemon("b", b_config())
    .daemon("u3", config::local(3, &format!("{U3}:123")))
    .on_lan("u1", "10.200.1.1/24")
    .on_lan("a", "10.200.1.2/24")
    .on_lan("b", "10.200.1.3/24")
    .on_lan("u3", "10.200.1.4/24")
}

/// The fields of `stratactl status --json` this scenario reads.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PeerStatus {
    /// Whether the clock is synchronized.
    pub synchronized: bool,
    /// Stratum served.
    pub stratum: u8,
    /// Reference ID served, as text (an IPv4 address for a source).
    pub refid: String,
    /// The system peer, `ip:port`.
    #[serde(default)]
    pub reference: Option<String>,
}

impl PeerStatus {
    /// The IP address of the system peer, if any.
    pub fn reference_ip(&self) -> Option<IpAddr> {
        let r = self.reference.as_deref()?;
        r.parse::<SocketAddr>()
            .map(|s| s.ip())
            .or_else(|_| r.parse::<IpAddr>())
            .ok()
    }

    /// Whether the system peer is `ip`.
    pub fn follows(&self, ip: &str) -> bool {
        self.reference_ip().is_some_and(|r| r.to_string() == ip)
    }
}

/// `stratactl status --json` of `node`, the fields above.
pub fn peer_status(run: &Run<'_>, node: &str) -> Result<PeerStatus> {
    let out = run.stratactl(node, "status")?;
    serde_json::from_str(&out).with_context(|| format!("parse status of {node}: {out}"))
}

/// A timing loop between two peers at one sample: `x` follows `y` while
/// `y`'s reference ID is `x`'s address.
pub fn is_loop(x: &PeerStatus, x_ip: &str, y: &PeerStatus, y_ip: &str) -> bool {
    x.follows(y_ip) && y.refid == x_ip
}

/// The session of `node` whose remote IP is `ip`.
fn session_to(run: &Run<'_>, node: &str, ip: &str) -> Result<Option<super::Session>> {
    Ok(run.sessions(node)?.into_iter().find(|s| {
        s.address
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.ip().to_string() == ip)
    }))
}

/// Everything measured over the run, for the summary line.
#[derive(Debug, Default)]
struct Record {
    samples: u64,
    loops: u64,
    sample_errors: u64,
    last_loop: Option<String>,
    last: Option<(PeerStatus, PeerStatus)>,
}

impl Record {
    /// Samples both peers once; returns their status.
    fn sample(&mut self, run: &Run<'_>, a_alive: bool) -> Option<(Option<PeerStatus>, PeerStatus)> {
        let a = if a_alive {
            match peer_status(run, "a") {
                Ok(s) => Some(s),
                Err(_) => {
                    self.sample_errors += 1;
                    return None;
                }
            }
        } else {
            None
        };
        let Ok(b) = peer_status(run, "b") else {
            self.sample_errors += 1;
            return None;
        };
        self.samples += 1;
        if let Some(a) = &a {
            if is_loop(a, A, &b, B) || is_loop(&b, B, a, A) {
                self.loops += 1;
                self.last_loop = Some(format!("a={a:?} b={b:?}"));
            }
            self.last = Some((a.clone(), b.clone()));
        }
        Some((a, b))
    }
}

/// The true error and served stratum of the daemon at `ip:123` in `node`.
fn probe(run: &Run<'_>, node: &str, ip: &str) -> Option<(f64, u8)> {
    let addr = SocketAddr::new(ip.parse().ok()?, 123);
    run.true_offset(node, addr)
        .ok()
        .map(|s| (s.offset_s, s.stratum))
}

/// Probes `a` and `b` (two process starts: at most once a second, by
/// `next`), keeps their errors in `errs`, and says whether both are within
/// [`MAX_ERROR_S`] at strata `want`; `None` when not due or a probe failed.
fn probe_both(
    run: &Run<'_>,
    next: &mut Instant,
    errs: &mut (Option<f64>, Option<f64>),
    want: (u8, u8),
) -> Option<bool> {
    if Instant::now() < *next {
        return None;
    }
    *next = Instant::now() + Duration::from_secs(1);
    let (pa, pb) = (probe(run, "a", A)?, probe(run, "b", B)?);
    *errs = (Some(pa.0), Some(pb.0));
    Some(pa.0.abs() < MAX_ERROR_S && pb.0.abs() < MAX_ERROR_S && (pa.1, pb.1) == want)
}

fn check(run: &Run<'_>) -> Result<Outcome> {
    let started = Instant::now();
    let u1 = run.start_stratad("u1", &stratum1(&format!("{U1}:123")))?;
    let a_pid = run.start_stratad("a", &a_config())?;
    let mut rec = Record::default();
    let mut values: Vec<(&'static str, String)> = Vec::new();
    let mut failure: Option<String> = None;
    let mut next_probe = Instant::now();

    // Phase 1: a on u1 (2), b on a (3).
    let mut errs = (None, None);
    let phase1 =
        guard::wait_until(SYNC_TIMEOUT, SAMPLE_EVERY, || {
            let (a, b) = rec.sample(run, true)?;
            let a = a?;
            let shape = a.stratum == 2 && a.follows(U1) && b.stratum == 3 && b.follows(A);
            // Probing only once the shape is right.
            if !shape || !probe_both(run, &mut next_probe, &mut errs, (2, 3))? {
                return None;
            }
            let sessions_ok =
                session_to(run, "a", B).ok().flatten().is_some_and(|s| {
                    s.mode == "symmetric-active" && s.reach.is_some_and(|r| r != 0)
                }) && session_to(run, "b", A).ok().flatten().is_some_and(|s| {
                    s.mode == "symmetric-passive" && s.reach.is_some_and(|r| r != 0)
                });
            sessions_ok.then_some(())
        });
    let sync_s = started.elapsed().as_secs_f64();
    values.push(("a_error_us", us(errs.0)));
    values.push(("b_error_us", us(errs.1)));
    values.push(("sync_s", format!("{sync_s:.1}")));
    if phase1.is_err() {
        failure = Some(format!(
            "phase 1: a not on u1 (2) with b on a (3) within {}s",
            SYNC_TIMEOUT.as_secs()
        ));
    }

    // Phase 2: u1 dies; b on u3 (4), a on b (5).
    if failure.is_none() {
        run.stop(u1)?;
        let t0 = Instant::now();
        let mut errs = (None, None);
        let phase2 = guard::wait_until(FAILOVER_TIMEOUT, SAMPLE_EVERY, || {
            let (a, b) = rec.sample(run, true)?;
            let a = a?;
            let shape = a.stratum == 5 && a.follows(B) && b.stratum == 4 && b.follows(U3);
            (shape && probe_both(run, &mut next_probe, &mut errs, (5, 4))?).then_some(())
        });
        values.push(("failover_s", format!("{:.1}", t0.elapsed().as_secs_f64())));
        values.push(("a_error_after_us", us(errs.0)));
        values.push(("b_error_after_us", us(errs.1)));
        if phase2.is_err() {
            failure = Some(format!(
                "phase 2: b not on u3 (4) with a on b (5) within {}s after u1 stopped",
                FAILOVER_TIMEOUT.as_secs()
            ));
        }
    }

    // Phase 3: a dies; b's passive association goes.
    if failure.is_none() {
        let reach_before = session_to(run, "b", A)?.and_then(|s| s.reach);
        values.push(("b_reach_before", octal(reach_before)));
        run.stop(a_pid)?;
        let t0 = Instant::now();
        let phase3 = guard::wait_until(DEMOBILISE_TIMEOUT, SAMPLE_EVERY, || {
            let (_, b) = rec.sample(run, false)?;
            let gone = session_to(run, "b", A).ok()?.is_none();
            (gone && b.stratum == 4 && b.follows(U3)).then_some(())
        });
        values.push(("demobilise_s", format!("{:.1}", t0.elapsed().as_secs_f64())));
        if phase3.is_err() {
            failure = Some(format!(
                "phase 3: b's passive association with a not demobilised within {}s",
                DEMOBILISE_TIMEOUT.as_secs()
            ));
        }
    }

    values.push(("samples", rec.samples.to_string()));
    values.push(("loops", rec.loops.to_string()));
    if rec.loops > 0 {
        failure.get_or_insert_with(|| "timing loop sampled".to_owned());
        if let Some(l) = &rec.last_loop {
            values.push(("loop_sample", format!("{l:?}")));
        }
    }
    if let Some(f) = &failure {
        if let Some((a, b)) = &rec.last {
            values.push(("last", format!("{:?}", format!("a={a:?} b={b:?}"))));
        }
        for node in ["a", "b"] {
            if let Ok(st) = run.stratactl(node, "status") {
                let st: serde_json::Value = serde_json::from_str(&st).unwrap_or_default();
                values.push((
                    "counters",
                    format!("{:?}", format!("{node}: {}", st["instances"])),
                ));
            }
            if let Ok(sessions) = run.sessions(node) {
                let s: Vec<String> = sessions.iter().map(super::Session::summary).collect();
                values.push((
                    "sessions",
                    format!("{:?}", format!("{node}: {}", s.join(" | "))),
                ));
            }
        }
        values.push(("error", format!("{f:?}")));
    }
    Ok(Outcome {
        pass: failure.is_none(),
        values,
    })
}

/// The longest wait for both interop pairs.
pub const INTEROP_TIMEOUT: Duration = Duration::from_secs(90);

/// chronyd directives: serve `local stratum 3` and name `peer` as a peer.
fn chrony_peer_directives(peer: &str) -> String {
    format!("local stratum 3\nallow 10.200.0.0/16\nport 123\npeer {peer} minpoll -2 maxpoll 0\n")
}

/// `cargo xtask scenario interop-symmetric`; see the module doc. chronyd
/// (no passive mode) peers with a strata passive association, and a strata
/// `[[peer]]` peers with a chronyd `peer`: both strata sides synchronise,
/// and chronyd counts strata's packets valid (reach). chronyd does not
/// select strata as its source here, since strata is synchronised to it
/// (a loop chronyd refuses, as it should).
pub fn interop_symmetric() -> Scenario {
    Scenario::new(
        "interop-symmetric",
        "chronyd -x peer -> strata passive; strata [[peer]] <-> chronyd -x peer",
        interop_check,
    )
    .bare("chronyp")
    // No sources: chronyd's mode 1 mobilises a passive association.
    .daemon(
        "stratap",
        config::stepping("30ms", None, "10ms")
            + &config::access("peer", "10.200.5.0/24")
            + &config::listen("10.200.5.2:123"),
    )
    .bare("chronya")
    // chronyd as its symmetric active peer.
    .daemon(
        "strataa",
        config::stepping("-30ms", None, "10ms")
            + &config::source("peer", "10.200.5.3:123")
            + &config::listen("10.200.5.4:123"),
    )
    .on_lan("chronyp", "10.200.5.1/24")
    .on_lan("stratap", "10.200.5.2/24")
    .on_lan("chronya", "10.200.5.3/24")
    .on_lan("strataa", "10.200.5.4/24")
}

/// One strata/chronyd pair at one poll.
#[derive(Debug, Default, Clone)]
struct PairObs {
    /// chronyd's view of the strata peer.
    chrony: Option<super::interop::Source>,
    /// strata's session to chronyd.
    strata: Option<super::Session>,
    /// strata's true error and served stratum.
    probe: Option<(f64, u8)>,
}

impl PairObs {
    fn ok(&self, strata_mode: &str) -> bool {
        self.chrony
            .as_ref()
            .is_some_and(|c| c.mode == '=' && c.reach != 0 && c.offset_s.abs() < MAX_ERROR_S)
            && self
                .strata
                .as_ref()
                .is_some_and(|s| s.mode == strata_mode && s.reach.is_some_and(|r| r != 0))
            && self
                .probe
                .is_some_and(|(e, stratum)| e.abs() < MAX_ERROR_S && stratum == 4)
    }

    fn values(&self, tag: &'static [&'static str; 5]) -> Vec<(&'static str, String)> {
        let chrony = self.chrony.as_ref();
        let strata = self.strata.as_ref();
        vec![
            (tag[0], show(chrony, |c| format!("{}{}", c.mode, c.state))),
            (tag[1], octal(chrony.map(|c| c.reach))),
            (tag[2], us(chrony.map(|c| c.offset_s))),
            (
                tag[3],
                show(strata, |s| format!("{}/{}", s.mode, octal(s.reach))),
            ),
            (tag[4], us(self.probe.map(|p| p.0))),
        ]
    }
}

fn observe_pair(
    run: &Run<'_>,
    chronyc: &std::path::Path,
    chronyd: &super::interop::Chronyd,
    strata_node: &str,
    strata_ip: &str,
    chrony_ip: &str,
) -> PairObs {
    PairObs {
        chrony: super::interop::chronyc(chronyc, chronyd, "sources")
            .and_then(|o| super::interop::Source::parse_all(&o))
            .ok()
            .and_then(|v| v.into_iter().find(|s| s.name == strata_ip)),
        strata: session_to(run, strata_node, chrony_ip).ok().flatten(),
        probe: probe(run, strata_node, strata_ip),
    }
}

fn interop_check(run: &Run<'_>) -> Result<Outcome> {
    let chronyd = super::interop::find_program("chronyd")?;
    let chronyc = super::interop::find_program("chronyc")?;
    let started = Instant::now();
    let cp = super::interop::start_chronyd(
        run,
        &chronyd,
        "chronyp",
        &chrony_peer_directives("10.200.5.2"),
    )?;
    let ca = super::interop::start_chronyd(
        run,
        &chronyd,
        "chronya",
        &chrony_peer_directives("10.200.5.4"),
    )?;
    let (mut passive, mut active) = (PairObs::default(), PairObs::default());
    let (mut passive_s, mut active_s) = (None, None);
    let done = guard::wait_until(INTEROP_TIMEOUT, Duration::from_secs(1), || {
        passive = observe_pair(run, &chronyc, &cp, "stratap", "10.200.5.2", "10.200.5.1");
        active = observe_pair(run, &chronyc, &ca, "strataa", "10.200.5.4", "10.200.5.3");
        let t = started.elapsed().as_secs_f64();
        if passive.ok("symmetric-passive") {
            passive_s.get_or_insert(t);
        }
        if active.ok("symmetric-active") {
            active_s.get_or_insert(t);
        }
        (passive.ok("symmetric-passive") && active.ok("symmetric-active")).then_some(())
    });
    let mut values = passive.values(&[
        "chrony_to_passive",
        "chrony_reach_p",
        "chrony_offset_p_us",
        "strata_passive",
        "strata_p_error_us",
    ]);
    values.extend(active.values(&[
        "chrony_to_active",
        "chrony_reach_a",
        "chrony_offset_a_us",
        "strata_active",
        "strata_a_error_us",
    ]));
    values.push(("passive_ok_s", secs(passive_s)));
    values.push(("active_ok_s", secs(active_s)));
    if done.is_err() {
        for (tag, obs) in [("last_passive", &passive), ("last_active", &active)] {
            values.push((
                tag,
                format!(
                    "{:?}",
                    format!(
                        "chrony={} strata={} probe={:?}",
                        show(obs.chrony.as_ref(), super::interop::Source::summary),
                        show(obs.strata.as_ref(), super::Session::summary),
                        obs.probe
                    )
                ),
            ));
        }
        values.push((
            "error",
            format!(
                "\"not both pairs reachable in symmetric mode within {}s\"",
                INTEROP_TIMEOUT.as_secs()
            ),
        ));
    }
    Ok(Outcome {
        pass: done.is_ok(),
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(stratum: u8, refid: &str, reference: Option<&str>) -> PeerStatus {
        PeerStatus {
            synchronized: true,
            stratum,
            refid: refid.to_owned(),
            reference: reference.map(str::to_owned),
        }
    }

    #[test]
    fn loop_detection() {
        let a_via_b = st(5, B, Some("10.200.1.3:123"));
        let b_via_u3 = st(4, U3, Some("10.200.1.4:123"));
        let b_via_a = st(3, A, Some("10.200.1.2:40000"));
        assert!(!is_loop(&a_via_b, A, &b_via_u3, B), "a via b via u3");
        assert!(is_loop(&a_via_b, A, &b_via_a, B), "a via b via a");
        let a_via_u1 = st(2, U1, Some("10.200.1.1:123"));
        assert!(!is_loop(&a_via_u1, A, &b_via_a, B));
        assert!(!is_loop(&b_via_a, B, &a_via_u1, A));
        assert!(b_via_a.follows(A), "passive association: any port");
        assert!(!st(16, "INIT", None).follows(A));
    }

    #[test]
    fn status_parses_daemon_json() {
        let s: PeerStatus = serde_json::from_str(
            r#"{"synchronized": true, "stratum": 3, "offset_s": 0.0, "refid": "10.200.1.2",
                "reference": "10.200.1.2:51234", "instances": {}}"#,
        )
        .expect("status");
        assert_eq!(s.reference_ip(), Some("10.200.1.2".parse().expect("ip")));
        let s: PeerStatus = serde_json::from_str(
            r#"{"synchronized": false, "stratum": 16, "refid": "INIT", "reference": null}"#,
        )
        .expect("status");
        assert!(s.reference_ip().is_none());
    }

    #[test]
    fn scenario_is_well_formed_and_configs_render() {
        let sc = symmetric();
        sc.validate().expect("well-formed");
        assert!(sc.needs_daemon());
        let u3 = config::local(3, &format!("{U3}:123"));
        for (node, template) in [("a", a_config()), ("b", b_config()), ("u3", u3)] {
            let doc = config::rendered("symmetric", node, &template);
            assert_eq!(doc["clock"]["backend"].as_str(), Some("virtual"));
        }
        assert!(a_config().contains(&format!("\"{B}:123\"")));
        assert!(b_config().contains("level = \"peer\""));
    }
}
