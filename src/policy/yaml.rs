//! YAML text → documents of [`Node`]s that keep their line and scalar style.
//!
//! Validation needs both: every problem names its line, and an unquoted `no` or `1234` where a
//! name is expected must be an error rather than a silent conversion, which only the scalar's
//! style can tell. Aliases are expanded here under a node budget, so an alias bomb is an error
//! and not an exhausted machine.

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;

/// Most nodes one file may expand to, aliases included.
pub const MAX_NODES: usize = 1_000_000;
/// Deepest nesting of sequences and mappings in one document.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// Plain (unquoted, untagged) scalars are the ones YAML resolves to null, bool or number.
    pub plain: bool,
    /// An explicit `!!str` tag makes any scalar a string.
    pub tagged_str: bool,
}

/// One YAML document of a file, with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub line: usize,
    /// `None` for an empty document.
    pub root: Option<Node>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

impl Node {
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// `~`, `null` or an empty plain scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.plain && is_null_text(&s.text))
    }

    /// What YAML calls this node, for "expected a string, found a boolean" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Map(_) => "a mapping",
            Value::Seq(_) => "a sequence",
            Value::Scalar(s) if !s.plain => "a string",
            Value::Scalar(s) => plain_scalar_type(&s.text),
        }
    }

    /// The value under `key` in a mapping (first occurrence).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_scalar().is_some_and(|s| s.text == key))
            .map(|(_, v)| v)
    }
}

fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// How YAML (1.1, as Kubernetes tools read it, or 1.2) resolves a plain scalar.
pub fn plain_scalar_type(text: &str) -> &'static str {
    if is_null_text(text) {
        return "null";
    }
    if matches!(
        text,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    ) {
        return "a boolean";
    }
    if is_yaml_number(text) {
        return "a number";
    }
    "a string"
}

fn is_yaml_number(text: &str) -> bool {
    let t = text.strip_prefix(['+', '-']).unwrap_or(text);
    if t.is_empty() {
        return false;
    }
    let lower = t.to_ascii_lowercase();
    if matches!(lower.as_str(), ".inf" | ".nan") {
        return true;
    }
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(digits) = lower.strip_prefix(prefix) {
            return !digits.is_empty() && digits.chars().all(|c| c == '_' || c.is_digit(radix));
        }
    }
    // Decimal, octal and sexagesimal integers (YAML 1.1 allows `_` and `:`).
    let bytes = t.as_bytes();
    if bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_digit() || b == b'_' || b == b':')
    {
        return true;
    }
    // Floats: digits, one dot, optional exponent.
    let (mantissa, exponent) = match lower.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (lower.as_str(), None),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    let mut dots = 0;
    let mut digits = 0;
    for b in mantissa.bytes() {
        match b {
            b'.' => dots += 1,
            b'0'..=b'9' => digits += 1,
            b'_' => {}
            _ => return false,
        }
    }
    exponent_ok && digits > 0 && (dots == 1 || (dots == 0 && exponent.is_some()))
}

/// Parses every document of `text`. A syntax error ends the file: YAML cannot resynchronise.
///
/// The parser is pulled one event at a time rather than driven by `Parser::load`, which recurses
/// once per nesting level: nesting is counted here, so hostile depth is an error before the
/// stack can suffer. yaml-rust2's parser keeps its states on a heap stack and its scanner is
/// iterative, so pulling events never recurses.
pub fn parse(text: &str) -> Result<Vec<Document>, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, mark) = parser.next_token().map_err(|e| {
            let line = e.marker().line();
            if e.info() == SCANNER_FLOW_LIMIT {
                too_deep(line)
            } else {
                YamlError {
                    line,
                    message: e.info().to_string(),
                }
            }
        })?;
        if event == Event::StreamEnd {
            return Ok(builder.documents);
        }
        builder.on_event(event, mark.line())?;
    }
}

/// How yaml-rust2's scanner refuses more than 255 open flow collections. It reads a whole flow
/// collection ahead (to tell whether it is a key) before the parser emits its first event, so
/// past that depth this error comes before the events the builder counts.
const SCANNER_FLOW_LIMIT: &str = "recursion limit exceeded";

fn too_deep(line: usize) -> YamlError {
    YamlError {
        line,
        message: format!("nesting deeper than {MAX_DEPTH} levels"),
    }
}

/// A collection being built. `size` (nodes, itself included) and `height` (collection levels,
/// itself included) grow as children arrive, so an anchored collection is measured without a
/// walk over it.
struct Frame {
    line: usize,
    anchor: usize,
    size: usize,
    height: usize,
    content: Content,
}

enum Content {
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>, Option<Node>),
}

/// A node defined under an anchor, with its size and height for the aliases that repeat it.
struct Anchored {
    id: usize,
    node: Node,
    size: usize,
    height: usize,
}

#[derive(Default)]
struct Builder {
    documents: Vec<Document>,
    stack: Vec<Frame>,
    anchors: Vec<Anchored>,
    doc_line: usize,
    root: Option<Node>,
    nodes: usize,
}

impl Builder {
    fn count(&mut self, n: usize, line: usize) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                line,
                message: format!(
                    "more than {MAX_NODES} nodes (aliases expanded): refusing to load"
                ),
            });
        }
        Ok(())
    }

    /// Places a finished node in its parent (or as the root).
    fn push_node(&mut self, node: Node, anchor: usize, size: usize, height: usize) {
        if anchor > 0 {
            self.anchors.push(Anchored {
                id: anchor,
                node: node.clone(),
                size,
                height,
            });
        }
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        parent.size = parent.size.saturating_add(size);
        parent.height = parent.height.max(height + 1);
        match &mut parent.content {
            Content::Seq(items) => items.push(node),
            Content::Map(entries, key) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }

    fn on_event(&mut self, event: Event, line: usize) -> Result<(), YamlError> {
        match event {
            Event::DocumentStart => {
                self.doc_line = line;
                self.root = None;
                self.anchors.clear();
            }
            Event::DocumentEnd => self.documents.push(Document {
                line: self.doc_line,
                root: self.root.take(),
            }),
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, line)?;
                let tagged_str = tag.as_ref().is_some_and(is_str_tag);
                let plain = style == TScalarStyle::Plain && tag.is_none();
                let node = Node {
                    line,
                    value: Value::Scalar(Scalar {
                        text,
                        plain,
                        tagged_str,
                    }),
                };
                self.push_node(node, anchor, 1, 0);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(too_deep(line));
                }
                self.count(1, line)?;
                let content = if matches!(event, Event::SequenceStart(..)) {
                    Content::Seq(Vec::new())
                } else {
                    Content::Map(Vec::new(), None)
                };
                self.stack.push(Frame {
                    line,
                    anchor,
                    size: 1,
                    height: 1,
                    content,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Ok(());
                };
                let value = match frame.content {
                    Content::Seq(items) => Value::Seq(items),
                    Content::Map(entries, _) => Value::Map(entries),
                };
                let node = Node {
                    line: frame.line,
                    value,
                };
                self.push_node(node, frame.anchor, frame.size, frame.height);
            }
            Event::Alias(id) => {
                let Some(anchored) = self.anchors.iter().rev().find(|a| a.id == id) else {
                    return Err(YamlError {
                        line,
                        message: "unknown alias".to_string(),
                    });
                };
                // An alias repeats its anchor's whole depth where it stands.
                if self.stack.len() + anchored.height > MAX_DEPTH {
                    return Err(too_deep(line));
                }
                let (mut node, size, height) =
                    (anchored.node.clone(), anchored.size, anchored.height);
                self.count(size, line)?;
                node.line = line;
                self.push_node(node, 0, size, height);
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        Ok(())
    }
}

fn is_str_tag(tag: &Tag) -> bool {
    tag.suffix == "str" && (tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_and_styles() {
        let docs = parse("a: 1\nb: 'no'\nc: no\n---\n---\nd: [x, y]\n").unwrap();
        assert_eq!(docs.len(), 3);
        let root = docs[0].root.as_ref().unwrap();
        assert_eq!(root.get("b").unwrap().line, 2);
        assert_eq!(root.get("b").unwrap().type_name(), "a string");
        assert_eq!(root.get("c").unwrap().type_name(), "a boolean");
        assert_eq!(root.get("a").unwrap().type_name(), "a number");
        assert!(docs[1].root.as_ref().is_none_or(Node::is_null));
        assert_eq!(docs[2].line, 5);
        assert_eq!(docs[2].root.as_ref().unwrap().get("d").unwrap().line, 6);
    }

    #[test]
    fn resolves_plain_scalar_types() {
        for number in ["1234", "-1", "0x1F", "1.5", "1e3", ".inf", "1_000", "1:30"] {
            assert_eq!(plain_scalar_type(number), "a number", "{number}");
        }
        for string in ["h1", "a-new", "1.2.3", "e3", "0x", "team-1", "-", ".", "v1"] {
            assert_eq!(plain_scalar_type(string), "a string", "{string}");
        }
        assert_eq!(plain_scalar_type("~"), "null");
        assert_eq!(plain_scalar_type("Off"), "a boolean");
    }

    #[test]
    fn str_tag_makes_a_string() {
        let docs = parse("a: !!str 1234\n").unwrap();
        let a = docs[0].root.as_ref().unwrap().get("a").unwrap();
        assert!(a.as_scalar().unwrap().tagged_str);
    }

    #[test]
    fn aliases_expand_and_bombs_are_refused() {
        let docs = parse("a: &x {k: v}\nb: *x\n").unwrap();
        let root = docs[0].root.as_ref().unwrap();
        let b = root.get("b").unwrap();
        assert_eq!(b.line, 2);
        assert_eq!(b.get("k").unwrap().as_scalar().unwrap().text, "v");

        let mut bomb = String::from("a: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&bomb).unwrap_err();
        assert!(err.message.contains("nodes"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
        let ok = format!("a: {}{}\n", "[".repeat(10), "]".repeat(10));
        assert!(parse(&ok).is_ok());
        let quoted = format!("a: \"{}\"\n", "[".repeat(1000));
        assert!(parse(&quoted).is_ok());
    }

    /// Collection levels of a node: what [`MAX_DEPTH`] bounds.
    fn height(node: &Node) -> usize {
        match &node.value {
            Value::Scalar(_) => 0,
            Value::Seq(items) => 1 + items.iter().map(height).max().unwrap_or(0),
            Value::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| height(k).max(height(v)))
                    .max()
                    .unwrap_or(0)
            }
        }
    }

    fn flow_mixed(levels: usize) -> String {
        let open: String = (0..levels)
            .map(|i| if i % 2 == 0 { "[" } else { "{a: " })
            .collect();
        let close: String = (0..levels)
            .rev()
            .map(|i| if i % 2 == 0 { "]" } else { "}" })
            .collect();
        format!("{open}x{close}")
    }

    /// Documents whose root nests `levels` collections, and the line the 65th level opens on.
    /// Indented block mappings grow quadratically, so they stop at 5,000 levels (12.5 MB).
    fn nested(levels: usize) -> Vec<(&'static str, String, usize)> {
        let indented = levels.min(5_000);
        let block_map: String = (0..indented - 1)
            .map(|i| format!("{}a:\n", " ".repeat(i)))
            .chain([format!("{}a: x\n", " ".repeat(indented - 1))])
            .collect();
        let block = levels / 2;
        let mixed = format!(
            "{}{}{}\n",
            "? - ".repeat(block / 2),
            "- ".repeat(block % 2),
            flow_mixed(levels - block)
        );
        // The root sequence, then the anchored collection repeated inside the alias's own.
        let inner = levels / 2;
        let outer = levels - 1 - inner;
        let aliased = format!(
            "- &x {}x{}\n- {}*x{}\n",
            "[".repeat(inner),
            "]".repeat(inner),
            "[".repeat(outer),
            "]".repeat(outer)
        );
        let anchored = format!("- &x\n  {}x\n- *x\n", "- ".repeat(levels - 1));
        vec![
            ("block sequence", format!("{}x\n", "- ".repeat(levels)), 1),
            ("block mapping", block_map, MAX_DEPTH + 1),
            (
                "compact block mapping",
                format!("{}x\n", "? ".repeat(levels)),
                1,
            ),
            (
                "flow sequence",
                format!("{}{}\n", "[".repeat(levels), "]".repeat(levels)),
                1,
            ),
            (
                "flow mapping",
                format!("{}x{}\n", "{a: ".repeat(levels), "}".repeat(levels)),
                1,
            ),
            ("mixed block and flow", mixed, 1),
            ("deep inside an anchor", anchored, 2),
            ("anchor repeated by an alias", aliased, 2),
        ]
    }

    #[test]
    fn nesting_is_bounded_at_max_depth_in_every_construct() {
        for (construct, text, _) in nested(MAX_DEPTH) {
            let docs = parse(&text).unwrap_or_else(|e| panic!("{construct}: {e:?}"));
            let root = docs[0].root.as_ref().unwrap();
            assert_eq!(height(root), MAX_DEPTH, "{construct}");
        }
        for (construct, text, line) in nested(MAX_DEPTH + 1) {
            let err = parse(&text).unwrap_err();
            let expected = YamlError {
                line,
                message: "nesting deeper than 64 levels".into(),
            };
            assert_eq!(err, expected, "{construct}");
        }
    }

    /// The test thread's small stack is the point: any recursion per level would overflow it.
    #[test]
    fn hostile_depth_is_refused_without_recursion() {
        for (construct, text, _) in nested(100_000) {
            let err = parse(&text).unwrap_err();
            assert_eq!(err.message, "nesting deeper than 64 levels", "{construct}");
        }
    }

    #[test]
    fn aliases_cannot_stack_depth() {
        let mut chain = format!("a0: &a0 {}x{}\n", "[".repeat(60), "]".repeat(60));
        for i in 1..200 {
            let prev = i - 1;
            chain.push_str(&format!(
                "a{i}: &a{i} {}*a{prev}{}\n",
                "[".repeat(60),
                "]".repeat(60)
            ));
        }
        let err = parse(&chain).unwrap_err();
        assert_eq!(
            (err.line, err.message.as_str()),
            (2, "nesting deeper than 64 levels")
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
    }
}
