//! Where a domain's records are published: one trait, one implementation per kind of
//! DNS host (an RFC 2136 server, Cloudflare, or a person: manual), chosen per domain.

#[cfg(feature = "cloudflare")]
pub mod cloudflare;
pub mod manual;
pub mod rfc2136;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use super::records::Kind;
use crate::spec::{DnsProvider, DnsProviderKind};

/// One record as a zone holds it: absolute name (lower case, no final dot), type as
/// written ("MX", also types ferrymail never writes, e.g. NS), TTL and zone-file data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ZoneRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: u32,
    pub data: String,
}

/// One RRset (name and type) made to hold `after` instead of `before`: `before` empty
/// creates it, `after` empty deletes it. `before` is what the plan saw; a provider
/// refuses the change when the zone no longer holds exactly that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RrsetChange {
    pub name: String,
    pub kind: Kind,
    pub ttl: u32,
    pub before: Vec<String>,
    pub after: Vec<String>,
    /// Values in `after` that are someone else's (TXT beside ours): kept as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub theirs: Vec<String>,
    /// The TTL the zone has now, when it is not `ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_ttl: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("DNS provider {provider}: no zone there holds {domain}")]
    NoZone { provider: String, domain: String },
    #[error(
        "DNS provider {provider}: zone {zone} changed since the plan was made ({detail}); plan again"
    )]
    Changed {
        provider: String,
        zone: String,
        detail: String,
    },
    #[error("DNS provider {provider}: {message}")]
    Failed { provider: String, message: String },
}

impl ProviderError {
    pub fn failed(provider: &str, message: impl std::fmt::Display) -> ProviderError {
        ProviderError::Failed {
            provider: provider.to_string(),
            message: message.to_string(),
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A DNS host ferrymail reads a zone from and writes record sets to.
pub trait Provider: Send + Sync {
    /// The name the spec gives it (`[dns.providers.NAME]`).
    fn name(&self) -> &str;

    /// Whether apply writes to it (manual: the plan tells a person what to create).
    fn writes(&self) -> bool {
        true
    }

    /// A server that answers for the zones it writes, when one is known (RFC 2136): a
    /// change can be seen there at once, with no resolver's cache in between.
    fn authoritative(&self) -> Option<SocketAddr> {
        None
    }

    /// The zone (its apex, no final dot) that holds `domain`: the domain itself or a
    /// parent of it.
    fn zone_of<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<String, ProviderError>>;

    /// The records in `zone`. A provider that cannot list a whole zone (manual) looks up
    /// the `wanted` names and types only.
    fn list<'a>(
        &'a self,
        zone: &'a str,
        wanted: &'a [(String, Kind)],
    ) -> BoxFuture<'a, Result<Vec<ZoneRecord>, ProviderError>>;

    /// Makes every change in `zone`, all or none where the provider can promise it.
    fn apply<'a>(
        &'a self,
        zone: &'a str,
        changes: &'a [RrsetChange],
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
}

/// The provider `[dns.providers.NAME]` declares; secrets are read now, relative to the
/// spec's directory `base`. `resolver` is where the manual provider looks records up.
pub fn from_spec(
    name: &str,
    declared: &DnsProvider,
    base: &Path,
    resolver: Option<SocketAddr>,
) -> Result<Box<dyn Provider>, ProviderError> {
    let secret = |r: &Option<crate::spec::SecretRef>, field: &str| {
        r.as_ref()
            .ok_or_else(|| ProviderError::failed(name, format!("`{field}` is not set")))?
            .resolve(base)
            .map_err(|e| ProviderError::failed(name, format!("`{field}`: {e}")))
    };
    Ok(match declared.kind {
        DnsProviderKind::Rfc2136 => Box::new(rfc2136::Rfc2136::new(
            name,
            declared
                .server
                .ok_or_else(|| ProviderError::failed(name, "`server` is not set"))?,
            declared.tsig_name.as_deref().unwrap_or_default(),
            declared.tsig_algorithm.as_deref().unwrap_or("hmac-sha256"),
            &secret(&declared.tsig_secret, "tsig_secret")?,
        )?),
        #[cfg(not(feature = "cloudflare"))]
        DnsProviderKind::Cloudflare => {
            return Err(ProviderError::failed(
                name,
                crate::features::missing("kind = \"cloudflare\"", "cloudflare"),
            ));
        }
        #[cfg(feature = "cloudflare")]
        DnsProviderKind::Cloudflare => Box::new(cloudflare::Cloudflare::new(
            name,
            declared
                .api_url
                .as_deref()
                .unwrap_or(cloudflare::API_URL)
                .trim_end_matches('/'),
            secret(&declared.api_token, "api_token")?,
        )?),
        DnsProviderKind::Manual => Box::new(manual::Manual::new(name, resolver)?),
    })
}

/// `domain` and its parents, longest first ("a.b.test", "b.test", "test").
pub fn candidate_zones(domain: &str) -> impl Iterator<Item = &str> {
    let domain = domain.trim_end_matches('.');
    std::iter::successors(Some(domain), |d| d.split_once('.').map(|(_, rest)| rest))
}
