//! GitOps: the spec lives in a git repository; `serve` applies each new commit of the
//! branch, shows which commit it applied, and refuses a commit with a broken spec while
//! the last good state keeps serving.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Workspace, free_port, quiet_dns, rcpt_probe, wait_for};

fn git(repo: &Path, args: &[&str]) -> String {
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

fn commit(repo: &Path, spec: &str, message: &str) -> String {
    std::fs::write(repo.join("ferrymail.toml"), spec).unwrap();
    git(repo, &["add", "ferrymail.toml"]);
    git(repo, &["commit", "--quiet", "-m", message]);
    git(repo, &["rev-parse", "--short=12", "HEAD"])
}

#[test]
fn each_commit_is_applied_and_a_broken_one_is_refused() {
    let mx = free_port();
    let w = Workspace::new("");
    let (_dns, dns) = quiet_dns(w.path());
    let repo = w.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "--quiet", "-b", "main"]);
    let spec = |aliases: &str| {
        format!(
            r#"[server]
hostname = "mx.example.test"

[listeners]
mx = "127.0.0.1:{mx}"

[dns]
resolver = "127.0.0.1:{dns}"

[domains."example.test".aliases]
{aliases}
"#
        )
    };
    commit(
        &repo,
        &spec(r#"first = { forward = ["a@elsewhere.test"] }"#),
        "first alias",
    );
    // The local spec only says where the spec is (and where the data lives).
    w.write_spec("[source]\ngit = \"repo\"\ninterval = \"1s\"\n");
    let server = w.serve(mx);
    // Whether the MX takes mail for `to` (swaks marks a refusal with "<**").
    let accepted = |to: &str| !rcpt_probe(mx, "x@sender.test", to).contains("<** ");
    assert!(accepted("first@example.test"), "{}", server.log_text());
    assert!(!accepted("second@example.test"));

    // A new commit on the branch: applied within the fetch interval.
    let second = commit(
        &repo,
        &spec(
            r#"first = { forward = ["a@elsewhere.test"] }
second = { forward = ["b@elsewhere.test"] }"#,
        ),
        "second alias",
    );
    let applied = wait_for(Duration::from_secs(20), || accepted("second@example.test"));
    assert!(applied, "{}", server.log_text());
    let status = w.run(&["status"]);
    assert!(
        status
            .ok()
            .stdout
            .contains(&format!("from git repo@{second} (main)")),
        "{}\n{}",
        status.stdout,
        server.log_text()
    );

    let validated = w.run(&["validate"]);
    assert!(
        validated
            .ok()
            .stdout
            .starts_with(&format!("git repo@{second} (main): valid")),
        "{}",
        validated.stdout
    );

    // A broken commit: reported with its id, not applied; the last good state serves.
    let broken = commit(
        &repo,
        &spec(r#"third = { forward = ["not an address"] }"#),
        "oops",
    );
    let refused = wait_for(Duration::from_secs(20), || {
        server
            .log_text()
            .contains(&format!("commit {broken} of repo (main) is not applied"))
    });
    assert!(refused, "{}", server.log_text());
    assert!(accepted("second@example.test"));
    let status = w.run(&["status"]);
    assert!(status.ok().stdout.contains("FAILED"), "{}", status.stdout);

    // A restart while the branch is broken serves the last good commit.
    let mut server = server;
    server.terminate();
    let server = w.serve(mx);
    assert!(accepted("second@example.test"), "{}", server.log_text());
    assert!(
        server
            .log_text()
            .contains("serving the last good commit of the spec"),
        "{}",
        server.log_text()
    );
}
