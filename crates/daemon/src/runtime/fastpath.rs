//! The fast server path: worker threads that answer plain client requests
//! on a `[[listen]]` socket without the event loop.
//!
//! Each listener gets `[responder] workers` plain threads (default: the
//! cores this process may run on). They share the listener's one socket,
//! switched to blocking receives with a 100 ms timeout (`SO_RCVTIMEO`) so
//! a worker sees a stop request within that time. The socket is not
//! registered with the event loop's runtime: a registration would wake the
//! loop for every datagram and every send (that cost 5 µs per reply on
//! one core). The loop only sends on it. A worker loops:
//!
//! 1. `recvmmsg` up to [`BATCH`] datagrams ([`UdpSocket::recv_batch`]), with
//!    their kernel receive timestamps and packet info;
//! 2. per datagram: the engine's [`Responder`] plans an answer, a KoD
//!    RATE/DENY, a drop, or a hand-over to the event loop — the same
//!    access rules, deny policy, rate limiter (shared, so a client's limit
//!    is per (instance, IP) whoever answers it) and listener keys the node
//!    answers with;
//! 3. the clock is read once for the batch, as late as possible, and the
//!    answers are built in place ([`Responder::write`]) into a
//!    preallocated [`SendBatch`] and sent with one `sendmmsg`.
//!
//! What the responder hands over goes to the event loop unchanged, as a
//! datagram of the listener, so the engine handles it: everything but a
//! plain client request on a listener the snapshot knows without a key
//! (authenticated requests are answered by the engine, which owns the
//! keys). The first request a worker sees for each local address also
//! goes to the event loop, which learns that address for loop detection.
//!
//! # Shared state
//!
//! The event loop publishes a [`Snapshot`] — the node's [`Responder`], the
//! clock's [`HostMap`] and the interfaces of device-bound instances — when
//! any of it changes (a clock update, a step, a reload, an instance going
//! up or down). Workers check a generation number once per batch and take
//! the new snapshot only when it moved: no lock per datagram. The rate
//! limiter's shards have their own locks, chosen by a hash of the client.
//!
//! # Counters
//!
//! Every worker counts what it handles (received, sent, KoD sent, drops
//! by reason, datagrams from another instance's interface) in its own
//! cache-line-aligned atomics, added once per batch; `stratactl status`
//! sums them with the engine's counters. Datagrams handed to the event
//! loop are counted there.
//!
//! # Why one shared socket
//!
//! The alternative is one `SO_REUSEPORT` socket per worker. It spreads
//! clients over sockets by a hash of their addresses in the kernel, but it
//! would also let a second daemon of the same user bind the same port
//! silently instead of failing, and a client's requests would then be split
//! between daemons. With one socket the kernel wakes one blocked worker per
//! datagram (its receive wait is exclusive) and each takes what is queued,
//! up to a batch. Measured with a throw-away build that gave each worker
//! its own `SO_REUSEPORT` socket (`cargo xtask bench server --scaling
//! --quick`, two runs of each, alternating, on the two-core machine shared
//! with the generator and other work), the 2-worker/1-worker ratios were
//! 1.09 and 1.20 (closed loop) and 1.98 and 1.73 (at ≤ 0.1% loss) with
//! per-worker sockets against 1.33 and 0.79, 1.86 and 0.98 with the shared
//! one: no difference the noise lets through, so the simpler and safer
//! shared socket stays.
//!
//! # Allocation
//!
//! A worker allocates its batches and plan once. Per request it allocates
//! nothing; only datagrams handed to the event loop are copied into a
//! `Vec`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use strata_clock::backend::{Clock, HostMap};
use strata_engine::{DropReason, InstanceId, Instant, Node, Plan, Responder, SocketId};
use strata_net::{HostTime, RecvBatch, SendBatch, Transmit, UdpSocket};
use strata_wire::{NtpTimestamp, HEADER_LEN};
use tokio::sync::mpsc;

use super::sockets::{Datagram, MAX_DATAGRAM};

/// Datagrams per `recvmmsg`/`sendmmsg` (the bench's batch size).
pub(super) const BATCH: usize = 32;
/// How long a worker's receive waits before it checks for a stop request.
const RECV_TIMEOUT: Duration = Duration::from_millis(100);
/// The most local addresses a worker remembers having reported.
const MAX_SEEN_LOCAL: usize = 256;
/// The number of drop reasons.
const REASONS: usize = DropReason::ALL.len();

/// What the workers read: published by the event loop.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    /// The node's responder (`Node::responder`). A listener it does not
    /// know (opened since) or that requires a key has every datagram
    /// handed to the event loop: the fast path fails closed.
    pub responder: Responder,
    /// The served clock as a function of host time.
    pub map: HostMap,
    /// Interfaces of up device-bound instances: the default instance's
    /// listeners drop datagrams that arrive on them.
    pub foreign: Vec<u32>,
    /// Interfaces instances ignore, as (instance, ifindex): datagrams of that instance
    /// arriving there are dropped.
    pub ignored: Vec<(InstanceId, u32)>,
}

impl Snapshot {
    /// A snapshot that serves nobody (used until the first publication).
    fn closed() -> Snapshot {
        Snapshot {
            responder: Responder::closed(-20),
            map: HostMap::IDENTITY,
            foreign: Vec::new(),
            ignored: Vec::new(),
        }
    }
}

/// The part of a [`Snapshot`] that the event loop compares after every
/// input to tell whether to publish again: the server state, the node's
/// policy generation and the clock's map.
type Key = (
    strata_engine::ServerState,
    u64,
    HostMap,
    Vec<u32>,
    Vec<(InstanceId, u32)>,
);

/// The event loop's side of the snapshot: what it last published, so that it publishes again
/// only when something the workers read changed.
#[derive(Debug)]
pub(super) struct Publisher {
    shared: Arc<Shared>,
    published: Option<Key>,
}

impl Publisher {
    pub(super) fn new(origin: std::time::Instant) -> Publisher {
        Publisher {
            shared: Arc::new(Shared::new(origin)),
            published: None,
        }
    }

    /// What the workers read.
    pub(super) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Publishes the node's responder, the clock's host map and the interfaces of up
    /// device-bound instances (`foreign`) when any of them changed, or when `force` is set.
    pub(super) fn publish(
        &mut self,
        node: &Node,
        clock: &dyn Clock,
        foreign: Vec<u32>,
        ignored: Vec<(InstanceId, u32)>,
        force: bool,
    ) {
        let state = node.server_state(NtpTimestamp::ZERO);
        let key = (
            state,
            node.policy_generation(),
            clock.host_map(),
            foreign,
            ignored,
        );
        if !force && self.published.as_ref() == Some(&key) {
            return;
        }
        self.shared.publish(Snapshot {
            responder: node.responder(NtpTimestamp::ZERO),
            map: key.2,
            foreign: key.3.clone(),
            ignored: key.4.clone(),
        });
        self.published = Some(key);
    }
}

/// The published snapshot and its generation, shared by every worker.
#[derive(Debug)]
pub(super) struct Shared {
    generation: AtomicU64,
    snapshot: RwLock<Arc<Snapshot>>,
    /// The event loop's monotonic origin (the engine's `Instant` zero), so
    /// the rate limiter sees one timebase from every thread.
    origin: std::time::Instant,
}

impl Shared {
    fn new(origin: std::time::Instant) -> Shared {
        Shared {
            generation: AtomicU64::new(0),
            snapshot: RwLock::new(Arc::new(Snapshot::closed())),
            origin,
        }
    }

    /// Replaces the snapshot; workers take it at their next batch.
    fn publish(&self, snapshot: Snapshot) {
        let mut slot = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Arc::new(snapshot);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current snapshot and its generation.
    fn load(&self) -> (u64, Arc<Snapshot>) {
        let generation = self.generation.load(Ordering::Acquire);
        let snapshot = Arc::clone(&self.snapshot.read().unwrap_or_else(PoisonError::into_inner));
        (generation, snapshot)
    }

    /// Takes the current snapshot into `cached` if it changed.
    fn refresh(&self, cached: &mut (u64, Arc<Snapshot>)) {
        if self.generation.load(Ordering::Acquire) != cached.0 {
            *cached = self.load();
        }
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// One worker's counters, written by it alone (one cache line pair each,
/// so workers never share a line).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct WorkerCounters {
    received: AtomicU64,
    sent: AtomicU64,
    kod_sent: AtomicU64,
    foreign: AtomicU64,
    ignored: AtomicU64,
    dropped: [AtomicU64; REASONS],
}

/// Counters summed over workers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Totals {
    /// Datagrams the workers handled themselves (not those handed on).
    pub received: u64,
    /// Answers and KoDs sent.
    pub sent: u64,
    /// KoDs sent.
    pub kod_sent: u64,
    /// Datagrams dropped because they came through another instance's
    /// interface (counted as `foreign-instance`, also in `received`).
    pub foreign: u64,
    /// Datagrams dropped because they came through an interface the instance ignores
    /// (counted as `ignored-interface`, also in `received`).
    pub ignored: u64,
    /// Drops by reason, indexed as [`DropReason::ALL`].
    pub dropped: [u64; REASONS],
}

impl Totals {
    fn add_counters(&mut self, c: &WorkerCounters) {
        self.received += c.received.load(Ordering::Relaxed);
        self.sent += c.sent.load(Ordering::Relaxed);
        self.kod_sent += c.kod_sent.load(Ordering::Relaxed);
        self.foreign += c.foreign.load(Ordering::Relaxed);
        self.ignored += c.ignored.load(Ordering::Relaxed);
        for (t, d) in self.dropped.iter_mut().zip(&c.dropped) {
            *t += d.load(Ordering::Relaxed);
        }
    }

    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &Totals) {
        self.received += other.received;
        self.sent += other.sent;
        self.kod_sent += other.kod_sent;
        self.foreign += other.foreign;
        self.ignored += other.ignored;
        for (t, d) in self.dropped.iter_mut().zip(&other.dropped) {
            *t += d;
        }
    }

    /// Drops by reason, skipping reasons with none.
    pub fn dropped_by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .zip(&self.dropped)
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (*r, *n))
    }
}

/// A worker's counts within one batch are [`Totals`] too, added to its atomics at the end.
impl Totals {
    fn drop_packet(&mut self, reason: DropReason) {
        if let Some(slot) = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.dropped.get_mut(i))
        {
            *slot += 1;
        }
    }

    fn flush(&mut self, into: &WorkerCounters) {
        let add = |a: &AtomicU64, n: u64| {
            if n > 0 {
                a.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&into.received, self.received);
        add(&into.sent, self.sent);
        add(&into.kod_sent, self.kod_sent);
        add(&into.foreign, self.foreign);
        add(&into.ignored, self.ignored);
        for (a, n) in into.dropped.iter().zip(&self.dropped) {
            add(a, *n);
        }
        *self = Totals::default();
    }
}

/// What a worker does with one datagram of a batch.
/// The worker threads of one listener.
#[derive(Debug)]
pub(super) struct Workers {
    pub instance: InstanceId,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    counters: Vec<Arc<WorkerCounters>>,
}

/// What a worker needs to run.
struct WorkerCtx {
    socket: Arc<UdpSocket>,
    id: SocketId,
    instance: InstanceId,
    /// The socket is bound to a wildcard address: answers name their
    /// source address and interface (packet info), as the engine's do.
    wildcard: bool,
    shared: Arc<Shared>,
    forward: mpsc::Sender<Datagram>,
    stop: Arc<AtomicBool>,
    counters: Arc<WorkerCounters>,
}

impl Workers {
    /// Starts `n` (at least 1) workers on listener `id` of `instance`.
    /// The socket is switched to blocking receives.
    pub(super) fn spawn(
        n: usize,
        socket: &Arc<UdpSocket>,
        id: SocketId,
        instance: InstanceId,
        shared: &Arc<Shared>,
        forward: &mpsc::Sender<Datagram>,
    ) -> std::io::Result<Workers> {
        socket.set_blocking_recv(Some(RECV_TIMEOUT))?;
        let wildcard = socket.local_addr().is_ok_and(|a| a.ip().is_unspecified());
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Workers {
            instance,
            stop: Arc::clone(&stop),
            threads: Vec::new(),
            counters: Vec::new(),
        };
        for k in 0..n.max(1) {
            let counters = Arc::new(WorkerCounters::default());
            let ctx = WorkerCtx {
                socket: Arc::clone(socket),
                id,
                instance,
                wildcard,
                shared: Arc::clone(shared),
                forward: forward.clone(),
                stop: Arc::clone(&stop),
                counters: Arc::clone(&counters),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("strata-fast{}-{k}", id.0))
                .spawn(move || run(&ctx));
            match spawned {
                Ok(handle) => {
                    workers.threads.push(handle);
                    workers.counters.push(counters);
                }
                Err(e) => {
                    workers.stop();
                    return Err(e);
                }
            }
        }
        Ok(workers)
    }

    /// Asks the workers to stop; each does within the receive timeout.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether every worker thread has ended.
    pub(super) fn finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// The workers' counters, summed.
    pub(super) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in &self.counters {
            t.add_counters(c);
        }
        t
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The number of workers per listener when `[responder] workers` is not
/// set: the cores this process may run on.
pub(super) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

fn run(ctx: &WorkerCtx) {
    let socket = &*ctx.socket;
    let mut rx = RecvBatch::new(BATCH, MAX_DATAGRAM);
    let mut tx = SendBatch::new(BATCH, HEADER_LEN);
    // The answer each datagram of the batch gets, if any.
    let mut plans: [Option<Plan>; BATCH] = [None; BATCH];
    let mut cached = ctx.shared.load();
    let mut seen_local: Vec<IpAddr> = Vec::with_capacity(MAX_SEEN_LOCAL);
    let mut local = Totals::default();
    while !ctx.stop.load(Ordering::Relaxed) {
        match socket.recv_batch(&mut rx) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::debug!(socket = ctx.id.0, "receive error: {e}");
                // Do not spin on a persistent error.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        ctx.shared.refresh(&mut cached);
        let snap = &*cached.1;
        let now = ctx.shared.now();
        for (i, plan) in plans.iter_mut().enumerate().take(rx.len()) {
            *plan = classify(ctx, snap, &rx, i, now, &mut seen_local, &mut local);
        }
        // The transmit timestamp: once per batch, right before sending.
        let host = HostTime::now();
        let tx_time = snap
            .map
            .apply(NtpTimestamp::from_unix(host.secs, host.nanos));
        tx.clear();
        for (i, plan) in plans.iter().enumerate().take(rx.len()) {
            let (Some(plan), Some((meta, data))) = (*plan, rx.get(i)) else {
                continue;
            };
            let transmit = if ctx.wildcard {
                Transmit {
                    dst: meta.src,
                    src_ip: Transmit::reply_to(meta).src_ip,
                    ifindex: meta.ifindex,
                }
            } else {
                Transmit::to(meta.src)
            };
            let rx_time = snap.map.apply(NtpTimestamp::from_unix(
                meta.rx_time.secs,
                meta.rx_time.nanos,
            ));
            let queued = tx.push(transmit, |out| {
                snap.responder.write(plan, data, rx_time, tx_time, out)
            });
            if queued {
                local.sent += 1;
                if matches!(plan, Plan::Kiss(_)) {
                    local.kod_sent += 1;
                }
            } else {
                // Unreachable for a request `classify` accepted.
                local.drop_packet(DropReason::Malformed);
            }
        }
        if !tx.is_empty() {
            if let Err(e) = socket.send_batch(&mut tx) {
                tracing::debug!(socket = ctx.id.0, "send failed: {e}");
            }
        }
        local.flush(&ctx.counters);
    }
}

/// Decides what to do with datagram `i` of the batch: the answer to send,
/// or `None` when it is dealt with (counted here or handed to the event
/// loop).
fn classify(
    ctx: &WorkerCtx,
    snap: &Snapshot,
    rx: &RecvBatch,
    i: usize,
    now: Instant,
    seen_local: &mut Vec<IpAddr>,
    local: &mut Totals,
) -> Option<Plan> {
    let (meta, data) = rx.get(i)?;
    if rx.is_truncated(i) {
        local.received += 1;
        local.drop_packet(DropReason::Malformed);
        return None;
    }
    if ctx.instance == InstanceId::DEFAULT
        && meta.ifindex.is_some_and(|ifx| snap.foreign.contains(&ifx))
    {
        local.foreign += 1;
        return None;
    }
    if meta
        .ifindex
        .is_some_and(|ifx| snap.ignored.contains(&(ctx.instance, ifx)))
    {
        local.ignored += 1;
        return None;
    }
    // The first datagram to each local address goes to the event loop, so
    // the node learns the address (loop detection).
    let new_local = meta
        .dst_ip
        .filter(|ip| !seen_local.contains(ip) && seen_local.len() < MAX_SEEN_LOCAL);
    let plan = match new_local {
        Some(ip) => {
            seen_local.push(ip);
            Plan::ToNode
        }
        None => snap
            .responder
            .plan(now, ctx.instance, ctx.id, meta.src.ip(), data),
    };
    if plan == Plan::ToNode {
        hand_on(ctx, meta, data, local);
        return None;
    }
    local.received += 1;
    if let Some(reason) = plan.drop_reason() {
        // A KoD DENY is refused all the same: counted, and answered.
        local.drop_packet(reason);
    }
    (!matches!(plan, Plan::Drop(_))).then_some(plan)
}

/// Hands a datagram to the event loop, as its reader task would.
fn hand_on(ctx: &WorkerCtx, meta: &strata_net::RecvMeta, data: &[u8], local: &mut Totals) {
    let d = Datagram {
        socket: ctx.id,
        meta: *meta,
        data: data.to_vec(),
    };
    match ctx.forward.try_send(d) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            local.received += 1;
            local.drop_packet(DropReason::Overload);
        }
        // The event loop is gone: the daemon is stopping.
        Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop.store(true, Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_and_name_reasons() {
        let c = WorkerCounters::default();
        let mut l = Totals {
            received: 5,
            sent: 3,
            kod_sent: 1,
            foreign: 2,
            ..Totals::default()
        };
        l.drop_packet(DropReason::RateLimited);
        l.drop_packet(DropReason::RateLimited);
        l.flush(&c);
        assert_eq!(l.received, 0, "flush resets the batch counts");
        let mut t = Totals::default();
        t.add_counters(&c);
        t.add(&t.clone());
        assert_eq!((t.received, t.sent, t.kod_sent, t.foreign), (10, 6, 2, 4));
        assert_eq!(
            t.dropped_by_reason().collect::<Vec<_>>(),
            vec![(DropReason::RateLimited, 4)]
        );
    }

    #[test]
    fn snapshots_are_taken_when_published() {
        let shared = Shared::new(std::time::Instant::now());
        let mut cached = shared.load();
        assert!(cached.1.foreign.is_empty());
        shared.refresh(&mut cached);
        let gen = cached.0;
        let mut s = Snapshot::closed();
        s.foreign = vec![7];
        shared.publish(s);
        shared.refresh(&mut cached);
        assert!(cached.0 > gen && cached.1.foreign == [7]);
    }
}
