//! What the demo prints: the full-screen live view (on a terminal), one
//! progress line per node and tick (otherwise, e.g. in CI logs), and the
//! final summary table.

use std::{fmt::Write as _, time::Duration};

use super::topology::{NodeSpec, DIAGRAM, NODES};
use super::{NodeView, Tracker, SETTLE_TICKS, TIMEOUT};
use crate::scenario::{Session, Status};

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

fn show_freq(status: Option<&Status>) -> String {
    status
        .and_then(|s| s.frequency_ppm)
        .map_or_else(|| "-".to_owned(), |f| format!("{f:+.3}"))
}

fn sync_word(status: Option<&Status>) -> &'static str {
    match status.map(|s| s.synchronized) {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

/// Where node `i` stands: synchronised (since when), or what it lacks.
fn goal_word(i: usize, spec: &NodeSpec, view: &NodeView, tracker: &Tracker) -> String {
    let synced = tracker.synced[i]
        .then_some(tracker.since[i])
        .flatten()
        .map(|t| format!("synchronised at {:.1} s", t.as_secs_f64()));
    match (spec.want_stratum, view.shortfall(spec), synced) {
        (None, _, _) => "reference".to_owned(),
        (Some(_), None, Some(s)) => s,
        (Some(_), None, None) => format!("ok {}/{SETTLE_TICKS}", tracker.streak[i]),
        (Some(_), Some(why), Some(s)) => format!("{s}; now {why}"),
        (Some(_), Some(why), None) => format!("waiting: {why}"),
    }
}

/// The instances of a node that has more than the default one, with
/// their placement and counters; `None` otherwise.
fn instances_line(view: &NodeView) -> Option<String> {
    if view.instances.len() < 2 {
        return None;
    }
    let parts: Vec<String> = view
        .instances
        .iter()
        .map(|(name, i)| {
            let placement = if i.placement == "default" {
                String::new()
            } else {
                format!(" in {}", i.placement)
            };
            format!(
                "{name} {}{placement} (rx {}, tx {})",
                i.state, i.received, i.sent
            )
        })
        .collect();
    Some(format!("instances: {}", parts.join("; ")))
}

/// The columns of a session row.
fn session_row(s: &Session) -> String {
    format!(
        "  {:<9} {:<16} {:<17} {:<11} {:>7} {:>5} {:>4} {:>10} {:>9}",
        s.instance,
        s.address,
        s.mode,
        s.state,
        show_opt(s.stratum),
        show_reach(s.reach),
        show_opt(s.poll),
        show_ms(s.offset_s, true),
        show_ms(s.delay_s, false),
    )
}

/// A node's sessions, the default instance first.
fn sorted_sessions(view: &NodeView) -> Vec<&Session> {
    let mut sessions: Vec<&Session> = view.sessions.iter().collect();
    sessions.sort_by_key(|s| {
        (
            s.instance != "default",
            s.instance.clone(),
            s.address.clone(),
        )
    });
    sessions
}

/// The full-screen view of one tick (without the clear-screen sequence);
/// about 21 lines, so it fits a 24-line terminal.
pub fn render_view(elapsed: Duration, views: &[NodeView], tracker: &Tracker) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "strata demo    t = {:.1} s (timeout {} s)\n\
         goal: each node synchronised at its stratum, its sessions up, |true error| < 1 ms, for {SETTLE_TICKS} ticks in a row\n\n\
         {DIAGRAM}\n",
        elapsed.as_secs_f64(),
        TIMEOUT.as_secs()
    );
    let _ = writeln!(
        out,
        "{:<4} {:>7} {:>4} {:>13} {:>12} {:>5}  goal",
        "node", "stratum", "sync", "true error us", "freq ppm", "steps"
    );
    let _ = writeln!(
        out,
        "  {:<9} {:<16} {:<17} {:<11} {:>7} {:>5} {:>4} {:>10} {:>9}",
        "instance", "address", "mode", "state", "stratum", "reach", "poll", "offset ms", "delay ms"
    );
    for (i, (spec, view)) in NODES.iter().zip(views).enumerate() {
        let status = view.status.as_ref();
        let _ = writeln!(
            out,
            "{:<4} {:>7} {:>4} {:>13} {:>12} {:>5}  {}",
            spec.name,
            show_opt(status.map(|s| s.stratum)),
            sync_word(status),
            show_us(view.true_error_s),
            show_freq(status),
            show_opt(status.and_then(|s| s.clock_steps)),
            goal_word(i, spec, view, tracker),
        );
        if view.sessions.is_empty() && view.problem.is_none() {
            let why = if spec.want_stratum.is_none() {
                "it only serves"
            } else {
                "none yet"
            };
            let _ = writeln!(out, "  (no associations: {why})");
        }
        for s in sorted_sessions(view) {
            let _ = writeln!(out, "{}", session_row(s));
        }
        if let Some(line) = instances_line(view) {
            let _ = writeln!(out, "  {line}");
        }
        if let Some(p) = &view.problem {
            let _ = writeln!(out, "  ! {p}");
        }
    }
    out
}

/// One line per node for one tick (when stdout is not a terminal).
pub fn progress_lines(elapsed: Duration, views: &[NodeView], tracker: &Tracker) -> String {
    let mut out = String::new();
    for (i, (spec, view)) in NODES.iter().zip(views).enumerate() {
        let status = view.status.as_ref();
        let _ = write!(
            out,
            "demo t={:.1}s {:<3} st={} sync={} err_us={}",
            elapsed.as_secs_f64(),
            spec.name,
            show_opt(status.map(|s| s.stratum)),
            sync_word(status),
            show_us(view.true_error_s),
        );
        for s in sorted_sessions(view) {
            let _ = write!(
                out,
                " [{} {} {} {} reach={} poll={}]",
                s.instance,
                s.address,
                s.mode,
                s.state,
                show_reach(s.reach),
                show_opt(s.poll)
            );
        }
        let _ = writeln!(out, " -- {}", goal_word(i, spec, view, tracker));
    }
    out
}

/// The final table: stratum, true error, frequency, steps and time to sync
/// of every node.
pub fn summary_table(views: &[NodeView], tracker: &Tracker) -> String {
    let mut out = format!(
        "{:<4} {:>7} {:>14} {:>10} {:>6} {:>13}  {}\n",
        "node", "stratum", "true error us", "freq ppm", "steps", "time to sync", "role"
    );
    for (i, (spec, view)) in NODES.iter().zip(views).enumerate() {
        let status = view.status.as_ref();
        let sync = match (spec.want_stratum, tracker.synced[i], tracker.since[i]) {
            (None, _, _) => "(reference)".to_owned(),
            (Some(_), true, Some(t)) => format!("{:.1} s", t.as_secs_f64()),
            (Some(_), _, _) => "not synced".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<4} {:>7} {:>14} {:>10} {:>6} {:>13}  {}",
            spec.name,
            show_opt(status.map(|s| s.stratum)),
            show_us(view.true_error_s),
            show_freq(status),
            show_opt(status.and_then(|s| s.clock_steps)),
            sync,
            spec.role,
        );
    }
    out
}

/// `stratum:S,true_error_us:E,sync_s:T` for the scenario's summary line.
pub fn outcome_value(view: &NodeView, since: Option<Duration>) -> String {
    let stratum = show_opt(view.status.as_ref().map(|s| s.stratum));
    let sync = since.map_or_else(|| "-".to_owned(), |t| format!("{:.1}", t.as_secs_f64()));
    format!(
        "stratum:{stratum},true_error_us:{},sync_s:{sync}",
        show_us(view.true_error_s)
    )
}
