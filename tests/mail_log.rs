//! The mail log on both backends: records written by two nodes into MongoDB are found by
//! either; searches match case-insensitively and literally on both; old records leave
//! after the retention (SQLite prunes them, MongoDB has a TTL index for it).

mod common;

use ferrymail::queue::log::{Entry, Event, JUNK_MARK, MailLog, Outcome};
use ferrymail::store::{MongoStore, Store};

fn entry(at: i64, event: Event, from: &str, detail: &str) -> Entry {
    Entry {
        at,
        event,
        message_id: Some(7),
        mail_from: from.into(),
        rcpt: "hello@example.test".into(),
        remote_ip: "192.0.2.1".into(),
        detail: detail.into(),
    }
}

fn now() -> i64 {
    ferrymail::queue::now_unix()
}

/// What both backends must answer the same way.
fn searches(log: &MailLog) {
    log.record(entry(
        now() - 2,
        Event::Accepted,
        "Alice@Sender.test",
        "250 2.0.0 queued",
    ));
    log.record(entry(
        now() - 1,
        Event::Rejected,
        "bob@sender.test",
        "550 5.1.1 No such user (a.b*c)",
    ));
    log.record(entry(
        now(),
        Event::Delivered,
        "alice@sender.test",
        "250 ok",
    ));
    log.flush();
    let all = log.recent(10).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].event, Event::Delivered, "newest first");
    let alice = log.search("ALICE@", None, 10).unwrap();
    assert_eq!(alice.len(), 2, "case-insensitive");
    assert_eq!(
        log.search("a.b*c", None, 10).unwrap().len(),
        1,
        "literal, not a pattern"
    );
    assert_eq!(log.search("a%b", None, 10).unwrap().len(), 0);
    let rejected = log.search("", Some(Event::Rejected), 10).unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].mail_from, "bob@sender.test");
    assert_eq!(rejected[0].message_id, Some(7));
    assert_eq!(log.search("", None, 1).unwrap().len(), 1);
    // The overview's chart: the junk among the accepted counts as spam.
    log.record(entry(
        now(),
        Event::Accepted,
        "spammer@sender.test",
        &format!("{JUNK_MARK}spam score 9.00 (add header)"),
    ));
    log.flush();
    // This hour and the last (the records may straddle an hour's start).
    let counts = log.per_bucket(now(), 3600, 2).unwrap();
    let outcome = |o: Outcome| {
        let i = Outcome::ALL.iter().position(|x| *x == o).unwrap();
        counts[0][i] + counts[1][i]
    };
    assert_eq!(
        (
            outcome(Outcome::Accepted),
            outcome(Outcome::Spam),
            outcome(Outcome::Rejected),
            outcome(Outcome::Delivered)
        ),
        (1, 1, 1, 1)
    );
    // The queue's depth, sampled: the deepest per bucket, None where nothing was noted.
    // Half past this hour: the samples fall in the hours meant.
    let t = now() / 3600 * 3600 + 1800;
    log.sample_queue(t - 3600, 7);
    log.sample_queue(t - 2, 3);
    log.sample_queue(t - 1, 5);
    log.flush();
    assert_eq!(
        log.queue_depth(t, 3600, 3).unwrap(),
        [None, Some(7), Some(5)]
    );
}

#[test]
fn sqlite_log_searches_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = MailLog::open(dir.path(), 3600).unwrap();
        searches(&log);
        log.record(entry(
            now() - 7200,
            Event::Bounced,
            "old@sender.test",
            "expired",
        ));
        log.flush();
        assert_eq!(log.search("old@", None, 10).unwrap().len(), 1);
    }
    // Pruned when the log is next opened (and hourly while it runs).
    let log = MailLog::open(dir.path(), 3600).unwrap();
    log.record(entry(now(), Event::Accepted, "x@sender.test", "250"));
    log.flush();
    assert_eq!(log.search("old@", None, 10).unwrap().len(), 0);
    assert_eq!(log.recent(10).unwrap().len(), 5);
}

#[test]
fn mongodb_log_is_shared_by_the_nodes_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = common::mongodb(dir.path());
    let store = MongoStore::connect(&url, "ferrymail").unwrap();
    let a = MailLog::open_mongo(store.connection().unwrap(), "node-a", 30 * 86_400).unwrap();
    searches(&a);
    let b = MailLog::open_mongo(store.connection().unwrap(), "node-b", 30 * 86_400).unwrap();
    b.record(entry(
        now() + 1,
        Event::Deferred,
        "carol@sender.test",
        "451 later",
    ));
    b.flush();
    // Node a sees node b's record.
    assert_eq!(a.recent(10).unwrap()[0].mail_from, "carol@sender.test");
    // A TTL index on the record's date keeps 30 days; opening with another retention
    // replaces it.
    let ttl = |store: &MongoStore| -> Option<i64> {
        let mongo = store.connection().unwrap();
        mongo.block(async {
            use futures_util::TryStreamExt;
            let indexes: Vec<mongodb::IndexModel> = mongo
                .coll("mail_log")
                .list_indexes()
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            indexes.iter().find_map(|i| {
                let o = i.options.as_ref()?;
                (o.name.as_deref() == Some("retention"))
                    .then(|| o.expire_after.map(|d| d.as_secs() as i64))
                    .flatten()
            })
        })
    };
    assert_eq!(ttl(&store), Some(30 * 86_400));
    let _c = MailLog::open_mongo(store.connection().unwrap(), "node-c", 7 * 86_400).unwrap();
    assert_eq!(ttl(&store), Some(7 * 86_400));
}
