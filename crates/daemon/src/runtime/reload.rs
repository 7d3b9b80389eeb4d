//! Reloading the configuration (SIGHUP or `stratactl reload`).
//!
//! The new file is loaded and validated first, with its keys file (a
//! malformed one, or one readable by group or others, is an error); a bad
//! file changes nothing. Sources (`[[server]]`, `[[peer]]`) are matched by
//! instance and address: unchanged ones keep their state (reach, filter),
//! changed poll bounds and keys are applied in place, removed ones are
//! dropped and new ones added. Listeners are opened and closed to match and
//! take their new `key`; access rules, session limits, `[access-policy]`,
//! `[rate-limit]` and the `[auth]` keys are replaced (the fast-path workers
//! take them with the next snapshot). Keys whose change
//! needs a restart (the clock, the control socket, metrics, logging,
//! `[responder]`, instances, broadcast/multicast, discipline, local reference) keep their running
//! values and are named in the reply and the log; a reload whose keys file
//! lacks a key those running values still use is refused.

use super::*;

use strata_engine::auth::KeyStore;

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
        // Read the keys once more: what was validated is what runs (the file
        // may change between two reads; either read failing refuses it).
        let keys = match &new.auth {
            None => KeyStore::new_empty(),
            Some(auth) => auth.load_keys().map_err(|e| e.to_string())?,
        };
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
        note(new.log != old.log, "[log]");
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
        // Keys that need a restart keep their running values.
        let merged = Config {
            clock: old.clock.clone(),
            control: old.control.clone(),
            metrics: old.metrics,
            log: old.log.clone(),
            instance: old.instance.clone(),
            discipline: old.discipline.clone(),
            responder: old.responder,
            local_reference: old.local_reference,
            multicast_server: old.multicast_server.clone(),
            broadcast_server: old.broadcast_server.clone(),
            multicast_client: old.multicast_client.clone(),
            broadcast_client: old.broadcast_client.clone(),
            ..new.clone()
        };
        check_running_keys(&merged, &keys)?;
        self.node.set_keys(keys);
        self.apply_limits(&merged);
        let (added, removed, changed) = self.reload_sources(&new);
        let (opened, closed) = self.reload_listeners(&new);
        for (id, inst) in &self.instances {
            let rules = access_rules(&new, &inst.name);
            self.node.set_access(*id, rules);
        }
        for i in &new.instance {
            let id = self.node.add_instance(&i.name);
            self.node.set_max_dynamic(id, i.max_dynamic_sessions);
        }
        self.config = merged;
        // Publishes the new keys, limits and rules to the fast-path workers.
        self.apply_listener_keys();
        let mut summary = format!(
            "reloaded {}: sources +{added} -{removed} ~{changed}, listeners +{opened} -{closed}",
            path.display()
        );
        let mut applied = Vec::new();
        if new.auth.is_some() || old.auth.is_some() {
            applied.push(format!("keys {}", self.node.keys().len()));
        }
        if new.rate_limit != old.rate_limit {
            applied.push("[rate-limit] changed".to_owned());
        }
        if new.access_policy != old.access_policy {
            applied.push("[access-policy] changed".to_owned());
        }
        if !applied.is_empty() {
            summary.push_str(&format!(", {}", applied.join(", ")));
        }
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
                    let polls_changed =
                        (s.minpoll, s.maxpoll, s.iburst) != (cfg.minpoll, cfg.maxpoll, cfg.iburst);
                    let key_changed = self.node.association_key(id) != s.key;
                    if polls_changed {
                        let updated = ClientConfig {
                            minpoll: s.minpoll,
                            maxpoll: s.maxpoll,
                            iburst: s.iburst,
                            ..cfg
                        };
                        self.node.reconfigure(id, &updated);
                    }
                    if key_changed {
                        self.node.set_association_key(id, s.key);
                        tracing::info!(address = %cfg.address, instance = %name, key = ?s.key, "source key changed");
                    }
                    if polls_changed || key_changed {
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
            let id = if mode == AssociationMode::Client {
                self.node.add_client(cfg, now)
            } else {
                self.node.add_peer(cfg, now)
            };
            self.node.set_association_key(id, s.key);
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

    /// Registers every open listener with the node, with the key it
    /// requires (`[[listen]] key`, matched in the running config),
    /// and publishes the result to the fast-path workers at once (until
    /// then, a worker of a listener opened since the last snapshot hands
    /// everything to the event loop).
    pub(super) fn apply_listener_keys(&mut self) {
        let listeners: Vec<(SocketId, InstanceId)> = self
            .sockets
            .iter()
            .filter(|(_, s)| s.listener)
            .map(|(id, s)| (*id, s.instance))
            .collect();
        self.node.clear_listeners();
        for (socket, instance) in listeners {
            let name = self.instance_name(instance);
            let local = self.local_addr(socket);
            let key = self
                .config
                .listen
                .iter()
                .find(|l| l.instance == name && Some(l.address) == local)
                .and_then(|l| l.key);
            self.node.set_listener(socket, key);
        }
        self.publish_fast();
    }

    fn listener_bound_to(&self, instance: InstanceId, addr: SocketAddr) -> Option<SocketId> {
        self.sockets
            .iter()
            .filter(|(_, s)| s.instance == instance && s.listener)
            .map(|(id, _)| *id)
            .find(|id| self.local_addr(*id) == Some(addr))
    }
}

/// Refuses a reload whose keys lack a key that the running configuration
/// (after the reload, with the tables that need a restart kept) names.
fn check_running_keys(config: &Config, keys: &KeyStore) -> Result<(), String> {
    let named = config
        .listen
        .iter()
        .map(|l| ("[[listen]]", l.key))
        .chain(config.server.iter().map(|s| ("[[server]]", s.key)))
        .chain(config.peer.iter().map(|s| ("[[peer]]", s.key)))
        .chain(
            config
                .multicast_server
                .iter()
                .map(|m| ("[[multicast-server]]", m.key)),
        )
        .chain(
            config
                .broadcast_server
                .iter()
                .map(|b| ("[[broadcast-server]]", b.key)),
        )
        .chain(
            config
                .multicast_client
                .iter()
                .map(|m| ("[[multicast-client]]", m.key)),
        )
        .chain(
            config
                .broadcast_client
                .iter()
                .map(|b| ("[[broadcast-client]]", b.key)),
        );
    for (table, key) in named {
        let Some(k) = key else { continue };
        if keys.get(k).is_none() || !keys.is_trusted(k) {
            return Err(format!(
                "the running {table} uses key {k}, which the new keys file or trusted-keys \
                 lacks (broadcast/multicast changes need a restart)"
            ));
        }
    }
    Ok(())
}
