//! Configuration of the symmetric, broadcast and multicast modes.

use std::net::SocketAddr;

use strata_daemon::config::check_str;

fn parse(text: &str) -> strata_daemon::config::Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, text).expect("write");
    strata_daemon::config::load(Some(&path)).expect("valid config")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

#[test]
fn modes_parse_with_defaults() {
    let c = parse(
        r#"
[[listen]]
address = "0.0.0.0:123"
[[listen]]
address = "[::]:123"
[[peer]]
address = "10.200.2.2"
minpoll = -2
maxpoll = 0
[[multicast-server]]
interface = "eth0"
[[multicast-server]]
ipv6-scope = 2
poll = 0
ttl = 4
[[broadcast-server]]
address = "10.200.3.255"
interface = "eth1"
[[multicast-client]]
group = "ff05::101"
allow-unauthenticated = true
recalibrate = "10m"
[[broadcast-client]]
interface = "eth1"
"#,
    );
    assert_eq!(c.peer.len(), 1);
    assert_eq!(c.peer[0].address, addr("10.200.2.2:123"));
    assert_eq!((c.peer[0].minpoll, c.peer[0].maxpoll), (-2, 0));
    assert_eq!(c.multicast_server[0].group, addr("224.0.1.1:123"));
    assert_eq!(c.multicast_server[0].poll, 6);
    // The router CLI's default, so that mode 5 crosses routers.
    assert_eq!(c.multicast_server[0].ttl, 16);
    assert_eq!(c.multicast_server[0].interface.as_deref(), Some("eth0"));
    assert_eq!(c.multicast_server[1].group, addr("[ff02::101]:123"));
    assert_eq!(c.multicast_server[1].ttl, 4);
    assert_eq!(c.broadcast_server[0].address, addr("10.200.3.255:123"));
    assert_eq!(c.multicast_client[0].group, addr("[ff05::101]:123"));
    assert!(c.multicast_client[0].allow_unauthenticated);
    assert!((c.multicast_client[0].recalibrate - 600.0).abs() < 1e-9);
    assert!(
        !c.broadcast_client[0].allow_unauthenticated,
        "refused by default"
    );
    assert!((c.broadcast_client[0].recalibrate - 3600.0).abs() < 1e-9);
}

#[test]
fn mode_errors_name_key_and_line() {
    let d = check_str(
        "[[multicast-server]]\ngroup = \"10.200.1.1\"\n[[multicast-client]]\nipv6-scope = 16\nttl = 3\n[[broadcast-server]]\naddress = \"[fd00:200::ff]:123\"\n[[peer]]\naddress = \"10.200.2.2\"\nminpoll = 9\nmaxpoll = 4\n",
    );
    let has = |line: usize, key: &str| d.iter().any(|x| x.line == line && x.key.contains(key));
    assert!(has(2, "multicast-server[0].group"), "{d:#?}");
    assert!(has(4, "multicast-client[0].ipv6-scope"), "{d:#?}");
    assert!(has(5, "multicast-client[0].ttl"), "{d:#?}");
    assert!(has(7, "broadcast-server[0].address"), "{d:#?}");
    assert!(has(10, "peer[0].minpoll"), "{d:#?}");
}

#[test]
fn peer_calibrate_defaults_to_required() {
    use strata_engine::Calibrate;
    let c = parse(
        "[[peer]]\naddress = \"10.200.2.2\"\n[[peer]]\naddress = \"10.200.2.3\"\ncalibrate = \"best-effort\"\n[[peer]]\naddress = \"10.200.2.4\"\ncalibrate = \"required\"\n",
    );
    let policies: Vec<Calibrate> = c.peer.iter().map(|p| p.calibrate).collect();
    assert_eq!(
        policies,
        [
            Calibrate::Required,
            Calibrate::BestEffort,
            Calibrate::Required
        ]
    );
}

#[test]
fn calibrate_errors_name_key_and_line() {
    let d = check_str(
        "[[peer]]\naddress = \"10.200.2.2\"\ncalibrate = \"sometimes\"\n[[server]]\naddress = \"10.200.2.3\"\ncalibrate = \"required\"\n",
    );
    let has = |line: usize, key: &str, text: &str| {
        d.iter()
            .any(|x| x.line == line && x.key == key && x.message.contains(text))
    };
    assert!(has(3, "peer[0].calibrate", "best-effort"), "{d:#?}");
    assert!(has(6, "server[0].calibrate", "only to [[peer]]"), "{d:#?}");
}
