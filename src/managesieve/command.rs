//! ManageSieve's command syntax (RFC 5804 §4): atoms, quoted strings and literals, read
//! from the client within bounds, and the quoting of what the server sends back.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Longest line outside literals.
pub const MAX_LINE: usize = 8 * 1024;
/// Largest literal once logged in: a whole script, and a little room.
pub const MAX_LITERAL: usize = crate::sieve::MAX_SCRIPT_SIZE + 1024;
/// Largest literal before: an AUTHENTICATE answer is a few hundred bytes, and a stranger
/// must not make the server hold a megabyte per connection.
pub const MAX_LITERAL_BEFORE_LOGIN: usize = 8 * 1024;
/// Most words in one command (RENAMESCRIPT has three).
const MAX_WORDS: usize = 8;

/// One word of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    Atom(String),
    Text(Vec<u8>),
}

impl Word {
    /// The word as a string argument (a quoted string or literal, as text).
    pub fn text(&self) -> Option<String> {
        match self {
            Word::Text(bytes) => String::from_utf8(bytes.clone()).ok(),
            Word::Atom(_) => None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The connection ended or failed.
    Closed,
    /// Silent for longer than allowed.
    Idle,
    /// A line or literal past the bounds: the connection is closed (what follows
    /// cannot be told apart from the rest of the command).
    TooLong,
    /// Not a command; the next line starts a new one.
    Syntax(&'static str),
}

/// Reads one command's words: a line, and when it ends in a literal `{n+}` (or `{n}`,
/// taken the same way: ManageSieve has no continuation), the literal and the line that
/// goes on after it. The whole command has `silence` to arrive, its literals
/// `max_literal` bytes together and `MAX_WORDS` words: past either it is refused unread.
pub async fn read<R: AsyncBufRead + Unpin>(
    io: &mut R,
    silence: Duration,
    max_literal: usize,
) -> Result<Vec<Word>, ReadError> {
    let deadline = tokio::time::Instant::now() + silence;
    let mut words = Vec::new();
    let mut bad = None;
    let mut literal_bytes = 0usize;
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut *io).take(MAX_LINE as u64 + 2);
        let read = limited.read_until(b'\n', &mut line);
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) => return Err(ReadError::Idle),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(ReadError::Closed),
            Ok(Ok(_)) => {}
        }
        if !line.ends_with(b"\n") {
            return Err(ReadError::TooLong);
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        let (rest, literal) = split_literal(&line);
        if let Err(why) = words_of(rest, &mut words) {
            bad.get_or_insert(why);
        }
        let Some(size) = literal else { break };
        let size = size.ok_or(ReadError::TooLong)?;
        literal_bytes = literal_bytes.saturating_add(size);
        if literal_bytes > max_literal || words.len() >= MAX_WORDS {
            return Err(ReadError::TooLong);
        }
        let mut bytes = vec![0; size];
        match tokio::time::timeout_at(deadline, io.read_exact(&mut bytes)).await {
            Err(_) => return Err(ReadError::Idle),
            Ok(Err(_)) => return Err(ReadError::Closed),
            Ok(Ok(_)) => {}
        }
        words.push(Word::Text(bytes));
    }
    match bad {
        Some(why) => Err(ReadError::Syntax(why)),
        None if words.is_empty() => Err(ReadError::Syntax("empty command")),
        None => Ok(words),
    }
}

/// The line without a trailing literal marker, and the marker's size (None inside
/// when the number is too large to be one).
fn split_literal(line: &[u8]) -> (&[u8], Option<Option<usize>>) {
    let Some(body) = line.strip_suffix(b"}") else {
        return (line, None);
    };
    let Some(open) = body.iter().rposition(|&b| b == b'{') else {
        return (line, None);
    };
    let number = body[open + 1..]
        .strip_suffix(b"+")
        .unwrap_or(&body[open + 1..]);
    if number.is_empty() || !number.iter().all(u8::is_ascii_digit) {
        return (line, None);
    }
    let size = std::str::from_utf8(number)
        .ok()
        .and_then(|n| n.parse().ok());
    (&line[..open], Some(size))
}

fn words_of(mut line: &[u8], words: &mut Vec<Word>) -> Result<(), &'static str> {
    loop {
        while let [b' ' | b'\t', rest @ ..] = line {
            line = rest;
        }
        let Some(&first) = line.first() else {
            return Ok(());
        };
        if words.len() >= MAX_WORDS {
            return Err("too many arguments");
        }
        if first == b'"' {
            let mut text = Vec::new();
            let mut i = 1;
            loop {
                match line.get(i) {
                    None => return Err("unterminated string"),
                    Some(b'"') => break,
                    Some(b'\\') => match line.get(i + 1) {
                        Some(&c @ (b'"' | b'\\')) => {
                            text.push(c);
                            i += 2;
                        }
                        _ => return Err("bad escape in a string"),
                    },
                    Some(&c) => {
                        text.push(c);
                        i += 1;
                    }
                }
            }
            words.push(Word::Text(text));
            line = &line[i + 1..];
        } else {
            let end = line
                .iter()
                .position(|&b| b == b' ' || b == b'"')
                .unwrap_or(line.len());
            let atom = std::str::from_utf8(&line[..end]).map_err(|_| "not text")?;
            words.push(Word::Atom(atom.to_string()));
            line = &line[end..];
        }
    }
}

/// A string as the server sends it: quoted when it can be, else a literal.
pub fn string(text: &[u8]) -> Vec<u8> {
    let quotable = text.len() <= 1024 && !text.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0);
    if !quotable {
        let mut out = format!("{{{}}}\r\n", text.len()).into_bytes();
        out.extend_from_slice(text);
        return out;
    }
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b'"');
    for &b in text {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(input: &[u8]) -> Result<Vec<Word>, ReadError> {
        let mut io = tokio::io::BufReader::new(input);
        read(&mut io, Duration::from_secs(1), MAX_LITERAL).await
    }

    fn text(s: &str) -> Word {
        Word::Text(s.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn words_strings_and_literals() {
        assert_eq!(
            parse(b"PUTSCRIPT \"my \\\"one\\\"\" {12+}\r\nkeep;\r\nstop;\r\n").await,
            Ok(vec![
                Word::Atom("PUTSCRIPT".into()),
                text("my \"one\""),
                text("keep;\r\nstop;")
            ])
        );
        assert_eq!(
            parse(b"RENAMESCRIPT {1}\r\na \"b\"\r\n").await,
            Ok(vec![
                Word::Atom("RENAMESCRIPT".into()),
                text("a"),
                text("b")
            ])
        );
        assert_eq!(
            parse(b"\"open\r\n").await,
            Err(ReadError::Syntax("unterminated string"))
        );
        assert_eq!(
            parse(b"X {99999999999999999999+}\r\n").await,
            Err(ReadError::TooLong)
        );
        assert_eq!(parse(b"X {4294967296+}\r\n").await, Err(ReadError::TooLong));
        assert_eq!(parse(&[b'A'; MAX_LINE + 10]).await, Err(ReadError::TooLong));
        assert_eq!(parse(b"X {5+}\r\nab").await, Err(ReadError::Closed));
        // Literal after literal: the command's bound is for all of them.
        let mut chained = b"X".to_vec();
        for _ in 0..20 {
            chained.extend_from_slice(b" {4+}\r\nabcd");
        }
        chained.extend_from_slice(b"\r\n");
        assert_eq!(parse(&chained).await, Err(ReadError::TooLong));
        let mut many = b"X {6000+}\r\n".to_vec();
        many.extend_from_slice(&[b'a'; 6000]);
        many.extend_from_slice(b" {6000+}\r\n");
        many.extend_from_slice(&[b'a'; 6000]);
        many.extend_from_slice(b"\r\n");
        let mut io = tokio::io::BufReader::new(&many[..]);
        assert_eq!(
            read(&mut io, Duration::from_secs(1), MAX_LITERAL_BEFORE_LOGIN).await,
            Err(ReadError::TooLong)
        );
    }

    #[test]
    fn strings_are_quoted_or_literal() {
        assert_eq!(string(b"a\"b"), b"\"a\\\"b\"".to_vec());
        assert_eq!(string(b"a\r\nb"), b"{4}\r\na\r\nb".to_vec());
    }
}
