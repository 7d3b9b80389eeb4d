//! The raw layer: serde structs that mirror the file (kebab-case, unknown keys refused) and
//! their validation into the typed [`Config`](super::Config).
//!
//! Every field is optional here so that one bad or missing key never hides the others. A
//! value is parsed as it is read ([`V`]); [`RawConfig::validate`] then supplies defaults and
//! checks what spans keys (required keys, `minpoll <= maxpoll`, instance names, keys),
//! reporting every problem it finds, each with its key path.

use std::fmt;

use serde::Deserialize;

use strata_engine::auth::KeyStore;
use strata_engine::Calibrate;

use super::value::{
    parse_prefix, Address, Device, Duration, FilePath, Finite, Group, Int, Ip, IpPort, KeyId,
    LogLevel, Netns, Offset, Poll, V,
};
use super::{
    Access, AccessLevel, AccessPolicy, AuthConfig, BroadcastClient, BroadcastServer, ClockBackend,
    ClockConfig, Config, ControlConfig, DenyAction, DisciplineConfig, DynamicSessions, Instance,
    Listen, LocalReference, MulticastClient, MulticastServer, RateLimit, Responder,
    DEFAULT_BROADCAST_POLL, DEFAULT_INSTANCE, DEFAULT_MULTICAST_TTL, DEFAULT_RECALIBRATE,
};
use crate::logging::LogFormat;

mod sources;

use sources::{check_client_keys, check_mode5_senders, client_key, entries, group, sources};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A table key.
    Key(String),
    /// An index into an array of tables.
    Index(usize),
}

/// A key path such as `server[1].minpoll`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct KeyPath(pub(crate) Vec<Seg>);

impl KeyPath {
    /// A path of plain keys.
    pub(crate) fn keys(keys: &[&str]) -> Self {
        KeyPath(keys.iter().map(|k| Seg::Key((*k).to_owned())).collect())
    }

    /// `self` extended with a key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        KeyPath(segs)
    }

    /// `self` extended with an index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        KeyPath(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyError {
    /// Where.
    pub(crate) path: KeyPath,
    /// What is wrong.
    pub(crate) message: String,
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    clock: Option<RawClock>,
    discipline: Option<RawDiscipline>,
    local_reference: Option<RawLocalReference>,
    control: Option<RawControl>,
    metrics: Option<RawMetrics>,
    log: Option<RawLog>,
    listen: Vec<RawListen>,
    server: Vec<RawServer>,
    peer: Vec<RawServer>,
    multicast_server: Vec<RawMulticastServer>,
    broadcast_server: Vec<RawBroadcastServer>,
    multicast_client: Vec<RawMulticastClient>,
    broadcast_client: Vec<RawBroadcastClient>,
    instance: Vec<RawInstance>,
    access: Vec<RawAccess>,
    access_policy: Option<RawAccessPolicy>,
    rate_limit: Option<RawRateLimit>,
    auth: Option<RawAuth>,
    responder: Option<RawResponder>,
    dynamic_sessions: Option<RawDynamicSessions>,
    interfaces: Option<RawInterfaces>,
}

/// The tables of the file: every one kebab-case, refusing unknown keys, every key optional
/// (`key: T` declares `key: Option<T>`).
macro_rules! tables {
    ($($(#[doc = $doc:literal])* struct $name:ident { $($field:ident: $ty:ty,)* })*) => {
        $(
            $(#[doc = $doc])*
            #[derive(Debug, Default, Deserialize)]
            #[serde(rename_all = "kebab-case", deny_unknown_fields)]
            struct $name { $($field: Option<$ty>,)* }
        )*
    };
}

tables! {
    /// `[interfaces]`.
    struct RawInterfaces {
        ignore: Vec<V<Device>>,
    }

    /// `[dynamic-sessions]`.
    struct RawDynamicSessions {
        max: V<Int<usize, 0, 1_000_000>>, max_total: V<Int<usize, 0, 1_000_000>>,
    }

    /// `[responder]`.
    struct RawResponder {
        workers: V<Int<usize, 0, 256>>,
    }

    /// `[auth]`.
    struct RawAuth {
        keys_file: V<FilePath>, trusted_keys: Vec<V<KeyId>>,
    }

    /// `[access-policy]`.
    struct RawAccessPolicy {
        deny: V<DenyAction>,
    }

    /// `[rate-limit]`.
    struct RawRateLimit {
        interval: V<Duration>, burst: V<Int<u32, 1, 1000>>,
        max_clients: V<Int<usize, 1, { 1 << 24 }>>,
    }

    /// One `[[instance]]`.
    struct RawInstance {
        name: String, device: V<Device>, netns: V<Netns>,
        max_dynamic_sessions: V<Int<usize, 0, 1_000_000>>, source: V<Ip>,
        source_interface: V<Device>, ignore_interfaces: Vec<V<Device>>,
    }

    /// One `[[access]]`.
    struct RawAccess {
        instance: String, level: V<AccessLevel>, prefixes: Vec<String>,
    }

    /// `[clock]`.
    struct RawClock {
        backend: V<ClockBackend>, drift_file: V<FilePath>, initial_offset: V<Offset>,
        frequency_error_ppm: V<Finite>, max_distance: V<Duration>,
    }

    /// `[discipline]`.
    struct RawDiscipline {
        step_threshold: V<Duration>, stepout: V<Duration>, panic_threshold: V<Duration>,
    }

    /// `[local-reference]`.
    struct RawLocalReference {
        stratum: V<Int<u8, 1, 15>>,
    }

    /// `[control]`.
    struct RawControl {
        socket: V<FilePath>,
    }

    /// `[metrics]`.
    struct RawMetrics {
        listen: V<IpPort>,
    }

    /// `[log]`.
    struct RawLog {
        level: V<LogLevel>, format: V<LogFormat>,
    }

    /// One `[[listen]]`.
    struct RawListen {
        address: V<Address>, instance: String, key: V<KeyId>,
    }

    /// One `[[server]]` or `[[peer]]`.
    struct RawServer {
        address: V<Address>, instance: String, minpoll: V<Poll>, maxpoll: V<Poll>, iburst: bool,
        key: V<KeyId>, calibrate: V<Calibrate>, source: V<Ip>, source_interface: V<Device>,
    }

    /// One `[[multicast-server]]`.
    struct RawMulticastServer {
        group: V<Group>, ipv6_scope: V<Scope>, port: V<Port>, interface: V<Device>, poll: V<Poll>,
        ttl: V<Int<u32, 1, 255>>, instance: String, key: V<KeyId>,
    }

    /// One `[[multicast-client]]`.
    struct RawMulticastClient {
        group: V<Group>, ipv6_scope: V<Scope>, port: V<Port>, interface: V<Device>,
        allow_unauthenticated: bool, recalibrate: V<Duration>, instance: String, key: V<KeyId>,
    }

    /// One `[[broadcast-server]]`.
    struct RawBroadcastServer {
        address: V<Address>, interface: V<Device>, poll: V<Poll>, instance: String, key: V<KeyId>,
    }

    /// One `[[broadcast-client]]`.
    struct RawBroadcastClient {
        interface: V<Device>, allow_unauthenticated: bool, recalibrate: V<Duration>,
        instance: String, key: V<KeyId>,
    }
}

const _: () = assert!(super::MAX_WORKERS == 256);

/// The group of a multicast table: `group`, or `ff0X::101` with `ipv6-scope`, and `port`.
type Scope = Int<u8, 1, 15>;
/// A UDP port.
type Port = Int<u16, 1, 65_535>;

/// Collects errors while validating.
struct Errors(Vec<KeyError>);

impl Errors {
    fn push(&mut self, path: KeyPath, message: impl Into<String>) {
        self.0.push(KeyError {
            path,
            message: message.into(),
        });
    }

    /// A required value, or an error at `path`.
    fn required<T>(&mut self, path: KeyPath, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.push(path, "missing required key");
        }
        value
    }

    /// `instance`: the default, or a declared one.
    fn instance(&mut self, path: KeyPath, value: Option<&String>, declared: &[Instance]) -> String {
        let Some(name) = value else {
            return DEFAULT_INSTANCE.to_owned();
        };
        if name != DEFAULT_INSTANCE && !declared.iter().any(|i| &i.name == name) {
            let known: Vec<String> = std::iter::once(DEFAULT_INSTANCE)
                .chain(declared.iter().map(|i| i.name.as_str()))
                .map(|n| format!("\"{n}\""))
                .collect();
            self.push(
                path,
                format!(
                    "unknown instance \"{name}\" (declared: {}; add an [[instance]] table)",
                    known.join(", ")
                ),
            );
        }
        name.clone()
    }
}

impl RawConfig {
    /// Check every value and build the typed configuration, or return every problem found.
    pub(crate) fn validate(&self) -> Result<Config, Vec<KeyError>> {
        let mut errors = Errors(Vec::new());
        let defaults = Config::empty();
        let e = &mut errors;

        let clock = self
            .clock
            .as_ref()
            .map_or(defaults.clock.clone(), |raw| ClockConfig {
                backend: raw.backend.as_ref().map_or(defaults.clock.backend, |b| b.0),
                drift_file: raw.drift_file.as_ref().map(|p| p.0.clone()),
                initial_offset: raw.initial_offset.as_ref().map_or(0.0, |o| o.0),
                frequency_error_ppm: raw.frequency_error_ppm.as_ref().map_or(0.0, |f| f.0),
                max_distance: raw
                    .max_distance
                    .as_ref()
                    .map_or(defaults.clock.max_distance, |v| v.0),
            });
        let d = &defaults.discipline;
        let discipline = self
            .discipline
            .as_ref()
            .map_or(d.clone(), |raw| DisciplineConfig {
                step_threshold: raw
                    .step_threshold
                    .as_ref()
                    .map_or(d.step_threshold, |v| v.0),
                stepout: raw.stepout.as_ref().map_or(d.stepout, |v| v.0),
                panic_threshold: match &raw.panic_threshold {
                    None => d.panic_threshold,
                    Some(v) => (v.0 > 0.0).then_some(v.0),
                },
            });
        let local_reference = self.local_reference.as_ref().and_then(|raw| {
            let stratum = raw.stratum.as_ref().map(|s| s.0);
            let stratum = e.required(KeyPath::keys(&["local-reference", "stratum"]), stratum)?;
            Some(LocalReference { stratum })
        });
        let control = match self.control.as_ref().and_then(|c| c.socket.as_ref()) {
            None => defaults.control.clone(),
            Some(socket) => ControlConfig {
                socket: socket.0.clone(),
            },
        };
        let metrics = self
            .metrics
            .as_ref()
            .and_then(|m| m.listen.as_ref())
            .map(|l| l.0);
        let mut log = defaults.log.clone();
        if let Some(raw) = &self.log {
            if let Some(level) = &raw.level {
                log.level.clone_from(&level.0);
            }
            if let Some(format) = &raw.format {
                log.format = format.0;
            }
        }

        let instances = self.validate_instances(e);
        let access = self.validate_access(e, &instances);
        let access_policy = AccessPolicy {
            deny: self
                .access_policy
                .as_ref()
                .and_then(|p| p.deny.as_ref())
                .map_or(DenyAction::Drop, |d| d.0),
        };
        let rate_limit = self.validate_rate_limit(e);
        let (auth, store) = self.validate_auth(e);
        let responder = Responder {
            workers: self
                .responder
                .as_ref()
                .and_then(|r| r.workers.as_ref())
                .map(|w| w.0),
        };

        let d = DynamicSessions::default();
        let dynamic_sessions = self
            .dynamic_sessions
            .as_ref()
            .map_or(d, |raw| DynamicSessions {
                max: raw.max.as_ref().map_or(d.max, |m| m.0),
                max_total: raw.max_total.as_ref().map_or(d.max_total, |m| m.0),
            });

        let mut listen = Vec::new();
        for (base, raw) in entries("listen", &self.listen) {
            let address = e.required(base.key("address"), raw.address.as_ref().map(|a| a.0));
            let instance = e.instance(base.key("instance"), raw.instance.as_ref(), &instances);
            if let Some(address) = address {
                listen.push(Listen {
                    address,
                    instance,
                    key: raw.key.as_ref().map(|k| k.0),
                });
            }
        }

        let server = sources(e, "server", &self.server, &instances);
        let peer = sources(e, "peer", &self.peer, &instances);
        let multicast_server: Vec<MulticastServer> =
            entries("multicast-server", &self.multicast_server)
                .map(|(base, raw)| MulticastServer {
                    group: group(
                        raw.group.as_ref(),
                        raw.ipv6_scope.as_ref(),
                        raw.port.as_ref(),
                    ),
                    interface: raw.interface.as_ref().map(|i| i.0.clone()),
                    poll: raw.poll.as_ref().map_or(DEFAULT_BROADCAST_POLL, |p| p.0),
                    ttl: raw.ttl.as_ref().map_or(DEFAULT_MULTICAST_TTL, |t| t.0),
                    instance: e.instance(base.key("instance"), raw.instance.as_ref(), &instances),
                    key: raw.key.as_ref().map(|k| k.0),
                })
                .collect();
        let broadcast_server = self.validate_broadcast_servers(e, &instances);
        let multicast_client: Vec<MulticastClient> =
            entries("multicast-client", &self.multicast_client)
                .filter_map(|(base, raw)| {
                    let instance =
                        e.instance(base.key("instance"), raw.instance.as_ref(), &instances);
                    Some(MulticastClient {
                        key: client_key(e, &base, raw.key.as_ref(), raw.allow_unauthenticated)?,
                        group: group(
                            raw.group.as_ref(),
                            raw.ipv6_scope.as_ref(),
                            raw.port.as_ref(),
                        ),
                        interface: raw.interface.as_ref().map(|i| i.0.clone()),
                        allow_unauthenticated: raw.allow_unauthenticated.unwrap_or(false),
                        recalibrate: raw
                            .recalibrate
                            .as_ref()
                            .map_or(DEFAULT_RECALIBRATE, |r| r.0),
                        instance,
                    })
                })
                .collect();
        let broadcast_client: Vec<BroadcastClient> =
            entries("broadcast-client", &self.broadcast_client)
                .map(|(base, raw)| BroadcastClient {
                    interface: raw.interface.as_ref().map(|i| i.0.clone()),
                    allow_unauthenticated: raw.allow_unauthenticated.unwrap_or(false),
                    key: client_key(e, &base, raw.key.as_ref(), raw.allow_unauthenticated)
                        .flatten(),
                    recalibrate: raw
                        .recalibrate
                        .as_ref()
                        .map_or(DEFAULT_RECALIBRATE, |r| r.0),
                    instance: e.instance(base.key("instance"), raw.instance.as_ref(), &instances),
                })
                .collect();
        self.check_key_references(e, auth.as_ref(), store.as_ref());
        check_client_keys(e, self);
        check_mode5_senders(e, self, &listen);
        let ignore_interfaces: Vec<String> = self
            .interfaces
            .iter()
            .flat_map(|i| i.ignore.iter().flatten())
            .map(|d| d.0.clone())
            .collect();
        let ignored = |instance: &str| -> Vec<String> {
            if instance == DEFAULT_INSTANCE {
                return ignore_interfaces.clone();
            }
            let inst = instances.iter().find(|i| i.name == instance);
            inst.map(|i| i.ignore_interfaces.clone())
                .unwrap_or_default()
        };
        let mode5 = multicast_server
            .iter()
            .map(|m: &MulticastServer| (&m.instance, &m.interface))
            .enumerate()
            .map(|(i, t)| ("multicast-server", i, t))
            .chain(
                broadcast_server
                    .iter()
                    .map(|b: &BroadcastServer| (&b.instance, &b.interface))
                    .enumerate()
                    .map(|(i, t)| ("broadcast-server", i, t)),
            )
            .chain(
                multicast_client
                    .iter()
                    .map(|m: &MulticastClient| (&m.instance, &m.interface))
                    .enumerate()
                    .map(|(i, t)| ("multicast-client", i, t)),
            )
            .chain(
                broadcast_client
                    .iter()
                    .map(|b: &BroadcastClient| (&b.instance, &b.interface))
                    .enumerate()
                    .map(|(i, t)| ("broadcast-client", i, t)),
            );
        for (table, i, (instance, interface)) in mode5 {
            let Some(interface) = interface else { continue };
            if ignored(instance).contains(interface) {
                e.push(
                    KeyPath::keys(&[table]).index(i).key("interface"),
                    format!("interface \"{interface}\" is in the ignored interfaces of instance \"{instance}\""),
                );
            }
        }

        if !errors.0.is_empty() {
            return Err(errors.0);
        }
        Ok(Config {
            clock,
            discipline,
            local_reference,
            control,
            metrics,
            listen,
            server,
            peer,
            multicast_server,
            broadcast_server,
            multicast_client,
            broadcast_client,
            log,
            instance: instances,
            access,
            access_policy,
            rate_limit,
            auth,
            responder,
            dynamic_sessions,
            ignore_interfaces,
            warnings: Vec::new(),
        })
    }

    /// Every `key = ID` of the file, with its path.
    fn key_references(&self) -> Vec<(KeyPath, u32)> {
        fn keys<'a, T>(
            table: &'static str,
            raws: &'a [T],
            key: fn(&T) -> Option<&V<KeyId>>,
        ) -> impl Iterator<Item = (KeyPath, u32)> + 'a {
            entries(table, raws).filter_map(move |(base, raw)| Some((base.key("key"), key(raw)?.0)))
        }
        keys("listen", &self.listen, |r| r.key.as_ref())
            .chain(keys("server", &self.server, |r| r.key.as_ref()))
            .chain(keys("peer", &self.peer, |r| r.key.as_ref()))
            .chain(keys("multicast-server", &self.multicast_server, |r| {
                r.key.as_ref()
            }))
            .chain(keys("broadcast-server", &self.broadcast_server, |r| {
                r.key.as_ref()
            }))
            .chain(keys("multicast-client", &self.multicast_client, |r| {
                r.key.as_ref()
            }))
            .chain(keys("broadcast-client", &self.broadcast_client, |r| {
                r.key.as_ref()
            }))
            .collect()
    }

    /// Every key a table names must be in the keys file and trusted: a key signs our packets
    /// and authenticates the answers, which only trusted keys do.
    fn check_key_references(
        &self,
        errors: &mut Errors,
        auth: Option<&AuthConfig>,
        store: Option<&KeyStore>,
    ) {
        for (path, k) in self.key_references() {
            match (auth, store) {
                (None, _) => errors.push(path, format!("key {k} needs an [auth] keys-file")),
                (Some(a), Some(store)) if store.get(k).is_none() => errors.push(
                    path,
                    format!("key {k} is not in the keys file {}", a.keys_file.display()),
                ),
                (Some(_), Some(store)) if !store.is_trusted(k) => errors.push(
                    path,
                    format!("key {k} is not trusted (add it to [auth] trusted-keys)"),
                ),
                // A keys file that cannot be read is reported at [auth] keys-file.
                _ => {}
            }
        }
    }

    fn validate_auth(&self, errors: &mut Errors) -> (Option<AuthConfig>, Option<KeyStore>) {
        let Some(raw) = self.auth.as_ref() else {
            return (None, None);
        };
        let path = KeyPath::keys(&["auth", "keys-file"]);
        let keys_file = raw.keys_file.as_ref().map(|p| p.0.clone());
        let Some(keys_file) = errors.required(path.clone(), keys_file) else {
            return (None, None);
        };
        let auth = AuthConfig {
            keys_file,
            trusted_keys: raw.trusted_keys.iter().flatten().map(|k| k.0).collect(),
        };
        // The keys file is part of the configuration: a bad one is a startup error.
        match auth.load_keys() {
            Ok(keys) => (Some(auth), Some(keys)),
            Err(e) => {
                errors.push(path, e.to_string());
                (Some(auth), None)
            }
        }
    }

    fn validate_rate_limit(&self, errors: &mut Errors) -> Option<RateLimit> {
        let raw = self.rate_limit.as_ref()?;
        let defaults = RateLimit::DEFAULT;
        let interval = raw.interval.as_ref().map_or(defaults.interval, |i| i.0);
        if !(0.001..=86_400.0).contains(&interval) {
            errors.push(
                KeyPath::keys(&["rate-limit", "interval"]),
                format!("{interval} s is out of range (1ms..=1d)"),
            );
        }
        Some(RateLimit {
            interval,
            burst: raw.burst.as_ref().map_or(defaults.burst, |b| b.0),
            max_clients: raw
                .max_clients
                .as_ref()
                .map_or(defaults.max_clients, |m| m.0),
        })
    }

    fn validate_access(&self, errors: &mut Errors, instances: &[Instance]) -> Vec<Access> {
        let mut out = Vec::new();
        for (base, raw) in entries("access", &self.access) {
            let before = errors.0.len();
            let instance = errors.instance(base.key("instance"), raw.instance.as_ref(), instances);
            let level = errors.required(base.key("level"), raw.level.as_ref().map(|l| l.0));
            let mut prefixes = Vec::new();
            match &raw.prefixes {
                None => errors.push(base.key("prefixes"), "missing required key"),
                Some(list) if list.is_empty() => {
                    errors.push(base.key("prefixes"), "must list at least one prefix");
                }
                Some(list) => {
                    for text in list {
                        match parse_prefix(text) {
                            Ok(p) => prefixes.push(p),
                            Err(e) => errors.push(base.key("prefixes"), e.to_string()),
                        }
                    }
                }
            }
            if let (Some(level), true) = (level, errors.0.len() == before) {
                out.push(Access {
                    instance,
                    level,
                    prefixes,
                });
            }
        }
        out
    }
}

/// Warnings for `[[access]]` rules that can never decide a source's level: rules are
/// checked from the highest level down, so a prefix that lies within a prefix of a
/// higher-level rule of the same instance never matches first. One warning per rule with
/// such prefixes, at its `prefixes`; `access` is in file order (a valid file keeps every
/// rule).
pub(crate) fn access_warnings(access: &[Access]) -> Vec<KeyError> {
    let mut out = Vec::new();
    for (base, rule) in entries("access", access) {
        let cover = |p: &super::Prefix| {
            access.iter().enumerate().find_map(|(j, other)| {
                if other.instance != rule.instance || other.level <= rule.level {
                    return None;
                }
                other
                    .prefixes
                    .iter()
                    .find(|q| {
                        q.addr.is_ipv4() == p.addr.is_ipv4() && q.len <= p.len && q.contains(p.addr)
                    })
                    .map(|q| {
                        format!(
                            "{p} is within {q} of access[{j}] (level \"{}\")",
                            other.level.as_str()
                        )
                    })
            })
        };
        let covered: Vec<String> = rule.prefixes.iter().filter_map(cover).collect();
        if covered.is_empty() {
            continue;
        }
        let whole = covered.len() == rule.prefixes.len();
        let what = if whole {
            "this rule can never match"
        } else {
            "part of this rule can never match"
        };
        out.push(KeyError {
            path: base.key("prefixes"),
            message: format!(
                "{what}: rules are checked from the highest level down, and {} (instance \"{}\")",
                covered.join(", "),
                rule.instance
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_render_dotted_with_indices() {
        let p = KeyPath::keys(&["server"]).index(2).key("minpoll");
        assert_eq!(p.to_string(), "server[2].minpoll");
        assert_eq!(
            KeyPath::keys(&["clock", "backend"]).to_string(),
            "clock.backend"
        );
    }
}
