//! Broadcast and multicast: group memberships, the sockets mode 5 is sent
//! from, and the engine's broadcast/multicast settings per instance.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context as _};
use strata_engine::{BroadcastClientConfig, BroadcastServerConfig, InstanceId, SocketId};
use strata_net::Placement;

use super::sockets::Socket;
use super::Daemon;
use crate::config::{Config, DEFAULT_NTP_PORT};

/// An instance's broadcast/multicast settings and, while it is up, the
/// sockets that carry them.
#[derive(Debug, Default)]
pub(super) struct Mode5Rt {
    /// Groups its multicast clients join, with the interface to join on.
    joins: Vec<(SocketAddr, Option<String>)>,
    /// Whether a broadcast client listens in it.
    broadcast_client: bool,
    /// Where its servers send mode 5: destination, interface, TTL.
    sends: Vec<(SocketAddr, Option<String>, u32)>,
    /// While up: the socket and interface each destination is sent through.
    pub senders: HashMap<SocketAddr, (SocketId, Option<u32>)>,
}

impl Mode5Rt {
    /// Whether it sends broadcasts (its listeners need `SO_BROADCAST`).
    pub(super) fn broadcast_send(&self) -> bool {
        self.sends.iter().any(|(d, _, _)| !d.ip().is_multicast())
    }
}

impl Daemon {
    /// Tells the engine about an instance's broadcast/multicast clients and
    /// servers.
    pub(super) fn configure_mode5(&mut self, id: InstanceId, config: &Config, name: &str) {
        let mc = config
            .multicast_client
            .iter()
            .filter(|c| c.instance == name);
        let bc = config
            .broadcast_client
            .iter()
            .filter(|c| c.instance == name);
        let clients: Vec<(bool, Option<u32>, f64)> = mc
            .map(|c| (c.allow_unauthenticated, c.key, c.recalibrate))
            .chain(bc.map(|c| (c.allow_unauthenticated, c.key, c.recalibrate)))
            .collect();
        if !clients.is_empty() {
            self.node
                .set_broadcast_client(id, Some(broadcast_client_settings(&clients)));
            if !clients.iter().all(|(a, _, _)| *a) {
                tracing::info!(instance = %name, "broadcast/multicast client follows only servers signing with a trusted key (counted as dropped \"unauthenticated\" otherwise; allow-unauthenticated = true accepts unsigned ones)");
            }
        }
        let now = self.now();
        let sends = config
            .multicast_server
            .iter()
            .filter(|m| m.instance == name)
            .map(|m| (m.group, m.poll, m.key))
            .chain(
                config
                    .broadcast_server
                    .iter()
                    .filter(|b| b.instance == name)
                    .map(|b| (b.address, b.poll, b.key)),
            );
        for (destination, poll, key) in sends {
            self.node.add_broadcast_server(
                BroadcastServerConfig {
                    instance: id,
                    destination,
                    socket: None,
                    ifindex: None,
                    poll,
                    key,
                },
                now,
            );
            tracing::info!(%destination, instance = %name, poll, key = ?key, "sending mode 5");
        }
    }

    /// Opens what an instance's broadcast/multicast settings need once its
    /// listeners are open: group memberships, and the sockets mode 5 is
    /// sent from (a listener, so clients calibrate against the port that
    /// answers them).
    pub(super) fn open_mode5(
        &mut self,
        id: InstanceId,
        placement: &Placement,
    ) -> anyhow::Result<()> {
        let Some(inst) = self.instances.get(id) else {
            return Ok(());
        };
        let joins = inst.mode5.joins.clone();
        let sends = inst.mode5.sends.clone();
        let broadcast_client = inst.mode5.broadcast_client;
        for (group, iface) in joins {
            let ifindex = resolve_ifindex(placement, iface.as_deref())?;
            let socket = match self.sockets.wildcard_listener(id, group) {
                Some(s) => s,
                None => self
                    .open_socket(id, group, false, placement)
                    .with_context(|| format!("multicast group {group}"))?,
            };
            if let Some(sock) = self.sockets.get(socket) {
                sock.udp()
                    .join_multicast(group.ip(), ifindex.unwrap_or(0))?;
            }
            tracing::info!(%group, interface = ?iface, "joined multicast group");
        }
        let any_v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_NTP_PORT);
        if broadcast_client && self.sockets.wildcard_listener(id, any_v4).is_none() {
            self.open_socket(id, any_v4, false, placement)
                .context("broadcast client socket")?;
        }
        let mut senders = HashMap::new();
        for (dst, iface, ttl) in sends {
            let ifindex = resolve_ifindex(placement, iface.as_deref())?;
            let Some(socket) = self.sockets.listener_for(id, dst) else {
                bail!("mode-5 destination {dst}: the instance has no [[listen]] address of this family to send from and to answer the clients' calibration");
            };
            let io = self.sockets.get(socket).map(Socket::udp);
            if let (Some(io), true) = (io, dst.ip().is_multicast()) {
                io.set_multicast_ttl(ttl)?;
                io.set_multicast_loop(false)?;
                if let Some(i) = ifindex {
                    io.set_multicast_if(i)?;
                }
            }
            senders.insert(dst, (socket, ifindex));
        }
        if let Some(inst) = self.instances.get_mut(id) {
            inst.mode5.senders = senders;
        }
        Ok(())
    }
}

/// The engine's broadcast/multicast client settings for an instance's
/// client entries `(allow-unauthenticated, key, recalibrate)`: unsigned
/// servers only when every entry allows them; a required key only when
/// every entry names the same one (else any trusted key); the shortest
/// recalibration interval.
fn broadcast_client_settings(clients: &[(bool, Option<u32>, f64)]) -> BroadcastClientConfig {
    let allow = clients.iter().all(|(a, _, _)| *a);
    let first = clients.first().and_then(|(_, k, _)| *k);
    let key = first.filter(|k| clients.iter().all(|(_, c, _)| *c == Some(*k)));
    let recalibrate = clients
        .iter()
        .map(|(_, _, r)| *r)
        .fold(f64::INFINITY, f64::min);
    BroadcastClientConfig {
        allow_unauthenticated: allow,
        key,
        recalibrate_after: Duration::try_from_secs_f64(recalibrate)
            .unwrap_or(Duration::from_secs(3600)),
        ..BroadcastClientConfig::default()
    }
}

/// An instance's broadcast/multicast settings from the config.
pub(super) fn settings(config: &Config, name: &str) -> Mode5Rt {
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
