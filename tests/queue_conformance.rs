//! The queue conformance suite: every test written once against the `Queue` trait and run
//! on the SQLite queue and on the MongoDB queue (secantusd on loopback); then what only a
//! shared queue does: two nodes never take the same delivery, and a dead node's leased
//! deliveries go to a living one.

mod common;

use std::sync::Arc;

use common::Process;
use ferrymail::queue::{DeliveryKind, Dsn, Envelope, MongoQueue, NewDelivery, Queue, QueueDb};
use ferrymail::store::{MongoStore, NodeInfo, Store};

struct Backend {
    queue: Arc<dyn Queue>,
    _dir: tempfile::TempDir,
    _server: Option<Process>,
}

fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    Backend {
        queue: Arc::new(QueueDb::open(dir.path()).unwrap()),
        _dir: dir,
        _server: None,
    }
}

fn mongodb() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = common::mongodb(dir.path());
    let store = MongoStore::connect(&url, "ferrymail").unwrap();
    let queue = MongoQueue::open(store.connection().unwrap(), "node-a").unwrap();
    Backend {
        queue: Arc::new(queue),
        _dir: dir,
        _server: Some(server),
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $name() { super::$name(super::sqlite().queue.as_ref()); })*
        }
        mod on_mongodb {
            $(#[test] fn $name() { super::$name(super::mongodb().queue.as_ref()); })*
        }
    };
}

conformance!(
    deliveries_round_trip_lease_retry_and_finish,
    a_message_bounces_once,
    large_bodies_come_back_whole,
    listing_and_removing,
    interrupted_attempts_are_counted_and_held_deliveries_wait_for_a_hand,
    mta_sts_policies_are_kept_per_domain_and_replaced,
    tls_session_counts_add_up_per_day_and_old_days_go,
    report_rows_add_up_per_kind_and_day_and_old_days_go,
    received_reports_are_kept_once_listed_newest_first_counted_and_forgotten,
);

fn envelope() -> Envelope {
    Envelope {
        mail_from: "a@b.test".into(),
        rcpt_to: vec!["x@d.test".into()],
        remote_ip: "127.0.0.1".into(),
        helo: "h".into(),
        tls: false,
        ret_full: true,
        envid: Some("E1".into()),
        no_notices: false,
        require_tls: true,
    }
}

fn forward(target: &str) -> NewDelivery {
    NewDelivery {
        kind: DeliveryKind::Forward,
        target: target.into(),
        alias: "x@d.test".into(),
        prefix: "ARC-Seal: x\r\n".into(),
        prefix_7bit: "ARC-Seal: y\r\n".into(),
        from_rewrite: "x@d.test".into(),
        folder: String::new(),
        dsn: Dsn {
            rcpt: "x@d.test".into(),
            notify: smtp_proto::RCPT_NOTIFY_FAILURE,
            orcpt: None,
        },
    }
}

fn now() -> i64 {
    ferrymail::queue::now_unix()
}

fn deliveries_round_trip_lease_retry_and_finish(q: &dyn Queue) {
    let ids = q
        .commit(
            &[(envelope(), b"body".to_vec(), vec![forward("t@e.test")])],
            &[],
        )
        .unwrap();
    let due = q.take_due(10, 600).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].message_id, ids[0]);
    assert_eq!(
        (
            due[0].prefix.as_str(),
            due[0].prefix_7bit.as_str(),
            due[0].from_rewrite.as_str()
        ),
        ("ARC-Seal: x\r\n", "ARC-Seal: y\r\n", "x@d.test")
    );
    assert_eq!(due[0].mail_from, "a@b.test");
    assert_eq!(
        due[0].body.as_deref(),
        Some(&b"body"[..]),
        "small bodies come along"
    );
    assert_eq!(due[0].dsn.notify, smtp_proto::RCPT_NOTIFY_FAILURE);
    let stored = q.envelope(ids[0]).unwrap().unwrap();
    assert_eq!(
        (stored.ret_full, stored.envid.as_deref(), stored.require_tls),
        (true, Some("E1"), true),
        "what the sender asked of the message's journey is kept with it"
    );
    assert!(q.claim_delay_notice(ids[0]).unwrap());
    assert!(
        !q.claim_delay_notice(ids[0]).unwrap(),
        "one delay notice per message"
    );
    assert!(
        q.take_due(10, 600).unwrap().is_empty(),
        "a leased delivery is not handed out twice"
    );
    assert!(
        q.next_due_in().unwrap().unwrap() > 500,
        "due when the lease ends"
    );
    q.retry_later(due[0].id, now() + 3600, "421 busy").unwrap();
    assert!(
        q.take_due(10, 600).unwrap().is_empty(),
        "not due before its retry time"
    );
    let listed = q.list(10).unwrap();
    assert_eq!(listed[0].last_error.as_deref(), Some("421 busy"));
    assert_eq!(listed[0].attempts, 1);
    assert!(q.retry_now(due[0].id).unwrap());
    assert_eq!(q.next_due_in().unwrap(), Some(0));
    let again = q.take_due(10, 600).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    // A lease released at restart is due at once.
    assert_eq!(q.release_leases().unwrap(), 1);
    assert_eq!(q.take_due(10, 600).unwrap().len(), 1);
    q.commit(&[], &[due[0].id]).unwrap();
    assert_eq!(q.pending().unwrap(), 0);
    assert_eq!(q.next_due_in().unwrap(), None);
    assert_eq!(
        q.body(ids[0]).unwrap(),
        None,
        "the message goes with its last delivery"
    );
}

fn a_message_bounces_once(q: &dyn Queue) {
    let ids = q
        .commit(&[(envelope(), b"body".to_vec(), vec![])], &[])
        .unwrap();
    assert!(q.claim_bounce(ids[0]).unwrap());
    assert!(!q.claim_bounce(ids[0]).unwrap());
}

fn large_bodies_come_back_whole(q: &dyn Queue) {
    // Larger than a MongoDB document: stored in chunks there.
    let body: Vec<u8> = (0..18 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let ids = q
        .commit(
            &[
                (
                    envelope(),
                    body.clone(),
                    vec![forward("a@e.test"), forward("b@e.test")],
                ),
                (envelope(), b"small".to_vec(), vec![forward("c@e.test")]),
            ],
            &[],
        )
        .unwrap();
    assert_eq!(ids.len(), 2);
    let due = q.take_due(10, 600).unwrap();
    assert_eq!(due.len(), 3);
    let big: Vec<_> = due.iter().filter(|d| d.message_id == ids[0]).collect();
    assert_eq!(big.len(), 2);
    assert!(
        big[0].body.is_none(),
        "large bodies are read when their attempt starts"
    );
    assert_eq!(q.body(ids[0]).unwrap().as_deref(), Some(&body[..]));
    assert_eq!(
        q.oldest_received_at().unwrap().map(|t| (now() - t) < 60),
        Some(true)
    );
    // The message stays until its last delivery is done.
    q.commit(&[], &[big[0].id]).unwrap();
    assert_eq!(q.body(ids[0]).unwrap().map(|b| b.len()), Some(body.len()));
    q.commit(&[], &[big[1].id]).unwrap();
    assert_eq!(q.body(ids[0]).unwrap(), None);
    assert_eq!(q.pending().unwrap(), 1);
}

fn listing_and_removing(q: &dyn Queue) {
    let ids = q
        .commit(
            &[(
                envelope(),
                b"0123456789".to_vec(),
                vec![forward("a@e.test"), forward("b@e.test")],
            )],
            &[],
        )
        .unwrap();
    let listed = q.list(10).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (
            listed[0].message_id,
            listed[0].size,
            listed[0].mail_from.as_str()
        ),
        (ids[0], 10, "a@b.test")
    );
    assert_eq!(listed[1].target, "b@e.test");
    // A message's deliveries are found by its id, past any page `list` shows.
    assert_eq!(
        q.deliveries_of(ids[0]).unwrap(),
        vec![listed[0].id, listed[1].id]
    );
    assert_eq!(q.deliveries_of(ids[0] + 1000).unwrap(), Vec::<i64>::new());
    assert!(q.remove(listed[0].id).unwrap());
    assert_eq!(q.deliveries_of(ids[0]).unwrap(), vec![listed[1].id]);
    assert!(!q.remove(listed[0].id).unwrap(), "gone already");
    assert!(q.body(ids[0]).unwrap().is_some(), "one delivery left");
    assert!(q.remove(listed[1].id).unwrap());
    assert_eq!(q.body(ids[0]).unwrap(), None);
    assert!(!q.retry_now(listed[1].id).unwrap());
}

fn interrupted_attempts_are_counted_and_held_deliveries_wait_for_a_hand(q: &dyn Queue) {
    q.commit(
        &[(envelope(), b"body".to_vec(), vec![forward("t@e.test")])],
        &[],
    )
    .unwrap();
    let first = q.take_due(10, 600).unwrap().remove(0);
    assert_eq!(first.interrupted, 0);
    // The process dies during the attempt: the mark stays, and the restart releases it.
    q.begin_attempt(first.id).unwrap();
    q.release_leases().unwrap();
    let second = q.take_due(10, 600).unwrap().remove(0);
    assert_eq!(second.interrupted, 1);
    // An attempt that ends (here: a retry) clears the count.
    q.begin_attempt(second.id).unwrap();
    q.retry_later(second.id, now(), "451 later").unwrap();
    let third = q.take_due(10, 600).unwrap().remove(0);
    assert_eq!(third.interrupted, 0);
    // Held: listed with why, counted, never due, until retried by hand.
    q.hold(third.id, "held: processing failed: test").unwrap();
    assert!(q.take_due(10, 600).unwrap().is_empty());
    let listed = q.list(10).unwrap();
    assert_eq!(
        listed[0].held.as_deref(),
        Some("held: processing failed: test")
    );
    assert_eq!((q.pending().unwrap(), q.held().unwrap()), (1, 1));
    assert!(q.next_due_in().unwrap().unwrap() > 86_400 * 365);
    assert!(q.retry_now(third.id).unwrap());
    assert_eq!(q.held().unwrap(), 0);
    let again = q.take_due(10, 600).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].interrupted, 0);
    assert_eq!(q.list(10).unwrap()[0].held, None);
}

fn mta_sts_policies_are_kept_per_domain_and_replaced(q: &dyn Queue) {
    use ferrymail::queue::tls_policy::StoredPolicy;
    assert_eq!(q.sts_policy("example.com").unwrap(), None);
    let first = StoredPolicy {
        domain: "example.com".into(),
        id: "1".into(),
        text: "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 600\n".into(),
        fetched_at: 1_000,
    };
    q.put_sts_policy(&first).unwrap();
    let other = StoredPolicy {
        domain: "example.org".into(),
        ..first.clone()
    };
    q.put_sts_policy(&other).unwrap();
    assert_eq!(q.sts_policy("example.com").unwrap().as_ref(), Some(&first));
    // A new id replaces the domain's policy; the other domain keeps its own.
    let second = StoredPolicy {
        id: "2".into(),
        text: first.text.replace("testing", "enforce"),
        fetched_at: 2_000,
        ..first.clone()
    };
    q.put_sts_policy(&second).unwrap();
    assert_eq!(q.sts_policy("example.com").unwrap(), Some(second));
    assert_eq!(q.sts_policy("example.org").unwrap(), Some(other));
}

fn tls_session_counts_add_up_per_day_and_old_days_go(q: &dyn Queue) {
    use ferrymail::queue::tls_policy::tally::{Outcome, SessionKey, Sessions};
    let key = |day: &str, outcome| SessionKey {
        day: day.into(),
        domain: "example.com".into(),
        policy_type: "sts".into(),
        policy: "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n".into(),
        mx_host: "mx.example.com".into(),
        receiving_ip: "192.0.2.25".into(),
        sending_ip: "198.51.100.1".into(),
        outcome,
    };
    let add = |day: &str, outcome, count| {
        q.add_tls_sessions(&[Sessions {
            key: key(day, outcome),
            count,
        }])
        .unwrap()
    };
    // Two nodes (or two flushes) add to the same row.
    add("2026-12-04", Outcome::Success, 3);
    add("2026-12-05", Outcome::Success, 5);
    add("2026-12-05", Outcome::Success, 2);
    add("2026-12-05", Outcome::CertificateExpired, 1);
    let mut day = q.tls_sessions("2026-12-05").unwrap();
    day.sort_by_key(|s| s.count);
    assert_eq!(
        day,
        [
            Sessions {
                key: key("2026-12-05", Outcome::CertificateExpired),
                count: 1
            },
            Sessions {
                key: key("2026-12-05", Outcome::Success),
                count: 7
            },
        ]
    );
    q.forget_tls_sessions("2026-12-05").unwrap();
    assert!(q.tls_sessions("2026-12-04").unwrap().is_empty());
    assert_eq!(q.tls_sessions("2026-12-05").unwrap().len(), 2);
}

fn report_rows_add_up_per_kind_and_day_and_old_days_go(q: &dyn Queue) {
    use ferrymail::queue::dmarc_report::{Counted, Row};
    // A row's text is long (a DMARC record with several signatures): kept whole.
    let detail = format!("{{\"record\":\"{}\"}}", "x".repeat(4000));
    let row = |day: &str, domain: &str| Row {
        day: day.into(),
        domain: domain.into(),
        detail: detail.clone(),
    };
    let add = |kind: &str, day: &str, domain: &str, count| {
        q.add_report_rows(
            kind,
            &[Counted {
                row: row(day, domain),
                count,
            }],
        )
        .unwrap()
    };
    add("dmarc", "2026-12-04", "a.example", 1);
    add("dmarc", "2026-12-05", "a.example", 2);
    add("dmarc", "2026-12-05", "a.example", 3);
    add("dmarc", "2026-12-05", "b.example", 1);
    add("other", "2026-12-05", "a.example", 9);
    let mut day: Vec<(String, String, u64)> = q
        .report_rows("dmarc", "2026-12-05")
        .unwrap()
        .into_iter()
        .map(|c| (c.row.domain, c.row.detail, c.count))
        .collect();
    day.sort();
    assert_eq!(
        day,
        [
            ("a.example".to_string(), detail.clone(), 5),
            ("b.example".to_string(), detail.clone(), 1)
        ]
    );
    q.forget_report_rows("dmarc", "2026-12-05").unwrap();
    assert!(q.report_rows("dmarc", "2026-12-04").unwrap().is_empty());
    assert_eq!(q.report_rows("dmarc", "2026-12-05").unwrap().len(), 2);
    assert_eq!(q.report_rows("other", "2026-12-05").unwrap()[0].count, 9);
}

fn received_reports_are_kept_once_listed_newest_first_counted_and_forgotten(q: &dyn Queue) {
    use ferrymail::queue::dmarc_report::received::{Received, Summary};
    let report = |id: &str, received_at| Received {
        id: id.into(),
        kind: "dmarc".into(),
        domain: "example.com".into(),
        org: "receiver.example".into(),
        report_id: format!("r-{id}"),
        begin: 1_796_428_800,
        end: 1_796_515_199,
        received_at,
        body: "{\"record\":[]}".into(),
        summary: Summary {
            sources: vec![("192.0.2.1".into(), 3, 1)],
            ..Summary::default()
        },
    };
    assert!(q.add_received_report(&report("a", 100)).unwrap());
    assert!(q.add_received_report(&report("b", 300)).unwrap());
    assert!(q.add_received_report(&report("c", 200)).unwrap());
    assert!(
        !q.add_received_report(&report("a", 400)).unwrap(),
        "sent again: kept once"
    );
    let listed = q.received_reports(150).unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["b", "c"]);
    // A listing carries the summaries, not the reports.
    assert_eq!(listed[0].summary, report("b", 300).summary);
    assert_eq!(listed[0].body, "");
    assert_eq!(q.received_report("a").unwrap(), Some(report("a", 100)));
    assert_eq!(q.received_report("z").unwrap(), None);
    // The bound on a day's reports about a domain counts what is kept, and its bytes.
    let body = report("a", 0).body.len() as u64;
    assert_eq!(
        q.received_report_totals("example.com", 150).unwrap(),
        (2, 2 * body)
    );
    assert_eq!(
        q.received_report_totals("example.com", 0).unwrap(),
        (3, 3 * body)
    );
    assert_eq!(
        q.received_report_totals("other.example", 0).unwrap(),
        (0, 0)
    );
    q.forget_received_reports(250).unwrap();
    assert_eq!(q.received_reports(0).unwrap().len(), 1);
}

fn heartbeat(store: &dyn Store, name: &str, last_seen: i64) {
    store
        .heartbeat(&NodeInfo {
            name: name.into(),
            version: "test".into(),
            pid: 1,
            started_at: 0,
            last_seen,
            revision: 0,
            locks: vec![],
            instance: String::new(),
        })
        .unwrap();
}

/// Two nodes polling one queue at once never lease the same delivery; when one dies with
/// deliveries leased, the other takes them once its heartbeat has stopped, without
/// waiting for the lease.
#[test]
fn nodes_share_the_queue_and_take_over_from_the_dead() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = common::mongodb(dir.path());
    let store = MongoStore::connect(&url, "ferrymail").unwrap();
    let a = Arc::new(MongoQueue::open(store.connection().unwrap(), "node-a").unwrap());
    let b = Arc::new(MongoQueue::open(store.connection().unwrap(), "node-b").unwrap());
    heartbeat(&store, "node-a", now());
    heartbeat(&store, "node-b", now());
    let batch: Vec<_> = (0..40)
        .map(|i| {
            (
                envelope(),
                format!("m{i}").into_bytes(),
                vec![forward("t@e.test")],
            )
        })
        .collect();
    a.commit(&batch, &[]).unwrap();
    let takers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|q| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..10 {
                    got.extend(q.take_due(3, 600).unwrap().into_iter().map(|d| d.id));
                }
                got
            })
        })
        .collect();
    let mut taken: Vec<Vec<i64>> = takers.into_iter().map(|t| t.join().unwrap()).collect();
    // Racing, a call may lease fewer than it asked for; node a takes what is left.
    taken[0].extend(a.take_due(100, 600).unwrap().into_iter().map(|d| d.id));
    let mut all: Vec<i64> = taken.concat();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a delivery was leased to both nodes");
    assert_eq!(n, 40);
    // Everything is leased now; node a dies (its heartbeat goes stale).
    assert!(b.take_due(100, 600).unwrap().is_empty());
    heartbeat(&store, "node-a", now() - 120);
    assert_eq!(
        b.next_due_in().unwrap(),
        Some(0),
        "node a's deliveries are due"
    );
    let rescued = b.take_due(100, 600).unwrap();
    assert_eq!(
        rescued.len(),
        taken[0].len(),
        "node b takes exactly node a's"
    );
    assert!(rescued.iter().all(|d| taken[0].contains(&d.id)));
    // A restarted node a frees only its own leases (none are left).
    assert_eq!(a.release_leases().unwrap(), 0);
}
