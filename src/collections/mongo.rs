//! Collections in MongoDB beside a shared store, so any node serves any account's
//! calendars: the SQLite model as documents, every write one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{ClientSession, Collection as MongoCollection};

use super::{
    Changes, Collection, CollectionError, Kind, NewResource, Precondition, PropName, Resource,
    Span, etag_of, sqlite::COLLECTIONS_PER_ACCOUNT, sqlite::RESOURCES_PER_COLLECTION,
};
use crate::mailbox::crypto::AccountKey;
use crate::mongo::{
    DriverError, Mongo, binary, bytes, in_transaction, index, int, is_duplicate, text, unique,
};

impl From<mongodb::error::Error> for CollectionError {
    fn from(e: mongodb::error::Error) -> CollectionError {
        CollectionError::Mongo(Box::new(e))
    }
}

impl DriverError for CollectionError {
    fn driver(&self) -> Option<&mongodb::error::Error> {
        match self {
            CollectionError::Mongo(e) => Some(e),
            _ => None,
        }
    }
}

/// Gives every collection in the database a new instance after a restore (see
/// `sqlite::renew_instances`). Returns how many.
pub fn renew_instances(mongo: &Mongo) -> Result<usize, CollectionError> {
    mongo.block(async {
        let ids: Vec<Bson> = mongo
            .coll("dav_collections")
            .find(doc! {})
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .into_iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        for id in &ids {
            mongo
                .coll("dav_collections")
                .update_one(
                    doc! { "_id": id },
                    doc! { "$set": { "instance": super::sqlite::instance()? } },
                )
                .await?;
        }
        Ok(ids.len())
    })
}

/// Creates the indexes (every node at start; idempotent).
pub(super) fn prepare(mongo: &Mongo) -> Result<(), CollectionError> {
    mongo.block(async {
        mongo
            .coll("dav_collections")
            .create_index(unique(doc! { "account": 1, "kind": 1, "name": 1 }))
            .await?;
        let resources = mongo.coll("dav_resources");
        resources
            .create_index(unique(doc! { "collection_id": 1, "name": 1 }))
            .await?;
        resources
            .create_index(unique(doc! { "collection_id": 1, "uid": 1 }))
            .await?;
        resources
            .create_index(index(doc! { "collection_id": 1, "modseq": 1 }))
            .await?;
        mongo
            .coll("dav_removed")
            .create_index(unique(doc! { "collection_id": 1, "name": 1 }))
            .await?;
        Ok::<_, CollectionError>(())
    })
}

fn collection_of(d: &Document) -> Result<Collection, CollectionError> {
    let props: Vec<(String, String, String)> = match d.get_str("props") {
        Ok(json) => serde_json::from_str(json)?,
        Err(_) => Vec::new(),
    };
    Ok(Collection {
        id: int(d, "_id"),
        kind: Kind::parse(&text(d, "kind"))
            .ok_or(CollectionError::Refused("unknown collection kind"))?,
        name: text(d, "name"),
        instance: text(d, "instance"),
        modseq: int(d, "modseq") as u64,
        components: text(d, "components")
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect(),
        props: props
            .into_iter()
            .map(|(ns, n, v)| ((ns, n), v))
            .collect::<BTreeMap<_, _>>(),
    })
}

fn resource_of(d: &Document) -> Resource {
    Resource {
        name: text(d, "name"),
        uid: text(d, "uid"),
        component: text(d, "component"),
        etag: text(d, "etag"),
        size: int(d, "size") as u64,
        modseq: int(d, "modseq") as u64,
        modified: int(d, "modified"),
        content_type: text(d, "content_type"),
        span: span_of(d),
    }
}

/// A resource's span; one stored before spans were kept has `Span::ANY`.
fn span_of(d: &Document) -> Span {
    match (d.get("span_start"), d.get("span_end")) {
        (Some(_), Some(_)) => Span {
            start: int(d, "span_start"),
            end: int(d, "span_end"),
            exact: d.get_bool("span_exact").unwrap_or(false),
        },
        _ => Span::ANY,
    }
}

fn props_json(props: &BTreeMap<PropName, String>) -> Result<String, CollectionError> {
    let list: Vec<(&str, &str, &str)> = props
        .iter()
        .map(|((ns, n), v)| (ns.as_str(), n.as_str(), v.as_str()))
        .collect();
    Ok(serde_json::to_string(&list)?)
}

/// Leaves out the sealed body when only what describes a resource is wanted.
fn without_body() -> Document {
    doc! { "body": 0 }
}

pub struct MongoCollections {
    mongo: Arc<Mongo>,
    account: String,
    key: AccountKey,
}

impl MongoCollections {
    /// The account's collections, and whether the defaults are still to make (asked of
    /// the database unless the caller `knows` they were made).
    pub(super) fn open(
        mongo: Arc<Mongo>,
        account: String,
        key: AccountKey,
        knows: bool,
    ) -> Result<(MongoCollections, bool), CollectionError> {
        let this = MongoCollections {
            mongo,
            account,
            key,
        };
        if knows {
            return Ok((this, false));
        }
        let ready = this.mongo.block(async {
            this.accounts()
                .find_one(doc! { "_id": &this.account, "dav_ready": true })
                .await
        })?;
        Ok((this, ready.is_none()))
    }

    /// Notes that the defaults were made: one its owner deletes is not made again.
    pub(super) fn defaults_made(&mut self) -> Result<(), CollectionError> {
        self.mongo.block(async {
            self.accounts()
                .update_one(
                    doc! { "_id": &self.account },
                    doc! { "$set": { "dav_ready": true } },
                )
                .upsert(true)
                .await
        })?;
        Ok(())
    }

    fn collections_coll(&self) -> MongoCollection<Document> {
        self.mongo.coll("dav_collections")
    }

    fn resources_coll(&self) -> MongoCollection<Document> {
        self.mongo.coll("dav_resources")
    }

    fn removed_coll(&self) -> MongoCollection<Document> {
        self.mongo.coll("dav_removed")
    }

    /// The mailbox's account document: its byte counts are the quota's.
    fn accounts(&self) -> MongoCollection<Document> {
        self.mongo.coll("mailbox_accounts")
    }

    async fn next_id(&self, counter: &str) -> Result<i64, CollectionError> {
        let d = self
            .mongo
            .coll("counters")
            .find_one_and_update(doc! { "_id": counter }, doc! { "$inc": { "next": 1_i64 } })
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await?
            .ok_or(CollectionError::Refused("the id counter is missing"))?;
        Ok(int(&d, "next"))
    }

    fn insert(
        &self,
        kind: Kind,
        name: &str,
        components: &[String],
        props: &[(PropName, String)],
    ) -> Result<(), CollectionError> {
        let props: BTreeMap<PropName, String> = props.iter().cloned().collect();
        let props = props_json(&props)?;
        let instance = super::sqlite::instance()?;
        self.mongo.block(async {
            let count = self
                .collections_coll()
                .count_documents(doc! { "account": &self.account })
                .await?;
            if count as usize >= COLLECTIONS_PER_ACCOUNT {
                return Err(CollectionError::Refused("too many collections"));
            }
            let id = self.next_id("dav_collection").await?;
            let inserted = self
                .collections_coll()
                .insert_one(doc! {
                    "_id": id,
                    "account": &self.account,
                    "kind": kind.as_str(),
                    "name": name,
                    "instance": instance,
                    "modseq": 1_i64,
                    "components": components.join(","),
                    "props": props,
                })
                .await;
            match inserted {
                Ok(_) => Ok(()),
                Err(e) if is_duplicate(&e) => Err(CollectionError::Exists(name.to_string())),
                Err(e) => Err(e.into()),
            }
        })
    }

    pub fn collections(&self, kind: Kind) -> Result<Vec<Collection>, CollectionError> {
        let docs: Vec<Document> = self.mongo.block(async {
            self.collections_coll()
                .find(doc! { "account": &self.account, "kind": kind.as_str() })
                .sort(doc! { "name": 1 })
                .await?
                .try_collect()
                .await
        })?;
        docs.iter().map(collection_of).collect()
    }

    pub fn collection(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<Collection>, CollectionError> {
        let found = self.mongo.block(async {
            self.collections_coll()
                .find_one(doc! { "account": &self.account, "kind": kind.as_str(), "name": name })
                .await
        })?;
        found.as_ref().map(collection_of).transpose()
    }

    pub fn create(
        &mut self,
        kind: Kind,
        name: &str,
        components: &[String],
        props: &[(PropName, String)],
    ) -> Result<Collection, CollectionError> {
        self.insert(kind, name, components, props)?;
        self.collection(kind, name)?
            .ok_or_else(|| CollectionError::NoCollection(name.to_string()))
    }

    pub fn remove(&mut self, collection: &Collection) -> Result<(), CollectionError> {
        let id = collection.id;
        self.mongo.block(in_transaction!(self.mongo, |s| async {
            let sizes: Vec<Document> = self
                .resources_coll()
                .find(doc! { "collection_id": id })
                .projection(doc! { "size": 1 })
                .session(&mut *s)
                .await?
                .stream(&mut *s)
                .try_collect()
                .await?;
            let freed: i64 = sizes.iter().map(|d| int(d, "size")).sum();
            self.resources_coll()
                .delete_many(doc! { "collection_id": id })
                .session(&mut *s)
                .await?;
            self.removed_coll()
                .delete_many(doc! { "collection_id": id })
                .session(&mut *s)
                .await?;
            self.collections_coll()
                .delete_one(doc! { "_id": id })
                .session(&mut *s)
                .await?;
            self.accounts()
                .update_one(
                    doc! { "_id": &self.account },
                    doc! { "$inc": { "dav_bytes": -freed } },
                )
                .session(&mut *s)
                .await?;
            Ok::<_, CollectionError>(())
        }))
    }

    pub fn update_props(
        &mut self,
        collection: &Collection,
        set: &[(PropName, String)],
        remove: &[PropName],
    ) -> Result<Collection, CollectionError> {
        let id = collection.id;
        let props = self.mongo.block(in_transaction!(self.mongo, |s| async {
            let current = self
                .collections_coll()
                .find_one(doc! { "_id": id })
                .session(&mut *s)
                .await?
                .ok_or_else(|| CollectionError::NoCollection(collection.name.clone()))?;
            let mut props = collection_of(&current)?.props;
            for name in remove {
                props.remove(name);
            }
            for (name, value) in set {
                props.insert(name.clone(), value.clone());
            }
            self.collections_coll()
                .update_one(
                    doc! { "_id": id },
                    doc! { "$set": { "props": props_json(&props)? } },
                )
                .session(&mut *s)
                .await?;
            Ok::<_, CollectionError>(props)
        }))?;
        Ok(Collection {
            props,
            ..collection.clone()
        })
    }

    pub fn resources(&self, collection: &Collection) -> Result<Vec<Resource>, CollectionError> {
        let docs: Vec<Document> = self.mongo.block(async {
            self.resources_coll()
                .find(doc! { "collection_id": collection.id })
                .projection(without_body())
                .sort(doc! { "name": 1 })
                .await?
                .try_collect()
                .await
        })?;
        Ok(docs.iter().map(resource_of).collect())
    }

    pub fn count(&self, collection: &Collection) -> Result<u64, CollectionError> {
        Ok(self.mongo.block(async {
            self.resources_coll()
                .count_documents(doc! { "collection_id": collection.id })
                .await
        })?)
    }

    pub fn resource(
        &self,
        collection: &Collection,
        name: &str,
    ) -> Result<Option<Resource>, CollectionError> {
        let found = self.mongo.block(async {
            self.resources_coll()
                .find_one(doc! { "collection_id": collection.id, "name": name })
                .projection(without_body())
                .await
        })?;
        Ok(found.as_ref().map(resource_of))
    }

    fn opened(&self, d: &Document) -> Result<(Resource, Vec<u8>), CollectionError> {
        let body = self.key.open_resource(int(d, "_id"), &bytes(d, "body"))?;
        Ok((resource_of(d), body))
    }

    pub fn read(
        &self,
        collection: &Collection,
        name: &str,
    ) -> Result<Option<(Resource, Vec<u8>)>, CollectionError> {
        let found = self.mongo.block(async {
            self.resources_coll()
                .find_one(doc! { "collection_id": collection.id, "name": name })
                .await
        })?;
        found.as_ref().map(|d| self.opened(d)).transpose()
    }

    pub fn each_within(
        &self,
        collection: &Collection,
        within: Option<(i64, i64)>,
        f: &mut dyn FnMut(Resource, Vec<u8>) -> bool,
    ) -> Result<(), CollectionError> {
        let filter = match within {
            None => doc! { "collection_id": collection.id },
            Some((from, to)) => doc! {
                "collection_id": collection.id,
                "$or": [
                    { "span_start": { "$exists": false } },
                    { "span_start": { "$lt": to }, "span_end": { "$gte": from } },
                ],
            },
        };
        let mut cursor = self.mongo.block(async {
            self.resources_coll()
                .find(filter)
                .sort(doc! { "name": 1 })
                .await
        })?;
        // One document at a time: a query holds one body, not the collection.
        while let Some(d) = self.mongo.block(cursor.try_next())? {
            let (resource, body) = self.opened(&d)?;
            if !f(resource, body) {
                break;
            }
        }
        Ok(())
    }

    /// The collection's next change number, taken in the transaction `s`.
    async fn bump(&self, s: &mut ClientSession, id: i64) -> Result<u64, CollectionError> {
        let d = self
            .collections_coll()
            .find_one_and_update(doc! { "_id": id }, doc! { "$inc": { "modseq": 1_i64 } })
            .return_document(ReturnDocument::After)
            .session(&mut *s)
            .await?
            .ok_or_else(|| CollectionError::NoCollection(id.to_string()))?;
        Ok(int(&d, "modseq") as u64)
    }

    pub fn put(
        &mut self,
        collection: &Collection,
        new: &NewResource,
        precondition: &Precondition,
        quota: Option<u64>,
    ) -> Result<(Resource, bool), CollectionError> {
        let cid = collection.id;
        let etag = etag_of(new.body);
        let size = new.body.len() as i64;
        let now = crate::store::unix_now();
        let outcome = self.mongo.block(in_transaction!(self.mongo, |s| async {
            let old = self
                .resources_coll()
                .find_one(doc! { "collection_id": cid, "name": new.name })
                .projection(doc! { "etag": 1, "size": 1 })
                .session(&mut *s)
                .await?;
            if !precondition.holds(old.as_ref().map(|d| d.get_str("etag").unwrap_or_default())) {
                return Err(CollectionError::Changed);
            }
            let holder = self
                .resources_coll()
                .find_one(doc! { "collection_id": cid, "uid": new.uid })
                .projection(doc! { "name": 1 })
                .session(&mut *s)
                .await?
                .map(|d| text(&d, "name"));
            let moved = match new.moved_from {
                Some((from, name)) => {
                    let source = self
                        .resources_coll()
                        .find_one(doc! { "collection_id": from.id, "name": name })
                        .projection(doc! { "size": 1 })
                        .session(&mut *s)
                        .await?
                        // Gone since the request looked: the move is not made.
                        .ok_or(CollectionError::Changed)?;
                    Some((from, name, int(&source, "_id"), int(&source, "size")))
                }
                None => None,
            };
            let vacated = |holder: &str| {
                moved.is_some_and(|(from, name, _, _)| from.id == cid && name == holder)
            };
            if let Some(holder) = holder.filter(|h| h != new.name && !vacated(h)) {
                return Err(CollectionError::UidConflict(holder));
            }
            let old_size = old.as_ref().map_or(0, |d| int(d, "size"));
            let freed = old_size + moved.map_or(0, |m| m.3);
            if let Some(quota) = quota.filter(|_| size > freed) {
                let used = self
                    .accounts()
                    .find_one(doc! { "_id": &self.account })
                    .session(&mut *s)
                    .await?
                    .map_or(0, |d| crate::mailbox::used_bytes(&d))
                    .max(0);
                if (used - freed + size) as u64 > quota {
                    return Err(CollectionError::OverQuota {
                        used: used as u64,
                        quota,
                    });
                }
            }
            if old.is_none() {
                let count = self
                    .resources_coll()
                    .count_documents(doc! { "collection_id": cid })
                    .session(&mut *s)
                    .await?;
                if count as i64 >= RESOURCES_PER_COLLECTION {
                    return Err(CollectionError::Refused(
                        "too many resources in the collection",
                    ));
                }
            }
            if let Some((from, name, id, size)) = moved {
                self.remove_doc(s, from.id, name, id, size).await?;
            }
            let modseq = self.bump(s, cid).await?;
            // A rewrite keeps its id; a new resource takes one (outside the transaction:
            // an id a failed attempt took is only a gap). The seal is bound to the id.
            let id = match &old {
                Some(d) => int(d, "_id"),
                None => self.next_id("dav_resource").await?,
            };
            let sealed = self.key.seal_resource(id, new.body)?;
            self.resources_coll()
                .replace_one(
                    doc! { "_id": id },
                    doc! {
                        "_id": id,
                        "account": &self.account,
                        "collection_id": cid,
                        "name": new.name,
                        "uid": new.uid,
                        "component": new.component,
                        "content_type": new.content_type,
                        "etag": &etag,
                        "size": size,
                        "modseq": modseq as i64,
                        "modified": now,
                        "body": Bson::Binary(binary(&sealed)),
                        "span_start": new.span.start,
                        "span_end": new.span.end,
                        "span_exact": new.span.exact,
                    },
                )
                .upsert(true)
                .session(&mut *s)
                .await?;
            self.removed_coll()
                .delete_one(doc! { "collection_id": cid, "name": new.name })
                .session(&mut *s)
                .await?;
            self.accounts()
                .update_one(
                    doc! { "_id": &self.account },
                    doc! { "$inc": { "dav_bytes": size - old_size } },
                )
                .upsert(true)
                .session(&mut *s)
                .await?;
            Ok::<_, CollectionError>((modseq, old.is_none()))
        }))?;
        let (modseq, created) = outcome;
        let resource = Resource {
            name: new.name.to_string(),
            uid: new.uid.to_string(),
            component: new.component.to_string(),
            etag,
            size: size as u64,
            modseq,
            modified: now,
            content_type: new.content_type.to_string(),
            span: new.span,
        };
        Ok((resource, created))
    }

    pub fn delete(
        &mut self,
        collection: &Collection,
        name: &str,
        precondition: &Precondition,
    ) -> Result<bool, CollectionError> {
        let cid = collection.id;
        self.mongo.block(in_transaction!(self.mongo, |s| async {
            let current = self
                .resources_coll()
                .find_one(doc! { "collection_id": cid, "name": name })
                .projection(doc! { "etag": 1, "size": 1 })
                .session(&mut *s)
                .await?;
            if !precondition.holds(
                current
                    .as_ref()
                    .map(|d| d.get_str("etag").unwrap_or_default()),
            ) {
                return Err(CollectionError::Changed);
            }
            let Some(current) = current else {
                return Ok(false);
            };
            self.remove_doc(s, cid, name, int(&current, "_id"), int(&current, "size"))
                .await?;
            Ok::<_, CollectionError>(true)
        }))
    }

    /// Removes a resource in the transaction `s`, noting the removal for sync-collection
    /// under a new change number.
    async fn remove_doc(
        &self,
        s: &mut ClientSession,
        cid: i64,
        name: &str,
        id: i64,
        size: i64,
    ) -> Result<(), CollectionError> {
        let modseq = self.bump(s, cid).await?;
        self.resources_coll()
            .delete_one(doc! { "_id": id })
            .session(&mut *s)
            .await?;
        self.removed_coll()
            .update_one(
                doc! { "collection_id": cid, "name": name },
                doc! { "$set": { "modseq": modseq as i64 } },
            )
            .upsert(true)
            .session(&mut *s)
            .await?;
        self.accounts()
            .update_one(
                doc! { "_id": &self.account },
                doc! { "$inc": { "dav_bytes": -size } },
            )
            .session(&mut *s)
            .await?;
        Ok(())
    }

    pub fn changes_since(
        &self,
        collection: &Collection,
        since: u64,
    ) -> Result<Changes, CollectionError> {
        let since = since as i64;
        let (changed, removed): (Vec<Document>, Vec<Document>) = self.mongo.block(async {
            let changed = self
                .resources_coll()
                .find(doc! { "collection_id": collection.id, "modseq": { "$gt": since } })
                .projection(without_body())
                .sort(doc! { "modseq": 1 })
                .await?
                .try_collect()
                .await?;
            let removed = self
                .removed_coll()
                .find(doc! { "collection_id": collection.id, "modseq": { "$gt": since } })
                .sort(doc! { "modseq": 1 })
                .await?
                .try_collect()
                .await?;
            Ok::<_, CollectionError>((changed, removed))
        })?;
        Ok(Changes {
            changed: changed.iter().map(resource_of).collect(),
            removed: removed.iter().map(|d| text(d, "name")).collect(),
        })
    }
}
