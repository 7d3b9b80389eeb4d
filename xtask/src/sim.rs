//! `cargo xtask sim`: runs the simulation case matrix (crate `strata-sim`)
//! in release mode, prints a table per case and writes one PNG per case to
//! `target/sim/CASE.png`; `--seeds N` adds a table of medians and worst
//! figures over seeds 1..=N.

use anyhow::Result;
use xshell::{cmd, Shell};

/// Options of `cargo xtask sim`.
pub struct Options {
    /// Run only this case.
    pub case: Option<String>,
    /// Simulation seed (default 1).
    pub seed: Option<u64>,
    /// Run seeds 1..=N and add a median/worst table.
    pub seeds: Option<u64>,
    /// Simulated hours per case (default 4).
    pub hours: Option<f64>,
}

/// Builds and runs `strata-sim` with `opts`.
pub fn cli(sh: &Shell, opts: &Options) -> Result<()> {
    let out = crate::project_root().join("target").join("sim");
    let mut args = vec!["--out".to_owned(), out.display().to_string()];
    if let Some(case) = &opts.case {
        args.extend(["--case".to_owned(), case.clone()]);
    }
    if let Some(seed) = opts.seed {
        args.extend(["--seed".to_owned(), seed.to_string()]);
    }
    if let Some(seeds) = opts.seeds {
        args.extend(["--seeds".to_owned(), seeds.to_string()]);
    }
    if let Some(hours) = opts.hours {
        args.extend(["--hours".to_owned(), hours.to_string()]);
    }
    cmd!(
        sh,
        "cargo run --release -q -p strata-sim --bin strata-sim -- {args...}"
    )
    .run()?;
    Ok(())
}
