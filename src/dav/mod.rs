//! CalDAV (RFC 4791) and CardDAV (RFC 6352) over WebDAV (RFC 4918): each mailbox
//! account's calendars and address books, served on the https, caldav and carddav listeners.

mod content;
mod filter;
mod freebusy;
mod instances;
mod path;
mod propfind;
mod report;
mod write;
pub mod xml;

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::collections::{CollectionError, Collections, Kind};
use crate::login::{Logins, Outcome};
use crate::snapshot::SnapshotHandle;

pub use path::BASE;
use path::Target;

/// What `DAV:` says the server does (OPTIONS). No class 2: there are no locks.
const DAV_CLASSES: &str = "1, 3, calendar-access, addressbook, extended-mkcol";
const ALLOW: &str =
    "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH, MKCOL, MKCALENDAR, REPORT, COPY, MOVE";
/// The largest XML request body read (PROPFIND, PROPPATCH, REPORT…).
const MAX_XML_BODY: usize = 1024 * 1024;

/// What the DAV handlers share.
pub struct Dav {
    pub collections: Collections,
    pub logins: Arc<Logins>,
    pub snapshot: Arc<SnapshotHandle>,
    /// The store revision each account's declared collections were last made for.
    pub declared: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Who sees which other accounts' collections (from the spec's `share`), and the
    /// store revision it was worked out for.
    mounts: std::sync::Mutex<Option<(u64, Arc<MountMap>)>>,
}

type MountMap = std::collections::HashMap<String, Vec<Mount>>;

/// Another account's collection shared with the account logged in: it appears in that
/// account's own home as `OWNER~SLUG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    owner: String,
    kind: Kind,
    /// The collection's URL segment in the owner's home.
    slug: String,
    write: bool,
}

impl Mount {
    /// Its URL segment in the home of the account it is shared with. Own collections
    /// never hold '@' (MKCOL refuses it), so the two never meet.
    fn segment(&self) -> String {
        format!("{}~{}", self.owner, self.slug)
    }
}

impl Dav {
    pub fn new(
        collections: Collections,
        logins: Arc<Logins>,
        snapshot: Arc<SnapshotHandle>,
    ) -> Dav {
        Dav {
            collections,
            logins,
            snapshot,
            declared: Default::default(),
            mounts: Default::default(),
        }
    }

    /// The collections shared with `account`, per the applied spec.
    fn mounts_of(&self, account: &str) -> Vec<Mount> {
        let snapshot = self.snapshot.get();
        let mut cached = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
        if cached.as_ref().is_none_or(|c| c.0 != snapshot.revision) {
            let mut map = MountMap::new();
            for (owner, record) in &snapshot.accounts {
                for share in &record.shares {
                    let kind = if share.kind == "calendar" {
                        Kind::Calendar
                    } else {
                        Kind::AddressBook
                    };
                    map.entry(share.with.clone()).or_default().push(Mount {
                        owner: owner.clone(),
                        kind,
                        slug: crate::collections::slug(&share.name),
                        write: share.access == "write",
                    });
                }
            }
            *cached = Some((snapshot.revision, Arc::new(map)));
        }
        cached
            .as_ref()
            .and_then(|c| c.1.get(account).cloned())
            .unwrap_or_default()
    }

    /// Makes the calendars and address books the spec declares for `account`, once per
    /// store revision (blocking).
    fn ensure_declared(&self, account: &str) -> Result<(), CollectionError> {
        let snapshot = self.snapshot.get();
        let revision = snapshot.revision;
        let done =
            |map: &std::collections::HashMap<String, u64>| map.get(account) == Some(&revision);
        if done(&self.declared.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        if let Some(record) = snapshot.accounts.get(account)
            && (!record.calendars.is_empty() || !record.address_books.is_empty())
        {
            let mut store = self.collections.open(account)?;
            store.ensure(Kind::Calendar, &record.calendars)?;
            store.ensure(Kind::AddressBook, &record.address_books)?;
        }
        let mut map = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert(account.to_string(), revision);
        Ok(())
    }
}

/// One authenticated request: who asks and what for.
struct Call<'a> {
    dav: &'a Dav,
    /// The account logged in.
    user: String,
    /// The account whose collections the request reaches: the user's own, or the owner's
    /// through a mount.
    account: String,
    /// The target, in the owner's terms (a mount's path rewritten to the owner's).
    target: Target,
    /// The shared collection the request is in, when it came through one.
    mount: Option<Mount>,
    headers: HeaderMap,
    /// The request path as sent (the root is answered under it).
    path: String,
}

/// `/.well-known/caldav` and `/.well-known/carddav` (RFC 6764 §5): every method, since
/// some clients PROPFIND them, is sent to the context path.
pub async fn well_known() -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, BASE)],
        "the calendars and contacts are under /dav/\n",
    )
        .into_response()
}

/// Every request under the DAV tree.
pub async fn handle(dav: Arc<Dav>, peer: Option<IpAddr>, tls: bool, request: Request) -> Response {
    if !tls {
        return plain(
            StatusCode::FORBIDDEN,
            "calendars and contacts are served over HTTPS only\n",
        );
    }
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    if method == Method::OPTIONS {
        return options();
    }
    let Some(target) = Target::parse(&path) else {
        if matches!(method.as_str(), "MKCOL" | "MKCALENDAR" | "PUT") && path.starts_with(BASE) {
            // Deeper than the tree goes: its parent is no collection (RFC 4918 §9.3.1).
            return plain(
                StatusCode::CONFLICT,
                "the parent collection does not exist\n",
            );
        }
        return plain(StatusCode::NOT_FOUND, "no such calendar or address book\n");
    };
    let account = match authenticate(&dav, peer, &parts.headers).await {
        Ok(account) => account,
        Err(response) => return response,
    };
    if target.account().is_some_and(|a| a != account) {
        // Another account's collections are reached through the mounts in one's own home.
        return plain(StatusCode::FORBIDDEN, "this belongs to another account\n");
    }
    let (target, mount) = match mounted(&dav, &account, target) {
        Some(found) => found,
        None if matches!(method.as_str(), "MKCOL" | "MKCALENDAR") => {
            return plain(
                StatusCode::FORBIDDEN,
                "names with '@' are kept for collections shared with you\n",
            );
        }
        None => return plain(StatusCode::NOT_FOUND, "no such calendar or address book\n"),
    };
    if let Some(mount) = &mount
        && !mount_allows(mount, &method, &target)
    {
        return precondition_failed(StatusCode::FORBIDDEN, xml::DAV, "need-privileges");
    }
    let limit = match method.as_str() {
        "PUT" => content::MAX_RESOURCE_SIZE + 1,
        _ => MAX_XML_BODY + 1,
    };
    // A declared length past the limit is refused before a byte of the body is read:
    // no 100 Continue goes out, so the client hears the answer instead of a reset
    // halfway through sending.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body = match declared {
        Some(length) if length >= limit => Err(()),
        _ => axum::body::to_bytes(body, limit).await.map_err(|_| ()),
    };
    let body = match body {
        Ok(body) => body,
        Err(_) if method == Method::PUT => {
            return precondition_failed(
                StatusCode::FORBIDDEN,
                resource_ns(&target),
                "max-resource-size",
            );
        }
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large\n"),
    };
    let call = Call {
        dav: &dav,
        account: mount
            .as_ref()
            .map_or_else(|| account.clone(), |m| m.owner.clone()),
        user: account,
        target,
        mount,
        headers: parts.headers,
        path,
    };
    let answer = crate::blocking::run(|| {
        dav.ensure_declared(&call.user)?;
        if call.account != call.user {
            dav.ensure_declared(&call.account)?;
        }
        dispatch(&call, &method, &body)
    });
    answer.unwrap_or_else(|e| failure(&e))
}

/// A path in the user's own tree, with a mount's segment rewritten to the owner's
/// collection; None for a mount segment nothing is shared under.
fn mounted(dav: &Dav, user: &str, target: Target) -> Option<(Target, Option<Mount>)> {
    let (kind, segment) = match &target {
        Target::Collection(kind, _, segment) | Target::Resource(kind, _, segment, _)
            if segment.contains('@') =>
        {
            (*kind, segment.clone())
        }
        _ => return Some((target, None)),
    };
    let mount = dav
        .mounts_of(user)
        .into_iter()
        .find(|m| m.kind == kind && m.segment() == segment)?;
    let owner = mount.owner.clone();
    let slug = mount.slug.clone();
    let target = match target {
        Target::Resource(kind, _, _, name) => Target::Resource(kind, owner, slug, name),
        _ => Target::Collection(kind, owner, slug),
    };
    Some((target, Some(mount)))
}

/// What a mount lets its user do: read, and with write access change what the
/// collection holds (never the collection itself: its owner's).
fn mount_allows(mount: &Mount, method: &Method, target: &Target) -> bool {
    match method.as_str() {
        "GET" | "HEAD" | "PROPFIND" | "REPORT" => true,
        "PUT" | "DELETE" | "COPY" | "MOVE" => mount.write && matches!(target, Target::Resource(..)),
        _ => false,
    }
}

fn dispatch(call: &Call, method: &Method, body: &[u8]) -> Result<Response, CollectionError> {
    match method.as_str() {
        "PROPFIND" => propfind::propfind(call, body),
        "PROPPATCH" => write::proppatch(call, body),
        "REPORT" => report::report(call, body),
        // hyper sends no body in answer to HEAD.
        "GET" | "HEAD" => write::get(call),
        "PUT" => write::put(call, body),
        "DELETE" => write::delete(call),
        "MKCALENDAR" => write::make(call, body, true),
        "MKCOL" => write::make(call, body, false),
        "COPY" => write::transfer(call, true),
        "MOVE" => write::transfer(call, false),
        _ => Ok((
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, ALLOW)],
            "not a method this server takes here\n",
        )
            .into_response()),
    }
}

fn options() -> Response {
    (
        StatusCode::OK,
        [
            (header::ALLOW, HeaderValue::from_static(ALLOW)),
            (
                header::HeaderName::from_static("dav"),
                HeaderValue::from_static(DAV_CLASSES),
            ),
        ],
    )
        .into_response()
}

/// HTTP Basic (RFC 7617) through the mailbox logins: the same checks, cache and limits
/// as IMAP.
async fn authenticate(
    dav: &Dav,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<String, Response> {
    use base64::Engine;
    let challenge = || {
        (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"ferrymail\", charset=\"UTF-8\"",
            )],
            "log in with your address and password\n",
        )
            .into_response()
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(challenge());
    };
    let credentials = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    let Some((user, password)) = credentials.as_deref().and_then(|c| c.split_once(':')) else {
        return Err(challenge());
    };
    let ip = peer.unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    match dav.logins.check(ip, user, password).await {
        Outcome::Accepted(account) => Ok(account),
        Outcome::Rejected => Err(challenge()),
        Outcome::Throttled => Err((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "900")],
            "too many failed logins; try again later\n",
        )
            .into_response()),
    }
}

impl Call<'_> {
    /// A collection's URL as the user sees it: through the mount the request came by, or
    /// in the owner's (the user's own) home.
    fn collection_href(&self, kind: Kind, name: &str) -> String {
        match &self.mount {
            Some(m) if m.kind == kind && m.slug == name => {
                path::collection(kind, &self.user, &m.segment())
            }
            _ => path::collection(kind, &self.account, name),
        }
    }

    fn resource_href(&self, kind: Kind, collection: &str, name: &str) -> String {
        match &self.mount {
            Some(m) if m.kind == kind && m.slug == collection => format!(
                "{}{}",
                self.collection_href(kind, collection),
                path::encode(name)
            ),
            _ => path::resource(kind, &self.account, collection, name),
        }
    }

    /// A path a client sent (an href, a Destination) in the owner's terms, if it is in
    /// the user's reach.
    fn resolve(&self, target: Target) -> Option<Target> {
        if target.account().is_some_and(|a| a != self.user) {
            return None;
        }
        mounted(self.dav, &self.user, target).map(|(t, _)| t)
    }

    /// The account's quota, from the applied spec.
    fn quota(&self) -> Option<u64> {
        self.dav
            .snapshot
            .get()
            .accounts
            .get(&self.account)
            .and_then(|a| a.quota)
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Depth: 0, 1 or infinity (absent means infinity, RFC 4918 §10.2).
    fn depth(&self) -> Depth {
        match self.header(header::HeaderName::from_static("depth")) {
            Some("0") => Depth::Zero,
            Some("1") => Depth::One,
            _ => Depth::Infinity,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    Zero,
    One,
    Infinity,
}

/// The namespace of a kind's preconditions.
fn kind_ns(kind: Kind) -> &'static str {
    match kind {
        Kind::Calendar => xml::CALDAV,
        Kind::AddressBook => xml::CARDDAV,
    }
}

fn resource_ns(target: &Target) -> &'static str {
    match target {
        Target::Home(k, _) | Target::Collection(k, _, _) | Target::Resource(k, _, _, _) => {
            kind_ns(*k)
        }
        _ => xml::DAV,
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        Body::from(body),
    )
        .into_response()
}

/// A refusal naming the precondition (RFC 4918 §16) in a DAV:error body.
fn precondition_failed(status: StatusCode, ns: &str, name: &str) -> Response {
    xml_response(status, xml::error_body(ns, name, None))
}

/// What a storage failure tells the client; the cause goes to the log when it is ours.
fn failure(error: &CollectionError) -> Response {
    match error {
        CollectionError::OverQuota { .. } => precondition_failed(
            StatusCode::INSUFFICIENT_STORAGE,
            xml::DAV,
            "quota-not-exceeded",
        ),
        CollectionError::Changed => plain(
            StatusCode::PRECONDITION_FAILED,
            "the resource is not in the state the request expects\n",
        ),
        CollectionError::Exists(_) => plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "something already exists under this name\n",
        ),
        CollectionError::NoCollection(_) => {
            plain(StatusCode::CONFLICT, "the collection does not exist\n")
        }
        CollectionError::UidConflict(_) | CollectionError::Refused(_) => {
            tracing::info!(error = %error, "dav request refused");
            (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{error}\n"),
            )
                .into_response()
        }
        _ => {
            tracing::error!(error = %error, "dav request failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server could not do this; it is logged\n",
            )
        }
    }
}
