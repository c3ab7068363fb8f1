//! One MongoDB connection shared by the store, the queue and the mail log: the driver's
//! client, the database, and a bridge from their synchronous traits to the async driver.

use std::future::Future;
use std::time::Duration;

use mongodb::bson::Document;
use mongodb::options::{Acknowledgment, ClientOptions, ReadConcern, WriteConcern};
use mongodb::{Collection, Database};

/// How long an operation waits for a usable server before it fails (the driver's default
/// is 30 s; a mail server should say what is wrong sooner).
const SERVER_SELECTION: Duration = Duration::from_secs(10);
/// Transactions that lose a write conflict are retried this many times.
pub const TRANSACTION_ATTEMPTS: usize = 5;

pub struct Mongo {
    /// The driver is async and the traits it serves are not: a small runtime of its own
    /// runs every operation, whatever runtime (or none) the caller is on.
    runtime: Option<tokio::runtime::Runtime>,
    pub db: Database,
    pub client: mongodb::Client,
    /// The servers named in the URL, without credentials.
    pub hosts: String,
}

impl Mongo {
    /// Connects lazily (the driver finds the servers on first use) with durable writes:
    /// acknowledged once a majority has them in its journal, so a failover loses nothing
    /// a node reported as done (a 250, an apply, a certificate).
    pub fn connect(
        url: &str,
        database: &str,
    ) -> Result<std::sync::Arc<Mongo>, mongodb::error::Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferrymail-mongo")
            .enable_all()
            .build()
            .map_err(mongodb::error::Error::custom)?;
        let (client, db, hosts) = run_on(&runtime, async {
            let mut options = ClientOptions::parse(url).await?;
            let hosts = options
                .hosts
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join(",");
            options.app_name = Some(format!("ferrymail {}", env!("CARGO_PKG_VERSION")));
            options
                .server_selection_timeout
                .get_or_insert(SERVER_SELECTION);
            match &options.write_concern {
                None => {
                    options.write_concern = Some(
                        WriteConcern::builder()
                            .w(Acknowledgment::Majority)
                            .journal(true)
                            .build(),
                    )
                }
                // The URL may ask for less; a 250 then means less than it should.
                Some(wc) if wc.w != Some(Acknowledgment::Majority) || wc.journal == Some(false) => {
                    tracing::warn!(
                        "the MongoDB URL sets a write concern weaker than w=majority with journal: mail acknowledged with 250 can be lost in a failover"
                    );
                }
                Some(_) => {}
            }
            options.read_concern.get_or_insert(ReadConcern::majority());
            let client = mongodb::Client::with_options(options)?;
            let db = client.database(database);
            Ok::<_, mongodb::error::Error>((client, db, hosts))
        })?;
        Ok(std::sync::Arc::new(Mongo {
            runtime: Some(runtime),
            db,
            client,
            hosts,
        }))
    }

    /// Runs a future to completion on the connection's runtime.
    pub fn block<F: Future + Send>(&self, future: F) -> F::Output
    where
        F::Output: Send,
    {
        let runtime = self
            .runtime
            .as_ref()
            .expect("runtime lives as long as the connection");
        run_on(runtime, future)
    }

    /// Runs a background task (a change stream) on the connection's runtime.
    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) -> Option<()> {
        self.runtime.as_ref().map(|r| {
            r.spawn(future);
        })
    }

    pub fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    /// A secret every node must share (the SRS key): the one stored under `name`, or
    /// `fresh` when none is yet (the first node to ask stores it; the others read it).
    pub fn shared_secret(
        &self,
        name: &str,
        fresh: &[u8],
    ) -> Result<Vec<u8>, mongodb::error::Error> {
        use mongodb::bson::{Binary, Bson, doc, spec::BinarySubtype};
        self.block(async {
            let secrets = self.coll("secrets");
            let value = Binary {
                subtype: BinarySubtype::Generic,
                bytes: fresh.to_vec(),
            };
            secrets
                .update_one(
                    doc! { "_id": name },
                    doc! { "$setOnInsert": { "value": value } },
                )
                .upsert(true)
                .await?;
            let stored = secrets.find_one(doc! { "_id": name }).await?;
            match stored.as_ref().and_then(|d| d.get("value")) {
                Some(Bson::Binary(b)) => Ok(b.bytes.clone()),
                _ => Err(mongodb::error::Error::custom(format!(
                    "the shared secret {name:?} is not stored as bytes"
                ))),
            }
        })
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        // Dropping a runtime from async code panics; this one may be dropped anywhere.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Bytes as a BSON binary value.
pub fn binary(bytes: &[u8]) -> mongodb::bson::Binary {
    mongodb::bson::Binary {
        subtype: mongodb::bson::spec::BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    }
}

/// A binary field's bytes (empty when missing or of another type).
pub fn bytes(d: &Document, key: &str) -> Vec<u8> {
    match d.get(key) {
        Some(mongodb::bson::Bson::Binary(b)) => b.bytes.clone(),
        _ => Vec::new(),
    }
}

/// An integer field, however it was stored (0 when missing).
pub fn int(d: &Document, key: &str) -> i64 {
    use mongodb::bson::Bson;
    match d.get(key) {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Double(v)) => *v as i64,
        _ => 0,
    }
}

/// A string field ("" when missing).
pub fn text(d: &Document, key: &str) -> String {
    d.get_str(key).unwrap_or_default().to_string()
}

/// Whether a write failed on a unique index (another node made the same thing).
pub fn is_duplicate(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().all(|w| w.code == 11000)),
        _ => false,
    }
}

/// An index on `keys`.
pub fn index(keys: Document) -> mongodb::IndexModel {
    mongodb::IndexModel::builder().keys(keys).build()
}

/// A unique index on `keys`: what SQLite's primary keys and UNIQUE constraints are.
pub fn unique(keys: Document) -> mongodb::IndexModel {
    mongodb::IndexModel::builder()
        .keys(keys)
        .options(
            mongodb::options::IndexOptions::builder()
                .unique(true)
                .build(),
        )
        .build()
}

/// Blocks on `future` on `runtime`, from any thread: inside tokio's multi-threaded runtime
/// it steps out first (block_in_place); inside a current-thread runtime, which cannot
/// block, it waits from a scoped thread.
fn run_on<F: Future + Send>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output
where
    F::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| runtime.block_on(future)),
        Ok(_) => std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
        Err(_) => runtime.block_on(future),
    }
}

/// Waits a little before a transaction's next attempt: a few milliseconds, more with each
/// attempt and drawn at random, so that two nodes that conflicted do not meet again.
pub async fn back_off(attempt: usize) {
    let mut byte = [0u8; 1];
    let _ = aws_lc_rs::rand::fill(&mut byte);
    let ms = (attempt as u64) * (5 + u64::from(byte[0]) % 20);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// An error that may carry the driver's, whose labels say whether a transaction can be
/// retried.
pub trait DriverError: From<mongodb::error::Error> {
    fn driver(&self) -> Option<&mongodb::error::Error>;

    fn has_label(&self, label: &str) -> bool {
        self.driver().is_some_and(|e| e.contains_label(label))
    }
}

/// Runs `$body` (an expression using the session `$s`, returning `Result<_, E>` with
/// `E: DriverError`) in a transaction on `$mongo`, retrying it when MongoDB says the
/// failure was transient (another node's write touched the same documents) and retrying
/// a commit whose outcome is unknown.
macro_rules! in_transaction {
    ($mongo:expr, |$s:ident| $body:expr) => {{
        async {
            use mongodb::error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
            use $crate::mongo::DriverError as _;
            let mut session = $mongo.client.start_session().await?;
            let mut attempt = 0;
            'attempts: loop {
                attempt += 1;
                session.start_transaction().await?;
                let value = {
                    let $s = &mut session;
                    match $body.await {
                        Ok(value) => value,
                        Err(e) => {
                            let _ = session.abort_transaction().await;
                            if attempt < $crate::mongo::TRANSACTION_ATTEMPTS
                                && e.has_label(TRANSIENT_TRANSACTION_ERROR)
                            {
                                $crate::mongo::back_off(attempt).await;
                                continue 'attempts;
                            }
                            return Err(e);
                        }
                    }
                };
                let mut commits = 0;
                loop {
                    commits += 1;
                    match session.commit_transaction().await {
                        Ok(()) => return Ok(value),
                        Err(e)
                            if commits < $crate::mongo::TRANSACTION_ATTEMPTS
                                && e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => {}
                        Err(e)
                            if attempt < $crate::mongo::TRANSACTION_ATTEMPTS
                                && e.contains_label(TRANSIENT_TRANSACTION_ERROR) =>
                        {
                            $crate::mongo::back_off(attempt).await;
                            continue 'attempts;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }};
}
pub(crate) use in_transaction;
