//! The objects the store keeps (domains, DKIM keys, accounts, aliases, patterns): one
//! uniform shape for diffing and storage, with typed views for the code that reads them.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::routing::RejectMode;

/// Resource kinds, in the order they are created (deletes run in reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Domain,
    DkimKey,
    Account,
    Alias,
    Pattern,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Domain,
        Kind::DkimKey,
        Kind::Account,
        Kind::Alias,
        Kind::Pattern,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Domain => "domain",
            Kind::DkimKey => "dkim_key",
            Kind::Account => "account",
            Kind::Alias => "alias",
            Kind::Pattern => "pattern",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Fields whose values plans never show.
    pub fn sensitive_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Account => &["password_hash"],
            _ => &[],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub type Fields = serde_json::Map<String, serde_json::Value>;

/// Parses an object's JSON text into its fields (empty if it is not a JSON object).
pub fn parse_fields(json: &str) -> Fields {
    serde_json::from_str(json).unwrap_or_default()
}

/// One stored object: kind, id (unique per kind) and its fields as canonical JSON text
/// (keys sorted). Text, not a tree: a plan over 100,000 unchanged objects compares
/// strings, and only the changed ones are ever parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: Kind,
    pub id: String,
    pub json: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{kind} {id}: stored fields do not match the expected shape: {source}")]
pub struct ShapeError {
    kind: Kind,
    id: String,
    #[source]
    source: serde_json::Error,
}

impl Object {
    pub fn new<T: Serialize>(kind: Kind, id: impl Into<String>, record: &T) -> Object {
        // Through a Value, whose map is sorted: the text is the same however the record
        // type orders its fields.
        let json = serde_json::to_value(record)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| "{}".into());
        Object {
            kind,
            id: id.into(),
            json,
        }
    }

    pub fn from_fields(kind: Kind, id: impl Into<String>, fields: Fields) -> Object {
        Object {
            kind,
            id: id.into(),
            json: serde_json::Value::Object(fields).to_string(),
        }
    }

    /// The fields as a map, for display and diffs.
    pub fn fields(&self) -> Fields {
        parse_fields(&self.json)
    }

    pub fn record<T: DeserializeOwned>(&self) -> Result<T, ShapeError> {
        serde_json::from_str(&self.json).map_err(|source| ShapeError {
            kind: self.kind,
            id: self.id.clone(),
            source,
        })
    }
}

/// What a catch-all does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    pub forward: Vec<String>,
    pub reject: Option<RejectMode>,
    pub message: Option<String>,
    pub enabled: bool,
}

/// A mail domain's settings; id = the normalised domain name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub dns_provider: Option<String>,
    pub max_message_size: u64,
    pub max_forwards: u32,
    pub allowlist: Vec<String>,
    pub denylist: Vec<String>,
    pub greylisting: bool,
    /// Seconds a new (network, sender, recipient) triple waits; stores written before
    /// this field existed take the default.
    #[serde(default = "default_greylist_delay")]
    pub greylist_delay: u64,
    pub require_tls: bool,
    /// Added after the first release: stores written before default to enforcing.
    #[serde(default = "enforce")]
    pub reject_spf_fail: bool,
    #[serde(default = "enforce")]
    pub reject_dmarc_fail: bool,
    pub subaddressing: bool,
    /// Added later: stores written before keep tags to this server's addresses only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external_forward_tags: bool,
    pub catch_all: Option<RuleRecord>,
    /// Added with the spam filter: stores written before have the default.
    #[serde(default, skip_serializing_if = "SpamPolicy::is_default")]
    pub spam: SpamPolicy,
    /// Where the domain's DMARC and TLS reports are to be sent (lower case); at a domain
    /// of this server, the reports arriving there are read and kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmarc_reports: Option<String>,
}

/// What a domain does with the spam filter's verdicts. Scores are in hundredths (the
/// records compare exactly; a score has two decimals anyway).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpamPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_score: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junk_score: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junk_forward: Option<String>,
}

impl SpamPolicy {
    pub fn is_default(&self) -> bool {
        *self == SpamPolicy::default()
    }

    /// A score as the spec writes it, in hundredths.
    pub fn hundredths(score: f64) -> i64 {
        (score * 100.0).round() as i64
    }
}

pub const DEFAULT_GREYLIST_DELAY: u64 = 300;

fn default_greylist_delay() -> u64 {
    DEFAULT_GREYLIST_DELAY
}

fn enforce() -> bool {
    true
}

/// An address; id = "local@domain".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub forward: Vec<String>,
    pub mailbox: bool,
    pub reject: Option<RejectMode>,
    pub message: Option<String>,
    pub enabled: bool,
    /// Added with the spam filter: where junk this alias would forward goes instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junk_forward: Option<String>,
}

/// A regex rule; id = "domain regex".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternRecord {
    pub domain: String,
    pub regex: String,
    pub position: u32,
    pub forward: Vec<String>,
    pub reject: Option<RejectMode>,
    pub message: Option<String>,
    pub enabled: bool,
}

/// A mailbox login; id = "local@domain".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub password_hash: String,
    pub quota: Option<u64>,
    /// Submission files a copy of sent mail in the Sent folder.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub save_sent: bool,
    /// Declared calendars' display names (src/collections makes them on first use).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calendars: Vec<String>,
    /// Declared address books' display names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_books: Vec<String>,
    /// Declared collections other mailboxes see.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareRecord>,
    /// The mailbox's own sending limits (over `[limits.sending]`).
    #[serde(
        default,
        skip_serializing_if = "crate::spec::model::MailboxSending::is_empty"
    )]
    pub sending: crate::spec::model::MailboxSending,
    /// The operator's Sieve script for this mailbox (its text, read from the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sieve: Option<String>,
    /// The declared vacation responder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vacation: Option<crate::spec::model::Vacation>,
    /// What the owner may change on their own page (src/selfservice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub self_service: Vec<crate::spec::model::SelfService>,
    /// Where the main password is accepted.
    #[serde(
        default,
        skip_serializing_if = "crate::spec::model::MainPassword::is_everywhere"
    )]
    pub main_password: crate::spec::model::MainPassword,
}

impl AccountRecord {
    /// Whether the owner may change `what` themselves.
    pub fn allows(&self, what: crate::spec::model::SelfService) -> bool {
        self.self_service.contains(&what)
    }
}

/// One declared collection shared with one other mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRecord {
    /// "calendar" or "address book".
    pub kind: String,
    /// The collection's display name (its URL segment is the slug of it).
    pub name: String,
    /// The mailbox account that sees it.
    pub with: String,
    /// "read" or "write".
    pub access: String,
}

/// A DKIM key's public identity; id = "selector._domainkey.domain".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimKeyRecord {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
}

pub fn dkim_key_id(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

pub fn pattern_id(domain: &str, regex: &str) -> String {
    format!("{domain} {regex}")
}
