//! `cargo xtask dist`: the Debian package of strata.
//!
//! Steps: build `stratad` and `stratactl` in release; render their man pages from the clap
//! definitions (`stratad generate-man`, hidden) into `<target>/release/man` and gzip them;
//! check the unit with `systemd-analyze verify` when it is installed; run
//! `cargo deb --no-build` with the `[package.metadata.deb]` of `crates/daemon/Cargo.toml`;
//! then list the package with `dpkg-deb -I`/`-c` and fail if an expected file is missing.
//! Needs `cargo-deb` (`cargo install cargo-deb`). The package is only built, never installed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// Paths the package must hold (as `dpkg-deb -c` prints them, without the leading `.`).
pub const EXPECTED: &[&str] = &[
    "/usr/sbin/stratad",
    "/usr/bin/stratactl",
    "/etc/strata/strata.toml",
    "/usr/lib/systemd/system/strata.service",
    "/usr/share/man/man8/stratad.8",
    "/usr/share/man/man1/stratactl.1",
    "/usr/share/doc/strata/operations.md",
    "/usr/share/doc/strata/examples/strata-netns.conf",
    "/usr/lib/systemd/ntp-units.d/80-strata.list",
];

/// Builds the package and returns its path.
pub fn cli(sh: &Shell) -> Result<PathBuf> {
    if cmd!(sh, "cargo deb --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        bail!("cargo-deb is not installed: run `cargo install cargo-deb` first");
    }
    let release = crate::target_dir().join("release");
    cmd!(sh, "cargo build --release -p strata-daemon --bins").run()?;

    // Man pages: one per binary and subcommand, gzipped as Debian wants them; stale pages
    // of a removed subcommand must not be packaged.
    let man = release.join("man");
    if sh.path_exists(&man) {
        sh.remove_path(&man)?;
    }
    let stratad = release.join("stratad");
    let pages = cmd!(sh, "{stratad} generate-man {man}").read()?;
    let pages: Vec<&str> = pages.lines().collect();
    cmd!(sh, "gzip -9nf {pages...}").run()?;

    verify_unit(sh, &crate::project_root().join("dist"))?;

    let out_dir = crate::target_dir().join("debian");
    sh.create_dir(&out_dir)?;
    let deb = cmd!(
        sh,
        "cargo deb -p strata-daemon --no-build --strip --output {out_dir}"
    )
    .read()?;
    let deb = PathBuf::from(deb.lines().last().unwrap_or_default().trim());
    if !deb.is_file() {
        bail!("cargo deb did not report a package file (got {:?})", deb);
    }

    let info = cmd!(sh, "dpkg-deb -I {deb}").read()?;
    let contents = cmd!(sh, "dpkg-deb -c {deb}").read()?;
    println!("{info}\n{contents}");
    let missing = missing_paths(&contents);
    if !missing.is_empty() {
        bail!("{} lacks {missing:?}", deb.display());
    }
    let size = std::fs::metadata(&deb)?.len();
    println!("dist: {} ({} KiB)", deb.display(), size.div_ceil(1024));
    Ok(deb)
}

/// `dpkg-deb -c` lines end in `./PATH` (or `./PATH -> TARGET`); the expected paths absent
/// from `listing`. A man page counts when present gzipped.
fn missing_paths(listing: &str) -> Vec<&'static str> {
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(|p| p.strip_prefix('.').unwrap_or(p))
        .collect();
    EXPECTED
        .iter()
        .copied()
        .filter(|want| {
            !paths
                .iter()
                .any(|p| p == want || p.strip_suffix(".gz") == Some(want))
        })
        .collect()
}

/// `systemd-analyze verify` of the unit, with and without the netns drop-in, inside a
/// scratch root that holds stand-ins for the binaries it names. Skipped (with a note) when
/// `systemd-analyze` is not installed; any complaint fails.
fn verify_unit(sh: &Shell, dist: &Path) -> Result<()> {
    if cmd!(sh, "systemd-analyze --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        println!("dist: systemd-analyze not installed; unit not verified");
        return Ok(());
    }
    let root = sh.create_temp_dir()?;
    let root = root.path();
    let units = root.join("etc/systemd/system");
    sh.create_dir(units.join("strata.service.d"))?;
    sh.copy_file(dist.join("strata.service"), &units)?;
    for exe in ["usr/sbin/stratad", "bin/kill"] {
        let path = root.join(exe);
        sh.write_file(&path, "#!/bin/sh\n")?;
        cmd!(sh, "chmod 755 {path}").run()?;
    }
    // The targets the unit orders itself against.
    let system_units = Path::new("/usr/lib/systemd/system");
    if system_units.is_dir() {
        let dest = root.join("usr/lib/systemd");
        sh.create_dir(&dest)?;
        cmd!(sh, "cp -a {system_units} {dest}").run()?;
    }
    for dropin in [None, Some("strata-netns.conf")] {
        if let Some(name) = dropin {
            sh.copy_file(dist.join(name), units.join("strata.service.d/netns.conf"))?;
        }
        let _dir = sh.push_dir(&units);
        let out = cmd!(
            sh,
            "systemd-analyze verify --man=no --root={root} strata.service"
        )
        .ignore_status()
        .output()
        .context("running systemd-analyze verify")?;
        let complaints = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if !out.status.success() || !complaints.is_empty() {
            bail!("systemd-analyze verify strata.service (drop-in: {dropin:?}): {complaints}");
        }
        println!("dist: systemd-analyze verify strata.service ok (drop-in: {dropin:?})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_is_checked_for_every_expected_path() {
        let mut listing: String = EXPECTED
            .iter()
            .map(|p| format!("-rw-r--r-- 0/0 1234 2026-01-01 00:00 .{p}\n"))
            .collect();
        listing = listing.replace("stratad.8", "stratad.8.gz");
        assert!(missing_paths(&listing).is_empty(), "{listing}");
        let without = listing.replace("./usr/bin/stratactl\n", "./usr/bin/other\n");
        assert_eq!(missing_paths(&without), ["/usr/bin/stratactl"]);
        assert_eq!(missing_paths("").len(), EXPECTED.len());
    }
}
