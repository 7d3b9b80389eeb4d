//! Batched UDP receive and send (`recvmmsg`/`sendmmsg` through `nix`) for
//! the server bench's load generator and reference reflector.
//!
//! [`RecvBatch`] owns its datagram buffers and headers; after
//! [`RecvBatch::recv`] the first `n` slots hold a datagram, its source
//! address and (when the socket has `SO_TIMESTAMPNS`/`IP_PKTINFO` on) the
//! kernel receive timestamp and destination address. [`send_batch`] sends
//! prepared datagrams in one `sendmmsg` call. The only allocation per call
//! is the small vector of `iovec`s that `nix`'s API needs for its borrows.

use std::{
    io::{IoSlice, IoSliceMut},
    net::Ipv4Addr,
    os::fd::RawFd,
};

use nix::{
    cmsg_space,
    sys::{
        socket::{
            recvmmsg, sendmmsg, ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders,
            SockaddrLike, SockaddrStorage,
        },
        time::TimeSpec,
    },
};

/// The largest datagram a batch slot holds (NTP requests are 48 bytes,
/// with extension fields and MACs well under this).
pub const SLOT_LEN: usize = 1024;

/// A received datagram's metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct Meta {
    /// Length of the datagram.
    pub len: usize,
    /// Source address, if the kernel gave one.
    pub src: Option<SockaddrStorage>,
    /// Kernel receive timestamp (`SO_TIMESTAMPNS`, CLOCK_REALTIME).
    pub rx: Option<TimeSpec>,
    /// Destination address (`IP_PKTINFO`).
    pub dst: Option<Ipv4Addr>,
}

/// Reusable buffers and headers for `recvmmsg`.
pub struct RecvBatch {
    headers: MultiHeaders<SockaddrStorage>,
    bufs: Vec<[u8; SLOT_LEN]>,
    meta: Vec<Meta>,
    n: usize,
}

impl RecvBatch {
    /// Room for `batch` datagrams (at least 1) with their control messages.
    pub fn new(batch: usize) -> RecvBatch {
        let batch = batch.max(1);
        let cmsg = cmsg_space!(TimeSpec, nix::libc::in_pktinfo);
        RecvBatch {
            headers: MultiHeaders::preallocate(batch, Some(cmsg)),
            bufs: vec![[0u8; SLOT_LEN]; batch],
            meta: vec![Meta::default(); batch],
            n: 0,
        }
    }

    /// One `recvmmsg` call on `fd` with `flags`; returns how many datagrams
    /// arrived.
    ///
    /// # Errors
    /// The `recvmmsg` error (`EAGAIN` when non-blocking and nothing is queued).
    pub fn recv(&mut self, fd: RawFd, flags: MsgFlags) -> nix::Result<usize> {
        self.n = 0;
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let results = recvmmsg(fd, &mut self.headers, iovs.iter_mut(), flags, None)?;
        for (slot, msg) in self.meta.iter_mut().zip(results) {
            let mut meta = Meta {
                len: msg.bytes,
                src: msg.address,
                rx: None,
                dst: None,
            };
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::ScmTimestampns(ts) => meta.rx = Some(ts),
                        ControlMessageOwned::Ipv4PacketInfo(info) => {
                            meta.dst = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                        }
                        _ => {}
                    }
                }
            }
            *slot = meta;
            self.n += 1;
        }
        Ok(self.n)
    }

    /// Datagram `i` of the last receive (empty when out of range).
    pub fn datagram(&self, i: usize) -> &[u8] {
        match (self.bufs.get(i), self.meta.get(i)) {
            (Some(buf), Some(meta)) if i < self.n => buf.get(..meta.len).unwrap_or(&buf[..]),
            _ => &[],
        }
    }

    /// Metadata of datagram `i` of the last receive.
    pub fn meta(&self, i: usize) -> Option<&Meta> {
        self.meta.get(..self.n).and_then(|m| m.get(i))
    }
}

/// Sends `datagrams` (one `sendmmsg` call) to `addrs` (one per datagram;
/// `None` on a connected socket). `headers` must hold at least
/// `datagrams.len()` slots. Returns once the call did; the kernel sends
/// messages in order and stops at the first failing one.
///
/// # Errors
/// The `sendmmsg` error (when the first message failed).
pub fn send_batch<S>(
    fd: RawFd,
    headers: &mut MultiHeaders<S>,
    datagrams: &[&[u8]],
    addrs: &[Option<S>],
    flags: MsgFlags,
) -> nix::Result<()>
where
    S: SockaddrLike + Copy,
{
    let iovs: Vec<[IoSlice<'_>; 1]> = datagrams.iter().map(|d| [IoSlice::new(d)]).collect();
    let cmsgs: [ControlMessage<'_>; 0] = [];
    // Not iterated: the per-message results would read the headers'
    // address slots, which a send never fills.
    let _sent = sendmmsg(fd, headers, iovs.iter(), addrs, cmsgs, flags)?;
    Ok(())
}
