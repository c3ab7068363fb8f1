//! The Cloudflare provider against a local stand-in of the API v4 (tests/peers/
//! cloudflare_standin.py, written from Cloudflare's documentation): zone lookup by name,
//! paginated listing, create/update/delete, error envelopes, ownership.

mod common;

use std::io::{Read, Write};

use common::{TEST_HASH, Workspace, free_port, python_peer};
use serde_json::{Value, json};

const TOKEN: &str = "test-token-not-a-secret";

/// One HTTP/1.0 request to the stand-in's test controls.
fn control(port: u16, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, json) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(json).unwrap()
}

/// The stand-in's records as "TYPE name content [priority]" lines.
fn records(port: u16) -> Vec<String> {
    let mut out: Vec<String> = control(port, "GET", "/__standin/records", None)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut line = format!(
                "{} {} {}",
                r["type"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
                r["content"].as_str().unwrap()
            );
            if let Some(p) = r["priority"].as_u64() {
                line.push_str(&format!(" [{p}]"));
            }
            line
        })
        .collect();
    out.sort();
    out
}

fn spec(api: u16, imaps: u16, with_domain: bool) -> String {
    let domain = if with_domain {
        format!(
            r#"
[domains."example.test"]
dns_provider = "cf"
[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
        )
    } else {
        String::new()
    };
    format!(
        r#"
[listeners]
imaps = "127.0.0.1:{imaps}"

[dns.providers.cf]
kind = "cloudflare"
api_url = "http://127.0.0.1:{api}/client/v4"
api_stand_in = true
api_token = {{ file = "cf.token" }}

[domains."other.test"]
{domain}
"#
    )
}

#[test]
fn cloudflare_zone_is_planned_applied_and_cleaned_up_through_the_api() {
    let (api, imaps) = (free_port(), free_port());
    let w = Workspace::new("");
    std::fs::write(w.path().join("cf.token"), format!("{TOKEN}\n")).unwrap();
    // Two records per page: every listing has to follow result_info to the end.
    let _standin = python_peer(
        "cloudflare_standin.py",
        &[
            "--port",
            &api.to_string(),
            "--token",
            TOKEN,
            "--zone",
            "example.test",
            "--per-page-max",
            "2",
        ],
        w.path(),
    );
    for (rtype, name, content) in [
        ("A", "www.example.test", "192.0.2.80"),
        ("A", "ftp.example.test", "192.0.2.81"),
        ("TXT", "example.test", "site-verification=abc"),
    ] {
        control(
            api,
            "POST",
            "/__standin/records",
            Some(json!({"type": rtype, "name": name, "content": content, "ttl": 300})),
        );
    }
    w.write_spec(&spec(api, imaps, true));

    let plan = w.run(&["plan", "--target", "dns"]);
    let text = plan.ok().stdout.clone();
    for line in [
        "+ dns example.test MX @: 10 mx.example.test.",
        "+ dns example.test SRV _imaps._tcp: 0 1",
        "~ dns example.test TXT @: \"site-verification=abc\" → \"v=spf1 mx -all\", \"site-verification=abc\"",
        "= dns example.test A www: 192.0.2.80",
    ] {
        assert!(text.contains(line), "missing «{line}» in:\n{text}");
    }
    let log = control(api, "GET", "/__standin/requests", None);
    assert!(
        log.as_array().unwrap().iter().any(|r| r["path"]
            .as_str()
            .unwrap()
            .ends_with("/dns_records")
            && r["query"]["page"] == "2"),
        "listing did not page: {log}"
    );

    w.run(&["apply", "--auto-approve"]).ok();
    let now = records(api);
    for expected in [
        "MX example.test mx.example.test [10]",
        "TXT example.test v=spf1 mx -all",
        "TXT example.test site-verification=abc",
        "TXT _dmarc.example.test v=DMARC1; p=quarantine",
        "CNAME autoconfig.example.test mx.example.test",
        "A www.example.test 192.0.2.80",
    ] {
        assert!(
            now.contains(&expected.to_string()),
            "no «{expected}» in {now:#?}"
        );
    }
    assert!(
        now.iter().any(|r| r.starts_with(&format!(
            "SRV _imaps._tcp.example.test 1 {imaps} mx.example.test"
        ))),
        "{now:#?}"
    );
    assert!(
        now.iter()
            .any(|r| r.starts_with("TXT ferrymail._domainkey.example.test v=DKIM1; k=rsa; p=")),
        "{now:#?}"
    );
    // Read back through the API, what was written compares equal: nothing left to do.
    w.run(&["plan", "--detailed-exitcode"]).code(0);

    // Drift made in the dashboard is shown and repaired.
    let dmarc = control(api, "GET", "/__standin/records", None)
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "_dmarc.example.test")
        .cloned()
        .unwrap();
    let zone_id = dmarc["zone_id"].as_str().unwrap().to_string();
    control(api, "DELETE", "/__standin/requests", None);
    let edit = std::process::Command::new("python3")
        .args([
            "-c",
            &format!(
                "import urllib.request,json;r=urllib.request.Request('http://127.0.0.1:{api}/client/v4/zones/{zone_id}/dns_records/{}',method='PATCH',data=json.dumps({{'content':'v=DMARC1; p=none'}}).encode(),headers={{'Authorization':'Bearer {TOKEN}','Content-Type':'application/json'}});print(json.load(urllib.request.urlopen(r))['success'])",
                dmarc["id"].as_str().unwrap()
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&edit.stdout).trim(), "True");
    let drift = w.run(&["plan"]);
    assert!(
        drift.ok().stdout.contains(
            "~ dns example.test TXT _dmarc: \"v=DMARC1; p=none\" → \"v=DMARC1; p=quarantine\""
        ),
        "{}",
        drift.stdout
    );

    // An API error is reported with Cloudflare's code and message, and nothing is
    // claimed; the next apply goes through.
    control(
        api,
        "POST",
        "/__standin/fail",
        Some(
            json!({"method": "PUT", "path_contains": "dns_records", "count": 1, "status": 500, "code": 10001, "message": "internal trouble"}),
        ),
    );
    let failed = w.run(&["apply", "--auto-approve"]);
    failed.code(1);
    assert!(
        failed.stderr.contains("internal trouble (code 10001)"),
        "{}",
        failed.stderr
    );
    w.run(&["apply", "--auto-approve"]).ok();
    assert!(records(api).contains(&"TXT _dmarc.example.test v=DMARC1; p=quarantine".to_string()));

    // A key rotation whose record cannot be published: the store keeps signing with
    // the old key (published) instead of starting with one nobody can verify.
    let mut rotated = spec(api, imaps, true);
    rotated = rotated.replace(
        "dns_provider = \"cf\"",
        "dns_provider = \"cf\"\ndkim = [{ selector = \"s2\", algorithm = \"ed25519\" }]",
    );
    w.write_spec(&rotated);
    control(
        api,
        "POST",
        "/__standin/fail",
        Some(
            json!({"method": "POST", "path_contains": "dns_records", "count": 1, "status": 500, "code": 10001, "message": "try later"}),
        ),
    );
    let held = w.run(&["apply", "--auto-approve"]);
    held.code(1);
    assert!(
        held.stderr
            .contains("DKIM key s2._domainkey.example.test: not changed, because its record could not be published"),
        "{}",
        held.stderr
    );
    let key = |id: &str| {
        use ferrymail::store::Store;
        let store = ferrymail::store::SqliteStore::open(&w.data_dir()).unwrap();
        store.dkim_public_key(id).unwrap()
    };
    assert!(
        key("ferrymail._domainkey.example.test").is_some(),
        "the old key still signs"
    );
    assert!(key("s2._domainkey.example.test").is_none());
    assert!(
        records(api)
            .iter()
            .any(|r| r.starts_with("TXT ferrymail._domainkey.example.test")),
        "and stays published"
    );
    w.run(&["apply", "--auto-approve"]).ok();
    let public = key("s2._domainkey.example.test").expect("the new key, once published");
    assert!(records(api).contains(&format!(
        "TXT s2._domainkey.example.test {}",
        ferrymail::dkim::txt_record("ed25519", &public)
    )));
    assert!(key("ferrymail._domainkey.example.test").is_none());
    assert!(
        records(api)
            .iter()
            .any(|r| r.starts_with("TXT ferrymail._domainkey")),
        "the retired key's record stays a while, for mail it signed just before"
    );
    w.write_spec(&spec(api, imaps, true));
    w.run(&["apply", "--auto-approve"]).ok();

    // A wrong token: the plan says so and fails.
    std::fs::write(w.path().join("cf.token"), "wrong\n").unwrap();
    let denied = w.run(&["plan"]);
    denied.code(1);
    assert!(
        denied.stdout.contains("Authentication error (code 10000)"),
        "{}",
        denied.stdout
    );
    std::fs::write(w.path().join("cf.token"), format!("{TOKEN}\n")).unwrap();

    // The domain leaves the spec: only ferrymail's records go.
    w.write_spec(&spec(api, imaps, false));
    w.run(&["apply", "--auto-approve", "--allow-dns-deletes"])
        .ok();
    assert_eq!(
        records(api),
        [
            "A ftp.example.test 192.0.2.81",
            "A www.example.test 192.0.2.80",
            "TXT example.test site-verification=abc"
        ]
    );
    w.run(&["plan", "--detailed-exitcode"]).code(0);
}
