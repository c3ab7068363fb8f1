//! The `http` listener (axum): for now the ACME HTTP-01 answers (RFC 8555 §8.3); the
//! admin UI, API, autoconfig and MTA-STS policy join it later.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::tls::acme::Challenges;

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    challenges: Arc<Challenges>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/.well-known/acme-challenge/{token}", get(http01))
        .with_state(challenges);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

/// The key authorization for a token ferrymail is being asked to prove, as plain text.
async fn http01(
    State(challenges): State<Arc<Challenges>>,
    Path(token): Path<String>,
) -> Result<String, StatusCode> {
    challenges.http01(&token).ok_or(StatusCode::NOT_FOUND)
}
