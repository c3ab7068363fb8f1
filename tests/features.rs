//! The one-machine build (`--no-default-features`): it builds, `--version` says it has no
//! optional part, `validate` refuses a spec that needs one and names the feature, and it
//! serves mail from the embedded default.

mod common;

use common::{Workspace, free_port, swaks};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds ferrymail without its optional features and copies the binary into `dir`; then
/// builds the default binary again, which the other tests run. Both builds share the
/// target dir and the profile the tests were built with, so what the two have in common
/// is compiled once. (The binary is briefly the slim one: a runner that runs test
/// binaries side by side, unlike `cargo test`, should run this one alone.)
fn slim_binary(dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // target/PROFILE/ferrymail: build with the same profile ("debug" is `dev`).
    let profile = Path::new(common::BIN)
        .parent()
        .and_then(Path::file_name)
        .and_then(|p| p.to_str())
        .map(|p| if p == "debug" { "dev" } else { p })
        .unwrap_or("dev")
        .to_string();
    let build = |extra: &[&str]| {
        Command::new(&cargo)
            .current_dir(root)
            .args([
                "build",
                "--locked",
                "--bin",
                "ferrymail",
                "--profile",
                &profile,
            ])
            .args(extra)
            .output()
            .expect("cargo runs")
    };
    let slim = build(&["--no-default-features"]);
    let copy = dir.join("ferrymail-slim");
    let copied = slim.status.success() && std::fs::copy(common::BIN, &copy).is_ok();
    // Put the default binary back before anything can fail.
    let default = build(&[]);
    assert!(
        slim.status.success(),
        "the build without default features failed:\n{}",
        String::from_utf8_lossy(&slim.stderr)
    );
    assert!(copied, "copying {} to {}", common::BIN, copy.display());
    assert!(
        default.status.success(),
        "rebuilding the default binary failed:\n{}",
        String::from_utf8_lossy(&default.stderr)
    );
    copy
}

#[test]
fn the_build_without_optional_features_serves_mail_and_names_what_a_spec_lacks() {
    let mx = free_port();
    let w = Workspace::new(&format!(
        r#"[listeners]
mx = "127.0.0.1:{mx}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{}" }} }}
"#,
        common::TEST_HASH
    ));
    let slim = slim_binary(w.path());
    let full_version = Command::new(common::BIN).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&full_version.stdout)
            .contains("features: mongodb redis s3 cloudflare"),
        "{full_version:?}"
    );
    let version = Command::new(&slim).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("features: none"),
        "{version:?}"
    );

    // A spec for several nodes and the cloud: valid for the default binary, refused by
    // this one with each missing feature named at its key.
    let cluster = w.path().join("cluster.toml");
    std::fs::write(
        &cluster,
        r#"[server]
hostname = "mx.example.test"
data_dir = "data-cluster"
master_key = { env = "FERRYMAIL_MASTER_KEY" }

[store]
kind = "mongodb"
url = "mongodb://127.0.0.1:27017/?replicaSet=rs0"

[cache]
kind = "redis"
url = "redis://127.0.0.1:6379"

[backups]
schedule = "0 3 * * *"
target = "s3://backups/mx1"
encryption_key = { file = "backup.key" }

[dns.providers.cf]
kind = "cloudflare"
api_token = { env = "CF_TOKEN" }

[domains."example.test"]
dns_provider = "cf"
aliases.hello = { forward = ["someone@example.net"] }
"#,
    )
    .unwrap();
    let validate = |bin: &Path| {
        Command::new(bin)
            .arg("--spec")
            .arg(&cluster)
            .arg("validate")
            .current_dir(w.path())
            .output()
            .unwrap()
    };
    let full = validate(Path::new(common::BIN));
    assert!(full.status.success(), "{full:?}");
    let refused = validate(&slim);
    assert!(!refused.status.success(), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr).to_string()
        + &String::from_utf8_lossy(&refused.stdout);
    for (key, feature) in [
        ("store.kind = \"mongodb\"", "mongodb"),
        ("cache.kind = \"redis\"", "redis"),
        ("an s3:// backup target", "s3"),
        ("kind = \"cloudflare\"", "cloudflare"),
    ] {
        assert!(
            said.contains(&format!("{key} needs the `{feature}` feature")),
            "{feature} not named:\n{said}"
        );
    }
    assert!(said.contains("--features mongodb"), "{said}");

    // The embedded default: SQLite, the in-process cache; mail arrives in the mailbox.
    let _server = w.serve_binary(&slim, mx);
    swaks(
        mx,
        &[
            "--from",
            "someone@example.net",
            "--to",
            "me@example.test",
            "--body",
            "sent to the slim build",
        ],
    )
    .ok();
    assert!(
        common::wait_for(std::time::Duration::from_secs(20), || {
            w.inbox("me@example.test")
                .iter()
                .any(|m| String::from_utf8_lossy(m).contains("sent to the slim build"))
        }),
        "the message never reached the mailbox"
    );
}
