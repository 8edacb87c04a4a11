//! A small element tree over quick-xml: the one place that decides what well-formed means.
//!
//! Omaha carries everything in attributes, so text content is dropped; what matters is that a
//! body libxml2 would refuse (update_engine's parser) is refused here too: an XML declaration
//! anywhere but at byte 0, text or a second element outside the root, an unclosed element, a
//! name that is not an XML name, a duplicate attribute, an unknown entity.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::error::{Error, Position};

/// One element: its name, attributes in document order, child elements, and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// Byte offset of its `<` in the body (0 for elements built by the writers).
    pub offset: usize,
}

impl Element {
    pub fn new(name: &str) -> Self {
        Element {
            name: name.to_owned(),
            attrs: Vec::new(),
            children: Vec::new(),
            offset: 0,
        }
    }

    /// Adds `name="value"` when `value` is present.
    pub fn attr(&mut self, name: &str, value: Option<impl Into<String>>) -> &mut Self {
        if let Some(v) = value {
            self.attrs.push((name.to_owned(), v.into()));
        }
        self
    }
}

fn xml_error(body: &[u8], offset: usize, message: impl Into<String>) -> Error {
    Error::Xml {
        at: Position::in_body(body, offset),
        message: message.into(),
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    let start_ok = |c: char| c.is_alphabetic() || c == '_' || c == ':' || !c.is_ascii();
    match chars.next() {
        Some(c) if start_ok(c) => {}
        _ => return false,
    }
    chars.all(|c| start_ok(c) || c.is_ascii_digit() || c == '-' || c == '.')
}

fn element(body: &[u8], base: usize, offset: usize, e: &BytesStart<'_>) -> Result<Element, Error> {
    let at = base + offset;
    let name = std::str::from_utf8(e.name().as_ref())
        .map_err(|_| xml_error(body, at, "element name is not UTF-8"))?
        .to_owned();
    if !is_name(&name) {
        return Err(xml_error(
            body,
            at,
            format!("<{name}> is not a valid element name"),
        ));
    }
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| xml_error(body, at, format!("in <{name}>: {err}")))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        if !is_name(&key) {
            return Err(xml_error(
                body,
                at,
                format!("in <{name}>: {key:?} is not a valid attribute name"),
            ));
        }
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| xml_error(body, at, format!("in <{name}> attribute {key}: {err}")))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
        offset: at,
    })
}

/// Parses `body` into its root element, or says what makes it not well-formed and where.
pub(crate) fn parse_document(body: &[u8]) -> Result<Element, Error> {
    if body.is_empty() {
        return Err(Error::Empty);
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| xml_error(body, e.valid_up_to(), "not UTF-8 (Omaha bodies are UTF-8)"))?;
    let base = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let mut reader = Reader::from_str(&text[base..]);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.expand_empty_elements = false;

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let offset = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|err| {
            xml_error(
                body,
                base + reader.error_position() as usize,
                err.to_string(),
            )
        })?;
        let outside = stack.is_empty();
        match event {
            Event::Decl(_) if offset != 0 => {
                return Err(xml_error(
                    body,
                    base + offset,
                    "the XML declaration is not at the start of the document",
                ))
            }
            Event::Start(_) | Event::Empty(_) if outside && root.is_some() => {
                return Err(xml_error(body, base + offset, "a second root element"));
            }
            Event::Start(e) => stack.push(element(body, base, offset, &e)?),
            Event::Empty(e) => {
                let el = element(body, base, offset, &e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let el = stack.pop().expect("quick-xml refuses an unmatched end tag");
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) if outside && !t.iter().all(u8::is_ascii_whitespace) => {
                let what = String::from_utf8_lossy(&t)
                    .trim()
                    .chars()
                    .take(40)
                    .collect::<String>();
                return Err(xml_error(
                    body,
                    base + offset,
                    format!("text outside the root element: {what:?}"),
                ));
            }
            Event::CData(_) | Event::GeneralRef(_) if outside => {
                return Err(xml_error(
                    body,
                    base + offset,
                    "content outside the root element",
                ))
            }
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(xml_error(
                        body,
                        body.len(),
                        format!(
                            "<{}> opened at {} is never closed",
                            open.name,
                            Position::in_body(body, open.offset)
                        ),
                    ));
                }
                return root.ok_or_else(|| xml_error(body, body.len(), "no root element"));
            }
            _ => {}
        }
    }
}

/// Writes `root` as a UTF-8 document with an XML declaration, two-space indentation and
/// self-closing tags for childless elements.
pub(crate) fn write_document(root: &Element) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    write_element(&mut out, root, 0);
    out
}

fn write_element(out: &mut String, el: &Element, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
    out.push('<');
    out.push_str(&el.name);
    for (k, v) in &el.attrs {
        out.push(' ');
        out.push_str(k);
        out.push_str("=\"");
        out.push_str(&quick_xml::escape::escape(v.as_str()));
        out.push('"');
    }
    if el.children.is_empty() {
        out.push_str("/>\n");
        return;
    }
    out.push_str(">\n");
    for c in &el.children {
        write_element(out, c, depth + 1);
    }
    for _ in 0..depth {
        out.push_str("  ");
    }
    out.push_str("</");
    out.push_str(&el.name);
    out.push_str(">\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse_document(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn a_tree_with_comments_in_the_prolog() {
        let root = parse_document(
            b"<?xml version=\"1.0\"?>\n<!-- c -->\n<a x=\"1 &amp; 2\"><b/><c y='z'></c></a>\n",
        )
        .unwrap();
        assert_eq!(root.name, "a");
        assert_eq!(root.attrs, vec![("x".into(), "1 & 2".into())]);
        assert_eq!(root.children.len(), 2);
        assert_eq!(root.children[1].attrs[0].1, "z");
        assert_eq!((root.offset, root.children[0].offset), (33, 50));
    }

    #[test]
    fn what_libxml2_refuses_is_refused_with_a_position() {
        assert_eq!(parse_document(b""), Err(Error::Empty));
        assert!(err(" <?xml version=\"1.0\"?><a/>").contains("not at the start"));
        assert!(err("invalid xml>").contains("text outside the root"));
        assert!(err("<a><b></a>").contains("line 1"));
        assert!(err("<a>").contains("<a> opened at line 1, column 1 (byte 0) is never closed"));
        assert!(err("<a/><b/>").contains("second root"));
        assert!(err("<a\" x=\"1\"></a\">").contains("not a valid element name"));
        assert!(err("<a x=\"1\" x=\"2\"/>").contains("in <a>"));
        assert!(err("<a x=\"&bogus;\"/>").contains("attribute x"));
        assert!(err("<!-- only a comment -->").contains("no root element"));
        assert!(err("<a/>\n<b/>").contains("line 2"));
    }

    #[test]
    fn writing_escapes_and_reads_back() {
        let mut a = Element::new("a");
        a.attr("q", Some("<\"&'>"));
        a.children.push(Element::new("b"));
        let text = write_document(&a);
        let back = parse_document(text.as_bytes()).unwrap();
        assert_eq!(back.attrs, a.attrs);
        assert_eq!(back.children[0].name, "b");
    }
}
