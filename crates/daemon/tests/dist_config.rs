//! The sample configuration shipped in `dist/strata.toml` (installed as
//! `/etc/strata/strata.toml`): valid as shipped, valid with every example enabled, and covering
//! every key the configuration knows.

// figment::Jail closures must return figment's own (large) error type.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_daemon::config::{self, ClockBackend, InstancePlacement};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/strata.toml")
}

/// The sample with every commented-out setting enabled: `#key = …` and `#[table]` lose
/// their `#`; explanations (`# text`) stay comments.
fn all_enabled() -> String {
    let text = std::fs::read_to_string(sample()).expect("dist/strata.toml");
    text.lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c == '[' || c.is_ascii_lowercase()) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn stratad_check_config_accepts_the_sample() {
    let out = Command::new(env!("CARGO_BIN_EXE_stratad"))
        .arg("check-config")
        .arg(sample())
        .output()
        .expect("run stratad");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.trim_end().ends_with(": ok"), "{stdout}");
}

#[test]
fn the_shipped_settings_are_a_safe_start() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        let c = config::load(Some(&sample())).expect("the sample loads");
        assert_eq!(c.clock.backend, ClockBackend::System);
        assert_eq!(
            c.clock.drift_file.as_deref(),
            Some(Path::new("/var/lib/strata/drift"))
        );
        assert_eq!(c.control.socket, Path::new(config::DEFAULT_CONTROL_SOCKET));
        // Serves only the host itself until the admin opens it up.
        assert!(!c.listen.is_empty());
        assert!(c.listen.iter().all(|l| l.address.ip().is_loopback()));
        assert_eq!(c.listen.iter().map(|l| l.address.port()).max(), Some(123));
        assert!(c.server.is_empty() && c.peer.is_empty() && c.local_reference.is_none());
        Ok(())
    });
}

#[test]
fn every_example_is_valid_when_enabled() {
    let text = all_enabled();
    let diagnostics = config::check_str(&text);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}\n{text}");
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("all.toml", &text)?;
        let c = config::load(Some(Path::new("all.toml"))).expect("all examples load");
        assert_eq!(c.server.len(), 3);
        assert_eq!(c.peer.len(), 1);
        assert_eq!(c.multicast_server.len(), 2);
        assert_eq!(c.broadcast_server.len(), 1);
        assert_eq!(c.multicast_client.len(), 1);
        assert_eq!(c.broadcast_client.len(), 1);
        assert_eq!(c.local_reference.map(|l| l.stratum), Some(10));
        assert_eq!(c.access.len(), 3);
        let placements: Vec<_> = c.instance.iter().map(|i| &i.placement).collect();
        assert!(matches!(
            placements[..],
            [InstancePlacement::Netns(_), InstancePlacement::Device(_)]
        ));
        assert!(c.multicast_server[1].group.ip().is_ipv6());
        Ok(())
    });
}

/// Keys of the schema ([`config::schema_keys`]) the sample leaves out, with why: enabling them needs files or choices the sample
/// cannot make for the admin. Every other key of the schema must be shown.
const NOT_IN_SAMPLE: &[&str] = &[
    "auth.",          // a keys file the admin creates (docs/operations.md shows one)
    ".key",           // needs [auth]
    "trusted-keys",   // needs [auth]
    "rate-limit.",    // off unless configured (docs/operations.md)
    "access-policy.", // off unless configured (docs/operations.md)
    "metrics.",       // off unless configured (docs/operations.md)
];

#[test]
fn the_sample_shows_every_key() {
    let value: toml::Table = all_enabled().parse().expect("TOML");
    let mut present = Vec::new();
    for (table, v) in &value {
        let tables: Vec<&toml::Table> = match v {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(items) => items.iter().filter_map(toml::Value::as_table).collect(),
            _ => continue,
        };
        for t in tables {
            for key in t.keys() {
                present.push(format!("{table}.{key}"));
            }
        }
    }
    let missing: Vec<String> = config::schema_keys()
        .into_iter()
        .filter(|k| !NOT_IN_SAMPLE.iter().any(|n| k.contains(n)))
        // A key several tables share (`instance`, `port`, …) needs showing once.
        .filter(|k| {
            let leaf = k.rsplit('.').next().unwrap_or(k);
            !present.iter().any(|p| p.rsplit('.').next() == Some(leaf))
        })
        .collect();
    assert!(missing.is_empty(), "dist/strata.toml lacks {missing:?}");
}
