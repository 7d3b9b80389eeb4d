//! `[[instance]]` and `[[access]]`: parsing into the typed configuration, and `check-config`
//! errors with key and line for every way an instance or access rule can be wrong.

use strata_daemon::config::{self, AccessLevel, Diagnostic, Instance, InstancePlacement, Prefix};

/// `(line, key, message)` of each diagnostic.
fn found(diagnostics: &[Diagnostic]) -> Vec<(usize, &str, &str)> {
    diagnostics
        .iter()
        .map(|d| (d.line, d.key.as_str(), d.message.as_str()))
        .collect()
}

fn parse(text: &str) -> config::Config {
    assert_eq!(config::check_str(text), vec![], "{text}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, text).expect("write");
    config::load(Some(&path)).expect("valid configuration loads")
}

const GOOD: &str = r#"
[[instance]]
name = "vpna"
netns = "pe1-vpna"

[[instance]]
name = "vpnb"
device = "vrf-b"
max-dynamic-sessions = 7

[[listen]]
address = "10.200.1.1:123"
instance = "vpna"

[[listen]]
address = "10.200.1.1:123"
instance = "vpnb"

[[server]]
address = "10.200.9.2"
instance = "vpna"

[[access]]
instance = "vpna"
level = "peer"
prefixes = ["10.200.1.0/24", "fd00:200::/48"]

[[access]]
level = "synchronization"
prefixes = ["0.0.0.0/0", "::/0"]

[[access]]
instance = "vpna"
level = "query"
prefixes = ["0.0.0.0/0"]
"#;

#[test]
fn instances_and_access_rules_parse() {
    let c = parse(GOOD);
    assert_eq!(
        c.instance,
        vec![
            Instance {
                name: "vpna".to_owned(),
                placement: InstancePlacement::Netns("pe1-vpna".to_owned()),
                max_dynamic_sessions: 100,
                source: None,
                ignore_interfaces: Vec::new(),
            },
            Instance {
                name: "vpnb".to_owned(),
                placement: InstancePlacement::Device("vrf-b".to_owned()),
                max_dynamic_sessions: 7,
                source: None,
                ignore_interfaces: Vec::new(),
            },
        ]
    );
    assert_eq!(c.listen[0].instance, "vpna");
    assert_eq!(c.listen[1].instance, "vpnb");
    assert_eq!(c.server[0].instance, "vpna");
    // Per instance, in file order: first match wins.
    let p = |t: &str| config::parse_prefix(t).expect("prefix");
    assert_eq!(
        c.access_rules("vpna"),
        vec![
            (p("10.200.1.0/24"), AccessLevel::Peer),
            (p("fd00:200::/48"), AccessLevel::Peer),
            (p("0.0.0.0/0"), AccessLevel::Query),
        ]
    );
    assert_eq!(
        c.access_rules("default"),
        vec![
            (p("0.0.0.0/0"), AccessLevel::Synchronization),
            (p("::/0"), AccessLevel::Synchronization),
        ]
    );
    assert_eq!(c.access_rules("vpnb"), vec![], "no rules: everyone server");
    assert_eq!(
        p("10.200.1.0/24"),
        Prefix {
            addr: "10.200.1.0".parse().unwrap(),
            len: 24
        }
    );
}

#[test]
fn the_config_sketch_instances_and_access_parse() {
    // The instance and access part of the shared configuration sketch.
    let c = parse(
        r#"
[[instance]]
name = "vpna"
netns = "pe1-vpna"

[[instance]]
name = "vpnb"
device = "vrf-b"
max-dynamic-sessions = 100

[[access]]
instance = "vpna"
level = "peer"
prefixes = ["10.200.1.0/24"]
[[access]]
level = "synchronization"
prefixes = ["0.0.0.0/0", "::/0"]

[[listen]]
address = "0.0.0.0:123"
[[listen]]
address = "0.0.0.0:123"
instance = "vpna"
"#,
    );
    assert_eq!(c.instance.len(), 2);
    assert_eq!(c.access.len(), 2);
}

#[test]
fn instance_errors_have_key_and_line() {
    let text = r#"[[instance]]
name = "default"
netns = "x"

[[instance]]
name = "vpna"
device = "eth1"
netns = "pe1-vpna"

[[instance]]
name = "vpnb"

[[instance]]
name = "vpnc"
netns = "a"

[[instance]]
name = "vpnc"
netns = "b"

[[instance]]
name = "vpnd"
device = "a-device-name-too-long"
max-dynamic-sessions = -1

[[instance]]
netns = "c"
colour = "blue"

[[listen]]
address = "10.200.1.1"
instance = "vpnz"

[[server]]
address = "10.200.1.2"
instance = "vpnb"
"#;
    let d = config::check_str(text);
    let got = found(&d);
    let keys: Vec<(usize, &str)> = got.iter().map(|(l, k, _)| (*l, *k)).collect();
    assert_eq!(
        keys,
        vec![
            (2, "instance[0].name"),
            (8, "instance[1].netns"),
            (10, "instance[2]"),
            (18, "instance[4].name"),
            (23, "instance[5].device"),
            (24, "instance[5].max-dynamic-sessions"),
            (26, "instance[6].name"),
            (28, "instance[6].colour"),
            (32, "listen[0].instance"),
            (36, "server[0].instance"),
        ],
        "{d:#?}"
    );
    let messages: Vec<&str> = got.iter().map(|(_, _, m)| *m).collect();
    assert_eq!(
        messages[..6],
        [
            "\"default\" is the implicit default instance and cannot be declared",
            "give exactly one of `device` or `netns`, not both",
            "missing `device` or `netns` (an instance needs exactly one)",
            "duplicate instance name \"vpnc\"",
            "bad device name \"a-device-name-too-long\" (1..=15 bytes, no '/', ':' or spaces)",
            "-1 is out of range (0..=1000000)",
        ]
    );
    assert_eq!(messages[6], "missing required key");
    assert!(
        messages[7].starts_with("unknown key `colour`"),
        "{}",
        messages[7]
    );
    // Only valid instances count as declared (vpnc once, not the invalid ones).
    assert_eq!(
        messages[8],
        "unknown instance \"vpnz\" (declared: \"default\", \"vpnc\"; add an [[instance]] table)"
    );
    assert!(messages[9].starts_with("unknown instance \"vpnb\""));
}

#[test]
fn missing_name_is_reported_at_the_table() {
    let d = config::check_str("[[instance]]\nnetns = \"x\"\n");
    assert_eq!(
        found(&d),
        vec![(1, "instance[0].name", "missing required key")]
    );
}

#[test]
fn access_errors_have_key_and_line() {
    let text = r#"[[access]]
level = "everything"
prefixes = ["10.200.1.0/24"]

[[access]]
level = "peer"
prefixes = ["10.200.1.1/24", "not-an-address", "10.0.0.0/40"]

[[access]]
level = "query"
prefixes = []

[[access]]
instance = "vpnq"
level = "server"
prefixes = "10.200.1.0/24"

[[access]]
level = "server"
prefixes = [1]

[[access]]
prefixes = ["::/0"]
"#;
    let d = config::check_str(text);
    let got = found(&d);
    let keys: Vec<(usize, &str)> = got.iter().map(|(l, k, _)| (*l, *k)).collect();
    assert_eq!(
        keys,
        vec![
            (2, "access[0].level"),
            (7, "access[1].prefixes"),
            (7, "access[1].prefixes"),
            (7, "access[1].prefixes"),
            (11, "access[2].prefixes"),
            (14, "access[3].instance"),
            (16, "access[3].prefixes"),
            (20, "access[4].prefixes[0]"),
            (22, "access[5].level"),
        ],
        "{d:#?}"
    );
    assert!(got[0].2.starts_with("unknown access level \"everything\""));
    assert!(got[1]
        .2
        .contains("host bits are set (did you mean 10.200.1.0/24?)"));
    assert!(got[2].2.contains("not a numeric IP address"));
    assert!(got[3].2.contains("the length must be 0..=32"));
    assert_eq!(got[4].2, "must list at least one prefix");
    assert!(got[5].2.starts_with("unknown instance \"vpnq\""));
    assert_eq!(got[6].2, "expected an array of strings, found a string");
    assert_eq!(got[7].2, "expected a string, found an integer");
    assert_eq!(got[8].2, "missing required key");
}

#[test]
fn stratad_check_config_names_an_unknown_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[server]]\naddress = \"10.200.1.1\"\ninstance = \"blue\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratad"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run stratad");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(":3: server[0].instance: unknown instance \"blue\""),
        "{stdout}"
    );
}

#[test]
fn rate_limit_and_access_policy() {
    let c = parse("");
    assert_eq!(c.rate_limit, None, "off unless present");
    assert_eq!(c.access_policy.deny, config::DenyAction::Drop);
    let c = parse("[rate-limit]\n");
    assert_eq!(c.rate_limit, Some(config::RateLimit::DEFAULT));
    let c = parse(
        "[rate-limit]\ninterval = \"500ms\"\nburst = 4\nmax-clients = 10\n\n[access-policy]\ndeny = \"kod\"\n",
    );
    assert_eq!(
        c.rate_limit,
        Some(config::RateLimit {
            interval: 0.5,
            burst: 4,
            max_clients: 10
        })
    );
    assert_eq!(c.access_policy.deny, config::DenyAction::Kod);
    let bad = "[rate-limit]\ninterval = \"2 weeks\"\nburst = 0\nmax-clients = -1\nrate = 5\n\n[access-policy]\ndeny = \"tarpit\"\n";
    let d = config::check_str(bad);
    let f = found(&d);
    assert_eq!(
        f.iter().map(|(l, k, _)| (*l, *k)).collect::<Vec<_>>(),
        vec![
            (2, "rate-limit.interval"),
            (3, "rate-limit.burst"),
            (4, "rate-limit.max-clients"),
            (5, "rate-limit.rate"),
            (8, "access-policy.deny"),
        ],
        "{d:#?}"
    );
    assert!(f[1].2.contains("out of range (1..=1000)"));
    assert!(f[4].2.contains("\"drop\" or \"kod\""));
}

#[test]
fn auth_keys_file_is_checked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("ntp.keys");
    let write = |text: &str, mode: u32| {
        std::fs::write(&keys, text).expect("write");
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let conf = format!(
        "[auth]\nkeys-file = \"{}\"\ntrusted-keys = [1, 2]\n",
        keys.display()
    );
    write("1 SHA256 HEX:00112233445566778899aabbccddeeff\n2 AES128-CMAC HEX:000102030405060708090a0b0c0d0e0f\n", 0o600);
    let c = parse(&conf);
    let auth = c.auth.expect("auth");
    assert_eq!(auth.trusted_keys, vec![1, 2]);
    let store = auth.load_keys().expect("keys");
    assert!(store.is_trusted(1) && store.is_trusted(2));

    write(
        "1 SHA256 HEX:00112233445566778899aabbccddeeff\n2 AES128-CMAC HEX:0001\n",
        0o600,
    );
    let d = config::check_str(&conf);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].key, "auth.keys-file");
    assert_eq!(d[0].line, 2);
    assert!(d[0].message.contains("line 2"), "{}", d[0].message);

    write(
        "1 SHA256 HEX:00112233445566778899aabbccddeeff\n2 SHA1 ASCII:secret\n",
        0o640,
    );
    let d = config::check_str(&conf);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].message.contains("readable by group or others")
            && d[0].message.contains(&keys.display().to_string()),
        "{}",
        d[0].message
    );

    let d = config::check_str("[auth]\ntrusted-keys = [0, \"x\"]\n");
    let f = found(&d);
    assert!(
        f.iter().any(|(l, k, m)| *l == 2
            && *k == "auth.trusted-keys[1]"
            && m.contains("expected an integer")),
        "{d:#?}"
    );
}

#[test]
fn server_and_peer_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("ntp.keys");
    std::fs::write(&keys, "5 SHA256 ASCII:secret\n").expect("write");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let auth = format!(
        "[auth]\nkeys-file = \"{}\"\ntrusted-keys = [5]\n",
        keys.display()
    );
    let c = parse(&format!(
        "{auth}\n[[server]]\naddress = \"10.200.1.1\"\nkey = 5\n\n[[peer]]\naddress = \"10.200.1.2\"\n"
    ));
    assert_eq!(c.server[0].key, Some(5));
    assert_eq!(c.peer[0].key, None);
    let d = config::check_str(&format!(
        "{auth}\n[[server]]\naddress = \"10.200.1.1\"\nkey = 6\n\n[[peer]]\naddress = \"10.200.1.2\"\nkey = 0\n"
    ));
    let f = found(&d);
    assert_eq!(
        f.iter().map(|(l, k, _)| (*l, *k)).collect::<Vec<_>>(),
        vec![(7, "server[0].key"), (11, "peer[0].key")],
        "{d:#?}"
    );
    assert!(f[0].2.contains("key 6 is not in"));
    assert!(f[1].2.contains("out of range"));
    let d = config::check_str("[[server]]\naddress = \"10.200.1.1\"\nkey = 6\n");
    assert!(d[0].message.contains("needs an [auth] keys-file"), "{d:#?}");
}

#[test]
fn every_table_key_must_be_a_trusted_key_of_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("ntp.keys");
    std::fs::write(
        &keys,
        "5 SHA256 ASCII:secret\n6 MD5 ASCII:other\n7 SHA1 ASCII:third\n",
    )
    .expect("write");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let auth = format!(
        "[auth]\nkeys-file = \"{}\"\ntrusted-keys = [5, 7]\n",
        keys.display()
    );
    let c = parse(&format!(
        "{auth}\n[[listen]]\naddress = \"10.200.1.1\"\nkey = 5\n\n\
         [[multicast-server]]\nkey = 7\n\n[[broadcast-server]]\naddress = \"10.200.1.255\"\nkey = 5\n\n\
         [[multicast-client]]\nkey = 7\n\n[[broadcast-client]]\nkey = 7\n"
    ));
    assert_eq!(c.listen[0].key, Some(5));
    assert_eq!(c.multicast_server[0].key, Some(7));
    assert_eq!(c.broadcast_server[0].key, Some(5));
    assert_eq!(c.multicast_client[0].key, Some(7));
    assert!(!c.multicast_client[0].allow_unauthenticated);
    assert_eq!(c.broadcast_client[0].key, Some(7));

    // Lines: 1-3 [auth], 5-7 listen, 9-10 multicast-server, 12-14
    // broadcast-server, 16-18 and 20-21 multicast-client, 23 broadcast-client.
    // The two multicast clients differ, and the broadcast client differs.
    let d = config::check_str(&format!(
        "{auth}\n[[listen]]\naddress = \"10.200.1.1\"\nkey = 6\n\n\
         [[multicast-server]]\nkey = 9\n\n[[broadcast-server]]\naddress = \"10.200.1.255\"\nkey = 70000\n\n\
         [[multicast-client]]\nkey = 5\nallow-unauthenticated = true\n\n\
         [[multicast-client]]\nkey = 7\n\n[[broadcast-client]]\n"
    ));
    let f = found(&d);
    assert_eq!(
        f.iter().map(|(l, k, _)| (*l, *k)).collect::<Vec<_>>(),
        vec![
            (7, "listen[0].key"),
            (10, "multicast-server[0].key"),
            (14, "broadcast-server[0].key"),
            (18, "multicast-client[0].allow-unauthenticated"),
            (21, "multicast-client[1].key"),
            (23, "broadcast-client[0].key"),
        ],
        "{d:#?}"
    );
    assert!(f[0].2.contains("key 6 is not trusted"), "{}", f[0].2);
    assert!(
        f[1].2.contains("key 9 is not in the keys file"),
        "{}",
        f[1].2
    );
    assert!(f[2].2.contains("out of range (1..=65535)"), "{}", f[2].2);
    assert!(f[3].2.contains("contradicts `key`"), "{}", f[3].2);
    assert!(
        f[4].2.contains("must name the same key")
            && f[4].2.contains("multicast-client[0] has 5, this one 7"),
        "{}",
        f[4].2
    );
    assert!(
        f[5].2.contains("multicast-client[0] has 5, this one none"),
        "{}",
        f[5].2
    );
}

#[test]
fn dynamic_session_limits_parse_and_are_checked() {
    let defaults = parse("");
    assert_eq!(
        (
            defaults.dynamic_sessions.max,
            defaults.dynamic_sessions.max_total
        ),
        (100, 1000)
    );
    let c = parse("[dynamic-sessions]\nmax = 5\nmax-total = 50\n");
    assert_eq!(
        (c.dynamic_sessions.max, c.dynamic_sessions.max_total),
        (5, 50)
    );
    let d = config::check_str("[dynamic-sessions]\nmax = -1\nmax-total = 2000000\nmost = 3\n");
    let keys: Vec<(usize, &str)> = found(&d).iter().map(|(l, k, _)| (*l, *k)).collect();
    assert_eq!(
        keys,
        [
            (2, "dynamic-sessions.max"),
            (3, "dynamic-sessions.max-total"),
            (4, "dynamic-sessions.most"),
        ],
        "{d:#?}"
    );
}

const SHADOWED: &str = r#"[[instance]]
name = "vpna"
netns = "pe1-vpna"

[[access]]
level = "peer"
prefixes = ["10.0.0.0/8", "fd00:200::/48"]

[[access]]
level = "synchronization"
prefixes = ["10.1.0.0/16", "fd00:200:0:1::/64"]

[[access]]
level = "server"
prefixes = ["10.2.0.0/16", "192.0.2.0/24"]

[[access]]
instance = "vpna"
level = "query"
prefixes = ["10.3.0.0/16"]

[[access]]
level = "peer"
prefixes = ["10.4.0.0/16"]

[[access]]
level = "query"
prefixes = ["0.0.0.0/0", "10.5.0.0/16"]
"#;

#[test]
fn access_rules_that_can_never_match_are_warnings() {
    // Valid: start-up accepts the file, and load passes the warnings on.
    assert_eq!(config::check_str(SHADOWED), vec![]);
    let c = parse(SHADOWED);
    let warnings = config::check_str_warnings(SHADOWED);
    let got = found(&warnings);
    // access[1]: both prefixes within access[0] (peer, checked first).
    // access[2]: 10.2.0.0/16 only. access[3] is another instance, access[4]
    // the same level; access[5]'s 0.0.0.0/0 is wider than any peer prefix.
    assert_eq!(
        got.iter().map(|(l, k, _)| (*l, *k)).collect::<Vec<_>>(),
        [
            (11, "access[1].prefixes"),
            (15, "access[2].prefixes"),
            (28, "access[5].prefixes"),
        ],
        "{warnings:#?}"
    );
    assert!(
        got[0].2.starts_with("this rule can never match"),
        "{}",
        got[0].2
    );
    assert!(got[0]
        .2
        .contains("10.1.0.0/16 is within 10.0.0.0/8 of access[0] (level \"peer\")"));
    assert!(got[0]
        .2
        .contains("fd00:200:0:1::/64 is within fd00:200::/48"));
    assert!(got[1].2.starts_with("part of this rule can never match"));
    assert!(got[1].2.contains("10.2.0.0/16") && !got[1].2.contains("192.0.2.0/24"));
    assert!(got[2].2.contains("10.5.0.0/16 is within 10.0.0.0/8"));
    assert!(!got[2].2.contains("0.0.0.0/0 is within"));
    assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
    assert!(c.warnings[0].contains(":11: access[1].prefixes: warning: this rule can never match"));
    // No warnings without shadowed rules, nor for a file with errors.
    assert_eq!(config::check_str_warnings(GOOD), vec![]);
    let broken = format!("{SHADOWED}\n[[server]]\nminpoll = 99\n");
    assert!(!config::check_str(&broken).is_empty());
    assert_eq!(config::check_str_warnings(&broken), vec![]);
}
