//! Batched receive and send on Linux: `recvmmsg` with `SCM_TIMESTAMPNS`
//! and `IP_PKTINFO`/`IPV6_PKTINFO` per datagram, `sendmmsg` with an
//! optional packet-info control message per datagram, both over the
//! preallocated buffers of [`RecvBatch`] and [`SendBatch`].
//!
//! The `mmsghdr` and `iovec` arrays point into the batch's buffers; they
//! are rebuilt on the stack for every call (at most [`MAX_BATCH`] entries),
//! so no pointer outlives the call and the batches stay plain owned data.
// The syscalls need raw pointers; each unsafe block is small and says why
// it is sound.
#![allow(unsafe_code)]
// `msg_controllen`, `msg_iovlen` and `cmsg_len` are `size_t` with glibc but
// other types with musl: the conversions are kept for both.
#![allow(clippy::useless_conversion)]

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::UdpSocket;
use crate::batch::{CmsgBuf, MAX_BATCH};
use crate::{HostTime, RecvBatch, RecvMeta, SendBatch, TimestampSource, Transmit};

/// An all-zero `sockaddr_storage` (the unspecified family).
pub(crate) fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: `sockaddr_storage` is plain old data (integers and byte
    // padding); all-zero bytes are a valid value of it.
    unsafe { std::mem::zeroed() }
}

fn zeroed_headers() -> [libc::mmsghdr; MAX_BATCH] {
    // SAFETY: `mmsghdr` holds integers and raw pointers; all-zero bytes are
    // a valid value (null pointers, zero lengths), never dereferenced as is.
    unsafe { std::mem::zeroed() }
}

fn empty_iovecs() -> [libc::iovec; MAX_BATCH] {
    [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_BATCH]
}

fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

impl UdpSocket {
    /// Switches the socket to blocking receives that give up after
    /// `timeout` (`SO_RCVTIMEO`; `None` waits forever), for a worker thread
    /// that calls [`UdpSocket::recv_batch`] in a loop and checks for a stop
    /// request between calls. [`UdpSocket::send`] and [`UdpSocket::recv`]
    /// stay non-blocking.
    ///
    /// # Errors
    ///
    /// The error from `fcntl` or `setsockopt`.
    pub fn set_blocking_recv(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket.set_read_timeout(timeout)?;
        self.socket.set_nonblocking(false)
    }

    /// Receives up to `batch.capacity()` datagrams in one `recvmmsg` call
    /// (`MSG_WAITFORONE`: on a blocking socket it waits for the first one
    /// only) and returns how many arrived; read them with
    /// [`RecvBatch::get`]. Each carries the same [`RecvMeta`] as
    /// [`UdpSocket::recv`] would give: the kernel timestamp when there is
    /// one, else the time read right after the call.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] when nothing is queued (non-blocking)
    /// or the receive timeout passed; otherwise the error from `recvmmsg`
    /// (`EINTR` is retried). A datagram longer than a slot is not an
    /// error: it is flagged ([`RecvBatch::is_truncated`]).
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.len = 0;
        let n = batch.capacity().min(MAX_BATCH);
        let slot_len = batch.slot_len;
        let mut headers = zeroed_headers();
        let mut iovecs = empty_iovecs();
        let bufs = batch.bufs.as_mut_ptr();
        for i in 0..n {
            iovecs[i] = libc::iovec {
                // In bounds: `bufs` holds `capacity * slot_len` bytes.
                iov_base: bufs.wrapping_add(i * slot_len).cast(),
                iov_len: slot_len,
            };
            let hdr = &mut headers[i].msg_hdr;
            hdr.msg_name = std::ptr::addr_of_mut!(batch.names[i]).cast();
            hdr.msg_namelen = socklen::<libc::sockaddr_storage>();
            hdr.msg_iov = std::ptr::addr_of_mut!(iovecs[i]);
            hdr.msg_iovlen = 1;
            hdr.msg_control = batch.cmsgs[i].0.as_mut_ptr().cast();
            hdr.msg_controllen = size_of::<CmsgBuf>().try_into().unwrap_or(0);
        }
        let vlen = libc::c_uint::try_from(n).unwrap_or(1);
        let received = loop {
            // SAFETY: `headers[..n]` are initialised `mmsghdr`s whose name,
            // iovec and control pointers point into `batch.names`,
            // `iovecs` and `batch.cmsgs` (and the iovecs into `batch.bufs`)
            // with the lengths given; all of it is exclusively borrowed and
            // outlives the call, and the kernel writes at most those lengths.
            // A null timeout is allowed.
            let rc = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    headers.as_mut_ptr(),
                    vlen,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            match usize::try_from(rc) {
                Ok(count) => break count.min(n),
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        };
        // Read only when a datagram has no kernel timestamp.
        let mut software = None;
        for (i, header) in headers.iter().enumerate().take(received) {
            let len = usize::try_from(header.msg_len).unwrap_or(0);
            let mut meta = RecvMeta {
                len: len.min(slot_len),
                src: storage_addr(&batch.names[i], header.msg_hdr.msg_namelen)
                    .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
                dst_ip: None,
                ifindex: None,
                rx_time: HostTime { secs: 0, nanos: 0 },
                ts_source: TimestampSource::Software,
            };
            read_cmsgs(&header.msg_hdr, &mut meta);
            if meta.ts_source == TimestampSource::Software {
                meta.rx_time = *software.get_or_insert_with(HostTime::now);
            }
            batch.truncated[i] = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            batch.metas[i] = meta;
        }
        batch.len = received;
        Ok(received)
    }

    /// Sends every datagram queued in `batch` with `sendmmsg`, each to its
    /// [`Transmit::dst`] and, when it names a source address or interface,
    /// with `IP_PKTINFO`/`IPV6_PKTINFO`. Returns how many were sent. The
    /// call blocks on a blocking socket whose send buffer is full. A
    /// datagram the kernel refuses (for example a family mismatch) is
    /// skipped and the rest are still sent; the batch is left as it was.
    ///
    /// # Errors
    ///
    /// Only when nothing could be sent and the first refusal was an error
    /// other than a per-datagram one: that error (e.g.
    /// [`io::ErrorKind::WouldBlock`] on a non-blocking socket whose buffer
    /// is full).
    pub fn send_batch(&self, batch: &mut SendBatch) -> io::Result<usize> {
        let n = batch.len.min(MAX_BATCH);
        let slot_len = batch.slot_len;
        let mut headers = zeroed_headers();
        let mut iovecs = empty_iovecs();
        let bufs = batch.bufs.as_mut_ptr();
        for i in 0..n {
            iovecs[i] = libc::iovec {
                // In bounds: `bufs` holds `capacity * slot_len` bytes and
                // `lens[i] <= slot_len`.
                iov_base: bufs.wrapping_add(i * slot_len).cast(),
                iov_len: batch.lens[i],
            };
            let tx = batch.txs[i];
            let namelen = write_storage(&mut batch.names[i], tx.dst);
            let hdr = &mut headers[i].msg_hdr;
            hdr.msg_name = std::ptr::addr_of_mut!(batch.names[i]).cast();
            hdr.msg_namelen = namelen;
            hdr.msg_iov = std::ptr::addr_of_mut!(iovecs[i]);
            hdr.msg_iovlen = 1;
            if tx.src_ip.is_some() || tx.ifindex.is_some() {
                hdr.msg_control = batch.cmsgs[i].0.as_mut_ptr().cast();
                hdr.msg_controllen = size_of::<CmsgBuf>().try_into().unwrap_or(0);
                let used = write_pktinfo(hdr, &tx);
                hdr.msg_controllen = used.try_into().unwrap_or(0);
                if used == 0 {
                    hdr.msg_control = std::ptr::null_mut();
                }
            }
        }
        let mut start = 0;
        let mut sent = 0;
        let mut first_error = None;
        while start < n {
            let vlen = libc::c_uint::try_from(n - start).unwrap_or(1);
            // SAFETY: `headers[start..n]` are initialised `mmsghdr`s whose
            // name, iovec and control pointers point into `batch.names`,
            // `iovecs`, `batch.cmsgs` and `batch.bufs` with the lengths
            // given; all of it outlives the call and the kernel only reads
            // it (and writes each `msg_len`).
            let rc = unsafe {
                libc::sendmmsg(
                    self.socket.as_raw_fd(),
                    headers.as_mut_ptr().wrapping_add(start),
                    vlen,
                    0,
                )
            };
            match usize::try_from(rc) {
                Ok(0) => break,
                Ok(k) => {
                    sent += k;
                    start += k;
                }
                Err(_) => {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => {}
                        // The whole socket cannot take more now.
                        Some(libc::EAGAIN | libc::ENOBUFS) => {
                            first_error.get_or_insert(e);
                            break;
                        }
                        // This datagram is refused: skip it.
                        _ => {
                            first_error.get_or_insert(e);
                            start += 1;
                        }
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

/// The socket address in `storage` (`len` bytes filled by the kernel).
fn storage_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = usize::try_from(len).ok()?;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: `sockaddr_storage` is large enough and aligned for
            // every socket address type, and the kernel wrote a
            // `sockaddr_in` (family AF_INET, length checked above).
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read(std::ptr::from_ref(storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a `sockaddr_in6` (family AF_INET6).
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read(std::ptr::from_ref(storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `storage`; returns its length.
fn write_storage(storage: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or(0),
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is large enough and aligned for a
            // `sockaddr_in`; we own it exclusively.
            unsafe { std::ptr::write(std::ptr::from_mut(storage).cast(), sin) };
            socklen::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::sa_family_t::try_from(libc::AF_INET6).unwrap_or(0),
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for a `sockaddr_in6`.
            unsafe { std::ptr::write(std::ptr::from_mut(storage).cast(), sin6) };
            socklen::<libc::sockaddr_in6>()
        }
    }
}

/// Fills `meta`'s timestamp and packet info from the control messages of
/// a received `hdr`. A cut-short control buffer leaves what is missing at
/// its default (software time, no packet info).
fn read_cmsgs(hdr: &libc::msghdr, meta: &mut RecvMeta) {
    // SAFETY: `hdr.msg_control`/`msg_controllen` describe our control
    // buffer as the kernel filled it; CMSG_FIRSTHDR only reads the header.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: a non-null pointer from CMSG_FIRSTHDR/CMSG_NXTHDR points
        // to a complete, aligned `cmsghdr` inside the control buffer.
        let c = unsafe { &*cmsg };
        let data_len = usize::try_from(c.cmsg_len)
            .unwrap_or(0)
            .saturating_sub(cmsg_header_len());
        // SAFETY: CMSG_DATA of a valid header points just after it, inside
        // the buffer; reads below stay within `data_len` bytes.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        match (c.cmsg_level, c.cmsg_type) {
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS)
                if data_len >= size_of::<libc::timespec>() =>
            {
                // SAFETY: the kernel wrote a `timespec` here (length
                // checked); it may be unaligned, hence read_unaligned.
                let ts: libc::timespec = unsafe { std::ptr::read_unaligned(data.cast()) };
                if let Some(t) = u32::try_from(ts.tv_nsec)
                    .ok()
                    .and_then(|nanos| HostTime::new(ts.tv_sec, nanos))
                {
                    meta.rx_time = t;
                    meta.ts_source = TimestampSource::Kernel;
                }
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if data_len >= size_of::<libc::in_pktinfo>() => {
                // SAFETY: as above, an `in_pktinfo`.
                let info: libc::in_pktinfo = unsafe { std::ptr::read_unaligned(data.cast()) };
                meta.dst_ip = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
                meta.ifindex = u32::try_from(info.ipi_ifindex).ok();
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                if data_len >= size_of::<libc::in6_pktinfo>() =>
            {
                // SAFETY: as above, an `in6_pktinfo`.
                let info: libc::in6_pktinfo = unsafe { std::ptr::read_unaligned(data.cast()) };
                meta.dst_ip = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                meta.ifindex = Some(info.ipi6_ifindex);
            }
            _ => {}
        }
        // SAFETY: `cmsg` is a valid header of `hdr`'s buffer; CMSG_NXTHDR
        // returns the next one or null at the end of the buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
}

fn cmsg_header_len() -> usize {
    // SAFETY: CMSG_LEN only computes a length (unsafe in libc for no
    // reason of ours); CMSG_LEN(0) is the aligned header length.
    usize::try_from(unsafe { libc::CMSG_LEN(0) }).unwrap_or(0)
}

fn cmsg_space(len: libc::c_uint) -> usize {
    // SAFETY: CMSG_SPACE only computes a length.
    usize::try_from(unsafe { libc::CMSG_SPACE(len) }).unwrap_or(0)
}

/// Writes the packet-info control message for `tx` into `hdr`'s control
/// buffer; returns the bytes used (0 when `tx` cannot carry one, e.g. a
/// source of the other family: the kernel then chooses the source).
fn write_pktinfo(hdr: &mut libc::msghdr, tx: &Transmit) -> usize {
    let ifindex = tx.ifindex.unwrap_or(0);
    // SAFETY: `hdr.msg_control` points to our `CmsgBuf` (128 bytes, 8-byte
    // aligned) and `msg_controllen` is its size; CMSG_FIRSTHDR returns its
    // start or null if it is too small for a header.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    if cmsg.is_null() {
        return 0;
    }
    match tx.dst {
        SocketAddr::V4(_) => {
            let src = match tx.src_ip {
                None => Ipv4Addr::UNSPECIFIED,
                Some(IpAddr::V4(ip)) => ip,
                Some(IpAddr::V6(_)) => return 0,
            };
            let Ok(ipi_ifindex) = libc::c_int::try_from(ifindex) else {
                return 0;
            };
            let info = libc::in_pktinfo {
                ipi_ifindex,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let len = libc::c_uint::try_from(size_of::<libc::in_pktinfo>()).unwrap_or(0);
            // SAFETY: `cmsg` points to the start of our 128-byte buffer,
            // which holds CMSG_SPACE(size_of::<in_pktinfo>()) (32) bytes;
            // the header and data writes stay inside it.
            unsafe {
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(len).try_into().unwrap_or(0);
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
            }
            cmsg_space(len)
        }
        SocketAddr::V6(_) => {
            let src = match tx.src_ip {
                None => Ipv6Addr::UNSPECIFIED,
                Some(IpAddr::V6(ip)) => ip,
                Some(IpAddr::V4(_)) => return 0,
            };
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: src.octets(),
                },
                ipi6_ifindex: ifindex,
            };
            let len = libc::c_uint::try_from(size_of::<libc::in6_pktinfo>()).unwrap_or(0);
            // SAFETY: as above; CMSG_SPACE(size_of::<in6_pktinfo>()) is 40
            // bytes, inside the 128-byte buffer.
            unsafe {
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(len).try_into().unwrap_or(0);
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
            }
            cmsg_space(len)
        }
    }
}
