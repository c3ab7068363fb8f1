//! mail-parser behind one entry point that a stranger's nesting cannot crash: it parses
//! without recursion, but dropping a message nested a million deep would recurse.

use std::ops::Deref;

use mail_parser::{Message, MessageParser, PartType};

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
