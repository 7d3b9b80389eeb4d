//! `stratactl`: the strata control client.
//!
//! `stratactl [--socket PATH | -c CONFIG] status [--instance NAME] [--json]`,
//! `sessions [--instance NAME] [--verbose] [--json]`, `check-config FILE`, `reload`, and
//! `trace [ADDRESS] [--instance NAME] [--json]`. The socket is `--socket`, else the
//! `[control] socket` of `-c CONFIG`, else the default `/run/strata/control.sock`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser as _;
use strata_daemon::cli::{StratactlArgs as Args, StratactlCommand as Command};
use strata_daemon::config;
use strata_daemon::control::{self, Reply, Request};

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stratactl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        Command::CheckConfig { file } => Ok(config::report_check(file, "stratactl")?),
        Command::Reload => match query(&args, Request::Reload)? {
            Reply::Done(message) => {
                println!("{message}");
                Ok(ExitCode::SUCCESS)
            }
            other => bail!("unexpected reply to reload: {other:?}"),
        },
        Command::Trace {
            address,
            instance,
            json,
        } => {
            let request = Request::Trace {
                address: address.clone(),
                instance: instance.clone(),
            };
            // The daemon bounds a trace to 30 s; leave it room to answer.
            let trace = match query_with(&args, request, Duration::from_secs(40))? {
                Reply::Trace(trace) => trace,
                other => bail!("unexpected reply to trace: {other:?}"),
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&trace)?);
            } else {
                print!("{}", strata_daemon::ctl::render_trace(&trace));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json, instance } => {
            let mut status = match query(&args, Request::Status)? {
                Reply::Status(status) => status,
                other => bail!("unexpected reply to status: {other:?}"),
            };
            if let Some(name) = instance {
                if !status.instances.contains_key(name) {
                    bail!(
                        "unknown instance {name:?} (the daemon has: {})",
                        known_instances(&status)
                    );
                }
                status.instances.retain(|n, _| n == name);
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", strata_daemon::ctl::render_status(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sessions {
            json,
            instance,
            verbose,
        } => {
            let mut sessions = match query(&args, Request::Sessions)? {
                Reply::Sessions(sessions) => sessions,
                other => bail!("unexpected reply to sessions: {other:?}"),
            };
            if let Some(name) = instance {
                sessions.retain(|s| &s.instance == name);
                if sessions.is_empty() {
                    // An empty list is fine for a known instance; a typo is an error.
                    let status = match query(&args, Request::Status)? {
                        Reply::Status(status) => status,
                        other => bail!("unexpected reply to status: {other:?}"),
                    };
                    if !status.instances.contains_key(name) {
                        bail!(
                            "unknown instance {name:?} (the daemon has: {})",
                            known_instances(&status)
                        );
                    }
                }
            }
            if !*verbose {
                // The plain listing keeps the plain fields.
                for s in &mut sessions {
                    s.detail = None;
                }
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&sessions)?);
            } else if *verbose {
                print!("{}", strata_daemon::ctl::render_sessions_verbose(&sessions));
            } else {
                print!("{}", strata_daemon::ctl::render_sessions(&sessions));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The daemon's instance names, for an error message.
fn known_instances(status: &control::Status) -> String {
    status
        .instances
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The socket to talk to: `--socket`, else `-c CONFIG`'s `[control] socket`, else the default.
fn socket_path(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(socket) = &args.socket {
        return Ok(socket.clone());
    }
    if let Some(file) = &args.config {
        let config = config::load(Some(file))
            .with_context(|| format!("reading the control socket from {}", file.display()))?;
        return Ok(config.control.socket);
    }
    Ok(PathBuf::from(config::DEFAULT_CONTROL_SOCKET))
}

/// Send one request; a daemon-side error becomes an error here.
fn query(args: &Args, request: Request) -> anyhow::Result<Reply> {
    query_with(args, request, control::DEFAULT_TIMEOUT)
}

/// [`query`] with a longer wait for the reply.
fn query_with(args: &Args, request: Request, timeout: Duration) -> anyhow::Result<Reply> {
    let socket = socket_path(args)?;
    let reply = control::request(&socket, &request, timeout)
        .with_context(|| format!("talking to stratad at {}", socket.display()))?;
    if let Reply::Error(message) = reply {
        bail!("stratad refused the request: {message}");
    }
    Ok(reply)
}
