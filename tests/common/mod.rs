//! The one test harness: a temporary workspace with a spec and a data dir, and the real
//! `ferrymail` binary run against it. Every integration test goes through here.
#![allow(dead_code)]

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

/// The server and store part every test spec starts with.
pub fn header() -> String {
    "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"data\"\n\n".to_string()
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

    /// The raw bytes of the store database (to prove a failed command changed nothing).
    pub fn store_bytes(&self) -> Vec<u8> {
        std::fs::read(self.data_dir().join("ferrymail.db")).unwrap_or_default()
    }
}

pub fn run_in(cwd: &Path, spec: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
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
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
