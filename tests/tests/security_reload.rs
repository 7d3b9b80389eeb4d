//! Security settings of a running daemon on loopback: `[auth]` keys,
//! per-source and per-listener `key`, `[rate-limit]` and `[access-policy]`
//! are applied by a reload; a keys file that is malformed or readable by
//! group or others refuses the reload (and the start), and the running
//! keys keep working.

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_daemon::control::{self, Reply, Request};
use strata_tests::{free_udp_port, wait_until, Daemon};
use strata_wire::{KissCode, NtpPacket, NtpRepr, NtpTimestamp};

const SECRET_A: &str = "HEX:00112233445566778899aabbccddeeff00112233";
const SECRET_B: &str = "HEX:ffeeddccbbaa99887766554433221100ffeeddcc";
const CMAC_KEY: &str = "HEX:000102030405060708090a0b0c0d0e0f";

/// Writes a keys file with `mode`.
fn write_keys(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write keys");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod keys");
}

/// Rewrites a daemon's config file, keeping its `[control]` table.
fn rewrite(d: &Daemon, config: &str) {
    let text = format!("{config}\n[control]\nsocket = \"{}\"\n", d.socket.display());
    std::fs::write(d.config_path(), text).expect("rewrite config");
}

/// Asks the daemon to reload; `Ok(summary)` or `Err(why it was refused)`.
fn reload(d: &Daemon) -> Result<String, String> {
    match control::request(&d.socket, &Request::Reload, Duration::from_secs(5)) {
        Ok(Reply::Done(summary)) => Ok(summary),
        Ok(Reply::Error(why)) => Err(why),
        other => panic!("unexpected reload reply {other:?}"),
    }
}

/// A drop counter of the default instance.
fn dropped(d: &Daemon, reason: &str) -> u64 {
    d.status()
        .instances
        .get("default")
        .and_then(|c| c.dropped.get(reason).copied())
        .unwrap_or(0)
}

fn reach(d: &Daemon) -> u8 {
    d.sessions().first().map_or(0, |s| s.reach)
}

/// Waits until the (only) session has answered its last poll.
fn answered(d: &Daemon, what: &str) {
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        (reach(d) & 1 == 1).then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: reach {:o}; log:\n{}",
        reach(d),
        d.log()
    );
}

/// Waits until the session's reach has seen no answer for three polls.
fn unanswered(d: &Daemon, what: &str) {
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        (reach(d) & 0o7 == 0).then_some(())
    });
    assert!(ok.is_some(), "{what}: reach {:o}", reach(d));
}

fn server_config(dir: &Path, port: u16, extra: &str) -> String {
    format!(
        "[clock]\nbackend = \"virtual\"\n[local-reference]\nstratum = 1\n\
         [auth]\nkeys-file = \"{}\"\ntrusted-keys = [1, 2]\n\
         [[listen]]\naddress = \"127.0.0.1:{port}\"\n{extra}\n",
        dir.join("server.keys").display()
    )
}

fn client_config(dir: &Path, server_port: u16, key: u32, trusted: &str) -> String {
    format!(
        "[clock]\nbackend = \"virtual\"\n\
         [auth]\nkeys-file = \"{}\"\ntrusted-keys = [{trusted}]\n\
         [[server]]\naddress = \"127.0.0.1:{server_port}\"\nminpoll = -2\nmaxpoll = -2\nkey = {key}\n",
        dir.join("client.keys").display()
    )
}

#[test]
fn reload_applies_keys_and_refuses_bad_keys_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let port = free_udp_port();
    write_keys(
        &d.join("server.keys"),
        &format!("1 SHA256 {SECRET_A}\n2 AES128CMAC {CMAC_KEY}\n"),
        0o600,
    );
    let server = Daemon::start(d, "server", &server_config(d, port, ""));
    // The client starts with the right id and the wrong secret.
    let client_keys = d.join("client.keys");
    write_keys(&client_keys, &format!("1 SHA256 {SECRET_B}\n"), 0o600);
    let client = Daemon::start(d, "client", &client_config(d, port, 1, "1"));
    let naks = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        Some(dropped(&client, "crypto-nak")).filter(|n| *n >= 3)
    });
    assert!(
        naks.is_some(),
        "the server answers crypto-NAKs: {:?}",
        client.status().instances
    );
    assert_eq!(
        reach(&client),
        0,
        "no answer is taken with the wrong secret"
    );

    // The right secret, reloaded: the same association now gets answers.
    write_keys(&client_keys, &format!("1 SHA256 {SECRET_A}\n"), 0o600);
    let summary = reload(&client).expect("reload with the right key");
    assert!(summary.contains("keys 1"), "{summary}");
    assert!(summary.contains("sources +0 -0 ~0"), "{summary}");
    answered(&client, "after the keys file was fixed");

    // A keys file readable by group or others: refused, old keys stay.
    write_keys(&client_keys, &format!("1 SHA256 {SECRET_B}\n"), 0o640);
    let why = reload(&client).expect_err("group-readable keys file");
    assert!(
        why.contains("readable by group or others") && why.contains("client.keys"),
        "{why}"
    );
    // A malformed keys file: refused, naming the line.
    write_keys(
        &client_keys,
        &format!("1 SHA256 {SECRET_B}\n2 SHA256\n"),
        0o600,
    );
    let why = reload(&client).expect_err("malformed keys file");
    assert!(why.contains("keys file line 2"), "{why}");
    // A source naming a key the file lacks: refused, naming the key.
    write_keys(&client_keys, &format!("1 SHA256 {SECRET_A}\n"), 0o600);
    rewrite(&client, &client_config(d, port, 2, "1"));
    let why = reload(&client).expect_err("unknown key");
    assert!(
        why.contains("server[0].key") && why.contains("key 2"),
        "{why}"
    );
    // Through all that, the running keys kept working.
    let before = client.sessions()[0].reach;
    assert_ne!(before, 0);
    answered(&client, "after the refused reloads");
    assert!(client.log().contains("reload rejected"), "{}", client.log());

    // A source key change is applied in place: key 2 (AES-CMAC), which
    // the server has.
    write_keys(
        &client_keys,
        &format!("1 SHA256 {SECRET_A}\n2 AES128CMAC {CMAC_KEY}\n"),
        0o600,
    );
    rewrite(&client, &client_config(d, port, 2, "1, 2"));
    let summary = reload(&client).expect("reload to key 2");
    assert!(summary.contains("sources +0 -0 ~1"), "{summary}");
    let naks = dropped(&client, "crypto-nak");
    let bad = dropped(&client, "bad-mac");
    // Wait for three fresh answers on the new key.
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        (reach(&client) & 0o7 == 0o7).then_some(())
    });
    assert!(ok.is_some(), "reach {:o}", reach(&client));
    assert_eq!(dropped(&client, "crypto-nak"), naks);
    assert_eq!(dropped(&client, "bad-mac"), bad);

    // And a server that drops key 2 on reload answers crypto-NAKs.
    write_keys(
        &d.join("server.keys"),
        &format!("1 SHA256 {SECRET_A}\n"),
        0o600,
    );
    let server_cfg = server_config(d, port, "").replace("[1, 2]", "[1]");
    rewrite(&server, &server_cfg);
    reload(&server).expect("server reload");
    unanswered(&client, "server without key 2");
    assert!(dropped(&client, "crypto-nak") > naks);
    assert!(dropped(&server, "bad-mac") > 0);
}

/// What a raw request got back.
#[derive(Debug, PartialEq)]
enum Answer {
    /// The time (stratum 1).
    Time,
    /// A kiss-o'-death.
    Kod(KissCode),
    /// Nothing within 500 ms.
    Nothing,
}

/// One raw request to `addr`.
fn ask(sock: &UdpSocket, addr: SocketAddr, xmt: u64) -> Answer {
    let req = NtpRepr::client_request(0, NtpTimestamp::from_bits(xmt));
    let mut buf = [0u8; 128];
    req.emit(&mut NtpPacket::new_unchecked(&mut buf[..48]));
    sock.send_to(&buf[..48], addr).expect("send");
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            return Answer::Nothing;
        };
        let Ok((r, _)) = strata_wire::parse_datagram(&buf[..n]) else {
            continue;
        };
        if from != addr || r.origin_timestamp != NtpTimestamp::from_bits(xmt) {
            continue; // a late answer to an earlier request
        }
        return match r.stratum {
            0 => Answer::Kod(r.reference_id.kiss_code()),
            1 => Answer::Time,
            other => panic!("unexpected stratum {other}"),
        };
    }
}

#[test]
fn reload_applies_rate_limit_access_policy_and_listener_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let port = free_udp_port();
    write_keys(
        &d.join("server.keys"),
        &format!("1 SHA256 {SECRET_A}\n2 AES128CMAC {CMAC_KEY}\n"),
        0o600,
    );
    let server = Daemon::start(d, "server", &server_config(d, port, ""));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    // Long enough that a loaded machine still answers within it: `Nothing`
    // means no answer at all, not a slow one.
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut xmt = 1u64;
    let mut next = || {
        xmt += 1;
        xmt
    };
    // No limit: every request is answered with the time.
    for _ in 0..12 {
        assert_eq!(ask(&sock, addr, next()), Answer::Time);
    }

    // [rate-limit] on reload: after the burst, one KoD RATE, then nothing.
    rewrite(
        &server,
        &server_config(d, port, "[rate-limit]\ninterval = \"30s\"\nburst = 3\n"),
    );
    let summary = reload(&server).expect("reload");
    assert!(summary.contains("[rate-limit] changed"), "{summary}");
    let answers: Vec<Answer> = (0..6).map(|_| ask(&sock, addr, next())).collect();
    assert_eq!(
        answers,
        vec![
            Answer::Time,
            Answer::Time,
            Answer::Time,
            Answer::Kod(KissCode::Rate),
            Answer::Nothing,
            Answer::Nothing
        ],
        "the first three within the burst, then one KoD RATE"
    );
    assert!(dropped(&server, "rate-limited") >= 2);

    // [access-policy] deny = "kod" with a rule that leaves 127.0.0.1 out,
    // rate limit off again: a KoD DENY.
    rewrite(
        &server,
        &server_config(
            d,
            port,
            "[access-policy]\ndeny = \"kod\"\n[[access]]\nlevel = \"server\"\nprefixes = [\"10.200.0.0/16\"]\n",
        ),
    );
    let summary = reload(&server).expect("reload");
    assert!(
        summary.contains("[rate-limit] changed") && summary.contains("[access-policy] changed"),
        "{summary}"
    );
    assert_eq!(ask(&sock, addr, next()), Answer::Kod(KissCode::Deny));
    // A malformed access rule: refused, naming its key and line; the
    // running rules and policy stay.
    rewrite(
        &server,
        &server_config(
            d,
            port,
            "[[access]]\nlevel = \"server\"\nprefixes = [\"10.200.1.1/24\"]\n",
        ),
    );
    let why = reload(&server).expect_err("bad prefix");
    assert!(
        why.contains("server.toml:12: access[0].prefixes") && why.contains("10.200.1.0/24"),
        "{why}"
    );
    assert_eq!(ask(&sock, addr, next()), Answer::Kod(KissCode::Deny));

    // A listener key on reload: unsigned requests are no longer answered.
    let keyed = server_config(d, port, "").replace(
        &format!("address = \"127.0.0.1:{port}\"\n"),
        &format!("address = \"127.0.0.1:{port}\"\nkey = 2\n"),
    );
    rewrite(&server, &keyed);
    reload(&server).expect("reload");
    let before = dropped(&server, "unauthenticated");
    assert_eq!(ask(&sock, addr, next()), Answer::Nothing);
    assert_eq!(dropped(&server, "unauthenticated"), before + 1);
    // A strata client with key 2 is answered there.
    let client_keys = d.join("client.keys");
    write_keys(&client_keys, &format!("2 AES128CMAC {CMAC_KEY}\n"), 0o600);
    let client = Daemon::start(d, "client", &client_config(d, port, 2, "2"));
    answered(&client, "client with the listener's key");
    // Taking the key off the listener again serves everyone.
    rewrite(&server, &server_config(d, port, ""));
    reload(&server).expect("reload");
    assert_eq!(ask(&sock, addr, next()), Answer::Time);
}

#[test]
fn a_bad_keys_file_stops_the_start_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let keys = d.join("bad.keys");
    let config: PathBuf = d.join("start.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nkeys-file = \"{}\"\ntrusted-keys = [1]\n[control]\nsocket = \"{}\"\n",
            keys.display(),
            d.join("start.sock").display()
        ),
    )
    .expect("config");
    for (text, mode, expect) in [
        (
            format!("1 SHA256 {SECRET_A}\n"),
            0o644,
            "readable by group or others",
        ),
        ("# ok\n1 SHA256\n".to_owned(), 0o600, "keys file line 2"),
        (format!("2 SHA256 {SECRET_A}\n"), 0o600, "trusted key 1"),
    ] {
        write_keys(&keys, &text, mode);
        let mut child = std::process::Command::new(strata_tests::binary("stratad"))
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("stratad");
        let status = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            child.try_wait().ok().flatten()
        });
        if status.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("output");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(status.is_some_and(|s| !s.success()), "{expect}: {err}");
        assert!(
            err.contains(expect) && err.contains("auth.keys-file"),
            "{err}"
        );
    }
}
