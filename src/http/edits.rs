//! Editing the spec through the JSON API: domains, aliases and patterns added, changed
//! and removed as patches of the spec, each answered with the plan it made (`?dry_run`).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::api::{ApiClient, ApiError};
use crate::change::{
    AliasFields, Change, DomainFields, EditCall, EditOutcome, PatternFields, Refusal, RuleFields,
};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DryRun {
    /// true: only plan; nothing is written or applied.
    #[serde(default)]
    dry_run: bool,
}

/// The plan an edit made, as `ferrymail plan` prints it, and its counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct EditPlan {
    pub text: String,
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

/// What an edit did (or, for a dry run, would do).
#[derive(Debug, Serialize, ToSchema)]
pub struct EditResult {
    /// The change in words ("add alias hello@example.com").
    pub change: String,
    pub dry_run: bool,
    pub plan: EditPlan,
    /// The text change of each spec file, as `+`/`-` lines.
    pub diff: String,
    /// The files written (none for a dry run).
    pub written: Vec<String>,
    /// For a spec kept in git: the commit made, and the branch it was pushed to (the
    /// source's own, or `ferrymail/CHANGE` to review; then nothing is applied).
    pub commit: Option<String>,
    pub branch: Option<String>,
    /// What the apply after the write did.
    pub applied: Option<String>,
    /// The spec's ETag now: send it as If-Match to refuse an edit of a spec that moved.
    pub etag: String,
    /// A mailbox password the server made: shown this once, only its hash is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub errors: Vec<String>,
}

/// The HTTP status a refusal is answered with.
pub fn status_of(refusal: Refusal) -> StatusCode {
    match refusal {
        Refusal::NotFound => StatusCode::NOT_FOUND,
        Refusal::Exists => StatusCode::CONFLICT,
        Refusal::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        Refusal::Stale => StatusCode::PRECONDITION_FAILED,
        Refusal::ReadOnly => StatusCode::FORBIDDEN,
        Refusal::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A new password for a mailbox and its argon2id hash.
pub async fn new_password() -> Option<(String, String)> {
    let password = super::admin::new_password();
    let typed = password.clone();
    let hash = tokio::task::spawn_blocking(move || crate::password::hash(&typed))
        .await
        .ok()?
        .ok()?;
    Some((password, hash))
}

/// Runs an edit off the async threads.
pub async fn run(state: &AppState, call: EditCall) -> EditOutcome {
    let editor = state.admin.editor.clone();
    tokio::task::spawn_blocking(move || editor.edit(call))
        .await
        .unwrap_or_else(|_| EditOutcome {
            refused: Some(Refusal::Failed),
            errors: vec!["the edit failed".into()],
            ..EditOutcome::default()
        })
}

/// The mailbox password an alias edit makes: when it asks for a mailbox the address
/// does not have yet.
pub async fn password_for(
    state: &AppState,
    address: &str,
    fields: &mut AliasFields,
) -> Option<String> {
    let exists = state
        .snapshot
        .get()
        .accounts
        .contains_key(&address.to_lowercase());
    if fields.mailbox != Some(true) || exists {
        return None;
    }
    let (password, hash) = new_password().await?;
    fields.password_hash = Some(hash);
    Some(password)
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string()
        })
        .filter(|v| v != "*")
}

async fn answer(
    state: &AppState,
    client: &ApiClient,
    change: Change,
    query: Result<Query<DryRun>, QueryRejection>,
    headers: &HeaderMap,
    password: Option<String>,
) -> Response {
    let dry_run = match query {
        Ok(Query(q)) => q.dry_run,
        Err(e) => return bad_request(e.body_text()),
    };
    let description = change.describe();
    let outcome = run(
        state,
        EditCall {
            change,
            etag: if_match(headers),
            dry_run,
            author: format!("api token {}", client.name),
        },
    )
    .await;
    let status = outcome.refused.map_or(StatusCode::OK, status_of);
    // Shown once the hash is on disk, applied or not: otherwise it is lost to everyone.
    let made = outcome.refused.is_none() && !dry_run && !outcome.written.is_empty();
    let etag = outcome.etag.clone();
    let mut response = (
        status,
        Json(EditResult {
            change: description,
            dry_run,
            plan: EditPlan {
                text: outcome.plan,
                add: outcome.add,
                change: outcome.change,
                destroy: outcome.destroy,
            },
            diff: outcome.diff,
            written: outcome.written,
            commit: outcome.commit,
            branch: outcome.branch,
            applied: outcome.applied,
            etag: etag.clone(),
            password: password.filter(|_| made),
            errors: outcome.errors,
        }),
    )
        .into_response();
    if let Ok(value) = header::HeaderValue::from_str(&format!("\"{etag}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(ApiError { error: message })).into_response()
}

/// A JSON object body as `T` (serde would take a list for a struct too).
fn body<T: serde::de::DeserializeOwned>(
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<T, Box<Response>> {
    // Too large stays 413; anything else the client sent wrong is 400.
    let Json(value) = body.map_err(|e| {
        let status = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        Box::new(
            (
                status,
                Json(ApiError {
                    error: e.body_text(),
                }),
            )
                .into_response(),
        )
    })?;
    if !value.is_object() {
        return Err(Box::new(bad_request(
            "the body must be a JSON object".into(),
        )));
    }
    serde_json::from_value(value).map_err(|e| Box::new(bad_request(format!("the body: {e}"))))
}

/// A domain to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// The domain name, e.g. "example.com".
    pub name: String,
    /// Which `[dns.providers.NAME]` publishes its records.
    #[serde(default)]
    pub dns_provider: Option<String>,
    /// DKIM selectors, each "selector" or "selector:ed25519"; [] turns signing off.
    #[serde(default)]
    pub dkim: Option<Vec<String>>,
    /// Where mail for unknown addresses goes.
    #[serde(default)]
    pub catch_all: Option<RuleFields>,
}

/// Adds a domain to the spec, then applies it.
#[utoipa::path(post, path = "/api/v1/domains", params(DryRun), security(("token" = [])),
    request_body = NewDomain,
    responses((status = 200, body = EditResult), (status = 400, body = ApiError), (status = 413, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = EditResult), (status = 409, body = EditResult), (status = 412, body = EditResult),
        (status = 422, body = EditResult), (status = 500, body = EditResult)))]
pub async fn add_domain(
    State(state): State<AppState>,
    client: ApiClient,
    query: Result<Query<DryRun>, QueryRejection>,
    headers: HeaderMap,
    request: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let new: NewDomain = match body(request) {
        Ok(new) => new,
        Err(refused) => return *refused,
    };
    let change = Change::AddDomain {
        name: new.name.trim().to_lowercase(),
        fields: DomainFields {
            dns_provider: new.dns_provider,
            dkim: new.dkim,
            catch_all: new.catch_all,
        },
    };
    answer(&state, &client, change, query, &headers, None).await
}

/// Changes a domain's DNS provider, DKIM selectors or catch-all.
#[utoipa::path(patch, path = "/api/v1/domains/{name}", params(("name" = String, Path), DryRun), security(("token" = [])),
    request_body = DomainFields,
    responses((status = 200, body = EditResult), (status = 400, body = ApiError), (status = 413, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = EditResult), (status = 404, body = EditResult), (status = 412, body = EditResult),
        (status = 422, body = EditResult), (status = 500, body = EditResult)))]
pub async fn edit_domain(
    State(state): State<AppState>,
    client: ApiClient,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DryRun>, QueryRejection>,
    headers: HeaderMap,
    request: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let Path(name) = match path {
        Ok(path) => path,
        Err(e) => return bad_request(e.body_text()),
    };
    let fields = match body(request) {
        Ok(fields) => fields,
        Err(refused) => return *refused,
    };
    let change = Change::EditDomain { name, fields };
    answer(&state, &client, change, query, &headers, None).await
}

/// Removes a domain (its aliases and mailboxes with it: the plan says what goes).
#[utoipa::path(delete, path = "/api/v1/domains/{name}", params(("name" = String, Path), DryRun), security(("token" = [])),
    responses((status = 200, body = EditResult), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = EditResult), (status = 404, body = EditResult), (status = 412, body = EditResult),
        (status = 422, body = EditResult), (status = 500, body = EditResult)))]
pub async fn remove_domain(
    State(state): State<AppState>,
    client: ApiClient,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DryRun>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Path(name) = match path {
        Ok(path) => path,
        Err(e) => return bad_request(e.body_text()),
    };
    let change = Change::RemoveDomain { name };
    answer(&state, &client, change, query, &headers, None).await
}

/// An alias to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAlias {
    /// The full address, e.g. "hello@example.com"; its domain must be in the spec.
    pub address: String,
    #[serde(default)]
    pub forward: Option<Vec<String>>,
    /// true: the address gets a mailbox, and a password (in the answer, once).
    #[serde(default)]
    pub mailbox: Option<bool>,
    /// The mailbox's quota, e.g. "10GiB".
    #[serde(default)]
    pub quota: Option<String>,
    /// quiet | soft | hard.
    #[serde(default)]
    pub reject: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Adds an alias (forwards, a mailbox, or a rejection), then applies it.
#[utoipa::path(post, path = "/api/v1/aliases", params(DryRun), security(("token" = [])),
    request_body = NewAlias,
    responses((status = 200, body = EditResult), (status = 400, body = ApiError), (status = 413, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = EditResult), (status = 409, body = EditResult), (status = 412, body = EditResult),
        (status = 422, body = EditResult), (status = 500, body = EditResult)))]
pub async fn add_alias(
    State(state): State<AppState>,
    client: ApiClient,
    query: Result<Query<DryRun>, QueryRejection>,
    headers: HeaderMap,
    request: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let new: NewAlias = match body(request) {
        Ok(new) => new,
        Err(refused) => return *refused,
    };
    let address = new.address.trim().to_string();
    let mut fields = AliasFields {
        forward: new.forward,
        mailbox: new.mailbox,
        quota: new.quota,
        reject: new.reject,
        message: new.message,
        enabled: new.enabled,
        password_hash: None,
    };
    let password = password_for(&state, &address, &mut fields).await;
    let change = Change::AddAlias { address, fields };
    answer(&state, &client, change, query, &headers, password).await
}

/// Changes an alias; fields left out stay as they are.
#[utoipa::path(patch, path = "/api/v1/aliases/{address}", params(("address" = String, Path), DryRun), security(("token" = [])),
    request_body = AliasFields,
    responses((status = 200, body = EditResult), (status = 400, body = ApiError), (status = 413, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = EditResult), (status = 404, body = EditResult), (status = 412, body = EditResult),
        (status = 422, body = EditResult), (status = 500, body = EditResult)))]
pub async fn edit_alias(
    State(state): State<AppState>,
    client: ApiClient,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DryRun>, QueryRejection>,
    headers: HeaderMap,
    request: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let Path(address) = match path {
        Ok(path) => path,
        Err(e) => return bad_request(e.body_text()),
    };
    let mut fields = match body(request) {
        Ok(fields) => fields,
        Err(refused) => return *refused,
    };
    let password = password_for(&state, &address, &mut fields).await;
    let change = Change::EditAlias { address, fields };
    answer(&state, &client, change, query, &headers, password).await
}

/// Removes an alias (and its mailbox, if it has one: the plan says so).
#[utoipa::path(delete, path = "/api/v1/aliases/{address}", params(("address" = String, Path), DryRun), security(("token" = [])),
    responses((status = 200, body = EditResult), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = EditResult), (status = 404, body = EditResult), (status = 412, body = EditResult),
        (status = 422, body = EditResult), (status = 500, body = EditResult)))]
pub async fn remove_alias(
    State(state): State<AppState>,
    client: ApiClient,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DryRun>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Path(address) = match path {
        Ok(path) => path,
        Err(e) => return bad_request(e.body_text()),
    };
    let change = Change::RemoveAlias { address };
    answer(&state, &client, change, query, &headers, None).await
}

/// Gives a mailbox a new password, made by the server and shown in the answer once.
#[utoipa::path(post, path = "/api/v1/aliases/{address}/password", params(("address" = String, Path), DryRun), security(("token" = [])),
    responses((status = 200, body = EditResult), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = EditResult), (status = 404, body = EditResult), (status = 412, body = EditResult),
        (status = 422, body = EditResult), (status = 500, body = EditResult)))]
pub async fn new_mailbox_password(
    State(state): State<AppState>,
    client: ApiClient,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DryRun>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Path(address) = match path {
        Ok(path) => path,
        Err(e) => return bad_request(e.body_text()),
    };
    let Some((password, hash)) = new_password().await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(ApiError {
                error: "no password could be made".into(),
            }),
        )
            .into_response();
    };
    let change = Change::NewPassword { address, hash };
    answer(&state, &client, change, query, &headers, Some(password)).await
}

/// Adds a pattern at the end of a domain's list.
#[utoipa::path(post, path = "/api/v1/domains/{name}/patterns", params(("name" = String, Path), DryRun), security(("token" = [])),
    request_body = PatternFields,
    responses((status = 200, body = EditResult), (status = 400, body = ApiError), (status = 413, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = EditResult), (status = 404, body = EditResult), (status = 412, body = EditResult),
        (status = 422, body = EditResult), (status = 500, body = EditResult)))]
pub async fn add_pattern(
    State(state): State<AppState>,
    client: ApiClient,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DryRun>, QueryRejection>,
    headers: HeaderMap,
    request: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let Path(name) = match path {
        Ok(path) => path,
        Err(e) => return bad_request(e.body_text()),
    };
    let fields = match body(request) {
        Ok(fields) => fields,
        Err(refused) => return *refused,
    };
    let change = Change::AddPattern {
        domain: name,
        fields,
    };
    answer(&state, &client, change, query, &headers, None).await
}

/// Changes a domain's pattern, counted from 0 in the order the spec lists them.
#[utoipa::path(patch, path = "/api/v1/domains/{name}/patterns/{index}", params(("name" = String, Path), ("index" = usize, Path), DryRun), security(("token" = [])),
    request_body = PatternFields,
    responses((status = 200, body = EditResult), (status = 400, body = ApiError), (status = 413, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = EditResult), (status = 404, body = EditResult), (status = 412, body = EditResult),
        (status = 422, body = EditResult), (status = 500, body = EditResult)))]
pub async fn edit_pattern(
    State(state): State<AppState>,
    client: ApiClient,
    path: Result<Path<(String, usize)>, PathRejection>,
    query: Result<Query<DryRun>, QueryRejection>,
    headers: HeaderMap,
    request: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let Path((name, index)) = match path {
        Ok(path) => path,
        Err(e) => return bad_request(e.body_text()),
    };
    let fields = match body(request) {
        Ok(fields) => fields,
        Err(refused) => return *refused,
    };
    let change = Change::EditPattern {
        domain: name,
        index,
        fields,
    };
    answer(&state, &client, change, query, &headers, None).await
}

/// Removes a domain's pattern, counted from 0.
#[utoipa::path(delete, path = "/api/v1/domains/{name}/patterns/{index}", params(("name" = String, Path), ("index" = usize, Path), DryRun), security(("token" = [])),
    responses((status = 200, body = EditResult), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = EditResult), (status = 404, body = EditResult), (status = 412, body = EditResult),
        (status = 422, body = EditResult), (status = 500, body = EditResult)))]
pub async fn remove_pattern(
    State(state): State<AppState>,
    client: ApiClient,
    path: Result<Path<(String, usize)>, PathRejection>,
    query: Result<Query<DryRun>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Path((name, index)) = match path {
        Ok(path) => path,
        Err(e) => return bad_request(e.body_text()),
    };
    let change = Change::RemovePattern {
        domain: name,
        index,
    };
    answer(&state, &client, change, query, &headers, None).await
}
