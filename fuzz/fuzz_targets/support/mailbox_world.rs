//! What the IMAP and POP3 fuzz targets share: one mailbox (password "quickstart") with two
//! messages in memory-backed temp space, and the loop that feeds a session a client's bytes.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ferrymail::cache::MemoryCache;
use ferrymail::login::Logins;
use ferrymail::mailbox::{Mailboxes, MasterKey};
use ferrymail::snapshot::SnapshotHandle;
use ferrymail::store::{SqliteStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const SPEC: &str = r#"
[server]
hostname = "mx.fuzz.test"
data_dir = "data"
[domains."fuzz.test".aliases.me]
mailbox = { password = { hash = "$argon2id$v=19$m=19456,t=2,p=1$Qg98Va9ayqaw1HQ7vvK7nQ$xqVTaKQ3SYHqAOBOPknmor42UCN5mIJVixGFtr9oaHA" }, quota = "1MB" }
"#;

const MESSAGES: [&[u8]; 2] = [
    b"From: A <a@x.test>\r\nSubject: one\r\n\r\nhello\r\n",
    b"Subject: two\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ny\r\n--b--\r\n",
];

pub struct Base {
    pub runtime: tokio::runtime::Runtime,
    pub snapshot: Arc<SnapshotHandle>,
    pub mailboxes: Mailboxes,
    pub logins: Arc<Logins>,
    pub dir: tempfile::TempDir,
}

pub fn base() -> Base {
    let dir = tempfile::Builder::new()
        .prefix("ferrymail-fuzz")
        .tempdir_in(shm())
        .expect("temp dir");
    let spec_path = dir.path().join("spec.toml");
    std::fs::write(&spec_path, SPEC).expect("spec");
    let loaded = ferrymail::spec::load(&spec_path).expect("valid spec");
    let store = SqliteStore::open(&loaded.data_dir()).expect("store");
    let plan = ferrymail::reconcile::plan(&loaded, &store, "fuzz").expect("plan");
    ferrymail::reconcile::apply(&store, &plan).expect("apply");
    let store: Arc<dyn Store> = Arc::new(store);
    let snapshot = Arc::new(SnapshotHandle::new(store.as_ref()).expect("snapshot"));
    let mailboxes = Mailboxes::new(&loaded.data_dir(), MasterKey::new(&[7u8; 32]).expect("key"));
    for m in MESSAGES {
        mailboxes.append("me@fuzz.test", "INBOX", m, None).expect("append");
    }
    // Multi-threaded: sessions run their mailbox calls in block_in_place.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let logins = Arc::new(Logins::new(
        snapshot.clone(),
        Arc::new(MemoryCache::default()),
        Some(mailboxes.clone()),
    ));
    Base {
        runtime,
        snapshot,
        mailboxes,
        logins,
        dir,
    }
}

/// Memory-backed temp space when there is some: the mailbox fsyncs.
fn shm() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Starts a session on one end of a pipe (`start`), writes `prefix` and `data` as the
/// client, hangs up, and checks that the session ends.
pub fn feed(
    runtime: &tokio::runtime::Runtime,
    prefix: &[u8],
    data: &[u8],
    start: impl FnOnce(DuplexStream) -> tokio::task::JoinHandle<()>,
) {
    runtime.block_on(async {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let task = start(server);
        let (mut replies, mut requests) = tokio::io::split(client);
        let drain = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(replies.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let _ = requests.write_all(prefix).await;
        let _ = requests.write_all(data).await;
        let _ = requests.shutdown().await;
        drop(requests);
        let ended = tokio::time::timeout(Duration::from_secs(20), task).await;
        assert!(ended.is_ok(), "the session did not end after the client hung up");
        // The session's end closed its side: the drain ends too. Awaited, not aborted,
        // so the pipe is freed before libFuzzer counts leaks.
        let drained = tokio::time::timeout(Duration::from_secs(5), drain).await;
        assert!(drained.is_ok(), "the replies never ended");
    });
}
