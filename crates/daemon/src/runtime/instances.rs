//! VPN instances at run time: the table of instances (placement, health, listeners,
//! broadcast/multicast settings), and registering them with the engine, bringing them up with
//! their placement, health checks and retries.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::bail;
use strata_engine::{AccessRule, InstanceId};
use strata_net::Placement;

use super::mode5::{self, Mode5Rt};
use super::{Daemon, FOREIGN_INSTANCE, IGNORED_INTERFACE};
use crate::config::{Config, InstancePlacement, DEFAULT_INSTANCE};

/// The first retry delay of a down instance.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest retry delay of a down instance.
const RETRY_MAX: Duration = Duration::from_secs(8);

/// The daemon's view of one instance: placement, listeners and health.
pub(super) struct InstanceRt {
    pub name: String,
    pub placement: Placement,
    /// The `[[listen]]` addresses of this instance.
    pub listen: Vec<SocketAddr>,
    pub up: bool,
    /// Why the instance is down (or its last failure).
    pub error: Option<String>,
    retry_at: std::time::Instant,
    backoff: Duration,
    /// Device-bound: the device's ifindex and those of its lower devices
    /// (the interfaces enslaved to a VRF).
    ifindexes: Vec<u32>,
    /// Datagrams dropped by the daemon itself, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// The indexes of its `ignore-interfaces` that exist now.
    pub ignored: Vec<u32>,
    /// Broadcast and multicast settings.
    pub mode5: Mode5Rt,
}

/// Every instance, the default one included.
#[derive(Default)]
pub(super) struct Instances(BTreeMap<InstanceId, InstanceRt>);

impl Instances {
    pub(super) fn get(&self, id: InstanceId) -> Option<&InstanceRt> {
        self.0.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: InstanceId) -> Option<&mut InstanceRt> {
        self.0.get_mut(&id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (InstanceId, &InstanceRt)> {
        self.0.iter().map(|(id, i)| (*id, i))
    }

    fn ids(&self) -> Vec<InstanceId> {
        self.0.keys().copied().collect()
    }

    /// The name of an instance (`#N` for one the daemon does not know).
    pub(super) fn name(&self, id: InstanceId) -> String {
        self.get(id)
            .map_or_else(|| format!("#{}", id.0), |i| i.name.clone())
    }

    /// The instance named `name`.
    pub(super) fn id(&self, name: &str) -> Option<InstanceId> {
        self.iter().find(|(_, i)| i.name == name).map(|(id, _)| id)
    }

    /// The device-bound instances that are up.
    fn bound_up(&self) -> impl Iterator<Item = &InstanceRt> {
        let all = self.0.values();
        all.filter(|i| i.up && matches!(i.placement, Placement::Device(_)))
    }

    /// The interfaces of up device-bound instances.
    pub(super) fn foreign_ifindexes(&self) -> Vec<u32> {
        let ifindexes = self.bound_up().flat_map(|i| i.ifindexes.iter().copied());
        ifindexes.collect()
    }

    /// Whether `ifindex` belongs to an up device-bound instance.
    pub(super) fn is_foreign(&self, ifindex: Option<u32>) -> bool {
        ifindex.is_some_and(|x| self.bound_up().any(|i| i.ifindexes.contains(&x)))
    }

    /// The ignored interfaces of every instance, as (instance, ifindex).
    pub(super) fn ignored(&self) -> Vec<(InstanceId, u32)> {
        let all = self.iter();
        all.flat_map(|(id, i)| i.ignored.iter().map(move |x| (id, *x)))
            .collect()
    }

    /// Whether a datagram of `instance` that arrived on `ifindex` is to be ignored, counting
    /// it (`ignored-interface`) when it is.
    pub(super) fn drop_ignored(&mut self, instance: InstanceId, ifindex: Option<u32>) -> bool {
        let Some(inst) = self.get_mut(instance) else {
            return false;
        };
        if !ifindex.is_some_and(|x| inst.ignored.contains(&x)) {
            return false;
        }
        *inst
            .dropped
            .entry(IGNORED_INTERFACE.to_owned())
            .or_default() += 1;
        true
    }

    /// Counts a datagram the default instance dropped for arriving on another instance's
    /// interface.
    pub(super) fn count_foreign(&mut self) {
        if let Some(inst) = self.get_mut(InstanceId::DEFAULT) {
            *inst.dropped.entry(FOREIGN_INSTANCE.to_owned()).or_default() += 1;
        }
    }

    /// Records a failure and schedules the next retry.
    fn retry_later(&mut self, id: InstanceId, why: String) {
        let Some(inst) = self.get_mut(id) else {
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

impl Daemon {
    /// Registers every instance of `config` with the node and the table; named instances
    /// start down and are brought up by [`Daemon::maintain`].
    pub(super) fn add_instances(&mut self, config: &Config) {
        let now = std::time::Instant::now();
        let named = config.instance.iter().map(|i| {
            let placement = match &i.placement {
                InstancePlacement::Device(d) => Placement::Device(d.clone()),
                InstancePlacement::Netns(n) => Placement::Netns(n.clone()),
            };
            (i.name.as_str(), placement)
        });
        for (name, placement) in
            std::iter::once((DEFAULT_INSTANCE, Placement::Default)).chain(named)
        {
            let id = self.node.add_instance(name);
            let mode5 = mode5::settings(config, name);
            self.configure_mode5(id, config, name);
            let up = placement == Placement::Default;
            let inst = InstanceRt {
                name: name.to_owned(),
                placement,
                listen: Vec::new(),
                up,
                error: None,
                retry_at: now,
                backoff: RETRY_MIN,
                ifindexes: Vec::new(),
                dropped: BTreeMap::new(),
                ignored: Vec::new(),
                mode5,
            };
            self.instances.0.insert(id, inst);
        }
    }

    /// Gives every instance the access rules, session limit and listeners of `config`;
    /// listeners are opened and closed to match in the instances that are up (those that are
    /// down open theirs when they come up). Returns the listeners (opened, closed) and the
    /// ones that could not be opened.
    pub(super) fn update_instances(
        &mut self,
        config: &Config,
    ) -> (usize, usize, Vec<(SocketAddr, anyhow::Error)>) {
        let (mut opened, mut closed, mut failed) = (0, 0, Vec::new());
        for id in self.instances.ids() {
            let Some(inst) = self.instances.get(id) else {
                continue;
            };
            let (name, placement, up) = (inst.name.clone(), inst.placement.clone(), inst.up);
            self.node.set_access(id, access_rules(config, &name));
            if id == InstanceId::DEFAULT {
                self.node.set_max_dynamic(id, config.dynamic_sessions.max);
            } else if let Some(i) = config.instance.iter().find(|i| i.name == name) {
                self.node.set_max_dynamic(id, i.max_dynamic_sessions);
            }
            let want: Vec<SocketAddr> = config
                .listen
                .iter()
                .filter(|l| l.instance == name)
                .map(|l| l.address)
                .collect();
            let locals: Vec<IpAddr> = want
                .iter()
                .map(SocketAddr::ip)
                .filter(|ip| !ip.is_unspecified())
                .collect();
            self.node.set_local_addresses(id, &locals);
            let have = std::mem::replace(
                &mut self.instances.0.get_mut(&id).expect("listed above").listen,
                want.clone(),
            );
            if !up {
                continue;
            }
            for gone in have.iter().filter(|a| !want.contains(a)) {
                if let Some(sock) = self.sockets.listener_bound_to(id, *gone) {
                    self.sockets.close(sock);
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
                    Err(e) => failed.push((*addr, e)),
                }
            }
        }
        (opened, closed, failed)
    }

    /// Looks up the indexes of every instance's ignored interfaces (in its namespace): an
    /// interface that appears, or is re-created with a new index, is followed.
    pub(super) fn refresh_ignored(&mut self) {
        for id in self.instances.ids() {
            let Some(inst) = self.instances.get(id) else {
                continue;
            };
            let names = self.config.ignored_interfaces(&inst.name);
            let lookup = |name: &String| -> Option<u32> {
                match &inst.placement {
                    Placement::Netns(ns) => {
                        strata_net::in_netns(ns, || strata_net::ifindex(name).ok())
                            .ok()
                            .flatten()
                    }
                    _ => strata_net::ifindex(name).ok(),
                }
            };
            let ignored: Vec<u32> = if names.is_empty() {
                Vec::new()
            } else {
                names.iter().filter_map(lookup).collect()
            };
            if let Some(inst) = self.instances.get_mut(id) {
                inst.ignored = ignored;
            }
        }
    }

    /// Checks the health of up instances (their namespace or device still
    /// exists) and retries down instances whose retry time has come.
    pub(super) fn maintain(&mut self) {
        self.sockets.reap_workers();
        let now = std::time::Instant::now();
        for id in self.instances.ids() {
            let Some(inst) = self.instances.get(id) else {
                continue;
            };
            match (&inst.placement, inst.up) {
                (Placement::Default, _) => {}
                (placement, true) => match placement_ifindexes(placement) {
                    // The default instance's workers drop what arrives on these interfaces:
                    // a change is published with the next flush.
                    Ok(ifindexes) if placement_matches(placement, &inst.ifindexes, &ifindexes) => {
                        if let Some(inst) = self.instances.get_mut(id) {
                            inst.ifindexes = ifindexes;
                        }
                    }
                    Ok(_) => self.take_down(id, "its device was replaced".to_owned()),
                    Err(e) => self.take_down(id, format!("{e:#}")),
                },
                (_, false) if now >= inst.retry_at => {
                    if let Err(e) = self.bring_up(id) {
                        self.instances.retry_later(id, format!("{e:#}"));
                    }
                }
                (_, false) => {}
            }
        }
    }

    /// Opens an instance's listeners with its placement and marks it up;
    /// on failure nothing stays open.
    fn bring_up(&mut self, id: InstanceId) -> anyhow::Result<()> {
        let Some(inst) = self.instances.get(id) else {
            bail!("unknown instance");
        };
        let placement = inst.placement.clone();
        let listen = inst.listen.clone();
        let name = inst.name.clone();
        let ifindexes = placement_ifindexes(&placement)?;
        for address in &listen {
            if let Err(e) = self.open_socket(id, *address, true, &placement) {
                self.sockets.close_instance(id);
                return Err(e.context(format!("listen address {address}")));
            }
        }
        if let Err(e) = self.open_mode5(id, &placement) {
            self.sockets.close_instance(id);
            return Err(e);
        }
        if let Some(inst) = self.instances.get_mut(id) {
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
        self.sockets.close_instance(id);
        if let Some(inst) = self.instances.get_mut(id) {
            inst.up = false;
            inst.backoff = RETRY_MIN;
            inst.ifindexes.clear();
            inst.mode5.senders.clear();
        }
        self.instances.retry_later(id, why);
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

/// The engine's access rules of instance `name`, in file order.
fn access_rules(config: &Config, name: &str) -> Vec<AccessRule> {
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
        Placement::Device(dev) => Ok(strata_net::device_ifindexes(dev)?),
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
