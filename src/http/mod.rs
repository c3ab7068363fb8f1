//! The `http` and `https` listeners (axum): ACME answers (HTTP-01 over http, TLS-ALPN-01
//! inside the https handshake), health checks, client autoconfiguration, MTA-STS, and the
//! DAV tree (also alone on the `caldav` and `carddav` listeners).

pub mod admin;
pub mod api;
pub mod edits;
mod wellknown;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{any, get, post};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::LazyConfigAcceptor;

use crate::tls::acme::{ACME_TLS_ALPN, Challenges};

/// A TLS handshake, or a request's headers, that take longer are dropped.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// A whole request, its body included, gets this long: a body sent one byte every few
/// seconds is cut off with 408 (hyper times only the headers).
const REQUEST_BUDGET: Duration = Duration::from_secs(60);

/// What the HTTP side says about the server, built from the applied spec (the servers
/// never read the spec themselves).
#[derive(Debug, Clone, Default)]
pub struct Site {
    pub hostname: String,
    /// The mail services clients may be pointed at.
    pub services: Vec<Service>,
    /// The MTA-STS policy text, when one is published.
    pub mta_sts: Option<String>,
    /// Administrators of the web admin: (name, argon2 hash).
    pub admins: Vec<(String, String)>,
    /// The generated password of "admin" while the spec declares no administrator.
    pub first_boot_password: Option<String>,
    /// The backup schedule and target, when backups are declared.
    pub backups: Option<(String, String)>,
    /// API tokens: (name, token).
    pub api_tokens: Vec<(String, String)>,
    /// The DNS records each domain needs.
    pub records: Vec<(String, Vec<crate::dns::records::Record>)>,
    /// The ports CalDAV and CardDAV are served on (their own listener, else https).
    pub caldav_port: Option<u16>,
    pub carddav_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    pub kind: ServiceKind,
    pub port: u16,
    pub security: Security,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ServiceKind {
    Imap,
    Pop3,
    Submission,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Security {
    Implicit,
    StartTls,
}

/// Everything a request may look at.
#[derive(Clone)]
pub struct AppState {
    pub challenges: Arc<Challenges>,
    pub site: Arc<arc_swap::ArcSwap<Site>>,
    pub snapshot: Arc<crate::snapshot::SnapshotHandle>,
    /// Set once the listeners are bound and the spec applied (`/readyz`).
    pub ready: Arc<AtomicBool>,
    /// Reads the values `/metrics` reports (blocking: it asks the queue and the store).
    pub metrics: MetricsSource,
    pub admin: Arc<admin::AdminState>,
    /// Calendars and contacts (src/dav).
    pub dav: Arc<crate::dav::Dav>,
}

pub type MetricsSource = Arc<dyn Fn() -> crate::metrics::Values + Send + Sync>;

/// The DAV tree's routes, on every router that serves it.
fn dav_routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/.well-known/caldav", any(crate::dav::well_known))
        .route("/.well-known/carddav", any(crate::dav::well_known))
        .route("/dav", any(dav))
        .route("/dav/", any(dav))
        .route("/dav/{*rest}", any(dav))
}

async fn dav(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let tls = request.extensions().get::<admin::OverTls>().is_some();
    crate::dav::handle(state.dav.clone(), peer, tls, request).await
}

/// The `caldav` and `carddav` listeners: the DAV tree only, its root also at `/`.
fn dav_router(state: AppState) -> Router {
    dav_routes(Router::new())
        .route("/", any(dav))
        .route("/healthz", get(wellknown::healthz))
        .layer(axum::middleware::from_fn(guard))
        .with_state(state)
}

fn router(state: AppState) -> Router {
    dav_routes(Router::new())
        .route("/.well-known/acme-challenge/{token}", get(http01))
        .route("/healthz", get(wellknown::healthz))
        .route("/readyz", get(wellknown::readyz))
        .route("/metrics", get(wellknown::metrics))
        .route(
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            get(wellknown::autoconfig),
        )
        .route("/mail/config-v1.1.xml", get(wellknown::autoconfig))
        .route(
            "/autodiscover/autodiscover.xml",
            post(wellknown::autodiscover),
        )
        .route(
            "/Autodiscover/Autodiscover.xml",
            post(wellknown::autodiscover),
        )
        .route("/.well-known/mta-sts.txt", get(wellknown::mta_sts))
        // The host's front page is the admin (its login, for a stranger).
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/admin") }),
        )
        .route("/admin", get(admin::overview))
        .route("/admin/login", get(admin::login_form).post(admin::login))
        .route("/admin/logout", post(admin::logout))
        .route("/admin/aliases", get(admin::aliases))
        .route("/admin/aliases/new", get(admin::new_alias))
        .route("/admin/aliases/{address}/edit", get(admin::edit_alias_form))
        .route("/admin/domains/new", get(admin::new_domain))
        .route("/admin/domains/{name}/edit", get(admin::edit_domain_form))
        .route("/admin/edit", post(admin::edit))
        .route("/admin/emails", get(admin::emails))
        .route("/admin/me", get(admin::me))
        .route("/admin/me/password", post(admin::change_password))
        .route("/admin/me/app-passwords", post(admin::make_app_password))
        .route(
            "/admin/me/app-passwords/{id}/revoke",
            post(admin::revoke_app_password),
        )
        .route("/admin/me/forwarding", post(admin::set_forwarding))
        .route("/admin/me/vacation", post(admin::set_vacation))
        .route("/admin/me/apple.mobileconfig", get(admin::apple_profile))
        .route("/admin/queue", get(admin::queue))
        .route("/admin/queue/{id}/{action}", post(admin::queue_action))
        .route("/admin/reports", get(admin::reports))
        .route("/admin/reports/{id}", get(admin::report))
        .route("/admin/logs", get(admin::errors))
        .route("/admin/backups", get(admin::backups))
        .route("/admin/mailboxes", get(admin::mailboxes))
        .route("/admin/domains", get(admin::domains))
        .route("/admin/certificates", get(admin::certificates))
        .route("/api/v1/certificates", get(api::certificates))
        .route("/admin/plan", get(admin::plan_form).post(admin::plan))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/domains", get(api::domains).post(edits::add_domain))
        .route(
            "/api/v1/domains/{name}",
            axum::routing::patch(edits::edit_domain).delete(edits::remove_domain),
        )
        .route("/api/v1/domains/{name}/patterns", post(edits::add_pattern))
        .route(
            "/api/v1/domains/{name}/patterns/{index}",
            axum::routing::patch(edits::edit_pattern).delete(edits::remove_pattern),
        )
        .route("/api/v1/aliases", get(api::aliases).post(edits::add_alias))
        .route(
            "/api/v1/aliases/{address}",
            axum::routing::patch(edits::edit_alias).delete(edits::remove_alias),
        )
        .route(
            "/api/v1/aliases/{address}/password",
            post(edits::new_mailbox_password),
        )
        .route("/api/v1/route", get(api::route))
        .route("/api/v1/mailboxes", get(api::mailboxes))
        .route("/api/v1/queue", get(api::queue))
        .route("/api/v1/emails", get(api::emails))
        .route("/api/v1/logs", get(api::logs))
        .route("/api/v1/backups", get(api::backups))
        .route("/api/v1/plan", post(api::plan))
        .route("/api/v1/reconcile", post(api::reconcile))
        .layer(axum::middleware::from_fn(guard))
        .with_state(state)
}

/// axum's default limit on a body its extractors read (2 MiB).
const FORM_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Every request: within its time budget, and every response with the headers that
/// keep a browser from being turned against the admin (no framing, no foreign scripts,
/// no referrer leaving with a URL, HTTPS remembered).
async fn guard(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::header::{self, HeaderValue};
    use axum::response::IntoResponse;
    let tls = request.extensions().get::<admin::OverTls>().is_some();
    let path = request.uri().path();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // The admin's and the API's bodies are held to axum's limit; a declared length past
    // it is answered before the body is read, so the client hears 413 rather than a
    // reset halfway through sending (DAV checks its own, larger limit the same way).
    let too_large = (path.starts_with("/api/") || path.starts_with("/admin"))
        && declared.is_some_and(|length| length > FORM_BODY_LIMIT);
    let mut response = if too_large {
        (StatusCode::PAYLOAD_TOO_LARGE, "the body is too large\n").into_response()
    } else {
        match tokio::time::timeout(REQUEST_BUDGET, next.run(request)).await {
            Ok(response) => response,
            Err(_) => (StatusCode::REQUEST_TIMEOUT, "the request took too long\n").into_response(),
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, content_security_policy());
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// Only this server's own resources; the one inline script by its hash. Made once.
fn content_security_policy() -> axum::http::HeaderValue {
    static CSP: std::sync::OnceLock<axum::http::HeaderValue> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let hash = sha2::Sha256::digest(admin::COPY_SCRIPT.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(hash);
        let policy = format!(
            "default-src 'self'; script-src 'sha256-{hash}'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        );
        axum::http::HeaderValue::from_str(&policy)
            .unwrap_or_else(|_| unreachable!("base64 and ASCII only"))
    })
    .clone()
}

/// Serves plain HTTP until `shutdown` turns true, behind the same connection limits and
/// header timeout as https (port 80 is open to anyone for ACME).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: Arc<crate::listen::Limits>,
    shutdown: watch::Receiver<bool>,
) {
    let app = router(state);
    crate::listen::accept_limited(
        listener,
        shutdown,
        Duration::from_secs(5),
        limits,
        true,
        |_| String::new(),
        move |stream, peer, admission| {
            let app = app
                .clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            Box::pin(async move {
                if let Err(e) = http1(stream, app).await {
                    tracing::debug!(error = %e, "http connection ended");
                }
                drop(admission);
            })
        },
    )
    .await;
}

/// Serves HTTPS with the shared certificates until `shutdown` turns true, behind the
/// same connection limits as the mail listeners; a handshake that asks for acme-tls/1
/// gets the challenge certificate instead, and nothing else.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: AppState,
    limits: Arc<crate::listen::Limits>,
    shutdown: watch::Receiver<bool>,
) {
    let challenges = state.challenges.clone();
    serve_tls_app(listener, tls, router(state), challenges, limits, shutdown).await
}

/// The `caldav` or `carddav` listener: HTTPS serving the DAV tree alone.
pub async fn serve_dav_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: AppState,
    limits: Arc<crate::listen::Limits>,
    shutdown: watch::Receiver<bool>,
) {
    let challenges = state.challenges.clone();
    serve_tls_app(
        listener,
        tls,
        dav_router(state),
        challenges,
        limits,
        shutdown,
    )
    .await
}

async fn serve_tls_app(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    challenges: Arc<Challenges>,
    limits: Arc<crate::listen::Limits>,
    shutdown: watch::Receiver<bool>,
) {
    crate::listen::accept_limited(
        listener,
        shutdown,
        Duration::from_secs(5),
        limits,
        true,
        |_| String::new(),
        move |stream, peer, admission| {
            let (tls, challenges) = (tls.clone(), challenges.clone());
            // Handlers that care who asks (/metrics) read it as axum's ConnectInfo.
            let app = app
                .clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer)))
                .layer(axum::Extension(admin::OverTls));
            Box::pin(async move {
                if let Err(e) = connection(stream, tls, challenges, app).await {
                    tracing::debug!(error = %e, "https connection ended");
                }
                drop(admission);
            })
        },
    )
    .await;
}

async fn connection(
    stream: TcpStream,
    tls: Arc<ServerConfig>,
    challenges: Arc<Challenges>,
    app: Router,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let start = tokio::time::timeout(
        HANDSHAKE,
        LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream),
    )
    .await??;
    let hello = start.client_hello();
    let acme = hello
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
    if acme {
        // The CA only completes the handshake and looks at the certificate.
        let name = hello.server_name().map(str::to_string).unwrap_or_default();
        match challenges.tls_alpn01(&name) {
            Some(config) => {
                start.into_stream(config).await?;
            }
            None => tracing::warn!(
                name,
                "TLS-ALPN-01 validation for a name with no order under way"
            ),
        }
        return Ok(());
    }
    let stream = tokio::time::timeout(HANDSHAKE, start.into_stream(tls)).await??;
    http1(stream, app).await?;
    Ok(())
}

/// HTTP/1.1 on one connection, plain or TLS: requests must send their headers in time.
async fn http1<S>(stream: S, app: Router) -> Result<(), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .await
}

/// The key authorization for a token ferrymail is being asked to prove, as plain text.
async fn http01(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<String, StatusCode> {
    state.challenges.http01(&token).ok_or(StatusCode::NOT_FOUND)
}
