//! What a starting server needs to know to skip the plan: whether the spec it reads is,
//! byte for byte and secret for secret, the one last applied to the store as it is now.

use std::path::Path;

use sha2::Digest as _;

use crate::spec::LoadedSpec;
use crate::store::{Store, StoreError};

/// Where the last apply's inputs are noted, in the data directory.
pub const FILE: &str = "applied.json";

/// The last apply a server made: the store it left (its revision, and when its last
/// change was applied: a store made anew reaches the same revisions), and its inputs'
/// digest.
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Eq, Debug)]
pub struct Applied {
    pub revision: u64,
    pub applied_at: String,
    pub inputs: String,
}

/// What tells this store's state from another's: its revision and when its last change
/// was applied.
pub fn store_mark(store: &dyn Store) -> Result<(u64, String), StoreError> {
    let revision = store.revision()?;
    let applied_at = store
        .applies(1)?
        .into_iter()
        .next()
        .map(|a| a.applied_at)
        .unwrap_or_default();
    Ok((revision, applied_at))
}

/// A digest of everything the desired objects are computed from: this binary (another
/// build may compute them differently), the spec's files and where relative paths start,
/// every password hash kept outside the spec (an environment variable or a file that
/// changed must be planned again) and every Sieve script kept in a file (the other files
/// a spec names, certificates and keys, are read by serve itself at each start). Two
/// equal digests plan the same objects.
pub fn inputs(loaded: &LoadedSpec) -> String {
    let mut digest = sha2::Sha256::new();
    let mut part = |bytes: &[u8]| {
        digest.update((bytes.len() as u64).to_be_bytes());
        digest.update(bytes);
    };
    part(crate::LONG_VERSION.as_bytes());
    // The version names the commit, not the build: a rebuild (a dirty tree, a patched
    // package) is told apart by the executable itself.
    if let Ok(exe) = std::env::current_exe() {
        part(exe.as_os_str().as_encoded_bytes());
        if let Ok(meta) = std::fs::metadata(&exe) {
            part(&meta.len().to_be_bytes());
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            part(&modified.to_be_bytes());
        }
    }
    part(loaded.base_dir.as_os_str().as_encoded_bytes());
    for source in &loaded.sources {
        part(source.path.as_os_str().as_encoded_bytes());
        part(source.text.as_bytes());
    }
    let spec = &loaded.spec;
    let mailboxes = spec
        .domains
        .values()
        .flat_map(|d| d.aliases.values())
        .chain(spec.aliases.values())
        .filter_map(|alias| alias.mailbox.as_ref());
    for mailbox in mailboxes {
        // Read as the plan reads it (an inline hash is in the spec's text already).
        if let Some(password) = &mailbox.password
            && password.hash.is_none()
        {
            let path = crate::spec::SpecPath::default;
            match super::desired::password_hash(password, loaded, &path) {
                Ok(hash) => part(hash.as_bytes()),
                Err(e) => part(e.message.as_bytes()),
            }
        }
        // A script kept in a file is stored with the mailbox: an edit of the file alone
        // must be applied too.
        if let Some(sieve @ crate::spec::SieveSource::File(_)) = &mailbox.sieve {
            match sieve.text(&loaded.base_dir) {
                Ok(text) => part(text.as_bytes()),
                Err(e) => part(e.as_bytes()),
            }
        }
    }
    let hash = digest.finalize();
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last apply noted in `data_dir`, if any can be read.
pub fn last(data_dir: &Path) -> Option<Applied> {
    let text = std::fs::read(data_dir.join(FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Notes an apply that left the store at `revision` with nothing left to do.
pub fn note(data_dir: &Path, applied: &Applied) {
    if let Ok(json) = serde_json::to_vec(applied)
        && let Err(e) = std::fs::write(data_dir.join(FILE), json)
    {
        tracing::warn!(error = %e, "cannot note the applied spec; the next start plans it again");
    }
}

/// Forgets the last apply: the next start plans in full.
pub fn forget(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(FILE));
}
