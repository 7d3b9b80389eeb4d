//! Values of the configuration file that check themselves as they are read: a raw field of
//! type `V<K>` deserializes what the file holds and parses it as kind `K` says, so a bad value
//! is an error at its own key and line, whichever deserializer (the checker's or figment's)
//! reads it.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer};

use super::duration::{parse_duration, DurationError};
use super::{AccessLevel, ClockBackend, DenyAction, Prefix, DEFAULT_NTP_PORT, LOG_LEVELS};
use crate::logging::LogFormat;

/// A configuration value that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a numeric socket address.
    #[error(
        "bad address \"{0}\": expected a numeric IP address with an optional port \
         (\"192.0.2.1:123\", \"[2001:db8::1]:123\"); host names are not supported"
    )]
    Address(String),
    /// Not an `ip:port` address.
    #[error("bad address \"{0}\" (expected ip:port, e.g. \"127.0.0.1:9975\")")]
    IpPort(String),
    /// Not an address prefix.
    #[error(
        "bad prefix \"{text}\": {why} (expected CIDR such as \"10.200.1.0/24\" or \"fd00:200::/48\")"
    )]
    Prefix {
        /// The text.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// Not a log filter.
    #[error(
        "bad log level \"{text}\": {why} (expected a level such as \"info\", or directives \
         such as \"info,strata_engine=debug\"; levels: {levels})",
        levels = LOG_LEVELS.join(", ")
    )]
    LogLevel {
        /// The text.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// Not a duration.
    #[error("bad duration \"{text}\": {source}")]
    Duration {
        /// The text.
        text: String,
        /// Why.
        source: DurationError,
    },
    /// A negative duration where only positive ones make sense.
    #[error("duration \"{0}\" must not be negative")]
    Negative(String),
    /// A name that is not one of the choices.
    #[error("unknown {what} \"{text}\" (expected {expected})")]
    Unknown {
        /// What kind of name.
        what: &'static str,
        /// The text.
        text: String,
        /// The choices.
        expected: &'static str,
    },
    /// A number outside its range.
    #[error("{value} is out of range ({min}..={max})")]
    Range {
        /// The number.
        value: i64,
        /// The least allowed.
        min: i64,
        /// The most allowed.
        max: i64,
    },
    /// A float that is NaN or infinite.
    #[error("{0} is not a finite number")]
    NotFinite(f64),
    /// An empty path.
    #[error("path must not be empty")]
    EmptyPath,
    /// Not a network device name.
    #[error("bad device name {0:?} (1..={MAX_DEVICE_NAME} bytes, no '/', ':' or spaces)")]
    Device(String),
    /// Not a namespace name.
    #[error("bad namespace name {0:?} (a name under /run/netns, no '/')")]
    Netns(String),
    /// Not a multicast group.
    #[error("{0} is not a multicast address")]
    NotMulticast(IpAddr),
    /// Not an IP address.
    #[error("\"{0}\" is not an IP address")]
    NotAnIp(String),
}

/// How a kind of value is read and parsed.
pub(crate) trait Kind {
    /// What the file holds.
    type From: DeserializeOwned;
    /// What it means.
    type Out;
    /// Parse it.
    fn parse(from: Self::From) -> Result<Self::Out, ValueError>;
}

/// A value of kind `K`, parsed as it is deserialized.
pub(crate) struct V<K: Kind>(pub(crate) K::Out);

impl<K: Kind> fmt::Debug for V<K>
where
    K::Out: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de, K: Kind> Deserialize<'de> for V<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let from = K::From::deserialize(deserializer)?;
        K::parse(from).map(V).map_err(de::Error::custom)
    }
}

/// An integer in `MIN..=MAX`, as `T`.
pub(crate) struct Int<T, const MIN: i64, const MAX: i64>(PhantomData<T>);

impl<T: TryFrom<i64>, const MIN: i64, const MAX: i64> Kind for Int<T, MIN, MAX> {
    type From = i64;
    type Out = T;
    fn parse(value: i64) -> Result<T, ValueError> {
        let range = ValueError::Range {
            value,
            min: MIN,
            max: MAX,
        };
        if (MIN..=MAX).contains(&value) {
            T::try_from(value).map_err(|_| range)
        } else {
            Err(range)
        }
    }
}

/// A poll exponent, 1/16 s to 36.4 h.
pub(crate) type Poll = Int<i8, -4, 17>;
/// A key id of the keys file.
pub(crate) type KeyId = Int<u32, 1, 65_535>;
const _: () = assert!(strata_engine::auth::MAX_KEY_ID == 65_535);

/// A duration string that must not be negative, in seconds.
pub(crate) struct Duration;

impl Kind for Duration {
    type From = String;
    type Out = f64;
    fn parse(text: String) -> Result<f64, ValueError> {
        match Offset::parse(text.clone())? {
            secs if secs < 0.0 => Err(ValueError::Negative(text)),
            secs => Ok(secs),
        }
    }
}

/// A duration string that may be negative, in seconds.
pub(crate) struct Offset;

impl Kind for Offset {
    type From = String;
    type Out = f64;
    fn parse(text: String) -> Result<f64, ValueError> {
        parse_duration(&text).map_err(|source| ValueError::Duration { text, source })
    }
}

/// A finite float.
pub(crate) struct Finite;

impl Kind for Finite {
    type From = f64;
    type Out = f64;
    fn parse(value: f64) -> Result<f64, ValueError> {
        let finite = value.is_finite();
        finite.then_some(value).ok_or(ValueError::NotFinite(value))
    }
}

/// A non-empty path.
pub(crate) struct FilePath;

impl Kind for FilePath {
    type From = String;
    type Out = PathBuf;
    fn parse(text: String) -> Result<PathBuf, ValueError> {
        let path = PathBuf::from(text);
        if path.as_os_str().is_empty() {
            return Err(ValueError::EmptyPath);
        }
        Ok(path)
    }
}

/// A numeric socket address; the port defaults to 123.
pub(crate) struct Address;

impl Kind for Address {
    type From = String;
    type Out = SocketAddr;
    fn parse(text: String) -> Result<SocketAddr, ValueError> {
        parse_address(&text)
    }
}

/// A numeric socket address; the port defaults to 123.
pub(crate) fn parse_address(text: &str) -> Result<SocketAddr, ValueError> {
    let trimmed = text.trim();
    if let Ok(addr) = trimmed.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(trimmed);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, DEFAULT_NTP_PORT)),
        Err(_) => Err(ValueError::Address(text.to_owned())),
    }
}

/// An `ip:port` address, port required.
pub(crate) struct IpPort;

impl Kind for IpPort {
    type From = String;
    type Out = SocketAddr;
    fn parse(text: String) -> Result<SocketAddr, ValueError> {
        text.trim().parse().map_err(|_| ValueError::IpPort(text))
    }
}

/// An IP address.
pub(crate) struct Ip;

impl Kind for Ip {
    type From = String;
    type Out = IpAddr;
    fn parse(text: String) -> Result<IpAddr, ValueError> {
        text.parse::<IpAddr>()
            .map_err(|_| ValueError::NotAnIp(text))
    }
}

/// A multicast group address.
pub(crate) struct Group;

impl Kind for Group {
    type From = String;
    type Out = IpAddr;
    fn parse(text: String) -> Result<IpAddr, ValueError> {
        match text.parse::<IpAddr>() {
            Ok(ip) if ip.is_multicast() => Ok(ip),
            Ok(ip) => Err(ValueError::NotMulticast(ip)),
            Err(_) => Err(ValueError::NotAnIp(text)),
        }
    }
}

/// Longest network device name (IFNAMSIZ - 1).
const MAX_DEVICE_NAME: usize = 15;

/// A network device (interface, VRF) name.
pub(crate) struct Device;

impl Kind for Device {
    type From = String;
    type Out = String;
    fn parse(name: String) -> Result<String, ValueError> {
        let fits = !name.is_empty() && name.len() <= MAX_DEVICE_NAME;
        let plain = !name.contains(|c: char| matches!(c, '/' | ':' | '\0') || c.is_whitespace());
        named_file(name, fits && plain, ValueError::Device)
    }
}

/// `name` when `ok` and it is a usable file name (not `.` or `..`), else `error(name)`.
fn named_file(
    name: String,
    ok: bool,
    error: fn(String) -> ValueError,
) -> Result<String, ValueError> {
    if ok && name != "." && name != ".." {
        Ok(name)
    } else {
        Err(error(name))
    }
}

/// A network namespace name (under `/run/netns`).
pub(crate) struct Netns;

impl Kind for Netns {
    type From = String;
    type Out = String;
    fn parse(name: String) -> Result<String, ValueError> {
        let ok = !name.is_empty() && !name.contains(['/', '\0']);
        named_file(name, ok, ValueError::Netns)
    }
}

/// A log filter: comma-separated directives, each a level name, a target, or `target=level`.
pub(crate) struct LogLevel;

impl Kind for LogLevel {
    type From = String;
    type Out = String;
    fn parse(text: String) -> Result<String, ValueError> {
        let why = if text.trim().is_empty() {
            Some("empty".to_owned())
        } else {
            text.split(',').map(str::trim).find_map(|directive| {
                if directive.is_empty() || directive.contains(char::is_whitespace) {
                    return Some("empty or blank directive".to_owned());
                }
                let (_, level) = directive.rsplit_once('=')?;
                let known = LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str());
                (!known).then(|| format!("unknown level `{level}`"))
            })
        };
        match why {
            None => Ok(text),
            Some(why) => Err(ValueError::LogLevel { text, why }),
        }
    }
}

/// A name from a fixed set of choices.
macro_rules! named {
    ($kind:ty, $what:literal, $expected:literal, $from_name:expr) => {
        impl Kind for $kind {
            type From = String;
            type Out = $kind;
            fn parse(text: String) -> Result<$kind, ValueError> {
                $from_name(text.as_str()).ok_or(ValueError::Unknown {
                    what: $what,
                    text,
                    expected: $expected,
                })
            }
        }
    };
}

named!(
    ClockBackend,
    "clock backend",
    "\"system\", \"observe\" or \"virtual\"",
    ClockBackend::from_name
);
named!(
    AccessLevel,
    "access level",
    "\"peer\", \"server\", \"synchronization\" or \"query\"",
    AccessLevel::from_name
);
named!(
    strata_engine::Calibrate,
    "calibrate policy",
    "\"required\" or \"best-effort\"",
    |name| match name {
        "required" => Some(strata_engine::Calibrate::Required),
        "best-effort" => Some(strata_engine::Calibrate::BestEffort),
        _ => None,
    }
);
named!(
    DenyAction,
    "deny action",
    "\"drop\" or \"kod\"",
    |name| match name {
        "drop" => Some(DenyAction::Drop),
        "kod" => Some(DenyAction::Kod),
        _ => None,
    }
);
named!(
    LogFormat,
    "log format",
    "one of: auto, human, json",
    LogFormat::from_name
);

/// An address prefix `ip/len` (`10.200.1.0/24`, `fd00:200::/48`); a bare address is a host
/// prefix. Host bits must be zero.
///
/// # Errors
/// [`ValueError::Prefix`], naming the text and what is wrong with it.
pub fn parse_prefix(text: &str) -> Result<Prefix, ValueError> {
    let bad = |why: String| {
        Err(ValueError::Prefix {
            text: text.to_owned(),
            why,
        })
    };
    let (ip_text, len_text) = match text.trim().split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (text.trim(), None),
    };
    let Ok(addr) = ip_text.parse::<IpAddr>() else {
        return bad("not a numeric IP address".to_owned());
    };
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len_text.map(str::parse::<u8>) {
        None => max,
        Some(Ok(len)) if len <= max => len,
        Some(_) => return bad(format!("the length must be 0..={max}")),
    };
    let network = match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    };
    if network != addr {
        return bad(format!("host bits are set (did you mean {network}/{len}?)"));
    }
    Ok(Prefix { addr, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_port_123() {
        assert_eq!(
            parse_address("192.0.2.1"),
            Ok("192.0.2.1:123".parse().unwrap())
        );
        assert_eq!(parse_address("::1"), Ok("[::1]:123".parse().unwrap()));
        assert_eq!(parse_address("[::1]"), Ok("[::1]:123".parse().unwrap()));
        assert_eq!(
            parse_address("[fd00:200::1]:4123"),
            Ok("[fd00:200::1]:4123".parse().unwrap())
        );
        assert!(parse_address("ntp.example.org:123").is_err());
        assert!(parse_address("10.0.0.1:99999").is_err());
        assert!(parse_address("").is_err());
    }

    #[test]
    fn integers_keep_to_their_range() {
        assert_eq!(Poll::parse(-4), Ok(-4));
        assert_eq!(Poll::parse(17), Ok(17));
        assert_eq!(
            Poll::parse(18).unwrap_err().to_string(),
            "18 is out of range (-4..=17)"
        );
        assert!(KeyId::parse(0).is_err());
    }

    #[test]
    fn log_format_names_are_the_documented_ones() {
        for name in LogFormat::NAMES {
            assert!(<LogFormat as Kind>::parse((*name).to_owned()).is_ok());
        }
    }

    #[test]
    fn prefixes_parse_and_match() {
        let p = parse_prefix("10.200.1.0/24").unwrap();
        assert_eq!(p.len, 24);
        assert!(p.contains("10.200.1.77".parse().unwrap()));
        assert!(!p.contains("10.200.2.1".parse().unwrap()));
        assert!(!p.contains("fd00:200::1".parse().unwrap()), "other family");
        let all = parse_prefix("0.0.0.0/0").unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6 = parse_prefix("fd00:200::/48").unwrap();
        assert!(v6.contains("fd00:200::5".parse().unwrap()));
        assert!(!v6.contains("fd00:201::5".parse().unwrap()));
        assert!(parse_prefix("::/0")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert_eq!(parse_prefix("10.200.1.9").unwrap().len, 32);
        assert_eq!(parse_prefix("fd00::1").unwrap().len, 128);
        for bad in [
            "10.200.1.1/24",
            "10.200.1.0/33",
            "fd00::/129",
            "x/8",
            "",
            "10.0.0.0/-1",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
        assert!(parse_prefix("10.200.1.1/24")
            .unwrap_err()
            .to_string()
            .contains("10.200.1.0/24"));
    }
}
