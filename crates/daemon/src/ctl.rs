//! stratactl's side of the control protocol: replies rendered for a terminal. The daemon
//! never renders; it only answers with the [`control`](crate::control) types.

use std::fmt::Write as _;

use crate::control::{Session, Status, Trace};

/// A signed time in seconds with a readable unit: `+1.234 s`, `-12.345 ms`, `+87.6 µs`.
pub fn format_seconds(secs: f64) -> String {
    if !secs.is_finite() {
        return "-".to_owned();
    }
    let abs = secs.abs();
    if abs >= 1.0 {
        format!("{secs:+.3} s")
    } else if abs >= 1e-3 {
        format!("{:+.3} ms", secs * 1e3)
    } else {
        format!("{:+.1} µs", secs * 1e6)
    }
}

/// An unsigned span in seconds (delay, dispersion, jitter): like [`format_seconds`] without
/// the sign.
fn format_span(secs: f64) -> String {
    let text = format_seconds(secs);
    text.strip_prefix('+').map(str::to_owned).unwrap_or(text)
}

/// An age in seconds: `12s`, `3m`, `5h`, `2d`, or `-`.
fn format_age(age: Option<f64>) -> String {
    match age {
        Some(secs) if secs.is_finite() && secs >= 0.0 => {
            let (value, unit) = if secs < 120.0 {
                (secs, "s")
            } else if secs < 7200.0 {
                (secs / 60.0, "m")
            } else if secs < 172_800.0 {
                (secs / 3600.0, "h")
            } else {
                (secs / 86_400.0, "d")
            };
            format!("{value:.0}{unit}")
        }
        _ => "-".to_owned(),
    }
}

/// The status as an aligned `name: value` listing.
pub fn render_status(status: &Status) -> String {
    let mut rows: Vec<(String, String)> = vec![
        (
            "synchronized".into(),
            if status.synchronized { "yes" } else { "no" }.into(),
        ),
        ("stratum".into(), status.stratum.to_string()),
        ("reference".into(), reference_text(status)),
        ("refid".into(), status.refid.clone()),
        ("offset".into(), format_seconds(status.offset_s)),
        ("jitter".into(), format_span(status.jitter_s)),
        (
            "frequency".into(),
            format!("{:+.3} ppm", status.frequency_ppm),
        ),
        ("leap".into(), status.leap.clone()),
        ("precision".into(), format!("2^{} s", status.precision)),
        ("root delay".into(), format_span(status.root_delay_s)),
        (
            "root dispersion".into(),
            format_span(status.root_dispersion_s),
        ),
        ("poll".into(), format!("2^{} s", status.poll)),
        (
            "last update".into(),
            match status.last_update_s {
                Some(_) => format!("{} ago", format_age(status.last_update_s)),
                None => "never".into(),
            },
        ),
        ("clock steps".into(), status.clock_steps.to_string()),
        ("clock backend".into(), status.clock_backend.clone()),
    ];
    if let Some(e) = &status.estimate {
        rows.extend([
            (
                "smoothed offset".into(),
                format!(
                    "{} ± {}",
                    format_seconds(e.offset_s),
                    format_span(e.offset_uncertainty_s)
                ),
            ),
            ("rms offset".into(), format_span(e.rms_offset_s)),
            ("skew".into(), format!("{:.4} ppm", e.skew_ppm)),
            ("samples".into(), e.samples.to_string()),
        ]);
    }
    for (name, counters) in &status.instances {
        let dropped: u64 = counters.dropped.values().sum();
        let mut value = format!(
            "{} ({}), received {}, sent {}, dropped {}, kod sent {}",
            counters.state,
            counters.placement,
            counters.received,
            counters.sent,
            dropped,
            counters.kod_sent
        );
        if !counters.dropped.is_empty() {
            let reasons: Vec<String> = counters
                .dropped
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            let _ = write!(value, " ({})", reasons.join(", "));
        }
        if let Some(error) = &counters.error {
            let _ = write!(value, "; {error}");
        }
        rows.push((format!("instance {name}"), value));
    }
    let mut out = String::new();
    for line in name_value_lines(&rows) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The system peer and its instance: `192.0.2.1:123 (instance vpna)`, or `-`.
fn reference_text(status: &Status) -> String {
    let Some(reference) = &status.reference else {
        return "-".to_owned();
    };
    match &status.reference_instance {
        Some(instance) => {
            // `reference` carries `%INSTANCE` outside the default instance.
            let address = reference
                .strip_suffix(&format!("%{instance}"))
                .unwrap_or(reference);
            format!("{address} (instance {instance})")
        }
        None => reference.clone(),
    }
}

/// `name: value` lines with the values lined up.
fn name_value_lines(rows: &[(String, String)]) -> Vec<String> {
    let width = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(name, value)| {
            format!("{:<width$}  {value}", format!("{name}:"), width = width + 1)
                .trim_end()
                .to_owned()
        })
        .collect()
}

/// Rows of cells as lines with the columns lined up (two spaces apart); columns whose
/// `right` flag is set are right-aligned. Trailing blanks are trimmed.
fn align<const N: usize>(rows: &[[String; N]], right: [bool; N]) -> Vec<String> {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                if right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// The sessions as an aligned table, one row per association.
pub fn render_sessions(sessions: &[Session]) -> String {
    const HEADER: [&str; 13] = [
        "INSTANCE", "ADDRESS", "MODE", "STATE", "ST", "POLL", "REACH", "OFFSET", "DELAY", "DISP",
        "JITTER", "REFID", "LAST",
    ];
    // Columns that hold numbers are right-aligned.
    const RIGHT: [bool; 13] = [
        false, false, false, false, true, true, true, true, true, true, true, false, true,
    ];
    let mut rows: Vec<[String; 13]> = vec![HEADER.map(str::to_owned)];
    for s in sessions {
        rows.push([
            s.instance.clone(),
            s.address.clone(),
            s.mode.clone(),
            s.state.clone(),
            s.stratum.to_string(),
            s.poll.to_string(),
            format!("{:03o}", s.reach),
            format_seconds(s.offset_s),
            format_span(s.delay_s),
            format_span(s.dispersion_s),
            format_span(s.jitter_s),
            s.refid.clone(),
            format_age(s.last_s),
        ]);
    }
    let mut out = String::new();
    for line in align(&rows, RIGHT) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `2^6 s`.
fn format_poll(poll: i8) -> String {
    format!("2^{poll} s")
}

/// Every session as a block of aligned `name: value` lines followed by its clock filter
/// register, blocks separated by a blank line (`stratactl sessions --verbose`). Sessions
/// without details (from a daemon that sends none) show the plain fields only.
pub fn render_sessions_verbose(sessions: &[Session]) -> String {
    let mut blocks = Vec::with_capacity(sessions.len());
    for s in sessions {
        let mut rows: Vec<(String, String)> = vec![
            ("mode".into(), s.mode.clone()),
            ("state".into(), s.state.clone()),
        ];
        let d = s.detail.as_ref();
        if let Some(d) = d {
            rows.push((
                "selection".into(),
                d.selection
                    .clone()
                    .unwrap_or_else(|| "not a candidate".into()),
            ));
        }
        rows.push(("stratum".into(), s.stratum.to_string()));
        rows.push(("refid".into(), s.refid.clone()));
        rows.push(("reach".into(), format!("{:03o}", s.reach)));
        let mut poll = format_poll(s.poll);
        if let Some(d) = d {
            if let Some(remote) = d.remote_poll {
                let _ = write!(poll, ", remote {}", format_poll(remote));
            }
            match d.next_poll_s {
                Some(next) => {
                    let _ = write!(poll, ", next in {}", format_age(Some(next.max(0.0))));
                }
                None => poll.push_str(", sends nothing"),
            }
        }
        rows.push(("poll".into(), poll));
        rows.push((
            "last".into(),
            match s.last_s {
                Some(_) => format!("{} ago", format_age(s.last_s)),
                None => "never".into(),
            },
        ));
        rows.push(("offset".into(), format_seconds(s.offset_s)));
        rows.push(("delay".into(), format_span(s.delay_s)));
        rows.push(("dispersion".into(), format_span(s.dispersion_s)));
        rows.push(("jitter".into(), format_span(s.jitter_s)));
        if let Some(d) = d {
            rows.push((
                "remote leap".into(),
                d.remote_leap.clone().unwrap_or_else(|| "-".into()),
            ));
            rows.push(("root delay".into(), format_span(d.root_delay_s)));
            rows.push(("root dispersion".into(), format_span(d.root_dispersion_s)));
            rows.push((
                "authentication".into(),
                match d.key_id {
                    Some(key) if d.authenticated => format!("key {key}, authenticated"),
                    Some(key) => format!("key {key}, nothing authenticated yet"),
                    None => "none".into(),
                },
            ));
            rows.push((
                "kiss-o'-death".into(),
                match d.kod_poll_floor {
                    Some(floor) => format!("RATE: polls at least every {}", format_poll(floor)),
                    None if s.state == "denied" => "DENY or RSTR: no more requests".into(),
                    None => "none".into(),
                },
            ));
        }
        if let Some(calibration) = calibration_text(s) {
            rows.push(("calibration".into(), calibration));
        }
        let mut block = format!("{} {}\n", s.instance, s.address);
        for line in name_value_lines(&rows) {
            let _ = writeln!(block, "  {line}");
        }
        if let Some(d) = d {
            if d.filter.is_empty() {
                block.push_str("  filter register: empty\n");
            } else {
                block.push_str("  filter register (newest first):\n");
                let mut table: Vec<[String; 5]> =
                    vec![["#", "OFFSET", "DELAY", "DISP", "AGE"].map(str::to_owned)];
                for (i, f) in d.filter.iter().enumerate() {
                    table.push([
                        (i + 1).to_string(),
                        format_seconds(f.offset_s),
                        format_span(f.delay_s),
                        format_span(f.dispersion_s),
                        format_age(Some(f.age_s)),
                    ]);
                }
                for line in align(&table, [true; 5]) {
                    let _ = writeln!(block, "    {line}");
                }
            }
        }
        blocks.push(block);
    }
    blocks.join("\n")
}

/// The calibration line of a session whose mode calibrates (or that has calibrated).
fn calibration_text(s: &Session) -> Option<String> {
    let progress = s
        .detail
        .as_ref()
        .and_then(|d| d.calibration_requests.zip(d.calibration_replies));
    let calibrates = matches!(
        s.mode.as_str(),
        "symmetric-active" | "broadcast-client" | "multicast-client"
    );
    if !calibrates && progress.is_none() && s.calibrations == 0 {
        return None;
    }
    let plural = |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut parts = Vec::new();
    if let Some((requests, replies)) = progress {
        parts.push(format!(
            "volley in progress ({}, {})",
            plural(requests.into(), "request", "requests"),
            plural(replies.into(), "reply", "replies")
        ));
    }
    if let Some(delay) = s.calibrated_delay_s {
        parts.push(format!(
            "delay {}, measured {} ago",
            format_span(delay),
            format_age(s.calibration_age_s)
        ));
    }
    parts.push(format!(
        "{} done",
        plural(s.calibrations, "volley", "volleys")
    ));
    Some(parts.join(", "))
}

/// The trace as a table, one row per hop, and the reason it ended.
pub fn render_trace(trace: &Trace) -> String {
    let mut rows: Vec<[String; 6]> =
        vec![["ADDRESS", "ST", "OFFSET", "DELAY", "ROOT DIST", "REFID"].map(str::to_owned)];
    for h in &trace.hops {
        rows.push([
            h.address.clone(),
            h.stratum.to_string(),
            format_seconds(h.offset_s),
            format_span(h.delay_s),
            format_span(h.root_distance_s),
            h.refid.clone(),
        ]);
    }
    let mut out = String::new();
    // Address and refid left, numbers right.
    for line in align(&rows, [false, true, true, true, true, false]) {
        out.push_str(&line);
        out.push('\n');
    }
    let _ = writeln!(out, "end: {} (instance {})", trace.end, trace.instance);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fixtures::{sessions, status, trace};

    #[test]
    fn status_text_is_exact() {
        let expected = "\
synchronized:      yes
stratum:           3
reference:         10.200.1.1:123 (instance vpna)
refid:             10.200.1.1
offset:            -12.5 µs
jitter:            4.0 µs
frequency:         -12.345 ppm
leap:              none
precision:         2^-20 s
root delay:        450.0 µs
root dispersion:   2.500 ms
poll:              2^4 s
last update:       10s ago
clock steps:       1
clock backend:     virtual
instance default:  up (default), received 1200, sent 1190, dropped 10, kod sent 2 (access-denied 3, rate-limited 7)
instance vpna:     down (netns pe1-vpna), received 40, sent 40, dropped 0, kod sent 0; network namespace \"pe1-vpna\" is gone
";
        assert_eq!(render_status(&status()), expected);
        // The default instance's reference has no suffix.
        let mut local = status();
        local.reference = Some("10.200.1.1:123".to_owned());
        local.reference_instance = Some("default".to_owned());
        assert!(render_status(&local)
            .contains("reference:         10.200.1.1:123 (instance default)\n"));
        local.reference = None;
        local.reference_instance = None;
        assert!(render_status(&local).contains("reference:         -\n"));
        // With an estimate: the smoothed offset and its uncertainty.
        local.estimate = Some(crate::control::Estimate {
            offset_s: -2.5e-6,
            offset_uncertainty_s: 0.8e-6,
            rms_offset_s: 3.1e-6,
            skew_ppm: 0.0123,
            samples: 40,
        });
        let text = render_status(&local);
        assert!(
            text.contains("smoothed offset:   -2.5 µs ± 0.8 µs\n"),
            "{text}"
        );
        assert!(text.contains("rms offset:        3.1 µs\n"), "{text}");
        assert!(text.contains("skew:              0.0123 ppm\n"), "{text}");
        assert!(text.contains("samples:           40\n"), "{text}");
    }

    #[test]
    fn sessions_table_is_exact() {
        let expected = "\
INSTANCE  ADDRESS         MODE              STATE        ST  POLL  REACH    OFFSET     DELAY      DISP  JITTER  REFID       LAST
vpna      10.200.1.1:123  client            selected      2     4    377  -12.5 µs  210.0 µs  1.500 ms  4.0 µs  10.200.9.9    3s
default   10.200.3.1:123  multicast-client  calibrating  16     6    000   +0.0 µs    0.0 µs  16.000 s  0.0 µs  0.0.0.0        -
";
        assert_eq!(render_sessions(&sessions()), expected);
    }

    #[test]
    fn verbose_sessions_are_exact_blocks() {
        let expected = "\
vpna 10.200.1.1:123
  mode:             client
  state:            selected
  selection:        system-peer
  stratum:          2
  refid:            10.200.9.9
  reach:            377
  poll:             2^4 s, remote 2^4 s, next in 13s
  last:             3s ago
  offset:           -12.5 µs
  delay:            210.0 µs
  dispersion:       1.500 ms
  jitter:           4.0 µs
  remote leap:      none
  root delay:       240.0 µs
  root dispersion:  1.000 ms
  authentication:   key 7, authenticated
  kiss-o'-death:    none
  filter register (newest first):
    #     OFFSET     DELAY      DISP  AGE
    1   -12.5 µs  210.0 µs    1.0 µs   3s
    2    +0.0 µs  16.000 s  16.000 s  19s
    3  +150.0 µs  1.200 ms  300.0 µs  35s

default 10.200.3.1:123
  mode:             multicast-client
  state:            calibrating
  selection:        not a candidate
  stratum:          16
  refid:            0.0.0.0
  reach:            000
  poll:             2^6 s, next in 0s
  last:             never
  offset:           +0.0 µs
  delay:            0.0 µs
  dispersion:       16.000 s
  jitter:           0.0 µs
  remote leap:      -
  root delay:       0.0 µs
  root dispersion:  0.0 µs
  authentication:   none
  kiss-o'-death:    RATE: polls at least every 2^8 s
  calibration:      volley in progress (3 requests, 1 reply), delay 800.0 µs, measured 67m ago, 1 volley done
  filter register: empty
";
        let text = render_sessions_verbose(&sessions());
        assert_eq!(text, expected, "\n{text}");
        // Without details (an older daemon), the plain fields only.
        let mut bare = sessions();
        bare.truncate(1);
        bare[0].detail = None;
        let text = render_sessions_verbose(&bare);
        assert!(
            text.starts_with("vpna 10.200.1.1:123\n  mode:        client\n"),
            "{text}"
        );
        assert!(
            !text.contains("filter") && !text.contains("selection"),
            "{text}"
        );
    }

    #[test]
    fn trace_table_lines_up() {
        let text = render_trace(&trace());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("ADDRESS"), "{text}");
        assert!(
            lines[1].starts_with("10.200.1.2:123  ") && lines[1].ends_with("10.200.2.1"),
            "{text}"
        );
        assert!(
            lines[2].contains("-2.000 ms") && lines[2].ends_with("GPS"),
            "{text}"
        );
        // The stratum column is right-aligned under its header.
        let col = lines[0].find("ST").unwrap() + 1;
        assert_eq!(&lines[1][col..=col], "2", "{text}");
        assert_eq!(&lines[2][col..=col], "1", "{text}");
        assert_eq!(lines[3], "end: stratum 1 (GPS) (instance vpn1)");
    }
}
