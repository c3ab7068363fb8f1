//! Puts the git commit the binary is built from into `ferrymail --version`, so a bug
//! report or `status` names the exact source. FERRYMAIL_COMMIT overrides it (packagers
//! building from a tarball); without either it says "unknown". `--version` also lists the
//! optional features built in.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FERRYMAIL_COMMIT");
    let commit = std::env::var("FERRYMAIL_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=FERRYMAIL_COMMIT={}", commit.trim());
    // The optional parts built in, for `--version` (src/features.rs has the same list).
    let features: Vec<&str> = ["mongodb", "redis", "s3", "cloudflare"]
        .into_iter()
        .filter(|f| std::env::var_os(format!("CARGO_FEATURE_{}", f.to_uppercase())).is_some())
        .collect();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(" ")
    };
    println!("cargo:rustc-env=FERRYMAIL_FEATURES={features}");
}

fn git_commit() -> Option<String> {
    // Run again when a commit is made or another checked out, and only then.
    let git = Path::new(".git");
    if git.is_dir() {
        println!("cargo:rerun-if-changed=.git/HEAD");
        if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
            && let Some(reference) = head.strip_prefix("ref: ")
        {
            println!("cargo:rerun-if-changed=.git/{}", reference.trim());
            println!("cargo:rerun-if-changed=.git/packed-refs");
        }
    }
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !commit.trim().is_empty()).then_some(commit)
}
