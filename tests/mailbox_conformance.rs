//! The mailbox conformance suite: folders, UIDs, flags, MODSEQ, copy, move, expunge and
//! quota, written once against `Mailboxes` and run on the SQLite files and on MongoDB
//! (secantusd on loopback); then two nodes' views of one MongoDB mailbox.

mod common;

use common::Process;
use ferrymail::mailbox::{FlagChange, MailboxError, Mailboxes, MasterKey, SPECIAL_FOLDERS};
use ferrymail::store::{MongoStore, Store};

struct Backend {
    boxes: Mailboxes,
    _dir: tempfile::TempDir,
    _server: Option<Process>,
}

fn key() -> MasterKey {
    MasterKey::new(&[9u8; 32]).unwrap()
}

fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    Backend {
        boxes: Mailboxes::new(dir.path(), key()),
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
        boxes,
        _dir: dir,
        _server: Some(server),
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $name() { super::$name(&super::sqlite().boxes); })*
        }
        mod on_mongodb {
            $(#[test] fn $name() { super::$name(&super::mongodb().boxes); })*
        }
    };
}

conformance!(
    append_assigns_uids_and_enforces_quota,
    folders_flags_copy_move_and_expunge,
    folders_are_created_renamed_and_deleted,
    large_messages_come_back_whole,
    bodies_come_with_where_their_header_ends,
    recent_messages_are_claimed_once_and_created_folders_unsubscribed,
    changes_since_a_modseq_tell_new_changed_and_expunged_messages,
    owners_settings_are_kept_and_no_change_is_lost,
    subscriptions_outlive_their_folders,
);

/// What an owner sets on their page (src/selfservice): none until set, then kept; two
/// writers at once (the page, a login noting an app password's use) both land.
fn owners_settings_are_kept_and_no_change_is_lost(boxes: &Mailboxes) {
    use ferrymail::selfservice::{AppPassword, settings};
    settings::prepare(boxes).unwrap();
    assert_eq!(
        settings::read(boxes, "me@d.test").unwrap(),
        settings::Own::default()
    );
    std::thread::scope(|scope| {
        for writer in 0..2 {
            scope.spawn(move || {
                for n in 0..5 {
                    settings::update(boxes, "me@d.test", |own| {
                        own.app_passwords.push(AppPassword {
                            id: format!("{writer}-{n}"),
                            name: format!("device {writer} {n}"),
                            digest: "d".into(),
                            over: String::new(),
                            created: n,
                            last_used: None,
                        })
                    })
                    .unwrap();
                }
            });
        }
    });
    let own = settings::read(boxes, "ME@d.test").unwrap();
    assert_eq!(own.app_passwords.len(), 10, "{:?}", own.app_passwords);
    assert_eq!(
        settings::read(boxes, "other@d.test").unwrap(),
        settings::Own::default()
    );
}

fn append_assigns_uids_and_enforces_quota(boxes: &Mailboxes) {
    assert!(!boxes.exists("me@d.test"));
    assert_eq!(
        boxes
            .append("me@d.test", "INBOX", b"one secret", Some(25))
            .unwrap(),
        1
    );
    assert_eq!(
        boxes
            .append("Me@D.test", "INBOX", b"two secret", Some(25))
            .unwrap(),
        2
    );
    assert!(matches!(
        boxes.append("me@d.test", "INBOX", b"too big now", Some(25)),
        Err(MailboxError::OverQuota { .. })
    ));
    assert!(boxes.exists("me@d.test"));
    assert!(!boxes.exists("nobody@d.test"));
    let mailbox = boxes.open("me@d.test").unwrap();
    let inbox = mailbox.folder("INBOX").unwrap().unwrap();
    let list = mailbox.messages(&inbox).unwrap();
    assert_eq!(list.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(mailbox.body(&inbox, 2).unwrap().unwrap(), b"two secret");
    assert_eq!(mailbox.quota_used().unwrap(), 20);
    // A copy counts: past the quota it is refused, and nothing of it stays.
    let mut mailbox = mailbox;
    let trash = mailbox.folder("Trash").unwrap().unwrap();
    assert!(matches!(
        mailbox.copy(&inbox, &[1, 2], &trash, Some(30)),
        Err(MailboxError::OverQuota { .. })
    ));
    assert!(mailbox.messages(&trash).unwrap().is_empty());
    assert_eq!(
        mailbox.copy(&inbox, &[1], &trash, Some(30)).unwrap().len(),
        1
    );
    assert_eq!(mailbox.quota_used().unwrap(), 30);
    assert_eq!(
        mailbox
            .bodies_between(&inbox, 1, 10)
            .unwrap()
            .iter()
            .map(|(u, _)| *u)
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

/// A FETCH of BODY[HEADER] cuts the body at the length kept beside it, on every backend
/// and for bodies stored in chunks too; a copy shares it.
fn bodies_come_with_where_their_header_ends(boxes: &Mailboxes) {
    let header = b"Subject: cut here\r\nFrom: a@b.test\r\n\r\n";
    let small = [&header[..], b"hello\r\n"].concat();
    let large = [&header[..], &vec![b'x'; 9 * 1024 * 1024]].concat();
    for body in [small, large] {
        let uid = boxes.append("cut@d.test", "INBOX", &body, None).unwrap();
        let mut mailbox = boxes.open("cut@d.test").unwrap();
        let inbox = mailbox.folder("INBOX").unwrap().unwrap();
        let archive = mailbox.folder("Archive").unwrap().unwrap();
        let copied = mailbox.copy(&inbox, &[uid], &archive, None).unwrap()[0].1;
        for (folder, uid) in [(&inbox, uid), (&archive, copied)] {
            let found = mailbox.bodies_between(folder, uid, uid).unwrap();
            let [(_, got)] = &found[..] else {
                panic!("one body expected, got {}", found.len());
            };
            assert_eq!(got.bytes.len(), body.len());
            assert_eq!(got.header_len, Some(header.len() as u32));
        }
    }
}

fn large_messages_come_back_whole(boxes: &Mailboxes) {
    let body: Vec<u8> = (0..9 * 1024 * 1024)
        .map(|i| b"abcdefghij\r\n"[i % 12])
        .collect();
    let uid = boxes.append("big@d.test", "INBOX", &body, None).unwrap();
    let mut mailbox = boxes.open("big@d.test").unwrap();
    let inbox = mailbox.folder("INBOX").unwrap().unwrap();
    assert_eq!(mailbox.body(&inbox, uid).unwrap().unwrap(), body);
    let archive = mailbox.folder("Archive").unwrap().unwrap();
    mailbox.copy(&inbox, &[uid], &archive, None).unwrap();
    mailbox
        .set_flags(&inbox, &[uid], FlagChange::Add, &["\\Deleted".into()], None)
        .unwrap();
    assert_eq!(mailbox.expunge(&inbox, None).unwrap(), [uid]);
    // The copy keeps the shared bytes alive.
    assert_eq!(
        mailbox.body(&archive, 1).unwrap().unwrap().len(),
        body.len()
    );
    assert_eq!(mailbox.quota_used().unwrap(), body.len() as u64);
}

fn folders_flags_copy_move_and_expunge(boxes: &Mailboxes) {
    let mut mb = boxes.open("me@d.test").unwrap();
    let names: Vec<String> = mb.folders().unwrap().into_iter().map(|f| f.name).collect();
    for (name, _) in SPECIAL_FOLDERS {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
    let sent = mb.folder("Sent").unwrap().unwrap();
    assert_eq!(sent.special_use.as_deref(), Some("\\Sent"));
    let inbox = mb.folder("inbox").unwrap().unwrap();
    for text in ["a", "b", "c"] {
        mb.append(
            &inbox,
            format!("Subject: {text}\r\n\r\n{text}").as_bytes(),
            &[],
            1,
            None,
        )
        .unwrap();
    }
    let before = mb.refresh(&inbox).unwrap().highestmodseq;
    let stored = mb
        .set_flags(
            &inbox,
            &[1, 2],
            FlagChange::Add,
            &["\\Seen".into(), "$Work".into()],
            None,
        )
        .unwrap();
    assert_eq!(stored.changed, [1, 2]);
    assert!(stored.refused.is_empty());
    assert!(stored.now[0].modseq > before);
    // Asking again changes nothing, and still tells the flags as they are.
    let again = mb
        .set_flags(&inbox, &[1, 3], FlagChange::Add, &["\\Seen".into()], None)
        .unwrap();
    assert_eq!(again.changed, [3]);
    assert_eq!(again.now.len(), 2);
    assert!(again.now[0].has("$work") && again.now[0].has("\\seen"));
    // CONDSTORE: a message changed since the given MODSEQ is not touched.
    let refused = mb
        .set_flags(
            &inbox,
            &[1],
            FlagChange::Remove,
            &["\\Seen".into()],
            Some(before),
        )
        .unwrap()
        .refused;
    assert_eq!(refused, [1]);

    let archive = mb.folder("Archive").unwrap().unwrap();
    assert_eq!(
        mb.copy(&inbox, &[2, 3], &archive, None).unwrap(),
        [(2, 1), (3, 2)]
    );
    assert_eq!(
        mb.body(&archive, 1).unwrap().unwrap(),
        b"Subject: b\r\n\r\nb"
    );
    let trash = mb.folder("Trash").unwrap().unwrap();
    assert_eq!(mb.move_messages(&inbox, &[1], &trash).unwrap(), [(1, 1)]);
    assert_eq!(mb.messages(&inbox).unwrap().len(), 2);
    assert!(mb.messages(&trash).unwrap()[0].has("$work"));

    mb.set_flags(
        &inbox,
        &[2, 3],
        FlagChange::Add,
        &["\\Deleted".into()],
        None,
    )
    .unwrap();
    assert_eq!(mb.expunge(&inbox, Some(&[3])).unwrap(), [3]);
    assert_eq!(mb.expunge(&inbox, None).unwrap(), [2]);
    // The running total follows appends, copies, moves and expunges.
    let summed: u64 = [&inbox, &archive, &trash]
        .iter()
        .flat_map(|f| mb.messages(f).unwrap())
        .map(|m| m.size)
        .sum();
    assert_eq!(mb.quota_used().unwrap(), summed);
    // The copies in Archive still read: shared content is kept while referenced.
    assert!(mb.body(&archive, 2).unwrap().is_some());
    assert_eq!(
        mb.meta(&archive, 2)
            .unwrap()
            .unwrap()
            .envelope
            .subject
            .as_deref(),
        Some("c")
    );
}

fn folders_are_created_renamed_and_deleted(boxes: &Mailboxes) {
    let mut mb = boxes.open("me@d.test").unwrap();
    let work = mb.create_folder("Work", None).unwrap();
    mb.create_folder("Work/2025", None).unwrap();
    assert!(matches!(
        mb.create_folder("Work", None),
        Err(MailboxError::FolderExists(_))
    ));
    mb.rename_folder("Work", "Jobs").unwrap();
    assert!(mb.folder("Jobs/2025").unwrap().is_some());
    let jobs = mb.folder("Jobs").unwrap().unwrap();
    assert_eq!(
        jobs.uidvalidity, work.uidvalidity,
        "a rename keeps UIDVALIDITY"
    );
    mb.delete_folder("Jobs/2025").unwrap();
    mb.delete_folder("Jobs").unwrap();
    let again = mb.create_folder("Jobs", None).unwrap();
    assert_ne!(again.uidvalidity, jobs.uidvalidity, "never reused");
    assert!(mb.delete_folder("INBOX").is_err());
    // Renaming INBOX moves its mail and leaves it empty.
    let inbox = mb.folder("INBOX").unwrap().unwrap();
    mb.append(&inbox, b"x", &[], 1, None).unwrap();
    mb.rename_folder("INBOX", "Old").unwrap();
    assert!(mb.messages(&inbox).unwrap().is_empty());
    let old = mb.folder("Old").unwrap().unwrap();
    assert_eq!(mb.messages(&old).unwrap().len(), 1);
}

/// A subscription outlives its folder (RFC 3501 §6.3.6); a folder made or renamed
/// under the name is subscribed again, and UNSUBSCRIBE forgets the name. CREATE makes
/// the levels above a new folder (§6.3.3).
fn subscriptions_outlive_their_folders(boxes: &Mailboxes) {
    let mut mb = boxes.open("me@d.test").unwrap();
    mb.create_folder("a/b/c", None).unwrap();
    assert!(mb.folder("a").unwrap().is_some() && mb.folder("a/b").unwrap().is_some());
    assert!(!mb.folder("a").unwrap().unwrap().subscribed);
    mb.create_folder("Old", None).unwrap();
    mb.subscribe("Old", true).unwrap();
    mb.subscribe("a/b/c", true).unwrap();
    mb.delete_folder("Old").unwrap();
    mb.delete_folder("a/b/c").unwrap();
    assert_eq!(mb.lost_subscriptions().unwrap(), ["Old", "a/b/c"]);
    assert!(mb.create_folder("Old", None).unwrap().subscribed);
    mb.create_folder("x", None).unwrap();
    mb.rename_folder("x", "a/b/c").unwrap();
    assert!(mb.folder("a/b/c").unwrap().unwrap().subscribed);
    assert!(mb.lost_subscriptions().unwrap().is_empty());
    mb.delete_folder("Old").unwrap();
    mb.subscribe("Old", false).unwrap();
    assert!(mb.lost_subscriptions().unwrap().is_empty());
    assert!(mb.subscribe("Old", false).is_err());
    assert!(
        mb.subscribe("Old", true).is_err(),
        "only folders that exist"
    );
}

/// \Recent (RFC 3501 §2.3.2): the first session to claim new messages gets them, nobody
/// else; IMAP CREATE leaves a folder unsubscribed, a folder mail lands in is subscribed.
fn recent_messages_are_claimed_once_and_created_folders_unsubscribed(boxes: &Mailboxes) {
    let mut mb = boxes.open("me@d.test").unwrap();
    let inbox = mb.folder("INBOX").unwrap().unwrap();
    assert_eq!(mb.claim_recent(&inbox).unwrap(), None);
    for _ in 0..2 {
        mb.append(&inbox, b"x", &[], 1, None).unwrap();
    }
    assert_eq!(mb.refresh(&inbox).unwrap().first_recent, 1);
    assert_eq!(mb.claim_recent(&inbox).unwrap(), Some((1, 3)));
    let mut other = boxes.open("me@d.test").unwrap();
    assert_eq!(other.claim_recent(&inbox).unwrap(), None);
    mb.append(&inbox, b"y", &[], 1, None).unwrap();
    assert_eq!(other.claim_recent(&inbox).unwrap(), Some((3, 4)));
    assert_eq!(mb.claim_recent(&inbox).unwrap(), None);
    assert_eq!(mb.refresh(&inbox).unwrap().first_recent, 4);

    assert!(!mb.create_folder("Made", None).unwrap().subscribed);
    // CREATE-SPECIAL-USE (RFC 6154): the use is kept with the folder.
    let kept = mb.create_folder("Keep", Some("\\Archive")).unwrap();
    assert_eq!(kept.special_use.as_deref(), Some("\\Archive"));
    assert_eq!(
        mb.folder("Keep").unwrap().unwrap().special_use.as_deref(),
        Some("\\Archive")
    );
    assert!(mb.folder_or_create("Landed").unwrap().subscribed);
    assert!(mb.folder("Sent").unwrap().unwrap().subscribed);
}

/// How sessions catch up: what changed after a MODSEQ, without reading the folder.
fn changes_since_a_modseq_tell_new_changed_and_expunged_messages(boxes: &Mailboxes) {
    let mut mb = boxes.open("me@d.test").unwrap();
    let inbox = mb.folder("INBOX").unwrap().unwrap();
    for _ in 0..3 {
        mb.append(&inbox, b"x", &[], 1, None).unwrap();
    }
    let start = mb.refresh(&inbox).unwrap().highestmodseq;
    let none = mb.changes_since(&inbox, start).unwrap();
    assert!(none.changed.is_empty() && none.expunged.is_empty());
    assert_eq!(none.highest, start);
    mb.set_flags(&inbox, &[1], FlagChange::Add, &["\\Deleted".into()], None)
        .unwrap();
    mb.set_flags(&inbox, &[2], FlagChange::Add, &["\\Seen".into()], None)
        .unwrap();
    mb.expunge(&inbox, None).unwrap();
    mb.append(&inbox, b"y", &[], 1, None).unwrap();
    let trash = mb.folder("Trash").unwrap().unwrap();
    mb.move_messages(&inbox, &[3], &trash).unwrap();
    let delta = mb.changes_since(&inbox, start).unwrap();
    let changed: Vec<(u32, bool)> = delta
        .changed
        .iter()
        .map(|m| (m.uid, m.has("\\seen")))
        .collect();
    assert_eq!(changed, [(2, true), (4, false)]);
    assert_eq!(delta.expunged, [1, 3]);
    assert_eq!(delta.highest, mb.refresh(&inbox).unwrap().highestmodseq);
    // From the last change on, nothing.
    let after = mb.changes_since(&inbox, delta.highest).unwrap();
    assert!(after.changed.is_empty() && after.expunged.is_empty());
    // A folder deleted takes its expunged UIDs with it.
    let work = mb.create_folder("Work", None).unwrap();
    mb.append(&work, b"z", &["\\Deleted".into()], 1, None)
        .unwrap();
    mb.expunge(&work, None).unwrap();
    assert_eq!(mb.changes_since(&work, 0).unwrap().expunged, [1]);
    mb.delete_folder("Work").unwrap();
}

/// Two nodes on one MongoDB: what one delivers the other lists, flags set on one show
/// on the other, and nothing of a message is readable in the database or with another
/// master key.
#[test]
fn two_nodes_share_one_mongodb_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = common::mongodb(dir.path());
    let store = MongoStore::connect(&url, "ferrymail").unwrap();
    let mongo = store.connection().unwrap();
    let a = Mailboxes::in_mongo(dir.path(), key(), mongo.clone()).unwrap();
    let b = Mailboxes::in_mongo(dir.path(), key(), mongo.clone()).unwrap();
    let uid = a
        .append("me@d.test", "INBOX", b"Subject: hi\r\n\r\ntop secret", None)
        .unwrap();
    let mut on_b = b.open("me@d.test").unwrap();
    let inbox = on_b.folder("INBOX").unwrap().unwrap();
    assert_eq!(on_b.messages(&inbox).unwrap().len(), 1);
    on_b.set_flags(&inbox, &[uid], FlagChange::Add, &["\\Seen".into()], None)
        .unwrap();
    let on_a = a.open("me@d.test").unwrap();
    assert!(on_a.messages(&inbox).unwrap()[0].has("\\Seen"));
    assert_eq!(
        on_a.refresh(&inbox).unwrap().highestmodseq,
        on_b.refresh(&inbox).unwrap().highestmodseq
    );
    // Both opened the account at once: one set of special folders.
    assert_eq!(on_a.folders().unwrap().len(), SPECIAL_FOLDERS.len());
    let other = Mailboxes::in_mongo(
        dir.path(),
        MasterKey::new(&[1u8; 32]).unwrap(),
        mongo.clone(),
    )
    .unwrap();
    assert!(other.open("me@d.test").unwrap().body(&inbox, uid).is_err());
    let raw: Vec<u8> = mongo.block(async {
        use futures_util::TryStreamExt;
        let docs: Vec<mongodb::bson::Document> = mongo
            .coll("mailbox_blobs")
            .find(mongodb::bson::doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        docs.iter()
            .flat_map(|d| mongodb::bson::serialize_to_vec(d).unwrap_or_default())
            .collect()
    });
    assert!(!raw.is_empty());
    assert!(!raw.windows(6).any(|w| w == b"secret"), "stored sealed");
}
