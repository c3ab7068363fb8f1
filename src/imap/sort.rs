//! SORT (RFC 5256 §3, RFC 5957's DISPLAYFROM/DISPLAYTO): the keys of each message,
//! worked out once per command from its cached metadata, and the base subject that
//! SORT SUBJECT and THREAD compare.

use std::cmp::Ordering;

use imap_next::imap_types::extensions::sort::{SortCriterion, SortKey};

use crate::mailbox::MessageInfo;
use crate::mailbox::meta::{Address, Meta};

/// What SORT and THREAD know of one message.
pub struct Facts {
    /// The number the answer gives (the UID, for UID SORT and UID THREAD: the orders
    /// agree), and the tie-breaker.
    pub seq: u32,
    pub size: u64,
    pub arrival: i64,
    /// The Date header in UTC seconds, or the arrival when it has none that parses
    /// (RFC 5256 §2.2).
    pub date: i64,
    /// Base subject (§2.1), and whether taking it off removed a reply or forward mark.
    pub subject: String,
    pub reply: bool,
    from: String,
    cc: String,
    to: String,
    display_from: String,
    display_to: String,
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
}

impl Facts {
    pub fn new(seq: u32, info: &MessageInfo, meta: &Meta) -> Facts {
        let e = &meta.envelope;
        let date = e
            .date
            .as_deref()
            .and_then(mail_parser::DateTime::parse_rfc822)
            .map(|d| d.to_timestamp())
            .unwrap_or(info.internal_date);
        let decoded = e.subject.as_deref().map(decode).unwrap_or_default();
        let (subject, reply) = base_subject(&decoded);
        Facts {
            seq,
            size: info.size,
            arrival: info.internal_date,
            date,
            subject,
            reply,
            from: mailbox_of(&e.from),
            cc: mailbox_of(&e.cc),
            to: mailbox_of(&e.to),
            display_from: display_of(&e.from),
            display_to: display_of(&e.to),
            message_id: e.message_id.clone(),
            in_reply_to: e.in_reply_to.clone(),
        }
    }
}

/// A header value with its encoded-words decoded (RFC 2047).
fn decode(raw: &str) -> String {
    mail_parser::MessageParser::new()
        .parse(format!("Subject: {raw}\r\n\r\n").as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| raw.to_string())
}

/// The first address's mailbox (local part), as SORT FROM/TO/CC compare it.
fn mailbox_of(list: &[Address]) -> String {
    list.iter()
        .find(|a| a.host.is_some())
        .and_then(|a| a.mailbox.clone())
        .unwrap_or_default()
        .to_uppercase()
}

/// RFC 5957: the first address's display name, decoded, or else its address.
fn display_of(list: &[Address]) -> String {
    let Some(a) = list.iter().find(|a| a.host.is_some()) else {
        return String::new();
    };
    match a.name.as_deref().filter(|n| !n.trim().is_empty()) {
        Some(name) => name.to_uppercase(),
        None => format!(
            "{}@{}",
            a.mailbox.as_deref().unwrap_or_default(),
            a.host.as_deref().unwrap_or_default()
        )
        .to_uppercase(),
    }
}

/// Orders `facts` by `criteria`; ties by sequence number (RFC 5256 §3).
pub fn sort(facts: &mut [Facts], criteria: &[SortCriterion]) {
    facts.sort_by(|a, b| {
        for c in criteria {
            let order = match c.key {
                SortKey::Arrival => a.arrival.cmp(&b.arrival),
                SortKey::Date => a.date.cmp(&b.date),
                SortKey::Size => a.size.cmp(&b.size),
                SortKey::Subject => a.subject.cmp(&b.subject),
                SortKey::From => a.from.cmp(&b.from),
                SortKey::To => a.to.cmp(&b.to),
                SortKey::Cc => a.cc.cmp(&b.cc),
                SortKey::DisplayFrom => a.display_from.cmp(&b.display_from),
                SortKey::DisplayTo => a.display_to.cmp(&b.display_to),
            };
            let order = if c.reverse { order.reverse() } else { order };
            if order != Ordering::Equal {
                return order;
            }
        }
        a.seq.cmp(&b.seq)
    });
}

/// The base subject (RFC 5256 §2.1), folded to upper case as SORT's collations compare
/// (i;ascii-casemap, i;unicode-casemap: "[" and "_" sort after the letters, not before),
/// and whether a reply or forward mark was taken off it.
pub fn base_subject(subject: &str) -> (String, bool) {
    // (1) Whitespace runs, tabs and folds are one space.
    let mut s: String = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut reply = false;
    loop {
        // (2) Trailers: "(fwd)" and whitespace at the end.
        // (Compared as bytes: the subject is any UTF-8, and "(fwd)" is ASCII.)
        loop {
            let trimmed = s.trim_end();
            let cut = trimmed.len().saturating_sub(5);
            if trimmed.len() >= 5 && trimmed.as_bytes()[cut..].eq_ignore_ascii_case(b"(fwd)") {
                s = trimmed[..cut].to_string();
                reply = true;
            } else {
                s = trimmed.to_string();
                break;
            }
        }
        // (3)-(5): leaders ("Re:", "Fwd[2]:", "[list] Re:") and leading blobs, until
        // nothing more comes off.
        loop {
            let before = s.clone();
            let (rest, was_reply) = strip_leader(&s);
            reply |= was_reply;
            s = rest;
            if let Some(rest) = strip_blob(&s)
                && !rest.trim().is_empty()
            {
                s = rest.to_string();
            }
            if s == before {
                break;
            }
        }
        // (6) "[fwd: subject]".
        if s.len() >= 6 && s.as_bytes()[..5].eq_ignore_ascii_case(b"[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].to_string();
            reply = true;
            continue;
        }
        break;
    }
    (s.trim().to_uppercase(), reply)
}

/// A leading "[...]" and the whitespace after it, taken off.
fn strip_blob(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find([']', '['])?;
    rest[end..]
        .strip_prefix(']')
        .map(|after| after.trim_start())
}

/// Leading whitespace, and a subj-leader: any blobs, then "re", "fw" or "fwd", more
/// whitespace, an optional blob, and ":".
fn strip_leader(s: &str) -> (String, bool) {
    let start = s.trim_start();
    let mut rest = start;
    while let Some(after) = strip_blob(rest) {
        rest = after;
    }
    for mark in ["fwd", "fw", "re"] {
        let Some(head) = rest.as_bytes().get(..mark.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(mark.as_bytes()) {
            continue;
        }
        let mut after = rest[mark.len()..].trim_start();
        if let Some(b) = strip_blob(after) {
            after = b;
        }
        if let Some(text) = after.strip_prefix(':') {
            return (text.to_string(), true);
        }
    }
    (start.to_string(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects_as_rfc_5256_strips_them() {
        let base = |s: &str| base_subject(s).0;
        assert_eq!(base("Re: hello"), "HELLO");
        assert_eq!(base("RE: Re: re:hello"), "HELLO");
        assert_eq!(base("Fwd: hello (fwd)"), "HELLO");
        assert_eq!(base("[list] Re: hello"), "HELLO");
        assert_eq!(base("Re[2]: hello"), "HELLO");
        assert_eq!(base("[Fwd: Re: hello]"), "HELLO");
        assert_eq!(base("  Hello\t  World  "), "HELLO WORLD");
        // A blob that is all there is stays.
        assert_eq!(base("[announce]"), "[ANNOUNCE]");
        assert_eq!(base("[x] [y] topic"), "TOPIC");
        assert!(!base_subject("hello").1);
        // Punctuation between the upper and lower case letters sorts after both.
        assert!(base("_") > base("b") && base("[xyz]") > base("Zebra"));
        assert!(base_subject("Re: hello").1);
        assert_eq!(base(""), "");
        assert_eq!(base("Re:"), "");
        // Any UTF-8: nothing is cut inside a character.
        for subject in [
            "Привет",
            "日本語",
            "🎉🎉",
            "Re: été (fwd)",
            "[fwd: 🎉]",
            "é",
            "Réé",
        ] {
            base_subject(subject);
        }
        assert_eq!(base("Re: Привет (fwd)"), "ПРИВЕТ");
        assert_eq!(base("[Fwd: 日本語]"), "日本語");
    }
}
