//! `check-config`: validate configuration text and report every problem with its key and line.
//!
//! figment keeps no source positions, so the text is parsed here a second way: into a tree of
//! [`Spanned`] nodes. A small schema walk reports unknown keys and wrong types (and prunes
//! them), the pruned tree is handed to the same raw serde layer `load` uses, and the validation
//! errors are located back in the tree by their key path.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_spanned::Spanned;

use super::raw::{KeyError, KeyPath, RawConfig, Seg};
use super::Diagnostic;

/// The key toml uses to smuggle a datetime through serde.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

/// A TOML value with the byte spans of its keys and values.
#[derive(Debug, Clone)]
enum Node {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Spanned<Node>>),
    /// Keys carry no span of their own: a value always starts on its key's line (and a
    /// table's span starts at its header), so the value's span locates the key.
    Table(Vec<(String, Spanned<Node>)>),
}

impl Node {
    fn kind_name(&self) -> &'static str {
        match self {
            Node::Str(_) => "a string",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a float",
            Node::Bool(_) => "a boolean",
            Node::Datetime(_) => "a datetime",
            Node::Array(_) => "an array",
            Node::Table(_) => "a table",
        }
    }

    /// The equivalent `toml::Value`, for handing to serde.
    fn to_value(&self) -> toml::Value {
        match self {
            Node::Str(s) | Node::Datetime(s) => toml::Value::String(s.clone()),
            Node::Int(i) => toml::Value::Integer(*i),
            Node::Float(f) => toml::Value::Float(*f),
            Node::Bool(b) => toml::Value::Boolean(*b),
            Node::Array(items) => {
                toml::Value::Array(items.iter().map(|n| n.get_ref().to_value()).collect())
            }
            Node::Table(entries) => toml::Value::Table(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.get_ref().to_value()))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == TOML_DATETIME_KEY {
                let text: String = map.next_value()?;
                return Ok(Node::Datetime(text));
            }
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Table(entries))
    }
}

/// What a key holds.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    /// A float; an integer is accepted too.
    Number,
    Bool,
    /// An array of strings.
    StrArray,
    /// An array of integers.
    IntArray,
    Table(&'static [Field]),
    TableArray(&'static [Field]),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Int => "an integer",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::StrArray => "an array of strings",
            Kind::IntArray => "an array of integers",
            Kind::Table(_) => "a table",
            Kind::TableArray(_) => "an array of tables",
        }
    }
}

/// A known key.
struct Field {
    name: &'static str,
    kind: Kind,
}

const fn field(name: &'static str, kind: Kind) -> Field {
    Field { name, kind }
}

const CLOCK: &[Field] = &[
    field("backend", Kind::Str),
    field("drift-file", Kind::Str),
    field("initial-offset", Kind::Str),
    field("frequency-error-ppm", Kind::Number),
    field("max-distance", Kind::Str),
];
const DISCIPLINE: &[Field] = &[
    field("step-threshold", Kind::Str),
    field("stepout", Kind::Str),
    field("panic-threshold", Kind::Str),
];
const LOCAL_REFERENCE: &[Field] = &[field("stratum", Kind::Int)];
const CONTROL: &[Field] = &[field("socket", Kind::Str)];
const METRICS: &[Field] = &[field("listen", Kind::Str)];
const LOG: &[Field] = &[field("level", Kind::Str), field("format", Kind::Str)];
const LISTEN: &[Field] = &[
    field("address", Kind::Str),
    field("instance", Kind::Str),
    field("key", Kind::Int),
];
const SERVER: &[Field] = &[
    field("address", Kind::Str),
    field("instance", Kind::Str),
    field("minpoll", Kind::Int),
    field("maxpoll", Kind::Int),
    field("iburst", Kind::Bool),
    field("key", Kind::Int),
];
const MULTICAST_SERVER: &[Field] = &[
    field("group", Kind::Str),
    field("ipv6-scope", Kind::Int),
    field("port", Kind::Int),
    field("interface", Kind::Str),
    field("poll", Kind::Int),
    field("ttl", Kind::Int),
    field("instance", Kind::Str),
    field("key", Kind::Int),
];
const BROADCAST_SERVER: &[Field] = &[
    field("address", Kind::Str),
    field("interface", Kind::Str),
    field("poll", Kind::Int),
    field("instance", Kind::Str),
    field("key", Kind::Int),
];
const MULTICAST_CLIENT: &[Field] = &[
    field("group", Kind::Str),
    field("ipv6-scope", Kind::Int),
    field("port", Kind::Int),
    field("interface", Kind::Str),
    field("allow-unauthenticated", Kind::Bool),
    field("recalibrate", Kind::Str),
    field("instance", Kind::Str),
    field("key", Kind::Int),
];
const BROADCAST_CLIENT: &[Field] = &[
    field("interface", Kind::Str),
    field("allow-unauthenticated", Kind::Bool),
    field("recalibrate", Kind::Str),
    field("instance", Kind::Str),
    field("key", Kind::Int),
];
const INSTANCE: &[Field] = &[
    field("name", Kind::Str),
    field("device", Kind::Str),
    field("netns", Kind::Str),
    field("max-dynamic-sessions", Kind::Int),
];
const ACCESS: &[Field] = &[
    field("instance", Kind::Str),
    field("level", Kind::Str),
    field("prefixes", Kind::StrArray),
];
const RATE_LIMIT: &[Field] = &[
    field("interval", Kind::Str),
    field("burst", Kind::Int),
    field("max-clients", Kind::Int),
];
const ACCESS_POLICY: &[Field] = &[field("deny", Kind::Str)];
const AUTH: &[Field] = &[
    field("keys-file", Kind::Str),
    field("trusted-keys", Kind::IntArray),
];
const RESPONDER: &[Field] = &[field("workers", Kind::Int)];
const ROOT: &[Field] = &[
    field("clock", Kind::Table(CLOCK)),
    field("discipline", Kind::Table(DISCIPLINE)),
    field("local-reference", Kind::Table(LOCAL_REFERENCE)),
    field("control", Kind::Table(CONTROL)),
    field("metrics", Kind::Table(METRICS)),
    field("log", Kind::Table(LOG)),
    field("listen", Kind::TableArray(LISTEN)),
    field("server", Kind::TableArray(SERVER)),
    field("peer", Kind::TableArray(SERVER)),
    field("multicast-server", Kind::TableArray(MULTICAST_SERVER)),
    field("broadcast-server", Kind::TableArray(BROADCAST_SERVER)),
    field("multicast-client", Kind::TableArray(MULTICAST_CLIENT)),
    field("broadcast-client", Kind::TableArray(BROADCAST_CLIENT)),
    field("instance", Kind::TableArray(INSTANCE)),
    field("access", Kind::TableArray(ACCESS)),
    field("access-policy", Kind::Table(ACCESS_POLICY)),
    field("rate-limit", Kind::Table(RATE_LIMIT)),
    field("auth", Kind::Table(AUTH)),
    field("responder", Kind::Table(RESPONDER)),
];

/// Byte offset → 1-based line.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        Lines(
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        )
    }

    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset).max(1)
    }
}

struct Checker<'a> {
    lines: &'a Lines,
    file: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn report(&mut self, path: &KeyPath, offset: usize, message: String) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            key: path.to_string(),
            line: self.lines.line(offset),
            message,
        });
    }

    /// Walk one table: report unknown keys and wrong types, return the pruned table.
    fn table(
        &mut self,
        path: &KeyPath,
        entries: &[(String, Spanned<Node>)],
        fields: &[Field],
    ) -> Vec<(String, Spanned<Node>)> {
        let mut kept = Vec::new();
        for (key, value) in entries {
            let key_path = path.key(key);
            let offset = value.span().start;
            let Some(field) = fields.iter().find(|f| f.name == key) else {
                let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
                let message = format!(
                    "unknown key `{key}` (expected one of: {})",
                    known.join(", ")
                );
                self.report(&key_path, offset, message);
                continue;
            };
            let pruned = match (field.kind, value.get_ref()) {
                (Kind::Str, Node::Str(_))
                | (Kind::Int, Node::Int(_))
                | (Kind::Number, Node::Int(_) | Node::Float(_))
                | (Kind::Bool, Node::Bool(_)) => Some(value.get_ref().clone()),
                (Kind::StrArray, Node::Array(items)) => {
                    let mut ok = true;
                    for (i, item) in items.iter().enumerate() {
                        if !matches!(item.get_ref(), Node::Str(_)) {
                            let message =
                                format!("expected a string, found {}", item.get_ref().kind_name());
                            self.report(&key_path.index(i), item.span().start, message);
                            ok = false;
                        }
                    }
                    ok.then(|| value.get_ref().clone())
                }
                (Kind::IntArray, Node::Array(items)) => {
                    let mut ok = true;
                    for (i, item) in items.iter().enumerate() {
                        if !matches!(item.get_ref(), Node::Int(_)) {
                            let message = format!(
                                "expected an integer, found {}",
                                item.get_ref().kind_name()
                            );
                            self.report(&key_path.index(i), item.span().start, message);
                            ok = false;
                        }
                    }
                    ok.then(|| value.get_ref().clone())
                }
                (Kind::Table(sub), Node::Table(sub_entries)) => {
                    Some(Node::Table(self.table(&key_path, sub_entries, sub)))
                }
                (Kind::TableArray(sub), Node::Array(items)) => {
                    let mut kept_items = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        let item_path = key_path.index(i);
                        match item.get_ref() {
                            Node::Table(sub_entries) => {
                                let t = Node::Table(self.table(&item_path, sub_entries, sub));
                                kept_items.push(Spanned::new(item.span(), t));
                            }
                            other => {
                                let message = format!(
                                    "expected a table, found {} (write [[{}]] sections)",
                                    other.kind_name(),
                                    key
                                );
                                self.report(&item_path, item.span().start, message);
                                // Keep the index stable for later key paths.
                                kept_items.push(Spanned::new(item.span(), Node::Table(Vec::new())));
                            }
                        }
                    }
                    Some(Node::Array(kept_items))
                }
                (kind, other) => {
                    let message = format!("expected {}, found {}", kind.name(), other.kind_name());
                    self.report(&key_path, value.span().start, message);
                    None
                }
            };
            if let Some(node) = pruned {
                kept.push((key.clone(), Spanned::new(value.span(), node)));
            }
        }
        kept
    }
}

/// Where a key path points in the tree: the key's offset, or the deepest existing parent's.
fn locate(root: &[(String, Spanned<Node>)], path: &KeyPath) -> usize {
    let mut offset = 0;
    let mut node: Option<&Node> = None;
    let mut entries = Some(root);
    for seg in &path.0 {
        match seg {
            Seg::Key(k) => {
                let Some(found) = entries.and_then(|e| e.iter().find(|(key, _)| key == k)) else {
                    break;
                };
                offset = found.1.span().start;
                node = Some(found.1.get_ref());
            }
            Seg::Index(i) => {
                let Some(Node::Array(items)) = node else {
                    break;
                };
                let Some(item) = items.get(*i) else { break };
                offset = item.span().start;
                node = Some(item.get_ref());
            }
        }
        entries = match node {
            Some(Node::Table(e)) => Some(e.as_slice()),
            _ => None,
        };
    }
    offset
}

/// Check configuration text, labelling diagnostics with `file`.
pub(crate) fn check_text(text: &str, file: &str) -> Vec<Diagnostic> {
    let lines = Lines::new(text);
    let root = match toml::from_str::<Node>(text) {
        Ok(Node::Table(entries)) => entries,
        Ok(_) => Vec::new(),
        Err(e) => {
            return vec![Diagnostic {
                file: file.to_owned(),
                key: String::new(),
                line: e.span().map_or(1, |s| lines.line(s.start)),
                message: e.message().trim().to_owned(),
            }];
        }
    };
    let mut checker = Checker {
        lines: &lines,
        file,
        diagnostics: Vec::new(),
    };
    let pruned = checker.table(&KeyPath::default(), &root, ROOT);
    let value = Node::Table(pruned).to_value();
    match RawConfig::deserialize(value) {
        Ok(raw) => {
            if let Err(errors) = raw.validate() {
                // A key already reported as unknown or mistyped was pruned: its "missing" or
                // defaulted value would only repeat that error.
                let reported: Vec<String> =
                    checker.diagnostics.iter().map(|d| d.key.clone()).collect();
                for KeyError { path, message } in errors {
                    let key = path.to_string();
                    // Likewise an array pruned for a mistyped element.
                    if reported.iter().any(|r| {
                        key == *r
                            || key.starts_with(&format!("{r}."))
                            || key.starts_with(&format!("{r}["))
                            || r.starts_with(&format!("{key}["))
                    }) {
                        continue;
                    }
                    let offset = locate(&root, &path);
                    checker.report(&path, offset, message);
                }
            }
        }
        Err(e) => checker.report(&KeyPath::default(), 0, e.to_string()),
    }
    let mut diagnostics = checker.diagnostics;
    diagnostics.sort_by_key(|d| d.line);
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        let lines = Lines::new("a\nbc\n\nd");
        assert_eq!(lines.line(0), 1);
        assert_eq!(lines.line(1), 1);
        assert_eq!(lines.line(2), 2);
        assert_eq!(lines.line(5), 3);
        assert_eq!(lines.line(6), 4);
        assert_eq!(lines.line(600), 4);
    }
}
