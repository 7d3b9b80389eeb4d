//! `stratactl` against a running daemon: `sessions --verbose` (blocks and
//! JSON) with a full clock filter register, and `status --instance`.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use strata_tests::{binary, free_udp_port, wait_until, Daemon};

fn stratactl(d: &Daemon, args: &[&str]) -> Output {
    std::process::Command::new(binary("stratactl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("runs stratactl")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stratactl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn verbose_sessions_and_status_per_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let _server = Daemon::start(
        dir.path(),
        "server",
        &format!(
            "[clock]\nbackend = \"virtual\"\n[local-reference]\nstratum = 1\n[[listen]]\naddress = \"127.0.0.1:{port}\"\n"
        ),
    );
    let client = Daemon::start(
        dir.path(),
        "client",
        &format!(
            "[clock]\nbackend = \"virtual\"\n[[server]]\naddress = \"127.0.0.1:{port}\"\nminpoll = -2\nmaxpoll = -1\niburst = true\n"
        ),
    );
    // Eight answered polls fill the register.
    let sessions = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let out = stratactl(&client, &["sessions", "--verbose", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let full = v[0]["filter"].as_array().is_some_and(|f| f.len() == 8)
            && v[0]["selection"] == "system-peer";
        full.then_some(v)
    })
    .expect("a full filter register and a system peer");
    let s = &sessions[0];
    assert_eq!(s["address"], format!("127.0.0.1:{port}").as_str());
    assert_eq!(s["key_id"], Value::Null);
    assert_eq!(s["authenticated"], false);
    assert_eq!(s["remote_leap"], "none");
    assert_eq!(s["remote_poll"], s["poll"]);
    assert!(
        s["next_poll_s"]
            .as_f64()
            .is_some_and(|t| (0.0..=1.0).contains(&t)),
        "{s}"
    );
    let filter = s["filter"].as_array().expect("filter");
    let ages: Vec<f64> = filter
        .iter()
        .map(|f| f["age_s"].as_f64().expect("age"))
        .collect();
    assert!(
        ages.windows(2).all(|w| w[0] <= w[1]),
        "newest first: {ages:?}"
    );
    for f in filter {
        let delay = f["delay_s"].as_f64().expect("delay");
        assert!(delay > 0.0 && delay < 0.1, "{f}");
        assert!(f["offset_s"].as_f64().is_some_and(f64::is_finite), "{f}");
    }

    // The blocks: the plain fields, the details and the register table.
    let text = stdout(&stratactl(&client, &["sessions", "--verbose"]));
    assert!(
        text.starts_with(&format!("default 127.0.0.1:{port}\n")),
        "{text}"
    );
    for line in [
        "  mode:             client\n",
        "  selection:        system-peer\n",
        "  authentication:   none\n",
        "  remote leap:      none\n",
        "  filter register (newest first):\n",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("  filter register"))
        .skip(1)
        .collect();
    assert_eq!(table.len(), 9, "a header and 8 samples:\n{text}");
    assert!(table[0].trim_start().starts_with("#"), "{text}");
    // Right-aligned columns: every row as long as the header.
    assert!(
        table
            .iter()
            .all(|l| l.chars().count() == table[0].chars().count()),
        "{text}"
    );

    // Without --verbose, the plain fields only.
    let plain: Value =
        serde_json::from_str(&stdout(&stratactl(&client, &["sessions", "--json"]))).expect("JSON");
    assert!(
        plain[0].get("filter").is_none() && plain[0].get("key_id").is_none(),
        "{plain}"
    );

    // Status: the reference with its instance, and one instance's counters.
    let status: Value = serde_json::from_str(&stdout(&stratactl(
        &client,
        &["status", "--json", "--instance", "default"],
    )))
    .expect("JSON");
    assert_eq!(status["reference"], format!("127.0.0.1:{port}").as_str());
    assert_eq!(status["reference_instance"], "default");
    assert!(status["jitter_s"].as_f64().is_some(), "{status}");
    let names: Vec<&String> = status["instances"]
        .as_object()
        .expect("map")
        .keys()
        .collect();
    assert_eq!(names, ["default"]);
    let text = stdout(&stratactl(&client, &["status"]));
    assert!(
        text.contains(&format!(
            "reference:         127.0.0.1:{port} (instance default)\n"
        )),
        "{text}"
    );
    let out = stratactl(&client, &["status", "--instance", "nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unknown instance \"nope\" (the daemon has: default)"),
        "{out:?}"
    );
}
