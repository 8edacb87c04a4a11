//! YAML text → a small node tree that keeps each node's line and each scalar's source text.
//!
//! Built on the event parser serde-saphyr ships (`granit_parser`), not on serde: the validator
//! needs what serde throws away — the raw text of `permissions: 0744` (coreos-cloudinit keeps
//! "0744", a deserializer would give 744 or 484), explicit tags (`!!binary`), quoting, and the
//! line of every key. Typing follows go-yaml v1 (YAML 1.1), which coreos-cloudinit used: `off`
//! and `yes` are booleans, `0744` is an octal int, `~` and an empty value are null.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};

/// One node and the line (1-based) where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<MapEntry>),
}

/// A mapping entry: the key's text and line (diagnostics about a value name the key's line, as
/// coreos-cloudinit does), and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct MapEntry {
    pub key: String,
    pub key_line: usize,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The scalar after YAML escape processing (for `!!binary`, the base64 text as written).
    pub text: String,
    /// Plain (unquoted, not a block scalar): only these are implicitly typed.
    pub plain: bool,
    /// Explicit tag, as `!!suffix` for the YAML core schema, otherwise handle + suffix.
    pub tag: Option<String>,
    /// For `!!binary`: the decoded bytes (go-yaml hands these to string fields).
    pub binary: Option<Vec<u8>>,
}

/// The type go-yaml v1 gives a scalar when it unmarshals into `interface{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Null,
    Bool(bool),
    Int,
    Float,
    Str,
}

/// A YAML syntax error: where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

impl Scalar {
    /// The bytes a string field receives: the decoded `!!binary` payload, else the text.
    pub fn bytes(&self) -> &[u8] {
        self.binary.as_deref().unwrap_or(self.text.as_bytes())
    }

    pub fn resolve(&self) -> Resolved {
        match self.tag.as_deref() {
            Some("!!str") | Some("!!binary") => return Resolved::Str,
            Some("!!null") => return Resolved::Null,
            Some("!!int") => return Resolved::Int,
            Some("!!float") => return Resolved::Float,
            Some("!!bool") => return resolve_plain(&self.text),
            Some("!") | None => {}
            Some(_) => return Resolved::Str,
        }
        if !self.plain {
            return Resolved::Str;
        }
        resolve_plain(&self.text)
    }
}

/// go-yaml v1's implicit resolution of a plain scalar.
pub fn resolve_plain(s: &str) -> Resolved {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Resolved::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Resolved::Bool(false)
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return Resolved::Float,
        _ => {}
    }
    // Only text starting with a digit, a sign or a dot is tried as a number.
    let first = s.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.')) {
        return Resolved::Str;
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    if is_go_int(&plain) {
        Resolved::Int
    } else if plain.parse::<f64>().is_ok() {
        Resolved::Float
    } else {
        Resolved::Str
    }
}

/// `strconv.ParseInt(s, 0, 64)` succeeds (sign; 0x / 0o / 0b / leading-0 octal / decimal).
fn is_go_int(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = body.to_ascii_lowercase();
    let (digits, radix) = if let Some(h) = lower.strip_prefix("0x") {
        (h, 16)
    } else if let Some(o) = lower.strip_prefix("0o") {
        (o, 8)
    } else if let Some(b) = lower.strip_prefix("0b") {
        (b, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    !digits.is_empty() && i64::from_str_radix(digits, radix).is_ok()
}

impl Node {
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// A null scalar (`key:`, `key: ~`): coreos-cloudinit treats the key as absent-valued.
    pub fn is_null(&self) -> bool {
        matches!(self.as_scalar().map(Scalar::resolve), Some(Resolved::Null))
    }

    /// Value of `key` in a mapping (the last one if repeated, as go-yaml does).
    pub fn get(&self, key: &str) -> Option<&MapEntry> {
        match &self.value {
            Value::Map(entries) => entries.iter().rev().find(|e| e.key == key),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }
}

/// Parse the first YAML document of `text`. `Ok(None)` when it holds no document (only
/// comments, as a bare `#cloud-config` does).
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        multiline: Vec::new(),
    };
    let root = b.document()?;
    check_tabs(text, &b.multiline)?;
    Ok(root)
}

/// libyaml (under go-yaml, under coreos-cloudinit) refuses a tab at the start of a line in
/// block context — "found character that cannot start any token" — even on a blank or comment
/// line, where YAML 1.2 parsers let it pass. Keel keeps libyaml's verdict: a tab-indented
/// cloud-config is a mistake. Lines inside multi-line scalars (a `|` block's content) are text.
fn check_tabs(text: &str, multiline: &[(usize, usize)]) -> Result<(), SyntaxError> {
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let lead = line.trim_start_matches(' ');
        if lead.starts_with('\t') && !multiline.iter().any(|&(a, b)| a < n && n <= b) {
            return Err(SyntaxError {
                line: n,
                message:
                    "found character that cannot start any token (a tab; YAML indents with spaces)"
                        .into(),
            });
        }
    }
    Ok(())
}

impl<'a> Builder<'a> {
    fn document(&mut self) -> Result<Option<Node>, SyntaxError> {
        let b = self;
        loop {
            match b.next()? {
                None | Some((Event::StreamEnd, _)) => return Ok(None),
                Some((Event::DocumentStart(..), _)) => break,
                Some(_) => {}
            }
        }
        match b.next()? {
            Some((Event::DocumentEnd, _)) | None => Ok(None),
            Some((ev, span)) => {
                let node = b.node(ev, span)?;
                // Surface a syntax error later in the same document (go-yaml reads it all).
                loop {
                    match b.next()? {
                        None | Some((Event::DocumentEnd, _)) | Some((Event::StreamEnd, _)) => break,
                        Some(_) => {}
                    }
                }
                Ok(Some(node))
            }
        }
    }
}

struct Builder<'a> {
    parser: Parser<'a, serde_saphyr::granit_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    /// (first, last) lines of scalars that span lines.
    multiline: Vec<(usize, usize)>,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<Option<(Event<'a>, Span)>, SyntaxError> {
        loop {
            let ev = match self.parser.next_event() {
                None => return Ok(None),
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    return Err(SyntaxError {
                        line: e.marker().line(),
                        message: e.info(),
                    })
                }
            };
            // Presentation-only events (comments, anchor metadata) are not nodes.
            if matches!(
                ev.0,
                Event::StreamStart
                    | Event::StreamEnd
                    | Event::DocumentStart(..)
                    | Event::DocumentEnd
                    | Event::Alias(_)
                    | Event::UnresolvedAlias(_)
                    | Event::Scalar(..)
                    | Event::SequenceStart(..)
                    | Event::SequenceEnd
                    | Event::MappingStart(..)
                    | Event::MappingEnd
            ) {
                return Ok(Some(ev));
            }
        }
    }

    fn next_required(&mut self) -> Result<(Event<'a>, Span), SyntaxError> {
        self.next()?.ok_or_else(|| SyntaxError {
            line: 0,
            message: "unexpected end of the document".into(),
        })
    }

    fn node(&mut self, ev: Event<'a>, span: Span) -> Result<Node, SyntaxError> {
        let line = span.start.line();
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| {
                    if t.handle() == "tag:yaml.org,2002:" {
                        format!("!!{}", t.suffix())
                    } else {
                        format!("{}{}", t.handle(), t.suffix())
                    }
                });
                let binary = match tag.as_deref() {
                    Some("!!binary") => Some(
                        crate::encoding::decode_base64(text.as_bytes()).map_err(|_| {
                            SyntaxError {
                                line,
                                message: "!!binary value is not valid base64".into(),
                            }
                        })?,
                    ),
                    _ => None,
                };
                if span.end.line() > line {
                    self.multiline.push((line, span.end.line()));
                }
                let scalar = Scalar {
                    text: text.into_owned(),
                    plain: style == ScalarStyle::Plain,
                    tag,
                    binary,
                };
                (
                    Node {
                        line,
                        value: Value::Scalar(scalar),
                    },
                    anchor,
                )
            }
            Event::SequenceStart(_, anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next_required()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, span)?);
                }
                (
                    Node {
                        line,
                        value: Value::Seq(items),
                    },
                    anchor,
                )
            }
            Event::MappingStart(_, anchor, _) => {
                let mut entries = Vec::new();
                loop {
                    let (ev, span) = self.next_required()?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(ev, span)?;
                    let (ev, span) = self.next_required()?;
                    let value = self.node(ev, span)?;
                    let key_text = match &key.value {
                        Value::Scalar(s) => s.text.clone(),
                        _ => "?".to_string(),
                    };
                    entries.push(MapEntry {
                        key: key_text,
                        key_line: key.line,
                        value,
                    });
                }
                (
                    Node {
                        line,
                        value: Value::Map(entries),
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                let mut node = self.anchors.get(&id).cloned().ok_or_else(|| SyntaxError {
                    line,
                    message: "unknown anchor".into(),
                })?;
                node.line = line;
                (node, 0)
            }
            other => {
                return Err(SyntaxError {
                    line,
                    message: format!("unexpected YAML event {other:?}"),
                })
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_raw_text_are_kept() {
        let n = parse("#cloud-config\nwrite_files:\n  - path: /a\n    permissions: 0744\n")
            .unwrap()
            .unwrap();
        let wf = n.get("write_files").unwrap();
        assert_eq!(wf.key_line, 2);
        let item = &wf.value.items()[0];
        assert_eq!(item.line, 3);
        let p = item.get("permissions").unwrap();
        assert_eq!(p.key_line, 4);
        let s = p.value.as_scalar().unwrap();
        assert_eq!(s.text, "0744");
        assert_eq!(s.resolve(), Resolved::Int);
    }

    #[test]
    fn go_yaml_v1_typing() {
        for (t, r) in [
            ("off", Resolved::Bool(false)),
            ("yes", Resolved::Bool(true)),
            ("", Resolved::Null),
            ("~", Resolved::Null),
            ("744", Resolved::Int),
            ("0x1f", Resolved::Int),
            ("089", Resolved::Float),
            ("1.5", Resolved::Float),
            ("1h", Resolved::Str),
            ("etcd-lock", Resolved::Str),
        ] {
            assert_eq!(resolve_plain(t), r, "{t:?}");
        }
        let n = parse("a: 'off'\nb: !!binary aGVsbG8K\n").unwrap().unwrap();
        assert_eq!(
            n.get("a").unwrap().value.as_scalar().unwrap().resolve(),
            Resolved::Str
        );
        let b = n.get("b").unwrap().value.as_scalar().unwrap();
        assert_eq!(b.bytes(), b"hello\n");
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let e = parse("#cloud-config\n# c\na:\na").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        let e = parse("#cloud-config\n# c\n\t").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn aliases_and_empty_documents() {
        assert_eq!(parse("#cloud-config\n").unwrap(), None);
        let n = parse("a: &x [1, 2]\nb: *x\n").unwrap().unwrap();
        assert_eq!(n.get("b").unwrap().value.items().len(), 2);
    }
}
