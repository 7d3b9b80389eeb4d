//! `cargo xtask`: strata's project automation (rust-analyzer style).
//!
//! One subcommand per task; every shell command runs through an `xshell`
//! [`Shell`] rooted at the workspace root. See `cargo xtask --help`.

mod bench;
mod demo;
mod dist;
mod flags;
mod fuzz;
mod ntp;
mod ntpload;
mod probe;
mod scenario;
mod sim;
mod tidy;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let flags = flags::Xtask::from_env_or_exit();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match flags.subcommand {
        flags::XtaskCmd::Tidy(_) => tidy_cmd(&project_root()),
        flags::XtaskCmd::Test(_) => test_cmd(&sh),
        flags::XtaskCmd::Scenario(cmd) => scenario::cli(
            &sh,
            &cmd.name,
            scenario::Options {
                fail: cmd.fail,
                keep: cmd.keep,
            },
        ),
        flags::XtaskCmd::Demo(_) => demo::cli(&sh),
        flags::XtaskCmd::Sim(cmd) => sim::cli(
            &sh,
            &sim::Options {
                case: cmd.case,
                seed: cmd.seed,
                seeds: cmd.seeds,
                hours: cmd.hours,
            },
        ),
        flags::XtaskCmd::CleanNetns(_) => scenario::clean_netns(),
        flags::XtaskCmd::Dist(_) => dist::cli(&sh).map(drop),
        flags::XtaskCmd::Fuzz(cmd) => fuzz::cli(
            &sh,
            &fuzz::Options {
                secs: cmd.time.unwrap_or(fuzz::DEFAULT_SECS),
                target: cmd.target,
            },
        ),
        flags::XtaskCmd::Probe(cmd) => {
            let addr = cmd
                .addr
                .parse()
                .with_context(|| format!("bad address {:?}", cmd.addr))?;
            let timeout = Duration::from_millis(cmd.timeout_ms.unwrap_or(2000));
            let sample = probe::probe_offset(addr, timeout)?;
            println!("{}", sample.to_line());
            Ok(())
        }
        flags::XtaskCmd::Bench(cmd) => match cmd.subcommand {
            flags::BenchCmd::Accuracy(a) => bench::accuracy::cli(
                &sh,
                &bench::accuracy::Options {
                    settings: bench::accuracy::Setting::parse_list(
                        a.setting.as_deref().unwrap_or("both"),
                    )?,
                    seconds: a.seconds.unwrap_or(bench::accuracy::DEFAULT_SECONDS),
                },
            ),
            flags::BenchCmd::Server(s) => bench::server::cli(
                &sh,
                &bench::server::Options {
                    quick: s.quick,
                    build: !s.no_build,
                    batch: s.batch.unwrap_or(bench::server::DEFAULT_BATCH),
                    servers: bench::server::Kind::parse_list(
                        s.servers
                            .as_deref()
                            .unwrap_or(bench::server::DEFAULT_SERVERS),
                    )?,
                    workers: s.workers.unwrap_or(1),
                    scaling: s.scaling,
                },
            ),
        },
        flags::XtaskCmd::Reflector(cmd) => {
            let cfg = bench::reflector::Config {
                addr: cmd
                    .addr
                    .parse()
                    .with_context(|| format!("bad address {:?}", cmd.addr))?,
                batch: cmd.batch.unwrap_or(bench::server::DEFAULT_BATCH),
                max_duration: Duration::from_secs(cmd.max_seconds.unwrap_or(60)),
                max_packets: cmd.max_packets.unwrap_or(100_000_000),
            };
            let answered = bench::reflector::run(&cfg)?;
            eprintln!("reflector: answered {answered} requests");
            Ok(())
        }
        flags::XtaskCmd::Relay(cmd) => relay_cmd(&cmd),
        flags::XtaskCmd::NtpLoad(cmd) => ntp_load_cmd(&cmd),
        flags::XtaskCmd::NtpResponder(cmd) => {
            let addr: std::net::SocketAddr = cmd
                .addr
                .parse()
                .with_context(|| format!("bad address {:?}", cmd.addr))?;
            let socket = std::net::UdpSocket::bind(addr).with_context(|| format!("bind {addr}"))?;
            let answered = probe::serve(
                &socket,
                probe::Shift::from_millis(cmd.offset_ms.unwrap_or(0)),
                cmd.max_requests.unwrap_or(16),
                Duration::from_secs(cmd.max_seconds.unwrap_or(60)),
            )?;
            eprintln!("ntp-responder: answered {answered} requests");
            Ok(())
        }
    }
}

/// The workspace root (the parent of `xtask/`).
fn project_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).to_path_buf()
}

/// The cargo target directory builds of this run go to.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                project_root().join(dir)
            }
        }
        None => project_root().join("target"),
    }
}

fn tidy_cmd(root: &Path) -> Result<()> {
    let violations = tidy::check_tree(root)?;
    for v in &violations {
        println!("{v}");
    }
    if !violations.is_empty() {
        bail!("tidy: {} violation(s)", violations.len());
    }
    println!("tidy: ok");
    Ok(())
}

/// `cargo xtask test`: every check CI runs, stopping at the first failure.
fn test_cmd(sh: &Shell) -> Result<()> {
    let step = |name: &str, result: Result<()>| -> Result<()> {
        match result {
            Ok(()) => {
                println!("xtask test: ok: {name}");
                Ok(())
            }
            Err(err) => {
                println!("xtask test: FAILED at step: {name}");
                Err(err.context(format!("step `{name}` failed")))
            }
        }
    };
    step(
        "cargo fmt --all -- --check",
        cmd!(sh, "cargo fmt --all -- --check")
            .run()
            .map_err(Into::into),
    )?;
    step(
        "cargo clippy --workspace --all-targets -- -D warnings",
        cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings")
            .run()
            .map_err(Into::into),
    )?;
    step("tidy", tidy_cmd(&project_root()))?;
    step(
        "cargo doc --workspace --no-deps (-D warnings)",
        cmd!(sh, "cargo doc --workspace --no-deps")
            .env("RUSTDOCFLAGS", "-D warnings")
            .run()
            .map_err(Into::into),
    )?;
    step(
        "cargo test --workspace",
        cmd!(sh, "cargo test --workspace").run().map_err(Into::into),
    )?;
    // Packages every publishable crate in dependency order and builds each
    // from its package, resolving our own unpublished crates from a local
    // overlay of the packages just made: nothing is uploaded, but the
    // crates.io index must be reachable for third-party dependencies.
    step(
        "cargo publish --workspace --dry-run",
        cmd!(sh, "cargo publish --workspace --dry-run --allow-dirty")
            .run()
            .map_err(Into::into),
    )?;
    if scenario::is_root()? {
        step(
            "scenario all",
            scenario::cli(sh, "all", scenario::Options::default()),
        )?;
    } else {
        println!("xtask test: skipped: scenario all (requires root for network namespaces)");
    }
    println!("xtask test: all steps passed");
    Ok(())
}

/// `xtask ntp-load`: runs one bounded load and prints its counts.
fn ntp_load_cmd(cmd: &flags::NtpLoad) -> Result<()> {
    let secs = |v: Option<f64>, default: f64| -> Result<Duration> {
        let v = v.unwrap_or(default);
        anyhow::ensure!(
            (0.0..=ntpload::MAX_SECONDS).contains(&v),
            "{v} s is out of range (0..={})",
            ntpload::MAX_SECONDS
        );
        Ok(Duration::from_secs_f64(v))
    };
    let kind = match cmd.kind.as_str() {
        "poll" => ntpload::Kind::Poll {
            interval: secs(cmd.interval, 2.0)?,
            jitter: secs(cmd.jitter, 1.0)?,
        },
        "flood" => ntpload::Kind::Flood {
            rate: cmd.rate.unwrap_or(10_000.0),
        },
        "once" => ntpload::Kind::Once {
            mode: cmd.mode.unwrap_or(3),
            timeout: Duration::from_millis(cmd.timeout_ms.unwrap_or(1000)),
        },
        other => bail!("unknown kind {other:?}: want poll, flood or once"),
    };
    let cfg = ntpload::Config {
        kind,
        target: cmd
            .target
            .parse()
            .with_context(|| format!("bad address {:?}", cmd.target))?,
        sources: ntpload::parse_sources(cmd.sources.as_deref().unwrap_or(""))?,
        duration: secs(cmd.seconds, 10.0)?,
        max_requests: cmd.max_requests.unwrap_or(200_000),
    };
    println!("{}", ntpload::run(&cfg)?.to_line());
    Ok(())
}

/// `xtask relay`: runs the impairment relay, then prints its statistics.
fn relay_cmd(cmd: &flags::Relay) -> Result<()> {
    let addr = |s: &str| -> Result<std::net::SocketAddr> {
        s.parse().with_context(|| format!("bad address {s:?}"))
    };
    let us = |v: Option<f64>| v.unwrap_or(0.0) * 1e-6;
    let cfg = bench::relay::Config {
        listen: addr(&cmd.listen)?,
        upstream: addr(&cmd.upstream)?,
        impairment: bench::relay::Impairment {
            delay_s: us(cmd.delay_us),
            jitter: bench::relay::Jitter::from_name(
                cmd.jitter.as_deref().unwrap_or("normal"),
                us(cmd.jitter_us),
            )?,
            asym_s: us(cmd.asym_us),
            loss: cmd.loss.unwrap_or(0.0),
        },
        seed: cmd.seed.unwrap_or(1),
        max_duration: Duration::from_secs(cmd.max_seconds.unwrap_or(60)),
        max_packets: cmd.max_packets.unwrap_or(100_000),
        stats_file: cmd.stats.as_ref().map(PathBuf::from),
    };
    let stats = bench::relay::run(&cfg)?;
    println!("{stats}");
    Ok(())
}
