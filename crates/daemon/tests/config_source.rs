//! `source` / `source-interface` of `[[server]]`, `[[peer]]` and `[[instance]]`: parsing,
//! the instance default, and errors with key and line.

use std::net::IpAddr;

use strata_daemon::config::{self, SourceAddress};

fn parse(text: &str) -> config::Config {
    assert_eq!(config::check_str(text), vec![], "{text}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, text).expect("write");
    config::load(Some(&path)).expect("valid configuration loads")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn source_settings_parse_and_the_instance_gives_a_default() {
    let c = parse(
        r#"
[[instance]]
name = "vpna"
netns = "pe1-vpna"
source = "10.200.9.1"

[[server]]
address = "127.0.0.1"
source = "127.0.0.2"

[[server]]
address = "[::1]:123"
source-interface = "lo"

[[peer]]
address = "127.0.0.3"
source-interface = "dummy0"

[[server]]
address = "10.200.1.2"
instance = "vpna"

[[server]]
address = "[fd00:200::2]:123"
instance = "vpna"

[[server]]
address = "10.200.1.3"
instance = "vpna"
source-interface = "lo"
"#,
    );
    let sources: Vec<_> = c.server.iter().map(|s| s.source.clone()).collect();
    assert_eq!(
        sources,
        vec![
            Some(SourceAddress::Address(ip("127.0.0.2"))),
            Some(SourceAddress::Interface("lo".to_owned())),
            // The instance's address, for its family only.
            Some(SourceAddress::Address(ip("10.200.9.1"))),
            None,
            // A source's own setting wins.
            Some(SourceAddress::Interface("lo".to_owned())),
        ]
    );
    assert_eq!(
        c.peer[0].source,
        Some(SourceAddress::Interface("dummy0".to_owned()))
    );
    assert_eq!(
        c.instance[0].source,
        Some(SourceAddress::Address(ip("10.200.9.1")))
    );
}

#[test]
fn source_errors_have_key_and_line() {
    let text = r#"[[server]]
address = "127.0.0.1"
source = "127.0.0.2"
source-interface = "lo"

[[peer]]
address = "[::1]:123"
source = "127.0.0.2"

[[server]]
address = "127.0.0.1"
source = "not-an-ip"

[[server]]
address = "127.0.0.1"
source = "0.0.0.0"

[[instance]]
name = "vpna"
netns = "x"
source = "10.0.0.1"
source-interface = "lo0"
"#;
    let d = config::check_str(text);
    let found: Vec<(usize, &str)> = d.iter().map(|d| (d.line, d.key.as_str())).collect();
    assert_eq!(
        found,
        vec![
            (4, "server[0].source-interface"),
            (8, "peer[0].source"),
            (12, "server[1].source"),
            (16, "server[2].source"),
            (22, "instance[0].source-interface"),
        ],
        "{d:#?}"
    );
    assert!(d[0].message.contains("at most one"), "{}", d[0].message);
    assert!(d[1].message.contains("address family"), "{}", d[1].message);
}
