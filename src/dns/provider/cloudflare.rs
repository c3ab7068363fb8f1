//! Cloudflare's API v4 over HTTPS with an API token: zones found by name, records
//! listed page by page and written one at a time (the API has no atomic batch here).
//!
//! The `cloudflare` crate was not used: its releases trail the API, it brings its own
//! HTTP stack and TLS choice, and the five calls needed are plain JSON.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{BoxFuture, Provider, ProviderError, RrsetChange, ZoneRecord, candidate_zones};
use crate::dns::records::{Kind, caa_parts, canonical, same_set};
use crate::spec::Secret;

pub const API_URL: &str = "https://api.cloudflare.com/client/v4";
const PER_PAGE: u32 = 100;

pub struct Cloudflare {
    name: String,
    api: String,
    token: Secret,
    http: reqwest::Client,
}

/// Every response: `success`, `errors`, `result`, and `result_info` on lists.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

#[derive(Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
    /// The specifics behind a general error ("DNS Validation Error" → what was wrong).
    #[serde(default)]
    error_chain: Vec<ApiMessage>,
}

impl std::fmt::Display for ApiMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)?;
        for cause in &self.error_chain {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct ResultInfo {
    #[serde(default)]
    page: u32,
    #[serde(default)]
    total_pages: u32,
}

/// A DNS record as the API shows it.
#[derive(Deserialize)]
struct ApiRecord {
    id: String,
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    ttl: u32,
    #[serde(default)]
    priority: Option<u16>,
}

impl ApiRecord {
    /// The data in zone-file spelling: the API keeps MX and SRV priorities apart.
    fn data(&self) -> String {
        match (self.rtype.as_str(), self.priority) {
            ("MX" | "SRV", Some(p)) => format!("{p} {}", self.content),
            ("TXT", _) => unquote_txt(&self.content),
            _ => self.content.clone(),
        }
    }
}

/// TXT content may come back quoted and split (`"v=DKIM1; k=rsa; " "p=..."`).
fn unquote_txt(content: &str) -> String {
    let t = content.trim();
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        t[1..t.len() - 1]
            .split("\" \"")
            .collect::<String>()
            .replace("\\\"", "\"")
    } else {
        t.to_string()
    }
}

/// The request body for one record of `kind` at `name`.
fn body(name: &str, kind: Kind, ttl: u32, data: &str) -> Value {
    let fields: Vec<&str> = data.split_ascii_whitespace().collect();
    let host = |s: &str| s.trim_end_matches('.').to_string();
    match (kind, fields.as_slice()) {
        (Kind::MX, [preference, exchange]) => json!({
            "type": "MX", "name": name, "ttl": ttl,
            "content": host(exchange),
            "priority": preference.parse::<u16>().unwrap_or(10),
        }),
        (Kind::SRV, [priority, weight, port, target]) => json!({
            "type": "SRV", "name": name, "ttl": ttl,
            "data": {
                "priority": priority.parse::<u16>().unwrap_or(0),
                "weight": weight.parse::<u16>().unwrap_or(0),
                "port": port.parse::<u16>().unwrap_or(0),
                "target": if *target == "." { ".".to_string() } else { host(target) },
            },
        }),
        (Kind::CAA, _) if caa_parts(data).is_some() => {
            let (flags, tag, value) = caa_parts(data).unwrap_or_default();
            json!({
                "type": "CAA", "name": name, "ttl": ttl,
                "data": { "flags": flags, "tag": tag, "value": value },
            })
        }
        (Kind::CNAME, [target]) => json!({
            "type": "CNAME", "name": name, "ttl": ttl, "content": host(target), "proxied": false,
        }),
        _ => json!({ "type": kind.to_string(), "name": name, "ttl": ttl, "content": data }),
    }
}

impl Cloudflare {
    pub fn new(name: &str, api: &str, token: Secret) -> Result<Cloudflare, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ProviderError::failed(name, e))?;
        Ok(Cloudflare {
            name: name.to_string(),
            api: api.to_string(),
            token,
            http,
        })
    }

    fn fail(&self, message: impl std::fmt::Display) -> ProviderError {
        ProviderError::failed(&self.name, message)
    }

    /// One API call; a transport failure or `success: false` becomes an error naming
    /// what was asked and what Cloudflare said.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Envelope, ProviderError> {
        let what = format!("{method} {path}");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut response = request
            .try_clone()
            .ok_or_else(|| self.fail(format!("{what}: the request cannot be sent")))?
            .send()
            .await
            .map_err(|e| self.fail(format!("{what}: {}", crate::error_chain::http(&e))))?;
        // Rate limited (1,200 requests per 5 minutes per user): wait as told, a few times.
        for _ in 0..3 {
            if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
                break;
            }
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(5)
                .min(60);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            response = request
                .try_clone()
                .ok_or_else(|| self.fail(format!("{what}: the request cannot be sent")))?
                .send()
                .await
                .map_err(|e| self.fail(format!("{what}: {}", crate::error_chain::http(&e))))?;
        }
        let status = response.status();
        let envelope: Envelope = response
            .json()
            .await
            .map_err(|e| self.fail(format!("{what}: HTTP {status}, not an API answer: {e}")))?;
        if !envelope.success {
            let said: Vec<String> = envelope.errors.iter().map(|e| e.to_string()).collect();
            return Err(self.fail(format!("{what}: HTTP {status}: {}", said.join("; "))));
        }
        Ok(envelope)
    }

    /// Every page of a list.
    async fn list_all<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Vec<T>, ProviderError> {
        let mut out = Vec::new();
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut page = 1;
        loop {
            let envelope = self
                .call(
                    reqwest::Method::GET,
                    &format!("{path}{sep}page={page}&per_page={PER_PAGE}"),
                    None,
                )
                .await?;
            let items: Vec<T> = serde_json::from_value(envelope.result)
                .map_err(|e| self.fail(format!("GET {path}: unexpected result: {e}")))?;
            let done = items.is_empty()
                || envelope
                    .result_info
                    .as_ref()
                    .is_none_or(|i| i.page >= i.total_pages);
            out.extend(items);
            if done {
                return Ok(out);
            }
            page += 1;
        }
    }

    async fn zone_id(&self, zone: &str) -> Result<Option<String>, ProviderError> {
        #[derive(Deserialize)]
        struct Zone {
            id: String,
            name: String,
            #[serde(default)]
            status: String,
        }
        let zones: Vec<Zone> = self.list_all(&format!("/zones?name={zone}")).await?;
        // A zone added but not yet delegated ("pending") or moved away is not the one
        // the world sees; an active one is.
        Ok(zones
            .into_iter()
            .filter(|z| z.name.eq_ignore_ascii_case(zone))
            .find(|z| z.status.is_empty() || z.status == "active")
            .map(|z| z.id))
    }

    async fn existing_zone_id(&self, zone: &str) -> Result<String, ProviderError> {
        self.zone_id(zone)
            .await?
            .ok_or_else(|| ProviderError::NoZone {
                provider: self.name.clone(),
                domain: zone.to_string(),
            })
    }

    async fn records(&self, zone_id: &str, filter: &str) -> Result<Vec<ApiRecord>, ProviderError> {
        self.list_all(&format!("/zones/{zone_id}/dns_records{filter}"))
            .await
    }

    async fn apply_one(
        &self,
        zone: &str,
        zone_id: &str,
        change: &RrsetChange,
    ) -> Result<(), ProviderError> {
        let kind = change.kind;
        let existing = self
            .records(zone_id, &format!("?name={}&type={kind}", change.name))
            .await?;
        let seen: Vec<String> = existing.iter().map(|r| r.data()).collect();
        if !same_set(kind, &seen, &change.before) {
            return Err(ProviderError::Changed {
                provider: self.name.clone(),
                zone: zone.to_string(),
                detail: format!("{} {kind} now holds {seen:?}", change.name),
            });
        }
        let after: Vec<String> = change.after.iter().map(|d| canonical(kind, d)).collect();
        // Records that stay keep their id (only the TTL may change); the rest are
        // rewritten in place where possible, so a name is never briefly empty.
        let (mut stale, kept): (Vec<&ApiRecord>, Vec<&ApiRecord>) = existing
            .iter()
            .partition(|r| !after.contains(&canonical(kind, &r.data())));
        let base = format!("/zones/{zone_id}/dns_records");
        let theirs: Vec<String> = change.theirs.iter().map(|d| canonical(kind, d)).collect();
        for record in kept {
            // Someone else's value (a TXT beside ours) is never rewritten.
            if record.ttl != change.ttl && !theirs.contains(&canonical(kind, &record.data())) {
                let ttl = json!({ "ttl": change.ttl });
                self.call(
                    reqwest::Method::PATCH,
                    &format!("{base}/{}", record.id),
                    Some(&ttl),
                )
                .await?;
            }
        }
        let kept_data: Vec<String> = existing
            .iter()
            .map(|r| canonical(kind, &r.data()))
            .filter(|d| after.contains(d))
            .collect();
        for data in change
            .after
            .iter()
            .filter(|d| !kept_data.contains(&canonical(kind, d)))
        {
            let body = body(&change.name, kind, change.ttl, data);
            match stale.pop() {
                Some(old) => {
                    self.call(
                        reqwest::Method::PUT,
                        &format!("{base}/{}", old.id),
                        Some(&body),
                    )
                    .await?
                }
                None => self.call(reqwest::Method::POST, &base, Some(&body)).await?,
            };
        }
        for old in stale {
            self.call(reqwest::Method::DELETE, &format!("{base}/{}", old.id), None)
                .await?;
        }
        Ok(())
    }
}

impl Provider for Cloudflare {
    fn name(&self) -> &str {
        &self.name
    }

    fn zone_of<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            for candidate in candidate_zones(domain) {
                if self.zone_id(candidate).await?.is_some() {
                    return Ok(candidate.to_string());
                }
            }
            Err(ProviderError::NoZone {
                provider: self.name.clone(),
                domain: domain.to_string(),
            })
        })
    }

    fn list<'a>(
        &'a self,
        zone: &'a str,
        _wanted: &'a [(String, Kind)],
    ) -> BoxFuture<'a, Result<Vec<ZoneRecord>, ProviderError>> {
        Box::pin(async move {
            let zone_id = self.existing_zone_id(zone).await?;
            Ok(self
                .records(&zone_id, "")
                .await?
                .into_iter()
                .map(|r| ZoneRecord {
                    name: r.name.trim_end_matches('.').to_ascii_lowercase(),
                    data: r.data(),
                    rtype: r.rtype,
                    ttl: r.ttl,
                })
                .collect())
        })
    }

    fn apply<'a>(
        &'a self,
        zone: &'a str,
        changes: &'a [RrsetChange],
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let zone_id = self.existing_zone_id(zone).await?;
            for change in changes {
                self.apply_one(zone, &zone_id, change)
                    .await
                    .map_err(|e| match e {
                        ProviderError::Failed { provider, message } => ProviderError::Failed {
                            provider,
                            message: format!("{} {}: {message}", change.kind, change.name),
                        },
                        other => other,
                    })?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_travel_apart_from_the_content() {
        let mx = body("d.test", Kind::MX, 300, "10 mx.d.test.");
        assert_eq!(mx["content"], "mx.d.test");
        assert_eq!(mx["priority"], 10);
        let srv = body("_imaps._tcp.d.test", Kind::SRV, 300, "0 1 993 mx.d.test.");
        assert_eq!(srv["data"]["port"], 993);
        let back = ApiRecord {
            id: "x".into(),
            name: "d.test".into(),
            rtype: "MX".into(),
            content: "mx.d.test".into(),
            ttl: 300,
            priority: Some(10),
        };
        assert_eq!(canonical(Kind::MX, &back.data()), "10 mx.d.test.");
        assert_eq!(unquote_txt("\"v=DKIM1; \" \"p=AB\""), "v=DKIM1; p=AB");
    }
}
