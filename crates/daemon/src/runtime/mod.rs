//! The daemon's event loop: sockets, timers, the control socket and the
//! clock, wired around one [`strata_engine::Node`].
//!
//! One task owns the node and the clock, and the runtime's parts, each with
//! its own methods: the UDP sockets (`sockets.rs`: the socket table, reader
//! tasks, fast-path workers), the instances (`instances.rs`: placement,
//! health and retries), the fast path's published snapshot (`fastpath.rs`),
//! broadcast and multicast (`mode5.rs`), and the control side (`status.rs`,
//! `trace.rs`, `metrics.rs`). Each UDP socket has a reader task that
//! forwards datagrams (with their kernel receive timestamps) over a channel;
//! the control socket's tasks forward requests the same way. After every
//! input the loop drains the node's transmits (reading the clock right
//! before each, so the transmit timestamp is as late as possible) and its
//! events (clock commands are applied in order).
//!
//! # Configuration
//!
//! Start-up is a reload from an empty configuration ([`Config::empty`]):
//! `apply.rs` is the one code path that applies a configuration, at start
//! and on SIGHUP or `stratactl reload`.
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
//! they answer plain client requests themselves, in batches, with the
//! engine's `Responder` snapshot this loop publishes, and hand every other
//! datagram to this loop as the reader task would. With `workers = 0`
//! listeners have reader tasks like every other socket.

mod apply;
mod fastpath;
mod instances;
mod kernel;
pub mod metrics;
mod mode5;
mod sockets;
mod source;
mod status;
pub mod trace;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_clock::backend::{Clock, HostRealtime, ObserveOnly, SystemClock, VirtualClock};
use strata_clock::discipline::{ClockCommand, DisciplineConfig};
use strata_engine::{Event, InstanceId, Instant, Node, NodeConfig, RecvMeta, Route, SocketId};
use strata_net::{Placement, Transmit};
use strata_wire::NtpTimestamp;
use tokio::sync::{mpsc, oneshot};

use self::apply::Stage;
use self::fastpath::Publisher;
use self::instances::Instances;
use self::sockets::{Datagram, Sockets, MAX_DATAGRAM};
use crate::config::{ClockBackend, Config};
use crate::control::{Reply, Request};

/// How often the frequency estimate is written to the drift file.
const DRIFT_INTERVAL: Duration = Duration::from_secs(3600);
/// How often instance health is checked and down instances are retried.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// The drop reason counted by the daemon for datagrams that reached the
/// default instance through an interface of a device-bound instance.
pub const FOREIGN_INSTANCE: &str = "foreign-instance";
/// The drop reason counted by the daemon for datagrams that arrived on an interface the
/// instance ignores (`ignore-interfaces`, `[interfaces] ignore`).
pub const IGNORED_INTERFACE: &str = "ignored-interface";

/// A control request with where its reply goes.
struct ControlRequest {
    request: Request,
    reply: oneshot::Sender<Reply>,
}

/// A running daemon's state, owned by the event loop.
struct Daemon {
    node: Node,
    clock: Box<dyn Clock>,
    origin: std::time::Instant,
    /// The UDP sockets and what reads them.
    sockets: Sockets,
    /// The instances: placement, health, broadcast/multicast settings.
    instances: Instances,
    /// What the fast-path workers were last given.
    fast: Publisher,
    drift_file: Option<PathBuf>,
    backend_name: &'static str,
    /// The running configuration (what the next one is applied against).
    config: Config,
    /// The file it came from; `None` for the embedded default.
    config_path: Option<PathBuf>,
    /// Pending `stratactl trace` queries.
    probes: trace::Probes,
    /// The associations as last logged.
    association_log: crate::logging::AssociationLog,
    /// The kernel's side of a system clock.
    kernel: kernel::KernelSync,
    /// The source addresses of unicast sources that set one.
    source_addrs: source::SourceAddrs,
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
    let (to_loop, mut datagrams) = mpsc::channel::<Datagram>(4096);
    let origin = std::time::Instant::now();
    let workers = config
        .responder
        .workers
        .unwrap_or_else(fastpath::default_workers);
    let fast = Publisher::new(origin);
    let mut daemon = Daemon {
        node: Node::new(node_config, rng),
        clock,
        origin,
        sockets: Sockets::new(to_loop, workers, fast.shared()),
        instances: Instances::default(),
        fast,
        drift_file: config.clock.drift_file.clone(),
        backend_name,
        config: Config::empty(),
        config_path,
        probes: trace::Probes::default(),
        association_log: crate::logging::AssociationLog::default(),
        kernel: kernel_sync,
        source_addrs: source::SourceAddrs::default(),
    };
    if workers > 0 {
        tracing::info!(workers, "fast path: worker threads per listener");
    }
    let control_path = config.control.socket.clone();
    let metrics = config.metrics;
    daemon.apply(config, Stage::Start)?;
    daemon.maintain();

    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlRequest>(16);
    let control_listener = status::bind_control(&control_path)?;
    if let Some(address) = metrics {
        tokio::spawn(metrics::serve(
            metrics::bind(address).await?,
            ctl_tx.clone(),
        ));
        tracing::info!(%address, "serving metrics");
    }
    tokio::spawn(status::serve_control(control_listener, ctl_tx));

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
                daemon.refresh_ignored();
                daemon.refresh_source_addrs(false);
                // Selection roles change without an event.
                daemon.log_associations();
            }
            Some(req) = ctl_rx.recv() => {
                let reply = match req.request {
                    Request::Reload => match daemon.reload() {
                        Ok(summary) => Reply::Done(summary),
                        Err(why) => Reply::Error(format!("reload rejected, the running configuration stays: {why}")),
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
                    Err(_) => crate::notify::status("reload rejected; running the previous configuration"),
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

    /// Opens a socket of an instance with its placement; a listener of an instance that sends
    /// broadcasts may send them.
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
                .get(instance)
                .is_some_and(|i| i.mode5.broadcast_send());
        let options = sockets::options(local, placement, broadcast);
        self.sockets.open(instance, options, listener)
    }

    /// The client socket of an instance for the family of an address, opened on first use;
    /// an instance whose placement cannot open one is taken down.
    fn client_socket(&mut self, instance: InstanceId, v6: bool) -> anyhow::Result<SocketId> {
        if let Some(id) = self.sockets.client(instance, v6) {
            return Ok(id);
        }
        let local = if v6 {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        };
        let placement = match self.instances.get(instance) {
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
                self.sockets.set_client(instance, v6, id);
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

    /// Takes the `source`/`source-interface` settings of the running configuration (`all`)
    /// or only looks interface addresses up again when it is time.
    fn refresh_source_addrs(&mut self, all: bool) {
        let instances = &self.instances;
        let placement = |id| {
            instances
                .get(id)
                .map(|i| i.placement.clone())
                .unwrap_or_default()
        };
        if all {
            let id_of = |name: &str| {
                instances
                    .iter()
                    .find(|(_, i)| i.name == name)
                    .map(|(id, _)| id)
            };
            self.source_addrs.set(&self.config, id_of, placement);
        } else {
            self.source_addrs.maybe_refresh(placement);
        }
    }

    fn handle_datagram(&mut self, d: &Datagram) {
        let Some(sock) = self.sockets.get(d.socket) else {
            return;
        };
        if sock.instance == InstanceId::DEFAULT && self.instances.is_foreign(d.meta.ifindex) {
            self.instances.count_foreign();
            return;
        }
        if self.instances.drop_ignored(sock.instance, d.meta.ifindex) {
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
                    .get(tx.instance)
                    .and_then(|i| i.mode5.senders.get(&tx.dst).copied())
                    .map_or((None, tx.ifindex), |(s, ifindex)| (Some(s), ifindex)),
                Route::Listener => (self.sockets.listener_for(tx.instance, tx.dst), tx.ifindex),
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
            let mut src_ip = tx.src_ip;
            if tx.route != Route::Broadcast && src_ip.is_none() {
                match self.source_addrs.for_remote(tx.instance, tx.dst) {
                    source::Src::Any => {}
                    source::Src::From(ip) => src_ip = Some(ip),
                    source::Src::Unavailable => continue,
                }
            }
            let transmit = Transmit {
                dst: tx.dst,
                src_ip,
                ifindex,
            };
            self.sockets.send(socket, &buf[..tx.len], &transmit);
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
                Event::Refused {
                    instance,
                    address,
                    reason,
                } => log_refused(&self.instances.name(instance), address, reason),
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
        self.publish_fast(false);
        Ok(())
    }

    /// Publishes a new snapshot to the fast-path workers when what they read changed, or
    /// always when `force` is set.
    fn publish_fast(&mut self, force: bool) {
        let foreign = self.instances.foreign_ifindexes();
        let ignored = self.instances.ignored();
        self.fast
            .publish(&self.node, self.clock.as_ref(), foreign, ignored, force);
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
        // An observe-only clock is never adjusted: the estimator must
        // know, or its frequency estimate runs off.
        steered: config.clock.backend != ClockBackend::Observe,
        ..defaults
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

/// The first refused mode-5 packet of a server: by default a broadcast/multicast client
/// follows only signed servers, so a plain setup would otherwise fail without a word.
fn log_refused(instance: &str, server: SocketAddr, reason: strata_engine::DropReason) {
    if reason == strata_engine::DropReason::Unauthenticated {
        tracing::warn!(
            %instance, %server,
            "refusing unsigned mode-5 packets from {server}: the broadcast/multicast client of instance \"{instance}\" follows only signed servers; set `key` (a trusted key the server signs with) or `allow-unauthenticated = true` on its [[multicast-client]]/[[broadcast-client]]"
        );
    } else {
        tracing::warn!(
            %instance, %server,
            "refusing mode-5 packets from {server}: signed with a key the broadcast/multicast client of instance \"{instance}\" does not accept; set `key` on its [[multicast-client]]/[[broadcast-client]] to the server's key and list it in [auth] trusted-keys"
        );
    }
}
