//! The calendar and contacts storage suite: default collections, resources with their
//! ETags, preconditions, UID uniqueness, change numbers, removals and the shared quota,
//! written once against `Collections` and run on SQLite and on MongoDB (secantusd);
//! then two nodes on one MongoDB.

mod common;

use common::Process;
use ferrymail::collections::{
    CALENDAR_COMPONENTS, CollectionError, Collections, Kind, NewResource, Precondition, Span,
    etag_of,
};
use ferrymail::mailbox::{Mailboxes, MasterKey};
use ferrymail::store::{MongoStore, Store};

struct Backend {
    boxes: Mailboxes,
    dav: Collections,
    _dir: tempfile::TempDir,
    _server: Option<Process>,
}

fn key() -> MasterKey {
    MasterKey::new(&[9u8; 32]).unwrap()
}

fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let boxes = Mailboxes::new(dir.path(), key());
    Backend {
        dav: Collections::new(boxes.clone()).unwrap(),
        boxes,
        _dir: dir,
        _server: None,
    }
}

fn mongodb() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = common::mongodb(dir.path());
    let store = MongoStore::connect(&url, "ferrymail").unwrap();
    let boxes = Mailboxes::in_mongo(dir.path(), key(), store.connection().unwrap()).unwrap();
    Backend {
        dav: Collections::new(boxes.clone()).unwrap(),
        boxes,
        _dir: dir,
        _server: Some(server),
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $name() { super::$name(&super::sqlite()); })*
        }
        mod on_mongodb {
            $(#[test] fn $name() { super::$name(&super::mongodb()); })*
        }
    };
}

conformance!(
    an_account_starts_with_a_calendar_and_an_address_book_once,
    collections_are_made_patched_and_removed,
    resources_keep_etags_preconditions_and_unique_uids,
    changes_since_a_token_tell_writes_and_removals,
    resources_share_the_mailbox_quota,
    spans_keep_queries_from_what_cannot_overlap,
    a_move_takes_the_uid_and_leaves_a_removal,
);

fn event(uid: &str, summary: &str) -> Vec<u8> {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260102T100000Z\r\n\
         SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    .into_bytes()
}

fn new<'a>(name: &'a str, uid: &'a str, body: &'a [u8]) -> NewResource<'a> {
    NewResource {
        name,
        uid,
        component: "VEVENT",
        content_type: "text/calendar; charset=utf-8",
        body,
        span: Span::ANY,
        moved_from: None,
    }
}

fn an_account_starts_with_a_calendar_and_an_address_book_once(b: &Backend) {
    let mut mine = b.dav.open("Me@D.test").unwrap();
    let calendars = mine.collections(Kind::Calendar).unwrap();
    assert_eq!(calendars.len(), 1);
    assert_eq!(calendars[0].name, "calendar");
    assert_eq!(calendars[0].prop("DAV:", "displayname"), Some("Calendar"));
    assert_eq!(calendars[0].components, CALENDAR_COMPONENTS);
    let books = mine.collections(Kind::AddressBook).unwrap();
    assert_eq!(books.len(), 1);
    assert_eq!(books[0].name, "contacts");
    assert_eq!(books[0].prop("DAV:", "displayname"), Some("Contacts"));
    // Removed by its owner, a default is not made again.
    mine.remove(&calendars[0]).unwrap();
    drop(mine);
    let again = b.dav.open("me@d.test").unwrap();
    assert!(again.collections(Kind::Calendar).unwrap().is_empty());
    assert_eq!(again.collections(Kind::AddressBook).unwrap().len(), 1);
    // Another account has its own.
    let theirs = b.dav.open("you@d.test").unwrap();
    assert_eq!(theirs.collections(Kind::Calendar).unwrap().len(), 1);
    // The mailbox beside them is whole.
    let mailbox = b.boxes.open("me@d.test").unwrap();
    assert!(mailbox.folder("INBOX").unwrap().is_some());
}

fn collections_are_made_patched_and_removed(b: &Backend) {
    let mut mine = b.dav.open("me@d.test").unwrap();
    let name = ("DAV:".to_string(), "displayname".to_string());
    let color = (
        "http://apple.com/ns/ical/".to_string(),
        "calendar-color".to_string(),
    );
    let work = mine
        .create(
            Kind::Calendar,
            "work",
            &["VTODO".to_string()],
            &[(name.clone(), "Work".into())],
        )
        .unwrap();
    assert_eq!(work.components, ["VTODO"]);
    assert!(matches!(
        mine.create(Kind::Calendar, "work", &[], &[]),
        Err(CollectionError::Exists(_))
    ));
    // The same name in the other home is another collection.
    mine.create(Kind::AddressBook, "work", &[], &[]).unwrap();
    let patched = mine
        .update_props(
            &work,
            &[(color.clone(), "#ff0000".into())],
            std::slice::from_ref(&name),
        )
        .unwrap();
    assert_eq!(patched.prop(&color.0, &color.1), Some("#ff0000"));
    let read = mine.collection(Kind::Calendar, "work").unwrap().unwrap();
    assert_eq!(read.props, patched.props);
    assert_eq!(read.prop("DAV:", "displayname"), None);
    let body = event("t", "x");
    mine.put(&read, &new("t.ics", "t", &body), &Precondition::Any, None)
        .unwrap();
    mine.remove(&read).unwrap();
    assert!(mine.collection(Kind::Calendar, "work").unwrap().is_none());
    // Made again, it is a new instance: its old tokens name nothing.
    let remade = mine.create(Kind::Calendar, "work", &[], &[]).unwrap();
    assert_ne!(remade.instance, read.instance);
    assert_eq!(remade.token_modseq(&read.sync_token()), None);
    assert!(mine.resources(&remade).unwrap().is_empty());
}

fn resources_keep_etags_preconditions_and_unique_uids(b: &Backend) {
    let mut mine = b.dav.open("me@d.test").unwrap();
    let cal = mine
        .collection(Kind::Calendar, "calendar")
        .unwrap()
        .unwrap();
    let body = event("u1", "secret meeting");
    let (first, created) = mine
        .put(
            &cal,
            &new("a.ics", "u1", &body),
            &Precondition::Absent,
            None,
        )
        .unwrap();
    assert!(created);
    assert_eq!(first.etag, etag_of(&body));
    assert!(matches!(
        mine.put(
            &cal,
            &new("a.ics", "u1", &body),
            &Precondition::Absent,
            None
        ),
        Err(CollectionError::Changed)
    ));
    assert!(matches!(
        mine.put(
            &cal,
            &new("new.ics", "u9", &body),
            &Precondition::Present,
            None
        ),
        Err(CollectionError::Changed)
    ));
    match mine.put(&cal, &new("b.ics", "u1", &body), &Precondition::Any, None) {
        Err(CollectionError::UidConflict(holder)) => assert_eq!(holder, "a.ics"),
        other => panic!("{other:?}"),
    }
    let changed = event("u1", "moved meeting");
    assert!(matches!(
        mine.put(
            &cal,
            &new("a.ics", "u1", &changed),
            &Precondition::Etags(vec!["\"old\"".into()]),
            None
        ),
        Err(CollectionError::Changed)
    ));
    let (second, created) = mine
        .put(
            &cal,
            &new("a.ics", "u1", &changed),
            &Precondition::Etags(vec!["\"x\"".into(), first.etag.clone()]),
            None,
        )
        .unwrap();
    assert!(!created && second.etag != first.etag && second.modseq > first.modseq);
    let (resource, read) = mine.read(&cal, "a.ics").unwrap().unwrap();
    assert_eq!(read, changed);
    assert_eq!(resource, second);
    assert_eq!(mine.resources(&cal).unwrap(), std::slice::from_ref(&second));
    assert_eq!(mine.resource(&cal, "a.ics").unwrap(), Some(second.clone()));
    // A 9 MB object comes back whole.
    let big = event("big", &"x".repeat(9_000_000));
    mine.put(&cal, &new("big.ics", "big", &big), &Precondition::Any, None)
        .unwrap();
    assert_eq!(mine.read(&cal, "big.ics").unwrap().unwrap().1, big);
    let mut both = 0;
    mine.each_within(&cal, None, &mut |_, _| {
        both += 1;
        true
    })
    .unwrap();
    assert_eq!(both, 2);
    assert!(matches!(
        mine.delete(&cal, "a.ics", &Precondition::Etags(vec!["\"old\"".into()])),
        Err(CollectionError::Changed)
    ));
    assert!(
        mine.delete(&cal, "a.ics", &Precondition::Etags(vec![second.etag]))
            .unwrap()
    );
    assert!(!mine.delete(&cal, "a.ics", &Precondition::Any).unwrap());
    // The UID is free again.
    mine.put(&cal, &new("b.ics", "u1", &body), &Precondition::Any, None)
        .unwrap();
}

fn spans_keep_queries_from_what_cannot_overlap(b: &Backend) {
    let mut mine = b.dav.open("me@d.test").unwrap();
    let cal = mine
        .collection(Kind::Calendar, "calendar")
        .unwrap()
        .unwrap();
    let spans = [
        (
            "march.ics",
            Span {
                start: 100,
                end: 200,
                exact: true,
            },
        ),
        (
            "instant.ics",
            Span {
                start: 300,
                end: 300,
                exact: true,
            },
        ),
        (
            "forever.ics",
            Span {
                start: 150,
                end: i64::MAX,
                exact: false,
            },
        ),
        ("unknown.ics", Span::ANY),
    ];
    for (name, span) in spans {
        let body = event(name, name);
        let new = NewResource {
            span,
            ..new(name, name, &body)
        };
        mine.put(&cal, &new, &Precondition::Any, None).unwrap();
    }
    let names = |within| {
        let mut names: Vec<String> = Vec::new();
        mine.each_within(&cal, within, &mut |r, _| {
            names.push(r.name);
            true
        })
        .unwrap();
        names.sort();
        names
    };
    assert_eq!(names(None).len(), 4);
    // Before everything but the unknown; the end of a range is not in it.
    assert_eq!(names(Some((0, 100))), ["unknown.ics"]);
    assert_eq!(names(Some((0, 101))), ["march.ics", "unknown.ics"]);
    // An instant at the start of a range is in it; one at its end is not.
    assert_eq!(
        names(Some((300, 400))),
        ["forever.ics", "instant.ics", "unknown.ics"]
    );
    assert_eq!(names(Some((250, 300))), ["forever.ics", "unknown.ics"]);
    // Far on, only what goes on for ever.
    assert_eq!(
        names(Some((1_000_000, i64::MAX))),
        ["forever.ics", "unknown.ics"]
    );
    // The span comes back as stored.
    assert_eq!(
        mine.resource(&cal, "forever.ics").unwrap().unwrap().span,
        spans[2].1
    );
}

fn a_move_takes_the_uid_and_leaves_a_removal(b: &Backend) {
    let mut mine = b.dav.open("me@d.test").unwrap();
    let cal = mine
        .collection(Kind::Calendar, "calendar")
        .unwrap()
        .unwrap();
    let body = event("u1", "Moving");
    mine.put(&cal, &new("a.ics", "u1", &body), &Precondition::Any, None)
        .unwrap();
    let before = mine
        .collection(Kind::Calendar, "calendar")
        .unwrap()
        .unwrap();
    // Within the collection, under a quota the two together would not fit in.
    let quota = Some(body.len() as u64 + 10);
    let moved = NewResource {
        moved_from: Some((&cal, "a.ics")),
        ..new("b.ics", "u1", &body)
    };
    let (resource, created) = mine
        .put(&cal, &moved, &Precondition::Absent, quota)
        .unwrap();
    assert!(created);
    assert!(mine.resource(&cal, "a.ics").unwrap().is_none());
    assert_eq!(mine.read(&cal, "b.ics").unwrap().unwrap().1, body);
    let changes = mine.changes_since(&cal, before.modseq).unwrap();
    assert_eq!(changes.removed, ["a.ics"]);
    assert_eq!(changes.changed, [resource]);
    // Into another collection; the source gone since is no move at all.
    let other = mine.create(Kind::Calendar, "other", &[], &[]).unwrap();
    let away = NewResource {
        moved_from: Some((&cal, "b.ics")),
        ..new("c.ics", "u1", &body)
    };
    mine.put(&other, &away, &Precondition::Any, quota).unwrap();
    assert!(mine.resources(&cal).unwrap().is_empty());
    assert!(matches!(
        mine.put(
            &other,
            &NewResource {
                name: "d.ics",
                ..away
            },
            &Precondition::Any,
            None
        ),
        Err(CollectionError::Changed)
    ));
    assert_eq!(mine.resources(&other).unwrap().len(), 1);
}

fn changes_since_a_token_tell_writes_and_removals(b: &Backend) {
    let mut mine = b.dav.open("me@d.test").unwrap();
    let cal = mine
        .collection(Kind::Calendar, "calendar")
        .unwrap()
        .unwrap();
    for n in ["a", "b", "c"] {
        mine.put(
            &cal,
            &new(&format!("{n}.ics"), n, &event(n, n)),
            &Precondition::Any,
            None,
        )
        .unwrap();
    }
    let at = mine
        .collection(Kind::Calendar, "calendar")
        .unwrap()
        .unwrap();
    let token = at.sync_token();
    let since = at.token_modseq(&token).unwrap();
    let all = mine.changes_since(&at, 0).unwrap();
    assert_eq!(all.changed.len(), 3);
    mine.put(
        &cal,
        &new("b.ics", "b", &event("b", "changed")),
        &Precondition::Any,
        None,
    )
    .unwrap();
    mine.delete(&cal, "c.ics", &Precondition::Any).unwrap();
    let later = mine.changes_since(&at, since).unwrap();
    let names: Vec<&str> = later.changed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["b.ics"]);
    assert_eq!(later.removed, ["c.ics"]);
    let now = mine
        .collection(Kind::Calendar, "calendar")
        .unwrap()
        .unwrap();
    assert!(now.modseq > at.modseq);
    assert!(
        now.token_modseq(&token).is_some(),
        "an old token stays valid"
    );
    assert_eq!(
        now.token_modseq(&format!("urn:ferrymail:sync:{}:999999", now.instance)),
        None,
        "a token from the future is not"
    );
    // A removed name written again is no longer reported removed.
    mine.put(
        &cal,
        &new("c.ics", "c", &event("c", "back")),
        &Precondition::Any,
        None,
    )
    .unwrap();
    let again = mine.changes_since(&at, since).unwrap();
    assert!(again.removed.is_empty());
    assert_eq!(again.changed.len(), 2);
}

fn resources_share_the_mailbox_quota(b: &Backend) {
    b.boxes
        .append("me@d.test", "INBOX", &[b'x'; 600], None)
        .unwrap();
    let mut mine = b.dav.open("me@d.test").unwrap();
    let cal = mine
        .collection(Kind::Calendar, "calendar")
        .unwrap()
        .unwrap();
    let body = event("u1", "x");
    assert!(matches!(
        mine.put(
            &cal,
            &new("a.ics", "u1", &body),
            &Precondition::Any,
            Some(700)
        ),
        Err(CollectionError::OverQuota { used: 600, .. })
    ));
    mine.put(
        &cal,
        &new("a.ics", "u1", &body),
        &Precondition::Any,
        Some(2000),
    )
    .unwrap();
    let mailbox = b.boxes.open("me@d.test").unwrap();
    assert_eq!(mailbox.quota_used().unwrap(), 600 + body.len() as u64);
    // Mail counts the resources too.
    assert!(
        b.boxes
            .append(
                "me@d.test",
                "INBOX",
                &[b'y'; 300],
                Some(600 + body.len() as u64 + 100)
            )
            .is_err()
    );
    // A smaller rewrite fits even at the limit; removing the calendar frees its bytes.
    let smaller = event("u1", "");
    mine.put(
        &cal,
        &new("a.ics", "u1", &smaller),
        &Precondition::Any,
        Some(1),
    )
    .unwrap();
    assert_eq!(mailbox.quota_used().unwrap(), 600 + smaller.len() as u64);
    mine.remove(&cal).unwrap();
    assert_eq!(mailbox.quota_used().unwrap(), 600);
}

#[test]
fn two_nodes_share_one_mongodb_calendar() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = common::mongodb(dir.path());
    let connection = |k: MasterKey| {
        let store = MongoStore::connect(&url, "ferrymail").unwrap();
        let boxes = Mailboxes::in_mongo(dir.path(), k, store.connection().unwrap()).unwrap();
        Collections::new(boxes).unwrap()
    };
    let (a, b) = (connection(key()), connection(key()));
    let mut on_a = a.open("me@d.test").unwrap();
    let on_b = b.open("me@d.test").unwrap();
    // Both opened the account at once: one set of defaults.
    assert_eq!(on_b.collections(Kind::Calendar).unwrap().len(), 1);
    let cal = on_a
        .collection(Kind::Calendar, "calendar")
        .unwrap()
        .unwrap();
    let body = event("u1", "top secret");
    on_a.put(&cal, &new("a.ics", "u1", &body), &Precondition::Any, None)
        .unwrap();
    let seen = on_b
        .collection(Kind::Calendar, "calendar")
        .unwrap()
        .unwrap();
    assert!(seen.modseq > cal.modseq);
    assert_ne!(seen.sync_token(), cal.sync_token());
    assert_eq!(on_b.read(&seen, "a.ics").unwrap().unwrap().1, body);
    let stranger = connection(MasterKey::new(&[1u8; 32]).unwrap());
    assert!(
        stranger
            .open("me@d.test")
            .unwrap()
            .read(&seen, "a.ics")
            .is_err()
    );
}
