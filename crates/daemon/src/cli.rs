//! The command lines of `stratad` and `stratactl` (clap definitions) and their man pages.
//!
//! The binaries parse [`StratadArgs`] and [`StratactlArgs`]; keeping the definitions in the
//! library lets [`write_man_pages`] render `stratad(8)` and `stratactl(1)` from the very same
//! definitions with `clap_mangen`, so the manual never drifts from `--help`.

use std::io;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};

/// `stratad`: the daemon's command line.
#[derive(Debug, Parser)]
#[command(
    name = "stratad",
    version,
    about = "strata NTP daemon",
    long_about = "strata NTP daemon.\n\n\
        Runs the NTPv4 client, server, symmetric and broadcast/multicast modes configured in \
        FILE (the embedded default configuration when no file is given: observe-only clock, \
        loopback port 11123). SIGHUP re-reads the configuration; SIGTERM stops the daemon. \
        Under systemd (Type=notify) it reports READY, STATUS and STOPPING on $NOTIFY_SOCKET.",
    after_help = "Files: /etc/strata/strata.toml (configuration), /var/lib/strata/drift \
        (frequency estimate), /run/strata/control.sock (stratactl socket)."
)]
pub struct StratadArgs {
    /// Configuration file (TOML). Without it, the embedded default config.
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How log lines are written to stderr (overrides `[log] format`): `auto` is
    /// human-readable on a terminal and JSON lines otherwise.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<crate::logging::LogFormat>,
    /// A subcommand; none runs the daemon.
    #[command(subcommand)]
    pub command: Option<StratadCommand>,
}

/// `stratad`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum StratadCommand {
    /// Validate a configuration file and report every error with its key and line.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Write the man pages stratad.8 and stratactl.1 into DIR (packaging helper).
    #[command(hide = true)]
    GenerateMan {
        /// The directory to write to (created when missing).
        dir: PathBuf,
    },
}

/// `stratactl`: the control client's command line.
#[derive(Debug, Parser)]
#[command(
    name = "stratactl",
    version,
    about = "Query and check the strata NTP daemon",
    long_about = "Query and check the strata NTP daemon.\n\n\
        Talks JSON to stratad over its unix control socket: `--socket PATH`, else the \
        `[control] socket` of `-c CONFIG`, else /run/strata/control.sock. The socket is \
        mode 0660: run stratactl as root or as a member of the daemon's group."
)]
pub struct StratactlArgs {
    /// The daemon's control socket.
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "config")]
    pub socket: Option<PathBuf>,
    /// Read the control socket path from this configuration file.
    #[arg(short = 'c', long = "config", global = true, value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: StratactlCommand,
}

/// `stratactl`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum StratactlCommand {
    /// Show the daemon's system status: synchronisation, stratum, reference and its
    /// instance, leap, precision, root delay and dispersion, offset, jitter, frequency, poll,
    /// time since the last update, and each instance's packet counters.
    Status {
        /// Print the status object as JSON.
        #[arg(long)]
        json: bool,
        /// Only this instance's counters (`default`, or an `[[instance]]` name).
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
    },
    /// Show every association: one row each with instance, address, mode, state, stratum,
    /// poll, reach (octal), offset, delay, dispersion, jitter, refid and time since the last
    /// packet.
    Sessions {
        /// Print the sessions array as JSON.
        #[arg(long)]
        json: bool,
        /// Only the sessions of this instance (`default`, or an `[[instance]]` name).
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
        /// One block per association adding its clock filter register (offset, delay,
        /// dispersion, age of up to 8 samples), its part in source selection, its
        /// authentication (key id, authenticated or not), the remote's leap, root delay,
        /// root dispersion and poll, the next poll, a kiss-o'-death received, and the
        /// calibration of symmetric active and broadcast/multicast clients. With `--json`,
        /// these fields are added to each session object.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Validate a configuration file and report every error with its key and line.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Make the daemon re-read its configuration file (as SIGHUP does);
    /// unchanged associations keep their state, a bad file is rejected.
    Reload,
    /// Follow the chain of reference IDs up to stratum 1 with plain mode-3 queries, sent by
    /// the daemon through the instance's own sockets (at most 16 hops, 2 s per query, 30 s
    /// in all; an IPv6 reference ID is a hash and ends the trace).
    Trace {
        /// The first server, `ip` or `ip:port` (default: the system peer).
        #[arg(value_name = "ADDRESS")]
        address: Option<String>,
        /// The instance whose sockets send the queries (default: the system peer's, else
        /// `default`).
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
        /// Print the trace object as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// One man page: its file name (`stratad.8`) and its roff text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManPage {
    /// The file name, `NAME.SECTION`.
    pub file_name: String,
    /// The page in roff.
    pub roff: Vec<u8>,
}

fn render(cmd: clap::Command, section: &str) -> io::Result<ManPage> {
    let man = clap_mangen::Man::new(cmd)
        .section(section)
        .manual("strata")
        .source(concat!("strata ", env!("CARGO_PKG_VERSION")));
    let file_name = man.get_filename();
    let mut roff = Vec::new();
    man.render(&mut roff)?;
    Ok(ManPage { file_name, roff })
}

/// `cmd`'s page and one per visible subcommand (`stratactl-status.1`, …), which the
/// SUBCOMMANDS section of the main page refers to.
fn render_all(cmd: clap::Command, section: &str, out: &mut Vec<ManPage>) -> io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    out.push(render(cmd.clone(), section)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.push(render(sub.clone(), section)?);
    }
    Ok(())
}

/// The man pages of both binaries: `stratad.8` (a system daemon) and `stratactl.1`, each
/// followed by a page per subcommand (`stratad-check-config.8`, `stratactl-status.1`, …).
///
/// # Errors
/// Only when rendering into memory fails (it does not in practice).
pub fn man_pages() -> io::Result<Vec<ManPage>> {
    let mut pages = Vec::new();
    render_all(StratadArgs::command(), "8", &mut pages)?;
    render_all(StratactlArgs::command(), "1", &mut pages)?;
    Ok(pages)
}

/// Writes [`man_pages`] into `dir` (created when missing) and returns the paths written.
///
/// # Errors
/// When the directory or a file cannot be written.
pub fn write_man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for page in man_pages()? {
        let path = dir.join(&page.file_name);
        std::fs::write(&path, &page.roff)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_consistent() {
        StratadArgs::command().debug_assert();
        StratactlArgs::command().debug_assert();
    }

    #[test]
    fn command_lines_parse() {
        let a = StratadArgs::try_parse_from(["stratad", "-c", "/etc/strata/strata.toml"]).unwrap();
        assert_eq!(a.config, Some(PathBuf::from("/etc/strata/strata.toml")));
        assert!(a.command.is_none());
        assert_eq!(a.log_format, None);
        let a = StratadArgs::try_parse_from(["stratad", "--log-format", "json"]).unwrap();
        assert_eq!(a.log_format, Some(crate::logging::LogFormat::Json));
        assert!(StratadArgs::try_parse_from(["stratad", "--log-format", "xml"]).is_err());
        let a = StratadArgs::try_parse_from(["stratad", "check-config", "x.toml"]).unwrap();
        assert!(
            matches!(a.command, Some(StratadCommand::CheckConfig { file }) if file == Path::new("x.toml"))
        );
        let a = StratactlArgs::try_parse_from([
            "stratactl",
            "sessions",
            "--instance",
            "vpna",
            "--json",
        ])
        .unwrap();
        assert!(matches!(
            a.command,
            StratactlCommand::Sessions { json: true, instance: Some(ref i), verbose: false } if i == "vpna"
        ));
        let a = StratactlArgs::try_parse_from(["stratactl", "sessions", "-v"]).unwrap();
        assert!(matches!(
            a.command,
            StratactlCommand::Sessions {
                verbose: true,
                json: false,
                instance: None
            }
        ));
        let a =
            StratactlArgs::try_parse_from(["stratactl", "status", "--instance", "vpnb"]).unwrap();
        assert!(matches!(
            a.command,
            StratactlCommand::Status { json: false, instance: Some(ref i) } if i == "vpnb"
        ));
        assert!(
            StratactlArgs::try_parse_from(["stratactl", "--socket", "s", "-c", "c", "status"])
                .is_err(),
            "--socket and -c conflict"
        );
        assert!(StratactlArgs::try_parse_from(["stratactl"]).is_err());
    }

    #[test]
    fn man_pages_cover_subcommands_and_options() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|p| p.file_name.as_str()).collect();
        // A page per binary and per visible subcommand, whatever subcommands exist.
        for (cmd, section) in [
            (StratadArgs::command(), "8"),
            (StratactlArgs::command(), "1"),
        ] {
            let top = cmd.get_name().to_owned();
            assert!(names.contains(&format!("{top}.{section}").as_str()));
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let page = format!("{top}-{}.{section}", sub.get_name());
                assert!(names.contains(&page.as_str()), "no {page} in {names:?}");
            }
        }
        for page in [
            "stratad.8",
            "stratad-check-config.8",
            "stratactl.1",
            "stratactl-status.1",
            "stratactl-sessions.1",
            "stratactl-check-config.1",
        ] {
            assert!(names.contains(&page), "no {page} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate-man")));
        let text = |name: &str| {
            let page = pages.iter().find(|p| p.file_name == name).unwrap();
            String::from_utf8(page.roff.clone()).unwrap()
        };
        let stratad = text("stratad.8");
        assert!(stratad.contains(".TH stratad 8"), "{stratad}");
        assert!(stratad.contains("stratad\\-check\\-config(8)"), "{stratad}");
        assert!(stratad.contains("\\-\\-config"), "{stratad}");
        assert!(
            !stratad.contains("generate\\-man"),
            "the packaging helper stays hidden"
        );
        let stratactl = text("stratactl.1");
        assert!(stratactl.contains(".TH stratactl 1"), "{stratactl}");
        for sub in ["status", "sessions", "check\\-config", "\\-\\-socket"] {
            assert!(stratactl.contains(sub), "{sub} missing:\n{stratactl}");
        }
        // Every page the main pages refer to exists.
        for (page, section) in [(&stratad, "8"), (&stratactl, "1")] {
            for line in page
                .lines()
                .filter(|l| l.ends_with(&format!("({section})")))
            {
                let name = line.trim_start_matches(".TP").trim().replace("\\-", "-");
                let file = name.replace(&format!("({section})"), &format!(".{section}"));
                assert!(names.contains(&file.as_str()), "{line}: no page {file}");
            }
        }
        let sessions = text("stratactl-sessions.1");
        assert!(sessions.contains("\\-\\-instance"), "{sessions}");
        assert!(sessions.contains("\\-\\-verbose"), "{sessions}");
    }

    #[test]
    fn write_man_pages_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("man");
        let written = write_man_pages(&out).unwrap();
        assert_eq!(written.len(), man_pages().unwrap().len());
        assert_eq!(written[0], out.join("stratad.8"));
        for path in written {
            assert!(std::fs::metadata(&path).unwrap().len() > 200, "{path:?}");
        }
    }
}
