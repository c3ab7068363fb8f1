//! The transfer encodings a 7-bit copy is written in: quoted-printable and base64 bodies
//! (RFC 2045 §6.7, §6.8) and RFC 2047 encoded-words, written here so their bytes never
//! change under a crate upgrade (a copy sealed on arrival is rebuilt at delivery).

use base64::Engine;

/// Longest encoded line, without its CRLF (RFC 2045 §6.7 rule 5, §6.8).
const ENCODED_LINE: usize = 76;

/// Writes quoted-printable lines, inserting soft breaks so no line exceeds 76.
struct QpWriter<'a> {
    out: &'a mut Vec<u8>,
    column: usize,
}

impl QpWriter<'_> {
    fn unit(&mut self, unit: &[u8]) {
        // One column stays for the soft break's "=".
        if self.column + unit.len() > ENCODED_LINE - 1 {
            self.out.extend_from_slice(b"=\r\n");
            self.column = 0;
        }
        self.out.extend_from_slice(unit);
        self.column += unit.len();
    }

    fn escaped(&mut self, b: u8) {
        self.unit(&hex_escape(b));
    }

    fn hard_break(&mut self) {
        self.out.extend_from_slice(b"\r\n");
        self.column = 0;
    }
}

fn hex_escape(b: u8) -> [u8; 3] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]
}

/// The lines of `data` split at CRLF, each with whether a CRLF ended it.
fn crlf_lines(data: &[u8]) -> impl Iterator<Item = (&[u8], bool)> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let data = rest?;
        match memchr::memmem::find(data, b"\r\n") {
            Some(at) => {
                rest = Some(&data[at + 2..]);
                Some((&data[..at], true))
            }
            None => {
                rest = None;
                (!data.is_empty()).then_some((data, false))
            }
        }
    })
}

/// `data` quoted-printable: CRLF line breaks stay line breaks, every other byte outside
/// printable ASCII (and "=", and a blank ending a line) becomes =XX.
pub fn quoted_printable(data: &[u8], out: &mut Vec<u8>) {
    let mut w = QpWriter { out, column: 0 };
    for (line, ended) in crlf_lines(data) {
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            match b {
                b'=' => w.escaped(b),
                b' ' | b'\t' if last => w.escaped(b),
                b' ' | b'\t' | b'!'..=b'~' => w.unit(&[b]),
                _ => w.escaped(b),
            }
        }
        if ended {
            w.hard_break();
        }
    }
}

/// A quoted-printable body with 8-bit bytes or over-long lines, mended without changing
/// what it decodes to: a stray 8-bit byte (which lenient decoders keep as it is) becomes
/// its =XX, and long lines get soft breaks between escapes.
pub fn mend_quoted_printable(data: &[u8], out: &mut Vec<u8>) {
    let mut w = QpWriter { out, column: 0 };
    for (line, ended) in crlf_lines(data) {
        let mut i = 0;
        while i < line.len() {
            let b = line[i];
            if b == b'='
                && line.len() >= i + 3
                && line[i + 1].is_ascii_hexdigit()
                && line[i + 2].is_ascii_hexdigit()
            {
                w.unit(&line[i..i + 3]);
                i += 3;
                continue;
            }
            if b == b'=' && i + 1 == line.len() {
                // The line's own soft break: whatever column, it stays last.
                w.out.push(b'=');
                w.column += 1;
            } else if b.is_ascii() && b != 0 && b != b'\r' && b != b'\n' {
                w.unit(&[b]);
            } else {
                w.escaped(b);
            }
            i += 1;
        }
        if ended {
            w.hard_break();
        }
    }
}

/// `data` in base64, in lines of 76.
pub fn base64_lines(data: &[u8], out: &mut Vec<u8>) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    wrap(encoded.as_bytes(), out);
}

/// A base64 body with over-long lines or 8-bit bytes, mended: only its alphabet is kept
/// (decoders skip the rest, RFC 2045 §6.8), in lines of 76.
pub fn mend_base64(data: &[u8], out: &mut Vec<u8>) {
    let kept: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .collect();
    wrap(&kept, out);
}

fn wrap(encoded: &[u8], out: &mut Vec<u8>) {
    for line in encoded.chunks(ENCODED_LINE) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

/// RFC 2047 §2: an encoded-word has 75 characters at the most.
const WORD_LENGTH: usize = 75;

/// `text` as RFC 2047 "B" encoded-words separated by folding white space (which readers
/// drop between encoded-words, §6.2). Valid UTF-8 is cut between characters and labelled
/// UTF-8; anything else is labelled unknown-8bit (RFC 1428), as nothing says what it is.
pub fn encoded_words(text: &[u8], out: &mut Vec<u8>) {
    let utf8 = std::str::from_utf8(text).ok();
    let charset: &[u8] = if utf8.is_some() {
        b"UTF-8"
    } else {
        b"unknown-8bit"
    };
    // What "=?charset?B?" and "?=" leave of a word, in whole base64 quanta.
    let word_bytes = (WORD_LENGTH - charset.len() - 7) / 4 * 3;
    let mut rest = text;
    let mut first = true;
    while !rest.is_empty() {
        let mut take = rest.len().min(word_bytes);
        if let Some(s) = utf8 {
            let offset = text.len() - rest.len();
            while !s.is_char_boundary(offset + take) {
                take -= 1;
            }
        }
        if !first {
            out.extend_from_slice(b"\r\n ");
        }
        first = false;
        out.extend_from_slice(b"=?");
        out.extend_from_slice(charset);
        out.extend_from_slice(b"?B?");
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(&rest[..take])
                .as_bytes(),
        );
        out.extend_from_slice(b"?=");
        rest = &rest[take..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qp(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        quoted_printable(data, &mut out);
        out
    }

    fn qp_decode(data: &[u8]) -> Vec<u8> {
        mail_parser::decoders::quoted_printable::quoted_printable_decode(data).expect("decodes")
    }

    #[test]
    fn quoted_printable_round_trips_and_keeps_lines_short() {
        let mut text = "Grüße = viele \r\nzweite Zeile\t\r\n"
            .repeat(3)
            .into_bytes();
        text.extend(std::iter::repeat_n(b'x', 2_000));
        text.extend_from_slice(b"\r\n\xff\x00end");
        let encoded = qp(&text);
        assert!(encoded.is_ascii());
        assert!(encoded.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        assert_eq!(qp_decode(&encoded), text);
        assert!(String::from_utf8_lossy(&encoded).starts_with("Gr=C3=BC=C3=9Fe =3D viele=20\r\n"));
    }

    #[test]
    fn a_quoted_printable_body_is_mended_to_what_it_decoded_to() {
        let mut body = b"caf\xc3\xa9 =C3=A9 soft=\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'y', 1_500));
        body.extend_from_slice(b"=3D\r\n");
        let mut out = Vec::new();
        mend_quoted_printable(&body, &mut out);
        assert!(out.is_ascii());
        assert!(out.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        let mut expected = "café é soft".as_bytes().to_vec();
        expected.extend(std::iter::repeat_n(b'y', 1_500));
        expected.extend_from_slice(b"=\r\n");
        assert_eq!(qp_decode(&out), expected);
    }

    #[test]
    fn base64_is_mended_to_its_alphabet_in_short_lines() {
        let data: Vec<u8> = (0..=255u8).cycle().take(3_000).collect();
        let mut lines = Vec::new();
        base64_lines(&data, &mut lines);
        let long: Vec<u8> = lines
            .iter()
            .copied()
            .filter(|b| *b != b'\r' && *b != b'\n')
            .chain(*b"\xff")
            .collect();
        let mut mended = Vec::new();
        mend_base64(&long, &mut mended);
        assert_eq!(mended, lines);
        assert!(lines.split(|&b| b == b'\n').all(|l| l.len() <= 77));
    }

    #[test]
    fn encoded_words_stay_short_and_cut_between_characters() {
        let text = "Ünïcödé ".repeat(20);
        let mut out = Vec::new();
        encoded_words(text.as_bytes(), &mut out);
        let out = String::from_utf8(out).unwrap();
        for word in out.split("\r\n ") {
            assert!(word.len() <= 75, "{word}");
            let b64 = word
                .strip_prefix("=?UTF-8?B?")
                .and_then(|w| w.strip_suffix("?="))
                .unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            assert!(String::from_utf8(bytes).is_ok(), "cut inside a character");
        }
        let mut latin1 = Vec::new();
        encoded_words(b"caf\xe9", &mut latin1);
        assert_eq!(latin1, b"=?unknown-8bit?B?Y2Fm6Q==?=");
    }
}
