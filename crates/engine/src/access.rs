//! Access levels and the per-instance rules that grant them.
//!
//! Levels, least restrictive first: `peer` (time service, and may mobilise
//! a symmetric passive association), `server` (time service and control
//! queries), `synchronization` (time service only), `query` (control
//! queries only, no time service). Rules are checked by level, from the
//! highest down (peer, server, synchronization, query), as the vendor CLI
//! does: the first level with a rule whose prefix contains the source
//! grants it, whatever the order of the rules, so a broader rule of a
//! lower level never hides a narrower one of a higher level. An instance
//! with no rules gives every source `server`; once rules exist, a source
//! matching none gets no service at all.

use core::net::IpAddr;

/// What a source may do. Ordered: `Query < Synchronization < Server < Peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessLevel {
    /// Control queries only.
    Query,
    /// Time service only.
    Synchronization,
    /// Time service and control queries.
    Server,
    /// Time service, and may mobilise symmetric passive associations.
    Peer,
}

impl AccessLevel {
    /// Whether this level includes time service (answering mode 3, and a
    /// stateless mode-2 answer to mode 1).
    #[must_use]
    pub fn serves_time(self) -> bool {
        self >= AccessLevel::Synchronization
    }

    /// The level named `name` in the configuration, if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "peer" => Some(AccessLevel::Peer),
            "server" => Some(AccessLevel::Server),
            "synchronization" => Some(AccessLevel::Synchronization),
            "query" => Some(AccessLevel::Query),
            _ => None,
        }
    }

    /// The config name of the level.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Query => "query",
            AccessLevel::Synchronization => "synchronization",
            AccessLevel::Server => "server",
            AccessLevel::Peer => "peer",
        }
    }
}

/// One rule: sources within `prefix/prefix_len` get `level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccessRule {
    /// The network address.
    pub prefix: IpAddr,
    /// The prefix length (0..=32 for IPv4, 0..=128 for IPv6; larger values
    /// match only the address itself).
    pub prefix_len: u8,
    /// The level granted.
    pub level: AccessLevel,
}

impl AccessRule {
    /// Whether `ip` lies within this rule's prefix. An IPv4 rule never
    /// matches an IPv6 source and vice versa (IPv4-mapped IPv6 addresses
    /// are matched as IPv4).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        prefix_contains(self.prefix, self.prefix_len, ip)
    }
}

/// Whether `ip` lies within `prefix/len`. An IPv4 prefix never matches an
/// IPv6 address and vice versa, except that IPv4-mapped IPv6 addresses are
/// matched as IPv4; lengths beyond the family's width match the address
/// only.
#[must_use]
pub fn prefix_contains(prefix: IpAddr, len: u8, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    match (prefix, ip) {
        (IpAddr::V4(p), IpAddr::V4(a)) => {
            prefix_eq(u128::from(u32::from(p)), u128::from(u32::from(a)), 32, len)
        }
        (IpAddr::V6(p), IpAddr::V6(a)) => prefix_eq(u128::from(p), u128::from(a), 128, len),
        _ => false,
    }
}

fn prefix_eq(p: u128, a: u128, bits: u32, len: u8) -> bool {
    let len = u32::from(len).min(bits);
    if len == 0 {
        return true;
    }
    let shift = bits - len;
    (p >> shift) == (a >> shift)
}

/// The level `rules` give `ip`: the highest level among the rules whose
/// prefix contains it (levels are checked from `Peer` down; the order of
/// `rules` does not matter), `Server` with no rules at all, `None` when
/// rules exist and none matches.
#[must_use]
pub fn level_for(rules: &[AccessRule], ip: IpAddr) -> Option<AccessLevel> {
    if rules.is_empty() {
        return Some(AccessLevel::Server);
    }
    rules
        .iter()
        .filter(|r| r.contains(ip))
        .map(|r| r.level)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(p: &str, len: u8, level: AccessLevel) -> AccessRule {
        AccessRule {
            prefix: p.parse().expect("ip"),
            prefix_len: len,
            level,
        }
    }

    #[test]
    fn levels_and_default_is_server() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(level_for(&[], ip("192.0.2.1")), Some(AccessLevel::Server));
        let rules = [
            rule("10.200.1.0", 24, AccessLevel::Peer),
            rule("0.0.0.0", 0, AccessLevel::Synchronization),
            rule("fd00:200::", 48, AccessLevel::Query),
        ];
        assert_eq!(level_for(&rules, ip("10.200.1.7")), Some(AccessLevel::Peer));
        assert_eq!(
            level_for(&rules, ip("10.200.2.7")),
            Some(AccessLevel::Synchronization)
        );
        assert_eq!(
            level_for(&rules, ip("::ffff:10.200.1.9")),
            Some(AccessLevel::Peer)
        );
        assert_eq!(
            level_for(&rules, ip("fd00:200:0:1::5")),
            Some(AccessLevel::Query)
        );
        assert_eq!(level_for(&rules, ip("fd00:201::5")), None);
        assert!(AccessLevel::Peer.serves_time());
        assert!(AccessLevel::Peer > AccessLevel::Server);
        assert!(AccessLevel::Server > AccessLevel::Synchronization);
        assert!(AccessLevel::Synchronization > AccessLevel::Query);
        assert!(!AccessLevel::Query.serves_time());
    }

    #[test]
    fn highest_matching_level_wins_whatever_the_order() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        // A broad low level listed first, narrower higher levels after it.
        let rules = [
            rule("10.200.0.0", 16, AccessLevel::Query),
            rule("0.0.0.0", 0, AccessLevel::Synchronization),
            rule("10.200.3.0", 24, AccessLevel::Server),
            rule("10.200.2.0", 24, AccessLevel::Peer),
        ];
        let mut reversed = rules;
        reversed.reverse();
        for rules in [&rules[..], &reversed[..]] {
            assert_eq!(level_for(rules, ip("10.200.2.9")), Some(AccessLevel::Peer));
            assert_eq!(
                level_for(rules, ip("10.200.3.9")),
                Some(AccessLevel::Server)
            );
            // Query (10.200.0.0/16) and synchronization (everyone) both
            // match: synchronization is the higher level.
            assert_eq!(
                level_for(rules, ip("10.200.4.9")),
                Some(AccessLevel::Synchronization)
            );
            assert_eq!(
                level_for(rules, ip("192.0.2.1")),
                Some(AccessLevel::Synchronization)
            );
            // No IPv6 rule: no service over IPv6.
            assert_eq!(level_for(rules, ip("2001:db8::1")), None);
        }
        // A narrower query rule cannot take a level away: it only grants.
        let rules = [
            rule("192.0.2.66", 32, AccessLevel::Query),
            rule("192.0.2.0", 24, AccessLevel::Server),
        ];
        assert_eq!(
            level_for(&rules, ip("192.0.2.66")),
            Some(AccessLevel::Server)
        );
        let rules = [rule("192.0.2.66", 32, AccessLevel::Query)];
        assert_eq!(
            level_for(&rules, ip("192.0.2.66")),
            Some(AccessLevel::Query)
        );
        assert_eq!(level_for(&rules, ip("192.0.2.67")), None);
    }

    #[test]
    fn host_routes_and_odd_lengths() {
        let r = rule("10.200.1.1", 32, AccessLevel::Peer);
        assert!(r.contains("10.200.1.1".parse().expect("ip")));
        assert!(!r.contains("10.200.1.2".parse().expect("ip")));
        let r = rule("10.200.1.1", 200, AccessLevel::Peer);
        assert!(r.contains("10.200.1.1".parse().expect("ip")));
        assert!(!r.contains("::1".parse().expect("ip")));
    }
}
