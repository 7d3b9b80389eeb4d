//! `stratactl` as a program: check-config exit codes and output, status/sessions against a
//! stand-in daemon socket (table and `--json`), socket resolution and error exits.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use strata_daemon::control::{
    encode_reply, read_request, Reply, Request, Session, Status, Trace, TraceHop,
};

fn stratactl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stratactl"))
        .args(args)
        .env_remove("STRATA_CONTROL__SOCKET")
        .output()
        .expect("runs stratactl")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn status() -> Status {
    Status {
        synchronized: false,
        stratum: 16,
        offset_s: 0.0,
        frequency_ppm: 0.0,
        jitter_s: 0.0,
        refid: "INIT".to_owned(),
        reference: None,
        reference_instance: None,
        leap: "unsynchronized".to_owned(),
        precision: -20,
        root_delay_s: 0.0,
        root_dispersion_s: 0.0,
        poll: 6,
        last_update_s: None,
        clock_steps: 0,
        clock_backend: "observe".to_owned(),
        kernel: None,
        estimate: None,
        instances: Default::default(),
    }
}

fn session() -> Session {
    Session {
        instance: "default".to_owned(),
        address: "127.0.0.1:11123".to_owned(),
        mode: "client".to_owned(),
        state: "reachable".to_owned(),
        stratum: 1,
        reach: 0o17,
        poll: 4,
        offset_s: 0.0015,
        delay_s: 0.0002,
        dispersion_s: 0.001,
        jitter_s: 0.00001,
        refid: "LOCL".to_owned(),
        last_s: Some(1.0),
        calibrated_delay_s: None,
        calibration_age_s: None,
        calibrations: 0,
        detail: None,
    }
}

/// A stand-in daemon answering `n` connections on a socket in `dir`.
fn serve(dir: &Path, n: usize) -> (PathBuf, JoinHandle<()>) {
    let path = dir.join("control.sock");
    let listener = UnixListener::bind(&path).expect("binds");
    let handle = std::thread::spawn(move || {
        for _ in 0..n {
            let (stream, _) = listener.accept().expect("accepts");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let reply = match read_request(&stream) {
                Ok(Request::Status) => Reply::Status(status()),
                Ok(Request::Sessions) => Reply::Sessions(vec![session()]),
                Ok(Request::Reload) => Reply::Done("reloaded".to_owned()),
                Ok(Request::Trace { address, instance }) => Reply::Trace(Trace {
                    instance: instance.unwrap_or_else(|| "default".to_owned()),
                    hops: vec![TraceHop {
                        address: address.unwrap_or_else(|| "10.200.1.1:123".to_owned()),
                        stratum: 1,
                        offset_s: 0.001,
                        delay_s: 0.000_3,
                        root_distance_s: 0.000_02,
                        refid: "GPS".to_owned(),
                    }],
                    end: "stratum 1 (GPS)".to_owned(),
                }),
                Err(e) => Reply::Error(e.to_string()),
            };
            let _ = (&stream).write_all(encode_reply(&reply).as_bytes());
        }
    });
    (path, handle)
}

#[test]
fn check_config_good_and_bad() {
    let out = stratactl(&["check-config", fixture("good.toml").to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("good.toml: ok\n"));

    let out = stratactl(&["check-config", fixture("bad.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 12, "{stdout}");
    assert!(
        stdout.contains("bad.toml:22: server[0].minpoll: minpoll 12 is greater than maxpoll 8"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("12 error(s)"));

    // A warning is printed with key and line, and the file still checks ok.
    let dir = tempfile::tempdir().unwrap();
    let shadowed = dir.path().join("shadowed.toml");
    std::fs::write(
        &shadowed,
        "[[access]]\nlevel = \"peer\"\nprefixes = [\"10.0.0.0/8\"]\n\n[[access]]\nlevel = \"query\"\nprefixes = [\"10.9.0.0/16\"]\n",
    )
    .unwrap();
    let out = stratactl(&["check-config", shadowed.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("shadowed.toml:7: access[1].prefixes: warning: this rule can never match"),
        "{stdout}"
    );
    assert!(stdout.ends_with("shadowed.toml: ok\n"), "{stdout}");

    let out = stratactl(&["check-config", "/nonexistent/strata.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/strata.toml"));
}

#[test]
fn status_and_sessions_against_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, server) = serve(dir.path(), 4);
    let socket = socket.to_str().unwrap();

    let out = stratactl(&["--socket", socket, "status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(v["stratum"], 16);
    assert_eq!(v["synchronized"], false);
    assert_eq!(v["reference"], Value::Null);

    let out = stratactl(&["--socket", socket, "status"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("synchronized:") && text.contains("never"),
        "{text}"
    );

    let out = stratactl(&["sessions", "--json", "--socket", socket]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("sessions JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    assert_eq!(v[0]["address"], "127.0.0.1:11123");

    let out = stratactl(&["--socket", socket, "sessions"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("INSTANCE") && text.contains(" 017 "),
        "{text}"
    );
    server.join().unwrap();
}

#[test]
fn socket_comes_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, server) = serve(dir.path(), 1);
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        format!("[control]\nsocket = \"{}\"\n", socket.display()),
    )
    .unwrap();
    let out = stratactl(&["-c", config.to_str().unwrap(), "status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    server.join().unwrap();
}

#[test]
fn unreachable_daemon_exits_1_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.sock");
    let out = stratactl(&["--socket", missing.to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("stratactl: talking to stratad at") && stderr.contains("absent.sock"),
        "{stderr}"
    );
    // --socket and -c together are a usage error.
    let out = stratactl(&["--socket", "/x", "-c", "/y", "status"]);
    assert!(!out.status.success());
}

#[test]
fn trace_passes_address_and_instance_and_prints_hops() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, server) = serve(dir.path(), 2);
    let socket = socket.to_str().unwrap();

    let out = stratactl(&[
        "--socket",
        socket,
        "trace",
        "192.0.2.7",
        "--instance",
        "vpn1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ADDRESS"), "{text}");
    assert!(
        lines[1].starts_with("192.0.2.7 ") && lines[1].ends_with("GPS"),
        "{text}"
    );
    assert_eq!(lines[2], "end: stratum 1 (GPS) (instance vpn1)", "{text}");

    let out = stratactl(&["--socket", socket, "trace", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("trace JSON");
    assert_eq!(v["instance"], "default");
    assert_eq!(v["hops"][0]["address"], "10.200.1.1:123");
    assert_eq!(v["hops"][0]["stratum"], 1);
    assert_eq!(v["hops"][0]["root_distance_s"], 0.000_02);
    server.join().unwrap();
}
