//! `strata-sim`: runs the simulation case matrix, prints a table and writes
//! one PNG per case.
//!
//! Usage: `strata-sim [--case NAME] [--seed N] [--hours H] [--out DIR]`
//! (defaults: every case, seed 1, 4 hours, `target/sim`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

struct Args {
    case: Option<String>,
    seed: u64,
    hours: f64,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        case: None,
        seed: 1,
        hours: 4.0,
        out: PathBuf::from("target/sim"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--case" => args.case = Some(value()?),
            "--seed" => args.seed = value()?.parse().context("--seed")?,
            "--hours" => args.hours = value()?.parse().context("--hours")?,
            "--out" => args.out = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("strata-sim [--case NAME] [--seed N] [--hours H] [--out DIR]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
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
    for case in &cases {
        let result = strata_sim::run_case(case, args.seed, args.hours * 3600.0)
            .with_context(|| format!("case {}", case.name))?;
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
        args.seed,
        args.hours,
        strata_sim::table(&results)
    );
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
