//! Per-instance packet counters and the reasons a packet is dropped.

/// Why an incoming packet was dropped. Every drop is counted under one of
/// these, per instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// Shorter than an NTP header, or the trailer is neither extension
    /// fields nor a MAC.
    Malformed,
    /// Version 0 or above 4.
    BadVersion,
    /// A mode this node does not serve (reserved, control, private, or an
    /// unsolicited reply).
    UnexpectedMode,
    /// A reply from an address with no association (or a mode that does
    /// not match it).
    NoAssociation,
    /// The same transmit timestamp as the last accepted packet.
    Duplicate,
    /// The origin timestamp does not match our last request.
    Bogus,
    /// A kiss-o'-death whose origin timestamp does not match our last
    /// request (a spoofed KoD).
    SpoofedKod,
    /// A kiss code this node does not act on.
    UnknownKod,
    /// Zero receive or transmit timestamp.
    ZeroTimestamp,
    /// The sender is not synchronised (leap 3 or stratum 16 or more).
    Unsynchronized,
    /// Header values out of range: root distance of 16 s or more, or a
    /// reference time after the transmit time.
    BadHeader,
    /// The reply queue was full.
    Overload,
    /// The source's access level does not allow what the packet asks for.
    AccessDenied,
    /// Mobilising another dynamic association would exceed the instance's
    /// `max-dynamic-sessions`.
    SessionLimit,
    /// A broadcast/multicast packet whose transmit timestamp is not after
    /// the last accepted one from that server.
    Replay,
    /// A sample held back as a spike (broadcast/multicast listening).
    Spike,
    /// Broadcast/multicast packets are refused without authentication
    /// unless `allow-unauthenticated` is set.
    Unauthenticated,
    /// The client is over its rate limit and was already sent a KoD RATE
    /// in this interval.
    RateLimited,
    /// An NTP private (mode 7, ntpdc) packet: never answered. (Mode 6 is
    /// answered, and its drops are counted under the other reasons.)
    ControlMode,
    /// A MAC that does not authenticate (unknown or untrusted key, bad
    /// digest, another key than the one required), or a crypto-NAK where
    /// none is expected.
    BadMac,
    /// A crypto-NAK answering our last request: the server could not
    /// authenticate it (it does not have our key, or has another secret
    /// under its id).
    CryptoNak,
}

impl DropReason {
    /// Every reason, in a stable order.
    pub const ALL: [DropReason; 21] = [
        DropReason::Malformed,
        DropReason::BadVersion,
        DropReason::UnexpectedMode,
        DropReason::NoAssociation,
        DropReason::Duplicate,
        DropReason::Bogus,
        DropReason::SpoofedKod,
        DropReason::UnknownKod,
        DropReason::ZeroTimestamp,
        DropReason::Unsynchronized,
        DropReason::BadHeader,
        DropReason::Overload,
        DropReason::AccessDenied,
        DropReason::SessionLimit,
        DropReason::Replay,
        DropReason::Spike,
        DropReason::Unauthenticated,
        DropReason::RateLimited,
        DropReason::ControlMode,
        DropReason::BadMac,
        DropReason::CryptoNak,
    ];

    /// A stable, kebab-case name for status output.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadVersion => "bad-version",
            DropReason::UnexpectedMode => "unexpected-mode",
            DropReason::NoAssociation => "no-association",
            DropReason::Duplicate => "duplicate",
            DropReason::Bogus => "bogus-origin",
            DropReason::SpoofedKod => "spoofed-kod",
            DropReason::UnknownKod => "unknown-kod",
            DropReason::ZeroTimestamp => "zero-timestamp",
            DropReason::Unsynchronized => "unsynchronized",
            DropReason::BadHeader => "bad-header",
            DropReason::Overload => "overload",
            DropReason::AccessDenied => "access-denied",
            DropReason::SessionLimit => "session-limit",
            DropReason::Replay => "replay",
            DropReason::Spike => "spike",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::RateLimited => "rate-limited",
            DropReason::ControlMode => "control-mode",
            DropReason::BadMac => "bad-mac",
            DropReason::CryptoNak => "crypto-nak",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Packet counters of one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams handed to the engine.
    pub received: u64,
    /// Datagrams the engine asked to send.
    pub sent: u64,
    /// Kiss-o'-death packets sent.
    pub kod_sent: u64,
    dropped: [u64; DropReason::ALL.len()],
}

impl Counters {
    /// Counts one drop.
    pub fn drop_packet(&mut self, reason: DropReason) {
        self.dropped[reason.index()] += 1;
    }

    /// Drops counted for `reason`.
    #[must_use]
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// All drops, by reason, skipping reasons with no drop.
    pub fn dropped_by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.dropped[r.index()]))
            .filter(|(_, n)| *n > 0)
    }

    /// Total drops.
    #[must_use]
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_matches_all() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut c = Counters::default();
        c.drop_packet(DropReason::Bogus);
        c.drop_packet(DropReason::Bogus);
        c.drop_packet(DropReason::Malformed);
        assert_eq!(c.dropped(DropReason::Bogus), 2);
        assert_eq!(c.dropped_total(), 3);
        let v: Vec<_> = c.dropped_by_reason().collect();
        assert_eq!(v, vec![(DropReason::Malformed, 1), (DropReason::Bogus, 2)]);
    }
}
