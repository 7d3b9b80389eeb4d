//! Dispatch and mobilisation: every received datagram goes to the
//! responder (a request), to the association of its sender (a reply, a
//! symmetric or broadcast packet), or mobilises one (a peer's mode 1, a
//! broadcast server's mode 5), with the MAC checks each needs.
//!
//! Associations are found by `(instance, remote address)`: at most one per
//! remote, whatever its mode; the packet's mode then says what it is.

use strata_wire::{KissCode, Leap, Mode, NtpRepr, NtpTimestamp, HEADER_LEN};

use crate::access::AccessLevel;
use crate::assoc::{Arrival, Association, AssociationMode, ClientConfig, Received, Via};
use crate::auth::{self, Verdict};
use crate::counters::DropReason;
use crate::node::{Event, InstanceId, Node, RecvMeta, Transmit, DEFAULT_MAX_DYNAMIC};
use crate::server::{kiss_of_death, respond, wire_drop_reason, Admission, MAX_STRATUM};
use crate::time::{poll_interval, Instant};

/// A request waiting for its answer in [`Node::poll_transmit`].
pub(crate) struct PendingReply {
    meta: RecvMeta,
    header: [u8; HEADER_LEN],
    /// Answer with this kiss-o'-death instead of the time.
    kod: Option<KissCode>,
    /// How to authenticate the answer.
    mac: ReplyMac,
}

/// The MAC appended to an answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReplyMac {
    None,
    /// Sign with this key (the request's).
    Key(u32),
    /// A crypto-NAK: the request's MAC did not authenticate.
    CryptoNak,
}

impl Node {
    /// Whether an instance may mobilise one more dynamic association:
    /// below its own limit and below the limit of all instances together.
    pub(crate) fn dynamic_room(&self, instance: InstanceId) -> bool {
        let max = self
            .instances
            .get(usize::from(instance.0))
            .map_or(DEFAULT_MAX_DYNAMIC, |i| i.max_dynamic);
        let total = self.assocs.iter().filter(|a| a.mode().is_dynamic()).count();
        self.dynamic_count(instance) < max && total < self.max_dynamic_total
    }

    /// Handles one received datagram. Never panics on any input; every
    /// datagram that is not used is counted under a [`DropReason`].
    pub fn handle_datagram(&mut self, now: Instant, meta: &RecvMeta, data: &[u8]) {
        self.started.get_or_insert(now);
        self.counters(meta.instance).received += 1;
        self.last_clock = meta.rx_time;
        if let (Some(ip), Some(inst)) = (meta.dst_ip, self.instance_mut(meta.instance)) {
            inst.learn_local(ip);
        }
        if let Err(reason) = self.dispatch(now, meta, data) {
            self.counters(meta.instance).drop_packet(reason);
        }
    }

    fn dispatch(&mut self, now: Instant, meta: &RecvMeta, data: &[u8]) -> Result<(), DropReason> {
        match data.first().map(|b| Mode::from(*b)) {
            Some(Mode::Control) => return self.handle_control(now, meta, data),
            // Mode 7 (ntpdc's private protocol) stays unanswered.
            Some(Mode::Private) => return Err(DropReason::ControlMode),
            _ => {}
        }
        let (pkt, _layout) = strata_wire::parse_datagram(data).map_err(wire_drop_reason)?;
        let existing = self.by_addr.get(&(meta.instance, meta.src)).copied();
        if pkt.mode != Mode::Client {
            let verdict = auth::verify(&self.keys, data);
            if let Some(idx) = existing {
                self.check_mac(idx, pkt.mode, verdict)?;
            }
            if existing.is_none() {
                return match pkt.mode {
                    Mode::SymmetricActive => self.mobilize_passive(now, meta, &pkt, data, verdict),
                    Mode::Broadcast => self.mobilize_broadcast(now, meta, &pkt, verdict),
                    Mode::Server | Mode::SymmetricPassive => Err(DropReason::NoAssociation),
                    _ => Err(DropReason::UnexpectedMode),
                };
            }
        }
        match pkt.mode {
            Mode::Client => {
                if !meta.listener {
                    return Err(DropReason::UnexpectedMode);
                }
                self.queue_reply(now, meta, data, true)
            }
            Mode::Server => {
                let idx = existing.ok_or(DropReason::NoAssociation)?;
                self.receive(now, idx, meta, &pkt)
            }
            Mode::SymmetricActive | Mode::SymmetricPassive => match existing {
                Some(idx)
                    if matches!(
                        self.assocs[idx].mode(),
                        AssociationMode::SymmetricActive | AssociationMode::SymmetricPassive
                    ) =>
                {
                    self.receive(now, idx, meta, &pkt)
                }
                Some(_) => Err(DropReason::UnexpectedMode),
                None => Err(DropReason::NoAssociation),
            },
            Mode::Broadcast => match existing {
                Some(idx) if self.assocs[idx].mode().is_dynamic() => {
                    self.receive(now, idx, meta, &pkt)
                }
                Some(_) => Err(DropReason::UnexpectedMode),
                None => Err(DropReason::NoAssociation),
            },
            _ => Err(DropReason::UnexpectedMode),
        }
    }

    /// Queues the answer to a request: the time, a KoD RATE (over the
    /// rate limit), a KoD DENY (refused by the access rules with the `kod`
    /// deny policy; `client` requests only) or nothing.
    fn queue_reply(
        &mut self,
        now: Instant,
        meta: &RecvMeta,
        data: &[u8],
        client: bool,
    ) -> Result<(), DropReason> {
        // Unsigned requests to a listener that requires a key are dropped
        // before they cost a rate-limiter token.
        let mac = self.request_mac(meta, auth::verify(&self.keys, data))?;
        let admission = self.policy.admit(now, meta.instance, meta.src.ip(), client);
        let kod = match admission {
            Admission::Drop(reason) => return Err(reason),
            Admission::Answer => None,
            Admission::KissRate => Some(KissCode::Rate),
            Admission::KissDeny => Some(KissCode::Deny),
        };
        if self.replies.len() >= self.config.max_pending_replies {
            return Err(DropReason::Overload);
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(data.get(..HEADER_LEN).ok_or(DropReason::Malformed)?);
        self.replies.push_back(PendingReply {
            meta: *meta,
            header,
            kod,
            mac,
        });
        if mac == ReplyMac::CryptoNak {
            // Answered with a crypto-NAK, but not served.
            Err(DropReason::BadMac)
        } else if admission == Admission::KissDeny {
            // Refused all the same: counted, and answered with a KoD DENY.
            Err(DropReason::AccessDenied)
        } else {
            Ok(())
        }
    }

    /// Whether a packet for association `idx` carries the MAC it needs.
    /// A crypto-NAK (mode 4 or 2) goes on to the association, which counts
    /// it only when it answers our last packet.
    fn check_mac(&self, idx: usize, mode: Mode, verdict: Verdict) -> Result<(), DropReason> {
        let Some(key) = self.assocs[idx].key else {
            return Ok(());
        };
        match verdict {
            Verdict::Ok { key_id } if key_id == key => Ok(()),
            Verdict::CryptoNak if matches!(mode, Mode::Server | Mode::SymmetricPassive) => Ok(()),
            Verdict::None => Err(DropReason::Unauthenticated),
            _ => Err(DropReason::BadMac),
        }
    }

    /// The MAC a request arriving on a listener must carry: `Err` when the
    /// listener requires a key and the request is unsigned; otherwise how
    /// to authenticate the answer.
    fn request_mac(&self, meta: &RecvMeta, verdict: Verdict) -> Result<ReplyMac, DropReason> {
        let required = self.policy.listener_key(meta.socket);
        match (verdict, required) {
            (Verdict::None, Some(_)) => Err(DropReason::Unauthenticated),
            (Verdict::None, None) => Ok(ReplyMac::None),
            // A client never sends a crypto-NAK.
            (Verdict::CryptoNak, _) => Err(DropReason::BadMac),
            (Verdict::Ok { key_id }, Some(k)) if key_id != k => Ok(ReplyMac::CryptoNak),
            (Verdict::Ok { key_id }, _) => Ok(ReplyMac::Key(key_id)),
            (Verdict::Bad(_), _) => Ok(ReplyMac::CryptoNak),
        }
    }

    /// A mode-1 packet from an unknown address: a passive association when
    /// the source may peer (or authenticates with a trusted key), a
    /// stateless mode-2 answer when it may only get time, nothing
    /// otherwise.
    fn mobilize_passive(
        &mut self,
        now: Instant,
        meta: &RecvMeta,
        pkt: &NtpRepr,
        data: &[u8],
        verdict: Verdict,
    ) -> Result<(), DropReason> {
        let level = self.policy.level(meta.instance, meta.src.ip());
        if meta.listener {
            if let Some(required) = self.policy.listener_key(meta.socket) {
                match verdict {
                    Verdict::Ok { key_id } if key_id == required => {}
                    Verdict::None => return Err(DropReason::Unauthenticated),
                    _ => return Err(DropReason::BadMac),
                }
            }
        }
        let key = match verdict {
            Verdict::Ok { key_id } => Some(key_id),
            _ => None,
        };
        if level != Some(AccessLevel::Peer) && key.is_none() {
            return if meta.listener {
                self.queue_reply(now, meta, data, false)
            } else {
                Err(DropReason::AccessDenied)
            };
        }
        if !self.dynamic_room(meta.instance) {
            return Err(DropReason::SessionLimit);
        }
        let id = self.next_association_id();
        let poll = pkt.poll.clamp(-4, 17);
        let config = ClientConfig {
            instance: meta.instance,
            address: meta.src,
            minpoll: poll.min(6),
            maxpoll: poll.max(10),
            iburst: false,
        };
        let mut a = Association::new(id, config, AssociationMode::SymmetricPassive, now);
        a.key = key;
        // Answer at once, then poll on our own timer.
        a.pending_send = true;
        a.next_poll = now + poll_interval(poll);
        self.insert(a);
        self.events.push_back(Event::Mobilized {
            id,
            mode: AssociationMode::SymmetricPassive,
        });
        let idx = self.assocs.len() - 1;
        self.receive(now, idx, meta, pkt)
    }

    /// A mode-5 packet from an unknown server.
    fn mobilize_broadcast(
        &mut self,
        now: Instant,
        meta: &RecvMeta,
        pkt: &NtpRepr,
        verdict: Verdict,
    ) -> Result<(), DropReason> {
        let Some(inst) = self.instances.get(usize::from(meta.instance.0)) else {
            return Err(DropReason::UnexpectedMode);
        };
        let Some(settings) = inst.broadcast_client.clone() else {
            return Err(DropReason::UnexpectedMode);
        };
        let key = match verdict {
            Verdict::Ok { key_id } if settings.key.is_none_or(|k| k == key_id) => Some(key_id),
            Verdict::None => None,
            // Unknown, untrusted or another key, a failed digest, a crypto-NAK.
            _ => {
                self.note_refused(now, meta, DropReason::BadMac);
                return Err(DropReason::BadMac);
            }
        };
        if !settings.allow_unauthenticated && key.is_none() {
            self.note_refused(now, meta, DropReason::Unauthenticated);
            return Err(DropReason::Unauthenticated);
        }
        if pkt.leap == Leap::Unsynchronized || pkt.stratum == 0 || pkt.stratum >= MAX_STRATUM {
            return Err(DropReason::Unsynchronized);
        }
        if self
            .policy
            .level(meta.instance, meta.src.ip())
            .is_none_or(|l| l < AccessLevel::Server)
        {
            return Err(DropReason::AccessDenied);
        }
        if !self.dynamic_room(meta.instance) {
            return Err(DropReason::SessionLimit);
        }
        let multicast = meta.dst_ip.is_some_and(|ip| ip.is_multicast());
        let id = self.next_association_id();
        let poll = pkt.poll.clamp(-4, 17);
        let config = ClientConfig {
            instance: meta.instance,
            address: meta.src,
            minpoll: poll,
            maxpoll: poll,
            iburst: false,
        };
        if let Some(i) = self.instance_mut(meta.instance) {
            i.refused.remove(&meta.src);
        }
        let mut a = Association::new_broadcast(id, config, multicast, settings, now);
        a.key = key;
        let mode = a.mode();
        self.insert(a);
        self.events.push_back(Event::Mobilized { id, mode });
        let idx = self.assocs.len() - 1;
        self.receive(now, idx, meta, pkt)
    }

    /// The next answer to a request, written to `buf`: the time, a
    /// kiss-o'-death or a crypto-NAK, signed as the request was.
    pub(crate) fn poll_reply(
        &mut self,
        clock_now: NtpTimestamp,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        while let Some(r) = self.replies.pop_front() {
            let state = self.server_state(clock_now);
            let result =
                match (r.kod, r.mac) {
                    (Some(code), _) => kiss_of_death(&r.header, code, self.config.precision, buf),
                    (None, ReplyMac::CryptoNak) => crypto_nak(&r.header, buf),
                    (None, mac) => respond(&r.header, r.meta.rx_time, clock_now, &state, buf)
                        .and_then(|n| match mac {
                            ReplyMac::Key(key_id) => {
                                auth::sign_in_place(&self.keys, key_id, n, buf)
                                    .ok_or(DropReason::BadMac)
                            }
                            _ => Ok(n),
                        }),
                };
            match result {
                Ok(len) => {
                    let counters = self.counters(r.meta.instance);
                    counters.sent += 1;
                    if r.kod.is_some() {
                        counters.kod_sent += 1;
                    }
                    return Some(Transmit::reply_to(&r.meta, len));
                }
                Err(reason) => self.counters(r.meta.instance).drop_packet(reason),
            }
        }
        None
    }

    fn receive(
        &mut self,
        now: Instant,
        idx: usize,
        meta: &RecvMeta,
        pkt: &NtpRepr,
    ) -> Result<(), DropReason> {
        let arrival = Arrival {
            now,
            rx_time: meta.rx_time,
            pkt,
            sys_precision: self.config.precision,
        };
        let a = &mut self.assocs[idx];
        let result = a.receive(arrival);
        let id = a.id;
        if meta.listener && matches!(pkt.mode, Mode::SymmetricActive | Mode::SymmetricPassive) {
            // Also after an unusable packet (the peer's first, unsynchronised
            // or crossing ours): our answer must reach it all the same.
            a.set_via(Via {
                socket: meta.socket,
                src_ip: meta.dst_ip,
                ifindex: meta.ifindex,
            });
        }
        let (received, changed) = result?;
        if let Some(state) = changed {
            self.events.push_back(Event::Association { id, state });
        }
        if let Received::Sample(Some(_)) = received {
            self.clock_select(now);
        }
        Ok(())
    }
}

/// Writes a crypto-NAK answer to a client request: a server header with
/// stratum 0 and the request's transmit timestamp as origin, then a 4-byte
/// MAC of key id 0 (RFC 5905).
fn crypto_nak(request: &[u8], buf: &mut [u8]) -> Result<usize, DropReason> {
    let n = kiss_of_death(request, KissCode::Cryp, 0, buf)?;
    let mac = buf.get_mut(n..n + 4).ok_or(DropReason::Malformed)?;
    mac.fill(0);
    Ok(n + 4)
}
