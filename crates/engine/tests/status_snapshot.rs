//! The session snapshot status output reads: filter register, selection
//! roles, remote header values, key and poll state.

mod support;

use strata_engine::auth::{Key, KeyStore, KeyType};
use strata_engine::{AssociationState, Instant, Node, SelectionRole};
use strata_wire::Leap;
use support::{addr, lab_config, lab_node, server_node, Host, Net, SimClock};

fn keys() -> KeyStore {
    KeyStore::new(
        [Key::new(7, KeyType::Sha256, b"status snapshot".to_vec()).expect("key")],
        [7],
    )
    .expect("store")
}

fn keyed_server() -> Node {
    let mut node = server_node(1);
    node.set_keys(keys());
    node
}

#[test]
fn snapshot_shows_filter_register_keys_and_selection_roles() {
    let mut client = lab_node(0.128, 2.0, 11);
    client.set_keys(keys());
    for last in [1, 2, 3] {
        let id = client.add_client(lab_config(addr(last), true), Instant::ZERO);
        if last == 1 {
            assert!(client.set_association_key(id, Some(7)));
        }
    }
    // Servers 1 (keyed) and 2 agree on true time; server 3 is 300 ms off.
    let mut net = Net::new(
        vec![
            Host::new(keyed_server(), SimClock::new(0.0, 0.0), 1),
            Host::new(server_node(1), SimClock::new(0.0, 0.0), 2),
            Host::new(server_node(1), SimClock::new(0.3, 0.0), 3),
            Host::new(client, SimClock::new(0.0, 0.0), 9),
        ],
        0.000_05,
    );
    net.run_until(30.0);
    let now = Instant::from_secs_f64(net.t);
    let sessions: Vec<_> = net.hosts[3].node.sessions(now).collect();
    assert_eq!(sessions.len(), 3);
    let by = |last: u8| {
        sessions
            .iter()
            .find(|s| s.address == addr(last))
            .expect("session")
    };
    let (keyed, plain, bad) = (by(1), by(2), by(3));

    assert_eq!(keyed.key_id, Some(7));
    // The newest bit may be a request still in flight.
    assert!(keyed.reach.count_ones() >= 7, "signed replies are accepted");
    assert_eq!(plain.key_id, None);
    assert!(plain.reach.count_ones() >= 7);
    assert_eq!(plain.filter.len(), 8, "a full register");
    assert!(
        plain.filter.windows(2).all(|w| w[0].time > w[1].time),
        "newest first"
    );
    let newest = plain.filter[0];
    assert!(
        newest.time <= net.t && net.t - newest.time < 2.0,
        "{newest:?}"
    );
    assert!(newest.offset.abs() < 1e-3, "{newest:?}");
    assert!(newest.delay > 0.0 && newest.delay < 1e-3, "{newest:?}");
    assert!(
        newest.dispersion > 0.0 && newest.dispersion < 0.01,
        "{newest:?}"
    );
    assert_eq!(plain.remote_leap, Some(Leap::NoWarning));
    assert_eq!(
        plain.remote_poll,
        Some(plain.poll),
        "the server echoes our poll"
    );
    assert!(plain.next_poll.is_some_and(|t| t >= now));
    assert_eq!(plain.kod_poll_floor, None);
    assert_eq!(plain.calibration_progress, None);
    assert_eq!(plain.root_delay, 0.0, "a stratum-1 server");

    assert!(bad.reach.count_ones() >= 7);
    assert_eq!(bad.state, AssociationState::Reachable);
    assert!(
        (bad.filter[0].offset - 0.3).abs() < 1e-3,
        "{:?}",
        bad.filter[0]
    );
    // Two servers agree and one does not: the odd one out is a falseticker;
    // of the other two one is the system peer, the other a candidate
    // combined with it.
    assert_eq!(bad.selection, Some(SelectionRole::Falseticker));
    let mut roles = [keyed.selection, plain.selection];
    roles.sort_by_key(|r| r.map(SelectionRole::as_str));
    assert_eq!(
        roles,
        [
            Some(SelectionRole::Candidate),
            Some(SelectionRole::SystemPeer)
        ]
    );
    for s in [keyed, plain] {
        assert_eq!(s.selected, s.selection == Some(SelectionRole::SystemPeer));
    }
}

#[test]
fn calibrating_association_reports_its_volley() {
    let mut client = lab_node(0.128, 2.0, 5);
    // A symmetric active association starts with a client/server volley;
    // the remote never answers here, so the volley stays open.
    client.add_peer(lab_config(addr(1), false), Instant::ZERO);
    let mut net = Net::new(
        vec![Host::new(client, SimClock::new(0.0, 0.0), 9)],
        0.000_05,
    );
    net.run_until(0.6);
    let now = Instant::from_secs_f64(net.t);
    let s = net.hosts[0].node.sessions(now).next().expect("session");
    assert_eq!(s.state, AssociationState::Calibrating);
    let (requests, replies) = s.calibration_progress.expect("a volley in progress");
    assert!(requests >= 1, "{requests}");
    assert_eq!(replies, 0);
    assert_eq!(s.remote_poll, None, "never heard");
    assert_eq!(s.selection, None);
    assert!(s.filter.is_empty());
}
