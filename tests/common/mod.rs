//! The one test harness: a temporary workspace with a spec and a data dir, and the real
//! `ferrymail` binary run against it. Every integration test goes through here.
#![allow(dead_code)]

pub mod ca;
pub mod clamav;
pub mod imap;
pub mod knot;
pub mod podman;
pub mod rspamd;
pub mod rspamd_config;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferrymail");

/// A mailbox password hash (of "quickstart"), so tests do not pay argon2 each time.
pub const TEST_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$Qg98Va9ayqaw1HQ7vvK7nQ$xqVTaKQ3SYHqAOBOPknmor42UCN5mIJVixGFtr9oaHA";

pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub spec: PathBuf,
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The server and store part every test spec starts with.
pub fn header() -> String {
    // Tests edit the spec under a running server and expect it applied, as "auto" does.
    "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"data\"\napply = \"auto\"\n\n"
        .to_string()
}

impl Workspace {
    /// A workspace whose spec is `body` after the standard header.
    pub fn new(body: &str) -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = dir.path().join("ferrymail.toml");
        let w = Workspace { dir, spec };
        w.write_spec(body);
        w
    }

    pub fn write_spec(&self, body: &str) {
        std::fs::write(&self.spec, format!("{}{body}", header())).expect("write spec");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `ferrymail --spec <spec> args…` with no stdin.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        run_in(self.path(), &self.spec, args, stdin)
    }

    /// `run` with extra environment variables.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        run_command(self.path(), &self.spec, args, None, env)
    }

    /// The messages in an account's INBOX, decrypted with the server's data_dir/master.key
    /// (empty until the server has made its key and the mailbox).
    pub fn inbox(&self, account: &str) -> Vec<Vec<u8>> {
        self.folder(account, "INBOX")
    }

    /// The messages in one folder of an account's mailbox (see `inbox`).
    pub fn folder(&self, account: &str, name: &str) -> Vec<Vec<u8>> {
        let Ok(key) = std::fs::read_to_string(self.data_dir().join("master.key")) else {
            return Vec::new();
        };
        let master = ferrymail::mailbox::MasterKey::new(key.trim().as_bytes()).expect("master key");
        let boxes = ferrymail::mailbox::Mailboxes::new(&self.data_dir(), master);
        if !boxes.exists(account) {
            return Vec::new();
        }
        let Ok(mailbox) = boxes.open(account) else {
            return Vec::new();
        };
        let Ok(Some(inbox)) = mailbox.folder(name) else {
            return Vec::new();
        };
        let list = mailbox.messages(&inbox).unwrap_or_default();
        list.iter()
            .filter_map(|m| mailbox.body(&inbox, m.uid).ok().flatten())
            .collect()
    }

    /// The raw bytes of the store database (to prove a failed command changed nothing).
    pub fn store_bytes(&self) -> Vec<u8> {
        std::fs::read(self.data_dir().join("ferrymail.db")).unwrap_or_default()
    }
}

pub fn run_in(cwd: &Path, spec: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    run_command(cwd, spec, args, stdin, &[])
}

fn run_command(
    cwd: &Path,
    spec: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .envs(env.iter().copied())
        .arg("--spec")
        .arg(spec)
        .args(args)
        .env_remove("FERRYMAIL_SPEC")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("start ferrymail");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for ferrymail");
    Run::from(out)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Not from the kernel's ephemeral range (32768 and up): a port handed out there is
    // free only until an outgoing connection takes it as its source port, before the
    // server binds it. Below that range, each test process starts at its own place and
    // each call moves on, so two tests never get the same port; TCP and UDP must both be
    // free (Knot listens on both).
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (20_000 + (start.wrapping_add(n) % 12_000)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// Opens a plain connection from `source` (a loopback address such as 127.0.0.2, so a
/// test can be several clients to the per-address limits).
pub fn connect_from(source: &str, port: u16) -> std::net::TcpStream {
    // A listener bound after the one `serve` waited for may not be up yet.
    for _ in 0..100 {
        if let Some(stream) = try_connect_from(source, port) {
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            return stream;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("nothing listens on {port}");
}

pub fn try_connect_from(source: &str, port: u16) -> Option<std::net::TcpStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // std cannot bind a source address before connecting: libc does it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    // Owned at once, so a failed attempt closes its socket.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let local = addr(source.parse().unwrap(), 0);
    let remote = addr(std::net::Ipv4Addr::LOCALHOST, port);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let connected = unsafe {
        libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) == 0
            && libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) == 0
    };
    connected.then(|| std::net::TcpStream::from(owned))
}

/// Polls `check` until it is true or `timeout` passes.
pub fn wait_for(timeout: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    check()
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Process {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Process {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log of a server run with `--log-format json`, a line each; panics on any
    /// line that is not one JSON object.
    pub fn json_log(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// A memory figure of the process from /proc/PID/status, in KiB: "VmHWM" (the peak
    /// resident size so far) or "VmRSS" (now); 0 once it is gone.
    pub fn memory_kib(&self, field: &str) -> u64 {
        self.status_field(field)
            .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// A field of /proc/PID/status as written ("THP_enabled" → "0"); None when the
    /// kernel does not have it or the process is gone.
    pub fn status_field(&self, field: &str) -> Option<String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status once it is gone.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.kill_hard();
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Starts a Python peer from tests/peers and waits for it to print "ready".
pub fn python_peer(script: &str, args: &[&str], dir: &Path) -> Process {
    use std::io::BufRead;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(script);
    let log = dir.join(format!("{script}.log"));
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("peer log"))
        .spawn()
        .expect("python3 must be installed (scripts/test installs the peers)");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("peer output");
    assert_eq!(
        line.trim(),
        "ready",
        "{script} did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    Process { child, log }
}

/// Runs a Python client script from tests/peers to its end, in `dir`, with a time limit.
pub fn python_peer_run(script: &str, args: &[&str], dir: &Path) -> Run {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(script);
    let out = Command::new("timeout")
        .arg("120")
        .arg("python3")
        .arg(&path)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("python3 must be installed (scripts/test installs the peers)");
    Run::from(out)
}

/// A received message in a sink directory: envelope and content.
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub path: PathBuf,
    pub content: String,
}

/// The messages a sink has saved so far, in arrival order.
pub fn received(dir: &Path) -> Vec<Received> {
    let mut out = Vec::new();
    for n in 0.. {
        let (env, eml) = (dir.join(format!("{n}.env")), dir.join(format!("{n}.eml")));
        let (Ok(env), Ok(content)) = (std::fs::read_to_string(&env), std::fs::read(&eml)) else {
            break;
        };
        let mut lines = env.lines();
        let mail_from = lines.next().unwrap_or_default().to_string();
        out.push(Received {
            mail_from,
            rcpt_to: lines.map(str::to_string).collect(),
            path: eml,
            content: String::from_utf8_lossy(&content).into_owned(),
        });
    }
    out
}

impl Workspace {
    /// Starts `ferrymail serve` on this workspace's spec and waits for `port` to accept.
    pub fn serve(&self, port: u16) -> Process {
        self.serve_with(port, &[], &[])
    }

    /// `serve` with extra global arguments and environment.
    pub fn serve_with(&self, port: u16, args: &[&str], env: &[(&str, &str)]) -> Process {
        self.spawn_serve(port, args, env, Some("info"), Path::new(BIN))
    }

    /// `serve` as an operator starts it: no RUST_LOG, so its default log level.
    pub fn serve_with_default_log(&self, port: u16) -> Process {
        self.spawn_serve(port, &[], &[], None, Path::new(BIN))
    }

    /// `serve` run by another ferrymail binary (one built with other features).
    pub fn serve_binary(&self, bin: &Path, port: u16) -> Process {
        self.spawn_serve(port, &[], &[], Some("info"), bin)
    }

    fn spawn_serve(
        &self,
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
        rust_log: Option<&str>,
        bin: &Path,
    ) -> Process {
        let log = self.path().join("serve.log");
        let mut command = Command::new(bin);
        match rust_log {
            Some(level) => command.env("RUST_LOG", level),
            None => command.env_remove("RUST_LOG"),
        };
        let child = command
            .current_dir(self.path())
            .arg("--spec")
            .arg(&self.spec)
            .args(args)
            .arg("serve")
            .envs(env.iter().copied())
            .env_remove("FERRYMAIL_SPEC")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("serve log"))
            .spawn()
            .expect("start ferrymail serve");
        let mut server = Process { child, log };
        let up = wait_for(std::time::Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if !up {
            let text = server.log_text();
            server.kill_hard();
            panic!("ferrymail serve did not listen on {port}:\n{text}");
        }
        server
    }
}

/// A relay that takes connections and never answers: a delivery to it hangs until the
/// server gives up or is killed. Returns its port and the connections it has had.
pub fn tarpit() -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("tarpit");
    let port = listener.local_addr().expect("tarpit address").port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            keep.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
    });
    (port, held)
}

/// swaks through a submission port: STARTTLS, then AUTH PLAIN as `user`, then `args`.
pub fn submit(port: u16, user: &str, password: &str, args: &[&str]) -> Run {
    let mut all = vec!["--tls"];
    all.extend_from_slice(&auth_plain(user, password));
    all.extend_from_slice(args);
    swaks(port, &all)
}

/// swaks's arguments for AUTH PLAIN as `user`.
pub const fn auth_plain<'a>(user: &'a str, password: &'a str) -> [&'a str; 6] {
    [
        "--auth",
        "PLAIN",
        "--auth-user",
        user,
        "--auth-password",
        password,
    ]
}

/// Runs swaks against 127.0.0.1:port with the given arguments.
pub fn swaks(port: u16, args: &[&str]) -> Run {
    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--timeout",
            "20",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("swaks must be installed (scripts/test installs it)");
    Run::from(out)
}

/// An authoritative DNS server (Knot) on a free loopback port serving `zones`
/// (name, zone-file text), so tests never ask the machine's resolver.
pub fn knot(dir: &Path, zones: &[(&str, &str)]) -> (Process, u16) {
    knot_with_key(dir, zones, None)
}

/// Knot as above; with `tsig` (key name, base64 secret) its zones also take dynamic
/// updates (RFC 2136) and zone transfers signed with that HMAC-SHA256 key, and keep the
/// changes in the journal (the zone files stay as written).
pub fn knot_with_key(
    dir: &Path,
    zones: &[(&str, &str)],
    tsig: Option<(&str, &str)>,
) -> (Process, u16) {
    knot_serving(dir, zones, tsig, &[])
}

/// Knot with the zones named in `signed` signed (DNSSEC, one ECDSA P-256 key per zone);
/// also returns the trust anchor file: those zones' DNSKEY records, for `[dns]
/// trust_anchors`. Delegations between the zones are the zone files' own NS and DS records.
pub fn knot_signed(dir: &Path, zones: &[(&str, &str)], signed: &[&str]) -> (Process, u16, PathBuf) {
    let (process, port) = knot_serving(dir, zones, None, signed);
    let file = knot::trust_anchors(&dir.join("knot/knot.conf"), signed);
    let file = file.unwrap_or_else(|| panic!("no DNSKEY for {signed:?}: {}", process.log_text()));
    (process, port, file)
}

fn knot_serving(
    dir: &Path,
    zones: &[(&str, &str)],
    tsig: Option<(&str, &str)>,
    signed: &[&str],
) -> (Process, u16) {
    let port = free_port();
    let root = dir.join("knot");
    let conf_path = knot::configure(&root, port, zones, tsig, signed);
    let log = root.join("knotd.log");
    let child = Command::new("knotd")
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("knot log"))
        .spawn()
        .expect("knotd must be installed (scripts/test installs knot)");
    let process = Process { child, log };
    let up = wait_for(std::time::Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "knotd did not start: {}", process.log_text());
    (process, port)
}

pub use knot::zone;

/// A DNS server that knows the test domains exist but publishes nothing for them: arrival
/// checks get clean "none" answers at once, and no test ever asks the machine's resolver.
pub fn quiet_dns(dir: &Path) -> (Process, u16) {
    knot(
        dir,
        &[
            ("test", &zone("test", "")),
            ("sender.test", &zone("sender.test", "")),
        ],
    )
}

/// What the MX on `port` answers to RCPT TO:<to> from `from` (swaks stops after RCPT).
pub fn rcpt_probe(port: u16, from: &str, to: &str) -> String {
    swaks(port, &["--from", from, "--to", to, "--quit-after", "RCPT"]).stdout
}

/// The TXT record of example.test's default DKIM key ("name=value", as `dkimpy` takes
/// records), read from the workspace's store.
pub fn dkim_txt(w: &Workspace) -> String {
    use ferrymail::store::Store;
    let store = ferrymail::store::SqliteStore::open(&w.data_dir()).unwrap();
    let public = store
        .dkim_public_key("ferrymail._domainkey.example.test")
        .unwrap()
        .expect("DKIM key in the store");
    format!(
        "ferrymail._domainkey.example.test={}",
        ferrymail::dkim::txt_record("rsa-2048", &public)
    )
}

/// Runs dkimpy on a message: `mode` is "dkim" (every signature) or "arc" (the chain);
/// `records` are the DNS TXT records as "name=value".
pub fn dkimpy(mode: &str, message: &Path, records: &[&str]) -> Run {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/dkimpy_verify.py"
        ))
        .arg(mode)
        .arg(message)
        .args(records)
        .output()
        .expect("python3 with dkimpy (scripts/test installs it)");
    Run::from(out)
}

/// Let's Encrypt's test CA (pebble) on loopback: it resolves names through `dns` and
/// validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of what they resolve
/// to. Returns the process, the directory URL, the PEM file to trust for it, and the
/// management port (its roots are at /roots/0).
pub struct Pebble {
    pub process: Process,
    pub directory: String,
    pub ca_file: PathBuf,
    pub management: u16,
}

pub fn pebble(dir: &Path, dns: u16, http_port: u16, tls_port: u16) -> Pebble {
    pebble_at(dir, dns, http_port, tls_port, free_port())
}

/// `pebble` with its API on `api` (a second pebble at the same address has forgotten
/// every account the first one made).
pub fn pebble_at(dir: &Path, dns: u16, http_port: u16, tls_port: u16, api: u16) -> Pebble {
    let root = dir.join("pebble");
    std::fs::create_dir_all(&root).expect("pebble dir");
    // pebble ships no certificate for its own listener: one for 127.0.0.1, trusted by
    // the ACME client through tls.acme.ca_file.
    let own =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("pebble certificate");
    let (cert, key) = (root.join("pebble.pem"), root.join("pebble.key"));
    std::fs::write(&cert, own.cert.pem()).expect("pebble cert");
    std::fs::write(&key, own.signing_key.serialize_pem()).expect("pebble key");
    let management = free_port();
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{api}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": cert, "privateKey": key,
        "httpPort": http_port, "tlsPort": tls_port,
        "ocspResponderURL": "", "externalAccountBindingRequired": false
    }});
    let config_path = root.join("pebble.json");
    std::fs::write(&config_path, config.to_string()).expect("pebble config");
    let log = root.join("pebble.log");
    let child = Command::new("pebble")
        .arg("-config")
        .arg(&config_path)
        .arg("-dnsserver")
        .arg(format!("127.0.0.1:{dns}"))
        // No random waits before validating, no nonces refused on purpose.
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        // Every order validates afresh (a reused authorization would skip the challenge).
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(std::fs::File::create(&log).expect("pebble log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble must be installed (scripts/test installs it)");
    let process = Process { child, log };
    let up = wait_for(std::time::Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", api)).is_ok()
    });
    assert!(up, "pebble did not start: {}", process.log_text());
    Pebble {
        process,
        directory: format!("https://127.0.0.1:{api}/dir"),
        ca_file: cert,
        management,
    }
}

/// The SHA-256 of the certificate an implicit-TLS listener (IMAPS) serves for
/// mx.example.test, through Python's ssl (tests/peers/tls_probe.py).
pub fn tls_fingerprint(dir: &Path, port: u16) -> String {
    python_peer_run(
        "tls_probe.py",
        &[&port.to_string(), "mx.example.test", "--once"],
        dir,
    )
    .stdout
    .trim()
    .to_string()
}

/// An IMAPS client that connects now and stays, to show that a certificate change
/// leaves open connections alone.
pub struct LingeringTls {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    /// The fingerprint of the certificate the connection got.
    pub first: String,
}

impl LingeringTls {
    pub fn open(port: u16) -> LingeringTls {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/tls_probe.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args([&port.to_string(), "mx.example.test"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("probe output");
        let first = line.trim().trim_start_matches("first ").to_string();
        LingeringTls { child, out, first }
    }

    /// NOOP on the open connection (its reply line), then the fingerprint a new one gets.
    pub fn finish(mut self) -> (String, String) {
        use std::io::{BufRead, Write};
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("probe stdin");
        let mut old = String::new();
        self.out.read_line(&mut old).expect("probe output");
        let mut second = String::new();
        self.out.read_line(&mut second).expect("probe output");
        let _ = self.child.wait();
        (
            old.trim().trim_start_matches("old ").to_string(),
            second.trim().trim_start_matches("second ").to_string(),
        )
    }
}

/// A MongoDB-wire server (secantusd, a one-member replica set) on a free loopback port,
/// storing in `dir`; returns it and its URL.
pub fn mongodb(dir: &Path) -> (Process, String) {
    let port = free_port();
    let log = dir.join("secantusd.log");
    let storage = dir.join("mongodb");
    std::fs::create_dir_all(&storage).expect("mongodb storage dir");
    let child = Command::new("secantusd-py")
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--storage-path",
        ])
        .arg(&storage)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("secantusd log"))
        .spawn()
        .expect("secantusd-py must be installed (scripts/test installs secantusdb from PyPI)");
    let process = Process { child, log };
    listening(&process, port, "secantusd");
    (
        process,
        format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
    )
}

/// Debian's redis-server on a free loopback port, nothing saved to disk; returns it and
/// its URL.
pub fn redis(dir: &Path) -> (Process, String) {
    let port = free_port();
    let log = dir.join("redis.log");
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(std::fs::File::create(&log).expect("redis log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/test installs it)");
    let process = Process { child, log };
    listening(&process, port, "redis-server");
    (process, format!("redis://127.0.0.1:{port}/"))
}

fn listening(process: &Process, port: u16, name: &str) {
    let up = wait_for(std::time::Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(
        up,
        "{name} did not listen on {port}:\n{}",
        process.log_text()
    );
}

/// Runs a browser script of tests/peers (playwright-core driving Debian's chromium)
/// against the admin at `https` with the first-boot password; screenshots go to
/// $FERRYMAIL_SCREENSHOTS or the workspace. Returns the JSON report it prints.
pub fn browser_peer(
    w: &Workspace,
    script: &str,
    https: u16,
    server: &Process,
) -> (serde_json::Value, PathBuf) {
    let password =
        std::fs::read_to_string(w.data_dir().join("admin.password")).expect("admin.password");
    browser_peer_with(w, script, https, server, password.trim(), &[])
}

/// `browser_peer` with another password than the first-boot one, and more arguments
/// after the screenshot directory.
pub fn browser_peer_with(
    w: &Workspace,
    script: &str,
    https: u16,
    server: &Process,
    password: &str,
    extra: &[&str],
) -> (serde_json::Value, PathBuf) {
    let shots = std::env::var_os("FERRYMAIL_SCREENSHOTS")
        .map_or_else(|| w.path().join("screenshots"), PathBuf::from);
    std::fs::create_dir_all(&shots).expect("screenshots dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .arg(root.join("tests/peers").join(script))
        .arg(format!("https://127.0.0.1:{https}"))
        .arg(password)
        .arg(&shots)
        .args(extra)
        .env("NODE_PATH", root.join("target/node/node_modules"))
        .output()
        .expect("node (scripts/test installs playwright-core and chromium)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    (
        serde_json::from_str(stdout.trim()).expect("the report"),
        shots,
    )
}

/// Runs git in `dir` as the test's operator ("ops"); its output, or the test fails.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "ops")
        .env("GIT_AUTHOR_EMAIL", "ops@example.test")
        .env("GIT_COMMITTER_NAME", "ops")
        .env("GIT_COMMITTER_EMAIL", "ops@example.test")
        .output()
        .expect("git must be installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// IMAP LOGIN after STARTTLS with Python's imaplib: "OK", or "refused" and why.
#[allow(dead_code)]
pub fn imap_login(port: u16, user: &str, password: &str) -> String {
    let script = format!(
        "import imaplib,ssl\nc=imaplib.IMAP4('127.0.0.1',{port})\nc.starttls(ssl._create_unverified_context())\ntry:\n  print(c.login({user:?},{password:?})[0])\nexcept Exception as e:\n  print('refused', e)\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `systemd-analyze verify` of a unit's text, with its ExecStart pointed at `binary`
/// (systemd-analyze wants the binary to exist); fails the test on any complaint.
#[track_caller]
pub fn verify_unit(unit: &str, binary: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ferrymail.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/ferrymail", &binary.display().to_string()),
    )
    .expect("unit written");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (systemd) must be installed; scripts/test installs it");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A receiving MTA (aiosmtpd) on ADDRESS:25, saving into the returned directory; with a
/// certificate (file, key) it offers STARTTLS, and with `requiretls` REQUIRETLS too.
pub fn mx_sink(
    w: &Workspace,
    address: &str,
    cert: Option<&(PathBuf, PathBuf)>,
    requiretls: bool,
) -> (Process, PathBuf) {
    mx_sink_with(w, address, cert, requiretls, &[])
}

/// `mx_sink` with sink.py's switches: "--size=N", "--no-smtputf8", "--seven-bit".
pub fn mx_sink_with(
    w: &Workspace,
    address: &str,
    cert: Option<&(PathBuf, PathBuf)>,
    requiretls: bool,
    switches: &[&str],
) -> (Process, PathBuf) {
    let dir = w.path().join(format!("sink-{address}"));
    let mut args = vec![
        "25".to_string(),
        dir.display().to_string(),
        address.to_string(),
    ];
    if let Some((crt, key)) = cert {
        args.push(crt.display().to_string());
        args.push(key.display().to_string());
        if requiretls {
            args.push("requiretls".into());
        }
    }
    args.extend(switches.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (python_peer("sink.py", &args, w.path()), dir)
}

/// Writes `script` (pipelined SMTP commands) to the server on `port` in one go and
/// returns everything it answers until it closes (the script ends with QUIT).
pub fn raw_exchange(port: u16, script: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(script.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `queue list`, once it names every one of `reasons`.
pub fn wait_until_queue_says(w: &Workspace, reasons: &[&str]) -> String {
    let mut queue = String::new();
    let said = wait_for(std::time::Duration::from_secs(30), || {
        queue = w.run(&["queue", "list"]).stdout;
        reasons.iter().all(|r| queue.contains(r))
    });
    assert!(said, "the queue should say {reasons:#?}:\n{queue}");
    queue
}

/// Today's SMTP TLS reports (`queue tls-report`), checked against RFC 8460's schema.
pub struct TlsReports {
    pub reports: Vec<serde_json::Value>,
    pub text: String,
}

impl TlsReports {
    pub fn of(w: &Workspace) -> TlsReports {
        let run = w.run(&["queue", "tls-report"]);
        run.ok();
        let file = w.path().join("tls-report.json");
        std::fs::write(&file, &run.stdout).expect("report file");
        let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/tlsrpt.json");
        python_peer_run(
            "json_schema_check.py",
            &[schema.to_str().unwrap(), file.to_str().unwrap()],
            w.path(),
        )
        .ok();
        TlsReports {
            reports: serde_json::from_str(&run.stdout).expect("JSON"),
            text: run.stdout,
        }
    }

    /// A domain's sessions under one type of policy ("sts", "tlsa", "no-policy-found").
    pub fn policy(&self, domain: &str, kind: &str) -> serde_json::Value {
        self.reports
            .iter()
            .flat_map(|r| r["policies"].as_array().cloned().unwrap_or_default())
            .find(|p| p["policy"]["policy-domain"] == domain && p["policy"]["policy-type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} report for {domain}: {}", self.text))
    }
}
