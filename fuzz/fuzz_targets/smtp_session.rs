//! Fuzzes one MX session: arbitrary client bytes against the real session code, with a
//! real spool and snapshot. A session must never panic, and must end when the client
//! hangs up.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferrymail::queue::log::MailLog;
use ferrymail::queue::{QueueDb, Spool};
use ferrymail::routing::srs::Srs;
use ferrymail::smtp::{MxContext, Session};
use ferrymail::snapshot::SnapshotHandle;
use ferrymail::store::{SqliteStore, Store};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct World {
    runtime: tokio::runtime::Runtime,
    ctx: Arc<MxContext>,
    _dir: tempfile::TempDir,
}

const SPEC: &str = r#"
[server]
hostname = "mx.fuzz.test"
data_dir = "data"
[domains."fuzz.test"]
catch_all = { reject = "hard" }
max_message_size = "64KB"
[domains."fuzz.test".aliases.a]
forward = ["x@elsewhere.test"]
[domains."fuzz.test".aliases.q]
reject = "quiet"
[[domains."fuzz.test".patterns]]
regex = '^t-(\d+)$'
forward = ['t+$1@elsewhere.test']
"#;

fn world() -> World {
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let queue = Arc::new(QueueDb::open(&loaded.data_dir()).expect("queue"));
    let ctx = runtime.block_on(async {
        Arc::new(MxContext {
            hostname: "mx.fuzz.test".into(),
            snapshot,
            spool: Spool::start(queue),
            tls: None,
            srs: Srs::new(b"fuzz".to_vec()),
            max_message_size: 64 * 1024,
            authenticator: None,
            signing: Arc::new(ferrymail::dkim::signing::SigningKeys::new(store)),
            log: Arc::new(MailLog::open(&loaded.data_dir(), 30 * 86_400).expect("log")),
            cache: Arc::new(ferrymail::cache::MemoryCache::default()),
            limits: ferrymail::listen::Limits::new(
                "mx",
                0,
                1_000_000,
                Arc::new(ferrymail::cache::MemoryCache::default()),
            ),
            logins: None,
            spam: None,
            mailboxes: ferrymail::mailbox::Mailboxes::new(
                &loaded.data_dir(),
                ferrymail::mailbox::MasterKey::new(&[7u8; 32]).expect("key"),
            ),
            // No refusal is answered late: the fuzzer would wait.
            session_limits: ferrymail::limits::Smtp {
                error_sleep: std::time::Duration::ZERO,
                ..Default::default()
            },
            message_memory: ferrymail::limits::MessageMemory::new(1 << 30),
        })
    });
    World {
        runtime,
        ctx,
        _dir: dir,
    }
}

/// Memory-backed temp space when there is some: the spool fsyncs.
fn shm() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

static WORLD: OnceLock<World> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let world = WORLD.get_or_init(world);
    world.runtime.block_on(async {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let session = Session::new(
            world.ctx.clone(),
            server,
            "127.0.0.1:2525".parse().expect("addr"),
            false,
        );
        let task = tokio::spawn(session.run(true));
        let (mut replies, mut requests) = tokio::io::split(client);
        let drain = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(replies.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let _ = requests.write_all(data).await;
        let _ = requests.shutdown().await;
        drop(requests);
        let ended = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(
            ended.is_ok(),
            "the session did not end after the client hung up"
        );
        drain.abort();
    });
});
