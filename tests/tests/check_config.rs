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
