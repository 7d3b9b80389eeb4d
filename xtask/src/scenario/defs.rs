//! The scenarios themselves: topology, configs and checks as data.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{config, opt, show, us, wait_until, Outcome, Run, Scenario};

/// Every scenario, in the order `scenario all` runs them.
pub fn all() -> Vec<Scenario> {
    vec![
        smoke(),
        client_server(),
        super::interop::interop_chrony(),
        super::vpn::vpn(),
        super::vpn::vpn_device(),
        super::multicast::multicast(),
        super::multicast::multicast_v6(),
        super::multicast::broadcast(),
        super::multicast::interop_multicast(),
        super::symmetric::symmetric(),
        super::symmetric::interop_symmetric(),
        super::auth::auth_scenario(),
        super::ntpsec::interop_ntpsec(),
        super::access::access(),
        super::flood::flood(),
        super::ops::ops(),
        super::mode6::mode6(),
    ]
}

/// Plumbing only, no daemon: namespaces, a veth, a bridge, IPv4 and IPv6,
/// processes in namespaces, and the probe across links.
fn smoke() -> Scenario {
    Scenario::new(
        "smoke",
        "namespace plumbing: veth + bridge, v4/v6, probe across links (no daemon)",
        smoke_check,
    )
    .bare("a")
    .bare("b")
    .bare("c")
    .veth(
        ("a", "eth0", "10.200.0.1/24"),
        ("b", "eth0", "10.200.0.2/24"),
    )
    .addr("a", "eth0", "fd00:200::1/64")
    .addr("b", "eth0", "fd00:200::2/64")
    .on_lan("b", "10.200.9.2/24")
    .on_lan("c", "10.200.9.3/24")
}

fn smoke_check(run: &Run<'_>) -> Result<Outcome> {
    let shown = super::guard::ip(&[
        "-n",
        &run.ns("a"),
        "-br",
        "addr",
        "show",
        "dev",
        &run.ifname("eth0"),
    ])?;
    let addrs_ok = shown.contains("10.200.0.1/24") && shown.contains("fd00:200::1/64");

    // A responder with a known offset in one node, probed from another:
    // (node serving, listen address, offset ms, node probing).
    let cases: [(&str, &str, i64, &str); 3] = [
        ("a", "10.200.0.1:123", 250, "b"),
        ("a", "[fd00:200::1]:123", -100, "b"),
        ("b", "10.200.9.2:123", 40, "c"),
    ];
    let mut values = vec![("addrs", addrs_ok.to_string())];
    let mut pass = addrs_ok;
    for (i, (server, listen, offset_ms, client)) in cases.iter().enumerate() {
        let offset = offset_ms.to_string();
        run.spawn_in(
            server,
            &format!("responder{i}"),
            &run.bins.xtask,
            &[
                "ntp-responder",
                listen,
                "--offset-ms",
                &offset,
                "--max-requests",
                "20",
                "--max-seconds",
                "30",
            ],
        )?;
        let target: SocketAddr = listen.parse()?;
        // The responder may not have bound yet: poll until a probe succeeds.
        let sample = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            run.true_offset(client, target).ok()
        })
        .with_context(|| format!("probe {listen} from {client}"))?;
        #[allow(clippy::cast_precision_loss)] // small millisecond constants
        let want = *offset_ms as f64 / 1000.0;
        let ok = (sample.offset_s - want).abs() < 0.010;
        pass &= ok;
        values.push((
            ["probe_v4_us", "probe_v6_us", "probe_bridge_us"][i],
            format!("{:.0}", sample.offset_s * 1e6),
        ));
    }
    Ok(Outcome { pass, values })
}

/// The client: 500 ms off, +50 ppm, polling the server.
fn client_config() -> String {
    let clock = config::stepping("500ms", Some(50.0), "128ms");
    let source = config::source("server", "10.200.1.1:123");
    format!("{clock}{source}{}", config::listen("10.200.1.2:123"))
}

/// One client syncing to one stratum-1 server over a veth: the client starts
/// 500 ms off with a +50 ppm frequency error, must step once and then track.
fn client_server() -> Scenario {
    Scenario::new(
        "client-server",
        "client steps 500 ms once, then cancels a +50 ppm error (|true error| < 1 ms)",
        client_server_check,
    )
    .daemon("server", config::stratum1("10.200.1.1:123"))
    .daemon("client", client_config())
    .veth(
        ("server", "eth0", "10.200.1.1/24"),
        ("client", "eth0", "10.200.1.2/24"),
    )
}

/// What the client looked like at one poll.
#[derive(Debug, Default, Clone)]
struct Observed {
    true_error_s: Option<f64>,
    freq_ppm: Option<f64>,
    steps: Option<u64>,
    /// Diagnostics for a FAIL line: synchronized, stratum, status offset, reach.
    diag: Option<String>,
}

impl Observed {
    fn synced(&self) -> bool {
        self.true_error_s.is_some_and(|e| e.abs() < 1e-3)
            && self.freq_ppm.is_some_and(|f| (f + 50.0).abs() < 1.0)
            && self.steps == Some(1)
    }

    fn values(&self, sync_s: f64) -> Vec<(&'static str, String)> {
        vec![
            ("true_error_us", us(self.true_error_s)),
            ("freq_ppm", show(self.freq_ppm, |f| format!("{f:.3}"))),
            ("steps", opt(self.steps)),
            ("sync_s", format!("{sync_s:.1}")),
        ]
    }
}

fn client_server_check(run: &Run<'_>) -> Result<Outcome> {
    let started = Instant::now();
    let client_listen: SocketAddr = "10.200.1.2:123".parse()?;
    let mut last = Observed::default();
    let synced = wait_until(Duration::from_secs(90), Duration::from_millis(500), || {
        let status = run.status("client");
        let sessions = run.sessions("client");
        let diag = match (&status, &sessions) {
            (Ok(st), Ok(se)) => format!(
                "synchronized={} stratum={} status_offset_s={:?} session={}",
                st.synchronized,
                st.stratum,
                st.offset_s,
                se.iter()
                    .find(|s| s.address == "10.200.1.1:123")
                    .map_or_else(|| "none".to_owned(), super::Session::summary),
            ),
            (Err(e), _) | (_, Err(e)) => format!("stratactl_error={:?}", format!("{e:#}")),
        };
        let status = status.ok();
        last = Observed {
            true_error_s: run
                .true_offset("client", client_listen)
                .ok()
                .map(|s| s.offset_s),
            freq_ppm: status.as_ref().and_then(|s| s.frequency_ppm),
            steps: status.as_ref().and_then(|s| s.clock_steps),
            diag: Some(diag),
        };
        last.synced().then(|| last.clone())
    });
    let sync_s = started.elapsed().as_secs_f64();
    Ok(match synced {
        Ok(obs) => Outcome {
            pass: true,
            values: obs.values(sync_s),
        },
        Err(_) => {
            let mut values = last.values(sync_s);
            if let Some(diag) = &last.diag {
                values.push(("last", format!("{diag:?}")));
            }
            values.push(("error", "\"not synchronized within 90s\"".to_owned()));
            Outcome {
                pass: false,
                values,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_server_pass_condition() {
        let good = Observed {
            true_error_s: Some(-0.0004),
            freq_ppm: Some(-49.6),
            steps: Some(1),
            diag: None,
        };
        assert!(good.synced());
        assert!(
            !Observed {
                true_error_s: Some(0.002),
                ..good.clone()
            }
            .synced(),
            "error too big"
        );
        assert!(
            !Observed {
                freq_ppm: Some(-48.9),
                ..good.clone()
            }
            .synced(),
            "frequency off"
        );
        assert!(
            !Observed {
                freq_ppm: Some(50.0),
                ..good.clone()
            }
            .synced(),
            "wrong sign"
        );
        assert!(
            !Observed {
                steps: Some(2),
                ..good.clone()
            }
            .synced(),
            "stepped twice"
        );
        assert!(
            !Observed {
                steps: None,
                ..good.clone()
            }
            .synced(),
            "unknown steps"
        );
        let line: Vec<String> = good
            .values(12.34)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            line,
            [
                "true_error_us=-400.0",
                "freq_ppm=-49.600",
                "steps=1",
                "sync_s=12.3"
            ]
        );
    }

    #[test]
    fn client_server_configs_render() {
        let server = config::stratum1("10.200.1.1:123");
        for (node, template) in [("server", server), ("client", client_config())] {
            let doc = config::rendered("client-server", node, &template);
            assert_eq!(doc["clock"]["backend"].as_str(), Some("virtual"));
            assert_eq!(
                doc["control"]["socket"].as_str().map(str::to_owned),
                Some(format!(
                    "/tmp/strata-st0000/client-server/{node}/control.sock"
                ))
            );
            assert!(doc["clock"]["drift-file"].as_str().is_some());
        }
    }
}
