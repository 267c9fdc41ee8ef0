//! A YAML document tree that remembers the line of every node.
//!
//! The config decoder needs the line of each field so that every error can say where
//! the operator should look. `yaml-rust2`'s marked event stream gives us that; this
//! module folds the events into a small [`Node`] tree and resolves plain scalars with
//! the YAML 1.2 core schema (so `8000` is an integer and `"8000"` a string).

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One YAML value and the (1-based) line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// 1-based line of the first character of the value.
    pub line: usize,
}

/// A resolved YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits in an `i64`.
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// Any string (quoted, or plain that is not another type).
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order. Keys are strings (other key types are stringified).
    Map(Vec<(Key, Node)>),
}

/// A mapping key and the line it is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// 1-based line of the key.
    pub line: usize,
}

impl Node {
    /// Returns a short word for the node's type, used in "expected X, got Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "an array",
            Value::Map(_) => "a map",
        }
    }
}

/// A YAML syntax error with its line.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// What the scanner reported.
    pub message: String,
}

/// Parses one YAML document into a [`Node`] tree.
///
/// Runs once per config load. Returns the document root (`Null` for an empty file) or
/// the first syntax error. Aliases are expanded; a document with more than
/// [`MAX_NODES`] nodes after expansion is refused, so a "billion laughs" file cannot
/// exhaust memory.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    // A byte-order mark is not part of the document.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    // Events are pulled one at a time (the parser's state machine is iterative), so a
    // deeply nested document meets MAX_DEPTH instead of overflowing the stack.
    loop {
        let (event, mark) = parser.next_token().map_err(|e| SyntaxError {
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
        let end = matches!(event, Event::StreamEnd | Event::DocumentEnd);
        builder.on_event(event, mark);
        if let Some(err) = builder.error.take() {
            return Err(err);
        }
        if end {
            break;
        }
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        line: 1,
    }))
}

/// Upper bound on the number of nodes a config document may expand to.
pub const MAX_NODES: usize = 5_000_000;

/// Upper bound on how deeply maps and sequences may nest.
pub const MAX_DEPTH: usize = 64;

enum Frame {
    Seq(Vec<Node>, usize, usize),
    Map(Vec<(Key, Node)>, Option<Key>, usize, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: std::collections::HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    nodes: usize,
}

impl Builder {
    fn fail(&mut self, line: usize, message: &str) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                line,
                message: message.to_string(),
            });
        }
    }

    /// Counts `n` new nodes; false (after recording the error) past [`MAX_NODES`].
    fn count_nodes(&mut self, n: usize, line: usize) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            self.fail(
                line,
                "document too large (more than 5,000,000 values, counting alias expansions)",
            );
            return false;
        }
        true
    }

    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(items, _, _)) => items.push(node),
            Some(Frame::Map(entries, pending, _, _)) => match pending.take() {
                None => {
                    let name = match &node.value {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Null => "null".to_string(),
                        Value::Seq(_) | Value::Map(_) => {
                            let line = node.line;
                            self.fail(line, "complex mapping keys are not supported");
                            return;
                        }
                    };
                    *pending = Some(Key {
                        name,
                        line: node.line,
                    });
                }
                Some(key) => entries.push((key, node)),
            },
        }
    }
}

fn count(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| 1 + count(v)).sum::<usize>(),
        _ => 1,
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        if matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..)) {
            if self.stack.len() >= MAX_DEPTH {
                self.fail(line, "nesting too deep (more than 64 levels)");
                return;
            }
            if !self.count_nodes(1, line) {
                return;
            }
        }
        match ev {
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq(Vec::new(), anchor, line))
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(Vec::new(), None, anchor, line))
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(items, anchor, line)) => self.push_value(
                    Node {
                        value: Value::Seq(items),
                        line,
                    },
                    anchor,
                ),
                Some(Frame::Map(entries, _, anchor, line)) => self.push_value(
                    Node {
                        value: Value::Map(entries),
                        line,
                    },
                    anchor,
                ),
                None => self.fail(line, "unbalanced collection"),
            },
            Event::Scalar(text, style, anchor, _) => {
                if !self.count_nodes(1, line) {
                    return;
                }
                let value = if style == TScalarStyle::Plain {
                    resolve_plain(text)
                } else {
                    Value::Str(text)
                };
                self.push_value(Node { value, line }, anchor);
            }
            Event::Alias(id) => {
                let size = self.anchors.get(&id).map(count);
                match size {
                    // Count before cloning, so an alias bomb is refused before it is built.
                    Some(n) if self.count_nodes(n, line) => {
                        if let Some(mut node) = self.anchors.get(&id).cloned() {
                            node.line = line;
                            self.push_value(node, 0);
                        }
                    }
                    Some(_) => {}
                    None => self.fail(line, "unknown alias"),
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// Resolves a plain (unquoted) scalar with the YAML 1.2 core schema.
fn resolve_plain(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(i) = parse_int(&text) {
        return Value::Int(i);
    }
    let looks_numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text)
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(hex) = digits.strip_prefix("0x") {
        (16, hex)
    } else if let Some(oct) = digits.strip_prefix("0o") {
        (8, oct)
    } else {
        (10, digits)
    };
    // from_str_radix accepts a sign of its own; the sign was taken above.
    if digits.is_empty() || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    i64::try_from(if neg { -magnitude } else { magnitude }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_resolve_with_the_core_schema() {
        let doc = parse("a: 1\nb: \"1\"\nc: true\nd: ~\ne: 1.5\nf: text\ng: '1.1'\n").unwrap();
        let Value::Map(entries) = doc.value else {
            panic!("not a map")
        };
        let values: Vec<_> = entries.iter().map(|(_, v)| v.value.clone()).collect();
        assert_eq!(
            values,
            vec![
                Value::Int(1),
                Value::Str("1".into()),
                Value::Bool(true),
                Value::Null,
                Value::Float(1.5),
                Value::Str("text".into()),
                Value::Str("1.1".into()),
            ]
        );
    }

    #[test]
    fn lines_are_recorded_for_keys_and_values() {
        let doc = parse("services:\n  - name: a\n    url: http://x\n").unwrap();
        let Value::Map(entries) = doc.value else {
            panic!()
        };
        assert_eq!(entries[0].0.line, 1);
        let Value::Seq(items) = &entries[0].1.value else {
            panic!()
        };
        let Value::Map(svc) = &items[0].value else {
            panic!()
        };
        assert_eq!(svc[1].0.name, "url");
        assert_eq!(svc[1].0.line, 3);
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let err = parse("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
    }

    #[test]
    fn aliases_expand_and_bombs_are_refused() {
        let doc = parse("a: &x [1, 2]\nb: *x\n").unwrap();
        let Value::Map(entries) = doc.value else {
            panic!()
        };
        assert_eq!(entries[0].1.value, entries[1].1.value);
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
                p = i - 1
            ));
        }
        assert!(parse(&bomb).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("a:\n{}x", "- ".repeat(100_000));
        let err = parse(&deep).unwrap_err();
        assert!(err.message.contains("nesting too deep"), "{err:?}");
        let mut maps = String::new();
        for i in 0..3000 {
            maps.push_str(&format!("{}k:\n", " ".repeat(i)));
        }
        assert!(parse(&maps)
            .unwrap_err()
            .message
            .contains("nesting too deep"));
    }

    #[test]
    fn large_flat_documents_are_fine() {
        let mut doc = String::from("services:\n");
        for i in 0..20_000 {
            doc.push_str(&format!(
                "  - name: s{i}\n    routes:\n      - paths: [/p{i}]\n"
            ));
        }
        assert!(parse(&doc).is_ok());
    }

    #[test]
    fn integers_never_overflow_and_signs_are_not_doubled() {
        assert_eq!(
            resolve_plain("-0x-8000000000000000".into()),
            Value::Str("-0x-8000000000000000".into())
        );
        assert_eq!(resolve_plain("0x-5".into()), Value::Str("0x-5".into()));
        assert_eq!(
            resolve_plain("-0x8000000000000000".into()),
            Value::Int(i64::MIN)
        );
        assert_eq!(resolve_plain("0x10".into()), Value::Int(16));
        assert_eq!(
            resolve_plain("99999999999999999999".into()),
            Value::Float(1e20)
        );
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let doc = parse("\u{feff}a: 1\n").unwrap();
        let Value::Map(entries) = doc.value else {
            panic!()
        };
        assert_eq!(entries[0].0.name, "a");
    }
}
