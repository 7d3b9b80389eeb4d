//! The daemon's configuration: loading (file or built-in default, then `STRATA_*` environment
//! overrides) and `check-config` validation.
//!
//! Two layers: raw serde structs that mirror the TOML file (kebab-case, unknown keys refused)
//! are validated into the typed [`Config`]. Durations are strings such as `"500ms"`, `"64s"`,
//! `"1.5s"` (see [`parse_duration`]) and become `f64` seconds; addresses are numeric
//! `ip:port` strings (port 123 when omitted).
//!
//! [`load`] never returns a half-valid configuration: any problem is an error carrying every
//! [`Diagnostic`]. [`check_file`] and [`check_str`] report the same problems with their dotted
//! key path and 1-based line.

mod check;
mod duration;
mod raw;
mod sources;
mod value;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;

pub use duration::{parse_duration, DurationError};
pub use value::parse_prefix;
pub use value::ValueError;

pub use sources::{
    ipv6_ntp_group, BroadcastClient, BroadcastServer, MulticastClient, MulticastServer, Server,
    SourceAddress, DEFAULT_BROADCAST_POLL, DEFAULT_GROUP_V4, DEFAULT_IPV6_SCOPE,
    DEFAULT_MULTICAST_TTL, DEFAULT_RECALIBRATE,
};

/// The embedded default configuration (used when no file is given).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The control socket used when neither the configuration nor the command line names one.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/strata/control.sock";

/// The name of the instance every listener and server belongs to unless told otherwise.
pub const DEFAULT_INSTANCE: &str = "default";

/// The largest key id `key = ID` and `trusted-keys` accept.
pub const MAX_KEY_ID: u32 = strata_engine::auth::MAX_KEY_ID;

/// The NTP port, used when an address has none.
pub const DEFAULT_NTP_PORT: u16 = 123;

/// The prefix of environment variables that override configuration keys
/// (`STRATA_CLOCK__BACKEND=virtual` sets `clock.backend`; `__` nests, `_` stands for `-`).
pub const ENV_PREFIX: &str = "STRATA_";

/// The label of diagnostics about the built-in default configuration.
const DEFAULT_LABEL: &str = "<built-in default>";

/// The validated daemon configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[clock]`: which clock the daemon reads and steers.
    pub clock: ClockConfig,
    /// `[discipline]`: clock discipline thresholds.
    pub discipline: DisciplineConfig,
    /// `[local-reference]`: serve time with no upstream; `None` when the table is absent.
    pub local_reference: Option<LocalReference>,
    /// `[control]`: the stratactl socket.
    pub control: ControlConfig,
    /// `[metrics] listen`: where the Prometheus endpoint is served; `None` (the default)
    /// serves none.
    pub metrics: Option<SocketAddr>,
    /// `[[listen]]`: where requests are answered.
    pub listen: Vec<Listen>,
    /// `[[server]]`: unicast time sources.
    pub server: Vec<Server>,
    /// `[[peer]]`: symmetric active associations (same keys as a server).
    pub peer: Vec<Server>,
    /// `[[multicast-server]]`: send mode 5 to a group.
    pub multicast_server: Vec<MulticastServer>,
    /// `[[broadcast-server]]`: send mode 5 to a broadcast address.
    pub broadcast_server: Vec<BroadcastServer>,
    /// `[[multicast-client]]`: join a group, calibrate, listen.
    pub multicast_client: Vec<MulticastClient>,
    /// `[[broadcast-client]]`: listen for broadcasts, calibrate, listen.
    pub broadcast_client: Vec<BroadcastClient>,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[[instance]]`: named VPN instances (the `default` instance is implicit).
    pub instance: Vec<Instance>,
    /// `[[access]]`: access rules, in file order (first match wins per instance).
    pub access: Vec<Access>,
    /// `[access-policy]`: what refused sources get.
    pub access_policy: AccessPolicy,
    /// `[rate-limit]`: per-client rate limiting of requests; `None` (off) when the table is
    /// absent.
    pub rate_limit: Option<RateLimit>,
    /// `[auth]`: symmetric keys; `None` when the table is absent.
    pub auth: Option<AuthConfig>,
    /// `[responder]`: how requests are answered (the fast path's workers).
    pub responder: Responder,
    /// `[dynamic-sessions]`: limits on associations that remotes mobilise.
    pub dynamic_sessions: DynamicSessions,
    /// `[interfaces] ignore`: interfaces on which the default instance takes no NTP (an
    /// `[[instance]]` has its own `ignore-interfaces`).
    pub ignore_interfaces: Vec<String>,
    /// Non-fatal notes found while loading (for example a world-writable file).
    pub warnings: Vec<String>,
}

/// Which clock the daemon reads and steers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockBackend {
    /// The host clock, adjusted by the daemon.
    System,
    /// The host clock, read but never adjusted.
    Observe,
    /// A simulated clock offset from the host clock (tests, scenarios).
    Virtual,
}

impl ClockBackend {
    /// The configuration name: `"system"`, `"observe"` or `"virtual"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockBackend::System => "system",
            ClockBackend::Observe => "observe",
            ClockBackend::Virtual => "virtual",
        }
    }

    /// Parse a configuration name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "system" => Some(ClockBackend::System),
            "observe" => Some(ClockBackend::Observe),
            "virtual" => Some(ClockBackend::Virtual),
            _ => None,
        }
    }
}

impl fmt::Display for ClockBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[clock]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockConfig {
    /// The clock backend (default: observe).
    pub backend: ClockBackend,
    /// Where the frequency estimate is kept across restarts (default: none).
    pub drift_file: Option<PathBuf>,
    /// Virtual clock: how far it starts from the host clock, in seconds (default 0).
    pub initial_offset: f64,
    /// Virtual clock: its frequency error in ppm (default 0).
    pub frequency_error_ppm: f64,
    /// System clock: the root distance (s) past which the daemon reports
    /// itself unsynchronised when no clock update comes (default 1.5 s).
    pub max_distance: f64,
}

/// `[discipline]`, all in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct DisciplineConfig {
    /// Offsets above this are stepped rather than slewed (default 0.128 s).
    pub step_threshold: f64,
    /// How long an offset must persist above the step threshold before stepping (default 900 s).
    pub stepout: f64,
    /// Offsets above this make the daemon give up; `None` ("0s") = never (default 1000 s).
    pub panic_threshold: Option<f64>,
}

/// `[local-reference]`: serve time with no upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalReference {
    /// The stratum to claim, 1..=15.
    pub stratum: u8,
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// The unix socket stratactl talks to (default [`DEFAULT_CONTROL_SOCKET`]).
    pub socket: PathBuf,
}

/// One `[[listen]]`: an address where requests are answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The local address to bind.
    pub address: SocketAddr,
    /// The instance it belongs to (default `"default"`).
    pub instance: String,
    /// Answer only requests signed with this key of `[auth] keys-file` (default none: signed
    /// and unsigned requests are answered).
    pub key: Option<u32>,
}

/// Where a named instance's sockets live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InstancePlacement {
    /// `device = "NAME"`: the daemon's namespace, every socket bound to this device
    /// (`SO_BINDTODEVICE`, e.g. a VRF device).
    Device(String),
    /// `netns = "NAME"`: sockets created inside `/run/netns/NAME`.
    Netns(String),
}

impl fmt::Display for InstancePlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstancePlacement::Device(d) => write!(f, "device {d}"),
            InstancePlacement::Netns(n) => write!(f, "netns {n}"),
        }
    }
}

/// One `[[instance]]`: a named VPN instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its unique name (never `"default"`).
    pub name: String,
    /// Where its sockets live.
    pub placement: InstancePlacement,
    /// Most dynamic (passive, broadcast/multicast) associations it may hold (default 100).
    pub max_dynamic_sessions: usize,
    /// The default `source` / `source-interface` of its `[[server]]`s and `[[peer]]`s (an
    /// address applies to the sources of its family only).
    pub source: Option<SourceAddress>,
    /// `ignore-interfaces`: datagrams arriving on these interfaces are dropped (counted as
    /// `ignored-interface`) and no mode-5 table may send or join there.
    pub ignore_interfaces: Vec<String>,
}

impl Instance {
    /// The default of `max-dynamic-sessions`.
    pub const DEFAULT_MAX_DYNAMIC_SESSIONS: usize = 100;
}

/// `[dynamic-sessions]`: limits on dynamic associations (symmetric passive and
/// broadcast/multicast client ones, which remotes mobilise); beyond them new ones are
/// refused and counted (`session-limit`). Applied on reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynamicSessions {
    /// `max`: the default instance's limit (default 100); an `[[instance]]` sets its own
    /// `max-dynamic-sessions`.
    pub max: usize,
    /// `max-total`: all instances together (default 1000).
    pub max_total: usize,
}

impl Default for DynamicSessions {
    fn default() -> Self {
        DynamicSessions {
            max: Instance::DEFAULT_MAX_DYNAMIC_SESSIONS,
            max_total: strata_engine::DEFAULT_MAX_DYNAMIC_TOTAL,
        }
    }
}

/// What a matching source may do: the engine's access levels (`peer`,
/// `server`, `synchronization`, `query`).
pub use strata_engine::AccessLevel;

/// An address prefix such as `10.200.1.0/24` (host bits are zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length, at most 32 (IPv4) or 128 (IPv6).
    pub len: u8,
}

impl Prefix {
    /// Whether `ip` lies in this prefix, as the engine matches access
    /// rules.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        strata_engine::access::prefix_contains(self.addr, self.len, ip)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One `[[access]]`: sources in `prefixes` get `level` on `instance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The instance the rule applies to (default `"default"`).
    pub instance: String,
    /// What matching sources may do.
    pub level: AccessLevel,
    /// The source prefixes (IPv4 and IPv6 may be mixed).
    pub prefixes: Vec<Prefix>,
}

/// `[access-policy]`: what a source gets when the access rules of its instance refuse it
/// time service (no rule matches, or its rule is `query`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessPolicy {
    /// `deny = "drop"` (default): send nothing; `deny = "kod"`: answer a client request with a
    /// KoD DENY (rate limited like any answer).
    pub deny: DenyAction,
}

/// The `deny` value of `[access-policy]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenyAction {
    /// Refuse silently.
    #[default]
    Drop,
    /// Answer client requests with a kiss-o'-death DENY.
    Kod,
}

/// `[auth]`: the keys file and which keys authenticate incoming packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `keys-file`: lines `ID TYPE KEY`; must not be readable by group or others.
    pub keys_file: PathBuf,
    /// `trusted-keys`: the key ids that authenticate incoming packets.
    pub trusted_keys: Vec<u32>,
}

impl AuthConfig {
    /// Reads and parses the keys file into a key store.
    ///
    /// # Errors
    /// [`KeysFileError`], naming the file: unreadable, readable by group or others, a parse
    /// error (with its line), or a trusted key id that is not in the file.
    pub fn load_keys(&self) -> Result<strata_engine::auth::KeyStore, KeysFileError> {
        let path = || self.keys_file.clone();
        let read = |source| KeysFileError::Read {
            path: path(),
            source,
        };
        let metadata = std::fs::metadata(&self.keys_file).map_err(read)?;
        if mode_has(&metadata, 0o044) {
            return Err(KeysFileError::Readable { path: path() });
        }
        let text = std::fs::read_to_string(&self.keys_file).map_err(read)?;
        let keys =
            strata_engine::auth::parse_keys_file(&text).map_err(|source| KeysFileError::Parse {
                path: path(),
                source,
            })?;
        strata_engine::auth::KeyStore::new(keys, self.trusted_keys.iter().copied()).map_err(
            |source| KeysFileError::Store {
                path: path(),
                source,
            },
        )
    }
}

/// Why a keys file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysFileError {
    /// It cannot be read.
    #[error("keys file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Group or others may read it.
    #[error("keys file {p} is readable by group or others (run chmod 600 {p})", p = path.display())]
    Readable {
        /// The file.
        path: PathBuf,
    },
    /// A line does not parse.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error, with its line.
        #[source]
        source: strata_engine::auth::KeysError,
    },
    /// The keys do not make a store (a trusted key that is not in the file).
    #[error("{}: {source}", path.display())]
    Store {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: strata_engine::auth::StoreError,
    },
}

/// Whether a file's mode has any of the permission bits `bits` (never, where there are none).
fn mode_has(metadata: &std::fs::Metadata, bits: u32) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        metadata.permissions().mode() & bits != 0
    }
    #[cfg(not(unix))]
    {
        let _ = (metadata, bits);
        false
    }
}

/// `[responder]`: the server side's fast path.
///
/// (Not `[server]`: that name is taken by the `[[server]]` sources, and
/// TOML cannot have a table and an array of tables under one key.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Responder {
    /// Worker threads per `[[listen]]` socket that answer plain client
    /// requests in batches. `None` (absent): one per core the daemon may
    /// run on. `Some(0)`: no workers; every datagram goes through the
    /// event loop, one `recvmsg` at a time (the path before the fast
    /// path, kept for comparison and debugging). `Some(1)`: one worker per
    /// listener.
    pub workers: Option<usize>,
}

/// The most `[responder] workers`.
pub const MAX_WORKERS: usize = 256;

/// `[rate-limit]`: a token bucket per (instance, client IP address).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// A client's sustained rate is one request per `interval` seconds; it gets at most one
    /// KoD RATE per interval (default 2 s).
    pub interval: f64,
    /// How many requests may arrive at once (default 8).
    pub burst: u32,
    /// The most clients tracked: the limiter's memory cap (default 100000).
    pub max_clients: usize,
}

impl RateLimit {
    /// The defaults of an empty `[rate-limit]` table.
    pub const DEFAULT: RateLimit = RateLimit {
        interval: 2.0,
        burst: 8,
        max_clients: 100_000,
    };
}

impl Config {
    /// The interfaces an instance ignores (`[interfaces] ignore` for the default one).
    #[must_use]
    pub fn ignored_interfaces(&self, instance: &str) -> &[String] {
        if instance == DEFAULT_INSTANCE {
            return &self.ignore_interfaces;
        }
        self.instance
            .iter()
            .find(|i| i.name == instance)
            .map_or(&[], |i| i.ignore_interfaces.as_slice())
    }

    /// The access rules of `instance`, in order (first match wins); none means everyone
    /// gets [`AccessLevel::Server`].
    pub fn access_rules(&self, instance: &str) -> Vec<(Prefix, AccessLevel)> {
        self.access
            .iter()
            .filter(|a| a.instance == instance)
            .flat_map(|a| a.prefixes.iter().map(move |p| (*p, a.level)))
            .collect()
    }
}

/// The level names a `[log] level` directive may end in.
pub const LOG_LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The log filter, a tracing directive list such as `"info"` or
    /// `"info,strata_engine=debug"` (default `"info"`).
    pub level: String,
    /// `format`: `"auto"` (default: human-readable on a terminal, JSON lines
    /// otherwise), `"human"` or `"json"`.
    pub format: crate::logging::LogFormat,
}

impl Config {
    /// The configuration of an empty file: every absent key's default, no listeners, sources
    /// or instances. The daemon starts from it and applies its configuration as a reload.
    #[must_use]
    pub fn empty() -> Config {
        Config {
            clock: ClockConfig {
                backend: ClockBackend::Observe,
                drift_file: None,
                initial_offset: 0.0,
                max_distance: 1.5,
                frequency_error_ppm: 0.0,
            },
            discipline: DisciplineConfig {
                step_threshold: 0.128,
                stepout: 900.0,
                panic_threshold: Some(1000.0),
            },
            local_reference: None,
            control: ControlConfig {
                socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            },
            metrics: None,
            listen: Vec::new(),
            server: Vec::new(),
            peer: Vec::new(),
            multicast_server: Vec::new(),
            broadcast_server: Vec::new(),
            multicast_client: Vec::new(),
            broadcast_client: Vec::new(),
            log: LogConfig {
                level: "info".to_owned(),
                format: crate::logging::LogFormat::Auto,
            },
            instance: Vec::new(),
            access: Vec::new(),
            access_policy: AccessPolicy::default(),
            rate_limit: None,
            auth: None,
            responder: Responder::default(),
            dynamic_sessions: DynamicSessions::default(),
            ignore_interfaces: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// One configuration problem, located by dotted key path and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the text came from: a file path, `<built-in default>`, `<string>` or
    /// `<environment>` (for `STRATA_*` overrides).
    pub file: String,
    /// The dotted key path, e.g. `server[0].minpoll` (empty for syntax errors).
    pub key: String,
    /// The 1-based line, or 0 when unknown (environment overrides).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Checks `path` and prints the outcome as `check-config` does (both
/// `stratad` and `stratactl` offer it): one `FILE:LINE: KEY: warning: …` line per
/// warning (see [`check_str_warnings`]), then `FILE: ok` on stdout, or one line per error
/// on stdout and a count on stderr. Returns the exit code: success when the file is valid,
/// warnings or not.
///
/// # Errors
/// When the file cannot be read.
pub fn report_check(path: &Path, program: &str) -> Result<std::process::ExitCode, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError {
        path: path.to_owned(),
        source,
    })?;
    let (diagnostics, warnings) = check::check_text_all(&text, &path.display().to_string());
    for w in &warnings {
        println!("{}", w.as_warning());
    }
    if diagnostics.is_empty() {
        println!("{}: ok", path.display());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    for d in &diagnostics {
        println!("{d}");
    }
    eprintln!(
        "{program}: {}: {} error(s)",
        path.display(),
        diagnostics.len()
    );
    Ok(std::process::ExitCode::FAILURE)
}

/// A configuration file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {}: {source}", path.display())]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

impl Diagnostic {
    /// Displays as a warning: `FILE:LINE: KEY: warning: MESSAGE`.
    #[must_use]
    pub fn as_warning(&self) -> impl fmt::Display + '_ {
        struct AsWarning<'a>(&'a Diagnostic);
        impl fmt::Display for AsWarning<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let d = Diagnostic {
                    message: format!("warning: {}", self.0.message),
                    ..self.0.clone()
                };
                d.fmt(f)
            }
        }
        AsWarning(self)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The configuration is invalid; every problem found is listed.
    #[error("invalid configuration:\n{}", render_diagnostics(.diagnostics))]
    Invalid {
        /// The problems, in line order.
        diagnostics: Vec<Diagnostic>,
    },
}

fn render_diagnostics(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `STRATA_*` environment provider.
fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX).map(|key| key.as_str().replace("__", ".").replace('_', "-").into())
}

/// Load the configuration: the embedded default ([`DEFAULT_TOML`]) when `path` is `None`, else
/// the file; then `STRATA_*` environment overrides (double underscore nests, single underscore
/// stands for `-`: `STRATA_CLOCK__DRIFT_FILE` sets `clock.drift-file`). The result is validated.
///
/// Errors name the key, and the line when it came from the file. A world-writable file loads
/// with a note in [`Config::warnings`].
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let (text, label, mut warnings) = match path {
        None => (
            DEFAULT_TOML.to_owned(),
            DEFAULT_LABEL.to_owned(),
            Vec::new(),
        ),
        Some(path) => {
            let read_error = |source| ConfigError::Read {
                path: path.to_owned(),
                source,
            };
            let text = std::fs::read_to_string(path).map_err(read_error)?;
            let metadata = std::fs::metadata(path).map_err(read_error)?;
            let mut warnings = Vec::new();
            if mode_has(&metadata, 0o002) {
                warnings.push(format!(
                    "configuration file {} is world-writable: anyone can change how strata sets the clock",
                    path.display()
                ));
            }
            (text, path.display().to_string(), warnings)
        }
    };

    let (diagnostics, text_warnings) = check::check_text_all(&text, &label);
    if !diagnostics.is_empty() {
        return Err(ConfigError::Invalid { diagnostics });
    }
    warnings.extend(text_warnings.iter().map(|w| w.as_warning().to_string()));

    let figment = Figment::from(Toml::string(&text)).merge(env_provider());
    let raw: raw::RawConfig = figment.extract().map_err(|error| ConfigError::Invalid {
        diagnostics: error
            .into_iter()
            .map(|e| Diagnostic {
                file: "<environment>".to_owned(),
                key: e.path.join("."),
                line: 0,
                message: e.kind.to_string(),
            })
            .collect(),
    })?;
    // The text alone was valid, so what is wrong now came from the environment.
    let mut config = raw.validate().map_err(|errors| ConfigError::Invalid {
        diagnostics: errors
            .into_iter()
            .map(|e| Diagnostic {
                file: "<environment>".to_owned(),
                key: e.path.to_string(),
                line: 0,
                message: e.message,
            })
            .collect(),
    })?;
    config.warnings.append(&mut warnings);
    Ok(config)
}

/// The embedded default configuration ([`DEFAULT_TOML`]) without environment overrides:
/// observe-only clock, one listener on 127.0.0.1:11123, control socket
/// [`DEFAULT_CONTROL_SOCKET`].
pub fn default_config() -> Config {
    let raw: raw::RawConfig =
        toml::from_str(DEFAULT_TOML).expect("the embedded default.toml parses (tested)");
    raw.validate()
        .expect("the embedded default.toml is valid (tested)")
}

/// Validate a configuration file; an empty result means it is valid.
///
/// Every problem is reported with its dotted key path and 1-based line: syntax errors, unknown
/// keys, wrong types, bad durations and addresses, out-of-range values, `minpoll > maxpoll`
/// and unknown instance names. Environment overrides are not applied.
pub fn check_file(path: &Path) -> Result<Vec<Diagnostic>, io::Error> {
    let text = std::fs::read_to_string(path)?;
    Ok(check::check_text(&text, &path.display().to_string()))
}

/// Validate configuration text, like [`check_file`]; diagnostics are labelled `<string>`.
pub fn check_str(text: &str) -> Vec<Diagnostic> {
    check::check_text(text, "<string>")
}

/// The warnings of valid configuration text: what start-up accepts but has no effect, each
/// with its key and line — today `[[access]]` prefixes that can never match because a rule
/// of a higher level in the same instance covers them (rules are checked from the highest
/// level down). Empty when the text has errors ([`check_str`] reports those).
pub fn check_str_warnings(text: &str) -> Vec<Diagnostic> {
    check::check_text_all(text, "<string>").1
}

/// Every key the configuration knows, as `table.key` (arrays of tables without indices),
/// read from the same structs the file is parsed with.
#[must_use]
pub fn schema_keys() -> Vec<String> {
    check::schema_keys()
}
