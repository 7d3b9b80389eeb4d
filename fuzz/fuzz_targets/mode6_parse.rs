//! Fuzz target: control messages (mode 6). Parsing arbitrary bytes never
//! panics and whatever parses re-emits to a message that parses to the
//! same representation; a node answering them (from loopback, so every
//! well-formed request is answered) never panics, answers only in
//! fragments of at most 468 data octets, and answers an error with a bare
//! 12-octet header.
#![no_main]

use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use strata_engine::{InstanceId, Instant, Node, NodeConfig, RecvMeta, SocketId};
use strata_wire::{ControlPacket, ControlRepr, NtpTimestamp, CONTROL_MAX_DATA};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = ControlPacket::new_checked(data) {
        if let Ok(repr) = ControlRepr::parse(&packet) {
            let mut out = vec![0u8; repr.buffer_len()];
            let n = repr.emit(&mut out).expect("room for the message");
            let again = ControlPacket::new_checked(&out[..n]).expect("re-check");
            assert_eq!(ControlRepr::parse(&again).expect("re-parse"), repr);
        }
    }
    let mut node = Node::new(
        NodeConfig {
            local_stratum: Some(1),
            ..NodeConfig::default()
        },
        <rand_chacha::ChaCha8Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(1),
    );
    let meta = RecvMeta {
        instance: InstanceId::DEFAULT,
        socket: SocketId(0),
        listener: true,
        src: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000),
        dst_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ifindex: None,
        rx_time: NtpTimestamp::from_unix(1_800_000_000, 0),
    };
    let mut request = data.to_vec();
    if let Some(first) = request.first_mut() {
        *first = (*first & !7) | 6;
    }
    node.handle_datagram(Instant::ZERO, &meta, &request);
    let mut buf = [0u8; 1500];
    while let Some(tx) = node.poll_transmit(meta.rx_time, &mut buf) {
        let answer = ControlPacket::new_checked(&buf[..tx.len]).expect("a whole answer");
        let repr = ControlRepr::parse(&answer).expect("an answer parses");
        assert!(repr.response);
        assert!(repr.data.len() <= CONTROL_MAX_DATA);
        if repr.error {
            assert_eq!(tx.len, 12);
        }
    }
});
