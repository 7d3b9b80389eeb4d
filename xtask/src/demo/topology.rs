//! The demo's topology: six namespaces, five daemons on embedded configs,
//! and what each node must show before the demo passes.
//!
//! ```text
//!              10.200.1.0/24                          instance vpna = netns pe-vpna
//!   s1 (1) ─────────────────── pe (2) ═══ [vpna] ─┬── 10.200.2.0/24 ── ce1 (3)  client
//!    │ .1                    .2                   └── 10.200.4.0/24 ── ce2 (3)  symmetric passive
//!    └─ 10.200.3.0/24, mode 5 to 224.0.1.1 ──> mc (2)  multicast client
//! ```
//!
//! `s1` serves its virtual clock as stratum 1 on a wildcard listener and
//! sends mode 5 to 224.0.1.1 on its link to `mc`. `pe` is a client of `s1`
//! in its default instance and has one VPN instance, `vpna`, whose sockets
//! it opens inside the namespace `pe-vpna` (the daemon stays in `pe`); in
//! it `pe` serves `ce1` (a plain client) and is symmetric active toward
//! `ce2`, which has no source of its own and lets `pe`'s address mobilise a
//! symmetric passive association. `mc` calibrates against `s1` with a short
//! client/server volley, then follows its mode-5 packets.
//!
//! Polls are shortened so the demo converges in seconds, and every config
//! says so: clients and peers poll every 2^-2..2^0 s (0.25-1 s; default
//! 2^6..2^10 s), `s1` multicasts every 2^0 s (default 2^6 s), and a clock
//! that starts hundreds of milliseconds off is stepped after 2 s rather than
//! 900 s (`stepout`).

use crate::scenario::Scenario;

/// The topology in three lines, for the live view.
pub const DIAGRAM: &str = concat!(
    "  s1 (1) ───── pe (2) ═══ [vpna] ─┬── ce1 (3)  client\n",
    "   │                               └── ce2 (3)  symmetric passive\n",
    "   └── mode 5 to 224.0.1.1 ──> mc (2)  multicast client",
);

/// A session a node must have (reached, in one of `states`) to pass.
#[derive(Debug, Clone, Copy)]
pub struct WantSession {
    /// The instance it belongs to.
    pub instance: &'static str,
    /// The remote address, `ip:port`.
    pub address: &'static str,
    /// The association mode.
    pub mode: &'static str,
    /// The states that count: a source in use shows `selected`, a
    /// multicast client following mode 5 `listening`.
    pub states: &'static [&'static str],
}

/// What the demo knows about one daemon node.
#[derive(Debug, Clone, Copy)]
pub struct NodeSpec {
    /// Node (namespace) name.
    pub name: &'static str,
    /// What the node shows, for the live view and the summary.
    pub role: &'static str,
    /// An address the node serves on; probed from inside the node for its
    /// true error.
    pub probe: &'static str,
    /// The stratum a client must reach; `None` for the reference.
    pub want_stratum: Option<u8>,
    /// The sessions that must be up.
    pub want_sessions: &'static [WantSession],
}

/// The daemon nodes, upstream first (`pe-vpna` runs no daemon).
pub const NODES: [NodeSpec; 5] = [
    NodeSpec {
        name: "s1",
        role: "stratum-1 reference; serves pe, multicasts to mc",
        probe: "10.200.1.1:123",
        want_stratum: None,
        want_sessions: &[],
    },
    NodeSpec {
        name: "pe",
        role: "client of s1; instance vpna serves ce1, peers with ce2",
        probe: "10.200.1.2:123",
        want_stratum: Some(2),
        want_sessions: &[
            WantSession {
                instance: "default",
                address: "10.200.1.1:123",
                mode: "client",
                states: &["selected"],
            },
            // ce2 takes its time from pe, so pe never selects it (a loop).
            WantSession {
                instance: "vpna",
                address: "10.200.4.2:123",
                mode: "symmetric-active",
                states: &["reachable"],
            },
        ],
    },
    NodeSpec {
        name: "ce1",
        role: "client of pe through pe's instance vpna",
        probe: "10.200.2.2:123",
        want_stratum: Some(3),
        want_sessions: &[WantSession {
            instance: "default",
            address: "10.200.2.1:123",
            mode: "client",
            states: &["selected"],
        }],
    },
    NodeSpec {
        name: "ce2",
        role: "symmetric passive peer of pe (in vpna)",
        probe: "10.200.4.2:123",
        want_stratum: Some(3),
        want_sessions: &[WantSession {
            instance: "default",
            address: "10.200.4.1:123",
            mode: "symmetric-passive",
            states: &["selected"],
        }],
    },
    NodeSpec {
        name: "mc",
        role: "multicast client of s1 (224.0.1.1)",
        probe: "10.200.3.2:123",
        want_stratum: Some(2),
        want_sessions: &[WantSession {
            instance: "default",
            address: "10.200.3.1:123",
            mode: "multicast-client",
            states: &["listening"],
        }],
    },
];

/// `s1`: stratum 1 from its own (virtual) clock; serves and multicasts.
const S1_CONFIG: &str = r#"
[clock]
backend = "virtual"

[local-reference]
stratum = 1

# One wildcard listener answers pe (10.200.1.1) and mc's calibration
# (10.200.3.1); mode 5 leaves from it with the address of the link to mc.
[[listen]]
address = "0.0.0.0:123"

# Mode 5 every 2^0 = 1 s, shortened for the demo (default 2^6 = 64 s).
[[multicast-server]]
group = "224.0.1.1"
interface = "${prefix}mc0"
poll = 0
"#;

/// `pe`: client of `s1`; VPN instance `vpna` in the namespace `pe-vpna`.
const PE_CONFIG: &str = r#"
[clock]
backend = "virtual"
initial-offset = "300ms"
frequency-error-ppm = 30.0

# Shortened for the demo: step a large error after 2 s (default 900 s).
[discipline]
step-threshold = "128ms"
stepout = "2s"

# VPN A: its sockets are opened inside this namespace; the daemon stays here.
[[instance]]
name = "vpna"
netns = "${prefix}pe-vpna"

# Polls every 2^-2..2^0 s, shortened for the demo (default 2^6..2^10 s).
[[server]]
address = "10.200.1.1:123"
minpoll = -2
maxpoll = 0
iburst = true

[[listen]]
address = "10.200.1.2:123"

# Serves ce1 in VPN A.
[[listen]]
address = "10.200.2.1:123"
instance = "vpna"

# Symmetric active toward ce2 in VPN A (polls shortened as above); ce2's
# packets arrive on the listener below, and pe answers from it.
[[peer]]
address = "10.200.4.2:123"
instance = "vpna"
minpoll = -2
maxpoll = 0

[[listen]]
address = "10.200.4.1:123"
instance = "vpna"
"#;

/// `ce1`: a client of `pe`'s `vpna` listener.
const CE1_CONFIG: &str = r#"
[clock]
backend = "virtual"
initial-offset = "-200ms"
frequency-error-ppm = -20.0

# Shortened for the demo: step a large error after 2 s (default 900 s).
[discipline]
step-threshold = "128ms"
stepout = "2s"

# Polls every 2^-2..2^0 s, shortened for the demo (default 2^6..2^10 s).
[[server]]
address = "10.200.2.1:123"
minpoll = -2
maxpoll = 0
iburst = true

[[listen]]
address = "10.200.2.2:123"
"#;

/// `ce2`: no source of its own; `pe` mobilises a symmetric passive
/// association, through which `ce2` synchronises.
const CE2_CONFIG: &str = r#"
[clock]
backend = "virtual"
initial-offset = "250ms"
frequency-error-ppm = 15.0

# Shortened for the demo: step a large error after 2 s (default 900 s).
[discipline]
step-threshold = "128ms"
stepout = "2s"

# pe's symmetric active packets may mobilise a passive association (which
# polls at pe's pace, 2^-2..2^0 s).
[[access]]
level = "peer"
prefixes = ["10.200.4.1/32"]

# Time service for the rest (the demo probes ce2 from inside ce2).
[[access]]
level = "synchronization"
prefixes = ["0.0.0.0/0"]

[[listen]]
address = "10.200.4.2:123"
"#;

/// `mc`: a multicast client of `s1` that also serves on port 123.
const MC_CONFIG: &str = r#"
[clock]
backend = "virtual"
initial-offset = "-150ms"
frequency-error-ppm = 40.0

# Shortened for the demo: step a large error after 2 s (default 900 s).
[discipline]
step-threshold = "128ms"
stepout = "2s"

# Calibrates with a short client/server volley (paced by s1's 1 s mode-5
# interval), then follows s1's mode-5 packets.
[[multicast-client]]
group = "224.0.1.1"
interface = "${prefix}eth0"
allow-unauthenticated = true

[[listen]]
address = "0.0.0.0:123"
"#;

/// The demo topology as scenario data; `check` is the live view.
pub fn scenario(check: crate::scenario::Check) -> Scenario {
    Scenario::new(
        "demo",
        "client/server, a VPN instance, a symmetric pair and multicast, converging live",
        check,
    )
    .daemon("s1", S1_CONFIG)
    .daemon("pe", PE_CONFIG)
    .bare("pe-vpna")
    .daemon("ce1", CE1_CONFIG)
    .daemon("ce2", CE2_CONFIG)
    .daemon("mc", MC_CONFIG)
    .veth(
        ("s1", "eth0", "10.200.1.1/24"),
        ("pe", "eth0", "10.200.1.2/24"),
    )
    .veth(
        ("s1", "mc0", "10.200.3.1/24"),
        ("mc", "eth0", "10.200.3.2/24"),
    )
    .veth(
        ("pe-vpna", "a1", "10.200.2.1/24"),
        ("ce1", "eth0", "10.200.2.2/24"),
    )
    .veth(
        ("pe-vpna", "a2", "10.200.4.1/24"),
        ("ce2", "eth0", "10.200.4.2/24"),
    )
}
