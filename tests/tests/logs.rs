//! The daemon's logs: JSON lines when stderr is not a terminal (here: a
//! file), human lines when `[log] format = "human"`, one line per
//! association change and none per packet.

use std::time::Duration;

use serde_json::Value;
use strata_tests::{free_udp_port, wait_until, Daemon};

fn server(dir: &std::path::Path, port: u16, extra: &str) -> Daemon {
    Daemon::start(
        dir,
        "server",
        &format!(
            "[clock]\nbackend = \"virtual\"\n[local-reference]\nstratum = 1\n[[listen]]\naddress = \"127.0.0.1:{port}\"\n{extra}"
        ),
    )
}

fn client(dir: &std::path::Path, server_port: u16, extra: &str) -> Daemon {
    Daemon::start(
        dir,
        "client",
        &format!(
            "[clock]\nbackend = \"virtual\"\n[[server]]\naddress = \"127.0.0.1:{server_port}\"\nminpoll = -2\nmaxpoll = -1\niburst = true\n{extra}"
        ),
    )
}

/// Every line of `log` as JSON; panics on a line that is not.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn json_lines_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let server = server(dir.path(), port, "");
    let client = client(dir.path(), port, "");
    let address = format!("127.0.0.1:{port}");
    let reachable = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        json_lines(&client.log()).into_iter().find(|v| {
            v["fields"]["event"] == "reachable" && v["fields"]["address"] == address.as_str()
        })
    })
    .unwrap_or_else(|| panic!("no reachable event; log:\n{}", client.log()));
    assert_eq!(reachable["level"], "INFO");
    assert_eq!(reachable["fields"]["message"], "association reachable");
    assert_eq!(reachable["fields"]["instance"], "default");
    assert_eq!(reachable["fields"]["mode"], "client");
    assert!(reachable["timestamp"].is_string(), "{reachable}");

    // The client then becomes synchronised to its only source: selected.
    let selected = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        json_lines(&client.log())
            .into_iter()
            .find(|v| v["fields"]["event"] == "selected")
    })
    .unwrap_or_else(|| panic!("no selected event; log:\n{}", client.log()));
    assert_eq!(selected["fields"]["address"], address.as_str());

    // Every line is JSON with a level and a message.
    for v in json_lines(&client.log())
        .into_iter()
        .chain(json_lines(&server.log()))
    {
        assert!(v["level"].is_string(), "{v}");
        assert!(v["fields"]["message"].is_string(), "{v}");
    }

    // Many packets later, still only a handful of info lines: none per packet.
    let served = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let received = server.status().instances["default"].received;
        (received >= 40).then_some(received)
    })
    .expect("the server answered 40 requests");
    let lines = json_lines(&server.log()).len();
    assert!(
        lines < 10,
        "{lines} log lines for {served} requests:\n{}",
        server.log()
    );
    let info = json_lines(&client.log())
        .into_iter()
        .filter(|v| v["level"] == "INFO")
        .count();
    assert!(info < 20, "{info} info lines:\n{}", client.log());
}

#[test]
fn human_lines_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let _server = server(dir.path(), port, "");
    let client = client(dir.path(), port, "[log]\nformat = \"human\"\n");
    let line = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        client
            .log()
            .lines()
            .find(|l| l.contains("association reachable"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no reachable line; log:\n{}", client.log()));
    assert!(serde_json::from_str::<Value>(&line).is_err(), "{line}");
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        line.contains(&format!("address=127.0.0.1:{port}")),
        "{line}"
    );
    assert!(
        line.contains("event=\"reachable\"") || line.contains("event=reachable"),
        "{line}"
    );
    assert!(
        !line.contains('\u{1b}'),
        "no colour codes in a file: {line}"
    );

    // The log set-up is fixed at start: a reload names [log] as needing a restart.
    let text = std::fs::read_to_string(client.config_path())
        .expect("config")
        .replace("format = \"human\"", "format = \"json\"");
    std::fs::write(client.config_path(), text).expect("rewrite config");
    let out = std::process::Command::new(strata_tests::binary("stratactl"))
        .arg("--socket")
        .arg(&client.socket)
        .arg("reload")
        .output()
        .expect("stratactl");
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && reply.contains("changes to [log] need a restart"),
        "{reply}"
    );
}
