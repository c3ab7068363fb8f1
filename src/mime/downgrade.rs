//! The 7-bit copy of a message, for a next hop without 8BITMIME or SMTPUTF8 and for lines
//! over 998: parts re-encoded, long header lines folded, UTF-8 words RFC 2047-encoded.
//!
//! The copy is a pure function of the bytes, field by field and part by part: the copy
//! sealed on arrival is rebuilt byte for byte at delivery, above trace fields added since.

use std::borrow::Cow;

use mail_parser::{Address, MessageParser, MimeHeaders};

use super::encode;

/// Longest line, without its CRLF (RFC 5322 §2.1.1, RFC 5321 §4.5.3.1.6).
pub const MAX_LINE: usize = 998;

/// Multipart and message levels followed; a copy that must change a part deeper down is
/// not made.
const MAX_DEPTH: usize = 32;

/// What a message needs of the next hop, as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// A byte over 127, or NUL, below the header section: BODY=8BITMIME (RFC 6152).
    pub eight_bit_body: bool,
    /// A byte over 127 in the header section: SMTPUTF8 (RFC 6531).
    pub utf8_header: bool,
    /// A line over 998 characters, which no next hop may be sent.
    pub long_lines: bool,
    /// A NUL below the header section: 8bit data may not have one (RFC 2045 §2.8), so
    /// only BINARYMIME, which ferrymail does not use, could carry it as it is.
    pub nul: bool,
}

impl Shape {
    pub fn of(raw: &[u8]) -> Shape {
        let (header_end, _) = split(raw);
        let body = &raw[header_end..];
        let nul = memchr::memchr(0, body).is_some();
        Shape {
            eight_bit_body: nul || !body.is_ascii(),
            utf8_header: !raw[..header_end].is_ascii(),
            long_lines: has_long_line(raw),
            nul,
        }
    }

    /// Goes to any next hop as it is.
    pub fn seven_bit_safe(&self) -> bool {
        !self.eight_bit_body && !self.utf8_header && !self.long_lines
    }

    /// Must not go as it is to any next hop, whatever it offers.
    pub fn must_change(&self) -> bool {
        self.long_lines || self.nul
    }
}

fn has_long_line(data: &[u8]) -> bool {
    let mut start = 0;
    for at in memchr::memchr_iter(b'\n', data) {
        if at - start > MAX_LINE + 1 {
            return true;
        }
        start = at + 1;
    }
    data.len() - start > MAX_LINE
}

/// Why no 7-bit copy can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Cannot {
    #[error("a part to re-encode is nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
    #[error("a part in the \"{0}\" transfer encoding has 8-bit data or lines over 998")]
    UnknownEncoding(String),
    #[error("a multipart part with 8-bit data or lines over 998 has no boundary line")]
    NoBoundary,
    #[error(
        "a {0} part, which may not be encoded (RFC 2046 §5.2), has 8-bit data or lines over 998"
    )]
    Unencodable(String),
    /// Mail is refused with one at DATA; the copy's lines are CRLF's, as the parsers' are.
    #[error("it has a CR or LF that is not part of a CRLF")]
    BareLineEnding,
}

/// The 7-bit copy: None when it would be the same bytes (nothing to change, or nothing
/// that could be). UTF-8 that only SMTPUTF8 carries (an address, a trace field) and a
/// header line with nowhere to fold stay; `Shape::of` the copy tells.
pub fn downgrade(raw: &[u8]) -> Result<Option<Vec<u8>>, Cannot> {
    if Shape::of(raw).seven_bit_safe() {
        return Ok(None);
    }
    if super::has_bare_line_ending(raw) {
        return Err(Cannot::BareLineEnding);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 2);
    entity(raw, 0, Untyped::text(), &mut out)?;
    Ok((out != raw).then_some(out))
}

/// Where a header section ends (after its last field's CRLF) and where the body starts
/// (after the blank line); both the end of `raw` when there is no blank line.
fn split(raw: &[u8]) -> (usize, usize) {
    if raw.starts_with(b"\r\n") {
        return (0, 2);
    }
    match memchr::memmem::find(raw, b"\r\n\r\n") {
        Some(at) => (at + 2, at + 4),
        None => (raw.len(), raw.len()),
    }
}

/// The type a part has when it names none (RFC 2046 §5.1.5: message/rfc822 inside
/// multipart/digest, text/plain elsewhere).
#[derive(Clone, Copy)]
struct Untyped {
    message: bool,
}

impl Untyped {
    fn text() -> Untyped {
        Untyped { message: false }
    }
}

/// What a part is, for re-encoding.
enum Kind {
    Multipart {
        boundary: Vec<u8>,
        digest: bool,
    },
    Message,
    Leaf {
        text: bool,
    },
    /// message/partial and message/external-body (7bit only), and a multipart with no
    /// boundary: nothing in them can be re-encoded.
    Opaque(String),
}

/// How a part's body is encoded now.
enum Encoding {
    /// None given, 7bit, 8bit or binary: the body is its content.
    Identity,
    QuotedPrintable,
    Base64,
    Other(String),
}

fn kind_and_encoding(header: &[u8], untyped: Untyped) -> (Kind, Encoding) {
    let mut section = header.to_vec();
    section.extend_from_slice(b"\r\n");
    let parsed = MessageParser::new().parse_headers(&section);
    let cte = parsed
        .as_ref()
        .and_then(|m| m.content_transfer_encoding())
        .map(|c| c.trim().to_ascii_lowercase());
    let encoding = match cte.as_deref() {
        None | Some("7bit" | "8bit" | "binary" | "") => Encoding::Identity,
        Some("quoted-printable") => Encoding::QuotedPrintable,
        Some("base64") => Encoding::Base64,
        Some(other) => Encoding::Other(other.to_string()),
    };
    let content_type = parsed.as_ref().and_then(|m| m.content_type());
    let kind = match content_type {
        None if untyped.message => Kind::Message,
        None => Kind::Leaf { text: true },
        Some(ct) => {
            let (main, sub) = (ct.ctype(), ct.subtype().unwrap_or_default());
            if main.eq_ignore_ascii_case("multipart") {
                match ct.attribute("boundary") {
                    Some(b) if !b.is_empty() => Kind::Multipart {
                        boundary: b.as_bytes().to_vec(),
                        digest: sub.eq_ignore_ascii_case("digest"),
                    },
                    _ => Kind::Opaque(format!("multipart/{sub} without a boundary")),
                }
            } else if main.eq_ignore_ascii_case("message") && sub.eq_ignore_ascii_case("rfc822") {
                Kind::Message
            } else if main.eq_ignore_ascii_case("message")
                && (sub.eq_ignore_ascii_case("partial")
                    || sub.eq_ignore_ascii_case("external-body"))
            {
                Kind::Opaque(format!("message/{}", sub.to_ascii_lowercase()))
            } else {
                Kind::Leaf {
                    text: main.eq_ignore_ascii_case("text"),
                }
            }
        }
    };
    (kind, encoding)
}

/// Data that cannot go as it is: 8-bit, NUL or a long line.
fn unfit(data: &[u8]) -> bool {
    data.iter().any(|&b| b >= 0x80 || b == 0) || has_long_line(data)
}

/// How an entity's body is written in the copy.
enum Plan {
    /// Its parts are made fit; it stays as it is (7bit, or 8bit where a part's header
    /// keeps 8-bit).
    Container,
    QuotedPrintable,
    Base64,
    MendQuotedPrintable,
    MendBase64,
}

/// One entity (the message, a part, an attached message): its fields, then its body,
/// written straight into `out` (a level copies nothing of the levels below it).
fn entity(raw: &[u8], depth: usize, untyped: Untyped, out: &mut Vec<u8>) -> Result<(), Cannot> {
    let (header_end, body_start) = split(raw);
    let (header, body) = (&raw[..header_end], &raw[body_start..]);
    let (kind, encoding) = kind_and_encoding(header, untyped);
    if !unfit(body) {
        fields(header, None, out);
        out.extend_from_slice(&raw[header_end..]);
        return Ok(());
    }
    let plan = match (&kind, encoding) {
        // Multipart and message/rfc822 bodies cannot be encoded (RFC 2045 §6.4): their
        // parts are. A multipart's label is ignored by readers; an attached message
        // labelled encoded anyway is decoded by them, so it is mended as its label says.
        (Kind::Multipart { .. }, _) | (Kind::Message, Encoding::Identity) if depth >= MAX_DEPTH => {
            return Err(Cannot::TooDeep);
        }
        (Kind::Multipart { .. }, _) | (Kind::Message, Encoding::Identity) => Plan::Container,
        (Kind::Opaque(what), _) => return Err(Cannot::Unencodable(what.clone())),
        (Kind::Leaf { text }, Encoding::Identity) => {
            // Text stays readable in quoted-printable unless base64 is the smaller (QP
            // writes an 8-bit byte in 3, base64 every byte in 4/3); anything else is base64.
            let eight_bit = body.iter().filter(|&&b| b >= 0x80).count();
            if *text && eight_bit * 6 < body.len() {
                Plan::QuotedPrintable
            } else {
                Plan::Base64
            }
        }
        (_, Encoding::QuotedPrintable) => Plan::MendQuotedPrintable,
        (_, Encoding::Base64) => Plan::MendBase64,
        (_, Encoding::Other(name)) => return Err(Cannot::UnknownEncoding(name)),
    };
    let cte = match plan {
        Plan::Container => "7bit",
        Plan::QuotedPrintable | Plan::MendQuotedPrintable => "quoted-printable",
        Plan::Base64 | Plan::MendBase64 => "base64",
    };
    let cte_at = fields(header, Some(cte), out);
    out.extend_from_slice(&raw[header_end..body_start]);
    if header_end == body_start {
        // Fields only: the body written needs the blank line before it.
        out.extend_from_slice(b"\r\n");
    }
    let body_at = out.len();
    match plan {
        Plan::Container => {
            match kind {
                Kind::Multipart { boundary, digest } => {
                    multipart(body, &boundary, digest, depth + 1, out)?
                }
                _ => entity(body, depth + 1, Untyped::text(), out)?,
            }
            // A part's header that keeps 8-bit (a raw UTF-8 file name) or a NUL is
            // labelled so.
            let kept = &out[body_at..];
            if (!kept.is_ascii() || memchr::memchr(0, kept).is_some())
                && let Some(at) = cte_at
            {
                out[at..at + 4].copy_from_slice(b"8bit");
            }
        }
        Plan::QuotedPrintable => encode::quoted_printable(body, out),
        Plan::Base64 => encode::base64_lines(body, out),
        Plan::MendQuotedPrintable => encode::mend_quoted_printable(body, out),
        Plan::MendBase64 => encode::mend_base64(body, out),
    }
    Ok(())
}

/// A multipart body, delimiter lines kept as they are and each part made fit. A preamble
/// or epilogue that is unfit is left out: readers ignore both (RFC 2046 §5.1.1).
fn multipart(
    body: &[u8],
    boundary: &[u8],
    digest: bool,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), Cannot> {
    let delimiters = delimiter_lines(body, boundary);
    let Some(first) = delimiters.first() else {
        return Err(Cannot::NoBoundary);
    };
    // The CRLF before a delimiter line is the delimiter's (RFC 2046 §5.1.1).
    let before = |start: usize| if start >= 2 { start - 2 } else { start };
    let preamble = &body[..before(first.start)];
    if !unfit(preamble) {
        out.extend_from_slice(&body[..first.start]);
    }
    let untyped = Untyped { message: digest };
    for (i, line) in delimiters.iter().enumerate() {
        out.extend_from_slice(&body[line.start..line.end]);
        if line.close {
            let epilogue = &body[line.end..];
            if !unfit(epilogue) {
                out.extend_from_slice(epilogue);
            }
            break;
        }
        let end = delimiters
            .get(i + 1)
            .map_or(body.len(), |next| before(next.start).max(line.end));
        entity(&body[line.end..end], depth, untyped, out)?;
        out.extend_from_slice(&body[end..delimiters.get(i + 1).map_or(end, |n| n.start)]);
    }
    Ok(())
}

struct Delimiter {
    start: usize,
    /// After its CRLF (or the end of the body).
    end: usize,
    close: bool,
}

/// The lines "--boundary" (blanks after it allowed) and "--boundary--" (anything after
/// it: readers take it as the end), RFC 2046 §5.1.1. Found by searching for the
/// boundary, not line by line, so a body of many short lines costs no more.
fn delimiter_lines(body: &[u8], boundary: &[u8]) -> Vec<Delimiter> {
    let mut dashed = b"--".to_vec();
    dashed.extend_from_slice(boundary);
    let mut found = Vec::new();
    for start in memchr::memmem::find_iter(body, &dashed) {
        if start > 0 && body[start - 1] != b'\n' {
            continue;
        }
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |p| start + p + 1);
        // A boundary with a line break in it (RFC 2231 lets a parameter spell one) is
        // no delimiter: the line ends inside it.
        let Some(rest) = body[start..end].get(dashed.len()..) else {
            continue;
        };
        let rest = rest.strip_suffix(b"\r\n").unwrap_or(rest);
        if rest.starts_with(b"--") {
            found.push(Delimiter {
                start,
                end,
                close: true,
            });
            break;
        }
        if rest.iter().all(|b| matches!(b, b' ' | b'\t')) {
            found.push(Delimiter {
                start,
                end,
                close: false,
            });
        }
    }
    found
}

/// Fields whose 8-bit text is words for people (RFC 5322 unstructured), which encoded-
/// words carry.
fn unstructured(name: &[u8]) -> bool {
    ["subject", "comments", "content-description", "thread-topic"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        || (name.len() > 2 && name[..2].eq_ignore_ascii_case(b"x-"))
}

/// Fields of addresses whose display names encoded-words carry.
fn addresses(name: &[u8]) -> bool {
    [
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "sender",
        "resent-from",
        "resent-to",
        "resent-cc",
        "resent-sender",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// The header fields, each made fit where it can be, with Content-Transfer-Encoding set
/// to `cte` when given (added when there was none). Returns where its value was written.
fn fields(header: &[u8], cte: Option<&str>, out: &mut Vec<u8>) -> Option<usize> {
    const CTE: &str = "Content-Transfer-Encoding: ";
    let (ranges, _) = super::header_fields(header);
    let mut cte_at = None;
    for range in ranges {
        let field = &header[range];
        let name = super::field_name(field);
        if let Some(cte) = cte
            && name.eq_ignore_ascii_case(b"content-transfer-encoding")
        {
            if cte_at.is_none() {
                cte_at = Some(out.len() + CTE.len());
                out.extend_from_slice(format!("{CTE}{cte}\r\n").as_bytes());
            }
            continue;
        }
        out.extend_from_slice(&fit_field(field, name));
    }
    if let Some(cte) = cte
        && cte_at.is_none()
    {
        cte_at = Some(out.len() + CTE.len());
        out.extend_from_slice(format!("{CTE}{cte}\r\n").as_bytes());
    }
    cte_at
}

/// One field made 7-bit and folded where it can be; the same bytes where nothing needs it.
fn fit_field<'a>(field: &'a [u8], name: &[u8]) -> Cow<'a, [u8]> {
    // A line without a colon is no field to write again (it would gain one, and grow
    // each time the copy is made).
    if (field.is_ascii() && !has_long_line(field)) || memchr::memchr(b':', field).is_none() {
        return Cow::Borrowed(field);
    }
    let value = &field[name.len()..];
    let value = value.strip_prefix(b":").unwrap_or(value);
    let encoded = if unstructured(name) {
        Some(encode_unstructured(value))
    } else if addresses(name) && !field.is_ascii() {
        encode_addresses(field)
    } else {
        None
    };
    match encoded {
        Some(value) => {
            let mut f = name.to_vec();
            f.extend_from_slice(b": ");
            f.extend_from_slice(&value);
            f.extend_from_slice(b"\r\n");
            // RFC 2047 §2: a line with an encoded-word has 76 characters at the most.
            Cow::Owned(fold(&f, ENCODED_LINE).0)
        }
        None => match fold(field, MAX_LINE) {
            (folded, true) if folded != field => Cow::Owned(folded),
            _ => Cow::Borrowed(field),
        },
    }
}

/// A field's value on one line: folding undone (RFC 5322 §2.2.3), blanks around trimmed.
fn unfold(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i..].starts_with(b"\r\n") {
            i += 2;
            continue;
        }
        out.push(value[i]);
        i += 1;
    }
    let start = out
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(out.len());
    let end = out
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |p| p + 1);
    out[start..end].to_vec()
}

/// Words longer than this are encoded even in ASCII: encoded-words are the only way to
/// break them (a field line cannot be folded inside a word).
const LONG_WORD: usize = 900;

/// Unstructured text with each run of 8-bit (or over-long) words as encoded-words, the
/// blanks inside a run encoded with it (readers drop blanks between encoded-words) and
/// the others kept.
fn encode_unstructured(value: &[u8]) -> Vec<u8> {
    let text = unfold(value);
    let needs = |w: &[u8]| !w.is_ascii() || w.len() > LONG_WORD;
    // Words with the blanks that follow each.
    let mut words: Vec<(&[u8], &[u8])> = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let word_end = text[at..]
            .iter()
            .position(|b| matches!(b, b' ' | b'\t'))
            .map_or(text.len(), |p| at + p);
        let blank_end = text[word_end..]
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t'))
            .map_or(text.len(), |p| word_end + p);
        words.push((&text[at..word_end], &text[word_end..blank_end]));
        at = blank_end;
    }
    let mut out = Vec::with_capacity(text.len() * 2);
    let mut i = 0;
    while i < words.len() {
        let (word, blank) = words[i];
        if !needs(word) {
            out.extend_from_slice(word);
            out.extend_from_slice(blank);
            i += 1;
            continue;
        }
        // The run: this word and each following one that needs encoding too. A blank
        // between the run and an encoded-word already there goes inside the run, or
        // readers would drop it.
        let mut run = Vec::new();
        if i > 0 && encoded_word(words[i - 1].0) {
            let blank = words[i - 1].1;
            out.truncate(out.len() - blank.len());
            run.extend_from_slice(blank);
            // Encoded-words are separated by a blank (RFC 2047 §5), which readers drop.
            out.push(b' ');
        }
        run.extend_from_slice(word);
        let mut last_blank = blank;
        i += 1;
        while i < words.len() && needs(words[i].0) {
            run.extend_from_slice(last_blank);
            run.extend_from_slice(words[i].0);
            last_blank = words[i].1;
            i += 1;
        }
        if i < words.len() && encoded_word(words[i].0) {
            run.extend_from_slice(last_blank);
            last_blank = b" ";
        }
        encode::encoded_words(&run, &mut out);
        out.extend_from_slice(last_blank);
    }
    out
}

/// Looks like an RFC 2047 encoded-word.
fn encoded_word(word: &[u8]) -> bool {
    word.starts_with(b"=?") && word.ends_with(b"?=") && word.len() > 4
}

/// An address field written again with its display names as encoded-words; None when an
/// address itself is 8-bit (only SMTPUTF8 carries that) or the field does not parse.
fn encode_addresses(field: &[u8]) -> Option<Vec<u8>> {
    std::str::from_utf8(field).ok()?;
    let mut section = field.to_vec();
    section.extend_from_slice(b"\r\n");
    let parsed = MessageParser::new().parse_headers(&section)?;
    let header = parsed.headers().first()?;
    let address = header.value().as_address()?;
    let mailbox = |addr: &mail_parser::Addr<'_>| -> Option<Vec<u8>> {
        let email = addr.address.as_deref()?;
        if !email.is_ascii() {
            return None;
        }
        let mut out = Vec::new();
        match addr.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => {
                phrase(name, &mut out);
                out.extend_from_slice(format!(" <{email}>").as_bytes());
            }
            None => out.extend_from_slice(email.as_bytes()),
        }
        Some(out)
    };
    let mut items: Vec<Vec<u8>> = Vec::new();
    match address {
        Address::List(list) => {
            for addr in list {
                items.push(mailbox(addr)?);
            }
        }
        Address::Group(groups) => {
            for group in groups {
                let members = group
                    .addresses
                    .iter()
                    .map(mailbox)
                    .collect::<Option<Vec<_>>>()?;
                match group.name.as_deref() {
                    Some(name) => {
                        let mut item = Vec::new();
                        phrase(name, &mut item);
                        item.push(b':');
                        if !members.is_empty() {
                            item.push(b' ');
                            item.extend_from_slice(&members.join(&b", "[..]));
                        }
                        item.push(b';');
                        items.push(item);
                    }
                    None => items.extend(members),
                }
            }
        }
    }
    Some(items.join(&b",\r\n "[..]))
}

/// A display name: encoded-words when 8-bit, else a quoted-string.
fn phrase(name: &str, out: &mut Vec<u8>) {
    if name.is_ascii() {
        out.push(b'"');
        for b in name.bytes().filter(|&b| b != b'\r' && b != b'\n') {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        encode::encoded_words(name.as_bytes(), out);
    }
}

/// Longest line with an encoded-word in it (RFC 2047 §2).
const ENCODED_LINE: usize = 76;

/// A field with each line over `limit` folded before a blank, as late as it can be; and
/// whether every line fits now (one with no blank to fold at stays long).
fn fold(field: &[u8], limit: usize) -> (Vec<u8>, bool) {
    let mut fits = true;
    let mut out = Vec::with_capacity(field.len() + 16);
    for line in field.split_inclusive(|&b| b == b'\n') {
        let mut rest = line;
        loop {
            let content = rest.strip_suffix(b"\r\n").unwrap_or(rest);
            if content.len() <= limit {
                break;
            }
            // A fold needs something before it on the line: not the blank at 0. Where
            // there is no blank before the limit, the first one after it will do.
            let blank = |b: &u8| matches!(b, b' ' | b'\t');
            let Some(at) = content[1..=limit]
                .iter()
                .rposition(blank)
                .map(|p| p + 1)
                .filter(|&p| content[..p].iter().any(|b| !blank(b)))
                .or_else(|| {
                    content[limit..]
                        .iter()
                        .position(blank)
                        .map(|p| p + limit)
                        .filter(|&p| content[..p].iter().any(|b| !blank(b)))
                })
            else {
                fits = false;
                break;
            };
            fits &= at <= limit;
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[at..];
        }
        out.extend_from_slice(rest);
    }
    (out, fits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each leaf part's decoded content, in order, through mail-parser.
    fn decoded(raw: &[u8]) -> Vec<Vec<u8>> {
        let parsed = crate::mime::parse(raw).expect("parses");
        let mut out = Vec::new();
        for part in &parsed.parts {
            match &part.body {
                mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t) => {
                    out.push(t.as_bytes().to_vec())
                }
                mail_parser::PartType::Binary(b) | mail_parser::PartType::InlineBinary(b) => {
                    out.push(b.to_vec())
                }
                mail_parser::PartType::Message(m) => out.extend(decoded(m.raw_message())),
                mail_parser::PartType::Multipart(_) => {}
            }
        }
        out
    }

    fn check(raw: &[u8]) -> Vec<u8> {
        let copy = downgrade(raw).expect("a copy").expect("a different copy");
        let shape = Shape::of(&copy);
        assert!(!shape.eight_bit_body && !shape.long_lines, "{shape:?}");
        assert_eq!(decoded(&copy), decoded(raw), "the same content");
        assert_eq!(downgrade(&copy), Ok(None), "idempotent");
        // Trace fields added above it later change nothing below them.
        let mut traced = b"Received: from x by y; Sun, 6 Dec 2026 06:00:00 +0000\r\n".to_vec();
        traced.extend_from_slice(raw);
        let copy_traced = downgrade(&traced).unwrap().unwrap();
        assert_eq!(&copy_traced[traced.len() - raw.len()..], &copy[..]);
        copy
    }

    #[test]
    fn a_seven_bit_message_has_no_copy() {
        let raw = b"From: a@b.test\r\nSubject: hi\r\n\r\nhello\r\n";
        assert!(Shape::of(raw).seven_bit_safe());
        assert_eq!(downgrade(raw), Ok(None));
    }

    #[test]
    fn an_eight_bit_text_body_becomes_quoted_printable() {
        let raw = "From: a@b.test\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nViele Grüße aus Köln, wir sehen uns bald wieder\r\n";
        let copy = String::from_utf8(check(raw.as_bytes())).unwrap();
        assert!(copy.contains("Content-Transfer-Encoding: quoted-printable\r\n"));
        assert!(!copy.contains("8bit"));
        assert!(
            copy.ends_with(
                "\r\n\r\nViele Gr=C3=BC=C3=9Fe aus K=C3=B6ln, wir sehen uns bald wieder\r\n"
            ),
            "{copy}"
        );
    }

    #[test]
    fn long_lines_are_wrapped_in_quoted_printable() {
        let mut raw = b"From: a@b.test\r\nSubject: long\r\n\r\n".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 2_000));
        raw.extend_from_slice(b"\r\n");
        let copy = check(&raw);
        assert!(
            String::from_utf8_lossy(&copy)
                .contains("Content-Transfer-Encoding: quoted-printable\r\n\r\naaaa")
        );
    }

    #[test]
    fn multipart_parts_are_encoded_each_as_their_type_says() {
        let raw = b"From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\npre \xff amble\r\n--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nun caf\xe9 au lait\r\n--XX\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\xfe\xff\r\n--XX\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--XX--\r\nepi\xe9logue\r\n";
        let copy = check(raw);
        let text = String::from_utf8(copy).unwrap();
        assert!(
            text.contains("boundary=\"XX\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n--XX\r\n")
        );
        assert!(text.contains("charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nun caf=E9 au lait\r\n--XX"));
        assert!(
            text.contains(
                "octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAH+/w==\r\n\r\n--XX"
            ),
            "{text}"
        );
        assert!(text.contains("Content-Type: text/plain\r\n\r\nplain ascii\r\n--XX--\r\n"));
        assert!(text.ends_with("--XX--\r\n"));
    }

    #[test]
    fn an_attached_message_is_followed_into() {
        let raw = "From: a@b.test\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d.test\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nÜber den Fluss\r\n--b1--\r\n";
        let copy = String::from_utf8(check(raw.as_bytes())).unwrap();
        assert!(copy.contains(
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nFrom: c@d.test"
        ));
        assert!(copy.contains("=C3=9Cber"));
    }

    #[test]
    fn utf8_in_subject_and_display_names_becomes_encoded_words() {
        let raw = "From: Jürgen Groß <j@b.test>\r\nTo: \"Zoë\" <z@c.test>, plain@c.test\r\nSubject: Grüße =?utf-8?q?already?= und mehr\r\nMessage-ID: <1@b.test>\r\n\r\nbody\r\n";
        let copy = downgrade(raw.as_bytes()).unwrap().unwrap();
        assert!(copy.is_ascii(), "{}", String::from_utf8_lossy(&copy));
        let parsed = crate::mime::parse(&copy).unwrap();
        assert_eq!(parsed.subject(), Some("Grüße already und mehr"));
        let from = parsed.from().and_then(|a| a.first()).unwrap();
        assert_eq!(from.name.as_deref(), Some("Jürgen Groß"));
        assert_eq!(from.address.as_deref(), Some("j@b.test"));
        let to: Vec<_> = parsed
            .to()
            .unwrap()
            .iter()
            .map(|a| (a.name.clone(), a.address.clone()))
            .collect();
        assert_eq!(to.len(), 2);
        assert_eq!(to[0].0.as_deref(), Some("Zoë"));
        assert_eq!(to[1].1.as_deref(), Some("plain@c.test"));
        assert_eq!(downgrade(&copy), Ok(None));
    }

    #[test]
    fn a_utf8_address_stays_for_smtputf8() {
        let raw = "From: Jürgen <jürgen@b.test>\r\nSubject: ü\r\n\r\nbody\r\n";
        let copy = downgrade(raw.as_bytes()).unwrap().unwrap();
        let shape = Shape::of(&copy);
        assert!(shape.utf8_header && !shape.eight_bit_body);
        assert!(
            String::from_utf8(copy)
                .unwrap()
                .starts_with("From: Jürgen <jürgen@b.test>\r\nSubject: =?UTF-8?B?w7w=?=\r\n")
        );
    }

    #[test]
    fn long_header_lines_are_folded_or_encoded() {
        let refs: Vec<String> = (0..100)
            .map(|i| format!("<{i:020}@example.test>"))
            .collect();
        let long_word = "x".repeat(1_200);
        let raw = format!(
            "References: {}\r\nSubject: {long_word}\r\n\r\nbody\r\n",
            refs.join(" ")
        );
        let copy = check_headers_only(raw.as_bytes());
        let subject = crate::mime::parse(&copy)
            .unwrap()
            .subject()
            .map(str::to_string);
        assert_eq!(subject.as_deref(), Some(long_word.as_str()));
        let unfolded = String::from_utf8(copy).unwrap().replace("\r\n ", " ");
        assert!(unfolded.contains(&refs.join(" ")));
        // Nowhere to fold, and not words for people: it stays, and the shape says so.
        let raw = format!("Message-ID: <{long_word}@b.test>\r\n\r\nbody\r\n");
        assert_eq!(downgrade(raw.as_bytes()), Ok(None));
        assert!(Shape::of(raw.as_bytes()).long_lines);
    }

    fn check_headers_only(raw: &[u8]) -> Vec<u8> {
        let copy = downgrade(raw).unwrap().unwrap();
        assert!(Shape::of(&copy).seven_bit_safe());
        assert_eq!(downgrade(&copy), Ok(None));
        copy
    }

    #[test]
    fn encoded_parts_are_mended_and_odd_encodings_refused() {
        let mut raw = b"From: a@b.test\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        let mut b64 = Vec::new();
        encode::base64_lines(&[7u8; 3000], &mut b64);
        raw.extend(b64.iter().copied().filter(|b| *b != b'\r' && *b != b'\n'));
        raw.extend_from_slice(b"\r\n");
        check(&raw);
        let odd = b"From: a@b.test\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n\xff\r\n";
        assert_eq!(
            downgrade(odd),
            Err(Cannot::UnknownEncoding("x-uuencode".into()))
        );
    }

    #[test]
    fn nesting_past_the_limit_is_refused_not_followed() {
        let mut raw = String::from("From: a@b.test\r\n");
        for _ in 0..100 {
            raw.push_str("Content-Type: message/rfc822\r\n\r\n");
        }
        raw.push_str("Subject: end\r\n\r\n\u{e9}\r\n");
        assert_eq!(downgrade(raw.as_bytes()), Err(Cannot::TooDeep));
    }

    #[test]
    fn a_body_without_headers_and_empty_parts_survive() {
        check("\r\nété\r\n".as_bytes());
        check(b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\n\xe9\r\n--q\r\n--q\r\nContent-Type: text/plain\r\n\r\n\xe9\r\n--q--\r\n");
        // No close delimiter: the last part runs to the end (mail-parser then keeps it
        // undecoded, so only the shape is checked).
        let open = b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: text/plain\r\n\r\n\xe9";
        let copy = downgrade(open).unwrap().unwrap();
        assert!(copy.ends_with(b"Content-Transfer-Encoding: base64\r\n\r\n6Q==\r\n"));
    }

    #[test]
    fn a_multipart_labelled_encoded_is_still_followed_into() {
        let raw = "Content-Type: multipart/mixed; boundary=b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nViele Grüße aus Köln, wir sehen uns bald wieder\r\n--b--junk after the close\r\n";
        let copy = String::from_utf8(check(raw.as_bytes())).unwrap();
        assert!(copy.starts_with("Content-Type: multipart/mixed; boundary=b\r\nContent-Transfer-Encoding: 7bit\r\n\r\n--b\r\n"), "{copy}");
        assert!(
            copy.ends_with("K=C3=B6ln, wir sehen uns bald wieder\r\n--b--junk after the close\r\n"),
            "{copy}"
        );
    }

    #[test]
    fn encoded_words_keep_a_blank_between_them_and_short_lines() {
        let raw = "Subject: Grüße =?utf-8?q?already?= Grüße\r\n\r\nb\r\n";
        let copy = String::from_utf8(downgrade(raw.as_bytes()).unwrap().unwrap()).unwrap();
        let unfolded = copy.replace("\r\n ", " ");
        assert!(
            unfolded.contains("?= =?utf-8?q?already?= =?UTF-8?B?"),
            "{copy}"
        );
        let subject = crate::mime::parse(copy.as_bytes())
            .unwrap()
            .subject()
            .map(str::to_string);
        assert_eq!(subject.as_deref(), Some("Grüße already Grüße"));
        let mut latin = b"Subject: ".to_vec();
        for _ in 0..40 {
            latin.extend_from_slice(b"caf\xe9 ");
        }
        latin.extend_from_slice(
            b"\r\nFrom: \xc9mile Zola Tr\xe8s Long Nom de Famille <e@b.test>\r\n\r\nb\r\n",
        );
        let copy = downgrade(&latin).unwrap().unwrap();
        let (header_end, _) = split(&copy);
        for line in copy[..header_end].split(|&b| b == b'\n') {
            assert!(line.len() <= 77, "{}", String::from_utf8_lossy(line));
        }
        assert!(String::from_utf8_lossy(&copy).contains("=?unknown-8bit?B?"));
    }

    #[test]
    fn a_nul_must_change_and_a_raw_file_name_is_labelled_8bit() {
        let raw = b"Subject: x\r\n\r\nnul \x00 here\r\n";
        let shape = Shape::of(raw);
        assert!(shape.nul && shape.must_change());
        check(raw);
        let named = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Disposition: attachment; filename=\"Größe.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\u{ff}\u{fe}\r\n--b--\r\n";
        let copy = String::from_utf8(downgrade(named.as_bytes()).unwrap().unwrap()).unwrap();
        assert!(
            copy.starts_with(
                "Content-Type: multipart/mixed; boundary=b\r\nContent-Transfer-Encoding: 8bit\r\n"
            ),
            "{copy}"
        );
        assert!(copy.contains("Content-Transfer-Encoding: base64\r\n"));
    }

    #[test]
    fn parts_that_may_not_be_encoded_are_refused() {
        let raw = b"Content-Type: message/partial; id=x; number=1\r\n\r\n\xe9\r\n";
        assert!(matches!(downgrade(raw), Err(Cannot::Unencodable(_))));
        let raw = b"Content-Type: multipart/mixed\r\n\r\n\xe9\r\n";
        assert!(matches!(downgrade(raw), Err(Cannot::Unencodable(_))));
    }

    #[test]
    fn a_boundary_spelling_a_line_break_is_no_delimiter_and_no_panic() {
        let raw = b"Content-Type: multipart/mixed; boundary*=us-ascii''a%0D%0Ab\r\n\r\n--a\r\nb: x\r\n\r\n\xe9\r\n--a\r\nb--\r\n";
        let _ = downgrade(raw);
    }

    #[test]
    fn an_attached_message_labelled_base64_is_mended_not_opened() {
        let mut raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        let mut inner = Vec::new();
        encode::base64_lines(b"Subject: inner\r\n\r\nhello\r\n", &mut inner);
        raw.extend(inner.iter().copied().filter(|b| *b != b'\r' && *b != b'\n'));
        raw.extend(std::iter::repeat_n(b'Q', 1_200));
        raw.extend_from_slice(b"\r\n--b--\r\n");
        let copy = String::from_utf8(downgrade(&raw).unwrap().unwrap()).unwrap();
        assert!(
            copy.contains(
                "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            ),
            "{copy}"
        );
        assert!(!Shape::of(copy.as_bytes()).long_lines);
    }

    #[test]
    fn bare_line_endings_get_no_copy() {
        assert_eq!(
            downgrade(b"Subject: x\r\n\r\n\xe9\n"),
            Err(Cannot::BareLineEnding)
        );
        assert_eq!(
            downgrade(b"Subject: x\r\n\r\n\xe9\r"),
            Err(Cannot::BareLineEnding)
        );
    }

    #[test]
    fn a_nul_kept_in_a_part_header_is_labelled_too() {
        let raw = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\nary\x1d\x00=d\r\n\r\n--d\r\n\r\nSubject: x\r\n\r\n\xe9\r\n--d--\r\n";
        let copy = String::from_utf8(downgrade(raw).unwrap().unwrap()).unwrap();
        assert!(
            copy.contains("Content-Transfer-Encoding: 8bit\r\n"),
            "{copy:?}"
        );
    }

    #[test]
    fn a_header_line_without_a_colon_is_left_as_it_is() {
        let raw = b"\x14o: Fr\xc3\xbcnde: a@b.\x00t>\x97ms\r\nx-9es\xff\x97ms\r\n";
        assert_eq!(downgrade(raw), Ok(None));
        let raw = b"Subject: \xc3\xbc\r\nx-garbage \xff\r\n\r\nb\r\n";
        let copy = downgrade(raw).unwrap().unwrap();
        assert_eq!(downgrade(&copy), Ok(None));
        assert!(copy.ends_with(b"\r\nx-garbage \xff\r\n\r\nb\r\n"));
    }
}
