//! Status output: the system's synchronisation and every association,
//! as snapshots for the control socket and logs.

use core::net::SocketAddr;

use strata_clock::filter::Sample;
use strata_clock::MAXDISP;
use strata_wire::{Leap, ReferenceId};

use crate::assoc::{AssociationId, AssociationMode, AssociationState};
use crate::counters::DropReason;
use crate::node::{InstanceId, Node};
use crate::server::{ServerState, MAX_STRATUM};
use crate::time::Instant;

/// The system's view of its synchronisation, for status output.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemStatus {
    /// Whether the node serves synchronised time.
    pub synchronized: bool,
    /// What the node tells its clients.
    pub server: ServerState,
    /// The selected source, if any.
    pub system_peer: Option<(AssociationId, InstanceId, SocketAddr)>,
    /// Last combined offset, seconds (RFC 5905 sign: positive = local
    /// clock behind).
    pub offset: f64,
    /// System jitter, seconds.
    pub jitter: f64,
    /// Current frequency correction, ppm.
    pub frequency_ppm: f64,
    /// System poll exponent.
    pub poll: i8,
    /// When the clock was last updated (monotonic).
    pub last_update: Option<Instant>,
    /// How many times the clock was stepped.
    pub clock_steps: u64,
    /// The discipline's smoothed offset and its uncertainty.
    pub estimate: strata_clock::discipline::Estimate,
}

/// One association, for status output.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionStatus {
    /// Its id.
    pub id: AssociationId,
    /// Its instance.
    pub instance: InstanceId,
    /// The remote address.
    pub address: SocketAddr,
    /// The association mode.
    pub mode: AssociationMode,
    /// Its state.
    pub state: AssociationState,
    /// Whether it is the system peer.
    pub selected: bool,
    /// The server's stratum (16 when unknown).
    pub stratum: u8,
    /// The server's reference id.
    pub reference_id: ReferenceId,
    /// Reach register.
    pub reach: u8,
    /// Poll exponent.
    pub poll: i8,
    /// Filtered offset, seconds.
    pub offset: f64,
    /// Filtered delay, seconds.
    pub delay: f64,
    /// Peer dispersion, seconds.
    pub dispersion: f64,
    /// Peer jitter, seconds.
    pub jitter: f64,
    /// When the last valid reply arrived.
    pub last_rx: Option<Instant>,
    /// Broadcast/multicast clients: the calibrated delay (s) and when it
    /// was measured.
    pub calibrated: Option<(f64, Instant)>,
    /// Completed calibration volleys.
    pub calibrations: u32,
    /// The clock filter register, newest first (at most 8 samples), each
    /// with its dispersion aged to the time asked; sample times are on the
    /// caller's monotonic timebase, in seconds.
    pub filter: Vec<Sample>,
    /// The key its packets are signed with and must be authenticated
    /// with; `None` when it does not use authentication.
    pub key_id: Option<u32>,
    /// The remote's leap indicator, once heard.
    pub remote_leap: Option<Leap>,
    /// The remote's root delay, seconds (0 until heard).
    pub root_delay: f64,
    /// The remote's root dispersion, seconds (0 until heard).
    pub root_dispersion: f64,
    /// The remote's advertised poll exponent, once heard.
    pub remote_poll: Option<i8>,
    /// When it sends next; `None` when it sends nothing of its own
    /// (denied, or a broadcast client listening).
    pub next_poll: Option<Instant>,
    /// The poll floor a kiss-o'-death RATE imposed, if one did.
    pub kod_poll_floor: Option<i8>,
    /// During a calibration volley: requests sent and good replies so far.
    pub calibration_progress: Option<(u8, u8)>,
    /// Its part in the last source selection; `None` when it was not a
    /// candidate (not reachable, unsynchronised, a loop, no sample yet).
    pub selection: Option<SelectionRole>,
}

/// What the last source selection made of a candidate (ntpq's tally codes:
/// `*`, `+`, `-`, `x` and a blank for a rejected candidate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelectionRole {
    /// Not eligible: its root distance exceeds the limit.
    Rejected,
    /// Outside the majority intersection (or no majority was found).
    Falseticker,
    /// A truechimer dropped by clustering.
    Outlier,
    /// A survivor, combined into the system offset.
    Candidate,
    /// The system peer.
    SystemPeer,
}

impl SelectionRole {
    /// A stable name for status output.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            SelectionRole::Rejected => "rejected",
            SelectionRole::Falseticker => "falseticker",
            SelectionRole::Outlier => "outlier",
            SelectionRole::Candidate => "candidate",
            SelectionRole::SystemPeer => "system-peer",
        }
    }
}

/// A mode-5 server that an instance's broadcast/multicast client refuses
/// (see [`crate::Event::Refused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedServer {
    /// The instance.
    pub instance: InstanceId,
    /// The server.
    pub address: SocketAddr,
    /// Whether it sends to a multicast group (else to a broadcast address).
    pub multicast: bool,
    /// Why its packets are refused.
    pub reason: DropReason,
    /// Its packets refused so far.
    pub packets: u64,
    /// When the last one arrived.
    pub last: Instant,
}

/// Refused mode-5 servers remembered per instance; more are still dropped
/// and counted, only not listed.
pub const MAX_REFUSED_SERVERS: usize = 32;

impl Node {
    /// The mode-5 servers that broadcast/multicast clients refuse, with
    /// why and how often; a server is listed until it is accepted or its
    /// instance's client settings change.
    pub fn refused_servers(&self) -> impl Iterator<Item = &RefusedServer> {
        self.instances.iter().flat_map(|i| i.refused.values())
    }
    /// The system status.
    #[must_use]
    pub fn status(&self) -> SystemStatus {
        let server = self.server_state(self.last_clock);
        let system_peer = self.sys.peer.and_then(|id| {
            self.assocs
                .iter()
                .find(|a| a.id == id)
                .map(|a| (id, a.config.instance, a.config.address))
        });
        SystemStatus {
            synchronized: server.is_synchronized(),
            server,
            system_peer,
            offset: self.sys.offset,
            jitter: self.sys.jitter,
            frequency_ppm: self.discipline.frequency_ppm(),
            poll: self.discipline.poll_exponent(),
            last_update: self.sys.last_update,
            clock_steps: self.sys.clock_steps,
            estimate: self.discipline.estimate(),
        }
    }

    /// Every association's status.
    pub fn sessions(&self, now: Instant) -> impl Iterator<Item = SessionStatus> + '_ {
        let now_s = now.as_secs_f64();
        self.assocs.iter().map(move |a| {
            let out = a.output();
            SessionStatus {
                id: a.id,
                instance: a.config.instance,
                address: a.config.address,
                mode: a.mode(),
                state: a.state,
                selected: self.sys.peer == Some(a.id),
                stratum: a.peer.map_or(MAX_STRATUM, |p| p.stratum),
                reference_id: a.peer.map_or(ReferenceId::new([0; 4]), |p| p.reference_id),
                reach: a.reach,
                poll: a.poll,
                offset: out.map_or(0.0, |o| o.offset),
                delay: out.map_or(0.0, |o| o.delay),
                dispersion: if out.is_some() {
                    a.dispersion_at(now_s)
                } else {
                    MAXDISP
                },
                jitter: out.map_or(0.0, |o| o.jitter),
                last_rx: a.last_rx,
                calibrated: a.calibrated(),
                calibrations: a.calibrations,
                filter: a.filter.register(now_s).collect(),
                key_id: a.key,
                remote_leap: a.peer.map(|p| p.leap),
                root_delay: a.peer.map_or(0.0, |p| p.root_delay),
                root_dispersion: a.peer.map_or(0.0, |p| p.root_dispersion),
                remote_poll: a.remote_poll(),
                next_poll: a.next_send(),
                kod_poll_floor: a.kod_poll_floor(),
                calibration_progress: a.calibration_progress(),
                selection: a.selection,
            }
        })
    }
}
