//! VPN instances at run time: registering them with the engine, bringing
//! them up with their placement, health checks and retries.

use super::*;

impl Daemon {
    /// Registers every instance with the node (limits, access rules, local
    /// addresses); named instances start down and are brought up by
    /// [`Daemon::maintain`].
    pub(super) fn setup_instances(&mut self, config: &Config) {
        self.apply_protection(config);
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
            self.node.set_access(id, access_rules(config, name));
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
    pub(super) fn maintain(&mut self) {
        self.reap_workers();
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
                            if inst.ifindexes != ifindexes {
                                // The default instance's workers drop what
                                // arrives on these interfaces.
                                self.fast_dirty = true;
                            }
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
    pub(super) fn bring_up(&mut self, id: InstanceId) -> anyhow::Result<()> {
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
        self.apply_listener_keys();
        tracing::info!(instance = %name, placement = %placement, listeners = listen.len(), "instance up");
        Ok(())
    }

    /// Marks an instance down after a failure, closing its sockets, and
    /// schedules a retry.
    pub(super) fn take_down(&mut self, id: InstanceId, why: String) {
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
        self.fast_dirty = true;
        self.retry_later(id, why);
    }

    pub(super) fn retry_later(&mut self, id: InstanceId, why: String) {
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
}

/// The status text of a placement: `default`, `device NAME`, `netns NAME`.
pub(super) fn placement_name(placement: &Placement) -> String {
    match placement {
        Placement::Default => "default".to_owned(),
        Placement::Device(d) => format!("device {d}"),
        Placement::Netns(n) => format!("netns {n}"),
    }
}

impl Daemon {
    /// Applies `[rate-limit]`, `[access-policy]` and the `[auth]` keys to the node.
    pub(super) fn apply_protection(&mut self, config: &Config) {
        self.apply_limits(config);
        let keys = match config
            .auth
            .as_ref()
            .map(crate::config::AuthConfig::load_keys)
        {
            None => strata_engine::auth::KeyStore::new_empty(),
            Some(Ok(keys)) => keys,
            Some(Err(why)) => {
                // Validated when the configuration was loaded; the file changed since.
                tracing::warn!("keeping the previous keys: {why}");
                return;
            }
        };
        self.node.set_keys(keys);
    }
}

impl Daemon {
    /// Applies `[rate-limit]` (a changed table starts every client afresh) and
    /// `[access-policy]` to the node.
    pub(super) fn apply_limits(&mut self, config: &Config) {
        self.node
            .set_rate_limit(config.rate_limit.map(engine_rate_limit));
        self.node.set_deny_policy(match config.access_policy.deny {
            crate::config::DenyAction::Drop => strata_engine::DenyPolicy::Drop,
            crate::config::DenyAction::Kod => strata_engine::DenyPolicy::Kod,
        });
    }
}

/// The engine's rate limiter settings for `[rate-limit]`.
pub(super) fn engine_rate_limit(r: crate::config::RateLimit) -> strata_engine::RateLimitConfig {
    strata_engine::RateLimitConfig {
        // Validated to 1ms..=1d, so the conversion cannot fail.
        interval: Duration::try_from_secs_f64(r.interval).unwrap_or(Duration::from_secs(2)),
        burst: r.burst,
        max_clients: r.max_clients,
    }
}

/// The engine's access rules of instance `name`, in file order.
pub(super) fn access_rules(config: &Config, name: &str) -> Vec<AccessRule> {
    config
        .access_rules(name)
        .into_iter()
        .map(|(p, level)| AccessRule {
            prefix: p.addr,
            prefix_len: p.len,
            level,
        })
        .collect()
}

/// Whether a placement is usable now; for a device, its ifindex followed
/// by those of its lower devices (the interfaces enslaved to a VRF).
pub(super) fn placement_ifindexes(placement: &Placement) -> anyhow::Result<Vec<u32>> {
    match placement {
        Placement::Default => Ok(Vec::new()),
        Placement::Netns(name) => {
            if strata_net::netns_exists(name) {
                Ok(Vec::new())
            } else {
                Err(strata_net::NetError::NoSuchNamespace(name.clone()).into())
            }
        }
        Placement::Device(dev) => Ok(strata_net::device_ifindexes(dev)?),
    }
}

/// Whether a device-bound instance still has the device it was brought up
/// with (same ifindex); other placements always match.
pub(super) fn placement_matches(placement: &Placement, before: &[u32], now: &[u32]) -> bool {
    match placement {
        Placement::Device(_) => before.first() == now.first(),
        _ => true,
    }
}
