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
        }
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
    account: String,
    target: Target,
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
        return plain(StatusCode::NOT_FOUND, "no such calendar or address book\n");
    };
    let account = match authenticate(&dav, peer, &parts.headers).await {
        Ok(account) => account,
        Err(response) => return response,
    };
    if target.account().is_some_and(|a| a != account) {
        // Sharing is not there yet: only one's own tree.
        return plain(StatusCode::FORBIDDEN, "this belongs to another account\n");
    }
    let limit = match method.as_str() {
        "PUT" => content::MAX_RESOURCE_SIZE + 1,
        _ => MAX_XML_BODY + 1,
    };
    let body = match axum::body::to_bytes(body, limit).await {
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
        account,
        target,
        headers: parts.headers,
        path,
    };
    let answer = crate::blocking::run(|| {
        dav.ensure_declared(&call.account)?;
        dispatch(&call, &method, &body)
    });
    answer.unwrap_or_else(|e| failure(&e))
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
