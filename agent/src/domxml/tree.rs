//! A small owned XML element tree sitting between quick-xml events and the
//! typed model.
//!
//! Parsing goes text -> tree -> model and rendering goes model -> tree -> text.
//! The intermediate tree keeps the typed code free of event-stream
//! bookkeeping, gives one place that knows about escaping and namespaces, and
//! lets opaque fragments (admin extra configuration) be validated and then
//! re-emitted through the same writer as everything else.

use std::borrow::Cow;

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use quick_xml::Writer;

use super::DomXmlError;

/// One XML element with its attributes and children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    /// Qualified name exactly as written (`orrery:instance`), used to render.
    pub qname: String,
    /// Namespace URI the element's prefix resolved to, if any.
    pub ns: Option<String>,
    /// Local part of the name (`instance`), used to match.
    pub local: String,
    /// Attributes in document order, names as written, values unescaped.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    /// A new element in no namespace.
    pub fn new(name: &str) -> Self {
        Element {
            qname: name.to_string(),
            ns: None,
            local: name.to_string(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// A new element whose name carries a namespace prefix.
    pub fn new_ns(prefix: &str, local: &str, ns: &str) -> Self {
        Element {
            qname: format!("{prefix}:{local}"),
            ns: Some(ns.to_string()),
            local: local.to_string(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attrs.push((name.to_string(), value.into()));
        self
    }

    pub fn attr_opt<V: Into<String>>(self, name: &str, value: Option<V>) -> Self {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }

    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    pub fn child_opt(self, child: Option<Element>) -> Self {
        match child {
            Some(c) => self.child(c),
            None => self,
        }
    }

    pub fn push(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// Value of an attribute by its name as written. Attributes in the
    /// documents we read are unprefixed, so a plain name match suffices.
    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Child elements in no namespace with the given local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements()
            .filter(move |e| e.ns.is_none() && e.local == name)
    }

    pub fn first_child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.ns.is_none() && e.local == name)
    }

    pub fn first_child_mut(&mut self, name: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.ns.is_none() && e.local == name => Some(e),
            _ => None,
        })
    }

    /// Child elements in no namespace with the given local name, for
    /// changing them in place.
    pub fn children_named_mut<'a>(
        &'a mut self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a mut Element> + 'a {
        self.children.iter_mut().filter_map(move |n| match n {
            Node::Element(e) if e.ns.is_none() && e.local == name => Some(e),
            _ => None,
        })
    }

    /// Sets an existing attribute's value in place (keeping the attribute
    /// order), or appends the attribute.
    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.attrs.push((name.to_string(), value)),
        }
    }

    /// Removes every child element in no namespace with the given local
    /// name.
    pub fn remove_children_named(&mut self, name: &str) {
        self.children
            .retain(|n| !matches!(n, Node::Element(e) if e.ns.is_none() && e.local == name));
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Concatenated character data directly inside this element.
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }
}

fn malformed(pos: u64, what: impl std::fmt::Display) -> DomXmlError {
    DomXmlError::Malformed(format!("{what} (near byte {pos})"))
}

/// Parse a sequence of elements (optionally surrounded by whitespace).
///
/// The whole document is accepted only if it is well-formed in the
/// namespace-aware sense: balanced tags, resolvable prefixes, decodable
/// entities, no DTD (an internal subset could define entities, and libvirt
/// documents never carry one).
pub(crate) fn parse_elements(input: &str) -> Result<Vec<Element>, DomXmlError> {
    let mut reader = NsReader::from_reader(input.as_bytes());
    let mut roots: Vec<Element> = Vec::new();
    let mut stack: Vec<Element> = Vec::new();

    loop {
        let pos = reader.buffer_position();
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| malformed(pos, e))?;
        match event {
            Event::Start(start) => {
                let el = element_from_start(pos, resolved, &start)?;
                stack.push(el);
            }
            Event::Empty(start) => {
                let el = element_from_start(pos, resolved, &start)?;
                attach(&mut stack, &mut roots, el);
            }
            Event::End(_) => {
                // The reader checks that end names match their start tags.
                let el = stack
                    .pop()
                    .ok_or_else(|| malformed(pos, "unexpected closing tag"))?;
                attach(&mut stack, &mut roots, el);
            }
            Event::Text(text) => {
                let s = text.unescape().map_err(|e| malformed(pos, e))?.into_owned();
                push_text(pos, &mut stack, s)?;
            }
            Event::CData(data) => {
                let s = std::str::from_utf8(&data)
                    .map_err(|e| malformed(pos, e))?
                    .to_string();
                push_text(pos, &mut stack, s)?;
            }
            Event::DocType(_) => {
                return Err(malformed(
                    pos,
                    "document type declarations are not accepted",
                ));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }

    if let Some(open) = stack.last() {
        return Err(malformed(
            reader.buffer_position(),
            format!("element <{}> is not closed", open.qname),
        ));
    }
    Ok(roots)
}

fn attach(stack: &mut [Element], roots: &mut Vec<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(el)),
        None => roots.push(el),
    }
}

fn push_text(pos: u64, stack: &mut [Element], text: String) -> Result<(), DomXmlError> {
    match stack.last_mut() {
        Some(parent) => {
            // Merge adjacent runs (text split around CDATA sections) so that
            // text content reads back as one string.
            if let Some(Node::Text(prev)) = parent.children.last_mut() {
                prev.push_str(&text);
            } else {
                parent.children.push(Node::Text(text));
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(malformed(pos, "text outside of any element")),
    }
}

fn element_from_start(
    pos: u64,
    resolved: ResolveResult,
    start: &BytesStart,
) -> Result<Element, DomXmlError> {
    let qname = std::str::from_utf8(start.name().as_ref())
        .map_err(|e| malformed(pos, e))?
        .to_string();
    let local = std::str::from_utf8(start.local_name().as_ref())
        .map_err(|e| malformed(pos, e))?
        .to_string();
    let ns = match resolved {
        ResolveResult::Unbound => None,
        ResolveResult::Bound(ns) => Some(
            std::str::from_utf8(ns.as_ref())
                .map_err(|e| malformed(pos, e))?
                .to_string(),
        ),
        ResolveResult::Unknown(prefix) => {
            return Err(malformed(
                pos,
                format!(
                    "namespace prefix '{}' is not declared",
                    String::from_utf8_lossy(&prefix)
                ),
            ))
        }
    };
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| malformed(pos, e))?;
        let key = std::str::from_utf8(attr.key.as_ref())
            .map_err(|e| malformed(pos, e))?
            .to_string();
        let value = attr
            .unescape_value()
            .map_err(|e| malformed(pos, e))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        qname,
        ns,
        local,
        attrs,
        children: Vec::new(),
    })
}

/// Escape character data. Carriage returns are written as references
/// because XML parsers normalise literal CR/CRLF to LF.
fn escape_text(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '\r']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Escape an attribute value. Besides markup characters, tab/LF/CR become
/// references because attribute-value normalisation would otherwise turn
/// them into spaces when libvirt (libxml2) reads the document.
fn escape_attr(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'', '\t', '\n', '\r']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Render an element tree as an indented document (two spaces per level).
pub(crate) fn render(root: &Element) -> String {
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_element(&mut writer, root);
    let mut bytes = writer.into_inner();
    bytes.push(b'\n');
    // Every piece written above came from `&str`s, so the buffer is UTF-8.
    String::from_utf8(bytes).expect("rendered XML is built from UTF-8 strings")
}

fn write_element(writer: &mut Writer<Vec<u8>>, el: &Element) {
    let mut start = BytesStart::new(el.qname.as_str());
    for (k, v) in &el.attrs {
        let escaped = escape_attr(v);
        start.push_attribute(Attribute::from((k.as_bytes(), escaped.as_bytes())));
    }
    // Whitespace-only text between child elements is layout, not content; the
    // writer supplies its own indentation.
    let has_elements = el.elements().next().is_some();
    let content: Vec<&Node> = el
        .children
        .iter()
        .filter(|n| match n {
            Node::Text(t) => !(has_elements && t.trim().is_empty()),
            Node::Element(_) => true,
        })
        .collect();

    // Writing into a Vec<u8> cannot fail, so the results are infallible.
    if content.is_empty() {
        writer
            .write_event(Event::Empty(start))
            .expect("writing to a Vec cannot fail");
        return;
    }
    writer
        .write_event(Event::Start(start))
        .expect("writing to a Vec cannot fail");
    for node in content {
        match node {
            Node::Element(child) => write_element(writer, child),
            Node::Text(t) => writer
                .write_event(Event::Text(BytesText::from_escaped(escape_text(t))))
                .expect("writing to a Vec cannot fail"),
        }
    }
    writer
        .write_event(Event::End(BytesEnd::new(el.qname.as_str())))
        .expect("writing to a Vec cannot fail");
}
