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

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use strata_clock::backend::{Clock, HostRealtime, ObserveOnly, SystemClock, VirtualClock};
use strata_clock::discipline::{ClockCommand, DisciplineConfig};
use strata_engine::{
    AccessLevel as EngineAccess, AccessRule, BroadcastClientConfig, BroadcastServerConfig,
    ClientConfig, Event, InstanceId, Instant, Node, NodeConfig, RecvMeta, SocketId,
};
use strata_net::{HostTime, Placement, SocketOptions, UdpSocket};
use strata_wire::{Leap, NtpTimestamp};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use crate::config::{ClockBackend, Config, InstancePlacement, DEFAULT_INSTANCE, DEFAULT_NTP_PORT};
use crate::control::{self, InstanceCounters, Reply, Request, Session, Status};

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

struct Socket {
    io: Arc<AsyncFd<UdpSocket>>,
    instance: InstanceId,
    listener: bool,
    reader: tokio::task::JoinHandle<()>,
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
}

/// Runs the daemon until SIGINT or SIGTERM.
///
/// # Errors
/// When a socket cannot be opened, the clock cannot be read, or the clock
/// offset exceeds the panic threshold.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let initial_frequency = config.clock.drift_file.as_deref().and_then(read_drift_file);
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
        ClockBackend::System => (
            Box::new(SystemClock::new().context("opening the system clock")?),
            "system",
        ),
    };
    let node_config = NodeConfig {
        precision: -20,
        local_stratum: config.local_reference.as_ref().map(|l| l.stratum),
        discipline: discipline_config(&config),
        initial_frequency_ppm: initial_frequency,
        seed: random_seed(),
        ..NodeConfig::default()
    };
    let (rx, mut datagrams) = mpsc::channel::<Datagram>(4096);
    let mut daemon = Daemon {
        node: Node::new(node_config),
        clock,
        origin: std::time::Instant::now(),
        sockets: HashMap::new(),
        client_sockets: HashMap::new(),
        instance_names: HashMap::from([(InstanceId::DEFAULT, "default".to_owned())]),
        instances: BTreeMap::new(),
        rx,
        next_socket: 0,
        drift_file: config.clock.drift_file.clone(),
        backend_name,
    };

    daemon.setup_instances(&config);
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
    daemon.maintain();
    let now = daemon.now();
    for peer in &config.peer {
        let instance = daemon.instance(&peer.instance);
        daemon.node.add_peer(
            ClientConfig {
                instance,
                address: peer.address,
                minpoll: peer.minpoll,
                maxpoll: peer.maxpoll,
                iburst: peer.iburst,
            },
            now,
        );
        tracing::info!(address = %peer.address, instance = %peer.instance, "added symmetric peer");
    }
    for server in &config.server {
        let instance = daemon.instance(&server.instance);
        daemon.node.add_client(
            ClientConfig {
                instance,
                address: server.address,
                minpoll: server.minpoll,
                maxpoll: server.maxpoll,
                iburst: server.iburst,
            },
            now,
        );
        tracing::info!(address = %server.address, instance = %server.instance, "added server");
    }

    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlRequest>(16);
    let control_path = config.control.socket.clone();
    let control_listener = bind_control(&control_path)?;
    tokio::spawn(serve_control(control_listener, ctl_tx));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut maintenance = tokio::time::interval(MAINTENANCE_INTERVAL);
    maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(clock = backend_name, "stratad running");

    daemon.flush()?;
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
            _ = maintenance.tick() => daemon.maintain(),
            Some(req) = ctl_rx.recv() => {
                let reply = daemon.answer(&req.request);
                let _ = req.reply.send(reply);
            }
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
        }
        if let Err(e) = daemon.flush() {
            break Err(e);
        }
    };
    daemon.save_drift();
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

    /// Registers every instance with the node (limits, access rules, local
    /// addresses); named instances start down and are brought up by
    /// [`Daemon::maintain`].
    fn setup_instances(&mut self, config: &Config) {
        let now = std::time::Instant::now();
        let named = config.instance.iter().map(|i| {
            let placement = match &i.placement {
                InstancePlacement::Device(d) => Placement::Device(d.clone()),
                InstancePlacement::Netns(n) => Placement::Netns(n.clone()),
            };
            (i.name.as_str(), placement, Some(i.max_dynamic_sessions))
        });
        for (name, placement, max_dynamic) in
            std::iter::once((DEFAULT_INSTANCE, Placement::Default, None)).chain(named)
        {
            let id = self.instance(name);
            if let Some(max) = max_dynamic {
                self.node.set_max_dynamic(id, max);
            }
            let rules: Vec<AccessRule> = config
                .access_rules(name)
                .into_iter()
                .map(|(p, level)| AccessRule {
                    prefix: p.addr,
                    prefix_len: p.len,
                    level: engine_level(level),
                })
                .collect();
            self.node.set_access(id, rules);
            let listen: Vec<SocketAddr> = config
                .listen
                .iter()
                .filter(|l| l.instance == name)
                .map(|l| l.address)
                .collect();
            let locals: Vec<IpAddr> = listen
                .iter()
                .map(SocketAddr::ip)
                .filter(|ip| !ip.is_unspecified())
                .collect();
            self.node.set_local_addresses(id, &locals);
            let mode5 = mode5_settings(config, name);
            self.configure_mode5(id, config, name);
            let default = placement == Placement::Default;
            self.instances.insert(
                id,
                InstanceRt {
                    name: name.to_owned(),
                    placement,
                    listen,
                    up: default,
                    error: None,
                    retry_at: now,
                    backoff: RETRY_MIN,
                    ifindexes: Vec::new(),
                    dropped: BTreeMap::new(),
                    mode5,
                },
            );
        }
    }

    /// Checks the health of up instances (their namespace or device still
    /// exists) and retries down instances whose retry time has come.
    fn maintain(&mut self) {
        let now = std::time::Instant::now();
        let ids: Vec<InstanceId> = self.instances.keys().copied().collect();
        for id in ids {
            let Some(inst) = self.instances.get(&id) else {
                continue;
            };
            match (&inst.placement, inst.up) {
                (Placement::Default, _) => {}
                (placement, true) => match placement_ifindexes(placement) {
                    Ok(ifindexes) if placement_matches(placement, &inst.ifindexes, &ifindexes) => {
                        if let Some(inst) = self.instances.get_mut(&id) {
                            inst.ifindexes = ifindexes;
                        }
                    }
                    Ok(_) => self.take_down(id, "its device was replaced".to_owned()),
                    Err(e) => self.take_down(id, format!("{e:#}")),
                },
                (_, false) if now >= inst.retry_at => {
                    if let Err(e) = self.bring_up(id) {
                        self.retry_later(id, format!("{e:#}"));
                    }
                }
                (_, false) => {}
            }
        }
    }

    /// Opens an instance's listeners with its placement and marks it up;
    /// on failure nothing stays open.
    fn bring_up(&mut self, id: InstanceId) -> anyhow::Result<()> {
        let Some(inst) = self.instances.get(&id) else {
            bail!("unknown instance");
        };
        let placement = inst.placement.clone();
        let listen = inst.listen.clone();
        let name = inst.name.clone();
        let ifindexes = placement_ifindexes(&placement)?;
        let mut opened = Vec::new();
        for address in &listen {
            match self.open_socket(id, *address, true, &placement) {
                Ok(s) => opened.push(s),
                Err(e) => {
                    for s in opened {
                        self.close_socket(s);
                    }
                    return Err(e.context(format!("listen address {address}")));
                }
            }
        }
        if let Err(e) = self.open_mode5(id, &placement) {
            let sockets: Vec<SocketId> = self
                .sockets
                .iter()
                .filter(|(_, s)| s.instance == id)
                .map(|(k, _)| *k)
                .collect();
            for s in sockets {
                self.close_socket(s);
            }
            return Err(e);
        }
        if let Some(inst) = self.instances.get_mut(&id) {
            inst.up = true;
            inst.error = None;
            inst.backoff = RETRY_MIN;
            inst.ifindexes = ifindexes;
        }
        tracing::info!(instance = %name, placement = %placement, listeners = listen.len(), "instance up");
        Ok(())
    }

    /// Marks an instance down after a failure, closing its sockets, and
    /// schedules a retry.
    fn take_down(&mut self, id: InstanceId, why: String) {
        let sockets: Vec<SocketId> = self
            .sockets
            .iter()
            .filter(|(_, s)| s.instance == id)
            .map(|(k, _)| *k)
            .collect();
        for s in sockets {
            self.close_socket(s);
        }
        if let Some(inst) = self.instances.get_mut(&id) {
            inst.up = false;
            inst.backoff = RETRY_MIN;
            inst.ifindexes.clear();
            inst.mode5.senders.clear();
        }
        self.retry_later(id, why);
    }

    fn retry_later(&mut self, id: InstanceId, why: String) {
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        if inst.error.as_deref() != Some(why.as_str()) {
            tracing::warn!(instance = %inst.name, placement = %inst.placement, retry_s = inst.backoff.as_secs(), "instance down: {why}");
        }
        inst.error = Some(why);
        inst.retry_at = std::time::Instant::now() + inst.backoff;
        inst.backoff = (inst.backoff * 2).min(RETRY_MAX);
    }

    fn close_socket(&mut self, id: SocketId) {
        if let Some(sock) = self.sockets.remove(&id) {
            sock.reader.abort();
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
        #[allow(deprecated)]
        let io = Arc::new(AsyncFd::new(socket)?);
        let reader = tokio::spawn(read_socket(id, Arc::clone(&io), self.rx.clone()));
        self.sockets.insert(
            id,
            Socket {
                io,
                instance,
                listener,
                reader,
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
            let sender = self
                .instances
                .get(&tx.instance)
                .and_then(|i| i.mode5.senders.get(&tx.dst).copied());
            let (socket, ifindex) = match (tx.socket, sender) {
                (Some(s), _) => (Some(s), tx.ifindex),
                (None, Some((s, ifindex))) => (Some(s), ifindex),
                (None, None) => (None, tx.ifindex),
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
        while let Some(event) = self.node.poll_event() {
            match event {
                Event::Clock(ClockCommand::Step { offset }) => {
                    self.clock.step(offset)?;
                    tracing::info!(offset_s = offset, "clock stepped");
                }
                Event::Clock(ClockCommand::SetFrequency { ppm }) => {
                    self.clock.set_frequency(ppm)?;
                }
                Event::Panic { offset } => {
                    bail!("clock offset {offset:.3} s exceeds the panic threshold; not adjusting the clock (set [discipline] panic-threshold = \"0s\" to allow)");
                }
                Event::Association { id, state } => {
                    tracing::info!(
                        association = id.0,
                        state = state.as_str(),
                        "association state"
                    );
                }
                Event::SystemPeer(peer) => {
                    tracing::info!(association = ?peer.map(|p| p.0), "system peer changed");
                }
                Event::Mobilized { id, mode } => {
                    tracing::info!(
                        association = id.0,
                        mode = mode.as_str(),
                        "association mobilised"
                    );
                }
                Event::Demobilized { id } => {
                    tracing::info!(association = id.0, "association demobilised");
                }
            }
        }
        Ok(())
    }

    fn instance_name(&self, id: InstanceId) -> String {
        self.instance_names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("#{}", id.0))
    }

    fn answer(&self, request: &Request) -> Reply {
        let now = self.now();
        match request {
            Request::Status => {
                let s = self.node.status();
                let instances = self
                    .node
                    .instances()
                    .map(|(id, name, c)| {
                        let mut dropped = c
                            .dropped_by_reason()
                            .map(|(r, n)| (r.as_str().to_owned(), n))
                            .collect::<BTreeMap<_, _>>();
                        let mut received = c.received;
                        let rt = self.instances.get(&id);
                        for (reason, n) in rt.map(|i| &i.dropped).into_iter().flatten() {
                            *dropped.entry(reason.clone()).or_default() += n;
                            received += n;
                        }
                        (
                            name.to_owned(),
                            InstanceCounters {
                                received,
                                sent: c.sent,
                                dropped,
                                kod_sent: c.kod_sent,
                                state: if rt.is_none_or(|i| i.up) {
                                    "up"
                                } else {
                                    "down"
                                }
                                .to_owned(),
                                placement: rt.map_or_else(
                                    || "default".to_owned(),
                                    |i| placement_name(&i.placement),
                                ),
                                error: rt.and_then(|i| if i.up { None } else { i.error.clone() }),
                            },
                        )
                    })
                    .collect();
                Reply::Status(Status {
                    synchronized: s.synchronized,
                    stratum: s.server.stratum,
                    offset_s: s.offset,
                    frequency_ppm: s.frequency_ppm,
                    refid: s.server.reference_id.to_string(),
                    reference: s.system_peer.map(|(_, inst, addr)| {
                        if inst == InstanceId::DEFAULT {
                            addr.to_string()
                        } else {
                            format!("{addr}%{}", self.instance_name(inst))
                        }
                    }),
                    leap: leap_name(s.server.leap).to_owned(),
                    precision: s.server.precision,
                    root_delay_s: s.server.root_delay.to_seconds(),
                    root_dispersion_s: s.server.root_dispersion.to_seconds(),
                    poll: s.poll,
                    last_update_s: s.last_update.map(|t| (now - t).as_secs_f64()),
                    clock_steps: s.clock_steps,
                    clock_backend: self.backend_name.to_owned(),
                    instances,
                })
            }
            Request::Sessions => Reply::Sessions(
                self.node
                    .sessions(now)
                    .map(|s| Session {
                        instance: self.instance_name(s.instance),
                        address: s.address.to_string(),
                        mode: s.mode.as_str().to_owned(),
                        state: if s.selected {
                            "selected".to_owned()
                        } else {
                            s.state.as_str().to_owned()
                        },
                        stratum: s.stratum,
                        reach: s.reach,
                        poll: s.poll,
                        offset_s: s.offset,
                        delay_s: s.delay,
                        dispersion_s: s.dispersion,
                        jitter_s: s.jitter,
                        refid: s.reference_id.to_string(),
                        last_s: s.last_rx.map(|t| (now - t).as_secs_f64()),
                        calibrated_delay_s: s.calibrated.map(|(d, _)| d),
                        calibration_age_s: s.calibrated.map(|(_, t)| (now - t).as_secs_f64()),
                        calibrations: s.calibrations,
                    })
                    .collect(),
            ),
        }
    }

    fn save_drift(&self) {
        let Some(path) = &self.drift_file else { return };
        let ppm = self.node.status().frequency_ppm;
        if let Err(e) = write_drift_file(path, ppm) {
            tracing::warn!(path = %path.display(), "cannot write drift file: {e}");
        }
    }
}

/// The status text of a placement: `default`, `device NAME`, `netns NAME`.
fn placement_name(placement: &Placement) -> String {
    match placement {
        Placement::Default => "default".to_owned(),
        Placement::Device(d) => format!("device {d}"),
        Placement::Netns(n) => format!("netns {n}"),
    }
}

fn engine_level(level: crate::config::AccessLevel) -> EngineAccess {
    use crate::config::AccessLevel as L;
    match level {
        L::Peer => EngineAccess::Peer,
        L::Server => EngineAccess::Server,
        L::Synchronization => EngineAccess::Synchronization,
        L::Query => EngineAccess::Query,
    }
}

/// Whether a placement is usable now; for a device, its ifindex followed
/// by those of its lower devices (the interfaces enslaved to a VRF).
fn placement_ifindexes(placement: &Placement) -> anyhow::Result<Vec<u32>> {
    match placement {
        Placement::Default => Ok(Vec::new()),
        Placement::Netns(name) => {
            if strata_net::netns_exists(name) {
                Ok(Vec::new())
            } else {
                Err(strata_net::NetError::NoSuchNamespace(name.clone()).into())
            }
        }
        Placement::Device(dev) => {
            let mut out = vec![strata_net::ifindex(dev)?];
            let dir = Path::new("/sys/class/net").join(dev);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(lower) = name.to_str().and_then(|n| n.strip_prefix("lower_")) else {
                        continue;
                    };
                    if let Ok(i) = strata_net::ifindex(lower) {
                        out.push(i);
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Whether a device-bound instance still has the device it was brought up
/// with (same ifindex); other placements always match.
fn placement_matches(placement: &Placement, before: &[u32], now: &[u32]) -> bool {
    match placement {
        Placement::Device(_) => before.first() == now.first(),
        _ => true,
    }
}

impl Daemon {
    /// Tells the engine about an instance's broadcast/multicast clients and
    /// servers.
    fn configure_mode5(&mut self, id: InstanceId, config: &Config, name: &str) {
        let mc = config
            .multicast_client
            .iter()
            .filter(|c| c.instance == name);
        let bc = config
            .broadcast_client
            .iter()
            .filter(|c| c.instance == name);
        let clients: Vec<(bool, f64)> = mc
            .map(|c| (c.allow_unauthenticated, c.recalibrate))
            .chain(bc.map(|c| (c.allow_unauthenticated, c.recalibrate)))
            .collect();
        if !clients.is_empty() {
            // Every client entry of the instance must allow it.
            let allow = clients.iter().all(|(a, _)| *a);
            let recalibrate = clients
                .iter()
                .map(|(_, r)| *r)
                .fold(f64::INFINITY, f64::min);
            if !allow {
                tracing::warn!(instance = %name, "broadcast/multicast client refuses unauthenticated servers (set allow-unauthenticated = true to accept them; counted as dropped \"unauthenticated\")");
            }
            self.node.set_broadcast_client(
                id,
                Some(BroadcastClientConfig {
                    allow_unauthenticated: allow,
                    recalibrate_after: Duration::from_secs_f64(recalibrate),
                    ..BroadcastClientConfig::default()
                }),
            );
        }
        let now = self.now();
        let sends = config
            .multicast_server
            .iter()
            .filter(|m| m.instance == name)
            .map(|m| (m.group, m.poll))
            .chain(
                config
                    .broadcast_server
                    .iter()
                    .filter(|b| b.instance == name)
                    .map(|b| (b.address, b.poll)),
            );
        for (destination, poll) in sends {
            self.node.add_broadcast_server(
                BroadcastServerConfig {
                    instance: id,
                    destination,
                    socket: None,
                    ifindex: None,
                    poll,
                },
                now,
            );
            tracing::info!(%destination, instance = %name, poll, "sending mode 5");
        }
    }

    /// Opens what an instance's broadcast/multicast settings need once its
    /// listeners are open: group memberships, and the sockets mode 5 is
    /// sent from (a listener, so clients calibrate against the port that
    /// answers them).
    fn open_mode5(&mut self, id: InstanceId, placement: &Placement) -> anyhow::Result<()> {
        let Some(inst) = self.instances.get(&id) else {
            return Ok(());
        };
        let joins = inst.mode5.joins.clone();
        let sends = inst.mode5.sends.clone();
        let broadcast_client = inst.mode5.broadcast_client;
        for (group, iface) in joins {
            let ifindex = resolve_ifindex(placement, iface.as_deref())?;
            let socket = match self.wildcard_listener(id, group) {
                Some(s) => s,
                None => self
                    .open_socket(id, group, false, placement)
                    .with_context(|| format!("multicast group {group}"))?,
            };
            if let Some(sock) = self.sockets.get(&socket) {
                sock.io
                    .get_ref()
                    .join_multicast(group.ip(), ifindex.unwrap_or(0))?;
            }
            tracing::info!(%group, interface = ?iface, "joined multicast group");
        }
        let any_v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_NTP_PORT);
        if broadcast_client && self.wildcard_listener(id, any_v4).is_none() {
            self.open_socket(id, any_v4, false, placement)
                .context("broadcast client socket")?;
        }
        let mut senders = HashMap::new();
        for (dst, iface, ttl) in sends {
            let ifindex = resolve_ifindex(placement, iface.as_deref())?;
            let Some(socket) = self.listener_for(id, dst) else {
                bail!("mode-5 destination {dst}: the instance has no [[listen]] address of this family to send from and to answer the clients' calibration");
            };
            if let (Some(sock), true) = (self.sockets.get(&socket), dst.ip().is_multicast()) {
                let io = sock.io.get_ref();
                io.set_multicast_ttl(ttl)?;
                io.set_multicast_loop(false)?;
                if let Some(i) = ifindex {
                    io.set_multicast_if(i)?;
                }
            }
            senders.insert(dst, (socket, ifindex));
        }
        if let Some(inst) = self.instances.get_mut(&id) {
            inst.mode5.senders = senders;
        }
        Ok(())
    }

    fn local_addr(&self, id: SocketId) -> Option<SocketAddr> {
        self.sockets.get(&id)?.io.get_ref().local_addr().ok()
    }

    /// A listener of the instance bound to the unspecified address on the
    /// port and family of `like`.
    fn wildcard_listener(&self, instance: InstanceId, like: SocketAddr) -> Option<SocketId> {
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
    fn listener_for(&self, instance: InstanceId, dst: SocketAddr) -> Option<SocketId> {
        let mut candidates: Vec<(SocketId, SocketAddr)> = self
            .sockets
            .iter()
            .filter(|(_, s)| s.instance == instance && s.listener)
            .filter_map(|(id, _)| Some((*id, self.local_addr(*id)?)))
            .filter(|(_, a)| a.is_ipv4() == dst.is_ipv4())
            .collect();
        candidates.sort_by_key(|(id, a)| (a.port() != DEFAULT_NTP_PORT, id.0));
        candidates.first().map(|(id, _)| *id)
    }
}

/// An instance's broadcast/multicast settings from the config.
fn mode5_settings(config: &Config, name: &str) -> Mode5Rt {
    Mode5Rt {
        joins: config
            .multicast_client
            .iter()
            .filter(|c| c.instance == name)
            .map(|c| (c.group, c.interface.clone()))
            .collect(),
        broadcast_client: config.broadcast_client.iter().any(|c| c.instance == name),
        sends: config
            .multicast_server
            .iter()
            .filter(|m| m.instance == name)
            .map(|m| (m.group, m.interface.clone(), m.ttl))
            .chain(
                config
                    .broadcast_server
                    .iter()
                    .filter(|b| b.instance == name)
                    .map(|b| (b.address, b.interface.clone(), 1)),
            )
            .collect(),
        senders: HashMap::new(),
    }
}

/// The index of interface `name` as seen from the placement's network
/// namespace; `None` when no interface is named.
fn resolve_ifindex(placement: &Placement, name: Option<&str>) -> anyhow::Result<Option<u32>> {
    let Some(name) = name else { return Ok(None) };
    let index = match placement {
        Placement::Netns(ns) => strata_net::in_netns(ns, || strata_net::ifindex(name))??,
        _ => strata_net::ifindex(name)?,
    };
    Ok(Some(index))
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

fn leap_name(leap: Leap) -> &'static str {
    match leap {
        Leap::NoWarning => "none",
        Leap::AddSecond => "insert",
        Leap::DeleteSecond => "delete",
        Leap::Unsynchronized => "unsynchronized",
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

fn bind_control(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating control socket directory {}", dir.display()))?;
    }
    // A stale socket from a previous run would make bind fail.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "control socket {} is in use by a running daemon",
            path.display()
        );
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding control socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

async fn serve_control(listener: UnixListener, tx: mpsc::Sender<ControlRequest>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read).take(control::MAX_REQUEST_LEN as u64 + 1);
            let read =
                tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
            let reply = match read {
                Ok(Ok(_)) if line.len() > control::MAX_REQUEST_LEN => {
                    Reply::Error("request too long".to_owned())
                }
                Ok(Ok(_)) => match control::decode_request(&line) {
                    Ok(request) => {
                        let (reply_tx, reply_rx) = oneshot::channel();
                        if tx
                            .send(ControlRequest {
                                request,
                                reply: reply_tx,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        match reply_rx.await {
                            Ok(r) => r,
                            Err(_) => return,
                        }
                    }
                    Err(e) => Reply::Error(e.to_string()),
                },
                Ok(Err(e)) => Reply::Error(format!("bad request: {e}")),
                Err(_) => Reply::Error("timed out waiting for the request".to_owned()),
            };
            let mut out = control::encode_reply(&reply);
            out.push('\n');
            let _ = write.write_all(out.as_bytes()).await;
        });
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

fn random_seed() -> u64 {
    let t = HostTime::now();
    let pid = u64::from(std::process::id());
    #[allow(clippy::cast_sign_loss)] // mixing bits for a seed
    let secs = t.secs as u64;
    (secs << 30) ^ u64::from(t.nanos) ^ (pid << 48) ^ (pid << 7)
}
