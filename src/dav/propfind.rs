//! PROPFIND (RFC 4918 §9.1): the tree's nodes and their live properties (RFC 4918, 3744
//! privileges, 5397, 6578, CalDAV, CardDAV, Apple's getctag) beside collections' dead ones.

use axum::http::StatusCode;
use axum::response::Response;

use super::path::{self, Target};
use super::xml::{self, CALDAV, CALSERVER, CARDDAV, DAV, Element, escape};
use super::{Call, Depth, Mount, kind_ns, precondition_failed, xml_response};
use crate::collections::{Collection, CollectionError, Kind, PropName, Resource};

/// One thing the tree holds, as PROPFIND walks it.
pub(super) enum Node {
    Root,
    Principals,
    Principal,
    Home(Kind),
    Collection(Collection),
    Resource(Collection, Resource),
    /// Another account's collection in the user's home (listed there, reached by its
    /// mount's path).
    Shared(Collection, Mount),
}

/// What a PROPFIND (or a REPORT's `prop`) asks for.
pub(super) enum Want {
    /// allprop, with the names of `include`.
    All(Vec<PropName>),
    Names,
    Props(Vec<PropName>),
}

impl Want {
    /// From a PROPFIND body; an empty one means allprop (RFC 4918 §9.1).
    /// Err says why the body is refused.
    pub(super) fn of_propfind(body: &[u8]) -> Result<Want, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Want::All(Vec::new()));
        }
        let root = xml::parse(body).map_err(|e| e.to_string())?;
        if !root.is(DAV, "propfind") {
            return Err("the body is not a DAV:propfind".into());
        }
        Want::of(&root).ok_or_else(|| "propfind names no prop, allprop or propname".into())
    }

    /// From an element holding `prop`, `allprop` or `propname` (propfind, REPORTs).
    pub(super) fn of(parent: &Element) -> Option<Want> {
        if let Some(prop) = parent.child(DAV, "prop") {
            return Some(Want::Props(names(prop)));
        }
        if parent.child(DAV, "propname").is_some() {
            return Some(Want::Names);
        }
        parent
            .child(DAV, "allprop")
            .map(|_| Want::All(parent.child(DAV, "include").map(names).unwrap_or_default()))
    }
}

pub(super) fn names(prop: &Element) -> Vec<PropName> {
    prop.children
        .iter()
        .map(|c| (c.ns.clone(), c.name.clone()))
        .collect()
}

pub(super) fn bad_request(why: &str) -> Response {
    use axum::response::IntoResponse;
    (
        StatusCode::BAD_REQUEST,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        format!("{why}\n"),
    )
        .into_response()
}

pub(super) fn propfind(call: &Call, body: &[u8]) -> Result<Response, CollectionError> {
    let want = match Want::of_propfind(body) {
        Ok(want) => want,
        Err(why) => return Ok(bad_request(&why)),
    };
    let depth = call.depth();
    let store = call.dav.collections.open(&call.account)?;
    let node = match &call.target {
        Target::Root => Node::Root,
        Target::Principals => Node::Principals,
        Target::Principal(_) => Node::Principal,
        Target::Home(kind, _) => Node::Home(*kind),
        Target::Collection(kind, _, name) => match store.collection(*kind, name)? {
            Some(collection) => Node::Collection(collection),
            None => return Ok(not_found()),
        },
        Target::Resource(kind, _, collection, name) => {
            let Some(collection) = store.collection(*kind, collection)? else {
                return Ok(not_found());
            };
            match store.resource(&collection, name)? {
                Some(resource) => Node::Resource(collection, resource),
                None => return Ok(not_found()),
            }
        }
    };
    if depth == Depth::Infinity && !matches!(node, Node::Resource(..)) {
        return Ok(precondition_failed(
            StatusCode::FORBIDDEN,
            DAV,
            "propfind-finite-depth",
        ));
    }
    let mut children = Vec::new();
    if depth == Depth::One {
        match &node {
            Node::Root => {
                children.push(Node::Principal);
                children.push(Node::Home(Kind::Calendar));
                children.push(Node::Home(Kind::AddressBook));
            }
            Node::Principals => children.push(Node::Principal),
            Node::Home(kind) => {
                for collection in store.collections(*kind)? {
                    children.push(Node::Collection(collection));
                }
                for mount in call.dav.mounts_of(&call.user) {
                    if mount.kind != *kind {
                        continue;
                    }
                    // The owner's declared collection is made before it is listed; one
                    // its owner deleted is not there to see.
                    call.dav.ensure_declared(&mount.owner)?;
                    let owner = call.dav.collections.open(&mount.owner)?;
                    if let Some(collection) = owner.collection(mount.kind, &mount.slug)? {
                        children.push(Node::Shared(collection, mount));
                    }
                }
            }
            Node::Collection(collection) => {
                for resource in store.resources(collection)? {
                    children.push(Node::Resource(collection.clone(), resource));
                }
            }
            Node::Principal | Node::Resource(..) | Node::Shared(..) => {}
        }
    }
    let mut out = Multistatus::new();
    for node in std::iter::once(&node).chain(&children) {
        let href = href(call, node);
        out.node(call, &href, node, &want);
    }
    Ok(out.finish())
}

fn not_found() -> Response {
    super::plain(StatusCode::NOT_FOUND, "nothing here\n")
}

/// A node's URL.
pub(super) fn href(call: &Call, node: &Node) -> String {
    let user = &call.user;
    match node {
        Node::Root if call.path == "/" => "/".to_string(),
        Node::Root => path::BASE.to_string(),
        Node::Principals => format!("{}principals/", path::BASE),
        Node::Principal => path::principal(user),
        Node::Home(kind) => path::home(*kind, user),
        Node::Collection(c) => call.collection_href(c.kind, &c.name),
        Node::Resource(c, r) => call.resource_href(c.kind, &c.name, &r.name),
        Node::Shared(c, m) => path::collection(c.kind, user, &m.segment()),
    }
}

/// A multistatus answer being written.
pub(super) struct Multistatus {
    out: String,
}

impl Multistatus {
    pub(super) fn new() -> Multistatus {
        let mut out = String::with_capacity(4096);
        out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:multistatus");
        out.push_str(xml::ROOT_NAMESPACES);
        out.push('>');
        Multistatus { out }
    }

    /// One response with the properties `want` names: found ones under 200, the rest
    /// under 404.
    pub(super) fn node(&mut self, call: &Call, href: &str, node: &Node, want: &Want) {
        self.node_with_data(call, href, node, want, None)
    }

    /// `node`, with a resource's body for calendar-data or address-data when read.
    pub(super) fn node_with_data(
        &mut self,
        call: &Call,
        href: &str,
        node: &Node,
        want: &Want,
        data: Option<&[u8]>,
    ) {
        let mut found: Vec<(PropName, String)> = Vec::new();
        let mut missing: Vec<PropName> = Vec::new();
        match want {
            Want::Names => {
                for name in all_names(node) {
                    found.push((name, String::new()));
                }
            }
            Want::All(include) => {
                let dead =
                    |n: &PropName| matches!(node, Node::Collection(c) if c.props.contains_key(n));
                let shown = all_names(node)
                    .into_iter()
                    .filter(|n| in_allprop(n) || dead(n));
                for name in shown.chain(include.iter().cloned()) {
                    if found.iter().any(|(n, _)| *n == name) {
                        continue;
                    }
                    if let Some(value) = value(call, node, &name, data) {
                        found.push((name, value));
                    } else if include.contains(&name) {
                        missing.push(name);
                    }
                }
            }
            Want::Props(names) => {
                for name in names {
                    match value(call, node, name, data) {
                        Some(value) => found.push((name.clone(), value)),
                        None => missing.push(name.clone()),
                    }
                }
            }
        }
        self.response(href, &found, &missing);
    }

    pub(super) fn response(
        &mut self,
        href: &str,
        found: &[(PropName, String)],
        missing: &[PropName],
    ) {
        self.out.push_str("<d:response><d:href>");
        self.out.push_str(&escape(href));
        self.out.push_str("</d:href>");
        if !found.is_empty() {
            self.out.push_str("<d:propstat><d:prop>");
            for ((ns, name), value) in found {
                xml::element(&mut self.out, ns, name, Some(value));
            }
            self.out
                .push_str("</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>");
        }
        if !missing.is_empty() {
            self.out.push_str("<d:propstat><d:prop>");
            for (ns, name) in missing {
                xml::element(&mut self.out, ns, name, None);
            }
            self.out
                .push_str("</d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>");
        }
        self.out.push_str("</d:response>");
    }

    /// A response with a status per group of properties (PROPPATCH, MKCOL refusals).
    pub(super) fn propstats(&mut self, href: &str, groups: &[(StatusCode, Vec<PropName>)]) {
        self.out.push_str("<d:response><d:href>");
        self.out.push_str(&escape(href));
        self.out.push_str("</d:href>");
        for (status, names) in groups.iter().filter(|(_, n)| !n.is_empty()) {
            self.out.push_str("<d:propstat><d:prop>");
            for (ns, name) in names {
                xml::element(&mut self.out, ns, name, None);
            }
            self.out.push_str("</d:prop><d:status>HTTP/1.1 ");
            self.out.push_str(status.as_str());
            self.out.push(' ');
            self.out
                .push_str(status.canonical_reason().unwrap_or_default());
            self.out.push_str("</d:status></d:propstat>");
        }
        self.out.push_str("</d:response>");
    }

    /// A response carrying only a status (a member gone, in sync-collection).
    pub(super) fn status(&mut self, href: &str, status: StatusCode) {
        self.out.push_str("<d:response><d:href>");
        self.out.push_str(&escape(href));
        self.out.push_str("</d:href><d:status>HTTP/1.1 ");
        self.out.push_str(status.as_str());
        self.out.push(' ');
        self.out
            .push_str(status.canonical_reason().unwrap_or_default());
        self.out.push_str("</d:status></d:response>");
    }

    /// The answer for the request-URI of a query cut short (RFC 4918's 507 with
    /// DAV:number-of-matches-within-limits, as RFC 4791 §7.8 and RFC 6578 §3.7 use it).
    pub(super) fn truncated(&mut self, href: &str) {
        self.out.push_str("<d:response><d:href>");
        self.out.push_str(&escape(href));
        self.out.push_str(
            "</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status>\
             <d:error><d:number-of-matches-within-limits/></d:error></d:response>",
        );
    }

    /// Text placed after the responses (sync-collection's sync-token).
    pub(super) fn trailer(&mut self, xml: &str) {
        self.out.push_str(xml);
    }

    pub(super) fn finish(mut self) -> Response {
        self.out.push_str("</d:multistatus>\n");
        xml_response(StatusCode::MULTI_STATUS, self.out)
    }
}

fn name(ns: &str, local: &str) -> PropName {
    (ns.to_string(), local.to_string())
}

/// The properties allprop and propname show: the live ones that apply, and the
/// collection's dead ones. (CalDAV's and CardDAV's data properties are never among them.)
fn all_names(node: &Node) -> Vec<PropName> {
    let mut names = vec![
        name(DAV, "resourcetype"),
        name(DAV, "current-user-principal"),
        name(DAV, "current-user-privilege-set"),
        name(DAV, "supported-report-set"),
    ];
    match node {
        Node::Root | Node::Principals => {}
        Node::Principal => {
            for n in ["displayname", "principal-URL", "principal-collection-set"] {
                names.push(name(DAV, n));
            }
            names.push(name(CALDAV, "calendar-home-set"));
            names.push(name(CALDAV, "calendar-user-address-set"));
            names.push(name(CARDDAV, "addressbook-home-set"));
        }
        Node::Home(_) => names.push(name(DAV, "owner")),
        Node::Collection(c) | Node::Shared(c, _) => {
            for n in ["owner", "getetag", "sync-token"] {
                names.push(name(DAV, n));
            }
            names.push(name(CALSERVER, "getctag"));
            let ns = kind_ns(c.kind);
            names.push(name(ns, "max-resource-size"));
            match c.kind {
                Kind::Calendar => {
                    names.push(name(CALDAV, "supported-calendar-component-set"));
                    names.push(name(CALDAV, "supported-calendar-data"));
                }
                Kind::AddressBook => names.push(name(CARDDAV, "supported-address-data")),
            }
            for (ns, n) in c.props.keys() {
                let dead = (ns.clone(), n.clone());
                if !names.contains(&dead) {
                    names.push(dead);
                }
            }
        }
        Node::Resource(..) => {
            for n in [
                "getetag",
                "getcontenttype",
                "getcontentlength",
                "getlastmodified",
            ] {
                names.push(name(DAV, n));
            }
        }
    }
    names
}

/// What allprop shows (RFC 4918 §9.1): RFC 4918's own live properties and the dead
/// ones; those of other specifications (privileges, reports, sync-token…) only by name.
fn in_allprop(name: &PropName) -> bool {
    name.0 != DAV && !matches!(name.0.as_str(), CALDAV | CARDDAV | CALSERVER)
        || matches!(
            (name.0.as_str(), name.1.as_str()),
            (
                DAV,
                "resourcetype"
                    | "displayname"
                    | "getetag"
                    | "getcontenttype"
                    | "getcontentlength"
                    | "getlastmodified"
            )
        )
}

fn href_xml(href: &str) -> String {
    format!("<d:href>{}</d:href>", escape(href))
}

/// A property's value as XML, or None where the node has no such property.
fn value(call: &Call, node: &Node, name: &PropName, data: Option<&[u8]>) -> Option<String> {
    let (ns, local) = name;
    let account = &call.user;
    let principal = || href_xml(&path::principal(account));
    // Whose the collection is, and what the user may do in it.
    let shared = match node {
        Node::Shared(_, m) => Some(m),
        Node::Collection(_) | Node::Resource(..) => call.mount.as_ref(),
        _ => None,
    };
    if let Some(mount) = shared {
        match (ns.as_str(), local.as_str(), node) {
            (DAV, "owner", Node::Shared(..) | Node::Collection(_)) => {
                return Some(href_xml(&path::principal(&mount.owner)));
            }
            (DAV, "current-user-privilege-set", node) => {
                return Some(privileges(node, Some(mount)));
            }
            (_, _, Node::Shared(c, _)) => {
                return value(call, &Node::Collection(c.clone()), name, data);
            }
            _ => {}
        }
    }
    let value = match (ns.as_str(), local.as_str(), node) {
        (DAV, "resourcetype", node) => match node {
            Node::Root | Node::Principals | Node::Home(_) => "<d:collection/>".into(),
            Node::Principal => "<d:collection/><d:principal/>".into(),
            Node::Collection(c) | Node::Shared(c, _) => match c.kind {
                Kind::Calendar => "<d:collection/><cal:calendar/>".into(),
                Kind::AddressBook => "<d:collection/><card:addressbook/>".into(),
            },
            Node::Resource(..) => String::new(),
        },
        (DAV, "current-user-principal", _) => principal(),
        (DAV, "principal-URL", Node::Principal) => principal(),
        (DAV, "owner", Node::Home(_) | Node::Collection(_)) => principal(),
        (DAV, "principal-collection-set", Node::Principal) => {
            href_xml(&format!("{}principals/", path::BASE))
        }
        (DAV, "displayname", Node::Principal) => escape(account).into_owned(),
        (CALDAV, "calendar-home-set", Node::Principal) => {
            href_xml(&path::home(Kind::Calendar, account))
        }
        (CARDDAV, "addressbook-home-set", Node::Principal) => {
            href_xml(&path::home(Kind::AddressBook, account))
        }
        (CALDAV, "calendar-user-address-set", Node::Principal) => {
            href_xml(&format!("mailto:{account}"))
        }
        (DAV, "current-user-privilege-set", node) => privileges(node, None),
        (DAV, "supported-report-set", node) => reports(node),
        (DAV, "sync-token", Node::Collection(c)) | (CALSERVER, "getctag", Node::Collection(c)) => {
            escape(&c.sync_token()).into_owned()
        }
        (DAV, "getetag", Node::Collection(c)) => format!("\"{}-{}\"", c.instance, c.modseq),
        (CALDAV, "max-resource-size", Node::Collection(c)) if c.kind == Kind::Calendar => {
            super::content::MAX_RESOURCE_SIZE.to_string()
        }
        (CARDDAV, "max-resource-size", Node::Collection(c)) if c.kind == Kind::AddressBook => {
            super::content::MAX_RESOURCE_SIZE.to_string()
        }
        (CALDAV, "supported-calendar-component-set", Node::Collection(c))
            if c.kind == Kind::Calendar =>
        {
            c.components
                .iter()
                .map(|comp| format!("<cal:comp name=\"{}\"/>", escape(comp)))
                .collect()
        }
        (CALDAV, "supported-calendar-data", Node::Collection(c)) if c.kind == Kind::Calendar => {
            "<cal:calendar-data content-type=\"text/calendar\" version=\"2.0\"/>".into()
        }
        (CARDDAV, "supported-address-data", Node::Collection(c)) if c.kind == Kind::AddressBook => {
            "<card:address-data-type content-type=\"text/vcard\" version=\"3.0\"/>\
             <card:address-data-type content-type=\"text/vcard\" version=\"4.0\"/>"
                .into()
        }
        (_, _, Node::Collection(c)) if c.prop(ns, local).is_some() => {
            escape(c.prop(ns, local).unwrap_or_default()).into_owned()
        }
        (CALDAV, "calendar-data", Node::Resource(c, _)) if c.kind == Kind::Calendar => {
            escape(&String::from_utf8_lossy(data?)).into_owned()
        }
        (CARDDAV, "address-data", Node::Resource(c, _)) if c.kind == Kind::AddressBook => {
            escape(&String::from_utf8_lossy(data?)).into_owned()
        }
        (DAV, "getetag", Node::Resource(_, r)) => escape(&r.etag).into_owned(),
        (DAV, "getcontenttype", Node::Resource(_, r)) => escape(&r.content_type).into_owned(),
        (DAV, "getcontentlength", Node::Resource(_, r)) => r.size.to_string(),
        (DAV, "getlastmodified", Node::Resource(_, r)) => http_date(r.modified),
        _ => return None,
    };
    Some(value)
}

/// RFC 7231 IMF-fixdate.
pub(super) fn http_date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// The owner may do everything to what is theirs (RFC 3744 §5.4); one it is shared with
/// reads, and with write access changes what the collection holds.
fn privileges(node: &Node, shared: Option<&Mount>) -> String {
    let mut out = String::new();
    let mut privilege = |ns: &str, name: &str| {
        out.push_str("<d:privilege>");
        xml::element(&mut out, ns, name, None);
        out.push_str("</d:privilege>");
    };
    let names: &[&str] = match shared {
        None => &[
            "all",
            "read",
            "write",
            "write-properties",
            "write-content",
            "bind",
            "unbind",
            "read-current-user-privilege-set",
        ],
        Some(m) if m.write => &[
            "read",
            "write-content",
            "bind",
            "unbind",
            "read-current-user-privilege-set",
        ],
        Some(_) => &["read", "read-current-user-privilege-set"],
    };
    for name in names {
        privilege(DAV, name);
    }
    if matches!(node, Node::Collection(c) | Node::Shared(c, _) if c.kind == Kind::Calendar) {
        privilege(CALDAV, "read-free-busy");
    }
    out
}

/// The REPORTs a node answers (RFC 3253 §3.1.5).
fn reports(node: &Node) -> String {
    let names: &[(&str, &str)] = match node {
        Node::Collection(c) if c.kind == Kind::Calendar => &[
            (CALDAV, "calendar-multiget"),
            (CALDAV, "calendar-query"),
            (CALDAV, "free-busy-query"),
            (DAV, "sync-collection"),
        ],
        Node::Collection(_) => &[
            (CARDDAV, "addressbook-multiget"),
            (CARDDAV, "addressbook-query"),
            (DAV, "sync-collection"),
        ],
        _ => &[],
    };
    let mut out = String::new();
    for (ns, name) in names {
        out.push_str("<d:supported-report><d:report>");
        xml::element(&mut out, ns, name, None);
        out.push_str("</d:report></d:supported-report>");
    }
    out
}
