//! The Linux implementation: `recvmsg`/`sendmsg` with control messages
//! (`SCM_TIMESTAMPNS`, `IP_PKTINFO`, `IPV6_PKTINFO`), `SO_BINDTODEVICE`,
//! multicast options, and namespace entry with `setns`.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn, SockaddrIn6, SockaddrStorage,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

use crate::{
    valid_netns_name, HostTime, NetError, Placement, RecvMeta, SocketOptions, TimestampSource,
    Transmit, NETNS_DIR,
};

mod mmsg;

pub(crate) use mmsg::zeroed_storage;

/// Longest interface name the kernel accepts (`IFNAMSIZ` minus the NUL).
const MAX_IFNAME_LEN: usize = 15;

/// A non-blocking UDP socket with receive timestamps and packet info.
///
/// Implements [`AsFd`] and [`AsRawFd`] so an event loop (for example
/// `tokio::io::unix::AsyncFd`) can wait for readiness; [`UdpSocket::recv`]
/// and [`UdpSocket::send`] return [`io::ErrorKind::WouldBlock`] when the
/// socket is not ready.
#[derive(Debug)]
pub struct UdpSocket {
    socket: Socket,
    placement: Placement,
    local: SocketAddr,
    kernel_timestamps: bool,
}

impl UdpSocket {
    /// Opens and binds a socket as `opts` describes.
    ///
    /// Sets `SO_REUSEADDR`, `SO_TIMESTAMPNS` (falling back to software
    /// timestamps if refused), `IP_PKTINFO` or `IPV6_RECVPKTINFO`,
    /// `IPV6_V6ONLY` for IPv6, `IP_MULTICAST_ALL` off for IPv4 (only groups
    /// this socket joined are delivered), `SO_REUSEPORT`/`SO_BROADCAST` when
    /// asked, and `SO_BINDTODEVICE` for [`Placement::Device`]. For
    /// [`Placement::Netns`] the socket is created inside that namespace.
    ///
    /// # Errors
    ///
    /// [`NetError::NoSuchDevice`] or [`NetError::NoSuchNamespace`] if the
    /// placement names something missing, [`NetError::Io`] if a socket call
    /// fails (for example the address is in use or not local).
    pub fn open(opts: &SocketOptions) -> Result<UdpSocket, NetError> {
        match &opts.placement {
            Placement::Netns(name) => in_netns(name, || open_here(opts))?,
            Placement::Default | Placement::Device(_) => open_here(opts),
        }
    }

    /// Receives one datagram into `buf`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] when no datagram is queued. A datagram
    /// longer than `buf` is consumed and reported as
    /// [`io::ErrorKind::InvalidData`] wrapping [`NetError::Truncated`]
    /// (see [`crate::is_truncated`]). Other errors come from `recvmsg`
    /// (`EINTR` is retried).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let capacity = buf.len();
        let mut cmsg_buf = nix::cmsg_space!(libc::timespec, libc::in6_pktinfo, libc::in_pktinfo);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = loop {
            match recvmsg::<SockaddrStorage>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_buf),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Err(Errno::EINTR) => {}
                other => break other?,
            }
        };
        let software_time = HostTime::now();
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                NetError::Truncated { capacity },
            ));
        }
        let src = msg
            .address
            .as_ref()
            .and_then(storage_to_socket_addr)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "datagram without a source address",
                )
            })?;
        let mut meta = RecvMeta {
            len: msg.bytes,
            src,
            dst_ip: None,
            ifindex: None,
            rx_time: software_time,
            ts_source: TimestampSource::Software,
        };
        // A cut-short control buffer (MSG_CTRUNC) leaves the defaults:
        // software time, no packet info.
        if let Ok(cmsgs) = msg.cmsgs() {
            for cmsg in cmsgs {
                match cmsg {
                    ControlMessageOwned::ScmTimestampns(ts) => {
                        if let Some(t) = u32::try_from(ts.tv_nsec())
                            .ok()
                            .and_then(|nanos| HostTime::new(ts.tv_sec(), nanos))
                        {
                            meta.rx_time = t;
                            meta.ts_source = TimestampSource::Kernel;
                        }
                    }
                    ControlMessageOwned::Ipv4PacketInfo(info) => {
                        meta.dst_ip = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            info.ipi_addr.s_addr,
                        ))));
                        meta.ifindex = u32::try_from(info.ipi_ifindex).ok();
                    }
                    ControlMessageOwned::Ipv6PacketInfo(info) => {
                        meta.dst_ip = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                        meta.ifindex = Some(info.ipi6_ifindex);
                    }
                    _ => {}
                }
            }
        }
        Ok(meta)
    }

    /// Sends `buf` as one datagram as `tx` describes, returning the number
    /// of bytes sent. Never blocks (`MSG_DONTWAIT`), whatever the socket's
    /// mode.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if `tx.src_ip` is of a different
    /// family than `tx.dst` or `tx.ifindex` is out of range;
    /// [`io::ErrorKind::WouldBlock`] if the send buffer is full; otherwise
    /// the error from `sendmsg` (`EINTR` is retried).
    pub fn send(&self, buf: &[u8], tx: &Transmit) -> io::Result<usize> {
        let iov = [IoSlice::new(buf)];
        let fd = self.socket.as_raw_fd();
        let want_pktinfo = tx.src_ip.is_some() || tx.ifindex.is_some();
        match tx.dst {
            SocketAddr::V4(dst) => {
                let src = match tx.src_ip {
                    None => Ipv4Addr::UNSPECIFIED,
                    Some(IpAddr::V4(ip)) => ip,
                    Some(IpAddr::V6(ip)) => return Err(family_mismatch(IpAddr::V6(ip), tx.dst)),
                };
                let info = libc::in_pktinfo {
                    ipi_ifindex: libc::c_int::try_from(tx.ifindex.unwrap_or(0))
                        .map_err(|_| invalid_ifindex(tx.ifindex))?,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(src).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
                let cmsgs: &[ControlMessage<'_>] = if want_pktinfo { &cmsg } else { &[] };
                send_retrying(fd, &iov, cmsgs, &SockaddrIn::from(dst))
            }
            SocketAddr::V6(dst) => {
                let src = match tx.src_ip {
                    None => Ipv6Addr::UNSPECIFIED,
                    Some(IpAddr::V6(ip)) => ip,
                    Some(IpAddr::V4(ip)) => return Err(family_mismatch(IpAddr::V4(ip), tx.dst)),
                };
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: src.octets(),
                    },
                    ipi6_ifindex: tx.ifindex.unwrap_or(0),
                };
                let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
                let cmsgs: &[ControlMessage<'_>] = if want_pktinfo { &cmsg } else { &[] };
                send_retrying(fd, &iov, cmsgs, &SockaddrIn6::from(dst))
            }
        }
    }

    /// The address the socket is bound to (with the real port if it was
    /// bound to port 0).
    ///
    /// # Errors
    ///
    /// The error from `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "local address is not an IP address",
            )
        })
    }

    /// Where the socket lives.
    #[must_use]
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// True if the kernel accepted `SO_TIMESTAMPNS`, so received datagrams
    /// normally carry [`TimestampSource::Kernel`] times.
    #[must_use]
    pub fn kernel_timestamps(&self) -> bool {
        self.kernel_timestamps
    }

    /// Joins multicast `group` on the interface with index `ifindex`
    /// (0 lets the kernel choose). IPv4 uses `ip_mreqn` with the index,
    /// IPv6 `ipv6_mreq`.
    ///
    /// # Errors
    ///
    /// [`NetError::NotMulticast`], [`NetError::FamilyMismatch`], or
    /// [`NetError::Io`] if the kernel refuses.
    pub fn join_multicast(&self, group: IpAddr, ifindex: u32) -> Result<(), NetError> {
        if !group.is_multicast() {
            return Err(NetError::NotMulticast(group));
        }
        let result = match (group, self.local) {
            (IpAddr::V4(g), SocketAddr::V4(_)) => self
                .socket
                .join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(ifindex)),
            (IpAddr::V6(g), SocketAddr::V6(_)) => self.socket.join_multicast_v6(&g, ifindex),
            _ => {
                return Err(NetError::FamilyMismatch {
                    addr: group,
                    local: self.local,
                })
            }
        };
        result.map_err(|e| {
            NetError::io(
                format!(
                    "joining multicast group {group} on interface {ifindex} ({})",
                    self.placement
                ),
                e,
            )
        })
    }

    /// Sets the interface multicast datagrams are sent from
    /// (`IP_MULTICAST_IF` with `ip_mreqn`, or `IPV6_MULTICAST_IF`).
    ///
    /// # Errors
    ///
    /// [`NetError::Io`] if the kernel refuses (e.g. no such interface).
    pub fn set_multicast_if(&self, ifindex: u32) -> Result<(), NetError> {
        let result = match self.local {
            SocketAddr::V4(_) => i32::try_from(ifindex)
                .map_err(|_| invalid_ifindex(Some(ifindex)))
                .and_then(|idx| set_ip_multicast_if_index(self.socket.as_fd(), idx)),
            SocketAddr::V6(_) => self.socket.set_multicast_if_v6(ifindex),
        };
        result.map_err(|e| {
            NetError::io(
                format!(
                    "setting the multicast interface to {ifindex} ({})",
                    self.placement
                ),
                e,
            )
        })
    }

    /// Sets the multicast TTL (IPv4) or hop limit (IPv6).
    ///
    /// # Errors
    ///
    /// [`NetError::Io`] if the kernel refuses (e.g. `ttl` above 255).
    pub fn set_multicast_ttl(&self, ttl: u32) -> Result<(), NetError> {
        let result = match self.local {
            SocketAddr::V4(_) => self.socket.set_multicast_ttl_v4(ttl),
            SocketAddr::V6(_) => self.socket.set_multicast_hops_v6(ttl),
        };
        result.map_err(|e| NetError::io(format!("setting the multicast TTL to {ttl}"), e))
    }

    /// Sets whether multicast datagrams sent by this host are looped back
    /// to local listeners.
    ///
    /// # Errors
    ///
    /// [`NetError::Io`] if the kernel refuses.
    pub fn set_multicast_loop(&self, on: bool) -> Result<(), NetError> {
        let result = match self.local {
            SocketAddr::V4(_) => self.socket.set_multicast_loop_v4(on),
            SocketAddr::V6(_) => self.socket.set_multicast_loop_v6(on),
        };
        result.map_err(|e| NetError::io(format!("setting multicast loop to {on}"), e))
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Creates the socket in the calling thread's namespace.
fn open_here(opts: &SocketOptions) -> Result<UdpSocket, NetError> {
    let local = opts.local;
    let placement = &opts.placement;
    let ctx = |what: &str| format!("{what} for a UDP socket on {local} in {placement}");
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| NetError::io(ctx("creating a socket"), e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| NetError::io(ctx("setting O_NONBLOCK"), e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| NetError::io(ctx("setting SO_REUSEADDR"), e))?;
    if opts.reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(|e| NetError::io(ctx("setting SO_REUSEPORT"), e))?;
    }
    if opts.broadcast {
        socket
            .set_broadcast(true)
            .map_err(|e| NetError::io(ctx("setting SO_BROADCAST"), e))?;
    }
    match local {
        SocketAddr::V4(_) => {
            socket
                .set_multicast_all_v4(false)
                .map_err(|e| NetError::io(ctx("clearing IP_MULTICAST_ALL"), e))?;
            setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)
                .map_err(|e| NetError::io(ctx("setting IP_PKTINFO"), e.into()))?;
        }
        SocketAddr::V6(_) => {
            socket
                .set_only_v6(true)
                .map_err(|e| NetError::io(ctx("setting IPV6_V6ONLY"), e))?;
            // IPV6_MULTICAST_ALL exists since Linux 4.20; older kernels
            // deliver all groups joined on the host, which is harmless.
            let _ = socket.set_multicast_all_v6(false);
            setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)
                .map_err(|e| NetError::io(ctx("setting IPV6_RECVPKTINFO"), e.into()))?;
        }
    }
    // Without SO_TIMESTAMPNS the socket still works: recv() then reads the
    // clock itself and marks the time Software.
    let kernel_timestamps = setsockopt(&socket, sockopt::ReceiveTimestampns, &true).is_ok();
    if let Placement::Device(dev) = placement {
        bind_to_device(&socket, dev)?;
    }
    socket
        .bind(&local.into())
        .map_err(|e| NetError::io(format!("binding UDP {local} in {placement}"), e))?;
    let local = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(local);
    Ok(UdpSocket {
        socket,
        placement: placement.clone(),
        local,
        kernel_timestamps,
    })
}

fn bind_to_device(socket: &Socket, dev: &str) -> Result<(), NetError> {
    if dev.is_empty() || dev.len() > MAX_IFNAME_LEN || dev.contains('\0') {
        // An empty name would remove the binding instead of setting one.
        return Err(NetError::NoSuchDevice(dev.to_owned()));
    }
    socket.bind_device(Some(dev.as_bytes())).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENODEV) {
            NetError::NoSuchDevice(dev.to_owned())
        } else {
            NetError::io(
                format!("binding a socket to device {dev:?} (SO_BINDTODEVICE)"),
                e,
            )
        }
    })
}

fn storage_to_socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        Some(SocketAddr::V4((*v4).into()))
    } else {
        addr.as_sockaddr_in6()
            .map(|v6| SocketAddr::V6((*v6).into()))
    }
}

fn send_retrying<S: nix::sys::socket::SockaddrLike>(
    fd: RawFd,
    iov: &[IoSlice<'_>],
    cmsgs: &[ControlMessage<'_>],
    dst: &S,
) -> io::Result<usize> {
    loop {
        // MSG_DONTWAIT: never blocks, also on a socket switched to blocking
        // receives for batch workers (`set_blocking_recv`).
        match sendmsg(fd, iov, cmsgs, MsgFlags::MSG_DONTWAIT, Some(dst)) {
            Err(Errno::EINTR) => {}
            other => return other.map_err(io::Error::from),
        }
    }
}

fn family_mismatch(src: IpAddr, dst: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("source address {src} does not match the family of destination {dst}"),
    )
}

fn invalid_ifindex(ifindex: Option<u32>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("interface index {ifindex:?} is out of range"),
    )
}

/// Sets `IP_MULTICAST_IF` by interface index (`struct ip_mreqn`), which
/// neither socket2 nor nix offer.
#[allow(unsafe_code)]
fn set_ip_multicast_if_index(fd: BorrowedFd<'_>, ifindex: i32) -> io::Result<()> {
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex,
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::ip_mreqn>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is a valid open socket for the duration of the call (it
    // is borrowed), the option value points to a live, initialised
    // `ip_mreqn` on our stack, and `len` is exactly its size; the kernel only
    // reads `len` bytes from it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            std::ptr::addr_of!(mreqn).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The index of the network device `name` (`if_nametoindex`), in the
/// calling thread's namespace (call it inside [`in_netns`] for another).
///
/// # Errors
///
/// [`NetError::NoSuchDevice`] if there is no such device.
pub fn ifindex(name: &str) -> Result<u32, NetError> {
    if name.is_empty() || name.len() > MAX_IFNAME_LEN || name.contains('\0') {
        return Err(NetError::NoSuchDevice(name.to_owned()));
    }
    match nix::net::if_::if_nametoindex(name) {
        Ok(idx) => NonZeroU32::new(idx)
            .map(NonZeroU32::get)
            .ok_or_else(|| NetError::NoSuchDevice(name.to_owned())),
        Err(Errno::ENODEV) => Err(NetError::NoSuchDevice(name.to_owned())),
        Err(e) => Err(NetError::io(
            format!("looking up the index of device {name:?}"),
            e.into(),
        )),
    }
}

/// An address of the network device `name` of one family (`getifaddrs`), in the calling
/// thread's namespace (call it inside [`in_netns`] for another): the one to send from when
/// traffic must leave from that device's address (e.g. a loopback or dummy interface of a
/// router). IPv6 link-local addresses are skipped (they need a scope); among several, the
/// first the kernel lists (normally the primary) is taken. The answer reflects the moment of
/// the call: call it again to follow address changes.
///
/// # Errors
///
/// [`NetError::NoSuchDevice`] if there is no such device, [`NetError::NoAddress`] if it
/// has no usable address of the family, [`NetError::Io`] if the addresses cannot be listed.
pub fn interface_address(name: &str, v6: bool) -> Result<IpAddr, NetError> {
    ifindex(name)?;
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| NetError::io("listing interface addresses (getifaddrs)", e.into()))?;
    let found = addrs
        .filter(|a| a.interface_name == name)
        .filter_map(|a| {
            let sa = a.address?;
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .find(|ip| match ip {
            IpAddr::V4(_) => !v6,
            IpAddr::V6(a) => v6 && (a.segments()[0] & 0xffc0) != 0xfe80,
        });
    found.ok_or_else(|| NetError::NoAddress {
        device: name.to_owned(),
        family: if v6 { "IPv6" } else { "IPv4" },
    })
}

/// Whether `ip` is an address of a network device in the calling thread's namespace
/// (`getifaddrs`; call it inside [`in_netns`] for another).
///
/// # Errors
///
/// [`NetError::Io`] if the addresses cannot be listed.
pub fn is_local_address(ip: IpAddr) -> Result<bool, NetError> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| NetError::io("listing interface addresses (getifaddrs)", e.into()))?;
    Ok(addrs.filter_map(|a| a.address).any(|sa| {
        sa.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())) == Some(ip)
            || sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())) == Some(ip)
    }))
}

/// The index of the network device `name` followed by those of its lower devices: for a
/// VRF (or a bridge, a bond) the interfaces enslaved to it, as `/sys/class/net/NAME/lower_*`
/// lists them. A socket bound to a VRF receives on its lower devices, so a packet's ifindex
/// may be any of these.
///
/// sysfs shows the namespace it was mounted in (normally the daemon's own), not the calling
/// thread's. Lower devices that vanish while being read are left out.
///
/// # Errors
///
/// [`NetError::NoSuchDevice`] if there is no device `name`.
pub fn device_ifindexes(name: &str) -> Result<Vec<u32>, NetError> {
    let mut out = vec![ifindex(name)?];
    if let Ok(entries) = std::fs::read_dir(Path::new("/sys/class/net").join(name)) {
        for entry in entries.flatten() {
            let entry = entry.file_name();
            let Some(lower) = entry.to_str().and_then(|n| n.strip_prefix("lower_")) else {
                continue;
            };
            if let Ok(i) = ifindex(lower) {
                out.push(i);
            }
        }
    }
    Ok(out)
}

/// Runs `f` on a short-lived helper thread that has entered
/// `/run/netns/NAME` (`setns` with `CLONE_NEWNET`), and returns its
/// result; the caller's threads never change namespace. Used to create
/// sockets inside a namespace (a socket keeps the namespace it was created
/// in).
///
/// # Errors
///
/// [`NetError::NoSuchNamespace`] if the namespace does not exist;
/// [`NetError::Io`] if it cannot be entered (entering needs
/// `CAP_SYS_ADMIN`) or the helper thread cannot be started.
///
/// # Panics
///
/// If `f` panics, the panic is resumed on the calling thread.
pub fn in_netns<F, R>(name: &str, f: F) -> Result<R, NetError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    if !valid_netns_name(name) {
        return Err(NetError::NoSuchNamespace(name.to_owned()));
    }
    let path = Path::new(NETNS_DIR).join(name);
    let ns = File::open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            NetError::NoSuchNamespace(name.to_owned())
        } else {
            NetError::io(format!("opening network namespace {}", path.display()), e)
        }
    })?;
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("strata-netns".to_owned())
            .spawn_scoped(scope, move || {
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    NetError::io(format!("entering network namespace {name:?}"), e.into())
                })?;
                Ok(f())
            })
            .map_err(|e| {
                NetError::io(
                    format!("starting a helper thread for network namespace {name:?}"),
                    e,
                )
            })?;
        match helper.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// True if the named network namespace exists (`/run/netns/NAME`).
#[must_use]
pub fn netns_exists(name: &str) -> bool {
    valid_netns_name(name) && Path::new(NETNS_DIR).join(name).exists()
}
