//! Log set-up and the association log.
//!
//! Output goes to stderr: human-readable lines when stderr is a terminal,
//! JSON lines otherwise (one object per event: `timestamp`, `level`,
//! `fields.message` and the event's other fields, `target`), which
//! journald, `jq` and log shippers read as they are. `[log] format` (or
//! `stratad --log-format`) forces `human` or `json`; `RUST_LOG` overrides
//! the configured level.
//!
//! [`AssociationLog`] turns association snapshots into one info line per
//! change a person cares about (reachable, unreachable, calibrating,
//! calibrated, denied by a kiss-o'-death, selected, falseticker, …) and
//! never one per packet.

use std::collections::HashMap;
use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON lines otherwise.
    #[default]
    Auto,
    /// Human-readable lines (coloured only on a terminal).
    Human,
    /// JSON lines.
    Json,
}

impl LogFormat {
    /// The names `[log] format` accepts.
    pub const NAMES: &'static [&'static str] = &["auto", "human", "json"];

    /// Parses a `[log] format` value.
    #[must_use]
    pub fn from_name(name: &str) -> Option<LogFormat> {
        match name {
            "auto" => Some(LogFormat::Auto),
            "human" => Some(LogFormat::Human),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    /// `Human` or `Json`: what `Auto` means when stderr is (not) a terminal.
    #[must_use]
    pub fn resolve(self, terminal: bool) -> LogFormat {
        match self {
            LogFormat::Auto if terminal => LogFormat::Human,
            LogFormat::Auto => LogFormat::Json,
            other => other,
        }
    }
}

/// Installs the global subscriber. `level` is a tracing filter such as
/// `info` or `strata_engine=debug`.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let tty = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format.resolve(tty) {
        LogFormat::Json => builder.json().try_init(),
        _ => builder.with_ansi(tty).try_init(),
    };
}

/// An association as [`AssociationLog`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationView {
    /// The engine's id.
    pub id: u32,
    /// Its instance's name.
    pub instance: String,
    /// The remote, `ip:port`.
    pub address: String,
    /// Its mode (`"client"`, `"multicast-client"`, …).
    pub mode: &'static str,
    /// Its state (`"reachable"`, `"listening"`, …).
    pub state: &'static str,
    /// Whether it is the system peer.
    pub selected: bool,
    /// Its part in the last selection (`"falseticker"`, …), if a candidate.
    pub selection: Option<&'static str>,
}

/// One line for the log: what happened to which association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationChange {
    /// The instance's name.
    pub instance: String,
    /// The remote, `ip:port`.
    pub address: String,
    /// The association's mode.
    pub mode: &'static str,
    /// A stable event name: `new`, `reachable`, `unreachable`, `calibrating`,
    /// `calibrated`, `denied`, `selected`, `unselected`, `falseticker`,
    /// `rejected`, `truechimer` or `demobilised`.
    pub event: &'static str,
    /// The sentence for people.
    pub message: String,
    /// Whether it is worth an info line (clustering's candidate/outlier
    /// churn is not: those are debug lines).
    pub info: bool,
}

/// Remembers the last snapshot of every association and reports changes;
/// see the module doc.
#[derive(Debug, Default)]
pub struct AssociationLog {
    known: HashMap<u32, AssociationView>,
}

impl AssociationLog {
    /// Compares a full snapshot of the associations with the previous one
    /// and returns what changed, in snapshot order (removals last).
    pub fn update(
        &mut self,
        snapshot: impl IntoIterator<Item = AssociationView>,
    ) -> Vec<AssociationChange> {
        let mut changes = Vec::new();
        let mut seen = HashMap::with_capacity(self.known.len());
        for now in snapshot {
            let before = self.known.remove(&now.id);
            let change = |event: &'static str, message: String, info: bool| AssociationChange {
                instance: now.instance.clone(),
                address: now.address.clone(),
                mode: now.mode,
                event,
                message,
                info,
            };
            match &before {
                None => changes.push(change(
                    "new",
                    format!("new association ({}, {})", now.mode, now.state),
                    true,
                )),
                Some(b) if b.state != now.state => {
                    let (event, message) = state_change(b.state, now.state);
                    changes.push(change(event, message, true));
                }
                Some(_) => {}
            }
            let was_selected = before.as_ref().is_some_and(|b| b.selected);
            if now.selected && !was_selected {
                changes.push(change(
                    "selected",
                    "selected as the system peer".into(),
                    true,
                ));
            } else if !now.selected && was_selected {
                changes.push(change(
                    "unselected",
                    "no longer the system peer".into(),
                    true,
                ));
            }
            let role_before = before.as_ref().and_then(|b| b.selection);
            if now.selection != role_before {
                if let Some(c) = role_change(role_before, now.selection) {
                    let (event, message, info) = c;
                    changes.push(change(event, message, info));
                }
            }
            seen.insert(now.id, now);
        }
        let mut gone: Vec<AssociationView> = self.known.drain().map(|(_, v)| v).collect();
        gone.sort_by_key(|v| v.id);
        for g in gone {
            changes.push(AssociationChange {
                instance: g.instance,
                address: g.address,
                mode: g.mode,
                event: "demobilised",
                message: "association demobilised (removed)".into(),
                info: true,
            });
        }
        self.known = seen;
        changes
    }
}

/// The event name and sentence for a state change.
fn state_change(from: &str, to: &'static str) -> (&'static str, String) {
    match (from, to) {
        ("calibrating", "listening") => (
            "calibrated",
            "association calibrated; listening to mode 5".to_owned(),
        ),
        ("calibrating", "reachable") => {
            ("calibrated", "association calibrated; reachable".to_owned())
        }
        (_, "denied") => (
            "denied",
            "association stopped by a kiss-o'-death (DENY or RSTR): no more requests".to_owned(),
        ),
        (_, "reachable") => ("reachable", "association reachable".to_owned()),
        (_, "unreachable") => ("unreachable", "association unreachable".to_owned()),
        (_, "calibrating") => ("calibrating", "association calibrating".to_owned()),
        (_, "listening") => ("calibrated", "association listening".to_owned()),
        (_, other) => ("state", format!("association state {other}")),
    }
}

/// The event for a selection role change, if one is worth a line. The
/// system peer is reported through `selected`; candidate and outlier churn
/// (clustering from one sample to the next) only at debug level.
fn role_change(
    from: Option<&'static str>,
    to: Option<&'static str>,
) -> Option<(&'static str, String, bool)> {
    let bad = |r: Option<&str>| matches!(r, Some("falseticker" | "rejected"));
    match to {
        Some("falseticker") => Some((
            "falseticker",
            "association is a falseticker: outside the majority of sources".to_owned(),
            true,
        )),
        Some("rejected") => Some((
            "rejected",
            "association rejected by selection: root distance too large".to_owned(),
            true,
        )),
        Some(role @ ("candidate" | "outlier" | "system-peer")) if bad(from) => Some((
            "truechimer",
            format!("association agrees with the majority again ({role})"),
            true,
        )),
        Some(role @ ("candidate" | "outlier")) => {
            Some(("selection", format!("association is now {role}"), false))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u32, state: &'static str) -> AssociationView {
        AssociationView {
            id,
            instance: "default".into(),
            address: format!("10.200.1.{id}:123"),
            mode: "client",
            state,
            selected: false,
            selection: None,
        }
    }

    fn events(changes: &[AssociationChange]) -> Vec<(String, &'static str, bool)> {
        changes
            .iter()
            .map(|c| (c.address.clone(), c.event, c.info))
            .collect()
    }

    #[test]
    fn formats_parse_and_resolve() {
        assert_eq!(LogFormat::from_name("json"), Some(LogFormat::Json));
        assert_eq!(LogFormat::from_name("human"), Some(LogFormat::Human));
        assert_eq!(LogFormat::from_name("auto"), Some(LogFormat::Auto));
        assert_eq!(LogFormat::from_name("JSON"), None);
        for name in LogFormat::NAMES {
            assert!(LogFormat::from_name(name).is_some());
        }
        assert_eq!(LogFormat::Auto.resolve(true), LogFormat::Human);
        assert_eq!(LogFormat::Auto.resolve(false), LogFormat::Json);
        assert_eq!(LogFormat::Human.resolve(false), LogFormat::Human);
        assert_eq!(LogFormat::Json.resolve(true), LogFormat::Json);
    }

    #[test]
    fn reports_each_change_once() {
        let mut log = AssociationLog::default();
        let a = "10.200.1.1:123".to_owned();
        let b = "10.200.1.2:123".to_owned();
        assert_eq!(
            events(&log.update([view(1, "init"), view(2, "init")])),
            [(a.clone(), "new", true), (b.clone(), "new", true)]
        );
        assert!(log.update([view(1, "init"), view(2, "init")]).is_empty());
        let mut one = view(1, "reachable");
        one.selected = true;
        one.selection = Some("system-peer");
        let mut two = view(2, "reachable");
        two.selection = Some("falseticker");
        assert_eq!(
            events(&log.update([one.clone(), two.clone()])),
            [
                (a.clone(), "reachable", true),
                (a.clone(), "selected", true),
                (b.clone(), "reachable", true),
                (b.clone(), "falseticker", true),
            ]
        );
        // Nothing changed: nothing to say, however often asked.
        for _ in 0..3 {
            assert!(log.update([one.clone(), two.clone()]).is_empty());
        }
        two.selection = Some("candidate");
        let changes = log.update([one.clone(), two.clone()]);
        assert_eq!(events(&changes), [(b.clone(), "truechimer", true)]);
        assert_eq!(
            changes[0].message,
            "association agrees with the majority again (candidate)"
        );
        two.selection = Some("outlier");
        assert_eq!(
            events(&log.update([one.clone(), two.clone()])),
            [(b.clone(), "selection", false)],
            "clustering churn is a debug line"
        );
        one.selected = false;
        one.state = "unreachable";
        one.selection = None;
        assert_eq!(
            events(&log.update([one.clone(), two])),
            [(a.clone(), "unreachable", true), (a, "unselected", true)]
        );
        assert_eq!(
            events(&log.update([one])),
            [(b, "demobilised", true)],
            "a vanished association is demobilised"
        );
    }

    #[test]
    fn calibration_and_kiss_of_death_have_their_own_events() {
        let mut log = AssociationLog::default();
        let mut m = view(5, "calibrating");
        m.mode = "multicast-client";
        log.update([m.clone()]);
        m.state = "listening";
        let changes = log.update([m.clone()]);
        assert_eq!(changes[0].event, "calibrated");
        assert_eq!(changes[0].mode, "multicast-client");
        assert_eq!(
            changes[0].message,
            "association calibrated; listening to mode 5"
        );
        m.state = "calibrating";
        assert_eq!(log.update([m.clone()])[0].event, "calibrating");
        let mut c = view(6, "reachable");
        log.update([m.clone(), c.clone()]);
        c.state = "denied";
        let changes = log.update([m, c]);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].event, "denied");
        assert!(changes[0].message.contains("kiss-o'-death"));
    }
}
