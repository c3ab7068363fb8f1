//! A scripted IMAP client for the compliance tests: it sends tagged commands and hands
//! back every line the server said up to the tagged completion, literals inline, so a
//! test can hold the exact dialogue (and what came when) against the RFC.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

#[path = "../../benches/support/tls_client.rs"]
mod tls_client;

use super::{Process, TEST_HASH, Workspace, free_port};

/// A server with IMAP on loopback (STARTTLS with its self-signed certificate) and the
/// accounts named, each with the password "quickstart".
pub struct Server {
    pub w: Workspace,
    pub process: Process,
    pub port: u16,
}

impl Server {
    pub fn start(accounts: &[&str]) -> Server {
        Server::with(accounts, "")
    }

    /// `extra` follows the IMAP listener's line in the spec: other listeners first,
    /// then tables ([limits], say).
    pub fn with(accounts: &[&str], extra: &str) -> Server {
        let port = free_port();
        let mut spec = format!("[listeners]\nimap = \"127.0.0.1:{port}\"\n{extra}\n");
        for account in accounts {
            let (local, domain) = account.split_once('@').expect("local@domain");
            spec.push_str(&format!(
                "[domains.\"{domain}\".aliases.\"{local}\"]\nmailbox = {{ password = {{ hash = \"{TEST_HASH}\" }} }}\n\n"
            ));
        }
        let w = Workspace::new(&spec);
        let process = w.serve(port);
        Server { w, process, port }
    }

    /// A logged-in session of `account`.
    pub fn login(&self, account: &str) -> Client {
        Client::login(self.port, account)
    }

    /// Runs a Python client from tests/peers as `script PORT ACCOUNT quickstart`; it must
    /// end saying "all done".
    #[track_caller]
    pub fn peer_passes(&self, script: &str, account: &str) {
        let port = self.port.to_string();
        let run = super::python_peer_run(script, &[&port, account, "quickstart"], self.w.path());
        assert!(
            run.code == 0 && run.stdout.contains("all done"),
            "{script}:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
}

/// The connection, in the clear until STARTTLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(t) => t.flush(),
        }
    }
}

pub struct Client {
    stream: BufReader<Conn>,
    next_tag: u32,
    pub greeting: String,
}

impl Client {
    /// A connection in the clear, its greeting read.
    pub fn connect(port: u16) -> Client {
        Client::connect_from("127.0.0.1", port)
    }

    /// A connection from the loopback address `source` (127.0.0.2…): another client
    /// to the per-address limits.
    pub fn connect_from(source: &str, port: u16) -> Client {
        let stream = super::connect_from(source, port);
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut client = Client {
            stream: BufReader::new(Conn::Plain(stream)),
            next_tag: 1,
            greeting: String::new(),
        };
        client.greeting = client.line().expect("greeting");
        client
    }

    /// STARTTLS, accepting the server's (self-signed) certificate.
    pub fn starttls(&mut self) {
        expect(&self.run("STARTTLS"), &["T OK …"]);
        let Conn::Plain(socket) = self.stream.get_ref() else {
            panic!("TLS already");
        };
        let socket = socket.try_clone().expect("clone");
        let name = ServerName::try_from("mx.example.test").expect("name");
        let tls = ClientConnection::new(tls_client::any_certificate(), name).expect("TLS client");
        self.stream = BufReader::new(Conn::Tls(Box::new(StreamOwned::new(tls, socket))));
    }

    /// A session of `account`, logged in over STARTTLS.
    pub fn login(port: u16, account: &str) -> Client {
        Client::login_from("127.0.0.1", port, account)
    }

    pub fn login_from(source: &str, port: u16, account: &str) -> Client {
        let mut c = Client::connect_from(source, port);
        c.starttls();
        let done = c.run(&format!("LOGIN {account} quickstart"));
        assert!(
            done.last().is_some_and(|l| l.starts_with("T OK")),
            "{done:?}"
        );
        c
    }

    /// Sends bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        let conn = self.stream.get_mut();
        conn.write_all(bytes).expect("write");
        conn.flush().expect("flush");
    }

    /// One response line without its CRLF, with any literals it announces read in
    /// place (`{5}\r\nhello` stays as written); None when the connection ended.
    pub fn line(&mut self) -> Option<String> {
        let mut out = Vec::new();
        loop {
            let mut part = Vec::new();
            let n = self.stream.read_until(b'\n', &mut part).ok()?;
            if n == 0 {
                return (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned());
            }
            let text = part.strip_suffix(b"\r\n").unwrap_or(&part).to_vec();
            out.extend_from_slice(&text);
            match literal_length(&text) {
                Some(len) => {
                    out.extend_from_slice(b"\r\n");
                    let mut bytes = vec![0u8; len];
                    self.stream.read_exact(&mut bytes).ok()?;
                    out.extend_from_slice(&bytes);
                }
                None => return Some(String::from_utf8_lossy(&out).into_owned()),
            }
        }
    }

    fn tag(&mut self) -> String {
        let tag = format!("T{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    /// Runs `command` under a fresh tag: every line up to and including its completion,
    /// whose tag is written `T` (so expectations need not count tags).
    pub fn run(&mut self, command: &str) -> Vec<String> {
        let tag = self.tag();
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.until(&tag)
    }

    /// APPENDs `message` to `folder` (with `flags`, e.g. "(\\Seen)", or "") as a
    /// non-synchronizing literal.
    pub fn append(&mut self, folder: &str, flags: &str, message: &str) -> Vec<String> {
        let tag = self.tag();
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!("{flags} ")
        };
        self.send(
            format!(
                "{tag} APPEND {folder} {flags}{{{}+}}\r\n{message}\r\n",
                message.len()
            )
            .as_bytes(),
        );
        self.until(&tag)
    }

    /// Lines up to the one tagged `tag` (a command sent by hand).
    pub fn until(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let Some(line) = self.line() else {
                panic!("connection closed before {tag} completed: {lines:?}");
            };
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                lines.push(format!("T {rest}"));
                return lines;
            }
            lines.push(line);
        }
    }

    /// Whatever the server says within `wait` while no command is in progress.
    pub fn unsolicited(&mut self, wait: Duration) -> Vec<String> {
        let socket = |c: &Client| c.stream.get_ref().socket().try_clone().expect("clone");
        socket(self).set_read_timeout(Some(wait)).expect("timeout");
        let mut lines = Vec::new();
        while let Some(line) = self.line() {
            lines.push(line);
        }
        socket(self)
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        lines
    }
}

/// The length a line's trailing `{N}` (or `{N+}`) announces.
pub fn literal_length(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether `line` matches `pattern`, where `…` stands for any run of characters.
pub fn matches(pattern: &str, line: &str) -> bool {
    let pieces: Vec<&str> = pattern.split('…').collect();
    let (first, rest) = pieces.split_first().unwrap_or((&"", &[]));
    let Some(mut left) = line.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return left.is_empty();
    };
    for piece in middle {
        match left.find(piece) {
            Some(at) => left = &left[at + piece.len()..],
            None => return false,
        }
    }
    left.len() >= last.len() && left.ends_with(last)
}

/// Asserts that `got` is `want`, line for line (`…` matches anything within a line).
#[track_caller]
pub fn expect(got: &[String], want: &[&str]) {
    let fits = got.len() == want.len() && got.iter().zip(want).all(|(g, w)| matches(w, g));
    assert!(
        fits,
        "\nwanted:\n  {}\ngot:\n  {}\n",
        want.join("\n  "),
        got.join("\n  ")
    );
}

/// A short message with a subject and a body.
pub fn message(subject: &str) -> String {
    format!(
        "From: Alice <alice@example.test>\r\nTo: me@example.test\r\nSubject: {subject}\r\n\
Date: Tue, 1 Jul 2025 10:00:00 +0000\r\nMessage-ID: <{}@example.test>\r\n\r\n{subject} body\r\n",
        subject.replace(' ', ".")
    )
}
