//! Where backups go: a local directory (`file:///…`, written to a temporary name, synced,
//! renamed) or an S3-compatible bucket (object_store: custom endpoint, path-style, region).

use std::io::{Read, Write};
use std::path::PathBuf;
#[cfg(feature = "s3")]
use std::sync::Arc;

#[cfg(feature = "s3")]
use futures_util::StreamExt;
#[cfg(feature = "s3")]
use object_store::path::Path as ObjectPath;
#[cfg(feature = "s3")]
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{BackupError, Record};

/// Bytes per chunk handed from the snapshot to the upload.
const CHUNK: usize = 1 << 20;
/// S3 uploads above this go in parts of this size.
#[cfg(feature = "s3")]
const PART: usize = 8 << 20;

/// A target as the spec names it, with its credentials.
#[derive(Clone)]
pub enum TargetConfig {
    Dir(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: String,
        access_key: Option<String>,
        secret_key: Option<String>,
    },
}

impl std::fmt::Display for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetConfig::Dir(path) => write!(f, "file://{}", path.display()),
            TargetConfig::S3 {
                bucket,
                prefix,
                endpoint,
                ..
            } => {
                write!(f, "s3://{bucket}")?;
                if !prefix.is_empty() {
                    write!(f, "/{prefix}")?;
                }
                if let Some(endpoint) = endpoint {
                    // Credentials written into the URL stay out of plans, status and logs.
                    match url::Url::parse(endpoint) {
                        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
                            let _ = url.set_username("");
                            let _ = url.set_password(None);
                            write!(f, " at {url}")?;
                        }
                        _ => write!(f, " at {endpoint}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl TargetConfig {
    /// From `file:///path` or `s3://bucket/prefix`; `base` anchors a relative file path.
    pub fn parse(
        url: &str,
        base: &std::path::Path,
        endpoint: Option<String>,
        region: Option<String>,
        access_key: Option<String>,
        secret_key: Option<String>,
    ) -> Result<TargetConfig, BackupError> {
        let bad = |message: &str| BackupError::Target {
            target: url.to_string(),
            message: message.to_string(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(bad("names no directory"));
            }
            let dir = base.join(path);
            return Ok(TargetConfig::Dir(std::path::absolute(&dir).unwrap_or(dir)));
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(bad("must start with s3:// or file://"));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.len() < 3 {
            return Err(bad("names no bucket (s3://BUCKET/PREFIX)"));
        }
        if let Some(endpoint) = &endpoint {
            let parsed = url::Url::parse(endpoint)
                .map_err(|e| bad(&format!("endpoint {endpoint:?}: {e}")))?;
            let loopback = match parsed.host() {
                Some(url::Host::Domain(host)) => host == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            match parsed.scheme() {
                "https" => {}
                "http" if loopback => {}
                "http" => {
                    return Err(bad(
                        "a plain http:// endpoint would send the keys in the clear; use https:// (http is allowed on loopback only)",
                    ));
                }
                other => return Err(bad(&format!("endpoint scheme {other:?} is not http(s)"))),
            }
        }
        Ok(TargetConfig::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint,
            region: region.unwrap_or_else(|| "us-east-1".to_string()),
            access_key,
            secret_key,
        })
    }
}

impl TargetConfig {
    /// The target without its credentials: for validation, plans and pages.
    pub fn public(
        url: &str,
        base: &std::path::Path,
        endpoint: Option<String>,
    ) -> Result<TargetConfig, BackupError> {
        TargetConfig::parse(url, base, endpoint, None, None, None)
    }
}

/// One chunk of an upload; `End` says the snapshot finished (a channel closed without it
/// is a snapshot that failed, and its upload is abandoned, never completed).
pub enum Chunk {
    Data(Vec<u8>),
    End,
}

/// The snapshot side of an upload: a blocking writer feeding the async upload.
pub struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

fn upload_stopped() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped")
}

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Chunk>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Chunk::Data(data))
            .map_err(|_| upload_stopped())
    }

    /// Sends what is left and marks the end.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.tx
            .blocking_send(Chunk::End)
            .map_err(|_| upload_stopped())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The restore side of a download: a blocking reader fed by the async download.
pub struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<std::io::Result<Vec<u8>>>) -> Self {
        ChannelReader {
            rx,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.current.len() {
            match self.rx.blocking_recv() {
                Some(Ok(data)) => {
                    self.current = data;
                    self.at = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// An opened target.
pub struct Target {
    name: String,
    kind: Kind,
}

enum Kind {
    Dir(PathBuf),
    #[cfg(feature = "s3")]
    S3 {
        store: Arc<object_store::aws::AmazonS3>,
        prefix: String,
    },
}

impl Target {
    pub fn open(config: &TargetConfig) -> Result<Target, BackupError> {
        let name = config.to_string();
        let kind = match config {
            TargetConfig::Dir(path) => Kind::Dir(path.clone()),
            #[cfg(not(feature = "s3"))]
            TargetConfig::S3 { .. } => {
                return Err(BackupError::Target {
                    target: name,
                    message: crate::features::missing("an s3:// target", "s3"),
                });
            }
            #[cfg(feature = "s3")]
            TargetConfig::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                access_key,
                secret_key,
            } => {
                // The usual AWS_* variables apply unless the spec says otherwise.
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_virtual_hosted_style_request(false)
                    // A few quick retries per request; the scheduler retries the whole
                    // backup later, so a dead endpoint fails in seconds, not minutes.
                    .with_retry(object_store::RetryConfig {
                        backoff: Default::default(),
                        max_retries: 3,
                        retry_timeout: std::time::Duration::from_secs(60),
                    });
                // parse() allowed plain http on loopback only; AWS_ALLOW_HTTP from the
                // environment does not get around that.
                builder = builder
                    .with_allow_http(endpoint.as_ref().is_some_and(|e| e.starts_with("http://")));
                if let Some(endpoint) = endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(key) = access_key {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(key) = secret_key {
                    builder = builder.with_secret_access_key(key);
                }
                let store = builder.build().map_err(|e| BackupError::Target {
                    target: name.clone(),
                    message: e.to_string(),
                })?;
                Kind::S3 {
                    store: Arc::new(store),
                    prefix: prefix.clone(),
                }
            }
        };
        Ok(Target { name, kind })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn fail(&self, message: impl std::fmt::Display) -> BackupError {
        BackupError::Target {
            target: self.name.clone(),
            message: message.to_string(),
        }
    }

    #[cfg(feature = "s3")]
    fn object_path(prefix: &str, name: &str) -> ObjectPath {
        if prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{prefix}/{name}"))
        }
    }

    /// Names of every file at the target (records and objects alike).
    pub async fn names(&self) -> Result<Vec<String>, BackupError> {
        match &self.kind {
            Kind::Dir(dir) => {
                let mut names = Vec::new();
                let mut entries = match tokio::fs::read_dir(dir).await {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
                    Err(e) => return Err(self.fail(e)),
                };
                while let Some(entry) = entries.next_entry().await.map_err(|e| self.fail(e))? {
                    let name = entry.file_name().to_string_lossy().to_string();
                    if name.starts_with("ferrymail-") {
                        names.push(name);
                    }
                }
                Ok(names)
            }
            #[cfg(feature = "s3")]
            Kind::S3 { store, prefix } => {
                let prefix_path = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
                let mut listing = store.list(prefix_path.as_ref());
                let mut names = Vec::new();
                while let Some(meta) = listing.next().await {
                    let meta = meta.map_err(|e| self.fail(e))?;
                    if let Some(name) = meta.location.filename()
                        && name.starts_with("ferrymail-")
                        && meta.location.as_ref() == Self::object_path(prefix, name).as_ref()
                    {
                        names.push(name.to_string());
                    }
                }
                Ok(names)
            }
        }
    }

    /// Every finished backup, oldest first.
    pub async fn records(&self) -> Result<Vec<Record>, BackupError> {
        let mut records = Vec::new();
        for name in self.names().await? {
            if let Some(id) = super::id_of_record(&name) {
                match self.record(id).await {
                    Ok(Some(record)) => records.push(record),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(record = %name, error = %e, "unreadable backup record skipped")
                    }
                }
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    pub async fn record(&self, id: &str) -> Result<Option<Record>, BackupError> {
        if !super::is_id(id) {
            return Ok(None);
        }
        let name = super::record_name(id);
        let bytes = match &self.kind {
            Kind::Dir(dir) => match tokio::fs::read(dir.join(&name)).await {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.fail(e)),
            },
            #[cfg(feature = "s3")]
            Kind::S3 { store, prefix } => {
                match store.get(&Self::object_path(prefix, &name)).await {
                    Ok(got) => got.bytes().await.map_err(|e| self.fail(e))?.to_vec(),
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(self.fail(e)),
                }
            }
        };
        let record: Record =
            serde_json::from_slice(&bytes).map_err(|e| self.fail(format!("{name}: {e}")))?;
        if record.id != id || record.object != super::object_name(id) {
            return Err(self.fail(format!("{name} names another backup ({:?})", record.id)));
        }
        Ok(Some(record))
    }

    pub async fn put_record(&self, record: &Record) -> Result<(), BackupError> {
        let json = serde_json::to_vec_pretty(record).map_err(|e| self.fail(e))?;
        let (tx, rx) = mpsc::channel(2);
        tx.send(Chunk::Data(json)).await.map_err(|e| self.fail(e))?;
        tx.send(Chunk::End).await.map_err(|e| self.fail(e))?;
        self.upload(&super::record_name(&record.id), rx).await
    }

    pub async fn delete(&self, name: &str) -> Result<(), BackupError> {
        match &self.kind {
            Kind::Dir(dir) => match tokio::fs::remove_file(dir.join(name)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.fail(e)),
                _ => Ok(()),
            },
            #[cfg(feature = "s3")]
            Kind::S3 { store, prefix } => {
                match store.delete(&Self::object_path(prefix, name)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(self.fail(e)),
                }
            }
        }
    }

    /// Stores what arrives on `rx` as `name`; only a stream that ends with `Chunk::End`
    /// becomes an object.
    pub async fn upload(
        &self,
        name: &str,
        mut rx: mpsc::Receiver<Chunk>,
    ) -> Result<(), BackupError> {
        let stopped = || self.fail("the snapshot stopped before its end; nothing was stored");
        match &self.kind {
            Kind::Dir(dir) => {
                // Encrypted, but still nobody else's business: 0700 and 0600.
                let mut dirs = tokio::fs::DirBuilder::new();
                dirs.recursive(true).mode(0o700);
                dirs.create(dir).await.map_err(|e| self.fail(e))?;
                let partial = dir.join(format!(".{name}.partial"));
                let mut file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&partial)
                    .await
                    .map_err(|e| self.fail(e))?;
                let result = async {
                    loop {
                        match rx.recv().await {
                            Some(Chunk::Data(data)) => {
                                file.write_all(&data).await.map_err(|e| self.fail(e))?
                            }
                            Some(Chunk::End) => break,
                            None => return Err(stopped()),
                        }
                    }
                    file.sync_all().await.map_err(|e| self.fail(e))?;
                    tokio::fs::rename(&partial, dir.join(name))
                        .await
                        .map_err(|e| self.fail(e))?;
                    // The rename itself must survive a crash.
                    if let Ok(d) = tokio::fs::File::open(dir).await {
                        let _ = d.sync_all().await;
                    }
                    Ok(())
                }
                .await;
                if result.is_err() {
                    let _ = tokio::fs::remove_file(&partial).await;
                }
                result
            }
            #[cfg(feature = "s3")]
            Kind::S3 { store, prefix } => {
                let store: Arc<dyn object_store::ObjectStore> = store.clone();
                let mut writer = object_store::buffered::BufWriter::with_capacity(
                    store,
                    Self::object_path(prefix, name),
                    PART,
                );
                let result = async {
                    loop {
                        match rx.recv().await {
                            Some(Chunk::Data(data)) => {
                                writer.write_all(&data).await.map_err(|e| self.fail(e))?
                            }
                            Some(Chunk::End) => break,
                            None => return Err(stopped()),
                        }
                    }
                    writer.shutdown().await.map_err(|e| self.fail(e))
                }
                .await;
                if result.is_err() {
                    let _ = writer.abort().await;
                }
                result
            }
        }
    }

    /// Sends the bytes of `name` down `tx`; a missing object is `MissingObject(id)`.
    pub async fn download(
        &self,
        id: &str,
        tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
    ) -> Result<(), BackupError> {
        let name = super::object_name(id);
        let missing = || BackupError::MissingObject(id.to_string());
        match &self.kind {
            Kind::Dir(dir) => {
                use tokio::io::AsyncReadExt;
                let mut file = match tokio::fs::File::open(dir.join(&name)).await {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
                    Err(e) => return Err(self.fail(e)),
                };
                loop {
                    let mut buf = vec![0u8; CHUNK];
                    let n = file.read(&mut buf).await.map_err(|e| self.fail(e))?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.truncate(n);
                    if tx.send(Ok(buf)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            #[cfg(feature = "s3")]
            Kind::S3 { store, prefix } => {
                let got = match store.get(&Self::object_path(prefix, &name)).await {
                    Ok(got) => got,
                    Err(object_store::Error::NotFound { .. }) => return Err(missing()),
                    Err(e) => return Err(self.fail(e)),
                };
                let mut stream = got.into_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()));
                    let failed = chunk.is_err();
                    if tx.send(chunk.map(|c| c.to_vec())).await.is_err() || failed {
                        break;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print_without_secrets() {
        let base = std::path::Path::new("/etc/ferrymail");
        let s3 = TargetConfig::parse(
            "s3://bucket/ferry/mail/",
            base,
            Some("https://s3.example.net".into()),
            None,
            Some("AKID".into()),
            Some("SECRET".into()),
        )
        .unwrap();
        let shown = format!("{s3} {s3:?}");
        assert_eq!(
            s3.to_string(),
            "s3://bucket/ferry/mail at https://s3.example.net"
        );
        assert!(!shown.contains("SECRET") && !shown.contains("AKID"));
        let with_userinfo = TargetConfig::parse(
            "s3://bucket",
            base,
            Some("https://key:pass@s3.example.net".into()),
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            with_userinfo.to_string(),
            "s3://bucket at https://s3.example.net/"
        );
        let dir = TargetConfig::parse("file://backups", base, None, None, None, None).unwrap();
        assert_eq!(dir.to_string(), "file:///etc/ferrymail/backups");
        assert!(TargetConfig::parse("s3://", base, None, None, None, None).is_err());
        assert!(TargetConfig::parse("ftp://x", base, None, None, None, None).is_err());
    }

    #[test]
    fn plain_http_endpoints_are_for_loopback_only() {
        let at = |endpoint: &str| {
            TargetConfig::parse(
                "s3://bucket",
                std::path::Path::new("/"),
                Some(endpoint.into()),
                None,
                Some("a".into()),
                Some("b".into()),
            )
            .map(|config| Target::open(&config).is_ok())
        };
        assert!(at("http://127.0.0.1:9000").unwrap());
        assert!(at("https://s3.example.net").unwrap());
        assert!(at("http://s3.example.net").is_err());
        assert!(at("ftp://s3.example.net").is_err());
    }
}
