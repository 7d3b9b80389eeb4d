//! The examples of strata-engine (`sntp_client`, `sntp_server`) against a
//! `stratad` on loopback: the client example measures a stratad with a
//! local reference, and a stratad client synchronises its view to the
//! server example. Virtual clocks only; nothing steers the host clock.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use strata_tests::{binary, free_udp_port, wait_until, Daemon};

/// Builds the engine's examples into this test's target directory and
/// returns the path of `name`.
fn example(name: &str) -> PathBuf {
    // Make sure the daemon binaries exist first (shares the target dir).
    let stratad = binary("stratad");
    let profile_dir = stratad.parent().expect("profile directory");
    let target_dir = profile_dir.parent().expect("target directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args([
            "build",
            "-q",
            "-p",
            "strata-engine",
            "--examples",
            "--target-dir",
        ])
        .arg(target_dir)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the engine examples failed");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A child process killed on drop, also when the test fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sntp_client_example_measures_stratad() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let _server = Daemon::start(
        dir.path(),
        "server",
        &format!(
            r#"
[clock]
backend = "virtual"
[local-reference]
stratum = 3
[[listen]]
address = "127.0.0.1:{port}"
"#
        ),
    );
    let out = Command::new(example("sntp_client"))
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .expect("running sntp_client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sntp_client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "server 127.0.0.1:P stratum 3 offset +0.000012 s delay 0.000090 s"
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let field = |key: &str| {
        let i = words.iter().position(|w| *w == key).expect(key);
        words[i + 1]
    };
    assert_eq!(field("stratum"), "3", "{stdout}");
    let offset: f64 = field("offset").parse().expect("offset");
    let delay: f64 = field("delay").parse().expect("delay");
    // The server's virtual clock starts on the host clock: both agree.
    assert!(
        offset.abs() < 0.1,
        "offset {offset} from a clock that agrees"
    );
    assert!(delay >= 0.0, "delay {delay}");
}

#[test]
fn stratad_synchronises_to_sntp_server_example() {
    let mut server = Command::new(example("sntp_server"))
        .args(["127.0.0.1:0", "120"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting sntp_server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("reading the server address");
    let server = Killed(server);
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("serving on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));

    let dir = tempfile::tempdir().expect("tempdir");
    let client = Daemon::start(
        dir.path(),
        "client",
        &format!(
            r#"
[clock]
backend = "virtual"
[[server]]
address = "{addr}"
minpoll = -2
maxpoll = 0
iburst = true
"#
        ),
    );
    let session = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        client
            .sessions()
            .into_iter()
            .find(|s| s.address == addr.to_string() && s.reach != 0 && s.stratum == 10)
    });
    let Some(session) = session else {
        panic!(
            "stratad never reached the example server; sessions {:?}\nlog:\n{}",
            client.sessions(),
            client.log()
        );
    };
    assert!(session.offset_s.abs() < 0.1, "offset {}", session.offset_s);
    drop(server);
}
