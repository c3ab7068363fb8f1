//! Fuzzes the CalDAV/CardDAV request path: a logged-in request of any method, to a path
//! chosen from the tree or read from the input, with the rest of the input as its body
//! (XML, iCalendar, vCard). A request must never panic, and never end in a server error.
//!
//! Input: byte 0 picks the method, byte 1 the path (past the list: the input's first line
//! is the path), byte 2 sets headers (Depth, If-Match, If-None-Match, Destination,
//! Overwrite, Content-Type); the rest is the body.
#![no_main]

#[path = "support/mailbox_world.rs"]
mod mailbox_world;

use std::sync::{Arc, OnceLock};

use ferrymail::collections::Collections;
use ferrymail::dav::{self, Dav};
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 14] = [
    "PROPFIND", "REPORT", "PUT", "GET", "HEAD", "DELETE", "PROPPATCH", "MKCALENDAR", "MKCOL",
    "COPY", "MOVE", "OPTIONS", "POST", "LOCK",
];

const PATHS: [&str; 12] = [
    "/dav/",
    "/dav/principals/me@fuzz.test/",
    "/dav/calendars/me@fuzz.test/",
    "/dav/calendars/me@fuzz.test/calendar/",
    "/dav/calendars/me@fuzz.test/calendar/a.ics",
    "/dav/calendars/me@fuzz.test/work/",
    "/dav/calendars/me@fuzz.test/work/b.ics",
    "/dav/addressbooks/me@fuzz.test/",
    "/dav/addressbooks/me@fuzz.test/contacts/",
    "/dav/addressbooks/me@fuzz.test/contacts/c.vcf",
    "/dav/calendars/you@fuzz.test/calendar/",
    "/",
];

struct World {
    base: mailbox_world::Base,
    dav: Arc<Dav>,
}

static WORLD: OnceLock<World> = OnceLock::new();

fn world() -> World {
    let base = mailbox_world::base();
    let collections = Collections::new(base.mailboxes.clone()).expect("collections");
    let dav = Arc::new(Dav::new(collections, base.logins.clone(), base.snapshot.clone()));
    World { base, dav }
}

/// "me@fuzz.test:quickstart" in Base64.
const AUTHORIZATION: &str = "Basic bWVAZnV6ei50ZXN0OnF1aWNrc3RhcnQ=";

fuzz_target!(|data: &[u8]| {
    let world = WORLD.get_or_init(world);
    let [method, path, flags, rest @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*method) % METHODS.len()];
    let (path, body) = match PATHS.get(usize::from(*path) % (PATHS.len() + 1)) {
        Some(path) => (path.to_string(), rest),
        None => {
            let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let line = String::from_utf8_lossy(&rest[..end]).into_owned();
            (line, rest.get(end + 1..).unwrap_or_default())
        }
    };
    let mut request = axum::http::Request::builder()
        .method(method)
        .header("authorization", AUTHORIZATION);
    let Ok(uri) = path.parse::<axum::http::Uri>() else {
        return;
    };
    request = request.uri(uri);
    if flags & 1 != 0 {
        request = request.header("depth", if flags & 2 != 0 { "0" } else { "1" });
    }
    if flags & 4 != 0 {
        request = request.header("if-match", "\"stale\"");
    }
    if flags & 8 != 0 {
        request = request.header("if-none-match", "*");
    }
    if flags & 16 != 0 {
        let to = PATHS[usize::from(flags >> 5) % PATHS.len()];
        request = request.header("destination", format!("https://mx.fuzz.test{to}"));
    }
    if flags & 32 != 0 {
        request = request.header("overwrite", "F");
    }
    if flags & 64 != 0 {
        request = request.header("content-type", "text/calendar");
    } else if flags & 128 != 0 {
        request = request.header("content-type", "text/vcard");
    }
    let Ok(request) = request.body(axum::body::Body::from(body.to_vec())) else {
        return;
    };
    let peer = Some("127.0.0.1".parse().expect("ip"));
    let response = world.base.runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            dav::handle(world.dav.clone(), peer, true, request),
        )
        .await
    });
    let response = response.expect("a DAV request did not finish in 30 s");
    assert_ne!(
        response.status(),
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "{method} {path}: a server error"
    );
});
