//! Source addresses of unicast sources (`source` / `source-interface` on `[[server]]`,
//! `[[peer]]` and `[[instance]]`): the address each source's requests leave from.
//!
//! Requests go out of the instance's client socket (bound to the wildcard address) with the
//! source address in `IP_PKTINFO`/`IPV6_PKTINFO`, so replies come back to that socket and are
//! matched there as any other. An interface's address is looked up (`getifaddrs`, inside the
//! instance's namespace for a `netns` instance) when the configuration is applied and again
//! every [`REFRESH`], so a changed or newly added address is followed; a `source` address is
//! checked to be one of the host's the same way. While an interface has no address of the
//! source's family, or the address is not the host's, nothing is sent to that source (a
//! request from another address would defeat the setting), and a warning says why.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use strata_engine::InstanceId;
use strata_net::Placement;

use crate::config::{Config, SourceAddress};

/// How often interface addresses are looked up again.
pub(super) const REFRESH: Duration = Duration::from_secs(5);

/// One source's setting and what it resolved to.
struct Entry {
    want: SourceAddress,
    /// `None` while an interface has no usable address.
    resolved: Option<IpAddr>,
    /// Why it did not resolve, as last logged.
    error: Option<String>,
}

/// The source address of every unicast source that sets one.
#[derive(Default)]
pub(super) struct SourceAddrs {
    entries: HashMap<(InstanceId, SocketAddr), Entry>,
    refreshed: Option<Instant>,
}

/// What to do with a request to a remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Src {
    /// No setting: the routing table chooses.
    Any,
    /// Send from this address.
    From(IpAddr),
    /// The interface has no address now: do not send.
    Unavailable,
}

impl SourceAddrs {
    /// Takes the settings of `config`'s servers and peers (`instance_id` maps an instance
    /// name to its id) and resolves them.
    pub(super) fn set(
        &mut self,
        config: &Config,
        instance_id: impl Fn(&str) -> Option<InstanceId>,
        placement: impl Fn(InstanceId) -> Placement,
    ) {
        let mut entries = HashMap::new();
        for s in config.server.iter().chain(&config.peer) {
            let (Some(want), Some(id)) = (&s.source, instance_id(&s.instance)) else {
                continue;
            };
            let old = self.entries.remove(&(id, s.address));
            let (resolved, error) = match old {
                Some(e) if e.want == *want => (e.resolved, e.error),
                _ => (None, None),
            };
            let entry = Entry {
                want: want.clone(),
                resolved,
                error,
            };
            entries.insert((id, s.address), entry);
        }
        self.entries = entries;
        self.refresh(placement);
    }

    /// Looks interface addresses up again when [`REFRESH`] has passed.
    pub(super) fn maybe_refresh(&mut self, placement: impl Fn(InstanceId) -> Placement) {
        if self.refreshed.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        self.refresh(placement);
    }

    /// Resolves every setting now, logging what changed.
    fn refresh(&mut self, placement: impl Fn(InstanceId) -> Placement) {
        self.refreshed = Some(Instant::now());
        for ((instance, remote), e) in &mut self.entries {
            let now = match &e.want {
                SourceAddress::Address(ip) => local(*ip, &placement(*instance)),
                SourceAddress::Interface(name) => {
                    lookup(name, remote.is_ipv6(), &placement(*instance))
                }
            };
            match now {
                Ok(ip) => {
                    if e.resolved != Some(ip) {
                        tracing::info!(%remote, source = %ip, "{}: sending from {ip}", e.want);
                    }
                    e.resolved = Some(ip);
                    e.error = None;
                }
                Err(why) => {
                    if e.error.as_ref() != Some(&why) {
                        tracing::warn!(%remote, "{}: {why}; not sending to {remote} until it has one", e.want);
                    }
                    e.resolved = None;
                    e.error = Some(why);
                }
            }
        }
    }

    /// Where a request of `instance` to `remote` leaves from.
    pub(super) fn for_remote(&self, instance: InstanceId, remote: SocketAddr) -> Src {
        match self.entries.get(&(instance, remote)) {
            None => Src::Any,
            Some(Entry {
                resolved: Some(ip), ..
            }) => Src::From(*ip),
            Some(_) => Src::Unavailable,
        }
    }
}

/// `ip` when it is an address of this host (where the instance's sockets live): the kernel
/// accepts only a local source address (127.0.0.0/8 is all local on `lo`).
fn local(ip: IpAddr, placement: &Placement) -> Result<IpAddr, String> {
    let loopback_net = matches!(ip, IpAddr::V4(v4) if v4.is_loopback());
    let r = match placement {
        Placement::Netns(ns) => {
            strata_net::in_netns(ns, || strata_net::is_local_address(ip)).and_then(|r| r)
        }
        _ => strata_net::is_local_address(ip),
    };
    match r {
        Ok(true) => Ok(ip),
        Ok(false) if loopback_net => Ok(ip),
        Ok(false) => Err(format!("{ip} is not an address of this host")),
        Err(e) => Err(format!("{e}")),
    }
}

/// The address of interface `name` of one family, looked up where the instance's sockets
/// live.
fn lookup(name: &str, v6: bool, placement: &Placement) -> Result<IpAddr, String> {
    let r = match placement {
        Placement::Netns(ns) => {
            strata_net::in_netns(ns, || strata_net::interface_address(name, v6)).and_then(|r| r)
        }
        _ => strata_net::interface_address(name, v6),
    };
    r.map_err(|e| format!("{e}"))
}
