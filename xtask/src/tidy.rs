//! `cargo xtask tidy`: the repository's rules, as code.
//!
//! Each rule is a pure function over a file's path (relative to the
//! workspace root, `/`-separated) and text, so it is unit-tested on in-memory
//! samples. [`check_tree`] walks the workspace and applies every rule.
//!
//! Rules:
//! - `module-doc`: every `.rs` file under `crates/`, `xtask/`, `tests/` starts
//!   (first non-empty line) with a `//!` doc comment.
//! - `banned-api`: `tokio`, `Instant::now`, `SystemTime::now` never appear in
//!   the code of `crates/wire`, `crates/clock`, `crates/engine` (comments may
//!   mention them), except in `crates/clock/src/backend/system.rs` and in
//!   `examples/` (drivers, which must read a clock); those crates'
//!   `Cargo.toml` never mentions `tokio`.
//! - `unsafe`: the `unsafe` token appears in code only under `crates/net/` and
//!   in `crates/clock/src/backend/system.rs`.
//! - `whitespace`: no trailing whitespace and no tabs in `.rs`, `.toml`, `.md`.
//! - `lints`: every crate `Cargo.toml` has `[lints] workspace = true`.
//! - `weak-rng`: `SmallRng`, `seed_from_u64` and `thread_rng` never appear
//!   in the code of `crates/` outside tests (`tests/`, `benches/`, and a
//!   file's `#[cfg(test)]` part) and the simulator (`crates/sim/`): secrets
//!   and cookies come from a `CryptoRng` seeded by the OS.
//! - `crate-graph`: the manifests of `crates/*` and `xtask` depend only on
//!   the workspace crates [`CRATE_GRAPH`] allows (any table: normal, dev,
//!   build, per target). External crates are not restricted here.
//! - `architecture`: `docs/ARCHITECTURE.md` names every module file under
//!   `crates/*/src` (crate roots `lib.rs`/`main.rs` aside) in its crate's
//!   `### \`crates/NAME\`` section, in backticks, by path below `src/`, file
//!   name or module name (see [`module_names`]).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// One broken rule at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path relative to the workspace root.
    pub path: String,
    /// 1-based line number (1 when the rule is about the whole file).
    pub line: usize,
    /// Rule name.
    pub rule: &'static str,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path, self.line, self.rule, self.message
        )
    }
}

fn violation(path: &str, line: usize, rule: &'static str, message: impl Into<String>) -> Violation {
    Violation {
        path: path.to_owned(),
        line,
        rule,
        message: message.into(),
    }
}

/// The only file outside `crates/net/` that may read the OS clock or use `unsafe`.
const SYSTEM_BACKEND: &str = "crates/clock/src/backend/system.rs";
/// Crates that must stay deterministic: no runtime, no clock reads.
const PURE_CRATES: [&str; 3] = ["crates/wire/", "crates/clock/", "crates/engine/"];
/// Strings banned from the code of [`PURE_CRATES`].
const BANNED_APIS: [&str; 3] = ["tokio", "Instant::now", "SystemTime::now"];
/// This file spells the banned tokens in its rules and samples.
const THIS_FILE: &str = "xtask/src/tidy.rs";

/// Which workspace crates each crate may depend on (directory names:
/// `crates/NAME`, and `xtask`). `engine` never uses `net` or `daemon`;
/// `xtask` measures the crates and so depends on none of them.
pub const CRATE_GRAPH: [(&str, &[&str]); 7] = [
    ("wire", &[]),
    ("clock", &["wire"]),
    ("net", &[]),
    ("engine", &["wire", "clock"]),
    ("sim", &["engine", "clock", "wire"]),
    ("daemon", &["wire", "clock", "net", "engine"]),
    ("xtask", &[]),
];
/// The architecture document [`check_architecture`] reads.
pub const ARCHITECTURE: &str = "docs/ARCHITECTURE.md";

/// Applies every rule to one file.
pub fn check_file(path: &str, text: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    if matches!(ext, "rs" | "toml" | "md") {
        out.extend(check_whitespace(path, text));
    }
    if ext == "rs" {
        out.extend(check_module_doc(path, text));
        out.extend(check_banned_apis(path, text));
        out.extend(check_unsafe(path, text));
        out.extend(check_weak_rng(path, text));
    }
    if path.ends_with("Cargo.toml") {
        out.extend(check_lints(path, text));
        out.extend(check_manifest_deps(path, text));
        out.extend(check_crate_graph(path, text));
    }
    out
}

/// `module-doc`: the first non-empty line of a Rust file is a `//!` comment.
pub fn check_module_doc(path: &str, text: &str) -> Option<Violation> {
    if !["crates/", "xtask/", "tests/"]
        .iter()
        .any(|p| path.starts_with(p))
    {
        return None;
    }
    match text.lines().enumerate().find(|(_, l)| !l.trim().is_empty()) {
        Some((_, line)) if line.trim_start().starts_with("//!") => None,
        Some((i, _)) => Some(violation(
            path,
            i + 1,
            "module-doc",
            "file must start with a `//!` module doc",
        )),
        None => Some(violation(
            path,
            1,
            "module-doc",
            "empty file has no `//!` module doc",
        )),
    }
}

/// The code part of a line: everything before a `//` comment.
///
/// Good enough for rules: a `//` inside a string literal only makes the rule
/// more lenient, never a false alarm.
fn code_part(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// `banned-api`: deterministic crates do not use a runtime or read clocks.
pub fn check_banned_apis(path: &str, text: &str) -> Vec<Violation> {
    let driver = path.contains("/examples/");
    if !PURE_CRATES.iter().any(|p| path.starts_with(p)) || path == SYSTEM_BACKEND || driver {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = code_part(line);
        for banned in BANNED_APIS {
            if code.contains(banned) {
                out.push(violation(
                    path,
                    i + 1,
                    "banned-api",
                    format!("`{banned}` is not allowed in wire/clock/engine (inject time instead)"),
                ));
            }
        }
    }
    out
}

/// True when `word` occurs in `code` as a whole identifier.
fn has_token(code: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// `unsafe`: only the socket crate and the system clock backend may use it.
pub fn check_unsafe(path: &str, text: &str) -> Vec<Violation> {
    if path.starts_with("crates/net/") || path == SYSTEM_BACKEND || path == THIS_FILE {
        return Vec::new();
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| has_token(code_part(line), "unsafe"))
        .map(|(i, _)| {
            violation(
                path,
                i + 1,
                "unsafe",
                format!("`unsafe` is only allowed under crates/net/ and in {SYSTEM_BACKEND}"),
            )
        })
        .collect()
}

/// Predictable generators and seedings: fine for a simulation, never for
/// a cookie.
const WEAK_RNG: [&str; 3] = ["SmallRng", "seed_from_u64", "thread_rng"];

/// `weak-rng`: shipped code draws randomness only from a `CryptoRng`.
pub fn check_weak_rng(path: &str, text: &str) -> Vec<Violation> {
    let test_or_sim =
        path.starts_with("crates/sim/") || path.contains("/tests/") || path.contains("/benches/");
    if !path.starts_with("crates/") || test_or_sim {
        return Vec::new();
    }
    text.lines()
        .enumerate()
        // The test module closes a file; what follows it is test code.
        .take_while(|(_, line)| line.trim() != "#[cfg(test)]")
        .flat_map(|(i, line)| {
            let code = code_part(line);
            WEAK_RNG
                .iter()
                .filter(move |weak| has_token(code, weak))
                .map(move |weak| {
                    violation(
                        path,
                        i + 1,
                        "weak-rng",
                        format!("`{weak}` is predictable: use a `CryptoRng` seeded by the OS"),
                    )
                })
        })
        .collect()
}

/// `whitespace`: no trailing whitespace, no tabs.
pub fn check_whitespace(path: &str, text: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.contains('\t') {
            out.push(violation(path, i + 1, "whitespace", "tab character"));
        } else if line.ends_with(char::is_whitespace) {
            out.push(violation(path, i + 1, "whitespace", "trailing whitespace"));
        }
    }
    out
}

/// `lints`: every crate manifest opts into the workspace lints.
pub fn check_lints(path: &str, text: &str) -> Option<Violation> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            return Some(violation(
                path,
                1,
                "lints",
                format!("Cargo.toml does not parse: {}", e.message()),
            ))
        }
    };
    if !table.contains_key("package") {
        return None; // the workspace root manifest
    }
    let inherits = table
        .get("lints")
        .and_then(|l| l.get("workspace"))
        .and_then(toml::Value::as_bool)
        == Some(true);
    (!inherits).then(|| {
        violation(
            path,
            1,
            "lints",
            "crate must have `[lints] workspace = true`",
        )
    })
}

/// `banned-api` for manifests: deterministic crates do not depend on tokio.
pub fn check_manifest_deps(path: &str, text: &str) -> Vec<Violation> {
    if !PURE_CRATES.iter().any(|p| path.starts_with(p)) {
        return Vec::new();
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.split('#').next().unwrap_or("");
            code.contains("tokio")
        })
        .map(|(i, _)| {
            violation(
                path,
                i + 1,
                "banned-api",
                "wire/clock/engine must not depend on tokio",
            )
        })
        .collect()
}

/// The workspace crates a manifest depends on: `(table line, crate dir
/// name)` for each dependency named `strata-*` (or renamed from one with
/// `package`), or given by `path`.
fn workspace_deps(table: &toml::Table, text: &str) -> Vec<(usize, String)> {
    fn dep_tables(t: &toml::Table) -> impl Iterator<Item = &toml::Table> {
        ["dependencies", "dev-dependencies", "build-dependencies"]
            .into_iter()
            .filter_map(|k| t.get(k)?.as_table())
    }
    let mut tables: Vec<&toml::Table> = dep_tables(table).collect();
    if let Some(targets) = table.get("target").and_then(toml::Value::as_table) {
        for target in targets.values().filter_map(toml::Value::as_table) {
            tables.extend(dep_tables(target));
        }
    }
    let mut out = Vec::new();
    for (key, spec) in tables.into_iter().flatten() {
        let package = spec.get("package").and_then(toml::Value::as_str);
        let name = package.unwrap_or(key);
        let ours = name.strip_prefix("strata-").map(str::to_owned).or_else(|| {
            let path = spec.get("path").and_then(toml::Value::as_str)?;
            Some(path.trim_end_matches('/').rsplit('/').next()?.to_owned())
        });
        if let Some(dep) = ours {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(key.as_str()))
                .map_or(1, |i| i + 1);
            out.push((line, dep));
        }
    }
    out
}

/// `crate-graph`: a crate depends only on the workspace crates
/// [`CRATE_GRAPH`] allows it.
pub fn check_crate_graph(path: &str, text: &str) -> Vec<Violation> {
    let krate = match path.strip_suffix("/Cargo.toml") {
        Some("xtask") => "xtask",
        Some(dir) => match dir.strip_prefix("crates/") {
            Some(name) if !name.contains('/') => name,
            _ => return Vec::new(),
        },
        None => return Vec::new(),
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new(); // `lints` reports it
    };
    let Some((_, allowed)) = CRATE_GRAPH.iter().find(|(c, _)| *c == krate) else {
        return vec![violation(
            path,
            1,
            "crate-graph",
            format!(
                "crate `{krate}` is not in tidy's CRATE_GRAPH: add it with the crates it may use"
            ),
        )];
    };
    workspace_deps(&table, text)
        .into_iter()
        .filter(|(_, dep)| !allowed.contains(&dep.as_str()))
        .map(|(line, dep)| {
            violation(
                path,
                line,
                "crate-graph",
                format!("`{krate}` must not depend on `{dep}` (allowed: {allowed:?})"),
            )
        })
        .collect()
}

/// The names under which the architecture document may name the module
/// file `rel` (its path below `src/`): the path, and for `a/b.rs` also
/// `b.rs`, `a/b`, `a::b` and `b`; for `a/mod.rs` also `a` and `a/`. Crate
/// roots (`lib.rs`, `main.rs`) need no name.
pub fn module_names(rel: &str) -> Option<Vec<String>> {
    if matches!(rel, "lib.rs" | "main.rs") {
        return None;
    }
    let stem = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut names = vec![rel.to_owned()];
    if let Some(dir) = stem.strip_suffix("/mod") {
        names.extend([dir.to_owned(), format!("{dir}/"), dir.replace('/', "::")]);
    } else {
        let file = rel.rsplit('/').next().unwrap_or(rel);
        let last = stem.rsplit('/').next().unwrap_or(stem);
        names.extend([file.to_owned(), stem.to_owned(), stem.replace('/', "::")]);
        names.push(last.to_owned());
    }
    names.dedup();
    Some(names)
}

/// `architecture`: `doc` (the text of [`ARCHITECTURE`]) names every module
/// file of `files` (paths like `crates/NAME/src/...`) in the section of
/// its crate.
pub fn check_architecture(doc: &str, files: &[String]) -> Vec<Violation> {
    let section = |krate: &str| -> &str {
        let heading = format!("### `crates/{krate}`");
        let Some(start) = doc.find(&heading) else {
            return "";
        };
        let body = &doc[start + heading.len()..];
        let end = ["\n### ", "\n## "]
            .iter()
            .filter_map(|h| body.find(h))
            .min()
            .unwrap_or(body.len());
        &body[..end]
    };
    let mut out = Vec::new();
    for file in files {
        let Some((krate, rel)) = file
            .strip_prefix("crates/")
            .and_then(|f| f.split_once("/src/"))
        else {
            continue;
        };
        let Some(names) = module_names(rel) else {
            continue;
        };
        let text = section(krate);
        if !names.iter().any(|n| text.contains(&format!("`{n}`"))) {
            out.push(violation(
                ARCHITECTURE,
                1,
                "architecture",
                format!("the `crates/{krate}` section does not name `{rel}` ({file})"),
            ));
        }
    }
    out
}

/// Collects the files tidy looks at, skipping build output and hidden dirs.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("read dir {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            let skip = name.starts_with('.')
                || name.starts_with("target")
                || name == "corpus"
                || name == "artifacts";
            if !skip {
                walk(&path, out)?;
            }
        } else if file_type.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Checks every `.rs`, `.toml` and `.md` file under `root`.
pub fn check_tree(root: &Path) -> Result<Vec<Violation>> {
    let mut files = Vec::new();
    walk(root, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    let mut sources = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root).unwrap_or(&file);
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let ext = rel.rsplit_once('.').map_or("", |(_, e)| e);
        if !matches!(ext, "rs" | "toml" | "md") {
            continue;
        }
        if ext == "rs" && rel.starts_with("crates/") && rel.contains("/src/") {
            sources.push(rel.clone());
        }
        match std::fs::read_to_string(&file) {
            Ok(text) => out.extend(check_file(&rel, &text)),
            Err(e) => out.push(violation(
                &rel,
                1,
                "read",
                format!("cannot read as UTF-8: {e}"),
            )),
        }
    }
    if !sources.is_empty() {
        let doc = std::fs::read_to_string(root.join(ARCHITECTURE)).unwrap_or_default();
        out.extend(check_architecture(&doc, &sources));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(v: &[Violation]) -> Vec<(&'static str, usize)> {
        v.iter().map(|v| (v.rule, v.line)).collect()
    }

    #[test]
    fn module_doc() {
        assert!(check_module_doc("crates/wire/src/lib.rs", "//! Doc.\nfn f() {}\n").is_none());
        assert!(
            check_module_doc("crates/wire/src/lib.rs", "\n\n//! Doc after blanks.\n").is_none()
        );
        let v = check_module_doc("crates/wire/src/lib.rs", "\n#![no_std]\n//! Doc.\n")
            .expect("attr first");
        assert_eq!((v.rule, v.line), ("module-doc", 2));
        assert!(check_module_doc("tests/src/lib.rs", "/// Item doc.\nfn f() {}\n").is_some());
        assert!(check_module_doc("xtask/src/x.rs", "").is_some());
        // Outside the checked trees the rule does not apply.
        assert!(check_module_doc("fuzz/x.rs", "fn f() {}").is_none());
    }

    #[test]
    fn banned_apis() {
        let code = "//! Doc: no tokio, no Instant::now here.\nlet t = std::time::Instant::now();\nuse tokio::net; // tokio\nlet s = SystemTime::now();\n";
        let v = check_banned_apis("crates/engine/src/lib.rs", code);
        assert_eq!(
            rules(&v),
            [("banned-api", 2), ("banned-api", 3), ("banned-api", 4)]
        );
        assert!(check_banned_apis("crates/clock/src/backend/system.rs", code).is_empty());
        assert!(check_banned_apis("crates/daemon/src/main.rs", code).is_empty());
        assert!(check_banned_apis("crates/engine/examples/sntp_client.rs", code).is_empty());
        assert_eq!(check_banned_apis("crates/wire/src/time.rs", code).len(), 3);
        assert_eq!(
            check_banned_apis("crates/clock/src/filter.rs", code).len(),
            3
        );
    }

    #[test]
    fn weak_rng_only_in_tests_and_the_simulator() {
        let code = "//! Doc: no SmallRng here.\nlet r = SmallRng::seed_from_u64(1);\nlet t = rand::thread_rng();\nlet c = ChaCha20Rng::from_seed(s);\n#[cfg(test)]\nmod tests { let r = SmallRng::seed_from_u64(2); }\n";
        let v = check_weak_rng("crates/engine/src/node.rs", code);
        assert_eq!(
            rules(&v),
            [("weak-rng", 2), ("weak-rng", 2), ("weak-rng", 3)]
        );
        assert_eq!(
            check_weak_rng("crates/daemon/src/runtime/mod.rs", code).len(),
            3
        );
        assert!(check_weak_rng("crates/sim/src/sim.rs", code).is_empty());
        assert!(check_weak_rng("crates/engine/tests/support/mod.rs", code).is_empty());
        assert!(check_weak_rng("tests/src/lib.rs", code).is_empty());
        assert!(check_weak_rng("crates/engine/src/x.rs", "let r = MySmallRngish;\n").is_empty());
    }

    #[test]
    fn manifest_deps() {
        let manifest = "[dependencies]\n# no tokio here\ntokio.workspace = true\n";
        assert_eq!(
            rules(&check_manifest_deps("crates/clock/Cargo.toml", manifest)),
            [("banned-api", 3)]
        );
        assert!(check_manifest_deps("crates/daemon/Cargo.toml", manifest).is_empty());
    }

    #[test]
    fn unsafe_only_where_allowed() {
        let code = "//! Doc.\n#![deny(unsafe_code)]\n// unsafe in a comment is fine\nunsafe fn f() {}\nlet x = unsafe { g() };\n";
        let v = check_unsafe("crates/engine/src/lib.rs", code);
        assert_eq!(rules(&v), [("unsafe", 4), ("unsafe", 5)]);
        assert!(check_unsafe("crates/net/src/linux.rs", code).is_empty());
        assert!(check_unsafe("crates/clock/src/backend/system.rs", code).is_empty());
        assert_eq!(
            check_unsafe("crates/clock/src/backend/virtual.rs", code).len(),
            2
        );
        assert_eq!(check_unsafe("xtask/src/main.rs", code).len(), 2);
    }

    #[test]
    fn token_boundaries() {
        assert!(has_token("unsafe {", "unsafe"));
        assert!(has_token("x(unsafe)", "unsafe"));
        assert!(!has_token("unsafe_code", "unsafe"));
        assert!(!has_token("is_unsafe", "unsafe"));
    }

    #[test]
    fn whitespace() {
        let text = "ok\ntrailing \nhas\ttab\n\nlast\t \n";
        let v = check_whitespace("README.md", text);
        assert_eq!(
            rules(&v),
            [("whitespace", 2), ("whitespace", 3), ("whitespace", 5)]
        );
        assert!(check_whitespace("a.toml", "a = 1\n").is_empty());
    }

    #[test]
    fn whitespace_only_for_text_kinds() {
        assert!(check_file("data.bin", "x \t\n").is_empty());
        assert_eq!(check_file("notes.md", "x \n").len(), 1);
    }

    #[test]
    fn lints_table() {
        let good = "[package]\nname = \"a\"\n\n[lints]\nworkspace = true\n";
        assert!(check_lints("crates/a/Cargo.toml", good).is_none());
        let missing = "[package]\nname = \"a\"\n";
        assert_eq!(
            check_lints("crates/a/Cargo.toml", missing).map(|v| v.rule),
            Some("lints")
        );
        let off = "[package]\nname = \"a\"\n[lints]\nworkspace = false\n";
        assert!(check_lints("crates/a/Cargo.toml", off).is_some());
        let root = "[workspace]\nmembers = []\n";
        assert!(check_lints("Cargo.toml", root).is_none());
        assert!(
            check_lints("crates/a/Cargo.toml", "[package\n").is_some(),
            "unparsable"
        );
    }

    #[test]
    fn crate_graph() {
        let engine = "[package]\nname = \"strata-engine\"\n[dependencies]\nstrata-wire.workspace = true\nrand = \"0.8\"\naes-siv = \"0.7\"\nstrata-net.workspace = true\n[dev-dependencies]\ndaemon = { package = \"strata-daemon\", path = \"../daemon\" }\n";
        assert_eq!(
            rules(&check_crate_graph("crates/engine/Cargo.toml", engine)),
            [("crate-graph", 7), ("crate-graph", 9)]
        );
        let net = "[package]\nname = \"strata-net\"\n[target.'cfg(unix)'.dependencies]\nwire = { path = \"../wire\" }\nrustls = \"0.23\"\n";
        assert_eq!(
            rules(&check_crate_graph("crates/net/Cargo.toml", net)),
            [("crate-graph", 4)]
        );
        let daemon = "[package]\nname = \"strata-daemon\"\n[dependencies]\nstrata-net.workspace = true\nstrata-engine.workspace = true\nrustls = \"0.23\"\nhickory-resolver = \"0.24\"\n";
        assert!(check_crate_graph("crates/daemon/Cargo.toml", daemon).is_empty());
        let xtask = "[package]\nname = \"xtask\"\n[dependencies]\nstrata-wire.workspace = true\n";
        assert_eq!(check_crate_graph("xtask/Cargo.toml", xtask).len(), 1);
        let new = "[package]\nname = \"strata-nts\"\n";
        assert_eq!(check_crate_graph("crates/nts/Cargo.toml", new).len(), 1);
        // Outside crates/* and xtask the rule does not apply.
        assert!(check_crate_graph("tests/Cargo.toml", engine).is_empty());
        assert!(check_crate_graph("crates/wire/fuzz/Cargo.toml", engine).is_empty());
    }

    #[test]
    fn architecture_names_every_module() {
        let doc = "# A\n### `crates/wire` — w\n`time.rs`, `packet` and `linux/mmsg.rs`.\n### `crates/clock` — c\n`backend` (`virtual`).\n## Rules\n`select`\n";
        let files: Vec<String> = [
            "crates/wire/src/lib.rs",
            "crates/wire/src/time.rs",
            "crates/wire/src/packet.rs",
            "crates/wire/src/linux/mmsg.rs",
            "crates/wire/src/ext.rs",
            "crates/clock/src/backend/mod.rs",
            "crates/clock/src/backend/virtual.rs",
            "crates/clock/src/select.rs",
            "crates/net/src/batch.rs",
        ]
        .map(str::to_owned)
        .to_vec();
        let got: Vec<String> = check_architecture(doc, &files)
            .into_iter()
            .map(|v| v.message)
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].contains("`ext.rs`"), "{got:?}");
        assert!(
            got[1].contains("`select.rs`"),
            "outside its section: {got:?}"
        );
        assert!(got[2].contains("crates/net"), "no section: {got:?}");
        assert_eq!(module_names("lib.rs"), None);
        let names = module_names("runtime/mod.rs").expect("named");
        assert!(names.contains(&"runtime".to_owned()));
        assert!(!names.contains(&"mod".to_owned()));
    }

    #[test]
    fn display_format() {
        let v = violation("crates/a/src/lib.rs", 7, "unsafe", "msg");
        assert_eq!(v.to_string(), "crates/a/src/lib.rs:7: unsafe: msg");
    }

    #[test]
    fn tree_walk_finds_violations_and_skips_target() {
        let dir = std::env::temp_dir().join(format!("strata-tidy-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let src = dir.join("crates/engine/src");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::create_dir_all(dir.join("target/debug")).expect("mkdir");
        std::fs::write(src.join("lib.rs"), "fn main() {}\n").expect("write");
        std::fs::write(dir.join("target/debug/x.rs"), "fn main() {}\n").expect("write");
        std::fs::write(
            dir.join("crates/engine/Cargo.toml"),
            "[package]\nname = \"e\"\n",
        )
        .expect("write");
        let found = check_tree(&dir).expect("walk");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        let mut got: Vec<String> = found
            .iter()
            .map(|v| format!("{}:{}", v.path, v.rule))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "crates/engine/Cargo.toml:lints",
                "crates/engine/src/lib.rs:module-doc"
            ]
        );
    }
}
