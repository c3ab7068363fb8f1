//! The methods that read or change one thing: GET/HEAD, PUT and DELETE of resources with
//! their ETag preconditions, MKCALENDAR and (extended) MKCOL, PROPPATCH of dead properties.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::content::{self, Refusal};
use super::path::{self, Target};
use super::propfind::{Multistatus, bad_request, http_date, names};
use super::xml::{self, CALDAV, CALSERVER, CARDDAV, DAV, Element};
use super::{Call, kind_ns, plain, precondition_failed, xml_response};
use crate::collections::{
    Collection, CollectionError, Kind, NewResource, Precondition, PropName, Resource,
};

/// Dead properties a collection may carry, and the longest value of one.
const MAX_DEAD_PROPS: usize = 64;
const MAX_DEAD_VALUE: usize = 16 * 1024;

/// The precondition headers of a write (RFC 9110 §13.1): If-Match wins over
/// If-None-Match: * when both are sent.
fn precondition(call: &Call) -> Precondition {
    if let Some(tags) = call.header(header::IF_MATCH) {
        if tags.trim() == "*" {
            return Precondition::Present;
        }
        return Precondition::Etags(etags(tags));
    }
    match call.header(header::IF_NONE_MATCH) {
        Some(tags) if tags.trim() == "*" => Precondition::Absent,
        _ => Precondition::Any,
    }
}

/// The entity tags of a list header; weak ones never match strongly, so they are left out.
fn etags(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|t| t.starts_with('"') && t.ends_with('"') && t.len() >= 2)
        .map(str::to_string)
        .collect()
}

fn collection_missing() -> Response {
    plain(StatusCode::CONFLICT, "the collection does not exist\n")
}

fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "nothing here\n")
}

fn not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, super::ALLOW)],
        "not a method this resource takes\n",
    )
        .into_response()
}

pub(super) fn get(call: &Call) -> Result<Response, CollectionError> {
    let Target::Resource(kind, _, collection, name) = &call.target else {
        return Ok(not_allowed());
    };
    let store = call.dav.collections.open(&call.account)?;
    let Some(collection) = store.collection(*kind, collection)? else {
        return Ok(not_found());
    };
    let Some((resource, body)) = store.read(&collection, name)? else {
        return Ok(not_found());
    };
    if let Some(tags) = call.header(header::IF_NONE_MATCH)
        && (tags.trim() == "*" || etags(tags).contains(&resource.etag))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, resource.etag)]).into_response());
    }
    if let Some(tags) = call.header(header::IF_MATCH)
        && tags.trim() != "*"
        && !etags(tags).contains(&resource.etag)
    {
        return Ok(plain(StatusCode::PRECONDITION_FAILED, "the ETag differs\n"));
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, resource.content_type),
            (header::ETAG, resource.etag),
            (header::LAST_MODIFIED, http_date(resource.modified)),
        ],
        body,
    )
        .into_response())
}

/// The content type a resource is kept and served with.
fn stored_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Calendar => "text/calendar; charset=utf-8",
        Kind::AddressBook => "text/vcard; charset=utf-8",
    }
}

fn refused(refusal: &Refusal) -> Response {
    tracing::info!(why = %refusal.why, precondition = refusal.precondition, "dav PUT refused");
    precondition_failed(StatusCode::FORBIDDEN, refusal.ns, refusal.precondition)
}

pub(super) fn put(call: &Call, body: &[u8]) -> Result<Response, CollectionError> {
    let Target::Resource(kind, _, collection_name, name) = &call.target else {
        return Ok(not_allowed());
    };
    let kind = *kind;
    let mut store = call.dav.collections.open(&call.account)?;
    let Some(collection) = store.collection(kind, collection_name)? else {
        return Ok(collection_missing());
    };
    let content_type = call.header(header::CONTENT_TYPE);
    let checked = match kind {
        Kind::Calendar if !content::media_type_is(content_type, &["text/calendar"]) => {
            return Ok(precondition_failed(
                StatusCode::FORBIDDEN,
                CALDAV,
                "supported-calendar-data",
            ));
        }
        Kind::AddressBook
            if !content::media_type_is(content_type, &["text/vcard", "text/x-vcard"]) =>
        {
            return Ok(precondition_failed(
                StatusCode::FORBIDDEN,
                CARDDAV,
                "supported-address-data",
            ));
        }
        Kind::Calendar => content::calendar_object(body, &collection.components),
        Kind::AddressBook => content::vcard(body, name),
    };
    let checked = match checked {
        Ok(checked) => checked,
        Err(refusal) => return Ok(refused(&refusal)),
    };
    let new = NewResource {
        name,
        uid: &checked.uid,
        component: &checked.component,
        content_type: stored_type(kind),
        body,
        span: checked.span,
        moved_from: None,
    };
    let result = store.put(&collection, &new, &precondition(call), call.quota());
    stored(call, kind, &collection, result)
}

/// The answer to a write of a resource: 201 or 204 with its ETag, or why it was refused.
fn stored(
    call: &Call,
    kind: Kind,
    collection: &Collection,
    result: Result<(Resource, bool), CollectionError>,
) -> Result<Response, CollectionError> {
    match result {
        Ok((resource, created)) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::NO_CONTENT
            };
            Ok((status, [(header::ETAG, resource.etag)]).into_response())
        }
        Err(CollectionError::UidConflict(holder)) => {
            let href = call.resource_href(kind, &collection.name, &holder);
            let inner = format!("<d:href>{}</d:href>", xml::escape(&href));
            Ok(xml_response(
                StatusCode::FORBIDDEN,
                xml::error_body(kind_ns(kind), "no-uid-conflict", Some(&inner)),
            ))
        }
        Err(e) => Err(e),
    }
}

/// COPY and MOVE of a resource (RFC 4918 §9.8–9.9) to another name in any of the
/// account's collections of its kind; what arrives is checked as a PUT would be. A MOVE
/// is one write: the source goes in the same transaction the destination is stored in.
pub(super) fn transfer(call: &Call, keep_source: bool) -> Result<Response, CollectionError> {
    let Target::Resource(kind, _, from_collection, from_name) = &call.target else {
        return Ok(plain(
            StatusCode::FORBIDDEN,
            "only calendar objects and contacts are copied or moved\n",
        ));
    };
    let kind = *kind;
    let destination = call
        .header(header::HeaderName::from_static("destination"))
        .and_then(|d| d.parse::<axum::http::Uri>().ok())
        .and_then(|uri| Target::parse(uri.path()))
        .map(|target| call.resolve(target));
    let destination = match destination {
        Some(Some(target)) => Some(target),
        // A path under a mount that shares nothing, or someone else's tree.
        Some(None) => {
            return Ok(plain(
                StatusCode::FORBIDDEN,
                "the destination is not in your reach\n",
            ));
        }
        None => None,
    };
    let (to_collection, to_name) = match destination {
        Some(Target::Resource(k, account, collection, name))
            if k == kind && account == call.account =>
        {
            (collection, name)
        }
        Some(_) => {
            return Ok(plain(
                StatusCode::FORBIDDEN,
                "the destination is not a resource in one of your collections of this kind\n",
            ));
        }
        None => return Ok(bad_request("no Destination header naming a resource")),
    };
    if (&to_collection, &to_name) == (from_collection, from_name) {
        return Ok(plain(
            StatusCode::FORBIDDEN,
            "the source and the destination are the same\n",
        ));
    }
    let mut store = call.dav.collections.open(&call.account)?;
    let Some(source_collection) = store.collection(kind, from_collection)? else {
        return Ok(not_found());
    };
    let Some((source, body)) = store.read(&source_collection, from_name)? else {
        return Ok(not_found());
    };
    if let Some(tags) = call.header(header::IF_MATCH)
        && tags.trim() != "*"
        && !etags(tags).contains(&source.etag)
    {
        return Ok(plain(StatusCode::PRECONDITION_FAILED, "the ETag differs\n"));
    }
    let collection = if to_collection == source_collection.name {
        source_collection.clone()
    } else {
        match store.collection(kind, &to_collection)? {
            Some(c) => c,
            None => return Ok(collection_missing()),
        }
    };
    let checked = match kind {
        Kind::Calendar => content::calendar_object(&body, &collection.components),
        Kind::AddressBook => content::vcard(&body, &to_name),
    };
    let checked = match checked {
        Ok(checked) => checked,
        Err(refusal) => return Ok(refused(&refusal)),
    };
    // Overwrite: F refuses an existing destination with 412 (RFC 4918 §10.6).
    let precondition = match call.header(header::HeaderName::from_static("overwrite")) {
        Some(o) if o.trim().eq_ignore_ascii_case("f") => Precondition::Absent,
        _ => Precondition::Any,
    };
    let new = NewResource {
        name: &to_name,
        uid: &checked.uid,
        component: &checked.component,
        content_type: stored_type(kind),
        body: &body,
        span: checked.span,
        moved_from: (!keep_source).then_some((&source_collection, from_name.as_str())),
    };
    stored(
        call,
        kind,
        &collection,
        store.put(&collection, &new, &precondition, call.quota()),
    )
}

pub(super) fn delete(call: &Call) -> Result<Response, CollectionError> {
    let mut store = call.dav.collections.open(&call.account)?;
    match &call.target {
        Target::Resource(kind, _, collection, name) => {
            let Some(collection) = store.collection(*kind, collection)? else {
                return Ok(not_found());
            };
            if store.delete(&collection, name, &precondition(call))? {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Ok(not_found())
            }
        }
        Target::Collection(kind, _, name) => {
            let Some(collection) = store.collection(*kind, name)? else {
                return Ok(not_found());
            };
            store.remove(&collection)?;
            tracing::info!(account = %call.account, collection = %name, "dav collection deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Ok(plain(StatusCode::FORBIDDEN, "this cannot be deleted\n")),
    }
}

/// Properties only the server sets.
fn protected(ns: &str, name: &str) -> bool {
    match ns {
        DAV => matches!(
            name,
            "resourcetype"
                | "getetag"
                | "getcontenttype"
                | "getcontentlength"
                | "getlastmodified"
                | "creationdate"
                | "sync-token"
                | "current-user-principal"
                | "current-user-privilege-set"
                | "supported-report-set"
                | "owner"
                | "principal-URL"
                | "lockdiscovery"
                | "supportedlock"
                | "quota-used-bytes"
                | "quota-available-bytes"
        ),
        CALDAV => matches!(
            name,
            "supported-calendar-component-set"
                | "supported-calendar-data"
                | "max-resource-size"
                | "calendar-home-set"
                | "calendar-user-address-set"
        ),
        CARDDAV => matches!(
            name,
            "supported-address-data" | "max-resource-size" | "addressbook-home-set"
        ),
        CALSERVER => name == "getctag",
        _ => false,
    }
}

/// MKCALENDAR (RFC 4791 §5.3.1) and MKCOL, extended (RFC 5689) or plain: a calendar in
/// the calendar home, an address book in the address book home.
pub(super) fn make(call: &Call, body: &[u8], calendar: bool) -> Result<Response, CollectionError> {
    // The body is read once, before anything else: RFC 4918 §9.3 makes one the server
    // does not understand 415 wherever it is sent (400 when it claims to be XML).
    let root = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match xml::parse(body) {
            Ok(root) => Some(root),
            Err(_)
                if !content::media_type_is(
                    call.header(header::CONTENT_TYPE),
                    &["application/xml", "text/xml"],
                ) =>
            {
                return Ok(plain(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "MKCOL and MKCALENDAR take an XML body or none\n",
                ));
            }
            Err(e) => return Ok(bad_request(&e.to_string())),
        }
    };
    let (kind, name) = match &call.target {
        Target::Collection(kind, _, name) => (kind, name),
        Target::Resource(kind, _, parent, _) => {
            let store = call.dav.collections.open(&call.account)?;
            // RFC 4918 §9.3.1: 409 when the parent is missing; calendars and address
            // books hold no collections.
            return Ok(match store.collection(*kind, parent)? {
                None => collection_missing(),
                Some(_) => plain(
                    StatusCode::FORBIDDEN,
                    "calendars and address books hold no collections\n",
                ),
            });
        }
        _ => {
            return Ok(plain(
                StatusCode::FORBIDDEN,
                "collections are made inside a calendar or address book home\n",
            ));
        }
    };
    let kind = *kind;
    if calendar && kind != Kind::Calendar {
        return Ok(plain(
            StatusCode::FORBIDDEN,
            "calendars are made in the calendar home\n",
        ));
    }
    let mut set: Vec<&Element> = Vec::new();
    if let Some(root) = &root {
        let expected = if calendar {
            root.is(CALDAV, "mkcalendar")
        } else {
            root.is(DAV, "mkcol")
        };
        if !expected {
            return Ok(plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body is not a mkcalendar or mkcol request\n",
            ));
        }
        for s in root.all(DAV, "set") {
            if let Some(prop) = s.child(DAV, "prop") {
                set.extend(prop.children.iter());
            }
        }
    }
    let mut components = kind.default_components();
    let mut dead: Vec<(PropName, String)> = Vec::new();
    let mut bad: Vec<PropName> = Vec::new();
    for prop in &set {
        let name_of = (prop.ns.clone(), prop.name.clone());
        if prop.is(DAV, "resourcetype") {
            let wanted = match kind {
                Kind::Calendar => prop.child(CALDAV, "calendar").is_some(),
                Kind::AddressBook => prop.child(CARDDAV, "addressbook").is_some(),
            };
            if !wanted || prop.child(DAV, "collection").is_none() {
                bad.push(name_of);
            }
        } else if prop.is(CALDAV, "supported-calendar-component-set") && kind == Kind::Calendar {
            let named: Vec<String> = prop.all(CALDAV, "comp").filter_map(comp_name).collect();
            if named.is_empty() {
                bad.push(name_of);
            } else {
                components = named;
            }
        } else if protected(&prop.ns, &prop.name) || prop.text_content().len() > MAX_DEAD_VALUE {
            bad.push(name_of);
        } else {
            dead.push((name_of, prop.text_content()));
        }
    }
    if dead.len() > MAX_DEAD_PROPS {
        return Ok(plain(StatusCode::FORBIDDEN, "too many properties\n"));
    }
    if !bad.is_empty() {
        let href = path::collection(kind, &call.account, name);
        let mut out = Multistatus::new();
        let ok: Vec<PropName> = set
            .iter()
            .map(|p| (p.ns.clone(), p.name.clone()))
            .filter(|n| !bad.contains(n))
            .collect();
        out.propstats(
            &href,
            &[
                (StatusCode::FORBIDDEN, bad),
                (StatusCode::FAILED_DEPENDENCY, ok),
            ],
        );
        let mut response = out.finish();
        *response.status_mut() = StatusCode::FORBIDDEN;
        return Ok(response);
    }
    let mut store = call.dav.collections.open(&call.account)?;
    store.create(kind, name, &components, &dead)?;
    tracing::info!(account = %call.account, collection = %name, kind = kind.as_str(), "dav collection made");
    Ok((StatusCode::CREATED, [(header::CACHE_CONTROL, "no-cache")]).into_response())
}

/// A `comp` element's name, when it is a component a calendar can hold.
fn comp_name(comp: &Element) -> Option<String> {
    let name = comp.attr("name")?.trim().to_ascii_uppercase();
    ["VEVENT", "VTODO", "VJOURNAL"]
        .contains(&name.as_str())
        .then_some(name)
}

/// PROPPATCH (RFC 4918 §9.2): all the changes or none; protected properties refused.
pub(super) fn proppatch(call: &Call, body: &[u8]) -> Result<Response, CollectionError> {
    let root = match xml::parse(body) {
        Ok(root) if root.is(DAV, "propertyupdate") => root,
        Ok(_) => return Ok(bad_request("the body is not a DAV:propertyupdate")),
        Err(e) => return Ok(bad_request(&e.to_string())),
    };
    let mut set: Vec<(PropName, String)> = Vec::new();
    let mut remove: Vec<PropName> = Vec::new();
    let mut all: Vec<PropName> = Vec::new();
    for change in &root.children {
        let Some(prop) = change.child(DAV, "prop") else {
            continue;
        };
        if change.is(DAV, "set") {
            for p in &prop.children {
                set.push(((p.ns.clone(), p.name.clone()), p.text_content()));
            }
        } else if change.is(DAV, "remove") {
            remove.extend(names(prop));
        }
    }
    all.extend(set.iter().map(|(n, _)| n.clone()));
    all.extend(remove.iter().cloned());
    let Target::Collection(kind, _, name) = &call.target else {
        let href = call.path.clone();
        let mut out = Multistatus::new();
        out.propstats(&href, &[(StatusCode::FORBIDDEN, all)]);
        return Ok(out.finish());
    };
    let mut store = call.dav.collections.open(&call.account)?;
    let Some(collection) = store.collection(*kind, name)? else {
        return Ok(not_found());
    };
    let bad: Vec<PropName> = set
        .iter()
        .filter(|((ns, n), v)| protected(ns, n) || v.len() > MAX_DEAD_VALUE)
        .map(|(n, _)| n.clone())
        .chain(remove.iter().filter(|(ns, n)| protected(ns, n)).cloned())
        .collect();
    let href = path::collection(*kind, &call.account, name);
    let mut out = Multistatus::new();
    let after = collection.props.len() + set.len();
    if !bad.is_empty() || after > MAX_DEAD_PROPS + remove.len() {
        let (status, failed) = if bad.is_empty() {
            (StatusCode::INSUFFICIENT_STORAGE, all.clone())
        } else {
            (StatusCode::FORBIDDEN, bad.clone())
        };
        let others: Vec<PropName> = all.into_iter().filter(|n| !failed.contains(n)).collect();
        out.propstats(
            &href,
            &[(status, failed), (StatusCode::FAILED_DEPENDENCY, others)],
        );
        return Ok(out.finish());
    }
    store.update_props(&collection, &set, &remove)?;
    out.propstats(&href, &[(StatusCode::OK, all)]);
    Ok(out.finish())
}
