//! Applying a configuration: the one code path for start-up (a reload from the empty
//! configuration) and for SIGHUP or `stratactl reload`.
//!
//! The new file is loaded and validated first, with its keys file (a malformed one, or one
//! readable by group or others, is an error); a bad file changes nothing. Sources
//! (`[[server]]`, `[[peer]]`) are matched by instance and address: unchanged ones keep their
//! state (reach, filter), changed poll bounds and keys are applied in place, removed ones are
//! dropped and new ones added. Listeners are opened and closed to match and take their new
//! `key`; access rules, session limits, `[access-policy]`, `[rate-limit]` and the `[auth]`
//! keys are replaced (the fast-path workers take them with the next snapshot). Keys whose
//! change needs a restart (the clock, the control socket, metrics, logging, `[responder]`,
//! instances, broadcast/multicast, discipline, local reference) are taken at start and keep
//! their running values on a reload, which names them in the reply and the log; a reload
//! whose keys file lacks a key those running values still use is refused.

use std::path::PathBuf;

use strata_engine::auth::KeyStore;
use strata_engine::{AssociationId, AssociationMode, ClientConfig, InstanceId};
use strata_net::Placement;

use super::Daemon;
use crate::config::{Config, ConfigError, KeysFileError};

/// Whether a configuration is applied at start or to a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Start-up: everything is applied, and a listener that cannot be opened is fatal.
    Start,
    /// A reload: tables that need a restart keep their running values.
    Reload,
}

/// Why a configuration was not applied (a reload leaves the running one in place).
#[derive(Debug, thiserror::Error)]
pub(super) enum ApplyError {
    /// The daemon runs on its embedded default.
    #[error("stratad runs on its embedded default config; nothing to reload")]
    NoFile,
    /// The file does not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The keys file does not load.
    #[error(transparent)]
    Keys(#[from] KeysFileError),
    /// A table that keeps its running value names a key the new keys lack.
    #[error(
        "the running {table} uses key {key}, which the new keys file or trusted-keys lacks \
         (broadcast/multicast changes need a restart)"
    )]
    MissingKey {
        /// The table.
        table: &'static str,
        /// The key id.
        key: u32,
    },
    /// At start: a socket the configuration asks for cannot be opened.
    #[error("{what}: {source:#}")]
    Open {
        /// Which socket.
        what: String,
        /// Why.
        source: anyhow::Error,
    },
}

impl Daemon {
    /// Re-reads the configuration file and applies it. Returns a summary, or why nothing was
    /// changed (logged too).
    pub(super) fn reload(&mut self) -> Result<String, ApplyError> {
        let result = match self.config_path.clone() {
            None => Err(ApplyError::NoFile),
            Some(path) => crate::config::load(Some(&path))
                .map_err(ApplyError::from)
                .and_then(|new| self.apply(new, Stage::Reload)),
        };
        if let Err(why) = &result {
            tracing::error!("reload rejected, the running configuration stays: {why}");
        }
        result
    }

    /// Applies `new` in place of the running configuration. Returns a summary.
    pub(super) fn apply(&mut self, new: Config, stage: Stage) -> Result<String, ApplyError> {
        // Read the keys once more: what was validated is what runs (the file may change
        // between two reads; either read failing refuses it).
        let keys = match &new.auth {
            None => KeyStore::new_empty(),
            Some(auth) => auth.load_keys()?,
        };
        let old = std::mem::replace(&mut self.config, Config::empty());
        let (merged, restart) = match stage {
            Stage::Start => (new, Vec::new()),
            Stage::Reload => keep_restart_tables(&old, new),
        };
        if let Err(e) = check_running_keys(&merged, &keys) {
            self.config = old;
            return Err(e);
        }
        self.node.set_keys(keys);
        self.node
            .set_rate_limit(merged.rate_limit.map(engine_rate_limit));
        self.node
            .set_max_dynamic_total(merged.dynamic_sessions.max_total);
        self.node.set_deny_policy(match merged.access_policy.deny {
            crate::config::DenyAction::Drop => strata_engine::DenyPolicy::Drop,
            crate::config::DenyAction::Kod => strata_engine::DenyPolicy::Kod,
        });
        if stage == Stage::Start {
            self.add_instances(&merged);
        }
        let (added, removed, changed) = self.apply_sources(&merged);
        let (opened, closed, failed) = self.update_instances(&merged);
        for (address, source) in failed {
            if stage == Stage::Start {
                return Err(ApplyError::Open {
                    what: format!("listen address {address}"),
                    source,
                });
            }
            tracing::warn!(%address, "cannot listen: {source:#}");
        }
        if stage == Stage::Start {
            self.open_mode5(InstanceId::DEFAULT, &Placement::Default)
                .map_err(|source| ApplyError::Open {
                    what: "broadcast/multicast sockets of the default instance".to_owned(),
                    source,
                })?;
        }
        let auth_changed = merged.auth.is_some() || old.auth.is_some();
        let mut applied = Vec::new();
        if auth_changed {
            applied.push(format!("keys {}", self.node.keys().len()));
        }
        if merged.rate_limit != old.rate_limit {
            applied.push("[rate-limit] changed".to_owned());
        }
        if merged.access_policy != old.access_policy {
            applied.push("[access-policy] changed".to_owned());
        }
        self.config = merged;
        self.refresh_source_addrs(true);
        self.refresh_ignored();
        // Publishes the new keys, limits and rules to the fast-path workers.
        self.apply_listener_keys();
        let file = self.config_path.as_ref().map_or_else(
            || "the embedded default".to_owned(),
            |p: &PathBuf| p.display().to_string(),
        );
        let verb = if stage == Stage::Start {
            "applied"
        } else {
            "reloaded"
        };
        let mut summary = format!(
            "{verb} {file}: sources +{added} -{removed} ~{changed}, listeners +{opened} -{closed}"
        );
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
    fn apply_sources(&mut self, new: &Config) -> (usize, usize, usize) {
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
            let name = self.instances.name(cfg.instance);
            let pos = wanted
                .iter()
                .position(|(m, s)| *m == mode && s.address == cfg.address && s.instance == name);
            let Some(i) = pos else {
                self.node.remove_association(id);
                tracing::info!(address = %cfg.address, instance = %name, "source removed");
                removed += 1;
                continue;
            };
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
            // `None` for a client: only peers have a policy.
            let calibrate_changed = self.node.calibrate(id).is_some_and(|c| c != s.calibrate);
            if calibrate_changed {
                // A peer still calibrating follows it from its current volley on.
                self.node.set_calibrate(id, s.calibrate);
                tracing::info!(address = %cfg.address, instance = %name, calibrate = s.calibrate.as_str(), "peer calibrate changed");
            }
            if polls_changed || key_changed || calibrate_changed {
                changed += 1;
            }
        }
        let added = wanted.len();
        let now = self.now();
        for (mode, s) in wanted {
            let instance = self.node.add_instance(&s.instance);
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
                let id = self.node.add_peer(cfg, now);
                self.node.set_calibrate(id, s.calibrate);
                id
            };
            self.node.set_association_key(id, s.key);
            tracing::info!(address = %s.address, instance = %s.instance, mode = mode.as_str(), "source added");
        }
        (added, removed, changed)
    }

    /// Registers every open listener with the node, with the key it
    /// requires (`[[listen]] key`, matched in the running config),
    /// and publishes the result to the fast-path workers at once (until
    /// then, a worker of a listener opened since the last snapshot hands
    /// everything to the event loop).
    pub(super) fn apply_listener_keys(&mut self) {
        let listeners: Vec<_> = self.sockets.listeners().collect();
        self.node.clear_listeners();
        for (socket, instance) in listeners {
            let name = self.instances.name(instance);
            let local = self.sockets.local_addr(socket);
            let key = self
                .config
                .listen
                .iter()
                .find(|l| l.instance == name && Some(l.address) == local)
                .and_then(|l| l.key);
            self.node.set_listener(socket, key);
        }
        self.publish_fast(true);
    }
}

/// The new configuration with the tables that need a restart kept at their running values,
/// and the names of those that changed.
fn keep_restart_tables(old: &Config, new: Config) -> (Config, Vec<String>) {
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
        ..new
    };
    (merged, restart)
}

/// The engine's rate limiter settings for `[rate-limit]`.
fn engine_rate_limit(r: crate::config::RateLimit) -> strata_engine::RateLimitConfig {
    strata_engine::RateLimitConfig {
        // Validated to 1ms..=1d, so the conversion cannot fail.
        interval: std::time::Duration::try_from_secs_f64(r.interval)
            .unwrap_or(std::time::Duration::from_secs(2)),
        burst: r.burst,
        max_clients: r.max_clients,
    }
}

/// Refuses a configuration whose keys lack a key that it (with the tables that need a restart
/// kept at their running values) names.
fn check_running_keys(config: &Config, keys: &KeyStore) -> Result<(), ApplyError> {
    let named = (config.listen.iter().map(|l| ("[[listen]]", l.key)))
        .chain(config.server.iter().map(|s| ("[[server]]", s.key)))
        .chain(config.peer.iter().map(|s| ("[[peer]]", s.key)))
        .chain((config.multicast_server.iter()).map(|m| ("[[multicast-server]]", m.key)))
        .chain((config.broadcast_server.iter()).map(|b| ("[[broadcast-server]]", b.key)))
        .chain((config.multicast_client.iter()).map(|m| ("[[multicast-client]]", m.key)))
        .chain((config.broadcast_client.iter()).map(|b| ("[[broadcast-client]]", b.key)));
    for (table, key) in named {
        let Some(k) = key else { continue };
        if keys.get(k).is_none() || !keys.is_trusted(k) {
            return Err(ApplyError::MissingKey { table, key: k });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Listen, DEFAULT_INSTANCE};

    #[test]
    fn a_reload_keeps_the_tables_that_need_a_restart() {
        let old = Config::empty();
        let mut new = Config::empty();
        new.log.level = "debug".to_owned();
        new.listen.push(Listen {
            address: "127.0.0.1:123".parse().unwrap(),
            instance: DEFAULT_INSTANCE.to_owned(),
            key: None,
        });
        let (merged, restart) = keep_restart_tables(&old, new.clone());
        assert_eq!(merged.log, old.log, "[log] keeps its running value");
        assert_eq!(merged.listen, new.listen, "listeners are applied");
        assert_eq!(restart, vec!["[log]".to_owned()]);
        let (_, restart) = keep_restart_tables(&old, old.clone());
        assert!(restart.is_empty());
    }

    #[test]
    fn keys_the_configuration_names_must_be_trusted() {
        let mut config = Config::empty();
        config.listen.push(Listen {
            address: "127.0.0.1:123".parse().unwrap(),
            instance: DEFAULT_INSTANCE.to_owned(),
            key: Some(7),
        });
        let err = check_running_keys(&config, &KeyStore::new_empty()).unwrap_err();
        assert!(matches!(
            err,
            ApplyError::MissingKey {
                table: "[[listen]]",
                key: 7
            }
        ));
        config.listen[0].key = None;
        assert!(check_running_keys(&config, &KeyStore::new_empty()).is_ok());
    }
}
