//! The fixed case matrix used to measure clock quality, and how to run a
//! case.
//!
//! Every case has one client and one or more stratum-1 servers (nodes with
//! a local reference on perfect clocks unless said otherwise). The client
//! starts 0.5 s ahead of true time with a +50 ppm oscillator, polls with
//! `iburst` and poll exponents 4..=10 (16 s .. 17 min), and uses the RFC
//! 5905 discipline constants (step threshold 128 ms, stepout 900 s, panic
//! threshold 1000 s) with the system poll limited to 4..=10. The first
//! offset is stepped at once (like `ntpd -g`), so the stepout is left at
//! the RFC value.
//!
//! In a multicast case ([`Case::multicast_poll`]) the server sends mode 5
//! to 224.0.1.1 instead, and the client, a multicast client on the same
//! path, calibrates the delay with a client/server volley on the first
//! packet and then listens: the same path in unicast is the case to
//! compare it with.
//!
//! Three cases keep the matrix honest about averaging, so that longer and
//! longer windows are not what wins: `wander` (the client's oscillator
//! frequency does a random walk), `temperature` (its frequency steps by a
//! few hundredths of a ppm every 20 minutes, like a room heating and
//! cooling) and `route` (the path's delay jumps from 50 µs to 250/230 µs
//! one way, so the truth moves by 10 µs, half the new asymmetry).
//!
//! The figures are of the error less half the path's asymmetry
//! ([`Path::half_asymmetry`]), which no NTP client can see.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use strata_clock::discipline::DisciplineConfig;
use strata_engine::{BroadcastClientConfig, Node, NodeConfig};

use crate::clock::ClockModel;
use crate::metrics::Metrics;
use crate::path::{Jitter, Path, RouteChange};
use crate::sim::{Record, Sim};
use crate::SimError;

/// One server of a case.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSpec {
    /// The server's clock.
    pub clock: ClockModel,
    /// The path from the client (`a`) to the server (`b`).
    pub path: Path,
}

/// A case of the matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// Short name (used for file names and `--case`).
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// The servers the client polls.
    pub servers: Vec<ServerSpec>,
    /// The client's clock.
    pub client_clock: ClockModel,
    /// Client minimum poll exponent.
    pub minpoll: i8,
    /// Client maximum poll exponent.
    pub maxpoll: i8,
    /// `Some(poll)`: the servers send mode 5 to a multicast group every
    /// 2^`poll` s and the client listens (calibrating first) instead of
    /// polling them.
    pub multicast_poll: Option<i8>,
}

impl Case {
    /// Half the asymmetry of the path to the first server at true time
    /// `t` (s): where a perfect client settles.
    #[must_use]
    pub fn half_asymmetry(&self, t: f64) -> f64 {
        self.servers
            .first()
            .map_or(0.0, |s| s.path.half_asymmetry(t))
    }
}

/// The group of the multicast cases.
pub const GROUP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(224, 0, 1, 1)), 123);

/// The client's start state in every case: 0.5 s ahead, +50 ppm.
#[must_use]
pub fn default_client_clock() -> ClockModel {
    ClockModel::offset(0.5, 50.0)
}

fn lan() -> Path {
    Path {
        jitter: Jitter::Normal { sigma: 10e-6 },
        ..Path::symmetric(50e-6)
    }
}

fn one_server(name: &'static str, description: &'static str, path: Path) -> Case {
    Case {
        name,
        description,
        servers: vec![ServerSpec {
            clock: ClockModel::perfect(),
            path,
        }],
        client_clock: default_client_clock(),
        minpoll: 4,
        maxpoll: 10,
        multicast_poll: None,
    }
}

/// The fixed matrix: `lan`, `wan`, `lossy`, `spiky`, `falseticker`,
/// `multicast` (the `lan` path with a multicast server at poll 6),
/// `wander`, `temperature` and `route`.
#[must_use]
pub fn cases() -> Vec<Case> {
    let wan = Path {
        delay_ab: 0.0205,
        delay_ba: 0.0195,
        jitter: Jitter::Exponential { mean: 0.002 },
        ..Path::symmetric(0.020)
    };
    let mut falseticker = one_server(
        "falseticker",
        "4 servers on LAN paths, one of them 100 ms off",
        lan(),
    );
    for offset in [0.0, 0.0, 0.100] {
        falseticker.servers.push(ServerSpec {
            clock: ClockModel::offset(offset, 0.0),
            path: lan(),
        });
    }
    vec![
        one_server("lan", "one server, 50 µs one-way delay, normal jitter σ 10 µs", lan()),
        one_server(
            "wan",
            "one server, 20 ms one-way delay, exponential jitter mean 2 ms, 1 ms asymmetry (20.5 ms out, 19.5 ms back)",
            wan,
        ),
        one_server(
            "lossy",
            "LAN path losing 30% of packets each way",
            Path { loss: 0.3, ..lan() },
        ),
        one_server(
            "spiky",
            "LAN path where 1% of packets are delayed by an extra 50 ms",
            Path {
                spike_probability: 0.01,
                spike: 0.050,
                ..lan()
            },
        ),
        falseticker,
        Case {
            client_clock: ClockModel {
                wander_ppm_per_sqrt_s: 1e-4,
                ..default_client_clock()
            },
            ..one_server(
                "wander",
                "the lan path, client frequency a random walk of 1e-4 ppm/√s (Allan deviation 2e-9 at 1000 s)",
                lan(),
            )
        },
        Case {
            client_clock: ClockModel {
                frequency_steps: (1..12)
                    .map(|i| (f64::from(i) * 1200.0, if i % 2 == 1 { 0.05 } else { -0.05 }))
                    .collect(),
                ..default_client_clock()
            },
            ..one_server(
                "temperature",
                "the lan path, client frequency stepping by +0.05 ppm and back every 20 minutes",
                lan(),
            )
        },
        one_server(
            "route",
            "the lan path, at 2.5 h the delay jumps to 250 µs out and 230 µs back (truth moves by 10 µs)",
            Path {
                route_change: Some(RouteChange {
                    at: 9000.0,
                    delay_ab: 250e-6,
                    delay_ba: 230e-6,
                }),
                ..lan()
            },
        ),
        Case {
            multicast_poll: Some(6),
            ..one_server(
                "multicast",
                "the lan path, server multicasting mode 5 every 64 s, client calibrated by a 4-reply volley, then listening",
                lan(),
            )
        },
    ]
}

/// The case named `name`.
#[must_use]
pub fn case(name: &str) -> Option<Case> {
    cases().into_iter().find(|c| c.name == name)
}

/// The discipline constants of the client in every case.
#[must_use]
pub fn client_discipline() -> DisciplineConfig {
    DisciplineConfig {
        min_poll: 4,
        max_poll: 10,
        ..DisciplineConfig::default()
    }
}

/// The outcome of one case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The case's name.
    pub name: &'static str,
    /// The seed used.
    pub seed: u64,
    /// Simulated duration (s).
    pub duration: f64,
    /// The client's per-second samples.
    pub trace: Vec<Record>,
    /// The client's figures.
    pub metrics: Metrics,
    /// How many times the client's clock was stepped.
    pub steps: u32,
    /// Whether the client reported a panic.
    pub panicked: bool,
}

/// Runs `case` for `duration` seconds of true time.
pub fn run_case(case: &Case, seed: u64, duration: f64) -> Result<CaseResult, SimError> {
    if !duration.is_finite() || duration < 1.0 {
        return Err(SimError::InvalidTime);
    }
    let mut sim = Sim::new(seed);
    let client_node = Node::new(
        NodeConfig {
            discipline: client_discipline(),
            ..NodeConfig::default()
        },
        sim.node_rng(0),
    );
    let client = sim.add_host("client", client_node, case.client_clock.clone());
    if case.multicast_poll.is_some() {
        sim.join(client, GROUP.ip())?;
        sim.set_multicast_client(
            client,
            BroadcastClientConfig {
                allow_unauthenticated: true,
                ..BroadcastClientConfig::default()
            },
        )?;
    }
    for (i, s) in case.servers.iter().enumerate() {
        let node = Node::new(
            NodeConfig {
                local_stratum: Some(1),
                ..NodeConfig::default()
            },
            sim.node_rng(i + 1),
        );
        let server = sim.add_host(&format!("server{}", i + 1), node, s.clock.clone());
        sim.connect(client, server, s.path)?;
        match case.multicast_poll {
            Some(poll) => sim.add_multicast_server(server, GROUP, poll)?,
            None => sim.add_server(client, server, case.minpoll, case.maxpoll, true)?,
        }
    }
    sim.record(client)?;
    sim.run_until(duration)?;
    let trace = sim.trace(client)?.to_vec();
    let metrics = Metrics::from_trace_relative(&trace, |t| case.half_asymmetry(t))
        .ok_or(SimError::InvalidTime)?;
    let host = sim.host(client)?;
    Ok(CaseResult {
        name: case.name,
        seed,
        duration,
        steps: host.clock.steps(),
        panicked: host.panicked,
        trace,
        metrics,
    })
}
