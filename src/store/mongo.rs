//! The shared store: one MongoDB replica set (or sharded cluster) behind the same trait as
//! SQLite, for several nodes serving one spec. Applies are multi-document transactions.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::{ClientSession, Collection};

use crate::mongo::{DriverError, Mongo, binary, bytes, in_transaction, index, unique};

use super::{
    ApplyRecord, BackupRun, DnsOwned, DumpedKey, DumpedObject, Kind, NodeInfo, RetiredKey, Store,
    StoreDump, StoreError, StoredCertificate, StoredObject, Write, now_rfc3339, unix_now,
};

use crate::mongo::TRANSACTION_ATTEMPTS;
/// Documents per insert_many or $in list in one apply: well under the 16 MiB message
/// limit, and few round trips.
const BATCH: usize = 1_000;
/// The backup history kept (as SQLite keeps it).
const BACKUP_HISTORY: i64 = 1_000;

impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> StoreError {
        StoreError::Mongo(Box::new(e))
    }
}

impl DriverError for StoreError {
    fn driver(&self) -> Option<&mongodb::error::Error> {
        match self {
            StoreError::Mongo(e) => Some(e),
            _ => None,
        }
    }
}

fn data(what: &str) -> impl FnOnce(bson::error::Error) -> StoreError + '_ {
    move |e| StoreError::Data(format!("{what}: {e}"))
}

pub struct MongoStore {
    mongo: Arc<Mongo>,
}

impl MongoStore {
    /// Connects, checks that the deployment can run transactions, and creates the
    /// collections and indexes (idempotent; every node does it at start).
    pub fn connect(url: &str, database: &str) -> Result<MongoStore, StoreError> {
        let mongo = Mongo::connect(url, database)?;
        let store = MongoStore { mongo };
        store.block(store.check_deployment())?;
        store.block(store.prepare())?;
        Ok(store)
    }

    fn block<F: Future + Send>(&self, future: F) -> F::Output
    where
        F::Output: Send,
    {
        self.mongo.block(future)
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.mongo.coll(name)
    }

    async fn check_deployment(&self) -> Result<(), StoreError> {
        let hello = self
            .mongo
            .client
            .database("admin")
            .run_command(doc! { "hello": 1 })
            .await?;
        let replica_set = hello.get_str("setName").is_ok();
        let router = hello.get_str("msg").ok() == Some("isdbgrid");
        if !replica_set && !router {
            return Err(StoreError::Unsuitable(
                "the MongoDB server is a standalone server: ferrymail applies a spec in one transaction, which needs a replica set (a one-member replica set is enough: start mongod with --replSet and run rs.initiate())"
                    .into(),
            ));
        }
        Ok(())
    }

    async fn prepare(&self) -> Result<(), StoreError> {
        let meta = self.coll("meta");
        // The revision counter exists before the first apply reads it.
        meta.update_one(
            doc! { "_id": "revision" },
            doc! { "$setOnInsert": { "value": 0_i64 } },
        )
        .upsert(true)
        .await?;
        self.coll("objects")
            .create_index(unique(doc! { "kind": 1, "id": 1 }))
            .await?;
        self.coll("dns_owned")
            .create_index(unique(
                doc! { "provider": 1, "zone": 1, "name": 1, "type": 1, "value": 1 },
            ))
            .await?;
        self.coll("backup_runs")
            .create_index(index(doc! { "ok": 1, "started_at": -1 }))
            .await?;
        self.coll("backup_runs")
            .create_index(index(doc! { "seq": -1 }))
            .await?;
        self.coll("nodes")
            .create_index(index(doc! { "last_seen": -1 }))
            .await?;
        Ok(())
    }

    async fn revision_in(&self, session: Option<&mut ClientSession>) -> Result<u64, StoreError> {
        let meta = self.coll("meta");
        let find = meta.find_one(doc! { "_id": "revision" });
        let found = match session {
            Some(s) => find.session(s).await?,
            None => find.await?,
        };
        let value = found
            .and_then(|d| d.get("value").cloned())
            .ok_or_else(|| StoreError::Data("the revision counter is missing".into()))?;
        as_u64(&value).ok_or_else(|| StoreError::Data(format!("revision {value} is not a number")))
    }

    async fn apply_in(
        &self,
        s: &mut ClientSession,
        base_revision: u64,
        writes: &[Write],
        source: &str,
    ) -> Result<u64, StoreError> {
        let current = self.revision_in(Some(s)).await?;
        if current != base_revision {
            return Err(StoreError::Stale {
                planned: base_revision,
                current,
            });
        }
        let revision = current + 1;
        let objects = self.coll("objects");
        let keys = self.coll("dkim_keys");
        let retired = self.coll("dkim_retired");

        // What exists already, in one read: created revisions and ownership survive.
        let ids: Vec<String> = writes
            .iter()
            .map(|w| object_key(write_kind(w), write_id(w)))
            .collect();
        let mut existing: HashMap<String, Document> = HashMap::new();
        for chunk in ids.chunks(BATCH) {
            let mut cursor = objects
                .find(doc! { "_id": { "$in": chunk } })
                .projection(doc! { "managed_by": 1, "created_revision": 1, "fields": 1 })
                .session(&mut *s)
                .await?;
            let found: Vec<Document> = cursor.stream(&mut *s).try_collect().await?;
            for d in found {
                if let Ok(id) = d.get_str("_id") {
                    existing.insert(id.to_string(), d.clone());
                }
            }
        }

        let (mut added, mut changed, mut destroyed) = (0, 0, 0);
        // The last write of an id wins, as it would written one by one.
        let mut puts: Vec<Document> = Vec::new();
        let mut put_index: HashMap<String, usize> = HashMap::new();
        let mut deletes: Vec<String> = Vec::new();
        for write in writes {
            match write {
                Write::Put { object, key } => {
                    let id = object_key(object.kind, &object.id);
                    let before = existing.get(&id);
                    if before.is_some() {
                        changed += 1
                    } else {
                        added += 1
                    }
                    let created = before
                        .and_then(|d| d.get("created_revision").and_then(as_u64))
                        .unwrap_or(revision);
                    let managed_by = before
                        .and_then(|d| d.get_str("managed_by").ok())
                        .unwrap_or("spec");
                    let mut d = doc! {
                        "_id": &id,
                        "kind": object.kind.as_str(),
                        "id": &object.id,
                        "fields": fields_to_bson(&object.json),
                        "managed_by": managed_by,
                        "created_revision": created as i64,
                        "updated_revision": revision as i64,
                    };
                    if let Some(i) = put_index.get(&id) {
                        std::mem::swap(&mut puts[*i], &mut d);
                    } else {
                        put_index.insert(id.clone(), puts.len());
                        puts.push(d);
                    }
                    deletes.retain(|x| *x != id);
                    if let Some(key) = key {
                        retired
                            .delete_one(doc! { "_id": &object.id })
                            .session(&mut *s)
                            .await?;
                        keys.replace_one(
                            doc! { "_id": &object.id },
                            doc! {
                                "_id": &object.id,
                                "private_key": binary(&key.private_der),
                                "public_key": binary(&key.public),
                                "created_revision": revision as i64,
                            },
                        )
                        .upsert(true)
                        .session(&mut *s)
                        .await?;
                    }
                }
                Write::Delete { kind, id } => {
                    let key = object_key(*kind, id);
                    if *kind == Kind::DkimKey {
                        self.retire_key(s, id, existing.get(&key)).await?;
                    }
                    let was_managed = existing
                        .get(&key)
                        .is_some_and(|d| d.get_str("managed_by").ok() == Some("spec"));
                    if put_index.remove(&key).is_some() || was_managed {
                        destroyed += 1;
                        deletes.push(key.clone());
                        existing.remove(&key);
                    }
                    puts.retain(|d| d.get_str("_id").ok() != Some(key.as_str()));
                    put_index = puts
                        .iter()
                        .enumerate()
                        .filter_map(|(i, d)| d.get_str("_id").ok().map(|k| (k.to_string(), i)))
                        .collect();
                }
            }
        }
        // Replacing is a delete of the old documents and an insert of the new ones, in
        // batches: an apply of 100,000 aliases is a few round trips, not 100,000.
        let replaced: Vec<&str> = puts
            .iter()
            .filter_map(|d| d.get_str("_id").ok())
            .filter(|id| existing.contains_key(*id))
            .chain(deletes.iter().map(String::as_str))
            .collect();
        for chunk in replaced.chunks(BATCH) {
            objects
                .delete_many(doc! { "_id": { "$in": chunk } })
                .session(&mut *s)
                .await?;
        }
        for chunk in puts.chunks(BATCH) {
            objects.insert_many(chunk).session(&mut *s).await?;
        }

        let updated = self
            .coll("meta")
            .update_one(
                doc! { "_id": "revision", "value": current as i64 },
                doc! { "$set": { "value": revision as i64 } },
            )
            .session(&mut *s)
            .await?;
        if updated.modified_count != 1 {
            let now = self.revision_in(Some(s)).await?;
            return Err(StoreError::Stale {
                planned: base_revision,
                current: now,
            });
        }
        self.coll("applies")
            .insert_one(doc! {
                "_id": revision as i64,
                "applied_at": now_rfc3339(),
                "added": added as i64,
                "changed": changed as i64,
                "destroyed": destroyed as i64,
                "source": source,
            })
            .session(&mut *s)
            .await?;
        Ok(revision)
    }

    /// Keeps a deleted DKIM key's public half published for a while.
    async fn retire_key(
        &self,
        s: &mut ClientSession,
        id: &str,
        object: Option<&Document>,
    ) -> Result<(), StoreError> {
        let Some(key) = self
            .coll("dkim_keys")
            .find_one(doc! { "_id": id })
            .session(&mut *s)
            .await?
        else {
            return Ok(());
        };
        let Some(object) = object else {
            return Ok(());
        };
        let algorithm = match object.get("fields") {
            Some(Bson::Document(f)) => f.get_str("algorithm").ok().map(str::to_string),
            Some(Bson::String(json)) => super::records::parse_fields(json)
                .get("algorithm")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            _ => None,
        }
        .unwrap_or_else(|| "rsa-2048".into());
        let public = bytes(&key, "public_key");
        self.coll("dkim_retired")
            .replace_one(
                doc! { "_id": id },
                doc! { "_id": id, "algorithm": algorithm, "public_key": binary(&public), "retired_at": unix_now() },
            )
            .upsert(true)
            .session(&mut *s)
            .await?;
        self.coll("dkim_keys")
            .delete_one(doc! { "_id": id })
            .session(&mut *s)
            .await?;
        Ok(())
    }

    async fn all(
        &self,
        name: &str,
        filter: Document,
        sort: Document,
    ) -> Result<Vec<Document>, StoreError> {
        Ok(self
            .coll(name)
            .find(filter)
            .sort(sort)
            .await?
            .try_collect()
            .await?)
    }

    async fn backup_runs_where(
        &self,
        filter: Document,
        limit: usize,
    ) -> Result<Vec<BackupRun>, StoreError> {
        let docs: Vec<Document> = self
            .coll("backup_runs")
            .find(filter)
            .sort(doc! { "seq": -1, "started_at": -1 })
            .limit(limit.min(i64::MAX as usize) as i64)
            .await?
            .try_collect()
            .await?;
        docs.into_iter()
            .map(|d| from_doc::<BackupRunDoc>(d, "backup run").map(BackupRun::from))
            .collect()
    }

    async fn objects_now(&self) -> Result<(u64, Vec<StoredObject>), StoreError> {
        // Read the revision on both sides of the objects: equal means no apply landed in
        // between, so the objects are exactly that revision's.
        for _ in 0..TRANSACTION_ATTEMPTS {
            let before = self.revision_in(None).await?;
            let docs = self.all("objects", doc! {}, doc! { "_id": 1 }).await?;
            let after = self.revision_in(None).await?;
            if before != after {
                continue;
            }
            let objects = docs
                .into_iter()
                .map(|d| {
                    let o = dumped_object(d)?;
                    Ok(StoredObject {
                        object: super::Object {
                            kind: o.kind,
                            id: o.id,
                            json: o.json,
                        },
                        managed: o.managed,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            return Ok((after, objects));
        }
        Err(StoreError::Data(
            "the store kept changing while it was read; try again".into(),
        ))
    }

    async fn dump_now(&self) -> Result<StoreDump, StoreError> {
        for _ in 0..TRANSACTION_ATTEMPTS {
            let before = self.revision_in(None).await?;
            let dump = self.dump_once(before).await?;
            if self.revision_in(None).await? == before {
                return Ok(dump);
            }
        }
        Err(StoreError::Data(
            "the store kept changing while it was read; try again".into(),
        ))
    }

    async fn dump_once(&self, revision: u64) -> Result<StoreDump, StoreError> {
        let none = doc! {};
        let by_id = doc! { "_id": 1 };
        let mut dump = StoreDump {
            revision,
            ..StoreDump::default()
        };
        for d in self.all("objects", none.clone(), by_id.clone()).await? {
            dump.objects.push(dumped_object(d)?);
        }
        for d in self.all("dkim_keys", none.clone(), by_id.clone()).await? {
            dump.dkim_keys.push(DumpedKey {
                id: d.get_str("_id").unwrap_or_default().to_string(),
                private_der: bytes(&d, "private_key"),
                public: bytes(&d, "public_key"),
                created_revision: d.get("created_revision").and_then(as_u64).unwrap_or(0),
            });
        }
        dump.dkim_retired = self.dkim_retired_now().await?;
        dump.dns_owned = self.dns_owned_now().await?;
        for d in self
            .all("acme_accounts", none.clone(), by_id.clone())
            .await?
        {
            dump.acme_accounts.push((
                d.get_str("_id").unwrap_or_default().to_string(),
                d.get_str("credentials").unwrap_or_default().to_string(),
            ));
        }
        for d in self
            .all("certificates", none.clone(), by_id.clone())
            .await?
        {
            dump.certificates
                .push(from_doc::<CertificateDoc>(d, "certificate")?.into());
        }
        for d in self.all("applies", none.clone(), by_id).await? {
            dump.applies
                .push(from_doc::<ApplyDoc>(d, "apply record")?.into());
        }
        for d in self.all("backup_runs", none, doc! { "seq": 1 }).await? {
            dump.backup_runs
                .push(from_doc::<BackupRunDoc>(d, "backup run")?.into());
        }
        dump.sort();
        Ok(dump)
    }

    async fn dkim_retired_now(&self) -> Result<Vec<RetiredKey>, StoreError> {
        Ok(self
            .all("dkim_retired", doc! {}, doc! { "_id": 1 })
            .await?
            .into_iter()
            .map(|d| RetiredKey {
                id: d.get_str("_id").unwrap_or_default().to_string(),
                algorithm: d.get_str("algorithm").unwrap_or_default().to_string(),
                public: bytes(&d, "public_key"),
                retired_at: d.get("retired_at").and_then(Bson::as_i64).unwrap_or(0),
            })
            .collect())
    }

    async fn dns_owned_now(&self) -> Result<Vec<DnsOwned>, StoreError> {
        Ok(self
            .all(
                "dns_owned",
                doc! {},
                doc! { "provider": 1, "zone": 1, "name": 1, "type": 1, "value": 1 },
            )
            .await?
            .into_iter()
            .map(|d| dns_owned_from(&d))
            .collect())
    }

    async fn replace_dns_owned(
        &self,
        s: &mut ClientSession,
        provider: &str,
        zone: &str,
        docs: &[Document],
    ) -> Result<(), StoreError> {
        let coll = self.coll("dns_owned");
        coll.delete_many(doc! { "provider": provider, "zone": zone })
            .session(&mut *s)
            .await?;
        if !docs.is_empty() {
            coll.insert_many(docs).session(&mut *s).await?;
        }
        Ok(())
    }

    async fn load_in(&self, s: &mut ClientSession, dump: &StoreDump) -> Result<(), StoreError> {
        let current = self.revision_in(Some(s)).await?;
        let mut held = 0;
        for name in ["objects", "applies", "certificates"] {
            held += self
                .coll(name)
                .count_documents(doc! {})
                .session(&mut *s)
                .await?;
        }
        if current != 0 || held != 0 {
            return Err(StoreError::NotEmpty(current));
        }
        self.coll("meta")
            .update_one(
                doc! { "_id": "revision" },
                doc! { "$set": { "value": dump.revision as i64 } },
            )
            .session(&mut *s)
            .await?;
        let objects: Vec<Document> = dump
            .objects
            .iter()
            .map(|o| {
                doc! {
                    "_id": object_key(o.kind, &o.id),
                    "kind": o.kind.as_str(),
                    "id": &o.id,
                    "fields": fields_to_bson(&o.json),
                    "managed_by": if o.managed { "spec" } else { "user" },
                    "created_revision": o.created_revision as i64,
                    "updated_revision": o.updated_revision as i64,
                }
            })
            .collect();
        let keys: Vec<Document> = dump
            .dkim_keys
            .iter()
            .map(|k| {
                doc! {
                    "_id": &k.id,
                    "private_key": binary(&k.private_der),
                    "public_key": binary(&k.public),
                    "created_revision": k.created_revision as i64,
                }
            })
            .collect();
        let retired: Vec<Document> = dump
            .dkim_retired
            .iter()
            .map(|k| doc! { "_id": &k.id, "algorithm": &k.algorithm, "public_key": binary(&k.public), "retired_at": k.retired_at })
            .collect();
        let owned: Vec<Document> = dump.dns_owned.iter().map(dns_owned_doc).collect();
        let accounts: Vec<Document> = dump
            .acme_accounts
            .iter()
            .map(|(dir, creds)| doc! { "_id": dir, "credentials": creds })
            .collect();
        let certificates = dump
            .certificates
            .iter()
            .map(|c| to_doc(&CertificateDoc::from(c)))
            .collect::<Result<Vec<_>, _>>()?;
        let applies = dump
            .applies
            .iter()
            .map(|a| to_doc(&ApplyDoc::from(a)))
            .collect::<Result<Vec<_>, _>>()?;
        let runs = dump
            .backup_runs
            .iter()
            .enumerate()
            .map(|(i, r)| to_doc(&BackupRunDoc::new(r, i as i64 + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        for (name, docs) in [
            ("objects", objects),
            ("dkim_keys", keys),
            ("dkim_retired", retired),
            ("dns_owned", owned),
            ("acme_accounts", accounts),
            ("certificates", certificates),
            ("applies", applies),
            ("backup_runs", runs),
        ] {
            for chunk in docs.chunks(BATCH) {
                self.coll(name).insert_many(chunk).session(&mut *s).await?;
            }
        }
        Ok(())
    }
}

fn write_kind(w: &Write) -> Kind {
    match w {
        Write::Put { object, .. } => object.kind,
        Write::Delete { kind, .. } => *kind,
    }
}

fn write_id(w: &Write) -> &str {
    match w {
        Write::Put { object, .. } => &object.id,
        Write::Delete { id, .. } => id,
    }
}

/// The document key of an object: kinds have no '/', so the first one splits it.
fn object_key(kind: Kind, id: &str) -> String {
    format!("{}/{id}", kind.as_str())
}

fn as_u64(b: &Bson) -> Option<u64> {
    match b {
        Bson::Int64(v) => u64::try_from(*v).ok(),
        Bson::Int32(v) => u64::try_from(*v).ok(),
        Bson::Double(v) if v.fract() == 0.0 && *v >= 0.0 => Some(*v as u64),
        _ => None,
    }
}

/// An object's fields as a document, so that an operator reading the database sees
/// them; kept as the JSON text itself when the document would not give back exactly
/// that text (numbers beyond i64, keys MongoDB treats specially), since plans compare
/// the text.
fn fields_to_bson(json: &str) -> Bson {
    let as_doc = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| match Bson::try_from(v) {
            Ok(Bson::Document(d)) => Some(d),
            _ => None,
        });
    match as_doc {
        Some(d) if fields_from_doc(d.clone()) == json => Bson::Document(d),
        _ => Bson::String(json.to_string()),
    }
}

fn fields_from_doc(d: Document) -> String {
    // serde_json's map is sorted: the canonical text whatever order the document has.
    Bson::Document(d).into_relaxed_extjson().to_string()
}

fn dumped_object(d: Document) -> Result<DumpedObject, StoreError> {
    let kind = d.get_str("kind").unwrap_or_default();
    let kind = Kind::parse(kind)
        .ok_or_else(|| StoreError::Data(format!("unknown object kind {kind:?}")))?;
    let json = match d.get("fields") {
        Some(Bson::Document(f)) => fields_from_doc(f.clone()),
        Some(Bson::String(s)) => s.clone(),
        _ => "{}".into(),
    };
    Ok(DumpedObject {
        kind,
        id: d.get_str("id").unwrap_or_default().to_string(),
        json,
        managed: d.get_str("managed_by").ok() == Some("spec"),
        created_revision: d.get("created_revision").and_then(as_u64).unwrap_or(0),
        updated_revision: d.get("updated_revision").and_then(as_u64).unwrap_or(0),
    })
}

fn dns_owned_doc(o: &DnsOwned) -> Document {
    doc! { "provider": &o.provider, "zone": &o.zone, "name": &o.name, "type": &o.rtype, "value": &o.value }
}

fn dns_owned_from(d: &Document) -> DnsOwned {
    let s = |k: &str| d.get_str(k).unwrap_or_default().to_string();
    DnsOwned {
        provider: s("provider"),
        zone: s("zone"),
        name: s("name"),
        rtype: s("type"),
        value: s("value"),
    }
}

fn to_doc<T: serde::Serialize>(value: &T) -> Result<Document, StoreError> {
    bson::serialize_to_document(value).map_err(data("encoding a document"))
}

fn from_doc<T: serde::de::DeserializeOwned>(d: Document, what: &str) -> Result<T, StoreError> {
    bson::deserialize_from_document(d).map_err(data(what))
}

/// Certificates as documents: Unix times as i64, names as an array.
#[derive(serde::Serialize, serde::Deserialize)]
struct CertificateDoc {
    #[serde(rename = "_id")]
    id: String,
    names: Vec<String>,
    chain_pem: String,
    key_pem: String,
    not_after: i64,
    issued_at: i64,
    #[serde(default)]
    renew_requested: bool,
}

impl From<&StoredCertificate> for CertificateDoc {
    fn from(c: &StoredCertificate) -> Self {
        CertificateDoc {
            id: c.id.clone(),
            names: c.names.clone(),
            chain_pem: c.chain_pem.clone(),
            key_pem: c.key_pem.clone(),
            not_after: c.not_after,
            issued_at: c.issued_at,
            renew_requested: c.renew_requested,
        }
    }
}

impl From<CertificateDoc> for StoredCertificate {
    fn from(c: CertificateDoc) -> Self {
        StoredCertificate {
            id: c.id,
            names: c.names,
            chain_pem: c.chain_pem,
            key_pem: c.key_pem,
            not_after: c.not_after,
            issued_at: c.issued_at,
            renew_requested: c.renew_requested,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ApplyDoc {
    #[serde(rename = "_id")]
    revision: i64,
    applied_at: String,
    added: i64,
    changed: i64,
    destroyed: i64,
    source: String,
}

impl From<&ApplyRecord> for ApplyDoc {
    fn from(a: &ApplyRecord) -> Self {
        ApplyDoc {
            revision: a.revision as i64,
            applied_at: a.applied_at.clone(),
            added: a.added as i64,
            changed: a.changed as i64,
            destroyed: a.destroyed as i64,
            source: a.source.clone(),
        }
    }
}

impl From<ApplyDoc> for ApplyRecord {
    fn from(a: ApplyDoc) -> Self {
        ApplyRecord {
            revision: a.revision.max(0) as u64,
            applied_at: a.applied_at,
            added: a.added.max(0) as usize,
            changed: a.changed.max(0) as usize,
            destroyed: a.destroyed.max(0) as usize,
            source: a.source,
        }
    }
}

/// A backup run, ordered by `seq` (a clock-free sequence, as SQLite's rowid).
#[derive(serde::Serialize, serde::Deserialize)]
struct BackupRunDoc {
    seq: i64,
    id: String,
    started_at: i64,
    target: String,
    ok: bool,
    size: i64,
    sha256: String,
    duration_ms: i64,
    error: Option<String>,
}

impl BackupRunDoc {
    fn new(r: &BackupRun, seq: i64) -> Self {
        BackupRunDoc {
            seq,
            id: r.id.clone(),
            started_at: r.started_at,
            target: r.target.clone(),
            ok: r.ok,
            size: r.size.min(i64::MAX as u64) as i64,
            sha256: r.sha256.clone(),
            duration_ms: r.duration_ms.min(i64::MAX as u64) as i64,
            error: r.error.clone(),
        }
    }
}

impl From<BackupRunDoc> for BackupRun {
    fn from(r: BackupRunDoc) -> Self {
        BackupRun {
            id: r.id,
            started_at: r.started_at,
            target: r.target,
            ok: r.ok,
            size: r.size.max(0) as u64,
            sha256: r.sha256,
            duration_ms: r.duration_ms.max(0) as u64,
            error: r.error,
        }
    }
}

impl Store for MongoStore {
    fn kind(&self) -> &'static str {
        "mongodb"
    }

    fn location(&self) -> String {
        format!(
            "database {:?} on {}",
            self.mongo.db.name(),
            self.mongo.hosts
        )
    }

    fn revision(&self) -> Result<u64, StoreError> {
        self.block(self.revision_in(None))
    }

    fn objects(&self) -> Result<(u64, Vec<StoredObject>), StoreError> {
        self.block(self.objects_now())
    }

    fn apply(&self, base_revision: u64, writes: &[Write], source: &str) -> Result<u64, StoreError> {
        self.block(in_transaction!(self.mongo, |s| self.apply_in(
            s,
            base_revision,
            writes,
            source
        )))
    }

    fn dkim_public_key(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let found = self.block(
            self.coll("dkim_keys")
                .find_one(doc! { "_id": id })
                .into_future(),
        )?;
        Ok(found.map(|d| bytes(&d, "public_key")))
    }

    fn dkim_private_key(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let found = self.block(
            self.coll("dkim_keys")
                .find_one(doc! { "_id": id })
                .into_future(),
        )?;
        Ok(found.map(|d| bytes(&d, "private_key")))
    }

    fn acme_account(&self, directory: &str) -> Result<Option<String>, StoreError> {
        let found = self.block(
            self.coll("acme_accounts")
                .find_one(doc! { "_id": directory })
                .into_future(),
        )?;
        Ok(found.and_then(|d| d.get_str("credentials").ok().map(str::to_string)))
    }

    fn set_acme_account(&self, directory: &str, credentials: &str) -> Result<(), StoreError> {
        self.block(
            self.coll("acme_accounts")
                .replace_one(
                    doc! { "_id": directory },
                    doc! { "_id": directory, "credentials": credentials },
                )
                .upsert(true)
                .into_future(),
        )?;
        Ok(())
    }

    fn certificate(&self, id: &str) -> Result<Option<StoredCertificate>, StoreError> {
        let found = self.block(
            self.coll("certificates")
                .find_one(doc! { "_id": id })
                .into_future(),
        )?;
        found
            .map(|d| from_doc::<CertificateDoc>(d, "certificate").map(StoredCertificate::from))
            .transpose()
    }

    fn put_certificate(&self, cert: &StoredCertificate) -> Result<(), StoreError> {
        let d = to_doc(&CertificateDoc::from(cert))?;
        self.block(
            self.coll("certificates")
                .replace_one(doc! { "_id": &cert.id }, d)
                .upsert(true)
                .into_future(),
        )?;
        Ok(())
    }

    fn request_renewal(&self, id: &str) -> Result<bool, StoreError> {
        let result = self.block(
            self.coll("certificates")
                .update_one(
                    doc! { "_id": id },
                    doc! { "$set": { "renew_requested": true } },
                )
                .into_future(),
        )?;
        Ok(result.matched_count > 0)
    }

    fn dkim_retired(&self) -> Result<Vec<RetiredKey>, StoreError> {
        self.block(self.dkim_retired_now())
    }

    fn dns_owned(&self) -> Result<Vec<DnsOwned>, StoreError> {
        self.block(self.dns_owned_now())
    }

    fn set_dns_owned(
        &self,
        provider: &str,
        zone: &str,
        owned: &[DnsOwned],
    ) -> Result<(), StoreError> {
        let mut docs: Vec<Document> = owned
            .iter()
            .map(|o| {
                dns_owned_doc(&DnsOwned {
                    provider: provider.into(),
                    zone: zone.into(),
                    ..o.clone()
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        docs.retain(|d| seen.insert(d.to_string()));
        self.block(in_transaction!(self.mongo, |s| self
            .replace_dns_owned(s, provider, zone, &docs)))
    }

    fn applies(&self, limit: usize) -> Result<Vec<ApplyRecord>, StoreError> {
        self.block(async {
            let docs: Vec<Document> = self
                .coll("applies")
                .find(doc! {})
                .sort(doc! { "_id": -1 })
                .limit(limit.min(i64::MAX as usize) as i64)
                .await?
                .try_collect()
                .await?;
            docs.into_iter()
                .map(|d| from_doc::<ApplyDoc>(d, "apply record").map(ApplyRecord::from))
                .collect()
        })
    }

    fn record_backup(&self, run: &BackupRun) -> Result<(), StoreError> {
        self.block(async {
            let runs = self.coll("backup_runs");
            let last = runs
                .find_one(doc! {})
                .sort(doc! { "seq": -1 })
                .await?
                .and_then(|d| d.get_i64("seq").ok())
                .unwrap_or(0);
            // Two nodes recording at once may pick the same seq; both runs are kept, and
            // they sort by start time among themselves.
            let seq = last + 1;
            runs.insert_one(to_doc(&BackupRunDoc::new(run, seq))?)
                .await?;
            runs.delete_many(doc! { "seq": { "$lte": seq - BACKUP_HISTORY } })
                .await?;
            Ok(())
        })
    }

    fn backup_runs(&self, limit: usize) -> Result<Vec<BackupRun>, StoreError> {
        self.block(self.backup_runs_where(doc! {}, limit))
    }

    fn last_good_backup(&self) -> Result<Option<BackupRun>, StoreError> {
        Ok(self
            .block(self.backup_runs_where(doc! { "ok": true }, 1))?
            .pop())
    }

    fn heartbeat(&self, node: &NodeInfo) -> Result<(), StoreError> {
        let mut d = to_doc(node)?;
        d.insert("_id", node.name.clone());
        self.block(
            self.coll("nodes")
                .replace_one(doc! { "_id": &node.name }, d)
                .upsert(true)
                .into_future(),
        )?;
        Ok(())
    }

    fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        self.block(async {
            self.all("nodes", doc! {}, doc! { "last_seen": -1, "_id": 1 })
                .await?
                .into_iter()
                .map(|mut d| {
                    d.remove("_id");
                    from_doc::<NodeInfo>(d, "node")
                })
                .collect()
        })
    }

    fn forget_nodes(&self, before: i64) -> Result<usize, StoreError> {
        let result = self.block(
            self.coll("nodes")
                .delete_many(doc! { "last_seen": { "$lt": before } })
                .into_future(),
        )?;
        Ok(result.deleted_count as usize)
    }

    fn dump(&self) -> Result<StoreDump, StoreError> {
        self.block(self.dump_now())
    }

    fn connection(&self) -> Option<Arc<Mongo>> {
        Some(self.mongo.clone())
    }

    fn watch_revision(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<()>> {
        use futures_util::StreamExt;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let meta = self.coll("meta");
        self.mongo.spawn(async move {
            while !tx.is_closed() {
                let mut stream = match meta.watch().await {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::info!(error = %e, "no MongoDB change stream; the store revision is polled");
                        return;
                    }
                };
                while let Some(event) = stream.next().await {
                    if let Err(e) = event {
                        tracing::warn!(error = %e, "MongoDB change stream lost; reopening");
                        break;
                    }
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Some(rx)
    }

    fn load(&self, dump: &StoreDump) -> Result<(), StoreError> {
        self.block(in_transaction!(self.mongo, |s| self.load_in(s, dump)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_documents_unless_that_would_change_their_text() {
        let plain = r#"{"enabled":true,"forward":["a@b.test"],"quota":53687091200,"r":0.5}"#;
        match fields_to_bson(plain) {
            Bson::Document(d) => {
                assert_eq!(d.get_array("forward").unwrap().len(), 1);
                assert_eq!(fields_from_doc(d), plain);
            }
            other => panic!("stored as {other:?}"),
        }
        for odd in [r#"{"huge":18446744073709551615}"#, r#"{"x":{"$oid":"1"}}"#] {
            assert_eq!(fields_to_bson(odd), Bson::String(odd.into()));
        }
    }

    #[test]
    fn object_keys_split_at_the_first_slash() {
        assert_eq!(object_key(Kind::Alias, "a/b@d.test"), "alias/a/b@d.test");
    }
}
