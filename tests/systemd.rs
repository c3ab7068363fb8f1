//! Running under systemd: READY=1 once listening and applied, STATUS= after each
//! reconcile, watchdog pings, STOPPING=1; JSON log lines; the example unit verifies.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{TEST_HASH, Workspace, free_port};

/// Every notification received until `until` holds or 20 s pass.
fn collect(socket: &UnixDatagram, seen: &mut Vec<String>, until: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !until(seen) && Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.extend(String::from_utf8_lossy(&buf[..n]).lines().map(String::from));
        }
    }
}

#[test]
fn serve_tells_systemd_it_is_ready_how_it_is_and_that_it_lives() {
    let mx = free_port();
    let body = |alias: &str| {
        format!(
            r#"
[listeners]
mx = "127.0.0.1:{mx}"

[domains."example.test".aliases.{alias}]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
        )
    };
    let w = Workspace::new(&body("me"));
    let path = w.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut server = w.serve_with(
        mx,
        &["--log-format", "json"],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen = Vec::new();
    collect(&socket, &mut seen, |s| {
        s.iter().any(|l| l == "READY=1") && s.iter().any(|l| l == "WATCHDOG=1")
    });
    assert!(seen.iter().any(|l| l == "READY=1"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("STATUS=serving mx.example.test; store revision 1")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|l| l == "WATCHDOG=1"), "{seen:?}");
    // The MX answers once READY=1 was sent.
    assert!(std::net::TcpStream::connect(("127.0.0.1", mx)).is_ok());

    // A spec change: the status line follows the reconcile.
    w.write_spec(&body("you"));
    seen.clear();
    collect(&socket, &mut seen, |s| {
        s.iter().any(|l| l.starts_with("STATUS=store revision 2"))
    });
    assert!(
        seen.iter().any(
            |l| l.starts_with("STATUS=store revision 2; last reconcile") && l.contains("added")
        ),
        "{seen:?}"
    );

    server.terminate();
    seen.clear();
    collect(&socket, &mut seen, |s| s.iter().any(|l| l == "STOPPING=1"));
    assert!(seen.iter().any(|l| l == "STOPPING=1"), "{seen:?}");

    // Every log line is one JSON object with the event's fields.
    let (log, lines) = (server.log_text(), server.json_log());
    assert!(
        lines
            .iter()
            .any(|v| v["message"] == "spec reconciled" && v["level"] == "INFO"),
        "{log}"
    );
}

#[test]
fn the_example_unit_file_verifies() {
    // systemd-analyze wants the ExecStart binary to exist: the one just built.
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ferrymail.service"),
    )
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    common::verify_unit(&unit, std::path::Path::new(common::BIN));
}
