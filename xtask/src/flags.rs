//! Command-line flags of `cargo xtask`, declared with `xflags`.

xflags::xflags! {
    /// strata project automation.
    cmd xtask {
        /// Check the repository's rules as code (docs, banned APIs, unsafe, whitespace, lints).
        cmd tidy {}
        /// Run everything CI runs: fmt, clippy, tidy, docs, tests, and (as root) every scenario.
        cmd test {}
        /// Run a network-namespace scenario: NAME, `all`, or `list` (root only).
        /// Uses stratad/stratactl from `$XTASK_BIN_DIR` when set, else builds them.
        cmd scenario {
            /// Scenario name, `all` or `list`.
            required name: String
            /// Fail deliberately after the check, processes still running (verifies teardown).
            optional --fail
            /// Keep the per-run directory (configs, logs) even when the scenario passes.
            optional --keep
        }
        /// Build the daemons and show a two-hop chain (s1 <- c1 <- c2) converging
        /// live in network namespaces; ends with a summary and pass/FAIL (root only).
        cmd demo {}
        /// Run the simulation case matrix (release build of strata-sim): a table per
        /// case and plots in target/sim/CASE.png.
        cmd sim {
            /// Run only this case (lan, wan, lossy, spiky, falseticker, wander,
            /// temperature, route, multicast).
            optional --case case: String
            /// Simulation seed (default 1).
            optional --seed seed: u64
            /// Run seeds 1..=N and add a table of medians and worst figures.
            optional --seeds seeds: u64
            /// Simulated hours per case (default 4).
            optional --hours hours: f64
        }
        /// Delete leftover strata scenario namespaces (`st<4 hex>-*`) and their processes.
        cmd clean-netns {}
        /// Build the Debian package (release binaries, man pages, unit, sample config) into
        /// target/debian/ with cargo-deb and list it (needs `cargo install cargo-deb`).
        cmd dist {}
        /// Run the cargo-fuzz targets in fuzz/ for SECS each (default 60) and report
        /// execs and findings (needs `cargo install cargo-fuzz`; not part of `test`).
        cmd fuzz {
            /// Only this target: packet_parse, mac_verify, extension_fields,
            /// config_parse, control_request or mode6_parse.
            optional target: String
            /// Seconds per target (default 60).
            optional --time secs: u64
        }
        /// Measure the clock error of the NTP server at ADDR against this host's clock.
        cmd probe {
            /// Server address, `ip:port`.
            required addr: String
            /// Give up after this many milliseconds (default 2000).
            optional --timeout-ms timeout_ms: u64
        }
        /// Answer NTP client requests with a clock shifted by OFFSET_MS (scenario helper).
        cmd ntp-responder {
            /// Address to bind, `ip:port`.
            required addr: String
            /// Offset of the served clock from the host clock, milliseconds.
            optional --offset-ms offset_ms: i64
            /// Exit after answering this many requests (default 16).
            optional --max-requests max_requests: u32
            /// Exit after this many seconds (default 60).
            optional --max-seconds max_seconds: u64
        }
        /// NTP traffic from inside a scenario namespace, counted at the sender (scenario
        /// helper; bounded in time and requests): `poll` (one client per source address,
        /// polling like a normal client), `flood` (one address at a fixed rate) or `once`
        /// (one datagram of mode 1, 3, 6 or 7). Prints one line of counts.
        cmd ntp-load {
            /// `poll`, `flood` or `once`.
            required kind: String
            /// Server address, `ip:port`.
            required target: String
            /// Source addresses, comma-separated (poll: one client each; default any).
            optional --sources sources: String
            /// flood: requests per second (default 10000).
            optional --rate rate: f64
            /// poll: seconds between one client's requests, at least (default 2).
            optional --interval interval: f64
            /// poll: up to this many seconds more, at random (default 1).
            optional --jitter jitter: f64
            /// Seconds to send for (default 10, at most 300).
            optional --seconds seconds: f64
            /// Requests in all, at most (default 200000, at most 1000000).
            optional --max-requests max_requests: u64
            /// once: the datagram's mode (default 3).
            optional --mode mode: u8
            /// once: milliseconds to wait for an answer (default 1000).
            optional --timeout-ms timeout_ms: u64
        }
        /// Measurements with real daemons in namespaces (root only).
        cmd bench {
            /// strata (observe-only) and chronyd -x behind one impairment relay:
            /// RMS and max error of each, and the ratio strata/chronyd.
            cmd accuracy {
                /// `lan`, `wan` or `both` (default both).
                optional --setting setting: String
                /// Seconds to sample after the warm-up (default 300).
                optional --seconds seconds: u64
            }
            /// Server throughput on loopback: the reference reflector, stratad and
            /// chronyd -x, each pinned to core 1 with the load generator on core 0:
            /// max replies/s, replies/s at <= 0.1% loss, p50/p99 and CPU per reply
            /// at 20,000 req/s, RSS after 100,000 clients; ratio strata/chronyd.
            cmd server {
                /// Shorter runs (about 1 minute instead of about 5).
                optional --quick
                /// Reuse the release binaries in the target dir instead of building.
                optional --no-build
                /// Datagrams per recvmmsg/sendmmsg batch (default 32).
                optional --batch batch: usize
                /// Servers to measure, comma-separated (default reflector,strata,chronyd,ntpsec).
                optional --servers servers: String
                /// stratad's fast-path workers per listener (`[responder] workers`, default 1).
                optional --workers workers: usize
                /// Instead: strata with 1 and with 2 workers, generator and server unpinned.
                optional --scaling
            }
        }
        /// The server bench's reference reflector: recvmmsg, build mode-4 replies,
        /// sendmmsg; one thread (pin it with taskset).
        cmd reflector {
            /// Address to bind, `ip:port`.
            required addr: String
            /// Datagrams per batch (default 32).
            optional --batch batch: usize
            /// Exit after this many seconds (default 60).
            optional --max-seconds max_seconds: u64
            /// Exit after answering this many requests (default 100000000).
            optional --max-packets max_packets: u64
        }
        /// A UDP relay adding one-way delay, jitter, asymmetry and loss (bench helper).
        cmd relay {
            /// Address clients send to, `ip:port`.
            required --listen listen: String
            /// Server to forward to, `ip:port`.
            required --upstream upstream: String
            /// Mean one-way delay, microseconds (default 0).
            optional --delay-us delay_us: f64
            /// Jitter scale, microseconds: σ, half-width or mean (default 0).
            optional --jitter-us jitter_us: f64
            /// Jitter distribution: none, normal, uniform, exp (default normal).
            optional --jitter jitter: String
            /// Asymmetry, microseconds: up takes delay + asym/2, down delay − asym/2.
            optional --asym-us asym_us: f64
            /// Loss probability per datagram and direction, 0..=1 (default 0).
            optional --loss loss: f64
            /// Random seed (default 1).
            optional --seed seed: u64
            /// Exit after this many seconds (default 60).
            optional --max-seconds max_seconds: u64
            /// Exit after forwarding this many datagrams (default 100000).
            optional --max-packets max_packets: u64
            /// Rewrite this file with a statistics line every second.
            optional --stats stats: String
        }
    }
}
