//! Per-client rate limiting for the server side, with KoD RATE.
//!
//! Clients are keyed by [`ClientKey`] — the VPN instance and the source IP
//! address, never the port (an IPv4-mapped IPv6 address counts as its
//! IPv4 address). Each client has a token bucket of `burst` tokens that
//! refills one token per `interval`, kept as a single "theoretical arrival
//! time" (the GCRA formulation: integer nanoseconds, no floats, no timer).
//!
//! [`RateLimiter::check`] answers, for one request:
//!
//! - [`Decision::Allow`]: a token was available; answer normally.
//! - [`Decision::KissRate`]: the client is over its rate, and has not been
//!   sent a KoD in the last `interval`: answer with a KoD RATE (the driver
//!   makes it no larger than the request).
//! - [`Decision::Drop`]: over its rate and already told: send nothing.
//!
//! A request over the rate is not free either: it moves the client's next
//! allowed request to one `interval` after it. So a client that keeps
//! sending more often than once per `interval` gets no replies at all
//! beyond its first burst — only one KoD per `interval` — and is served
//! again as soon as it leaves one `interval` between two requests.
//!
//! # Memory and eviction
//!
//! The table holds at most `max_clients` entries (clamped to
//! [`MAX_CLIENTS_LIMIT`]) in a slab indexed by a `HashMap` (SipHash with a
//! random key, so spoofed sources cannot force collisions). Lookups are
//! O(1). When a new client arrives at a full table, a clock hand sweeps the
//! slab for a victim with a second-chance (CLOCK) policy that prefers idle
//! clients:
//!
//! - an entry *at rest* (its bucket full again and no KoD pending) is
//!   evicted at once: a fresh entry behaves identically, so evicting it
//!   loses nothing;
//! - an entry not seen again since it was created or since the hand last
//!   passed is evicted;
//! - a returning client (seen since the hand last passed) gets a second
//!   chance: its mark is cleared and the hand moves on.
//!
//! An abuser that keeps sending therefore keeps its state under a flood of
//! spoofed one-shot sources. The sweep is amortised O(1) (each step either
//! evicts or clears a mark set by an earlier lookup). The slab and the map
//! grow with the number of clients until the table is first full; at that
//! point the map reserves room for twice the capacity, so from then on an
//! eviction reuses the slot and the map rehashes in place: no allocation
//! per request in steady state.
//!
//! [`ShardedRateLimiter`] splits the table into independently locked
//! shards chosen by a hash of the key, for drivers answering on several
//! threads.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::{InstanceId, Instant};

/// The most clients a [`RateLimiter`] tracks, whatever its configuration.
pub const MAX_CLIENTS_LIMIT: usize = 1 << 24;

/// The most shards a [`ShardedRateLimiter`] has.
pub const MAX_SHARDS: usize = 1024;

/// Who a request comes from: the VPN instance and the source IP address.
pub type ClientKey = (InstanceId, IpAddr);

/// Rate limiter settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// One token refills every `interval`: a client's sustained rate is
    /// one request per `interval`, and it gets at most one KoD per
    /// `interval`. Zero disables limiting (every request is allowed).
    pub interval: Duration,
    /// The bucket size: how many requests may arrive at once. 0 counts as 1.
    pub burst: u32,
    /// The most clients tracked (memory cap), at least 1 and at most
    /// [`MAX_CLIENTS_LIMIT`].
    pub max_clients: usize,
}

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum Decision {
    /// Answer it.
    Allow,
    /// Send nothing.
    Drop,
    /// Answer with a KoD RATE.
    KissRate,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: ClientKey,
    /// Theoretical arrival time of the next conforming request, in ns.
    tat: u64,
    /// No KoD before this time, in ns.
    kod_at: u64,
    /// Seen since it was created or the clock hand last passed.
    referenced: bool,
}

impl Entry {
    const fn new(key: ClientKey) -> Entry {
        Entry {
            key,
            tat: 0,
            kod_at: 0,
            referenced: false,
        }
    }

    const fn at_rest(&self, now: u64) -> bool {
        self.tat <= now && self.kod_at <= now
    }
}

/// A bounded per-client token-bucket table (see the module docs).
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    interval_ns: u64,
    /// How far the theoretical arrival time may run ahead of now and still
    /// allow a request: `(burst - 1) * interval`.
    tolerance_ns: u64,
    capacity: usize,
    slots: Vec<Entry>,
    index: HashMap<ClientKey, usize>,
    hand: usize,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The key with an IPv4-mapped IPv6 address turned into its IPv4 address.
fn normalize((instance, ip): ClientKey) -> ClientKey {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    (instance, ip)
}

impl RateLimiter {
    /// An empty limiter. Out-of-range settings are clamped (see
    /// [`RateLimitConfig`]).
    #[must_use]
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        let capacity = config.max_clients.clamp(1, MAX_CLIENTS_LIMIT);
        let interval_ns = nanos(config.interval);
        let burst = config.burst.max(1);
        RateLimiter {
            config,
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst - 1)),
            capacity,
            slots: Vec::new(),
            index: HashMap::new(),
            hand: 0,
        }
    }

    /// The configuration it was built with.
    #[must_use]
    pub const fn config(&self) -> RateLimitConfig {
        self.config
    }

    /// The number of clients tracked now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no client is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The most clients it tracks.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `key` is tracked now.
    #[must_use]
    pub fn contains(&self, key: ClientKey) -> bool {
        self.index.contains_key(&normalize(key))
    }

    /// Decides what to do with one request from `key` at `now`. Never
    /// panics; `now` going backwards is treated as no time passing for the
    /// entries that have seen a later time.
    pub fn check(&mut self, now: Instant, key: ClientKey) -> Decision {
        let key = normalize(key);
        let now = now.as_nanos();
        let slot = match self.index.get(&key) {
            Some(&slot) => {
                if let Some(entry) = self.slots.get_mut(slot) {
                    entry.referenced = true;
                }
                slot
            }
            None => self.insert(now, key),
        };
        match self.slots.get_mut(slot) {
            Some(entry) => decide(entry, now, self.interval_ns, self.tolerance_ns),
            // Unreachable: `insert` and `index` only hold valid slots.
            None => Decision::Allow,
        }
    }

    /// Makes room for `key` and returns its slot.
    fn insert(&mut self, now: u64, key: ClientKey) -> usize {
        if self.slots.len() < self.capacity {
            self.slots.push(Entry::new(key));
            if self.slots.len() == self.capacity {
                // From now on the map holds at most `capacity` keys in room
                // for twice as many, so removing tombstones never grows it.
                self.index.reserve(self.capacity);
            }
            let slot = self.slots.len() - 1;
            self.index.insert(key, slot);
            return slot;
        }
        let slot = self.victim(now);
        if let Some(entry) = self.slots.get_mut(slot) {
            self.index.remove(&entry.key);
            *entry = Entry::new(key);
        }
        self.index.insert(key, slot);
        slot
    }

    /// The clock hand's next victim in a full table.
    fn victim(&mut self, now: u64) -> usize {
        let len = self.slots.len();
        // Two passes always suffice: the first clears every mark.
        for _ in 0..=2 * len {
            let slot = self.hand;
            self.hand = if slot + 1 >= len { 0 } else { slot + 1 };
            let Some(entry) = self.slots.get_mut(slot) else {
                continue;
            };
            if !entry.referenced || entry.at_rest(now) {
                return slot;
            }
            entry.referenced = false;
        }
        self.hand
    }
}

fn decide(entry: &mut Entry, now: u64, interval: u64, tolerance: u64) -> Decision {
    let start = entry.tat.max(now);
    if entry.tat <= now.saturating_add(tolerance) {
        entry.tat = start.saturating_add(interval);
        return Decision::Allow;
    }
    // Over the rate: the next request conforms only one interval after this
    // one (the theoretical arrival time never moves back).
    let limit = now.saturating_add(tolerance).saturating_add(interval);
    entry.tat = start.saturating_add(interval).min(limit).max(entry.tat);
    if now >= entry.kod_at {
        entry.kod_at = now.saturating_add(interval);
        Decision::KissRate
    } else {
        Decision::Drop
    }
}

/// A [`RateLimiter`] split into shards, each behind its own lock and
/// chosen by a hash of the client key, so several threads can check
/// requests at once. Same decisions per client as one [`RateLimiter`];
/// the memory cap is split evenly between shards.
#[derive(Debug)]
pub struct ShardedRateLimiter {
    config: RateLimitConfig,
    shards: Box<[Mutex<RateLimiter>]>,
    hasher: RandomState,
}

impl ShardedRateLimiter {
    /// `shards` limiters (clamped to `1..=MAX_SHARDS`), each tracking
    /// `max_clients / shards` clients (at least 1).
    #[must_use]
    pub fn new(config: RateLimitConfig, shards: usize) -> ShardedRateLimiter {
        let n = shards.clamp(1, MAX_SHARDS);
        let per_shard = RateLimitConfig {
            max_clients: (config.max_clients.min(MAX_CLIENTS_LIMIT) / n).max(1),
            ..config
        };
        ShardedRateLimiter {
            config,
            shards: (0..n)
                .map(|_| Mutex::new(RateLimiter::new(per_shard)))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// The configuration it was built with (the whole table's, before it
    /// was split between shards).
    #[must_use]
    pub const fn config(&self) -> RateLimitConfig {
        self.config
    }

    /// The shard count for a table of `max_clients`: one shard per 1,024
    /// clients, between 1 and 64. A small table stays one shard, so its
    /// eviction behaves exactly as one [`RateLimiter`]'s; a large one is
    /// split so that threads rarely meet on a shard lock.
    #[must_use]
    pub fn shards_for(max_clients: usize) -> usize {
        (max_clients / 1024).clamp(1, 64)
    }

    /// The number of shards.
    #[must_use]
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn shard(&self, key: ClientKey) -> &Mutex<RateLimiter> {
        let len = self.shards.len();
        let hash = self.hasher.hash_one(normalize(key));
        let n = u64::try_from(len).unwrap_or(1);
        let i = usize::try_from(hash % n).unwrap_or(0);
        // `i < len` by construction; fall back to the first shard anyway.
        self.shards.get(i).unwrap_or(&self.shards[0])
    }

    /// [`RateLimiter::check`] on the key's shard. A shard whose lock was
    /// poisoned by a panicking thread is used as it is.
    pub fn check(&self, now: Instant, key: ClientKey) -> Decision {
        self.shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(now, key)
    }

    /// Whether `key` is tracked now.
    #[must_use]
    pub fn contains(&self, key: ClientKey) -> bool {
        self.shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    /// The number of clients tracked now, over all shards.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether no client is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most clients tracked, over all shards.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).capacity())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn cfg(interval_ms: u64, burst: u32, max_clients: usize) -> RateLimitConfig {
        RateLimitConfig {
            interval: Duration::from_millis(interval_ms),
            burst,
            max_clients,
        }
    }

    fn v4(n: u32) -> ClientKey {
        (InstanceId::DEFAULT, IpAddr::V4(Ipv4Addr::from(n)))
    }

    fn at_ms(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[derive(Debug, Default, PartialEq, Eq)]
    struct Tally {
        allow: u32,
        drop: u32,
        kod: u32,
    }

    impl Tally {
        fn add(&mut self, d: Decision) {
            match d {
                Decision::Allow => self.allow += 1,
                Decision::Drop => self.drop += 1,
                Decision::KissRate => self.kod += 1,
            }
        }
    }

    #[test]
    fn steady_clients_are_never_limited() {
        let mut rl = RateLimiter::new(cfg(2000, 8, 1000));
        // 20 clients polling every 2 s to 64 s, with an iburst of 4 at 2 s
        // spacing at start, for an hour.
        for c in 0..20u32 {
            let period = 2000 * u64::from(c % 6 + 1).pow(2).min(32);
            let mut t = u64::from(c) * 7;
            for i in 0..(3_600_000 / period) {
                let step = if i < 4 { 2000 } else { period };
                assert_eq!(
                    rl.check(at_ms(t), v4(c)),
                    Decision::Allow,
                    "client {c} at {t}"
                );
                t += step;
            }
        }
        // An initial burst of `burst` at once is fine too.
        for _ in 0..8 {
            assert_eq!(rl.check(at_ms(0), v4(99)), Decision::Allow);
        }
        assert_eq!(rl.check(at_ms(0), v4(99)), Decision::KissRate);
    }

    /// 10,000 requests/s for 10 s: the burst is served, then one KoD per
    /// interval and nothing else.
    fn flood(interval_ms: u64) -> Tally {
        let mut rl = RateLimiter::new(cfg(interval_ms, 8, 100));
        let mut tally = Tally::default();
        for i in 0..100_000u64 {
            tally.add(rl.check(Instant::from_nanos(i * 100_000), v4(7)));
        }
        tally
    }

    #[test]
    fn abuser_gets_one_kod_per_interval() {
        for (interval_ms, kods) in [(2000, 5), (1000, 10), (3000, 4), (16_000, 1)] {
            let t = flood(interval_ms);
            assert_eq!(
                t,
                Tally {
                    allow: 8,
                    kod: kods,
                    drop: 100_000 - 8 - kods
                },
                "interval {interval_ms} ms"
            );
        }
    }

    #[test]
    fn abuser_is_served_again_after_slowing_down() {
        let mut rl = RateLimiter::new(cfg(1000, 2, 10));
        let mut tally = Tally::default();
        for i in 0..1000 {
            tally.add(rl.check(at_ms(i), v4(1)));
        }
        assert_eq!(tally.allow, 2);
        // One request per interval conforms again after the debt is paid.
        // Less than one interval after its last request (999 ms), and
        // within an interval of its last KoD (2 ms): still over, and
        // silently dropped; a gap of one interval after that is enough.
        assert_eq!(tally.kod, 1);
        assert_eq!(rl.check(at_ms(1001), v4(1)), Decision::Drop);
        for t in [2001, 3001, 4001] {
            assert_eq!(rl.check(at_ms(t), v4(1)), Decision::Allow);
        }
    }

    #[test]
    fn keyed_by_instance_and_address_not_port() {
        let mut rl = RateLimiter::new(cfg(1000, 1, 10));
        let a = IpAddr::V4(Ipv4Addr::new(10, 200, 1, 1));
        assert_eq!(rl.check(at_ms(0), (InstanceId(1), a)), Decision::Allow);
        // Another instance, same address: its own bucket.
        assert_eq!(rl.check(at_ms(0), (InstanceId(2), a)), Decision::Allow);
        // The IPv4-mapped IPv6 form is the same client.
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 200, 1, 1).to_ipv6_mapped());
        assert_eq!(
            rl.check(at_ms(0), (InstanceId(1), mapped)),
            Decision::KissRate
        );
        assert_eq!(rl.len(), 2);
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1));
        assert_eq!(rl.check(at_ms(0), (InstanceId(1), v6)), Decision::Allow);
    }

    #[test]
    fn table_is_bounded_and_abuser_survives_a_million_sources() {
        let mut rl = RateLimiter::new(cfg(2000, 4, 1000));
        let abuser = v4(u32::MAX);
        let mut abuser_tally = Tally::default();
        // 1,000,000 distinct one-shot sources over 10 s, the abuser sending
        // one request in ten.
        for i in 0..1_000_000u32 {
            let now = Instant::from_nanos(u64::from(i) * 10_000);
            assert_eq!(rl.check(now, v4(i)), Decision::Allow);
            if i % 10 == 0 {
                abuser_tally.add(rl.check(now, abuser));
            }
            assert!(rl.len() <= 1000);
        }
        assert_eq!(rl.len(), 1000);
        assert_eq!(rl.capacity(), 1000);
        assert!(rl.contains(abuser));
        assert_eq!(abuser_tally.allow, 4);
        assert_eq!(abuser_tally.kod, 5);
    }

    #[test]
    fn eviction_prefers_idle_clients() {
        let mut rl = RateLimiter::new(cfg(1000, 1, 4));
        // Slot 0: a one-shot client; slots 1-3 returning clients, the
        // last two over their rate.
        assert_eq!(rl.check(at_ms(0), v4(0)), Decision::Allow);
        for c in 1..4 {
            let _ = rl.check(at_ms(0), v4(c));
            let _ = rl.check(at_ms(0), v4(c));
        }
        // A new client at 500 ms replaces the one-shot client.
        let _ = rl.check(at_ms(500), v4(10));
        assert!(!rl.contains(v4(0)));
        assert!((1..4).all(|c| rl.contains(v4(c))));
        // Clients 1 and 2 keep sending over their rate; client 3 has gone
        // quiet and its bucket has refilled (it is at rest): although it
        // was a returning client, it is the one evicted, while the hand
        // only clears the marks of 1 and 2.
        for t in [700, 900, 1500, 2000, 2400] {
            let _ = rl.check(at_ms(t), v4(1));
            let _ = rl.check(at_ms(t), v4(2));
        }
        let _ = rl.check(at_ms(2500), v4(11));
        assert!(!rl.contains(v4(3)), "the idle client goes first");
        assert!(rl.contains(v4(1)) && rl.contains(v4(2)));
    }

    #[test]
    fn returning_clients_survive_churn() {
        let mut rl = RateLimiter::new(cfg(1000, 8, 1000));
        let mut fresh = 1_000u32;
        for round in 0..50u64 {
            let now = at_ms(round * 100);
            for c in 0..100 {
                let _ = rl.check(now, v4(c));
            }
            for _ in 0..500 {
                let _ = rl.check(now, v4(fresh));
                fresh += 1;
            }
            assert!((0..100).all(|c| rl.contains(v4(c))), "round {round}");
        }
    }

    #[test]
    fn degenerate_configs() {
        // Zero interval: no limit.
        let mut rl = RateLimiter::new(cfg(0, 0, 0));
        for _ in 0..100 {
            assert_eq!(rl.check(at_ms(5), v4(1)), Decision::Allow);
        }
        assert_eq!(rl.capacity(), 1);
        // Burst 0 counts as 1; huge values saturate.
        let mut rl = RateLimiter::new(RateLimitConfig {
            interval: Duration::MAX,
            burst: 0,
            max_clients: usize::MAX,
        });
        assert_eq!(rl.capacity(), MAX_CLIENTS_LIMIT);
        assert_eq!(rl.check(Instant::ZERO, v4(1)), Decision::Allow);
        assert_eq!(rl.check(Instant::ZERO, v4(1)), Decision::KissRate);
        assert_eq!(
            rl.check(Instant::from_nanos(1 << 62), v4(1)),
            Decision::Drop
        );
    }

    #[test]
    fn sharded_matches_single() {
        let config = cfg(2000, 8, 4000);
        let sharded = ShardedRateLimiter::new(config, 4);
        assert_eq!((sharded.shard_count(), sharded.capacity()), (4, 4000));
        assert_eq!(sharded.config(), config);
        assert_eq!(ShardedRateLimiter::shards_for(100), 1);
        assert_eq!(ShardedRateLimiter::shards_for(100_000), 64);
        assert_eq!(ShardedRateLimiter::shards_for(8192), 8);
        let mut tally = Tally::default();
        for i in 0..100_000u64 {
            tally.add(sharded.check(Instant::from_nanos(i * 100_000), v4(7)));
        }
        assert_eq!(tally, flood(2000));
        assert!(sharded.contains(v4(7)));
        assert_eq!(ShardedRateLimiter::new(config, 0).shard_count(), 1);
        assert_eq!(
            ShardedRateLimiter::new(config, 1 << 20).shard_count(),
            MAX_SHARDS
        );
    }

    #[test]
    fn sharded_from_threads() {
        let sharded = ShardedRateLimiter::new(cfg(1000, 4, 1000), 8);
        let tallies: Vec<Tally> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u32)
                .map(|t| {
                    let sharded = &sharded;
                    s.spawn(move || {
                        let mut tally = Tally::default();
                        // Each thread: 10 legit clients of its own, one
                        // request per 2 s, and a shared abuser.
                        for i in 0..2000u64 {
                            let now = at_ms(i);
                            if i % 2000 == 0 {
                                for c in 0..10 {
                                    assert_eq!(
                                        sharded.check(now, v4(t * 100 + c)),
                                        Decision::Allow
                                    );
                                }
                            }
                            tally.add(sharded.check(now, v4(u32::MAX)));
                        }
                        tally
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total = tallies.iter().fold(Tally::default(), |mut acc, t| {
            acc.allow += t.allow;
            acc.drop += t.drop;
            acc.kod += t.kod;
            acc
        });
        // The shared abuser: its burst, then one KoD per interval of the
        // 2 s the threads span. (Times interleave across threads, but the
        // first denial comes within the first few milliseconds, and some
        // thread always reaches the next interval.)
        assert_eq!(total.allow, 4);
        assert_eq!(total.kod, 2, "{total:?}");
        assert_eq!(total.allow + total.drop + total.kod, 8000);
        assert_eq!(sharded.len(), 41);
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(
            interval_ns in any::<u64>(),
            burst in any::<u32>(),
            max_clients in 0usize..64,
            reqs in proptest::collection::vec((any::<u64>(), any::<u16>(), any::<u8>(), any::<bool>()), 0..300),
        ) {
            let config = RateLimitConfig {
                interval: Duration::from_nanos(interval_ns),
                burst,
                max_clients,
            };
            let mut rl = RateLimiter::new(config);
            let sharded = ShardedRateLimiter::new(config, 3);
            for (t, inst, host, six) in reqs {
                let ip = if six {
                    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, u16::from(host)))
                } else {
                    IpAddr::V4(Ipv4Addr::new(10, 200, 0, host))
                };
                let _ = rl.check(Instant::from_nanos(t), (InstanceId(inst % 4), ip));
                let _ = sharded.check(Instant::from_nanos(t), (InstanceId(inst % 4), ip));
                prop_assert!(rl.len() <= rl.capacity());
                prop_assert!(sharded.len() <= sharded.capacity().max(3));
            }
        }
    }
}
