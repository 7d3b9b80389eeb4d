//! The `access` scenario: access levels per VPN instance, with the same
//! customer address allowed in one VPN and refused in the other.
//!
//! One PE `stratad` (stratum-1 local reference, `[access-policy] deny =
//! "kod"`) serves two namespace instances. CE `ca` in VPN A and CE `cb` in
//! VPN B have the same address, 10.200.1.2, on the same subnet toward the
//! PE. VPN A has a rule per level, and first in the file a `query` rule
//! for all of 10.200.0.0/16, which every higher level's narrower prefix
//! outranks (levels are checked from `peer` down, whatever the order);
//! VPN B has rules, none of which lists 10.200.1.0/24:
//!
//! ```text
//!  ca 10.200.1.2 (client)  ── a1 10.200.1.1 ┐  vpna: synchronization 10.200.1.0/24
//!  cp 10.200.2.2 ([[peer]]) ── a2 10.200.2.1 │        peer            10.200.2.0/24
//!  cs 10.200.3.2 ([[peer]]) ── a3 10.200.3.1 ├ pe-vpna    server      10.200.3.0/24
//!  cq 10.200.4.2 (probes)   ── a4 10.200.4.1 ┘        query           10.200.4.0/24
//!  cb 10.200.1.2 (client)  ── b1 10.200.1.1 ── pe-vpnb  vpnb: synchronization 10.200.6.0/24
//!                               [pe: stratad]
//! ```
//!
//! Checks, each printed as `  access-NAME: pass|FAIL key=value ...`:
//!
//! - `access-overlap`: `ca` synchronises (stratum 2, true error < 1 ms);
//!   `cb`, with the same address and config, has its session `denied` and
//!   is not synchronised; a mode-3 probe from `ca` gets the time, one from
//!   `cb` a KoD DENY, and the PE counts one `access-denied` drop and one
//!   KoD sent in `vpnb` for it.
//! - `access-query`: a probe from the `query` prefix gets a KoD DENY (one
//!   `access-denied` in `vpna`), one from the `server` prefix the time.
//! - `access-peer`: `cp`'s symmetric active packets mobilise a symmetric
//!   passive association on the PE (listed in its sessions, reached); `cs`,
//!   at level `server`, gets stateless answers (its symmetric active
//!   session is reached and it synchronises) but no association on the PE.
//! - `access-control-modes`: mode 6 and 7 packets from a time-only
//!   source get nothing, counted in their instance (two in `vpna`: mode 7
//!   as `control-mode`, mode 6 as `access-denied`, since `synchronization`
//!   grants no control queries; one `access-denied` in `vpnb`, where no
//!   rule matches and mode 6 is closed to all but loopback).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    config::{client, peer},
    wait_until, Line, Outcome, Run, Scenario,
};
use crate::ntpload::Counts;

/// How long everything may take to synchronise.
const SYNC_TIMEOUT: Duration = Duration::from_secs(150);
/// Largest accepted true clock error.
const MAX_ERROR_S: f64 = 1e-3;

const PE_CONFIG: &str = r#"
[clock]
backend = "virtual"

[local-reference]
stratum = 1

[access-policy]
deny = "kod"

[[instance]]
name = "vpna"
netns = "${prefix}pe-vpna"

[[instance]]
name = "vpnb"
netns = "${prefix}pe-vpnb"

[[listen]]
address = "10.200.1.1:123"
instance = "vpna"

[[listen]]
address = "10.200.2.1:123"
instance = "vpna"

[[listen]]
address = "10.200.3.1:123"
instance = "vpna"

[[listen]]
address = "10.200.4.1:123"
instance = "vpna"

[[listen]]
address = "10.200.1.1:123"
instance = "vpnb"

# VPN A: one prefix per level. The broad query rule comes first in the
# file; the higher levels of the narrower prefixes outrank it.
[[access]]
instance = "vpna"
level = "query"
prefixes = ["10.200.0.0/16"]

[[access]]
instance = "vpna"
level = "peer"
prefixes = ["10.200.2.0/24"]

[[access]]
instance = "vpna"
level = "server"
prefixes = ["10.200.3.0/24"]

[[access]]
instance = "vpna"
level = "synchronization"
prefixes = ["10.200.1.0/24"]

[[access]]
instance = "vpna"
level = "query"
prefixes = ["10.200.4.0/24"]

# VPN B: rules, but none for 10.200.1.0/24 (refused there).
[[access]]
instance = "vpnb"
level = "synchronization"
prefixes = ["10.200.6.0/24"]
"#;

/// `cargo xtask scenario access`.
pub fn access() -> Scenario {
    Scenario::new(
        "access",
        "access levels per VPN: one CE address served in VPN A, KoD DENY in VPN B; peer/server/query levels; mode 6/7 refused to time-only sources",
        access_check,
    )
    .daemon("pe", PE_CONFIG)
    .bare("pe-vpna")
    .bare("pe-vpnb")
    .daemon("ca", client("200ms", "10.200.1.1:123", "10.200.1.2:123"))
    .daemon("cb", client("-150ms", "10.200.1.1:123", "10.200.1.2:123"))
    .daemon("cp", peer("250ms", "10.200.2.1:123", "10.200.2.2:123"))
    .daemon("cs", peer("-250ms", "10.200.3.1:123", "10.200.3.2:123"))
    .bare("cq")
    .veth(("pe-vpna", "a1", "10.200.1.1/24"), ("ca", "e1", "10.200.1.2/24"))
    .veth(("pe-vpna", "a2", "10.200.2.1/24"), ("cp", "e2", "10.200.2.2/24"))
    .veth(("pe-vpna", "a3", "10.200.3.1/24"), ("cs", "e3", "10.200.3.2/24"))
    .veth(("pe-vpna", "a4", "10.200.4.1/24"), ("cq", "e4", "10.200.4.2/24"))
    // The overlap: VPN B's CE has VPN A's CE's address and subnet.
    .veth(("pe-vpnb", "b1", "10.200.1.1/24"), ("cb", "e5", "10.200.1.2/24"))
}

/// The PE's per-instance counters.
#[derive(Debug, Clone, Default)]
struct Counters {
    kod_sent: u64,
    access_denied: u64,
    control_mode: u64,
}

impl Counters {
    /// Control and private packets refused: by access level (mode 6) or
    /// outright (mode 7).
    fn refused(&self) -> u64 {
        self.access_denied + self.control_mode
    }
}

fn counters(run: &Run<'_>, instance: &str) -> Result<Counters> {
    let inst = run.instance("pe", instance)?;
    Ok(Counters {
        kod_sent: inst.kod_sent,
        access_denied: inst.dropped("access-denied"),
        control_mode: inst.dropped("control-mode"),
    })
}

/// One datagram of `mode` from `node` to `target`, and what came back.
fn once(run: &Run<'_>, node: &str, target: &str, mode: u8) -> Result<Counts> {
    let mode = mode.to_string();
    let out = run.exec_in(
        node,
        &run.bins.xtask,
        &[
            "ntp-load",
            "once",
            target,
            "--mode",
            &mode,
            "--timeout-ms",
            "1000",
        ],
    )?;
    Counts::parse_line(&out)
}

/// Whether the daemon serving at `listen` in `node` is synchronised at
/// `stratum`; the true error, µs, for the line.
fn synced(run: &Run<'_>, node: &str, listen: &str, stratum: u8) -> (bool, String) {
    let Ok(target) = listen.parse::<SocketAddr>() else {
        return (false, "bad-address".to_owned());
    };
    match run.true_offset(node, target) {
        Ok(s) => (
            s.offset_s.abs() < MAX_ERROR_S && s.stratum == stratum,
            format!("{:.1}/s{}", s.offset_s * 1e6, s.stratum),
        ),
        Err(_) => (false, "none".to_owned()),
    }
}

/// `node`'s session in `instance` to `address`: (mode, state, reach).
fn session(
    run: &Run<'_>,
    node: &str,
    instance: &str,
    address: &str,
) -> Option<(String, String, u8)> {
    run.sessions(node)
        .ok()?
        .into_iter()
        .find(|s| s.instance == instance && s.address == address)
        .map(|s| (s.mode, s.state, s.reach.unwrap_or(0)))
}

fn show(s: Option<&(String, String, u8)>) -> String {
    s.map_or("none".to_owned(), |(mode, state, reach)| {
        format!("{mode}/{state}/reach={reach:o}")
    })
}

/// The steady state every check needs: the allowed CEs synchronised, the
/// peer association formed, `cb` denied.
struct Settled {
    ca: (bool, String),
    cp: (bool, String),
    cs: (bool, String),
    cb_session: Option<(String, String, u8)>,
    cb_synced: Option<bool>,
    pe_passive: Option<(String, String, u8)>,
    pe_from_cs: usize,
    cs_session: Option<(String, String, u8)>,
}

impl Settled {
    fn observe(run: &Run<'_>) -> Settled {
        Settled {
            ca: synced(run, "ca", "10.200.1.2:123", 2),
            cp: synced(run, "cp", "10.200.2.2:123", 2),
            cs: synced(run, "cs", "10.200.3.2:123", 2),
            cb_session: session(run, "cb", "default", "10.200.1.1:123"),
            cb_synced: run.status("cb").ok().map(|s| s.synchronized),
            pe_passive: session(run, "pe", "vpna", "10.200.2.2:123"),
            pe_from_cs: run.sessions("pe").map_or(usize::MAX, |all| {
                all.iter()
                    .filter(|s| s.address.starts_with("10.200.3.2:"))
                    .count()
            }),
            cs_session: session(run, "cs", "default", "10.200.3.1:123"),
        }
    }

    fn cb_denied(&self) -> bool {
        self.cb_session.as_ref().is_some_and(|s| s.1 == "denied") && self.cb_synced == Some(false)
    }

    fn peer_ok(&self) -> bool {
        let reached = |s: &Option<(String, String, u8)>, mode: &str| {
            s.as_ref().is_some_and(|s| s.0 == mode && s.2 != 0)
        };
        self.cp.0
            && self.cs.0
            && reached(&self.pe_passive, "symmetric-passive")
            && reached(&self.cs_session, "symmetric-active")
            && self.pe_from_cs == 0
    }

    fn done(&self) -> bool {
        self.ca.0 && self.cb_denied() && self.peer_ok()
    }
}

fn access_check(run: &Run<'_>) -> Result<Outcome> {
    let started = Instant::now();
    let mut settled = Settled::observe(run);
    let all = wait_until(SYNC_TIMEOUT, Duration::from_secs(1), || {
        settled = Settled::observe(run);
        settled.done().then_some(())
    });
    let sync_s = started.elapsed().as_secs_f64();
    let s = &settled;

    // Probes, with the PE's counters around them.
    let (a0, b0) = (counters(run, "vpna")?, counters(run, "vpnb")?);
    let ca_probe = once(run, "ca", "10.200.1.1:123", 3)?;
    let cb_probe = once(run, "cb", "10.200.1.1:123", 3)?;
    let (a1, b1) = (counters(run, "vpna")?, counters(run, "vpnb")?);
    let cq_probe = once(run, "cq", "10.200.4.1:123", 3)?;
    let cs_probe = once(run, "cs", "10.200.3.1:123", 3)?;
    let a2 = counters(run, "vpna")?;
    let mode6a = once(run, "ca", "10.200.1.1:123", 6)?;
    let mode7a = once(run, "ca", "10.200.1.1:123", 7)?;
    let mode6b = once(run, "cb", "10.200.1.1:123", 6)?;
    let (a3, b3) = (counters(run, "vpna")?, counters(run, "vpnb")?);

    let overlap = Line {
        name: "access-overlap",
        pass: s.ca.0
            && s.cb_denied()
            && ca_probe.answer == "stratum-1"
            && cb_probe.answer == "kod-DENY"
            && b1.access_denied.saturating_sub(b0.access_denied) == 1
            && b1.kod_sent.saturating_sub(b0.kod_sent) == 1
            && a1.access_denied == a0.access_denied,
        values: vec![
            ("vpna_ce_error_us", s.ca.1.clone()),
            ("vpnb_ce_session", show(s.cb_session.as_ref())),
            ("vpnb_ce_synced", format!("{:?}", s.cb_synced)),
            ("vpna_probe", ca_probe.answer.clone()),
            ("vpnb_probe", cb_probe.answer.clone()),
            (
                "vpnb_access_denied",
                b1.access_denied
                    .saturating_sub(b0.access_denied)
                    .to_string(),
            ),
            (
                "vpnb_kod_sent",
                b1.kod_sent.saturating_sub(b0.kod_sent).to_string(),
            ),
        ],
    };
    let query = Line {
        name: "access-query",
        pass: cq_probe.answer == "kod-DENY"
            && cs_probe.answer == "stratum-1"
            && a2.access_denied.saturating_sub(a1.access_denied) == 1,
        values: vec![
            ("query_probe", cq_probe.answer.clone()),
            ("server_probe", cs_probe.answer.clone()),
            (
                "vpna_access_denied",
                a2.access_denied
                    .saturating_sub(a1.access_denied)
                    .to_string(),
            ),
        ],
    };
    let peer = Line {
        name: "access-peer",
        pass: s.peer_ok(),
        values: vec![
            ("peer_ce_error_us", s.cp.1.clone()),
            ("pe_passive", show(s.pe_passive.as_ref())),
            ("server_ce_error_us", s.cs.1.clone()),
            ("server_ce_session", show(s.cs_session.as_ref())),
            ("pe_sessions_from_server_ce", s.pe_from_cs.to_string()),
        ],
    };
    let silent = |c: &Counts| c.sent == 1 && c.answered() == 0 && c.other == 0;
    let control = Line {
        name: "access-control-modes",
        pass: silent(&mode6a)
            && silent(&mode7a)
            && silent(&mode6b)
            && a3.refused().saturating_sub(a2.refused()) == 2
            && a3.control_mode.saturating_sub(a2.control_mode) == 1
            && b3.refused().saturating_sub(b1.refused()) == 1,
        values: vec![
            (
                "answers",
                (mode6a.answered() + mode7a.answered() + mode6b.answered()).to_string(),
            ),
            (
                "vpna_refused",
                a3.refused().saturating_sub(a2.refused()).to_string(),
            ),
            (
                "vpnb_refused",
                b3.refused().saturating_sub(b1.refused()).to_string(),
            ),
        ],
    };
    let lines = [overlap, query, peer, control];
    for line in &lines {
        line.print();
    }
    let mut values: Vec<(&'static str, String)> = lines
        .iter()
        .map(|l| (l.name, if l.pass { "pass" } else { "FAIL" }.to_owned()))
        .collect();
    values.push(("sync_s", format!("{sync_s:.1}")));
    Ok(Outcome {
        pass: all.is_ok() && lines.iter().all(|l| l.pass),
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_render_and_overlap() {
        let sc = access();
        sc.validate().expect("well-formed");
        for node in &sc.nodes {
            let Some(template) = &node.config else {
                continue;
            };
            super::super::config::rendered("access", node.name, template);
        }
        let same: Vec<&str> = sc
            .addrs
            .iter()
            .filter(|a| a.cidr == "10.200.1.2/24")
            .map(|a| a.end.node)
            .collect();
        assert_eq!(same, ["ca", "cb"], "the same CE address in both VPNs");
    }
}
