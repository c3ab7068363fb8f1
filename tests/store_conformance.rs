//! The store conformance suite: every test is written once against the `Store` trait and
//! runs twice, on embedded SQLite and on a MongoDB-wire server (secantusd, a one-member
//! replica set on loopback), so both backends keep the same promises.

mod common;

use std::sync::Arc;

use common::Process;
use ferrymail::store::{
    BackupRun, DnsOwned, KeyMaterial, Kind, MongoStore, NodeInfo, Object, SqliteStore, Store,
    StoreDump, StoreError, StoredCertificate, Write,
};

/// A store under test, with what keeps it alive.
struct Backend {
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    _server: Option<Process>,
}

fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data")).unwrap();
    Backend {
        store: Arc::new(store),
        _dir: dir,
        _server: None,
    }
}

fn mongodb() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = common::mongodb(dir.path());
    let store = MongoStore::connect(&url, "ferrymail").unwrap();
    Backend {
        store: Arc::new(store),
        _dir: dir,
        _server: Some(server),
    }
}

/// Generates `mod sqlite { #[test] fn name() }` and the same for mongodb, for each check.
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
    apply_bumps_revision_and_refuses_stale_plans,
    objects_keep_their_exact_text,
    apply_counts_and_deletes,
    concurrent_applies_one_wins,
    large_apply_in_one_revision,
    dkim_keys_are_kept_retired_and_restored,
    certificates_and_acme_accounts,
    dns_ownership_is_per_zone,
    histories_newest_first,
    node_heartbeats,
    dump_and_load_round_trip,
);

fn alias(id: &str, json: &str) -> Write {
    Write::Put {
        object: Object {
            kind: Kind::Alias,
            id: id.into(),
            json: json.into(),
        },
        key: None,
    }
}

fn delete(kind: Kind, id: &str) -> Write {
    Write::Delete {
        kind,
        id: id.into(),
    }
}

fn dkim(id: &str, algorithm: &str, key: Option<(&[u8], &[u8])>) -> Write {
    Write::Put {
        object: Object {
            kind: Kind::DkimKey,
            id: id.into(),
            json: format!(r#"{{"algorithm":"{algorithm}","domain":"d.test"}}"#),
        },
        key: key.map(|(private, public)| KeyMaterial {
            private_der: private.to_vec(),
            public: public.to_vec(),
        }),
    }
}

fn apply_bumps_revision_and_refuses_stale_plans(b: &Backend) {
    let store = b.store.as_ref();
    assert_eq!(store.revision().unwrap(), 0);
    assert!(store.objects().unwrap().1.is_empty());
    let put = alias("x@d.test", r#"{"forward":["a@b.test"]}"#);
    assert_eq!(
        store.apply(0, std::slice::from_ref(&put), "test").unwrap(),
        1
    );
    let stale = store.apply(0, &[put], "test");
    assert!(
        matches!(
            stale,
            Err(StoreError::Stale {
                planned: 0,
                current: 1
            })
        ),
        "{stale:?}"
    );
    let (revision, objects) = store.objects().unwrap();
    assert_eq!((revision, objects.len()), (1, 1));
    assert!(objects[0].managed);
    assert_eq!(store.applies(10).unwrap()[0].added, 1);
    assert_eq!(store.applies(10).unwrap()[0].source, "test");
    // The refused apply changed nothing.
    assert_eq!(store.applies(10).unwrap().len(), 1);
}

/// Plans compare stored text with desired text: a backend must give back exactly the
/// canonical text it was given, whatever the fields hold.
fn objects_keep_their_exact_text(b: &Backend) {
    let store = b.store.as_ref();
    let texts = [
        r#"{"description":"Grüße, 日本 \"quoted\" \\ back","forward":["a@b.test","c@d.test"],"enabled":true}"#,
        r#"{"nested":{"a":[1,2,{"b":null}],"z":-7},"quota":53687091200,"ratio":0.25}"#,
        r#"{"huge":18446744073709551615,"small":1.0}"#,
        r#"{"$set":"not an operator","a.b":"dotted","empty":[],"obj":{}}"#,
        r#"{}"#,
    ];
    let writes: Vec<Write> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            // The canonical form (keys sorted) is what the reconciler stores.
            let canonical = serde_json::from_str::<serde_json::Value>(t)
                .unwrap()
                .to_string();
            alias(&format!("a{i}@d.test"), &canonical)
        })
        .collect();
    store.apply(0, &writes, "test").unwrap();
    let (_, objects) = store.objects().unwrap();
    for w in &writes {
        let Write::Put { object, .. } = w else {
            unreachable!()
        };
        let stored = objects
            .iter()
            .find(|o| o.object.id == object.id)
            .expect("object stored");
        assert_eq!(stored.object, *object);
    }
}

fn apply_counts_and_deletes(b: &Backend) {
    let store = b.store.as_ref();
    store
        .apply(
            0,
            &[
                alias("a@d.test", r#"{"v":1}"#),
                alias("b@d.test", r#"{"v":1}"#),
            ],
            "one",
        )
        .unwrap();
    // One changed, one added, one deleted, and a delete of something that is not there.
    store
        .apply(
            1,
            &[
                alias("a@d.test", r#"{"v":2}"#),
                alias("c@d.test", r#"{"v":1}"#),
                delete(Kind::Alias, "b@d.test"),
                delete(Kind::Alias, "nobody@d.test"),
            ],
            "two",
        )
        .unwrap();
    let last = &store.applies(1).unwrap()[0];
    assert_eq!(
        (last.revision, last.added, last.changed, last.destroyed),
        (2, 1, 1, 1)
    );
    let (revision, objects) = store.objects().unwrap();
    let mut got: Vec<(String, String)> = objects
        .into_iter()
        .map(|o| (o.object.id, o.object.json))
        .collect();
    got.sort();
    assert_eq!(revision, 2);
    assert_eq!(
        got,
        vec![
            ("a@d.test".to_string(), r#"{"v":2}"#.to_string()),
            ("c@d.test".to_string(), r#"{"v":1}"#.to_string()),
        ]
    );
    // Same id, different kinds: two objects.
    store
        .apply(
            2,
            &[Write::Put {
                object: Object {
                    kind: Kind::Domain,
                    id: "a@d.test".into(),
                    json: "{}".into(),
                },
                key: None,
            }],
            "three",
        )
        .unwrap();
    assert_eq!(store.objects().unwrap().1.len(), 3);
    // Created revisions survive a change (the dump shows them).
    let dump = store.dump().unwrap();
    let a = dump
        .objects
        .iter()
        .find(|o| o.kind == Kind::Alias && o.id == "a@d.test")
        .unwrap();
    assert_eq!((a.created_revision, a.updated_revision), (1, 2));
}

/// Two nodes apply against the same revision at once: exactly one wins, the other is told
/// its plan is stale, and nothing of the loser is stored.
fn concurrent_applies_one_wins(b: &Backend) {
    let store = b.store.clone();
    store
        .apply(0, &[alias("base@d.test", "{}")], "base")
        .unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|n| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                let writes: Vec<Write> = (0..50)
                    .map(|i| alias(&format!("n{n}-{i}@d.test"), "{}"))
                    .collect();
                barrier.wait();
                store.apply(1, &writes, &format!("node {n}"))
            })
        })
        .collect();
    let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let won = outcomes.iter().filter(|o| matches!(o, Ok(2))).count();
    let stale = outcomes
        .iter()
        .filter(|o| matches!(o, Err(StoreError::Stale { planned: 1, .. })))
        .count();
    assert_eq!((won, stale), (1, 1), "{outcomes:?}");
    let (revision, objects) = store.objects().unwrap();
    assert_eq!((revision, objects.len()), (2, 51));
    let winner = if outcomes[0].is_ok() { "n0-" } else { "n1-" };
    assert!(
        objects
            .iter()
            .all(|o| o.object.id == "base@d.test" || o.object.id.starts_with(winner))
    );
}

fn large_apply_in_one_revision(b: &Backend) {
    let store = b.store.as_ref();
    let writes: Vec<Write> = (0..2_500)
        .map(|i| alias(&format!("user{i}@d.test"), r#"{"forward":["x@y.test"]}"#))
        .collect();
    assert_eq!(store.apply(0, &writes, "bulk").unwrap(), 1);
    // Change half, delete a quarter: more than one batch of each.
    let mut next: Vec<Write> = (0..1_250)
        .map(|i| alias(&format!("user{i}@d.test"), r#"{"forward":["z@y.test"]}"#))
        .collect();
    next.extend((1_875..2_500).map(|i| delete(Kind::Alias, &format!("user{i}@d.test"))));
    assert_eq!(store.apply(1, &next, "bulk").unwrap(), 2);
    let (revision, objects) = store.objects().unwrap();
    assert_eq!((revision, objects.len()), (2, 1_875));
    let changed = objects
        .iter()
        .filter(|o| o.object.json.contains("z@y.test"))
        .count();
    assert_eq!(changed, 1_250);
    let last = &store.applies(1).unwrap()[0];
    assert_eq!((last.added, last.changed, last.destroyed), (0, 1_250, 625));
}

fn dkim_keys_are_kept_retired_and_restored(b: &Backend) {
    let store = b.store.as_ref();
    let id = "s1._domainkey.d.test";
    store
        .apply(0, &[dkim(id, "ed25519", Some((&[1, 2], &[3])))], "t")
        .unwrap();
    assert_eq!(store.dkim_public_key(id).unwrap(), Some(vec![3]));
    assert_eq!(store.dkim_private_key(id).unwrap(), Some(vec![1, 2]));
    assert_eq!(store.dkim_private_key("other").unwrap(), None);
    // A changed object without new key material keeps the key.
    store.apply(1, &[dkim(id, "ed25519", None)], "t").unwrap();
    assert_eq!(store.dkim_private_key(id).unwrap(), Some(vec![1, 2]));
    // Deleted: no longer signing, the public half retired with its algorithm.
    store.apply(2, &[delete(Kind::DkimKey, id)], "t").unwrap();
    assert_eq!(store.dkim_private_key(id).unwrap(), None);
    let retired = store.dkim_retired().unwrap();
    assert_eq!(retired.len(), 1);
    assert_eq!(
        (
            retired[0].id.as_str(),
            retired[0].algorithm.as_str(),
            &retired[0].public[..]
        ),
        (id, "ed25519", &[3u8][..])
    );
    assert!(retired[0].retired_at > 1_700_000_000);
    // Declared again with a new key: signing again, no longer retired.
    store
        .apply(3, &[dkim(id, "rsa-2048", Some((&[4], &[5])))], "t")
        .unwrap();
    assert_eq!(store.dkim_private_key(id).unwrap(), Some(vec![4]));
    assert!(store.dkim_retired().unwrap().is_empty());
}

fn certificates_and_acme_accounts(b: &Backend) {
    let store = b.store.as_ref();
    assert_eq!(store.acme_account("https://ca.test/dir").unwrap(), None);
    store
        .set_acme_account("https://ca.test/dir", r#"{"id":"1"}"#)
        .unwrap();
    store
        .set_acme_account("https://ca.test/dir", r#"{"id":"2"}"#)
        .unwrap();
    assert_eq!(
        store
            .acme_account("https://ca.test/dir")
            .unwrap()
            .as_deref(),
        Some(r#"{"id":"2"}"#)
    );
    assert!(!store.request_renewal("mx.d.test").unwrap());
    let cert = StoredCertificate {
        id: "mx.d.test".into(),
        names: vec!["mx.d.test".into(), "mta-sts.d.test".into()],
        chain_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
        key_pem: "-----BEGIN PRIVATE KEY-----\n...".into(),
        not_after: 1_900_000_000,
        issued_at: 1_800_000_000,
        renew_requested: false,
    };
    store.put_certificate(&cert).unwrap();
    assert_eq!(store.certificate("mx.d.test").unwrap(), Some(cert.clone()));
    assert!(store.request_renewal("mx.d.test").unwrap());
    assert!(
        store
            .certificate("mx.d.test")
            .unwrap()
            .unwrap()
            .renew_requested
    );
    let renewed = StoredCertificate {
        not_after: 1_950_000_000,
        ..cert
    };
    store.put_certificate(&renewed).unwrap();
    assert_eq!(store.certificate("mx.d.test").unwrap(), Some(renewed));
    assert_eq!(store.certificate("other").unwrap(), None);
}

fn owned(name: &str, rtype: &str, value: &str) -> DnsOwned {
    DnsOwned {
        provider: "p".into(),
        zone: "d.test".into(),
        name: name.into(),
        rtype: rtype.into(),
        value: value.into(),
    }
}

fn dns_ownership_is_per_zone(b: &Backend) {
    let store = b.store.as_ref();
    store
        .set_dns_owned(
            "p",
            "d.test",
            &[
                owned("d.test", "MX", ""),
                owned("d.test", "TXT", "v=spf1 mx -all"),
            ],
        )
        .unwrap();
    store
        .set_dns_owned("p", "e.test", &[owned("e.test", "MX", "")])
        .unwrap();
    // Replacing one zone leaves the other; a duplicate is stored once.
    store
        .set_dns_owned(
            "p",
            "d.test",
            &[
                owned("d.test", "TXT", "v=spf1 -all"),
                owned("d.test", "TXT", "v=spf1 -all"),
            ],
        )
        .unwrap();
    let all = store.dns_owned().unwrap();
    let got: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|o| (o.zone.as_str(), o.rtype.as_str(), o.value.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![("d.test", "TXT", "v=spf1 -all"), ("e.test", "MX", "")]
    );
    assert_eq!(all[1].name, "e.test");
    store.set_dns_owned("p", "e.test", &[]).unwrap();
    assert_eq!(store.dns_owned().unwrap().len(), 1);
}

fn run(id: &str, started_at: i64, ok: bool) -> BackupRun {
    BackupRun {
        id: id.into(),
        started_at,
        target: "file:///backups".into(),
        ok,
        size: 1234,
        sha256: "ab".repeat(32),
        duration_ms: 56,
        error: (!ok).then(|| "target unreachable".to_string()),
    }
}

fn histories_newest_first(b: &Backend) {
    let store = b.store.as_ref();
    assert_eq!(store.last_good_backup().unwrap(), None);
    store.record_backup(&run("b1", 100, true)).unwrap();
    store.record_backup(&run("b2", 200, true)).unwrap();
    store.record_backup(&run("", 300, false)).unwrap();
    let runs = store.backup_runs(10).unwrap();
    assert_eq!(
        runs.iter().map(|r| r.started_at).collect::<Vec<_>>(),
        vec![300, 200, 100]
    );
    assert_eq!(runs[0], run("", 300, false));
    assert_eq!(store.backup_runs(1).unwrap().len(), 1);
    assert_eq!(
        store.last_good_backup().unwrap(),
        Some(run("b2", 200, true))
    );
    for revision in 0..5 {
        store
            .apply(
                revision,
                &[alias("a@d.test", &format!(r#"{{"v":{revision}}}"#))],
                "t",
            )
            .unwrap();
    }
    let applies = store.applies(3).unwrap();
    assert_eq!(
        applies.iter().map(|a| a.revision).collect::<Vec<_>>(),
        vec![5, 4, 3]
    );
}

fn node(name: &str, last_seen: i64) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        version: "0.1.0".into(),
        pid: 42,
        started_at: 1_000,
        last_seen,
        revision: 7,
        locks: vec!["reconcile".into()],
        instance: format!("{name}-1"),
    }
}

fn node_heartbeats(b: &Backend) {
    let store = b.store.as_ref();
    store.heartbeat(&node("a", 100)).unwrap();
    store.heartbeat(&node("b", 200)).unwrap();
    store.heartbeat(&node("a", 300)).unwrap();
    assert_eq!(store.nodes().unwrap(), vec![node("a", 300), node("b", 200)]);
    assert_eq!(store.forget_nodes(250).unwrap(), 1);
    assert_eq!(store.nodes().unwrap(), vec![node("a", 300)]);
}

/// Fills a store with one of everything.
fn populate(store: &dyn Store) {
    store
        .apply(
            0,
            &[
                alias("a@d.test", r#"{"forward":["x@y.test"],"n":1.5}"#),
                dkim(
                    "s._domainkey.d.test",
                    "rsa-2048",
                    Some((&[9; 64], &[8; 32])),
                ),
                dkim("old._domainkey.d.test", "ed25519", Some((&[7], &[6]))),
            ],
            "first",
        )
        .unwrap();
    store
        .apply(
            1,
            &[delete(Kind::DkimKey, "old._domainkey.d.test")],
            "second",
        )
        .unwrap();
    store
        .set_dns_owned("p", "d.test", &[owned("d.test", "MX", "")])
        .unwrap();
    store.set_acme_account("https://ca.test/dir", "{}").unwrap();
    store
        .put_certificate(&StoredCertificate {
            id: "mx.d.test".into(),
            names: vec!["mx.d.test".into()],
            chain_pem: "chain".into(),
            key_pem: "key".into(),
            not_after: 2,
            issued_at: 1,
            renew_requested: true,
        })
        .unwrap();
    store.record_backup(&run("b1", 100, true)).unwrap();
    store.record_backup(&run("", 200, false)).unwrap();
}

/// What `ferrymail migrate` relies on: a dump loaded into an empty store of the other
/// kind dumps the same again, and a store holding anything refuses a load.
fn dump_and_load_round_trip(b: &Backend) {
    populate(b.store.as_ref());
    let dump = b.store.dump().unwrap();
    assert_eq!(dump.revision, 2);
    assert_eq!(dump.objects.len(), 2);
    assert_eq!(dump.dkim_keys.len(), 1);
    assert_eq!(dump.dkim_retired.len(), 1);
    assert_eq!(dump.applies.len(), 2);
    assert_eq!(dump.backup_runs.len(), 2);
    let refused = b.store.load(&dump);
    assert!(
        matches!(refused, Err(StoreError::NotEmpty(2))),
        "{refused:?}"
    );

    for other in [sqlite(), mongodb()] {
        other.store.load(&dump).unwrap();
        let again: StoreDump = other.store.dump().unwrap();
        assert_eq!(again, dump);
        assert_eq!(other.store.revision().unwrap(), 2);
        assert_eq!(
            other.store.last_good_backup().unwrap().map(|r| r.id),
            Some("b1".to_string())
        );
        // The copy goes on from where the original was.
        other
            .store
            .apply(2, &[alias("new@d.test", "{}")], "after")
            .unwrap();
    }
}
