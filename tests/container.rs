//! The Containerfile, built and run with podman: the image serves mail as an unprivileged
//! user, binds a port below 1024, answers its health check and drains on SIGTERM.
//!
//! No registry is reachable here, so the base image is Debian 12 made with debootstrap
//! (common::podman) and the binary is the one cargo built for the tests
//! (`BUILD=prebuilt`); the Containerfile is otherwise the one users build.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::podman::{BASE, LIMITS, base_image, ok, podman};
use common::{TEST_HASH, free_port, swaks, wait_for};

/// Removes the container, its volume and the image, however the test ends.
struct Cleanup {
    container: String,
    volume: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        podman(&["rm", "-f", "-t", "0", &self.container]);
        podman(&["volume", "rm", "-f", &self.volume]);
        podman(&["rmi", "-f", &self.image]);
    }
}

#[test]
fn the_image_serves_mail_unprivileged_and_stops_cleanly() {
    let work = tempfile::tempdir().unwrap();
    base_image(work.path());
    let id = std::process::id();
    let cleanup = Cleanup {
        container: format!("ferrymail-test-{id}"),
        volume: format!("ferrymail-test-data-{id}"),
        image: format!("localhost/ferrymail-test:{id}"),
    };

    // The build context: the Containerfile and the tests' binary, without its debug info.
    let context = work.path().join("context");
    std::fs::create_dir(&context).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("Containerfile"), context.join("Containerfile")).unwrap();
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(context.join("ferrymail"))
        .arg(env!("CARGO_BIN_EXE_ferrymail"))
        .output()
        .expect("strip runs");
    ok(stripped);
    let mut build = vec![
        "build",
        "--isolation",
        "chroot",
        "--format",
        "docker",
        "--build-arg",
        "BUILD=prebuilt",
        "--build-arg",
        "BINARY=ferrymail",
    ];
    let runtime = format!("RUNTIME_IMAGE={BASE}");
    build.extend(["--build-arg", &runtime, "-t", &cleanup.image]);
    build.extend(LIMITS);
    let context_arg = context.display().to_string();
    build.push(&context_arg);
    ok(podman(&build));

    // A spec mounted read-only at /etc/ferrymail, its data in a named volume. Submission
    // on port 587 of a loopback address: a port below 1024, bound without root.
    let (mx, http) = (free_port(), free_port());
    let spec_dir = work.path().join("spec");
    std::fs::create_dir(&spec_dir).unwrap();
    std::fs::write(
        spec_dir.join("ferrymail.toml"),
        format!(
            r#"
[server]
hostname = "mx.example.test"
data_dir = "/var/lib/ferrymail"

[listeners]
mx = "127.0.0.1:{mx}"
submission = "127.0.0.3:587"
http = "127.0.0.1:{http}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
        ),
    )
    .unwrap();
    let mount = format!("{}:/etc/ferrymail:ro", spec_dir.display());
    let data = format!("{}:/var/lib/ferrymail", cleanup.volume);
    let readyz = format!("FERRYMAIL_READYZ=http://127.0.0.1:{http}/readyz");
    let mut run = vec![
        "run",
        "-d",
        "--name",
        &cleanup.container,
        "--network",
        "host",
        "-v",
        &mount,
        "-v",
        &data,
        "-e",
        &readyz,
    ];
    run.extend(LIMITS);
    run.push(&cleanup.image);
    ok(podman(&run));
    let logs = || {
        let out = podman(&["logs", &cleanup.container]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // The image's own health check (curl on /readyz) passes once it serves.
    let healthy = wait_for(Duration::from_secs(60), || {
        podman(&["healthcheck", "run", &cleanup.container])
            .status
            .success()
    });
    assert!(healthy, "never healthy:\n{}", logs());
    let sent = swaks(mx, &["--from", "x@sender.test", "--to", "me@example.test"]);
    assert!(sent.stdout.contains("Queued as 1"), "{}", sent.stdout);
    assert!(
        std::net::TcpStream::connect(("127.0.0.3", 587)).is_ok(),
        "submission on :587 is not bound:\n{}",
        logs()
    );
    let user = ok(podman(&["exec", &cleanup.container, "id", "-un"]));
    assert_eq!(user.trim(), "ferrymail");
    let version = ok(podman(&[
        "exec",
        &cleanup.container,
        "ferrymail",
        "--version",
    ]));
    assert!(version.starts_with("ferrymail "), "{version}");
    // The log is JSON on stdout, every line of it.
    for line in logs().lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line).expect("a JSON log line");
    }

    // SIGTERM drains and exits 0, well before podman's 30 s would kill it.
    let started = std::time::Instant::now();
    ok(podman(&["stop", "-t", "30", &cleanup.container]));
    assert!(started.elapsed() < Duration::from_secs(20));
    let code = ok(podman(&[
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &cleanup.container,
    ]));
    assert_eq!(code.trim(), "0", "{}", logs());
    assert!(logs().contains("shutting down: draining"), "{}", logs());
}

/// compose.yaml parses, and its ferrymail service is the image with the spec and volume
/// the Containerfile expects (the optional services need images no registry here serves).
#[test]
fn compose_runs_ferrymail_alone_by_default() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sys, yaml, json; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))")
        .arg(root.join("compose.yaml"))
        .output()
        .expect("python3 runs");
    let compose: serde_json::Value = serde_json::from_str(&ok(out)).expect("compose.yaml is YAML");
    let services = compose["services"].as_object().unwrap();
    let by_default: Vec<&String> = services
        .iter()
        .filter(|(_, s)| s.get("profiles").is_none())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(by_default, ["ferrymail"]);
    let ferrymail = &services["ferrymail"];
    let volumes = ferrymail["volumes"].to_string();
    assert!(
        volumes.contains(":/etc/ferrymail/ferrymail.toml:ro")
            && volumes.contains(":/var/lib/ferrymail"),
        "{volumes}"
    );
}
