//! The `mode6` scenario: ntpsec's `ntpq` monitors a strata daemon over
//! read-only NTP control messages (mode 6).
//!
//! Nodes on one LAN: `srv` (10.200.7.1) a strata stratum-1 server; `mon`
//! (10.200.7.2) the daemon under test, a client of `srv` whose access
//! rules give `q` (10.200.7.3) the level `query` and `t` (10.200.7.4) the
//! level `synchronization`. Once `mon` is synchronised and its source's
//! reach is full:
//!
//! - `mode6-rv`: `ntpq -n -c rv` from `q` shows the stratum and refid
//!   `stratactl status` shows (the system peer's address).
//! - `mode6-rv-named`: `ntpq -n -c "rv 0 offset,stratum"` shows those two
//!   variables and no others.
//! - `mode6-peers`: `ntpq -n -p` shows the source with tally `*`, the
//!   stratum and reach `stratactl sessions` shows, and an offset and
//!   delay within 1 ms of stratactl's (read a moment apart).
//! - `mode6-as`: `ntpq -n -c as` lists the association as `sys.peer`, and
//!   `ntpq -n -c "rv ASSID"` with its id shows its address, stratum and
//!   host mode (3, client).
//! - `mode6-access`: `ntpq -c rv` from `t` (time only) gets no answer,
//!   counted as `access-denied` on `mon`; a mode-3 probe from `q`
//!   (control only) gets no time, one from `t` does.
//! - `mode6-write`: a WRITEVAR sent with ntpsec's own Python library
//!   (python3-ntp) from `q` is refused with a permission error.
//! - `mode6-instances`: `mon` has a second instance, `vpna` (a namespace
//!   with its own listener 10.200.8.1, monitoring station `vq` at
//!   `query` and server `vsrv`, stratum 3): `ntpq -p` from `vq` lists only
//!   `vsrv` (reached), `ntpq -p` from `q` only `srv`, and the system
//!   variables are the same in both.
//! - `mode6-plugins`: Debian's monitoring-plugins: `check_ntp_peer` from
//!   `q` returns OK (0) against `mon` and CRITICAL (2) against `lone`
//!   (10.200.7.5, a strata whose only server never answers, so it stays
//!   unsynchronised); `check_ntp_time` (mode 3) from the time-only `t`
//!   returns OK against `mon`.
//!
//! ntpq is ntpsec's, from the package `.ci/run` unpacks privately into
//! [`NTPSEC_PREFIX`](super::ntpsec::NTPSEC_PREFIX) (it runs on
//! python3-ntp); nothing of ntpsec runs as a daemon here.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};

use super::{
    config::{access, client, local, stratum1},
    ntpsec::{ensure_ntpsec, NtpqPeer},
    wait_until, Line, Outcome, Run, Scenario,
};

const SERVER: &str = "10.200.7.1";
const MONITORED: &str = "10.200.7.2";
/// Allowed control queries, no time.
const QUERY: &str = "10.200.7.3";
/// Allowed time, no control queries.
const TIME_ONLY: &str = "10.200.7.4";
/// `mon`'s second instance, `vpna` (a namespace): a listener for its
/// monitoring station `vq` and one server, `vsrv` (stratum 3, so that the
/// default instance's stratum-1 source stays the system peer).
const VPN_INSTANCE: &str = r#"
[[instance]]
name = "vpna"
netns = "${prefix}mon-vpna"

[[listen]]
address = "10.200.8.1:123"
instance = "vpna"

[[server]]
address = "10.200.9.2:123"
instance = "vpna"
minpoll = -2
maxpoll = 0

[[access]]
instance = "vpna"
level = "query"
prefixes = ["10.200.8.2/32"]
"#;
/// `mon`'s listener in `vpna`.
const VPN_LISTENER: &str = "10.200.8.1";
/// `vpna`'s server.
const VPN_SERVER: &str = "10.200.9.2";
/// Never synchronised: its server does not exist.
const LONE: &str = "10.200.7.5";
/// Where Debian's monitoring-plugins live.
const PLUGINS: &str = "/usr/lib/nagios/plugins";
/// The longest wait for `mon` to synchronise with full reach.
const SYNC_TIMEOUT: Duration = Duration::from_secs(90);

/// The scenario; see the module doc.
pub fn mode6() -> Scenario {
    let mon = format!(
        "{}{}{}{}",
        client(
            "20ms",
            &format!("{SERVER}:123"),
            &format!("{MONITORED}:123")
        ),
        access("query", &format!("{QUERY}/32")),
        access("synchronization", &format!("{TIME_ONLY}/32")),
        VPN_INSTANCE,
    );
    Scenario::new(
        "mode6",
        "ntpsec's ntpq reads a strata daemon over mode 6: rv, named rv, peers, as; query vs synchronization level; writes refused",
        check,
    )
    .daemon("srv", stratum1(&format!("{SERVER}:123")))
    .daemon("mon", mon)
    .daemon(
        "lone",
        format!(
            "{}{}",
            client("0ms", "10.200.7.9:123", &format!("{LONE}:123")),
            access("query", &format!("{QUERY}/32")),
        ),
    )
    .bare("q")
    .bare("t")
    .on_lan("srv", "10.200.7.1/24")
    .on_lan("mon", "10.200.7.2/24")
    .on_lan("q", "10.200.7.3/24")
    .on_lan("t", "10.200.7.4/24")
    .on_lan("lone", "10.200.7.5/24")
    .bare("mon-vpna")
    .bare("vq")
    .daemon("vsrv", local(3, &format!("{VPN_SERVER}:123")))
    .veth(("mon-vpna", "v1", "10.200.8.1/24"), ("vq", "e1", "10.200.8.2/24"))
    .veth(("mon-vpna", "v2", "10.200.9.1/24"), ("vsrv", "e1", "10.200.9.2/24"))
}

/// A monitoring plugin run in `node`: its exit code and first line.
fn plugin(run: &Run<'_>, node: &str, name: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &run.ns(node)])
        .arg(Path::new(PLUGINS).join(name))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) => (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        ),
        Err(e) => (None, format!("{name}: {e}")),
    }
}

/// `ntpq -n` with a 2 s answer timeout, running `commands` against `mon`.
fn ntpq(run: &Run<'_>, ntpq: &Path, node: &str, commands: &[&str]) -> Result<String> {
    ntpq_at(run, ntpq, node, MONITORED, commands)
}

/// As [`ntpq`], against `target`.
fn ntpq_at(
    run: &Run<'_>,
    ntpq: &Path,
    node: &str,
    target: &str,
    commands: &[&str],
) -> Result<String> {
    let mut args = vec!["-n", "-c", "timeout 2000"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(target);
    run.exec_in(node, ntpq, &args)
}

/// `name=value` pairs of ntpq's `rv` output.
fn rv_vars(text: &str) -> Vec<(String, String)> {
    text.split([',', '\n'])
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

fn var<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The WRITEVAR probe: ntpsec's library sends it; prints how it ended.
const WRITEVAR: &str = "\
import sys, ntp.packet, ntp.control
s = ntp.packet.ControlSession()
s.primary_timeout = 2000
s.openhost(sys.argv[1])
try:
    s.doquery(ntp.control.CTL_OP_WRITEVAR, 0, 'leap=1')
    print('accepted')
except ntp.packet.ControlException as e:
    print('refused', e.message)
";

fn check(run: &Run<'_>) -> Result<Outcome> {
    let tool = ensure_ntpsec()?.join("usr/bin/ntpq");
    let source = format!("{SERVER}:123");
    let ready = wait_until(SYNC_TIMEOUT, Duration::from_secs(1), || {
        let st = run.status("mon").ok()?;
        let sessions = run.sessions("mon").ok()?;
        let reach = |address: &str| {
            sessions
                .iter()
                .find(|s| s.address == address)
                .and_then(|s| s.reach)
        };
        let vpn_source = format!("{VPN_SERVER}:123");
        (st.synchronized
            && reach(&source) == Some(0xff)
            && reach(&vpn_source).is_some_and(|r| r != 0))
        .then_some(())
    });
    let status = run.status("mon")?;
    let session = run
        .sessions("mon")?
        .into_iter()
        .find(|s| s.address == source)
        .context("no session to the server")?;

    let rv = ntpq(run, &tool, "q", &["rv"]).unwrap_or_else(|e| format!("error: {e:#}"));
    let vars = rv_vars(&rv);
    let rv_line = Line {
        name: "mode6-rv",
        pass: var(&vars, "stratum") == Some(&status.stratum.to_string())
            && var(&vars, "refid") == Some(SERVER)
            && status.reference.as_deref() == Some(&source),
        values: vec![
            (
                "ntpq_stratum",
                var(&vars, "stratum").unwrap_or("-").to_owned(),
            ),
            ("stratactl_stratum", status.stratum.to_string()),
            ("ntpq_refid", var(&vars, "refid").unwrap_or("-").to_owned()),
        ],
    };

    let named =
        ntpq(run, &tool, "q", &["rv 0 offset,stratum"]).unwrap_or_else(|e| format!("error: {e:#}"));
    let named_vars = rv_vars(&named);
    let names: Vec<&str> = named_vars.iter().map(|(k, _)| k.as_str()).collect();
    let named_line = Line {
        name: "mode6-rv-named",
        pass: names == ["offset", "stratum"],
        values: vec![("names", names.join("+"))],
    };

    let peers = ntpq(run, &tool, "q", &["peers"]).and_then(|o| NtpqPeer::parse_all(&o));
    let peer = peers
        .as_ref()
        .ok()
        .and_then(|p| p.iter().find(|p| p.remote == SERVER).cloned());
    let ctl_offset_ms = session.offset_s.map(|o| o * 1e3);
    let peers_line = Line {
        name: "mode6-peers",
        pass: peer.as_ref().is_some_and(|p| {
            p.tally == '*'
                && Some(p.stratum) == session.stratum
                && Some(p.reach) == session.reach
                && ctl_offset_ms.is_some_and(|o| (o - p.offset_ms).abs() < 1.0)
        }),
        values: vec![
            (
                "ntpq",
                peer.as_ref().map_or_else(
                    || format!("{:?}", peers.as_ref().err()),
                    |p| {
                        format!(
                            "{}{} st{} reach{:o} {:.3}ms",
                            p.tally, p.remote, p.stratum, p.reach, p.offset_ms
                        )
                    },
                ),
            ),
            ("stratactl", session.summary()),
        ],
    };

    let assoc = ntpq(run, &tool, "q", &["as"]).unwrap_or_else(|e| format!("error: {e:#}"));
    let sys_peer: Vec<&str> = assoc.lines().filter(|l| l.contains("sys.peer")).collect();
    // `ind assid status …`: the association id is the second column.
    let assid = sys_peer
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("0");
    let one = ntpq(run, &tool, "q", &[&format!("rv {assid}")])
        .unwrap_or_else(|e| format!("error: {e:#}"));
    let one_vars = rv_vars(&one);
    let as_line = Line {
        name: "mode6-as",
        pass: sys_peer.len() == 1
            && var(&one_vars, "srcadr") == Some(SERVER)
            && var(&one_vars, "stratum").map(str::to_owned)
                == session.stratum.map(|s| s.to_string())
            && var(&one_vars, "hmode") == Some("3"),
        values: vec![
            ("sys_peer_lines", sys_peer.len().to_string()),
            ("assid", assid.to_owned()),
            (
                "rv_srcadr",
                var(&one_vars, "srcadr").unwrap_or("-").to_owned(),
            ),
            (
                "rv_stratum",
                var(&one_vars, "stratum").unwrap_or("-").to_owned(),
            ),
        ],
    };

    let denied_before = run.instance("mon", "default")?.dropped("access-denied");
    let t_rv = ntpq(run, &tool, "t", &["rv"]).unwrap_or_default();
    let denied_after = run.instance("mon", "default")?.dropped("access-denied");
    let probe = |node: &str| -> String {
        run.exec_in(
            node,
            &run.bins.xtask,
            &[
                "ntp-load",
                "once",
                &format!("{MONITORED}:123"),
                "--mode",
                "3",
                "--timeout-ms",
                "1000",
            ],
        )
        .ok()
        .and_then(|o| crate::ntpload::Counts::parse_line(&o).ok())
        .map_or_else(|| "error".to_owned(), |c| c.answer)
    };
    let (q_time, t_time) = (probe("q"), probe("t"));
    let access_line = Line {
        name: "mode6-access",
        pass: !t_rv.contains("stratum=")
            && denied_after > denied_before
            && q_time != format!("stratum-{}", status.stratum)
            && t_time == format!("stratum-{}", status.stratum),
        values: vec![
            (
                "time_only_rv_answered",
                t_rv.contains("stratum=").to_string(),
            ),
            ("access_denied", (denied_after - denied_before).to_string()),
            ("query_probe", q_time),
            ("time_only_probe", t_time),
        ],
    };

    // python3-ntp is Debian's: the system interpreter, whatever else is
    // first on PATH.
    let python = Path::new("/usr/bin/python3");
    let write = run
        .exec_in("q", python, &["-c", WRITEVAR, MONITORED])
        .unwrap_or_else(|e| format!("error: {e:#}"));
    let write_line = Line {
        name: "mode6-write",
        pass: write.contains("refused") && write.contains("PERMISSION"),
        values: vec![("answer", write.trim().to_owned())],
    };

    let thresholds = ["-w", "0.5", "-c", "1", "-t", "5"];
    let with_host = |host: &'static str| [&["-H", host][..], &thresholds[..]].concat();
    let peer_ok = plugin(run, "q", "check_ntp_peer", &with_host(MONITORED));
    let peer_crit = plugin(run, "q", "check_ntp_peer", &with_host(LONE));
    let time_ok = plugin(run, "t", "check_ntp_time", &with_host(MONITORED));
    let plugins_line = Line {
        name: "mode6-plugins",
        pass: peer_ok.0 == Some(0) && peer_crit.0 == Some(2) && time_ok.0 == Some(0),
        values: vec![
            ("check_ntp_peer", format!("{:?} {}", peer_ok.0, peer_ok.1)),
            (
                "check_ntp_peer_unsynced",
                format!("{:?} {}", peer_crit.0, peer_crit.1),
            ),
            ("check_ntp_time", format!("{:?} {}", time_ok.0, time_ok.1)),
        ],
    };

    // Per instance: each listener shows its own instance's associations.
    let remotes = |peers: &Result<Vec<NtpqPeer>>| -> Vec<String> {
        peers
            .as_ref()
            .map(|p| p.iter().map(|p| p.remote.clone()).collect())
            .unwrap_or_default()
    };
    let vpn_peers =
        ntpq_at(run, &tool, "vq", VPN_LISTENER, &["peers"]).and_then(|o| NtpqPeer::parse_all(&o));
    let vpn_remotes = remotes(&vpn_peers);
    let default_remotes = remotes(&peers);
    let vpn_reach = vpn_peers
        .as_ref()
        .ok()
        .and_then(|p| p.first().map(|p| p.reach));
    let vpn_rv = ntpq_at(run, &tool, "vq", VPN_LISTENER, &["rv 0 stratum"]).unwrap_or_default();
    let instance_line = Line {
        name: "mode6-instances",
        pass: vpn_remotes == [VPN_SERVER]
            && default_remotes == [SERVER]
            && vpn_reach.is_some_and(|r| r != 0)
            && var(&rv_vars(&vpn_rv), "stratum") == Some(&status.stratum.to_string()),
        values: vec![
            ("vpna", vpn_remotes.join("+")),
            ("default", default_remotes.join("+")),
            (
                "vpna_reach",
                vpn_reach.map_or("-".to_owned(), |r| format!("{r:o}")),
            ),
        ],
    };

    let lines = [
        instance_line,
        rv_line,
        named_line,
        peers_line,
        as_line,
        access_line,
        write_line,
        plugins_line,
    ];
    for line in &lines {
        line.print();
    }
    let values = lines
        .iter()
        .map(|l| (l.name, if l.pass { "pass" } else { "FAIL" }.to_owned()))
        .collect();
    Ok(Outcome {
        pass: ready.is_ok() && lines.iter().all(|l| l.pass),
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ntpq_rv_output() {
        let text = "associd=0 status=0615 leap_none, sync_ntp, 1 event, clock_sync,\n\
                    version=\"strata 0.1.0\", stratum=2, refid=10.200.7.1,\n\
                    offset=0.012000, sys_jitter=0.004000\n";
        let vars = rv_vars(text);
        assert_eq!(var(&vars, "stratum"), Some("2"));
        assert_eq!(var(&vars, "refid"), Some("10.200.7.1"));
        assert_eq!(var(&vars, "version"), Some("strata 0.1.0"));
        assert_eq!(var(&vars, "nonesuch"), None);
    }
}
