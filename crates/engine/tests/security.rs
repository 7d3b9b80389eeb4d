//! Server-side protection: per-client rate limiting with KoD RATE, the
//! access refusal policy (KoD DENY) and the refusal of NTP control modes;
//! symmetric-key authentication in client/server, symmetric and keyed
//! listener exchanges.

mod support;
use support::rng;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use strata_engine::{
    AccessLevel, AccessRule, Calibrate, DenyPolicy, DropReason, InstanceId, Instant, Node,
    NodeConfig, RateLimitConfig, RecvMeta, SocketId,
};
use strata_wire::{KissCode, Leap, Mode, NtpPacket, NtpRepr, NtpTimestamp, HEADER_LEN};

fn server() -> Node {
    Node::new(
        NodeConfig {
            local_stratum: Some(1),
            ..NodeConfig::default()
        },
        rng(1),
    )
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 200, 0, last))
}

fn meta(src: IpAddr, port: u16) -> RecvMeta {
    RecvMeta {
        instance: InstanceId::DEFAULT,
        socket: SocketId(1),
        listener: true,
        src: SocketAddr::new(src, port),
        dst_ip: Some(ip(1)),
        ifindex: None,
        rx_time: NtpTimestamp::from_unix(1_800_000_000, 0),
    }
}

fn request(mode: Mode, xmt: u64) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN];
    let repr = NtpRepr {
        mode,
        ..NtpRepr::client_request(6, NtpTimestamp::from_bits(xmt))
    };
    repr.emit(&mut NtpPacket::new_unchecked(&mut buf[..]));
    buf
}

/// What came back for one request.
#[derive(Debug, PartialEq)]
enum Answer {
    Time,
    Kod(KissCode),
    Nothing,
}

/// Feeds one request and drains the answer, checking it never amplifies
/// and always echoes the request's transmit timestamp.
fn ask(node: &mut Node, now: Instant, src: IpAddr, mode: Mode, xmt: u64) -> Answer {
    let req = request(mode, xmt);
    node.handle_datagram(now, &meta(src, 40_000), &req);
    let mut buf = [0u8; 1500];
    let Some(t) = node.poll_transmit(NtpTimestamp::from_unix(1_800_000_000, 1), &mut buf) else {
        return Answer::Nothing;
    };
    assert!(node
        .poll_transmit(NtpTimestamp::from_unix(1_800_000_000, 2), &mut buf)
        .is_none());
    assert!(
        t.len <= req.len(),
        "a reply is never larger than its request"
    );
    assert_eq!(t.dst.ip(), src);
    let (reply, _) = strata_wire::parse_datagram(&buf[..t.len]).expect("reply parses");
    assert_eq!(reply.origin_timestamp, NtpTimestamp::from_bits(xmt));
    if reply.stratum == 0 {
        assert_eq!(reply.leap, Leap::Unsynchronized);
        assert_eq!(reply.receive_timestamp, NtpTimestamp::ZERO);
        assert_eq!(reply.transmit_timestamp, NtpTimestamp::ZERO);
        Answer::Kod(reply.reference_id.kiss_code())
    } else {
        Answer::Time
    }
}

fn limit(interval_s: u64, burst: u32) -> RateLimitConfig {
    RateLimitConfig {
        interval: Duration::from_secs(interval_s),
        burst,
        max_clients: 1000,
    }
}

fn counters(node: &Node) -> strata_engine::Counters {
    node.instances().next().expect("default").2.clone()
}

#[test]
fn abuser_gets_one_kod_per_interval_and_others_are_unaffected() {
    let mut node = server();
    node.set_rate_limit(Some(limit(2, 8)));
    let abuser = ip(66);
    let (mut time, mut kods, mut nothing) = (0u64, 0u64, 0u64);
    let mut good_answers = 0u32;
    let mut xmt = 1u64;
    // 10 s of 1000 requests/s from the abuser; 5 clients polling every 1 s
    // at well under the limit's burst.
    for ms in 0..10_000u64 {
        let now = Instant::from_secs_f64(ms as f64 / 1000.0);
        xmt += 1;
        match ask(&mut node, now, abuser, Mode::Client, xmt) {
            Answer::Time => time += 1,
            Answer::Kod(code) => {
                assert_eq!(code, KissCode::Rate);
                kods += 1;
            }
            Answer::Nothing => nothing += 1,
        }
        if ms % 2000 == 0 {
            for c in 10..15 {
                xmt += 1;
                assert_eq!(ask(&mut node, now, ip(c), Mode::Client, xmt), Answer::Time);
                good_answers += 1;
            }
        }
    }
    eprintln!("abuser: {time} time, {kods} KoD, {nothing} nothing");
    assert_eq!(good_answers, 25);
    assert_eq!(time, 8, "only the first burst is answered");
    assert_eq!(kods, 5, "one KoD RATE per 2 s interval over 10 s");
    assert_eq!(nothing, 10_000 - 8 - 5);
    let c = counters(&node);
    assert_eq!(c.kod_sent, 5);
    assert_eq!(c.dropped(DropReason::RateLimited), nothing);
    assert_eq!(c.sent, 8 + 5 + 25);
}

#[test]
fn stateless_symmetric_answers_are_limited_too() {
    let mut node = server();
    node.set_rate_limit(Some(limit(60, 1)));
    let now = Instant::ZERO;
    assert_eq!(
        ask(&mut node, now, ip(7), Mode::SymmetricActive, 1),
        Answer::Time
    );
    assert_eq!(
        ask(&mut node, now, ip(7), Mode::SymmetricActive, 2),
        Answer::Kod(KissCode::Rate)
    );
    assert_eq!(
        ask(&mut node, now, ip(7), Mode::SymmetricActive, 3),
        Answer::Nothing
    );
}

#[test]
fn off_by_default() {
    let mut node = server();
    assert_eq!(node.rate_limit(), None);
    for i in 0..100 {
        assert_eq!(
            ask(&mut node, Instant::ZERO, ip(9), Mode::Client, i + 1),
            Answer::Time
        );
    }
}

#[test]
fn refused_sources_get_kod_deny_only_with_the_kod_policy() {
    let mut node = server();
    node.set_access(
        InstanceId::DEFAULT,
        vec![
            AccessRule {
                prefix: ip(0),
                prefix_len: 28,
                level: AccessLevel::Synchronization,
            },
            AccessRule {
                prefix: ip(16),
                prefix_len: 28,
                level: AccessLevel::Query,
            },
        ],
    );
    let now = Instant::ZERO;
    // Default policy: refused silently.
    assert_eq!(
        ask(&mut node, now, ip(100), Mode::Client, 1),
        Answer::Nothing
    );
    assert_eq!(
        ask(&mut node, now, ip(17), Mode::Client, 2),
        Answer::Nothing
    );
    assert_eq!(ask(&mut node, now, ip(2), Mode::Client, 3), Answer::Time);
    node.set_deny_policy(DenyPolicy::Kod);
    assert_eq!(
        ask(&mut node, now, ip(100), Mode::Client, 4),
        Answer::Kod(KissCode::Deny)
    );
    assert_eq!(
        ask(&mut node, now, ip(17), Mode::Client, 5),
        Answer::Kod(KissCode::Deny)
    );
    // Mode 1 from a refused source stays silent.
    assert_eq!(
        ask(&mut node, now, ip(100), Mode::SymmetricActive, 6),
        Answer::Nothing
    );
    let c = counters(&node);
    assert_eq!(c.kod_sent, 2);
    assert_eq!(c.dropped(DropReason::AccessDenied), 5);

    // With a rate limiter the DENYs are limited like any answer.
    node.set_rate_limit(Some(limit(4, 2)));
    let answers: Vec<Answer> = (0..6)
        .map(|i| ask(&mut node, now, ip(101), Mode::Client, 10 + i))
        .collect();
    assert_eq!(
        answers,
        vec![
            Answer::Kod(KissCode::Deny),
            Answer::Kod(KissCode::Deny),
            Answer::Kod(KissCode::Deny),
            Answer::Nothing,
            Answer::Nothing,
            Answer::Nothing,
        ]
    );
}

#[test]
fn control_and_private_modes_are_dropped_and_counted() {
    // No access rules: time for everyone, but mode 6 only from loopback,
    // and mode 7 for nobody.
    let mut node = server();
    for (i, byte) in [0x16u8, 0x17, 0x26, 0x27].into_iter().enumerate() {
        let mut pkt = vec![0u8; 12];
        pkt[0] = byte;
        pkt[1] = 2; // READVAR
        node.handle_datagram(Instant::ZERO, &meta(ip(5), 123), &pkt);
        let mut long = request(Mode::Client, 1);
        long[0] = byte;
        node.handle_datagram(Instant::ZERO, &meta(ip(5), 123), &long);
        let c = counters(&node);
        let private = if byte & 7 == 7 { 2 } else { 0 };
        assert_eq!(
            c.dropped(DropReason::ControlMode),
            2 * (i as u64 / 2) + private
        );
        assert_eq!(c.dropped_total(), 2 * (i as u64 + 1));
    }
    assert_eq!(counters(&node).dropped(DropReason::AccessDenied), 4);
    let mut buf = [0u8; 64];
    assert!(node
        .poll_transmit(NtpTimestamp::from_unix(1_800_000_000, 0), &mut buf)
        .is_none());
    assert_eq!(DropReason::ControlMode.as_str(), "control-mode");
    assert_eq!(DropReason::RateLimited.as_str(), "rate-limited");
}

fn keys() -> strata_engine::auth::KeyStore {
    use strata_engine::auth::{Key, KeyStore, KeyType};
    KeyStore::new(
        [
            Key::new(1, KeyType::Sha256, b"correct horse battery".to_vec()).expect("key"),
            Key::new(2, KeyType::Aes128Cmac, vec![7u8; 16]).expect("key"),
            Key::new(3, KeyType::Md5, b"untrusted".to_vec()).expect("key"),
        ],
        [1, 2],
    )
    .expect("store")
}

/// Sends `req` and returns the raw answer, if any.
fn exchange(node: &mut Node, src: IpAddr, req: &[u8]) -> Option<Vec<u8>> {
    node.handle_datagram(Instant::ZERO, &meta(src, 40_000), req);
    let mut buf = [0u8; 1500];
    let t = node.poll_transmit(NtpTimestamp::from_unix(1_800_000_000, 1), &mut buf)?;
    assert!(t.len <= req.len(), "never larger than the request");
    Some(buf[..t.len].to_vec())
}

#[test]
fn signed_requests_get_signed_replies_and_bad_macs_a_crypto_nak() {
    use strata_engine::auth::{sign, verify, Verdict};
    let store = keys();
    let mut node = server();
    node.set_keys(keys());
    let plain = request(Mode::Client, 42);
    for key in [1u32, 2] {
        let mut req = [0u8; 128];
        let n = sign(&store, key, &plain, &mut req).expect("sign");
        let reply = exchange(&mut node, ip(3), &req[..n]).expect("reply");
        assert_eq!(reply.len(), n, "a signed reply is as long as the request");
        assert_eq!(verify(&store, &reply), Verdict::Ok { key_id: key });
        let (r, _) = strata_wire::parse_datagram(&reply).expect("parse");
        assert_eq!(r.stratum, 1);
        assert_eq!(r.origin_timestamp, NtpTimestamp::from_bits(42));
    }
    // A corrupted digest, and an untrusted key: a crypto-NAK, no time.
    let mut req = [0u8; 128];
    let n = sign(&store, 1, &plain, &mut req).expect("sign");
    req[n - 1] ^= 1;
    let nak = exchange(&mut node, ip(3), &req[..n]).expect("crypto-NAK");
    assert_eq!(nak.len(), HEADER_LEN + 4);
    assert_eq!(verify(&store, &nak), Verdict::CryptoNak);
    let (r, _) = strata_wire::parse_datagram(&nak).expect("parse");
    assert_eq!(r.stratum, 0);
    assert_eq!(r.transmit_timestamp, NtpTimestamp::ZERO);
    assert_eq!(r.origin_timestamp, NtpTimestamp::from_bits(42));
    let n = sign(&store, 3, &plain, &mut req).expect("sign");
    let nak = exchange(&mut node, ip(3), &req[..n]).expect("crypto-NAK");
    assert_eq!(verify(&store, &nak), Verdict::CryptoNak);
    // A client sending a crypto-NAK is dropped.
    let mut nak_req = plain.clone();
    nak_req.extend_from_slice(&[0; 4]);
    assert_eq!(exchange(&mut node, ip(3), &nak_req), None);
    // Unsigned requests are still served, unsigned.
    let reply = exchange(&mut node, ip(3), &plain).expect("reply");
    assert_eq!(verify(&store, &reply), Verdict::None);
    let c = counters(&node);
    assert_eq!(c.dropped(DropReason::BadMac), 3);
    assert_eq!(c.sent, 5);
}

fn client_to(server: IpAddr) -> strata_engine::ClientConfig {
    strata_engine::ClientConfig {
        instance: InstanceId::DEFAULT,
        address: SocketAddr::new(server, 123),
        minpoll: 4,
        maxpoll: 4,
        iburst: false,
    }
}

/// Runs the client's timers until its next request is due.
fn next_poll(client: &mut Node) {
    for _ in 0..100 {
        if client.has_transmit() {
            return;
        }
        let t = client.poll_timeout().expect("a deadline");
        client.handle_timeout(t);
    }
    panic!("no request due");
}

/// One client poll through `server`, with `tamper` applied to the reply.
fn keyed_poll(client: &mut Node, server: &mut Node, tamper: impl Fn(&mut Vec<u8>)) {
    let mut buf = [0u8; 256];
    let now = Instant::ZERO;
    let t = client
        .poll_transmit(NtpTimestamp::from_unix(1_800_000_000, 0), &mut buf)
        .expect("request");
    let req = buf[..t.len].to_vec();
    let mut reply = exchange(server, ip(2), &req).expect("reply");
    tamper(&mut reply);
    let m = RecvMeta {
        listener: false,
        src: SocketAddr::new(ip(1), 123),
        dst_ip: Some(ip(2)),
        ..meta(ip(1), 123)
    };
    client.handle_datagram(now, &m, &reply);
}

#[test]
fn keyed_associations_sign_and_require_the_key() {
    use strata_engine::auth::{verify, Verdict};
    let mut server = server();
    server.set_keys(keys());
    let mut client = Node::new(NodeConfig::default(), rng(2));
    client.set_keys(keys());
    let id = client.add_client(client_to(ip(1)), Instant::ZERO);
    assert!(client.set_association_key(id, Some(2)));

    next_poll(&mut client);
    let mut buf = [0u8; 256];
    let t = client
        .poll_transmit(NtpTimestamp::from_unix(1_800_000_000, 0), &mut buf)
        .expect("request");
    assert_eq!(t.len, HEADER_LEN + 20, "48 + key id + 16-byte CMAC");
    assert_eq!(verify(&keys(), &buf[..t.len]), Verdict::Ok { key_id: 2 });

    // A signed reply is accepted.
    let reach = |c: &Node| c.sessions(Instant::ZERO).next().expect("session").reach;
    next_poll(&mut client);
    keyed_poll(&mut client, &mut server, |_| {});
    assert_eq!(
        counters(&client).dropped_total(),
        0,
        "{:?}",
        counters(&client)
    );
    assert_eq!(reach(&client) & 1, 1);
    // A tampered, a stripped and an unsigned reply are not.
    next_poll(&mut client);
    keyed_poll(&mut client, &mut server, |r| {
        let n = r.len();
        r[n - 1] ^= 0x80;
    });
    assert_eq!(counters(&client).dropped(DropReason::BadMac), 1);
    next_poll(&mut client);
    keyed_poll(&mut client, &mut server, |r| r.truncate(HEADER_LEN));
    assert_eq!(counters(&client).dropped(DropReason::Unauthenticated), 1);
    // A server that does not know the key answers with a crypto-NAK: it
    // answers our request, so it is counted as such (and gives no time).
    let mut stranger = self::server();
    next_poll(&mut client);
    keyed_poll(&mut client, &mut stranger, |_| {});
    assert_eq!(counters(&client).dropped(DropReason::CryptoNak), 1);
    assert_eq!(counters(&client).dropped(DropReason::BadMac), 1);
    assert_eq!(counters(&stranger).dropped(DropReason::BadMac), 1);
}

#[test]
fn a_crypto_nak_counts_only_when_it_answers_our_request() {
    let mut client = Node::new(NodeConfig::default(), rng(2));
    client.set_keys(keys());
    let id = client.add_client(client_to(ip(1)), Instant::ZERO);
    assert!(client.set_association_key(id, Some(1)));
    let mut server = server();
    server.set_keys(keys());
    let mut stranger = self::server();
    let reach = |c: &Node| c.sessions(Instant::ZERO).next().expect("session").reach;
    let from_server = RecvMeta {
        listener: false,
        src: SocketAddr::new(ip(1), 123),
        dst_ip: Some(ip(2)),
        ..meta(ip(1), 123)
    };

    next_poll(&mut client);
    let mut buf = [0u8; 256];
    let t = client
        .poll_transmit(NtpTimestamp::from_unix(1_800_000_000, 0), &mut buf)
        .expect("request");
    let req = buf[..t.len].to_vec();
    // A crypto-NAK echoing another origin is a spoofed KoD.
    let mut other = req.clone();
    other[40..48].copy_from_slice(&[0xaa; 8]);
    let forged = exchange(&mut stranger, ip(2), &other).expect("crypto-NAK");
    client.handle_datagram(Instant::ZERO, &from_server, &forged);
    assert_eq!(counters(&client).dropped(DropReason::SpoofedKod), 1);
    assert_eq!(counters(&client).dropped(DropReason::CryptoNak), 0);
    // One that answers our request is counted; the request stays
    // outstanding, so the genuine signed reply is still taken.
    let nak = exchange(&mut stranger, ip(2), &req).expect("crypto-NAK");
    client.handle_datagram(Instant::ZERO, &from_server, &nak);
    assert_eq!(counters(&client).dropped(DropReason::CryptoNak), 1);
    assert_eq!(reach(&client) & 1, 0);
    let reply = exchange(&mut server, ip(2), &req).expect("reply");
    client.handle_datagram(Instant::ZERO, &from_server, &reply);
    assert_eq!(reach(&client) & 1, 1);
    assert_eq!(counters(&client).dropped_total(), 2);
}

#[test]
fn a_keyed_listener_answers_only_requests_signed_with_its_key() {
    use strata_engine::auth::{sign, verify, Verdict};
    let store = keys();
    let mut node = server();
    node.set_keys(keys());
    node.set_listener(SocketId(1), Some(1));
    assert_eq!(node.listener_key(SocketId(1)), Some(1));
    let signed = |key: u32, mode: Mode, xmt: u64| {
        let mut out = [0u8; 128];
        let n = sign(&store, key, &request(mode, xmt), &mut out).expect("sign");
        out[..n].to_vec()
    };
    // Unsigned: dropped, not answered.
    assert_eq!(exchange(&mut node, ip(3), &request(Mode::Client, 1)), None);
    assert_eq!(
        counters(&node).dropped(DropReason::Unauthenticated),
        1,
        "{:?}",
        counters(&node)
    );
    // Signed with the listener's key: a signed answer.
    let reply = exchange(&mut node, ip(3), &signed(1, Mode::Client, 2)).expect("reply");
    assert_eq!(verify(&store, &reply), Verdict::Ok { key_id: 1 });
    // Another trusted key, an untrusted one, a bad digest: crypto-NAKs.
    let mut bad = signed(1, Mode::Client, 3);
    let n = bad.len();
    bad[n - 1] ^= 1;
    for req in [signed(2, Mode::Client, 4), signed(3, Mode::Client, 5), bad] {
        let nak = exchange(&mut node, ip(3), &req).expect("crypto-NAK");
        assert_eq!(verify(&store, &nak), Verdict::CryptoNak);
    }
    assert_eq!(counters(&node).dropped(DropReason::BadMac), 3);
    // Mode 1 from an unknown peer: unsigned or with another key, nothing
    // and no association; with the listener's key, a passive association.
    assert_eq!(
        exchange(&mut node, ip(4), &request(Mode::SymmetricActive, 6)),
        None
    );
    assert_eq!(
        exchange(&mut node, ip(4), &signed(2, Mode::SymmetricActive, 7)),
        None
    );
    assert_eq!(node.sessions(Instant::ZERO).count(), 0);
    let answer = exchange(&mut node, ip(4), &signed(1, Mode::SymmetricActive, 8)).expect("mode 2");
    assert_eq!(verify(&store, &answer), Verdict::Ok { key_id: 1 });
    assert_eq!(node.sessions(Instant::ZERO).count(), 1);
    let c = counters(&node);
    assert_eq!(c.dropped(DropReason::Unauthenticated), 2);
    assert_eq!(c.dropped(DropReason::BadMac), 4);
    // Another listener of the same node serves everyone, and the key can
    // be taken off again.
    let other = RecvMeta {
        socket: SocketId(2),
        ..meta(ip(5), 40_000)
    };
    node.handle_datagram(Instant::ZERO, &other, &request(Mode::Client, 9));
    let mut buf = [0u8; 128];
    assert!(node
        .poll_transmit(NtpTimestamp::from_unix(1_800_000_000, 1), &mut buf)
        .is_some());
    node.set_listener(SocketId(1), None);
    assert!(exchange(&mut node, ip(3), &request(Mode::Client, 10)).is_some());
}

#[test]
fn trusted_mode1_mobilises_a_passive_peer_without_a_peer_rule() {
    use strata_engine::auth::{sign, verify, Verdict};
    let mut node = server();
    node.set_keys(keys());
    node.set_access(
        InstanceId::DEFAULT,
        vec![AccessRule {
            prefix: ip(0),
            prefix_len: 24,
            level: AccessLevel::Synchronization,
        }],
    );
    let plain = request(Mode::SymmetricActive, 77);
    // Unsigned: a stateless mode-2 answer, no association.
    let reply = exchange(&mut node, ip(4), &plain).expect("stateless answer");
    assert_eq!(verify(&keys(), &reply), Verdict::None);
    assert_eq!(node.sessions(Instant::ZERO).count(), 0);
    // Signed with a trusted key: a passive association that signs.
    let mut req = [0u8; 128];
    let n = sign(&keys(), 1, &plain, &mut req).expect("sign");
    let answer = exchange(&mut node, ip(5), &req[..n]).expect("passive answer");
    assert_eq!(node.sessions(Instant::ZERO).count(), 1);
    assert_eq!(verify(&keys(), &answer), Verdict::Ok { key_id: 1 });
    // An untrusted key mobilises nothing.
    let n = sign(&keys(), 3, &plain, &mut req).expect("sign");
    let _ = exchange(&mut node, ip(6), &req[..n]);
    assert_eq!(node.sessions(Instant::ZERO).count(), 1);
}

#[test]
fn trusted_mode5_is_accepted_without_allow_unauthenticated() {
    use strata_engine::auth::sign;
    use strata_engine::BroadcastClientConfig;
    let mut node = Node::new(NodeConfig::default(), rng(2));
    node.set_keys(keys());
    node.set_broadcast_client(InstanceId::DEFAULT, Some(BroadcastClientConfig::default()));
    let mode5 = |xmt: u32| {
        let mut buf = vec![0u8; HEADER_LEN];
        let repr = NtpRepr {
            leap: Leap::NoWarning,
            mode: Mode::Broadcast,
            stratum: 2,
            reference_timestamp: NtpTimestamp::from_unix(1_799_999_000, 0),
            ..NtpRepr::client_request(6, NtpTimestamp::from_unix(1_800_000_000, xmt))
        };
        repr.emit(&mut NtpPacket::new_unchecked(&mut buf[..]));
        buf
    };
    let from = |last: u8| RecvMeta {
        listener: false,
        src: SocketAddr::new(ip(last), 123),
        dst_ip: Some("224.0.1.1".parse().expect("ip")),
        ..meta(ip(last), 123)
    };
    // Unsigned, and signed with an untrusted key: refused.
    node.handle_datagram(Instant::ZERO, &from(1), &mode5(1));
    let mut signed = [0u8; 128];
    let n = sign(&keys(), 3, &mode5(2), &mut signed).expect("sign");
    node.handle_datagram(Instant::ZERO, &from(1), &signed[..n]);
    assert_eq!(node.sessions(Instant::ZERO).count(), 0);
    let c = counters(&node);
    assert_eq!(c.dropped(DropReason::Unauthenticated), 1);
    assert_eq!(c.dropped(DropReason::BadMac), 1);
    // Signed with a trusted key: a broadcast client association that then
    // refuses the same server's unsigned packets.
    let n = sign(&keys(), 1, &mode5(3), &mut signed).expect("sign");
    node.handle_datagram(Instant::ZERO, &from(1), &signed[..n]);
    assert_eq!(node.sessions(Instant::ZERO).count(), 1);
    node.handle_datagram(Instant::from_secs_f64(64.0), &from(1), &mode5(4));
    assert_eq!(counters(&node).dropped(DropReason::Unauthenticated), 2);
}

#[test]
fn a_keyed_peer_counts_the_crypto_nak_that_answers_its_mode_1() {
    let mut peer = Node::new(NodeConfig::default(), rng(2));
    peer.set_keys(keys());
    let id = peer.add_peer(client_to(ip(1)), Instant::ZERO);
    assert!(peer.set_association_key(id, Some(2)));
    // The stranger answers no calibration request.
    assert!(peer.set_calibrate(id, Calibrate::BestEffort));
    let mut stranger = server();
    let from_stranger = RecvMeta {
        listener: false,
        src: SocketAddr::new(ip(1), 123),
        dst_ip: Some(ip(2)),
        ..meta(ip(1), 123)
    };
    // The calibration volley goes unanswered; then mode 1.
    let mut buf = [0u8; 256];
    let mode1 = (0..20)
        .find_map(|_| {
            next_poll(&mut peer);
            let t = peer.poll_transmit(NtpTimestamp::from_unix(1_800_000_000, 0), &mut buf)?;
            (buf[0] & 7 == 1).then(|| buf[..t.len].to_vec())
        })
        .expect("a mode-1 packet after the volley");
    assert_eq!(mode1.len(), HEADER_LEN + 20, "signed with the CMAC key");
    // A crypto-NAK for another packet is a spoofed KoD.
    let mut other = mode1.clone();
    other[40..48].copy_from_slice(&[0x55; 8]);
    let forged = exchange(&mut stranger, ip(2), &other).expect("crypto-NAK");
    assert_eq!(forged[0] & 7, 2, "mode 2");
    peer.handle_datagram(Instant::ZERO, &from_stranger, &forged);
    assert_eq!(counters(&peer).dropped(DropReason::SpoofedKod), 1);
    // The one answering our mode 1 is counted as a crypto-NAK.
    let nak = exchange(&mut stranger, ip(2), &mode1).expect("crypto-NAK");
    peer.handle_datagram(Instant::ZERO, &from_stranger, &nak);
    assert_eq!(counters(&peer).dropped(DropReason::CryptoNak), 1);
    assert_eq!(counters(&stranger).dropped(DropReason::BadMac), 2);
    assert_eq!(
        peer.sessions(Instant::ZERO).next().expect("session").reach,
        0
    );
}

/// Runs host `i`'s timers until it has a symmetric (mode 1 or 2) packet to
/// send, and returns it (other packets are lost).
fn next_symmetric(net: &mut support::Net, i: usize) -> Vec<u8> {
    let t = net.t;
    let h = &mut net.hosts[i];
    for _ in 0..200 {
        let mut buf = [0u8; 256];
        while let Some(tx) = h.node.poll_transmit(h.clock.stamp(t), &mut buf) {
            if matches!(buf[0] & 7, 1 | 2) {
                return buf[..tx.len].to_vec();
            }
        }
        let deadline = h.node.poll_timeout().expect("a deadline");
        h.node.handle_timeout(deadline);
    }
    panic!("no symmetric packet");
}

#[test]
fn keyed_peers_recover_from_crossing_packets() {
    peers_recover_from_crossing_packets(true);
}

#[test]
fn unkeyed_peers_recover_from_crossing_packets() {
    peers_recover_from_crossing_packets(false);
}

/// Both peers send at the same moment once; the exchange must recover at
/// the next poll, signed or not.
fn peers_recover_from_crossing_packets(keyed: bool) {
    use support::{addr, lab_config, lab_node, server_node, Host, Net, SimClock};
    // a: client of a stratum-1 server and symmetric active toward b;
    // b: no sources, its passive association mobilised by a's mode 1
    // (signed, or allowed unsigned by b's `peer` access rule).
    let mut a = lab_node(0.128, 2.0, 1);
    a.add_client(lab_config(addr(1), true), Instant::ZERO);
    let id = a.add_peer(lab_config(addr(3), false), Instant::ZERO);
    let mut b = lab_node(0.128, 2.0, 2);
    if keyed {
        a.set_keys(keys());
        assert!(a.set_association_key(id, Some(2)));
        b.set_keys(keys());
    } else {
        b.set_access(
            InstanceId::DEFAULT,
            vec![AccessRule {
                prefix: addr(2).ip(),
                prefix_len: 32,
                level: AccessLevel::Peer,
            }],
        );
    }
    let mut net = Net::new(
        vec![
            Host::new(server_node(1), SimClock::new(0.0, 0.0), 1),
            Host::new(a, SimClock::new(0.3, 25.0), 2),
            Host::new(b, SimClock::new(-0.2, -10.0), 3),
        ],
        0.000_1,
    );
    net.run_until(30.0);
    let events_before = net.hosts[2].events.len();
    let bogus_before = counters(&net.hosts[2].node).dropped(DropReason::Bogus);
    // Both peers send at the same moment: each packet echoes the other's
    // previous one, so both are bogus on arrival.
    let from_a = next_symmetric(&mut net, 1);
    let from_b = next_symmetric(&mut net, 2);
    let t = net.t;
    for (to, src, packet) in [(2usize, 2u8, &from_a), (1, 3, &from_b)] {
        let h = &mut net.hosts[to];
        let m = RecvMeta {
            src: addr(src),
            dst_ip: Some(h.addr.ip()),
            rx_time: h.clock.stamp(t),
            ..meta(addr(src).ip(), 123)
        };
        h.node
            .handle_datagram(Instant::from_secs_f64(t), &m, packet);
    }
    assert_eq!(
        counters(&net.hosts[2].node).dropped(DropReason::Bogus),
        bogus_before + 1
    );
    // The next exchange echoes the crossing packets: no lasting loss, the
    // passive association stays.
    net.run_until(40.0);
    let b = &net.hosts[2];
    assert!(
        !b.events[events_before..]
            .iter()
            .any(|e| matches!(e, strata_engine::Event::Demobilized { .. })),
        "{:?}",
        &b.events[events_before..]
    );
    assert_eq!(
        counters(&b.node).dropped(DropReason::Bogus),
        bogus_before + 1
    );
    let s = b
        .node
        .sessions(net.now())
        .next()
        .expect("passive association");
    assert_eq!(s.mode, strata_engine::AssociationMode::SymmetricPassive);
    assert!(s.reach.count_ones() >= 7, "reach {:o}", s.reach);
    assert!(b.clock.error(net.t).abs() < 1e-3);
    // Over a long run the jittered polls cross now and then; each costs a
    // sample, never the association.
    net.run_until(600.0);
    let b = &net.hosts[2];
    assert!(!b.events[events_before..]
        .iter()
        .any(|e| matches!(e, strata_engine::Event::Demobilized { .. })));
    assert!(b.clock.error(net.t).abs() < 1e-3);
}

#[test]
fn keyed_symmetric_polls_take_jitter() {
    use support::{addr, lab_config, lab_node};
    let mut a = lab_node(0.128, 2.0, 7);
    a.set_keys(keys());
    let id = a.add_peer(lab_config(addr(3), false), Instant::ZERO);
    assert!(a.set_association_key(id, Some(2)));
    assert!(a.set_calibrate(id, Calibrate::BestEffort));
    // Nobody answers: after the calibration volley, mode 1 every poll.
    let mut sends = Vec::new();
    let mut buf = [0u8; 256];
    for _ in 0..400 {
        let deadline = a.poll_timeout().expect("deadline");
        a.handle_timeout(deadline);
        while a
            .poll_transmit(NtpTimestamp::from_unix(1_800_000_000, 0), &mut buf)
            .is_some()
        {
            if buf[0] & 7 == 1 {
                sends.push(deadline.as_secs_f64());
            }
        }
    }
    let gaps: Vec<f64> = sends.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() > 50, "{} mode-1 packets", sends.len());
    // poll -2: 0.25 s, lengthened by up to 255/4096 of it, never shortened.
    let longest = 0.25 * (1.0 + 255.0 / 4096.0);
    assert!(
        gaps.iter()
            .all(|g| (0.25 - 1e-9..=longest + 1e-9).contains(g)),
        "{gaps:?}"
    );
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
    assert!(
        sorted.len() > 20,
        "{} distinct gaps: {gaps:?}",
        sorted.len()
    );
}
