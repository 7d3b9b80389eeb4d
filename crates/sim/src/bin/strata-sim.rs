//! `strata-sim`: runs the simulation case matrix, prints a table and writes
//! one PNG per case.
//!
//! Usage: `strata-sim [--case NAME] [--seed N] [--seeds N] [--hours H]
//! [--out DIR]` (defaults: every case, seed 1, 4 hours, `target/sim`).
//! `--seeds N` runs seeds 1..=N and adds a table of medians and worst
//! figures; plots are of the first seed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

struct Args {
    case: Option<String>,
    seed: u64,
    seeds: Option<u64>,
    hours: f64,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        case: None,
        seed: 1,
        seeds: None,
        hours: 4.0,
        out: PathBuf::from("target/sim"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--case" => args.case = Some(value()?),
            "--seed" => args.seed = value()?.parse().context("--seed")?,
            "--seeds" => args.seeds = Some(value()?.parse().context("--seeds")?),
            "--hours" => args.hours = value()?.parse().context("--hours")?,
            "--out" => args.out = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("strata-sim [--case NAME] [--seed N] [--seeds N] [--hours H] [--out DIR]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if args.seeds.is_some_and(|n| !(1..=100).contains(&n)) {
        bail!("--seeds must be in 1..=100");
    }
    if !(args.hours.is_finite() && args.hours > 0.0 && args.hours <= 1000.0) {
        bail!("--hours must be in (0, 1000]");
    }
    Ok(args)
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let cases = match &args.case {
        Some(name) => vec![strata_sim::case(name).with_context(|| {
            let names: Vec<_> = strata_sim::cases().iter().map(|c| c.name).collect();
            format!("no case {name:?}; cases: {}", names.join(", "))
        })?],
        None => strata_sim::cases(),
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let mut results = Vec::new();
    let mut runs = Vec::new();
    let seeds: Vec<u64> = match args.seeds {
        Some(n) => (1..=n).collect(),
        None => vec![args.seed],
    };
    for case in &cases {
        let mut per_seed = Vec::new();
        for &seed in &seeds {
            per_seed.push(
                strata_sim::run_case(case, seed, args.hours * 3600.0)
                    .with_context(|| format!("case {} seed {seed}", case.name))?,
            );
        }
        let result = per_seed[0].clone();
        runs.push(per_seed);
        let png = args.out.join(format!("{}.png", case.name));
        strata_sim::plot::write_png(&result, &png)
            .with_context(|| format!("plot {}", png.display()))?;
        println!("{}: {}", case.name, case.description);
        print!("{}", strata_sim::table(std::slice::from_ref(&result)));
        println!("plot: {}\n", png.display());
        results.push(result);
    }
    println!(
        "seed {}, {} h simulated; all cases:\n{}",
        seeds[0],
        args.hours,
        strata_sim::table(&results)
    );
    if seeds.len() > 1 {
        println!(
            "seeds 1..={}, {} h simulated; median [worst]:\n{}",
            seeds.len(),
            args.hours,
            strata_sim::seed_table(&runs)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("strata-sim: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
