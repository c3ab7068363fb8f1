//! No lost mail: messages are sent with smtplib while the server is killed with SIGKILL;
//! after a restart every message that got a 250 reaches the downstream MTA.

mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::time::Duration;

use common::{Workspace, free_port, python_peer, received, wait_for};

#[test]
fn every_accepted_message_survives_a_sigkill() {
    let (mx, relay) = (free_port(), free_port());
    let w = Workspace::new("");
    let (_dns, dns_port) = common::quiet_dns(w.path());
    w.write_spec(&format!(
        "[listeners]\nmx = \"127.0.0.1:{mx}\"\n[delivery]\nrelay = \"127.0.0.1:{relay}\"\n[dns]\nresolver = \"127.0.0.1:{dns_port}\"\n\
         [domains.\"example.test\".aliases.hello]\nforward = [\"friend@elsewhere.test\"]\n"
    ));
    let sink_dir = w.path().join("sink");
    let _sink = python_peer(
        "sink.py",
        &[&relay.to_string(), sink_dir.to_str().unwrap()],
        w.path(),
    );
    let mut server = w.serve(mx);

    let mut sender = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/send_many.py"
        ))
        .args([&mx.to_string(), "400", "hello@example.test"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(sender.stdout.take().unwrap());
    // Kill the server in the middle of the stream: after a pseudo-random number of 250s.
    let kill_after = 40 + (std::process::id() as usize % 120);
    let mut accepted = 0usize;
    let mut killed = false;
    for line in lines.lines() {
        let line = line.unwrap();
        if line.starts_with("OK ") {
            accepted += 1;
            if accepted == kill_after {
                server.kill_hard();
                killed = true;
            }
        }
    }
    sender.wait().unwrap();
    assert!(
        killed,
        "the server was not killed mid-stream (only {accepted} messages sent)"
    );

    let server = w.serve(mx);
    let delivered_all = wait_for(Duration::from_secs(60), || {
        let subjects = subjects(&sink_dir);
        (0..accepted).all(|n| subjects.contains_key(&format!("durable-{n}")))
    });
    let subjects = subjects(&sink_dir);
    let duplicates: usize = subjects.values().map(|c| c - 1).sum();
    eprintln!(
        "durability: {accepted} accepted (250) before SIGKILL, {} distinct delivered, {duplicates} duplicate(s)",
        subjects.len()
    );
    assert!(
        delivered_all,
        "a message that got 250 was lost:\n{}",
        server.log_text()
    );
}

/// How often each "durable-N" subject arrived.
fn subjects(dir: &std::path::Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for msg in received(dir) {
        if let Some(line) = msg
            .content
            .lines()
            .find(|l| l.starts_with("Subject: durable-"))
        {
            *counts
                .entry(line["Subject: ".len()..].trim().to_string())
                .or_default() += 1;
        }
    }
    counts
}
