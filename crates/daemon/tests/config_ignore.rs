//! `[interfaces] ignore` and `[[instance]] ignore-interfaces`: parsing, and the refusal of a
//! broadcast/multicast table on an ignored interface, with key and line.

use strata_daemon::config;

#[test]
fn ignored_interfaces_parse_per_instance() {
    let text = r#"
[interfaces]
ignore = ["eth3", "eth4"]

[[listen]]
address = "0.0.0.0:123"

[[instance]]
name = "vpna"
netns = "pe1-vpna"
ignore-interfaces = ["eth9"]

[[multicast-server]]
interface = "eth1"
"#;
    assert_eq!(config::check_str(text), vec![]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, text).expect("write");
    let c = config::load(Some(&path)).expect("loads");
    assert_eq!(c.ignored_interfaces("default"), ["eth3", "eth4"]);
    assert_eq!(c.ignored_interfaces("vpna"), ["eth9"]);
    assert_eq!(c.instance[0].ignore_interfaces, ["eth9"]);
    assert!(c.ignored_interfaces("other").is_empty());
}

#[test]
fn mode5_tables_on_an_ignored_interface_are_refused() {
    let text = r#"[interfaces]
ignore = ["eth3"]

[[instance]]
name = "vpna"
netns = "x"
ignore-interfaces = ["eth9"]

[[multicast-server]]
interface = "eth3"

[[broadcast-server]]
address = "10.200.1.255"
interface = "eth9"
instance = "vpna"

[[multicast-client]]
interface = "eth3"
allow-unauthenticated = true

[[broadcast-client]]
interface = "eth3"
allow-unauthenticated = true
instance = "vpna"

[[instance]]
name = "vpnb"
netns = "y"
ignore-interfaces = ["bad/name"]
"#;
    let d = config::check_str(text);
    let found: Vec<(usize, &str)> = d.iter().map(|d| (d.line, d.key.as_str())).collect();
    assert!(
        found.contains(&(10, "multicast-server[0].interface")),
        "{d:#?}"
    );
    assert!(
        found.contains(&(14, "broadcast-server[0].interface")),
        "{d:#?}"
    );
    assert!(
        found.contains(&(18, "multicast-client[0].interface")),
        "{d:#?}"
    );
    // eth3 is ignored by the default instance only, not by vpna.
    assert!(
        !found
            .iter()
            .any(|(_, k)| *k == "broadcast-client[0].interface"),
        "{d:#?}"
    );
    assert!(
        found
            .iter()
            .any(|(l, k)| *l == 29 && k.starts_with("instance[1].ignore-interfaces")),
        "{d:#?}"
    );
    let named = d.iter().find(|d| d.key == "multicast-server[0].interface");
    assert!(
        named.is_some_and(|d| d
            .message
            .contains("ignored interfaces of instance \"default\"")),
        "{d:#?}"
    );
}
