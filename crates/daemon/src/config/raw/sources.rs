//! The raw → validated conversion of the sources and instances: `[[server]]` and `[[peer]]`,
//! the mode-5 tables (their groups, senders and client keys), `[[broadcast-server]]` and
//! `[[instance]]`, with the `source`/`source-interface` rule they share.

use std::net::{IpAddr, SocketAddr};

use strata_engine::Calibrate;

use super::super::value::{Device, Group, Ip, KeyId, V};
use super::super::{
    BroadcastServer, Instance, InstancePlacement, Listen, Server, SourceAddress,
    DEFAULT_BROADCAST_POLL, DEFAULT_GROUP_V4, DEFAULT_INSTANCE, DEFAULT_NTP_PORT,
};
use super::{Errors, KeyPath, Port, RawConfig, RawServer, Scope};

/// The entries of an array of tables with their key paths.
pub(super) fn entries<'a, T>(table: &str, raws: &'a [T]) -> impl Iterator<Item = (KeyPath, &'a T)> {
    let table = KeyPath::keys(&[table]);
    raws.iter()
        .enumerate()
        .map(move |(i, raw)| (table.index(i), raw))
}

/// `source` or `source-interface` of a table (at most one), checked against the family of
/// `family_of` when that is known.
fn source_address(
    errors: &mut Errors,
    base: &KeyPath,
    source: Option<&V<Ip>>,
    interface: Option<&V<Device>>,
    family_of: Option<SocketAddr>,
) -> Option<SourceAddress> {
    match (source, interface) {
        (Some(_), Some(_)) => {
            errors.push(
                base.key("source-interface"),
                "give at most one of `source` or `source-interface`, not both",
            );
            None
        }
        (Some(ip), None) => {
            let ip = ip.0;
            if let Some(server) = family_of.filter(|a| a.is_ipv4() != ip.is_ipv4()) {
                errors.push(
                    base.key("source"),
                    format!(
                        "source {ip} is not of the address family of {}",
                        server.ip()
                    ),
                );
                return None;
            }
            if ip.is_unspecified() || ip.is_multicast() {
                errors.push(
                    base.key("source"),
                    format!("source {ip} must be a unicast address of this host"),
                );
                return None;
            }
            Some(SourceAddress::Address(ip))
        }
        (None, Some(i)) => Some(SourceAddress::Interface(i.0.clone())),
        (None, None) => None,
    }
}

/// `[[server]]` or `[[peer]]` entries.
pub(super) fn sources(
    errors: &mut Errors,
    table: &str,
    raws: &[RawServer],
    instances: &[Instance],
) -> Vec<Server> {
    let mut out = Vec::new();
    for (base, raw) in entries(table, raws) {
        let address = errors.required(base.key("address"), raw.address.as_ref().map(|a| a.0));
        let instance = errors.instance(base.key("instance"), raw.instance.as_ref(), instances);
        let minpoll = raw
            .minpoll
            .as_ref()
            .map_or(Server::DEFAULT_MINPOLL, |p| p.0);
        let maxpoll = raw
            .maxpoll
            .as_ref()
            .map_or(Server::DEFAULT_MAXPOLL, |p| p.0);
        if minpoll > maxpoll {
            // Name the key the user wrote; minpoll when both or neither were given.
            let key = if raw.maxpoll.is_some() && raw.minpoll.is_none() {
                "maxpoll"
            } else {
                "minpoll"
            };
            errors.push(
                base.key(key),
                format!("minpoll {minpoll} is greater than maxpoll {maxpoll}"),
            );
            continue;
        }
        if table != "peer" && raw.calibrate.is_some() {
            errors.push(
                base.key("calibrate"),
                "calibrate applies only to [[peer]] (symmetric active)",
            );
        }
        let own = source_address(
            errors,
            &base,
            raw.source.as_ref(),
            raw.source_interface.as_ref(),
            address,
        );
        // The instance's default: an interface always, an address for its family only.
        let inherited = || {
            let inst = instances.iter().find(|i| i.name == instance)?;
            match (&inst.source, address) {
                (Some(SourceAddress::Address(ip)), Some(a)) if ip.is_ipv4() != a.is_ipv4() => None,
                (s, _) => s.clone(),
            }
        };
        let own_given = raw.source.is_some() || raw.source_interface.is_some();
        let source = if own_given { own } else { inherited() };
        if let Some(address) = address {
            out.push(Server {
                address,
                instance,
                minpoll,
                maxpoll,
                iburst: raw.iburst.unwrap_or(false),
                key: raw.key.as_ref().map(|k| k.0),
                calibrate: raw.calibrate.as_ref().map_or(Calibrate::default(), |c| c.0),
                source,
            });
        }
    }
    out
}

/// A multicast group with its port: `group` (default 224.0.1.1), or `ff0X::101` when only
/// `ipv6-scope` is given.
pub(super) fn group(
    group: Option<&V<Group>>,
    scope: Option<&V<Scope>>,
    port: Option<&V<Port>>,
) -> SocketAddr {
    let ip = match (group, scope) {
        (Some(g), _) => g.0,
        (None, Some(s)) => IpAddr::V6(super::super::ipv6_ntp_group(s.0)),
        (None, None) => IpAddr::V4(DEFAULT_GROUP_V4),
    };
    SocketAddr::new(ip, port.map_or(DEFAULT_NTP_PORT, |p| p.0))
}

/// A multicast or broadcast server sends from a `[[listen]]` socket of its instance (clients
/// calibrate against the port that answers them), so its instance needs a listener of the
/// destination's address family; start-up refuses one without.
pub(super) fn check_mode5_senders(errors: &mut Errors, raw: &RawConfig, listen: &[Listen]) {
    let instance = |i: &Option<String>| i.as_deref().unwrap_or(DEFAULT_INSTANCE).to_owned();
    let multicast = entries("multicast-server", &raw.multicast_server).map(|(base, m)| {
        let dst = group(m.group.as_ref(), m.ipv6_scope.as_ref(), m.port.as_ref());
        let key = if m.group.is_none() && m.ipv6_scope.is_some() {
            "ipv6-scope"
        } else {
            "group"
        };
        (base.key(key), Some(dst), instance(&m.instance))
    });
    let broadcast = entries("broadcast-server", &raw.broadcast_server).map(|(base, b)| {
        let dst = b.address.as_ref().map(|a| a.0);
        (base.key("address"), dst, instance(&b.instance))
    });
    for (path, dst, instance) in multicast.chain(broadcast) {
        let Some(dst) = dst else { continue };
        if !listen
            .iter()
            .any(|l| l.instance == instance && l.address.is_ipv4() == dst.is_ipv4())
        {
            let family = if dst.is_ipv4() { "IPv4" } else { "IPv6" };
            errors.push(
                path,
                format!(
                    "instance \"{instance}\" has no [[listen]] address of the {family} family to send {dst} from (clients calibrate against that port)"
                ),
            );
        }
    }
}

/// The broadcast/multicast clients of one instance share one setting in the engine, so those
/// that name a key must all name the same one, and either all or none name one.
pub(super) fn check_client_keys(errors: &mut Errors, raw: &RawConfig) {
    let setting = |instance: &Option<String>, key: &Option<V<KeyId>>| {
        let instance = instance.as_deref().unwrap_or(DEFAULT_INSTANCE).to_owned();
        (instance, key.as_ref().map(|k| k.0))
    };
    let entries: Vec<(KeyPath, (String, Option<u32>))> =
        entries("multicast-client", &raw.multicast_client)
            .map(|(base, c)| (base, setting(&c.instance, &c.key)))
            .chain(
                entries("broadcast-client", &raw.broadcast_client)
                    .map(|(base, c)| (base, setting(&c.instance, &c.key))),
            )
            .collect();
    for (n, (path, (instance, key))) in entries.iter().enumerate() {
        let Some((first, (_, first_key))) = entries[..n].iter().find(|(_, (i, _))| i == instance)
        else {
            continue;
        };
        if first_key != key {
            let show = |k: &Option<u32>| k.map_or_else(|| "none".to_owned(), |k| k.to_string());
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
pub(super) fn client_key(
    errors: &mut Errors,
    base: &KeyPath,
    key: Option<&V<KeyId>>,
    allow_unauthenticated: Option<bool>,
) -> Option<Option<u32>> {
    let key = key.map(|k| k.0);
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
    pub(super) fn validate_broadcast_servers(
        &self,
        errors: &mut Errors,
        instances: &[Instance],
    ) -> Vec<BroadcastServer> {
        let mut out = Vec::new();
        for (base, raw) in entries("broadcast-server", &self.broadcast_server) {
            let address = errors.required(base.key("address"), raw.address.as_ref().map(|a| a.0));
            let instance = errors.instance(base.key("instance"), raw.instance.as_ref(), instances);
            match address {
                Some(a) if !a.is_ipv4() => errors.push(
                    base.key("address"),
                    "broadcast needs an IPv4 address (IPv6 has multicast-server)",
                ),
                Some(address) => out.push(BroadcastServer {
                    address,
                    interface: raw.interface.as_ref().map(|i| i.0.clone()),
                    poll: raw.poll.as_ref().map_or(DEFAULT_BROADCAST_POLL, |p| p.0),
                    instance,
                    key: raw.key.as_ref().map(|k| k.0),
                }),
                None => {}
            }
        }
        out
    }

    pub(super) fn validate_instances(&self, errors: &mut Errors) -> Vec<Instance> {
        let mut out: Vec<Instance> = Vec::new();
        for (base, raw) in entries("instance", &self.instance) {
            let name = match raw.name.as_deref() {
                None => errors.required::<String>(base.key("name"), None),
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
                (Some(d), None) => Some(InstancePlacement::Device(d.0.clone())),
                (None, Some(n)) => Some(InstancePlacement::Netns(n.0.clone())),
            };
            if let (Some(name), Some(placement)) = (name, placement) {
                out.push(Instance {
                    name,
                    placement,
                    max_dynamic_sessions: raw
                        .max_dynamic_sessions
                        .as_ref()
                        .map_or(Instance::DEFAULT_MAX_DYNAMIC_SESSIONS, |m| m.0),
                    source: source_address(
                        errors,
                        &base,
                        raw.source.as_ref(),
                        raw.source_interface.as_ref(),
                        None,
                    ),
                    ignore_interfaces: raw
                        .ignore_interfaces
                        .iter()
                        .flatten()
                        .map(|d| d.0.clone())
                        .collect(),
                });
            }
        }
        out
    }
}
