//! `[clock] max-distance`: the root distance past which a system clock
//! reports itself unsynchronised.

// figment::Jail closures must return figment's own (large) error type.
#![allow(clippy::result_large_err)]

use strata_daemon::config;

#[test]
fn max_distance_parses_defaults_and_rejects_bad_values() {
    assert!(
        config::check_str("[clock]\nbackend = \"system\"\nmax-distance = \"5.5ms\"\n").is_empty()
    );
    let d = config::check_str("[clock]\nmax-distance = \"-1s\"\n");
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].line, d[0].key.as_str()), (2, "clock.max-distance"));
    let d = config::check_str("[clock]\n\nmax-distance = \"far\"\n");
    assert_eq!((d[0].line, d[0].key.as_str()), (3, "clock.max-distance"));
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("a.toml", "[clock]\nmax-distance = \"5.5ms\"\n")?;
        let c = config::load(Some(std::path::Path::new("a.toml"))).expect("loads");
        assert!((c.clock.max_distance - 0.0055).abs() < 1e-12);
        jail.create_file("b.toml", "[clock]\nbackend = \"observe\"\n")?;
        let c = config::load(Some(std::path::Path::new("b.toml"))).expect("loads");
        assert!((c.clock.max_distance - 1.5).abs() < 1e-12);
        Ok(())
    });
}
