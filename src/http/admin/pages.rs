//! The admin's pages as HTML (maud escapes every value): the layout, login, overview,
//! aliases with a route tester, the mail log, and a mailbox user's own page.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};

use super::{AdminViewer, CsrfForm, Role, Viewer, html as respond};
use crate::http::AppState;

/// At most this many rows on a page; a search narrows them.
const ROWS: usize = 500;

const STYLE: &str = "
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:.6em 1em;display:flex;flex-wrap:wrap;gap:1em;align-items:center}
header a{color:#cfe3ff;text-decoration:none}header .who{margin-left:auto}
header form{display:inline}header button{font:inherit}
main{padding:1em;max-width:72em;margin:auto}
table{border-collapse:collapse;width:100%;background:#fff}
td,th{border-bottom:1px solid #e3e6ea;padding:.35em .5em;text-align:left;vertical-align:top;overflow-wrap:break-word}
td code{overflow-wrap:anywhere}
a.button{display:inline-block;background:#1d4ed8;color:#fff;padding:.3em .8em;border-radius:4px;text-decoration:none}
a.small{font-size:.7em;font-weight:normal}
form.edit textarea,form.edit input[size]{max-width:100%;box-sizing:border-box}
pre{white-space:pre-wrap;overflow-wrap:anywhere}
fieldset{border:1px solid #e3e6ea;margin:.5em 0;min-width:0}
figure.chart{margin:0 0 1em}figure.chart svg{width:100%;height:8em;display:block;background:#fafbfc}
figure.chart svg.strip{height:2.5em}
.legend{font-size:.85em;margin:.2em 0;padding:0;list-style:none}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:middle}
textarea,input{max-width:100%;box-sizing:border-box}
.ok{color:#14743a}.bad{color:#b3261e}.muted{color:#6b7280}
input,select,button{font:inherit;padding:.3em .5em}
form.search{display:flex;flex-wrap:wrap;gap:.5em;margin:.5em 0 1em}
.card{background:#fff;padding:1em;margin-bottom:1em;border-radius:6px}
@media (max-width:40em){
table.rows tr:first-child{display:none}
table.rows tr{display:block;border-bottom:1px solid #e3e6ea;padding:.4em 0;background:#fff}
table.rows td{display:block;border:0;padding:.1em .5em}
table.rows td[data-label]::before{content:attr(data-label) \": \";color:#6b7280}
}
";

/// The frame of every page for a logged-in viewer.
pub fn page(viewer: &Viewer, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ferrymail" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "ferrymail" }
                    @if viewer.session.role == Role::Admin {
                        a href="/admin" { "Overview" }
                        a href="/admin/domains" { "Domains" }
                        a href="/admin/aliases" { "Aliases" }
                        a href="/admin/emails" { "Mail log" }
                        a href="/admin/queue" { "Queue" }
                        a href="/admin/reports" { "Reports" }
                        a href="/admin/certificates" { "Certificates" }
                        a href="/admin/backups" { "Backups" }
                        a href="/admin/logs" { "Errors" }
                        a href="/admin/mailboxes" { "Mailboxes" }
                        a href="/admin/plan" { "Plan" }
                    } @else {
                        a href="/admin/me" { "My mailbox" }
                    }
                    span.who {
                        (viewer.session.user) " "
                        form method="post" action="/admin/logout" {
                            input type="hidden" name="csrf" value=(viewer.session.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn login(csrf: &str, message: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · ferrymail" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                main {
                    h1 { "Log in" }
                    @if let Some(message) = message { p.bad role="alert" { (message) } }
                    form.card method="post" action="/admin/login" {
                        input type="hidden" name="csrf" value=(csrf);
                        p { label { "Name or mail address" br; input name="user" autocomplete="username" required autofocus; } }
                        p { label { "Password" br; input name="password" type="password" autocomplete="current-password" required; } }
                        button type="submit" { "Log in" }
                    }
                    p.muted { "Administrators are declared in the spec ([admin.users]); mailbox users see their own mailbox." }
                }
            }
        }
    }
}

pub fn forbidden() -> Markup {
    html! { p { "This page is for administrators." } }
}

/// `GET /admin`: what is serving, from where, and how the last reconcile went.
pub async fn overview(State(state): State<AppState>, AdminViewer(viewer): AdminViewer) -> Response {
    let source = state.admin.overview.clone();
    let Ok(o) = tokio::task::spawn_blocking(move || source()).await else {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let snapshot = state.snapshot.get();
    let now = crate::store::unix_now();
    let (log, store) = (state.admin.log.clone(), state.admin.store.clone());
    let (day, week, depth, runs) = tokio::task::spawn_blocking(move || {
        (
            log.per_bucket(now, 3600, 24).unwrap_or_default(),
            log.per_bucket(now, 6 * 3600, 28).unwrap_or_default(),
            log.queue_depth(now, 3600, 24).unwrap_or_default(),
            store.backup_runs(100).unwrap_or_default(),
        )
    })
    .await
    .unwrap_or_default();
    let body = html! {
        div.card {
            p { "Serving " strong { (o.hostname) } " at store revision " (o.revision)
                @if !o.source.is_empty() { ", from " code { (o.source) } } "." }
            p #apply-mode {
                @if o.auto_apply {
                    "Apply: auto — every save of the spec (or new commit) is applied."
                } @else {
                    "Apply: manual — a saved edit waits for " code { "ferrymail apply" }
                    ", a reload, or an edit made here; " code { "ferrymail plan" } " shows it."
                }
            }
            @match &o.last_reconcile {
                Some((at, ok, summary, errors)) => {
                    p {
                        "Last reconcile " (at) ": "
                        @if *ok { span.ok { "applied" } } @else { span.bad { "FAILED" } }
                        " — " (summary)
                    }
                    @if !errors.is_empty() { ul.bad { @for e in errors { li { (e) } } } }
                }
                None => p.muted { "No reconcile yet." },
            }
            @if !o.dns_problems.is_empty() {
                p.bad { "DNS not published:" }
                ul { @for p in &o.dns_problems { li { (p) } } }
            }
            p { (snapshot.domains.len()) " domains, " (snapshot.accounts.len()) " mailboxes; "
                (o.queue_deliveries) " deliveries queued." }
        }
        div.card #charts {
            (super::charts::mail_per_bucket("Mail in the last day", &day, 3600))
            (super::charts::mail_per_bucket("Mail in the last week", &week, 6 * 3600))
            (super::charts::queue_depth("Queue in the last day", &depth, 3600))
            (super::charts::certificates(&o.certificates, now))
            (super::charts::backups(&runs, now, 14))
        }
        @if !o.plan.is_empty() {
            details {
                summary { "The plan the last reconcile applied" }
                pre.card #last-plan { (o.plan) }
            }
        }
        h2 { "Listeners" }
        table { @for (name, addr) in &o.listeners { tr { th { (name) } td { (addr) } } } }
        h2 { "Certificates" }
        (certificate_table(&o.certificates))
    };
    respond(page(&viewer, "Overview", body))
}

#[derive(serde::Deserialize, Default)]
pub struct AliasQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    test: String,
}

fn describe_rule(rule: &crate::routing::Rule) -> String {
    let mut parts = Vec::new();
    if !rule.enabled {
        parts.push("disabled".to_string());
    }
    if let Some(mode) = rule.reject {
        parts.push(format!("reject ({})", mode.as_str()));
    }
    if rule.mailbox {
        parts.push("mailbox".to_string());
    }
    if !rule.forward.is_empty() {
        parts.push(format!("forward to {}", rule.forward.join(", ")));
    }
    parts.join("; ")
}

/// `GET /admin/aliases`: every address and what it does, a search, and "test an
/// address": the route a recipient would take, as the MX would decide it.
pub async fn aliases(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
    Query(query): Query<AliasQuery>,
) -> Response {
    let snapshot = state.snapshot.get();
    let needle = query.q.trim().to_lowercase();
    let total = snapshot.router.listing().len();
    let matching = snapshot.router.search(&needle);
    let test = query.test.trim();
    let route = (!test.is_empty()).then(|| match snapshot.resolve(test) {
        Err(e) => format!("not an address: {e}"),
        Ok(None) => "no such address here: the MX refuses it (550)".to_string(),
        Ok(Some(r)) => {
            let how = match &r.matched {
                crate::routing::Matched::Exact => format!("alias {}", r.alias),
                crate::routing::Matched::Pattern(i) => {
                    format!("pattern #{} of {}", i + 1, r.alias.domain)
                }
                crate::routing::Matched::CatchAll => format!("the catch-all of {}", r.alias.domain),
            };
            let what = match &r.action {
                crate::routing::Action::Reject { mode, message } => format!(
                    "rejected ({}){}",
                    mode.as_str(),
                    message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
                crate::routing::Action::Deliver { mailbox, forward } => {
                    let mut parts = Vec::new();
                    if let Some(m) = mailbox {
                        parts.push(format!("kept in the mailbox of {m}"));
                    }
                    if !forward.is_empty() {
                        let list: Vec<String> = forward.iter().map(|f| f.to_string()).collect();
                        parts.push(format!("forwarded to {}", list.join(", ")));
                    }
                    if parts.is_empty() {
                        "accepted and dropped".into()
                    } else {
                        parts.join("; ")
                    }
                }
            };
            let tag = r
                .tag
                .as_deref()
                .map(|t| format!(" (tag +{t})"))
                .unwrap_or_default();
            format!("{} matches {how}{tag}: {what}", r.recipient)
        }
    });
    let body = html! {
        form.search method="get" action="/admin/aliases" {
            label { "Test an address " input name="test" value=(test) placeholder="someone@example.com"; }
            button type="submit" { "Show its route" }
        }
        @if let Some(route) = &route { p.card #route { (route) } }
        form.search method="get" action="/admin/aliases" {
            input name="q" value=(query.q) placeholder="search addresses and targets";
            button type="submit" { "Search" }
        }
        p.muted { (matching.len()) " of " (total) " entries"
            @if matching.len() > ROWS { ", the first " (ROWS) " shown" } "." }
        p { a.button href="/admin/aliases/new" { "Add an alias" } }
        table {
            tr { th { "Address" } th { "Does" } }
            @for (domain, local, rule) in matching.iter().take(ROWS) {
                tr {
                    td {
                        @if local.starts_with('/') || local == "*" {
                            a href=(format!("/admin/domains/{domain}/edit")) { (local) "@" (domain) }
                        } @else {
                            a href=(format!("/admin/aliases/{local}@{domain}/edit")) { (local) "@" (domain) }
                        }
                    }
                    td { (describe_rule(rule)) }
                }
            }
        }
    };
    respond(page(&viewer, "Aliases", body))
}

#[derive(serde::Deserialize, Default)]
pub struct LogQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    event: String,
}

/// `GET /admin/emails`: the mail log, newest first, searchable, filtered by event.
pub async fn emails(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
    Query(query): Query<LogQuery>,
) -> Response {
    use crate::queue::log::Event;
    let event = Event::ALL.into_iter().find(|e| e.as_str() == query.event);
    let log = state.admin.log.clone();
    let text = query.q.trim().to_string();
    let entries = tokio::task::spawn_blocking(move || log.search(&text, event, ROWS)).await;
    let entries = match entries {
        Ok(Ok(entries)) => entries,
        _ => return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let body = html! {
        form.search method="get" action="/admin/emails" {
            input name="q" value=(query.q) placeholder="sender, recipient or reason";
            select name="event" {
                option value="" { "every event" }
                @for e in Event::ALL {
                    option value=(e.as_str()) selected[event == Some(e)] { (e.as_str()) }
                }
            }
            button type="submit" { "Search" }
        }
        p.muted { (entries.len()) " records" @if entries.len() == ROWS { " (the newest " (ROWS) ")" } "." }
        table.rows {
            tr { th { "When" } th { "Event" } th { "From" } th { "To" } th { "Client" } th { "Detail" } }
            @for e in &entries {
                tr {
                    td data-label="When" { (crate::backup::rfc3339(e.at)) }
                    td data-label="Event" class=(if matches!(e.event, Event::Rejected | Event::Bounced) { "bad" } else { "" }) { (e.event.as_str()) }
                    td data-label="From" { (e.mail_from) }
                    td data-label="To" { (e.rcpt) }
                    td data-label="Client" { (e.remote_ip) }
                    @if !e.detail.is_empty() { td data-label="Detail" { (e.detail) } } @else { td {} }
                }
            }
        }
    };
    respond(page(&viewer, "Mail log", body))
}

/// `GET /admin/queue`: what waits for delivery, with retry and remove buttons.
pub async fn queue(State(state): State<AppState>, AdminViewer(viewer): AdminViewer) -> Response {
    let db = state.admin.queue.clone();
    let Ok(Ok(entries)) = tokio::task::spawn_blocking(move || db.list(ROWS)).await else {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let csrf = viewer.session.csrf.clone();
    let body = html! {
        p.muted { (entries.len()) " deliveries waiting" @if entries.len() == ROWS { " (the first " (ROWS) ")" } "." }
        table.rows {
            tr { th { "#" } th { "From" } th { "To" } th { "Tries" } th { "Next try" } th { "Last error" } th {} }
            @for e in &entries {
                tr {
                    td data-label="#" { (e.id) }
                    td data-label="From" { (e.mail_from) }
                    td data-label="To" { (e.target) }
                    td data-label="Tries" { (e.attempts) }
                    @if e.held.is_some() {
                        td.bad data-label="Next try" { "held: processing failed" }
                    } @else {
                        td data-label="Next try" { (crate::backup::rfc3339(e.next_attempt_at)) }
                    }
                    td.bad data-label="Last error" { (e.last_error.as_deref().unwrap_or("")) }
                    td {
                        form method="post" action={ "/admin/queue/" (e.id) "/retry" } {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Retry now" }
                        }
                        form method="post" action={ "/admin/queue/" (e.id) "/remove" } {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Remove" }
                        }
                    }
                }
            }
        }
    };
    respond(page(&viewer, "Queue", body))
}

/// `POST /admin/queue/{id}/retry|remove`: as `ferrymail queue retry|remove`.
pub async fn queue_action(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = viewer.csrf_refusal(&form.csrf) {
        return refused;
    }
    let db = state.admin.queue.clone();
    let done = match action.as_str() {
        "retry" => tokio::task::spawn_blocking(move || db.retry_now(id)).await,
        "remove" => tokio::task::spawn_blocking(move || db.remove(id)).await,
        _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
    };
    match done {
        Ok(Ok(true)) => {
            tracing::info!(delivery = id, action = %action, user = %viewer.session.user, "queue changed from the web admin");
            state.admin.wake.notify_one();
            Redirect::to("/admin/queue").into_response()
        }
        Ok(Ok(false)) => (
            axum::http::StatusCode::NOT_FOUND,
            "no such delivery (done already?)\n",
        )
            .into_response(),
        _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /admin/logs`: the warnings and errors this process logged, newest first.
pub async fn errors(AdminViewer(viewer): AdminViewer) -> Response {
    let lines = crate::recent_log::lines();
    let body = html! {
        p.muted { (lines.len()) " warnings and errors since the server started (the last 1,000)." }
        table {
            tr { th { "When" } th { "Level" } th { "Where" } th { "What" } }
            @for l in &lines {
                tr {
                    td { (crate::backup::rfc3339(l.at)) }
                    td class=(if l.level == "ERROR" { "bad" } else { "" }) { (l.level) }
                    td { (l.target) } td { (l.text) }
                }
            }
        }
    };
    respond(page(&viewer, "Errors", body))
}

/// `GET /admin/backups`: the schedule, the next run, and the runs so far.
pub async fn backups(State(state): State<AppState>, AdminViewer(viewer): AdminViewer) -> Response {
    let site = state.site.load_full();
    let store = state.admin.store.clone();
    let Ok(Ok(runs)) = tokio::task::spawn_blocking(move || store.backup_runs(100)).await else {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let next = site.backups.as_ref().and_then(|(schedule, _)| {
        crate::backup::Schedule::parse(schedule)
            .ok()?
            .next_after(crate::store::unix_now())
            .map(crate::backup::rfc3339)
    });
    let body = html! {
        @match &site.backups {
            Some((schedule, target)) => p.card {
                "Schedule " code { (schedule) } " (UTC) to " code { (target) } "; next run "
                (next.as_deref().unwrap_or("never")) "."
            },
            None => p.card { "No backups are declared: add a [backups] section to the spec." },
        }
        table {
            tr { th { "Started" } th { "Backup" } th { "Result" } th { "Size" } th { "Took" } }
            @for r in &runs {
                tr {
                    td { (crate::backup::rfc3339(r.started_at)) }
                    td { (r.id) }
                    @if r.ok { td.ok { "stored" @if let Some(e) = &r.error { " (" (e) ")" } } }
                    @else { td.bad { "FAILED: " (r.error.as_deref().unwrap_or("")) } }
                    td { (crate::backup::human_bytes(r.size)) }
                    td { (format!("{:.1} s", r.duration_ms as f64 / 1000.0)) }
                }
            }
        }
    };
    respond(page(&viewer, "Backups", body))
}

#[derive(serde::Deserialize)]
pub struct PlanForm {
    csrf: String,
    spec: String,
}

fn plan_page(
    viewer: &Viewer,
    spec: &str,
    outcome: Option<&crate::http::api::PlanOutcome>,
) -> Markup {
    let body = html! {
        p.muted { "Paste a spec to see what applying it would change. Nothing is applied: the spec in "
            "its repository stays the only way to change the server. DNS providers are not asked." }
        form method="post" action="/admin/plan" {
            input type="hidden" name="csrf" value=(viewer.session.csrf);
            textarea name="spec" rows="16" style="width:100%;font-family:monospace" { (spec) }
            p { button type="submit" { "Show the plan" } }
        }
        @if let Some(o) = outcome {
            @if o.ok {
                pre.card #plan { (o.text) }
            } @else {
                div.card.bad #plan { p { "The spec is not valid:" } ul { @for e in &o.errors { li { (e) } } } }
            }
        }
    };
    page(viewer, "Plan a spec", body)
}

/// `GET /admin/plan`: a form to paste a spec into.
pub async fn plan_form(AdminViewer(viewer): AdminViewer) -> Response {
    respond(plan_page(&viewer, "", None))
}

/// `POST /admin/plan`: the dry-run plan of the pasted spec.
pub async fn plan(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
    Form(form): Form<PlanForm>,
) -> Response {
    if let Some(refused) = viewer.csrf_refusal(&form.csrf) {
        return refused;
    }
    let plan = state.admin.plan.clone();
    let text = form.spec.clone();
    let Ok(outcome) = tokio::task::spawn_blocking(move || plan(text)).await else {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    respond(plan_page(&viewer, &form.spec, Some(&outcome)))
}

/// Mailboxes whose usage is read per page view; past this, usage is left out.
const USAGE_READS: usize = 200;

/// `GET /admin/mailboxes`: every account, its quota and (for the first 200) its usage and
/// how many calendars, events, address books and contacts it has.
pub async fn mailboxes(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
) -> Response {
    let snapshot = state.snapshot.get();
    let mut accounts: Vec<(String, Option<u64>)> = snapshot
        .accounts
        .iter()
        .map(|(a, r)| (a.clone(), r.quota))
        .collect();
    accounts.sort();
    let boxes = state.admin.mailboxes.clone();
    let dav = state.dav.collections.clone();
    let names: Vec<String> = accounts
        .iter()
        .take(USAGE_READS)
        .map(|(a, _)| a.clone())
        .collect();
    type Usage = (
        Option<u64>,
        Option<crate::collections::Counts>,
        Option<Option<String>>,
    );
    let usage: Vec<Usage> = tokio::task::spawn_blocking(move || {
        names
            .iter()
            .map(|a| {
                let used = if boxes.exists(a) {
                    boxes.open(a).and_then(|m| m.quota_used()).ok()
                } else {
                    Some(0)
                };
                // The user's own active Sieve script, by name (ManageSieve).
                let own = crate::sieve::store::UserScripts::active_name_of(&boxes, a).ok();
                (used, dav.counts(a).ok(), own)
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    let today = crate::sieve::vacation::today(crate::clock::unix_now());
    // What filters an account's mail: the spec's script and vacation, the user's own.
    let filters = |account: &str, own: &Option<Option<String>>| -> String {
        let mut parts = Vec::new();
        if let Some(declared) = snapshot.sieve.get(account) {
            if declared.script.is_some() {
                parts.push("script from the spec".to_string());
            }
            if let Some((v, _)) = &declared.vacation {
                let state = if crate::sieve::vacation::in_effect(v, today) {
                    "on"
                } else {
                    "set"
                };
                let until = v
                    .until
                    .as_deref()
                    .map(|u| format!(" until {u}"))
                    .unwrap_or_default();
                parts.push(format!("vacation {state}{until}"));
            }
        }
        match own {
            Some(Some(name)) => parts.push(format!("own script \"{name}\" active")),
            Some(None) => {}
            None => parts.push("own scripts unreadable".into()),
        }
        parts.join("; ")
    };
    let body = html! {
        p.muted { (accounts.len()) " mailboxes" @if accounts.len() > USAGE_READS { "; usage read for the first " (USAGE_READS) } "." }
        table.rows {
            tr { th { "Account" } th { "Used" } th { "Quota" } th { "Calendars" } th { "Address books" } th { "Filters" } }
            @for (i, (account, quota)) in accounts.iter().enumerate() {
                @let (used, counts, own) = usage.get(i).cloned().unwrap_or((None, None, Some(None)));
                tr {
                    td data-label="Account" { (account) }
                    td data-label="Used" {
                        @match used {
                            Some(u) => {
                                (crate::backup::human_bytes(u))
                                @if let Some(q) = quota { " (" (u * 100 / (*q).max(1)) "%)" }
                            }
                            None => span.muted { "—" },
                        }
                    }
                    td data-label="Quota" { (quota.map(crate::backup::human_bytes).unwrap_or_else(|| "none".into())) }
                    @match counts {
                        Some(c) => {
                            td data-label="Calendars" { (c.calendars) " (" (c.calendar_items) " items)" }
                            td data-label="Address books" { (c.address_books) " (" (c.contacts) " contacts)" }
                        }
                        None => { td { span.muted { "—" } } td { span.muted { "—" } } }
                    }
                    @let filtered = filters(account, &own);
                    td data-label="Filters" {
                        @if filtered.is_empty() { span.muted { "none" } } @else { (filtered) }
                    }
                }
            }
        }
    };
    respond(page(&viewer, "Mailboxes", body))
}

/// Shows the copy buttons and copies the zone lines before each.
pub(crate) const COPY_SCRIPT: &str = "for (const b of document.querySelectorAll('button.copy')) {\
  if (!navigator.clipboard) continue; b.hidden = false;\
  b.addEventListener('click', () => navigator.clipboard.writeText(b.previousElementSibling.textContent)\
    .then(() => { b.textContent = 'Copied'; }));\
}";

/// A live check is reused this long before DNS is asked again.
const CHECK_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// `GET /admin/domains`: each domain's required records, green when DNS serves them
/// (checked live, at most once a minute), red otherwise, with the zone lines to copy.
pub async fn domains(State(state): State<AppState>, AdminViewer(viewer): AdminViewer) -> Response {
    use crate::dns::check::Verdict;
    let site = state.site.load_full();
    // Every record of every domain at once; answers and failures alike are kept a minute.
    let lookups = site.records.iter().map(|(_, records)| {
        futures_util::future::join_all(records.iter().map(|record| {
            let state = state.clone();
            async move {
                let key = record.zone_line();
                let cached = state
                    .admin
                    .dns_checks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                    .filter(|(at, _)| at.elapsed() < CHECK_FOR)
                    .map(|(_, v)| v.clone());
                if let Some(verdict) = cached {
                    return verdict;
                }
                let resolver = state.admin.resolver.as_ref()?;
                let verdict = tokio::time::timeout(
                    std::time::Duration::from_secs(3),
                    crate::dns::check::check(resolver, record),
                )
                .await
                .ok();
                state
                    .admin
                    .dns_checks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, (std::time::Instant::now(), verdict.clone()));
                verdict
            }
        }))
    });
    let verdicts: Vec<Vec<Option<Verdict>>> = futures_util::future::join_all(lookups).await;
    let body = html! {
        p { a.button href="/admin/domains/new" { "Add a domain" } }
        p.muted { "Each record as DNS serves it now (checked at most once a minute). "
            "Records published by a DNS provider are kept right by the reconciler; the others are yours to set." }
        @for ((domain, records), checks) in site.records.iter().zip(&verdicts) {
            h2 id=(format!("domain-{domain}")) { (domain) " " a.small href=(format!("/admin/domains/{domain}/edit")) { "Edit" } }
            table.rows {
                tr { th { "Name" } th { "Type" } th { "Value" } th { "Live" } }
                @for (record, verdict) in records.iter().zip(checks) {
                    tr {
                        td data-label="Name" { (record.name) }
                        td data-label="Type" { (record.kind.to_string()) }
                        td data-label="Value" { code { (record.data) } }
                        @match verdict {
                            Some(Verdict::Ok) => td.ok data-label="Live" { "✓ published" },
                            Some(Verdict::Missing) => td.bad data-label="Live" { "✗ missing" },
                            Some(Verdict::Wrong(found)) => td.bad data-label="Live" { "✗ wrong: " (found.join(" | ")) },
                            Some(Verdict::Unknown(why)) => td.bad data-label="Live" { "? lookup failed: " (why) },
                            None => td.muted data-label="Live" { "not checked (no DNS answer)" },
                        }
                    }
                }
            }
            details {
                summary { "Zone-file lines" }
                pre.card.zone { @for record in records { (record.zone_line()) "\n" } }
                // Works without JavaScript (select the lines); with it, one click copies.
                button.copy type="button" hidden { "Copy these lines" }
            }
        }
        script { (maud::PreEscaped(COPY_SCRIPT)) }
    };
    respond(page(&viewer, "Domains", body))
}

fn certificate_table(certs: &[crate::tls::CertInfo]) -> Markup {
    let now = crate::store::unix_now();
    html! {
        table.rows {
            tr { th { "Names" } th { "Issuer" } th { "Source" } th { "Valid from" } th { "Expires" } }
            @for c in certs {
                tr {
                    td data-label="Names" { (c.names.join(", ")) }
                    td data-label="Issuer" { (c.issuer) }
                    td data-label="Source" { (c.source) }
                    td data-label="Valid from" { (crate::backup::rfc3339(c.not_before)) }
                    @let days = (c.not_after - now) / 86_400;
                    td data-label="Expires" class=(if days < 14 { "bad" } else { "" }) {
                        (crate::backup::rfc3339(c.not_after)) " (" (days) " days)"
                    }
                }
            }
        }
    }
}

/// `GET /admin/certificates`: every certificate served, its names, issuer and expiry.
pub async fn certificates(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
) -> Response {
    let source = state.admin.overview.clone();
    let Ok(o) = tokio::task::spawn_blocking(move || source()).await else {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    respond(page(
        &viewer,
        "Certificates",
        certificate_table(&o.certificates),
    ))
}
