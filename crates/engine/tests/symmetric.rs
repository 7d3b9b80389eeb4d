//! Symmetric active/passive engine tests on simulated clocks.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use strata_engine::{
    AccessLevel, AccessRule, AssociationMode, Calibrate, DropReason, Event, InstanceId, Node, Route,
};
use strata_wire::ReferenceId;
use support::{addr, lab_config, lab_node, server_node, Host, Net, SimClock};

fn peer_rule() -> Vec<AccessRule> {
    vec![AccessRule {
        prefix: IpAddr::V4(Ipv4Addr::new(10, 200, 1, 0)),
        prefix_len: 24,
        level: AccessLevel::Peer,
    }]
}

fn session(node: &Node, net_t: f64, last: u8) -> Option<strata_engine::SessionStatus> {
    node.sessions(strata_engine::Instant::from_secs_f64(net_t))
        .find(|s| s.address == addr(last))
}

fn dropped(node: &Node, reason: DropReason) -> u64 {
    node.instances().next().expect("default").2.dropped(reason)
}

/// U1 (stratum 1) serves A; U3 (stratum 3) serves B; A is symmetric
/// active toward B; B lets 10.200.1.0/24 peer.
fn topology() -> Net {
    let mut a = lab_node(0.128, 2.0, 1);
    a.add_client(lab_config(addr(1), true), net0());
    a.add_peer(lab_config(addr(3), false), net0());
    let mut b = lab_node(0.128, 2.0, 2);
    b.set_access(InstanceId::DEFAULT, peer_rule());
    b.add_client(lab_config(addr(4), true), net0());
    Net::new(
        vec![
            Host::new(server_node(1), SimClock::new(0.0, 0.0), 1),
            Host::new(a, SimClock::new(0.2, 20.0), 2),
            Host::new(b, SimClock::new(-0.3, -15.0), 3),
            // U3: stratum 3, its clock 2 ms off (it is a worse source).
            Host::new(server_node(3), SimClock::new(0.002, 0.0), 4),
        ],
        0.000_1,
    )
}

fn net0() -> strata_engine::Instant {
    strata_engine::Instant::ZERO
}

#[test]
fn peers_converge_and_stratum_follows_the_better_side() {
    let mut net = topology();
    net.run_until(120.0);
    let (a, b) = (&net.hosts[1], &net.hosts[2]);
    assert_eq!(a.node.status().server.stratum, 2);
    assert_eq!(
        b.node.status().server.stratum,
        3,
        "B prefers A (3) over U3 (4)"
    );
    assert!(
        a.clock.error(net.t).abs() < 1e-3,
        "A error {}",
        a.clock.error(net.t)
    );
    // B combines A (true time) with U3 (2 ms off): about 1 ms off.
    assert!(
        b.clock.error(net.t).abs() < 1.5e-3,
        "B error {}",
        b.clock.error(net.t)
    );
    let at_a = session(&a.node, net.t, 3).expect("A's peer B");
    assert_eq!(at_a.mode, AssociationMode::SymmetricActive);
    assert_eq!(at_a.state.as_str(), "reachable");
    assert!(at_a.reach != 0);
    assert!(at_a.calibrations >= 1);
    let at_b = session(&b.node, net.t, 2).expect("B's passive association with A");
    assert_eq!(at_b.mode, AssociationMode::SymmetricPassive);
    assert!(at_b.selected);
    // A began with a client/server volley, then spoke mode 1.
    assert!(a.sent_by_mode[3] >= 4);
    assert!(a.sent_by_mode[1] > 20);
    assert!(b.sent_by_mode[2] > 20);
}

#[test]
fn losing_the_upstream_never_loops_and_falls_back() {
    let mut net = topology();
    net.run_until(60.0);
    net.hosts[0].down = true; // U1 dies
    let a_refid = ReferenceId::from_ipv4(Ipv4Addr::new(10, 200, 1, 2));
    let b_refid = ReferenceId::from_ipv4(Ipv4Addr::new(10, 200, 1, 3));
    let mut t = 60.0;
    while t < 240.0 {
        t += 0.25;
        net.run_until(t);
        let a = net.hosts[1].node.status();
        let b = net.hosts[2].node.status();
        // A never selects B while B is synchronised to A.
        if a.server.reference_id == b_refid {
            assert_ne!(b.server.reference_id, a_refid, "timing loop at t={t}");
        }
    }
    let a = net.hosts[1].node.status();
    let b = net.hosts[2].node.status();
    assert_eq!(b.server.stratum, 4, "B falls back to U3");
    assert_eq!(a.server.stratum, 5, "A synchronises from B");
    assert_eq!(a.server.reference_id, b_refid);
    assert!(net.hosts[1].clock.error(net.t).abs() < 5e-3);
}

#[test]
fn passive_association_demobilised_when_active_falls_silent() {
    let mut net = topology();
    net.run_until(60.0);
    assert!(session(&net.hosts[2].node, net.t, 2).is_some());
    net.hosts[1].down = true; // A dies
    net.run_until(120.0);
    assert!(
        session(&net.hosts[2].node, net.t, 2).is_none(),
        "passive association removed"
    );
    assert!(net.hosts[2]
        .events
        .iter()
        .any(|e| matches!(e, Event::Demobilized { .. })));
    assert_eq!(net.hosts[2].node.status().server.stratum, 4);
}

#[test]
fn without_a_peer_rule_mode_1_gets_stateless_mode_2() {
    // B has no rules: everyone gets "server", which serves time but does
    // not mobilise a passive association.
    let mut a = lab_node(0.128, 2.0, 1);
    a.add_peer(lab_config(addr(3), false), net0());
    let net_b = server_node(2);
    let mut net = Net::new(
        vec![
            Host::new(a, SimClock::new(0.3, 10.0), 2),
            Host::new(net_b, SimClock::new(0.0, 0.0), 3),
        ],
        0.000_1,
    );
    net.run_until(60.0);
    let b = &net.hosts[1];
    assert_eq!(
        b.node.sessions(net.now()).count(),
        0,
        "no passive association"
    );
    assert!(b.sent_by_mode[2] > 10, "stateless mode-2 answers");
    let a = &net.hosts[0];
    assert_eq!(a.node.status().server.stratum, 3);
    assert!(a.clock.error(net.t).abs() < 1e-3);
}

#[test]
fn access_below_time_service_gets_nothing() {
    let mut a = lab_node(0.128, 2.0, 1);
    a.add_peer(lab_config(addr(3), false), net0());
    let mut b = server_node(2);
    b.set_access(
        InstanceId::DEFAULT,
        vec![AccessRule {
            prefix: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            prefix_len: 0,
            level: AccessLevel::Query,
        }],
    );
    let mut net = Net::new(
        vec![
            Host::new(a, SimClock::new(0.1, 10.0), 2),
            Host::new(b, SimClock::new(0.0, 0.0), 3),
        ],
        0.000_1,
    );
    net.run_until(30.0);
    let b = &net.hosts[1];
    assert_eq!(b.sent_by_mode.iter().sum::<u32>(), 0);
    assert!(dropped(&b.node, DropReason::AccessDenied) > 0);
    assert!(!net.hosts[0].node.status().synchronized);
}

#[test]
fn dynamic_session_limit_caps_passive_associations() {
    // Three actives toward B, which allows one dynamic session.
    let mut hosts = Vec::new();
    let mut b = server_node(2);
    b.set_access(InstanceId::DEFAULT, peer_rule());
    b.set_max_dynamic(InstanceId::DEFAULT, 1);
    hosts.push(Host::new(b, SimClock::new(0.0, 0.0), 3));
    for last in [5, 6, 7] {
        let mut a = lab_node(0.128, 2.0, u64::from(last));
        a.add_peer(lab_config(addr(3), false), net0());
        hosts.push(Host::new(a, SimClock::new(0.0, 0.0), last));
    }
    let mut net = Net::new(hosts, 0.000_1);
    net.run_until(30.0);
    let b = &net.hosts[0];
    let passive: Vec<_> = b.node.sessions(net.now()).collect();
    assert_eq!(passive.len(), 1);
    let first = passive[0].address;
    assert!(dropped(&b.node, DropReason::SessionLimit) > 0);
    net.run_until(60.0);
    let again: Vec<_> = net.hosts[0].node.sessions(net.now()).collect();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].address, first,
        "the existing association is untouched"
    );
    assert!(again[0].reach != 0);
}

#[test]
fn symmetric_packets_leave_from_the_listener_they_arrived_on() {
    use strata_engine::{RecvMeta, SocketId};
    use strata_wire::{Leap, Mode, NtpRepr, NtpShort, NtpTimestamp};
    // A's mode-1 packet comes from an ephemeral port to B's listener
    // (socket 7, 10.200.1.3:123): B's passive association must answer, and
    // keep polling, from that listener, or A (keyed on B's port 123) drops it.
    let mut b = server_node(2);
    b.set_access(InstanceId::DEFAULT, peer_rule());
    let b_ip = addr(3).ip();
    let a_src = std::net::SocketAddr::new(addr(2).ip(), 40_000);
    let t = NtpTimestamp::from_unix(1_800_000_000, 0);
    // A's first packet, sent before it is synchronised (an unusable sample).
    let request = NtpRepr {
        leap: Leap::Unsynchronized,
        version: 4,
        mode: Mode::SymmetricActive,
        stratum: 0,
        poll: 0,
        precision: -20,
        root_delay: NtpShort::default(),
        root_dispersion: NtpShort::default(),
        reference_id: ReferenceId::INIT,
        reference_timestamp: NtpTimestamp::ZERO,
        origin_timestamp: NtpTimestamp::ZERO,
        receive_timestamp: NtpTimestamp::ZERO,
        transmit_timestamp: t,
    };
    let mut bytes = [0u8; 48];
    let len = request.emit_to_slice(&mut bytes).expect("emit");
    let meta = RecvMeta {
        instance: InstanceId::DEFAULT,
        socket: SocketId(7),
        listener: true,
        src: a_src,
        dst_ip: Some(b_ip),
        ifindex: Some(4),
        rx_time: t,
    };
    b.handle_datagram(net0(), &meta, &bytes[..len]);
    assert_eq!(b.sessions(net0()).count(), 1, "passive association");
    let mut buf = [0u8; 128];
    let tx = b.poll_transmit(t, &mut buf).expect("mode-2 answer");
    assert_eq!(tx.dst, a_src);
    assert_eq!(tx.route, Route::Socket(SocketId(7)), "from the listener");
    assert_eq!(tx.src_ip, Some(b_ip));
    assert_eq!(tx.ifindex, Some(4));
    // Its own later polls leave the same way.
    let later = net0() + core::time::Duration::from_secs(3600);
    b.handle_timeout(later);
    let tx = b.poll_transmit(t, &mut buf).expect("a poll");
    assert_eq!((tx.dst, tx.route), (a_src, Route::Socket(SocketId(7))));
}

#[test]
fn packets_name_their_route_and_symmetric_ones_carry_the_real_time() {
    use strata_wire::{Mode, NtpTimestamp};
    // Before the peer has been heard: calibration requests leave from the
    // client socket, mode 1 from a listener (port 123), never chosen by
    // reading the packet in the driver. Nobody answers here, so mode 1
    // needs the best-effort fallback.
    let mut a = lab_node(0.128, 2.0, 5);
    let id = a.add_peer(lab_config(addr(3), false), net0());
    assert!(a.set_calibrate(id, Calibrate::BestEffort));
    a.add_client(lab_config(addr(4), false), net0());
    let clock = NtpTimestamp::from_unix(1_800_000_000, 0);
    let mut buf = [0u8; 128];
    let mut seen = Vec::new();
    for _ in 0..40 {
        let Some(deadline) = a.poll_timeout() else {
            break;
        };
        a.handle_timeout(deadline);
        while let Some(tx) = a.poll_transmit(clock, &mut buf) {
            let (p, _) = strata_wire::parse_datagram(&buf[..tx.len]).expect("parse");
            if p.mode == Mode::SymmetricActive {
                // Only the bits below the precision (2^-20 s) are random.
                let diff = p.transmit_timestamp.to_bits() ^ clock.to_bits();
                assert!(diff < 1 << 12, "real time kept: {diff:#x}");
            }
            seen.push((p.mode, tx.route, tx.dst));
        }
    }
    assert!(seen.contains(&(Mode::Client, Route::Client, addr(4))));
    assert!(
        seen.contains(&(Mode::Client, Route::Client, addr(3))),
        "calibration"
    );
    assert!(seen.contains(&(Mode::SymmetricActive, Route::Listener, addr(3))));
    assert!(seen
        .iter()
        .all(|(mode, route, _)| (*mode == Mode::SymmetricActive) == (*route == Route::Listener)));
}

/// A symmetric active peer toward 10.200.1.3, where nobody answers, with
/// minpoll 4 and maxpoll 8, run for 1200 s.
fn unanswered_peer(calibrate: Calibrate) -> Net {
    let mut a = lab_node(0.128, 2.0, 1);
    let id = a.add_peer(
        strata_engine::ClientConfig {
            minpoll: 4,
            maxpoll: 8,
            ..lab_config(addr(3), false)
        },
        net0(),
    );
    assert_eq!(a.calibrate(id), Some(Calibrate::Required), "the default");
    assert!(a.set_calibrate(id, calibrate));
    assert_eq!(a.calibrate(id), Some(calibrate));
    let mut net = Net::new(vec![Host::new(a, SimClock::new(0.0, 0.0), 2)], 0.000_1);
    net.run_until(1200.0);
    net
}

#[test]
fn required_calibration_never_sends_mode_1_to_a_silent_peer() {
    let net = unanswered_peer(Calibrate::Required);
    let a = &net.hosts[0];
    assert_eq!(a.sent_by_mode[1], 0, "no mode 1 without an answered volley");
    let s = session(&a.node, net.t, 3).expect("the association stays");
    assert_eq!(s.state, strata_engine::AssociationState::Calibrating);
    assert!(s.calibration_progress.is_some());
    assert_eq!(s.calibrations, 0);
    // Volleys of at most 9 requests 2 s apart, separated by 32, 64, 128,
    // then 256 s (maxpoll): about 7 volleys in 1200 s. Without the
    // backoff (a volley every 16 s) it would be over 250 requests.
    let requests = a.sent_by_mode[3];
    assert!((40..=80).contains(&requests), "{requests} mode-3 requests");
    // The next volley is at most 2^maxpoll s away.
    let next = s.next_poll.expect("polling").as_secs_f64();
    assert!(next <= net.t + 256.0 + 1e-6, "next poll at {next}");
}

#[test]
fn best_effort_calibration_falls_back_to_mode_1() {
    let net = unanswered_peer(Calibrate::BestEffort);
    let a = &net.hosts[0];
    assert!(a.sent_by_mode[3] <= 9, "one volley: {}", a.sent_by_mode[3]);
    assert!(a.sent_by_mode[1] > 3, "mode 1 after the volley");
    let s = session(&a.node, net.t, 3).expect("the association stays");
    assert_ne!(s.state, strata_engine::AssociationState::Calibrating);
    assert!(s.calibration_progress.is_none());
    assert_eq!(s.calibrations, 1);
}

#[test]
fn two_required_active_peers_calibrate_then_exchange_mode_1() {
    // Both sides configure each other: each one's mode 1 may arrive while
    // the other still calibrates, which must not end its volley.
    let mut a = lab_node(0.128, 2.0, 1);
    a.add_client(lab_config(addr(1), true), net0());
    a.add_peer(lab_config(addr(3), false), net0());
    let mut b = lab_node(0.128, 2.0, 2);
    b.add_peer(lab_config(addr(2), false), net0());
    let mut net = Net::new(
        vec![
            Host::new(server_node(1), SimClock::new(0.0, 0.0), 1),
            Host::new(a, SimClock::new(0.2, 20.0), 2),
            Host::new(b, SimClock::new(-0.3, -15.0), 3),
        ],
        0.000_1,
    );
    net.run_until(120.0);
    for (i, peer) in [(1, 3), (2, 2)] {
        let h = &net.hosts[i];
        let s = session(&h.node, net.t, peer).expect("active association");
        assert_eq!(s.mode, AssociationMode::SymmetricActive);
        assert_eq!(s.calibrations, 1, "host {i}");
        assert!(h.sent_by_mode[1] > 10, "host {i} sends mode 1");
        assert!(h.sent_by_mode[3] >= 4, "host {i} calibrated");
    }
    let b = &net.hosts[2];
    assert_eq!(b.node.status().server.stratum, 3);
    assert!(b.clock.error(net.t).abs() < 1e-3);
}

#[test]
fn a_peer_switched_to_best_effort_while_calibrating_falls_back() {
    // What a reload does: the policy changes on the running association.
    let mut net = unanswered_peer(Calibrate::Required);
    assert_eq!(net.hosts[0].sent_by_mode[1], 0);
    let id = session(&net.hosts[0].node, net.t, 3).expect("peer").id;
    assert!(net.hosts[0].node.set_calibrate(id, Calibrate::BestEffort));
    // The current volley ends (at most 256 s to its start, 18 s long),
    // then mode 1 follows.
    net.run_until(1600.0);
    let a = &net.hosts[0];
    assert!(a.sent_by_mode[1] > 3, "mode 1 after the switch");
    let s = session(&a.node, net.t, 3).expect("peer");
    assert_ne!(s.state, strata_engine::AssociationState::Calibrating);
    assert_eq!(s.calibrations, 1);
}
