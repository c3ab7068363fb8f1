//! The text after DATA: dot-unstuffed, ended by `<CRLF>.<CRLF>` and nothing else
//! (smtp-proto's receiver also ends it on `<CRLF>.<CR><CR><LF>`, an SMTP smuggling gap);
//! and the text we send so, stuffed (SMTP's DATA, POP3's multi-line responses).

use std::slice::Iter;

/// `data` as DATA (RFC 5321 §4.5.2) or a POP3 multi-line response (RFC 1939 §3) carries
/// it: a "." starting a line doubled, then the end mark after the text's own last CRLF
/// (one is added only where it has none).
pub fn stuffed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 5);
    let mut line_start = true;
    for &b in data {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Where the reader is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Just after CRLF (or at the very start): a dot here is stuffing, or the end.
    LineStart,
    /// Inside a line.
    Text,
    /// After a CR inside a line.
    Cr,
    /// After a dot at the start of a line (the dot is dropped).
    Dot,
    /// After `.` `CR` at the start of a line: LF now ends the message.
    DotCr,
}

/// Reads one message's DATA. Bytes past `limit` are read (to find the end) but not kept.
#[derive(Debug)]
pub struct DataReader {
    at: At,
    limit: usize,
    overflowed: bool,
}

impl DataReader {
    pub fn new(limit: u64) -> DataReader {
        DataReader {
            at: At::LineStart,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            overflowed: false,
        }
    }

    /// Keeps no more bytes: the rest is read only to find the end.
    pub fn keep_nothing(&mut self) {
        self.limit = 0;
    }

    /// Whether the message went past the limit (its body then holds only the start).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Takes bytes from `input` into `body` until the end of the message (true) or of
    /// the input (false); what follows the end stays in `input`, for the next command.
    /// A bare CR or LF is kept as it came: the caller refuses the message for it.
    pub fn ingest(&mut self, input: &mut Iter<'_, u8>, body: &mut Vec<u8>) -> bool {
        let mut rest = input.as_slice();
        while !rest.is_empty() {
            if self.at == At::Text {
                // The bulk of a line in one copy, up to its line feed.
                let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                self.keep(body, &rest[..end]);
                rest = &rest[end..];
                let Some((&b, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                self.keep(body, &[b]);
                self.at = if b == b'\r' { At::Cr } else { At::Text };
                continue;
            }
            let Some((&b, tail)) = rest.split_first() else {
                break;
            };
            rest = tail;
            self.at = match (self.at, b) {
                (At::LineStart, b'.') => At::Dot,
                (At::Dot, b'\r') => At::DotCr,
                (At::DotCr, b'\n') => {
                    *input = rest.iter();
                    return true;
                }
                (At::DotCr, _) => {
                    // `.` CR then something else: the CR was text (a bare one).
                    self.keep(body, b"\r");
                    self.after_text(body, b)
                }
                (At::Cr, b'\n') => {
                    self.keep(body, b"\n");
                    At::LineStart
                }
                (_, b) => self.after_text(body, b),
            };
        }
        *input = rest.iter();
        false
    }

    fn after_text(&mut self, body: &mut Vec<u8>, b: u8) -> At {
        self.keep(body, &[b]);
        if b == b'\r' { At::Cr } else { At::Text }
    }

    fn keep(&mut self, body: &mut Vec<u8>, bytes: &[u8]) {
        if body.len() + bytes.len() > self.limit {
            self.overflowed = true;
        } else {
            body.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffed_doubles_leading_dots_and_adds_no_blank_line() {
        assert_eq!(stuffed(b".a\r\nb\r\n..c\r\n"), b"..a\r\nb\r\n...c\r\n.\r\n");
        assert_eq!(stuffed(b"no end"), b"no end\r\n.\r\n");
    }

    /// Feeds `wire` in pieces of `step` bytes; the body and what is left after the end.
    fn read(wire: &[u8], step: usize) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut reader = DataReader::new(1 << 20);
        let mut body = Vec::new();
        let mut after = Vec::new();
        let mut done = false;
        for piece in wire.chunks(step) {
            if done {
                after.extend_from_slice(piece);
                continue;
            }
            let mut input = piece.iter();
            if reader.ingest(&mut input, &mut body) {
                done = true;
                after.extend_from_slice(input.as_slice());
            }
        }
        (body, done.then_some(after))
    }

    #[test]
    fn ends_only_on_crlf_dot_crlf_in_any_split() {
        for step in [1, 2, 3, 7, 1000] {
            let (body, after) = read(b"a\r\n..b\r\n.\r\nQUIT\r\n", step);
            assert_eq!(body, b"a\r\n.b\r\n", "step {step}");
            assert_eq!(after.as_deref(), Some(&b"QUIT\r\n"[..]), "step {step}");
            // An empty message.
            let (body, after) = read(b".\r\nNOOP\r\n", step);
            assert!(body.is_empty());
            assert_eq!(after.as_deref(), Some(&b"NOOP\r\n"[..]));
        }
    }

    #[test]
    fn smuggling_endings_are_message_text() {
        for ending in [
            &b"\r\n.\r\r\n"[..],
            b"\r\n.\r\r\r\n",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
        ] {
            for step in [1, 2, 5, 1000] {
                let mut wire = b"x".to_vec();
                wire.extend_from_slice(ending);
                wire.extend_from_slice(b"MAIL FROM:<ceo@x.test>\r\n");
                let (body, after) = read(&wire, step);
                assert!(
                    after.is_none(),
                    "{ending:?} ended the message (step {step})"
                );
                assert!(
                    crate::mime::has_bare_line_ending(&body),
                    "{ending:?}: {body:?}"
                );
                // The real end still ends it, and the smuggled line stays text.
                wire.extend_from_slice(b".\r\n");
                let (body, after) = read(&wire, step);
                assert_eq!(after.as_deref(), Some(&b""[..]));
                assert!(body.ends_with(b"MAIL FROM:<ceo@x.test>\r\n"));
            }
        }
    }

    #[test]
    fn past_the_limit_the_end_is_still_found() {
        let mut reader = DataReader::new(4);
        let mut body = Vec::new();
        let mut input = b"0123456789\r\n.\r\nNOOP\r\n".iter();
        assert!(reader.ingest(&mut input, &mut body));
        assert!(reader.overflowed());
        assert!(body.len() <= 4);
        assert_eq!(input.as_slice(), b"NOOP\r\n");
    }
}
