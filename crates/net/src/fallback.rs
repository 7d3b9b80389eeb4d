//! The portable fallback for operating systems other than Linux: plain UDP
//! sockets with software receive timestamps and no packet info. Device
//! binding and network namespaces are not available.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

use crate::{HostTime, NetError, Placement, RecvMeta, SocketOptions, TimestampSource, Transmit};

/// A non-blocking UDP socket (software timestamps only on this OS).
#[derive(Debug)]
pub struct UdpSocket {
    socket: std::net::UdpSocket,
    placement: Placement,
    local: SocketAddr,
}

impl UdpSocket {
    /// Switches the socket to blocking receives that give up after
    /// `timeout`; see the Linux version.
    ///
    /// # Errors
    ///
    /// The error from the socket call.
    pub fn set_blocking_recv(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.socket.set_read_timeout(timeout)?;
        self.socket.set_nonblocking(false)
    }

    /// Receives one datagram into the batch (no `recvmmsg` here); see the
    /// Linux version.
    ///
    /// # Errors
    ///
    /// As [`UdpSocket::recv`], except that truncation is flagged instead.
    pub fn recv_batch(&self, batch: &mut crate::RecvBatch) -> io::Result<usize> {
        batch.len = 0;
        let Some(slot) = batch.slot_mut(0) else {
            return Ok(0);
        };
        let capacity = slot.len();
        match self.recv(slot) {
            Ok(meta) => {
                batch.metas[0] = meta;
                batch.truncated[0] = false;
            }
            Err(e) if crate::is_truncated(&e) => {
                batch.metas[0].len = capacity;
                batch.truncated[0] = true;
            }
            Err(e) => return Err(e),
        }
        batch.len = 1;
        Ok(1)
    }

    /// Sends the batch one datagram at a time; see the Linux version.
    ///
    /// # Errors
    ///
    /// The first error when nothing was sent.
    pub fn send_batch(&self, batch: &mut crate::SendBatch) -> io::Result<usize> {
        let mut sent = 0;
        let mut first_error = None;
        for i in 0..batch.len() {
            if let Some((data, tx)) = batch.get(i) {
                match self.send(data, tx) {
                    Ok(_) => sent += 1,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) if sent == 0 => Err(e),
            _ => Ok(sent),
        }
    }
}

impl UdpSocket {
    /// Opens and binds a socket as `opts` describes.
    ///
    /// # Errors
    ///
    /// [`NetError::Unsupported`] for device or namespace placement,
    /// [`NetError::Io`] if a socket call fails.
    pub fn open(opts: &SocketOptions) -> Result<UdpSocket, NetError> {
        match &opts.placement {
            Placement::Default => {}
            Placement::Device(_) => return Err(NetError::Unsupported("binding to a device")),
            Placement::Netns(_) => return Err(NetError::Unsupported("network namespaces")),
        }
        let local = opts.local;
        let ctx = |what: &str| format!("{what} for a UDP socket on {local}");
        let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| NetError::io(ctx("creating a socket"), e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| NetError::io(ctx("setting non-blocking mode"), e))?;
        socket
            .set_reuse_address(true)
            .map_err(|e| NetError::io(ctx("setting SO_REUSEADDR"), e))?;
        if opts.broadcast {
            socket
                .set_broadcast(true)
                .map_err(|e| NetError::io(ctx("setting SO_BROADCAST"), e))?;
        }
        if local.is_ipv6() {
            socket
                .set_only_v6(true)
                .map_err(|e| NetError::io(ctx("setting IPV6_V6ONLY"), e))?;
        }
        socket
            .bind(&local.into())
            .map_err(|e| NetError::io(format!("binding UDP {local}"), e))?;
        let socket = std::net::UdpSocket::from(socket);
        let local = socket.local_addr().unwrap_or(local);
        Ok(UdpSocket {
            socket,
            placement: opts.placement.clone(),
            local,
        })
    }

    /// Receives one datagram into `buf` (software timestamp, no packet info).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] when no datagram is queued; otherwise
    /// the OS error. Truncation cannot be detected on this OS.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let (len, src) = self.socket.recv_from(buf)?;
        Ok(RecvMeta {
            len,
            src,
            dst_ip: None,
            ifindex: None,
            rx_time: HostTime::now(),
            ts_source: TimestampSource::Software,
        })
    }

    /// Sends `buf` to `tx.dst` (the source address and interface are chosen
    /// by the OS on this platform).
    ///
    /// # Errors
    ///
    /// The OS error, e.g. [`io::ErrorKind::WouldBlock`].
    pub fn send(&self, buf: &[u8], tx: &Transmit) -> io::Result<usize> {
        self.socket.send_to(buf, tx.dst)
    }

    /// The address the socket is bound to.
    ///
    /// # Errors
    ///
    /// The error from `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Where the socket lives (always [`Placement::Default`] here).
    #[must_use]
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Always false on this operating system.
    #[must_use]
    pub fn kernel_timestamps(&self) -> bool {
        false
    }

    /// Joins multicast `group` (IPv6 on interface `ifindex`; IPv4 on the
    /// default interface, as this OS has no `ip_mreqn`).
    ///
    /// # Errors
    ///
    /// [`NetError::NotMulticast`], [`NetError::FamilyMismatch`] or
    /// [`NetError::Io`].
    pub fn join_multicast(&self, group: IpAddr, ifindex: u32) -> Result<(), NetError> {
        if !group.is_multicast() {
            return Err(NetError::NotMulticast(group));
        }
        let result = match (group, self.local) {
            (IpAddr::V4(g), SocketAddr::V4(_)) => self
                .socket
                .join_multicast_v4(&g, &std::net::Ipv4Addr::UNSPECIFIED),
            (IpAddr::V6(g), SocketAddr::V6(_)) => self.socket.join_multicast_v6(&g, ifindex),
            _ => {
                return Err(NetError::FamilyMismatch {
                    addr: group,
                    local: self.local,
                })
            }
        };
        result.map_err(|e| NetError::io(format!("joining multicast group {group}"), e))
    }

    /// Not available on this operating system.
    ///
    /// # Errors
    ///
    /// Always [`NetError::Unsupported`].
    pub fn set_multicast_if(&self, _ifindex: u32) -> Result<(), NetError> {
        Err(NetError::Unsupported(
            "choosing the multicast interface by index",
        ))
    }

    /// Sets the multicast TTL (IPv4) or hop limit (IPv6).
    ///
    /// # Errors
    ///
    /// [`NetError::Io`] if the OS refuses.
    pub fn set_multicast_ttl(&self, ttl: u32) -> Result<(), NetError> {
        let socket = socket2::SockRef::from(&self.socket);
        let result = match self.local {
            SocketAddr::V4(_) => socket.set_multicast_ttl_v4(ttl),
            SocketAddr::V6(_) => socket.set_multicast_hops_v6(ttl),
        };
        result.map_err(|e| NetError::io(format!("setting the multicast TTL to {ttl}"), e))
    }

    /// Sets whether multicast datagrams sent by this host loop back locally.
    ///
    /// # Errors
    ///
    /// [`NetError::Io`] if the OS refuses.
    pub fn set_multicast_loop(&self, on: bool) -> Result<(), NetError> {
        let result = match self.local {
            SocketAddr::V4(_) => self.socket.set_multicast_loop_v4(on),
            SocketAddr::V6(_) => self.socket.set_multicast_loop_v6(on),
        };
        result.map_err(|e| NetError::io(format!("setting multicast loop to {on}"), e))
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for UdpSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

/// Not available on this operating system.
///
/// # Errors
///
/// Always [`NetError::Unsupported`].
pub fn ifindex(_name: &str) -> Result<u32, NetError> {
    Err(NetError::Unsupported("interface lookup"))
}

/// Not available on this operating system.
///
/// # Errors
///
/// Always [`NetError::Unsupported`].
pub fn interface_address(_name: &str, _v6: bool) -> Result<IpAddr, NetError> {
    Err(NetError::Unsupported("interface lookup"))
}

/// Not available on this operating system.
///
/// # Errors
///
/// Always [`NetError::Unsupported`].
pub fn is_local_address(_ip: IpAddr) -> Result<bool, NetError> {
    Err(NetError::Unsupported("interface lookup"))
}

/// Not available on this operating system.
///
/// # Errors
///
/// Always [`NetError::Unsupported`].
pub fn device_ifindexes(_name: &str) -> Result<Vec<u32>, NetError> {
    Err(NetError::Unsupported("interface lookup"))
}

/// Not available on this operating system.
///
/// # Errors
///
/// Always [`NetError::Unsupported`].
pub fn in_netns<F, R>(_name: &str, _f: F) -> Result<R, NetError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    Err(NetError::Unsupported("network namespaces"))
}

/// Always false on this operating system.
#[must_use]
pub fn netns_exists(_name: &str) -> bool {
    false
}
