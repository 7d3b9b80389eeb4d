//! `vm-vrf`: a PE with real VRF devices in one guest.
//!
//! Inside the guest: `vrf-a` (table 10) enslaves the NIC `eth0` (towards
//! the host namespace and its reference) and the veth `pe-a`; `vrf-b`
//! (table 20) enslaves `pe-b`. Both VRFs carry the **same subnet**
//! 10.201.0.0/24 (PE .1), with a CE namespace behind each (`cea`, `ceb`,
//! .2). One stratad (`backend = "system"`) has device-bound instances
//! `vpna` (`device = "vrf-a"`) and `vpnb` (`device = "vrf-b"`), serves both
//! and synchronises to the reference through VRF A; its default instance
//! listens unbound on port 1123. The CEs run stratad on the virtual clock.
//!
//! Checks: both CEs synchronise to the PE; the PE's system peer is in
//! `vpna`; a burst from CE B is counted in `vpnb` only; with
//! `net.ipv4.udp_l3mdev_accept = 0` a datagram from CE B to port 1123
//! reaches no socket, with `= 1` it reaches the default instance's unbound
//! socket and is dropped as `foreign-instance` (counted, never answered);
//! deleting and re-creating `vrf-b` (a new ifindex) takes `vpnb` down and
//! back up without a restart, and CE B is answered again.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::{Ctx, HOST_ADDR};

const SHORT: Duration = Duration::from_secs(30);
/// The PE's control socket (the default).
const PE_SOCKET: &str = "/run/strata/control.sock";

/// The PE's configuration.
fn pe_conf() -> String {
    format!(
        r#"[clock]
backend = "system"

[discipline]
stepout = "4s"

[[instance]]
name = "vpna"
device = "vrf-a"

[[instance]]
name = "vpnb"
device = "vrf-b"

[[server]]
address = "{HOST_ADDR}:123"
instance = "vpna"
minpoll = -1
maxpoll = 1
iburst = true

[[listen]]
address = "0.0.0.0:123"
instance = "vpna"

[[listen]]
address = "0.0.0.0:123"
instance = "vpnb"

[[listen]]
address = "0.0.0.0:1123"
"#
    )
}

/// A CE's configuration (virtual clock 20 ms off).
fn ce_conf(name: &str) -> String {
    format!(
        r#"[clock]
backend = "virtual"
initial-offset = "20ms"

[discipline]
step-threshold = "5ms"
stepout = "2s"

[[server]]
address = "10.201.0.1:123"
minpoll = -1
maxpoll = 1
iburst = true

[control]
socket = "/run/{name}.sock"
"#
    )
}

/// Files for the initramfs.
pub fn files() -> Vec<(&'static str, String)> {
    vec![
        ("pe.toml", pe_conf()),
        ("cea.toml", ce_conf("cea")),
        ("ceb.toml", ce_conf("ceb")),
        ("net.sh", NET_SH.to_owned()),
        ("vrf-b.sh", VRF_B_SH.to_owned()),
    ]
}

/// The guest's topology (eth0 already has its address).
const NET_SH: &str = "#!/bin/sh
set -e
# busybox sh prefers its own `ip` applet: use iproute2's by path.
ip() { /usr/sbin/ip \"$@\"; }
ip link add vrf-a type vrf table 10
ip link set vrf-a up
ip link set eth0 master vrf-a
for ce in cea ceb; do
  ip netns add $ce
  ip -n $ce link set lo up
done
ip link add pe-a type veth peer name ce-a netns cea
ip link set pe-a master vrf-a
ip addr add 10.201.0.1/24 dev pe-a
ip link set pe-a up
ip -n cea addr add 10.201.0.2/24 dev ce-a
ip -n cea link set ce-a up
ip link add pe-b type veth peer name ce-b netns ceb
ip addr add 10.201.0.1/24 dev pe-b
ip link set pe-b up
ip -n ceb addr add 10.201.0.2/24 dev ce-b
ip -n ceb link set ce-b up
/scenario/vrf-b.sh
";

/// (Re-)creates `vrf-b` and enslaves `pe-b` (its address is kept).
const VRF_B_SH: &str = "#!/bin/sh
set -e
ip() { /usr/sbin/ip \"$@\"; }
ip link add vrf-b type vrf table 20
ip link set vrf-b up
ip link set pe-b master vrf-b
ip addr replace 10.201.0.1/24 dev pe-b
ip link set pe-b up
";

fn json(out: &str) -> Result<Value> {
    let start = out.find('{').context("no JSON")?;
    serde_json::from_str(&out[start..]).context("bad JSON")
}

fn pe_status(ctx: &mut Ctx) -> Result<Value> {
    json(&ctx.guest.ok("stratactl status --json", SHORT)?)
}

/// A daemon's status; `None` while its control socket does not answer.
fn try_status(ctx: &mut Ctx, socket: &str) -> Result<Option<Value>> {
    let (rc, out) = ctx
        .guest
        .run(&format!("stratactl --socket {socket} status --json"), SHORT)?;
    Ok(if rc == 0 { json(&out).ok() } else { None })
}

fn counter(status: &Value, instance: &str, key: &str) -> u64 {
    status["instances"][instance][key].as_u64().unwrap_or(0)
}

fn dropped(status: &Value, instance: &str, reason: &str) -> u64 {
    status["instances"][instance]["dropped"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// Polls `f` every 2 s for at most `timeout`.
fn poll<T>(
    ctx: &mut Ctx,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut(&mut Ctx) -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f(ctx)? {
            return Ok(v);
        }
        ensure!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        // Bounded pacing between two polls of a guest condition.
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn synced_to_pe(s: &Value) -> bool {
    s["synchronized"].as_bool() == Some(true) && s["reference"].as_str() == Some("10.201.0.1:123")
}

/// Sends one mode-3 datagram from CE B to the PE's port 1123; whether it
/// was answered.
fn leak_probe(ctx: &mut Ctx) -> Result<String> {
    ctx.guest.ok(
        "/usr/sbin/ip netns exec ceb xtask ntp-load once 10.201.0.1:1123 --timeout-ms 500",
        SHORT,
    )
}

/// Runs the scenario; returns its figures.
pub fn run(ctx: &mut Ctx) -> Result<String> {
    let mut figures = Vec::new();
    ctx.guest.ok("/scenario/net.sh", SHORT)?;
    ctx.reference = Some(ctx.start_reference()?);
    ctx.guest
        .ok("sysctl -qw net.ipv4.udp_l3mdev_accept=0", SHORT)?;
    ctx.guest
        .ok("stratad -c /scenario/pe.toml >/tmp/pe.log 2>&1 &", SHORT)?;
    for ce in ["cea", "ceb"] {
        ctx.guest.ok(
            &format!(
                "/usr/sbin/ip netns exec {ce} stratad -c /scenario/{ce}.toml >/tmp/{ce}.log 2>&1 &"
            ),
            SHORT,
        )?;
    }
    let started = Instant::now();
    let pe = poll(
        ctx,
        Duration::from_secs(180),
        "PE synchronised through vpna",
        |ctx| {
            Ok(try_status(ctx, PE_SOCKET)?.filter(|s| {
                s["synchronized"].as_bool() == Some(true)
                    && s["reference_instance"].as_str() == Some("vpna")
            }))
        },
    )?;
    figures.push(format!(
        "PE synchronised via vpna ({}) after {:.0} s, stratum {}",
        pe["reference"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64(),
        pe["stratum"]
    ));
    for ce in ["cea", "ceb"] {
        let s = poll(
            ctx,
            Duration::from_secs(180),
            &format!("{ce} synchronised to the PE"),
            |ctx| Ok(try_status(ctx, &format!("/run/{ce}.sock"))?.filter(synced_to_pe)),
        )?;
        figures.push(format!(
            "{ce} synchronised to 10.201.0.1 (stratum {}, offset {:+.3} ms) after {:.0} s",
            s["stratum"],
            s["offset_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            started.elapsed().as_secs_f64()
        ));
    }

    // A burst from CE B is counted in vpnb, never in vpna or default.
    let before = pe_status(ctx)?;
    let load = ctx.guest.ok(
        "/usr/sbin/ip netns exec ceb xtask ntp-load flood 10.201.0.1:123 --rate 20 --seconds 3 --max-requests 60",
        SHORT,
    )?;
    let after = pe_status(ctx)?;
    let delta = |inst: &str| counter(&after, inst, "received") - counter(&before, inst, "received");
    let (da, db, dd) = (delta("vpna"), delta("vpnb"), delta("default"));
    figures.push(format!(
        "burst from ceb ({}): received vpna +{da}, vpnb +{db}, default +{dd}",
        load.lines().last().unwrap_or("").trim()
    ));
    let sent: u64 = load
        .split_whitespace()
        .find_map(|f| f.strip_prefix("sent="))
        .and_then(|n| n.parse().ok())
        .context("no sent= in ntp-load's output")?;
    ensure!(sent >= 30, "ceb sent only {sent} requests");
    ensure!(
        db >= sent,
        "vpnb counted {db} of the {sent} requests from ceb"
    );
    ensure!(
        da < sent / 2,
        "vpna counted {da} datagrams during ceb's burst of {sent}"
    );
    ensure!(dd == 0, "the default instance received {dd} datagrams");

    // udp_l3mdev_accept: 0 keeps VRF traffic from unbound sockets, 1 lets it
    // reach the default instance, which drops it by the arrival interface.
    let f0 = dropped(&pe_status(ctx)?, "default", "foreign-instance");
    let r0 = leak_probe(ctx)?;
    let f1 = dropped(&pe_status(ctx)?, "default", "foreign-instance");
    ctx.guest
        .ok("sysctl -qw net.ipv4.udp_l3mdev_accept=1", SHORT)?;
    let r1 = leak_probe(ctx)?;
    let s = pe_status(ctx)?;
    let f2 = dropped(&s, "default", "foreign-instance");
    ctx.guest
        .ok("sysctl -qw net.ipv4.udp_l3mdev_accept=0", SHORT)?;
    figures.push(format!(
        "udp_l3mdev_accept=0: foreign-instance +{} ({}); =1: foreign-instance +{} ({})",
        f1 - f0,
        r0.lines().last().unwrap_or("").trim(),
        f2 - f1,
        r1.lines().last().unwrap_or("").trim()
    ));
    ensure!(
        f1 == f0,
        "with udp_l3mdev_accept=0 the default instance saw VRF traffic"
    );
    ensure!(
        f2 == f1 + 1,
        "with udp_l3mdev_accept=1 the leaked datagram was not counted"
    );
    ensure!(
        r1.contains("replies=0"),
        "the default instance answered VRF traffic: {r1}"
    );

    // Delete and re-create vrf-b: vpnb goes down and comes back up.
    ctx.guest.ok("/usr/sbin/ip link del vrf-b", SHORT)?;
    let gone = Instant::now();
    poll(ctx, Duration::from_secs(60), "vpnb down", |ctx| {
        let s = pe_status(ctx)?;
        Ok((s["instances"]["vpnb"]["state"].as_str() == Some("down")).then_some(()))
    })?;
    let down_s = gone.elapsed().as_secs_f64();
    ctx.guest.ok("/scenario/vrf-b.sh", SHORT)?;
    let back = Instant::now();
    poll(ctx, Duration::from_secs(60), "vpnb up again", |ctx| {
        let s = pe_status(ctx)?;
        Ok((s["instances"]["vpnb"]["state"].as_str() == Some("up")).then_some(()))
    })?;
    let up_s = back.elapsed().as_secs_f64();
    let b0 = counter(&pe_status(ctx)?, "vpnb", "sent");
    poll(ctx, Duration::from_secs(60), "ceb answered again", |ctx| {
        let s = pe_status(ctx)?;
        Ok((counter(&s, "vpnb", "sent") > b0).then_some(()))
    })?;
    let pids = ctx.guest.ok("pidof stratad", SHORT)?;
    figures.push(format!(
        "vrf-b deleted: vpnb down after {down_s:.0} s, re-created: up after {up_s:.0} s and answering ceb \
         (stratad processes: {})",
        pids.split_whitespace().count()
    ));
    Ok(figures.join("; "))
}
