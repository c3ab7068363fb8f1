//! The MongoDB database in a backup: each collection of ferrymail's database as a
//! mongodump-style `.bson` file (documents back to back), and loading those into a database.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};

use super::{BackupError, io_error};
use crate::mongo::Mongo;

pub use super::DATABASE_DIR as DIR;
/// Documents per insert while loading.
const BATCH: usize = 1_000;

fn mongo_error(e: mongodb::error::Error) -> BackupError {
    BackupError::Refused(format!("MongoDB: {e}"))
}

/// ferrymail's collections in the database, sorted (the server's own left out).
async fn collections(mongo: &Mongo) -> Result<Vec<String>, BackupError> {
    let mut names: Vec<String> = mongo
        .db
        .list_collection_names()
        .await
        .map_err(mongo_error)?
        .into_iter()
        // Heartbeats say which processes run now, not what to restore.
        .filter(|n| !n.starts_with("system.") && n != "nodes")
        .collect();
    names.sort();
    Ok(names)
}

/// Writes every collection to `dir/NAME.bson`; returns the collections with their files.
/// The store's collections are read first and the mailboxes' last, so mail delivered
/// while the export runs is at worst in both the queue and a mailbox, never in neither.
pub fn export(mongo: &Mongo, dir: &Path) -> Result<Vec<(String, PathBuf)>, BackupError> {
    mongo.block(async {
        let mut names = collections(mongo).await?;
        names.sort_by_key(|n| {
            if n.starts_with("mailbox_") {
                2
            } else if n.starts_with("queue_") {
                1
            } else {
                0
            }
        });
        let mut out = Vec::new();
        for name in names {
            let path = dir.join(format!("{name}.bson"));
            let mut file = std::io::BufWriter::new(
                crate::private_file::create_new(&path).map_err(io_error(&path))?,
            );
            let mut cursor = mongo
                .coll(&name)
                .find(doc! {})
                .sort(doc! { "_id": 1 })
                .await
                .map_err(mongo_error)?;
            while let Some(d) = cursor.try_next().await.map_err(mongo_error)? {
                let bytes = d
                    .to_vec()
                    .map_err(|e| BackupError::Refused(format!("{name}: {e}")))?;
                file.write_all(&bytes).map_err(io_error(&path))?;
            }
            file.flush().map_err(io_error(&path))?;
            out.push((name, path));
        }
        Ok(out)
    })
}

/// Reads the documents of one `.bson` file.
fn documents(path: &Path) -> Result<Vec<Document>, BackupError> {
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(io_error(path))?);
    let mut docs = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match file.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io_error(path)(e)),
        }
        let size = i32::from_le_bytes(len);
        if !(5..=16 * 1024 * 1024 + 16 * 1024).contains(&size) {
            return Err(BackupError::Refused(format!(
                "{}: a document of {size} bytes: not a .bson file",
                path.display()
            )));
        }
        let mut bytes = len.to_vec();
        bytes.resize(size as usize, 0);
        file.read_exact(&mut bytes[4..]).map_err(io_error(path))?;
        docs.push(
            Document::from_reader(&bytes[..])
                .map_err(|e| BackupError::Refused(format!("{}: {e}", path.display())))?,
        );
    }
    Ok(docs)
}

/// The first collection of the database that holds documents, if any.
pub fn held(mongo: &Mongo) -> Result<Option<String>, BackupError> {
    mongo.block(async {
        for name in collections(mongo).await? {
            let n = mongo
                .coll(&name)
                .estimated_document_count()
                .await
                .map_err(mongo_error)?;
            if n > 0 {
                return Ok(Some(name));
            }
        }
        Ok(None)
    })
}

/// Loads `dir/*.bson` into the database. A database that holds any ferrymail data is
/// refused unless `replace`, which drops those collections first. Returns the documents
/// loaded.
pub fn import(mongo: &Mongo, dir: &Path, replace: bool) -> Result<u64, BackupError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "bson"))
        .collect();
    files.sort();
    if let Some(name) = held(mongo)?
        && !replace
    {
        return Err(BackupError::Refused(format!(
            "the database {:?} already holds data (collection {name}); restore into an empty database, or pass --force to replace it (stop every node first)",
            mongo.db.name()
        )));
    }
    mongo.block(async {
        for name in collections(mongo).await? {
            mongo.coll(&name).drop().await.map_err(mongo_error)?;
        }
        let mut loaded = 0u64;
        for path in &files {
            let Some(name) = path.file_stem().map(|s| s.to_string_lossy().to_string()) else {
                continue;
            };
            let docs = documents(path)?;
            for chunk in docs.chunks(BATCH) {
                mongo
                    .coll(&name)
                    .insert_many(chunk)
                    .await
                    .map_err(mongo_error)?;
            }
            loaded += docs.len() as u64;
        }
        Ok(loaded)
    })
}

/// Gives every mailbox folder in the database a new UIDVALIDITY, as a restore does for
/// mailbox files: UIDs given out since the backup may be given again. Returns how many.
pub fn renew_uidvalidity(mongo: &Mongo) -> Result<usize, BackupError> {
    mongo.block(async {
        let folders: Vec<Document> = mongo
            .coll("mailbox_folders")
            .find(doc! {})
            .await
            .map_err(mongo_error)?
            .try_collect()
            .await
            .map_err(mongo_error)?;
        let now = crate::store::unix_now();
        for (i, f) in folders.iter().enumerate() {
            let old = f.get_i64("uidvalidity").unwrap_or(0);
            let next = (now + i as i64).max(old + 1) & 0xFFFF_FFFF;
            mongo
                .coll("mailbox_folders")
                .update_one(
                    doc! { "_id": f.get("_id").cloned().unwrap_or_default() },
                    doc! { "$set": { "uidvalidity": next } },
                )
                .await
                .map_err(mongo_error)?;
        }
        Ok(folders.len())
    })
}
