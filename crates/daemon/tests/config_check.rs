//! Configuration loading and `check-config`: good and bad files, keys and lines, defaults and
//! `STRATA_*` environment overrides.
//!
//! Every test that calls `config::load` runs inside `figment::Jail`, which serialises access
//! to the process environment.

// figment::Jail closures must return figment's own (large) error type.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use strata_daemon::config::{self, ClockBackend, ConfigError, Diagnostic};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

/// `(line, key)` of each diagnostic.
fn where_(diagnostics: &[Diagnostic]) -> Vec<(usize, &str)> {
    diagnostics
        .iter()
        .map(|d| (d.line, d.key.as_str()))
        .collect()
}

fn invalid(result: Result<config::Config, ConfigError>) -> Vec<Diagnostic> {
    match result {
        Err(ConfigError::Invalid { diagnostics }) => diagnostics,
        other => panic!("expected an invalid configuration, got {other:?}"),
    }
}

#[test]
fn good_file_parses_to_the_expected_values() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        assert_eq!(config::check_file(&fixture("good.toml")).unwrap(), vec![]);
        let c = config::load(Some(&fixture("good.toml"))).expect("good.toml loads");
        assert_eq!(c.clock.backend, ClockBackend::Virtual);
        assert_eq!(
            c.clock.drift_file.as_deref(),
            Some(Path::new("/var/lib/strata/drift"))
        );
        assert!((c.clock.initial_offset - 0.5).abs() < 1e-12);
        assert!((c.clock.frequency_error_ppm - 50.0).abs() < 1e-12);
        assert!((c.discipline.step_threshold - 0.128).abs() < 1e-12);
        assert!((c.discipline.stepout - 900.0).abs() < 1e-12);
        assert_eq!(c.discipline.panic_threshold, Some(1000.0));
        assert_eq!(c.local_reference.map(|l| l.stratum), Some(1));
        assert_eq!(c.control.socket, PathBuf::from("/run/strata/control.sock"));
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.listen[0].address, addr("0.0.0.0:123"));
        assert_eq!(c.listen[0].instance, "default");
        assert_eq!(c.listen[1].address, addr("[::1]:11123"));
        assert_eq!(c.server.len(), 2);
        let s = &c.server[0];
        assert_eq!(s.address, addr("10.200.1.1:123"));
        assert_eq!((s.minpoll, s.maxpoll, s.iburst), (4, 10, true));
        assert_eq!(s.instance, "default");
        // No port → 123; defaults for the rest.
        let s = &c.server[1];
        assert_eq!(s.address, addr("[fd00:200::1]:123"));
        assert_eq!((s.minpoll, s.maxpoll, s.iburst), (6, 10, false));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        Ok(())
    });
}

#[test]
fn bad_file_reports_every_error_with_key_and_line() {
    let diagnostics = config::check_file(&fixture("bad.toml")).unwrap();
    assert_eq!(
        where_(&diagnostics),
        vec![
            (3, "clock.backend"),
            (5, "clock.frequency-error-ppm"),
            (8, "discipline.step-threshold"),
            (9, "discipline.stepout"),
            (11, "discipline.colour"),
            (14, "local-reference.stratum"),
            (17, "listen[0].address"),
            (18, "listen[0].instance"),
            (22, "server[0].minpoll"),
            (27, "server[1].maxpoll"),
            (28, "server[1].iburst"),
            (31, "rate-limit.interval"),
        ],
        "{diagnostics:#?}"
    );
    let message = |key: &str| {
        diagnostics
            .iter()
            .find(|d| d.key == key)
            .map(|d| d.message.clone())
            .unwrap_or_default()
    };
    assert!(message("clock.backend").contains("sundial"));
    assert!(message("clock.frequency-error-ppm").contains("expected a number, found a string"));
    assert!(message("discipline.step-threshold").contains("negative"));
    assert!(message("discipline.stepout").contains("unknown unit `fortnights`"));
    assert!(message("discipline.colour").contains("unknown key `colour`"));
    assert!(message("local-reference.stratum").contains("out of range"));
    assert!(message("listen[0].address").contains("host names are not supported"));
    assert_eq!(
        message("listen[0].instance"),
        "unknown instance \"vpna\" (declared: \"default\"; add an [[instance]] table)"
    );
    assert_eq!(
        message("server[0].minpoll"),
        "minpoll 12 is greater than maxpoll 8"
    );
    assert!(message("server[1].maxpoll").contains("out of range (-4..=17)"));
    assert!(message("server[1].iburst").contains("expected a boolean"));
    assert!(message("rate-limit.interval").contains("out of range (1ms..=1d)"));
    // Display: FILE:LINE: KEY: MESSAGE
    let first = diagnostics[0].to_string();
    assert!(
        first.ends_with("bad.toml:3: clock.backend: unknown clock backend \"sundial\" (expected \"system\", \"observe\" or \"virtual\")"),
        "{first}"
    );
}

#[test]
fn load_refuses_a_bad_file_with_all_diagnostics() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        let diagnostics = invalid(config::load(Some(&fixture("bad.toml"))));
        assert_eq!(diagnostics.len(), 12);
        let err = config::load(Some(&fixture("bad.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml:22: server[0].minpoll"), "{err}");
        Ok(())
    });
}

#[test]
fn unknown_key_is_reported_at_its_line() {
    let d = config::check_str("[clock]\nbackend = \"observe\"\n\n\nbogus = 1\n");
    assert_eq!(where_(&d), vec![(5, "clock.bogus")]);
    let d = config::check_str("[[server]]\naddress = \"127.0.0.1\"\nkey = 1\n");
    assert_eq!(where_(&d), vec![(3, "server[0].key")]);
    assert!(d[0].message.contains("needs an [auth] keys-file"));
    let d = config::check_str("[[broadcast-client]]\nkey = 1\n");
    assert_eq!(where_(&d), vec![(2, "broadcast-client[0].key")]);
    assert!(d[0].message.contains("needs an [auth] keys-file"));
    let d = config::check_str("[[listen]]\naddress = \"127.0.0.1\"\nsecret = 1\n");
    assert_eq!(where_(&d), vec![(3, "listen[0].secret")]);
    assert!(d[0]
        .message
        .contains("expected one of: address, instance, key"));
}

#[test]
fn wrong_types_name_the_expected_type() {
    let d = config::check_str("[[server]]\naddress = \"127.0.0.1\"\nminpoll = \"4\"\n");
    assert_eq!(where_(&d), vec![(3, "server[0].minpoll")]);
    assert_eq!(d[0].message, "expected an integer, found a string");
    let d = config::check_str("clock = 3\n");
    assert_eq!(where_(&d), vec![(1, "clock")]);
    let d = config::check_str("[control]\nsocket = 2024-01-01T00:00:00Z\n");
    assert_eq!(where_(&d), vec![(2, "control.socket")]);
    assert_eq!(d[0].message, "expected a string, found a datetime");
    let d = config::check_str("listen = [1]\n");
    assert_eq!(where_(&d), vec![(1, "listen[0]")]);
    // A mistyped required key is reported once, not again as missing.
    let d = config::check_str("[[server]]\naddress = 10\n");
    assert_eq!(where_(&d), vec![(2, "server[0].address")]);
}

#[test]
fn missing_required_keys_point_at_the_table() {
    let d = config::check_str(
        "[log]\nlevel = \"info\"\n\n[[server]]\naddress = \"127.0.0.1\"\n\n[[server]]\niburst = true\n",
    );
    assert_eq!(where_(&d), vec![(7, "server[1].address")]);
    assert_eq!(d[0].message, "missing required key");
    let d = config::check_str("\n[local-reference]\n");
    assert_eq!(where_(&d), vec![(2, "local-reference.stratum")]);
}

#[test]
fn syntax_errors_have_a_line() {
    let d = config::check_str("[clock]\nbackend = \"observe\"\nbackend = \"virtual\"\n");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].line, 3);
    assert_eq!(d[0].key, "");
    let d = config::check_str("[clock\n");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].line, 1);
}

#[test]
fn durations_addresses_and_polls() {
    let c = |text: &str| config::check_str(text);
    // Negative is fine for initial-offset only.
    assert_eq!(c("[clock]\ninitial-offset = \"-1.5s\"\n"), vec![]);
    assert_eq!(c("[discipline]\npanic-threshold = \"0s\"\n"), vec![]);
    assert_eq!(
        where_(&c("[discipline]\nstepout = \"15\"\n")),
        vec![(2, "discipline.stepout")]
    );
    // Port defaults to 123, IPv6 with and without brackets.
    assert_eq!(c("[[listen]]\naddress = \"::1\"\n"), vec![]);
    assert_eq!(c("[[listen]]\naddress = \"127.0.0.1\"\n"), vec![]);
    assert_eq!(
        where_(&c("[[listen]]\naddress = \"127.0.0.1:70000\"\n")),
        vec![(2, "listen[0].address")]
    );
    // minpoll above the default maxpoll is an error at minpoll; maxpoll below the default
    // minpoll at maxpoll.
    assert_eq!(
        where_(&c("[[server]]\naddress = \"127.0.0.1\"\nminpoll = 11\n")),
        vec![(3, "server[0].minpoll")]
    );
    assert_eq!(
        where_(&c("[[server]]\naddress = \"127.0.0.1\"\nmaxpoll = 5\n")),
        vec![(3, "server[0].maxpoll")]
    );
    assert_eq!(
        c("[[server]]\naddress = \"127.0.0.1\"\nminpoll = -4\nmaxpoll = 17\n"),
        vec![]
    );
    assert_eq!(
        where_(&c("[[server]]\naddress = \"127.0.0.1\"\nminpoll = -5\n")),
        vec![(3, "server[0].minpoll")]
    );
    assert_eq!(c("[log]\nlevel = \"info,strata_engine=debug\"\n"), vec![]);
    assert_eq!(c("[log]\nformat = \"json\"\n"), vec![]);
    assert_eq!(
        where_(&c("[log]\nlevel = \"info\"\nformat = \"xml\"\n")),
        vec![(3, "log.format")]
    );
    assert_eq!(
        where_(&c("[log]\nlevel = \"strata=loud\"\n")),
        vec![(2, "log.level")]
    );
}

#[test]
fn panic_threshold_zero_means_never() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("p.toml", "[discipline]\npanic-threshold = \"0s\"\n")?;
        let c = config::load(Some(Path::new("p.toml"))).expect("loads");
        assert_eq!(c.discipline.panic_threshold, None);
        // Absent tables get their defaults; no listeners unless configured.
        assert_eq!(c.clock.backend, ClockBackend::Observe);
        assert!(c.listen.is_empty() && c.server.is_empty());
        assert!(c.local_reference.is_none());
        Ok(())
    });
}

#[test]
fn an_empty_file_is_the_empty_configuration() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("empty.toml", "")?;
        let c = config::load(Some(Path::new("empty.toml"))).expect("an empty file loads");
        assert_eq!(c, config::Config::empty());
        assert!(c.listen.is_empty() && c.server.is_empty() && c.instance.is_empty());
        Ok(())
    });
}

#[test]
fn default_config_is_valid() {
    assert_eq!(config::check_str(config::DEFAULT_TOML), vec![]);
    let c = config::default_config();
    assert_eq!(c.clock.backend, ClockBackend::Observe);
    assert_eq!(c.listen.len(), 1);
    assert_eq!(c.listen[0].address, addr("127.0.0.1:11123"));
    assert_eq!(c.listen[0].instance, "default");
    assert!(c.server.is_empty());
    assert_eq!(
        c.control.socket,
        PathBuf::from(config::DEFAULT_CONTROL_SOCKET)
    );
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, strata_daemon::logging::LogFormat::Auto);
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        assert_eq!(config::load(None).expect("default loads"), c);
        Ok(())
    });
}

#[test]
fn environment_overrides_the_file_and_the_default() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("STRATA_CLOCK__BACKEND", "virtual");
        jail.set_env("STRATA_CLOCK__INITIAL_OFFSET", "-200ms");
        jail.set_env("STRATA_CLOCK__FREQUENCY_ERROR_PPM", "12");
        jail.set_env("STRATA_LOCAL_REFERENCE__STRATUM", "3");
        jail.set_env("STRATA_CONTROL__SOCKET", "/tmp/strata-test.sock");
        jail.set_env("STRATA_LOG__FORMAT", "json");
        let c = config::load(None).expect("default + env loads");
        assert_eq!(c.log.format, strata_daemon::logging::LogFormat::Json);
        assert_eq!(c.clock.backend, ClockBackend::Virtual);
        assert!((c.clock.initial_offset + 0.2).abs() < 1e-12);
        assert!((c.clock.frequency_error_ppm - 12.0).abs() < 1e-12);
        assert_eq!(c.local_reference.map(|l| l.stratum), Some(3));
        assert_eq!(c.control.socket, PathBuf::from("/tmp/strata-test.sock"));
        // The file's other values stay.
        assert_eq!(c.listen[0].address, addr("127.0.0.1:11123"));

        let c = config::load(Some(&fixture("good.toml"))).expect("file + env loads");
        assert_eq!(c.local_reference.map(|l| l.stratum), Some(3));
        assert_eq!(c.log.level, "debug");
        Ok(())
    });
}

#[test]
fn bad_environment_values_name_the_key() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("STRATA_CLOCK__BACKEND", "sundial");
        let d = invalid(config::load(None));
        assert_eq!(where_(&d), vec![(0, "clock.backend")]);
        assert_eq!(d[0].file, "<environment>");
        assert_eq!(
            d[0].to_string(),
            "<environment>: clock.backend: unknown clock backend \"sundial\" (expected \"system\", \"observe\" or \"virtual\")"
        );

        jail.clear_env();
        jail.set_env("STRATA_CLOCK__COLOUR", "blue");
        let d = invalid(config::load(None));
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("colour"), "{d:?}");

        jail.clear_env();
        jail.set_env("STRATA_LOCAL_REFERENCE__STRATUM", "high");
        let d = invalid(config::load(None));
        assert_eq!(where_(&d), vec![(0, "local-reference.stratum")]);
        Ok(())
    });
}

#[cfg(unix)]
#[test]
fn world_writable_file_loads_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("ww.toml", "[clock]\nbackend = \"observe\"\n")?;
        let path = jail.directory().join("ww.toml");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| e.to_string())?;
        let c = config::load(Some(&path)).expect("loads");
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("world-writable"), "{:?}", c.warnings);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| e.to_string())?;
        assert!(config::load(Some(&path))
            .expect("loads")
            .warnings
            .is_empty());
        Ok(())
    });
}

#[test]
fn missing_file_is_a_read_error() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        let err = config::load(Some(Path::new("/nonexistent/strata.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(config::check_file(Path::new("/nonexistent/strata.toml")).is_err());
        Ok(())
    });
}
