//! Restore: download, decrypt, unpack and check everything into a directory beside the
//! destination, and only then put it in place (the old data kept aside, never deleted).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::archive::{self, Hashing};
use super::target::{ChannelReader, Target, TargetConfig};
use super::{BackupError, Key, Record, io_error};

pub struct Restore {
    /// A backup id, or "latest".
    pub id: String,
    pub to: PathBuf,
    /// Replace a data dir that holds data (it is moved aside, not deleted).
    pub force: bool,
    /// Keep the mailboxes' UIDVALIDITY: only for a server moved whole (stopped, backed
    /// up, restored elsewhere) whose clients saw nothing newer than the backup.
    pub keep_uidvalidity: bool,
}

#[derive(Debug)]
pub struct RestoreReport {
    pub record: Record,
    /// Where the data that was in the way went.
    pub moved_aside: Option<PathBuf>,
    /// Mailbox folders given a new UIDVALIDITY.
    pub folders_renewed: usize,
    /// Calendars and address books given a new sync-token instance.
    pub collections_renewed: usize,
    /// The old data dir's master key was carried over (the backup holds none).
    pub master_key_carried: bool,
}

/// The pid of a `ferrymail serve` running on `dir`, if any.
fn running_server(dir: &Path) -> Option<u32> {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("serve.json")).ok()?).ok()?;
    let pid = state.get("pid")?.as_u64()? as i32;
    // Signal 0 checks that the process exists without touching it.
    (unsafe { libc::kill(pid, 0) } == 0).then_some(pid as u32)
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// Removes a half-made restore directory unless it was put in place.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub async fn restore(
    target: &TargetConfig,
    key: &Key,
    request: &Restore,
    progress: Arc<dyn Fn(u64, u64) + Send + Sync>,
) -> Result<RestoreReport, BackupError> {
    // systemd's StateDirectory under DynamicUser is a symlink into /var/lib/private:
    // the data goes where the link points, the link stays.
    let to = &std::fs::canonicalize(&request.to).unwrap_or_else(|_| request.to.clone());
    if let Some(pid) = running_server(to) {
        return Err(BackupError::Refused(format!(
            "a ferrymail server (pid {pid}) is serving from {}; stop it before restoring into it",
            to.display()
        )));
    }
    let occupied = to.exists() && !is_empty_dir(to);
    if occupied && !request.force {
        return Err(BackupError::Refused(format!(
            "{} already holds data; restore into an empty directory (--to DIR), or pass --force to replace it (the old one is kept beside it)",
            to.display()
        )));
    }
    let target = Target::open(target)?;
    let record = if request.id == "latest" {
        target
            .records()
            .await?
            .pop()
            .ok_or_else(|| BackupError::NoRecord("latest".into()))?
    } else {
        target
            .record(&request.id)
            .await?
            .ok_or_else(|| BackupError::NoRecord(request.id.clone()))?
    };
    let id = record.id.clone();
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&parent).map_err(io_error(&parent))?;
    let name = to
        .file_name()
        .map_or("data".into(), |n| n.to_string_lossy().to_string());
    let staging_dir = parent.join(format!(".{name}.restore-{id}"));
    if staging_dir.exists() {
        std::fs::remove_dir_all(&staging_dir).map_err(io_error(&staging_dir))?;
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging_dir)
            .map_err(io_error(&staging_dir))?;
    }
    let mut staging = Staging(Some(staging_dir.clone()));

    let (tx, rx) = mpsc::channel(4);
    let unpack = {
        let key = key.clone();
        let record = record.clone();
        let staging_dir = staging_dir.clone();
        let total = record.data_bytes;
        tokio::task::spawn_blocking(move || {
            let mut source = Hashing::new(ChannelReader::new(rx));
            let result = (|| {
                let plain = key.decrypt(&record.id, std::io::BufReader::new(&mut source))?;
                let decompressed = zstd::Decoder::new(plain).map_err(|e| BackupError::Damaged {
                    id: record.id.clone(),
                    message: e.to_string(),
                })?;
                let mut decompressed = decompressed;
                let manifest =
                    archive::extract(&record.id, &mut decompressed, &staging_dir, &|n| {
                        progress(n, total)
                    })?;
                // Read to the very end: the last chunk is what proves nothing was cut off.
                std::io::copy(&mut decompressed, &mut std::io::sink()).map_err(|e| {
                    BackupError::Damaged {
                        id: record.id.clone(),
                        message: e.to_string(),
                    }
                })?;
                Ok(manifest)
            })();
            // Whatever went wrong, a checksum that does not match is the clearer story
            // (a damaged header also fails to decrypt).
            let _ = std::io::copy(&mut source, &mut std::io::sink());
            if source.bytes != record.size || source.hex() != record.sha256 {
                return Err(BackupError::Checksum {
                    id: record.id.clone(),
                    expected: record.sha256.clone(),
                    actual: format!(
                        "{} ({} of {} bytes)",
                        source.hex(),
                        source.bytes,
                        record.size
                    ),
                });
            }
            result
        })
    };
    let (downloaded, unpacked) = tokio::join!(target.download(&id, tx), unpack);
    downloaded?;
    let manifest =
        unpacked.map_err(|e| BackupError::Refused(format!("the restore task failed: {e}")))??;

    let (mut folders_renewed, mut collections_renewed) = (0, 0);
    if !request.keep_uidvalidity {
        for file in manifest
            .files
            .iter()
            .filter(|f| f.path.starts_with("mailboxes/") && f.path.ends_with(".db"))
        {
            let path = staging_dir.join(&file.path);
            folders_renewed +=
                crate::mailbox::renew_uidvalidity(&path).map_err(|source| BackupError::Sqlite {
                    path: path.display().to_string(),
                    source,
                })?;
            collections_renewed += crate::collections::renew_instances(&path)
                .map_err(|e| BackupError::Refused(format!("{}: {e}", path.display())))?;
        }
    }
    let mut master_key_carried = false;
    if !manifest.includes_master_key && to.join("master.key").exists() {
        let from = to.join("master.key");
        let key = std::fs::read(&from).map_err(io_error(&from))?;
        let copy = staging_dir.join("master.key");
        crate::private_file::write(&copy, &key).map_err(io_error(&copy))?;
        master_key_carried = true;
    }

    let mut moved_aside = None;
    if occupied {
        let mut aside = parent.join(format!("{name}.before-restore-{id}"));
        for n in 2.. {
            if !aside.exists() {
                break;
            }
            aside = parent.join(format!("{name}.before-restore-{id}-{n}"));
        }
        std::fs::rename(to, &aside).map_err(io_error(to))?;
        moved_aside = Some(aside);
    } else if to.exists() {
        std::fs::remove_dir(to).map_err(io_error(to))?;
    }
    if let Err(e) = std::fs::rename(&staging_dir, to) {
        // Put the old data back rather than leave no data dir at all.
        if let Some(aside) = &moved_aside {
            let _ = std::fs::rename(aside, to);
        }
        return Err(io_error(to)(e));
    }
    staging.0 = None;
    if let Ok(dir) = std::fs::File::open(&parent) {
        let _ = dir.sync_all();
    }
    Ok(RestoreReport {
        record,
        moved_aside,
        folders_renewed,
        collections_renewed,
        master_key_carried,
    })
}
