//! The shared queue: messages and deliveries in MongoDB, so a message one node accepted
//! is delivered by another when the first dies. Leases name their node; a node whose
//! heartbeat stopped loses its leases at once instead of when they expire.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{ClientSession, Collection};

use super::db::{INLINE_BODY, now};
use super::{Delivery, DeliveryKind, Envelope, NewDelivery, Queue, QueueEntry, QueueError};
use crate::mongo::{Mongo, binary, in_transaction, index, int, text, unique};

/// Bodies larger than this are stored in chunks of this size (a document holds 16 MiB
/// at most, and smaller ones travel better).
const CHUNK: usize = 4 * 1024 * 1024;
/// A node not seen for this long (six heartbeats) is taken for dead: its leased
/// deliveries are handed to the living. The nodes' clocks must agree to well within it
/// (NTP), as for every lease.
pub const DEAD_AFTER: i64 = 60;

pub struct MongoQueue {
    mongo: Arc<Mongo>,
    /// This node's name, written on every lease it takes.
    node: String,
}

impl MongoQueue {
    /// Opens the queue beside a MongoDB store; indexes are made if missing.
    pub fn open(mongo: Arc<Mongo>, node: &str) -> Result<MongoQueue, QueueError> {
        let queue = MongoQueue {
            mongo,
            node: node.to_string(),
        };
        queue.mongo.block(queue.prepare())?;
        Ok(queue)
    }

    fn messages(&self) -> Collection<Document> {
        self.mongo.coll("queue_messages")
    }

    fn deliveries(&self) -> Collection<Document> {
        self.mongo.coll("queue_deliveries")
    }

    fn chunks(&self) -> Collection<Document> {
        self.mongo.coll("queue_chunks")
    }

    async fn prepare(&self) -> Result<(), QueueError> {
        // The id counter exists before any commit needs it: nodes that first commit at
        // the same moment must not race to create it.
        self.mongo
            .coll("counters")
            .update_one(
                doc! { "_id": "queue" },
                doc! { "$setOnInsert": { "next": 0_i64 } },
            )
            .upsert(true)
            .await?;
        let deliveries = self.deliveries();
        for keys in [
            doc! { "next_attempt_at": 1 },
            doc! { "message_id": 1 },
            doc! { "lease_token": 1 },
            doc! { "lease_holder": 1 },
        ] {
            deliveries.create_index(index(keys)).await?;
        }
        self.messages()
            .create_index(index(doc! { "received_at": 1 }))
            .await?;
        self.chunks()
            .create_index(unique(doc! { "message_id": 1, "n": 1 }))
            .await?;
        // Reports received: listed by time, bounded per domain and day as they arrive.
        let reports = self.mongo.coll("received_reports");
        for keys in [
            doc! { "received_at": 1 },
            doc! { "domain": 1, "received_at": 1 },
        ] {
            reports.create_index(index(keys)).await?;
        }
        Ok(())
    }

    /// Reserves `n` consecutive ids; returns the first. Outside the commit's transaction:
    /// every node's commits would otherwise conflict on this one document, and an id
    /// lost to an aborted commit costs nothing.
    async fn ids(&self, n: usize) -> Result<i64, QueueError> {
        let counter = self
            .mongo
            .coll("counters")
            .find_one_and_update(
                doc! { "_id": "queue" },
                doc! { "$inc": { "next": n as i64 } },
            )
            .return_document(ReturnDocument::After)
            .await?
            .ok_or_else(|| QueueError::Data("the queue id counter is missing".into()))?;
        Ok(int(&counter, "next") - n as i64 + 1)
    }

    async fn commit_in(
        &self,
        s: &mut ClientSession,
        batch: &[(Envelope, Vec<u8>, Vec<NewDelivery>)],
        finished: &[i64],
    ) -> Result<Vec<i64>, QueueError> {
        let mut ids = Vec::with_capacity(batch.len());
        if !batch.is_empty() {
            let count = batch.len() + batch.iter().map(|(_, _, d)| d.len()).sum::<usize>();
            let mut next = self.ids(count).await?;
            let now = now();
            let (mut messages, mut deliveries, mut chunks) = (Vec::new(), Vec::new(), Vec::new());
            for (envelope, body, new) in batch {
                let id = next;
                next += 1;
                let env =
                    serde_json::to_string(envelope).map_err(|e| QueueError::Data(e.to_string()))?;
                let mut m = doc! {
                    "_id": id,
                    "received_at": now,
                    "envelope": env,
                    "mail_from": &envelope.mail_from,
                    "size": body.len() as i64,
                    "bounced": false,
                    "delay_notified": false,
                    // Deliveries still to do: the last one done takes the message.
                    "remaining": new.len() as i64,
                };
                if body.len() <= CHUNK {
                    m.insert("body", binary(body));
                } else {
                    for (n, part) in body.chunks(CHUNK).enumerate() {
                        chunks.push(doc! { "message_id": id, "n": n as i64, "data": binary(part) });
                    }
                }
                messages.push(m);
                for d in new {
                    deliveries.push(doc! {
                        "_id": next,
                        "message_id": id,
                        "kind": d.kind.as_str(),
                        "target": &d.target,
                        "alias": &d.alias,
                        "prefix": &d.prefix,
                        "prefix_7bit": &d.prefix_7bit,
                        "from_rewrite": &d.from_rewrite,
                        "folder": &d.folder,
                        "attempts": 0_i64,
                        "next_attempt_at": now,
                        "leased_until": 0_i64,
                        "lease_holder": "",
                        "dsn": serde_json::to_string(&d.dsn).map_err(|e| QueueError::Data(e.to_string()))?,
                    });
                    next += 1;
                }
                ids.push(id);
            }
            self.messages()
                .insert_many(&messages)
                .session(&mut *s)
                .await?;
            if !deliveries.is_empty() {
                self.deliveries()
                    .insert_many(&deliveries)
                    .session(&mut *s)
                    .await?;
            }
            if !chunks.is_empty() {
                self.chunks().insert_many(&chunks).session(&mut *s).await?;
            }
        }
        for &delivery in finished {
            self.remove_in(s, delivery).await?;
        }
        Ok(ids)
    }

    /// Deletes a delivery, and its message when it was the last; whether it existed.
    async fn remove_in(&self, s: &mut ClientSession, delivery: i64) -> Result<bool, QueueError> {
        let Some(d) = self
            .deliveries()
            .find_one_and_delete(doc! { "_id": delivery })
            .session(&mut *s)
            .await?
        else {
            return Ok(false);
        };
        let message = int(&d, "message_id");
        // A count kept on the message, not a count of deliveries: two nodes finishing a
        // message's last two deliveries at once both write this document, so MongoDB
        // sees the conflict and one of them retries and removes the message.
        let left = self
            .messages()
            .find_one_and_update(
                doc! { "_id": message },
                doc! { "$inc": { "remaining": -1_i64 } },
            )
            .return_document(ReturnDocument::After)
            .session(&mut *s)
            .await?
            .map_or(0, |m| int(&m, "remaining"));
        if left <= 0 {
            self.messages()
                .delete_one(doc! { "_id": message })
                .session(&mut *s)
                .await?;
            self.chunks()
                .delete_many(doc! { "message_id": message })
                .session(&mut *s)
                .await?;
        }
        Ok(true)
    }

    /// Nodes whose heartbeat stopped (other than this one).
    async fn dead_nodes(&self, now: i64) -> Result<Vec<String>, QueueError> {
        let nodes: Vec<Document> = self
            .mongo
            .coll("nodes")
            .find(doc! { "last_seen": { "$lt": now - DEAD_AFTER } })
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(nodes
            .iter()
            .filter_map(|d| d.get_str("_id").ok())
            .filter(|n| *n != self.node)
            .map(str::to_string)
            .collect())
    }

    async fn take_due_now(
        &self,
        limit: usize,
        lease_secs: i64,
    ) -> Result<Vec<Delivery>, QueueError> {
        let now = now();
        // A node whose own heartbeat has not been written for a while may already look
        // dead to the others, who take over its deliveries: it starts no new ones.
        let me = self
            .mongo
            .coll("nodes")
            .find_one(doc! { "_id": &self.node })
            .await?;
        if me.is_some_and(|d| int(&d, "last_seen") < now - DEAD_AFTER / 2) {
            return Ok(Vec::new());
        }
        let dead = self.dead_nodes(now).await?;
        let takeable = doc! {
            "next_attempt_at": { "$lte": now },
            "$or": [
                { "leased_until": { "$lte": now } },
                { "lease_holder": { "$in": &dead } },
            ],
        };
        let candidates: Vec<Document> = self
            .deliveries()
            .find(takeable.clone())
            .sort(doc! { "next_attempt_at": 1 })
            .limit(limit as i64)
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = candidates.iter().map(|d| int(d, "_id")).collect();
        // One update leases what is still takeable among them, stamped with a token of
        // this call: what carries the token afterwards is this node's, whatever another
        // node took in between.
        let mut random = [0u8; 12];
        let _ = aws_lc_rs::rand::fill(&mut random);
        let token = hex::encode(random);
        let mut filter = takeable;
        filter.insert("_id", doc! { "$in": &ids });
        self.deliveries()
            .update_many(
                filter,
                doc! { "$set": {
                    "leased_until": now + lease_secs,
                    "lease_holder": &self.node,
                    "lease_token": &token,
                } },
            )
            .await?;
        let leased: Vec<Document> = self
            .deliveries()
            .find(doc! { "lease_token": &token })
            .sort(doc! { "next_attempt_at": 1 })
            .await?
            .try_collect()
            .await?;
        let message_ids: Vec<i64> = leased.iter().map(|d| int(d, "message_id")).collect();
        // Envelopes first, bodies only of the small messages: a batch of large ones must
        // not be read whole here.
        let mut messages: HashMap<i64, Document> = self
            .messages()
            .find(doc! { "_id": { "$in": &message_ids } })
            .projection(doc! { "body": 0 })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .into_iter()
            .map(|m| (int(&m, "_id"), m))
            .collect();
        let small: Vec<i64> = messages
            .values()
            .filter(|m| int(m, "size") <= INLINE_BODY)
            .map(|m| int(m, "_id"))
            .collect();
        if !small.is_empty() {
            let bodies: Vec<Document> = self
                .messages()
                .find(doc! { "_id": { "$in": &small } })
                .projection(doc! { "body": 1 })
                .await?
                .try_collect()
                .await?;
            for b in bodies {
                if let (Some(m), Some(body)) = (messages.get_mut(&int(&b, "_id")), b.get("body")) {
                    m.insert("body", body.clone());
                }
            }
        }
        let mut out = Vec::with_capacity(leased.len());
        for d in leased {
            let Some(m) = messages.get(&int(&d, "message_id")) else {
                continue;
            };
            let body = match m.get("body") {
                Some(Bson::Binary(b)) => Some(b.bytes.clone()),
                _ => None,
            };
            out.push(Delivery {
                id: int(&d, "_id"),
                message_id: int(&d, "message_id"),
                kind: DeliveryKind::parse(d.get_str("kind").unwrap_or_default())
                    .ok_or_else(|| QueueError::Data(format!("delivery kind in {d}")))?,
                target: text(&d, "target"),
                alias: text(&d, "alias"),
                prefix: text(&d, "prefix"),
                prefix_7bit: text(&d, "prefix_7bit"),
                from_rewrite: text(&d, "from_rewrite"),
                folder: text(&d, "folder"),
                attempts: int(&d, "attempts").max(0) as u32,
                mail_from: text(m, "mail_from"),
                received_at: int(m, "received_at"),
                interrupted: int(&d, "interrupted").max(0) as u32,
                body,
                dsn: serde_json::from_str(d.get_str("dsn").unwrap_or_default()).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    async fn body_now(&self, message_id: i64) -> Result<Option<Vec<u8>>, QueueError> {
        let Some(m) = self.messages().find_one(doc! { "_id": message_id }).await? else {
            return Ok(None);
        };
        if let Some(Bson::Binary(b)) = m.get("body") {
            return Ok(Some(b.bytes.clone()));
        }
        let parts: Vec<Document> = self
            .chunks()
            .find(doc! { "message_id": message_id })
            .sort(doc! { "n": 1 })
            .await?
            .try_collect()
            .await?;
        let mut body = Vec::with_capacity(int(&m, "size").max(0) as usize);
        for p in parts {
            if let Some(Bson::Binary(b)) = p.get("data") {
                body.extend_from_slice(&b.bytes);
            }
        }
        if body.len() as i64 != int(&m, "size") {
            return Err(QueueError::Data(format!(
                "message {message_id}: {} of {} bytes stored",
                body.len(),
                int(&m, "size")
            )));
        }
        Ok(Some(body))
    }

    async fn claim(&self, message_id: i64, flag: &str) -> Result<bool, QueueError> {
        let result = self
            .messages()
            .update_one(
                doc! { "_id": message_id, flag: false },
                doc! { "$set": { flag: true } },
            )
            .await?;
        Ok(result.modified_count == 1)
    }

    async fn list_now(&self, limit: usize) -> Result<Vec<QueueEntry>, QueueError> {
        let deliveries: Vec<Document> = self
            .deliveries()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .limit(limit.min(i64::MAX as usize) as i64)
            .await?
            .try_collect()
            .await?;
        let ids: Vec<i64> = deliveries.iter().map(|d| int(d, "message_id")).collect();
        let messages: HashMap<i64, Document> = self
            .messages()
            .find(doc! { "_id": { "$in": &ids } })
            .projection(doc! { "mail_from": 1, "size": 1 })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .into_iter()
            .map(|m| (int(&m, "_id"), m))
            .collect();
        Ok(deliveries
            .iter()
            .map(|d| {
                let m = messages.get(&int(d, "message_id"));
                QueueEntry {
                    id: int(d, "_id"),
                    message_id: int(d, "message_id"),
                    kind: DeliveryKind::parse(d.get_str("kind").unwrap_or_default())
                        .unwrap_or(DeliveryKind::Forward),
                    target: text(d, "target"),
                    mail_from: m.map(|m| text(m, "mail_from")).unwrap_or_default(),
                    attempts: int(d, "attempts").max(0) as u32,
                    next_attempt_at: int(d, "next_attempt_at"),
                    last_error: d.get_str("last_error").ok().map(str::to_string),
                    size: m.map(|m| int(m, "size")).unwrap_or(0),
                    held: d.get_str("held").ok().map(str::to_string),
                }
            })
            .collect())
    }

    async fn oldest_now(&self) -> Result<Option<i64>, QueueError> {
        // Messages leave with their last delivery, so the oldest message is nearly always
        // one still waiting; the few without deliveries are skipped.
        let mut cursor = self
            .messages()
            .find(doc! {})
            .sort(doc! { "received_at": 1 })
            .projection(doc! { "received_at": 1 })
            .await?;
        while let Some(m) = cursor.try_next().await? {
            let waiting = self
                .deliveries()
                .count_documents(doc! { "message_id": int(&m, "_id") })
                .limit(1)
                .await?;
            if waiting > 0 {
                return Ok(Some(int(&m, "received_at")));
            }
        }
        Ok(None)
    }

    async fn next_due_now(&self) -> Result<Option<i64>, QueueError> {
        let now = now();
        let first_free = self
            .deliveries()
            .find_one(doc! { "leased_until": { "$lte": now } })
            .sort(doc! { "next_attempt_at": 1 })
            .await?
            .map(|d| int(&d, "next_attempt_at"));
        let first_leased = self
            .deliveries()
            .find_one(doc! { "leased_until": { "$gt": now } })
            .sort(doc! { "leased_until": 1 })
            .await?
            .map(|d| int(&d, "leased_until").max(int(&d, "next_attempt_at")));
        // A dead node's leases are takeable now.
        let dead = self.dead_nodes(now).await?;
        let orphaned = if dead.is_empty() {
            None
        } else {
            self.deliveries()
                .find_one(doc! { "lease_holder": { "$in": &dead }, "leased_until": { "$gt": now } })
                .sort(doc! { "next_attempt_at": 1 })
                .await?
                .map(|d| int(&d, "next_attempt_at"))
        };
        Ok([first_free, first_leased, orphaned]
            .into_iter()
            .flatten()
            .min()
            .map(|t| (t - now).max(0)))
    }
}

impl Queue for MongoQueue {
    fn kind(&self) -> &'static str {
        "mongodb"
    }

    fn commit(
        &self,
        batch: &[(Envelope, Vec<u8>, Vec<NewDelivery>)],
        finished: &[i64],
    ) -> Result<Vec<i64>, QueueError> {
        // One transaction, acknowledged by a majority's journal: the 250 this commit
        // answers survives the loss of this node and of the primary.
        self.mongo
            .block(in_transaction!(self.mongo, |s| self.commit_in(s, batch, finished)))
    }

    fn take_due(&self, limit: usize, lease_secs: i64) -> Result<Vec<Delivery>, QueueError> {
        self.mongo.block(self.take_due_now(limit, lease_secs))
    }

    fn claim_bounce(&self, message_id: i64) -> Result<bool, QueueError> {
        self.mongo.block(self.claim(message_id, "bounced"))
    }

    fn claim_delay_notice(&self, message_id: i64) -> Result<bool, QueueError> {
        self.mongo.block(self.claim(message_id, "delay_notified"))
    }

    fn envelope(&self, message_id: i64) -> Result<Option<Envelope>, QueueError> {
        let found = self.mongo.block(async {
            self.messages()
                .find_one(doc! { "_id": message_id })
                .projection(doc! { "envelope": 1 })
                .await
        })?;
        found
            .map(|m| {
                serde_json::from_str(m.get_str("envelope").unwrap_or_default())
                    .map_err(|e| QueueError::Data(e.to_string()))
            })
            .transpose()
    }

    fn release_leases(&self) -> Result<usize, QueueError> {
        let result = self.mongo.block(async {
            self.deliveries()
                .update_many(
                    doc! { "lease_holder": &self.node, "leased_until": { "$gt": 0 } },
                    doc! { "$set": { "leased_until": 0_i64 } },
                )
                .await
        })?;
        Ok(result.modified_count as usize)
    }

    fn body(&self, message_id: i64) -> Result<Option<Vec<u8>>, QueueError> {
        self.mongo.block(self.body_now(message_id))
    }

    fn retry_later(&self, delivery_id: i64, next_at: i64, error: &str) -> Result<(), QueueError> {
        self.mongo.block(async {
            self.deliveries()
                .update_one(
                    doc! { "_id": delivery_id },
                    doc! {
                        "$inc": { "attempts": 1_i64 },
                        "$set": { "next_attempt_at": next_at, "leased_until": 0_i64, "last_error": error, "interrupted": 0_i64 },
                    },
                )
                .await
        })?;
        Ok(())
    }

    fn retry_now(&self, delivery_id: i64) -> Result<bool, QueueError> {
        let result = self.mongo.block(async {
            self.deliveries()
                .update_one(
                    doc! { "_id": delivery_id },
                    doc! {
                        "$set": { "next_attempt_at": now(), "leased_until": 0_i64, "interrupted": 0_i64 },
                        "$unset": { "held": "" },
                    },
                )
                .await
        })?;
        Ok(result.matched_count > 0)
    }

    fn begin_attempt(&self, delivery_id: i64) -> Result<(), QueueError> {
        self.mongo.block(async {
            self.deliveries()
                .update_one(
                    doc! { "_id": delivery_id },
                    doc! { "$inc": { "interrupted": 1_i64 } },
                )
                .await
        })?;
        Ok(())
    }

    fn hold(&self, delivery_id: i64, reason: &str) -> Result<(), QueueError> {
        self.mongo.block(async {
            self.deliveries()
                .update_one(
                    doc! { "_id": delivery_id },
                    doc! { "$set": {
                        "held": reason,
                        "last_error": reason,
                        "next_attempt_at": super::db::HELD_UNTIL,
                        "leased_until": 0_i64,
                    } },
                )
                .await
        })?;
        Ok(())
    }

    fn remove(&self, delivery_id: i64) -> Result<bool, QueueError> {
        self.mongo
            .block(in_transaction!(self.mongo, |s| self.remove_in(s, delivery_id)))
    }

    fn list(&self, limit: usize) -> Result<Vec<QueueEntry>, QueueError> {
        self.mongo.block(self.list_now(limit))
    }

    fn deliveries_of(&self, message_id: i64) -> Result<Vec<i64>, QueueError> {
        self.mongo.block(async {
            let found: Vec<Document> = self
                .deliveries()
                .find(doc! { "message_id": message_id })
                .projection(doc! { "_id": 1 })
                .sort(doc! { "_id": 1 })
                .await?
                .try_collect()
                .await?;
            Ok(found.iter().map(|d| int(d, "_id")).collect())
        })
    }

    fn pending(&self) -> Result<u64, QueueError> {
        Ok(self
            .mongo
            .block(async { self.deliveries().count_documents(doc! {}).await })?)
    }

    fn held(&self) -> Result<u64, QueueError> {
        Ok(self.mongo.block(async {
            self.deliveries()
                .count_documents(doc! { "held": { "$exists": true } })
                .await
        })?)
    }

    fn oldest_received_at(&self) -> Result<Option<i64>, QueueError> {
        self.mongo.block(self.oldest_now())
    }

    fn next_due_in(&self) -> Result<Option<i64>, QueueError> {
        self.mongo.block(self.next_due_now())
    }

    fn sts_policy(
        &self,
        domain: &str,
    ) -> Result<Option<super::tls_policy::StoredPolicy>, QueueError> {
        let found = self.mongo.block(async {
            self.mongo
                .coll("sts_policies")
                .find_one(doc! { "_id": domain })
                .await
        })?;
        Ok(found.map(|d| super::tls_policy::StoredPolicy {
            domain: domain.to_string(),
            id: d.get_str("id").unwrap_or_default().to_string(),
            text: d.get_str("text").unwrap_or_default().to_string(),
            fetched_at: d.get_i64("fetched_at").unwrap_or_default(),
        }))
    }

    fn add_tls_sessions(
        &self,
        sessions: &[super::tls_policy::tally::Sessions],
    ) -> Result<(), QueueError> {
        self.mongo.block(async {
            let coll = self.mongo.coll("tls_sessions");
            for s in sessions {
                let k = &s.key;
                coll.update_one(
                    doc! { "_id": {
                        "day": &k.day, "domain": &k.domain, "policy_type": &k.policy_type,
                        "policy": &k.policy, "mx_host": &k.mx_host,
                        "receiving_ip": &k.receiving_ip, "sending_ip": &k.sending_ip,
                        "outcome": k.outcome.result_type().unwrap_or("success"),
                    } },
                    doc! { "$inc": { "count": s.count as i64 } },
                )
                .upsert(true)
                .await?;
            }
            Ok::<(), mongodb::error::Error>(())
        })?;
        Ok(())
    }

    fn tls_sessions(
        &self,
        day: &str,
    ) -> Result<Vec<super::tls_policy::tally::Sessions>, QueueError> {
        use super::tls_policy::tally::{Outcome, SessionKey, Sessions};
        let found: Vec<Document> = self.mongo.block(async {
            self.mongo
                .coll("tls_sessions")
                .find(doc! { "_id.day": day })
                .await?
                .try_collect()
                .await
        })?;
        Ok(found
            .iter()
            .filter_map(|d| {
                let id = d.get_document("_id").ok()?;
                let text = |f: &str| id.get_str(f).unwrap_or_default().to_string();
                Some(Sessions {
                    key: SessionKey {
                        day: text("day"),
                        domain: text("domain"),
                        policy_type: text("policy_type"),
                        policy: text("policy"),
                        mx_host: text("mx_host"),
                        receiving_ip: text("receiving_ip"),
                        sending_ip: text("sending_ip"),
                        outcome: Outcome::parse(id.get_str("outcome").ok()?)?,
                    },
                    count: d.get_i64("count").unwrap_or_default().max(0) as u64,
                })
            })
            .collect())
    }

    fn claim_report(&self, kind: &str, day: &str, domain: &str) -> Result<bool, QueueError> {
        let claimed = self.mongo.block(async {
            self.mongo
                .coll("sent_reports")
                .update_one(
                    doc! { "_id": { "kind": kind, "day": day, "domain": domain } },
                    doc! { "$setOnInsert": { "claimed_at": crate::queue::now_unix() } },
                )
                .upsert(true)
                .await
        })?;
        Ok(claimed.upserted_id.is_some())
    }

    fn add_report_rows(
        &self,
        kind: &str,
        rows: &[super::dmarc_report::Counted],
    ) -> Result<(), QueueError> {
        use sha2::Digest;
        self.mongo.block(async {
            let coll = self.mongo.coll("report_rows");
            for c in rows {
                // The row's text can be long; its digest keeps the key small.
                let key: String = sha2::Sha256::digest(c.row.detail.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                coll.update_one(
                    doc! { "_id": {
                        "kind": kind, "day": &c.row.day, "domain": &c.row.domain, "key": key,
                    } },
                    doc! {
                        "$inc": { "count": c.count as i64 },
                        "$setOnInsert": { "detail": &c.row.detail },
                    },
                )
                .upsert(true)
                .await?;
            }
            Ok::<(), mongodb::error::Error>(())
        })?;
        Ok(())
    }

    fn report_rows(
        &self,
        kind: &str,
        day: &str,
    ) -> Result<Vec<super::dmarc_report::Counted>, QueueError> {
        use super::dmarc_report::{Counted, Row};
        let found: Vec<Document> = self.mongo.block(async {
            self.mongo
                .coll("report_rows")
                .find(doc! { "_id.kind": kind, "_id.day": day })
                .await?
                .try_collect()
                .await
        })?;
        Ok(found
            .iter()
            .filter_map(|d| {
                let id = d.get_document("_id").ok()?;
                let text = |f: &str| id.get_str(f).unwrap_or_default().to_string();
                Some(Counted {
                    row: Row {
                        day: text("day"),
                        domain: text("domain"),
                        detail: d.get_str("detail").unwrap_or_default().to_string(),
                    },
                    count: d.get_i64("count").unwrap_or_default().max(0) as u64,
                })
            })
            .collect())
    }

    fn add_received_report(
        &self,
        r: &super::dmarc_report::received::Received,
    ) -> Result<bool, QueueError> {
        let added = self.mongo.block(async {
            self.mongo
                .coll("received_reports")
                .update_one(
                    doc! { "_id": &r.id },
                    doc! { "$setOnInsert": {
                        "kind": &r.kind, "domain": &r.domain, "org": &r.org,
                        "report_id": &r.report_id, "begin": r.begin, "end": r.end,
                        "received_at": r.received_at, "body": &r.body,
                        "size": r.body.len() as i64, "summary": r.summary.to_text(),
                    } },
                )
                .upsert(true)
                .await
        })?;
        Ok(added.upserted_id.is_some())
    }

    fn received_reports(
        &self,
        since: i64,
    ) -> Result<Vec<super::dmarc_report::received::Received>, QueueError> {
        let found: Vec<Document> = self.mongo.block(async {
            self.mongo
                .coll("received_reports")
                .find(doc! { "received_at": { "$gte": since } })
                .projection(doc! { "body": 0 })
                .sort(doc! { "received_at": -1, "_id": 1 })
                .limit(super::RECEIVED_REPORTS_LISTED as i64)
                .await?
                .try_collect()
                .await
        })?;
        Ok(found.iter().map(received_of).collect())
    }

    fn received_report(
        &self,
        id: &str,
    ) -> Result<Option<super::dmarc_report::received::Received>, QueueError> {
        let found: Option<Document> = self.mongo.block(async {
            self.mongo
                .coll("received_reports")
                .find_one(doc! { "_id": id })
                .await
        })?;
        Ok(found.as_ref().map(received_of))
    }

    fn received_report_totals(&self, domain: &str, since: i64) -> Result<(u64, u64), QueueError> {
        let found: Vec<Document> = self.mongo.block(async {
            self.mongo
                .coll("received_reports")
                .find(doc! { "domain": domain, "received_at": { "$gte": since } })
                .projection(doc! { "size": 1 })
                .await?
                .try_collect()
                .await
        })?;
        let bytes = found
            .iter()
            .map(|d| d.get_i64("size").unwrap_or_default().max(0) as u64)
            .sum();
        Ok((found.len() as u64, bytes))
    }

    fn forget_received_reports(&self, before: i64) -> Result<(), QueueError> {
        self.mongo.block(async {
            self.mongo
                .coll("received_reports")
                .delete_many(doc! { "received_at": { "$lt": before } })
                .await
        })?;
        Ok(())
    }

    fn forget_report_rows(&self, kind: &str, day: &str) -> Result<(), QueueError> {
        self.mongo.block(async {
            self.mongo
                .coll("report_rows")
                .delete_many(doc! { "_id.kind": kind, "_id.day": { "$lt": day } })
                .await
        })?;
        Ok(())
    }

    fn forget_tls_sessions(&self, day: &str) -> Result<(), QueueError> {
        self.mongo.block(async {
            self.mongo
                .coll("tls_sessions")
                .delete_many(doc! { "_id.day": { "$lt": day } })
                .await?;
            self.mongo
                .coll("sent_reports")
                .delete_many(doc! { "_id.day": { "$lt": day } })
                .await
        })?;
        Ok(())
    }

    fn put_sts_policy(&self, p: &super::tls_policy::StoredPolicy) -> Result<(), QueueError> {
        self.mongo.block(async {
            self.mongo
                .coll("sts_policies")
                .replace_one(
                    doc! { "_id": &p.domain },
                    doc! { "_id": &p.domain, "id": &p.id, "text": &p.text, "fetched_at": p.fetched_at },
                )
                .upsert(true)
                .await
        })?;
        Ok(())
    }
}

/// A received report as the collection keeps it.
fn received_of(d: &Document) -> super::dmarc_report::received::Received {
    let text = |f: &str| d.get_str(f).unwrap_or_default().to_string();
    let number = |f: &str| d.get_i64(f).unwrap_or_default();
    super::dmarc_report::received::Received {
        id: text("_id"),
        kind: text("kind"),
        domain: text("domain"),
        org: text("org"),
        report_id: text("report_id"),
        begin: number("begin"),
        end: number("end"),
        received_at: number("received_at"),
        body: text("body"),
        summary: super::dmarc_report::received::Summary::from_text(&text("summary")),
    }
}
