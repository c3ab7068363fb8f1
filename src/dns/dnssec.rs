//! A resolver that checks DNSSEC itself (from the root's keys, or the spec's trust anchors)
//! and marks each answer secure, insecure or bogus: what DANE needs to trust a TLSA record.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::proto::rr::Name;
use hickory_resolver::proto::serialize::txt::trust_anchor::{Entry, Parser};

use super::ResolverError;

/// A validating resolver, and the names whose keys it trusts (the root, unless the spec
/// names its own anchors): asking for their DNSKEY shows whether validation works at all.
pub struct Validating {
    pub resolver: TokioResolver,
    pub anchors: Vec<Name>,
}

/// A resolver asking the same servers as the plain one, validating from `anchors` (a file
/// of DNSKEY records in zone-file form) or from the root's published keys.
pub fn validating(
    server: Option<SocketAddr>,
    anchors: Option<&Path>,
) -> Result<Validating, ResolverError> {
    let (trust, names) = match anchors {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ResolverError(format!("reading {}: {e}", path.display())))?;
            trust_anchors(&text).map_err(|e| ResolverError(format!("{}: {e}", path.display())))?
        }
        None => (TrustAnchors::default(), vec![Name::root()]),
    };
    let mut builder = super::builder(server)?;
    // Validated, a "no such record" answer (an MX host without AAAA) comes without the
    // TTL its SOA gives, and hickory caches such an answer for the least negative TTL,
    // by default none: every delivery asked again (benches/outbound_policy counted it).
    // Kept 30 s at least, a record added meanwhile is seen that much later at the most.
    builder.options_mut().negative_min_ttl = Some(std::time::Duration::from_secs(30));
    let resolver = builder
        .with_trust_anchor(Arc::new(trust))
        .build()
        .map_err(|e| ResolverError(e.to_string()))?;
    Ok(Validating {
        resolver,
        anchors: names,
    })
}

/// DNSKEY records as trust anchors, each for the name it is published at.
pub fn trust_anchors(text: &str) -> Result<(TrustAnchors, Vec<Name>), String> {
    let entries = Parser::new(text).parse().map_err(|e| e.to_string())?;
    let mut trust = TrustAnchors::empty();
    let mut names: Vec<Name> = Vec::new();
    for entry in entries {
        let Entry::DNSKEY(record) = entry else {
            continue;
        };
        trust.insert_with_name(record.data().public_key(), record.name().into());
        if !names.contains(record.name()) {
            names.push(record.name().clone());
        }
    }
    if names.is_empty() {
        return Err("no DNSKEY record in it".into());
    }
    Ok((trust, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_read_per_name() {
        let text = "test. IN DNSKEY 257 3 13 zPcbPsnx+hncP/+d95bDy09emCZqZrqHUHJvhRMH5OgYdkSInrsP+s1HTg9WerlXt7jOugaUaWe/W9YqhkBQNw==\n";
        let (_, names) = trust_anchors(text).expect("parsed");
        assert_eq!(names, vec![Name::from_ascii("test.").unwrap()]);
        assert!(trust_anchors("").is_err());
        assert!(trust_anchors("test. IN DNSKEY 257 3 13 !!!\n").is_err());
    }
}
