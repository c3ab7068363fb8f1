//! A real rspamd (Debian's) for the spam tests: offline (no DNS lists, no map downloads,
//! no rspamd.com), on free ports, with rules that give a chosen verdict by Subject.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::rspamd_config as config;
use super::{Process, free_port, wait_for};

/// Subjects that make the test rules fire.
pub const JUNK_SUBJECT: &str = "junk-me please";
pub const SOFT_SUBJECT: &str = "later-please";
pub const GREY_SUBJECT: &str = "grey-me please";
/// The GTUBE line: rspamd rejects any message holding it.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

pub struct Rspamd {
    pub process: Process,
    /// The scanning worker (`/checkv2`).
    pub port: u16,
    /// The controller (`/learnspam`, `/stat`).
    pub controller: u16,
    pub dir: PathBuf,
}

/// Starts rspamd in `dir`/rspamd and waits until it answers.
pub fn start(dir: &Path) -> Rspamd {
    start_on(dir, free_port(), free_port())
}

/// Starts rspamd with its Bayes classifier in the Redis at `redis` ("host:port").
pub fn start_with_bayes(dir: &Path, redis: &str) -> Rspamd {
    start_with(dir, free_port(), free_port(), Some(redis))
}

/// Starts rspamd on the given ports (again, after `stop`, to come back where it was).
pub fn start_on(dir: &Path, port: u16, controller: u16) -> Rspamd {
    start_with(dir, port, controller, None)
}

fn start_with(dir: &Path, port: u16, controller: u16, redis: Option<&str>) -> Rspamd {
    let root = dir.join("rspamd");
    let workers = format!(
        "{}{}",
        config::worker("normal", port),
        config::worker("controller", controller)
    );
    config::write_offline(&root, &workers).expect("rspamd config");
    let write = |name: &str, text: String| {
        std::fs::write(root.join(name), text).expect("rspamd config");
    };
    write("junk.map", "/junk-me/i\n".into());
    write("soft.map", "/later-please/i\n".into());
    write("grey.map", "/grey-me/i\n".into());
    write(
        "local.d/multimap.conf",
        "FERRYMAIL_TEST_JUNK { type = \"header\"; header = \"Subject\"; regexp = true; map = \"${LOCAL_CONFDIR}/junk.map\"; score = 8.0; }\n\
         FERRYMAIL_TEST_SOFT { type = \"header\"; header = \"Subject\"; regexp = true; map = \"${LOCAL_CONFDIR}/soft.map\"; score = 0.0; }\n\
         FERRYMAIL_TEST_GREY { type = \"header\"; header = \"Subject\"; regexp = true; map = \"${LOCAL_CONFDIR}/grey.map\"; score = 0.0; }\n"
            .into(),
    );
    write(
        "local.d/force_actions.conf",
        "rules {\n\
           FERRYMAIL_SOFT { action = \"soft reject\"; expression = \"FERRYMAIL_TEST_SOFT\"; message = \"Try again later, please\"; }\n\
           FERRYMAIL_GREY { action = \"greylist\"; expression = \"FERRYMAIL_TEST_GREY\"; }\n\
         }\n"
            .into(),
    );
    if let Some(redis) = redis {
        write(
            "local.d/classifier-bayes.conf",
            format!("backend = \"redis\";\nservers = \"{redis}\";\nautolearn = false;\n"),
        );
    }
    let log = root.join("stderr.log");
    let child = config::command(&root)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("rspamd log"))
        .spawn()
        .expect("rspamd must be installed (scripts/test installs it)");
    let mut process = Process { child, log };
    let ping = format!("http://127.0.0.1:{port}/ping");
    let up = wait_for(Duration::from_secs(120), || {
        !process.alive()
            || Command::new("curl")
                .args(["-s", "--max-time", "2", &ping])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("pong"))
    });
    assert!(
        up && process.alive(),
        "rspamd did not start:\n{}\n{}",
        process.log_text(),
        std::fs::read_to_string(root.join("log/rspamd.log")).unwrap_or_default()
    );
    Rspamd {
        process,
        port,
        controller,
        dir: root,
    }
}

impl Rspamd {
    /// Stops rspamd and waits until its ports are closed.
    pub fn stop(&mut self) {
        self.process.terminate();
        let port = self.port;
        wait_for(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        });
    }

    /// The `[spam]` section that points ferrymail at this rspamd.
    pub fn spec(&self, extra: &str) -> String {
        format!(
            "[spam]\nkind = \"rspamd\"\nurl = \"http://127.0.0.1:{}\"\ncontroller_url = \"http://127.0.0.1:{}\"\n{extra}\n",
            self.port, self.controller
        )
    }
}
