//! DNS: the resolver the servers share (the system's or the spec's `dns.resolver`), the
//! records each mail domain needs, and the providers that publish them.

pub mod check;
pub mod diff;
pub mod dnssec;
pub mod lookup_error;
pub mod mta_sts;
pub mod provider;
pub mod rdata;
pub mod records;

use std::net::SocketAddr;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};

#[derive(Debug, thiserror::Error)]
#[error("DNS resolver: {0}")]
pub struct ResolverError(String);

/// A resolver that asks `server` (any port) over UDP and TCP, or the system's servers.
pub fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, ResolverError> {
    builder(server)?
        .build()
        .map_err(|e| ResolverError(e.to_string()))
}

/// The builder both the plain and the validating resolver start from.
fn builder(
    server: Option<SocketAddr>,
) -> Result<hickory_resolver::ResolverBuilder<TokioRuntimeProvider>, ResolverError> {
    match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            ns.connections = [ProtocolConfig::Udp, ProtocolConfig::Tcp]
                .into_iter()
                .map(|protocol| {
                    let mut c = ConnectionConfig::new(protocol);
                    c.port = addr.port();
                    c
                })
                .collect();
            let mut builder = Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            );
            // A resolver named in the spec is asked for everything: /etc/hosts would
            // otherwise answer for local names and addresses (and `dns check` would
            // report what this machine believes, not what is published).
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            Ok(builder)
        }
        None => Resolver::builder_tokio().map_err(|e| ResolverError(e.to_string())),
    }
}
