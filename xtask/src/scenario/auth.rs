//! The `auth` scenario: symmetric-key authentication in every mode, with
//! the right keys and with wrong ones.
//!
//! Eight namespaces on one bridge `lan` (10.200.80.0/24):
//!
//! ```text
//!  srv  (.1) stratum 1; serves; multicast server on 224.0.1.1 signing with key 3 (MD5)
//!  cli  (.2) [[server]] srv, key 1 (SHA256); [[peer]] pb, key 2 (AES128-CMAC)
//!  pb   (.3) no sources: cli's signed mode 1 mobilises a passive association
//!  mc   (.4) multicast client requiring key 3
//!  wcli (.5) [[server]] srv, key 1 with another secret
//!  wp   (.6) [[peer]] cli, key 2 with another secret
//!  wmc  (.7) multicast client requiring key 3, with another secret
//!  nokey(.8) multicast client without keys (nor allow-unauthenticated)
//! ```
//!
//! Every keys file is written by the check with mode 0600 before the
//! daemons that read it are started (only `nokey` starts with the
//! topology). The three key types give both MAC lengths: 24 bytes (SHA256)
//! and 20 (AES-CMAC, MD5). No `[[access]]` rule gives anyone the `peer`
//! level, so `pb`'s passive association exists only because `cli`'s
//! packets are signed with a trusted key.
//!
//! The check waits (bounded) until
//! 1. `cli` is synchronised to `srv` through its signed client/server
//!    exchange (stratum 2), `pb` to `cli` through the signed symmetric
//!    pair (stratum 3, session `symmetric-passive`), and `mc` follows the
//!    signed mode 5 of `srv` (session `multicast-client`, calibrated with
//!    signed requests), each with a true error under 1 ms;
//! 2. and then that the counters of the wrong-key nodes say why they get
//!    nothing: `wcli` counts the crypto-NAKs `srv` answers (and `srv` the
//!    bad MACs), `wp` those of `cli` (and `cli` the bad MACs), `wmc` and
//!    `nokey` the bad MACs of `srv`'s mode 5;
//! 3. after another [`HOLD_PACKETS`] mode-5 packets, the wrong-key nodes
//!    are not synchronised and their sessions show no accepted sample
//!    (reach 0, or no session at all for the multicast clients); the good
//!    nodes `pb` and `mc` count no MAC problem, `srv` no unsigned request,
//!    and the three good pairs are still in sync.

use std::{
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use serde::Deserialize;

use super::{guard, Instance, Outcome, Run, Scenario};

/// The longest wait for the three good pairs.
const SYNC_TIMEOUT: Duration = Duration::from_secs(150);
/// The longest wait for the wrong-key counters (once the good pairs are up,
/// they have run for a while already).
const COUNTER_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait for the final look at the good pairs.
const END_TIMEOUT: Duration = Duration::from_secs(10);
/// Mode-5 packets (one a second) the wrong-key nodes must hear, and keep
/// refusing, after the good pairs are in sync.
const HOLD_PACKETS: u64 = 10;
/// Largest accepted true clock error.
const MAX_ERROR_S: f64 = 1e-3;

const SRV: &str = "10.200.80.1:123";
const CLI: &str = "10.200.80.2:123";
const PB: &str = "10.200.80.3:123";
const MC: &str = "10.200.80.4:123";

/// The secrets: the right ones, and another under the same id.
const KEY1: &str = "HEX:6a1c0b7d2e9f48a35c6d7e8f90a1b2c3d4e5f607";
const KEY1_WRONG: &str = "HEX:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c";
const KEY2: &str = "HEX:2b7e151628aed2a6abf7158809cf4f3c";
const KEY2_WRONG: &str = "HEX:3c4f5a1b2d6e7f8091a2b3c4d5e6f708";
const KEY3: &str = "ASCII:strata-group-md5";
const KEY3_WRONG: &str = "ASCII:not-the-group-key";

/// Each node: name, address, keys file (`None`: no keys), config.
struct Role {
    node: &'static str,
    cidr: &'static str,
    keys: Option<String>,
    config: String,
}

fn keys_line(id: u32, kind: &str, secret: &str) -> String {
    format!("{id} {kind} {secret}\n")
}

/// The `[auth]` table for a node's keys file.
fn auth(trusted: &str) -> String {
    format!("[auth]\nkeys-file = \"${{node_dir}}/ntp.keys\"\ntrusted-keys = [{trusted}]\n")
}

/// A virtual clock starting `offset` off with `ppm`, stepping once within 2 s.
fn clock(offset: &str, ppm: f64) -> String {
    format!(
        "[clock]\nbackend = \"virtual\"\ninitial-offset = \"{offset}\"\nfrequency-error-ppm = {ppm:.1}\n\
         # Shortened for the scenario: step once within 2 s.\n[discipline]\nstepout = \"2s\"\n"
    )
}

fn roles() -> Vec<Role> {
    let source = |address: &str, key: u32| {
        format!("address = \"{address}\"\nminpoll = -2\nmaxpoll = 0\nkey = {key}\n")
    };
    let multicast_client = |key: Option<u32>| {
        let key = key.map_or(String::new(), |k| format!("key = {k}\n"));
        format!("[[multicast-client]]\ninterface = \"${{prefix}}lan0\"\n{key}")
    };
    vec![
        Role {
            node: "srv",
            cidr: "10.200.80.1/24",
            keys: Some(keys_line(1, "SHA256", KEY1) + &keys_line(3, "MD5", KEY3)),
            config: format!(
                "[clock]\nbackend = \"virtual\"\n[local-reference]\nstratum = 1\n{}\
                 [[listen]]\naddress = \"{SRV}\"\n\
                 # poll 0 (1 s) instead of the default 6 (64 s): shortened for the scenario.\n\
                 [[multicast-server]]\ninterface = \"${{prefix}}lan0\"\npoll = 0\nkey = 3\n",
                auth("1, 3")
            ),
        },
        Role {
            node: "cli",
            cidr: "10.200.80.2/24",
            keys: Some(keys_line(1, "SHA256", KEY1) + &keys_line(2, "AES128CMAC", KEY2)),
            config: format!(
                "{}{}[[listen]]\naddress = \"{CLI}\"\n[[server]]\n{}iburst = true\n[[peer]]\n{}",
                clock("300ms", 25.0),
                auth("1, 2"),
                source(SRV, 1),
                source(PB, 2)
            ),
        },
        Role {
            node: "pb",
            cidr: "10.200.80.3/24",
            keys: Some(keys_line(2, "AES128CMAC", KEY2)),
            config: format!(
                "{}{}[[listen]]\naddress = \"{PB}\"\n",
                clock("-200ms", -10.0),
                auth("2")
            ),
        },
        Role {
            node: "mc",
            cidr: "10.200.80.4/24",
            keys: Some(keys_line(3, "MD5", KEY3)),
            config: format!(
                "{}{}[[listen]]\naddress = \"0.0.0.0:123\"\n{}",
                clock("250ms", 20.0),
                auth("3"),
                multicast_client(Some(3))
            ),
        },
        Role {
            node: "wcli",
            cidr: "10.200.80.5/24",
            keys: Some(keys_line(1, "SHA256", KEY1_WRONG)),
            config: format!(
                "{}{}[[listen]]\naddress = \"10.200.80.5:123\"\n[[server]]\n{}iburst = true\n",
                clock("300ms", 0.0),
                auth("1"),
                source(SRV, 1)
            ),
        },
        Role {
            node: "wp",
            cidr: "10.200.80.6/24",
            keys: Some(keys_line(2, "AES128CMAC", KEY2_WRONG)),
            config: format!(
                "{}{}[[listen]]\naddress = \"10.200.80.6:123\"\n[[peer]]\n{}",
                clock("300ms", 0.0),
                auth("2"),
                source(CLI, 2)
            ),
        },
        Role {
            node: "wmc",
            cidr: "10.200.80.7/24",
            keys: Some(keys_line(3, "MD5", KEY3_WRONG)),
            config: format!(
                "{}{}[[listen]]\naddress = \"0.0.0.0:123\"\n{}",
                clock("300ms", 0.0),
                auth("3"),
                multicast_client(Some(3))
            ),
        },
        Role {
            node: "nokey",
            cidr: "10.200.80.8/24",
            keys: None,
            config: format!(
                "{}[[listen]]\naddress = \"0.0.0.0:123\"\n{}",
                clock("300ms", 0.0),
                multicast_client(None)
            ),
        },
    ]
}

/// `cargo xtask scenario auth`; see the module doc.
pub fn auth_scenario() -> Scenario {
    let sc = Scenario::new(
        "auth",
        "signed client/server (SHA256), symmetric (AES-CMAC), multicast (MD5) sync; wrong keys do not, counters say why",
        check,
    );
    roles().into_iter().fold(sc, |sc, r| {
        // Nodes with keys start from the check, once their keys file is
        // written.
        sc.node(r.node, r.keys.is_none().then_some(r.config))
            .on_lan(r.node, r.cidr)
    })
}

/// `stratactl sessions --json`: the fields this scenario reads.
#[derive(Debug, Clone, Deserialize)]
struct AuthSession {
    address: String,
    mode: String,
    state: String,
    #[serde(default)]
    reach: u8,
    #[serde(default)]
    calibrations: u32,
    #[serde(default)]
    calibrated_delay_s: Option<f64>,
}

fn counters(run: &Run<'_>, node: &str) -> Result<Instance> {
    run.instance(node, "default")
}

fn sessions(run: &Run<'_>, node: &str) -> Result<Vec<AuthSession>> {
    run.query(node, "sessions")
}

/// Writes `node`'s keys file with mode 0600 (created so: never readable by
/// others, not even for a moment).
fn write_keys(run: &Run<'_>, node: &str, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = run.node_dir(node);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("ntp.keys");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "{} has mode {mode:o}", path.display());
    Ok(())
}

/// One good node's state, for the wait and the summary.
#[derive(Debug, Clone, Default)]
struct Good {
    synced: bool,
    stratum: u8,
    session: String,
    error_s: Option<f64>,
}

impl Good {
    fn ok(&self) -> bool {
        self.synced && self.error_s.is_some_and(|e| e.abs() < MAX_ERROR_S)
    }

    fn show(&self) -> String {
        format!(
            "synced={} stratum={} session=[{}] error_us={}",
            self.synced,
            self.stratum,
            self.session,
            self.error_s
                .map_or("none".to_owned(), |e| format!("{:.0}", e * 1e6))
        )
    }
}

/// The state of a good node: synchronised at `stratum` to `reference`, with
/// a session to `peer` in `mode` that has accepted samples (and, for a
/// multicast client, is calibrated and listening), and its true error.
fn good(
    run: &Run<'_>,
    node: &str,
    listen: &str,
    stratum: u8,
    peer: &str,
    mode: &str,
) -> Result<Good> {
    let st = run.status(node)?;
    let all = sessions(run, node)?;
    let s = all.iter().find(|s| s.address == peer && s.mode == mode);
    let session_ok = s.is_some_and(|s| {
        s.reach != 0
            && (mode != "multicast-client"
                || (s.calibrations >= 1
                    && s.calibrated_delay_s.is_some()
                    && matches!(s.state.as_str(), "listening" | "selected")))
    });
    let synced = st.synchronized
        && st.stratum == stratum
        && st.reference.as_deref() == Some(peer)
        && session_ok;
    let error_s = if synced {
        run.true_offset(node, listen.parse()?)
            .ok()
            .map(|s| s.offset_s)
    } else {
        None
    };
    Ok(Good {
        synced,
        stratum: st.stratum,
        session: s.map_or("none".to_owned(), |s| {
            format!(
                "{} {} reach={:o} cal={}",
                s.mode, s.state, s.reach, s.calibrations
            )
        }),
        error_s,
    })
}

fn check(run: &Run<'_>) -> Result<Outcome> {
    let started = Instant::now();
    let mut values: Vec<(&'static str, String)> = Vec::new();
    let result = phases(run, &mut values, started);
    values.push(("total_s", format!("{:.0}", started.elapsed().as_secs_f64())));
    Ok(Outcome::of(&result, values))
}

fn phases(run: &Run<'_>, values: &mut Vec<(&'static str, String)>, started: Instant) -> Result<()> {
    for role in roles() {
        let Some(keys) = &role.keys else { continue };
        write_keys(run, role.node, keys)?;
        run.start_stratad(role.node, &role.config)?;
    }
    // 1. The signed pairs synchronise.
    let targets: [(&str, &str, u8, &str, &str); 3] = [
        ("cli", CLI, 2, SRV, "client"),
        ("pb", PB, 3, CLI, "symmetric-passive"),
        ("mc", MC, 2, SRV, "multicast-client"),
    ];
    let mut last: Vec<Good> = Vec::new();
    let synced = guard::wait_until(SYNC_TIMEOUT, Duration::from_millis(500), || {
        last = targets
            .iter()
            .map(|(node, listen, stratum, peer, mode)| {
                good(run, node, listen, *stratum, peer, mode).unwrap_or_default()
            })
            .collect();
        last.iter().all(Good::ok).then(|| last.clone())
    });
    let show = |g: &[Good]| {
        targets
            .iter()
            .zip(g)
            .map(|((node, ..), g)| format!("{node}: {}", g.show()))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let synced = synced.with_context(|| format!("signed pairs not in sync: {}", show(&last)))?;
    values.push(("sync_s", format!("{:.1}", started.elapsed().as_secs_f64())));
    values.push((
        "error_us",
        synced
            .iter()
            .map(|g| format!("{:.0}", g.error_s.unwrap_or(f64::NAN) * 1e6))
            .collect::<Vec<_>>()
            .join(","),
    ));

    // 2. The wrong keys: counters say why, nothing is accepted.
    let want: [(&str, &str); 6] = [
        ("wcli", "crypto-nak"),
        ("srv", "bad-mac"),
        ("wp", "crypto-nak"),
        ("cli", "bad-mac"),
        ("wmc", "bad-mac"),
        ("nokey", "bad-mac"),
    ];
    let mut seen: Vec<u64> = Vec::new();
    guard::wait_until(COUNTER_TIMEOUT, Duration::from_millis(500), || {
        seen = want
            .iter()
            .map(|(node, reason)| counters(run, node).map_or(0, |c| c.dropped(reason)))
            .collect();
        seen.iter().all(|n| *n > 0).then_some(())
    })
    .with_context(|| format!("wrong-key counters {want:?}: {seen:?}"))?;
    values.push((
        "wrong_key_counters",
        want.iter()
            .zip(&seen)
            .map(|((node, reason), n)| format!("{node}:{reason}={n}"))
            .collect::<Vec<_>>()
            .join(","),
    ));
    // Another stretch of mode 5 (and polls) before looking at the
    // wrong-key nodes' clocks and sessions.
    let heard = counters(run, "wmc")?.dropped("bad-mac");
    guard::wait_until(
        Duration::from_secs(HOLD_PACKETS * 2 + 10),
        Duration::from_millis(500),
        || {
            counters(run, "wmc")
                .is_ok_and(|c| c.dropped("bad-mac") >= heard + HOLD_PACKETS)
                .then_some(())
        },
    )
    .context("wmc stopped hearing srv's mode 5")?;
    let wrong: [(&str, Option<(&str, &str)>); 4] = [
        ("wcli", Some((SRV, "client"))),
        ("wp", Some((CLI, "symmetric-active"))),
        ("wmc", None),
        ("nokey", None),
    ];
    let mut reaches = Vec::new();
    for (node, session) in wrong {
        let st = run.status(node)?;
        ensure!(
            !st.synchronized && st.stratum == 16,
            "{node} synchronised with a wrong key: {st:?}"
        );
        let all = sessions(run, node)?;
        match session {
            Some((peer, mode)) => {
                let s = all
                    .iter()
                    .find(|s| s.address == peer && s.mode == mode)
                    .with_context(|| format!("{node}: no {mode} session to {peer}"))?;
                ensure!(s.reach == 0, "{node}: reach {:o} with a wrong key", s.reach);
                reaches.push(format!("{node}:{:o}", s.reach));
            }
            None => {
                ensure!(
                    all.is_empty(),
                    "{node} mobilised sessions with a wrong key: {all:?}"
                );
                let c = counters(run, node)?;
                ensure!(c.received > 0, "{node} heard no mode 5");
                reaches.push(format!("{node}:none"));
            }
        }
    }
    values.push(("wrong_key_reach", reaches.join(",")));

    // The good side counts no MAC problem.
    for node in ["pb", "mc"] {
        let c = counters(run, node)?;
        for reason in ["bad-mac", "crypto-nak", "unauthenticated"] {
            ensure!(
                c.dropped(reason) == 0,
                "{node} dropped {} packets as {reason}: {:?}",
                c.dropped(reason),
                c.dropped
            );
        }
    }
    let srv = counters(run, "srv")?;
    ensure!(
        srv.dropped("unauthenticated") == 0,
        "srv saw unsigned packets: {:?}",
        srv.dropped
    );
    // Still in sync at the end (a few probes: one may be delayed on a
    // loaded machine).
    let mut end: Vec<Good> = Vec::new();
    guard::wait_until(END_TIMEOUT, Duration::from_millis(500), || {
        end = targets
            .iter()
            .map(|(node, listen, stratum, peer, mode)| {
                good(run, node, listen, *stratum, peer, mode).unwrap_or_default()
            })
            .collect();
        end.iter().all(Good::ok).then_some(())
    })
    .with_context(|| {
        let drops = |node: &str| {
            counters(run, node).map_or_else(|e| format!("{e:#}"), |c| format!("{:?}", c.dropped))
        };
        format!(
            "lost sync by the end: {}; drops cli {} pb {}",
            show(&end),
            drops("cli"),
            drops("pb")
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, path::Path};

    use super::*;

    #[test]
    fn configs_render_and_name_their_keys() {
        let sc = auth_scenario();
        sc.validate().expect("well-formed");
        let dir = Path::new("/tmp/strata-st0000/auth");
        for role in roles() {
            let node_dir = dir.join(role.node);
            let doc = super::super::config::rendered("auth", role.node, &role.config);
            assert_eq!(doc["clock"]["backend"].as_str(), Some("virtual"));
            match &role.keys {
                Some(keys) => {
                    let file = node_dir.join("ntp.keys").display().to_string();
                    assert_eq!(doc["auth"]["keys-file"].as_str(), Some(file.as_str()));
                    // Every trusted key is in the file.
                    for id in doc["auth"]["trusted-keys"].as_array().expect("list") {
                        let id = id.as_integer().expect("id");
                        assert!(
                            keys.lines().any(|l| l.starts_with(&format!("{id} "))),
                            "{}: key {id}",
                            role.node
                        );
                    }
                }
                None => assert!(doc.get("auth").is_none()),
            }
        }
        // Only the node without keys starts with the topology (so the
        // binaries are built).
        let started: Vec<&str> = sc
            .nodes
            .iter()
            .filter(|n| n.config.is_some())
            .map(|n| n.name)
            .collect();
        assert_eq!(started, ["nokey"]);
        // Right and wrong secrets differ under the same id and type.
        for (right, wrong) in [(KEY1, KEY1_WRONG), (KEY2, KEY2_WRONG), (KEY3, KEY3_WRONG)] {
            assert_ne!(right, wrong);
        }
        let addrs: Vec<SocketAddr> = [SRV, CLI, PB, MC]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        for (a, role) in addrs.iter().zip(roles()) {
            assert!(role.cidr.starts_with(&format!("{}/", a.ip())));
        }
    }
}
