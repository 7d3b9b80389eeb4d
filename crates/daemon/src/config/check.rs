//! `check-config`: validate configuration text and report every problem with its key and line.
//!
//! figment keeps no source positions, so the text is parsed here a second way: into a tree of
//! [`Spanned`] nodes. The raw serde structs are then deserialized from that tree by
//! [`NodeDe`], a deserializer that knows each node's key path and line, so the structs
//! themselves are the schema: a key the struct does not name and a value of the wrong type
//! are reported where they stand. Deserialization stops at the first such error, so the
//! offending node is pruned and the walk repeated until the structs deserialize; then the
//! validation errors are located back in the tree by their key path.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;
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
    /// An array element already reported: skipped, keeping the later elements' indices.
    Pruned,
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
            Node::Pruned => "nothing",
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
                return Ok(Node::Datetime(map.next_value()?));
            }
            entries.push((key, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Table(entries))
    }
}

/// An unknown key or a mistyped value, where it stands.
#[derive(Debug)]
struct NodeError {
    /// Where; `None` for an error raised by a visitor, which the node it came from fills in.
    at: Option<(KeyPath, usize)>,
    message: String,
    /// A table belongs where the error is (an element of an array of tables).
    table_slot: bool,
    /// For a key the struct does not name: the keys it does (pruning an unknown key hides
    /// nothing from validation).
    known: Option<&'static [&'static str]>,
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NodeError {}

impl de::Error for NodeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        NodeError {
            at: None,
            message: message.to_string(),
            table_slot: false,
            known: None,
        }
    }
}

/// Deserializes one node of the tree, with its key path.
struct NodeDe<'a> {
    node: &'a Spanned<Node>,
    path: KeyPath,
    /// Set when a lone value stands where an array was expected: the node refuses whatever
    /// it is asked to be, noting the type the array holds here.
    lone: Option<&'a Cell<&'static str>>,
}

impl<'a> NodeDe<'a> {
    fn new(node: &'a Spanned<Node>, path: KeyPath) -> Self {
        NodeDe {
            node,
            path,
            lone: None,
        }
    }

    /// Refuses in lone mode, noting `elements`, the array's element type.
    fn element_of(&self, elements: &'static str) -> Result<(), NodeError> {
        match self.lone {
            Some(wanted) => {
                wanted.set(elements);
                Err(self.expected("an array"))
            }
            None => Ok(()),
        }
    }

    fn expected(&self, what: &str) -> NodeError {
        let found = self.node.get_ref().kind_name();
        // An array of tables written as `key = [...]`: say how it is meant to be written.
        let (hint, table_slot) = match (what, self.path.0.as_slice()) {
            ("a table", [.., Seg::Key(key), Seg::Index(_)]) => {
                (format!(" (write [[{key}]] sections)"), true)
            }
            _ => (String::new(), false),
        };
        NodeError {
            at: Some((self.path.clone(), self.node.span().start)),
            message: format!("expected {what}, found {found}{hint}"),
            table_slot,
            known: None,
        }
    }

    /// Locates an error a visitor raised at this node.
    fn here<T>(&self, result: Result<T, NodeError>) -> Result<T, NodeError> {
        result.map_err(|mut e| {
            if e.at.is_none() {
                e.at = Some((self.path.clone(), self.node.span().start));
            }
            e
        })
    }
}

impl<'de> Deserializer<'de> for NodeDe<'_> {
    type Error = NodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        let result = match self.node.get_ref() {
            Node::Str(s) | Node::Datetime(s) => visitor.visit_str(s),
            Node::Int(i) => visitor.visit_i64(*i),
            Node::Float(f) => visitor.visit_f64(*f),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Array(_) => return self.deserialize_seq(visitor),
            Node::Table(_) => return self.deserialize_map(visitor),
            Node::Pruned => visitor.visit_unit(),
        };
        self.here(result)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        self.element_of("booleans")?;
        match self.node.get_ref() {
            Node::Bool(b) => self.here(visitor.visit_bool(*b)),
            _ => Err(self.expected("a boolean")),
        }
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        self.element_of("integers")?;
        match self.node.get_ref() {
            Node::Int(i) => self.here(visitor.visit_i64(*i)),
            _ => Err(self.expected("an integer")),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        self.element_of("numbers")?;
        match self.node.get_ref() {
            // An integer is a number too.
            #[allow(clippy::cast_precision_loss, reason = "as TOML readers do")]
            Node::Int(i) => self.here(visitor.visit_f64(*i as f64)),
            Node::Float(f) => self.here(visitor.visit_f64(*f)),
            _ => Err(self.expected("a number")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        self.element_of("strings")?;
        match self.node.get_ref() {
            Node::Str(s) => self.here(visitor.visit_str(s)),
            _ => Err(self.expected("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        // A key that is present has a value; an absent one never reaches a deserializer.
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        match self.node.get_ref() {
            Node::Array(items) => {
                let access = Items {
                    items: items.iter().enumerate(),
                    path: &self.path,
                    lone: None,
                };
                self.here(visitor.visit_seq(access))
            }
            // The element type is the visitor's to know: offer it the value as an element
            // that refuses to be anything, and name the type it was asked to be.
            _ => {
                let wanted = Cell::new("values");
                let _ = visitor.visit_seq(Items {
                    items: std::iter::once((0, self.node)),
                    path: &self.path,
                    lone: Some(&wanted),
                });
                Err(self.expected(&format!("an array of {}", wanted.get())))
            }
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NodeError> {
        self.deserialize_struct("", &[], visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, NodeError> {
        self.element_of("tables")?;
        let Node::Table(entries) = self.node.get_ref() else {
            return Err(self.expected("a table"));
        };
        let access = Entries {
            entries: entries.iter(),
            value: None,
            fields,
            path: &self.path,
        };
        self.here(visitor.visit_map(access))
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u64 u128 f32 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// The elements of an array.
struct Items<'a, I> {
    items: I,
    path: &'a KeyPath,
    /// For a lone value standing in for an array.
    lone: Option<&'a Cell<&'static str>>,
}

impl<'de, 'a, I: Iterator<Item = (usize, &'a Spanned<Node>)>> SeqAccess<'de> for Items<'a, I> {
    type Error = NodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, NodeError> {
        let Some((i, node)) = self
            .items
            .find(|(_, n)| !matches!(n.get_ref(), Node::Pruned))
        else {
            return Ok(None);
        };
        // A lone value keeps the array's path.
        let path = match self.lone {
            Some(_) => self.path.clone(),
            None => self.path.index(i),
        };
        let element = |path| NodeDe {
            node,
            path,
            lone: self.lone,
        };
        // A value that deserialized but does not parse is an error where it stands.
        let value = seed.deserialize(element(path.clone()));
        element(path).here(value).map(Some)
    }
}

/// The entries of a table; keys the struct does not name are refused.
struct Entries<'a, I> {
    entries: I,
    value: Option<(&'a Spanned<Node>, KeyPath)>,
    /// The struct's keys; empty for a map, which takes any.
    fields: &'static [&'static str],
    path: &'a KeyPath,
}

impl<'de, 'a, I: Iterator<Item = &'a (String, Spanned<Node>)>> MapAccess<'de> for Entries<'a, I> {
    type Error = NodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, NodeError> {
        let Some((key, node)) = self.entries.next() else {
            return Ok(None);
        };
        let path = self.path.key(key);
        if !self.fields.is_empty() && !self.fields.contains(&key.as_str()) {
            return Err(NodeError {
                at: Some((path, node.span().start)),
                message: format!(
                    "unknown key `{key}` (expected one of: {})",
                    self.fields.join(", ")
                ),
                table_slot: false,
                known: Some(self.fields),
            });
        }
        self.value = Some((node, path));
        seed.deserialize(de::value::StrDeserializer::<NodeError>::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, NodeError> {
        let (node, path) = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value without its key"))?;
        let value = seed.deserialize(NodeDe::new(node, path.clone()));
        NodeDe::new(node, path).here(value)
    }
}

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

/// Where a key path points in the tree: the key's offset, or the deepest existing parent's.
fn locate(root: &[(String, Spanned<Node>)], path: &KeyPath) -> usize {
    let mut offset = 0;
    let mut node: Option<&Node> = None;
    for seg in &path.0 {
        let found = match (seg, node) {
            (Seg::Key(k), None) => root.iter().find(|(key, _)| key == k).map(|(_, v)| v),
            (Seg::Key(k), Some(Node::Table(e))) => {
                e.iter().find(|(key, _)| key == k).map(|(_, v)| v)
            }
            (Seg::Index(i), Some(Node::Array(items))) => items.get(*i),
            _ => None,
        };
        let Some(found) = found else { break };
        offset = found.span().start;
        node = Some(found.get_ref());
    }
    offset
}

/// Takes the node at `path` out of the tree: a key is removed, an array element is marked
/// pruned, or where a table belongs becomes an empty table (keeping later indices).
fn prune(node: &mut Node, path: &[Seg], table_slot: bool) -> bool {
    match (node, path) {
        (Node::Table(entries), [Seg::Key(key), rest @ ..]) => {
            let Some(at) = entries.iter().position(|(k, _)| k == key) else {
                return false;
            };
            if rest.is_empty() {
                entries.remove(at);
                true
            } else {
                prune(entries[at].1.get_mut(), rest, table_slot)
            }
        }
        (Node::Array(items), [Seg::Index(i), rest @ ..]) if *i < items.len() => {
            if !rest.is_empty() {
                return prune(items[*i].get_mut(), rest, table_slot);
            }
            *items[*i].get_mut() = if table_slot {
                Node::Table(Vec::new())
            } else {
                Node::Pruned
            };
            true
        }
        _ => false,
    }
}

/// Check configuration text, labelling diagnostics with `file`.
pub(crate) fn check_text(text: &str, file: &str) -> Vec<Diagnostic> {
    check_text_all(text, file).0
}

/// Like [`check_text`], and also the warnings of a valid text: things start-up accepts
/// that have no effect (access rules that can never match). Returns (errors, warnings).
pub(crate) fn check_text_all(text: &str, file: &str) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let lines = Lines::new(text);
    let diagnostic = |path: &KeyPath, offset: usize, message: String| Diagnostic {
        file: file.to_owned(),
        key: path.to_string(),
        line: lines.line(offset),
        message,
    };
    let root = match toml::from_str::<Node>(text) {
        Ok(Node::Table(entries)) => entries,
        Ok(_) => Vec::new(),
        Err(e) => {
            let syntax = Diagnostic {
                file: file.to_owned(),
                key: String::new(),
                line: e.span().map_or(1, |s| lines.line(s.start)),
                message: e.message().trim().to_owned(),
            };
            return (vec![syntax], Vec::new());
        }
    };
    let mut diagnostics = Vec::new();
    let mut pruned_values = Vec::new();
    let mut pruned = Spanned::new(0..text.len(), Node::Table(root.clone()));
    let raw = loop {
        match RawConfig::deserialize(NodeDe::new(&pruned, KeyPath::default())) {
            Ok(raw) => break Some(raw),
            Err(NodeError {
                at,
                message,
                table_slot,
                known,
            }) => {
                let (path, offset) = at.unwrap_or_default();
                diagnostics.push(diagnostic(&path, offset, message));
                if known.is_none() {
                    pruned_values.push(path.to_string());
                }
                if !prune(pruned.get_mut(), &path.0, table_slot) {
                    break None;
                }
            }
        }
    };
    let mut warnings = Vec::new();
    let validated = raw.as_ref().map(RawConfig::validate);
    if let (Some(Ok(config)), true) = (&validated, diagnostics.is_empty()) {
        for KeyError { path, message } in super::raw::access_warnings(&config.access) {
            warnings.push(diagnostic(&path, locate(&root, &path), message));
        }
    }
    if let Some(Err(errors)) = validated {
        // A value already reported was pruned: an error about it, what it held or the table
        // or array it was in would only repeat that error.
        for KeyError { path, message } in errors {
            let key = path.to_string();
            let related = |r: &String| {
                let nested = |outer: &str, inner: &str| {
                    inner.starts_with(&format!("{outer}."))
                        || inner.starts_with(&format!("{outer}["))
                };
                key == *r || nested(r, &key) || nested(&key, r)
            };
            if pruned_values.iter().any(related) {
                continue;
            }
            diagnostics.push(diagnostic(&path, locate(&root, &path), message));
        }
    }
    diagnostics.sort_by_key(|d| d.line);
    warnings.sort_by_key(|d| d.line);
    (diagnostics, warnings)
}

/// The key no struct names, which the schema walk offers to have the keys refused.
const PROBE: &str = "\0";

/// A table holding only [`PROBE`].
fn probe_table() -> Node {
    Node::Table(vec![(PROBE.to_owned(), Spanned::new(0..0, Node::Int(0)))])
}

/// The keys the struct at `at` names, as it lists them refusing [`PROBE`] in `tree`.
fn known_keys(tree: Node, at: &KeyPath) -> Option<&'static [&'static str]> {
    let tree = Spanned::new(0..0, tree);
    match RawConfig::deserialize(NodeDe::new(&tree, KeyPath::default())) {
        Err(NodeError {
            at: Some((path, _)),
            known,
            ..
        }) if path == at.key(PROBE) => known,
        _ => None,
    }
}

/// Every key the configuration knows, as `table.key` (no indices for arrays of tables), in
/// the order of the raw structs: each table (or array of tables) is offered [`PROBE`] and
/// refuses it naming its keys.
pub(crate) fn schema_keys() -> Vec<String> {
    let root = known_keys(probe_table(), &KeyPath::default()).unwrap_or_default();
    let mut keys = Vec::new();
    for table in root {
        let path = KeyPath::keys(&[table]);
        let under = |node| Node::Table(vec![((*table).to_owned(), Spanned::new(0..0, node))]);
        let array = Node::Array(vec![Spanned::new(0..0, probe_table())]);
        let fields = known_keys(under(probe_table()), &path)
            .or_else(|| known_keys(under(array), &path.index(0)));
        match fields {
            Some(fields) => keys.extend(fields.iter().map(|k| format!("{table}.{k}"))),
            None => keys.push((*table).to_owned()),
        }
    }
    keys
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

    #[test]
    fn the_schema_comes_from_the_raw_structs() {
        let keys = schema_keys();
        for key in [
            "clock.backend",
            "server.minpoll",
            "access.prefixes",
            "multicast-server.ttl",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
        // Each multicast table knows only its own side's keys.
        assert!(!keys.iter().any(|k| k == "multicast-client.ttl"));
        assert!(!keys.iter().any(|k| k == "multicast-server.recalibrate"));
    }
}
