//! The system process (RFC 5905): select, cluster and combine the
//! sources, pass the result to the clock discipline, and say what the node
//! tells its clients ([`ServerState`]).

use core::net::IpAddr;

use strata_clock::discipline::Outcome;
use strata_clock::select::{is_eligible, select, Candidate, Selection};
use strata_clock::{MAXDISP, PHI};
use strata_wire::{Leap, NtpShort, NtpTimestamp, ReferenceId};

use crate::node::{Event, InstanceId, Node};
use crate::server::{ServerState, MAX_STRATUM};
use crate::status::SelectionRole;
use crate::time::Instant;
use crate::AssociationId;

/// Samples each source needs before the first clock update (within the
/// startup hold).
const STARTUP_SAMPLES: usize = 3;

/// The system variables (RFC 5905 section 11).
pub(crate) struct System {
    pub(crate) peer: Option<AssociationId>,
    stratum: u8,
    leap: Leap,
    reference_id: ReferenceId,
    reference_time: NtpTimestamp,
    root_delay: f64,
    root_dispersion: f64,
    pub(crate) offset: f64,
    pub(crate) jitter: f64,
    pub(crate) last_update: Option<Instant>,
    /// Sample time of the last update passed to the discipline (`None`:
    /// none since start or the last step).
    last_sample_time: Option<f64>,
    pub(crate) clock_steps: u64,
}

impl System {
    /// Unsynchronised, never updated.
    pub(crate) fn new() -> Self {
        System {
            peer: None,
            stratum: MAX_STRATUM,
            leap: Leap::Unsynchronized,
            reference_id: ReferenceId::new([0; 4]),
            reference_time: NtpTimestamp::ZERO,
            root_delay: 0.0,
            root_dispersion: 0.0,
            offset: 0.0,
            jitter: 0.0,
            last_update: None,
            last_sample_time: None,
            clock_steps: 0,
        }
    }
}

impl Node {
    /// The RFC 5905 system process: select, cluster and combine the
    /// sources, then pass a new offset to the discipline.
    pub(crate) fn clock_select(&mut self, now: Instant) {
        let now_s = now.as_secs_f64();
        let candidates: Vec<Candidate> = self
            .assocs
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let out = a.output()?;
                let peer = a.peer?;
                if a.reach == 0
                    || peer.stratum >= MAX_STRATUM
                    || peer.leap == Leap::Unsynchronized
                    || self.is_loop(a.config.instance, peer.reference_id)
                {
                    return None;
                }
                Some(Candidate {
                    id: i,
                    offset: out.offset,
                    delay: peer.root_delay + out.delay,
                    dispersion: peer.root_dispersion + a.dispersion_at(now_s),
                    jitter: out.jitter,
                    stratum: peer.stratum,
                })
            })
            .collect();
        // Eligible sources with a few samples in their filter: before that
        // their intervals are too wide for selection to tell a falseticker.
        let ready = candidates
            .iter()
            .filter(|c| {
                is_eligible(c, &self.config.select)
                    && self.assocs[c.id].samples(now_s) >= STARTUP_SAMPLES
            })
            .count();
        if self.sys.last_update.is_none() && !self.startup_quorum(now, ready) {
            return; // the first clock update waits for enough sources
        }
        let sel = select(&candidates, &self.config.select);
        self.note_selection(&candidates, sel.as_ref());
        let Some(sel) = sel else {
            if self.sys.peer.take().is_some() {
                self.events.push_back(Event::SystemPeer(None));
            }
            return;
        };
        let a = &self.assocs[sel.system_peer];
        let (Some(out), Some(peer)) = (a.output(), a.peer) else {
            return;
        };
        let new_peer = Some(a.id);
        if self.sys.peer != new_peer {
            self.sys.peer = new_peer;
            self.events.push_back(Event::SystemPeer(new_peer));
        }
        if self.sys.last_sample_time.is_some_and(|t| out.time <= t) {
            return; // nothing new from the system peer
        }
        self.sys.last_sample_time = Some(out.time);
        let reference_id = match a.config.address.ip() {
            IpAddr::V4(v4) => ReferenceId::from_ipv4(v4),
            IpAddr::V6(v6) => ReferenceId::from_ipv6(&v6),
        };
        let (root_delay, root_disp) = (
            peer.root_delay + out.delay,
            peer.root_dispersion
                + a.dispersion_at(now_s)
                + sel.jitter
                + PHI * (now_s - out.time).max(0.0)
                + sel.offset.abs(),
        );
        match self.discipline.update_weighted(
            now_s,
            out.time,
            sel.offset,
            sel.jitter,
            out.extra_noise,
        ) {
            Outcome::Ignored => {}
            Outcome::Panic { offset } => self.events.push_back(Event::Panic { offset }),
            Outcome::Stepped { .. } => {
                self.sys.clock_steps += 1;
                for a in &mut self.assocs {
                    a.clear_after_step();
                }
                self.sys.leap = Leap::Unsynchronized;
                self.sys.stratum = MAX_STRATUM;
                self.sys.last_sample_time = None;
                self.sys.last_update = Some(now);
            }
            Outcome::Slewed => {
                self.sys.leap = if peer.leap == Leap::Unsynchronized {
                    Leap::NoWarning
                } else {
                    peer.leap
                };
                self.sys.stratum = peer.stratum.saturating_add(1).min(MAX_STRATUM);
                self.sys.reference_id = reference_id;
                self.sys.reference_time = self.last_clock;
                self.sys.root_delay = root_delay;
                self.sys.root_dispersion = root_disp.min(MAXDISP);
                self.sys.offset = sel.offset;
                self.sys.jitter = sel.jitter;
                self.sys.last_update = Some(now);
            }
        }
        self.drain_discipline();
    }

    /// Records what a selection made of each candidate, for status output.
    fn note_selection(&mut self, candidates: &[Candidate], sel: Option<&Selection>) {
        for a in &mut self.assocs {
            a.selection = None;
        }
        for c in candidates {
            let role = if !is_eligible(c, &self.config.select) {
                SelectionRole::Rejected
            } else if let Some(sel) = sel {
                if sel.system_peer == c.id {
                    SelectionRole::SystemPeer
                } else if sel.survivors.contains(&c.id) {
                    SelectionRole::Candidate
                } else if sel.truechimers.contains(&c.id) {
                    SelectionRole::Outlier
                } else {
                    SelectionRole::Falseticker
                }
            } else {
                // Eligible, yet no majority agrees with it.
                SelectionRole::Falseticker
            };
            self.assocs[c.id].selection = Some(role);
        }
    }

    /// Before the first clock update (which may step the clock), wait
    /// until as many sources as selection wants (at most the synchronised
    /// ones heard from) are eligible with [`STARTUP_SAMPLES`] samples each, or until the startup
    /// hold has passed: stepping to the first source heard could step to a
    /// falseticker.
    fn startup_quorum(&mut self, now: Instant, ready: usize) -> bool {
        let started = *self.started.get_or_insert(now);
        // Sources heard from that say they are synchronised: the ones that
        // can become candidates (an unsynchronised peer cannot).
        let usable = self
            .assocs
            .iter()
            .filter(|a| {
                a.reach != 0
                    && a.peer
                        .is_some_and(|p| p.stratum < MAX_STRATUM && p.leap != Leap::Unsynchronized)
            })
            .count();
        let needed = usable.min(self.config.select.min_survivors).max(1);
        ready >= needed || now.saturating_duration_since(started) >= self.config.startup_hold
    }

    /// Whether a source with this reference id is synchronised to us.
    fn is_loop(&self, instance: InstanceId, refid: ReferenceId) -> bool {
        self.instances
            .get(usize::from(instance.0))
            .is_some_and(|i| i.local_refids.contains(&refid))
    }

    pub(crate) fn drain_discipline(&mut self) {
        while let Some(c) = self.discipline.poll_command() {
            self.events.push_back(Event::Clock(c));
        }
        let sys_poll = self.discipline.poll_exponent();
        for a in &mut self.assocs {
            a.set_system_poll(sys_poll);
        }
    }

    /// What the node tells clients now; `clock_now` supplies the reference
    /// time of a local reference.
    #[must_use]
    pub fn server_state(&self, clock_now: NtpTimestamp) -> ServerState {
        let precision = self.config.precision;
        if self.sys.peer.is_some() && self.sys.stratum < MAX_STRATUM {
            return ServerState {
                leap: self.sys.leap,
                stratum: self.sys.stratum,
                precision,
                root_delay: NtpShort::from_seconds(self.sys.root_delay),
                root_dispersion: NtpShort::from_seconds(self.sys.root_dispersion),
                reference_id: self.sys.reference_id,
                reference_time: self.sys.reference_time,
            };
        }
        match self.config.local_stratum {
            Some(stratum) => ServerState {
                leap: Leap::NoWarning,
                stratum,
                precision,
                root_delay: NtpShort::ZERO,
                root_dispersion: NtpShort::ZERO,
                reference_id: ReferenceId::new(*b"LOCL"),
                reference_time: clock_now,
            },
            None => ServerState::unsynchronized(precision),
        }
    }

    /// Whether [`Node::server_state`] serves the local reference, whose
    /// reference time is the clock reading of the answer itself (a driver
    /// holding a snapshot of the state sets it to each transmit time).
    #[must_use]
    pub fn reference_follows_clock(&self) -> bool {
        let synced_to_peer = self.sys.peer.is_some() && self.sys.stratum < MAX_STRATUM;
        !synced_to_peer && self.config.local_stratum.is_some()
    }
}
