//! `cargo xtask fuzz`: run the cargo-fuzz targets in `fuzz/` for a fixed
//! time each and report executions and findings.
//!
//! The targets build with `cargo fuzz` on a stable toolchain through
//! `RUSTC_BOOTSTRAP=1` (cargo-fuzz needs a few nightly flags). They run
//! without a sanitizer: the fuzzed crates forbid `unsafe`, so what a fuzzer
//! finds there is a panic, and uninstrumented runs are about twice as
//! fast. New inputs go to `<target dir>/fuzz/corpus/TARGET`; the seed
//! corpora in `fuzz/corpus/TARGET` are only read. A finding is written to
//! `fuzz/artifacts/TARGET/` and reported with its path; reproduce it with
//! `cargo fuzz run -s none TARGET PATH` (with `RUSTC_BOOTSTRAP=1` on stable).
//!
//! Not part of `cargo xtask test`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The fuzz targets, in the order they run.
pub(crate) const TARGETS: [&str; 6] = [
    "packet_parse",
    "mac_verify",
    "extension_fields",
    "config_parse",
    "control_request",
    "mode6_parse",
];

/// Seconds per target when `--time` is not given.
pub(crate) const DEFAULT_SECS: u64 = 60;

/// What `cargo xtask fuzz` was asked to do.
pub(crate) struct Options {
    /// Seconds per target.
    pub(crate) secs: u64,
    /// Only this target, else all of [`TARGETS`].
    pub(crate) target: Option<String>,
}

/// One target's run.
struct Outcome {
    target: &'static str,
    execs: Option<u64>,
    execs_per_sec: Option<u64>,
    corpus: Option<u64>,
    findings: Vec<String>,
    failed: bool,
}

/// Runs the selected targets one after the other; fails if any finds
/// something or does not run.
pub(crate) fn cli(sh: &Shell, opts: &Options) -> Result<()> {
    let targets: Vec<&'static str> = match &opts.target {
        None => TARGETS.to_vec(),
        Some(name) => match TARGETS.iter().find(|t| **t == name.as_str()) {
            Some(t) => vec![*t],
            None => bail!(
                "unknown fuzz target {name:?}; the targets are: {}",
                TARGETS.join(", ")
            ),
        },
    };
    if opts.secs == 0 {
        bail!("--time must be at least 1 second");
    }
    check_cargo_fuzz(sh)?;
    let root = crate::project_root();
    let fuzz_target_dir = crate::target_dir().join("fuzz");
    let mut outcomes = Vec::new();
    for target in targets {
        // `cargo fuzz run` builds the target itself (a separate `cargo fuzz
        // build` uses another debuginfo setting and would build twice);
        // the first target builds the dependencies for all.
        println!(
            "xtask fuzz: building and running {target} for {} s",
            opts.secs
        );
        outcomes.push(run_target(sh, &root, &fuzz_target_dir, target, opts.secs)?);
    }

    println!();
    println!(
        "{:<18} {:>14} {:>10} {:>8}  findings",
        "target", "execs", "execs/s", "corpus"
    );
    let show = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    for o in &outcomes {
        let findings = if o.findings.is_empty() {
            if o.failed {
                "none recorded, but the run failed (see its output above)".to_owned()
            } else {
                "none".to_owned()
            }
        } else {
            o.findings.join(", ")
        };
        println!(
            "{:<18} {:>14} {:>10} {:>8}  {findings}",
            o.target,
            show(o.execs),
            show(o.execs_per_sec),
            show(o.corpus)
        );
    }
    let bad: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failed || !o.findings.is_empty())
        .map(|o| o.target)
        .collect();
    if !bad.is_empty() {
        bail!("fuzzing found problems in: {}", bad.join(", "));
    }
    println!("xtask fuzz: no findings");
    Ok(())
}

/// Fails with install instructions unless `cargo fuzz` runs.
fn check_cargo_fuzz(sh: &Shell) -> Result<()> {
    let found = cmd!(sh, "cargo fuzz --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if !found {
        bail!(
            "cargo-fuzz is not installed (`cargo fuzz` does not run).\n\
             Install it with:  cargo install cargo-fuzz\n\
             A stable toolchain is enough: xtask builds the targets with RUSTC_BOOTSTRAP=1."
        );
    }
    Ok(())
}

fn run_target(
    sh: &Shell,
    root: &Path,
    fuzz_target_dir: &Path,
    target: &'static str,
    secs: u64,
) -> Result<Outcome> {
    let work = fuzz_target_dir.join("corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let seeds = root.join("fuzz").join("corpus").join(target);
    let target_dir = fuzz_target_dir.display().to_string();
    let max_time = format!("-max_total_time={secs}");
    let output = cmd!(
        sh,
        "cargo fuzz run -s none --target-dir {target_dir} {target} {work} {seeds}
            -- {max_time} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1"
    )
    .env("RUSTC_BOOTSTRAP", "1")
    .ignore_status()
    .output()
    .with_context(|| format!("running cargo fuzz run {target}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let stat = |name: &str| -> Option<u64> {
        log.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_start_matches(':').trim().parse().ok())
    };
    let findings: Vec<String> = log
        .lines()
        .filter_map(|l| l.split_once("Test unit written to "))
        .map(|(_, path)| artifact_path(root, path.trim()))
        .collect();
    let failed = !output.status.success();
    if failed {
        // Show the end of the log: the panic message and the reproducer.
        let lines: Vec<&str> = log.lines().collect();
        for line in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("  {line}");
        }
    }
    Ok(Outcome {
        target,
        execs: stat("stat::number_of_executed_units"),
        execs_per_sec: stat("stat::average_exec_per_sec"),
        corpus: log
            .lines()
            .rev()
            .find_map(|l| l.split_once(" corp: "))
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|n| n.trim().parse().ok()),
        findings,
        failed,
    })
}

/// A libFuzzer artifact path (relative to `fuzz/`) as a path from the
/// workspace root.
fn artifact_path(root: &Path, path: &str) -> String {
    let p = PathBuf::from(path);
    let full = if p.is_absolute() {
        p
    } else {
        root.join("fuzz").join(p)
    };
    full.strip_prefix(root)
        .map_or_else(|_| full.display().to_string(), |p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_are_relative_to_the_root() {
        let root = Path::new("/r");
        assert_eq!(
            artifact_path(root, "./artifacts/mac_verify/crash-1"),
            "fuzz/./artifacts/mac_verify/crash-1"
        );
        assert_eq!(
            artifact_path(root, "/r/fuzz/artifacts/x"),
            "fuzz/artifacts/x"
        );
        assert_eq!(artifact_path(root, "/elsewhere/x"), "/elsewhere/x");
    }

    #[test]
    fn targets_match_the_fuzz_manifest() {
        let manifest = std::fs::read_to_string(crate::project_root().join("fuzz/Cargo.toml"))
            .expect("fuzz/Cargo.toml");
        for t in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{t}\"")),
                "{t} missing from fuzz/Cargo.toml"
            );
        }
    }
}
