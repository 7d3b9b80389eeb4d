//! Operating a running daemon on loopback: reload (good and bad) keeps
//! unchanged associations' state, and the drift file carries the
//! frequency across a restart.

use std::time::Duration;

use strata_tests::{free_udp_port, wait_until, Daemon};

fn server(dir: &std::path::Path, port: u16) -> Daemon {
    Daemon::start(
        dir,
        "server",
        &format!(
            "[clock]\nbackend = \"virtual\"\n[local-reference]\nstratum = 1\n[[listen]]\naddress = \"127.0.0.1:{port}\"\n"
        ),
    )
}

fn client_config(server_port: u16, extra: &str) -> String {
    format!(
        r#"
[clock]
backend = "virtual"
initial-offset = "300ms"
frequency-error-ppm = 40.0
drift-file = "@DRIFT@"
[discipline]
stepout = "2s"
[[server]]
address = "127.0.0.1:{server_port}"
minpoll = -2
maxpoll = -1
iburst = true
{extra}
"#
    )
}

fn reach(d: &Daemon) -> u8 {
    d.sessions().first().map_or(0, |s| s.reach)
}

/// Rewrites the daemon's config file (keeping its `[control]` table).
fn rewrite(d: &Daemon, config: &str) {
    let path = d.config_path();
    let drift = d.dir.join("client.drift");
    let text = config.replace("@DRIFT@", &drift.display().to_string())
        + &format!("\n[control]\nsocket = \"{}\"\n", d.socket.display());
    std::fs::write(path, text).expect("rewrite config");
}

#[test]
fn reload_keeps_state_and_rejects_bad_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p1, p2) = (free_udp_port(), free_udp_port());
    let _s1 = server(dir.path(), p1);
    let s2_dir = dir.path().join("s2");
    std::fs::create_dir_all(&s2_dir).expect("dir");
    let _s2 = server(&s2_dir, p2);
    let mut client = Daemon::start(dir.path(), "client", &client_config(p1, ""));
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            (reach(&client) == 0o377).then_some(())
        })
        .is_some(),
        "reach 377 before reload"
    );

    // A good reload: same source (other maxpoll), plus a second server.
    let extra = format!("[[server]]\naddress = \"127.0.0.1:{p2}\"\nminpoll = -2\nmaxpoll = -1\n");
    rewrite(
        &client,
        &client_config(p1, &extra).replace("maxpoll = -1\niburst", "maxpoll = 0\niburst"),
    );
    client.signal("HUP");
    let both = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let s = client.sessions();
        (s.len() == 2).then_some(s)
    })
    .expect("second source added by the reload");
    let kept = both
        .iter()
        .find(|s| s.address == format!("127.0.0.1:{p1}"))
        .expect("first source kept");
    assert_eq!(
        kept.reach, 0o377,
        "unchanged source keeps its reach across the reload"
    );

    // stratactl reload: nothing changed, every source kept.
    let out = std::process::Command::new(strata_tests::binary("stratactl"))
        .arg("--socket")
        .arg(&client.socket)
        .arg("reload")
        .output()
        .expect("stratactl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("sources +0 -0 ~0"),
        "{text}"
    );

    // A bad reload: rejected, the daemon keeps running the old config.
    std::fs::write(client.config_path(), "[[server]]\naddress = \"nowhere\"\n").expect("write");
    client.signal("HUP");
    std::thread::sleep(Duration::from_millis(300)); // let a (wrong) reload happen if it would
    assert!(client.running());
    let after = client.sessions();
    assert_eq!(after.len(), 2, "old configuration still running");
    assert!(after.iter().all(|s| s.reach != 0));
    assert!(client.log().contains("reload rejected"), "{}", client.log());
}

#[test]
fn drift_file_carries_the_frequency_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p1 = free_udp_port();
    let _s1 = server(dir.path(), p1);
    let mut client = Daemon::start(dir.path(), "client", &client_config(p1, ""));
    wait_until(Duration::from_secs(90), Duration::from_millis(250), || {
        let s = client.status();
        ((s.frequency_ppm + 40.0).abs() < 1.0 && s.synchronized).then_some(())
    })
    .expect("frequency locked");
    assert!(client.stop(), "clean exit on SIGTERM");
    // The file holds the estimate at the stop, which a sample taken after
    // the lock above may have moved a little: it is near the true -40 ppm.
    let saved: f64 = std::fs::read_to_string(dir.path().join("client.drift"))
        .expect("drift file written at shutdown")
        .trim()
        .parse()
        .expect("a number");
    assert!((saved + 40.0).abs() < 5.0, "saved {saved}");
    // Restarted, the saved frequency is there before any sample.
    let again = Daemon::start(dir.path(), "client", &client_config(p1, ""));
    let first = again.status().frequency_ppm;
    assert!(
        (first - saved).abs() < 0.5,
        "frequency at start {first}, saved {saved}"
    );
}

#[test]
fn tells_systemd_when_ready_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sd-notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let port = free_udp_port();
    let mut d = Daemon::start_with_env(
        dir.path(),
        "notify",
        &format!("[[listen]]\naddress = \"127.0.0.1:{port}\"\n"),
        &[("NOTIFY_SOCKET", path.to_str().expect("utf-8 path"))],
    );
    let mut buf = [0u8; 512];
    let n = listener.recv(&mut buf).expect("a notification");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(d.stop());
    let mut seen = String::new();
    while let Ok(n) = listener.recv(&mut buf) {
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if seen.contains("STOPPING=1") {
            break;
        }
    }
    assert!(seen.contains("STOPPING=1"), "{seen}");
}
