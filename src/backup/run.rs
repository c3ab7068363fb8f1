//! One backup run: snapshot → zstd → age → upload, streamed (no plaintext copy on disk,
//! no whole archive in memory), then the record, then retention.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::archive::{self, Hashing};
use super::target::{ChannelWriter, Target};
use super::{BackupError, Record, Settings};

/// A finished backup and the old ones retention removed.
#[derive(Debug)]
pub struct Created {
    pub record: Record,
    pub pruned: Vec<String>,
    /// Retention failed (the backup itself is stored): why.
    pub prune_error: Option<String>,
}

/// One backup of a data dir at a time, between `serve` and the CLI alike.
struct Lock(#[allow(dead_code)] std::fs::File);

impl Lock {
    fn take(data_dir: &Path) -> Result<Lock, BackupError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let path = data_dir.join(".backup.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(super::io_error(&path))?;
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(BackupError::Refused(format!(
                "another backup of {} is running",
                data_dir.display()
            )));
        }
        Ok(Lock(file))
    }
}

/// zstd level: fast, and most of the size is already-compressed-looking ciphertext of
/// mailbox messages anyway.
const LEVEL: i32 = 3;

/// Makes one backup of `data_dir` at the settings' target. `progress` hears bytes read.
pub async fn create(
    settings: &Settings,
    data_dir: &Path,
    database: Option<Arc<crate::mongo::Mongo>>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<Created, BackupError> {
    let _lock = Lock::take(data_dir)?;
    let target = Target::open(&settings.target)?;
    let started = Instant::now();
    let now = crate::store::unix_now();
    // Never overwrite: a second run within the same second gets a suffix.
    let taken = target.names().await?;
    let mut id = super::id_at(now);
    let mut n = 1;
    while taken.contains(&super::record_name(&id)) || taken.contains(&super::object_name(&id)) {
        n += 1;
        id = format!("{}-{n}", super::id_at(now));
    }
    let encryptor = settings.key.encryptor()?;
    let (tx, rx) = mpsc::channel(4);
    let snapshot = {
        let data_dir = data_dir.to_path_buf();
        let hostname = settings.hostname.clone();
        let include = settings.include_master_key;
        tokio::task::spawn_blocking(move || {
            let mut sink = Hashing::new(ChannelWriter::new(tx));
            let io = |e: std::io::Error| super::io_error(Path::new("the backup stream"))(e);
            let sealed = encryptor.wrap_output(&mut sink).map_err(io)?;
            let mut compressed = zstd::Encoder::new(sealed, LEVEL).map_err(io)?;
            let manifest = archive::write(
                &data_dir,
                &hostname,
                include,
                database.as_deref(),
                &mut compressed,
                &*progress,
            )?;
            compressed.finish().map_err(io)?.finish().map_err(io)?;
            sink.inner.finish().map_err(io)?;
            Ok::<_, BackupError>((manifest, sink.hex(), sink.bytes))
        })
    };
    let object = super::object_name(&id);
    let (uploaded, snapshot) = tokio::join!(target.upload(&object, rx), snapshot);
    let snapshot =
        snapshot.map_err(|e| BackupError::Refused(format!("the snapshot task failed: {e}")))?;
    let (manifest, sha256, size) = match (snapshot, uploaded) {
        (Ok(done), Ok(())) => done,
        // The side that failed first says why; the other only saw its partner stop.
        (Err(e), Err(up)) => {
            return Err(if e.to_string().contains("the upload stopped") {
                up
            } else {
                e
            });
        }
        (Err(e), Ok(())) => return Err(e),
        (Ok(_), Err(up)) => return Err(up),
    };
    let record = Record {
        format: super::RECORD_FORMAT,
        id: id.clone(),
        created_at: super::rfc3339(now),
        hostname: settings.hostname.clone(),
        ferrymail_version: env!("CARGO_PKG_VERSION").to_string(),
        object: super::object_name(&id),
        size,
        sha256,
        files: manifest.files.len() as u64,
        data_bytes: manifest.files.iter().map(|f| f.size).sum(),
        duration_ms: started.elapsed().as_millis() as u64,
        includes_master_key: manifest.includes_master_key,
        encryption: settings.key.kind().to_string(),
    };
    // The record is written last: it is what says the backup is complete.
    target.put_record(&record).await?;
    // A backup that is stored stays a success even when old ones cannot be removed
    // (credentials without delete rights, object lock): say so, do not retry it.
    let (pruned, prune_error) = match prune(&target, settings.keep, &settings.hostname).await {
        Ok(pruned) => (pruned, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Ok(Created {
        record,
        pruned,
        prune_error,
    })
}

/// Removes this host's oldest backups beyond `keep` (record first, so a half-removed
/// backup is never listed), and objects left by runs that never finished, older than
/// every kept one. Other hosts' backups under the same prefix are theirs to keep.
pub async fn prune(target: &Target, keep: u32, hostname: &str) -> Result<Vec<String>, BackupError> {
    let records: Vec<Record> = target
        .records()
        .await?
        .into_iter()
        .filter(|r| r.hostname == hostname)
        .collect();
    let surplus = records.len().saturating_sub(keep.max(1) as usize);
    let mut removed = Vec::new();
    for record in &records[..surplus] {
        target.delete(&super::record_name(&record.id)).await?;
        target.delete(&record.object).await?;
        removed.push(record.id.clone());
    }
    if let Some(oldest_kept) = records.get(surplus) {
        let kept: std::collections::HashSet<&str> = records[surplus..]
            .iter()
            .map(|r| r.object.as_str())
            .collect();
        for name in target.names().await? {
            let orphan = name.ends_with(".tar.zst.age")
                && !kept.contains(name.as_str())
                && name < super::object_name(&oldest_kept.id);
            if orphan {
                target.delete(&name).await?;
            }
        }
    }
    Ok(removed)
}
