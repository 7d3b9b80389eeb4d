//! Rendering a node's strata configuration from scenario data.
//!
//! A scenario gives each daemon node a TOML string. It may use the
//! placeholders `${prefix}` (this run's name prefix, e.g. for interface
//! names), `${run_dir}` and `${node_dir}`. Rendering substitutes them, checks
//! the result is TOML, and fills in the per-node files every daemon needs
//! unless the scenario set them: `[control] socket` and `[clock] drift-file`
//! under the node's directory.

use std::path::Path;

use anyhow::{Context, Result};

/// Per-node values substituted into a config template.
#[derive(Debug, Clone)]
pub struct RenderCtx<'a> {
    /// This run's prefix, e.g. `st1a2b-`.
    pub prefix: &'a str,
    /// This scenario's directory.
    pub run_dir: &'a Path,
    /// This node's directory (control socket, drift file, logs).
    pub node_dir: &'a Path,
}

impl RenderCtx<'_> {
    /// The node's control socket path.
    pub fn control_socket(&self) -> std::path::PathBuf {
        self.node_dir.join("control.sock")
    }
}

// Pieces of daemon configs that scenarios share; a node's config is their
// concatenation plus whatever is its own.

/// A virtual clock and a local reference at `stratum`, answering at `listen`.
pub fn local(stratum: u8, listen: &str) -> String {
    format!(
        "[clock]\nbackend = \"virtual\"\n\n[local-reference]\nstratum = {stratum}\n{}",
        self::listen(listen)
    )
}

/// A stratum-1 server answering at `listen` ([`local`]).
pub fn stratum1(listen: &str) -> String {
    local(1, listen)
}

/// A virtual clock starting `offset` off with `ppm` frequency error, that
/// steps an error over `step` once, after 2 s (shortened for scenarios).
pub fn stepping(offset: &str, ppm: Option<f64>, step: &str) -> String {
    let ppm = ppm.map_or(String::new(), |p| format!("frequency-error-ppm = {p:.1}\n"));
    format!(
        "[clock]\nbackend = \"virtual\"\ninitial-offset = \"{offset}\"\n{ppm}\n\
         [discipline]\nstep-threshold = \"{step}\"\nstepout = \"2s\"\n"
    )
}

/// A `[[server]]` (with iburst) or `[[peer]]` at `address`, polling every
/// 2^-2..2^0 s.
pub fn source(kind: &str, address: &str) -> String {
    polled(kind, address, -2, 0)
}

/// As [`source`], polling every 2^`minpoll`..2^`maxpoll` s.
pub fn polled(kind: &str, address: &str, minpoll: i8, maxpoll: i8) -> String {
    let iburst = if kind == "server" {
        "iburst = true\n"
    } else {
        ""
    };
    format!(
        "\n[[{kind}]]\naddress = \"{address}\"\nminpoll = {minpoll}\nmaxpoll = {maxpoll}\n{iburst}"
    )
}

/// A strata client of the reference daemon at `server` (an interop
/// scenario), answering at `listen`: 50 ms off and +20 ppm, stepped once
/// (slewing 50 ms at 500 ppm at most would take minutes), then tracking.
pub fn interop_client(server: &str, listen: &str) -> String {
    let clock = stepping("50ms", Some(20.0), "10ms");
    format!(
        "{clock}{}{}",
        polled("server", server, -1, 1),
        self::listen(listen)
    )
}

/// An `[[access]]` rule giving `prefix` the access `level`.
pub fn access(level: &str, prefix: &str) -> String {
    format!("\n[[access]]\nlevel = \"{level}\"\nprefixes = [\"{prefix}\"]\n")
}

/// A `[[listen]]` socket at `address`.
pub fn listen(address: &str) -> String {
    format!("\n[[listen]]\naddress = \"{address}\"\n")
}

/// A client of `server` ([`stepping`] over 128 ms, [`source`]) answering
/// at `listen`.
pub fn client(offset: &str, server: &str, listen: &str) -> String {
    let s = stepping(offset, None, "128ms");
    format!("{s}{}{}", source("server", server), self::listen(listen))
}

/// A symmetric active peer of `peer`, otherwise as [`client`].
pub fn peer(offset: &str, peer: &str, listen: &str) -> String {
    let s = stepping(offset, None, "128ms");
    format!("{s}{}{}", source("peer", peer), self::listen(listen))
}

/// `template` rendered for node `node` of scenario `scenario` under the
/// run prefix `st0000-`, parsed (for tests).
#[cfg(test)]
pub fn rendered(scenario: &str, node: &str, template: &str) -> toml::Table {
    let dir = Path::new("/tmp/strata-st0000").join(scenario);
    let node_dir = dir.join(node);
    let ctx = RenderCtx {
        prefix: "st0000-",
        run_dir: &dir,
        node_dir: &node_dir,
    };
    render(template, &ctx)
        .expect("render")
        .parse()
        .expect("TOML")
}

/// Renders `template` for one node; see the module doc.
pub fn render(template: &str, ctx: &RenderCtx<'_>) -> Result<String> {
    let text = template
        .replace("${prefix}", ctx.prefix)
        .replace("${run_dir}", &ctx.run_dir.display().to_string())
        .replace("${node_dir}", &ctx.node_dir.display().to_string());
    let mut doc: toml::Table = text.parse().context("scenario config is not valid TOML")?;
    set_default(
        &mut doc,
        "control",
        "socket",
        ctx.control_socket().display().to_string(),
    )?;
    set_default(
        &mut doc,
        "clock",
        "drift-file",
        ctx.node_dir.join("drift").display().to_string(),
    )?;
    toml::to_string(&doc).context("serialize config")
}

/// Sets `[table] key = value` unless the key is already there.
fn set_default(doc: &mut toml::Table, table: &str, key: &str, value: String) -> Result<()> {
    let entry = doc
        .entry(table)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let t = entry
        .as_table_mut()
        .with_context(|| format!("`{table}` must be a table"))?;
    t.entry(key).or_insert(toml::Value::String(value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(run: &'a Path, node: &'a Path) -> RenderCtx<'a> {
        RenderCtx {
            prefix: "st1a2b-",
            run_dir: run,
            node_dir: node,
        }
    }

    #[test]
    fn fills_socket_and_drift_file_keeping_other_keys() {
        let (run, node) = (
            Path::new("/tmp/strata-st1a2b/cs"),
            Path::new("/tmp/strata-st1a2b/cs/client"),
        );
        let out = render(
            "[clock]\nbackend = \"virtual\"\ninitial-offset = \"500ms\"\n\n[[server]]\naddress = \"10.200.1.1:123\"\nminpoll = -2\n",
            &ctx(run, node),
        )
        .expect("render");
        let doc: toml::Table = out.parse().expect("output is TOML");
        assert_eq!(doc["clock"]["backend"].as_str(), Some("virtual"));
        assert_eq!(doc["clock"]["initial-offset"].as_str(), Some("500ms"));
        assert_eq!(
            doc["clock"]["drift-file"].as_str(),
            Some("/tmp/strata-st1a2b/cs/client/drift")
        );
        assert_eq!(
            doc["control"]["socket"].as_str(),
            Some("/tmp/strata-st1a2b/cs/client/control.sock")
        );
        assert_eq!(doc["server"][0]["minpoll"].as_integer(), Some(-2));
    }

    #[test]
    fn scenario_values_win_and_placeholders_expand() {
        let (run, node) = (Path::new("/r"), Path::new("/r/n"));
        let out = render(
            "[control]\nsocket = \"${run_dir}/other.sock\"\n[[multicast-client]]\ninterface = \"${prefix}eth0\"\n",
            &ctx(run, node),
        )
        .expect("render");
        let doc: toml::Table = out.parse().expect("TOML");
        assert_eq!(doc["control"]["socket"].as_str(), Some("/r/other.sock"));
        assert_eq!(
            doc["multicast-client"][0]["interface"].as_str(),
            Some("st1a2b-eth0")
        );
        assert_eq!(doc["clock"]["drift-file"].as_str(), Some("/r/n/drift"));
    }

    #[test]
    fn shared_configs_are_toml() {
        let (run, node) = (Path::new("/r"), Path::new("/r/n"));
        let parse = |t: &str| -> toml::Table {
            render(t, &ctx(run, node))
                .expect("render")
                .parse()
                .expect("TOML")
        };
        let c = parse(&client("200ms", "10.200.1.1:123", "10.200.1.2:123"));
        assert_eq!(c["server"][0]["iburst"].as_bool(), Some(true));
        assert_eq!(c["clock"]["initial-offset"].as_str(), Some("200ms"));
        assert_eq!(c["listen"][0]["address"].as_str(), Some("10.200.1.2:123"));
        let p = parse(&peer("-250ms", "10.200.3.1:123", "10.200.3.2:123"));
        assert_eq!(p["peer"][0]["minpoll"].as_integer(), Some(-2));
        assert!(p["peer"][0].get("iburst").is_none());
        let s = parse(&stratum1("10.200.3.3:123"));
        assert_eq!(s["local-reference"]["stratum"].as_integer(), Some(1));
    }

    #[test]
    fn rejects_bad_templates() {
        let (run, node) = (Path::new("/r"), Path::new("/r/n"));
        assert!(render("[clock\n", &ctx(run, node)).is_err());
        assert!(
            render("control = 1\n", &ctx(run, node)).is_err(),
            "control not a table"
        );
    }
}
