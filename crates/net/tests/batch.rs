//! Loopback tests of the batch helpers: `recv_batch` (`recvmmsg`) reports
//! every datagram with its source, destination, interface and kernel
//! timestamp; `send_batch` (`sendmmsg`) sends each datagram to its own
//! destination from the source address its packet info names, skips a
//! datagram the kernel refuses, and both sockets modes (non-blocking and
//! blocking with a timeout) end a receive with `WouldBlock` when nothing
//! comes.
#![cfg(target_os = "linux")]

mod common;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{recv_timeout, RECV_TIMEOUT};
use strata_net::{
    ifindex, HostTime, RecvBatch, SendBatch, SocketOptions, TimestampSource, Transmit, UdpSocket,
};

fn open(local: &str) -> UdpSocket {
    UdpSocket::open(&SocketOptions::new(local.parse().unwrap())).unwrap()
}

/// One received datagram: source, destination, ifindex, timestamp
/// source and payload.
type Got = (
    SocketAddr,
    Option<IpAddr>,
    Option<u32>,
    TimestampSource,
    Vec<u8>,
);

/// Receives batches until `want` datagrams came or the timeout passed.
fn collect(sock: &UdpSocket, batch: &mut RecvBatch, want: usize) -> Vec<Got> {
    sock.set_blocking_recv(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + RECV_TIMEOUT;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        match sock.recv_batch(batch) {
            Ok(n) => {
                assert_eq!(n, batch.len());
                for i in 0..n {
                    let (meta, data) = batch.get(i).unwrap();
                    assert!(!batch.is_truncated(i));
                    let age = HostTime::now().as_unix_nanos() - meta.rx_time.as_unix_nanos();
                    assert!((0..5_000_000_000).contains(&age), "rx time {age} ns ago");
                    got.push((
                        meta.src,
                        meta.dst_ip,
                        meta.ifindex,
                        meta.ts_source,
                        data.to_vec(),
                    ));
                }
                assert!(batch.get(n).is_none());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("recv_batch: {e}"),
        }
    }
    got
}

#[test]
fn recv_batch_reports_every_datagram_with_its_metadata() {
    let server = open("127.0.0.1:0");
    let addr = server.local_addr().unwrap();
    let clients: Vec<UdpSocket> = (2..6u8)
        .map(|last| open(&format!("127.0.0.{last}:0")))
        .collect();
    for (i, c) in clients.iter().enumerate() {
        for k in 0..3u8 {
            let payload = [u8::try_from(i).unwrap(), k, 0xaa];
            c.send(&payload, &Transmit::to(addr)).unwrap();
        }
    }
    let mut batch = RecvBatch::new(8, 64);
    let got = collect(&server, &mut batch, 12);
    assert_eq!(got.len(), 12);
    let lo = ifindex("lo").unwrap();
    for (i, c) in clients.iter().enumerate() {
        let from_c: Vec<_> = got
            .iter()
            .filter(|g| g.0 == c.local_addr().unwrap())
            .collect();
        assert_eq!(from_c.len(), 3, "client {i}");
        for (k, g) in from_c.iter().enumerate() {
            assert_eq!(
                g.4,
                vec![u8::try_from(i).unwrap(), u8::try_from(k).unwrap(), 0xaa]
            );
            assert_eq!(g.1, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            assert_eq!(g.2, Some(lo));
            assert_eq!(g.3, TimestampSource::Kernel);
        }
    }
}

#[test]
fn recv_batch_v6() {
    let server = open("[::1]:0");
    let client = open("[::1]:0");
    client
        .send(b"six", &Transmit::to(server.local_addr().unwrap()))
        .unwrap();
    let mut batch = RecvBatch::new(4, 64);
    let got = collect(&server, &mut batch, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, client.local_addr().unwrap());
    assert_eq!(got[0].1, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert_eq!(got[0].3, TimestampSource::Kernel);
    assert_eq!(got[0].4, b"six");
}

#[test]
fn long_datagrams_are_flagged_not_fatal() {
    let server = open("127.0.0.1:0");
    let client = open("127.0.0.1:0");
    let addr = server.local_addr().unwrap();
    client.send(&[7u8; 100], &Transmit::to(addr)).unwrap();
    client.send(&[8u8; 10], &Transmit::to(addr)).unwrap();
    let mut batch = RecvBatch::new(4, 48);
    server
        .set_blocking_recv(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + RECV_TIMEOUT;
    let mut seen = Vec::new();
    while seen.len() < 2 && Instant::now() < deadline {
        if let Ok(n) = server.recv_batch(&mut batch) {
            for i in 0..n {
                let (_, data) = batch.get(i).unwrap();
                seen.push((batch.is_truncated(i), data.len(), data[0]));
            }
        }
    }
    assert_eq!(seen, vec![(true, 48, 7), (false, 10, 8)]);
}

#[test]
fn empty_socket_would_block_in_both_modes() {
    let server = open("127.0.0.1:0");
    let mut batch = RecvBatch::new(4, 48);
    let e = server.recv_batch(&mut batch).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    server
        .set_blocking_recv(Some(Duration::from_millis(50)))
        .unwrap();
    let started = Instant::now();
    let e = server.recv_batch(&mut batch).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    assert!(started.elapsed() >= Duration::from_millis(40));
    assert!(batch.is_empty());
    // `send` stays non-blocking and works on the blocking socket.
    let peer = open("127.0.0.1:0");
    server
        .send(b"x", &Transmit::to(peer.local_addr().unwrap()))
        .unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(recv_timeout(&peer, &mut buf, RECV_TIMEOUT).unwrap().len, 1);
}

#[test]
fn send_batch_uses_each_transmit() {
    // A wildcard sender: packet info picks the source address per datagram.
    let sender = open("0.0.0.0:0");
    let port = sender.local_addr().unwrap().port();
    let receivers: Vec<UdpSocket> = (0..3).map(|_| open("127.0.0.1:0")).collect();
    let mut batch = SendBatch::new(8, 48);
    for (i, r) in receivers.iter().enumerate() {
        let src = Ipv4Addr::new(127, 0, 0, 10 + u8::try_from(i).unwrap());
        let tx = Transmit {
            dst: r.local_addr().unwrap(),
            src_ip: Some(IpAddr::V4(src)),
            ifindex: None,
        };
        assert!(batch.push(tx, |slot| {
            slot[..4].copy_from_slice(&[1, 2, 3, u8::try_from(i).unwrap()]);
            Some(4)
        }));
    }
    // A datagram the kernel refuses (IPv6 destination on an IPv4 socket)
    // between good ones is skipped.
    let refused = Transmit::to("[::1]:9".parse().unwrap());
    assert!(batch.push(refused, |_| Some(1)));
    let last = open("127.0.0.1:0");
    assert!(
        batch.push(Transmit::to(last.local_addr().unwrap()), |slot| {
            slot[0] = 9;
            Some(1)
        })
    );
    assert_eq!(sender.send_batch(&mut batch).unwrap(), 4);
    let mut buf = [0u8; 64];
    for (i, r) in receivers.iter().enumerate() {
        let meta = recv_timeout(r, &mut buf, RECV_TIMEOUT).unwrap();
        assert_eq!(&buf[..meta.len], &[1, 2, 3, u8::try_from(i).unwrap()]);
        let src = Ipv4Addr::new(127, 0, 0, 10 + u8::try_from(i).unwrap());
        assert_eq!(meta.src, SocketAddr::new(IpAddr::V4(src), port));
    }
    let meta = recv_timeout(&last, &mut buf, RECV_TIMEOUT).unwrap();
    assert_eq!((meta.len, buf[0]), (1, 9));
    // Sending the same batch again sends the same datagrams.
    assert_eq!(sender.send_batch(&mut batch).unwrap(), 4);
    batch.clear();
    assert_eq!(sender.send_batch(&mut batch).unwrap(), 0);
}

#[test]
fn send_batch_v6_with_source() {
    let sender = open("[::]:0");
    let receiver = open("[::1]:0");
    let mut batch = SendBatch::new(2, 48);
    let tx = Transmit {
        dst: receiver.local_addr().unwrap(),
        src_ip: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ifindex: Some(ifindex("lo").unwrap()),
    };
    assert!(batch.push(tx, |slot| {
        slot[..2].copy_from_slice(b"v6");
        Some(2)
    }));
    assert_eq!(sender.send_batch(&mut batch).unwrap(), 1);
    let mut buf = [0u8; 16];
    let meta = recv_timeout(&receiver, &mut buf, RECV_TIMEOUT).unwrap();
    assert_eq!(&buf[..meta.len], b"v6");
    assert_eq!(meta.src.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(meta.src.port(), sender.local_addr().unwrap().port());
}
