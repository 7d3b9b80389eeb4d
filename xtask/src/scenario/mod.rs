//! Network-namespace scenarios: topology and daemon configs as data, plus checks.
//!
//! A [`Scenario`] names its nodes (one network namespace each), Linux
//! bridges (each in its own namespace), links (veth pairs, or veth ports on
//! a bridge) and addresses, and gives each daemon node a strata config as a
//! TOML string (see [`config`]). The runner builds it all under a per-run
//! prefix `st<4 hex>-`, starts `stratad` in each daemon node, runs the check
//! and always tears down through a [`Guard`]. It prints one line per
//! scenario: `scenario NAME: pass|FAIL key=value ...`.
//!
//! A definition is built from an empty [`Scenario::new`] with
//! [`Scenario::daemon`], [`Scenario::bare`], [`Scenario::veth`] and
//! [`Scenario::on_lan`], its configs from the shared pieces in [`config`].
//! The check gets a [`Run`] (`run.rs`): `stratactl` queries, daemons it
//! starts and stops itself, true-offset probes.
//!
//! Daemon nodes run `stratad` and are queried with `stratactl`, built with
//! `cargo build -p strata-daemon --bins` into the cargo target dir, or taken
//! from `$XTASK_BIN_DIR` when set (no build then).
//!
//! Names: namespace `PREFIX+node`, interface `PREFIX+ifname` (at most 15
//! bytes, so `ifname` is at most 8). Addresses must lie in 10.200.0.0/16 or
//! fd00:200::/48 (IPv6 without duplicate address detection).

mod access;
mod auth;
pub mod config;
mod defs;
mod flood;
pub mod guard;
pub(crate) mod interop;
mod mode6;
mod multicast;
pub(crate) mod ntpsec;
mod ops;
mod run;
mod symmetric;
mod vpn;

use std::{net::IpAddr, path::PathBuf, process::Command, time::Duration};

use anyhow::{bail, ensure, Context, Result};
use xshell::{cmd, Shell};

pub use guard::{wait_until, Guard};
pub use run::*;

/// Longest Linux interface name.
const IFNAMSIZ_MAX: usize = 15;

/// One end of a link: an interface in a node.
#[derive(Debug, Clone)]
pub struct End {
    /// Node name.
    pub node: &'static str,
    /// Interface name without the run prefix (at most 8 bytes).
    pub ifname: &'static str,
}

/// A layer-2 link.
#[derive(Debug, Clone)]
pub enum Link {
    /// A veth pair between two nodes.
    Veth(End, End),
    /// A veth from a node to a port of a bridge.
    BridgePort {
        /// Bridge name (see [`Scenario::bridges`]).
        bridge: &'static str,
        /// The node's end.
        end: End,
    },
}

/// An address on a node's interface, `ip/len`.
#[derive(Debug, Clone)]
pub struct Addr {
    /// The interface.
    pub end: End,
    /// `ip/prefix-len`, in 10.200.0.0/16 or fd00:200::/48.
    pub cidr: &'static str,
}

/// A node: one network namespace, optionally running `stratad`.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node name (short: it becomes part of the namespace name).
    pub name: &'static str,
    /// The daemon's config template, or `None` for a bare namespace.
    pub config: Option<String>,
}

/// A scenario's check, run once everything is up.
pub type Check = fn(&Run<'_>) -> Result<Outcome>;

/// A scenario: topology, configs and check, all data.
pub struct Scenario {
    /// Name used on the command line.
    pub name: &'static str,
    /// One line on what it shows.
    pub about: &'static str,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Bridges, each in its own namespace `PREFIX+name` (name at most 8 bytes).
    pub bridges: Vec<&'static str>,
    /// Links.
    pub links: Vec<Link>,
    /// Addresses.
    pub addrs: Vec<Addr>,
    /// The check.
    pub check: Check,
}

/// One end of a veth with its address: `(node, ifname, ip/len)`.
pub type Iface = (&'static str, &'static str, &'static str);

/// The builder: a scenario starts empty ([`Scenario::new`]) and each call
/// adds nodes, links and addresses, so a definition lists only what is its
/// own.
impl Scenario {
    /// An empty scenario.
    pub fn new(name: &'static str, about: &'static str, check: Check) -> Scenario {
        Scenario {
            name,
            about,
            nodes: Vec::new(),
            bridges: Vec::new(),
            links: Vec::new(),
            addrs: Vec::new(),
            check,
        }
    }

    /// Adds node `name`, running `stratad` with `config` when there is one.
    #[must_use]
    pub fn node(mut self, name: &'static str, config: Option<impl Into<String>>) -> Scenario {
        let config = config.map(Into::into);
        self.nodes.push(Node { name, config });
        self
    }

    /// Adds a bare namespace (no daemon at start).
    #[must_use]
    pub fn bare(self, name: &'static str) -> Scenario {
        self.node(name, None::<String>)
    }

    /// Adds a node running `stratad` with `config`.
    #[must_use]
    pub fn daemon(self, name: &'static str, config: impl Into<String>) -> Scenario {
        self.node(name, Some(config))
    }

    /// Adds a veth pair between two interfaces, each with its address.
    #[must_use]
    pub fn veth(mut self, (na, ia, ca): Iface, (nb, ib, cb): Iface) -> Scenario {
        let end = |node, ifname| End { node, ifname };
        self.links.push(Link::Veth(end(na, ia), end(nb, ib)));
        self.addr(na, ia, ca).addr(nb, ib, cb)
    }

    /// Adds an address to `node`'s interface `ifname`.
    #[must_use]
    pub fn addr(
        mut self,
        node: &'static str,
        ifname: &'static str,
        cidr: &'static str,
    ) -> Scenario {
        let end = End { node, ifname };
        self.addrs.push(Addr { end, cidr });
        self
    }

    /// Puts `node` on the bridge `lan` (added on first use) through its
    /// interface `lan0`, with address `cidr`.
    #[must_use]
    pub fn on_lan(mut self, node: &'static str, cidr: &'static str) -> Scenario {
        if !self.bridges.contains(&"lan") {
            self.bridges.push("lan");
        }
        let end = End {
            node,
            ifname: "lan0",
        };
        self.links.push(Link::BridgePort { bridge: "lan", end });
        self.addr(node, "lan0", cidr)
    }

    /// Whether any node runs the daemon (so the binaries must be built).
    pub fn needs_daemon(&self) -> bool {
        self.nodes.iter().any(|n| n.config.is_some())
    }

    /// Checks names, lengths, references and address ranges.
    pub fn validate(&self) -> Result<()> {
        let known = |node: &str| self.nodes.iter().any(|n| n.name == node);
        for node in &self.nodes {
            ensure!(
                !node.name.is_empty() && node.name.len() <= 16,
                "node name {:?} must be 1..=16 bytes",
                node.name
            );
        }
        for bridge in &self.bridges {
            ensure!(
                !bridge.is_empty() && bridge.len() <= 8,
                "bridge name {bridge:?} must be 1..=8 bytes"
            );
            ensure!(!known(bridge), "bridge {bridge:?} clashes with a node name");
        }
        let check_end = |end: &End| -> Result<()> {
            ensure!(known(end.node), "unknown node {:?}", end.node);
            ensure!(
                !end.ifname.is_empty() && end.ifname.len() <= IFNAMSIZ_MAX - 7,
                "interface name {:?} must be 1..=8 bytes",
                end.ifname
            );
            Ok(())
        };
        for link in &self.links {
            match link {
                Link::Veth(a, b) => {
                    check_end(a)?;
                    check_end(b)?;
                }
                Link::BridgePort { bridge, end } => {
                    ensure!(self.bridges.contains(bridge), "unknown bridge {bridge:?}");
                    check_end(end)?;
                }
            }
        }
        for addr in &self.addrs {
            check_end(&addr.end)?;
            check_cidr(addr.cidr)?;
        }
        Ok(())
    }
}

/// Accepts only test ranges: 10.200.0.0/16 and fd00:200::/48.
pub fn check_cidr(cidr: &str) -> Result<IpAddr> {
    let (ip, len) = cidr
        .split_once('/')
        .with_context(|| format!("{cidr:?}: want ip/len"))?;
    let ip: IpAddr = ip
        .parse()
        .with_context(|| format!("{cidr:?}: bad address"))?;
    let len: u8 = len
        .parse()
        .with_context(|| format!("{cidr:?}: bad length"))?;
    match ip {
        IpAddr::V4(v4) => {
            ensure!((16..=32).contains(&len), "{cidr:?}: length must be 16..=32");
            ensure!(
                v4.octets()[..2] == [10, 200],
                "{cidr:?}: IPv4 must be in 10.200.0.0/16"
            );
        }
        IpAddr::V6(v6) => {
            ensure!(
                (48..=128).contains(&len),
                "{cidr:?}: length must be 48..=128"
            );
            ensure!(
                v6.segments()[..3] == [0xfd00, 0x0200, 0],
                "{cidr:?}: IPv6 must be in fd00:200::/48"
            );
        }
    }
    Ok(ip)
}

/// Flags of `cargo xtask scenario`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Fail deliberately after the check, processes still running (to verify teardown).
    pub fail: bool,
    /// Keep the run directory even on success.
    pub keep: bool,
}

/// True when the effective user is root (read from `/proc/self/status`).
pub fn is_root() -> Result<bool> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    Ok(euid == "0")
}

/// Builds the topology of `sc` under `prefix`, starts its daemons.
fn build(sc: &Scenario, run: &Run<'_>, guard: &Guard) -> Result<()> {
    for node in &sc.nodes {
        guard.add_netns(&run.ns(node.name))?;
    }
    for bridge in &sc.bridges {
        let ns = run.ns(bridge);
        let dev = run.ifname(bridge);
        guard.add_netns(&ns)?;
        guard::ip(&[
            "-n",
            &ns,
            "link",
            "add",
            &dev,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        guard.record_link(&ns, &dev);
        guard::ip(&["-n", &ns, "link", "set", "dev", &dev, "up"])?;
    }
    for (i, link) in sc.links.iter().enumerate() {
        match link {
            Link::Veth(a, b) => {
                let (ns_a, if_a) = (run.ns(a.node), run.ifname(a.ifname));
                let (ns_b, if_b) = (run.ns(b.node), run.ifname(b.ifname));
                guard.add_veth(&ns_a, &if_a, &ns_b, &if_b)?;
                guard::ip(&["-n", &ns_a, "link", "set", "dev", &if_a, "up"])?;
                guard::ip(&["-n", &ns_b, "link", "set", "dev", &if_b, "up"])?;
            }
            Link::BridgePort { bridge, end } => {
                let (ns, ifname) = (run.ns(end.node), run.ifname(end.ifname));
                let (br_ns, br_dev) = (run.ns(bridge), run.ifname(bridge));
                let port = run.ifname(&format!("p{i}"));
                guard.add_veth(&ns, &ifname, &br_ns, &port)?;
                guard::ip(&["-n", &br_ns, "link", "set", "dev", &port, "master", &br_dev])?;
                guard::ip(&["-n", &br_ns, "link", "set", "dev", &port, "up"])?;
                guard::ip(&["-n", &ns, "link", "set", "dev", &ifname, "up"])?;
            }
        }
    }
    for addr in &sc.addrs {
        let (ns, ifname) = (run.ns(addr.end.node), run.ifname(addr.end.ifname));
        let mut args = vec!["-n", &ns, "addr", "add", addr.cidr, "dev", &ifname];
        if check_cidr(addr.cidr)?.is_ipv6() {
            args.push("nodad");
        }
        guard::ip(&args)?;
    }
    for node in &sc.nodes {
        if let Some(template) = &node.config {
            run.start_stratad(node.name, template)?;
        }
    }
    Ok(())
}

/// Runs one scenario under `prefix`; prints its summary line and returns its
/// outcome (failed also when teardown had problems or left namespaces).
fn run_one(sc: &Scenario, prefix: &str, bins: &Bins, opts: Options) -> Result<Outcome> {
    sc.validate()
        .with_context(|| format!("scenario {} is malformed", sc.name))?;
    let dir = PathBuf::from(format!("/tmp/strata-{}", prefix.trim_end_matches('-'))).join(sc.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let guard = Guard::new();
    let run = Run {
        prefix,
        dir: dir.clone(),
        bins,
        guard: &guard,
    };
    let result = build(sc, &run, &guard)
        .and_then(|()| (sc.check)(&run))
        .and_then(|outcome| {
            if opts.fail {
                bail!("deliberate failure (--fail) after the check, processes still running")
            }
            Ok(outcome)
        });
    let problems = guard.cleanup();
    drop(guard);
    let leftovers: Vec<String> = guard::netns_list()?
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    let (pass, mut values) = match result {
        Ok(outcome) => (outcome.pass, outcome.values),
        Err(err) => (false, vec![("error", format!("{:?}", format!("{err:#}")))]),
    };
    if !problems.is_empty() {
        values.push(("cleanup", format!("{:?}", problems.join("; "))));
    }
    if !leftovers.is_empty() {
        values.push(("leftover_netns", leftovers.join(",")));
    }
    let pass = pass && problems.is_empty() && leftovers.is_empty();
    let kv: String = values.iter().map(|(k, v)| format!(" {k}={v}")).collect();
    println!(
        "scenario {}: {}{kv}",
        sc.name,
        if pass { "pass" } else { "FAIL" }
    );
    if pass && !opts.keep {
        std::fs::remove_dir_all(&dir).ok();
    } else {
        println!("scenario {}: files in {}", sc.name, dir.display());
    }
    Ok(Outcome { pass, values })
}

/// `cargo xtask scenario NAME|all|list`.
pub fn cli(sh: &Shell, name: &str, opts: Options) -> Result<()> {
    let all = defs::all();
    if name == "list" {
        for sc in &all {
            println!("{:<16} {}", sc.name, sc.about);
        }
        return Ok(());
    }
    let selected: Vec<&Scenario> = if name == "all" {
        all.iter().collect()
    } else {
        match all.iter().find(|s| s.name == name) {
            Some(sc) => vec![sc],
            None => bail!("unknown scenario {name:?} (see `cargo xtask scenario list`)"),
        }
    };
    let outcomes = run_scenarios(sh, &selected, opts)?;
    let failed: Vec<&str> = selected
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| !o.pass)
        .map(|(sc, _)| sc.name)
        .collect();
    let passed = selected.len() - failed.len();
    println!("scenarios: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        bail!("scenario(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs `selected` (root only) under one fresh run prefix with the binaries
/// built (or taken from `$XTASK_BIN_DIR`), checks no namespace is left
/// behind, and returns each scenario's outcome in order.
pub fn run_scenarios(sh: &Shell, selected: &[&Scenario], opts: Options) -> Result<Vec<Outcome>> {
    if !is_root()? {
        bail!("scenario requires root (network namespaces); run as root or skip");
    }
    // XTASK_BIN_DIR runs prebuilt (e.g. release) binaries instead of building.
    let bin_dir = match std::env::var_os("XTASK_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            if selected.iter().any(|s| s.needs_daemon()) {
                cmd!(sh, "cargo build -p strata-daemon --bins").run()?;
            }
            crate::target_dir().join("debug")
        }
    };
    let bins = Bins {
        stratad: bin_dir.join("stratad"),
        stratactl: bin_dir.join("stratactl"),
        xtask: std::env::current_exe().context("path of xtask")?,
    };
    let prefix = guard::new_prefix()?;
    let mut outcomes = Vec::with_capacity(selected.len());
    for sc in selected {
        outcomes.push(run_one(sc, &prefix, &bins, opts)?);
    }
    let leftovers: Vec<String> = guard::netns_list()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    ensure!(
        leftovers.is_empty(),
        "namespaces left behind by run {prefix}: {leftovers:?}"
    );
    // The run's parent directory is empty unless a scenario kept its files.
    std::fs::remove_dir(format!("/tmp/strata-{}", prefix.trim_end_matches('-'))).ok();
    Ok(outcomes)
}

/// `cargo xtask clean-netns`: removes leftover `st<4 hex>-*` namespaces,
/// stopping the processes still inside them first.
pub fn clean_netns() -> Result<()> {
    if !is_root()? {
        bail!("clean-netns requires root (network namespaces)");
    }
    let stale: Vec<String> = guard::netns_list()?
        .into_iter()
        .filter(|n| guard::is_run_prefixed(n))
        .collect();
    for ns in &stale {
        let pids: Vec<String> = guard::ip(&["netns", "pids", ns])?
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !pids.is_empty() {
            guard::run_cmd(Command::new("kill").args(["-s", "TERM"]).args(&pids)).ok();
            let gone = wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
                guard::ip(&["netns", "pids", ns])
                    .ok()
                    .filter(|out| out.trim().is_empty())
            });
            if gone.is_err() {
                guard::run_cmd(Command::new("kill").args(["-s", "KILL"]).args(&pids)).ok();
            }
        }
        guard::ip(&["netns", "del", ns])?;
        println!(
            "clean-netns: removed {ns} (stopped {} process(es))",
            pids.len()
        );
    }
    if stale.is_empty() {
        println!("clean-netns: nothing to remove");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges() {
        assert!(check_cidr("10.200.1.1/24").is_ok());
        assert!(check_cidr("fd00:200::1/64").is_ok());
        assert!(check_cidr("fd00:200:0:5::1/64").is_ok());
        assert!(check_cidr("10.201.1.1/24").is_err());
        assert!(check_cidr("192.168.1.1/24").is_err());
        assert!(check_cidr("fd00:201::1/64").is_err());
        assert!(check_cidr("fd00:200:1::1/64").is_err(), "outside the /48");
        assert!(check_cidr("10.200.1.1").is_err(), "length required");
        assert!(
            check_cidr("10.200.1.1/8").is_err(),
            "wider than the test range"
        );
    }

    #[test]
    fn every_defined_scenario_is_well_formed() {
        let all = defs::all();
        assert!(all.iter().any(|s| s.name == "client-server"));
        assert!(all.iter().any(|s| s.name == "smoke"));
        for sc in &all {
            sc.validate()
                .unwrap_or_else(|e| panic!("{}: {e:#}", sc.name));
            assert!(!matches!(sc.name, "all" | "list"), "reserved name");
        }
        let mut names: Vec<_> = all.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "unique names");
    }

    #[test]
    fn validate_rejects_bad_topologies() {
        let base = || Scenario {
            name: "t",
            about: "",
            nodes: vec![Node {
                name: "a",
                config: None,
            }],
            bridges: vec![],
            links: vec![],
            addrs: vec![],
            check: |_| Ok(Outcome::default()),
        };
        let end = |node, ifname| End { node, ifname };
        let mut sc = base();
        sc.links = vec![Link::Veth(end("a", "eth0"), end("b", "eth0"))];
        assert!(sc.validate().is_err(), "unknown node");
        let mut sc = base();
        sc.addrs = vec![Addr {
            end: end("a", "eth0-long-name"),
            cidr: "10.200.0.1/24",
        }];
        assert!(sc.validate().is_err(), "interface name too long");
        let mut sc = base();
        sc.links = vec![Link::BridgePort {
            bridge: "lan",
            end: end("a", "eth0"),
        }];
        assert!(sc.validate().is_err(), "unknown bridge");
        sc.bridges = vec!["lan"];
        assert!(sc.validate().is_ok());
    }

    #[test]
    fn capability_checks() {
        let dropped = "CapInh:\t0000000000000000\nCapEff:\t000001fffdffffff\n\
                       CapBnd:\t000001fffdffffff\n";
        let root = "CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";
        let eff_only = "CapEff:\t000001fffdffffff\nCapBnd:\t000001ffffffffff\n";
        let both = ["CapEff", "CapBnd"];
        assert!(lacks_sys_time(dropped, &both));
        assert!(!lacks_sys_time(root, &both));
        assert!(
            !lacks_sys_time(eff_only, &both),
            "bounding set still has it"
        );
        assert!(lacks_sys_time(eff_only, &["CapEff"]));
        assert!(!lacks_sys_time("CapEff:\t0\n", &both), "no CapBnd line");
        assert!(
            !lacks_sys_time("CapEff:\tzz\nCapBnd:\t0\n", &both),
            "bad hex"
        );
        assert_eq!(cap_mask(dropped, "CapInh"), Some(0));
        assert_eq!(
            cap_mask("CapEff:\t0000000000000400\n", "CapEff"),
            Some(0x400)
        );
        assert_eq!(cap_mask("Name:\tx\n", "CapEff"), None);
    }

    #[test]
    fn interface_names_fit_ifnamsiz() {
        let prefix = "st1a2b-";
        assert_eq!(prefix.len() + 8, IFNAMSIZ_MAX);
    }

    #[test]
    fn status_and_sessions_parse() {
        let status: Status = serde_json::from_str(
            r#"{"synchronized": true, "stratum": 2, "offset_s": -1e-5, "frequency_ppm": -49.8,
                "clock_steps": 1, "refid": "10.200.1.1", "instances": {}}"#,
        )
        .expect("status");
        assert!(status.synchronized);
        assert_eq!(status.clock_steps, Some(1));
        assert_eq!(status.frequency_ppm, Some(-49.8));
        let sessions: Vec<Session> = serde_json::from_str(
            r#"[{"instance": "default", "address": "10.200.1.1:123", "mode": "client",
                 "state": "synced", "stratum": 1, "reach": 255, "poll": 0,
                 "offset_s": 0.0001, "delay_s": 0.0002, "dispersion_s": 0.01}]"#,
        )
        .expect("sessions");
        assert_eq!(sessions[0].reach, Some(255));
        assert_eq!(sessions[0].mode, "client");
    }
}
