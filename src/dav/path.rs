//! The DAV URL space: `/dav/` (also `/` on the caldav and carddav listeners), principals,
//! and per account a calendar home and an address book home holding collections.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::collections::Kind;

/// Where the DAV tree is mounted on every listener that serves it.
pub const BASE: &str = "/dav/";

/// Characters escaped in a path segment we write (RFC 3986 pchar keeps '@', ':' and the
/// sub-delims, which clients write raw).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Longest segment (a collection or resource name) taken.
const MAX_SEGMENT: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Root,
    Principals,
    Principal(String),
    Home(Kind, String),
    Collection(Kind, String, String),
    Resource(Kind, String, String, String),
}

fn home_segment(kind: Kind) -> &'static str {
    match kind {
        Kind::Calendar => "calendars",
        Kind::AddressBook => "addressbooks",
    }
}

pub fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

impl Target {
    /// The target a request path names; None outside the tree or for a name we do not
    /// take. A collection may be named with or without its final '/'.
    pub fn parse(path: &str) -> Option<Target> {
        let rest = if path == "/" || path == "/dav" {
            ""
        } else {
            path.strip_prefix(BASE)?
        };
        let mut segments = Vec::new();
        for raw in rest.split('/').filter(|s| !s.is_empty()) {
            let segment = percent_decode_str(raw).decode_utf8().ok()?;
            if segment.is_empty()
                || segment.len() > MAX_SEGMENT
                || segment == "."
                || segment == ".."
                || segment.contains('/')
                || segment.chars().any(char::is_control)
            {
                return None;
            }
            segments.push(segment.into_owned());
        }
        let kind = |s: &str| match s {
            "calendars" => Some(Kind::Calendar),
            "addressbooks" => Some(Kind::AddressBook),
            _ => None,
        };
        let mut it = segments.into_iter();
        Some(
            match (it.next(), it.next(), it.next(), it.next(), it.next()) {
                (None, ..) => Target::Root,
                (Some(p), None, ..) if p == "principals" => Target::Principals,
                (Some(p), Some(account), None, ..) if p == "principals" => {
                    Target::Principal(account.to_lowercase())
                }
                (Some(h), Some(account), None, ..) => {
                    Target::Home(kind(&h)?, account.to_lowercase())
                }
                (Some(h), Some(account), Some(collection), None, _) => {
                    Target::Collection(kind(&h)?, account.to_lowercase(), collection)
                }
                (Some(h), Some(account), Some(collection), Some(resource), None) => {
                    Target::Resource(kind(&h)?, account.to_lowercase(), collection, resource)
                }
                _ => return None,
            },
        )
    }

    /// The account whose data this is, if any.
    pub fn account(&self) -> Option<&str> {
        match self {
            Target::Root | Target::Principals => None,
            Target::Principal(a)
            | Target::Home(_, a)
            | Target::Collection(_, a, _)
            | Target::Resource(_, a, _, _) => Some(a),
        }
    }
}

pub fn principal(account: &str) -> String {
    format!("{BASE}principals/{}/", encode(account))
}

pub fn home(kind: Kind, account: &str) -> String {
    format!("{BASE}{}/{}/", home_segment(kind), encode(account))
}

pub fn collection(kind: Kind, account: &str, name: &str) -> String {
    format!("{}{}/", home(kind, account), encode(name))
}

pub fn resource(kind: Kind, account: &str, collection_name: &str, name: &str) -> String {
    format!(
        "{}{}",
        collection(kind, account, collection_name),
        encode(name)
    )
}

/// The path part of an href a client sent in a body (absolute URL or path), decoded
/// back to a target.
pub fn href_target(href: &str) -> Option<Target> {
    let path = match href.find("://") {
        Some(scheme_end) => {
            let after = &href[scheme_end + 3..];
            &after[after.find('/')?..]
        }
        None => href,
    };
    Target::parse(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_hrefs_go_both_ways() {
        let a = "Me@D.test";
        assert_eq!(Target::parse("/dav/"), Some(Target::Root));
        assert_eq!(Target::parse("/"), Some(Target::Root));
        assert_eq!(
            Target::parse(&principal(a)),
            Some(Target::Principal("me@d.test".into()))
        );
        assert_eq!(
            Target::parse("/dav/calendars/me@d.test"),
            Some(Target::Home(Kind::Calendar, "me@d.test".into()))
        );
        let href = resource(Kind::AddressBook, a, "my book", "a b%/c.vcf");
        assert_eq!(
            href,
            "/dav/addressbooks/Me@D.test/my%20book/a%20b%25%2Fc.vcf"
        );
        assert_eq!(
            Target::parse(&href),
            None,
            "a decoded '/' inside a segment is refused"
        );
        let fine = resource(Kind::Calendar, a, "work", "x y.ics");
        assert_eq!(
            href_target(&format!("https://h.test:5000{fine}")),
            Some(Target::Resource(
                Kind::Calendar,
                "me@d.test".into(),
                "work".into(),
                "x y.ics".into()
            ))
        );
        for bad in [
            "/dav/x/me/",
            "/dav/calendars/me/c/r/extra",
            "/dav/calendars/me/%2E%2E/",
            "/other",
            "/dav/calendars/me/%ff/",
        ] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
    }
}
