//! Each account's calendars and address books (CalDAV, CardDAV): collections, their
//! resources (sealed like messages), dead properties and change numbers for sync tokens.

#[cfg(feature = "mongodb")]
mod mongo;
mod sqlite;

use std::collections::BTreeMap;

use crate::mailbox::{CryptoError, Mailboxes};

#[cfg(feature = "mongodb")]
pub use mongo::{MongoCollections, renew_instances as renew_instances_in_mongo};
pub use sqlite::{SqliteCollections, renew_instances};

#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    #[error("the account is over its quota ({used} of {quota} bytes used)")]
    OverQuota { used: u64, quota: u64 },
    #[error("a collection named {0:?} already exists")]
    Exists(String),
    #[error("no collection named {0:?}")]
    NoCollection(String),
    #[error("another resource ({0:?}) holds the same UID")]
    UidConflict(String),
    #[error("the resource changed meanwhile")]
    Changed,
    #[error("{0}")]
    Refused(&'static str),
    #[error("collections database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("collections files: {0}")]
    Io(#[from] std::io::Error),
    #[error("collections file {0}")]
    Open(#[from] crate::sqlite::OpenError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("collections: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Mailbox(#[from] crate::mailbox::MailboxError),
    #[cfg(feature = "mongodb")]
    #[error("collections in MongoDB: {0}")]
    Mongo(Box<mongodb::error::Error>),
}

/// What a collection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Calendar,
    AddressBook,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Calendar => "calendar",
            Kind::AddressBook => "addressbook",
        }
    }

    /// The component types a new collection of this kind takes.
    pub fn default_components(self) -> Vec<String> {
        match self {
            Kind::Calendar => CALENDAR_COMPONENTS.map(String::from).to_vec(),
            Kind::AddressBook => Vec::new(),
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        match text {
            "calendar" => Some(Kind::Calendar),
            "addressbook" => Some(Kind::AddressBook),
            _ => None,
        }
    }
}

/// A property's name: namespace URI and local name (`("DAV:", "displayname")`).
pub type PropName = (String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    pub id: i64,
    pub kind: Kind,
    /// The last segment of its URL.
    pub name: String,
    /// Chosen at creation: a token of a deleted and re-made collection of the same name
    /// is not taken for one of this.
    pub instance: String,
    /// Its change number: raised by every change to it or its resources.
    pub modseq: u64,
    /// Component types a calendar takes (VEVENT, VTODO, VJOURNAL); empty for books.
    pub components: Vec<String>,
    /// Dead properties (displayname, calendar-color…): name → text value.
    pub props: BTreeMap<PropName, String>,
}

impl Collection {
    /// The sync token (RFC 6578) and ctag: a URI naming this instance and change.
    pub fn sync_token(&self) -> String {
        format!("urn:ferrymail:sync:{}:{}", self.instance, self.modseq)
    }

    /// The change number a token of this collection names, if it is one.
    pub fn token_modseq(&self, token: &str) -> Option<u64> {
        let rest = token.strip_prefix("urn:ferrymail:sync:")?;
        let (instance, modseq) = rest.rsplit_once(':')?;
        (instance == self.instance).then_some(())?;
        modseq.parse().ok().filter(|n| *n <= self.modseq)
    }

    pub fn prop(&self, ns: &str, name: &str) -> Option<&str> {
        self.props
            .get(&(ns.to_string(), name.to_string()))
            .map(String::as_str)
    }
}

/// A calendar object or vCard, without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    /// The iCalendar or vCard UID: unique within the collection.
    pub uid: String,
    /// VEVENT, VTODO, VJOURNAL or VCARD.
    pub component: String,
    /// The strong ETag's value, quotes included.
    pub etag: String,
    pub size: u64,
    pub modseq: u64,
    /// Unix seconds of the last write.
    pub modified: i64,
    /// The content type it was stored with.
    pub content_type: String,
    /// When a calendar object happens, as far as queries need to know without opening it.
    pub span: Span,
}

/// The time a calendar object's instances cover, in Unix seconds, worked out when it is
/// stored: queries skip objects outside a time range without opening them. Stored in the
/// clear beside the sealed body, like the UID (the issue allows indexes in the clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first instance's start.
    pub start: i64,
    /// The last instance's end, never before `start`.
    pub end: i64,
    /// Whether the object has exactly one instance and it is `start..end` (an instant
    /// when they are equal): a time-range test on it needs nothing else.
    pub exact: bool,
}

impl Span {
    /// What is known of a vCard, or of an object stored before spans were kept.
    pub const ANY: Span = Span {
        start: i64::MIN,
        end: i64::MAX,
        exact: false,
    };

    /// Whether an instance `start..end` overlaps the range `from..to` (RFC 4791 §9.9): an
    /// instant when its end is not after its start. The backends' `each_within` filters
    /// with the looser `start < to && end >= from`, which keeps every such instance.
    pub fn overlaps(start: i64, end: i64, (from, to): (i64, i64)) -> bool {
        if end > start {
            start < to && end > from
        } else {
            from <= start && start < to
        }
    }
}

/// What a client sends to store one resource.
pub struct NewResource<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub component: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
    pub span: Span,
    /// MOVE: the resource (collection, name) this one replaces, removed in the same
    /// write; its UID is free for this one and its size is not counted twice.
    pub moved_from: Option<(&'a Collection, &'a str)>,
}

/// The condition a write is made under (If-Match / If-None-Match: *).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    Any,
    /// Only when nothing is stored under the name (If-None-Match: *).
    Absent,
    /// Only when something is (If-Match: *).
    Present,
    /// Only when what is stored has one of these ETags (quotes included).
    Etags(Vec<String>),
}

impl Precondition {
    /// Whether it holds for what is stored now (its ETag, if anything is).
    pub fn holds(&self, current: Option<&str>) -> bool {
        match (self, current) {
            (Precondition::Any, _) => true,
            (Precondition::Absent, current) => current.is_none(),
            (Precondition::Present, current) => current.is_some(),
            (Precondition::Etags(tags), Some(current)) => tags.iter().any(|t| t == current),
            (Precondition::Etags(_), None) => false,
        }
    }
}

/// What an account holds, for the admin.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub calendars: u64,
    /// Events, tasks and journal entries.
    pub calendar_items: u64,
    pub address_books: u64,
    pub contacts: u64,
}

/// What changed in a collection after a change number.
#[derive(Debug, Default)]
pub struct Changes {
    pub changed: Vec<Resource>,
    pub removed: Vec<String>,
}

/// The collections a new account starts with, by display name (their URL segments are
/// `slug`s of it: "calendar", "contacts").
pub const DEFAULTS: [(Kind, &str); 2] = [
    (Kind::Calendar, "Calendar"),
    (Kind::AddressBook, "Contacts"),
];

/// The calendar component types a calendar takes unless told otherwise.
pub const CALENDAR_COMPONENTS: [&str; 3] = ["VEVENT", "VTODO", "VJOURNAL"];

/// Calendars (and, apart, address books) a spec may declare for one account.
pub const DECLARED_PER_KIND: usize = 50;

/// The URL segment of a declared collection: its name in lower case, letters and digits
/// kept, every run of anything else one '-' ("Team Work" → "team-work").
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Strong ETag of a body: the same bytes give the same tag on every node and backend.
pub fn etag_of(body: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// Runs the same call on whichever backend this is.
macro_rules! each {
    ($backend:expr, $b:ident => $call:expr) => {
        match $backend {
            AccountCollections::Sqlite($b) => $call,
            #[cfg(feature = "mongodb")]
            AccountCollections::Mongo($b) => $call,
        }
    };
}

/// Where every account's collections are kept: in the account's mailbox file, sealed
/// with its key, so they share its quota, its backups and its removal; or in MongoDB
/// beside the mailboxes there.
#[derive(Clone)]
pub struct Collections {
    mailboxes: Mailboxes,
    /// Accounts in MongoDB known to have had their defaults made: asking again is a
    /// round trip per request, and the answer never turns back.
    #[cfg(feature = "mongodb")]
    ready: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Collections {
    /// Prepares MongoDB's indexes when the mailboxes live there.
    pub fn new(mailboxes: Mailboxes) -> Result<Collections, CollectionError> {
        #[cfg(feature = "mongodb")]
        if let Some(m) = mailboxes.mongo() {
            mongo::prepare(m)?;
        }
        Ok(Collections {
            mailboxes,
            #[cfg(feature = "mongodb")]
            ready: Default::default(),
        })
    }

    /// How many collections and items an account has, made nothing of (the admin's
    /// view; an account never used has none).
    pub fn counts(&self, account: &str) -> Result<Counts, CollectionError> {
        let mut counts = Counts::default();
        if !self.mailboxes.exists(account) {
            return Ok(counts);
        }
        let store = self.open_with(account, false)?;
        for kind in [Kind::Calendar, Kind::AddressBook] {
            for collection in store.collections(kind)? {
                let items = each!(&store, b => b.count(&collection))?;
                let (collections, total) = match kind {
                    Kind::Calendar => (&mut counts.calendars, &mut counts.calendar_items),
                    Kind::AddressBook => (&mut counts.address_books, &mut counts.contacts),
                };
                *collections += 1;
                *total += items;
            }
        }
        Ok(counts)
    }

    /// Opens the collections of `account`, making the defaults on first use (blocking).
    pub fn open(&self, account: &str) -> Result<AccountCollections, CollectionError> {
        self.open_with(account, true)
    }

    fn open_with(
        &self,
        account: &str,
        make_defaults: bool,
    ) -> Result<AccountCollections, CollectionError> {
        let account = account.to_lowercase();
        let (mut store, defaults_due) = self.open_backend(&account)?;
        if defaults_due && make_defaults {
            for (kind, display) in DEFAULTS {
                store.ensure(kind, &[display.to_string()])?;
            }
            each!(&mut store, b => b.defaults_made())?;
        }
        #[cfg(feature = "mongodb")]
        if let AccountCollections::Mongo(_) = store {
            let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
            if ready.len() > 100_000 {
                ready.clear();
            }
            ready.insert(account);
        }
        Ok(store)
    }

    /// The account's collections where its mailbox is, and whether its defaults are due.
    fn open_backend(&self, account: &str) -> Result<(AccountCollections, bool), CollectionError> {
        #[cfg(feature = "mongodb")]
        if let Some(m) = self.mailboxes.mongo() {
            let known = self
                .ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(account);
            let key = self.mailboxes.account_key(account);
            let (store, due) = MongoCollections::open(m.clone(), account.to_string(), key, known)?;
            return Ok((AccountCollections::Mongo(store), due));
        }
        let (store, due) = SqliteCollections::open(&self.mailboxes, account)?;
        Ok((AccountCollections::Sqlite(store), due))
    }
}

/// One account's collections, whichever backend holds them.
pub enum AccountCollections {
    Sqlite(SqliteCollections),
    #[cfg(feature = "mongodb")]
    Mongo(MongoCollections),
}

impl AccountCollections {
    pub fn collections(&self, kind: Kind) -> Result<Vec<Collection>, CollectionError> {
        each!(self, b => b.collections(kind))
    }

    pub fn collection(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<Collection>, CollectionError> {
        each!(self, b => b.collection(kind, name))
    }

    /// Makes a collection; refused when the name is taken or the account has too many.
    pub fn create(
        &mut self,
        kind: Kind,
        name: &str,
        components: &[String],
        props: &[(PropName, String)],
    ) -> Result<Collection, CollectionError> {
        each!(self, b => b.create(kind, name, components, props))
    }

    /// Removes a collection with everything in it.
    pub fn remove(&mut self, collection: &Collection) -> Result<(), CollectionError> {
        each!(self, b => b.remove(collection))
    }

    /// Sets and removes dead properties (PROPPATCH), all or none.
    pub fn update_props(
        &mut self,
        collection: &Collection,
        set: &[(PropName, String)],
        remove: &[PropName],
    ) -> Result<Collection, CollectionError> {
        each!(self, b => b.update_props(collection, set, remove))
    }

    pub fn resources(&self, collection: &Collection) -> Result<Vec<Resource>, CollectionError> {
        each!(self, b => b.resources(collection))
    }

    pub fn resource(
        &self,
        collection: &Collection,
        name: &str,
    ) -> Result<Option<Resource>, CollectionError> {
        each!(self, b => b.resource(collection, name))
    }

    /// A resource with its body, opened.
    pub fn read(
        &self,
        collection: &Collection,
        name: &str,
    ) -> Result<Option<(Resource, Vec<u8>)>, CollectionError> {
        each!(self, b => b.read(collection, name))
    }

    /// Every resource of the collection with its body (queries that look inside), or
    /// those whose span may overlap `within`, one at a time to `f` while it says go on.
    pub fn each_within(
        &self,
        collection: &Collection,
        within: Option<(i64, i64)>,
        f: &mut dyn FnMut(Resource, Vec<u8>) -> bool,
    ) -> Result<(), CollectionError> {
        each!(self, b => b.each_within(collection, within, f))
    }

    /// Stores a resource under its name if `precondition` holds: returns it as stored and
    /// whether it is new. Refused when another resource has its UID, or past `quota`.
    pub fn put(
        &mut self,
        collection: &Collection,
        new: &NewResource,
        precondition: &Precondition,
        quota: Option<u64>,
    ) -> Result<(Resource, bool), CollectionError> {
        each!(self, b => b.put(collection, new, precondition, quota))
    }

    /// Removes a resource if `precondition` holds; false when there was none.
    pub fn delete(
        &mut self,
        collection: &Collection,
        name: &str,
        precondition: &Precondition,
    ) -> Result<bool, CollectionError> {
        each!(self, b => b.delete(collection, name, precondition))
    }

    /// What changed after change number `since` (sync-collection).
    pub fn changes_since(
        &self,
        collection: &Collection,
        since: u64,
    ) -> Result<Changes, CollectionError> {
        each!(self, b => b.changes_since(collection, since))
    }

    /// Makes the declared collections (display names) that are not there yet; those
    /// there, and those no longer declared, are left as they are.
    pub fn ensure(&mut self, kind: Kind, names: &[String]) -> Result<(), CollectionError> {
        for name in names {
            let segment = slug(name);
            if segment.is_empty() || self.collection(kind, &segment)?.is_some() {
                continue;
            }
            let props = [(
                ("DAV:".to_string(), "displayname".to_string()),
                name.clone(),
            )];
            // Two nodes making it at once: one wins, the other is no error.
            match self.create(kind, &segment, &kind.default_components(), &props) {
                Ok(_) | Err(CollectionError::Exists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn declared_names_make_plain_url_segments() {
        assert_eq!(super::slug("Team Work"), "team-work");
        assert_eq!(super::slug("  Ärzte & Co. "), "ärzte-co");
        assert_eq!(super::slug("Calendar"), "calendar");
        assert_eq!(super::slug("../"), "");
    }
}
