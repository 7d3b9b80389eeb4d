//! The daemon's UDP sockets: the socket table, reader tasks and fast-path
//! workers, and the lookups the other parts need.

use super::*;

/// Largest datagram read; longer ones are truncated and then dropped as
/// malformed by the engine.
pub(super) const MAX_DATAGRAM: usize = 1500;

pub(super) struct Datagram {
    pub(super) socket: SocketId,
    pub(super) meta: strata_net::RecvMeta,
    pub(super) data: Vec<u8>,
}

/// A socket as the event loop holds it: registered with the runtime when
/// a reader task waits on it, or plain when fast-path workers read it (a
/// registration would wake the loop for every datagram and every send).
pub(super) enum Io {
    Async(Arc<AsyncFd<UdpSocket>>),
    Plain(Arc<UdpSocket>),
}

impl Io {
    pub(super) fn get_ref(&self) -> &UdpSocket {
        match self {
            Io::Async(fd) => fd.get_ref(),
            Io::Plain(s) => s,
        }
    }

    /// The runtime registration, when there is one.
    pub(super) fn async_fd(&self) -> Option<&Arc<AsyncFd<UdpSocket>>> {
        match self {
            Io::Async(fd) => Some(fd),
            Io::Plain(_) => None,
        }
    }
}

pub(super) struct Socket {
    pub(super) io: Io,
    pub(super) instance: InstanceId,
    pub(super) listener: bool,
    /// The reader task, or `None` when fast-path workers read the socket.
    pub(super) reader: Option<tokio::task::JoinHandle<()>>,
    /// The fast-path workers of a listener.
    pub(super) workers: Option<fastpath::Workers>,
}

impl Daemon {
    pub(super) fn close_socket(&mut self, id: SocketId) {
        if let Some(sock) = self.sockets.remove(&id) {
            if let Some(reader) = sock.reader {
                reader.abort();
            }
            if let Some(workers) = sock.workers {
                workers.stop();
                self.stopping.push(workers);
            }
        }
        self.client_sockets.retain(|_, s| *s != id);
    }

    pub(super) fn open_socket(
        &mut self,
        instance: InstanceId,
        local: SocketAddr,
        listener: bool,
        placement: &Placement,
    ) -> anyhow::Result<SocketId> {
        let broadcast = listener
            && self
                .instances
                .get(&instance)
                .is_some_and(|i| i.mode5.broadcast_send());
        let socket = UdpSocket::open(&SocketOptions {
            local,
            placement: placement.clone(),
            reuse_port: false,
            broadcast,
        })?;
        let id = SocketId(self.next_socket);
        self.next_socket += 1;
        // `AsyncFd::new` is deprecated because a borrowed descriptor could be
        // closed while registered; `UdpSocket` owns its descriptor, which stays
        // open as long as the `AsyncFd` holding it, so this use is sound.
        let (io, reader, workers) = if listener && self.workers > 0 {
            let socket = Arc::new(socket);
            let workers =
                fastpath::Workers::spawn(self.workers, &socket, id, instance, &self.fast, &self.rx)
                    .context("starting fast-path workers")?;
            (Io::Plain(socket), None, Some(workers))
        } else {
            #[allow(deprecated)]
            let io = Arc::new(AsyncFd::new(socket)?);
            let reader = tokio::spawn(read_socket(id, Arc::clone(&io), self.rx.clone()));
            (Io::Async(io), Some(reader), None)
        };
        self.sockets.insert(
            id,
            Socket {
                io,
                instance,
                listener,
                reader,
                workers,
            },
        );
        Ok(id)
    }

    pub(super) fn client_socket(
        &mut self,
        instance: InstanceId,
        v6: bool,
    ) -> anyhow::Result<SocketId> {
        if let Some(id) = self.client_sockets.get(&(instance, v6)) {
            return Ok(*id);
        }
        let local = if v6 {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        };
        let placement = match self.instances.get(&instance) {
            Some(inst) if inst.up => inst.placement.clone(),
            Some(inst) => bail!(
                "instance {} is down: {}",
                inst.name,
                inst.error.as_deref().unwrap_or("not up yet")
            ),
            None => Placement::Default,
        };
        match self.open_socket(instance, local, false, &placement) {
            Ok(id) => {
                self.client_sockets.insert((instance, v6), id);
                Ok(id)
            }
            Err(e) if placement != Placement::Default => {
                let why = format!("client socket: {e:#}");
                self.take_down(instance, why.clone());
                bail!(why)
            }
            Err(e) => Err(e),
        }
    }

    /// Folds the counts of ended workers into the per-instance totals.
    pub(super) fn reap_workers(&mut self) {
        let (done, running): (Vec<_>, Vec<_>) = self
            .stopping
            .drain(..)
            .partition(fastpath::Workers::finished);
        self.stopping = running;
        for w in done {
            self.fast_retired
                .entry(w.instance)
                .or_default()
                .add(&w.totals());
        }
    }

    /// The fast-path counters of `instance`: ended, stopping and running workers.
    pub(super) fn fast_totals(&self, instance: InstanceId) -> fastpath::Totals {
        let mut t = self
            .fast_retired
            .get(&instance)
            .cloned()
            .unwrap_or_default();
        let live = self.sockets.values().filter_map(|s| s.workers.as_ref());
        for w in live
            .chain(&self.stopping)
            .filter(|w| w.instance == instance)
        {
            t.add(&w.totals());
        }
        t
    }

    pub(super) fn listener_bound_to(
        &self,
        instance: InstanceId,
        addr: SocketAddr,
    ) -> Option<SocketId> {
        self.sockets
            .iter()
            .filter(|(_, s)| s.instance == instance && s.listener)
            .map(|(id, _)| *id)
            .find(|id| self.local_addr(*id) == Some(addr))
    }

    pub(super) fn local_addr(&self, id: SocketId) -> Option<SocketAddr> {
        self.sockets.get(&id)?.io.get_ref().local_addr().ok()
    }

    /// A listener of the instance bound to the unspecified address on the
    /// port and family of `like`.
    pub(super) fn wildcard_listener(
        &self,
        instance: InstanceId,
        like: SocketAddr,
    ) -> Option<SocketId> {
        self.sockets
            .iter()
            .filter(|(_, s)| s.instance == instance && s.listener)
            .map(|(id, _)| *id)
            .find(|id| {
                self.local_addr(*id).is_some_and(|a| {
                    a.ip().is_unspecified()
                        && a.port() == like.port()
                        && a.is_ipv4() == like.is_ipv4()
                })
            })
    }

    /// A listener of the instance of the family of `dst`, on port 123 if
    /// there is one.
    pub(super) fn listener_for(&self, instance: InstanceId, dst: SocketAddr) -> Option<SocketId> {
        let mut candidates: Vec<(SocketId, SocketAddr)> = self
            .sockets
            .iter()
            .filter(|(_, s)| s.instance == instance && s.listener)
            .filter_map(|(id, _)| Some((*id, self.local_addr(*id)?)))
            .filter(|(_, a)| a.is_ipv4() == dst.is_ipv4())
            .collect();
        // Port 123 first; then a wildcard listener (the routing table picks
        // the source address), else the address sharing the longest prefix
        // with the destination (the interface that faces it).
        candidates.sort_by_key(|(id, a)| {
            (
                a.port() != DEFAULT_NTP_PORT,
                !a.ip().is_unspecified(),
                std::cmp::Reverse(common_prefix(a.ip(), dst.ip())),
                id.0,
            )
        });
        candidates.first().map(|(id, _)| *id)
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
