//! The web admin: server-rendered pages (no JavaScript needed) showing the reconciled
//! state and the mail log; its edits are patches of the spec, the only source of truth.

pub(crate) mod auth;
mod charts;
mod edit_pages;
mod me;
mod pages;
mod profile;
mod reports;
pub(crate) use pages::COPY_SCRIPT;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

pub use auth::{Role, Sessions};

/// A password for the first-boot "admin": 24 URL-safe characters (144 bits).
pub fn new_password() -> String {
    auth::random_token()[..24].to_string()
}

use super::AppState;

/// What the overview shows, read when the page is asked for.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    pub hostname: String,
    pub listeners: Vec<(String, String)>,
    pub revision: u64,
    /// `[server] apply = "auto"`: every save is applied; else only when told.
    pub auto_apply: bool,
    pub source: String,
    /// When the last reconcile ran, whether it applied, what it did, its errors.
    pub last_reconcile: Option<(String, bool, String, Vec<String>)>,
    pub dns_problems: Vec<String>,
    /// The plan the last reconcile applied, as text.
    pub plan: String,
    pub queue_deliveries: u64,
    /// Every served certificate.
    pub certificates: Vec<crate::tls::CertInfo>,
}

/// What the admin pages need besides the site and the snapshot.
pub struct AdminState {
    pub sessions: Sessions,
    pub cache: Arc<dyn crate::cache::Cache>,
    pub logins: Arc<crate::login::Logins>,
    pub log: Arc<crate::queue::log::MailLog>,
    pub mailboxes: crate::mailbox::Mailboxes,
    pub overview: Arc<dyn Fn() -> Overview + Send + Sync>,
    pub queue: Arc<dyn crate::queue::Queue>,
    /// Wakes the delivery workers after a retry.
    pub wake: Arc<tokio::sync::Notify>,
    pub store: Arc<dyn crate::store::Store>,
    /// A dry-run plan of a spec's text (blocking).
    pub plan: Arc<dyn Fn(String) -> crate::http::api::PlanOutcome + Send + Sync>,
    /// Asks for a reconcile, as SIGHUP does.
    pub reload: tokio::sync::mpsc::Sender<()>,
    /// Looks the domains' records up for the domains page (None: no DNS here).
    pub resolver: Option<hickory_resolver::TokioResolver>,
    /// Recent live checks, by zone line: a page view does not query DNS every time.
    pub dns_checks: std::sync::Mutex<
        std::collections::HashMap<String, (std::time::Instant, Option<crate::dns::check::Verdict>)>,
    >,
    /// Makes the admin's and the API's edits of the spec.
    pub editor: Arc<dyn crate::change::SpecEditor>,
}

/// Set on requests that came over the https listener.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// Who is looking, once the request passed the checks every admin page makes.
pub struct Viewer {
    pub session: auth::Session,
    pub token: String,
}

/// The admin is served over TLS, or over plain http to loopback clients only.
pub(crate) fn transport_ok(peer: SocketAddr, tls: Option<&OverTls>) -> bool {
    // to_canonical: a dual-stack listener sees 127.0.0.1 as ::ffff:127.0.0.1.
    tls.is_some() || peer.ip().to_canonical().is_loopback()
}

fn refuse_plain() -> Response {
    (
        StatusCode::FORBIDDEN,
        "the admin is served over https (plain http from this host only)\n",
    )
        .into_response()
}

fn peer_and_tls(parts: &axum::http::request::Parts) -> (Option<SocketAddr>, Option<OverTls>) {
    (
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
        parts.extensions.get::<OverTls>().copied(),
    )
}

/// The session behind the request's cookie; a request without one is sent to the login
/// page, one over plain http from elsewhere is refused.
impl axum::extract::FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (peer, tls) = peer_and_tls(parts);
        if !peer.is_some_and(|p| transport_ok(p, tls.as_ref())) {
            return Err(refuse_plain());
        }
        let to_login = || Redirect::to("/admin/login").into_response();
        let token = auth::cookie(&parts.headers, auth::COOKIE).ok_or_else(to_login)?;
        let session = state.admin.sessions.get(&token).ok_or_else(to_login)?;
        // A credential changed or removed since the login ends the session.
        if current_credential(state, &session.user, &session.role).await != Some(session.credential)
        {
            state.admin.sessions.remove(&token);
            return Err(to_login());
        }
        Ok(Viewer { session, token })
    }
}

/// The digest of what `user` logs in with now, if they still may: a mailbox owner's
/// own password once they changed it.
async fn current_credential(state: &AppState, user: &str, role: &Role) -> Option<[u8; 32]> {
    match role {
        Role::Admin => {
            let site = state.site.load();
            if let Some((_, hash)) = site.admins.iter().find(|(name, _)| name == user) {
                Some(auth::fingerprint(hash))
            } else if user == "admin" {
                site.first_boot_password.as_deref().map(auth::fingerprint)
            } else {
                None
            }
        }
        Role::Mailbox(account) => state
            .admin
            .logins
            .main_hash(account)
            .await
            .map(|hash| auth::fingerprint(&hash)),
    }
}

impl Viewer {
    /// The refusal of a form whose CSRF token is not this session's (None: it is).
    pub fn csrf_refusal(&self, token: &str) -> Option<Response> {
        (!auth::same(&self.session.csrf, token))
            .then(|| (StatusCode::FORBIDDEN, "missing or wrong CSRF token\n").into_response())
    }
}

/// A viewer who is an administrator; anyone else gets 403.
pub struct AdminViewer(pub Viewer);

impl axum::extract::FromRequestParts<AppState> for AdminViewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let viewer = Viewer::from_request_parts(parts, state).await?;
        if viewer.session.role != Role::Admin {
            let mut response = html(pages::page(&viewer, "Not allowed", pages::forbidden()));
            *response.status_mut() = StatusCode::FORBIDDEN;
            return Err(response);
        }
        Ok(AdminViewer(viewer))
    }
}

fn html(markup: maud::Markup) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Nothing here is meant to be framed, cached by others or sniffed.
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        markup.into_string(),
    )
        .into_response()
}

fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(value) = HeaderValue::from_str(c) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// `GET /admin/login`: the form, with a CSRF token tied to a cookie of its own.
pub async fn login_form(
    State(_state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    tls: Option<axum::Extension<OverTls>>,
) -> Response {
    let tls = tls.map(|t| t.0);
    if !transport_ok(peer, tls.as_ref()) {
        return refuse_plain();
    }
    let token = auth::random_token();
    with_cookies(
        html(pages::login(&token, None)),
        &[auth::set_cookie(
            auth::LOGIN_COOKIE,
            &token,
            tls.is_some(),
            Some(3600),
        )],
    )
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

/// `POST /admin/login`: an administrator, the first-boot "admin", or a mailbox user.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    tls: Option<axum::Extension<OverTls>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let tls = tls.map(|t| t.0);
    if !transport_ok(peer, tls.as_ref()) {
        return refuse_plain();
    }
    let secure = tls.is_some();
    let expected = auth::cookie(&headers, auth::LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !auth::same(&expected, &form.csrf) {
        return (
            StatusCode::FORBIDDEN,
            "the login form expired or came from elsewhere; load it again\n",
        )
            .into_response();
    }
    let retry = |status: StatusCode, message: &str| {
        let token = auth::random_token();
        let mut response = html(pages::login(&token, Some(message)));
        *response.status_mut() = status;
        with_cookies(
            response,
            &[auth::set_cookie(
                auth::LOGIN_COOKIE,
                &token,
                secure,
                Some(3600),
            )],
        )
    };
    let user = form.user.trim().to_string();
    // Failures count per address and per name, and a success clears neither: a login of
    // one's own must not reset the count of guesses at someone else's password. A name
    // guessed at from everywhere stays open to the networks it logged in from lately.
    let throttle = crate::login::Throttle {
        cache: state.admin.cache.as_ref(),
        kind: "admin-login",
    };
    let name = user.to_lowercase();
    if !throttle.allows(peer.ip(), &name) {
        return retry(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed logins from here or for this name; wait a few minutes.",
        );
    }
    let site = state.site.load_full();
    let role = if let Some((_, hash)) = site.admins.iter().find(|(name, _)| *name == user) {
        let (password, hash) = (form.password.clone(), hash.clone());
        let ok = tokio::task::spawn_blocking(move || crate::password::verify(&password, &hash))
            .await
            .unwrap_or(false);
        ok.then_some(Role::Admin)
    } else if let (true, Some(first)) = (user == "admin", &site.first_boot_password) {
        auth::same(first, &form.password).then_some(Role::Admin)
    } else if user.contains('@') {
        match state
            .admin
            .logins
            .check_at(peer.ip(), &user, &form.password, crate::login::Door::Web)
            .await
        {
            crate::login::Outcome::Accepted(account) => Some(Role::Mailbox(account)),
            _ => None,
        }
    } else {
        // An unknown name costs what a known one does: the time taken must not tell
        // which administrator names exist.
        let password = form.password.clone();
        let _ = tokio::task::spawn_blocking(move || {
            crate::password::verify(&password, crate::login::decoy_hash())
        })
        .await;
        None
    };
    let credential = match &role {
        Some(role) => current_credential(&state, &user, role).await,
        None => None,
    };
    let (Some(role), Some(credential)) = (role, credential) else {
        throttle.failed(peer.ip(), &name);
        if crate::login::failed_logins_logged().allows() {
            tracing::info!(ip = %peer.ip(), user = %user, "admin login failed");
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        return retry(StatusCode::UNAUTHORIZED, "Wrong name or password.");
    };
    throttle.succeeded(peer.ip(), &name);
    // Always a new session: a cookie planted before the login is never promoted.
    if let Some(old) = auth::cookie(&headers, auth::COOKIE) {
        state.admin.sessions.remove(&old);
    }
    let landing = match role {
        Role::Admin => "/admin",
        Role::Mailbox(_) => "/admin/me",
    };
    let token = state.admin.sessions.create(user, role, credential);
    with_cookies(
        Redirect::to(landing).into_response(),
        &[
            auth::set_cookie(auth::COOKIE, &token, secure, None),
            auth::set_cookie(auth::LOGIN_COOKIE, "", secure, Some(0)),
        ],
    )
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /admin/logout`.
pub async fn logout(
    State(state): State<AppState>,
    viewer: Viewer,
    tls: Option<axum::Extension<OverTls>>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = viewer.csrf_refusal(&form.csrf) {
        return refused;
    }
    state.admin.sessions.remove(&viewer.token);
    with_cookies(
        Redirect::to("/admin/login").into_response(),
        &[auth::set_cookie(auth::COOKIE, "", tls.is_some(), Some(0))],
    )
}

pub use edit_pages::{
    edit, edit_alias as edit_alias_form, edit_domain as edit_domain_form, new_alias, new_domain,
};
pub use me::{
    apple_profile, change_password, make_app_password, me, revoke_app_password, set_forwarding,
    set_vacation,
};
pub use pages::{
    aliases, backups, certificates, domains, emails, errors, mailboxes, overview, plan, plan_form,
    queue, queue_action,
};
pub use reports::{report, reports};
