//! The snapshot as a tar stream: every SQLite file copied with the online backup API (a
//! consistent copy while the server writes), the key files, and a manifest of checksums.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{BackupError, io_error};

/// The last entry of every snapshot.
pub const MANIFEST: &str = "ferrymail-backup.json";

/// Files of the data dir that are not part of a backup: what a running server writes
/// about itself, a copy of a secret the spec holds, and the git checkout (fetched again).
const SKIPPED: &[&str] = &[
    "serve.json",
    "reconcile.json",
    "acme.json",
    "source.key",
    "source",
    "master.key",
    // A node's identity among the nodes of one store: a restore elsewhere is a new node.
    "node.id",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: String,
    pub hostname: String,
    pub ferrymail_version: String,
    pub includes_master_key: bool,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// What the data dir holds, in the order it is written: the store first, the queue
/// before the mailboxes (a delivery finishing in between is then in both, so a restore
/// may deliver it twice but never loses it), other files last.
fn collect(data_dir: &Path, include_master_key: bool) -> Result<Vec<(PathBuf, bool)>, BackupError> {
    let mut dbs = Vec::new();
    let mut files = Vec::new();
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let path = entry.path();
            let rel = path.strip_prefix(data_dir).unwrap_or(&path).to_path_buf();
            let name = entry.file_name().to_string_lossy().to_string();
            let top = rel.components().count() == 1;
            if name.starts_with('.')
                || (top
                    && SKIPPED.contains(&name.as_str())
                    && !(include_master_key && name == "master.key"))
            {
                continue;
            }
            // Followed: a mailboxes directory linked to a bigger disk is still backed up.
            let kind = std::fs::metadata(&path)
                .map_err(io_error(&path))?
                .file_type();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                if name.ends_with("-wal") || name.ends_with("-shm") || name.ends_with("-journal") {
                    continue;
                }
                if name.ends_with(".db") {
                    dbs.push(rel);
                } else {
                    files.push(rel);
                }
            }
        }
    }
    let rank = |p: &Path| match p.to_str() {
        Some("ferrymail.db") => 0,
        Some("queue.db") => 1,
        Some("maillog.db") => 3,
        _ => 2,
    };
    dbs.sort_by(|a, b| (rank(a), a).cmp(&(rank(b), b)));
    files.sort();
    let mut all: Vec<(PathBuf, bool)> = dbs.into_iter().map(|p| (p, true)).collect();
    all.extend(files.into_iter().map(|p| (p, false)));
    Ok(all)
}

/// Bytes the snapshot will read (for a progress bar): files and their WALs.
pub fn estimate(data_dir: &Path, include_master_key: bool) -> u64 {
    collect(data_dir, include_master_key)
        .unwrap_or_default()
        .iter()
        .map(|(rel, _)| {
            let path = data_dir.join(rel);
            let wal = PathBuf::from(format!("{}-wal", path.display()));
            [path, wal]
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .sum()
}

/// A reader that hashes and counts what passes through.
pub struct Hashing<R> {
    pub inner: R,
    pub sha: Sha256,
    pub bytes: u64,
}

impl<R> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            sha: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn hex(&self) -> String {
        hex::encode(self.sha.clone().finalize())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A consistent copy of one SQLite database (online backup API, in one step so no
/// writer can interleave), into `to`.
fn copy_database(from: &Path, to: &Path) -> Result<(), BackupError> {
    let sqlite = |source| BackupError::Sqlite {
        path: from.display().to_string(),
        source,
    };
    let source = rusqlite::Connection::open_with_flags(
        from,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite)?;
    source
        .busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sqlite)?;
    let mut copy = rusqlite::Connection::open(to).map_err(sqlite)?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut copy).map_err(sqlite)?;
        // All pages in one step: one read transaction, so the copy is one moment's state.
        let mut tries = 0;
        loop {
            match backup.step(-1).map_err(sqlite)? {
                rusqlite::backup::StepResult::Done => break,
                _ if tries < 3 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                _ => {
                    return Err(sqlite(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some("the database stayed locked".into()),
                    )));
                }
            }
        }
    }
    copy.close().map_err(|(_, e)| sqlite(e))?;
    Ok(())
}

/// Writes the snapshot of `data_dir` as a tar stream into `out`; `progress` hears the
/// bytes read so far. Returns the manifest written last.
pub fn write(
    data_dir: &Path,
    hostname: &str,
    include_master_key: bool,
    database: Option<&crate::mongo::Mongo>,
    out: impl Write,
    progress: &dyn Fn(u64),
) -> Result<Manifest, BackupError> {
    let entries = collect(data_dir, include_master_key)?;
    // Copies left by a run that was killed hold the store unencrypted: remove them
    // (the caller holds the backup lock, so no other run is using them).
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".backup-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    // Database copies are made beside the data (same disk, same owner).
    let staging = tempfile::Builder::new()
        .prefix(".backup-")
        .tempdir_in(data_dir)
        .map_err(io_error(data_dir))?;
    let mut tar = tar::Builder::new(out);
    let mut manifest = Manifest {
        format: super::RECORD_FORMAT,
        created_at: crate::store::now_rfc3339(),
        hostname: hostname.to_string(),
        ferrymail_version: env!("CARGO_PKG_VERSION").to_string(),
        includes_master_key: false,
        files: Vec::new(),
    };
    let mut done = 0u64;
    let copies = staging.path();
    std::thread::scope(|scope| -> Result<(), BackupError> {
        // Databases are copied one ahead of the stream: the next is copied while the
        // current one is compressed and sealed, so both cores work.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        scope.spawn(move || {
            for (n, (rel, is_db)) in entries.into_iter().enumerate() {
                let path = data_dir.join(&rel);
                let item = if is_db {
                    let copy = copies.join(format!("copy-{n}.db"));
                    match copy_database(&path, &copy) {
                        Ok(()) => Ok((rel, copy, true)),
                        // A database that went away meanwhile (a mailbox removed) is fine.
                        Err(_) if !path.exists() => continue,
                        Err(e) => Err(e),
                    }
                } else {
                    Ok((rel, path, false))
                };
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    return;
                }
            }
        });
        for item in rx {
            let (rel, source, is_db): (PathBuf, PathBuf, bool) = item?;
            // A database copy is ours alone; other files (keys, certificates: small) are
            // read whole, so one rewritten meanwhile cannot disagree with its header.
            let (file, size): (Box<dyn Read>, u64) = if is_db {
                let file = std::fs::File::open(&source).map_err(io_error(&source))?;
                let size = file.metadata().map_err(io_error(&source))?.len();
                (Box::new(file.take(size)), size)
            } else {
                match std::fs::read(&source) {
                    Ok(bytes) => {
                        let size = bytes.len() as u64;
                        (Box::new(std::io::Cursor::new(bytes)), size)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(&source)(e)),
                }
            };
            let mut header = tar::Header::new_gnu();
            header.set_size(size);
            header.set_mode(0o600);
            header.set_mtime(crate::store::unix_now().max(0) as u64);
            header.set_entry_type(tar::EntryType::Regular);
            let mut reader = Hashing::new(file);
            tar.append_data(&mut header, &rel, &mut reader)
                .map_err(io_error(&data_dir.join(&rel)))?;
            if reader.bytes != size {
                return Err(io_error(&source)(std::io::Error::other(format!(
                    "read {} bytes of {size}: it changed while being read",
                    reader.bytes
                ))));
            }
            if rel == Path::new("master.key") {
                manifest.includes_master_key = true;
            }
            done += size;
            progress(done);
            manifest.files.push(FileEntry {
                path: rel.to_string_lossy().to_string(),
                size,
                sha256: reader.hex(),
            });
            if is_db {
                let _ = std::fs::remove_file(&source);
            }
        }
        Ok(())
    })?;
    // Beside a MongoDB store, the database is most of what there is to keep.
    #[cfg(not(feature = "mongodb"))]
    let _ = database;
    #[cfg(feature = "mongodb")]
    if let Some(mongo) = database {
        for (name, path) in super::database::export(mongo, copies)? {
            let rel = Path::new(super::database::DIR).join(format!("{name}.bson"));
            let file = std::fs::File::open(&path).map_err(io_error(&path))?;
            let size = file.metadata().map_err(io_error(&path))?.len();
            let mut header = tar::Header::new_gnu();
            header.set_size(size);
            header.set_mode(0o600);
            header.set_mtime(crate::store::unix_now().max(0) as u64);
            header.set_entry_type(tar::EntryType::Regular);
            let mut reader = Hashing::new(file.take(size));
            tar.append_data(&mut header, &rel, &mut reader)
                .map_err(io_error(&path))?;
            done += size;
            progress(done);
            manifest.files.push(FileEntry {
                path: rel.to_string_lossy().to_string(),
                size,
                sha256: reader.hex(),
            });
            let _ = std::fs::remove_file(&path);
        }
    }
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Damaged {
        id: String::new(),
        message: e.to_string(),
    })?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(crate::store::unix_now().max(0) as u64);
    tar.append_data(&mut header, MANIFEST, &json[..])
        .map_err(io_error(Path::new(MANIFEST)))?;
    tar.finish().map_err(io_error(Path::new("the archive")))?;
    Ok(manifest)
}

/// A path from an archive, only if it stays inside the directory it is unpacked in.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Unpacks a snapshot's tar stream into `dest` (an empty, private directory) and checks
/// every file against the manifest. Returns the manifest.
pub fn extract(
    id: &str,
    input: impl Read,
    dest: &Path,
    progress: &dyn Fn(u64),
) -> Result<Manifest, BackupError> {
    let damaged = |message: String| BackupError::Damaged {
        id: id.to_string(),
        message,
    };
    let mut archive = tar::Archive::new(input);
    let mut seen = std::collections::BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    let mut done = 0u64;
    for entry in archive.entries().map_err(|e| damaged(e.to_string()))? {
        let mut entry = entry.map_err(|e| damaged(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| damaged(e.to_string()))?
            .to_path_buf();
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(damaged(format!("{} is not a regular file", name.display())));
        }
        if name == Path::new(MANIFEST) {
            let mut json = Vec::new();
            entry
                .read_to_end(&mut json)
                .map_err(|e| damaged(e.to_string()))?;
            manifest = Some(
                serde_json::from_slice(&json).map_err(|e| damaged(format!("its manifest: {e}")))?,
            );
            continue;
        }
        let rel = safe_relative(&name)
            .ok_or_else(|| damaged(format!("entry {} leaves the directory", name.display())))?;
        let path = dest.join(&rel);
        if let Some(parent) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_error(parent))?;
        }
        let file = crate::private_file::create_new(&path).map_err(io_error(&path))?;
        let mut writer = Hashing::new(file);
        let size = std::io::copy(&mut entry, &mut writer).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData
                || e.kind() == std::io::ErrorKind::UnexpectedEof
            {
                damaged(e.to_string())
            } else {
                io_error(&path)(e)
            }
        })?;
        writer.inner.sync_all().map_err(io_error(&path))?;
        done += size;
        progress(done);
        seen.insert(rel.to_string_lossy().to_string(), (size, writer.hex()));
    }
    let manifest = manifest.ok_or_else(|| damaged("it has no manifest".into()))?;
    for file in &manifest.files {
        match seen.remove(&file.path) {
            None => return Err(damaged(format!("{} is missing", file.path))),
            Some((size, sha)) if size != file.size || sha != file.sha256 => {
                return Err(damaged(format!(
                    "{} does not match its checksum",
                    file.path
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = seen.keys().next() {
        return Err(damaged(format!("{extra} is not in its manifest")));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_leaves_out_runtime_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("mailboxes/example.test")).unwrap();
        let db = rusqlite::Connection::open(data.join("mailboxes/example.test/a.db")).unwrap();
        db.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (42);")
            .unwrap();
        std::fs::write(data.join("srs.key"), b"k").unwrap();
        std::fs::write(data.join("master.key"), b"secret").unwrap();
        std::fs::write(data.join("serve.json"), b"{}").unwrap();
        let mut tar = Vec::new();
        let manifest = write(&data, "mx.example.test", false, None, &mut tar, &|_| {}).unwrap();
        let paths: Vec<_> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["mailboxes/example.test/a.db", "srs.key"]);
        // The writer's connection is still open with the row in its WAL: the copy has it.
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let read = extract("t", &tar[..], &out, &|_| {}).unwrap();
        assert_eq!(read, manifest);
        let copy = rusqlite::Connection::open(out.join("mailboxes/example.test/a.db")).unwrap();
        let x: i64 = copy.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 42);
        assert!(!out.join("master.key").exists());

        let mut with_key = Vec::new();
        let manifest = write(&data, "mx", true, None, &mut with_key, &|_| {}).unwrap();
        assert!(manifest.files.iter().any(|f| f.path == "master.key"));
        // A file changed inside the archive no longer matches the manifest.
        let at = with_key.windows(6).position(|w| w == b"secret").unwrap();
        with_key[at] = b'S';
        let out2 = dir.path().join("out2");
        std::fs::create_dir(&out2).unwrap();
        let err = extract("t", &with_key[..], &out2, &|_| {}).unwrap_err();
        assert!(
            err.to_string().contains("master.key does not match"),
            "{err}"
        );
    }

    #[test]
    fn entries_cannot_leave_the_directory() {
        assert_eq!(
            safe_relative(Path::new("a/b.db")),
            Some(PathBuf::from("a/b.db"))
        );
        assert_eq!(safe_relative(Path::new("../x")), None);
        assert_eq!(safe_relative(Path::new("/etc/passwd")), None);
    }
}
