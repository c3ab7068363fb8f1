//! The running services of `serve`: each listener, worker and background job is started
//! here with the shutdown signal, and all of them are drained together at the end.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::sync::watch;

/// What runs, and the signal that asks it to stop.
pub struct Services {
    tasks: tokio::task::JoinSet<()>,
    stop: watch::Sender<bool>,
    /// Every listener bound, as (name, address): `status` shows them (serve.json).
    pub listening: Vec<(String, String)>,
}

impl Services {
    pub fn new() -> Services {
        Services {
            tasks: tokio::task::JoinSet::new(),
            stop: watch::channel(false).0,
            listening: Vec::new(),
        }
    }

    /// The signal a service watches: it becomes `true` when the server drains.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Runs a service until it returns (after the shutdown signal, for long-lived ones).
    pub fn start(&mut self, service: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(service);
    }

    /// Binds a listener's address, and notes it as listening once bound.
    pub async fn bind(
        &mut self,
        name: &str,
        addr: SocketAddr,
    ) -> anyhow::Result<tokio::net::TcpListener> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {name} listener to {addr}"))?;
        self.listening.push((name.to_string(), addr.to_string()));
        tracing::info!(%addr, "{name} listening");
        Ok(listener)
    }

    /// Asks every service to stop and waits for each: listeners stop accepting, sessions
    /// end at their next command, deliveries under way finish.
    pub async fn drain(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}
