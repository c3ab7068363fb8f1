//! Mailboxes in MongoDB, beside a shared store: any node serves any account over IMAP or
//! POP3 and delivers into it. Same model as the SQLite file (folders with UIDVALIDITY,
//! UIDNEXT, HIGHESTMODSEQ; messages; shared sealed blobs), every change one transaction.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{ClientSession, Collection};

use super::MailboxError;
use super::crypto::{AccountKey, Part};
use super::meta::Meta;
use super::store::{
    Delta, FlagChange, Folder, MessageInfo, Opened, SPECIAL_FOLDERS, Stored, canonical,
    changed_flags, folder_name, join_flags, parse_flags,
};
use crate::mongo::{DriverError, Mongo, binary, in_transaction, index, int, is_duplicate, unique};

/// Sealed bodies larger than this are stored in chunks (a document holds 16 MiB).
const CHUNK: usize = 4 * 1024 * 1024;

impl From<mongodb::error::Error> for MailboxError {
    fn from(e: mongodb::error::Error) -> MailboxError {
        MailboxError::Mongo(Box::new(e))
    }
}

impl DriverError for MailboxError {
    fn driver(&self) -> Option<&mongodb::error::Error> {
        match self {
            MailboxError::Mongo(e) => Some(e),
            _ => None,
        }
    }
}

fn folder_of(d: &Document) -> Folder {
    Folder {
        id: int(d, "_id"),
        name: d.get_str("name").unwrap_or_default().to_string(),
        special_use: d.get_str("special_use").ok().map(str::to_string),
        subscribed: d.get_bool("subscribed").unwrap_or(true),
        uidvalidity: int(d, "uidvalidity") as u32,
        uidnext: int(d, "uidnext") as u32,
        highestmodseq: int(d, "highestmodseq") as u64,
        // Folders from before \Recent was kept: what is there was seen.
        first_recent: d
            .get("first_recent")
            .map(|_| int(d, "first_recent"))
            .unwrap_or_else(|| int(d, "uidnext")) as u32,
    }
}

fn info_of(d: &Document) -> MessageInfo {
    MessageInfo {
        uid: int(d, "uid") as u32,
        flags: parse_flags(d.get_str("flags").unwrap_or_default()),
        modseq: int(d, "modseq") as u64,
        size: int(d, "size") as u64,
        internal_date: int(d, "internal_date"),
    }
}

/// What counts against the quota: messages, and calendar and contact resources
/// (`dav_bytes`, kept by src/collections).
pub(crate) fn used_bytes(account: &Document) -> i64 {
    int(account, "used_bytes") + int(account, "dav_bytes")
}

/// Creates the collections' indexes (every node at start; idempotent).
pub(super) fn prepare(mongo: &Mongo) -> Result<(), MailboxError> {
    mongo.block(async {
        mongo
            .coll("mailbox_folders")
            .create_index(unique(doc! { "account": 1, "name": 1 }))
            .await?;
        let messages = mongo.coll("mailbox_messages");
        messages
            .create_index(unique(doc! { "folder_id": 1, "uid": 1 }))
            .await?;
        messages.create_index(index(doc! { "blob_id": 1 })).await?;
        messages
            .create_index(index(doc! { "folder_id": 1, "modseq": 1 }))
            .await?;
        let expunged = mongo.coll("mailbox_expunged");
        expunged
            .create_index(unique(doc! { "folder_id": 1, "uid": 1 }))
            .await?;
        expunged
            .create_index(index(doc! { "folder_id": 1, "modseq": 1 }))
            .await?;
        mongo
            .coll("mailbox_chunks")
            .create_index(unique(doc! { "blob_id": 1, "n": 1 }))
            .await?;
        for counter in ["mailbox_folder", "mailbox_blob"] {
            mongo
                .coll("counters")
                .update_one(
                    doc! { "_id": counter },
                    doc! { "$setOnInsert": { "next": 0_i64 } },
                )
                .upsert(true)
                .await?;
        }
        Ok::<_, MailboxError>(())
    })
}

/// Whether `account` has a mailbox yet.
pub(super) fn exists(mongo: &Mongo, account: &str) -> bool {
    mongo
        .block(async {
            mongo
                .coll("mailbox_folders")
                .find_one(doc! { "account": account })
                .await
        })
        .ok()
        .flatten()
        .is_some()
}

pub(super) struct MongoMailbox {
    mongo: Arc<Mongo>,
    account: String,
    key: AccountKey,
}

impl MongoMailbox {
    pub(super) fn open(
        mongo: Arc<Mongo>,
        account: String,
        key: AccountKey,
    ) -> Result<MongoMailbox, MailboxError> {
        let mailbox = MongoMailbox {
            mongo,
            account,
            key,
        };
        for (name, role) in SPECIAL_FOLDERS {
            if mailbox.folder(name)?.is_some() {
                continue;
            }
            // Two nodes making the same account's folders at once: the unique index keeps
            // one, and the other's attempt is no error.
            match mailbox.insert_folder(name, role, true) {
                Ok(()) | Err(MailboxError::FolderExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(mailbox)
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    fn folders_coll(&self) -> Collection<Document> {
        self.mongo.coll("mailbox_folders")
    }

    fn messages_coll(&self) -> Collection<Document> {
        self.mongo.coll("mailbox_messages")
    }

    /// Expunged UIDs with the MODSEQ of their expunge (see store.rs's `expunged`).
    fn expunged_coll(&self) -> Collection<Document> {
        self.mongo.coll("mailbox_expunged")
    }

    fn blobs(&self) -> Collection<Document> {
        self.mongo.coll("mailbox_blobs")
    }

    fn chunks(&self) -> Collection<Document> {
        self.mongo.coll("mailbox_chunks")
    }

    fn accounts(&self) -> Collection<Document> {
        self.mongo.coll("mailbox_accounts")
    }

    async fn next_id(&self, counter: &str, n: i64) -> Result<i64, MailboxError> {
        let d = self
            .mongo
            .coll("counters")
            .find_one_and_update(doc! { "_id": counter }, doc! { "$inc": { "next": n } })
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await?
            .ok_or(MailboxError::Refused("the mailbox id counter is missing"))?;
        Ok(int(&d, "next") - n + 1)
    }

    /// A UIDVALIDITY no folder of the account ever had: the clock, bumped past the last
    /// one given.
    async fn new_uidvalidity(&self, s: &mut ClientSession) -> Result<i64, MailboxError> {
        let last = self
            .accounts()
            .find_one(doc! { "_id": &self.account })
            .session(&mut *s)
            .await?
            .map_or(0, |d| int(&d, "uidvalidity"));
        let next = crate::clock::unix_now().max(last + 1) & 0xFFFF_FFFF;
        self.accounts()
            .update_one(
                doc! { "_id": &self.account },
                doc! { "$set": { "uidvalidity": next }, "$setOnInsert": { "used_bytes": 0_i64 } },
            )
            .upsert(true)
            .session(&mut *s)
            .await?;
        Ok(next)
    }

    fn insert_folder(
        &self,
        name: &str,
        role: Option<&str>,
        subscribed: bool,
    ) -> Result<(), MailboxError> {
        let name = name.to_string();
        let role = role.map(str::to_string);
        self.mongo
            .block(in_transaction!(self.mongo, |s| self.insert_folder_in(
                s,
                &name,
                role.as_deref(),
                subscribed
            )))
    }

    async fn insert_folder_in(
        &self,
        s: &mut ClientSession,
        name: &str,
        role: Option<&str>,
        subscribed: bool,
    ) -> Result<(), MailboxError> {
        let exists = self
            .folders_coll()
            .find_one(doc! { "account": &self.account, "name": name })
            .session(&mut *s)
            .await?
            .is_some();
        if exists {
            return Err(MailboxError::FolderExists(name.to_string()));
        }
        // A name still subscribed after its folder was deleted (see `lost_subscriptions`).
        let subscribed = self.take_lost(s, name).await? || subscribed;
        let validity = self.new_uidvalidity(s).await?;
        let id = self.next_id("mailbox_folder", 1).await?;
        let inserted = self
            .folders_coll()
            .insert_one(doc! {
                "_id": id,
                "account": &self.account,
                "name": name,
                "special_use": role,
                "subscribed": subscribed,
                "uidvalidity": validity,
                "uidnext": 1_i64,
                "highestmodseq": 1_i64,
                "first_recent": 1_i64,
            })
            .session(&mut *s)
            .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate(&e) => Err(MailboxError::FolderExists(name.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    pub fn folders(&self) -> Result<Vec<Folder>, MailboxError> {
        let docs: Vec<Document> = self.mongo.block(async {
            self.folders_coll()
                .find(doc! { "account": &self.account })
                .sort(doc! { "name": 1 })
                .await?
                .try_collect()
                .await
        })?;
        Ok(docs.iter().map(folder_of).collect())
    }

    pub fn folder(&self, name: &str) -> Result<Option<Folder>, MailboxError> {
        let name = canonical(name);
        let found = self.mongo.block(async {
            self.folders_coll()
                .find_one(doc! { "account": &self.account, "name": name })
                .await
        })?;
        Ok(found.as_ref().map(folder_of))
    }

    pub fn create_folder(
        &mut self,
        name: &str,
        subscribed: bool,
        special_use: Option<&str>,
    ) -> Result<Folder, MailboxError> {
        let name = folder_name(name)?;
        self.insert_folder(name, special_use, subscribed)?;
        self.folder(name)?
            .ok_or_else(|| MailboxError::NoFolder(name.to_string()))
    }

    /// Deletes messages (by their documents) and the blobs no message uses any more, and
    /// takes their sizes off the account's usage.
    async fn remove_messages(
        &self,
        s: &mut ClientSession,
        doomed: &[Document],
    ) -> Result<(), MailboxError> {
        if doomed.is_empty() {
            return Ok(());
        }
        let ids: Vec<Bson> = doomed
            .iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        self.messages_coll()
            .delete_many(doc! { "_id": { "$in": ids } })
            .session(&mut *s)
            .await?;
        let freed: i64 = doomed.iter().map(|d| int(d, "size")).sum();
        self.accounts()
            .update_one(
                doc! { "_id": &self.account },
                doc! { "$inc": { "used_bytes": -freed } },
            )
            .session(&mut *s)
            .await?;
        let mut blobs: Vec<i64> = doomed.iter().map(|d| int(d, "blob_id")).collect();
        blobs.sort_unstable();
        blobs.dedup();
        for blob in blobs {
            let used = self
                .messages_coll()
                .count_documents(doc! { "blob_id": blob })
                .session(&mut *s)
                .await?;
            if used == 0 {
                self.blobs()
                    .delete_one(doc! { "_id": blob })
                    .session(&mut *s)
                    .await?;
                self.chunks()
                    .delete_many(doc! { "blob_id": blob })
                    .session(&mut *s)
                    .await?;
            }
        }
        Ok(())
    }

    /// The messages of `folder` with UIDs in `uids`, inside the transaction.
    async fn messages_in(
        &self,
        s: &mut ClientSession,
        folder: &Folder,
        uids: &[u32],
    ) -> Result<Vec<Document>, MailboxError> {
        let wanted: Vec<i64> = uids.iter().map(|u| i64::from(*u)).collect();
        Ok(self
            .messages_coll()
            .find(doc! { "folder_id": folder.id, "uid": { "$in": wanted } })
            .session(&mut *s)
            .await?
            .stream(&mut *s)
            .try_collect()
            .await?)
    }

    async fn bump_modseq(&self, s: &mut ClientSession, folder: i64) -> Result<i64, MailboxError> {
        let d = self
            .folders_coll()
            .find_one_and_update(
                doc! { "_id": folder },
                doc! { "$inc": { "highestmodseq": 1_i64 } },
            )
            .return_document(ReturnDocument::After)
            .session(&mut *s)
            .await?
            .ok_or(MailboxError::Refused("the folder is gone"))?;
        Ok(int(&d, "highestmodseq"))
    }

    /// The bytes the account uses, read in the transaction `s`.
    async fn used_in(&self, s: &mut ClientSession) -> Result<u64, MailboxError> {
        Ok(self
            .accounts()
            .find_one(doc! { "_id": &self.account })
            .session(&mut *s)
            .await?
            .map_or(0, |d| used_bytes(&d))
            .max(0) as u64)
    }

    /// Notes the UIDs of `removed` (message documents) as expunged at `modseq`.
    async fn note_expunged(
        &self,
        s: &mut ClientSession,
        folder: &Folder,
        removed: &[Document],
        modseq: i64,
    ) -> Result<(), MailboxError> {
        for d in removed {
            self.expunged_coll()
                .update_one(
                    doc! { "folder_id": folder.id, "uid": int(d, "uid") },
                    doc! { "$set": { "modseq": modseq, "account": &self.account } },
                )
                .upsert(true)
                .session(&mut *s)
                .await?;
        }
        Ok(())
    }

    /// See SqliteMailbox::deleted.
    pub fn deleted(&self, folder: &Folder, only: Option<&[u32]>) -> Result<Vec<u32>, MailboxError> {
        let mut filter = doc! {
            "folder_id": folder.id,
            "flags": { "$regex": "\\\\Deleted", "$options": "i" },
        };
        if let Some(uids) = only {
            let uids: Vec<i64> = uids.iter().map(|&u| i64::from(u)).collect();
            filter.insert("uid", doc! { "$in": uids });
        }
        let docs: Vec<Document> = self.mongo.block(async {
            self.messages_coll()
                .find(filter)
                .projection(doc! { "uid": 1, "flags": 1 })
                .sort(doc! { "uid": 1 })
                .await?
                .try_collect()
                .await
        })?;
        Ok(docs
            .iter()
            .map(info_of)
            .filter(|m| m.has("\\Deleted"))
            .map(|m| m.uid)
            .collect())
    }

    /// See SqliteMailbox::changes_since. The folder is read first, so a change made
    /// meanwhile is at worst told twice, never missed.
    pub fn changes_since(&self, folder: &Folder, since: u64) -> Result<Delta, MailboxError> {
        let highest = self.refresh(folder)?.highestmodseq;
        let mut delta = Delta {
            highest,
            ..Delta::default()
        };
        if highest <= since {
            return Ok(delta);
        }
        let (changed, expunged): (Vec<Document>, Vec<Document>) = self.mongo.block(async {
            let changed = self
                .messages_coll()
                .find(doc! { "folder_id": folder.id, "modseq": { "$gt": since as i64 } })
                .projection(
                    doc! { "uid": 1, "flags": 1, "modseq": 1, "size": 1, "internal_date": 1 },
                )
                .sort(doc! { "uid": 1 })
                .await?
                .try_collect()
                .await?;
            let expunged = self
                .expunged_coll()
                .find(doc! { "folder_id": folder.id, "modseq": { "$gt": since as i64 } })
                .sort(doc! { "uid": 1 })
                .await?
                .try_collect()
                .await?;
            Ok::<_, MailboxError>((changed, expunged))
        })?;
        delta.changed = changed.iter().map(info_of).collect();
        delta.expunged = expunged.iter().map(|d| int(d, "uid") as u32).collect();
        Ok(delta)
    }

    /// Deletes a folder (not INBOX: the caller checks) with its messages.
    pub(super) fn delete_folder(&mut self, folder: &Folder) -> Result<(), MailboxError> {
        self.mongo.block(in_transaction!(self.mongo, |s| async {
            let doomed: Vec<Document> = self
                .messages_coll()
                .find(doc! { "folder_id": folder.id })
                .projection(doc! { "size": 1, "blob_id": 1 })
                .session(&mut *s)
                .await?
                .stream(&mut *s)
                .try_collect()
                .await?;
            self.remove_messages(s, &doomed).await?;
            self.expunged_coll()
                .delete_many(doc! { "folder_id": folder.id })
                .session(&mut *s)
                .await?;
            self.folders_coll()
                .delete_one(doc! { "_id": folder.id })
                .session(&mut *s)
                .await?;
            // At most as many names as an account may have folders (see the SQLite side).
            if folder.subscribed {
                let full = format!(
                    "lost_subscriptions.{}",
                    crate::limits::FOLDERS_PER_ACCOUNT - 1
                );
                self.accounts()
                    .update_one(
                        doc! { "_id": &self.account, full: { "$exists": false } },
                        doc! { "$addToSet": { "lost_subscriptions": &folder.name } },
                    )
                    .session(&mut *s)
                    .await?;
            }
            Ok::<_, MailboxError>(())
        }))?;
        Ok(())
    }

    /// Renames a folder and those below it (not INBOX: the caller moves its messages).
    pub(super) fn rename_folder(&mut self, folder: &Folder, to: &str) -> Result<(), MailboxError> {
        let to = canonical(to).to_string();
        let prefix = format!("{}/", folder.name);
        self.mongo.block(in_transaction!(self.mongo, |s| async {
            let set = if self.take_lost(s, &to).await? {
                doc! { "name": &to, "subscribed": true }
            } else {
                doc! { "name": &to }
            };
            self.folders_coll()
                .update_one(doc! { "_id": folder.id }, doc! { "$set": set })
                .session(&mut *s)
                .await?;
            let children: Vec<Document> = self
                .folders_coll()
                .find(doc! {
                    "account": &self.account,
                    "name": { "$regex": format!("^{}", regex::escape(&prefix)) },
                })
                .session(&mut *s)
                .await?
                .stream(&mut *s)
                .try_collect()
                .await?;
            for child in children {
                let name = child.get_str("name").unwrap_or_default();
                let renamed = format!("{to}/{}", &name[prefix.len().min(name.len())..]);
                self.folders_coll()
                    .update_one(
                        doc! { "_id": int(&child, "_id") },
                        doc! { "$set": { "name": renamed } },
                    )
                    .session(&mut *s)
                    .await?;
            }
            Ok::<_, MailboxError>(())
        }))?;
        Ok(())
    }

    pub fn subscribe(&mut self, name: &str, on: bool) -> Result<(), MailboxError> {
        let result = self.mongo.block(async {
            self.folders_coll()
                .update_one(
                    doc! { "account": &self.account, "name": canonical(name) },
                    doc! { "$set": { "subscribed": on } },
                )
                .await
        })?;
        if result.matched_count == 0 && (on || !self.forget_subscription(name)?) {
            return Err(MailboxError::NoFolder(name.to_string()));
        }
        Ok(())
    }

    /// UNSUBSCRIBE of a name whose folder is gone: whether it was subscribed.
    fn forget_subscription(&self, name: &str) -> Result<bool, MailboxError> {
        let name = canonical(name);
        self.mongo
            .block(in_transaction!(self.mongo, |s| self.take_lost(s, name)))
    }

    /// Takes `name` off the account's lost subscriptions; whether it was there.
    async fn take_lost(&self, s: &mut ClientSession, name: &str) -> Result<bool, MailboxError> {
        let pulled = self
            .accounts()
            .update_one(
                doc! { "_id": &self.account, "lost_subscriptions": name },
                doc! { "$pull": { "lost_subscriptions": name } },
            )
            .session(&mut *s)
            .await?;
        Ok(pulled.modified_count > 0)
    }

    pub fn lost_subscriptions(&self) -> Result<Vec<String>, MailboxError> {
        let found = self.mongo.block(async {
            self.accounts()
                .find_one(doc! { "_id": &self.account })
                .await
        })?;
        let mut names: Vec<String> = found
            .as_ref()
            .and_then(|d| d.get_array("lost_subscriptions").ok())
            .map(|list| {
                list.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    pub fn quota_used(&self) -> Result<u64, MailboxError> {
        let found = self.mongo.block(async {
            self.accounts()
                .find_one(doc! { "_id": &self.account })
                .await
        })?;
        Ok(found.map_or(0, |d| used_bytes(&d)).max(0) as u64)
    }

    pub fn append(
        &mut self,
        folder: &Folder,
        body: &[u8],
        flags: &[String],
        internal_date: i64,
        quota: Option<u64>,
    ) -> Result<(u32, u32), MailboxError> {
        // Sealed before the transaction: a retried attempt reuses the work.
        let blob = self.mongo.block(self.next_id("mailbox_blob", 1))?;
        let (meta, header_len) = Meta::stored(body);
        let sealed_meta = self.key.seal(blob, Part::Meta, &meta)?;
        let sealed_body = self.key.seal(blob, Part::Body, body)?;
        let flags = join_flags(flags);
        let size = body.len() as i64;
        let out = self.mongo.block(in_transaction!(self.mongo, |s| async {
            if let Some(quota) = quota {
                let used = self.used_in(s).await?;
                if used + size as u64 > quota {
                    return Err(MailboxError::OverQuota {
                        account: self.account.clone(),
                        used,
                        quota,
                    });
                }
            }
            self.insert_blob(s, blob, &sealed_meta, &sealed_body, header_len)
                .await?;
            let f = self
                .folders_coll()
                .find_one_and_update(
                    doc! { "_id": folder.id },
                    doc! { "$inc": { "uidnext": 1_i64, "highestmodseq": 1_i64 } },
                )
                .return_document(ReturnDocument::After)
                .session(&mut *s)
                .await?
                .ok_or_else(|| MailboxError::NoFolder(folder.name.clone()))?;
            let (uid, modseq) = (int(&f, "uidnext") - 1, int(&f, "highestmodseq"));
            self.messages_coll()
                .insert_one(doc! {
                    "account": &self.account,
                    "folder_id": folder.id,
                    "uid": uid,
                    "blob_id": blob,
                    "size": size,
                    "internal_date": internal_date,
                    "flags": &flags,
                    "modseq": modseq,
                })
                .session(&mut *s)
                .await?;
            self.accounts()
                .update_one(
                    doc! { "_id": &self.account },
                    doc! { "$inc": { "used_bytes": size } },
                )
                .upsert(true)
                .session(&mut *s)
                .await?;
            Ok::<_, MailboxError>((int(&f, "uidvalidity") as u32, uid as u32))
        }))?;
        Ok(out)
    }

    async fn insert_blob(
        &self,
        s: &mut ClientSession,
        blob: i64,
        meta: &[u8],
        body: &[u8],
        header_len: Option<u32>,
    ) -> Result<(), MailboxError> {
        let mut d = doc! {
            "_id": blob,
            "account": &self.account,
            "meta": binary(meta),
        };
        if let Some(n) = header_len {
            d.insert("header_len", i64::from(n));
        }
        if body.len() <= CHUNK {
            d.insert("body", binary(body));
        } else {
            let parts: Vec<Document> = body
                .chunks(CHUNK)
                .enumerate()
                .map(|(n, part)| doc! { "blob_id": blob, "n": n as i64, "data": binary(part) })
                .collect();
            self.chunks().insert_many(&parts).session(&mut *s).await?;
        }
        self.blobs().insert_one(d).session(&mut *s).await?;
        Ok(())
    }

    pub fn refresh(&self, folder: &Folder) -> Result<Folder, MailboxError> {
        let found = self.mongo.block(async {
            self.folders_coll()
                .find_one(doc! { "_id": folder.id })
                .await
        })?;
        found
            .as_ref()
            .map(folder_of)
            .ok_or_else(|| MailboxError::NoFolder(folder.name.clone()))
    }

    /// See SqliteMailbox::claim_recent.
    pub fn claim_recent(&mut self, folder: &Folder) -> Result<Option<(u32, u32)>, MailboxError> {
        let now = self.refresh(folder)?;
        if now.first_recent >= now.uidnext {
            return Ok(None);
        }
        // One update that moves first_recent up to uidnext and returns what it was.
        let before = self.mongo.block(async {
            self.folders_coll()
                .find_one_and_update(
                    doc! { "_id": folder.id },
                    vec![doc! { "$set": { "first_recent": "$uidnext" } }],
                )
                .return_document(ReturnDocument::Before)
                .await
        })?;
        Ok(before
            .map(|d| folder_of(&d))
            .and_then(|f| (f.first_recent < f.uidnext).then_some((f.first_recent, f.uidnext))))
    }

    pub fn messages(&self, folder: &Folder) -> Result<Vec<MessageInfo>, MailboxError> {
        let docs: Vec<Document> = self.mongo.block(async {
            self.messages_coll()
                .find(doc! { "folder_id": folder.id })
                .sort(doc! { "uid": 1 })
                .projection(
                    doc! { "uid": 1, "flags": 1, "modseq": 1, "size": 1, "internal_date": 1 },
                )
                .await?
                .try_collect()
                .await
        })?;
        Ok(docs.iter().map(info_of).collect())
    }

    /// The sealed `part` of each blob, opened, with the body's header length when it
    /// was recorded (see `SqliteMailbox::sealed_range`).
    async fn open_blobs(
        &self,
        blobs: &[i64],
        part: Part,
    ) -> Result<HashMap<i64, (Vec<u8>, Option<u32>)>, MailboxError> {
        let field = match part {
            Part::Body => "body",
            Part::Meta => "meta",
        };
        let docs: Vec<Document> = self
            .blobs()
            .find(doc! { "_id": { "$in": blobs } })
            .projection(doc! { field: 1, "header_len": 1 })
            .await?
            .try_collect()
            .await?;
        let mut out = HashMap::new();
        for d in docs {
            let id = int(&d, "_id");
            let sealed = match d.get(field) {
                Some(Bson::Binary(b)) => b.bytes.clone(),
                _ => {
                    let parts: Vec<Document> = self
                        .chunks()
                        .find(doc! { "blob_id": id })
                        .sort(doc! { "n": 1 })
                        .await?
                        .try_collect()
                        .await?;
                    let mut sealed = Vec::new();
                    for p in parts {
                        if let Some(Bson::Binary(b)) = p.get("data") {
                            sealed.extend_from_slice(&b.bytes);
                        }
                    }
                    sealed
                }
            };
            let header_len = match part {
                Part::Body => d
                    .get("header_len")
                    .and_then(Bson::as_i64)
                    .and_then(|n| u32::try_from(n).ok()),
                Part::Meta => None,
            };
            out.insert(id, (self.key.open(id, part, &sealed)?, header_len));
        }
        Ok(out)
    }

    pub(super) fn sealed_range(
        &self,
        folder: &Folder,
        first: u32,
        last: u32,
        part: Part,
    ) -> Result<Vec<Opened>, MailboxError> {
        self.mongo.block(async {
            let messages: Vec<Document> = self
                .messages_coll()
                .find(doc! {
                    "folder_id": folder.id,
                    "uid": { "$gte": i64::from(first), "$lte": i64::from(last) },
                })
                .sort(doc! { "uid": 1 })
                .projection(doc! { "uid": 1, "blob_id": 1 })
                .await?
                .try_collect()
                .await?;
            let blobs: Vec<i64> = messages.iter().map(|m| int(m, "blob_id")).collect();
            let mut opened = self.open_blobs(&blobs, part).await?;
            // Copies share a blob: the last one takes it, the others clone (counted
            // once: asking each message how many share its blob was quadratic).
            let mut left = std::collections::HashMap::<i64, usize>::new();
            for blob in &blobs {
                *left.entry(*blob).or_default() += 1;
            }
            Ok(messages
                .iter()
                .filter_map(|m| {
                    let blob = int(m, "blob_id");
                    let count = left.entry(blob).or_default();
                    *count = count.saturating_sub(1);
                    let bytes = if *count > 0 {
                        opened.get(&blob).cloned()
                    } else {
                        opened.remove(&blob)
                    };
                    bytes.map(|(b, header_len)| (int(m, "uid") as u32, b, header_len))
                })
                .collect())
        })
    }

    pub(super) fn sealed(
        &self,
        folder: &Folder,
        uid: u32,
        part: Part,
    ) -> Result<Option<Vec<u8>>, MailboxError> {
        Ok(self
            .sealed_range(folder, uid, uid, part)?
            .pop()
            .map(|(_, bytes, _)| bytes))
    }

    pub fn set_flags(
        &mut self,
        folder: &Folder,
        uids: &[u32],
        change: FlagChange,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<Stored, MailboxError> {
        let out = self.mongo.block(in_transaction!(self.mongo, |s| async {
            let mut stored = Stored::default();
            let mut modseq: Option<i64> = None;
            let found = self.messages_in(s, folder, uids).await?;
            let by_uid: HashMap<u32, &Document> =
                found.iter().map(|d| (int(d, "uid") as u32, d)).collect();
            for &uid in uids {
                let Some(d) = by_uid.get(&uid) else {
                    continue;
                };
                let old = d.get_str("flags").unwrap_or_default();
                if unchanged_since.is_some_and(|since| int(d, "modseq") as u64 > since) {
                    stored.refused.push(uid);
                    continue;
                }
                let mut info = info_of(d);
                if let Some(joined) = changed_flags(old, change, flags) {
                    let next = match modseq {
                        Some(m) => m,
                        None => {
                            let m = self.bump_modseq(s, folder.id).await?;
                            modseq = Some(m);
                            m
                        }
                    };
                    self.messages_coll()
                        .update_one(
                            doc! { "_id": d.get("_id").cloned().unwrap_or(Bson::Null) },
                            doc! { "$set": { "flags": &joined, "modseq": next } },
                        )
                        .session(&mut *s)
                        .await?;
                    info.flags = parse_flags(&joined);
                    info.modseq = next as u64;
                    stored.changed.push(uid);
                }
                stored.now.push(info);
            }
            Ok::<_, MailboxError>(stored)
        }))?;
        Ok(out)
    }

    /// Copies messages into `to` with new UIDs (sharing their blobs); returns (old, new)
    /// UID pairs and the source documents copied.
    async fn copy_in(
        &self,
        s: &mut ClientSession,
        from: &Folder,
        uids: &[u32],
        to: &Folder,
    ) -> Result<(Vec<(u32, u32)>, Vec<Document>), MailboxError> {
        let found = self.messages_in(s, from, uids).await?;
        let by_uid: HashMap<u32, Document> = found
            .into_iter()
            .map(|d| (int(&d, "uid") as u32, d))
            .collect();
        let rows: Vec<Document> = uids.iter().filter_map(|u| by_uid.get(u).cloned()).collect();
        if rows.is_empty() {
            return Ok((Vec::new(), rows));
        }
        let n = rows.len() as i64;
        let f = self
            .folders_coll()
            .find_one_and_update(
                doc! { "_id": to.id },
                doc! { "$inc": { "uidnext": n, "highestmodseq": 1_i64 } },
            )
            .return_document(ReturnDocument::After)
            .session(&mut *s)
            .await?
            .ok_or_else(|| MailboxError::NoFolder(to.name.clone()))?;
        let (first, modseq) = (int(&f, "uidnext") - n, int(&f, "highestmodseq"));
        let mut pairs = Vec::with_capacity(rows.len());
        let copies: Vec<Document> = rows
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let uid = first + i as i64;
                pairs.push((int(d, "uid") as u32, uid as u32));
                doc! {
                    "account": &self.account,
                    "folder_id": to.id,
                    "uid": uid,
                    "blob_id": int(d, "blob_id"),
                    "size": int(d, "size"),
                    "internal_date": int(d, "internal_date"),
                    "flags": d.get_str("flags").unwrap_or_default(),
                    "modseq": modseq,
                }
            })
            .collect();
        self.messages_coll()
            .insert_many(&copies)
            .session(&mut *s)
            .await?;
        // Copies count against the quota, as in the SQLite file.
        let added: i64 = rows.iter().map(|d| int(d, "size")).sum();
        self.accounts()
            .update_one(
                doc! { "_id": &self.account },
                doc! { "$inc": { "used_bytes": added } },
            )
            .upsert(true)
            .session(&mut *s)
            .await?;
        Ok((pairs, rows))
    }

    pub fn copy(
        &mut self,
        from: &Folder,
        uids: &[u32],
        to: &Folder,
        quota: Option<u64>,
    ) -> Result<Vec<(u32, u32)>, MailboxError> {
        let pairs = self.mongo.block(in_transaction!(self.mongo, |s| async {
            let (pairs, _) = self.copy_in(s, from, uids, to).await?;
            if let Some(quota) = quota {
                let used = self.used_in(s).await?;
                if used > quota {
                    return Err(MailboxError::OverQuota {
                        account: self.account.clone(),
                        used,
                        quota,
                    });
                }
            }
            Ok::<_, MailboxError>(pairs)
        }))?;
        Ok(pairs)
    }

    pub fn move_messages(
        &mut self,
        from: &Folder,
        uids: &[u32],
        to: &Folder,
    ) -> Result<Vec<(u32, u32)>, MailboxError> {
        let pairs = self.mongo.block(in_transaction!(self.mongo, |s| async {
            let (pairs, moved) = self.copy_in(s, from, uids, to).await?;
            if !moved.is_empty() {
                self.remove_messages(s, &moved).await?;
                let modseq = self.bump_modseq(s, from.id).await?;
                self.note_expunged(s, from, &moved, modseq).await?;
            }
            Ok::<_, MailboxError>(pairs)
        }))?;
        Ok(pairs)
    }

    /// Removes `doomed` (the caller chose them: \Deleted, and in the UID set if any).
    pub(super) fn expunge(
        &mut self,
        folder: &Folder,
        doomed: Vec<u32>,
    ) -> Result<Vec<u32>, MailboxError> {
        self.mongo.block(in_transaction!(self.mongo, |s| async {
            let docs = self.messages_in(s, folder, &doomed).await?;
            self.remove_messages(s, &docs).await?;
            let modseq = self.bump_modseq(s, folder.id).await?;
            self.note_expunged(s, folder, &docs, modseq).await?;
            Ok::<_, MailboxError>(())
        }))?;
        Ok(doomed)
    }
}
