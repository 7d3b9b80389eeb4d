//! `stratad`: the strata NTP daemon.
//!
//! `stratad [-c FILE]` runs the daemon (the embedded default config when no
//! file is given); `stratad check-config FILE` validates a file and prints
//! every error with its key and line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use strata_daemon::config;

#[derive(Parser)]
#[command(name = "stratad", version, about = "strata NTP daemon")]
struct Args {
    /// Configuration file (TOML). Without it, the embedded default config.
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and report every error with its key and line.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stratad: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(Command::CheckConfig { file }) = args.command {
        return check(&file);
    }
    let config = config::load(args.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    strata_daemon::logging::init(&config.log.level);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(strata_daemon::runtime::run(config, args.config.clone()))?;
    Ok(ExitCode::SUCCESS)
}

fn check(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let ok = config::report_check(file, "stratad")
        .with_context(|| format!("reading {}", file.display()))?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
