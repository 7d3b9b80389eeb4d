//! Client/server engine tests: two nodes on simulated clocks exchanging
//! packets through an in-memory network with virtual time.

mod support;

use std::net::{Ipv4Addr, SocketAddr};

use strata_engine::{DropReason, InstanceId, Instant, Node, RecvMeta, SocketId};
use strata_wire::{
    KissCode, Leap, Mode, NtpDuration, NtpPacket, NtpRepr, NtpShort, NtpTimestamp, ReferenceId,
};
use support::{addr, lab_config, lab_node, server_node, Host, Net, SimClock, EPOCH};

#[test]
fn client_steps_once_then_locks_frequency() {
    let mut client = lab_node(0.128, 2.0, 7);
    client.add_client(lab_config(addr(1), true), Instant::ZERO);
    let mut net = Net::new(
        vec![
            Host::new(server_node(1), SimClock::new(0.0, 0.0), 1),
            Host::new(client, SimClock::new(0.5, 50.0), 2),
        ],
        0.000_05,
    );
    let mut sync_at = None;
    for second in 1..=300 {
        net.run_until(f64::from(second));
        let err = net.hosts[1].clock.error(net.t);
        if sync_at.is_none() && err.abs() < 1e-3 && net.hosts[1].clock.steps == 1 {
            sync_at = Some(second);
        }
    }
    // Let a request sent at the last second get its reply.
    net.run_until(300.01);
    let c = &net.hosts[1];
    let status = c.node.status();
    let err = c.clock.error(net.t);
    eprintln!(
        "engine sim: final error {err:e}, freq {}",
        status.frequency_ppm
    );
    assert_eq!(c.clock.steps, 1, "exactly one step");
    assert!(err.abs() < 1e-3, "true error {err}");
    assert!(
        (status.frequency_ppm + 50.0).abs() < 1.0,
        "frequency {}",
        status.frequency_ppm
    );
    assert!(status.synchronized);
    assert_eq!(status.server.stratum, 2);
    assert_eq!(
        status.server.reference_id,
        ReferenceId::from_ipv4(Ipv4Addr::new(10, 200, 1, 1))
    );
    assert!(
        sync_at.is_some_and(|s| s < 120),
        "synchronised at {sync_at:?}"
    );
    let session = c
        .node
        .sessions(Instant::from_secs_f64(net.t))
        .next()
        .expect("session");
    assert_eq!(session.reach, 0o377);
    assert!(session.selected);
}

#[test]
fn unreachable_server_decays_reach() {
    let mut client = lab_node(0.128, 2.0, 7);
    client.add_client(lab_config(addr(1), false), Instant::ZERO);
    let mut net = Net::new(
        vec![
            Host::new(server_node(1), SimClock::new(0.0, 0.0), 1),
            Host::new(client, SimClock::new(0.0, 0.0), 2),
        ],
        0.000_05,
    );
    net.run_until(20.1); // between polls (2^-2 s apart): the last request is answered
    let reach = |net: &Net| {
        net.hosts[1]
            .node
            .sessions(Instant::from_secs_f64(net.t))
            .next()
            .expect("session")
            .reach
    };
    assert_eq!(reach(&net), 0o377);
    net.hosts[0].down = true;
    net.run_until(40.1);
    assert_eq!(reach(&net), 0);
    let s = net.hosts[1]
        .node
        .sessions(Instant::from_secs_f64(net.t))
        .next()
        .expect("session");
    assert_eq!(s.state.as_str(), "unreachable");
}

/// A client node with one association, its first request, and its cookie.
fn client_with_request() -> (Node, NtpTimestamp, NtpTimestamp) {
    let mut node = lab_node(0.128, 900.0, 7);
    node.add_client(lab_config(addr(1), false), Instant::ZERO);
    node.handle_timeout(Instant::ZERO);
    let mut buf = [0u8; 1500];
    let t1 = NtpTimestamp::from_unix(EPOCH, 0);
    let tx = node.poll_transmit(t1, &mut buf).expect("request");
    assert_eq!(tx.dst, addr(1));
    let (req, _) = strata_wire::parse_datagram(&buf[..tx.len]).expect("parse");
    assert_eq!(req.mode, Mode::Client);
    // Data minimisation: our clock is not on the wire.
    assert_ne!(req.transmit_timestamp, t1);
    (node, req.transmit_timestamp, t1)
}

fn reply(origin: NtpTimestamp, t2: NtpTimestamp, stratum: u8, refid: ReferenceId) -> Vec<u8> {
    let repr = NtpRepr {
        leap: if stratum == 0 {
            Leap::Unsynchronized
        } else {
            Leap::NoWarning
        },
        version: 4,
        mode: Mode::Server,
        stratum,
        poll: 3,
        precision: -20,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::ZERO,
        reference_id: refid,
        reference_timestamp: t2,
        origin_timestamp: origin,
        receive_timestamp: t2,
        transmit_timestamp: t2 + NtpDuration::from_seconds(1e-5),
    };
    let mut buf = vec![0u8; 48];
    repr.emit(&mut NtpPacket::new_unchecked(&mut buf[..]));
    buf
}

fn meta(src: SocketAddr, rx: NtpTimestamp) -> RecvMeta {
    RecvMeta {
        instance: InstanceId::DEFAULT,
        socket: SocketId(1),
        listener: false,
        src,
        dst_ip: None,
        ifindex: None,
        rx_time: rx,
    }
}

fn dropped(node: &Node, reason: DropReason) -> u64 {
    node.instances()
        .next()
        .expect("default instance")
        .2
        .dropped(reason)
}

#[test]
fn on_wire_checks_drop_and_count() {
    let (mut node, cookie, t1) = client_with_request();
    let now = Instant::from_secs_f64(0.001);
    let t2 = t1 + NtpDuration::from_seconds(0.0005);
    let rx = t1 + NtpDuration::from_seconds(0.001);
    let refid = ReferenceId::new(*b"GPS\0");

    // Wrong origin: bogus.
    let bogus = reply(NtpTimestamp::from_bits(cookie.to_bits() ^ 1), t2, 1, refid);
    node.handle_datagram(now, &meta(addr(1), rx), &bogus);
    assert_eq!(dropped(&node, DropReason::Bogus), 1);

    // From an address we never asked.
    node.handle_datagram(now, &meta(addr(9), rx), &reply(cookie, t2, 1, refid));
    assert_eq!(dropped(&node, DropReason::NoAssociation), 1);

    // The real reply is accepted; a second copy is a duplicate.
    let good = reply(cookie, t2, 1, refid);
    node.handle_datagram(now, &meta(addr(1), rx), &good);
    let s = node.sessions(now).next().expect("session");
    assert_eq!(s.reach, 1);
    assert_eq!(s.stratum, 1);
    node.handle_datagram(now, &meta(addr(1), rx), &good);
    assert_eq!(dropped(&node, DropReason::Duplicate), 1);

    // Garbage and short packets.
    node.handle_datagram(now, &meta(addr(1), rx), &[0x23; 20]);
    assert_eq!(dropped(&node, DropReason::Malformed), 1);
    let mut v7 = good.clone();
    v7[0] = (v7[0] & !0x38) | (7 << 3);
    node.handle_datagram(now, &meta(addr(1), rx), &v7);
    assert_eq!(dropped(&node, DropReason::BadVersion), 1);
    // A mode-3 request on a client socket is not answered.
    let mut req = good.clone();
    req[0] = (req[0] & !0x07) | 3;
    node.handle_datagram(now, &meta(addr(1), rx), &req);
    assert_eq!(dropped(&node, DropReason::UnexpectedMode), 1);
    let mut buf = [0u8; 64];
    assert!(node.poll_transmit(rx, &mut buf).is_none());
}

#[test]
fn unsynchronized_server_is_not_used() {
    let (mut node, cookie, t1) = client_with_request();
    let t2 = t1 + NtpDuration::from_seconds(0.0005);
    let mut r = reply(cookie, t2, 16, ReferenceId::new([0; 4]));
    r[0] = (r[0] & 0x3f) | 0xc0; // leap 3
    node.handle_datagram(Instant::ZERO, &meta(addr(1), t2), &r);
    assert_eq!(dropped(&node, DropReason::Unsynchronized), 1);
    // The server answered (reachable) but gives no sample and is not selected.
    let s = node.sessions(Instant::ZERO).next().expect("s");
    assert_eq!(s.reach, 1);
    assert!(!s.selected);
    assert!(!node.status().synchronized);
}

#[test]
fn kod_rate_obeyed_only_with_matching_origin() {
    let (mut node, cookie, t1) = client_with_request();
    let rate = ReferenceId::from_kiss(KissCode::Rate);
    let spoofed = reply(NtpTimestamp::from_bits(42), t1, 0, rate);
    node.handle_datagram(Instant::ZERO, &meta(addr(1), t1), &spoofed);
    assert_eq!(dropped(&node, DropReason::SpoofedKod), 1);
    assert_eq!(node.sessions(Instant::ZERO).next().expect("s").poll, -2);

    let real = reply(cookie, t1, 0, rate);
    node.handle_datagram(Instant::ZERO, &meta(addr(1), t1), &real);
    let s = node.sessions(Instant::ZERO).next().expect("s");
    // Raised to the server's poll (3) but not beyond maxpoll (0).
    assert_eq!(s.poll, 0);
}

#[test]
fn kod_deny_demobilises() {
    let (mut node, cookie, t1) = client_with_request();
    let deny = reply(cookie, t1, 0, ReferenceId::from_kiss(KissCode::Deny));
    node.handle_datagram(Instant::ZERO, &meta(addr(1), t1), &deny);
    let s = node.sessions(Instant::ZERO).next().expect("s");
    assert_eq!(s.state.as_str(), "denied");
    // No more requests, ever.
    let mut buf = [0u8; 64];
    for i in 1..100 {
        let now = Instant::from_secs_f64(f64::from(i));
        node.handle_timeout(now);
        assert!(node.poll_transmit(t1, &mut buf).is_none());
    }
    assert_eq!(node.poll_timeout(), None);
}

#[test]
fn iburst_spacing_follows_short_polls() {
    let mut node = lab_node(0.128, 900.0, 7);
    node.add_client(lab_config(addr(1), true), Instant::ZERO);
    let mut sends = Vec::new();
    let mut buf = [0u8; 64];
    let mut t = Instant::ZERO;
    while sends.len() < 10 {
        node.handle_timeout(t);
        while node
            .poll_transmit(NtpTimestamp::from_unix(EPOCH, 0), &mut buf)
            .is_some()
        {
            sends.push(t.as_secs_f64());
        }
        t = node.poll_timeout().expect("timer");
    }
    // Every interval is the poll interval 2^-2 s (bursts are never slower than polling).
    for w in sends.windows(2) {
        assert!((w[1] - w[0] - 0.25).abs() < 1e-6, "{sends:?}");
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..120), listener: bool) {
        let (mut node, _, t1) = client_with_request();
        let mut m = meta(addr(1), t1);
        m.listener = listener;
        node.handle_datagram(Instant::ZERO, &m, &data);
        let mut buf = [0u8; 128];
        while let Some(tx) = node.poll_transmit(t1, &mut buf) {
            proptest::prop_assert!(tx.len <= data.len().max(48));
        }
        let c = node.instances().next().expect("default").2.clone();
        proptest::prop_assert_eq!(c.received, 1);
    }
}

#[test]
fn zero_reference_time_is_not_a_bad_header() {
    // ntpsec in orphan mode serves with a zero reference timestamp.
    let (mut node, cookie, t1) = client_with_request();
    let t2 = t1 + NtpDuration::from_seconds(0.0005);
    let mut r = reply(cookie, t2, 5, ReferenceId::new([127, 0, 0, 1]));
    r[16..24].fill(0);
    node.handle_datagram(Instant::ZERO, &meta(addr(1), t2), &r);
    assert_eq!(dropped(&node, DropReason::BadHeader), 0);
    assert_eq!(node.sessions(Instant::ZERO).next().expect("s").reach, 1);
    // A reference time after the transmit time still is one.
    let (mut node, cookie, t1) = client_with_request();
    let t2 = t1 + NtpDuration::from_seconds(0.0005);
    let mut r = reply(cookie, t2, 5, ReferenceId::new([127, 0, 0, 1]));
    let later = (t2 + NtpDuration::from_seconds(10.0))
        .to_bits()
        .to_be_bytes();
    r[16..24].copy_from_slice(&later);
    node.handle_datagram(Instant::ZERO, &meta(addr(1), t2), &r);
    assert_eq!(dropped(&node, DropReason::BadHeader), 1);
}
