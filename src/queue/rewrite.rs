//! The friendly From: when a forward would fail DMARC at its destination (the sender's
//! domain enforces DMARC and no aligned DKIM signature survives forwarding), the copy
//! leaves From the alias itself, with the author kept in the name and in Reply-To.

use mail_parser::MessageParser;

/// Rewrites the From header of `message` to the alias `via`, keeping the author in the
/// display name, in Reply-To (unless one is set) and in X-Original-From. Deterministic:
/// the ARC seal made on arrival and the copy sent later must see the same bytes.
pub fn friendly_from(message: &[u8], via: &str) -> Vec<u8> {
    let header_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len());
    let (headers, body) = message.split_at(header_end);
    let parsed = MessageParser::new().parse_headers(message);
    let author = parsed
        .as_ref()
        .and_then(|m| m.from())
        .and_then(|a| a.first());
    let address = author
        .and_then(|a| a.address())
        .unwrap_or("unknown sender")
        .to_string();
    let name = author
        .and_then(|a| a.name())
        .map(str::to_string)
        .unwrap_or_else(|| address.clone());
    let has_reply_to = parsed
        .as_ref()
        .is_some_and(|m| m.header_raw("Reply-To").is_some());
    let via_domain = via.rsplit_once('@').map(|(_, d)| d).unwrap_or(via);
    let display: String = format!("{name} via {via_domain}")
        .chars()
        .filter(|c| !matches!(c, '"' | '\\' | '\r' | '\n'))
        .collect();

    let mut out = Vec::with_capacity(message.len() + 200);
    let mut replaced = false;
    let mut skipping = false;
    for line in headers.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if continuation {
            if !skipping {
                out.extend_from_slice(line);
            }
            continue;
        }
        skipping = false;
        if !replaced && line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"from:") {
            replaced = true;
            skipping = true;
            out.extend_from_slice(format!("From: \"{display}\" <{via}>\r\n").as_bytes());
            out.extend_from_slice(format!("X-Original-From: {address}\r\n").as_bytes());
            if !has_reply_to {
                out.extend_from_slice(format!("Reply-To: {address}\r\n").as_bytes());
            }
            continue;
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_becomes_the_alias_and_the_author_is_kept() {
        let msg = b"Subject: hi\r\nFrom: Alice Example\r\n <alice@sender.test>\r\nTo: x@y.test\r\n\r\nbody\r\n";
        let out = String::from_utf8(friendly_from(msg, "hello@example.test")).unwrap();
        assert!(
            out.contains("From: \"Alice Example via example.test\" <hello@example.test>\r\n"),
            "{out}"
        );
        assert!(out.contains("Reply-To: alice@sender.test\r\n"));
        assert!(out.contains("X-Original-From: alice@sender.test\r\n"));
        assert!(
            !out.contains("<alice@sender.test>"),
            "the folded original From is gone: {out}"
        );
        assert!(out.ends_with("To: x@y.test\r\n\r\nbody\r\n"));
        assert_eq!(
            friendly_from(msg, "hello@example.test"),
            out.as_bytes(),
            "deterministic"
        );
    }
}
