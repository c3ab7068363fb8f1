//! A whole store as plain data: what `ferrymail migrate` reads from one backend and
//! writes into another, and what the conformance suite compares across backends.

use super::{ApplyRecord, BackupRun, DnsOwned, Kind, RetiredKey, StoredCertificate};

/// One object with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedObject {
    pub kind: Kind,
    pub id: String,
    /// Canonical JSON text of the fields.
    pub json: String,
    pub managed: bool,
    pub created_revision: u64,
    pub updated_revision: u64,
}

/// One DKIM key's material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedKey {
    pub id: String,
    pub private_der: Vec<u8>,
    pub public: Vec<u8>,
    pub created_revision: u64,
}

/// Everything a store holds. Lists are in a fixed order (by key) so that two dumps of the
/// same content compare equal whichever backend made them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreDump {
    pub revision: u64,
    pub objects: Vec<DumpedObject>,
    pub dkim_keys: Vec<DumpedKey>,
    pub dkim_retired: Vec<RetiredKey>,
    pub dns_owned: Vec<DnsOwned>,
    /// (directory URL, credentials JSON).
    pub acme_accounts: Vec<(String, String)>,
    pub certificates: Vec<StoredCertificate>,
    /// Oldest first.
    pub applies: Vec<ApplyRecord>,
    /// Oldest first.
    pub backup_runs: Vec<BackupRun>,
}

impl StoreDump {
    /// Puts every list in its canonical order.
    pub fn sort(&mut self) {
        self.objects
            .sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
        self.dkim_keys.sort_by(|a, b| a.id.cmp(&b.id));
        self.dkim_retired.sort_by(|a, b| a.id.cmp(&b.id));
        self.dns_owned.sort_by(|a, b| {
            (&a.provider, &a.zone, &a.name, &a.rtype, &a.value).cmp(&(
                &b.provider,
                &b.zone,
                &b.name,
                &b.rtype,
                &b.value,
            ))
        });
        self.acme_accounts.sort();
        self.certificates.sort_by(|a, b| a.id.cmp(&b.id));
        self.applies.sort_by_key(|a| a.revision);
    }

    /// A one-line count of what the dump holds, for `migrate`'s output.
    pub fn summary(&self) -> String {
        format!(
            "revision {}: {} objects, {} DKIM keys ({} retired), {} DNS records owned, {} certificates, {} ACME accounts, {} applies, {} backup runs",
            self.revision,
            self.objects.len(),
            self.dkim_keys.len(),
            self.dkim_retired.len(),
            self.dns_owned.len(),
            self.certificates.len(),
            self.acme_accounts.len(),
            self.applies.len(),
            self.backup_runs.len()
        )
    }
}
