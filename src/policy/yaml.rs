//! YAML text → documents of [`Node`]s that keep their line and scalar style.
//!
//! Validation needs both: every problem names its line, and an unquoted `no` or `1234` where a
//! name is expected must be an error rather than a silent conversion, which only the scalar's
//! style can tell. Aliases are expanded here under a node budget, so an alias bomb is an error
//! and not an exhausted machine.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

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
pub fn parse(text: &str) -> Result<Vec<Document>, YamlError> {
    if let Some(line) = too_deep(text) {
        return Err(YamlError {
            line,
            message: format!("nesting deeper than {MAX_DEPTH} levels"),
        });
    }
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let result = parser.load(&mut builder, true);
    if let Some(error) = builder.error {
        return Err(error);
    }
    result.map_err(|e| YamlError {
        line: e.marker().line(),
        message: e.info().to_string(),
    })?;
    Ok(builder.documents)
}

/// A cheap pre-scan for flow nesting (`[[[[…`) that would recurse deeply in the parser: the
/// line of the first place that opens more than [`MAX_DEPTH`] levels. Block nesting is bounded
/// by indentation and checked while building.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut quote: Option<u8> = None;
    let mut comment = false;
    let mut prev = b'\n';
    for &b in text.as_bytes() {
        if b == b'\n' {
            line += 1;
            comment = false;
        } else if comment {
        } else if let Some(q) = quote {
            if b == q && (q == b'\'' || prev != b'\\') {
                quote = None;
            }
        } else {
            match b {
                b'#' if prev.is_ascii_whitespace() => comment = true,
                b'"' | b'\''
                    if matches!(prev, b' ' | b'\t' | b'\n' | b'[' | b'{' | b',' | b':') =>
                {
                    quote = Some(b)
                }
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Some(line);
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        prev = if prev == b'\\' && b == b'\\' { 0 } else { b };
    }
    None
}

enum Frame {
    Seq(usize, Vec<Node>, usize),
    Map(usize, Vec<(Node, Node)>, Option<Node>, usize),
}

#[derive(Default)]
struct Builder {
    documents: Vec<Document>,
    stack: Vec<Frame>,
    anchors: Vec<(usize, Node, usize)>,
    doc_line: usize,
    root: Option<Node>,
    nodes: usize,
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, line: usize, message: String) {
        if self.error.is_none() {
            self.error = Some(YamlError { line, message });
        }
    }

    fn count(&mut self, n: usize, line: usize) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            self.fail(
                line,
                format!("more than {MAX_NODES} nodes (aliases expanded): refusing to load"),
            );
            return false;
        }
        true
    }

    fn push_node(&mut self, node: Node, anchor: usize, size: usize) {
        if anchor > 0 {
            self.anchors.push((anchor, node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(_, items, _)) => items.push(node),
            Some(Frame::Map(_, entries, key, _)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

fn size_of(node: &Node) -> usize {
    match &node.value {
        Value::Scalar(_) => 1,
        Value::Seq(items) => 1 + items.iter().map(size_of).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| size_of(k) + size_of(v))
                .sum::<usize>()
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
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
                if !self.count(1, line) {
                    return;
                }
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
                self.push_node(node, anchor, 1);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(line, format!("nesting deeper than {MAX_DEPTH} levels"));
                    return;
                }
                if !self.count(1, line) {
                    return;
                }
                let frame = if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq(line, Vec::new(), anchor)
                } else {
                    Frame::Map(line, Vec::new(), None, anchor)
                };
                self.stack.push(frame);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq(line, items, anchor)) => (
                        Node {
                            line,
                            value: Value::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map(line, entries, _, anchor)) => (
                        Node {
                            line,
                            value: Value::Map(entries),
                        },
                        anchor,
                    ),
                    None => return,
                };
                let size = if anchor > 0 { size_of(&node) } else { 0 };
                self.push_node(node, anchor, size);
            }
            Event::Alias(id) => {
                let Some((_, node, size)) = self.anchors.iter().rev().find(|(a, ..)| *a == id)
                else {
                    self.fail(line, "unknown alias".to_string());
                    return;
                };
                let (mut node, size) = (node.clone(), *size);
                if !self.count(size, line) {
                    return;
                }
                node.line = line;
                self.push_node(node, 0, size);
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
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

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
    }
}
