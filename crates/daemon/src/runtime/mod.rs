//! The daemon's event loop: sockets, timers, the control socket and the
//! clock, wired around one [`strata_engine::Node`].
//!
//! One task owns the node and the clock. Each UDP socket has a reader task
//! that forwards datagrams (with their kernel receive timestamps) over a
//! channel; the control socket's tasks forward requests the same way. After
//! every input the loop drains the node's transmits (reading the clock
//! right before each, so the transmit timestamp is as late as possible)
//! and its events (clock commands are applied in order).
//!
//! # Instances
//!
//! Every `[[instance]]` is one engine instance whose sockets (listeners and
//! client sockets) are opened with its placement: bound to a device
//! (`SO_BINDTODEVICE`) or created inside a named network namespace. An
//! instance whose device or namespace is missing, or disappears, is marked
//! down, its sockets are closed, and it is retried every few seconds
//! (bounded backoff) while the other instances keep running; the daemon
//! never exits for it. A socket of the default instance drops (counting
//! `foreign-instance`) datagrams that arrived on an interface of a
//! device-bound instance, so VPN traffic never leaks into the default
//! instance.
//!
//! # The fast path
//!
//! A `[[listen]]` socket is read by worker threads instead of a reader
//! task (`[responder] workers`, default one per core; see `fastpath.rs`):
//! they answer plain client requests themselves, in batches, from a
//! snapshot of the server state this loop publishes, and hand every other
//! datagram to this loop as the reader task would. With `workers = 0`
//! listeners have reader tasks like every other socket.

mod fastpath;
mod instances;
mod kernel;
pub mod metrics;
mod mode5;
mod reload;
mod status;
pub mod trace;

use self::instances::*;
use self::mode5::*;
use self::status::*;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_clock::backend::{Clock, HostRealtime, ObserveOnly, SystemClock, VirtualClock};
use strata_clock::discipline::{ClockCommand, DisciplineConfig};
use strata_engine::{
    AccessRule, AssociationId, AssociationMode, BroadcastClientConfig, BroadcastServerConfig,
    ClientConfig, Event, InstanceId, Instant, Node, NodeConfig, RecvMeta, Route, SocketId,
};
use strata_net::{HostTime, Placement, SocketOptions, UdpSocket};
use strata_wire::{Leap, NtpTimestamp};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use crate::config::{ClockBackend, Config, InstancePlacement, DEFAULT_INSTANCE, DEFAULT_NTP_PORT};
use crate::control::{self, InstanceCounters, Reply, Request, Session, Status};

/// How often the frequency estimate is written to the drift file.
const DRIFT_INTERVAL: Duration = Duration::from_secs(3600);
/// How often instance health is checked and down instances are retried.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// The first retry delay of a down instance.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest retry delay of a down instance.
const RETRY_MAX: Duration = Duration::from_secs(8);
/// The drop reason counted by the daemon for datagrams that reached the
/// default instance through an interface of a device-bound instance.
pub const FOREIGN_INSTANCE: &str = "foreign-instance";

/// The daemon's view of one instance: placement, listeners and health.
struct InstanceRt {
    name: String,
    placement: Placement,
    /// The `[[listen]]` addresses of this instance.
    listen: Vec<SocketAddr>,
    up: bool,
    /// Why the instance is down (or its last failure).
    error: Option<String>,
    retry_at: std::time::Instant,
    backoff: Duration,
    /// Device-bound: the device's ifindex and those of its lower devices
    /// (the interfaces enslaved to a VRF).
    ifindexes: Vec<u32>,
    /// Datagrams dropped by the daemon itself, by reason.
    dropped: BTreeMap<String, u64>,
    /// Broadcast and multicast settings.
    mode5: Mode5Rt,
}

/// An instance's broadcast/multicast settings and, while it is up, the
/// sockets that carry them.
#[derive(Debug, Default)]
struct Mode5Rt {
    /// Groups its multicast clients join, with the interface to join on.
    joins: Vec<(SocketAddr, Option<String>)>,
    /// Whether a broadcast client listens in it.
    broadcast_client: bool,
    /// Where its servers send mode 5: destination, interface, TTL.
    sends: Vec<(SocketAddr, Option<String>, u32)>,
    /// While up: the socket and interface each destination is sent through.
    senders: HashMap<SocketAddr, (SocketId, Option<u32>)>,
}

impl Mode5Rt {
    fn broadcast_send(&self) -> bool {
        self.sends.iter().any(|(d, _, _)| !d.ip().is_multicast())
    }
}

/// Largest datagram read; longer ones are truncated and then dropped as
/// malformed by the engine.
const MAX_DATAGRAM: usize = 1500;

struct Datagram {
    socket: SocketId,
    meta: strata_net::RecvMeta,
    data: Vec<u8>,
}

struct ControlRequest {
    request: Request,
    reply: oneshot::Sender<Reply>,
}

/// A socket as the event loop holds it: registered with the runtime when
/// a reader task waits on it, or plain when fast-path workers read it (a
/// registration would wake the loop for every datagram and every send).
enum Io {
    Async(Arc<AsyncFd<UdpSocket>>),
    Plain(Arc<UdpSocket>),
}

impl Io {
    fn get_ref(&self) -> &UdpSocket {
        match self {
            Io::Async(fd) => fd.get_ref(),
            Io::Plain(s) => s,
        }
    }

    /// The runtime registration, when there is one.
    fn async_fd(&self) -> Option<&Arc<AsyncFd<UdpSocket>>> {
        match self {
            Io::Async(fd) => Some(fd),
            Io::Plain(_) => None,
        }
    }
}

struct Socket {
    io: Io,
    instance: InstanceId,
    listener: bool,
    /// The reader task, or `None` when fast-path workers read the socket.
    reader: Option<tokio::task::JoinHandle<()>>,
    /// The fast-path workers of a listener.
    workers: Option<fastpath::Workers>,
}

/// A running daemon's state, owned by the event loop.
struct Daemon {
    node: Node,
    clock: Box<dyn Clock>,
    origin: std::time::Instant,
    sockets: HashMap<SocketId, Socket>,
    /// Client sockets per (instance, IPv6?).
    client_sockets: HashMap<(InstanceId, bool), SocketId>,
    instance_names: HashMap<InstanceId, String>,
    instances: BTreeMap<InstanceId, InstanceRt>,
    rx: mpsc::Sender<Datagram>,
    next_socket: u32,
    drift_file: Option<PathBuf>,
    backend_name: &'static str,
    /// The running configuration (what a reload is compared with).
    config: Config,
    /// The file it came from; `None` for the embedded default.
    config_path: Option<PathBuf>,
    /// Pending `stratactl trace` queries.
    probes: trace::Probes,
    /// The associations as last logged.
    association_log: crate::logging::AssociationLog,
    /// What the fast-path workers read.
    fast: Arc<fastpath::Shared>,
    /// Fast-path workers per listener (0: none, listeners have readers).
    workers: usize,
    /// Workers of closed listeners that have not ended yet.
    stopping: Vec<fastpath::Workers>,
    /// Counts of ended workers, per instance.
    fast_retired: BTreeMap<InstanceId, fastpath::Totals>,
    /// The state last published to the workers.
    published: Option<fastpath::Key>,
    /// Something the workers read beyond the server state and the clock
    /// changed (access rules, policy, instances): publish again.
    fast_dirty: bool,
    /// The kernel's side of a system clock.
    kernel: kernel::KernelSync,
}

/// Runs the daemon until SIGINT or SIGTERM.
///
/// # Errors
/// When a socket cannot be opened, the clock cannot be read, or the clock
/// offset exceeds the panic threshold.
pub async fn run(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let initial_frequency = config.clock.drift_file.as_deref().and_then(read_drift_file);
    let mut kernel_frequency = None;
    let (clock, backend_name): (Box<dyn Clock>, &'static str) = match config.clock.backend {
        ClockBackend::Virtual => (
            Box::new(VirtualClock::new(
                HostRealtime,
                config.clock.initial_offset,
                config.clock.frequency_error_ppm,
            )),
            "virtual",
        ),
        ClockBackend::Observe => (Box::new(ObserveOnly::new(HostRealtime)), "observe"),
        ClockBackend::System => {
            let mut clock = SystemClock::new().context("opening the system clock")?;
            kernel_frequency = Some(clock.take_over().context("taking over the kernel clock")?);
            (Box::new(clock), "system")
        }
    };
    // Without a drift file a system clock starts from the kernel's
    // frequency (never zero), known only roughly.
    let mut discipline = discipline_config(&config);
    let initial_frequency = match (initial_frequency, kernel_frequency) {
        (None, Some(ppm)) => {
            tracing::info!(
                frequency_ppm = ppm,
                "no drift file: starting from the kernel's frequency"
            );
            discipline.initial_frequency_uncertainty_ppm = strata_clock::backend::MAX_FREQUENCY_PPM;
            Some(ppm)
        }
        (drift, _) => drift,
    };
    let kernel_sync = if kernel_frequency.is_some() {
        kernel::KernelSync::system(config.clock.max_distance)
    } else {
        kernel::KernelSync::default()
    };
    let node_config = NodeConfig {
        precision: -20,
        local_stratum: config.local_reference.as_ref().map(|l| l.stratum),
        discipline,
        initial_frequency_ppm: initial_frequency,
        ..NodeConfig::default()
    };
    // Request cookies must be unguessable: no start without the OS's
    // random number generator.
    let rng = os_seeded_rng()?;
    let (rx, mut datagrams) = mpsc::channel::<Datagram>(4096);
    let origin = std::time::Instant::now();
    let workers = config
        .responder
        .workers
        .unwrap_or_else(fastpath::default_workers);
    let mut daemon = Daemon {
        node: Node::new(node_config, rng),
        clock,
        origin,
        sockets: HashMap::new(),
        client_sockets: HashMap::new(),
        instance_names: HashMap::from([(InstanceId::DEFAULT, "default".to_owned())]),
        instances: BTreeMap::new(),
        rx,
        next_socket: 0,
        drift_file: config.clock.drift_file.clone(),
        backend_name,
        config: config.clone(),
        config_path,
        probes: trace::Probes::default(),
        association_log: crate::logging::AssociationLog::default(),
        fast: Arc::new(fastpath::Shared::new(origin)),
        workers,
        stopping: Vec::new(),
        fast_retired: BTreeMap::new(),
        published: None,
        fast_dirty: true,
        kernel: kernel_sync,
    };

    daemon.setup_instances(&config);
    // The workers of the listeners opened below start from this snapshot.
    daemon.publish_fast();
    if workers > 0 {
        tracing::info!(workers, "fast path: worker threads per listener");
    }
    for listen in config
        .listen
        .iter()
        .filter(|l| l.instance == DEFAULT_INSTANCE)
    {
        daemon
            .open_socket(
                InstanceId::DEFAULT,
                listen.address,
                true,
                &Placement::Default,
            )
            .with_context(|| format!("listen address {}", listen.address))?;
        tracing::info!(address = %listen.address, instance = %listen.instance, "serving time");
    }
    daemon
        .open_mode5(InstanceId::DEFAULT, &Placement::Default)
        .context("broadcast/multicast sockets of the default instance")?;
    daemon.apply_listener_keys();
    daemon.maintain();
    let now = daemon.now();
    for peer in &config.peer {
        let instance = daemon.instance(&peer.instance);
        let id = daemon.node.add_peer(
            ClientConfig {
                instance,
                address: peer.address,
                minpoll: peer.minpoll,
                maxpoll: peer.maxpoll,
                iburst: peer.iburst,
            },
            now,
        );
        daemon.node.set_association_key(id, peer.key);
        tracing::info!(address = %peer.address, instance = %peer.instance, "added symmetric peer");
    }
    for server in &config.server {
        let instance = daemon.instance(&server.instance);
        let id = daemon.node.add_client(
            ClientConfig {
                instance,
                address: server.address,
                minpoll: server.minpoll,
                maxpoll: server.maxpoll,
                iburst: server.iburst,
            },
            now,
        );
        daemon.node.set_association_key(id, server.key);
        tracing::info!(address = %server.address, instance = %server.instance, "added server");
    }

    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlRequest>(16);
    let control_path = config.control.socket.clone();
    let control_listener = bind_control(&control_path)?;
    if let Some(address) = config.metrics {
        tokio::spawn(metrics::serve(
            metrics::bind(address).await?,
            ctl_tx.clone(),
        ));
        tracing::info!(%address, "serving metrics");
    }
    tokio::spawn(serve_control(control_listener, ctl_tx));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut drift_timer =
        tokio::time::interval_at(tokio::time::Instant::now() + DRIFT_INTERVAL, DRIFT_INTERVAL);
    let mut maintenance = tokio::time::interval(MAINTENANCE_INTERVAL);
    maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(clock = backend_name, "stratad running");
    crate::notify::ready(&format!("serving, clock {backend_name}"));

    daemon.flush()?;
    let clock_watch = daemon.kernel.watch.clone();
    let result = loop {
        let deadline = daemon
            .node
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(daemon.now())
            });
        tokio::select! {
            Some(d) = datagrams.recv() => {
                daemon.handle_datagram(&d);
                // Take what else is queued before flushing.
                while let Ok(d) = datagrams.try_recv() {
                    daemon.handle_datagram(&d);
                }
            }
            () = tokio::time::sleep(deadline) => {
                let now = daemon.now();
                daemon.node.handle_timeout(now);
            }
            () = kernel::clock_set(clock_watch.clone()) => daemon.kernel.external_change(),
            _ = maintenance.tick() => {
                daemon.maintain();
                let now = daemon.now();
                let synchronized = daemon.node.status().synchronized;
                daemon.kernel.tick(now, synchronized);
                // Selection roles change without an event.
                daemon.log_associations();
            }
            Some(req) = ctl_rx.recv() => {
                let reply = match req.request {
                    Request::Reload => match daemon.reload() {
                        Ok(summary) => Reply::Done(summary),
                        Err(why) => {
                            tracing::error!("reload rejected, the running configuration stays: {why}");
                            Reply::Error(format!("reload rejected, the running configuration stays: {why}"))
                        }
                    },
                    Request::Trace { ref address, ref instance } => {
                        daemon.start_trace(address.as_deref(), instance.as_deref(), req.reply);
                        continue;
                    }
                    ref other => daemon.answer(other),
                };
                let _ = req.reply.send(reply);
            }
            _ = sighup.recv() => {
                crate::notify::status("reloading");
                match daemon.reload() {
                    Ok(summary) => crate::notify::status(&summary),
                    Err(why) => {
                        tracing::error!("reload rejected, the running configuration stays: {why}");
                        crate::notify::status("reload rejected; running the previous configuration");
                    }
                }
            }
            _ = drift_timer.tick() => daemon.save_drift(),
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
        }
        if let Err(e) = daemon.flush() {
            break Err(e);
        }
    };
    crate::notify::stopping();
    daemon.save_drift();
    let drift = daemon.node.status().frequency_ppm;
    if let Err(e) = daemon.clock.release(drift) {
        tracing::warn!("cannot leave the kernel clock unsynchronised: {e}");
    }
    let _ = std::fs::remove_file(&control_path);
    tracing::info!("stratad stopped");
    result
}

impl Daemon {
    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn instance(&mut self, name: &str) -> InstanceId {
        let id = self.node.add_instance(name);
        self.instance_names.insert(id, name.to_owned());
        id
    }

    fn close_socket(&mut self, id: SocketId) {
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

    fn open_socket(
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

    fn client_socket(&mut self, instance: InstanceId, v6: bool) -> anyhow::Result<SocketId> {
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

    fn handle_datagram(&mut self, d: &Datagram) {
        let Some(sock) = self.sockets.get(&d.socket) else {
            return;
        };
        if sock.instance == InstanceId::DEFAULT && self.is_foreign(d.meta.ifindex) {
            if let Some(inst) = self.instances.get_mut(&InstanceId::DEFAULT) {
                *inst.dropped.entry(FOREIGN_INSTANCE.to_owned()).or_default() += 1;
            }
            return;
        }
        let host = NtpTimestamp::from_unix(d.meta.rx_time.secs, d.meta.rx_time.nanos);
        let meta = RecvMeta {
            instance: sock.instance,
            socket: d.socket,
            listener: sock.listener,
            src: d.meta.src,
            dst_ip: d.meta.dst_ip,
            ifindex: d.meta.ifindex,
            rx_time: self.clock.from_host(host),
        };
        if self
            .probes
            .deliver(d.socket, d.meta.src, &d.data, meta.rx_time)
        {
            return;
        }
        let now = self.now();
        self.node.handle_datagram(now, &meta, &d.data);
    }

    /// Whether `ifindex` belongs to an up device-bound instance.
    fn is_foreign(&self, ifindex: Option<u32>) -> bool {
        ifindex.is_some_and(|i| {
            self.instances.values().any(|inst| {
                inst.up
                    && matches!(inst.placement, Placement::Device(_))
                    && inst.ifindexes.contains(&i)
            })
        })
    }

    /// Sends what the node wants sent and applies its events.
    fn flush(&mut self) -> anyhow::Result<()> {
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            let clock_now = self.clock.now()?;
            let Some(tx) = self.node.poll_transmit(clock_now, &mut buf) else {
                break;
            };
            let (socket, ifindex) = match tx.route {
                Route::Socket(s) => (Some(s), tx.ifindex),
                Route::Broadcast => self
                    .instances
                    .get(&tx.instance)
                    .and_then(|i| i.mode5.senders.get(&tx.dst).copied())
                    .map_or((None, tx.ifindex), |(s, ifindex)| (Some(s), ifindex)),
                Route::Listener => (self.listener_for(tx.instance, tx.dst), tx.ifindex),
                Route::Client => (None, tx.ifindex),
            };
            let socket = match socket {
                Some(s) => s,
                None => match self.client_socket(tx.instance, tx.dst.is_ipv6()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(dst = %tx.dst, "no client socket: {e:#}");
                        continue;
                    }
                },
            };
            let Some(sock) = self.sockets.get(&socket) else {
                continue;
            };
            let transmit = strata_net::Transmit {
                dst: tx.dst,
                src_ip: tx.src_ip,
                ifindex,
            };
            if let Err(e) = sock.io.get_ref().send(&buf[..tx.len], &transmit) {
                tracing::debug!(dst = %tx.dst, "send failed: {e}");
            }
        }
        let mut associations_changed = false;
        while let Some(event) = self.node.poll_event() {
            match event {
                Event::Clock(ClockCommand::Step { offset }) => {
                    self.clock.step(offset)?;
                    self.kernel.after_own_step();
                    tracing::info!(offset_s = offset, "clock stepped");
                }
                Event::Clock(ClockCommand::SetFrequency { ppm }) => {
                    self.clock.set_frequency(ppm)?;
                }
                Event::Panic { offset } => {
                    bail!("clock offset {offset:.3} s exceeds the panic threshold; not adjusting the clock (set [discipline] panic-threshold = \"0s\" to allow)");
                }
                // Logged with the association's address by log_associations.
                Event::Association { .. }
                | Event::SystemPeer(_)
                | Event::Mobilized { .. }
                | Event::Demobilized { .. } => associations_changed = true,
            }
        }
        if associations_changed {
            self.log_associations();
        }
        if self.kernel.enabled {
            if let Some(sync) = self.kernel.on_status(&self.node.status()) {
                if let Err(e) = self.clock.set_sync_status(sync) {
                    tracing::warn!("cannot set the kernel's sync status: {e}");
                }
            }
        }
        self.publish_fast_if_changed();
        Ok(())
    }

    /// What the workers compare to tell whether to take a new snapshot.
    fn fast_key(&self) -> fastpath::Key {
        (
            self.node.server_state(NtpTimestamp::ZERO),
            self.node.policy_generation(),
            self.clock.host_map(),
        )
    }

    fn publish_fast_if_changed(&mut self) {
        if self.fast_dirty || self.published != Some(self.fast_key()) {
            self.publish_fast();
        }
    }

    /// Publishes a new snapshot to the fast-path workers.
    fn publish_fast(&mut self) {
        let key = self.fast_key();
        let foreign = self
            .instances
            .values()
            .filter(|i| i.up && matches!(i.placement, Placement::Device(_)))
            .flat_map(|i| i.ifindexes.iter().copied())
            .collect();
        self.fast.publish(fastpath::Snapshot {
            responder: self.node.responder(NtpTimestamp::ZERO),
            map: key.2,
            foreign,
        });
        self.published = Some(key);
        self.fast_dirty = false;
    }

    /// Folds the counts of ended workers into the per-instance totals.
    fn reap_workers(&mut self) {
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
    fn fast_totals(&self, instance: InstanceId) -> fastpath::Totals {
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

    fn save_drift(&self) {
        let Some(path) = &self.drift_file else { return };
        let ppm = self.node.status().frequency_ppm;
        if let Err(e) = write_drift_file(path, ppm) {
            tracing::warn!(path = %path.display(), "cannot write drift file: {e}");
        }
    }
}

/// The discipline constants: the configured thresholds, and a poll range
/// spanning the sources' own (the loop's time constant follows the poll, so
/// a lab polling every 2^-2 s must not be held to the RFC's 2^4 s floor).
fn discipline_config(config: &Config) -> DisciplineConfig {
    let defaults = DisciplineConfig::default();
    let polls = config
        .server
        .iter()
        .chain(&config.peer)
        .map(|s| (s.minpoll, s.maxpoll));
    let (min_poll, max_poll) = polls
        .fold(None, |acc: Option<(i8, i8)>, (lo, hi)| {
            Some(acc.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))))
        })
        .unwrap_or((defaults.min_poll, defaults.max_poll));
    DisciplineConfig {
        step_threshold: config.discipline.step_threshold,
        stepout: config.discipline.stepout,
        panic_threshold: config.discipline.panic_threshold,
        min_poll,
        max_poll,
        ..defaults
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

fn read_drift_file(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v.abs() <= 500.0 => Some(v),
        _ => {
            tracing::warn!(path = %path.display(), "ignoring a corrupt drift file");
            None
        }
    }
}

fn write_drift_file(path: &Path, ppm: f64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{ppm:.6}\n"))?;
    std::fs::rename(&tmp, path)
}

/// The engine's cookie generator: ChaCha20 keyed from the operating
/// system (`getrandom`).
///
/// # Errors
/// When the OS generator fails: the daemon then refuses to start rather
/// than send guessable cookies.
fn os_seeded_rng() -> anyhow::Result<ChaCha20Rng> {
    let mut seed = <ChaCha20Rng as SeedableRng>::Seed::default();
    getrandom::fill(&mut seed).map_err(|e| {
        anyhow::anyhow!("cannot seed request cookies from the operating system (getrandom): {e}")
    })?;
    Ok(ChaCha20Rng::from_seed(seed))
}
