//! The `flood` scenario: one abusive address against a rate-limited
//! server, while 20 legitimate clients keep polling.
//!
//! ```text
//!  cl  10.200.1.10-29 (20 clients) ── s1 10.200.1.1 ┐
//!                                                   srv [stratad, [rate-limit]]
//!  ab  10.200.2.2     (the abuser) ── s2 10.200.2.1 ┘
//! ```
//!
//! Everyone sends to the one listener, 10.200.1.1:123 (the abuser through
//! `s2`, routed), so the abuser and the clients share the server's socket
//! and its receive buffer, while each side's bytes show on its own
//! interface. `srv` runs `stratad` as a stratum-1 local reference with
//! `[rate-limit]` on ([`INTERVAL_S`] s, burst [`BURST`], `max-clients` [`MAX_CLIENTS`]:
//! fewer than the 21 clients, so the table is full and evicts while the
//! abuser floods). `xtask ntp-load` does the sending, counting every
//! answer at the sender: in `cl`, one client per address polls every 1 to
//! 1.5 s, never faster than the limiter's sustained rate ([`POLL_SECONDS`]
//! s in all, about 250 requests); in `ab`, from [`FLOOD_START`] on, one
//! address sends [`FLOOD_RATE`] requests/s for [`FLOOD_SECONDS`] s (at most
//! [`FLOOD_MAX`] requests).
//!
//! It passes when
//!
//! - the legitimate clients got a normal answer to at least 99% of their
//!   requests, and no KoD;
//! - the abuser sent at least 90% of its requests, got at most [`BURST`]
//!   normal answers, at least one and at most ⌈[`FLOOD_SECONDS`] /
//!   [`INTERVAL_S`]⌉ + 1 KoD RATE (and the server counted as many KoDs
//!   sent), and nothing else;
//! - the daemon's resident memory (`VmRSS`, sampled every 100 ms) stayed
//!   under its idle value plus [`QUEUE_ALLOWANCE_KB`] plus
//!   [`BYTES_PER_CLIENT`] per `max-clients` entry (see [`rss_cap_kb`]; a
//!   debug build idles at about 12.5 MiB, so the cap is about 20.5 MiB);
//! - no answer was longer than its request, and on the server's interfaces
//!   (`ip -s link`) bytes out ≤ bytes in, in all and toward the abuser.
//!
//! The summary line also shows the server's `rate-limited` drops, the
//! UDP receive-buffer drops in its namespace (`RcvbufErrors`: requests the
//! kernel dropped because the daemon fell behind) and the daemon's CPU use
//! over the load.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{guard, wait_until, Outcome, Run, Scenario};
use crate::ntpload::Counts;

/// The limiter's interval, seconds.
pub const INTERVAL_S: u64 = 1;
/// The limiter's burst.
pub const BURST: u64 = 8;
/// The limiter's table size.
pub const MAX_CLIENTS: u64 = 16;
/// The abuser's rate, requests per second.
pub const FLOOD_RATE: u64 = 10_000;
/// How long the abuser sends, seconds.
pub const FLOOD_SECONDS: u64 = 10;
/// The most requests the abuser sends.
pub const FLOOD_MAX: u64 = FLOOD_RATE * FLOOD_SECONDS;
/// When the abuser starts, after the clients.
pub const FLOOD_START: Duration = Duration::from_secs(3);
/// How long the legitimate clients poll, seconds (the flood and a margin
/// either side).
pub const POLL_SECONDS: u64 = 16;
/// Memory allowed above the idle daemon's for its bounded queues (4096
/// received datagrams, 1024 pending replies) and allocator slack, KiB.
pub const QUEUE_ALLOWANCE_KB: u64 = 8 * 1024;
/// A generous bound on one rate-limiter entry (slab entry plus its share of
/// a hash map reserved at twice the capacity), bytes.
pub const BYTES_PER_CLIENT: u64 = 256;
/// Overall bound on the check's waits.
const LOAD_TIMEOUT: Duration = Duration::from_secs(90);

const SERVER: &str = "10.200.1.1:123";
const ABUSER: &str = "10.200.2.2";

/// The legitimate clients' addresses, all on `cl`'s interface.
const LEGIT: [&str; 20] = [
    "10.200.1.10/24",
    "10.200.1.11/24",
    "10.200.1.12/24",
    "10.200.1.13/24",
    "10.200.1.14/24",
    "10.200.1.15/24",
    "10.200.1.16/24",
    "10.200.1.17/24",
    "10.200.1.18/24",
    "10.200.1.19/24",
    "10.200.1.20/24",
    "10.200.1.21/24",
    "10.200.1.22/24",
    "10.200.1.23/24",
    "10.200.1.24/24",
    "10.200.1.25/24",
    "10.200.1.26/24",
    "10.200.1.27/24",
    "10.200.1.28/24",
    "10.200.1.29/24",
];

fn server_config() -> String {
    format!(
        r#"
[clock]
backend = "virtual"

[local-reference]
stratum = 1

[rate-limit]
interval = "{INTERVAL_S}s"
burst = {BURST}
max-clients = {MAX_CLIENTS}

[[listen]]
address = "{SERVER}"
"#
    )
}

/// `cargo xtask scenario flood`.
pub fn flood() -> Scenario {
    let sc = Scenario::new(
        "flood",
        "20 clients poll while one address floods 10,000 req/s for 10 s: rate limit, KoD RATE, memory, no amplification",
        flood_check,
    )
    .daemon("srv", server_config())
    .bare("cl")
    .bare("ab")
    .veth(("srv", "s1", "10.200.1.1/24"), ("cl", "c0", LEGIT[0]))
    .veth(("srv", "s2", "10.200.2.1/24"), ("ab", "a0", "10.200.2.2/24"));
    LEGIT[1..]
        .iter()
        .fold(sc, |sc, cidr| sc.addr("cl", "c0", cidr))
}

/// The RSS cap, KiB: the idle daemon's RSS, the queue allowance and the
/// rate limiter's table at `max_clients`.
pub fn rss_cap_kb(idle_kb: u64, max_clients: u64) -> u64 {
    idle_kb + QUEUE_ALLOWANCE_KB + (max_clients * BYTES_PER_CLIENT).div_ceil(1024)
}

/// The most KoD RATE one client may get while sending for `seconds`.
pub fn kod_bound(seconds: u64, interval: u64) -> u64 {
    seconds.div_ceil(interval) + 1
}

/// `VmRSS` of process `pid`, KiB.
fn rss_kb(pid: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// CPU time of process `pid` (all threads, user and system), seconds.
fn cpu_s(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("bad /proc/{pid}/stat"))
    };
    let total = ticks(11)? + ticks(12)?;
    // USER_HZ, the unit of these fields, is 100 on Linux.
    #[allow(clippy::cast_precision_loss)] // tick counts far below 2^53
    Ok(total as f64 / 100.0)
}

/// (rx bytes, tx bytes) of interface `ifname` in `node`.
fn link_bytes(run: &Run<'_>, node: &str, ifname: &str) -> Result<(u64, u64)> {
    let out = guard::ip(&[
        "-n",
        &run.ns(node),
        "-s",
        "-j",
        "link",
        "show",
        "dev",
        &run.ifname(ifname),
    ])?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("ip -s -j: {out}"))?;
    let stats = &v[0]["stats64"];
    match (stats["rx"]["bytes"].as_u64(), stats["tx"]["bytes"].as_u64()) {
        (Some(rx), Some(tx)) => Ok((rx, tx)),
        _ => bail!("no byte counters in {out}"),
    }
}

/// UDP receive-buffer drops (`RcvbufErrors`) in `node`'s namespace.
fn rcvbuf_errors(run: &Run<'_>, node: &str) -> Result<u64> {
    let snmp = run.exec_in(node, Path::new("cat"), &["/proc/net/snmp"])?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .context("no RcvbufErrors")
}

/// The server's counters of the default instance: `kod_sent` and drops by reason.
fn server_counters(run: &Run<'_>) -> Result<(u64, BTreeMap<String, u64>)> {
    let inst = run.instance("srv", "default")?;
    Ok((inst.kod_sent, inst.dropped))
}

/// Waits for a process of this run to exit and reads its counts from its log.
fn counts_of(run: &Run<'_>, pid: u32, node: &str, label: &str) -> Result<Counts> {
    let status = wait_until(LOAD_TIMEOUT, Duration::from_millis(100), || {
        run.exit_status(pid)
    })
    .with_context(|| format!("{node}/{label} did not finish"))?;
    let log = run.node_dir(node).join(format!("{label}.log"));
    let text = std::fs::read_to_string(&log).with_context(|| format!("read {}", log.display()))?;
    if !status.success() {
        bail!("{node}/{label} failed ({status}): {}", text.trim());
    }
    Counts::parse_line(&text)
}

/// Everything the check measured.
#[derive(Debug, Clone, Default)]
struct Measured {
    legit: Counts,
    abuser: Counts,
    kod_sent: u64,
    rate_limited: u64,
    rcvbuf_errors: u64,
    rss_idle_kb: u64,
    rss_max_kb: u64,
    /// The daemon's CPU use over the load, percent of one core.
    cpu_pct: f64,
    /// Server interfaces, deltas over the load: (rx, tx) toward the
    /// clients and toward the abuser.
    legit_link: (u64, u64),
    abuser_link: (u64, u64),
}

/// A failed condition's name, or none.
fn verdict(m: &Measured) -> Vec<&'static str> {
    let mut failed = Vec::new();
    let l = &m.legit;
    let a = &m.abuser;
    let mut need = |ok: bool, what: &'static str| {
        if !ok {
            failed.push(what);
        }
    };
    need(
        l.sent > 0 && l.replies * 100 >= l.sent * 99,
        "legit_replies",
    );
    need(l.kod_rate + l.kod_deny + l.kod_other == 0, "legit_kod");
    need(a.sent * 10 >= FLOOD_MAX * 9, "abuser_sent");
    need(a.replies <= BURST, "abuser_replies");
    let bound = kod_bound(FLOOD_SECONDS, INTERVAL_S);
    need(a.kod_rate >= 1 && a.kod_rate <= bound, "abuser_kod");
    need(m.kod_sent == a.kod_rate, "server_kod_sent");
    need(a.kod_deny + a.kod_other + a.other == 0, "abuser_other");
    need(l.other + l.oversized + a.oversized == 0, "oversized");
    need(
        m.rss_max_kb <= rss_cap_kb(m.rss_idle_kb, MAX_CLIENTS),
        "rss",
    );
    let (rx, tx) = (
        m.legit_link.0 + m.abuser_link.0,
        m.legit_link.1 + m.abuser_link.1,
    );
    need(tx <= rx && m.abuser_link.1 <= m.abuser_link.0, "bytes");
    need(a.bytes_received <= a.bytes_sent, "abuser_bytes");
    failed
}

fn values(m: &Measured) -> Vec<(&'static str, String)> {
    let pct = |n: u64, d: u64| {
        if d == 0 {
            "none".to_owned()
        } else {
            #[allow(clippy::cast_precision_loss)] // counts far below 2^53
            let p = n as f64 * 100.0 / d as f64;
            format!("{p:.2}")
        }
    };
    vec![
        ("legit_sent", m.legit.sent.to_string()),
        ("legit_replies", m.legit.replies.to_string()),
        ("legit_pct", pct(m.legit.replies, m.legit.sent)),
        (
            "worst_client_pct",
            format!("{:.1}", m.legit.worst_client_pct),
        ),
        ("abuser_sent", m.abuser.sent.to_string()),
        ("abuser_replies", m.abuser.replies.to_string()),
        ("abuser_kod_rate", m.abuser.kod_rate.to_string()),
        (
            "kod_bound",
            kod_bound(FLOOD_SECONDS, INTERVAL_S).to_string(),
        ),
        ("server_kod_sent", m.kod_sent.to_string()),
        ("rate_limited", m.rate_limited.to_string()),
        ("rcvbuf_errors", m.rcvbuf_errors.to_string()),
        ("stratad_cpu_pct", format!("{:.0}", m.cpu_pct)),
        ("rss_idle_kb", m.rss_idle_kb.to_string()),
        ("rss_max_kb", m.rss_max_kb.to_string()),
        (
            "rss_cap_kb",
            rss_cap_kb(m.rss_idle_kb, MAX_CLIENTS).to_string(),
        ),
        ("bytes_in", (m.legit_link.0 + m.abuser_link.0).to_string()),
        ("bytes_out", (m.legit_link.1 + m.abuser_link.1).to_string()),
        ("abuser_link_in", m.abuser_link.0.to_string()),
        ("abuser_link_out", m.abuser_link.1.to_string()),
    ]
}

fn flood_check(run: &Run<'_>) -> Result<Outcome> {
    let pid = run.stratad_pid("srv")?.to_string();
    guard::ip(&[
        "-n",
        &run.ns("ab"),
        "route",
        "add",
        "default",
        "via",
        "10.200.2.1",
    ])?;
    let server: std::net::SocketAddr = SERVER.parse()?;
    wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        run.true_offset("cl", server).ok()
    })
    .context("the server does not answer")?;

    let rss_idle_kb = rss_kb(&pid)?;
    let legit_before = link_bytes(run, "srv", "s1")?;
    let abuser_before = link_bytes(run, "srv", "s2")?;
    let (kod_before, dropped_before) = server_counters(run)?;
    let rcvbuf_before = rcvbuf_errors(run, "srv")?;

    let sources: Vec<&str> = LEGIT
        .iter()
        .filter_map(|c| c.split_once('/').map(|(ip, _)| ip))
        .collect();
    let sources = sources.join(",");
    let poll_secs = POLL_SECONDS.to_string();
    let xtask = &run.bins.xtask;
    let cpu_before = cpu_s(&pid)?;
    let started = Instant::now();
    let poller = run.spawn_in(
        "cl",
        "poll",
        xtask,
        &[
            "ntp-load",
            "poll",
            SERVER,
            "--sources",
            &sources,
            "--interval",
            "1",
            "--jitter",
            "0.5",
            "--seconds",
            &poll_secs,
            "--max-requests",
            "1000",
        ],
    )?;
    // The flood starts once the clients are under way; meanwhile, and
    // until both are done, sample the daemon's memory.
    let mut rss_max_kb = rss_idle_kb;
    let mut flooder = None;
    let rate = FLOOD_RATE.to_string();
    let flood_secs = FLOOD_SECONDS.to_string();
    let flood_max = FLOOD_MAX.to_string();
    let done = wait_until(LOAD_TIMEOUT, Duration::from_millis(100), || {
        if let Ok(kb) = rss_kb(&pid) {
            rss_max_kb = rss_max_kb.max(kb);
        }
        if flooder.is_none() && started.elapsed() >= FLOOD_START {
            flooder = Some(run.spawn_in(
                "ab",
                "flood",
                xtask,
                &[
                    "ntp-load",
                    "flood",
                    SERVER,
                    "--sources",
                    ABUSER,
                    "--rate",
                    &rate,
                    "--seconds",
                    &flood_secs,
                    "--max-requests",
                    &flood_max,
                ],
            ));
        }
        let flood_done = match &flooder {
            Some(Ok(pid)) => run.exit_status(*pid).is_some(),
            Some(Err(_)) => true,
            None => false,
        };
        (flood_done && run.exit_status(poller).is_some()).then_some(())
    });
    let flooder = flooder.context("the flood never started")??;
    done.context("the load did not finish")?;

    let cpu_pct = (cpu_s(&pid)? - cpu_before) * 100.0 / started.elapsed().as_secs_f64();
    let legit = counts_of(run, poller, "cl", "poll")?;
    let abuser = counts_of(run, flooder, "ab", "flood")?;
    let legit_after = link_bytes(run, "srv", "s1")?;
    let abuser_after = link_bytes(run, "srv", "s2")?;
    let (kod_after, dropped_after) = server_counters(run)?;
    let delta = |k: &str| {
        dropped_after
            .get(k)
            .copied()
            .unwrap_or(0)
            .saturating_sub(dropped_before.get(k).copied().unwrap_or(0))
    };
    let m = Measured {
        legit,
        abuser,
        kod_sent: kod_after.saturating_sub(kod_before),
        rate_limited: delta("rate-limited"),
        rcvbuf_errors: rcvbuf_errors(run, "srv")?.saturating_sub(rcvbuf_before),
        rss_idle_kb,
        rss_max_kb,
        cpu_pct,
        legit_link: (
            legit_after.0.saturating_sub(legit_before.0),
            legit_after.1.saturating_sub(legit_before.1),
        ),
        abuser_link: (
            abuser_after.0.saturating_sub(abuser_before.0),
            abuser_after.1.saturating_sub(abuser_before.1),
        ),
    };
    let failed = verdict(&m);
    let mut values = values(&m);
    if !failed.is_empty() {
        values.push(("failed", failed.join(",")));
        if failed.contains(&"legit_replies") && m.rcvbuf_errors > 0 {
            values.push((
                "note",
                "\"requests were dropped at the server socket's full receive buffer: the daemon did not keep up (see stratad_cpu_pct)\"".to_owned(),
            ));
        }
    }
    Ok(Outcome {
        pass: failed.is_empty(),
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Measured {
        Measured {
            legit: Counts {
                sent: 140,
                replies: 140,
                bytes_sent: 140 * 48,
                bytes_received: 140 * 48,
                clients: 20,
                worst_client_pct: 100.0,
                ..Counts::default()
            },
            abuser: Counts {
                sent: 100_000,
                replies: 8,
                kod_rate: 10,
                bytes_sent: 4_800_000,
                bytes_received: 18 * 48,
                clients: 1,
                ..Counts::default()
            },
            kod_sent: 10,
            rate_limited: 99_982,
            rcvbuf_errors: 0,
            rss_idle_kb: 10_000,
            rss_max_kb: 11_000,
            cpu_pct: 30.0,
            legit_link: (140 * 90, 140 * 90),
            abuser_link: (9_000_000, 18 * 90),
        }
    }

    #[test]
    fn verdict_passes_and_fails_for_the_right_reasons() {
        assert!(verdict(&good()).is_empty());
        type Spoil = fn(&mut Measured);
        let cases: [(&str, Spoil); 9] = [
            ("legit_replies", |m| m.legit.replies = 138),
            ("legit_kod", |m| m.legit.kod_rate = 1),
            ("abuser_replies", |m| m.abuser.replies = 9),
            ("abuser_kod", |m| (m.abuser.kod_rate, m.kod_sent) = (12, 12)),
            ("abuser_kod", |m| (m.abuser.kod_rate, m.kod_sent) = (0, 0)),
            ("abuser_sent", |m| m.abuser.sent = 80_000),
            ("rss", |m| m.rss_max_kb = 10_000 + 8 * 1024 + 5),
            ("bytes", |m| m.abuser_link = (100, 200)),
            ("server_kod_sent", |m| m.kod_sent = 11),
        ];
        for (what, spoil) in cases {
            let mut m = good();
            spoil(&mut m);
            assert_eq!(verdict(&m), [what], "{what}");
        }
        // 99% exactly passes.
        let mut m = good();
        m.legit.sent = 200;
        m.legit.replies = 198;
        assert!(verdict(&m).is_empty());
    }

    #[test]
    fn bounds() {
        assert_eq!(kod_bound(10, 2), 6);
        assert_eq!(kod_bound(FLOOD_SECONDS, INTERVAL_S), 11);
        assert_eq!(kod_bound(10, 3), 5);
        assert_eq!(rss_cap_kb(10_000, 16), 10_000 + 8192 + 4);
        assert_eq!(
            rss_cap_kb(0, 100_000),
            8192 + 25_000,
            "256 B per entry at the default max-clients"
        );
    }

    #[test]
    fn config_is_valid() {
        let sc = flood();
        sc.validate().expect("well-formed");
        let doc: toml::Table = server_config().parse().expect("TOML");
        assert_eq!(
            doc["rate-limit"]["max-clients"].as_integer(),
            Some(i64::try_from(MAX_CLIENTS).expect("small"))
        );
        assert!(
            MAX_CLIENTS < u64::try_from(LEGIT.len() + 1).expect("small"),
            "the table must overflow"
        );
    }
}
