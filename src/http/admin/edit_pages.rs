//! The admin's forms that edit the spec: add or change a domain, an alias or a pattern,
//! see the plan and the file's diff, then confirm; the spec on disk is what changes.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::pages::page;
use super::{AdminViewer, Viewer, html as respond};
use crate::change::{
    AliasFields, Change, DomainFields, EditCall, EditOutcome, PatternFields, Refusal, RuleFields,
};
use crate::http::AppState;
use crate::http::edits::{new_password, run, status_of};

/// The spec's ETag and where edits go, read off the async threads.
async fn current(state: &AppState) -> (String, String) {
    let editor = state.admin.editor.clone();
    tokio::task::spawn_blocking(move || editor.current())
        .await
        .unwrap_or_default()
}

/// The hidden fields every edit form carries.
fn hidden(viewer: &Viewer, op: &str, etag: &str) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(viewer.session.csrf);
        input type="hidden" name="op" value=(op);
        input type="hidden" name="etag" value=(etag);
        input type="hidden" name="step" value="plan";
    }
}

fn read_only(mode: &str) -> Option<Markup> {
    (mode == "none").then(|| {
        html! { p.card.bad { "Edits are off for this spec ([admin] changes = \"none\"; in git, \"commit\" or \"propose\" turns them on): change it where it is kept, and it is applied from there." } }
    })
}

fn reject_select(current: Option<&str>) -> Markup {
    html! {
        select name="reject" {
            @for (value, label) in [("", "no: deliver"), ("hard", "hard (550)"), ("soft", "soft (421)"), ("quiet", "quiet (accept and drop)")] {
                option value=(value) selected[current.unwrap_or("") == value] { (label) }
            }
        }
    }
}

#[derive(serde::Deserialize, Default)]
pub struct NewAliasQuery {
    #[serde(default)]
    domain: String,
}

/// `GET /admin/aliases/new`.
pub async fn new_alias(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
    Query(query): Query<NewAliasQuery>,
) -> Response {
    let (etag, mode) = current(&state).await;
    let mut domains: Vec<String> = state.snapshot.get().domains.keys().cloned().collect();
    domains.sort();
    let body = html! {
        @if let Some(off) = read_only(&mode) { (off) }
        form.card.edit method="post" action="/admin/edit" {
            (hidden(&viewer, "add-alias", &etag))
            p { label { "Address" br;
                input name="local" required placeholder="hello" size="16";
                " @ "
                select name="domain" {
                    @for d in &domains { option value=(d) selected[*d == query.domain] { (d) } }
                }
            } }
            (alias_fields_form("", false, None, None, "", true))
            button type="submit" { "Show the plan" }
        }
    };
    respond(page(&viewer, "Add an alias", body))
}

fn alias_fields_form(
    forward: &str,
    mailbox: bool,
    quota: Option<String>,
    reject: Option<&str>,
    message: &str,
    enabled: bool,
) -> Markup {
    html! {
        p { label { "Forward to (one address, domain or https:// URL a line)" br;
            textarea name="forward" rows="3" cols="40" { (forward) } } }
        p { label { input type="checkbox" name="mailbox" checked[mailbox]; " Keep mail in a mailbox (IMAP/POP3); a new mailbox gets a password, shown once" } }
        p { label { "Mailbox quota (e.g. 10GiB; empty: unlimited)" br;
            input name="quota" value=(quota.unwrap_or_default()) size="12"; } }
        p { label { "Refuse mail for it " (reject_select(reject)) } }
        p { label { "Refusal text" br; input name="message" value=(message) size="40"; } }
        p { label { input type="checkbox" name="enabled" checked[enabled]; " Enabled" } }
    }
}

/// `GET /admin/aliases/{address}/edit`.
pub async fn edit_alias(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
    Path(address): Path<String>,
) -> Response {
    let (etag, mode) = current(&state).await;
    let snapshot = state.snapshot.get();
    let (local, domain) = address.rsplit_once('@').unwrap_or((&address, ""));
    let Some(rule) = snapshot.router.alias(domain, local) else {
        let mut response = respond(page(
            &viewer,
            "No such alias",
            html! { p { (address) " is not an alias of this server." } },
        ));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let quota = snapshot
        .accounts
        .get(&address)
        .and_then(|a| a.quota)
        .map(|q| q.to_string());
    let body = html! {
        @if let Some(off) = read_only(&mode) { (off) }
        form.card.edit method="post" action="/admin/edit" {
            (hidden(&viewer, "edit-alias", &etag))
            input type="hidden" name="address" value=(address);
            (alias_fields_form(&rule.forward.join("\n"), rule.mailbox, quota, rule.reject.map(|r| r.as_str()), rule.message.as_deref().unwrap_or(""), rule.enabled))
            button type="submit" { "Show the plan" }
        }
        @if rule.mailbox {
            form.card method="post" action="/admin/edit" {
                (hidden(&viewer, "new-password", &etag))
                input type="hidden" name="address" value=(address);
                p { "A new password replaces the old one at once (IMAP, POP3, SMTP, the web); it is shown once." }
                button type="submit" { "Make a new password" }
            }
        }
        form.card method="post" action="/admin/edit" {
            (hidden(&viewer, "remove-alias", &etag))
            input type="hidden" name="address" value=(address);
            button type="submit" { "Remove " (address) }
        }
    };
    respond(page(&viewer, &format!("Alias {address}"), body))
}

/// `GET /admin/domains/new`.
pub async fn new_domain(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
) -> Response {
    let (etag, mode) = current(&state).await;
    let body = html! {
        @if let Some(off) = read_only(&mode) { (off) }
        form.card.edit method="post" action="/admin/edit" {
            (hidden(&viewer, "add-domain", &etag))
            p { label { "Domain name" br; input name="name" required placeholder="example.com" size="30"; } }
            p { label { "DNS provider that publishes its records (a [dns.providers] name; empty: you publish them)" br;
                input name="dns_provider" size="20"; } }
            (catch_all_form(None, false))
            button type="submit" { "Show the plan" }
        }
        p.muted { "Once it is applied, the Domains page lists the DNS records to publish and checks them live." }
    };
    respond(page(&viewer, "Add a domain", body))
}

fn catch_all_form(rule: Option<&crate::routing::Rule>, editing: bool) -> Markup {
    let mode = match rule {
        None => "none",
        Some(r) if r.reject.is_some() => "reject",
        Some(_) => "forward",
    };
    html! {
        fieldset {
            legend { "Mail for addresses that are not aliases (catch-all)" }
            select name="catch_all" {
                @if editing { option value="keep" selected { "leave as it is" } }
                option value="none" selected[!editing && mode == "none"] { "no catch-all: refused as unknown" }
                option value="reject" { "refuse with a message" }
                option value="forward" { "forward" }
            }
            p { label { "Forward to (one a line)" br; textarea name="catch_all_forward" rows="2" cols="40" {
                (rule.map(|r| r.forward.join("\n")).unwrap_or_default()) } } }
            p { label { "Refusal text" br; input name="catch_all_message" size="40"
                value=(rule.and_then(|r| r.message.clone()).unwrap_or_default()); } }
        }
    }
}

/// `GET /admin/domains/{name}/edit`: its settings, its patterns, and removal.
pub async fn edit_domain(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
    Path(name): Path<String>,
) -> Response {
    let (etag, mode) = current(&state).await;
    let snapshot = state.snapshot.get();
    let Some(domain) = snapshot.domains.get(&name) else {
        let mut response = respond(page(
            &viewer,
            "No such domain",
            html! { p { (name) " is not a domain of this server." } },
        ));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let selectors = dkim_selectors(&snapshot, &name).join(", ");
    let (patterns, catch_all) = snapshot.router.rules_of(&name);
    let body = html! {
        @if let Some(off) = read_only(&mode) { (off) }
        form.card.edit method="post" action="/admin/edit" {
            (hidden(&viewer, "edit-domain", &etag))
            input type="hidden" name="name" value=(name);
            p { label { "DNS provider (empty: none)" br;
                input name="dns_provider" size="20" value=(domain.dns_provider.clone().unwrap_or_default()); } }
            p { label { "DKIM selectors, comma-separated (\"sel\" or \"sel:ed25519\"; empty: no signing)" br;
                input name="dkim" size="40" value=(selectors); } }
            (catch_all_form(catch_all, true))
            button type="submit" { "Show the plan" }
        }
        h2 { "Patterns" }
        @if patterns.is_empty() { p.muted { "None: only aliases and the catch-all receive mail." } }
        @for (i, (regex, rule)) in patterns.iter().enumerate() {
            div.card.pattern {
                p {
                    code { "/" (regex) "/" } " → " (rule.forward.join(", "))
                    @if let Some(reject) = rule.reject { " refused (" (reject.as_str()) ")" }
                    @if !rule.enabled { " " span.muted { "(off)" } }
                }
                details {
                    summary { "Change" }
                    form.edit method="post" action="/admin/edit" {
                        (hidden(&viewer, "edit-pattern", &etag))
                        input type="hidden" name="name" value=(name);
                        input type="hidden" name="index" value=(i);
                        p { label { "Regex on the local part" br; input name="regex" required size="30" value=(regex); } }
                        p { label { "Forward to (one a line; $1 is the first capture)" br;
                            textarea name="forward" rows="2" cols="40" { (rule.forward.join("\n")) } } }
                        p { label { "Refuse instead " (reject_select(rule.reject.map(|r| r.as_str()))) } }
                        p { label { input type="checkbox" name="enabled" value="on" checked[rule.enabled]; " On" } }
                        button type="submit" { "Show the plan" }
                    }
                }
                form method="post" action="/admin/edit" {
                    (hidden(&viewer, "remove-pattern", &etag))
                    input type="hidden" name="name" value=(name);
                    input type="hidden" name="index" value=(i);
                    button type="submit" { "Remove" }
                }
            }
        }
        form.card.edit method="post" action="/admin/edit" {
            (hidden(&viewer, "add-pattern", &etag))
            input type="hidden" name="name" value=(name);
            p { label { "New pattern: a regex on the local part" br; input name="regex" required placeholder="^shop-(.+)$" size="30"; } }
            p { label { "Forward to (one a line; $1 is the first capture)" br; textarea name="forward" rows="2" cols="40" {} } }
            p { label { "Refuse instead " (reject_select(None)) } }
            button type="submit" { "Show the plan" }
        }
        h2 { "Remove the domain" }
        form.card method="post" action="/admin/edit" {
            (hidden(&viewer, "remove-domain", &etag))
            input type="hidden" name="name" value=(name);
            p { "Its aliases and mailboxes go with it: the plan shows each." }
            button type="submit" { "Remove " (name) }
        }
    };
    respond(page(&viewer, &format!("Domain {name}"), body))
}

fn dkim_selectors(snapshot: &crate::snapshot::Snapshot, domain: &str) -> Vec<String> {
    let mut selectors: Vec<String> = snapshot
        .dkim_keys
        .get(domain)
        .into_iter()
        .flatten()
        .map(|k| {
            let selector = k.selector.clone();
            if k.algorithm == "ed25519" {
                format!("{selector}:ed25519")
            } else {
                selector
            }
        })
        .collect();
    selectors.sort();
    selectors
}

/// What a form posted, by field name.
type Fields = BTreeMap<String, String>;

fn field<'a>(fields: &'a Fields, name: &str) -> &'a str {
    fields.get(name).map(String::as_str).unwrap_or("").trim()
}

fn optional(fields: &Fields, name: &str) -> Option<String> {
    fields.get(name).map(|v| v.trim().to_string())
}

fn targets(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The change a form asks for; None when the form is not one of ours.
fn change_of(fields: &Fields, snapshot: &crate::snapshot::Snapshot) -> Option<Change> {
    let name = field(fields, "name").to_lowercase();
    let address = field(fields, "address").to_string();
    let index = field(fields, "index").parse::<usize>().ok();
    Some(match field(fields, "op") {
        "add-domain" => Change::AddDomain {
            fields: DomainFields {
                dns_provider: optional(fields, "dns_provider").filter(|p| !p.is_empty()),
                dkim: None,
                catch_all: catch_all_of(fields),
            },
            name,
        },
        "edit-domain" => {
            let record = snapshot.domains.get(&name);
            let provider = optional(fields, "dns_provider")
                .filter(|p| Some(p.as_str()) != record.and_then(|r| r.dns_provider.as_deref()));
            let provider = match provider {
                Some(p) if p.is_empty() && record.is_some_and(|r| r.dns_provider.is_none()) => None,
                other => other,
            };
            // Selectors as they are now are no edit: the default key stays implicit.
            let dkim: Vec<String> = field(fields, "dkim")
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            let mut sorted = dkim.clone();
            sorted.sort();
            let dkim = (sorted != dkim_selectors(snapshot, &name)).then_some(dkim);
            Change::EditDomain {
                fields: DomainFields {
                    dns_provider: provider,
                    dkim,
                    catch_all: catch_all_of(fields),
                },
                name,
            }
        }
        "remove-domain" => Change::RemoveDomain { name },
        "add-alias" => Change::AddAlias {
            address: format!(
                "{}@{}",
                field(fields, "local").to_lowercase(),
                field(fields, "domain")
            ),
            fields: alias_fields_of(fields, None),
        },
        "edit-alias" => {
            let quota_now = snapshot.accounts.get(&address).and_then(|a| a.quota);
            Change::EditAlias {
                fields: alias_fields_of(fields, quota_now),
                address,
            }
        }
        "remove-alias" => Change::RemoveAlias { address },
        "new-password" => Change::NewPassword {
            address,
            hash: String::new(),
        },
        "add-pattern" => Change::AddPattern {
            domain: name,
            fields: PatternFields {
                regex: optional(fields, "regex"),
                forward: Some(targets(field(fields, "forward"))),
                reject: optional(fields, "reject"),
                message: None,
                enabled: None,
            },
        },
        "edit-pattern" => Change::EditPattern {
            domain: name,
            index: index?,
            fields: PatternFields {
                regex: optional(fields, "regex"),
                forward: Some(targets(field(fields, "forward"))),
                reject: Some(field(fields, "reject").to_string()),
                message: None,
                enabled: Some(fields.contains_key("enabled")),
            },
        },
        "remove-pattern" => Change::RemovePattern {
            domain: name,
            index: index?,
        },
        _ => return None,
    })
}

fn catch_all_of(fields: &Fields) -> Option<RuleFields> {
    let forward = targets(field(fields, "catch_all_forward"));
    let message = optional(fields, "catch_all_message");
    match field(fields, "catch_all") {
        "none" => Some(RuleFields {
            remove: true,
            ..Default::default()
        }),
        "reject" => Some(RuleFields {
            forward: Some(Vec::new()),
            reject: Some("hard".into()),
            message,
            ..Default::default()
        }),
        "forward" => Some(RuleFields {
            forward: Some(forward),
            reject: Some(String::new()),
            message: Some(String::new()),
            ..Default::default()
        }),
        _ => None,
    }
}

fn alias_fields_of(fields: &Fields, quota_now: Option<u64>) -> AliasFields {
    let quota = optional(fields, "quota").filter(|q| {
        // The quota as it is, however written, is no edit.
        !(quota_now.is_some() && crate::spec::parse_size(q) == quota_now
            || q.is_empty() && quota_now.is_none())
    });
    AliasFields {
        forward: Some(targets(field(fields, "forward"))),
        mailbox: Some(fields.contains_key("mailbox")),
        quota,
        reject: optional(fields, "reject"),
        message: optional(fields, "message"),
        enabled: Some(fields.contains_key("enabled")),
        password_hash: None,
    }
}

/// `POST /admin/edit`: step "plan" shows what the change does; step "confirm" makes it.
pub async fn edit(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
    Form(posted): Form<Vec<(String, String)>>,
) -> Response {
    let fields: Fields = posted.into_iter().collect();
    if let Some(refused) = viewer.csrf_refusal(field(&fields, "csrf")) {
        return refused;
    }
    let snapshot = state.snapshot.get();
    let Some(mut change) = change_of(&fields, &snapshot) else {
        return (StatusCode::BAD_REQUEST, "not an edit this admin makes\n").into_response();
    };
    let confirm = field(&fields, "step") == "confirm";
    // A new password is made only when the edit is made; the plan shows a stand-in.
    let mut password = None;
    let needs_password = match &change {
        Change::NewPassword { .. } => true,
        Change::AddAlias { fields, .. } | Change::EditAlias { fields, .. } => {
            fields.mailbox == Some(true)
        }
        _ => false,
    };
    if needs_password {
        let address = match &change {
            Change::AddAlias { address, .. }
            | Change::EditAlias { address, .. }
            | Change::NewPassword { address, .. } => address.to_lowercase(),
            _ => String::new(),
        };
        let new_mailbox = !snapshot.accounts.contains_key(&address);
        let wanted = matches!(change, Change::NewPassword { .. }) || new_mailbox;
        if wanted {
            let hash = if confirm {
                match new_password().await {
                    Some((clear, hash)) => {
                        password = Some(clear);
                        hash
                    }
                    None => {
                        return (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "no password could be made\n",
                        )
                            .into_response();
                    }
                }
            } else {
                crate::login::decoy_hash().to_string()
            };
            match &mut change {
                Change::NewPassword { hash: h, .. } => *h = hash,
                Change::AddAlias { fields, .. } | Change::EditAlias { fields, .. } => {
                    fields.password_hash = Some(hash)
                }
                _ => {}
            }
        }
    }
    let description = change.describe();
    let outcome = run(
        &state,
        EditCall {
            change,
            etag: Some(field(&fields, "etag").to_string()),
            dry_run: !confirm,
            author: viewer.session.user.clone(),
        },
    )
    .await;
    let status = match outcome.refused {
        Some(Refusal::Stale) => StatusCode::CONFLICT,
        Some(refusal) => status_of(refusal),
        None => StatusCode::OK,
    };
    let new_domain = (field(&fields, "op") == "add-domain" && outcome.applied.is_some())
        .then(|| field(&fields, "name").to_lowercase());
    let body = if confirm {
        made(
            &outcome,
            password.as_deref().filter(|_| !outcome.written.is_empty()),
            new_domain.as_deref(),
        )
    } else {
        planned(&viewer, &fields, &outcome)
    };
    let title = if outcome.refused.is_some() {
        format!("Not done: {description}")
    } else if confirm {
        format!("Done: {description}")
    } else {
        format!("Review: {description}")
    };
    let mut response = respond(page(&viewer, &title, body));
    *response.status_mut() = status;
    response
}

fn refusal(outcome: &EditOutcome) -> Markup {
    html! {
        div.card.bad #refused role="alert" {
            @for line in &outcome.errors { p { (line) } }
        }
        p { a href="/admin/aliases" { "Aliases" } " · " a href="/admin/domains" { "Domains" } }
    }
}

fn planned(viewer: &Viewer, fields: &Fields, outcome: &EditOutcome) -> Markup {
    if outcome.refused.is_some() {
        return refusal(outcome);
    }
    html! {
        p { "Applying this changes the live state as follows ("
            (outcome.add) " to add, " (outcome.change) " to change, " (outcome.destroy) " to destroy):" }
        pre.card #plan { (outcome.plan) }
        p { "The spec file changes only here; every other line, comment and key stays as it is:" }
        pre.card #diff { (outcome.diff) }
        form method="post" action="/admin/edit" {
            @for (name, value) in fields {
                @if name != "step" && name != "csrf" {
                    input type="hidden" name=(name) value=(value);
                }
            }
            input type="hidden" name="csrf" value=(viewer.session.csrf);
            input type="hidden" name="step" value="confirm";
            button type="submit" #confirm { "Write the spec and apply" }
            " " a href="/admin" { "Cancel" }
        }
    }
}

fn made(outcome: &EditOutcome, password: Option<&str>, new_domain: Option<&str>) -> Markup {
    if outcome.refused.is_some() {
        return refusal(outcome);
    }
    html! {
        div.card {
            @match (&outcome.commit, &outcome.branch) {
                (Some(commit), Some(branch)) => p.ok #done { "Committed " code { (commit) } " ("
                    (outcome.written.join(", ")) ") and pushed to " code #branch { (branch) } "." },
                _ => p.ok #done { "Written to " (outcome.written.join(", ")) "." },
            }
            @match &outcome.applied {
                Some(applied) => p.ok #applied { "Applied: " (applied) "." },
                None if outcome.errors.is_empty() => p #proposed {
                    "Proposed for review: nothing is applied until the branch is merged." },
                None => div.bad { @for line in &outcome.errors { p { (line) } } },
            }
        }
        @if let Some(password) = password {
            div.card #password {
                p { "The mailbox's password, shown this once (only its hash is kept):" }
                p { code #new-password { (password) } }
            }
        }
        @if let Some(domain) = new_domain {
            p.card #next {
                "Next: publish " (domain) "'s DNS records (MX, SPF, DKIM, DMARC…). "
                a href=(format!("/admin/domains#domain-{domain}")) { "The records, checked live" }
                " — each turns green once DNS serves it; a domain with a DNS provider has them published by the apply."
            }
        }
        pre.card { (outcome.diff) }
        p { a href="/admin/aliases" { "Aliases" } " · " a href="/admin/domains" { "Domains" } }
    }
}
