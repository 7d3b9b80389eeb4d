//! The raw layer: serde structs that mirror the file (kebab-case, unknown keys refused) and
//! their validation into the typed [`Config`](super::Config).
//!
//! Every field is optional here so that one bad or missing key never hides the others:
//! [`RawConfig::validate`] reports every problem it finds, each with its key path.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use strata_engine::auth::KeyStore;

use super::duration::parse_duration;
use super::{
    Access, AccessLevel, AccessPolicy, AuthConfig, ClockBackend, ClockConfig, Config,
    ControlConfig, DenyAction, DisciplineConfig, Instance, InstancePlacement, Listen,
    LocalReference, Prefix, RateLimit, Responder, Server, DEFAULT_CONTROL_SOCKET, DEFAULT_INSTANCE,
    DEFAULT_NTP_PORT, LOG_LEVELS, MAX_WORKERS,
};

/// The most clients `[rate-limit] max-clients` may track (the engine's hard cap).
const MAX_RATE_LIMIT_CLIENTS: usize = 1 << 24;

/// The lowest accepted poll exponent (1/16 s).
pub(crate) const MIN_POLL: i64 = -4;
/// The highest accepted poll exponent (36.4 h).
pub(crate) const MAX_POLL: i64 = 17;

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
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) clock: Option<RawClock>,
    pub(crate) discipline: Option<RawDiscipline>,
    pub(crate) local_reference: Option<RawLocalReference>,
    pub(crate) control: Option<RawControl>,
    pub(crate) metrics: Option<RawMetrics>,
    pub(crate) log: Option<RawLog>,
    #[serde(default)]
    pub(crate) listen: Vec<RawListen>,
    #[serde(default)]
    pub(crate) server: Vec<RawServer>,
    #[serde(default)]
    pub(crate) peer: Vec<RawServer>,
    #[serde(default)]
    pub(crate) multicast_server: Vec<RawMulticast>,
    #[serde(default)]
    pub(crate) broadcast_server: Vec<RawBroadcastServer>,
    #[serde(default)]
    pub(crate) multicast_client: Vec<RawMulticast>,
    #[serde(default)]
    pub(crate) broadcast_client: Vec<RawBroadcastClient>,
    #[serde(default)]
    pub(crate) instance: Vec<RawInstance>,
    #[serde(default)]
    pub(crate) access: Vec<RawAccess>,
    pub(crate) access_policy: Option<RawAccessPolicy>,
    pub(crate) rate_limit: Option<RawRateLimit>,
    pub(crate) auth: Option<RawAuth>,
    pub(crate) responder: Option<RawResponder>,
}

/// `[responder]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawResponder {
    pub(crate) workers: Option<i64>,
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub(crate) keys_file: Option<String>,
    pub(crate) trusted_keys: Option<Vec<i64>>,
}

/// `[access-policy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawAccessPolicy {
    pub(crate) deny: Option<String>,
}

/// `[rate-limit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub(crate) interval: Option<String>,
    pub(crate) burst: Option<i64>,
    pub(crate) max_clients: Option<i64>,
}

/// One `[[instance]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawInstance {
    pub(crate) name: Option<String>,
    pub(crate) device: Option<String>,
    pub(crate) netns: Option<String>,
    pub(crate) max_dynamic_sessions: Option<i64>,
}

/// One `[[access]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawAccess {
    pub(crate) instance: Option<String>,
    pub(crate) level: Option<String>,
    pub(crate) prefixes: Option<Vec<String>>,
}

/// `[clock]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawClock {
    pub(crate) backend: Option<String>,
    pub(crate) drift_file: Option<String>,
    pub(crate) initial_offset: Option<String>,
    pub(crate) frequency_error_ppm: Option<f64>,
    pub(crate) max_distance: Option<String>,
}

/// `[discipline]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawDiscipline {
    pub(crate) step_threshold: Option<String>,
    pub(crate) stepout: Option<String>,
    pub(crate) panic_threshold: Option<String>,
}

/// `[local-reference]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawLocalReference {
    pub(crate) stratum: Option<i64>,
}

/// `[control]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawControl {
    pub(crate) socket: Option<String>,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub(crate) listen: Option<String>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawLog {
    pub(crate) level: Option<String>,
    pub(crate) format: Option<String>,
}

/// One `[[listen]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawListen {
    pub(crate) address: Option<String>,
    pub(crate) instance: Option<String>,
    pub(crate) key: Option<i64>,
}

/// One `[[server]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) address: Option<String>,
    pub(crate) instance: Option<String>,
    pub(crate) minpoll: Option<i64>,
    pub(crate) maxpoll: Option<i64>,
    pub(crate) iburst: Option<bool>,
    pub(crate) key: Option<i64>,
}

/// One `[[multicast-server]]` or `[[multicast-client]]` (each rejects the
/// other's keys in the checker's schema).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawMulticast {
    pub(crate) group: Option<String>,
    pub(crate) ipv6_scope: Option<i64>,
    pub(crate) port: Option<i64>,
    pub(crate) interface: Option<String>,
    pub(crate) poll: Option<i64>,
    pub(crate) ttl: Option<i64>,
    pub(crate) allow_unauthenticated: Option<bool>,
    pub(crate) recalibrate: Option<String>,
    pub(crate) instance: Option<String>,
    pub(crate) key: Option<i64>,
}

/// One `[[broadcast-server]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawBroadcastServer {
    pub(crate) address: Option<String>,
    pub(crate) interface: Option<String>,
    pub(crate) poll: Option<i64>,
    pub(crate) instance: Option<String>,
    pub(crate) key: Option<i64>,
}

/// One `[[broadcast-client]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawBroadcastClient {
    pub(crate) interface: Option<String>,
    pub(crate) allow_unauthenticated: Option<bool>,
    pub(crate) recalibrate: Option<String>,
    pub(crate) instance: Option<String>,
    pub(crate) key: Option<i64>,
}

/// Collects errors while validating.
struct Errors(Vec<KeyError>);

impl Errors {
    fn push(&mut self, path: KeyPath, message: impl Into<String>) {
        self.0.push(KeyError {
            path,
            message: message.into(),
        });
    }
}

/// A duration in seconds; `allow_negative` only for offsets.
fn duration(
    errors: &mut Errors,
    path: KeyPath,
    value: Option<&String>,
    default: f64,
    allow_negative: bool,
) -> f64 {
    let Some(text) = value else {
        return default;
    };
    match parse_duration(text) {
        Ok(secs) if secs < 0.0 && !allow_negative => {
            errors.push(path, format!("duration \"{text}\" must not be negative"));
            default
        }
        Ok(secs) => secs,
        Err(e) => {
            errors.push(path, format!("bad duration \"{text}\": {e}"));
            default
        }
    }
}

/// A numeric socket address; the port defaults to 123.
pub(crate) fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let trimmed = text.trim();
    if let Ok(addr) = trimmed.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(trimmed);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_NTP_PORT));
    }
    Err(format!(
        "bad address \"{text}\": expected a numeric IP address with an optional port \
         (\"192.0.2.1:123\", \"[2001:db8::1]:123\"); host names are not supported"
    ))
}

/// A log filter: comma-separated directives, each a level name, a target, or
/// `target=level`.
fn check_log_level(text: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "bad log level \"{text}\": {why} (expected a level such as \"info\", or directives \
             such as \"info,strata_engine=debug\"; levels: {})",
            LOG_LEVELS.join(", ")
        ))
    };
    if text.trim().is_empty() {
        return bad("empty");
    }
    for directive in text.split(',') {
        let directive = directive.trim();
        if directive.is_empty() || directive.contains(char::is_whitespace) {
            return bad("empty or blank directive");
        }
        if let Some((_, level)) = directive.rsplit_once('=') {
            if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
                return bad(&format!("unknown level `{level}`"));
            }
        }
    }
    Ok(())
}

fn non_empty_path(errors: &mut Errors, path: KeyPath, value: &str) -> Option<PathBuf> {
    if value.is_empty() {
        errors.push(path, "path must not be empty");
        None
    } else {
        Some(PathBuf::from(value))
    }
}

fn instance(
    errors: &mut Errors,
    path: KeyPath,
    value: Option<&String>,
    declared: &[Instance],
) -> String {
    match value {
        None => DEFAULT_INSTANCE.to_owned(),
        Some(name) if name == DEFAULT_INSTANCE || declared.iter().any(|i| &i.name == name) => {
            name.clone()
        }
        Some(name) => {
            let known: Vec<String> = std::iter::once(DEFAULT_INSTANCE)
                .chain(declared.iter().map(|i| i.name.as_str()))
                .map(|n| format!("\"{n}\""))
                .collect();
            errors.push(
                path,
                format!(
                    "unknown instance \"{name}\" (declared: {}; add an [[instance]] table)",
                    known.join(", ")
                ),
            );
            name.clone()
        }
    }
}

/// Longest network device name (IFNAMSIZ - 1).
const MAX_DEVICE_NAME: usize = 15;

fn valid_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_DEVICE_NAME
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

fn valid_netns_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// An address prefix `ip/len` (`10.200.1.0/24`, `fd00:200::/48`); a bare address is a host
/// prefix. Host bits must be zero.
///
/// # Errors
/// A message naming the text and what is wrong with it.
pub fn parse_prefix(text: &str) -> Result<Prefix, String> {
    let bad = |why: &str| {
        Err(format!(
            "bad prefix \"{text}\": {why} (expected CIDR such as \"10.200.1.0/24\" or \"fd00:200::/48\")"
        ))
    };
    let (ip_text, len_text) = match text.trim().split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (text.trim(), None),
    };
    let Ok(addr) = ip_text.parse::<IpAddr>() else {
        return bad("not a numeric IP address");
    };
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len_text {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(len) if len <= max => len,
            _ => return bad(&format!("the length must be 0..={max}")),
        },
    };
    let prefix = Prefix { addr, len };
    let network = match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    };
    if network != addr {
        return bad(&format!(
            "host bits are set (did you mean {network}/{len}?)"
        ));
    }
    Ok(prefix)
}

fn address(errors: &mut Errors, path: KeyPath, value: Option<&String>) -> Option<SocketAddr> {
    match value {
        None => {
            errors.push(path, "missing required key");
            None
        }
        Some(text) => match parse_address(text) {
            Ok(addr) => Some(addr),
            Err(message) => {
                errors.push(path, message);
                None
            }
        },
    }
}

fn poll(errors: &mut Errors, path: KeyPath, value: Option<i64>, default: i8) -> Option<i8> {
    let Some(value) = value else {
        return Some(default);
    };
    match i8::try_from(value) {
        Ok(p) if (MIN_POLL..=MAX_POLL).contains(&value) => Some(p),
        _ => {
            errors.push(
                path,
                format!("{value} is out of range ({MIN_POLL}..={MAX_POLL})"),
            );
            None
        }
    }
}

/// A `key = ID` value: `Some(None)` when absent, `None` (with an error) when out of range.
fn key_id(errors: &mut Errors, path: KeyPath, value: Option<i64>) -> Option<Option<u32>> {
    let Some(k) = value else {
        return Some(None);
    };
    match u32::try_from(k) {
        Ok(k) if (1..=crate::config::MAX_KEY_ID).contains(&k) => Some(Some(k)),
        _ => {
            errors.push(
                path,
                format!(
                    "key id {k} is out of range (1..={})",
                    crate::config::MAX_KEY_ID
                ),
            );
            None
        }
    }
}

/// `[[server]]` or `[[peer]]` entries.
fn sources(
    errors: &mut Errors,
    table: &str,
    raws: &[RawServer],
    instances: &[Instance],
) -> Vec<Server> {
    let mut out = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let base = KeyPath::keys(&[table]).index(i);
        let address = address(errors, base.key("address"), raw.address.as_ref());
        let instance = instance(
            errors,
            base.key("instance"),
            raw.instance.as_ref(),
            instances,
        );
        let minpoll = poll(
            errors,
            base.key("minpoll"),
            raw.minpoll,
            Server::DEFAULT_MINPOLL,
        );
        let maxpoll = poll(
            errors,
            base.key("maxpoll"),
            raw.maxpoll,
            Server::DEFAULT_MAXPOLL,
        );
        if let (Some(min), Some(max)) = (minpoll, maxpoll) {
            if min > max {
                // Name the key the user wrote; minpoll when both or neither were given.
                let key = if raw.maxpoll.is_some() && raw.minpoll.is_none() {
                    "maxpoll"
                } else {
                    "minpoll"
                };
                errors.push(
                    base.key(key),
                    format!("minpoll {min} is greater than maxpoll {max}"),
                );
            }
        }
        let key = key_id(errors, base.key("key"), raw.key);
        if let (Some(address), Some(minpoll), Some(maxpoll), Some(key)) =
            (address, minpoll, maxpoll, key)
        {
            out.push(Server {
                address,
                instance,
                minpoll,
                maxpoll,
                iburst: raw.iburst.unwrap_or(false),
                key,
            });
        }
    }
    out
}

/// A multicast group with its port: `group` (default 224.0.1.1), or
/// `ff0X::101` when only `ipv6-scope` is given.
fn group(errors: &mut Errors, base: &KeyPath, raw: &RawMulticast) -> Option<SocketAddr> {
    let port = match raw.port {
        None => DEFAULT_NTP_PORT,
        Some(p) => match u16::try_from(p) {
            Ok(p) if p > 0 => p,
            _ => {
                errors.push(
                    base.key("port"),
                    format!("port {p} is out of range (1..=65535)"),
                );
                return None;
            }
        },
    };
    let ip = match (&raw.group, raw.ipv6_scope) {
        (Some(text), _) => match text.parse::<IpAddr>() {
            Ok(ip) if ip.is_multicast() => ip,
            Ok(ip) => {
                errors.push(
                    base.key("group"),
                    format!("{ip} is not a multicast address"),
                );
                return None;
            }
            Err(_) => {
                errors.push(
                    base.key("group"),
                    format!("\"{text}\" is not an IP address"),
                );
                return None;
            }
        },
        (None, Some(scope)) => match u8::try_from(scope) {
            Ok(s) if (1..=15).contains(&s) => IpAddr::V6(crate::config::ipv6_ntp_group(s)),
            _ => {
                errors.push(
                    base.key("ipv6-scope"),
                    format!("scope {scope} is out of range (1..=15)"),
                );
                return None;
            }
        },
        (None, None) => IpAddr::V4(crate::config::DEFAULT_GROUP_V4),
    };
    Some(SocketAddr::new(ip, port))
}

fn mode5_poll(errors: &mut Errors, path: KeyPath, value: Option<i64>) -> Option<i8> {
    poll(errors, path, value, crate::config::DEFAULT_BROADCAST_POLL)
}

fn interface(errors: &mut Errors, path: KeyPath, value: Option<&String>) -> Option<String> {
    let name = value?;
    if valid_device_name(name) {
        Some(name.clone())
    } else {
        errors.push(path, format!("\"{name}\" is not a valid interface name"));
        None
    }
}

/// The broadcast/multicast clients of one instance share one setting in the engine, so those
/// that name a key must all name the same one, and either all or none name one.
fn check_client_keys(errors: &mut Errors, raw: &RawConfig) {
    let entries: Vec<(KeyPath, &str, Option<i64>)> = raw
        .multicast_client
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                KeyPath::keys(&["multicast-client"]).index(i),
                c.instance.as_deref().unwrap_or(DEFAULT_INSTANCE),
                c.key,
            )
        })
        .chain(raw.broadcast_client.iter().enumerate().map(|(i, c)| {
            (
                KeyPath::keys(&["broadcast-client"]).index(i),
                c.instance.as_deref().unwrap_or(DEFAULT_INSTANCE),
                c.key,
            )
        }))
        .collect();
    for (n, (path, instance, key)) in entries.iter().enumerate() {
        let Some((first, _, first_key)) = entries[..n].iter().find(|(_, i, _)| i == instance)
        else {
            continue;
        };
        if first_key != key {
            let show = |k: &Option<i64>| k.map_or_else(|| "none".to_owned(), |k| k.to_string());
            errors.push(
                path.key("key"),
                format!(
                    "the broadcast/multicast clients of instance \"{instance}\" must name the same \
                     key: {first} has {}, this one {}",
                    show(first_key),
                    show(key)
                ),
            );
        }
    }
}

/// A broadcast/multicast client's `key`: it asks for authentication, so it cannot go with
/// `allow-unauthenticated = true`.
fn client_key(
    errors: &mut Errors,
    base: &KeyPath,
    value: Option<i64>,
    allow_unauthenticated: Option<bool>,
) -> Option<Option<u32>> {
    let key = key_id(errors, base.key("key"), value)?;
    if key.is_some() && allow_unauthenticated == Some(true) {
        errors.push(
            base.key("allow-unauthenticated"),
            "`allow-unauthenticated = true` contradicts `key` (a client with a key follows only \
             servers signing with it)",
        );
        return None;
    }
    Some(key)
}

impl RawConfig {
    fn validate_multicast_servers(
        &self,
        errors: &mut Errors,
        instances: &[Instance],
    ) -> Vec<crate::config::MulticastServer> {
        let mut out = Vec::new();
        for (i, raw) in self.multicast_server.iter().enumerate() {
            let base = KeyPath::keys(&["multicast-server"]).index(i);
            for (key, set) in [
                ("allow-unauthenticated", raw.allow_unauthenticated.is_some()),
                ("recalibrate", raw.recalibrate.is_some()),
            ] {
                if set {
                    errors.push(base.key(key), "unknown key (a multicast-client key)");
                }
            }
            let group = group(errors, &base, raw);
            let instance = instance(
                errors,
                base.key("instance"),
                raw.instance.as_ref(),
                instances,
            );
            let poll = mode5_poll(errors, base.key("poll"), raw.poll);
            let ttl = match raw.ttl {
                None => Some(1),
                Some(t) => match u32::try_from(t) {
                    Ok(t) if (1..=255).contains(&t) => Some(t),
                    _ => {
                        errors.push(
                            base.key("ttl"),
                            format!("ttl {t} is out of range (1..=255)"),
                        );
                        None
                    }
                },
            };
            let iface = interface(errors, base.key("interface"), raw.interface.as_ref());
            let key = key_id(errors, base.key("key"), raw.key);
            if let (Some(group), Some(poll), Some(ttl), Some(key)) = (group, poll, ttl, key) {
                out.push(crate::config::MulticastServer {
                    group,
                    interface: iface,
                    poll,
                    ttl,
                    instance,
                    key,
                });
            }
        }
        out
    }

    fn validate_broadcast_servers(
        &self,
        errors: &mut Errors,
        instances: &[Instance],
    ) -> Vec<crate::config::BroadcastServer> {
        let mut out = Vec::new();
        for (i, raw) in self.broadcast_server.iter().enumerate() {
            let base = KeyPath::keys(&["broadcast-server"]).index(i);
            let address = address(errors, base.key("address"), raw.address.as_ref());
            let instance = instance(
                errors,
                base.key("instance"),
                raw.instance.as_ref(),
                instances,
            );
            let poll = mode5_poll(errors, base.key("poll"), raw.poll);
            let iface = interface(errors, base.key("interface"), raw.interface.as_ref());
            if let Some(a) = address {
                if !a.is_ipv4() {
                    errors.push(
                        base.key("address"),
                        "broadcast needs an IPv4 address (IPv6 has multicast-server)",
                    );
                }
            }
            let key = key_id(errors, base.key("key"), raw.key);
            if let (Some(address), Some(poll), Some(key)) =
                (address.filter(SocketAddr::is_ipv4), poll, key)
            {
                out.push(crate::config::BroadcastServer {
                    address,
                    interface: iface,
                    poll,
                    instance,
                    key,
                });
            }
        }
        out
    }

    fn validate_multicast_clients(
        &self,
        errors: &mut Errors,
        instances: &[Instance],
    ) -> Vec<crate::config::MulticastClient> {
        let mut out = Vec::new();
        for (i, raw) in self.multicast_client.iter().enumerate() {
            let base = KeyPath::keys(&["multicast-client"]).index(i);
            for (key, set) in [("poll", raw.poll.is_some()), ("ttl", raw.ttl.is_some())] {
                if set {
                    errors.push(base.key(key), "unknown key (a multicast-server key)");
                }
            }
            let group = group(errors, &base, raw);
            let instance = instance(
                errors,
                base.key("instance"),
                raw.instance.as_ref(),
                instances,
            );
            let recalibrate = duration(
                errors,
                base.key("recalibrate"),
                raw.recalibrate.as_ref(),
                crate::config::DEFAULT_RECALIBRATE,
                false,
            );
            let iface = interface(errors, base.key("interface"), raw.interface.as_ref());
            let key = client_key(errors, &base, raw.key, raw.allow_unauthenticated);
            if let (Some(group), Some(key)) = (group, key) {
                out.push(crate::config::MulticastClient {
                    group,
                    interface: iface,
                    allow_unauthenticated: raw.allow_unauthenticated.unwrap_or(false),
                    key,
                    recalibrate,
                    instance,
                });
            }
        }
        out
    }

    fn validate_broadcast_clients(
        &self,
        errors: &mut Errors,
        instances: &[Instance],
    ) -> Vec<crate::config::BroadcastClient> {
        self.broadcast_client
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let base = KeyPath::keys(&["broadcast-client"]).index(i);
                crate::config::BroadcastClient {
                    interface: interface(errors, base.key("interface"), raw.interface.as_ref()),
                    allow_unauthenticated: raw.allow_unauthenticated.unwrap_or(false),
                    key: client_key(errors, &base, raw.key, raw.allow_unauthenticated).flatten(),
                    recalibrate: duration(
                        errors,
                        base.key("recalibrate"),
                        raw.recalibrate.as_ref(),
                        crate::config::DEFAULT_RECALIBRATE,
                        false,
                    ),
                    instance: instance(
                        errors,
                        base.key("instance"),
                        raw.instance.as_ref(),
                        instances,
                    ),
                }
            })
            .collect()
    }

    /// Check every value and build the typed configuration, or return every problem found.
    pub(crate) fn validate(&self) -> Result<Config, Vec<KeyError>> {
        let mut errors = Errors(Vec::new());
        let defaults = Config::builtin_defaults();

        let clock = self.validate_clock(&mut errors, &defaults.clock);
        let discipline = self.validate_discipline(&mut errors, &defaults.discipline);

        let local_reference = self.local_reference.as_ref().and_then(|raw| {
            let path = KeyPath::keys(&["local-reference", "stratum"]);
            match raw.stratum {
                None => {
                    errors.push(path, "missing required key");
                    None
                }
                Some(s) => match u8::try_from(s) {
                    Ok(stratum) if (1..=15).contains(&stratum) => Some(LocalReference { stratum }),
                    _ => {
                        errors.push(path, format!("stratum {s} is out of range (1..=15)"));
                        None
                    }
                },
            }
        });

        let control = match self.control.as_ref().and_then(|c| c.socket.as_ref()) {
            None => defaults.control.clone(),
            Some(socket) => ControlConfig {
                socket: non_empty_path(&mut errors, KeyPath::keys(&["control", "socket"]), socket)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET)),
            },
        };

        let metrics = match self.metrics.as_ref().and_then(|m| m.listen.as_ref()) {
            None => None,
            Some(text) => match text.trim().parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    errors.push(
                        KeyPath::keys(&["metrics", "listen"]),
                        format!("bad address {text:?} (expected ip:port, e.g. \"127.0.0.1:9975\")"),
                    );
                    None
                }
            },
        };

        let mut log = defaults.log.clone();
        if let Some(level) = self.log.as_ref().and_then(|l| l.level.as_ref()) {
            match check_log_level(level) {
                Ok(()) => log.level.clone_from(level),
                Err(message) => errors.push(KeyPath::keys(&["log", "level"]), message),
            }
        }
        if let Some(format) = self.log.as_ref().and_then(|l| l.format.as_ref()) {
            match crate::logging::LogFormat::from_name(format) {
                Some(f) => log.format = f,
                None => errors.push(
                    KeyPath::keys(&["log", "format"]),
                    format!(
                        "unknown log format \"{format}\" (expected one of: {})",
                        crate::logging::LogFormat::NAMES.join(", ")
                    ),
                ),
            }
        }

        let instances = self.validate_instances(&mut errors);
        let access = self.validate_access(&mut errors, &instances);
        let access_policy = self.validate_access_policy(&mut errors);
        let rate_limit = self.validate_rate_limit(&mut errors);
        let (auth, store) = self.validate_auth(&mut errors);
        let responder = match self.responder.as_ref().and_then(|r| r.workers) {
            None => Responder::default(),
            Some(n) => match usize::try_from(n) {
                Ok(n) if n <= MAX_WORKERS => Responder { workers: Some(n) },
                _ => {
                    errors.push(
                        KeyPath::keys(&["responder", "workers"]),
                        format!(
                            "{n} is out of range (0..={MAX_WORKERS}; 0 answers every request \
                             in the event loop)"
                        ),
                    );
                    Responder::default()
                }
            },
        };

        let mut listen = Vec::new();
        for (i, raw) in self.listen.iter().enumerate() {
            let base = KeyPath::keys(&["listen"]).index(i);
            let address = address(&mut errors, base.key("address"), raw.address.as_ref());
            let instance = instance(
                &mut errors,
                base.key("instance"),
                raw.instance.as_ref(),
                &instances,
            );
            let key = key_id(&mut errors, base.key("key"), raw.key);
            if let (Some(address), Some(key)) = (address, key) {
                listen.push(Listen {
                    address,
                    instance,
                    key,
                });
            }
        }

        let server = sources(&mut errors, "server", &self.server, &instances);
        let peer = sources(&mut errors, "peer", &self.peer, &instances);
        let multicast_server = self.validate_multicast_servers(&mut errors, &instances);
        let broadcast_server = self.validate_broadcast_servers(&mut errors, &instances);
        let multicast_client = self.validate_multicast_clients(&mut errors, &instances);
        let broadcast_client = self.validate_broadcast_clients(&mut errors, &instances);
        self.check_key_references(&mut errors, auth.as_ref(), store.as_ref());
        check_client_keys(&mut errors, self);

        if errors.0.is_empty() {
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
                warnings: Vec::new(),
            })
        } else {
            Err(errors.0)
        }
    }

    fn validate_instances(&self, errors: &mut Errors) -> Vec<Instance> {
        let mut out: Vec<Instance> = Vec::new();
        for (i, raw) in self.instance.iter().enumerate() {
            let base = KeyPath::keys(&["instance"]).index(i);
            let name = match raw.name.as_deref() {
                None => {
                    errors.push(base.key("name"), "missing required key");
                    None
                }
                Some(DEFAULT_INSTANCE) => {
                    errors.push(
                        base.key("name"),
                        format!("\"{DEFAULT_INSTANCE}\" is the implicit default instance and cannot be declared"),
                    );
                    None
                }
                Some(n) if n.is_empty() || n.chars().any(|c| c.is_control() || c == '%') => {
                    errors.push(
                        base.key("name"),
                        format!("bad instance name {n:?} (must be non-empty, without control characters or '%')"),
                    );
                    None
                }
                Some(n) if out.iter().any(|o| o.name == n) => {
                    errors.push(base.key("name"), format!("duplicate instance name \"{n}\""));
                    None
                }
                Some(n) => Some(n.to_owned()),
            };
            let placement = match (&raw.device, &raw.netns) {
                (Some(_), Some(_)) => {
                    errors.push(
                        base.key("netns"),
                        "give exactly one of `device` or `netns`, not both",
                    );
                    None
                }
                (None, None) => {
                    errors.push(
                        base.clone(),
                        "missing `device` or `netns` (an instance needs exactly one)",
                    );
                    None
                }
                (Some(d), None) if !valid_device_name(d) => {
                    errors.push(
                        base.key("device"),
                        format!("bad device name {d:?} (1..={MAX_DEVICE_NAME} bytes, no '/', ':' or spaces)"),
                    );
                    None
                }
                (None, Some(n)) if !valid_netns_name(n) => {
                    errors.push(
                        base.key("netns"),
                        format!("bad namespace name {n:?} (a name under /run/netns, no '/')"),
                    );
                    None
                }
                (Some(d), None) => Some(InstancePlacement::Device(d.clone())),
                (None, Some(n)) => Some(InstancePlacement::Netns(n.clone())),
            };
            let max_dynamic_sessions = match raw.max_dynamic_sessions {
                None => Some(Instance::DEFAULT_MAX_DYNAMIC_SESSIONS),
                Some(n) => match usize::try_from(n) {
                    Ok(n) if n <= 1_000_000 => Some(n),
                    _ => {
                        errors.push(
                            base.key("max-dynamic-sessions"),
                            format!("{n} is out of range (0..=1000000)"),
                        );
                        None
                    }
                },
            };
            if let (Some(name), Some(placement), Some(max_dynamic_sessions)) =
                (name, placement, max_dynamic_sessions)
            {
                out.push(Instance {
                    name,
                    placement,
                    max_dynamic_sessions,
                });
            }
        }
        out
    }

    fn validate_access_policy(&self, errors: &mut Errors) -> AccessPolicy {
        let deny = match self.access_policy.as_ref().and_then(|p| p.deny.as_deref()) {
            None | Some("drop") => DenyAction::Drop,
            Some("kod") => DenyAction::Kod,
            Some(other) => {
                errors.push(
                    KeyPath::keys(&["access-policy", "deny"]),
                    format!("unknown deny action \"{other}\" (expected \"drop\" or \"kod\")"),
                );
                DenyAction::Drop
            }
        };
        AccessPolicy { deny }
    }

    /// Every `key = ID` of the file, with its path.
    fn key_references(&self) -> Vec<(KeyPath, i64)> {
        let mut refs = Vec::new();
        let mut add = |table: &str, keys: &mut dyn Iterator<Item = Option<i64>>| {
            for (i, key) in keys.enumerate() {
                if let Some(k) = key {
                    refs.push((KeyPath::keys(&[table]).index(i).key("key"), k));
                }
            }
        };
        add("listen", &mut self.listen.iter().map(|r| r.key));
        add("server", &mut self.server.iter().map(|r| r.key));
        add("peer", &mut self.peer.iter().map(|r| r.key));
        add(
            "multicast-server",
            &mut self.multicast_server.iter().map(|r| r.key),
        );
        add(
            "broadcast-server",
            &mut self.broadcast_server.iter().map(|r| r.key),
        );
        add(
            "multicast-client",
            &mut self.multicast_client.iter().map(|r| r.key),
        );
        add(
            "broadcast-client",
            &mut self.broadcast_client.iter().map(|r| r.key),
        );
        refs
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
            let Some(k) = u32::try_from(k)
                .ok()
                .filter(|k| (1..=crate::config::MAX_KEY_ID).contains(k))
            else {
                continue; // reported with the table
            };
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
        let path = KeyPath::keys(&["auth"]);
        let before = errors.0.len();
        let keys_file = match raw.keys_file.as_deref() {
            None => {
                errors.push(path.key("keys-file"), "missing required key");
                None
            }
            Some(text) => non_empty_path(errors, path.key("keys-file"), text),
        };
        let mut trusted_keys = Vec::new();
        for (i, id) in raw.trusted_keys.iter().flatten().enumerate() {
            match u32::try_from(*id) {
                Ok(id) if (1..=65_535).contains(&id) => trusted_keys.push(id),
                _ => errors.push(
                    path.key("trusted-keys").index(i),
                    format!("key id {id} is out of range (1..=65535)"),
                ),
            }
        }
        let Some(keys_file) = keys_file else {
            return (None, None);
        };
        let auth = AuthConfig {
            keys_file,
            trusted_keys,
        };
        let mut store = None;
        if errors.0.len() == before {
            // The keys file is part of the configuration: a bad one is a startup error.
            match auth.load_keys() {
                Ok(keys) => store = Some(keys),
                Err(message) => errors.push(path.key("keys-file"), message),
            }
        }
        (Some(auth), store)
    }

    fn validate_rate_limit(&self, errors: &mut Errors) -> Option<RateLimit> {
        let raw = self.rate_limit.as_ref()?;
        let defaults = RateLimit::DEFAULT;
        let path = KeyPath::keys(&["rate-limit"]);
        let interval = duration(
            errors,
            path.key("interval"),
            raw.interval.as_ref(),
            defaults.interval,
            false,
        );
        if !(0.001..=86_400.0).contains(&interval) {
            errors.push(
                path.key("interval"),
                format!("{interval} s is out of range (1ms..=1d)"),
            );
        }
        let burst = match raw.burst {
            None => defaults.burst,
            Some(n) => match u32::try_from(n) {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    errors.push(path.key("burst"), format!("{n} is out of range (1..=1000)"));
                    defaults.burst
                }
            },
        };
        let max_clients = match raw.max_clients {
            None => defaults.max_clients,
            Some(n) => match usize::try_from(n) {
                Ok(n) if (1..=MAX_RATE_LIMIT_CLIENTS).contains(&n) => n,
                _ => {
                    errors.push(
                        path.key("max-clients"),
                        format!("{n} is out of range (1..={MAX_RATE_LIMIT_CLIENTS})"),
                    );
                    defaults.max_clients
                }
            },
        };
        Some(RateLimit {
            interval,
            burst,
            max_clients,
        })
    }

    fn validate_access(&self, errors: &mut Errors, instances: &[Instance]) -> Vec<Access> {
        let mut out = Vec::new();
        for (i, raw) in self.access.iter().enumerate() {
            let base = KeyPath::keys(&["access"]).index(i);
            let before = errors.0.len();
            let instance = instance(
                errors,
                base.key("instance"),
                raw.instance.as_ref(),
                instances,
            );
            let level = match raw.level.as_deref() {
                None => {
                    errors.push(base.key("level"), "missing required key");
                    None
                }
                Some(name) => AccessLevel::from_name(name).or_else(|| {
                    errors.push(
                        base.key("level"),
                        format!("unknown access level \"{name}\" (expected \"peer\", \"server\", \"synchronization\" or \"query\")"),
                    );
                    None
                }),
            };
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
                            Err(message) => errors.push(base.key("prefixes"), message),
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

    fn validate_clock(&self, errors: &mut Errors, defaults: &ClockConfig) -> ClockConfig {
        let Some(raw) = &self.clock else {
            return defaults.clone();
        };
        let backend = match raw.backend.as_deref() {
            None => defaults.backend,
            Some(name) => ClockBackend::from_name(name).unwrap_or_else(|| {
                errors.push(
                    KeyPath::keys(&["clock", "backend"]),
                    format!(
                        "unknown clock backend \"{name}\" (expected \"system\", \"observe\" or \"virtual\")"
                    ),
                );
                defaults.backend
            }),
        };
        let drift_file = raw
            .drift_file
            .as_ref()
            .and_then(|p| non_empty_path(errors, KeyPath::keys(&["clock", "drift-file"]), p));
        let initial_offset = duration(
            errors,
            KeyPath::keys(&["clock", "initial-offset"]),
            raw.initial_offset.as_ref(),
            defaults.initial_offset,
            true,
        );
        let frequency_error_ppm = match raw.frequency_error_ppm {
            None => defaults.frequency_error_ppm,
            Some(ppm) if ppm.is_finite() => ppm,
            Some(ppm) => {
                errors.push(
                    KeyPath::keys(&["clock", "frequency-error-ppm"]),
                    format!("{ppm} is not a finite number"),
                );
                defaults.frequency_error_ppm
            }
        };
        let max_distance = duration(
            errors,
            KeyPath::keys(&["clock", "max-distance"]),
            raw.max_distance.as_ref(),
            defaults.max_distance,
            false,
        );
        ClockConfig {
            backend,
            drift_file,
            initial_offset,
            frequency_error_ppm,
            max_distance,
        }
    }

    fn validate_discipline(
        &self,
        errors: &mut Errors,
        defaults: &DisciplineConfig,
    ) -> DisciplineConfig {
        let Some(raw) = &self.discipline else {
            return defaults.clone();
        };
        let step_threshold = duration(
            errors,
            KeyPath::keys(&["discipline", "step-threshold"]),
            raw.step_threshold.as_ref(),
            defaults.step_threshold,
            false,
        );
        let stepout = duration(
            errors,
            KeyPath::keys(&["discipline", "stepout"]),
            raw.stepout.as_ref(),
            defaults.stepout,
            false,
        );
        let panic_threshold = match &raw.panic_threshold {
            None => defaults.panic_threshold,
            Some(text) => {
                let secs = duration(
                    errors,
                    KeyPath::keys(&["discipline", "panic-threshold"]),
                    Some(text),
                    0.0,
                    false,
                );
                (secs > 0.0).then_some(secs)
            }
        };
        DisciplineConfig {
            step_threshold,
            stepout,
            panic_threshold,
        }
    }
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

    #[test]
    fn addresses_default_to_port_123() {
        assert_eq!(
            parse_address("192.0.2.1"),
            Ok("192.0.2.1:123".parse().unwrap())
        );
        assert_eq!(parse_address("::1"), Ok("[::1]:123".parse().unwrap()));
        assert_eq!(parse_address("[::1]"), Ok("[::1]:123".parse().unwrap()));
        assert_eq!(
            parse_address("[fd00:200::1]:4123"),
            Ok("[fd00:200::1]:4123".parse().unwrap())
        );
        assert!(parse_address("ntp.example.org:123").is_err());
        assert!(parse_address("10.0.0.1:99999").is_err());
        assert!(parse_address("").is_err());
    }

    #[test]
    fn prefixes_parse_and_match() {
        let p = parse_prefix("10.200.1.0/24").unwrap();
        assert_eq!(p.len, 24);
        assert!(p.contains("10.200.1.77".parse().unwrap()));
        assert!(!p.contains("10.200.2.1".parse().unwrap()));
        assert!(!p.contains("fd00:200::1".parse().unwrap()), "other family");
        let all = parse_prefix("0.0.0.0/0").unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6 = parse_prefix("fd00:200::/48").unwrap();
        assert!(v6.contains("fd00:200::5".parse().unwrap()));
        assert!(!v6.contains("fd00:201::5".parse().unwrap()));
        assert!(parse_prefix("::/0")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert_eq!(parse_prefix("10.200.1.9").unwrap().len, 32);
        assert_eq!(parse_prefix("fd00::1").unwrap().len, 128);
        for bad in [
            "10.200.1.1/24",
            "10.200.1.0/33",
            "fd00::/129",
            "x/8",
            "",
            "10.0.0.0/-1",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
        assert!(parse_prefix("10.200.1.1/24")
            .unwrap_err()
            .contains("10.200.1.0/24"));
    }
}
