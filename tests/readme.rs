//! The README, run: every ```sh runnable block in order, in a copy of the repository's
//! quickstart, with the output the README promises (`#   <-  250 …` lines) checked.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_for};

/// The quickstart's fixed ports, each moved to a free one (in the spec and in every
/// command alike) so the walk never meets a quickstart someone is running.
const QUICKSTART_PORTS: [u16; 9] = [2525, 2526, 2587, 2143, 2993, 2110, 4190, 2443, 9000];

/// One command of a block, with the output lines the README shows under it.
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The ```sh runnable blocks of the README, in order.
fn runnable_blocks(readme: &str) -> Vec<Vec<Step>> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```sh runnable" {
            continue;
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut pending = String::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            if let Some(comment) = line.trim_start().strip_prefix('#') {
                // "#   <-  250 2.0.0 Queued as 1      (why)": the output, without the aside.
                // Output is indented three spaces; a note to the reader ("# 2. Run…")
                // one, and an aside's second line many.
                let shown = comment.trim_start_matches(' ');
                let indent = comment.len() - shown.len();
                assert!(
                    shown.is_empty() || indent != 2,
                    "README: is {line:?} output (three spaces after #) or a note (one)?"
                );
                if indent == 3 && !shown.is_empty() {
                    let step = steps
                        .last_mut()
                        .unwrap_or_else(|| panic!("README: output {line:?} before any command"));
                    let text = shown.split("  (").next().unwrap_or(shown).trim_end();
                    step.expected.push(text.to_string());
                }
                continue;
            }
            // A trailing "# comment" after two spaces is for the reader.
            let code = line.split("  #").next().unwrap_or(line).trim_end();
            match code.strip_suffix('\\') {
                Some(head) => pending.push_str(head),
                None => {
                    pending.push_str(code);
                    let command = std::mem::take(&mut pending).trim().to_string();
                    if !command.is_empty() {
                        steps.push(Step {
                            command,
                            expected: Vec::new(),
                        });
                    }
                }
            }
        }
        blocks.push(steps);
    }
    blocks
}

/// Whether `output` shows `expected`, where "…" stands for anything and runs of spaces
/// for any whitespace.
fn shows(output: &str, expected: &str) -> bool {
    let mut pattern = String::new();
    for (i, part) in expected.replace("...", "…").split('…').enumerate() {
        if i > 0 {
            pattern.push_str(".*?");
        }
        let words: Vec<String> = part.split_whitespace().map(regex::escape).collect();
        pattern.push_str(&words.join(r"\s+"));
    }
    // "Queued as 1" must not be found in "Queued as 12".
    if expected.ends_with(|c: char| c.is_alphanumeric()) {
        pattern.push_str(r"(?:\W|$)");
    }
    regex::Regex::new(&format!("(?m){pattern}")).is_ok_and(|re| re.is_match(output))
}

/// A command as this test runs it: the debug binary for `cargo run --release --` and a
/// bare `ferrymail`, and the moved ports.
fn rewritten(command: &str, ports: &[(u16, u16)]) -> String {
    let bin = env!("CARGO_BIN_EXE_ferrymail");
    let mut out = command.replace("cargo run --release --", bin);
    if let Some(rest) = out.strip_prefix("ferrymail ") {
        out = format!("{bin} {rest}");
    }
    moved(&out, ports)
}

fn moved(text: &str, ports: &[(u16, u16)]) -> String {
    let mut out = text.to_string();
    for (from, to) in ports {
        let re = regex::Regex::new(&format!(r"\b{from}\b")).unwrap();
        out = re.replace_all(&out, to.to_string()).into_owned();
    }
    out
}

/// What the walk does not run itself: installing (scripts/test has), this test runner.
fn skipped(command: &str) -> bool {
    [
        "apt-get ",
        "pip install",
        "cargo install",
        "scripts/test",
        "podman ",
    ]
    .iter()
    .any(|p| command.starts_with(p))
}

/// Servers the README starts and leaves running.
fn long_running(command: &str) -> bool {
    command.ends_with(" serve") || command.contains("-m aiosmtpd")
}

struct Background {
    child: std::process::Child,
    log: PathBuf,
    expected: Vec<String>,
    command: String,
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn shell(command: &str, dir: &Path) -> Command {
    let mut sh = Command::new("sh");
    // The binary under test comes first on PATH, whatever the README calls it by.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ferrymail"))
        .parent()
        .expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Python's prints reach the log as they happen, not when it exits.
    sh.arg("-c")
        .arg(command)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("PATH", path)
        .env("PYTHONUNBUFFERED", "1");
    sh
}

#[test]
fn the_readme_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = runnable_blocks(&readme);
    assert!(
        blocks.len() >= 3,
        "the README's ```sh runnable blocks went missing"
    );
    let ports: Vec<(u16, u16)> = QUICKSTART_PORTS.iter().map(|p| (*p, free_port())).collect();
    // A copy of the repository's layout: specs/quickstart.toml, its data in ./data.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("specs")).unwrap();
    let spec = std::fs::read_to_string(root.join("specs/quickstart.toml")).unwrap();
    std::fs::write(
        dir.path().join("specs/quickstart.toml"),
        moved(&spec, &ports),
    )
    .unwrap();

    let mut background: Vec<Background> = Vec::new();
    let mut ran = 0;
    for step in blocks.iter().flatten() {
        if skipped(&step.command) {
            continue;
        }
        let command = rewritten(&step.command, &ports);
        if long_running(&step.command) {
            let log = dir
                .path()
                .join(format!("background-{}.log", background.len()));
            let file = std::fs::File::create(&log).unwrap();
            // `exec`: the server replaces the shell, so the kill at the end reaches it
            // (killing the shell alone left the server running after the test).
            let child = shell(&format!("exec {command}"), dir.path())
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .expect("sh runs");
            // Ready when it listens on the port the README talks to it on.
            let port = ports
                .iter()
                .find(|(from, _)| step.command.contains(&from.to_string()))
                .map(|(_, to)| *to)
                .unwrap_or(ports[0].1);
            assert!(
                wait_for(Duration::from_secs(60), || {
                    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                }),
                "{} did not start:\n{}",
                step.command,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            background.push(Background {
                child,
                log,
                expected: step.expected.clone(),
                command: step.command.clone(),
            });
            continue;
        }
        let out = shell(&command, dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("sh runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A command fails only where the README shows its refusal (swaks's "<**").
        let refused = step
            .expected
            .iter()
            .any(|e| e.starts_with("<**") || e.starts_with("<~*"));
        assert!(
            out.status.success() || refused,
            "`{}` failed:\n{text}",
            step.command
        );
        for expected in &step.expected {
            assert!(
                shows(&text, expected),
                "`{}` did not show {expected:?}:\n{text}",
                step.command
            );
        }
        ran += 1;
    }
    // What the servers it started print comes as the commands after them run.
    for b in &background {
        for expected in &b.expected {
            assert!(
                wait_for(Duration::from_secs(20), || shows(
                    &std::fs::read_to_string(&b.log).unwrap_or_default(),
                    expected
                )),
                "`{}` did not show {expected:?}:\n{}",
                b.command,
                std::fs::read_to_string(&b.log).unwrap_or_default()
            );
        }
    }
    assert!(ran >= 8, "only {ran} commands ran");
}

#[test]
fn expected_output_matches_with_ellipses_for_what_varies() {
    assert!(shows(
        "INFO:mail.log:('127.0.0.1', 50712) sender: SRS0=THHK=JY=example.net=you@example.test",
        "INFO:mail.log:('127.0.0.1', …) sender: SRS0=…=example.net=you@example.test"
    ));
    assert!(shows(
        "<-  250 2.0.0 Queued as 1\n",
        "<-  250 2.0.0 Queued as 1"
    ));
    assert!(!shows(
        "<-  250 2.0.0 Queued as 2\n",
        "<-  250 2.0.0 Queued as 1"
    ));
    assert!(!shows(
        "<-  250 2.0.0 Queued as 12\n",
        "<-  250 2.0.0 Queued as 1"
    ));
}
