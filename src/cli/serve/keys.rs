//! The keys `serve` keeps beside its data: the SRS key (shared by nodes through MongoDB),
//! the mailboxes' master key, and the webhook signing secret.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::routing::srs::Srs;
use crate::spec::LoadedSpec;
use crate::store::Store;

/// The SRS rewriter, with this server's (or cluster's) key.
pub fn srs(store: &Arc<dyn Store>, data_dir: &Path) -> anyhow::Result<Srs> {
    // Nodes sharing a store share the SRS key: a bounce to an address rewritten by one
    // node may come back to any other.
    // A new key has issued no short hashes: none are ever taken back.
    #[cfg_attr(not(feature = "mongodb"), allow(unused_mut))]
    let mut new_srs_key = store.connection().is_none() && !data_dir.join("srs.key").exists();
    let srs_key = match store.connection() {
        #[cfg(feature = "mongodb")]
        Some(mongo) => {
            let mut fresh = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut fresh)
                .map_err(|_| anyhow::anyhow!("no system randomness"))?;
            let key = mongo
                .shared_secret("srs", &fresh)
                .context("reading the SRS key from MongoDB")?;
            // Our random bytes came back: this node made the cluster's key just now.
            new_srs_key = key == fresh;
            key
        }
        _ => private_key_file(&data_dir.join("srs.key"))?,
    };
    Ok(Srs::new(srs_key).accepting_legacy_until(srs_legacy_until(store, data_dir, new_srs_key)?))
}

/// The day this server (or cluster) first wrote long SRS hashes: short ones are taken
/// back for addresses issued until then (at most `srs::MAX_AGE_DAYS` more). Written once.
fn srs_legacy_until(
    store: &Arc<dyn crate::store::Store>,
    data_dir: &Path,
    new_key: bool,
) -> anyhow::Result<u64> {
    let today = if new_key { 0 } else { Srs::today() }.to_string();
    let stored = match store.connection() {
        #[cfg(feature = "mongodb")]
        Some(mongo) => mongo
            .shared_secret("srs-legacy-until", today.as_bytes())
            .context("reading the SRS change day from MongoDB")?,
        _ => {
            let path = data_dir.join("srs.legacy-until");
            match std::fs::read(&path) {
                Ok(day) => day,
                Err(_) => {
                    std::fs::write(&path, &today)
                        .with_context(|| format!("writing {}", path.display()))?;
                    today.into_bytes()
                }
            }
        }
    };
    Ok(String::from_utf8_lossy(&stored).trim().parse().unwrap_or(0))
}

/// A random key kept in data_dir (0600), made on first use.
fn private_key_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Ok(key) = std::fs::read(path) {
        return Ok(key);
    }
    let mut key = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    super::super::write_private(path, &key)?;
    Ok(key)
}

/// The mailboxes' master key: the spec's secret, or data_dir/master.key (made once).
pub fn master_key(
    loaded: &LoadedSpec,
    data_dir: &Path,
) -> anyhow::Result<crate::mailbox::MasterKey> {
    let material = match &loaded.spec.server.master_key {
        Some(r) => r
            .resolve(&loaded.base_dir)
            .context("server.master_key")?
            .expose()
            .trim()
            .as_bytes()
            .to_vec(),
        None => {
            // As `init` writes it: 32 random bytes, base64, on one line.
            let path = data_dir.join("master.key");
            if !path.exists() {
                let mut key = [0u8; 32];
                aws_lc_rs::rand::fill(&mut key)
                    .map_err(|_| anyhow::anyhow!("no system randomness"))?;
                use base64::Engine;
                let text = base64::engine::general_purpose::STANDARD.encode(key) + "\n";
                super::super::write_private(&path, text.as_bytes())?;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            text.trim().as_bytes().to_vec()
        }
    };
    crate::mailbox::MasterKey::new(&material).context("server.master_key")
}

pub fn webhook_key(loaded: &LoadedSpec) -> anyhow::Result<Option<Vec<u8>>> {
    match &loaded.spec.delivery.webhook_secret {
        Some(r) => Ok(Some(
            r.resolve(&loaded.base_dir)
                .context("delivery.webhook_secret")?
                .expose()
                .as_bytes()
                .to_vec(),
        )),
        None => Ok(None),
    }
}
