//! FETCH to the letter (RFC 3501 §6.4.5, §7.4.2): sections inside an attached message,
//! BODYSTRUCTURE of digests and of attached messages' text parts, ENVELOPE groups and
//! source routes, partial fetches; the bytes the server sends, compared exactly.

mod common;

use common::imap::{Server, expect};

const ME: &str = "me@example.test";

const INNER: &str = "From: c@d.test\r\nSubject: inner\r\n\
Content-Type: multipart/alternative; boundary=inner\r\n\r\n\
--inner\r\nContent-Type: text/plain\r\n\r\ninner plain\r\n\
--inner\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n--inner--\r\n";

fn forwarded() -> String {
    format!(
        "From: a@b.test\r\nSubject: outer\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n\
--outer\r\nContent-Type: text/plain\r\n\r\nouter text\r\n\
--outer\r\nContent-Type: message/rfc822\r\n\r\n{INNER}\r\n--outer--\r\n"
    )
}

/// `* 1 FETCH (NAME {len}\r\nbytes)` as the server writes a literal.
fn literal(name: &str, bytes: &str) -> String {
    format!("* 1 FETCH ({name} {{{}}}\r\n{bytes})", bytes.len())
}

fn with(message: &str) -> (Server, common::imap::Client) {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    expect(&c.append("INBOX", "", message), &["T OK …"]);
    c.run("SELECT INBOX");
    (server, c)
}

#[test]
fn sections_of_an_attached_message() {
    let (_server, mut c) = with(&forwarded());
    let (header, text) = INNER.split_at(INNER.find("\r\n\r\n").unwrap() + 4);
    let cases = [
        ("2.HEADER", header.to_string()),
        ("2.TEXT", text.to_string()),
        ("2", INNER.to_string()),
        ("2.MIME", "Content-Type: message/rfc822\r\n\r\n".to_string()),
        ("2.1", "inner plain".to_string()),
        ("2.2", "<p>inner</p>".to_string()),
        ("2.1.MIME", "Content-Type: text/plain\r\n\r\n".to_string()),
        (
            "2.HEADER.FIELDS (SUBJECT)",
            "Subject: inner\r\n\r\n".to_string(),
        ),
        ("1", "outer text".to_string()),
    ];
    for (section, bytes) in cases {
        let done = c.run(&format!("FETCH 1 (BODY.PEEK[{section}])"));
        let name = format!("BODY[{section}]");
        expect(&done, &[&literal(&name, &bytes), "T OK …"]);
    }
    // A part that is not there is empty (RFC 3501 leaves it to the server; Dovecot too).
    let done = c.run("FETCH 1 (BODY.PEEK[2.3])");
    expect(&done, &[&literal("BODY[2.3]", ""), "T OK …"]);
    // Partial: the first 5 bytes of the attached message's text part.
    expect(
        &c.run("FETCH 1 (BODY.PEEK[2.1]<0.5>)"),
        &["* 1 FETCH (BODY[2.1]<0> {5}\r\ninner)", "T OK …"],
    );
}

/// A message that is itself a message/rfc822 (a bounce or a forward as the whole
/// body): it has one part, 1, the attached message whole (RFC 3501 §6.4.5), and
/// 1.HEADER, 1.TEXT, 1.1 … name what is inside that. The attached message here is a
/// digest with an epilogue, which is still its text (imaptest's
/// fetch-body-message-rfc822-mime case).
#[test]
fn sections_of_a_message_that_is_an_attached_message() {
    let inner_header =
        "From: sub@x.test\r\nSubject: sub\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n";
    // The line break before a boundary belongs to the boundary, not to the part.
    let m1 = "From: m1@x.test\r\nSubject: m1\r\n\r\nm1 body";
    let inner_text = format!("prologue\r\n--d\r\n\r\n{m1}\r\n--d--\r\nepilogue\r\n");
    let inner = format!("{inner_header}{inner_text}");
    let (_server, mut c) = with(&format!(
        "From: a@x.test\r\nContent-Type: message/rfc822\r\n\r\n{inner}"
    ));
    let cases = [
        ("1", inner.clone()),
        ("TEXT", inner.clone()),
        ("1.HEADER", inner_header.to_string()),
        ("1.TEXT", inner_text.clone()),
        ("1.1", m1.to_string()),
        (
            "1.1.HEADER",
            "From: m1@x.test\r\nSubject: m1\r\n\r\n".to_string(),
        ),
        ("1.1.TEXT", "m1 body".to_string()),
        ("1.1.1", "m1 body".to_string()),
    ];
    for (section, bytes) in cases {
        let done = c.run(&format!("FETCH 1 (BODY.PEEK[{section}])"));
        let name = format!("BODY[{section}]");
        expect(&done, &[&literal(&name, &bytes), "T OK …"]);
    }
    let structure = c.run("FETCH 1 (BODYSTRUCTURE)").join(" ");
    assert!(
        structure.contains("(BODYSTRUCTURE (\"MESSAGE\" \"RFC822\""),
        "{structure}"
    );
    assert!(structure.contains("\"DIGEST\""), "{structure}");
}

#[test]
fn bodystructure_counts_lines_inside_attached_messages_and_types_digest_parts() {
    let (_server, mut c) = with(&forwarded());
    let done = c.run("FETCH 1 (BODYSTRUCTURE)");
    expect(&done, &["* 1 FETCH (BODYSTRUCTURE (…)) …", "T OK …"]);
    let line = &done[0];
    // The text parts inside the attached message: "inner plain" is one line.
    assert!(
        line.contains("(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 11 1 "),
        "{line}"
    );
    assert!(line.contains("\"MESSAGE\" \"RFC822\""), "{line}");

    let digest = "From: a@b.test\r\nSubject: digest\r\n\
Content-Type: multipart/digest; boundary=d\r\n\r\n\
--d\r\n\r\nFrom: one@x.test\r\nSubject: first\r\n\r\nbody one\r\n\
--d\r\nContent-Type: text/plain\r\n\r\nnot a message\r\n--d--\r\n";
    let (_server, mut c) = with(digest);
    let done = c.run("FETCH 1 (BODYSTRUCTURE)");
    let line = &done[0];
    // RFC 2046 §5.1.5: a digest's part without Content-Type is message/rfc822.
    assert!(
        line.starts_with("* 1 FETCH (BODYSTRUCTURE ((\"MESSAGE\" \"RFC822\" "),
        "{line}"
    );
    assert!(line.contains("\"first\""), "the attached envelope: {line}");
    assert!(line.contains("\"DIGEST\""), "{line}");
    expect(
        &c.run("FETCH 1 (BODY.PEEK[1.HEADER])"),
        &[
            &literal(
                "BODY[1.HEADER]",
                "From: one@x.test\r\nSubject: first\r\n\r\n",
            ),
            "T OK …",
        ],
    );
}

#[test]
fn envelope_groups_comments_and_source_routes() {
    let message = "From: <@relay1,@relay2:user@domain.test>\r\n\
To: group1: a@b.test;, group2: (nobody) ;\r\nSubject: routes\r\n\r\nbody\r\n";
    let (_server, mut c) = with(message);
    expect(
        &c.run("FETCH 1 (ENVELOPE)"),
        &[
            "* 1 FETCH (ENVELOPE (NIL \"routes\" \
((NIL \"@relay1,@relay2\" \"user\" \"domain.test\")) \
((NIL \"@relay1,@relay2\" \"user\" \"domain.test\")) \
((NIL \"@relay1,@relay2\" \"user\" \"domain.test\")) \
((NIL NIL \"group1\" NIL)(NIL NIL \"a\" \"b.test\")(NIL NIL NIL NIL)\
(NIL NIL \"group2\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL))",
            "T OK …",
        ],
    );
}

/// RFC 3501 §6.4.5: BODY[] without .PEEK sets \Seen, and the FETCH says so.
#[test]
fn fetching_a_body_sets_seen_and_tells_it() {
    let (_server, mut c) = with(&common::imap::message("hello"));
    let done = c.run("FETCH 1 (BODY[TEXT])");
    expect(
        &done,
        &[
            "* 1 FETCH (BODY[TEXT] {12}\r\nhello body\r\n FLAGS (\\Seen \\Recent))",
            "T OK …",
        ],
    );
    expect(
        &c.run("FETCH 1 (FLAGS)"),
        &["* 1 FETCH (FLAGS (\\Seen \\Recent))", "T OK …"],
    );
}

const ENCODED: &str = "From: a@b.test\r\nSubject: parts\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n\
--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n\
AAFiaW4AYXJ5DQpsaW5l\r\nIHR3bw==\r\n\
--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
caf=C3=A9 =\r\nsoft break\r\n\
--b\r\nContent-Type: application/x-thing\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n\
begin 644 x\r\nend\r\n--b--\r\n";

/// RFC 3516: BINARY undoes the transfer encoding; a NUL sends the bytes as a literal8;
/// BINARY.SIZE is the decoded size; an encoding it cannot undo fails the FETCH with
/// [UNKNOWN-CTE]; APPEND takes a literal8.
#[test]
fn binary_fetches_decoded_parts() {
    let (_server, mut c) = with(ENCODED);
    let caps = c.run("CAPABILITY").join(" ");
    assert!(caps.contains(" BINARY"), "{caps}");
    let decoded = "\u{0}\u{1}bin\u{0}ary\r\nline two";
    expect(
        &c.run("FETCH 1 (BINARY.SIZE[2] BINARY.SIZE[3] BINARY.SIZE[1])"),
        &[
            "* 1 FETCH (BINARY.SIZE[2] 19 BINARY.SIZE[3] 16 BINARY.SIZE[1] 5)",
            "T OK …",
        ],
    );
    expect(
        &c.run("FETCH 1 BINARY.PEEK[2]"),
        &[
            &format!("* 1 FETCH (BINARY[2] ~{{19}}\r\n{decoded})"),
            "T OK …",
        ],
    );
    expect(
        &c.run("FETCH 1 BINARY.PEEK[3]"),
        &["* 1 FETCH (BINARY[3] {16}\r\ncafé soft break)", "T OK …"],
    );
    expect(
        &c.run("FETCH 1 BINARY.PEEK[2]<5.3>"),
        &["* 1 FETCH (BINARY[2] ~{3}\r\n\u{0}ar)", "T OK …"],
    );
    expect(&c.run("FETCH 1 BINARY.PEEK[4]"), &["T NO [UNKNOWN-CTE] …"]);
    // PEEK left \Seen alone; BINARY without it sets it.
    expect(
        &c.run("FETCH 1 FLAGS"),
        &["* 1 FETCH (FLAGS (\\Recent))", "T OK …"],
    );
    expect(
        &c.run("FETCH 1 BINARY[1]"),
        &[
            "* 1 FETCH (BINARY[1] {5}\r\nplain FLAGS (\\Seen \\Recent))",
            "T OK …",
        ],
    );
    // A literal8 APPEND keeps its bytes.
    let body = "Subject: raw\r\n\r\nnul \u{0} inside\r\n";
    c.send(format!("A APPEND INBOX ~{{{}}}\r\n", body.len()).as_bytes());
    let go = c.line().unwrap();
    assert!(go.starts_with('+'), "{go}");
    c.send(format!("{body}\r\n").as_bytes());
    expect(
        &c.until("A"),
        &["* 2 EXISTS", "* 2 RECENT", "T OK [APPENDUID …"],
    );
    expect(
        &c.run("FETCH 2 BINARY.PEEK[]"),
        &[
            &format!("* 2 FETCH (BINARY[] ~{{{}}}\r\n{body})", body.len()),
            "T OK …",
        ],
    );
}
