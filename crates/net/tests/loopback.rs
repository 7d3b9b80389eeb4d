//! Loopback tests in the default namespace: round trips with kernel
//! timestamps and packet info, source address selection, empty sockets,
//! truncation, multicast argument checks, device binding and the errors
//! for missing devices and namespaces.
#![cfg(target_os = "linux")]

mod common;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::{is_root, recv_timeout, RECV_TIMEOUT};
use strata_net::{
    device_ifindexes, ifindex, in_netns, is_truncated, netns_exists, HostTime, NetError, Placement,
    SocketOptions, TimestampSource, Transmit, UdpSocket,
};

fn open(local: &str) -> UdpSocket {
    UdpSocket::open(&SocketOptions::new(local.parse().unwrap())).unwrap()
}

/// Sends to itself and checks everything `recv` reports.
fn round_trip(local: &str, expect_dst: IpAddr) {
    let sock = open(local);
    assert!(sock.kernel_timestamps());
    assert_eq!(sock.placement(), &Placement::Default);
    let addr = sock.local_addr().unwrap();
    assert_ne!(addr.port(), 0);
    let payload = b"strata loopback";
    let sent = sock.send(payload, &Transmit::to(addr)).unwrap();
    assert_eq!(sent, payload.len());

    let mut buf = [0u8; 128];
    let meta = recv_timeout(&sock, &mut buf, RECV_TIMEOUT).unwrap();
    let now = HostTime::now();
    assert_eq!(meta.len, payload.len());
    assert_eq!(&buf[..meta.len], payload);
    assert_eq!(meta.src, addr);
    assert_eq!(meta.dst_ip, Some(expect_dst));
    assert_eq!(meta.ifindex, Some(ifindex("lo").unwrap()));
    assert_eq!(meta.ts_source, TimestampSource::Kernel);
    let age = now.as_unix_nanos() - meta.rx_time.as_unix_nanos();
    assert!(
        (0..1_000_000_000).contains(&age),
        "kernel timestamp {:?} is {age} ns before now {now:?}",
        meta.rx_time
    );
}

#[test]
fn v4_round_trip_has_kernel_timestamp_and_pktinfo() {
    round_trip("127.0.0.1:0", IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn v6_round_trip_has_kernel_timestamp_and_pktinfo() {
    round_trip("[::1]:0", IpAddr::V6(Ipv6Addr::LOCALHOST));
}

#[test]
fn wildcard_socket_reports_destination_and_chooses_source() {
    let server = open("0.0.0.0:0");
    let client = open("127.0.0.1:0");
    let server_port = server.local_addr().unwrap().port();
    let client_addr = client.local_addr().unwrap();
    let mut buf = [0u8; 64];

    // A request to 127.0.0.3 shows that address as dst_ip at the server.
    let to_server = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 3), server_port));
    client.send(b"req", &Transmit::to(to_server)).unwrap();
    let req = recv_timeout(&server, &mut buf, RECV_TIMEOUT).unwrap();
    assert_eq!(req.src, client_addr);
    assert_eq!(req.dst_ip, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))));

    // The reply leaves from the address the request came to.
    server.send(b"reply", &Transmit::reply_to(&req)).unwrap();
    let reply = recv_timeout(&client, &mut buf, RECV_TIMEOUT).unwrap();
    assert_eq!(&buf[..reply.len], b"reply");
    assert_eq!(reply.src, to_server);

    // An explicit source address (and interface) is honoured too.
    let tx = Transmit {
        dst: client_addr,
        src_ip: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
        ifindex: Some(ifindex("lo").unwrap()),
    };
    server.send(b"from .2", &tx).unwrap();
    let meta = recv_timeout(&client, &mut buf, RECV_TIMEOUT).unwrap();
    assert_eq!(
        meta.src,
        SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), server_port))
    );
}

#[test]
fn v6_wildcard_socket_chooses_source() {
    let server = open("[::]:0");
    let client = open("[::1]:0");
    let server_port = server.local_addr().unwrap().port();
    let tx = Transmit {
        dst: client.local_addr().unwrap(),
        src_ip: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ifindex: None,
    };
    server.send(b"v6", &tx).unwrap();
    let mut buf = [0u8; 16];
    let meta = recv_timeout(&client, &mut buf, RECV_TIMEOUT).unwrap();
    assert_eq!(
        meta.src,
        SocketAddr::from((Ipv6Addr::LOCALHOST, server_port))
    );
}

#[test]
fn source_of_other_family_is_invalid_input() {
    let sock = open("127.0.0.1:0");
    let tx = Transmit {
        dst: sock.local_addr().unwrap(),
        src_ip: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ifindex: None,
    };
    let err = sock.send(b"x", &tx).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn empty_socket_would_block() {
    let sock = open("127.0.0.1:0");
    let mut buf = [0u8; 16];
    let err = sock.recv(&mut buf).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn truncated_datagram_is_reported_and_socket_stays_usable() {
    let sock = open("127.0.0.1:0");
    let addr = sock.local_addr().unwrap();
    sock.send(&[7u8; 100], &Transmit::to(addr)).unwrap();
    sock.send(b"ok", &Transmit::to(addr)).unwrap();
    let mut small = [0u8; 10];
    let err = recv_timeout(&sock, &mut small, RECV_TIMEOUT).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(is_truncated(&err), "{err}");
    let meta = recv_timeout(&sock, &mut small, RECV_TIMEOUT).unwrap();
    assert_eq!(&small[..meta.len], b"ok");
}

#[test]
fn multicast_argument_checks() {
    let v4 = open("127.0.0.1:0");
    assert!(matches!(
        v4.join_multicast(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 0),
        Err(NetError::NotMulticast(_))
    ));
    assert!(matches!(
        v4.join_multicast("ff02::101".parse().unwrap(), 0),
        Err(NetError::FamilyMismatch { .. })
    ));
    v4.set_multicast_ttl(1).unwrap();
    v4.set_multicast_loop(false).unwrap();
    v4.set_multicast_if(ifindex("lo").unwrap()).unwrap();
    let v6 = open("[::1]:0");
    v6.set_multicast_ttl(1).unwrap();
    v6.set_multicast_loop(true).unwrap();
    assert!(matches!(
        v4.set_multicast_ttl(1000),
        Err(NetError::Io { .. })
    ));
}

#[test]
fn reuse_port_allows_two_sockets_on_one_port() {
    let mut opts = SocketOptions::new("127.0.0.1:0".parse().unwrap());
    opts.reuse_port = true;
    let first = UdpSocket::open(&opts).unwrap();
    opts.local = first.local_addr().unwrap();
    let second = UdpSocket::open(&opts).unwrap();
    assert_eq!(second.local_addr().unwrap(), opts.local);
    assert!(second.kernel_timestamps());
}

#[test]
fn bind_error_names_the_address() {
    // 192.0.2.1 (TEST-NET-1) is not a local address; nothing is sent.
    let local: SocketAddr = "192.0.2.1:0".parse().unwrap();
    match UdpSocket::open(&SocketOptions::new(local)) {
        Err(err @ NetError::Io { .. }) => {
            assert!(err.to_string().contains("192.0.2.1"), "{err}");
            let source = std::error::Error::source(&err).unwrap();
            let io = source.downcast_ref::<io::Error>().unwrap();
            assert_eq!(io.kind(), io::ErrorKind::AddrNotAvailable);
        }
        other => panic!("expected an Io error, got {other:?}"),
    }
}

#[test]
fn missing_device_is_reported() {
    assert!(matches!(
        ifindex("strata-nodev0"),
        Err(NetError::NoSuchDevice(name)) if name == "strata-nodev0"
    ));
    assert!(matches!(ifindex(""), Err(NetError::NoSuchDevice(_))));
    for dev in ["strata-nodev0", "", "a-name-that-is-too-long-for-linux"] {
        let mut opts = SocketOptions::new("127.0.0.1:0".parse().unwrap());
        opts.placement = Placement::Device(dev.to_owned());
        match UdpSocket::open(&opts) {
            Err(NetError::NoSuchDevice(name)) => assert_eq!(name, dev),
            other => panic!("device {dev:?}: expected NoSuchDevice, got {other:?}"),
        }
    }
}

#[test]
fn a_device_without_lower_devices_is_only_itself() {
    assert_eq!(
        device_ifindexes("lo").unwrap(),
        vec![ifindex("lo").unwrap()]
    );
    assert!(matches!(
        device_ifindexes("strata-nodev0"),
        Err(NetError::NoSuchDevice(name)) if name == "strata-nodev0"
    ));
}

#[test]
fn bind_to_lo_device() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut opts = SocketOptions::new("127.0.0.1:0".parse().unwrap());
    opts.placement = Placement::Device("lo".to_owned());
    let sock = UdpSocket::open(&opts).unwrap();
    assert_eq!(sock.placement(), &Placement::Device("lo".to_owned()));
    let addr = sock.local_addr().unwrap();
    sock.send(b"lo", &Transmit::to(addr)).unwrap();
    let mut buf = [0u8; 8];
    let meta = recv_timeout(&sock, &mut buf, RECV_TIMEOUT).unwrap();
    assert_eq!(&buf[..meta.len], b"lo");
    assert_eq!(meta.ifindex, Some(ifindex("lo").unwrap()));
}

#[test]
fn missing_namespace_is_reported() {
    let name = format!("strata-nons-{}", std::process::id());
    assert!(!netns_exists(&name));
    assert!(matches!(
        in_netns(&name, || ()),
        Err(NetError::NoSuchNamespace(n)) if n == name
    ));
    let mut opts = SocketOptions::new("127.0.0.1:0".parse().unwrap());
    opts.placement = Placement::Netns(name.clone());
    match UdpSocket::open(&opts) {
        Err(err @ NetError::NoSuchNamespace(_)) => assert!(err.to_string().contains(&name)),
        other => panic!("expected NoSuchNamespace, got {other:?}"),
    }
    for bad in ["", "..", "../../proc/self/ns/net"] {
        assert!(!netns_exists(bad));
        assert!(matches!(
            in_netns(bad, || ()),
            Err(NetError::NoSuchNamespace(_))
        ));
    }
}

#[test]
fn loopback_interface_address_by_family() {
    assert_eq!(
        strata_net::interface_address("lo", false).unwrap(),
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    );
    if let Ok(v6) = strata_net::interface_address("lo", true) {
        assert_eq!(v6, IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    assert!(strata_net::is_local_address(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap());
    assert!(!strata_net::is_local_address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77))).unwrap());
    assert!(matches!(
        strata_net::interface_address("no-such-dev0", false),
        Err(strata_net::NetError::NoSuchDevice(_))
    ));
}
