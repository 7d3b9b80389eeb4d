//! The daemon's UDP sockets: one table of every open socket with what reads it (a reader task
//! or a listener's fast-path workers), the client sockets per instance and address family,
//! and the lookups the other parts need (a listener to send from, a wildcard listener to join
//! a group on).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use strata_engine::{InstanceId, SocketId};
use strata_net::{Placement, SocketOptions, Transmit, UdpSocket};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::fastpath::{self, Totals, Workers};
use crate::config::DEFAULT_NTP_PORT;

/// Largest datagram read; longer ones are truncated and then dropped as malformed by the
/// engine.
pub(super) const MAX_DATAGRAM: usize = 1500;

/// A datagram on its way to the event loop.
pub(super) struct Datagram {
    pub socket: SocketId,
    pub meta: strata_net::RecvMeta,
    pub data: Vec<u8>,
}

/// A socket as the event loop holds it: registered with the runtime when a reader task waits
/// on it, or plain when fast-path workers read it (a registration would wake the loop for
/// every datagram and every send).
enum Io {
    Async(Arc<AsyncFd<UdpSocket>>),
    Plain(Arc<UdpSocket>),
}

/// One open socket.
pub(super) struct Socket {
    io: Io,
    pub instance: InstanceId,
    pub listener: bool,
    /// The reader task, or `None` when fast-path workers read the socket.
    reader: Option<tokio::task::JoinHandle<()>>,
    /// The fast-path workers of a listener.
    workers: Option<Workers>,
}

impl Socket {
    pub(super) fn udp(&self) -> &UdpSocket {
        match &self.io {
            Io::Async(fd) => fd.get_ref(),
            Io::Plain(s) => s,
        }
    }

    /// The runtime registration, when there is one.
    pub(super) fn async_fd(&self) -> Option<&Arc<AsyncFd<UdpSocket>>> {
        match &self.io {
            Io::Async(fd) => Some(fd),
            Io::Plain(_) => None,
        }
    }
}

/// Every open socket.
pub(super) struct Sockets {
    table: HashMap<SocketId, Socket>,
    /// Client sockets per (instance, IPv6?).
    clients: HashMap<(InstanceId, bool), SocketId>,
    next: u32,
    /// Where readers and workers send what the event loop handles.
    to_loop: mpsc::Sender<Datagram>,
    /// Fast-path workers per listener (0: none, listeners have readers).
    workers: usize,
    /// What the fast-path workers read.
    fast: Arc<fastpath::Shared>,
    /// Workers of closed listeners that have not ended yet.
    stopping: Vec<Workers>,
    /// Counts of ended workers, per instance.
    retired: BTreeMap<InstanceId, Totals>,
}

impl Sockets {
    pub(super) fn new(
        to_loop: mpsc::Sender<Datagram>,
        workers: usize,
        fast: Arc<fastpath::Shared>,
    ) -> Sockets {
        Sockets {
            table: HashMap::new(),
            clients: HashMap::new(),
            next: 0,
            to_loop,
            workers,
            fast,
            stopping: Vec::new(),
            retired: BTreeMap::new(),
        }
    }

    pub(super) fn get(&self, id: SocketId) -> Option<&Socket> {
        self.table.get(&id)
    }

    /// Opens a socket; a listener gets fast-path workers when there are any, every other
    /// socket a reader task.
    pub(super) fn open(
        &mut self,
        instance: InstanceId,
        options: SocketOptions,
        listener: bool,
    ) -> anyhow::Result<SocketId> {
        let socket = UdpSocket::open(&options)?;
        let id = SocketId(self.next);
        self.next += 1;
        let (io, reader, workers) = if listener && self.workers > 0 {
            let socket = Arc::new(socket);
            let workers = Workers::spawn(
                self.workers,
                &socket,
                id,
                instance,
                &self.fast,
                &self.to_loop,
            )
            .context("starting fast-path workers")?;
            (Io::Plain(socket), None, Some(workers))
        } else {
            // `AsyncFd::new` is deprecated because a borrowed descriptor could be closed
            // while registered; `UdpSocket` owns its descriptor, which stays open as long as
            // the `AsyncFd` holding it, so this use is sound.
            #[allow(deprecated)]
            let io = Arc::new(AsyncFd::new(socket)?);
            let reader = tokio::spawn(read_socket(id, Arc::clone(&io), self.to_loop.clone()));
            (Io::Async(io), Some(reader), None)
        };
        let socket = Socket {
            io,
            instance,
            listener,
            reader,
            workers,
        };
        self.table.insert(id, socket);
        Ok(id)
    }

    /// Closes a socket: its reader ends now, its workers within their receive timeout.
    pub(super) fn close(&mut self, id: SocketId) {
        if let Some(sock) = self.table.remove(&id) {
            if let Some(reader) = sock.reader {
                reader.abort();
            }
            if let Some(workers) = sock.workers {
                workers.stop();
                self.stopping.push(workers);
            }
        }
        self.clients.retain(|_, s| *s != id);
    }

    /// Closes every socket of an instance.
    pub(super) fn close_instance(&mut self, instance: InstanceId) {
        let ids: Vec<SocketId> = self.of(instance).map(|(id, _)| id).collect();
        for id in ids {
            self.close(id);
        }
    }

    /// The sockets of an instance.
    fn of(&self, instance: InstanceId) -> impl Iterator<Item = (SocketId, &Socket)> {
        let all = self.table.iter().map(|(id, s)| (*id, s));
        all.filter(move |(_, s)| s.instance == instance)
    }

    /// Every open listener with its instance.
    pub(super) fn listeners(&self) -> impl Iterator<Item = (SocketId, InstanceId)> + '_ {
        let all = self.table.iter().filter(|(_, s)| s.listener);
        all.map(|(id, s)| (*id, s.instance))
    }

    /// The listeners of an instance with their local addresses.
    fn listeners_of(
        &self,
        instance: InstanceId,
    ) -> impl Iterator<Item = (SocketId, SocketAddr)> + '_ {
        self.of(instance)
            .filter(|(_, s)| s.listener)
            .filter_map(|(id, s)| Some((id, s.udp().local_addr().ok()?)))
    }

    /// The client socket of an instance for one address family, if open.
    pub(super) fn client(&self, instance: InstanceId, v6: bool) -> Option<SocketId> {
        self.clients.get(&(instance, v6)).copied()
    }

    /// Records the client socket of an instance for one address family.
    pub(super) fn set_client(&mut self, instance: InstanceId, v6: bool, id: SocketId) {
        self.clients.insert((instance, v6), id);
    }

    pub(super) fn local_addr(&self, id: SocketId) -> Option<SocketAddr> {
        self.get(id)?.udp().local_addr().ok()
    }

    /// Sends one datagram from socket `id`.
    pub(super) fn send(&self, id: SocketId, data: &[u8], transmit: &Transmit) {
        let Some(sock) = self.get(id) else { return };
        if let Err(e) = sock.udp().send(data, transmit) {
            tracing::debug!(dst = %transmit.dst, "send failed: {e}");
        }
    }

    /// The listener of `instance` bound to `addr`.
    pub(super) fn listener_bound_to(
        &self,
        instance: InstanceId,
        addr: SocketAddr,
    ) -> Option<SocketId> {
        self.listeners_of(instance)
            .find(|(_, a)| *a == addr)
            .map(|(id, _)| id)
    }

    /// A listener of the instance bound to the unspecified address on the port and family of
    /// `like`.
    pub(super) fn wildcard_listener(
        &self,
        instance: InstanceId,
        like: SocketAddr,
    ) -> Option<SocketId> {
        self.listeners_of(instance)
            .find(|(_, a)| {
                a.ip().is_unspecified() && a.port() == like.port() && a.is_ipv4() == like.is_ipv4()
            })
            .map(|(id, _)| id)
    }

    /// A listener of the instance of the family of `dst`, on port 123 if there is one.
    pub(super) fn listener_for(&self, instance: InstanceId, dst: SocketAddr) -> Option<SocketId> {
        // Port 123 first; then a wildcard listener (the routing table picks the source
        // address), else the address sharing the longest prefix with the destination (the
        // interface that faces it).
        self.listeners_of(instance)
            .filter(|(_, a)| a.is_ipv4() == dst.is_ipv4())
            .min_by_key(|(id, a)| {
                (
                    a.port() != DEFAULT_NTP_PORT,
                    !a.ip().is_unspecified(),
                    std::cmp::Reverse(common_prefix(a.ip(), dst.ip())),
                    id.0,
                )
            })
            .map(|(id, _)| id)
    }

    /// Folds the counts of ended workers into the per-instance totals.
    pub(super) fn reap_workers(&mut self) {
        let (done, running): (Vec<_>, Vec<_>) =
            self.stopping.drain(..).partition(Workers::finished);
        self.stopping = running;
        for w in done {
            self.retired.entry(w.instance).or_default().add(&w.totals());
        }
    }

    /// The fast-path counters of `instance`: ended, stopping and running workers.
    pub(super) fn fast_totals(&self, instance: InstanceId) -> Totals {
        let mut t = self.retired.get(&instance).cloned().unwrap_or_default();
        let live = self.table.values().filter_map(|s| s.workers.as_ref());
        for w in live
            .chain(&self.stopping)
            .filter(|w| w.instance == instance)
        {
            t.add(&w.totals());
        }
        t
    }
}

/// The number of leading bits two addresses of one family share.
fn common_prefix(a: IpAddr, b: IpAddr) -> u32 {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros(),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros(),
        _ => 0,
    }
}

/// Reads one socket until it fails, forwarding each datagram.
async fn read_socket(id: SocketId, io: Arc<AsyncFd<UdpSocket>>, tx: mpsc::Sender<Datagram>) {
    let mut buf = [0u8; MAX_DATAGRAM];
    loop {
        let Ok(mut guard) = io.readable().await else {
            return;
        };
        match guard.try_io(|s| s.get_ref().recv(&mut buf)) {
            Ok(Ok(meta)) => {
                let len = meta.len.min(buf.len());
                let d = Datagram {
                    socket: id,
                    meta,
                    data: buf[..len].to_vec(),
                };
                if tx.send(d).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => tracing::debug!("receive error: {e}"),
            Err(_would_block) => {}
        }
    }
}

/// The options of a socket of `placement`.
pub(super) fn options(local: SocketAddr, placement: &Placement, broadcast: bool) -> SocketOptions {
    SocketOptions {
        local,
        placement: placement.clone(),
        reuse_port: false,
        broadcast,
    }
}
