//! FETCH data for one message: index fields from the session's view, ENVELOPE and
//! BODYSTRUCTURE from the metadata cached at delivery, sections cut from the message.

use std::num::NonZeroU64;

use imap_next::imap_types::core::{AString, IString, Literal, LiteralMode, NString, NString8};
use imap_next::imap_types::extensions::binary::Literal8;
use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName, Section};
use imap_next::imap_types::flag::FlagFetch;

use super::convert;
use crate::mailbox::MessageInfo;
use crate::mailbox::meta::{Meta, Structure};

/// How much of a message's cached metadata a FETCH needs, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetaNeed {
    None,
    /// Only where the top header block ends (HEADER, HEADER.FIELDS, TEXT of the top
    /// message, RFC822.HEADER/TEXT): kept beside the body, so no metadata is read.
    TopHeader,
    All,
}

/// Whether any of `names` needs the message's bytes, and how much of its metadata.
pub fn needs(names: &[MessageDataItemName<'_>]) -> (bool, MetaNeed) {
    let body = names.iter().any(|n| {
        matches!(
            n,
            MessageDataItemName::BodyExt { .. }
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Header
                | MessageDataItemName::Rfc822Text
                | MessageDataItemName::Binary { .. }
                | MessageDataItemName::BinarySize { .. }
        )
    });
    // The whole message (BODY[], RFC822) is cut from nothing: only a section needs the
    // structure, so a FETCH of every body does not read and parse every message's
    // metadata too.
    let need = |n: &MessageDataItemName<'_>| match n {
        MessageDataItemName::Envelope
        | MessageDataItemName::BodyStructure
        | MessageDataItemName::Body
        | MessageDataItemName::Binary { .. }
        | MessageDataItemName::BinarySize { .. } => MetaNeed::All,
        MessageDataItemName::Rfc822Header | MessageDataItemName::Rfc822Text => MetaNeed::TopHeader,
        MessageDataItemName::BodyExt {
            section: Some(section),
            ..
        } => match section {
            Section::Header(None)
            | Section::Text(None)
            | Section::HeaderFields(None, _)
            | Section::HeaderFieldsNot(None, _) => MetaNeed::TopHeader,
            _ => MetaNeed::All,
        },
        _ => MetaNeed::None,
    };
    let meta = names.iter().map(need).max().unwrap_or(MetaNeed::None);
    (body, meta)
}

/// Whether fetching `names` sets \Seen (RFC 3501: BODY[...] without .PEEK, RFC822, RFC822.TEXT).
pub fn sets_seen(names: &[MessageDataItemName<'_>]) -> bool {
    names.iter().any(|n| {
        matches!(
            n,
            MessageDataItemName::BodyExt { peek: false, .. }
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Text
                | MessageDataItemName::Binary { peek: false, .. }
        )
    })
}

fn literal(bytes: &[u8]) -> NString<'static> {
    match Literal::try_from(bytes.to_vec()) {
        Ok(l) => NString(Some(IString::Literal(l))),
        // A NUL byte cannot travel in an IMAP literal: send it as a space, as Dovecot does.
        Err(_) => {
            let cleaned: Vec<u8> = bytes
                .iter()
                .map(|&b| if b == 0 { b' ' } else { b })
                .collect();
            Literal::try_from(cleaned)
                .map(|l| NString(Some(IString::Literal(l))))
                .unwrap_or(NString::NIL)
        }
    }
}

/// The `<start.count>` of a BODY or BINARY fetch, within the bytes there are.
fn cut<'b>(bytes: &'b [u8], partial: &Option<(u32, std::num::NonZeroU32)>) -> &'b [u8] {
    match partial {
        Some((start, count)) => {
            let start = (*start as usize).min(bytes.len());
            let end = start.saturating_add(count.get() as usize).min(bytes.len());
            &bytes[start..end]
        }
        None => bytes,
    }
}

fn slice(raw: &[u8], from: u32, to: u32) -> &[u8] {
    let len = raw.len();
    let (from, to) = ((from as usize).min(len), (to as usize).min(len));
    &raw[from..to.max(from)]
}

/// The header block (with its blank line) and text of a message starting at `root`.
fn header_of<'r>(raw: &'r [u8], root: &Structure) -> &'r [u8] {
    slice(raw, root.header_start, root.body_start)
}

fn text_of<'r>(raw: &'r [u8], root: &Structure) -> &'r [u8] {
    slice(raw, root.body_start, root.end)
}

/// The fields of a header block named (or, with `not`, not named) in `names`, followed by
/// the blank line.
fn header_fields(header: &[u8], names: &[AString<'_>], not: bool) -> Vec<u8> {
    let wanted = |line: &[u8]| {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        let name = String::from_utf8_lossy(name);
        let listed = names
            .iter()
            .any(|n| String::from_utf8_lossy(n.as_ref()).eq_ignore_ascii_case(name.trim()));
        listed != not
    };
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            keep = wanted(line);
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The bytes a BODY[section] names, or None when the section does not exist.
fn section_bytes(raw: &[u8], meta: &Meta, section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    let root = &meta.structure;
    let path = |part: &imap_next::imap_types::fetch::Part| -> Vec<u32> {
        part.0.as_ref().iter().map(|n| n.get()).collect()
    };
    // The message a HEADER/TEXT section refers to: the top one, or an attached one.
    let message_at = |part: Option<&imap_next::imap_types::fetch::Part>| -> Option<&Structure> {
        match part {
            None => Some(root),
            Some(p) => root
                .part(&path(p))?
                .message
                .as_ref()
                .map(|inner| &inner.structure),
        }
    };
    Some(match section {
        None => raw.to_vec(),
        Some(Section::Header(part)) => header_of(raw, message_at(part.as_ref())?).to_vec(),
        Some(Section::Text(part)) => text_of(raw, message_at(part.as_ref())?).to_vec(),
        Some(Section::HeaderFields(part, names)) => header_fields(
            header_of(raw, message_at(part.as_ref())?),
            names.as_ref(),
            false,
        ),
        Some(Section::HeaderFieldsNot(part, names)) => header_fields(
            header_of(raw, message_at(part.as_ref())?),
            names.as_ref(),
            true,
        ),
        Some(Section::Mime(part)) => {
            let p = root.part(&path(part))?;
            slice(raw, p.header_start, p.body_start).to_vec()
        }
        Some(Section::Part(part)) => {
            let p = root.part(&path(part))?;
            slice(raw, p.body_start, p.end).to_vec()
        }
    })
}

/// The FETCH items for one message, in the order asked (UID first for UID FETCH), from
/// its bytes and metadata when `needs` asked for them.
/// Why a FETCH must fail as a whole (RFC 3516 §4.3: a part BINARY cannot decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfetchable {
    UnknownCte,
    Corrupt,
}

impl Unfetchable {
    pub fn text(self) -> &'static str {
        match self {
            Unfetchable::UnknownCte => "[UNKNOWN-CTE] Cannot decode that part's transfer encoding",
            Unfetchable::Corrupt => "[PARSE] That part's transfer encoding is damaged",
        }
    }
}

/// What BINARY[section] names, its transfer encoding undone (RFC 3516 §4.2): the whole
/// message as it is for `[]`; a multipart or attached message as it is (MIME allows them
/// no encoding but identity); None when there is no such part.
fn binary_bytes(
    raw: &[u8],
    meta: &Meta,
    section: &[std::num::NonZeroU32],
) -> Result<Option<Vec<u8>>, Unfetchable> {
    if section.is_empty() {
        return Ok(Some(raw.to_vec()));
    }
    let path: Vec<u32> = section.iter().map(|n| n.get()).collect();
    let Some(part) = meta.structure.part(&path) else {
        return Ok(None);
    };
    let body = slice(raw, part.body_start, part.end);
    if part.is_multipart() || part.message.is_some() {
        return Ok(Some(body.to_vec()));
    }
    use mail_parser::decoders::{base64::base64_decode, quoted_printable::quoted_printable_decode};
    match part.encoding.as_str() {
        "7BIT" | "8BIT" | "BINARY" | "" => Ok(Some(body.to_vec())),
        "BASE64" => base64_decode(body).map(Some).ok_or(Unfetchable::Corrupt),
        "QUOTED-PRINTABLE" => quoted_printable_decode(body)
            .map(Some)
            .ok_or(Unfetchable::Corrupt),
        _ => Err(Unfetchable::UnknownCte),
    }
}

/// Decoded bytes travel as a literal8 (`~{n}`) only when they hold a NUL, which no
/// other string may (RFC 3516 §4.3).
fn binary_value(bytes: &[u8]) -> NString8<'static> {
    if bytes.contains(&0) {
        NString8::Literal8(Literal8 {
            data: std::borrow::Cow::Owned(bytes.to_vec()),
            mode: LiteralMode::Sync,
        })
    } else {
        NString8::NString(literal(bytes))
    }
}

pub fn items(
    info: &MessageInfo,
    flags: Vec<FlagFetch<'static>>,
    names: &[MessageDataItemName<'static>],
    uid_command: bool,
    body: Option<&[u8]>,
    meta: Option<&Meta>,
) -> Result<Vec<MessageDataItem<'static>>, Unfetchable> {
    let empty = Meta::default();
    let meta = meta.unwrap_or(&empty);
    let raw = body.unwrap_or_default();
    let mut out = Vec::new();
    let has_uid = names.iter().any(|n| matches!(n, MessageDataItemName::Uid));
    if uid_command && !has_uid {
        out.push(MessageDataItem::Uid(convert::nz(info.uid)));
    }
    for name in names {
        let item = match name {
            MessageDataItemName::Uid => MessageDataItem::Uid(convert::nz(info.uid)),
            MessageDataItemName::Flags => MessageDataItem::Flags(flags.clone()),
            MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(info.size as u32),
            MessageDataItemName::InternalDate => match convert::date(info.internal_date) {
                Some(d) => MessageDataItem::InternalDate(d),
                None => continue,
            },
            MessageDataItemName::ModSeq => {
                MessageDataItem::ModSeq(NonZeroU64::new(info.modseq).unwrap_or(NonZeroU64::MIN))
            }
            MessageDataItemName::Envelope => {
                MessageDataItem::Envelope(convert::envelope(&meta.envelope))
            }
            MessageDataItemName::BodyStructure => {
                MessageDataItem::BodyStructure(convert::body_structure(&meta.structure, true))
            }
            MessageDataItemName::Body => {
                MessageDataItem::Body(convert::body_structure(&meta.structure, false))
            }
            MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(literal(raw)),
            MessageDataItemName::Rfc822Header => {
                MessageDataItem::Rfc822Header(literal(header_of(raw, &meta.structure)))
            }
            MessageDataItemName::Rfc822Text => {
                MessageDataItem::Rfc822Text(literal(text_of(raw, &meta.structure)))
            }
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                let bytes = section_bytes(raw, meta, section.as_ref()).unwrap_or_default();
                let (origin, data) = match partial {
                    Some((start, _)) => (Some(*start), literal(cut(&bytes, partial))),
                    None => (None, literal(&bytes)),
                };
                MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin,
                    data,
                }
            }
            MessageDataItemName::Binary {
                section, partial, ..
            } => {
                let bytes = binary_bytes(raw, meta, section)?.unwrap_or_default();
                let bytes = cut(&bytes, partial);
                // RFC 3516's grammar has no origin octet in the answer: the client
                // knows where its partial began.
                MessageDataItem::Binary {
                    section: section.clone(),
                    value: binary_value(bytes),
                }
            }
            MessageDataItemName::BinarySize { section } => MessageDataItem::BinarySize {
                section: section.clone(),
                size: binary_bytes(raw, meta, section)?.map_or(0, |b| b.len() as u32),
            },
        };
        out.push(item);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sections_and_structure_items_read_the_metadata() {
        let whole = MessageDataItemName::BodyExt {
            section: None,
            partial: None,
            peek: true,
        };
        let header = MessageDataItemName::BodyExt {
            section: Some(Section::Header(None)),
            partial: None,
            peek: true,
        };
        let attached = MessageDataItemName::BodyExt {
            section: Some(Section::Header(Some(part(&[2])))),
            partial: None,
            peek: true,
        };
        assert_eq!(needs(std::slice::from_ref(&whole)), (true, MetaNeed::None));
        assert_eq!(
            needs(&[MessageDataItemName::Rfc822]),
            (true, MetaNeed::None)
        );
        assert_eq!(
            needs(std::slice::from_ref(&header)),
            (true, MetaNeed::TopHeader)
        );
        assert_eq!(
            needs(&[MessageDataItemName::Rfc822Header]),
            (true, MetaNeed::TopHeader)
        );
        // A part's header needs the structure, and so does anything asked beside it.
        assert_eq!(needs(&[attached]), (true, MetaNeed::All));
        assert_eq!(
            needs(&[header, MessageDataItemName::BodyStructure]),
            (true, MetaNeed::All)
        );
        assert_eq!(
            needs(&[MessageDataItemName::Envelope]),
            (false, MetaNeed::All)
        );
        assert_eq!(
            needs(&[MessageDataItemName::Flags]),
            (false, MetaNeed::None)
        );
    }

    #[test]
    fn header_fields_keep_folded_lines_and_end_with_a_blank_line() {
        let header = b"From: a\r\nSubject: one\r\n two\r\nTo: b\r\n\r\n";
        let names = [AString::try_from("subject").unwrap()];
        assert_eq!(
            header_fields(header, &names, false),
            b"Subject: one\r\n two\r\n\r\n"
        );
        assert_eq!(
            header_fields(header, &names, true),
            b"From: a\r\nTo: b\r\n\r\n"
        );
    }

    #[test]
    fn sections_cut_the_right_bytes() {
        let raw = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>second</p>\r\n--b--\r\n";
        let meta = Meta::of(raw);
        let part = |n: u32| {
            Section::Part(imap_next::imap_types::fetch::Part(
                imap_next::imap_types::core::Vec1::from(std::num::NonZeroU32::new(n).unwrap()),
            ))
        };
        assert_eq!(section_bytes(raw, &meta, Some(&part(1))).unwrap(), b"first");
        assert_eq!(
            section_bytes(raw, &meta, Some(&part(2))).unwrap(),
            b"<p>second</p>"
        );
        assert!(section_bytes(raw, &meta, Some(&part(3))).is_none());
        let header = section_bytes(raw, &meta, Some(&Section::Header(None))).unwrap();
        assert!(header.starts_with(b"Subject: x\r\n") && header.ends_with(b"\r\n\r\n"));
    }

    /// The header length kept beside the body cuts the top message's HEADER, TEXT and
    /// HEADER.FIELDS exactly where its metadata does, whatever the message's shape.
    #[test]
    fn the_kept_header_length_cuts_as_the_metadata_does() {
        let messages: [&[u8]; 8] = [
            b"Subject: x\r\nFrom: a@b.test\r\n\r\nbody\r\n",
            b"Subject: bare LF\nTo: c@d.test\n\nbody\n",
            b"Subject: no body\r\n\r\n",
            b"Subject: folded\r\n  on two lines\r\nX-A: 1\r\n\r\n\r\nstarts blank\r\n",
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b--\r\n",
            b"Subject: \"quoted\r\n\r\nstill header?\"\r\n\r\nbody\r\n",
            b"From: <a@b.test\r\n\r\nTo: broken\r\n\r\n",
            b"\r\n\r\nno header at all\r\n",
        ];
        let fields = Section::HeaderFields(
            None,
            imap_next::imap_types::core::Vec1::from(AString::try_from("Subject").unwrap()),
        );
        let mut kept = 0;
        for raw in messages {
            let full = Meta::of(raw);
            let Some(len) = full.header_len(raw.len()) else {
                continue;
            };
            kept += 1;
            let top = Meta::top_only(len, raw.len());
            for section in [Section::Header(None), Section::Text(None), fields.clone()] {
                assert_eq!(
                    section_bytes(raw, &top, Some(&section)),
                    section_bytes(raw, &full, Some(&section)),
                    "{section:?} of {:?}",
                    String::from_utf8_lossy(raw)
                );
            }
        }
        assert!(kept >= 6, "only {kept} messages had a header length kept");
    }

    fn part(path: &[u32]) -> imap_next::imap_types::fetch::Part {
        let numbers: Vec<_> = path
            .iter()
            .map(|&n| std::num::NonZeroU32::new(n).unwrap())
            .collect();
        imap_next::imap_types::fetch::Part(
            imap_next::imap_types::core::Vec1::try_from(numbers).unwrap(),
        )
    }

    /// RFC 3501 §6.4.5's rules for the parts of an attached message: 2.HEADER and
    /// 2.TEXT are its header and text, 2.1 its first part, 2.MIME the part's own header.
    #[test]
    fn sections_inside_an_attached_message() {
        let raw = b"From: a@b.test\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n\
--outer\r\nContent-Type: text/plain\r\n\r\nouter text\r\n\
--outer\r\nContent-Type: message/rfc822\r\n\r\n\
From: c@d.test\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n\
--inner\r\nContent-Type: text/plain\r\n\r\ninner plain\r\n\
--inner\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n--inner--\r\n\r\n--outer--\r\n";
        let meta = Meta::of(raw);
        let cut = |section: Section<'_>| {
            String::from_utf8(section_bytes(raw, &meta, Some(&section)).unwrap()).unwrap()
        };
        assert_eq!(
            cut(Section::Mime(part(&[2]))),
            "Content-Type: message/rfc822\r\n\r\n"
        );
        assert_eq!(
            cut(Section::Header(Some(part(&[2])))),
            "From: c@d.test\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
        );
        let text = cut(Section::Text(Some(part(&[2]))));
        assert!(
            text.starts_with("--inner\r\n") && text.ends_with("--inner--\r\n"),
            "{text:?}"
        );
        assert_eq!(cut(Section::Part(part(&[2, 1]))), "inner plain");
        assert_eq!(cut(Section::Part(part(&[2, 2]))), "<p>inner</p>");
        assert_eq!(
            cut(Section::Mime(part(&[2, 1]))),
            "Content-Type: text/plain\r\n\r\n"
        );
        let fields = Section::HeaderFields(
            Some(part(&[2])),
            imap_next::imap_types::core::Vec1::from(AString::try_from("subject").unwrap()),
        );
        assert_eq!(cut(fields), "Subject: inner\r\n\r\n");
        // Line counts of the text parts inside it.
        let inner = &meta
            .structure
            .part(&[2])
            .unwrap()
            .message
            .as_ref()
            .unwrap()
            .structure;
        assert_eq!(inner.part(&[1]).unwrap().lines, 1);
        assert!(meta.structure.part(&[2]).unwrap().lines > 5);
    }

    #[test]
    fn digest_parts_are_messages_by_default() {
        let raw = b"From: a@b.test\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n\
--d\r\n\r\nFrom: one@x.test\r\nSubject: first\r\n\r\nbody one\r\n\
--d\r\nContent-Type: text/plain\r\n\r\nnot a message\r\n--d--\r\n";
        let meta = Meta::of(raw);
        let first = meta.structure.part(&[1]).unwrap();
        assert_eq!(
            (first.kind.as_str(), first.subtype.as_str()),
            ("message", "rfc822")
        );
        let inner = first.message.as_ref().unwrap();
        assert_eq!(inner.envelope.subject.as_deref(), Some("first"));
        let cut = |section: Section<'_>| {
            String::from_utf8(section_bytes(raw, &meta, Some(&section)).unwrap()).unwrap()
        };
        // The line break before the boundary belongs to the boundary (RFC 2046 §5.1.1).
        assert_eq!(cut(Section::Text(Some(part(&[1])))), "body one");
        assert_eq!(cut(Section::Part(part(&[1, 1]))), "body one");
        let second = meta.structure.part(&[2]).unwrap();
        assert_eq!(
            (second.kind.as_str(), second.subtype.as_str()),
            ("text", "plain")
        );
    }
}
