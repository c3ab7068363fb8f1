//! The JSON API with curl and schemathesis: bearer tokens from the spec, the reconciled
//! state as JSON, a dry-run plan of a posted spec, a reconcile trigger, and the OpenAPI
//! document, which schemathesis fuzzes against the running server (no server errors, every
//! answer as documented).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{TEST_HASH, Workspace, free_port, swaks, wait_for};

const TOKEN: &str = "0123456789abcdef0123456789abcdef-test";

fn api(http: u16, token: &str, args: &[&str], path: &str) -> (u16, serde_json::Value) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(args)
        .arg(format!("http://127.0.0.1:{http}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_string())),
    )
}

fn spec(mx: u16, http: u16, extra: &str) -> String {
    format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"
http = "127.0.0.1:{http}"

[admin.api_tokens]
ci = {{ env = "TEST_API_TOKEN" }}

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }}, quota = "1GiB" }}

[domains."example.test".aliases.hello]
forward = ["friend@elsewhere.test"]
{extra}"#
    )
}

#[test]
fn the_api_answers_token_holders_as_its_openapi_document_says() {
    let (mx, http) = (free_port(), free_port());
    let w = Workspace::new(&spec(mx, http, ""));
    let server = w.serve_with(http, &[], &[("TEST_API_TOKEN", TOKEN)]);

    // No token, a wrong one: 401 with a JSON reason.
    let (code, body) = api(http, "", &[], "/api/v1/status");
    assert_eq!(code, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );
    assert_eq!(
        api(
            http,
            "wrong-token-wrong-token-wrong-token",
            &[],
            "/api/v1/aliases"
        )
        .0,
        401
    );

    let (code, status) = api(http, TOKEN, &[], "/api/v1/status");
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["hostname"], "mx.example.test");
    assert_eq!(status["revision"], 1);
    assert_eq!(status["last_reconcile"]["ok"], true);
    assert!(
        status["last_reconcile"]["plan"]
            .as_str()
            .unwrap()
            .contains("+ alias hello@example.test"),
        "{status}"
    );
    let (_, certs) = api(http, TOKEN, &[], "/api/v1/certificates");
    assert_eq!(certs[0]["names"][0], "mx.example.test", "{certs}");
    assert_eq!(certs[0]["source"], "self-signed");
    let (_, aliases) = api(http, TOKEN, &[], "/api/v1/aliases?q=hello");
    assert_eq!(aliases["total"], 1);
    assert_eq!(aliases["aliases"][0]["forward"][0], "friend@elsewhere.test");
    let (_, route) = api(
        http,
        TOKEN,
        &[],
        "/api/v1/route?address=hello%2Bnews%40example.test",
    );
    assert_eq!(route["found"], true);
    assert_eq!(route["alias"], "hello@example.test");
    // Another server's address: the tag is not passed on (external_forward_tags is off).
    assert_eq!(route["forward"][0], "friend@elsewhere.test");
    let (_, mailboxes) = api(http, TOKEN, &[], "/api/v1/mailboxes");
    assert_eq!(mailboxes[0]["account"], "me@example.test");
    assert_eq!(mailboxes[0]["quota"], 1_073_741_824u64);

    swaks(
        mx,
        &["--from", "alice@sender.test", "--to", "me@example.test"],
    )
    .ok();
    assert!(wait_for(Duration::from_secs(10), || {
        api(http, TOKEN, &[], "/api/v1/emails?event=accepted").1[0]["mail_from"]
            == "alice@sender.test"
    }));
    let (code, _) = api(http, TOKEN, &[], "/api/v1/emails?limit=0");
    assert_eq!(code, 400);

    // A dry-run plan of a changed spec: what it would do, and nothing is applied.
    let changed = format!(
        "{}{}",
        common::header(),
        spec(
            mx,
            http,
            "\n[domains.\"example.test\".aliases.new]\nforward = [\"x@elsewhere.test\"]\n"
        )
    );
    let (code, plan) = api(
        http,
        TOKEN,
        &["-H", "Content-Type: text/plain", "--data-binary", &changed],
        "/api/v1/plan",
    );
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["ok"], true, "{plan}");
    assert_eq!(plan["add"], 1, "{plan}");
    assert!(
        plan["text"]
            .as_str()
            .unwrap()
            .contains("+ alias new@example.test"),
        "{plan}"
    );
    let (_, broken) = api(
        http,
        TOKEN,
        &[
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            "[server]\nhostnam = \"x\"\n",
        ],
        "/api/v1/plan",
    );
    assert_eq!(broken["ok"], false);
    assert!(
        broken["errors"][0]
            .as_str()
            .unwrap()
            .contains("posted-spec.toml:2:1"),
        "{broken}"
    );
    assert_eq!(
        api(http, TOKEN, &[], "/api/v1/status").1["revision"],
        1,
        "nothing applied"
    );
    // A posted spec cannot make the server read a file (or variable) its own spec does not.
    let prying = changed.replace(
        &format!("{{ hash = \"{TEST_HASH}\" }}"),
        "{ file = \"/etc/passwd\" }",
    );
    assert!(prying.contains("/etc/passwd"));
    let (_, pried) = api(
        http,
        TOKEN,
        &["-H", "Content-Type: text/plain", "--data-binary", &prying],
        "/api/v1/plan",
    );
    assert_eq!(pried["ok"], false, "{pried}");
    let why = pried["errors"][0].as_str().unwrap();
    assert!(
        why.contains("{ file = \"/etc/passwd\" } is not a secret reference the served spec uses"),
        "{why}"
    );
    assert!(!pried.to_string().contains("root:"), "{pried}");

    // A reconcile asked for through the API applies the spec on disk.
    std::fs::write(&w.spec, &changed).unwrap();
    let (code, _) = api(http, TOKEN, &["-X", "POST"], "/api/v1/reconcile");
    assert_eq!(code, 202);
    assert!(
        wait_for(Duration::from_secs(20), || api(
            http,
            TOKEN,
            &[],
            "/api/v1/status"
        )
        .1["revision"]
            == 2),
        "{}",
        server.log_text()
    );

    // schemathesis fuzzes every operation against the document.
    let out = Command::new("schemathesis")
        // It keeps a cache in its working directory: the workspace, not the repository.
        .current_dir(w.path())
        .args([
            "run",
            &format!("http://127.0.0.1:{http}/api/v1/openapi.json"),
        ])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", "all", "-n", "40", "--no-color"])
        // The edits check what no schema can say (that an address is one, that its
        // domain is declared) and answer 422 with the reason: a schema-valid request
        // may be refused, and that is not a fault. And a DELETE with dry_run=true
        // answers 200 with the plan and deletes nothing, so the resource is rightly
        // still there, where schemathesis takes any 2xx DELETE for a deletion
        // (use_after_free); tests/admin_edits.rs checks that a real one removes it.
        .args([
            "--exclude-checks",
            "positive_data_acceptance,use_after_free",
        ])
        .output()
        .expect("schemathesis (scripts/test installs it)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("22 selected / 22 total") && report.contains(" passed"),
        "{report}"
    );
    assert!(!report.contains("Unresolvable references"), "{report}");
}

/// A declared token that cannot be read fails serve's reconcile, loudly (it used to be
/// left out with a log line while `status` said ok): a first start refuses to start and
/// says why; a running server keeps its last good state, logs why, and `status` says the
/// reconcile failed. `apply` does not read it: CI applying the spec need not hold it.
#[test]
fn an_unreadable_api_token_fails_the_reconcile_and_status_says_why() {
    let (mx, http) = (free_port(), free_port());
    let w = Workspace::new(&spec(mx, http, ""));
    w.run(&["apply", "--auto-approve"]).ok();
    let why = "API token ci: environment variable TEST_API_TOKEN is not set";
    let refused = Command::new("timeout")
        .arg("30")
        .arg(common::BIN)
        .current_dir(w.path())
        .args(["--spec", "ferrymail.toml", "serve"])
        .env_remove("TEST_API_TOKEN")
        .output()
        .expect("serve runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(why), "{stderr}");

    let server = w.serve_with(http, &[], &[("TEST_API_TOKEN", TOKEN)]);
    let renamed = spec(mx, http, "").replace("TEST_API_TOKEN", "TEST_API_TOKEN_RENAMED");
    w.write_spec(&renamed);
    let why = "API token ci: environment variable TEST_API_TOKEN_RENAMED is not set";
    assert!(
        wait_for(Duration::from_secs(15), || server.log_text().contains(why)),
        "{}",
        server.log_text()
    );
    let status = w.run(&["status"]).stdout;
    assert!(
        status.contains("last reconcile: FAILED") && status.contains(why),
        "{status}"
    );
    // The token the server read at start still opens the API.
    assert_eq!(api(http, TOKEN, &[], "/api/v1/status").0, 200);
}
