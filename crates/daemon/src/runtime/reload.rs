//! Reloading the configuration (SIGHUP or `stratactl reload`).
//!
//! The new file is loaded and validated first; a bad file changes nothing.
//! Sources (`[[server]]`, `[[peer]]`) are matched by instance and address:
//! unchanged ones keep their state (reach, filter), changed poll bounds are
//! applied in place, removed ones are dropped and new ones added. Listeners
//! are opened and closed to match, and access rules and session limits are
//! replaced, and so are rate limits, the deny policy and keys (the
//! fast-path workers take them with the next snapshot). Keys whose change
//! needs a restart (the clock, the control socket, instances,
//! broadcast/multicast, discipline, `[responder]`, local reference) keep
//! their running values and are named in the reply and the log.

use super::*;

impl Daemon {
    /// Re-reads the configuration file. Returns a summary, or why nothing
    /// was changed.
    pub(super) fn reload(&mut self) -> Result<String, String> {
        let Some(path) = self.config_path.clone() else {
            return Err(
                "stratad runs on its embedded default config; nothing to reload".to_owned(),
            );
        };
        let new = crate::config::load(Some(&path)).map_err(|e| format!("{e}"))?;
        let old = self.config.clone();
        let mut restart = Vec::new();
        let mut note = |changed: bool, key: &str| {
            if changed {
                restart.push(key.to_owned());
            }
        };
        note(new.clock != old.clock, "[clock]");
        note(new.control != old.control, "[control]");
        note(new.metrics != old.metrics, "[metrics]");
        note(new.instance != old.instance, "[[instance]]");
        note(new.discipline != old.discipline, "[discipline]");
        note(new.responder != old.responder, "[responder]");
        note(
            new.local_reference != old.local_reference,
            "[local-reference]",
        );
        note(
            new.multicast_server != old.multicast_server
                || new.broadcast_server != old.broadcast_server
                || new.multicast_client != old.multicast_client
                || new.broadcast_client != old.broadcast_client,
            "broadcast/multicast",
        );
        let (added, removed, changed) = self.reload_sources(&new);
        let (opened, closed) = self.reload_listeners(&new);
        for (id, inst) in &self.instances {
            let rules = access_rules(&new, &inst.name);
            self.node.set_access(*id, rules);
        }
        // Rate limits (a client's state is kept when they are unchanged),
        // the deny policy and keys; the fast-path workers take all of it
        // with the next snapshot.
        self.apply_protection(&new);
        self.fast_dirty = true;
        for i in &new.instance {
            let id = self.node.add_instance(&i.name);
            self.node.set_max_dynamic(id, i.max_dynamic_sessions);
        }
        // Keys that need a restart keep their running values.
        self.config = Config {
            clock: old.clock,
            control: old.control,
            metrics: old.metrics,
            instance: old.instance,
            discipline: old.discipline,
            responder: old.responder,
            local_reference: old.local_reference,
            multicast_server: old.multicast_server,
            broadcast_server: old.broadcast_server,
            multicast_client: old.multicast_client,
            broadcast_client: old.broadcast_client,
            ..new
        };
        let mut summary = format!(
            "reloaded {}: sources +{added} -{removed} ~{changed}, listeners +{opened} -{closed}",
            path.display()
        );
        if !restart.is_empty() {
            summary.push_str(&format!(
                "; changes to {} need a restart",
                restart.join(", ")
            ));
        }
        tracing::info!("{summary}");
        Ok(summary)
    }

    /// Matches the running sources to the new config's; returns (added,
    /// removed, changed) counts.
    fn reload_sources(&mut self, new: &Config) -> (usize, usize, usize) {
        let mut wanted: Vec<(AssociationMode, &crate::config::Server)> = new
            .server
            .iter()
            .map(|s| (AssociationMode::Client, s))
            .chain(
                new.peer
                    .iter()
                    .map(|p| (AssociationMode::SymmetricActive, p)),
            )
            .collect();
        let running: Vec<(AssociationId, AssociationMode, ClientConfig)> = self
            .node
            .configured()
            .map(|(id, mode, c)| (id, mode, c.clone()))
            .collect();
        let (mut removed, mut changed) = (0, 0);
        for (id, mode, cfg) in running {
            let name = self.instance_name(cfg.instance);
            let pos = wanted
                .iter()
                .position(|(m, s)| *m == mode && s.address == cfg.address && s.instance == name);
            match pos {
                None => {
                    self.node.remove_association(id);
                    tracing::info!(address = %cfg.address, instance = %name, "source removed");
                    removed += 1;
                }
                Some(i) => {
                    let (_, s) = wanted.swap_remove(i);
                    if (s.minpoll, s.maxpoll, s.iburst) != (cfg.minpoll, cfg.maxpoll, cfg.iburst) {
                        let updated = ClientConfig {
                            minpoll: s.minpoll,
                            maxpoll: s.maxpoll,
                            iburst: s.iburst,
                            ..cfg
                        };
                        self.node.reconfigure(id, &updated);
                        changed += 1;
                    }
                }
            }
        }
        let added = wanted.len();
        let now = self.now();
        for (mode, s) in wanted {
            let instance = self.instance(&s.instance);
            let cfg = ClientConfig {
                instance,
                address: s.address,
                minpoll: s.minpoll,
                maxpoll: s.maxpoll,
                iburst: s.iburst,
            };
            if mode == AssociationMode::Client {
                self.node.add_client(cfg, now);
            } else {
                self.node.add_peer(cfg, now);
            }
            tracing::info!(address = %s.address, instance = %s.instance, mode = mode.as_str(), "source added");
        }
        (added, removed, changed)
    }

    /// Opens and closes listeners to match the new config; returns
    /// (opened, closed) counts. Instances that are down pick the new list
    /// up when they come back.
    fn reload_listeners(&mut self, new: &Config) -> (usize, usize) {
        let (mut opened, mut closed) = (0, 0);
        let ids: Vec<InstanceId> = self.instances.keys().copied().collect();
        for id in ids {
            let Some(inst) = self.instances.get(&id) else {
                continue;
            };
            let name = inst.name.clone();
            let placement = inst.placement.clone();
            let up = inst.up;
            let want: Vec<SocketAddr> = new
                .listen
                .iter()
                .filter(|l| l.instance == name)
                .map(|l| l.address)
                .collect();
            let have = inst.listen.clone();
            if let Some(inst) = self.instances.get_mut(&id) {
                inst.listen.clone_from(&want);
            }
            let locals: Vec<IpAddr> = want
                .iter()
                .map(SocketAddr::ip)
                .filter(|ip| !ip.is_unspecified())
                .collect();
            self.node.set_local_addresses(id, &locals);
            if !up {
                continue;
            }
            for gone in have.iter().filter(|a| !want.contains(a)) {
                if let Some(sock) = self.listener_bound_to(id, *gone) {
                    self.close_socket(sock);
                    tracing::info!(address = %gone, instance = %name, "listener closed");
                    closed += 1;
                }
            }
            for addr in want.iter().filter(|a| !have.contains(a)) {
                match self.open_socket(id, *addr, true, &placement) {
                    Ok(_) => {
                        tracing::info!(address = %addr, instance = %name, "serving time");
                        opened += 1;
                    }
                    Err(e) => {
                        tracing::warn!(address = %addr, instance = %name, "cannot listen: {e:#}")
                    }
                }
            }
        }
        (opened, closed)
    }

    fn listener_bound_to(&self, instance: InstanceId, addr: SocketAddr) -> Option<SocketId> {
        self.sockets
            .iter()
            .filter(|(_, s)| s.instance == instance && s.listener)
            .map(|(id, _)| *id)
            .find(|id| self.local_addr(*id) == Some(addr))
    }
}
