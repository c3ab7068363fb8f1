//! The message as stored after the verdict: the sender's own spam headers gone (a spammer
//! would write "X-Spam-Status: No"), rspamd's header changes made, ours on top.
//! rspamd's new Subject ("rewrite subject") is not applied: the message is junk, and a
//! changed Subject would break the author's DKIM signature on forwarded copies.

use super::Verdict;
use crate::mime::{field_name, header_fields};

/// Longest header value taken from rspamd (a line must stay under 998 octets).
const MAX_VALUE: usize = 900;

/// Fields only a spam filter writes: whatever the sender put there is removed.
pub fn is_spam_header(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with(b"x-spam") || lower.starts_with(b"x-rspamd")
}

/// `message` (the sender's header and body) without the sender's spam fields: what is
/// stored when nothing judged it (rspamd down, clamd alone).
pub fn strip(message: Vec<u8>) -> Vec<u8> {
    crate::mime::without_fields(message, |field| is_spam_header(field_name(field)))
}

/// `message` (the sender's header and body) with the sender's spam fields removed,
/// rspamd's removals applied, and the verdict's fields on top.
pub fn rewrite(message: Vec<u8>, verdict: &Verdict) -> Vec<u8> {
    let (fields, end) = header_fields(&message);
    let mut out = Vec::with_capacity(message.len() + 1024);
    out.extend_from_slice(verdict.result_header().as_bytes());
    out.extend_from_slice(format!("X-Spam-Score: {:.2}\r\n", verdict.score).as_bytes());
    for (name, value) in &verdict.add_headers {
        // Ours are written above; a filter's field must be a field name.
        if is_spam_header(name.as_bytes())
            || name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        {
            continue;
        }
        out.extend_from_slice(format!("{name}: {}\r\n", one_line(value)).as_bytes());
    }
    let mut seen: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    for range in fields {
        let field = &message[range];
        let name = field_name(field).to_ascii_lowercase();
        let nth = seen.entry(name.clone()).or_default();
        *nth += 1;
        let removed = verdict.remove_headers.iter().any(|(n, which)| {
            n.as_bytes().eq_ignore_ascii_case(&name) && (*which == 0 || *which == *nth)
        });
        if removed || is_spam_header(&name) {
            continue;
        }
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&message[end..]);
    out
}

/// A value on one line: line breaks become spaces, control characters go, other than
/// ASCII becomes '?' (7-bit headers travel anywhere), bounded.
fn one_line(value: &str) -> String {
    let mut out: String = value
        .chars()
        .map(|c| {
            if c == '\r' || c == '\n' || c == '\t' {
                ' '
            } else if !c.is_ascii() {
                '?'
            } else {
                c
            }
        })
        .filter(|c| !c.is_control())
        .collect();
    if out.len() > MAX_VALUE {
        let mut cut = MAX_VALUE;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spam::{Action, Verdict};

    fn verdict() -> Verdict {
        Verdict {
            action: Action::RewriteSubject,
            score: 9.5,
            required: 15.0,
            symbols: vec![],
            smtp_message: None,
            add_headers: vec![
                ("X-Virus".into(), "clean\r\nInjected: yes".into()),
                ("X-Spam-Status".into(), "No".into()),
                ("Bad Name".into(), "x".into()),
            ],
            remove_headers: vec![("X-Old".into(), 2), ("X-Gone".into(), 0)],
        }
    }

    #[test]
    fn the_senders_verdict_goes_and_ours_is_on_top() {
        let message =
            b"X-Spam-Status: No, score=-100\r\nX-Spam-Flag:\r\n NO\r\nx-rspamd-queue-id: 1\r\n\
                        Subject: hi\r\nX-Old: 1\r\nX-Old: 2\r\nX-Gone: a\r\nX-Gone: b\r\n\r\n\
                        X-Spam-Status: in the body stays\r\n"
                .to_vec();
        let out = String::from_utf8(rewrite(message, &verdict())).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("X-Spamd-Result: default: False [9.50 / 15.00]\r\n"),
            "{head}"
        );
        assert!(head.contains("X-Spam-Score: 9.50\r\n"));
        assert!(head.contains("X-Virus: clean  Injected: yes\r\n"), "{head}");
        assert!(!head.contains("Bad Name"));
        assert!(!head.contains("score=-100") && !head.contains("NO") && !head.contains("queue-id"));
        // rspamd's "rewrite subject" is junk, the Subject left alone: a rewritten one would
        // break the author's DKIM signature on every forwarded copy.
        assert!(head.contains("Subject: hi\r\n"));
        assert_eq!(head.matches("X-Old:").count(), 1);
        assert!(head.contains("X-Old: 1"));
        assert!(!head.contains("X-Gone"));
        assert_eq!(body, "X-Spam-Status: in the body stays\r\n");
    }
}
