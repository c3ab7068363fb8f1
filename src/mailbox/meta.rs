//! What IMAP asks of a message besides its bytes, worked out once at delivery: the
//! ENVELOPE fields and the MIME structure with each part's byte range in the message.

use mail_parser::{Address as ParsedAddress, HeaderName, Message, MimeHeaders, PartType};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Meta {
    pub envelope: Envelope,
    pub structure: Structure,
    /// The References header, unfolded (THREAD=REFERENCES reads it for every message;
    /// None in metadata older than version 2, which does not know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
    /// How it was worked out (`Meta::VERSION`); cached metadata of an older version
    /// that the fixes since would change is worked out again (`Meta::stale`).
    #[serde(default)]
    pub version: u32,
}

/// RFC 3501 ENVELOPE: header values as written (unfolded), addresses parsed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Address>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sender: Vec<Address>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reply_to: Vec<Address>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Address>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<Address>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// One address, or a group marker as IMAP writes them: a group starts with an address
/// whose host is None and whose mailbox is the group name, and ends with both None.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Address {
    /// The display name, decoded (UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An obsolete source route ("@relay1,@relay2"), IMAP's adl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A MIME part and, for multiparts and attached messages, what it contains.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Structure {
    /// Lower-case type and subtype, e.g. "text", "plain".
    pub kind: String,
    pub subtype: String,
    /// Content-Type parameters other than the boundary is kept too (IMAP lists them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Content-Transfer-Encoding, upper case ("7BIT" when absent).
    pub encoding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<(String, Vec<(String, String)>)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub language: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Byte offsets in the whole message: where this part's header starts, where its
    /// body starts, and where it ends.
    pub header_start: u32,
    pub body_start: u32,
    pub end: u32,
    /// Lines of the body, for text parts and attached messages.
    pub lines: u32,
    /// Parts of a multipart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Structure>,
    /// An attached message/rfc822: its envelope and structure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Box<Meta>>,
}

impl Structure {
    pub fn is_multipart(&self) -> bool {
        self.kind == "multipart"
    }

    /// The part a section path like [1, 2] names, counted from the top of the message
    /// this is the structure of (RFC 3501 §6.4.5): parts of a multipart are numbered
    /// from 1; a message that is not multipart has one part, numbered 1, its body, even
    /// when that body is itself a message (message/rfc822 at the top: [1] is the whole
    /// attached message, [1, 1] its body).
    pub fn part(&self, path: &[u32]) -> Option<&Structure> {
        let Some((&first, rest)) = path.split_first() else {
            return Some(self);
        };
        let next = if self.is_multipart() {
            self.parts.get(first.checked_sub(1)? as usize)?
        } else if first == 1 {
            self
        } else {
            return None;
        };
        if rest.is_empty() {
            Some(next)
        } else {
            next.inside(rest)
        }
    }

    /// What `path` names below this part: in an attached message, the path counts from
    /// that message's top; in a multipart, from its parts.
    fn inside(&self, path: &[u32]) -> Option<&Structure> {
        match &self.message {
            Some(inner) => inner.structure.part(path),
            None => self.part(path),
        }
    }
}

impl Meta {
    /// 1: parts inside an attached message have their own byte ranges (they were
    /// shifted), the parts of a multipart/digest default to message/rfc822, comments
    /// are no addresses and source routes are split off. 2: `references`.
    pub const VERSION: u32 = 2;

    /// Whether this cached metadata predates a fix that changes it: only messages with
    /// an attached message or a digest inside, or odd addresses, were worked out wrong.
    pub fn stale(&self) -> bool {
        fn touched(s: &Structure) -> bool {
            s.message.is_some() || s.subtype == "digest" || s.parts.iter().any(touched)
        }
        let e = &self.envelope;
        let odd = [&e.from, &e.sender, &e.reply_to, &e.to, &e.cc, &e.bcc]
            .iter()
            .flat_map(|list| list.iter())
            .any(|a| {
                (a.mailbox.is_none() && a.name.is_some())
                    || a.mailbox.as_deref().is_some_and(|m| m.starts_with('@'))
            });
        self.version < 1 && (odd || touched(&self.structure))
    }

    /// Where the top header block ends (its blank line included), kept beside the body
    /// so a FETCH of BODY[HEADER] or BODY[TEXT] does not read and parse the metadata.
    /// None when the top part does not span the message from its first byte to its last.
    pub fn header_len(&self, size: usize) -> Option<u32> {
        let top = &self.structure;
        (top.header_start == 0 && top.end as usize == size).then_some(top.body_start)
    }

    /// What delivery stores of `raw`: its metadata (`meta_codec`), and the header length
    /// kept beside the body.
    pub fn stored(raw: &[u8]) -> (Vec<u8>, Option<u32>) {
        let meta = Meta::of(raw);
        (super::meta_codec::encode(&meta), meta.header_len(raw.len()))
    }

    /// Metadata that knows only where the top header block ends (`header_len`): enough
    /// for the top message's HEADER, HEADER.FIELDS and TEXT, and for nothing else.
    pub fn top_only(header_len: u32, size: usize) -> Meta {
        Meta {
            structure: Structure {
                body_start: header_len.min(size as u32),
                end: size as u32,
                ..Structure::default()
            },
            version: Self::VERSION,
            ..Meta::default()
        }
    }

    /// Parses `raw` once; a message that cannot be parsed still gets a minimal structure
    /// (text/plain over all its bytes) so every FETCH can be answered.
    pub fn of(raw: &[u8]) -> Meta {
        match crate::mime::parse(raw) {
            Some(message) => meta_of(&message, raw, 0, 0),
            None => Meta {
                version: Self::VERSION,
                references: None,
                envelope: Envelope::default(),
                structure: Structure {
                    kind: "text".into(),
                    subtype: "plain".into(),
                    encoding: "7BIT".into(),
                    end: raw.len() as u32,
                    lines: count_lines(raw),
                    ..Structure::default()
                },
            },
        }
    }
}

/// `raw` holds the bytes `message`'s offsets count in, which start at `base` in the
/// whole message; `depth` counts the parts above this message (`limits::MIME_DEPTH`).
fn meta_of(message: &Message<'_>, raw: &[u8], base: u32, depth: usize) -> Meta {
    Meta {
        envelope: envelope_of(message),
        structure: structure_of(message, 0, raw, base, depth, false),
        references: raw_header(message, HeaderName::References),
        version: Meta::VERSION,
    }
}

fn raw_header(message: &Message<'_>, name: HeaderName<'static>) -> Option<String> {
    let raw = message.header_raw(name)?;
    let unfolded: String = raw.replace("\r\n", "").replace('\n', "");
    Some(unfolded.trim().to_string())
}

fn envelope_of(message: &Message<'_>) -> Envelope {
    let from = addresses(message.from());
    let sender = match addresses(message.sender()) {
        list if list.is_empty() => from.clone(),
        list => list,
    };
    let reply_to = match addresses(message.reply_to()) {
        list if list.is_empty() => from.clone(),
        list => list,
    };
    Envelope {
        date: raw_header(message, HeaderName::Date),
        subject: raw_header(message, HeaderName::Subject),
        from,
        sender,
        reply_to,
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        bcc: addresses(message.bcc()),
        in_reply_to: raw_header(message, HeaderName::InReplyTo),
        message_id: raw_header(message, HeaderName::MessageId),
    }
}

fn addresses(value: Option<&ParsedAddress<'_>>) -> Vec<Address> {
    // A name with no address is a comment (`group: (nobody) ;`), not an address.
    let one = |a: &mail_parser::Addr<'_>| {
        let address = a.address.as_deref()?;
        let (mailbox, host) = match address.rsplit_once('@') {
            Some((m, h)) => (m, Some(h.to_string())),
            None => (address, None),
        };
        // An obsolete source route, `<@relay1,@relay2:user@host>` (RFC 5322 §4.4),
        // goes in the envelope's route field, apart from the mailbox.
        let (route, mailbox) = match mailbox.strip_prefix('@').and(mailbox.rsplit_once(':')) {
            Some((route, rest)) => (Some(route.to_string()), rest),
            None => (None, mailbox),
        };
        Some(Address {
            name: a.name.as_deref().map(str::to_string),
            route,
            mailbox: Some(mailbox.to_string()),
            host,
        })
    };
    match value {
        None => Vec::new(),
        Some(ParsedAddress::List(list)) => list.iter().filter_map(one).collect(),
        Some(ParsedAddress::Group(groups)) => {
            let mut out = Vec::new();
            for group in groups {
                match &group.name {
                    Some(name) => {
                        out.push(Address {
                            mailbox: Some(name.to_string()),
                            ..Address::default()
                        });
                        out.extend(group.addresses.iter().filter_map(one));
                        out.push(Address::default());
                    }
                    None => out.extend(group.addresses.iter().filter_map(one)),
                }
            }
            out
        }
    }
}

fn structure_of(
    message: &Message<'_>,
    index: usize,
    raw: &[u8],
    base: u32,
    depth: usize,
    in_digest: bool,
) -> Structure {
    let Some(part) = message.parts.get(index) else {
        return Structure::default();
    };
    if depth >= crate::limits::MIME_DEPTH {
        return opaque(part, base);
    }
    let (kind, subtype, params) = match part.content_type() {
        Some(ct) => (
            ct.c_type.to_lowercase(),
            ct.c_subtype
                .as_deref()
                .map(str::to_lowercase)
                .unwrap_or_default(),
            ct.attributes
                .iter()
                .flatten()
                .map(|a| (a.name.to_string(), a.value.to_string()))
                .collect(),
        ),
        // RFC 2046 §5.1.5: in a digest, a part's default type is message/rfc822.
        None if in_digest => ("message".to_string(), "rfc822".to_string(), Vec::new()),
        None => ("text".to_string(), "plain".to_string(), Vec::new()),
    };
    let (kind, subtype) = if subtype.is_empty() {
        match kind.as_str() {
            "text" => (kind, "plain".to_string()),
            _ => ("application".to_string(), "octet-stream".to_string()),
        }
    } else {
        (kind, subtype)
    };
    let body = raw
        .get(part.offset_body as usize..part.offset_end as usize)
        .unwrap_or_default();
    let mut structure = Structure {
        kind,
        subtype,
        params,
        id: part.content_id().map(|s| format!("<{s}>")),
        description: part.content_description().map(str::to_string),
        encoding: part
            .content_transfer_encoding()
            .map(str::to_uppercase)
            .unwrap_or_else(|| "7BIT".to_string()),
        md5: None,
        disposition: part.content_disposition().map(|d| {
            (
                d.c_type.to_lowercase(),
                d.attributes
                    .iter()
                    .flatten()
                    .map(|a| (a.name.to_string(), a.value.to_string()))
                    .collect(),
            )
        }),
        language: match part.content_language() {
            mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
            mail_parser::HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
            _ => Vec::new(),
        },
        location: part.content_location().map(str::to_string),
        header_start: base + part.offset_header,
        body_start: base + part.offset_body,
        end: base + part.offset_end,
        lines: 0,
        parts: Vec::new(),
        message: None,
    };
    match &part.body {
        PartType::Multipart(children) => {
            let digest = structure.subtype == "digest";
            structure.parts = children
                .iter()
                .map(|&child| structure_of(message, child as usize, raw, base, depth + 1, digest))
                .collect();
        }
        // A digest's part with no Content-Type is a message mail-parser took for text:
        // parsed here, from its own bytes.
        _ if structure.kind == "message" && part.content_type().is_none() => {
            structure.lines = count_lines(body);
            if let Some(inner) = crate::mime::parse(body) {
                let at = base + part.offset_body;
                structure.message = Some(Box::new(meta_of(&inner, body, at, depth + 1)));
            }
        }
        PartType::Message(inner) => {
            // mail-parser parses an attached message in place: its offsets count in the
            // enclosing message's bytes (its own raw_message is a copy of its part).
            // One it had to decode first (base64 or quoted-printable, which RFC 2046
            // §5.2.1 forbids for message/rfc822) has offsets in the decoded bytes, which
            // are not in the message: it stays an opaque leaf.
            // Its raw message stops where its own multipart's closing boundary does;
            // what follows (an epilogue) is still the attached message's text.
            if body.starts_with(inner.raw_message()) {
                structure.lines = count_lines(body);
                let mut meta = meta_of(inner, raw, base, depth + 1);
                meta.structure.end = meta.structure.end.max(structure.end);
                structure.message = Some(Box::new(meta));
            } else {
                return opaque(part, base);
            }
        }
        PartType::Text(_) | PartType::Html(_) => structure.lines = count_lines(body),
        PartType::Binary(_) | PartType::InlineBinary(_) => {
            if structure.kind == "text" {
                structure.lines = count_lines(body);
            }
        }
    }
    structure
}

/// A part past the nesting limit: its bytes as one application/octet-stream body, so
/// it can still be fetched whole, but nothing inside it is looked at.
fn opaque(part: &mail_parser::MessagePart<'_>, base: u32) -> Structure {
    Structure {
        kind: "application".into(),
        subtype: "octet-stream".into(),
        encoding: "7BIT".into(),
        header_start: base + part.offset_header,
        body_start: base + part.offset_body,
        end: base + part.offset_end,
        ..Structure::default()
    }
}

fn count_lines(body: &[u8]) -> u32 {
    let newlines = body.iter().filter(|&&b| b == b'\n').count();
    let unterminated = !body.is_empty() && !body.ends_with(b"\n");
    (newlines + usize::from(unterminated)) as u32
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MIXED: &[u8] = b"From: \"Ann Example\" <ann@a.test>\r\n\
To: bob@b.test, Team: c@c.test, d@d.test;\r\n\
Subject: =?utf-8?q?caf=C3=A9?= and\r\n more\r\n\
Date: Tue, 1 Jul 2025 10:00:00 +0000\r\n\
Message-ID: <m1@a.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
preamble\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
line one\r\n\
line two\r\n\
--b1\r\n\
Content-Type: application/pdf; name=\"x.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"x.pdf\"\r\n\
\r\n\
AAAA\r\n\
--b1--\r\n";

    #[test]
    fn envelope_keeps_raw_values_and_parses_addresses() {
        let meta = Meta::of(MIXED);
        let e = &meta.envelope;
        assert_eq!(e.subject.as_deref(), Some("=?utf-8?q?caf=C3=A9?= and more"));
        assert_eq!(e.message_id.as_deref(), Some("<m1@a.test>"));
        assert_eq!(e.from[0].name.as_deref(), Some("Ann Example"));
        assert_eq!(
            (e.from[0].mailbox.as_deref(), e.from[0].host.as_deref()),
            (Some("ann"), Some("a.test"))
        );
        assert_eq!(e.sender, e.from, "Sender defaults to From");
        assert!(e.to.len() >= 3, "{:?}", e.to);
    }

    #[test]
    fn structure_has_parts_with_their_byte_ranges() {
        let meta = Meta::of(MIXED);
        let s = &meta.structure;
        assert_eq!(
            (s.kind.as_str(), s.subtype.as_str()),
            ("multipart", "mixed")
        );
        assert_eq!(s.parts.len(), 2);
        let text = s.part(&[1]).unwrap();
        assert_eq!(
            (text.kind.as_str(), text.subtype.as_str()),
            ("text", "plain")
        );
        let body = &MIXED[text.body_start as usize..text.end as usize];
        assert!(
            body.starts_with(b"line one\r\nline two"),
            "{:?}",
            String::from_utf8_lossy(body)
        );
        let pdf = s.part(&[2]).unwrap();
        assert_eq!(pdf.encoding, "BASE64");
        assert_eq!(pdf.disposition.as_ref().unwrap().0, "attachment");
        assert!(s.part(&[3]).is_none());
    }

    /// `levels` multiparts, each inside the last, around one text part.
    pub(crate) fn nested_multiparts(levels: usize) -> Vec<u8> {
        let mut m = String::from("From: a@b.test\r\nMIME-Version: 1.0\r\n");
        m.push_str("Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
        for i in 1..levels {
            m.push_str(&format!(
                "--b{}\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n",
                i - 1
            ));
        }
        m.push_str(&format!(
            "--b{}\r\nContent-Type: text/plain\r\n\r\nhello\r\n",
            levels - 1
        ));
        for i in (0..levels).rev() {
            m.push_str(&format!("--b{i}--\r\n"));
        }
        m.into_bytes()
    }

    /// `levels` message/rfc822 parts, each the body of the last.
    pub(crate) fn nested_messages(levels: usize) -> Vec<u8> {
        let mut m = String::from("From: a@b.test\r\n");
        for _ in 0..levels {
            m.push_str("Subject: x\r\nContent-Type: message/rfc822\r\n\r\n");
        }
        m.push_str("Subject: end\r\n\r\nhello\r\n");
        m.into_bytes()
    }

    fn depth(s: &Structure) -> usize {
        let below = s
            .parts
            .iter()
            .map(depth)
            .chain(s.message.as_ref().map(|m| depth(&m.structure)))
            .max()
            .unwrap_or(0);
        below + 1
    }

    #[test]
    fn nesting_past_the_limit_is_kept_opaque_and_survives_a_round_trip() {
        for raw in [
            nested_multiparts(1000),
            nested_messages(5000),
            nested_multiparts(crate::limits::MIME_DEPTH + 1),
        ] {
            // On tokio's default thread stack (the server gives its threads four times
            // as much), in a debug build: nothing may recurse once per level.
            let meta = std::thread::Builder::new()
                .stack_size(2048 * 1024)
                .spawn(move || {
                    let meta = Meta::of(&raw);
                    let kept = crate::mailbox::meta_codec::encode(&meta);
                    let back = crate::mailbox::meta_codec::decode(&kept);
                    assert_eq!(back.expect("cached meta reads back"), meta);
                    meta
                })
                .unwrap()
                .join()
                .expect("no stack overflow");
            assert!(depth(&meta.structure) <= crate::limits::MIME_DEPTH + 1);
        }
        // Within the limit, nothing is cut.
        let meta = Meta::of(&nested_multiparts(10));
        assert_eq!(depth(&meta.structure), 11);
        let leaf = meta.structure.part(&[1; 10]).unwrap();
        assert_eq!(
            (leaf.kind.as_str(), leaf.subtype.as_str()),
            ("text", "plain")
        );
    }

    #[test]
    fn a_single_part_message_is_its_own_part_one() {
        let raw = b"Subject: hi\r\n\r\nhello\r\n";
        let meta = Meta::of(raw);
        let one = meta.structure.part(&[1]).unwrap();
        assert_eq!(
            &raw[one.body_start as usize..one.end as usize],
            b"hello\r\n"
        );
        assert_eq!(one.lines, 1);
    }

    #[test]
    fn envelope_addresses_skip_comments_and_split_source_routes() {
        let raw = b"From: <@relay1,@relay2:user@domain.test>\r\n\
To: group1: a@b.test;, group2: (foo) ;, c@d.test\r\nBcc: (only a comment)\r\n\r\nx\r\n";
        let e = Meta::of(raw).envelope;
        assert_eq!(
            e.from,
            [Address {
                name: None,
                route: Some("@relay1,@relay2".into()),
                mailbox: Some("user".into()),
                host: Some("domain.test".into()),
            }]
        );
        let to: Vec<(Option<&str>, Option<&str>)> =
            e.to.iter()
                .map(|a| (a.mailbox.as_deref(), a.host.as_deref()))
                .collect();
        assert_eq!(
            to,
            [
                (Some("group1"), None),
                (Some("a"), Some("b.test")),
                (None, None),
                (Some("group2"), None),
                (None, None),
                (Some("c"), Some("d.test")),
            ]
        );
        assert!(e.bcc.is_empty());
    }
}
