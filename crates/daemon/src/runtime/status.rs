//! The control socket: answering `status` and `sessions` from the node's
//! state; and the association log, one line per change.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use strata_engine::{AssociationState, InstanceId, Instant, SelectionRole, SessionStatus};
use strata_wire::Leap;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use super::instances::placement_name;
use super::{ControlRequest, Daemon, FOREIGN_INSTANCE, IGNORED_INTERFACE};
use crate::control::{
    self, Estimate, FilterSample, InstanceCounters, Reply, Request, Session, SessionDetail, Status,
};
use crate::logging::AssociationView;

/// A mode-5 server the instance's broadcast/multicast client refuses, as a session row
/// (state `refused-unsigned` or `refused-bad-key`), so that `stratactl sessions` shows it.
fn refused_session(daemon: &Daemon, r: &strata_engine::RefusedServer, now: Instant) -> Session {
    let unsigned = r.reason == strata_engine::DropReason::Unauthenticated;
    Session {
        instance: daemon.instances.name(r.instance),
        address: r.address.to_string(),
        mode: if r.multicast {
            "multicast-client"
        } else {
            "broadcast-client"
        }
        .to_owned(),
        state: if unsigned {
            "refused-unsigned"
        } else {
            "refused-bad-key"
        }
        .to_owned(),
        stratum: 0,
        reach: 0,
        poll: 0,
        offset_s: 0.0,
        delay_s: 0.0,
        dispersion_s: 0.0,
        jitter_s: 0.0,
        refid: String::new(),
        last_s: Some((now - r.last).as_secs_f64()),
        calibrated_delay_s: None,
        calibration_age_s: None,
        calibrations: 0,
        detail: None,
    }
}

impl Daemon {
    pub(super) fn answer(&self, request: &Request) -> Reply {
        let now = self.now();
        match request {
            // Carried out by the event loop, which owns the reload.
            Request::Reload => Reply::Error("reload is not a query".to_owned()),
            Request::Trace { .. } => Reply::Error("trace is not a query".to_owned()),
            Request::Status => {
                let s = self.node.status();
                let instances = self
                    .node
                    .instances()
                    .map(|(id, name, c)| {
                        let mut dropped = c
                            .dropped_by_reason()
                            .map(|(r, n)| (r.as_str().to_owned(), n))
                            .collect::<BTreeMap<_, _>>();
                        let mut received = c.received;
                        let rt = self.instances.get(id);
                        for (reason, n) in rt.map(|i| &i.dropped).into_iter().flatten() {
                            *dropped.entry(reason.clone()).or_default() += n;
                            received += n;
                        }
                        // What the fast-path workers handled themselves.
                        let fast = self.sockets.fast_totals(id);
                        for (reason, n) in fast.dropped_by_reason() {
                            *dropped.entry(reason.as_str().to_owned()).or_default() += n;
                        }
                        if fast.foreign > 0 {
                            *dropped.entry(FOREIGN_INSTANCE.to_owned()).or_default() +=
                                fast.foreign;
                        }
                        if fast.ignored > 0 {
                            *dropped.entry(IGNORED_INTERFACE.to_owned()).or_default() +=
                                fast.ignored;
                        }
                        received += fast.received + fast.foreign + fast.ignored;
                        (
                            name.to_owned(),
                            InstanceCounters {
                                received,
                                sent: c.sent + fast.sent,
                                dropped,
                                kod_sent: c.kod_sent + fast.kod_sent,
                                state: if rt.is_none_or(|i| i.up) {
                                    "up"
                                } else {
                                    "down"
                                }
                                .to_owned(),
                                placement: rt.map_or_else(
                                    || "default".to_owned(),
                                    |i| placement_name(&i.placement),
                                ),
                                error: rt.and_then(|i| if i.up { None } else { i.error.clone() }),
                            },
                        )
                    })
                    .collect();
                Reply::Status(Status {
                    synchronized: s.synchronized && !self.kernel.stale,
                    stratum: s.server.stratum,
                    offset_s: s.offset,
                    frequency_ppm: s.frequency_ppm,
                    refid: s.server.reference_id.to_string(),
                    reference: s.system_peer.map(|(_, inst, addr)| {
                        if inst == InstanceId::DEFAULT {
                            addr.to_string()
                        } else {
                            format!("{addr}%{}", self.instances.name(inst))
                        }
                    }),
                    reference_instance: s.system_peer.map(|(_, inst, _)| self.instances.name(inst)),
                    jitter_s: s.jitter,
                    leap: leap_name(s.server.leap).to_owned(),
                    precision: s.server.precision,
                    root_delay_s: s.server.root_delay.to_seconds(),
                    root_dispersion_s: s.server.root_dispersion.to_seconds(),
                    poll: s.poll,
                    last_update_s: s.last_update.map(|t| (now - t).as_secs_f64()),
                    clock_steps: s.clock_steps,
                    clock_backend: self.backend_name.to_owned(),
                    kernel: self.clock.kernel_view().map(|k| {
                        Box::new(control::KernelStatus {
                            frequency_ppm: k.frequency_ppm,
                            status: k.status,
                            state: k.state,
                            max_error_s: k.max_error,
                            est_error_s: k.est_error,
                            root_distance_s: self.kernel.distance_at(now),
                            clock_set_by_others: self.kernel.external_changes,
                        })
                    }),
                    estimate: (s.estimate.samples > 0).then_some(Estimate {
                        offset_s: s.estimate.offset,
                        offset_uncertainty_s: s.estimate.offset_uncertainty,
                        rms_offset_s: s.estimate.rms_offset,
                        skew_ppm: s.estimate.frequency_uncertainty_ppm,
                        samples: s.estimate.samples,
                    }),
                    instances,
                })
            }
            Request::Sessions => Reply::Sessions(
                self.node
                    .sessions(now)
                    .map(|s| Session {
                        instance: self.instances.name(s.instance),
                        address: s.address.to_string(),
                        mode: s.mode.as_str().to_owned(),
                        // The phase (calibrating, listening, …) wins over
                        // "selected", which stands for a plain reachable source.
                        state: if s.selected && s.state == AssociationState::Reachable {
                            "selected".to_owned()
                        } else {
                            s.state.as_str().to_owned()
                        },
                        stratum: s.stratum,
                        reach: s.reach,
                        poll: s.poll,
                        offset_s: s.offset,
                        delay_s: s.delay,
                        dispersion_s: s.dispersion,
                        jitter_s: s.jitter,
                        refid: s.reference_id.to_string(),
                        last_s: s.last_rx.map(|t| (now - t).as_secs_f64()),
                        calibrated_delay_s: s.calibrated.map(|(d, _)| d),
                        calibration_age_s: s.calibrated.map(|(_, t)| (now - t).as_secs_f64()),
                        calibrations: s.calibrations,
                        detail: Some(session_detail(&s, now)),
                    })
                    .chain(
                        self.node
                            .refused_servers()
                            .map(|r| refused_session(self, r, now)),
                    )
                    .collect(),
            ),
        }
    }
}

impl Daemon {
    /// Logs what changed in the associations since the last call: one
    /// line per change (see [`crate::logging::AssociationLog`]).
    pub(super) fn log_associations(&mut self) {
        let now = self.now();
        let views: Vec<AssociationView> = self
            .node
            .sessions(now)
            .map(|s| AssociationView {
                id: s.id.0,
                instance: self.instances.name(s.instance),
                address: s.address.to_string(),
                mode: s.mode.as_str(),
                state: s.state.as_str(),
                selected: s.selected,
                selection: s.selection.map(SelectionRole::as_str),
            })
            .collect();
        // One line per change, at info or debug (tracing's levels are fixed per call site).
        macro_rules! log_change {
            ($level:ident, $c:expr) => {
                tracing::$level!(
                    instance = %$c.instance,
                    address = %$c.address,
                    mode = $c.mode,
                    event = $c.event,
                    "{}",
                    $c.message
                )
            };
        }
        for c in self.association_log.update(views) {
            if c.info {
                log_change!(info, c);
            } else {
                log_change!(debug, c);
            }
        }
    }
}

/// What `stratactl sessions --verbose` adds to a session.
fn session_detail(s: &SessionStatus, now: Instant) -> SessionDetail {
    let now_s = now.as_secs_f64();
    SessionDetail {
        selection: s.selection.map(|r| r.as_str().to_owned()),
        filter: s
            .filter
            .iter()
            .map(|f| FilterSample {
                offset_s: f.offset,
                delay_s: f.delay,
                dispersion_s: f.dispersion,
                age_s: (now_s - f.time).max(0.0),
            })
            .collect(),
        key_id: s.key_id,
        // A keyed association accepts only packets authenticated with its key.
        authenticated: s.key_id.is_some() && s.last_rx.is_some(),
        remote_leap: s.remote_leap.map(|l| leap_name(l).to_owned()),
        root_delay_s: s.root_delay,
        root_dispersion_s: s.root_dispersion,
        remote_poll: s.remote_poll,
        next_poll_s: s
            .next_poll
            .map(|t| t.saturating_duration_since(now).as_secs_f64()),
        kod_poll_floor: s.kod_poll_floor,
        calibration_requests: s.calibration_progress.map(|(requests, _)| requests),
        calibration_replies: s.calibration_progress.map(|(_, replies)| replies),
    }
}

pub(super) fn leap_name(leap: Leap) -> &'static str {
    match leap {
        Leap::NoWarning => "none",
        Leap::AddSecond => "insert",
        Leap::DeleteSecond => "delete",
        Leap::Unsynchronized => "unsynchronized",
    }
}

pub(super) fn bind_control(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating control socket directory {}", dir.display()))?;
    }
    // A stale socket from a previous run would make bind fail.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "control socket {} is in use by a running daemon",
            path.display()
        );
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding control socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

pub(super) async fn serve_control(listener: UnixListener, tx: mpsc::Sender<ControlRequest>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read).take(control::MAX_REQUEST_LEN as u64 + 1);
            let read =
                tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
            let reply = match read {
                Ok(Ok(_)) if line.len() > control::MAX_REQUEST_LEN => {
                    Reply::Error("request too long".to_owned())
                }
                Ok(Ok(_)) => match control::decode_request(&line) {
                    Ok(request) => {
                        let (reply_tx, reply_rx) = oneshot::channel();
                        if tx
                            .send(ControlRequest {
                                request,
                                reply: reply_tx,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        match reply_rx.await {
                            Ok(r) => r,
                            Err(_) => return,
                        }
                    }
                    Err(e) => Reply::Error(e.to_string()),
                },
                Ok(Err(e)) => Reply::Error(format!("bad request: {e}")),
                Err(_) => Reply::Error("timed out waiting for the request".to_owned()),
            };
            let mut out = control::encode_reply(&reply);
            out.push('\n');
            let _ = write.write_all(out.as_bytes()).await;
        });
    }
}
