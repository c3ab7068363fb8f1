//! FETCH responses for metadata-only FETCHes (UID, FLAGS, RFC822.SIZE, ENVELOPE, MODSEQ)
//! written straight to bytes. A client syncing a folder asks exactly that of every message,
//! and building imap-types values only to encode them was most of the time it took. The
//! bytes are imap-codec's own encoding of the same items (a test holds them equal).

use std::io::Write;

use imap_next::imap_types::fetch::MessageDataItemName;
use imap_next::imap_types::flag::{Flag, FlagFetch};

use crate::mailbox::MessageInfo;
use crate::mailbox::meta::{Address, Envelope, Meta};

/// Whether every item of `names` can be written here.
pub fn simple(names: &[MessageDataItemName<'_>]) -> bool {
    names.iter().all(|n| {
        matches!(
            n,
            MessageDataItemName::Uid
                | MessageDataItemName::Flags
                | MessageDataItemName::Rfc822Size
                | MessageDataItemName::Envelope
                | MessageDataItemName::ModSeq
        )
    })
}

/// Appends `* seq FETCH (...)` for one message, its items in the order asked (UID first
/// for a UID FETCH that did not name it, as `fetch::items` does). `names` must be `simple`.
pub fn write(
    out: &mut Vec<u8>,
    seq: u32,
    info: &MessageInfo,
    flags: &[FlagFetch<'_>],
    names: &[MessageDataItemName<'_>],
    uid_command: bool,
    meta: Option<&Meta>,
) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(b"* ");
    out.extend_from_slice(digits.format(seq).as_bytes());
    out.extend_from_slice(b" FETCH (");
    let mut first = true;
    let mut item = |out: &mut Vec<u8>| {
        if !first {
            out.push(b' ');
        }
        first = false;
    };
    if uid_command && !names.iter().any(|n| matches!(n, MessageDataItemName::Uid)) {
        item(out);
        out.extend_from_slice(b"UID ");
        out.extend_from_slice(digits.format(info.uid.max(1)).as_bytes());
    }
    for name in names {
        item(out);
        match name {
            MessageDataItemName::Uid => {
                out.extend_from_slice(b"UID ");
                out.extend_from_slice(digits.format(info.uid.max(1)).as_bytes());
            }
            MessageDataItemName::Flags => {
                out.extend_from_slice(b"FLAGS (");
                for (i, flag) in flags.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    match flag {
                        FlagFetch::Flag(Flag::Seen) => out.extend_from_slice(b"\\Seen"),
                        FlagFetch::Flag(Flag::Answered) => out.extend_from_slice(b"\\Answered"),
                        FlagFetch::Flag(Flag::Flagged) => out.extend_from_slice(b"\\Flagged"),
                        FlagFetch::Flag(Flag::Deleted) => out.extend_from_slice(b"\\Deleted"),
                        FlagFetch::Flag(Flag::Draft) => out.extend_from_slice(b"\\Draft"),
                        FlagFetch::Flag(Flag::Keyword(k)) => {
                            out.extend_from_slice(k.as_ref().as_bytes())
                        }
                        FlagFetch::Flag(f) => {
                            let _ = write!(out, "{f}");
                        }
                        FlagFetch::Recent => out.extend_from_slice(b"\\Recent"),
                    }
                }
                out.push(b')');
            }
            MessageDataItemName::Rfc822Size => {
                out.extend_from_slice(b"RFC822.SIZE ");
                out.extend_from_slice(digits.format(info.size as u32).as_bytes());
            }
            MessageDataItemName::ModSeq => {
                out.extend_from_slice(b"MODSEQ (");
                out.extend_from_slice(digits.format(info.modseq.max(1)).as_bytes());
                out.push(b')');
            }
            MessageDataItemName::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                let empty = Envelope::default();
                envelope(out, meta.map_or(&empty, |m| &m.envelope));
            }
            _ => {}
        }
    }
    out.extend_from_slice(b")\r\n");
}

fn envelope(out: &mut Vec<u8>, e: &Envelope) {
    out.push(b'(');
    nstring(out, e.date.as_deref());
    out.push(b' ');
    nstring(out, e.subject.as_deref());
    for list in [&e.from, &e.sender, &e.reply_to, &e.to, &e.cc, &e.bcc] {
        out.push(b' ');
        addresses(out, list);
    }
    out.push(b' ');
    nstring(out, e.in_reply_to.as_deref());
    out.push(b' ');
    nstring(out, e.message_id.as_deref());
    out.push(b')');
}

fn addresses(out: &mut Vec<u8>, list: &[Address]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        let name = a.name.as_deref().map(super::convert::display_name);
        nstring(out, name.as_deref());
        out.push(b' ');
        nstring(out, a.route.as_deref());
        out.push(b' ');
        nstring(out, a.mailbox.as_deref());
        out.push(b' ');
        nstring(out, a.host.as_deref());
        out.push(b')');
    }
    out.push(b')');
}

/// As imap-types makes an nstring of a String: quoted when every byte is a TEXT-CHAR,
/// a literal when there is no NUL, NIL otherwise.
fn nstring(out: &mut Vec<u8>, value: Option<&str>) {
    let Some(value) = value else {
        out.extend_from_slice(b"NIL");
        return;
    };
    let bytes = value.as_bytes();
    if bytes
        .iter()
        .all(|&b| matches!(b, 0x01..=0x09 | 0x0b..=0x0c | 0x0e..=0x7f))
    {
        // Copied in runs between the bytes to escape: byte by byte was a tenth of a
        // FETCH of every envelope.
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        let mut run = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'"' || b == b'\\' {
                out.extend_from_slice(&bytes[run..i]);
                out.push(b'\\');
                run = i;
            }
        }
        out.extend_from_slice(&bytes[run..]);
        out.push(b'"');
    } else if !bytes.contains(&0) {
        let _ = write!(out, "{{{}}}\r\n", bytes.len());
        out.extend_from_slice(bytes);
    } else {
        out.extend_from_slice(b"NIL");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::ResponseCodec;
    use imap_codec::encode::Encoder;
    use imap_next::imap_types::core::Vec1;
    use imap_next::imap_types::response::{Data, Response};

    fn info(uid: u32, flags: &[&str]) -> MessageInfo {
        MessageInfo {
            uid,
            size: 1234,
            internal_date: 1_700_000_000,
            modseq: 42,
            flags: flags.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// The same items through imap-types and imap-codec, as `fetch::items` makes them.
    fn codec(
        seq: u32,
        info: &MessageInfo,
        flags: Vec<FlagFetch<'static>>,
        names: &[MessageDataItemName<'static>],
        uid: bool,
        meta: &Meta,
    ) -> Vec<u8> {
        let items =
            super::super::fetch::items(info, flags, names, uid, None, Some(meta)).expect("items");
        let data = Data::Fetch {
            seq: std::num::NonZeroU32::new(seq).unwrap(),
            items: Vec1::try_from(items).unwrap(),
        };
        ResponseCodec::default()
            .encode(&Response::Data(data))
            .dump()
    }

    /// Messages whose envelopes need every form: quoted with escapes, literals (CR LF,
    /// 8-bit text), NIL (a NUL, absent fields), groups, routes, non-ASCII names.
    #[test]
    fn lines_equal_imap_codecs_encoding() {
        let raws: [&[u8]; 5] = [
            b"From: Alice <alice@example.test>\r\nTo: bob@example.test, \"Q \\\"uote\\\"\" <q@x.test>\r\n\
Subject: plain \"quoted\" \\ back\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n",
            "From: Jürgen <j@example.test>\r\nSubject: Grüße\r\nCc: group: a@b.test, c@d.test;\r\n\r\nx\r\n"
                .as_bytes(),
            b"From: <@route1,@route2:user@host.test>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nIn-Reply-To: <x@y>\r\n\r\n",
            b"Subject: folded\r\n line\r\nReply-To: empty: ;\r\n\r\n",
            b"\r\nno header at all\r\n",
        ];
        let names = [
            MessageDataItemName::Uid,
            MessageDataItemName::Flags,
            MessageDataItemName::Rfc822Size,
            MessageDataItemName::Envelope,
            MessageDataItemName::ModSeq,
        ];
        for (n, raw) in raws.iter().enumerate() {
            let meta = Meta::of(raw);
            let info = info(n as u32 + 7, &["\\Seen", "$Label"]);
            for flags in [
                vec![],
                vec![FlagFetch::Flag(Flag::Seen), FlagFetch::Recent],
                // Every kind of flag: system, keyword, and an extension (`\\Foo`).
                [
                    "\\Answered",
                    "\\Flagged",
                    "\\Deleted",
                    "\\Draft",
                    "$Label",
                    "\\Future",
                ]
                .iter()
                .map(|f| FlagFetch::Flag(Flag::try_from(*f).unwrap()))
                .collect(),
            ] {
                for (names, uid) in [
                    (&names[..], false),
                    (&names[1..4], true),
                    (&names[3..4], false),
                    (&names[..2], true),
                ] {
                    let want = codec(3, &info, flags.clone(), names, uid, &meta);
                    let mut got = Vec::new();
                    write(&mut got, 3, &info, &flags, names, uid, Some(&meta));
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&want),
                        "message {n}"
                    );
                }
            }
        }
        // A NUL in a field: NIL, as imap-types makes of it.
        let mut meta = Meta::of(b"Subject: x\r\n\r\n");
        meta.envelope.subject = Some("nul\0inside".into());
        meta.envelope.date = Some("line\r\nbreak".into());
        let info = info(1, &[]);
        let want = codec(1, &info, vec![], &names[3..4], false, &meta);
        let mut got = Vec::new();
        write(&mut got, 1, &info, &[], &names[3..4], false, Some(&meta));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    }
}
