//! How many connections `serve` takes: one count for the whole server (from the file
//! descriptors it may open), and each listener's share with its per-address limits.

use std::sync::Arc;

use crate::listen::{Global, Limits};

pub struct ConnectionLimits {
    limits: crate::spec::model::Limits,
    max_connections: usize,
    all: Arc<Global>,
    cache: Arc<dyn crate::cache::Cache>,
}

impl ConnectionLimits {
    pub fn new(
        limits: &crate::spec::model::Limits,
        file_descriptors: u64,
        cache: Arc<dyn crate::cache::Cache>,
    ) -> ConnectionLimits {
        let max_connections = limits
            .max_connections
            .map(|n| n as usize)
            .unwrap_or_else(|| crate::listen::default_max_connections(file_descriptors));
        tracing::info!(file_descriptors, max_connections, "connection limits");
        ConnectionLimits {
            limits: limits.clone(),
            max_connections,
            all: Global::new(max_connections),
            cache,
        }
    }

    /// A listener's limits. Where clients log in, connections that have not yet are
    /// counted per address too (a guesser holding sockets open).
    pub fn for_listener(&self, name: &'static str) -> Arc<Limits> {
        let logs_in = matches!(
            name,
            "submission" | "submissions" | "imap" | "imaps" | "pop3" | "pop3s" | "managesieve"
        );
        Limits::with(
            name,
            crate::listen::Settings {
                per_minute: self.limits.connections_per_minute,
                per_ip: self.limits.connections_per_ip,
                unauthenticated_per_ip: if logs_in {
                    self.limits.unauthenticated_per_ip
                } else {
                    0
                },
                // No one listener may take every connection from the others.
                listener_max: (self.max_connections * 3 / 4).max(1),
            },
            self.all.clone(),
            self.cache.clone(),
        )
    }
}
