//! What the benches say about the machine they ran on; shared by every bench.

use std::fs;
use std::process::Command;

/// The first line a command prints, or "unknown" when it cannot be run.
pub fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The commit the bench binary was built from, and whether src/ had changes.
#[allow(dead_code)] // not every bench reports it
pub fn ferrymail_revision() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let rev = command_line("git", &["-C", dir, "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args([
            "-C",
            dir,
            "status",
            "--porcelain",
            "--untracked-files=no",
            "src",
        ])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("commit {rev} with uncommitted changes in src/")
    } else {
        format!("commit {rev}")
    }
}

/// The ferrymail binary a bench runs: the one `cargo bench` built, or FERRYMAIL_BIN (to
/// compare builds with other features or another release profile in the same bench).
#[allow(dead_code)] // not every bench takes another binary
pub fn ferrymail_binary() -> String {
    std::env::var("FERRYMAIL_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ferrymail").to_string())
}
