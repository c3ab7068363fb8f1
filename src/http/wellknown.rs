//! What mail clients and sending servers fetch on their own: Thunderbird's autoconfig,
//! Outlook's autodiscover (POX), the MTA-STS policy; and the health checks.

use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, Security, Service, ServiceKind};

/// The domain a request is about, from its Host header with `prefix.` removed
/// (autoconfig.example.com → example.com), if this server serves that domain.
fn domain_from_host(state: &AppState, headers: &HeaderMap, prefix: &str) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let domain = host
        .trim_end_matches('.')
        .to_ascii_lowercase()
        .strip_prefix(&format!("{prefix}."))?
        .to_string();
    served(state, &domain)
}

fn served(state: &AppState, domain: &str) -> Option<String> {
    let domain = crate::address::normalize_domain(domain).ok()?;
    state
        .snapshot
        .get()
        .domains
        .contains_key(&domain)
        .then_some(domain)
}

fn xml(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: listeners bound and the spec applied once.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// `GET /metrics` (Prometheus), to loopback clients only: a local Prometheus (or a
/// proxy beside it) scrapes it.
pub async fn metrics(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> Response {
    if !peer.ip().to_canonical().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "metrics are served to loopback clients only\n",
        )
            .into_response();
    }
    let source = state.metrics.clone();
    match tokio::task::spawn_blocking(move || source()).await {
        Ok(values) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            crate::metrics::render(&values),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(serde::Deserialize)]
pub struct AutoconfigQuery {
    emailaddress: Option<String>,
}

/// `GET /.well-known/autoconfig/mail/config-v1.1.xml` and `/mail/config-v1.1.xml`
/// (Thunderbird, and K-9/FairEmail that read the same format).
pub async fn autoconfig(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<AutoconfigQuery>,
) -> Response {
    let domain = query
        .emailaddress
        .as_deref()
        .and_then(|a| a.rsplit_once('@'))
        .and_then(|(_, d)| served(&state, d))
        .or_else(|| domain_from_host(&state, &headers, "autoconfig"));
    let Some(domain) = domain else {
        return (StatusCode::NOT_FOUND, "no such mail domain here\n").into_response();
    };
    let site = state.site.load();
    let host = escape(&site.hostname);
    let d = escape(&domain);
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  <emailProvider id=\"{d}\">\n    <domain>{d}</domain>\n    <displayName>{d} mail</displayName>\n    <displayShortName>{d}</displayShortName>\n"
    );
    for service in site.preferred() {
        let (element, kind) = match service.kind {
            ServiceKind::Imap => ("incomingServer", "imap"),
            ServiceKind::Pop3 => ("incomingServer", "pop3"),
            ServiceKind::Submission => ("outgoingServer", "smtp"),
        };
        let socket = match service.security {
            Security::Implicit => "SSL",
            Security::StartTls => "STARTTLS",
        };
        body.push_str(&format!(
            "    <{element} type=\"{kind}\">\n      <hostname>{host}</hostname>\n      <port>{}</port>\n      <socketType>{socket}</socketType>\n      <authentication>password-cleartext</authentication>\n      <username>%EMAILADDRESS%</username>\n    </{element}>\n",
            service.port
        ));
    }
    body.push_str("  </emailProvider>\n");
    // Calendars and contacts (Thunderbird 115 and later set them up from these).
    for (element, kind, port) in [
        ("addressBook", "carddav", site.carddav_port),
        ("calendar", "caldav", site.caldav_port),
    ] {
        if let Some(port) = port {
            body.push_str(&format!(
                "  <{element} type=\"{kind}\">\n    <username>%EMAILADDRESS%</username>\n    <authentication>http-basic</authentication>\n    <serverURL>https://{host}:{port}{}</serverURL>\n  </{element}>\n",
                crate::dav::BASE
            ));
        }
    }
    body.push_str("</clientConfig>\n");
    xml(body)
}

/// `POST /autodiscover/autodiscover.xml` (Outlook's "POX" autodiscover): the request
/// names the address; the answer gives IMAP and SMTP settings for its domain.
pub async fn autodiscover(State(state): State<AppState>, body: String) -> Response {
    static EMAIL: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"<EMailAddress>\s*([^<\s]+)\s*</EMailAddress>").ok()
    });
    let address = EMAIL
        .as_ref()
        .and_then(|re| re.captures(&body).map(|c| c[1].to_string()));
    // Only the domain is checked: the answer says nothing about whether the user exists.
    let Some(address) = address.filter(|a| {
        a.rsplit_once('@')
            .and_then(|(_, d)| served(&state, d))
            .is_some()
    }) else {
        return (StatusCode::NOT_FOUND, "no such mail domain here\n").into_response();
    };
    let site = state.site.load();
    let mut protocols = String::new();
    let mut seen = std::collections::HashSet::new();
    for service in site.preferred() {
        let kind = match service.kind {
            ServiceKind::Imap => "IMAP",
            ServiceKind::Pop3 => "POP3",
            ServiceKind::Submission => "SMTP",
        };
        // One entry per protocol: Outlook takes the first.
        if !seen.insert(kind) {
            continue;
        }
        let encryption = match service.security {
            Security::Implicit => "SSL",
            Security::StartTls => "TLS",
        };
        protocols.push_str(&format!(
            "      <Protocol>\n        <Type>{kind}</Type>\n        <Server>{}</Server>\n        <Port>{}</Port>\n        <LoginName>{}</LoginName>\n        <DomainRequired>off</DomainRequired>\n        <SPA>off</SPA>\n        <SSL>on</SSL>\n        <Encryption>{encryption}</Encryption>\n        <AuthRequired>on</AuthRequired>\n      </Protocol>\n",
            escape(&site.hostname),
            service.port,
            escape(&address)
        ));
    }
    xml(format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n{protocols}    </Account>\n  </Response>\n</Autodiscover>\n"
    ))
}

/// `GET /.well-known/mta-sts.txt` on `mta-sts.DOMAIN` (RFC 8461 §3.3).
pub async fn mta_sts(
    State(state): State<AppState>,
    tls: Option<axum::Extension<super::admin::OverTls>>,
    headers: HeaderMap,
) -> Response {
    let site = state.site.load();
    match (&site.mta_sts, domain_from_host(&state, &headers, "mta-sts")) {
        // RFC 8461 §3.3: the policy is fetched over HTTPS only.
        (Some(policy), Some(_)) if tls.is_some() => (
            [
                (header::CONTENT_TYPE, "text/plain"),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            policy.clone(),
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "no MTA-STS policy for this name\n").into_response(),
    }
}

impl super::Site {
    /// Services in the order clients should prefer them: implicit TLS first.
    pub(crate) fn preferred(&self) -> Vec<&Service> {
        let mut list: Vec<&Service> = self.services.iter().collect();
        list.sort_by_key(|s| (s.kind, s.security));
        list
    }
}
