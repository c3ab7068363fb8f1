//! The command forms of IMAP extensions imap-codec's grammar does not take: LIST-EXTENDED
//! and LIST-STATUS (RFC 5258, 5819), ESEARCH's `SEARCH RETURN` (RFC 4731) and
//! CREATE-SPECIAL-USE (RFC 6154) and APPEND's UTF8 data (RFC 6855), read from the bytes
//! imap-next could not decode.
//!
//! Each is a command imap-codec knows with something added: the additions are taken off
//! here, and what is left is handed back to imap-codec, so every mailbox name, pattern
//! and search key is still read by its grammar.

use std::ops::Range;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_next::imap_types::IntoStatic;
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::Tag;
use imap_next::imap_types::mailbox::ListMailbox;
use imap_next::imap_types::status::StatusDataItemName;

/// What the extended syntax adds to a command imap-codec read.
#[derive(Debug, Clone, PartialEq)]
pub enum Extras {
    /// LIST with selection or return options, or several patterns.
    List(ListOptions),
    /// SEARCH RETURN (…): the answer is one ESEARCH response.
    Search(SearchReturn),
    /// CREATE … (USE (…)): the special use the new folder takes.
    CreateUse(Vec<String>),
    /// APPEND … UTF8 (literal8): a message whose header may hold UTF-8 (RFC 6855 §4),
    /// stored as it came.
    Utf8Append,
}

/// RFC 5258 §3's selection and return options.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListOptions {
    /// The patterns beyond the first (which travels in the LIST command itself).
    pub more_patterns: Vec<ListMailbox<'static>>,
    /// Selection: only subscribed names.
    pub subscribed: bool,
    /// Selection: also the parents of matching names (with CHILDINFO).
    pub recursive: bool,
    /// Selection: only folders with a special use (RFC 6154).
    pub special_use: bool,
    /// Return: \Subscribed on subscribed names.
    pub return_subscribed: bool,
    /// Return: a STATUS response after each selectable folder listed (RFC 5819).
    pub status: Option<Vec<StatusDataItemName>>,
}

/// RFC 4731's result options (an empty list means ALL).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchReturn {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    /// SEARCHRES (RFC 5182): keep the result for `$`.
    pub save: bool,
}

/// How an extended command was read.
pub enum Parsed {
    /// Not one of ours: the usual BAD answers it.
    Unknown,
    /// One of ours, but its arguments are wrong: BAD with this text.
    Bad(Tag<'static>, &'static str),
    /// With what the extended form added, if anything (a `$` alone adds nothing).
    Command(Command<'static>, Option<Extras>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Atom,
    Quoted,
    Literal,
    Open,
    Close,
}

/// The most tokens read of one command. A logged-in client's command may be as long as
/// its largest message, and each token costs 24 bytes to note: a line of `(` would
/// otherwise cost twelve times its length. The forms read here need a few dozen.
const MOST_TOKENS: usize = 20_000;

/// The most `$` one command may hold: each becomes the whole saved set, which may be long.
const MOST_DOLLARS: usize = 8;

/// A command's tokens, with where each one's bytes are. One pass, no recursion, at most
/// MOST_TOKENS of them.
struct Tokens<'a> {
    raw: &'a [u8],
    list: Vec<(Kind, Range<usize>)>,
}

fn lex(raw: &[u8]) -> Option<Tokens<'_>> {
    let mut list = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if list.len() >= MOST_TOKENS {
            return None;
        }
        match raw[i] {
            b' ' => i += 1,
            b'\r' | b'\n' => break,
            b'(' => {
                list.push((Kind::Open, i..i + 1));
                i += 1;
            }
            b')' => {
                list.push((Kind::Close, i..i + 1));
                i += 1;
            }
            b'"' => {
                let mut j = i + 1;
                loop {
                    match raw.get(j)? {
                        b'\\' => j += 2,
                        b'"' => break,
                        b'\r' | b'\n' => return None,
                        _ => j += 1,
                    }
                }
                list.push((Kind::Quoted, i..j + 1));
                i = j + 1;
            }
            b'{' | b'~' if raw[i] == b'{' || raw.get(i + 1) == Some(&b'{') => {
                let open = if raw[i] == b'~' { i + 1 } else { i };
                let close = open + raw[open..].iter().position(|&b| b == b'}')?;
                let digits = &raw[open + 1..close];
                let digits = digits.strip_suffix(b"+").unwrap_or(digits);
                let length: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
                if raw.get(close + 1..close + 3)? != b"\r\n" {
                    return None;
                }
                let end = (close + 3).checked_add(length)?;
                if end > raw.len() {
                    return None;
                }
                list.push((Kind::Literal, i..end));
                i = end;
            }
            _ => {
                let len = raw[i..]
                    .iter()
                    .position(|b| b" ()\"\r\n{".contains(b))
                    .unwrap_or(raw.len() - i);
                list.push((Kind::Atom, i..i + len.max(1)));
                i += len.max(1);
            }
        }
    }
    Some(Tokens { raw, list })
}

impl Tokens<'_> {
    fn kind(&self, i: usize) -> Option<Kind> {
        self.list.get(i).map(|(k, _)| *k)
    }

    fn bytes(&self, i: usize) -> &[u8] {
        self.list
            .get(i)
            .map_or(&[][..], |(_, r)| &self.raw[r.clone()])
    }

    fn is_word(&self, i: usize, word: &str) -> bool {
        self.kind(i) == Some(Kind::Atom) && self.bytes(i).eq_ignore_ascii_case(word.as_bytes())
    }

    fn is_string(&self, i: usize) -> bool {
        matches!(
            self.kind(i),
            Some(Kind::Atom | Kind::Quoted | Kind::Literal)
        )
    }

    /// The atoms of the parenthesised list opening at `i`, and the index after it; None
    /// when it holds anything else (a nested list stays with the caller).
    fn words(&self, i: usize) -> Option<(Vec<String>, usize)> {
        if self.kind(i) != Some(Kind::Open) {
            return None;
        }
        let mut words = Vec::new();
        let mut j = i + 1;
        loop {
            match self.kind(j)? {
                Kind::Close => return Some((words, j + 1)),
                Kind::Atom => words.push(String::from_utf8_lossy(self.bytes(j)).to_uppercase()),
                _ => return None,
            }
            j += 1;
        }
    }

    /// The bytes from token `from` to the end of the command (its CRLF included).
    fn rest(&self, from: usize) -> &[u8] {
        self.list
            .get(from)
            .map_or(&[][..], |(_, r)| &self.raw[r.start..])
    }

    /// The bytes of tokens `from..to`, as they were sent.
    fn span(&self, from: usize, to: usize) -> &[u8] {
        match (self.list.get(from), self.list.get(to.saturating_sub(1))) {
            (Some((_, a)), Some((_, b))) if to > from => &self.raw[a.start..b.end],
            _ => &[],
        }
    }
}

/// imap-codec's reading of `line` (a whole command, CRLF included).
fn decode(line: &[u8]) -> Option<Command<'static>> {
    match CommandCodec::default().decode(line) {
        Ok((b"", command)) => Some(command.into_static()),
        _ => None,
    }
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut line = parts.join(&b' ');
    line.extend_from_slice(b"\r\n");
    line
}

/// Reads a command imap-codec refused, when it is one of the extended forms. `saved`
/// gives the set `$` stands for (RFC 5182), of UIDs or of sequence numbers.
pub fn parse(raw: &[u8], saved: &dyn Fn(bool) -> String) -> Parsed {
    let Some(t) = lex(raw) else {
        return Parsed::Unknown;
    };
    // Past the tag and the command's name (a tag may itself be `$`).
    let dollars: Vec<usize> = (2..t.list.len())
        .filter(|&i| t.kind(i) == Some(Kind::Atom) && t.bytes(i) == b"$")
        .collect();
    if dollars.len() > MOST_DOLLARS {
        return match Tag::try_from(t.bytes(0).to_vec()) {
            Ok(tag) => Parsed::Bad(tag.into_static(), "Too many $ in one command"),
            Err(_) => Parsed::Unknown,
        };
    }
    if !dollars.is_empty() {
        // `$` is a whole sequence set: put the saved one in its place, then read again.
        // It is of UIDs in a UID command, and after the UID key of a search; a bare `$`
        // key in a search is of sequence numbers, like any bare set there.
        let search = t.is_word(1, "SEARCH") || (t.is_word(1, "UID") && t.is_word(2, "SEARCH"));
        let (uids, numbers) = (saved(true), saved(false));
        let mut line = Vec::with_capacity(raw.len() + uids.len().max(numbers.len()));
        let mut from = 0;
        for i in dollars {
            let uid = if search {
                t.is_word(i - 1, "UID")
            } else {
                t.is_word(1, "UID")
            };
            let at = t.list[i].1.clone();
            line.extend_from_slice(&raw[from..at.start]);
            line.extend_from_slice(if uid { &uids } else { &numbers }.as_bytes());
            from = at.end;
        }
        line.extend_from_slice(&raw[from..]);
        if let Some(command) = decode(&line) {
            return Parsed::Command(command, None);
        }
        return match extended(&line) {
            Parsed::Unknown => Parsed::Unknown,
            other => other,
        };
    }
    extended(raw)
}

fn extended(raw: &[u8]) -> Parsed {
    let Some(t) = lex(raw) else {
        return Parsed::Unknown;
    };
    if t.kind(0) != Some(Kind::Atom) {
        return Parsed::Unknown;
    }
    let Ok(tag) = Tag::try_from(t.bytes(0).to_vec()) else {
        return Parsed::Unknown;
    };
    let tag = tag.into_static();
    let found = if t.is_word(1, "LIST") {
        list(&t, &tag)
    } else if t.is_word(1, "SEARCH") {
        search(&t, 2)
    } else if t.is_word(1, "UID") && t.is_word(2, "SEARCH") {
        search(&t, 3)
    } else if t.is_word(1, "CREATE") {
        create(&t)
    } else if t.is_word(1, "APPEND") {
        append(&t)
    } else {
        return Parsed::Unknown;
    };
    match found {
        Some(Ok((command, extras))) => Parsed::Command(command, Some(extras)),
        Some(Err(why)) => Parsed::Bad(tag, why),
        None => Parsed::Unknown,
    }
}

type Found = Option<Result<(Command<'static>, Extras), &'static str>>;

/// `LIST [(selection)] reference (pattern | (patterns)) [RETURN (options)]`.
fn list(t: &Tokens<'_>, tag: &Tag<'static>) -> Found {
    let mut options = ListOptions::default();
    let mut i = 2;
    let mut extended = false;
    if t.kind(i) == Some(Kind::Open) {
        let Some((words, next)) = t.words(i) else {
            return Some(Err("Invalid selection options"));
        };
        for word in &words {
            match word.as_str() {
                "SUBSCRIBED" => options.subscribed = true,
                "RECURSIVEMATCH" => options.recursive = true,
                "SPECIAL-USE" => options.special_use = true,
                // No folder lives elsewhere: every one is already "remote or local".
                "REMOTE" => {}
                _ => return Some(Err("Unknown selection option")),
            }
        }
        // RFC 5258 §3.1: RECURSIVEMATCH only refines another option.
        if options.recursive && !options.subscribed && !options.special_use {
            return Some(Err("RECURSIVEMATCH needs another selection option"));
        }
        extended = true;
        i = next;
    }
    if !t.is_string(i) {
        return None;
    }
    let reference = i;
    i += 1;
    let mut patterns = Vec::new();
    if t.kind(i) == Some(Kind::Open) {
        i += 1;
        while t.is_string(i) {
            patterns.push(i);
            i += 1;
        }
        if t.kind(i) != Some(Kind::Close) || patterns.is_empty() {
            return Some(Err("Invalid list of patterns"));
        }
        i += 1;
        extended = true;
    } else if t.is_string(i) {
        patterns.push(i);
        i += 1;
    } else {
        return None;
    }
    if t.is_word(i, "RETURN") {
        i += 1;
        if t.kind(i) != Some(Kind::Open) {
            return Some(Err("Invalid return options"));
        }
        i += 1;
        loop {
            match t.kind(i) {
                Some(Kind::Close) => break,
                Some(Kind::Atom) => {}
                _ => return Some(Err("Invalid return options")),
            }
            let word = String::from_utf8_lossy(t.bytes(i)).to_uppercase();
            i += 1;
            match word.as_str() {
                "SUBSCRIBED" => options.return_subscribed = true,
                // Always answered: \HasChildren / \HasNoChildren, and the special uses.
                "CHILDREN" | "SPECIAL-USE" => {}
                "STATUS" => {
                    let Some((_, next)) = t.words(i) else {
                        return Some(Err("Invalid STATUS return option"));
                    };
                    let line = join(&[t.bytes(0), b"STATUS INBOX", t.span(i, next)]);
                    let Some(Command {
                        body: CommandBody::Status { item_names, .. },
                        ..
                    }) = decode(&line)
                    else {
                        return Some(Err("Invalid STATUS return option"));
                    };
                    options.status = Some(item_names.into_owned());
                    i = next;
                }
                _ => return Some(Err("Unknown return option")),
            }
        }
        i += 1;
        extended = true;
    }
    if t.kind(i).is_some() {
        return Some(Err("Unexpected arguments to LIST"));
    }
    if !extended {
        // A plain LIST imap-codec could not read: not ours to rescue.
        return None;
    }
    // SUBSCRIBED selects by subscription and says so (RFC 5258 §3.1).
    options.return_subscribed |= options.subscribed;
    let mut first = None;
    for &p in &patterns {
        let line = join(&[t.bytes(0), b"LIST", t.bytes(reference), t.bytes(p)]);
        let Some(Command {
            body:
                CommandBody::List {
                    reference,
                    mailbox_wildcard,
                },
            ..
        }) = decode(&line)
        else {
            return Some(Err("Invalid reference or pattern"));
        };
        match first {
            None => first = Some((reference, mailbox_wildcard)),
            Some(_) => options.more_patterns.push(mailbox_wildcard),
        }
    }
    let (reference, mailbox_wildcard) = first?;
    Some(Ok((
        Command {
            tag: tag.clone(),
            body: CommandBody::List {
                reference,
                mailbox_wildcard,
            },
        },
        Extras::List(options),
    )))
}

/// `[UID] SEARCH RETURN (options) criteria`.
fn search(t: &Tokens<'_>, at: usize) -> Found {
    if !t.is_word(at, "RETURN") {
        return None;
    }
    let Some((words, next)) = t.words(at + 1) else {
        return Some(Err("Invalid RETURN options"));
    };
    let mut options = SearchReturn::default();
    for word in &words {
        match word.as_str() {
            "MIN" => options.min = true,
            "MAX" => options.max = true,
            "ALL" => options.all = true,
            "COUNT" => options.count = true,
            "SAVE" => options.save = true,
            _ => return Some(Err("Unknown RETURN option")),
        }
    }
    if words.is_empty() {
        options.all = true;
    }
    if t.kind(next).is_none() {
        return Some(Err("Missing search criteria"));
    }
    let mut line = t.span(0, at).to_vec();
    line.push(b' ');
    line.extend_from_slice(t.rest(next));
    match decode(&line) {
        Some(
            command @ Command {
                body: CommandBody::Search { .. },
                ..
            },
        ) => Some(Ok((command, Extras::Search(options)))),
        _ => Some(Err("Invalid search criteria")),
    }
}

/// `APPEND mailbox [flags] [date] UTF8 (literal8)`: the message is the literal.
fn append(t: &Tokens<'_>) -> Found {
    let at = (3..t.list.len()).find(|&i| t.is_word(i, "UTF8"))?;
    if t.kind(at + 1) != Some(Kind::Open)
        || t.kind(at + 2) != Some(Kind::Literal)
        || t.kind(at + 3) != Some(Kind::Close)
        || t.kind(at + 4).is_some()
    {
        return Some(Err("Invalid UTF8 APPEND data"));
    }
    let line = join(&[t.span(0, at), t.bytes(at + 2)]);
    match decode(&line) {
        Some(
            command @ Command {
                body: CommandBody::Append { .. },
                ..
            },
        ) => Some(Ok((command, Extras::Utf8Append))),
        _ => Some(Err("Invalid APPEND arguments")),
    }
}

/// `CREATE mailbox (USE (attributes))`.
fn create(t: &Tokens<'_>) -> Found {
    if !t.is_string(2) || t.kind(3) != Some(Kind::Open) || !t.is_word(4, "USE") {
        return None;
    }
    let Some((uses, next)) = t.words(5) else {
        return Some(Err("Invalid USE list"));
    };
    if t.kind(next) != Some(Kind::Close) || t.kind(next + 1).is_some() {
        return Some(Err("Invalid CREATE parameters"));
    }
    let line = join(&[t.bytes(0), b"CREATE", t.bytes(2)]);
    match decode(&line) {
        Some(command) => Some(Ok((command, Extras::CreateUse(uses)))),
        None => Some(Err("Invalid folder name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(line: &str) -> Parsed {
        parse(line.as_bytes(), &|uid| {
            if uid { "7:9".into() } else { "2".into() }
        })
    }

    fn extras(line: &str) -> (CommandBody<'static>, Extras) {
        match read(line) {
            Parsed::Command(c, e) => (c.body, e.expect("extras")),
            Parsed::Bad(_, why) => panic!("{line:?}: BAD {why}"),
            Parsed::Unknown => panic!("{line:?}: not read"),
        }
    }

    fn bad(line: &str) -> &'static str {
        match read(line) {
            Parsed::Bad(_, why) => why,
            _ => panic!("{line:?} was taken"),
        }
    }

    #[test]
    fn list_options_patterns_and_status() {
        let (body, e) = extras(
            "a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"INBOX\" {4}\r\nWo%k) RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n",
        );
        assert!(matches!(body, CommandBody::List { .. }));
        let Extras::List(o) = e else { panic!() };
        assert!(o.subscribed && o.recursive && o.return_subscribed && !o.special_use);
        assert_eq!(o.more_patterns.len(), 1);
        assert_eq!(
            o.status,
            Some(vec![
                StatusDataItemName::Messages,
                StatusDataItemName::Unseen
            ])
        );
        let (_, e) = extras("a list \"\" \"*\" return (subscribed special-use)\r\n");
        let Extras::List(o) = e else { panic!() };
        assert!(o.return_subscribed && !o.subscribed);
        let (_, e) = extras("a LIST (REMOTE) \"\" %\r\n");
        assert_eq!(e, Extras::List(ListOptions::default()));
    }

    #[test]
    fn list_options_the_rfc_refuses() {
        bad("a LIST (RECURSIVEMATCH) \"\" *\r\n");
        bad("a LIST (BOGUS) \"\" *\r\n");
        bad("a LIST \"\" * RETURN (BOGUS)\r\n");
        bad("a LIST \"\" () \r\n");
        bad("a LIST \"\" * RETURN (STATUS (NOTANITEM))\r\n");
        bad("a LIST \"\" * RETURN (SUBSCRIBED) extra\r\n");
        // A plain LIST imap-codec refused is not rescued here.
        assert!(matches!(read("a LIST \"\"\r\n"), Parsed::Unknown));
    }

    #[test]
    fn search_return_and_create_use() {
        let (body, e) =
            extras("t UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 SUBJECT {3}\r\nabc\r\n");
        assert!(matches!(body, CommandBody::Search { uid: true, .. }));
        let Extras::Search(r) = e else { panic!() };
        assert!(r.min && r.count && !r.max && !r.all);
        let (_, e) = extras("t SEARCH RETURN () UNSEEN\r\n");
        assert_eq!(
            e,
            Extras::Search(SearchReturn {
                all: true,
                ..Default::default()
            })
        );
        let (_, e) = extras("t SEARCH RETURN (SAVE MIN) ALL\r\n");
        let Extras::Search(r) = e else { panic!() };
        assert!(r.save && r.min && !r.all);
        bad("t SEARCH RETURN (MIN)\r\n");
        bad("t SEARCH RETURN (MIN) NOTAKEY\r\n");
        let (body, e) = extras("u APPEND INBOX (\\Seen) UTF8 (~{4}\r\nab\0c)\r\n");
        assert!(matches!(body, CommandBody::Append { .. }));
        assert_eq!(e, Extras::Utf8Append);
        bad("u APPEND INBOX UTF8 ({4}\r\nabcd\r\n");
        let (body, e) = extras("c CREATE \"My Sent\" (USE (\\Sent))\r\n");
        assert!(matches!(body, CommandBody::Create { .. }));
        assert_eq!(e, Extras::CreateUse(vec!["\\SENT".into()]));
    }

    /// RFC 5182's `$`: the saved set takes its place, of UIDs in UID commands.
    #[test]
    fn dollar_is_the_saved_result() {
        let Parsed::Command(c, None) = read("a UID FETCH $ (FLAGS)\r\n") else {
            panic!()
        };
        assert!(format!("{:?}", c.body).contains("7"), "{:?}", c.body);
        let Parsed::Command(c, None) = read("a STORE $ +FLAGS (\\Seen)\r\n") else {
            panic!()
        };
        assert!(matches!(c.body, CommandBody::Store { .. }));
        let Parsed::Command(c, None) = read("a UID SEARCH UID $ $\r\n") else {
            panic!()
        };
        let text = format!("{:?}", c.body);
        assert!(text.contains("7") && text.contains("Value(2)"), "{text}");
        let (body, e) = extras("a SEARCH RETURN (COUNT) OR $ UNSEEN\r\n");
        assert!(matches!(body, CommandBody::Search { .. }));
        assert!(matches!(e, Extras::Search(_)));
        // A tag that is `$` is a tag.
        assert!(matches!(read("$ FETCH 1 (FLAGS\r\n"), Parsed::Unknown));
        // A flag that starts with $ is not the saved result.
        assert!(matches!(
            read("a STORE 1 +FLAGS ($Junk\r\n"),
            Parsed::Unknown
        ));
    }

    /// Hostile shapes: cost their length, never panic, never read past the end.
    #[test]
    fn hostile_lines_are_refused_quietly() {
        for line in [
            "a LIST ((((((((((((\r\n".to_string(),
            format!("a LIST {}\r\n", "(".repeat(100_000)),
            "a LIST (SUBSCRIBED) \"\" {4294967296}\r\nx\r\n".to_string(),
            "a LIST (SUBSCRIBED) \"\" {99999999999999999999}\r\n".to_string(),
            "a LIST (SUBSCRIBED) \"\" {5}\r\nab".to_string(),
            "a LIST (SUBSCRIBED) \"\" \"unterminated\r\n".to_string(),
            "a LIST (SUBSCRIBED) \"\" \"x\\".to_string(),
            "a SEARCH RETURN (".to_string(),
            "a CREATE x (USE (\\Sent)\r\n".to_string(),
            "\r\n".to_string(),
            String::new(),
        ] {
            let _ = read(&line);
        }
        // A line of tokens past the most read is not read at all (its tokens would
        // cost twelve times its length), however it would have parsed.
        assert!(matches!(
            read(&format!(
                "a SEARCH RETURN (COUNT) {}ALL\r\n",
                "( ".repeat(MOST_TOKENS)
            )),
            Parsed::Unknown
        ));
        // Many `$`: each would become the whole saved set.
        let many = format!("a SEARCH RETURN (COUNT) {}ALL\r\n", "OR $ ".repeat(50));
        assert!(matches!(
            parse(many.as_bytes(), &|_| "1,3,5".repeat(100_000)),
            Parsed::Bad(_, "Too many $ in one command")
        ));
        assert!(matches!(
            read(&format!("a LIST {}\r\n", "(".repeat(MOST_TOKENS / 2))),
            Parsed::Bad(..)
        ));
    }
}
