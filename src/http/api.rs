//! The JSON API under /api/v1: what the admin pages show, for scripts and monitoring,
//! plus a dry-run plan of a posted spec and a reconcile trigger. Bearer tokens from the
//! spec; the OpenAPI document (utoipa, from these very types) at /api/v1/openapi.json.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use super::admin::auth;

/// Most rows one answer holds.
const MAX_LIMIT: usize = 1000;

#[derive(Serialize, ToSchema)]
pub struct ApiError {
    pub error: String,
}

fn error(status: StatusCode, message: &str) -> Response {
    let mut response = (
        status,
        Json(ApiError {
            error: message.to_string(),
        }),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// A request the API turns down, answered as `ApiError` JSON.
pub struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, &self.0)
    }
}

/// A query's parameters, or the JSON error a client can read when they do not parse.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, BadRequest> {
    q.map(|Query(t)| t).map_err(|e| BadRequest(e.body_text()))
}

/// `limit`, checked: 1–1000, 100 when not given.
fn limit(given: Option<usize>) -> Result<usize, BadRequest> {
    match given {
        None => Ok(100),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(BadRequest("limit is 1 to 1000".into())),
    }
}

/// A caller that showed one of the spec's API tokens.
pub struct ApiClient {
    pub name: String,
}

impl axum::extract::FromRequestParts<AppState> for ApiClient {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        // Tokens travel over TLS (plain http from this host only), as the admin does.
        let tls = parts.extensions.get::<super::admin::OverTls>().copied();
        if !peer.is_some_and(|p| super::admin::transport_ok(p, tls.as_ref())) {
            return Err(error(
                StatusCode::FORBIDDEN,
                "the API is served over https (plain http from this host only)",
            ));
        }
        let ip = peer.map(|p| p.ip());
        let failures = ip.map(|ip| format!("api-token-fail:{ip}"));
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        let site = state.site.load();
        // Every token is compared, so the time taken says nothing about which matched.
        let mut found = None;
        for (name, token) in &site.api_tokens {
            if auth::same(token, given) && !given.is_empty() {
                found = Some(name.clone());
            }
        }
        match found {
            Some(name) => Ok(ApiClient { name }),
            // A right token always passes (a neighbour's bad guesses must not lock a
            // client out); wrong ones, past ten from one address, are answered slowly.
            None => {
                if let Some(key) = &failures
                    && !given.is_empty()
                {
                    // Counted up to the limit only: a flood of bad tokens does not grow
                    // the counter without end, it is just answered slowly.
                    if state.admin.cache.recent(key, auth::WINDOW) > auth::FAILURES_PER_IP {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    } else {
                        state.admin.cache.hit(key, u32::MAX, auth::WINDOW);
                    }
                }
                Err(error(
                    StatusCode::UNAUTHORIZED,
                    "an API token is needed: Authorization: Bearer TOKEN ([admin.api_tokens] in the spec)",
                ))
            }
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Listener {
    pub name: String,
    pub address: String,
}

#[derive(Serialize, ToSchema)]
pub struct Reconcile {
    pub at: String,
    pub ok: bool,
    pub summary: String,
    pub errors: Vec<String>,
    /// The plan it applied, as `ferrymail plan` prints it.
    pub plan: String,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    pub hostname: String,
    pub revision: u64,
    /// Where the applied spec came from (a path, or "git URL@commit (branch)").
    pub source: String,
    pub last_reconcile: Option<Reconcile>,
    pub dns_problems: Vec<String>,
    pub listeners: Vec<Listener>,
    pub queue_deliveries: u64,
}

/// What is serving, from which spec, and how the last reconcile went.
#[utoipa::path(get, path = "/api/v1/status", security(("token" = [])),
    responses((status = 200, body = Status), (status = 401, body = ApiError), (status = 429, body = ApiError), (status = 500, body = ApiError)))]
pub async fn status(State(state): State<AppState>, _client: ApiClient) -> Response {
    let source = state.admin.overview.clone();
    let Ok(o) = tokio::task::spawn_blocking(move || source()).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "the overview failed");
    };
    Json(Status {
        hostname: o.hostname,
        revision: o.revision,
        source: o.source,
        last_reconcile: o.last_reconcile.map(|(at, ok, summary, errors)| Reconcile {
            at,
            ok,
            summary,
            errors,
            plan: o.plan.clone(),
        }),
        dns_problems: o.dns_problems,
        listeners: o
            .listeners
            .into_iter()
            .map(|(name, address)| Listener { name, address })
            .collect(),
        queue_deliveries: o.queue_deliveries,
    })
    .into_response()
}

#[derive(Serialize, ToSchema)]
pub struct Certificate {
    pub names: Vec<String>,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// self-signed | files | acme
    pub source: String,
    /// SHA-256 of the certificate (DER), hex.
    pub sha256: String,
}

/// Every certificate served.
#[utoipa::path(get, path = "/api/v1/certificates", security(("token" = [])),
    responses((status = 200, body = Vec<Certificate>), (status = 401, body = ApiError), (status = 500, body = ApiError)))]
pub async fn certificates(State(state): State<AppState>, _client: ApiClient) -> Response {
    let source = state.admin.overview.clone();
    let Ok(o) = tokio::task::spawn_blocking(move || source()).await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the certificates could not be read",
        );
    };
    Json(
        o.certificates
            .into_iter()
            .map(|c| Certificate {
                names: c.names,
                issuer: c.issuer,
                not_before: c.not_before,
                not_after: c.not_after,
                source: c.source,
                sha256: c.sha256,
            })
            .collect::<Vec<_>>(),
    )
    .into_response()
}

#[derive(Serialize, ToSchema)]
pub struct Domain {
    pub name: String,
    pub max_message_size: u64,
    pub max_forwards: u32,
    pub greylisting: bool,
    pub require_tls: bool,
    pub dns_provider: Option<String>,
}

/// The domains served.
#[utoipa::path(get, path = "/api/v1/domains", security(("token" = [])),
    responses((status = 200, body = Vec<Domain>), (status = 401, body = ApiError), (status = 429, body = ApiError)))]
pub async fn domains(State(state): State<AppState>, _client: ApiClient) -> Json<Vec<Domain>> {
    let snapshot = state.snapshot.get();
    let mut list: Vec<Domain> = snapshot
        .domains
        .iter()
        .map(|(name, d)| Domain {
            name: name.clone(),
            max_message_size: d.max_message_size,
            max_forwards: d.max_forwards,
            greylisting: d.greylisting,
            require_tls: d.require_tls,
            dns_provider: d.dns_provider.clone(),
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Json(list)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AliasQuery {
    /// Part of an address or a target.
    #[serde(default)]
    pub q: String,
    /// At most this many (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct Alias {
    /// local@domain, `/regex/@domain` for a pattern, `*@domain` for the catch-all.
    pub address: String,
    pub forward: Vec<String>,
    pub mailbox: bool,
    /// quiet | soft | hard, when it rejects.
    pub reject: Option<String>,
    pub enabled: bool,
}

#[derive(Serialize, ToSchema)]
pub struct AliasList {
    /// How many match, before the limit.
    pub total: usize,
    pub aliases: Vec<Alias>,
}

/// Aliases, patterns and catch-alls, searchable.
#[utoipa::path(get, path = "/api/v1/aliases", params(AliasQuery), security(("token" = [])),
    responses((status = 200, body = AliasList), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 429, body = ApiError)))]
pub async fn aliases(
    State(state): State<AppState>,
    _client: ApiClient,
    q: Result<Query<AliasQuery>, QueryRejection>,
) -> Response {
    let query = match query(q) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let limit = match limit(query.limit) {
        Ok(n) => n,
        Err(r) => return r.into_response(),
    };
    let snapshot = state.snapshot.get();
    let needle = query.q.trim().to_lowercase();
    let matching: Vec<Alias> = snapshot
        .router
        .search(&needle)
        .into_iter()
        .map(|(domain, local, rule)| Alias {
            address: format!("{local}@{domain}"),
            forward: rule.forward.clone(),
            mailbox: rule.mailbox,
            reject: rule.reject.map(|m| m.as_str().to_string()),
            enabled: rule.enabled,
        })
        .collect();
    Json(AliasList {
        total: matching.len(),
        aliases: matching.into_iter().take(limit).collect(),
    })
    .into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RouteQuery {
    /// The recipient to look up.
    pub address: String,
}

#[derive(Serialize, ToSchema)]
pub struct Route {
    pub recipient: String,
    /// Whether the MX accepts mail for it.
    pub found: bool,
    /// exact | pattern | catch-all
    pub matched: Option<String>,
    pub alias: Option<String>,
    pub mailbox: Option<String>,
    pub forward: Vec<String>,
    pub reject: Option<String>,
    /// Why it is not an address at all, when it is not.
    pub problem: Option<String>,
}

/// The route a recipient takes, as the MX decides it.
#[utoipa::path(get, path = "/api/v1/route", params(RouteQuery), security(("token" = [])),
    responses((status = 200, body = Route), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 429, body = ApiError)))]
pub async fn route(
    State(state): State<AppState>,
    _client: ApiClient,
    q: Result<Query<RouteQuery>, QueryRejection>,
) -> Response {
    let query = match query(q) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let snapshot = state.snapshot.get();
    match snapshot.resolve(&query.address) {
        Err(_) | Ok(None) => Json(Route {
            recipient: query.address.clone(),
            found: false,
            matched: None,
            alias: None,
            mailbox: None,
            forward: Vec::new(),
            reject: None,
            problem: snapshot
                .resolve(&query.address)
                .err()
                .map(|e| format!("not an address: {e}")),
        })
        .into_response(),
        Ok(Some(r)) => {
            let (mailbox, forward, reject) = match &r.action {
                crate::routing::Action::Deliver { mailbox, forward } => (
                    mailbox.as_ref().map(|m| m.to_string()),
                    forward.iter().map(|f| f.to_string()).collect(),
                    None,
                ),
                crate::routing::Action::Reject { mode, .. } => {
                    (None, Vec::new(), Some(mode.as_str().to_string()))
                }
            };
            Json(Route {
                recipient: r.recipient.to_string(),
                found: true,
                matched: Some(
                    match r.matched {
                        crate::routing::Matched::Exact => "exact",
                        crate::routing::Matched::Pattern(_) => "pattern",
                        crate::routing::Matched::CatchAll => "catch-all",
                    }
                    .to_string(),
                ),
                alias: Some(r.alias.to_string()),
                mailbox,
                forward,
                reject,
                problem: None,
            })
            .into_response()
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MailboxInfo {
    pub account: String,
    /// Bytes; none: unlimited.
    pub quota: Option<u64>,
}

/// The mailbox accounts.
#[utoipa::path(get, path = "/api/v1/mailboxes", security(("token" = [])),
    responses((status = 200, body = Vec<MailboxInfo>), (status = 401, body = ApiError), (status = 429, body = ApiError)))]
pub async fn mailboxes(
    State(state): State<AppState>,
    _client: ApiClient,
) -> Json<Vec<MailboxInfo>> {
    let snapshot = state.snapshot.get();
    let mut list: Vec<MailboxInfo> = snapshot
        .accounts
        .iter()
        .map(|(account, a)| MailboxInfo {
            account: account.clone(),
            quota: a.quota,
        })
        .collect();
    list.sort_by(|a, b| a.account.cmp(&b.account));
    Json(list)
}

#[derive(Serialize, ToSchema)]
pub struct QueueEntry {
    pub id: i64,
    pub message_id: i64,
    pub target: String,
    pub mail_from: String,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub size: i64,
    /// Why the delivery is held (not tried until retried by hand), when it is.
    pub held: Option<String>,
}

/// What waits for delivery.
#[utoipa::path(get, path = "/api/v1/queue", security(("token" = [])),
    responses((status = 200, body = Vec<QueueEntry>), (status = 401, body = ApiError), (status = 429, body = ApiError), (status = 500, body = ApiError)))]
pub async fn queue(State(state): State<AppState>, _client: ApiClient) -> Response {
    let db = state.admin.queue.clone();
    match tokio::task::spawn_blocking(move || db.list(MAX_LIMIT)).await {
        Ok(Ok(entries)) => Json(
            entries
                .into_iter()
                .map(|e| QueueEntry {
                    id: e.id,
                    message_id: e.message_id,
                    target: e.target,
                    mail_from: e.mail_from,
                    attempts: e.attempts,
                    next_attempt_at: e.next_attempt_at,
                    last_error: e.last_error,
                    size: e.size,
                    held: e.held,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the queue could not be read",
        ),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Part of a sender, recipient or detail.
    #[serde(default)]
    pub q: String,
    pub event: Option<EventName>,
    /// At most this many (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A mail log event.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventName {
    Accepted,
    Rejected,
    Delivered,
    Deferred,
    Bounced,
}

impl EventName {
    fn event(self) -> crate::queue::log::Event {
        use crate::queue::log::Event;
        match self {
            EventName::Accepted => Event::Accepted,
            EventName::Rejected => Event::Rejected,
            EventName::Delivered => Event::Delivered,
            EventName::Deferred => Event::Deferred,
            EventName::Bounced => Event::Bounced,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct LogEntry {
    /// Unix seconds.
    pub at: i64,
    pub event: String,
    pub message_id: Option<i64>,
    pub mail_from: String,
    pub rcpt: String,
    pub remote_ip: String,
    pub detail: String,
}

/// The mail log, newest first.
#[utoipa::path(get, path = "/api/v1/emails", params(LogQuery), security(("token" = [])),
    responses((status = 200, body = Vec<LogEntry>), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 429, body = ApiError), (status = 500, body = ApiError)))]
pub async fn emails(
    State(state): State<AppState>,
    _client: ApiClient,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    let query = match query(q) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let event = query.event.map(EventName::event);
    let limit = match limit(query.limit) {
        Ok(n) => n,
        Err(r) => return r.into_response(),
    };
    let log = state.admin.log.clone();
    let text = query.q.trim().to_string();
    match tokio::task::spawn_blocking(move || log.search(&text, event, limit)).await {
        Ok(Ok(entries)) => Json(
            entries
                .into_iter()
                .map(|e| LogEntry {
                    at: e.at,
                    event: e.event.as_str().to_string(),
                    message_id: e.message_id,
                    mail_from: e.mail_from,
                    rcpt: e.rcpt,
                    remote_ip: e.remote_ip,
                    detail: e.detail,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the mail log could not be read",
        ),
    }
}

#[derive(Serialize, ToSchema)]
pub struct LogLine {
    pub at: i64,
    pub level: String,
    pub target: String,
    pub text: String,
}

/// Warnings and errors logged since the server started, newest first.
#[utoipa::path(get, path = "/api/v1/logs", security(("token" = [])),
    responses((status = 200, body = Vec<LogLine>), (status = 401, body = ApiError), (status = 429, body = ApiError)))]
pub async fn logs(_client: ApiClient) -> Json<Vec<LogLine>> {
    Json(
        crate::recent_log::lines()
            .into_iter()
            .map(|l| LogLine {
                at: l.at,
                level: l.level.to_string(),
                target: l.target,
                text: l.text,
            })
            .collect(),
    )
}

#[derive(Serialize, ToSchema)]
pub struct BackupRun {
    pub id: String,
    pub started_at: i64,
    pub target: String,
    pub ok: bool,
    pub size: u64,
    pub sha256: String,
    pub duration_ms: u64,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Backups {
    pub schedule: Option<String>,
    pub target: Option<String>,
    /// RFC 3339, UTC.
    pub next_run: Option<String>,
    pub runs: Vec<BackupRun>,
}

/// The backup schedule and the runs so far, newest first.
#[utoipa::path(get, path = "/api/v1/backups", security(("token" = [])),
    responses((status = 200, body = Backups), (status = 401, body = ApiError), (status = 429, body = ApiError), (status = 500, body = ApiError)))]
pub async fn backups(State(state): State<AppState>, _client: ApiClient) -> Response {
    let site = state.site.load_full();
    let store = state.admin.store.clone();
    let Ok(Ok(runs)) = tokio::task::spawn_blocking(move || store.backup_runs(100)).await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the backup history could not be read",
        );
    };
    let next_run = site.backups.as_ref().and_then(|(schedule, _)| {
        crate::backup::Schedule::parse(schedule)
            .ok()?
            .next_after(crate::store::unix_now())
            .map(crate::backup::rfc3339)
    });
    Json(Backups {
        schedule: site.backups.as_ref().map(|b| b.0.clone()),
        target: site.backups.as_ref().map(|b| b.1.clone()),
        next_run,
        runs: runs
            .into_iter()
            .map(|r| BackupRun {
                id: r.id,
                started_at: r.started_at,
                target: r.target,
                ok: r.ok,
                size: r.size,
                sha256: r.sha256,
                duration_ms: r.duration_ms,
                error: r.error,
            })
            .collect(),
    })
    .into_response()
}

/// What a dry-run plan of a posted spec says.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanOutcome {
    /// The spec loaded and validated, and a plan was made.
    pub ok: bool,
    /// The plan as `ferrymail plan` prints it (store changes; DNS is not asked).
    pub text: String,
    /// Spec errors, located (`spec:LINE:COL: message`).
    pub errors: Vec<String>,
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

/// What a posted spec would change (a dry run: nothing is applied).
#[utoipa::path(post, path = "/api/v1/plan", security(("token" = [])),
    request_body(content = Option<String>, content_type = "text/plain", description = "A spec (TOML); an empty one plans as an empty spec"),
    responses((status = 200, body = PlanOutcome), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 429, body = ApiError), (status = 500, body = ApiError)))]
pub async fn plan(State(state): State<AppState>, _client: ApiClient, body: String) -> Response {
    let plan = state.admin.plan.clone();
    match tokio::task::spawn_blocking(move || plan(body)).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "planning failed"),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Triggered {
    pub status: String,
}

/// Reads the spec again and applies it, as SIGHUP does.
#[utoipa::path(post, path = "/api/v1/reconcile", security(("token" = [])),
    responses((status = 202, body = Triggered), (status = 401, body = ApiError), (status = 429, body = ApiError)))]
pub async fn reconcile(State(state): State<AppState>, client: ApiClient) -> Response {
    tracing::info!(token = %client.name, "reconcile asked for through the API");
    // A full channel means one is already waiting to run: nothing is lost.
    let _ = state.admin.reload.try_send(());
    (
        StatusCode::ACCEPTED,
        Json(Triggered {
            status: "reconcile started".into(),
        }),
    )
        .into_response()
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "ferrymail API", description = "Read the reconciled state of a ferrymail server; plan a spec; trigger a reconcile; add, change and remove domains, aliases and patterns as edits of the spec (each answered with its plan; ?dry_run=true plans only)."),
    paths(status, certificates, domains, aliases, route, mailboxes, queue, emails, logs, backups, plan, reconcile,
        super::edits::add_domain, super::edits::edit_domain, super::edits::remove_domain,
        super::edits::add_alias, super::edits::edit_alias, super::edits::remove_alias,
        super::edits::new_mailbox_password, super::edits::add_pattern, super::edits::edit_pattern,
        super::edits::remove_pattern),
    components(schemas(EventName)),
    modifiers(&BearerAuth)
)]
struct Document;

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    match Document::openapi().to_pretty_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
