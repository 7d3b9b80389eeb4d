//! `stratad`: the strata NTP daemon.
//!
//! `stratad [-c FILE] [--log-format auto|human|json]` runs the daemon (the
//! embedded default config when no file is given); `stratad check-config
//! FILE` validates a file and prints every error with its key and line.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use strata_daemon::cli::{StratadArgs as Args, StratadCommand as Command};
use strata_daemon::config;

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
    match &args.command {
        Some(Command::CheckConfig { file }) => return Ok(config::report_check(file, "stratad")?),
        Some(Command::GenerateMan { dir }) => {
            for path in strata_daemon::cli::write_man_pages(dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?
            {
                println!("{}", path.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let config = config::load(args.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    strata_daemon::logging::init(
        &config.log.level,
        args.log_format.unwrap_or(config.log.format),
    );
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
