//! rspamd over its HTTP API: `/checkv2` on the scanning worker with the envelope and
//! connection in headers (its protocol), `/learnspam` and `/learnham` on the controller.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{Action, Symbol, Verdict};
use crate::spec::model::{Spam, SpamKind};

const DEFAULT_URL: &str = "http://127.0.0.1:11333";
const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:11334";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest answer read: a verdict is a few KB even with every symbol's options.
const MAX_ANSWER: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpamError {
    #[error("rspamd at {url}: {}", crate::error_chain::http(source))]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("rspamd at {url} answered {status}: {text}")]
    Status {
        url: String,
        status: u16,
        text: String,
    },
    #[error("rspamd at {url} answered what is not a verdict: {reason}")]
    Answer { url: String, reason: String },
    #[error("spam.{key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("{name}: {reason}")]
    Antivirus { name: String, reason: String },
}

/// What rspamd is told about a message besides its bytes.
pub struct Facts<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    /// The envelope sender, "" for a bounce.
    pub mail_from: &'a str,
    pub rcpts: Vec<&'a str>,
    /// The account that submitted it (submission only).
    pub user: Option<&'a str>,
    /// The client's name, when its reverse DNS is forward-confirmed.
    pub hostname: Option<&'a str>,
    /// The TLS version and cipher suite it sent over.
    pub tls: Option<&'a (String, String)>,
    /// This server's name, for rspamd's `MTA-Name`.
    pub mta: &'a str,
}

/// One rspamd, as `[spam]` declares it.
pub struct Rspamd {
    http: reqwest::Client,
    /// The scanning worker, without a trailing '/'.
    pub url: String,
    check: String,
    controller: String,
    password: Option<String>,
}

impl Rspamd {
    /// None when the spec declares no filter. The password is resolved here.
    pub fn from_spec(spec: &Spam, base_dir: &std::path::Path) -> Result<Option<Rspamd>, SpamError> {
        if spec.kind == SpamKind::None {
            return Ok(None);
        }
        let timeout = match &spec.timeout {
            Some(text) => humantime::parse_duration(text).map_err(|e| SpamError::Config {
                key: "timeout",
                reason: e.to_string(),
            })?,
            None => DEFAULT_TIMEOUT,
        };
        let password = match &spec.password {
            Some(secret) => Some(
                secret
                    .resolve(base_dir)
                    .map_err(|e| SpamError::Config {
                        key: "password",
                        reason: e.to_string(),
                    })?
                    .expose()
                    .to_string(),
            ),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| SpamError::Config {
                key: "url",
                reason: e.to_string(),
            })?;
        let base = |url: &Option<String>, default: &str| {
            url.as_deref()
                .unwrap_or(default)
                .trim_end_matches('/')
                .to_string()
        };
        let url = base(&spec.url, DEFAULT_URL);
        Ok(Some(Rspamd {
            http,
            check: format!("{url}/checkv2"),
            url,
            controller: base(&spec.controller_url, DEFAULT_CONTROLLER),
            password,
        }))
    }

    /// Asks rspamd for its verdict on `message` (as it will be stored, trace headers on top).
    pub async fn check(&self, facts: &Facts<'_>, message: Vec<u8>) -> Result<Verdict, SpamError> {
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            // A value HTTP cannot carry (a control character) is left out, not sent broken.
            if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
                headers.append(HeaderName::from_static(name), v);
            }
        };
        put("ip", &facts.ip.to_string());
        put("helo", facts.helo);
        put("from", facts.mail_from);
        for rcpt in &facts.rcpts {
            put("rcpt", rcpt);
        }
        if let Some(user) = facts.user {
            put("user", user);
        }
        if let Some(hostname) = facts.hostname {
            put("hostname", hostname);
        }
        if let Some((version, cipher)) = facts.tls {
            put("tls-version", version);
            put("tls-cipher", cipher);
        }
        put("mta-name", facts.mta);
        let request = self.http.post(&self.check).headers(headers).body(message);
        let (status, body) = exchange(request, &self.check).await?;
        if !status.is_success() {
            return Err(refusal(self.check.clone(), status, &body));
        }
        parse_verdict(&body).map_err(|reason| SpamError::Answer {
            url: self.check.clone(),
            reason,
        })
    }

    /// Whether the scanning worker answers its `/ping`.
    pub async fn ping(&self) -> Result<(), SpamError> {
        let url = format!("{}/ping", self.url);
        let request = self.http.get(&url).timeout(Duration::from_secs(5));
        let (status, body) = exchange(request, &url).await?;
        if status.is_success() && body.starts_with(b"pong") {
            return Ok(());
        }
        Err(refusal(url, status, &body))
    }

    /// Teaches rspamd's Bayes classifier that `message` is spam (or ham).
    pub async fn learn(&self, spam: bool, message: Vec<u8>) -> Result<(), SpamError> {
        let url = format!(
            "{}/{}",
            self.controller,
            if spam { "learnspam" } else { "learnham" }
        );
        let mut request = self.http.post(&url).body(message);
        if let Some(password) = &self.password {
            request = request.header("password", password);
        }
        let (status, body) = exchange(request, &url).await?;
        // rspamd answers 208 when it learned this message before: nothing to do.
        if status.is_success() || status.as_u16() == 208 {
            return Ok(());
        }
        Err(refusal(url, status, &body))
    }
}

/// An answer that is not a success, with the start of what it said.
fn refusal(url: String, status: reqwest::StatusCode, body: &[u8]) -> SpamError {
    SpamError::Status {
        url,
        status: status.as_u16(),
        text: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

/// Sends `request`; its status and its body (up to `MAX_ANSWER`).
async fn exchange(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<(reqwest::StatusCode, Vec<u8>), SpamError> {
    let answer = request
        .send()
        .await
        .map_err(|source| SpamError::Unreachable {
            url: url.to_string(),
            source,
        })?;
    let status = answer.status();
    Ok((status, read_bounded(answer, url).await?))
}

async fn read_bounded(mut answer: reqwest::Response, url: &str) -> Result<Vec<u8>, SpamError> {
    let mut body = Vec::new();
    loop {
        match answer.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER {
                    return Err(SpamError::Answer {
                        url: url.to_string(),
                        reason: format!("longer than {MAX_ANSWER} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(source) => {
                return Err(SpamError::Unreachable {
                    url: url.to_string(),
                    source,
                });
            }
        }
    }
}

/// The `/checkv2` JSON: action, score, required_score, symbols, messages, milter.
pub(super) fn parse_verdict(body: &[u8]) -> Result<Verdict, String> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let action = json
        .get("action")
        .and_then(|a| a.as_str())
        .ok_or("no action")?;
    let action = Action::parse(action).ok_or_else(|| format!("unknown action {action:?}"))?;
    let number = |key: &str| json.get(key).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let mut symbols: Vec<Symbol> = json
        .get("symbols")
        .and_then(|s| s.as_object())
        .map(|map| {
            map.iter()
                .map(|(name, s)| Symbol {
                    name: name.clone(),
                    score: s.get("score").and_then(|v| v.as_f64()).unwrap_or(0.0),
                    options: s
                        .get("options")
                        .and_then(|o| o.as_array())
                        .map(|o| {
                            o.iter()
                                .filter_map(|v| v.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    symbols.sort_by(|a, b| {
        b.score
            .abs()
            .total_cmp(&a.score.abs())
            .then_with(|| a.name.cmp(&b.name))
    });
    let text =
        |value: Option<&serde_json::Value>| value.and_then(|v| v.as_str()).map(str::to_string);
    let milter = json.get("milter");
    let mut add_headers = Vec::new();
    if let Some(map) = milter
        .and_then(|m| m.get("add_headers"))
        .and_then(|a| a.as_object())
    {
        for (name, value) in map {
            // A value, {value, order}, or a list of either.
            let values: Vec<&serde_json::Value> = match value {
                serde_json::Value::Array(list) => list.iter().collect(),
                one => vec![one],
            };
            for v in values {
                let text = v
                    .as_str()
                    .or_else(|| v.get("value").and_then(|x| x.as_str()));
                if let Some(text) = text {
                    add_headers.push((name.clone(), text.to_string()));
                }
            }
        }
    }
    let mut remove_headers = Vec::new();
    if let Some(map) = milter
        .and_then(|m| m.get("remove_headers"))
        .and_then(|a| a.as_object())
    {
        for (name, which) in map {
            let nth = which.as_u64().unwrap_or(0).min(1000) as usize;
            remove_headers.push((name.clone(), nth));
        }
    }
    Ok(Verdict {
        action,
        score: number("score"),
        required: number("required_score"),
        symbols,
        smtp_message: text(json.get("messages").and_then(|m| m.get("smtp_message"))),
        add_headers,
        remove_headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkv2_answer_is_read_whole() {
        let verdict = parse_verdict(
            br#"{"is_skipped":false,"score":7.9,"required_score":15.0,"action":"add header",
               "symbols":{"SMALL":{"name":"SMALL","score":-0.1},
                          "BIG":{"name":"BIG","score":8.0,"options":["x","y"]}},
               "messages":{"smtp_message":"go away"},
               "milter":{"add_headers":{"X-One":"1","X-Two":{"value":"2","order":0},
                                         "X-Many":[{"value":"a"},"b"]},
                         "remove_headers":{"X-Spam":0,"X-Old":2}}}"#,
        )
        .unwrap();
        assert_eq!(verdict.action, Action::AddHeader);
        assert_eq!(verdict.symbols[0].name, "BIG");
        assert_eq!(verdict.symbols[0].options, ["x", "y"]);
        assert_eq!(verdict.smtp_message.as_deref(), Some("go away"));
        assert_eq!(verdict.add_headers.len(), 4);
        assert!(verdict.remove_headers.contains(&("X-Old".into(), 2)));
        assert_eq!(
            verdict.summary(),
            "score 7.90 (add header): BIG(8.00), SMALL(-0.10)"
        );
    }

    #[test]
    fn what_is_not_a_verdict_is_an_error() {
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"action":"explode"}"#,
            b"[1,2]",
        ] {
            assert!(
                parse_verdict(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
