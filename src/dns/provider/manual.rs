//! The manual provider: ferrymail writes nothing. The plan shows what a person must
//! create at their DNS host, read from what resolvers see now (as `dns check` does).

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;

use super::{BoxFuture, Provider, ProviderError, RrsetChange, ZoneRecord};
use crate::dns::rdata::{record_type, text_of};
use crate::dns::records::Kind;

pub struct Manual {
    name: String,
    resolver: TokioResolver,
}

impl Manual {
    pub fn new(name: &str, resolver: Option<SocketAddr>) -> Result<Manual, ProviderError> {
        Ok(Manual {
            name: name.to_string(),
            resolver: crate::dns::resolver(resolver).map_err(|e| ProviderError::failed(name, e))?,
        })
    }
}

impl Provider for Manual {
    fn name(&self) -> &str {
        &self.name
    }

    fn writes(&self) -> bool {
        false
    }

    fn zone_of<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move { Ok(domain.trim_end_matches('.').to_string()) })
    }

    fn list<'a>(
        &'a self,
        _zone: &'a str,
        wanted: &'a [(String, Kind)],
    ) -> BoxFuture<'a, Result<Vec<ZoneRecord>, ProviderError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for (name, kind) in wanted {
                let rtype = record_type(*kind);
                // Nothing found (NXDOMAIN, no data, no answer) reads as "missing".
                let Ok(lookup) = self.resolver.lookup(format!("{name}."), rtype).await else {
                    continue;
                };
                for record in lookup.answers().iter().filter(|r| r.record_type() == rtype) {
                    out.push(ZoneRecord {
                        name: name.clone(),
                        rtype: kind.to_string(),
                        ttl: record.ttl,
                        data: text_of(&record.data),
                    });
                }
            }
            Ok(out)
        })
    }

    fn apply<'a>(
        &'a self,
        zone: &'a str,
        _changes: &'a [RrsetChange],
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            Err(ProviderError::failed(
                &self.name,
                format!("{zone} is published by hand (kind = \"manual\"); nothing was written"),
            ))
        })
    }
}
