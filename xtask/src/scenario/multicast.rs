//! Broadcast and multicast scenarios: mode-5 servers, calibrating clients.
//!
//! `multicast`, `multicast-v6` and `broadcast` share one topology: a Linux
//! bridge `lan` (its own namespace, multicast snooping off) joining a
//! stratum-1 `server` and three clients `c1`..`c3`. The server sends mode 5
//! every second (`poll = 0`: shortened from the default 64 s so the
//! scenario runs in a minute) to 224.0.1.1, to ff05::101 (`ipv6-scope = 5`)
//! or to the subnet broadcast address. Each client runs a virtual clock with
//! its own start offset and frequency error, `stepout = "2s"`, an
//! `allow-unauthenticated` broadcast/multicast client on its interface and a
//! wildcard `[[listen]]` on port 123 (a router's setup: it serves on the
//! port it listens for mode 5 on). The check:
//!
//! 1. every client mobilises one association for the server, calibrates
//!    (state `listening`, a calibrated delay, one calibration);
//! 2. while the server sends at least [`LISTEN_PACKETS`] more mode-5
//!    packets, no client sends anything and the server receives nothing:
//!    mode-3 requests only during calibration (each client's `sent` counter
//!    at that point is its request count; their sum is the server's
//!    `received`);
//! 3. every client's true error, probed through its own listen port, gets
//!    below 1 ms;
//! 4. the server process is stopped, and started again once every client
//!    has heard nothing for [`OUTAGE_S`] (over 3 intervals: a silence that
//!    calls for a new calibration, short of the 8 that demobilise): each
//!    client recalibrates exactly once (calibrations 1 → 2, still after
//!    another [`LISTEN_PACKETS`] packets) and is back under 1 ms, and still
//!    under 1 ms after those packets.
//!
//! `interop-multicast` has chronyd (`chronyd -x`, `local stratum 2`,
//! `allow`) send mode 5 both to 224.0.1.1 and to the subnet broadcast
//! address every second, a strata multicast client and a strata broadcast
//! client listening; both must calibrate against chronyd (which answers the
//! volley as an ordinary server), get within 1 ms of the host clock (which
//! `chronyd -x` serves unchanged), send nothing while they hear another
//! [`LISTEN_PACKETS`] mode-5 packets, and still be within 1 ms after them.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use serde::Deserialize;

use super::{config::stratum1, guard, interop, Instance, Outcome, Run, Scenario};

/// Mode-5 packets the server sends while the clients must stay quiet.
const LISTEN_PACKETS: u64 = 15;
/// Silence (s) before the server is started again: over 3 one-second
/// intervals (recalibrate), well under 8 (demobilise).
const OUTAGE_S: f64 = 4.0;
/// The longest wait for the first calibration.
const CALIBRATE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait for every client's true error to get below 1 ms.
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// The bound on each client's true error, seconds.
const MAX_ERROR_S: f64 = 1e-3;

/// `stratactl sessions --json`: the fields this module reads.
#[derive(Debug, Clone, Deserialize)]
struct Mode5Session {
    address: String,
    mode: String,
    state: String,
    #[serde(default)]
    last_s: Option<f64>,
    #[serde(default)]
    calibrated_delay_s: Option<f64>,
    #[serde(default)]
    calibrations: u32,
}

fn sessions(run: &Run<'_>, node: &str) -> Result<Vec<Mode5Session>> {
    run.query(node, "sessions")
}

/// The default instance's counters of `node`.
fn counters(run: &Run<'_>, node: &str) -> Result<Instance> {
    run.instance(node, "default")
}

/// One mode-5 scenario: `server` and `c1`..`c3` on bridge `lan`.
struct Variant {
    /// Scenario name.
    name: &'static str,
    /// Scenario summary.
    about: &'static str,
    /// The clients' config table (`[[multicast-client]]` …).
    client_section: &'static str,
    /// The clients' wildcard listener.
    wildcard: &'static str,
    /// The server's sending table (`[[multicast-server]]` …).
    send: &'static str,
    /// The addresses of `server`, `c1`, `c2`, `c3`, in that order.
    cidrs: [&'static str; 4],
    /// The session mode the clients show.
    mode: &'static str,
    /// The server's address as clients see it (`ip:123`).
    server: &'static str,
    /// Each client's node and its own address (the probe's target).
    clients: [(&'static str, &'static str); 3],
}

const CLIENTS: [&str; 3] = ["c1", "c2", "c3"];

/// Each client's start offset and frequency error.
const CLIENT_CLOCKS: [(&str, f64); 3] = [("400ms", 40.0), ("-250ms", -30.0), ("150ms", 15.0)];

/// A client's config: virtual clock, `client_section`, a wildcard listener.
fn client_config(i: usize, client_section: &str, wildcard: &str) -> String {
    let (offset, ppm) = CLIENT_CLOCKS[i];
    format!(
        r#"
[clock]
backend = "virtual"
initial-offset = "{offset}"
frequency-error-ppm = {ppm:.1}

# Shortened for the scenario: step once within 2 s.
[discipline]
stepout = "2s"

{client_section}
allow-unauthenticated = true

[[listen]]
address = "{wildcard}"
"#
    )
}

/// The server's config: local stratum-1 reference, its listener, `send`
/// (poll 0, 1 s, instead of the default 64 s: shortened for the scenario).
fn server_config(listen: &str, send: &str) -> String {
    format!("{}\n{send}\npoll = 0\n", stratum1(listen))
}

/// The scenario of `v`, checked by `check`.
fn topology(v: &Variant, check: super::Check) -> Scenario {
    let server = Some(server_config(v.server, v.send));
    let clients = [0, 1, 2].map(|i| Some(client_config(i, v.client_section, v.wildcard)));
    let configs = std::iter::once(server).chain(clients);
    ["server", CLIENTS[0], CLIENTS[1], CLIENTS[2]]
        .into_iter()
        .zip(configs)
        .zip(v.cidrs)
        .fold(
            Scenario::new(v.name, v.about, check),
            |sc, ((node, config), cidr)| sc.node(node, config).on_lan(node, cidr),
        )
}

const MULTICAST: Variant = Variant {
    name: "multicast",
    about: "3 clients calibrate on 224.0.1.1 mode 5, stay quiet, < 1 ms; server restart: 1 recalibration",
    client_section: "[[multicast-client]]\ninterface = \"${prefix}lan0\"",
    wildcard: "0.0.0.0:123",
    send: "[[multicast-server]]\ninterface = \"${prefix}lan0\"",
    cidrs: ["10.200.60.1/24", "10.200.60.2/24", "10.200.60.3/24", "10.200.60.4/24"],
    mode: "multicast-client",
    server: "10.200.60.1:123",
    clients: [
        ("c1", "10.200.60.2:123"),
        ("c2", "10.200.60.3:123"),
        ("c3", "10.200.60.4:123"),
    ],
};

/// `cargo xtask scenario multicast`; see the module doc.
pub fn multicast() -> Scenario {
    topology(&MULTICAST, |run| check_mode5(run, &MULTICAST))
}

const MULTICAST_V6: Variant = Variant {
    name: "multicast-v6",
    about: "as multicast, on ff05::101 (ipv6-scope = 5) over fd00:200:0:60::/64",
    client_section: "[[multicast-client]]\nipv6-scope = 5\ninterface = \"${prefix}lan0\"",
    wildcard: "[::]:123",
    send: "[[multicast-server]]\nipv6-scope = 5\ninterface = \"${prefix}lan0\"",
    cidrs: [
        "fd00:200:0:60::1/64",
        "fd00:200:0:60::2/64",
        "fd00:200:0:60::3/64",
        "fd00:200:0:60::4/64",
    ],
    mode: "multicast-client",
    server: "[fd00:200:0:60::1]:123",
    clients: [
        ("c1", "[fd00:200:0:60::2]:123"),
        ("c2", "[fd00:200:0:60::3]:123"),
        ("c3", "[fd00:200:0:60::4]:123"),
    ],
};

/// `cargo xtask scenario multicast-v6`; see the module doc.
pub fn multicast_v6() -> Scenario {
    topology(&MULTICAST_V6, |run| check_mode5(run, &MULTICAST_V6))
}

const BROADCAST: Variant = Variant {
    name: "broadcast",
    about: "as multicast, with subnet broadcast to 10.200.61.255",
    client_section: "[[broadcast-client]]\ninterface = \"${prefix}lan0\"",
    wildcard: "0.0.0.0:123",
    send: "[[broadcast-server]]\naddress = \"10.200.61.255\"\ninterface = \"${prefix}lan0\"",
    cidrs: [
        "10.200.61.1/24",
        "10.200.61.2/24",
        "10.200.61.3/24",
        "10.200.61.4/24",
    ],
    mode: "broadcast-client",
    server: "10.200.61.1:123",
    clients: [
        ("c1", "10.200.61.2:123"),
        ("c2", "10.200.61.3:123"),
        ("c3", "10.200.61.4:123"),
    ],
};

/// `cargo xtask scenario broadcast`; see the module doc.
pub fn broadcast() -> Scenario {
    topology(&BROADCAST, |run| check_mode5(run, &BROADCAST))
}

/// A client's view of its association with the server.
#[derive(Debug, Clone, Default)]
struct ClientView {
    /// Sessions with the server's address in the expected mode.
    matching: usize,
    state: String,
    delay_s: Option<f64>,
    calibrations: u32,
    last_s: Option<f64>,
}

impl ClientView {
    fn listening_after(&self, calibrations: u32) -> bool {
        // stratad shows a selected association as `selected`, whatever its phase.
        self.matching == 1
            && matches!(self.state.as_str(), "listening" | "selected")
            && self.calibrations == calibrations
            && self.delay_s.is_some()
    }
}

/// `node`'s view of its `mode` association with `server`.
fn client_view(run: &Run<'_>, node: &str, mode: &str, server: &str) -> Result<ClientView> {
    let all = sessions(run, node)?;
    let mine: Vec<&Mode5Session> = all
        .iter()
        .filter(|s| s.mode == mode && s.address == server)
        .collect();
    let first = mine.first();
    Ok(ClientView {
        matching: mine.len(),
        state: first.map_or_else(String::new, |s| s.state.clone()),
        delay_s: first.and_then(|s| s.calibrated_delay_s),
        calibrations: first.map_or(0, |s| s.calibrations),
        last_s: first.and_then(|s| s.last_s),
    })
}

fn views(run: &Run<'_>, v: &Variant) -> Result<Vec<ClientView>> {
    v.clients
        .iter()
        .map(|(node, _)| client_view(run, node, v.mode, v.server))
        .collect()
}

fn describe(views: &[ClientView]) -> String {
    views
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "c{}: n={} state={} cal={} delay={:?} last={:?}",
                i + 1,
                c.matching,
                c.state,
                c.calibrations,
                c.delay_s,
                c.last_s
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Waits until every client listens after exactly `calibrations` volleys.
fn wait_listening(
    run: &Run<'_>,
    v: &Variant,
    calibrations: u32,
    timeout: Duration,
) -> Result<Vec<ClientView>> {
    let mut last = Vec::new();
    guard::wait_until(timeout, Duration::from_millis(250), || {
        last = views(run, v).ok()?;
        last.iter()
            .all(|c| c.listening_after(calibrations))
            .then(|| last.clone())
    })
    .with_context(|| {
        format!(
            "clients not listening after {calibrations} calibration(s): {}",
            describe(&last)
        )
    })
}

/// Waits until every client's true error is below [`MAX_ERROR_S`]; returns them.
fn wait_synced(run: &Run<'_>, v: &Variant, timeout: Duration) -> Result<Vec<f64>> {
    let targets: Vec<(&str, SocketAddr)> = v
        .clients
        .iter()
        .map(|(node, addr)| Ok((*node, addr.parse()?)))
        .collect::<Result<_>>()?;
    let mut last: Vec<Option<f64>> = vec![None; targets.len()];
    guard::wait_until(timeout, Duration::from_millis(500), || {
        last = targets
            .iter()
            .map(|(node, addr)| run.true_offset(node, *addr).ok().map(|s| s.offset_s))
            .collect();
        last.iter()
            .all(|e| e.is_some_and(|e| e.abs() < MAX_ERROR_S))
            .then(|| last.iter().flatten().copied().collect())
    })
    .with_context(|| format!("true errors not all below 1 ms: {last:?}"))
}

/// Waits until the server has sent `n` more packets than `from`; returns its counters.
fn wait_server_sent(run: &Run<'_>, from: u64, n: u64) -> Result<Instance> {
    guard::wait_until(
        Duration::from_secs(n * 2 + 10),
        Duration::from_millis(250),
        || counters(run, "server").ok().filter(|c| c.sent >= from + n),
    )
    .with_context(|| format!("server did not send {n} more mode-5 packets"))
}

/// Per-client figures for the summary line.
#[derive(Debug, Clone, Default)]
struct Figures {
    error_us: Vec<f64>,
    delay_us: Vec<f64>,
    requests: Vec<u64>,
}

fn check_mode5(run: &Run<'_>, v: &Variant) -> Result<Outcome> {
    let started = Instant::now();
    let mut values: Vec<(&'static str, String)> = Vec::new();
    let result = mode5_phases(run, v, &mut values);
    values.push(("total_s", format!("{:.0}", started.elapsed().as_secs_f64())));
    Ok(Outcome::of(&result, values))
}

fn mode5_phases(
    run: &Run<'_>,
    v: &Variant,
    values: &mut Vec<(&'static str, String)>,
) -> Result<()> {
    let started = Instant::now();
    // 1. Calibration.
    let calibrated = wait_listening(run, v, 1, CALIBRATE_TIMEOUT)?;
    values.push((
        "calibrated_s",
        format!("{:.1}", started.elapsed().as_secs_f64()),
    ));
    let mut fig = Figures {
        delay_us: calibrated
            .iter()
            .map(|c| c.delay_s.unwrap_or(f64::NAN) * 1e6)
            .collect(),
        ..Figures::default()
    };
    // 2. Quiet while listening: no probe has run yet, so each client's
    // `sent` is its calibration requests.
    let before: Vec<Instance> = CLIENTS
        .iter()
        .map(|c| counters(run, c))
        .collect::<Result<_>>()?;
    let server_before = counters(run, "server")?;
    fig.requests = before.iter().map(|c| c.sent).collect();
    let server_after = wait_server_sent(run, server_before.sent, LISTEN_PACKETS)?;
    let after: Vec<Instance> = CLIENTS
        .iter()
        .map(|c| counters(run, c))
        .collect::<Result<_>>()?;
    let listening_requests: Vec<u64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.sent.saturating_sub(b.sent))
        .collect();
    let heard: Vec<u64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.received.saturating_sub(b.received))
        .collect();
    values.push(("requests", join(&fig.requests)));
    values.push(("server_received", server_before.received.to_string()));
    values.push(("listening_requests", join(&listening_requests)));
    values.push(("listening_heard", join(&heard)));
    ensure!(
        fig.requests
            .iter()
            .all(|r| (u64::from(CALIBRATION_REPLIES)..=u64::from(CALIBRATION_ATTEMPTS))
                .contains(r)),
        "calibration requests per client {:?} outside {CALIBRATION_REPLIES}..={CALIBRATION_ATTEMPTS}",
        fig.requests
    );
    ensure!(
        server_before.received == fig.requests.iter().sum::<u64>(),
        "server received {} requests, clients sent {:?}",
        server_before.received,
        fig.requests
    );
    ensure!(
        listening_requests.iter().all(|&r| r == 0)
            && server_after.received == server_before.received,
        "requests while listening: clients {listening_requests:?}, server received {} more",
        server_after.received.saturating_sub(server_before.received)
    );
    ensure!(
        heard.iter().all(|&h| h + 2 >= LISTEN_PACKETS),
        "clients heard {heard:?} of {LISTEN_PACKETS}+ mode-5 packets"
    );
    // 3. True error.
    fig.error_us = wait_synced(run, v, SYNC_TIMEOUT)?
        .iter()
        .map(|e| e * 1e6)
        .collect();
    values.push(("sync_s", format!("{:.1}", started.elapsed().as_secs_f64())));
    values.push(("error_us", join_f(&fig.error_us)));
    values.push(("delay_us", join_f(&fig.delay_us)));
    // 4. Server restart after a silence of over 3 intervals.
    run.stop(run.stratad_pid("server")?)?;
    let mut silent = Vec::new();
    guard::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        silent = views(run, v).ok()?;
        silent
            .iter()
            .all(|c| c.last_s.is_some_and(|l| l >= OUTAGE_S))
            .then_some(())
    })
    .with_context(|| format!("clients did not notice the silence: {}", describe(&silent)))?;
    run.spawn_stratad("server", "stratad-restarted")?;
    wait_listening(run, v, 2, CALIBRATE_TIMEOUT)?;
    let server = counters(run, "server")?;
    values.push(("recal_server_received", server.received.to_string()));
    let errors = wait_synced(run, v, SYNC_TIMEOUT)?;
    // Still exactly two calibrations after another stretch of mode 5.
    let server = counters(run, "server")?;
    wait_server_sent(run, server.sent, LISTEN_PACKETS)?;
    let end = views(run, v)?;
    values.push((
        "calibrations",
        end.iter()
            .map(|c| c.calibrations.to_string())
            .collect::<Vec<_>>()
            .join(","),
    ));
    values.push((
        "restart_error_us",
        join_f(&errors.iter().map(|e| e * 1e6).collect::<Vec<_>>()),
    ));
    ensure!(
        end.iter().all(|c| c.listening_after(2)),
        "after the restart: {}",
        describe(&end)
    );
    // And still synchronised at the end of that stretch.
    let last = wait_synced(run, v, Duration::from_secs(5))?;
    values.push((
        "final_error_us",
        join_f(&last.iter().map(|e| e * 1e6).collect::<Vec<_>>()),
    ));
    let dropped = counters(run, "server")?.dropped;
    ensure!(dropped.is_empty(), "server dropped packets: {dropped:?}");
    Ok(())
}

/// Good replies that end a calibration volley (the engine's
/// `CALIBRATION_REPLIES`; xtask does not depend on the engine).
const CALIBRATION_REPLIES: u8 = 4;
/// Requests after which a volley ends anyway (the engine's `CALIBRATION_ATTEMPTS`).
const CALIBRATION_ATTEMPTS: u8 = 8;

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn join_f(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(",")
}

// ---- interop-multicast ----------------------------------------------------

/// chronyd sending mode 5 to the group and to the subnet broadcast address.
const CHRONY_DIRECTIVES: &str = "\
local stratum 2
allow 10.200.0.0/16
port 123
broadcast 1 224.0.1.1
broadcast 1 10.200.62.255
";

/// The chronyd node's address.
const CHRONY_SERVER: &str = "10.200.62.1:123";
/// The strata multicast client (listens on its own address only, so its
/// group socket hears just the group) and the strata broadcast client.
const INTEROP_CLIENTS: [(&str, &str, &str); 2] = [
    ("mclient", "10.200.62.2:123", "multicast-client"),
    ("bclient", "10.200.62.3:123", "broadcast-client"),
];

/// `cargo xtask scenario interop-multicast`; see the module doc.
pub fn interop_multicast() -> Scenario {
    let mc = client_config(
        0,
        "[[multicast-client]]\ninterface = \"${prefix}lan0\"",
        "10.200.62.2:123",
    );
    let bc = client_config(
        1,
        "[[broadcast-client]]\ninterface = \"${prefix}lan0\"",
        "0.0.0.0:123",
    );
    Scenario::new(
        "interop-multicast",
        "strata multicast + broadcast clients calibrate on chronyd -x mode 5 (< 1 ms)",
        check_interop,
    )
    .bare("chrony")
    .daemon("mclient", mc)
    .daemon("bclient", bc)
    .on_lan("chrony", "10.200.62.1/24")
    .on_lan("mclient", "10.200.62.2/24")
    .on_lan("bclient", "10.200.62.3/24")
}

fn check_interop(run: &Run<'_>) -> Result<Outcome> {
    let started = Instant::now();
    let mut values: Vec<(&'static str, String)> = Vec::new();
    let result = interop_phases(run, &mut values);
    values.push(("total_s", format!("{:.0}", started.elapsed().as_secs_f64())));
    Ok(Outcome::of(&result, values))
}

fn interop_phases(run: &Run<'_>, values: &mut Vec<(&'static str, String)>) -> Result<()> {
    let chronyd = interop::find_program("chronyd")?;
    // chronyd picks no outgoing interface for the group: give it a route
    // (the namespace has no default route).
    guard::ip(&[
        "-n",
        &run.ns("chrony"),
        "route",
        "add",
        "224.0.0.0/4",
        "dev",
        &run.ifname("lan0"),
    ])?;
    interop::start_chronyd(run, &chronyd, "chrony", CHRONY_DIRECTIVES)?;
    let mut last: Vec<ClientView> = Vec::new();
    let one = |node: &str, mode: &str| client_view(run, node, mode, CHRONY_SERVER);
    let calibrated = guard::wait_until(CALIBRATE_TIMEOUT, Duration::from_millis(250), || {
        last = INTEROP_CLIENTS
            .iter()
            .map(|(node, _, mode)| one(node, mode))
            .collect::<Result<_>>()
            .ok()?;
        last.iter()
            .all(|c| c.listening_after(1))
            .then(|| last.clone())
    })
    .with_context(|| format!("not calibrated against chronyd: {}", describe(&last)))?;
    let requests: Vec<u64> = INTEROP_CLIENTS
        .iter()
        .map(|(node, _, _)| counters(run, node).map(|c| c.sent))
        .collect::<Result<_>>()?;
    values.push(("requests", join(&requests)));
    values.push((
        "delay_us",
        join_f(
            &calibrated
                .iter()
                .map(|c| c.delay_s.unwrap_or(f64::NAN) * 1e6)
                .collect::<Vec<_>>(),
        ),
    ));
    let targets: Vec<(&str, SocketAddr)> = INTEROP_CLIENTS
        .iter()
        .map(|(node, addr, _)| Ok((*node, addr.parse()?)))
        .collect::<Result<_>>()?;
    let mut errs: Vec<Option<f64>> = Vec::new();
    let errors = guard::wait_until(SYNC_TIMEOUT, Duration::from_millis(500), || {
        errs = targets
            .iter()
            .map(|(node, addr)| run.true_offset(node, *addr).ok().map(|s| s.offset_s))
            .collect();
        errs.iter()
            .all(|e| e.is_some_and(|e| e.abs() < MAX_ERROR_S))
            .then(|| errs.iter().flatten().map(|e| e * 1e6).collect::<Vec<_>>())
    })
    .with_context(|| format!("true errors (multicast, broadcast) not below 1 ms: {errs:?}"))?;
    values.push(("error_us", join_f(&errors)));
    // Keep listening for a stretch of chronyd's mode 5 (no probes: the
    // clients must send nothing), then look again.
    let start: Vec<Instance> = INTEROP_CLIENTS
        .iter()
        .map(|(node, _, _)| counters(run, node))
        .collect::<Result<_>>()?;
    let heard: Vec<u64> = start.iter().map(|c| c.received).collect();
    guard::wait_until(
        Duration::from_secs(LISTEN_PACKETS * 2 + 10),
        Duration::from_millis(250),
        || {
            INTEROP_CLIENTS
                .iter()
                .zip(&heard)
                .all(|((node, _, _), from)| {
                    counters(run, node).is_ok_and(|c| c.received >= from + LISTEN_PACKETS)
                })
                .then_some(())
        },
    )
    .context("clients stopped hearing chronyd's mode 5")?;
    let after: Vec<u64> = INTEROP_CLIENTS
        .iter()
        .map(|(node, _, _)| counters(run, node).map(|c| c.sent))
        .collect::<Result<_>>()?;
    let mut finals: Vec<Option<f64>> = Vec::new();
    let finals = guard::wait_until(Duration::from_secs(5), Duration::from_millis(250), || {
        finals = targets
            .iter()
            .map(|(node, addr)| run.true_offset(node, *addr).ok().map(|s| s.offset_s))
            .collect();
        finals
            .iter()
            .all(|e| e.is_some_and(|e| e.abs() < MAX_ERROR_S))
            .then(|| finals.iter().flatten().map(|e| e * 1e6).collect::<Vec<_>>())
    })
    .with_context(|| format!("no longer below 1 ms after listening: {finals:?}"))?;
    values.push(("final_error_us", join_f(&finals)));
    let end: Vec<ClientView> = INTEROP_CLIENTS
        .iter()
        .map(|(node, _, mode)| one(node, mode))
        .collect::<Result<_>>()?;
    ensure!(
        end.iter().all(|c| c.listening_after(1)),
        "recalibrated or lost: {}",
        describe(&end)
    );
    ensure!(
        requests.iter().all(
            |r| (u64::from(CALIBRATION_REPLIES)..=u64::from(CALIBRATION_ATTEMPTS)).contains(r)
        ),
        "calibration requests {requests:?}"
    );
    let extra: Vec<u64> = after
        .iter()
        .zip(&start)
        .map(|(a, s)| a.saturating_sub(s.sent))
        .collect();
    values.push(("listening_requests", join(&extra)));
    ensure!(
        extra.iter().all(|&e| e == 0),
        "clients sent {extra:?} packets while listening"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str) -> toml::Table {
        super::super::config::rendered("multicast", "n", template)
    }

    #[test]
    fn scenarios_are_well_formed() {
        for sc in [
            multicast(),
            multicast_v6(),
            broadcast(),
            interop_multicast(),
        ] {
            sc.validate()
                .unwrap_or_else(|e| panic!("{}: {e:#}", sc.name));
            for node in &sc.nodes {
                if let Some(config) = &node.config {
                    let doc = render(config);
                    assert_eq!(doc["clock"]["backend"].as_str(), Some("virtual"));
                }
            }
        }
    }

    #[test]
    fn clients_differ_and_listen_on_the_wildcard() {
        let sc = multicast();
        let offsets: Vec<String> = sc
            .nodes
            .iter()
            .filter_map(|n| n.config.as_deref())
            .map(render)
            .filter_map(|d| d["clock"].get("initial-offset").map(ToString::to_string))
            .collect();
        assert_eq!(offsets.len(), 3);
        assert!(offsets[0] != offsets[1] && offsets[1] != offsets[2]);
        let client = render(sc.nodes[1].config.as_deref().expect("c1 config"));
        assert_eq!(client["listen"][0]["address"].as_str(), Some("0.0.0.0:123"));
        let mc = &client["multicast-client"][0];
        assert_eq!(mc["interface"].as_str(), Some("st0000-lan0"));
        assert_eq!(mc["allow-unauthenticated"].as_bool(), Some(true));
        assert_eq!(client["discipline"]["stepout"].as_str(), Some("2s"));
        let server = render(sc.nodes[0].config.as_deref().expect("server config"));
        assert_eq!(server["multicast-server"][0]["poll"].as_integer(), Some(0));
        let v6 = render(multicast_v6().nodes[0].config.as_deref().expect("v6"));
        assert_eq!(
            v6["multicast-server"][0]["ipv6-scope"].as_integer(),
            Some(5)
        );
        let b = render(broadcast().nodes[0].config.as_deref().expect("bc"));
        assert_eq!(
            b["broadcast-server"][0]["address"].as_str(),
            Some("10.200.61.255")
        );
    }

    #[test]
    fn variants_match_topologies() {
        for (v, sc) in [
            (&MULTICAST, multicast()),
            (&MULTICAST_V6, multicast_v6()),
            (&BROADCAST, broadcast()),
        ] {
            let ips: Vec<String> = sc
                .addrs
                .iter()
                .map(|a| a.cidr.split('/').next().unwrap_or("").to_owned())
                .collect();
            let server: SocketAddr = v.server.parse().expect("server");
            assert_eq!(server.ip().to_string(), ips[0]);
            for (i, (node, addr)) in v.clients.iter().enumerate() {
                let addr: SocketAddr = addr.parse().expect("client");
                assert_eq!(*node, CLIENTS[i]);
                assert_eq!(addr.ip().to_string(), ips[i + 1]);
            }
        }
    }

    #[test]
    fn listening_needs_one_calibrated_association() {
        let good = ClientView {
            matching: 1,
            state: "listening".to_owned(),
            delay_s: Some(1e-4),
            calibrations: 1,
            last_s: Some(0.5),
        };
        assert!(good.listening_after(1));
        assert!(!good.listening_after(2));
        for bad in [
            ClientView {
                matching: 2,
                ..good.clone()
            },
            ClientView {
                state: "calibrating".to_owned(),
                ..good.clone()
            },
            ClientView {
                delay_s: None,
                ..good.clone()
            },
        ] {
            assert!(!bad.listening_after(1), "{bad:?}");
        }
    }

    #[test]
    fn parses_sessions_and_counters() {
        let s: Vec<Mode5Session> = serde_json::from_str(
            r#"[{"instance":"default","address":"10.200.60.1:123","mode":"multicast-client",
                 "state":"listening","stratum":1,"reach":255,"poll":0,"offset_s":0.0,
                 "delay_s":0.0001,"dispersion_s":0.0,"jitter_s":0.0,"refid":"LOCL",
                 "last_s":0.4,"calibrated_delay_s":0.00012,"calibration_age_s":3.0,
                 "calibrations":1}]"#,
        )
        .expect("sessions");
        assert_eq!(s[0].calibrations, 1);
        assert_eq!(s[0].calibrated_delay_s, Some(0.00012));
        let c: super::super::Status = serde_json::from_str(
            r#"{"synchronized":false,"stratum":16,
                "instances":{"default":{"received":12,"sent":40,"dropped":{},"kod_sent":0}}}"#,
        )
        .expect("status");
        assert_eq!(c.instances["default"].received, 12);
        assert!(CHRONY_DIRECTIVES.contains("broadcast 1 224.0.1.1"));
        assert_eq!(join(&[4, 5]), "4,5");
        assert_eq!(join_f(&[12.4, -3.6]), "12,-4");
    }
}
