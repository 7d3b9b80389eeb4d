//! `stratad check-config` on good and bad files: exit status, and every
//! error reported with its key and line.

use std::process::Command;

use strata_tests::binary;

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(binary("stratad"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run stratad");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

#[test]
fn good_file_passes() {
    let (ok, out) = check(
        r#"
[clock]
backend = "virtual"
initial-offset = "500ms"
frequency-error-ppm = 50.0

[discipline]
step-threshold = "128ms"
stepout = "900s"
panic-threshold = "1000s"

[local-reference]
stratum = 1

[control]
socket = "/run/strata/control.sock"

[[listen]]
address = "0.0.0.0:123"

[[server]]
address = "10.200.1.1:123"
minpoll = 4
maxpoll = 10
iburst = true
"#,
    );
    assert!(ok, "{out}");
    assert!(out.contains(": ok"), "{out}");
}

#[test]
fn every_error_has_key_and_line() {
    let (ok, out) = check(
        "[clock]\nbackend = \"atomic\"\n\n[discipline]\nstepout = \"soon\"\n\n[[server]]\naddress = \"10.200.1.1:123\"\nminpoll = 9\nmaxpoll = 4\nbogus-key = 1\n",
    );
    assert!(!ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let has = |line: usize, key: &str| {
        lines
            .iter()
            .any(|l| l.contains(&format!(":{line}: ")) && l.contains(key))
    };
    assert!(has(2, "clock.backend"), "{out}");
    assert!(has(5, "discipline.stepout"), "{out}");
    assert!(has(11, "bogus-key"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("minpoll") || l.contains("maxpoll")),
        "{out}"
    );
}

#[test]
fn daemon_refuses_to_start_half_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[listen]]\naddress = \"not an address\"\n").expect("write");
    let out = Command::new(binary("stratad"))
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run stratad");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen") && err.contains("address"), "{err}");
}

/// Every refusal of start-up that depends on the file alone (not on the host: a port in use,
/// a missing interface or namespace), each with the key and line `check-config` must name.
/// Start-up (`crates/daemon/src/runtime`) refuses: a mode-5 destination whose instance has no
/// `[[listen]]` of its family (`open_mode5`), a key that the keys file lacks or does not trust
/// (`check_running_keys`); opening sockets, resolving interfaces and the panic threshold
/// depend on the host or the clock.
#[test]
fn check_config_refuses_what_start_up_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = strata_tests::free_udp_port();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "1 SHA256 HEX:00112233445566778899aabbccddeeff\n").expect("keys");
    let mut mode = std::fs::metadata(&keys).expect("keys").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o600);
    std::fs::set_permissions(&keys, mode).expect("keys mode");
    // The header is 4 lines; each case starts on line 5.
    let header = format!(
        "[clock]\nbackend = \"observe\"\n[control]\nsocket = \"{}\"\n",
        dir.path().join("control.sock").display()
    );
    let cases = [
        (
            format!("[[listen]]\naddress = \"[::1]:{port}\"\n[[multicast-server]]\ngroup = \"224.0.1.1\"\n"),
            "multicast-server[0].group",
            8,
        ),
        (
            format!("[[listen]]\naddress = \"127.0.0.1:{port}\"\n[[multicast-server]]\nipv6-scope = 5\n"),
            "multicast-server[0].ipv6-scope",
            8,
        ),
        (
            format!("[[listen]]\naddress = \"[::1]:{port}\"\n[[broadcast-server]]\naddress = \"127.255.255.255\"\n"),
            "broadcast-server[0].address",
            8,
        ),
        (
            "[[multicast-server]]\ngroup = \"224.0.1.1\"\n".to_owned(),
            "multicast-server[0].group",
            6,
        ),
        (
            format!(
                "[auth]\nkeys-file = \"{}\"\ntrusted-keys = [1]\n[[listen]]\naddress = \"127.0.0.1:{port}\"\n[[server]]\naddress = \"127.0.0.1:9\"\nkey = 2\n",
                keys.display()
            ),
            "server[0].key",
            12,
        ),
    ];
    for (body, key, line) in cases {
        let text = format!("{header}{body}");
        let (ok, out) = check(&text);
        assert!(!ok, "check-config accepted:\n{text}\n{out}");
        assert!(
            out.lines()
                .any(|l| l.contains(&format!(":{line}: {key}: "))),
            "check-config does not name {key} on line {line}:\n{text}\n{out}"
        );
        let path = dir.path().join("start.toml");
        std::fs::write(&path, &text).expect("write");
        let mut child = Command::new(binary("stratad"))
            .arg("-c")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run stratad");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("stratad started with:\n{text}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
            .expect("stderr");
        assert!(!status.success(), "stratad exited 0 with:\n{text}");
        assert!(
            err.contains(key),
            "start-up refused for another reason:\n{text}\n{err}"
        );
    }
}
