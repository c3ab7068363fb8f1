//! How a message's metadata is kept at rest: a compact binary form with the envelope
//! first, so a FETCH of ENVELOPE reads it and stops. Metadata stored as JSON before it
//! still reads (its first byte is `{`, never this form's tag).

use super::meta::{Address, Envelope, Meta, Structure};

/// The first byte of the binary form (JSON metadata always starts with `{`).
const TAG: u8 = 0x01;

/// Deeper than delivery ever nests (`limits::MIME_DEPTH` plus the opaque leaf), so only
/// damaged bytes reach it.
const MAX_DEPTH: usize = crate::limits::MIME_DEPTH + 8;

#[derive(Debug, thiserror::Error)]
#[error("stored message metadata cannot be read")]
pub struct Unreadable;

/// The bytes kept for `meta`.
pub fn encode(meta: &Meta) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(TAG);
    put_meta(&mut out, meta);
    out
}

/// The whole metadata, from either form.
pub fn decode(bytes: &[u8]) -> Result<Meta, Unreadable> {
    match bytes.split_first() {
        Some((&TAG, rest)) => {
            let mut r = Reader { rest };
            let meta = r.meta(0)?;
            r.rest.is_empty().then_some(meta).ok_or(Unreadable)
        }
        _ => serde_json::from_slice(bytes).map_err(|_| Unreadable),
    }
}

/// The envelope, references and version alone (FETCH ENVELOPE, SORT, THREAD): the
/// structure after them is not read.
pub fn decode_envelope(bytes: &[u8]) -> Result<Meta, Unreadable> {
    match bytes.split_first() {
        Some((&TAG, rest)) => {
            let mut r = Reader { rest };
            let (version, envelope, references) = r.head()?;
            Ok(Meta {
                envelope,
                references,
                version,
                ..Meta::default()
            })
        }
        _ => {
            #[derive(serde::Deserialize)]
            struct EnvelopeOnly {
                envelope: Envelope,
                #[serde(default)]
                references: Option<String>,
                #[serde(default)]
                version: u32,
            }
            let e: EnvelopeOnly = serde_json::from_slice(bytes).map_err(|_| Unreadable)?;
            Ok(Meta {
                envelope: e.envelope,
                references: e.references,
                version: e.version,
                ..Meta::default()
            })
        }
    }
}

fn put_meta(out: &mut Vec<u8>, meta: &Meta) {
    put_number(out, meta.version as u64);
    let e = &meta.envelope;
    put_optional(out, e.date.as_deref());
    put_optional(out, e.subject.as_deref());
    for list in [&e.from, &e.sender, &e.reply_to, &e.to, &e.cc, &e.bcc] {
        put_number(out, list.len() as u64);
        for a in list {
            put_optional(out, a.name.as_deref());
            put_optional(out, a.route.as_deref());
            put_optional(out, a.mailbox.as_deref());
            put_optional(out, a.host.as_deref());
        }
    }
    put_optional(out, e.in_reply_to.as_deref());
    put_optional(out, e.message_id.as_deref());
    put_optional(out, meta.references.as_deref());
    put_structure(out, &meta.structure);
}

fn put_structure(out: &mut Vec<u8>, s: &Structure) {
    put_str(out, &s.kind);
    put_str(out, &s.subtype);
    put_pairs(out, &s.params);
    put_optional(out, s.id.as_deref());
    put_optional(out, s.description.as_deref());
    put_str(out, &s.encoding);
    put_optional(out, s.md5.as_deref());
    match &s.disposition {
        Some((kind, params)) => {
            out.push(1);
            put_str(out, kind);
            put_pairs(out, params);
        }
        None => out.push(0),
    }
    put_number(out, s.language.len() as u64);
    for language in &s.language {
        put_str(out, language);
    }
    put_optional(out, s.location.as_deref());
    for n in [s.header_start, s.body_start, s.end, s.lines] {
        put_number(out, n as u64);
    }
    put_number(out, s.parts.len() as u64);
    for part in &s.parts {
        put_structure(out, part);
    }
    match &s.message {
        Some(inner) => {
            out.push(1);
            put_meta(out, inner);
        }
        None => out.push(0),
    }
}

fn put_pairs(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    put_number(out, pairs.len() as u64);
    for (name, value) in pairs {
        put_str(out, name);
        put_str(out, value);
    }
}

/// LEB128: seven bits a byte, low first.
fn put_number(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_number(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// None is 0; a string is its length plus one, then its bytes.
fn put_optional(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            put_number(out, s.len() as u64 + 1);
            out.extend_from_slice(s.as_bytes());
        }
        None => out.push(0),
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn meta(&mut self, depth: usize) -> Result<Meta, Unreadable> {
        let (version, envelope, references) = self.head()?;
        Ok(Meta {
            envelope,
            references,
            version,
            structure: self.structure(depth)?,
        })
    }

    fn head(&mut self) -> Result<(u32, Envelope, Option<String>), Unreadable> {
        let version = self.small()?;
        let date = self.optional()?;
        let subject = self.optional()?;
        let mut lists: [Vec<Address>; 6] = Default::default();
        for list in &mut lists {
            let n = self.count()?;
            list.reserve(n);
            for _ in 0..n {
                list.push(Address {
                    name: self.optional()?,
                    route: self.optional()?,
                    mailbox: self.optional()?,
                    host: self.optional()?,
                });
            }
        }
        let [from, sender, reply_to, to, cc, bcc] = lists;
        let envelope = Envelope {
            date,
            subject,
            from,
            sender,
            reply_to,
            to,
            cc,
            bcc,
            in_reply_to: self.optional()?,
            message_id: self.optional()?,
        };
        Ok((version, envelope, self.optional()?))
    }

    fn structure(&mut self, depth: usize) -> Result<Structure, Unreadable> {
        if depth > MAX_DEPTH {
            return Err(Unreadable);
        }
        let kind = self.string()?;
        let subtype = self.string()?;
        let params = self.pairs()?;
        let id = self.optional()?;
        let description = self.optional()?;
        let encoding = self.string()?;
        let md5 = self.optional()?;
        let disposition = match self.byte()? {
            0 => None,
            1 => Some((self.string()?, self.pairs()?)),
            _ => return Err(Unreadable),
        };
        let n = self.count()?;
        let language = (0..n).map(|_| self.string()).collect::<Result<_, _>>()?;
        let location = self.optional()?;
        let [header_start, body_start, end, lines] =
            [self.small()?, self.small()?, self.small()?, self.small()?];
        let n = self.count()?;
        let parts = (0..n)
            .map(|_| self.structure(depth + 1))
            .collect::<Result<_, _>>()?;
        let message = match self.byte()? {
            0 => None,
            1 => Some(Box::new(self.meta(depth + 1)?)),
            _ => return Err(Unreadable),
        };
        Ok(Structure {
            kind,
            subtype,
            params,
            id,
            description,
            encoding,
            md5,
            disposition,
            language,
            location,
            header_start,
            body_start,
            end,
            lines,
            parts,
            message,
        })
    }

    fn byte(&mut self) -> Result<u8, Unreadable> {
        let (&b, rest) = self.rest.split_first().ok_or(Unreadable)?;
        self.rest = rest;
        Ok(b)
    }

    fn number(&mut self) -> Result<u64, Unreadable> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(Unreadable)
    }

    fn small(&mut self) -> Result<u32, Unreadable> {
        u32::try_from(self.number()?).map_err(|_| Unreadable)
    }

    /// A count of things that follow, each at least one byte: a count past the bytes
    /// left is damage, and must not reserve memory for it.
    fn count(&mut self) -> Result<usize, Unreadable> {
        let n = self.number()?;
        if n > self.rest.len() as u64 {
            return Err(Unreadable);
        }
        Ok(n as usize)
    }

    fn take(&mut self, len: u64) -> Result<String, Unreadable> {
        if len > self.rest.len() as u64 {
            return Err(Unreadable);
        }
        let (bytes, rest) = self.rest.split_at(len as usize);
        self.rest = rest;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Unreadable)
    }

    fn string(&mut self) -> Result<String, Unreadable> {
        let len = self.number()?;
        self.take(len)
    }

    fn optional(&mut self) -> Result<Option<String>, Unreadable> {
        match self.number()? {
            0 => Ok(None),
            n => self.take(n - 1).map(Some),
        }
    }

    fn pairs(&mut self) -> Result<Vec<(String, String)>, Unreadable> {
        let n = self.count()?;
        (0..n)
            .map(|_| Ok((self.string()?, self.string()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::meta::tests::{nested_messages, nested_multiparts};

    fn samples() -> Vec<Vec<u8>> {
        vec![
            b"Subject: hi\r\n\r\nhello\r\n".to_vec(),
            b"From: \"J\xc3\xb6rg\" <j@x.test>\r\nTo: g: a@b.test, (c) ;, <@r1,@r2:u@d.test>\r\n\
Cc: =?utf-8?q?Fran=C3=A7ois?= <f@x.test>\r\nReply-To: r@x.test\r\nSender: s@x.test\r\n\
Bcc: b@x.test\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <id@x>\r\n\
In-Reply-To: <p@x>\r\nReferences: <a@x>\r\n <p@x>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Type: text/plain; charset=utf-8; format=flowed\r\nContent-ID: <c@x>\r\n\
Content-Description: words\r\nContent-Language: en, de\r\nContent-Location: here\r\n\
Content-MD5: Q2hlY2s=\r\n\r\nline one\r\nline two\r\n--b\r\n\
Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"m.eml\"\r\n\r\n\
Subject: inner\r\nFrom: i@x.test\r\nContent-Type: multipart/digest; boundary=\"d\"\r\n\r\n\
--d\r\n\r\nSubject: digested\r\n\r\nx\r\n--d--\r\n--b--\r\n"
                .to_vec(),
            b"no header at all".to_vec(),
            Vec::new(),
            nested_multiparts(crate::limits::MIME_DEPTH + 3),
            nested_messages(300),
        ]
    }

    #[test]
    fn metadata_reads_back_as_it_was_in_both_forms() {
        for raw in samples() {
            let meta = Meta::of(&raw);
            let bytes = encode(&meta);
            assert_eq!(decode(&bytes).unwrap(), meta);
            let head = decode_envelope(&bytes).unwrap();
            assert_eq!(
                (&head.envelope, &head.references, head.version),
                (&meta.envelope, &meta.references, meta.version)
            );
            // Metadata stored as JSON by older versions reads the same.
            let json = serde_json::to_vec(&meta).unwrap();
            assert_eq!(decode(&json).unwrap(), meta);
            assert_eq!(decode_envelope(&json).unwrap().envelope, meta.envelope);
            assert!(
                bytes.len() < json.len(),
                "{} vs {}",
                bytes.len(),
                json.len()
            );
        }
    }

    #[test]
    fn damaged_bytes_are_unreadable_not_a_panic_or_a_huge_allocation() {
        let meta = Meta::of(&samples()[1]);
        let bytes = encode(&meta);
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing bytes");
        // A count of 2^60 addresses in a few bytes.
        let mut huge = vec![TAG, 2, 0, 0];
        huge.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode(&huge).is_err());
        assert!(decode_envelope(&huge).is_err());
        // Every single-byte change decodes to something or to an error.
        for i in 1..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x55;
            let _ = decode(&changed);
        }
        // Nesting deeper than delivery ever makes.
        let mut meta = Meta::default();
        for _ in 0..MAX_DEPTH + 2 {
            meta.structure.message = Some(Box::new(std::mem::take(&mut meta)));
        }
        let deep = encode(&meta);
        assert!(decode(&deep).is_err());
    }
}
