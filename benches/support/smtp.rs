//! The SMTP ends of the throughput benches: a client load of plain sessions (timed from
//! the end of data to the 250) and a counting sink that accepts everything.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Payload bytes per message, as smtp-source's `-l` counts them (headers not included).
pub const MESSAGE_BYTES: usize = 10_240;
pub const SENDER: &str = "sender@sender.test";
pub const RECIPIENT: &str = "hello@bench.test";

pub struct ClientLoad {
    pub wall: Duration,
    pub ok: usize,
    pub latencies: Vec<Duration>,
    pub errors: Vec<String>,
}

/// `sessions` connections, each sending its share of `total` messages back to back (no
/// pipelining, like smtp-source); each message is timed from its final "\r\n.\r\n" to the
/// reply.
pub fn client_load(
    port: u16,
    sessions: usize,
    total: usize,
    tag: &str,
    timeout: Duration,
) -> ClientLoad {
    let deadline = Instant::now() + timeout;
    let results = Arc::new(Mutex::new((Vec::new(), Vec::new(), 0usize)));
    let started = Instant::now();
    let handles: Vec<_> = (0..sessions)
        .map(|s| {
            let share = total / sessions + usize::from(s < total % sessions);
            let results = results.clone();
            let tag = tag.to_string();
            thread::spawn(move || {
                let mut latencies = Vec::with_capacity(share);
                let outcome = client_session(port, s, share, &tag, deadline, &mut latencies);
                let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
                r.2 += latencies.len();
                r.0.extend(latencies);
                if let Err(e) = outcome {
                    r.1.push(format!("session {s}: {e}"));
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let wall = started.elapsed();
    let (latencies, errors, ok) = Arc::try_unwrap(results)
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_default();
    ClientLoad {
        wall,
        ok,
        latencies,
        errors,
    }
}

/// The message as smtp-source builds it: a few headers and 78-character lines of payload.
pub fn probe_message(tag: &str, session: usize, n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: {tag}-{session}-{n}\r\n\
         Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-Id: <{tag}.{session}.{n}@sender.test>\r\n\r\n"
    )
    .into_bytes();
    let mut left = MESSAGE_BYTES;
    let mut line = 0usize;
    while left > 0 {
        let take = left.min(80);
        let mut text = format!("{}", line % 10).into_bytes();
        text.resize(take.saturating_sub(2).max(1), b'X');
        m.extend_from_slice(&text);
        m.extend_from_slice(b"\r\n");
        left -= take;
        line += 1;
    }
    m
}

fn client_session(
    port: u16,
    session: usize,
    count: usize,
    tag: &str,
    deadline: Instant,
    latencies: &mut Vec<Duration>,
) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    expect(&mut reader, 220, "greeting")?;
    let command = |w: &mut TcpStream, r: &mut BufReader<TcpStream>, line: &str, code: u16| {
        w.write_all(line.as_bytes())
            .map_err(|e| format!("{}: {e}", line.trim()))?;
        expect(r, code, line.trim())
    };
    command(&mut writer, &mut reader, "EHLO probe.bench.test\r\n", 250)?;
    for n in 0..count {
        if Instant::now() > deadline {
            return Err("probe deadline passed".into());
        }
        command(
            &mut writer,
            &mut reader,
            &format!("MAIL FROM:<{SENDER}>\r\n"),
            250,
        )?;
        command(
            &mut writer,
            &mut reader,
            &format!("RCPT TO:<{RECIPIENT}>\r\n"),
            250,
        )?;
        command(&mut writer, &mut reader, "DATA\r\n", 354)?;
        let message = probe_message(tag, session, n);
        // Everything but the last CRLF; the clock starts with the end-of-data marker.
        writer
            .write_all(&message[..message.len() - 2])
            .map_err(|e| format!("message body: {e}"))?;
        let sent = Instant::now();
        writer
            .write_all(b"\r\n.\r\n")
            .map_err(|e| format!("end of data: {e}"))?;
        expect(&mut reader, 250, "end of data")?;
        latencies.push(sent.elapsed());
    }
    let _ = command(&mut writer, &mut reader, "QUIT\r\n", 221);
    Ok(())
}

/// Reads one (possibly multi-line) reply and checks its code.
fn expect(reader: &mut BufReader<TcpStream>, code: u16, what: &str) -> Result<(), String> {
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(format!("{what}: connection closed")),
            Ok(_) => {}
            Err(e) => return Err(format!("{what}: {e}")),
        }
        if line.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        return if line.starts_with(&code.to_string()) {
            Ok(())
        } else {
            Err(format!("{what}: {}", line.trim_end()))
        };
    }
}

/// A minimal SMTP server that accepts everything and counts messages.
pub fn builtin_sink(listener: TcpListener, delivered: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let d = delivered.clone();
                thread::spawn(move || {
                    let _ = builtin_sink_session(stream, &d);
                });
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn builtin_sink_session(stream: TcpStream, delivered: &AtomicU64) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    writer.write_all(b"220 sink ESMTP\r\n")?;
    let mut in_data = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if in_data {
            if line == b".\r\n" {
                in_data = false;
                delivered.fetch_add(1, Ordering::SeqCst);
                writer.write_all(b"250 2.0.0 Ok\r\n")?;
            }
            continue;
        }
        let verb = line
            .iter()
            .take(4)
            .map(u8::to_ascii_uppercase)
            .collect::<Vec<_>>();
        match verb.as_slice() {
            b"EHLO" => writer.write_all(b"250-sink\r\n250 8BITMIME\r\n")?,
            b"DATA" => {
                in_data = true;
                writer.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
            }
            b"QUIT" => {
                writer.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => writer.write_all(b"250 2.0.0 Ok\r\n")?,
        }
    }
}
