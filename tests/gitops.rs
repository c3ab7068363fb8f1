//! GitOps: the spec lives in a git repository; `serve` applies each new commit of the
//! branch, shows which commit it applied, and refuses a commit with a broken spec while
//! the last good state keeps serving.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Workspace, free_port, git, quiet_dns, rcpt_probe, wait_for};

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

/// An OpenSSH server on loopback that lets `key.pub` in as the current user.
fn sshd(dir: &Path) -> (common::Process, u16, PathBuf) {
    let port = free_port();
    let ssh = dir.join("ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    for (name, comment) in [("host", "host"), ("client", "deploy")] {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(ssh.join(name))
            .output()
            .expect("ssh-keygen (scripts/test installs openssh)");
        assert!(out.status.success());
    }
    std::fs::copy(ssh.join("client.pub"), ssh.join("authorized_keys")).unwrap();
    // Privilege separation wants its empty directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let config = ssh.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {keys}\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\n\
             PidFile {pid}\n",
            host = ssh.join("host").display(),
            keys = ssh.join("authorized_keys").display(),
            pid = ssh.join("sshd.pid").display(),
        ),
    )
    .unwrap();
    let log = dir.join("sshd.log");
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("sshd (scripts/test installs openssh-server)");
    let process = common::Process { child, log };
    assert!(
        wait_for(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "sshd did not start: {}",
        process.log_text()
    );
    (process, port, ssh)
}

#[test]
fn an_ssh_repository_is_pulled_with_a_deploy_key_and_its_host_key_pinned() {
    let mx = free_port();
    let w = Workspace::new("");
    let (_dns, dns) = quiet_dns(w.path());
    let (_sshd, ssh_port, ssh) = sshd(w.path());
    let repo = w.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "--quiet", "-b", "main"]);
    let spec = |aliases: &str| {
        format!(
            "[server]\nhostname = \"mx.example.test\"\n\n[listeners]\nmx = \"127.0.0.1:{mx}\"\n\n\
             [dns]\nresolver = \"127.0.0.1:{dns}\"\n\n[domains.\"example.test\".aliases]\n{aliases}\n"
        )
    };
    commit(
        &repo,
        &spec(r#"first = { forward = ["a@elsewhere.test"] }"#),
        "first",
    );
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let url = format!(
        "ssh://{}@127.0.0.1:{ssh_port}{}",
        user.trim(),
        repo.display()
    );
    w.write_spec(&format!(
        "[source]\ngit = \"{url}\"\ninterval = \"1s\"\nssh_key = {{ file = \"ssh/client\" }}\n"
    ));
    let server = w.serve(mx);
    let accepted = |to: &str| !rcpt_probe(mx, "x@sender.test", to).contains("<** ");
    assert!(accepted("first@example.test"), "{}", server.log_text());
    // The host key seen first is pinned in the data dir.
    let pinned = std::fs::read_to_string(w.data_dir().join("source.known_hosts")).unwrap();
    let host_key = std::fs::read_to_string(ssh.join("host.pub")).unwrap();
    let host_key_body = host_key.split_whitespace().nth(1).unwrap();
    assert!(pinned.contains(host_key_body), "{pinned}");

    commit(
        &repo,
        &spec(
            "first = { forward = [\"a@elsewhere.test\"] }\nsecond = { forward = [\"b@elsewhere.test\"] }",
        ),
        "second",
    );
    assert!(
        wait_for(Duration::from_secs(20), || accepted("second@example.test")),
        "{}",
        server.log_text()
    );

    // known_hosts in the spec that names another key: the fetch is refused, loudly.
    let other = w.path().join("other");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .output()
        .unwrap();
    let other_key = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut fields = other_key.split_whitespace();
    let known = format!(
        "[127.0.0.1]:{ssh_port} {} {}",
        fields.next().unwrap(),
        fields.next().unwrap()
    );
    w.write_spec(&format!(
        "[source]\ngit = \"{url}\"\ninterval = \"1s\"\nssh_key = {{ file = \"ssh/client\" }}\nknown_hosts = \"{known}\"\n"
    ));
    let refused = w.run(&["validate"]);
    assert!(
        refused.code != 0
            && (refused.stderr.contains("Host key verification failed")
                || refused
                    .stderr
                    .contains("REMOTE HOST IDENTIFICATION HAS CHANGED")),
        "{refused:?}"
    );
}
