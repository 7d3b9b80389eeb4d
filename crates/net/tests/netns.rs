//! Root-only tests in network namespaces this test creates (and always
//! deletes): sockets opened inside a namespace, IPv4 multicast on its
//! loopback device and IPv6 multicast on a veth pair inside it, and the lower devices of an
//! upper device.
#![cfg(target_os = "linux")]

mod common;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;

use common::{is_root, recv_timeout, NetnsGuard, RECV_TIMEOUT};
use strata_net::{
    device_ifindexes, ifindex, in_netns, netns_exists, NetError, Placement, SocketOptions,
    TimestampSource, Transmit, UdpSocket,
};

/// The inode of the calling thread's network namespace.
fn current_netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

#[test]
fn socket_opened_inside_namespace() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = NetnsGuard::new("sock");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["addr", "add", "10.200.77.1/32", "dev", "lo"]);
    assert!(netns_exists(&ns.name));

    let outside = current_netns_inode();
    let inside = in_netns(&ns.name, current_netns_inode).unwrap();
    assert_ne!(inside, outside);
    assert_eq!(
        current_netns_inode(),
        outside,
        "caller thread changed namespace"
    );

    let local: SocketAddr = "10.200.77.1:0".parse().unwrap();
    // The address exists only inside the namespace.
    match UdpSocket::open(&SocketOptions::new(local)) {
        Err(NetError::Io { source, .. }) => {
            assert_eq!(source.kind(), io::ErrorKind::AddrNotAvailable);
        }
        other => panic!("binding {local} outside the namespace: {other:?}"),
    }
    let mut opts = SocketOptions::new(local);
    opts.placement = Placement::Netns(ns.name.clone());
    let sock = UdpSocket::open(&opts).unwrap();
    assert_eq!(sock.placement(), &opts.placement);

    // The socket keeps working after the helper thread is gone.
    let addr = sock.local_addr().unwrap();
    sock.send(b"inside", &Transmit::to(addr)).unwrap();
    let mut buf = [0u8; 16];
    let meta = recv_timeout(&sock, &mut buf, RECV_TIMEOUT).unwrap();
    assert_eq!(&buf[..meta.len], b"inside");
    assert_eq!(meta.dst_ip, Some(IpAddr::V4(Ipv4Addr::new(10, 200, 77, 1))));
    assert_eq!(meta.ts_source, TimestampSource::Kernel);
}

#[test]
fn multicast_on_namespace_loopback() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = NetnsGuard::new("mcast");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["link", "set", "lo", "multicast", "on"]);
    ns.ip(&["route", "add", "224.0.0.0/4", "dev", "lo"]);
    let group = Ipv4Addr::new(224, 0, 1, 1);

    let placement = Placement::Netns(ns.name.clone());
    let mut opts = SocketOptions::new("0.0.0.0:0".parse().unwrap());
    opts.placement = placement.clone();
    let receiver = UdpSocket::open(&opts).unwrap();
    let sender = UdpSocket::open(&opts).unwrap();
    let lo = in_netns(&ns.name, || ifindex("lo")).unwrap().unwrap();

    receiver.join_multicast(IpAddr::V4(group), lo).unwrap();
    sender.set_multicast_if(lo).unwrap();
    sender.set_multicast_ttl(1).unwrap();
    sender.set_multicast_loop(true).unwrap();

    let port = receiver.local_addr().unwrap().port();
    let dst = SocketAddr::from((group, port));
    sender.send(b"mode 5", &Transmit::to(dst)).unwrap();

    let mut buf = [0u8; 16];
    let meta = recv_timeout(&receiver, &mut buf, RECV_TIMEOUT).unwrap();
    assert_eq!(&buf[..meta.len], b"mode 5");
    assert_eq!(meta.dst_ip, Some(IpAddr::V4(group)));
    assert_eq!(meta.ifindex, Some(lo));
    assert_eq!(meta.src.port(), sender.local_addr().unwrap().port());
    // A reply to a multicast datagram does not use the group as source.
    assert_eq!(Transmit::reply_to(&meta).src_ip, None);

    // IP_MULTICAST_ALL is off: a socket on the same port that did not join
    // the group gets nothing. Loopback delivers to every member before
    // send() returns, so the first socket receiving proves the second
    // would have it by now.
    let mut same_port = opts.clone();
    same_port.local = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let bystander = UdpSocket::open(&same_port).unwrap();
    sender.send(b"again", &Transmit::to(dst)).unwrap();
    let meta = recv_timeout(&receiver, &mut buf, RECV_TIMEOUT).unwrap();
    assert_eq!(&buf[..meta.len], b"again");
    let err = bystander.recv(&mut buf).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn ipv6_multicast_in_namespace() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // Linux does not loop IPv6 multicast back through lo, so this uses a
    // veth pair that lives entirely inside the namespace (deleted with it);
    // IPV6_MULTICAST_LOOP delivers the local copy.
    let ns = NetnsGuard::new("mcast6");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&[
        "link",
        "add",
        "strata-v0",
        "type",
        "veth",
        "peer",
        "name",
        "strata-v1",
    ]);
    ns.ip(&["link", "set", "strata-v0", "up"]);
    ns.ip(&["link", "set", "strata-v1", "up"]);
    ns.ip(&["addr", "add", "fd00:200::1/64", "dev", "strata-v0", "nodad"]);
    let group: Ipv6Addr = "ff05::101".parse().unwrap();

    let mut opts = SocketOptions::new("[::]:0".parse().unwrap());
    opts.placement = Placement::Netns(ns.name.clone());
    let receiver = UdpSocket::open(&opts).unwrap();
    let sender = UdpSocket::open(&opts).unwrap();
    let v0 = in_netns(&ns.name, || ifindex("strata-v0"))
        .unwrap()
        .unwrap();

    receiver.join_multicast(IpAddr::V6(group), v0).unwrap();
    sender.set_multicast_if(v0).unwrap();
    sender.set_multicast_ttl(1).unwrap();
    sender.set_multicast_loop(true).unwrap();

    let port = receiver.local_addr().unwrap().port();
    let dst = SocketAddr::from((group, port));
    sender.send(b"mode 5 v6", &Transmit::to(dst)).unwrap();

    let mut buf = [0u8; 16];
    let meta = recv_timeout(&receiver, &mut buf, RECV_TIMEOUT).unwrap();
    assert_eq!(&buf[..meta.len], b"mode 5 v6");
    assert_eq!(meta.dst_ip, Some(IpAddr::V6(group)));
    assert_eq!(meta.ifindex, Some(v0));
    assert_eq!(meta.ts_source, TimestampSource::Kernel);
}

#[test]
fn namespace_is_gone_after_guard_drops() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let name = {
        let ns = NetnsGuard::new("drop");
        assert!(netns_exists(&ns.name));
        ns.name.clone()
    };
    assert!(!netns_exists(&name));

    // The guard also cleans up when the test fails.
    let mut created = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = NetnsGuard::new("panic");
        created.clone_from(&ns.name);
        assert!(netns_exists(&ns.name));
        panic!("simulated test failure");
    }));
    assert!(result.is_err());
    assert!(!created.is_empty());
    assert!(!netns_exists(&created));
}

/// Set in the copy of this test binary that `lower_devices_are_listed` runs inside its
/// namespace: the device whose ifindexes that copy checks.
const LOWER_CHILD: &str = "STRATA_NETTEST_LOWER_OF";

#[test]
fn lower_devices_are_listed() {
    if let Ok(dev) = std::env::var(LOWER_CHILD) {
        // Inside the namespace, with its sysfs (`ip netns exec` mounts it).
        let got = device_ifindexes(&dev).unwrap();
        assert_eq!(got, vec![ifindex(&dev).unwrap(), ifindex("v0").unwrap()]);
        assert_eq!(
            device_ifindexes("v0").unwrap(),
            vec![ifindex("v0").unwrap()]
        );
        return;
    }
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // A macvlan's lower device shows in sysfs as a VRF's enslaved interfaces do.
    let ns = NetnsGuard::new("lower");
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["link", "add", "m0", "link", "v0", "type", "macvlan"]);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "lower_devices_are_listed", "--nocapture"])
        .env(LOWER_CHILD, "m0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}
