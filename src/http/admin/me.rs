//! A mailbox owner's own page: usage, recent mail, client settings, and what the spec
//! lets them change themselves (password, app passwords, forwarding, vacation).

use std::time::Duration;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::pages::page;
use super::{Role, Viewer, auth, html as respond, with_cookies};
use crate::http::{AppState, Security, ServiceKind};
use crate::selfservice::{self, AppPassword, Forwarding, Own, OwnPassword};
use crate::spec::model::{SelfService, Vacation};
use crate::store::records::AccountRecord;

/// Changes one account may make within `WRITE_WINDOW` (a stolen session must not turn
/// the page into a machine for anything).
const WRITES: u32 = 30;
const WRITE_WINDOW: Duration = Duration::from_secs(600);
/// App passwords one account may make within a day.
const MADE_PER_DAY: u32 = 20;
/// Shortest new password: NIST SP 800-63B asks at least 8; a mail password is typed
/// once per device, so a little more costs nobody much.
const MIN_PASSWORD_CHARS: usize = 10;
const MAX_PASSWORD_CHARS: usize = 1024;
/// Mail log lines shown.
const RECENT_MAIL: usize = 20;

/// What the page says on top after an action.
enum Notice {
    None,
    Done(&'static str),
    Refused(String),
    /// A new app password, shown once: its name and itself.
    Made(String, String),
}

/// The viewer's account and its record, or the answer for someone who has none.
/// (Boxed: a response is large, and the usual path is Ok.)
fn owner(state: &AppState, viewer: &Viewer) -> Result<(String, AccountRecord), Box<Response>> {
    let Role::Mailbox(account) = &viewer.session.role else {
        return Err(Box::new(Redirect::to("/admin").into_response()));
    };
    match state.snapshot.get().accounts.get(account) {
        Some(record) => Ok((account.clone(), record.clone())),
        None => Err(Box::new(Redirect::to("/admin/login").into_response())),
    }
}

async fn read_own(state: &AppState, account: &str) -> Result<Own, Response> {
    let (mailboxes, who) = (state.admin.mailboxes.clone(), account.to_string());
    match tokio::task::spawn_blocking(move || selfservice::settings::read(&mailboxes, &who)).await {
        Ok(Ok(own)) => Ok(own),
        Ok(Err(e)) => {
            tracing::error!(account, "reading the owner's settings: {e}");
            Err(unavailable())
        }
        Err(_) => Err(unavailable()),
    }
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the settings could not be read; try again in a moment\n",
    )
        .into_response()
}

/// `GET /admin/me`.
pub async fn me(State(state): State<AppState>, viewer: Viewer) -> Response {
    render(&state, &viewer, Notice::None, StatusCode::OK).await
}

async fn render(state: &AppState, viewer: &Viewer, notice: Notice, status: StatusCode) -> Response {
    let (account, record) = match owner(state, viewer) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let own = match read_own(state, &account).await {
        Ok(own) => own,
        Err(response) => return response,
    };
    let (mailboxes, log, who) = (
        state.admin.mailboxes.clone(),
        state.admin.log.clone(),
        account.clone(),
    );
    let (used, recent) = tokio::task::spawn_blocking(move || {
        let used = if mailboxes.exists(&who) {
            mailboxes.open(&who).and_then(|m| m.quota_used()).ok()
        } else {
            Some(0)
        };
        (used, recent_mail(&log, &who))
    })
    .await
    .unwrap_or((None, Vec::new()));
    let csrf = &viewer.session.csrf;
    let site = state.site.load();
    let body = html! {
        @match &notice {
            Notice::None => {},
            Notice::Done(what) => p.ok role="status" #notice { (what) },
            Notice::Refused(why) => p.bad role="alert" #notice { (why) },
            Notice::Made(name, password) => div.card role="status" #new-app-password {
                p { "The app password for " strong { (name) } " — type it into that device's mail app as the password. It is shown this once:" }
                p { code #app-password style="font-size:1.3em" { (password) } }
            },
        }
        div.card {
            p { "Mailbox " strong { (account) } }
            @match used {
                Some(used) => p #usage {
                    (crate::backup::human_bytes(used)) " used"
                    @if let Some(q) = record.quota { " of " (crate::backup::human_bytes(q)) " (" (used * 100 / q.max(1)) "%)" } @else { " (no quota)" }
                },
                None => p.bad { "The mailbox could not be read." },
            }
            @if record.main_password == crate::spec::model::MainPassword::Web {
                p.muted { "Your password opens this page only; mail apps log in with an app password." }
            }
        }
        @if record.allows(SelfService::Password) {
            (password_form(csrf))
        }
        @if record.allows(SelfService::AppPasswords) {
            (app_passwords(csrf, &selfservice::live_app_passwords(&record, &own).cloned().collect::<Vec<_>>()))
        }
        @if record.allows(SelfService::Forwarding) {
            (forwarding_form(csrf, own.forwarding.as_ref()))
        }
        @if record.allows(SelfService::Vacation) {
            (vacation_form(csrf, selfservice::vacation(&record, &own)))
        }
        (client_settings(&site, &account))
        h2 { "Recent mail" }
        @if recent.is_empty() {
            p.muted { "Nothing in the mail log for this address yet." }
        } @else {
            table.rows #recent-mail {
                tr { th { "When" } th { "Event" } th { "From" } th { "To" } th { "Detail" } }
                @for e in &recent {
                    tr {
                        td data-label="When" { (crate::backup::rfc3339(e.at)) }
                        td data-label="Event" { (e.event.as_str()) }
                        td data-label="From" { (e.mail_from) }
                        td data-label="To" { (e.rcpt) }
                        @if !e.detail.is_empty() { td data-label="Detail" { (e.detail) } } @else { td {} }
                    }
                }
            }
        }
    };
    let mut response = respond(page(viewer, "My mailbox", body));
    *response.status_mut() = status;
    response
}

/// The account's recent lines of the mail log: what it sent, and what came for it
/// with only its own address as the recipient (a message's other recipients, Bcc ones
/// among them, are not the owner's to see).
fn recent_mail(log: &crate::queue::log::MailLog, account: &str) -> Vec<crate::queue::log::Entry> {
    let Ok(found) = log.search(account, None, 200) else {
        return Vec::new();
    };
    let mine = |list: &str| {
        list.split([',', ' '])
            .any(|a| a.trim().eq_ignore_ascii_case(account))
    };
    found
        .into_iter()
        .filter_map(|mut e| {
            if e.mail_from.eq_ignore_ascii_case(account) {
                Some(e)
            } else if mine(&e.rcpt) {
                e.rcpt = account.to_string();
                Some(e)
            } else {
                None
            }
        })
        .take(RECENT_MAIL)
        .collect()
}

fn password_form(csrf: &str) -> Markup {
    html! {
        h2 { "Password" }
        form.card.edit #password-form method="post" action="/admin/me/password" {
            input type="hidden" name="csrf" value=(csrf);
            // For password managers: whose password this is.
            p { label { "Current password" br; input name="current" type="password" autocomplete="current-password" required; } }
            p { label { "New password" br; input name="new" type="password" autocomplete="new-password" minlength=(MIN_PASSWORD_CHARS) required; } }
            p { label { "New password again" br; input name="again" type="password" autocomplete="new-password" minlength=(MIN_PASSWORD_CHARS) required; } }
            p.muted { "At least " (MIN_PASSWORD_CHARS) " characters. Other sessions of this page end, and app passwords stop working: make new ones." }
            button type="submit" { "Change password" }
        }
    }
}

fn app_passwords(csrf: &str, list: &[AppPassword]) -> Markup {
    html! {
        h2 { "App passwords" }
        p.muted { "One for each device's mail, calendar or contacts app (IMAP, POP3, SMTP, CalDAV, CardDAV). Revoke the one of a lost device; the others keep working." }
        @if !list.is_empty() {
            table.rows #app-passwords {
                tr { th { "Name" } th { "Made" } th { "Last used" } th {} }
                @for a in list {
                    tr {
                        td data-label="Name" { (a.name) }
                        td data-label="Made" { (crate::backup::rfc3339(a.created)) }
                        td data-label="Last used" { @match a.last_used { Some(t) => (crate::backup::rfc3339(t)), None => "never" } }
                        td {
                            form method="post" action={ "/admin/me/app-passwords/" (a.id) "/revoke" } {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" aria-label={ "Revoke " (a.name) } { "Revoke" }
                            }
                        }
                    }
                }
            }
        }
        @if list.len() < selfservice::MAX_APP_PASSWORDS {
            form.card.search #app-password-form method="post" action="/admin/me/app-passwords" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Device " input name="name" required maxlength=(selfservice::MAX_NAME_CHARS) placeholder="phone"; }
                label { "Your password " input name="current" type="password" autocomplete="current-password" required; }
                button type="submit" { "Make an app password" }
            }
        } @else {
            p.muted { "An account keeps at most " (selfservice::MAX_APP_PASSWORDS) " app passwords; revoke one to make another." }
        }
    }
}

fn forwarding_form(csrf: &str, forwarding: Option<&Forwarding>) -> Markup {
    let to = forwarding.map(|f| f.to.join("\n")).unwrap_or_default();
    let keep = forwarding.is_none_or(|f| f.keep);
    html! {
        h2 { "Forwarding" }
        form.card.edit #forwarding-form method="post" action="/admin/me/forwarding" {
            input type="hidden" name="csrf" value=(csrf);
            p { label { "Forward my mail to (one address a line, at most " (selfservice::MAX_FORWARDS) "; empty: none)" br;
                textarea name="to" rows="3" cols="40" { (to) } } }
            p { label { input type="checkbox" name="keep" value="on" checked[keep]; " Keep a copy here" } }
            p { label { "Your password" br; input name="current" type="password" autocomplete="current-password" required; } }
            button type="submit" { "Save forwarding" }
        }
    }
}

fn vacation_form(csrf: &str, vacation: Option<&Vacation>) -> Markup {
    let v = vacation.cloned();
    let field = |f: fn(&Vacation) -> Option<String>| v.as_ref().and_then(f).unwrap_or_default();
    html! {
        h2 { "Vacation reply" }
        form.card.edit #vacation-form method="post" action="/admin/me/vacation" {
            input type="hidden" name="csrf" value=(csrf);
            p { label { input type="checkbox" name="on" value="on" checked[v.is_some()]; " Answer mail automatically" } }
            p { label { "From (first day, UTC)" br; input name="from" type="date" value=(field(|v| v.from.clone())); } }
            p { label { "Until (last day)" br; input name="until" type="date" value=(field(|v| v.until.clone())); } }
            p { label { "Subject" br; input name="subject" size="40" maxlength=(selfservice::MAX_SUBJECT_CHARS) value=(field(|v| v.subject.clone())); } }
            p { label { "Reply" br; textarea name="body" rows="5" cols="40" maxlength=(selfservice::MAX_REPLY_BYTES) { (field(|v| Some(v.body.clone()))) } } }
            p.muted { "Each sender gets one reply a week; lists, bounces and automatic mail none." }
            button type="submit" { "Save vacation reply" }
        }
    }
}

fn client_settings(site: &crate::http::Site, account: &str) -> Markup {
    html! {
        h2 { "Mail app settings" }
        table.rows #client-settings {
            tr { th { "Service" } th { "Server" } th { "Port" } th { "Security" } th { "User name" } }
            @for s in site.preferred() {
                tr {
                    td data-label="Service" { (match s.kind { ServiceKind::Imap => "IMAP (incoming)", ServiceKind::Pop3 => "POP3 (incoming)", ServiceKind::Submission => "SMTP (outgoing)" }) }
                    td data-label="Server" { code { (site.hostname) } }
                    td data-label="Port" { (s.port) }
                    td data-label="Security" { (match s.security { Security::Implicit => "SSL/TLS", Security::StartTls => "STARTTLS" }) }
                    td data-label="User name" { (account) }
                }
            }
            @for (name, port) in [("CalDAV (calendars)", site.caldav_port), ("CardDAV (contacts)", site.carddav_port)] {
                @if let Some(port) = port {
                    tr {
                        td data-label="Service" { (name) }
                        td data-label="Server" { code { "https://" (site.hostname) ":" (port) (crate::dav::BASE) } }
                        td data-label="Port" { (port) }
                        td data-label="Security" { "SSL/TLS" }
                        td data-label="User name" { (account) }
                    }
                }
            }
        }
        p {
            "Thunderbird, K-9 and FairEmail find these by themselves from your address. "
            a href="/admin/me/apple.mobileconfig" download="mail.mobileconfig" { "Profile for iPhone, iPad and Mac" }
            " (it asks for the password when installed)."
        }
    }
}

/// The page again with why the change was refused on top.
async fn refuse(
    state: &AppState,
    viewer: &Viewer,
    why: impl Into<String>,
    status: StatusCode,
) -> Response {
    render(state, viewer, Notice::Refused(why.into()), status).await
}

/// Counts one change of `account`'s settings; false once it made too many lately.
fn may_write(state: &AppState, account: &str) -> bool {
    state
        .admin
        .cache
        .hit(&format!("self-service:{account}"), WRITES, WRITE_WINDOW)
}

/// The owner's settings changed by `change` in one step (blocking, off the async
/// threads); an answer for the page when it fails.
async fn change_own<T: Send + 'static>(
    state: &AppState,
    account: &str,
    change: impl FnMut(&mut Own) -> T + Send + 'static,
) -> Result<T, Response> {
    let (mailboxes, who) = (state.admin.mailboxes.clone(), account.to_string());
    match tokio::task::spawn_blocking(move || {
        selfservice::settings::update(&mailboxes, &who, change)
    })
    .await
    {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => {
            tracing::error!(account, "saving the owner's settings: {e}");
            Err(unavailable())
        }
        Err(_) => Err(unavailable()),
    }
}

/// The checks every change makes: the session's CSRF token, the owner's right to make
/// it, and the rate of changes. Err is the answer.
fn admitted(
    state: &AppState,
    viewer: &Viewer,
    csrf: &str,
    right: SelfService,
) -> Result<(String, AccountRecord), Box<Response>> {
    if let Some(refused) = viewer.csrf_refusal(csrf) {
        return Err(Box::new(refused));
    }
    let (account, record) = owner(state, viewer)?;
    if !record.allows(right) {
        return Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                "the spec does not let this mailbox change that itself\n",
            )
                .into_response(),
        ));
    }
    if !may_write(state, &account) {
        return Err(Box::new(
            (
                StatusCode::TOO_MANY_REQUESTS,
                "too many changes lately; wait a few minutes\n",
            )
                .into_response(),
        ));
    }
    Ok((account, record))
}

/// Checks the owner's current password, as a login is checked: throttled per network
/// and account. What a stolen session alone must not do (a new password, an app
/// password, forwarding mail away) asks for it. Err is the page's refusal text and
/// status.
async fn confirm(
    state: &AppState,
    peer: std::net::IpAddr,
    account: &str,
    record: &AccountRecord,
    given: &str,
) -> Result<(), (String, StatusCode)> {
    let throttle = crate::login::Throttle {
        cache: state.admin.cache.as_ref(),
        kind: "self-service",
    };
    if !throttle.allows(peer, account) {
        return Err((
            "Too many wrong passwords lately; wait a few minutes.".into(),
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let Ok(own) = read_own(state, account).await else {
        return Err((
            "The settings could not be read; try again in a moment.".into(),
            StatusCode::SERVICE_UNAVAILABLE,
        ));
    };
    let (hash, given) = (
        selfservice::main_hash(record, &own).to_string(),
        given.to_string(),
    );
    let matches = tokio::task::spawn_blocking(move || crate::password::verify(&given, &hash))
        .await
        .unwrap_or(false);
    if matches {
        return Ok(());
    }
    throttle.failed(peer, account);
    tracing::info!(ip = %peer, account, "self-service: wrong current password");
    Err((
        "The current password is wrong.".into(),
        StatusCode::UNPROCESSABLE_ENTITY,
    ))
}

#[derive(serde::Deserialize)]
pub struct PasswordForm {
    csrf: String,
    current: String,
    new: String,
    again: String,
}

/// `POST /admin/me/password`: the current password, then the new one twice.
pub async fn change_password(
    State(state): State<AppState>,
    viewer: Viewer,
    tls: Option<axum::Extension<super::OverTls>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Form(form): Form<PasswordForm>,
) -> Response {
    let (account, record) = match admitted(&state, &viewer, &form.csrf, SelfService::Password) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let invalid = |why: &str| {
        refuse(
            &state,
            &viewer,
            why.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    let new_chars = form.new.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&new_chars) {
        return invalid(&format!(
            "The new password needs {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters."
        ))
        .await;
    }
    if form.new != form.again {
        return invalid("The two new passwords differ.").await;
    }
    if form.new == form.current {
        return invalid("The new password is the current one.").await;
    }
    if let Err((why, status)) = confirm(&state, peer.ip(), &account, &record, &form.current).await {
        return refuse(&state, &viewer, why, status).await;
    }
    let new = form.new.clone();
    let made = tokio::task::spawn_blocking(move || crate::password::hash(&new).ok())
        .await
        .ok()
        .flatten();
    let Some(hash) = made else {
        return unavailable();
    };
    let over = selfservice::fingerprint(&record.password_hash);
    let stored = hash.clone();
    if let Err(response) = change_own(&state, &account, move |own| {
        own.password = Some(OwnPassword {
            hash: stored.clone(),
            over: over.clone(),
            changed: crate::store::unix_now(),
        });
        // Made under the old password, which may be why it is changed.
        own.app_passwords.clear();
    })
    .await
    {
        return response;
    }
    tracing::info!(account, "self-service: password changed");
    // Every session opened with the old password ends (src/http/admin: the credential
    // changed); this one goes on in a new session.
    state.admin.sessions.remove(&viewer.token);
    let token = state.admin.sessions.create(
        viewer.session.user.clone(),
        viewer.session.role.clone(),
        auth::fingerprint(&hash),
    );
    let next = Viewer {
        session: match state.admin.sessions.get(&token) {
            Some(session) => session,
            None => return Redirect::to("/admin/login").into_response(),
        },
        token: token.clone(),
    };
    with_cookies(
        render(
            &state,
            &next,
            Notice::Done("Password changed."),
            StatusCode::OK,
        )
        .await,
        &[auth::set_cookie(auth::COOKIE, &token, tls.is_some(), None)],
    )
}

#[derive(serde::Deserialize)]
pub struct NameForm {
    csrf: String,
    name: String,
    #[serde(default)]
    current: String,
}

/// `POST /admin/me/app-passwords`: a new one, shown once.
pub async fn make_app_password(
    State(state): State<AppState>,
    viewer: Viewer,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Form(form): Form<NameForm>,
) -> Response {
    let (account, record) = match admitted(&state, &viewer, &form.csrf, SelfService::AppPasswords) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let name = form.name.trim().to_string();
    if name.is_empty()
        || name.chars().count() > selfservice::MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return refuse(
            &state,
            &viewer,
            format!(
                "A device's name is 1 to {} characters.",
                selfservice::MAX_NAME_CHARS
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    if !state.admin.cache.hit(
        &format!("app-passwords-made:{account}"),
        MADE_PER_DAY,
        Duration::from_secs(86_400),
    ) {
        return refuse(
            &state,
            &viewer,
            "Too many app passwords made today; try again tomorrow.",
            StatusCode::TOO_MANY_REQUESTS,
        )
        .await;
    }
    if let Err((why, status)) = confirm(&state, peer.ip(), &account, &record, &form.current).await {
        return refuse(&state, &viewer, why, status).await;
    }
    let (Some(password), Some(id)) = (selfservice::app_password::generate(), id()) else {
        return unavailable();
    };
    let Some(digest) = selfservice::app_password::digest(&account, &password) else {
        return unavailable();
    };
    let mut made = AppPassword {
        id,
        name: name.clone(),
        digest,
        over: String::new(),
        created: crate::store::unix_now(),
        last_used: None,
    };
    let added = change_own(&state, &account, move |own| {
        // Those a new main password ended go; the new one is bound to the one now.
        let live: Vec<String> = selfservice::live_app_passwords(&record, own)
            .map(|a| a.id.clone())
            .collect();
        own.app_passwords.retain(|a| live.contains(&a.id));
        if own.app_passwords.len() >= selfservice::MAX_APP_PASSWORDS {
            return false;
        }
        made.over = selfservice::fingerprint(selfservice::main_hash(&record, own));
        own.app_passwords.push(made.clone());
        true
    })
    .await;
    match added {
        Ok(true) => {
            tracing::info!(account, device = %name, "self-service: app password made");
            render(
                &state,
                &viewer,
                Notice::Made(name, password),
                StatusCode::OK,
            )
            .await
        }
        Ok(false) => {
            refuse(
                &state,
                &viewer,
                format!(
                    "An account keeps at most {} app passwords; revoke one first.",
                    selfservice::MAX_APP_PASSWORDS
                ),
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(response) => response,
    }
}

/// A random id for an app password (what forms name it by).
fn id() -> Option<String> {
    let mut bytes = [0u8; 9];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

/// `POST /admin/me/app-passwords/{id}/revoke`.
pub async fn revoke_app_password(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(form): Form<super::CsrfForm>,
) -> Response {
    let (account, _) = match admitted(&state, &viewer, &form.csrf, SelfService::AppPasswords) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let gone = change_own(&state, &account, move |own| {
        let before = own.app_passwords.len();
        own.app_passwords.retain(|a| a.id != id);
        before != own.app_passwords.len()
    })
    .await;
    match gone {
        Ok(true) => {
            tracing::info!(account, "self-service: app password revoked");
            render(
                &state,
                &viewer,
                Notice::Done("App password revoked."),
                StatusCode::OK,
            )
            .await
        }
        Ok(false) => {
            refuse(
                &state,
                &viewer,
                "No such app password (revoked already?).",
                StatusCode::NOT_FOUND,
            )
            .await
        }
        Err(response) => response,
    }
}

#[derive(serde::Deserialize)]
pub struct ForwardingForm {
    csrf: String,
    #[serde(default)]
    to: String,
    keep: Option<String>,
    #[serde(default)]
    current: String,
}

/// `POST /admin/me/forwarding`: the addresses (none: no forwarding) and whether a copy
/// stays.
pub async fn set_forwarding(
    State(state): State<AppState>,
    viewer: Viewer,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Form(form): Form<ForwardingForm>,
) -> Response {
    let (account, record) = match admitted(&state, &viewer, &form.csrf, SelfService::Forwarding) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let to: Vec<String> = form
        .to
        .split(['\n', ',', ' '])
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if let Err(why) = selfservice::check_forwarding(&to, &account) {
        return refuse(
            &state,
            &viewer,
            format!("Not saved: {why}."),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    if let Err((why, status)) = confirm(&state, peer.ip(), &account, &record, &form.current).await {
        return refuse(&state, &viewer, why, status).await;
    }
    let keep = form.keep.is_some();
    let saved = change_own(&state, &account, move |own| {
        own.forwarding = (!to.is_empty()).then(|| Forwarding {
            to: to.clone(),
            keep,
        });
    })
    .await;
    match saved {
        Ok(()) => {
            render(
                &state,
                &viewer,
                Notice::Done("Forwarding saved."),
                StatusCode::OK,
            )
            .await
        }
        Err(response) => response,
    }
}

#[derive(serde::Deserialize)]
pub struct VacationForm {
    csrf: String,
    on: Option<String>,
    #[serde(default)]
    from: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    body: String,
}

/// `POST /admin/me/vacation`: on with its days and text, or off.
pub async fn set_vacation(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<VacationForm>,
) -> Response {
    let (account, _) = match admitted(&state, &viewer, &form.csrf, SelfService::Vacation) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let given = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let vacation = form.on.is_some().then(|| Vacation {
        from: given(&form.from),
        until: given(&form.until),
        subject: given(&form.subject),
        body: form.body.clone(),
        days: None,
    });
    if let Some(v) = &vacation
        && let Err(why) = selfservice::check_vacation(v)
    {
        return refuse(
            &state,
            &viewer,
            format!("Not saved: {why}."),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let saved = change_own(&state, &account, move |own| {
        own.vacation = vacation.clone();
    })
    .await;
    match saved {
        Ok(()) => {
            render(
                &state,
                &viewer,
                Notice::Done("Vacation reply saved."),
                StatusCode::OK,
            )
            .await
        }
        Err(response) => response,
    }
}

/// `GET /admin/me/apple.mobileconfig`: the account's mail (and calendars and contacts)
/// as an Apple configuration profile; the device asks for the password when installing.
pub async fn apple_profile(State(state): State<AppState>, viewer: Viewer) -> Response {
    let (account, _) = match owner(&state, &viewer) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let site = state.site.load();
    (
        [
            (header::CONTENT_TYPE, "application/x-apple-aspen-config"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"mail.mobileconfig\"",
            ),
        ],
        super::profile::apple(&site, &account),
    )
        .into_response()
}
