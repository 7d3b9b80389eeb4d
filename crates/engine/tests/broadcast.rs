//! Broadcast/multicast engine tests: servers send mode 5; clients
//! calibrate with a client/server volley, then listen.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use strata_engine::{
    AssociationMode, BroadcastClientConfig, BroadcastServerConfig, DropReason, InstanceId, Instant,
    Node, RecvMeta, Route, SocketId, CALIBRATION_ATTEMPTS,
};
use strata_wire::{
    Leap, Mode, NtpDuration, NtpPacket, NtpRepr, NtpShort, NtpTimestamp, ReferenceId,
};
use support::{addr, lab_node, server_node, Host, Net, SimClock, EPOCH};

const GROUP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(224, 0, 1, 1)), 123);

fn multicast_server(last: u8, poll: i8, clock: SimClock) -> Host {
    let mut node = server_node(1);
    node.add_broadcast_server(
        BroadcastServerConfig {
            instance: InstanceId::DEFAULT,
            destination: GROUP,
            socket: None,
            ifindex: None,
            poll,
            key: None,
        },
        Instant::ZERO,
    );
    Host::new(node, clock, last)
}

fn listening_client(last: u8, clock: SimClock, seed: u64) -> Host {
    let mut node = lab_node(0.128, 2.0, seed);
    node.set_broadcast_client(
        InstanceId::DEFAULT,
        Some(BroadcastClientConfig {
            allow_unauthenticated: true,
            key: None,
            recalibrate_after: Duration::from_secs(3600),
            offset_jump: 0.05,
        }),
    );
    let mut h = Host::new(node, clock, last);
    h.hears_broadcast = true;
    h
}

fn dropped(node: &Node, reason: DropReason) -> u64 {
    node.instances().next().expect("default").2.dropped(reason)
}

#[test]
fn calibrates_then_listens_and_synchronises() {
    let mut net = Net::new(
        vec![
            multicast_server(1, 0, SimClock::new(0.0, 0.0)),
            listening_client(2, SimClock::new(0.3, 30.0), 2),
            listening_client(3, SimClock::new(-0.2, -40.0), 3),
        ],
        0.000_2,
    );
    net.run_until(30.0);
    let requests_after_calibration: Vec<u32> =
        net.hosts[1..].iter().map(|h| h.sent_by_mode[3]).collect();
    net.run_until(300.0);
    for (i, h) in net.hosts[1..].iter().enumerate() {
        let s = h.node.sessions(net.now()).next().expect("mobilised");
        assert_eq!(s.mode, AssociationMode::MulticastClient);
        assert_eq!(s.state.as_str(), "listening");
        let (delay, _) = s.calibrated.expect("calibrated");
        assert!((delay - 0.000_4).abs() < 1e-5, "delay {delay}");
        assert_eq!(s.calibrations, 1);
        let err = h.clock.error(net.t);
        assert!(err.abs() < 1e-3, "client {i} error {err}");
        assert_eq!(h.node.status().server.stratum, 2);
        // Requests only during calibration, never one per mode-5 packet.
        assert!(h.sent_by_mode[3] <= u32::from(CALIBRATION_ATTEMPTS));
        assert_eq!(h.sent_by_mode[3], requests_after_calibration[i]);
    }
    // A steady send interval: exactly 2^poll apart, no early repeats.
    let times = &net.hosts[0].broadcast_times;
    assert!(times.len() > 250);
    for w in times.windows(2) {
        assert!((w[1] - w[0] - 1.0).abs() < 1e-6, "{w:?}");
    }
}

#[test]
fn listening_corrects_by_the_calibrated_delay() {
    // 5 ms each way: an uncorrected mode-5 offset would be 5 ms off.
    let mut net = Net::new(
        vec![
            multicast_server(1, 0, SimClock::new(0.0, 0.0)),
            listening_client(2, SimClock::new(0.25, 10.0), 2),
        ],
        0.005,
    );
    net.run_until(400.0);
    let h = &net.hosts[1];
    let s = h.node.sessions(net.now()).next().expect("mobilised");
    assert!((s.calibrated.expect("calibrated").0 - 0.010).abs() < 1e-5);
    assert!(
        h.clock.error(net.t).abs() < 2e-4,
        "error {}",
        h.clock.error(net.t)
    );
}

#[test]
fn server_restart_triggers_one_recalibration() {
    let mut net = Net::new(
        vec![
            multicast_server(1, 0, SimClock::new(0.0, 0.0)),
            listening_client(2, SimClock::new(0.3, 30.0), 2),
        ],
        0.000_2,
    );
    net.run_until(120.0);
    // The server goes away for 5 s (under the 8 intervals after which the
    // association would be dropped) and comes back as a fresh process.
    net.hosts[0].down = true;
    net.run_until(125.0);
    let t = net.t;
    net.hosts[0] = multicast_server(1, 0, SimClock::new(0.0, 0.0));
    net.hosts[0].node = {
        let mut n = server_node(1);
        n.add_broadcast_server(
            BroadcastServerConfig {
                instance: InstanceId::DEFAULT,
                destination: GROUP,
                socket: None,
                ifindex: None,
                poll: 0,
                key: None,
            },
            Instant::from_secs_f64(t),
        );
        n
    };
    net.run_until(300.0);
    let h = &net.hosts[1];
    let s = h.node.sessions(net.now()).next().expect("still there");
    assert_eq!(s.calibrations, 2, "exactly one recalibration");
    assert_eq!(s.state.as_str(), "listening");
    assert!(h.clock.error(net.t).abs() < 1e-3);
}

#[test]
fn two_servers_on_one_group_are_two_associations() {
    let mut net = Net::new(
        vec![
            multicast_server(1, 0, SimClock::new(0.0, 0.0)),
            multicast_server(4, 0, SimClock::new(0.000_1, 0.0)),
            listening_client(2, SimClock::new(0.3, 30.0), 2),
        ],
        0.000_2,
    );
    net.run_until(200.0);
    let h = &net.hosts[2];
    let sessions: Vec<_> = h.node.sessions(net.now()).collect();
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().all(|s| s.state.as_str() == "listening"));
    assert_eq!(sessions.iter().filter(|s| s.selected).count(), 1);
    assert!(h.clock.error(net.t).abs() < 1e-3);
}

fn mode5(xmt: NtpTimestamp, stratum: u8, leap: Leap) -> Vec<u8> {
    let repr = NtpRepr {
        leap,
        version: 4,
        mode: Mode::Broadcast,
        stratum,
        poll: 0,
        precision: -20,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::ZERO,
        reference_id: ReferenceId::LOCL,
        reference_timestamp: xmt,
        origin_timestamp: NtpTimestamp::ZERO,
        receive_timestamp: NtpTimestamp::ZERO,
        transmit_timestamp: xmt,
    };
    let mut buf = vec![0u8; 48];
    repr.emit(&mut NtpPacket::new_unchecked(&mut buf[..]));
    buf
}

fn meta(src: SocketAddr, rx: NtpTimestamp) -> RecvMeta {
    RecvMeta {
        instance: InstanceId::DEFAULT,
        socket: SocketId(0),
        listener: true,
        src,
        dst_ip: Some(GROUP.ip()),
        ifindex: None,
        rx_time: rx,
    }
}

#[test]
fn bad_mode_5_is_dropped_and_counted() {
    let base = NtpTimestamp::from_unix(EPOCH, 0);
    // Refused without the explicit opt-out.
    let mut strict = lab_node(0.128, 2.0, 1);
    strict.set_broadcast_client(InstanceId::DEFAULT, Some(BroadcastClientConfig::default()));
    strict.handle_datagram(
        Instant::ZERO,
        &meta(addr(1), base),
        &mode5(base, 1, Leap::NoWarning),
    );
    assert_eq!(dropped(&strict, DropReason::Unauthenticated), 1);
    assert_eq!(strict.sessions(Instant::ZERO).count(), 0);
    // Without a broadcast client, mode 5 is not expected.
    let mut plain = lab_node(0.128, 2.0, 1);
    plain.handle_datagram(
        Instant::ZERO,
        &meta(addr(1), base),
        &mode5(base, 1, Leap::NoWarning),
    );
    assert_eq!(dropped(&plain, DropReason::UnexpectedMode), 1);

    let mut node = listening_client(2, SimClock::new(0.0, 0.0), 1).node;
    // Stratum 0 and unsynchronised servers mobilise nothing.
    node.handle_datagram(
        Instant::ZERO,
        &meta(addr(1), base),
        &mode5(base, 0, Leap::NoWarning),
    );
    node.handle_datagram(
        Instant::ZERO,
        &meta(addr(1), base),
        &mode5(base, 2, Leap::Unsynchronized),
    );
    assert_eq!(dropped(&node, DropReason::Unsynchronized), 2);
    assert_eq!(node.sessions(Instant::ZERO).count(), 0);
}

#[test]
fn replays_and_absurd_timestamps_are_rejected() {
    let mut net = Net::new(
        vec![
            multicast_server(1, 0, SimClock::new(0.0, 0.0)),
            listening_client(2, SimClock::new(0.0, 0.0), 2),
        ],
        0.000_2,
    );
    net.run_until(60.0);
    let t = net.t;
    let h = &mut net.hosts[1];
    let rx = h.clock.stamp(t);
    let now = Instant::from_secs_f64(t);
    // A replay of an old packet (transmit time 30 s ago).
    let old = mode5(rx - NtpDuration::from_seconds(30.0), 1, Leap::NoWarning);
    h.node.handle_datagram(now, &meta(addr(1), rx), &old);
    assert_eq!(dropped(&h.node, DropReason::Replay), 1);
    // A forged packet claiming a time 1000 s ahead: one is a spike.
    let forged = mode5(rx + NtpDuration::from_seconds(1000.0), 1, Leap::NoWarning);
    h.node.handle_datagram(now, &meta(addr(1), rx), &forged);
    assert_eq!(dropped(&h.node, DropReason::Spike), 1);
    let before = h.clock.error(t);
    net.run_until(120.0);
    let h = &net.hosts[1];
    assert!(
        h.clock.error(net.t).abs() < 1e-3,
        "{before} → {}",
        h.clock.error(net.t)
    );
    assert_eq!(h.clock.steps, 0);
}

#[test]
fn a_flood_of_fake_servers_is_capped() {
    let mut node = listening_client(2, SimClock::new(0.0, 0.0), 1).node;
    node.set_max_dynamic(InstanceId::DEFAULT, 3);
    let base = NtpTimestamp::from_unix(EPOCH, 0);
    for i in 0..50u8 {
        let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 200, 9, i)), 123);
        node.handle_datagram(
            Instant::ZERO,
            &meta(src, base),
            &mode5(base, 1, Leap::NoWarning),
        );
    }
    assert_eq!(node.sessions(Instant::ZERO).count(), 3);
    assert_eq!(dropped(&node, DropReason::SessionLimit), 47);
}

#[test]
fn broadcast_server_sends_nothing_until_synchronised() {
    let mut node = lab_node(0.128, 2.0, 1);
    node.add_broadcast_server(
        BroadcastServerConfig {
            instance: InstanceId::DEFAULT,
            destination: GROUP,
            socket: Some(SocketId(9)),
            ifindex: Some(3),
            poll: 0,
            key: None,
        },
        Instant::ZERO,
    );
    let mut buf = [0u8; 64];
    for s in 0..10 {
        node.handle_timeout(Instant::from_secs_f64(f64::from(s)));
        assert!(node
            .poll_transmit(NtpTimestamp::from_unix(EPOCH, 0), &mut buf)
            .is_none());
    }
    // With a local reference it sends, to the group, through its socket.
    let mut node = server_node(3);
    node.add_broadcast_server(
        BroadcastServerConfig {
            instance: InstanceId::DEFAULT,
            destination: GROUP,
            socket: Some(SocketId(9)),
            ifindex: Some(3),
            poll: 0,
            key: None,
        },
        Instant::ZERO,
    );
    node.handle_timeout(Instant::ZERO);
    let tx = node
        .poll_transmit(NtpTimestamp::from_unix(EPOCH, 0), &mut buf)
        .expect("mode 5");
    assert_eq!(tx.dst, GROUP);
    assert_eq!(tx.route, Route::Socket(SocketId(9)));
    assert_eq!(tx.ifindex, Some(3));
    let (p, _) = strata_wire::parse_datagram(&buf[..tx.len]).expect("parse");
    assert_eq!(p.mode, Mode::Broadcast);
    assert_eq!(p.stratum, 3);
    // Without a socket of its own it leaves through the driver's sender
    // for the destination.
    let mut node = server_node(3);
    node.add_broadcast_server(
        BroadcastServerConfig {
            instance: InstanceId::DEFAULT,
            destination: GROUP,
            poll: 0,
            socket: None,
            ifindex: None,
            key: None,
        },
        Instant::ZERO,
    );
    node.handle_timeout(Instant::ZERO);
    let tx = node
        .poll_transmit(NtpTimestamp::from_unix(EPOCH, 0), &mut buf)
        .expect("mode 5");
    assert_eq!((tx.dst, tx.route), (GROUP, Route::Broadcast));
}

// ---- authenticated mode 5 ------------------------------------------------

use strata_engine::auth::{sign, Key, KeyStore, KeyType};

/// Keys 3 (MD5) and 4 (SHA1), both trusted; key 3's secret is `secret3`.
fn mode5_keys(secret3: &[u8]) -> KeyStore {
    KeyStore::new(
        [
            Key::new(3, KeyType::Md5, secret3.to_vec()).expect("key"),
            Key::new(4, KeyType::Sha1, b"sha1 key four".to_vec()).expect("key"),
        ],
        [3, 4],
    )
    .expect("store")
}

/// A stratum-1 multicast server signing with key 3.
fn signing_server(last: u8) -> Host {
    let mut node = server_node(1);
    node.set_keys(mode5_keys(b"group secret"));
    node.add_broadcast_server(
        BroadcastServerConfig {
            instance: InstanceId::DEFAULT,
            destination: GROUP,
            socket: None,
            ifindex: None,
            poll: 0,
            key: Some(3),
        },
        Instant::ZERO,
    );
    Host::new(node, SimClock::new(0.0, 0.0), last)
}

/// A multicast client with `keys` that requires `key` (or any trusted key).
fn keyed_client(last: u8, keys: Option<KeyStore>, key: Option<u32>, seed: u64) -> Host {
    let mut node = lab_node(0.128, 2.0, seed);
    if let Some(keys) = keys {
        node.set_keys(keys);
    }
    node.set_broadcast_client(
        InstanceId::DEFAULT,
        Some(BroadcastClientConfig {
            key,
            ..BroadcastClientConfig::default()
        }),
    );
    let mut h = Host::new(node, SimClock::new(0.3, 30.0), last);
    h.hears_broadcast = true;
    h
}

#[test]
fn signed_mode5_is_followed_only_with_the_right_key() {
    let mut net = Net::new(
        vec![
            signing_server(1),
            // The right key, required by id.
            keyed_client(2, Some(mode5_keys(b"group secret")), Some(3), 2),
            // Same id, another secret.
            keyed_client(3, Some(mode5_keys(b"wrong secret")), Some(3), 3),
            // The right keys, but requiring key 4.
            keyed_client(4, Some(mode5_keys(b"group secret")), Some(4), 4),
            // No keys at all.
            keyed_client(5, None, None, 5),
        ],
        0.000_2,
    );
    net.run_until(120.0);
    let now = net.now();
    let server = &net.hosts[0];
    assert!(server.sent_by_mode[5] > 100);
    assert_eq!(
        server
            .node
            .instances()
            .next()
            .expect("default")
            .2
            .dropped_total(),
        0,
        "every calibration request was signed with a key the server trusts"
    );
    let good = &net.hosts[1];
    let s = good.node.sessions(now).next().expect("mobilised");
    assert_eq!(s.mode, AssociationMode::MulticastClient);
    assert_eq!(s.state.as_str(), "listening");
    assert_eq!(s.calibrations, 1);
    // The association signs its calibration requests and takes only
    // replies signed with key 3: calibrating at all shows the exchange
    // was authenticated.
    assert_eq!(good.node.association_key(s.id), Some(3));
    assert!(good.sent_by_mode[3] >= 4);
    assert_eq!(dropped(&good.node, DropReason::Unauthenticated), 0);
    assert_eq!(dropped(&good.node, DropReason::BadMac), 0);
    assert!(
        good.clock.error(net.t).abs() < 1e-3,
        "{}",
        good.clock.error(net.t)
    );
    for h in &net.hosts[2..] {
        assert_eq!(h.node.sessions(now).count(), 0, "host {}", h.addr);
        assert!(
            dropped(&h.node, DropReason::BadMac) > 100,
            "host {}: {}",
            h.addr,
            dropped(&h.node, DropReason::BadMac)
        );
        assert_eq!(
            h.sent_by_mode[3], 0,
            "no calibration toward an unauthenticated server"
        );
        assert!(h.clock.error(net.t) > 0.29, "untouched clock");
    }
}

#[test]
fn authenticated_mode5_replays_are_rejected_without_recalibrating() {
    let mut net = Net::new(
        vec![
            signing_server(1),
            keyed_client(2, Some(mode5_keys(b"group secret")), Some(3), 2),
        ],
        0.000_2,
    );
    net.run_until(60.0);
    let keys = mode5_keys(b"group secret");
    let t = net.t;
    let h = &mut net.hosts[1];
    let rx = h.clock.stamp(t);
    let now = Instant::from_secs_f64(t);
    // Authentic packets recorded earlier, replayed: each is older than the
    // last one accepted. An unauthenticated client would take three in a
    // row for a server restart; an authenticated one never does.
    for age in [30.0, 20.0, 10.0, 5.0, 2.0] {
        let old = mode5(rx - NtpDuration::from_seconds(age), 1, Leap::NoWarning);
        let mut signed = [0u8; 128];
        let n = sign(&keys, 3, &old, &mut signed).expect("sign");
        h.node
            .handle_datagram(now, &meta(addr(1), rx), &signed[..n]);
    }
    assert_eq!(dropped(&h.node, DropReason::Replay), 5);
    let s = h.node.sessions(now).next().expect("session");
    assert_eq!(s.state.as_str(), "listening");
    assert_eq!(s.calibrations, 1);
    // The same replays unsigned are not even looked at.
    let old = mode5(rx - NtpDuration::from_seconds(1.0), 1, Leap::NoWarning);
    h.node.handle_datagram(now, &meta(addr(1), rx), &old);
    assert_eq!(dropped(&h.node, DropReason::Unauthenticated), 1);
    net.run_until(120.0);
    let h = &net.hosts[1];
    let s = h.node.sessions(net.now()).next().expect("session");
    assert_eq!(s.calibrations, 1, "no recalibration");
    assert!(h.clock.error(net.t).abs() < 1e-3);
    assert_eq!(dropped(&h.node, DropReason::Replay), 5);
}

#[test]
fn a_mode5_packet_that_cannot_be_signed_is_not_sent() {
    let mut node = server_node(1);
    node.set_keys(mode5_keys(b"group secret"));
    for key in [Some(9), Some(3)] {
        node.add_broadcast_server(
            BroadcastServerConfig {
                instance: InstanceId::DEFAULT,
                destination: GROUP,
                socket: None,
                ifindex: None,
                poll: 0,
                key,
            },
            Instant::ZERO,
        );
    }
    node.handle_timeout(Instant::ZERO);
    let mut buf = [0u8; 128];
    let mut sent = Vec::new();
    while let Some(tx) = node.poll_transmit(NtpTimestamp::from_unix(EPOCH, 0), &mut buf) {
        sent.push(buf[..tx.len].to_vec());
    }
    // Key 9 is not in the store: only the packet signed with key 3 leaves.
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].len(), 48 + 20);
    assert_eq!(sent[0][48..52], 3u32.to_be_bytes());
    assert_eq!(node.instances().next().expect("default").2.sent, 1);
}

#[test]
fn a_refused_server_is_reported_once_and_listed() {
    let base = NtpTimestamp::from_unix(EPOCH, 0);
    let mut node = lab_node(0.128, 2.0, 1);
    node.set_broadcast_client(InstanceId::DEFAULT, Some(BroadcastClientConfig::default()));
    let at = |s: u64| Instant::ZERO + Duration::from_secs(s);
    for (t, server) in [(0, 1), (1, 1), (2, 2)] {
        node.handle_datagram(
            at(t),
            &meta(addr(server), base),
            &mode5(base, 1, Leap::NoWarning),
        );
    }
    let refused_events: Vec<_> = std::iter::from_fn(|| node.poll_event())
        .filter_map(|e| match e {
            strata_engine::Event::Refused {
                instance,
                address,
                reason,
            } => Some((instance, address, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused_events,
        [
            (InstanceId::DEFAULT, addr(1), DropReason::Unauthenticated),
            (InstanceId::DEFAULT, addr(2), DropReason::Unauthenticated),
        ],
        "one event per server, at its first refused packet"
    );
    let mut listed: Vec<_> = node
        .refused_servers()
        .map(|r| (r.address, r.reason, r.packets, r.last))
        .collect();
    listed.sort_by_key(|r| r.0);
    assert_eq!(
        listed,
        [
            (addr(1), DropReason::Unauthenticated, 2, at(1)),
            (addr(2), DropReason::Unauthenticated, 1, at(2)),
        ]
    );
    assert_eq!(dropped(&node, DropReason::Unauthenticated), 3);

    // A flood of refused servers is listed up to the cap, and still counted.
    for server in 3..=60 {
        node.handle_datagram(
            at(3),
            &meta(addr(server), base),
            &mode5(base, 1, Leap::NoWarning),
        );
    }
    assert_eq!(
        node.refused_servers().count(),
        strata_engine::MAX_REFUSED_SERVERS
    );
    assert_eq!(dropped(&node, DropReason::Unauthenticated), 61);

    // Allowing unsigned servers forgets the refusals; the server is then followed.
    node.set_broadcast_client(
        InstanceId::DEFAULT,
        Some(BroadcastClientConfig {
            allow_unauthenticated: true,
            ..BroadcastClientConfig::default()
        }),
    );
    assert_eq!(node.refused_servers().count(), 0);
    while node.poll_event().is_some() {}
    node.handle_datagram(
        at(4),
        &meta(addr(1), base),
        &mode5(base, 1, Leap::NoWarning),
    );
    assert_eq!(node.sessions(at(4)).count(), 1);
    assert!(!std::iter::from_fn(|| node.poll_event())
        .any(|e| matches!(e, strata_engine::Event::Refused { .. })));
}

#[test]
fn the_dynamic_limit_of_all_instances_together_holds() {
    let mut node = listening_client(2, SimClock::new(0.0, 0.0), 1).node;
    let vpn = node.add_instance("vpna");
    node.set_broadcast_client(
        vpn,
        Some(BroadcastClientConfig {
            allow_unauthenticated: true,
            ..BroadcastClientConfig::default()
        }),
    );
    node.set_max_dynamic(InstanceId::DEFAULT, 10);
    node.set_max_dynamic(vpn, 10);
    node.set_max_dynamic_total(5);
    let base = NtpTimestamp::from_unix(EPOCH, 0);
    let send = |node: &mut Node, instance: InstanceId, servers: std::ops::Range<u8>| {
        for i in servers {
            let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 200, 9, i)), 123);
            let m = RecvMeta {
                instance,
                ..meta(src, base)
            };
            node.handle_datagram(Instant::ZERO, &m, &mode5(base, 1, Leap::NoWarning));
        }
    };
    send(&mut node, InstanceId::DEFAULT, 0..3);
    send(&mut node, vpn, 10..14);
    let per_instance = |node: &Node, instance: InstanceId| {
        node.sessions(Instant::ZERO)
            .filter(|s| s.instance == instance)
            .count()
    };
    assert_eq!(per_instance(&node, InstanceId::DEFAULT), 3);
    assert_eq!(per_instance(&node, vpn), 2, "5 in all");
    let vpn_dropped = |node: &Node| {
        node.instances()
            .find(|(id, _, _)| *id == vpn)
            .expect("vpna")
            .2
            .dropped(DropReason::SessionLimit)
    };
    assert_eq!(vpn_dropped(&node), 2);
    // A higher limit lets more in; the instance's own limit still holds.
    node.set_max_dynamic_total(100);
    node.set_max_dynamic(vpn, 4);
    send(&mut node, vpn, 20..24);
    assert_eq!(per_instance(&node, vpn), 4);
    assert_eq!(vpn_dropped(&node), 4);
}
