//! REPORT: calendar-multiget and calendar-query (RFC 4791 §7.8–7.9), addressbook-multiget
//! and addressbook-query (RFC 6352 §8.6–8.7), sync-collection (RFC 6578), free-busy-query.

use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::filter::{CalendarFilter, CardFilter, Unsupported};
use super::freebusy::FreeBusy;
use super::path::{self, Target};
use super::propfind::{Multistatus, Node, Want, bad_request};
use super::xml::{self, CALDAV, CARDDAV, DAV, Element};
use super::{Call, precondition_failed};
use crate::collections::{AccountCollections, Collection, CollectionError, Kind, Resource};

pub(super) fn report(call: &Call, body: &[u8]) -> Result<Response, CollectionError> {
    let root = match xml::parse(body) {
        Ok(root) => root,
        Err(e) => return Ok(bad_request(&e.to_string())),
    };
    let store = call.dav.collections.open(&call.account)?;
    let (kind, collection) = match &call.target {
        Target::Collection(kind, _, name) | Target::Resource(kind, _, name, _) => {
            match store.collection(*kind, name)? {
                Some(c) => (*kind, c),
                None => return Ok(super::plain(StatusCode::NOT_FOUND, "nothing here\n")),
            }
        }
        _ => return Ok(unsupported_report()),
    };
    if root.is(CALDAV, "free-busy-query") && kind == Kind::Calendar {
        return free_busy(&store, &collection, &root);
    }
    let Some(want) = Want::of(&root) else {
        return Ok(bad_request("the report names no prop, allprop or propname"));
    };
    match (root.ns.as_str(), root.name.as_str(), kind) {
        (CALDAV, "calendar-multiget", Kind::Calendar)
        | (CARDDAV, "addressbook-multiget", Kind::AddressBook) => {
            multiget(call, &store, &collection, &root, &want)
        }
        (CALDAV, "calendar-query", Kind::Calendar) => {
            let filter = match root.child(CALDAV, "filter").map(CalendarFilter::read) {
                Some(Ok(filter)) => filter,
                Some(Err(e)) => return Ok(refused(&e)),
                None => return Ok(bad_request("calendar-query without a filter")),
            };
            query(
                call,
                &store,
                &collection,
                &want,
                filter.window(),
                |resource, body| {
                    if let Some(answer) = filter.by_span(&resource.component, &resource.span) {
                        return answer;
                    }
                    std::str::from_utf8(body)
                        .ok()
                        .and_then(|t| calcard::icalendar::ICalendar::parse(t).ok())
                        .is_some_and(|c| filter.matches(&c))
                },
            )
        }
        (CARDDAV, "addressbook-query", Kind::AddressBook) => {
            let filter = match root.child(CARDDAV, "filter").map(CardFilter::read) {
                Some(Ok(filter)) => filter,
                Some(Err(e)) => return Ok(refused(&e)),
                None => return Ok(bad_request("addressbook-query without a filter")),
            };
            query(call, &store, &collection, &want, None, |_, body| {
                std::str::from_utf8(body)
                    .ok()
                    .and_then(|t| calcard::vcard::VCard::parse(t).ok())
                    .is_some_and(|c| filter.matches(&c))
            })
        }
        (DAV, "sync-collection", _) => sync(call, &store, &collection, &root, &want),
        _ => Ok(unsupported_report()),
    }
}

/// The time one query may take looking inside objects; past it the answer says it was
/// cut short. An account's own data is all it can reach, but a collection of recurring
/// events for ever is 100,000 × 10,000 instances.
const QUERY_BUDGET: Duration = Duration::from_secs(10);

fn unsupported_report() -> Response {
    precondition_failed(StatusCode::FORBIDDEN, DAV, "supported-report")
}

fn refused(e: &Unsupported) -> Response {
    tracing::info!(why = %e.why, precondition = e.precondition, "dav REPORT refused");
    precondition_failed(StatusCode::FORBIDDEN, e.ns, e.precondition)
}

/// Whether the properties asked for include the resource's data (a read of the body).
fn wants_data(want: &Want) -> bool {
    match want {
        Want::Props(names) => names.iter().any(|(ns, n)| {
            (ns == CALDAV && n == "calendar-data") || (ns == CARDDAV && n == "address-data")
        }),
        _ => false,
    }
}

/// The resources the hrefs name, in the order asked; those not in this collection 404.
fn multiget(
    call: &Call,
    store: &AccountCollections,
    collection: &Collection,
    root: &Element,
    want: &Want,
) -> Result<Response, CollectionError> {
    let mut out = Multistatus::new();
    let data = wants_data(want);
    for href in root.all(DAV, "href") {
        let text = href.text.trim();
        let name = match path::href_target(text).and_then(|t| call.resolve(t)) {
            Some(Target::Resource(kind, account, c, name))
                if kind == collection.kind && account == call.account && c == collection.name =>
            {
                name
            }
            _ => {
                out.status(text, StatusCode::NOT_FOUND);
                continue;
            }
        };
        let found = if data {
            store.read(collection, &name)?.map(|(r, b)| (r, Some(b)))
        } else {
            store.resource(collection, &name)?.map(|r| (r, None))
        };
        match found {
            Some((resource, body)) => {
                let node = Node::Resource(collection.clone(), resource);
                let href = super::propfind::href(call, &node);
                out.node_with_data(call, &href, &node, want, body.as_deref());
            }
            None => out.status(text, StatusCode::NOT_FOUND),
        }
    }
    Ok(out.finish())
}

/// Every resource of the collection that `matches` passes (only those that may overlap
/// `window` are read).
fn query(
    call: &Call,
    store: &AccountCollections,
    collection: &Collection,
    want: &Want,
    window: Option<(i64, i64)>,
    matches: impl Fn(&Resource, &[u8]) -> bool,
) -> Result<Response, CollectionError> {
    let mut out = Multistatus::new();
    let data = wants_data(want);
    let started = Instant::now();
    store.each_within(collection, window, &mut |resource, body| {
        if started.elapsed() > QUERY_BUDGET {
            tracing::info!(account = %call.account, collection = %collection.name,
                           "dav query cut short after {QUERY_BUDGET:?}");
            let node = Node::Collection(collection.clone());
            out.truncated(&super::propfind::href(call, &node));
            return false;
        }
        if matches(&resource, &body) {
            let node = Node::Resource(collection.clone(), resource);
            let href = super::propfind::href(call, &node);
            out.node_with_data(call, &href, &node, want, data.then_some(body.as_slice()));
        }
        true
    })?;
    Ok(out.finish())
}

/// free-busy-query (RFC 4791 §7.10): 200 with one VFREEBUSY for the range.
fn free_busy(
    store: &AccountCollections,
    collection: &Collection,
    root: &Element,
) -> Result<Response, CollectionError> {
    let range = match root
        .child(CALDAV, "time-range")
        .map(super::filter::time_range)
    {
        Some(Ok(range)) if range.0 != i64::MIN && range.1 != i64::MAX => range,
        Some(Err(e)) => return Ok(refused(&e)),
        _ => {
            return Ok(bad_request(
                "free-busy-query needs a time-range with a start and an end",
            ));
        }
    };
    let mut busy = FreeBusy::new(range);
    let started = Instant::now();
    let mut whole = true;
    store.each_within(collection, Some(range), &mut |_, body| {
        if started.elapsed() > QUERY_BUDGET || busy.overflowed() {
            whole = false;
            return false;
        }
        if let Some(calendar) = std::str::from_utf8(&body)
            .ok()
            .and_then(|t| calcard::icalendar::ICalendar::parse(t).ok())
        {
            busy.add(&calendar);
        }
        true
    })?;
    if !whole || busy.overflowed() {
        // A partial answer would say the time is free when it may not be.
        return Ok(super::plain(
            StatusCode::INSUFFICIENT_STORAGE,
            "the calendar holds too much to work out free and busy time\n",
        ));
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/calendar; charset=utf-8")],
        busy.to_ical(crate::store::unix_now()),
    )
        .into_response())
}

/// sync-collection: everything (no token) or what changed since the token, removals as
/// 404s, and the token to come back with.
fn sync(
    call: &Call,
    store: &AccountCollections,
    collection: &Collection,
    root: &Element,
    want: &Want,
) -> Result<Response, CollectionError> {
    if !matches!(call.target, Target::Collection(..)) {
        return Ok(unsupported_report());
    }
    let token = root
        .child(DAV, "sync-token")
        .map(|t| t.text.trim().to_string())
        .unwrap_or_default();
    let since = if token.is_empty() {
        0
    } else {
        match collection.token_modseq(&token) {
            Some(since) => since,
            None => {
                return Ok(precondition_failed(
                    StatusCode::FORBIDDEN,
                    DAV,
                    "valid-sync-token",
                ));
            }
        }
    };
    let changes = store.changes_since(collection, since)?;
    let data = wants_data(want);
    let mut out = Multistatus::new();
    for resource in changes.changed {
        let body = if data {
            store.read(collection, &resource.name)?.map(|(_, b)| b)
        } else {
            None
        };
        let node = Node::Resource(collection.clone(), resource);
        let href = super::propfind::href(call, &node);
        out.node_with_data(call, &href, &node, want, body.as_deref());
    }
    if since > 0 {
        for name in changes.removed {
            let href = call.resource_href(collection.kind, &collection.name, &name);
            out.status(&href, StatusCode::NOT_FOUND);
        }
    }
    out.trailer(&format!(
        "<d:sync-token>{}</d:sync-token>",
        xml::escape(&collection.sync_token())
    ));
    Ok(out.finish())
}
