//! WebDAV request bodies read into a small element tree (namespaces resolved, size and
//! depth bounded), and the multistatus answers written with fixed prefixes.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

pub const DAV: &str = "DAV:";
pub const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
pub const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";
pub const CALSERVER: &str = "http://calendarserver.org/ns/";
pub const APPLE: &str = "http://apple.com/ns/ical/";

/// Elements nested deeper than this are refused: no DAV body needs more than a dozen.
const MAX_DEPTH: usize = 48;
/// Elements in one body.
const MAX_ELEMENTS: usize = 50_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("the body is not well-formed XML: {0}")]
    Malformed(String),
    #[error("the body nests elements too deep")]
    TooDeep,
    #[error("the body has too many elements")]
    TooMany,
    #[error("the body has no element")]
    Empty,
    #[error("document type declarations are not accepted")]
    DocType,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub children: Vec<Element>,
    /// The text directly inside, entities resolved.
    pub text: String,
    /// Attributes by local name (DAV bodies never qualify them), values unescaped.
    pub attrs: Vec<(String, String)>,
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    pub fn all<'a>(&'a self, ns: &'a str, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// All text inside, its descendants' included.
    pub fn text_content(&self) -> String {
        let mut out = self.text.clone();
        for child in &self.children {
            out.push_str(&child.text_content());
        }
        out
    }
}

/// Reads a request body's root element.
pub fn parse(body: &[u8]) -> Result<Element, XmlError> {
    let text = std::str::from_utf8(body).map_err(|e| XmlError::Malformed(e.to_string()))?;
    let mut reader = quick_xml::reader::NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut count = 0usize;
    let malformed = |e: &dyn std::fmt::Display| XmlError::Malformed(e.to_string());
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|e| malformed(&e))?;
        let ns = match ns {
            ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(prefix) => {
                return Err(XmlError::Malformed(format!(
                    "undeclared prefix {:?}",
                    String::from_utf8_lossy(&prefix)
                )));
            }
        };
        match event {
            Event::Start(start) | Event::Empty(start) if stack.len() >= MAX_DEPTH => {
                let _ = start;
                return Err(XmlError::TooDeep);
            }
            Event::Start(start) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooMany);
                }
                stack.push(opened(ns, &start)?);
            }
            Event::Empty(start) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooMany);
                }
                let element = opened(ns, &start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => return Ok(element),
                }
            }
            Event::End(_) => {
                let Some(done) = stack.pop() else {
                    return Err(XmlError::Malformed("unbalanced end tag".into()));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Text(text) => {
                if let Some(open) = stack.last_mut() {
                    open.text
                        .push_str(&text.decode().map_err(|e| malformed(&e))?);
                }
            }
            Event::CData(data) => {
                if let Some(open) = stack.last_mut() {
                    open.text
                        .push_str(&data.decode().map_err(|e| malformed(&e))?);
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = if reference.is_char_ref() {
                    reference
                        .resolve_char_ref()
                        .map_err(|e| malformed(&e))?
                        .map(String::from)
                } else {
                    let name = reference.decode().map_err(|e| malformed(&e))?;
                    quick_xml::escape::resolve_predefined_entity(&name).map(str::to_string)
                };
                let Some(resolved) = resolved else {
                    return Err(XmlError::Malformed("unknown entity".into()));
                };
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&resolved);
                }
            }
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => {
                return Err(if stack.is_empty() {
                    XmlError::Empty
                } else {
                    XmlError::Malformed("unexpected end of body".into())
                });
            }
        }
    }
}

/// An element as its start tag gives it: name and attributes (namespace declarations
/// left out).
fn opened(ns: String, start: &quick_xml::events::BytesStart) -> Result<Element, XmlError> {
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::Malformed(e.to_string()))?;
        let key = attr.key;
        if key.as_ref() == b"xmlns" || key.as_ref().starts_with(b"xmlns:") {
            continue;
        }
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        attrs.push((
            String::from_utf8_lossy(key.local_name().as_ref()).into_owned(),
            value.into_owned(),
        ));
    }
    Ok(Element {
        ns,
        name: String::from_utf8_lossy(start.local_name().as_ref()).into_owned(),
        attrs,
        ..Element::default()
    })
}

/// The prefix a namespace is written with in answers (declared on the root).
fn prefix(ns: &str) -> Option<&'static str> {
    Some(match ns {
        DAV => "d",
        CALDAV => "cal",
        CARDDAV => "card",
        CALSERVER => "cs",
        APPLE => "ical",
        _ => return None,
    })
}

/// The namespace declarations every answer's root carries.
pub const ROOT_NAMESPACES: &str = " xmlns:d=\"DAV:\" xmlns:cal=\"urn:ietf:params:xml:ns:caldav\" \
     xmlns:card=\"urn:ietf:params:xml:ns:carddav\" xmlns:cs=\"http://calendarserver.org/ns/\" \
     xmlns:ical=\"http://apple.com/ns/ical/\"";

pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}

/// `<ns:name>inner</ns:name>` (or empty), any namespace.
pub fn element(out: &mut String, ns: &str, name: &str, inner: Option<&str>) {
    let (open, close) = tags(ns, name);
    match inner {
        Some(inner) if !inner.is_empty() => {
            out.push_str(&open);
            out.push('>');
            out.push_str(inner);
            out.push_str(&close);
        }
        _ => {
            out.push_str(&open);
            out.push_str("/>");
        }
    }
}

/// The opening tag without its final '>' and the closing tag.
fn tags(ns: &str, name: &str) -> (String, String) {
    match prefix(ns) {
        Some(p) => (format!("<{p}:{name}"), format!("</{p}:{name}>")),
        None if ns.is_empty() => (format!("<{name} xmlns=\"\""), format!("</{name}>")),
        None => (
            format!("<x:{name} xmlns:x=\"{}\"", escape(ns)),
            format!("</x:{name}>"),
        ),
    }
}

/// A DAV:error body naming the precondition that failed (RFC 4918 §16).
pub fn error_body(ns: &str, name: &str, inner: Option<&str>) -> String {
    let mut out = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error{ROOT_NAMESPACES}>");
    element(&mut out, ns, name, inner);
    out.push_str("</d:error>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_prefixes_and_entities_are_resolved() {
        let body = br#"<?xml version="1.0"?>
            <A:propfind xmlns:A="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
              <A:prop><A:displayname/><C:calendar-description/><x xmlns="urn:other"/>
              <A:href>a&amp;b&#x41;</A:href><C:comp name="V&amp;T"/></A:prop>
            </A:propfind>"#;
        let root = parse(body).unwrap();
        assert!(root.is(DAV, "propfind"));
        let prop = root.child(DAV, "prop").unwrap();
        let names: Vec<(&str, &str)> = prop
            .children
            .iter()
            .map(|c| (c.ns.as_str(), c.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (DAV, "displayname"),
                (CALDAV, "calendar-description"),
                ("urn:other", "x"),
                (DAV, "href"),
                (CALDAV, "comp")
            ]
        );
        assert_eq!(prop.child(DAV, "href").unwrap().text, "a&bA");
        assert_eq!(
            prop.child(CALDAV, "comp").unwrap().attr("name"),
            Some("V&T")
        );
    }

    #[test]
    fn hostile_bodies_are_refused() {
        let deep = "<a xmlns=\"DAV:\">".repeat(10_000);
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooDeep));
        let wide = format!("<a xmlns=\"DAV:\">{}</a>", "<b/>".repeat(60_000));
        assert_eq!(parse(wide.as_bytes()), Err(XmlError::TooMany));
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa">]><l>&a;</l>"#;
        assert_eq!(parse(bomb.as_bytes()), Err(XmlError::DocType));
        assert!(matches!(parse(b"<a:b/>"), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"<a><b></a>"), Err(XmlError::Malformed(_))));
        assert_eq!(parse(b"  "), Err(XmlError::Empty));
        assert!(matches!(parse(b"<a>\xff</a>"), Err(XmlError::Malformed(_))));
    }

    #[test]
    fn answers_write_unknown_namespaces_in_place() {
        let mut out = String::new();
        element(&mut out, "urn:x\"y", "p", Some("1"));
        element(&mut out, DAV, "href", None);
        element(&mut out, "", "bare", None);
        assert_eq!(
            out,
            "<x:p xmlns:x=\"urn:x&quot;y\">1</x:p><d:href/><bare xmlns=\"\"/>"
        );
    }
}
