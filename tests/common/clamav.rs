//! ClamAV's clamd (Debian's clamav-daemon) for the virus tests: no signature download is
//! possible here, so its database is one signature of our own, for the EICAR test file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Process, free_port, wait_for};

/// The EICAR anti-virus test file: harmless, and what every scanner is tested with.
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// The name clamd gives it with the signature below (".UNOFFICIAL": not from ClamAV's own
/// databases).
pub const EICAR_NAME: &str = "Ferrymail.Test.EICAR.UNOFFICIAL";

pub struct Clamd {
    pub process: Process,
    pub port: u16,
}

/// Starts clamd in `dir`/clamav on a free port and waits until it answers PING.
pub fn start(dir: &Path) -> Clamd {
    let root = dir.join("clamav");
    std::fs::create_dir_all(root.join("db")).expect("clamav dirs");
    let hex: String = EICAR.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        root.join("db/ferrymail-test.ndb"),
        format!("Ferrymail.Test.EICAR:0:*:{hex}\n"),
    )
    .expect("signature file");
    let port = free_port();
    let conf = root.join("clamd.conf");
    std::fs::write(
        &conf,
        format!(
            "TCPSocket {port}\nTCPAddr 127.0.0.1\nDatabaseDirectory {db}\nForeground yes\n\
             LogFile {log}\nPidFile {pid}\nUser root\n",
            db = root.join("db").display(),
            log = root.join("clamd.log").display(),
            pid = root.join("clamd.pid").display(),
        ),
    )
    .expect("clamd.conf");
    let log = root.join("stderr.log");
    let child = Command::new("clamd")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("clamd log"))
        .spawn()
        .expect("clamd must be installed (scripts/test installs clamav-daemon)");
    let mut process = Process { child, log };
    let up = wait_for(Duration::from_secs(60), || !process.alive() || ping(port));
    assert!(
        up && process.alive(),
        "clamd did not start:\n{}\n{}",
        process.log_text(),
        std::fs::read_to_string(root.join("clamd.log")).unwrap_or_default()
    );
    Clamd { process, port }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = [0u8; 8];
    stream.write_all(b"zPING\0").is_ok()
        && stream
            .read(&mut answer)
            .is_ok_and(|n| answer[..n].starts_with(b"PONG"))
}
