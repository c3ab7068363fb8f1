//! mail-parser behind one entry point that a stranger's nesting cannot crash: it parses
//! without recursion, but dropping a message nested a million deep would recurse.

use std::ops::Deref;

pub mod downgrade;
pub mod encode;

use mail_parser::{Message, MessageParser, PartType};

/// A lone CR or LF (not part of a CRLF): the raw material of SMTP smuggling, refused at
/// DATA, and text whose lines the parsers would split otherwise than we do.
pub fn has_bare_line_ending(data: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', data).any(|at| at == 0 || data[at - 1] != b'\r')
        || memchr::memchr_iter(b'\r', data).any(|at| data.get(at + 1) != Some(&b'\n'))
}

/// The header section's fields as byte ranges (each with its folded lines and final
/// CRLF), and the offset of the blank line that ends the section (the end of `raw` when
/// there is none).
pub fn header_fields(raw: &[u8]) -> (Vec<std::ops::Range<usize>>, usize) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 2);
    let mut fields = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while at < end {
        let line_end = raw[at..end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(end, |p| at + p + 1);
        if line_end < end && matches!(raw[line_end], b' ' | b'\t') {
            at = line_end;
            continue;
        }
        fields.push(start..line_end);
        start = line_end;
        at = line_end;
    }
    (fields, end)
}

/// `message` without the header fields `drop` picks (given each whole field); the same
/// bytes when it picks none.
pub fn without_fields(message: Vec<u8>, drop: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let (fields, end) = header_fields(&message);
    if !fields.iter().any(|f| drop(&message[f.clone()])) {
        return message;
    }
    let mut out = Vec::with_capacity(message.len());
    for f in fields {
        if !drop(&message[f.clone()]) {
            out.extend_from_slice(&message[f]);
        }
    }
    out.extend_from_slice(&message[end..]);
    out
}

/// The values (what follows the colon, folded lines and all) of the header fields named
/// `name`, in order.
pub fn field_values<'a>(raw: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let (fields, _) = header_fields(raw);
    fields.into_iter().filter_map(move |range| {
        let field = &raw[range];
        let found = field_name(field);
        found
            .eq_ignore_ascii_case(name)
            .then(|| field.get(found.len() + 1..).unwrap_or_default())
    })
}

/// A field's name, as it is written (before the colon, trailing blanks removed).
pub fn field_name(field: &[u8]) -> &[u8] {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    let mut name = &field[..colon];
    while let [rest @ .., b' ' | b'\t'] = name {
        name = rest;
    }
    name
}

/// A parsed message, taken apart level by level when dropped. Every full parse of a
/// message from the network goes through `parse`.
pub struct Parsed<'x>(Option<Message<'x>>);

/// Parses `raw` (headers and body); None when it has no header at all.
pub fn parse(raw: &[u8]) -> Option<Parsed<'_>> {
    MessageParser::new().parse(raw).map(|m| Parsed(Some(m)))
}

impl<'x> Deref for Parsed<'x> {
    type Target = Message<'x>;

    fn deref(&self) -> &Message<'x> {
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("emptied only when dropped"))
    }
}

impl Drop for Parsed<'_> {
    fn drop(&mut self) {
        let mut pending: Vec<Message<'_>> = self.0.take().into_iter().collect();
        while let Some(mut message) = pending.pop() {
            for part in &mut message.parts {
                if let PartType::Message(_) = part.body
                    && let PartType::Message(inner) = std::mem::take(&mut part.body)
                {
                    pending.push(inner);
                }
            }
            // Dropped here with no message left inside it: one level deep.
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_fields_keep_their_folded_lines() {
        let raw = b"A: 1\r\n\t2\r\nB : x\r\n\r\nC: body\r\n";
        let (fields, end) = super::header_fields(raw);
        assert_eq!(fields, [0..10, 10..17]);
        assert_eq!(end, 17);
        assert_eq!(super::field_name(&raw[fields[1].clone()]), b"B");
        let (fields, end) = super::header_fields(b"A: 1\r\nB: 2");
        assert_eq!((fields, end), (vec![0..6, 6..10], 10));
    }

    use super::*;

    #[test]
    fn a_message_nested_a_hundred_thousand_deep_is_dropped_on_a_small_stack() {
        let mut raw = String::from("From: a@b.test\r\n");
        for _ in 0..100_000 {
            raw.push_str("Content-Type: message/rfc822\r\n\r\n");
        }
        raw.push_str("Subject: end\r\n\r\nhello\r\n");
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let parsed = parse(raw.as_bytes()).expect("parsed");
                assert_eq!(parsed.parts.len(), 1);
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
    }
}
