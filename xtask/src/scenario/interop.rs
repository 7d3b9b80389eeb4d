//! The `interop-chrony` scenario: strata and chrony's `chronyd` serve each other.
//!
//! Four namespaces on one bridge `lan` (10.200.3.0/24):
//!
//! 1. `chronysrv` (.1) runs `chronyd` with `local stratum 3`, and the strata
//!    client `stratacli` (.2: virtual clock 50 ms off with a +20 ppm
//!    frequency error, minpoll -1, maxpoll 1, iburst; step threshold
//!    shortened to 10 ms so it steps once) syncs to it. It passes
//!    when the client's true error (probed against the host clock, which
//!    `chronyd -x` serves unchanged) is under 2 ms, its stratum is 4 and its
//!    session to chronyd has a nonzero reach register.
//! 2. `stratasrv` (.3) runs stratad as a stratum-1 local reference on the host
//!    timescale, and `chronycli` (.4) runs `chronyd` with
//!    `server 10.200.3.3 iburst minpoll -2 maxpoll 0`. It passes when
//!    `chronyc sources` shows the strata server selected (`^*`) with a nonzero
//!    reach and `chronyc tracking` shows stratum 2 and a system time within 1 ms.
//!
//! Both parts run at the same time: chronyd must be in sync within
//! [`CHRONY_TIMEOUT`], the strata client within [`STRATA_TIMEOUT`] (it needs
//! about 30 s: a few samples, one step, then reselection).
//!
//! chronyd is always started as `chronyd -x -d -f CONF` (see [`chronyd_args`]):
//! `-x` means it never adjusts the host clock (and, as it drops root to its
//! own user, it keeps no `CAP_SYS_TIME` either), `-d` keeps it in the
//! foreground so the run's [`Guard`](super::Guard) owns and stops it. Its
//! config, pidfile, drift file and command socket live in the node's
//! directory (`cmdport 0`: no UDP command port); `chronyc -h SOCKET` reads it
//! from the host, since unix sockets are not namespaced. The scenario checks
//! chronyd's log for its "clock control disabled" line, and that the process
//! holds no `CAP_SYS_TIME`, before going on.

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use super::{
    config::{interop_client, stratum1},
    guard, lacks_sys_time, octal, opt, secs, show, us, Outcome, Run, Scenario,
};

/// The longest wait for chronyd to select the strata server and settle.
pub const CHRONY_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait for the strata client to sync to chronyd.
pub const STRATA_TIMEOUT: Duration = Duration::from_secs(90);

/// chronyd serving `local stratum 3`.
const CHRONY_SERVER: &str = "10.200.3.1";
/// The strata client of [`CHRONY_SERVER`] (also listens, for the probe).
const STRATA_CLIENT: &str = "10.200.3.2";
/// The strata stratum-1 server.
const STRATA_SERVER: &str = "10.200.3.3";

/// The line chronyd logs when started with `-x`.
const CLOCK_CONTROL_DISABLED: &str = "Disabled control of system clock";

/// chronyd's user after it drops root (Debian's chrony package).
const CHRONY_USER: &str = "_chrony";

/// chronyd directives of the server node (the common ones are added by [`chronyd_conf`]).
const CHRONY_SERVER_DIRECTIVES: &str = "\
local stratum 3
allow 10.200.0.0/16
port 123
";

/// chronyd directives of the client node: no server port, one source.
const CHRONY_CLIENT_DIRECTIVES: &str = "\
port 0
server 10.200.3.3 iburst minpoll -2 maxpoll 0
";

/// The scenario; see the module doc.
pub fn interop_chrony() -> Scenario {
    Scenario::new(
        "interop-chrony",
        "strata client <- chronyd -x server, chronyd -x client <- strata server",
        check,
    )
    .bare("chronysrv")
    .daemon(
        "stratacli",
        interop_client(
            &format!("{CHRONY_SERVER}:123"),
            &format!("{STRATA_CLIENT}:123"),
        ),
    )
    .daemon("stratasrv", stratum1(&format!("{STRATA_SERVER}:123")))
    .bare("chronycli")
    .on_lan("chronysrv", "10.200.3.1/24")
    .on_lan("stratacli", "10.200.3.2/24")
    .on_lan("stratasrv", "10.200.3.3/24")
    .on_lan("chronycli", "10.200.3.4/24")
}

/// The arguments chronyd always runs with: `-x` (never touch the host
/// clock), `-d` (foreground, owned by the guard), `-f CONF`.
pub fn chronyd_args(conf: &Path) -> Vec<String> {
    vec![
        "-x".to_owned(),
        "-d".to_owned(),
        "-f".to_owned(),
        conf.display().to_string(),
    ]
}

/// A full chronyd config: `directives` plus the per-node files in `dir`.
fn chronyd_conf(directives: &str, dir: &Path) -> String {
    let mut conf = directives.to_owned();
    let dir = dir.display();
    // Infallible: writing to a String.
    let _ = write!(
        conf,
        "cmdport 0\n\
         bindcmdaddress {dir}/chronyd.sock\n\
         pidfile {dir}/chronyd.pid\n\
         driftfile {dir}/chronyd.drift\n"
    );
    conf
}

/// `name` from `$PATH` or the sbin directories (chronyd lives in /usr/sbin).
pub(crate) fn find_program(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("`{name}` not found: install chrony (apt-get install chrony; .ci/run does)")
        })
}

/// A running chronyd: where to reach it.
pub(crate) struct Chronyd {
    socket: PathBuf,
}

/// Starts `chronyd -x` in `node` with `directives`; returns once it logged
/// that clock control is disabled and its command socket exists.
pub(crate) fn start_chronyd(
    run: &Run<'_>,
    chronyd: &Path,
    node: &str,
    directives: &str,
) -> Result<Chronyd> {
    let node_dir = run.node_dir(node);
    // chronyd wants its socket directory owned by its user and not world-accessible.
    let dir = node_dir.join("chrony");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    guard::run_cmd(
        Command::new("chown")
            .arg(format!("{CHRONY_USER}:{CHRONY_USER}"))
            .arg(&dir),
    )?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770))?;
    let conf = node_dir.join("chronyd.conf");
    std::fs::write(&conf, chronyd_conf(directives, &dir))?;
    let args = chronyd_args(&conf);
    ensure!(args.iter().any(|a| a == "-x"), "chronyd must run with -x");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = run.spawn_in(node, "chronyd", chronyd, &args)?;
    let log = node_dir.join("chronyd.log");
    let socket = dir.join("chronyd.sock");
    run.wait_started(pid, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let no_sys_time = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|status| lacks_sys_time(&status, &["CapEff"]));
        (text.contains(CLOCK_CONTROL_DISABLED) && no_sys_time && socket.exists()).then_some(())
    })
    .with_context(|| {
        format!(
            "chronyd on {node} did not confirm -x, drop CAP_SYS_TIME and open its socket; log: {}",
            log.display()
        )
    })?;
    Ok(Chronyd { socket })
}

/// `chronyc -h SOCKET -n -c WHAT` (CSV output).
pub(crate) fn chronyc(chronyc: &Path, d: &Chronyd, what: &str) -> Result<String> {
    guard::run_cmd(
        Command::new(chronyc)
            .arg("-h")
            .arg(&d.socket)
            .args(["-n", "-c", what]),
    )
}

/// The fields of `chronyc -c tracking` the scenario uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tracking {
    /// Reference name (the source's address).
    pub(crate) reference: String,
    /// chronyd's stratum.
    pub(crate) stratum: u8,
    /// chronyd's estimate of its clock's error, seconds, as the CSV prints
    /// it (negative when the human form says "fast of NTP time").
    pub(crate) system_time_s: f64,
    /// "Last offset": the offset measured at the last clock update, seconds.
    pub(crate) last_offset_s: f64,
    /// Leap status, e.g. `Normal` or `Not synchronised`.
    pub(crate) leap: String,
}

/// Field `text` of output line `line`, parsed; the error names `what` and
/// the line.
pub(crate) fn field<T>(text: &str, what: &str, line: &str) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse().with_context(|| format!("{what} in {line:?}"))
}

/// An octal reach register in output line `line`.
pub(crate) fn reach_field(text: &str, line: &str) -> Result<u8> {
    u8::from_str_radix(text, 8).with_context(|| format!("reach in {line:?}"))
}

impl Tracking {
    /// Parses one CSV line: id, name, stratum, ref time, system time, …, leap.
    pub(crate) fn parse(csv: &str) -> Result<Tracking> {
        let line = csv.lines().next().context("empty tracking output")?;
        let f: Vec<&str> = line.split(',').collect();
        ensure!(f.len() >= 14, "tracking: want 14 fields: {line:?}");
        Ok(Tracking {
            reference: f[1].to_owned(),
            stratum: field(f[2], "stratum", line)?,
            system_time_s: field(f[4], "system time", line)?,
            last_offset_s: field(f[5], "last offset", line)?,
            leap: f[13].to_owned(),
        })
    }
}

/// One line of `chronyc -c sources`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Source {
    /// `^` server, `=` peer, `#` refclock.
    pub(crate) mode: char,
    /// `*` selected, `+` combined, `?` unusable, …
    pub(crate) state: char,
    /// Address.
    pub(crate) name: String,
    /// The source's stratum.
    pub(crate) stratum: u8,
    /// Reach register (printed in octal).
    pub(crate) reach: u8,
    /// Adjusted offset of the last sample, seconds.
    pub(crate) offset_s: f64,
}

impl Source {
    /// Parses every line: mode, state, name, stratum, poll, reach, last rx,
    /// adjusted offset, measured offset, error.
    pub(crate) fn parse_all(csv: &str) -> Result<Vec<Source>> {
        csv.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let f: Vec<&str> = line.split(',').collect();
                ensure!(f.len() >= 10, "sources: want 10 fields: {line:?}");
                let one = |s: &str| {
                    let mut chars = s.chars();
                    match (chars.next(), chars.next()) {
                        (Some(c), None) => Ok(c),
                        _ => bail!("sources: want one character, got {s:?} in {line:?}"),
                    }
                };
                Ok(Source {
                    mode: one(f[0])?,
                    state: one(f[1])?,
                    name: f[2].to_owned(),
                    stratum: field(f[3], "stratum", line)?,
                    reach: reach_field(f[5], line)?,
                    offset_s: field(f[7], "offset", line)?,
                })
            })
            .collect()
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "{}{}{} stratum={} reach={:o} offset_s={}",
            self.mode, self.state, self.name, self.stratum, self.reach, self.offset_s
        )
    }
}

/// What both parts looked like at one poll.
#[derive(Debug, Default, Clone)]
struct Observed {
    /// Part 1: the strata client's true error, seconds.
    strata_error_s: Option<f64>,
    /// Part 1: the strata client's stratum.
    strata_stratum: Option<u8>,
    /// Part 1: reach of its session to chronyd.
    strata_reach: Option<u8>,
    /// Part 2: chronyd's view of the strata server.
    chrony_source: Option<Source>,
    /// Part 2: chronyd's tracking.
    chrony_tracking: Option<Tracking>,
    /// Errors met while observing (for a FAIL line).
    diag: Vec<String>,
}

impl Observed {
    /// Part 1: strata client ← chronyd.
    fn strata_ok(&self) -> bool {
        self.strata_error_s.is_some_and(|e| e.abs() < 2e-3)
            && self.strata_stratum == Some(4)
            && self.strata_reach.is_some_and(|r| r != 0)
    }

    /// Part 2: chronyd client ← strata server.
    fn chrony_ok(&self) -> bool {
        self.chrony_source
            .as_ref()
            .is_some_and(|s| s.mode == '^' && s.state == '*' && s.reach != 0)
            && self
                .chrony_tracking
                .as_ref()
                .is_some_and(|t| t.stratum == 2 && t.system_time_s.abs() < 1e-3)
    }

    fn values(&self) -> Vec<(&'static str, String)> {
        let (source, tracking) = (self.chrony_source.as_ref(), self.chrony_tracking.as_ref());
        vec![
            ("strata_error_us", us(self.strata_error_s)),
            ("strata_stratum", opt(self.strata_stratum)),
            ("strata_reach", octal(self.strata_reach)),
            (
                "chrony_system_time_us",
                us(tracking.map(|t| t.system_time_s)),
            ),
            ("chrony_stratum", opt(tracking.map(|t| t.stratum))),
            (
                "chrony_source",
                show(source, |s| format!("{}{}", s.mode, s.state)),
            ),
            ("chrony_reach", octal(source.map(|s| s.reach))),
            ("chrony_offset_us", us(source.map(|s| s.offset_s))),
        ]
    }
}

/// Observes both parts once.
fn observe(run: &Run<'_>, chronyc_bin: &Path, chrony_client: &Chronyd) -> Observed {
    let mut obs = Observed::default();
    let mut diag = Vec::new();
    match STRATA_CLIENT.parse() {
        Ok(ip) => match run.true_offset("stratacli", std::net::SocketAddr::new(ip, 123)) {
            Ok(s) => obs.strata_error_s = Some(s.offset_s),
            Err(e) => diag.push(obs_diag("probe", &e)),
        },
        Err(e) => diag.push(format!("probe address: {e}")),
    }
    match run.status("stratacli") {
        Ok(st) => obs.strata_stratum = Some(st.stratum),
        Err(e) => diag.push(obs_diag("status", &e)),
    }
    match run.sessions("stratacli") {
        Ok(sessions) => {
            let want = format!("{CHRONY_SERVER}:123");
            obs.strata_reach = sessions
                .iter()
                .find(|s| s.address == want)
                .and_then(|s| s.reach);
        }
        Err(e) => diag.push(obs_diag("sessions", &e)),
    }
    match chronyc(chronyc_bin, chrony_client, "sources").and_then(|o| Source::parse_all(&o)) {
        Ok(sources) => {
            obs.chrony_source = sources.into_iter().find(|s| s.name == STRATA_SERVER);
        }
        Err(e) => diag.push(obs_diag("chronyc sources", &e)),
    }
    match chronyc(chronyc_bin, chrony_client, "tracking").and_then(|o| Tracking::parse(&o)) {
        Ok(t) => obs.chrony_tracking = Some(t),
        Err(e) => diag.push(obs_diag("chronyc tracking", &e)),
    }
    obs.diag = diag;
    obs
}

fn obs_diag(what: &str, e: &anyhow::Error) -> String {
    format!("{what}: {e:#}")
}

fn check(run: &Run<'_>) -> Result<Outcome> {
    let chronyd = find_program("chronyd")?;
    let chronyc_bin = find_program("chronyc")?;
    let started = Instant::now();
    start_chronyd(run, &chronyd, "chronysrv", CHRONY_SERVER_DIRECTIVES)?;
    let chrony_client = start_chronyd(run, &chronyd, "chronycli", CHRONY_CLIENT_DIRECTIVES)?;

    let mut last = Observed::default();
    let mut strata_sync_s = None;
    let mut chrony_sync_s = None;
    let done = guard::try_wait_until(STRATA_TIMEOUT, Duration::from_millis(500), || {
        last = observe(run, &chronyc_bin, &chrony_client);
        let elapsed = started.elapsed();
        if last.strata_ok() {
            strata_sync_s.get_or_insert(elapsed.as_secs_f64());
        }
        if last.chrony_ok() {
            chrony_sync_s.get_or_insert(elapsed.as_secs_f64());
        }
        ensure!(
            chrony_sync_s.is_some() || elapsed < CHRONY_TIMEOUT,
            "chronyd not in sync with the strata server within {}s",
            CHRONY_TIMEOUT.as_secs()
        );
        Ok((last.strata_ok() && last.chrony_ok()).then_some(()))
    });
    let mut values = last.values();
    values.push(("strata_sync_s", secs(strata_sync_s)));
    values.push(("chrony_sync_s", secs(chrony_sync_s)));
    if done.is_err() {
        if let Some(t) = &last.chrony_tracking {
            values.push((
                "chrony_tracking",
                format!("{:?}", format!("ref={} leap={}", t.reference, t.leap)),
            ));
        }
        if let Some(s) = &last.chrony_source {
            values.push(("chrony_source_line", format!("{:?}", s.summary())));
        }
        if !last.diag.is_empty() {
            values.push(("last", format!("{:?}", last.diag.join("; "))));
        }
    }
    Ok(Outcome::of(&done, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from chrony 4.3 in this scenario (`chronyc -n -c tracking` / `sources`;
    // the second sources line is made up: an unreachable candidate).
    const TRACKING: &str = "0AC80303,10.200.3.3,2,1795634915.612052005,-0.000004254,\
                            -0.000002255,0.000002197,-0.686,-0.105,2.344,0.000036738,\
                            0.000004323,0.3,Normal\n";
    const SOURCES: &str = "^,*,10.200.3.3,1,-2,377,0,0.000004442,0.000002187,0.000024042\n\
                           ^,?,10.200.3.9,0,-2,0,-,0.000000000,0.000000000,0.000000000\n";

    #[test]
    fn chronyd_always_runs_with_x_in_the_foreground() {
        let args = chronyd_args(Path::new("/tmp/c.conf"));
        assert_eq!(args, ["-x", "-d", "-f", "/tmp/c.conf"]);
    }

    #[test]
    fn chronyd_conf_keeps_files_in_the_node_dir() {
        let conf = chronyd_conf(CHRONY_SERVER_DIRECTIVES, Path::new("/n/chrony"));
        for line in [
            "local stratum 3",
            "allow 10.200.0.0/16",
            "cmdport 0",
            "bindcmdaddress /n/chrony/chronyd.sock",
            "pidfile /n/chrony/chronyd.pid",
            "driftfile /n/chrony/chronyd.drift",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line:?} in\n{conf}");
        }
        let client = chronyd_conf(CHRONY_CLIENT_DIRECTIVES, Path::new("/n/chrony"));
        assert!(client.contains(&format!(
            "server {STRATA_SERVER} iburst minpoll -2 maxpoll 0"
        )));
    }

    #[test]
    fn configs_use_the_topology_addresses() {
        let sc = interop_chrony();
        sc.validate().expect("well-formed");
        for ip in [CHRONY_SERVER, STRATA_CLIENT, STRATA_SERVER] {
            assert!(sc.addrs.iter().any(|a| a.cidr == format!("{ip}/24")));
        }
    }

    #[test]
    fn parses_chronyc_csv() {
        let t = Tracking::parse(TRACKING).expect("tracking");
        assert_eq!(t.stratum, 2);
        assert_eq!(t.reference, "10.200.3.3");
        assert!((t.system_time_s + 0.000_004_254).abs() < 1e-12);
        assert!((t.last_offset_s + 0.000_002_255).abs() < 1e-12);
        assert_eq!(t.leap, "Normal");
        let s = Source::parse_all(SOURCES).expect("sources");
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].mode, s[0].state, s[0].reach), ('^', '*', 0o377));
        assert_eq!(s[0].name, "10.200.3.3");
        assert_eq!(s[1].reach, 0);
        assert!(Tracking::parse("").is_err());
        assert!(Tracking::parse("0AC80303,x,2").is_err(), "too few fields");
        assert!(
            Source::parse_all("^,*,a,1,-2,999,0,0,0,0").is_err(),
            "reach not octal"
        );
        assert!(
            Source::parse_all("^^,*,a,1,-2,1,0,0,0,0").is_err(),
            "mode not one char"
        );
    }

    #[test]
    fn pass_conditions() {
        let good = Observed {
            strata_error_s: Some(-0.0015),
            strata_stratum: Some(4),
            strata_reach: Some(0o17),
            chrony_source: Source::parse_all(SOURCES)
                .ok()
                .and_then(|s| s.into_iter().next()),
            chrony_tracking: Tracking::parse(TRACKING).ok(),
            diag: vec![],
        };
        assert!(good.strata_ok() && good.chrony_ok());
        let bad_strata = [
            Observed {
                strata_error_s: Some(0.0021),
                ..good.clone()
            },
            Observed {
                strata_stratum: Some(3),
                ..good.clone()
            },
            Observed {
                strata_reach: Some(0),
                ..good.clone()
            },
            Observed {
                strata_error_s: None,
                ..good.clone()
            },
        ];
        for o in &bad_strata {
            assert!(!o.strata_ok(), "{o:?}");
            assert!(o.chrony_ok());
        }
        let mut candidate = good.clone();
        if let Some(s) = candidate.chrony_source.as_mut() {
            s.state = '+';
        }
        assert!(!candidate.chrony_ok(), "not selected");
        let mut far = good.clone();
        if let Some(t) = far.chrony_tracking.as_mut() {
            t.system_time_s = -0.0011;
        }
        assert!(!far.chrony_ok(), "system time too far");
        let mut unsynced = good.clone();
        if let Some(t) = unsynced.chrony_tracking.as_mut() {
            t.stratum = 0;
        }
        assert!(!unsynced.chrony_ok(), "wrong stratum");
        let line: Vec<String> = good
            .values()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            line,
            [
                "strata_error_us=-1500.0",
                "strata_stratum=4",
                "strata_reach=17",
                "chrony_system_time_us=-4.3",
                "chrony_stratum=2",
                "chrony_source=^*",
                "chrony_reach=377",
                "chrony_offset_us=4.4",
            ]
        );
    }
}
