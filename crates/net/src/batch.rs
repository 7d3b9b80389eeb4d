//! Preallocated buffers for batched receive and send
//! ([`UdpSocket::recv_batch`](crate::UdpSocket::recv_batch) over
//! `recvmmsg`, [`UdpSocket::send_batch`](crate::UdpSocket::send_batch)
//! over `sendmmsg` on Linux).
//!
//! A [`RecvBatch`] owns `capacity` datagram slots of `slot_len` bytes, the
//! source address and control-message space of each, and the
//! [`RecvMeta`] filled in for each datagram of the last receive. A
//! [`SendBatch`] owns `capacity` slots the caller writes datagrams into
//! with [`SendBatch::push`], each with its [`Transmit`]. Neither allocates
//! after it is built, so a server loop that reuses them allocates nothing
//! per datagram.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::{HostTime, RecvMeta, TimestampSource, Transmit};

/// The most datagrams one batch holds; larger capacities are clamped.
pub const MAX_BATCH: usize = 64;

/// Control-message space of one datagram: room for `SCM_TIMESTAMPNS`
/// and `IPV6_PKTINFO` (the larger packet info), aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgBuf(pub(crate) [u8; 128]);

const EMPTY_META: RecvMeta = RecvMeta {
    len: 0,
    src: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    dst_ip: None,
    ifindex: None,
    rx_time: HostTime { secs: 0, nanos: 0 },
    ts_source: TimestampSource::Software,
};

/// Buffers for one batched receive; see the module docs.
pub struct RecvBatch {
    pub(crate) bufs: Box<[u8]>,
    pub(crate) slot_len: usize,
    pub(crate) metas: Box<[RecvMeta]>,
    pub(crate) truncated: Box<[bool]>,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) names: Box<[Name]>,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) cmsgs: Box<[CmsgBuf]>,
    pub(crate) len: usize,
}

/// Source/destination address space of one datagram.
#[cfg(target_os = "linux")]
pub(crate) type Name = libc::sockaddr_storage;
#[cfg(not(target_os = "linux"))]
pub(crate) type Name = [u8; 0];

#[cfg(target_os = "linux")]
fn empty_name() -> Name {
    // `sockaddr_storage` has private padding fields: build it from zeroes.
    crate::linux::zeroed_storage()
}

#[cfg(not(target_os = "linux"))]
fn empty_name() -> Name {
    []
}

impl RecvBatch {
    /// Room for `capacity` datagrams (clamped to `1..=`[`MAX_BATCH`]) of up
    /// to `slot_len` bytes each (at least 1); longer datagrams are
    /// truncated and flagged ([`RecvBatch::is_truncated`]).
    #[must_use]
    pub fn new(capacity: usize, slot_len: usize) -> RecvBatch {
        let capacity = capacity.clamp(1, MAX_BATCH);
        let slot_len = slot_len.max(1);
        RecvBatch {
            bufs: vec![0u8; capacity * slot_len].into_boxed_slice(),
            slot_len,
            metas: vec![EMPTY_META; capacity].into_boxed_slice(),
            truncated: vec![false; capacity].into_boxed_slice(),
            names: (0..capacity).map(|_| empty_name()).collect(),
            cmsgs: vec![CmsgBuf([0; 128]); capacity].into_boxed_slice(),
            len: 0,
        }
    }

    /// How many datagrams one receive takes at most.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.metas.len()
    }

    /// How many datagrams the last receive returned.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last receive returned nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Datagram `i` of the last receive: its metadata and its bytes (at
    /// most `slot_len`), or `None` when `i >= len()`.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<(&RecvMeta, &[u8])> {
        if i >= self.len {
            return None;
        }
        let meta = self.metas.get(i)?;
        let start = i * self.slot_len;
        let len = meta.len.min(self.slot_len);
        Some((meta, self.bufs.get(start..start + len)?))
    }

    /// Whether datagram `i` was longer than a slot (its tail was lost).
    #[must_use]
    pub fn is_truncated(&self, i: usize) -> bool {
        i < self.len && self.truncated.get(i).copied().unwrap_or(false)
    }

    /// Slot `i` for the receive itself.
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    pub(crate) fn slot_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        let start = i * self.slot_len;
        self.bufs.get_mut(start..start + self.slot_len)
    }
}

/// Datagrams to send in one batch; see the module docs.
pub struct SendBatch {
    pub(crate) bufs: Box<[u8]>,
    pub(crate) slot_len: usize,
    pub(crate) lens: Box<[usize]>,
    pub(crate) txs: Box<[Transmit]>,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) names: Box<[Name]>,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) cmsgs: Box<[CmsgBuf]>,
    pub(crate) len: usize,
}

impl SendBatch {
    /// Room for `capacity` datagrams (clamped to `1..=`[`MAX_BATCH`]) of up
    /// to `slot_len` bytes each (at least 1).
    #[must_use]
    pub fn new(capacity: usize, slot_len: usize) -> SendBatch {
        let capacity = capacity.clamp(1, MAX_BATCH);
        let slot_len = slot_len.max(1);
        let nowhere = Transmit::to(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
        SendBatch {
            bufs: vec![0u8; capacity * slot_len].into_boxed_slice(),
            slot_len,
            lens: vec![0; capacity].into_boxed_slice(),
            txs: vec![nowhere; capacity].into_boxed_slice(),
            names: (0..capacity).map(|_| empty_name()).collect(),
            cmsgs: vec![CmsgBuf([0; 128]); capacity].into_boxed_slice(),
            len: 0,
        }
    }

    /// Forgets every queued datagram.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// How many datagrams the batch holds at most.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// How many datagrams are queued.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether no more datagrams fit.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.len >= self.capacity()
    }

    /// Queues one datagram for `tx`: `write` fills the next slot (`slot_len`
    /// bytes) and returns the datagram's length, or `None` to queue
    /// nothing. Returns whether a datagram was queued (false also when the
    /// batch is full or `write` returned a length beyond the slot).
    pub fn push(&mut self, tx: Transmit, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        let i = self.len;
        if i >= self.capacity() {
            return false;
        }
        let start = i * self.slot_len;
        let Some(slot) = self.bufs.get_mut(start..start + self.slot_len) else {
            return false;
        };
        match write(slot) {
            Some(n) if n <= self.slot_len => {
                self.lens[i] = n;
                self.txs[i] = tx;
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    /// Queued datagram `i`: its bytes and transmit.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<(&[u8], &Transmit)> {
        if i >= self.len {
            return None;
        }
        let start = i * self.slot_len;
        Some((self.bufs.get(start..start + self.lens[i])?, &self.txs[i]))
    }
}

/// Shows the shape and fill of the batch, not the buffer bytes.
impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.metas.len())
            .field("slot_len", &self.slot_len)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Shows the shape and fill of the batch, not the buffer bytes.
impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("capacity", &self.txs.len())
            .field("slot_len", &self.slot_len)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_are_clamped() {
        assert_eq!(RecvBatch::new(0, 0).capacity(), 1);
        assert_eq!(RecvBatch::new(1000, 48).capacity(), MAX_BATCH);
        assert_eq!(SendBatch::new(0, 48).capacity(), 1);
        assert_eq!(SendBatch::new(1000, 48).capacity(), MAX_BATCH);
        let r = RecvBatch::new(4, 48);
        assert!(r.is_empty() && r.get(0).is_none() && !r.is_truncated(0));
    }

    #[test]
    fn push_fills_slots_until_full() {
        let dst: SocketAddr = "127.0.0.1:123".parse().unwrap();
        let mut b = SendBatch::new(2, 4);
        assert!(b.push(Transmit::to(dst), |s| {
            s[..3].copy_from_slice(b"abc");
            Some(3)
        }));
        assert!(!b.push(Transmit::to(dst), |_| None));
        assert!(
            !b.push(Transmit::to(dst), |_| Some(5)),
            "longer than the slot"
        );
        assert!(b.push(Transmit::to(dst), |s| {
            s.copy_from_slice(b"wxyz");
            Some(4)
        }));
        assert!(b.is_full());
        assert!(!b.push(Transmit::to(dst), |_| Some(1)));
        assert_eq!(b.get(0).map(|(d, _)| d), Some(&b"abc"[..]));
        assert_eq!(b.get(1).map(|(d, t)| (d, t.dst)), Some((&b"wxyz"[..], dst)));
        assert!(b.get(2).is_none());
        b.clear();
        assert!(b.is_empty() && b.get(0).is_none());
    }
}
