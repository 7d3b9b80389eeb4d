//! Broadcast and multicast: group memberships, the sockets mode 5 is sent
//! from, and the engine's broadcast/multicast settings per instance.

use super::*;

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

/// The engine's broadcast/multicast client settings for an instance's
/// client entries `(allow-unauthenticated, key, recalibrate)`: unsigned
/// servers only when every entry allows them; a required key only when
/// every entry names the same one (else any trusted key); the shortest
/// recalibration interval.
pub(super) fn broadcast_client_settings(
    clients: &[(bool, Option<u32>, f64)],
) -> BroadcastClientConfig {
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
pub(super) fn mode5_settings(config: &Config, name: &str) -> Mode5Rt {
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
pub(super) fn resolve_ifindex(
    placement: &Placement,
    name: Option<&str>,
) -> anyhow::Result<Option<u32>> {
    let Some(name) = name else { return Ok(None) };
    let index = match placement {
        Placement::Netns(ns) => strata_net::in_netns(ns, || strata_net::ifindex(name))??,
        _ => strata_net::ifindex(name)?,
    };
    Ok(Some(index))
}
