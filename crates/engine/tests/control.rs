//! Read-only NTP control messages (mode 6): READSTAT and READVAR as ntpq
//! sends them, fragmentation, errors, access (closed by default), rate
//! limiting and per-instance views.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use strata_engine::{
    AccessLevel, AccessRule, ClientConfig, Counters, DropReason, InstanceId, Instant, Node,
    RateLimitConfig, RecvMeta, SocketId,
};
use strata_wire::{ControlPacket, ControlRepr, Leap, NtpTimestamp, Opcode, CONTROL_MAX_DATA};
use support::{addr, lab_config, lab_node, server_node, Host, Net, SimClock, EPOCH};

/// A client synchronised to a stratum-1 server at 10.200.1.1.
fn synced_client() -> Node {
    let mut client = lab_node(0.128, 2.0, 7);
    client.add_client(lab_config(addr(1), true), Instant::ZERO);
    let mut net = Net::new(
        vec![
            Host::new(server_node(1), SimClock::new(0.0, 0.0), 1),
            Host::new(client, SimClock::new(0.0, 0.0), 2),
        ],
        0.000_05,
    );
    net.run_until(30.0);
    let node = net.hosts.remove(1).node;
    assert!(node.status().synchronized, "the fixture synchronises");
    node
}

fn meta(instance: InstanceId, src: IpAddr) -> RecvMeta {
    RecvMeta {
        instance,
        socket: SocketId(0),
        listener: true,
        src: SocketAddr::new(src, 40000),
        dst_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 200, 1, 2))),
        ifindex: None,
        rx_time: NtpTimestamp::from_unix(EPOCH + 30, 0),
    }
}

fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// A request as ntpq builds it: version 2, data padded to 4 octets.
fn request(version: u8, opcode: u8, assoc: u16, data: &[u8]) -> Vec<u8> {
    let repr = ControlRepr {
        leap: Leap::NoWarning,
        version,
        response: false,
        error: false,
        more: false,
        opcode: Opcode::from(opcode),
        sequence: 77,
        status: 0,
        association_id: assoc,
        offset: 0,
        data,
    };
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut out).unwrap();
    out
}

/// One fragment of an answer.
#[derive(Debug)]
struct Fragment {
    leap: Leap,
    version: u8,
    error: bool,
    more: bool,
    opcode: Opcode,
    sequence: u16,
    status: u16,
    assoc: u16,
    offset: u16,
    data: Vec<u8>,
    len: usize,
}

/// Sends `data` from `src` and collects what the node answers.
fn ask(node: &mut Node, m: &RecvMeta, data: &[u8]) -> Vec<Fragment> {
    node.handle_datagram(Instant::from_secs_f64(30.0), m, data);
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    while let Some(tx) = node.poll_transmit(NtpTimestamp::from_unix(EPOCH + 30, 0), &mut buf) {
        if buf[0] & 7 != 6 {
            continue;
        }
        assert_eq!(tx.dst, m.src);
        let p = ControlPacket::new_checked(&buf[..tx.len]).unwrap();
        let r = ControlRepr::parse(&p).unwrap();
        assert!(r.response);
        out.push(Fragment {
            leap: r.leap,
            version: r.version,
            error: r.error,
            more: r.more,
            opcode: r.opcode,
            sequence: r.sequence,
            status: r.status,
            assoc: r.association_id,
            offset: r.offset,
            data: r.data.to_vec(),
            len: tx.len,
        });
    }
    out
}

/// The whole answer's data, checking offsets, the more bit and sizes.
fn reassemble(frags: &[Fragment]) -> Vec<u8> {
    assert!(!frags.is_empty(), "an answer");
    let mut data = Vec::new();
    for (i, f) in frags.iter().enumerate() {
        assert_eq!(usize::from(f.offset), data.len(), "contiguous offsets");
        assert_eq!(f.more, i + 1 < frags.len(), "more bit on all but the last");
        assert!(f.data.len() <= CONTROL_MAX_DATA);
        assert_eq!(f.len % 4, 0, "padded to 4 octets");
        data.extend_from_slice(&f.data);
    }
    data
}

fn vars(frags: &[Fragment]) -> Vec<(String, String)> {
    let text = String::from_utf8(reassemble(frags)).unwrap();
    text.split(", ")
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn get<'a>(vars: &'a [(String, String)], name: &str) -> &'a str {
    &vars.iter().find(|(k, _)| k == name).unwrap().1
}

fn counters(node: &Node, instance: InstanceId) -> Counters {
    node.instances()
        .find(|(id, ..)| *id == instance)
        .map(|(_, _, c)| c.clone())
        .unwrap()
}

#[test]
fn readstat_lists_associations_with_status_words() {
    let mut node = synced_client();
    let m = meta(InstanceId::DEFAULT, loopback());
    let frags = ask(&mut node, &m, &request(2, 1, 0, b""));
    assert_eq!(frags.len(), 1);
    let f = &frags[0];
    assert_eq!(
        (f.version, f.opcode, f.sequence),
        (2, Opcode::ReadStatus, 77)
    );
    assert!(!f.error);
    assert_eq!(f.leap, Leap::NoWarning);
    // Leap 0, clock source 6 (NTP).
    assert_eq!(f.status, 0x0600);
    assert_eq!(f.data.len(), 4);
    let id = u16::from_be_bytes([f.data[0], f.data[1]]);
    let word = u16::from_be_bytes([f.data[2], f.data[3]]);
    // Configured, reachable, selection 6 ('*', the system peer).
    assert_eq!(word >> 8, 0x80 | 0x10 | 6);
    // One association's status.
    let frags = ask(&mut node, &m, &request(2, 1, id, b""));
    assert_eq!((frags[0].status, frags[0].assoc), (word, id));
}

#[test]
fn readvar_system_and_named_variables() {
    let mut node = synced_client();
    let m = meta(InstanceId::DEFAULT, loopback());
    let frags = ask(&mut node, &m, &request(4, 2, 0, b""));
    assert_eq!(frags[0].version, 4, "answered with the request's version");
    let v = vars(&frags);
    assert_eq!(get(&v, "stratum"), "2");
    assert_eq!(get(&v, "refid"), "10.200.1.1");
    assert_eq!(get(&v, "leap"), "0");
    assert!(get(&v, "reftime").starts_with("0x"));
    assert_eq!(
        get(&v, "clock"),
        format!(
            "0x{:08x}.00000000",
            NtpTimestamp::from_unix(EPOCH + 30, 0).seconds()
        )
    );
    let offset_ms: f64 = get(&v, "offset").parse().unwrap();
    let status = node.status();
    assert!(
        (offset_ms - status.offset * 1e3).abs() < 1e-5,
        "milliseconds"
    );
    for name in [
        "version",
        "processor",
        "system",
        "precision",
        "rootdelay",
        "rootdisp",
        "peer",
        "tc",
        "frequency",
        "sys_jitter",
    ] {
        assert!(v.iter().any(|(k, _)| k == name), "{name}");
    }
    // Named variables, in the order asked, ntpq's padding ignored.
    let frags = ask(&mut node, &m, &request(2, 2, 0, b"offset,stratum\0\0"));
    let names: Vec<_> = vars(&frags).into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["offset", "stratum"]);
    // An unknown name: error 5.
    let frags = ask(&mut node, &m, &request(2, 2, 0, b"stratum,nonesuch"));
    assert!(frags[0].error);
    assert_eq!(frags[0].status >> 8, 5);
    assert!(frags[0].data.is_empty());
}

#[test]
fn readvar_association_fragments_and_matches_status() {
    let mut node = synced_client();
    let m = meta(InstanceId::DEFAULT, loopback());
    let session = node.sessions(Instant::from_secs_f64(30.0)).next().unwrap();
    let id = u16::try_from(session.id.0).unwrap();
    let frags = ask(&mut node, &m, &request(2, 2, id, b""));
    // The status word of an association's READVAR is its peer status
    // (ntpq's tally character comes from it).
    assert_eq!(frags.last().unwrap().status >> 8, 0x80 | 0x10 | 6);
    let v = vars(&frags);
    assert_eq!(get(&v, "srcadr"), "10.200.1.1");
    assert_eq!(get(&v, "srcport"), "123");
    assert_eq!(get(&v, "dstadr"), "10.200.1.2");
    assert_eq!(get(&v, "stratum"), "1");
    assert_eq!(get(&v, "hmode"), "3");
    assert_eq!(get(&v, "pmode"), "4");
    // Sub-second polls (2^-2 s here) read as 0, the least ntpq shows.
    assert_eq!(get(&v, "hpoll"), "0");
    assert_eq!(get(&v, "reach"), format!("{:#04x}", session.reach));
    let delay: f64 = get(&v, "delay").parse().unwrap();
    assert!((delay - session.delay * 1e3).abs() < 1e-5);
    assert_eq!(
        get(&v, "filtdelay").split_whitespace().count(),
        session.filter.len()
    );
    // Longer than one fragment in total? Then it was split; either way
    // the reassembly above checked offsets and the more bit.
    let total: usize = frags.iter().map(|f| f.data.len()).sum();
    assert_eq!(frags.len(), total.div_ceil(CONTROL_MAX_DATA));
    // An unknown association: error 4.
    let frags = ask(&mut node, &m, &request(2, 2, 999, b""));
    assert_eq!((frags[0].error, frags[0].status >> 8), (true, 4));
}

#[test]
fn long_answers_are_fragmented() {
    // Many associations make a long association list and long variables.
    let mut node = synced_client();
    for i in 0..150u16 {
        let cfg = ClientConfig {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 200, 9, 0)), 1000 + i),
            ..lab_config(addr(1), false)
        };
        node.add_client(cfg, Instant::from_secs_f64(30.0));
    }
    let m = meta(InstanceId::DEFAULT, loopback());
    let frags = ask(&mut node, &m, &request(2, 1, 0, b""));
    assert_eq!(reassemble(&frags).len(), 151 * 4);
    assert!(frags.len() >= 2);
    assert!(frags.iter().all(|f| f.status == frags[0].status));
}

#[test]
fn writes_unknown_opcodes_and_bad_requests() {
    let mut node = synced_client();
    let m = meta(InstanceId::DEFAULT, loopback());
    // WRITEVAR, WRITECLOCK, CONFIGURE: permission denied.
    for op in [3u8, 5, 8] {
        let frags = ask(&mut node, &m, &request(2, op, 0, b"stratum=1"));
        assert_eq!(frags.len(), 1);
        assert_eq!((frags[0].error, frags[0].status >> 8), (true, 1), "op {op}");
        assert_eq!(frags[0].len, 12, "an error is no larger than a request");
    }
    // MRU list and unknown opcodes: bad opcode.
    for op in [10u8, 12, 0, 31] {
        let frags = ask(&mut node, &m, &request(2, op, 0, b""));
        assert_eq!((frags[0].error, frags[0].status >> 8), (true, 3), "op {op}");
    }
    let before = counters(&node, InstanceId::DEFAULT);
    // A response, versions 1 and 5, truncated headers, a count beyond the
    // datagram, a fragmented request: nothing, counted.
    let mut response = request(2, 2, 0, b"");
    response[1] |= 0x80;
    let mut long_count = request(2, 2, 0, b"abcd");
    long_count[11] = 200;
    let mut more = request(2, 2, 0, b"");
    more[1] |= 0x20;
    for data in [
        &response[..],
        &request(1, 2, 0, b"")[..],
        &request(5, 2, 0, b"")[..],
        &request(2, 2, 0, b"")[..11],
        &long_count[..],
    ] {
        assert!(ask(&mut node, &m, data).is_empty());
    }
    let after = counters(&node, InstanceId::DEFAULT);
    assert_eq!(
        after.dropped(DropReason::UnexpectedMode) - before.dropped(DropReason::UnexpectedMode),
        1
    );
    assert_eq!(
        after.dropped(DropReason::BadVersion) - before.dropped(DropReason::BadVersion),
        2
    );
    assert_eq!(
        after.dropped(DropReason::Malformed) - before.dropped(DropReason::Malformed),
        2
    );
    // A fragmented request gets a format error.
    let frags = ask(&mut node, &m, &more);
    assert_eq!((frags[0].error, frags[0].status >> 8), (true, 2));
    // Mode 7 stays dropped.
    let mut private = request(2, 2, 0, b"");
    private[0] = (private[0] & !7) | 7;
    node.handle_datagram(Instant::from_secs_f64(30.0), &m, &private);
    assert_eq!(
        counters(&node, InstanceId::DEFAULT).dropped(DropReason::ControlMode),
        1
    );
}

#[test]
fn closed_by_default_and_query_level_opens() {
    let mut node = synced_client();
    let readvar = request(2, 2, 0, b"stratum");
    let remote = IpAddr::V4(Ipv4Addr::new(10, 200, 4, 2));
    let v6_loopback = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    // No rules: everyone gets time, but control answers only loopback.
    assert!(ask(&mut node, &meta(InstanceId::DEFAULT, remote), &readvar).is_empty());
    assert_eq!(
        counters(&node, InstanceId::DEFAULT).dropped(DropReason::AccessDenied),
        1
    );
    assert_eq!(
        ask(&mut node, &meta(InstanceId::DEFAULT, v6_loopback), &readvar).len(),
        1
    );
    // Not on a listener: dropped.
    let mut not_listener = meta(InstanceId::DEFAULT, loopback());
    not_listener.listener = false;
    assert!(ask(&mut node, &not_listener, &readvar).is_empty());

    let rule = |a: u8, level| AccessRule {
        prefix: IpAddr::V4(Ipv4Addr::new(10, 200, a, 0)),
        prefix_len: 24,
        level,
    };
    node.set_access(
        InstanceId::DEFAULT,
        vec![
            rule(3, AccessLevel::Server),
            rule(4, AccessLevel::Query),
            rule(5, AccessLevel::Synchronization),
            rule(6, AccessLevel::Peer),
        ],
    );
    for (a, answered) in [(3u8, true), (4, true), (5, false), (6, true), (7, false)] {
        let src = IpAddr::V4(Ipv4Addr::new(10, 200, a, 2));
        let got = ask(&mut node, &meta(InstanceId::DEFAULT, src), &readvar);
        assert_eq!(!got.is_empty(), answered, "10.200.{a}.2");
    }
    // Loopback matches no rule: still answered.
    assert_eq!(
        ask(&mut node, &meta(InstanceId::DEFAULT, loopback()), &readvar).len(),
        1
    );
}

#[test]
fn rate_limited_through_the_limiter() {
    let mut node = synced_client();
    node.set_rate_limit(Some(RateLimitConfig {
        interval: Duration::from_secs(60),
        burst: 2,
        max_clients: 16,
    }));
    let m = meta(InstanceId::DEFAULT, loopback());
    let answered = (0..5)
        .filter(|_| !ask(&mut node, &m, &request(2, 1, 0, b"")).is_empty())
        .count();
    assert!((1..5).contains(&answered), "limited: {answered} of 5");
    assert!(counters(&node, InstanceId::DEFAULT).dropped(DropReason::RateLimited) > 0);
}

#[test]
fn an_instance_sees_its_own_associations() {
    let mut node = synced_client();
    let vpn = node.add_instance("vpna");
    let cfg = ClientConfig {
        instance: vpn,
        ..lab_config(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 200, 7, 1)), 123),
            false,
        )
    };
    let id = node.add_client(cfg, Instant::from_secs_f64(30.0));
    let m = meta(vpn, loopback());
    let frags = ask(&mut node, &m, &request(2, 1, 0, b""));
    let list = reassemble(&frags);
    assert_eq!(list.len(), 4, "one association in vpna");
    assert_eq!(u32::from(u16::from_be_bytes([list[0], list[1]])), id.0);
    // The default instance's association is unknown there.
    let default_id = node
        .sessions(Instant::from_secs_f64(30.0))
        .find(|s| s.instance == InstanceId::DEFAULT)
        .unwrap()
        .id;
    let frags = ask(
        &mut node,
        &m,
        &request(2, 2, u16::try_from(default_id.0).unwrap(), b""),
    );
    assert_eq!((frags[0].error, frags[0].status >> 8), (true, 4));
}

#[test]
fn arbitrary_mode6_bytes_never_panic_nor_amplify_errors() {
    let mut node = synced_client();
    let m = meta(InstanceId::DEFAULT, loopback());
    let mut state = 0x1234_5678_u32;
    for len in 0..200usize {
        let mut data: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state.to_be_bytes()[0]
            })
            .collect();
        if let Some(b) = data.first_mut() {
            *b = (*b & !7) | 6;
        }
        for f in ask(&mut node, &m, &data) {
            if f.error {
                assert_eq!(f.len, 12);
            }
        }
    }
}
