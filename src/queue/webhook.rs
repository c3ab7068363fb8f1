//! The JSON a webhook alias receives (parsed message plus envelope) and its HMAC
//! signature header, so the receiver can tell the post came from this server.

use hmac::{Hmac, KeyInit, Mac};
use mail_parser::MimeHeaders;
use serde_json::{Value, json};
use sha2::Sha256;

/// The message as JSON: envelope, main headers, text and HTML bodies, attachments' names.
pub fn payload(mail_from: &str, recipient: &str, raw: &[u8]) -> Value {
    let parsed = crate::mime::parse(raw);
    let Some(m) = parsed else {
        return json!({ "envelope": { "mail_from": mail_from, "recipient": recipient }, "raw": String::from_utf8_lossy(raw) });
    };
    let addresses = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|addr| addr.address().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
    };
    let attachments: Vec<Value> = m
        .attachments()
        .map(|a| json!({ "filename": a.attachment_name(), "size": a.len() }))
        .collect();
    json!({
        "envelope": { "mail_from": mail_from, "recipient": recipient },
        "from": addresses(m.from()),
        "to": addresses(m.to()),
        "subject": m.subject(),
        "date": m.date().map(|d| d.to_rfc3339()),
        "message_id": m.message_id(),
        "text": m.body_text(0),
        "html": m.body_html(0),
        "attachments": attachments,
        "raw": String::from_utf8_lossy(raw),
    })
}

/// Hex HMAC-SHA256 of the body, sent as `X-Webhook-Signature`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}
