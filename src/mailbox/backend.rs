//! One account's mailbox, whichever backend holds it: a SQLite file in the data dir (one
//! node) or documents in MongoDB beside a shared store (any node).

use super::MailboxError;
use super::crypto::Part;
use super::events::Events;
use super::meta::Meta;
use super::meta_codec;
#[cfg(feature = "mongodb")]
use super::mongo::MongoMailbox;
use super::store::{Delta, FlagChange, Folder, MessageInfo, Opened, SqliteMailbox, Stored};

/// A message's bytes as delivered, and where its top header block ends when that was
/// recorded at delivery (`Meta::header_len`; None for older messages).
pub struct Body {
    pub bytes: Vec<u8>,
    pub header_len: Option<u32>,
}

pub struct Mailbox {
    backend: Backend,
    /// Told after every committed change, whichever backend made it.
    events: Events,
}

enum Backend {
    Sqlite(SqliteMailbox),
    #[cfg(feature = "mongodb")]
    Mongo(MongoMailbox),
}

/// Runs the same call on whichever backend this is.
macro_rules! each {
    ($backend:expr, $b:ident => $call:expr) => {
        match $backend {
            Backend::Sqlite($b) => $call,
            #[cfg(feature = "mongodb")]
            Backend::Mongo($b) => $call,
        }
    };
}

impl Mailbox {
    pub(super) fn sqlite(inner: SqliteMailbox, events: Events) -> Mailbox {
        Mailbox {
            backend: Backend::Sqlite(inner),
            events,
        }
    }

    #[cfg(feature = "mongodb")]
    pub(super) fn mongo(inner: MongoMailbox, events: Events) -> Mailbox {
        Mailbox {
            backend: Backend::Mongo(inner),
            events,
        }
    }

    /// The account file's connection when the mailbox is a SQLite file: what else the
    /// file holds is read through it without opening the file again.
    pub(crate) fn sqlite_connection(&self) -> Option<&rusqlite::Connection> {
        match &self.backend {
            Backend::Sqlite(b) => Some(b.connection()),
            #[cfg(feature = "mongodb")]
            Backend::Mongo(_) => None,
        }
    }

    /// Passes a committed change on to the account's sessions (here and, through the
    /// relay, on other nodes).
    fn changed<T>(&self, done: Result<T, MailboxError>) -> Result<T, MailboxError> {
        if done.is_ok() {
            self.events.changed(self.account());
        }
        done
    }

    pub fn account(&self) -> &str {
        each!(&self.backend, b => b.account())
    }

    pub fn folders(&self) -> Result<Vec<Folder>, MailboxError> {
        each!(&self.backend, b => b.folders())
    }

    pub fn folder(&self, name: &str) -> Result<Option<Folder>, MailboxError> {
        each!(&self.backend, b => b.folder(name))
    }

    /// A folder for mail to land in, made (and subscribed, so that clients showing
    /// only subscribed folders show it) when it is not there yet.
    pub fn folder_or_create(&mut self, name: &str) -> Result<Folder, MailboxError> {
        match self.folder(name)? {
            Some(folder) => Ok(folder),
            None => self.make_folder(name, true, None),
        }
    }

    /// Where delivery files into the folder `name`: made when missing, and "Junk" is
    /// wherever the user's client keeps spam (RFC 6154), by name or not.
    pub fn delivery_folder(&mut self, name: &str) -> Result<Folder, MailboxError> {
        match name {
            "Junk" => self.special_folder("\\Junk", "Junk"),
            name => self.folder_or_create(name),
        }
    }

    /// The folder marked with a special use (`\\Junk`…) wherever the user moved or
    /// renamed it, else the one named `name`, made with that use when missing.
    pub fn special_folder(
        &mut self,
        special_use: &str,
        name: &str,
    ) -> Result<Folder, MailboxError> {
        if let Some(folder) = self
            .folders()?
            .into_iter()
            .find(|f| f.special_use.as_deref() == Some(special_use))
        {
            return Ok(folder);
        }
        match self.folder(name)? {
            Some(folder) => Ok(folder),
            None => self.make_folder(name, true, Some(special_use)),
        }
    }

    /// IMAP CREATE: a new folder, not subscribed (RFC 3501 §6.3.3 leaves that to the
    /// client's SUBSCRIBE), with the special use (`\\Sent`…) it was created for, if any
    /// (RFC 6154 §3).
    ///
    /// The levels above it that are not folders are made too (RFC 3501 §6.3.3: CREATE
    /// of "a/b/c" SHOULD make "a" and "a/b"), so every name shown in a LIST can be
    /// selected.
    pub fn create_folder(
        &mut self,
        name: &str,
        special_use: Option<&str>,
    ) -> Result<Folder, MailboxError> {
        within_limits(name)?;
        let name = super::store::folder_name(name.trim_end_matches('/'))?;
        if self.folder(name)?.is_some() {
            return Err(MailboxError::FolderExists(name.to_string()));
        }
        for (at, _) in name.match_indices('/') {
            let above = &name[..at];
            if self.folder(above)?.is_none() {
                self.make_folder(above, false, None)?;
            }
        }
        self.make_folder(name, false, special_use)
    }

    fn make_folder(
        &mut self,
        name: &str,
        subscribed: bool,
        special_use: Option<&str>,
    ) -> Result<Folder, MailboxError> {
        within_limits(name)?;
        if self.folders()?.len() >= crate::limits::FOLDERS_PER_ACCOUNT {
            return Err(MailboxError::Refused("[LIMIT] too many folders"));
        }
        let done = each!(&mut self.backend, b => b.create_folder(name, subscribed, special_use));
        self.changed(done)
    }

    pub fn delete_folder(&mut self, name: &str) -> Result<(), MailboxError> {
        let folder = self
            .folder(name)?
            .ok_or_else(|| MailboxError::NoFolder(name.to_string()))?;
        if folder.name == "INBOX" {
            return Err(MailboxError::Refused("INBOX cannot be deleted"));
        }
        let done = each!(&mut self.backend, b => b.delete_folder(&folder));
        self.changed(done)
    }

    /// Renames a folder with those below it; renaming INBOX moves its messages into a new
    /// folder and leaves INBOX empty (RFC 3501 §6.3.5).
    pub fn rename_folder(&mut self, from: &str, to: &str) -> Result<(), MailboxError> {
        let folder = self
            .folder(from)?
            .ok_or_else(|| MailboxError::NoFolder(from.to_string()))?;
        // The folders below move with it: their new names are held to the limits too.
        within_limits(to)?;
        let below = format!("{}/", folder.name);
        for inner in self.folders()? {
            if let Some(rest) = inner.name.strip_prefix(&below) {
                within_limits(&format!("{to}/{rest}"))?;
            }
        }
        if self.folder(to)?.is_some() {
            return Err(MailboxError::FolderExists(to.to_string()));
        }
        if folder.name == "INBOX" {
            let target = self.make_folder(to, folder.subscribed, None)?;
            let uids: Vec<u32> = self.messages(&folder)?.iter().map(|m| m.uid).collect();
            self.move_messages(&folder, &uids, &target)?;
            return Ok(());
        }
        let done = each!(&mut self.backend, b => b.rename_folder(&folder, to));
        self.changed(done)
    }

    /// SUBSCRIBE and UNSUBSCRIBE. A subscribed folder that is deleted stays subscribed
    /// by name (RFC 3501 §6.3.6: never removed unilaterally): see `lost_subscriptions`.
    pub fn subscribe(&mut self, name: &str, on: bool) -> Result<(), MailboxError> {
        each!(&mut self.backend, b => b.subscribe(name, on))
    }

    /// Names subscribed whose folder was deleted, in name order; a folder made under one
    /// of them is subscribed.
    pub fn lost_subscriptions(&self) -> Result<Vec<String>, MailboxError> {
        each!(&self.backend, b => b.lost_subscriptions())
    }

    pub fn quota_used(&self) -> Result<u64, MailboxError> {
        each!(&self.backend, b => b.quota_used())
    }

    /// Stores a message with its flags; returns (UIDVALIDITY, UID). Refused over `quota`.
    pub fn append(
        &mut self,
        folder: &Folder,
        body: &[u8],
        flags: &[String],
        internal_date: i64,
        quota: Option<u64>,
    ) -> Result<(u32, u32), MailboxError> {
        let done =
            each!(&mut self.backend, b => b.append(folder, body, flags, internal_date, quota));
        self.changed(done)
    }

    /// The folder as stored now (UIDNEXT, HIGHESTMODSEQ move with every change).
    pub fn refresh(&self, folder: &Folder) -> Result<Folder, MailboxError> {
        each!(&self.backend, b => b.refresh(folder))
    }

    /// Claims what no session has yet seen as \Recent (see SqliteMailbox::claim_recent).
    pub fn claim_recent(&mut self, folder: &Folder) -> Result<Option<(u32, u32)>, MailboxError> {
        each!(&mut self.backend, b => b.claim_recent(folder))
    }

    /// What a session gets as \Recent: claimed, or (read-only, RFC 3501 §6.3.2) only
    /// looked at, left for the next session that selects the folder.
    pub fn recent_for(
        &mut self,
        folder: &Folder,
        read_only: bool,
    ) -> Result<Option<(u32, u32)>, MailboxError> {
        if !read_only {
            return self.claim_recent(folder);
        }
        let now = self.refresh(folder)?;
        Ok((now.first_recent < now.uidnext).then_some((now.first_recent, now.uidnext)))
    }

    /// What changed in `folder` after MODSEQ `since` (see `Delta`): how a session
    /// catches up without reading the whole folder again.
    pub fn changes_since(&self, folder: &Folder, since: u64) -> Result<Delta, MailboxError> {
        each!(&self.backend, b => b.changes_since(folder, since))
    }

    pub fn messages(&self, folder: &Folder) -> Result<Vec<MessageInfo>, MailboxError> {
        each!(&self.backend, b => b.messages(folder))
    }

    fn sealed(
        &self,
        folder: &Folder,
        uid: u32,
        part: Part,
    ) -> Result<Option<Vec<u8>>, MailboxError> {
        each!(&self.backend, b => b.sealed(folder, uid, part))
    }

    fn sealed_range(
        &self,
        folder: &Folder,
        first: u32,
        last: u32,
        part: Part,
    ) -> Result<Vec<Opened>, MailboxError> {
        each!(&self.backend, b => b.sealed_range(folder, first, last, part))
    }

    /// The bodies of the messages with UIDs in `first..=last`, in UID order: one read for
    /// a FETCH of many.
    pub fn bodies_between(
        &self,
        folder: &Folder,
        first: u32,
        last: u32,
    ) -> Result<Vec<(u32, Body)>, MailboxError> {
        Ok(self
            .sealed_range(folder, first, last, Part::Body)?
            .into_iter()
            .map(|(uid, bytes, header_len)| (uid, Body { bytes, header_len }))
            .collect())
    }

    /// Metadata of the messages with UIDs in `first..=last`.
    /// With `envelope_only`, the MIME structure after the envelope is not read (FETCH ENVELOPE,
    /// SORT, THREAD).
    pub fn metas_between(
        &self,
        folder: &Folder,
        first: u32,
        last: u32,
        envelope_only: bool,
    ) -> Result<Vec<(u32, Meta)>, MailboxError> {
        self.sealed_range(folder, first, last, Part::Meta)?
            .into_iter()
            .map(|(uid, kept, _)| {
                let read = if envelope_only {
                    meta_codec::decode_envelope(&kept)
                } else {
                    meta_codec::decode(&kept)
                };
                let meta = match read {
                    Ok(meta) if !meta.stale() => meta,
                    _ => self.meta_again(folder, uid)?,
                };
                Ok((uid, meta))
            })
            .collect()
    }

    /// The metadata worked out afresh from the message, for one whose cached copy
    /// cannot be read (one stored before MIME nesting was bounded nests deeper than
    /// serde_json reads back: any message that could be stored must stay fetchable), or
    /// was worked out wrong by an older version (`Meta::stale`).
    fn meta_again(&self, folder: &Folder, uid: u32) -> Result<Meta, MailboxError> {
        Ok(self
            .body(folder, uid)?
            .map(|body| Meta::of(&body))
            .unwrap_or_default())
    }

    /// A message's bytes, exactly as delivered.
    pub fn body(&self, folder: &Folder, uid: u32) -> Result<Option<Vec<u8>>, MailboxError> {
        self.sealed(folder, uid, Part::Body)
    }

    /// A message's envelope and structure, parsed at delivery.
    pub fn meta(&self, folder: &Folder, uid: u32) -> Result<Option<Meta>, MailboxError> {
        match self.sealed(folder, uid, Part::Meta)? {
            Some(kept) => match meta_codec::decode(&kept) {
                Ok(meta) if !meta.stale() => Ok(Some(meta)),
                _ => self.meta_again(folder, uid).map(Some),
            },
            None => Ok(None),
        }
    }

    /// Changes the flags of `uids`. With `unchanged_since` (CONDSTORE), a message whose
    /// MODSEQ is higher is left alone (see `Stored`).
    pub fn set_flags(
        &mut self,
        folder: &Folder,
        uids: &[u32],
        change: FlagChange,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<Stored, MailboxError> {
        let stored = each!(&mut self.backend, b => b.set_flags(folder, uids, change, flags, unchanged_since))?;
        if !stored.changed.is_empty() {
            self.events.changed(self.account());
        }
        Ok(stored)
    }

    /// COPY: returns (source UID, new UID) pairs. Refused past `quota` (copies count).
    pub fn copy(
        &mut self,
        from: &Folder,
        uids: &[u32],
        to: &Folder,
        quota: Option<u64>,
    ) -> Result<Vec<(u32, u32)>, MailboxError> {
        let done = each!(&mut self.backend, b => b.copy(from, uids, to, quota));
        self.changed(done)
    }

    /// MOVE: returns (source UID, new UID) pairs.
    pub fn move_messages(
        &mut self,
        from: &Folder,
        uids: &[u32],
        to: &Folder,
    ) -> Result<Vec<(u32, u32)>, MailboxError> {
        let done = each!(&mut self.backend, b => b.move_messages(from, uids, to));
        self.changed(done)
    }

    /// Removes the messages flagged \Deleted (only those in `uids` when given); returns
    /// the UIDs removed.
    pub fn expunge(
        &mut self,
        folder: &Folder,
        uids: Option<&[u32]>,
    ) -> Result<Vec<u32>, MailboxError> {
        let doomed = each!(&self.backend, b => b.deleted(folder, uids))?;
        if doomed.is_empty() {
            return Ok(doomed);
        }
        let done = each!(&mut self.backend, b => b.expunge(folder, doomed));
        self.changed(done)
    }
}

/// Folder names are bounded in length and depth: every LIST walks them.
fn within_limits(name: &str) -> Result<(), MailboxError> {
    if name.chars().count() > crate::limits::FOLDER_NAME_CHARS {
        return Err(MailboxError::Refused("[LIMIT] folder name too long"));
    }
    if name.split('/').count() > crate::limits::FOLDER_DEPTH {
        return Err(MailboxError::Refused("[LIMIT] folders nested too deep"));
    }
    Ok(())
}
