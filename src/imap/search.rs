//! SEARCH (RFC 3501 §6.4.4) over the selected folder: flags, sizes and dates from the
//! index, header keys from the cached envelope or the header, text keys from the decoded
//! message (MIME parts decoded, case-insensitive).

use std::cell::OnceCell;

use imap_next::imap_types::search::SearchKey;
use mail_parser::{MessageParser, MimeHeaders, PartType};

use imap_next::imap_types::sequence::SequenceSet;

use super::selected::{contains, ranges};
use crate::mailbox::meta::Meta;
use crate::mailbox::{Folder, Mailbox, MessageInfo};

/// The sequence sets of a search's keys, each resolved once into sorted, merged ranges:
/// a set of a million elements then costs each message one binary search, not a million
/// comparisons (a logged-in command line may be as long as the largest message).
/// `*` stands for the largest message number or UID of the folder searched.
#[derive(Debug, Default)]
pub struct Sets {
    largest_seq: u32,
    largest_uid: u32,
    resolved: Vec<(usize, Vec<(u32, u32)>)>,
}

impl Sets {
    pub fn of(criteria: &[SearchKey<'_>], largest_seq: u32, largest_uid: u32) -> Sets {
        // As deep as imap-codec lets search keys nest, like `uses_recent`.
        fn walk(key: &SearchKey<'_>, out: &mut Sets) {
            match key {
                SearchKey::And(keys) => keys.as_ref().iter().for_each(|k| walk(k, out)),
                SearchKey::Or(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                SearchKey::Not(k) => walk(k, out),
                SearchKey::SequenceSet(set) => out
                    .resolved
                    .push((address(set), ranges(set, out.largest_seq))),
                SearchKey::Uid(set) => out
                    .resolved
                    .push((address(set), ranges(set, out.largest_uid))),
                _ => {}
            }
        }
        let mut sets = Sets {
            largest_seq,
            largest_uid,
            resolved: Vec::new(),
        };
        for key in criteria {
            walk(key, &mut sets);
        }
        // Found by binary search: a search may name thousands of sets, each looked up
        // for every message.
        sets.resolved.sort_unstable_by_key(|(at, _)| *at);
        sets
    }

    /// Whether `n`, a message number (or a UID, with `uid`) of the folder, is in `set`,
    /// one of the keys these were made of.
    fn contains(&self, set: &SequenceSet, n: u32, uid: bool) -> bool {
        let largest = if uid {
            self.largest_uid
        } else {
            self.largest_seq
        };
        match self
            .resolved
            .binary_search_by_key(&address(set), |(at, _)| *at)
            .map(|i| &self.resolved[i])
        {
            Ok((_, ranges)) => {
                let i = ranges.partition_point(|&(_, last)| last < n);
                ranges.get(i).is_some_and(|&(first, _)| first <= n)
            }
            Err(_) => contains(set, n, largest),
        }
    }
}

/// A key's set is known by where it lives: the criteria stay borrowed while they match.
fn address(set: &SequenceSet) -> usize {
    std::ptr::from_ref(set).cast::<()>() as usize
}

/// One message under test; its content is read (and decrypted) only if a key needs it.
pub struct Candidate<'a> {
    pub seq: u32,
    pub info: &'a MessageInfo,
    /// \Recent for the searching session.
    pub recent: bool,
    /// The search's sets, resolved, and what `*` stands for.
    sets: &'a Sets,
    mailbox: &'a Mailbox,
    folder: &'a Folder,
    meta: OnceCell<Option<Meta>>,
    body: OnceCell<Option<Vec<u8>>>,
}

impl<'a> Candidate<'a> {
    pub fn new(
        mailbox: &'a Mailbox,
        folder: &'a Folder,
        seq: u32,
        info: &'a MessageInfo,
        recent: bool,
        sets: &'a Sets,
    ) -> Self {
        Candidate {
            seq,
            info,
            recent,
            sets,
            mailbox,
            folder,
            meta: OnceCell::new(),
            body: OnceCell::new(),
        }
    }

    fn meta(&self) -> Option<&Meta> {
        self.meta
            .get_or_init(|| self.mailbox.meta(self.folder, self.info.uid).ok().flatten())
            .as_ref()
    }

    fn body(&self) -> Option<&[u8]> {
        self.body
            .get_or_init(|| self.mailbox.body(self.folder, self.info.uid).ok().flatten())
            .as_deref()
    }

    /// The header field values named `name` (unfolded), from the message itself.
    fn header(&self, name: &str) -> Vec<String> {
        let Some(body) = self.body() else {
            return Vec::new();
        };
        let Some(message) = MessageParser::new().parse_headers(body) else {
            return Vec::new();
        };
        message
            .headers_raw()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.replace("\r\n", "").trim().to_string())
            .collect()
    }
}

fn has(haystack: &str, needle: &str) -> bool {
    needle.is_empty() || haystack.to_lowercase().contains(&needle.to_lowercase())
}

fn text(s: &impl AsRef<[u8]>) -> String {
    String::from_utf8_lossy(s.as_ref()).into_owned()
}

/// Addresses of an envelope field as searchable text: "Name <user@host>" each.
fn addresses(list: &[crate::mailbox::meta::Address]) -> String {
    list.iter()
        .map(|a| {
            format!(
                "{} <{}@{}>",
                a.name.as_deref().unwrap_or(""),
                a.mailbox.as_deref().unwrap_or(""),
                a.host.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn day(unix: i64) -> Option<chrono::NaiveDate> {
    chrono::DateTime::from_timestamp(unix, 0).map(|d| d.date_naive())
}

fn sent_day(c: &Candidate<'_>) -> Option<chrono::NaiveDate> {
    let date = c.meta()?.envelope.date.clone()?;
    let parsed = mail_parser::DateTime::parse_rfc822(&date)?;
    // The date as the sender wrote it (RFC 3501: "disregarding time and timezone").
    chrono::NaiveDate::from_ymd_opt(parsed.year as i32, parsed.month as u32, parsed.day as u32)
}

/// Decoded text of the whole message: header values and every text part.
fn full_text(c: &Candidate<'_>, with_header: bool) -> String {
    let Some(body) = c.body() else {
        return String::new();
    };
    let Some(message) = crate::mime::parse(body) else {
        return String::from_utf8_lossy(body).into_owned();
    };
    let mut out = String::new();
    if with_header {
        for (name, value) in message.headers_raw() {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
        }
        // The decoded subject too, so a search finds words of an encoded one.
        out.push_str(message.subject().unwrap_or_default());
        out.push('\n');
    }
    for part in &message.parts {
        match &part.body {
            PartType::Text(t) | PartType::Html(t) => {
                out.push_str(t);
                out.push('\n');
            }
            PartType::Binary(_) | PartType::InlineBinary(_) => {
                if let Some(name) = part.attachment_name() {
                    out.push_str(name);
                    out.push('\n');
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether `key` names MODSEQ anywhere (the answer then says the highest, RFC 7162).
pub fn uses_modseq(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(uses_modseq),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::Not(k) => uses_modseq(k),
        SearchKey::ModSequence { .. } => true,
        _ => false,
    }
}

/// The most elements a sequence set in an `index_only` SEARCH may have.
const SHORT_SET: usize = 64;

/// The most keys a SEARCH run on the worker thread may have: every message is tested
/// against each, and a command line may hold millions.
const SHORT_KEYS: usize = 64;

/// Whether a SEARCH of `criteria` is short enough for the worker thread: answered from
/// the index (`index_only`) with at most `SHORT_KEYS` keys.
pub fn short(criteria: &[SearchKey<'_>]) -> bool {
    // Counts down from the budget and stops when it runs out: a million keys are not
    // all walked to learn that there are too many.
    fn within(key: &SearchKey<'_>, left: &mut usize) -> bool {
        if *left == 0 {
            return false;
        }
        *left -= 1;
        match key {
            SearchKey::And(keys) => keys.as_ref().iter().all(|k| within(k, left)),
            SearchKey::Or(a, b) => within(a, left) && within(b, left),
            SearchKey::Not(k) => within(k, left),
            _ => true,
        }
    }
    let mut left = SHORT_KEYS;
    criteria.iter().all(|k| within(k, &mut left)) && criteria.iter().all(index_only)
}

/// Whether `key` asks about \Recent anywhere (RECENT, NEW, OLD): the per-message
/// look-up is skipped when it does not.
pub fn uses_recent(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(uses_recent),
        SearchKey::Or(a, b) => uses_recent(a) || uses_recent(b),
        SearchKey::Not(k) => uses_recent(k),
        SearchKey::Recent | SearchKey::New | SearchKey::Old => true,
        _ => false,
    }
}

/// Whether `key` is answered from the index the session holds (flags, numbers, sizes,
/// arrival dates) without reading any message, and cheaply: a set of more than
/// `SHORT_SET` elements is tested element by element against every message (a command
/// line may hold millions), so it does not count.
pub fn index_only(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(index_only),
        SearchKey::Or(a, b) => index_only(a) && index_only(b),
        SearchKey::Not(k) => index_only(k),
        SearchKey::SequenceSet(set) | SearchKey::Uid(set) => set.0.as_ref().len() <= SHORT_SET,
        SearchKey::All
        | SearchKey::Answered
        | SearchKey::Unanswered
        | SearchKey::Deleted
        | SearchKey::Undeleted
        | SearchKey::Draft
        | SearchKey::Undraft
        | SearchKey::Flagged
        | SearchKey::Unflagged
        | SearchKey::Seen
        | SearchKey::Unseen
        | SearchKey::Recent
        | SearchKey::New
        | SearchKey::Old
        | SearchKey::Keyword(_)
        | SearchKey::Unkeyword(_)
        | SearchKey::Larger(_)
        | SearchKey::Smaller(_)
        | SearchKey::Before(_)
        | SearchKey::On(_)
        | SearchKey::Since(_)
        | SearchKey::ModSequence { .. } => true,
        // Envelope, header and text keys read the messages.
        _ => false,
    }
}

pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>) -> bool {
    let info = c.info;
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches(k, c)),
        SearchKey::Or(a, b) => matches(a, c) || matches(b, c),
        SearchKey::Not(k) => !matches(k, c),
        SearchKey::All => true,
        SearchKey::SequenceSet(set) => c.sets.contains(set, c.seq, false),
        SearchKey::Uid(set) => c.sets.contains(set, info.uid, true),
        SearchKey::Answered => info.has("\\Answered"),
        SearchKey::Unanswered => !info.has("\\Answered"),
        SearchKey::Deleted => info.has("\\Deleted"),
        SearchKey::Undeleted => !info.has("\\Deleted"),
        SearchKey::Draft => info.has("\\Draft"),
        SearchKey::Undraft => !info.has("\\Draft"),
        SearchKey::Flagged => info.has("\\Flagged"),
        SearchKey::Unflagged => !info.has("\\Flagged"),
        SearchKey::Seen => info.has("\\Seen"),
        SearchKey::Unseen => !info.has("\\Seen"),
        SearchKey::Recent => c.recent,
        SearchKey::New => c.recent && !info.has("\\Seen"),
        SearchKey::Old => !c.recent,
        SearchKey::Keyword(k) => info.has(k.as_ref()),
        SearchKey::Unkeyword(k) => !info.has(k.as_ref()),
        SearchKey::Larger(n) => info.size > u64::from(*n),
        SearchKey::Smaller(n) => info.size < u64::from(*n),
        SearchKey::Before(d) => day(info.internal_date).is_some_and(|x| x < *d.as_ref()),
        SearchKey::On(d) => day(info.internal_date).is_some_and(|x| x == *d.as_ref()),
        SearchKey::Since(d) => day(info.internal_date).is_some_and(|x| x >= *d.as_ref()),
        SearchKey::SentBefore(d) => sent_day(c).is_some_and(|x| x < *d.as_ref()),
        SearchKey::SentOn(d) => sent_day(c).is_some_and(|x| x == *d.as_ref()),
        SearchKey::SentSince(d) => sent_day(c).is_some_and(|x| x >= *d.as_ref()),
        SearchKey::From(s) => c
            .meta()
            .is_some_and(|m| has(&addresses(&m.envelope.from), &text(s))),
        SearchKey::To(s) => c
            .meta()
            .is_some_and(|m| has(&addresses(&m.envelope.to), &text(s))),
        SearchKey::Cc(s) => c
            .meta()
            .is_some_and(|m| has(&addresses(&m.envelope.cc), &text(s))),
        SearchKey::Bcc(s) => c
            .meta()
            .is_some_and(|m| has(&addresses(&m.envelope.bcc), &text(s))),
        SearchKey::Subject(s) => {
            let needle = text(s);
            c.header("Subject").iter().any(|v| {
                has(v, &needle)
                    || has(
                        &MessageParser::new()
                            .parse(format!("Subject: {v}\r\n\r\n").as_bytes())
                            .and_then(|m| m.subject().map(str::to_string))
                            .unwrap_or_default(),
                        &needle,
                    )
            })
        }
        SearchKey::Header(name, value) => {
            let values = c.header(&text(name));
            !values.is_empty() && values.iter().any(|v| has(v, &text(value)))
        }
        SearchKey::Body(s) => has(&full_text(c, false), &text(s)),
        SearchKey::Text(s) => has(&full_text(c, true), &text(s)),
        SearchKey::ModSequence { modseq, .. } => info.modseq >= *modseq,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_next::imap_types::sequence::SequenceSet;

    /// Sets resolved once answer as testing every element does, for numbers up to the
    /// largest, with `*`, reversed and overlapping ranges.
    #[test]
    fn resolved_sets_agree_with_testing_every_element() {
        let keys = [
            "1,3:5,9:*",
            "*",
            "7:2,4:6,20:30,25:40",
            "1:4294967295",
            "50,40,30,31,32",
            "100:*",
        ]
        .map(|text| SearchKey::SequenceSet(SequenceSet::try_from(text).unwrap()));
        let uid = SearchKey::Uid(SequenceSet::try_from("2,4:8,33:*").unwrap());
        let nested = [SearchKey::Not(Box::new(SearchKey::Or(
            Box::new(keys[0].clone()),
            Box::new(uid.clone()),
        )))];
        for largest in [1u32, 10, 37, 99] {
            let sets = Sets::of(&keys, largest, largest * 3);
            let uids = Sets::of(std::slice::from_ref(&uid), 0, largest * 3);
            let inner = Sets::of(&nested, largest, largest * 3);
            assert_eq!(sets.resolved.len(), keys.len());
            assert_eq!(
                inner.resolved.len(),
                2,
                "keys under NOT and OR are found too"
            );
            for n in 1..=largest {
                for key in &keys {
                    let SearchKey::SequenceSet(set) = key else {
                        unreachable!()
                    };
                    assert_eq!(
                        sets.contains(set, n, false),
                        contains(set, n, largest),
                        "{n} of {largest} in {set:?}"
                    );
                }
            }
            let SearchKey::Uid(set) = &uid else {
                unreachable!()
            };
            for n in 1..=largest * 3 {
                assert_eq!(uids.contains(set, n, true), contains(set, n, largest * 3));
            }
        }
    }

    #[test]
    fn a_long_set_is_not_a_short_search() {
        let set = |text: &str| SequenceSet::try_from(text).unwrap();
        assert!(index_only(&SearchKey::Unseen));
        assert!(index_only(&SearchKey::Uid(set("1:*"))));
        // An attacker's set of thousands of single UIDs is tested against every message:
        // it stays off the worker thread.
        let many: Vec<String> = (1..=10_000).map(|n| (n * 2).to_string()).collect();
        let long = SearchKey::Uid(set(&many.join(",")));
        assert!(!index_only(&long));
        assert!(!index_only(&SearchKey::Not(Box::new(long))));
        assert!(!index_only(&SearchKey::Subject("x".try_into().unwrap())));
        // Nor is an attacker's search of thousands of keys, each cheap.
        assert!(short(&[SearchKey::Unseen, SearchKey::Uid(set("1:*"))]));
        let keys = vec![SearchKey::Seen; SHORT_KEYS + 1];
        assert!(!short(&keys));
        assert!(short(&keys[..SHORT_KEYS]));
        let nested = SearchKey::Not(Box::new(SearchKey::And(
            imap_next::imap_types::core::Vec1::try_from(keys).unwrap(),
        )));
        assert!(!short(&[nested]));
    }
}
